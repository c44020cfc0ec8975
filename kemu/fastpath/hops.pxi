# hops.pxi: pcapng output of recorded hops: comment ids per hop (``HopComments``: events interned
# once, a hop's list of events a path in a trie) and the enhanced packet blocks (``encode_hops``).
# Twin: ``kemu/io/hops.py``.

# The twins of ``kemu.io.hops`` (read it for the semantics): comment ids per recorded hop and
# the enhanced packet blocks of a batch's hops, so that writing every hop costs no Python per
# hop. Decisions are interned once: an event (kind, a, b, c) gets an id the first time it is
# seen, a hop's list of events is a path in a trie whose nodes are comment ids; Python makes
# the text of a new id once.

cdef inline bint ev_key(int64_t kind, int64_t a, int64_t b, int64_t c, uint64_t* k0,
                        uint64_t* k1) noexcept nogil:
    """An event as a hash key; False when a value is outside (-2**32, 2**32)."""
    cdef int64_t lim = (<int64_t>1) << 32
    if kind < 0 or kind >= 1 << 16:
        return False
    if a <= -lim or a >= lim or b <= -lim or b >= lim or c <= -lim or c >= lim:
        return False
    cdef uint64_t neg = ((<uint64_t>(a < 0)) << 2) | ((<uint64_t>(b < 0)) << 1) | (
        <uint64_t>(c < 0))
    k0[0] = ((<uint64_t>a & 0xFFFFFFFFULL) << 32) | (<uint64_t>b & 0xFFFFFFFFULL)
    k1[0] = ((<uint64_t>kind) << 35) | (neg << 32) | (<uint64_t>c & 0xFFFFFFFFULL)
    return True


cdef class HopComments:
    """Comment ids of recorded hops; see ``kemu.io.hops.HopComments``."""

    cdef HTab ev
    cdef HTab tr
    cdef readonly int64_t n_event_ids
    cdef readonly int64_t n_comment_ids

    def __cinit__(self):
        if ht_init(&self.ev, 64) < 0 or ht_init(&self.tr, 64) < 0:
            raise MemoryError()
        self.n_event_ids = 0
        self.n_comment_ids = 1

    def __dealloc__(self):
        ht_free(&self.ev)
        ht_free(&self.tr)

    def assign(self, ev_hop, ev_kind, ev_a, ev_b, ev_c, Py_ssize_t n_events, keep, skip,
               cur):
        cdef const int32_t[::1] eh = ev_hop
        cdef const int16_t[::1] ek = ev_kind
        cdef const int64_t[::1] ea = ev_a
        cdef const int64_t[::1] eb = ev_b
        cdef const int64_t[::1] ec = ev_c
        cdef const uint8_t[::1] kp = keep
        cdef const uint8_t[::1] sk = skip
        cdef int32_t[::1] cu = cur
        cdef Py_ssize_t n_hops = cu.shape[0], e
        cdef int64_t h, k, eid
        cdef uint64_t k0, k1
        cdef bint created
        cdef HSlot* s
        if n_events < 0 or n_events > min(eh.shape[0], ek.shape[0], ea.shape[0],
                                         eb.shape[0], ec.shape[0]):
            raise ValueError(f"assign: {n_events} events, arrays hold fewer")
        if kp.shape[0] < n_hops:
            raise ValueError("assign: keep is shorter than cur")
        # the walk runs without the GIL (the writer's thread does it while the datapath's
        # thread wants the GIL between batches); what it created is listed after
        cdef Py_ssize_t n_new_ev = 0, n_new_cm = 0, bad = -1
        cdef int err = 0
        new_ev_at = np.empty(max(1, n_events), np.int64)   # index of each new event
        new_cm_at = np.empty(2 * max(1, n_events), np.int64)  # (parent, event id) pairs
        cdef int64_t[::1] nev = new_ev_at
        cdef int64_t[::1] ncm = new_cm_at
        with nogil:
            for e in range(n_events):
                h = eh[e]
                if h < 0 or h >= n_hops or not kp[h]:
                    continue
                k = ek[e]
                if 0 <= k < sk.shape[0] and sk[k]:
                    continue
                if not ev_key(k, ea[e], eb[e], ec[e], &k0, &k1):
                    err, bad = 1, e
                    break
                s = ht_put(&self.ev, k0, k1, &created)
                if s == NULL:
                    err = 2
                    break
                if created:
                    s.v0 = self.n_event_ids
                    self.n_event_ids += 1
                    nev[n_new_ev] = e
                    n_new_ev += 1
                eid = s.v0
                s = ht_put(&self.tr, <uint64_t>cu[h], <uint64_t>eid, &created)
                if s == NULL:
                    err = 2
                    break
                if created:
                    if self.n_comment_ids >= 0x7FFFFFFF:
                        err = 3
                        break
                    s.v0 = self.n_comment_ids
                    self.n_comment_ids += 1
                    ncm[2 * n_new_cm] = cu[h]
                    ncm[2 * n_new_cm + 1] = eid
                    n_new_cm += 1
                cu[h] = <int32_t>s.v0
        if err == 1:
            raise ValueError(f"assign: event {bad} ({ek[bad]}, {ea[bad]}, {eb[bad]}, "
                             f"{ec[bad]}) has a value outside (-2**32, 2**32)")
        if err == 2:
            raise MemoryError()
        if err == 3:
            raise OverflowError("assign: more than 2**31 distinct comments")
        new_events = [(ek[e], ea[e], eb[e], ec[e]) for e in nev[:n_new_ev]]
        new_comments = [(ncm[2 * e], ncm[2 * e + 1]) for e in range(n_new_cm)]
        return new_events, new_comments


cdef inline void le32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


def encode_hops(hop_frame, hop_iface, hop_dir, hop_off, hop_len, Py_ssize_t n, keep,
                file_if, frame_ts, hop_cid, comment_bytes, comment_start, comment_size,
                arena, space=None):
    """Enhanced packet blocks of the kept hops; see ``kemu.io.hops.encode_hops``."""
    cdef const int32_t[::1] hf = hop_frame
    cdef const int32_t[::1] hi = hop_iface
    cdef const uint8_t[::1] hd = hop_dir
    cdef const int64_t[::1] ho = hop_off
    cdef const int32_t[::1] hl = hop_len
    cdef const uint8_t[::1] kp = keep
    cdef const int32_t[::1] fi = file_if
    cdef const int64_t[::1] ft = frame_ts
    cdef const int32_t[::1] hc = hop_cid
    cdef const uint8_t[::1] cb = comment_bytes
    cdef const int64_t[::1] cs = comment_start
    cdef const int64_t[::1] cz = comment_size
    cdef const uint8_t[::1] ar = arena
    cdef Py_ssize_t h, first = 0, count = 0
    cdef int64_t total = 0, blen, L, off, c = 0, opt, ts, fr = 0, i = 0
    cdef uint8_t* p
    if n < 0 or n > min(hf.shape[0], hi.shape[0], hd.shape[0], ho.shape[0], hl.shape[0],
                        kp.shape[0], hc.shape[0]):
        raise ValueError(f"encode_hops: {n} hops, arrays hold fewer")
    cdef int err = 0
    with nogil:
        for h in range(n):       # check everything, and size the output
            if not kp[h]:
                continue
            fr = hf[h]
            if fr < 0 or fr >= ft.shape[0] or (h and hf[h - 1] > fr):
                err = 1
                break
            i = hi[h]
            if i < 0 or i >= fi.shape[0] or fi[i] < 0:
                err = 2
                break
            L = hl[h]
            off = ho[h]
            if L < 0 or off < 0 or off + L > ar.shape[0]:
                err = 3
                break
            c = hc[h]
            if (c < 0 or c >= cz.shape[0] or cs[c] < 0 or cs[c] + cz[c] > cb.shape[0]
                    or cz[c] & 3):
                err = 4
                break
            if ft[fr] < 0:
                err = 5
                break
            opt = cz[c] + (8 if hd[h] else 0)
            total += 32 + ((L + 3) & ~3) + (opt + 4 if opt else 0)
            count += 1
    if err:
        raise ValueError(f"encode_hops: hop {h}: " + (
            f"frame {fr} out of range or order", f"interface {i} has no file interface",
            "bytes outside the arena", f"comment {c} unknown", "negative time stamp")[err - 1])
    if total == 0:
        return np.zeros(0, np.uint8), 0
    if space is None:
        out = np.empty(total, np.uint8)
    else:   # where the writer wants the bytes (``PcapngWriter.write_later``): no copy after
        out = space(total)
        if (not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1
                or out.shape[0] < total or not out.flags.writeable
                or not out.flags.c_contiguous):
            raise ValueError(f"encode_hops: space({total}) must give a writable contiguous "
                             f"uint8 array of {total} bytes or more")
        out = out[:total]
    cdef uint8_t[::1] o = out
    p = &o[0]
    with nogil:
        for h in range(n):
            if h == 0 or hf[h] != hf[h - 1]:
                first = h
            if not kp[h]:
                continue
            L = hl[h]
            c = hc[h]
            opt = cz[c] + (8 if hd[h] else 0)
            blen = 32 + ((L + 3) & ~3) + (opt + 4 if opt else 0)
            ts = ft[hf[h]] + (h - first)   # the hops of a frame a nanosecond apart
            le32(p, 6)
            le32(p + 4, <uint32_t>blen)
            le32(p + 8, <uint32_t>fi[hi[h]])
            le32(p + 12, <uint32_t>(<uint64_t>ts >> 32))
            le32(p + 16, <uint32_t>(<uint64_t>ts & 0xFFFFFFFFULL))
            le32(p + 20, <uint32_t>L)
            le32(p + 24, <uint32_t>L)
            memcpy(p + 28, &ar[ho[h]], L)
            memset(p + 28 + L, 0, ((L + 3) & ~3) - L)
            p += 28 + ((L + 3) & ~3)
            if cz[c]:
                memcpy(p, &cb[cs[c]], cz[c])
                p += cz[c]
            if hd[h]:
                le32(p, 2 | (4 << 16))
                le32(p + 4, hd[h])
                p += 8
            if opt:
                le32(p, 0)
                p += 4
            le32(p, <uint32_t>blen)
            p += 4
    return out, count
