# htab.pxi: The open-addressing hash table behind the FDBs, neighbour, affinity, frontend and
# owner tables: power-of-two capacity, linear probing, backward-shift deletion, growth at 70%
# load. Twin: Python dicts in the reference (no file of its own).

ctypedef struct HSlot:
    uint64_t k0
    uint64_t k1      # KEMU_OCC set: occupied (user keys stay below 2**63)
    int64_t v0
    int64_t v1

ctypedef struct HTab:
    HSlot* s
    uint64_t mask
    int64_t n
    uint64_t changes     # keys added or removed, slots moved (invalidates cached paths)


cdef int ht_init(HTab* t, int64_t cap) noexcept nogil:
    cdef int64_t c = 16
    while c < cap:
        c <<= 1
    t.s = <HSlot*>kemu_zalloc(c, sizeof(HSlot))
    t.mask = c - 1
    t.n = 0
    return 0 if t.s != NULL else -1


cdef void ht_free(HTab* t) noexcept nogil:
    free(t.s)
    t.s = NULL
    t.n = 0
    t.mask = 0


cdef void ht_clear(HTab* t) noexcept nogil:
    if t.s != NULL:
        memset(t.s, 0, (t.mask + 1) * sizeof(HSlot))
    t.n = 0
    t.changes += 1


cdef inline HSlot* ht_find(const HTab* t, uint64_t k0, uint64_t k1) noexcept nogil:
    k1 |= KEMU_OCC
    cdef uint64_t i = kemu_hkey(k0, k1) & t.mask
    cdef HSlot* s
    while True:
        s = &t.s[i]
        if s.k1 == k1 and s.k0 == k0:
            return s
        if s.k1 == 0:
            return NULL
        i = (i + 1) & t.mask


cdef int ht_grow(HTab* t) noexcept nogil:
    cdef HSlot* old = t.s
    cdef uint64_t oldcap = t.mask + 1, i, j
    cdef uint64_t cap = oldcap * 2
    cdef HSlot* s = <HSlot*>kemu_zalloc(cap, sizeof(HSlot))
    if s == NULL:
        return -1
    for i in range(oldcap):
        if old[i].k1:
            j = kemu_hkey(old[i].k0, old[i].k1) & (cap - 1)
            while s[j].k1:
                j = (j + 1) & (cap - 1)
            s[j] = old[i]
    free(old)
    t.s = s
    t.mask = cap - 1
    t.changes += 1
    return 0


cdef inline HSlot* ht_put(HTab* t, uint64_t k0, uint64_t k1, bint* created) noexcept nogil:
    """The slot of a key, inserted (values 0) when absent; NULL when out of memory."""
    if (t.n + 1) * 10 > <int64_t>(t.mask + 1) * 7:
        if ht_grow(t) < 0:
            return NULL
    k1 |= KEMU_OCC
    cdef uint64_t i = kemu_hkey(k0, k1) & t.mask
    cdef HSlot* s
    while True:
        s = &t.s[i]
        if s.k1 == k1 and s.k0 == k0:
            created[0] = False
            return s
        if s.k1 == 0:
            s.k0 = k0
            s.k1 = k1
            s.v0 = 0
            s.v1 = 0
            t.n += 1
            t.changes += 1
            created[0] = True
            return s
        i = (i + 1) & t.mask


cdef void ht_del(HTab* t, HSlot* slot) noexcept nogil:
    """Backward-shift deletion: no tombstones, probe chains stay short."""
    cdef uint64_t mask = t.mask
    cdef uint64_t i = slot - t.s, j = i, k
    while True:
        j = (j + 1) & mask
        if t.s[j].k1 == 0:
            break
        k = kemu_hkey(t.s[j].k0, t.s[j].k1) & mask
        if (j > i and (k <= i or k > j)) or (j < i and k <= i and k > j):
            t.s[i] = t.s[j]
            i = j
    t.s[i].k0 = 0
    t.s[i].k1 = 0
    t.n -= 1
    t.changes += 1
