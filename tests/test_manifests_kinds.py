"""Kinds of real manifests: ReplicationController, legacy v1 Endpoints mirrored into
EndpointSlices, misspelt kinds and fields as errors with suggestions, repeated errors grouped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kemu.control import load_cluster
from kemu.control.cluster import Cluster
from kemu.control.loader import MAX_MIRRORED_PER_SUBSET
from kemu.errors import ManifestError
from kemu.frontend.cli import main

DATA = Path(__file__).resolve().parent / "data" / "manifests"
GUESTBOOK = DATA / "guestbook-go.json"


def problems(*docs: Any) -> list[str]:
    with pytest.raises(ManifestError) as err:
        load_cluster(*docs)
    return [str(p) for p in err.value.problems]


def backends(c: Cluster, key: str, port: int = 0) -> list[tuple[str, int, bool]]:
    svc = c.service(*key.split("/"))
    return [(str(ep.ip), tp, ep.ready) for ep, tp in c.backends(svc, svc.ports[port])]


def rc(name: str, labels: dict[str, str], replicas: int | None = None,
       selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"metadata": {"labels": labels}, "spec": {
        "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    if selector is not None:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec}


def svc(name: str, spec: dict[str, Any], ns: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


# --- ReplicationController -------------------------------------------------------------------

def test_replication_controller_makes_its_pods() -> None:
    c = load_cluster(rc("web", {"app": "web"}, 3, {"app": "web"}))
    assert [(p.name.rsplit("-", 1)[0], p.owner.kind if p.owner else "") for p in c.pods] == \
        [("web", "ReplicationController")] * 3
    assert len({p.name for p in c.pods}) == 3


def test_replication_controller_defaults_replicas_1_and_selector_to_labels() -> None:
    c = load_cluster(rc("web", {"app": "web", "tier": "fe"}))
    assert len(c.pods) == 1 and c.pods[0].labels == {"app": "web", "tier": "fe"}


@pytest.mark.parametrize("selector, message", [
    ({"app": "other"}, "spec.selector: does not match the template's labels"),
    ({}, "spec.selector: must not be empty"),
])
def test_replication_controller_selector_is_checked(selector: dict[str, str],
                                                    message: str) -> None:
    assert problems(rc("web", {"app": "web"}, 1, selector)) == [
        f"<dict>: shop/ReplicationController/web: {message}" + (
            " (spec.template.metadata.labels)" if "match" in message else "")]


def test_guestbook_go_services_have_endpoints() -> None:
    c = load_cluster(GUESTBOOK)
    assert [(s.name, len(backends(c, s.key))) for s in c.services] == [
        ("guestbook", 3), ("redis-master", 1), ("redis-replica", 2)]
    assert {tp for _, tp, _ in backends(c, "default/guestbook")} == {3000}
    # the only thing said: the guestbook finds redis by name and brings no cluster DNS
    assert c.ignored == [] and [n.message.split(":")[0] for n in c.notices] == [
        "no kube-system/kube-dns Service"]


def test_guestbook_go_trace_reaches_redis(backend: str, capsys: pytest.CaptureFixture) -> None:
    c = load_cluster(GUESTBOOK)
    front = next(p for p in c.pods if p.name.startswith("guestbook-"))
    rc_ = main(["trace", "-f", str(GUESTBOOK), "-S", front.key, "-D", "default/redis-master",
                "--minimal", "--backend", backend])
    out = capsys.readouterr().out
    assert rc_ == 0
    assert out.splitlines()[0].endswith(f"> {c.service('default', 'redis-master').cluster_ip}"
                                        ":6379 [S] ttl 64 => DELIVERED to pod "
                                        f"{c.pods[3].key}")
    assert out.splitlines()[-1].startswith("result: connection established")


# --- legacy v1 Endpoints, mirrored (kubernetes pkg/controller/endpointslicemirroring) ---------

def endpoints(name: str, subsets: list[dict[str, Any]], labels: dict[str, str] | None = None,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta, "subsets": subsets}


LEGACY = svc("db", {"ports": [{"name": "pg", "port": 5432}]})
SUBSET = {"addresses": [{"ip": "172.18.0.50"}, {"ip": "172.18.0.51"}],
          "notReadyAddresses": [{"ip": "172.18.0.52"}],
          "ports": [{"name": "pg", "port": 15432}]}


def test_endpoints_of_a_selectorless_service_are_mirrored() -> None:
    c = load_cluster(LEGACY, endpoints("db", [SUBSET]))
    assert backends(c, "shop/db") == [("172.18.0.50", 15432, True), ("172.18.0.51", 15432, True),
                                      ("172.18.0.52", 15432, False)]
    (s,) = c.endpoint_slices(c.service("shop", "db"))
    assert s.service == "db" and s.name.startswith("db-") and not s.managed


def test_subsets_with_the_same_ports_share_a_slice_others_get_their_own() -> None:
    other = {"addresses": [{"ip": "172.18.0.60"}], "ports": [{"name": "pg", "port": 6000}]}
    same = {"addresses": [{"ip": "172.18.0.53"}], "ports": [{"name": "pg", "port": 15432}]}
    c = load_cluster(LEGACY, endpoints("db", [SUBSET, other, same]))
    slices = c.endpoint_slices(c.service("shop", "db"))
    assert sorted(len(s.endpoints) for s in slices) == [1, 4]


@pytest.mark.parametrize("case, docs", [
    ("skip-mirror label", [LEGACY, endpoints(
        "db", [SUBSET], labels={"endpointslice.kubernetes.io/skip-mirror": "true"})]),
    ("leader-election record", [LEGACY, endpoints(
        "db", [SUBSET], annotations={"control-plane.alpha.kubernetes.io/leader": "{}"})]),
    ("service has a selector", [svc("db", {"selector": {"app": "db"},
                                           "ports": [{"name": "pg", "port": 5432}]}),
                                endpoints("db", [SUBSET])]),
    ("no such service", [endpoints("db", [SUBSET])]),
])
def test_endpoints_that_the_mirroring_controller_skips(case: str, docs: list[Any]) -> None:
    c = load_cluster(*docs)
    assert [ep for s in c.all_endpoint_slices() for ep in s.endpoints] == []
    if case == "skip-mirror label":
        assert c.ignored == ['<dict>: shop/Endpoints/db ignored (labelled endpointslice.'
                             'kubernetes.io/skip-mirror: "true": not mirrored)']


def test_given_mirrored_slices_are_kept_and_not_mirrored_twice() -> None:
    given = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "db-abcde", "namespace": "shop", "labels": {
                 "kubernetes.io/service-name": "db",
                 "endpointslice.kubernetes.io/managed-by":
                     "endpointslicemirroring-controller.k8s.io"}},
             "addressType": "IPv4", "endpoints": [{"addresses": ["172.18.0.50"]}],
             "ports": [{"name": "pg", "port": 15432}]}
    c = load_cluster(LEGACY, endpoints("db", [SUBSET]), given)
    assert [s.name for s in c.all_endpoint_slices()] == ["db-abcde"]
    assert backends(c, "shop/db") == [("172.18.0.50", 15432, True)]


def test_hand_made_slices_are_kept_beside_the_mirror() -> None:
    given = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "db-extra", "namespace": "shop",
                          "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4", "endpoints": [{"addresses": ["172.18.0.70"]}],
             "ports": [{"name": "pg", "port": 15432}]}
    c = load_cluster(LEGACY, endpoints("db", [SUBSET]), given)
    assert len(c.all_endpoint_slices()) == 2
    assert ("172.18.0.70", 15432, True) in backends(c, "shop/db")


def test_ipv6_addresses_are_skipped_and_at_most_1000_per_subset_mirrored() -> None:
    many = {"addresses": [{"ip": f"10.1.{i // 250}.{i % 250 + 1}"} for i in range(1001)]
            + [{"ip": "fd00::1"}], "ports": [{"name": "pg", "port": 1}]}
    c = load_cluster(LEGACY, endpoints("db", [many]))
    assert len(backends(c, "shop/db")) == MAX_MIRRORED_PER_SUBSET
    said = [str(n) for n in c.notices]
    assert any("IPv6 addresses are not modelled: not mirrored" in s for s in said)
    assert any("1001 addresses: the mirroring controller mirrors only the first 1000" in s
               for s in said)


def test_legacy_example_without_endpoints_still_rejects(capsys: pytest.CaptureFixture) -> None:
    c = load_cluster(Path(__file__).resolve().parents[1] / "examples" / "cluster" / "legacy.yaml")
    assert backends(c, "shop/legacy") == []


# --- typos ---------------------------------------------------------------------------------

def obj(api: str, kind: str, name: str = "x", **rest: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, **rest}


@pytest.mark.parametrize("api, kind, hint", [
    ("apps/v1", "Deploymnet", "Deployment"),
    ("v1", "Servce", "Service"),
    ("apps/v1", "deployment", "Deployment"),
    ("networking.k8s.io/v1", "NetworkPolcy", "NetworkPolicy"),
    ("v1", "ReplicationControler", "ReplicationController"),
])
def test_a_kind_that_does_not_exist_is_an_error_with_a_suggestion(api: str, kind: str,
                                                                  hint: str) -> None:
    assert problems(obj(api, kind)) == [
        f"<dict>: default/{kind}/x: kind: '{kind}' is not a kind of {api} (did you mean "
        f"'{hint}'?)"]


def test_a_kind_without_any_close_name_is_an_error_without_suggestion() -> None:
    assert problems(obj("apps/v1", "Zebra")) == [
        "<dict>: default/Zebra/x: kind: 'Zebra' is not a kind of apps/v1"]


def test_real_kinds_kemu_does_not_model_are_said_once_per_kind() -> None:
    c = load_cluster(obj("v1", "ConfigMap", "a"), obj("v1", "ConfigMap", "b"),
                     obj("v1", "Secret", "s"), obj("networking.k8s.io/v1", "Ingress", "i"),
                     obj("rbac.authorization.k8s.io/v1", "ClusterRole", "r"),
                     obj("example.com/v1", "Widget", "w"))
    assert [str(n) for n in c.notices] == [
        "<dict>: default/ConfigMap/a: ConfigMap is not modelled: ignored (and 1 more like it)",
        "<dict>: default/Secret/s: Secret is not modelled: ignored",
        "<dict>: default/Ingress/i: Ingress is not modelled: ignored",
        "<dict>: default/ClusterRole/r: ClusterRole is not modelled: ignored",
        "<dict>: default/Widget/w: Widget is not modelled: ignored"]


def deployment(spec: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    return obj("apps/v1", "Deployment", "web", spec={
        "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec}})


def test_a_misspelt_pod_template_field_is_named_with_its_suggestion() -> None:
    assert problems(deployment({"contianers": [{"name": "c"}]})) == [
        "<dict>: default/Deployment/web: spec.template.spec: unknown field 'contianers' (did "
        "you mean 'containers'?)"]


def test_a_misspelt_container_field_is_named_with_its_suggestion() -> None:
    assert problems(deployment({"containers": [{"name": "c", "prots": []}]})) == [
        "<dict>: default/Deployment/web: spec.template.spec.containers[0]: unknown field "
        "'prots' (did you mean 'ports'?)"]


def test_pod_spec_fields_of_every_kind_are_accepted() -> None:
    spec = {"containers": [{"name": "c", "image": "x", "env": [], "resources": {},
                            "volumeMounts": [], "securityContext": {}}],
            "volumes": [], "tolerations": [], "affinity": {}, "serviceAccountName": "sa",
            "dnsPolicy": "ClusterFirst", "initContainers": [], "priorityClassName": "p"}
    assert len(load_cluster(deployment(spec)).pods) == 1


def test_identical_errors_of_many_pods_are_one_line() -> None:
    got = problems(deployment({"containers": [{"name": "c"}]}, replicas=800))
    assert got == ["<dict>: default/Deployment/web: no free pod address left for 41 pods (the "
                   f"first {got[0].split('the first ')[1].split(')')[0]}): the pod CIDRs are "
                   "full (node1 10.244.0.0/24, node2 10.244.1.0/24, node3 10.244.2.0/24)"]


def test_identical_problems_of_many_objects_are_grouped_with_a_count() -> None:
    pods = [obj("v1", "Pod", f"p{i}", spec={"nodeName": "nowhere", "containers": [
        {"name": "c"}]}) for i in range(5)]
    assert problems(*pods) == [
        "<dict>: default/Pod/p0: spec.nodeName: node 'nowhere' does not exist (nodes: node1, "
        "node2, node3) (and 4 more like it)"]
