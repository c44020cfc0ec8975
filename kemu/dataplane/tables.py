"""The compiled tables: the contract between the compiler and both data-plane implementations.

Flat numpy arrays, grouped by area with ``<area>_<field>`` names, plus the names the
renderers need. Immutable once built; the data plane swaps a whole ``Tables`` at a batch
boundary. Index spaces: interfaces, bridges, nodes, routes, frontends (``fe``), service ports
(``sp``), backends (``be``). ``-1`` means "none" in index fields, ``0`` means "none" for
addresses. MACs are 48-bit integers, IPv4 addresses 32-bit integers (host order).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields

import numpy as np

PORT_ANY = 65536  # a policy map key's port: every port of the protocol (P-4, P-7)


def _i32() -> np.ndarray:
    return np.zeros(0, dtype=np.int32)


def _u32() -> np.ndarray:
    return np.zeros(0, dtype=np.uint32)


def _u8() -> np.ndarray:
    return np.zeros(0, dtype=np.uint8)


def _i8() -> np.ndarray:
    return np.zeros(0, dtype=np.int8)


@dataclass(frozen=True, eq=False)
class Tables:
    # interfaces
    if_name: tuple[str, ...]
    if_desc: tuple[str, ...]
    if_kernel_name: tuple[str, ...]  # <= 15 chars, as a Linux node would name it
    if_kind: np.ndarray      # int8, codes.IF_*
    if_node: np.ndarray      # int32, node index (pod devices: the pod's node), -1
    if_mac: np.ndarray       # int64
    if_ip: np.ndarray        # uint32
    if_peer: np.ndarray      # int32, the other end of a veth pair / lo itself, -1
    if_bridge: np.ndarray    # int32, bridge the interface is a port of, -1
    if_hairpin: np.ndarray   # uint8: 1 hairpin (L2-4); 2 known unicast only (Azure uplink)
    if_owner: np.ndarray     # int32, pod index (pod devices), external host index, -1
    if_mtu: np.ndarray       # int32, the device's MTU (L2-2): a forwarded or sent IPv4
                             # packet longer than its out device's MTU is refused (DF) there
    # bridges: 0..n_nodes-1 are node bridges (cbr0), n_nodes is the node-network segment
    br_name: tuple[str, ...]
    br_local_if: np.ndarray  # int32, the bridge device itself (cbr0), -1 for the segment
    br_netfilter: np.ndarray  # uint8, bridge-nf-call-iptables
    br_port_start: np.ndarray  # int32
    br_port_count: np.ndarray  # int32
    br_ports: np.ndarray     # int32, interface ids, flood order
    ageing_ns: int
    # nodes
    node_name: tuple[str, ...]
    node_eth_if: np.ndarray   # int32
    node_br_if: np.ndarray    # int32
    node_vtep_if: np.ndarray  # int32, -1 in host-gw mode
    node_local_if: np.ndarray  # int32
    node_ip: np.ndarray       # uint32
    node_br_ip: np.ndarray    # uint32
    # routes: one LPM shared by all nodes, interpreted per node
    rt_prefix: np.ndarray     # uint32
    rt_len: np.ndarray        # uint8
    rt_kind: np.ndarray       # int8, codes.RT_*
    rt_node: np.ndarray       # int32, owner node of a pod CIDR, -1
    # a node whose routes were set one by one (``spec.routes``, ``replace_route``: R-2) looks
    # up its own whole table instead of the shared LPM: routes nrt_*[node_rt_start : +count],
    # longest prefix first; count 0: the shared table. nrt_if: the out interface, or minus
    # the drop reason of a blackhole/unreachable/prohibit route (codes.DROP_BLACKHOLE, ...);
    # nrt_nh: the next hop (0: connected). Such a route's id in EV_ROUTE is len(rt_prefix) + k.
    node_rt_start: np.ndarray  # int32
    node_rt_count: np.ndarray  # int32
    nrt_prefix: np.ndarray    # uint32
    nrt_len: np.ndarray       # uint8
    nrt_if: np.ndarray        # int32
    nrt_nh: np.ndarray        # uint32
    gateway_ip: int
    gateway_if: int
    cluster_cidr: tuple[int, int]  # (network, mask)
    vxlan: bool
    # masquerade (S-7, M-5, OV-5): kube-proxy's MASQUERADE with --random-fully (a seeded
    # random port) or without (the port kept unless the reply tuple is taken); pod traffic
    # leaving through eth0 from the node's pod CIDR to a destination outside every
    # non-masquerade CIDR is masqueraded (flannel ipMasq) when ``egress_masq``
    masq_random_fully: bool
    egress_masq: bool
    egress_random_fully: bool
    nonmasq_net: np.ndarray   # uint32
    nonmasq_mask: np.ndarray  # uint32
    # services (S-3, S-4)
    fe_ip: np.ndarray         # uint32, 0 for node ports
    fe_port: np.ndarray       # uint16
    fe_proto: np.ndarray      # uint8
    fe_kind: np.ndarray       # int8, codes.FE_*
    fe_sp: np.ndarray         # int32
    sp_name: tuple[str, ...]  # "namespace/service:port-name"
    sp_ip: np.ndarray         # uint32 cluster IP (0 for headless)
    sp_port: np.ndarray       # uint16
    sp_proto: np.ndarray      # uint8
    sp_flags: np.ndarray      # int32, codes.SP_*
    sp_affinity_ns: np.ndarray  # int64
    sp_be_start: np.ndarray   # int32
    sp_be_count: np.ndarray   # int32, ready backends (S-11)
    be_ip: np.ndarray         # uint32
    be_port: np.ndarray       # uint16
    be_node: np.ndarray       # int32
    be_pod: np.ndarray        # int32
    # KEP-1669: a serving+terminating endpoint used only by a Local traffic policy on its own
    # node, which has no ready endpoint (codes.BE_LOCAL_FALLBACK); 0: an ordinary backend
    be_flags: np.ndarray      # int32
    # E-4: loadBalancerSourceRanges of a service port (checked at its LoadBalancer
    # frontends): ranges src_net/src_mask[sp_src_start : +sp_src_count]; count 0: any source
    sp_src_start: np.ndarray  # int32
    sp_src_count: np.ndarray  # int32
    src_net: np.ndarray       # uint32
    src_mask: np.ndarray      # uint32
    # address ownership: which interface owns an address (sorted by ip)
    own_ip: np.ndarray        # uint32
    own_if: np.ndarray        # int32
    # pods and external hosts, for names
    pod_key: tuple[str, ...]
    pod_eth_if: np.ndarray    # int32, -1 for hostNetwork pods
    ext_name: tuple[str, ...]
    ext_if: np.ndarray        # int32
    # NetworkPolicy (kemu/compiler/policy.py; P-1..P-12, CT-6): empty when there are none.
    # Policies by index (``ns/name``, sorted); rule ids over every effective rule, policy by
    # policy, ingress rules then egress rules
    pol_name: tuple[str, ...] = ()
    pol_kind: tuple[str, ...] = ()  # NetworkPolicy or CiliumNetworkPolicy, per policy
    pol_icmp_allow: bool = False  # spec.networkPolicy.icmp: allow (P-8)
    rule_pol: np.ndarray = field(default_factory=_i32)   # int32, the rule's policy
    rule_dir: np.ndarray = field(default_factory=_i8)    # int8, codes.POL_INGRESS/POL_EGRESS
    rule_idx: np.ndarray = field(default_factory=_i32)   # int32, index in its policy's list
    # the last rule_l7_count rule ids are Cilium L7 (HTTP) rules, policy by policy after every
    # L3/L4 rule: a connection only they allow is redirected to the node's proxy
    rule_l7_count: int = 0
    # policies selecting pod p with a policy type: sel_pol[sel_start[k] : +sel_count[k]],
    # k = 2 * p + dir - 1, in ascending order; count 0: p is not isolated that way (P-1);
    # pods of one identity share one range
    sel_start: np.ndarray = field(default_factory=_i32)  # int32, 2 * n_pods
    sel_count: np.ndarray = field(default_factory=_i32)  # int32, 2 * n_pods
    sel_pol: np.ndarray = field(default_factory=_i32)    # int32
    # identities (Cilium's): one per distinct (namespace, pod labels); -1: a hostNetwork pod
    # (never selected, its traffic is its node's, P-12); remote addresses that are not pods
    # have no identity and match only ipBlock peers and peer-less rules
    ident_name: tuple[str, ...] = ()                      # "namespace:k=v,k=v"
    pod_ident: np.ndarray = field(default_factory=_i32)  # int32 per pod
    # the policy map, sorted by key: (pm_pd = 2 * policy + dir - 1, remote identity or -1
    # for any peer, protocol or 0 for every protocol, port or PORT_ANY) -> the lowest rule id
    # allowing it; rules with port ranges, named ports or ipBlock peers are also in the
    # per-(policy, dir) lists slow_rule[pd_slow_start[pd] : +pd_slow_count[pd]], evaluated
    # rule by rule from the arrays below
    pm_pd: np.ndarray = field(default_factory=_i32)
    pm_peer: np.ndarray = field(default_factory=_i32)
    pm_proto: np.ndarray = field(default_factory=_u8)
    pm_port: np.ndarray = field(default_factory=_i32)
    pm_rule: np.ndarray = field(default_factory=_i32)
    # which kinds of key each (policy, dir) has in the map, so that a verdict looks up only
    # those: bit 0/1/2 identity with protocol 0 / a port / PORT_ANY, bit 3/4/5 any peer
    pd_keys: np.ndarray = field(default_factory=_u8)  # uint8, 2 * n_policies
    pd_slow_start: np.ndarray = field(default_factory=_i32)  # int32, 2 * n_policies
    pd_slow_count: np.ndarray = field(default_factory=_i32)
    slow_rule: np.ndarray = field(default_factory=_i32)
    # every rule: peers (none: any peer, P-4), ports (none: every port and protocol)
    rule_any_peer: np.ndarray = field(default_factory=_u8)
    rule_port_start: np.ndarray = field(default_factory=_i32)
    rule_port_count: np.ndarray = field(default_factory=_i32)
    port_proto: np.ndarray = field(default_factory=_u8)   # codes.PROTO_*
    port_lo: np.ndarray = field(default_factory=_i32)     # 0..65535 (no port: 0)
    port_hi: np.ndarray = field(default_factory=_i32)     # endPort, or lo (no port: 65535)
    port_name: np.ndarray = field(default_factory=_i32)   # index in port_names, -1: numeric
    port_names: tuple[str, ...] = ()
    rule_cidr_start: np.ndarray = field(default_factory=_i32)  # ipBlock peers (P-6)
    rule_cidr_count: np.ndarray = field(default_factory=_i32)
    cb_net: np.ndarray = field(default_factory=_u32)
    cb_mask: np.ndarray = field(default_factory=_u32)
    cb_exc_start: np.ndarray = field(default_factory=_i32)
    cb_exc_count: np.ndarray = field(default_factory=_i32)
    ex_net: np.ndarray = field(default_factory=_u32)
    ex_mask: np.ndarray = field(default_factory=_u32)
    # identities a slow rule's pod/namespace selector peers match: (rule, identity), sorted
    ri_rule: np.ndarray = field(default_factory=_i32)
    ri_ident: np.ndarray = field(default_factory=_i32)
    # named container ports a policy names (P-7, resolved per destination pod): sorted
    # (pod, protocol, name) -> port
    np_pod: np.ndarray = field(default_factory=_i32)
    np_proto: np.ndarray = field(default_factory=_u8)
    np_name: np.ndarray = field(default_factory=_i32)
    np_port: np.ndarray = field(default_factory=_i32)
    # kube-router (kemu/compiler/kube_router.py): Services by IPVS at LOCAL_IN instead of
    # kube-proxy's PREROUTING DNAT (proxy: ``ipvs_service``), with scheduler codes.IPVS_*;
    # its IPIP devices: tun_if[node * n_nodes + peer] is node's tun-<hash> towards peer (-1:
    # none; a device's if_peer is the peer's device towards it); empty: no tunnels
    ipvs: bool = False
    ipvs_sched: int = 0
    tun_if: np.ndarray = field(default_factory=_i32)
    # routed CNIs (AWS VPC CNI, Azure CNI; ``kemu/compiler/cni_routed.py``): a pod route's
    # device on its owner node (a routed veth, ``IF_VETH_HOST``), per route; -1 or an empty
    # array: the node's bridge. A pod /32 inside the node network is reached from the other
    # nodes over the node network itself (connected: the next hop is the pod's address,
    # whose neighbour is the owner node's eth0).
    rt_dev: np.ndarray = field(default_factory=_i32)
    # proxy ARP per interface (``net.ipv4.conf.<dev>.proxy_arp``): the node answers ARP on
    # the interface for an address it routes out of another device; empty: none
    if_proxy_arp: np.ndarray = field(default_factory=_u8)
    # Cilium (``kemu/compiler/cilium.py``): the VXLAN VNI cilium_vxlan writes for a packet
    # whose source address an interface owns: the pod's security identity (a node's eth0:
    # reserved:host; an address nobody owns: reserved:world), also the identities of the
    # flow log's endpoints (``kemu.io.flowlog``); empty: flannel's VNI 1, no identities
    if_vni: np.ndarray = field(default_factory=_i32)
    # the eBPF programs Cilium attaches at each interface (ingress: the device receives;
    # egress: it transmits), for the trace's words only: the datapath never reads them;
    # empty: none (every other CNI)
    if_bpf_in: tuple[str, ...] = ()
    if_bpf_out: tuple[str, ...] = ()
    # Cilium's kube-proxy replacement: a pod's TCP/UDP packet to a ClusterIP is translated
    # to a backend in the pod's socket layer (cil_sock4_connect), before it leaves the pod
    sock_lb: bool = False
    # Antrea (kemu/compiler/antrea.py): 0 not Antrea, else codes.ANTREA_GENEVE / _VXLAN /
    # _GRE (encap mode: node_vtep_if is each node's antrea-tun0) or ANTREA_NOENCAP; the
    # nodes' node_br_if is antrea-gw0 (IF_OVS_GW), their pods' host veths OVS ports
    ovs_tunnel: int = 0

    @property
    def n_ifaces(self) -> int:
        return len(self.if_name)

    @property
    def n_nodes(self) -> int:
        return len(self.node_name)

    def iface(self, name: str) -> int:
        """Interface id by its name (``node1/eth0``, ``default/client/eth0``)."""
        try:
            return self.if_name.index(name)
        except ValueError:
            raise KeyError(f"no interface named {name!r}") from None

    def owner_of(self, ip: int) -> int:
        """Interface owning an IPv4 address, or -1."""
        i = int(np.searchsorted(self.own_ip, ip))
        if i < len(self.own_ip) and int(self.own_ip[i]) == ip:
            return int(self.own_if[i])
        return -1

    def digest(self) -> str:
        """sha256 over every field: the same cluster must give the same digest."""
        h = hashlib.sha256()
        for f in fields(self):
            v = getattr(self, f.name)
            h.update(f.name.encode())
            if isinstance(v, np.ndarray):
                h.update(str(v.dtype).encode())
                h.update(np.ascontiguousarray(v).tobytes())
            else:
                h.update(repr(v).encode())
        return h.hexdigest()
