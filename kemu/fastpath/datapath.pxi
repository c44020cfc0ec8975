# datapath.pxi: The Python-facing ``Datapath``: its C state's lifetime, ``load`` (the work is
# in tables.pxi), API writes (static neighbours, ``neigh_set``), ``reset``, ``cleanup``,
# ``state()`` (the same dump as the reference's) and ``process`` (the batch call). Twin:
# ``kemu/dataplane/reference/datapath.py``.

cdef int64_t track_ifaces = 4096   # past this many interfaces: ce_touch (see DP.track)


def _set_track_ifaces(n: int) -> int:
    """Set the interface count past which datapaths loaded from now on keep and prefetch
    each flow's lookups (tests force it on small clusters); returns the previous one."""
    global track_ifaces
    old = track_ifaces
    track_ifaces = n
    return old


cdef object _i32(object a):
    return np.ascontiguousarray(a, dtype=np.int32)


cdef void* _res_ptr(object arr, int typenum, int64_t* n) except NULL:
    """The data of a Results array, checked for dtype, contiguity and writability."""
    if (not cnp.PyArray_Check(arr) or cnp.PyArray_TYPE(arr) != typenum
            or not cnp.PyArray_ISCARRAY(arr) or cnp.PyArray_NDIM(arr) != 1):
        raise TypeError(f"Results array of dtype {getattr(arr, 'dtype', type(arr))} "
                        "is not a writable contiguous 1-d array of the expected type")
    n[0] = cnp.PyArray_DIM(arr, 0)
    return cnp.PyArray_DATA(arr)


cdef object _input(object arr, int typenum, object dtype):
    """A 1-d contiguous native array of the given type: ``arr`` itself, or a converted copy."""
    if (cnp.PyArray_Check(arr) and cnp.PyArray_TYPE(arr) == typenum
            and cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr)
            and cnp.PyArray_NDIM(arr) == 1):
        return arr
    return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)


cdef class Datapath:
    """Batch datapath over compiled ``Tables``; state persists across ``process`` calls.

    ``process`` runs its frames without the GIL, so that other threads go on meanwhile; one
    ``Datapath`` is for one thread at a time (as the reference's is)."""

    cdef DP dp
    cdef readonly object t
    cdef readonly object seed
    cdef readonly bint static_neighbours
    cdef readonly Lpm lpm
    cdef object _loaded
    cdef list _keep
    cdef bint fc_enabled

    def __cinit__(self):
        memset(&self.dp, 0, sizeof(DP))
        self.dp.ce_free = -1
        if (ct_init(&self.dp.ct, 1024) < 0 or ht_init(&self.dp.fdb, 64) < 0
                or ht_init(&self.dp.neigh, 64) < 0 or ht_init(&self.dp.aff, 16) < 0
                or ht_init(&self.dp.ipvs_rr, 16) < 0
                or ht_init(&self.dp.nshared, 16) < 0 or ht_init(&self.dp.own, 16) < 0
                or ht_init(&self.dp.fe, 16) < 0 or ht_init(&self.dp.fe_np, 16) < 0):
            raise MemoryError()

    def __init__(self, tables, seed: int = 0, static_neighbours: bool = True) -> None:
        self.seed = seed
        self.dp.seed = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
        self.static_neighbours = static_neighbours
        self.fc_enabled = fc_default != 0
        self._loaded = None
        self.load(tables)

    def __dealloc__(self):
        cdef int k
        for k in range(self.dp.n_fq):
            fq_free(&self.dp.fq[k])
        free(self.dp.fq)
        free(self.dp.ct.s)
        ht_free(&self.dp.fdb)
        ht_free(&self.dp.neigh)
        ht_free(&self.dp.nshared)
        ht_free(&self.dp.own)
        free(self.dp.sh)
        ht_free(&self.dp.aff)
        ht_free(&self.dp.ipvs_rr)
        ht_free(&self.dp.fe)
        ht_free(&self.dp.fe_np)
        pol_free(&self.dp.pol)
        free(self.dp.ce)
        free(self.dp.ce_hint)
        free(self.dp.ce_touch)
        free(self.dp.ce_inc)
        kemu_map_free(self.dp.fc, (<size_t>1 << FC_BITS) * sizeof(FcE), True)
        free(self.dp.zombies)
        free(self.dp.ifs)
        free(self.dp.cands)
        for k in range(self.dp.sp):
            free(self.dp.stack[k].mem)
        free(self.dp.stack)
        for k in range(self.dp.n_pool):
            free(self.dp.pool[k].mem)
        free(self.dp.pool)

    # ---------------------------------------------------------------- tables and state
    def load(self, tables) -> None:
        """Swap in new tables at a batch boundary; keep conntrack, re-resolve its services."""
        load_tables(self, tables)

    def _seed_neighbours(self) -> None:
        """What a settled cluster's kernels know (reference ``_seed_neighbours``): every pod
        on its node (in ``neigh``), every host of the node network and flannel's VTEP
        addresses (OV-2) on every other node, kept once per address in ``nshared`` (the
        same entries, without nodes x hosts of them), and a routed pod of the node network
        on every other node as its node's eth0. Writes apply in interface order, as in
        the reference: an address written both ways is spelt out per node."""
        cdef DP* dp = &self.dp
        cdef int n_nodes = dp.n_nodes, m
        cdef uint64_t i
        cdef HSlot* s
        cdef NShared* S
        cdef bint created
        t = self.t
        kind = np.asarray(t.if_kind).astype(np.int64)
        pods = np.flatnonzero(kind == IF_POD_ETH)
        node_of = np.asarray(t.if_node).astype(np.int64)
        uplinked = np.zeros(len(kind), bool)  # Azure bridge mode: azure0 holds the node's IP
        uplinked[np.asarray(t.node_eth_if, np.int64)] = True
        uplinked &= kind == IF_BRIDGE
        # Antrea encap: every other node's antrea-gw0 address is the Global Virtual MAC
        # (OVS's ARPResponder answers for the peers' gateways, ovs-pipeline.md)
        gvmac = 0 < int(t.ovs_tunnel) < ANTREA_NOENCAP
        hosts = np.flatnonzero((kind == IF_NODE_ETH) | (kind == IF_EXT_ETH)
                               | (kind == IF_GW_ETH) | (kind == IF_VTEP) | uplinked
                               | ((kind == IF_OVS_GW) & gvmac))
        macs = np.asarray(t.if_mac).astype(np.int64)
        if gvmac:
            macs[kind == IF_OVS_GW] = <int64_t>OVS_GVMAC
        ip_all = np.asarray(t.if_ip).astype(np.int64) & 0xFFFFFFFF
        if dp.n_sh and n_nodes != dp.sh_nodes:
            self._spell_out_shared()
        seed = {}  # ip -> [node, mac, has2, node2, mac2] of this seeding's host writes
        for n, ip, mac in zip(np.asarray(t.if_node)[hosts].tolist(), ip_all[hosts].tolist(),
                              macs[hosts].tolist(), strict=True):
            st = seed.get(ip)
            if st is None:
                seed[ip] = [n, mac, 0, 0, 0]
            elif st[0] == n:
                st[1] = mac
            else:
                seed[ip] = [n, mac, 1, st[0], st[1]]
        pod_ips = ip_all[pods]
        both = set(pod_ips.tolist()) & seed.keys() if seed else set()
        for ip in sorted(both):
            writes = [(int(kind[i]) == IF_POD_ETH, int(t.if_node[i]), int(macs[i]))
                      for i in np.flatnonzero(ip_all == ip).tolist()
                      if int(kind[i]) == IF_POD_ETH or i in set(hosts.tolist())]
            for m in range(n_nodes):
                val = None
                for is_pod, n, mac in writes:
                    if (n == m) == is_pod:
                        val = mac
                if val is not None:
                    self._neigh_put(m, ip, val, False)
            del seed[ip]
        # a routed pod in the node network (AWS VPC CNI, Azure CNI): the other nodes reach it
        # over the node network, its node's eth0 (the ENI holding the address) answers ARP
        peer = np.asarray(t.if_peer).astype(np.int64)
        host_ips = set(ip_all[hosts].tolist())
        for i in pods.tolist():
            ip = int(ip_all[i])
            if ((int(kind[int(peer[i])]) == IF_VETH_HOST
                 or uplinked[int(t.node_eth_if[int(node_of[i])])]) and ip not in host_ips
                    and (ip & dp.node_net_mask) == dp.node_net_prefix):
                m = int(t.if_node[i])
                seed[ip] = [m, int(t.if_mac[int(t.node_eth_if[m])]), 0, 0, 0]
        if dp.neigh.n and seed:  # entries of a node's own table take the new addresses
            for i in range(dp.neigh.mask + 1):
                s = &dp.neigh.s[i]
                if s.k1:
                    st = seed.get(s.k0)
                    m = <int32_t><uint32_t>(s.k1 & 0xFFFFFFFFULL)
                    if st is not None and 0 <= m < n_nodes:
                        if st[0] != m:
                            s.v0 = st[1]
                        elif st[2]:
                            s.v0 = st[4]
        cdef int32_t[::1] pn = np.ascontiguousarray(np.asarray(t.if_node)[pods], np.int32)
        cdef int64_t[::1] pip = np.ascontiguousarray(pod_ips, np.int64)
        cdef int64_t[::1] pmac = np.ascontiguousarray(np.asarray(t.if_mac)[pods], np.int64)
        cdef Py_ssize_t k
        for k in range(pn.shape[0]):
            if not both or pip[k] not in both:
                self._neigh_put(pn[k], <uint32_t>pip[k], pmac[k], False)
        for ip, st in seed.items():
            s = ht_find(&dp.nshared, ip, 0)
            if s == NULL:
                if dp.n_sh == dp.sh_cap:
                    S = <NShared*>realloc(dp.sh, (dp.sh_cap * 2 + 64) * sizeof(NShared))
                    if S == NULL:
                        raise MemoryError()
                    dp.sh = S
                    dp.sh_cap = dp.sh_cap * 2 + 64
                s = ht_put(&dp.nshared, ip, 0, &created)
                if s == NULL:
                    raise MemoryError()
                s.v0 = dp.n_sh
                S = &dp.sh[dp.n_sh]
                dp.n_sh += 1
                S.node, S.mac, S.has2, S.node2, S.mac2 = st
                continue
            S = &dp.sh[s.v0]  # compose: the old writes, then this seeding's
            if not st[2]:
                if S.node != st[0]:
                    st[2], st[3], st[4] = 1, S.node, S.mac
                elif S.has2:
                    st[2], st[3], st[4] = 1, S.node2, S.mac2
            S.node, S.mac, S.has2, S.node2, S.mac2 = st
        dp.sh_nodes = n_nodes

    def _spell_out_shared(self) -> None:
        """Shared entries become entries of each node they were for (before tables with
        another node count: the reference's entries of the old nodes stay as they are)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef int m
        cdef int64_t mac
        cdef HSlot* s
        cdef HSlot* o
        cdef NShared* S
        cdef bint created
        for i in range(dp.nshared.mask + 1):
            s = &dp.nshared.s[i]
            if not s.k1:
                continue
            S = &dp.sh[s.v0]
            for m in range(dp.sh_nodes):
                if ht_find(&dp.neigh, s.k0, <uint32_t>m) != NULL:
                    continue
                if S.node != m:
                    mac = S.mac
                elif S.has2:
                    mac = S.mac2
                else:
                    continue
                o = ht_put(&dp.neigh, s.k0, <uint32_t>m, &created)
                if o == NULL:
                    raise MemoryError()
                o.v0 = mac
        self._clear_shared()

    cdef void _clear_shared(self):
        ht_clear(&self.dp.nshared)
        self.dp.n_sh = 0
        self.dp.sh_nodes = 0

    cdef int _neigh_put(self, int node, uint32_t ip, int64_t mac, bint api) except -1:
        """``neigh[(node, ip)] = mac``; through the API (``neigh_set``) a changed address
        also drops the cached header."""
        cdef bint created
        cdef HSlot* s = ht_put(&self.dp.neigh, ip, <uint32_t>node, &created)
        if s == NULL:
            raise MemoryError()
        if api and (created or s.v0 != mac):
            s.v1 = 0
        s.v0 = mac
        return 0

    def _remap_affinity(self, old) -> None:
        """Affinity records follow their service port by name (reference ``_remap_affinity``)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef HSlot* s
        cdef bint created
        names = {name: k for k, name in enumerate(self.t.sp_name)}
        rows = []
        for i in range(dp.aff.mask + 1):
            s = &dp.aff.s[i]
            if s.k1:
                rows.append((s.k0, <int64_t>((s.k1 & ~KEMU_OCC) >> 32),
                             <int64_t>(s.k1 & 0xFFFFFFFFULL), s.v0, s.v1))
        ht_clear(&dp.aff)
        for k0, node, sp, v0, v1 in rows:
            nsp = names.get(old.sp_name[sp], -1) if sp < len(old.sp_name) else -1
            if nsp >= 0:
                s = ht_put(&dp.aff, k0, (<uint64_t>node << 32) | <uint32_t>nsp, &created)
                if s == NULL:
                    raise MemoryError("affinity table")
                s.v0 = v0
                s.v1 = v1

    def _remap_conntrack(self) -> None:
        """After a table swap: find each DNAT entry's service port and backend again; flush
        UDP entries whose backend is gone (CT-4)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef int e, sp
        cdef CtE* E
        cdef HSlot* s
        todo = []
        for i in range(dp.ct.mask + 1):
            if dp.ct.s[i] and not (ct_val(dp, i) & 1):
                e = ct_val(dp, i) >> 1
                if dp.ce[e].flags & CT_DNAT:
                    todo.append(e)
        for e in todo:
            E = &dp.ce[e]
            s = ht_find(&dp.fe, E.t[0].dip, (<uint64_t>E.proto[0] << 16) | E.t[0].dport)
            if s == NULL:
                s = ht_find(&dp.fe_np, 0, (<uint64_t>E.proto[0] << 16) | E.t[0].dport)
            E.sp = -1
            E.be = -1
            if s != NULL:
                sp = dp.fe_sp[s.v0]
                E.sp = sp
                E.be = find_backend(dp, sp, E.dnat_ip, E.dnat_port)
            if E.be < 0 and E.proto[0] == PROTO_UDP:
                ct_delete(dp, e)
        ct_reap(dp)

    @property
    def flow_cache_hits(self) -> int:
        """Frames run by the flow cache (their established flow's cached path) so far."""
        return self.dp.fc_hits

    def reset(self) -> None:
        self.dp.fc_bump += 1
        fq_expire(&self.dp, -1, <int64_t>0x7FFFFFFFFFFFFFFF)  # every reassembly queue
        ht_clear(&self.dp.fdb)
        memset(self.dp.ct.s, 0, (self.dp.ct.mask + 1) * sizeof(uint64_t))
        self.dp.ct.n = 0
        ht_clear(&self.dp.neigh)
        self._clear_shared()
        ht_clear(&self.dp.aff)
        ht_clear(&self.dp.ipvs_rr)
        # The entry pool keeps its memory, as the kernel's conntrack slab does on a flush:
        # every entry is free again, handed out in the order a new pool would use (0, 1, ...),
        # and the flows that follow need no growth (copies, fresh pages). Incarnations go on
        # counting (fc_bump already dropped every cached path).
        cdef int e
        self.dp.ce_free = -1
        for e in range(self.dp.ce_cap - 1, -1, -1):
            self.dp.ce[e].sp = self.dp.ce_free
            self.dp.ce[e].keys = 0
            self.dp.ce[e].zombie = 0
            self.dp.ce_free = e
        self.dp.ce_used = 0
        self.dp.n_zombies = 0
        if self.static_neighbours:
            self._seed_neighbours()

    def neigh_set(self, node: int, ip: int, mac: int) -> None:
        self.dp.fc_bump += 1
        self._neigh_put(node, ip, mac, True)

    def fdb_set(self, bridge: int, mac: int, port: int, now: int) -> None:
        """Learn ``mac`` behind ``port`` of ``bridge`` at time ``now``, as a frame from it
        entering there would (``br_fdb_update``): a warm start's FDB, written directly."""
        cdef bint created
        cdef HSlot* s
        if not (0 <= port < self.dp.n_if and bridge >= 0 and (
                (self.dp.ifs[port].bridge == bridge and self.dp.ifs[port].kind != IF_BRIDGE)
                or (self.dp.ifs[port].kind == IF_UPLINK  # also a port of the segment
                    and bridge == self.dp.n_nodes))):
            raise ValueError(f"interface {port} is not a port of bridge {bridge}")
        if not 0 < mac < (1 << 48) or mac >> 40 & 1:
            raise ValueError(f"{mac:#x} is not a unicast MAC address")
        self.dp.fc_bump += 1
        s = ht_put(&self.dp.fdb, <uint64_t>mac, <uint64_t>bridge, &created)
        if s == NULL:
            raise MemoryError()
        s.v0 = port
        s.v1 = now

    def conntrack_flush(self, node=None) -> None:
        """``conntrack -F`` on one node (every node: None); affinity records stay
        (reference ``conntrack_flush``)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef int e
        dp.fc_bump += 1
        todo = []
        for i in range(dp.ct.mask + 1):
            if dp.ct.s[i] and not (ct_val(dp, i) & 1):
                e = ct_val(dp, i) >> 1
                if node is None or dp.ce[e].node == node:
                    todo.append(e)
        for e in todo:
            ct_delete(dp, e)
        ct_reap(dp)

    def fdb_flush(self, bridge: int) -> None:
        """``bridge fdb flush dev BRIDGE`` (reference ``fdb_flush``)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        dp.fc_bump += 1
        todo = []
        for i in range(dp.fdb.mask + 1):
            if dp.fdb.s[i].k1 and <int64_t>(dp.fdb.s[i].k1 & ~KEMU_OCC) == bridge:
                todo.append((dp.fdb.s[i].k0, dp.fdb.s[i].k1 & ~KEMU_OCC))
        for k0, k1 in todo:
            ht_del(&dp.fdb, ht_find(&dp.fdb, k0, k1))

    def neigh_delete(self, node: int, ip: int) -> bool:
        """``ip neigh del IP`` on ``node`` (reference ``neigh_delete``): shared entries of
        the node network are spelt out per node first, then the node's own one goes."""
        cdef HSlot* s
        self.dp.fc_bump += 1
        if self.dp.n_sh:
            self._spell_out_shared()
        s = ht_find(&self.dp.neigh, <uint32_t>ip, <uint32_t>node)
        if s == NULL:
            return False
        ht_del(&self.dp.neigh, s)
        return True

    def neigh_lookup(self, node: int, ip: int) -> int:
        cdef HSlot* s
        return neigh_get(&self.dp, <int32_t>node, <uint32_t>ip, &s)

    def cleanup(self, now: int) -> None:
        """Expire FDB entries (ageing) and conntrack and affinity entries (timeouts)."""
        self.dp.fc_bump += 1
        cdef DP* dp = &self.dp
        cdef int64_t t_now = now
        cdef uint64_t i
        cdef int e, sp
        cdef HSlot* s
        fdb_old = []
        for i in range(dp.fdb.mask + 1):
            if dp.fdb.s[i].k1 and t_now - dp.fdb.s[i].v1 > dp.ageing_ns:
                fdb_old.append((dp.fdb.s[i].k0, dp.fdb.s[i].k1 & ~KEMU_OCC))
        for k0, k1 in fdb_old:
            ht_del(&dp.fdb, ht_find(&dp.fdb, k0, k1))
        ct_old = []
        for i in range(dp.ct.mask + 1):
            if dp.ct.s[i] and not (ct_val(dp, i) & 1):
                e = ct_val(dp, i) >> 1
                if dp.ce[e].expires < t_now:
                    ct_old.append(e)
        for e in ct_old:
            ct_delete(dp, e)
        ct_reap(dp)
        aff_old = []
        for i in range(dp.aff.mask + 1):
            if dp.aff.s[i].k1:
                sp = <int>(dp.aff.s[i].k1 & 0xFFFFFFFFULL)
                if not 0 <= sp < dp.n_sp:
                    raise IndexError(f"index {sp} is out of bounds for axis 0 with size "
                                     f"{dp.n_sp}")
                if t_now - dp.aff.s[i].v1 > dp.sp_aff_ns[sp]:
                    aff_old.append((dp.aff.s[i].k0, dp.aff.s[i].k1 & ~KEMU_OCC))
        for k0, k1 in aff_old:
            ht_del(&dp.aff, ht_find(&dp.aff, k0, k1))
        fq_expire(dp, -1, t_now)

    def state(self) -> dict[str, list[tuple]]:
        """Every piece of mutable state as sorted tuples (rendered by ``kemu.dataplane.dump``)."""
        cdef DP* dp = &self.dp
        cdef uint64_t i
        cdef HSlot* s
        cdef HSlot* o
        cdef CtE* E
        cdef int m
        cdef int64_t mac
        fdb, ct, neigh, aff = [], [], [], []
        for i in range(dp.fdb.mask + 1):
            s = &dp.fdb.s[i]
            if s.k1:
                fdb.append((<int64_t>(s.k1 & ~KEMU_OCC), s.k0, s.v0, s.v1))
        for i in range(dp.ct.mask + 1):
            if dp.ct.s[i] and not (ct_val(dp, i) & 1):
                E = &dp.ce[ct_val(dp, i) >> 1]
                ct.append((E.node, E.proto[0], E.t[0].sip, E.t[0].sport, E.t[0].dip,
                           E.t[0].dport, E.proto[1], E.t[1].sip, E.t[1].sport, E.t[1].dip,
                           E.t[1].dport, E.flags, E.state, E.expires, E.sp, E.be))
        for i in range(dp.neigh.mask + 1):
            s = &dp.neigh.s[i]
            if s.k1:
                neigh.append((<int32_t><uint32_t>(s.k1 & 0xFFFFFFFFULL), s.k0, s.v0, s.v1))
        for i in range(dp.nshared.mask + 1):
            s = &dp.nshared.s[i]
            if s.k1:
                for m in range(dp.sh_nodes):
                    if ht_find(&dp.neigh, s.k0, <uint32_t>m) == NULL:
                        mac = neigh_get(dp, m, <uint32_t>s.k0, &o)
                        if mac >= 0:
                            neigh.append((m, s.k0, mac, 0))
        for i in range(dp.aff.mask + 1):
            s = &dp.aff.s[i]
            if s.k1:
                aff.append((<int64_t>((s.k1 & ~KEMU_OCC) >> 32), <int64_t>(s.k1 & 0xFFFFFFFFULL),
                            s.k0, s.v0 >> 16, s.v0 & 0xFFFF, s.v1))
        frags = [(dp.fq[m].node, dp.fq[m].user, dp.fq[m].src, dp.fq[m].dst, dp.fq[m].proto,
                  dp.fq[m].id, dp.fq[m].meat, dp.fq[m].len, dp.fq[m].expires)
                 for m in range(dp.n_fq)]
        return {"fdb": sorted(fdb), "conntrack": sorted(ct), "neigh": sorted(neigh),
                "affinity": sorted(aff), "frags": sorted(frags)}

    # ---------------------------------------------------------------- the batch call
    def process(self, buf, offsets, lengths, in_if, in_mode, ts_ns, Py_ssize_t start,
                Py_ssize_t stop, res) -> int:
        """Run frames ``start..stop-1``; return the index of the first frame not processed
        (``stop`` unless ``res`` ran out of room)."""
        cdef DP* dp = &self.dp
        b_arr = _input(buf, cnp.NPY_UINT8, np.uint8)
        off_arr = _input(offsets, cnp.NPY_INT64, np.int64)
        len_arr = _input(lengths, cnp.NPY_INT32, np.int32)
        if_arr = _input(in_if, cnp.NPY_INT32, np.int32)
        mode_arr = _input(in_mode, cnp.NPY_UINT8, np.uint8)
        ts_arr = _input(ts_ns, cnp.NPY_INT64, np.int64)
        cdef const uint8_t* bp = <const uint8_t*>cnp.PyArray_DATA(b_arr)
        cdef int64_t blen = cnp.PyArray_DIM(b_arr, 0)
        cdef const int64_t* offp = <const int64_t*>cnp.PyArray_DATA(off_arr)
        cdef const int32_t* lenp = <const int32_t*>cnp.PyArray_DATA(len_arr)
        cdef const int32_t* ifp = <const int32_t*>cnp.PyArray_DATA(if_arr)
        cdef const uint8_t* modep = <const uint8_t*>cnp.PyArray_DATA(mode_arr)
        cdef const int64_t* tsp = <const int64_t*>cnp.PyArray_DATA(ts_arr)
        cdef Py_ssize_t n_frames = min(cnp.PyArray_DIM(off_arr, 0), cnp.PyArray_DIM(len_arr, 0),
                                       cnp.PyArray_DIM(if_arr, 0), cnp.PyArray_DIM(mode_arr, 0),
                                       cnp.PyArray_DIM(ts_arr, 0))
        if start >= stop:
            return stop
        if start < 0 or stop > n_frames:
            raise IndexError(f"frames {start}..{stop} outside 0..{n_frames}")
        cdef bint record = bool(res.record)
        cdef int64_t cap_hops = res.cap_hops, cap_events = res.cap_events
        cdef int64_t cap_oc = res.cap_outcomes, n
        dp.record = record
        dp.fc_on = self.fc_enabled and not record
        if record:
            dp.hop_frame = <int32_t*>_res_ptr(res.hop_frame, cnp.NPY_INT32, &dp.hop_cap)
            dp.hop_iface = <int32_t*>_res_ptr(res.hop_iface, cnp.NPY_INT32, &n)
            dp.hop_cap = min(dp.hop_cap, n)
            dp.hop_dir = <uint8_t*>_res_ptr(res.hop_dir, cnp.NPY_UINT8, &n)
            dp.hop_cap = min(dp.hop_cap, n)
            dp.hop_off = <int64_t*>_res_ptr(res.hop_off, cnp.NPY_INT64, &n)
            dp.hop_cap = min(dp.hop_cap, n)
            dp.hop_len = <int32_t*>_res_ptr(res.hop_len, cnp.NPY_INT32, &n)
            dp.hop_cap = min(dp.hop_cap, n)
            dp.ev_frame = <int32_t*>_res_ptr(res.ev_frame, cnp.NPY_INT32, &dp.ev_cap)
            dp.ev_hop = <int32_t*>_res_ptr(res.ev_hop, cnp.NPY_INT32, &n)
            dp.ev_cap = min(dp.ev_cap, n)
            dp.ev_kind = <int16_t*>_res_ptr(res.ev_kind, cnp.NPY_INT16, &n)
            dp.ev_cap = min(dp.ev_cap, n)
            dp.ev_a = <int64_t*>_res_ptr(res.ev_a, cnp.NPY_INT64, &n)
            dp.ev_cap = min(dp.ev_cap, n)
            dp.ev_b = <int64_t*>_res_ptr(res.ev_b, cnp.NPY_INT64, &n)
            dp.ev_cap = min(dp.ev_cap, n)
            dp.ev_c = <int64_t*>_res_ptr(res.ev_c, cnp.NPY_INT64, &n)
            dp.ev_cap = min(dp.ev_cap, n)
        else:
            dp.hop_cap = 0
            dp.ev_cap = 0
        dp.oc_frame = <int32_t*>_res_ptr(res.oc_frame, cnp.NPY_INT32, &dp.oc_cap)
        dp.oc_kind = <uint8_t*>_res_ptr(res.oc_kind, cnp.NPY_UINT8, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_reason = <int16_t*>_res_ptr(res.oc_reason, cnp.NPY_INT16, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_iface = <int32_t*>_res_ptr(res.oc_iface, cnp.NPY_INT32, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_hop = <int32_t*>_res_ptr(res.oc_hop, cnp.NPY_INT32, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_a = <int64_t*>_res_ptr(res.oc_a, cnp.NPY_INT64, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_off = <int64_t*>_res_ptr(res.oc_off, cnp.NPY_INT64, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_len = <int32_t*>_res_ptr(res.oc_len, cnp.NPY_INT32, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.oc_nat = <uint8_t*>_res_ptr(res.oc_nat, cnp.NPY_UINT8, &n)
        dp.oc_cap = min(dp.oc_cap, n)
        dp.arena = <uint8_t*>_res_ptr(res.arena, cnp.NPY_UINT8, &dp.arena_cap)
        dp.n_hops = res.n_hops
        dp.n_events = res.n_events
        dp.n_oc = res.n_outcomes
        dp.arena_used = res.arena_used
        dp.err = 0
        cdef int64_t n_if = dp.n_if
        cdef int64_t worst_hops = MAX_HOPS * (n_if + 2)
        cdef int64_t few_hops = n_if * 2 + 8
        cdef int64_t hops, arena, off, ln, real
        cdef int32_t iface
        cdef Py_ssize_t fi
        cdef Py_ssize_t done = stop
        cdef uint64_t ring[16]
        cdef int32_t ring2[16]
        cdef FcKey fring[16]
        memset(ring, 0, sizeof(ring))
        memset(ring2, 0xFF, sizeof(ring2))
        for fi in range(start, min(start + 12, stop)):  # prime the prefetch pipeline
            fc_key(dp, bp, blen, offp, lenp, ifp, modep, fi, &fring[fi & 15])
            if fi < start + 8 and 0 <= offp[fi] and offp[fi] + lenp[fi] <= blen \
                    and 0 <= ifp[fi] < n_if:
                ring[fi & 15] = flow_key_hash(dp, bp + offp[fi], lenp[fi], ifp[fi], False)
        with nogil:  # other Python threads (replay's writer) run meanwhile
            for fi in range(start, stop):
                prefetch_flows(dp, bp, blen, offp, lenp, ifp, modep, fi, stop, ring, ring2,
                               fring)
                ln = lenp[fi]
                if record:  # Results.room
                    hops = worst_hops
                    arena = hops * (ln + 64) + 4096
                else:
                    hops = few_hops
                    arena = (ln + 64) * few_hops
                if not (dp.n_hops + hops <= cap_hops and dp.n_events + 2 * hops <= cap_events
                        and dp.n_oc + hops <= cap_oc and dp.arena_used + arena <= dp.arena_cap):
                    done = fi
                    break
                iface = ifp[fi]
                off = offp[fi]
                if iface < 0 or iface >= n_if or off < 0 or ln < 0:
                    done = -1 - fi
                    break
                real = ln if off + ln <= blen else max(0, blen - off)  # buf[off: off + ln]
                dp.now = tsp[fi]
                dp.fi = <int32_t>fi
                if fc_try(dp, bp + off, real, &fring[fi & 15]):
                    continue
                run_frame(dp, bp + off, <int>real, iface, modep[fi])
                if dp.err:
                    done = -1 - fi
                    break
        res.n_hops = dp.n_hops
        res.n_events = dp.n_events
        res.n_outcomes = dp.n_oc
        res.arena_used = dp.arena_used
        if done < 0:
            fi = -1 - done
            if dp.err:
                err, dp.err = dp.err, 0
                if err & ERR_NOMEM:
                    raise MemoryError(f"frame {fi}: out of memory")
                raise RuntimeError(f"frame {fi}: results arrays or pending events overflowed "
                                   f"(error flags {err})")
            raise IndexError(f"frame {fi}: interface {ifp[fi]} (of {n_if}), offset "
                             f"{offp[fi]} or length {lenp[fi]} out of range")
        return done
