# state.pxi: The datapath's C state: interfaces (``IfInfo``), conntrack entries (``CtE``, one
# 64-byte line each) and their index, the per-copy context (``Ctx``) and work item (``Item``) with
# its pending events, the flow cache's records, and ``DP`` holding all of it; the frame buffers
# with headroom and the LIFO work stack that floods fork copies onto. Twin:
# ``kemu/dataplane/reference/state.py`` (``CtEntry``, ``Ctx``, ``Item``).

ctypedef struct IfInfo:          # one interface, direct-indexed by id
    int64_t mac
    uint32_t ip
    int32_t kind
    int32_t node
    int32_t peer
    int32_t bridge
    uint16_t hairpin
    uint16_t mtu                 # L2-2 (65536 of lo held as 65535: no IPv4 packet is longer)

ctypedef struct NShared:         # a node-network neighbour every node knows (but its own)
    int64_t mac                  # the last seeded address, from node ``node``: every other
    int64_t mac2                 # node has ``mac``; node ``node`` itself has ``mac2`` (the
    int32_t node                 # last one seeded from another node) when ``has2``
    int32_t node2
    int32_t has2

ctypedef struct Tup:             # one direction of a conntrack entry (protocol apart)
    uint32_t sip
    uint32_t dip
    uint16_t sport
    uint16_t dport

ctypedef struct CtE:             # reference.CtEntry, in one 64-byte cache line
    Tup t[2]                     # [0] the original tuple, [1] the reply tuple
    int64_t expires
    uint32_t dnat_ip
    uint32_t snat_ip
    int32_t node
    int32_t sp                   # (a free entry: the next free one)
    int32_t be
    uint16_t dnat_port
    uint16_t snat_port
    uint8_t proto[2]
    uint8_t flags
    uint8_t state
    uint8_t masq
    uint8_t zombie               # queued for freeing at the end of the frame
    uint8_t keys                 # bit d: the index slot of tuple d names (this entry, d)

ctypedef struct CtTab:           # conntrack index: (node, tuple) -> (entry, direction)
    uint64_t* s                  # hash << 32 | (entry * 2 + is_reply + 1); 0: empty
    uint64_t mask
    int64_t n

ctypedef struct Ctx:             # reference.Ctx
    int32_t node
    int32_t ct
    int32_t verdict
    int32_t verdict_sp
    int32_t related              # an ICMP error's flow (entry), for the un-DNAT at POSTROUTING
    uint8_t reply_dir
    uint8_t new
    uint8_t pre_done

ctypedef struct Ev:
    int64_t kind
    int64_t a
    int64_t b
    int64_t c

ctypedef struct Item:            # reference.Item: one copy of a frame on the work stack
    uint8_t* mem
    int32_t cap
    int32_t off
    int32_t len
    int32_t stage
    int32_t a
    int32_t b
    Ctx ctx
    int32_t hops
    int32_t last_hop
    int64_t snap_off
    int32_t snap_len
    int32_t flood
    int32_t ip_ok                # ip_rcv's checks passed and the header changed only by
                                 # checksum-preserving rewrites since (reset with the data)
    int32_t ct_prev              # entry * 2 + d of this copy's last conntrack hit, -1
    int32_t nat                  # a translation rewrote this copy (oc_nat), recording or not
    int32_t frag_max             # reassembled by conntrack: its largest fragment (frag)
    int32_t npend
    Ev pend[NPEND]

ctypedef struct Buf:
    uint8_t* mem
    int32_t cap

ctypedef struct FcKey:           # a frame's flow cache key, worked out ahead (prefetch_flows)
    uint64_t key[4]
    uint64_t idx
    int32_t ttl
    int32_t ok                   # the frame is one the flow cache can hold (fc_parse)

ctypedef struct FcE:             # a cached path of an established flow: two cache lines
    uint64_t key[4]              # what the path's decisions read of the frame (fc_parse)
    uint64_t gen                 # fc_gen() when cached; the path holds while it is unchanged
    int64_t out_a                # the outcome
    int32_t out_iface
    int16_t out_reason
    uint8_t out_kind
    uint8_t ttl_k                # routing hops on the path (each decrements the TTL)
    uint8_t n_learn
    uint8_t n_check
    uint8_t n_ct
    uint8_t out_nat              # the outcome's oc_nat
    uint16_t max_len             # the smallest MTU the path met: longer frames take the stages
    uint8_t pad[2]
    int32_t learn[FC_N]          # FDB slots the path refreshes (seen = now; port unchanged)
    int32_t check[FC_N]          # FDB slots the path forwards by (must not have aged)
    int32_t ct[FC_N]             # conntrack entry * 2 + is_reply, in path order
    uint32_t inc[FC_N]           # ... and the entries' incarnations (ce_inc)

cdef enum:
    PORT_ANY_C = 65536           # kemu.dataplane.tables.PORT_ANY (checked at import)

ctypedef struct PolC:            # NetworkPolicy's loaded tables (policy.pxi)
    int32_t n                    # policies; 0: no policy, one test per new flow
    bint icmp_allow              # spec.networkPolicy.icmp: allow (P-8)
    int32_t l7_first             # rule ids from here on are L7 rules (Tables.rule_l7_count)
    HTab pm                      # (pd, (peer + 1) << 32 | proto << 17 | port) -> rule
    HTab ri                      # (rule, identity) of the slow rules' selector peers
    HTab named                   # (pod, proto << 32 | name) -> port (P-7)
    HTab pod_ip                  # pod address -> pod (not hostNetwork)
    const int32_t* pod_node
    const int32_t* pod_ident
    const int32_t* sel_start
    const int32_t* sel_count
    const int32_t* sel_pol
    const int32_t* slow_start
    const int32_t* slow_count
    const int32_t* slow_rule
    const int32_t* pd_keys       # kinds of key per (policy, dir) in pm (Tables.pd_keys)
    const int32_t* any_peer
    const int32_t* port_start
    const int32_t* port_count
    const int32_t* port_proto
    const int32_t* port_lo
    const int32_t* port_hi
    const int32_t* port_name
    const int32_t* cidr_start
    const int32_t* cidr_count
    const uint32_t* cb_net
    const uint32_t* cb_mask
    const int32_t* cb_exc_start
    const int32_t* cb_exc_count
    const uint32_t* ex_net
    const uint32_t* ex_mask

ctypedef struct FragQ:           # reference frag.FragQueue, with its key
    int64_t expires
    uint32_t src
    uint32_t dst
    int32_t node
    int32_t user
    int32_t proto
    int32_t id
    int32_t len                  # the payload's length as far as known (q.len)
    int32_t last_in
    int32_t meat
    int32_t tail
    int32_t max_size
    int32_t max_df_size
    int32_t count
    int32_t first_len            # 14 + IHL of the fragment at offset 0; 0: not in yet
    int32_t n_runs
    int32_t runs_cap
    int32_t* runs                # [start, end) pairs of contiguous runs, sorted
    uint8_t* buf                 # the first fragment's header at 0, the payload at FQ_DATA

cdef enum:                       # frag: the queue's buffer, results, defrag users
    FQ_DATA = 80                 # 14 + the largest IPv4 header (60), rounded up
    FQ_BUF = 80 + 131072         # the payload's end: offset (< 65536) + an IP length
    FRAG_DUP = -1
    FRAG_OVERLAP = -2
    FRAG_BAD = -3
    DEFRAG_IN = 0                # nf_defrag_ipv4's users (reference frag.DEFRAG_*)
    DEFRAG_OUT = 1
    DEFRAG_BRIDGE_IN = 2


ctypedef struct DP:
    # ---- tables (pointers into arrays owned by the Python object)
    int32_t n_if
    int32_t n_nodes
    int32_t n_br
    int32_t n_rt
    int32_t n_sp
    IfInfo* ifs
    const int32_t* br_local_if
    const int32_t* br_netfilter
    const int32_t* br_port_start
    const int32_t* br_port_count
    const int32_t* br_ports
    const int32_t* node_eth_if
    const int32_t* node_br_if
    const int32_t* node_vtep_if
    const int32_t* node_local_if
    const uint32_t* node_ip
    const uint32_t* node_br_ip
    const uint32_t* node_pod_mask
    const int32_t* lip_n          # local addresses per node (reference local_ips)
    const uint32_t* lip_ip
    const int32_t* lip_if
    const uint64_t* lip_bloom     # per node: bit lip_bit(ip) set for each local address
    int32_t lip_k
    const int32_t* rt_kind        # per route: codes.RT_*, resolved per node (_route_dev)
    const int32_t* rt_owner       # the node owning a pod CIDR, -1
    const uint32_t* rt_nh         # the next hop from any node that does not own it
    const int32_t* rt_dev         # a pod route's device on its owner (routed veth), -1: bridge
    const uint8_t* if_parp        # proxy ARP per interface (Tables.if_proxy_arp)
    const int32_t* nrt_start      # a node with its own route table (Tables.node_rt_*, R-2):
    const int32_t* nrt_count      # routes nrt_*[start : +count], longest first; 0: shared
    const uint32_t* nrt_prefix
    const uint32_t* nrt_mask
    const int32_t* nrt_if         # out interface, or -reason of a discarding route
    const uint32_t* nrt_nh
    LpmC* lpm
    HTab fe
    HTab fe_np
    HTab own                      # ip -> the interface owning it (Tables.owner_of)
    const int32_t* fe_sp
    const int32_t* fe_kind
    const int32_t* sp_flags
    const int64_t* sp_aff_ns
    const int32_t* sp_be_start
    const int32_t* sp_be_count
    const uint32_t* be_ip
    const int32_t* be_port
    const int32_t* be_node
    const int32_t* be_flags       # codes.BE_* (KEP-1669 local fallback)
    const int32_t* sp_src_start   # loadBalancerSourceRanges per service port (E-4)
    const int32_t* sp_src_count
    const uint32_t* src_net
    const uint32_t* src_mask
    const uint32_t* own_ip
    const int32_t* own_if
    int64_t n_own
    int32_t* cands
    uint32_t node_net_prefix
    uint32_t node_net_mask
    uint32_t gateway_ip
    int32_t gateway_if
    uint32_t cnet
    uint32_t cmask
    bint vxlan
    bint ipvs                     # kube-router: Services by IPVS at LOCAL_IN (proxy.pxi)
    int32_t ipvs_sched            # IPVS_RR or IPVS_SH
    const int32_t* tun_if         # [node * n_nodes + peer]: kube-router's IPIP tun-<hash>
                                  # device towards peer, -1; NULL: no tunnels (tunnel.pxi)
    bint masq_rf                  # kube-proxy's MASQUERADE --random-fully (S-7)
    bint egress_masq              # flannel ipMasq: pod traffic leaving the cluster (M-5)
    bint egress_rf                # its MASQUERADE --random-fully
    const uint32_t* nm_net        # the non-masquerade CIDRs (network, mask)
    const uint32_t* nm_mask
    int32_t n_nm
    int64_t ageing_ns
    uint64_t seed
    PolC pol                      # NetworkPolicy (policy.pxi); pol.n 0: none
    # ---- mutable state
    CtTab ct                      # (node, tuple) -> entry * 2 + is_reply
    HTab fdb                      # (mac, bridge) -> (port, seen)
    HTab neigh                    # (ip, node) -> (mac, header cached: reference neigh_hh)
    HTab nshared                  # ip -> index into ``sh``: entries of every node (those
    NShared* sh                   #   in ``neigh`` take precedence), header not cached
    int64_t n_sh
    int64_t sh_cap
    int32_t sh_nodes              # the nodes the shared entries are for: 0..sh_nodes-1
    HTab aff                      # (sip, node << 32 | sp) -> (ip << 16 | port, last)
    HTab ipvs_rr                  # (frontend, node) -> the next round-robin position
    FragQ* fq                     # reassembly queues (frag), unordered
    int32_t n_fq
    int32_t fq_cap
    CtE* ce
    int32_t* ce_hint              # [entry * 2 + d]: the entry * 2 + d the same copy met
                                  # next (at the next node), -1; a guess checked on use
    void** ce_touch               # [entry * NTOUCH + k]: what the last frame of the flow
                                  # looked up (interfaces, FDB and neighbour slots), to
                                  # prefetch for the next one (addresses only: never read);
                                  # allocated (ce_cap records) while ``track`` only
    int32_t ce_cap
    int32_t ce_used
    int32_t ce_free
    int32_t* zombies
    int32_t n_zombies
    int32_t zombies_cap
    bint track                    # keep ce_touch: the tables outgrow the caches
    uint32_t* ce_inc              # [entry]: incarnation, bumped on allocation and whenever
                                  # the entry loses an index key (cached paths check it)
    # ---- the flow cache (fc_try): established flows' paths, replayed without the stages
    FcE* fc
    bint fc_on                    # enabled, and not recording (hops need the stages)
    int64_t fc_hits               # frames run by their cached path
    uint64_t fc_bump              # explicit invalidations: API writes, a MAC that moved, a
                                  # neighbour header cached (see fc_gen)
    bint tr_ok                    # the current frame's path so far is one fc can hold
    uint64_t tr_gen
    uint64_t tr_idx
    uint64_t tr_key[4]
    const uint8_t* tr_frame       # the input frame (valid until the frame is done)
    int32_t tr_nl
    int32_t tr_nc
    int32_t tr_nct
    int32_t tr_k
    uint32_t tr_mtu               # the smallest MTU the traced path checked (too_big)
    int32_t tr_nout
    int32_t tr_learn[FC_N]
    int32_t tr_check[FC_N]
    int32_t tr_ct[FC_N]
    uint32_t tr_inc[FC_N]
    int32_t tr_out_kind
    int32_t tr_out_reason
    int32_t tr_out_iface
    int32_t tr_out_nat
    int64_t tr_out_a
    # ---- per batch
    void* touch[NTOUCH]           # the current frame's lookups (ce_touch)
    int32_t n_touch
    int32_t first_ct              # the current frame's first conntrack entry, -1
    int64_t now
    int32_t fi
    bint record
    int err
    Item* stack
    int32_t sp
    int32_t stack_cap
    Buf* pool
    int32_t n_pool
    int32_t pool_cap
    # ---- results (re-acquired on every process call)
    int32_t* hop_frame
    int32_t* hop_iface
    uint8_t* hop_dir
    int64_t* hop_off
    int32_t* hop_len
    int64_t hop_cap
    int32_t* ev_frame
    int32_t* ev_hop
    int16_t* ev_kind
    int64_t* ev_a
    int64_t* ev_b
    int64_t* ev_c
    int64_t ev_cap
    int32_t* oc_frame
    uint8_t* oc_kind
    int16_t* oc_reason
    int32_t* oc_iface
    int32_t* oc_hop
    int64_t* oc_a
    int64_t* oc_off
    int32_t* oc_len
    uint8_t* oc_nat
    int64_t oc_cap
    uint8_t* arena
    int64_t arena_cap
    int64_t n_hops
    int64_t n_events
    int64_t n_oc
    int64_t arena_used
    # ---- the later CNI modes' switches, at the end: the fields before keep the offsets
    # (and cache lines) the hot paths were measured with (bench/ab.py: 16 bytes more in the
    # middle cost the flow cache's mix row about a tenth)
    bint sock_lb                  # Cilium: ClusterIPs translated at the pod's socket
    int32_t ovs                   # Antrea: Tables.ovs_tunnel (0: not Antrea; ovs.pxi)
    const int32_t* if_vni         # Cilium: the VXLAN VNI (security identity) of a source
                                  # owned by each interface; NULL: flannel's VNI 1 (tunnel.pxi)


# ---- buffers and the work stack
cdef inline uint8_t* DATA(Item* it) noexcept nogil:
    return it.mem + it.off


cdef inline int buf_get(DP* dp, int32_t need, Buf* out) noexcept nogil:
    cdef Buf b
    if need < MIN_BUF:
        need = MIN_BUF
    if dp.n_pool:
        dp.n_pool -= 1
        b = dp.pool[dp.n_pool]
        if b.cap >= need:
            out[0] = b
            return 0
        free(b.mem)
    b.mem = <uint8_t*>malloc(need)
    b.cap = need
    if b.mem == NULL:
        dp.err |= ERR_NOMEM
        return -1
    out[0] = b
    return 0


cdef inline void buf_put(DP* dp, uint8_t* mem, int32_t cap) noexcept nogil:
    cdef Buf* p
    if mem == NULL:
        return
    if dp.n_pool == dp.pool_cap:
        p = <Buf*>realloc(dp.pool, (dp.pool_cap * 2 + 8) * sizeof(Buf))
        if p == NULL:
            free(mem)
            return
        dp.pool = p
        dp.pool_cap = dp.pool_cap * 2 + 8
    dp.pool[dp.n_pool].mem = mem
    dp.pool[dp.n_pool].cap = cap
    dp.n_pool += 1


cdef inline Item* push_slot(DP* dp) noexcept nogil:
    """A new top-of-stack slot (the stack may move: re-fetch item pointers after this)."""
    cdef Item* s
    if dp.sp == dp.stack_cap:
        s = <Item*>realloc(dp.stack, (dp.stack_cap * 2 + 8) * sizeof(Item))
        if s == NULL:
            dp.err |= ERR_NOMEM
            return NULL
        dp.stack = s
        dp.stack_cap = dp.stack_cap * 2 + 8
    dp.sp += 1
    return &dp.stack[dp.sp - 1]


cdef Ctx CTX_NONE                 # reference Ctx(): a fresh context
CTX_NONE.node = -1
CTX_NONE.ct = -1
CTX_NONE.verdict = 0
CTX_NONE.verdict_sp = -1
CTX_NONE.related = -1
CTX_NONE.reply_dir = 0
CTX_NONE.new = 0
CTX_NONE.pre_done = 0


cdef inline void ctx_reset(Ctx* c) noexcept nogil:
    c[0] = CTX_NONE


cdef Item* fork(DP* dp, const Item* src, int stage, int a, int b) noexcept nogil:
    """reference Item.fork: a full copy (bytes, context, snapshot, pending events)."""
    cdef Buf buf
    if buf_get(dp, src.len + HEADROOM, &buf) < 0:
        return NULL
    cdef Item* it = push_slot(dp)
    if it == NULL:
        buf_put(dp, buf.mem, buf.cap)
        return NULL
    memcpy(it, src, sizeof(Item) - sizeof(Ev) * (NPEND - src.npend))
    it.mem = buf.mem
    it.cap = buf.cap
    it.off = HEADROOM
    memcpy(it.mem + HEADROOM, src.mem + src.off, src.len)
    it.stage = stage
    it.a = a
    it.b = b
    return it
