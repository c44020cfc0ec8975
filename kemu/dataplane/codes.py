"""Numeric codes shared by both data-plane implementations, the compiler and the renderers.

Defined once here; ``kemu/_fastpath.pyx`` binds them to C globals at import, the pure
reference uses them directly. Names follow the kernel and Hubble where one exists.
"""

from __future__ import annotations

# Interface kinds (tables.if_kind)
IF_POD_ETH = 1    # <ns>/<pod>/eth0: the pod end of the veth pair
IF_POD_LO = 2     # <ns>/<pod>/lo
IF_VETH = 3       # <node>/veth-<hash>: the node end, a bridge port (L2-1)
IF_BRIDGE = 4     # <node>/cbr0: the bridge device, the node's local port on its bridge
IF_NODE_ETH = 5   # <node>/eth0: node uplink on the node network
IF_VTEP = 6       # <node>/flannel.1 (OV-1)
IF_EXT_ETH = 7    # ext/<name>/eth0: an external host on the node network
IF_GW_ETH = 8     # gateway/eth0: the node network's router (a sink for the outside world)
IF_NODE_LOCAL = 9  # <node>/local: the node's own processes (never captured)
# kube-router (kemu/compiler/kube_router.py)
IF_IPIP = 12      # <node>/tun-<hash>: an IP-in-IP tunnel towards one peer node (no ARP)
IF_DUMMY = 13     # <node>/kube-dummy-if: the dummy device holding the Service addresses
# the node end of a routed veth (AWS VPC CNI ``eni<hash>``, Azure CNI ``azv<hash>``): no
# bridge, an L3 device of the node's own stack, the pod's /32 route points at it
IF_VETH_HOST = 10
# Azure CNI bridge mode: the node's eth0 enslaved to its pod bridge azure0 (which holds the
# node's address): a port of azure0 on one side, the node network's wire on the other, with
# Azure's ebtables MAC rewrites (kemu/compiler/cni_routed.py)
IF_UPLINK = 11
# Cilium (kemu/compiler/cilium.py): cilium_host and its veth peer cilium_net, a veth pair of
# the node's own namespace; cilium_host holds the node's router IP (a local address). The
# pods' lxc<hash> devices are IF_VETH_HOST, cilium_vxlan is IF_VTEP.
IF_CILIUM_HOST = 14
# Antrea (kemu/compiler/antrea.py): the ports of the OVS bridge br-int, which forwards by the
# pipeline's flows (the ``ovs`` room), not by MAC learning
IF_OVS_PORT = 17  # <node>/<pod8>-<hash6>: a pod's host-side veth, an OVS port (also br-int's
                  # own internal port, down: never a forwarding target)
IF_OVS_GW = 18    # <node>/antrea-gw0: the OVS internal port holding the pod CIDR's gateway
IF_OVS_TUN = 19   # <node>/antrea-tun0: the flow-based tunnel port (Geneve, VXLAN or GRE)

IF_KIND_NAMES = {
    IF_POD_ETH: "pod-eth", IF_POD_LO: "pod-lo", IF_VETH: "veth", IF_BRIDGE: "bridge",
    IF_NODE_ETH: "node-eth", IF_VTEP: "vtep", IF_EXT_ETH: "external", IF_GW_ETH: "gateway",
    IF_NODE_LOCAL: "node-local", IF_IPIP: "ipip", IF_DUMMY: "dummy",
    IF_VETH_HOST: "veth-host", IF_UPLINK: "uplink", IF_CILIUM_HOST: "cilium-host",
    IF_OVS_PORT: "ovs-port", IF_OVS_GW: "ovs-gateway", IF_OVS_TUN: "ovs-tunnel",
}

# Directions (equal to pcapng epb_flags direction bits)
DIR_IN = 1
DIR_OUT = 2

# How a frame enters (per-frame injection mode)
INJ_TX = 0        # transmitted by the interface's owner, as is
INJ_TX_FIXL2 = 1  # transmitted by the owner, Ethernet addresses rewritten as its stack would
INJ_RX = 2        # received on the interface (--inject-at a receive point)

# Outcomes (one or more per input frame: floods fan out)
OUT_DELIVERED = 1  # handed to an endpoint stack (pod, external host, node, gateway itself)
OUT_DROPPED = 2
OUT_LEFT = 3       # routed out of the cluster through the gateway
OUT_NEIGH = 4      # held: next hop not in the neighbour table (the driver resolves and resumes)

OUTCOME_NAMES = {OUT_DELIVERED: "DELIVERED", OUT_DROPPED: "DROPPED", OUT_LEFT: "LEFT",
                 OUT_NEIGH: "NEIGH_MISS"}

# Drop reasons. The Hubble name is what the flow log prints (drop_reason_desc).
DROP_NONE = 0
DROP_TOO_SHORT = 1
DROP_UNKNOWN_ETHERTYPE = 2
DROP_BAD_IP_HEADER = 3
DROP_BAD_IP_CSUM = 4
DROP_OTHERHOST = 5       # unicast frame for another MAC reaching an end host
DROP_TTL_EXCEEDED = 6
DROP_NO_ROUTE = 7
DROP_REJECT_NO_ENDPOINTS = 8   # S-9: filter REJECT, ICMP port unreachable
DROP_NO_LOCAL_ENDPOINTS = 9    # S-9: ITP/ETP=Local, silent DROP
DROP_SAME_PORT = 10            # L2-4: no hairpin on the ingress port
DROP_IPV6 = 11
DROP_NOT_LOCAL = 12            # end host got an IP packet not addressed to it
DROP_HOP_LIMIT = 13            # emulation safety: too many hops (a forwarding loop)
DROP_FRAGMENT = 14             # non-first fragments without conntrack reassembly
DROP_MARTIAN = 15              # source address not acceptable (127/8 from the wire, S-15)
DROP_UNSUPPORTED_L4 = 16       # node stack: protocol kemu does not forward through NAT
DROP_NO_STACK = 17             # delivered to a node address nothing listens on
DROP_FRAG_NEEDED = 18          # DF set and longer than the out device's MTU (ip_forward's
                               # ip_exceeds_mtu, ip_fragment): ICMP 3/4 with the MTU
DROP_LB_SOURCE_RANGE = 19      # E-4: LoadBalancer source outside loadBalancerSourceRanges
DROP_POLICY = 20               # P-1/P-2: NetworkPolicy denies a new connection (ingress or egress)
# a node route set by ``ip route replace`` of a type that discards (R-2, ``spec.routes``):
# blackhole silently, unreachable with ICMP 3/1, prohibit with ICMP 3/13 (ip_error)
DROP_BLACKHOLE = 30
DROP_ROUTE_UNREACHABLE = 31
DROP_ROUTE_PROHIBIT = 32
# nf_defrag_ipv4 (L2-2, CT-1): a fragment held in its node's reassembly queue (or a duplicate
# of one held: freed silently), and one overlapping what the queue holds (the queue is killed)
DROP_FRAG_QUEUED = 33
DROP_FRAG_OVERLAP = 34
# IPVS (kube-router's service proxy): a virtual service without a real server; ip_vs_leave
# sends ICMP port unreachable and drops (ip_vs_core.c)
DROP_IPVS_NO_DEST = 50
# Antrea's OVS pipeline: SpoofGuard (a pod port's source MAC/IP not the pod's) and a
# table-miss drop (no flow forwards the packet: an unknown destination MAC or local address)
DROP_OVS_SPOOFGUARD = 70
DROP_OVS_NO_FLOW = 71

DROP_NAMES = {  # reason: (kemu's words, Hubble's DropReason name from flow.proto)
    DROP_TOO_SHORT: ("too short", "INVALID_PACKET_DROPPED"),
    DROP_UNKNOWN_ETHERTYPE: ("unknown ethertype", "UNSUPPORTED_L3_PROTOCOL"),
    DROP_BAD_IP_HEADER: ("bad IPv4 header", "INVALID_PACKET_DROPPED"),
    DROP_BAD_IP_CSUM: ("bad IPv4 header checksum", "INVALID_PACKET_DROPPED"),
    DROP_OTHERHOST: ("not our MAC", "INVALID_DESTINATION_MAC"),
    DROP_TTL_EXCEEDED: ("TTL exceeded", "TTL_EXCEEDED"),
    DROP_NO_ROUTE: ("no route", "FIB_LOOKUP_FAILED"),
    DROP_REJECT_NO_ENDPOINTS: ("no endpoints (REJECT)", "SERVICE_BACKEND_NOT_FOUND"),
    DROP_NO_LOCAL_ENDPOINTS: ("no local endpoints (DROP)", "SERVICE_BACKEND_NOT_FOUND"),
    DROP_SAME_PORT: ("bridge: ingress port without hairpin", "DROP_REASON_UNKNOWN"),
    DROP_IPV6: ("IPv6 not emulated", "UNSUPPORTED_L3_PROTOCOL"),
    DROP_NOT_LOCAL: ("not addressed to this host", "UNKNOWN_L3_TARGET_ADDRESS"),
    DROP_HOP_LIMIT: ("forwarding loop (hop limit)", "DROP_REASON_UNKNOWN"),
    DROP_FRAGMENT: ("IP fragment", "IP_FRAGMENTATION_NOT_SUPPORTED"),
    DROP_MARTIAN: ("martian source", "INVALID_SOURCE_IP"),
    DROP_UNSUPPORTED_L4: ("unsupported L4 protocol", "UNKNOWN_L4_PROTOCOL"),
    DROP_LB_SOURCE_RANGE: ("source not in loadBalancerSourceRanges (KUBE-FW DROP)",
                           "POLICY_DENIED"),
    DROP_NO_STACK: ("no socket", "SOCKET_LOOKUP_FAILED"),
    DROP_FRAG_NEEDED: ("fragmentation needed (DF, longer than the MTU)", "FRAG_NEEDED"),
    DROP_POLICY: ("policy denied", "POLICY_DENIED"),
    DROP_BLACKHOLE: ("blackhole route", "FIB_LOOKUP_FAILED"),
    DROP_ROUTE_UNREACHABLE: ("unreachable route", "FIB_LOOKUP_FAILED"),
    DROP_ROUTE_PROHIBIT: ("prohibit route", "FIB_LOOKUP_FAILED"),
    DROP_FRAG_QUEUED: ("held for reassembly (nf_defrag_ipv4)", "IP_FRAGMENTATION_NOT_SUPPORTED"),
    DROP_FRAG_OVERLAP: ("overlapping fragment: reassembly queue dropped",
                        "IP_FRAGMENTATION_NOT_SUPPORTED"),
    DROP_IPVS_NO_DEST: ("IPVS: no real server (ICMP port unreachable)",
                        "SERVICE_BACKEND_NOT_FOUND"),
    DROP_OVS_SPOOFGUARD: ("OVS SpoofGuard: source MAC/IP not the pod's", "INVALID_SOURCE_IP"),
    DROP_OVS_NO_FLOW: ("OVS: no flow forwards it (table-miss drop)", "DROP_REASON_UNKNOWN"),
}

# Events: decisions attached to a hop (ev_hop), rendered as pcapng comments, flow log
# records and trace observations. Arguments a, b, c are int64.
EV_BR_FDB = 1       # bridge forwarded by FDB: a=out port iface, b=bridge id
EV_BR_FLOOD = 2     # bridge flooded: a=out port iface, b=bridge id
EV_BR_LOCAL = 3     # bridge delivered to its own device: a=bridge iface
EV_ROUTE = 4        # routed: a=route id, b=next hop IPv4 (0: connected), c=node
EV_DNAT = 5         # service DNAT (new flow): a=frontend id, b=backend id, c=original dst IPv4
EV_SNAT = 6         # masquerade: a=new source IPv4, b=new source port, c=node
EV_UNDNAT = 7       # reply: source restored to the frontend: a=svcport, b=backend, c=node
EV_UNSNAT = 8       # reply: destination restored to the client: a=orig IPv4, b=orig port, c=node
EV_CT_REUSE = 9     # established flow reused its conntrack NAT: a=svcport, b=backend, c=node
EV_DELIVER = 10     # delivered to an endpoint stack: a=iface
EV_DROP = 11        # dropped: a=reason, b=node or -1
EV_LEFT = 12        # left through the gateway: a=gateway iface
EV_BRIDGED_DNAT = 13  # br_netfilter: DNAT target on the same bridge, bridged directly: a=node
EV_ENCAP = 14       # VXLAN encapsulation: a=remote node, b=VNI
EV_DECAP = 15       # VXLAN decapsulation: a=node, b=VNI
EV_AFFINITY = 16    # ClientIP session affinity hit: a=svcport, b=backend, c=node
EV_LOCAL_ROUTE = 17  # pod-local traffic over lo (M-4): a=pod iface
EV_NEIGH_MISS = 18  # next hop unresolved: a=next hop IPv4, b=node, c=out iface
EV_FIXL2 = 19       # injection rewrote Ethernet addresses: a=iface
EV_TTL = 20         # TTL decremented (routed hop): a=new TTL, b=node
EV_NODE_INPUT = 21  # delivered to the node's own stack: a=node
# Set by replay, not by the datapath: the EV_FIXL2 of a frame whose source the cluster does not
# know, placed at the gateway (--unknown-at-gateway): a=iface
EV_AT_GATEWAY = 22
# NetworkPolicy verdicts of a new connection (P-1, P-2), at the hop where they are made:
# a=pod index whose policy decided (the destination for ingress, the source for egress),
# b=direction (POL_INGRESS, POL_EGRESS), c=rule id (EV_POLICY_ALLOW; -1: allowed because the
# pod is not isolated in that direction) or -1 (EV_POLICY_DENY: no rule allows)
EV_POLICY_ALLOW = 23
EV_POLICY_DENY = 24
# Cilium L7 (HTTP) rules: a new connection only L7 rules allow is redirected to the HTTP proxy
# of the destination pod's node (recorded after its EV_POLICY_ALLOW): a=pod, b=destination
# port, c=rule id (the lowest L7 rule allowing it)
EV_L7_REDIRECT = 25
# Set by the engine, not by the datapath: the proxy's verdict on one HTTP request, at the
# node-side hop of the answer that carries its response (the pod's, or the proxy's 403):
# a=pod, b=record id (``kemu.dataplane.l7.record``), c=response status
EV_L7_HTTP = 26
# IPv4 fragmentation (L2-2, CT-1): ip_fragment cut the packet (a=fragments, b=MTU used,
# c=node); nf_defrag_ipv4 reassembled it (a=fragments, b=IP length of the whole, c=node)
EV_FRAGMENT = 30
EV_DEFRAG = 31
# kube-router: IPVS translated a new connection at LOCAL_IN (a=frontend id, b=backend id,
# c=original dst IPv4; the Service address is local on kube-dummy-if); IP-in-IP encapsulation
# on a tun device (a=remote node, b=tun iface) and decapsulation (a=node, b=tun iface)
# Azure CNI bridge mode's ebtables nat rules on eth0 (network/bridge_*client_linux.go):
# POSTROUTING ``-s unicast -o eth0 -j snat --to-src <eth0 MAC> --snat-arp`` (a=eth0, the
# source MAC before as b=its high 24 bits, c=its low 24) and PREROUTING ``-p IPv4 -i eth0
# --ip-dst <pod> -j dnat --to-dst <pod MAC>`` or ``-p ARP -i eth0 --arp-op Reply -j dnat
# --to-dst ff:ff:ff:ff:ff:ff`` (a=eth0, the destination MAC after as b, c)
EV_EBT_SNAT = 40
EV_EBT_DNAT = 41
EV_IPVS_DNAT = 50
EV_IPIP_ENCAP = 51
EV_IPIP_DECAP = 52
# Cilium (kemu/compiler/cilium.py): the socket LB's translation at connect/sendmsg time
# (cil_sock4_connect): a=frontend, b=backend, c=node
EV_SOCK_LB = 60
# Antrea's OVS pipeline (the ``ovs`` room): a table that decided something (a=OVS_T_* table,
# b, c: the table's arguments, see describe.py), the tunnel port's encapsulation (a=remote
# node, b=ANTREA_* tunnel type) and decapsulation (a=node, b=tunnel type)
EV_OVS_TABLE = 70
EV_OVS_ENCAP = 71
EV_OVS_DECAP = 72
POL_INGRESS = 1
POL_EGRESS = 2

# Route kinds (tables.rt_kind)
RT_POD_CIDR = 1   # a node's pod CIDR: connected on that node, remote elsewhere
RT_NODE_NET = 2   # the node network, connected on eth0
RT_DEFAULT = 3    # default via the gateway
RT_LB = 4         # routed mode: a LoadBalancer address, via node rt_node at the gateway

# Backend flags (tables.be_flags)
BE_LOCAL_FALLBACK = 1  # KEP-1669: only for a Local policy's node without a ready endpoint

# Frontend kinds (tables.fe_kind)
FE_CLUSTER_IP = 1
FE_EXTERNAL_IP = 2
FE_LOAD_BALANCER = 3
FE_NODE_PORT = 4  # fe_ip is 0: matches any local address of the node (S-3 addrtype LOCAL)
# a pod's hostPort (CNI portmap CNI-HOSTPORT-DNAT, --dst-type LOCAL): fe_ip is one address of
# the node hosting the pod, matched only on that node; masquerade only from the node's own pod
# subnet (CNI-HOSTPORT-SETMARK: hairpin)
FE_HOST_PORT = 6

FE_KIND_NAMES = {FE_CLUSTER_IP: "ClusterIP", FE_EXTERNAL_IP: "ExternalIP",
                 FE_LOAD_BALANCER: "LoadBalancer", FE_NODE_PORT: "NodePort",
                 FE_HOST_PORT: "hostPort"}

# Service-port flags (tables.sp_flags)
SP_AFFINITY = 1          # sessionAffinity ClientIP (S-8)
SP_ITP_LOCAL = 2         # internalTrafficPolicy Local
SP_ETP_LOCAL = 4         # externalTrafficPolicy Local
SP_HOST_PORT = 8         # not a Service: a pod's hostPort (named "ns/pod:hostPort/PROTO")

# Conntrack entry flags
CT_DNAT = 1
CT_SNAT = 2
CT_REPLIED = 4
CT_ASSURED = 8

# Conntrack states (a compact view of nf_conntrack_proto_tcp's; UDP and ICMP have one each)
CT_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN", "CLOSE", "UDP", "ICMP")

# IP protocols
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_SCTP = 132
PROTO_NUMBERS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP, "SCTP": PROTO_SCTP, "ICMP": PROTO_ICMP}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}

MASQ_MARK = 0x4000  # S-7
FRAG_TIMEOUT_NS = 30 * 10**9  # net.ipv4.ipfrag_time: a reassembly queue lives 30 s
MAX_HOPS = 64       # per frame copy: beyond this the frame is in a loop (DROP_HOP_LIMIT)
VXLAN_PORT = 8472   # OV-1: the kernel default, not IANA's 4789
VXLAN_VNI = 1
# Cilium's reserved security identities (pkg/identity/numericidentity.go): the VNI of a
# tunnelled packet whose source is the node itself (host) or no endpoint of the cluster
# (world); a pod's identity is CILIUM_ID_FIRST + kemu's identity index (Tables.if_vni)
CILIUM_ID_HOST = 1
CILIUM_ID_WORLD = 2
CILIUM_ID_FIRST = 256
PROTO_IPIP = 4      # IP-in-IP (RFC 2003)
IPIP_OVERHEAD = 20  # the outer IPv4 header
# Antrea (Tables.ovs_tunnel): 0 not Antrea; the tunnel type of encap mode; noEncap
ANTREA_GENEVE = 1
ANTREA_VXLAN = 2
ANTREA_GRE = 3
ANTREA_NOENCAP = 4
GENEVE_PORT = 6081        # IANA's, OVS's default for geneve ports
ANTREA_VXLAN_PORT = 4789  # OVS vxlan ports use IANA's port (not the kernel's 8472)
PROTO_GRE = 47
GENEVE_OVERHEAD = 50      # outer Ether + IPv4 + UDP + Geneve (no options)
GRE_OVERHEAD = 38         # outer Ether + IPv4 + a 4-byte GRE header (Antrea's GREOverhead)
GLOBAL_VIRTUAL_MAC = 0xAABBCCDDEEFF  # Antrea's destination MAC of all tunnelled traffic
# where a packet entered the pipeline (Antrea's PktSourceField, reg0[0..3])
OVS_FROM_TUNNEL = 1
OVS_FROM_GATEWAY = 2
OVS_FROM_POD = 3
# the OVS tables EV_OVS_TABLE names (docs/design/ovs-pipeline.md of Antrea)
OVS_T_CLASSIFIER = 1      # b=OVS_FROM_*, c=in port
OVS_T_SPOOFGUARD = 2      # b=in port
OVS_T_ARP = 3             # ARPSpoofGuard then the normal action: b=out port
OVS_T_ENDPOINT_DNAT = 4   # ServiceLB/EndpointDNAT (AntreaProxy), via the conntrack zone
OVS_T_L3_FORWARDING = 5   # b=OVS_L3_* decision, c=its argument
OVS_T_L3_DEC_TTL = 6      # b=new TTL
OVS_T_L2_FORWARDING = 7   # L2ForwardingCalc: b=out port
OVS_T_OUTPUT = 8          # b=out port
OVS_T_NAMES = {OVS_T_CLASSIFIER: "Classifier", OVS_T_SPOOFGUARD: "SpoofGuard",
               OVS_T_ARP: "ARPSpoofGuard/ARPResponder", OVS_T_ENDPOINT_DNAT: "EndpointDNAT",
               OVS_T_L3_FORWARDING: "L3Forwarding", OVS_T_L3_DEC_TTL: "L3DecTTL",
               OVS_T_L2_FORWARDING: "L2ForwardingCalc", OVS_T_OUTPUT: "Output"}
# L3Forwarding decisions (b of its EV_OVS_TABLE; c: the argument)
OVS_L3_TUNNEL = 1     # a remote pod CIDR: MACs to gw0's / the global virtual MAC, c=peer node
OVS_L3_LOCAL_POD = 2  # a local pod, routed: MACs to gw0's / the pod's, c=pod port
OVS_L3_L2 = 3         # a local pod, not routed: on to L2ForwardingCalc as is
OVS_L3_GATEWAY = 4    # to the host through antrea-gw0 (c=1: the destination MAC set to gw0's)

# IPVS schedulers (Tables.ipvs_sched)
IPVS_RR = 0       # round robin: ip_vs_rr.c
IPVS_SH = 1       # source hashing: ip_vs_sh.c
