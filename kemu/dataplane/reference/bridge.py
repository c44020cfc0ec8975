"""The Linux bridge: ports, learning, forwarding, flooding, br_netfilter.

Owns ``Bridge``: its devices sending into their bridge (``_bridge_xmit``: the node's bridge
device, the node's context kept; ``_port_xmit``: a host on the node network, whose segment is
a bridge too) and a port receiving (``_port_rcv``: br_handle_frame), and the two stages:
``_bridge_in`` (br_netfilter PREROUTING for bridged IPv4 and bridged DNAT when the new
destination is on the same bridge; MAC learning; the bridge's own port; FDB forwarding with
ageing on the emulated clock; ``_flood`` for broadcast, multicast and unknown unicast, L2-3;
hairpin ports may send back, L2-4; an Azure bridge-mode uplink, hairpin 2, only known
unicast and only on azure0, not on the node network it is also a port of) and
``_bridge_out`` (br_netfilter FORWARD and POSTROUTING, then out of the port; Azure's
ebtables snat on an uplink). The uplink itself: ``_uplink_xmit``, ``_uplink_rcv``.

Compiled twin: ``kemu/fastpath/bridge.pxi``.
SEMANTICS ids: L2-3, L2-4.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.packet import BROADCAST, ETH_ARP, ETH_IP
from kemu.dataplane.reference.netfilter import Netfilter
from kemu.dataplane.reference.parse import Parse
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.routing import Routing
from kemu.dataplane.reference.state import S_BRIDGE_IN, S_BRIDGE_OUT, S_RX, S_TX, Ctx, Item
from kemu.dataplane.reference.util import is_multicast_mac, put48, u16, u32, u48


class Bridge(Routing, Netfilter, Record, Parse):
    """A bridge's stages, in (from a port) and out (to a port), and its devices' TX/RX."""

    def _bridge_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """The node's bridge device transmits (br_dev_xmit): into the bridge, from its local
        port; the node's context (conntrack, NAT) stays with the packet."""
        it.stage, it.a, it.b = S_BRIDGE_IN, self.if_bridge[i], i
        stack.append(it)

    def _port_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """A host on the node network transmits: the segment is a bridge whose port is the
        host's interface; a new namespace's context starts."""
        it.ctx = Ctx()
        it.stage, it.a, it.b = S_BRIDGE_IN, self.if_bridge[i], i
        stack.append(it)

    def _port_rcv(self, it: Item, i: int, stack: list[Item]) -> None:
        """A bridge port (a host-side veth) receives: br_handle_frame takes the frame into the
        bridge it is enslaved to."""
        it.stage, it.a, it.b = S_BRIDGE_IN, self.if_bridge[i], i
        stack.append(it)

    def _uplink_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """An uplink enslaved to a node bridge (Azure CNI bridge mode's eth0) transmits onto
        the wire: the node network's segment (the last bridge) takes it from this port."""
        it.ctx = Ctx()
        it.stage, it.a, it.b = S_BRIDGE_IN, len(self.t.br_local_if) - 1, i
        stack.append(it)

    def _uplink_rcv(self, it: Item, i: int, stack: list[Item]) -> None:
        """An uplink receives from the wire (any MAC: a bridge port): ebtables nat PREROUTING
        on it (Azure's ``SetDnatForIPAddress``: an IPv4 packet to one of the node's bridged
        pods gets that pod's MAC; ``SetDnatForArpReplies``: an ARP reply is broadcast), then
        br_handle_frame takes it into the bridge it is enslaved to."""
        d = it.data
        et = u16(d, 12)
        mac = -1
        if et == ETH_IP and len(d) >= 34:
            o = self.t.owner_of(u32(d, 30))
            if (o >= 0 and self.if_kind[o] == C.IF_POD_ETH and self.if_node[o] == self.if_node[i]
                    and self.if_kind[self.if_peer[o]] == C.IF_VETH):
                mac = self.if_mac[o]
        elif et == ETH_ARP and len(d) >= 22 and u16(d, 20) == 2:
            mac = BROADCAST
        if mac >= 0 and u48(d, 0) != mac:
            put48(d, 0, mac)
            self._changed(it)
            self._ev(it, C.EV_EBT_DNAT, i, mac >> 24, mac & 0xFFFFFF)
        self._port_rcv(it, i, stack)

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
            # br_nf_pre_routing_finish: daddr changed (not by kube-router's IPVS, at
            # LOCAL_IN: the frame goes up to the node as it came, and is routed from there)
            if new_dst != dst_before and not self.t.ipvs:
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
                if q == p and not (self.if_hairpin[q] and self.if_bridge[q] == b):
                    return self._end(it, C.OUT_DROPPED, C.DROP_SAME_PORT, p)
                it.stage, it.a, it.b = S_BRIDGE_OUT, b, q
                it.flood = False
                return stack.append(it)
        self._flood(it, b, p, local_if, dmac, stack)

    def _flood(self, it: Item, b: int, p: int, local_if: int, dmac: int,
               stack: list[Item]) -> None:
        """The copy is replaced by one copy per port but the one it came in on (unless that
        is a hairpin port), pushed in reverse so that the ports run in order, and for
        broadcast and multicast one for the bridge's own port; with none: dropped."""
        t = self.t
        # flood: broadcast, multicast, unknown unicast (L2-3); local port for bcast/mcast
        s, n = int(t.br_port_start[b]), int(t.br_port_count[b])
        copies = []
        for k in range(s, s + n):
            q = int(t.br_ports[k])
            if q != p or self.if_hairpin[q] == 1:
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

    def _ebt_snat(self, it: Item, q: int) -> None:
        """ebtables nat POSTROUTING on the uplink (Azure's ``SetSnatForInterface``: ``-s
        unicast -o eth0 -j snat --to-src <eth0 MAC> --snat-arp``): a unicast source MAC
        becomes the uplink's, an ARP packet's sender hardware address too."""
        d = it.data
        smac = u48(d, 6)
        mac = self.if_mac[q]
        if is_multicast_mac(smac) or smac == mac:
            return
        put48(d, 6, mac)
        if u16(d, 12) == ETH_ARP and len(d) >= 28:
            put48(d, 22, mac)
        self._changed(it)
        self._ev(it, C.EV_EBT_SNAT, q, smac >> 24, smac & 0xFFFFFF)

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
        kind = self.if_kind[q]
        tx = kind == C.IF_VETH
        if kind == C.IF_UPLINK and self.if_bridge[q] == b:  # out of its master onto the wire
            tx = True
            self._ebt_snat(it, q)
        it.stage, it.a = (S_TX if tx else S_RX), q
        pieces = [it]
        if it.frag_max:  # br_nf_dev_queue_xmit: refragmented as conntrack found it
            mtu = self.if_mtu[q]
            if it.frag_max < mtu:
                mtu = it.frag_max
            if u16(d, 16) > mtu and u16(d, 20) & 0x4000 and it.frag_max > mtu:
                return self._end(it, C.OUT_DROPPED, C.DROP_FRAG_NEEDED, q, mtu)
            pieces = self._fragment_out(it, mtu, self.if_node[q])
        stack.extend(reversed(pieces))
