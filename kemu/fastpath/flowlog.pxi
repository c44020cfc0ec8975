# flowlog.pxi: the flow log's records of a batch (``encode_flows``): JSON Lines laid out from
# pieces made once in Python (``kemu.io.flowlog.Pieces``: identities, names, services, drop
# reasons, lists of decisions), with times, addresses, ports and flags formatted here.
# Twin: ``kemu/io/flowlog.py``.

from libc.string cimport strlen

# the most a record's own text (everything but its pieces) can take: the twin's RECORD_TEXT
FLOW_RECORD_TEXT = 1024
cdef int64_t FL_TEXT = 1024

cdef enum:
    FL_FORWARDED = 0
    FL_DROPPED = 1
    FL_TRANSLATED = 2

cdef const char* FL_HEX = b"0123456789abcdef"
# 0..255 in decimal, 4 bytes each: up to three digits, then (4th byte) how many
cdef uint8_t FL_OCTETS[1024]


cdef void fl_octets() noexcept:
    cdef int i, k
    cdef bytes digits
    for i in range(256):
        digits = str(i).encode()
        for k in range(3):
            FL_OCTETS[4 * i + k] = digits[k] if k < len(digits) else 0
        FL_OCTETS[4 * i + 3] = <uint8_t>len(digits)


fl_octets()
# the two digits of 0..99, for numbers written two digits at a time
cdef const char* FL_D2 = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"
cdef const char* FL_VERDICTS[3]
FL_VERDICTS[0] = b"FORWARDED"
FL_VERDICTS[1] = b"DROPPED"
FL_VERDICTS[2] = b"TRANSLATED"
cdef const char* FL_POINTS[4]  # kemu.io.flowlog.P_STACK, P_ENDPOINT, P_NETWORK, P_HOST
FL_POINTS[0] = b"TO_STACK"
FL_POINTS[1] = b"TO_ENDPOINT"
FL_POINTS[2] = b"TO_NETWORK"
FL_POINTS[3] = b"TO_HOST"
cdef const char* FL_FLAGS[6]
FL_FLAGS[0] = b"FIN"
FL_FLAGS[1] = b"SYN"
FL_FLAGS[2] = b"RST"
FL_FLAGS[3] = b"PSH"
FL_FLAGS[4] = b"ACK"
FL_FLAGS[5] = b"URG"


ctypedef struct FlowCtx:         # what encode_flows reads, as raw pointers
    const int32_t* hop_iface
    const int64_t* hop_off
    const int32_t* hop_len
    const uint8_t* arena
    int64_t arena_len
    const uint8_t* text          # the pieces
    const int64_t* start
    const int64_t* size
    const int32_t* if_piece
    const int32_t* if_node
    int64_t n_if
    const int64_t* ep_ip
    const int32_t* ep_piece
    const int32_t* ep_svc
    int64_t n_ep
    int64_t cnet
    int64_t cmask
    int64_t unmanaged
    int64_t world
    int64_t network_node
    bint kemu_format


cdef inline uint8_t* fl_lit(uint8_t* p, const char* s) noexcept nogil:
    cdef size_t n = strlen(s)  # (a literal's: folded by the compiler)
    memcpy(p, s, n)
    return p + n


cdef inline uint8_t* fl_piece(uint8_t* p, const FlowCtx* c, int64_t k) noexcept nogil:
    memcpy(p, c.text + c.start[k], c.size[k])
    return p + c.size[k]


cdef inline int fl_digits(uint8_t* end, uint64_t v) noexcept nogil:
    """The decimal digits of ``v`` written to end just before ``end``, two at a time (one
    division by 100 per pair); returns how many."""
    cdef uint64_t q, r
    cdef uint8_t* q_ = end
    while v >= 100:
        q = v // 100
        r = 2 * (v - q * 100)
        q_ -= 2
        q_[0] = FL_D2[r]
        q_[1] = FL_D2[r + 1]
        v = q
    if v >= 10:
        q_ -= 2
        q_[0] = FL_D2[2 * v]
        q_[1] = FL_D2[2 * v + 1]
    else:
        q_ -= 1
        q_[0] = <uint8_t>(48 + v)
    return <int>(end - q_)


cdef inline uint8_t* fl_u64(uint8_t* p, uint64_t v) noexcept nogil:
    """``v`` in decimal at ``p``, written in place (its digits counted first)."""
    cdef int n = 1
    cdef uint64_t t = v
    while t >= 100:
        t //= 100
        n += 2
    if t >= 10:
        n += 1
    fl_digits(p + n, v)
    return p + n


cdef inline uint8_t* fl_i64(uint8_t* p, int64_t v) noexcept nogil:
    if v < 0:
        p[0] = 45  # '-'
        return fl_u64(p + 1, <uint64_t>0 - <uint64_t>v)
    return fl_u64(p, <uint64_t>v)


cdef inline uint8_t* fl_pad(uint8_t* p, uint64_t v, int width) noexcept nogil:
    """``v`` in at least ``width`` digits (at most 20), zero-padded (Python's
    ``f"{v:0{width}d}"``)."""
    cdef uint8_t tmp[24]
    cdef int k = fl_digits(tmp + 24, v)
    while k < width:
        k += 1
        tmp[24 - k] = 48
    memcpy(p, tmp + 24 - k, k)
    return p + k


cdef inline int64_t fl_floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef int fl_seconds(uint8_t* p, int64_t secs) noexcept nogil:
    """``YYYY-MM-DDTHH:MM:SS.`` of a second since the epoch (``kemu.io.flowlog.rfc3339``:
    proleptic Gregorian, H. Hinnant's ``civil_from_days``); returns its length."""
    cdef int64_t days = fl_floordiv(secs, 86400), rem = secs - days * 86400
    cdef int64_t z = days + 719468
    cdef int64_t era = fl_floordiv(z, 146097)
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    cdef int64_t d = doy - (153 * mp + 2) // 5 + 1
    cdef int64_t m = mp + 3 if mp < 10 else mp - 9
    cdef int64_t y = yoe + era * 400 + (1 if m <= 2 else 0)
    cdef uint8_t* q = p
    if y < 0:  # f"{y:04d}": the sign counts in the width
        q[0] = 45
        q = fl_pad(q + 1, <uint64_t>(-y), 3)
    else:
        q = fl_pad(q, <uint64_t>y, 4)
    q[0] = 45
    q = fl_pad(q + 1, <uint64_t>m, 2)
    q[0] = 45
    q = fl_pad(q + 1, <uint64_t>d, 2)
    q[0] = 84  # 'T'
    q = fl_pad(q + 1, <uint64_t>(rem // 3600), 2)
    q[0] = 58  # ':'
    q = fl_pad(q + 1, <uint64_t>(rem // 60 % 60), 2)
    q[0] = 58
    q = fl_pad(q + 1, <uint64_t>(rem % 60), 2)
    q[0] = 46  # '.'
    return <int>(q + 1 - p)


cdef inline uint8_t* fl_mac(uint8_t* p, const uint8_t* m) noexcept nogil:
    cdef int k
    for k in range(6):
        if k:
            p[0] = 58
            p += 1
        p[0] = FL_HEX[m[k] >> 4]
        p[1] = FL_HEX[m[k] & 15]
        p += 2
    return p


cdef inline uint8_t* fl_ip(uint8_t* p, const uint8_t* a) noexcept nogil:
    """A dotted quad: each byte's digits from ``FL_OCTETS`` (four bytes copied, the length
    counted: the buffer's bound leaves room for the spare byte, written over next)."""
    cdef int k
    for k in range(4):
        if k:
            p[0] = 46
            p += 1
        memcpy(p, FL_OCTETS + 4 * a[k], 4)
        p += FL_OCTETS[4 * a[k] + 3]
    return p


cdef inline int64_t fl_endpoint(const FlowCtx* c, int64_t ip, int64_t* svc) noexcept nogil:
    """The endpoint piece of an address or -1, and in ``svc`` the piece of the Service whose
    ClusterIP it is or -1 (``kemu.io.flowlog._endpoint``)."""
    cdef int64_t lo = 0, hi = c.n_ep, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if c.ep_ip[mid] < ip:
            lo = mid + 1
        else:
            hi = mid
    if lo < c.n_ep and c.ep_ip[lo] == ip:
        svc[0] = c.ep_svc[lo]
        return c.ep_piece[lo]
    svc[0] = -1
    return c.unmanaged if (ip & c.cmask) == c.cnet else c.world


cdef uint8_t* fl_record(const FlowCtx* c, uint8_t* p, int64_t h, int verdict, int64_t why,
                        int point, int64_t src_svc, int64_t dst_svc, bint reply,
                        int64_t number, int64_t dec, int64_t pol, const uint8_t* ts,
                        int tsl) noexcept nogil:
    """One record (``kemu.io.flowlog._record``); the hop's bytes are checked already."""
    cdef const uint8_t* d
    cdef int64_t ln, l4, node = c.network_node, iface, ep, addr_svc
    cdef int proto, fl, k
    cdef bint first
    p = fl_lit(p, b'{"flow":{"time":"')
    memcpy(p, ts, tsl)
    p = fl_lit(p + tsl, b'","verdict":"')
    p = fl_lit(p, FL_VERDICTS[verdict])
    p[0] = 34  # '"'
    p += 1
    if why >= 0:
        p = fl_piece(p, c, why)
    if h >= 0:
        d = c.arena + c.hop_off[h]
        ln = c.hop_len[h]
        iface = c.hop_iface[h]
        node = c.if_node[iface]
        if ln >= 14:
            p = fl_lit(p, b',"ethernet":{"source":"')
            p = fl_mac(p, d + 6)
            p = fl_lit(p, b'","destination":"')
            p = fl_mac(p, d)
            p = fl_lit(p, b'"}')
        if ln >= 34 and d[12] == 8 and d[13] == 0:
            p = fl_lit(p, b',"IP":{"source":"')
            p = fl_ip(p, d + 26)
            p = fl_lit(p, b'","destination":"')
            p = fl_ip(p, d + 30)
            p = fl_lit(p, b'","ipVersion":"IPv4"}')
            l4 = 14 + (d[14] & 0xF) * 4
            proto = d[23]
            if proto == PROTO_TCP and ln >= l4 + 14:
                p = fl_lit(p, b',"l4":{"TCP":{"source_port":')
                p = fl_u64(p, (<uint64_t>d[l4] << 8) | d[l4 + 1])
                p = fl_lit(p, b',"destination_port":')
                p = fl_u64(p, (<uint64_t>d[l4 + 2] << 8) | d[l4 + 3])
                p = fl_lit(p, b',"flags":{')
                fl = d[l4 + 13]
                first = True
                for k in range(6):
                    if fl & (1 << k):
                        if not first:
                            p[0] = 44  # ','
                            p += 1
                        first = False
                        p[0] = 34
                        p = fl_lit(p + 1, FL_FLAGS[k])
                        p = fl_lit(p, b'":true')
                p = fl_lit(p, b'}}},"Summary":"TCP Flags: ')
                first = True
                for k in range(6):
                    if fl & (1 << k):
                        if not first:
                            p = fl_lit(p, b", ")
                        first = False
                        p = fl_lit(p, FL_FLAGS[k])
                p[0] = 34
                p += 1
            elif proto == PROTO_UDP and ln >= l4 + 4:
                p = fl_lit(p, b',"l4":{"UDP":{"source_port":')
                p = fl_u64(p, (<uint64_t>d[l4] << 8) | d[l4 + 1])
                p = fl_lit(p, b',"destination_port":')
                p = fl_u64(p, (<uint64_t>d[l4 + 2] << 8) | d[l4 + 3])
                p = fl_lit(p, b'}},"Summary":"UDP"')
            elif proto == PROTO_ICMP and ln >= l4 + 2:
                p = fl_lit(p, b',"l4":{"ICMPv4":{"type":')
                p = fl_u64(p, d[l4])
                p = fl_lit(p, b',"code":')
                p = fl_u64(p, d[l4 + 1])
                p = fl_lit(p, b'}},"Summary":"ICMPv4 type ')
                p = fl_u64(p, d[l4])
                p = fl_lit(p, b' code ')
                p = fl_u64(p, d[l4 + 1])
                p[0] = 34
                p += 1
            ep = fl_endpoint(c, kemu_rd32(d + 26), &addr_svc)
            if ep >= 0:
                p = fl_lit(p, b',"source":')
                p = fl_piece(p, c, ep)
            if src_svc < 0:
                src_svc = addr_svc
            ep = fl_endpoint(c, kemu_rd32(d + 30), &addr_svc)
            if ep >= 0:
                p = fl_lit(p, b',"destination":')
                p = fl_piece(p, c, ep)
            if dst_svc < 0:
                dst_svc = addr_svc
        p = fl_piece(p, c, c.if_piece[iface])
    p = fl_lit(p, b',"Type":"L3_L4","node_name":')
    p = fl_piece(p, c, node)
    p = fl_lit(p, b',"trace_observation_point":"')
    p = fl_lit(p, FL_POINTS[point])
    if reply:
        p = fl_lit(p, b'","is_reply":true')
    else:
        p = fl_lit(p, b'","is_reply":false')
    if src_svc >= 0:
        p = fl_lit(p, b',"source_service":')
        p = fl_piece(p, c, src_svc)
    if dst_svc >= 0:
        p = fl_lit(p, b',"destination_service":')
        p = fl_piece(p, c, dst_svc)
    if pol >= 0:
        p = fl_piece(p, c, pol)
    if dec >= 0:
        p = fl_lit(p, b',"kemu":{"frame":')
        p = fl_i64(p, number)
        p = fl_lit(p, b',"hop":')
        p = fl_i64(p, h)
        p = fl_lit(p, b',"decisions":')
        p = fl_piece(p, c, dec)
        p[0] = 125  # '}'
        p += 1
    p = fl_lit(p, b'},"node_name":')
    p = fl_piece(p, c, node)
    p = fl_lit(p, b',"time":"')
    memcpy(p, ts, tsl)
    return fl_lit(p + tsl, b'"}\n')


cdef inline bint fl_ids_ok(const int32_t[::1] ids, Py_ssize_t n, int64_t n_pieces,
                           bint none_ok) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if ids[i] >= n_pieces or ids[i] < (-1 if none_ok else 0):
            return False
    return True


def encode_flows(res, frame_ts, frame_number, hop_dec, ev_dec, frame_dec, pieces, space=None,
                 oc_policy=None):
    """The flow records of a batch's results; see ``kemu.io.flowlog.encode_flows``."""
    cdef Py_ssize_t n_hops = res.n_hops, n_ev = res.n_events, n_oc = res.n_outcomes
    cdef const int32_t[::1] hf = res.hop_frame
    cdef const int32_t[::1] hi = res.hop_iface
    cdef const int64_t[::1] ho = res.hop_off
    cdef const int32_t[::1] hl = res.hop_len
    cdef const uint8_t[::1] ar = res.arena
    cdef const int32_t[::1] eh = res.ev_hop
    cdef const int16_t[::1] ek = res.ev_kind
    cdef const int64_t[::1] ea = res.ev_a
    cdef const int32_t[::1] of = res.oc_frame
    cdef const uint8_t[::1] ok = res.oc_kind
    cdef const int16_t[::1] orr = res.oc_reason
    cdef const int32_t[::1] oi = res.oc_iface
    cdef const int32_t[::1] oh = res.oc_hop
    cdef const int64_t[::1] fts = frame_ts
    cdef const int64_t[::1] fnum = frame_number
    cdef const int32_t[::1] hdec = hop_dec
    cdef const int32_t[::1] edec = ev_dec
    cdef const int32_t[::1] fdec = frame_dec
    cdef bint has_pol = oc_policy is not None
    cdef const int32_t[::1] opol = oc_policy if has_pol else np.zeros(1, np.int32)
    if not (0 <= n_hops <= min(hf.shape[0], hi.shape[0], ho.shape[0], hl.shape[0])
            and 0 <= n_ev <= min(eh.shape[0], ek.shape[0], ea.shape[0])
            and 0 <= n_oc <= min(of.shape[0], ok.shape[0], orr.shape[0], oi.shape[0],
                                 oh.shape[0])):
        raise ValueError("encode_flows: counts beyond the arrays")
    cdef Py_ssize_t n_frames = min(fts.shape[0], fnum.shape[0])
    cdef bint kemu_format = bool(pieces.kemu_format)
    if kemu_format and (hdec.shape[0] < n_hops or edec.shape[0] < n_ev
                        or fdec.shape[0] < n_frames):
        raise ValueError("encode_flows: decisions arrays shorter than the results")
    text, start, size = pieces.arrays()
    cdef const uint8_t[::1] pt = text
    cdef const int64_t[::1] ps = start
    cdef const int64_t[::1] pz = size
    cdef const int32_t[::1] if_piece = pieces.if_piece
    cdef const int32_t[::1] if_node = pieces.if_node
    cdef const uint8_t[::1] if_point = pieces.if_point
    cdef const int32_t[::1] why = pieces.why
    cdef const int32_t[::1] fe_sp = pieces.fe_sp
    cdef const int32_t[::1] sp_piece = pieces.sp_piece
    cdef const int64_t[::1] ep_ip = pieces.ep_ip
    cdef const int32_t[::1] ep_piece = pieces.ep_piece
    cdef const int32_t[::1] ep_svc = pieces.ep_svc
    cdef int64_t n_pieces = min(ps.shape[0], pz.shape[0])
    cdef int64_t neigh_why = pieces.neigh_why
    cdef Py_ssize_t i
    # the pieces are checked once: every id names one, every piece lies in the text
    for i in range(n_pieces):
        if ps[i] < 0 or pz[i] < 0 or ps[i] + pz[i] > pt.shape[0]:
            raise ValueError(f"encode_flows: piece {i} outside the text")
    cdef FlowCtx c
    c.n_if = min(if_piece.shape[0], if_node.shape[0], if_point.shape[0])
    c.n_ep = min(ep_ip.shape[0], ep_piece.shape[0], ep_svc.shape[0])
    c.network_node = pieces.network_node
    c.unmanaged = pieces.unmanaged
    c.world = pieces.world
    if (why.shape[0] < 1 << 16
            or not fl_ids_ok(if_piece, c.n_if, n_pieces, False)
            or not fl_ids_ok(if_node, c.n_if, n_pieces, False)
            or not fl_ids_ok(sp_piece, sp_piece.shape[0], n_pieces, True)
            or not fl_ids_ok(ep_piece, c.n_ep, n_pieces, True)
            or not fl_ids_ok(ep_svc, c.n_ep, n_pieces, True)
            or not 0 <= neigh_why < n_pieces
            or not 0 <= c.network_node < n_pieces or not 0 <= c.unmanaged < n_pieces
            or not 0 <= c.world < n_pieces
            or (has_pol and (opol.shape[0] < n_oc
                             or not fl_ids_ok(opol, n_oc, n_pieces, True)))
            or (kemu_format and not (fl_ids_ok(hdec, n_hops, n_pieces, False)
                                     and fl_ids_ok(edec, n_ev, n_pieces, False)
                                     and fl_ids_ok(fdec, n_frames, n_pieces, False)))):
        raise ValueError("encode_flows: a piece id unknown")
    for i in range(c.n_if):
        if if_point[i] > 3:
            raise ValueError(f"encode_flows: interface {i}: observation point unknown")
    for i in range(1, n_hops):
        if hf[i] < hf[i - 1]:
            raise ValueError("encode_flows: hops or outcomes out of frame order")
    for i in range(1, n_oc):
        if of[i] < of[i - 1]:
            raise ValueError("encode_flows: hops or outcomes out of frame order")
    c.hop_iface = &hi[0] if hi.shape[0] else NULL
    c.hop_off = &ho[0] if ho.shape[0] else NULL
    c.hop_len = &hl[0] if hl.shape[0] else NULL
    c.arena = &ar[0] if ar.shape[0] else NULL
    c.arena_len = ar.shape[0]
    c.text = &pt[0] if pt.shape[0] else NULL
    c.start = &ps[0] if ps.shape[0] else NULL
    c.size = &pz[0] if pz.shape[0] else NULL
    c.if_piece = &if_piece[0] if if_piece.shape[0] else NULL
    c.if_node = &if_node[0] if if_node.shape[0] else NULL
    c.ep_ip = &ep_ip[0] if ep_ip.shape[0] else NULL
    c.ep_piece = &ep_piece[0] if ep_piece.shape[0] else NULL
    c.ep_svc = &ep_svc[0] if ep_svc.shape[0] else NULL
    c.cnet = pieces.cnet
    c.cmask = pieces.cmask
    c.kemu_format = kemu_format
    # the translation events of each hop, in event order (counting sort by hop; the events
    # are read once, the few translations twice more)
    tr_start = np.zeros(n_hops + 2, np.int64)
    tr_list = np.empty(max(1, n_ev), np.int64)
    tr_seen = np.empty(max(1, n_ev), np.int64)
    cdef int64_t[::1] ts_ = tr_start
    cdef int64_t[::1] tl = tr_list
    cdef int64_t[::1] tseen = tr_seen
    cdef int64_t h, e, k, kind, n_tr = 0
    with nogil:
        for e in range(n_ev):
            kind = ek[e]
            if ((kind == EV_DNAT or kind == EV_SNAT or kind == EV_UNDNAT or kind == EV_UNSNAT
                 or kind == EV_IPVS_DNAT) and 0 <= eh[e] < n_hops):
                ts_[eh[e] + 2] += 1
                tseen[n_tr] = e
                n_tr += 1
        for h in range(n_hops):
            ts_[h + 2] += ts_[h + 1]
        for k in range(n_tr):  # ts_[h + 1]: where hop h's next one goes
            e = tseen[k]
            tl[ts_[eh[e] + 1]] = e
            ts_[eh[e] + 1] += 1
    # (now hop h's are tl[ts_[h]:ts_[h + 1]])
    cdef int64_t bound = (FL_TEXT + 2 * <int64_t>pieces.max_endpoint
                          + 2 * <int64_t>pieces.max_service + 4 * <int64_t>pieces.max_size
                          + <int64_t>pieces.max_list
                          + <int64_t>pieces.max_policy)  # kemu.io.flowlog.record_bound
    cdef int64_t total = (ts_[n_hops] + n_oc) * bound
    if total == 0:
        return np.zeros(0, np.uint8), 0
    if space is None:
        out = np.empty(total, np.uint8)
    else:
        out = space(total)
        if (not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1
                or out.shape[0] < total or not out.flags.writeable
                or not out.flags.c_contiguous):
            raise ValueError("encode_flows: space(n) must give a writable contiguous uint8 "
                             "array of n bytes or more")
    cdef uint8_t[::1] o_ = out
    cdef uint8_t* base = &o_[0]
    cdef uint8_t* p = base
    cdef uint8_t tsb[64]
    cdef uint8_t head[48]
    cdef int head_len = 0, tsl
    cdef int64_t last_secs = 0, secs, ns, fi, number, sp, src_svc, dst_svc, a, dec, reason
    cdef int64_t iface
    cdef bint have_secs = False, reply
    cdef int verdict, point, err = 0
    cdef int64_t bad = 0, count = 0, n_fe = fe_sp.shape[0], n_sp = sp_piece.shape[0]
    cdef Py_ssize_t hp = 0, op = 0, oc
    with nogil:
        while hp < n_hops or op < n_oc:
            if hp < n_hops and (op >= n_oc or hf[hp] <= of[op]):
                fi = hf[hp]
            else:
                fi = of[op]
            if fi < 0 or fi >= n_frames:
                err, bad = 1, fi
                break
            ns = fts[fi]
            secs = fl_floordiv(ns, 1000000000)
            if not have_secs or secs != last_secs:
                head_len = fl_seconds(head, secs)
                last_secs, have_secs = secs, True
            memcpy(tsb, head, head_len)
            tsl = <int>(fl_pad(tsb + head_len, <uint64_t>(ns - secs * 1000000000), 9) - tsb)
            tsb[tsl] = 90  # 'Z'
            tsl += 1
            number = fnum[fi]
            src_svc = dst_svc = -1  # the frame's un-DNAT and DNAT so far: their Services
            reply = False
            while hp < n_hops and hf[hp] == fi:
                h = hp
                if ts_[h] < ts_[h + 1]:  # translations here: the hop's bytes are read
                    if (hl[h] < 0 or ho[h] < 0 or ho[h] + hl[h] > c.arena_len
                            or hi[h] < 0 or hi[h] >= c.n_if):
                        err, bad = 2, h
                        break
                for k in range(ts_[h], ts_[h + 1]):
                    e = tl[k]
                    kind = ek[e]
                    a = ea[e]
                    sp = -1
                    if kind == EV_DNAT or kind == EV_IPVS_DNAT:  # (IPVS: kube-router)
                        if a < 0 or a >= n_fe:
                            err, bad = 3, e
                            break
                        sp = fe_sp[a]
                    elif kind == EV_UNDNAT:
                        sp = a
                    if sp >= 0 and (kind == EV_DNAT or kind == EV_IPVS_DNAT):
                        dst_svc = sp_piece[sp] if sp < n_sp else -1
                    elif sp >= 0:
                        src_svc = sp_piece[sp] if sp < n_sp else -1
                    reply = reply or kind == EV_UNDNAT or kind == EV_UNSNAT
                    dec = edec[e] if kemu_format else -1
                    p = fl_record(&c, p, h, FL_TRANSLATED, -1, 0, src_svc, dst_svc, reply,
                                  number, dec, -1, tsb, tsl)
                    count += 1
                if err:
                    break
                hp += 1
            if err:
                break
            while op < n_oc and of[op] == fi:
                oc = op
                op += 1
                kind = ok[oc]
                reason = orr[oc]
                if kind == OUT_DROPPED and (reason == DROP_NOT_LOCAL or reason == DROP_OTHERHOST
                                            or reason == DROP_SAME_PORT):
                    continue
                h = oh[oc]
                if h < -1 or h >= n_hops:
                    err, bad = 4, oc
                    break
                if h >= 0 and (hl[h] < 0 or ho[h] < 0 or ho[h] + hl[h] > c.arena_len
                               or hi[h] < 0 or hi[h] >= c.n_if):
                    err, bad = 2, h
                    break
                iface = oi[oc]
                if kind == OUT_DELIVERED:
                    point = if_point[iface] if 0 <= iface < c.n_if else 3
                    verdict, reason = FL_FORWARDED, -1
                elif kind == OUT_LEFT:
                    verdict, reason, point = FL_FORWARDED, -1, 2
                elif kind == OUT_NEIGH:
                    verdict, reason, point = FL_DROPPED, neigh_why, 0
                else:
                    verdict, reason, point = FL_DROPPED, why[<uint16_t>orr[oc]], 0
                    if reason < -1 or reason >= n_pieces:  # (checked here, where taken)
                        err, bad = 5, <uint16_t>orr[oc]
                        break
                dec = -1
                if kemu_format:
                    dec = hdec[h] if h >= 0 else fdec[fi]
                p = fl_record(&c, p, h, verdict, reason, point, src_svc, dst_svc, reply, number,
                              dec, opol[oc] if has_pol else -1, tsb, tsl)
                count += 1
            if err:
                break
    if err:
        raise ValueError("encode_flows: " + (
            f"frame {bad} outside 0..{n_frames - 1}", f"hop {bad}: bytes outside the arena "
            "or interface unknown", f"event {bad}: frontend unknown",
            f"outcome {bad}: hop outside the results",
            f"a piece id unknown (drop reason {bad})")[err - 1])
    return out[:p - base], count
