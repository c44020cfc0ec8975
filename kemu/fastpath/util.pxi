# util.pxi: Small C helpers every room uses: unaligned big-endian loads and stores
# (``rd16``..``wr48``), the Internet checksum and its incremental updates (RFC 1624), the flow
# hash behind Service endpoint choice (``flow_hash``, ``mix64``; ``py_flow_hash`` exposes it to
# Python), the huge-page allocator ``kemu_map_alloc``/``kemu_map_free``. Twin:
# ``kemu/dataplane/reference/util.py``.

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline uint64_t kemu_mix64(uint64_t x) {
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
        return x ^ (x >> 31);
    }
    /* multiplicative hashing: the high half of the products mixes every key bit */
    static inline uint64_t kemu_hkey(uint64_t k0, uint64_t k1) {
        return ((k0 * 0x9E3779B97F4A7C15ULL) ^ (k1 * 0xC2B2AE3D27D4EB4FULL)) >> 32;
    }
    #define KEMU_OCC 0x8000000000000000ULL
    #include <stdlib.h>
    #include <sys/mman.h>
    /* zeroed memory for a table; from 2 MiB on in transparent huge pages where the
       kernel has them (THP "madvise" mode): random lookups in tables of tens of MiB
       otherwise miss the TLB as often as the caches. Freed with free(). */
    static void* kemu_zalloc(size_t n, size_t size) {
        size_t bytes = n * size;
        void* p = NULL;
        if (bytes < ((size_t)1 << 21)) return calloc(n ? n : 1, size);
        if (posix_memalign(&p, (size_t)1 << 21, bytes)) return NULL;
    #ifdef MADV_HUGEPAGE
        madvise(p, bytes, MADV_HUGEPAGE);
    #endif
        memset(p, 0, bytes);
        return p;
    }
    #define kemu_prefetch(p) __builtin_prefetch(p)
    /* big-endian loads and stores at any alignment (one load and a byte swap) */
    static inline uint32_t kemu_rd16(const uint8_t* p) {
        uint16_t v; memcpy(&v, p, 2); return __builtin_bswap16(v);
    }
    static inline uint32_t kemu_rd32(const uint8_t* p) {
        uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v);
    }
    static inline void kemu_wr16(uint8_t* p, uint64_t v) {
        uint16_t w = __builtin_bswap16((uint16_t)v); memcpy(p, &w, 2);
    }
    static inline void kemu_wr32(uint8_t* p, uint64_t v) {
        uint32_t w = __builtin_bswap32((uint32_t)v); memcpy(p, &w, 4);
    }
    /* memcpy for frames: small ones (most) with a few overlapping 16-byte moves inline */
    static inline void kemu_copy(uint8_t* d, const uint8_t* s, size_t n) {
        if (n >= 16 && n <= 64) {
            uint8_t t[16];
            size_t i;
            for (i = 0; i + 16 < n; i += 16) { memcpy(t, s + i, 16); memcpy(d + i, t, 16); }
            memcpy(t, s + n - 16, 16); memcpy(d + n - 16, t, 16);
        } else {
            memcpy(d, s, n);
        }
    }
    /* the one's-complement sum of n bytes (n a multiple of 4) folded to 16 bits, in
       native byte order: 0xFFFF exactly when the big-endian sum is 0xFFFF too */
    static inline uint32_t kemu_sum_words(const uint8_t* p, int n) {
        uint64_t s = 0; uint32_t w; int i = 0;
        if (n >= 20) {  /* the usual header, unrolled */
            uint32_t a, b, c, d, e;
            memcpy(&a, p, 4); memcpy(&b, p + 4, 4); memcpy(&c, p + 8, 4);
            memcpy(&d, p + 12, 4); memcpy(&e, p + 16, 4);
            s = (uint64_t)a + b + c + d + e;
            i = 20;
        }
        for (; i < n; i += 4) { memcpy(&w, p + i, 4); s += w; }
        s = (s & 0xFFFFFFFFULL) + (s >> 32);
        s = (s & 0xFFFFFFFFULL) + (s >> 32);
        s = (s & 0xFFFF) + (s >> 16);
        s = (s & 0xFFFF) + (s >> 16);
        return (uint32_t)((s & 0xFFFF) + (s >> 16));
    }
    """
    uint64_t kemu_mix64(uint64_t x) noexcept nogil
    uint64_t kemu_hkey(uint64_t k0, uint64_t k1) noexcept nogil
    uint64_t KEMU_OCC
    void* kemu_zalloc(size_t n, size_t size) noexcept nogil
    void kemu_prefetch(const void* p) noexcept nogil
    uint32_t kemu_rd16(const uint8_t* p) noexcept nogil
    uint32_t kemu_rd32(const uint8_t* p) noexcept nogil
    void kemu_wr16(uint8_t* p, uint64_t v) noexcept nogil
    void kemu_wr32(uint8_t* p, uint64_t v) noexcept nogil
    uint32_t kemu_sum_words(const uint8_t* p, int n) noexcept nogil
    void kemu_copy(uint8_t* d, const uint8_t* s, size_t n) noexcept nogil


cdef inline uint32_t rd16(const uint8_t* d, Py_ssize_t o) noexcept nogil:
    return kemu_rd16(d + o)


cdef inline uint32_t rd32(const uint8_t* d, Py_ssize_t o) noexcept nogil:
    return kemu_rd32(d + o)


cdef inline uint64_t rd48(const uint8_t* d, Py_ssize_t o) noexcept nogil:
    return (<uint64_t>rd16(d, o) << 32) | rd32(d, o + 2)


cdef inline void wr16(uint8_t* d, Py_ssize_t o, uint64_t v) noexcept nogil:
    kemu_wr16(d + o, v)


cdef inline void wr32(uint8_t* d, Py_ssize_t o, uint64_t v) noexcept nogil:
    kemu_wr32(d + o, v)


cdef inline void wr48(uint8_t* d, Py_ssize_t o, uint64_t v) noexcept nogil:
    wr16(d, o, v >> 32)
    wr32(d, o + 2, v)


cdef inline bint is_mcast(uint64_t mac) noexcept nogil:
    return (mac >> 40) & 1


cdef inline uint32_t csum_fold(uint64_t s) noexcept nogil:
    """The one's-complement fold of a sum below 2^32 (two folds always suffice there)."""
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return <uint32_t>s


cdef inline uint32_t csum_replace16(uint32_t check, uint32_t old, uint64_t new) noexcept nogil:
    """RFC 1624 eqn. 3, as ``packet.csum_replace16`` (``new`` below 2^31, unmasked there)."""
    return ~csum_fold((~check & 0xFFFF) + (~old & 0xFFFF) + new) & 0xFFFF


cdef inline uint32_t csum_replace32(uint32_t check, uint32_t old, uint32_t new) noexcept nogil:
    """Two ``csum_replace16`` in one sum: one's-complement addition is associative (and a
    fold yields 0 only for an all-zero sum, in both forms)."""
    return ~csum_fold((~check & 0xFFFF) + (~old >> 16) + (~old & 0xFFFF) + (new >> 16)
                      + (new & 0xFFFF)) & 0xFFFF


cdef inline uint32_t ip_checksum(const uint8_t* b, Py_ssize_t o, Py_ssize_t n) noexcept nogil:
    cdef uint64_t s = 0
    cdef Py_ssize_t i = o
    while i < o + n - 1:
        s += (<uint32_t>b[i] << 8) | b[i + 1]
        i += 2
    if n & 1:
        s += <uint32_t>b[o + n - 1] << 8
    return ~csum_fold(s) & 0xFFFF


cdef inline uint64_t flow_hash(uint64_t seed, int64_t node, uint64_t proto, uint64_t sip,
                               uint64_t sport, uint64_t dip, uint64_t dport) noexcept nogil:
    cdef uint64_t h = kemu_mix64(seed ^ <uint64_t>(node + 1))
    h = kemu_mix64(h ^ ((sip << 32) | dip))
    return kemu_mix64(h ^ ((proto << 32) | (sport << 16) | dport))


def mix64(x: int) -> int:
    """splitmix64's finalizer (``packet.mix64``), exposed for tests."""
    return kemu_mix64(<uint64_t>(x & 0xFFFFFFFFFFFFFFFF))


def py_flow_hash(seed: int, node: int, proto: int, sip: int, sport: int, dip: int,
                 dport: int) -> int:
    """``packet.flow_hash`` on uint64_t, exposed for tests."""
    return flow_hash(<uint64_t>(seed & 0xFFFFFFFFFFFFFFFF), node, proto, sip, sport, dip,
                     dport)
