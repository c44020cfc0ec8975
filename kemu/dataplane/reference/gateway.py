"""The node network's gateway, a Linux router.

Owns ``Gateway``: ``_gw_rcv`` (a frame addressed to the gateway at L2: ARP and IPv4 to its
own address as an end host's, ``_host_rcv``; anything else is forwarded: the route lookup in
the shared table seen from the gateway (a pod CIDR via its node in host-gw mode, the node
network connected, a routed LoadBalancer address via its node; VXLAN pod CIDRs and
everything else: the default route out of the cluster), the TTL decremented (1: time
exceeded, the slow path's ICMP error from the gateway), the next hop's static neighbour
entry (the node network's owner of the address; none: host unreachable)).

Compiled twin: ``kemu/fastpath/gateway.pxi``.
SEMANTICS ids: R-1, R-2 (seen from the gateway).
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.packet import ETH_IP
from kemu.dataplane.reference.host import Host
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import S_TX, Ctx, Item
from kemu.dataplane.reference.util import csum_replace16, put16, put48, u16, u32


class Gateway(Host, Record):
    """The gateway forwarding like a router."""

    def _gw_rcv(self, it: Item, i: int, stack: list[Item]) -> None:
        """The gateway receives a frame addressed to it at L2 (``_rx`` checked the MAC)."""
        d = it.data
        if len(d) < 34 or u16(d, 12) != ETH_IP:
            return self._host_rcv(it, i, stack)
        bad = self._l3_check(d, ETH_IP)
        if bad:
            return self._end(it, C.OUT_DROPPED, bad, i)
        dst = u32(d, 30)
        if dst == self.if_ip[i] or dst == 0xFFFFFFFF or (dst & 0xF0000000) == 0xE0000000:
            return self._end(it, C.OUT_DELIVERED, 0, i)
        r = self.lpm.lookup(dst)
        if r < 0:
            return self._end(it, C.OUT_DROPPED, C.DROP_NO_ROUTE, i)
        t = self.t
        ttl = d[22]  # ip_forward: the TTL first, whichever way the packet goes
        if ttl <= 1:
            return self._end(it, C.OUT_DROPPED, C.DROP_TTL_EXCEEDED, i)
        old = u16(d, 22)
        d[22] = ttl - 1
        put16(d, 24, csum_replace16(u16(d, 24), old, u16(d, 22)))
        self._changed(it)
        self._ev(it, C.EV_TTL, ttl - 1, -1)
        kind = int(t.rt_kind[r])
        if kind == C.RT_NODE_NET:
            nh = 0
        elif (kind == C.RT_POD_CIDR and not t.vxlan) or kind == C.RT_LB:
            nh = int(t.node_ip[int(t.rt_node[r])])
        else:  # the default route: out of the cluster
            return self._end(it, C.OUT_LEFT, 0, i, keep=True)
        self._ev(it, C.EV_ROUTE, r, nh, -1)
        hop = nh if nh else dst
        owner = t.owner_of(hop)
        if owner < 0 or owner == i:
            self._ev(it, C.EV_NEIGH_MISS, hop, -1, i)
            return self._end(it, C.OUT_NEIGH, 0, i, hop, keep=True)
        put48(d, 0, self.if_mac[owner])
        put48(d, 6, self.if_mac[i])
        it.ctx = Ctx()
        it.stage, it.a = S_TX, i
        stack.append(it)
