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

A node's routes can be set one by one (``spec.routes``, ``EmulatedCluster.replace_route`` /
``delete_route``): each ``RouteChange`` is applied in order to that node's table as
``ip route replace`` / ``ip route del`` apply to the main table (``apply_changes``): a replace
takes the place of the route with the same prefix (or is added), a delete removes it (none:
``No such process``). The next hop is checked as ``fib_check_nh`` checks it: without
``onlink`` it must be on a connected route of the node (of ``dev`` if given) and not one of
the node's own addresses. kemu's routes have one metric and no TOS, so the prefix alone names
a route. Such a node's table is compiled whole into ``Tables.nrt_*`` (``node_route_table``).

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

from kemu.compiler import cilium, cni_routed
from kemu.errors import TopologyError

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.control.model import RouteChange

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
    type: str = "unicast"  # or blackhole, unreachable, prohibit (``ip route``'s route types)

    def render(self) -> str:
        """``ip route`` style text (proto ``boot``, iproute2's own, is not printed)."""
        parts = ["default" if self.prefix.prefixlen == 0 else str(self.prefix)]
        if self.type != "unicast":
            return " ".join([self.type, *parts] + (
                ["proto", self.proto] if self.proto != "boot" else []))
        if self.via is not None:
            parts += ["via", str(self.via)]
        parts += ["dev", self.dev]
        if self.proto != "boot":
            parts += ["proto", self.proto]
        if self.via is None:
            parts += ["scope", "link"]
        if self.src is not None:
            parts += ["src", str(self.src)]
        if self.onlink:
            parts.append("onlink")
        return " ".join(parts)


def node_routes(cluster: Cluster) -> dict[str, list[Route]]:
    """The main routing table of every node, most specific first, deterministic: as kemu
    programs it, then ``spec.routes`` / the API's route changes applied (``apply_changes``)."""
    tables = default_node_routes(cluster)
    apply_changes(cluster, tables)
    return tables


def default_node_routes(cluster: Cluster) -> dict[str, list[Route]]:
    """The main routing table of every node as kemu programs it (no route changes)."""
    cfg = cluster.config
    if cfg.cni.name == "kube-router":  # BGP-learned routes, tunnels (kube_router.py)
        from kemu.compiler.kube_router import node_routes as kube_router_routes
        return {n: [Route(**kw) for kw in rs] for n, rs in kube_router_routes(cluster).items()}
    if cfg.cni.name == "cilium":  # lxc /32s, cilium_host, cilium_vxlan (cilium.py)
        return cilium.node_routes(cluster, Route)
    if cfg.cni.name == "antrea":  # antrea-gw0, onlink via the peers' gateways (antrea.py)
        from kemu.compiler.antrea import node_routes as antrea_routes
        return {n: [Route(**kw) for kw in rs] for n, rs in antrea_routes(cluster).items()}
    routed = cni_routed.routed_mode(cfg)
    if routed is not None:  # AWS VPC CNI, Azure CNI: /32s on routed veths
        return cni_routed.node_routes(cluster, routed, Route)
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


def _order(routes: list[Route]) -> None:
    routes.sort(key=lambda r: (-r.prefix.prefixlen, int(r.prefix.network_address)))


def node_devices(cluster: Cluster) -> tuple[str, ...]:
    """The devices a node route can name."""
    if cluster.config.cni.name == "kube-router":
        from kemu.compiler.kube_router import node_devices as kube_router_devices
        return kube_router_devices(cluster)
    if cluster.config.cni.name == "antrea":
        from kemu.compiler.antrea import node_devices as antrea_devices
        return antrea_devices(cluster)
    return ("eth0", "cbr0", "flannel.1") if cluster.config.mode == "vxlan" else ("eth0", "cbr0")


def apply_changes(cluster: Cluster, tables: dict[str, list[Route]],
                  changes: list[RouteChange] | None = None) -> None:
    """Apply route changes in order to ``tables`` (module docstring); a change that Linux
    refuses is a ``TopologyError`` naming it (``spec.routes[i]`` or the API call)."""
    local = {n.name: {n.internal_ip, n.gateway_ip} for n in cluster.nodes}
    devices = node_devices(cluster)
    routed = cni_routed.routed_mode(cluster.config) or cilium.routed_mode(cluster.config)
    for ch in (cluster.config.routes if changes is None else changes) if routed else ():
        raise TopologyError(f"{ch.where or f'route {ch.prefix} on {ch.node}'}: route changes "
                            f"are not modelled with spec.cni {cluster.config.cni.name} (its "
                            "pods' /32 routes on routed veths)")
    for ch in cluster.config.routes if changes is None else changes:
        where = ch.where or f"route {ch.prefix} on {ch.node}"
        routes = tables.get(ch.node)
        if routes is None:
            raise TopologyError(f"{where}: unknown node {ch.node!r} "
                                f"(have: {', '.join(sorted(tables))})")
        old = [r for r in routes if r.prefix == ch.prefix]
        if ch.delete:
            if not old:
                raise TopologyError(f"{where}: ip route del {ch.prefix}: no such route on "
                                    f"{ch.node} (RTNETLINK answers: No such process)")
            routes.remove(old[0])
            continue
        new = _checked_route(ch, routes, local[ch.node], devices, where)
        for r in old:
            routes.remove(r)
        routes.append(new)
        _order(routes)


def _checked_route(ch: RouteChange, routes: list[Route], local: set[IPv4Address],
                   devices: tuple[str, ...], where: str) -> Route:
    """The route ``ch`` replaces with, its device and next hop checked (``fib_check_nh``)."""
    if ch.type != "unicast":
        return Route(ch.prefix, "", proto="boot", type=ch.type)
    if ch.dev and ch.dev not in devices:
        raise TopologyError(f"{where}: dev {ch.dev!r}: Cannot find device "
                            f"(a node has {', '.join(devices)})")
    if ch.via is None:
        if not ch.dev:
            raise TopologyError(f"{where}: a unicast route needs via or dev")
        if ch.onlink:
            raise TopologyError(f"{where}: onlink needs via")
        return Route(ch.prefix, ch.dev, proto="boot")
    if ch.via in local:
        raise TopologyError(f"{where}: via {ch.via}: Nexthop has invalid gateway (an "
                            "address of the node itself)")
    if ch.onlink:
        if not ch.dev:
            raise TopologyError(f"{where}: onlink needs dev")
        return Route(ch.prefix, ch.dev, via=ch.via, proto="boot", onlink=True)
    conn = next((r for r in routes if r.type == "unicast" and r.via is None
                 and ch.via in r.prefix), None)
    if conn is None or (ch.dev and conn.dev != ch.dev):
        on = f" on {ch.dev}" if ch.dev else ""
        raise TopologyError(f"{where}: via {ch.via}: Nexthop has invalid gateway (no connected "
                            f"route{on} reaches it; onlink: true says it is on the link)")
    return Route(ch.prefix, conn.dev, via=ch.via, proto="boot")


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
    routed = cni_routed.routed_mode(cfg)
    cil = cilium.active(cfg)
    if cil is not None and not cil.tunnel:  # Cilium native routing: pod CIDRs via nodes
        routed = cilium.routed_mode(cfg)
    if routed is not None:  # the VPC/VNet routes each pod (/32) or pod CIDR to its node
        by_node = {n.name: n for n in cluster.nodes}
        routes += ([Route(IPv4Network(f"{p.ip}/32"), "eth0",
                          via=by_node[p.node_name].internal_ip, target_node=p.node_name)
                    for p in cluster.pods if not p.host_network and p.ip is not None
                    and p.node_name in by_node] if routed.pods_on_node_net else
                   [Route(n.pod_cidr, "eth0", via=n.internal_ip, target_node=n.name)
                    for n in cluster.nodes])
    elif cfg.mode != "vxlan" and cil is None:  # (Cilium's tunnel: pods not on the wire)
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
