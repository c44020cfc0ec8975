"""Allocation: MACs, pools, node addressing, placement, ClusterIPs, NodePorts; determinism,
order independence, pins honoured exactly (the kubectl dump), every conflict reported."""

from __future__ import annotations

import copy
import json
import random
import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from kemu.control import ipam, load_cluster
from kemu.control.model import ClusterConfig, Container, ContainerPort, Node
from kemu.errors import ManifestError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cluster"
DUMP = ROOT / "examples" / "dump"
DOC = {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "t"}}


def problems(*docs: Any) -> list[str]:
    with pytest.raises(ManifestError) as err:
        load_cluster(*docs)
    return [str(p) for p in err.value.problems]


def pod(name: str, ns: str = "default", spec: dict[str, Any] | None = None,
        status: dict[str, Any] | None = None) -> dict[str, Any]:
    d = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
         "spec": {"containers": [{"name": "c"}], **(spec or {})}}
    if status:
        d["status"] = status
    return d


def svc(name: str, spec: dict[str, Any] | None = None, ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 80}], **(spec or {})}}


# --- building blocks ---------------------------------------------------------------------------

def test_mac_addresses_are_local_unicast_and_stable() -> None:
    mac = ipam.mac_address("node/node1/eth0")
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", mac)
    assert mac == ipam.mac_address("node/node1/eth0") != ipam.mac_address("node/node1/cbr0")
    assert ipam.mac_error(mac) is None
    assert ipam.mac_error("03:00:00:00:00:01") == "'03:00:00:00:00:01' is a multicast MAC address"
    assert ipam.mac_error("00:00:00:00:00:00") == "'00:00:00:00:00:00' is the zero MAC address"
    assert ipam.mac_error("02:00:00") == "'02:00:00' is not a MAC address (aa:bb:cc:dd:ee:ff)"


def test_example_macs_follow_the_documented_names() -> None:
    c = load_cluster(EXAMPLE)
    n1 = c.node("node1")
    assert (n1.mac, n1.bridge_mac, n1.vtep_mac) == (
        ipam.mac_address("node/node1/eth0"), ipam.mac_address("node/node1/cbr0"),
        ipam.mac_address("node/node1/flannel.1"))
    client = c.pod("default", "client")
    assert client.mac == ipam.mac_address("pod/default/client/eth0")
    assert c.gateway_mac == ipam.mac_address("gateway")
    assert [h.mac for h in c.config.external_hosts] == [ipam.mac_address("ext/client/eth0"),
                                                        ipam.mac_address("ext/db/eth0")]


def test_pod_pool_skips_network_gateway_and_broadcast_r3() -> None:
    node = Node("n", IPv4Address("172.18.0.2"), IPv4Network("10.244.0.0/30"))
    pool = ipam.pod_pool(node)
    assert pool.allocate("a") == IPv4Address("10.244.0.2")
    assert pool.allocate("b") is None
    assert pool.claim(IPv4Address("10.244.0.0"), "x") == ("10.244.0.0 is the network address "
                                                          "of 10.244.0.0/30")
    assert pool.claim(IPv4Address("10.244.0.1"), "x") == ("10.244.0.1 is the gateway (bridge) "
                                                          "address of n")
    assert pool.claim(IPv4Address("10.244.0.3"), "x") == ("10.244.0.3 is the broadcast address "
                                                          "of 10.244.0.0/30")
    assert pool.claim(IPv4Address("10.244.0.2"), "x") == "10.244.0.2 is already used by a"
    pool.release(IPv4Address("10.244.0.2"))
    assert pool.allocate("c") == IPv4Address("10.244.0.2")


def test_pool_hands_out_the_lowest_free_address_after_release() -> None:
    pool = ipam.AddressPool(IPv4Network("10.0.0.0/24"), first=2)
    got = [pool.allocate(str(i)) for i in range(3)]
    assert got == [IPv4Address(f"10.0.0.{i}") for i in (2, 3, 4)]
    pool.release(IPv4Address("10.0.0.3"))
    pool.release(IPv4Address("10.0.0.4"), owner="someone else")  # not theirs: kept
    assert pool.allocate("x") == IPv4Address("10.0.0.3")
    assert pool.allocate("y") == IPv4Address("10.0.0.5")


def test_subnets_skip_pins() -> None:
    got = ipam.subnets(IPv4Network("10.244.0.0/16"), 24, ["a", "b", "c"],
                       {"b": IPv4Network("10.244.0.0/24")})
    assert got == {"a": IPv4Network("10.244.1.0/24"), "b": IPv4Network("10.244.0.0/24"),
                   "c": IPv4Network("10.244.2.0/24")}
    assert ipam.subnets(IPv4Network("10.0.0.0/24"), 25, "abc", {})["c"] is None


def test_port_pool() -> None:
    ports = ipam.PortPool(30000, 30002)
    assert ports.claim(30001, "a") is None
    assert ports.claim(30001, "b") == "30001 is already allocated to a"
    assert ports.claim(29999, "b") == "29999 is outside the NodePort range 30000-30002"
    assert [ports.allocate("c"), ports.allocate("c"), ports.allocate("c")] == [30000, 30002,
                                                                              None]


def test_choose_node_spreads_with_ties_by_name() -> None:
    nodes = [Node(n, IPv4Address(0), IPv4Network("10.0.0.0/24"), labels=lab)
             for n, lab in (("b", {"x": "1"}), ("a", {}), ("c", {"x": "1"}))]
    assert ipam.choose_node(nodes, {}, {}).name == "a"
    assert ipam.choose_node(nodes, {"a": 1}, {}).name == "b"
    assert ipam.choose_node(nodes, {"b": 2, "c": 1}, {"x": "1"}).name == "c"
    assert ipam.choose_node(nodes, {}, {"x": "2"}) is None


# --- the fast lookups against brute force ------------------------------------------------------

def _random_nets(rng: random.Random, n: int) -> list[IPv4Network]:
    return [IPv4Network((0x0A000000 + (rng.randrange(64) << 8) >> (32 - p) << (32 - p), p))
            for p in (rng.choice([22, 23, 24, 25, 26]) for _ in range(n))]


@pytest.mark.parametrize("seed", range(20))
def test_subnets_equal_a_pairwise_overlap_scan(seed: int) -> None:
    rng = random.Random(seed)
    pins = dict(zip("abcdefgh", _random_nets(rng, rng.randrange(6)), strict=False))
    names = sorted(set(pins) | set("abcdefghijkl"))
    got = ipam.subnets(IPv4Network("10.0.0.0/18"), 24, names, pins)
    free = (s for s in IPv4Network("10.0.0.0/18").subnets(new_prefix=24)
            if not any(s.overlaps(t) for t in pins.values()))
    assert got == {n: pins[n] if n in pins else next(free, None) for n in names}


@pytest.mark.parametrize("seed", range(20))
def test_pinned_pod_cidr_clashes_name_the_first_overlapping_node(seed: int) -> None:
    rng = random.Random(seed)
    nets = _random_nets(rng, 8)
    drafts = [ipam.NodeDraft(f"n{i}", pod_cidr=c, cidr_field="podCIDR") for i, c in enumerate(nets)]
    config = ClusterConfig(cluster_cidr=IPv4Network("10.0.0.0/16"))
    problems: list[Any] = []
    ipam.build_nodes(config, drafts, problems)
    expected, pinned = [], {}
    for d in drafts:
        clash = next((n for n, c in pinned.items() if c.overlaps(d.pod_cidr)), None)
        if clash is not None:
            expected.append(f"{d.pod_cidr} overlaps Node/{clash}'s pod CIDR {pinned[clash]}")
        else:
            pinned[d.name] = d.pod_cidr
    assert [p.message for p in problems] == expected


@pytest.mark.parametrize("seed", range(20))
def test_network_lookup_finds_the_first_network_holding_an_address(seed: int) -> None:
    rng = random.Random(seed)
    nets = _random_nets(rng, 10)
    lookup = ipam.NetworkLookup(nets)
    for _ in range(200):
        ip = IPv4Address(0x0A000000 + rng.randrange(1 << 14))
        assert lookup.find(ip) == next((i for i, n in enumerate(nets) if ip in n), None)


@pytest.mark.parametrize("seed", range(20))
def test_spreader_chooses_what_choose_node_chooses(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [Node(f"n{i}", IPv4Address(i), IPv4Network("10.0.0.0/24"),
                  labels={"x": rng.choice("12")}) for i in rng.sample(range(9), 6)]
    counts = {n.name: rng.randrange(3) for n in nodes if rng.random() < 0.7}
    slow = dict(counts)
    spreader = ipam.Spreader(nodes, counts)
    for _ in range(30):
        sel = rng.choice([{}, {"x": "1"}, {"x": "2"}, {"x": "3"}])
        want = ipam.choose_node(nodes, slow, sel)
        got = spreader.choose(sel)
        assert got is want
        if got is not None:
            counts[got.name] = counts.get(got.name, 0) + 1
            slow[got.name] = slow.get(got.name, 0) + 1


def test_container_clone_is_a_deep_copy() -> None:
    c = Container("c", [ContainerPort(80, "UDP", "dns", True), ContainerPort(8080)])
    twin = c.clone()
    assert twin == copy.deepcopy(c) and twin is not c
    assert all(a is not b for a, b in zip(twin.ports, c.ports, strict=True))


# --- the example cluster -----------------------------------------------------------------------

def test_nodes_get_ips_from_2_and_a_24_each_in_name_order() -> None:
    c = load_cluster(EXAMPLE)
    assert [(n.name, str(n.internal_ip), str(n.pod_cidr), str(n.gateway_ip)) for n in c.nodes] \
        == [("node1", "172.18.0.2", "10.244.0.0/24", "10.244.0.1"),
            ("node2", "172.18.0.3", "10.244.1.0/24", "10.244.1.1"),
            ("node3", "172.18.0.4", "10.244.2.0/24", "10.244.2.1")]


def test_pods_spread_in_key_order_and_addresses_start_at_2() -> None:
    c = load_cluster(EXAMPLE)
    per_node = {n.name: [p for p in c.pods if p.node_name == n.name] for n in c.nodes}
    assert sorted(len(v) for v in per_node.values()) == [3, 3, 4]
    assert c.pod("default", "client").node_name == "node1"  # first key, first node
    for node in c.nodes:
        ips = sorted(p.ip for p in per_node[node.name])
        assert ips == [node.pod_cidr.network_address + 2 + i for i in range(len(ips))]


def test_cluster_ips_kube_dns_tenth_then_sequential_in_key_order() -> None:
    c = load_cluster(svc("b"), svc("a"), svc("kube-dns", ns="kube-system"),
                     svc("pinned", {"clusterIP": "10.96.0.11"}))
    assert {s.key: str(s.cluster_ip) for s in c.services} == {
        "default/a": "10.96.0.12", "default/b": "10.96.0.13", "default/pinned": "10.96.0.11",
        "kube-system/kube-dns": "10.96.0.10"}


def test_kube_dns_pinned_elsewhere_leaves_the_tenth_address_to_others() -> None:
    c = load_cluster(svc("a"), svc("kube-dns", {"clusterIP": "10.96.0.53"}, ns="kube-system"))
    assert str(c.service("default", "a").cluster_ip) == "10.96.0.10"


def test_node_ports_sequential_skipping_pins() -> None:
    c = load_cluster(svc("a", {"type": "NodePort", "ports": [{"port": 80, "name": "x"},
                                                              {"port": 81, "name": "y"}]}),
                     svc("b", {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}),
                     svc("c", {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False}))
    assert [p.node_port for p in c.service("default", "a").ports] == [30000, 30002]
    assert c.service("default", "b").ports[0].node_port == 30001
    assert c.service("default", "c").ports[0].node_port == 0


def test_same_node_port_for_tcp_and_udp_of_one_service() -> None:
    c = load_cluster(svc("dns", {"type": "NodePort", "ports": [
        {"name": "u", "port": 53, "protocol": "UDP", "nodePort": 30053},
        {"name": "t", "port": 53, "protocol": "TCP", "nodePort": 30053}]}))
    assert [p.node_port for p in c.service("default", "dns").ports] == [30053, 30053]


def test_custom_ranges_from_the_document() -> None:
    c = load_cluster(DOC | {"spec": {"nodes": ["b", "a"], "clusterCIDR": "10.10.0.0/16",
                                     "nodeCIDRMaskSize": 26, "serviceCIDR": "10.20.0.0/24",
                                     "nodeNetwork": "192.168.0.0/24",
                                     "gateway": "192.168.0.254", "nodePortRange": "31000-31001"}},
                     svc("a", {"type": "NodePort"}))
    assert [(n.name, str(n.internal_ip), str(n.pod_cidr)) for n in c.nodes] == [
        ("a", "192.168.0.2", "10.10.0.0/26"), ("b", "192.168.0.3", "10.10.0.64/26")]
    assert str(c.config.gateway_ip) == "192.168.0.254"
    s = c.service("default", "a")
    assert (str(s.cluster_ip), s.ports[0].node_port) == ("10.20.0.10", 31000)


def test_pinned_pod_ip_without_node_goes_to_the_node_owning_it() -> None:
    c = load_cluster(pod("p", status={"podIP": "10.244.2.9"}), pod("q"))
    assert (c.pod("default", "p").node_name, str(c.pod("default", "p").ip)) == ("node3",
                                                                                 "10.244.2.9")
    assert c.pod("default", "q").node_name == "node1"


def test_pins_take_precedence_over_allocation_regardless_of_key_order() -> None:
    c = load_cluster(pod("a", spec={"nodeName": "node1"}),
                     pod("z", spec={"nodeName": "node1"}, status={"podIP": "10.244.0.2"}))
    assert str(c.pod("default", "z").ip) == "10.244.0.2"
    assert str(c.pod("default", "a").ip) == "10.244.0.3"


# --- determinism and order independence ---------------------------------------------------------

def test_loading_twice_gives_identical_dumps() -> None:
    one = json.dumps(load_cluster(EXAMPLE).to_dict(), sort_keys=True)
    two = json.dumps(load_cluster(EXAMPLE).to_dict(), sort_keys=True)
    assert one == two


def test_file_order_does_not_matter() -> None:
    files = sorted(EXAMPLE.glob("*.yaml"))
    forward = load_cluster(*files).to_dict()
    backward = load_cluster(*reversed(files)).to_dict()
    assert forward == backward


def test_document_order_within_a_source_does_not_matter() -> None:
    docs = [pod(f"p{i}") for i in range(6)] + [svc(f"s{i}") for i in range(4)]
    assert load_cluster(docs).to_dict() == load_cluster(list(reversed(docs))).to_dict()


def test_to_dict_is_json_serialisable() -> None:
    data = load_cluster(EXAMPLE).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"config", "gateway", "external_hosts", "namespaces", "nodes", "pods",
                         "services", "endpoint_slices", "network_policies", "ignored"}


# --- the kubectl dump: every pinned address reproduced exactly ------------------------------------

@pytest.fixture(scope="module")
def dump():
    return load_cluster(DUMP)


def test_dump_nodes_keep_their_addresses(dump) -> None:
    assert [(n.name, str(n.internal_ip), str(n.pod_cidr)) for n in dump.nodes] == [
        ("kind-control-plane", "192.168.49.12", "10.88.2.0/24"),
        ("kind-worker", "192.168.49.7", "10.88.0.0/24"),
        ("kind-worker2", "192.168.49.3", "10.88.1.0/24")]
    assert dump.node("kind-worker").labels["topology.kubernetes.io/zone"] == "zone-a"


def test_dump_pods_keep_ips_nodes_readiness_owners(dump) -> None:
    assert [(p.key, str(p.ip), p.node_name, p.ready) for p in dump.pods] == [
        ("kube-system/coredns-7db6d8ff4d-8kqzt", "10.88.2.3", "kind-control-plane", True),
        ("kube-system/coredns-7db6d8ff4d-w2x9d", "10.88.2.4", "kind-control-plane", True),
        ("kube-system/kube-proxy-x7v4m", "192.168.49.7", "kind-worker", True),
        ("web/web-6b9f7c8d5c-2mzsl", "10.88.0.17", "kind-worker", True),
        ("web/web-6b9f7c8d5c-9tq4f", "10.88.1.9", "kind-worker2", False)]
    proxy = dump.pod("kube-system", "kube-proxy-x7v4m")
    assert proxy.host_network and proxy.owner is not None and proxy.owner.kind == "DaemonSet"


def test_dump_services_keep_cluster_ips_node_ports_and_lb_ips(dump) -> None:
    got = {s.key: (str(s.cluster_ip), [p.node_port for p in s.ports]) for s in dump.services}
    assert got == {"default/kubernetes": ("10.100.0.1", [0]),
                   "kube-system/kube-dns": ("10.100.0.10", [0, 0, 0]),
                   "web/web": ("10.100.23.45", [31234]),
                   "web/web-lb": ("10.100.77.7", [30555])}
    lb = dump.service("web", "web-lb")
    assert lb.load_balancer_ips == [IPv4Address("192.168.49.240")]
    assert lb.external_traffic_policy == "Local"


def test_dump_explicit_and_derived_endpoints(dump) -> None:
    k8s = dump.service("default", "kubernetes")
    assert [(str(e.ip), n) for e, n in dump.backends(k8s, k8s.ports[0])] == [
        ("192.168.49.12", 6443)]
    web = dump.service("web", "web")
    assert [(str(e.ip), n, e.ready, e.zone) for e, n in dump.backends(web, web.ports[0])] == [
        ("10.88.0.17", 8080, True, "zone-a"), ("10.88.1.9", 8080, False, "zone-b")]


def test_dump_ignores_what_kemu_does_not_model(dump) -> None:
    src = DUMP / "cluster-dump.yaml"
    assert dump.ignored == [
        f"{src}: web/ConfigMap/kube-root-ca.crt ignored (ConfigMap is not modelled)",
        f"{src}: web/EndpointSlice/web-n8v2c ignored (Service web/web has a selector: kemu "
        "derives its slices)",
        f"{src}: web/Pod/migrate-5k8wq ignored (phase Succeeded: not running)"]


def test_dump_addresses_differ_from_what_kemu_would_allocate(dump) -> None:
    """The dump is a real test of pins: kemu's own choice would differ everywhere."""
    unpinned = load_cluster(DUMP / "cluster.yaml", {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name}} for n in dump.nodes]})
    for mine, real in zip(unpinned.nodes, dump.nodes, strict=True):
        assert (mine.internal_ip, mine.pod_cidr) != (real.internal_ip, real.pod_cidr)


# --- conflicts -----------------------------------------------------------------------------------

CONFLICTS: dict[str, tuple[list[Any], list[str]]] = {
    "two pods one IP": (
        [pod("a", status={"podIP": "10.244.0.9"}), pod("b", status={"podIP": "10.244.0.9"})],
        ["<dict>: default/Pod/b: status.podIP: 10.244.0.9 is already used by default/Pod/a"]),
    "pod IP outside its node's range": (
        [pod("a", spec={"nodeName": "node1"}, status={"podIP": "10.244.1.5"})],
        ["<dict>: default/Pod/a: status.podIP: 10.244.1.5 is outside node1's pod CIDR "
         "10.244.0.0/24"]),
    "pod IP in no node's range": (
        [pod("a", status={"podIP": "10.9.9.9"})],
        ["<dict>: default/Pod/a: status.podIP: 10.9.9.9 is in no node's pod CIDR (node1 "
         "10.244.0.0/24, node2 10.244.1.0/24, node3 10.244.2.0/24)"]),
    "pod IP is the gateway": (
        [pod("a", status={"podIP": "10.244.1.1"})],
        ["<dict>: default/Pod/a: status.podIP: 10.244.1.1 is the gateway (bridge) address of "
         "node2"]),
    "pod IP is the network address": (
        [pod("a", status={"podIP": "10.244.1.0"})],
        ["<dict>: default/Pod/a: status.podIP: 10.244.1.0 is the network address of "
         "10.244.1.0/24"]),
    "hostNetwork pod with another IP": (
        [pod("a", spec={"hostNetwork": True, "nodeName": "node1"},
             status={"podIP": "172.18.0.3"})],
        ["<dict>: default/Pod/a: status.podIP: 172.18.0.3 is not the IP 172.18.0.2 of node "
         "node1 (hostNetwork pod)"]),
    "two pods one MAC": (
        [pod(n) | {"metadata": {"name": n, "annotations": {"kemu.dev/mac": "02:00:00:00:00:01"}}}
         for n in ("a", "b")],
        ["<dict>: default/Pod/b: metadata.annotations[kemu.dev/mac]: MAC 02:00:00:00:00:01 is "
         "already used by another pod"]),
    "node out of pod addresses": (
        [DOC | {"spec": {"nodes": 1, "nodeCIDRMaskSize": 30}}, pod("a"), pod("b")],
        ["<dict>: default/Pod/b: no free pod address left for pod default/b: the pod CIDRs "
         "are full (node1 10.244.0.0/30)"]),
    "cluster IP outside the service CIDR": (
        [svc("a", {"clusterIP": "10.0.0.5"})],
        ["<dict>: default/Service/a: spec.clusterIP: 10.0.0.5 is outside the service CIDR "
         "10.96.0.0/12"]),
    "cluster IP taken twice": (
        [svc("a", {"clusterIP": "10.96.0.20"}), svc("b", {"clusterIPs": ["10.96.0.20"]})],
        ["<dict>: default/Service/b: spec.clusterIPs[0]: 10.96.0.20 is already used by "
         "default/Service/a"]),
    "cluster IP is the network address": (
        [svc("a", {"clusterIP": "10.96.0.0"})],
        ["<dict>: default/Service/a: spec.clusterIP: 10.96.0.0 is the network address of "
         "10.96.0.0/12"]),
    "node port taken twice": (
        [svc("a", {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}),
         svc("b", {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]})],
        ["<dict>: default/Service/b: spec.ports[0].nodePort: 30001 is already allocated to "
         "default/Service/a"]),
    "node port outside the range": (
        [svc("a", {"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]})],
        ["<dict>: default/Service/a: spec.ports[0].nodePort: 8080 is outside the NodePort "
         "range 30000-32767"]),
    "node port twice in one service": (
        [svc("a", {"type": "NodePort", "ports": [{"name": "x", "port": 80, "nodePort": 30001},
                                                 {"name": "y", "port": 81,
                                                  "nodePort": 30001}]})],
        ["<dict>: default/Service/a: spec.ports[1].nodePort: duplicate nodePort 30001/TCP"]),
    "two nodes one IP": (
        [DOC | {"spec": {"nodes": [{"name": "a", "ip": "172.18.0.5"},
                                   {"name": "b", "ip": "172.18.0.5"}]}}],
        ["<dict>: Cluster/t: spec.nodes[1].ip: 172.18.0.5 is already used by Node/a"]),
    "node IP outside the node network": (  # (a kemu document: nothing is inferred)
        [DOC, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"},
          "status": {"addresses": [{"type": "InternalIP", "address": "10.1.1.1"}]}}],
        ["<dict>: Node/a: status.addresses[0].address: 10.1.1.1 is outside the node network "
         "172.18.0.0/24 (set spec.nodeNetwork in the kemu Cluster document)"]),
    "overlapping pod CIDRs": (
        [DOC | {"spec": {"nodes": [{"name": "a", "podCIDR": "10.244.0.0/24"},
                                   {"name": "b", "podCIDR": "10.244.0.0/23"}]}}],
        ["<dict>: Cluster/t: spec.nodes[1].podCIDR: 10.244.0.0/23 overlaps Node/a's pod CIDR "
         "10.244.0.0/24"]),
    "pod CIDR outside the cluster CIDR": (
        [DOC, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"},
          "spec": {"podCIDR": "10.88.0.0/24"}}],
        ["<dict>: Node/a: spec.podCIDR: 10.88.0.0/24 is outside the cluster CIDR 10.244.0.0/16 "
         "(set spec.clusterCIDR in the kemu Cluster document)"]),
    "more nodes than pod CIDRs": (
        [DOC | {"spec": {"nodes": 3, "clusterCIDR": "10.0.0.0/23"}}],
        ["<dict>: Cluster/t: the cluster CIDR 10.0.0.0/23 has no /24 left for node node3"]),
    "external host outside the node network": (
        [DOC | {"spec": {"externalHosts": [{"name": "x", "ip": "8.8.8.8"}]}}],
        ["<dict>: Cluster/t: spec.externalHosts[0].ip: 8.8.8.8 is outside the node network "
         "172.18.0.0/24"]),
    "node and external host one IP": (
        [DOC | {"spec": {"nodes": [{"name": "a", "ip": "172.18.0.9"}],
                         "externalHosts": [{"name": "x", "ip": "172.18.0.9"}]}}],
        ["<dict>: Cluster/t: spec.nodes[0].ip: 172.18.0.9 is already used by external host "
         "'x'"]),
}


@pytest.mark.parametrize("docs, expected", list(CONFLICTS.values()), ids=list(CONFLICTS))
def test_conflict(docs: list[Any], expected: list[str]) -> None:
    assert problems(*docs) == expected


def test_a_node_network_without_gateway() -> None:
    c = load_cluster(DOC | {"spec": {"nodes": 2, "gateway": "none"}})
    assert c.config.gateway_ip is None
    assert [str(n.internal_ip) for n in c.nodes] == ["172.18.0.2", "172.18.0.3"]
    assert c.to_dict()["gateway"] == {"ip": None, "mac": c.gateway_mac}
    assert load_cluster(DOC | {"spec": {"gateway": None}}).config.gateway_ip is None


def test_unpinned_pods_are_addressed_in_key_order_on_each_node() -> None:
    c = load_cluster(DOC | {"spec": {"nodes": 1}}, pod("z", spec={"nodeName": "node1"}),
                     pod("a"))
    assert [(p.name, str(p.ip)) for p in c.pods] == [("a", "10.244.0.2"), ("z", "10.244.0.3")]
