# load.pxi: Loading compiled ``Tables`` into the datapath's C state: the checks that make a bad
# table an exception instead of a crash (``_check_tables``), what the stages read derived once
# per load (per-node local addresses and their bloom bits, route next hops, frontend hash
# tables), committed to ``DP`` only when every check passed. Twin:
# ``kemu/dataplane/reference/load.py``.

cdef int load_tables(Datapath self, tables) except -1:
    """``Datapath.load``: check ``tables`` (``_check_tables``), derive what the stages
    read (per-node local addresses, route next hops, frontend hash tables), then commit
    it all to ``self.dp`` at once; conntrack and affinity are remapped onto the new
    tables, the FDB is flushed, static neighbours seeded."""
    self.dp.fc_bump += 1  # every cached path may change
    t = tables
    n_if = int(t.n_ifaces)
    n_nodes = int(t.n_nodes)
    if_kind = _i32(t.if_kind)
    if_node = _i32(t.if_node)
    if_peer = _i32(t.if_peer)
    if_bridge = _i32(t.if_bridge)
    if_hairpin = _i32(t.if_hairpin)
    if_mtu = _i32(t.if_mtu)
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
    rt_dev = _rt_dev(t, n_rt, n_if)
    if_parp = np.zeros(max(1, n_if), np.uint8)
    if len(t.if_proxy_arp):
        if len(t.if_proxy_arp) != n_if:
            raise ValueError("inconsistent tables: if_proxy_arp has "
                             f"{len(t.if_proxy_arp)} entries, not {n_if}")
        if_parp[:n_if] = np.asarray(t.if_proxy_arp, np.uint8) != 0
    node_pod_mask = np.full(max(1, n_nodes), 0xFFFFFF00, np.uint32)
    mask_set = np.zeros(max(1, n_nodes), bool)
    for r in range(n_rt):
        kind = int(rt_kind[r])
        if kind == RT_POD_CIDR:
            owner = int(rt_owner[r])
            # (an owner of -1 takes the last node's address, as numpy indexing does)
            nh = int(t.rt_prefix[r]) if t.vxlan else (
                int(t.node_ip[owner]) if -n_nodes <= owner < n_nodes else 0)
            if t.vxlan and len(t.rt_dev) and 0 <= owner < n_nodes \
                    and int(t.node_vtep_if[owner]) >= 0:  # Cilium: the owner's VTEP address
                nh = int(t.if_ip[int(t.node_vtep_if[owner])])
            if 0 <= owner < n_nodes and not mask_set[owner]:
                # what _fix_l2 needs: each node's pod CIDR mask (its first route)
                node_pod_mask[owner] = lpm_mask(int(t.rt_len[r]))
                mask_set[owner] = True
        elif kind == RT_NODE_NET:
            nh = 0
        else:
            nh = int(t.gateway_ip)
        rt_nh[r] = nh & 0xFFFFFFFF
    # a node's own route table (R-2): the masks derived once
    net = _node_net(t)
    for r in range(n_rt):  # a routed pod's /32 in the node network: connected elsewhere
        if (rt_dev[r] >= 0 and int(rt_kind[r]) == RT_POD_CIDR and net is not None
                and int(t.rt_len[r]) >= net[1]
                and (int(t.rt_prefix[r]) & lpm_mask(net[1])) == net[0]):
            rt_nh[r] = 0
    nrt_start = _i32(t.node_rt_start)
    nrt_count = _i32(t.node_rt_count)
    nrt_prefix = np.ascontiguousarray(t.nrt_prefix, dtype=np.uint32)
    nrt_mask = np.array([lpm_mask(int(x)) for x in t.nrt_len], dtype=np.uint32)
    nrt_if = _i32(t.nrt_if)
    nrt_nh = np.ascontiguousarray(t.nrt_nh, dtype=np.uint32)
    net_prefix, net_mask = 0, 0xFFFFFFFF
    for i in range(n_rt):
        if int(t.rt_kind[i]) == RT_NODE_NET:
            net_prefix, net_mask = int(t.rt_prefix[i]), lpm_mask(int(t.rt_len[i]))
            break
    # local addresses, as the reference's local_ips dict (the last interface wins)
    local_ips = {}
    for i in np.flatnonzero((if_kind == IF_NODE_ETH) | (if_kind == IF_BRIDGE)
                            | (if_kind == IF_VTEP) | (if_kind == IF_CILIUM_HOST)
                            | (if_kind == IF_OVS_GW)).tolist():
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
    be_flags = _i32(t.be_flags)
    sp_src_start = _i32(t.sp_src_start)
    sp_src_count = _i32(t.sp_src_count)
    src_net = np.ascontiguousarray(t.src_net, dtype=np.uint32)
    src_mask = np.ascontiguousarray(t.src_mask, dtype=np.uint32)
    own_ip = np.ascontiguousarray(t.own_ip, dtype=np.uint32)
    own_if = _i32(t.own_if)
    nm_net = np.ascontiguousarray(t.nonmasq_net, dtype=np.uint32)
    nm_mask = np.ascontiguousarray(t.nonmasq_mask, dtype=np.uint32)
    if len(nm_net) != len(nm_mask):
        raise ValueError("inconsistent tables: nonmasq_net and nonmasq_mask differ in length")
    max_cands = max([1] + [int(c) for c in sp_be_count])
    # kube-router's IPIP devices: node x peer -> tun-<hash> (empty: none)
    tun_if = _i32(t.tun_if)
    if len(tun_if) not in (0, n_nodes * n_nodes):
        raise ValueError(f"inconsistent tables: tun_if has {len(tun_if)} entries, not 0 or "
                         f"{n_nodes * n_nodes}")
    for k in np.flatnonzero(tun_if >= 0).tolist():
        q = int(tun_if[k])  # the device of node k // n towards k % n; its peer: the reverse
        if (q >= n_if or int(if_kind[q]) != IF_IPIP or int(if_node[q]) != k // n_nodes
                or not 0 <= int(if_peer[q]) < n_if
                or int(if_kind[int(if_peer[q])]) != IF_IPIP
                or int(if_node[int(if_peer[q])]) != k % n_nodes):
            raise ValueError(f"inconsistent tables: tun_if[{k}] = {q}")
    if (tun_if < -1).any():
        raise ValueError("inconsistent tables: tun_if below -1")
    n_tun = len(tun_if)
    if_vni = _i32(t.if_vni)  # Cilium: identity per interface (tunnel.pxi), empty: VNI 1
    if len(if_vni) not in (0, n_if):
        raise ValueError(f"inconsistent tables: if_vni has {len(if_vni)} entries, not 0 or {n_if}")
    if ((if_vni < 0) | (if_vni > 0xFFFFFF)).any():
        raise ValueError("inconsistent tables: if_vni outside 0..2**24-1")
    n_vni = len(if_vni)
    pol = pol_prepare(t)  # NetworkPolicy (policy.pxi): checked here, committed below

    # ---- all checks passed: commit
    cdef IfInfo* ifs = <IfInfo*>kemu_zalloc(max(1, n_if), sizeof(IfInfo))
    cdef int32_t* cands = <int32_t*>malloc(max_cands * sizeof(int32_t))
    if ifs == NULL or cands == NULL:
        free(ifs)
        free(cands)
        raise MemoryError()
    cdef const int32_t[::1] v_kind = if_kind, v_node = if_node, v_peer = if_peer
    cdef const int32_t[::1] v_bridge = if_bridge, v_hairpin = if_hairpin, v_mtu = if_mtu
    cdef const int64_t[::1] v_mac = if_mac
    cdef const uint32_t[::1] v_ip = if_ip
    cdef Py_ssize_t j
    for j in range(n_if):
        ifs[j].kind = v_kind[j]
        ifs[j].node = v_node[j]
        ifs[j].peer = v_peer[j]
        ifs[j].bridge = v_bridge[j]
        ifs[j].hairpin = v_hairpin[j]
        ifs[j].mtu = <uint16_t>(v_mtu[j] if 0 <= v_mtu[j] <= 0xFFFF else 0xFFFF)
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
            own_if, nm_net, nm_mask, be_flags, sp_src_start, sp_src_count, src_net, src_mask,
            nrt_start, nrt_count, nrt_prefix, nrt_mask, nrt_if, nrt_nh, tun_if, rt_dev, if_parp,
            if_vni]
    for k, a in enumerate(keep):
        if len(a) == 0:  # a valid pointer even for empty tables
            keep[k] = np.zeros(1, a.dtype)
    (br_local_if, br_netfilter, br_port_start, br_port_count, br_ports,
     node_eth_if, node_br_if, node_vtep_if, node_local_if, node_ip, node_br_ip,
     node_pod_mask, lip_n, lip_ip, lip_if, lip_bloom, rt_kind, rt_owner, rt_nh, fe_sp, fe_kind,
     sp_flags, sp_aff_ns, sp_be_start, sp_be_count, be_ip, be_port, be_node, own_ip,
     own_if, nm_net, nm_mask, be_flags, sp_src_start, sp_src_count, src_net, src_mask,
     nrt_start, nrt_count, nrt_prefix, nrt_mask, nrt_if, nrt_nh, tun_if, rt_dev, if_parp,
     if_vni) = keep
    pol_commit(&self.dp, pol, t, keep)
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
    self.dp.rt_dev = <int32_t*>cnp.PyArray_DATA(rt_dev)
    self.dp.if_parp = <uint8_t*>cnp.PyArray_DATA(if_parp)
    self.dp.nrt_start = <int32_t*>cnp.PyArray_DATA(nrt_start)
    self.dp.nrt_count = <int32_t*>cnp.PyArray_DATA(nrt_count)
    self.dp.nrt_prefix = <uint32_t*>cnp.PyArray_DATA(nrt_prefix)
    self.dp.nrt_mask = <uint32_t*>cnp.PyArray_DATA(nrt_mask)
    self.dp.nrt_if = <int32_t*>cnp.PyArray_DATA(nrt_if)
    self.dp.nrt_nh = <uint32_t*>cnp.PyArray_DATA(nrt_nh)
    self.dp.fe_sp = <int32_t*>cnp.PyArray_DATA(fe_sp)
    self.dp.fe_kind = <int32_t*>cnp.PyArray_DATA(fe_kind)
    self.dp.sp_flags = <int32_t*>cnp.PyArray_DATA(sp_flags)
    self.dp.sp_aff_ns = <int64_t*>cnp.PyArray_DATA(sp_aff_ns)
    self.dp.sp_be_start = <int32_t*>cnp.PyArray_DATA(sp_be_start)
    self.dp.sp_be_count = <int32_t*>cnp.PyArray_DATA(sp_be_count)
    self.dp.be_ip = <uint32_t*>cnp.PyArray_DATA(be_ip)
    self.dp.be_port = <int32_t*>cnp.PyArray_DATA(be_port)
    self.dp.be_node = <int32_t*>cnp.PyArray_DATA(be_node)
    self.dp.be_flags = <int32_t*>cnp.PyArray_DATA(be_flags)
    self.dp.sp_src_start = <int32_t*>cnp.PyArray_DATA(sp_src_start)
    self.dp.sp_src_count = <int32_t*>cnp.PyArray_DATA(sp_src_count)
    self.dp.src_net = <uint32_t*>cnp.PyArray_DATA(src_net)
    self.dp.src_mask = <uint32_t*>cnp.PyArray_DATA(src_mask)
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
    self.dp.ipvs = bool(t.ipvs)
    self.dp.ipvs_sched = int(t.ipvs_sched)
    self.dp.tun_if = <int32_t*>cnp.PyArray_DATA(tun_if) if n_tun else NULL
    self.dp.if_vni = <int32_t*>cnp.PyArray_DATA(if_vni) if n_vni else NULL
    self.dp.sock_lb = bool(t.sock_lb)
    self.dp.ovs = int(t.ovs_tunnel)
    ht_clear(&self.dp.ipvs_rr)  # IPVS services are synced anew: schedulers start over
    self.dp.masq_rf = bool(t.masq_random_fully)
    self.dp.egress_masq = bool(t.egress_masq)
    self.dp.egress_rf = bool(t.egress_random_fully)
    self.dp.nm_net = <uint32_t*>cnp.PyArray_DATA(nm_net)
    self.dp.nm_mask = <uint32_t*>cnp.PyArray_DATA(nm_mask)
    self.dp.n_nm = len(t.nonmasq_net)
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
    return 0


def _rt_dev(t, n_rt, n_if):
    """``Tables.rt_dev`` checked (-1 per route when the tables have none): a device a
    pod route points at on its owner node is a routed veth of that node (or its bridge:
    Azure CNI bridge mode's azure0)."""
    rt_dev = np.full(max(1, n_rt), -1, np.int32)
    if len(t.rt_dev) == 0:
        return rt_dev
    if len(t.rt_dev) != n_rt:
        raise ValueError(f"inconsistent tables: rt_dev has {len(t.rt_dev)} entries, not {n_rt}")
    for r in range(n_rt):
        d = int(t.rt_dev[r])
        if d != -1 and not (0 <= d < n_if and int(t.if_kind[d]) in (IF_VETH_HOST, IF_BRIDGE)
                            and int(t.rt_kind[r]) == RT_POD_CIDR
                            and int(t.if_node[d]) == int(t.rt_node[r])):
            raise ValueError(f"inconsistent tables: route {r}: device {d}")
        rt_dev[r] = d
    return rt_dev


def _node_net(t):
    """(prefix, length) of the node network (the first RT_NODE_NET route), None."""
    for i in range(len(t.rt_kind)):
        if int(t.rt_kind[i]) == RT_NODE_NET:
            return int(t.rt_prefix[i]), int(t.rt_len[i])
    return None


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
                      ("if_mac", t.if_mac), ("if_ip", t.if_ip), ("if_hairpin", t.if_hairpin),
                      ("if_mtu", t.if_mtu)):
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
    bad_peer = np.isin(kind, (IF_POD_ETH, IF_VETH, IF_VETH_HOST, IF_CILIUM_HOST)) & ~((peer >= 0) & (peer < n_if))
    # an OVS port's peer is its pod's eth0 or none (br-int's own port, down)
    bad_peer |= (kind == IF_OVS_PORT) & ~((peer >= -1) & (peer < n_if))
    bad_pod = (kind == IF_POD_ETH) & ((idx + 1 >= n_if) | ~((node >= 0) & (node < n_nodes)))
    bad_br = (np.isin(kind, (IF_VETH, IF_BRIDGE, IF_NODE_ETH, IF_EXT_ETH, IF_GW_ETH,
                             IF_UPLINK))
              & ~((bridge >= 0) & (bridge < n_br)))
    bad_node = (np.isin(kind, (IF_NODE_ETH, IF_BRIDGE, IF_VTEP, IF_NODE_LOCAL, IF_VETH_HOST,
                               IF_UPLINK, IF_CILIUM_HOST, IF_OVS_PORT, IF_OVS_GW,
                               IF_OVS_TUN))
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
    # Antrea (ovs.pxi follows these without checks): each node's antrea-gw0 as node_br_if,
    # its antrea-tun0 as node_vtep_if in encap mode, an OVS port's peer a pod's eth0
    ovs = int(t.ovs_tunnel)
    if not 0 <= ovs <= ANTREA_NOENCAP:
        bad(f"ovs_tunnel {ovs}")
    ovs_kinds = np.isin(kind, (IF_OVS_PORT, IF_OVS_GW, IF_OVS_TUN))
    if ovs_kinds.any() and not ovs:
        bad(f"interface {int(np.flatnonzero(ovs_kinds)[0])}: an OVS port without Antrea")
    for i in np.flatnonzero((kind == IF_OVS_PORT) & (peer >= 0)).tolist():
        if int(kind[int(peer[i])]) != IF_POD_ETH:
            bad(f"interface {i}: OVS port peer {int(peer[i])}")
    for m in range(n_nodes) if ovs else ():
        if int(kind[int(node_br_if[m])]) != IF_OVS_GW:
            bad(f"node {m}: antrea-gw0 interface {int(node_br_if[m])}")
        v = int(node_vtep_if[m])
        if ovs != ANTREA_NOENCAP and (v < 0 or int(kind[v]) != IF_OVS_TUN
                                      or int(node[v]) != m):
            bad(f"node {m}: antrea-tun0 interface {v}")
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
    if not (len(t.be_port) == len(t.be_node) == len(t.be_flags) == n_be):
        bad("backend arrays of different lengths")
    if not (len(t.sp_src_start) == len(t.sp_src_count) == n_sp
            and len(t.src_net) == len(t.src_mask)):
        bad("source-range arrays of different lengths")
    for sp in range(n_sp):
        s, c = int(t.sp_src_start[sp]), int(t.sp_src_count[sp])
        if s < 0 or c < 0 or s + c > len(t.src_net):
            bad(f"service port {sp}: source ranges {s}+{c}")
    for r in range(len(t.rt_kind)):
        if int(t.rt_kind[r]) == RT_LB and not 0 <= int(t.rt_node[r]) < n_nodes:
            bad(f"route {r}: node {int(t.rt_node[r])}")
    if not (len(t.node_rt_start) == len(t.node_rt_count) == n_nodes
            and len(t.nrt_prefix) == len(t.nrt_len) == len(t.nrt_if) == len(t.nrt_nh)):
        bad("node route arrays of different lengths")
    for m in range(n_nodes):
        s, c = int(t.node_rt_start[m]), int(t.node_rt_count[m])
        if s < 0 or c < 0 or s + c > len(t.nrt_prefix):
            bad(f"node {m}: routes {s}+{c}")
    for k in range(len(t.nrt_if)):
        o = int(t.nrt_if[k])
        if int(t.nrt_len[k]) > 32 or not (0 <= o < n_if or o in (
                -DROP_BLACKHOLE, -DROP_ROUTE_UNREACHABLE, -DROP_ROUTE_PROHIBIT)):
            bad(f"node route {k}: length {int(t.nrt_len[k])}, out {o}")
    if len(t.own_ip) != len(t.own_if):
        bad("ownership arrays of different lengths")
    own = np.asarray(t.own_if, np.int64)
    out = (own < 0) | (own >= n_if)
    if out.any():
        bad(f"owner interface {int(own[np.flatnonzero(out)[0]])}")
