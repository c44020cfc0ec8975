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



# -- shard keys (#21; twin: kemu.frontend.placement.shard_keys, read it for the rules) --------

cdef inline uint32_t shard_mix(uint64_t x) noexcept nogil:
    """splitmix64's finaliser, to 32 bits (the twin's ``_mix``)."""
    x = (x ^ (x >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * <uint64_t>0x94D049BB133111EB
    return <uint32_t>((x ^ (x >> 31)) >> 32)


cdef inline uint32_t shard_pair(uint64_t proto, uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t lo = a if a <= b else b, hi = b if a <= b else a
    return shard_mix(<uint64_t>shard_mix((lo << 32) | hi) ^ ((<uint64_t>4 << 56) | (proto << 32)))


cdef struct ShardTabs:
    const int64_t* svc
    const uint8_t* svc_flags
    const int32_t* svc_sp
    const int64_t* be
    const uint8_t* be_flags
    const int64_t* sp_be
    const int64_t* pods
    const uint8_t* pod_flags
    const int64_t* nodes
    int64_t n_svc, n_be, n_sp_be, n_pods, n_nodes


cdef uint32_t shard_ports(const ShardTabs* tb, int64_t proto, int64_t s, int64_t sp,
                          int64_t d, int64_t dp, uint8_t* unc) noexcept nogil:
    cdef int64_t ks = (proto << 48) | (s << 16) | sp, kd = (proto << 48) | (d << 16) | dp
    cdef int64_t fd = sorted_find(tb.svc, tb.n_svc, kd), fs = sorted_find(tb.svc, tb.n_svc, ks)
    cdef int64_t bd = sorted_find(tb.be, tb.n_be, kd), bs = sorted_find(tb.be, tb.n_be, ks)
    cdef int64_t c, cp, f, pod
    cdef uint64_t a, b, lo, hi
    cdef uint8_t fl
    cdef bint server_d, server_s
    if fd < 0:
        fd = sorted_find(tb.svc, tb.n_svc, (proto << 48) | dp)
    if fs < 0:
        fs = sorted_find(tb.svc, tb.n_svc, (proto << 48) | sp)
    server_d = fd >= 0 or bd >= 0
    server_s = fs >= 0 or bs >= 0
    unc[0] = 0
    if server_d == server_s:
        if not server_d and sorted_find(tb.pods, tb.n_pods, s) >= 0 \
                and sorted_find(tb.pods, tb.n_pods, d) >= 0:
            a = <uint64_t>ks & ((<uint64_t>1 << 48) - 1)
            b = <uint64_t>kd & ((<uint64_t>1 << 48) - 1)
            lo = a if a <= b else b
            hi = b if a <= b else a
            return shard_mix(<uint64_t>shard_mix(lo | (<uint64_t>proto << 48)) ^ hi
                             ^ (<uint64_t>5 << 56))
        return shard_mix((<uint64_t>1 << 56) | (<uint64_t>proto << 32)
                         | <uint64_t>(sp if sp >= dp else dp))
    if server_d:
        c, cp, f = s, sp, fd
        fl = tb.svc_flags[fd] if fd >= 0 else tb.be_flags[bd]
    else:
        c, cp, f = d, dp, fs
        fl = tb.svc_flags[fs] if fs >= 0 else tb.be_flags[bs]
    if fl & 1:
        unc[0] = sorted_find(tb.nodes, tb.n_nodes, c) >= 0
        return shard_mix((<uint64_t>3 << 56) ^ <uint64_t>c)
    pod = sorted_find(tb.pods, tb.n_pods, c)
    if pod >= 0:
        if f >= 0:
            unc[0] = (tb.svc_flags[f] & 2) != 0 or (
                (tb.pod_flags[pod] & 1) != 0
                and sorted_find(tb.sp_be, tb.n_sp_be, (<int64_t>tb.svc_sp[f] << 32) | c) >= 0)
        return shard_mix((<uint64_t>2 << 56) | (<uint64_t>proto << 48) | (<uint64_t>c << 16)
                         | <uint64_t>cp)
    return shard_mix((<uint64_t>1 << 56) | (<uint64_t>proto << 32) | <uint64_t>cp)


cdef inline bint shard_echo(int t) noexcept nogil:
    return t == 0 or t == 8 or (13 <= t <= 18)


cdef uint32_t shard_l4(const ShardTabs* tb, const uint8_t* d, int64_t n, int64_t l4,
                       int64_t proto, int64_t s, int64_t t, uint8_t* unc) noexcept nogil:
    cdef int typ
    cdef int64_t q, ip, il4
    unc[0] = 0
    if (proto == 6 or proto == 17) and l4 + 4 <= n:
        return shard_ports(tb, proto, s, rd16(d, l4), t, rd16(d, l4 + 2), unc)
    if proto == 1 and l4 + 8 <= n:
        typ = d[l4]
        if shard_echo(typ):
            return shard_ports(tb, 1, s, rd16(d, l4 + 4), t, rd16(d, l4 + 4), unc)
        q = l4 + 8
        if (typ == 3 or typ == 4 or typ == 5 or typ == 11 or typ == 12) and q + 20 <= n \
                and d[q] >> 4 == 4 and (d[q] & 15) >= 5:
            ip = d[q + 9]
            il4 = q + (d[q] & 15) * 4
            if ip != 1:
                return shard_l4(tb, d, n, il4, ip, rd32(d, q + 12), rd32(d, q + 16), unc)
            if il4 + 8 <= n and shard_echo(d[il4]):
                return shard_ports(tb, 1, rd32(d, q + 12), rd16(d, il4 + 4), rd32(d, q + 16),
                                   rd16(d, il4 + 4), unc)
            return shard_pair(1, rd32(d, q + 12), rd32(d, q + 16))
    return shard_pair(<uint64_t>proto, <uint64_t>s, <uint64_t>t)


cdef inline const int64_t* i64p(const int64_t[::1] v) noexcept:
    return &v[0] if v.shape[0] else NULL


cdef inline const uint8_t* u8p(const uint8_t[::1] v) noexcept:
    return &v[0] if v.shape[0] else NULL


def shard_keys(buf, offsets, lengths, tabs, dict frags, cache=None):
    """Shard key of each frame and whether it is uncertain; see
    ``kemu.frontend.placement.shard_keys`` (``tabs``: its ``ShardTables``). ``cache``: a
    zeroed uint64 array of ``3 * 2**k`` words kept across calls, a direct-mapped memo of
    the TCP/UDP answers by 5-tuple (the answer is the tuple's alone: the same results)."""
    cdef const uint8_t[::1] b = buf
    cdef const int64_t[::1] off = offsets
    cdef const int32_t[::1] ln = lengths
    cdef const int64_t[::1] svc = tabs.svc_keys
    cdef const uint8_t[::1] svc_flags = tabs.svc_flags
    cdef const int32_t[::1] svc_sp = tabs.svc_sp
    cdef const int64_t[::1] be = tabs.be_keys
    cdef const uint8_t[::1] be_flags = tabs.be_flags
    cdef const int64_t[::1] sp_be = tabs.sp_be
    cdef const int64_t[::1] pods = tabs.pod_ips
    cdef const uint8_t[::1] pod_flags = tabs.pod_flags
    cdef const int64_t[::1] nodes = tabs.node_ips
    cdef Py_ssize_t n = off.shape[0], i
    if ln.shape[0] != n or svc_flags.shape[0] != svc.shape[0] \
            or svc_sp.shape[0] != svc.shape[0] or be_flags.shape[0] != be.shape[0] \
            or pod_flags.shape[0] != pods.shape[0]:
        raise ValueError("shard_keys: arrays of different lengths")
    keys = np.zeros(n, np.uint32)
    unc = np.zeros(n, np.uint8)
    cdef uint32_t[::1] kv = keys
    cdef uint8_t[::1] uv = unc
    cdef ShardTabs tb
    cdef int64_t o, m, fo, ident, proto, s, t, et
    cdef const uint8_t* d
    cdef uint8_t u = 0
    cdef uint64_t[::1] cw
    cdef uint64_t* cm = NULL
    cdef uint64_t cmask = 0, ca, cb, h, slot
    cdef int64_t l4
    if cache is not None:
        cw = cache
        if cw.shape[0] < 3 or (cw.shape[0] // 3) & (cw.shape[0] // 3 - 1) \
                or cw.shape[0] % 3:
            raise ValueError("shard_keys: cache must hold 3 * 2**k words")
        cm = &cw[0]
        cmask = <uint64_t>(cw.shape[0] // 3 - 1)
    tb.svc, tb.svc_flags = i64p(svc), u8p(svc_flags)
    tb.svc_sp = &svc_sp[0] if svc_sp.shape[0] else NULL
    tb.be, tb.be_flags, tb.sp_be = i64p(be), u8p(be_flags), i64p(sp_be)
    tb.pods, tb.pod_flags, tb.nodes = i64p(pods), u8p(pod_flags), i64p(nodes)
    tb.n_svc, tb.n_be, tb.n_sp_be = svc.shape[0], be.shape[0], sp_be.shape[0]
    tb.n_pods, tb.n_nodes = pods.shape[0], nodes.shape[0]
    for i in range(n):
        o, m = off[i], ln[i]
        if o < 0 or m < 0 or o + m > b.shape[0]:
            raise ValueError(f"shard_keys: frame {i} lies outside the buffer")
        if m < 14:
            continue
        d = &b[o]
        et = rd16(d, 12)
        if et == 0x0806 and m >= 42:
            kv[i] = shard_pair(0, rd32(d, 28), rd32(d, 38))
            continue
        if et != 0x0800 or m < 34 or d[14] >> 4 != 4 or (d[14] & 15) < 5:
            continue
        proto = d[23]
        s = rd32(d, 26)
        t = rd32(d, 30)
        ident = rd16(d, 18)
        fo = ((d[20] & 0x1F) << 8) | d[21]
        if fo:
            frag = (s, t, proto, ident)
            k = frags.get(frag)
            if k is None:
                kv[i] = shard_pair(<uint64_t>proto, <uint64_t>s, <uint64_t>t)
                uv[i] = 1
            else:
                kv[i] = k
                if not d[20] & 0x20:
                    del frags[frag]
            continue
        l4 = 14 + (d[14] & 15) * 4
        if cm != NULL and (proto == 6 or proto == 17) and l4 + 4 <= m:
            ca = (<uint64_t>s << 32) | <uint64_t>t
            cb = (<uint64_t>proto << 32) | (<uint64_t>rd16(d, l4) << 16) | rd16(d, l4 + 2)
            h = shard_mix(ca ^ (cb * <uint64_t>0x9E3779B97F4A7C15)) & cmask
            slot = h * 3
            if cm[slot + 2] >> 40 and cm[slot] == ca and cm[slot + 1] == cb:
                kv[i] = <uint32_t>cm[slot + 2]
                uv[i] = (cm[slot + 2] >> 32) & 1
            else:
                kv[i] = shard_l4(&tb, d, m, l4, proto, s, t, &u)
                uv[i] = u
                cm[slot] = ca
                cm[slot + 1] = cb
                cm[slot + 2] = <uint64_t>kv[i] | (<uint64_t>u << 32) | (<uint64_t>1 << 40)
        else:
            kv[i] = shard_l4(&tb, d, m, l4, proto, s, t, &u)
            uv[i] = u
        if d[20] & 0x20:
            if len(frags) >= 65536:
                frags.clear()
            frags[(s, t, proto, ident)] = kv[i]
    return keys, unc
