"""kube-proxy (iptables mode) packet flows through the emulated datapath, on every backend.

Table-driven in the style of kube-proxy's ``packetFlowTest`` (SEMANTICS G-1): source,
destination, port, protocol -> the endpoint that receives the packet | REJECT | DROP | LEFT,
and whether the endpoint sees a masqueraded source. Cluster: tests/data/scenario.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest
from helpers import all_frames, checksums_valid, delivered_frame, scenario
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether


@dataclass(frozen=True)
class Flow:
    name: str
    src: str
    dst: str
    dport: int
    output: str           # "ip:port[,ip:port]" (any of), "REJECT", "DROP", "LEFT"
    masq: bool = False
    proto: str = "tcp"
    seen_src: str = ""    # the source address the endpoint sees, when masq


FLOWS = [
    Flow("pod to ClusterIP, endpoint on another node (S-3, S-4)", "default/a", "10.96.0.22",
         80, "10.244.1.2:8080"),
    Flow("pod to ClusterIP, endpoint on the same bridge (br_netfilter)", "default/a",
         "10.96.0.21", 80, "10.244.0.3:8080"),
    Flow("pod to its own Service: hairpin masquerade to the bridge address (S-5, L2-4)",
         "default/a", "10.96.0.20", 80, "10.244.0.2:8080", masq=True, seen_src="10.244.0.1"),
    Flow("Service without endpoints: REJECT (S-9)", "default/a", "10.96.0.24", 80, "REJECT"),
    Flow("UDP port of a two-port Service, named targetPort (S-13)", "default/a", "10.96.0.21",
         53, "10.244.0.3:53", proto="udp"),
    Flow("two endpoints: one of them (S-4)", "default/a", "10.96.0.23", 80,
         "10.244.1.2:8080,10.244.2.2:9090"),
    Flow("ClusterIP on a port no Service defines is routed like any address (iptables mode)",
         "default/a", "10.96.0.22", 81, "LEFT"),
    Flow("external client to NodePort, endpoint on another node: masquerade to node IP (E-1)",
         "ext/client", "172.18.0.2", 30081, "10.244.1.2:8080", masq=True,
         seen_src="172.18.0.2"),
    Flow("external client to NodePort, endpoint local: masquerade to the bridge (E-1, S-7)",
         "ext/client", "172.18.0.2", 30080, "10.244.0.2:8080", masq=True,
         seen_src="10.244.0.1"),
    Flow("NodePort on every node: node2's IP, endpoint on node1", "ext/client", "172.18.0.3",
         30080, "10.244.0.2:8080", masq=True, seen_src="172.18.0.3"),
    Flow("ClusterIPs are not routed outside the cluster (R-4)", "ext/client", "10.96.0.22", 80,
         "LEFT"),
    Flow("the node itself to a ClusterIP: nat OUTPUT, masquerade (S-1, S-6)", "node1",
         "10.96.0.22", 80, "10.244.1.2:8080", masq=True, seen_src="172.18.0.2"),
    Flow("internalTrafficPolicy Local without local endpoints: DROP (S-9)", "default/a",
         "10.96.0.28", 80, "DROP"),
    Flow("internalTrafficPolicy Local, the client is the local endpoint: hairpin (S-5)",
         "default/c", "10.96.0.28", 80, "10.244.1.2:8080", masq=True, seen_src="10.244.1.1"),
    Flow("externalTrafficPolicy Local, no endpoint on this node: DROP (S-9, E-2)",
         "ext/client", "172.18.0.2", 30082, "DROP"),
    Flow("externalTrafficPolicy Local keeps the client address (E-2)", "ext/client",
         "172.18.0.3", 30082, "10.244.1.2:8080"),
    Flow("pod to pod across nodes: no NAT (M-1, M-5)", "default/a", "10.244.2.2", 9090,
         "10.244.2.2:9090"),
    Flow("pod to an external host: not kube-proxy's, but flannel's ipMasq masquerades it to "
         "the node (M-5, OV-5)", "default/a", "172.18.0.200", 80, "172.18.0.200:80",
         masq=True, seen_src="172.18.0.2"),
]


def _packet(flow: Flow, sport: int = 40000):
    ip = IP(dst=flow.dst)
    if flow.proto == "udp":
        return ip / UDP(sport=sport, dport=flow.dport) / b"q"
    return ip / TCP(sport=sport, dport=flow.dport, flags="S", seq=1)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_packet_flow(backend: str, flow: Flow) -> None:
    emu = scenario(backend)
    trace = emu.send(_packet(flow), src=flow.src)
    outcome = trace.outcome(0)
    if flow.output in ("REJECT", "DROP"):
        assert outcome == "DROPPED", trace.detailed()
        reasons = trace.drop_reasons(0)
        want = "no endpoints (REJECT)" if flow.output == "REJECT" else "no local endpoints (DROP)"
        assert reasons == [want], trace.detailed()
        return
    if flow.output == "LEFT":
        assert outcome == "LEFT", trace.detailed()
        return
    assert outcome == "DELIVERED", trace.detailed()
    got = delivered_frame(trace)
    assert got is not None
    l4 = got[TCP] if TCP in got else got[UDP]
    assert f"{got.dst}:{l4.dport}" in flow.output.split(","), trace.detailed()
    sent = _packet(flow)
    if flow.masq:
        assert got.src == flow.seen_src, trace.detailed()
    else:
        original = ipaddress.IPv4Address(int(emu.tables.if_ip[emu.interface_of(flow.src)]))
        assert got.src == str(original), trace.detailed()
        assert l4.sport == sent.sport
    for frame in all_frames(trace):
        assert checksums_valid(frame), Ether(frame).summary()


def test_reply_is_reverse_translated(backend: str) -> None:
    """CT-2: the endpoint's answer reaches the client from the Service's address."""
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="10.96.0.22") / TCP(sport=40001, dport=80, flags="S"),
                     src="default/a")
    answers = trace.answers()
    assert len(answers) == 1
    syn_ack = Ether(answers[0].hops[-1][2])
    assert syn_ack[IP].src == "10.96.0.22" and syn_ack[TCP].sport == 80
    assert syn_ack[IP].dst == "10.244.0.2" and syn_ack[TCP].flags == "SA"
    assert trace.outcome(1) == "DELIVERED"


def test_nodeport_reply_unmasqueraded(backend: str) -> None:
    """E-1 + CT-2: the external client gets the answer from the node's address and port."""
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="172.18.0.2") / TCP(sport=5555, dport=30081, flags="S"),
                     src="ext/client")
    ans = Ether(trace.answers()[0].hops[-1][2])
    assert (ans[IP].src, ans[TCP].sport, ans[IP].dst, ans[TCP].dport) == (
        "172.18.0.2", 30081, "172.18.0.100", 5555)


def test_reject_sends_port_unreachable_quoting_the_clusterip(backend: str) -> None:
    """S-9: ICMP type 3 code 3 (not a RST), from the node, quoting the original header."""
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="10.96.0.24") / TCP(sport=40002, dport=80, flags="S"),
                     src="default/a")
    errs = [p for p in trace.packets if p.origin == "icmp-error"]
    assert len(errs) == 1
    icmp = Ether(errs[0].hops[-1][2])
    assert icmp[ICMP].type == 3 and icmp[ICMP].code == 3
    assert icmp[IP].src == "10.244.0.1" and icmp[IP].dst == "10.244.0.2"
    quoted = icmp[ICMP].payload
    assert quoted.dst == "10.96.0.24" and quoted.payload.dport == 80


def test_established_flow_reuses_its_backend(backend: str) -> None:
    """CT-1: only the first packet is load-balanced; later packets follow the entry."""
    emu = scenario(backend)
    first = emu.send(IP(dst="10.96.0.23") / TCP(sport=41000, dport=80, flags="S"),
                     src="default/a")
    dst = delivered_frame(first).dst
    for _ in range(5):
        t = emu.send(IP(dst="10.96.0.23") / TCP(sport=41000, dport=80, flags="A"),
                     src="default/a")
        assert delivered_frame(t).dst == dst
    assert "svc default/svc-cd" in emu.dump()


def test_backends_uniform_and_seeded(backend: str) -> None:
    """S-4: new flows spread over both endpoints; the choice is reproducible under a seed."""
    def choices(seed: int) -> list[str]:
        emu = scenario(backend, seed=seed)
        pkts = [IP(dst="10.96.0.23") / TCP(sport=20000 + i, dport=80, flags="S")
                for i in range(400)]
        out = []
        for p in pkts:
            out.append(delivered_frame(emu.send(p, src="default/b")).dst)
        return out

    a, b, c = choices(1), choices(1), choices(2)
    assert a == b
    assert a != c
    share = a.count("10.244.1.2") / len(a)
    assert 0.4 < share < 0.6, share


def test_session_affinity_client_ip(backend: str) -> None:
    """S-8: a client IP sticks to one endpoint for every new connection, across ports."""
    emu = scenario(backend)
    seen = {delivered_frame(emu.send(IP(dst="10.96.0.27") / TCP(sport=30000 + i, dport=80,
                                                                  flags="S"),
                                     src="default/a")).dst for i in range(20)}
    assert len(seen) == 1
    others = {delivered_frame(emu.send(IP(dst="10.96.0.27") / TCP(sport=30000 + i, dport=80,
                                                                    flags="S"),
                                       src="default/b")).dst for i in range(20)}
    assert len(others) == 1


def test_endpoints_follow_readiness(backend: str) -> None:
    """Flipping the only endpoint unready turns the Service into a REJECT (S-9, S-11)."""
    emu = scenario(backend)
    assert emu.send(IP(dst="10.96.0.22") / TCP(dport=80, flags="S"),
                    src="default/a").outcome() == "DELIVERED"
    emu.model.set_pod_ready("default", "c", False)
    t = emu.send(IP(dst="10.96.0.22") / TCP(sport=40100, dport=80, flags="S"),
                 src="default/a")
    assert t.drop_reasons() == ["no endpoints (REJECT)"]


def test_udp_conntrack_flushed_when_endpoint_goes(backend: str) -> None:
    """CT-4: stale UDP entries to a deleted endpoint are flushed at the next sync."""
    emu = scenario(backend)
    emu.send(IP(dst="10.96.0.21") / UDP(sport=5353, dport=53) / b"x", src="default/a")
    assert "UDP 10.244.0.2:5353 > 10.96.0.21:53" in emu.dump()
    emu.model.delete_pod("default", "b")
    t = emu.send(IP(dst="10.96.0.21") / UDP(sport=5353, dport=53) / b"x", src="default/a")
    assert "10.96.0.21:53 reply 10.244.0.3" not in emu.dump()
    assert t.drop_reasons() == ["no endpoints (REJECT)"]


def test_pod_to_nodeport_is_masqueraded(backend: str) -> None:
    """E-1: KUBE-EXT marks every NodePort connection for masquerade, pods' too."""
    emu = scenario(backend)
    same = delivered_frame(emu.send(IP(dst="172.18.0.2") / TCP(sport=40201, dport=30081,
                                                                 flags="S"), src="default/a"))
    assert same.src == "172.18.0.2"
    other = delivered_frame(emu.send(IP(dst="172.18.0.3") / TCP(sport=40202, dport=30081,
                                                                  flags="S"), src="default/a"))
    assert other.src == "10.244.1.1"


def test_nodes_answer_ping_and_refuse_closed_ports(backend: str) -> None:
    emu = scenario(backend, respond=True)
    for dst in ("172.18.0.2", "10.244.0.1", "172.18.0.3"):
        t = emu.send(IP(dst=dst) / ICMP(id=9, seq=1), src="default/a")
        reply = Ether(t.answers()[0].hops[-1][2])
        assert reply[ICMP].type == 0 and reply[IP].src == dst
    t = emu.send(IP(dst="172.18.0.2") / TCP(sport=1234, dport=22, flags="S"), src="ext/client")
    rst = Ether(t.answers()[0].hops[-1][2])
    assert rst[TCP].flags == "RA" and rst[IP].src == "172.18.0.2"
    t = emu.send(IP(dst="172.18.0.2") / UDP(sport=1235, dport=9) / b"x", src="ext/client")
    err = Ether(t.answers()[0].hops[-1][2])
    assert (err[ICMP].type, err[ICMP].code) == (3, 3) and err[IP].src == "172.18.0.2"


def test_affinity_survives_a_table_swap(backend: str) -> None:
    """S-8 records follow their service port by name when the tables are recompiled."""
    emu = scenario(backend)
    first = delivered_frame(emu.send(IP(dst="10.96.0.27") / TCP(sport=31000, dport=80,
                                                                  flags="S"), src="default/a"))
    emu.model.delete_service("default", "svc-a")  # fewer service ports: indices shift
    again = delivered_frame(emu.send(IP(dst="10.96.0.27") / TCP(sport=31001, dport=80,
                                                                  flags="S"), src="default/a"))
    assert again.dst == first.dst
    emu.engine.dp.cleanup(10**15)
    assert "affinity" not in emu.dump()
