"""Names a user types (``kemu.frontend.names``): ``kemu trace -S/-D`` and the API's ``src=``.

Every form (workloads ``[ns/]kind/name``, Services by DNS name with ``:port``/``:portname``,
``ns/pod``, ``ns/svc``, ``ext/<host>``, nodes, IPs) through the pure resolver, the CLI (exit
codes and the line naming the chosen pod, on both backends) and the API; the resolver's search
list (D-10); errors naming the nearest valid names.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest

import kemu
from kemu.control.cluster import Cluster, load_cluster
from kemu.errors import TopologyError
from kemu.frontend import names
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster"

# Workloads the example lacks: a DaemonSet, a bare ReplicaSet, a Job, pods of a
# ReplicationController (the first by name not ready), a ReplicaSet whose only pod is not ready.
EXTRA = """\
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-exporter, namespace: monitoring}
spec:
  selector: {matchLabels: {app: node-exporter}}
  template:
    metadata: {labels: {app: node-exporter}}
    spec:
      containers: [{name: exporter, ports: [{name: metrics, containerPort: 9100}]}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate}]
---
apiVersion: v1
kind: Pod
metadata:
  name: guestbook-a
  labels: {app: guestbook}
  ownerReferences: [{apiVersion: v1, kind: ReplicationController, name: guestbook,
                     controller: true, uid: "1"}]
spec:
  containers: [{name: gb, ports: [{name: http-server, containerPort: 3000}]}]
status:
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: guestbook-b
  labels: {app: guestbook}
  ownerReferences: [{apiVersion: v1, kind: ReplicationController, name: guestbook,
                     controller: true, uid: "1"}]
spec:
  containers: [{name: gb, ports: [{name: http-server, containerPort: 3000}]}]
---
apiVersion: v1
kind: Pod
metadata:
  name: lonely-x
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: lonely, controller: true,
                     uid: "2"}]
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
status:
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Service
metadata: {name: guestbook}
spec:
  selector: {app: guestbook}
  ports: [{name: http, port: 3000, targetPort: http-server}]
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: shop}
spec:
  type: ExternalName
  externalName: db.example.com
"""


@pytest.fixture(scope="module")
def extra(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("names") / "extra.yaml"
    path.write_text(EXTRA)
    return path


@pytest.fixture(scope="module")
def model(extra: Path) -> Cluster:
    return load_cluster(EXAMPLE, extra)


def first_ready(model: Cluster, kind: str, namespace: str, name: str) -> str:
    """The pod the resolver must choose, found another way: owner references and names."""
    if kind == "Deployment":  # its ReplicaSet is <name>-<hash>
        pods = [p for p in model.pods if p.owner and p.owner.kind == "ReplicaSet"
                and p.owner.name.rsplit("-", 1)[0] == name]
    else:
        pods = [p for p in model.pods if p.owner and (p.owner.kind, p.owner.name) == (kind, name)]
    pods = [p for p in pods if p.namespace == namespace]
    assert pods
    ready = [p for p in pods if p.ready] or pods
    return min(ready, key=lambda p: p.name).key


# --- the resolver -------------------------------------------------------------------------

WORKLOAD_FORMS = [  # typed, (kind, namespace, name) of the workload
    ("shop/deploy/backend", ("Deployment", "shop", "backend")),
    ("shop/deployment/frontend", ("Deployment", "shop", "frontend")),
    ("shop/Deployments/frontend", ("Deployment", "shop", "frontend")),
    ("kube-system/deploy/coredns", ("Deployment", "kube-system", "coredns")),
    ("shop/sts/redis", ("StatefulSet", "shop", "redis")),
    ("shop/statefulset/redis", ("StatefulSet", "shop", "redis")),
    ("monitoring/ds/node-exporter", ("DaemonSet", "monitoring", "node-exporter")),
    ("monitoring/daemonset/node-exporter", ("DaemonSet", "monitoring", "node-exporter")),
    ("rs/web", ("ReplicaSet", "default", "web")),
    ("default/replicaset/web", ("ReplicaSet", "default", "web")),
    ("shop/rs/backend-hdjlqw9kdn", ("ReplicaSet", "shop", "backend-hdjlqw9kdn")),
    ("rc/guestbook", ("ReplicationController", "default", "guestbook")),
    ("replicationcontroller/guestbook", ("ReplicationController", "default", "guestbook")),
    ("shop/job/migrate", ("Job", "shop", "migrate")),
    ("rs/lonely", ("ReplicaSet", "default", "lonely")),
]


@pytest.mark.parametrize("typed,workload", WORKLOAD_FORMS)
def test_a_workload_is_its_first_ready_pod_by_name(model: Cluster, typed: str,
                                                   workload: tuple[str, str, str]) -> None:
    kind, ns, name = workload
    want = first_ready(model, kind, ns, name)
    for resolve in (names.resolve_source, names.resolve_destination):
        t = resolve(model, typed)
        assert (t.kind, t.name) == ("pod", want)
        assert t.ip == model.pod(*want.split("/")).ip
        assert t.note.startswith(f"{kind} {ns}/{name}: pod {want}, the first by name of ")


def test_not_ready_pods_are_passed_over_and_said(model: Cluster) -> None:
    rc = names.resolve_source(model, "rc/guestbook")
    assert rc.name == "default/guestbook-b"  # guestbook-a is first by name but not ready
    assert rc.note.endswith("the first by name of 1 ready pod")
    lonely = names.resolve_source(model, "rs/lonely")
    assert lonely.name == "default/lonely-x"
    assert lonely.note.endswith("the first by name of 1 pod (none is ready)")


def test_the_choice_follows_readiness(extra: Path) -> None:
    cluster = load_cluster(EXAMPLE, extra)
    before = names.resolve_source(cluster, "shop/deploy/backend").name
    cluster.set_pod_ready(*before.split("/"), False)
    after = names.resolve_source(cluster, "shop/deploy/backend").name
    assert after != before and after == first_ready(cluster, "Deployment", "shop", "backend")


DESTINATIONS = [  # typed, source pod or None, (kind, name, port, protocol)
    ("backend.shop.svc.cluster.local", None, ("service", "shop/backend", None, None)),
    ("backend.shop.svc.cluster.local.", None, ("service", "shop/backend", None, None)),
    ("BACKEND.Shop.svc", None, ("service", "shop/backend", None, None)),
    ("backend.shop", None, ("service", "shop/backend", None, None)),
    ("backend.shop:grpc", None, ("service", "shop/backend", 9090, "TCP")),
    ("backend.shop:9090", None, ("service", "shop/backend", 9090, "TCP")),
    ("shop/backend:grpc", None, ("service", "shop/backend", 9090, "TCP")),
    ("shop/svc/backend:grpc", None, ("service", "shop/backend", 9090, "TCP")),
    ("kube-dns.kube-system:dns", None, ("service", "kube-system/kube-dns", 53, "UDP")),
    ("kube-dns.kube-system:dns-tcp", None, ("service", "kube-system/kube-dns", 53, "TCP")),
    ("kube-dns.kube-system:53", None, ("service", "kube-system/kube-dns", 53, "UDP")),
    ("kube-dns.kube-system.svc:metrics", None,
     ("service", "kube-system/kube-dns", 9153, "TCP")),
    # a bare name: the source pod's namespace (its resolver's first search domain, D-10)
    ("backend:grpc", "shop/redis-0", ("service", "shop/backend", 9090, "TCP")),
    ("guestbook:http", None, ("service", "default/guestbook", 3000, "TCP")),
    ("guestbook", "default/client", ("service", "default/guestbook", None, None)),
    # per-pod names (D-4, D-5, D-6) and pods
    ("redis-0.redis.shop.svc.cluster.local", None, ("pod", "shop/redis-0", None, None)),
    ("redis-1.redis.shop:6379", None, ("pod", "shop/redis-1", 6379, None)),
    ("redis-1.redis", "shop/frontend-tt4zl4844t-q4psg", ("pod", "shop/redis-1", None, None)),
    ("shop/redis-0:redis", None, ("pod", "shop/redis-0", 6379, "TCP")),
    ("pod/client", None, ("pod", "default/client", None, None)),
    ("shop/pod/redis-1", None, ("pod", "shop/redis-1", None, None)),
    ("client", None, ("pod", "default/client", None, None)),
    ("ext/db:5432", None, ("external", "db", 5432, None)),
    ("db", None, ("external", "db", None, None)),
    ("node/node2", None, ("node", "node2", None, None)),
    ("node3:10250", None, ("node", "node3", 10250, None)),
    ("10.96.0.10:53", None, ("ip", "10.96.0.10", 53, None)),
]


@pytest.mark.parametrize("typed,client,want", DESTINATIONS)
def test_destinations(model: Cluster, typed: str, client: str | None,
                      want: tuple[str, str, int | None, str | None]) -> None:
    pod = model.pod(*client.split("/")) if client else None
    t = names.resolve_destination(model, typed, pod)
    assert (t.kind, t.name, t.port, t.protocol) == want
    if t.kind == "service":
        assert t.ip == model.service(*t.name.split("/")).cluster_ip


def test_dns_name_of_a_pod_record(model: Cluster) -> None:
    pod = model.pod("shop", "redis-1")
    t = names.resolve_destination(model, f"{str(pod.ip).replace('.', '-')}.shop.pod")
    assert (t.kind, t.name) == ("pod", "shop/redis-1")
    assert t.note == f"DNS {str(pod.ip).replace('.', '-')}.shop.pod.cluster.local A {pod.ip}"


def test_port_protocol_follows_the_asked_protocol(model: Cluster) -> None:
    t = names.resolve_destination(model, "kube-dns.kube-system:53", protocol="TCP")
    assert (t.port, t.protocol) == (53, "TCP")
    with pytest.raises(TopologyError, match=r"port dns of Service kube-system/kube-dns is UDP, "
                                            r"not TCP \(-p\)"):
        names.resolve_destination(model, "kube-dns.kube-system:dns", protocol="TCP")
    with pytest.raises(TopologyError, match=r"port grpc of pod shop/backend-\S+ is TCP, not UDP"):
        names.resolve_destination(model, "shop/deploy/backend:grpc", protocol="UDP")


def test_headless_service_is_its_first_ready_endpoint(model: Cluster) -> None:
    """D-4: a headless name's A records are its ready endpoints; one is chosen, by pod name."""
    t = names.resolve_destination(model, "redis.shop:redis")
    assert (t.kind, t.name, t.port, t.protocol) == ("pod", "shop/redis-0", 6379, "TCP")
    assert "headless Service shop/redis: pod shop/redis-0, the first by name of 2 ready " \
           "endpoints" in t.note


def test_a_service_as_source_is_one_of_its_pods(model: Cluster) -> None:
    for typed in ("shop/backend", "shop/svc/backend", "backend.shop",
                  "backend.shop.svc.cluster.local"):
        t = names.resolve_source(model, typed)
        assert (t.kind, t.name) == ("pod", first_ready(model, "Deployment", "shop", "backend"))
        assert "Service shop/backend: pod " in t.note
    # as a source, ns/name is the pod before the Service
    assert names.resolve_source(model, "shop/redis-1").name == "shop/redis-1"


def test_search_list_and_ndots(model: Cluster) -> None:
    """D-10: fewer than 5 dots: every search domain first, then as given; 5 or more: as given
    first; a trailing dot: only as given."""
    assert names.candidates(model, "web", "shop") == [
        "web.shop.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local.", "web."]
    assert names.candidates(model, "a.b.c.d.e.f", "shop")[0] == "a.b.c.d.e.f."
    assert names.candidates(model, "web.shop.svc.cluster.local.", "x") == [
        "web.shop.svc.cluster.local."]


def test_zone_comes_from_the_cluster(tmp_path: Path) -> None:
    doc = (EXAMPLE / "cluster.yaml").read_text().replace(
        "mode: host-gw", "mode: host-gw\n  dnsDomain: corp.internal")
    (tmp_path / "cluster.yaml").write_text(doc)
    for f in EXAMPLE.glob("*.yaml"):
        if f.name != "cluster.yaml":
            (tmp_path / f.name).write_text(f.read_text())
    cluster = load_cluster(tmp_path)
    assert cluster.config.dns_domain == "corp.internal"
    t = names.resolve_destination(cluster, "backend.shop.svc.corp.internal:grpc")
    assert (t.name, t.port) == ("shop/backend", 9090)
    with pytest.raises(TopologyError, match="unknown destination"):
        names.resolve_destination(cluster, "backend.shop.svc.cluster.local")


# --- errors -------------------------------------------------------------------------------

ERRORS = [  # resolve, typed, the message's words
    ("destination", "shop/backnd", "unknown destination 'shop/backnd': did you mean "
                                   "'shop/backend'"),
    ("source", "shop/deploy/backnd", "unknown source 'shop/deploy/backnd': did you mean "
                                     "'shop/deploy/backend'"),
    ("source", "deploy/backend", "did you mean 'shop/deploy/backend'"),
    ("source", "monitoring/daemonset/node-exportr",
     "did you mean 'monitoring/daemonset/node-exporter'"),
    ("destination", "backend.shp:grpc", "did you mean 'backend.shop:grpc'"),
    ("destination", "backend.shop.svc.cluster.locl", "unknown destination"),
    ("destination", "kube-dns.kube-system:dnss", "Service kube-system/kube-dns has no port "
                                                 "'dnss': did you mean 'dns'"),
    ("destination", "backend.shop:9091", "Service shop/backend has no port 9091 (it has "
                                         "9090/TCP (grpc))"),
    ("destination", "shop/redis-0:rediss", "pod shop/redis-0 declares no port 'rediss': did "
                                           "you mean 'redis'"),
    ("destination", "shop/dep/backend", "'dep' is not a kind"),
    ("destination", "elsewhere.shop", "ExternalName (CNAME db.example.com)"),
    ("destination", "example.com", "kemu emulates no upstream DNS"),
    ("destination", "ext/db:postgres", "external host db has no named ports"),
    ("destination", "10.0.0.1:70000", "port 70000 is not 1..65535"),
    ("source", "default/client:80", "a source takes no port"),
    ("source", "rc/nothing-like-it", "not a pod, workload, Service, external host, node or "
                                     "IPv4 address"),
]


@pytest.mark.parametrize("role,typed,words", ERRORS)
def test_errors_name_the_nearest(model: Cluster, role: str, typed: str, words: str) -> None:
    resolve = names.resolve_source if role == "source" else names.resolve_destination
    with pytest.raises(TopologyError) as err:
        resolve(model, typed)
    assert words in str(err.value)
    assert str(err.value).count("'") <= 2 + 2 * 3 + 2  # typed, up to 3 suggestions, a port


def test_suggestions_are_at_most_three_and_one_per_object(model: Cluster) -> None:
    with pytest.raises(TopologyError) as err:
        names.resolve_destination(model, "shop/fronted")
    message = str(err.value)
    suggested = message.split("did you mean ")[1]
    assert suggested.count("'") // 2 <= 3
    assert "'shop/frontend'" in suggested
    assert "'shop/deploy/frontend'" in suggested  # the Deployment: another object


# --- the CLI ------------------------------------------------------------------------------

CLI = [  # arguments, exit code, lines the text output starts with
    (["-S", "shop/deploy/frontend", "-D", "backend:grpc"], 0,
     ["source: shop/deploy/frontend -> pod {Deployment shop/frontend} ",
      "destination: backend:grpc -> Service shop/backend {svc shop/backend}:9090/TCP (DNS "
      "backend = backend.shop.svc.cluster.local; Service shop/backend port 9090/TCP (grpc))"]),
    (["-S", "shop/deployment/frontend", "-D", "kube-dns.kube-system.svc.cluster.local:dns"], 0,
     ["source: shop/deployment/frontend -> pod {Deployment shop/frontend} ",
      "destination: kube-dns.kube-system.svc.cluster.local:dns -> Service kube-system/kube-dns "
      "{svc kube-system/kube-dns}:53/UDP"]),
    (["-S", "shop/sts/redis", "-D", "ext/db:5432"], 0,
     ["source: shop/sts/redis -> pod {StatefulSet shop/redis} ",
      "destination: ext/db:5432 -> external host db 172.18.0.200:5432 (port 5432)"]),
    (["-S", "shop/statefulset/redis", "-D", "redis-1.redis:redis"], 0,
     ["source: shop/statefulset/redis -> pod {StatefulSet shop/redis} ",
      "destination: redis-1.redis:redis -> pod shop/redis-1 "]),
    (["-S", "monitoring/ds/node-exporter", "-D", "backend.shop:9090"], 0,
     ["source: monitoring/ds/node-exporter -> pod {DaemonSet monitoring/node-exporter} "]),
    (["-S", "monitoring/daemonset/node-exporter", "-D", "rs/web:http"], 0,
     ["source: monitoring/daemonset/node-exporter -> pod {DaemonSet monitoring/node-exporter} ",
      "destination: rs/web:http -> pod {ReplicaSet default/web} "]),
    (["-S", "replicaset/web", "-D", "rc/guestbook:http-server"], 0,
     ["source: replicaset/web -> pod {ReplicaSet default/web} ",
      "destination: rc/guestbook:http-server -> pod default/guestbook-b "]),
    (["-S", "rc/guestbook", "-D", "guestbook:http"], 0,
     ["source: rc/guestbook -> pod default/guestbook-b ",
      "destination: guestbook:http -> Service default/guestbook "]),
    (["-S", "shop/job/migrate", "-D", "shop/statefulset/redis:6379"], 0,
     ["source: shop/job/migrate -> pod {Job shop/migrate} ",
      "destination: shop/statefulset/redis:6379 -> pod shop/redis-0 "]),
    (["-S", "pod/client", "-D", "shop/deploy/backend:grpc"], 0,
     ["destination: shop/deploy/backend:grpc -> pod {Deployment shop/backend} "]),
    (["-S", "svc/guestbook", "-D", "monitoring/ds/node-exporter:metrics"], 0,
     ["source: svc/guestbook -> pod default/guestbook-b ",
      "destination: monitoring/ds/node-exporter:metrics -> pod "
      "{DaemonSet monitoring/node-exporter} "]),
    (["-S", "backend.shop", "-D", "shop/frontend"], 0,
     ["source: backend.shop -> pod {Deployment shop/backend} "]),
    # -p says icmp: the port is not used; a ClusterIP does not answer pings (kube-proxy)
    (["-S", "client", "-D", "shop/backend:grpc", "-p", "icmp"], 1,
     ["destination: shop/backend:grpc -> Service shop/backend {svc shop/backend}:9090/TCP"]),
    (["-S", "ext/client", "-D", "node2:30080"], 0,
     ["destination: node2:30080 -> node node2 172.18.0.3:30080 (port 30080)"]),
    (["-S", "node1", "-D", "10.244.0.2:80"], 1,  # an IP and port: the pod answers RST
     ["destination: 10.244.0.2:80 -> 10.244.0.2:80 (port 80)"]),
    (["-S", "default/client", "-D", "shop/backend"], 0, ["injected: TCP "]),  # as before
    (["-S", "rs/lonely", "-D", "shop/deploy/backend:grpc", "-p", "udp"], 2, []),
    (["-S", "shop/deploy/frontend", "-D", "shop/legacy:80"], 1,
     ["source: shop/deploy/frontend -> pod "]),
]


def _expand(line: str, model: Cluster) -> str:
    """``{Kind ns/name}`` -> the pod that workload must resolve to; ``{svc ns/name}`` -> the
    Service's ClusterIP."""
    def one(m: re.Match[str]) -> str:
        kind, key = m.group(1), m.group(2)
        if kind == "svc":
            return str(model.service(*key.split("/")).cluster_ip)
        return first_ready(model, kind, *key.split("/"))

    return re.sub(r"\{(\w+) ([\w-]+/[\w-]+)\}", one, line)


@pytest.mark.parametrize("args,code,lines", CLI, ids=[" ".join(c[0]) for c in CLI])
def test_cli_every_form(args: list[str], code: int, lines: list[str], extra: Path,
                        model: Cluster, backend: str, capsys: pytest.CaptureFixture) -> None:
    rc = main(["trace", "-f", str(EXAMPLE), "-f", str(extra), *args, "--minimal",
               "--backend", backend])
    out, err = capsys.readouterr()
    assert rc == code, out + err
    assert "Traceback" not in err
    got = out.splitlines()
    for n, want in enumerate(lines):
        assert got[n].startswith(_expand(want, model)), got[n]
    if code != 2:
        injected = next(line for line in got if line.startswith("injected: "))
        chosen = [line.split(" -> pod ")[1].split(" ")[:2] for line in got
                  if line.startswith("source: ")]
        if chosen:  # the packet went out from the chosen pod, with its address
            key, ip = chosen[0]
            assert ip == str(model.pod(*key.split("/")).ip)
            assert injected.split(" ")[2].split(":")[0] == ip
        assert got[-1].startswith("result: ")


def test_cli_protocol_and_port_from_the_name(extra: Path, capsys: pytest.CaptureFixture) -> None:
    """``:dns`` makes the packet UDP to 53 with a DNS query; ``-p`` still decides."""
    assert main(["trace", "-f", str(EXAMPLE), "-S", "shop/deploy/frontend", "-D",
                 "kube-dns.kube-system:dns", "--minimal"]) == 0
    out = capsys.readouterr().out
    assert "injected: UDP " in out and " > 10.96.0.10:53 " in out
    assert "result: answered (DNS answer from 10.96.0.10:53" in out
    assert main(["trace", "-f", str(EXAMPLE), "-S", "client", "-D",
                 "kube-dns.kube-system:53", "-p", "tcp", "--minimal"]) == 0
    out = capsys.readouterr().out
    assert "Service kube-system/kube-dns 10.96.0.10:53/TCP (" in out
    assert "injected: TCP " in out
    assert main(["trace", "-f", str(EXAMPLE), "-S", "client", "-D", "backend.shop:grpc", "-p",
                 "tcp,dport=80"]) == 2
    assert "names port 9090 but -p says dport=80: give the port once" in capsys.readouterr().err
    assert main(["trace", "-f", str(EXAMPLE), "-S", "client", "-D", "backend.shop:grpc", "-p",
                 "tcp,dport=9090", "--minimal"]) == 0


def test_cli_plain_names_print_no_resolution_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", "-f", str(EXAMPLE), "-S", "default/client", "-D",  # (no policy
                 "shop/frontend-tt4zl4844t-qz7l7", "-p", "icmp", "--minimal"]) == 0  # on it)
    assert capsys.readouterr().out.startswith("injected: ICMP ")


@pytest.mark.parametrize("args,words", [
    (["-S", "shop/deploy/frontend", "-D", "shop/backnd"],
     "kemu: unknown destination 'shop/backnd': did you mean 'shop/backend'"),
    (["-S", "deploy/frontend", "-D", "shop/backend"],
     "kemu: unknown source 'deploy/frontend': did you mean 'shop/deploy/frontend'"),
    (["-S", "client", "-D", "backend.shop:grcp"], "has no port 'grcp': did you mean 'grpc'?"),
    (["-S", "client", "-D", "productcatalogservice:grpc"], "unknown destination "
                                                          "'productcatalogservice:grpc'"),
])
def test_cli_errors_exit_2(args: list[str], words: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", "-f", str(EXAMPLE), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert words in captured.err
    assert len(captured.err.splitlines()) == 1


def test_cli_json_says_what_names_became(capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", "-f", str(EXAMPLE), "-S", "shop/sts/redis", "-D", "backend.shop:grpc",
                 "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data)[:4] == ["reachable", "reason", "source", "destination"]
    assert data["source"] == {"typed": "shop/sts/redis", "kind": "pod", "name": "shop/redis-0",
                              "ip": "10.244.2.4", "port": None, "protocol": None,
                              "note": "StatefulSet shop/redis: pod shop/redis-0, the first by "
                                      "name of 2 ready pods"}
    assert data["destination"]["name"] == "shop/backend"
    assert (data["destination"]["port"], data["destination"]["protocol"]) == (9090, "TCP")


# --- the API ------------------------------------------------------------------------------


def test_api_src_takes_every_source_form(extra: Path, model: Cluster, backend: str) -> None:
    from scapy.layers.inet import IP, TCP

    cluster = kemu.load(EXAMPLE, extra, backend=backend)
    t = cluster.tables
    backend_ip = str(model.service("shop", "backend").cluster_ip)
    for typed, kind_ns_name in [("shop/deploy/frontend", ("Deployment", "shop", "frontend")),
                                ("monitoring/ds/node-exporter",
                                 ("DaemonSet", "monitoring", "node-exporter")),
                                ("rc/guestbook", ("ReplicationController", "default",
                                                  "guestbook")),
                                ("shop/job/migrate", ("Job", "shop", "migrate"))]:
        want = first_ready(model, *kind_ns_name)
        iface = cluster.interface_of(typed)
        assert iface == int(t.pod_eth_if[t.pod_key.index(want)])
        assert cluster.resolve_source(typed).name == want
        trace = cluster.send(IP(dst=backend_ip) / TCP(dport=9090), src=typed)
        pod_ip = model.pod(*want.split("/")).ip
        assert trace.verdict().reachable
        assert trace.verdict().reason.startswith("connection established (SYN-ACK from "
                                                 f"{backend_ip}:9090")
        assert f"{pod_ip}" in trace.minimal().splitlines()[0]
    # a Service's DNS name, send_many too
    many = cluster.send_many([IP(dst=backend_ip) / TCP(dport=9090, sport=p)
                              for p in (5001, 5002)], src="redis.shop.svc.cluster.local")
    redis0 = str(model.pod("shop", "redis-0").ip)  # a headless Service's first ready pod
    injected = [line for line in many.minimal().splitlines() if line.startswith("injected")]
    assert [line.split(" ")[2] for line in injected] == [f"{redis0}:5001", f"{redis0}:5002"]
    assert cluster.interface_of("node1/cbr0") == t.iface("node1/cbr0")
    assert cluster.resolve_source("node1/cbr0") is None
    assert cluster.interface_of("172.18.0.3") == int(t.node_local_if[t.node_name.index("node2")])
    assert ipaddress.IPv4Address(int(t.if_ip[cluster.interface_of("ext/db")])) == \
        ipaddress.IPv4Address("172.18.0.200")


def test_api_unknown_source_names_the_nearest(extra: Path) -> None:
    cluster = kemu.load(EXAMPLE, extra)
    with pytest.raises(TopologyError, match=r"unknown source 'shop/sts/rdis': did you mean "
                                            r"'shop/sts/redis'"):
        cluster.interface_of("shop/sts/rdis")
    with pytest.raises(TopologyError, match="unknown source"):
        cluster.send(b"\0" * 60, src="nobody")


def test_headless_service_without_ports_is_its_endpoints(extra: Path) -> None:
    cluster = load_cluster(EXAMPLE, extra)
    cluster.add_service({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "peers", "namespace": "shop"},
                         "spec": {"clusterIP": "None", "selector": {"app": "redis"}}})
    t = names.resolve_destination(cluster, "peers.shop")
    assert (t.kind, t.name, t.port) == ("pod", "shop/redis-0", None)
    cluster.set_pod_ready("shop", "redis-0", False)
    assert names.resolve_destination(cluster, "peers.shop").name == "shop/redis-1"
    cluster.set_pod_ready("shop", "redis-1", False)
    with pytest.raises(TopologyError, match="has no ready endpoint"):
        names.resolve_destination(cluster, "peers.shop")
