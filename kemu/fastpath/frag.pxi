# frag.pxi: IPv4 fragmentation and reassembly (L2-2, CT-1): nf_defrag_ipv4 at a node's
# PREROUTING/OUTPUT (``defrag``: the queues keyed (node, user, src, dst, proto, id), 30 s
# each, ip_frag_queue's checks, runs and RFC 5722-style overlaps) and ip_fragment on output
# (``frag_output``: the slow path of ip_do_fragment, then neighbour output per fragment;
# ``frag_bridge``: br_nf_dev_queue_xmit's refragmentation of a bridged reassembled packet).
# Rare work, reached through the ``cold`` table. Twin: ``kemu/dataplane/reference/frag.py``.

cdef void fq_free(FragQ* q) noexcept nogil:
    free(q.runs)
    free(q.buf)
    q.runs = NULL
    q.buf = NULL


cdef void fq_remove(DP* dp, int k) noexcept nogil:
    """Drop queue ``k`` (the last one takes its place: ``state()`` sorts)."""
    fq_free(&dp.fq[k])
    dp.n_fq -= 1
    if k != dp.n_fq:
        dp.fq[k] = dp.fq[dp.n_fq]


cdef void fq_expire(DP* dp, int node, int64_t now) noexcept nogil:
    """reference ``Reassembly.expire``: a node's queues past their 30 s."""
    cdef int k = 0
    while k < dp.n_fq:
        if (node < 0 or dp.fq[k].node == node) and dp.fq[k].expires <= now:
            fq_remove(dp, k)
        else:
            k += 1


cdef int fq_insert(FragQ* q, int offset, int end) noexcept nogil:
    """reference ``FragQueue._insert`` (inet_frag_queue_insert): 0, FRAG_DUP, FRAG_OVERLAP,
    or FRAG_BAD when out of memory."""
    cdef int k, j
    cdef int32_t* r
    if q.n_runs and q.tail < end and offset == q.tail and q.runs[2 * q.n_runs - 1] == q.tail:
        q.runs[2 * q.n_runs - 1] = end
        q.tail = end
        return 0
    if q.n_runs and q.tail < end and offset < q.tail:
        return FRAG_OVERLAP
    if q.n_runs and q.tail >= end:
        for k in range(q.n_runs):
            if end <= q.runs[2 * k] or offset >= q.runs[2 * k + 1]:
                continue
            if offset >= q.runs[2 * k] and end <= q.runs[2 * k + 1]:
                return FRAG_DUP
            return FRAG_OVERLAP
    if q.n_runs == q.runs_cap:
        r = <int32_t*>realloc(q.runs, (q.runs_cap * 2 + 8) * 2 * sizeof(int32_t))
        if r == NULL:
            return FRAG_BAD
        q.runs = r
        q.runs_cap = q.runs_cap * 2 + 8
    k = q.n_runs  # sorted insert (appended runs are the common case)
    while k > 0 and q.runs[2 * k - 2] > offset:
        q.runs[2 * k] = q.runs[2 * k - 2]
        q.runs[2 * k + 1] = q.runs[2 * k - 1]
        k -= 1
    q.runs[2 * k] = offset
    q.runs[2 * k + 1] = end
    q.n_runs += 1
    if q.tail < end:
        q.tail = end
    return 0


cdef int fq_add(FragQ* q, const uint8_t* d) noexcept nogil:
    """reference ``FragQueue.add`` (ip_frag_queue): 0 queued, 1 complete, FRAG_*."""
    cdef int ihl = (d[14] & 0xF) * 4
    cdef uint32_t fo = rd16(d, 20)
    cdef int offset = <int>(fo & 0x1FFF) << 3
    cdef int end = offset + <int>rd16(d, 16) - ihl
    cdef int got, size
    if not fo & 0x2000:
        if end < q.len or (q.last_in and end != q.len):
            return FRAG_BAD
        q.last_in = 1
        q.len = end
    else:
        end &= ~7
        if end > q.len:
            if q.last_in:
                return FRAG_BAD
            q.len = end
    if end == offset:
        return FRAG_BAD
    got = fq_insert(q, offset, end)
    if got:
        return got
    if q.buf == NULL:
        q.buf = <uint8_t*>calloc(FQ_BUF, 1)
        if q.buf == NULL:
            return FRAG_BAD
    memcpy(q.buf + FQ_DATA + offset, d + 14 + ihl, end - offset)
    if offset == 0:
        memcpy(q.buf, d, 14 + ihl)
        q.first_len = 14 + ihl
    q.meat += end - offset
    q.count += 1
    size = end - offset + ihl
    if size > q.max_size:
        q.max_size = size
    if fo & 0x4000 and size > q.max_df_size:
        q.max_df_size = size
    return 1 if q.first_len and q.last_in and q.meat == q.len else 0


cdef int defrag(DP* dp, Item* it, int node, int user) noexcept nogil:
    """reference ``Frag._defrag``: a fragment queued (DROP_FRAG_QUEUED), dropped
    (DROP_FRAG_OVERLAP, DROP_BAD_IP_HEADER) or, completing its datagram, the copy becomes
    the reassembled packet (0; its data may have moved: re-read ``DATA(it)``)."""
    cdef uint8_t* d = DATA(it)
    cdef uint32_t src = rd32(d, 26), dst = rd32(d, 30)
    cdef int proto = d[23], ident = rd16(d, 18)
    cdef int k, r, total, ihl
    cdef FragQ* q = NULL
    cdef FragQ* nq
    cdef Buf buf
    dp.tr_ok = 0  # rare work: not a path the flow cache holds
    ihl = (d[14] & 0xF) * 4
    if ihl < 20 or 14 + ihl > it.len or <int>rd16(d, 16) < ihl or 14 + <int>rd16(d, 16) > it.len:
        return DROP_BAD_IP_HEADER  # (the node's own packets have not met ip_rcv's checks)
    fq_expire(dp, node, dp.now)
    for k in range(dp.n_fq):
        q = &dp.fq[k]
        if (q.node == node and q.user == user and q.src == src and q.dst == dst
                and q.proto == proto and q.id == ident):
            break
        q = NULL
    if q == NULL:
        if dp.n_fq == dp.fq_cap:
            nq = <FragQ*>realloc(dp.fq, (dp.fq_cap * 2 + 4) * sizeof(FragQ))
            if nq == NULL:
                dp.err |= ERR_NOMEM
                return DROP_BAD_IP_HEADER
            dp.fq = nq
            dp.fq_cap = dp.fq_cap * 2 + 4
        k = dp.n_fq
        q = &dp.fq[k]
        memset(q, 0, sizeof(FragQ))
        q.expires = dp.now + FRAG_TIMEOUT_NS
        q.src = src
        q.dst = dst
        q.node = node
        q.user = user
        q.proto = proto
        q.id = ident
        dp.n_fq += 1
    r = fq_add(q, d)
    if r == 0 or r == FRAG_DUP:
        return DROP_FRAG_QUEUED
    if r == FRAG_OVERLAP:
        fq_remove(dp, k)
        return DROP_FRAG_OVERLAP
    ihl = q.first_len - 14
    total = q.first_len + q.len
    if r == FRAG_BAD or q.len + ihl > 0xFFFF:
        fq_remove(dp, k)
        return DROP_BAD_IP_HEADER
    # ip_frag_reasm: the first fragment's header, this copy's Ethernet header
    if it.cap - it.off < total:
        if buf_get(dp, HEADROOM + total, &buf) < 0:
            fq_remove(dp, k)
            return DROP_BAD_IP_HEADER
        memcpy(buf.mem + HEADROOM, d, 14)
        buf_put(dp, it.mem, it.cap)
        it.mem = buf.mem
        it.cap = buf.cap
        it.off = HEADROOM
    d = DATA(it)
    memcpy(d + 14, q.buf + 14, ihl)
    memcpy(d + 14 + ihl, q.buf + FQ_DATA, q.len)
    it.len = total
    wr16(d, 16, ihl + q.len)
    wr16(d, 20, 0x4000 if q.max_df_size == q.max_size else 0)
    wr16(d, 24, 0)
    wr16(d, 24, ip_checksum(d, 14, ihl))
    it.frag_max = q.max_size if q.max_size > q.max_df_size else q.max_df_size
    it.ip_ok = 0
    changed(it)
    ev(dp, it, EV_DEFRAG, q.count, total - 14, node)
    fq_remove(dp, k)
    return 0


cdef void options_fragment(uint8_t* d, int ihl) noexcept nogil:
    """reference ``options_fragment``: options without the copy flag become NOOPs."""
    cdef int o = 34, end = 14 + ihl, t, ln
    while o < end:
        t = d[o]
        if t == 0:
            return
        if t == 1:
            o += 1
            continue
        if o + 1 >= end:
            return
        ln = d[o + 1]
        if ln < 2 or o + ln > end:
            return
        if not t & 0x80:
            memset(d + o, 1, ln)
        o += ln


cdef void frag_piece(const uint8_t* src, Item* c, int k, int mtu) noexcept nogil:
    """Fragment ``k`` of the packet in ``src`` (reference ``fragment``) written over the
    copy ``c`` of it (same Ethernet header and IP header to begin with)."""
    cdef uint8_t* d = DATA(c)
    cdef int ihl = (src[14] & 0xF) * 4
    cdef int tot = rd16(src, 16)
    cdef uint32_t fo = rd16(src, 20)
    cdef int room = (mtu - ihl) & ~7
    cdef int pos = k * room
    cdef int left = tot - ihl - pos
    cdef int ln = left if left <= mtu - ihl else room
    cdef uint32_t off = ((((fo & 0x1FFF) << 3) + pos) >> 3) | (fo & 0x4000)
    if left - ln > 0 or fo & 0x2000:
        off |= 0x2000
    if pos:
        memcpy(d + 14 + ihl, src + 14 + ihl + pos, ln)
        options_fragment(d, ihl)
    c.len = 14 + ihl + ln
    wr16(d, 16, ihl + ln)
    wr16(d, 20, off)
    wr16(d, 24, 0)
    wr16(d, 24, ip_checksum(d, 14, ihl))
    c.ip_ok = 0
    changed(c)


cdef int n_pieces(const uint8_t* d, int mtu) noexcept nogil:
    cdef int ihl = (d[14] & 0xF) * 4
    cdef int left = rd16(d, 16) - ihl, room = (mtu - ihl) & ~7, n = 0
    while left > 0:
        left -= left if left <= mtu - ihl else room
        n += 1
    return n


cdef int frag_output(DP* dp, Item* it, int node, int out_if, uint32_t hop_ip,
                     int mtu) noexcept nogil:
    """reference ``_output``'s fragmenting branch: ip_fragment (DF from a reassembly
    longer than the MTU: refused), then neighbour output of each fragment in order; the
    copy is replaced by its fragments (2) or, fitting after all, goes on whole."""
    cdef uint8_t* d = DATA(it)
    cdef Item orig
    cdef Item* c
    cdef int k, n
    cdef HSlot* ns
    cdef int64_t mac
    dp.tr_ok = 0  # rare work: not a path the flow cache holds
    if rd16(d, 20) & 0x4000 and it.frag_max > mtu:
        return end(dp, it, OUT_DROPPED, DROP_FRAG_NEEDED, out_if, mtu, True)
    if it.frag_max and it.frag_max < mtu:
        mtu = it.frag_max
    it.frag_max = 0
    if <int>rd16(d, 16) <= mtu:
        return neigh_output(dp, it, node, out_if, hop_ip)
    n = n_pieces(d, mtu)
    ev(dp, it, EV_FRAGMENT, n, mtu, node)
    memcpy(&orig, it, sizeof(Item) - sizeof(Ev) * (NPEND - it.npend))
    dp.sp -= 1  # the copy is replaced by its fragments
    cdef bint noarp = dp.ifs[out_if].kind == IF_IPIP  # kube-router's tun: no neighbour
    ns = NULL
    mac = 0 if noarp else neigh_get(dp, node, hop_ip, &ns)
    if mac < 0:
        for k in range(n):
            c = fork(dp, &orig, S_TX, out_if, orig.b)
            if c == NULL:
                break
            frag_piece(orig.mem + orig.off, c, k, mtu)
            ev(dp, c, EV_NEIGH_MISS, hop_ip, node, out_if)
            wr48(DATA(c), 6, <uint64_t>dp.ifs[out_if].mac)
            changed(c)
            end(dp, c, OUT_NEIGH, 0, out_if, hop_ip, True)
            buf_put(dp, c.mem, c.cap)
            dp.sp -= 1
    else:
        if not noarp and (ns == NULL or not ns.v1):
            neigh_cache(dp, node, hop_ip, ns, mac)
        for k in range(n - 1, -1, -1):
            c = fork(dp, &orig, S_TX, out_if, orig.b)
            if c == NULL:
                break
            frag_piece(orig.mem + orig.off, c, k, mtu)
            wr48(DATA(c), 0, <uint64_t>mac)
            wr48(DATA(c), 6, <uint64_t>dp.ifs[out_if].mac)
            changed(c)
            ctx_reset(&c.ctx)
    buf_put(dp, orig.mem, orig.cap)
    return 2


cdef int frag_bridge(DP* dp, Item* it, int q, int node) noexcept nogil:
    """reference ``_bridge_out``'s refragmentation (br_nf_dev_queue_xmit): a reassembled
    packet leaving a bridge port cut to its largest original fragment (or the port's MTU);
    the copy (its stage and port set) is replaced by its fragments (2), or 0: it goes on."""
    cdef uint8_t* d = DATA(it)
    cdef int mtu = dp.ifs[q].mtu, k, n
    cdef Item orig
    cdef Item* c
    dp.tr_ok = 0
    if it.frag_max < mtu:
        mtu = it.frag_max
    if <int>rd16(d, 16) > mtu and rd16(d, 20) & 0x4000 and it.frag_max > mtu:
        return end(dp, it, OUT_DROPPED, DROP_FRAG_NEEDED, q, mtu, False)
    it.frag_max = 0
    if <int>rd16(d, 16) <= mtu:
        return 0
    n = n_pieces(d, mtu)
    ev(dp, it, EV_FRAGMENT, n, mtu, node)
    memcpy(&orig, it, sizeof(Item) - sizeof(Ev) * (NPEND - it.npend))
    dp.sp -= 1
    for k in range(n - 1, -1, -1):
        c = fork(dp, &orig, orig.stage, orig.a, orig.b)
        if c == NULL:
            break
        frag_piece(orig.mem + orig.off, c, k, mtu)
    buf_put(dp, orig.mem, orig.cap)
    return 2
