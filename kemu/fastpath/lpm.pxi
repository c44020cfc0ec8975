# lpm.pxi: Longest-prefix match, DIR-24-8 after DPDK's rte_lpm: a 2^24-entry first-level table of
# packed 32-bit entries ``next_hop | VALID | EXT | depth << 26`` (allocated on the first route
# longer than /0), 256-entry second-level groups on demand, the rules (RIB) kept for re-expansion
# on delete; ``Lpm`` is the Python-facing class. Twin: ``kemu/dataplane/reference/lpm.py``.

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #ifdef __linux__
    #include <sys/mman.h>
    #endif
    #define KEMU_LPM_VALID 0x1000000u
    #define KEMU_LPM_EXT 0x2000000u
    #define KEMU_LPM_NH 0xFFFFFFu
    #define KEMU_HUGE ((size_t)2 << 20)
    /* Zeroed memory for the big tables (the Lpm's, the datapath's flow cache); with huge
       set, on Linux, an anonymous mapping aligned to 2 MiB and marked MADV_HUGEPAGE, so
       that transparent hugepages (in "madvise" mode too) back it with 2 MiB pages and the
       random reads of lookups stop missing the TLB
       (the 64 MiB of tbl24 are 16,384 small pages but 32 huge ones). Pages are faulted in
       lazily: an untouched 2 MiB costs no memory. Otherwise (and elsewhere) calloc.
       kemu_map_free takes the same size and flag. */
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
    #define KEMU_CAN_HUGE 1
    #else
    #define KEMU_CAN_HUGE 0
    #endif
    static void* kemu_map_alloc(size_t size, int huge) {
    #if KEMU_CAN_HUGE
        if (huge) {
            size_t len = (size + KEMU_HUGE - 1) & ~(KEMU_HUGE - 1);
            char* p = (char*)mmap(NULL, len + KEMU_HUGE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            char* a;
            if (p == (char*)MAP_FAILED) return NULL;
            a = (char*)(((uintptr_t)p + KEMU_HUGE - 1) & ~(uintptr_t)(KEMU_HUGE - 1));
            if (a > p) munmap(p, (size_t)(a - p));
            munmap(a + len, (size_t)(p + KEMU_HUGE - a));   /* the rest of the slack */
            madvise(a, len, MADV_HUGEPAGE);   /* advice: without THP, small pages */
            return a;
        }
    #endif
        (void)huge;
        return calloc(1, size);
    }
    static void kemu_map_free(void* p, size_t size, int huge) {
        if (p == NULL) return;
    #if KEMU_CAN_HUGE
        if (huge) {
            munmap(p, (size + KEMU_HUGE - 1) & ~(KEMU_HUGE - 1));
            return;
        }
    #endif
        (void)size; (void)huge;
        free(p);
    }
    /* A copy of a calloc'd table in a hugepage mapping (NULL if none could be had): only
       the 4 KiB blocks holding something are copied, so untouched parts stay unbacked. */
    static uint32_t* kemu_lpm_to_huge(const uint32_t* old, size_t size) {
        char* t;
        size_t b;
        int k;
        if (!KEMU_CAN_HUGE) return NULL;
        t = (char*)kemu_map_alloc(size, 1);
        if (t == NULL) return NULL;
        for (b = 0; b + 4096 <= size; b += 4096) {
            const uint64_t* w = (const uint64_t*)((const char*)old + b);
            uint64_t any = 0;
            for (k = 0; k < 512; k++) any |= w[k];
            if (any) memcpy(t + b, (const char*)old + b, 4096);
        }
        return (uint32_t*)t;
    }
    /* The entry that answers for ip: its tbl24 entry, or the tbl8 one that an extended
       entry points to. A branch here would be mispredicted for every address in a random
       mix, and GCC makes one of a ?: (even with __builtin_expect_with_probability), so on
       x86-64 the choice is a cmov; elsewhere a mask (integer arithmetic: t8 may be NULL). */
    static inline const uint32_t* kemu_lpm_answer(const uint32_t* t24, const uint32_t* t8,
                                                  uint32_t ip) {
        uintptr_t a24 = (uintptr_t)&t24[ip >> 8];
        uint32_t e = *(const uint32_t*)a24;
        uintptr_t a8 = (uintptr_t)t8
            + ((((uintptr_t)(e & KEMU_LPM_NH)) << 8) | (ip & 0xFF)) * sizeof(uint32_t);
    #if defined(__x86_64__) && defined(__GNUC__)
        __asm__("test %[m], %[e]; cmovnz %[a8], %[r]"
                : [r] "+r"(a24) : [e] "r"(e), [m] "i"(KEMU_LPM_EXT), [a8] "r"(a8) : "cc");
        return (const uint32_t*)a24;
    #else
        uintptr_t ext = (uintptr_t)0 - (uintptr_t)((e >> 25) & 1);   /* KEMU_LPM_EXT */
        return (const uint32_t*)((a24 & ~ext) | (a8 & ext));
    #endif
    }
    /* Batched lookups, a two-stage software pipeline: the tbl24 entry of address i + D is
       prefetched; at i + H (H < D: it has arrived by then) it is read and the entry that
       answers (itself, or a tbl8 entry) is prefetched and its address kept in a ring of H;
       at i that entry is read and the next hop written. So about D independent cache
       misses are in flight instead of the few the out-of-order window finds. D and H were
       picked by measurement (bench/test_routes.py); H must be a power of two. wide: out
       is int64_t, else int32_t (a constant in each caller below). */
    #define KEMU_LPM_D 128
    #define KEMU_LPM_H 64
    static inline __attribute__((always_inline)) void kemu_lpm_bulk(
            const uint32_t* t24, const uint32_t* t8, const uint32_t* ips, void* out,
            size_t n, int32_t miss, const int wide) {
        const uint32_t* ring[KEMU_LPM_H];
        const uint32_t* a;
        uint32_t e;
        int32_t r;
        size_t i;
        for (i = 0; i < n && i < KEMU_LPM_D; i++) __builtin_prefetch(&t24[ips[i] >> 8]);
        for (i = 0; i < n && i < KEMU_LPM_H; i++) {
            a = kemu_lpm_answer(t24, t8, ips[i]);
            __builtin_prefetch(a);
            ring[i] = a;
        }
        i = 0;
        if (n > KEMU_LPM_D) {
            #pragma GCC unroll 4
            for (; i < n - KEMU_LPM_D; i++) {
                __builtin_prefetch(&t24[ips[i + KEMU_LPM_D] >> 8]);
                e = *ring[i & (KEMU_LPM_H - 1)];
                r = (e & KEMU_LPM_VALID) ? (int32_t)(e & KEMU_LPM_NH) : miss;
                if (wide) ((int64_t*)out)[i] = r; else ((int32_t*)out)[i] = r;
                a = kemu_lpm_answer(t24, t8, ips[i + KEMU_LPM_H]);
                __builtin_prefetch(a);
                ring[i & (KEMU_LPM_H - 1)] = a;
            }
        }
        for (; i < n; i++) {
            e = *ring[i & (KEMU_LPM_H - 1)];
            r = (e & KEMU_LPM_VALID) ? (int32_t)(e & KEMU_LPM_NH) : miss;
            if (wide) ((int64_t*)out)[i] = r; else ((int32_t*)out)[i] = r;
            if (i + KEMU_LPM_H < n)
                ring[i & (KEMU_LPM_H - 1)] = kemu_lpm_answer(t24, t8, ips[i + KEMU_LPM_H]);
        }
    }
    static void kemu_lpm_bulk32(const uint32_t* t24, const uint32_t* t8, const uint32_t* ips,
                                int32_t* out, size_t n, int32_t miss) {
        kemu_lpm_bulk(t24, t8, ips, out, n, miss, 0);
    }
    static void kemu_lpm_bulk64(const uint32_t* t24, const uint32_t* t8, const uint32_t* ips,
                                int64_t* out, size_t n, int32_t miss) {
        kemu_lpm_bulk(t24, t8, ips, out, n, miss, 1);
    }
    static void kemu_lpm_fill32(int32_t* out, size_t n, int32_t v) {
        for (size_t i = 0; i < n; i++) out[i] = v;
    }
    static void kemu_lpm_fill64(int64_t* out, size_t n, int64_t v) {
        for (size_t i = 0; i < n; i++) out[i] = v;
    }
    """
    void* kemu_map_alloc(size_t size, int huge) noexcept nogil
    void kemu_map_free(void* p, size_t size, int huge) noexcept nogil
    uint32_t* kemu_lpm_to_huge(const uint32_t* old, size_t size) noexcept nogil
    void kemu_lpm_bulk32(const uint32_t* t24, const uint32_t* t8, const uint32_t* ips,
                         int32_t* out, size_t n, int32_t miss) noexcept nogil
    void kemu_lpm_bulk64(const uint32_t* t24, const uint32_t* t8, const uint32_t* ips,
                         int64_t* out, size_t n, int32_t miss) noexcept nogil
    void kemu_lpm_fill32(int32_t* out, size_t n, int32_t v) noexcept nogil
    void kemu_lpm_fill64(int64_t* out, size_t n, int64_t v) noexcept nogil

cdef enum:
    LPM_VALID = 1 << 24
    LPM_EXT = 1 << 25
    LPM_DEPTH_SHIFT = 26
    LPM_NH_MASK = 0xFFFFFF
    LPM_MAX_GROUPS = 1 << 24
    LPM_TBL24_BYTES = (1 << 24) * 4
    LPM_GROUP_BYTES = 256 * 4
    LPM_HUGE_BYTES = 2 << 20
    LPM_HUGE_RULES = 1024    # tbl24 moves to 2 MiB pages once the table holds this many

ctypedef struct LpmC:
    uint32_t* tbl24          # 2**24 entries, NULL until a route longer than /0 exists
    uint32_t* tbl8           # groups of 256 entries (groups_cap of them)
    int64_t groups_cap
    int64_t groups_hwm       # groups ever handed out (free ones are on the free list)
    int32_t* free_groups
    int64_t n_free
    int64_t free_cap
    HTab rules               # (prefix, depth) -> next hop: the RIB
    bint tbl24_huge          # tbl24 is a hugepage mapping (else calloc'd)
    bint tbl24_tried         # the move to hugepages was made or failed: not tried again
    bint has_default
    uint32_t default_nh


cdef inline uint32_t lpm_mask(int depth) noexcept nogil:
    return <uint32_t>((0xFFFFFFFFULL << (32 - depth)) & 0xFFFFFFFFULL) if depth else 0


cdef inline int32_t lpm_lookup(const LpmC* l, uint32_t ip) noexcept nogil:
    cdef uint32_t e
    if l.tbl24 != NULL:
        e = l.tbl24[ip >> 8]
        if e & LPM_EXT:
            e = l.tbl8[((<uint64_t>(e & LPM_NH_MASK)) << 8) | (ip & 0xFF)]
        if e & LPM_VALID:
            return e & LPM_NH_MASK
    return <int32_t>l.default_nh if l.has_default else -1


cdef int lpm_init(LpmC* l) noexcept nogil:
    memset(l, 0, sizeof(LpmC))
    return ht_init(&l.rules, 64)


cdef void lpm_free(LpmC* l) noexcept nogil:
    kemu_map_free(l.tbl24, LPM_TBL24_BYTES, l.tbl24_huge)
    kemu_map_free(l.tbl8, l.groups_cap * LPM_GROUP_BYTES,
                     l.groups_cap * LPM_GROUP_BYTES >= LPM_HUGE_BYTES)
    free(l.free_groups)
    ht_free(&l.rules)
    memset(l, 0, sizeof(LpmC))


cdef int64_t lpm_group_alloc(LpmC* l) noexcept nogil:
    cdef int64_t g, cap
    cdef uint32_t* t8
    if l.n_free:
        l.n_free -= 1
        return l.free_groups[l.n_free]
    if l.groups_hwm >= LPM_MAX_GROUPS:
        return -1
    if l.groups_hwm == l.groups_cap:
        cap = l.groups_cap * 2 if l.groups_cap else 64
        if cap > LPM_MAX_GROUPS:
            cap = LPM_MAX_GROUPS
        # a new block rather than realloc: from 2 MiB on it is a hugepage mapping
        t8 = <uint32_t*>kemu_map_alloc(cap * LPM_GROUP_BYTES,
                                       cap * LPM_GROUP_BYTES >= LPM_HUGE_BYTES)
        if t8 == NULL:
            return -1
        if l.tbl8 != NULL:
            memcpy(t8, l.tbl8, l.groups_hwm * LPM_GROUP_BYTES)
            kemu_map_free(l.tbl8, l.groups_cap * LPM_GROUP_BYTES,
                             l.groups_cap * LPM_GROUP_BYTES >= LPM_HUGE_BYTES)
        l.tbl8 = t8
        l.groups_cap = cap
    g = l.groups_hwm
    l.groups_hwm += 1
    return g


cdef int lpm_group_release(LpmC* l, int64_t g) noexcept nogil:
    cdef int32_t* f
    cdef int64_t cap
    if l.n_free == l.free_cap:
        cap = l.free_cap * 2 if l.free_cap else 64
        f = <int32_t*>realloc(l.free_groups, cap * sizeof(int32_t))
        if f == NULL:
            return -1   # the group leaks until the Lpm goes away; lookups stay right
        l.free_groups = f
        l.free_cap = cap
    l.free_groups[l.n_free] = <int32_t>g
    l.n_free += 1
    return 0


cdef void lpm_group_recycle(LpmC* l, uint32_t idx24) noexcept nogil:
    """After a delete: a group whose entries are all invalid, or all one rule of depth <= 24,
    folds back into its tbl24 entry (rte_lpm's tbl8_recycle_check)."""
    cdef int64_t g = l.tbl24[idx24] & LPM_NH_MASK
    cdef uint32_t* grp = &l.tbl8[g << 8]
    cdef uint32_t first = grp[0]
    cdef int j
    for j in range(1, 256):
        if grp[j] != first:
            return
    if first & LPM_VALID and (first >> LPM_DEPTH_SHIFT) > 24:
        return
    l.tbl24[idx24] = first
    lpm_group_release(l, g)


cdef void lpm_tbl24_to_huge(LpmC* l) noexcept nogil:
    """A big table's tbl24 moves to 2 MiB pages, so that the TLB covers all of it; a small
    one (a cluster's routes) keeps the few 4 KiB pages it touches."""
    cdef uint32_t* t = kemu_lpm_to_huge(l.tbl24, LPM_TBL24_BYTES)
    l.tbl24_tried = True
    if t != NULL:
        free(l.tbl24)
        l.tbl24 = t
        l.tbl24_huge = True


cdef int lpm_add(LpmC* l, uint32_t prefix, int depth, uint32_t nh) noexcept nogil:
    """Insert or update a rule and expand it into the tables; -1 when out of memory."""
    cdef bint created
    cdef HSlot* s
    cdef uint32_t new, e, te, lo
    cdef uint64_t i, start, cnt, j
    cdef int64_t g
    prefix &= lpm_mask(depth)
    s = ht_put(&l.rules, prefix, <uint64_t>depth, &created)
    if s == NULL:
        return -1
    s.v0 = nh
    if depth == 0:
        l.has_default = True
        l.default_nh = nh
        return 0
    if l.tbl24 == NULL:
        l.tbl24 = <uint32_t*>kemu_map_alloc(LPM_TBL24_BYTES, False)
        if l.tbl24 == NULL:
            ht_del(&l.rules, ht_find(&l.rules, prefix, <uint64_t>depth))
            return -1
    elif l.rules.n >= LPM_HUGE_RULES and not l.tbl24_tried:
        lpm_tbl24_to_huge(l)
    new = nh | LPM_VALID | (<uint32_t>depth << LPM_DEPTH_SHIFT)
    if depth <= 24:
        start = prefix >> 8
        cnt = (<uint64_t>1) << (24 - depth)
        for i in range(start, start + cnt):
            e = l.tbl24[i]
            if not e & LPM_EXT:
                if not e & LPM_VALID or (e >> LPM_DEPTH_SHIFT) <= <uint32_t>depth:
                    l.tbl24[i] = new
            else:
                g = e & LPM_NH_MASK
                for j in range(<uint64_t>g << 8, (<uint64_t>g << 8) + 256):
                    te = l.tbl8[j]
                    if not te & LPM_VALID or (te >> LPM_DEPTH_SHIFT) <= <uint32_t>depth:
                        l.tbl8[j] = new
        return 0
    i = prefix >> 8
    e = l.tbl24[i]
    if not e & LPM_EXT:
        g = lpm_group_alloc(l)
        if g < 0:
            ht_del(&l.rules, ht_find(&l.rules, prefix, <uint64_t>depth))
            return -1
        for j in range(256):
            l.tbl8[(g << 8) + j] = e if e & LPM_VALID else 0
        l.tbl24[i] = <uint32_t>g | LPM_VALID | LPM_EXT
    else:
        g = e & LPM_NH_MASK
    lo = prefix & 0xFF
    cnt = (<uint64_t>1) << (32 - depth)
    for j in range((g << 8) + lo, (g << 8) + lo + cnt):
        te = l.tbl8[j]
        if not te & LPM_VALID or (te >> LPM_DEPTH_SHIFT) <= <uint32_t>depth:
            l.tbl8[j] = new
    return 0


cdef bint lpm_delete(LpmC* l, uint32_t prefix, int depth) noexcept nogil:
    """Remove a rule; its range falls back to the longest shorter rule covering it."""
    cdef HSlot* s
    cdef HSlot* sub
    cdef uint32_t subent = 0, e, te
    cdef int d
    cdef uint64_t i, start, cnt, j, g
    prefix &= lpm_mask(depth)
    s = ht_find(&l.rules, prefix, <uint64_t>depth)
    if s == NULL:
        return False
    ht_del(&l.rules, s)
    if depth == 0:
        l.has_default = False
        l.default_nh = 0
        return True
    for d in range(depth - 1, 0, -1):
        sub = ht_find(&l.rules, prefix & lpm_mask(d), <uint64_t>d)
        if sub != NULL:
            subent = <uint32_t>sub.v0 | LPM_VALID | (<uint32_t>d << LPM_DEPTH_SHIFT)
            break
    if depth <= 24:
        start = prefix >> 8
        cnt = (<uint64_t>1) << (24 - depth)
        for i in range(start, start + cnt):
            e = l.tbl24[i]
            if not e & LPM_EXT:
                if e & LPM_VALID and (e >> LPM_DEPTH_SHIFT) <= <uint32_t>depth:
                    l.tbl24[i] = subent
            else:
                g = e & LPM_NH_MASK
                for j in range(g << 8, (g << 8) + 256):
                    te = l.tbl8[j]
                    if te & LPM_VALID and (te >> LPM_DEPTH_SHIFT) <= <uint32_t>depth:
                        l.tbl8[j] = subent
                lpm_group_recycle(l, <uint32_t>i)
        return True
    i = prefix >> 8
    e = l.tbl24[i]
    if not e & LPM_EXT:   # cannot happen: a rule longer than /24 always has its group
        return True
    g = e & LPM_NH_MASK
    start = (g << 8) + (prefix & 0xFF)
    cnt = (<uint64_t>1) << (32 - depth)
    for j in range(start, start + cnt):
        te = l.tbl8[j]
        if te & LPM_VALID and (te >> LPM_DEPTH_SHIFT) <= <uint32_t>depth:
            l.tbl8[j] = subent
    lpm_group_recycle(l, <uint32_t>i)
    return True


cdef class Lpm:
    """Routes: (prefix, depth) -> next-hop id (below 2**24); DIR-24-8 like DPDK's rte_lpm."""

    cdef LpmC c

    def __cinit__(self):
        if lpm_init(&self.c) < 0:
            raise MemoryError()

    def __dealloc__(self):
        lpm_free(&self.c)

    def add(self, prefix: int, depth: int, next_hop: int) -> None:
        if not 0 <= depth <= 32:
            raise ValueError(f"depth {depth} outside 0..32")
        if not 0 <= next_hop < 1 << 24:
            raise ValueError(f"next hop {next_hop} outside 0..2**24-1")
        if lpm_add(&self.c, <uint32_t>(prefix & 0xFFFFFFFF), depth, next_hop) < 0:
            raise MemoryError("LPM: out of memory or of second-level groups")

    def delete(self, prefix: int, depth: int) -> bool:
        if not 0 <= depth <= 32:
            return False
        return lpm_delete(&self.c, <uint32_t>(prefix & 0xFFFFFFFF), depth)

    def lookup(self, ip: int) -> int:
        """Next-hop id of the longest prefix containing ``ip``, or -1."""
        return lpm_lookup(&self.c, <uint32_t>(ip & 0xFFFFFFFF))

    def lookup_bulk(self, ips, out) -> None:
        """``out[i]`` = ``lookup(ips[i])`` for every address (``ips`` as uint32). A C-contiguous
        int32 or int64 ``out`` is written directly; any other goes through an int64 copy."""
        cdef cnp.ndarray v = np.ascontiguousarray(ips, dtype=np.uint32)
        cdef cnp.ndarray o
        cdef Py_ssize_t n = v.shape[0]
        cdef const uint32_t* p = <const uint32_t*>cnp.PyArray_DATA(v)
        cdef int32_t miss = <int32_t>self.c.default_nh if self.c.has_default else -1
        if v.ndim != 1:
            raise ValueError("ips must be one-dimensional")
        if len(out) < n:
            raise IndexError(f"out holds {len(out)} entries, {n} needed")
        direct = (isinstance(out, np.ndarray) and out.ndim == 1
                  and (out.dtype == np.int32 or out.dtype == np.int64)
                  and out.flags.c_contiguous and out.flags.writeable)
        o = out if direct else np.empty(n, np.int64)
        if o.dtype == np.int32:
            if self.c.tbl24 == NULL:
                kemu_lpm_fill32(<int32_t*>cnp.PyArray_DATA(o), n, miss)
            else:
                kemu_lpm_bulk32(self.c.tbl24, self.c.tbl8, p, <int32_t*>cnp.PyArray_DATA(o),
                                n, miss)
        else:
            if self.c.tbl24 == NULL:
                kemu_lpm_fill64(<int64_t*>cnp.PyArray_DATA(o), n, miss)
            else:
                kemu_lpm_bulk64(self.c.tbl24, self.c.tbl8, p, <int64_t*>cnp.PyArray_DATA(o),
                                n, miss)
        if not direct:
            out[:n] = o

    def __len__(self) -> int:
        return self.c.rules.n
