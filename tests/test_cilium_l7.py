"""Cilium L7 HTTP rules (CiliumNetworkPolicy ``toPorts[].rules.http``) on both backends.

The cluster is tests/policyhelp.py's (x/a and x/b, y/d on node1; y/c on node2; every pod
listens on every port). A connection only L7 rules allow is redirected by the datapath
(``EV_L7_REDIRECT``, both twins of the policy room); the proxy of the destination's node
(``kemu.dataplane.l7``) judges each request of the reassembled TCP stream: an allowed one
reaches the pod's application (which answers 200), a denied one is answered ``403
Forbidden`` / ``Access denied\\r\\n`` by the proxy and never reaches the pod. Rules are ORed;
an L4-only allow of the same port wildcards the L7 rules (Cilium's merge). Behaviour ids:
P-1, P-2 (isolation, union), P-7 (named ports), P-10 (Service traffic judged at the
endpoint), OV-7 (Cilium's policy map entry of an L7 port redirects), CT-6 (the data rides
conntrack: the proxy, not the datapath, judges it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from policyhelp import cluster_docs, ip_of, make, policy
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgReader, wrpcap

from kemu._backend import IMPLEMENTATIONS
from kemu.dataplane import codes as C
from kemu.dataplane.slowpath import HostStack, TcpStream, http_server
from kemu.errors import ManifestError
from kemu.frontend.api import EmulatedCluster
from kemu.frontend.trace import Trace

DENIED = (b"HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n"
          b"server: envoy\r\n\r\nAccess denied\r\n")


def cnp(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def l7_policy(*http: dict[str, Any], name: str = "cnp-c", port: str = "80",
              peers: dict[str, Any] | None = None) -> dict[str, Any]:
    """y/c's ingress: from namespace x (or ``peers``) to ``port``, with these HTTP rules."""
    rule: dict[str, Any] = {
        "fromEndpoints": [peers or {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "x"}}],
        "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}],
                     "rules": {"http": list(http)}}]}
    return cnp(name, "y", {"endpointSelector": {"matchLabels": {"app": "c"}},
                           "ingress": [rule]})


_SPORT = [42000]


class Conn:
    """A TCP connection from a pod, segment by segment (its stack takes the answers)."""

    def __init__(self, c: EmulatedCluster, src: str, dst: str, port: int = 80) -> None:
        _SPORT[0] += 1
        self.c, self.src, self.dip, self.port = c, src, ip_of(c, dst), port
        self.sport, self.seq = _SPORT[0], 1000
        self.syn = c.send(IP(dst=self.dip) / TCP(sport=self.sport, dport=port, flags="S",
                                                  seq=self.seq), src=src)
        self.seq += 1

    def send(self, data: bytes) -> Trace:
        tr = self.c.send(IP(dst=self.dip) / TCP(sport=self.sport, dport=self.port, flags="PA",
                                                seq=self.seq, ack=1) / data, src=self.src)
        self.seq += len(data)
        return tr


def answer(tr: Trace) -> bytes:
    """The TCP payload the client got back (every answer segment, in order)."""
    out = b""
    for p in tr.answers():
        f = p.sent
        ihl = (f[14] & 0xF) * 4
        l4 = 14 + ihl
        out += f[l4 + (f[l4 + 12] >> 4) * 4: 14 + int.from_bytes(f[16:18], "big")]
    return out


def get(path: str, *headers: str, method: str = "GET", host: str = "c") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
        f"{h}\r\n" for h in headers) + "\r\n").encode()


def seen_by_pod(c: EmulatedCluster, key: str) -> list[bytes]:
    """Record what the pod's own application is handed (the proxy's allowed requests)."""
    t = c.tables
    st = c.engine.stack_of(int(t.pod_eth_if[t.pod_key.index(key)]))
    assert isinstance(st, HostStack)
    seen: list[bytes] = []

    def app(stream: TcpStream) -> bytes:
        seen.append(bytes(stream.data))
        return http_server(stream)

    st.application = lambda port: app  # type: ignore[method-assign]
    return seen


def events(tr: Trace, kind: int) -> list[tuple[int, int, int, int]]:
    return [ev for p in tr.packets for _i, _d, _b, evs in p.hops for ev in evs
            if ev[0] == kind]


def test_allowed_get_reaches_the_pod(backend: str) -> None:
    c = make(backend, l7_policy({"method": "GET", "path": "/public/.*"}))
    seen = seen_by_pod(c, "y/c")
    conn = Conn(c, "x/a", "y/c")
    assert conn.syn.verdict().reachable
    redirect = events(conn.syn, C.EV_L7_REDIRECT)
    assert len(redirect) == 1 and redirect[0][1:3] == (c.tables.pod_key.index("y/c"), 80)
    got = answer(conn.send(get("/public/a")))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"GET /public/a answered by {ip_of(c, 'y/c')}:80".encode() in got
    assert len(seen) == 1 and seen[0].startswith(b"GET /public/a HTTP/1.1\r\n")


def test_denied_path_gets_403_from_the_proxy(backend: str) -> None:
    c = make(backend, l7_policy({"method": "GET", "path": "/public/.*"}))
    seen = seen_by_pod(c, "y/c")
    conn = Conn(c, "x/a", "y/c")
    tr = conn.send(get("/admin"))
    assert answer(tr) == DENIED
    assert seen == []  # never reached the pod's application
    # the verdict is at the pod's node (its node-side veth), with the proxy's words
    assert "L7 proxy: GET /admin denied by policy y/cnp-c (403)" in tr.detailed()
    (ev,) = events(tr, C.EV_L7_HTTP)
    assert ev[3] == 403
    # the connection stays open: an allowed request after it is answered by the pod
    assert answer(conn.send(get("/public/b"))).startswith(b"HTTP/1.1 200 OK")
    assert len(seen) == 1


def test_pipelined_requests_judged_in_order(backend: str) -> None:
    c = make(backend, l7_policy({"method": "GET", "path": "/public/.*"}))
    seen = seen_by_pod(c, "y/c")
    conn = Conn(c, "x/a", "y/c")
    got = answer(conn.send(get("/public/1") + get("/secret") + get("/public/2")))
    ok = b"HTTP/1.1 200 OK\r\n"
    assert got.count(ok) == 2 and got.count(DENIED) == 1
    assert got.index(ok) < got.index(DENIED) < got.rindex(ok)
    assert [s.split(b" ")[1] for s in seen] == [b"/public/1", b"/public/2"]


def test_request_split_over_segments_is_reassembled(backend: str) -> None:
    c = make(backend, l7_policy({"method": "GET", "path": "/public/.*"}))
    conn = Conn(c, "x/a", "y/c")
    req = get("/admin")
    assert answer(conn.send(req[:10])) == b""  # an ACK only: the request is incomplete
    assert answer(conn.send(req[10:])) == DENIED


def test_method_regex_is_anchored(backend: str) -> None:
    c = make(backend, l7_policy({"method": "POST|PUT", "path": "/api/orders"}))
    conn = Conn(c, "x/a", "y/c")
    assert answer(conn.send(get("/api/orders", method="PUT"))).startswith(b"HTTP/1.1 200")
    assert answer(conn.send(get("/api/orders", method="GET"))) == DENIED
    assert answer(conn.send(get("/api/orders/1", method="POST"))) == DENIED  # path anchored
    assert answer(conn.send(get("/api/orders", method="XPUT"))) == DENIED  # method anchored


def test_header_rules(backend: str) -> None:
    c = make(backend, l7_policy(
        {"path": "/team", "headers": ["X-Team: shop", "X-Debug"]},
        {"path": "/match", "headerMatches": [{"name": "X-Env", "value": "prod"}]}))
    conn = Conn(c, "x/a", "y/c")
    assert answer(conn.send(get("/team", "x-team: shop", "X-Debug: 1"))).startswith(
        b"HTTP/1.1 200")
    assert answer(conn.send(get("/team", "X-Team: shop"))) == DENIED  # X-Debug missing
    assert answer(conn.send(get("/team", "X-Team: other", "X-Debug: 1"))) == DENIED
    assert answer(conn.send(get("/match", "X-Env: prod"))).startswith(b"HTTP/1.1 200")
    assert answer(conn.send(get("/match", "X-Env: dev"))) == DENIED


def test_host_rule(backend: str) -> None:
    c = make(backend, l7_policy({"host": r"c\.y\.svc(\.cluster\.local)?"}))
    conn = Conn(c, "x/a", "y/c")
    assert answer(conn.send(get("/", host="c.y.svc"))).startswith(b"HTTP/1.1 200")
    assert answer(conn.send(get("/", host="evil.example"))) == DENIED


def test_rules_of_two_policies_are_ored(backend: str) -> None:
    c = make(backend, l7_policy({"path": "/one"}),
             l7_policy({"path": "/two"}, name="cnp-c2"))
    conn = Conn(c, "x/a", "y/c")
    assert answer(conn.send(get("/one"))).startswith(b"HTTP/1.1 200")
    assert answer(conn.send(get("/two"))).startswith(b"HTTP/1.1 200")
    tr = conn.send(get("/three"))
    assert answer(tr) == DENIED
    assert "denied by policy y/cnp-c, y/cnp-c2 (403)" in tr.detailed()


@pytest.mark.parametrize("plain", ["cnp", "networkpolicy"])
def test_l4_allow_of_the_port_wildcards_l7(backend: str, plain: str) -> None:
    """Cilium's merge: an L4-only allow of the same port and peer makes every request pass
    (https://docs.cilium.io/en/stable/security/policy/layer7/): no redirect at all."""
    spec = {"ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 80}]}],
            "podSelector": {"matchLabels": {"app": "c"}}}
    other = policy("np-c", "y", spec) if plain == "networkpolicy" else cnp("l4-c", "y", {
        "endpointSelector": {"matchLabels": {"app": "c"}},
        "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]})
    c = make(backend, l7_policy({"path": "/public/.*"}), other)
    conn = Conn(c, "x/a", "y/c")
    assert events(conn.syn, C.EV_L7_REDIRECT) == []
    assert answer(conn.send(get("/admin"))).startswith(b"HTTP/1.1 200")


def test_peers_the_l7_rule_does_not_name(backend: str) -> None:
    """The L7 rule allows namespace x only: y/d is denied at L3/L4 (no SYN-ACK), while an
    L7 rule of another peer leaves x's connections to its own rules."""
    c = make(backend, l7_policy({"path": "/x-only"}),
             l7_policy({"path": "/d-only"}, name="cnp-d",
                       peers={"matchLabels": {"app": "d"}}))
    conn = Conn(c, "x/a", "y/c")
    assert answer(conn.send(get("/x-only"))).startswith(b"HTTP/1.1 200")
    assert answer(conn.send(get("/d-only"))) == DENIED
    d = Conn(c, "y/d", "y/c")
    assert d.syn.verdict().reachable
    assert answer(d.send(get("/d-only"))).startswith(b"HTTP/1.1 200")
    assert answer(d.send(get("/x-only"))) == DENIED
    b = Conn(c, "x/b", "y/c", 81)  # a port without a rule: L4 denial
    assert not b.syn.verdict().reachable


def _capture(path: Path, client: str, server: str, data: bytes) -> None:
    def seg(flags: str, seq: int, payload: bytes = b"") -> Any:
        p = Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:80") / IP(
            src=client, dst=server) / TCP(sport=40000, dport=80, flags=flags, seq=seq,
                                          ack=1) / payload
        return p

    frames = [seg("S", 1000), seg("A", 1001), seg("PA", 1001, data)]
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i / 1000
    wrpcap(str(path), frames)


def test_replay_pcapng_comment_and_flow_log(backend: str, tmp_path: Path) -> None:
    c = make(backend, l7_policy({"method": "GET", "path": "/public/.*"}))
    cap, out, flows = tmp_path / "in.pcap", tmp_path / "out.pcapng", tmp_path / "f.jsonl"
    _capture(cap, "10.0.0.5", "10.0.0.80", get("/public/x") + get("/admin"))
    c.replay(cap, out, flows, respond=True,
             address_map={"10.0.0.5": "x/a", "10.0.0.80": "y/c"})
    comments = [str(getattr(p, "comment", b"") or b"", "utf-8", "replace")
                if isinstance(getattr(p, "comment", b""), bytes) else str(p.comment)
                for p in PcapNgReader(str(out))]
    denied = [x for x in comments if "L7 proxy: GET /admin denied by policy y/cnp-c (403)"
              in x]
    assert denied and "L7 proxy: GET /public/x allowed by policy y/cnp-c ingress rule 0 " \
        "(200)" in denied[0]
    assert any("redirect to the L7 proxy: y/c port 80/TCP" in x for x in comments)
    records = [json.loads(line)["flow"] for line in flows.read_text().splitlines()]
    l7 = [r for r in records if r["Type"] == "L7"]
    assert [(r["l7"]["type"], r["verdict"], r["l7"]["http"]["url"],
             r["l7"]["http"].get("code")) for r in l7] == [
        ("REQUEST", "FORWARDED", "http://c/public/x", None),
        ("RESPONSE", "FORWARDED", "http://c/public/x", 200),
        ("REQUEST", "DROPPED", "http://c/admin", None),
        ("RESPONSE", "FORWARDED", "http://c/admin", 403)]
    req = l7[2]
    assert req["source"]["pod_name"] == "a" and req["destination"]["pod_name"] == "c"
    assert req["node_name"] == "node2" and req["is_reply"] is False
    assert req["l7"]["http"]["method"] == "GET" and req["l7"]["http"]["protocol"] == "HTTP/1.1"
    assert req["ingress_denied_by"][0]["kind"] == "CiliumNetworkPolicy"
    assert l7[3]["is_reply"] is True and l7[3]["source"]["pod_name"] == "c"
    # the L3/L4 record of the redirected SYN names the CNP by its kind
    syn = [r for r in records if r.get("ingress_allowed_by") and r["Type"] == "L3_L4"]
    assert syn and syn[0]["ingress_allowed_by"][0]["kind"] == "CiliumNetworkPolicy"


def test_apply_and_delete_a_cnp(backend: str) -> None:
    c = make(backend)
    assert c.apply(l7_policy({"path": "/ok"})) == ["y/cnp-c"]
    conn = Conn(c, "x/a", "y/c")
    assert answer(conn.send(get("/no"))) == DENIED
    c.delete("CiliumNetworkPolicy", "y/cnp-c")
    conn = Conn(c, "x/a", "y/c")
    assert answer(conn.send(get("/no"))).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(("rules", "field"), [
    ({"kafka": [{"topic": "t"}]}, "rules.kafka"),
    ({"dns": [{"matchName": "x"}]}, "rules.dns"),
    ({"http": [{"path": "/(unclosed"}]}, "rules.http[0].path"),
    ({"http": [{"headerMatches": [{"name": "a", "mismatch": "ADD"}]}]}, "mismatch"),
])
def test_unmodelled_l7_is_refused(rules: dict[str, Any], field: str) -> None:
    bad = cnp("bad", "y", {"endpointSelector": {}, "ingress": [{"toPorts": [
        {"ports": [{"port": "80", "protocol": "TCP"}], "rules": rules}]}]})
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        make("python", bad)


def test_l7_needs_tcp_ports_and_ingress() -> None:
    udp = cnp("u", "y", {"endpointSelector": {}, "ingress": [{"toPorts": [
        {"ports": [{"port": "80", "protocol": "UDP"}], "rules": {"http": [{}]}}]}]})
    with pytest.raises(ManifestError, match=r"protocol.*HTTP rules apply to TCP"):
        make("python", udp)
    egress = cnp("e", "y", {"endpointSelector": {}, "egress": [{"toPorts": [
        {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{}]}}]}]})
    with pytest.raises(ManifestError, match=r"egress\[0\].toPorts\[0\].rules.http.*egress"):
        make("python", egress)


@pytest.mark.parametrize(("path", "code", "words"), [
    ("/admin", 1, "result: HTTP/1.1 403 Forbidden (L7 proxy: GET /admin denied by policy "
                  "y/cnp-c (403))"),
    ("/public/x", 0, "result: HTTP/1.1 200 OK (L7 proxy: GET /public/x allowed by policy "
                     "y/cnp-c ingress rule 0 (200))")])
def test_trace_http(backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                    path: str, code: int, words: str) -> None:
    """``kemu trace --http``: the request after the handshake, the proxy's verdict in the
    trace and the result, exit 1 for the 403."""
    import yaml

    from kemu.frontend.cli import main

    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump_all(cluster_docs() + [l7_policy({"method": "GET",
                                                                 "path": "/public/.*"})]))
    rc = main(["trace", "-f", str(f), "-S", "x/a", "-D", "y/c:80", "--http", f"GET {path}",
               "--backend", backend])
    out = capsys.readouterr().out
    assert rc == code
    assert out.rstrip().endswith(words)
    assert "Redirected redirect to the L7 proxy: y/c port 80/TCP" in out
    assert ("L7 proxy   Denied" if code else "L7 proxy   Allowed") in out


def test_through_a_service_to_a_named_port(backend: str) -> None:
    """Service traffic is judged after DNAT (P-10): the proxy of the endpoint's node judges
    the requests to svc-b (port 80 -> ``http``: 80 on x/b, 8080 on x/b2, P-7)."""
    c = make(backend, cnp("cnp-b", "x", {
        "endpointSelector": {"matchLabels": {"app": "b"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "a"}}],
                     "toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}],
                                  "rules": {"http": [{"path": "/ok"}]}}]}]}))
    seen = {k: seen_by_pod(c, k) for k in ("x/b", "x/b2")}
    for sport in range(43000, 43006):  # both endpoints, whichever the proxy picks
        syn = c.send(IP(dst="10.96.0.50") / TCP(sport=sport, dport=80, flags="S", seq=1000),
                     src="x/a")
        assert syn.verdict().reachable and events(syn, C.EV_L7_REDIRECT)
        for path, ok in (("/ok", True), ("/no", False)):
            tr = c.send(IP(dst="10.96.0.50") / TCP(sport=sport, dport=80, flags="PA",
                                                   seq=1001 if ok else 1001 + len(get("/ok")),
                                                   ack=1) / get(path), src="x/a")
            assert (answer(tr) == DENIED) != ok
    assert sum(len(v) for v in seen.values()) == 6
    assert all(s.startswith(b"GET /ok ") for v in seen.values() for s in v)


def test_retransmitted_syn_keeps_the_proxy(backend: str) -> None:
    """The second SYN rides conntrack (not judged, no redirect event) and the stack makes
    the connection again: the proxy stays in front of it."""
    c = make(backend, l7_policy({"path": "/ok"}))
    conn = Conn(c, "x/a", "y/c")
    again = c.send(IP(dst=conn.dip) / TCP(sport=conn.sport, dport=80, flags="S", seq=1000),
                   src="x/a")
    assert events(again, C.EV_L7_REDIRECT) == [] and again.verdict().reachable
    assert answer(conn.send(get("/no"))) == DENIED


@pytest.mark.skipif(len(IMPLEMENTATIONS) < 2, reason="one backend in this build")
def test_backends_agree(tmp_path: Path) -> None:
    """The same replay on both datapaths: the same flow log, byte for byte (the redirect,
    the proxy's verdicts and their records included)."""
    cap = tmp_path / "in.pcap"
    _capture(cap, "10.0.0.5", "10.0.0.80", get("/public/x") + get("/admin") + get("/p"))
    logs = []
    for backend in sorted(IMPLEMENTATIONS):
        c = make(backend, l7_policy({"method": "GET", "path": "/public/.*"}))
        flows = tmp_path / f"{backend}.jsonl"
        c.replay(cap, tmp_path / f"{backend}.pcapng", flows, respond=True,
                 flow_format="kemu", address_map={"10.0.0.5": "x/a", "10.0.0.80": "y/c"})
        logs.append(flows.read_bytes())
    assert logs[0] == logs[1] and logs[0].count(b'"Type":"L7"') == 6
