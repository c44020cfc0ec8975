"""Lookups as a pod's resolver makes them (``kemu dig``, ``EmulatedCluster.dig``; D-10):
glibc's search order over the pod's resolv.conf, each query a packet through the datapath to
the kube-dns Service (DNAT'd to a CoreDNS pod) and back, over UDP or TCP; nameserver
fallback; the pcapng of a lookup; exit codes. Packets flow: every test on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dns import DNS
from scapy.layers.inet import TCP, UDP
from scapy.utils import rdpcap

import kemu
from kemu.dataplane import codes as C
from kemu.errors import KemuError
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cluster"
Z = "cluster.local."


@pytest.fixture
def cluster(backend: str) -> kemu.EmulatedCluster:
    return kemu.load(EXAMPLE, backend=backend)


def asked(result: Any) -> list[tuple[str, str]]:
    return [(q.qname, q.status) for q in result.queries]


def test_short_name_found_in_the_pods_own_namespace(cluster: kemu.EmulatedCluster) -> None:
    r = cluster.dig("shop/redis-0", "backend")
    assert asked(r) == [(f"backend.shop.svc.{Z}", "NOERROR")]
    assert r.answered and [(a.type, a.value) for a in r.records] == [("A", "10.96.0.11")]
    assert r.answer is r.queries[0] and r.answer.answered_by.startswith(
        "pod kube-system/coredns-")
    # the query really crossed the datapath: DNAT'd from the ClusterIP to a CoreDNS pod
    trace = r.queries[0].traces[0]
    assert any(e[0] == C.EV_DNAT for _i, _d, _b, evs in trace.first.hops for e in evs)
    assert trace.delivered_to(0)[0].startswith("pod kube-system/coredns-")


def test_search_list_then_the_absolute_name(cluster: kemu.EmulatedCluster) -> None:
    r = cluster.dig("default/client", "backend")
    assert asked(r) == [(f"backend.default.svc.{Z}", "NXDOMAIN"),
                        (f"backend.svc.{Z}", "NXDOMAIN"), (f"backend.{Z}", "NXDOMAIN"),
                        ("backend.", "REFUSED")]  # outside the zone: upstream not emulated
    assert not r.answered and r.records == []
    r = cluster.dig("default/client", "backend.shop")
    assert asked(r) == [(f"backend.shop.default.svc.{Z}", "NXDOMAIN"),
                        (f"backend.shop.svc.{Z}", "NOERROR")]
    assert r.records[0].value == "10.96.0.11"


def test_trailing_dot_and_ndots(cluster: kemu.EmulatedCluster) -> None:
    r = cluster.dig("default/client", f"backend.shop.svc.{Z}")
    assert asked(r) == [(f"backend.shop.svc.{Z}", "NOERROR")]
    # four dots < ndots 5: searched first, found only at the end as it is
    r = cluster.dig("default/client", "backend.shop.svc.cluster.local")
    assert [q for q, _s in asked(r)] == [
        f"backend.shop.svc.cluster.local.default.svc.{Z}",
        f"backend.shop.svc.cluster.local.svc.{Z}", f"backend.shop.svc.cluster.local.{Z}",
        f"backend.shop.svc.{Z}"]
    assert r.answered


def test_nodata_goes_on_to_the_next_candidate(cluster: kemu.EmulatedCluster) -> None:
    r = cluster.dig("shop/redis-0", "backend", "AAAA")  # IPv4 Service: NODATA (D-9)
    assert asked(r)[0] == (f"backend.shop.svc.{Z}", "NOERROR")
    assert len(r.queries) == 4 and not r.answered


@pytest.mark.parametrize(("name", "qtype", "want"), [
    ("_redis._tcp.redis", "SRV", ["0 50 6379 redis-0.redis.shop.svc.cluster.local.",
                                  "0 50 6379 redis-1.redis.shop.svc.cluster.local."]),
    ("redis", "A", ["10.244.0.5", "10.244.2.4"]),
    ("redis-0.redis", "A", ["10.244.2.4"]),
    ("11.0.96.10.in-addr.arpa", "PTR", ["backend.shop.svc.cluster.local."]),
    ("dns-version.cluster.local", "TXT", ['"1.1.0"']),
])
def test_record_types_over_udp_and_tcp(cluster: kemu.EmulatedCluster, name: str, qtype: str,
                                       want: list[str]) -> None:
    for tcp in (False, True):
        r = cluster.dig("shop/redis-0", name, qtype, tcp=tcp)
        assert sorted(a.value for a in r.records) == want, tcp
        assert r.answer is not None and r.answer.transport == ("TCP" if tcp else "UDP")


def test_tcp_lookup_is_a_whole_connection(cluster: kemu.EmulatedCluster) -> None:
    r = cluster.dig("shop/redis-0", "backend", tcp=True)
    flags = [str(_ether(trace.first.hops[0][2])[TCP].flags) for trace in r.queries[0].traces]
    assert flags == ["S", "A", "PA", "FA", "A"]  # handshake, query, FIN, last ACK
    assert not any(s.streams for s in cluster.engine._stacks.values())  # closed


def _ether(data: bytes) -> Any:
    from scapy.layers.l2 import Ether

    return Ether(data)


def test_host_network_pods_use_the_nodes_resolver_unless_with_host_net(backend: str) -> None:
    def pod(name: str, policy: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"hostNetwork": True, "nodeName": "node1", "dnsPolicy": policy,
                         "containers": [{"name": "c"}]}}

    emu = kemu.load(EXAMPLE, [pod("hn", "ClusterFirst"), pod("hnc", "ClusterFirstWithHostNet")],
                    backend=backend)
    r = emu.dig("default/hn", "backend.shop.svc.cluster.local.")
    assert [q.server for q in r.queries] == ["172.18.0.1"]  # the node's: its gateway
    assert r.queries[0].message is None and not r.answered  # the gateway runs no DNS
    r = emu.dig("default/hnc", "backend.shop")
    assert r.queries[0].server == "10.96.0.10" and r.answered


def test_next_nameserver_when_one_does_not_answer(backend: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"dnsPolicy": "None", "containers": [{"name": "c"}],
                    "dnsConfig": {"nameservers": ["10.96.0.99", "10.96.0.10"],
                                  "searches": ["shop.svc.cluster.local"]}}}
    emu = kemu.load(EXAMPLE, pod, backend=backend)
    r = emu.dig("default/p", "backend")
    assert [(q.qname, q.server, q.status) for q in r.queries] == [
        (f"backend.shop.svc.{Z}", "10.96.0.99", "no reply"),
        (f"backend.shop.svc.{Z}", "10.96.0.10", "NOERROR")]
    assert r.answered


def test_bad_input(cluster: kemu.EmulatedCluster) -> None:
    with pytest.raises(KemuError, match="unknown DNS type"):
        cluster.dig("default/client", "backend", "MX2")
    with pytest.raises(KemuError, match="not a DNS name"):
        cluster.dig("default/client", "a..b")
    with pytest.raises(KemuError, match="no pod shop/redis-7"):
        cluster.dig("shop/redis-7", "backend")


# --- the command ---------------------------------------------------------------------------------

def test_dig_command_exit_codes_and_sections(capsys, backend: str) -> None:
    base = ["dig", "-f", str(EXAMPLE), "--backend", backend, "-S"]
    assert main([*base, "shop/redis-0", "backend"]) == 0
    out = capsys.readouterr().out
    assert ";; ->>HEADER<<- opcode: QUERY, status: NOERROR" in out
    assert f"backend.shop.svc.{Z}\t5\tIN\tA\t10.96.0.11" in out
    assert main([*base, "default/client", "backend"]) == 1
    out = capsys.readouterr().out
    assert out.count(";; query ") == 4 and "status: NXDOMAIN" in out
    assert main([*base, "client", "backend", "BOGUS"]) == 2
    assert "unknown DNS type" in capsys.readouterr().err
    assert main([*base, "default/nobody", "backend"]) == 2


def test_dig_writes_the_lookup_to_a_pcapng(tmp_path: Path, capsys, backend: str) -> None:
    out = tmp_path / "dig.pcapng"
    assert main(["dig", "-f", str(EXAMPLE), "--backend", backend, "-S", "default/client",
                 "backend.shop", "-w", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    pkts = rdpcap(str(out))
    queries = {p[DNS].qd[0].qname.decode() for p in pkts if UDP in p and DNS in p
               and p[UDP].dport == 53}
    assert queries == {f"backend.shop.default.svc.{Z}", f"backend.shop.svc.{Z}"}
    answers = [p for p in pkts if UDP in p and DNS in p and p[UDP].sport == 53]
    assert {p[DNS].rcode for p in answers} == {0, 3}
    assert [p.time for p in pkts] == sorted(p.time for p in pkts)
    # an output that is an input is refused before anything runs
    assert main(["dig", "-f", str(EXAMPLE / "client.yaml"), "-f", str(EXAMPLE), "-S",
                 "client", "x", "-w", str(EXAMPLE / "client.yaml")]) == 2


def many(n: int, options: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """A headless Service of ``n`` pods, and a client pod with the given resolver options."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"m{i}", "labels": {"app": "m"}},
         "spec": {"containers": [{"name": "c"}]}} for i in range(n)]
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "many"},
                 "spec": {"clusterIP": "None", "selector": {"app": "m"},
                          "ports": [{"port": 80}]}})
    spec: dict[str, Any] = {"containers": [{"name": "c"}]}
    if options:
        spec["dnsConfig"] = {"options": options}
    docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "asker"}, "spec": spec})
    return docs


def test_udp_answer_too_long_is_truncated_and_asked_again_over_tcp(backend: str) -> None:
    emu = kemu.load(EXAMPLE, many(20), backend=backend)
    r = emu.dig("default/asker", "many")
    udp, tcp = r.queries
    assert (udp.transport, tcp.transport) == ("UDP", "TCP") and udp.qname == tcp.qname
    assert udp.message is not None and udp.message.truncated and not udp.answered
    assert 0 < len(udp.message.answers) < 20  # what fitted in 512 bytes
    assert r.answer is tcp and len(r.records) == 20
    udp_bytes = udp.traces[0].answers()[-1].hops[-1][2]
    assert len(udp_bytes) - 42 <= 512  # Ethernet, IP and UDP headers aside
    assert "truncated: TC set, asked again over TCP" in r.text()


def test_edns0_raises_the_udp_limit_and_use_vc_asks_over_tcp(backend: str) -> None:
    emu = kemu.load(EXAMPLE, many(20, [{"name": "edns0"}]), backend=backend)
    r = emu.dig("default/asker", "many")
    assert [q.transport for q in r.queries] == ["UDP"] and len(r.records) == 20
    emu = kemu.load(EXAMPLE, many(2, [{"name": "use-vc"}]), backend=backend)
    r = emu.dig("default/asker", "many")
    assert [q.transport for q in r.queries] == ["TCP"] and len(r.records) == 2


def test_names_are_sent_as_typed_and_compared_case_insensitively(
        cluster: kemu.EmulatedCluster) -> None:
    r = cluster.dig("shop/redis-0", "BackEnd")
    assert asked(r) == [("BackEnd.shop.svc.cluster.local.", "NOERROR")]  # D-8
    assert r.queries[0].message is not None
    assert r.queries[0].message.qname == "BackEnd.shop.svc.cluster.local."  # echoed as asked
    assert r.records[0].value == "10.96.0.11"
