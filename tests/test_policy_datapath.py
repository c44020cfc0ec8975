"""NetworkPolicy in the datapath: both twins hop by hop, conntrack, policy changes with
connections open, NAT, the flow cache, and an oracle over random policies.

- the compiled and the pure datapath give the same hops, bytes, events and outcomes for a
  scripted session (applies and deletes included) and the same ``state()``;
- conntrack (CT-6): an established connection keeps flowing after a deny-all is applied
  (conntrack-based kube-router, Calico and Cilium keep it); new connections are judged by
  the new policies; a denied SYN leaves no conntrack entry, so its retransmission after an
  allow passes; an ICMP error RELATED to an allowed connection reaches an isolated pod;
- NAT (P-10, P-6): a NodePort is judged after DNAT at the endpoint's node, against the source
  that node sees: the other node's address when that node masqueraded, the client's when the
  endpoint is local (FORWARD runs before POSTROUTING's masquerade);
- the flow cache never lets a cached path skip a verdict: the cluster mix through tables with
  policies, then reloaded with a deny-all, gives what the stages and the reference give;
- a brute-force oracle (``policyhelp.oracle``: networking.k8s.io semantics over the model,
  written apart from the compiler) agrees with the datapath on every pod pair, port and
  protocol for random policies.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from policyhelp import (
    ip_of,
    make,
    oracle,
    policy,
    policy_dropped,
    policy_events,
    probe,
    reachable,
)
from scapy.layers.inet import IP, TCP

from kemu._backend import IMPLEMENTATIONS
from kemu.dataplane import codes as C

DENY_ALL_X = policy("deny-all", "x", {"podSelector": {}})


def _tcp(c: Any, src: str, dst: str, sport: int, dport: int, flags: str, seq: int = 1,
         ack: int = 0) -> Any:
    return c.send(IP(dst=ip_of(c, dst)) / TCP(sport=sport, dport=dport, flags=flags, seq=seq,
                                              ack=ack), src=src)


def test_established_connection_survives_a_deny_all(backend: str) -> None:
    c = make(backend, respond=False)
    assert not policy_dropped(_tcp(c, "y/c", "x/a", 40100, 80, "S"))
    assert not policy_dropped(_tcp(c, "x/a", "y/c", 80, 40100, "SA", 7, 2))
    c.apply(DENY_ALL_X)
    data = _tcp(c, "y/c", "x/a", 40100, 80, "PA", 2, 8)
    assert data.delivered_to() == ["pod x/a"] and policy_events(data) == []
    assert _tcp(c, "x/a", "y/c", 80, 40100, "A", 8, 3).delivered_to() == ["pod y/c"]
    fresh = _tcp(c, "y/c", "x/a", 40101, 80, "S")
    assert policy_dropped(fresh)
    assert policy_events(fresh) == [("DENY", "x/a", "ingress", -1)]
    c.delete("NetworkPolicy", "x/deny-all")
    assert not policy_dropped(_tcp(c, "y/c", "x/a", 40102, 80, "S"))


def test_denied_syn_is_judged_again_after_an_allow(backend: str) -> None:
    """The denied SYN's unconfirmed conntrack entry dies with it: its retransmission is NEW."""
    c = make(backend, DENY_ALL_X, respond=False)
    assert policy_dropped(_tcp(c, "y/c", "x/a", 40200, 80, "S"))
    nodes = {e[0] for e in c.engine.dp.state()["conntrack"] if e[3] == 40200}
    assert nodes == {1}  # node2 (y/c's) confirmed it; node1, where it was denied, did not
    c.apply(policy("allow", "x", {"podSelector": {}, "ingress": [{}]}))
    tr = _tcp(c, "y/c", "x/a", 40200, 80, "S")
    assert tr.delivered_to() == ["pod x/a"]
    assert policy_events(tr)[0][0] == "ALLOW"


def test_related_icmp_error_reaches_an_isolated_pod(backend: str) -> None:
    """CT-6: x/a is ingress-isolated; its packet to y/c dies of TTL on node2, whose ICMP
    error (from node2's address, RELATED to x/a's connection) still reaches x/a."""
    c = make(backend, DENY_ALL_X)
    tr = c.send(IP(dst=ip_of(c, "y/c"), ttl=2) / TCP(sport=40300, dport=80, flags="S"),
                src="x/a")
    errors = [p for p in tr.packets if p.origin == "icmp-error"]
    assert errors, tr.summary()
    assert any(k == C.OUT_DELIVERED for p in errors for k, _r, _i, _a in p.outcomes)
    assert not any(policy_dropped(tr, n) for n in range(len(tr.packets)))


def test_nodeport_judged_after_dnat_against_the_source_the_node_sees(backend: str) -> None:
    """svc-a's endpoint x/a is on node1. Via node2 the client is masqueraded to node2's
    address before node1 judges; via node1 itself the client address is judged."""
    only_client = policy("client", "x", {"podSelector": {"matchLabels": {"app": "a"}},
                                         "ingress": [{"from": [
                                             {"ipBlock": {"cidr": "172.18.0.100/32"}}]}]})
    c = make(backend, only_client)
    node1, node2 = (str(n.internal_ip) for n in c.model.nodes)
    via2 = probe(c, "ext/client", node2, 30080)
    assert policy_dropped(via2) and not via2.verdict().reachable
    assert reachable(c, "ext/client", node1, 30080)
    c.apply(policy("nodes", "x", {"podSelector": {"matchLabels": {"app": "a"}},
                                  "ingress": [{"from": [{"ipBlock": {"cidr": f"{node2}/32"}}]}]}))
    assert reachable(c, "ext/client", node2, 30080)


def test_host_network_destination_is_never_judged(backend: str) -> None:
    """P-12: x/h shares node1's address: traffic to it is node input, no policy selects it."""
    c = make(backend, DENY_ALL_X, policy("deny-y-egress", "y", {
        "podSelector": {"matchLabels": {"app": "c"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "172.18.0.0/24"}}]}]}))
    tr = probe(c, "y/c", "x/h", 9100)
    assert tr.verdict().reachable
    assert [e[1:3] for e in policy_events(tr)] == [("y/c", "egress")]


# ---- both twins, hop by hop --------------------------------------------------------------

def _session(backend: str) -> list[Any]:
    """A scripted session: probes of every kind before and after applies and deletes."""
    c = make(backend)
    out = []

    def run(src: str, dst: str, port: int = 80, proto: str = "tcp", sport: int = 0) -> None:
        out.append(probe(c, src, dst, port, proto, sport=sport or None))

    run("x/a", "x/b", sport=50000)
    c.apply(DENY_ALL_X, policy("egress", "y", {
        "podSelector": {"matchLabels": {"app": "c"}}, "egress": [
            {"to": [{"podSelector": {"matchLabels": {"app": "b"}},
                     "namespaceSelector": {}}], "ports": [{"port": "http"}]},
            {"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.0.0/24"]}}]}]}))
    for i, (src, dst, port, proto) in enumerate([
            ("x/a", "x/b", 80, "tcp"), ("y/c", "x/b", 80, "tcp"), ("y/c", "x/b2", 8080, "tcp"),
            ("y/c", "x/b2", 80, "tcp"), ("y/c", "x/a", 80, "tcp"), ("y/d", "x/a", 80, "udp"),
            ("y/c", "y/d", 5432, "tcp"), ("x/a", "y/c", 80, "icmp"), ("node1", "x/a", 80, "tcp"),
            ("node2", "x/a", 80, "tcp"), ("ext/client", "10.96.0.50", 80, "tcp"),
            ("x/b", "10.96.0.50", 80, "tcp"), ("x/h", "x/b2", 8080, "tcp")]):
        run(src, dst, port, proto, sport=50100 + i)
    c.delete("NetworkPolicy", "x/deny-all")
    run("y/d", "x/a", 80, "tcp", sport=50200)
    out.append(c.dump())
    return out


def _shape(x: Any) -> Any:
    if isinstance(x, str):
        return x
    return [(p.origin, p.hops, p.outcomes, p.outcome_frames) for p in x.packets]


@pytest.mark.skipif(len(IMPLEMENTATIONS) < 2, reason="the compiled extension is not built")
def test_twins_equal_hop_by_hop() -> None:
    ref, fast = _session("python"), _session("cython")
    assert len(ref) == len(fast)
    for k, (a, b) in enumerate(zip(ref, fast, strict=True)):
        assert _shape(a) == _shape(b), k
    assert any(policy_events(t) for t in ref[:-1])
    assert any(policy_dropped(t) for t in ref[:-1])


# ---- the flow cache ----------------------------------------------------------------------

@pytest.mark.skipif(len(IMPLEMENTATIONS) < 2, reason="the compiled extension is not built")
def test_flow_cache_with_policies_and_a_reload() -> None:
    from test_flow_cache import Trio, shifted

    from kemu.bench import workloads as W
    from kemu.compiler.compile import compile_cluster
    from kemu.control.cluster import load_cluster

    docs = W.synthetic_cluster(3, 24, 6)
    t = compile_cluster(load_cluster(docs + W.synthetic_policies(60, 6, 6)))
    assert len(t.pol_name) == 60
    w = W.cluster_mix(t, 40, 600, seed=3)
    rows = [(part.frame(i), int(part.in_if[i]), int(part.in_mode[i]), int(part.ts_ns[i]))
            for part in (w.warm, w) for i in range(len(part))]
    trio = Trio(t)
    trio.batch(rows)
    assert trio.cached.flow_cache_hits > 0
    denied = compile_cluster(load_cluster(docs + [policy("deny", "default", {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]))
    trio.both("load", denied)
    n_warm = len(w.warm)
    trio.batch(shifted(rows[n_warm:], 10**9))  # established: they keep flowing
    syn = []
    for frame, iface, mode, ts in rows[n_warm:n_warm + 40]:
        b = bytearray(frame)
        b[34:36] = (int.from_bytes(b[34:36], "big") ^ 0x4000).to_bytes(2, "big")  # new port
        b[47] = 0x02
        syn.append((_fix_tcp(bytes(b)), iface, mode, ts + 2 * 10**9))
    trio.batch(syn)
    # what the reference makes of it: the established frames pass, the new SYNs are denied
    assert _policy_drops(t, denied, rows[:n_warm], shifted(rows[n_warm:], 10**9)) == set()
    assert _policy_drops(t, denied, rows[:n_warm], syn) == set(range(len(syn)))


def _policy_drops(t: Any, then: Any, warm: list, rows: list) -> set[int]:
    """The reference datapath on ``t`` runs ``warm``, loads ``then`` (the FDBs flushed: some
    frames flood, each copy judged), runs ``rows``: the frames of ``rows`` with a DROP_POLICY
    outcome."""
    from test_fastpath_equivalence import Batch, run

    from kemu.dataplane import reference
    from kemu.dataplane.results import Results

    dp = reference.Datapath(t, 7, True)
    res = Results(64, 1 << 16, False)
    run(dp, res, Batch.of(warm), t.n_ifaces)
    dp.load(then)
    res.clear()
    run(dp, res, Batch.of(rows), t.n_ifaces)
    n = res.n_outcomes
    hit = (res.oc_kind[:n] == C.OUT_DROPPED) & (res.oc_reason[:n] == C.DROP_POLICY)
    return {int(f) for f in res.oc_frame[:n][hit]}


def _fix_tcp(frame: bytes) -> bytes:
    """The TCP checksum of an Ethernet/IPv4/TCP frame redone (its ports or flags changed)."""
    from test_fastpath_equivalence import csum, pseudo

    ihl = (frame[14] & 0xF) * 4
    l4 = 14 + ihl
    seg = bytearray(frame[l4:])
    seg[16:18] = b"\0\0"
    src, dst = int.from_bytes(frame[26:30], "big"), int.from_bytes(frame[30:34], "big")
    seg[16:18] = csum(pseudo(src, dst, C.PROTO_TCP, len(seg)) + bytes(seg)).to_bytes(2, "big")
    return frame[:l4] + bytes(seg)


# ---- the oracle over random policies -----------------------------------------------------

PODS = ["x/a", "x/b", "x/b2", "y/c", "y/d"]
PROBES = [(80, "TCP"), (81, "TCP"), (8080, "TCP"), (5432, "TCP"), (53, "UDP"), (80, "UDP")]


def _random_selector(rng: random.Random) -> dict[str, Any]:
    return rng.choice([{}, {"matchLabels": {"app": rng.choice("abcd")}},
                       {"matchExpressions": [{"key": "tier", "operator": rng.choice(
                           ["Exists", "DoesNotExist"])}]},
                       {"matchExpressions": [{"key": "app", "operator": rng.choice(
                           ["In", "NotIn"]), "values": rng.sample("abcd", 2)}]}])


def _random_peer(rng: random.Random, c: Any) -> dict[str, Any]:
    k = rng.randrange(4)
    if k == 0:
        return {"podSelector": _random_selector(rng)}
    if k == 1:
        return {"namespaceSelector": rng.choice([{}, {"matchLabels": {"team": "a"}}, {
            "matchLabels": {"kubernetes.io/metadata.name": "y"}}])}
    if k == 2:
        return {"podSelector": _random_selector(rng),
                "namespaceSelector": {"matchLabels": {"team": rng.choice("ab")}}}
    ip = ip_of(c, rng.choice(PODS))
    return {"ipBlock": rng.choice([{"cidr": "10.244.0.0/16", "except": [f"{ip}/32"]},
                                   {"cidr": f"{ip}/32"}, {"cidr": "10.244.1.0/24"}])}


def _random_port(rng: random.Random) -> dict[str, Any]:
    proto = rng.choice(["TCP", "TCP", "UDP"])
    k = rng.randrange(4)
    if k == 0:
        return {"protocol": proto, "port": rng.choice([80, 81, 53, 5432, 8080])}
    if k == 1:
        return {"protocol": proto, "port": rng.choice(["http", "dns", "alt", "pg"])}
    if k == 2:
        lo = rng.choice([50, 80, 5000])
        return {"protocol": proto, "port": lo, "endPort": lo + rng.choice([0, 1, 3500])}
    return {"protocol": proto}


def _random_policies(rng: random.Random, c: Any) -> list[dict[str, Any]]:
    out = []
    for n in range(rng.randint(1, 4)):
        spec: dict[str, Any] = {"podSelector": _random_selector(rng)}
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            if rng.random() < 0.6:
                rules = []
                for _ in range(rng.randint(0, 2)):
                    rule: dict[str, Any] = {}
                    if rng.random() < 0.7:
                        rule[peers] = [_random_peer(rng, c) for _ in range(rng.randint(1, 2))]
                    if rng.random() < 0.6:
                        rule["ports"] = [_random_port(rng) for _ in range(rng.randint(1, 2))]
                    rules.append(rule)
                spec[direction] = rules
        if rng.random() < 0.5:
            spec["policyTypes"] = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
        out.append(policy(f"r{n}", rng.choice("xy"), spec))
    return out


@pytest.mark.parametrize("seed", range(24))
def test_datapath_agrees_with_the_oracle(backend: str, seed: int) -> None:
    rng = random.Random(seed)
    c = make(backend, respond=False)
    pols = _random_policies(rng, c)
    c.apply(*pols)
    model = c.model
    pods = {p.key: p for p in model.pods}
    wrong = []
    for src in PODS:
        for dst in PODS:
            for port, proto in PROBES:
                tr = probe(c, src, dst, port, proto.lower())
                want = oracle(model, pods[src], pods[dst], proto, port)
                if policy_dropped(tr) == want:
                    wrong.append((src, dst, port, proto, want))
    assert not wrong, (pols, wrong[:5])
