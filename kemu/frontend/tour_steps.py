"""The steps of ``kemu tour`` (issue #22): what each sends, on which bundled cluster, and what
its trace must show.

Each step loads its cluster (``examples/cluster`` or a small one of ``examples/tour/``),
sends Scapy-crafted packets through the Python API and returns its exchanges with their
expectations (``kemu.frontend.tour.Expect``): the claims the tour makes, checked against the
facts of the traces. Names of pods, nodes and addresses are looked up in the loaded model
(never written here), so a step keeps working when a cluster changes shape, and fails when
the datapath's behaviour does.

Packets a ``kemu trace`` command can send are crafted exactly as ``kemu trace`` crafts them
(``kemu.frontend.trace_cmd``: TCP from port 40000, sequence 1000, TTL 64), so the printed
command rebuilds the same path (``tests/test_tour.py`` runs each one and compares).

CNI modes: one step per mode of ``kemu.control.cni.NAMES``; the modes not yet in
``cni.BUILT`` are listed as coming (``COMING``), and a built mode without a step is listed
so too, with the reason (the tests refuse that).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kemu.control import cni
from kemu.errors import KemuError, ManifestError
from kemu.frontend.tour import (
    REPLAYED,
    SENT,
    Coming,
    Exchange,
    Fact,
    Step,
    StepRun,
    expect,
    fact,
    facts,
)

ROOT = Path(__file__).resolve().parents[2]
"""The repository: the bundled clusters are under ``ROOT/examples``."""


@dataclass(frozen=True)
class Ctx:
    """Where a step's cluster is (``path``, to load; ``shown``, in printed commands) and
    the data-plane backend to run on."""

    path: str
    shown: str
    backend: str | None = None

    def sibling(self, rel: str) -> tuple[str, str]:
        """(path, shown) of another bundled folder, relative to the repository."""
        return str(ROOT / rel), _shown(rel, self.shown)

    def load(self, **options: Any) -> Any:
        from kemu.frontend.api import load

        return load(self.path, backend=self.backend, **options)


def _shown(rel: str, like: str) -> str:
    """``rel`` written as ``like`` (a step's shown path) writes its own: relative to the
    repository, or absolute."""
    return rel if not os.path.isabs(like) else str(ROOT / rel)


# ---------------------------------------------------------------------------- crafting
def syn(dst: str, dport: int, sport: int = 40000, *, size: int | None = None,
        df: bool = False) -> Any:
    """A TCP SYN as ``kemu trace`` crafts it (``-p tcp[,size=N][,df]``)."""
    from scapy.layers.inet import IP, TCP

    pkt = IP(dst=dst, ttl=64, flags="DF" if df else 0) / TCP(sport=sport, dport=dport,
                                                            flags="S", seq=1000)
    if size is not None and size > len(pkt):
        pkt = pkt / (b"\0" * (size - len(pkt)))
    return pkt


def scapy_text(pkt: Any) -> str:
    """The Scapy expression of ``pkt`` (what a user types to send it again)."""
    return str(pkt.command())


def trace_args(ctx: Ctx, src: str, dst: str, *more: str, shown: str | None = None
               ) -> list[str]:
    return ["trace", "-f", shown or ctx.shown, "-S", src, "-D", dst, *more]


def _ip(emu: Any, pod: str) -> str:
    ns, _, name = pod.partition("/")
    return str(emu.model.pod(ns, name).ip)


def _node_of(emu: Any, pod: str) -> str:
    ns, _, name = pod.partition("/")
    return emu.model.pod(ns, name).node_name


def _node_ip(emu: Any, node: str) -> str:
    return str(next(n for n in emu.model.nodes if n.name == node).internal_ip)


def _pods(emu: Any, ns: str, **labels: str) -> list[str]:
    """Keys of the pods of ``ns`` with these labels, by name."""
    return sorted(p.key for p in emu.model.pods if p.namespace == ns
                  and all(p.labels.get(k) == v for k, v in labels.items()))


def ready_endpoints(emu: Any, service: str) -> frozenset[str]:
    """The pods of the ready endpoints of ``service`` (``ns/name``), from its
    EndpointSlices (the control plane's view, S-12)."""
    ns, _, name = service.partition("/")
    svc = emu.model.service(ns, name)
    return frozenset(e.pod for sl in emu.model.endpoint_slices(svc) for e in sl.endpoints
                     if e.ready and e.pod)


def endpoint_facts(emu: Any, service: str) -> tuple[list[Fact], list[str]]:
    """``endpoint`` facts of ``service`` and the lines that show them."""
    ns, _, name = service.partition("/")
    svc = emu.model.service(ns, name)
    found, lines = [], []
    for sl in emu.model.endpoint_slices(svc):
        for e in sl.endpoints:
            found.append(fact("endpoint", service=service, pod=e.pod, ip=e.ip,
                              ready="true" if e.ready else "false"))
            lines.append(f"    {sl.name}: {e.ip} ({e.pod}) ready={str(e.ready).lower()}")
    return found, lines


def fdb_state(emu: Any, bridge: str) -> tuple[list[Fact], list[str]]:
    """The FDB of ``bridge`` now (``kemu show fdb``'s view): facts and lines."""
    from kemu.frontend.views import fdb_items, state_of

    found, lines = [], []
    for it in fdb_items(state_of(emu)):
        if it["bridge"] != bridge:
            continue
        found.append(fact("fdb-entry", bridge=bridge, mac=it["mac"], port=it["port"],
                          local="true" if it["local"] else "false"))
        lines.append(f"    {it['mac']} on {it['port']}" + (" (the bridge's own)"
                                                            if it["local"] else ""))
    return found, lines


def conntrack_state(emu: Any) -> tuple[list[Fact], list[str]]:
    from kemu.frontend.views import conntrack_items, state_of

    found, lines = [], []
    for it in conntrack_items(state_of(emu)):
        o, r = it["original"], it["reply"]
        found.append(fact("conntrack", node=it["node"], protocol=it["protocol"],
                          original_dst=f"{o['dst']}:{o['dport']}",
                          reply_src=f"{r['src']}:{r['sport']}", state=it.get("state", "")))
        lines.append(f"    {it['node']} {it['protocol']} {o['src']}:{o['sport']} -> "
                     f"{o['dst']}:{o['dport']}, replies from {r['src']}:{r['sport']} "
                     f"({it.get('state', '')})")
    return found, lines


def _starts(prefix: str) -> Callable[[str], bool]:
    return lambda value: value.startswith(prefix)


def _has(*parts: str) -> Callable[[str], bool]:
    return lambda value: all(p in value for p in parts)


# ---------------------------------------------------------------------------- the steps
def pod_localhost(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    pod = _pods(emu, "default", app="web")[0]
    eth0 = f"{pod}/eth0"
    run = StepRun(emu, ctx.shown)
    pkt = syn("127.0.0.1", 9100)
    tr = emu.send(pkt, src=pod)
    run.exchanges.append(Exchange(
        f"a container of {pod} connects to localhost:9100 (the sidecar's port)",
        [tr], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, pod, "127.0.0.1:9100"),
        expects=[
            expect("the packet takes the pod's loopback device", "lo", pod=pod),
            expect("it never touches eth0: it stays in the pod's network namespace", "hop",
                   device=eth0, absent=True),
            expect(f"it is delivered to {pod} itself", "deliver", origin="injected",
                   to=f"pod {pod}", device=f"{pod}/lo"),
            expect("the sidecar, listening on every address of the pod, answers from "
                   "127.0.0.1 with a SYN-ACK", "verdict", reachable="yes"),
        ]))
    own = _ip(emu, pod)
    pkt = syn(own, 9100)
    run.exchanges.append(Exchange(
        f"the same connection to the pod's own address {own}:9100",
        [emu.send(pkt, src=pod)], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, pod, f"{pod}:9100"),
        expects=[
            expect("its own address is local too: lo again", "lo", pod=pod),
            expect("it never touches eth0", "hop", device=eth0, absent=True),
            expect("the sidecar's listening port answers with a SYN-ACK", "verdict",
                   reachable="yes"),
        ]))
    path, shown = ctx.sibling("examples/tour/port-conflict")
    try:
        from kemu.frontend.api import load

        load(path, backend=ctx.backend)
        said, refused = "kemu accepted the pod", []
    except ManifestError as err:
        said = str(err).splitlines()[0]  # the file named as the user gave it, not absolute
        said = said.replace(str(Path(path).resolve()), shown).replace(str(path), shown)
        refused = [fact("refused", message=said)]
    run.exchanges.append(Exchange(
        "two containers of one pod declare the same port", [],
        rerun=["validate", "-f", shown], rerun_note="exits 2: the manifest is refused",
        notes=[f"loading {shown}: {said}"], extra_facts=refused,
        expects=[expect("kemu refuses the pod, naming both containers (M-4: one port "
                        "space per pod)", "refused",
                        message=_has("already declared by container", "M-4"))]))
    return run


def same_node(ctx: Ctx) -> StepRun:
    emu = ctx.load(cold=True)
    client = "default/client"
    node = _node_of(emu, client)
    bridge = f"{node}/cbr0"
    dst = next(p for p in _pods(emu, "shop", app="backend") if _node_of(emu, p) == node)
    client_mac = emu.model.pod("default", "client").mac
    run = StepRun(emu, ctx.shown)
    _f, before = fdb_state(emu, bridge)
    pkt = syn(_ip(emu, dst), 9090)
    tr = emu.send(pkt, src=client)
    learned, after = fdb_state(emu, bridge)
    run.exchanges.append(Exchange(
        f"{client} opens a connection to {dst} on the same node ({node}), the bridge's "
        "FDB empty (a just-booted node)",
        [tr], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, client, f"{dst}:9090", "--cold"),
        before=[f"before: the FDB of {bridge} holds", *before],
        notes=[f"after: the FDB of {bridge} holds", *after],
        extra_facts=learned,
        expects=[
            expect(f"the bridge {bridge} floods the first frame (destination MAC unknown)",
                   "flood", origin="injected", bridge=bridge),
            expect(f"it reaches {dst}", "deliver", origin="injected", to=f"pod {dst}"),
            expect("the answer is forwarded by the FDB only to the client's port, learned "
                   "from the first frame", "fdb", origin="answer", bridge=bridge,
                   port=f"{node}/veth-client"),
            expect(f"the FDB has learned {client}'s MAC on its veth", "fdb-entry",
                   bridge=bridge, mac=client_mac, port=f"{node}/veth-client"),
            expect("pod to pod is never masqueraded (M-5): the source stays the client's",
                   "deliver", origin="injected", to=f"pod {dst}",
                   source=f"{_ip(emu, client)}:40000"),
        ]))
    other = next(p for p in sorted(_pods(emu, "shop")) if _node_of(emu, p) == node
                 and p != dst)
    from scapy.layers.l2 import ARP, Ether

    arp = Ether(src=client_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=client_mac, psrc=_ip(emu, client), pdst=_ip(emu, other))
    tr = emu.send(arp, src=client, fix_l2=False)
    run.exchanges.append(Exchange(
        f"{client} asks who has {_ip(emu, other)} ({other}): an ARP request",
        [tr], crafted=scapy_text(arp), verdict=False, frames=[bytes(arp)],
        rerun=["replay", "-f", ctx.shown, "-r", SENT, "-w", REPLAYED, "--respond", "--cold",
               "--keep-l2"],
        rerun_note="the request as sent, its own Ethernet addresses kept",
        expects=[
            expect("the broadcast request is flooded to every port of the bridge", "flood",
                   origin="injected", bridge=bridge, port=f"{node}/veth-{other.split('/')[1]}"),
            expect(f"{other} answers; the reply goes straight to the client by the FDB",
                   "fdb", origin="answer", bridge=bridge, port=f"{node}/veth-client"),
        ]))
    return run


def cross_node_host_gw(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    client = "default/client"
    node = _node_of(emu, client)
    dst = next(p for p in _pods(emu, "shop", app="backend") if _node_of(emu, p) != node)
    dnode = _node_of(emu, dst)
    cidr = str(next(n for n in emu.model.nodes if n.name == dnode).pod_cidr)
    pkt = syn(_ip(emu, dst), 9090)
    run = StepRun(emu, ctx.shown)
    routes = emu.routes(node)
    run.exchanges.append(Exchange(
        f"{client} on {node} connects to {dst} on {dnode} (flannel host-gw)",
        [emu.send(pkt, src=client)], crafted=scapy_text(pkt),
        before=[f"ip route on {node}:", *(f"    {r}" for r in routes)],
        extra_facts=[fact("route-table", node=node, route=r) for r in routes],
        rerun=trace_args(ctx, client, f"{dst}:9090"),
        expects=[
            expect(f"{node} routes {dnode}'s pod CIDR {cidr} via {dnode}'s address",
                   "route", origin="injected", node=node,
                   route=_has(f"route {cidr} via {_node_ip(emu, dnode)} dev eth0")),
            expect(f"{node}'s table has a route for {dnode}'s pod CIDR via {dnode}",
                   "route-table", node=node,
                   route=_starts(f"{cidr} via {_node_ip(emu, dnode)}")),
            expect("no overlay: the packet crosses the node network as it is", "encap",
                   absent=True),
            expect(f"it reaches {dst} with the client's own address", "deliver",
                   origin="injected", to=f"pod {dst}", source=f"{_ip(emu, client)}:40000"),
            expect("the connection is established", "verdict", reachable="yes"),
        ]))
    return run


def cross_node_vxlan(ctx: Ctx) -> StepRun:
    from kemu.frontend.views import interface_items

    emu = ctx.load()
    src, dst = "default/a", "default/b"
    node, dnode = _node_of(emu, src), _node_of(emu, dst)
    mtus = {it["name"]: it["mtu"] for it in interface_items(emu.model, emu.tables)}
    vtep = f"{node}/flannel.1"
    uplink = f"{node}/eth0"
    mtu_facts = [fact("mtu", device=d, mtu=mtus[d]) for d in (vtep, uplink, f"{src}/eth0")]
    run = StepRun(emu, ctx.shown)
    pkt = syn(_ip(emu, dst), 8080)
    run.exchanges.append(Exchange(
        f"{src} on {node} connects to {dst} on {dnode} through flannel's VXLAN overlay",
        [emu.send(pkt, src=src)], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, src, f"{dst}:8080"),
        notes=[f"MTU: {uplink} {mtus[uplink]}, {vtep} {mtus[vtep]}, {src}/eth0 "
               f"{mtus[src + '/eth0']}"],
        extra_facts=mtu_facts,
        expects=[
            expect(f"{node} encapsulates it: VXLAN VNI 1 to {dnode}", "encap",
                   origin="injected", node=node, remote=dnode, vni="1"),
            expect("on the wire it is UDP to port 8472 between the nodes' addresses",
                   "encap", origin="injected",
                   outer=_has(f"UDP {_node_ip(emu, node)}:", f"> {_node_ip(emu, dnode)}:8472")),
            expect(f"{dnode} decapsulates it (VNI 1)", "decap", origin="injected",
                   node=dnode, vni="1"),
            expect(f"{dst} sees the pod's own address", "deliver", origin="injected",
                   to=f"pod {dst}", source=f"{_ip(emu, src)}:40000"),
            expect(f"{vtep}'s MTU is the uplink's minus the 50 bytes of VXLAN headers",
                   "mtu", device=vtep, mtu=str(mtus[uplink] - 50)),
        ]))
    size = mtus[f"{src}/eth0"] + 50
    pkt = syn(_ip(emu, dst), 8080, 40001, size=size, df=True)
    run.exchanges.append(Exchange(
        f"a {size}-byte packet with Don't Fragment set, more than the overlay can carry",
        [emu.send(pkt, src=src)],
        crafted=f"{scapy_text(syn(_ip(emu, dst), 8080, 40001, df=True))} / "
                f"(b'\\0' * {size - 40})",
        rerun=trace_args(ctx, src, f"{dst}:8080", "-p", f"tcp,sport=40001,size={size},df"),
        expects=[
            expect(f"{node} drops it: fragmentation needed", "drop", origin="injected",
                   node=node, reason=_starts("fragmentation needed")),
            expect(f"{node} tells {src} with ICMP 'fragmentation needed'", "deliver",
                   origin="icmp-error", to=f"pod {src}"),
        ]))
    return run


def clusterip(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    client, service = "default/client", "shop/backend"
    svc = emu.model.service("shop", "backend")
    vip = f"{svc.cluster_ip}:9090"
    backends = ready_endpoints(emu, service)
    pkt = syn(str(svc.cluster_ip), 9090)
    run = StepRun(emu, ctx.shown)
    eps, ep_lines = endpoint_facts(emu, service)
    tr = emu.send(pkt, src=client)
    ct, lines = conntrack_state(emu)
    run.exchanges.append(Exchange(
        f"{client} connects to the ClusterIP of {service} ({vip})",
        [tr], crafted=scapy_text(pkt), rerun=trace_args(ctx, client, service),
        before=[f"the endpoints of {service} (its EndpointSlices):", *ep_lines],
        notes=["conntrack after the exchange:", *lines], extra_facts=ct + eps,
        expects=[
            expect(f"DNAT to a backend of {service}", "dnat", origin="injected",
                   service=f"{service}:grpc", frontend=vip, backend_pod=backends),
            expect("conntrack holds the translated connection", "conntrack",
                   original_dst=vip, reply_src=_has(":9090")),
            expect("the reply is un-DNATed: the client sees the ClusterIP answer",
                   "undnat", origin="answer", service=f"{service}:grpc"),
            expect("the connection is established", "verdict", reachable="yes"),
        ]))
    from scapy.layers.inet import IP, TCP

    ack = IP(dst=str(svc.cluster_ip), ttl=64) / TCP(sport=40000, dport=9090, flags="A",
                                                   seq=1001)
    chosen = next(f.get("backend") for f in tr_facts(tr) if f.kind == "dnat")
    run.exchanges.append(Exchange(
        "the client's next segment of the same connection",
        [emu.send(ack, src=client)], crafted=scapy_text(ack), rerun=None,
        rerun_note="(follows the first exchange's conntrack entry: run both from Python)",
        expects=[
            expect("conntrack reuses the translation: the same backend, no new choice",
                   "ct-reuse", origin="injected", backend=chosen),
            expect("no new DNAT decision", "dnat", origin="injected", absent=True),
        ]))
    return run


def tr_facts(tr: Any) -> list[Fact]:
    from kemu.frontend.tour import facts

    return facts(tr)


def endpoints_unready(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    client, service = "default/client", "default/web"
    pods = _pods(emu, "default", app="web")
    gone, kept = pods[0], pods[1]
    run = StepRun(emu, ctx.shown)
    before, lines = endpoint_facts(emu, service)
    vip = str(emu.model.service("default", "web").cluster_ip)
    pkt = syn(vip, 80)
    run.exchanges.append(Exchange(
        f"{client} connects to {service} while both pods are ready",
        [emu.send(pkt, src=client)], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, client, service),
        before=[f"before: the EndpointSlice of {service}", *lines], extra_facts=before,
        expects=[
            expect(f"both pods are ready endpoints of {service}", "endpoint", pod=gone,
                   ready="true"),
            expect("DNAT to one of the ready endpoints", "dnat", origin="injected",
                   backend_pod=ready_endpoints(emu, service)),
        ]))
    ns, _, name = gone.partition("/")
    emu.model.set_pod_ready(ns, name, False)
    after, lines = endpoint_facts(emu, service)
    traces = [emu.send(syn(vip, 80, sport), src=client) for sport in range(41000, 41006)]
    run.exchanges.append(Exchange(
        f"{gone} becomes unready; {client} opens six new connections",
        traces, crafted=f"{scapy_text(syn(vip, 80, 41000))}, sport 41000..41005",
        rerun=None, rerun_note=f"(in Python: emu.model.set_pod_ready({ns!r}, {name!r}, "
                               "False), then send)",
        before=[f"after {gone} became unready: the EndpointSlice of {service}", *lines],
        extra_facts=after,
        expects=[
            expect(f"the EndpointSlice controller marks {gone} not ready", "endpoint",
                   pod=gone, ready="false"),
            expect(f"new connections go to {kept}", "dnat", origin="injected",
                   backend_pod=kept),
            expect(f"no new connection goes to {gone}", "dnat", origin="injected",
                   backend_pod=gone, absent=True),
        ]))
    return run


def dns(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    client, name = "default/client", "backend.shop"
    res = emu.dig(client, name)
    svc = emu.model.service("shop", "backend")
    zone = emu.model.config.dns_domain
    found = [fact("dns", qname=q.qname, status=q.status, server=q.server,
                  answered_by=q.answered_by,
                  answers=",".join(a.value for a in (q.message.answers if q.message else [])))
             for q in res.queries]
    notes = [f"resolv.conf of {client}:", *(f"    {ln}" for ln in res.resolv_conf.splitlines()),
             "queries:", *(f"    {q.qname} {q.qtype} to {q.server}: {q.status}"
                           + (f" ({', '.join(a.value for a in q.message.answers)})"
                              if q.message and q.message.answers else "")
                           for q in res.queries)]
    run = StepRun(emu, ctx.shown)
    run.exchanges.append(Exchange(
        f"{client} looks up {name!r} as its resolver does",
        [tr for q in res.queries for tr in q.traces],
        crafted="emu.dig('default/client', 'backend.shop')  # one DNS query packet per "
                "search-list candidate",
        rerun=["dig", "-f", ctx.shown, "-S", client, name], before=notes, extra_facts=found,
        expects=[
            expect("the search list comes first: backend.shop.default.svc is not a name "
                   "(NXDOMAIN)", "dns", qname=f"{name}.default.svc.{zone}.", status="NXDOMAIN"),
            expect(f"{name}.svc.{zone} answers the ClusterIP of shop/backend", "dns",
                   qname=f"{name}.svc.{zone}.", status="NOERROR", answers=str(svc.cluster_ip)),
            expect("the query to kube-dns's ClusterIP is DNATed to a CoreDNS pod", "dnat",
                   origin="injected", service="kube-system/kube-dns:dns",
                   backend_pod=ready_endpoints(emu, "kube-system/kube-dns")),
            expect("the answer comes back from the ClusterIP (un-DNATed)", "undnat",
                   origin="answer", service="kube-system/kube-dns:dns"),
        ]))
    return run


def nodeport(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    service = "shop/frontend"
    backends = ready_endpoints(emu, service)
    busy = {_node_of(emu, p) for p in backends}
    node = next((n.name for n in emu.model.nodes if n.name not in busy),
                emu.model.nodes[0].name)
    ip = _node_ip(emu, node)
    port = emu.model.service("shop", "frontend").ports[0].node_port
    pkt = syn(ip, port)
    run = StepRun(emu, ctx.shown)
    run.exchanges.append(Exchange(
        f"the external host client connects to {node}'s NodePort {ip}:{port} "
        "(externalTrafficPolicy Cluster)",
        [emu.send(pkt, src="ext/client")], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, "ext/client", f"{ip}:{port}"),
        expects=[
            expect(f"{node} DNATs it to a backend of {service}", "dnat", origin="injected",
                   node=node, type="NodePort", backend_pod=backends),
            expect(f"{node} masquerades it (the backend is on another node)", "snat",
                   origin="injected", node=node, source=ip),
            expect(f"the pod sees {node}'s address, not the client's: the source is lost",
                   "deliver", origin="injected", source=_starts(f"{ip}:")),
            expect("the connection is established", "verdict", reachable="yes"),
        ]))
    return run


def loadbalancer_local(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    svc = emu.model.service("default", "web")
    lb = str(svc.load_balancer_ips[0])
    pod = _pods(emu, "default", app="web")[0]
    client = next(h for h in emu.model.config.external_hosts if h.name == "client")
    run = StepRun(emu, ctx.shown)
    pkt = syn(lb, 80)
    run.exchanges.append(Exchange(
        f"the external host client connects to the LoadBalancer address {lb}:80 "
        "(externalTrafficPolicy Local)",
        [emu.send(pkt, src="ext/client")], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, "ext/client", f"{lb}:80"),
        expects=[
            expect(f"the node with the ready endpoint ({_node_of(emu, pod)}) takes it and "
                   "DNATs it", "dnat", origin="injected", node=_node_of(emu, pod),
                   type="LoadBalancer", backend_pod=pod),
            expect("no masquerade", "snat", absent=True),
            expect(f"{pod} sees the client's own address {client.ip}: the source is kept",
                   "deliver", origin="injected", to=f"pod {pod}",
                   source=f"{client.ip}:40000"),
            expect("the connection is established", "verdict", reachable="yes"),
        ]))
    idle = next(n for n in emu.model.nodes if n.name != _node_of(emu, pod))
    port = svc.ports[0].node_port
    pkt = syn(str(idle.internal_ip), port)
    run.exchanges.append(Exchange(
        f"the same client tries the NodePort of {idle.name}, which has no local endpoint",
        [emu.send(pkt, src="ext/client")], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, "ext/client", f"{idle.internal_ip}:{port}"),
        expects=[
            expect(f"{idle.name} drops it: no local endpoints (S-9)", "drop",
                   origin="injected", node=idle.name, reason=_starts("no local endpoints")),
            expect("the connection fails", "verdict", reachable="no"),
        ]))
    return run


def egress(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    client = "default/client"
    node = _node_of(emu, client)
    dst = "93.184.216.34"  # an address outside every network of the cluster
    pkt = syn(dst, 443)
    run = StepRun(emu, ctx.shown)
    run.exchanges.append(Exchange(
        f"{client} connects to {dst}:443 on the internet",
        [emu.send(pkt, src=client)], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, client, f"{dst}:443"),
        rerun_note="exits 1: nothing outside the cluster answers",
        expects=[
            expect(f"{node} routes it to its default gateway", "route", origin="injected",
                   node=node, route=_starts("route default via")),
            expect(f"{node} masquerades it to its own address", "snat", origin="injected",
                   node=node, source=_node_ip(emu, node)),
            expect("it leaves the cluster through the gateway", "left", origin="injected",
                   destination=f"{dst}:443"),
        ]))
    return run


def networkpolicy(ctx: Ctx) -> StepRun:
    emu = ctx.load()
    client = "default/client"
    dst = _pods(emu, "shop", app="backend")[0]
    run = StepRun(emu, ctx.shown)
    pkt = syn(_ip(emu, dst), 9090)
    run.exchanges.append(Exchange(
        f"{client} connects to {dst} on its grpc port 9090",
        [emu.send(pkt, src=client)], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, client, f"{dst}:9090"),
        expects=[
            expect("ingress allowed by shop/backend-grpc", "policy-allow", origin="injected",
                   pod=dst, direction="ingress", policy="shop/backend-grpc"),
            expect("the connection is established", "verdict", reachable="yes"),
        ]))
    pkt = syn(_ip(emu, dst), 8080, 40001)
    run.exchanges.append(Exchange(
        f"{client} tries port 8080 of the same pod",
        [emu.send(pkt, src=client)], crafted=scapy_text(pkt),
        rerun=trace_args(ctx, client, f"{dst}:8080", "-p", "tcp,sport=40001"),
        rerun_note="exits 1: denied",
        expects=[
            expect(f"ingress of {dst} denied: no rule of its policies allows port 8080",
                   "policy-deny", origin="injected", pod=dst, direction="ingress"),
            expect("the packet is dropped, never delivered", "deliver", origin="injected",
                   to=f"pod {dst}", absent=True),
            expect("the connection fails", "verdict", reachable="no"),
        ]))
    return run


class _ToService:
    """A CNI step's setup: default/a connects to the Service default/web, whose first ready
    endpoint runs on another node (the bundled CNI clusters are made so)."""

    def __init__(self, ctx: Ctx) -> None:
        self.emu = emu = ctx.load()
        self.src, self.service = "default/a", "default/web"
        svc = emu.model.service("default", "web")
        self.backend = sorted(ready_endpoints(emu, self.service))[0]
        self.node, self.dnode = _node_of(emu, self.src), _node_of(emu, self.backend)
        self.pkt = syn(str(svc.cluster_ip), 80)
        self.run = StepRun(emu, ctx.shown)


def cni_flannel(ctx: Ctx) -> StepRun:
    to = _ToService(ctx)
    emu, src, service, backend, node, dnode, pkt, run = (
        to.emu, to.src, to.service, to.backend, to.node, to.dnode, to.pkt, to.run)
    run.exchanges.append(Exchange(
        f"{src} on {node} connects to the Service {service}; its pod {backend} runs on "
        f"{dnode}",
        [emu.send(pkt, src=src)], crafted=scapy_text(pkt), rerun=trace_args(ctx, src, service),
        expects=[
            expect(f"kube-proxy on {node} DNATs to {backend} before routing", "dnat",
                   origin="injected", node=node, backend_pod=backend),
            expect(f"flannel carries it to {dnode} in VXLAN (VNI 1)", "encap",
                   origin="injected", node=node, remote=dnode, vni="1"),
            expect(f"the answer is un-DNATed on {node}, the client's node", "undnat",
                   origin="answer", node=node),
            expect("the connection is established", "verdict", reachable="yes"),
        ]))
    return run


def cni_kube_router(ctx: Ctx) -> StepRun:
    """kube-router (``kemu/compiler/kube_router.py``, examples/cni/kube-router: overlayType
    full): IPVS at local input instead of kube-proxy's PREROUTING DNAT, IP-in-IP between
    the nodes, kube-bridge for the pods."""
    emu = ctx.load()
    src, service = "default/client", "default/web"
    svc = emu.model.service("default", "web")
    node = _node_of(emu, src)
    pkt = syn(str(svc.cluster_ip), 80)
    run = StepRun(emu, ctx.shown)
    trace = emu.send(pkt, src=src)
    backend = next((dict(f.fields)["backend_pod"] for f in facts(trace) if f.kind == "dnat"),
                   "")
    dnode = _node_of(emu, backend) if backend else "?"
    remote = dnode != node
    expects = [
        expect(f"the pod's frame crosses {node}'s kube-bridge", "hop", origin="injected",
               device=f"{node}/kube-bridge"),
        expect(f"IPVS on {node} picks a pod of {service} at local input (no iptables DNAT)",
               "dnat", origin="injected", node=node, by="ipvs", service=_has(service)),
        expect("the answer comes back from the Service's address", "verdict",
               reachable="yes"),
    ]
    if remote:
        expects[2:2] = [
            expect(f"{node} sends it to {dnode} in IP-in-IP (protocol 4)", "ipip-encap",
                   origin="injected", node=node, remote=dnode),
            expect(f"{dnode} takes the outer header off", "ipip-decap", origin="injected",
                   node=dnode),
        ]
    run.exchanges.append(Exchange(
        f"{src} on {node} connects to the Service {service}; IPVS chooses the pod",
        [trace], crafted=scapy_text(pkt), rerun=trace_args(ctx, src, service),
        expects=expects))
    return run


def cni_cilium(ctx: Ctx) -> StepRun:
    """Cilium (``kemu/compiler/cilium.py``, examples/cni/cilium: tunnel mode, the kube-proxy
    replacement): the socket LB translates the ClusterIP before the packet leaves the pod,
    the pod's lxc device instead of a bridge, cilium_vxlan between the nodes with the
    source's security identity as the VNI, the eBPF program named at each hop."""
    from kemu.compiler.cilium import pod_identities

    emu = ctx.load()
    src, service = "default/client", "default/web"
    svc = emu.model.service("default", "web")
    node = _node_of(emu, src)
    pkt = syn(str(svc.cluster_ip), 80)
    run = StepRun(emu, ctx.shown)
    trace = emu.send(pkt, src=src)
    got = next((dict(f.fields) for f in facts(trace) if f.kind == "deliver"
                and f.origin == "injected"), {})
    backend = got.get("to", "").removeprefix("pod ")
    dnode = _node_of(emu, backend) if backend else "?"
    ident = pod_identities(emu.model)[[p.key for p in emu.model.pods].index(src)]
    expects = [
        expect(f"the pod's frame enters {node} at its lxc device (cil_from_container), no "
               "bridge", "hop", origin="injected", device=_starts(f"{node}/lxc"),
               direction="in"),
        expect("no DNAT on the way: the socket LB addressed the packet to the backend in "
               "the pod", "dnat", origin="injected", absent=True),
        expect(f"cilium_vxlan carries it to {dnode} with the client's identity {ident} as "
               "the VNI", "encap", origin="injected", node=node, remote=dnode, vni=str(ident)),
        expect(f"{dnode} takes the identity back from the VNI", "decap", origin="injected",
               node=dnode, vni=str(ident)),
        expect(f"{dnode} routes it by the pod's /32 to its lxc device", "route",
               origin="injected", node=dnode, route=_has("/32 dev lxc")),
        expect(f"the answer reaches {src} from the backend's own address (no un-DNAT)",
               "deliver", origin="answer", to=f"pod {src}", source=got.get("destination", "?")),
        expect("the connection is established", "verdict", reachable="yes"),
    ]
    run.exchanges.append(Exchange(
        f"{src} on {node} connects to the Service {service}; the socket LB picks {backend} "
        f"on {dnode}", [trace], crafted=scapy_text(pkt), rerun=trace_args(ctx, src, service),
        expects=expects))
    return run


def cni_antrea(ctx: Ctx) -> StepRun:
    """Antrea (``kemu/compiler/antrea.py``, examples/cni/antrea: encap, Geneve): br-int's
    pipeline table by table, AntreaProxy's DNAT in OVS at the client's node, Geneve between
    the nodes, the reply un-DNATed in OVS."""
    emu = ctx.load()
    src, service = "default/client", "default/web"
    svc = emu.model.service("default", "web")
    node = _node_of(emu, src)
    pkt = syn(str(svc.cluster_ip), 80)
    run = StepRun(emu, ctx.shown)
    trace = emu.send(pkt, src=src)
    backend = next((dict(f.fields)["backend_pod"] for f in facts(trace) if f.kind == "dnat"),
                   "")
    dnode = _node_of(emu, backend) if backend else "?"
    run.exchanges.append(Exchange(
        f"{src} on {node} connects to the Service {service}; AntreaProxy chooses the pod",
        [trace], crafted=scapy_text(pkt), rerun=trace_args(ctx, src, service),
        expects=[
            expect(f"{node}'s br-int classifies the frame by its in_port", "ovs-table",
                   origin="injected", node=node, table="Classifier"),
            expect("SpoofGuard checks the pod's own MAC and IP", "ovs-table",
                   origin="injected", node=node, table="SpoofGuard"),
            expect(f"AntreaProxy in {node}'s OVS DNATs to {backend} (EndpointDNAT)", "dnat",
                   origin="injected", node=node, backend_pod=backend),
            expect("L3Forwarding sends it towards the peer's pod CIDR", "ovs-table",
                   origin="injected", node=node, table="L3Forwarding"),
            expect(f"antrea-tun0 wraps it in Geneve (UDP 6081) to {dnode}", "ovs-encap",
                   origin="injected", node=node, remote=dnode, tunnel=_has("Geneve")),
            expect(f"the answer is un-DNATed in {node}'s OVS", "undnat", origin="answer",
                   node=node),
            expect("the answer comes back from the Service's address", "verdict",
                   reachable="yes"),
        ]))
    return run


def _cni_routed(ctx: Ctx, prefix: str, how: str) -> StepRun:
    """The routed CNIs (``kemu/compiler/cni_routed.py``): pod -> Service on another node
    through the pod's routed host veth (``prefix``: eni, azv), no bridge, no encapsulation."""
    to = _ToService(ctx)
    emu, src, service, backend, node, dnode, pkt, run = (
        to.emu, to.src, to.service, to.backend, to.node, to.dnode, to.pkt, to.run)
    run.exchanges.append(Exchange(
        f"{src} ({_ip(emu, src)}, an address of the node network) on {node} connects to the "
        f"Service {service}; its pod {backend} runs on {dnode}",
        [emu.send(pkt, src=src)], crafted=scapy_text(pkt), rerun=trace_args(ctx, src, service),
        expects=[
            expect(f"the pod's frame enters {node}'s stack at its routed veth {prefix}...",
                   "hop", origin="injected", device=_starts(f"{node}/{prefix}"),
                   direction="in"),
            expect(f"kube-proxy on {node} DNATs to {backend}", "dnat", origin="injected",
                   node=node, backend_pod=backend),
            expect(f"{node} reaches {backend} on the node network: {how}", "route",
                   origin="injected", node=node, route=_has(f"held by {dnode}'s eth0")),
            expect("no encapsulation", "encap", origin="injected", absent=True),
            expect(f"{dnode} routes it by the pod's /32 to its {prefix}... veth", "route",
                   origin="injected", node=dnode, route=_has(f"/32 dev {prefix}")),
            expect("the connection is established", "verdict", reachable="yes"),
        ]))
    return run


def cni_aws_vpc(ctx: Ctx) -> StepRun:
    return _cni_routed(ctx, "eni", "the ENI holding the address answers for it")


def cni_azure(ctx: Ctx) -> StepRun:
    return _cni_routed(ctx, "azv", "the VNet delivers to the node holding the address")


STEPS: list[Step] = [
    Step("pod-localhost", "Containers of one pod talk over localhost",
         "The containers of a pod share one network namespace, held by the pause container: "
         "one IP address, one loopback device, one port space. A container reaches its "
         "sidecar at localhost, and two containers cannot listen on the same port.",
         "examples/tour/pod-localhost", pod_localhost, "M-4"),
    Step("same-node", "Pod to pod on one node: the bridge learns",
         "Each pod's eth0 is one end of a veth pair whose other end is a port of the node's "
         "bridge cbr0. The bridge learns which MAC lives behind which port from the frames it "
         "sees (its forwarding database, FDB) and floods frames for MACs it does not know "
         "yet. This cluster starts cold: the FDB is empty, as on a just-booted node.",
         "examples/cluster", same_node, "L2-*, M-5", capture=True),
    Step("cross-node-host-gw", "Pod to pod across nodes: host-gw routes",
         "Each node owns a slice of the cluster CIDR (its pod CIDR). With flannel's host-gw "
         "backend every node has a route for every other node's pod CIDR via that node's "
         "address, so a packet crosses the node network unchanged.",
         "examples/cluster", cross_node_host_gw, "R-*"),
    Step("cross-node-vxlan", "Pod to pod across nodes: the VXLAN overlay",
         "With flannel's VXLAN backend the node network never sees pod addresses: flannel.1 "
         "wraps each packet in UDP (port 8472, VNI 1) addressed to the other node. The "
         "headers take 50 bytes, so the overlay's MTU is smaller than the uplink's.",
         "examples/tour/vxlan", cross_node_vxlan, "OV-1, L2-2"),
    Step("clusterip", "Pod to a Service's ClusterIP",
         "A ClusterIP belongs to no interface. kube-proxy's iptables rules match it, pick "
         "one of the Service's ready endpoints and rewrite the destination (DNAT); "
         "conntrack remembers the choice, so the rest of the connection goes to the same "
         "pod and the replies get the ClusterIP back as their source.",
         "examples/cluster", clusterip, "S-*"),
    Step("endpoints-unready", "A Service's endpoints follow readiness",
         "The EndpointSlice controller lists a Service's pods with their readiness; "
         "kube-proxy sends new connections only to ready ones. Here a pod becomes unready "
         "while the cluster runs.",
         "examples/tour/readiness", endpoints_unready, "S-12"),
    Step("dns", "A name looked up from a pod",
         "A pod's /etc/resolv.conf names kube-dns's ClusterIP and a search list. A short "
         "name is tried with each search domain first, each try a DNS query packet to the "
         "ClusterIP, DNATed to a CoreDNS pod like any Service traffic.",
         "examples/cluster", dns, "D-10"),
    Step("nodeport", "From outside through a NodePort (externalTrafficPolicy Cluster)",
         "A NodePort Service opens its port on every node. With externalTrafficPolicy "
         "Cluster any node takes the traffic and may send it to a pod on another node; it "
         "then masquerades the packet so that the reply comes back through it.",
         "examples/cluster", nodeport, "S-*"),
    Step("loadbalancer-local", "From outside through a LoadBalancer "
         "(externalTrafficPolicy Local)",
         "With externalTrafficPolicy Local only nodes running a ready endpoint take the "
         "Service's external traffic, and they hand it to their local pod without "
         "masquerading: the pod sees the client's address. Other nodes drop it.",
         "examples/tour/lb-local", loadbalancer_local, "S-9"),
    Step("egress", "From a pod to the internet",
         "Pod addresses mean nothing outside the cluster. A packet leaving the pod network "
         "is masqueraded to its node's address (flannel's ipMasq) before it goes out "
         "through the gateway.",
         "examples/cluster", egress, "M-5"),
    Step("networkpolicy", "NetworkPolicy: allowed and denied",
         "A pod selected by a NetworkPolicy with Ingress in its policyTypes accepts only "
         "the connections some rule allows. In examples/cluster the backend pods accept "
         "only their grpc port.",
         "examples/cluster", networkpolicy, "P-1, P-2"),
    Step("cni-flannel", "CNI flannel: a pod -> Service packet",
         "flannel (here its VXLAN backend) connects the nodes; kube-proxy translates "
         "Services on the client's node before flannel carries the packet.",
         "examples/tour/vxlan", cni_flannel, "OV-1"),
    Step("cni-kube-router", "CNI kube-router: a pod -> Service packet",
         "kube-router puts pods on kube-bridge, learns the other nodes' pod CIDRs over BGP, "
         "and (with overlayType full) sends pod traffic between nodes in IP-in-IP tunnels. "
         "Services are IPVS virtual servers: every ClusterIP is held on the dummy device "
         "kube-dummy-if, so a packet to it is the node's own and IPVS translates it at local "
         "input, not in iptables PREROUTING as kube-proxy does.",
         "examples/cni/kube-router", cni_kube_router, "S-*"),
    Step("cni-cilium", "CNI Cilium: a pod -> Service packet",
         "Cilium has no bridge: each pod's veth ends on the node in an lxc device carrying "
         "eBPF programs (cil_from_container, cil_to_container), and the node's router IP "
         "sits on cilium_host. In tunnel mode the other nodes' pods are reached over "
         "cilium_vxlan, and the VXLAN header carries the sender's security identity as its "
         "VNI, which the receiving node's policy uses. With the kube-proxy replacement the "
         "socket LB translates a ClusterIP when the pod connects: the packet leaves the pod "
         "already addressed to a backend, and the answer comes back from it.",
         "examples/cni/cilium", cni_cilium, "OV-1, S-*"),
    Step("cni-antrea", "CNI Antrea: a pod -> Service packet",
         "Antrea attaches pods to the Open vSwitch bridge br-int, which forwards by its "
         "pipeline's flows, table by table (Classifier, SpoofGuard, ..., L3Forwarding, "
         "L2ForwardingCalc, Output), not by MAC learning. antrea-gw0 holds each node's pod "
         "gateway; between nodes antrea-tun0 carries pod traffic in Geneve (UDP 6081). "
         "AntreaProxy translates a pod's Service connection inside OVS on the client's "
         "node, so the packet on the wire is already addressed to the chosen pod.",
         "examples/cni/antrea", cni_antrea, "S-*"),
    Step("cni-aws-vpc", "CNI AWS VPC CNI: a pod -> Service packet",
         "Pods take secondary addresses of their node's ENIs in the VPC subnet. A pod's "
         "eth0 holds its address as a /32 with a default route via 169.254.1.1, whose "
         "static ARP entry is the MAC of the host end of its veth (eni...); the node routes "
         "each pod's /32 to its veth. No bridge, no overlay: the VPC delivers a pod's "
         "address to the node whose ENI holds it. kube-proxy translates Services as usual.",
         "examples/cni/aws-vpc", cni_aws_vpc, "R-*, S-*"),
    Step("cni-azure", "CNI Azure CNI (transparent): a pod -> Service packet",
         "Pods take VNet addresses; each is behind a host veth (azv...) with proxy ARP on "
         "and a /32 route on its node, no bridge and no overlay. The VNet delivers a pod's "
         "address to its node. kube-proxy translates Services as usual.",
         "examples/cni/azure", cni_azure, "R-*, S-*"),
]


def coming() -> list[Coming]:
    """The steps not runnable yet: CNI modes not built (``cni.BUILT``), and built modes
    whose step is not written."""
    have = {s.name for s in STEPS}
    out = []
    for name in cni.NAMES:
        if f"cni-{name}" in have:
            continue
        why = ("built, but its tour step is not written yet" if name in cni.BUILT else
               f"the {name} datapath is not modelled yet, kemu.control.cni.BUILT")
        out.append(Coming(f"cni-{name}", f"CNI {name}: a pod -> Service packet", why))
    return out


def find(word: str) -> Step:
    """A step by number (1-based) or name; ``KemuError`` naming the choices otherwise."""
    if word.isdigit() and 1 <= int(word) <= len(STEPS):
        return STEPS[int(word) - 1]
    for s in STEPS:
        if s.name == word:
            return s
    for c in coming():
        if c.name == word:
            raise KemuError(f"tour step {word} is coming: {c.why}")
    raise KemuError(f"unknown tour step {word!r}: give 1..{len(STEPS)} or a name "
                    f"({', '.join(s.name for s in STEPS)})")


def run_step(step: Step, backend: str | None = None, shown: str | None = None) -> StepRun:
    """Run ``step`` on its bundled cluster; ``shown`` is how printed commands write the
    cluster's path (default: relative to the repository when the current directory is it,
    else absolute)."""
    path = ROOT / step.cluster
    if not path.exists():
        raise KemuError(f"tour step {step.name}: its cluster {path} is missing (the tour "
                        "runs from a clone of the repository)")
    if shown is None:
        here = Path.cwd().resolve()
        shown = step.cluster if here == ROOT else str(path)
    return step.run(Ctx(str(path), shown, backend))
