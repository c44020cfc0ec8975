"""The cluster model: Kubernetes nouns after loading, defaulting and allocation.

These dataclasses are what the rest of kemu (the compiler, the front ends) reads. They hold
resolved values only: every address is allocated or pinned, every default applied, every
selector already matched. The loader (``kemu.control.loader``) builds them from manifests;
``kemu.control.cluster.Cluster`` owns them and keeps derived state (endpoints) in step with
edits.

Invariants: names are unique per kind and namespace; lists that the compiler iterates are
sorted (nodes by name, pods and services by ``namespace/name``) so compilation is
deterministic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network

Protocol = Literal["TCP", "UDP", "SCTP"]
CrossNodeMode = Literal["host-gw", "vxlan"]
ListenMode = Literal["declared", "services", "all"]


@dataclass
class DnsConfig:
    """A pod's ``spec.dnsConfig`` (or the node's resolv.conf, ``spec.nodeDNS`` of the Cluster
    document): what ``kemu.control.resolvconf`` merges as kubelet does. Options keep their
    order; a value of None is an option without ``:value`` (``single-request``)."""

    nameservers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[tuple[str, str | None]] = field(default_factory=list)


CniName = Literal["flannel", "kube-router", "cilium", "antrea", "aws-vpc", "azure"]


@dataclass
class CniConfig:
    """``spec.cni`` (``kemu.control.cni``): the CNI's name and every option of its mode, the
    document's values over the mode's defaults."""

    name: CniName = "flannel"
    options: dict[str, Any] = field(default_factory=lambda: {"backend": None})

    def get(self, option: str) -> Any:
        """An option of this mode (``KeyError``: not an option of the mode)."""
        return self.options[option]


@dataclass
class ClusterConfig:
    """What manifests cannot say: the kemu ``Cluster`` document (kemu.dev/v1alpha1)."""

    name: str = "kemu"
    node_names: list[str] = field(default_factory=list)  # from the document or Node objects
    cluster_cidr: IPv4Network = IPv4Network("10.244.0.0/16")
    node_cidr_prefix: int = 24
    service_cidr: IPv4Network = IPv4Network("10.96.0.0/12")
    node_network: IPv4Network = IPv4Network("172.18.0.0/24")
    gateway_ip: IPv4Address | None = IPv4Address("172.18.0.1")  # None: no default gateway
    # the CNI (``spec.cni``, ``kemu.control.cni``); flannel's backend stays in ``mode``
    cni: CniConfig = field(default_factory=CniConfig)
    mode: CrossNodeMode = "host-gw"
    mtu: int = 1500
    dns_domain: str = "cluster.local"
    node_port_range: tuple[int, int] = (30000, 32767)
    external_hosts: list[ExternalHost] = field(default_factory=list)
    # what the emulated pod stacks listen on (``kemu.control.listen``): ``declared``
    # containerPorts only, ``services`` (default) those plus every port a Service sends to and
    # every probe port, ``all`` every port
    listen: ListenMode = "services"
    # kube-proxy's MASQUERADE (S-7): ``--random-fully`` (kube-proxy adds it where iptables
    # supports it, as modern iptables does): a seeded random port; False: the source port is
    # kept unless the reply tuple is taken (``spec.kubeProxy.masqueradeRandomFully``)
    masquerade_random_fully: bool = True
    # pod traffic leaving the cluster (M-5, OV-5): flannel's ipMasq, ``-s <node podCIDR> !
    # -d <nonMasqueradeCIDRs> -j MASQUERADE [--random-fully]`` (``spec.masquerade``); no
    # CIDRs given: flannel's rule, the cluster CIDR (ip-masq-agent's defaults, RFC 1918 and
    # link-local, can be listed instead)
    ip_masq: bool = True
    ip_masq_random_fully: bool = True
    non_masquerade_cidrs: list[IPv4Network] | None = None
    # LoadBalancer Services (``spec.loadBalancer``): the address pool IPAM assigns from and
    # how an address reaches the nodes: ``l2`` (MetalLB L2: one node answers ARP for it),
    # ``routed`` (a cloud load balancer: the gateway routes it to a node)
    lb_pool: list[IPv4Network] = field(default_factory=list)
    lb_mode: Literal["l2", "routed"] = "l2"
    # the nodes' /etc/resolv.conf (``spec.nodeDNS``), what dnsPolicy Default gives a pod and
    # ClusterFirst appends its searches from; None: ``nameserver <gateway>`` only
    node_dns: DnsConfig | None = None
    # NetworkPolicy and ICMP (P-8, ``spec.networkPolicy.icmp``): ``deny`` (default; kube-router
    # and Cilium): ICMP to or from a pod isolated in that direction passes only by a rule
    # without ports (all protocols); ``allow``: ICMP is never judged by policy. ICMP errors
    # RELATED to an allowed connection pass either way (CT-6)
    policy_icmp: Literal["deny", "allow"] = "deny"
    # a node's routes set one by one (R-1, R-2, ``spec.routes``; ``EmulatedCluster.replace_route``
    # and ``delete_route``): ``ip route replace`` / ``ip route del`` on the tables of
    # ``kemu.compiler.routes.node_routes``, applied in order
    routes: list[RouteChange] = field(default_factory=list)

    def non_masquerade(self) -> list[IPv4Network]:
        """The destinations pod traffic keeps its address to (default: the cluster CIDR)."""
        if self.non_masquerade_cidrs is None:
            return [self.cluster_cidr]
        return list(self.non_masquerade_cidrs)


RouteType = Literal["unicast", "blackhole", "unreachable", "prohibit"]


@dataclass(frozen=True)
class RouteChange:
    """One ``ip route replace PREFIX [via VIA] [dev DEV] [onlink]`` (or ``ip route replace
    blackhole|unreachable|prohibit PREFIX``, or ``ip route del PREFIX``) on one node (R-1, R-2)."""

    node: str
    prefix: IPv4Network
    delete: bool = False
    via: IPv4Address | None = None
    dev: str = ""
    type: RouteType = "unicast"
    onlink: bool = False
    where: str = ""  # what an error names: ``spec.routes[0]`` or the API call


@dataclass
class Notice:
    """Input kemu accepts but does not model (or acts on in part), said once as a warning.

    Located like a ``Problem`` (file, object, field); ``count`` is how many objects said the
    same thing (the first of them is named).
    """

    source: str
    obj: str
    field: str
    message: str
    count: int = 1
    covers: str = ""  # the line of ``Cluster.ignored`` this notice says, if any

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.obj, self.field) if p)
        text = f"{where}: {self.message}" if where else self.message
        return text + (f" (and {self.count - 1} more like it)" if self.count > 1 else "")


@dataclass
class ExternalHost:
    """A host on the node network outside the cluster (a client, a database, ...)."""

    name: str
    ip: IPv4Address
    mac: str = ""
    # (protocol, port) the host listens on; its emulated stack answers SYNs there.
    ports: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Node:
    name: str
    internal_ip: IPv4Address
    pod_cidr: IPv4Network
    labels: dict[str, str] = field(default_factory=dict)
    mac: str = ""          # eth0 on the node network
    bridge_mac: str = ""   # cbr0
    vtep_mac: str = ""     # flannel.1 (VXLAN mode)
    # blocks of pod addresses outside ``pod_cidr`` routed to this node (Calico's /26 blocks,
    # Cilium's cluster-pool /24s), inferred from a cluster dump's pod IPs
    pod_blocks: list[IPv4Network] = field(default_factory=list)

    @property
    def gateway_ip(self) -> IPv4Address:
        """The bridge address: first host of the pod CIDR (L2-1)."""
        return self.pod_cidr.network_address + 1


@dataclass
class ContainerPort:
    port: int
    protocol: Protocol = "TCP"
    name: str = ""
    # kemu extension (annotation kemu.dev/udp-echo): the emulated stack echoes UDP here.
    udp_echo: bool = False
    host_port: int = 0  # 0: none; else the node's port the CNI portmap plugin maps here


@dataclass
class Container:
    name: str
    ports: list[ContainerPort] = field(default_factory=list)
    # TCP ports its liveness/readiness/startup probes connect to (httpGet, tcpSocket, grpc),
    # named ones resolved against this container's ports: the application listens there
    probe_ports: list[int] = field(default_factory=list)

    def clone(self) -> Container:
        """A deep copy (what ``copy.deepcopy`` gives, at a fraction of its cost)."""
        return Container(self.name, [ContainerPort(p.port, p.protocol, p.name, p.udp_echo,
                                                   p.host_port)
                                     for p in self.ports], list(self.probe_ports))


@dataclass
class OwnerRef:
    kind: str
    name: str


@dataclass
class Pod:
    namespace: str
    name: str
    node_name: str
    ip: IPv4Address
    mac: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    containers: list[Container] = field(default_factory=list)
    host_network: bool = False
    ready: bool = True
    terminating: bool = False
    hostname: str = ""
    subdomain: str = ""
    # spec.dnsPolicy and spec.dnsConfig: the pod's resolv.conf (``kemu.control.resolvconf``)
    dns_policy: Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"] = \
        "ClusterFirst"
    dns_config: DnsConfig | None = None
    owner: OwnerRef | None = None
    source: str = ""  # file the pod (or its template) came from
    # annotation kemu.dev/listen: extra (protocol, port) the pod listens on; "all": every port
    listen: list[tuple[str, int]] = field(default_factory=list)
    listen_all: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def container_ports(self) -> list[ContainerPort]:
        return [p for c in self.containers for p in c.ports]

    def find_port(self, name: str, protocol: str) -> int | None:
        """Resolve a named port (S-13, P-7) on this pod; None when no container declares it."""
        for c in self.containers:
            for p in c.ports:
                if p.name == name and p.protocol == protocol:
                    return p.port
        return None


@dataclass
class ServicePort:
    port: int
    protocol: Protocol = "TCP"
    name: str = ""
    target_port: int | str = 0  # number, or a container port name resolved per pod
    node_port: int = 0          # 0: none


@dataclass
class Service:
    namespace: str
    name: str
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    cluster_ip: IPv4Address | None = None  # None: headless or ExternalName
    ports: list[ServicePort] = field(default_factory=list)
    selector: dict[str, str] | None = None  # None: selector-less (explicit EndpointSlices)
    session_affinity: Literal["None", "ClientIP"] = "None"
    affinity_timeout: int = 10800
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    internal_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    external_ips: list[IPv4Address] = field(default_factory=list)
    load_balancer_ips: list[IPv4Address] = field(default_factory=list)
    load_balancer_source_ranges: list[IPv4Network] = field(default_factory=list)
    load_balancer_ip: IPv4Address | None = None  # spec.loadBalancerIP (deprecated pin)
    external_name: str = ""
    publish_not_ready_addresses: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        return self.cluster_ip is None and self.type != "ExternalName"


@dataclass
class EndpointPort:
    port: int
    protocol: Protocol = "TCP"
    name: str = ""


@dataclass
class Endpoint:
    """One address of an EndpointSlice with its conditions (S-12)."""

    ip: IPv4Address
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""
    pod: str = ""       # "namespace/name" of the target pod, "" if none
    hostname: str = ""
    zone: str = ""


@dataclass
class EndpointSlice:
    namespace: str
    name: str
    service: str  # the kubernetes.io/service-name label
    endpoints: list[Endpoint] = field(default_factory=list)
    ports: list[EndpointPort] = field(default_factory=list)
    managed: bool = True  # False: given explicitly in the manifests

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class LabelSelectorRequirement:
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = field(default_factory=list)


@dataclass
class LabelSelector:
    """``matchLabels`` and ``matchExpressions``; the empty selector matches everything."""

    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = field(default_factory=list)


@dataclass
class IPBlock:
    cidr: IPv4Network
    except_: list[IPv4Network] = field(default_factory=list)


@dataclass
class PolicyPeer:
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None
    # a Cilium entity (kemu.control.cilium): ``world``, ``cluster``, ``all``, ``nodes`` (every
    # node's address), resolved against the cluster's ranges by the compiler; with an
    # ``ip_block``, ``world`` restricts the block to addresses outside the cluster (Cilium's
    # CIDR rules never match its endpoints)
    entity: str | None = None


@dataclass
class PolicyPort:
    protocol: Protocol = "TCP"
    port: int | str | None = None  # None: all ports
    end_port: int | None = None


@dataclass(frozen=True)
class HttpRule:
    """One CiliumNetworkPolicy ``toPorts[].rules.http[]`` entry (kemu.control.cilium):
    ``method``/``path``/``host`` anchored regular expressions (None: any), ``headers``
    (name, value or None: present) all required."""

    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: tuple[tuple[str, str | None], ...] = ()


@dataclass
class PolicyRule:
    peers: list[PolicyPeer] = field(default_factory=list)  # empty: all peers (P-4)
    ports: list[PolicyPort] = field(default_factory=list)  # empty: all ports
    # Cilium L7 (kemu.control.cilium): None: an L3/L4 rule; a list: the connection is
    # redirected to the node's HTTP proxy, which allows a request one of them matches
    http: list[HttpRule] | None = None


@dataclass
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: list[str]  # defaulted per P-3
    ingress: list[PolicyRule] = field(default_factory=list)
    egress: list[PolicyRule] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # metadata.labels (kubectl -l)
    source: str = ""
    kind: str = "NetworkPolicy"  # or CiliumNetworkPolicy (kemu.control.cilium)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    implicit: bool = False  # created because an object referred to it
