# placement.pxi: Replay placement: where each frame of a capture enters the cluster
# (``place_frames``) and how the batch's fates are counted (``count_fates``). Twin:
# ``kemu/frontend/placement.py``.

cdef inline int64_t sorted_find(const int64_t* keys, int64_t n, int64_t k) noexcept nogil:
    """Index of the first ``k`` in sorted ``keys`` (numpy's searchsorted, left), or -1."""
    cdef int64_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < k:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < n and keys[lo] == k else -1


def count_fates(oc_frame, oc_kind, oc_reason, Py_ssize_t n_outcomes, Py_ssize_t n, noise,
                ev_frame, ev_kind, Py_ssize_t n_events, translating, oc_nat=None):
    """Fates of a batch's frames; see ``kemu.frontend.placement.count_fates``."""
    cdef const int32_t[::1] fr = oc_frame
    cdef const uint8_t[::1] kind = oc_kind
    cdef const int16_t[::1] reason = oc_reason
    cdef const uint8_t[::1] nz = noise.view(np.uint8)
    cdef const int32_t[::1] ef = ev_frame
    cdef const int16_t[::1] ek = ev_kind
    cdef const uint8_t[::1] tr = translating.view(np.uint8)
    cdef const uint8_t[::1] nat = (oc_nat if oc_nat is not None
                                   else np.zeros(1, np.uint8)).view(np.uint8)
    cdef bint has_nat = oc_nat is not None
    cdef Py_ssize_t i, f, n_drops = 0
    cdef int64_t delivered = 0, left = 0, fated = 0, translated = 0
    if (n_outcomes < 0 or n_outcomes > min(fr.shape[0], kind.shape[0], reason.shape[0])
            or n_events < 0 or n_events > min(ef.shape[0], ek.shape[0])
            or (has_nat and nat.shape[0] < n_outcomes)):
        raise ValueError("count_fates: counts beyond the arrays")
    if nz.shape[0] < 1 << 16 or tr.shape[0] < 1 << 16:
        raise ValueError("count_fates: noise and translating need 65536 entries")
    for i in range(n_outcomes):
        if fr[i] < 0 or fr[i] >= n:
            raise ValueError(f"count_fates: a frame index outside 0..{n - 1}")
    for i in range(n_events):
        if ef[i] < 0 or ef[i] >= n:
            raise ValueError(f"count_fates: a frame index outside 0..{n - 1}")
    # per frame: 1 delivered, 2 left, 4 its drop counted, 8 translated
    state = np.zeros(max(1, n), np.uint8)
    ended = np.empty(max(1, n), np.int64)   # per frame: the outcome that ended it (flag 4)
    dropped = np.empty(max(1, n), np.int64)   # the frames ended by a drop, in order
    cdef uint8_t[::1] st = state
    cdef int64_t[::1] en = ended
    cdef int64_t[::1] dl = dropped
    with nogil:
        for i in range(n_outcomes):
            if kind[i] == OUT_DELIVERED:
                st[fr[i]] |= 1
            elif kind[i] == OUT_LEFT:
                st[fr[i]] |= 2
        for i in range(n_outcomes):
            f = fr[i]
            if st[f] & 7:
                continue
            if (kind[i] == OUT_DROPPED and not nz[<uint16_t>reason[i]]) or kind[i] == OUT_NEIGH:
                st[f] |= 4
                en[f] = i
        for i in range(n_events):
            if tr[<uint16_t>ek[i]] and not st[ef[i]] & 8:
                st[ef[i]] |= 8
                translated += 1
        if has_nat:
            for i in range(n_outcomes):
                if nat[i] and not st[fr[i]] & 8:
                    st[fr[i]] |= 8
                    translated += 1
        for f in range(n):
            if st[f] & 1:
                delivered += 1
            elif st[f] & 2:
                left += 1
            if st[f] & 3:
                fated += 1
            elif st[f] & 4:
                dl[n_drops] = en[f]
                n_drops += 1
    drops = [(reason[dl[j]], kind[dl[j]] == OUT_NEIGH) for j in range(n_drops)]
    return delivered, left, n - fated - n_drops, translated, drops


def place_frames(buf, offsets, lengths, own_ip, own_if, own_if_l2, mac_keys, mac_ifs,
                 int gateway):
    """Where each frame of a capture enters; see ``kemu.frontend.placement.Placer.place``."""
    cdef const uint8_t[::1] b = buf
    cdef const int64_t[::1] off = offsets
    cdef const int32_t[::1] ln = lengths
    cdef const int64_t[::1] oip = own_ip
    cdef const int32_t[::1] oif = own_if
    cdef const int32_t[::1] oif2 = own_if_l2
    cdef const int64_t[::1] mk = mac_keys
    cdef const int32_t[::1] mif = mac_ifs
    cdef Py_ssize_t n = off.shape[0], i
    cdef int64_t o, L, et, ip, pos, mac
    cdef bint arp
    if ln.shape[0] != n or oif.shape[0] != oip.shape[0] or oif2.shape[0] != oip.shape[0] \
            or mif.shape[0] != mk.shape[0]:
        raise ValueError("place_frames: arrays of different lengths")
    for i in range(n):
        if off[i] < 0 or ln[i] < 0 or off[i] + ln[i] > b.shape[0]:
            raise ValueError(f"place_frames: frame {i} lies outside the buffer")
    iface = np.full(n, -1, np.int32)
    why = np.zeros(n, np.int8)
    cdef int32_t[::1] fo = iface
    cdef int8_t[::1] wo = why
    cdef const uint8_t* d
    with nogil:
        for i in range(n):
            o = off[i]
            L = ln[i]
            if L < 14:
                wo[i] = 1
                continue
            d = &b[o]
            et = (<int64_t>d[12] << 8) | d[13]
            ip = -1
            arp = False
            if et == 0x0800 and L >= 34:
                ip = rd32(d, 26)
            elif et == 0x0806 and L >= 42:
                ip = rd32(d, 28)
                arp = True
            if ip >= 0 and oip.shape[0]:
                pos = sorted_find(&oip[0], oip.shape[0], ip)
                if pos >= 0:
                    fo[i] = oif2[pos] if arp else oif[pos]
            if fo[i] < 0 and mk.shape[0]:
                mac = <int64_t>rd48(d, 6)
                pos = sorted_find(&mk[0], mk.shape[0], mac)
                if pos >= 0:
                    fo[i] = mif[pos]
            if fo[i] < 0:
                if gateway >= 0:
                    fo[i] = gateway
                else:
                    wo[i] = 2
    return iface, why
