"""The EndpointSlice controller (S-11, S-12, S-13) and its updates through the Cluster API."""

from __future__ import annotations

import random
import re
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from kemu.control import endpoints, load_cluster
from kemu.control.cluster import Cluster
from kemu.control.model import Container, ContainerPort, Pod, Service, ServicePort
from kemu.control.workloads import ALPHABET
from kemu.errors import ManifestError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cluster"


def pod(name: str, labels: dict[str, str], ports: list[dict[str, Any]] | None = None,
        ns: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": ports or []}], **spec}}


def svc(name: str, selector: dict[str, str] | None, ports: list[dict[str, Any]],
        ns: str = "shop", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": ports, **spec}
    if selector is not None:
        body["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": body}


def backends(c: Cluster, key: str, port: int = 0) -> list[tuple[str, int]]:
    ns, name = key.split("/")
    s = c.service(ns, name)
    return [(str(e.ip), n) for e, n in c.backends(s, s.ports[port])]


@pytest.fixture
def example() -> Cluster:
    return load_cluster(EXAMPLE)


def test_derived_slice_name_conditions_and_ports(example: Cluster) -> None:
    frontend = example.service("shop", "frontend")
    (s,) = example.endpoint_slices(frontend)
    assert re.fullmatch(f"frontend-[{ALPHABET}]{{5}}", s.name)
    assert (s.namespace, s.service, s.managed) == ("shop", "frontend", True)
    assert [(p.port, p.protocol, p.name) for p in s.ports] == [(8080, "TCP", "")]
    assert [e.ip for e in s.endpoints] == sorted(e.ip for e in s.endpoints)
    for e in s.endpoints:
        assert (e.ready, e.serving, e.terminating) == (True, True, False)
        pod_ = example.pod(*e.pod.split("/"))
        assert (e.ip, e.node_name) == (pod_.ip, pod_.node_name)


def test_statefulset_endpoints_carry_their_hostname_d5(example: Cluster) -> None:
    (s,) = example.endpoint_slices(example.service("shop", "redis"))
    assert sorted(e.hostname for e in s.endpoints) == ["redis-0", "redis-1"]


def test_selectorless_service_without_slices_has_no_backends(example: Cluster) -> None:
    legacy = example.service("shop", "legacy")
    assert example.endpoint_slices(legacy) == [] and backends(example, "shop/legacy") == []


def test_backends_resolve_named_target_ports(example: Cluster) -> None:
    assert backends(example, "shop/frontend") == [("10.244.0.4", 8080), ("10.244.1.4", 8080)]
    assert backends(example, "kube-system/kube-dns", 2) == [("10.244.1.2", 9153),
                                                            ("10.244.2.2", 9153)]


def test_service_selecting_nothing_gets_one_empty_slice() -> None:
    c = load_cluster(svc("web", {"app": "none"}, [{"port": 80}]))
    (s,) = c.endpoint_slices(c.service("shop", "web"))
    assert s.endpoints == [] and s.ports == []
    assert backends(c, "shop/web") == []


# --- updates through the API ---------------------------------------------------------------------

def test_add_pod_joins_right_away(example: Cluster) -> None:
    before = example.version
    added = example.add_pod(pod("extra", {"app": "frontend"},
                                [{"name": "http", "containerPort": 8080}]))
    assert example.version == before + 1
    # node2 and node3 have 3 pods, node1 4: the tie goes to node2; its lowest free IP is .5
    assert (added.node_name, str(added.ip)) == ("node2", "10.244.1.5")
    assert ("10.244.1.5", 8080) in backends(example, "shop/frontend")
    assert example.pod_by_ip("10.244.1.5") is added


def test_delete_pod_leaves_and_frees_its_ip(example: Cluster) -> None:
    victim = example.pod_by_ip(IPv4Address("10.244.0.4"))
    assert victim is not None
    example.delete_pod(victim.namespace, victim.name)
    assert backends(example, "shop/frontend") == [("10.244.1.4", 8080)]
    assert example.pod_by_ip("10.244.0.4") is None
    again = example.add_pod(pod("again", {"app": "x"}, nodeName="node1"))
    assert str(again.ip) == "10.244.0.4"


def test_relabel_moves_a_pod_between_services(example: Cluster) -> None:
    p = example.pod_by_ip("10.244.0.4")
    assert p is not None
    example.set_pod_labels(p.namespace, p.name, {"app": "backend"})
    assert backends(example, "shop/frontend") == [("10.244.1.4", 8080)]
    assert ("10.244.0.4", 9090) not in backends(example, "shop/backend")  # no 'grpc' port
    example.set_pod_labels(p.namespace, p.name, {"app": "frontend"})
    assert len(backends(example, "shop/frontend")) == 2


def test_relabel_validates_labels(example: Cluster) -> None:
    with pytest.raises(ManifestError) as err:
        example.set_pod_labels("default", "client", {"app": 3})  # type: ignore[dict-item]
    assert str(err.value) == ("<api>: default/Pod/client: metadata.labels: label 'app' has a "
                              "number value 3; values must be strings (quote it)")


def test_readiness_flips_conditions_s12(example: Cluster) -> None:
    p = example.pod_by_ip("10.244.0.4")
    assert p is not None
    example.set_pod_ready(p.namespace, p.name, False)
    eps = {str(e.ip): e for e, _ in example.backends(example.service("shop", "frontend"),
                                                     example.service("shop", "frontend").ports[0])}
    assert (eps["10.244.0.4"].ready, eps["10.244.0.4"].serving) == (False, False)
    assert eps["10.244.1.4"].ready
    example.set_pod_ready(p.namespace, p.name, True)
    assert all(e.ready for e in example.endpoint_slices(
        example.service("shop", "frontend"))[0].endpoints)


def test_terminating_pod_is_serving_not_ready() -> None:
    term = pod("t", {"app": "w"})
    term["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    c = load_cluster(term, svc("w", {"app": "w"}, [{"port": 80}]))
    (e,) = c.endpoint_slices(c.service("shop", "w"))[0].endpoints
    assert (e.ready, e.serving, e.terminating) == (False, True, True)


def test_publish_not_ready_addresses_makes_endpoints_ready() -> None:
    not_ready = pod("n", {"app": "w"}) | {"status": {"conditions": [{"type": "Ready",
                                                                     "status": "False"}]}}
    c = load_cluster(not_ready, svc("w", {"app": "w"}, [{"port": 80}], clusterIP="None",
                                    publishNotReadyAddresses=True))
    (e,) = c.endpoint_slices(c.service("shop", "w"))[0].endpoints
    assert (e.ready, e.serving) == (True, False)


def test_named_target_port_resolves_per_pod() -> None:
    c = load_cluster(
        pod("a", {"app": "w"}, [{"name": "http", "containerPort": 8080},
                                {"name": "admin", "containerPort": 9000}]),
        pod("b", {"app": "w"}, [{"name": "http", "containerPort": 8081}]),
        svc("w", {"app": "w"}, [{"name": "web", "port": 80, "targetPort": "http"},
                                {"name": "admin", "port": 90, "targetPort": "admin"}]))
    a, b = str(c.pod("shop", "a").ip), str(c.pod("shop", "b").ip)
    assert backends(c, "shop/w", 0) == sorted([(a, 8080), (b, 8081)])
    assert backends(c, "shop/w", 1) == [(a, 9000)]  # b lacks 'admin'
    slices = c.endpoint_slices(c.service("shop", "w"))
    assert len(slices) == 2  # one per distinct port mapping, as the controller does
    assert sorted(len(s.endpoints) for s in slices) == [1, 1]


def test_named_target_port_follows_the_protocol() -> None:
    c = load_cluster(pod("a", {"app": "d"}, [{"name": "dns", "containerPort": 5353,
                                               "protocol": "UDP"},
                                              {"name": "dns-tcp", "containerPort": 5354}]),
                     svc("d", {"app": "d"}, [{"name": "u", "port": 53, "protocol": "UDP",
                                              "targetPort": "dns"}]))
    assert backends(c, "shop/d") == [(str(c.pod("shop", "a").ip), 5353)]
    c.add_service(svc("t", {"app": "d"}, [{"port": 53, "targetPort": "dns"}]))  # accepted
    assert backends(c, "shop/t") == []
    assert "'dns' is no TCP containerPort name of any of the pods" in str(c.notices[-1])


def test_host_network_pods_are_endpoints_with_the_node_ip() -> None:
    c = load_cluster(pod("h", {"app": "h"}, [{"containerPort": 9100}], hostNetwork=True,
                         nodeName="node2"),
                     svc("h", {"app": "h"}, [{"port": 9100}]))
    assert backends(c, "shop/h") == [("172.18.0.3", 9100)]


def test_endpoints_only_from_the_services_namespace() -> None:
    c = load_cluster(pod("a", {"app": "w"}, ns="other"), svc("w", {"app": "w"}, [{"port": 80}]))
    assert backends(c, "shop/w") == []


def test_more_than_100_endpoints_are_split_into_slices() -> None:
    pods = [pod(f"p{i:03}", {"app": "big"}) for i in range(150)]
    c = load_cluster(pods, svc("big", {"app": "big"}, [{"port": 80}]))
    slices = c.endpoint_slices(c.service("shop", "big"))
    assert sorted(len(s.endpoints) for s in slices) == [50, 100]
    assert len({s.name for s in slices}) == 2
    assert len(backends(c, "shop/big")) == 150


def test_explicit_slices_for_selectorless_services_match_ports_by_name() -> None:
    c = load_cluster(svc("ext", None, [{"name": "pg", "port": 5432}, {"name": "x", "port": 1}]),
                     {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {"name": "ext-a", "namespace": "shop",
                                   "labels": {"kubernetes.io/service-name": "ext"}},
                      "addressType": "IPv4",
                      "endpoints": [{"addresses": ["192.0.2.2"],
                                     "conditions": {"ready": False}},
                                    {"addresses": ["192.0.2.1"]}],
                      "ports": [{"name": "pg", "port": 15432}]})
    assert backends(c, "shop/ext", 0) == [("192.0.2.1", 15432), ("192.0.2.2", 15432)]
    assert backends(c, "shop/ext", 1) == []
    ready = [e.ready for e, _ in c.backends(c.service("shop", "ext"),
                                            c.service("shop", "ext").ports[0])]
    assert ready == [True, False]


def test_ipv6_slices_are_ignored() -> None:
    c = load_cluster(svc("e", None, [{"port": 80}]),
                     {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {"name": "e6", "namespace": "shop",
                                   "labels": {"kubernetes.io/service-name": "e"}},
                      "addressType": "IPv6", "endpoints": [{"addresses": ["2001:db8::1"]}]})
    assert c.ignored == ["<dict>: shop/EndpointSlice/e6 ignored (addressType IPv6 is not "
                         "modelled)"]


# --- adding and deleting services and pods ---------------------------------------------------

def test_add_service_allocates_and_derives(example: Cluster) -> None:
    before = example.version
    s = example.add_service(svc("api", {"app": "backend"},
                                [{"port": 80, "targetPort": "grpc"}], type="NodePort"))
    assert example.version == before + 1
    assert (str(s.cluster_ip), s.ports[0].node_port) == ("10.96.0.14", 30000)
    assert backends(example, "shop/api") == [("10.244.0.3", 9090), ("10.244.1.3", 9090),
                                             ("10.244.2.3", 9090)]


def test_add_service_errors_leave_nothing_behind(example: Cluster) -> None:
    count, version = len(example.services), example.version
    with pytest.raises(ManifestError) as err:
        example.add_service(svc("bad", {"app": "backend"},
                                [{"name": "a", "port": 80, "nodePort": 30099},
                                 {"name": "b", "port": 81, "nodePort": 30099}], type="NodePort"))
    assert str(err.value) == ("<api>: shop/Service/bad: spec.ports[1].nodePort: duplicate "
                              "nodePort 30099/TCP")
    assert (len(example.services), example.version) == (count, version)
    ok = example.add_service(svc("good", None, [{"port": 80}]))
    assert str(ok.cluster_ip) == "10.96.0.14"  # the failed service's address was released
    with pytest.raises(ManifestError, match="duplicate Service"):
        example.add_service(svc("good", None, [{"port": 81}]))
    with pytest.raises(ManifestError, match="already used by shop/Service/good"):
        example.add_service(svc("clash", None, [{"port": 80}], clusterIP="10.96.0.14"))
    assert example.service("shop", "good").cluster_ip == IPv4Address("10.96.0.14")


def test_delete_service_frees_its_addresses(example: Cluster) -> None:
    example.delete_service("shop", "frontend")
    with pytest.raises(KeyError, match="no service shop/frontend"):
        example.service("shop", "frontend")
    s = example.add_service(svc("again", None, [{"port": 80, "nodePort": 30080}],
                                type="NodePort"))
    assert (str(s.cluster_ip), s.ports[0].node_port) == ("10.96.0.12", 30080)


def test_add_service_object(example: Cluster) -> None:
    s = example.add_service(Service("shop", "obj", type="NodePort",
                                    ports=[ServicePort(8080, target_port="http")],
                                    selector={"app": "frontend"}))
    assert s.cluster_ip is not None and s.ports[0].node_port == 30000
    assert len(backends(example, "shop/obj")) == 2


def test_add_pod_object_is_placed_and_addressed(example: Cluster) -> None:
    p = example.add_pod(Pod("shop", "obj", node_name="", ip=IPv4Address(0),
                            labels={"app": "frontend"},
                            containers=[Container("c", [ContainerPort(8080, name="http")])]))
    assert (p.node_name, str(p.ip), p.mac != "") == ("node2", "10.244.1.5", True)
    assert ("10.244.1.5", 8080) in backends(example, "shop/frontend")


def test_add_pod_errors(example: Cluster) -> None:
    version = example.version
    with pytest.raises(ManifestError) as err:
        example.add_pod(pod("x", {}, nodeName="node7"))
    assert str(err.value) == ("<api>: shop/Pod/x: spec.nodeName: node 'node7' does not exist "
                              "(nodes: node1, node2, node3)")
    with pytest.raises(ManifestError) as err:
        example.add_pod(pod("client", {}, ns="default"))
    assert str(err.value) == ("<api>: default/Pod/client: metadata.name: pod default/client is "
                              "defined twice (also in " + str(EXAMPLE / "client.yaml") + ")")
    with pytest.raises(ManifestError, match="already used by shop/Pod/redis-0"):
        example.add_pod(pod("y", {}) | {"status": {"podIP": "10.244.2.4"}})
    with pytest.raises(ManifestError, match="expected a Pod, got 'Service'"):
        example.add_pod(svc("s", None, [{"port": 80}]))
    assert example.version == version


def test_missing_objects_raise_key_errors_with_clear_messages(example: Cluster) -> None:
    with pytest.raises(KeyError, match="no pod shop/nope"):
        example.pod("shop", "nope")
    with pytest.raises(KeyError, match=r"no node 'node9' \(nodes: node1, node2, node3\)"):
        example.node("node9")
    with pytest.raises(KeyError, match="no pod shop/nope"):
        example.delete_pod("shop", "nope")
    with pytest.raises(KeyError, match="no service shop/nope"):
        example.delete_service("shop", "nope")


def test_implicit_namespace_for_added_objects(example: Cluster) -> None:
    example.add_pod(pod("x", {}, ns="brand-new"))
    assert example.namespaces["brand-new"].implicit


def test_slices_for_selector_or_missing_services_are_ignored_with_a_reason() -> None:
    def eps(name: str, service: str) -> dict[str, Any]:
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": "shop",
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.1"]}],
                "ports": [{"port": 80}]}

    c = load_cluster(svc("s", {"app": "s"}, [{"port": 80}]), eps("s-1", "s"), eps("x-1", "x"))
    assert c.ignored == [
        "<dict>: shop/EndpointSlice/s-1 ignored (Service shop/s has a selector: kemu derives "
        "its slices; a real kube-proxy would also use this hand-made slice)",
        "<dict>: shop/EndpointSlice/x-1 ignored (no Service shop/x)"]
    assert backends(c, "shop/s") == []


# --- the label index against a plain scan, through random edits -----------------------------

def _scan_state(c: Cluster) -> list[Any]:
    """Every Service's slices and unresolved ports as a scan over ``c.pods`` computes them."""
    return [(s.key, endpoints.derive_slices(s, list(c.pods), c._nodes),
             endpoints.unresolved_target_ports(s, list(c.pods))) for s in c.services]


def _indexed_state(c: Cluster) -> list[Any]:
    return [(s.key, c.endpoint_slices(s), endpoints.unresolved_target_ports(s, c._index))
            for s in c.services]


@pytest.mark.parametrize("seed", range(6))
def test_indexed_endpoints_equal_a_scan_through_api_edits(seed: int) -> None:
    rng = random.Random(seed)
    keys, values = ["app", "tier", "env"], ["web", "db", "x"]

    def labels() -> dict[str, str]:
        return {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, 3))}

    ports = [{"name": "http", "containerPort": 8080}]
    docs: list[dict[str, Any]] = [pod(f"p{i}", labels(), ports if i % 3 else [],
                                      ns=rng.choice(["shop", "ops"])) for i in range(10)]
    docs += [svc(f"s{i}", labels() or {"app": "web"}, [{"port": 80, "targetPort": "http"}],
                 ns=rng.choice(["shop", "ops"])) for i in range(4)]
    c = load_cluster(docs)
    serial = 100
    for _ in range(40):
        op = rng.choice(["add_pod", "delete_pod", "set_pod_labels", "set_pod_ready",
                         "add_service", "delete_service"])
        if op == "add_pod":
            serial += 1
            c.add_pod(pod(f"p{serial}", labels(), ports, ns=rng.choice(["shop", "ops"])))
        elif op == "add_service":
            serial += 1
            c.add_service(svc(f"s{serial}", labels() or {"tier": "db"},
                              [{"port": 80, "targetPort": 8080}],
                              ns=rng.choice(["shop", "ops"])))
        elif op == "delete_service" and c.services:
            s = rng.choice(c.services)
            c.delete_service(s.namespace, s.name)
        elif c.pods:
            p = rng.choice(c.pods)
            if op == "delete_pod":
                c.delete_pod(p.namespace, p.name)
            elif op == "set_pod_labels":
                c.set_pod_labels(p.namespace, p.name, labels())
            else:
                c.set_pod_ready(p.namespace, p.name, rng.random() < 0.5)
        assert _indexed_state(c) == _scan_state(c)
