"""The topology and service-map picture of a cluster: the graph, as JSON, and its pages.

Owns what ``kemu topology`` (and ``kemu trace -o trace.html``) draw, independent of how:

- :func:`build_graph`: the compiled cluster (``Tables``, which devices each node has in its CNI
  mode: ``eth0``, the pod bridge ``cbr0``, ``flannel.1`` in VXLAN mode, OV-1) and the model
  (pods grouped by node and namespace, each on its veth pair, L2-1; Services with the ready
  endpoints of their EndpointSlices, S-3/S-11; the node network, its gateway and external
  hosts) -> a JSON-ready dict.
  ``hopTarget`` maps every interface name a hop can name to the element the page draws for it
  (a pod's ``eth0`` and ``lo``: the pod; ``<node>/local``: the node).
- :func:`flows_from_records`: Hubble-shaped flow log records (``kemu.io.flowlog``) -> flows.
  With ``--flow-format kemu`` a flow is one input frame (``kemu.frame``): its records in hop
  order, each with its decisions (the pcapng comments' texts); Hubble records without
  ``kemu`` are one flow each (their one interface is their one hop). A flow's verdict is
  ``DROPPED`` (with Hubble's ``drop_reason_desc``) if a copy was dropped, else ``TRANSLATED``
  when NAT rewrote it (S-4, S-7), else ``FORWARDED``.
  With ``-r`` (``kemu.frontend.topology_cmd.HopRecorder``) a flow's hops are instead every
  hop the replay recorded for its frame (interface, direction, the pcapng comment's
  decisions), the records' verdicts on the hops they name.
- :func:`flows_from_trace`: a ``kemu trace``'s packets (the traced one and its answers) ->
  flows with every hop the datapath recorded, in order.
- :func:`service_map`: flows -> edges between workloads and Services, weighted by flow counts
  per verdict (Hubble UI's service map). A pod counts as its workload (:func:`workload_of`):
  the controller that owns it (Deployment, StatefulSet, DaemonSet, Job, ReplicaSet,
  ReplicationController), a Deployment's pods via their ReplicaSet ``<deployment>-<hash>``
  (the pod's ``pod-template-hash`` label names the hash, as the Deployment controller sets
  it); a bare pod is its own workload; nodes and external hosts are themselves.
- :func:`render_html`: one self-contained page (the vendored Cytoscape.js, its license
  notice, the page's script and style and the graph, all inlined); :func:`render_svg`: a
  static, deterministic picture of the same graph in a layered layout of its own.

NetworkPolicy is not drawn: its verdicts show on a flow's hops (replayed or traced).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from importlib import resources
from ipaddress import IPv4Address
from typing import Any
from xml.sax.saxutils import escape

from kemu.dataplane import codes as C
from kemu.dataplane.tables import Tables
from kemu.errors import KemuError

__all__ = ["build_graph", "flows_from_records", "flows_from_trace", "read_flow_log",
           "preset_layout", "render_html", "render_svg", "service_map", "workload_of"]

COLLAPSE_ABOVE = 24
"""Above this many nodes the page opens with every node collapsed (one box each, its devices
and pods shown on a click), so that a 5,000-node cluster opens quickly."""
_DEVICE_KIND = {C.IF_NODE_ETH: "eth0", C.IF_BRIDGE: "bridge", C.IF_VTEP: "vtep",
                C.IF_VETH: "veth", C.IF_VETH_HOST: "veth", C.IF_IPIP: "vtep",
                C.IF_DUMMY: "dummy", C.IF_OVS_PORT: "veth", C.IF_OVS_GW: "bridge",
                C.IF_OVS_TUN: "vtep"}  # Antrea: br-int's ports (br-int itself: a bridge)
# what a tunnel device's line to eth0 says (flannel.1: VXLAN; kube-router's tun-<hash>: IPIP)
_TUNNEL = {C.IF_VTEP: "VXLAN", C.IF_IPIP: "IPIP"}


def _ip(value: int) -> str:
    return str(IPv4Address(int(value))) if int(value) else ""


def pod_id(key: str) -> str:
    return f"pod:{key}"


def service_id(namespace: str, name: str) -> str:
    return f"svc:{namespace}/{name}"


def workload_of(pod: Any) -> tuple[str, str] | None:
    """``(kind, name)`` of the workload that owns ``pod`` (a ``kemu.control.model.Pod``), or
    None for a bare pod. A ReplicaSet that a Deployment made is named ``<deployment>-<hash>``
    and its pods carry ``pod-template-hash: <hash>``: those pods belong to the Deployment; a
    ReplicaSet without that label is its own workload."""
    owner = pod.owner
    if owner is None:
        return None
    if owner.kind == "ReplicaSet":
        h = pod.labels.get("pod-template-hash", "")
        if h and owner.name.endswith(f"-{h}") and len(owner.name) > len(h) + 1:
            return "Deployment", owner.name[:-len(h) - 1]
    return owner.kind, owner.name


def workload_id(namespace: str, kind: str, name: str) -> str:
    return f"wl:{namespace}/{kind}/{name}"


def _mode(cfg: Any) -> str:
    """The datapath mode in words: flannel's backend (``host-gw``, ``vxlan``) or the CNI with
    its main option (``kube-router``, ``azure overlay``)."""
    if cfg.cni.name == "flannel":
        return str(cfg.mode)
    if cfg.cni.name == "azure":
        return f"azure {cfg.cni.get('mode')}"
    if cfg.cni.name == "kube-router":
        return f"kube-router, overlay {cfg.cni.get('overlayType')}"
    return str(cfg.cni.name)


def build_graph(model: Any, t: Tables) -> dict[str, Any]:
    """The cluster as the page draws it (see the module docstring). ``model`` is the
    ``kemu.control.cluster.Cluster``, ``t`` its compiled tables."""
    cfg = model.config
    hop_target: dict[str, str] = {}
    ip_target: dict[str, str] = {}
    nodes: list[dict[str, Any]] = []
    devices: dict[int, list[dict[str, Any]]] = defaultdict(list)
    pods_of: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    node_index = {name: i for i, name in enumerate(t.node_name)}
    veth_of_pod: dict[int, int] = {}
    workloads: dict[str, dict[str, Any]] = {}
    workload_of_pod: dict[str, str] = {}
    kinds = t.if_kind.tolist()
    owners = t.if_owner.tolist()
    if_nodes = t.if_node.tolist()
    if_node: dict[str, str] = {}
    for i, kind in enumerate(kinds):
        name = t.if_name[i]
        if if_nodes[i] >= 0:
            if_node[name] = t.node_name[if_nodes[i]]
        if kind in (C.IF_POD_ETH, C.IF_POD_LO):
            hop_target[name] = pod_id(t.pod_key[owners[i]])
        elif kind == C.IF_NODE_LOCAL:
            hop_target[name] = f"node:{t.node_name[if_nodes[i]]}"
        elif kind in _DEVICE_KIND:
            hop_target[name] = name
            if kind in (C.IF_VETH, C.IF_VETH_HOST) or (kind == C.IF_OVS_PORT
                                                        and owners[i] >= 0):
                veth_of_pod[owners[i]] = i  # a bridge port, a routed veth, an OVS port
            else:
                if t.if_ip[i]:  # the node's own address on its pod network (masquerade)
                    ip_target.setdefault(_ip(t.if_ip[i]), f"node:{t.node_name[if_nodes[i]]}")
                dev = {"id": name, "kind": "bridge" if kind == C.IF_OVS_PORT else
                       _DEVICE_KIND[kind],
                       "label": t.if_kernel_name[i]
                       + (f" {_ip(t.if_ip[i])}" if t.if_ip[i] else "")}
                if kind in _TUNNEL:
                    dev["tunnel"] = _TUNNEL[kind]
                elif kind == C.IF_OVS_TUN:  # Antrea's antrea-tun0
                    dev["tunnel"] = {C.ANTREA_VXLAN: "VXLAN", C.ANTREA_GRE: "GRE"}.get(
                        t.ovs_tunnel, "Geneve")
                devices[if_nodes[i]].append(dev)
        else:  # external hosts and the gateway, on the node network
            hop_target[name] = name
    pod_index = {key: i for i, key in enumerate(t.pod_key)}
    for pod in sorted(model.pods, key=lambda p: (p.node_name, p.namespace, p.name)):
        key = f"{pod.namespace}/{pod.name}"
        n = node_index.get(pod.node_name)
        if n is None:
            continue
        i = pod_index.get(key, -1)
        veth = veth_of_pod.get(i)
        entry: dict[str, Any] = {"id": pod_id(key), "name": pod.name, "ip": str(pod.ip)}
        if pod.host_network:
            entry["hostNetwork"] = True
        elif veth is not None:
            entry["veth"] = t.if_name[veth]
            entry["vethLabel"] = t.if_kernel_name[veth]
        if pod.owner is not None:
            entry["owner"] = f"{pod.owner.kind}/{pod.owner.name}"
        wl = workload_of(pod)
        if wl is not None:
            wid = workload_id(pod.namespace, *wl)
            w = workloads.setdefault(wid, {"id": wid, "namespace": pod.namespace,
                                           "kind": wl[0], "name": wl[1], "pods": []})
            w["pods"].append(pod_id(key))
            workload_of_pod[pod_id(key)] = wid
        pods_of[n][pod.namespace].append(entry)
        if not pod.host_network:
            ip_target[str(pod.ip)] = pod_id(key)
    model_nodes = {node.name: node for node in model.nodes}
    for n, name in enumerate(t.node_name):
        node = model_nodes.get(name)
        ip_target[_ip(t.node_ip[n])] = f"node:{name}"
        nodes.append({
            "name": name, "ip": _ip(t.node_ip[n]),
            "podCIDR": str(node.pod_cidr) if node is not None else "",
            "devices": devices.get(n, []),
            "namespaces": [{"name": ns, "pods": pods}
                           for ns, pods in sorted(pods_of.get(n, {}).items())]})
    services = []
    for svc in sorted(model.services, key=lambda s: (s.namespace, s.name)):
        sid = service_id(svc.namespace, svc.name)
        if svc.cluster_ip is not None:
            ip_target[str(svc.cluster_ip)] = sid
        services.append({
            "id": sid, "namespace": svc.namespace, "name": svc.name, "type": svc.type,
            "clusterIP": str(svc.cluster_ip) if svc.cluster_ip is not None else "None",
            "ports": [f"{p.port}/{p.protocol}" for p in svc.ports],
            "endpoints": [pod_id(k) for k in _ready_endpoints(model, svc)]})
    externals = []
    for i, name in enumerate(t.ext_name):
        iface = int(t.ext_if[i])
        ip = _ip(t.if_ip[iface])
        externals.append({"id": t.if_name[iface], "name": name, "ip": ip})
        ip_target[ip] = t.if_name[iface]
    gateway = None
    if t.gateway_if >= 0:
        gateway = {"id": t.if_name[t.gateway_if], "ip": _ip(t.gateway_ip)}
        ip_target[_ip(t.gateway_ip)] = gateway["id"]
    return {
        "cluster": cfg.name, "mode": _mode(cfg), "cni": cfg.cni.name,
        "network": {"cidr": str(cfg.node_network), "gateway": gateway, "externals": externals},
        "nodes": nodes, "services": services, "hopTarget": hop_target, "ipTarget": ip_target,
        "workloads": [workloads[k] for k in sorted(workloads)], "workloadOf": workload_of_pod,
        "ifNode": if_node,
        "collapsed": len(nodes) > COLLAPSE_ABOVE, "flows": [], "serviceMap": [],
        "title": f"kemu topology: {cfg.name} ({_mode(cfg)}, {len(nodes)} nodes, "
                 f"{sum(len(ns['pods']) for n in nodes for ns in n['namespaces'])} pods, "
                 f"{len(services)} Services)"}


def _ready_endpoints(model: Any, svc: Any) -> list[str]:
    """The pods behind a Service: the ready endpoints of its EndpointSlices (S-11; headless
    Services too: their slices list them though kube-proxy programs nothing for them)."""
    pods: list[str] = []
    for sl in model.endpoint_slices(svc):
        for ep in sl.endpoints:
            if ep.ready and ep.pod and ep.pod not in pods:
                pods.append(ep.pod)
    return pods


# ------------------------------------------------------------------------------ flows
def read_flow_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON Lines flow log; a bad line is a :class:`KemuError` naming the
    file and the line."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise KemuError(f"{os.fspath(path)}: line {n}: not JSON ({err.msg})") from None
                if not isinstance(rec, dict) or not isinstance(rec.get("flow"), dict):
                    raise KemuError(f"{os.fspath(path)}: line {n}: not a flow record (no "
                                    "'flow' object; kemu reads Hubble's JSON, as kemu replay "
                                    "--flows writes it)")
                records.append(rec["flow"])
    except UnicodeDecodeError:
        raise KemuError(f"{os.fspath(path)}: not a text file (a JSON Lines flow log "
                        "expected)") from None
    return records


def _endpoint_name(ep: dict | None, ip: str) -> str:
    if isinstance(ep, dict) and ep.get("pod_name"):
        return f"{ep.get('namespace', '')}/{ep['pod_name']}"
    return ip


def _l4_text(flow: dict) -> tuple[str, str, str]:
    l4 = flow.get("l4") or {}
    for proto, f in l4.items():
        if isinstance(f, dict):
            return proto, str(f.get("source_port", f.get("type", ""))), \
                str(f.get("destination_port", f.get("code", "")))
    return "", "", ""


def _verdict(verdicts: Iterable[str]) -> str:
    vs = set(verdicts)
    return "DROPPED" if "DROPPED" in vs else "TRANSLATED" if "TRANSLATED" in vs \
        else "FORWARDED"


def flows_from_records(records: list[dict], graph: dict[str, Any],
                       recorded: dict[int, list[dict[str, Any]]] | None = None
                       ) -> list[dict[str, Any]]:
    """Flow log records -> the page's flows (see the module docstring). With ``recorded``
    (``kemu topology -r``: frame number -> every hop the replay recorded for it, each with
    its interface, direction and decisions, as the pcapng holds them), a frame's hops are
    those, each with the verdict and drop reason of the records written there; a flow then
    comes from the element its first hop is on."""
    groups: dict[Any, list[dict]] = {}
    for n, rec in enumerate(records):
        kemu = rec.get("kemu")
        key = ("frame", kemu.get("frame")) if isinstance(kemu, dict) else ("record", n)
        groups.setdefault(key, []).append(rec)
    hop_target = graph["hopTarget"]
    flows = []
    for key, recs in groups.items():
        recs.sort(key=lambda r: (r.get("kemu") or {}).get("hop", 0))
        first = recs[0]
        ip = first.get("IP") or {}
        proto, sport, dport = _l4_text(first)
        src_ip, dst_ip = ip.get("source", ""), ip.get("destination", "")
        hops = []
        for r in recs:
            iface = (r.get("interface") or {}).get("name", "")
            hops.append({"iface": iface, "target": hop_target.get(iface, ""),
                         "node": r.get("node_name", ""), "verdict": r.get("verdict", ""),
                         "point": r.get("trace_observation_point", ""),
                         "reason": r.get("drop_reason_desc", ""),
                         "decisions": list((r.get("kemu") or {}).get("decisions", []))})
        origin = ""
        if recorded is not None and key[0] == "frame" and recorded.get(key[1]):
            hops = _recorded_hops(recorded[key[1]], hops, hop_target, graph["ifNode"])
            origin = hops[0]["target"]
            if not origin.startswith(("pod:", "node:")) and origin not in graph["ipTarget"] \
                    .values():
                origin = ""  # a device: the sender is what the addresses say
        verdict = _verdict(h["verdict"] for h in hops)
        reason = next((h["reason"] for h in hops if h["verdict"] == "DROPPED"), "")
        svc = next((r.get("destination_service") or r.get("source_service") for r in recs
                    if r.get("destination_service") or r.get("source_service")), None)
        service = f"{svc.get('namespace', '')}/{svc.get('name', '')}" if svc else ""
        dst = next((r.get("destination") for r in recs if r.get("destination")), None)
        flows.append({
            "id": len(flows), "frame": key[1] if key[0] == "frame" else None,
            "time": first.get("time", ""), "verdict": verdict, "reason": reason,
            "source": _endpoint_name(first.get("source"), src_ip),
            "destination": _endpoint_name(dst, dst_ip), "service": service,
            "summary": f"{src_ip}{':' + sport if sport else ''} -> "
                       f"{dst_ip}{':' + dport if dport else ''} {proto}".strip(),
            "reply": bool(first.get("is_reply")),
            "from": origin or _element(graph, first.get("source"), src_ip),
            "to": (service_id(*service.split("/", 1)) if service and not first.get("is_reply")
                   else _element(graph, dst, dst_ip)),
            "hops": hops})
    return flows


def _recorded_hops(recorded: list[dict[str, Any]], logged: list[dict[str, Any]],
                   hop_target: dict[str, str], if_node: dict[str, str]
                   ) -> list[dict[str, Any]]:
    """The recorded hops of a frame, each record of the flow log (in hop order) on the first
    recorded hop at its interface from the previous record's on: its verdict (the strongest
    there: dropped, translated, forwarded), drop reason and observation point."""
    rank = {"DROPPED": 3, "TRANSLATED": 2, "FORWARDED": 1}
    hops = [{"iface": h["iface"], "target": hop_target.get(h["iface"], ""),
             "node": if_node.get(h["iface"], ""), "direction": h["direction"], "verdict": "",
             "point": h["direction"], "reason": "", "decisions": list(h["decisions"])}
            for h in recorded]
    at = 0
    for rec in logged:
        k = next((i for i in range(at, len(hops)) if hops[i]["iface"] == rec["iface"]), None)
        if k is None:
            continue
        at = k
        h = hops[k]
        if rank.get(rec["verdict"], 0) > rank.get(h["verdict"], 0):
            h["verdict"], h["reason"] = rec["verdict"], rec["reason"]
            h["point"] = f'{h["direction"]} {rec["point"]}'.strip()
    for h in hops:  # where the log wrote nothing, what the decisions say
        if not h["verdict"] and any(d.startswith("DROP") for d in h["decisions"]):
            h["verdict"] = "DROPPED"
    return hops


def _element(graph: dict[str, Any], ep: dict | None, ip: str) -> str:
    if isinstance(ep, dict) and ep.get("pod_name"):
        return pod_id(f"{ep.get('namespace', '')}/{ep['pod_name']}")
    return graph["ipTarget"].get(ip, "")


def flows_from_trace(trace: Any, graph: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``kemu trace``'s packets (``Trace.to_dict()``) -> flows, one per packet, each with
    every hop in order and the decisions taken there."""
    flows = []
    data = trace.to_dict()
    hop_target = graph["hopTarget"]
    for n, p in enumerate(data["packets"]):
        hops = []
        for h in p["hops"]:
            decisions = h["decisions"]
            dropped = any(d.startswith("DROP") for d in decisions)
            hops.append({"iface": h["interface"], "target": hop_target.get(h["interface"], ""),
                         "node": h["interface"].split("/", 1)[0], "direction": h["direction"],
                         "verdict": "DROPPED" if dropped else "", "point": h["packet"],
                         "reason": "", "decisions": decisions})
        reasons = p["dropReasons"]
        translated = any(("DNAT" in d or "SNAT" in d or "masquerade" in d)
                         for h in hops for d in h["decisions"])
        verdict = "DROPPED" if reasons else "TRANSLATED" if translated else "FORWARDED"
        first = hops[0]["target"] if hops else ""
        last = hops[-1]["target"] if hops else ""
        flows.append({"id": n, "frame": n, "time": "", "verdict": verdict,
                      "reason": "; ".join(reasons), "source": p["origin"],
                      "destination": ", ".join(p["deliveredTo"]) or p["outcome"],
                      "service": "", "summary": hops[0]["point"] if hops else p["outcome"],
                      "reply": p["origin"] != "injected", "from": first, "to": last,
                      "hops": hops})
    return flows


def service_map(flows: list[dict[str, Any]], graph: dict[str, Any]) -> list[dict[str, Any]]:
    """Edges between workloads and Services (see the module docstring): (from, to) -> the
    flow count, the counts per verdict and the drop reasons seen. A request to a Service
    counts on the edge to the Service (S-4: the client addresses the ClusterIP) and on the
    edge from the Service to the workload of the pod that received it."""
    owner = graph["workloadOf"]
    edges: dict[tuple[str, str], dict[str, Any]] = {}

    def add(a: str, b: str, flow: dict) -> None:
        a, b = owner.get(a, a), owner.get(b, b)
        if not a or not b or a == b:
            return
        e = edges.setdefault((a, b), {"source": a, "target": b, "count": 0,
                                      "verdicts": {}, "reasons": []})
        e["count"] += 1
        e["verdicts"][flow["verdict"]] = e["verdicts"].get(flow["verdict"], 0) + 1
        if flow["reason"] and flow["reason"] not in e["reasons"]:
            e["reasons"].append(flow["reason"])

    for f in flows:
        add(f["from"], f["to"], f)
        if f["to"].startswith("svc:"):
            delivered = [h["target"] for h in f["hops"] if h["target"].startswith("pod:")
                         and h["verdict"] in ("FORWARDED", "")]
            for target in delivered[-1:]:
                if target != f["from"]:
                    add(f["to"], target, f)
    out = sorted(edges.values(), key=lambda e: (e["source"], e["target"]))
    for e in out:
        e["verdict"] = _verdict(e["verdicts"])
    return out


# ------------------------------------------------------------------------------ layout
_COL_W, _COL_GAP, _ROW, _BAND = 380, 70, 56, 110


def preset_layout(graph: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Positions of the page's childless elements for a 'preset' layout (the page's compound
    boxes wrap their children): the node network on top with its gateway and external hosts
    above it, the nodes side by side in a row (each one's devices on its first line, then its
    namespaces, each pod beside its veth), the service map's workloads in a band below and
    the Services in a band under them. Deterministic: the same graph, the same picture."""
    pos: dict[str, dict[str, float]] = {}
    nodes = graph["nodes"]
    width = max(1, len(nodes)) * (_COL_W + _COL_GAP) - _COL_GAP
    pos["net"] = {"x": width / 2, "y": 0.0}
    net = graph["network"]
    hosts = ([net["gateway"]["id"]] if net["gateway"] else []) + [e["id"] for e in
                                                                  net["externals"]]
    for k, h in enumerate(hosts):
        pos[h] = {"x": width / 2 + (k - (len(hosts) - 1) / 2) * 180, "y": -90.0}
    bottom = 0.0
    for i, n in enumerate(nodes):
        x0 = i * (_COL_W + _COL_GAP)
        pos[f"node:{n['name']}"] = {"x": x0 + _COL_W / 2, "y": 200.0}
        for k, d in enumerate(n["devices"]):
            pos[d["id"]] = {"x": x0 + 60 + k * 130, "y": 110.0}
        y = 110.0 + 40
        for ns in n["namespaces"]:
            y += 30  # the namespace box's title
            for p in ns["pods"]:
                y += _ROW
                pos[p["id"]] = {"x": x0 + _COL_W - 110, "y": y}
                if p.get("veth"):
                    pos[p["veth"]] = {"x": x0 + 70, "y": y}
            y += 20
        bottom = max(bottom, y)
    used = {e["source"] for e in graph["serviceMap"]} | {e["target"] for e in
                                                          graph["serviceMap"]}
    workloads = [w["id"] for w in graph["workloads"] if w["id"] in used]
    for band, ids in ((1, workloads), (2 if workloads else 1,
                                       [s["id"] for s in graph["services"]])):
        per = max(1, int(width // 230) + 1)
        for k, eid in enumerate(ids):
            pos[eid] = {"x": (k % per) * 230 + (width - min(len(ids), per) * 230 + 230) / 2,
                        "y": bottom + band * _BAND + (k // per) * 70}
        if ids:
            bottom += (len(ids) - 1) // per * 70
    return pos


# ------------------------------------------------------------------------------ pages
def _asset(name: str) -> str:
    return resources.files("kemu.frontend").joinpath("web", name).read_text(encoding="utf-8")


def _inline_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    text = json.dumps(data, separators=(",", ":"), sort_keys=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(graph: dict[str, Any]) -> str:
    """The self-contained page: everything inlined, nothing fetched."""
    page = _asset("page.tmpl")
    parts = {
        "/*@TITLE@*/": escape(graph["title"]),
        "/*@STYLE@*/": _asset("topology.css"),
        "/*@LICENSE@*/": _asset("vendor/cytoscape.LICENSE").replace("*/", "* /"),
        "/*@CYTOSCAPE@*/": _asset("vendor/cytoscape.min.js").replace("</script", "<\\/script"),
        "/*@DATA@*/": _inline_json({k: v for k, v in graph.items()
                                    if k not in ("hopTarget", "ipTarget", "workloadOf", "ifNode")}),
        "/*@APP@*/": _asset("topology.js"),
    }
    for key, value in parts.items():
        head, sep, tail = page.partition(key)
        if not sep:
            raise RuntimeError(f"web/page.tmpl: no {key}")
        page = head + value + tail
    return page


# SVG: a layered layout of the same graph (row 0 the node network, row 1 the nodes with their
# devices and pods, row 2 the Services with lines to their endpoints)
_W_NODE, _COLS, _LINE, _PAD = 340, 4, 16, 10
_COLOURS = {"eth0": "#4e79a7", "bridge": "#59a14f", "vtep": "#f28e2b", "veth": "#9c755f",
            "dummy": "#bab0ac"}


def render_svg(graph: dict[str, Any]) -> str:
    """A static picture of ``graph``: deterministic (the same graph gives the same bytes)."""
    out: list[str] = []
    pod_at: dict[str, tuple[float, float]] = {}
    nodes = graph["nodes"]
    cols = max(1, min(_COLS, len(nodes)))
    width = cols * (_W_NODE + 20) + 20
    y0 = 110
    heights = []
    for node in nodes:
        rows = 2 + sum(1 + len(ns["pods"]) for ns in node["namespaces"])
        heights.append(rows * _LINE + 3 * _PAD + 26)
    row_h = [max(heights[r * cols:(r + 1) * cols]) for r in range((len(nodes) + cols - 1)
                                                                   // cols)] or [0]
    body: list[str] = []
    y = y0
    for r, h in enumerate(row_h):
        for c in range(cols):
            k = r * cols + c
            if k >= len(nodes):
                break
            x = 20 + c * (_W_NODE + 20)
            body += _svg_node(nodes[k], x, y, heights[k], pod_at)
            body.append(f'<line x1="{x + 30}" y1="70" x2="{x + 30}" y2="{y}" class="wire"/>')
        y += h + 20
    services = graph["services"]
    svc_y = y + 30
    per_row = max(1, width // 200)
    svc_rows = (len(services) + per_row - 1) // per_row
    height = svc_y + svc_rows * 60 + 20
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
               f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">')
    out.append("<style>.wire{stroke:#888;stroke-width:1.5}.ep{stroke:#e15759;stroke-width:1;"
               "fill:none;opacity:.6}.box{fill:#f7f7f7;stroke:#555}.ns{fill:#fff;"
               "stroke:#bbb;stroke-dasharray:3 2}</style>")
    out.append(f'<text x="20" y="18" font-size="14" font-weight="bold">'
               f'{escape(graph["title"])}</text>')
    net = graph["network"]
    out.append(f'<line x1="20" y1="70" x2="{width - 20}" y2="70" stroke="#333" '
               f'stroke-width="4"/><text x="24" y="64">node network {escape(net["cidr"])}</text>')
    hosts = ([net["gateway"] | {"name": "gateway"}] if net["gateway"] else []) \
        + net["externals"]
    for i, h in enumerate(hosts):
        x = width - 20 - (i + 1) * 170
        out.append(f'<rect x="{x}" y="28" width="160" height="24" rx="4" class="box"/>'
                   f'<text x="{x + 6}" y="44">{escape(h["name"])} {escape(h["ip"])}</text>'
                   f'<line x1="{x + 80}" y1="52" x2="{x + 80}" y2="70" class="wire"/>')
    out += body
    for i, svc in enumerate(services):
        x = 20 + (i % per_row) * 200
        sy = svc_y + (i // per_row) * 60
        for ep in svc["endpoints"]:
            if ep in pod_at:
                px, py = pod_at[ep]
                out.append(f'<path d="M{x + 90},{sy} C{x + 90},{sy - 40} {px},{py + 30} '
                           f'{px},{py}" class="ep"/>')
        out.append(f'<rect x="{x}" y="{sy}" width="180" height="40" rx="14" fill="#fde9e9" '
                   f'stroke="#e15759"/><text x="{x + 8}" y="{sy + 16}" font-weight="bold">'
                   f'{escape(svc["namespace"])}/{escape(svc["name"])}</text>'
                   f'<text x="{x + 8}" y="{sy + 31}">{escape(svc["type"])} '
                   f'{escape(svc["clusterIP"])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_node(node: dict, x: int, y: int, h: int,
              pod_at: dict[str, tuple[float, float]]) -> list[str]:
    out = [f'<rect x="{x}" y="{y}" width="{_W_NODE}" height="{h}" rx="6" class="box"/>',
           f'<text x="{x + 8}" y="{y + 16}" font-weight="bold">{escape(node["name"])} '
           f'{escape(node["ip"])} pods {escape(node["podCIDR"])}</text>']
    dx = x + 8
    for dev in node["devices"]:
        w = 8 + 6 * len(dev["label"])
        out.append(f'<rect x="{dx}" y="{y + 24}" width="{w}" height="18" rx="3" '
                   f'fill="{_COLOURS[dev["kind"]]}"/><text x="{dx + 4}" y="{y + 37}" '
                   f'fill="#fff">{escape(dev["label"])}</text>')
        dx += w + 6
    cy = y + 24 + 2 * _LINE + _PAD
    for ns in node["namespaces"]:
        nh = (1 + len(ns["pods"])) * _LINE
        out.append(f'<rect x="{x + 6}" y="{cy - 12}" width="{_W_NODE - 12}" height="{nh + 4}" '
                   f'class="ns"/><text x="{x + 10}" y="{cy}" fill="#777">namespace '
                   f'{escape(ns["name"])}</text>')
        for k, pod in enumerate(ns["pods"]):
            py = cy + (k + 1) * _LINE
            via = "hostNetwork" if pod.get("hostNetwork") else pod.get("vethLabel", "")
            out.append(f'<circle cx="{x + 18}" cy="{py - 4}" r="4" fill="#76b7b2"/>'
                       f'<text x="{x + 26}" y="{py}">{escape(pod["name"])} '
                       f'{escape(pod["ip"])} ({escape(via)})</text>')
            pod_at[pod["id"]] = (x + 18, py + 2)
        cy += nh + 8
    return out
