"""``kemu show``: the cluster as kubectl-like tables, routing tables, DNS records, devices and
datapath state; JSON, YAML or names.

One table renderer per resource; the golden files under ``tests/golden/`` are this module's
output, so ``show`` and the tests share it. Tables are plain aligned text (three spaces between
columns, like kubectl); ``-o wide`` adds columns. ``-o json``/``-o yaml``: Kubernetes kinds
(``nodes``, ``pods``, ``services``, ``endpoints`` (EndpointSlices), ``networkpolicies``,
``namespaces``) as kubectl prints them (a ``List``), kemu's own views (``routes``, ``dns``,
``interfaces``, ``listeners``, ``conntrack``, ``fdb``, ``neighbours``) in the schema documented in
``kemu.frontend.views``, which builds both. ``-o name`` prints ``kind/name`` per object of a
Kubernetes kind; ``-l`` selects them by label (kubectl's syntax).

Namespaces follow kubectl: namespaced kinds show ``default`` unless ``-n NS`` or ``-A`` (which
adds a NAMESPACE column); when nothing is there, ``No resources found in NS namespace.`` on
stderr, with a hint when other namespaces have some. ``nodes``, ``namespaces``, ``routes`` and
the state views are cluster-wide; ``dns`` and ``interfaces`` show everything unless ``-n``
narrows them to one namespace's names or pods.

``conntrack``, ``fdb`` and ``neighbours`` read the datapath's state after ``--replay CAPTURE``
(in memory, nothing written) and/or ``--trace SRC DST`` (one packet, as ``kemu trace`` sends
it), else of the freshly loaded cluster (a note on stderr says so).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kemu.errors import KemuError
from kemu.frontend import views
from kemu.frontend.cli import EXIT_OK, Command, add_manifest_args, load

KUBERNETES = ("nodes", "pods", "services", "endpoints", "networkpolicies", "namespaces")
STATE = ("conntrack", "fdb", "neighbours")
RESOURCES = (*KUBERNETES, "routes", "dns", "resolvconf", "interfaces", "listeners", *STATE)
ALIASES = {"node": "nodes", "no": "nodes", "pod": "pods", "po": "pods", "service": "services",
           "svc": "services", "endpoint": "endpoints", "ep": "endpoints",
           "networkpolicy": "networkpolicies", "netpol": "networkpolicies",
           "namespace": "namespaces", "ns": "namespaces", "route": "routes",
           "interface": "interfaces", "ifaces": "interfaces", "iface": "interfaces",
           "neighbors": "neighbours", "neighbour": "neighbours", "neighbor": "neighbours",
           "neigh": "neighbours", "ct": "conntrack", "listener": "listeners",
           "resolv.conf": "resolvconf"}
OUTPUTS = ("table", "wide", "json", "yaml", "name")
MAX_TABLE_ENDPOINTS = 3  # kubectl's "+ N more..."
FRESH_NOTE = ("kemu: note: no --replay or --trace: the state of a freshly loaded cluster")


def outputs_of(resource: str) -> tuple[str, ...]:
    """The ``-o`` formats a resource has (``name`` only for Kubernetes kinds)."""
    resource = ALIASES.get(resource, resource)
    return OUTPUTS if resource in KUBERNETES else OUTPUTS[:-1]


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


# --- Kubernetes kinds: tables over selected objects ----------------------------------------------

def render_nodes(cluster: Any, objs: Sequence[Any], all_ns: bool, wide: bool) -> str:
    headers = ["NAME", "INTERNAL-IP", "POD-CIDR", "MAC"]
    if wide:
        headers += ["BRIDGE-IP", "BRIDGE-MAC", "VTEP-MAC"]
    rows = []
    for n in objs:
        row = [n.name, str(n.internal_ip), str(n.pod_cidr), n.mac]
        if wide:
            row += [str(n.gateway_ip), n.bridge_mac, n.vtep_mac]
        rows.append(row)
    return table(headers, rows)


def render_pods(cluster: Any, objs: Sequence[Any], all_ns: bool, wide: bool) -> str:
    headers = _headers(all_ns, "NAME", "READY", "STATUS", "IP", "NODE")
    if wide:
        headers += ["MAC", "OWNER"]
    rows = []
    for p in objs:
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


def render_services(cluster: Any, objs: Sequence[Any], all_ns: bool, wide: bool) -> str:
    headers = _headers(all_ns, "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)")
    if wide:
        headers.append("SELECTOR")
    rows = []
    for s in objs:
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


def render_endpoints(cluster: Any, objs: Sequence[Any], all_ns: bool, wide: bool) -> str:
    rows = []
    for s in objs:
        eps = endpoint_list(cluster, s)
        text = ",".join(eps if wide else eps[:MAX_TABLE_ENDPOINTS]) or "<none>"
        if not wide and len(eps) > MAX_TABLE_ENDPOINTS:
            text += f" + {len(eps) - MAX_TABLE_ENDPOINTS} more..."
        rows.append((s.namespace, [s.name, text]))
    return table(_headers(all_ns, "NAME", "ENDPOINTS"), _scope(rows, all_ns))


def render_networkpolicies(cluster: Any, objs: Sequence[Any], all_ns: bool, wide: bool) -> str:
    """kubectl's NAME and POD-SELECTOR (no AGE: kemu has no object time); ``-o wide`` adds the
    policy types and the pods the selector selects in kemu's model."""
    from kemu.control.selectors import describe

    headers = _headers(all_ns, "NAME", "POD-SELECTOR")
    if wide:
        headers += ["POLICY-TYPES", "PODS"]
    rows = []
    for pol in objs:
        row = [pol.name, describe(pol.pod_selector)]
        if wide:
            row += [",".join(pol.policy_types),
                    ",".join(p.name for p in views.policy_pods(cluster, pol)) or "<none>"]
        rows.append((pol.namespace, row))
    return table(headers, _scope(rows, all_ns))


def render_namespaces(cluster: Any, objs: Sequence[Any], all_ns: bool, wide: bool) -> str:
    headers = ["NAME", "STATUS"] + (["LABELS"] if wide else [])
    rows = []
    for ns in objs:
        row = [ns.name, "Active"]
        if wide:
            row.append(",".join(f"{k}={v}" for k, v in sorted(ns.labels.items())) or "<none>")
        rows.append(row)
    return table(headers, rows)


TABLES: dict[str, Callable[[Any, Sequence[Any], bool, bool], str]] = {
    "nodes": render_nodes, "pods": render_pods, "services": render_services,
    "endpoints": render_endpoints, "networkpolicies": render_networkpolicies,
    "namespaces": render_namespaces,
}


# --- kemu's views ------------------------------------------------------------------------------

def route_line(route: Any) -> str:
    """One route as ``ip route`` prints it (``kemu.compiler.routes.Route.render``)."""
    return str(route.render())


def render_route_table(routes: Mapping[str, Sequence[Any]]) -> str:
    """``node1  10.244.0.0/24 dev cbr0 proto kernel scope link src 10.244.0.1``, per node."""
    width = max((len(n) for n in routes), default=0)
    return "".join(f"{node.ljust(width)}  {route_line(r)}\n"
                   for node in sorted(routes) for r in routes[node])


def _node_routes(cluster: Any) -> Mapping[str, Sequence[Any]]:
    from kemu.compiler.routes import gateway_routes, node_routes

    routes = dict(node_routes(cluster))
    gw = gateway_routes(cluster)
    if gw:
        routes["gateway"] = gw
    return routes


def route_items(cluster: Any) -> list[dict[str, Any]]:
    from kemu.control.cluster import jsonable

    return [{"node": node, **{k: jsonable(getattr(r, k)) for k in
                              ("prefix", "dev", "via", "src", "proto")},
             "onlink": bool(getattr(r, "onlink", False)),
             "type": getattr(r, "type", "unicast")}
            for node, rs in sorted(_node_routes(cluster).items()) for r in rs]


def _dns_records(cluster: Any, ns: str | None) -> list[Any]:
    from kemu.control import dns

    recs = dns.records(cluster)
    if ns is None:
        return recs
    zone = dns.zone_of(cluster)
    suffixes = (f".{ns}.svc.{zone}.", f".{ns}.pod.{zone}.")
    return [r for r in recs if r.name.endswith(suffixes)
            or (r.type == "PTR" and r.value.endswith(suffixes))]


def dns_items(cluster: Any, ns: str | None) -> list[dict[str, Any]]:
    return [{"name": r.name, "type": r.type, "ttl": r.ttl, "value": r.value}
            for r in _dns_records(cluster, ns)]


def _tables_of(cluster: Any) -> Any:
    from kemu.compiler.compile import compile_cluster

    return compile_cluster(cluster)


# --- one entry point for every resource ----------------------------------------------------------

@dataclass
class Shown:
    """What ``kemu show`` prints: ``text`` on stdout, ``notes`` (one line each) on stderr."""

    text: str
    notes: list[str] = field(default_factory=list)


def _dump(data: Any, output: str, kubectl: bool) -> str:
    """JSON or YAML; kubectl's shape with sorted keys, as kubectl prints it."""
    if output == "json":
        return json.dumps(data, indent=2, sort_keys=kubectl) + "\n"
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=kubectl, default_flow_style=False)


def parse_selector(text: str | None) -> Any:
    """``-l`` text -> ``LabelSelector`` (None when not given); bad text is a usage error."""
    if text is None:
        return None
    from kemu.control.selectors import parse_selector_text

    try:
        return parse_selector_text(text)
    except ValueError as err:
        raise KemuError(f"-l {text!r}: {err}") from None


def show(cluster: Any, resource: str, namespace: str | None = None,
         all_namespaces: bool = False, output: str = "table", selector: str | None = None,
         state: views.DatapathState | None = None, name: str | None = None) -> Shown:
    """What ``kemu show`` prints for ``resource`` (the golden files hold exactly ``text``).
    ``state``: the datapath state the state views read (default: a freshly loaded one);
    ``name``: the pod of ``resolvconf`` (``ns/pod``, or ``pod`` in ``namespace``)."""
    resource = ALIASES.get(resource, resource)
    if resource not in RESOURCES:
        raise KemuError(f"unknown resource {resource!r} (have: {', '.join(RESOURCES)})")
    if output not in outputs_of(resource):
        raise KemuError(f"-o {output}: {resource} are kemu's own view, not Kubernetes objects "
                        "(use -o table, wide, json or yaml)")
    if name is not None and resource != "resolvconf":
        raise KemuError(f"{name!r}: only resolvconf takes a name (kemu show resolvconf ns/pod)")
    if resource in KUBERNETES:
        return _show_kubernetes(cluster, resource, namespace, all_namespaces, output,
                                parse_selector(selector))
    if selector is not None:
        raise KemuError(f"-l: {resource} have no labels (-l selects pods, services, endpoints, "
                        "networkpolicies, nodes and namespaces)")
    if resource == "resolvconf":
        return _show_resolvconf(cluster, name, namespace, output)
    wide = output == "wide"
    notes: list[str] = []
    metadata = None
    if resource == "routes":
        if output in ("table", "wide"):
            return Shown(render_route_table(_node_routes(cluster)))
        items = route_items(cluster)
    elif resource == "dns":
        ns = None if all_namespaces else namespace
        items = dns_items(cluster, ns)
        if output in ("table", "wide"):
            return Shown(table(["NAME", "TTL", "TYPE", "DATA"],
                               [[i["name"], str(i["ttl"]), i["type"], i["value"]]
                                for i in items]))
    elif resource == "interfaces":
        items = views.interface_items(cluster, _tables_of(cluster),
                                      None if all_namespaces else namespace)
        rows_of = views.interface_rows
    elif resource == "listeners":
        items = views.listener_items(cluster, None if all_namespaces else namespace or "default")
        rows_of = views.listener_rows
    else:
        if state is None:
            from kemu.frontend.api import EmulatedCluster

            state = views.state_of(EmulatedCluster(cluster))
        if not state.after:
            notes.append(FRESH_NOTE)
        items_of, rows_of = views.STATE_VIEWS[resource]
        items = items_of(state)
        metadata = state.metadata
    if output in ("json", "yaml"):
        return Shown(_dump(views.kemu_list(resource, items, metadata), output, False), notes)
    if not items:
        return Shown("", [*notes, "No resources found"])
    headers, rows = rows_of(items, wide)
    return Shown(table(headers, rows), notes)


def _show_resolvconf(cluster: Any, name: str | None, namespace: str | None,
                     output: str) -> Shown:
    """A pod's /etc/resolv.conf exactly as the file would be (D-10); kubelet's
    ``DNSConfigForming`` warnings (limits exceeded) on stderr."""
    if name is None:
        raise KemuError("resolvconf needs a pod: kemu show resolvconf NAMESPACE/POD")
    pod = views.find_pod(cluster, name, namespace)
    item = views.resolvconf_item(cluster, pod)
    notes = [f"kemu: warning: pod {pod.key}: {w}" for w in item["warnings"]]
    if output in ("json", "yaml"):
        return Shown(_dump(views.kemu_list("resolvconf", [item]), output, False), notes)
    return Shown(item["text"], notes)


def _show_kubernetes(cluster: Any, resource: str, namespace: str | None, all_ns: bool,
                     output: str, selector: Any) -> Shown:
    namespaced = views.KINDS[resource][1]
    ns = None if all_ns or not namespaced else (namespace or "default")
    picked = views.select(cluster, resource, views.objects(cluster, resource), ns, selector)
    notes: list[str] = []
    objs = picked.objects
    if resource == "endpoints" and output in ("json", "yaml", "name"):
        objs = views.slices(cluster, objs)
    if output in ("json", "yaml"):
        data = views.kubectl_list(views.k8s_items(cluster, resource, objs))
        return Shown(_dump(data, output, True), notes)
    if not objs:
        notes.append(f"No resources found in {ns} namespace." if ns is not None
                     else "No resources found")
        if picked.elsewhere:
            notes.append(f"({picked.elsewhere} in other namespaces: use -A or -n NAMESPACE)")
        return Shown("", notes)
    if output == "name":
        return Shown("".join(f"{n}\n" for n in views.names(resource, objs)), notes)
    return Shown(TABLES[resource](cluster, objs, all_ns and namespaced, output == "wide"), notes)


def render(cluster: Any, resource: str, namespace: str | None = None,
           all_namespaces: bool = False, output: str = "table", selector: str | None = None,
           state: views.DatapathState | None = None) -> str:
    """The text ``kemu show`` prints on stdout (``show(...).text``)."""
    return show(cluster, resource, namespace, all_namespaces, output, selector, state).text


# --- the command -------------------------------------------------------------------------------

def trace_packet(emu: Any, destination: str, protocol: str) -> Any:
    """The packet ``kemu trace -D destination -p protocol`` sends (a Scapy IP packet)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    from kemu.frontend.trace_cmd import destination as resolve
    from kemu.frontend.trace_cmd import parse_protocol

    proto, fields = parse_protocol(protocol)
    dst, default_port = resolve(emu, destination)
    ip = IP(dst=dst, ttl=int(fields.get("ttl", 64)))
    dport = int(fields.get("dport", default_port or 80))
    sport = int(fields.get("sport", 40000))
    if proto == "tcp":
        return ip / TCP(sport=sport, dport=dport, flags=fields.get("flags", "S"), seq=1000)
    if proto == "udp":
        return ip / UDP(sport=sport, dport=dport) / b"kemu"
    return ip / ICMP(id=1, seq=1) / b"kemu"


def run_traffic(cluster: Any, args: argparse.Namespace) -> views.DatapathState:
    """Load the datapath, replay and/or trace as the options say, and read its state."""
    from kemu.frontend.api import EmulatedCluster

    respond = args.respond if args.respond is not None else args.replay is None
    options: dict[str, Any] = {"icmp_errors": respond} if args.replay else {}
    emu = EmulatedCluster(cluster, backend=args.backend, seed=args.seed, respond=respond,
                          **options)
    after = []
    if args.replay:
        if not os.path.exists(args.replay):
            raise KemuError(f"{args.replay}: No such file or directory")
        emu.replay(args.replay, limit=args.limit, loop=args.loop, inject_at=args.inject_at,
                   respond=respond, unknown_at_gateway=args.unknown_at_gateway)
        after.append(f"replay {args.replay}")
    if args.trace:
        src, dst = args.trace
        emu.send(trace_packet(emu, dst, args.protocol), src=src)
        after.append(f"trace {src} -> {dst}")
    return views.state_of(emu, after)


def _configure(parser: argparse.ArgumentParser) -> None:
    add_manifest_args(parser)
    parser.add_argument("resource", choices=sorted([*RESOURCES, *ALIASES]), metavar="RESOURCE",
                        help="one of: " + ", ".join(RESOURCES) + " (kubectl's short names "
                        "work: po, svc, ep, netpol, no, ns; ifaces for interfaces)")
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="for resolvconf: the pod, NAMESPACE/POD (or POD with -n): its "
                        "/etc/resolv.conf as kubelet writes it")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: default); for dns and "
                       "interfaces, only that namespace's names or pods' devices")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="every namespace (adds a NAMESPACE column)")
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                        help="output format (default: table); json and yaml print Kubernetes "
                        "kinds as kubectl does, name prints kind/name per object")
    parser.add_argument("-l", "--selector", metavar="SELECTOR",
                        help="label selector in kubectl's syntax (app=web,tier!=db, "
                        "'env in (a,b)', '!debug'), for Kubernetes kinds")
    state = parser.add_argument_group(
        "datapath state", "conntrack, fdb and neighbours read the datapath after these (in "
        "memory: nothing is written); without them, of the freshly loaded cluster")
    state.add_argument("--replay", metavar="CAPTURE",
                       help="replay this capture (pcap or pcapng) first, as kemu replay does")
    state.add_argument("--trace", nargs=2, metavar=("SRC", "DST"),
                       help="then send one packet from SRC to DST, as kemu trace -S SRC -D DST "
                       "does (TCP SYN unless -p says otherwise)")
    state.add_argument("-p", "--protocol", default="tcp",
                       help="with --trace: tcp|udp|icmp[,dport=N][,sport=N][,flags=S][,ttl=N] "
                       "(default tcp)")
    state.add_argument("--respond", action=argparse.BooleanOptionalAction, default=None,
                       help="emulated stacks answer and nodes send ICMP errors (default: off "
                       "with --replay, as kemu replay, on with --trace alone, as kemu trace)")
    state.add_argument("--seed", type=int, default=0,
                       help="seed of load-balancing choices (default 0)")
    state.add_argument("--limit", type=int, default=0, metavar="N",
                       help="with --replay: stop after N frames")
    state.add_argument("--loop", type=int, default=1, metavar="N",
                       help="with --replay: replay the capture N times")
    state.add_argument("--inject-at", metavar="IFACE",
                       help="with --replay: enter every frame at this interface "
                       "(e.g. node1/eth0)")
    state.add_argument("--unknown-at-gateway", action="store_true",
                       help="with --replay: frames whose source the cluster does not know "
                       "enter from the gateway")
    state.add_argument("--backend", choices=("auto", "cython", "python"), default="auto",
                       help="data-plane implementation (default auto: the compiled one when "
                       "built)")


def _run(args: argparse.Namespace) -> int:
    resource = ALIASES.get(args.resource, args.resource)
    if resource not in STATE and (args.replay or args.trace):
        raise KemuError("--replay and --trace apply to conntrack, fdb and neighbours only")
    if args.output not in outputs_of(resource):  # before loading: a usage error
        show(None, resource, output=args.output)
    cluster = load(args)
    state = run_traffic(cluster, args) if resource in STATE else None
    shown = show(cluster, resource, args.namespace, args.all_namespaces, args.output,
                 args.selector, state, args.name)
    for line in shown.notes:
        print(line, file=sys.stderr)
    sys.stdout.write(shown.text)
    return EXIT_OK


SHOW = Command("show", "show nodes, pods, services, endpoints, network policies, namespaces, "
               "routes, dns records, a pod's resolv.conf, interfaces, listeners, conntrack, "
               "fdb or neighbours",
               _configure, _run)
