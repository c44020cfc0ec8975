"""The stage dispatch: a frame and every copy of it, from injection to their outcomes.

Owns ``Stages``: ``_frame`` (inject one frame, then run the LIFO work stack until every copy
has ended: each copy's stage runs in turn, a flood pushes one copy per port) and what
sending on an interface (``_tx``) and receiving on one (``_rx``) do.

Compiled twin: ``kemu/fastpath/stages.pxi`` (``run_frame``, ``st_tx``, ``st_rx``).
SEMANTICS ids: none of its own.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.packet import ETH_ARP
from kemu.dataplane.reference.bridge import Bridge
from kemu.dataplane.reference.inject import Inject
from kemu.dataplane.reference.parse import Parse
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.routing import Routing
from kemu.dataplane.reference.state import (
    S_BRIDGE_IN,
    S_BRIDGE_OUT,
    S_LOCAL_OUT,
    S_NODE_IN,
    S_RX,
    S_TX,
    Ctx,
    Item,
)
from kemu.dataplane.reference.tunnel import Tunnel
from kemu.dataplane.reference.util import is_multicast_mac, u16, u32, u48
from kemu.dataplane.results import Results


class Stages(Bridge, Routing, Tunnel, Inject, Record, Parse):
    """A frame's run: its copies through the stages."""

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
