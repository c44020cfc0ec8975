"""A node's IP stack: local addresses, routes, neighbours.

Owns ``Routing``: a node's device receiving (``_node_rcv``: on to the node's IP stack),
``_node_in`` (ip_rcv's checks, PREROUTING unless the bridge ran it, then local input or
forward: LPM route, TTL, the out device's MTU for DF packets (``_too_big``: ICMP 3/4 from
the slow path), filter FORWARD), ``_local_in`` (delivery, or the VXLAN socket:
``tunnel.py``), ``_local_out`` (the node's own packets: route, nat OUTPUT sharing
KUBE-SERVICES, S-1, filter OUTPUT, the MTU, POSTROUTING), ``_output`` (POSTROUTING then
neighbour output, ip_finish_output2: a miss holds the packet, a hit caches the header) and
the route lookup (``_route_id``, ``_route_dev``: R-1, R-2).

Compiled twin: ``kemu/fastpath/routing.pxi``.
SEMANTICS ids: R-1, R-2, S-1, S-9, L2-2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kemu.dataplane import codes as C
from kemu.dataplane.packet import ETH_ARP, ETH_IP
from kemu.dataplane.reference.nat import Nat
from kemu.dataplane.reference.netfilter import Netfilter
from kemu.dataplane.reference.parse import Parse
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import S_NODE_IN, S_TX, Ctx, Item
from kemu.dataplane.reference.tunnel import Tunnel
from kemu.dataplane.reference.util import csum_replace16, put16, put48, u16, u32


def route_drop(out_if: int) -> int:
    """The drop reason of a failed route lookup: no route (-1), or the reason a discarding
    route carries as ``-reason`` (``Tables.nrt_if``)."""
    return C.DROP_NO_ROUTE if out_if == -1 else -out_if


class Routing(Tunnel, Netfilter, Nat, Record, Parse):
    """ip_rcv, forward, local in and out, output; routes and neighbours."""

    if TYPE_CHECKING:  # Antrea's tunnel port (ovs.py, a base of Stages)
        def _ovs_tun_len(self, d: bytearray, l4: int) -> int: ...
        def _ovs_notrack(self, d: bytearray, node: int) -> bool: ...
        def _ovs_tun_rcv(self, it: Item, node: int, l4: int, hl: int,
                         stack: list[Item]) -> None: ...

    def _node_rcv(self, it: Item, i: int, stack: list[Item]) -> None:
        """A node's device receives a frame addressed to it: on to the node's IP stack."""
        it.stage, it.a = S_NODE_IN, i
        stack.append(it)

    def _node_in(self, it: Item, stack: list[Item]) -> None:
        i = it.a
        node = self.if_node[i]
        d = it.data
        it.frag_max = 0  # ip_rcv_core clears the control block (frag_max_size)
        et = u16(d, 12)
        if et == ETH_ARP:
            if len(d) < 42:
                return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, i)
            tpa = u32(d, 38)  # (owner: a LoadBalancer address the node announces, L2)
            if ((node, tpa) in self.local_ips or self.t.owner_of(tpa) == i
                    or (self.proxy_arp[i] and self._proxy_arp(node, i, tpa))):
                self._ev(it, C.EV_NODE_INPUT, node)
                return self._end(it, C.OUT_DELIVERED, 0, i)
            return self._end(it, C.OUT_DROPPED, C.DROP_NOT_LOCAL, i)
        bad = self._l3_check(d, et)
        if bad:
            return self._end(it, C.OUT_DROPPED, bad, i)
        if (u32(d, 26) >> 24) == 127:
            return self._end(it, C.OUT_DROPPED, C.DROP_MARTIAN, i)
        if not (it.ctx.pre_done and it.ctx.node == node) and not (
                self.t.ovs_tunnel and self._ovs_notrack(d, node)):  # Antrea's NOTRACK
            verdict = self._prerouting(it, node, i)
            if verdict:
                return self._end(it, C.OUT_DROPPED, verdict, i)
        dst = u32(d, 30)
        if (node, dst) in self.local_ips:
            return self._local_in(it, node, i, stack)
        out_if, nh = self._route_dev(node, dst)
        if out_if < 0:
            return self._end(it, C.OUT_DROPPED, route_drop(out_if), i, keep=out_if != -1)
        ttl = d[22]
        if ttl <= 1:
            return self._end(it, C.OUT_DROPPED, C.DROP_TTL_EXCEEDED, i, keep=True)
        if self._too_big(d, out_if):  # ip_forward: before the TTL decrement and FORWARD
            return self._end(it, C.OUT_DROPPED, C.DROP_FRAG_NEEDED, i, self.if_mtu[out_if],
                             keep=True)
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
        if self.t.ovs_tunnel and self.t.ovs_tunnel != C.ANTREA_NOENCAP:  # Antrea (ovs.py)
            hl = self._ovs_tun_len(d, l4)
            if hl:
                return self._ovs_tun_rcv(it, node, l4, hl, stack)
        if self.tun_if and d[23] == C.PROTO_IPIP and len(d) >= l4 + 20:  # ipip_rcv
            tun = self._ipip_tunnel(node, u32(d, 26))
            if tun >= 0:
                return self._ipip_decap(it, node, tun, l4, stack)
        self._local_in_nat(it, node)
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
            self._set_src(d, self.if_ip[out_if] or int(self.t.node_ip[node]), -1)
        verdict = self._prerouting(it, node, loc)  # nat OUTPUT shares KUBE-SERVICES (S-1)
        if verdict:
            return self._end(it, C.OUT_DROPPED, verdict, loc)
        dst = u32(d, 30)
        li = self.local_ips.get((node, dst), -1)
        if li < 0 and dst >> 24 == 127:  # the local table's `local 127.0.0.0/8 dev lo`
            li = loc
        if li >= 0:
            self._ev(it, C.EV_NODE_INPUT, node)
            return self._end(it, C.OUT_DELIVERED, 0, li)
        out_if, nh = self._route_dev(node, dst)
        if out_if < 0:
            return self._end(it, C.OUT_DROPPED, route_drop(out_if), loc)
        verdict = self._filter_forward(it)
        if verdict:
            return self._end(it, C.OUT_DROPPED, verdict, loc, keep=True)
        if self._too_big(d, out_if):  # ip_fragment refuses a DF packet (the sender's own error)
            return self._end(it, C.OUT_DROPPED, C.DROP_FRAG_NEEDED, loc, self.if_mtu[out_if],
                             keep=True)
        self._output(it, node, out_if, nh, stack)

    def _too_big(self, d: bytearray, out_if: int) -> bool:
        """An IPv4 packet with DF set longer than ``out_if``'s MTU (``ip_exceeds_mtu``: the
        total length against the device MTU, L2-2): refused with ICMP 3/4 (the slow path)."""
        return u16(d, 16) > self.if_mtu[out_if] and bool(u16(d, 20) & 0x4000)

    def _output(self, it: Item, node: int, out_if: int, nh: int, stack: list[Item]) -> None:
        """POSTROUTING then neighbour output (ip_finish_output2)."""
        d = it.data
        self._postrouting(it, node, out_if)
        dst = u32(d, 30)
        hop = nh if nh else dst
        self._ev(it, C.EV_ROUTE, self._route_id(node, dst), nh, node)
        pieces = [it]
        mtu = self.if_mtu[out_if]
        if self._needs_fragment(it, mtu):  # ip_finish_output: ip_fragment
            if u16(d, 20) & 0x4000 and it.frag_max > mtu:  # DF fragments, too long now
                return self._end(it, C.OUT_DROPPED, C.DROP_FRAG_NEEDED, out_if, mtu,
                                 keep=True)
            pieces = self._fragment_out(it, mtu, node)
        if self.if_kind[out_if] == C.IF_IPIP:  # a NOARP device: no neighbour, no link header
            for p in pieces:
                put48(p.data, 0, 0)
                put48(p.data, 6, 0)
                self._changed(p)
                p.ctx = Ctx()
                p.stage, p.a = S_TX, out_if
            stack.extend(reversed(pieces))
            return None
        mac = self.neigh.get((node, hop), -1)
        if mac < 0:
            for p in pieces:
                self._ev(p, C.EV_NEIGH_MISS, hop, node, out_if)
                put48(p.data, 6, self.if_mac[out_if])
                self._changed(p)
                self._end(p, C.OUT_NEIGH, 0, out_if, hop, keep=True)
            return None
        self.neigh_hh.add((node, hop))  # neigh_resolve_output caches the header
        for p in pieces:
            put48(p.data, 0, mac)
            put48(p.data, 6, self.if_mac[out_if])
            self._changed(p)
            p.ctx = Ctx()
            p.stage, p.a = S_TX, out_if
        stack.extend(reversed(pieces))

    def _proxy_arp(self, node: int, i: int, tpa: int) -> bool:
        """arp_process's proxy ARP (``proxy_arp`` on ``i``): ``node`` routes ``tpa`` (a
        unicast route) out of a device other than ``i``."""
        out_if, _nh = self._route_dev(node, tpa)
        return out_if >= 0 and out_if != i

    # ---- routing
    def _route_id(self, node: int, dst: int) -> int:
        """The id of the route ``node`` takes to ``dst`` (EV_ROUTE): a shared route's, or
        ``len(rt_prefix) + k`` for route k of a node with its own table; -1: none."""
        if int(self.t.node_rt_count[node]):
            k = self._node_route(node, dst)
            return len(self.t.rt_prefix) + k if k >= 0 else -1
        return self.lpm.lookup(dst)

    def _node_route(self, node: int, dst: int) -> int:
        """The first (longest) route of the node's own table containing ``dst``, -1."""
        t = self.t
        s = int(t.node_rt_start[node])
        for k in range(s, s + int(t.node_rt_count[node])):
            ln = int(t.nrt_len[k])
            if ((dst ^ int(t.nrt_prefix[k])) & ((0xFFFFFFFF << (32 - ln)) & 0xFFFFFFFF)) == 0:
                return k
        return -1

    def _route_dev(self, node: int, dst: int) -> tuple[int, int]:
        """(out interface, next hop or 0 for connected) of ``dst`` on ``node``; (-1, 0): no
        route; (-reason, 0): a blackhole/unreachable/prohibit route (``route_drop``)."""
        t = self.t
        if int(t.node_rt_count[node]):  # the node's routes were set one by one
            k = self._node_route(node, dst)
            if k < 0:
                return -1, 0
            return int(t.nrt_if[k]), int(t.nrt_nh[k])
        r = self.lpm.lookup(dst)
        if r < 0:
            return -1, 0
        kind = int(t.rt_kind[r])
        if kind == C.RT_POD_CIDR:
            owner = int(t.rt_node[r])
            if owner == node:
                dev = self.rt_dev[r]  # a routed veth (routed CNIs), else the bridge
                return (dev if dev >= 0 else int(t.node_br_if[node])), 0
            tun = self.tun_if.get((node, owner), -1)
            if tun >= 0:  # kube-router's overlay: a dev route on tun-<hash>
                return tun, 0
            if t.ovs_tunnel and t.ovs_tunnel != C.ANTREA_NOENCAP:  # Antrea encap: via the
                return int(t.node_br_if[node]), int(t.node_br_ip[owner])  # peer's gateway
            if r in self.rt_connected:  # a routed pod in the node network: connected
                return int(t.node_eth_if[node]), 0
            if t.vxlan:  # flannel: the CIDR's .0; Cilium: the owner's VTEP
                return int(t.node_vtep_if[node]), self.rt_tun_nh.get(r, int(t.rt_prefix[r]))
            return int(t.node_eth_if[node]), int(t.node_ip[owner])
        if kind == C.RT_NODE_NET:
            return int(t.node_eth_if[node]), 0
        return int(t.node_eth_if[node]), t.gateway_ip
