# bridge.pxi: The Linux bridge (B-1..B-6): MAC learning, FDB lookup and ageing on the emulated
# clock, flooding of broadcast/multicast/unknown unicast, hairpin, br_netfilter on bridged IPv4.
# Twin: ``kemu/dataplane/reference/bridge.py``.

cdef inline int bridge_xmit(DP* dp, Item* it, int i, const IfInfo* f) noexcept nogil:
    """The node's bridge device transmits (br_dev_xmit): into the bridge, from its local
    port; the node's context (conntrack, NAT) stays with the packet."""
    it.stage = S_BRIDGE_IN
    it.a = f.bridge
    it.b = i
    return go_bridge_in(dp, it)


cdef inline int port_xmit(DP* dp, Item* it, int i, const IfInfo* f) noexcept nogil:
    """A host on the node network transmits: the segment is a bridge whose port is the
    host's interface; a new namespace's context starts."""
    ctx_reset(&it.ctx)
    it.stage = S_BRIDGE_IN
    it.a = f.bridge
    it.b = i
    return go_bridge_in(dp, it)


cdef inline int port_rcv(DP* dp, Item* it, int i, const IfInfo* f) noexcept nogil:
    """A bridge port (a host-side veth) receives: br_handle_frame takes the frame into the
    bridge it is enslaved to."""
    it.stage = S_BRIDGE_IN
    it.a = f.bridge
    it.b = i
    return go_bridge_in(dp, it)


cdef inline int uplink_xmit(DP* dp, Item* it, int i) noexcept nogil:
    """An uplink enslaved to a node bridge (Azure CNI bridge mode's eth0) transmits onto the
    wire: the node network's segment (the last bridge) takes it from this port."""
    ctx_reset(&it.ctx)
    it.stage = S_BRIDGE_IN
    it.a = dp.n_nodes
    it.b = i
    return go_bridge_in(dp, it)


cdef int uplink_rcv(DP* dp, Item* it, int i, const IfInfo* f) noexcept nogil:
    """An uplink receives from the wire: ebtables nat PREROUTING on it (Azure's
    ``SetDnatForIPAddress``: an IPv4 packet to one of the node's bridged pods gets that pod's
    MAC; ``SetDnatForArpReplies``: an ARP reply is broadcast), then into its bridge."""
    cdef uint8_t* d = DATA(it)
    cdef uint32_t et
    cdef int o
    cdef int64_t mac = -1
    if it.len >= 14:
        et = rd16(d, 12)
        if et == <uint32_t>ETH_IP and it.len >= 34:
            o = owner_of(dp, rd32(d, 30))
            if (o >= 0 and dp.ifs[o].kind == IF_POD_ETH and dp.ifs[o].node == f.node
                    and dp.ifs[dp.ifs[o].peer].kind == IF_VETH):
                mac = dp.ifs[o].mac
        elif et == <uint32_t>ETH_ARP and it.len >= 22 and rd16(d, 20) == 2:
            mac = <int64_t>BROADCAST
        if mac >= 0 and rd48(d, 0) != <uint64_t>mac:
            wr48(d, 0, <uint64_t>mac)
            changed(it)
            ev(dp, it, EV_EBT_DNAT, i, mac >> 24, mac & 0xFFFFFF)
    return port_rcv(dp, it, i, f)


cdef void ebt_snat(DP* dp, Item* it, int q) noexcept nogil:
    """ebtables nat POSTROUTING on the uplink (Azure's ``SetSnatForInterface``: ``-s unicast
    -o eth0 -j snat --to-src <eth0 MAC> --snat-arp``): a unicast source MAC becomes the
    uplink's, an ARP packet's sender hardware address too."""
    cdef uint8_t* d = DATA(it)
    cdef uint64_t smac = rd48(d, 6)
    cdef uint64_t mac = <uint64_t>dp.ifs[q].mac
    if is_mcast(smac) or smac == mac:
        return
    wr48(d, 6, mac)
    if rd16(d, 12) == <uint32_t>ETH_ARP and it.len >= 28:
        wr48(d, 22, mac)
    changed(it)
    ev(dp, it, EV_EBT_SNAT, q, <int64_t>(smac >> 24), <int64_t>(smac & 0xFFFFFF))


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
        if q != p or dp.ifs[q].hairpin == 1:
            ncopies += 1
    if has_local:
        c = fork(dp, &orig, S_RX, local_if, -1)
        if c != NULL:
            ev(dp, c, EV_BR_LOCAL, local_if, 0, 0)
    for k in range(s + cnt - 1, s - 1, -1):
        q = dp.br_ports[k]
        if q != p or dp.ifs[q].hairpin == 1:
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
        d = DATA(it)  # (a reassembled packet may have moved)
        n = it.len
        new_dst = rd32(d, 30)
        # br_nf_pre_routing_finish: daddr changed (not by kube-router's IPVS, which is at
        # LOCAL_IN: the frame goes up to the node as it came, and is routed from there)
        if new_dst != dst_before and not dp.ipvs:
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
            if q == p and not (dp.ifs[q].hairpin and dp.ifs[q].bridge == b):
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
        verdict = filter_forward(dp, it)
        if verdict:
            return end(dp, it, OUT_DROPPED, verdict, q, 0, False)
        postrouting(dp, it, dp.ifs[local_if].node, local_if)
    ev(dp, it, EV_BR_FLOOD if it.flood else EV_BR_FDB, q, b, 0)
    # a node bridge sends out of the veth; on the node network the port is the host itself
    it.a = q
    it.stage = S_TX if dp.ifs[q].kind == IF_VETH else S_RX
    if dp.ifs[q].kind == IF_UPLINK and dp.ifs[q].bridge == b:  # out of its master: the wire
        it.stage = S_TX
        ebt_snat(dp, it, q)
    if it.frag_max:  # br_nf_dev_queue_xmit: refragmented as conntrack found it (frag)
        verdict = cold.frag_bridge(dp, it, q, dp.ifs[q].node)
        if verdict:
            return verdict
    if it.stage == S_TX:
        return go_tx(dp, it)
    return go_rx(dp, it)
