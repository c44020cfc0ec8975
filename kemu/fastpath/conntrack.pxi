# conntrack.pxi: Connection tracking (C-1..C-6): the index of (node, tuple) -> (entry, direction)
# slots, the entry pool, insert/delete with deferred freeing, TCP state and timeouts
# (``ct_update``), expiry at ``cleanup``. Twin: ``kemu/dataplane/reference/conntrack.py``.

cdef int ct_init(CtTab* t, int64_t cap) noexcept nogil:
    cdef int64_t c = 16
    while c < cap:
        c <<= 1
    t.s = <uint64_t*>kemu_zalloc(c, sizeof(uint64_t))
    t.mask = c - 1
    t.n = 0
    return 0 if t.s != NULL else -1


cdef inline uint32_t ct_hash(int node, int proto, uint32_t sip, int sport, uint32_t dip,
                             int dport) noexcept nogil:
    """The index hash of a key. Its low 24 bits (the home slot, in an index of up to 2^24
    slots) come from the flow's two ends in either order and not the node: the keys of one
    flow on every node it crosses, both directions, start their probes in the same cache
    line, so a frame going on to the next node, and a new flow's reply key, find the line
    already fetched (as the kernel hashes a flow's tuples to nearby buckets only by chance,
    this is kemu's own layout). The high 8 bits tell those keys apart (node and direction),
    so a probe compares entries only on a match of all 32 bits."""
    cdef uint64_t a = (<uint64_t>sip << 16) | <uint64_t>(sport & 0xFFFF)
    cdef uint64_t b = (<uint64_t>dip << 16) | <uint64_t>(dport & 0xFFFF)
    cdef bint swap = b < a
    cdef uint64_t lo = b if swap else a, hi = a if swap else b
    cdef uint32_t h = <uint32_t>kemu_hkey(lo | (<uint64_t>(proto & 0xFF) << 48), hi)
    cdef uint32_t tag = <uint32_t>(((<uint64_t>(node * 2 + swap) + 1) * 0x9E3779B97F4A7C15ULL)
                                   >> 56)
    return (h & 0xFFFFFFU) ^ (tag << 24) ^ (h & 0xFF000000U)


cdef inline int64_t ct_slot(const DP* dp, int node, int proto, uint32_t sip, int sport,
                            uint32_t dip, int dport) noexcept nogil:
    """The index slot naming the key ``(node, proto, sip, sport, dip, dport)``, or -1. A
    slot keeps the hash and the entry; the key is the entry's tuple of that direction."""
    cdef uint32_t h = ct_hash(node, proto, sip, sport, dip, dport), val
    cdef uint64_t i = h & dp.ct.mask, v
    cdef const CtE* E
    cdef const Tup* t
    while True:
        v = dp.ct.s[i]
        if v == 0:
            return -1
        if <uint32_t>(v >> 32) == h:
            val = <uint32_t>v - 1
            E = &dp.ce[val >> 1]
            t = &E.t[val & 1]
            if (t.sip == sip and t.dip == dip and t.sport == sport and t.dport == dport
                    and E.proto[val & 1] == proto and E.node == node):
                return i
        i = (i + 1) & dp.ct.mask


cdef inline int ct_val(const DP* dp, int64_t slot) noexcept nogil:
    """entry * 2 + is_reply of a slot."""
    return <int>(<uint32_t>dp.ct.s[slot] - 1)


cdef inline bint ct_is(const DP* dp, int val, int node, int proto, uint32_t sip, int sport,
                       uint32_t dip, int dport) noexcept nogil:
    """Whether the index names ``val`` (entry * 2 + d) for this key, without probing it:
    true exactly when the entry still holds the index slot of direction d (``keys``) and
    that direction's tuple is the key (a tuple changes only while its slot is released)."""
    cdef const CtE* E = &dp.ce[val >> 1]
    cdef const Tup* t = &E.t[val & 1]
    return (E.keys >> (val & 1)) & 1 and (t.sip == sip and t.dip == dip and t.sport == sport
                                          and t.dport == dport and E.proto[val & 1] == proto
                                          and E.node == node)


cdef int ct_grow(CtTab* t) noexcept nogil:
    cdef uint64_t oldcap = t.mask + 1, cap = oldcap * 2, i, j
    cdef uint64_t* s = <uint64_t*>kemu_zalloc(cap, sizeof(uint64_t))
    if s == NULL:
        return -1
    for i in range(oldcap):
        if t.s[i]:
            j = (t.s[i] >> 32) & (cap - 1)
            while s[j]:
                j = (j + 1) & (cap - 1)
            s[j] = t.s[i]
    free(t.s)
    t.s = s
    t.mask = cap - 1
    return 0


cdef void ct_del_slot(CtTab* t, uint64_t i) noexcept nogil:
    """Backward-shift deletion (the home of a slot is in its stored hash)."""
    cdef uint64_t mask = t.mask, j = i, k
    while True:
        j = (j + 1) & mask
        if t.s[j] == 0:
            break
        k = (t.s[j] >> 32) & mask
        if (j > i and (k <= i or k > j)) or (j < i and k <= i and k > j):
            t.s[i] = t.s[j]
            i = j
    t.s[i] = 0
    t.n -= 1


cdef void ct_unref(DP* dp, int val) noexcept nogil:
    """The index slot of direction ``val & 1`` no longer names entry ``val >> 1``."""
    cdef int e = val >> 1
    cdef CtE* E = &dp.ce[e]
    cdef int32_t* z
    E.keys &= ~(1 << (val & 1))
    dp.ce_inc[e] += 1  # cached paths through this entry no longer hold
    if E.keys == 0 and not E.zombie:
        if dp.n_zombies == dp.zombies_cap:
            z = <int32_t*>realloc(dp.zombies, (dp.zombies_cap * 2 + 16) * sizeof(int32_t))
            if z == NULL:
                return   # the entry leaks (never reused): harmless
            dp.zombies = z
            dp.zombies_cap = dp.zombies_cap * 2 + 16
        E.zombie = 1
        dp.zombies[dp.n_zombies] = e
        dp.n_zombies += 1


cdef void ct_reap(DP* dp) noexcept nogil:
    """Free entries that lost their last key; called when no frame copy can hold one."""
    cdef int k, e
    for k in range(dp.n_zombies):
        e = dp.zombies[k]
        dp.ce[e].zombie = 0
        if dp.ce[e].keys == 0:
            dp.ce[e].sp = dp.ce_free
            dp.ce_free = e
            dp.ce_used -= 1
    dp.n_zombies = 0


cdef int ct_alloc(DP* dp) noexcept nogil:
    """A fresh entry (the pool may move: re-fetch ``CtE*`` after this); -1: no memory."""
    cdef int e, cap
    cdef CtE* p
    cdef int32_t* hints
    cdef uint32_t* incs
    cdef void** touch
    if dp.ce_free < 0:
        cap = dp.ce_cap * 2 if dp.ce_cap else 1024
        p = <CtE*>aligned_alloc(64, cap * sizeof(CtE))
        if p == NULL:
            dp.err |= ERR_NOMEM
            return -1
        hints = <int32_t*>realloc(dp.ce_hint, cap * 2 * sizeof(int32_t))
        if hints == NULL:
            free(p)
            dp.err |= ERR_NOMEM
            return -1
        dp.ce_hint = hints
        incs = <uint32_t*>realloc(dp.ce_inc, cap * sizeof(uint32_t))
        if incs == NULL:
            free(p)
            dp.err |= ERR_NOMEM
            return -1
        memset(&incs[dp.ce_cap], 0, (cap - dp.ce_cap) * sizeof(uint32_t))
        dp.ce_inc = incs
        touch = NULL
        if dp.track:
            touch = <void**>aligned_alloc(64, cap * NTOUCH * sizeof(void*))
            if touch == NULL:
                free(p)
                dp.err |= ERR_NOMEM
                return -1
            if dp.ce_cap:
                memcpy(touch, dp.ce_touch, dp.ce_cap * NTOUCH * sizeof(void*))
        if dp.ce_cap:
            memcpy(p, dp.ce, dp.ce_cap * sizeof(CtE))
        free(dp.ce)
        free(dp.ce_touch)
        dp.ce = p
        dp.ce_touch = touch
        for e in range(cap - 1, dp.ce_cap - 1, -1):
            p[e].sp = dp.ce_free
            dp.ce_free = e
        dp.ce_cap = cap
    e = dp.ce_free
    dp.ce_free = dp.ce[e].sp
    dp.ce_used += 1
    memset(&dp.ce[e], 0, sizeof(CtE))
    dp.ce[e].sp = -1
    dp.ce[e].be = -1
    dp.ce_hint[2 * e] = -1
    dp.ce_hint[2 * e + 1] = -1
    dp.ce_inc[e] += 1
    if dp.track:
        memset(&dp.ce_touch[e * NTOUCH], 0, NTOUCH * sizeof(void*))
    return e


cdef void ct_set(DP* dp, int node, int proto, uint32_t sip, int sport, uint32_t dip,
                 int dport, int e, int is_reply) noexcept nogil:
    """``self.ct[key] = (e, is_reply)``: overwrites whatever the key named. The key must be
    entry ``e``'s tuple of that direction (set it first). One probe: the key's slot, or the
    empty one that ends its probe sequence (the index grows first, at 70 % load)."""
    cdef uint32_t h = ct_hash(node, proto, sip, sport, dip, dport), val
    cdef uint64_t i, v
    cdef const CtE* E
    cdef const Tup* t
    if (dp.ct.n + 1) * 10 > <int64_t>(dp.ct.mask + 1) * 7 and ct_grow(&dp.ct) < 0:
        dp.err |= ERR_NOMEM
        return
    i = h & dp.ct.mask
    while True:
        v = dp.ct.s[i]
        if v == 0:
            dp.ct.n += 1
            break
        if <uint32_t>(v >> 32) == h:
            val = <uint32_t>v - 1
            E = &dp.ce[val >> 1]
            t = &E.t[val & 1]
            if (t.sip == sip and t.dip == dip and t.sport == sport and t.dport == dport
                    and E.proto[val & 1] == proto and E.node == node):
                ct_unref(dp, <int>val)
                break
        i = (i + 1) & dp.ct.mask
    dp.ct.s[i] = (<uint64_t>h << 32) | <uint64_t>(e * 2 + is_reply + 1)
    dp.ce[e].keys |= 1 << is_reply


cdef void ct_pop(DP* dp, int node, int proto, uint32_t sip, int sport, uint32_t dip,
                 int dport) noexcept nogil:
    """``self.ct.pop(key, None)``."""
    cdef int64_t i = ct_slot(dp, node, proto, sip, sport, dip, dport)
    cdef int val
    if i >= 0:
        val = ct_val(dp, i)
        ct_del_slot(&dp.ct, i)
        ct_unref(dp, val)


cdef void ct_del_if(DP* dp, int node, int proto, uint32_t sip, int sport, uint32_t dip,
                    int dport, int e, int is_reply) noexcept nogil:
    cdef int64_t i = ct_slot(dp, node, proto, sip, sport, dip, dport)
    if i >= 0 and ct_val(dp, i) == e * 2 + is_reply:
        ct_del_slot(&dp.ct, i)
        ct_unref(dp, e * 2 + is_reply)


cdef void ct_delete(DP* dp, int e) noexcept nogil:
    """reference ``_ct_delete``: remove the keys that still name this entry."""
    cdef CtE E = dp.ce[e]
    ct_del_if(dp, E.node, E.proto[0], E.t[0].sip, E.t[0].sport, E.t[0].dip, E.t[0].dport,
              e, 0)
    ct_del_if(dp, E.node, E.proto[1], E.t[1].sip, E.t[1].sport, E.t[1].dip, E.t[1].dport,
              e, 1)


cdef void ct_update(DP* dp, CtE* e, bint is_reply, const uint8_t* d, int n, int l4,
                    int proto) noexcept nogil:
    """A small TCP state machine (FIN and CLOSE are sticky) and the timeouts after it."""
    cdef int fl, st
    if is_reply:
        e.flags |= CT_REPLIED
    if proto == PROTO_TCP and l4 + 14 <= n:
        fl = d[l4 + 13]
        st = e.state
        if st == CT_ESTABLISHED and not fl & 0x07:  # the usual segment: no SYN, FIN, RST
            e.expires = dp.now + TCP_TIMEOUT_NS[CT_ESTABLISHED]
            return
        if st == CT_CLOSE or fl & 0x04:
            st = CT_CLOSE
        elif fl & 0x01 or st == CT_FIN:
            st = CT_FIN
        elif fl & 0x02 and not fl & 0x10:
            st = CT_SYN_SENT if (st == CT_NONE or st == CT_SYN_SENT) else st
        elif (fl & 0x12) == 0x12 and is_reply:
            st = CT_SYN_RECV
        elif fl & 0x10 and e.flags & CT_REPLIED:
            st = CT_ESTABLISHED
        elif st == CT_NONE:
            st = CT_ESTABLISHED if fl & 0x10 else CT_SYN_SENT
        e.state = st
        e.expires = dp.now + (TCP_TIMEOUT_NS[st] if 0 <= st < N_TCP_TIMEOUTS
                              else OTHER_TIMEOUT_NS)
    elif proto == PROTO_UDP:
        e.state = CT_UDP
        e.expires = dp.now + (UDP_STREAM_TIMEOUT_NS if e.flags & CT_REPLIED
                              else UDP_TIMEOUT_NS)
    elif proto == PROTO_ICMP:
        e.state = CT_ICMP
        e.expires = dp.now + ICMP_TIMEOUT_NS
    else:
        e.expires = dp.now + OTHER_TIMEOUT_NS
