# tunnel.pxi: Overlays: VXLAN (flannel.1, VNI 1, UDP 8472: OV-2; Cilium's cilium_vxlan: the
# source's security identity as the VNI, ``Tables.if_vni``) encapsulation towards the VTEP
# owning the inner destination, and decapsulation at the node's local input; kube-router's
# IP-in-IP devices (tun-<hash>, one per peer node: ipip_xmit/ipip_rcv). Twin:
# ``kemu/dataplane/reference/tunnel.py``.

cdef int vxlan_encap(DP* dp, Item* it, int vtep) noexcept nogil:
    """flannel.1 TX: wrap in Ether/IPv4/UDP 8472/VXLAN towards the VTEP owning the inner
    destination MAC, then route from the node's own stack. 0: go on; 1: the copy ended."""
    cdef int node = dp.ifs[vtep].node
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, m, v, remote = -1, k
    cdef uint64_t dmac = 0, h
    cdef int proto = 0, l4 = 0, sport = 0, dport = 0
    cdef uint32_t sip = 0, dip = 0
    cdef Buf buf
    for k in range(6 if n >= 6 else n):
        dmac = (dmac << 8) | d[k]
    for m in range(dp.n_nodes):
        v = dp.node_vtep_if[m]
        if v >= 0 and <uint64_t>dp.ifs[v].mac == dmac:
            remote = m
    if remote < 0:
        return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, vtep, 0, False)
    if n >= 14 and rd16(d, 12) == <uint32_t>ETH_IP:
        l4info(d, n, &proto, &l4, &sport, &dport)
    if n >= 34:
        sip = rd32(d, 26)
        dip = rd32(d, 30)
    h = flow_hash(0, 0, proto, sip, sport, dip, dport)
    cdef int src_port = 32768 + <int>(h % 28232)  # the kernel's default local port range
    cdef int vni = VXLAN_VNI, owner  # Cilium: the source's security identity (Tables.if_vni)
    if dp.if_vni != NULL:
        owner = owner_of(dp, sip) if n >= 34 else -1
        vni = dp.if_vni[owner] if owner >= 0 else CILIUM_ID_WORLD
    if it.off < 50:
        if buf_get(dp, n + 50 + HEADROOM, &buf) < 0:
            return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, vtep, 0, False)
        memcpy(buf.mem + HEADROOM + 50, d, n)
        buf_put(dp, it.mem, it.cap)
        it.mem = buf.mem
        it.cap = buf.cap
        it.off = HEADROOM + 50
    it.off -= 50
    it.len = n + 50
    d = DATA(it)
    memset(d, 0, 50)
    wr16(d, 12, ETH_IP)
    d[14] = 0x45
    wr16(d, 16, 20 + 8 + 8 + n)
    d[22] = 64
    d[23] = PROTO_UDP
    wr32(d, 26, dp.node_ip[node])
    wr32(d, 30, dp.node_ip[remote])
    wr16(d, 24, ip_checksum(d, 14, 20))
    wr16(d, 34, src_port)
    wr16(d, 36, VXLAN_PORT)
    wr16(d, 38, 8 + 8 + n)
    d[42] = 0x08
    wr32(d, 45, vni & 0xFFFFFF)   # bytes 46..48 (byte 45 stays 0)
    d[45] = 0
    changed(it)
    it.ip_ok = 0
    ev(dp, it, EV_ENCAP, remote, vni, 0)
    ctx_reset(&it.ctx)
    it.stage = S_LOCAL_OUT
    it.a = node
    return 0


cdef inline int vxlan_xmit(DP* dp, Item* it, int i) noexcept nogil:
    """flannel.1 transmits: encapsulate, then out through the node's own stack."""
    dp.tr_ok = 0  # rare work: not a path the flow cache holds
    if cold.vxlan_encap(dp, it, i):
        return 1
    return go_local_out(dp, it)


cdef inline int vxlan_rcv(DP* dp, Item* it, int node, int l4) noexcept nogil:
    """The node's VXLAN socket got a datagram: strip the outer headers, and the inner frame
    is received on flannel.1 in a fresh context."""
    dp.tr_ok = 0  # the inner frame's bytes decide from here
    cdef int vni = <int>(rd32(DATA(it), l4 + 12) >> 8)  # the header's VNI (Cilium: identity)
    it.off += l4 + 16
    it.len -= l4 + 16
    changed(it)
    ev(dp, it, EV_DECAP, node, vni, 0)
    it.ip_ok = 0
    ctx_reset(&it.ctx)
    it.stage = S_RX
    it.a = dp.node_vtep_if[node]
    return go_rx(dp, it)


# ---- kube-router's IP-in-IP tunnels (kemu/compiler/kube_router.py): ``ip link add
# tun-<hash> type ipip local <node> remote <peer>`` (no ttl, no tos, pmtudisc off: the
# netlink.Iptun kube-router's pkg/tunnels/linux_tunnels.go creates). ip_tunnel_xmit: outer
# TTL inherited from the inner packet (ttl 0), TOS 0 with the inner ECN bits
# (ip_tunnel_ecn_encap), DF copied from the inner packet, protocol 4; kemu writes IP ID 0
# where the kernel takes a hashed one (__ip_select_ident).

cdef inline int ipip_out(DP* dp, Item* it, int out_if) noexcept nogil:
    """Output on a tun device (NOARP, no link header): kemu's frame keeps an Ethernet
    header of zeros in front of the IPv4 packet (a capture of the device shows it)."""
    cdef uint8_t* d = DATA(it)
    wr48(d, 0, 0)
    wr48(d, 6, 0)
    changed(it)
    ctx_reset(&it.ctx)
    it.stage = S_TX
    it.a = out_if
    return go_tx(dp, it)


cdef int ipip_encap(DP* dp, Item* it, int tun) noexcept nogil:
    """tun-<hash> TX: prepend the outer IPv4 header (node -> peer node, protocol 4), then
    out through the node's own stack (ip_local_out). 0: go on; 1: the copy ended."""
    cdef int node = dp.ifs[tun].node
    cdef int remote = dp.ifs[dp.ifs[tun].peer].node
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len
    cdef uint8_t tos, ttl
    cdef uint16_t df
    cdef Buf buf
    if n < 34 or rd16(d, 12) != <uint32_t>ETH_IP:
        return end(dp, it, OUT_DROPPED, DROP_BAD_IP_HEADER, tun, 0, False)
    tos = d[15] & 3
    if tos == 3:  # INET_ECN_encapsulate: CE outside becomes ECT(0)
        tos = 2
    ttl = d[22]
    df = rd16(d, 20) & 0x4000
    if it.off < IPIP_OVERHEAD:
        if buf_get(dp, n + IPIP_OVERHEAD + HEADROOM, &buf) < 0:
            return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, tun, 0, False)
        memcpy(buf.mem + HEADROOM + IPIP_OVERHEAD, d, n)
        buf_put(dp, it.mem, it.cap)
        it.mem = buf.mem
        it.cap = buf.cap
        it.off = HEADROOM + IPIP_OVERHEAD
    it.off -= IPIP_OVERHEAD
    it.len = n + IPIP_OVERHEAD
    d = DATA(it)
    memset(d, 0, 14 + IPIP_OVERHEAD)
    wr16(d, 12, ETH_IP)
    d[14] = 0x45
    d[15] = tos
    wr16(d, 16, n - 14 + IPIP_OVERHEAD)
    wr16(d, 20, df)
    d[22] = ttl
    d[23] = PROTO_IPIP
    wr32(d, 26, dp.node_ip[node])
    wr32(d, 30, dp.node_ip[remote])
    wr16(d, 24, ip_checksum(d, 14, 20))
    changed(it)
    it.ip_ok = 0
    ev(dp, it, EV_IPIP_ENCAP, remote, tun, 0)
    ctx_reset(&it.ctx)
    it.stage = S_LOCAL_OUT
    it.a = node
    return 0


cdef inline int ipip_xmit(DP* dp, Item* it, int i) noexcept nogil:
    """A tun device transmits: encapsulate, then out through the node's own stack."""
    dp.tr_ok = 0  # rare work: not a path the flow cache holds
    if cold.ipip_encap(dp, it, i):
        return 1
    return go_local_out(dp, it)


cdef int ipip_tunnel(const DP* dp, int node, uint32_t src) noexcept nogil:
    """ipip_rcv's ip_tunnel_lookup: the node's tun device whose remote is ``src``, -1."""
    cdef int m
    for m in range(dp.n_nodes):
        if dp.node_ip[m] == src:
            return dp.tun_if[node * dp.n_nodes + m]
    return -1


cdef int ipip_rcv(DP* dp, Item* it, int node, int tun, int l4) noexcept nogil:
    """The node got an IP-in-IP packet from a peer it has a tunnel with: strip the outer
    header, and the inner packet is received on that tun device in a fresh context."""
    cdef uint8_t* d
    dp.tr_ok = 0  # the inner packet's bytes decide from here
    it.off += l4 - 14
    it.len -= l4 - 14
    d = DATA(it)
    memset(d, 0, 12)
    wr16(d, 12, ETH_IP)
    changed(it)
    ev(dp, it, EV_IPIP_DECAP, node, tun, 0)
    it.ip_ok = 0
    ctx_reset(&it.ctx)
    it.stage = S_RX
    it.a = tun
    return go_rx(dp, it)
