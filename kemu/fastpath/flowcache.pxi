# flowcache.pxi: The flow cache for established flows (netfilter flowtable style) and the
# prefetching of the conntrack slots and cached paths of frames a few places ahead in a batch.
# Compiled only: its results equal the stages' by construction (tests/test_flow_cache.py checks
# it); the reference has no twin.

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


# ---- the flow cache
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
#   it forwards by is fresh, while the TTL outlasts its routing hops, and for frames no longer
#   than the smallest MTU its routing hops checked (``max_len``: a longer one may be refused).
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
                and kemu_rd16(f + 16) <= E.max_len
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
                    dp.oc_nat[o] = E.out_nat
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
    dp.tr_mtu = 0xFFFF
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
    E.out_nat = <uint8_t>dp.tr_out_nat
    E.ttl_k = <uint8_t>dp.tr_k
    E.max_len = <uint16_t>dp.tr_mtu
    E.n_learn = <uint8_t>dp.tr_nl
    E.n_check = <uint8_t>dp.tr_nc
    E.n_ct = <uint8_t>dp.tr_nct
    memcpy(E.learn, dp.tr_learn, sizeof(E.learn))
    memcpy(E.check, dp.tr_check, sizeof(E.check))
    memcpy(E.ct, dp.tr_ct, sizeof(E.ct))
    memcpy(E.inc, dp.tr_inc, sizeof(E.inc))
