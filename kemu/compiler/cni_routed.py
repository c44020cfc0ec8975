"""The routed CNIs: the AWS VPC CNI and Azure CNI (transparent and overlay) as kemu compiles them.

Owns what these modes change in the compiled cluster (Azure's bridge mode too: azure0 and its
uplink, below): the pod's host-side veth (an L3 device
of the node, ``IF_VETH_HOST``, no bridge), the per-pod /32 routes, proxy ARP, the nodes'
readable route tables (``kemu show routes``) and the egress SNAT; ``compile.py`` and
``routes.py`` call it through small hooks. The pods' addresses come from
``kemu.control.ipam`` (the node network for the AWS VPC CNI and Azure transparent mode, the
cluster CIDR's per-node /24s for Azure CNI Overlay).

**AWS VPC CNI** (``cni: aws-vpc``), as its proposal describes the datapath
(https://github.com/aws/amazon-vpc-cni-k8s/blob/master/docs/cni-proposal.md):
pods take secondary IPv4 addresses of the node's ENIs in the VPC subnet (``spec.nodeNetwork``);
the pod's eth0 holds the address as a /32, its default route is ``via 169.254.1.1 dev eth0``
with a static ARP entry for 169.254.1.1 = the MAC of the host-side veth ``eni<hash>``
(``eni`` + 11 hex digits of sha1(``namespace.name``), as the plugin names it); the node has
``<pod IP> dev eni<hash> scope link`` per pod. Between nodes there is no encapsulation: the
pod addresses are in the node subnet, so a node reaches another node's pod over its connected
route, and the VPC fabric delivers to the ENI owning the address (kemu: the owning node's
eth0 answers ARP for its pods, proxy ARP on eth0: it routes them out of another device).
Traffic to outside the VPC CIDR is SNATed to the node's primary address (the CNI's
``AWS-SNAT-CHAIN``) unless ``externalSNAT`` (``AWS_VPC_K8S_CNI_EXTERNALSNAT``);
``spec.nonMasqueradeCIDRs`` are the ``AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS``. Per-node pod
capacity from ``instanceType`` (``kemu.control.ipam.ENI_LIMITS``, the README's max-pods
formula). Not modelled: secondary ENIs as devices of their own and their ``ip rule`` /
route tables (every pod is on the primary ENI, eth0), prefix delegation, security groups
for pods, the VPC router's own hop.

**Azure CNI** (``cni: {name: azure, mode: ...}``), from Azure/azure-container-networking's
docs (https://github.com/Azure/azure-container-networking/blob/master/docs/cni.md) and AKS's
(https://learn.microsoft.com/en-us/azure/aks/azure-cni-overlay):
``transparent`` (the default): pods take VNet addresses (``spec.nodeNetwork``), a host-side
veth ``azv<hash>`` per pod with proxy ARP on it (the pod ARPs for its gateway, or anything,
and the host answers with the veth's MAC), ``<pod IP> dev azv<hash>`` per pod, no bridge;
between nodes as the AWS mode (the VNet delivers to the node holding the address).
``overlay`` (Azure CNI Overlay): pods in per-node /24s of ``spec.clusterCIDR``, the same
routed veths, routed by the VNet without encapsulation (kemu: each node's pod CIDR via that
node, on the nodes and the gateway, as the VNet's routes program it), SNAT to the node for
destinations outside the pod CIDR and the VNet. ``bridge`` (the older mode; the plugin's
network/network_linux.go ``connectExternalInterface``, network/bridge_*client_linux.go,
ebtables/ebtables.go): the Linux bridge ``azure0`` holds the node's address and eth0's MAC,
eth0 is enslaved to it in hairpin mode (``IF_UPLINK``), each pod's veth ``azv<hash>`` is a
hairpin port of it, the pods have VNet addresses with the subnet's prefix and ``default via``
the VNet's gateway; Azure's ebtables nat rules on eth0 (source MAC of every unicast frame out
-> eth0's, ``--snat-arp``; per pod IPv4 destination -> the pod's MAC; ARP replies ->
broadcast) are done by the datapath at the uplink (``bridge.py``); a pod of another node is
reached at that node's MAC (the VNet's NIC holding the address). ``add_bridge_node``,
``_finish_bridged`` and the ``bridged`` branches below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kemu.dataplane import codes as C

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.control.model import ClusterConfig
    from kemu.dataplane.tables import Tables

IPv4Network = ipaddress.IPv4Network
BRIDGE = "azure0"  # Azure CNI bridge mode's bridge (docs/cni.md's "bridge": "azure0")


@dataclass(frozen=True)
class RoutedMode:
    """One routed CNI mode and what it decides."""

    name: str            # "aws-vpc", "azure-transparent", "azure-overlay", "azure-bridge"
    veth_prefix: str     # the host-side veth's name prefix: "eni", "azv"
    pods_on_node_net: bool  # pods take node-network (VPC/VNet) addresses
    veth_proxy_arp: bool    # proxy ARP on the host veth (Azure)
    egress_snat: bool       # pod traffic to outside the non-SNAT CIDRs is SNATed to the node
    bridged: bool = False   # Azure bridge mode: azure0 with eth0 enslaved, pods' veths on it

    @property
    def title(self) -> str:
        return {"aws-vpc": "AWS VPC CNI", "azure-transparent": "Azure CNI (transparent)",
                "azure-overlay": "Azure CNI Overlay",
                "azure-bridge": "Azure CNI (bridge)"}[self.name]


def routed_mode(cfg: ClusterConfig) -> RoutedMode | None:
    """The routed mode of the cluster's ``spec.cni``, None for the others (flannel)."""
    cni = cfg.cni
    if cni.name == "aws-vpc":
        return RoutedMode("aws-vpc", "eni", True, False, not cni.get("externalSNAT"))
    if cni.name == "azure":
        if cni.get("mode") == "overlay":
            return RoutedMode("azure-overlay", "azv", False, True, True)
        if cni.get("mode") == "bridge":
            return RoutedMode("azure-bridge", "azv", True, False, True, bridged=True)
        return RoutedMode("azure-transparent", "azv", True, True, True)
    return None


def host_veth_name(prefix: str, namespace: str, name: str) -> str:
    """The host-side veth's name as the plugins make it: the prefix and 11 hex digits of
    sha1(``namespace.name``) (amazon-vpc-cni-k8s ``GenerateHostVethName``; Azure CNI
    the same with ``azv``): 14 characters, within IFNAMSIZ."""
    return prefix + hashlib.sha1(f"{namespace}.{name}".encode()).hexdigest()[:11]


def add_pod(ifs: Any, mode: RoutedMode, pod: Any, pi: int, ni: int, node_name: str,
            veth_mac: int, pod_mac: int, pod_ip: int, owner: str, mtu: int) -> int:
    """The pod's eth0 (its /32), lo, and the host-side routed veth; returns eth0's id.
    ``ifs`` is the compiler's interface accumulator."""
    kname = host_veth_name(mode.veth_prefix, pod.namespace, pod.name)
    return add_host_veth_pod(ifs, pod, pi, ni, node_name, kname,
                             f"routed veth of {owner} on node {node_name} ({mode.title})",
                             veth_mac, pod_mac, pod_ip, owner, mtu)


def add_host_veth_pod(ifs: Any, pod: Any, pi: int, ni: int, node_name: str, kname: str,
                      desc: str, veth_mac: int, pod_mac: int, pod_ip: int, owner: str,
                      mtu: int) -> int:
    """A pod attached by a routed veth (``IF_VETH_HOST`` ``kname`` on the node, described
    ``desc``): its eth0 (the pod's /32), lo right after it, the pair's peers; eth0's id.
    The routed CNIs' and Cilium's lxc devices (``cilium.add_pod``)."""
    veth = ifs.add(f"{node_name}/{kname}", C.IF_VETH_HOST, desc=desc, kname=kname, node=ni,
                   mac=veth_mac, owner=pi, mtu=mtu)
    eth = ifs.add(f"{pod.key}/eth0", C.IF_POD_ETH, desc=owner, kname="eth0", node=ni,
                  mac=pod_mac, ip=pod_ip, owner=pi, mtu=mtu)
    lo = ifs.add(f"{pod.key}/lo", C.IF_POD_LO, desc=f"{owner} loopback", kname="lo",
                 node=ni, ip=0x7F000001, owner=pi, mtu=65536)
    ifs.rows[veth]["peer"], ifs.rows[eth]["peer"] = eth, veth
    ifs.rows[lo]["peer"] = lo
    return eth


def shared_routes(cluster: Cluster, mode: RoutedMode, pod_eth_if: list[int],
                  node_index: dict[str, int], peer_of: dict[int, int]
                  ) -> list[tuple[int, int, int, int, int]]:
    """The shared LPM's routes of a routed mode: (prefix, length, kind, node, device):
    each pod's /32 on its node's routed veth; Azure CNI Overlay: each node's pod CIDR too
    (the VNet routes it to the node); the node network; the default route."""
    cfg = cluster.config
    rows: list[tuple[int, int, int, int, int]] = []
    for pi, pod in enumerate(cluster.pods):
        eth = pod_eth_if[pi]
        if eth < 0 or pod.ip is None:
            continue
        rows.append((int(pod.ip), 32, C.RT_POD_CIDR, node_index[pod.node_name], peer_of[eth]))
    if not mode.pods_on_node_net:
        rows += [(int(n.pod_cidr.network_address), n.pod_cidr.prefixlen, C.RT_POD_CIDR, i, -1)
                 for i, n in enumerate(cluster.nodes)]
    rows.append((int(cfg.node_network.network_address), cfg.node_network.prefixlen,
                 C.RT_NODE_NET, -1, -1))
    if cfg.gateway_ip is not None:
        rows.append((0, 0, C.RT_DEFAULT, -1, -1))
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def non_snat(cfg: ClusterConfig, mode: RoutedMode) -> list[IPv4Network]:
    """The destinations pod traffic keeps its address to: the VPC/VNet (the node network),
    Azure CNI Overlay's pod CIDR, and ``spec.nonMasqueradeCIDRs`` (the AWS CNI's
    ``AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS``, ip-masq-agent's ``nonMasqueradeCIDRs``)."""
    nets = [cfg.node_network]
    if not mode.pods_on_node_net:
        nets.append(cfg.cluster_cidr)
    for n in cfg.non_masquerade_cidrs or []:
        if n not in nets:
            nets.append(n)
    return nets


def finish(tables: Tables, cluster: Cluster, mode: RoutedMode,
           routes: list[tuple[int, int, int, int, int]]) -> Tables:
    """The compiled tables with the routed mode's columns: no node bridges (their slots
    stay, empty and without a device), the nodes' own address in ``node_br_ip``, the
    routes' devices, proxy ARP (the node's eth0 for pods of the node network, the host
    veths in Azure's modes), the egress SNAT, kube-proxy's cluster CIDR."""
    cfg = cluster.config
    if mode.bridged:
        return _finish_bridged(tables, cluster, mode, routes)
    n_nodes = tables.n_nodes
    kind = np.asarray(tables.if_kind)
    parp = np.zeros(tables.n_ifaces, np.uint8)
    if mode.pods_on_node_net:
        parp[np.asarray(tables.node_eth_if)] = 1
    if mode.veth_proxy_arp:
        parp[kind == C.IF_VETH_HOST] = 1
    nets = non_snat(cfg, mode)
    # kube-proxy's --cluster-cidr (which sources are the cluster's, S-6): the pods' own
    # range, the VPC/VNet subnet when they take its addresses
    pods_net = cfg.node_network if mode.pods_on_node_net else cfg.cluster_cidr
    return dataclasses.replace(
        tables,
        cluster_cidr=(int(pods_net.network_address), int(pods_net.netmask)),
        br_name=tuple(f"{n}/(no bridge)" for n in tables.node_name) + ("node-network",),
        br_local_if=np.full(n_nodes + 1, -1, np.int32),
        br_netfilter=np.zeros(n_nodes + 1, np.uint8),
        node_br_ip=np.asarray(tables.node_ip, np.uint32).copy(),
        rt_dev=np.array([r[4] for r in routes], dtype=np.int32),
        if_proxy_arp=parp,
        egress_masq=mode.egress_snat,
        nonmasq_net=np.array([int(n.network_address) for n in nets], dtype=np.uint32),
        nonmasq_mask=np.array([int(n.netmask) for n in nets], dtype=np.uint32),
    )


def add_bridge_node(ifs: Any, node: Any, ni: int, mac: int, ip: int,
                    mtu: int) -> tuple[int, int]:
    """Azure CNI bridge mode's node devices: ``eth0`` (``IF_UPLINK``: no address, a port of
    both the node network's segment and ``azure0``) and ``azure0`` (the node's address, eth0's
    MAC: a Linux bridge takes the lowest MAC of its ports, and the NIC's 00:0d:3a:... is
    below every veth's locally administered one); eth0 in hairpin mode, as
    ``connectExternalInterface`` sets it (``SetHairpinOnHostInterface``): a Service's packet
    from the VNet DNATed to another node's pod goes back out of eth0. kemu's hairpin 2: for
    known unicast only; Linux would reflect floods too, which the VNet (delivering by
    address, never flooding) drops, while kemu's node network, a flooding bridge, would
    loop them between the nodes. Returns (eth0, azure0)."""
    nm = node.name
    eth = ifs.add(f"{nm}/eth0", C.IF_UPLINK, desc=f"Node {nm} uplink, enslaved to azure0",
                  node=ni, mac=mac, bridge=ni, hairpin=2, mtu=mtu)
    br = ifs.add(f"{nm}/{BRIDGE}", C.IF_BRIDGE, desc=f"Node {nm} bridge (Azure CNI)",
                 node=ni, mac=mac, ip=ip, bridge=ni, mtu=mtu)
    return eth, br


def _finish_bridged(tables: Tables, cluster: Cluster, mode: RoutedMode,
                    routes: list[tuple[int, int, int, int, int]]) -> Tables:
    """Azure bridge mode's columns: the node's address and its routes on ``azure0``
    (``node_eth_if``: the device the node's routes leave by), no proxy ARP, ip-masq-agent's
    SNAT, kube-proxy's cluster CIDR (the VNet subnet)."""
    cfg = cluster.config
    nets = non_snat(cfg, mode)
    br = np.asarray(tables.node_br_if, np.int32).copy()
    return dataclasses.replace(
        tables,
        cluster_cidr=(int(cfg.node_network.network_address), int(cfg.node_network.netmask)),
        node_eth_if=br,
        node_br_ip=np.asarray(tables.node_ip, np.uint32).copy(),
        rt_dev=np.array([r[4] for r in routes], dtype=np.int32),
        if_proxy_arp=np.zeros(tables.n_ifaces, np.uint8),
        egress_masq=mode.egress_snat,
        nonmasq_net=np.array([int(n.network_address) for n in nets], dtype=np.uint32),
        nonmasq_mask=np.array([int(n.netmask) for n in nets], dtype=np.uint32),
    )


def node_routes(cluster: Cluster, mode: RoutedMode, Route: Any) -> dict[str, list[Any]]:
    """Each node's main table in a routed mode, as ``ip route`` shows it: its pods' /32s on
    their host veths (``scope link``), the node network connected on eth0, Azure CNI
    Overlay's other nodes' pod CIDRs via those nodes (the VNet's routes), the default route
    via the gateway. ``Route`` is ``kemu.compiler.routes.Route`` (passed in: routes.py
    imports this module)."""
    cfg = cluster.config
    tables: dict[str, list[Any]] = {}
    if mode.bridged:  # the node's address and routes moved to azure0 (applyIPConfig)
        for node in cluster.nodes:
            tables[node.name] = [Route(cfg.node_network, BRIDGE, src=node.internal_ip,
                                       proto="kernel")]
            if cfg.gateway_ip is not None:
                tables[node.name].insert(0, Route(IPv4Network("0.0.0.0/0"), BRIDGE,
                                                  via=cfg.gateway_ip))
            tables[node.name].sort(key=lambda r: (-r.prefix.prefixlen,
                                                  int(r.prefix.network_address)))
        return tables
    for node in cluster.nodes:
        routes = [Route(cfg.node_network, "eth0", src=node.internal_ip, proto="kernel")]
        for pod in cluster.pods:
            if pod.node_name != node.name or pod.host_network or pod.ip is None:
                continue
            routes.append(Route(IPv4Network(f"{pod.ip}/32"),
                                host_veth_name(mode.veth_prefix, pod.namespace, pod.name),
                                proto="boot", target_node=node.name))
        if not mode.pods_on_node_net:
            routes += [Route(other.pod_cidr, "eth0", via=other.internal_ip,
                             target_node=other.name)
                       for other in cluster.nodes if other.name != node.name]
        if cfg.gateway_ip is not None:
            routes.append(Route(IPv4Network("0.0.0.0/0"), "eth0", via=cfg.gateway_ip))
        routes.sort(key=lambda r: (-r.prefix.prefixlen, int(r.prefix.network_address)))
        tables[node.name] = routes
    return tables

