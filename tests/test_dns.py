"""Cluster DNS (D-1..D-9): records of the example cluster and spec-style question/answer checks
(SEMANTICS G-3: the Kubernetes DNS specification's examples, asserted directly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kemu.control import dns, load_cluster
from kemu.control.cluster import Cluster
from kemu.control.dns import NOERROR, NXDOMAIN, REFUSED, DnsRecord

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cluster"
Z = "cluster.local."


@pytest.fixture
def example() -> Cluster:
    return load_cluster(EXAMPLE)


def ask(c: Cluster, name: str, qtype: str) -> tuple[int, list[str]]:
    rcode, answers = dns.lookup(c, name, qtype)
    return rcode, sorted(a.value for a in answers)


def test_dns_version_d1(example: Cluster) -> None:
    assert ask(example, f"dns-version.{Z}", "TXT") == (NOERROR, ['"1.1.0"'])


def test_cluster_ip_service_a_record_d2(example: Cluster) -> None:
    assert ask(example, f"kube-dns.kube-system.svc.{Z}", "A") == (NOERROR, ["10.96.0.10"])
    assert ask(example, f"backend.shop.svc.{Z}", "A") == (NOERROR, ["10.96.0.11"])
    assert ask(example, f"legacy.shop.svc.{Z}", "A") == (NOERROR, ["10.96.0.13"])  # no endpoints


def test_cluster_ip_ptr_d2(example: Cluster) -> None:
    assert ask(example, "10.0.96.10.in-addr.arpa.", "PTR") == (
        NOERROR, [f"kube-dns.kube-system.svc.{Z}"])


def test_srv_for_named_ports_only_d3(example: Cluster) -> None:
    assert ask(example, f"_dns._udp.kube-dns.kube-system.svc.{Z}", "SRV") == (
        NOERROR, [f"0 100 53 kube-dns.kube-system.svc.{Z}"])
    assert ask(example, f"_dns-tcp._tcp.kube-dns.kube-system.svc.{Z}", "SRV") == (
        NOERROR, [f"0 100 53 kube-dns.kube-system.svc.{Z}"])
    assert ask(example, f"_grpc._tcp.backend.shop.svc.{Z}", "SRV") == (
        NOERROR, [f"0 100 9090 backend.shop.svc.{Z}"])
    srv_names = {r.name for r in dns.records(example) if r.type == "SRV"}
    assert not any("frontend" in n for n in srv_names)  # frontend's only port is unnamed
    assert ask(example, f"_dns._tcp.kube-dns.kube-system.svc.{Z}", "SRV") == (NXDOMAIN, [])


def test_headless_a_record_per_ready_endpoint_d4(example: Cluster) -> None:
    assert ask(example, f"redis.shop.svc.{Z}", "A") == (NOERROR, ["10.244.0.5", "10.244.2.4"])
    example.set_pod_ready("shop", "redis-1", False)
    assert ask(example, f"redis.shop.svc.{Z}", "A") == (NOERROR, ["10.244.2.4"])
    assert ask(example, f"redis-1.redis.shop.svc.{Z}", "A") == (NXDOMAIN, [])
    example.set_pod_ready("shop", "redis-0", False)
    assert ask(example, f"redis.shop.svc.{Z}", "A") == (NXDOMAIN, [])  # no ready endpoints


def test_headless_srv_per_endpoint_and_named_port_d4(example: Cluster) -> None:
    assert ask(example, f"_redis._tcp.redis.shop.svc.{Z}", "SRV") == (
        NOERROR, [f"0 50 6379 redis-0.redis.shop.svc.{Z}",
                  f"0 50 6379 redis-1.redis.shop.svc.{Z}"])


def test_headless_hostname_records_and_ptr_d4_d5(example: Cluster) -> None:
    assert ask(example, f"redis-0.redis.shop.svc.{Z}", "A") == (NOERROR, ["10.244.2.4"])
    assert ask(example, "4.2.244.10.in-addr.arpa.", "PTR") == (
        NOERROR, [f"redis-0.redis.shop.svc.{Z}"])


def test_pod_hostname_and_subdomain_d5() -> None:
    doc = [{"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "busybox1", "labels": {"name": "busybox"}},
            "spec": {"hostname": "busybox-1", "subdomain": "busybox-subdomain",
                     "containers": [{"name": "busybox"}]}},
           {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "busybox2", "labels": {"name": "busybox"}},
            "spec": {"subdomain": "busybox-subdomain", "containers": [{"name": "busybox"}]}},
           {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "busybox-subdomain"},
            "spec": {"clusterIP": "None", "selector": {"name": "busybox"},
                     "ports": [{"name": "foo", "port": 1234}]}}]
    c = load_cluster(doc)
    one, two = str(c.pod("default", "busybox1").ip), str(c.pod("default", "busybox2").ip)
    assert ask(c, f"busybox-1.busybox-subdomain.default.svc.{Z}", "A") == (NOERROR, [one])
    # subdomain without hostname only joins the headless A set (and gets a dashed-IP name)
    assert ask(c, f"busybox-subdomain.default.svc.{Z}", "A") == (NOERROR, sorted([one, two]))
    dashed = two.replace(".", "-")
    assert ask(c, f"{dashed}.busybox-subdomain.default.svc.{Z}", "A") == (NOERROR, [two])


def test_endpoint_names_of_cluster_ip_services_d6(example: Cluster) -> None:
    assert ask(example, f"10-244-0-3.backend.shop.svc.{Z}", "A") == (NOERROR, ["10.244.0.3"])


def test_pod_records_insecure_mode_d6(example: Cluster) -> None:
    assert ask(example, f"10-244-0-2.default.pod.{Z}", "A") == (NOERROR, ["10.244.0.2"])
    assert ask(example, f"1-2-3-4.shop.pod.{Z}", "A") == (NOERROR, ["1.2.3.4"])  # insecure
    assert ask(example, f"1-2-3-4.shop.pod.{Z}", "AAAA") == (NOERROR, [])
    assert ask(example, f"1-2-3-4.nowhere.pod.{Z}", "A") == (NXDOMAIN, [])
    assert ask(example, f"1-2-3-999.shop.pod.{Z}", "A") == (NXDOMAIN, [])
    pod_records = [r for r in dns.records(example) if ".pod." in r.name]
    assert len(pod_records) == len(example.pods)


def test_external_name_cname_d7() -> None:
    c = load_cluster({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "search"},
                      "spec": {"type": "ExternalName", "externalName": "Search.Example.com."}},
                     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "alias"},
                      "spec": {"type": "ExternalName",
                               "externalName": "web.default.svc.cluster.local"}},
                     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                      "spec": {"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}})
    assert ask(c, f"search.default.svc.{Z}", "CNAME") == (NOERROR, ["search.example.com."])
    assert ask(c, f"search.default.svc.{Z}", "A") == (NOERROR, ["search.example.com."])
    rcode, answers = dns.lookup(c, f"alias.default.svc.{Z}", "A")  # in-zone target: chased
    assert (rcode, [(a.type, a.value) for a in answers]) == (
        NOERROR, [("CNAME", f"web.default.svc.{Z}"), ("A", "10.96.1.1")])


def test_ttl_is_five_seconds_d8(example: Cluster) -> None:
    assert {r.ttl for r in dns.records(example)} == {5}


def test_names_are_case_insensitive_d8(example: Cluster) -> None:
    assert ask(example, "KUBE-DNS.Kube-System.SVC.Cluster.Local", "a") == (NOERROR,
                                                                          ["10.96.0.10"])


def test_nodata_versus_nxdomain_d9(example: Cluster) -> None:
    assert ask(example, f"kube-dns.kube-system.svc.{Z}", "AAAA") == (NOERROR, [])
    assert ask(example, f"kube-dns.kube-system.svc.{Z}", "TXT") == (NOERROR, [])
    assert ask(example, f"nope.kube-system.svc.{Z}", "A") == (NXDOMAIN, [])
    assert ask(example, f"kube-dns.nope.svc.{Z}", "A") == (NXDOMAIN, [])
    assert ask(example, f"shop.svc.{Z}", "A") == (NOERROR, [])  # namespace exists
    assert ask(example, f"nope.svc.{Z}", "A") == (NXDOMAIN, [])
    assert ask(example, f"_tcp.backend.shop.svc.{Z}", "A") == (NOERROR, [])  # empty non-terminal
    assert ask(example, Z, "A") == (NOERROR, [])
    assert ask(example, "9.9.9.9.in-addr.arpa.", "PTR") == (NXDOMAIN, [])


def test_names_outside_the_zone_are_refused(example: Cluster) -> None:
    assert ask(example, "example.com.", "A") == (REFUSED, [])


def test_custom_dns_domain() -> None:
    c = load_cluster({"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster",
                      "spec": {"dnsDomain": "corp.internal"}},
                     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                      "spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}})
    assert ask(c, "a.default.svc.corp.internal", "A") == (NOERROR, ["10.96.0.50"])
    assert ask(c, "dns-version.corp.internal", "TXT") == (NOERROR, ['"1.1.0"'])
    assert ask(c, f"a.default.svc.{Z}", "A") == (REFUSED, [])


def test_records_are_sorted_unique_and_follow_edits(example: Cluster) -> None:
    recs = dns.records(example)
    assert recs == sorted(set(recs))
    assert DnsRecord(f"frontend.shop.svc.{Z}", "A", "10.96.0.12") in recs
    example.delete_service("shop", "frontend")
    assert ask(example, f"frontend.shop.svc.{Z}", "A") == (NXDOMAIN, [])


def test_record_text_is_zone_file_form() -> None:
    r = DnsRecord(f"_dns._udp.kube-dns.kube-system.svc.{Z}", "SRV",
                  f"0 100 53 kube-dns.kube-system.svc.{Z}")
    assert str(r) == (f"_dns._udp.kube-dns.kube-system.svc.{Z} 5 IN SRV 0 100 53 "
                      f"kube-dns.kube-system.svc.{Z}")


def test_example_record_counts(example: Cluster) -> None:
    by_type: dict[str, Any] = {}
    for r in dns.records(example):
        by_type[r.type] = by_type.get(r.type, 0) + 1
    # A: 4 ClusterIP svcs + 2 headless + 2 hostnames + 7 endpoint names + 10 pods;
    # PTR: 4 ClusterIPs + 9 ready endpoints; SRV: 4 ClusterIP ports + 2 headless; TXT: 1
    assert by_type == {"A": 25, "PTR": 13, "SRV": 6, "TXT": 1}


def test_records_sort_and_names_below_agree_with_plain_forms(example: Cluster) -> None:
    recs = dns.records(example)
    assert recs == sorted(set(recs))  # the dataclass order
    zone = dns._index(example)
    names = {r.name for r in recs}
    candidates = {n.split(".", k)[-1] for n in names for k in range(1, 6)} | {"x.", "svc."}
    for name in sorted(candidates):
        assert zone.has_below(name) == any(k.endswith("." + name) for k in names), name


def test_schema_1_1_0_ipv6_questions_on_an_ipv4_model(example: Cluster) -> None:
    """Schema 1.1.0 added AAAA and ip6.arpa PTRs; kemu models IPv4 only: AAAA is NODATA on
    existing names (D-9), ip6.arpa names are in a zone CoreDNS serves (NXDOMAIN, not
    REFUSED), an ExternalName asked as AAAA still gives its CNAME (D-7)."""
    assert ask(example, f"backend.shop.svc.{Z}", "AAAA") == (NOERROR, [])
    assert ask(example, f"redis-0.redis.shop.svc.{Z}", "AAAA") == (NOERROR, [])
    v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    assert ask(example, v6, "PTR") == (NXDOMAIN, [])
    c = load_cluster({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                      "spec": {"type": "ExternalName", "externalName": "www.example.com"}})
    assert ask(c, f"ext.default.svc.{Z}", "AAAA") == (NOERROR, ["www.example.com."])


def test_negative_answers_carry_the_zones_soa_d9(example: Cluster) -> None:
    """On the wire: NXDOMAIN and NODATA have the zone's SOA in the authority section, as
    CoreDNS sends them; positive and REFUSED answers have none."""
    from kemu.dataplane import dnswire

    resolve = dnswire.make_resolver(example, dns)

    def ask_wire(name: str, qtype: str) -> dnswire.Message:
        return dnswire.parse_message(resolve(dnswire.query(9, name, qtype)))

    soa = f"ns.dns.{Z} hostmaster.{Z} {example.version} 7200 1800 86400 5"
    for name, qtype, rcode in ((f"nope.shop.svc.{Z}", "A", NXDOMAIN),
                               (f"backend.shop.svc.{Z}", "AAAA", NOERROR)):
        m = ask_wire(name, qtype)
        assert (m.rcode, m.answers) == (rcode, ())
        assert [(a.name, a.type, a.ttl, a.value) for a in m.authority] == [(Z, "SOA", 5, soa)]
    m = ask_wire("9.9.9.9.in-addr.arpa.", "PTR")
    assert m.rcode == NXDOMAIN and m.authority[0].name == "in-addr.arpa."
    assert ask_wire(f"backend.shop.svc.{Z}", "A").authority == ()
    assert ask_wire("example.com.", "A").authority == ()
    assert dns.soa(example, "example.com") is None
