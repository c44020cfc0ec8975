"""Node routing tables as kemu programs them (R-1, R-2, OV-2, OV-4).

Every node gets, like a kubenet/flannel node: its own pod CIDR on the bridge (connected), each
other node's pod CIDR via that node's IP (host-gw) or via ``<subnet>.0`` on ``flannel.1``
(VXLAN, onlink), the node network (connected on ``eth0``) and a default route via the
gateway. ``node_routes`` is the readable form (``kemu show routes``); the compiler flattens
the same routes into the shared LPM table.
"""

from __future__ import annotations

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
        for other in cluster.nodes:
            if other.name == node.name:
                continue
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
