# nat.pxi: Address and port rewrites with incremental checksums (``set_src``/``set_dst``),
# masquerade (SNAT to the outgoing interface, source port kept unless taken or a seeded
# random one with --random-fully: S-7), and the
# translation of ICMP errors RELATED to a NATed flow (nf_nat_icmp_reply_translation: N-4). Twin:
# ``kemu/dataplane/reference/nat.py``.

cdef inline int l4_csum_off(int proto, int l4, const uint8_t* d, int n) noexcept nogil:
    if proto == PROTO_TCP and l4 + 18 <= n:
        return l4 + 16
    if proto == PROTO_UDP and l4 + 8 <= n and rd16(d, l4 + 6) != 0:
        return l4 + 6
    return -1


cdef void set_addr(uint8_t* d, int n, int at, uint32_t ip, int port, int proto, int l4,
                   int port_at) noexcept nogil:
    cdef uint32_t old_ip = rd32(d, at), c
    wr32(d, at, ip)
    wr16(d, 24, csum_replace32(rd16(d, 24), old_ip, ip))
    cdef int co = l4_csum_off(proto, l4, d, n)
    if co >= 0:
        c = csum_replace32(rd16(d, co), old_ip, ip)
        if port >= 0 and l4 + port_at + 2 <= n:
            c = csum_replace16(c, rd16(d, l4 + port_at), <uint64_t>port)
        if proto == PROTO_UDP and c == 0:
            c = 0xFFFF
        wr16(d, co, c)
    if port >= 0 and (proto == PROTO_TCP or proto == PROTO_UDP) and l4 + port_at + 2 <= n:
        wr16(d, l4 + port_at, <uint64_t>port)


cdef inline void set_dst(uint8_t* d, int n, uint32_t ip, int port, int proto,
                         int l4) noexcept nogil:
    set_addr(d, n, 30, ip, port, proto, l4, 2)


cdef inline void set_src(uint8_t* d, int n, uint32_t ip, int port, int proto,
                         int l4) noexcept nogil:
    set_addr(d, n, 26, ip, port, proto, l4, 0)


cdef inline void set_src_auto(uint8_t* d, int n, uint32_t ip, int port) noexcept nogil:
    cdef int proto, l4, sport, dport
    l4info(d, n, &proto, &l4, &sport, &dport)
    set_addr(d, n, 26, ip, port, proto, l4, 0)


# ---- ICMP errors RELATED to a NATed flow (nf_nat_icmp_reply_translation)
ctypedef struct Inner:           # a quoted TCP/UDP header inside an ICMP error
    int inner
    int il4
    int iproto
    int end


cdef inline bint inner_of(const uint8_t* d, int n, int l4, Inner* q) noexcept nogil:
    cdef int end = 14 + <int>rd16(d, 16)
    if end > n:
        end = n
    cdef int inner = l4 + 8
    if inner + 20 > end or d[inner] >> 4 != 4 or (d[inner] & 0xF) < 5:
        return False
    cdef int il4 = inner + (d[inner] & 0xF) * 4
    cdef int iproto = d[inner + 9]
    if (iproto != PROTO_TCP and iproto != PROTO_UDP) or il4 + 4 > end:
        return False
    q.inner = inner
    q.il4 = il4
    q.iproto = iproto
    q.end = end
    return True


cdef inline void icmp_set16(uint8_t* d, int icmp_c, int off, uint32_t new) noexcept nogil:
    cdef uint32_t old = rd16(d, off)
    wr16(d, off, new)
    wr16(d, icmp_c, csum_replace16(rd16(d, icmp_c), old, new))


cdef void inner_set(uint8_t* d, int l4, const Inner* q, int at_ip, uint32_t ip, int port_at,
                    int port) noexcept nogil:
    """Rewrite a quoted address and port, fixing the quoted IP and L4 checksums and the
    ICMP checksum over all of them."""
    cdef int icmp_c = l4 + 2, co = -1
    cdef uint32_t old_ip = rd32(d, at_ip), c
    cdef uint32_t old_port = rd16(d, q.il4 + port_at)
    icmp_set16(d, icmp_c, q.inner + 10, csum_replace32(rd16(d, q.inner + 10), old_ip, ip))
    icmp_set16(d, icmp_c, at_ip, ip >> 16)
    icmp_set16(d, icmp_c, at_ip + 2, ip & 0xFFFF)
    if q.iproto == PROTO_TCP and q.il4 + 18 <= q.end:
        co = q.il4 + 16
    elif q.iproto == PROTO_UDP and q.il4 + 8 <= q.end and rd16(d, q.il4 + 6) != 0:
        co = q.il4 + 6
    if co >= 0:
        c = csum_replace16(csum_replace32(rd16(d, co), old_ip, ip), old_port, <uint64_t>port)
        if q.iproto == PROTO_UDP and c == 0:
            c = 0xFFFF
        icmp_set16(d, icmp_c, co, c)
    icmp_set16(d, icmp_c, q.il4 + port_at, <uint32_t>port)


cdef void related_pre(DP* dp, Item* it, int node, int l4) noexcept nogil:
    """An ICMP error quoting a packet of a tracked flow: at PREROUTING, undo the flow's
    SNAT (outer destination and quoted source back to the client)."""
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, e
    cdef Inner q
    cdef int64_t slot
    cdef CtE* E
    if l4 >= n:
        return  # (the reference reads past the frame here and raises)
    cdef int t = d[l4]
    if t != 3 and t != 4 and t != 5 and t != 11 and t != 12:
        return
    if not inner_of(d, n, l4, &q):
        return
    slot = ct_slot(dp, node, q.iproto, rd32(d, q.inner + 16), rd16(d, q.il4 + 2),
                   rd32(d, q.inner + 12), rd16(d, q.il4))
    if slot < 0 or not (ct_val(dp, slot) & 1):
        return
    e = ct_val(dp, slot) >> 1
    it.ctx.related = e
    E = &dp.ce[e]
    if E.flags & CT_SNAT:
        set_addr(d, n, 30, E.t[0].sip, -1, PROTO_ICMP, l4, 0)
        inner_set(d, l4, &q, q.inner + 12, E.t[0].sip, 0, E.t[0].sport)
        changed(it)
        ev(dp, it, EV_UNSNAT, E.t[0].sip, E.t[0].sport, node)


cdef void related_post(DP* dp, Item* it, int node) noexcept nogil:
    """At POSTROUTING: undo the flow's DNAT (outer source and quoted destination become
    the Service's address, as the kernel rewrites them)."""
    cdef int e = it.ctx.related
    cdef Inner q
    it.ctx.related = -1
    if e < 0 or not dp.ce[e].flags & CT_DNAT:
        return
    cdef CtE* E = &dp.ce[e]
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len
    cdef int l4 = 14 + (d[14] & 0xF) * 4
    if not inner_of(d, n, l4, &q):
        return
    set_addr(d, n, 26, E.t[0].dip, -1, PROTO_ICMP, l4, 0)
    inner_set(d, l4, &q, q.inner + 16, E.t[0].dip, 2, E.t[0].dport)
    changed(it)
    ev(dp, it, EV_UNDNAT, E.sp, E.be, node)


cdef inline bint nat_used(const DP* dp, int e, int node, int proto, uint32_t sip, int sport,
                          uint32_t dip, int dport) noexcept nogil:
    """nf_nat_used_tuple: the reply tuple is another connection's (entry ``e``'s own reply
    key, its tuple before the SNAT, is no clash: nf_conntrack_tuple_taken ignores it)."""
    cdef int64_t slot = ct_slot(dp, node, proto, sip, sport, dip, dport)
    return slot >= 0 and (ct_val(dp, slot) >> 1) != e


cdef void masquerade(DP* dp, Item* it, int e, int node, int out_if, int proto,
                     int l4, bint random_fully) noexcept nogil:
    """MASQUERADE (S-7, get_unique_tuple): the outgoing interface's address; the source port
    kept unless the reply tuple is taken; with ``random_fully``
    (NF_NAT_RANGE_PROTO_RANDOM_FULLY), or on a clash, a port of the source port's class
    (1-511, 600-1023, 1024-65535) from a random offset (kemu's seed and the tuple), the
    next free one after it (nf_nat_l4proto_unique_tuple)."""
    cdef CtE* E = &dp.ce[e]
    # (a device without an address, a routed veth: inet_select_addr takes the node's)
    cdef uint32_t new_ip = dp.ifs[out_if].ip if dp.ifs[out_if].ip else dp.node_ip[node]
    cdef int port = E.t[0].sport, tries = 0, lo, size
    cdef int rproto = E.proto[1], rsport = E.t[1].sport
    cdef uint32_t rsip = E.t[1].sip
    cdef uint64_t off
    if proto == PROTO_TCP or proto == PROTO_UDP:
        if random_fully or nat_used(dp, e, node, rproto, rsip, rsport, new_ip, port):
            if port < 512:
                lo = 1
                size = 511
            elif port < 1024:
                lo = 600
                size = 424
            else:
                lo = 1024
                size = 64512
            off = (flow_hash(dp.seed, node, proto, E.t[0].sip, E.t[0].sport, E.t[0].dip,
                             E.t[0].dport) >> 32) & 0xFFFF
            port = lo + <int>(off % <uint64_t>size)
            while tries < size - 1 and nat_used(dp, e, node, rproto, rsip, rsport, new_ip,
                                                port):
                off += 1
                port = lo + <int>(off % <uint64_t>size)
                tries += 1
    ct_pop(dp, node, E.proto[1], E.t[1].sip, E.t[1].sport, E.t[1].dip, E.t[1].dport)
    E.proto[1] = rproto
    E.t[1].sip = rsip
    E.t[1].sport = rsport
    E.t[1].dip = new_ip
    E.t[1].dport = port
    ct_set(dp, node, rproto, rsip, rsport, new_ip, port, e, 1)
    E.flags |= CT_SNAT
    E.snat_ip = new_ip
    E.snat_port = port
    set_src(DATA(it), it.len, new_ip, port if proto != PROTO_ICMP else -1, proto, l4)
    changed(it)
    ev(dp, it, EV_SNAT, new_ip, port, node)
