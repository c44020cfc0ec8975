"""Node and gateway routing tables as kemu programs them (R-1, R-2, OV-2, OV-4).

Every node gets, like a kubenet/flannel node: its own pod CIDR on the bridge (connected), each
other node's pod CIDR via that node's IP (host-gw) or via ``<subnet>.0`` on ``flannel.1``
(VXLAN, onlink), the node network (connected on ``eth0``) and a default route via the
gateway. Pod blocks a dump's pods live in outside their node's pod CIDR (Calico, Cilium;
inferred only without a kemu document, so host-gw) are routed like pod CIDRs: on the bridge
at home, via the owning node elsewhere and on the gateway. ``node_routes`` is the readable
form (``kemu show routes``); the compiler flattens the same routes into the shared LPM table.

The gateway is a Linux router on the node network: the node network connected, each
pod CIDR via its node in host-gw mode (VXLAN pod CIDRs are not routable on the node network:
they follow its default route out), routed LoadBalancer addresses via the node that serves
them, and a default route out of the cluster (``gateway_routes``).

LoadBalancer addresses (``lb_announcers``): one node per address, MetalLB's L2 speaker
election as kemu models it: the candidates are the nodes with a ready endpoint of the Service
(``externalTrafficPolicy: Local``) or every node if the Service has any ready endpoint
(``Cluster``); the first of them ordered by ``sha256(node name + "#" + address)`` announces it
(L2 mode: answers ARP for it) or gets the gateway's route to it (routed mode). No ready
endpoint: the address is not announced.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


@dataclass(frozen=True)
class Route:
    prefix: IPv4Network
    dev: str
    via: IPv4Address | None = None
    src: IPv4Address | None = None
    proto: str = "static"
    onlink: bool = False
    target_node: str = ""  # pod CIDR routes: the node owning the CIDR

    def render(self) -> str:
        """``ip route`` style text."""
        parts = ["default" if self.prefix.prefixlen == 0 else str(self.prefix)]
        if self.via is not None:
            parts += ["via", str(self.via)]
        parts += ["dev", self.dev, "proto", self.proto]
        if self.via is None:
            parts += ["scope", "link"]
        if self.src is not None:
            parts += ["src", str(self.src)]
        if self.onlink:
            parts.append("onlink")
        return " ".join(parts)


def node_routes(cluster: Cluster) -> dict[str, list[Route]]:
    """The main routing table of every node, most specific first, deterministic."""
    cfg = cluster.config
    tables: dict[str, list[Route]] = {}
    for node in cluster.nodes:
        routes = [
            Route(node.pod_cidr, "cbr0", src=node.gateway_ip, proto="kernel",
                  target_node=node.name),
            Route(cfg.node_network, "eth0", src=node.internal_ip, proto="kernel"),
        ]
        routes += [Route(b, "cbr0", src=node.gateway_ip, target_node=node.name)
                   for b in node.pod_blocks]  # a dump's pod blocks (Calico, Cilium)
        for other in cluster.nodes:
            if other.name == node.name:
                continue
            if cfg.mode != "vxlan":
                routes += [Route(b, "eth0", via=other.internal_ip, target_node=other.name)
                           for b in other.pod_blocks]
            if cfg.mode == "vxlan":
                routes.append(Route(other.pod_cidr, "flannel.1",
                                    via=other.pod_cidr.network_address, onlink=True,
                                    target_node=other.name))
            else:
                routes.append(Route(other.pod_cidr, "eth0", via=other.internal_ip,
                                    target_node=other.name))
        if cfg.gateway_ip is not None:  # `gateway: none`: no default route
            routes.append(Route(IPv4Network("0.0.0.0/0"), "eth0", via=cfg.gateway_ip))
        routes.sort(key=lambda r: (-r.prefix.prefixlen, int(r.prefix.network_address)))
        tables[node.name] = routes
    return tables


def lb_announcers(cluster: Cluster) -> dict[IPv4Address, str]:
    """LoadBalancer address -> the node announcing it (module docstring), sorted by address."""
    out: dict[IPv4Address, str] = {}
    names = [n.name for n in cluster.nodes]
    for svc in cluster.services:
        if svc.type != "LoadBalancer" or not svc.load_balancer_ips:
            continue
        ready = {ep.node_name for port in svc.ports for ep, _tp in cluster.backends(svc, port)
                 if ep.ready and ep.node_name}
        if not ready:
            continue
        cands = [n for n in names if n in ready] if svc.external_traffic_policy == "Local" \
            else names
        if not cands:
            continue
        for ip in svc.load_balancer_ips:
            if ip not in out:
                out[ip] = min(cands, key=lambda n, ip=ip: hashlib.sha256(
                    f"{n}#{ip}".encode()).digest())
    return dict(sorted(out.items()))


def gateway_routes(cluster: Cluster) -> list[Route]:
    """The gateway's routing table, most specific first; empty without a gateway."""
    cfg = cluster.config
    if cfg.gateway_ip is None:
        return []
    routes = [Route(cfg.node_network, "eth0", src=cfg.gateway_ip, proto="kernel")]
    if cfg.mode != "vxlan":
        routes += [Route(c, "eth0", via=n.internal_ip, target_node=n.name)
                   for n in cluster.nodes for c in (n.pod_cidr, *n.pod_blocks)]
    if cfg.lb_mode == "routed":
        by_name = {n.name: n for n in cluster.nodes}
        routes += [Route(IPv4Network(f"{ip}/32"), "eth0", via=by_name[node].internal_ip,
                         target_node=node)
                   for ip, node in lb_announcers(cluster).items()]
    routes.append(Route(IPv4Network("0.0.0.0/0"), "eth0"))  # out of the cluster
    routes.sort(key=lambda r: (-r.prefix.prefixlen, int(r.prefix.network_address)))
    return routes
