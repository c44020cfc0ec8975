"""The stage dispatch: a frame and every copy of it, from injection to their outcomes.

Owns ``Stages``: ``_frame`` (inject one frame, then run the LIFO work stack until every copy
has ended: each copy's stage runs in turn, a flood pushes one copy per port) and the
device-kind registry: sending on an interface (``_tx``) and receiving on one (``_rx``) do
what its kind does, as the tables ``TX`` and ``RX`` say, which map each interface kind
(``kemu.dataplane.codes``) to a method in the room of its device.

Compiled twin: ``kemu/fastpath/stages.pxi`` (``run_frame``, ``st_tx``, ``st_rx``, and the
same table of kinds: ``tests/test_twins.py`` checks that both list the same ones).
SEMANTICS ids: none of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kemu.dataplane import codes as C
from kemu.dataplane.reference.bridge import Bridge
from kemu.dataplane.reference.gateway import Gateway
from kemu.dataplane.reference.host import Host
from kemu.dataplane.reference.inject import Inject
from kemu.dataplane.reference.ovs import Ovs
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.routing import Routing
from kemu.dataplane.reference.state import (
    S_BRIDGE_IN,
    S_BRIDGE_OUT,
    S_LOCAL_OUT,
    S_NODE_IN,
    S_RX,
    S_TX,
    Item,
)
from kemu.dataplane.reference.tunnel import Tunnel
from kemu.dataplane.reference.util import is_multicast_mac, u48
from kemu.dataplane.reference.veth import Veth
from kemu.dataplane.results import Results

if TYPE_CHECKING:
    from collections.abc import Callable

    Device = Callable[["Stages", Item, int, list[Item]], None]

# ---- the device-kind registry
# Sending on an interface (``_tx``) and receiving on one (``_rx``) do what its kind does.
# Each kind's work lives in the room of its device, as a method ``(self, item, interface,
# stack)`` of the room's mixin; these tables are the one place that maps a kind to it. A new
# kind of device: its code in ``kemu.dataplane.codes``, its room with its ``_*_xmit`` and
# ``_*_rcv`` methods (a base of ``Stages``), one row in each table below, and the same row in
# the compiled registry (``st_tx``/``st_rx`` in ``kemu/fastpath/stages.pxi``).
#
#   kind          transmit                           receive
#   IF_POD_ETH    _veth_xmit (veth): the peer's rx   _host_rcv (host): a pod's own stack
#   IF_VETH       _veth_xmit (veth)                  _port_rcv (bridge): into its bridge
#   IF_POD_LO     _lo_xmit (veth): rx on itself      _lo_rcv (host): delivered
#   IF_BRIDGE     _bridge_xmit (bridge)              _node_rcv (routing): the node's stack
#   IF_NODE_ETH   _port_xmit (bridge): the node      _node_rcv (routing)
#                 network is a bridge too
#   IF_EXT_ETH    _port_xmit (bridge)                _host_rcv (host): an external host
#   IF_GW_ETH     _port_xmit (bridge)                _gw_rcv (gateway): a router
#   IF_VTEP       _vxlan_xmit (tunnel)               _node_rcv (routing)
#   IF_IPIP       _ipip_xmit (tunnel)                _node_rcv (routing): no link header
#   IF_VETH_HOST  _veth_xmit (veth)                  _node_rcv (routing): a routed veth
#   IF_UPLINK     _uplink_xmit (bridge): onto the    _uplink_rcv (bridge): ebtables DNAT,
#                 node network's segment             into its bridge
#   IF_CILIUM_HOST _veth_xmit (veth)                 _node_rcv (routing): cilium_host/_net
#   IF_OVS_PORT   _ovs_port_xmit (ovs): the pod's    _ovs_port_rcv (ovs): br-int's pipeline
#   IF_OVS_GW     _ovs_gw_xmit (ovs): the host       _node_rcv (routing): OVS output to
#                 sends into br-int                  the host
#   IF_OVS_TUN    _ovs_tun_xmit (ovs): encapsulate   _ovs_port_rcv (ovs): decapsulated
TX: dict[int, Device] = {
    C.IF_POD_ETH: Veth._veth_xmit,
    C.IF_VETH: Veth._veth_xmit,
    C.IF_POD_LO: Veth._lo_xmit,
    C.IF_BRIDGE: Bridge._bridge_xmit,
    C.IF_NODE_ETH: Bridge._port_xmit,
    C.IF_EXT_ETH: Bridge._port_xmit,
    C.IF_GW_ETH: Bridge._port_xmit,
    C.IF_VTEP: Tunnel._vxlan_xmit,
    C.IF_IPIP: Tunnel._ipip_xmit,
    C.IF_VETH_HOST: Veth._veth_xmit,
    C.IF_UPLINK: Bridge._uplink_xmit,
    C.IF_CILIUM_HOST: Veth._veth_xmit,
    C.IF_OVS_PORT: Ovs._ovs_port_xmit,
    C.IF_OVS_GW: Ovs._ovs_gw_xmit,
    C.IF_OVS_TUN: Ovs._ovs_tun_xmit,
}
RX: dict[int, Device] = {
    C.IF_POD_ETH: Host._host_rcv,
    C.IF_VETH: Bridge._port_rcv,
    C.IF_POD_LO: Host._lo_rcv,
    C.IF_BRIDGE: Routing._node_rcv,
    C.IF_NODE_ETH: Routing._node_rcv,
    C.IF_EXT_ETH: Host._host_rcv,
    C.IF_GW_ETH: Gateway._gw_rcv,
    C.IF_VTEP: Routing._node_rcv,
    C.IF_IPIP: Routing._node_rcv,
    C.IF_VETH_HOST: Routing._node_rcv,
    C.IF_UPLINK: Bridge._uplink_rcv,
    C.IF_CILIUM_HOST: Routing._node_rcv,
    C.IF_OVS_PORT: Ovs._ovs_port_rcv,
    C.IF_OVS_GW: Routing._node_rcv,
    C.IF_OVS_TUN: Ovs._ovs_port_rcv,
}
# The kinds whose receive takes a frame for any destination MAC: a bridge port and lo. Every
# other kind is an Ethernet device that drops frames for another host before its receive.
RX_ANY_MAC = frozenset({C.IF_VETH, C.IF_POD_LO, C.IF_UPLINK, C.IF_OVS_PORT, C.IF_OVS_TUN})
# Devices without a link header (kube-router's IP-in-IP tunnels; kemu keeps an Ethernet header
# of zeros in front): no destination MAC to check, only the header's length.
NO_LINK_HEADER = frozenset({C.IF_IPIP})


class Stages(Veth, Bridge, Gateway, Host, Ovs, Routing, Tunnel, Inject, Record):
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
            if self.t.sock_lb and first.a == iface and self.if_kind[iface] == C.IF_POD_ETH:
                self._sock_connect(first, iface)  # Cilium's socket LB (inject.py)
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
        """Sending on interface ``it.a``: a hop out, then what its kind's ``TX`` does."""
        i = it.a
        kind = self.if_kind[i]
        self._hop(it, i, C.DIR_OUT)
        xmit = TX.get(kind)
        if xmit is None:  # no such device kind: the copy loops to the hop limit
            return stack.append(it)
        xmit(self, it, i, stack)

    def _rx(self, it: Item, stack: list[Item]) -> None:
        """Receiving on interface ``it.a``: a hop in; an Ethernet device drops frames for
        another host; then what its kind's ``RX`` does."""
        i = it.a
        kind = self.if_kind[i]
        self._hop(it, i, C.DIR_IN)
        if kind not in RX_ANY_MAC:
            d = it.data
            if len(d) < 14:
                return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, i)
            dmac = u48(d, 0)
            if kind not in NO_LINK_HEADER and dmac != self.if_mac[i] and \
                    not is_multicast_mac(dmac):
                return self._end(it, C.OUT_DROPPED, C.DROP_OTHERHOST, i)
        rcv = RX.get(kind, Host._host_rcv)  # a kind not in the table: as an end host's
        rcv(self, it, i, stack)
