"""The upstream network-policy e2e suite on kemu: the x/y/z, a/b/c model, its test list, their
truth tables, probed with real packets by ``kemu policy matrix`` (``matrix``), on both backends.

Scenarios follow ``kubernetes test/e2e/network/netpol/network_policy.go`` test by test: the
same titles, pods (``initializeResources``), policies (built as ``policies.go``'s
``GenNetworkPolicyWithNameAndPod*`` / ``SetSpecIngressRules`` / ``SetSpecEgressRules`` build
them: a rules list sets its policy type) and expectations (``Reachability`` with
``ExpectPeer`` / ``ExpectAllIngress`` / ``ExpectAllEgress`` / ``Expect``, written from the
upstream descriptions, never computed from the policies). Differences from upstream, each on
purpose:

- loopback: upstream ignores a pod's calls to itself (``ignoreLoopback``); kemu allows them
  (P-9: the packet never leaves the pod's netns), so the diagonal is expected allowed;
- SCTP tests are left out (kemu models no SCTP stack); the upstream label-update tests
  (``AddNamespaceLabel``, ``AddPodLabels``) are left out (they need label updates while
  running, not policy updates);
- kemu adds its own cases the issue names (endPort ranges, DNS allowed under an egress deny),
  marked ``kemu:``.

Policy changes while traffic flows (``UpdatePolicy``, ``CreatePolicy`` after a first check,
``cleanNetworkPolicies``) go through ``EmulatedCluster.apply`` / ``delete`` on one running
cluster (P-1, P-2).
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kemu.control.cluster import load_cluster
from kemu.frontend.api import EmulatedCluster
from kemu.frontend.policy_cmd import Case, matrix

MODEL = Path(__file__).resolve().parent / "data" / "netpol" / "model.yaml"
ALL_PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
TCP80, TCP81 = Case(80, "TCP"), Case(81, "TCP")
UDP80, UDP81 = Case(80, "UDP"), Case(81, "UDP")


# ------------------------------------------------------------------ upstream's Reachability
@dataclass(frozen=True)
class Peer:
    namespace: str = ""
    pod: str = ""

    def matches(self, key: str) -> bool:
        ns, _, name = key.partition("/")
        return (not self.namespace or ns == self.namespace) and (not self.pod or
                                                                 name == self.pod)


class Reachability:
    """An expected truth table, set as upstream's ``reachability.go`` sets one."""

    def __init__(self, pods: list[str], default: bool = True) -> None:
        self.pods = pods
        self.cells = {(f, t): default for f in pods for t in pods}

    def expect(self, frm: str, to: str, value: bool) -> Reachability:
        self.cells[(frm, to)] = value
        return self

    def expect_peer(self, frm: Peer, to: Peer, value: bool) -> Reachability:
        for f in self.pods:
            for t in self.pods:
                if frm.matches(f) and to.matches(t):
                    self.cells[(f, t)] = value
        return self

    def expect_all_ingress(self, pod: str, value: bool) -> Reachability:
        return self.expect_peer(Peer(), Peer(*pod.split("/")), value)

    def expect_all_egress(self, pod: str, value: bool) -> Reachability:
        return self.expect_peer(Peer(*pod.split("/")), Peer(), value)

    def marks(self) -> dict[tuple[str, str], str]:
        """``.``/``X`` per cell; loopback allowed (P-9; upstream ignores those cells)."""
        return {(f, t): "." if v or f == t else "X" for (f, t), v in self.cells.items()}

    def text(self) -> str:
        marks = self.marks()
        rows = ["\t".join(["-", *self.pods])]
        rows += ["\t".join([f, *(marks[(f, t)] for t in self.pods)]) for f in self.pods]
        return "\n".join(rows)


# ------------------------------------------------------------------ upstream's policy builders
def sel(labels: dict[str, str] | None = None, **expr: Any) -> dict[str, Any]:
    """A label selector: matchLabels, plus ``In``/``NotIn`` expressions given as
    ``key=(op, values)``."""
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = dict(labels)
    if expr:
        out["matchExpressions"] = [{"key": k.replace("__", "."), "operator": op,
                                    "values": list(vals)} for k, (op, vals) in expr.items()]
    return out


NS_NAME = "kubernetes.io/metadata.name"


def ns_is(name: str) -> dict[str, Any]:
    return {"matchLabels": {NS_NAME: name}}


def ns_expr(op: str, *names: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": NS_NAME, "operator": op, "values": list(names)}]}


def policy(name: str, ns: str, pod_selector: dict[str, Any], ingress: list | None = None,
           egress: list | None = None, types: list[str] | None = None) -> dict[str, Any]:
    """``GenNetworkPolicyWithNameAndPodSelector`` with ``SetSpecIngressRules(ingress...)`` /
    ``SetSpecEgressRules(egress...)``: a list given (even empty) sets its policy type."""
    spec: dict[str, Any] = {"podSelector": pod_selector}
    auto = []
    if ingress is not None:
        spec["ingress"] = ingress
        auto.append("Ingress")
    if egress is not None:
        spec["egress"] = egress
        auto.append("Egress")
    spec["policyTypes"] = types if types is not None else auto
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def pod_is(name: str) -> dict[str, Any]:
    return {"matchLabels": {"pod": name}}


def port(p: int | str, protocol: str | None = None, end: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"port": p}
    if protocol:
        out["protocol"] = protocol
    if end is not None:
        out["endPort"] = end
    return out


# ------------------------------------------------------------------ scenarios
@dataclass
class Check:
    case: Case
    expect: Reachability


@dataclass
class Step:
    """Policies created or replaced (``apply``) and deleted (``ns/name``), then checks."""

    checks: list[Check]
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    title: str
    pods: list[str]
    steps: list[Step]
    extra: list[dict[str, Any]] = field(default_factory=list)  # more manifests

    @property
    def id(self) -> str:
        return "-".join(w for w in "".join(c if c.isalnum() else " " for c in
                                           self.title.lower()).split())[:100]


def R(pods: list[str]) -> Reachability:  # noqa: N802 - upstream's NewReachability(pods, true)
    return Reachability(pods, True)


def ip_of(key: str) -> str:
    ns, _, name = key.partition("/")
    return str(load_cluster(MODEL).pod(ns, name).ip)


def large_cidr(ip: str) -> str:
    """upstream ``makeLargeCIDRForIP``: the /4 around an IPv4 address."""
    return str(ipaddress.IPv4Network(f"{ip}/4", strict=False))


def scenarios() -> list[Scenario]:
    out: list[Scenario] = []

    def add(title: str, pods: list[str], steps: list[Step],
            extra: list[dict[str, Any]] | None = None) -> None:
        out.append(Scenario(title, pods, steps, extra or []))

    p = ["x/a", "x/b", "y/a", "y/b"]
    add("should support a 'default-deny-ingress' policy", p, [Step(
        [Check(TCP80, R(p).expect_peer(Peer(), Peer("x"), False))],
        [policy("deny-ingress", "x", {}, ingress=[])])])

    p = ["x/a", "x/b", "y/a", "y/b"]
    add("UDP: should support a 'default-deny-ingress' policy", p, [Step(
        [Check(UDP80, R(p).expect_peer(Peer(), Peer("x"), False))],
        [policy("deny-all", "x", {}, ingress=[])])])

    p = ["x/a", "x/b", "y/a"]
    add("should support a 'default-deny-all' policy", p, [Step(
        [Check(TCP80, R(p).expect_peer(Peer(), Peer("x"), False)
               .expect_peer(Peer("x"), Peer(), False))],
        [policy("deny-all", "x", {}, ingress=[], egress=[])])])

    p = ["x/a", "x/b", "x/c", "y/a"]
    add("should enforce policy to allow traffic from pods within server namespace based on "
        "PodSelector", p, [Step(
            [Check(TCP80, R(p).expect_all_ingress("x/a", False).expect("x/b", "x/a", True))],
            [policy("x-a-allows-x-b", "x", pod_is("a"),
                    ingress=[{"from": [{"podSelector": pod_is("b")}]}])])])

    p = ["x/a", "x/b", "y/a"]
    add("should enforce policy to allow ingress traffic for a target", p, [Step(
        [Check(TCP80, R(p).expect_all_ingress("x/a", True).expect_all_ingress("x/b", False))],
        [policy("deny-all", "x", {}, ingress=[]),
         policy("allow-all-to-a", "x", pod_is("a"),
                ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}])])])

    p = ["x/a", "x/b", "y/a", "z/a"]
    add("should enforce policy to allow ingress traffic from pods in all namespaces", p, [Step(
        [Check(TCP80, R(p))],
        [policy("allow-from-another-ns", "x", pod_is("a"),
                ingress=[{"from": [{"namespaceSelector": {"matchLabels": {}}}]}])])])

    p = ["x/a", "x/b", "y/a", "z/a"]
    add("should enforce policy to allow traffic only from a different namespace, based on "
        "NamespaceSelector", p, [Step(
            [Check(TCP80, R(p).expect_peer(Peer("x"), Peer("x", "a"), False)
                   .expect_peer(Peer("z"), Peer("x", "a"), False))],
            [policy("allow-client-a-via-ns-selector", "x", pod_is("a"),
                    ingress=[{"from": [{"namespaceSelector": ns_is("y")}]}])])])

    p = ["x/a", "x/b", "y/a"]
    add("should enforce policy based on PodSelector with MatchExpressions", p, [Step(
        [Check(TCP80, R(p).expect_all_ingress("x/a", False).expect("x/b", "x/a", True))],
        [policy("x-a-allows-x-b", "x", pod_is("a"),
                ingress=[{"from": [{"podSelector": sel(pod=("In", ["b"]))}]}])])])

    p = ["x/a", "x/b", "y/a", "z/a"]
    add("should enforce policy based on NamespaceSelector with MatchExpressions", p, [Step(
        [Check(TCP80, R(p).expect_peer(Peer("x"), Peer("x", "a"), False)
               .expect_peer(Peer("z"), Peer("x", "a"), False))],
        [policy("allow-ns-y-match-selector", "x", pod_is("a"),
                ingress=[{"from": [{"namespaceSelector": ns_expr("In", "y")}]}])])])

    p = ["x/a", "x/b", "x/c", "y/a"]
    add("should enforce policy based on PodSelector or NamespaceSelector", p, [Step(
        [Check(TCP80, R(p).expect("x/a", "x/a", False).expect("x/c", "x/a", False))],
        [policy("allow-ns-y-match-selector", "x", pod_is("a"),
                ingress=[{"from": [{"namespaceSelector": ns_expr("NotIn", "x")},
                                   {"podSelector": pod_is("b")}]}])])])

    p = ["x/a", "x/b", "y/a", "y/b", "z/b"]
    add("should enforce policy based on PodSelector and NamespaceSelector", p, [Step(
        [Check(TCP80, R(p).expect_all_ingress("x/a", False).expect("y/b", "x/a", True)
               .expect("z/b", "x/a", True))],
        [policy("allow-ns-y-podselector-and-nsselector", "x", pod_is("a"),
                ingress=[{"from": [{"namespaceSelector": ns_expr("NotIn", "x"),
                                    "podSelector": pod_is("b")}]}])])])

    p = ["x/a", "x/b", "y/a", "y/b", "y/c"]
    add("should enforce policy based on Multiple PodSelectors and NamespaceSelectors", p, [Step(
        [Check(TCP80, R(p).expect_peer(Peer("x"), Peer("x", "a"), False)
               .expect("y/a", "x/a", False))],
        [policy("allow-ns-y-z-pod-b-c", "x", pod_is("a"),
                ingress=[{"from": [{"namespaceSelector": ns_expr("NotIn", "x"),
                                    "podSelector": sel(pod=("In", ["b", "c"]))}]}])])])

    p = ["x/a", "x/b", "x/c"]
    add("should enforce policy based on any PodSelectors", p, [Step(
        [Check(TCP80, R(p).expect_all_ingress("x/a", False).expect("x/b", "x/a", True)
               .expect("x/c", "x/a", True))],
        [policy("allow-ns-x-pod-b-c", "x", pod_is("a"),
                ingress=[{"from": [{"podSelector": pod_is("b")},
                                   {"podSelector": pod_is("c")}]}])])])

    p = ["x/a", "x/b", "y/a", "y/b", "z/a"]
    add("should enforce policy to allow traffic only from a pod in a different namespace based "
        "on PodSelector and NamespaceSelector", p, [Step(
            [Check(TCP80, R(p).expect_all_ingress("x/a", False).expect("y/a", "x/a", True))],
            [policy("allow-ns-y-pod-a-via-namespace-pod-selector", "x", pod_is("a"),
                    ingress=[{"from": [{"namespaceSelector": ns_is("y"),
                                        "podSelector": pod_is("a")}]}])])])

    p = ["x/a", "x/b", "y/a", "y/b", "z/a"]
    allow81 = policy("allow-client-a-via-ns-selector", "x", pod_is("a"), ingress=[
        {"from": [{"namespaceSelector": ns_is("y")}], "ports": [port(81, "TCP")]}])
    allow_y = (R(p).expect_peer(Peer("x"), Peer("x", "a"), False)
               .expect_peer(Peer("y"), Peer("x", "a"), True)
               .expect_peer(Peer("z"), Peer("x", "a"), False))
    add("should enforce policy based on Ports", p, [Step([Check(TCP81, allow_y)], [allow81])])

    p = ["x/a", "x/b", "y/a", "z/a"]
    add("UDP: should enforce policy based on Ports", p, [Step(
        [Check(UDP81, R(p).expect_peer(Peer("x"), Peer("x", "a"), False)
               .expect_peer(Peer("z"), Peer("x", "a"), False))],
        [policy("allow-ingress-on-port-81-ns-x", "x", pod_is("a"), ingress=[
            {"from": [{"namespaceSelector": ns_is("y")}], "ports": [port(81, "UDP")]}])])])

    p = ["x/a", "x/b", "y/a", "y/b", "z/a"]
    allow_y = (R(p).expect_peer(Peer("x"), Peer("x", "a"), False)
               .expect_peer(Peer("y"), Peer("x", "a"), True)
               .expect_peer(Peer("z"), Peer("x", "a"), False))
    add("should enforce multiple, stacked policies with overlapping podSelectors", p, [
        Step([Check(TCP81, allow_y), Check(TCP80, R(p).expect_all_ingress("x/a", False))],
             [allow81]),
        Step([Check(TCP80, allow_y)],
             [policy("allow-client-a-via-ns-selector-80", "x", pod_is("a"), ingress=[
                 {"from": [{"namespaceSelector": ns_is("y")}],
                  "ports": [port(80, "TCP")]}])])])

    p = ["x/a", "x/b", "y/a"]
    add("should support allow-all policy", p, [Step(
        [Check(TCP80, R(p)), Check(TCP81, R(p))],
        [policy("allow-all", "x", {}, ingress=[{}])])])

    p = ["x/a", "x/b", "y/a"]
    add("should allow ingress access on one named port", p, [Step(
        [Check(TCP81, R(p)), Check(TCP80, R(p).expect_peer(Peer(), Peer("x"), False))],
        [policy("allow-all", "x", {}, ingress=[{"ports": [port("serve-81-tcp")]}])])])

    p = ["x/a", "x/b", "y/a", "z/a"]
    add("should allow ingress access from namespace on one named port", p, [Step(
        [Check(TCP80, R(p).expect_peer(Peer("x"), Peer("x", "a"), False)
               .expect_peer(Peer("z"), Peer("x", "a"), False)),
         Check(TCP81, R(p).expect_all_ingress("x/a", False))],
        [policy("allow-client-a-via-ns-selector-80", "x", pod_is("a"), ingress=[
            {"from": [{"namespaceSelector": ns_is("y")}],
             "ports": [port("serve-80-tcp", "TCP")]}])])])

    p = ["x/a", "y/a"]
    add("should allow egress access on one named port", p, [Step(
        [Check(TCP80, R(p)), Check(TCP81, R(p).expect_peer(Peer("x"), Peer(), False))],
        [policy("allow-egress", "x", {}, egress=[{"ports": [port("serve-80-tcp")]}])])])

    p = ["x/a", "y/a"]
    add("should enforce updated policy", p, [
        Step([Check(TCP81, R(p))],
             [policy("allow-all-mutate-to-deny-all", "x", {}, ingress=[{}])]),
        Step([Check(TCP81, R(p).expect_peer(Peer(), Peer("x"), False))],
             [policy("allow-all-mutate-to-deny-all", "x", {}, ingress=[])])])

    p = ["x/a", "x/b", "y/a", "z/a"]
    add("should deny ingress from pods on other namespaces", p, [Step(
        [Check(TCP80, R(p).expect_peer(Peer("y"), Peer("x"), False)
               .expect_peer(Peer("z"), Peer("x"), False))],
        [policy("deny-empty-policy", "x", {},
                ingress=[{"from": [{"podSelector": {"matchLabels": {}}}]}])])])

    p = ["x/a", "x/b", "y/a"]
    add("should deny egress from pods based on PodSelector", p, [Step(
        [Check(TCP80, R(p).expect_all_egress("x/a", False))],
        [policy("deny-egress-pod-a", "x", pod_is("a"), egress=[])])])

    p = ["x/a", "x/b", "y/a"]
    add("should deny egress from all pods in a namespace", p, [Step(
        [Check(TCP80, R(p).expect_peer(Peer("x"), Peer(), False))],
        [policy("deny-egress-ns-x", "x", {}, egress=[])])])

    p = ["x/a", "x/b", "x/c", "y/a"]
    both = policy("allow-client-a-via-pod-selector", "x", pod_is("a"),
                  ingress=[{"from": [{"podSelector": pod_is("b")}]}],
                  egress=[{"ports": [{"port": 80}]}], types=["Egress", "Ingress"])
    add("should work with Ingress, Egress specified together", p, [Step(
        [Check(TCP80, R(p).expect_all_ingress("x/a", False).expect("x/b", "x/a", True)),
         Check(TCP81, R(p).expect_all_ingress("x/a", False).expect_all_egress("x/a", False)
               .expect("x/b", "x/a", True))],
        [both])])

    p = ["x/a", "y/a", "y/b"]
    from_xa = [{"from": [{"namespaceSelector": ns_is("x"), "podSelector": pod_is("a")}]}]
    add("should support denying of egress traffic on the client side (even if the server "
        "explicitly allows this traffic)", p, [Step(
            [Check(TCP80, R(p).expect_peer(Peer("x", "a"), Peer(), False)
                   .expect_peer(Peer(), Peer("y", "a"), False)
                   .expect_peer(Peer("x", "a"), Peer("y", "a"), True)
                   .expect_peer(Peer(), Peer("y", "b"), False))],
            [policy("allow-to-ns-y-pod-a", "x", pod_is("a"), egress=[
                {"to": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}]),
             policy("allow-from-xa-on-ya-match-selector", "y", pod_is("a"), ingress=from_xa),
             policy("allow-from-xa-on-yb-match-selector", "y", pod_is("b"),
                    ingress=copy.deepcopy(from_xa))])])

    p = ["x/a", "y/a", "y/b"]
    add("should enforce egress policy allowing traffic to a server in a different namespace "
        "based on PodSelector and NamespaceSelector", p, [Step(
            [Check(TCP80, R(p).expect_all_egress("x/a", False).expect("x/a", "y/a", True))],
            [policy("allow-to-ns-y-pod-a", "x", pod_is("a"), egress=[
                {"to": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}])])])

    p = ["x/a", "y/a"]
    add("should enforce ingress policy allowing any port traffic to a server on a specific "
        "protocol", p, [Step(
            [Check(TCP80, R(p)),
             Check(UDP80, R(p).expect_peer(Peer(), Peer("x", "a"), False))],
            [policy("allow-ingress-by-proto", "x", pod_is("a"),
                    ingress=[{"ports": [{"protocol": "TCP"}]}])])])

    p = ["x/a", "y/a"]
    add("should enforce multiple ingress policies with ingress allow-all policy taking "
        "precedence", p, [
            Step([Check(TCP81, R(p).expect_peer(Peer(), Peer("x"), False))],
                 [policy("allow-ingress-port-80", "x", {}, ingress=[{"ports": [{"port": 80}]}])]),
            Step([Check(TCP81, R(p))], [policy("allow-ingress", "x", {}, ingress=[{}])])])

    p = ["x/a", "y/a"]
    add("should enforce multiple egress policies with egress allow-all policy taking "
        "precedence", p, [
            Step([Check(TCP81, R(p).expect_peer(Peer("x"), Peer(), False))],
                 [policy("allow-egress-port-80", "x", {}, egress=[{"ports": [{"port": 80}]}])]),
            Step([Check(TCP81, R(p))], [policy("allow-egress", "x", {}, egress=[{}])])])

    p = ["x/a", "y/a"]
    add("should stop enforcing policies after they are deleted", p, [
        Step([Check(TCP80, R(p).expect_peer(Peer("x"), Peer(), False)
                    .expect_peer(Peer(), Peer("x"), False))],
             [policy("deny-all", "x", {}, ingress=[], egress=[])]),
        Step([Check(TCP80, R(p))], delete=["x/deny-all"])])

    p = ["x/a", "y/a", "y/b"]
    add("should allow egress access to server in CIDR block", p, [Step(
        [Check(TCP80, R(p).expect_all_egress("x/a", False).expect("x/a", "y/b", True))],
        [policy("allow-client-a-via-cidr-egress-rule", "x", pod_is("a"),
                egress=[{"to": [{"ipBlock": {"cidr": f"{ip_of('y/b')}/32"}}]}])])])

    p = ["x/a", "x/b", "x/c"]
    except_b = policy("allow-client-a-via-cidr-egress-rule", "x", pod_is("a"), egress=[
        {"to": [{"ipBlock": {"cidr": large_cidr(ip_of("x/b")),
                             "except": [f"{ip_of('x/b')}/32"]}}]}])
    add("should enforce except clause while egress access to server in CIDR block", p, [Step(
        [Check(TCP80, R(p).expect("x/a", "x/b", False))], [except_b])])

    add("should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", p, [
        Step([Check(TCP80, R(p).expect("x/a", "x/b", False))], [copy.deepcopy(except_b)]),
        Step([Check(TCP80, R(p).expect_all_egress("x/a", False).expect("x/a", "x/b", True))],
             [policy("allow-client-a-via-cidr-egress-rule", "x", pod_is("a"),
                     egress=[{"to": [{"ipBlock": {"cidr": f"{ip_of('x/b')}/32"}}]}])])])

    p = ["x/a", "x/b", "y/a"]
    add("should enforce policies to check ingress and egress policies can be controlled "
        "independently based on PodSelector", p, [
            Step([Check(TCP80, R(p))],
                 [policy("allow-egress-for-target", "x", pod_is("a"), egress=[{}])]),
            Step([Check(TCP80, R(p).expect_all_ingress("x/a", False))],
                 [policy("deny-ingress-via-label-selector", "x", pod_is("a"), ingress=[])])])

    p = ["x/a", "y/a"]
    add("should not allow access by TCP when a policy specifies only UDP", p, [Step(
        [Check(TCP81, R(p).expect_all_ingress("x/a", False)),
         Check(UDP81, R(p))],
        [policy("allow-only-udp-ingress-on-port-81", "x", pod_is("a"),
                ingress=[{"ports": [port(81, "UDP")]}])])])

    p = ["x/a", "x/b", "y/a", "z/a"]
    add("should enforce policy based on NamespaceSelector with MatchExpressions using default "
        "ns label", p, [Step(
            [Check(TCP80, R(p).expect_peer(Peer("x", "a"), Peer("y"), False))],
            [policy("allow-ns-y-match-selector-for-immutable-ns-label", "x", pod_is("a"),
                    egress=[{"to": [{"namespaceSelector": ns_expr("NotIn", "y")}]}])])])

    # kemu's own, from the list
    p = ["x/a", "x/b", "y/a"]
    add("kemu: endPort range 81-90 allows 81, not 80", p, [Step(
        [Check(TCP81, R(p)), Check(TCP80, R(p).expect_peer(Peer(), Peer("x"), False))],
        [policy("allow-81-to-90", "x", {}, ingress=[{"ports": [port(81, "TCP", 90)]}])])])

    p = ["x/a", "x/b", "y/a"]
    add("kemu: endPort range 70-80 on UDP allows UDP 80 only", p, [Step(
        [Check(UDP80, R(p)), Check(UDP81, R(p).expect_peer(Peer(), Peer("x"), False)),
         Check(TCP80, R(p).expect_peer(Peer(), Peer("x"), False))],
        [policy("allow-udp-70-to-80", "x", {},
                ingress=[{"ports": [port(70, "UDP", 80)]}])])])

    p = ["x/a", "x/b", "y/a", "kube-system/dns"]
    dns_pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "dns", "namespace": "kube-system",
                            "labels": {"k8s-app": "kube-dns"}},
               "spec": {"nodeName": "node2", "containers": [{"name": "coredns", "ports": [
                   {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                   {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}]}}
    deny_but_dns = policy("deny-egress-allow-dns", "x", {}, egress=[{
        "to": [{"namespaceSelector": ns_is("kube-system"),
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [port(53, "UDP"), port(53, "TCP")]}])
    add("kemu: egress deny with DNS allowed", p, [Step(
        [Check(Case(53, "UDP"), R(p).expect_peer(Peer("x"), Peer(), False)
               .expect("x/a", "kube-system/dns", True).expect("x/b", "kube-system/dns", True)),
         Check(Case(53, "TCP"), R(p).expect_peer(Peer("x"), Peer(), False)
               .expect("x/a", "kube-system/dns", True).expect("x/b", "kube-system/dns", True)),
         Check(TCP80, R(p).expect_peer(Peer("x"), Peer(), False))],
        [deny_but_dns])], extra=[dns_pod])
    return out


SCENARIOS = scenarios()


def _listening_marks(emu: EmulatedCluster, check: Check, pods: list[str]
                     ) -> dict[tuple[str, str], str]:
    """Upstream's truth table is about policy: every probed pod listens there. Where a pod
    of a kemu-only case does not (port 53 on x/a), the expectation is R, not ``.``/X."""
    from kemu.control.listen import listening_map

    listening = listening_map(emu.model)
    marks = check.expect.marks()
    for (f, t), mark in marks.items():
        if (check.case.protocol, check.case.port) not in listening[t] and mark == ".":
            marks[(f, t)] = "R"
    return marks


def run_scenario(sc: Scenario, backend: str, probe: Callable[..., Any] = matrix) -> list[str]:
    """Every step of ``sc`` on one running cluster; the differing cells (empty: all equal)."""
    first = sc.steps[0]
    emu = EmulatedCluster(load_cluster(MODEL, *sc.extra, *first.apply), backend=backend)
    problems = []
    for n, step in enumerate(sc.steps):
        if n:
            for doc in step.apply:
                emu.apply(doc)
            for key in step.delete:
                emu.delete("NetworkPolicy", key)
        for check in step.checks:
            m, _warnings = probe(emu, ports=[check.case.port], protocols=[check.case.protocol],
                                 pods=sc.pods)
            want = _listening_marks(emu, check, sc.pods)
            for (f, t), mark in sorted(want.items()):
                got = m.results[(f, t, check.case)]
                if got.mark != mark:
                    problems.append(f"step {n} {check.case.text()} {f} -> {t}: expected "
                                    f"{mark}, got {got.mark} ({got.reason})")
            if problems:
                problems.append(f"expected:\n{_table(want, sc.pods)}\ngot:\n"
                                f"{m.table(check.case)}")
                return problems
    return problems


def _table(marks: dict[tuple[str, str], str], pods: list[str]) -> str:
    rows = ["\t".join(["-", *pods])]
    rows += ["\t".join([f, *(marks[(f, t)] for t in pods)]) for f in pods]
    return "\n".join(rows)


def test_at_least_twenty_upstream_scenarios() -> None:
    upstream = [s for s in SCENARIOS if not s.title.startswith("kemu:")]
    assert len(upstream) >= 20
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_upstream_truth_table(sc: Scenario, backend: str) -> None:
    problems = run_scenario(sc, backend)
    assert not problems, f"{sc.title}:\n" + "\n".join(problems)


def test_no_policy_everything_allowed(backend: str) -> None:
    """The baseline every upstream test starts from: no policy, all 9 x 9 pairs allowed on
    both ports and protocols; a port nobody listens on is refused (R), not denied."""
    emu = EmulatedCluster(load_cluster(MODEL), backend=backend)
    m, warnings = matrix(emu)
    assert warnings == []
    assert [c.text() for c in m.cases] == ["80/TCP", "81/TCP", "80/UDP", "81/UDP"]
    assert m.sources == ALL_PODS
    assert {r.mark for r in m.results.values()} == {"."}
    m, _ = matrix(emu, ports=[82], protocols=["TCP", "UDP"])
    assert {r.mark for r in m.results.values()} == {"R"}


def test_reachability_builder_sets_what_upstream_sets() -> None:
    """The expectation helper itself (it must be able to fail a scenario)."""
    r = R(["x/a", "x/b", "y/a"]).expect_peer(Peer(), Peer("x"), False)
    assert r.marks() == {("x/a", "x/a"): ".", ("x/a", "x/b"): "X", ("x/a", "y/a"): ".",
                         ("x/b", "x/a"): "X", ("x/b", "x/b"): ".", ("x/b", "y/a"): ".",
                         ("y/a", "x/a"): "X", ("y/a", "x/b"): "X", ("y/a", "y/a"): "."}
