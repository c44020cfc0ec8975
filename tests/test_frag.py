"""IPv4 fragmentation and conntrack's reassembly (issue #15 item 6, L2-2, CT-1): a non-DF
packet longer than its out device's MTU is cut as ``ip_do_fragment`` cuts it; fragments
through a node are reassembled by nf_defrag_ipv4 before conntrack and NAT and refragmented
on output to their original size (``frag_max_size``) or the MTU; queues keyed (user, src,
dst, proto, id) live 30 s; an overlapping fragment kills its queue (RFC 5722), a duplicate
is dropped alone; end hosts reassemble before their stacks answer, and answer in fragments
when the answer is longer than their MTU. Both backends, hop by hop equal."""

from __future__ import annotations

import pytest
from helpers import DATA, scenario
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet import fragment as scapy_fragment
from scapy.layers.l2 import Ether

import kemu
from kemu._backend import IMPLEMENTATIONS
from kemu.dataplane import codes as C
from kemu.dataplane.packet import ip_checksum
from kemu.dataplane.reference.frag import (
    FRAG_DUP,
    FRAG_OVERLAP,
    FragQueue,
    Reassembly,
    fragment,
)

A, B, C_, D = "10.244.0.2", "10.244.0.3", "10.244.1.2", "10.244.2.2"


def frame(pkt) -> bytes:  # noqa: ANN001
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)


def ping(dst: str, size: int, ident: int, src: str = A):  # noqa: ANN201
    """An echo request of ``size`` IP bytes without DF, cut at 1500 as a pod's stack does."""
    pkt = IP(src=src, dst=dst, id=ident, flags=0) / ICMP(id=ident) / (b"p" * (size - 28))
    return scapy_fragment(pkt, fragsize=1480)


def ip_sizes(frames: list[bytes]) -> list[int]:
    return [int.from_bytes(f[16:18], "big") for f in frames]


def offsets(frames: list[bytes]) -> list[tuple[int, bool]]:
    return [((int.from_bytes(f[20:22], "big") & 0x1FFF) * 8,
             bool(int.from_bytes(f[20:22], "big") & 0x2000)) for f in frames]


# ---------------------------------------------------------------- ip_do_fragment, ip_defrag
def test_fragment_geometry_and_headers() -> None:
    """(MTU - IHL) & ~7 payload bytes per fragment, MF on all but the last, id kept, the
    checksum right; a packet that was itself a non-last fragment keeps MF on its last."""
    f = frame(IP(src=A, dst=C_, id=0x4242, flags=0) / UDP(sport=1, dport=2) / (b"u" * 2972))
    pieces = fragment(f, 1500)
    assert ip_sizes(pieces) == [1500, 1500, 40]
    assert offsets(pieces) == [(0, True), (1480, True), (2960, False)]
    assert all(Ether(p)[IP].id == 0x4242 for p in pieces)
    assert all(ip_checksum(p, 14, 20) == 0 for p in pieces)  # the header sums to 0xFFFF
    assert ip_sizes(fragment(f, 1000)) == [996, 996, 996, 72]  # (1000 - 20) & ~7 = 976
    middle = pieces[1]  # a non-last fragment cut again: its last piece keeps MF
    assert offsets(fragment(middle, 1000)) == [(1480, True), (2456, True)]
    assert fragment(f, 3000) == [bytearray(f)]


def test_options_copied_per_copy_flag() -> None:
    """ip_options_fragment: record route (7, copy flag clear) becomes NOOPs after the first
    fragment; loose source route (0x83, copy flag set) stays; the header keeps its length."""
    rr = bytes([7, 7, 4, 0, 0, 0, 0])
    lsrr = bytes([0x83, 7, 4, 10, 0, 0, 9])
    opts = rr + lsrr + b"\x00\x00"  # 16 bytes: IHL 9
    pkt = IP(src=A, dst=C_, id=5, flags=0, options=[]) / (b"o" * 2000)
    raw = bytearray(bytes(pkt))
    hdr = bytearray(raw[:20]) + opts
    hdr[0] = 0x49
    hdr[2:4] = (36 + 2000).to_bytes(2, "big")
    hdr[10:12] = b"\0\0"
    f = bytearray(frame(b"")[:14]) + hdr + raw[20:]
    f[12:14] = b"\x08\x00"
    pieces = fragment(f, 1000)
    assert all(len(p) >= 50 and p[14] == 0x49 for p in pieces)
    assert bytes(pieces[0][34:50]) == opts
    assert bytes(pieces[1][34:50]) == b"\x01" * 7 + lsrr + b"\x00\x00"
    assert bytes(pieces[2][34:50]) == bytes(pieces[1][34:50])


def test_only_ipv4_fragments_are_fragments() -> None:
    """An ARP request's opcode sits where IPv4 keeps its fragment offset: not a fragment."""
    from scapy.layers.l2 import ARP

    from kemu.dataplane.reference.frag import is_fragment

    assert not is_fragment(bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=B, psrc=A)))
    frags = scapy_fragment(IP(src=A, dst=B, flags=0) / (b"a" * 2000), fragsize=1000)
    assert all(is_fragment(frame(f)) for f in frags)
    assert not is_fragment(frame(IP(src=A, dst=B) / (b"a" * 100)))


def test_pods_still_answer_arp(backend: str) -> None:
    from scapy.layers.l2 import ARP

    emu = scenario(backend, respond=True)
    trace = emu.send(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=B, psrc=A), src="a")
    assert any(Ether(f)[ARP].op == 2 for f in trace.frames_at("default/a/eth0", "in"))


def test_reassembly_out_of_order_duplicate_overlap() -> None:
    whole = frame(IP(src=A, dst=C_, id=9, flags=0) / UDP(sport=1, dport=2) / (b"r" * 3992))
    fr = fragment(whole, 1000)
    q = FragQueue(expires=10)
    assert [q.add(fr[2]), q.add(fr[0]), q.add(fr[0]), q.add(fr[4]), q.add(fr[1])] == [
        0, 0, FRAG_DUP, 0, 0]
    assert q.add(fr[3]) == 1
    assert q.packet(whole) == bytearray(whole)
    assert q.frag_max_size == 996
    # a fragment overlapping what the queue holds, not inside one run: the queue dies
    q = FragQueue(expires=10)
    bad = bytearray(fr[1])
    bad[20:22] = ((int.from_bytes(bad[20:22], "big") & 0xE000) | (968 // 8)).to_bytes(2, "big")
    assert q.add(fr[0]) == 0
    assert q.add(bad) == FRAG_OVERLAP
    r = Reassembly()
    assert r.add(fr[0], 0)[0] == 0
    assert r.add(bad, 1)[0] == FRAG_OVERLAP and not r.queues  # killed
    assert r.add(fr[1], 2)[0] == 0 and len(r.queues) == 1  # a new queue
    r.expire(2 + C.FRAG_TIMEOUT_NS)  # ipfrag_time: 30 s after its first fragment
    assert not r.queues


# ---------------------------------------------------------------- through the datapath
def send(emu, frags, src: str = "a"):  # noqa: ANN001, ANN201
    return emu.send_many(frags, src=src)


def test_fragments_through_nodes_are_reassembled_and_refragmented(backend: str) -> None:
    """a -> c (node1 -> node2): node1's bridge PREROUTING holds the first fragments and
    reassembles on the last (no DROP_FRAGMENT any more), routes and refragments at eth0's
    MTU; node2 reassembles, refragments to the original sizes into cbr0; c reassembles and
    answers 3028 bytes in fragments, which come back the same way."""
    emu = scenario(backend, respond=True)
    trace = send(emu, ping(C_, 3028, 0x501))
    at_c = trace.frames_at("default/c/eth0", "in")
    assert ip_sizes(at_c) == [1500, 1500, 68]
    assert ip_sizes(trace.frames_at("node1/eth0", "out"))[:3] == [1500, 1500, 68]
    reasons = [r for p in trace.packets for k, r, _i, _a in p.outcomes if k == C.OUT_DROPPED]
    assert C.DROP_FRAGMENT not in reasons and C.DROP_FRAG_QUEUED in reasons
    assert "conntrack defrag: 3 fragments reassembled, 3028 bytes" in trace.detailed()
    replies = [Ether(f) for f in trace.frames_at("default/a/eth0", "in")]
    assert [len(bytes(r[IP])) for r in replies] == [1500, 1500, 68]
    assert replies[0][IP].src == C_ and replies[0][ICMP].type == 0
    assert not replies[0][IP].flags.DF  # longer than the MTU: sent without DF, in pieces
    assert emu.engine.dp.state()["frags"] == []  # every queue completed


def test_bridged_fragments_refragmented_to_original_size(backend: str) -> None:
    """a -> b on node1's bridge: br_netfilter's PREROUTING reassembles (conntrack), the
    bridge's output refragments to the largest original fragment (br_nf_dev_queue_xmit)."""
    emu = scenario(backend, respond=False)
    frags = scapy_fragment(IP(src=A, dst=B, id=0x502, flags=0) / UDP(sport=7, dport=9)
                           / (b"b" * 2500), fragsize=1200)
    trace = send(emu, frags)
    assert ip_sizes(trace.frames_at("default/b/eth0", "in")) == [1220, 1220, 128]


def test_mtu_smaller_than_fragments_cuts_again(backend: str) -> None:
    """node1's eth0 at 1000: the reassembled packet leaves in fragments of 996 bytes."""
    import dataclasses

    emu = scenario(backend, respond=False)
    t = emu.tables
    mtu = t.if_mtu.copy()
    mtu[t.iface("node1/eth0")] = 1000
    emu.engine.tables = dataclasses.replace(t, if_mtu=mtu)
    emu.engine.dp.load(emu.engine.tables)
    trace = send(emu, ping(D, 3028, 0x503))
    assert ip_sizes(trace.frames_at("node1/eth0", "out")) == [996, 996, 996, 100]
    # node3 reassembles and refragments to the largest fragment it saw (996)
    assert ip_sizes(trace.frames_at("default/d/eth0", "in")) == [996, 996, 996, 100]


def test_node_sends_fragments_and_overlap_kills_queue(backend: str) -> None:
    emu = scenario(backend, respond=True)
    # the node's own non-DF 4028-byte ping leaves eth0 in fragments and is answered
    trace = emu.send(IP(dst=C_, flags=0) / ICMP(id=0x504) / (b"n" * 4000), src="node1")
    assert ip_sizes(trace.frames_at("node1/eth0", "out"))[:3] == [1500, 1500, 1068]
    assert trace.verdict().reachable
    fr = ping(D, 4028, 0x505)
    bad = fr[1].copy()
    bad.frag -= 1
    del bad.chksum
    t2 = send(emu, [fr[0], bad])
    assert t2.drop_reasons(1) == ["overlapping fragment: reassembly queue dropped"]
    assert emu.engine.dp.state()["frags"] == []
    t3 = send(emu, [fr[1], fr[2]])  # the first fragment died with the queue: held, 30 s
    assert len(emu.engine.dp.state()["frags"]) == 1
    assert not t3.frames_at("node1/eth0")
    emu.advance(31)
    emu.engine.dp.cleanup(emu.engine.clock_ns)
    assert emu.engine.dp.state()["frags"] == []


def test_fragments_through_vxlan(backend: str, tmp_path) -> None:  # noqa: ANN001
    """VXLAN: pods' MTU is 1450; a -> c fragments reassembled on node1, refragmented for
    flannel.1 (1450), each fragment encapsulated (1500 on eth0), node2 reassembles the
    inner packet again."""
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    (tmp_path / "c.yaml").write_text(text.replace("  nodes: 3\n", "  nodes: 3\n  mode: vxlan\n",
                                                  1))
    emu = kemu.load(tmp_path / "c.yaml", backend=backend, respond=True)
    pkt = IP(src=A, dst=C_, id=0x506, flags=0) / ICMP(id=0x506) / (b"v" * 2972)
    trace = send(emu, scapy_fragment(pkt, fragsize=1424))
    outer = trace.frames_at("node1/eth0", "out")
    assert ip_sizes(outer)[:3] == [1494, 1494, 202]
    assert ip_sizes(trace.frames_at("default/c/eth0", "in")) == [1444, 1444, 152]
    assert trace.verdict().reachable


def test_both_backends_alike() -> None:
    if len(IMPLEMENTATIONS) < 2:
        pytest.skip("one backend built")
    runs = []
    for backend in sorted(IMPLEMENTATIONS):
        emu = scenario(backend, respond=True)
        got = []
        fr = ping(D, 5028, 0x507)
        for frames in ([fr[3], fr[0], fr[0], fr[2], fr[1]], ping(C_, 3028, 0x508),
                       scapy_fragment(IP(src=A, dst=B, id=0x509, flags=0) / UDP(sport=7)
                                      / (b"e" * 4000), fragsize=800)):
            trace = send(emu, frames)
            got.append([(p.origin, p.hops, p.outcomes) for p in trace.packets])
            got.append(trace.detailed())
        got.append(emu.engine.dp.state())
        runs.append(got)
    assert runs[0] == runs[1]
