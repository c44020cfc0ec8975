# parse.pxi: Header checks and parsing: ``ip_check`` (ip_rcv's sanity checks: version, IHL, total
# length, header checksum), ``l4info`` (protocol, L4 offset, ports). Twin:
# ``kemu/dataplane/reference/parse.py``.

cdef inline void l4info(const uint8_t* d, int n, int* proto, int* l4, int* sport,
                        int* dport) noexcept nogil:
    """reference ``_l4``: (proto, l4 offset, sport, dport). The total length is clamped to
    the frame (the reference would read past a truncated frame and raise there)."""
    cdef int ihl = (d[14] & 0xF) * 4 if n > 14 else 0
    cdef int tot_end = 14 + <int>rd16(d, 16) if n > 17 else 0
    if tot_end > n:
        tot_end = n
    l4[0] = 14 + ihl
    proto[0] = d[23] if n > 23 else 0
    sport[0] = 0
    dport[0] = 0
    cdef int p = proto[0], o = l4[0]
    if (p == PROTO_TCP or p == PROTO_UDP or p == PROTO_SCTP) and o + 4 <= tot_end:
        sport[0] = rd16(d, o)
        dport[0] = rd16(d, o + 2)
    elif p == PROTO_ICMP and o + 8 <= tot_end and (d[o] == 0 or d[o] == 8):
        # the echo id: the request's source "port", the reply's destination one
        if d[o] == 8:
            sport[0] = rd16(d, o + 4)
        else:
            dport[0] = rd16(d, o + 4)


cdef inline int ip_check(const uint8_t* d, int n) noexcept nogil:
    """``ip_rcv``'s sanity checks; a drop reason or 0."""
    if n < 34:
        return DROP_TOO_SHORT
    cdef int vihl = d[14]
    cdef int ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < 20 or n < 14 + ihl:
        return DROP_BAD_IP_HEADER
    cdef int tot = rd16(d, 16)
    if tot < ihl or 14 + tot > n:
        return DROP_BAD_IP_HEADER
    if kemu_sum_words(d + 14, ihl) != 0xFFFF:  # ip_checksum(d, 14, ihl) != 0
        return DROP_BAD_IP_CSUM
    return 0


cdef inline int ip_check_it(Item* it) noexcept nogil:
    """``ip_check`` of a copy's data, remembered while it passes: every later rewrite of
    the IPv4 header (NAT, TTL) updates its checksum incrementally, which keeps a valid
    header valid, and the length changes only with VXLAN (which resets the flag)."""
    if it.ip_ok:
        return 0
    cdef int r = ip_check(it.mem + it.off, it.len)
    it.ip_ok = r == 0
    return r
