# netfilter.pxi: The netfilter hooks of a node: PREROUTING / OUTPUT (conntrack lookup, then
# KUBE-SERVICES for new flows), FORWARD (``filter_forward``: the verdict kube-proxy's REJECT
# left, then NetworkPolicy's, ``policy.pxi``),
# POSTROUTING (SNAT of marked flows and of pod traffic leaving the cluster, un-NAT of RELATED
# ICMP) and LOCAL_IN (``local_in_nat``: a reply to the node's own socket un-DNATed). A new hook
# or a stage at a hook (NetworkPolicy) is called from here. Twin: ``kemu/dataplane/reference/netfilter.py``.

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
    if rd16(d, 20) & 0x3FFF:  # a fragment: nf_defrag_ipv4 first (priority -400)
        r = cold.defrag(dp, it, node, DEFRAG_OUT if in_if == dp.node_local_if[node] else
                        DEFRAG_BRIDGE_IN if dp.ifs[in_if].kind == IF_VETH else DEFRAG_IN)
        if r:
            return r
        d = DATA(it)
        n = it.len
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
    cdef int n = it.len, e, fe, r, ret = 0
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
        if s != NULL and dp.fe_kind[s.v0] == FE_HOST_PORT and local_if_of(dp, node, dip) < 0:
            s = NULL  # another node's hostPort: not a local address here
        if s == NULL and local_if_of(dp, node, dip) >= 0 and (
                not dp.ipvs or dip == dp.node_ip[node]):  # kube-router: the node IP only
            s = ht_find(&dp.fe_np, 0, (<uint64_t>proto << 16) | <uint64_t>dport)
        if s != NULL:
            fe = <int>s.v0
            if dp.ipvs and dp.fe_kind[fe] != FE_HOST_PORT:
                r = ipvs_service(dp, it, e, node, fe, sip, sport, proto, l4)
            else:
                r = service(dp, it, e, node, fe, sip, sport, proto, l4)
            if r == DROP_IPVS_NO_DEST:
                ret = r  # dropped at LOCAL_IN before any forwarding (ip_vs_leave)
            elif r:
                ctx.verdict = r
                ctx.verdict_sp = dp.fe_sp[fe]
    E = &dp.ce[e]
    ct_update(dp, E, False, d, n, l4, proto)
    ct_set(dp, node, E.proto[0], E.t[0].sip, E.t[0].sport, E.t[0].dip, E.t[0].dport, e, 0)
    E = &dp.ce[e]
    ct_set(dp, node, E.proto[1], E.t[1].sip, E.t[1].sport, E.t[1].dip, E.t[1].dport, e, 1)
    if ret:  # the packet is dropped: its unconfirmed entry goes with it
        ct_delete(dp, e)
        ctx.ct = -1
    return ret


cdef inline int filter_forward(DP* dp, Item* it) noexcept nogil:
    """filter FORWARD/OUTPUT for NEW flows: KUBE-SERVICES REJECT/DROP (S-9), then
    NetworkPolicy (``policy.pxi``, rare work; one test when the tables have no policies)."""
    if it.ctx.new:
        if it.ctx.verdict:
            return it.ctx.verdict
        if dp.pol.n:
            return cold.policy(dp, it)
    return 0


cdef inline bint egress_masq(const DP* dp, int node, int out_if, uint32_t sip,
                             uint32_t dip) noexcept nogil:
    """flannel ipMasq (M-5, OV-5): ``-s <node podCIDR> ! -d <nonMasqueradeCIDRs> -j
    MASQUERADE`` for a new flow, where it leaves through the node's eth0."""
    cdef int32_t r
    cdef int k
    if not dp.egress_masq or out_if != dp.node_eth_if[node]:
        return False
    r = lpm_lookup(dp.lpm, sip)
    if r < 0 or dp.rt_kind[r] != RT_POD_CIDR or dp.rt_owner[r] != node:
        return False
    for k in range(dp.n_nm):
        if (dip & dp.nm_mask[k]) == dp.nm_net[k]:
            return False
    return True


cdef void postrouting(DP* dp, Item* it, int node, int out_if) noexcept nogil:
    """KUBE-POSTROUTING masquerade for marked new flows (S-7), flannel's for pod traffic
    leaving the cluster (M-5); reply un-DNAT; confirm."""
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
        if ctx.new and not E.flags & CT_SNAT and (
                E.masq or egress_masq(dp, node, out_if, rd32(d, 26), rd32(d, 30))):
            l4info(d, n, &proto, &l4, &sport, &dport)
            dp.tr_ok = 0  # rare work: not a path the flow cache holds
            cold.masquerade(dp, it, e, node, out_if, proto, l4,
                            dp.masq_rf if E.masq else dp.egress_rf)
        elif E.flags & CT_SNAT:
            l4info(d, n, &proto, &l4, &sport, &dport)
            set_src(d, n, E.snat_ip, E.snat_port if proto != PROTO_ICMP else -1, proto, l4)
            changed(it)
    elif E.flags & CT_DNAT:
        l4info(d, n, &proto, &l4, &sport, &dport)
        set_src(d, n, E.t[0].dip, E.t[0].dport if proto != PROTO_ICMP else -1, proto, l4)
        changed(it)
        ev(dp, it, EV_UNDNAT, E.sp, E.be, node)


cdef inline void local_in_nat(DP* dp, Item* it, int node) noexcept nogil:
    """NF_INET_LOCAL_IN conntrack NAT: a reply delivered to the node's own stack is
    un-DNATed here (the source back to the Service address the node's socket connected to,
    CT-2), as POSTROUTING does for a reply forwarded on; its un-SNAT was done at
    PREROUTING."""
    cdef Ctx* ctx = &it.ctx
    cdef int e = ctx.ct, proto, l4, sport, dport
    cdef CtE* E
    if e < 0 or ctx.node != node:
        return
    E = &dp.ce[e]
    if ctx.reply_dir and E.flags & CT_DNAT:
        l4info(DATA(it), it.len, &proto, &l4, &sport, &dport)
        set_src(DATA(it), it.len, E.t[0].dip, E.t[0].dport if proto != PROTO_ICMP else -1,
                proto, l4)
        changed(it)
        ev(dp, it, EV_UNDNAT, E.sp, E.be, node)
