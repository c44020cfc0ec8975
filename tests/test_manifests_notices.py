"""Accepted but not modelled input said once as a warning (``Cluster.notices``; ``validate``,
``trace`` and ``replay`` print them with ``kemu: warning:``), named targetPorts no pod declares
(accepted, S-13), and NetworkPolicy ``policyTypes`` defaulting (P-3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kemu.control import load_cluster
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster"


def svc(spec: dict[str, Any], status: dict[str, Any] | None = None,
        name: str = "s") -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": name, "namespace": "shop"},
                           "spec": {"ports": [{"port": 80}], **spec}}
    if status is not None:
        out["status"] = status
    return out


def pod(name: str, ports: list[dict[str, Any]], labels: dict[str, str] | None = None,
        **status: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": "shop",
                                        "labels": labels or {"app": "x"}},
                           "spec": {"containers": [{"name": "c", "ports": ports}]}}
    if status:
        out["status"] = status
    return out


NO_DNS = "no kube-system/kube-dns Service"


def said(*docs: Any) -> list[str]:
    """The notices of a cluster of ``docs`` but the one about a missing cluster DNS (these
    small clusters have none: ``test_pods_without_a_cluster_dns_are_warned``)."""
    return [str(n) for n in load_cluster(*docs).notices if NO_DNS not in str(n)]


@pytest.mark.parametrize("docs, notice", [
    ([svc({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"})],
     "spec.ipFamilies: IPv6 is not modelled: the Service gets an IPv4 ClusterIP only"),
    ([svc({"ipFamilyPolicy": "PreferDualStack"})],
     "spec.ipFamilyPolicy: PreferDualStack: dual-stack is not modelled (IPv4 only)"),
    ([svc({"ports": [{"port": 9, "protocol": "SCTP"}]})],
     "spec.ports[0].protocol: SCTP is matched and NATed by port only"),
    ([svc({"type": "LoadBalancer"}, {"loadBalancer": {"ingress": [
        {"ip": "172.18.0.200", "ipMode": "Proxy"}]}})],
     "status.loadBalancer.ingress[0].ipMode: ipMode Proxy is not modelled: kube-proxy "
     "short-circuits this address as for ipMode VIP (S-13)"),
    ([svc({"type": "LoadBalancer"}, {"loadBalancer": {"ingress": [{"hostname": "lb.x"}]}})],
     "status.loadBalancer.ingress[0].hostname: a load balancer known by hostname only"),
    ([svc({"trafficDistribution": "PreferClose"})],
     "spec.trafficDistribution: topology hints are not modelled"),
    ([svc({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
           "healthCheckNodePort": 31000})],
     "spec.healthCheckNodePort: kube-proxy's health-check server is not modelled"),
    ([svc({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"})],
     "spec.loadBalancerClass: kemu's load balancer serves every class"),
    ([pod("p", [{"containerPort": 80, "hostPort": 8080, "hostIP": "127.0.0.1"}])],
     "spec.containers[0].ports[0].hostIP: hostIP is not modelled"),
    ([pod("p", [], podIP="10.244.0.9", podIPs=[{"ip": "10.244.0.9"}, {"ip": "fd00::9"}])],
     "status.podIPs: IPv6 pod addresses are not modelled (IPv4 only)"),
])
def test_accepted_but_not_modelled_input_is_said(docs: list[Any], notice: str) -> None:
    got = said(*docs)
    assert len(got) == 1 and notice in got[0], got


def test_an_ipv6_primary_cluster_ip_takes_the_ipv4_one() -> None:
    c = load_cluster(svc({"clusterIP": "fd00::10", "clusterIPs": ["fd00::10", "10.96.0.77"],
                          "ipFamilies": ["IPv6", "IPv4"]}))
    assert str(c.service("shop", "s").cluster_ip) == "10.96.0.77"


@pytest.mark.parametrize("spec", [
    {}, {"type": "NodePort"}, {"sessionAffinity": "ClientIP"},
    {"ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"},
    {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
])
def test_modelled_input_is_silent(spec: dict[str, Any]) -> None:
    assert said(svc(spec)) == []


def test_the_same_notice_of_many_objects_is_said_once_with_a_count() -> None:
    got = said(*(svc({"ipFamilyPolicy": "PreferDualStack"}, name=f"s{i}") for i in range(4)))
    assert got == ["<dict>: shop/Service/s0: spec.ipFamilyPolicy: PreferDualStack: dual-stack "
                   "is not modelled (IPv4 only) (and 3 more like it)"]


# --- named targetPorts (S-13) ----------------------------------------------------------------

NAMED = svc({"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": "http"}]})


def test_a_named_target_port_no_pod_declares_is_accepted_with_a_warning() -> None:
    c = load_cluster(pod("a", [{"containerPort": 80}]), NAMED)
    s = c.service("shop", "s")
    assert c.backends(s, s.ports[0]) == []
    assert [str(n) for n in c.notices if NO_DNS not in str(n)] == [
        "<dict>: shop/Service/s: spec.ports[0].targetPort: port 80/TCP: 'http' is no TCP "
        "containerPort name of any of the pods it selects: they are left out of its endpoints"]


def test_pods_without_the_named_port_are_left_out() -> None:
    c = load_cluster(pod("a", [{"containerPort": 80}]),
                     pod("b", [{"name": "http", "containerPort": 8080}]), NAMED)
    s = c.service("shop", "s")
    assert [(str(ep.pod), tp) for ep, tp in c.backends(s, s.ports[0])] == [("shop/b", 8080)]
    assert "'http' is no TCP containerPort name of 1 of the 2 pods it selects" in \
        str(c.notices[0])


def test_pods_without_a_cluster_dns_are_warned() -> None:
    """Pods with dnsPolicy ClusterFirst (the default) resolve through kubelet's clusterDNS,
    the tenth address of the service CIDR; without a kube-system/kube-dns Service nothing
    answers there (and a Service of the manifests may hold the address): said once. With
    CoreDNS in the manifests, or no pod using the cluster DNS, nothing is said."""
    a = pod("a", [{"containerPort": 80}])
    got = [str(n) for n in load_cluster(a, NAMED).notices if NO_DNS in str(n)]
    assert got == ["no kube-system/kube-dns Service: 1 pod resolves names through 10.96.0.10 "
                   "(kubelet's clusterDNS) and nothing answers DNS there; shop/s holds that "
                   "address here; add CoreDNS's Deployment and Service (examples/cluster/"
                   "dns.yaml is one)"]
    default = dict(a, spec={**a["spec"], "dnsPolicy": "Default"})
    assert not [n for n in load_cluster(default).notices if NO_DNS in str(n)]
    dns = ROOT / "examples" / "cluster" / "dns.yaml"
    assert not [n for n in load_cluster(a, str(dns)).notices if NO_DNS in str(n)]


# --- NetworkPolicy policyTypes defaulting (P-3) ------------------------------------------------

@pytest.mark.parametrize("spec, types", [
    ({"podSelector": {}}, ["Ingress"]),
    ({"podSelector": {}, "egress": []}, ["Ingress"]),
    ({"podSelector": {}, "egress": None}, ["Ingress"]),
    ({"podSelector": {}, "egress": [{}]}, ["Ingress", "Egress"]),
    ({"podSelector": {}, "policyTypes": [], "egress": [{"to": []}]}, ["Ingress", "Egress"]),
    ({"podSelector": {}, "policyTypes": ["Egress"], "egress": []}, ["Egress"]),
])
def test_policy_types_default_p3(spec: dict[str, Any], types: list[str]) -> None:
    c = load_cluster({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": "p"}, "spec": spec})
    assert c.policies[0].policy_types == types


# --- the front ends say each notice once --------------------------------------------------------

WARNING = ("kemu: warning: {}/lb.yaml: shop/Service/lb1: spec.loadBalancerClass: kemu's load "
           "balancer serves every class (and 1 more like it)")
LB_CLASS = """apiVersion: v1
kind: Service
metadata: {name: lb1, namespace: shop}
spec: {type: LoadBalancer, loadBalancerClass: example.com/lb, selector: {app: frontend},
       ports: [{port: 81, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: lb2, namespace: shop}
spec: {type: LoadBalancer, loadBalancerClass: example.com/lb, selector: {app: frontend},
       ports: [{port: 82, targetPort: 8080}]}
"""


def test_validate_trace_and_replay_warn_once(backend: str, capsys: pytest.CaptureFixture,
                                             tmp_path: Path) -> None:
    """The example cluster plus two Services with the same notice: said once, counted."""
    import shutil

    example = tmp_path / "cluster"
    shutil.copytree(EXAMPLE, example)
    (example / "lb.yaml").write_text(LB_CLASS)
    expected = [WARNING.format(example)]
    assert main(["validate", "-f", str(example)]) == 0
    assert capsys.readouterr().err.splitlines() == expected
    assert main(["trace", "-f", str(example), "-S", "default/client", "-D", "shop/frontend",
                 "--minimal", "--backend", backend]) == 0
    assert capsys.readouterr().err.splitlines() == expected
    assert main(["replay", "-f", str(example), "-r", str(ROOT / "examples" / "capture.pcap"),
                 "-w", str(tmp_path / "out.pcapng"), "--backend", backend]) in (0, 1)
    assert [line for line in capsys.readouterr().err.splitlines()
            if line.startswith("kemu: warning:")] == expected
