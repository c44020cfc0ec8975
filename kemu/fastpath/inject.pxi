# inject.pxi: Injection: a frame entering at a host's interface gets the Ethernet addresses its
# own stack would write (``fix_l2``), a pod's on-link route (``pod_local_route``) and, with
# Cilium's kube-proxy replacement, the socket LB's translation (``sock_connect``). Twin:
# ``kemu/dataplane/reference/inject.py``.

cdef inline int owner_of(const DP* dp, uint32_t ip) noexcept nogil:
    """``Tables.owner_of`` (the first of equal addresses in ``own_ip``), hashed."""
    cdef HSlot* s = ht_find(&dp.own, ip, 0)
    return <int>s.v0 if s != NULL else -1


cdef inline bint bridged_net(const DP* dp, int node) noexcept nogil:
    """Azure CNI bridge mode's node: its address on the pod bridge (azure0, where eth0 is
    enslaved), its pods on the node network (reference ``_bridged_net``)."""
    return dp.ifs[dp.node_eth_if[node]].kind == IF_BRIDGE


# ---- injection helpers
cdef void fix_l2(DP* dp, Item* it, int iface) noexcept nogil:
    """Rewrite Ethernet addresses as the sending host's own stack would have set them."""
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len
    cdef int kind, node, owner
    cdef uint64_t mac, gw_mac
    cdef uint32_t dst, subnet, bip
    cdef bint same
    if n < 14:
        return
    kind = dp.ifs[iface].kind
    mac = <uint64_t>dp.ifs[iface].mac
    wr48(d, 6, mac)
    cdef uint32_t et = rd16(d, 12)
    if et == <uint32_t>ETH_ARP and n >= 42:
        wr48(d, 22, mac)
    elif et == <uint32_t>ETH_IP and n >= 34:
        dst = rd32(d, 30)
        if kind == IF_POD_ETH and dp.ifs[dp.ifs[iface].peer].kind == IF_VETH_HOST:
            # a routed pod (/32, default via 169.254.1.1): everything to the host veth
            gw_mac = <uint64_t>dp.ifs[dp.ifs[iface].peer].mac
            same = False
        elif kind == IF_POD_ETH and bridged_net(dp, dp.ifs[iface].node):
            # Azure CNI bridge mode: a pod of the node network, default via its gateway
            gw_mac = <uint64_t>dp.ifs[dp.gateway_if].mac if dp.gateway_if >= 0 else BROADCAST
            same = (dst & dp.node_net_mask) == dp.node_net_prefix
        elif kind == IF_POD_ETH:
            node = dp.ifs[iface].node
            bip = dp.node_br_ip[node]
            gw_mac = <uint64_t>dp.ifs[dp.node_br_if[node]].mac
            subnet = dp.node_pod_mask[node]
            same = (dst & subnet) == (bip & subnet)
        else:
            gw_mac = <uint64_t>dp.ifs[dp.gateway_if].mac if dp.gateway_if >= 0 else BROADCAST
            same = (dst & dp.node_net_mask) == dp.node_net_prefix
        if (dst & 0xF0000000U) == 0xE0000000U or dst == 0xFFFFFFFFU:
            wr48(d, 0, BROADCAST if dst == 0xFFFFFFFFU else
                 (0x01005E000000ULL | (dst & 0x7FFFFF)))
        elif same:
            owner = owner_of(dp, dst)
            if owner >= 0 and dp.ifs[owner].kind == IF_POD_ETH and (
                    dp.ifs[dp.ifs[owner].peer].kind == IF_VETH_HOST or (
                        dp.ifs[owner].node != dp.ifs[iface].node
                        and bridged_net(dp, dp.ifs[owner].node))):
                # its node's ENI / NIC answers ARP for it (the VPC, the VNet)
                owner = dp.node_eth_if[dp.ifs[owner].node]
            if owner >= 0:
                wr48(d, 0, <uint64_t>dp.ifs[owner].mac)
        else:
            wr48(d, 0, gw_mac)
    ev(dp, it, EV_FIXL2, iface, 0, 0)


cdef void pod_local_route(DP* dp, Item* it, int iface) noexcept nogil:
    """M-4: a pod's packets to its own IP or 127/8 stay in the pod, on ``lo``."""
    if dp.ifs[iface].kind != IF_POD_ETH:
        return
    cdef uint8_t* d = DATA(it)
    cdef uint32_t dst
    if it.len >= 34 and rd16(d, 12) == <uint32_t>ETH_IP:
        dst = rd32(d, 30)
        if dst == dp.ifs[iface].ip or (dst >> 24) == 127:
            wr48(d, 0, 0)
            wr48(d, 6, 0)
            it.a = iface + 1  # the compiler places lo right after the pod's eth0
            ev(dp, it, EV_LOCAL_ROUTE, iface, 0, 0)


cdef void sock_connect(DP* dp, Item* it, int iface) noexcept nogil:
    """reference ``_sock_connect``: Cilium's socket LB (bpf_sock.c cil_sock4_connect,
    cil_sock4_sendmsg) for a pod's TCP/UDP packet to a ClusterIP with a usable backend."""
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, proto, l4, sp, flags, start, count, b, nc = 0, node, be
    cdef uint32_t dip, sip
    cdef int dport, sport
    cdef HSlot* s
    cdef uint64_t h
    if n < 34 or rd16(d, 12) != <uint32_t>ETH_IP or (d[14] & 0xF) < 5 or rd16(d, 20) & 0x3FFF:
        return
    proto = d[23]
    if proto != PROTO_TCP and proto != PROTO_UDP:
        return
    l4 = 14 + (d[14] & 0xF) * 4
    if n < l4 + 4:
        return
    dip = rd32(d, 30)
    dport = <int>rd16(d, l4 + 2)
    s = ht_find(&dp.fe, dip, (<uint64_t>proto << 16) | <uint64_t>dport)
    if s == NULL or dp.fe_kind[s.v0] != FE_CLUSTER_IP:
        return
    sp = dp.fe_sp[s.v0]
    flags = dp.sp_flags[sp]
    start, count = dp.sp_be_start[sp], dp.sp_be_count[sp]
    node = dp.ifs[iface].node
    for b in range(start, start + count):
        if (dp.be_node[b] == node if flags & SP_ITP_LOCAL else
                not dp.be_flags[b] & BE_LOCAL_FALLBACK):
            dp.cands[nc] = b
            nc += 1
    if nc == 0:
        return
    sip = rd32(d, 26)
    sport = <int>rd16(d, l4)
    h = flow_hash(dp.seed, node, proto, sip, 0 if flags & SP_AFFINITY else sport, dip, dport)
    be = dp.cands[h % <uint64_t>nc]
    set_dst(d, n, dp.be_ip[be], dp.be_port[be], proto, l4)
    changed(it)
    it.ip_ok = 0
    ev(dp, it, EV_SOCK_LB, <int>s.v0, be, node)
