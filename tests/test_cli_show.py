"""The CLI: ``validate`` and ``show`` (against golden files), exit codes, ``--version``.

Golden files live in ``tests/golden/``; they are exactly what ``kemu show`` prints. After a
deliberate change, regenerate them with ``KEMU_UPDATE_GOLDEN=1 pytest tests/test_cli_show.py``
and review the diff before committing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kemu.control import load_cluster
from kemu.frontend import cli, show
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KEMU_UPDATE_GOLDEN") == "1"
BAD = Path("tests") / "data" / "manifests" / "bad"


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths in outputs (``source``) are the ones given on the command line: relative."""
    monkeypatch.chdir(ROOT)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with KEMU_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"output differs from {path}"


# --- golden files ------------------------------------------------------------------------------

KINDS = ("nodes", "pods", "services", "endpoints", "networkpolicies", "namespaces")
CASES = [(r, o) for r in (*KINDS, "dns", "interfaces", "listeners") for o in show.outputs_of(r)]


def expected_err(resource: str) -> str:
    return ""  # (NetworkPolicy is enforced: no warning any more, #17)


@pytest.mark.parametrize("resource, output", CASES, ids=[f"{r}-{o}" for r, o in CASES])
def test_show_example_matches_golden(capsys, resource: str, output: str) -> None:
    code, out, err = run(capsys, "show", "-f", "examples/cluster", resource, "-A", "-o", output)
    assert (code, err) == (0, expected_err(resource))
    check_golden(f"example-{resource}-{output}.txt", out)


@pytest.mark.parametrize("output", show.outputs_of("routes"))
def test_show_routes_matches_golden(capsys, output: str) -> None:
    code, out, err = run(capsys, "show", "-f", "examples/cluster", "routes", "-o", output)
    assert (code, err) == (0, "")
    check_golden(f"example-routes-{output}.txt", out)


@pytest.mark.parametrize("resource", ["nodes", "pods", "services", "endpoints"])
def test_show_dump_matches_golden(capsys, resource: str) -> None:
    code, out, _ = run(capsys, "show", "-f", "examples/dump", resource, "-A", "-o", "wide")
    assert code == 0
    check_golden(f"dump-{resource}-wide.txt", out)


STATE_CASES = [(r, o) for r in show.STATE for o in show.outputs_of(r)]


@pytest.mark.parametrize("resource, output", STATE_CASES,
                         ids=[f"{r}-{o}" for r, o in STATE_CASES])
def test_state_after_example_replay_matches_golden(capsys, backend: str, resource: str,
                                                   output: str) -> None:
    """The same text on every backend (the golden is shared)."""
    code, out, err = run(capsys, "show", "-f", "examples/cluster", resource, "--replay",
                         "examples/capture.pcap", "--backend", backend, "-o", output)
    assert (code, err) == (0, "")
    check_golden(f"example-replay-{resource}-{output}.txt", out)


# --- tables --------------------------------------------------------------------------------------

def test_default_namespace_and_dash_n(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "pods")
    assert out.splitlines() == ["NAME     READY   STATUS    IP           NODE",
                                "client   1/1     Running   10.244.0.2   node1"]
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "svc", "-n", "shop")
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                                           "PORT(S)"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["backend", "frontend",
                                                                  "legacy", "redis"]


def test_service_columns_like_kubectl(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "services", "-n", "shop")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["frontend"] == ["frontend", "NodePort", "10.96.0.12", "<none>", "80:30080/TCP"]
    assert rows["redis"] == ["redis", "ClusterIP", "None", "<none>", "6379/TCP"]


def test_endpoints_table_truncates_like_kubectl(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "endpoints", "-n", "kube-system")
    assert out.splitlines()[1] == ("kube-dns   10.244.1.2:53,10.244.2.2:53,10.244.1.2:9153 + 1 "
                                   "more...")
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "ep", "-n", "shop")
    assert "legacy     <none>" in out.splitlines()


def test_dns_narrowed_to_a_namespace(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "dns", "-n", "kube-system")
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert "kube-dns.kube-system.svc.cluster.local." in names
    assert "10.0.96.10.in-addr.arpa." in names  # its PTR points into the namespace
    assert not any(".shop." in n or n.startswith("dns-version") for n in names)


def test_route_lines_like_ip_route() -> None:
    from ipaddress import IPv4Address, IPv4Network

    from kemu.compiler.routes import Route

    text = show.render_route_table({"node1": [
        Route(IPv4Network("10.244.0.0/24"), "cbr0", src=IPv4Address("10.244.0.1"),
              proto="kernel"),
        Route(IPv4Network("10.244.1.0/24"), "flannel.1", via=IPv4Address("10.244.1.0"),
              onlink=True),
        Route(IPv4Network("10.244.2.0/24"), "eth0", via=IPv4Address("172.18.0.4"),
              proto="boot"),  # ip route replace's own: proto boot is not printed
        Route(IPv4Network("10.9.0.0/16"), "", proto="boot", type="blackhole"),
        Route(IPv4Network("0.0.0.0/0"), "eth0", via=IPv4Address("172.18.0.1"))]})
    assert text.splitlines() == [
        "node1  10.244.0.0/24 dev cbr0 proto kernel scope link src 10.244.0.1",
        "node1  10.244.1.0/24 via 10.244.1.0 dev flannel.1 proto static onlink",
        "node1  10.244.2.0/24 via 172.18.0.4 dev eth0",
        "node1  blackhole 10.9.0.0/16",
        "node1  default via 172.18.0.1 dev eth0 proto static"]


def test_table_alignment() -> None:
    assert show.table(["A", "BB"], [["xxx", "y"], ["z", ""]]) == "A     BB\nxxx   y\nz\n"


# --- Kubernetes kinds in kubectl's shape ---------------------------------------------------------

def show_json(capsys, *argv: str) -> tuple[dict, str]:
    code, out, err = run(capsys, "show", "-f", "examples/cluster", *argv, "-o", "json")
    assert code == 0
    return json.loads(out), err


def keys_of(value: object, under: str = "") -> set[str]:
    """Every key of nested dicts, except those of label, annotation and selector maps (their
    keys are the user's, like ``app`` or ``kubernetes.io/service-name``)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if under not in ("labels", "annotations", "selector", "matchLabels"):
                out.add(k)
            out |= keys_of(v, k)
    elif isinstance(value, list):
        for v in value:
            out |= keys_of(v, under)
    return out


@pytest.mark.parametrize("resource", KINDS)
def test_json_is_a_kubectl_list_with_camel_case_fields(capsys, resource: str) -> None:
    data, _ = show_json(capsys, resource, "-A")
    assert (data["apiVersion"], data["kind"], data["metadata"]) == ("v1", "List",
                                                                    {"resourceVersion": ""})
    assert data["items"]
    for item in data["items"]:
        assert {"apiVersion", "kind", "metadata"} <= set(item)
        assert item["metadata"]["name"]
    keys = keys_of(data["items"])
    assert all(k[0].islower() and "_" not in k and "-" not in k for k in keys), sorted(keys)
    text = (GOLDEN / f"example-{resource}-yaml.txt").read_text()
    assert yaml.safe_load(text) == data


def test_json_items_hold_what_kemu_allocated(capsys) -> None:
    """Checked against the model (independently of the renderer)."""
    model = load_cluster("examples/cluster")
    pods = {(i["metadata"]["namespace"], i["metadata"]["name"]): i
            for i in show_json(capsys, "pods", "-A")[0]["items"]}
    assert len(pods) == len(model.pods)
    for p in model.pods:
        item = pods[(p.namespace, p.name)]
        host = str(model.node(p.node_name).internal_ip)
        assert item["status"]["podIP"] == str(p.ip)
        assert item["status"]["podIPs"] == [{"ip": str(p.ip)}]
        assert (item["status"]["hostIP"], item["status"]["hostIPs"]) == (host, [{"ip": host}])
        assert item["spec"]["nodeName"] == p.node_name
        assert item["metadata"]["annotations"]["kemu.dev/mac"] == p.mac
        assert item["metadata"]["labels"] == p.labels
        if p.owner:
            assert item["metadata"]["ownerReferences"][0]["kind"] == p.owner.kind
    svcs = {i["metadata"]["name"]: i for i in show_json(capsys, "svc", "-n", "shop")[0]["items"]}
    assert svcs["frontend"]["spec"]["ports"] == [{"nodePort": 30080, "port": 80,
                                                  "protocol": "TCP", "targetPort": "http"}]
    assert svcs["frontend"]["spec"]["clusterIP"] == str(model.service("shop", "frontend")
                                                        .cluster_ip)
    assert svcs["redis"]["spec"]["clusterIP"] == "None"
    assert svcs["backend"]["spec"]["sessionAffinity"] == "ClientIP"
    slices = show_json(capsys, "endpoints", "-A")[0]["items"]
    assert [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in slices] == [
        (s.namespace, s.name) for s in model.all_endpoint_slices()]
    for item, sl in zip(slices, model.all_endpoint_slices(), strict=True):
        assert item["kind"] == "EndpointSlice" and item["apiVersion"] == "discovery.k8s.io/v1"
        assert [e["addresses"] for e in item["endpoints"]] == [[str(e.ip)] for e in sl.endpoints]
        assert item["metadata"]["labels"]["kubernetes.io/service-name"] == sl.service
    nodes = show_json(capsys, "nodes")[0]["items"]
    assert [(n["spec"]["podCIDR"], n["status"]["addresses"][0]) for n in nodes] == [
        (str(n.pod_cidr), {"address": str(n.internal_ip), "type": "InternalIP"})
        for n in model.nodes]


def test_kubectl_shaped_output_loads_back_into_the_same_cluster(capsys, tmp_path: Path) -> None:
    for resource in ("nodes", "namespaces", "pods", "services", "networkpolicies"):
        _, out, _ = run(capsys, "show", "-f", "examples/cluster", resource, "-A", "-o", "yaml")
        (tmp_path / f"{resource}.yaml").write_text(out)

    def facts(c: object) -> dict:
        d = c.to_dict()  # type: ignore[attr-defined]
        for key in ("pods", "services", "network_policies"):
            for item in d[key]:
                item.pop("source")
        for ns in d["namespaces"]:
            ns.pop("implicit")  # listed, default is no longer implied
        return {k: d[k] for k in ("nodes", "namespaces", "pods", "services",
                                  "endpoint_slices", "network_policies")}

    assert facts(load_cluster(tmp_path)) == facts(load_cluster("examples/cluster"))


def test_dash_o_name_like_kubectl(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "pods", "-o", "name")
    assert out == "pod/client\n"
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "svc", "-n", "shop", "-o", "name")
    assert out.splitlines() == ["service/backend", "service/frontend", "service/legacy",
                                "service/redis"]
    _, out, err = run(capsys, "show", "-f", "examples/cluster", "netpol", "-n", "shop", "-o",
                      "name")
    assert out.splitlines() == ["networkpolicy.networking.k8s.io/backend-grpc",
                                "networkpolicy.networking.k8s.io/redis-peers"]
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "ep", "-n", "shop", "-o", "name")
    assert out.splitlines() == [f"endpointslice.discovery.k8s.io/{s.name}" for s in
                                load_cluster("examples/cluster").all_endpoint_slices()
                                if s.namespace == "shop"]


# --- label selectors: against a brute-force filter over the model --------------------------------

# (kubectl text, the same requirements as (key, op, values)), evaluated by ``holds`` below
SELECTORS = [
    ("app=backend", [("app", "=", ["backend"])]),
    ("app==frontend", [("app", "=", ["frontend"])]),
    ("app!=backend", [("app", "!=", ["backend"])]),
    ("app in (frontend,redis)", [("app", "in", ["frontend", "redis"])]),
    ("app notin (frontend, redis)", [("app", "notin", ["frontend", "redis"])]),
    ("k8s-app", [("k8s-app", "exists", [])]),
    ("!app", [("app", "!exists", [])]),
    ("app=backend,pod-template-hash", [("app", "=", ["backend"]),
                                       ("pod-template-hash", "exists", [])]),
    ("kubernetes.io/os=linux,kubernetes.io/hostname!=node2",
     [("kubernetes.io/os", "=", ["linux"]), ("kubernetes.io/hostname", "!=", ["node2"])]),
    ("team=shop", [("team", "=", ["shop"])]),
    ("kubernetes.io/service-name in (backend,kube-dns),!nope",
     [("kubernetes.io/service-name", "in", ["backend", "kube-dns"]), ("nope", "!exists", [])]),
    ("endpointslice.kubernetes.io/managed-by", [("endpointslice.kubernetes.io/managed-by",
                                                 "exists", [])]),
]


def holds(reqs: list[tuple[str, str, list[str]]], labels: dict[str, str]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        ok = {"=": present and labels.get(key) in values,
              "in": present and labels.get(key) in values,
              "!=": not present or labels[key] not in values,
              "notin": not present or labels[key] not in values,
              "exists": present, "!exists": not present}[op]
        if not ok:
            return False
    return True


def model_labels(resource: str) -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every object of a kind, read off the model."""
    m = load_cluster("examples/cluster")
    if resource == "pods":
        return [(p.name, p.labels) for p in m.pods]
    if resource == "services":
        return [(s.name, s.labels) for s in m.services]
    if resource == "nodes":
        return [(n.name, n.labels) for n in m.nodes]
    if resource == "namespaces":
        return [(n, m.namespaces[n].labels) for n in sorted(m.namespaces)]
    if resource == "networkpolicies":
        return [(p.name, p.labels) for p in m.policies]
    out = []  # EndpointSlices: the Service's labels plus the two the controller sets
    for s in m.all_endpoint_slices():
        svc = m.service(s.namespace, s.service)
        out.append((s.name, {**svc.labels, "kubernetes.io/service-name": svc.name,
                             "endpointslice.kubernetes.io/managed-by":
                             "endpointslice-controller.k8s.io"}))
    return out


@pytest.mark.parametrize("resource", KINDS)
@pytest.mark.parametrize("text, reqs", SELECTORS, ids=[s for s, _ in SELECTORS])
def test_label_selector_agrees_with_brute_force(capsys, resource: str, text: str,
                                                reqs: list) -> None:
    code, out, _ = run(capsys, "show", "-f", "examples/cluster", resource, "-A", "-l", text,
                       "-o", "name")
    assert code == 0
    assert [line.split("/", 1)[1] for line in out.splitlines()] == [
        name for name, labels in model_labels(resource) if holds(reqs, labels)]


def test_label_selector_in_tables(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "pods", "-A", "-l",
                    "app in (redis)", "-o", "wide")
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["redis-0", "redis-1"]
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "ep", "-n", "shop", "-l",
                    "kubernetes.io/service-name=legacy")
    assert out.splitlines() == ["NAME     ENDPOINTS", "legacy   <none>"]


# --- NetworkPolicies, namespaces, empty namespaces -----------------------------------------------

def test_networkpolicies_wide_lists_the_pods_each_selects(capsys) -> None:
    code, out, err = run(capsys, "show", "-f", "examples/cluster", "netpol", "-A", "-o", "wide")
    assert (code, err) == (0, "")  # enforced (#17): no warning
    m = load_cluster("examples/cluster")
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:]}
    for pol in m.policies:
        selected = [p.name for p in m.pods if p.namespace == pol.namespace
                    and all(p.labels.get(k) == v for k, v in
                            pol.pod_selector.match_labels.items())]
        assert rows[pol.name][-1].split(",") == selected
        assert rows[pol.name][-2] == ",".join(pol.policy_types)


def test_empty_default_namespace_says_so_like_kubectl(capsys) -> None:
    code, out, err = run(capsys, "show", "-f", "examples/cluster", "services")
    assert (code, out) == (0, "")
    assert err == ("No resources found in default namespace.\n"
                   "(5 in other namespaces: use -A or -n NAMESPACE)\n")
    code, out, err = run(capsys, "show", "-f", "examples/cluster", "netpol")
    assert (code, out) == (0, "")
    assert err.splitlines() == ["No resources found in default namespace.",
                                "(2 in other namespaces: use -A or -n NAMESPACE)"]
    code, out, err = run(capsys, "show", "-f", "examples/cluster", "pods", "-A", "-l", "x=y")
    assert (code, out, err) == (0, "", "No resources found\n")
    code, out, err = run(capsys, "show", "-f", "examples/cluster", "pods", "-o", "json",
                         "-n", "nowhere")
    assert (code, json.loads(out)["items"], err) == (0, [], "")


# --- interfaces ----------------------------------------------------------------------------------

def test_interfaces_are_the_compiled_devices(capsys) -> None:
    from kemu.compiler.compile import compile_cluster
    from kemu.dataplane import codes as C

    m = load_cluster("examples/cluster")
    t = compile_cluster(m)
    items = show_json(capsys, "interfaces")[0]["items"]
    devices = [i for i in range(t.n_ifaces) if int(t.if_kind[i]) != C.IF_NODE_LOCAL]
    assert [i["name"] for i in items] == [t.if_name[i] for i in devices]
    by_name = {i["name"]: i for i in items}
    for p in m.pods:
        eth = by_name[f"{p.key}/eth0"]
        assert (eth["ip"], eth["mac"], eth["node"], eth["owner"]) == (
            str(p.ip), p.mac, p.node_name, {"kind": "Pod", "name": p.key})
        assert by_name[f"{p.key}/lo"]["mtu"] == 65536
        assert eth["peer"] == f"{p.node_name}/veth-{p.name}"
    for n in m.nodes:
        assert (by_name[f"{n.name}/eth0"]["ip"], by_name[f"{n.name}/eth0"]["mac"]) == (
            str(n.internal_ip), n.mac)
        assert (by_name[f"{n.name}/cbr0"]["ip"], by_name[f"{n.name}/cbr0"]["mtu"]) == (
            str(n.gateway_ip), 1500)
    assert by_name["gateway/eth0"]["owner"] == {"kind": "Gateway", "name": "gateway"}
    assert by_name["ext/db/eth0"]["ip"] == "172.18.0.200"
    shop = show_json(capsys, "ifaces", "-n", "shop")[0]["items"]
    assert shop and all(i["owner"]["name"].startswith("shop/") for i in shop)
    assert len(shop) == 3 * sum(p.namespace == "shop" for p in m.pods)  # veth, eth0, lo


def test_vxlan_mode_devices_and_neighbours() -> None:
    model = load_cluster({"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster",
                          "metadata": {"name": "v"}, "spec": {"nodes": 2, "mode": "vxlan"}})
    items = json.loads(show.render(model, "interfaces", output="json"))["items"]
    mtus = {i["name"]: i["mtu"] for i in items}
    assert mtus["node1/flannel.1"] == 1450 and mtus["node1/eth0"] == 1500
    neigh = json.loads(show.render(model, "neighbours", output="json"))["items"]
    vtep = next(i for i in neigh if i["node"] == "node1" and i["ip"] == "10.244.1.0")
    assert (vtep["dev"], vtep["mac"], vtep["state"]) == (
        "flannel.1", model.node("node2").vtep_mac, "PERMANENT")


# --- datapath state: the API's state after the same traffic --------------------------------------

def api_state(emu: object) -> dict[str, set[tuple]]:
    """``EmulatedCluster.dump()``'s lines, split into fields."""
    out: dict[str, set[tuple]] = {"fdb": set(), "ct": set(), "neigh": set()}
    for line in emu.dump().splitlines():  # type: ignore[attr-defined]
        w = line.split()
        if w[0] == "fdb":  # fdb BRIDGE MAC port PORT seen NS
            out["fdb"].add((w[1], w[2], w[4], int(w[6])))
        elif w[0] == "ct":  # ct NODE PROTO S > D reply RS > RD STATE flags F expires E svc..
            out["ct"].add((w[1], w[2], w[3], w[5], w[7], w[9], w[10], int(w[14]),
                           None if w[16] == "?" else w[16], None if w[18] == "?" else w[18]))
        elif w[0] == "neigh":
            out["neigh"].add((w[1], w[2], w[3], len(w) > 4))
    return out


def cli_state(capsys, backend: str, *argv: str) -> tuple[dict[str, set[tuple]], int, str]:
    got: dict[str, set[tuple]] = {}
    clock, err = 0, ""
    for resource in show.STATE:
        code, out, err = run(capsys, "show", "-f", "examples/cluster", resource, *argv,
                             "--backend", backend, "-o", "json")
        assert code == 0
        data = json.loads(out)
        clock = data["metadata"]["clockNs"]
        items = data["items"]
        if resource == "fdb":
            got["fdb"] = {(i["bridge"], i["mac"], i["port"], i["seenNs"]) for i in items
                          if not i["local"]}
            got["fdb-local"] = {(i["bridge"], i["mac"], i["port"]) for i in items
                                if i["local"]}
        elif resource == "conntrack":
            got["ct"] = {(i["node"], i["protocol"],
                          f"{i['original']['src']}:{i['original']['sport']}",
                          f"{i['original']['dst']}:{i['original']['dport']}",
                          f"{i['reply']['src']}:{i['reply']['sport']}",
                          f"{i['reply']['dst']}:{i['reply']['dport']}", i["state"],
                          i["expiresNs"], i["service"], i["backend"]) for i in items}
            assert all(i["timeoutSeconds"] == max(0, (i["expiresNs"] - clock) // 10**9)
                       for i in items)
        else:
            got["neigh"] = {(i["node"], i["ip"], i["mac"], i["headerCached"]) for i in items}
    return got, clock, err


def test_state_after_replay_is_what_the_api_dumps(capsys, backend: str) -> None:
    import kemu

    emu = kemu.load("examples/cluster", backend=backend, respond=False)
    emu.replay("examples/capture.pcap")
    want = api_state(emu)
    got, clock, err = cli_state(capsys, backend, "--replay", "examples/capture.pcap")
    assert err == ""
    assert clock == emu.engine.clock_ns
    assert got["ct"] == want["ct"] and len(want["ct"]) == 8
    assert got["fdb"] == want["fdb"] and got["neigh"] == want["neigh"]
    model = load_cluster("examples/cluster")
    assert got["fdb-local"] == {(f"{n.name}/cbr0", n.bridge_mac, f"{n.name}/cbr0")
                                for n in model.nodes}


def test_state_after_trace_is_what_the_api_dumps(capsys, backend: str) -> None:
    from scapy.layers.inet import IP, TCP

    import kemu

    emu = kemu.load("examples/cluster", backend=backend)
    emu.send(IP(dst="10.96.0.11") / TCP(sport=40000, dport=9090, flags="S", seq=1000),
             src="default/client")
    want = api_state(emu)
    got, _, err = cli_state(capsys, backend, "--trace", "default/client", "shop/backend")
    assert err == ""
    assert got["ct"] == want["ct"] and any(c[8] == "shop/backend:grpc" for c in got["ct"])
    assert got["fdb"] == want["fdb"] and got["neigh"] == want["neigh"]


def test_state_of_a_fresh_cluster_says_so(capsys, backend: str) -> None:
    import kemu

    want = api_state(kemu.load("examples/cluster", backend=backend))
    got, clock, err = cli_state(capsys, backend)
    assert err == show.FRESH_NOTE + "\n"
    assert (got["ct"], got["fdb"], clock) == (set(), set(), 0)
    assert got["neigh"] == want["neigh"]
    code, out, err = run(capsys, "show", "-f", "examples/cluster", "conntrack")
    assert (code, out, err) == (0, "", show.FRESH_NOTE + "\nNo resources found\n")
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "neighbours", "-o", "json")
    assert {i["state"] for i in json.loads(out)["items"]} == {"PERMANENT"}


def test_replay_options_reach_the_replay(capsys) -> None:
    code, out, _ = run(capsys, "show", "-f", "examples/cluster", "conntrack", "--replay",
                       "examples/capture.pcap", "--limit", "2", "-o", "wide")
    assert code == 0
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["node1", "UDP"],
                                                                   ["node2", "UDP"]]


@pytest.mark.parametrize("argv, message", [
    (["routes", "-o", "name"], "kemu: -o name: routes are kemu's own view, not Kubernetes "
                               "objects (use -o table, wide, json or yaml)\n"),
    (["ifaces", "-l", "app=web"], "kemu: -l: interfaces have no labels (-l selects pods, "
                                  "services, endpoints, networkpolicies, nodes and "
                                  "namespaces)\n"),
    (["pods", "--replay", "examples/capture.pcap"],
     "kemu: --replay and --trace apply to conntrack, fdb and neighbours only\n"),
    (["pods", "-l", "app in (web"], "kemu: -l 'app in (web': unbalanced '(' in 'app in (web'\n"),
    (["fdb", "--replay", "no/such.pcap"], "kemu: no/such.pcap: No such file or directory\n"),
    (["fdb", "--trace", "default/client", "nowhere/nothing"],
     "kemu: unknown destination 'nowhere/nothing': not a pod, workload, Service, external "
     "host, node or IPv4 address of this cluster\n"),
])
def test_show_usage_problems_exit_2_without_traceback(capsys, argv: list[str],
                                                      message: str) -> None:
    code, out, err = run(capsys, "show", "-f", "examples/cluster", *argv)
    assert (code, out, err) == (2, "", message)


# --- every option has help -----------------------------------------------------------------------

def test_every_option_of_every_command_has_help() -> None:
    import argparse

    parser = cli.build_parser()
    missing: dict[str, list[str]] = {}
    seen: dict[str, set[str]] = {}

    def check(command: str, p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert (choice.help or "").strip(), f"command {choice.dest} has no help"
                continue
            name = max(action.option_strings, key=len) if action.option_strings else action.dest
            seen.setdefault(command, set()).add(name)
            if not (action.help or "").strip():
                missing.setdefault(command, []).append(name)

    check("kemu", parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        check(command, p)
    assert set(sub.choices) == set(cli.NAMES)
    assert {"--detailed", "--backend"} <= seen["trace"] and "--flows" in seen["replay"]
    assert missing == {}


# --- validate and exit codes ---------------------------------------------------------------

def test_validate_ok(capsys) -> None:
    code, out, err = run(capsys, "validate", "-f", "examples/cluster")
    assert (code, err) == (0, "")
    assert out == ("ok: 3 nodes, 10 pods, 5 services, 4 endpoint slices, 2 network policies\n")


def test_validate_lists_ignored_objects(capsys) -> None:
    code, out, err = run(capsys, "validate", "-f", "examples/dump")
    assert code == 0
    assert out.splitlines()[0] == ("ok: 3 nodes, 5 pods, 4 services, 4 endpoint slices, 0 "
                                   "network policies (ignored: 3 objects)")
    assert out.splitlines()[1] == ("  examples/dump/cluster-dump.yaml: web/EndpointSlice/"
                                   "web-n8v2c ignored (Service web/web has a selector: kemu "
                                   "derives its slices)")
    assert ("kemu: warning: examples/dump/cluster-dump.yaml: web/ConfigMap/kube-root-ca.crt: "
            "ConfigMap is not modelled: ignored") in err.splitlines()


def test_validate_invalid_manifests_exit_2_with_every_problem(capsys) -> None:
    code, out, err = run(capsys, "validate", "-f", str(BAD / "web.yaml"), "-f",
                         str(BAD / "conflicts.yaml"))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"kemu: {BAD / 'web.yaml'}: shop/Deployment/web: spec.template.spec: unknown field "
        "'contianers' (did you mean 'containers'?)",
        f"kemu: {BAD / 'conflicts.yaml'}: default/Pod/a: spec.containers[1].ports[0]: port "
        "8080/TCP of container 'sidecar' is already declared by container 'app' (containers "
        "of a pod share one network namespace, M-4)",
        f"kemu: {BAD / 'conflicts.yaml'}: default/Service/two: spec.ports[0].port: expected an "
        "integer, got a string ('eighty')",
        f"kemu: {BAD / 'conflicts.yaml'}: default/Pod/b: status.podIP: 10.244.0.9 is already "
        "used by default/Pod/a",
        f"kemu: {BAD / 'conflicts.yaml'}: default/Service/two: spec.clusterIP: 10.96.5.5 is "
        "already used by default/Service/one",
    ]


def test_bad_yaml_exit_2(capsys) -> None:
    code, _, err = run(capsys, "show", "-f", str(BAD / "syntax.json"), "pods")
    assert (code, err) == (2, f"kemu: {BAD / 'syntax.json'}: line 4: Expecting ',' delimiter "
                              "(column 3)\n")


def test_unreadable_path_exit_2(capsys) -> None:
    code, out, err = run(capsys, "show", "-f", "no/such/dir", "pods")
    assert (code, out, err) == (2, "", "kemu: no/such/dir: No such file or directory\n")


@pytest.mark.parametrize("argv", [[], ["show", "pods"], ["show", "-f", "examples/cluster"],
                                  ["show", "-f", "examples/cluster", "volumes"],
                                  ["show", "-f", "x", "pods", "-n", "a", "-A"],
                                  ["show", "-f", "x", "pods", "-o", "xml"], ["nope"]])
def test_usage_errors_exit_2(capsys, argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage: kemu" in err


def test_help_exits_0(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "validate" in out and "show" in out


def test_keyboard_interrupt_exits_130(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load", interrupted)
    code, _, err = run(capsys, "validate", "-f", "examples/cluster")
    assert (code, err) == (130, "kemu: interrupted\n")


def test_version_names_the_backend(capsys) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    from kemu import _backend

    assert out == f"kemu 0.1.0 (backend: {_backend.BACKEND})\n"


def test_python_dash_m_kemu() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kemu", "validate", "-f", "examples/cluster"],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("ok: 3 nodes, 10 pods")
    proc = subprocess.run([sys.executable, "-m", "kemu", "validate", "-f", "missing"],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert (proc.returncode, proc.stderr) == (2, "kemu: missing: No such file or directory\n")


def test_commands_come_from_the_table() -> None:
    assert cli.COMMANDS[:2] == ["kemu.frontend.cli:VALIDATE", "kemu.frontend.show:SHOW"]
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"validate", "show"}  # type: ignore[arg-type]


def test_a_command_alone_gets_its_own_parser_only() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(cli.NAMES)  # type: ignore[arg-type]
    for name in cli.NAMES:
        only = cli.build_parser(name)
        sub = next(a for a in only._actions if a.dest == "command")
        assert list(sub.choices) == [name]  # type: ignore[arg-type]
