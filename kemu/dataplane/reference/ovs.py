"""Antrea's OVS bridge br-int: the pipeline a frame meets at an OVS port, and the tunnel port.

Owns ``Ovs``: ``_ovs_in`` (a frame enters br-int at a pod's veth, antrea-gw0 or antrea-tun0:
Classifier, SpoofGuard, the conntrack zone with AntreaProxy's ServiceLB/EndpointDNAT,
EgressRule/IngressRule (NetworkPolicy), L3Forwarding, L3DecTTL, L2ForwardingCalc, Output, as
Antrea's docs/design/ovs-pipeline.md lays them out), ``_ovs_arp`` (ARPSpoofGuard and the
``normal`` action), ``_ovs_port_xmit`` (out of a pod's port), ``_ovs_tun_xmit`` /
``_ovs_tun_encap`` (antrea-tun0: Geneve UDP 6081 VNI 0, VXLAN UDP 4789 VNI 0 or GRE, outer
TTL 64 with DF, towards the node owning the inner destination's pod CIDR) and
``_ovs_tun_len`` / ``_ovs_tun_rcv`` (the node's tunnel traffic at local input, decapsulated
into br-int at antrea-tun0). The compiler's side and the pages modelled: ``kemu/compiler/
antrea.py``.

Compiled twin: ``kemu/fastpath/ovs.pxi``.
SEMANTICS ids: none of its own (docs/CNI.md, ``## Antrea``).
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.packet import ETH_ARP, ETH_IP, ETH_IPV6
from kemu.dataplane.reference.routing import Routing, route_drop
from kemu.dataplane.reference.state import S_LOCAL_OUT, S_RX, S_TX, Ctx, Item
from kemu.dataplane.reference.util import (
    csum_replace16,
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

GVMAC = C.GLOBAL_VIRTUAL_MAC


class Ovs(Routing):
    """br-int's pipeline and the flow-based tunnel port (module docstring)."""

    def _ovs_port_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """An OVS port towards a pod: the veth's far end receives it; br-int's own internal
        port (no peer) is down."""
        if self.if_peer[i] < 0:
            return self._end(it, C.OUT_DROPPED, C.DROP_OVS_NO_FLOW, i)
        it.ctx = Ctx()
        it.stage, it.a = S_RX, self.if_peer[i]
        stack.append(it)

    def _ovs_pod_port(self, node: int, ip: int) -> int:
        """The OVS port of the node's pod owning ``ip``, -1."""
        o = self.t.owner_of(ip)
        if o >= 0 and self.if_kind[o] == C.IF_POD_ETH and self.if_node[o] == node:
            return self.if_peer[o]
        return -1

    def _ovs_port_of_mac(self, node: int, mac: int, ip: int) -> int:
        """L2ForwardingCalc's flows: the node's port for destination ``mac`` (antrea-gw0,
        antrea-tun0 for the Global Virtual MAC, a pod's port), -1: no flow."""
        g = int(self.t.node_br_if[node])
        if mac == self.if_mac[g]:
            return g
        if mac == GVMAC:
            return int(self.t.node_vtep_if[node])
        p = self._ovs_pod_port(node, ip)
        if p >= 0 and self.if_mac[self.if_peer[p]] == mac:
            return p
        for k in range(len(self.if_kind)):
            if (self.if_kind[k] == C.IF_POD_ETH and self.if_node[k] == node
                    and self.if_mac[k] == mac and self.if_kind[self.if_peer[k]] == C.IF_OVS_PORT):
                return self.if_peer[k]
        return -1

    def _ovs_output(self, it: Item, out: int, stack: list[Item]) -> None:
        """Output: the frame leaves br-int on port ``out``."""
        self._ev(it, C.EV_OVS_TABLE, C.OVS_T_OUTPUT, out)
        it.stage = S_RX if self.if_kind[out] == C.IF_OVS_GW else S_TX
        it.a = out
        stack.append(it)

    def _ovs_arp(self, it: Item, port: int, src: int, node: int, stack: list[Item]) -> None:
        """ARPSpoofGuard for a pod's port, then the ``normal`` action of a learning switch
        (every MAC known: a request goes to the owner of its target address only)."""
        d = it.data
        if len(d) < 42:
            return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, port)
        tpa = u32(d, 38)
        g = int(self.t.node_br_if[node])
        if src == C.OVS_FROM_POD:
            pod = self.if_peer[port]
            if u48(d, 22) != self.if_mac[pod] or u32(d, 28) != self.if_ip[pod]:
                return self._end(it, C.OUT_DROPPED, C.DROP_OVS_SPOOFGUARD, port)
        dmac = u48(d, 0)
        if not is_multicast_mac(dmac):
            out = self._ovs_port_of_mac(node, dmac, tpa)
        elif tpa == self.if_ip[g]:
            out = g
        else:
            out = self._ovs_pod_port(node, tpa)
        if out < 0 or out == port or self.if_kind[out] == C.IF_OVS_TUN:
            return self._end(it, C.OUT_DROPPED, C.DROP_OVS_NO_FLOW, port)
        self._ev(it, C.EV_OVS_TABLE, C.OVS_T_ARP, out)
        self._ovs_output(it, out, stack)

    def _ovs_in(self, it: Item, port: int, stack: list[Item]) -> None:
        """A frame enters br-int at ``port``: the pipeline's tables, then Output."""
        t = self.t
        node = self.if_node[port]
        kind = self.if_kind[port]
        g = int(t.node_br_if[node])
        gmac = self.if_mac[g]
        d = it.data
        if len(d) < 14:
            return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, port)
        src = (C.OVS_FROM_POD if kind == C.IF_OVS_PORT else
               C.OVS_FROM_GATEWAY if kind == C.IF_OVS_GW else C.OVS_FROM_TUNNEL)
        self._ev(it, C.EV_OVS_TABLE, C.OVS_T_CLASSIFIER, src, port)
        et = u16(d, 12)
        if et == ETH_ARP:
            return self._ovs_arp(it, port, src, node, stack)
        if et == ETH_IPV6:
            return self._end(it, C.OUT_DROPPED, C.DROP_IPV6, port)
        if et != ETH_IP:
            return self._end(it, C.OUT_DROPPED, C.DROP_UNKNOWN_ETHERTYPE, port)
        bad = self._ip_check(d)
        if bad:
            return self._end(it, C.OUT_DROPPED, bad, port)
        if src == C.OVS_FROM_POD:  # SpoofGuard: the pod's own MAC and IP only
            pod = self.if_peer[port]
            if u48(d, 6) != self.if_mac[pod] or u32(d, 26) != self.if_ip[pod]:
                return self._end(it, C.OUT_DROPPED, C.DROP_OVS_SPOOFGUARD, port)
            self._ev(it, C.EV_OVS_TABLE, C.OVS_T_SPOOFGUARD, port)
        if src != C.OVS_FROM_GATEWAY:  # the conntrack zone, AntreaProxy's EndpointDNAT
            verdict = self._prerouting(it, node, port)
            if verdict:
                return self._end(it, C.OUT_DROPPED, verdict, port)
            d = it.data
        ct = it.ctx.ct
        svc = ct is not None and bool(ct.flags & C.CT_DNAT)
        if svc and it.ctx.new:
            self._ev(it, C.EV_OVS_TABLE, C.OVS_T_ENDPOINT_DNAT)
        dip = u32(d, 30)
        dmac = u48(d, 0)
        r = self.lpm.lookup(dip)
        pod = -1
        arg = 0
        if dip == self.if_ip[g] or r < 0 or int(t.rt_kind[r]) != C.RT_POD_CIDR:
            decision = C.OVS_L3_GATEWAY
            arg = 1 if src == C.OVS_FROM_TUNNEL else 0
        elif int(t.rt_node[r]) == node:
            pod = self._ovs_pod_port(node, dip)
            if src == C.OVS_FROM_TUNNEL or svc or (src == C.OVS_FROM_POD and dmac == gmac):
                if pod < 0:
                    return self._end(it, C.OUT_DROPPED, C.DROP_OVS_NO_FLOW, port)
                decision, arg = C.OVS_L3_LOCAL_POD, pod
            else:
                decision = C.OVS_L3_L2
        elif t.ovs_tunnel != C.ANTREA_NOENCAP and src != C.OVS_FROM_TUNNEL:
            decision, arg = C.OVS_L3_TUNNEL, int(t.rt_node[r])
        elif src != C.OVS_FROM_TUNNEL:
            decision = C.OVS_L3_GATEWAY
        else:
            return self._end(it, C.OUT_DROPPED, C.DROP_OVS_NO_FLOW, port)
        if decision != C.OVS_L3_GATEWAY and src != C.OVS_FROM_GATEWAY:
            verdict = self._filter_forward(it)  # EgressRule / IngressRule
            if verdict:
                return self._end(it, C.OUT_DROPPED, verdict, port, keep=True)
        if it.ctx.reply_dir and decision != C.OVS_L3_GATEWAY:  # ct(nat): reply un-DNATed
            self._postrouting(it, node, port)
            d = it.data
        self._ev(it, C.EV_OVS_TABLE, C.OVS_T_L3_FORWARDING, decision, arg)
        routed = False
        if decision == C.OVS_L3_LOCAL_POD:
            put48(d, 6, gmac)
            put48(d, 0, self.if_mac[self.if_peer[pod]])
            self._changed(it)
            routed = src != C.OVS_FROM_GATEWAY
        elif decision == C.OVS_L3_TUNNEL:
            put48(d, 6, gmac)
            put48(d, 0, GVMAC)
            self._changed(it)
            routed = src != C.OVS_FROM_GATEWAY
        elif decision == C.OVS_L3_GATEWAY and arg:
            put48(d, 0, gmac)
            self._changed(it)
        if routed:  # L3DecTTL
            ttl = d[22]
            if ttl <= 1:
                return self._end(it, C.OUT_DROPPED, C.DROP_TTL_EXCEEDED, port)
            old = u16(d, 22)
            d[22] = ttl - 1
            put16(d, 24, csum_replace16(u16(d, 24), old, u16(d, 22)))
            self._changed(it)
            self._ev(it, C.EV_OVS_TABLE, C.OVS_T_L3_DEC_TTL, ttl - 1)
        out = self._ovs_port_of_mac(node, u48(d, 0), dip)  # L2ForwardingCalc
        if out < 0 or out == port:
            return self._end(it, C.OUT_DROPPED, C.DROP_OVS_NO_FLOW, port)
        self._ev(it, C.EV_OVS_TABLE, C.OVS_T_L2_FORWARDING, out)
        self._ovs_output(it, out, stack)

    def _ovs_tun_encap(self, it: Item, tun: int) -> bool:
        """antrea-tun0 transmits: Geneve / VXLAN / GRE towards the node owning the inner
        destination's pod CIDR, then out through the node's own stack (the compiled twin's
        docstring)."""
        t = self.t
        d = it.data
        node = self.if_node[tun]
        remote = -1
        proto = sport = dport = sip = dip = 0
        if len(d) >= 34 and u16(d, 12) == ETH_IP:
            sip, dip = u32(d, 26), u32(d, 30)
            proto, _l4, sport, dport = self._l4(d)
            r = self.lpm.lookup(dip)
            if r >= 0 and int(t.rt_kind[r]) == C.RT_POD_CIDR and int(t.rt_node[r]) != node:
                remote = int(t.rt_node[r])
        if remote < 0:
            self._end(it, C.OUT_DROPPED, C.DROP_NO_ROUTE, tun)
            return False
        typ = int(t.ovs_tunnel)
        hdr = C.GRE_OVERHEAD if typ == C.ANTREA_GRE else C.GENEVE_OVERHEAD
        h = flow_hash(0, 0, proto, sip, sport, dip, dport)
        src_port = 32768 + (h % 28232)
        n = len(d)
        out = bytearray(hdr) + d
        put16(out, 12, ETH_IP)
        out[14] = 0x45
        put16(out, 16, hdr - 14 + n)
        put16(out, 20, 0x4000)
        out[22] = 64
        put32(out, 26, int(t.node_ip[node]))
        put32(out, 30, int(t.node_ip[remote]))
        if typ == C.ANTREA_GRE:
            out[23] = C.PROTO_GRE
            put16(out, 36, 0x6558)
        else:
            out[23] = C.PROTO_UDP
            put16(out, 34, src_port)
            put16(out, 36, C.GENEVE_PORT if typ == C.ANTREA_GENEVE else C.ANTREA_VXLAN_PORT)
            put16(out, 38, 16 + n)
            if typ == C.ANTREA_GENEVE:
                put16(out, 44, 0x6558)
            else:
                out[42] = 0x08
        put16(out, 24, ip_checksum(out, 14, 20))
        it.data = out
        self._changed(it)
        self._ev(it, C.EV_OVS_ENCAP, remote, typ)
        it.ctx = Ctx()
        it.stage, it.a = S_LOCAL_OUT, node
        return True

    def _ovs_notrack(self, d: bytearray, node: int) -> bool:
        """Antrea's raw-table rules (pkg/agent/route/route_linux.go): Geneve and VXLAN
        packets to (PREROUTING) or from (OUTPUT) a local address are NOTRACK."""
        typ = int(self.t.ovs_tunnel)
        if typ not in (C.ANTREA_GENEVE, C.ANTREA_VXLAN):
            return False
        l4 = 14 + (d[14] & 0xF) * 4
        if d[23] != C.PROTO_UDP or len(d) < l4 + 4:
            return False
        if u16(d, l4 + 2) != (C.GENEVE_PORT if typ == C.ANTREA_GENEVE
                              else C.ANTREA_VXLAN_PORT):
            return False
        return (node, u32(d, 30)) in self.local_ips

    def _ovs_tun_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """antrea-tun0 transmits: encapsulate, then out through the node's own stack (GRE
        is tracked by conntrack there; Geneve and VXLAN are NOTRACK: no conntrack)."""
        if not self._ovs_tun_encap(it, i):
            return
        if int(self.t.ovs_tunnel) == C.ANTREA_GRE:
            return stack.append(it)
        node = it.a
        loc = int(self.t.node_local_if[node])
        out_if, nh = self._route_dev(node, u32(it.data, 30))
        if out_if < 0:
            return self._end(it, C.OUT_DROPPED, route_drop(out_if), loc)
        if self._too_big(it.data, out_if):
            return self._end(it, C.OUT_DROPPED, C.DROP_FRAG_NEEDED, loc, self.if_mtu[out_if],
                             keep=True)
        self._output(it, node, out_if, nh, stack)

    def _ovs_gw_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """The host sends on antrea-gw0: the frame enters br-int at the gateway port."""
        self._ovs_in(it, i, stack)

    def _ovs_port_rcv(self, it: Item, i: int, stack: list[Item]) -> None:
        """A frame from a pod's veth or decapsulated at antrea-tun0 enters br-int."""
        self._ovs_in(it, i, stack)

    def _ovs_tun_len(self, d: bytearray, l4: int) -> int:
        """The length of the tunnel headers after the outer IPv4 header if the packet is
        the node's tunnel traffic, else 0 (the compiled twin's docstring)."""
        typ = int(self.t.ovs_tunnel)
        n = len(d)
        if typ == C.ANTREA_GRE:
            if d[23] != C.PROTO_GRE or n < l4 + 4 + 14:
                return 0
            fl = u16(d, l4)
            if u16(d, l4 + 2) != 0x6558 or fl & 0x07FF:
                return 0
            hl = 4 + (4 if fl & 0x8000 else 0) + (4 if fl & 0x2000 else 0) + (
                4 if fl & 0x1000 else 0)
            return hl if n >= l4 + hl + 14 else 0
        if d[23] != C.PROTO_UDP or n < l4 + 16 + 14:
            return 0
        if typ == C.ANTREA_GENEVE:
            if u16(d, l4 + 2) != C.GENEVE_PORT or u16(d, l4 + 10) != 0x6558:
                return 0
            hl = 16 + (d[l4 + 8] & 0x3F) * 4
            return hl if n >= l4 + hl + 14 else 0
        return 16 if u16(d, l4 + 2) == C.ANTREA_VXLAN_PORT else 0

    def _ovs_tun_rcv(self, it: Item, node: int, l4: int, hl: int, stack: list[Item]) -> None:
        """The node's tunnel got a packet: the inner frame enters br-int at antrea-tun0."""
        it.data = bytearray(it.data[l4 + hl:])
        self._changed(it)
        self._ev(it, C.EV_OVS_DECAP, node, int(self.t.ovs_tunnel))
        it.ctx = Ctx()
        it.stage, it.a = S_RX, int(self.t.node_vtep_if[node])
        stack.append(it)
