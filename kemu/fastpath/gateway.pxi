# gateway.pxi: The node network's gateway, a Linux router: its own address and ARP as an end
# host's (``host_rcv``); anything else is forwarded: the route lookup in the shared table seen
# from the gateway (a pod CIDR via its node in host-gw mode, the node network connected, a routed
# LoadBalancer address via its node; VXLAN pod CIDRs and everything else: the default route out
# of the cluster), the TTL decremented (1: time exceeded, the slow path's ICMP error from the
# gateway), the next hop's static neighbour entry (the node network's owner of the address; none:
# host unreachable). Twin: ``kemu/dataplane/reference/gateway.py``.

cdef int gw_rcv(DP* dp, Item* it, int i, const IfInfo* f) noexcept nogil:
    """The gateway receives a frame addressed to it at L2 (``st_rx`` checked the MAC)."""
    cdef uint8_t* d = DATA(it)
    cdef int bad, kind, ttl, owner
    cdef int32_t r
    cdef uint32_t dst, nh, old
    if it.len < 34 or rd16(d, 12) != <uint32_t>ETH_IP:
        return host_rcv(dp, it, i, f, IF_GW_ETH)
    bad = ip_check_it(it)
    if bad:
        return end(dp, it, OUT_DROPPED, bad, i, 0, False)
    dst = rd32(d, 30)
    if dst == f.ip or dst == 0xFFFFFFFFU or (dst & 0xF0000000U) == 0xE0000000U:
        return end(dp, it, OUT_DELIVERED, 0, i, 0, False)
    r = lpm_lookup(dp.lpm, dst)
    if r < 0:
        return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, i, 0, False)
    old = rd16(d, 22)  # ip_forward: the TTL first, whichever way the packet goes
    ttl = old >> 8
    if ttl <= 1:
        return end(dp, it, OUT_DROPPED, DROP_TTL_EXCEEDED, i, 0, False)
    wr16(d, 22, old - 0x100)
    wr16(d, 24, csum_replace16(rd16(d, 24), old, old - 0x100))
    dp.tr_k += 1
    changed(it)
    ev(dp, it, EV_TTL, ttl - 1, -1, 0)
    kind = dp.rt_kind[r]
    if kind == RT_NODE_NET:
        nh = 0
    elif (kind == RT_POD_CIDR and not dp.vxlan) or kind == RT_LB:
        nh = dp.node_ip[dp.rt_owner[r]]
    else:
        return end(dp, it, OUT_LEFT, 0, i, 0, True)  # the default route: out of the cluster
    ev(dp, it, EV_ROUTE, r, nh, -1)
    owner = owner_of(dp, nh if nh else dst)
    if owner < 0 or owner == i:
        ev(dp, it, EV_NEIGH_MISS, nh if nh else dst, -1, i)
        return end(dp, it, OUT_NEIGH, 0, i, nh if nh else dst, True)
    wr48(d, 0, <uint64_t>dp.ifs[owner].mac)
    wr48(d, 6, <uint64_t>f.mac)
    ctx_reset(&it.ctx)
    it.stage = S_TX
    it.a = i
    return go_tx(dp, it)
