"""Pods, veth pairs and the node bridge (M-4, L2-1..L2-5), on every backend."""

from __future__ import annotations

from helpers import checksums_valid, scenario
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

BCAST = "ff:ff:ff:ff:ff:ff"


def test_arp_for_the_gateway_is_answered_by_the_bridge(backend: str) -> None:
    """L2-5: the bridge holds the gateway address and answers for it."""
    emu = scenario(backend)
    t = emu.tables
    trace = emu.send(Ether(dst=BCAST) / ARP(pdst="10.244.0.1", psrc="10.244.0.2"),
                     src="default/a")
    assert trace.delivered_to(0) == ["node node1"]
    reply = [p for p in trace.packets if p.origin == "arp"]
    assert len(reply) == 1
    arp = Ether(reply[0].hops[-1][2])[ARP]
    assert arp.op == 2 and arp.psrc == "10.244.0.1" and arp.pdst == "10.244.0.2"
    assert int(arp.hwsrc.replace(":", ""), 16) == int(t.if_mac[t.iface("node1/cbr0")])
    assert reply[0].hops[-1][0] == t.iface("default/a/eth0")


def test_broadcast_floods_every_port_and_hairpins_back(backend: str) -> None:
    """L2-3 flood to all ports; L2-4 a hairpin port gets the frame back too."""
    emu = scenario(backend)
    trace = emu.send(Ether(dst=BCAST) / ARP(pdst="10.244.0.3", psrc="10.244.0.2"),
                     src="default/a")
    outs = {name for name, d in trace.path(0) if d == "out"}
    assert {"node1/veth-a", "node1/veth-b"} <= outs
    assert "node1/cbr0" in {name for name, d in trace.path(0) if d == "in"}
    assert "pod default/b" in trace.delivered_to(0)


def test_unknown_unicast_floods_then_learning_forwards(backend: str) -> None:
    """L2-3: unknown destination MAC floods; once learned, the frame goes to one port (a
    cold start: a warm one has learned every MAC already, tests/test_warm.py)."""
    emu = scenario(backend, cold=True)
    t = emu.tables
    b_mac = f"{int(t.if_mac[t.iface('default/b/eth0')]):012x}"
    b_mac = ":".join(b_mac[i:i + 2] for i in range(0, 12, 2))
    a_mac = f"{int(t.if_mac[t.iface('default/a/eth0')]):012x}"
    a_mac = ":".join(a_mac[i:i + 2] for i in range(0, 12, 2))
    ping = Ether(src=a_mac, dst=b_mac) / IP(src="10.244.0.2", dst="10.244.0.3") / ICMP()
    first = emu.send(ping, src="default/a", fix_l2=False)
    assert "bridge node1/cbr0: flood -> veth-b" in first.detailed()
    # b talks: the bridge learns b's MAC on veth-b
    emu.send(Ether(src=b_mac, dst=a_mac) / IP(src="10.244.0.3", dst="10.244.0.2") / ICMP(
        type=0), src="default/b", fix_l2=False)
    second = emu.send(ping, src="default/a", fix_l2=False)
    assert "bridge node1/cbr0: fdb -> veth-b" in second.detailed()
    assert "flood" not in second.detailed()
    assert "fdb node1/cbr0" in emu.dump()


def test_fdb_entries_age_out_after_300_seconds(backend: str) -> None:
    """L2-3: BR_DEFAULT_AGEING_TIME on the emulated clock."""
    emu = scenario(backend)
    emu.send(IP(dst="10.244.0.3") / UDP(dport=9) / b"x", src="default/a")
    emu.send(IP(dst="10.244.0.2") / UDP(dport=9) / b"x", src="default/b")
    warm = emu.send(IP(dst="10.244.0.3") / UDP(dport=9) / b"x", src="default/a")
    assert "flood" not in warm.detailed()
    emu.advance(301)
    cold = emu.send(IP(dst="10.244.0.3") / UDP(dport=9) / b"x", src="default/a")
    assert "flood -> veth-b" in cold.detailed()


def test_same_node_pods_talk_directly_without_routing(backend: str) -> None:
    """L2-5: pods on one bridge reach each other at L2: no TTL decrement, no cbr0 hop."""
    emu = scenario(backend)
    trace = emu.send(IP(dst="10.244.0.3", ttl=5) / UDP(dport=9) / b"x", src="default/a")
    got = Ether(trace.frames_at("default/b/eth0", "in")[0])
    assert got[IP].ttl == 5
    assert "node1/cbr0" not in {name for name, _d in trace.path(0)}


def test_pod_local_traffic_stays_on_lo(backend: str) -> None:
    """M-4: a pod reaching its own IP or localhost never leaves the sandbox."""
    emu = scenario(backend)
    for dst in ("10.244.0.2", "127.0.0.1"):
        trace = emu.send(IP(dst=dst) / UDP(dport=8080) / b"x", src="default/a")
        assert {name for name, _d in trace.path(0)} == {"default/a/lo"}
        assert trace.outcome(0) == "DELIVERED"


def test_pod_answers_itself_on_localhost(backend: str) -> None:
    """M-4: a pod's SYN to 127.0.0.1 leaves from 127.0.0.1 (the local table's ``local
    127.0.0.0/8 dev lo src 127.0.0.1``) and its own stack answers over lo: SYN-ACK from a
    port it listens on, RST from one it does not; checksums right."""
    emu = scenario(backend, respond=True)
    for port, flags in ((8080, "SA"), (9, "RA")):
        trace = emu.send(IP(dst="127.0.0.1") / TCP(sport=40000, dport=port, flags="S"),
                         src="default/a")
        assert Ether(trace.packets[0].hops[0][2])[IP].src == "127.0.0.1"
        answers = trace.answers()
        assert len(answers) == 1
        got = Ether(answers[0].hops[-1][2])
        assert (got[IP].src, got[IP].dst, got[TCP].sport, got[TCP].dport) == (
            "127.0.0.1", "127.0.0.1", port, 40000)
        assert str(got[TCP].flags) == flags
        assert checksums_valid(answers[0].hops[-1][2])
        assert {name for name, _d in trace.path(1)} == {"default/a/lo"}


def test_frame_for_another_mac_is_dropped_by_the_pod(backend: str) -> None:
    emu = scenario(backend)
    frame = Ether(dst="02:00:00:00:00:99") / IP(src="10.244.0.2", dst="10.244.0.3") / ICMP()
    trace = emu.send(frame, at="default/b/eth0")
    assert trace.outcome(0) == "DROPPED"


def test_garbage_frames_are_counted_not_crashing(backend: str) -> None:
    emu = scenario(backend)
    for junk in (b"", b"\x01", b"\xff" * 13, b"\x00" * 14, b"\xff" * 20 + b"\x08\x00" + b"\x45",
                 bytes(Ether(type=0x0800)) + b"\x4f" * 30):
        trace = emu.send(junk, src="default/a")
        assert trace.outcome(0) in ("DROPPED", "DELIVERED", "LEFT")
