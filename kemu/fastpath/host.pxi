# host.pxi: An end host's receive side: a pod's own network stack (behind its eth0), an external
# host's and the gateway's. ARP for the host's address and IPv4 to it (or broadcast/multicast)
# are delivered; the gateway passes everything else out of the cluster; anything else is not
# for this host. Twin: ``kemu/dataplane/reference/host.py``.

cdef inline int host_rcv(DP* dp, Item* it, int i, const IfInfo* f, int kind) noexcept nogil:
    """An end host receives a frame addressed to it at L2 (``st_rx`` checked the MAC)."""
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, bad
    cdef uint32_t et = rd16(d, 12), dst
    if et == <uint32_t>ETH_ARP:
        if n < 42:
            return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, i, 0, False)
        if rd32(d, 38) == f.ip:
            return end(dp, it, OUT_DELIVERED, 0, i, 0, False)
        return end(dp, it, OUT_DROPPED, DROP_NOT_LOCAL, i, 0, False)
    if et == <uint32_t>ETH_IPV6:
        return end(dp, it, OUT_DROPPED, DROP_IPV6, i, 0, False)
    if et != <uint32_t>ETH_IP:
        return end(dp, it, OUT_DROPPED, DROP_UNKNOWN_ETHERTYPE, i, 0, False)
    bad = ip_check_it(it)
    if bad:
        return end(dp, it, OUT_DROPPED, bad, i, 0, False)
    dst = rd32(d, 30)
    if dst == f.ip or dst == 0xFFFFFFFFU or (dst & 0xF0000000U) == 0xE0000000U:
        return end(dp, it, OUT_DELIVERED, 0, i, 0, False)
    if kind == IF_GW_ETH:
        return end(dp, it, OUT_LEFT, 0, i, 0, False)
    return end(dp, it, OUT_DROPPED, DROP_NOT_LOCAL, i, 0, False)
