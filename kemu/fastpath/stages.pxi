# stages.pxi: The stage dispatch: how a copy moves between stages (``go_*``: a direct call, with
# the hop limit), the device-kind registry (``st_tx``/``st_rx``: what sending and receiving on
# each kind of interface does; a new kind is a room plus one line here), ``run_frame`` (one frame
# and all its copies to their outcomes), and the table of rare work (``cold``) that keeps the
# common path small. Twin: ``kemu/dataplane/reference/stages.py``.

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


# ---- the device-kind registry
# Sending on an interface (``st_tx``) and receiving on one (``st_rx``) do what its kind does.
# Each kind's work lives in the room of its device; this table is the one place that maps a
# kind to it. A new kind of device: its code in ``kemu.dataplane.codes``, its room with its
# ``*_xmit``/``*_rcv`` functions, one line in each function below, and the same line in the
# twin's ``TX``/``RX`` tables (``kemu/dataplane/reference/stages.py``).
#
#   kind          transmit                          receive
#   IF_POD_ETH    veth_xmit (veth): the peer's rx   host_rcv (host): a pod's own stack
#   IF_VETH       veth_xmit (veth)                  port_rcv (bridge): into its bridge
#   IF_POD_LO     lo_xmit (veth): rx on itself      delivered
#   IF_BRIDGE     bridge_xmit (bridge)              node_rcv (routing): the node's stack
#   IF_NODE_ETH   port_xmit (bridge): the node      node_rcv (routing)
#                 network is a bridge too
#   IF_EXT_ETH    port_xmit (bridge)                host_rcv (host): an external host
#   IF_GW_ETH     port_xmit (bridge)                gw_rcv (gateway): a router
#   IF_VTEP       vxlan_xmit (tunnel)               node_rcv (routing)
#   IF_IPIP       ipip_xmit (tunnel)                node_rcv (routing): no link header
#   IF_VETH_HOST  veth_xmit (veth)                  node_rcv (routing): a routed veth
#   IF_UPLINK     uplink_xmit (bridge): onto the    uplink_rcv (bridge): ebtables DNAT,
#                 node network's segment            into its bridge
#   IF_CILIUM_HOST veth_xmit (veth)                 node_rcv (routing): cilium_host/_net
#   IF_OVS_PORT   ovs_port_xmit (ovs): the pod's    ovs_port_rcv (ovs): br-int's pipeline
#   IF_OVS_GW     ovs_gw_xmit (ovs): the host       node_rcv (routing): OVS output to
#                 sends into br-int                 the host
#   IF_OVS_TUN    ovs_tun_xmit (ovs): encapsulate   ovs_port_rcv (ovs): decapsulated
cdef int st_tx(DP* dp, Item* it) noexcept nogil:
    cdef int i = it.a
    cdef IfInfo* f = &dp.ifs[i]
    cdef int kind = f.kind
    hop(dp, it, i, DIR_OUT)
    touched(dp, f)
    if kind == IF_POD_ETH or kind == IF_VETH or kind == IF_VETH_HOST or kind == IF_CILIUM_HOST:
        return veth_xmit(dp, it, f)
    elif kind == IF_POD_LO:
        return lo_xmit(dp, it)
    elif kind == IF_BRIDGE:
        return bridge_xmit(dp, it, i, f)
    elif kind == IF_NODE_ETH or kind == IF_EXT_ETH or kind == IF_GW_ETH:
        return port_xmit(dp, it, i, f)
    elif kind == IF_VTEP:
        return vxlan_xmit(dp, it, i)
    elif kind == IF_IPIP:
        return ipip_xmit(dp, it, i)
    elif kind == IF_UPLINK:
        return uplink_xmit(dp, it, i)
    elif kind == IF_OVS_PORT:
        return ovs_port_xmit(dp, it, i, f)
    elif kind == IF_OVS_GW:
        return ovs_gw_xmit(dp, it, i)
    elif kind == IF_OVS_TUN:
        return ovs_tun_xmit(dp, it, i)
    return go_tx(dp, it)  # no such device kind: the copy loops to the hop limit


cdef int st_rx(DP* dp, Item* it) noexcept nogil:
    cdef int i = it.a
    cdef IfInfo* f = &dp.ifs[i]
    cdef int kind = f.kind
    cdef uint64_t dmac
    hop(dp, it, i, DIR_IN)
    touched(dp, f)
    if kind == IF_VETH:
        return port_rcv(dp, it, i, f)
    if kind == IF_POD_LO:
        return end(dp, it, OUT_DELIVERED, 0, i, 0, False)
    if kind == IF_UPLINK:  # a bridge port: any MAC
        return uplink_rcv(dp, it, i, f)
    if kind >= IF_OVS_PORT and kind != IF_OVS_GW:  # br-int's ports take any MAC: its flows
        return ovs_port_rcv(dp, it, i)             # decide (one test for the other kinds)
    # every other kind is an Ethernet device that drops frames for another host
    if it.len < 14:
        return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, i, 0, False)
    if kind == IF_IPIP:  # no link header (kemu's zeros): every packet is the node's to route
        return node_rcv(dp, it)
    dmac = rd48(DATA(it), 0)
    if dmac != <uint64_t>f.mac and not is_mcast(dmac):
        return end(dp, it, OUT_DROPPED, DROP_OTHERHOST, i, 0, False)
    if (kind == IF_NODE_ETH or kind == IF_BRIDGE or kind == IF_VTEP or kind == IF_VETH_HOST
            or kind == IF_CILIUM_HOST or kind == IF_OVS_GW):
        return node_rcv(dp, it)
    if kind == IF_GW_ETH:
        return gw_rcv(dp, it, i, f)
    return host_rcv(dp, it, i, f, kind)


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
    it.nat = 0
    it.frag_max = 0
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
        if dp.sock_lb and it.a == iface and dp.ifs[iface].kind == IF_POD_ETH:
            sock_connect(dp, it, iface)  # Cilium's socket LB (inject.pxi)
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


# Rare work is called through this table of pointers: the compiler cannot inline it, which
# keeps the common path of the stages small (fewer registers spilled).
ctypedef struct Cold:
    int (*prerouting_new)(DP*, Item*, int, int, int, int, int, uint32_t,
                          uint32_t) noexcept nogil
    void (*related_pre)(DP*, Item*, int, int) noexcept nogil
    void (*related_post)(DP*, Item*, int) noexcept nogil
    void (*masquerade)(DP*, Item*, int, int, int, int, int, bint) noexcept nogil
    int (*flood)(DP*, Item*, int, int, int, uint64_t) noexcept nogil
    int (*vxlan_encap)(DP*, Item*, int) noexcept nogil
    int (*ipip_encap)(DP*, Item*, int) noexcept nogil
    void (*fix_l2)(DP*, Item*, int) noexcept nogil
    void (*fc_insert)(DP*) noexcept nogil
    int (*policy)(DP*, Item*) noexcept nogil
    int (*defrag)(DP*, Item*, int, int) noexcept nogil
    int (*frag_output)(DP*, Item*, int, int, uint32_t, int) noexcept nogil
    int (*frag_bridge)(DP*, Item*, int, int) noexcept nogil

cdef Cold cold
cold.prerouting_new = prerouting_new
cold.related_pre = related_pre
cold.related_post = related_post
cold.masquerade = masquerade
cold.flood = flood
cold.vxlan_encap = vxlan_encap
cold.ipip_encap = ipip_encap
cold.fix_l2 = fix_l2
cold.fc_insert = fc_insert
cold.policy = policy_check
cold.defrag = defrag
cold.frag_output = frag_output
cold.frag_bridge = frag_bridge
