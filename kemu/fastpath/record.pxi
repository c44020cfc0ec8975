# record.pxi: What a frame's copies leave behind: hops (interface, direction, bytes when they
# changed), events (the decisions the pcapng comments name), outcomes (``end``), and, for the flow
# cache, what a path read and changed (``fc_gen``, ``tr_fdb``, ``tr_ct``). Twin:
# ``kemu/dataplane/reference/record.py``.

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
    if (kind == EV_DNAT or kind == EV_SNAT or kind == EV_UNDNAT or kind == EV_UNSNAT
            or kind == EV_CT_REUSE or kind == EV_IPVS_DNAT):  # (constant at every call
        # site: folded away)
        it.nat = 1  # the copy's outcome says so (oc_nat), recording or not
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
        dp.tr_out_nat = it.nat
        dp.tr_out_a = a
    if it.ctx.new and kind == OUT_DROPPED and it.ctx.ct >= 0:
        if (reason == DROP_TTL_EXCEEDED or reason == DROP_REJECT_NO_ENDPOINTS
                or reason == DROP_NO_ROUTE or reason == DROP_FRAG_NEEDED):
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
    dp.oc_nat[o] = <uint8_t>it.nat
    if keep:  # the frame is needed again (neighbour hold, ICMP error quoting)
        if arena_put(dp, it, &off):
            dp.oc_off[o] = off
            dp.oc_len[o] = it.len
    dp.n_oc = o + 1
    return 1
