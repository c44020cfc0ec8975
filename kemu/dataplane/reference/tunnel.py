"""Overlays: flannel's VXLAN device flannel.1 (VNI 1, UDP 8472), Cilium's cilium_vxlan (the
source's security identity as the VNI, ``Tables.if_vni``); kube-router's IP-in-IP.

Owns ``Tunnel``: ``_vxlan_xmit`` (flannel.1 transmits) and ``_vxlan_encap`` (wrap the frame
in Ether/IPv4/UDP/VXLAN towards the VTEP owning the inner destination MAC, flannel's static
FDB, then route it from the node's own stack), and ``_vxlan_decap`` (the node's VXLAN socket
at local input: the inner frame is received on flannel.1 in a fresh context; the compiled
twin's ``vxlan_rcv``). kube-router's tun-<hash> devices (one per peer node): ``_ipip_xmit``
/ ``_ipip_encap`` (the outer IPv4 header, protocol 4: TTL and DF from the inner packet, TOS 0
with its ECN bits, ID 0) and ``_ipip_decap`` (ipip_rcv at local input); the compiled twin's
comment before ``ipip_out`` cites what they model.

Compiled twin: ``kemu/fastpath/tunnel.pxi``.
SEMANTICS ids: OV-1..OV-3.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.packet import ETH_IP
from kemu.dataplane.reference.parse import Parse
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import S_LOCAL_OUT, S_RX, Ctx, Item
from kemu.dataplane.reference.util import flow_hash, ip_checksum, put16, put32, u16, u32, u48


class Tunnel(Record, Parse):
    """VXLAN encapsulation and decapsulation (OV-1..OV-3)."""

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
        vni = C.VXLAN_VNI
        if self.if_vni:  # Cilium: the source's security identity (Tables.if_vni)
            owner = t.owner_of(u32(d, 26)) if len(d) >= 34 else -1
            vni = self.if_vni[owner] if owner >= 0 else C.CILIUM_ID_WORLD
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
        outer[46:49] = (vni & 0xFFFFFF).to_bytes(3, "big")
        it.data = outer
        self._changed(it)
        self._ev(it, C.EV_ENCAP, remote, vni)
        it.ctx = Ctx()
        it.stage, it.a = S_LOCAL_OUT, node
        return True

    def _vxlan_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """flannel.1 transmits: encapsulate, then out through the node's own stack."""
        if not self._vxlan_encap(it, i):
            return
        stack.append(it)

    def _vxlan_decap(self, it: Item, node: int, l4: int, stack: list[Item]) -> None:
        d = it.data
        vni = u32(d, l4 + 12) >> 8  # the header's VNI (Cilium: the source's identity)
        inner = bytearray(d[l4 + 16:])
        it.data = inner
        self._changed(it)
        self._ev(it, C.EV_DECAP, node, vni)
        it.ctx = Ctx()
        it.stage, it.a = S_RX, int(self.t.node_vtep_if[node])
        stack.append(it)

    # ---- kube-router's IP-in-IP tunnels
    def _ipip_encap(self, it: Item, tun: int) -> bool:
        """tun-<hash> TX: prepend the outer IPv4 header (node -> peer node, protocol 4),
        then out through the node's own stack."""
        t = self.t
        d = it.data
        node = self.if_node[tun]
        remote = self.if_node[self.if_peer[tun]]
        if len(d) < 34 or u16(d, 12) != ETH_IP:
            self._end(it, C.OUT_DROPPED, C.DROP_BAD_IP_HEADER, tun)
            return False
        tos = d[15] & 3
        if tos == 3:  # INET_ECN_encapsulate: CE outside becomes ECT(0)
            tos = 2
        outer = bytearray(14 + C.IPIP_OVERHEAD) + d[14:]
        put16(outer, 12, ETH_IP)
        outer[14] = 0x45
        outer[15] = tos
        put16(outer, 16, len(d) - 14 + C.IPIP_OVERHEAD)
        put16(outer, 20, u16(d, 20) & 0x4000)
        outer[22] = d[22]
        outer[23] = C.PROTO_IPIP
        put32(outer, 26, int(t.node_ip[node]))
        put32(outer, 30, int(t.node_ip[remote]))
        put16(outer, 24, ip_checksum(outer, 14, 20))
        it.data = outer
        self._changed(it)
        self._ev(it, C.EV_IPIP_ENCAP, remote, tun)
        it.ctx = Ctx()
        it.stage, it.a = S_LOCAL_OUT, node
        return True

    def _ipip_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """A tun device transmits: encapsulate, then out through the node's own stack."""
        if not self._ipip_encap(it, i):
            return
        stack.append(it)

    def _ipip_tunnel(self, node: int, src: int) -> int:
        """ip_tunnel_lookup: the node's tun device whose remote is ``src``, -1."""
        t = self.t
        for m in range(t.n_nodes):
            if int(t.node_ip[m]) == src:
                return self.tun_if.get((node, m), -1)
        return -1

    def _ipip_decap(self, it: Item, node: int, tun: int, l4: int, stack: list[Item]) -> None:
        d = it.data
        inner = bytearray(12) + bytearray(d[12:14]) + d[l4:]
        put16(inner, 12, ETH_IP)
        it.data = inner
        self._changed(it)
        self._ev(it, C.EV_IPIP_DECAP, node, tun)
        it.ctx = Ctx()
        it.stage, it.a = S_RX, tun
        stack.append(it)
