"""Node IP stacks: routing, TTL, ICMP errors, neighbours, VXLAN (R-1, R-2, OV-1..OV-4)."""

from __future__ import annotations

import pytest
from helpers import DATA, checksums_valid, scenario
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

import kemu


def test_cross_node_host_gw_decrements_ttl_at_each_node(backend: str) -> None:
    """R-1, OV-4: route via the other node's IP; each node stack decrements the TTL."""
    emu = scenario(backend)
    trace = emu.send(IP(dst="10.244.1.2", ttl=10) / TCP(dport=8080, flags="S"),
                     src="default/a")
    path = [n for n, _d in trace.path(0)]
    want = ["default/a/eth0", "node1/veth-a", "node1/cbr0", "node1/eth0", "node2/eth0",
            "node2/cbr0", "node2/veth-c", "default/c/eth0"]
    # the node network has not learned node2's MAC yet: its flood copies come in between
    it = iter(path)
    assert all(hop in it for hop in want), path
    assert Ether(trace.frames_at("default/c/eth0")[0])[IP].ttl == 8
    assert "route 10.244.1.0/24 via 172.18.0.3 dev eth0" in trace.detailed()


def test_ttl_expiry_sends_time_exceeded_from_the_bridge_address(backend: str) -> None:
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="10.244.1.2", ttl=1) / UDP(sport=7, dport=9) / b"x",
                     src="default/a")
    assert trace.drop_reasons(0) == ["TTL exceeded"]
    err = Ether([p for p in trace.packets if p.origin == "icmp-error"][0].hops[-1][2])
    assert (err[ICMP].type, err[ICMP].code) == (11, 0)
    assert err[IP].src == "10.244.0.1" and err[IP].dst == "10.244.0.2"
    assert err[IP].tos == 0xC0
    assert checksums_valid(bytes(err))


def test_ttl_expiry_at_the_second_node(backend: str) -> None:
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="10.244.1.2", ttl=2) / UDP(sport=7, dport=9) / b"x",
                     src="default/a")
    assert trace.drop_reasons(0) == ["TTL exceeded"]
    err = Ether([p for p in trace.packets if p.origin == "icmp-error"][0].hops[-1][2])
    assert err[IP].src == "172.18.0.3"  # node2's address towards the sender


def test_unknown_destination_goes_to_the_gateway(backend: str) -> None:
    emu = scenario(backend)
    trace = emu.send(IP(dst="8.8.8.8") / UDP(dport=53) / b"q", src="default/a")
    assert trace.outcome(0) == "LEFT"
    assert "route default via 172.18.0.1 dev eth0" in trace.detailed()


def test_no_route_without_a_gateway(backend: str, tmp_path) -> None:
    """Without a default route the node answers ICMP net unreachable."""
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    text = text.replace("  nodes: 3\n", "  nodes: 3\n  gateway: none\n", 1)
    (tmp_path / "c.yaml").write_text(text)
    emu = kemu.load(tmp_path / "c.yaml", backend=backend, respond=True)
    trace = emu.send(IP(dst="8.8.8.8") / UDP(dport=53) / b"q", src="default/a")
    assert trace.drop_reasons(0) == ["no route"]
    err = Ether([p for p in trace.packets if p.origin == "icmp-error"][0].hops[-1][2])
    assert (err[ICMP].type, err[ICMP].code) == (3, 0)


def test_neighbour_resolution_with_arp(backend: str) -> None:
    """Without static neighbours, node1 ARPs for node2 before forwarding, then resumes (a
    cold start: a warm one has resolved its neighbours, tests/test_warm.py)."""
    emu = scenario(backend, static_neighbours=False, respond=True, cold=True)
    trace = emu.send(IP(dst="10.244.1.2") / TCP(sport=1, dport=8080, flags="S"),
                     src="default/a")
    origins = [p.origin for p in trace.packets]
    assert "arp" in origins and "resumed" in origins
    arps = [Ether(p.hops[0][2])[ARP] for p in trace.packets if p.origin == "arp"]
    assert any(a.op == 1 and a.pdst == "172.18.0.3" for a in arps)
    assert "pod default/c" in {d for n in range(len(trace.packets))
                               for d in trace.delivered_to(n)}


@pytest.fixture
def vxlan_emu(backend: str, tmp_path):
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    text = text.replace("  nodes: 3\n", "  nodes: 3\n  mode: vxlan\n", 1)
    (tmp_path / "c.yaml").write_text(text)
    return kemu.load(tmp_path / "c.yaml", backend=backend, respond=False)


def test_vxlan_encapsulation(vxlan_emu) -> None:
    """OV-1..OV-3: flannel.1, UDP 8472, VNI 1, inner packet unchanged but for the TTL."""
    trace = vxlan_emu.send(IP(dst="10.244.1.2", ttl=20) / TCP(sport=3, dport=8080, flags="S"),
                           src="default/a")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    path = [n for n, _d in trace.path(0)]
    assert "node1/flannel.1" in path and "node2/flannel.1" in path
    outer = Ether(trace.frames_at("node1/eth0", "out")[0])
    assert outer[UDP].dport == 8472 and outer[VXLAN].vni == 1
    assert outer[IP].src == "172.18.0.2" and outer[IP].dst == "172.18.0.3"
    inner = outer[VXLAN].payload
    assert inner[IP].src == "10.244.0.2" and inner[IP].dst == "10.244.1.2"
    assert Ether(trace.frames_at("default/c/eth0")[0])[IP].ttl == 18
    assert checksums_valid(bytes(outer))


def test_vxlan_service_across_nodes(vxlan_emu) -> None:
    trace = vxlan_emu.send(IP(dst="10.96.0.22") / TCP(sport=4, dport=80, flags="S"),
                           src="default/a")
    assert trace.delivered_to(0) == ["pod default/c"]


def test_time_exceeded_about_a_dnated_flow_is_un_nated(backend: str) -> None:
    """CT-2 for RELATED ICMP (kernel FINDINGS §9): the outer source becomes the ClusterIP and
    the quoted header shows the Service address, checksums intact."""
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="10.96.0.22", ttl=1) / TCP(sport=47003, dport=80, flags="S"),
                     src="default/a")
    err = Ether([p for p in trace.packets if p.origin == "icmp-error"][0].hops[-1][2])
    assert err[IP].src == "10.96.0.22" and err[IP].dst == "10.244.0.2"
    quoted = err[ICMP].payload
    assert (quoted.src, quoted.dst, quoted.payload.dport, quoted.ttl) == (
        "10.244.0.2", "10.96.0.22", 80, 1)
    assert checksums_valid(bytes(err))
    inner = quoted.copy()
    del inner.chksum
    assert IP(bytes(inner)).chksum == quoted.chksum


def test_reject_quotes_the_decremented_ttl(backend: str) -> None:
    """ip_forward decrements the TTL before the FORWARD hook's REJECT (FINDINGS §8)."""
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="10.96.0.24") / TCP(sport=46000, dport=80, flags="S"),
                     src="default/a")
    err = Ether([p for p in trace.packets if p.origin == "icmp-error"][0].hops[-1][2])
    assert err[ICMP].payload.ttl == 63


def test_nodeport_without_endpoints_answers_from_the_node_address(backend: str,
                                                                 tmp_path) -> None:
    text = (DATA / "scenario" / "cluster.yaml").read_text() + """---
apiVersion: v1
kind: Service
metadata: {name: np-none, namespace: default}
spec:
  type: NodePort
  selector: {app: nothing}
  ports: [{port: 80, nodePort: 30099}]
"""
    (tmp_path / "c.yaml").write_text(text)
    emu = kemu.load(tmp_path / "c.yaml", backend=backend, respond=True)
    trace = emu.send(IP(dst="172.18.0.2") / TCP(sport=45000, dport=30099, flags="S"),
                     src="ext/client")
    assert trace.drop_reasons(0) == ["no endpoints (REJECT)"]
    err = Ether([p for p in trace.packets if p.origin == "icmp-error"][0].hops[-1][2])
    assert err[IP].src == "172.18.0.2" and (err[ICMP].type, err[ICMP].code) == (3, 3)
    assert err[ICMP].payload.ttl == 64


def test_unowned_pod_address_gets_host_unreachable(backend: str) -> None:
    """Nobody owns 10.244.0.99: the node answers ICMP 3/1 quoting TTL 63 (FINDINGS §10)."""
    for static in (True, False):
        emu = scenario(backend, respond=True, static_neighbours=static)
        t = emu.tables
        cbr0 = f"{int(t.if_mac[t.iface('node1/cbr0')]):012x}"
        a = f"{int(t.if_mac[t.iface('default/a/eth0')]):012x}"
        frame = Ether(dst=":".join(cbr0[i:i + 2] for i in range(0, 12, 2)),
                      src=":".join(a[i:i + 2] for i in range(0, 12, 2))) / IP(
            src="10.244.0.2", dst="10.244.0.99") / UDP(sport=5, dport=9) / b"x"
        trace = emu.send(frame, src="default/a", fix_l2=False)
        # without static neighbours node1 first ARPs for a: the error is then "resumed"
        errs = [Ether(p.hops[-1][2]) for p in trace.packets
                if p.origin in ("icmp-error", "resumed") and p.hops
                and p.hops[-1][0] == t.iface("default/a/eth0")]
        assert len(errs) == 1, trace.detailed()
        err = errs[0]
        assert (err[ICMP].type, err[ICMP].code) == (3, 1)
        assert err[IP].src == "10.244.0.1" and err[ICMP].payload.ttl == 63


def test_node_packet_to_localhost_stays_on_the_node(backend: str) -> None:
    """A node's own packet to 127.0.0.0/8 takes the local table's `local 127.0.0.0/8 dev lo`
    (from 127.0.0.1): delivered to the node, never routed to the gateway; the trace says
    kemu does not model the node answering itself."""
    emu = scenario(backend, respond=True)
    for dst in ("127.0.0.1", "127.3.2.1"):
        trace = emu.send(IP(dst=dst) / TCP(dport=10250, flags="S"), src="node1")
        assert trace.outcome(0) == "DELIVERED"
        assert trace.delivered_to(0) == ["node node1"]
        assert not trace.verdict().reachable
        assert "own stack" in trace.verdict().reason
