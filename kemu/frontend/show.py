"""``kemu show``: the cluster as kubectl-like tables, routing tables, DNS records, JSON or YAML.

One renderer per resource (``nodes``, ``pods``, ``services``, ``endpoints``, ``routes``,
``dns``, ``listeners``: what each pod's emulated stack answers, ``kemu.control.listen``); the
golden files under ``tests/golden/`` are this module's output, so ``show`` and the tests share
it. Tables are plain aligned text (three spaces between columns, like kubectl);
``-o wide`` adds columns; ``-o json``/``-o yaml`` print the matching part of
``Cluster.to_dict()`` (``routes`` and ``dns`` their own lists).

Namespaces follow kubectl: namespaced resources show ``default`` unless ``-n NS`` or ``-A``
(which adds a NAMESPACE column); ``nodes`` and ``routes`` are cluster-wide; ``dns`` shows the
whole zone unless ``-n`` narrows it to one namespace's names.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kemu.frontend.cli import Command, add_manifest_args, load

RESOURCES = ("nodes", "pods", "services", "endpoints", "routes", "dns", "listeners")
ALIASES = {"node": "nodes", "no": "nodes", "pod": "pods", "po": "pods", "service": "services",
           "svc": "services", "endpoint": "endpoints", "ep": "endpoints", "route": "routes",
           "listener": "listeners"}
OUTPUTS = ("table", "wide", "json", "yaml")
MAX_TABLE_ENDPOINTS = 3  # kubectl's "+ N more..."


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces; trailing spaces stripped."""
    grid = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in grid) for i in range(len(headers))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in grid)


def _scope(rows: list[tuple[str, list[str]]], all_ns: bool) -> list[list[str]]:
    """Rows tagged with their namespace -> rows, with a NAMESPACE column under ``-A``."""
    return [([ns] if all_ns else []) + r for ns, r in rows]


def _headers(all_ns: bool, *names: str) -> list[str]:
    return (["NAMESPACE"] if all_ns else []) + list(names)


def render_nodes(cluster: Any, ns: str | None, all_ns: bool, wide: bool) -> str:
    headers = ["NAME", "INTERNAL-IP", "POD-CIDR", "MAC"]
    if wide:
        headers += ["BRIDGE-IP", "BRIDGE-MAC", "VTEP-MAC"]
    rows = []
    for n in cluster.nodes:
        row = [n.name, str(n.internal_ip), str(n.pod_cidr), n.mac]
        if wide:
            row += [str(n.gateway_ip), n.bridge_mac, n.vtep_mac]
        rows.append(row)
    return table(headers, rows)


def render_pods(cluster: Any, ns: str | None, all_ns: bool, wide: bool) -> str:
    headers = _headers(all_ns, "NAME", "READY", "STATUS", "IP", "NODE")
    if wide:
        headers += ["MAC", "OWNER"]
    rows = []
    for p in cluster.pods:
        if not all_ns and p.namespace != ns:
            continue
        n = len(p.containers)
        row = [p.name, f"{n if p.ready else 0}/{n}",
               "Terminating" if p.terminating else "Running", str(p.ip), p.node_name]
        if wide:
            row += [p.mac or "<none>",
                    f"{p.owner.kind}/{p.owner.name}" if p.owner else "<none>"]
        rows.append((p.namespace, row))
    return table(headers, _scope(rows, all_ns))


def service_ports(svc: Any) -> str:
    """kubectl's PORT(S): ``80/TCP``, ``80:30080/TCP``, comma-separated."""
    parts = [f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}"
             for p in svc.ports]
    return ",".join(parts) or "<none>"


def _external_ip(svc: Any) -> str:
    if svc.type == "ExternalName":
        return svc.external_name
    ips = [str(ip) for ip in [*svc.load_balancer_ips, *svc.external_ips]]
    if ips:
        return ",".join(ips)
    return "<pending>" if svc.type == "LoadBalancer" else "<none>"


def render_services(cluster: Any, ns: str | None, all_ns: bool, wide: bool) -> str:
    headers = _headers(all_ns, "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)")
    if wide:
        headers.append("SELECTOR")
    rows = []
    for s in cluster.services:
        if not all_ns and s.namespace != ns:
            continue
        ip = str(s.cluster_ip) if s.cluster_ip is not None else (
            "<none>" if s.type == "ExternalName" else "None")
        row = [s.name, s.type, ip, _external_ip(s), service_ports(s)]
        if wide:
            row.append(",".join(f"{k}={v}" for k, v in sorted((s.selector or {}).items()))
                       or "<none>")
        rows.append((s.namespace, row))
    return table(headers, _scope(rows, all_ns))


def endpoint_list(cluster: Any, svc: Any) -> list[str]:
    """Ready ``ip:port`` per service port then endpoint (kubectl's ENDPOINTS order)."""
    out: list[str] = []
    for port in svc.ports:
        for ep, number in cluster.backends(svc, port):
            text = f"{ep.ip}:{number}"
            if ep.ready and text not in out:
                out.append(text)
    return out


def render_endpoints(cluster: Any, ns: str | None, all_ns: bool, wide: bool) -> str:
    rows = []
    for s in cluster.services:
        if s.type == "ExternalName" or (not all_ns and s.namespace != ns):
            continue
        eps = endpoint_list(cluster, s)
        text = ",".join(eps if wide else eps[:MAX_TABLE_ENDPOINTS]) or "<none>"
        if not wide and len(eps) > MAX_TABLE_ENDPOINTS:
            text += f" + {len(eps) - MAX_TABLE_ENDPOINTS} more..."
        rows.append((s.namespace, [s.name, text]))
    return table(_headers(all_ns, "NAME", "ENDPOINTS"), _scope(rows, all_ns))


def route_line(route: Any) -> str:
    """One route as ``ip route`` prints it."""
    prefix = "default" if route.prefix.prefixlen == 0 else str(route.prefix)
    parts = [prefix]
    if route.via is not None:
        parts += ["via", str(route.via)]
    parts += ["dev", route.dev, "proto", route.proto]
    if route.via is None:
        parts += ["scope", "link"]
    if route.src is not None:
        parts += ["src", str(route.src)]
    if getattr(route, "onlink", False):
        parts.append("onlink")
    return " ".join(parts)


def render_route_table(routes: Mapping[str, Sequence[Any]]) -> str:
    """``node1  10.244.0.0/24 dev cbr0 proto kernel scope link src 10.244.0.1``, per node."""
    width = max((len(n) for n in routes), default=0)
    return "".join(f"{node.ljust(width)}  {route_line(r)}\n"
                   for node in sorted(routes) for r in routes[node])


def _node_routes(cluster: Any) -> Mapping[str, Sequence[Any]]:
    from kemu.compiler.routes import node_routes

    return node_routes(cluster)  # type: ignore[no-any-return]


def render_routes(cluster: Any, ns: str | None, all_ns: bool, wide: bool) -> str:
    return render_route_table(_node_routes(cluster))


def _dns_records(cluster: Any, ns: str | None) -> list[Any]:
    from kemu.control import dns

    recs = dns.records(cluster)
    if ns is None:
        return recs
    zone = dns.zone_of(cluster)
    suffixes = (f".{ns}.svc.{zone}.", f".{ns}.pod.{zone}.")
    return [r for r in recs if r.name.endswith(suffixes)
            or (r.type == "PTR" and r.value.endswith(suffixes))]


def render_dns(cluster: Any, ns: str | None, all_ns: bool, wide: bool) -> str:
    rows = [[r.name, str(r.ttl), r.type, r.value] for r in _dns_records(cluster, ns)]
    return table(["NAME", "TTL", "TYPE", "DATA"], rows)


def _listeners(cluster: Any, ns: str | None, all_ns: bool) -> list[tuple[Any, Any]]:
    from kemu.control.listen import listening_map

    lm = listening_map(cluster)
    return [(p, lm[p.key]) for p in cluster.pods
            if (all_ns or p.namespace == ns) and not p.host_network]


def render_listeners(cluster: Any, ns: str | None, all_ns: bool, wide: bool) -> str:
    """Each pod's listening set (``spec.listen`` of the Cluster: declared|services|all)."""
    headers = _headers(all_ns, "NAME", "IP", "LISTENING")
    rows = [(p.namespace, [p.name, str(p.ip), ls.text()])
            for p, ls in _listeners(cluster, ns, all_ns)]
    return table(headers, _scope(rows, all_ns))


RENDERERS: dict[str, Callable[[Any, str | None, bool, bool], str]] = {
    "nodes": render_nodes, "pods": render_pods, "services": render_services,
    "endpoints": render_endpoints, "routes": render_routes, "dns": render_dns,
    "listeners": render_listeners,
}


def data(cluster: Any, resource: str, ns: str | None, all_ns: bool) -> dict[str, Any]:
    """The JSON/YAML form of ``resource``: the matching part of ``Cluster.to_dict()``."""
    if resource == "routes":
        from kemu.control.cluster import jsonable

        return {"routes": {node: [{**{k: jsonable(getattr(r, k)) for k in
                                      ("prefix", "dev", "via", "src", "proto")},
                                   "onlink": bool(getattr(r, "onlink", False))} for r in rs]
                           for node, rs in sorted(_node_routes(cluster).items())}}
    if resource == "dns":
        return {"dns": [{"name": r.name, "type": r.type, "ttl": r.ttl, "value": r.value}
                        for r in _dns_records(cluster, ns)]}
    if resource == "listeners":
        return {"listeners": [
            {"namespace": p.namespace, "name": p.name, "ip": str(p.ip), "all": ls.all,
             "ports": [{"port": port, "protocol": proto}
                       for proto, port in sorted(ls.ports, key=lambda k: (k[1], k[0]))]}
            for p, ls in _listeners(cluster, ns, all_ns)]}
    key = {"endpoints": "endpoint_slices"}.get(resource, resource)
    items = cluster.to_dict()[key]
    if resource != "nodes" and not all_ns:
        items = [i for i in items if i["namespace"] == ns]
    return {key: items}


def render(cluster: Any, resource: str, namespace: str | None = None,
           all_namespaces: bool = False, output: str = "table") -> str:
    """The text ``kemu show`` prints (the golden files hold exactly this)."""
    resource = ALIASES.get(resource, resource)
    ns = namespace if namespace is not None or resource == "dns" else "default"
    if resource == "dns" and all_namespaces:
        ns = None
    if output == "json":
        return json.dumps(data(cluster, resource, ns, all_namespaces), indent=2) + "\n"
    if output == "yaml":
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(data(cluster, resource, ns, all_namespaces), Dumper=dumper,
                         sort_keys=False, default_flow_style=False)
    return RENDERERS[resource](cluster, ns, all_namespaces, output == "wide")


def _configure(parser: argparse.ArgumentParser) -> None:
    add_manifest_args(parser)
    parser.add_argument("resource", choices=sorted([*RESOURCES, *ALIASES]), metavar="RESOURCE",
                        help="one of: " + ", ".join(RESOURCES))
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: default)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="every namespace")
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                        help="output format (default: table)")


def _run(args: argparse.Namespace) -> int:
    cluster = load(args)
    text = render(cluster, args.resource, args.namespace, args.all_namespaces, args.output)
    print(text, end="")
    return 0


SHOW = Command("show", "show nodes, pods, services, endpoints, routes, dns records or "
               "listeners",
               _configure, _run)
