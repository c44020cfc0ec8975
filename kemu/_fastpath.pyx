# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The Cython datapath: the same API and the same results, byte for byte, as
``kemu.dataplane.reference`` (the oracle; read it for the semantics of every stage).

What lives here and how it is laid out:

- ``Lpm``: DIR-24-8 after DPDK's rte_lpm. A 2^24-entry first-level table (``tbl24``, calloc'd
  on the first route longer than /0, so start-up stays cheap) of packed 32-bit entries
  ``next_hop (24 bits) | VALID | EXT | depth << 26``; an ``EXT`` entry holds a 24-bit index of
  a 256-entry second-level group (``tbl8``), allocated on demand and recycled when a delete
  leaves it uniform. The rules (RIB) are kept in a hash table so that a delete can re-expand
  the next-longest covering rule, as rte_lpm's delete does. The /0 route is not expanded: an
  invalid entry falls back to it at lookup.
- ``Datapath``: the packet path of ``reference.Datapath`` on C structs. FDB, neighbour,
  affinity and frontend tables are open-addressing hash tables (power-of-two capacity, linear
  probing, backward-shift deletion, growing at 70 % load). Conntrack entries (both tuples,
  NAT, state, expiry) are 64-byte, cache-line aligned records in a pool; the conntrack index
  holds 8-byte slots ``hash << 32 | entry * 2 + is_reply + 1`` (a key is the entry's tuple of
  that direction), so a lookup reads one small slot and the entry it needs anyway. The
  reference keeps a deleted ``CtEntry`` alive while a frame copy still holds it (and may even
  re-insert it): an entry here is freed only at the end of the frame in which its last slot
  went away.
- Each input frame is copied into a buffer with headroom (VXLAN prepends 50 bytes in place);
  floods fork copies onto a LIFO work stack in the reference's order. Per-copy state
  (``Item`` with its ``Ctx`` and pending events) is a C struct, worked on in place at the top
  of the stack; a stage hands the copy to the next one by a direct call (``go_*``), which is
  what popping it again from the LIFO stack would do. Rare work (new flows, ICMP errors,
  masquerade, floods, VXLAN, L2 fix-up) is called through a table of pointers so that it stays
  out of the common path.
- Tables grow linearly with the cluster: routes are resolved per node at lookup from one
  shared table (own pod CIDR: the bridge; another node's: VTEP or eth0 to it; R-1, OV-2,
  OV-4); the static neighbours of the node network (node addresses, VTEPs, external hosts,
  the gateway: known to every node but their own) are kept once per address (``nshared``),
  a node's own entries (pods, API writes, cached headers) in ``neigh`` take precedence;
  ``state()`` still lists every node's entries as the reference holds them.
- Speed without changing results: a passed ``ip_rcv`` check is remembered while the header
  only changes by checksum-preserving rewrites; the conntrack slots and entries of the frames
  a few places ahead in the batch are prefetched; the entry a copy met at its next node is
  remembered per entry and direction (``ce_hint``, checked exactly before use, so a frame
  crossing two nodes probes the index once); with large tables (more than
  ``track_ifaces`` interfaces) each entry also keeps the addresses its flow's last frame
  looked up (``ce_touch``), prefetched for the flow's next frame. Tables of 2 MiB and more
  are allocated in transparent huge pages where the kernel allows it.

- The flow cache (``fc_try``): with recording off, a frame of an established flow whose path
  was cached (its FDB refreshes, conntrack entries and outcome) replays that path's effects
  without the stages, as Linux's netfilter flowtable does for established connections. The
  key holds every frame field the path's decisions read; the path holds while the FDB and
  neighbour tables are unchanged, its conntrack entries keep their incarnation and have not
  expired, its FDB entries have not aged and the TTL outlasts its routing hops. Anything
  else (new flows, floods, ICMP, VXLAN, outcomes that keep the frame) takes the stages.
  ``_set_flow_cache(False)`` turns it off for new Datapaths (benchmarks, tests).

Numbers come from ``kemu.dataplane.codes`` (and the conntrack timeouts from the reference) as
compile-time constants, checked against those modules at import. The inner functions hold no
Python objects and run without the GIL; ``process`` takes the raw data of the caller's numpy
arrays, re-acquired on every call (``Results.grow`` replaces them), and writes the counters
back on return.
"""

from libc.stdint cimport (int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t, uintptr_t)
from libc.stdlib cimport calloc, free, malloc, realloc

cdef extern from "<stdlib.h>" nogil:
    void* aligned_alloc(size_t alignment, size_t size)
from libc.string cimport memcpy, memset

cimport numpy as cnp

import numpy as np

from kemu.dataplane import codes as _C
from kemu.dataplane import packet as _P
from kemu.dataplane import reference as _R

cnp.import_array()

# ------------------------------------------------------------------ constants
cdef enum:  # compile-time constants (the C compiler folds and combines them), with the
            # values of kemu.dataplane.codes, .packet and .reference, which stay their one
            # definition: _check_codes() refuses to import a build that disagrees
    IF_POD_ETH = 1
    IF_POD_LO = 2
    IF_VETH = 3
    IF_BRIDGE = 4
    IF_NODE_ETH = 5
    IF_VTEP = 6
    IF_EXT_ETH = 7
    IF_GW_ETH = 8
    IF_NODE_LOCAL = 9
    DIR_IN = 1
    DIR_OUT = 2
    INJ_TX = 0
    INJ_TX_FIXL2 = 1
    INJ_RX = 2
    OUT_DELIVERED = 1
    OUT_DROPPED = 2
    OUT_LEFT = 3
    OUT_NEIGH = 4
    DROP_TOO_SHORT = 1
    DROP_UNKNOWN_ETHERTYPE = 2
    DROP_BAD_IP_HEADER = 3
    DROP_BAD_IP_CSUM = 4
    DROP_OTHERHOST = 5
    DROP_TTL_EXCEEDED = 6
    DROP_NO_ROUTE = 7
    DROP_REJECT_NO_ENDPOINTS = 8
    DROP_NO_LOCAL_ENDPOINTS = 9
    DROP_SAME_PORT = 10
    DROP_IPV6 = 11
    DROP_NOT_LOCAL = 12
    DROP_HOP_LIMIT = 13
    DROP_FRAGMENT = 14
    DROP_MARTIAN = 15
    EV_BR_FDB = 1
    EV_BR_FLOOD = 2
    EV_BR_LOCAL = 3
    EV_ROUTE = 4
    EV_DNAT = 5
    EV_SNAT = 6
    EV_UNDNAT = 7
    EV_UNSNAT = 8
    EV_CT_REUSE = 9
    EV_DELIVER = 10
    EV_DROP = 11
    EV_LEFT = 12
    EV_BRIDGED_DNAT = 13
    EV_ENCAP = 14
    EV_DECAP = 15
    EV_AFFINITY = 16
    EV_LOCAL_ROUTE = 17
    EV_NEIGH_MISS = 18
    EV_FIXL2 = 19
    EV_TTL = 20
    EV_NODE_INPUT = 21
    RT_POD_CIDR = 1
    RT_NODE_NET = 2
    FE_CLUSTER_IP = 1
    FE_NODE_PORT = 4
    SP_AFFINITY = 1
    SP_ITP_LOCAL = 2
    SP_ETP_LOCAL = 4
    CT_DNAT = 1
    CT_SNAT = 2
    CT_REPLIED = 4
    PROTO_ICMP = 1
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_SCTP = 132
    MAX_HOPS = 64
    VXLAN_PORT = 8472
    VXLAN_VNI = 1
    ETH_IP = 2048
    ETH_ARP = 2054
    ETH_IPV6 = 34525
    CT_NONE = 0
    CT_SYN_SENT = 1
    CT_SYN_RECV = 2
    CT_ESTABLISHED = 3
    CT_FIN = 4
    CT_CLOSE = 5
    CT_UDP = 6
    CT_ICMP = 7

_CODES = (
    ('IF_POD_ETH', IF_POD_ETH, _C),
    ('IF_POD_LO', IF_POD_LO, _C),
    ('IF_VETH', IF_VETH, _C),
    ('IF_BRIDGE', IF_BRIDGE, _C),
    ('IF_NODE_ETH', IF_NODE_ETH, _C),
    ('IF_VTEP', IF_VTEP, _C),
    ('IF_EXT_ETH', IF_EXT_ETH, _C),
    ('IF_GW_ETH', IF_GW_ETH, _C),
    ('IF_NODE_LOCAL', IF_NODE_LOCAL, _C),
    ('DIR_IN', DIR_IN, _C),
    ('DIR_OUT', DIR_OUT, _C),
    ('INJ_TX', INJ_TX, _C),
    ('INJ_TX_FIXL2', INJ_TX_FIXL2, _C),
    ('INJ_RX', INJ_RX, _C),
    ('OUT_DELIVERED', OUT_DELIVERED, _C),
    ('OUT_DROPPED', OUT_DROPPED, _C),
    ('OUT_LEFT', OUT_LEFT, _C),
    ('OUT_NEIGH', OUT_NEIGH, _C),
    ('DROP_TOO_SHORT', DROP_TOO_SHORT, _C),
    ('DROP_UNKNOWN_ETHERTYPE', DROP_UNKNOWN_ETHERTYPE, _C),
    ('DROP_BAD_IP_HEADER', DROP_BAD_IP_HEADER, _C),
    ('DROP_BAD_IP_CSUM', DROP_BAD_IP_CSUM, _C),
    ('DROP_OTHERHOST', DROP_OTHERHOST, _C),
    ('DROP_TTL_EXCEEDED', DROP_TTL_EXCEEDED, _C),
    ('DROP_NO_ROUTE', DROP_NO_ROUTE, _C),
    ('DROP_REJECT_NO_ENDPOINTS', DROP_REJECT_NO_ENDPOINTS, _C),
    ('DROP_NO_LOCAL_ENDPOINTS', DROP_NO_LOCAL_ENDPOINTS, _C),
    ('DROP_SAME_PORT', DROP_SAME_PORT, _C),
    ('DROP_IPV6', DROP_IPV6, _C),
    ('DROP_NOT_LOCAL', DROP_NOT_LOCAL, _C),
    ('DROP_HOP_LIMIT', DROP_HOP_LIMIT, _C),
    ('DROP_FRAGMENT', DROP_FRAGMENT, _C),
    ('DROP_MARTIAN', DROP_MARTIAN, _C),
    ('EV_BR_FDB', EV_BR_FDB, _C),
    ('EV_BR_FLOOD', EV_BR_FLOOD, _C),
    ('EV_BR_LOCAL', EV_BR_LOCAL, _C),
    ('EV_ROUTE', EV_ROUTE, _C),
    ('EV_DNAT', EV_DNAT, _C),
    ('EV_SNAT', EV_SNAT, _C),
    ('EV_UNDNAT', EV_UNDNAT, _C),
    ('EV_UNSNAT', EV_UNSNAT, _C),
    ('EV_CT_REUSE', EV_CT_REUSE, _C),
    ('EV_DELIVER', EV_DELIVER, _C),
    ('EV_DROP', EV_DROP, _C),
    ('EV_LEFT', EV_LEFT, _C),
    ('EV_BRIDGED_DNAT', EV_BRIDGED_DNAT, _C),
    ('EV_ENCAP', EV_ENCAP, _C),
    ('EV_DECAP', EV_DECAP, _C),
    ('EV_AFFINITY', EV_AFFINITY, _C),
    ('EV_LOCAL_ROUTE', EV_LOCAL_ROUTE, _C),
    ('EV_NEIGH_MISS', EV_NEIGH_MISS, _C),
    ('EV_FIXL2', EV_FIXL2, _C),
    ('EV_TTL', EV_TTL, _C),
    ('EV_NODE_INPUT', EV_NODE_INPUT, _C),
    ('RT_POD_CIDR', RT_POD_CIDR, _C),
    ('RT_NODE_NET', RT_NODE_NET, _C),
    ('FE_CLUSTER_IP', FE_CLUSTER_IP, _C),
    ('FE_NODE_PORT', FE_NODE_PORT, _C),
    ('SP_AFFINITY', SP_AFFINITY, _C),
    ('SP_ITP_LOCAL', SP_ITP_LOCAL, _C),
    ('SP_ETP_LOCAL', SP_ETP_LOCAL, _C),
    ('CT_DNAT', CT_DNAT, _C),
    ('CT_SNAT', CT_SNAT, _C),
    ('CT_REPLIED', CT_REPLIED, _C),
    ('PROTO_ICMP', PROTO_ICMP, _C),
    ('PROTO_TCP', PROTO_TCP, _C),
    ('PROTO_UDP', PROTO_UDP, _C),
    ('PROTO_SCTP', PROTO_SCTP, _C),
    ('MAX_HOPS', MAX_HOPS, _C),
    ('VXLAN_PORT', VXLAN_PORT, _C),
    ('VXLAN_VNI', VXLAN_VNI, _C),
    ('ETH_IP', ETH_IP, _P),
    ('ETH_ARP', ETH_ARP, _P),
    ('ETH_IPV6', ETH_IPV6, _P),
    ('CT_NONE', CT_NONE, _R),
    ('CT_SYN_SENT', CT_SYN_SENT, _R),
    ('CT_SYN_RECV', CT_SYN_RECV, _R),
    ('CT_ESTABLISHED', CT_ESTABLISHED, _R),
    ('CT_FIN', CT_FIN, _R),
    ('CT_CLOSE', CT_CLOSE, _R),
    ('CT_UDP', CT_UDP, _R),
    ('CT_ICMP', CT_ICMP, _R),
)


def _check_codes() -> None:
    """The enum above against the Python definitions (one source of the numbers)."""
    for name, value, module in _CODES:
        if getattr(module, name) != value:
            raise ImportError(f"kemu._fastpath was built with {name} = {value}, but "
                              f"{module.__name__} says {getattr(module, name)}: rebuild it")


_check_codes()

cdef uint64_t BROADCAST = _P.BROADCAST
# conntrack states and timeouts (defined once, in the reference)
cdef int N_TCP_TIMEOUTS = len(_R.TCP_TIMEOUTS)
cdef int64_t TCP_TIMEOUT_NS[16]
for _i, _v in enumerate(_R.TCP_TIMEOUTS[:16]):
    TCP_TIMEOUT_NS[_i] = _v * _R.NS
cdef int64_t UDP_TIMEOUT_NS = _R.UDP_TIMEOUT * _R.NS
cdef int64_t UDP_STREAM_TIMEOUT_NS = _R.UDP_STREAM_TIMEOUT * _R.NS
cdef int64_t ICMP_TIMEOUT_NS = _R.ICMP_TIMEOUT * _R.NS
cdef int64_t OTHER_TIMEOUT_NS = _R.OTHER_TIMEOUT * _R.NS

cdef enum:
    S_TX = 0            # work-stack stages (private to each implementation)
    S_RX = 1
    S_BRIDGE_IN = 2
    S_BRIDGE_OUT = 3
    S_NODE_IN = 4
    S_LOCAL_OUT = 5
    NPEND = 32          # pending events of one copy between two hops (at most ~8 happen)
    FC_N = 4            # FDB refreshes, FDB lookups and conntrack entries per cached path
    FC_BITS = 16        # flow cache entries: 2^16 (8 MiB, allocated on first use)
    NTOUCH = 16         # table records a frame's lookups touched, kept with its flow
    HEADROOM = 128      # bytes before a frame copy: VXLAN prepends 50 in place
    MIN_BUF = 2048

cdef enum:              # error flags raised after a batch (never expected)
    ERR_NOMEM = 1
    ERR_RESULTS = 2
    ERR_PEND = 4

# ------------------------------------------------------------------ small C helpers
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


# ------------------------------------------------------------------ open-addressing hash table
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


# ------------------------------------------------------------------ LPM (DIR-24-8)
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



# ------------------------------------------------------------------ datapath structs
ctypedef struct IfInfo:          # one interface, direct-indexed by id
    int64_t mac
    uint32_t ip
    int32_t kind
    int32_t node
    int32_t peer
    int32_t bridge
    int32_t hairpin

ctypedef struct NShared:         # a node-network neighbour every node knows (but its own)
    int64_t mac                  # the last seeded address, from node ``node``: every other
    int64_t mac2                 # node has ``mac``; node ``node`` itself has ``mac2`` (the
    int32_t node                 # last one seeded from another node) when ``has2``
    int32_t node2
    int32_t has2

ctypedef struct Tup:             # one direction of a conntrack entry (protocol apart)
    uint32_t sip
    uint32_t dip
    uint16_t sport
    uint16_t dport

ctypedef struct CtE:             # reference.CtEntry, in one 64-byte cache line
    Tup t[2]                     # [0] the original tuple, [1] the reply tuple
    int64_t expires
    uint32_t dnat_ip
    uint32_t snat_ip
    int32_t node
    int32_t sp                   # (a free entry: the next free one)
    int32_t be
    uint16_t dnat_port
    uint16_t snat_port
    uint8_t proto[2]
    uint8_t flags
    uint8_t state
    uint8_t masq
    uint8_t zombie               # queued for freeing at the end of the frame
    uint8_t keys                 # bit d: the index slot of tuple d names (this entry, d)

ctypedef struct CtTab:           # conntrack index: (node, tuple) -> (entry, direction)
    uint64_t* s                  # hash << 32 | (entry * 2 + is_reply + 1); 0: empty
    uint64_t mask
    int64_t n

ctypedef struct Ctx:             # reference.Ctx
    int32_t node
    int32_t ct
    int32_t verdict
    int32_t verdict_sp
    int32_t related              # an ICMP error's flow (entry), for the un-DNAT at POSTROUTING
    uint8_t reply_dir
    uint8_t new
    uint8_t pre_done

ctypedef struct Ev:
    int64_t kind
    int64_t a
    int64_t b
    int64_t c

ctypedef struct Item:            # reference.Item: one copy of a frame on the work stack
    uint8_t* mem
    int32_t cap
    int32_t off
    int32_t len
    int32_t stage
    int32_t a
    int32_t b
    Ctx ctx
    int32_t hops
    int32_t last_hop
    int64_t snap_off
    int32_t snap_len
    int32_t flood
    int32_t ip_ok                # ip_rcv's checks passed and the header changed only by
                                 # checksum-preserving rewrites since (reset with the data)
    int32_t ct_prev              # entry * 2 + d of this copy's last conntrack hit, -1
    int32_t npend
    Ev pend[NPEND]

ctypedef struct Buf:
    uint8_t* mem
    int32_t cap

ctypedef struct FcKey:           # a frame's flow cache key, worked out ahead (prefetch_flows)
    uint64_t key[4]
    uint64_t idx
    int32_t ttl
    int32_t ok                   # the frame is one the flow cache can hold (fc_parse)

ctypedef struct FcE:             # a cached path of an established flow: two cache lines
    uint64_t key[4]              # what the path's decisions read of the frame (fc_parse)
    uint64_t gen                 # fc_gen() when cached; the path holds while it is unchanged
    int64_t out_a                # the outcome
    int32_t out_iface
    int16_t out_reason
    uint8_t out_kind
    uint8_t ttl_k                # routing hops on the path (each decrements the TTL)
    uint8_t n_learn
    uint8_t n_check
    uint8_t n_ct
    uint8_t pad[5]
    int32_t learn[FC_N]          # FDB slots the path refreshes (seen = now; port unchanged)
    int32_t check[FC_N]          # FDB slots the path forwards by (must not have aged)
    int32_t ct[FC_N]             # conntrack entry * 2 + is_reply, in path order
    uint32_t inc[FC_N]           # ... and the entries' incarnations (ce_inc)

ctypedef struct DP:
    # ---- tables (pointers into arrays owned by the Python object)
    int32_t n_if
    int32_t n_nodes
    int32_t n_br
    int32_t n_rt
    int32_t n_sp
    IfInfo* ifs
    const int32_t* br_local_if
    const int32_t* br_netfilter
    const int32_t* br_port_start
    const int32_t* br_port_count
    const int32_t* br_ports
    const int32_t* node_eth_if
    const int32_t* node_br_if
    const int32_t* node_vtep_if
    const int32_t* node_local_if
    const uint32_t* node_ip
    const uint32_t* node_br_ip
    const uint32_t* node_pod_mask
    const int32_t* lip_n          # local addresses per node (reference local_ips)
    const uint32_t* lip_ip
    const int32_t* lip_if
    const uint64_t* lip_bloom     # per node: bit lip_bit(ip) set for each local address
    int32_t lip_k
    const int32_t* rt_kind        # per route: codes.RT_*, resolved per node (_route_dev)
    const int32_t* rt_owner       # the node owning a pod CIDR, -1
    const uint32_t* rt_nh         # the next hop from any node that does not own it
    LpmC* lpm
    HTab fe
    HTab fe_np
    HTab own                      # ip -> the interface owning it (Tables.owner_of)
    const int32_t* fe_sp
    const int32_t* fe_kind
    const int32_t* sp_flags
    const int64_t* sp_aff_ns
    const int32_t* sp_be_start
    const int32_t* sp_be_count
    const uint32_t* be_ip
    const int32_t* be_port
    const int32_t* be_node
    const uint32_t* own_ip
    const int32_t* own_if
    int64_t n_own
    int32_t* cands
    uint32_t node_net_prefix
    uint32_t node_net_mask
    uint32_t gateway_ip
    int32_t gateway_if
    uint32_t cnet
    uint32_t cmask
    bint vxlan
    int64_t ageing_ns
    uint64_t seed
    # ---- mutable state
    CtTab ct                      # (node, tuple) -> entry * 2 + is_reply
    HTab fdb                      # (mac, bridge) -> (port, seen)
    HTab neigh                    # (ip, node) -> (mac, header cached: reference neigh_hh)
    HTab nshared                  # ip -> index into ``sh``: entries of every node (those
    NShared* sh                   #   in ``neigh`` take precedence), header not cached
    int64_t n_sh
    int64_t sh_cap
    int32_t sh_nodes              # the nodes the shared entries are for: 0..sh_nodes-1
    HTab aff                      # (sip, node << 32 | sp) -> (ip << 16 | port, last)
    CtE* ce
    int32_t* ce_hint              # [entry * 2 + d]: the entry * 2 + d the same copy met
                                  # next (at the next node), -1; a guess checked on use
    void** ce_touch               # [entry * NTOUCH + k]: what the last frame of the flow
                                  # looked up (interfaces, FDB and neighbour slots), to
                                  # prefetch for the next one (addresses only: never read);
                                  # allocated (ce_cap records) while ``track`` only
    int32_t ce_cap
    int32_t ce_used
    int32_t ce_free
    int32_t* zombies
    int32_t n_zombies
    int32_t zombies_cap
    bint track                    # keep ce_touch: the tables outgrow the caches
    uint32_t* ce_inc              # [entry]: incarnation, bumped on allocation and whenever
                                  # the entry loses an index key (cached paths check it)
    # ---- the flow cache (fc_try): established flows' paths, replayed without the stages
    FcE* fc
    bint fc_on                    # enabled, and not recording (hops need the stages)
    int64_t fc_hits               # frames run by their cached path
    uint64_t fc_bump              # explicit invalidations: API writes, a MAC that moved, a
                                  # neighbour header cached (see fc_gen)
    bint tr_ok                    # the current frame's path so far is one fc can hold
    uint64_t tr_gen
    uint64_t tr_idx
    uint64_t tr_key[4]
    const uint8_t* tr_frame       # the input frame (valid until the frame is done)
    int32_t tr_nl
    int32_t tr_nc
    int32_t tr_nct
    int32_t tr_k
    int32_t tr_nout
    int32_t tr_learn[FC_N]
    int32_t tr_check[FC_N]
    int32_t tr_ct[FC_N]
    uint32_t tr_inc[FC_N]
    int32_t tr_out_kind
    int32_t tr_out_reason
    int32_t tr_out_iface
    int64_t tr_out_a
    # ---- per batch
    void* touch[NTOUCH]           # the current frame's lookups (ce_touch)
    int32_t n_touch
    int32_t first_ct              # the current frame's first conntrack entry, -1
    int64_t now
    int32_t fi
    bint record
    int err
    Item* stack
    int32_t sp
    int32_t stack_cap
    Buf* pool
    int32_t n_pool
    int32_t pool_cap
    # ---- results (re-acquired on every process call)
    int32_t* hop_frame
    int32_t* hop_iface
    uint8_t* hop_dir
    int64_t* hop_off
    int32_t* hop_len
    int64_t hop_cap
    int32_t* ev_frame
    int32_t* ev_hop
    int16_t* ev_kind
    int64_t* ev_a
    int64_t* ev_b
    int64_t* ev_c
    int64_t ev_cap
    int32_t* oc_frame
    uint8_t* oc_kind
    int16_t* oc_reason
    int32_t* oc_iface
    int32_t* oc_hop
    int64_t* oc_a
    int64_t* oc_off
    int32_t* oc_len
    int64_t oc_cap
    uint8_t* arena
    int64_t arena_cap
    int64_t n_hops
    int64_t n_events
    int64_t n_oc
    int64_t arena_used


# ------------------------------------------------------------------ buffers and the work stack
cdef inline uint8_t* DATA(Item* it) noexcept nogil:
    return it.mem + it.off


cdef inline int buf_get(DP* dp, int32_t need, Buf* out) noexcept nogil:
    cdef Buf b
    if need < MIN_BUF:
        need = MIN_BUF
    if dp.n_pool:
        dp.n_pool -= 1
        b = dp.pool[dp.n_pool]
        if b.cap >= need:
            out[0] = b
            return 0
        free(b.mem)
    b.mem = <uint8_t*>malloc(need)
    b.cap = need
    if b.mem == NULL:
        dp.err |= ERR_NOMEM
        return -1
    out[0] = b
    return 0


cdef inline void buf_put(DP* dp, uint8_t* mem, int32_t cap) noexcept nogil:
    cdef Buf* p
    if mem == NULL:
        return
    if dp.n_pool == dp.pool_cap:
        p = <Buf*>realloc(dp.pool, (dp.pool_cap * 2 + 8) * sizeof(Buf))
        if p == NULL:
            free(mem)
            return
        dp.pool = p
        dp.pool_cap = dp.pool_cap * 2 + 8
    dp.pool[dp.n_pool].mem = mem
    dp.pool[dp.n_pool].cap = cap
    dp.n_pool += 1


cdef inline Item* push_slot(DP* dp) noexcept nogil:
    """A new top-of-stack slot (the stack may move: re-fetch item pointers after this)."""
    cdef Item* s
    if dp.sp == dp.stack_cap:
        s = <Item*>realloc(dp.stack, (dp.stack_cap * 2 + 8) * sizeof(Item))
        if s == NULL:
            dp.err |= ERR_NOMEM
            return NULL
        dp.stack = s
        dp.stack_cap = dp.stack_cap * 2 + 8
    dp.sp += 1
    return &dp.stack[dp.sp - 1]


cdef Ctx CTX_NONE                 # reference Ctx(): a fresh context
CTX_NONE.node = -1
CTX_NONE.ct = -1
CTX_NONE.verdict = 0
CTX_NONE.verdict_sp = -1
CTX_NONE.related = -1
CTX_NONE.reply_dir = 0
CTX_NONE.new = 0
CTX_NONE.pre_done = 0


cdef inline void ctx_reset(Ctx* c) noexcept nogil:
    c[0] = CTX_NONE


cdef Item* fork(DP* dp, const Item* src, int stage, int a, int b) noexcept nogil:
    """reference Item.fork: a full copy (bytes, context, snapshot, pending events)."""
    cdef Buf buf
    if buf_get(dp, src.len + HEADROOM, &buf) < 0:
        return NULL
    cdef Item* it = push_slot(dp)
    if it == NULL:
        buf_put(dp, buf.mem, buf.cap)
        return NULL
    memcpy(it, src, sizeof(Item) - sizeof(Ev) * (NPEND - src.npend))
    it.mem = buf.mem
    it.cap = buf.cap
    it.off = HEADROOM
    memcpy(it.mem + HEADROOM, src.mem + src.off, src.len)
    it.stage = stage
    it.a = a
    it.b = b
    return it


# ------------------------------------------------------------------ recording
cdef inline void emit(DP* dp, int64_t hop, int64_t kind, int64_t a, int64_t b,
                      int64_t c) noexcept nogil:
    cdef int64_t e = dp.n_events
    if e >= dp.ev_cap:
        dp.err |= ERR_RESULTS
        return
    dp.ev_frame[e] = dp.fi
    dp.ev_hop[e] = <int32_t>hop
    dp.ev_kind[e] = <int16_t>kind
    dp.ev_a[e] = a
    dp.ev_b[e] = b
    dp.ev_c[e] = c
    dp.n_events = e + 1


cdef inline void ev(DP* dp, Item* it, int64_t kind, int64_t a, int64_t b,
                    int64_t c) noexcept nogil:
    if not dp.record:
        return
    if it.npend == NPEND:
        dp.err |= ERR_PEND
        return
    cdef Ev* p = &it.pend[it.npend]
    p.kind = kind
    p.a = a
    p.b = b
    p.c = c
    it.npend += 1


cdef inline bint arena_put(DP* dp, Item* it, int64_t* off) noexcept nogil:
    cdef int64_t n = it.len
    if dp.arena_used + n > dp.arena_cap:
        dp.err |= ERR_RESULTS
        return False
    kemu_copy(dp.arena + dp.arena_used, DATA(it), n)
    off[0] = dp.arena_used
    dp.arena_used += (n + 7) & ~7
    return True


cdef inline void hop(DP* dp, Item* it, int iface, int direction) noexcept nogil:
    it.hops += 1
    if not dp.record:
        return
    cdef int64_t h = dp.n_hops
    cdef int k
    if h >= dp.hop_cap:
        dp.err |= ERR_RESULTS
        return
    if it.snap_off < 0:
        if not arena_put(dp, it, &it.snap_off):
            return
        it.snap_len = it.len
    dp.hop_frame[h] = dp.fi
    dp.hop_iface[h] = iface
    dp.hop_dir[h] = direction
    dp.hop_off[h] = it.snap_off
    dp.hop_len[h] = it.snap_len
    dp.n_hops = h + 1
    it.last_hop = <int32_t>h
    for k in range(it.npend):
        emit(dp, h, it.pend[k].kind, it.pend[k].a, it.pend[k].b, it.pend[k].c)
    it.npend = 0


cdef inline void touched(DP* dp, const void* p) noexcept nogil:
    cdef int n = dp.n_touch
    if dp.track and n < NTOUCH and not (
            n and (<uintptr_t>dp.touch[n - 1]) >> 6 == (<uintptr_t>p) >> 6):
        dp.touch[n] = <void*>p
        dp.n_touch = n + 1


cdef inline void touched_slot(DP* dp, const HTab* t, uint64_t k0, uint64_t k1,
                              const HSlot* s) noexcept nogil:
    """A hash lookup: where its probe started, and the slot it found."""
    if dp.track:
        touched(dp, &t.s[kemu_hkey(k0, k1 | KEMU_OCC) & t.mask])
        touched(dp, s)


cdef inline void changed(Item* it) noexcept nogil:
    it.snap_off = -1


# ---- what a frame's path reads and changes, for the flow cache (fc_try, fc_insert)
cdef inline uint64_t fc_gen(const DP* dp) noexcept nogil:
    """Changes to the tables a cached path depends on besides conntrack (which is checked
    entry by entry): FDB, neighbours, explicit invalidations. Each counter only grows."""
    return dp.fdb.changes + dp.neigh.changes + dp.nshared.changes + dp.fc_bump


cdef inline void tr_fdb(DP* dp, int32_t* slots, int32_t* n, const HSlot* s) noexcept nogil:
    """Trace an FDB slot the path refreshes (``dp.tr_learn``/``tr_nl``) or forwards by
    (``dp.tr_check``/``tr_nc``); a path touching more than FC_N of either is not cached."""
    if dp.tr_ok:
        if n[0] == FC_N:
            dp.tr_ok = 0
        else:
            slots[n[0]] = <int32_t>(s - dp.fdb.s)
            n[0] += 1


cdef inline void tr_ct(DP* dp, int val) noexcept nogil:
    if dp.tr_ok:
        if dp.tr_nct == FC_N:
            dp.tr_ok = 0
        else:
            dp.tr_ct[dp.tr_nct] = val
            dp.tr_inc[dp.tr_nct] = dp.ce_inc[val >> 1]
            dp.tr_nct += 1


cdef int end(DP* dp, Item* it, int kind, int reason, int iface, int64_t a,
             bint keep) noexcept nogil:
    """Terminal outcome of one copy (reference ``_end``); returns 1 (pop the copy)."""
    cdef int k, node
    cdef int64_t o, off
    dp.tr_nout += 1
    if dp.tr_ok:
        if keep or kind == OUT_NEIGH:
            dp.tr_ok = 0  # the outcome keeps the frame's bytes: only the stages make them
        dp.tr_out_kind = kind
        dp.tr_out_reason = reason
        dp.tr_out_iface = iface
        dp.tr_out_a = a
    if it.ctx.new and kind == OUT_DROPPED and it.ctx.ct >= 0:
        if (reason == DROP_TTL_EXCEEDED or reason == DROP_REJECT_NO_ENDPOINTS
                or reason == DROP_NO_ROUTE):
            # unconfirmed, but still RELATED to the ICMP error this drop causes
            dp.ce[it.ctx.ct].expires = dp.now
        else:
            ct_delete(dp, it.ctx.ct)  # unconfirmed conntrack entries die with the packet
    if dp.record:
        for k in range(it.npend):
            emit(dp, it.last_hop, it.pend[k].kind, it.pend[k].a, it.pend[k].b,
                 it.pend[k].c)
        if kind == OUT_DROPPED:
            node = dp.ifs[iface].node if 0 <= iface < dp.n_if else -1
            emit(dp, it.last_hop, EV_DROP, reason, node, 0)
        elif kind == OUT_DELIVERED:
            emit(dp, it.last_hop, EV_DELIVER, iface, 0, 0)
        elif kind == OUT_LEFT:
            emit(dp, it.last_hop, EV_LEFT, iface, 0, 0)
    it.npend = 0
    o = dp.n_oc
    if o >= dp.oc_cap:
        dp.err |= ERR_RESULTS
        return 1
    dp.oc_frame[o] = dp.fi
    dp.oc_kind[o] = kind
    dp.oc_reason[o] = reason
    dp.oc_iface[o] = iface
    dp.oc_hop[o] = it.last_hop
    dp.oc_a[o] = a
    dp.oc_off[o] = -1
    dp.oc_len[o] = 0
    if keep:  # the frame is needed again (neighbour hold, ICMP error quoting)
        if arena_put(dp, it, &off):
            dp.oc_off[o] = off
            dp.oc_len[o] = it.len
    dp.n_oc = o + 1
    return 1


# ------------------------------------------------------------------ lookups
cdef inline uint32_t lip_bit(uint32_t ip) noexcept nogil:
    """The bit of ``ip`` in a node's ``lip_bloom`` (the top 6 bits of a multiplicative hash)."""
    return (ip * <uint32_t>0x9E3779B1U) >> 26


cdef inline int local_if_of(const DP* dp, int node, uint32_t ip) noexcept nogil:
    """reference ``local_ips.get((node, ip))``: the node's interface owning ``ip``, or -1."""
    cdef int k, base = node * dp.lip_k
    if not (dp.lip_bloom[node] >> lip_bit(ip)) & 1:  # most addresses are not local
        return -1
    for k in range(dp.lip_n[node]):
        if dp.lip_ip[base + k] == ip:
            return dp.lip_if[base + k]
    return -1


cdef inline int route_dev(const DP* dp, int node, uint32_t dst, uint32_t* nh) noexcept nogil:
    """reference ``_route_dev``: the out interface (-1: no route) and next hop. A node's
    routes are the shared ones seen from it: its own pod CIDR is connected on the bridge,
    another node's goes through the VTEP or eth0 to that node (R-1, OV-2, OV-4)."""
    cdef int32_t r = lpm_lookup(dp.lpm, dst)
    if r < 0:
        nh[0] = 0
        return -1
    cdef int kind = dp.rt_kind[r]
    if kind == RT_POD_CIDR:
        if dp.rt_owner[r] == node:
            nh[0] = 0
            return dp.node_br_if[node]
        nh[0] = dp.rt_nh[r]
        return dp.node_vtep_if[node] if dp.vxlan else dp.node_eth_if[node]
    nh[0] = dp.rt_nh[r]  # the node network: connected (0); anything else: the gateway
    return dp.node_eth_if[node]


cdef inline int find_backend(const DP* dp, int sp, uint32_t ip, int port) noexcept nogil:
    cdef int b, s = dp.sp_be_start[sp]
    for b in range(s, s + dp.sp_be_count[sp]):
        if dp.be_ip[b] == ip and dp.be_port[b] == port:
            return b
    return -1


cdef inline int owner_of(const DP* dp, uint32_t ip) noexcept nogil:
    """``Tables.owner_of`` (the first of equal addresses in ``own_ip``), hashed."""
    cdef HSlot* s = ht_find(&dp.own, ip, 0)
    return <int>s.v0 if s != NULL else -1


cdef inline int64_t neigh_get(const DP* dp, int node, uint32_t ip, HSlot** slot) noexcept nogil:
    """reference ``neigh.get((node, ip), -1)``: the node's own entry (``slot``) or the
    shared one of the node network (``slot`` NULL: no cached header)."""
    cdef HSlot* s = ht_find(&dp.neigh, ip, <uint32_t>node)
    slot[0] = s
    if s != NULL:
        return s.v0
    if dp.n_sh == 0 or node < 0 or node >= dp.sh_nodes:
        return -1
    s = ht_find(&dp.nshared, ip, 0)
    if s == NULL:
        return -1
    cdef const NShared* S = &dp.sh[s.v0]
    if S.node != node:
        return S.mac
    return S.mac2 if S.has2 else -1


cdef inline bint neigh_cache(DP* dp, int node, uint32_t ip, HSlot* slot,
                             int64_t mac) noexcept nogil:
    """Mark the entry's header cached (``neigh_hh.add``); false if it already was."""
    cdef bint created
    if slot == NULL:
        slot = ht_put(&dp.neigh, ip, <uint32_t>node, &created)
        if slot == NULL:
            dp.err |= ERR_NOMEM
            return True
        slot.v0 = mac
    if slot.v1:
        return False
    slot.v1 = 1
    dp.fc_bump += 1  # the path of the next frame differs (no extra hop through the bridge)
    return True


cdef inline void l4info(const uint8_t* d, int n, int* proto, int* l4, int* sport,
                        int* dport) noexcept nogil:
    """reference ``_l4``: (proto, l4 offset, sport, dport). The total length is clamped to
    the frame (the reference would read past a truncated frame and raise there)."""
    cdef int ihl = (d[14] & 0xF) * 4 if n > 14 else 0
    cdef int tot_end = 14 + <int>rd16(d, 16) if n > 17 else 0
    if tot_end > n:
        tot_end = n
    l4[0] = 14 + ihl
    proto[0] = d[23] if n > 23 else 0
    sport[0] = 0
    dport[0] = 0
    cdef int p = proto[0], o = l4[0]
    if (p == PROTO_TCP or p == PROTO_UDP or p == PROTO_SCTP) and o + 4 <= tot_end:
        sport[0] = rd16(d, o)
        dport[0] = rd16(d, o + 2)
    elif p == PROTO_ICMP and o + 8 <= tot_end and (d[o] == 0 or d[o] == 8):
        # the echo id: the request's source "port", the reply's destination one
        if d[o] == 8:
            sport[0] = rd16(d, o + 4)
        else:
            dport[0] = rd16(d, o + 4)


cdef inline int ip_check(const uint8_t* d, int n) noexcept nogil:
    """``ip_rcv``'s sanity checks; a drop reason or 0."""
    if n < 34:
        return DROP_TOO_SHORT
    cdef int vihl = d[14]
    cdef int ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < 20 or n < 14 + ihl:
        return DROP_BAD_IP_HEADER
    cdef int tot = rd16(d, 16)
    if tot < ihl or 14 + tot > n:
        return DROP_BAD_IP_HEADER
    if kemu_sum_words(d + 14, ihl) != 0xFFFF:  # ip_checksum(d, 14, ihl) != 0
        return DROP_BAD_IP_CSUM
    return 0


cdef inline int ip_check_it(Item* it) noexcept nogil:
    """``ip_check`` of a copy's data, remembered while it passes: every later rewrite of
    the IPv4 header (NAT, TTL) updates its checksum incrementally, which keeps a valid
    header valid, and the length changes only with VXLAN (which resets the flag)."""
    if it.ip_ok:
        return 0
    cdef int r = ip_check(it.mem + it.off, it.len)
    it.ip_ok = r == 0
    return r


# ------------------------------------------------------------------ conntrack
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


# ------------------------------------------------------------------ header rewrites
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


# ------------------------------------------------------------------ netfilter
cdef int service(DP* dp, Item* it, int e, int node, int fe, uint32_t sip, int sport,
                 int proto, int l4) noexcept nogil:
    """KUBE-SVC/KUBE-EXT/KUBE-SEP for a new flow: pick a backend, DNAT, mark masquerade."""
    cdef int sp = dp.fe_sp[fe]
    cdef int kind = dp.fe_kind[fe]
    cdef int flags = dp.sp_flags[sp]
    cdef int start = dp.sp_be_start[sp], count = dp.sp_be_count[sp]
    cdef bint from_cluster = (sip & dp.cmask) == dp.cnet
    cdef bint external = kind != FE_CLUSTER_IP
    cdef bint local_src = local_if_of(dp, node, sip) >= 0
    cdef bint local_only = False, masq = False
    cdef int b, be = -1, ncands = 0
    cdef HSlot* s
    cdef bint created
    cdef uint64_t h
    cdef CtE* E
    if external:
        if not flags & SP_ETP_LOCAL:
            masq = True  # E-1: KUBE-EXT always marks for masquerade
        elif local_src:
            masq = True  # E-2: the node itself: masquerade, cluster-wide endpoints
        elif not from_cluster:
            local_only = True  # E-2: KUBE-SVL, local endpoints, client IP kept
        # E-2: pods short-circuit to KUBE-SVC without masquerade
    else:
        masq = not from_cluster  # S-6
        if flags & SP_ITP_LOCAL:
            local_only = True
    for b in range(start, start + count):
        if not local_only or dp.be_node[b] == node:
            dp.cands[ncands] = b
            ncands += 1
    if count == 0:
        return DROP_REJECT_NO_ENDPOINTS
    if ncands == 0:
        return DROP_NO_LOCAL_ENDPOINTS
    if flags & SP_AFFINITY:
        s = ht_find(&dp.aff, sip, (<uint64_t>node << 32) | <uint32_t>sp)
        if s != NULL and dp.now - s.v1 <= dp.sp_aff_ns[sp]:
            b = find_backend(dp, sp, <uint32_t>(s.v0 >> 16), <int>(s.v0 & 0xFFFF))
            if b >= 0 and (not local_only or dp.be_node[b] == node):
                be = b
                ev(dp, it, EV_AFFINITY, sp, b, node)
    E = &dp.ce[e]
    if be < 0:
        h = flow_hash(dp.seed, node, proto, sip, sport, E.t[0].dip, E.t[0].dport)
        be = dp.cands[h % <uint64_t>ncands]
    cdef uint32_t bip = dp.be_ip[be]
    cdef int bport = dp.be_port[be]
    if flags & SP_AFFINITY:
        s = ht_put(&dp.aff, sip, (<uint64_t>node << 32) | <uint32_t>sp, &created)
        if s == NULL:
            dp.err |= ERR_NOMEM
        else:
            s.v0 = (<int64_t>bip << 16) | bport
            s.v1 = dp.now
    if sip == bip:
        masq = True  # S-5: hairpin
    E.flags |= CT_DNAT
    E.dnat_ip = bip
    E.dnat_port = bport
    E.sp = sp
    E.be = be
    E.masq = masq
    E.proto[1] = proto
    E.t[1].sip = bip
    E.t[1].sport = bport
    E.t[1].dip = sip
    E.t[1].dport = sport
    set_dst(DATA(it), it.len, bip, bport, proto, l4)
    changed(it)
    ev(dp, it, EV_DNAT, fe, be, E.t[0].dip)
    return 0


cdef int prerouting(DP* dp, Item* it, int node, int in_if) noexcept nogil:
    """Conntrack lookup, KUBE-SERVICES for new flows, DNAT. A drop reason or 0."""
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len
    cdef Ctx* ctx = &it.ctx
    cdef int proto, l4, sport, dport, e, is_reply, prev, val, r
    cdef uint32_t sip, dip
    cdef int64_t slot
    cdef CtE* E
    if ctx.node != node:
        ctx.node = node
        ctx.ct = -1
        ctx.new = 0
        ctx.reply_dir = 0
        ctx.verdict = 0
        ctx.verdict_sp = -1
        ctx.related = -1
    ctx.pre_done = 1
    if rd16(d, 20) & 0x3FFF:  # MF or fragment offset: conntrack would defragment
        return DROP_FRAGMENT
    l4info(d, n, &proto, &l4, &sport, &dport)
    if proto == PROTO_ICMP and (l4 + 1 > n or (d[l4] != 0 and d[l4] != 8)):
        dp.tr_ok = 0  # rare work: not a path the flow cache holds
        cold.related_pre(dp, it, node, l4)  # no entry of its own: RELATED to what it quotes
        return 0
    sip = rd32(d, 26)
    dip = rd32(d, 30)
    # a copy crossing several nodes meets the same entries in the same order every time:
    # the entry found after the previous one last time is tried before the index
    prev = it.ct_prev
    val = dp.ce_hint[prev] if prev >= 0 else -1
    if val < 0 or not ct_is(dp, val, node, proto, sip, sport, dip, dport):
        slot = ct_slot(dp, node, proto, sip, sport, dip, dport)
        val = ct_val(dp, slot) if slot >= 0 else -1
        if prev >= 0 and val >= 0:
            dp.ce_hint[prev] = val
    if val >= 0:
        is_reply = val & 1
        e = val >> 1
        if dp.ce[e].expires < dp.now:
            ct_delete(dp, e)
            dp.tr_ok = 0
            val = -1
    if val >= 0:
        tr_ct(dp, val)
        if dp.first_ct < 0:
            dp.first_ct = e
        it.ct_prev = val
        E = &dp.ce[e]
        ctx.ct = e
        ctx.reply_dir = is_reply
        ctx.new = 0
        ct_update(dp, E, is_reply, d, n, l4, proto)
        if not is_reply and E.flags & CT_DNAT:
            set_dst(d, n, E.dnat_ip, E.dnat_port, proto, l4)
            changed(it)
            ev(dp, it, EV_CT_REUSE, E.sp, E.be, node)
        elif is_reply and E.flags & CT_SNAT:
            set_dst(d, n, E.t[0].sip, E.t[0].sport, proto, l4)
            changed(it)
            ev(dp, it, EV_UNSNAT, E.t[0].sip, E.t[0].sport, node)
        return 0
    dp.tr_ok = 0  # rare work: not a path the flow cache holds
    r = cold.prerouting_new(dp, it, node, proto, l4, sport, dport, sip, dip)
    e = ctx.ct
    if e >= 0 and dp.ce[e].keys & 1:
        if prev >= 0:
            dp.ce_hint[prev] = e * 2
        it.ct_prev = e * 2
        if dp.first_ct < 0:
            dp.first_ct = e
    return r


cdef int prerouting_new(DP* dp, Item* it, int node, int proto, int l4, int sport, int dport,
                        uint32_t sip, uint32_t dip) noexcept nogil:
    """A new flow: a conntrack entry, KUBE-SERVICES (TCP/UDP only)."""
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, e, fe, r
    cdef Ctx* ctx = &it.ctx
    cdef HSlot* s
    cdef CtE* E
    e = ct_alloc(dp)
    if e < 0:
        return 0
    E = &dp.ce[e]
    E.node = node
    E.proto[0] = proto
    E.t[0].sip = sip
    E.t[0].sport = sport
    E.t[0].dip = dip
    E.t[0].dport = dport
    E.proto[1] = proto
    E.t[1].sip = dip
    E.t[1].sport = dport
    E.t[1].dip = sip
    E.t[1].dport = sport
    ctx.ct = e
    ctx.reply_dir = 0
    ctx.new = 1
    if proto == PROTO_TCP or proto == PROTO_UDP:
        s = ht_find(&dp.fe, dip, (<uint64_t>proto << 16) | <uint64_t>dport)
        if s == NULL and local_if_of(dp, node, dip) >= 0:
            s = ht_find(&dp.fe_np, 0, (<uint64_t>proto << 16) | <uint64_t>dport)
        if s != NULL:
            fe = <int>s.v0
            r = service(dp, it, e, node, fe, sip, sport, proto, l4)
            if r:
                ctx.verdict = r
                ctx.verdict_sp = dp.fe_sp[fe]
    E = &dp.ce[e]
    ct_update(dp, E, False, d, n, l4, proto)
    ct_set(dp, node, E.proto[0], E.t[0].sip, E.t[0].sport, E.t[0].dip, E.t[0].dport, e, 0)
    E = &dp.ce[e]
    ct_set(dp, node, E.proto[1], E.t[1].sip, E.t[1].sport, E.t[1].dip, E.t[1].dport, e, 1)
    return 0


cdef inline int filter_forward(Item* it) noexcept nogil:
    """filter FORWARD/OUTPUT: KUBE-SERVICES REJECT/DROP for NEW flows (S-9)."""
    if it.ctx.new and it.ctx.verdict:
        return it.ctx.verdict
    return 0


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


cdef void masquerade(DP* dp, Item* it, int e, int node, int out_if, int proto,
                     int l4) noexcept nogil:
    cdef CtE* E = &dp.ce[e]
    cdef uint32_t new_ip = dp.ifs[out_if].ip
    cdef int port = E.t[0].sport, tries = 0
    cdef int rproto = E.proto[1], rsport = E.t[1].sport
    cdef uint32_t rsip = E.t[1].sip
    if proto == PROTO_TCP or proto == PROTO_UDP:
        # keep the source port unless the reply tuple would clash (nf_nat_used_tuple)
        while tries < 64512 and ct_slot(dp, node, rproto, rsip, rsport, new_ip, port) >= 0:
            port = 1024 + (port - 1024 + 1) % 64512 if port >= 1024 else 1024
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


cdef void postrouting(DP* dp, Item* it, int node, int out_if) noexcept nogil:
    """KUBE-POSTROUTING masquerade for marked new flows; reply un-DNAT; confirm."""
    cdef Ctx* ctx = &it.ctx
    cdef int e = ctx.ct, proto, l4, sport, dport
    cdef CtE* E
    if ctx.related >= 0 and ctx.node == node:
        dp.tr_ok = 0  # rare work: not a path the flow cache holds
        cold.related_post(dp, it, node)
    if e < 0 or ctx.node != node:
        return
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len
    E = &dp.ce[e]
    if not ctx.reply_dir:
        if ctx.new and E.masq and not E.flags & CT_SNAT:
            l4info(d, n, &proto, &l4, &sport, &dport)
            dp.tr_ok = 0  # rare work: not a path the flow cache holds
            cold.masquerade(dp, it, e, node, out_if, proto, l4)
        elif E.flags & CT_SNAT:
            l4info(d, n, &proto, &l4, &sport, &dport)
            set_src(d, n, E.snat_ip, E.snat_port if proto != PROTO_ICMP else -1, proto, l4)
            changed(it)
    elif E.flags & CT_DNAT:
        l4info(d, n, &proto, &l4, &sport, &dport)
        set_src(d, n, E.t[0].dip, E.t[0].dport if proto != PROTO_ICMP else -1, proto, l4)
        changed(it)
        ev(dp, it, EV_UNDNAT, E.sp, E.be, node)
    ctx.new = 0  # confirmed


# ------------------------------------------------------------------ injection helpers
cdef void fix_l2(DP* dp, Item* it, int iface) noexcept nogil:
    """Rewrite Ethernet addresses as the sending host's own stack would have set them."""
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len
    cdef int kind, node, owner
    cdef uint64_t mac, gw_mac
    cdef uint32_t dst, subnet, bip
    cdef bint same
    if n < 14:
        return
    kind = dp.ifs[iface].kind
    mac = <uint64_t>dp.ifs[iface].mac
    wr48(d, 6, mac)
    cdef uint32_t et = rd16(d, 12)
    if et == <uint32_t>ETH_ARP and n >= 42:
        wr48(d, 22, mac)
    elif et == <uint32_t>ETH_IP and n >= 34:
        dst = rd32(d, 30)
        if kind == IF_POD_ETH:
            node = dp.ifs[iface].node
            bip = dp.node_br_ip[node]
            gw_mac = <uint64_t>dp.ifs[dp.node_br_if[node]].mac
            subnet = dp.node_pod_mask[node]
            same = (dst & subnet) == (bip & subnet)
        else:
            gw_mac = <uint64_t>dp.ifs[dp.gateway_if].mac if dp.gateway_if >= 0 else BROADCAST
            same = (dst & dp.node_net_mask) == dp.node_net_prefix
        if (dst & 0xF0000000U) == 0xE0000000U or dst == 0xFFFFFFFFU:
            wr48(d, 0, BROADCAST if dst == 0xFFFFFFFFU else
                 (0x01005E000000ULL | (dst & 0x7FFFFF)))
        elif same:
            owner = owner_of(dp, dst)
            if owner >= 0:
                wr48(d, 0, <uint64_t>dp.ifs[owner].mac)
        else:
            wr48(d, 0, gw_mac)
    ev(dp, it, EV_FIXL2, iface, 0, 0)


cdef void pod_local_route(DP* dp, Item* it, int iface) noexcept nogil:
    """M-4: a pod's packets to its own IP or 127/8 stay in the pod, on ``lo``."""
    if dp.ifs[iface].kind != IF_POD_ETH:
        return
    cdef uint8_t* d = DATA(it)
    cdef uint32_t dst
    if it.len >= 34 and rd16(d, 12) == <uint32_t>ETH_IP:
        dst = rd32(d, 30)
        if dst == dp.ifs[iface].ip or (dst >> 24) == 127:
            wr48(d, 0, 0)
            wr48(d, 6, 0)
            it.a = iface + 1  # the compiler places lo right after the pod's eth0
            ev(dp, it, EV_LOCAL_ROUTE, iface, 0, 0)


# ------------------------------------------------------------------ VXLAN
cdef int vxlan_encap(DP* dp, Item* it, int vtep) noexcept nogil:
    """flannel.1 TX: wrap in Ether/IPv4/UDP 8472/VXLAN towards the VTEP owning the inner
    destination MAC, then route from the node's own stack. 0: go on; 1: the copy ended."""
    cdef int node = dp.ifs[vtep].node
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, m, v, remote = -1, k
    cdef uint64_t dmac = 0, h
    cdef int proto = 0, l4 = 0, sport = 0, dport = 0
    cdef uint32_t sip = 0, dip = 0
    cdef Buf buf
    for k in range(6 if n >= 6 else n):
        dmac = (dmac << 8) | d[k]
    for m in range(dp.n_nodes):
        v = dp.node_vtep_if[m]
        if v >= 0 and <uint64_t>dp.ifs[v].mac == dmac:
            remote = m
    if remote < 0:
        return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, vtep, 0, False)
    if n >= 14 and rd16(d, 12) == <uint32_t>ETH_IP:
        l4info(d, n, &proto, &l4, &sport, &dport)
    if n >= 34:
        sip = rd32(d, 26)
        dip = rd32(d, 30)
    h = flow_hash(0, 0, proto, sip, sport, dip, dport)
    cdef int src_port = 32768 + <int>(h % 28232)  # the kernel's default local port range
    if it.off < 50:
        if buf_get(dp, n + 50 + HEADROOM, &buf) < 0:
            return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, vtep, 0, False)
        memcpy(buf.mem + HEADROOM + 50, d, n)
        buf_put(dp, it.mem, it.cap)
        it.mem = buf.mem
        it.cap = buf.cap
        it.off = HEADROOM + 50
    it.off -= 50
    it.len = n + 50
    d = DATA(it)
    memset(d, 0, 50)
    wr16(d, 12, ETH_IP)
    d[14] = 0x45
    wr16(d, 16, 20 + 8 + 8 + n)
    d[22] = 64
    d[23] = PROTO_UDP
    wr32(d, 26, dp.node_ip[node])
    wr32(d, 30, dp.node_ip[remote])
    wr16(d, 24, ip_checksum(d, 14, 20))
    wr16(d, 34, src_port)
    wr16(d, 36, VXLAN_PORT)
    wr16(d, 38, 8 + 8 + n)
    d[42] = 0x08
    wr32(d, 45, VXLAN_VNI & 0xFFFFFF)   # bytes 46..48 (byte 45 stays 0)
    d[45] = 0
    changed(it)
    it.ip_ok = 0
    ev(dp, it, EV_ENCAP, remote, VXLAN_VNI, 0)
    ctx_reset(&it.ctx)
    it.stage = S_LOCAL_OUT
    it.a = node
    return 0


# ------------------------------------------------------------------ stages
# A stage that passes the copy on calls the next one directly (``go_*``) instead of pushing
# it back: with the reference's LIFO stack the same copy would be popped next anyway, and
# the hop-limit check it meets on the way is the same. Returns: 1 the copy ended (pop it),
# 2 it was replaced by flood copies (already popped).
cdef inline int hop_limit(DP* dp, Item* it) noexcept nogil:
    return end(dp, it, OUT_DROPPED, DROP_HOP_LIMIT, it.a, 0, False)


cdef inline int go_tx(DP* dp, Item* it) noexcept nogil:
    return hop_limit(dp, it) if it.hops >= MAX_HOPS else st_tx(dp, it)


cdef inline int go_rx(DP* dp, Item* it) noexcept nogil:
    return hop_limit(dp, it) if it.hops >= MAX_HOPS else st_rx(dp, it)


cdef inline int go_bridge_in(DP* dp, Item* it) noexcept nogil:
    return hop_limit(dp, it) if it.hops >= MAX_HOPS else st_bridge_in(dp, it)


cdef inline int go_bridge_out(DP* dp, Item* it) noexcept nogil:
    return hop_limit(dp, it) if it.hops >= MAX_HOPS else st_bridge_out(dp, it)


cdef inline int go_node_in(DP* dp, Item* it) noexcept nogil:
    return hop_limit(dp, it) if it.hops >= MAX_HOPS else st_node_in(dp, it)


cdef inline int go_local_out(DP* dp, Item* it) noexcept nogil:
    return hop_limit(dp, it) if it.hops >= MAX_HOPS else st_local_out(dp, it)


cdef int st_tx(DP* dp, Item* it) noexcept nogil:
    cdef int i = it.a
    cdef IfInfo* f = &dp.ifs[i]
    cdef int kind = f.kind
    hop(dp, it, i, DIR_OUT)
    touched(dp, f)
    if kind == IF_POD_ETH or kind == IF_VETH:
        ctx_reset(&it.ctx)
        it.stage = S_RX
        it.a = f.peer
        return go_rx(dp, it)
    elif kind == IF_POD_LO:
        it.stage = S_RX
        return go_rx(dp, it)
    elif kind == IF_BRIDGE:
        it.stage = S_BRIDGE_IN
        it.a = f.bridge
        it.b = i
        return go_bridge_in(dp, it)
    elif kind == IF_NODE_ETH or kind == IF_EXT_ETH or kind == IF_GW_ETH:
        ctx_reset(&it.ctx)
        it.stage = S_BRIDGE_IN
        it.a = f.bridge
        it.b = i
        return go_bridge_in(dp, it)
    elif kind == IF_VTEP:
        dp.tr_ok = 0  # rare work: not a path the flow cache holds
        if cold.vxlan_encap(dp, it, i):
            return 1
        return go_local_out(dp, it)
    return go_tx(dp, it)  # no such device kind: the copy loops to the hop limit


cdef int st_rx(DP* dp, Item* it) noexcept nogil:
    cdef int i = it.a
    cdef IfInfo* f = &dp.ifs[i]
    cdef int kind = f.kind, bad
    cdef uint8_t* d
    cdef int n
    cdef uint64_t dmac
    cdef uint32_t et, dst
    hop(dp, it, i, DIR_IN)
    touched(dp, f)
    if kind == IF_VETH:
        it.stage = S_BRIDGE_IN
        it.a = f.bridge
        it.b = i
        return go_bridge_in(dp, it)
    if kind == IF_POD_LO:
        return end(dp, it, OUT_DELIVERED, 0, i, 0, False)
    d = DATA(it)
    n = it.len
    if n < 14:
        return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, i, 0, False)
    dmac = rd48(d, 0)
    if dmac != <uint64_t>f.mac and not is_mcast(dmac):
        return end(dp, it, OUT_DROPPED, DROP_OTHERHOST, i, 0, False)
    if kind == IF_NODE_ETH or kind == IF_BRIDGE or kind == IF_VTEP:
        it.stage = S_NODE_IN
        return go_node_in(dp, it)
    # end hosts: pods, external hosts, the gateway
    et = rd16(d, 12)
    if et == <uint32_t>ETH_ARP:
        if n < 42:
            return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, i, 0, False)
        if rd32(d, 38) == f.ip:
            return end(dp, it, OUT_DELIVERED, 0, i, 0, False)
        return end(dp, it, OUT_DROPPED, DROP_NOT_LOCAL, i, 0, False)
    if et == <uint32_t>ETH_IPV6:
        return end(dp, it, OUT_DROPPED, DROP_IPV6, i, 0, False)
    if et != <uint32_t>ETH_IP:
        return end(dp, it, OUT_DROPPED, DROP_UNKNOWN_ETHERTYPE, i, 0, False)
    bad = ip_check_it(it)
    if bad:
        return end(dp, it, OUT_DROPPED, bad, i, 0, False)
    dst = rd32(d, 30)
    if dst == f.ip or dst == 0xFFFFFFFFU or (dst & 0xF0000000U) == 0xE0000000U:
        return end(dp, it, OUT_DELIVERED, 0, i, 0, False)
    if kind == IF_GW_ETH:
        return end(dp, it, OUT_LEFT, 0, i, 0, False)
    return end(dp, it, OUT_DROPPED, DROP_NOT_LOCAL, i, 0, False)


cdef int flood(DP* dp, Item* it, int b, int p, int local_if, uint64_t dmac) noexcept nogil:
    """Broadcast, multicast, unknown unicast (L2-3): the copy is replaced by one copy per
    port (pushed in reverse, so ports run in order) and, for bcast/mcast, the local port."""
    cdef Item orig
    cdef Item* c
    cdef int k, q, ncopies = 0
    cdef int s = dp.br_port_start[b], cnt = dp.br_port_count[b]
    cdef bint has_local = local_if >= 0 and is_mcast(dmac) and p != local_if
    memcpy(&orig, it, sizeof(Item) - sizeof(Ev) * (NPEND - it.npend))
    dp.sp -= 1
    for k in range(s, s + cnt):
        q = dp.br_ports[k]
        if q != p or dp.ifs[q].hairpin:
            ncopies += 1
    if has_local:
        c = fork(dp, &orig, S_RX, local_if, -1)
        if c != NULL:
            ev(dp, c, EV_BR_LOCAL, local_if, 0, 0)
    for k in range(s + cnt - 1, s - 1, -1):
        q = dp.br_ports[k]
        if q != p or dp.ifs[q].hairpin:
            c = fork(dp, &orig, S_BRIDGE_OUT, b, q)
            if c != NULL:
                c.flood = 1
    if ncopies == 0 and not has_local:
        end(dp, &orig, OUT_DROPPED, DROP_SAME_PORT, p, 0, False)
    buf_put(dp, orig.mem, orig.cap)
    return 2


cdef int st_bridge_in(DP* dp, Item* it) noexcept nogil:
    cdef int b = it.a, p = it.b
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len
    cdef int local_if, node, verdict, out_if, q
    cdef bint from_local
    cdef uint32_t dst_before, new_dst, nh
    cdef uint64_t smac, dmac
    cdef HSlot* s
    cdef HSlot* ns
    cdef int64_t mac
    cdef bint created
    if n < 14:
        return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, p, 0, False)
    local_if = dp.br_local_if[b]
    from_local = p == local_if
    if (dp.br_netfilter[b] and not from_local and rd16(d, 12) == <uint32_t>ETH_IP
            and ip_check_it(it) == 0):
        node = dp.ifs[local_if].node
        dst_before = rd32(d, 30)
        verdict = prerouting(dp, it, node, p)
        if verdict:
            return end(dp, it, OUT_DROPPED, verdict, p, 0, False)
        new_dst = rd32(d, 30)
        if new_dst != dst_before:  # br_nf_pre_routing_finish: daddr changed
            out_if = route_dev(dp, node, new_dst, &nh)
            if out_if == local_if:
                mac = neigh_get(dp, node, new_dst, &ns)
                if mac < 0:
                    return end(dp, it, OUT_NEIGH, 0, local_if, new_dst, True)
                wr48(d, 0, <uint64_t>mac)
                changed(it)
                ev(dp, it, EV_BRIDGED_DNAT, node, 0, 0)
                if neigh_cache(dp, node, new_dst, ns, mac):
                    # br_nf_pre_routing_finish_bridge: without a cached header the frame
                    # goes out through the bridge device once (neigh->output), then on
                    hop(dp, it, local_if, DIR_OUT)
            else:
                wr48(d, 0, <uint64_t>dp.ifs[local_if].mac)
            changed(it)
    smac = rd48(d, 6)
    if (not from_local and not is_mcast(smac) and smac != 0
            and (local_if < 0 or smac != <uint64_t>dp.ifs[local_if].mac)):
        s = ht_find(&dp.fdb, smac, <uint64_t>b)  # learn: usually a refresh
        if s == NULL:
            s = ht_put(&dp.fdb, smac, <uint64_t>b, &created)
        if s == NULL:
            dp.err |= ERR_NOMEM
        else:
            if s.v0 != p:
                dp.fc_bump += 1  # the MAC moved: cached paths to it are stale
            s.v0 = p
            s.v1 = dp.now
            tr_fdb(dp, dp.tr_learn, &dp.tr_nl, s)
            touched_slot(dp, &dp.fdb, smac, <uint64_t>b, s)
    dmac = rd48(d, 0)
    if local_if >= 0 and dmac == <uint64_t>dp.ifs[local_if].mac:
        ev(dp, it, EV_BR_LOCAL, local_if, 0, 0)
        it.stage = S_RX
        it.a = local_if
        return go_rx(dp, it)
    if not is_mcast(dmac):
        s = ht_find(&dp.fdb, dmac, <uint64_t>b)
        if s != NULL and dp.now - s.v1 <= dp.ageing_ns:
            tr_fdb(dp, dp.tr_check, &dp.tr_nc, s)
            touched_slot(dp, &dp.fdb, dmac, <uint64_t>b, s)
            q = <int>s.v0
            if q == p and not dp.ifs[q].hairpin:
                return end(dp, it, OUT_DROPPED, DROP_SAME_PORT, p, 0, False)
            it.stage = S_BRIDGE_OUT
            it.a = b
            it.b = q
            it.flood = 0
            return go_bridge_out(dp, it)
    dp.tr_ok = 0  # rare work: not a path the flow cache holds
    return cold.flood(dp, it, b, p, local_if, dmac)


cdef int st_bridge_out(DP* dp, Item* it) noexcept nogil:
    cdef int b = it.a, q = it.b, verdict
    cdef int local_if = dp.br_local_if[b]
    if dp.br_netfilter[b] and rd16(DATA(it), 12) == <uint32_t>ETH_IP and it.ctx.node >= 0:
        verdict = filter_forward(it)
        if verdict:
            return end(dp, it, OUT_DROPPED, verdict, q, 0, False)
        postrouting(dp, it, dp.ifs[local_if].node, local_if)
    ev(dp, it, EV_BR_FLOOD if it.flood else EV_BR_FDB, q, b, 0)
    # a node bridge sends out of the veth; on the node network the port is the host itself
    it.a = q
    if dp.ifs[q].kind == IF_VETH:
        it.stage = S_TX
        return go_tx(dp, it)
    it.stage = S_RX
    return go_rx(dp, it)


cdef int output(DP* dp, Item* it, int node, int out_if, uint32_t nh) noexcept nogil:
    """POSTROUTING then neighbour output (ip_finish_output2)."""
    postrouting(dp, it, node, out_if)
    cdef uint8_t* d = DATA(it)
    cdef uint32_t dst = rd32(d, 30)
    cdef uint32_t hop_ip = nh if nh else dst
    if dp.record:
        ev(dp, it, EV_ROUTE, lpm_lookup(dp.lpm, dst), nh, node)
    cdef HSlot* ns
    cdef int64_t mac = neigh_get(dp, node, hop_ip, &ns)
    if mac < 0:
        ev(dp, it, EV_NEIGH_MISS, hop_ip, node, out_if)
        wr48(d, 6, <uint64_t>dp.ifs[out_if].mac)
        return end(dp, it, OUT_NEIGH, 0, out_if, hop_ip, True)
    if ns == NULL or not ns.v1:
        neigh_cache(dp, node, hop_ip, ns, mac)  # neigh_resolve_output caches the header
    else:
        touched_slot(dp, &dp.neigh, hop_ip, <uint32_t>node, ns)
    wr48(d, 0, <uint64_t>mac)
    wr48(d, 6, <uint64_t>dp.ifs[out_if].mac)
    changed(it)
    ctx_reset(&it.ctx)
    it.stage = S_TX
    it.a = out_if
    return go_tx(dp, it)


cdef int local_in(DP* dp, Item* it, int node, int i) noexcept nogil:
    cdef int verdict = it.ctx.verdict
    if verdict:
        return end(dp, it, OUT_DROPPED, verdict, i, 0, True)
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len
    cdef int l4 = 14 + (d[14] & 0xF) * 4
    if (dp.vxlan and d[23] == PROTO_UDP and n >= l4 + 8 + 8 + 14
            and rd16(d, l4 + 2) == <uint32_t>VXLAN_PORT):
        dp.tr_ok = 0  # the inner frame's bytes decide from here
        it.off += l4 + 16
        it.len -= l4 + 16
        changed(it)
        ev(dp, it, EV_DECAP, node, VXLAN_VNI, 0)
        it.ip_ok = 0
        ctx_reset(&it.ctx)
        it.stage = S_RX
        it.a = dp.node_vtep_if[node]
        return go_rx(dp, it)
    ev(dp, it, EV_NODE_INPUT, node, 0, 0)
    return end(dp, it, OUT_DELIVERED, 0, i, 0, True)


cdef int st_node_in(DP* dp, Item* it) noexcept nogil:
    cdef int i = it.a
    cdef int node = dp.ifs[i].node
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, bad, verdict, out_if, ttl
    cdef uint32_t et = rd16(d, 12), dst, nh, old
    if et == <uint32_t>ETH_ARP:
        if n < 42:
            return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, i, 0, False)
        if local_if_of(dp, node, rd32(d, 38)) >= 0:
            ev(dp, it, EV_NODE_INPUT, node, 0, 0)
            return end(dp, it, OUT_DELIVERED, 0, i, 0, False)
        return end(dp, it, OUT_DROPPED, DROP_NOT_LOCAL, i, 0, False)
    if et == <uint32_t>ETH_IPV6:
        return end(dp, it, OUT_DROPPED, DROP_IPV6, i, 0, False)
    if et != <uint32_t>ETH_IP:
        return end(dp, it, OUT_DROPPED, DROP_UNKNOWN_ETHERTYPE, i, 0, False)
    bad = ip_check_it(it)
    if bad:
        return end(dp, it, OUT_DROPPED, bad, i, 0, False)
    if (rd32(d, 26) >> 24) == 127:
        return end(dp, it, OUT_DROPPED, DROP_MARTIAN, i, 0, False)
    if not (it.ctx.pre_done and it.ctx.node == node):
        verdict = prerouting(dp, it, node, i)
        if verdict:
            return end(dp, it, OUT_DROPPED, verdict, i, 0, False)
    dst = rd32(d, 30)
    if local_if_of(dp, node, dst) >= 0:
        return local_in(dp, it, node, i)
    out_if = route_dev(dp, node, dst, &nh)
    if out_if < 0:
        return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, i, 0, False)
    old = rd16(d, 22)  # TTL and protocol: one load, one store (no byte store then
    ttl = old >> 8     # a wider load of the same bytes, which stalls store forwarding)
    if ttl <= 1:
        return end(dp, it, OUT_DROPPED, DROP_TTL_EXCEEDED, i, 0, True)
    # ip_forward decrements the TTL before the FORWARD hook: a REJECT quotes TTL-1
    wr16(d, 22, old - 0x100)
    wr16(d, 24, csum_replace16(rd16(d, 24), old, old - 0x100))
    dp.tr_k += 1
    changed(it)
    ev(dp, it, EV_TTL, ttl - 1, node, 0)
    verdict = filter_forward(it)
    if verdict:
        return end(dp, it, OUT_DROPPED, verdict, i, 0, True)
    return output(dp, it, node, out_if, nh)


cdef int st_local_out(DP* dp, Item* it) noexcept nogil:
    """A packet from the node's own processes: route, nat OUTPUT, POSTROUTING."""
    cdef int node = it.a
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, out_if, verdict, li
    cdef int loc = dp.node_local_if[node]
    cdef uint32_t dst, nh
    if n < 34 or rd16(d, 12) != <uint32_t>ETH_IP:
        return end(dp, it, OUT_DROPPED, DROP_BAD_IP_HEADER, loc, 0, False)
    dst = rd32(d, 30)
    out_if = route_dev(dp, node, dst, &nh)
    if rd32(d, 26) == 0 and out_if >= 0:  # unbound socket: the route's preferred source
        set_src_auto(d, n, dp.ifs[out_if].ip, -1)
    verdict = prerouting(dp, it, node, loc)  # nat OUTPUT shares KUBE-SERVICES (S-1)
    if verdict:
        return end(dp, it, OUT_DROPPED, verdict, loc, 0, False)
    dst = rd32(d, 30)
    li = local_if_of(dp, node, dst)
    if li >= 0:
        ev(dp, it, EV_NODE_INPUT, node, 0, 0)
        return end(dp, it, OUT_DELIVERED, 0, li, 0, False)
    out_if = route_dev(dp, node, dst, &nh)
    if out_if < 0:
        return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, loc, 0, False)
    verdict = filter_forward(it)
    if verdict:
        return end(dp, it, OUT_DROPPED, verdict, loc, 0, True)
    return output(dp, it, node, out_if, nh)


cdef void run_frame(DP* dp, const uint8_t* src, int ln, int iface, int mode) noexcept nogil:
    """reference ``_frame``: inject one frame and run every copy of it to an outcome."""
    cdef Buf buf
    cdef Item* it
    cdef int r, st
    if buf_get(dp, ln + HEADROOM, &buf) < 0:
        return
    it = push_slot(dp)
    if it == NULL:
        buf_put(dp, buf.mem, buf.cap)
        return
    it.mem = buf.mem
    it.cap = buf.cap
    it.off = HEADROOM
    it.len = ln
    kemu_copy(it.mem + HEADROOM, src, ln)
    it.b = -1
    ctx_reset(&it.ctx)
    it.hops = 0
    it.last_hop = -1
    it.snap_off = -1
    it.snap_len = 0
    it.flood = 0
    it.ip_ok = 0
    it.ct_prev = -1
    it.npend = 0
    dp.n_touch = 0
    dp.first_ct = -1
    if mode == INJ_RX:
        it.stage = S_RX
        it.a = iface
    elif dp.ifs[iface].kind == IF_NODE_LOCAL:
        it.stage = S_LOCAL_OUT
        it.a = dp.ifs[iface].node
    else:
        it.stage = S_TX
        it.a = iface
        if mode == INJ_TX_FIXL2:
            dp.tr_ok = 0  # rare work: not a path the flow cache holds
            cold.fix_l2(dp, it, iface)
        pod_local_route(dp, it, iface)
    while dp.sp > 0:  # the reference's LIFO stack: copies of a flood come back here
        it = &dp.stack[dp.sp - 1]
        st = it.stage
        if st == S_TX:
            r = go_tx(dp, it)
        elif st == S_RX:
            r = go_rx(dp, it)
        elif st == S_BRIDGE_IN:
            r = go_bridge_in(dp, it)
        elif st == S_BRIDGE_OUT:
            r = go_bridge_out(dp, it)
        elif st == S_NODE_IN:
            r = go_node_in(dp, it)
        else:
            r = go_local_out(dp, it)
        if r == 1:
            buf_put(dp, it.mem, it.cap)
            dp.sp -= 1
    if dp.tr_ok and dp.tr_nout == 1 and fc_gen(dp) == dp.tr_gen:
        cold.fc_insert(dp)
    if dp.track and dp.first_ct >= 0 and dp.ce[dp.first_ct].keys:
        memcpy(&dp.ce_touch[dp.first_ct * NTOUCH], dp.touch, dp.n_touch * sizeof(void*))
        if dp.n_touch < NTOUCH:
            dp.ce_touch[dp.first_ct * NTOUCH + dp.n_touch] = NULL
    ct_reap(dp)


cdef inline uint64_t flow_key_hash(const DP* dp, const uint8_t* f, int64_t ln,
                                   int iface, bint reply) noexcept nogil:
    """The conntrack hash a plain TCP/UDP frame entering at ``iface`` will look up first
    (its node's), or with ``reply`` the one a new flow's reply key will have there if no NAT
    changes it, with bit 63 set; 0 when there is no such guess. Only for prefetching."""
    cdef int ihl, proto, node
    if ln < 54 or f[12] != 0x08 or f[13] != 0x00:
        return 0
    proto = f[23]
    ihl = (f[14] & 0xF) * 4
    if (proto != PROTO_TCP and proto != PROTO_UDP) or ihl < 20 or 14 + ihl + 4 > ln:
        return 0
    node = dp.ifs[iface].node
    if node < 0:
        return 0
    if reply:
        return KEMU_OCC | ct_hash(node, proto, rd32(f, 30), rd16(f, 14 + ihl + 2),
                                  rd32(f, 26), rd16(f, 14 + ihl))
    return KEMU_OCC | ct_hash(node, proto, rd32(f, 26), rd16(f, 14 + ihl), rd32(f, 30),
                              rd16(f, 14 + ihl + 2))


cdef inline void prefetch_flows(DP* dp, const uint8_t* bp, int64_t blen, const int64_t* offp,
                                const int32_t* lenp, const int32_t* ifp, const uint8_t* modep,
                                Py_ssize_t fi, Py_ssize_t stop, uint64_t* ring, int32_t* ring2,
                                FcKey* fring) noexcept nogil:
    """Software pipeline over the batch, for the flow a frame belongs to: the interface of
    frame fi+16; the flow cache key of fi+12 and its cached path; at fi+8, what that path
    will touch (its conntrack entries and FDB slots) when it is likely to hold, else the
    conntrack index slot; at fi+4 the entry that slot names (with its hint and the record of
    what its last frame touched), then at fi+2 the next node's entry and those records."""
    cdef Py_ssize_t j = fi + 12
    cdef uint64_t h, v
    cdef int32_t val, k
    cdef int64_t off
    cdef void** rec
    cdef FcKey* fk
    cdef const FcE* E
    cdef int node, e
    if j + 4 < stop and 0 <= ifp[j + 4] < dp.n_if:
        kemu_prefetch(&dp.ifs[ifp[j + 4]])  # frame fi+16's: read for its node at fi+8
    if j < stop:
        fk = &fring[j & 15]
        fc_key(dp, bp, blen, offp, lenp, ifp, modep, j, fk)
        if fk.ok and dp.fc != NULL:  # its cached path: two cache lines
            kemu_prefetch(&dp.fc[fk.idx])
            kemu_prefetch((<char*>&dp.fc[fk.idx]) + 64)
    j = fi + 8
    if j < stop:
        fk = &fring[j & 15]
        h = 0
        if fk.ok:  # the frame is parsed already
            E = &dp.fc[fk.idx] if dp.fc != NULL else NULL
            if (E != NULL and E.gen == fc_gen(dp) and E.key[2] == fk.key[2]
                    and E.key[3] == fk.key[3]):
                # a cached path, most likely: what fc_try will read and write, not what
                # the stages would (the index, hints)
                for k in range(E.n_ct):
                    e = E.ct[k] >> 1
                    kemu_prefetch(&dp.ce[e])
                    kemu_prefetch(&dp.ce_inc[e])
                for k in range(E.n_learn):
                    kemu_prefetch(&dp.fdb.s[E.learn[k]])
                for k in range(E.n_check):
                    kemu_prefetch(&dp.fdb.s[E.check[k]])
            else:  # its first conntrack key, from its flow cache key
                node = dp.ifs[ifp[j]].node
                if node >= 0:
                    h = KEMU_OCC | ct_hash(node, <int>((fk.key[0] >> 48) & 0xFF),
                                           <uint32_t>(fk.key[2] >> 32), <int>(fk.key[3] >> 48),
                                           <uint32_t>fk.key[2],
                                           <int>((fk.key[3] >> 32) & 0xFFFF))
        else:
            off = offp[j]
            if 0 <= off and off + lenp[j] <= blen and 0 <= ifp[j] < dp.n_if:
                h = flow_key_hash(dp, bp + off, lenp[j], ifp[j], False)
        if h:
            kemu_prefetch(&dp.ct.s[h & dp.ct.mask])
        ring[j & 15] = h
    j = fi + 4
    if j < stop:
        h = ring[j & 15]
        val = -1
        if h:
            v = dp.ct.s[h & dp.ct.mask]
            if v and <uint32_t>(v >> 32) == <uint32_t>h:
                val = <int32_t>(<uint32_t>v - 1)
                kemu_prefetch(&dp.ce[val >> 1])
                kemu_prefetch(&dp.ce_hint[val])
                if dp.track:  # the record: two cache lines
                    kemu_prefetch(&dp.ce_touch[(val >> 1) * NTOUCH])
                    kemu_prefetch(&dp.ce_touch[(val >> 1) * NTOUCH + 8])
            elif v == 0:  # a new flow: its reply key will be inserted too
                h = flow_key_hash(dp, bp + offp[j], lenp[j], ifp[j], True)
                if h:
                    kemu_prefetch(&dp.ct.s[h & dp.ct.mask])
        ring2[j & 15] = val
    j = fi + 2
    if j < stop:
        val = ring2[j & 15]
        if val >= 0:
            if dp.track:
                rec = &dp.ce_touch[(val >> 1) * NTOUCH]
                for k in range(NTOUCH):
                    if rec[k] == NULL:
                        break
                    kemu_prefetch(rec[k])
            val = dp.ce_hint[val]
            if val >= 0:
                kemu_prefetch(&dp.ce[val >> 1])


# ------------------------------------------------------------------ the flow cache
# Established flows take the same path frame after frame. With recording off, a frame of a
# flow whose path was cached replays that path's effects without the stages: the FDB
# entries it refreshes (seen = now), the conntrack entries it updates (TCP state, timeouts;
# the same ct_update, in path order) and its one outcome. The result and state() are those
# of the stages, byte for byte, by construction:
# - the key holds every field of the frame that a decision on such a path reads; other
#   frames (ARP, ICMP, fragments, options, bad checksums, short ones) never use the cache;
# - the path is cached only when it did nothing else: one outcome that keeps no bytes, no
#   rare work (new flows, floods, NAT of ICMP errors, VXLAN, ...), no table change;
# - it holds while fc_gen() is unchanged (FDB and neighbour tables, API writes), while each
#   of its conntrack entries keeps its incarnation and has not expired, while each FDB entry
#   it forwards by is fresh, and while the TTL outlasts its routing hops.
# Linux does the same for established flows with its netfilter flowtable.
cdef int64_t fc_default = 1     # new Datapaths use the flow cache (``_set_flow_cache``)


def _set_flow_cache(on: bool) -> bool:
    """Whether Datapaths made from now on use the flow cache (for benchmarks and tests);
    returns the previous setting."""
    global fc_default
    old = bool(fc_default)
    fc_default = 1 if on else 0
    return old


cdef inline bint fc_parse(const uint8_t* f, int64_t ln, int iface, int mode,
                          uint64_t* key, int32_t* ttl) noexcept nogil:
    """The key of a plain TCP/UDP over IPv4 frame (no options, not a fragment, the L4
    header whole): what its path's decisions read of it. The header checksum must be valid
    too: checked on a hit (``fc_try``) and before caching (``fc_insert``)."""
    cdef int proto, tot
    if ln < 42 or f[12] != 0x08 or f[13] != 0x00 or f[14] != 0x45:
        return False
    proto = f[23]
    tot = kemu_rd16(f + 16)
    if proto == PROTO_TCP:
        if tot < 40:
            return False
    elif proto != PROTO_UDP or tot < 28:
        return False
    if 14 + tot > ln or kemu_rd16(f + 20) & 0x3FFF:
        return False
    if proto == PROTO_TCP and f[47] & 0x02:  # SYN, SYN-ACK: a flow starting, not cached
        return False
    key[0] = rd48(f, 0) | (<uint64_t>proto << 48) | (<uint64_t>(mode & 0xFF) << 56)
    key[1] = rd48(f, 6)
    key[2] = (<uint64_t>kemu_rd32(f + 26) << 32) | kemu_rd32(f + 30)
    key[3] = ((<uint64_t>kemu_rd16(f + 34) << 48) | (<uint64_t>kemu_rd16(f + 36) << 32)
              | <uint32_t>iface)
    ttl[0] = f[22]
    return True


cdef inline uint64_t fc_index(const uint64_t* key) noexcept nogil:
    return ((key[0] * 0x9E3779B97F4A7C15ULL) ^ (key[1] * 0xC2B2AE3D27D4EB4FULL)
            ^ (key[2] * 0x165667B19E3779F9ULL) ^ (key[3] * 0xD6E8FEB86659FD93ULL)) >> (64 - FC_BITS)


cdef inline void fc_key(const DP* dp, const uint8_t* bp, int64_t blen, const int64_t* offp,
                        const int32_t* lenp, const int32_t* ifp, const uint8_t* modep,
                        Py_ssize_t j, FcKey* fk) noexcept nogil:
    """Frame j's key, when the flow cache is on and the frame is in the buffer."""
    cdef int64_t off = offp[j]
    fk.ok = (dp.fc_on and 0 <= off and off + lenp[j] <= blen and 0 <= ifp[j] < dp.n_if
             and fc_parse(bp + off, lenp[j], ifp[j], modep[j], fk.key, &fk.ttl))
    if fk.ok:
        fk.idx = fc_index(fk.key)


cdef bint fc_try(DP* dp, const uint8_t* f, int64_t ln, const FcKey* fk) noexcept nogil:
    """Run a frame by its cached path (its key ``fk`` worked out by ``fc_key``); false (and
    tracing set up for the stages, when the frame could be cached) if none holds."""
    cdef int k, e
    cdef int64_t o
    cdef FcE* E
    cdef const uint64_t* key = &fk.key[0]
    cdef int ttl = fk.ttl
    dp.tr_ok = 0
    if not fk.ok:
        return False
    cdef uint64_t gen = fc_gen(dp), idx = fk.idx
    if dp.fc != NULL:
        E = &dp.fc[idx]
        if (E.gen == gen and E.key[0] == key[0] and E.key[1] == key[1]
                and E.key[2] == key[2] and E.key[3] == key[3] and ttl > E.ttl_k
                and kemu_sum_words(f + 14, 20) == 0xFFFF):
            for k in range(E.n_ct):
                e = E.ct[k] >> 1
                if dp.ce_inc[e] != E.inc[k] or dp.ce[e].expires < dp.now:
                    break
            else:
                for k in range(E.n_check):
                    if dp.now - dp.fdb.s[E.check[k]].v1 > dp.ageing_ns:
                        break
                else:
                    o = dp.n_oc
                    if o >= dp.oc_cap:
                        return False
                    for k in range(E.n_learn):
                        dp.fdb.s[E.learn[k]].v1 = dp.now
                    for k in range(E.n_ct):
                        ct_update(dp, &dp.ce[E.ct[k] >> 1], E.ct[k] & 1, f, <int>ln, 34,
                                  <int>((key[0] >> 48) & 0xFF))
                    dp.oc_frame[o] = dp.fi
                    dp.oc_kind[o] = E.out_kind
                    dp.oc_reason[o] = E.out_reason
                    dp.oc_iface[o] = E.out_iface
                    dp.oc_hop[o] = -1
                    dp.oc_a[o] = E.out_a
                    dp.oc_off[o] = -1
                    dp.oc_len[o] = 0
                    dp.n_oc = o + 1
                    dp.fc_hits += 1
                    return True
    dp.tr_ok = 1  # trace the stages: this frame's path may be cached
    dp.tr_gen = gen
    dp.tr_idx = idx
    dp.tr_frame = f
    memcpy(dp.tr_key, key, sizeof(dp.tr_key))
    dp.tr_nl = 0
    dp.tr_nc = 0
    dp.tr_nct = 0
    dp.tr_k = 0
    dp.tr_nout = 0
    return False


cdef void fc_insert(DP* dp) noexcept nogil:
    """Cache the path the stages just traced (``run_frame``, when it qualified)."""
    cdef int k
    cdef FcE* E
    cdef const CtE* E_ct
    if dp.tr_k > 255 or kemu_sum_words(dp.tr_frame + 14, 20) != 0xFFFF:
        return  # (a bad header checksum: the stages dropped it, valid ones would not be)
    for k in range(dp.tr_nct):
        E_ct = &dp.ce[dp.tr_ct[k] >> 1]
        if dp.ce_inc[dp.tr_ct[k] >> 1] != dp.tr_inc[k]:
            return
        # like Linux's flowtable: established connections only (new ones, which may
        # never send a second frame, would only churn the cache)
        if not (E_ct.state == CT_ESTABLISHED or (E_ct.state == CT_UDP
                                                 and E_ct.flags & CT_REPLIED)):
            return
    if dp.fc == NULL:
        # zero pages faulted in as entries are first written, in huge pages where possible
        dp.fc = <FcE*>kemu_map_alloc((<size_t>1 << FC_BITS) * sizeof(FcE), True)
        if dp.fc == NULL:
            dp.fc_on = 0
            return
    E = &dp.fc[dp.tr_idx]
    memcpy(E.key, dp.tr_key, sizeof(E.key))
    E.gen = dp.tr_gen
    E.out_a = dp.tr_out_a
    E.out_iface = dp.tr_out_iface
    E.out_reason = <int16_t>dp.tr_out_reason
    E.out_kind = <uint8_t>dp.tr_out_kind
    E.ttl_k = <uint8_t>dp.tr_k
    E.n_learn = <uint8_t>dp.tr_nl
    E.n_check = <uint8_t>dp.tr_nc
    E.n_ct = <uint8_t>dp.tr_nct
    memcpy(E.learn, dp.tr_learn, sizeof(E.learn))
    memcpy(E.check, dp.tr_check, sizeof(E.check))
    memcpy(E.ct, dp.tr_ct, sizeof(E.ct))
    memcpy(E.inc, dp.tr_inc, sizeof(E.inc))


# Rare work is called through this table of pointers: the compiler cannot inline it, which
# keeps the common path of the stages small (fewer registers spilled).
ctypedef struct Cold:
    int (*prerouting_new)(DP*, Item*, int, int, int, int, int, uint32_t,
                          uint32_t) noexcept nogil
    void (*related_pre)(DP*, Item*, int, int) noexcept nogil
    void (*related_post)(DP*, Item*, int) noexcept nogil
    void (*masquerade)(DP*, Item*, int, int, int, int, int) noexcept nogil
    int (*flood)(DP*, Item*, int, int, int, uint64_t) noexcept nogil
    int (*vxlan_encap)(DP*, Item*, int) noexcept nogil
    void (*fix_l2)(DP*, Item*, int) noexcept nogil
    void (*fc_insert)(DP*) noexcept nogil

cdef Cold cold
cold.prerouting_new = prerouting_new
cold.related_pre = related_pre
cold.related_post = related_post
cold.masquerade = masquerade
cold.flood = flood
cold.vxlan_encap = vxlan_encap
cold.fix_l2 = fix_l2
cold.fc_insert = fc_insert


# ------------------------------------------------------------------ Python-facing helpers
cdef int64_t track_ifaces = 4096   # past this many interfaces: ce_touch (see DP.track)


def _set_track_ifaces(n: int) -> int:
    """Set the interface count past which datapaths loaded from now on keep and prefetch
    each flow's lookups (tests force it on small clusters); returns the previous one."""
    global track_ifaces
    old = track_ifaces
    track_ifaces = n
    return old


cdef object _i32(object a):
    return np.ascontiguousarray(a, dtype=np.int32)


cdef void* _res_ptr(object arr, int typenum, int64_t* n) except NULL:
    """The data of a Results array, checked for dtype, contiguity and writability."""
    if (not cnp.PyArray_Check(arr) or cnp.PyArray_TYPE(arr) != typenum
            or not cnp.PyArray_ISCARRAY(arr) or cnp.PyArray_NDIM(arr) != 1):
        raise TypeError(f"Results array of dtype {getattr(arr, 'dtype', type(arr))} "
                        "is not a writable contiguous 1-d array of the expected type")
    n[0] = cnp.PyArray_DIM(arr, 0)
    return cnp.PyArray_DATA(arr)


cdef object _input(object arr, int typenum, object dtype):
    """A 1-d contiguous native array of the given type: ``arr`` itself, or a converted copy."""
    if (cnp.PyArray_Check(arr) and cnp.PyArray_TYPE(arr) == typenum
            and cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr)
            and cnp.PyArray_NDIM(arr) == 1):
        return arr
    return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)


cdef class Datapath:
    """Batch datapath over compiled ``Tables``; state persists across ``process`` calls.

    ``process`` runs its frames without the GIL, so that other threads go on meanwhile; one
    ``Datapath`` is for one thread at a time (as the reference's is)."""

    cdef DP dp
    cdef readonly object t
    cdef readonly object seed
    cdef readonly bint static_neighbours
    cdef readonly Lpm lpm
    cdef object _loaded
    cdef list _keep
    cdef bint fc_enabled

    def __cinit__(self):
        memset(&self.dp, 0, sizeof(DP))
        self.dp.ce_free = -1
        if (ct_init(&self.dp.ct, 1024) < 0 or ht_init(&self.dp.fdb, 64) < 0
                or ht_init(&self.dp.neigh, 64) < 0 or ht_init(&self.dp.aff, 16) < 0
                or ht_init(&self.dp.nshared, 16) < 0 or ht_init(&self.dp.own, 16) < 0
                or ht_init(&self.dp.fe, 16) < 0 or ht_init(&self.dp.fe_np, 16) < 0):
            raise MemoryError()

    def __init__(self, tables, seed: int = 0, static_neighbours: bool = True) -> None:
        self.seed = seed
        self.dp.seed = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
        self.static_neighbours = static_neighbours
        self.fc_enabled = fc_default != 0
        self._loaded = None
        self.load(tables)

    def __dealloc__(self):
        cdef int k
        free(self.dp.ct.s)
        ht_free(&self.dp.fdb)
        ht_free(&self.dp.neigh)
        ht_free(&self.dp.nshared)
        ht_free(&self.dp.own)
        free(self.dp.sh)
        ht_free(&self.dp.aff)
        ht_free(&self.dp.fe)
        ht_free(&self.dp.fe_np)
        free(self.dp.ce)
        free(self.dp.ce_hint)
        free(self.dp.ce_touch)
        free(self.dp.ce_inc)
        kemu_map_free(self.dp.fc, (<size_t>1 << FC_BITS) * sizeof(FcE), True)
        free(self.dp.zombies)
        free(self.dp.ifs)
        free(self.dp.cands)
        for k in range(self.dp.sp):
            free(self.dp.stack[k].mem)
        free(self.dp.stack)
        for k in range(self.dp.n_pool):
            free(self.dp.pool[k].mem)
        free(self.dp.pool)

    # ---------------------------------------------------------------- tables and state
    def load(self, tables) -> None:
        """Swap in new tables at a batch boundary; keep conntrack, re-resolve its services."""
        self.dp.fc_bump += 1  # every cached path may change
        t = tables
        n_if = int(t.n_ifaces)
        n_nodes = int(t.n_nodes)
        if_kind = _i32(t.if_kind)
        if_node = _i32(t.if_node)
        if_peer = _i32(t.if_peer)
        if_bridge = _i32(t.if_bridge)
        if_hairpin = _i32(t.if_hairpin)
        if_mac = np.ascontiguousarray(t.if_mac, dtype=np.int64)
        if_ip = np.ascontiguousarray(t.if_ip, dtype=np.uint32)
        br_local_if = _i32(t.br_local_if)
        br_netfilter = _i32(t.br_netfilter)
        br_port_start = _i32(t.br_port_start)
        br_port_count = _i32(t.br_port_count)
        br_ports = _i32(t.br_ports)
        node_eth_if = _i32(t.node_eth_if)
        node_br_if = _i32(t.node_br_if)
        node_vtep_if = _i32(t.node_vtep_if)
        node_local_if = _i32(t.node_local_if)
        node_ip = np.ascontiguousarray(t.node_ip, dtype=np.uint32)
        node_br_ip = np.ascontiguousarray(t.node_br_ip, dtype=np.uint32)
        n_sp = len(t.sp_flags)
        n_be = len(t.be_ip)
        _check_tables(t, n_if, n_nodes, if_kind, if_node, if_peer, if_bridge, br_local_if,
                      br_netfilter, br_port_start, br_port_count, br_ports, node_eth_if,
                      node_br_if, node_vtep_if, node_local_if, n_sp, n_be)

        # routes: the LPM, and (out interface, next hop) per route and node (_route_dev)
        lpm = Lpm()
        n_rt = len(t.rt_prefix)
        for i in range(n_rt):
            lpm.add(int(t.rt_prefix[i]), int(t.rt_len[i]), i)
        rt_kind = _i32(t.rt_kind)
        rt_owner = _i32(t.rt_node)
        rt_nh = np.zeros(max(1, n_rt), np.uint32)
        node_pod_mask = np.full(max(1, n_nodes), 0xFFFFFF00, np.uint32)
        mask_set = np.zeros(max(1, n_nodes), bool)
        for r in range(n_rt):
            kind = int(rt_kind[r])
            if kind == RT_POD_CIDR:
                owner = int(rt_owner[r])
                # (an owner of -1 takes the last node's address, as numpy indexing does)
                nh = int(t.rt_prefix[r]) if t.vxlan else (
                    int(t.node_ip[owner]) if -n_nodes <= owner < n_nodes else 0)
                if 0 <= owner < n_nodes and not mask_set[owner]:
                    # what _fix_l2 needs: each node's pod CIDR mask (its first route)
                    node_pod_mask[owner] = lpm_mask(int(t.rt_len[r]))
                    mask_set[owner] = True
            elif kind == RT_NODE_NET:
                nh = 0
            else:
                nh = int(t.gateway_ip)
            rt_nh[r] = nh & 0xFFFFFFFF
        net_prefix, net_mask = 0, 0xFFFFFFFF
        for i in range(n_rt):
            if int(t.rt_kind[i]) == RT_NODE_NET:
                net_prefix, net_mask = int(t.rt_prefix[i]), lpm_mask(int(t.rt_len[i]))
                break
        # local addresses, as the reference's local_ips dict (the last interface wins)
        local_ips = {}
        for i in np.flatnonzero((if_kind == IF_NODE_ETH) | (if_kind == IF_BRIDGE)
                                | (if_kind == IF_VTEP)).tolist():
            local_ips[(int(if_node[i]), int(if_ip[i]))] = i
        per_node = [[] for _ in range(n_nodes)]
        for (node, ip), i in local_ips.items():
            per_node[node].append((ip, i))
        lip_k = max([1] + [len(x) for x in per_node])
        lip_n = np.zeros(max(1, n_nodes), np.int32)
        lip_ip = np.zeros(max(1, n_nodes) * lip_k, np.uint32)
        lip_if = np.zeros(max(1, n_nodes) * lip_k, np.int32)
        lip_bloom = np.zeros(max(1, n_nodes), np.uint64)
        for node, lst in enumerate(per_node):
            lip_n[node] = len(lst)
            for q, (ip, i) in enumerate(lst):
                lip_ip[node * lip_k + q] = ip
                lip_if[node * lip_k + q] = i
                lip_bloom[node] |= np.uint64(1) << np.uint64(lip_bit(ip))
        # services
        fe_map, fe_np_map = {}, {}
        for i in range(len(t.fe_ip)):
            key = (int(t.fe_proto[i]), int(t.fe_port[i]))
            if int(t.fe_kind[i]) == FE_NODE_PORT:
                fe_np_map[key] = i
            else:
                fe_map[(int(t.fe_ip[i]),) + key] = i
        fe_sp = _i32(t.fe_sp)
        fe_kind = _i32(t.fe_kind)
        sp_flags = _i32(t.sp_flags)
        sp_aff_ns = np.ascontiguousarray(t.sp_affinity_ns, dtype=np.int64)
        sp_be_start = _i32(t.sp_be_start)
        sp_be_count = _i32(t.sp_be_count)
        be_ip = np.ascontiguousarray(t.be_ip, dtype=np.uint32)
        be_port = _i32(t.be_port)
        be_node = _i32(t.be_node)
        own_ip = np.ascontiguousarray(t.own_ip, dtype=np.uint32)
        own_if = _i32(t.own_if)
        max_cands = max([1] + [int(c) for c in sp_be_count])

        # ---- all checks passed: commit
        cdef IfInfo* ifs = <IfInfo*>kemu_zalloc(max(1, n_if), sizeof(IfInfo))
        cdef int32_t* cands = <int32_t*>malloc(max_cands * sizeof(int32_t))
        if ifs == NULL or cands == NULL:
            free(ifs)
            free(cands)
            raise MemoryError()
        cdef const int32_t[::1] v_kind = if_kind, v_node = if_node, v_peer = if_peer
        cdef const int32_t[::1] v_bridge = if_bridge, v_hairpin = if_hairpin
        cdef const int64_t[::1] v_mac = if_mac
        cdef const uint32_t[::1] v_ip = if_ip
        cdef Py_ssize_t j
        for j in range(n_if):
            ifs[j].kind = v_kind[j]
            ifs[j].node = v_node[j]
            ifs[j].peer = v_peer[j]
            ifs[j].bridge = v_bridge[j]
            ifs[j].hairpin = v_hairpin[j]
            ifs[j].mac = v_mac[j]
            ifs[j].ip = v_ip[j]
        ht_clear(&self.dp.fe)
        ht_clear(&self.dp.fe_np)
        cdef bint created
        cdef HSlot* s
        for (ip, proto, port), i in fe_map.items():
            s = ht_put(&self.dp.fe, ip, (<uint64_t>proto << 16) | <uint64_t>port, &created)
            if s == NULL:
                raise MemoryError()
            s.v0 = i
        for (proto, port), i in fe_np_map.items():
            s = ht_put(&self.dp.fe_np, 0, (<uint64_t>proto << 16) | <uint64_t>port, &created)
            if s == NULL:
                raise MemoryError()
            s.v0 = i
        ht_clear(&self.dp.own)
        cdef const uint32_t[::1] v_own_ip = own_ip
        cdef const int32_t[::1] v_own_if = own_if
        for j in range(v_own_ip.shape[0]):
            s = ht_put(&self.dp.own, v_own_ip[j], 0, &created)
            if s == NULL:
                raise MemoryError()
            if created:
                s.v0 = v_own_if[j]
        free(self.dp.ifs)
        free(self.dp.cands)
        self.dp.ifs = ifs
        self.dp.cands = cands
        keep = [br_local_if, br_netfilter, br_port_start, br_port_count, br_ports,
                node_eth_if, node_br_if, node_vtep_if, node_local_if, node_ip, node_br_ip,
                node_pod_mask, lip_n, lip_ip, lip_if, lip_bloom, rt_kind, rt_owner, rt_nh, fe_sp, fe_kind,
                sp_flags, sp_aff_ns, sp_be_start, sp_be_count, be_ip, be_port, be_node, own_ip,
                own_if]
        for k, a in enumerate(keep):
            if len(a) == 0:  # a valid pointer even for empty tables
                keep[k] = np.zeros(1, a.dtype)
        (br_local_if, br_netfilter, br_port_start, br_port_count, br_ports,
         node_eth_if, node_br_if, node_vtep_if, node_local_if, node_ip, node_br_ip,
         node_pod_mask, lip_n, lip_ip, lip_if, lip_bloom, rt_kind, rt_owner, rt_nh, fe_sp, fe_kind,
         sp_flags, sp_aff_ns, sp_be_start, sp_be_count, be_ip, be_port, be_node, own_ip,
         own_if) = keep
        self._keep = keep
        self.dp.n_if = n_if
        self.dp.n_nodes = n_nodes
        # interfaces, FDB and neighbour entries past what the caches hold (a few thousand
        # interfaces): prefetch what each flow's last frame looked up
        track = n_if > track_ifaces
        if track != self.dp.track or not track:
            free(self.dp.ce_touch)
            self.dp.ce_touch = NULL
            if track and self.dp.ce_cap:
                self.dp.ce_touch = <void**>calloc(self.dp.ce_cap * NTOUCH, sizeof(void*))
                if self.dp.ce_touch == NULL:
                    track = False
        self.dp.track = track
        self.dp.n_br = len(t.br_local_if)
        self.dp.n_rt = n_rt
        self.dp.n_sp = n_sp
        self.dp.br_local_if = <int32_t*>cnp.PyArray_DATA(br_local_if)
        self.dp.br_netfilter = <int32_t*>cnp.PyArray_DATA(br_netfilter)
        self.dp.br_port_start = <int32_t*>cnp.PyArray_DATA(br_port_start)
        self.dp.br_port_count = <int32_t*>cnp.PyArray_DATA(br_port_count)
        self.dp.br_ports = <int32_t*>cnp.PyArray_DATA(br_ports)
        self.dp.node_eth_if = <int32_t*>cnp.PyArray_DATA(node_eth_if)
        self.dp.node_br_if = <int32_t*>cnp.PyArray_DATA(node_br_if)
        self.dp.node_vtep_if = <int32_t*>cnp.PyArray_DATA(node_vtep_if)
        self.dp.node_local_if = <int32_t*>cnp.PyArray_DATA(node_local_if)
        self.dp.node_ip = <uint32_t*>cnp.PyArray_DATA(node_ip)
        self.dp.node_br_ip = <uint32_t*>cnp.PyArray_DATA(node_br_ip)
        self.dp.node_pod_mask = <uint32_t*>cnp.PyArray_DATA(node_pod_mask)
        self.dp.lip_n = <int32_t*>cnp.PyArray_DATA(lip_n)
        self.dp.lip_ip = <uint32_t*>cnp.PyArray_DATA(lip_ip)
        self.dp.lip_if = <int32_t*>cnp.PyArray_DATA(lip_if)
        self.dp.lip_bloom = <uint64_t*>cnp.PyArray_DATA(lip_bloom)
        self.dp.lip_k = lip_k
        self.dp.rt_kind = <int32_t*>cnp.PyArray_DATA(rt_kind)
        self.dp.rt_owner = <int32_t*>cnp.PyArray_DATA(rt_owner)
        self.dp.rt_nh = <uint32_t*>cnp.PyArray_DATA(rt_nh)
        self.dp.fe_sp = <int32_t*>cnp.PyArray_DATA(fe_sp)
        self.dp.fe_kind = <int32_t*>cnp.PyArray_DATA(fe_kind)
        self.dp.sp_flags = <int32_t*>cnp.PyArray_DATA(sp_flags)
        self.dp.sp_aff_ns = <int64_t*>cnp.PyArray_DATA(sp_aff_ns)
        self.dp.sp_be_start = <int32_t*>cnp.PyArray_DATA(sp_be_start)
        self.dp.sp_be_count = <int32_t*>cnp.PyArray_DATA(sp_be_count)
        self.dp.be_ip = <uint32_t*>cnp.PyArray_DATA(be_ip)
        self.dp.be_port = <int32_t*>cnp.PyArray_DATA(be_port)
        self.dp.be_node = <int32_t*>cnp.PyArray_DATA(be_node)
        self.dp.own_ip = <uint32_t*>cnp.PyArray_DATA(own_ip)
        self.dp.own_if = <int32_t*>cnp.PyArray_DATA(own_if)
        self.dp.n_own = len(t.own_ip)
        self.dp.node_net_prefix = net_prefix & 0xFFFFFFFF
        self.dp.node_net_mask = net_mask
        self.dp.gateway_ip = int(t.gateway_ip) & 0xFFFFFFFF
        self.dp.gateway_if = int(t.gateway_if)
        cnet, cmask = t.cluster_cidr
        self.dp.cnet = int(cnet) & 0xFFFFFFFF
        self.dp.cmask = int(cmask) & 0xFFFFFFFF
        self.dp.vxlan = bool(t.vxlan)
        self.dp.ageing_ns = int(t.ageing_ns)
        self.lpm = lpm
        self.dp.lpm = &lpm.c
        old = self._loaded
        self.t = tables
        if old is not None and old is not tables:
            ht_clear(&self.dp.fdb)
            self._remap_conntrack()
            self._remap_affinity(old)
        if self.static_neighbours:
            self._seed_neighbours()
        self._loaded = tables

    def _seed_neighbours(self) -> None:
        """What a settled cluster's kernels know (reference ``_seed_neighbours``): every pod
        on its node (in ``neigh``), every host of the node network and flannel's VTEP
        addresses (OV-2) on every other node, kept once per address in ``nshared`` (the
        same entries, without nodes x hosts of them). Writes apply in interface order, as in
        the reference: an address written both ways is spelt out per node."""
        cdef DP* dp = &self.dp
        cdef int n_nodes = dp.n_nodes, m
        cdef uint64_t i
        cdef HSlot* s
        cdef NShared* S
        cdef bint created
        t = self.t
        kind = np.asarray(t.if_kind).astype(np.int64)
        pods = np.flatnonzero(kind == IF_POD_ETH)
        hosts = np.flatnonzero((kind == IF_NODE_ETH) | (kind == IF_EXT_ETH)
                               | (kind == IF_GW_ETH) | (kind == IF_VTEP))
        ip_all = np.asarray(t.if_ip).astype(np.int64) & 0xFFFFFFFF
        if dp.n_sh and n_nodes != dp.sh_nodes:
            self._spell_out_shared()
        seed = {}  # ip -> [node, mac, has2, node2, mac2] of this seeding's host writes
        for n, ip, mac in zip(np.asarray(t.if_node)[hosts].tolist(), ip_all[hosts].tolist(),
                              np.asarray(t.if_mac)[hosts].tolist(), strict=True):
            st = seed.get(ip)
            if st is None:
                seed[ip] = [n, mac, 0, 0, 0]
            elif st[0] == n:
                st[1] = mac
            else:
                seed[ip] = [n, mac, 1, st[0], st[1]]
        pod_ips = ip_all[pods]
        both = set(pod_ips.tolist()) & seed.keys() if seed else set()
        for ip in sorted(both):
            writes = [(int(kind[i]) == IF_POD_ETH, int(t.if_node[i]), int(t.if_mac[i]))
                      for i in np.flatnonzero(ip_all == ip).tolist()
                      if int(kind[i]) == IF_POD_ETH or i in set(hosts.tolist())]
            for m in range(n_nodes):
                val = None
                for is_pod, n, mac in writes:
                    if (n == m) == is_pod:
                        val = mac
                if val is not None:
                    self._neigh_put(m, ip, val, False)
            del seed[ip]
        if dp.neigh.n and seed:  # entries of a node's own table take the new addresses
            for i in range(dp.neigh.mask + 1):
                s = &dp.neigh.s[i]
                if s.k1:
                    st = seed.get(s.k0)
                    m = <int32_t><uint32_t>(s.k1 & 0xFFFFFFFFULL)
                    if st is not None and 0 <= m < n_nodes:
                        if st[0] != m:
                            s.v0 = st[1]
                        elif st[2]:
                            s.v0 = st[4]
        cdef int32_t[::1] pn = np.ascontiguousarray(np.asarray(t.if_node)[pods], np.int32)
        cdef int64_t[::1] pip = np.ascontiguousarray(pod_ips, np.int64)
        cdef int64_t[::1] pmac = np.ascontiguousarray(np.asarray(t.if_mac)[pods], np.int64)
        cdef Py_ssize_t k
        for k in range(pn.shape[0]):
            if not both or pip[k] not in both:
                self._neigh_put(pn[k], <uint32_t>pip[k], pmac[k], False)
        for ip, st in seed.items():
            s = ht_find(&dp.nshared, ip, 0)
            if s == NULL:
                if dp.n_sh == dp.sh_cap:
                    S = <NShared*>realloc(dp.sh, (dp.sh_cap * 2 + 64) * sizeof(NShared))
                    if S == NULL:
                        raise MemoryError()
                    dp.sh = S
                    dp.sh_cap = dp.sh_cap * 2 + 64
                s = ht_put(&dp.nshared, ip, 0, &created)
                if s == NULL:
                    raise MemoryError()
                s.v0 = dp.n_sh
                S = &dp.sh[dp.n_sh]
                dp.n_sh += 1
                S.node, S.mac, S.has2, S.node2, S.mac2 = st
                continue
            S = &dp.sh[s.v0]  # compose: the old writes, then this seeding's
            if not st[2]:
                if S.node != st[0]:
                    st[2], st[3], st[4] = 1, S.node, S.mac
                elif S.has2:
                    st[2], st[3], st[4] = 1, S.node2, S.mac2
            S.node, S.mac, S.has2, S.node2, S.mac2 = st
        dp.sh_nodes = n_nodes

    def _spell_out_shared(self) -> None:
        """Shared entries become entries of each node they were for (before tables with
        another node count: the reference's entries of the old nodes stay as they are)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef int m
        cdef int64_t mac
        cdef HSlot* s
        cdef HSlot* o
        cdef NShared* S
        cdef bint created
        for i in range(dp.nshared.mask + 1):
            s = &dp.nshared.s[i]
            if not s.k1:
                continue
            S = &dp.sh[s.v0]
            for m in range(dp.sh_nodes):
                if ht_find(&dp.neigh, s.k0, <uint32_t>m) != NULL:
                    continue
                if S.node != m:
                    mac = S.mac
                elif S.has2:
                    mac = S.mac2
                else:
                    continue
                o = ht_put(&dp.neigh, s.k0, <uint32_t>m, &created)
                if o == NULL:
                    raise MemoryError()
                o.v0 = mac
        self._clear_shared()

    cdef void _clear_shared(self):
        ht_clear(&self.dp.nshared)
        self.dp.n_sh = 0
        self.dp.sh_nodes = 0

    cdef int _neigh_put(self, int node, uint32_t ip, int64_t mac, bint api) except -1:
        """``neigh[(node, ip)] = mac``; through the API (``neigh_set``) a changed address
        also drops the cached header."""
        cdef bint created
        cdef HSlot* s = ht_put(&self.dp.neigh, ip, <uint32_t>node, &created)
        if s == NULL:
            raise MemoryError()
        if api and (created or s.v0 != mac):
            s.v1 = 0
        s.v0 = mac
        return 0

    def _remap_affinity(self, old) -> None:
        """Affinity records follow their service port by name (reference ``_remap_affinity``)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef HSlot* s
        cdef bint created
        names = {name: k for k, name in enumerate(self.t.sp_name)}
        rows = []
        for i in range(dp.aff.mask + 1):
            s = &dp.aff.s[i]
            if s.k1:
                rows.append((s.k0, <int64_t>((s.k1 & ~KEMU_OCC) >> 32),
                             <int64_t>(s.k1 & 0xFFFFFFFFULL), s.v0, s.v1))
        ht_clear(&dp.aff)
        for k0, node, sp, v0, v1 in rows:
            nsp = names.get(old.sp_name[sp], -1) if sp < len(old.sp_name) else -1
            if nsp >= 0:
                s = ht_put(&dp.aff, k0, (<uint64_t>node << 32) | <uint32_t>nsp, &created)
                if s == NULL:
                    raise MemoryError("affinity table")
                s.v0 = v0
                s.v1 = v1

    def _remap_conntrack(self) -> None:
        """After a table swap: find each DNAT entry's service port and backend again; flush
        UDP entries whose backend is gone (CT-4)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef int e, sp
        cdef CtE* E
        cdef HSlot* s
        todo = []
        for i in range(dp.ct.mask + 1):
            if dp.ct.s[i] and not (ct_val(dp, i) & 1):
                e = ct_val(dp, i) >> 1
                if dp.ce[e].flags & CT_DNAT:
                    todo.append(e)
        for e in todo:
            E = &dp.ce[e]
            s = ht_find(&dp.fe, E.t[0].dip, (<uint64_t>E.proto[0] << 16) | E.t[0].dport)
            if s == NULL:
                s = ht_find(&dp.fe_np, 0, (<uint64_t>E.proto[0] << 16) | E.t[0].dport)
            E.sp = -1
            E.be = -1
            if s != NULL:
                sp = dp.fe_sp[s.v0]
                E.sp = sp
                E.be = find_backend(dp, sp, E.dnat_ip, E.dnat_port)
            if E.be < 0 and E.proto[0] == PROTO_UDP:
                ct_delete(dp, e)
        ct_reap(dp)

    @property
    def flow_cache_hits(self) -> int:
        """Frames run by the flow cache (their established flow's cached path) so far."""
        return self.dp.fc_hits

    def reset(self) -> None:
        self.dp.fc_bump += 1
        ht_clear(&self.dp.fdb)
        memset(self.dp.ct.s, 0, (self.dp.ct.mask + 1) * sizeof(uint64_t))
        self.dp.ct.n = 0
        ht_clear(&self.dp.neigh)
        self._clear_shared()
        ht_clear(&self.dp.aff)
        # The entry pool keeps its memory, as the kernel's conntrack slab does on a flush:
        # every entry is free again, handed out in the order a new pool would use (0, 1, ...),
        # and the flows that follow need no growth (copies, fresh pages). Incarnations go on
        # counting (fc_bump already dropped every cached path).
        cdef int e
        self.dp.ce_free = -1
        for e in range(self.dp.ce_cap - 1, -1, -1):
            self.dp.ce[e].sp = self.dp.ce_free
            self.dp.ce[e].keys = 0
            self.dp.ce[e].zombie = 0
            self.dp.ce_free = e
        self.dp.ce_used = 0
        self.dp.n_zombies = 0
        if self.static_neighbours:
            self._seed_neighbours()

    def neigh_set(self, node: int, ip: int, mac: int) -> None:
        self.dp.fc_bump += 1
        self._neigh_put(node, ip, mac, True)

    def neigh_lookup(self, node: int, ip: int) -> int:
        cdef HSlot* s
        return neigh_get(&self.dp, <int32_t>node, <uint32_t>ip, &s)

    def cleanup(self, now: int) -> None:
        """Expire FDB entries (ageing) and conntrack and affinity entries (timeouts)."""
        self.dp.fc_bump += 1
        cdef DP* dp = &self.dp
        cdef int64_t t_now = now
        cdef uint64_t i
        cdef int e, sp
        cdef HSlot* s
        fdb_old = []
        for i in range(dp.fdb.mask + 1):
            if dp.fdb.s[i].k1 and t_now - dp.fdb.s[i].v1 > dp.ageing_ns:
                fdb_old.append((dp.fdb.s[i].k0, dp.fdb.s[i].k1 & ~KEMU_OCC))
        for k0, k1 in fdb_old:
            ht_del(&dp.fdb, ht_find(&dp.fdb, k0, k1))
        ct_old = []
        for i in range(dp.ct.mask + 1):
            if dp.ct.s[i] and not (ct_val(dp, i) & 1):
                e = ct_val(dp, i) >> 1
                if dp.ce[e].expires < t_now:
                    ct_old.append(e)
        for e in ct_old:
            ct_delete(dp, e)
        ct_reap(dp)
        aff_old = []
        for i in range(dp.aff.mask + 1):
            if dp.aff.s[i].k1:
                sp = <int>(dp.aff.s[i].k1 & 0xFFFFFFFFULL)
                if not 0 <= sp < dp.n_sp:
                    raise IndexError(f"index {sp} is out of bounds for axis 0 with size "
                                     f"{dp.n_sp}")
                if t_now - dp.aff.s[i].v1 > dp.sp_aff_ns[sp]:
                    aff_old.append((dp.aff.s[i].k0, dp.aff.s[i].k1 & ~KEMU_OCC))
        for k0, k1 in aff_old:
            ht_del(&dp.aff, ht_find(&dp.aff, k0, k1))

    def state(self) -> dict[str, list[tuple]]:
        """Every piece of mutable state as sorted tuples (rendered by ``kemu.dataplane.dump``)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef HSlot* s
        cdef HSlot* o
        cdef CtE* E
        cdef int m
        cdef int64_t mac
        fdb, ct, neigh, aff = [], [], [], []
        for i in range(dp.fdb.mask + 1):
            s = &dp.fdb.s[i]
            if s.k1:
                fdb.append((<int64_t>(s.k1 & ~KEMU_OCC), s.k0, s.v0, s.v1))
        for i in range(dp.ct.mask + 1):
            if dp.ct.s[i] and not (ct_val(dp, i) & 1):
                E = &dp.ce[ct_val(dp, i) >> 1]
                ct.append((E.node, E.proto[0], E.t[0].sip, E.t[0].sport, E.t[0].dip,
                           E.t[0].dport, E.proto[1], E.t[1].sip, E.t[1].sport, E.t[1].dip,
                           E.t[1].dport, E.flags, E.state, E.expires, E.sp, E.be))
        for i in range(dp.neigh.mask + 1):
            s = &dp.neigh.s[i]
            if s.k1:
                neigh.append((<int32_t><uint32_t>(s.k1 & 0xFFFFFFFFULL), s.k0, s.v0, s.v1))
        for i in range(dp.nshared.mask + 1):
            s = &dp.nshared.s[i]
            if s.k1:
                for m in range(dp.sh_nodes):
                    if ht_find(&dp.neigh, s.k0, <uint32_t>m) == NULL:
                        mac = neigh_get(dp, m, <uint32_t>s.k0, &o)
                        if mac >= 0:
                            neigh.append((m, s.k0, mac, 0))
        for i in range(dp.aff.mask + 1):
            s = &dp.aff.s[i]
            if s.k1:
                aff.append((<int64_t>((s.k1 & ~KEMU_OCC) >> 32), <int64_t>(s.k1 & 0xFFFFFFFFULL),
                            s.k0, s.v0 >> 16, s.v0 & 0xFFFF, s.v1))
        return {"fdb": sorted(fdb), "conntrack": sorted(ct), "neigh": sorted(neigh),
                "affinity": sorted(aff)}

    # ---------------------------------------------------------------- the batch call
    def process(self, buf, offsets, lengths, in_if, in_mode, ts_ns, Py_ssize_t start,
                Py_ssize_t stop, res) -> int:
        """Run frames ``start..stop-1``; return the index of the first frame not processed
        (``stop`` unless ``res`` ran out of room)."""
        cdef DP* dp = &self.dp
        b_arr = _input(buf, cnp.NPY_UINT8, np.uint8)
        off_arr = _input(offsets, cnp.NPY_INT64, np.int64)
        len_arr = _input(lengths, cnp.NPY_INT32, np.int32)
        if_arr = _input(in_if, cnp.NPY_INT32, np.int32)
        mode_arr = _input(in_mode, cnp.NPY_UINT8, np.uint8)
        ts_arr = _input(ts_ns, cnp.NPY_INT64, np.int64)
        cdef const uint8_t* bp = <const uint8_t*>cnp.PyArray_DATA(b_arr)
        cdef int64_t blen = cnp.PyArray_DIM(b_arr, 0)
        cdef const int64_t* offp = <const int64_t*>cnp.PyArray_DATA(off_arr)
        cdef const int32_t* lenp = <const int32_t*>cnp.PyArray_DATA(len_arr)
        cdef const int32_t* ifp = <const int32_t*>cnp.PyArray_DATA(if_arr)
        cdef const uint8_t* modep = <const uint8_t*>cnp.PyArray_DATA(mode_arr)
        cdef const int64_t* tsp = <const int64_t*>cnp.PyArray_DATA(ts_arr)
        cdef Py_ssize_t n_frames = min(cnp.PyArray_DIM(off_arr, 0), cnp.PyArray_DIM(len_arr, 0),
                                       cnp.PyArray_DIM(if_arr, 0), cnp.PyArray_DIM(mode_arr, 0),
                                       cnp.PyArray_DIM(ts_arr, 0))
        if start >= stop:
            return stop
        if start < 0 or stop > n_frames:
            raise IndexError(f"frames {start}..{stop} outside 0..{n_frames}")
        cdef bint record = bool(res.record)
        cdef int64_t cap_hops = res.cap_hops, cap_events = res.cap_events
        cdef int64_t cap_oc = res.cap_outcomes, n
        dp.record = record
        dp.fc_on = self.fc_enabled and not record
        if record:
            dp.hop_frame = <int32_t*>_res_ptr(res.hop_frame, cnp.NPY_INT32, &dp.hop_cap)
            dp.hop_iface = <int32_t*>_res_ptr(res.hop_iface, cnp.NPY_INT32, &n)
            dp.hop_cap = min(dp.hop_cap, n)
            dp.hop_dir = <uint8_t*>_res_ptr(res.hop_dir, cnp.NPY_UINT8, &n)
            dp.hop_cap = min(dp.hop_cap, n)
            dp.hop_off = <int64_t*>_res_ptr(res.hop_off, cnp.NPY_INT64, &n)
            dp.hop_cap = min(dp.hop_cap, n)
            dp.hop_len = <int32_t*>_res_ptr(res.hop_len, cnp.NPY_INT32, &n)
            dp.hop_cap = min(dp.hop_cap, n)
            dp.ev_frame = <int32_t*>_res_ptr(res.ev_frame, cnp.NPY_INT32, &dp.ev_cap)
            dp.ev_hop = <int32_t*>_res_ptr(res.ev_hop, cnp.NPY_INT32, &n)
            dp.ev_cap = min(dp.ev_cap, n)
            dp.ev_kind = <int16_t*>_res_ptr(res.ev_kind, cnp.NPY_INT16, &n)
            dp.ev_cap = min(dp.ev_cap, n)
            dp.ev_a = <int64_t*>_res_ptr(res.ev_a, cnp.NPY_INT64, &n)
            dp.ev_cap = min(dp.ev_cap, n)
            dp.ev_b = <int64_t*>_res_ptr(res.ev_b, cnp.NPY_INT64, &n)
            dp.ev_cap = min(dp.ev_cap, n)
            dp.ev_c = <int64_t*>_res_ptr(res.ev_c, cnp.NPY_INT64, &n)
            dp.ev_cap = min(dp.ev_cap, n)
        else:
            dp.hop_cap = 0
            dp.ev_cap = 0
        dp.oc_frame = <int32_t*>_res_ptr(res.oc_frame, cnp.NPY_INT32, &dp.oc_cap)
        dp.oc_kind = <uint8_t*>_res_ptr(res.oc_kind, cnp.NPY_UINT8, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_reason = <int16_t*>_res_ptr(res.oc_reason, cnp.NPY_INT16, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_iface = <int32_t*>_res_ptr(res.oc_iface, cnp.NPY_INT32, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_hop = <int32_t*>_res_ptr(res.oc_hop, cnp.NPY_INT32, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_a = <int64_t*>_res_ptr(res.oc_a, cnp.NPY_INT64, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_off = <int64_t*>_res_ptr(res.oc_off, cnp.NPY_INT64, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_len = <int32_t*>_res_ptr(res.oc_len, cnp.NPY_INT32, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.arena = <uint8_t*>_res_ptr(res.arena, cnp.NPY_UINT8, &dp.arena_cap)
        dp.n_hops = res.n_hops
        dp.n_events = res.n_events
        dp.n_oc = res.n_outcomes
        dp.arena_used = res.arena_used
        dp.err = 0
        cdef int64_t n_if = dp.n_if
        cdef int64_t worst_hops = MAX_HOPS * (n_if + 2)
        cdef int64_t few_hops = n_if * 2 + 8
        cdef int64_t hops, arena, off, ln, real
        cdef int32_t iface
        cdef Py_ssize_t fi
        cdef Py_ssize_t done = stop
        cdef uint64_t ring[16]
        cdef int32_t ring2[16]
        cdef FcKey fring[16]
        memset(ring, 0, sizeof(ring))
        memset(ring2, 0xFF, sizeof(ring2))
        for fi in range(start, min(start + 12, stop)):  # prime the prefetch pipeline
            fc_key(dp, bp, blen, offp, lenp, ifp, modep, fi, &fring[fi & 15])
            if fi < start + 8 and 0 <= offp[fi] and offp[fi] + lenp[fi] <= blen \
                    and 0 <= ifp[fi] < n_if:
                ring[fi & 15] = flow_key_hash(dp, bp + offp[fi], lenp[fi], ifp[fi], False)
        with nogil:  # other Python threads (replay's writer) run meanwhile
            for fi in range(start, stop):
                prefetch_flows(dp, bp, blen, offp, lenp, ifp, modep, fi, stop, ring, ring2,
                               fring)
                ln = lenp[fi]
                if record:  # Results.room
                    hops = worst_hops
                    arena = hops * (ln + 64) + 4096
                else:
                    hops = few_hops
                    arena = (ln + 64) * few_hops
                if not (dp.n_hops + hops <= cap_hops and dp.n_events + 2 * hops <= cap_events
                        and dp.n_oc + hops <= cap_oc and dp.arena_used + arena <= dp.arena_cap):
                    done = fi
                    break
                iface = ifp[fi]
                off = offp[fi]
                if iface < 0 or iface >= n_if or off < 0 or ln < 0:
                    done = -1 - fi
                    break
                real = ln if off + ln <= blen else max(0, blen - off)  # buf[off: off + ln]
                dp.now = tsp[fi]
                dp.fi = <int32_t>fi
                if fc_try(dp, bp + off, real, &fring[fi & 15]):
                    continue
                run_frame(dp, bp + off, <int>real, iface, modep[fi])
                if dp.err:
                    done = -1 - fi
                    break
        res.n_hops = dp.n_hops
        res.n_events = dp.n_events
        res.n_outcomes = dp.n_oc
        res.arena_used = dp.arena_used
        if done < 0:
            fi = -1 - done
            if dp.err:
                err, dp.err = dp.err, 0
                if err & ERR_NOMEM:
                    raise MemoryError(f"frame {fi}: out of memory")
                raise RuntimeError(f"frame {fi}: results arrays or pending events overflowed "
                                   f"(error flags {err})")
            raise IndexError(f"frame {fi}: interface {ifp[fi]} (of {n_if}), offset "
                             f"{offp[fi]} or length {lenp[fi]} out of range")
        return done


def _check_tables(t, n_if, n_nodes, if_kind, if_node, if_peer, if_bridge, br_local_if,
                  br_netfilter, br_port_start, br_port_count, br_ports, node_eth_if,
                  node_br_if, node_vtep_if, node_local_if, n_sp, n_be) -> None:
    """The C datapath indexes without bounds checks: refuse tables whose indices do not
    point where the packet path will follow them (the compiler never makes such tables)."""
    n_br = len(br_local_if)
    if n_nodes >= 1 << 22 or n_if >= 1 << 30:
        raise ValueError("tables too large")

    def bad(what):
        raise ValueError(f"inconsistent tables: {what}")

    for name, arr in (("if_node", if_node), ("if_peer", if_peer), ("if_bridge", if_bridge),
                      ("if_mac", t.if_mac), ("if_ip", t.if_ip), ("if_hairpin", t.if_hairpin)):
        if len(arr) != n_if:
            bad(f"{name} has {len(arr)} entries, not {n_if}")
    for name, arr in (("node_eth_if", node_eth_if), ("node_br_if", node_br_if),
                      ("node_vtep_if", node_vtep_if), ("node_local_if", node_local_if),
                      ("node_ip", t.node_ip), ("node_br_ip", t.node_br_ip)):
        if len(arr) != n_nodes:
            bad(f"{name} has {len(arr)} entries, not {n_nodes}")
    # per interface, vectorised; the first offending interface is named, in the order
    # the checks would meet it one interface at a time
    kind = np.asarray(if_kind, np.int64)
    node = np.asarray(if_node, np.int64)
    peer = np.asarray(if_peer, np.int64)
    bridge = np.asarray(if_bridge, np.int64)
    idx = np.arange(n_if)
    bad_peer = np.isin(kind, (IF_POD_ETH, IF_VETH)) & ~((peer >= 0) & (peer < n_if))
    bad_pod = (kind == IF_POD_ETH) & ((idx + 1 >= n_if) | ~((node >= 0) & (node < n_nodes)))
    bad_br = (np.isin(kind, (IF_VETH, IF_BRIDGE, IF_NODE_ETH, IF_EXT_ETH, IF_GW_ETH))
              & ~((bridge >= 0) & (bridge < n_br)))
    bad_node = (np.isin(kind, (IF_NODE_ETH, IF_BRIDGE, IF_VTEP, IF_NODE_LOCAL))
                & ~((node >= 0) & (node < n_nodes)))
    any_bad = bad_peer | bad_pod | bad_br | bad_node
    if any_bad.any():
        i = int(np.flatnonzero(any_bad)[0])
        if bad_peer[i]:
            bad(f"interface {i}: peer {int(if_peer[i])}")
        if bad_pod[i]:
            bad(f"pod interface {i} without lo or node")
        if bad_br[i]:
            bad(f"interface {i}: bridge {int(if_bridge[i])}")
        bad(f"interface {i}: node {int(if_node[i])}")
    if not (len(br_netfilter) == len(br_port_start) == len(br_port_count) == n_br):
        bad("bridge arrays of different lengths")
    for b in range(n_br):
        lf = int(br_local_if[b])
        if not -1 <= lf < n_if or (br_netfilter[b] and lf < 0):
            bad(f"bridge {b}: local interface {lf}")
        s, c = int(br_port_start[b]), int(br_port_count[b])
        if s < 0 or c < 0 or s + c > len(br_ports):
            bad(f"bridge {b}: ports {s}+{c}")
    ports = np.asarray(br_ports, np.int64)
    out = (ports < 0) | (ports >= n_if)
    if out.any():
        bad(f"bridge port {int(ports[np.flatnonzero(out)[0]])}")
    for m in range(n_nodes):
        for name, arr in (("eth", node_eth_if), ("br", node_br_if), ("local", node_local_if)):
            if not 0 <= int(arr[m]) < n_if:
                bad(f"node {m}: {name} interface {int(arr[m])}")
        v = int(node_vtep_if[m])
        if not -1 <= v < n_if or (t.vxlan and v < 0):
            bad(f"node {m}: vtep interface {v}")
    gw = int(t.gateway_if)
    if not -1 <= gw < n_if:
        bad(f"gateway interface {gw}")
    if len(t.rt_kind) >= 1 << 24:
        bad("too many routes")
    if not (len(t.fe_ip) == len(t.fe_port) == len(t.fe_proto) == len(t.fe_kind)
            == len(t.fe_sp)):
        bad("frontend arrays of different lengths")
    for sp in t.fe_sp:
        if not 0 <= int(sp) < n_sp:
            bad(f"frontend service port {int(sp)}")
    if not (len(t.sp_affinity_ns) == len(t.sp_be_start) == len(t.sp_be_count) == n_sp):
        bad("service-port arrays of different lengths")
    for sp in range(n_sp):
        s, c = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        if s < 0 or c < 0 or s + c > n_be:
            bad(f"service port {sp}: backends {s}+{c}")
    if not (len(t.be_port) == len(t.be_node) == n_be):
        bad("backend arrays of different lengths")
    if len(t.own_ip) != len(t.own_if):
        bad("ownership arrays of different lengths")
    own = np.asarray(t.own_if, np.int64)
    out = (own < 0) | (own >= n_if)
    if out.any():
        bad(f"owner interface {int(own[np.flatnonzero(out)[0]])}")


# ------------------------------------------------------------------ pcapng output of hops
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


# ------------------------------------------------------------------ capture record scanning
# The hot loops of ``kemu.io.capture`` (read it for the rules): walk records of one kind from
# ``r`` in the window ``w`` and stop at the first one that is not plainly sound, leaving it to
# the careful Python code. Same results as ``kemu.io.capture.pcap_scan``/``pcapng_scan``.

cdef inline uint32_t rd32e(const uint8_t* p, bint big) noexcept nogil:
    if big:
        return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


def pcap_scan(w, Py_ssize_t r, Py_ssize_t remaining, int64_t limit, bint big):
    """Start offsets of up to ``remaining`` pcap records from ``r``; see capture.pcap_scan."""
    cdef const uint8_t[::1] v = w
    cdef Py_ssize_t end = v.shape[0], k = 0, q
    cdef int64_t c
    if r < 0 or remaining < 0:
        raise ValueError("pcap_scan: negative start or count")
    out = np.empty(max(0, min(remaining, (end - r) // 16 + 1)), np.int64)
    cdef int64_t[::1] o = out
    cdef const uint8_t* b = &v[0] if end else NULL
    with nogil:
        while k < o.shape[0]:
            q = r + 16
            if q > end:
                break
            c = rd32e(b + r + 8, big)
            if c > limit:
                break
            q += c
            if q > end:
                break
            o[k] = r
            k += 1
            r = q
    return out[:k], r, k == remaining


def pcapng_scan(w, Py_ssize_t r, Py_ssize_t remaining, uint32_t kind, uint32_t minlen,
                bint big):
    """Start offsets of up to ``remaining`` sound pcapng blocks of type ``kind`` from ``r``;
    see capture.pcapng_scan."""
    cdef const uint8_t[::1] v = w
    cdef Py_ssize_t end = v.shape[0], k = 0, q
    cdef uint32_t bl
    if r < 0 or remaining < 0:
        raise ValueError("pcapng_scan: negative start or count")
    out = np.empty(max(0, min(remaining, (end - r) // 12 + 1)), np.int64)
    cdef int64_t[::1] o = out
    cdef const uint8_t* b = &v[0] if end else NULL
    with nogil:
        while k < o.shape[0]:
            if r + 12 > end:
                break
            bl = rd32e(b + r + 4, big)
            if rd32e(b + r, big) != kind or bl < minlen or bl & 3:
                break
            q = r + bl
            if q > end or rd32e(b + q - 4, big) != bl:
                break
            o[k] = r
            k += 1
            r = q
    return out[:k], r


# ------------------------------------------------------------------ replay placement
from libc.stdint cimport int8_t

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
                ev_frame, ev_kind, Py_ssize_t n_events, translating):
    """Fates of a batch's frames; see ``kemu.frontend.replay.count_fates``."""
    cdef const int32_t[::1] fr = oc_frame
    cdef const uint8_t[::1] kind = oc_kind
    cdef const int16_t[::1] reason = oc_reason
    cdef const uint8_t[::1] nz = noise.view(np.uint8)
    cdef const int32_t[::1] ef = ev_frame
    cdef const int16_t[::1] ek = ev_kind
    cdef const uint8_t[::1] tr = translating.view(np.uint8)
    cdef Py_ssize_t i, f, n_drops = 0
    cdef int64_t delivered = 0, left = 0, fated = 0, translated = 0
    if (n_outcomes < 0 or n_outcomes > min(fr.shape[0], kind.shape[0], reason.shape[0])
            or n_events < 0 or n_events > min(ef.shape[0], ek.shape[0])):
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
    """Where each frame of a capture enters; see ``kemu.frontend.replay.Placer.place``."""
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
