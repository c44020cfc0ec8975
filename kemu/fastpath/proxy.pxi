# proxy.pxi: kube-proxy in iptables mode for a new flow (S-1..S-8): the frontend's Service port,
# endpoint choice by flow hash or ClientIP affinity, REJECT with no endpoints, DNAT, the
# masquerade mark; kube-router's IPVS (``ipvs_service``: rr/sh schedulers, no real server).
# Twin: ``kemu/dataplane/reference/proxy.py``.

cdef inline int find_backend(const DP* dp, int sp, uint32_t ip, int port) noexcept nogil:
    cdef int b, s = dp.sp_be_start[sp]
    for b in range(s, s + dp.sp_be_count[sp]):
        if dp.be_ip[b] == ip and dp.be_port[b] == port:
            return b
    return -1


cdef inline bint src_allowed(const DP* dp, int sp, uint32_t sip) noexcept nogil:
    """E-4: ``sip`` is in one of the service port's loadBalancerSourceRanges (none: any)."""
    cdef int k, s = dp.sp_src_start[sp], c = dp.sp_src_count[sp]
    if c == 0:
        return True
    for k in range(s, s + c):
        if (sip & dp.src_mask[k]) == dp.src_net[k]:
            return True
    return False


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
    cdef int32_t r
    if kind == FE_LOAD_BALANCER and not src_allowed(dp, sp, sip):
        return DROP_LB_SOURCE_RANGE  # E-4: KUBE-FW's DROP (no ICMP)
    if kind == FE_HOST_PORT:  # CNI-HOSTPORT-SETMARK: from the node's own pod subnet
        r = lpm_lookup(dp.lpm, sip)
        masq = r >= 0 and dp.rt_kind[r] == RT_POD_CIDR and dp.rt_owner[r] == node
    elif external:
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
    for b in range(start, start + count):  # KEP-1669 fallbacks: only for Local traffic
        if (dp.be_node[b] == node if local_only else
                not dp.be_flags[b] & BE_LOCAL_FALLBACK):
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
            if b >= 0 and (dp.be_node[b] == node if local_only else
                           not dp.be_flags[b] & BE_LOCAL_FALLBACK):
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


cdef inline bint own_pod(const DP* dp, int node, uint32_t ip) noexcept nogil:
    """``ip`` is in ``node``'s own pod CIDR (the shared routes' owner)."""
    cdef int32_t r = lpm_lookup(dp.lpm, ip)
    return r >= 0 and dp.rt_kind[r] == RT_POD_CIDR and dp.rt_owner[r] == node


cdef int ipvs_service(DP* dp, Item* it, int e, int node, int fe, uint32_t sip, int sport,
                      int proto, int l4) noexcept nogil:
    """kube-router's IPVS virtual service (NAT mode) for a new connection: the Service
    address is local (kube-dummy-if), so IPVS takes it at LOCAL_IN (ip_vs_remote_request4),
    schedules a real server and NATs (ip_vs_nat_xmit; net.ipv4.vs.conntrack=1: conntrack
    holds the translation, its reply is un-NATed as any). Real servers: the ready endpoints,
    only the node's own under a Local traffic policy (service_endpoints_sync.go); none: the
    virtual service has no destination, ip_vs_leave answers ICMP port unreachable
    (DROP_IPVS_NO_DEST). Schedulers: rr (ip_vs_rr.c: the next destination after the last,
    per virtual service, i.e. per frontend and node), sh (ip_vs_sh.c: 256 buckets filled
    with the destinations in turn, the bucket hash_32(source, 8)). Masquerade: kube-router's
    ``-m ipvs --vdir ORIGINAL --vmethod MASQ ! -s <node podCIDR> ! -d <node podCIDR> -j SNAT
    --to-source <node IP> --random-fully`` (network_services_controller.go,
    ensureMasqueradeIptablesRule)."""
    cdef int sp = dp.fe_sp[fe]
    cdef int kind = dp.fe_kind[fe]
    cdef int flags = dp.sp_flags[sp]
    cdef int start = dp.sp_be_start[sp], count = dp.sp_be_count[sp]
    cdef bint local_only = (flags & SP_ITP_LOCAL) if kind == FE_CLUSTER_IP else (
        flags & SP_ETP_LOCAL)
    cdef int b, be = -1, ncands = 0
    cdef HSlot* s
    cdef bint created
    cdef uint64_t pos
    cdef CtE* E
    if kind == FE_LOAD_BALANCER and not src_allowed(dp, sp, sip):
        return DROP_LB_SOURCE_RANGE
    for b in range(start, start + count):
        if not dp.be_flags[b] & BE_LOCAL_FALLBACK and (not local_only or dp.be_node[b] == node):
            dp.cands[ncands] = b
            ncands += 1
    if ncands == 0:
        return DROP_IPVS_NO_DEST
    if flags & SP_AFFINITY:  # IPVS persistence (the Service's ClientIP affinity timeout)
        s = ht_find(&dp.aff, sip, (<uint64_t>node << 32) | <uint32_t>sp)
        if s != NULL and dp.now - s.v1 <= dp.sp_aff_ns[sp]:
            b = find_backend(dp, sp, <uint32_t>(s.v0 >> 16), <int>(s.v0 & 0xFFFF))
            if b >= 0 and not dp.be_flags[b] & BE_LOCAL_FALLBACK and (
                    not local_only or dp.be_node[b] == node):
                be = b
                ev(dp, it, EV_AFFINITY, sp, b, node)
    if be < 0:
        if dp.ipvs_sched == IPVS_SH:
            be = dp.cands[(((sip * <uint32_t>0x61C88647U) & 0xFFFFFFFFU) >> 24)
                          % <uint32_t>ncands]
        else:
            s = ht_put(&dp.ipvs_rr, <uint64_t>fe, <uint64_t>node, &created)
            if s == NULL:
                dp.err |= ERR_NOMEM
                pos = 0
            else:
                if created:
                    s.v0 = 0
                pos = <uint64_t>s.v0
                s.v0 = <int64_t>((pos + 1) % <uint64_t>ncands)
            be = dp.cands[pos % <uint64_t>ncands]
    cdef uint32_t bip = dp.be_ip[be]
    cdef int bport = dp.be_port[be]
    if flags & SP_AFFINITY:
        s = ht_put(&dp.aff, sip, (<uint64_t>node << 32) | <uint32_t>sp, &created)
        if s == NULL:
            dp.err |= ERR_NOMEM
        else:
            s.v0 = (<int64_t>bip << 16) | bport
            s.v1 = dp.now
    E = &dp.ce[e]
    E.flags |= CT_DNAT
    E.dnat_ip = bip
    E.dnat_port = bport
    E.sp = sp
    E.be = be
    E.masq = not own_pod(dp, node, sip) and not own_pod(dp, node, bip)
    E.proto[1] = proto
    E.t[1].sip = bip
    E.t[1].sport = bport
    E.t[1].dip = sip
    E.t[1].dport = sport
    set_dst(DATA(it), it.len, bip, bport, proto, l4)
    changed(it)
    ev(dp, it, EV_IPVS_DNAT, fe, be, E.t[0].dip)
    return 0
