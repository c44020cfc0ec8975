"""``kemu topology`` and ``kemu trace -o trace.html``: the graph (devices per CNI mode, pods on
their veths by node and namespace, Services and their ready endpoints, S-3/S-11; flows from a
flow log or a replay), the HTML and SVG outputs, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from kemu.bench.workloads import synthetic_cluster
from kemu.compiler.compile import compile_cluster
from kemu.control.cluster import load_cluster
from kemu.frontend import topology
from kemu.frontend.cli import main
from kemu.frontend.topology_cmd import replay_records

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster"
CAPTURE = ROOT / "examples" / "capture.pcap"


def _graph(source):  # noqa: ANN001, ANN202
    model = load_cluster(source)
    return model, topology.build_graph(model, compile_cluster(model))


def _page_data(html: str) -> dict:
    m = re.search(r'<script id="kemu-data" type="application/json">(.*?)</script>', html, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_graph_of_the_example() -> None:
    model, g = _graph(str(EXAMPLE))
    assert [n["name"] for n in g["nodes"]] == ["node1", "node2", "node3"]
    assert g["mode"] == "host-gw"
    for n in g["nodes"]:  # host-gw: the uplink and the pod bridge, no tunnel device
        assert [d["kind"] for d in n["devices"]] == ["eth0", "bridge"]
        assert n["devices"][0]["id"] == f"{n['name']}/eth0"
    pods = {p["id"]: (n["name"], ns["name"], p) for n in g["nodes"] for ns in n["namespaces"]
            for p in ns["pods"]}
    assert set(pods) == {f"pod:{p.namespace}/{p.name}" for p in model.pods}
    for pod in model.pods:
        node, ns, entry = pods[f"pod:{pod.namespace}/{pod.name}"]
        assert (node, ns, entry["ip"]) == (pod.node_name, pod.namespace, str(pod.ip))
        assert entry["veth"].startswith(f"{node}/veth-")  # L2-1: each pod on its veth pair
        assert g["hopTarget"][f"{pod.namespace}/{pod.name}/eth0"] == entry["id"]
    svcs = {s["id"]: s for s in g["services"]}
    assert set(svcs) == {f"svc:{s.namespace}/{s.name}" for s in model.services}
    assert svcs["svc:shop/legacy"]["endpoints"] == []  # no ready endpoint (S-11)
    backend = model.service("shop", "backend")
    ready = sorted(f"pod:{e.pod}" for s in model.endpoint_slices(backend)
                   for e in s.endpoints if e.ready and e.pod)
    assert sorted(svcs["svc:shop/backend"]["endpoints"]) == ready and ready
    assert g["network"]["gateway"] == {"id": "gateway/eth0", "ip": "172.18.0.1"}
    assert [e["name"] for e in g["network"]["externals"]] == ["client", "db"]
    assert not g["collapsed"]


def test_vxlan_nodes_have_the_tunnel_device() -> None:
    _, g = _graph(synthetic_cluster(3, 12, 3, mode="vxlan"))
    for n in g["nodes"]:  # OV-1: flannel.1 beside eth0 and cbr0
        assert [d["kind"] for d in n["devices"]] == ["eth0", "bridge", "vtep"]
        assert g["hopTarget"][f"{n['name']}/flannel.1"] == f"{n['name']}/flannel.1"


def test_cni_modes_draw_their_own_devices() -> None:
    """Every built CNI mode (docs/CNI.md): kube-router's kube-bridge, kube-dummy-if and IPIP
    tunnels; the routed CNIs' host veths (no bridge), each pod on its own."""
    model, g = _graph(str(ROOT / "examples" / "cni" / "kube-router"))
    assert g["mode"] == "kube-router, overlay full" and g["cni"] == "kube-router"
    for n in g["nodes"]:
        kinds = [(d["kind"], d.get("tunnel")) for d in n["devices"]]
        assert ("bridge", None) in kinds and ("dummy", None) in kinds
        assert kinds.count(("vtep", "IPIP")) == len(g["nodes"]) - 1  # a tun-<hash> per peer
        assert any(d["label"].startswith("kube-bridge") for d in n["devices"])
    for name in ("aws-vpc", "azure"):
        model, g = _graph(str(ROOT / "examples" / "cni" / name))
        prefix = "eni" if name == "aws-vpc" else "azv"
        for n in g["nodes"]:
            assert [d["kind"] for d in n["devices"]] == ["eth0"]  # no bridge
            for ns in n["namespaces"]:
                for p in ns["pods"]:
                    assert p["vethLabel"].startswith(prefix) and p["veth"].startswith(n["name"])


def test_large_clusters_open_collapsed() -> None:
    _, g = _graph(synthetic_cluster(topology.COLLAPSE_ABOVE + 1, 60, 5))
    assert g["collapsed"]


def test_flows_of_a_replay(backend: str) -> None:
    from kemu.frontend.api import EmulatedCluster

    model = load_cluster(str(EXAMPLE))
    emu = EmulatedCluster(model, backend=backend, respond=False, icmp_errors=False)
    g = topology.build_graph(model, emu.tables)
    records = replay_records(emu, str(CAPTURE))
    flows = topology.flows_from_records(records, g)
    assert len(flows) == len({r["kemu"]["frame"] for r in records}) == 14
    dropped = [f for f in flows if f["verdict"] == "DROPPED"]
    assert len(dropped) == 1
    drop = dropped[0]
    assert drop["reason"] == "SERVICE_BACKEND_NOT_FOUND" and drop["service"] == "shop/legacy"
    mine = [r for r in records if r["kemu"]["frame"] == drop["frame"]]
    assert [h["iface"] for h in drop["hops"]] == [r["interface"]["name"] for r in mine]
    assert drop["hops"][-1]["decisions"][-1] == "DROP no endpoints (REJECT)"
    assert all(h["target"] for f in flows for h in f["hops"])
    smap = {(e["source"], e["target"]): e for e in topology.service_map(flows, g)}
    edge = smap[("pod:default/client", "svc:shop/legacy")]
    assert edge["verdict"] == "DROPPED" and edge["reasons"] == ["SERVICE_BACKEND_NOT_FOUND"]
    dns = smap[("pod:default/client", "svc:kube-system/kube-dns")]
    assert dns["verdict"] == "TRANSLATED" and dns["count"] >= 1


def test_service_map_aggregates_to_workloads(backend: str) -> None:
    """Hubble's service map: pods count as their workload (a Deployment's pods via their
    ReplicaSet), a bare pod as itself; requests to a Service (S-4) count on the edge to it and
    on the edge from it to the workload that received them."""
    from kemu.frontend.api import EmulatedCluster

    model = load_cluster(str(EXAMPLE))
    emu = EmulatedCluster(model, backend=backend, respond=False, icmp_errors=False)
    g = topology.build_graph(model, emu.tables)
    assert {w["id"]: len(w["pods"]) for w in g["workloads"]} == {
        "wl:kube-system/Deployment/coredns": 2, "wl:shop/Deployment/backend": 3,
        "wl:shop/Deployment/frontend": 2, "wl:shop/StatefulSet/redis": 2}
    flows = topology.flows_from_records(replay_records(emu, str(CAPTURE)), g)
    smap = {(e["source"], e["target"]): (e["count"], e["verdicts"], e["reasons"])
            for e in topology.service_map(flows, g)}
    tr, fw = "TRANSLATED", "FORWARDED"
    assert smap == {
        ("pod:default/client", "svc:kube-system/kube-dns"): (1, {tr: 1}, []),
        ("pod:default/client", "svc:shop/backend"): (1, {tr: 1}, []),
        ("pod:default/client", "svc:shop/legacy"): (
            1, {"DROPPED": 1}, ["SERVICE_BACKEND_NOT_FOUND"]),
        ("pod:default/client", "wl:shop/Deployment/backend"): (3, {fw: 3}, []),
        ("svc:kube-system/kube-dns", "pod:default/client"): (1, {tr: 1}, []),
        ("svc:kube-system/kube-dns", "wl:kube-system/Deployment/coredns"): (1, {tr: 1}, []),
        ("svc:shop/backend", "pod:default/client"): (3, {tr: 3}, []),
        ("svc:shop/backend", "wl:shop/Deployment/backend"): (1, {tr: 1}, []),
        ("node:node1", "svc:shop/frontend"): (1, {tr: 1}, []),
        ("svc:shop/frontend", "wl:shop/Deployment/frontend"): (1, {tr: 1}, []),
        ("wl:shop/Deployment/frontend", "ext/client/eth0"): (1, {tr: 1}, []),
        ("wl:shop/Deployment/frontend", "wl:shop/StatefulSet/redis"): (1, {fw: 1}, []),
        ("wl:shop/StatefulSet/redis", "wl:shop/Deployment/frontend"): (1, {fw: 1}, []),
    }


def test_workload_of_a_pod() -> None:
    from kemu.control.model import OwnerRef, Pod

    def pod(owner: OwnerRef | None, **labels: str) -> Pod:
        return Pod("ns", "p", "n", IPv4Address("10.0.0.1"), labels=labels, owner=owner)

    assert topology.workload_of(pod(None)) is None
    assert topology.workload_of(pod(OwnerRef("ReplicaSet", "web-abc12"),
                                    **{"pod-template-hash": "abc12"})) == ("Deployment", "web")
    assert topology.workload_of(pod(OwnerRef("ReplicaSet", "web-abc12"))) == (
        "ReplicaSet", "web-abc12")  # a ReplicaSet of its own
    assert topology.workload_of(pod(OwnerRef("DaemonSet", "agent"))) == ("DaemonSet", "agent")
    assert topology.workload_of(pod(OwnerRef("Job", "j"))) == ("Job", "j")


def _pcapng_hops(tmp_path: Path, backend: str) -> dict[int, list[tuple[str, str, str]]]:
    """Frame number -> (interface, direction, comment) of each hop ``kemu replay -w`` wrote,
    read back with Scapy: a hop's time stamp is its frame's plus its rank in nanoseconds
    (kemu.io.hops), the example's frames are a millisecond apart."""
    from scapy.utils import PcapNgReader, rdpcap

    out = tmp_path / "hops.pcapng"
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "-w", str(out),
                 "--backend", backend]) == 0
    starts = [int(p.time * 10**9) for p in rdpcap(str(CAPTURE))]
    assert all(b - a > 1000 for a, b in zip(starts, starts[1:], strict=False))
    hops: dict[int, list[tuple[str, str, str]]] = {}
    with PcapNgReader(str(out)) as reader:
        for pkt in reader:
            ts = int(pkt.time * 10**9)
            frame = next(n for n, t in enumerate(starts, 1) if t <= ts < t + 1000)
            direction = {1: "in", 2: "out"}.get(pkt.direction, "")
            hops.setdefault(frame, []).append(
                (pkt.sniffed_on, direction, (pkt.comments or [b""])[0].decode()))
    return hops


def test_r_gives_every_recorded_hop(backend: str, tmp_path: Path) -> None:
    """``-r``: a flow's hops are every device crossing the replay recorded, in order, with
    the pcapng comments' decisions; the flow log's verdicts on the hops they were written at
    (S-11: the Service without ready endpoints REJECTs at the node's bridge)."""
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.topology_cmd import replay_hops

    model = load_cluster(str(EXAMPLE))
    emu = EmulatedCluster(model, backend=backend, respond=False, icmp_errors=False)
    g = topology.build_graph(model, emu.tables)
    records, recorded = replay_hops(emu, str(CAPTURE))
    flows = topology.flows_from_records(records, g, recorded)
    written = _pcapng_hops(tmp_path, backend)
    assert len(flows) == len(written) == 14
    for f in flows:
        assert [(h["iface"], h["direction"], "; ".join(h["decisions"])) for h in f["hops"]] \
            == written[f["frame"]], f["frame"]
        logged = {r["interface"]["name"] for r in records if r["kemu"]["frame"] == f["frame"]}
        assert logged <= {h["iface"] for h in f["hops"]}  # more hops than the log lists
        assert all(h["target"] for h in f["hops"])
        assert all(h["node"] for h in f["hops"] if not h["iface"].startswith(("ext/", "gateway/")))
    drop = next(f for f in flows if f["verdict"] == "DROPPED")
    assert [(h["iface"], h["verdict"]) for h in drop["hops"]] == [
        ("default/client/eth0", ""), ("node1/veth-client", ""), ("node1/cbr0", "DROPPED")]
    assert drop["hops"][-1]["reason"] == "SERVICE_BACKEND_NOT_FOUND"
    assert drop["hops"][-1]["decisions"][-1] == "DROP no endpoints (REJECT)"
    nodeport = next(f for f in flows if f["service"] == "shop/frontend")
    assert nodeport["from"] == "ext/client/eth0"  # the sender, before MASQUERADE
    assert [h["iface"] for h in nodeport["hops"]][:2] == ["ext/client/eth0", "node1/eth0"]


def test_hubble_records_are_one_flow_each(tmp_path: Path) -> None:
    flows_file = tmp_path / "f.jsonl"
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "--flows",
                 str(flows_file)]) == 0
    _, g = _graph(str(EXAMPLE))
    records = topology.read_flow_log(flows_file)
    flows = topology.flows_from_records(records, g)
    assert len(flows) == len(records) == 24
    assert all(len(f["hops"]) == 1 for f in flows)


def test_cli_html_is_self_contained(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t.html"
    assert main(["topology", "-f", str(EXAMPLE), "-r", str(CAPTURE), "-o", str(out)]) == 0
    assert "10 pods, 5 Services, 14 flows" in capsys.readouterr().out
    html = out.read_text()
    assert "<link" not in html and not re.search(r"<script[^>]+src=", html)
    assert "The Cytoscape Consortium" in html  # the vendored library's license notice
    data = _page_data(html)
    assert len(data["flows"]) == 14 and data["serviceMap"]
    assert "hopTarget" not in data  # the flows carry their targets


def test_cli_flows_option(tmp_path: Path) -> None:
    flows_file, out = tmp_path / "f.jsonl", tmp_path / "t.html"
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "--flows",
                 str(flows_file), "--flow-format", "kemu"]) == 0
    assert main(["topology", "-f", str(EXAMPLE), "--flows", str(flows_file), "-o",
                 str(out)]) == 0
    assert len(_page_data(out.read_text())["flows"]) == 14


def test_cli_svg_is_static_and_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.svg", tmp_path / "b.svg"
    assert main(["topology", "-f", str(EXAMPLE), "-o", str(a)]) == 0
    assert main(["topology", "-f", str(EXAMPLE), "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    root = ET.fromstring(a.read_text())
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    model = load_cluster(str(EXAMPLE))
    for pod in model.pods:
        assert pod.name in text
    for svc in model.services:
        assert f"{svc.namespace}/{svc.name}" in text
    for node in ("node1", "node2", "node3"):
        assert node in text


def test_trace_page(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "trace.html"
    rc = main(["trace", "-f", str(EXAMPLE), "-S", "default/client", "-D", "shop/legacy",
               "-o", str(out)])
    assert rc == 1  # the exit code answers as with the text output
    assert "result: unreachable" in capsys.readouterr().out
    data = _page_data(out.read_text())
    assert data["trace"] and data["flows"][0]["verdict"] == "DROPPED"
    assert [h["iface"] for h in data["flows"][0]["hops"]] == [
        "default/client/eth0", "node1/veth-client", "node1/cbr0"]


@pytest.mark.parametrize("argv, message", [
    (["-o", "t.txt"], "-o t.txt: give a file ending in .html or .svg"),
    (["-r", "nope.pcap", "-o", "t.html"], "-r nope.pcap: no such file"),
    (["--flows", "nope.jsonl", "-o", "t.html"], "--flows nope.jsonl: no such file"),
])
def test_bad_input(argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["topology", "-f", str(EXAMPLE), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kemu: {message}"]
    assert list(tmp_path.iterdir()) == []


def test_bad_flow_log(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"flow": {}}\nnot json\n')
    assert main(["topology", "-f", str(EXAMPLE), "--flows", str(bad), "-o",
                 str(tmp_path / "t.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kemu: {bad}: line 2: not JSON") and "\n" not in err
    assert not (tmp_path / "t.html").exists()


def test_output_is_not_an_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    flows = tmp_path / "f.html"
    flows.write_text("")
    assert main(["topology", "-f", str(EXAMPLE), "--flows", str(flows), "-o",
                 str(flows)]) == 2
    assert "flow log" in capsys.readouterr().err


def test_r_and_flows_exclude_each_other(capsys: pytest.CaptureFixture) -> None:
    assert main(["topology", "-f", str(EXAMPLE), "-r", str(CAPTURE), "--flows", "x",
                 "-o", "t.html"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_preset_layout_of_the_example(tmp_path: Path) -> None:
    """Nodes side by side, each pod in its node's column beside its veth, the service map's
    workloads in a band below the pods and the Services under them; the page uses them."""
    out = tmp_path / "t.html"
    assert main(["topology", "-f", str(EXAMPLE), "-r", str(CAPTURE), "-o", str(out)]) == 0
    g = _page_data(out.read_text())
    pos = g["positions"]
    cols = {}
    for n in g["nodes"]:
        xs = [pos[p["id"]]["x"] for ns in n["namespaces"] for p in ns["pods"]]
        xs += [pos[d["id"]]["x"] for d in n["devices"]]
        cols[n["name"]] = (min(xs), max(xs))
        for ns in n["namespaces"]:
            for p in ns["pods"]:
                assert pos[p["veth"]]["y"] == pos[p["id"]]["y"]
                assert pos[p["veth"]]["x"] < pos[p["id"]]["x"]
    spans = [cols[n] for n in ("node1", "node2", "node3")]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))  # in a row
    lowest_pod = max(pos[p["id"]]["y"] for n in g["nodes"] for ns in n["namespaces"]
                     for p in ns["pods"])
    wl = [pos[w["id"]]["y"] for w in g["workloads"] if w["id"] in pos]
    svc = [pos[s["id"]]["y"] for s in g["services"]]
    assert len(wl) == 4 and lowest_pod < min(wl) and max(wl) < min(svc)
    assert pos["net"]["y"] < min(pos[d["id"]]["y"] for n in g["nodes"] for d in n["devices"])
    assert topology.preset_layout(g) == pos  # deterministic
