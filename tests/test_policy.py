"""NetworkPolicy semantics (networking.k8s.io/v1), one test per behaviour, on both backends.

Each test cites its SEMANTICS id (P-1..P-12, CT-6). The cluster is ``policyhelp.cluster_docs``:
namespaces x (team=a) and y (team=b); x/a, x/b, y/d on node1, x/b2 (labels of x/b, its
``http`` port is 8080, not 80) and y/c on node2; x/h is a hostNetwork pod on node1. Probes are
real packets through the datapath: a TCP SYN answered by the emulated stack (``reachable``
needs the SYN-ACK back at the sender: the reply passes by conntrack, CT-6).
"""

from __future__ import annotations

import pytest
from policyhelp import ip_of, make, policy, policy_dropped, policy_events, probe, reachable

from kemu.errors import KemuError, ManifestError

DENY_ALL_X = policy("deny-all", "x", {"podSelector": {}})
DENY_EGRESS_X = policy("deny-egress", "x", {"podSelector": {}, "policyTypes": ["Egress"]})


def test_no_policy_allows_everything_and_records_nothing(backend: str) -> None:
    c = make(backend)
    tr = probe(c, "x/a", "x/b")
    assert tr.verdict().reachable
    assert policy_events(tr) == []


def test_p1_isolation_is_per_direction(backend: str) -> None:
    """P-1: an ingress-only deny-all isolates ingress; the same pods still connect out."""
    c = make(backend, DENY_ALL_X)
    assert not reachable(c, "x/a", "x/b")       # x/b ingress-isolated
    assert reachable(c, "x/a", "y/c")           # x/a not egress-isolated, y/c not isolated
    tr = probe(c, "y/c", "x/a")
    assert policy_dropped(tr)
    assert policy_events(tr) == [("DENY", "x/a", "ingress", -1)]


def test_p1_egress_isolation(backend: str) -> None:
    c = make(backend, DENY_EGRESS_X)
    tr = probe(c, "x/a", "y/c")
    assert policy_dropped(tr)
    assert policy_events(tr) == [("DENY", "x/a", "egress", -1)]
    assert reachable(c, "y/c", "x/a")  # ingress not isolated; the reply rides conntrack


def test_p2_both_ends_must_allow(backend: str) -> None:
    """P-2: egress of the source AND ingress of the destination."""
    allow_out = policy("allow-out", "x", {"podSelector": {"matchLabels": {"app": "a"}},
                                          "policyTypes": ["Egress"], "egress": [{}]})
    deny_in_y = policy("deny-in", "y", {"podSelector": {}})
    c = make(backend, DENY_EGRESS_X, allow_out, deny_in_y)
    tr = probe(c, "x/a", "y/c")
    assert policy_dropped(tr)
    assert [e[0] for e in policy_events(tr)] == ["ALLOW", "DENY"]
    assert policy_events(tr)[1][1:3] == ("y/c", "ingress")
    c.apply(policy("allow-in", "y", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}))
    assert reachable(c, "x/a", "y/c")
    assert not reachable(c, "x/b", "y/c")  # x/b's egress allows nothing


def test_p2_union_of_policies_lowest_rule_reported(backend: str) -> None:
    p1 = policy("p1", "x", {"podSelector": {"matchLabels": {"app": "b"}},
                            "ingress": [{"ports": [{"port": 81}]}]})
    p2 = policy("p2", "x", {"podSelector": {"matchLabels": {"app": "b"}},
                            "ingress": [{"ports": [{"port": 80}]}]})
    c = make(backend, p1, p2)
    t = c.tables
    tr = probe(c, "x/a", "x/b", 80)
    assert tr.verdict().reachable
    (ev,) = policy_events(tr)
    assert ev[:3] == ("ALLOW", "x/b", "ingress")
    assert t.pol_name[int(t.rule_pol[ev[3]])] == "x/p2"
    assert reachable(c, "x/a", "x/b", 81)
    assert not reachable(c, "x/a", "x/b", 82)


def test_p3_policy_types_default(backend: str) -> None:
    """P-3: Ingress always; Egress only with egress rules."""
    only_egress_rules = policy("e", "x", {"podSelector": {"matchLabels": {"app": "a"}},
                                          "egress": [{"ports": [{"port": 80}]}]})
    c = make(backend, only_egress_rules)
    assert c.tables.sel_count[2 * c.tables.pod_key.index("x/a")] == 1  # ingress isolated
    assert not reachable(c, "x/b", "x/a")
    assert reachable(c, "x/a", "y/c", 80)
    assert not reachable(c, "x/a", "y/c", 81)


def test_p4_empty_and_absent_lists(backend: str) -> None:
    """P-4: ``ingress: [{}]`` allows all; ``ingress: []`` denies all; a rule without ports
    allows every port; without peers, every peer."""
    allow_all = policy("all", "x", {"podSelector": {"matchLabels": {"app": "b"}},
                                    "ingress": [{}]})
    c = make(backend, DENY_ALL_X, allow_all)
    assert reachable(c, "y/c", "x/b", 81)
    assert not reachable(c, "y/c", "x/a")
    empty = policy("empty", "y", {"podSelector": {}, "ingress": []})
    c = make(backend, empty)
    assert not reachable(c, "x/a", "y/c")
    ports_only = policy("ports", "y", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    c = make(backend, ports_only)
    assert reachable(c, "x/a", "y/c", 80)
    assert not reachable(c, "x/a", "y/c", 81)


def test_p5_peer_forms(backend: str) -> None:
    """P-5: podSelector (the policy's namespace), namespaceSelector, both in one peer = AND,
    two peers = OR; ``kubernetes.io/metadata.name``."""
    and_peer = policy("and", "x", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}},
                   "podSelector": {"matchLabels": {"app": "c"}}}]}]})
    c = make(backend, and_peer)
    assert reachable(c, "y/c", "x/a")
    assert not reachable(c, "y/d", "x/a")  # namespace matches, pod does not
    assert not reachable(c, "x/b", "x/a")  # pod selector alone would be x's: not this peer
    or_peers = policy("or", "x", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}},
                  {"podSelector": {"matchLabels": {"app": "b"}}}]}]})
    c = make(backend, or_peers)
    assert reachable(c, "y/c", "x/a")
    assert reachable(c, "y/d", "x/a")
    assert reachable(c, "x/b", "x/a")
    pod_only = policy("pod", "x", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"app": "c"}}}]}]})
    c = make(backend, pod_only)
    assert not reachable(c, "y/c", "x/a")  # y/c is not in x
    by_name = policy("name", "x", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]})
    c = make(backend, by_name)
    assert reachable(c, "y/d", "x/a")
    assert not reachable(c, "x/b", "x/a")


def test_p5_match_expressions(backend: str) -> None:
    expr = policy("expr", "y", {"podSelector": {"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["db"]}]}, "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": {"matchExpressions": [
                {"key": "app", "operator": "NotIn", "values": ["b"]}]}}]}]})
    c = make(backend, expr)
    assert reachable(c, "x/a", "y/d", 5432)
    assert not reachable(c, "x/b", "y/d", 5432)
    assert reachable(c, "x/b", "y/c")  # y/c lacks tier=db: not selected


def test_p6_ipblock_with_except_matches_pod_addresses(backend: str) -> None:
    """P-6: ipBlock matches any address, pod addresses included (kube-router, Calico)."""
    c = make(backend)
    a_ip = str(c.model.pods[c.tables.pod_key.index("x/a")].ip)
    block = policy("block", "y", {"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{a_ip}/32"]}}]}]})
    c.apply(block)
    assert not reachable(c, "x/a", "y/c")
    assert reachable(c, "x/b", "y/c")
    assert not reachable(c, "ext/client", ip_of(c, "y/c"))  # 172.18.0.100: outside
    c.apply(policy("ext", "y", {"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "172.18.0.96/28"}}]}]}))
    assert reachable(c, "ext/client", ip_of(c, "y/c"))


def test_p7_named_port_resolved_per_destination_pod(backend: str) -> None:
    """P-7: x/b and x/b2 share labels; ``http`` is 80 on x/b, 8080 on x/b2."""
    named = policy("named", "x", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [
        {"ports": [{"port": "http"}]}]})
    c = make(backend, named)
    assert reachable(c, "x/a", "x/b", 80)
    assert not reachable(c, "x/a", "x/b", 8080)
    assert reachable(c, "x/a", "x/b2", 8080)
    assert not reachable(c, "x/a", "x/b2", 80)
    egress_named = policy("egress-named", "y", {"podSelector": {"matchLabels": {"app": "c"}},
                                                "egress": [{"ports": [{"port": "http"}]}]})
    c = make(backend, egress_named)
    assert reachable(c, "y/c", "x/b2", 8080)
    assert not reachable(c, "y/c", "x/b2", 80)
    assert reachable(c, "y/c", "x/b", 80)


def test_p7_protocol_and_end_port(backend: str) -> None:
    rng = policy("range", "y", {"podSelector": {"matchLabels": {"app": "c"}}, "ingress": [
        {"ports": [{"port": 80, "endPort": 90}, {"protocol": "UDP"}]}]})
    c = make(backend, rng, respond=False)
    for port, ok in ((79, False), (80, True), (85, True), (90, True), (91, False)):
        assert policy_dropped(probe(c, "x/a", "y/c", port)) is (not ok), port
    assert not policy_dropped(probe(c, "x/a", "y/c", 12345, "udp"))
    udp_only = policy("udp", "x", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [
        {"ports": [{"protocol": "UDP", "port": 53}]}]})
    c = make(backend, udp_only, respond=False)
    assert not policy_dropped(probe(c, "x/a", "x/b", 53, "udp"))
    assert policy_dropped(probe(c, "x/a", "x/b", 53, "tcp"))


def test_p8_icmp_knob(backend: str) -> None:
    """P-8: ICMP under isolation: denied unless a port-less rule allows it (default), or
    never judged (``networkPolicy.icmp: allow``)."""
    c = make(backend, DENY_ALL_X)
    assert not reachable(c, "y/c", "x/a", proto="icmp")
    c = make(backend, DENY_ALL_X, icmp="allow")
    tr = probe(c, "y/c", "x/a", proto="icmp")
    assert tr.verdict().reachable
    assert policy_events(tr) == [("ALLOW", "x/a", "ingress", -1)]
    ported = policy("tcp80", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    c = make(backend, ported)
    assert not reachable(c, "y/c", "x/a", proto="icmp")
    c = make(backend, policy("all", "x", {"podSelector": {}, "ingress": [{}]}))
    assert reachable(c, "y/c", "x/a", proto="icmp")


def test_p9_self_and_own_node(backend: str) -> None:
    """P-9: a pod reaches itself, also through its Service (hairpin); its node reaches it
    (kubelet probes); another node does not unless allowed."""
    c = make(backend, DENY_ALL_X, DENY_EGRESS_X)
    tr = probe(c, "x/b", "x/b")  # over lo (the stack does not answer itself)
    assert tr.delivered_to() == ["pod x/b"] and policy_events(tr) == []
    for sport in range(42000, 42040):  # every backend choice: b itself passes, b2 does not
        tr = probe(c, "x/b", "10.96.0.50", 80, sport=sport)
        delivered = tr.delivered_to()
        assert delivered in ([], ["pod x/b"]), delivered
    assert reachable(c, "node1", "x/a")
    assert not reachable(c, "node2", "x/a")


def test_p10_service_judged_after_dnat(backend: str) -> None:
    """P-10: the endpoint pod's ingress and the port after DNAT (the ``http`` target)."""
    only_80 = policy("only80", "x", {"podSelector": {"matchLabels": {"app": "b"}},
                                     "ingress": [{"ports": [{"port": 80}]}]})
    c = make(backend, only_80)
    outcomes = set()
    for sport in range(43000, 43030):
        tr = probe(c, "y/c", "10.96.0.50", 80, sport=sport)
        outcomes.add((tuple(tr.delivered_to()), policy_dropped(tr)))
    assert outcomes == {(("pod x/b",), False), ((), True)}  # x/b (80) passes, x/b2 (8080) not


def test_p12_host_network_pods(backend: str) -> None:
    """P-12: a hostNetwork pod is never selected (its node's traffic); from another node only
    an ipBlock with the node address admits it."""
    c = make(backend, policy("all-x", "x", {"podSelector": {}, "ingress": [{"from": [
        {"podSelector": {}}]}]}))
    assert c.tables.pod_ident[c.tables.pod_key.index("x/h")] == -1
    assert reachable(c, "x/h", "x/a")       # node1 -> its own pod (P-9)
    assert not reachable(c, "x/h", "x/b2", 8080)  # node1 -> node2's pod: node traffic
    c.apply(policy("node-net", "x", {"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "172.18.0.0/24"}}]}]}))
    assert reachable(c, "x/h", "x/b2", 8080)


def test_ct6_replies_and_reverse_direction(backend: str) -> None:
    """CT-6: the reply of an allowed connection passes; a new connection the other way
    needs its own allow."""
    only_in = policy("in", "x", {"podSelector": {"matchLabels": {"app": "a"}},
                                 "policyTypes": ["Ingress", "Egress"], "ingress": [{}]})
    c = make(backend, only_in)
    assert reachable(c, "y/c", "x/a")   # SYN in, SYN-ACK out by conntrack
    assert not reachable(c, "x/a", "y/c")


def test_apply_and_delete(backend: str) -> None:
    c = make(backend)
    assert c.apply(DENY_ALL_X) == ["x/deny-all"]
    assert not reachable(c, "x/a", "x/b")
    c.delete("NetworkPolicy", "x/deny-all")
    assert reachable(c, "x/a", "x/b")
    with pytest.raises(KemuError, match="no NetworkPolicy x/nope"):
        c.delete("NetworkPolicy", "x/nope")
    with pytest.raises(KemuError,
                       match="only NetworkPolicy and CiliumNetworkPolicy can be applied"):
        c.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
    with pytest.raises(KemuError, match="only NetworkPolicy"):
        c.delete("Service", "x/svc-b")
    with pytest.raises(ManifestError, match="spec.podSelector"):
        c.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                "metadata: {name: bad, namespace: x}\nspec: {ingress: [{}]}\n")


def test_icmp_knob_parsing() -> None:
    import kemu

    docs = [{"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "k"},
             "spec": {"networkPolicy": {"icmp": "maybe"}}}]
    with pytest.raises(ManifestError, match=r"spec.networkPolicy.icmp: 'maybe' is not one of"):
        kemu.load(docs)


def test_p7_sctp_ports(backend: str) -> None:
    """P-7: SCTP policy ports are matched (kemu's conntrack tracks SCTP ports)."""
    from scapy.layers.inet import IP
    from scapy.layers.sctp import SCTP

    sctp = policy("sctp", "y", {"podSelector": {"matchLabels": {"app": "c"}}, "ingress": [
        {"ports": [{"protocol": "SCTP", "port": 9999}]}]})
    c = make(backend, sctp, respond=False)
    dst = ip_of(c, "y/c")

    def sent(port: int, sport: int) -> bool:
        return policy_dropped(c.send(IP(dst=dst) / SCTP(sport=sport, dport=port), src="x/a"))

    assert not sent(9999, 5000)
    assert sent(9998, 5001)
    assert policy_dropped(probe(c, "x/a", "y/c", 9999, "tcp"))
