# routing.pxi: A node's IP stack (R-1..R-5): local addresses, the route lookup per node,
# neighbours (ARP cache, static entries of the node network), ip_rcv -> PREROUTING -> local input
# or forward (TTL, FORWARD) -> output (POSTROUTING, neighbour output), and the node's own packets
# (``st_local_out``). Twin: ``kemu/dataplane/reference/routing.py``.

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


cdef int node_route(const DP* dp, int node, uint32_t dst) noexcept nogil:
    """reference ``_node_route``: the first (longest) route of the node's own table (R-2)
    containing ``dst``, -1."""
    cdef int k, s = dp.nrt_start[node]
    for k in range(s, s + dp.nrt_count[node]):
        if ((dst ^ dp.nrt_prefix[k]) & dp.nrt_mask[k]) == 0:
            return k
    return -1


cdef int node_route_dev(const DP* dp, int node, uint32_t dst, uint32_t* nh) noexcept nogil:
    cdef int k = node_route(dp, node, dst)
    if k < 0:
        nh[0] = 0
        return -1
    nh[0] = dp.nrt_nh[k]
    return dp.nrt_if[k]


cdef inline int route_id(const DP* dp, int node, uint32_t dst) noexcept nogil:
    """reference ``_route_id``: the route's id for EV_ROUTE (a node's own route k:
    ``n_rt + k``), -1."""
    cdef int k
    if dp.nrt_count[node]:
        k = node_route(dp, node, dst)
        return dp.n_rt + k if k >= 0 else -1
    return lpm_lookup(dp.lpm, dst)


cdef inline int route_drop(int out_if) noexcept nogil:
    """reference ``route_drop``: no route (-1) or the reason of a discarding route."""
    return DROP_NO_ROUTE if out_if == -1 else -out_if


cdef inline int route_dev(const DP* dp, int node, uint32_t dst, uint32_t* nh) noexcept nogil:
    """reference ``_route_dev``: the out interface (-1: no route; -reason: a discarding
    route) and next hop. A node's routes are the shared ones seen from it: its own pod
    CIDR is connected on the bridge, another node's goes through the VTEP or eth0 to that
    node (R-1, OV-2, OV-4); a node whose routes were set one by one has its own (R-2)."""
    if dp.nrt_count[node]:
        return node_route_dev(dp, node, dst, nh)
    cdef int32_t r = lpm_lookup(dp.lpm, dst)
    cdef int k
    if r < 0:
        nh[0] = 0
        return -1
    cdef int kind = dp.rt_kind[r]
    if kind == RT_POD_CIDR:
        if dp.rt_owner[r] == node:
            nh[0] = 0
            # a routed veth (the routed CNIs), else the bridge
            return dp.rt_dev[r] if dp.rt_dev[r] >= 0 else dp.node_br_if[node]
        if dp.tun_if != NULL:  # kube-router's overlay: a dev route on tun-<hash>
            k = dp.tun_if[node * dp.n_nodes + dp.rt_owner[r]]
            if k >= 0:
                nh[0] = 0
                return k
        if dp.ovs and dp.ovs != ANTREA_NOENCAP:  # Antrea encap: via the peer's gateway,
            nh[0] = dp.node_br_ip[dp.rt_owner[r]]  # onlink on antrea-gw0
            return dp.node_br_if[node]
        if dp.rt_dev[r] >= 0 and dp.rt_nh[r] == 0:  # a routed pod in the node network
            nh[0] = 0
            return dp.node_eth_if[node]
        nh[0] = dp.rt_nh[r]
        return dp.node_vtep_if[node] if dp.vxlan else dp.node_eth_if[node]
    nh[0] = dp.rt_nh[r]  # the node network: connected (0); anything else: the gateway
    return dp.node_eth_if[node]


cdef bint proxy_arp(const DP* dp, int node, int i, uint32_t tpa) noexcept nogil:
    """reference ``_proxy_arp``: arp_process's proxy ARP (``proxy_arp`` on ``i``): ``node``
    routes ``tpa`` (a unicast route) out of a device other than ``i``."""
    cdef uint32_t nh
    cdef int out_if = route_dev(dp, node, tpa, &nh)
    return out_if >= 0 and out_if != i


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


cdef inline bint too_big(DP* dp, const uint8_t* d, int out_if) noexcept nogil:
    """reference ``_too_big``: an IPv4 packet with DF set longer than ``out_if``'s MTU
    (``ip_exceeds_mtu``: the total length against the device MTU, L2-2). The size a path's
    cached replay may take is the smallest MTU it met (``tr_mtu``, the flow cache)."""
    cdef uint32_t mtu = dp.ifs[out_if].mtu
    if mtu < dp.tr_mtu:
        dp.tr_mtu = mtu
    return rd16(d, 16) > mtu and (rd16(d, 20) & 0x4000) != 0


cdef int output(DP* dp, Item* it, int node, int out_if, uint32_t nh) noexcept nogil:
    """POSTROUTING, ip_fragment if longer than the MTU or reassembled (``frag``), then
    neighbour output (ip_finish_output2)."""
    postrouting(dp, it, node, out_if)
    cdef uint8_t* d = DATA(it)
    cdef uint32_t dst = rd32(d, 30)
    cdef uint32_t hop_ip = nh if nh else dst
    if dp.record:
        ev(dp, it, EV_ROUTE, route_id(dp, node, dst), nh, node)
    if rd16(d, 16) > dp.ifs[out_if].mtu or it.frag_max:
        return cold.frag_output(dp, it, node, out_if, hop_ip, dp.ifs[out_if].mtu)
    return neigh_output(dp, it, node, out_if, hop_ip)


cdef inline int neigh_output(DP* dp, Item* it, int node, int out_if,
                             uint32_t hop_ip) noexcept nogil:
    """Neighbour output (ip_finish_output2): a miss holds the packet, a hit caches the
    header."""
    cdef uint8_t* d = DATA(it)
    cdef HSlot* ns
    if dp.ifs[out_if].kind == IF_IPIP:  # a NOARP device: no neighbour, no link header
        return ipip_out(dp, it, out_if)
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
    cdef int l4 = 14 + (d[14] & 0xF) * 4, k
    if (dp.vxlan and d[23] == PROTO_UDP and n >= l4 + 8 + 8 + 14
            and rd16(d, l4 + 2) == <uint32_t>VXLAN_PORT):  # the VXLAN socket
        return vxlan_rcv(dp, it, node, l4)
    if dp.ovs and dp.ovs != ANTREA_NOENCAP:  # Antrea's tunnel port (ovs)
        k = ovs_tun_len(dp, d, n, l4)
        if k:
            return ovs_tun_rcv(dp, it, node, l4, k)
    if dp.tun_if != NULL and d[23] == PROTO_IPIP and n >= l4 + 20:  # ipip_rcv
        k = ipip_tunnel(dp, node, rd32(d, 26))
        if k >= 0:
            return ipip_rcv(dp, it, node, k, l4)
    local_in_nat(dp, it, node)
    ev(dp, it, EV_NODE_INPUT, node, 0, 0)
    return end(dp, it, OUT_DELIVERED, 0, i, 0, True)


cdef inline int node_rcv(DP* dp, Item* it) noexcept nogil:
    """A node's device receives a frame addressed to it: on to the node's IP stack."""
    it.stage = S_NODE_IN
    return go_node_in(dp, it)


cdef int st_node_in(DP* dp, Item* it) noexcept nogil:
    cdef int i = it.a
    cdef int node = dp.ifs[i].node
    cdef uint8_t* d = DATA(it)
    cdef int n = it.len, bad, verdict, out_if, ttl
    cdef uint32_t et = rd16(d, 12), dst, nh, old
    it.frag_max = 0  # ip_rcv_core clears the control block (frag_max_size)
    if et == <uint32_t>ETH_ARP:
        if n < 42:
            return end(dp, it, OUT_DROPPED, DROP_TOO_SHORT, i, 0, False)
        if (local_if_of(dp, node, rd32(d, 38)) >= 0 or owner_of(dp, rd32(d, 38)) == i
                or (dp.if_parp[i] and proxy_arp(dp, node, i, rd32(d, 38)))):
            ev(dp, it, EV_NODE_INPUT, node, 0, 0)  # (owner: an announced LB address, L2)
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
    if not (it.ctx.pre_done and it.ctx.node == node) and not (
            dp.ovs and ovs_notrack(dp, d, n, node)):  # (Antrea's NOTRACK tunnel packets)
        verdict = prerouting(dp, it, node, i)
        if verdict:
            return end(dp, it, OUT_DROPPED, verdict, i, 0, False)
        d = DATA(it)  # (a reassembled packet may have moved)
    dst = rd32(d, 30)
    if local_if_of(dp, node, dst) >= 0:
        return local_in(dp, it, node, i)
    out_if = route_dev(dp, node, dst, &nh)
    if out_if < 0:
        return end(dp, it, OUT_DROPPED, route_drop(out_if), i, 0, out_if != -1)
    old = rd16(d, 22)  # TTL and protocol: one load, one store (no byte store then
    ttl = old >> 8     # a wider load of the same bytes, which stalls store forwarding)
    if ttl <= 1:
        return end(dp, it, OUT_DROPPED, DROP_TTL_EXCEEDED, i, 0, True)
    if too_big(dp, d, out_if):  # ip_forward: before the TTL decrement and FORWARD
        return end(dp, it, OUT_DROPPED, DROP_FRAG_NEEDED, i, dp.ifs[out_if].mtu, True)
    # ip_forward decrements the TTL before the FORWARD hook: a REJECT quotes TTL-1
    wr16(d, 22, old - 0x100)
    wr16(d, 24, csum_replace16(rd16(d, 24), old, old - 0x100))
    dp.tr_k += 1
    changed(it)
    ev(dp, it, EV_TTL, ttl - 1, node, 0)
    verdict = filter_forward(dp, it)
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
        set_src_auto(d, n, dp.ifs[out_if].ip if dp.ifs[out_if].ip else dp.node_ip[node], -1)
    verdict = prerouting(dp, it, node, loc)  # nat OUTPUT shares KUBE-SERVICES (S-1)
    if verdict:
        return end(dp, it, OUT_DROPPED, verdict, loc, 0, False)
    d = DATA(it)  # (a reassembled packet may have moved)
    n = it.len
    dst = rd32(d, 30)
    li = local_if_of(dp, node, dst)
    if li < 0 and dst >> 24 == 127:  # the local table's `local 127.0.0.0/8 dev lo`
        li = loc
    if li >= 0:
        ev(dp, it, EV_NODE_INPUT, node, 0, 0)
        return end(dp, it, OUT_DELIVERED, 0, li, 0, False)
    out_if = route_dev(dp, node, dst, &nh)
    if out_if < 0:
        return end(dp, it, OUT_DROPPED, route_drop(out_if), loc, 0, False)
    verdict = filter_forward(dp, it)
    if verdict:
        return end(dp, it, OUT_DROPPED, verdict, loc, 0, True)
    if too_big(dp, d, out_if):  # ip_fragment refuses a DF packet (the sender's own error)
        return end(dp, it, OUT_DROPPED, DROP_FRAG_NEEDED, loc, dp.ifs[out_if].mtu, True)
    return output(dp, it, node, out_if, nh)
