"""A cluster dump without a kemu Cluster document: address ranges inferred from the objects
(``kemu.control.ipam.infer``), pod blocks outside the nodes' podCIDRs (Calico, Cilium
cluster-pool IPAM) routed to their nodes (R-1, R-2)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from kemu.compiler.routes import gateway_routes, node_routes
from kemu.control import load_cluster
from kemu.control.ipam import NodeDraft, PodAddress, covering, infer
from kemu.control.model import ClusterConfig
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
DUMP = ROOT / "examples" / "dump" / "cluster-dump.yaml"
CALICO = ROOT / "tests" / "data" / "manifests" / "calico-dump.yaml"


def test_covering_is_the_smallest_network_no_longer_than_asked() -> None:
    ips = [IPv4Address("10.96.0.1"), IPv4Address("10.96.0.10")]
    assert covering(ips, 16) == IPv4Network("10.96.0.0/16")
    assert covering(ips, 32) == IPv4Network("10.96.0.0/28")
    assert covering([*ips, IPv4Address("10.100.3.4")], 16) == IPv4Network("10.96.0.0/13")
    assert covering([IPv4Network("10.88.2.0/24"), IPv4Address("10.88.0.17")], 24) == \
        IPv4Network("10.88.0.0/22")
    assert covering([], 16) is None


def test_the_dump_loads_without_its_cluster_document_and_gives_the_same_cluster() -> None:
    alone = load_cluster(DUMP)
    given = load_cluster(DUMP.parent)  # with examples/dump/cluster.yaml
    for attr in ("cluster_cidr", "node_network", "gateway_ip", "node_cidr_prefix"):
        assert getattr(alone.config, attr) == getattr(given.config, attr), attr
    # the ClusterIPs (10.100.x) lie in the default service CIDR: kept (the document pins a /16)
    assert (alone.config.service_cidr, given.config.service_cidr) == (
        IPv4Network("10.96.0.0/12"), IPv4Network("10.100.0.0/16"))
    assert [(n.name, n.internal_ip, n.pod_cidr, n.pod_blocks) for n in alone.nodes] == \
        [(n.name, n.internal_ip, n.pod_cidr, n.pod_blocks) for n in given.nodes]
    assert [(p.key, p.ip, p.node_name) for p in alone.pods] == \
        [(p.key, p.ip, p.node_name) for p in given.pods]
    assert [(s.key, s.cluster_ip) for s in alone.services] == \
        [(s.key, s.cluster_ip) for s in given.services]
    assert [str(n) for n in alone.notices if "inferred" in str(n)] == [
        f"{DUMP}: no kemu Cluster document: inferred node network 192.168.49.0/24 (gateway "
        "192.168.49.1), cluster CIDR 10.88.0.0/16"]
    assert not [n for n in given.notices if "inferred" in str(n)]


def test_nothing_is_inferred_where_the_defaults_hold() -> None:
    config = ClusterConfig()
    nodes = [NodeDraft("a", ip=IPv4Address("172.18.0.7"), pod_cidr=IPv4Network(
        "10.244.3.0/24"))]
    assert infer(config, nodes, [PodAddress(IPv4Address("10.244.3.9"), "a")],
                 [IPv4Address("10.96.0.1")]) == ""
    assert config == ClusterConfig()


def test_the_gateway_moves_off_a_node_address() -> None:
    config = ClusterConfig()
    nodes = [NodeDraft("a", ip=IPv4Address("10.0.0.1")), NodeDraft("b", ip=IPv4Address(
        "10.0.0.2"))]
    infer(config, nodes, [], [])
    assert (config.node_network, config.gateway_ip) == (IPv4Network("10.0.0.0/24"),
                                                        IPv4Address("10.0.0.254"))


def test_calico_blocks_are_inferred_and_routed_to_their_nodes() -> None:
    c = load_cluster(CALICO)
    assert (c.config.cluster_cidr, c.config.service_cidr, c.config.node_network) == (
        IPv4Network("192.168.0.0/16"), IPv4Network("10.96.0.0/12"),  # the default holds
        IPv4Network("172.20.0.0/24"))
    assert {n.name: (str(n.pod_cidr), [str(b) for b in n.pod_blocks]) for n in c.nodes} == {
        "cp": ("10.244.0.0/24", ["192.168.33.0/25"]),
        "worker1": ("10.244.1.0/24", ["192.168.33.128/25"]),
        "worker2": ("10.244.2.0/24", ["192.168.140.0/25"])}
    assert {p.key: (str(p.ip), p.node_name) for p in c.pods if not p.host_network} == {
        "kube-system/coredns-5d78c9869d-4xq8z": ("192.168.33.66", "cp"),
        "shop/client": ("192.168.33.131", "worker1"),
        "shop/web-7c5d8f9b6-abcde": ("192.168.33.130", "worker1"),
        "shop/web-7c5d8f9b6-fghij": ("192.168.140.5", "worker2")}
    rendered = {r.render() for r in node_routes(c)["worker1"]}
    assert "192.168.140.0/25 via 172.20.0.12 dev eth0 proto static" in rendered
    assert "192.168.33.128/25 dev cbr0 proto static scope link src 10.244.1.1" in rendered
    assert "192.168.33.0/25 via 172.20.0.10 dev eth0 proto static" in \
        {r.render() for r in gateway_routes(c)}
    (notice,) = [str(n) for n in c.notices if "inferred" in str(n)]
    assert notice.endswith("3 pod address blocks /25 outside the nodes' podCIDRs routed to "
                           "their nodes")


def test_blocks_are_as_short_as_the_pods_allow() -> None:
    """Cilium's cluster-pool: one /24 per node, no two nodes' pods in one /24."""
    config = ClusterConfig()
    nodes = [NodeDraft(n, ip=IPv4Address(f"172.18.0.{i + 2}"),
                       pod_cidr=IPv4Network(f"10.244.{i}.0/24")) for i, n in enumerate("ab")]
    pods = [PodAddress(IPv4Address("10.0.0.17"), "a"), PodAddress(IPv4Address("10.0.0.200"), "a"),
            PodAddress(IPv4Address("10.0.1.9"), "b")]
    assert "service CIDR" not in infer(config, nodes, pods, [IPv4Address("10.96.0.1")])
    assert infer(ClusterConfig(), [], [], [IPv4Address("10.0.0.1"), IPv4Address(
        "10.0.3.1")]) == "service CIDR 10.0.0.0/16"
    assert [d.pod_blocks for d in nodes] == [[IPv4Network("10.0.0.0/24")],
                                             [IPv4Network("10.0.1.0/24")]]
    assert config.cluster_cidr == IPv4Network("10.0.0.0/16")


def test_new_pods_in_a_calico_cluster_get_addresses_and_deleting_frees_block_ones() -> None:
    c = load_cluster(CALICO)
    c.delete_pod("shop", "client")
    again = c.add_pod({"metadata": {"name": "client", "namespace": "shop"},
                       "spec": {"nodeName": "worker1", "containers": [{"name": "c"}]},
                       "status": {"podIP": "192.168.33.131"}})
    assert str(again.ip) == "192.168.33.131"
    fresh = c.add_pod({"metadata": {"name": "new", "namespace": "shop"},
                       "spec": {"nodeName": "worker2", "containers": [{"name": "c"}]}})
    assert fresh.ip in c.node("worker2").pod_cidr


@pytest.mark.parametrize("src, dst, port, reached", [
    ("shop/client", "shop/web-7c5d8f9b6-fghij", 8080, "shop/web-7c5d8f9b6-fghij"),  # across
    ("shop/client", "kube-system/coredns-5d78c9869d-4xq8z", 53, "kube-system/coredns-"),
])
def test_a_trace_across_nodes_of_a_calico_dump_is_delivered(
        src: str, dst: str, port: int, reached: str, backend: str,
        capsys: pytest.CaptureFixture) -> None:
    rc = main(["trace", "-f", str(CALICO), "-S", src, "-D", dst, "-p", f"tcp,dport={port}",
               "--minimal", "--backend", backend])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert f"=> DELIVERED to pod {reached}" in out[0]
    assert out[-1].startswith("result: connection established")


def test_a_service_of_a_calico_dump_balances_across_nodes(backend: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    reached = set()
    for seed in range(8):
        assert main(["trace", "-f", str(CALICO), "-S", "shop/client", "-D", "shop/web",
                     "--minimal", "--seed", str(seed), "--backend", backend]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        reached.add(first.rsplit("DELIVERED to pod ", 1)[1])
    assert reached == {"shop/web-7c5d8f9b6-abcde", "shop/web-7c5d8f9b6-fghij"}
