# codes.pxi: The numbers the datapath shares with Python: device kinds, stages, outcomes, drop
# reasons, event kinds and conntrack states as compile-time enums (values from
# ``kemu.dataplane.codes`` and ``.packet``; ``_check_codes`` refuses a build that disagrees at
# import), the conntrack timeouts (from ``kemu.dataplane.reference.conntrack``), and the batch
# error flags. Twin: ``kemu/dataplane/codes.py`` (the one definition).

cdef enum:  # compile-time constants (the C compiler folds and combines them), with the
            # values of kemu.dataplane.codes, .packet and .reference, which stay their one
            # definition: _check_codes() refuses to import a build that disagrees
    IF_POD_ETH = 1
    IF_POD_LO = 2
    IF_VETH = 3
    IF_BRIDGE = 4
    IF_NODE_ETH = 5
    IF_VTEP = 6
    IF_EXT_ETH = 7
    IF_GW_ETH = 8
    IF_NODE_LOCAL = 9
    IF_IPIP = 12
    IF_DUMMY = 13
    IF_VETH_HOST = 10
    IF_UPLINK = 11
    IF_CILIUM_HOST = 14
    IF_OVS_PORT = 17
    IF_OVS_GW = 18
    IF_OVS_TUN = 19
    DIR_IN = 1
    DIR_OUT = 2
    INJ_TX = 0
    INJ_TX_FIXL2 = 1
    INJ_RX = 2
    OUT_DELIVERED = 1
    OUT_DROPPED = 2
    OUT_LEFT = 3
    OUT_NEIGH = 4
    DROP_TOO_SHORT = 1
    DROP_UNKNOWN_ETHERTYPE = 2
    DROP_BAD_IP_HEADER = 3
    DROP_BAD_IP_CSUM = 4
    DROP_OTHERHOST = 5
    DROP_TTL_EXCEEDED = 6
    DROP_NO_ROUTE = 7
    DROP_REJECT_NO_ENDPOINTS = 8
    DROP_NO_LOCAL_ENDPOINTS = 9
    DROP_SAME_PORT = 10
    DROP_IPV6 = 11
    DROP_NOT_LOCAL = 12
    DROP_HOP_LIMIT = 13
    DROP_FRAGMENT = 14
    DROP_MARTIAN = 15
    DROP_FRAG_NEEDED = 18
    DROP_LB_SOURCE_RANGE = 19
    DROP_POLICY = 20
    DROP_BLACKHOLE = 30
    DROP_ROUTE_UNREACHABLE = 31
    DROP_ROUTE_PROHIBIT = 32
    DROP_FRAG_QUEUED = 33
    DROP_FRAG_OVERLAP = 34
    DROP_IPVS_NO_DEST = 50
    DROP_OVS_SPOOFGUARD = 70
    DROP_OVS_NO_FLOW = 71
    EV_BR_FDB = 1
    EV_BR_FLOOD = 2
    EV_BR_LOCAL = 3
    EV_ROUTE = 4
    EV_DNAT = 5
    EV_SNAT = 6
    EV_UNDNAT = 7
    EV_UNSNAT = 8
    EV_CT_REUSE = 9
    EV_DELIVER = 10
    EV_DROP = 11
    EV_LEFT = 12
    EV_BRIDGED_DNAT = 13
    EV_ENCAP = 14
    EV_DECAP = 15
    EV_AFFINITY = 16
    EV_LOCAL_ROUTE = 17
    EV_NEIGH_MISS = 18
    EV_FIXL2 = 19
    EV_TTL = 20
    EV_NODE_INPUT = 21
    EV_POLICY_ALLOW = 23
    EV_POLICY_DENY = 24
    EV_L7_REDIRECT = 25
    EV_FRAGMENT = 30
    EV_DEFRAG = 31
    EV_EBT_SNAT = 40
    EV_EBT_DNAT = 41
    EV_IPVS_DNAT = 50
    EV_IPIP_ENCAP = 51
    EV_IPIP_DECAP = 52
    EV_SOCK_LB = 60
    EV_OVS_TABLE = 70
    EV_OVS_ENCAP = 71
    EV_OVS_DECAP = 72
    POL_INGRESS = 1
    POL_EGRESS = 2
    RT_POD_CIDR = 1
    RT_NODE_NET = 2
    RT_LB = 4
    FE_CLUSTER_IP = 1
    FE_LOAD_BALANCER = 3
    FE_NODE_PORT = 4
    FE_HOST_PORT = 6
    SP_AFFINITY = 1
    SP_ITP_LOCAL = 2
    SP_ETP_LOCAL = 4
    BE_LOCAL_FALLBACK = 1
    CT_DNAT = 1
    CT_SNAT = 2
    CT_REPLIED = 4
    PROTO_ICMP = 1
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_SCTP = 132
    MAX_HOPS = 64
    VXLAN_PORT = 8472
    VXLAN_VNI = 1
    CILIUM_ID_HOST = 1
    CILIUM_ID_WORLD = 2
    CILIUM_ID_FIRST = 256
    PROTO_IPIP = 4
    IPIP_OVERHEAD = 20
    ANTREA_GENEVE = 1
    ANTREA_VXLAN = 2
    ANTREA_GRE = 3
    ANTREA_NOENCAP = 4
    GENEVE_PORT = 6081
    ANTREA_VXLAN_PORT = 4789
    PROTO_GRE = 47
    GENEVE_OVERHEAD = 50
    GRE_OVERHEAD = 38
    OVS_FROM_TUNNEL = 1
    OVS_FROM_GATEWAY = 2
    OVS_FROM_POD = 3
    OVS_T_CLASSIFIER = 1
    OVS_T_SPOOFGUARD = 2
    OVS_T_ARP = 3
    OVS_T_ENDPOINT_DNAT = 4
    OVS_T_L3_FORWARDING = 5
    OVS_T_L3_DEC_TTL = 6
    OVS_T_L2_FORWARDING = 7
    OVS_T_OUTPUT = 8
    OVS_L3_TUNNEL = 1
    OVS_L3_LOCAL_POD = 2
    OVS_L3_L2 = 3
    OVS_L3_GATEWAY = 4
    IPVS_RR = 0
    IPVS_SH = 1
    ETH_IP = 2048
    ETH_ARP = 2054
    ETH_IPV6 = 34525
    CT_NONE = 0
    CT_SYN_SENT = 1
    CT_SYN_RECV = 2
    CT_ESTABLISHED = 3
    CT_FIN = 4
    CT_CLOSE = 5
    CT_UDP = 6
    CT_ICMP = 7

_CODES = (
    ('IF_POD_ETH', IF_POD_ETH, _C),
    ('IF_POD_LO', IF_POD_LO, _C),
    ('IF_VETH', IF_VETH, _C),
    ('IF_BRIDGE', IF_BRIDGE, _C),
    ('IF_NODE_ETH', IF_NODE_ETH, _C),
    ('IF_VTEP', IF_VTEP, _C),
    ('IF_EXT_ETH', IF_EXT_ETH, _C),
    ('IF_GW_ETH', IF_GW_ETH, _C),
    ('IF_NODE_LOCAL', IF_NODE_LOCAL, _C),
    ('IF_IPIP', IF_IPIP, _C),
    ('IF_DUMMY', IF_DUMMY, _C),
    ('IF_VETH_HOST', IF_VETH_HOST, _C),
    ('IF_UPLINK', IF_UPLINK, _C),
    ('IF_CILIUM_HOST', IF_CILIUM_HOST, _C),
    ('IF_OVS_PORT', IF_OVS_PORT, _C),
    ('IF_OVS_GW', IF_OVS_GW, _C),
    ('IF_OVS_TUN', IF_OVS_TUN, _C),
    ('DIR_IN', DIR_IN, _C),
    ('DIR_OUT', DIR_OUT, _C),
    ('INJ_TX', INJ_TX, _C),
    ('INJ_TX_FIXL2', INJ_TX_FIXL2, _C),
    ('INJ_RX', INJ_RX, _C),
    ('OUT_DELIVERED', OUT_DELIVERED, _C),
    ('OUT_DROPPED', OUT_DROPPED, _C),
    ('OUT_LEFT', OUT_LEFT, _C),
    ('OUT_NEIGH', OUT_NEIGH, _C),
    ('DROP_TOO_SHORT', DROP_TOO_SHORT, _C),
    ('DROP_UNKNOWN_ETHERTYPE', DROP_UNKNOWN_ETHERTYPE, _C),
    ('DROP_BAD_IP_HEADER', DROP_BAD_IP_HEADER, _C),
    ('DROP_BAD_IP_CSUM', DROP_BAD_IP_CSUM, _C),
    ('DROP_OTHERHOST', DROP_OTHERHOST, _C),
    ('DROP_TTL_EXCEEDED', DROP_TTL_EXCEEDED, _C),
    ('DROP_NO_ROUTE', DROP_NO_ROUTE, _C),
    ('DROP_REJECT_NO_ENDPOINTS', DROP_REJECT_NO_ENDPOINTS, _C),
    ('DROP_NO_LOCAL_ENDPOINTS', DROP_NO_LOCAL_ENDPOINTS, _C),
    ('DROP_SAME_PORT', DROP_SAME_PORT, _C),
    ('DROP_IPV6', DROP_IPV6, _C),
    ('DROP_NOT_LOCAL', DROP_NOT_LOCAL, _C),
    ('DROP_HOP_LIMIT', DROP_HOP_LIMIT, _C),
    ('DROP_FRAGMENT', DROP_FRAGMENT, _C),
    ('DROP_MARTIAN', DROP_MARTIAN, _C),
    ('DROP_FRAG_NEEDED', DROP_FRAG_NEEDED, _C),
    ('DROP_LB_SOURCE_RANGE', DROP_LB_SOURCE_RANGE, _C),
    ('DROP_POLICY', DROP_POLICY, _C),
    ('DROP_BLACKHOLE', DROP_BLACKHOLE, _C),
    ('DROP_ROUTE_UNREACHABLE', DROP_ROUTE_UNREACHABLE, _C),
    ('DROP_ROUTE_PROHIBIT', DROP_ROUTE_PROHIBIT, _C),
    ('DROP_FRAG_QUEUED', DROP_FRAG_QUEUED, _C),
    ('DROP_FRAG_OVERLAP', DROP_FRAG_OVERLAP, _C),
    ('DROP_IPVS_NO_DEST', DROP_IPVS_NO_DEST, _C),
    ('DROP_OVS_SPOOFGUARD', DROP_OVS_SPOOFGUARD, _C),
    ('DROP_OVS_NO_FLOW', DROP_OVS_NO_FLOW, _C),
    ('EV_BR_FDB', EV_BR_FDB, _C),
    ('EV_BR_FLOOD', EV_BR_FLOOD, _C),
    ('EV_BR_LOCAL', EV_BR_LOCAL, _C),
    ('EV_ROUTE', EV_ROUTE, _C),
    ('EV_DNAT', EV_DNAT, _C),
    ('EV_SNAT', EV_SNAT, _C),
    ('EV_UNDNAT', EV_UNDNAT, _C),
    ('EV_UNSNAT', EV_UNSNAT, _C),
    ('EV_CT_REUSE', EV_CT_REUSE, _C),
    ('EV_DELIVER', EV_DELIVER, _C),
    ('EV_DROP', EV_DROP, _C),
    ('EV_LEFT', EV_LEFT, _C),
    ('EV_BRIDGED_DNAT', EV_BRIDGED_DNAT, _C),
    ('EV_ENCAP', EV_ENCAP, _C),
    ('EV_DECAP', EV_DECAP, _C),
    ('EV_AFFINITY', EV_AFFINITY, _C),
    ('EV_LOCAL_ROUTE', EV_LOCAL_ROUTE, _C),
    ('EV_NEIGH_MISS', EV_NEIGH_MISS, _C),
    ('EV_FIXL2', EV_FIXL2, _C),
    ('EV_TTL', EV_TTL, _C),
    ('EV_NODE_INPUT', EV_NODE_INPUT, _C),
    ('EV_POLICY_ALLOW', EV_POLICY_ALLOW, _C),
    ('EV_POLICY_DENY', EV_POLICY_DENY, _C),
    ('EV_L7_REDIRECT', EV_L7_REDIRECT, _C),
    ('EV_FRAGMENT', EV_FRAGMENT, _C),
    ('EV_DEFRAG', EV_DEFRAG, _C),
    ('EV_EBT_SNAT', EV_EBT_SNAT, _C),
    ('EV_EBT_DNAT', EV_EBT_DNAT, _C),
    ('EV_IPVS_DNAT', EV_IPVS_DNAT, _C),
    ('EV_IPIP_ENCAP', EV_IPIP_ENCAP, _C),
    ('EV_IPIP_DECAP', EV_IPIP_DECAP, _C),
    ('EV_SOCK_LB', EV_SOCK_LB, _C),
    ('EV_OVS_TABLE', EV_OVS_TABLE, _C),
    ('EV_OVS_ENCAP', EV_OVS_ENCAP, _C),
    ('EV_OVS_DECAP', EV_OVS_DECAP, _C),
    ('POL_INGRESS', POL_INGRESS, _C),
    ('POL_EGRESS', POL_EGRESS, _C),
    ('RT_POD_CIDR', RT_POD_CIDR, _C),
    ('RT_NODE_NET', RT_NODE_NET, _C),
    ('RT_LB', RT_LB, _C),
    ('FE_CLUSTER_IP', FE_CLUSTER_IP, _C),
    ('FE_LOAD_BALANCER', FE_LOAD_BALANCER, _C),
    ('FE_NODE_PORT', FE_NODE_PORT, _C),
    ('FE_HOST_PORT', FE_HOST_PORT, _C),
    ('SP_AFFINITY', SP_AFFINITY, _C),
    ('SP_ITP_LOCAL', SP_ITP_LOCAL, _C),
    ('SP_ETP_LOCAL', SP_ETP_LOCAL, _C),
    ('BE_LOCAL_FALLBACK', BE_LOCAL_FALLBACK, _C),
    ('CT_DNAT', CT_DNAT, _C),
    ('CT_SNAT', CT_SNAT, _C),
    ('CT_REPLIED', CT_REPLIED, _C),
    ('PROTO_ICMP', PROTO_ICMP, _C),
    ('PROTO_TCP', PROTO_TCP, _C),
    ('PROTO_UDP', PROTO_UDP, _C),
    ('PROTO_SCTP', PROTO_SCTP, _C),
    ('MAX_HOPS', MAX_HOPS, _C),
    ('VXLAN_PORT', VXLAN_PORT, _C),
    ('VXLAN_VNI', VXLAN_VNI, _C),
    ('CILIUM_ID_HOST', CILIUM_ID_HOST, _C),
    ('CILIUM_ID_WORLD', CILIUM_ID_WORLD, _C),
    ('CILIUM_ID_FIRST', CILIUM_ID_FIRST, _C),
    ('PROTO_IPIP', PROTO_IPIP, _C),
    ('IPIP_OVERHEAD', IPIP_OVERHEAD, _C),
    ('ANTREA_GENEVE', ANTREA_GENEVE, _C),
    ('ANTREA_VXLAN', ANTREA_VXLAN, _C),
    ('ANTREA_GRE', ANTREA_GRE, _C),
    ('ANTREA_NOENCAP', ANTREA_NOENCAP, _C),
    ('GENEVE_PORT', GENEVE_PORT, _C),
    ('ANTREA_VXLAN_PORT', ANTREA_VXLAN_PORT, _C),
    ('PROTO_GRE', PROTO_GRE, _C),
    ('GENEVE_OVERHEAD', GENEVE_OVERHEAD, _C),
    ('GRE_OVERHEAD', GRE_OVERHEAD, _C),
    ('OVS_FROM_TUNNEL', OVS_FROM_TUNNEL, _C),
    ('OVS_FROM_GATEWAY', OVS_FROM_GATEWAY, _C),
    ('OVS_FROM_POD', OVS_FROM_POD, _C),
    ('OVS_T_CLASSIFIER', OVS_T_CLASSIFIER, _C),
    ('OVS_T_SPOOFGUARD', OVS_T_SPOOFGUARD, _C),
    ('OVS_T_ARP', OVS_T_ARP, _C),
    ('OVS_T_ENDPOINT_DNAT', OVS_T_ENDPOINT_DNAT, _C),
    ('OVS_T_L3_FORWARDING', OVS_T_L3_FORWARDING, _C),
    ('OVS_T_L3_DEC_TTL', OVS_T_L3_DEC_TTL, _C),
    ('OVS_T_L2_FORWARDING', OVS_T_L2_FORWARDING, _C),
    ('OVS_T_OUTPUT', OVS_T_OUTPUT, _C),
    ('OVS_L3_TUNNEL', OVS_L3_TUNNEL, _C),
    ('OVS_L3_LOCAL_POD', OVS_L3_LOCAL_POD, _C),
    ('OVS_L3_L2', OVS_L3_L2, _C),
    ('OVS_L3_GATEWAY', OVS_L3_GATEWAY, _C),
    ('IPVS_RR', IPVS_RR, _C),
    ('IPVS_SH', IPVS_SH, _C),
    ('ETH_IP', ETH_IP, _P),
    ('ETH_ARP', ETH_ARP, _P),
    ('ETH_IPV6', ETH_IPV6, _P),
    ('CT_NONE', CT_NONE, _R),
    ('CT_SYN_SENT', CT_SYN_SENT, _R),
    ('CT_SYN_RECV', CT_SYN_RECV, _R),
    ('CT_ESTABLISHED', CT_ESTABLISHED, _R),
    ('CT_FIN', CT_FIN, _R),
    ('CT_CLOSE', CT_CLOSE, _R),
    ('CT_UDP', CT_UDP, _R),
    ('CT_ICMP', CT_ICMP, _R),
)


def _check_codes() -> None:
    """The enum above against the Python definitions (one source of the numbers)."""
    for name, value, module in _CODES:
        if getattr(module, name) != value:
            raise ImportError(f"kemu._fastpath was built with {name} = {value}, but "
                              f"{module.__name__} says {getattr(module, name)}: rebuild it")


_check_codes()

cdef uint64_t BROADCAST = _P.BROADCAST
# conntrack states and timeouts (defined once, in the reference)
cdef int N_TCP_TIMEOUTS = len(_R.TCP_TIMEOUTS)
cdef int64_t TCP_TIMEOUT_NS[16]
for _i, _v in enumerate(_R.TCP_TIMEOUTS[:16]):
    TCP_TIMEOUT_NS[_i] = _v * _R.NS
cdef int64_t UDP_TIMEOUT_NS = _R.UDP_TIMEOUT * _R.NS
cdef int64_t UDP_STREAM_TIMEOUT_NS = _R.UDP_STREAM_TIMEOUT * _R.NS
cdef int64_t ICMP_TIMEOUT_NS = _R.ICMP_TIMEOUT * _R.NS
cdef int64_t OTHER_TIMEOUT_NS = _R.OTHER_TIMEOUT * _R.NS
cdef int64_t FRAG_TIMEOUT_NS = _C.FRAG_TIMEOUT_NS  # ipfrag_time (frag)

cdef enum:
    S_TX = 0            # work-stack stages (private to each implementation)
    S_RX = 1
    S_BRIDGE_IN = 2
    S_BRIDGE_OUT = 3
    S_NODE_IN = 4
    S_LOCAL_OUT = 5
    NPEND = 32          # pending events of one copy between two hops (at most ~8 happen)
    FC_N = 4            # FDB refreshes, FDB lookups and conntrack entries per cached path
    FC_BITS = 16        # flow cache entries: 2^16 (8 MiB, allocated on first use)
    NTOUCH = 16         # table records a frame's lookups touched, kept with its flow
    HEADROOM = 128      # bytes before a frame copy: VXLAN prepends 50 in place
    MIN_BUF = 2048

cdef enum:              # error flags raised after a batch (never expected)
    ERR_NOMEM = 1
    ERR_RESULTS = 2
    ERR_PEND = 4
