"""Injection: how a frame enters its host.

Owns ``Inject``: ``_fix_l2`` (rewrite the Ethernet addresses as the sending host's own
stack would have set them: its MAC, the on-link owner's or the gateway's, multicast and
broadcast mapped), its helpers ``_node_net`` and ``_pod_cidr_mask``,
``_pod_local_route`` (M-4: a pod's packets to its own IP or 127/8 stay in the pod, on
``lo``) and ``_sock_connect`` (Cilium's socket LB: a ClusterIP translated in the pod's
socket layer, before the packet leaves it).

Compiled twin: ``kemu/fastpath/inject.pxi``.
SEMANTICS ids: M-4.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.packet import BROADCAST, ETH_ARP, ETH_IP
from kemu.dataplane.reference.nat import Nat
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import Item
from kemu.dataplane.reference.util import flow_hash, put48, u16, u32


class Inject(Nat, Record):
    """What the sending host's stack does to an injected frame."""

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
            if kind == C.IF_POD_ETH and self.if_kind[self.if_peer[iface]] == C.IF_VETH_HOST:
                # a routed pod (/32, default via 169.254.1.1): everything to the host veth
                gw_mac = self.if_mac[self.if_peer[iface]]
                same = False
            elif kind == C.IF_POD_ETH and self._bridged_net(self.if_node[iface]):
                # Azure CNI bridge mode: a pod of the node network, default via its gateway
                gw_mac = self.if_mac[t.gateway_if] if t.gateway_if >= 0 else BROADCAST
                net = self._node_net
                same = (dst & net[1]) == net[0]
            elif kind == C.IF_POD_ETH:
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
                if owner >= 0 and self.if_kind[owner] == C.IF_POD_ETH and (
                        self.if_kind[self.if_peer[owner]] == C.IF_VETH_HOST or (
                            self.if_node[owner] != self.if_node[iface]
                            and self._bridged_net(self.if_node[owner]))):
                    # its node's ENI / NIC answers ARP for it (the VPC, the VNet)
                    owner = int(t.node_eth_if[self.if_node[owner]])
                if owner >= 0:
                    put48(d, 0, self.if_mac[owner])
            else:
                put48(d, 0, gw_mac)
        self._ev(it, C.EV_FIXL2, iface)

    def _bridged_net(self, node: int) -> bool:
        """Azure CNI bridge mode's node: its address on the pod bridge (azure0, where eth0
        is enslaved), its pods on the node network."""
        return self.if_kind[int(self.t.node_eth_if[node])] == C.IF_BRIDGE

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

    def _sock_connect(self, it: Item, iface: int) -> None:
        """Cilium's socket LB (bpf/bpf_sock.c ``cil_sock4_connect``, ``cil_sock4_sendmsg``;
        Documentation/network/kubernetes/kubeproxy-free.rst): a pod's TCP/UDP packet to a
        ClusterIP is addressed to a backend at connect (TCP) or sendmsg (UDP) time, so it
        leaves the pod already translated: no DNAT on the wire, no conntrack entry of the
        Service. The backend: one of the usable ones (local ones under internalTrafficPolicy
        Local), by a seeded hash of the socket's 4-tuple (of the client address with
        ClientIP affinity): every packet of the socket takes the same one. No usable
        backend: the packet is left alone (kube-proxy's rules reject it)."""
        d = it.data
        if len(d) < 34 or u16(d, 12) != ETH_IP or (d[14] & 0xF) < 5 or u16(d, 20) & 0x3FFF:
            return
        proto = d[23]
        if proto not in (C.PROTO_TCP, C.PROTO_UDP):
            return
        l4 = 14 + (d[14] & 0xF) * 4
        if len(d) < l4 + 4:
            return
        t = self.t
        dip, dport = u32(d, 30), u16(d, l4 + 2)
        fe = self.fe.get((dip, proto, dport))
        if fe is None or int(t.fe_kind[fe]) != C.FE_CLUSTER_IP:
            return
        sp = int(t.fe_sp[fe])
        flags = int(t.sp_flags[sp])
        start, count = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        node = self.if_node[iface]
        cands = [b for b in range(start, start + count)
                 if (int(t.be_node[b]) == node if flags & C.SP_ITP_LOCAL else
                     not int(t.be_flags[b]) & C.BE_LOCAL_FALLBACK)]
        if not cands:
            return
        sport = 0 if flags & C.SP_AFFINITY else u16(d, l4)
        be = cands[flow_hash(self.seed, node, proto, u32(d, 26), sport, dip, dport)
                   % len(cands)]
        self._set_dst(d, int(t.be_ip[be]), int(t.be_port[be]), proto, l4)
        self._changed(it)
        self._ev(it, C.EV_SOCK_LB, fe, be, node)
