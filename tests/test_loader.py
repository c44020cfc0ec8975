"""Loading every kind, defaulting like the API server, and every validation error path."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from kemu.control import load_cluster
from kemu.control.model import (
    IPBlock,
    LabelSelector,
    LabelSelectorRequirement,
    OwnerRef,
    PolicyPort,
)
from kemu.control.workloads import ALPHABET
from kemu.errors import ManifestError

DATA = Path(__file__).parent / "data" / "manifests"
GOOD = DATA / "good"
SFX = f"[{ALPHABET}]"


def problems(*docs: Any) -> list[str]:
    with pytest.raises(ManifestError) as err:
        load_cluster(*docs)
    return [str(p) for p in err.value.problems]


def svc(name: str, spec: dict[str, Any], ns: str = "shop", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns}, "spec": spec, **extra}


def pod(name: str, spec: dict[str, Any] | None = None, ns: str = "shop",
        labels: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": spec or {"containers": [{"name": "c"}]}, **extra}


def deployment(name: str, template_spec: dict[str, Any], replicas: int = 1, ns: str = "shop",
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": template_spec}}}


HTTP = {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]}


@pytest.fixture(scope="module")
def good():
    return load_cluster(GOOD)


# --- every kind -------------------------------------------------------------------------------

def test_kemu_document(good) -> None:
    c = good.config
    assert (c.name, c.mode, c.mtu, c.dns_domain) == ("lab", "vxlan", 1450, "lab.example")
    assert c.node_names == ["alpha", "beta", "gamma"]
    assert [(h.name, str(h.ip), h.ports) for h in c.external_hosts] == [
        ("db", "172.18.0.200", [("TCP", 5432), ("UDP", 53)])]


def test_nodes_from_the_document_with_labels_and_pins(good) -> None:
    assert [(n.name, str(n.internal_ip), str(n.pod_cidr)) for n in good.nodes] == [
        ("alpha", "172.18.0.2", "10.244.0.0/24"), ("beta", "172.18.0.3", "10.244.1.0/24"),
        ("gamma", "172.18.0.50", "10.244.9.0/24")]
    assert good.node("alpha").labels == {
        "disk": "ssd", "kubernetes.io/hostname": "alpha", "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64"}


def test_deployment_pods_are_named_like_the_controller_names_them(good) -> None:
    web = [p for p in good.pods if p.labels.get("app") == "web"]
    assert len(web) == 2
    thash = web[0].labels["pod-template-hash"]
    assert re.fullmatch(f"{SFX}{{10}}", thash)
    for p in web:
        assert re.fullmatch(f"web-{thash}-{SFX}{{5}}", p.name)
        assert p.owner == OwnerRef("ReplicaSet", f"web-{thash}")
        assert p.source == str(GOOD / "workloads.yaml")


def test_replicaset_statefulset_daemonset_job_pods(good) -> None:
    names = [p.name for p in good.pods]
    assert [n for n in names if n.startswith("db-")] == ["db-0", "db-1", "db-2"]
    db1 = good.pod("shop", "db-1")
    assert (db1.hostname, db1.subdomain, db1.owner) == ("db-1", "db", OwnerRef("StatefulSet",
                                                                               "db"))
    assert db1.labels["statefulset.kubernetes.io/pod-name"] == "db-1"
    api = [p for p in good.pods if p.owner == OwnerRef("ReplicaSet", "api")]
    assert len(api) == 1 and re.fullmatch(f"api-{SFX}{{5}}", api[0].name)
    agents = [p for p in good.pods if p.owner == OwnerRef("DaemonSet", "agent")]
    assert [p.node_name for p in agents] == ["alpha"]  # nodeSelector disk=ssd
    jobs = [p for p in good.pods if p.owner == OwnerRef("Job", "backup")]
    assert len(jobs) == 2 and all(p.labels["job-name"] == "backup" for p in jobs)


def test_daemonset_without_selector_runs_on_every_node() -> None:
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"},
          "spec": {"selector": {"matchLabels": {"a": "b"}},
                   "template": {"metadata": {"labels": {"a": "b"}},
                                "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                         "containers": [{"name": "c"}]}}}}
    c = load_cluster(ds)
    assert sorted(p.node_name for p in c.pods) == ["node1", "node2", "node3"]


def test_pods_from_a_json_list_keep_status(good) -> None:
    debug = good.pod("default", "debug")
    assert (debug.node_name, str(debug.ip), debug.ready) == ("beta", "10.244.1.77", False)
    exporter = good.pod("monitoring", "node-exporter")
    assert exporter.host_network and exporter.mac == ""
    assert exporter.ip == good.node("gamma").internal_ip


def test_services_of_every_type(good) -> None:
    web = good.service("shop", "web")
    assert (web.type, str(web.cluster_ip), web.external_traffic_policy) == (
        "LoadBalancer", "10.96.0.11", "Local")
    assert web.load_balancer_ips == [IPv4Address("172.18.0.240")]
    assert web.ports[0].node_port == 30000 and web.ports[0].target_port == "http"
    db = good.service("shop", "db")
    assert db.headless and db.cluster_ip is None
    search = good.service("shop", "search")
    assert (search.type, search.external_name, search.cluster_ip) == (
        "ExternalName", "search.example.com", None)
    assert not search.headless


def test_explicit_endpoint_slice_for_a_selectorless_service(good) -> None:
    ext = good.service("shop", "external-db")
    assert ext.selector is None
    (s,) = good.endpoint_slices(ext)
    assert (s.name, s.managed, [str(e.ip) for e in s.endpoints]) == (
        "external-db-1", False, ["172.18.0.200"])
    assert [(e.ip, n) for e, n in good.backends(ext, ext.ports[0])] == [
        (IPv4Address("172.18.0.200"), 5432)]


def test_network_policy(good) -> None:
    (pol,) = good.policies
    assert pol.key == "shop/db-ingress"
    assert pol.policy_types == ["Ingress", "Egress"]  # P-3: egress section present
    assert pol.pod_selector == LabelSelector(match_labels={"app": "db"})
    (rule,) = pol.ingress
    assert rule.peers[0].pod_selector == LabelSelector(match_labels={"app": "web"})
    assert rule.peers[0].namespace_selector == LabelSelector(
        match_labels={"kubernetes.io/metadata.name": "shop"})
    assert rule.peers[1].ip_block == IPBlock(IPv4Network("172.18.0.0/24"),
                                             [IPv4Network("172.18.0.100/32")])
    assert rule.ports == [PolicyPort("TCP", "pg"), PolicyPort("UDP", 5000, 5010)]
    assert len(pol.egress) == 1 and pol.egress[0].peers == [] and pol.egress[0].ports == []


def test_namespaces_explicit_and_implicit(good) -> None:
    assert sorted(good.namespaces) == ["default", "kube-system", "monitoring", "shop"]
    assert all(ns.implicit for ns in good.namespaces.values())
    c = load_cluster({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "team", "labels": {"owner": "me"}}})
    assert c.namespaces["team"].labels == {"owner": "me", "kubernetes.io/metadata.name": "team"}
    assert not c.namespaces["team"].implicit and c.namespaces["default"].implicit


def test_ignored_kinds_are_listed_not_errors(good) -> None:
    src = GOOD / "ignored.yaml"
    assert good.ignored == [
        f"{src}: shop/ConfigMap/settings ignored (ConfigMap is not modelled)",
        f"{src}: shop/PodDisruptionBudget/web ignored (PodDisruptionBudget is not modelled)",
        f"{src}: shop/Secret/token ignored (Secret is not modelled)"]


def test_other_api_groups_of_modelled_kinds_are_ignored() -> None:
    c = load_cluster({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
                      "metadata": {"name": "capi"}})
    assert c.ignored == ["<dict>: Cluster/capi ignored (cluster.x-k8s.io/v1beta1 Cluster is "
                         "not modelled)"]


def test_a_finished_job_makes_no_new_pods() -> None:
    done = pod("migrate-x1", status={"phase": "Succeeded"})
    done["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "migrate"}]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate",
                                                                 "namespace": "shop"},
           "spec": {"template": {"spec": {"containers": [{"name": "m"}]}}}}
    c = load_cluster(done, job)
    assert c.pods == [] and len(c.ignored) == 2


def test_completed_pods_and_workloads_whose_pods_are_given_are_ignored() -> None:
    done = pod("done", status={"phase": "Succeeded", "podIP": "10.244.0.2"})
    owned = pod("web-abc-12345", labels={"app": "web"})
    owned["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-abc",
                                             "controller": True}]
    c = load_cluster(done, owned, deployment("web", HTTP))
    assert [p.name for p in c.pods] == ["web-abc-12345"]
    assert c.ignored == ["<dict>: shop/Deployment/web ignored (its pods are given)",
                         "<dict>: shop/Pod/done ignored (phase Succeeded: not running)"]


# --- defaulting --------------------------------------------------------------------------------

def test_service_defaults() -> None:
    c = load_cluster(svc("web", {"ports": [{"port": 80}]}, ns=None) | {
        "metadata": {"name": "web"}})
    s = c.service("default", "web")
    assert (s.type, s.session_affinity, s.affinity_timeout) == ("ClusterIP", "None", 10800)
    assert (s.external_traffic_policy, s.internal_traffic_policy) == ("Cluster", "Cluster")
    p = s.ports[0]
    assert (p.port, p.protocol, p.target_port, p.node_port, p.name) == (80, "TCP", 80, 0, "")
    assert s.selector is None and not s.publish_not_ready_addresses


def test_session_affinity_timeout() -> None:
    c = load_cluster(svc("a", {"sessionAffinity": "ClientIP", "ports": [{"port": 80}],
                               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}))
    s = c.service("shop", "a")
    assert (s.session_affinity, s.affinity_timeout) == ("ClientIP", 60)


def test_empty_service_selector_means_selectorless() -> None:
    c = load_cluster(svc("a", {"selector": {}, "ports": [{"port": 80}]}))
    assert c.service("shop", "a").selector is None


@pytest.mark.parametrize("spec, types", [
    ({"podSelector": {}}, ["Ingress"]),
    ({"podSelector": {}, "egress": []}, ["Ingress"]),  # P-3: no egress rule
    ({"podSelector": {}, "egress": [{}]}, ["Ingress", "Egress"]),
    ({"podSelector": {}, "policyTypes": ["Egress"]}, ["Egress"]),
])
def test_policy_types_default_p3(spec: dict[str, Any], types: list[str]) -> None:
    c = load_cluster({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": "p"}, "spec": spec})
    assert c.policies[0].policy_types == types


def test_selector_with_expressions_is_parsed() -> None:
    c = load_cluster({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": "p"}, "spec": {"podSelector": {"matchExpressions": [
                          {"key": "tier", "operator": "NotIn", "values": ["db"]}]}}})
    assert c.policies[0].pod_selector.match_expressions == [
        LabelSelectorRequirement("tier", "NotIn", ["db"])]


def test_without_document_or_nodes_there_are_three_nodes() -> None:
    c = load_cluster(pod("p"))
    assert [n.name for n in c.nodes] == ["node1", "node2", "node3"]
    assert c.config.node_names == ["node1", "node2", "node3"]


def test_node_objects_alone_define_the_nodes() -> None:
    c = load_cluster({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w2"}},
                     {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1"},
                      "spec": {"podCIDRs": ["10.244.7.0/24"]}})
    assert [(n.name, str(n.pod_cidr)) for n in c.nodes] == [("w1", "10.244.7.0/24"),
                                                            ("w2", "10.244.0.0/24")]


def test_node_objects_refine_the_documents_nodes() -> None:
    doc = {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster", "spec": {"nodes": 2}}
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node2", "labels": {
        "zone": "b"}}, "status": {"addresses": [{"type": "InternalIP",
                                                 "address": "172.18.0.9"}]}}
    c = load_cluster(doc, node)
    assert [(n.name, str(n.internal_ip)) for n in c.nodes] == [("node1", "172.18.0.2"),
                                                               ("node2", "172.18.0.9")]
    assert c.node("node2").labels["zone"] == "b"


def test_pod_mac_annotation_and_udp_echo() -> None:
    p = pod("p", {"containers": [{"name": "c", "ports": [
        {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]})
    p["metadata"]["annotations"] = {"kemu.dev/mac": "02:AA:bb:cc:dd:ee",
                                    "kemu.dev/udp-echo": "dns"}
    c = load_cluster(p)
    got = c.pod("shop", "p")
    assert got.mac == "02:aa:bb:cc:dd:ee" and got.containers[0].ports[0].udp_echo


def test_identical_container_lists_parse_alike_and_apart() -> None:
    """Pods repeating a container list (parsed once, then copied) stay independent."""
    containers = [{"name": "c", "ports": [{"name": "dns", "containerPort": 53,
                                           "protocol": "UDP"}]}]
    pods = [pod(f"p{i}", {"containers": [dict(c) for c in containers]}) for i in range(3)]
    pods[1]["metadata"]["annotations"] = {"kemu.dev/udp-echo": "dns"}
    c = load_cluster(pods)
    got = [c.pod("shop", f"p{i}").containers for i in range(3)]
    assert [g[0].ports[0].udp_echo for g in got] == [False, True, False]
    assert got[0] == got[2] and got[0][0] is not got[2][0]
    # the same text with a tuple of ports is still an error after the list was remembered
    bad = pod("q", {"containers": [{"name": "c", "ports": ({"name": "dns", "containerPort": 53,
                                                            "protocol": "UDP"},)}]})
    with pytest.raises(ManifestError) as err:
        load_cluster(pods + [bad])
    assert "spec.containers[0].ports: expected a list, got tuple" in str(err.value)


def test_terminating_pod() -> None:
    p = pod("p")
    p["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert load_cluster(p).pod("shop", "p").terminating


# --- every validation error, with its exact message ----------------------------------------------

DOC = {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "c"}}
NP = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
      "metadata": {"name": "np", "namespace": "shop"}}
SEL_DEP = deployment("web", HTTP)

ERRORS: dict[str, tuple[list[Any], list[str]]] = {
    "service port without port": (
        [svc("web", {"ports": [{"targetPort": 80}]})],
        ["<dict>: shop/Service/web: spec.ports[0].port: required field is missing"]),
    "non-numeric port": (
        [svc("web", {"ports": [{"port": "80"}]})],
        ["<dict>: shop/Service/web: spec.ports[0].port: expected an integer, got a string "
         "('80')"]),
    "numeric string targetPort": (
        [svc("web", {"ports": [{"port": 80, "targetPort": "8080"}]})],
        ["<dict>: shop/Service/web: spec.ports[0].targetPort: '8080' must contain at least "
         "one letter"]),
    "unnamed ports when several": (
        [svc("web", {"ports": [{"port": 80, "name": "http"}, {"port": 81}]})],
        ["<dict>: shop/Service/web: spec.ports[1].name: required when a Service has more "
         "than one port"]),
    "duplicate service port": (
        [svc("web", {"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]})],
        ["<dict>: shop/Service/web: spec.ports[1]: duplicate port 80/TCP"]),
    "unknown protocol": (
        [svc("web", {"ports": [{"port": 80, "protocol": "ICMP"}]})],
        ["<dict>: shop/Service/web: spec.ports[0].protocol: 'ICMP' is not one of TCP, UDP, "
         "SCTP"]),
    "unknown service field": (
        [svc("web", {"ports": [{"port": 80}], "selecter": {"a": "b"}})],
        ["<dict>: shop/Service/web: spec: unknown field 'selecter' (did you mean "
         "'selector'?)"]),
    "service without ports": (
        [svc("web", {"selector": {"a": "b"}})],
        ["<dict>: shop/Service/web: spec.ports: required field is missing (a Service needs "
         "at least one port)"]),
    "invalid clusterIP": (
        [svc("web", {"clusterIP": "10.96.0.300", "ports": [{"port": 80}]})],
        ["<dict>: shop/Service/web: spec.clusterIP: '10.96.0.300' is not a valid IPv4 "
         "address"]),
    "nodePort on ClusterIP service": (
        [svc("web", {"ports": [{"port": 80, "nodePort": 30001}]})],
        ["<dict>: shop/Service/web: spec.ports[0].nodePort: may not be used with type "
         "ClusterIP"]),
    "headless NodePort": (
        [svc("web", {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})],
        ["<dict>: shop/Service/web: spec.clusterIP: None (headless) is not allowed for type "
         "NodePort"]),
    "affinity timeout too long": (
        [svc("web", {"sessionAffinity": "ClientIP", "ports": [{"port": 80}],
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}}})],
        ["<dict>: shop/Service/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 90000 "
         "is out of range 1-86400"]),
    "affinity config without affinity": (
        [svc("web", {"ports": [{"port": 80}],
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 9}}})],
        ["<dict>: shop/Service/web: spec.sessionAffinityConfig: must not be set when "
         "sessionAffinity is None"]),
    "externalName missing": (
        [svc("web", {"type": "ExternalName"})],
        ["<dict>: shop/Service/web: spec.externalName: required field is missing"]),
    "ETP Local on ClusterIP": (
        [svc("web", {"externalTrafficPolicy": "Local", "ports": [{"port": 80}]})],
        ["<dict>: shop/Service/web: spec.externalTrafficPolicy: Local is only for NodePort "
         "and LoadBalancer Services or Services with externalIPs"]),
    "source ranges on NodePort": (
        [svc("web", {"type": "NodePort", "ports": [{"port": 80}],
                     "loadBalancerSourceRanges": ["10.0.0.0/8"]})],
        ["<dict>: shop/Service/web: spec.loadBalancerSourceRanges: is only for type "
         "LoadBalancer"]),
    "label value not a string": (
        [pod("p", labels={"version": 1})],
        ["<dict>: shop/Pod/p: metadata.labels: label 'version' has a number value 1; values "
         "must be strings (quote it)"]),
    "two containers one port (M-4)": (
        [pod("p", {"containers": [{"name": "a", "ports": [{"containerPort": 80}]},
                                  {"name": "b", "ports": [{"containerPort": 80}]}]})],
        ["<dict>: shop/Pod/p: spec.containers[1].ports[0]: port 80/TCP of container 'b' is "
         "already declared by container 'a' (containers of a pod share one network "
         "namespace, M-4)"]),
    "duplicate container port name": (
        [pod("p", {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "x"}]},
                                  {"name": "b", "ports": [{"containerPort": 81,
                                                           "name": "x"}]}]})],
        ["<dict>: shop/Pod/p: spec.containers[1].ports[0].name: duplicate port name 'x' (also "
         "in container 'a')"]),
    "container port out of range": (
        [pod("p", {"containers": [{"name": "a", "ports": [{"containerPort": 0}]}]})],
        ["<dict>: shop/Pod/p: spec.containers[0].ports[0].containerPort: 0 is out of range "
         "1-65535"]),
    "pod without containers": (
        [pod("p", {"containers": []})],
        ["<dict>: shop/Pod/p: spec.containers: must have at least one container"]),
    "pod without spec": (
        [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}],
        ["<dict>: default/Pod/p: spec: required field is missing",
         "<dict>: default/Pod/p: spec.containers: required field is missing"]),
    "nodeName of a missing node": (
        [pod("p", {"nodeName": "node9", "containers": [{"name": "c"}]})],
        ["<dict>: shop/Pod/p: spec.nodeName: node 'node9' does not exist (nodes: node1, "
         "node2, node3)"]),
    "nodeSelector matching no node": (
        [deployment("web", {"nodeSelector": {"gpu": "yes"}, "containers": [{"name": "c"}]})],
        ["<dict>: shop/Deployment/web: spec.template.spec.nodeSelector: matches no node's "
         "labels (nodes: node1, node2, node3)"]),
    "deployment selector not matching template": (
        [deployment("web", HTTP) | {"spec": {"selector": {"matchLabels": {"app": "x"}},
                                             "template": {"metadata": {"labels": {"app": "y"}},
                                                          "spec": HTTP}}}],
        ["<dict>: shop/Deployment/web: spec.selector: does not match the template's labels "
         "(spec.template.metadata.labels)"]),
    "deployment without selector": (
        [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
          "spec": {"template": {"spec": HTTP}}}],
        ["<dict>: default/Deployment/d: spec.selector: required field is missing"]),
    "mac annotation on a template": (
        [deployment("web", HTTP) | {"spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"},
                                      "annotations": {"kemu.dev/mac": "02:00:00:00:00:01"}},
                         "spec": HTTP}}}],
        ["<dict>: shop/Deployment/web: spec.template.metadata.annotations[kemu.dev/mac]: only "
         "a Pod can pin its MAC (a template makes many pods)"]),
    "multicast mac": (
        [pod("p") | {"metadata": {"name": "p", "annotations": {
            "kemu.dev/mac": "01:00:5e:00:00:01"}}}],
        ["<dict>: default/Pod/p: metadata.annotations[kemu.dev/mac]: '01:00:5e:00:00:01' is "
         "a multicast MAC address"]),
    "udp echo of a missing port": (
        [pod("p") | {"metadata": {"name": "p", "annotations": {"kemu.dev/udp-echo": "53"}}}],
        ["<dict>: default/Pod/p: metadata.annotations[kemu.dev/udp-echo]: '53' is not a UDP "
         "containerPort of this pod"]),
    "duplicate object": (
        [svc("a", {"ports": [{"port": 80}]}), svc("a", {"ports": [{"port": 81}]})],
        ["<dict>: shop/Service/a: metadata.name: duplicate Service (also in <dict>)"]),
    "duplicate pod from a workload": (
        [pod("web-0"), {"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "metadata": {"name": "web", "namespace": "shop"},
                        "spec": {"selector": {"matchLabels": {"a": "b"}},
                                 "template": {"metadata": {"labels": {"a": "b"}},
                                              "spec": HTTP}}}],
        ["<dict>: shop/StatefulSet/web: metadata.name: pod shop/web-0 is defined twice (also "
         "in <dict>)"]),
    "missing kind": (
        [{"apiVersion": "v1", "metadata": {"name": "x"}}],
        ["<dict>: document 1: kind: required field is missing"]),
    "missing apiVersion": (
        [{"kind": "Pod", "metadata": {"name": "x"}}],
        ["<dict>: default/Pod/x: apiVersion: required field is missing"]),
    "missing name": (
        [{"apiVersion": "v1", "kind": "Pod", "metadata": {}}],
        ["<dict>: document 1: metadata.name: required field is missing"]),
    "invalid service name": (
        [svc("9web", {"ports": [{"port": 80}]})],
        ["<dict>: shop/Service/9web: metadata.name: '9web' must consist of lowercase letters, "
         "digits and '-', start with a lowercase letter and end with a letter or digit"]),
    "kemu document version": (
        [{"apiVersion": "kemu.dev/v2", "kind": "Cluster"}],
        ["<dict>: Cluster/kemu: apiVersion: 'kemu.dev/v2' is not supported (use "
         "kemu.dev/v1alpha1)"]),
    "kemu document unknown field": (
        [DOC | {"spec": {"node": 3}}],
        ["<dict>: Cluster/c: spec: unknown field 'node' (did you mean 'nodes'?)"]),
    "two kemu documents": (
        [DOC, DOC | {"metadata": {"name": "d"}}],
        ["<dict>: Cluster/d: only one kemu Cluster document is allowed (also <dict>: "
         "Cluster/c)"]),
    "bad cluster CIDR": (
        [DOC | {"spec": {"clusterCIDR": "10.244.0.1/16"}}],
        ["<dict>: Cluster/c: spec.clusterCIDR: '10.244.0.1/16' has host bits set"]),
    "gateway outside node network": (
        [DOC | {"spec": {"gateway": "10.0.0.1"}}],
        ["<dict>: Cluster/c: spec.gateway: 10.0.0.1 is outside the node network "
         "172.18.0.0/24"]),
    "bad external host port": (
        [DOC | {"spec": {"externalHosts": [{"name": "x", "ip": "172.18.0.9",
                                            "ports": ["http"]}]}}],
        ["<dict>: Cluster/c: spec.externalHosts[0].ports[0]: 'http' is not like \"tcp/80\""]),
    "external host on the gateway": (
        [DOC | {"spec": {"externalHosts": [{"name": "x", "ip": "172.18.0.1"}]}}],
        ["<dict>: Cluster/c: spec.externalHosts[0].ip: 172.18.0.1 is the node network's "
         "gateway"]),
    "node not in the document": (
        [DOC | {"spec": {"nodes": 1}}, {"apiVersion": "v1", "kind": "Node",
                                        "metadata": {"name": "other"}}],
        ["<dict>: Node/other: metadata.name: node 'other' is not among the kemu document's "
         "nodes (node1)"]),
    "node IP differs from the document": (
        [DOC | {"spec": {"nodes": [{"name": "a", "ip": "172.18.0.5"}]}},
         {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"},
          "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.6"}]}}],
        ["<dict>: Node/a: status.addresses[0].address: 172.18.0.6 differs from 172.18.0.5 "
         "given in the kemu document"]),
    "policy without podSelector": (
        [NP | {"spec": {"ingress": [{}]}}],
        ["<dict>: shop/NetworkPolicy/np: spec.podSelector: required field is missing (use {} "
         "to select all pods)"]),
    "policy except outside cidr": (
        [NP | {"spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
            "cidr": "10.0.0.0/8", "except": ["11.0.0.0/24"]}}]}]}}],
        ["<dict>: shop/NetworkPolicy/np: spec.ingress[0].from[0].ipBlock.except[0]: "
         "11.0.0.0/24 is not strictly inside cidr 10.0.0.0/8"]),
    "policy ipBlock with a selector": (
        [NP | {"spec": {"podSelector": {}, "egress": [{"to": [{
            "ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}}],
        ["<dict>: shop/NetworkPolicy/np: spec.egress[0].to[0]: ipBlock cannot be combined "
         "with podSelector or namespaceSelector"]),
    "policy empty peer": (
        [NP | {"spec": {"podSelector": {}, "ingress": [{"from": [{}]}]}}],
        ["<dict>: shop/NetworkPolicy/np: spec.ingress[0].from[0]: must specify a peer "
         "(podSelector, namespaceSelector or ipBlock)"]),
    "policy endPort with a named port": (
        [NP | {"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "http",
                                                                   "endPort": 90}]}]}}],
        ["<dict>: shop/NetworkPolicy/np: spec.ingress[0].ports[0].endPort: requires a numeric "
         "port"]),
    "policy endPort below port": (
        [NP | {"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 90,
                                                                   "endPort": 80}]}]}}],
        ["<dict>: shop/NetworkPolicy/np: spec.ingress[0].ports[0].endPort: 80 is less than "
         "port 90"]),
    "policy bad policyType": (
        [NP | {"spec": {"podSelector": {}, "policyTypes": ["ingress"]}}],
        ["<dict>: shop/NetworkPolicy/np: spec.policyTypes[0]: 'ingress' is not one of "
         "Ingress, Egress"]),
    "selector operator": (
        [NP | {"spec": {"podSelector": {"matchExpressions": [
            {"key": "a", "operator": "Equals", "values": ["b"]}]}}}],
        ["<dict>: shop/NetworkPolicy/np: spec.podSelector.matchExpressions[0].operator: "
         "'Equals' is not one of In, NotIn, Exists, DoesNotExist"]),
    "endpoint slice without service label": (
        [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": []}],
        ["<dict>: default/EndpointSlice/s: metadata.labels: the label "
         "kubernetes.io/service-name is required (it names the Service)"]),
    "endpoint slice bad address": (
        [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "x"}},
          "addressType": "IPv4", "endpoints": [{"addresses": ["nope"]}]}],
        ["<dict>: default/EndpointSlice/s: endpoints[0].addresses[0]: 'nope' is not a valid "
         "IPv4 address"]),
}


@pytest.mark.parametrize("docs, expected", list(ERRORS.values()), ids=list(ERRORS))
def test_validation_error(docs: list[Any], expected: list[str]) -> None:
    assert problems(*docs) == expected


def test_every_problem_of_every_file_is_reported_together() -> None:
    bad = DATA / "bad"
    got = problems(bad)
    assert len(got) == 8
    assert got[0].startswith(f"{bad / 'conflicts.yaml'}: ")
    assert got[-1] == (f"{bad / 'web.yaml'}: shop/Deployment/web: spec.template.spec: unknown "
                       "field 'contianers' (did you mean 'containers'?)")
    assert {g.split(":")[0] for g in got} == {str(bad / n) for n in (
        "conflicts.yaml", "not-a-mapping.yaml", "syntax.json", "syntax.yaml", "web.yaml")}


def test_named_target_port_with_no_selected_pods_is_fine() -> None:
    c = load_cluster(svc("web", {"selector": {"app": "none"},
                                 "ports": [{"port": 80, "targetPort": "htp"}]}))
    assert c.service("shop", "web").ports[0].target_port == "htp"


def test_named_target_port_found_on_some_pod_is_fine() -> None:
    other = {"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 81}]}]}
    c = load_cluster(pod("a", HTTP, labels={"app": "x"}), pod("b", other, labels={"app": "x"}),
                     svc("s", {"selector": {"app": "x"},
                               "ports": [{"port": 80, "targetPort": "web"}]}))
    assert len(c.backends(c.service("shop", "s"), c.service("shop", "s").ports[0])) == 1


# --- found by tests/test_fuzz.py: sizes that must be refused or handled fast --------------------

def test_many_replicas_are_named_in_linear_time() -> None:
    """A Deployment of 100,000 replicas (the most allowed) took minutes: each new pod name was
    looked up in a list of the names before it."""
    import time

    from kemu.control.workloads import expand

    start = time.perf_counter()
    pods = expand("ReplicaSet", "shop", "web", 100_000, {})
    assert len({p.name for p in pods}) == 100_000
    assert time.perf_counter() - start < 10


def test_job_parallelism_and_completions_are_bounded() -> None:
    """``parallelism: 2**70`` made kemu try to name 2**70 pods (a hang)."""
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "shop"},
           "spec": {"parallelism": 2**70, "completions": -1,
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": HTTP}}}
    assert problems(job) == [
        "<dict>: shop/Job/j: spec.parallelism: 1180591620717411303424 is out of range 0-100000",
        "<dict>: shop/Job/j: spec.completions: -1 is out of range 0-100000"]



def test_long_lists_of_ports_containers_and_hosts_load_in_linear_time() -> None:
    """A Service of 20,000 ports took minutes (each port's name and number compared with every
    port before it); so did a pod's containers and the kemu document's external hosts."""
    import time

    n = 20_000
    big_svc = svc("s", {"selector": {"app": "x"},
                        "ports": [{"name": f"p{i}", "port": 1 + i} for i in range(n)]})
    big_pod = pod("p", {"containers": [{"name": f"c{i}"} for i in range(n)]}, labels={"app": "x"})
    hosts = DOC | {"spec": {"nodeNetwork": "172.16.0.0/12", "externalHosts": [
        {"name": f"h{i}", "ip": f"172.20.{i // 250}.{i % 250 + 1}"} for i in range(n)]}}
    start = time.perf_counter()
    cluster = load_cluster(big_svc, big_pod, hosts)
    assert time.perf_counter() - start < 20
    assert len(cluster.service("shop", "s").ports) == n
    assert len(cluster.pod("shop", "p").containers) == n
    assert len(cluster.config.external_hosts) == n
    twice = svc("t", {"ports": [{"name": "a", "port": 1}, {"name": "a", "port": 1}]})
    assert problems(twice) == ["<dict>: shop/Service/t: spec.ports[1].name: duplicate port "
                               "name 'a'", "<dict>: shop/Service/t: spec.ports[1]: duplicate "
                               "port 1/TCP"]
