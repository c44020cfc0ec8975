"""The pure-Python reference datapath: the oracle for ``kemu/_fastpath.pyx``.

Same API and the same results, byte for byte, as the Cython implementation. Readability
first: every stage is a method named after the kernel function it stands for. The packet
path, hook by hook (reference: a kubeadm node, kubenet/flannel, kube-proxy iptables mode)::

    pod eth0 --veth--> node veth (bridge port) --> bridge_in
        bridge_in: br_netfilter PREROUTING (conntrack, DNAT; S-1..S-8, CT-1, CT-2)
                   bridged DNAT if the new destination is on the same bridge
                   learn src MAC (L2-3); dst == bridge MAC -> cbr0 (node stack)
                   broadcast/unknown -> flood (L2-3); hairpin ports may send back (L2-4)
        bridge_out: br_netfilter POSTROUTING (masquerade, reply un-DNAT) -> port TX
    node_in (cbr0 / eth0 / flannel.1 RX):
        ip_rcv checks -> PREROUTING (if the bridge did not run it) -> local? INPUT
        -> forward: LPM route (R-1, R-2), TTL, filter FORWARD (S-9 REJECT), POSTROUTING
           (S-7 MASQUERADE to the egress address), neighbour -> TX
    node_local_out (node processes, ICMP errors): route, nat OUTPUT, POSTROUTING -> TX

Mutable state: per-bridge FDB, per-node conntrack and neighbour tables, session affinity.
Time is the emulated clock (each frame's timestamp), never the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane.lpm import Lpm
from kemu.dataplane.packet import (
    BROADCAST,
    ETH_ARP,
    ETH_IP,
    ETH_IPV6,
    csum_replace16,
    csum_replace32,
    flow_hash,
    ip_checksum,
    is_multicast_mac,
    put16,
    put32,
    put48,
    u16,
    u32,
    u48,
)
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables

S_TX, S_RX, S_BRIDGE_IN, S_BRIDGE_OUT, S_NODE_IN, S_LOCAL_OUT = range(6)
# events that rewrite addresses: a copy with one ends with oc_nat set (with recording off too)
_TRANSLATING = frozenset((C.EV_DNAT, C.EV_SNAT, C.EV_UNDNAT, C.EV_UNSNAT, C.EV_CT_REUSE))
NS = 10**9
# conntrack timeouts (kube-proxy sets established 24 h and close-wait 1 h; kernel defaults else)
CT_NONE, CT_SYN_SENT, CT_SYN_RECV, CT_ESTABLISHED, CT_FIN, CT_CLOSE, CT_UDP, CT_ICMP = range(8)
TCP_TIMEOUTS = (120, 120, 60, 86400, 120, 10)  # indexed by state
UDP_TIMEOUT, UDP_STREAM_TIMEOUT, ICMP_TIMEOUT, OTHER_TIMEOUT = 30, 120, 30, 600


@dataclass
class CtEntry:
    """One conntrack entry of one node: original and reply tuples, NAT, state, expiry."""

    node: int
    orig: tuple[int, int, int, int, int]   # (proto, sip, sport, dip, dport)
    reply: tuple[int, int, int, int, int]
    flags: int = 0
    dnat_ip: int = 0
    dnat_port: int = 0
    snat_ip: int = 0
    snat_port: int = 0
    masq: bool = False
    sp: int = -1
    be: int = -1
    state: int = 0
    expires: int = 0


@dataclass
class Ctx:
    """Per-copy netfilter context while a frame is inside one node's kernel."""

    node: int = -1
    ct: CtEntry | None = None
    reply_dir: bool = False
    new: bool = False
    pre_done: bool = False
    verdict: int = 0          # pending filter verdict from the service lookup (DROP_* code)
    verdict_sp: int = -1
    related: CtEntry | None = None  # an ICMP error's flow, for the un-DNAT at POSTROUTING

    def copy(self) -> Ctx:
        return Ctx(self.node, self.ct, self.reply_dir, self.new, self.pre_done, self.verdict,
                   self.verdict_sp, self.related)


@dataclass
class Item:
    data: bytearray
    stage: int
    a: int               # interface (TX/RX/NODE_IN), bridge (BRIDGE_*), node (LOCAL_OUT)
    b: int = -1          # ingress port (BRIDGE_IN), out port (BRIDGE_OUT)
    ctx: Ctx = field(default_factory=Ctx)
    hops: int = 0
    last_hop: int = -1
    snap_off: int = -1
    snap_len: int = 0
    pend: list = field(default_factory=list)
    flood: bool = False
    nat: bool = False    # a translation rewrote this copy (Results.oc_nat), recording or not

    def fork(self, stage: int, a: int, b: int = -1) -> Item:
        return Item(bytearray(self.data), stage, a, b, self.ctx.copy(), self.hops,
                    self.last_hop, self.snap_off, self.snap_len, list(self.pend), self.flood,
                    self.nat)


class Datapath:
    """Batch datapath over compiled ``Tables``; state persists across ``process`` calls."""

    def __init__(self, tables: Tables, seed: int = 0, static_neighbours: bool = True) -> None:
        self.seed = seed
        self.static_neighbours = static_neighbours
        self.fdb: dict[tuple[int, int], tuple[int, int]] = {}      # (bridge, mac) -> (port, seen)
        self.ct: dict[tuple, tuple[CtEntry, bool]] = {}            # (node, tuple) -> (entry, reply)
        self.neigh: dict[tuple[int, int], int] = {}               # (node, ip) -> mac
        self.neigh_hh: set[tuple[int, int]] = set()               # entries with a cached header
        self.affinity: dict[tuple[int, int, int], tuple[int, int, int]] = {}
        self.t = tables
        self.load(tables)

    # ---------------------------------------------------------------- tables and state
    def load(self, tables: Tables) -> None:
        """Swap in new tables at a batch boundary; keep conntrack, re-resolve its services."""
        old = getattr(self, "_loaded", None)
        self.t = t = tables
        self.lpm = Lpm()
        for i in range(len(t.rt_prefix)):
            self.lpm.add(int(t.rt_prefix[i]), int(t.rt_len[i]), i)
        self.fe: dict[tuple[int, int, int], int] = {}
        self.fe_nodeport: dict[tuple[int, int], int] = {}
        for i in range(len(t.fe_ip)):
            key = (int(t.fe_proto[i]), int(t.fe_port[i]))
            if int(t.fe_kind[i]) == C.FE_NODE_PORT:
                self.fe_nodeport[key] = i
            else:
                self.fe[(int(t.fe_ip[i]),) + key] = i
        self.local_ips: dict[tuple[int, int], int] = {}
        for i in range(t.n_ifaces):
            k = int(t.if_kind[i])
            if k in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP):
                self.local_ips[(int(t.if_node[i]), int(t.if_ip[i]))] = i
        self.if_kind = [int(x) for x in t.if_kind]
        self.if_mac = [int(x) for x in t.if_mac]
        self.if_ip = [int(x) for x in t.if_ip]
        self.if_node = [int(x) for x in t.if_node]
        self.if_peer = [int(x) for x in t.if_peer]
        self.if_bridge = [int(x) for x in t.if_bridge]
        self.if_hairpin = [int(x) for x in t.if_hairpin]
        if old is not None and old is not tables:
            self.fdb.clear()
            self._remap_conntrack()
            self._remap_affinity(old)
        if self.static_neighbours:
            self._seed_neighbours()
        self._loaded = tables

    def _seed_neighbours(self) -> None:
        """What a settled cluster's kernels know: every pod on its node's bridge, every host
        of the node network on every node, flannel's static VTEP entries (OV-2)."""
        t = self.t
        for i in range(t.n_ifaces):
            k, n = self.if_kind[i], self.if_node[i]
            if k == C.IF_POD_ETH:
                self.neigh[(n, self.if_ip[i])] = self.if_mac[i]
            elif k in (C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH):
                for m in range(t.n_nodes):
                    if m != n:
                        self.neigh[(m, self.if_ip[i])] = self.if_mac[i]
            elif k == C.IF_VTEP:
                for m in range(t.n_nodes):
                    if m != n:
                        self.neigh[(m, self.if_ip[i])] = self.if_mac[i]

    def _remap_conntrack(self) -> None:
        """After a table swap: find each DNAT entry's service port and backend again; flush
        UDP entries whose backend is gone (CT-4)."""
        for e, is_reply in list(self.ct.values()):
            if is_reply or not (e.flags & C.CT_DNAT):
                continue
            proto, _sip, _sport, dip, dport = e.orig
            fe = self.fe.get((dip, proto, dport))
            if fe is None:
                fe = self.fe_nodeport.get((proto, dport))
            e.sp, e.be = -1, -1
            if fe is not None:
                sp = int(self.t.fe_sp[fe])
                e.sp = sp
                e.be = self._find_backend(sp, e.dnat_ip, e.dnat_port)
            if e.be < 0 and proto == C.PROTO_UDP:
                self._ct_delete(e)

    def _remap_affinity(self, old: Tables) -> None:
        """Affinity records follow their service port by name across a table swap; records
        of ports that are gone are dropped."""
        names = {name: i for i, name in enumerate(self.t.sp_name)}
        records = self.affinity
        self.affinity = {}
        for (node, sp, client), value in records.items():
            nsp = names.get(old.sp_name[sp], -1) if sp < len(old.sp_name) else -1
            if nsp >= 0:
                self.affinity[(node, nsp, client)] = value

    def _find_backend(self, sp: int, ip: int, port: int) -> int:
        t = self.t
        s = int(t.sp_be_start[sp])
        for b in range(s, s + int(t.sp_be_count[sp])):
            if int(t.be_ip[b]) == ip and int(t.be_port[b]) == port:
                return b
        return -1

    def reset(self) -> None:
        self.fdb.clear()
        self.ct.clear()
        self.neigh.clear()
        self.neigh_hh.clear()
        self.affinity.clear()
        if self.static_neighbours:
            self._seed_neighbours()

    def neigh_set(self, node: int, ip: int, mac: int) -> None:
        if self.neigh.get((node, ip)) != mac:
            self.neigh_hh.discard((node, ip))
        self.neigh[(node, ip)] = mac

    def neigh_lookup(self, node: int, ip: int) -> int:
        return self.neigh.get((node, ip), -1)

    def cleanup(self, now: int) -> None:
        """Expire FDB entries (ageing) and conntrack and affinity entries (timeouts)."""
        age = self.t.ageing_ns
        for k, (_port, seen) in list(self.fdb.items()):
            if now - seen > age:
                del self.fdb[k]
        for e, is_reply in list(self.ct.values()):
            if not is_reply and e.expires < now:
                self._ct_delete(e)
        for k, (_ip, _port, last) in list(self.affinity.items()):
            if now - last > int(self.t.sp_affinity_ns[k[1]]):
                del self.affinity[k]

    def state(self) -> dict[str, list[tuple]]:
        """Every piece of mutable state as sorted tuples (rendered by ``kemu.dataplane.dump``)."""
        fdb = sorted((b, mac, port, seen) for (b, mac), (port, seen) in self.fdb.items())
        ct = sorted(
            (e.node,) + e.orig + e.reply + (e.flags, e.state, e.expires, e.sp,
                                            e.be)
            for e, is_reply in self.ct.values() if not is_reply)
        neigh = sorted((n, ip, mac, int((n, ip) in self.neigh_hh))
                       for (n, ip), mac in self.neigh.items())
        aff = sorted(k + v for k, v in self.affinity.items())
        return {"fdb": fdb, "conntrack": ct, "neigh": neigh, "affinity": aff}

    # ---------------------------------------------------------------- the batch call
    def process(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                in_if: np.ndarray, in_mode: np.ndarray, ts_ns: np.ndarray, start: int,
                stop: int, res: Results) -> int:
        """Run frames ``start..stop-1``; return the index of the first frame not processed
        (``stop`` unless ``res`` ran out of room)."""
        n_if = self.t.n_ifaces
        for fi in range(start, stop):
            ln = int(lengths[fi])
            if not res.room(ln, n_if):
                return fi
            off = int(offsets[fi])
            data = bytearray(buf[off: off + ln].tobytes())
            self._frame(fi, data, int(in_if[fi]), int(in_mode[fi]), int(ts_ns[fi]), res)
        return stop

    def _frame(self, fi: int, data: bytearray, iface: int, mode: int, now: int,
               res: Results) -> None:
        self.now, self.res, self.fi = now, res, fi
        if mode == C.INJ_RX:
            first = Item(data, S_RX, iface)
        elif self.if_kind[iface] == C.IF_NODE_LOCAL:
            first = Item(data, S_LOCAL_OUT, self.if_node[iface])
        else:
            first = Item(data, S_TX, iface)
            if mode == C.INJ_TX_FIXL2:
                self._fix_l2(first, iface)
            self._pod_local_route(first, iface)
        stack = [first]
        while stack:
            it = stack.pop()
            if it.hops >= C.MAX_HOPS:
                self._end(it, C.OUT_DROPPED, C.DROP_HOP_LIMIT, it.a)
                continue
            st = it.stage
            if st == S_TX:
                self._tx(it, stack)
            elif st == S_RX:
                self._rx(it, stack)
            elif st == S_BRIDGE_IN:
                self._bridge_in(it, stack)
            elif st == S_BRIDGE_OUT:
                self._bridge_out(it, stack)
            elif st == S_NODE_IN:
                self._node_in(it, stack)
            else:
                self._local_out(it, stack)

    # ---------------------------------------------------------------- recording
    def _hop(self, it: Item, iface: int, direction: int) -> None:
        res = self.res
        it.hops += 1
        if not res.record:
            it.pend.clear()
            return
        h = res.n_hops
        if it.snap_off < 0:
            n = len(it.data)
            res.arena[res.arena_used: res.arena_used + n] = np.frombuffer(bytes(it.data),
                                                                           np.uint8)
            it.snap_off, it.snap_len = res.arena_used, n
            res.arena_used += (n + 7) & ~7
        res.hop_frame[h] = self.fi
        res.hop_iface[h] = iface
        res.hop_dir[h] = direction
        res.hop_off[h] = it.snap_off
        res.hop_len[h] = it.snap_len
        res.n_hops = h + 1
        it.last_hop = h
        for ev in it.pend:
            self._emit(h, *ev)
        it.pend.clear()

    def _emit(self, hop: int, kind: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        res = self.res
        e = res.n_events
        res.ev_frame[e] = self.fi
        res.ev_hop[e] = hop
        res.ev_kind[e] = kind
        res.ev_a[e], res.ev_b[e], res.ev_c[e] = a, b, c
        res.n_events = e + 1

    def _changed(self, it: Item) -> None:
        it.snap_off = -1

    def _end(self, it: Item, kind: int, reason: int, iface: int, a: int = 0,
             keep: bool = False) -> None:
        """Terminal outcome of one copy; pending events attach to its last hop."""
        res = self.res
        if it.ctx.new and kind == C.OUT_DROPPED and it.ctx.ct is not None:
            if reason in (C.DROP_TTL_EXCEEDED, C.DROP_REJECT_NO_ENDPOINTS, C.DROP_NO_ROUTE):
                # unconfirmed, but the ICMP error this drop causes is still RELATED to it
                # (the kernel attaches the entry to the error): it expires right away
                it.ctx.ct.expires = self.now
            else:
                self._ct_delete(it.ctx.ct)  # unconfirmed conntrack entries die with the packet
        if res.record:
            for ev in it.pend:
                self._emit(it.last_hop, *ev)
            if kind == C.OUT_DROPPED:
                self._emit(it.last_hop, C.EV_DROP, reason, self._node_of(iface))
            elif kind == C.OUT_DELIVERED:
                self._emit(it.last_hop, C.EV_DELIVER, iface)
            elif kind == C.OUT_LEFT:
                self._emit(it.last_hop, C.EV_LEFT, iface)
        it.pend.clear()
        o = res.n_outcomes
        res.oc_frame[o] = self.fi
        res.oc_kind[o] = kind
        res.oc_reason[o] = reason
        res.oc_iface[o] = iface
        res.oc_hop[o] = it.last_hop
        res.oc_a[o] = a
        res.oc_off[o] = -1
        res.oc_len[o] = 0
        res.oc_nat[o] = it.nat
        if keep:  # the frame is needed again (neighbour hold, ICMP error quoting)
            n = len(it.data)
            res.arena[res.arena_used: res.arena_used + n] = np.frombuffer(bytes(it.data),
                                                                           np.uint8)
            res.oc_off[o], res.oc_len[o] = res.arena_used, n
            res.arena_used += (n + 7) & ~7
        res.n_outcomes = o + 1

    def _node_of(self, iface: int) -> int:
        return self.if_node[iface] if iface >= 0 else -1

    def _ev(self, it: Item, kind: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        if kind in _TRANSLATING:
            it.nat = True
        if self.res.record:
            it.pend.append((kind, a, b, c))

    # ---------------------------------------------------------------- injection helpers
    def _fix_l2(self, it: Item, iface: int) -> None:
        """Rewrite Ethernet addresses as the sending host's own stack would have set them."""
        d = it.data
        if len(d) < 14:
            return
        kind = self.if_kind[iface]
        mac = self.if_mac[iface]
        put48(d, 6, mac)
        et = u16(d, 12)
        if et == ETH_ARP and len(d) >= 42:
            put48(d, 22, mac)
        elif et == ETH_IP and len(d) >= 34:
            dst = u32(d, 30)
            t = self.t
            if kind == C.IF_POD_ETH:
                node = self.if_node[iface]
                bip = int(t.node_br_ip[node])
                gw_mac = self.if_mac[int(t.node_br_if[node])]
                subnet = self._pod_cidr_mask(node)
                same = (dst & subnet) == (bip & subnet)
            else:
                gw_mac = self.if_mac[t.gateway_if] if t.gateway_if >= 0 else BROADCAST
                net = self._node_net
                same = (dst & net[1]) == net[0]
            if (dst & 0xF0000000) == 0xE0000000 or dst == 0xFFFFFFFF:
                put48(d, 0, BROADCAST if dst == 0xFFFFFFFF else
                      0x01005E000000 | (dst & 0x7FFFFF))
            elif same:
                owner = t.owner_of(dst)
                if owner >= 0:
                    put48(d, 0, self.if_mac[owner])
            else:
                put48(d, 0, gw_mac)
        self._ev(it, C.EV_FIXL2, iface)

    @property
    def _node_net(self) -> tuple[int, int]:
        t = self.t
        for i in range(len(t.rt_kind)):
            if int(t.rt_kind[i]) == C.RT_NODE_NET:
                ln = int(t.rt_len[i])
                return int(t.rt_prefix[i]), (0xFFFFFFFF << (32 - ln)) & 0xFFFFFFFF
        return 0, 0xFFFFFFFF

    def _pod_cidr_mask(self, node: int) -> int:
        t = self.t
        for i in range(len(t.rt_kind)):
            if int(t.rt_kind[i]) == C.RT_POD_CIDR and int(t.rt_node[i]) == node:
                ln = int(t.rt_len[i])
                return (0xFFFFFFFF << (32 - ln)) & 0xFFFFFFFF
        return 0xFFFFFF00

    def _pod_local_route(self, it: Item, iface: int) -> None:
        """M-4: a pod's packets to its own IP or 127/8 stay in the pod, on ``lo``."""
        if self.if_kind[iface] != C.IF_POD_ETH:
            return
        d = it.data
        if len(d) >= 34 and u16(d, 12) == ETH_IP:
            dst = u32(d, 30)
            if dst == self.if_ip[iface] or (dst >> 24) == 127:
                lo = iface + 1  # the compiler places lo right after the pod's eth0
                put48(d, 0, 0)
                put48(d, 6, 0)
                it.a = lo
                self._ev(it, C.EV_LOCAL_ROUTE, iface)

    # ---------------------------------------------------------------- stages
    def _tx(self, it: Item, stack: list[Item]) -> None:
        i = it.a
        kind = self.if_kind[i]
        self._hop(it, i, C.DIR_OUT)
        if kind in (C.IF_POD_ETH, C.IF_VETH):
            it.ctx = Ctx()
            it.stage, it.a = S_RX, self.if_peer[i]
        elif kind == C.IF_POD_LO:
            it.stage = S_RX
        elif kind == C.IF_BRIDGE:
            it.stage, it.a, it.b = S_BRIDGE_IN, self.if_bridge[i], i
        elif kind in (C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH):
            it.ctx = Ctx()
            it.stage, it.a, it.b = S_BRIDGE_IN, self.if_bridge[i], i
        elif kind == C.IF_VTEP:
            if not self._vxlan_encap(it, i):
                return
        stack.append(it)

    def _rx(self, it: Item, stack: list[Item]) -> None:
        i = it.a
        kind = self.if_kind[i]
        self._hop(it, i, C.DIR_IN)
        d = it.data
        if kind == C.IF_VETH:
            it.stage, it.a, it.b = S_BRIDGE_IN, self.if_bridge[i], i
            return stack.append(it)
        if kind == C.IF_POD_LO:
            return self._end(it, C.OUT_DELIVERED, 0, i)
        if len(d) < 14:
            return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, i)
        dmac = u48(d, 0)
        if dmac != self.if_mac[i] and not is_multicast_mac(dmac):
            return self._end(it, C.OUT_DROPPED, C.DROP_OTHERHOST, i)
        if kind in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP):
            it.stage, it.a = S_NODE_IN, i
            return stack.append(it)
        # end hosts: pods, external hosts, the gateway
        et = u16(d, 12)
        if et == ETH_ARP:
            if len(d) < 42:
                return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, i)
            if u32(d, 38) == self.if_ip[i]:
                return self._end(it, C.OUT_DELIVERED, 0, i)
            return self._end(it, C.OUT_DROPPED, C.DROP_NOT_LOCAL, i)
        bad = self._l3_check(d, et)
        if bad:
            return self._end(it, C.OUT_DROPPED, bad, i)
        dst = u32(d, 30)
        if dst == self.if_ip[i] or dst == 0xFFFFFFFF or (dst & 0xF0000000) == 0xE0000000:
            return self._end(it, C.OUT_DELIVERED, 0, i)
        if kind == C.IF_GW_ETH:
            return self._end(it, C.OUT_LEFT, 0, i)
        return self._end(it, C.OUT_DROPPED, C.DROP_NOT_LOCAL, i)

    def _l3_check(self, d: bytearray, et: int) -> int:
        """A drop reason for anything but a sane IPv4 packet (after ARP was handled), or 0."""
        if et == ETH_IPV6:
            return C.DROP_IPV6
        if et != ETH_IP:
            return C.DROP_UNKNOWN_ETHERTYPE
        return self._ip_check(d)

    def _ip_check(self, d: bytearray) -> int:
        """``ip_rcv``'s sanity checks; a drop reason or 0."""
        if len(d) < 34:
            return C.DROP_TOO_SHORT
        vihl = d[14]
        ihl = (vihl & 0xF) * 4
        if vihl >> 4 != 4 or ihl < 20 or len(d) < 14 + ihl:
            return C.DROP_BAD_IP_HEADER
        tot = u16(d, 16)
        if tot < ihl or 14 + tot > len(d):
            return C.DROP_BAD_IP_HEADER
        if ip_checksum(d, 14, ihl) != 0:
            return C.DROP_BAD_IP_CSUM
        return 0

    # ---- bridge
    def _bridge_in(self, it: Item, stack: list[Item]) -> None:
        b, p = it.a, it.b
        t = self.t
        d = it.data
        if len(d) < 14:
            return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, p)
        local_if = int(t.br_local_if[b])
        from_local = p == local_if
        if (t.br_netfilter[b] and not from_local and u16(d, 12) == ETH_IP
                and self._ip_check(d) == 0):
            node = self.if_node[local_if]
            dst_before = u32(d, 30)
            verdict = self._prerouting(it, node, p)
            if verdict:
                return self._end(it, C.OUT_DROPPED, verdict, p)
            new_dst = u32(d, 30)
            if new_dst != dst_before:  # br_nf_pre_routing_finish: daddr changed
                out_if, _nh = self._route_dev(node, new_dst)
                if out_if == local_if:
                    mac = self.neigh.get((node, new_dst), -1)
                    if mac < 0:
                        return self._end(it, C.OUT_NEIGH, 0, local_if, new_dst, keep=True)
                    put48(d, 0, mac)
                    self._changed(it)
                    self._ev(it, C.EV_BRIDGED_DNAT, node)
                    if (node, new_dst) not in self.neigh_hh:
                        # br_nf_pre_routing_finish_bridge: without a cached header the frame
                        # goes out through the bridge device once (neigh->output), then on
                        self.neigh_hh.add((node, new_dst))
                        self._hop(it, local_if, C.DIR_OUT)
                else:
                    put48(d, 0, self.if_mac[local_if])
                self._changed(it)
        smac = u48(d, 6)
        if not from_local and not is_multicast_mac(smac) and smac != 0 and (
                local_if < 0 or smac != self.if_mac[local_if]):
            self.fdb[(b, smac)] = (p, self.now)
        dmac = u48(d, 0)
        if local_if >= 0 and dmac == self.if_mac[local_if]:
            self._ev(it, C.EV_BR_LOCAL, local_if)
            it.stage, it.a = S_RX, local_if
            return stack.append(it)
        if not is_multicast_mac(dmac):
            ent = self.fdb.get((b, dmac))
            if ent is not None and self.now - ent[1] <= t.ageing_ns:
                q = ent[0]
                if q == p and not self.if_hairpin[q]:
                    return self._end(it, C.OUT_DROPPED, C.DROP_SAME_PORT, p)
                it.stage, it.a, it.b = S_BRIDGE_OUT, b, q
                it.flood = False
                return stack.append(it)
        # flood: broadcast, multicast, unknown unicast (L2-3); local port for bcast/mcast
        s, n = int(t.br_port_start[b]), int(t.br_port_count[b])
        copies = []
        for k in range(s, s + n):
            q = int(t.br_ports[k])
            if q != p or self.if_hairpin[q]:
                copies.append(it.fork(S_BRIDGE_OUT, b, q))
        if local_if >= 0 and is_multicast_mac(dmac) and p != local_if:
            c = it.fork(S_RX, local_if)
            self._ev(c, C.EV_BR_LOCAL, local_if)
            stack.append(c)
        for c in reversed(copies):
            c.flood = True
            stack.append(c)
        if not copies and not (local_if >= 0 and is_multicast_mac(dmac) and p != local_if):
            self._end(it, C.OUT_DROPPED, C.DROP_SAME_PORT, p)

    def _bridge_out(self, it: Item, stack: list[Item]) -> None:
        b, q = it.a, it.b
        t = self.t
        d = it.data
        local_if = int(t.br_local_if[b])
        if t.br_netfilter[b] and u16(d, 12) == ETH_IP and it.ctx.node >= 0:
            verdict = self._filter_forward(it)
            if verdict:
                return self._end(it, C.OUT_DROPPED, verdict, q)
            self._postrouting(it, self.if_node[local_if], local_if)
        self._ev(it, C.EV_BR_FLOOD if it.flood else C.EV_BR_FDB, q, b)
        # a node bridge sends out of the veth; on the node network the port is the host itself
        it.stage, it.a = (S_TX if self.if_kind[q] == C.IF_VETH else S_RX), q
        stack.append(it)

    # ---- node IP stack
    def _node_in(self, it: Item, stack: list[Item]) -> None:
        i = it.a
        node = self.if_node[i]
        d = it.data
        et = u16(d, 12)
        if et == ETH_ARP:
            if len(d) < 42:
                return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, i)
            if (node, u32(d, 38)) in self.local_ips:
                self._ev(it, C.EV_NODE_INPUT, node)
                return self._end(it, C.OUT_DELIVERED, 0, i)
            return self._end(it, C.OUT_DROPPED, C.DROP_NOT_LOCAL, i)
        bad = self._l3_check(d, et)
        if bad:
            return self._end(it, C.OUT_DROPPED, bad, i)
        if (u32(d, 26) >> 24) == 127:
            return self._end(it, C.OUT_DROPPED, C.DROP_MARTIAN, i)
        if not (it.ctx.pre_done and it.ctx.node == node):
            verdict = self._prerouting(it, node, i)
            if verdict:
                return self._end(it, C.OUT_DROPPED, verdict, i)
        dst = u32(d, 30)
        if (node, dst) in self.local_ips:
            return self._local_in(it, node, i, stack)
        out_if, nh = self._route_dev(node, dst)
        if out_if < 0:
            return self._end(it, C.OUT_DROPPED, C.DROP_NO_ROUTE, i)
        ttl = d[22]
        if ttl <= 1:
            return self._end(it, C.OUT_DROPPED, C.DROP_TTL_EXCEEDED, i, keep=True)
        # ip_forward decrements the TTL before the FORWARD hook: a REJECT quotes TTL-1
        old = u16(d, 22)
        d[22] = ttl - 1
        put16(d, 24, csum_replace16(u16(d, 24), old, u16(d, 22)))
        self._changed(it)
        self._ev(it, C.EV_TTL, ttl - 1, node)
        verdict = self._filter_forward(it)
        if verdict:
            return self._end(it, C.OUT_DROPPED, verdict, i, keep=True)
        self._output(it, node, out_if, nh, stack)

    def _local_in(self, it: Item, node: int, i: int, stack: list[Item]) -> None:
        d = it.data
        verdict = it.ctx.verdict
        if verdict:
            return self._end(it, C.OUT_DROPPED, verdict, i, keep=True)
        ihl = (d[14] & 0xF) * 4
        l4 = 14 + ihl
        if (self.t.vxlan and d[23] == C.PROTO_UDP and len(d) >= l4 + 8 + 8 + 14
                and u16(d, l4 + 2) == C.VXLAN_PORT):
            return self._vxlan_decap(it, node, l4, stack)
        self._ev(it, C.EV_NODE_INPUT, node)
        self._end(it, C.OUT_DELIVERED, 0, i, keep=True)

    def _local_out(self, it: Item, stack: list[Item]) -> None:
        """A packet from the node's own processes: route, nat OUTPUT, POSTROUTING."""
        node = it.a
        d = it.data
        loc = int(self.t.node_local_if[node])
        if len(d) < 34 or u16(d, 12) != ETH_IP:
            return self._end(it, C.OUT_DROPPED, C.DROP_BAD_IP_HEADER, loc)
        dst = u32(d, 30)
        out_if, nh = self._route_dev(node, dst)
        if u32(d, 26) == 0 and out_if >= 0:  # unbound socket: the route's preferred source
            self._set_src(d, self.if_ip[out_if], -1)
        verdict = self._prerouting(it, node, loc)  # nat OUTPUT shares KUBE-SERVICES (S-1)
        if verdict:
            return self._end(it, C.OUT_DROPPED, verdict, loc)
        dst = u32(d, 30)
        if (node, dst) in self.local_ips:
            self._ev(it, C.EV_NODE_INPUT, node)
            return self._end(it, C.OUT_DELIVERED, 0, self.local_ips[(node, dst)])
        out_if, nh = self._route_dev(node, dst)
        if out_if < 0:
            return self._end(it, C.OUT_DROPPED, C.DROP_NO_ROUTE, loc)
        verdict = self._filter_forward(it)
        if verdict:
            return self._end(it, C.OUT_DROPPED, verdict, loc, keep=True)
        self._output(it, node, out_if, nh, stack)

    def _output(self, it: Item, node: int, out_if: int, nh: int, stack: list[Item]) -> None:
        """POSTROUTING then neighbour output (ip_finish_output2)."""
        d = it.data
        self._postrouting(it, node, out_if)
        dst = u32(d, 30)
        hop = nh if nh else dst
        self._ev(it, C.EV_ROUTE, self._route_id(dst), nh, node)
        mac = self.neigh.get((node, hop), -1)
        if mac < 0:
            self._ev(it, C.EV_NEIGH_MISS, hop, node, out_if)
            put48(d, 6, self.if_mac[out_if])
            return self._end(it, C.OUT_NEIGH, 0, out_if, hop, keep=True)
        self.neigh_hh.add((node, hop))  # neigh_resolve_output caches the header
        put48(d, 0, mac)
        put48(d, 6, self.if_mac[out_if])
        self._changed(it)
        it.ctx = Ctx()
        it.stage, it.a = S_TX, out_if
        stack.append(it)

    # ---- routing
    def _route_id(self, dst: int) -> int:
        return self.lpm.lookup(dst)

    def _route_dev(self, node: int, dst: int) -> tuple[int, int]:
        """(out interface, next hop or 0 for connected) of ``dst`` on ``node``; (-1, 0)."""
        r = self.lpm.lookup(dst)
        if r < 0:
            return -1, 0
        t = self.t
        kind = int(t.rt_kind[r])
        if kind == C.RT_POD_CIDR:
            owner = int(t.rt_node[r])
            if owner == node:
                return int(t.node_br_if[node]), 0
            if t.vxlan:
                return int(t.node_vtep_if[node]), int(t.rt_prefix[r])
            return int(t.node_eth_if[node]), int(t.node_ip[owner])
        if kind == C.RT_NODE_NET:
            return int(t.node_eth_if[node]), 0
        return int(t.node_eth_if[node]), t.gateway_ip

    # ---- netfilter
    def _l4(self, d: bytearray) -> tuple[int, int, int, int]:
        """(proto, l4 offset, sport, dport); ports 0 where the protocol has none. Safe on
        short frames: the total length is clamped to the frame (local output and flannel.1
        run no ``ip_rcv`` checks)."""
        n = len(d)
        l4 = 14 + ((d[14] & 0xF) * 4 if n > 14 else 0)
        proto = d[23] if n > 23 else 0
        tot_end = min(14 + u16(d, 16), n) if n > 17 else 0
        if proto in (C.PROTO_TCP, C.PROTO_UDP, C.PROTO_SCTP) and l4 + 4 <= tot_end:
            return proto, l4, u16(d, l4), u16(d, l4 + 2)
        if proto == C.PROTO_ICMP and l4 + 8 <= tot_end and d[l4] in (0, 8):
            # the echo id stands for the request's source "port" and the reply's destination
            # one, so a reply matches its request's reply tuple (nf_conntrack_proto_icmp)
            ident = u16(d, l4 + 4)
            return (proto, l4, ident, 0) if d[l4] == 8 else (proto, l4, 0, ident)
        return proto, l4, 0, 0

    def _prerouting(self, it: Item, node: int, in_if: int) -> int:
        """Conntrack lookup, kube-proxy KUBE-SERVICES for new flows, DNAT (CT-1, CT-2).
        Returns a drop reason or 0; a filter verdict for later hooks lands in ``ctx``."""
        d = it.data
        ctx = it.ctx
        if ctx.node != node:
            ctx.node, ctx.ct, ctx.new, ctx.reply_dir = node, None, False, False
            ctx.verdict, ctx.verdict_sp, ctx.related = 0, -1, None
        ctx.pre_done = True
        if u16(d, 20) & 0x3FFF:  # MF or fragment offset: conntrack would defragment
            return C.DROP_FRAGMENT
        proto, l4, sport, dport = self._l4(d)
        if proto == C.PROTO_ICMP and (l4 + 1 > len(d) or d[l4] not in (0, 8)):
            self._related_pre(it, node, l4)  # no entry of its own: RELATED to what it quotes
            return 0
        sip, dip = u32(d, 26), u32(d, 30)
        key = (node, proto, sip, sport, dip, dport)
        hit = self.ct.get(key)
        if hit is not None and hit[0].expires < self.now:
            self._ct_delete(hit[0])
            hit = None
        if hit is not None:
            e, is_reply = hit
            ctx.ct, ctx.reply_dir, ctx.new = e, is_reply, False
            self._ct_update(e, is_reply, d, l4, proto)
            if not is_reply and e.flags & C.CT_DNAT:
                self._set_dst(d, e.dnat_ip, e.dnat_port, proto, l4)
                self._changed(it)
                self._ev(it, C.EV_CT_REUSE, e.sp, e.be, node)
            elif is_reply and e.flags & C.CT_SNAT:
                self._set_dst(d, e.orig[1], e.orig[2], proto, l4)
                self._changed(it)
                self._ev(it, C.EV_UNSNAT, e.orig[1], e.orig[2], node)
            return 0
        # a new flow: KUBE-SERVICES (TCP/UDP only; ICMP and others are not proxied)
        e = CtEntry(node, (proto, sip, sport, dip, dport), (proto, dip, dport, sip, sport))
        ctx.ct, ctx.reply_dir, ctx.new = e, False, True
        if proto in (C.PROTO_TCP, C.PROTO_UDP):
            fe = self.fe.get((dip, proto, dport))
            if fe is None and (node, dip) in self.local_ips:
                fe = self.fe_nodeport.get((proto, dport))
            if fe is not None:
                r = self._service(it, e, node, fe, sip, sport, proto, l4)
                if r:
                    ctx.verdict, ctx.verdict_sp = r, int(self.t.fe_sp[fe])
        self._ct_update(e, False, d, l4, proto)
        self._ct_insert(e)
        return 0

    def _service(self, it: Item, e: CtEntry, node: int, fe: int, sip: int, sport: int,
                 proto: int, l4: int) -> int:
        """KUBE-SVC/KUBE-EXT/KUBE-SEP for a new flow: pick a backend, DNAT, mark masquerade."""
        t = self.t
        sp = int(t.fe_sp[fe])
        kind = int(t.fe_kind[fe])
        flags = int(t.sp_flags[sp])
        start, count = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        cnet, cmask = t.cluster_cidr
        from_cluster = (sip & cmask) == cnet
        external = kind != C.FE_CLUSTER_IP
        local_src = (node, sip) in self.local_ips
        local_only = False
        masq = False
        if external:
            if not flags & C.SP_ETP_LOCAL:
                masq = True  # E-1: KUBE-EXT always marks for masquerade
            elif local_src:
                masq = True  # E-2: the node itself: masquerade, cluster-wide endpoints
            elif not from_cluster:
                local_only = True  # E-2: KUBE-SVL, local endpoints, client IP kept
            # E-2: pods short-circuit to KUBE-SVC without masquerade
        else:
            masq = not from_cluster  # S-6
            if flags & C.SP_ITP_LOCAL:
                local_only = True
        cands = list(range(start, start + count))
        if local_only:
            cands = [b for b in cands if int(t.be_node[b]) == node]
        if count == 0:
            return C.DROP_REJECT_NO_ENDPOINTS
        if not cands:
            return C.DROP_NO_LOCAL_ENDPOINTS
        be = -1
        if flags & C.SP_AFFINITY:
            rec = self.affinity.get((node, sp, sip))
            if rec is not None and self.now - rec[2] <= int(t.sp_affinity_ns[sp]):
                b = self._find_backend(sp, rec[0], rec[1])
                if b in cands:
                    be = b
                    self._ev(it, C.EV_AFFINITY, sp, b, node)
        if be < 0:
            h = flow_hash(self.seed, node, proto, sip, sport, e.orig[3], e.orig[4])
            be = cands[h % len(cands)]
        if flags & C.SP_AFFINITY:
            self.affinity[(node, sp, sip)] = (int(t.be_ip[be]), int(t.be_port[be]), self.now)
        bip, bport = int(t.be_ip[be]), int(t.be_port[be])
        if sip == bip:
            masq = True  # S-5: hairpin
        e.flags |= C.CT_DNAT
        e.dnat_ip, e.dnat_port, e.sp, e.be, e.masq = bip, bport, sp, be, masq
        e.reply = (proto, bip, bport, sip, sport)
        self._set_dst(it.data, bip, bport, proto, l4)
        self._changed(it)
        self._ev(it, C.EV_DNAT, fe, be, e.orig[3])
        return 0

    def _filter_forward(self, it: Item) -> int:
        """filter FORWARD/OUTPUT: KUBE-SERVICES REJECT/DROP for NEW flows (S-9)."""
        ctx = it.ctx
        if ctx.new and ctx.verdict:
            return ctx.verdict
        return 0

    def _postrouting(self, it: Item, node: int, out_if: int) -> None:
        """KUBE-POSTROUTING masquerade (S-7) for marked new flows; reply un-DNAT; confirm."""
        ctx = it.ctx
        if ctx.related is not None and ctx.node == node:
            self._related_post(it, node)
        e = ctx.ct
        if e is None or ctx.node != node:
            return
        d = it.data
        proto, l4, _sport, _dport = self._l4(d)
        if not ctx.reply_dir:
            if ctx.new and e.masq and not e.flags & C.CT_SNAT:
                self._masquerade(it, e, node, out_if, proto, l4)
            elif e.flags & C.CT_SNAT:
                self._set_src(d, e.snat_ip, e.snat_port if proto != C.PROTO_ICMP else -1,
                              proto, l4)
                self._changed(it)
        elif e.flags & C.CT_DNAT:
            self._set_src(d, e.orig[3], e.orig[4] if proto != C.PROTO_ICMP else -1, proto, l4)
            self._changed(it)
            self._ev(it, C.EV_UNDNAT, e.sp, e.be, node)
        ctx.new = False  # confirmed

    # ---- ICMP errors RELATED to a NATed flow (nf_nat_icmp_reply_translation)
    def _inner(self, d: bytearray, l4: int) -> tuple[int, int, int, int] | None:
        """(inner IP offset, inner L4 offset, inner protocol, end) of a quoted TCP/UDP header."""
        end = min(len(d), 14 + u16(d, 16))
        inner = l4 + 8
        if inner + 20 > end or d[inner] >> 4 != 4 or (d[inner] & 0xF) < 5:
            return None
        il4 = inner + (d[inner] & 0xF) * 4
        iproto = d[inner + 9]
        if iproto not in (C.PROTO_TCP, C.PROTO_UDP) or il4 + 4 > end:
            return None
        return inner, il4, iproto, end

    def _related_pre(self, it: Item, node: int, l4: int) -> None:
        """An ICMP error quoting a packet of a tracked flow: at PREROUTING, undo the flow's
        SNAT (outer destination and quoted source back to the client)."""
        d = it.data
        if l4 >= len(d) or d[l4] not in (3, 4, 5, 11, 12):
            return
        q = self._inner(d, l4)
        if q is None:
            return
        inner, il4, iproto, _end = q
        key = (node, iproto, u32(d, inner + 16), u16(d, il4 + 2), u32(d, inner + 12),
               u16(d, il4))
        hit = self.ct.get(key)
        if hit is None or not hit[1]:
            return
        e = hit[0]
        it.ctx.related = e
        if e.flags & C.CT_SNAT:
            self._set_addr(d, 30, e.orig[1], -1, C.PROTO_ICMP, l4, 0)
            self._inner_set(d, l4, q, inner + 12, e.orig[1], 0, e.orig[2])
            self._changed(it)
            self._ev(it, C.EV_UNSNAT, e.orig[1], e.orig[2], node)

    def _related_post(self, it: Item, node: int) -> None:
        """At POSTROUTING: undo the flow's DNAT (outer source and quoted destination become
        the Service's address, as the kernel rewrites them)."""
        e = it.ctx.related
        it.ctx.related = None
        if e is None or not e.flags & C.CT_DNAT:
            return
        d = it.data
        l4 = 14 + (d[14] & 0xF) * 4
        q = self._inner(d, l4)
        if q is None:
            return
        self._set_addr(d, 26, e.orig[3], -1, C.PROTO_ICMP, l4, 0)
        self._inner_set(d, l4, q, q[0] + 16, e.orig[3], 2, e.orig[4])
        self._changed(it)
        self._ev(it, C.EV_UNDNAT, e.sp, e.be, node)

    def _inner_set(self, d: bytearray, l4: int, q: tuple[int, int, int, int], at_ip: int,
                   ip: int, port_at: int, port: int) -> None:
        """Rewrite a quoted address and port, fixing the quoted IP and L4 checksums and the
        ICMP checksum over all of them."""
        inner, il4, iproto, end = q
        icmp_c = l4 + 2

        def set16(off: int, new: int) -> None:
            old = u16(d, off)
            put16(d, off, new)
            put16(d, icmp_c, csum_replace16(u16(d, icmp_c), old, new))

        old_ip = u32(d, at_ip)
        old_port = u16(d, il4 + port_at)
        set16(inner + 10, csum_replace32(u16(d, inner + 10), old_ip, ip))
        set16(at_ip, ip >> 16)
        set16(at_ip + 2, ip & 0xFFFF)
        co = -1
        if iproto == C.PROTO_TCP and il4 + 18 <= end:
            co = il4 + 16
        elif iproto == C.PROTO_UDP and il4 + 8 <= end and u16(d, il4 + 6) != 0:
            co = il4 + 6
        if co >= 0:
            c = csum_replace16(csum_replace32(u16(d, co), old_ip, ip), old_port, port)
            if iproto == C.PROTO_UDP and c == 0:
                c = 0xFFFF
            set16(co, c)
        set16(il4 + port_at, port)

    def _masquerade(self, it: Item, e: CtEntry, node: int, out_if: int, proto: int,
                    l4: int) -> None:
        new_ip = self.if_ip[out_if]
        port = e.orig[2]
        # keep the source port unless the reply tuple would clash (nf_nat_used_tuple)
        rproto, rsip, rsport = e.reply[0], e.reply[1], e.reply[2]
        if proto in (C.PROTO_TCP, C.PROTO_UDP):
            tries = 0
            while (node, rproto, rsip, rsport, new_ip, port) in self.ct and tries < 64512:
                port = 1024 + (port - 1024 + 1) % 64512 if port >= 1024 else 1024
                tries += 1
        self.ct.pop((node,) + e.reply, None)
        e.reply = (rproto, rsip, rsport, new_ip, port)
        self.ct[(node,) + e.reply] = (e, True)
        e.flags |= C.CT_SNAT
        e.snat_ip, e.snat_port = new_ip, port
        self._set_src(it.data, new_ip, port if proto != C.PROTO_ICMP else -1, proto, l4)
        self._changed(it)
        self._ev(it, C.EV_SNAT, new_ip, port, node)

    def _ct_insert(self, e: CtEntry) -> None:
        self.ct[(e.node,) + e.orig] = (e, False)
        self.ct[(e.node,) + e.reply] = (e, True)

    def _ct_delete(self, e: CtEntry) -> None:
        for key, dirn in (((e.node,) + e.orig, False), ((e.node,) + e.reply, True)):
            hit = self.ct.get(key)
            if hit is not None and hit[0] is e and hit[1] == dirn:
                del self.ct[key]

    def _ct_update(self, e: CtEntry, is_reply: bool, d: bytearray, l4: int,
                   proto: int) -> None:
        """A small TCP state machine (FIN and CLOSE are sticky) and the timeouts after it."""
        if is_reply:
            e.flags |= C.CT_REPLIED
        if proto == C.PROTO_TCP and l4 + 14 <= len(d):
            fl = d[l4 + 13]
            st = e.state
            if st == CT_CLOSE or fl & 0x04:
                st = CT_CLOSE
            elif fl & 0x01 or st == CT_FIN:
                st = CT_FIN
            elif fl & 0x02 and not fl & 0x10:
                st = CT_SYN_SENT if st in (CT_NONE, CT_SYN_SENT) else st
            elif fl & 0x12 == 0x12 and is_reply:
                st = CT_SYN_RECV
            elif fl & 0x10 and e.flags & C.CT_REPLIED:
                st = CT_ESTABLISHED
            elif st == CT_NONE:
                st = CT_ESTABLISHED if fl & 0x10 else CT_SYN_SENT  # loose pickup
            e.state = st
            e.expires = self.now + TCP_TIMEOUTS[st] * NS
        elif proto == C.PROTO_UDP:
            e.state = CT_UDP
            e.expires = self.now + (UDP_STREAM_TIMEOUT if e.flags & C.CT_REPLIED
                                    else UDP_TIMEOUT) * NS
        elif proto == C.PROTO_ICMP:
            e.state = CT_ICMP
            e.expires = self.now + ICMP_TIMEOUT * NS
        else:
            e.expires = self.now + OTHER_TIMEOUT * NS

    # ---- header rewrites with incremental checksums
    def _l4_csum_off(self, proto: int, l4: int, d: bytearray) -> int:
        if proto == C.PROTO_TCP and l4 + 18 <= len(d):
            return l4 + 16
        if proto == C.PROTO_UDP and l4 + 8 <= len(d) and u16(d, l4 + 6) != 0:
            return l4 + 6
        return -1

    def _set_addr(self, d: bytearray, at: int, ip: int, port: int, proto: int, l4: int,
                  port_at: int) -> None:
        old_ip = u32(d, at)
        put32(d, at, ip)
        put16(d, 24, csum_replace32(u16(d, 24), old_ip, ip))
        co = self._l4_csum_off(proto, l4, d)
        if co >= 0:
            c = csum_replace32(u16(d, co), old_ip, ip)
            if port >= 0 and l4 + port_at + 2 <= len(d):
                c = csum_replace16(c, u16(d, l4 + port_at), port)
            if proto == C.PROTO_UDP and c == 0:
                c = 0xFFFF
            put16(d, co, c)
        if port >= 0 and proto in (C.PROTO_TCP, C.PROTO_UDP) and l4 + port_at + 2 <= len(d):
            put16(d, l4 + port_at, port)

    def _set_dst(self, d: bytearray, ip: int, port: int, proto: int = 0, l4: int = 0) -> None:
        self._set_addr(d, 30, ip, port, proto, l4, 2)

    def _set_src(self, d: bytearray, ip: int, port: int, proto: int = -1, l4: int = 0) -> None:
        if proto < 0:
            proto, l4, _s, _d = self._l4(d)
        self._set_addr(d, 26, ip, port, proto, l4, 0)

    # ---- VXLAN (OV-1..OV-3)
    def _vxlan_encap(self, it: Item, vtep: int) -> bool:
        """flannel.1 TX: wrap the frame in Ether/IPv4/UDP 8472/VXLAN VNI 1 towards the VTEP
        owning the inner destination MAC (flannel's static FDB), then route it from the
        node's own stack."""
        t = self.t
        d = it.data
        node = self.if_node[vtep]
        dmac = u48(d, 0)
        remote = -1
        for m in range(t.n_nodes):
            v = int(t.node_vtep_if[m])
            if v >= 0 and self.if_mac[v] == dmac:
                remote = m
        if remote < 0:
            self._end(it, C.OUT_DROPPED, C.DROP_NO_ROUTE, vtep)
            return False
        inner = bytes(d)
        ip = len(d) >= 14 and u16(d, 12) == ETH_IP
        proto, _l4, sport, dport = self._l4(d) if ip else (0, 0, 0, 0)
        h = flow_hash(0, 0, proto, u32(d, 26) if len(d) >= 34 else 0, sport,
                      u32(d, 30) if len(d) >= 34 else 0, dport)
        src_port = 32768 + (h % 28232)  # the kernel's default local port range
        outer = bytearray(50) + bytearray(inner)
        put16(outer, 12, ETH_IP)
        tot = 20 + 8 + 8 + len(inner)
        outer[14] = 0x45
        put16(outer, 16, tot)
        outer[22] = 64
        outer[23] = C.PROTO_UDP
        put32(outer, 26, int(t.node_ip[node]))
        put32(outer, 30, int(t.node_ip[remote]))
        put16(outer, 24, ip_checksum(outer, 14, 20))
        put16(outer, 34, src_port)
        put16(outer, 36, C.VXLAN_PORT)
        put16(outer, 38, 8 + 8 + len(inner))
        outer[42] = 0x08
        outer[46:49] = C.VXLAN_VNI.to_bytes(3, "big")
        it.data = outer
        self._changed(it)
        self._ev(it, C.EV_ENCAP, remote, C.VXLAN_VNI)
        it.ctx = Ctx()
        it.stage, it.a = S_LOCAL_OUT, node
        return True

    def _vxlan_decap(self, it: Item, node: int, l4: int, stack: list[Item]) -> None:
        d = it.data
        inner = bytearray(d[l4 + 16:])
        it.data = inner
        self._changed(it)
        self._ev(it, C.EV_DECAP, node, C.VXLAN_VNI)
        it.ctx = Ctx()
        it.stage, it.a = S_RX, int(self.t.node_vtep_if[node])
        stack.append(it)
