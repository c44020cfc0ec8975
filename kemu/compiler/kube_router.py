"""kube-router as a datapath mode (``spec.cni: kube-router``): its devices, routes and Services.

What it owns: the compiler's side of the mode: the names and MTUs of a kube-router node's
devices, the IP-in-IP tunnels, the node routing tables as kube-router installs them, and
the ``Tables`` fields that switch the datapath's Service translation to IPVS. ``compile.py``
and ``routes.py`` call it through small hooks; the datapath stays mode-free (IF_IPIP devices
in the ``tunnel`` room, ``ipvs_service`` in the ``proxy`` room).

Modelled from kube-router's documentation and source (cloudnativelabs/kube-router):

- Pods: the bridge CNI plugin on ``kube-bridge`` (docs/how-it-works.md, docs/user-guide.md;
  ``setupKubeBridge`` in pkg/controllers/routing/network_routes_controller.go): the node's
  pod CIDR gateway on ``kube-bridge``, host-side veths named ``veth<8 hex>`` as the bridge
  plugin names them. MTU (``--auto-mtu``, default true: docs/user-guide.md "MTU"; v1.x-v2.x
  ``GetMTUFromNodeIP(nodeIP, overlayEnabled)``): the node's MTU, minus the 20 bytes of the
  IPIP header while ``--enable-overlay`` is on (``utils.IPInIPHeaderLength``).
- Routes (docs/bgp.md, ``injectRoute`` in network_routes_controller.go): every node's pod
  CIDR is announced over iBGP (a full mesh of the nodes) and installed with netlink
  ``Protocol: routes.ZebraOriginator`` (0x11: ``ip route`` prints ``proto 17``): a peer in
  the same subnet: ``<podCIDR> via <peer> dev eth0 proto 17``; across subnets with
  ``--overlay-type=subnet``, or always with ``full`` (docs/tunnels.md): ``<podCIDR> dev
  tun-<hash> proto 17 src <node>`` over an IP-in-IP device per peer (pkg/tunnels/
  linux_tunnels.go: ``GenerateTunnelName`` = ``tun-`` + the first 11 hex digits of sha256 of
  the peer's address without its dots; ``netlink.Iptun{Local: node, Remote: peer}``; the
  kernel gives it the underlying MTU minus 20). kemu's nodes share one node network
  (``spec.nodeNetwork``), so ``subnet`` (the default) gives direct routes and ``full`` gives
  the tunnels; ``enableOverlay: false`` never tunnels. Not modelled: nodes in several
  subnets, FoU/GUE encapsulation (``--overlay-encap=fou``), the policy routing table 77
  (``kube-router`` table: traffic from pods to a peer's own address through its tunnel).
- Services (docs/how-it-works.md: "kube-router uses IPVS masquerading mode with round
  robin scheduling by default"; pkg/controllers/proxy): IPVS in NAT (masquerade) mode, the
  Service addresses held on the dummy device ``kube-dummy-if`` (linux_networking.go:
  ``KubeDummyIf``; so the node has them as local addresses and IPVS takes the packet at
  LOCAL_IN, which also means a server on the client's own bridge is reached by routing,
  not bridged after a br_netfilter DNAT); scheduler ``rr`` by default (``sh``: source
  hashing, the ``kube-router.io/service.scheduler`` choices);
  NodePorts on the node's IP; masquerade by kube-router's SNAT rule; a Service without
  endpoints keeps its IPVS virtual service without real servers ("No endpoints detected
  for service VIP ... skipping adding endpoints", service_endpoints_sync.go), so the kernel's
  ``ip_vs_leave`` answers ICMP port unreachable. The datapath's ``ipvs_service`` says the
  details. Not modelled: DSR (``dsr: true`` is refused by ``kemu/control/cni.py``), the
  hairpin annotation, ``--masquerade-all``, IPVS graceful termination (weight 0); the
  Service addresses on kube-dummy-if are shown (``kemu show interfaces``) but not answered
  as the node's own for ports without a Service (kube-router's INPUT chain rejects those).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kemu.dataplane import codes as C

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.control.model import ClusterConfig
    from kemu.dataplane.tables import Tables

NAME = "kube-router"
BRIDGE = "kube-bridge"
DUMMY = "kube-dummy-if"
ROUTE_PROTO = "17"  # routes.ZebraOriginator = 0x11, which iproute2 has no name for
DUMMY_MTU = 1500    # a dummy device's default (dummy_setup)


def active(cluster: Cluster) -> bool:
    """The cluster runs kube-router (``spec.cni``)."""
    return cluster.config.cni.name == NAME


def tunnel_name(peer_ip: str) -> str:
    """kube-router's ``GenerateTunnelName``: ``tun-`` + 11 hex digits of sha256 of the
    address with its dots removed (15 characters, a Linux interface name's limit)."""
    return "tun-" + hashlib.sha256(peer_ip.replace(".", "").replace(":", "").encode()
                                   ).hexdigest()[:11]


def overlay(cfg: ClusterConfig) -> bool:
    return bool(cfg.cni.get("enableOverlay"))


def pod_mtu(cfg: ClusterConfig) -> int:
    """kube-bridge's, the veths' and the pods' MTU (``--auto-mtu``)."""
    return cfg.mtu - C.IPIP_OVERHEAD if overlay(cfg) else cfg.mtu


def tunnelled(cluster: Cluster, node: Any, peer: Any) -> bool:
    """``shouldCreateTunnel``: overlays on, and ``full``, or ``subnet`` with the peer outside
    the node's subnet (kemu's nodes share ``spec.nodeNetwork``: never)."""
    cfg = cluster.config
    if not overlay(cfg) or node.name == peer.name:
        return False
    if cfg.cni.get("overlayType") == "full":
        return True
    return peer.internal_ip not in cfg.node_network


@dataclass
class Devices:
    """kube-router's devices beyond the common ones, as ``add_devices`` made them."""

    tun_if: list[int] = field(default_factory=list)     # node * n + peer -> iface, -1
    node_devs: list[dict[str, int]] = field(default_factory=list)  # route dev name -> iface


def _mac(key: str) -> int:
    d = hashlib.sha256(f"kube-router/{key}".encode()).digest()
    return int.from_bytes(b"\x02" + d[:5], "big")


def add_devices(cluster: Cluster, ifs: Any, node_eth: list[int], node_br: list[int]
                ) -> Devices:
    """Append each node's ``kube-dummy-if`` and its ``tun-<hash>`` devices to ``ifs``
    (``compile._Ifaces``); the tunnels' ``peer`` is the peer's device towards the node."""
    nodes = cluster.nodes
    n = len(nodes)
    out = Devices(tun_if=[-1] * (n * n) if any(
        tunnelled(cluster, a, b) for a in nodes for b in nodes) else [])
    tun_mtu = cluster.config.mtu - C.IPIP_OVERHEAD
    for ni, node in enumerate(nodes):
        nm = node.name
        ifs.add(f"{nm}/{DUMMY}", C.IF_DUMMY, desc=f"Node {nm} IPVS Service addresses",
                node=ni, mac=_mac(f"{nm}/{DUMMY}"), mtu=DUMMY_MTU)
        devs = {"eth0": node_eth[ni], BRIDGE: node_br[ni]}
        for pi, peer in enumerate(nodes):
            if not out.tun_if or not tunnelled(cluster, node, peer):
                continue
            name = tunnel_name(str(peer.internal_ip))
            out.tun_if[ni * n + pi] = ifs.add(
                f"{nm}/{name}", C.IF_IPIP, desc=f"Node {nm} IP-in-IP tunnel to {peer.name}",
                node=ni, ip=int(node.internal_ip), mtu=tun_mtu)
            devs[name] = out.tun_if[ni * n + pi]
        out.node_devs.append(devs)
    for k, i in enumerate(out.tun_if):
        if i >= 0:
            ifs.rows[i]["peer"] = out.tun_if[(k % n) * n + k // n]
    return out


def node_routes(cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    """Every node's main table as kube-router leaves it (module docstring), most specific
    first, as ``kemu.compiler.routes.Route`` keyword arguments: the pod CIDR on kube-bridge
    and the node network (kernel), each peer's pod CIDR learned over iBGP (proto 17: via the
    peer, or on its tunnel), the default route."""
    cfg = cluster.config
    tables: dict[str, list[dict[str, Any]]] = {}
    for node in cluster.nodes:
        routes: list[dict[str, Any]] = [
            dict(prefix=node.pod_cidr, dev=BRIDGE, src=node.gateway_ip, proto="kernel",
                 target_node=node.name),
            dict(prefix=cfg.node_network, dev="eth0", src=node.internal_ip, proto="kernel")]
        for peer in cluster.nodes:
            if peer.name == node.name:
                continue
            if tunnelled(cluster, node, peer):
                routes.append(dict(prefix=peer.pod_cidr, dev=tunnel_name(str(peer.internal_ip)),
                                   src=node.internal_ip, proto=ROUTE_PROTO,
                                   target_node=peer.name))
            else:
                routes.append(dict(prefix=peer.pod_cidr, dev="eth0", via=peer.internal_ip,
                                   proto=ROUTE_PROTO, target_node=peer.name))
        if cfg.gateway_ip is not None:
            routes.append(dict(prefix=ipaddress.IPv4Network("0.0.0.0/0"), dev="eth0",
                               via=cfg.gateway_ip))
        routes.sort(key=lambda r: (-r["prefix"].prefixlen, int(r["prefix"].network_address)))
        tables[node.name] = routes
    return tables


def node_devices(cluster: Cluster) -> tuple[str, ...]:
    """The devices a route set by ``spec.routes`` can name (the tunnels are kube-router's)."""
    return ("eth0", BRIDGE)


def service_addresses(cluster: Cluster) -> list[str]:
    """The addresses kube-router puts on kube-dummy-if: every proxied Service's ClusterIP,
    externalIPs and LoadBalancer ingress addresses (sorted, once each)."""
    out: set[ipaddress.IPv4Address] = set()
    for svc in cluster.services:
        if svc.cluster_ip is None:  # headless and ExternalName: no virtual service
            continue
        out.add(ipaddress.IPv4Address(str(svc.cluster_ip)))
        out.update(ipaddress.IPv4Address(str(ip)) for ip in svc.external_ips)
        if svc.type == "LoadBalancer":
            out.update(ipaddress.IPv4Address(str(ip)) for ip in svc.load_balancer_ips)
    return [str(ip) for ip in sorted(out)]


def finish(cluster: Cluster, tables: Tables, devs: Devices) -> Tables:
    """The mode's ``Tables`` fields: IPVS with the configured scheduler, the tunnels, and
    kube-router's masquerading: the IPVS SNAT rule with ``--random-fully`` and the pod
    egress rule (pod_egress.go: ``-s <pod subnets> ! -d <pod subnets> ! -d <node
    addresses> -j MASQUERADE --random-fully``)."""
    cfg = cluster.config
    keep = [cfg.cluster_cidr] + [ipaddress.IPv4Network(f"{n.internal_ip}/32")
                                 for n in cluster.nodes]
    return dataclasses.replace(
        tables,
        ipvs=True,
        ipvs_sched=C.IPVS_SH if cfg.cni.get("serviceScheduler") == "sh" else C.IPVS_RR,
        tun_if=np.array(devs.tun_if, dtype=np.int32),
        masq_random_fully=True,
        egress_masq=True,
        egress_random_fully=True,
        nonmasq_net=np.array([int(k.network_address) for k in keep], dtype=np.uint32),
        nonmasq_mask=np.array([int(k.netmask) for k in keep], dtype=np.uint32),
    )
