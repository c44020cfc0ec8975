"""The public ``Datapath``: tables in, batches of frames through, state out.

Owns ``Datapath``, the rooms' mixins put together, and the API of its own methods:
``__init__``; what ``load`` (``load.py``) calls after a table swap: conntrack is kept and its
services found again (``_remap_conntrack``, CT-4), affinity records follow their service port
by name (``_remap_affinity``), ``_seed_neighbours`` (what a settled cluster's kernels know;
flannel's static VTEP entries, OV-2); ``reset``, ``neigh_set``, ``neigh_lookup``, ``cleanup``
(FDB ageing, conntrack and affinity expiry), ``state`` (every piece of mutable state as sorted
tuples) and ``process`` (the batch call).

Compiled twin: ``kemu/fastpath/datapath.pxi``.
SEMANTICS ids: CT-4, OV-2.
"""

from __future__ import annotations

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane.reference.conntrack import Conntrack
from kemu.dataplane.reference.load import Load
from kemu.dataplane.reference.proxy import Proxy
from kemu.dataplane.reference.stages import Stages
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables


class Datapath(Load, Stages, Proxy, Conntrack):
    """Batch datapath over compiled ``Tables``; state persists across ``process`` calls."""

    def __init__(self, tables: Tables, seed: int = 0, static_neighbours: bool = True) -> None:
        self.seed = seed
        self.static_neighbours = static_neighbours
        self.fdb = {}         # the mutable state (annotated in ``State``)
        self.ct = {}
        self.neigh = {}
        self.neigh_hh = set()
        self.affinity = {}
        self.frags = {}
        self.ipvs_rr = {}
        self.t = tables
        self.load(tables)

    def _seed_neighbours(self) -> None:
        """What a settled cluster's kernels know: every pod on its node's bridge, every host
        of the node network on every node, flannel's static VTEP entries (OV-2), a routed
        pod of the node network on every other node as its node's eth0."""
        t = self.t
        for i in range(t.n_ifaces):
            k, n = self.if_kind[i], self.if_node[i]
            if k == C.IF_POD_ETH:
                self.neigh[(n, self.if_ip[i])] = self.if_mac[i]
            elif k in (C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH) or (
                    k == C.IF_BRIDGE and i == int(t.node_eth_if[n])):  # Azure's azure0
                for m in range(t.n_nodes):
                    if m != n:
                        self.neigh[(m, self.if_ip[i])] = self.if_mac[i]
            elif k == C.IF_VTEP:
                for m in range(t.n_nodes):
                    if m != n:
                        self.neigh[(m, self.if_ip[i])] = self.if_mac[i]
            elif k == C.IF_OVS_GW and 0 < t.ovs_tunnel < C.ANTREA_NOENCAP:
                # Antrea encap: OVS's ARPResponder answers for the peers' gateways with the
                # Global Virtual MAC (ovs-pipeline.md)
                for m in range(t.n_nodes):
                    if m != n:
                        self.neigh[(m, self.if_ip[i])] = C.GLOBAL_VIRTUAL_MAC
        # a routed pod in the node network (AWS VPC CNI, Azure CNI): the other nodes reach it
        # over the node network, its node's eth0 (the ENI holding the address) answers ARP
        net = next(((int(t.rt_prefix[r]), int(t.rt_len[r])) for r in range(len(t.rt_kind))
                    if int(t.rt_kind[r]) == C.RT_NODE_NET), None)
        mask = (0xFFFFFFFF << (32 - net[1])) & 0xFFFFFFFF if net is not None else 0
        hosts = {self.if_ip[i] for i in range(t.n_ifaces) if self.if_kind[i] in (
            C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH, C.IF_VTEP) or (
                self.if_kind[i] == C.IF_BRIDGE and i == int(t.node_eth_if[self.if_node[i]])) or (
                self.if_kind[i] == C.IF_OVS_GW and 0 < t.ovs_tunnel < C.ANTREA_NOENCAP)}
        for i in range(t.n_ifaces):
            if (self.if_kind[i] != C.IF_POD_ETH
                    or (self.if_kind[self.if_peer[i]] != C.IF_VETH_HOST
                        and not self._bridged_net(self.if_node[i]))
                    or net is None or (self.if_ip[i] & mask) != net[0]
                    or self.if_ip[i] in hosts):
                continue
            n = self.if_node[i]
            for m in range(t.n_nodes):
                if m != n:
                    self.neigh[(m, self.if_ip[i])] = self.if_mac[int(t.node_eth_if[n])]

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

    def reset(self) -> None:
        self.fdb.clear()
        self.ct.clear()
        self.neigh.clear()
        self.neigh_hh.clear()
        self.affinity.clear()
        self.frags.clear()
        self.ipvs_rr.clear()
        if self.static_neighbours:
            self._seed_neighbours()

    def neigh_set(self, node: int, ip: int, mac: int) -> None:
        if self.neigh.get((node, ip)) != mac:
            self.neigh_hh.discard((node, ip))
        self.neigh[(node, ip)] = mac

    def fdb_set(self, bridge: int, mac: int, port: int, now: int) -> None:
        """Learn ``mac`` behind ``port`` of ``bridge`` at time ``now``, as a frame from it
        entering there would (``br_fdb_update``): a warm start's FDB, written directly."""
        if not (0 <= port < len(self.if_bridge) and bridge >= 0 and (
                (self.if_bridge[port] == bridge and self.if_kind[port] != C.IF_BRIDGE)
                or (self.if_kind[port] == C.IF_UPLINK  # also a port of the segment
                    and bridge == len(self.t.br_local_if) - 1))):
            raise ValueError(f"interface {port} is not a port of bridge {bridge}")
        if not 0 < mac < (1 << 48) or mac >> 40 & 1:
            raise ValueError(f"{mac:#x} is not a unicast MAC address")
        self.fdb[(bridge, mac)] = (port, now)

    def conntrack_flush(self, node: int | None = None) -> None:
        """``conntrack -F`` on one node (every node: None); affinity records stay (they
        are ``recent`` lists, not conntrack)."""
        for e, is_reply in list(self.ct.values()):
            if not is_reply and (node is None or e.node == node):
                self._ct_delete(e)

    def fdb_flush(self, bridge: int) -> None:
        """``bridge fdb flush dev BRIDGE``: forget every learned MAC of one bridge."""
        for k in [k for k in self.fdb if k[0] == bridge]:
            del self.fdb[k]

    def neigh_delete(self, node: int, ip: int) -> bool:
        """``ip neigh del IP`` on ``node``; False if there was no entry."""
        self.neigh_hh.discard((node, ip))
        return self.neigh.pop((node, ip), None) is not None

    def neigh_lookup(self, node: int, ip: int) -> int:
        return self.neigh.get((node, ip), -1)

    def cleanup(self, now: int) -> None:
        """Expire FDB entries (ageing) and conntrack and affinity entries (timeouts)."""
        age = self.t.ageing_ns
        for k, (_port, seen) in list(self.fdb.items()):
            if now - seen > age:
                del self.fdb[k]
        self._ct_expire(now)
        for k, (_ip, _port, last) in list(self.affinity.items()):
            if now - last > int(self.t.sp_affinity_ns[k[1]]):
                del self.affinity[k]
        for r in self.frags.values():
            r.expire(now)

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
        # reassembly queues: (node, user, src, dst, proto, id, bytes held, length so far,
        # expires)
        frags = sorted((n,) + k + (q.meat, q.len, q.expires)
                       for n, r in self.frags.items() for k, q in r.queues.items())
        return {"fdb": fdb, "conntrack": ct, "neigh": neigh, "affinity": aff, "frags": frags}

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
