# ovs.pxi: Antrea's OVS bridge br-int (``kemu/compiler/antrea.py``): what a frame meets at an
# OVS port (a pod's veth, antrea-gw0, antrea-tun0): the pipeline's tables as Antrea's
# docs/design/ovs-pipeline.md lays them out (Classifier, SpoofGuard, the conntrack zone with
# AntreaProxy's ServiceLB/EndpointDNAT, EgressRule/IngressRule, L3Forwarding, L3DecTTL,
# L2ForwardingCalc, Output), and the flow-based tunnel port's Geneve / VXLAN / GRE
# encapsulation (``ovs_tun_xmit``) and decapsulation (``ovs_tun_rcv``, at the node's local
# input). No MAC learning: every port's MAC is the flows' (the compiler's tables). Twin:
# ``kemu/dataplane/reference/ovs.py``.

cdef uint64_t OVS_GVMAC = 0xAABBCCDDEEFFULL  # Antrea's Global Virtual MAC


cdef int ovs_port_xmit(DP* dp, Item* it, int i, const IfInfo* f) noexcept nogil:
    """An OVS port towards a pod: the veth's far end receives it; br-int's own internal
    port (no peer) is down."""
    if f.peer < 0:
        return end(dp, it, OUT_DROPPED, DROP_OVS_NO_FLOW, i, 0, False)
    return veth_xmit(dp, it, f)


cdef int ovs_pod_port(const DP* dp, int node, uint32_t ip) noexcept nogil:
    """The OVS port of the node's pod owning ``ip``, -1."""
    cdef int o = owner_of(dp, ip)
    if o >= 0 and dp.ifs[o].kind == IF_POD_ETH and dp.ifs[o].node == node:
        return dp.ifs[o].peer
    return -1


cdef int ovs_port_of_mac(const DP* dp, int node, uint64_t mac, uint32_t ip) noexcept nogil:
    """L2ForwardingCalc's flows: the node's OVS port for destination ``mac``: antrea-gw0,
    antrea-tun0 (the Global Virtual MAC), a pod's port (the owner of ``ip`` first, then any
    pod of the node); -1: no flow."""
    cdef int g = dp.node_br_if[node], p, k
    if mac == <uint64_t>dp.ifs[g].mac:
        return g
    if mac == OVS_GVMAC:
        return dp.node_vtep_if[node]
    p = ovs_pod_port(dp, node, ip)
    if p >= 0 and <uint64_t>dp.ifs[dp.ifs[p].peer].mac == mac:
        return p
    for k in range(dp.n_if):
        if (dp.ifs[k].kind == IF_POD_ETH and dp.ifs[k].node == node
                and <uint64_t>dp.ifs[k].mac == mac and dp.ifs[dp.ifs[k].peer].kind == IF_OVS_PORT):
            return dp.ifs[k].peer
    return -1


cdef inline int ovs_output(DP* dp, Item* it, int out) noexcept nogil:
    """Output: the frame leaves br-int on port ``out``."""
    ev(dp, it, EV_OVS_TABLE, OVS_T_OUTPUT, out, 0)
    it.a = out
    if dp.ifs[out].kind == IF_OVS_GW:  # the host's stack receives it on antrea-gw0
        it.stage = S_RX
        return go_rx(dp, it)
    it.stage = S_TX
    return go_tx(dp, it)


cdef int ovs_arp(DP* dp, Item* it, int port, int src, int node) noexcept nogil:
    """ARP: ARPSpoofGuard for a pod's port, then the ``normal`` action of a learning switch
    (every MAC known: a request goes to the owner of its target address only)."""
    cdef uint8_t* d = DATA(it)
    cdef int out = -1, g = dp.node_br_if[node]
    cdef uint64_t dmac = rd48(d, 0)
    cdef uint32_t tpa
    if it.len < 42:
        return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, port, 0, False)
    tpa = rd32(d, 38)
    if src == OVS_FROM_POD and (rd48(d, 22) != <uint64_t>dp.ifs[dp.ifs[port].peer].mac
                                or rd32(d, 28) != dp.ifs[dp.ifs[port].peer].ip):
        return end(dp, it, OUT_DROPPED, DROP_OVS_SPOOFGUARD, port, 0, False)
    if not is_mcast(dmac):
        out = ovs_port_of_mac(dp, node, dmac, tpa)
    elif tpa == dp.ifs[g].ip:
        out = g
    else:
        out = ovs_pod_port(dp, node, tpa)
    if out < 0 or out == port or dp.ifs[out].kind == IF_OVS_TUN:
        return end(dp, it, OUT_DROPPED, DROP_OVS_NO_FLOW, port, 0, False)
    ev(dp, it, EV_OVS_TABLE, OVS_T_ARP, out, 0)
    return ovs_output(dp, it, out)


cdef int ovs_in(DP* dp, Item* it, int port) noexcept nogil:
    """A frame enters br-int at ``port``: the pipeline's tables, then Output."""
    cdef int node = dp.ifs[port].node, kind = dp.ifs[port].kind
    cdef int g = dp.node_br_if[node]
    cdef int src, verdict, pod = -1, remote = -1, decision, arg = 0, out, ttl
    cdef uint8_t* d = DATA(it)
    cdef uint32_t et, sip, dip, old
    cdef uint64_t dmac, gmac = <uint64_t>dp.ifs[g].mac
    cdef int32_t r
    cdef bint routed = False, svc
    if it.len < 14:
        return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, port, 0, False)
    src = (OVS_FROM_POD if kind == IF_OVS_PORT else
           OVS_FROM_GATEWAY if kind == IF_OVS_GW else OVS_FROM_TUNNEL)
    ev(dp, it, EV_OVS_TABLE, OVS_T_CLASSIFIER, src, port)
    et = rd16(d, 12)
    if et == <uint32_t>ETH_ARP:
        return ovs_arp(dp, it, port, src, node)
    if et == <uint32_t>ETH_IPV6:
        return end(dp, it, OUT_DROPPED, DROP_IPV6, port, 0, False)
    if et != <uint32_t>ETH_IP:
        return end(dp, it, OUT_DROPPED, DROP_UNKNOWN_ETHERTYPE, port, 0, False)
    verdict = ip_check_it(it)
    if verdict:
        return end(dp, it, OUT_DROPPED, verdict, port, 0, False)
    sip = rd32(d, 26)
    if src == OVS_FROM_POD:  # SpoofGuard: the pod's own MAC and IP only
        if (rd48(d, 6) != <uint64_t>dp.ifs[dp.ifs[port].peer].mac
                or sip != dp.ifs[dp.ifs[port].peer].ip):
            return end(dp, it, OUT_DROPPED, DROP_OVS_SPOOFGUARD, port, 0, False)
        ev(dp, it, EV_OVS_TABLE, OVS_T_SPOOFGUARD, port, 0)
    if src != OVS_FROM_GATEWAY:
        # the conntrack zone (ConntrackZone/ConntrackState) and AntreaProxy's ServiceLB /
        # EndpointDNAT: a new connection to a Service is DNATed here, a reply un-DNATed; the
        # host's stack did this for what comes from antrea-gw0
        verdict = prerouting(dp, it, node, port)
        if verdict:
            return end(dp, it, OUT_DROPPED, verdict, port, 0, False)
        d = DATA(it)
    svc = it.ctx.ct >= 0 and (dp.ce[it.ctx.ct].flags & CT_DNAT) != 0
    if svc and it.ctx.new:
        ev(dp, it, EV_OVS_TABLE, OVS_T_ENDPOINT_DNAT, 0, 0)
    dip = rd32(d, 30)
    dmac = rd48(d, 0)
    # L3Forwarding's decision (the packet is rewritten after the policy tables passed it)
    r = lpm_lookup(dp.lpm, dip)
    if dip == dp.ifs[g].ip or r < 0 or dp.rt_kind[r] != RT_POD_CIDR:
        decision = OVS_L3_GATEWAY  # the gateway itself, the node, outside the pod CIDRs
        arg = 1 if src == OVS_FROM_TUNNEL else 0
    elif dp.rt_owner[r] == node:
        pod = ovs_pod_port(dp, node, dip)
        if src == OVS_FROM_TUNNEL or svc or (src == OVS_FROM_POD and dmac == gmac):
            if pod < 0:
                return end(dp, it, OUT_DROPPED, DROP_OVS_NO_FLOW, port, 0, False)
            decision = OVS_L3_LOCAL_POD
            arg = pod
        else:
            decision = OVS_L3_L2
    elif dp.ovs != ANTREA_NOENCAP and src != OVS_FROM_TUNNEL:
        decision = OVS_L3_TUNNEL
        remote = dp.rt_owner[r]
        arg = remote
    elif src != OVS_FROM_TUNNEL:
        decision = OVS_L3_GATEWAY  # noEncap: the host routes it to the peer node
    else:
        return end(dp, it, OUT_DROPPED, DROP_OVS_NO_FLOW, port, 0, False)
    if decision != OVS_L3_GATEWAY and src != OVS_FROM_GATEWAY:
        # EgressRule / IngressRule (NetworkPolicy; what goes to the gateway is judged by the
        # host's FORWARD hook) and a Service without endpoints (its REJECT)
        verdict = filter_forward(dp, it)
        if verdict:
            return end(dp, it, OUT_DROPPED, verdict, port, 0, True)
    if it.ctx.reply_dir and decision != OVS_L3_GATEWAY:  # ct(nat): a reply un-DNATed
        postrouting(dp, it, node, port)
        d = DATA(it)
    ev(dp, it, EV_OVS_TABLE, OVS_T_L3_FORWARDING, decision, arg)
    if decision == OVS_L3_LOCAL_POD:
        wr48(d, 6, gmac)
        wr48(d, 0, <uint64_t>dp.ifs[dp.ifs[pod].peer].mac)
        changed(it)
        routed = src != OVS_FROM_GATEWAY
    elif decision == OVS_L3_TUNNEL:
        wr48(d, 6, gmac)
        wr48(d, 0, OVS_GVMAC)
        changed(it)
        routed = src != OVS_FROM_GATEWAY
    elif decision == OVS_L3_GATEWAY and arg:
        wr48(d, 0, gmac)
        changed(it)
    if routed:  # L3DecTTL (the host's stack decremented it for what comes from antrea-gw0)
        old = rd16(d, 22)
        ttl = old >> 8
        if ttl <= 1:  # (a TTL the flow cache's key does not hold: not a cached path)
            dp.tr_ok = 0
            return end(dp, it, OUT_DROPPED, DROP_TTL_EXCEEDED, port, 0, False)
        wr16(d, 22, old - 0x100)
        wr16(d, 24, csum_replace16(rd16(d, 24), old, old - 0x100))
        dp.tr_k += 1  # a cached path needs the TTL to last (the flow cache)
        changed(it)
        ev(dp, it, EV_OVS_TABLE, OVS_T_L3_DEC_TTL, ttl - 1, 0)
    out = ovs_port_of_mac(dp, node, rd48(d, 0), dip)  # L2ForwardingCalc
    if out < 0 or out == port:
        return end(dp, it, OUT_DROPPED, DROP_OVS_NO_FLOW, port, 0, False)
    ev(dp, it, EV_OVS_TABLE, OVS_T_L2_FORWARDING, out, 0)
    return ovs_output(dp, it, out)


cdef int ovs_gw_xmit(DP* dp, Item* it, int i) noexcept nogil:
    """The host sends on antrea-gw0: the frame enters br-int at the gateway port."""
    return ovs_in(dp, it, i)


cdef int ovs_port_rcv(DP* dp, Item* it, int i) noexcept nogil:
    """A frame from a pod's veth or decapsulated at antrea-tun0 enters br-int."""
    return ovs_in(dp, it, i)


cdef int ovs_tun_encap(DP* dp, Item* it, int tun) noexcept nogil:
    """antrea-tun0 transmits: the flow's tun_dst is the node owning the inner destination's
    pod CIDR (L3Forwarding); wrap the frame (Geneve: UDP 6081, VNI 0, protocol 0x6558, no
    options; VXLAN: UDP 4789, VNI 0; GRE: protocol 0x6558, no key) in an outer IPv4 header
    node -> peer (TTL 64, DF: OVS's tunnel defaults), then out through the node's own stack.
    0: go on; 1: the copy ended."""
    cdef int node = dp.ifs[tun].node
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, remote = -1, hdr, proto = 0, l4 = 0, sport = 0, dport = 0
    cdef uint32_t sip = 0, dip = 0
    cdef int32_t r
    cdef uint64_t h
    cdef Buf buf
    if n >= 34 and rd16(d, 12) == <uint32_t>ETH_IP:
        sip = rd32(d, 26)
        dip = rd32(d, 30)
        l4info(d, n, &proto, &l4, &sport, &dport)
        r = lpm_lookup(dp.lpm, dip)
        if r >= 0 and dp.rt_kind[r] == RT_POD_CIDR and dp.rt_owner[r] != node:
            remote = dp.rt_owner[r]
    if remote < 0:
        return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, tun, 0, False)
    hdr = GRE_OVERHEAD if dp.ovs == ANTREA_GRE else GENEVE_OVERHEAD
    # the outer packet meets the node's MTU: a cached path holds inner packets that fit
    if <int>dp.tr_mtu > <int>dp.ifs[dp.node_eth_if[node]].mtu - (hdr - 14):
        dp.tr_mtu = dp.ifs[dp.node_eth_if[node]].mtu - (hdr - 14)
    h = flow_hash(0, 0, proto, sip, sport, dip, dport)
    cdef int src_port = 32768 + <int>(h % 28232)  # udp_flow_src_port: the local port range
    if it.off < hdr:
        if buf_get(dp, n + hdr + HEADROOM, &buf) < 0:
            return end(dp, it, OUT_DROPPED, DROP_NO_ROUTE, tun, 0, False)
        memcpy(buf.mem + HEADROOM + hdr, d, n)
        buf_put(dp, it.mem, it.cap)
        it.mem = buf.mem
        it.cap = buf.cap
        it.off = HEADROOM + hdr
    it.off -= hdr
    it.len = n + hdr
    d = DATA(it)
    memset(d, 0, hdr)
    wr16(d, 12, ETH_IP)
    d[14] = 0x45
    wr16(d, 16, hdr - 14 + n)
    wr16(d, 20, 0x4000)
    d[22] = 64
    wr32(d, 26, dp.node_ip[node])
    wr32(d, 30, dp.node_ip[remote])
    if dp.ovs == ANTREA_GRE:
        d[23] = PROTO_GRE
        wr16(d, 36, 0x6558)  # flags and version 0, transparent Ethernet bridging
    else:
        d[23] = PROTO_UDP
        wr16(d, 34, src_port)
        wr16(d, 36, GENEVE_PORT if dp.ovs == ANTREA_GENEVE else ANTREA_VXLAN_PORT)
        wr16(d, 38, 16 + n)
        if dp.ovs == ANTREA_GENEVE:
            wr16(d, 44, 0x6558)  # version 0, no options, VNI 0
        else:
            d[42] = 0x08  # VXLAN: the I flag, VNI 0
    wr16(d, 24, ip_checksum(d, 14, 20))
    changed(it)
    it.ip_ok = 0
    ev(dp, it, EV_OVS_ENCAP, remote, dp.ovs, 0)
    ctx_reset(&it.ctx)
    it.stage = S_LOCAL_OUT
    it.a = node
    return 0


cdef inline bint ovs_notrack(const DP* dp, const uint8_t* d, int n, int node) noexcept nogil:
    """Antrea's raw-table rules (pkg/agent/route/route_linux.go): Geneve and VXLAN packets
    to (PREROUTING) or from (OUTPUT) a local address are NOTRACK: no conntrack entry."""
    cdef int l4 = 14 + (d[14] & 0xF) * 4
    if dp.ovs != ANTREA_GENEVE and dp.ovs != ANTREA_VXLAN:
        return False
    if d[23] != PROTO_UDP or n < l4 + 4:
        return False
    if rd16(d, l4 + 2) != <uint32_t>(GENEVE_PORT if dp.ovs == ANTREA_GENEVE
                                       else ANTREA_VXLAN_PORT):
        return False
    return local_if_of(dp, node, rd32(d, 30)) >= 0


cdef int ovs_tun_out(DP* dp, Item* it, int node) noexcept nogil:
    """The encapsulated packet leaves through the node's stack (ip_local_out) without
    conntrack (NOTRACK): the route to the peer, the MTU, POSTROUTING, neighbour output."""
    cdef uint8_t* d = DATA(it)
    cdef uint32_t nh
    cdef int loc = dp.node_local_if[node]
    cdef int out_if = route_dev(dp, node, rd32(d, 30), &nh)
    if out_if < 0:
        return end(dp, it, OUT_DROPPED, route_drop(out_if), loc, 0, False)
    if too_big(dp, d, out_if):
        return end(dp, it, OUT_DROPPED, DROP_FRAG_NEEDED, loc, dp.ifs[out_if].mtu, True)
    return output(dp, it, node, out_if, nh)


cdef int ovs_tun_xmit(DP* dp, Item* it, int i) noexcept nogil:
    """antrea-tun0 transmits: encapsulate, then out through the node's own stack (GRE is
    tracked by conntrack there; Geneve and VXLAN are NOTRACK)."""
    if ovs_tun_encap(dp, it, i):
        return 1
    if dp.ovs == ANTREA_GRE:
        return go_local_out(dp, it)
    return ovs_tun_out(dp, it, it.a)


cdef inline int ovs_tun_len(const DP* dp, const uint8_t* d, int n, int l4) noexcept nogil:
    """The length of the tunnel headers after the outer IPv4 header if the packet is the
    node's tunnel traffic (Geneve to 6081 with its options, VXLAN to 4789, GRE carrying
    Ethernet), else 0."""
    cdef int hl
    cdef uint32_t fl
    if dp.ovs == ANTREA_GRE:
        if d[23] != PROTO_GRE or n < l4 + 4 + 14:
            return 0
        fl = rd16(d, l4)
        if rd16(d, l4 + 2) != 0x6558 or (fl & 0x07FF):
            return 0
        hl = 4 + (4 if fl & 0x8000 else 0) + (4 if fl & 0x2000 else 0) + (4 if fl & 0x1000 else 0)
        return hl if n >= l4 + hl + 14 else 0
    if d[23] != PROTO_UDP or n < l4 + 16 + 14:
        return 0
    if dp.ovs == ANTREA_GENEVE:
        if rd16(d, l4 + 2) != <uint32_t>GENEVE_PORT or rd16(d, l4 + 10) != 0x6558:
            return 0
        hl = 16 + (d[l4 + 8] & 0x3F) * 4
        return hl if n >= l4 + hl + 14 else 0
    return 16 if rd16(d, l4 + 2) == <uint32_t>ANTREA_VXLAN_PORT else 0


cdef int ovs_tun_rcv(DP* dp, Item* it, int node, int l4, int hl) noexcept nogil:
    """The node's tunnel got a packet: strip the outer headers, and the inner frame enters
    br-int at antrea-tun0 in a fresh context."""
    it.off += l4 + hl
    it.len -= l4 + hl
    changed(it)
    ev(dp, it, EV_OVS_DECAP, node, dp.ovs, 0)
    it.ip_ok = 0
    ctx_reset(&it.ctx)
    it.stage = S_RX
    it.a = dp.node_vtep_if[node]
    return go_rx(dp, it)
