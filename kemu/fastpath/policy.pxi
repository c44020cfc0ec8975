# policy.pxi: NetworkPolicy at filter FORWARD/OUTPUT for a NEW connection (``policy_check``, rare
# work through the ``cold`` table): egress of a source pod on its node, ingress of a destination
# pod on its node, each only when the pod is isolated that way (P-1, P-2), EV_L7_REDIRECT after
# the ALLOW when only Cilium L7 rules allow (rule ids >= ``l7_first``); a pod to itself and a
# node to its own pods pass (P-9); the verdict is the lowest rule id allowing, from the policy
# map (per selecting policy, a lookup for each kind of key it holds: ``pd_keys``) and the rules
# with port ranges, named ports or ipBlock peers (rule by rule). ``PolC`` (``state.pxi``) holds
# the loaded tables; ``pol_prepare`` checks them and ``pol_commit`` points ``DP.pol`` at them
# (``load.pxi``).
# Twin: ``kemu/dataplane/reference/policy.py``.

from kemu.dataplane.tables import PORT_ANY as _PORT_ANY

if _PORT_ANY != PORT_ANY_C:
    raise ImportError(f"kemu._fastpath: PORT_ANY_C {PORT_ANY_C} != tables.PORT_ANY {_PORT_ANY}")


cdef inline uint64_t pol_key(int peer, int proto, int port) noexcept nogil:
    return (<uint64_t>(peer + 1) << 32) | (<uint64_t>proto << 17) | <uint64_t>port


cdef inline bint pol_ported(int proto) noexcept nogil:
    return proto == PROTO_TCP or proto == PROTO_UDP or proto == PROTO_SCTP


cdef bint pol_rule_allows(const PolC* P, int r, int ident, uint32_t rip, int proto, int port,
                          int named_pod) noexcept nogil:
    """One rule in full: a peer and a port of it match (P-4..P-7)."""
    cdef int k, x, s, n, e, name
    cdef bint peer = P.any_peer[r] != 0
    cdef bint hit
    cdef HSlot* h
    if not peer and ident >= 0:
        peer = ht_find(&P.ri, <uint64_t>r, <uint64_t>ident) != NULL
    if not peer:
        s = P.cidr_start[r]
        for k in range(s, s + P.cidr_count[r]):
            if (rip & P.cb_mask[k]) == P.cb_net[k]:
                hit = True
                e = P.cb_exc_start[k]
                for x in range(e, e + P.cb_exc_count[k]):
                    if (rip & P.ex_mask[x]) == P.ex_net[x]:
                        hit = False
                        break
                if hit:
                    peer = True
                    break
    if not peer:
        return False
    s = P.port_start[r]
    n = P.port_count[r]
    if n == 0:
        return True
    if not pol_ported(proto):
        return False
    for k in range(s, s + n):
        if P.port_proto[k] != proto:
            continue
        name = P.port_name[k]
        if name >= 0:
            if named_pod >= 0:
                h = ht_find(&P.named, <uint64_t>named_pod,
                            (<uint64_t>proto << 32) | <uint64_t>name)
                if h != NULL and h.v0 == port:
                    return True
        elif P.port_lo[k] <= port <= P.port_hi[k]:
            return True
    return False


cdef int pol_verdict(const PolC* P, int pod, int dirn, uint32_t rip, int rpod, int proto,
                     int port, int named_pod) noexcept nogil:
    """reference ``PolicyMaps.verdict``: the lowest rule id allowing, or -1."""
    cdef int k = 2 * pod + dirn - 1
    cdef int s = P.sel_start[k], n = P.sel_count[k]
    cdef int ident = P.pod_ident[rpod] if rpod >= 0 else -1
    cdef int best = -1, j, pd, q, peer, r, ss, bits, kb
    cdef bint ported = pol_ported(proto)
    cdef HSlot* h
    for j in range(s, s + n):
        pd = 2 * P.sel_pol[j] + dirn - 1
        bits = P.pd_keys[pd]  # only the kinds of key this policy has
        if ident < 0:
            bits &= 0x38
        if not ported:
            bits &= 0x09
        for q in range(2):
            peer = ident if q == 0 else -1
            kb = (bits >> (3 * q)) & 7
            if kb & 1:
                h = ht_find(&P.pm, <uint64_t>pd, pol_key(peer, 0, PORT_ANY_C))
                if h != NULL and (best < 0 or h.v0 < best):
                    best = <int>h.v0
            if kb & 2:
                h = ht_find(&P.pm, <uint64_t>pd, pol_key(peer, proto, port))
                if h != NULL and (best < 0 or h.v0 < best):
                    best = <int>h.v0
            if kb & 4:
                h = ht_find(&P.pm, <uint64_t>pd, pol_key(peer, proto, PORT_ANY_C))
                if h != NULL and (best < 0 or h.v0 < best):
                    best = <int>h.v0
        ss = P.slow_start[pd]
        for q in range(ss, ss + P.slow_count[pd]):
            r = P.slow_rule[q]
            if (best < 0 or r < best) and pol_rule_allows(P, r, ident, rip, proto, port,
                                                         named_pod):
                best = r
        if 0 <= best < P.l7_first:
            break  # sel_pol ascends and rule ids go policy by policy: no lower id follows
            # (an L7 rule's may still lose to a later policy's L3/L4 rule)
    return best


cdef bint pol_judge(DP* dp, Item* it, int pod, int dirn, uint32_t rip, int rpod, int proto,
                    int port, int named_pod) noexcept nogil:
    cdef const PolC* P = &dp.pol
    cdef int r
    if P.sel_count[2 * pod + dirn - 1] == 0:
        return True  # not isolated that way (P-1): nothing recorded
    if proto == PROTO_ICMP and P.icmp_allow:
        ev(dp, it, EV_POLICY_ALLOW, pod, dirn, -1)  # P-8 knob
        return True
    r = pol_verdict(P, pod, dirn, rip, rpod, proto, port, named_pod)
    if r < 0:
        ev(dp, it, EV_POLICY_DENY, pod, dirn, -1)
        return False
    ev(dp, it, EV_POLICY_ALLOW, pod, dirn, r)
    if r >= P.l7_first:  # only L7 rules allow it: to the node's HTTP proxy
        ev(dp, it, EV_L7_REDIRECT, pod, port, r)
    return True


cdef inline int pol_pod_of(const PolC* P, uint32_t ip) noexcept nogil:
    cdef HSlot* h = ht_find(&P.pod_ip, ip, 0)
    return <int>h.v0 if h != NULL else -1


cdef int policy_check(DP* dp, Item* it) noexcept nogil:
    """reference ``Policy._policy``: 0 or DROP_POLICY for a new connection's packet."""
    cdef const PolC* P = &dp.pol
    cdef uint8_t* d = DATA(it)
    cdef int node = it.ctx.node, proto, l4, sport, dport, spod, dpod
    cdef uint32_t sip, dip
    l4info(d, it.len, &proto, &l4, &sport, &dport)
    sip = rd32(d, 26)
    dip = rd32(d, 30)
    if sip == dip:
        return 0  # P-9: a pod reaches itself
    spod = pol_pod_of(P, sip)
    dpod = pol_pod_of(P, dip)
    if spod >= 0 and P.pod_node[spod] == node:
        if not pol_judge(dp, it, spod, POL_EGRESS, dip, dpod, proto, dport, dpod):
            return DROP_POLICY
    if dpod >= 0 and P.pod_node[dpod] == node and local_if_of(dp, node, sip) < 0:
        if not pol_judge(dp, it, dpod, POL_INGRESS, sip, spod, proto, dport, dpod):
            return DROP_POLICY
    return 0


cdef void pol_free(PolC* P) noexcept nogil:
    ht_free(&P.pm)
    ht_free(&P.ri)
    ht_free(&P.named)
    ht_free(&P.pod_ip)


cdef int _pol_table(HTab* h, int64_t n) except -1:
    if h.s != NULL:
        ht_free(h)
    if ht_init(h, n * 10 // 7 + 16) < 0:
        raise MemoryError()
    return 0


cdef int _pol_put(HTab* h, uint64_t k0, uint64_t k1, int64_t v) except -1:
    cdef bint created
    cdef HSlot* s = ht_put(h, k0, k1, &created)
    if s == NULL:
        raise MemoryError()
    if created:
        s.v0 = v
    return 0


def _pol_bad(what):
    raise ValueError(f"inconsistent tables: {what}")


def pol_prepare(t):
    """``load``'s policy checks (the C code indexes without bounds checks) and the arrays it
    points at; None without policies."""
    n_pol = len(t.pol_name)
    n_pods = len(t.pod_key)
    n_rule = len(t.rule_pol)
    bad = _pol_bad
    if n_pol == 0:
        return None
    if not 0 <= int(t.rule_l7_count) <= n_rule:
        bad("rule_l7_count is not 0..rules")
    sel_start, sel_count, sel_pol = _i32(t.sel_start), _i32(t.sel_count), _i32(t.sel_pol)
    if len(sel_start) != 2 * n_pods or len(sel_count) != 2 * n_pods:
        bad("sel_start/sel_count are not 2 per pod")
    if len(sel_pol) and not (0 <= int(sel_pol.min()) and int(sel_pol.max()) < n_pol):
        bad("sel_pol names a policy that does not exist")
    if len(sel_start) and (int((sel_start + sel_count).max()) > len(sel_pol)
                           or int(sel_start.min()) < 0 or int(sel_count.min()) < 0):
        bad("a selection range outside sel_pol")
    pod_ident = _i32(t.pod_ident)
    if len(pod_ident) != n_pods:
        bad("pod_ident is not one per pod")
    slow_start, slow_count = _i32(t.pd_slow_start), _i32(t.pd_slow_count)
    slow_rule = _i32(t.slow_rule)
    pd_keys = _i32(t.pd_keys)
    if not len(slow_start) == len(slow_count) == len(pd_keys) == 2 * n_pol:
        bad("pd_keys/pd_slow_start/pd_slow_count are not 2 per policy")
    if int((slow_start + slow_count).max()) > len(slow_rule):
        bad("a slow-rule range outside slow_rule")
    if len(slow_rule) and not (0 <= int(slow_rule.min()) and int(slow_rule.max()) < n_rule):
        bad("slow_rule names a rule that does not exist")
    rule_cols = [_i32(t.rule_any_peer), _i32(t.rule_port_start), _i32(t.rule_port_count),
                 _i32(t.rule_cidr_start), _i32(t.rule_cidr_count)]
    if any(len(a) != n_rule for a in rule_cols):
        bad("rule arrays of different lengths")
    port_cols = [_i32(t.port_proto), _i32(t.port_lo), _i32(t.port_hi), _i32(t.port_name)]
    n_port = len(port_cols[0])
    if any(len(a) != n_port for a in port_cols):
        bad("port arrays of different lengths")
    if n_rule and int((rule_cols[1] + rule_cols[2]).max()) > n_port:
        bad("a rule's ports outside the port arrays")
    for a in rule_cols[1:] + [slow_start, slow_count]:
        if len(a) and int(a.min()) < 0:
            bad("a negative start or count")
    cb_net = np.ascontiguousarray(t.cb_net, dtype=np.uint32)
    cb_mask = np.ascontiguousarray(t.cb_mask, dtype=np.uint32)
    cb_exc_start, cb_exc_count = _i32(t.cb_exc_start), _i32(t.cb_exc_count)
    ex_net = np.ascontiguousarray(t.ex_net, dtype=np.uint32)
    ex_mask = np.ascontiguousarray(t.ex_mask, dtype=np.uint32)
    if not (len(cb_net) == len(cb_mask) == len(cb_exc_start) == len(cb_exc_count)) or len(
            ex_net) != len(ex_mask):
        bad("ipBlock arrays of different lengths")
    if n_rule and int((rule_cols[3] + rule_cols[4]).max()) > len(cb_net):
        bad("a rule's ipBlocks outside the ipBlock arrays")
    if len(cb_net) and (int((cb_exc_start + cb_exc_count).max()) > len(ex_net)
                        or int(cb_exc_start.min()) < 0 or int(cb_exc_count.min()) < 0):
        bad("an ipBlock's excepts outside the except arrays")
    pm_rule = _i32(t.pm_rule)
    if not (len(t.pm_pd) == len(t.pm_peer) == len(t.pm_proto) == len(t.pm_port)
            == len(pm_rule)):
        bad("policy map arrays of different lengths")
    if len(pm_rule) and not (0 <= int(pm_rule.min()) and int(pm_rule.max()) < n_rule):
        bad("the policy map names a rule that does not exist")
    if len(t.ri_rule) != len(t.ri_ident) or not (
            len(t.np_pod) == len(t.np_proto) == len(t.np_name) == len(t.np_port)):
        bad("identity or named-port arrays of different lengths")
    pod_node = np.full(max(1, n_pods), -1, np.int32)
    eth = _i32(t.pod_eth_if)
    if len(eth) != n_pods:
        bad("pod_eth_if is not one per pod")
    has = eth >= 0
    if has.any() and int(eth.max()) >= int(t.n_ifaces):
        bad("pod_eth_if names an interface that does not exist")
    pod_node[:n_pods][has] = _i32(t.if_node)[eth[has]]
    pods = np.flatnonzero(has)
    pod_ips = np.asarray(t.if_ip, dtype=np.uint32)[eth[has]]
    arrays = [pod_node, pod_ident, sel_start, sel_count, sel_pol, slow_start, slow_count,
              slow_rule, pd_keys] + rule_cols + port_cols + [cb_net, cb_mask, cb_exc_start,
                                                    cb_exc_count, ex_net, ex_mask]
    arrays = [a if len(a) else np.zeros(1, a.dtype) for a in arrays]
    return (n_pol, bool(t.pol_icmp_allow), arrays, pm_rule, pods, pod_ips)


cdef int pol_commit(DP* dp, object prep, object t, list keep) except -1:
    """Point ``dp.pol`` at the prepared arrays (kept alive in ``keep``) and build the hash
    tables; ``prep`` None: no policies."""
    cdef PolC* P = &dp.pol
    if prep is None:
        P.n = 0
        return 0
    n_pol, icmp_allow, arrays, pm_rule, pods, pod_ips = prep
    _pol_table(&P.pm, len(pm_rule))
    _pol_table(&P.ri, len(t.ri_rule))
    _pol_table(&P.named, len(t.np_pod))
    _pol_table(&P.pod_ip, len(pods))
    for pd, peer, proto, port, r in zip(t.pm_pd.tolist(), t.pm_peer.tolist(),
                                        t.pm_proto.tolist(), t.pm_port.tolist(),
                                        pm_rule.tolist()):
        _pol_put(&P.pm, <uint64_t>pd, pol_key(peer, proto, port), r)
    for r, i in zip(t.ri_rule.tolist(), t.ri_ident.tolist()):
        _pol_put(&P.ri, <uint64_t>r, <uint64_t>i, 1)
    for p, proto, name, port in zip(t.np_pod.tolist(), t.np_proto.tolist(),
                                    t.np_name.tolist(), t.np_port.tolist()):
        _pol_put(&P.named, <uint64_t>p, (<uint64_t>proto << 32) | <uint64_t>name, port)
    for ip, p in zip(pod_ips.tolist(), pods.tolist()):
        _pol_put(&P.pod_ip, <uint64_t>ip, 0, p)
    keep.extend(arrays)
    (pod_node, pod_ident, sel_start, sel_count, sel_pol, slow_start, slow_count, slow_rule,
     pd_keys, any_peer, port_start, port_count, cidr_start, cidr_count, port_proto, port_lo,
     port_hi, port_name, cb_net, cb_mask, cb_exc_start, cb_exc_count, ex_net, ex_mask) = arrays
    P.pod_node = <int32_t*>cnp.PyArray_DATA(pod_node)
    P.pod_ident = <int32_t*>cnp.PyArray_DATA(pod_ident)
    P.sel_start = <int32_t*>cnp.PyArray_DATA(sel_start)
    P.sel_count = <int32_t*>cnp.PyArray_DATA(sel_count)
    P.sel_pol = <int32_t*>cnp.PyArray_DATA(sel_pol)
    P.slow_start = <int32_t*>cnp.PyArray_DATA(slow_start)
    P.slow_count = <int32_t*>cnp.PyArray_DATA(slow_count)
    P.slow_rule = <int32_t*>cnp.PyArray_DATA(slow_rule)
    P.pd_keys = <int32_t*>cnp.PyArray_DATA(pd_keys)
    P.any_peer = <int32_t*>cnp.PyArray_DATA(any_peer)
    P.port_start = <int32_t*>cnp.PyArray_DATA(port_start)
    P.port_count = <int32_t*>cnp.PyArray_DATA(port_count)
    P.cidr_start = <int32_t*>cnp.PyArray_DATA(cidr_start)
    P.cidr_count = <int32_t*>cnp.PyArray_DATA(cidr_count)
    P.port_proto = <int32_t*>cnp.PyArray_DATA(port_proto)
    P.port_lo = <int32_t*>cnp.PyArray_DATA(port_lo)
    P.port_hi = <int32_t*>cnp.PyArray_DATA(port_hi)
    P.port_name = <int32_t*>cnp.PyArray_DATA(port_name)
    P.cb_net = <uint32_t*>cnp.PyArray_DATA(cb_net)
    P.cb_mask = <uint32_t*>cnp.PyArray_DATA(cb_mask)
    P.cb_exc_start = <int32_t*>cnp.PyArray_DATA(cb_exc_start)
    P.cb_exc_count = <int32_t*>cnp.PyArray_DATA(cb_exc_count)
    P.ex_net = <uint32_t*>cnp.PyArray_DATA(ex_net)
    P.ex_mask = <uint32_t*>cnp.PyArray_DATA(ex_mask)
    P.icmp_allow = icmp_allow
    P.l7_first = len(t.rule_pol) - int(t.rule_l7_count)
    P.n = n_pol
    return 0
