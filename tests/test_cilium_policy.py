"""CiliumNetworkPolicy (cilium.io/v2) L3/L4 on both backends (kemu.control.cilium, issue #17).

The cluster is tests/policyhelp.py's: namespaces x (team=a) and y (team=b); x/a, x/b, y/d on
node1; x/b2, y/c on node2; an external host 172.18.0.100. Cilium's default enforcement mode:
a non-empty ingress/egress section isolates (P-1 as Cilium applies it), rules are a union
(P-2), a pod reaches itself and its own node reaches it (P-9), replies ride conntrack (CT-6).
"""

from __future__ import annotations

from typing import Any

import pytest
from policyhelp import make, policy, policy_events, probe, reachable

from kemu._backend import IMPLEMENTATIONS
from kemu.errors import ManifestError

CLIENT = "172.18.0.100"


def cnp(name: str, ns: str, spec: dict[str, Any], api: str = "cilium.io/v2") -> dict[str, Any]:
    return {"apiVersion": api, "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


def denied(c: Any, src: str, dst: str, port: int = 80, proto: str = "tcp") -> bool:
    """Whether a policy dropped the probe (for peers that do not answer: external hosts'
    closed ports, UDP without an echo)."""
    return any(e[0] == "DENY" for e in policy_events(probe(c, src, dst, port, proto)))


def tcp(*ports: str) -> list[dict[str, Any]]:
    return [{"ports": [{"port": p, "protocol": "TCP"} for p in ports]}]


def test_from_endpoints_and_ports(backend: str) -> None:
    """P-1/P-4: the selected pod is isolated; fromEndpoints selects the policy's namespace."""
    c = make(backend, cnp("b-from-a", "x", {
        "endpointSelector": sel(app="b"),
        "ingress": [{"fromEndpoints": [sel(app="a")], "toPorts": tcp("80")}]}))
    assert reachable(c, "x/a", "x/b")
    assert not reachable(c, "x/a", "x/b", 81)
    assert not reachable(c, "y/d", "x/b")  # another namespace: no rule
    assert reachable(c, "x/a", "y/c")  # y/c is not selected
    assert reachable(c, "x/b", "x/a")  # egress of x/b not isolated
    assert policy_events(probe(c, "x/a", "x/b")) == [("ALLOW", "x/b", "ingress", 0)]
    assert policy_events(probe(c, "x/a", "x/b", 81)) == [("DENY", "x/b", "ingress", -1)]


def test_namespace_label_key(backend: str) -> None:
    """``k8s:io.kubernetes.pod.namespace`` selects another namespace by name;
    ``io.cilium.k8s.namespace.labels.KEY`` by namespace label; without either, only the
    policy's own namespace."""
    c = make(backend, cnp("b", "x", {
        "endpointSelector": sel(app="b"),
        "ingress": [{"fromEndpoints": [sel(**{"k8s:io.kubernetes.pod.namespace": "y",
                                              "app": "d"})], "toPorts": tcp("80")},
                    {"fromEndpoints": [sel(**{"io.cilium.k8s.namespace.labels.team": "b",
                                              "k8s:app": "c"})], "toPorts": tcp("81")},
                    {"fromEndpoints": [{}], "toPorts": tcp("53")}]}))
    assert reachable(c, "y/d", "x/b")
    assert not reachable(c, "y/c", "x/b")
    assert reachable(c, "y/c", "x/b", 81)
    assert not reachable(c, "y/d", "x/b", 81)
    assert reachable(c, "x/a", "x/b", 53)  # {} = every pod of x
    assert not reachable(c, "y/d", "x/b", 53)


def test_entities(backend: str) -> None:
    """world = outside the cluster; cluster = pods and nodes; remote-node = nodes."""
    c = make(backend,
             cnp("c-world", "y", {"endpointSelector": sel(app="c"),
                                  "ingress": [{"fromEntities": ["world"]}],
                                  "egress": [{"toEntities": ["cluster"]}]}),
             cnp("a-nodes", "x", {"endpointSelector": sel(app="a"),
                                  "ingress": [{"fromEntities": ["remote-node"]}]}))
    assert reachable(c, "ext/client", "y/c")
    assert not reachable(c, "x/a", "y/c")  # a pod is not world
    assert not reachable(c, "node1", "y/c")  # another node is not world
    assert reachable(c, "node2", "y/c")  # its own node (P-9)
    assert reachable(c, "y/c", "x/b")  # egress to the cluster
    assert denied(c, "y/c", CLIENT)  # egress to world: not in cluster
    assert reachable(c, "node2", "x/a")
    assert not reachable(c, "x/b", "x/a")
    assert not reachable(c, "ext/client", "x/a")


def test_entity_all_and_host(backend: str) -> None:
    c = make(backend,
             cnp("all", "y", {"endpointSelector": sel(app="c"),
                              "ingress": [{"fromEntities": ["all"], "toPorts": tcp("80")}]}),
             cnp("host-only", "x", {"endpointSelector": sel(app="a"),
                                    "ingress": [{"fromEntities": ["host"]}]}))
    assert reachable(c, "x/a", "y/c") and reachable(c, "ext/client", "y/c")
    assert not reachable(c, "x/a", "y/c", 81)
    # host adds nothing to P-9: the own node passes, everything else is denied
    assert reachable(c, "node1", "x/a")
    assert not reachable(c, "node2", "x/a")
    assert not reachable(c, "x/b", "x/a")


def test_cidr_rules_never_match_the_cluster(backend: str) -> None:
    """fromCIDR/fromCIDRSet as Cilium's CIDR identities: outside the cluster only, except."""
    c = make(backend,
             cnp("c-cidr", "y", {"endpointSelector": sel(app="c"),
                                 "ingress": [{"fromCIDR": ["0.0.0.0/0"], "toPorts": tcp("80")}]}),
             cnp("a-cidrset", "x", {"endpointSelector": sel(app="a"), "ingress": [
                 {"fromCIDRSet": [{"cidr": "172.18.0.0/16", "except": ["172.18.0.100/32"]}]},
                 {"fromCIDRSet": [{"cidr": "10.244.0.0/16"}]}]}))
    assert reachable(c, "ext/client", "y/c")
    assert not reachable(c, "x/a", "y/c")  # a pod address is never a CIDR match
    assert not reachable(c, "ext/client", "x/a")  # excepted
    assert not reachable(c, "x/b", "x/a")  # a CIDR inside the cluster matches nothing


def test_egress_to_cidr_and_dns(backend: str) -> None:
    c = make(backend, cnp("b-egress", "x", {
        "endpointSelector": sel(app="b"),
        "egress": [{"toCIDR": [f"{CLIENT}/32"], "toPorts": tcp("80")},
                   {"toEndpoints": [sel(**{"k8s:io.kubernetes.pod.namespace": "y"})],
                    "toPorts": [{"ports": [{"port": "5432"}]}]}]}))
    assert not denied(c, "x/b", CLIENT)
    assert denied(c, "x/b", CLIENT, 81)
    assert reachable(c, "x/b", "y/d", 5432)  # protocol ANY (default) includes TCP
    assert not reachable(c, "x/b", "y/c")
    assert not reachable(c, "x/b", "x/a")


def test_protocols_end_port_named_port(backend: str) -> None:
    c = make(backend, cnp("b", "x", {"endpointSelector": sel(app="b"), "ingress": [
        {"toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]},
        {"fromEndpoints": [sel(app="a")],
         "toPorts": [{"ports": [{"port": "80", "endPort": 81, "protocol": "TCP"}]}]},
        {"fromEndpoints": [sel(**{"k8s:io.kubernetes.pod.namespace": "y"})],
         "toPorts": [{"ports": [{"port": "http", "protocol": "ANY"}]}]}]}))
    assert not denied(c, "y/c", "x/b", 53, "udp")  # toPorts alone: every peer
    assert denied(c, "y/c", "x/b", 53, "tcp")
    assert reachable(c, "x/a", "x/b", 81)
    assert reachable(c, "y/c", "x/b", 80)  # http = 80 on x/b
    assert reachable(c, "y/c", "x/b2", 8080)  # http = 8080 on x/b2
    assert not reachable(c, "y/c", "x/b2", 80)


def test_to_ports_without_ports_is_every_port(backend: str) -> None:
    c = make(backend, cnp("b", "x", {"endpointSelector": sel(app="b"), "ingress": [
        {"fromEndpoints": [sel(app="a")], "toPorts": [{"ports": []}]},
        {"fromEndpoints": [sel(**{"k8s:io.kubernetes.pod.namespace": "y"})],
         "toPorts": [{"ports": [{"port": "81"}]}]}]}))
    assert reachable(c, "x/a", "x/b") and reachable(c, "x/a", "x/b", 81)
    assert not reachable(c, "y/c", "x/b") and reachable(c, "y/c", "x/b", 81)


def test_default_deny_sections(backend: str) -> None:
    """Empty rule ``{}`` isolates and allows nothing; an empty section does not isolate;
    ``enableDefaultDeny: true`` isolates without rules; CNP and NetworkPolicy add up."""
    c = make(backend,
             cnp("deny-a", "x", {"endpointSelector": sel(app="a"), "ingress": [{}]}),
             cnp("nothing", "x", {"endpointSelector": sel(app="b"), "ingress": []}),
             cnp("deny-c-egress", "y", {"endpointSelector": sel(app="c"),
                                        "enableDefaultDeny": {"egress": True}}),
             policy("knp-a", "x", {"podSelector": {"matchLabels": {"app": "a"}},
                                   "ingress": [{"ports": [{"port": 81}]}]}))
    assert not reachable(c, "x/b", "x/a")
    assert reachable(c, "x/b", "x/a", 81)  # the NetworkPolicy's rule
    assert reachable(c, "x/a", "x/b")
    assert not reachable(c, "y/c", "x/b")
    assert reachable(c, "x/b", "y/c")


def test_live_connection_reply(backend: str) -> None:
    """CT-6: the reply of an allowed connection passes the source's egress isolation."""
    c = make(backend, cnp("a-egress", "x", {"endpointSelector": sel(app="a"),
                                            "egress": [{"toEndpoints": [sel(app="b")]}]}))
    tr = probe(c, "x/a", "x/b")
    assert tr.verdict().reachable
    assert not reachable(c, "x/a", "y/c")


@pytest.mark.parametrize(("spec", "message"), [
    ({"endpointSelector": {}, "ingressDeny": [{"fromEntities": ["world"]}]},
     "spec.ingressDeny: deny rules are not modelled"),
    ({"endpointSelector": {}, "egressDeny": [{}]}, "spec.egressDeny: deny rules"),
    ({"endpointSelector": {}, "ingres": [{}]}, r"unknown field 'ingres' \(did you mean 'ingress'"),
    ({"endpointSelector": {}, "ingress": [{"fromEndpoint": [{}]}]},
     r"unknown field 'fromEndpoint' \(did you mean 'fromEndpoints'"),
    ({"endpointSelector": {}, "ingress": [{"fromEntities": ["wrold"]}]},
     r"'wrold' is not an entity \(did you mean 'world'"),
    ({"endpointSelector": {}, "ingress": [{"fromEntities": ["health"]}]},
     "entity 'health' is not modelled"),
    ({"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}], "fromCIDR": ["1.2.3.0/24"]}]},
     "combining fromEndpoints and fromCIDR is not supported"),
    ({"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": 80}]}]}]},
     r"ports\[0\].port: expected a string, got a number \(80\); quote it"),
    ({"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "80",
                                                                  "protocol": "ICMP"}]}]}]},
     "'ICMP' is not one of TCP, UDP, SCTP, ANY"),
    ({"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "80"}],
                                                        "rules": {"kafka": [{}]}}]}]},
     r"toPorts\[0\].rules.kafka: is not modelled \(kemu's L7 proxy takes HTTP rules only"),
    ({"endpointSelector": {}, "ingress": [{"toPorts": [{"rules": {"http": [{}]}}]}]},
     r"toPorts\[0\].ports: L7 rules need ports"),
    ({"endpointSelector": {}, "enableDefaultDeny": {"ingress": False}, "ingress": [{}]},
     "spec.enableDefaultDeny.ingress: false is not modelled"),
    ({"endpointSelector": {"matchLabels": {"reserved:host": ""}}},
     "reserved labels are not modelled"),
    ({"endpointSelector": sel(**{"k8s:io.kubernetes.pod.namespace": "y"}), "ingress": [{}]},
     "names another namespace than the policy's 'x'"),
    ({"ingress": [{}]}, "spec.endpointSelector: required field is missing"),
    ({"endpointSelector": {}, "ingress": [{"fromCIDRSet": [{"cidr": "10.0.0.0/8",
                                                            "except": ["11.0.0.0/8"]}]}]},
     r"except\[0\]: 11.0.0.0/8 is not inside cidr 10.0.0.0/8"),
])
def test_refused_and_misspelt_fields(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message) as err:
        make("python", cnp("p", "x", spec))
    assert "x/CiliumNetworkPolicy/p" in str(err.value)


def test_api_version_and_notice() -> None:
    with pytest.raises(ManifestError, match="'cilium.io/v1' is not supported"):
        make("python", cnp("p", "x", {"endpointSelector": {}}, api="cilium.io/v1"))
    c = make("python", cnp("p", "x", {"endpointSelector": {},
                                      "egress": [{"toEntities": ["host"]}]}))
    assert any("toEntities[0]" in n.field and "every node's address" in n.message
               for n in c.model.notices)


@pytest.mark.skipif(len(IMPLEMENTATIONS) < 2, reason="the compiled extension is not built")
def test_backends_agree_on_a_matrix() -> None:
    """Every pod pair x ports on both backends with a mix of CNP features: equal verdicts."""
    docs = [cnp("b", "x", {"endpointSelector": sel(app="b"), "ingress": [
                {"fromEndpoints": [sel(**{"k8s:io.kubernetes.pod.namespace": "y"})],
                 "toPorts": tcp("80")}, {"fromEntities": ["world"]}],
                "egress": [{"toEntities": ["cluster"]}]}),
            cnp("c", "y", {"endpointSelector": {}, "ingress": [{"fromCIDR": ["0.0.0.0/0"]},
                                                               {"fromEndpoints": [{}]}]})]
    srcs = ["x/a", "x/b", "x/b2", "y/c", "y/d", "node1", "node2", "ext/client"]
    dsts = ["x/a", "x/b", "x/b2", "y/c", "y/d"]
    got = {}
    for be in IMPLEMENTATIONS:
        c = make(be, *docs)
        got[be] = [reachable(c, s, d, p) for s in srcs for d in dsts for p in (80, 81)
                   if s != d]
    first = next(iter(got.values()))
    assert all(v == first for v in got.values())
    assert 0 < sum(first) < len(first)


def test_shown_as_enforced_and_clusterwide_ignored() -> None:
    """``kemu show networkpolicies -o yaml`` gives the NetworkPolicy form kemu enforces,
    annotated; CiliumClusterwideNetworkPolicy is not modelled: ignored with a notice."""
    from kemu.frontend.views import policy_item

    c = make("python", cnp("p", "x", {"endpointSelector": sel(app="b"),
                                      "ingress": [{"fromEntities": ["world"]}]}),
             {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
              "metadata": {"name": "ccnp"}, "spec": {"endpointSelector": {}, "ingress": [{}]}})
    item = policy_item(c.model.policies[0])
    assert item["metadata"]["annotations"] == {
        "kemu.dev/translated-from": "cilium.io/v2 CiliumNetworkPolicy"}
    assert item["spec"]["ingress"] == [{"from": [{"kemu.dev/entity": "world"}]}]
    assert any("CiliumClusterwideNetworkPolicy is not modelled" in n.message
               for n in c.model.notices)
    assert reachable(c, "x/a", "y/c")  # the clusterwide deny-all is not enforced
