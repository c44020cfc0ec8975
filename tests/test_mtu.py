"""MTU per device and "fragmentation needed" (L2-2, OV-1): every device has the MTU a Linux
node gives it, and a DF packet longer than its out device's MTU is dropped by the node that
cannot send it, which answers ICMP 3/4 with that MTU (``ip_forward``'s ``ip_exceeds_mtu``).
Every test runs on both backends; the flow cache's replays must equal the stages on frames
of every size."""

from __future__ import annotations

import dataclasses
import os
import random
import struct

import pytest
from helpers import DATA, checksums_valid, scenario
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.l2 import Ether

import kemu
from kemu.dataplane import codes as C
from kemu.frontend.views import interface_items


def load_mode(backend: str, tmp_path, mode: str, mtu: int | None = None, **options):
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    extra = f"  mode: {mode}\n" + (f"  mtu: {mtu}\n" if mtu else "")
    text = text.replace("  nodes: 3\n", "  nodes: 3\n" + extra, 1)
    (tmp_path / "c.yaml").write_text(text)
    options.setdefault("respond", False)
    return kemu.load(tmp_path / "c.yaml", backend=backend, **options)


def mtus(emu) -> dict[str, int]:
    return {it["name"]: it["mtu"] for it in interface_items(emu.model, emu.tables)}


@pytest.mark.parametrize(("mode", "mtu", "pod_mtu"), [
    ("vxlan", None, 1450), ("host-gw", None, 1500), ("vxlan", 9000, 8950),
    ("host-gw", 9000, 9000)])
def test_every_device_has_its_mtu(backend: str, tmp_path, mode: str, mtu: int | None,
                                  pod_mtu: int) -> None:
    """L2-2: uplinks the Cluster's MTU; VXLAN: flannel.1 minus 50 and, through
    FLANNEL_MTU and the CNI bridge plugin, cbr0, veths and pods' eth0 as well."""
    emu = load_mode(backend, tmp_path, mode, mtu)
    m = mtus(emu)
    up = mtu or 1500
    assert m["node1/eth0"] == m["gateway/eth0"] == m["ext/client/eth0"] == up
    assert m["node1/cbr0"] == m["node1/veth-a"] == m["default/a/eth0"] == pod_mtu
    assert m["default/a/lo"] == 65536
    if mode == "vxlan":
        assert m["node1/flannel.1"] == up - 50
    else:
        assert "node1/flannel.1" not in m
    assert [int(x) for x in emu.tables.if_mtu] == [
        65536 if int(k) == C.IF_NODE_LOCAL else m[n]
        for n, k in zip(emu.tables.if_name, emu.tables.if_kind, strict=True)]


def frag_needed(trace) -> Ether:
    errs = [p for p in trace.packets if p.origin == "icmp-error"]
    assert errs, trace.detailed()
    return Ether(errs[0].hops[-1][2])


def big(dst: str, size: int, df: bool = True, ttl: int = 64, dport: int = 8080):
    pkt = IP(dst=dst, ttl=ttl, flags="DF" if df else 0) / TCP(sport=5000, dport=dport,
                                                             flags="A")
    return pkt / (b"x" * (size - 40))


def test_vxlan_1500_df_gets_frag_needed_1450(backend: str, tmp_path) -> None:
    """The issue's case: it used to leave node1/eth0 as 1550 bytes and be delivered. The
    node whose flannel.1 (1450) cannot take it drops it and says so to the sender."""
    emu = load_mode(backend, tmp_path, "vxlan", respond=True)
    trace = emu.send(big("10.244.1.2", 1500), src="default/a")
    assert trace.drop_reasons(0) == ["fragmentation needed (DF, longer than the MTU)"]
    assert trace.frames_at("node1/eth0", "out") == []
    err = frag_needed(trace)
    assert (err[ICMP].type, err[ICMP].code, err[ICMP].nexthopmtu) == (3, 4, 1450)
    assert err[IP].src == "10.244.0.1" and err[IP].dst == "10.244.0.2"  # node1, to the sender
    quoted = err[IPerror]
    assert (quoted.src, quoted.dst, quoted.len, quoted.ttl) == (
        "10.244.0.2", "10.244.1.2", 1500, 64)  # ip_forward: before the TTL decrement
    assert err[IP].len == 576  # icmp_send quotes 576 - 28 bytes of it
    assert checksums_valid(bytes(err))
    assert trace.delivered_to(1) == ["pod default/a"]


def test_vxlan_1450_df_fits_and_leaves_eth0_as_1500(backend: str, tmp_path) -> None:
    emu = load_mode(backend, tmp_path, "vxlan")
    trace = emu.send(big("10.244.1.2", 1450), src="default/a")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    outer = trace.frames_at("node1/eth0", "out")[0]
    assert len(outer) == 14 + 1500 and Ether(outer)[IP].len == 1500


def test_host_gw_1500_df_passes(backend: str, tmp_path) -> None:
    emu = load_mode(backend, tmp_path, "host-gw")
    trace = emu.send(big("10.244.1.2", 1500), src="default/a")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    assert Ether(trace.frames_at("default/c/eth0")[0])[IP].len == 1500


def test_host_gw_1600_df_gets_frag_needed_1500(backend: str) -> None:
    emu = scenario(backend, respond=True)
    trace = emu.send(big("10.244.1.2", 1600), src="default/a")
    assert trace.drop_reasons(0) == ["fragmentation needed (DF, longer than the MTU)"]
    err = frag_needed(trace)
    assert (err[ICMP].type, err[ICMP].code, err[ICMP].nexthopmtu) == (3, 4, 1500)
    assert err[IP].src == "10.244.0.1" and err[IP].dst == "10.244.0.2"
    assert checksums_valid(bytes(err))


def test_frag_needed_at_the_second_node(backend: str, tmp_path) -> None:
    """A packet entering node2 from the node network (eth0 MTU 9000) towards a pod whose
    bridge has 1500: node2 refuses, from its own address towards the sender."""
    emu = load_mode(backend, tmp_path, "host-gw", 9000, respond=True)
    # one cluster MTU for all: lower the pods' side of node2 by hand through the tables
    t = emu.tables
    mtu = t.if_mtu.copy()
    mtu[t.iface("node2/cbr0")] = 1500
    emu.engine.tables = dataclasses.replace(t, if_mtu=mtu)
    emu.engine.dp.load(emu.engine.tables)
    trace = emu.send(big("10.244.1.2", 4000), src="default/a")
    assert trace.drop_reasons(0) == ["fragmentation needed (DF, longer than the MTU)"]
    err = frag_needed(trace)
    assert err[ICMP].nexthopmtu == 1500 and err[IP].src == "172.18.0.3"
    assert err[IPerror].ttl == 63  # node1 forwarded it already


def test_frag_needed_about_a_dnated_flow_is_un_nated(backend: str) -> None:
    """The error is RELATED to the flow node1 DNATed (CT-2): the sender sees it from the
    ClusterIP, quoting the Service address."""
    emu = scenario(backend, respond=True)
    trace = emu.send(big("10.96.0.22", 1600, dport=80), src="default/a")
    assert trace.drop_reasons(0) == ["fragmentation needed (DF, longer than the MTU)"]
    err = frag_needed(trace)
    assert err[IP].src == "10.96.0.22" and err[IP].dst == "10.244.0.2"
    assert err[ICMP].nexthopmtu == 1500
    assert (err[IPerror].dst, err[IPerror].payload.dport) == ("10.96.0.22", 80)
    assert checksums_valid(bytes(err))


def test_non_df_oversize_is_not_refused(backend: str) -> None:
    """Without DF the node fragments (ip_fragment, ``tests/test_frag.py``): no frag-needed
    drop; 1600 bytes leave node1's eth0 as 1500 + 120, node2 reassembles and refragments to
    the same sizes into cbr0."""
    emu = scenario(backend)
    trace = emu.send(big("10.244.1.2", 1600, df=False), src="default/a")
    assert "fragmentation needed (DF, longer than the MTU)" not in trace.drop_reasons(0)
    sizes = [int.from_bytes(f[16:18], "big") for f in trace.frames_at("node1/eth0", "out")]
    assert sizes == [1500, 120]
    assert [int.from_bytes(f[16:18], "big")
            for f in trace.frames_at("default/c/eth0", "in")] == [1500, 120]


def test_udp_df_on_the_same_node_is_bridged(backend: str, tmp_path) -> None:
    """Pod to pod on one bridge: no IP output, no MTU check (a bridge drops silently in
    Linux for frames over the port's MTU; injected frames are taken as sent)."""
    emu = load_mode(backend, tmp_path, "vxlan")
    trace = emu.send(IP(dst="10.244.0.3", flags="DF") / UDP(sport=1, dport=53) / (b"x" * 1472),
                     src="default/a")
    assert trace.outcome(0) == "DELIVERED"


# ---- the flow cache on frames of every size (compiled only: the reference has no cache)

def _resized(frame: bytes, size: int, df: bool) -> bytes:
    """The frame's IPv4 packet padded (or cut) to ``size`` bytes, DF as asked, header
    checksum redone (the datapath does not check L4 checksums)."""
    ihl = (frame[14] & 0xF) * 4
    body = frame[14 + ihl:14 + struct.unpack("!H", frame[16:18])[0]]
    body = (body + b"\0" * size)[: size - ihl]
    h = bytearray(frame[14:14 + ihl])
    h[2:4] = struct.pack("!H", size)
    h[6:8] = struct.pack("!H", (0x4000 if df else 0) | (struct.unpack("!H", h[6:8])[0]
                                                        & 0x1FFF))
    h[10:12] = b"\0\0"
    s = sum(struct.unpack(f"!{ihl // 2}H", bytes(h)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    h[10:12] = struct.pack("!H", ~s & 0xFFFF)
    return frame[:14] + bytes(h) + body


@pytest.mark.parametrize("mode", ["host-gw", "vxlan"])
def test_flow_cache_equals_the_stages_on_mixed_sizes(mode: str) -> None:
    if os.environ.get("KEMU_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("the flow cache is compiled only")
    from test_flow_cache import Trio, mix_rows, shifted

    t, rows, n_warm = mix_rows(mode=mode)
    trio = Trio(t)
    trio.batch(rows)  # small frames: established flows cache their paths
    hits = trio.cached.flow_cache_hits
    rng = random.Random(5)
    timed = rows[n_warm:]
    for rnd in range(3):
        part = []
        for frame, iface, m, ts in timed:
            if rng.random() < 0.5 and frame[12:14] == b"\x08\x00":
                size = rng.choice([576, 1400, 1450, 1451, 1500, 1501, 1600, 9000])
                frame = _resized(frame, size, df=rng.random() < 0.7)
            part.append((frame, iface, m, ts))
        trio.batch(shifted(part, (rnd + 1) * 10**9))
    assert trio.cached.flow_cache_hits > hits


def test_trace_cli_size_and_df(backend: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    """``kemu trace -p tcp,size=1500,df`` in VXLAN mode: refused on node1, ICMP 3/4 with
    the next-hop MTU back to the sender."""
    from kemu.frontend.cli import main

    load_mode(backend, tmp_path, "vxlan")
    rc = main(["trace", "-f", str(tmp_path / "c.yaml"), "-S", "default/a", "-D", "default/c",
               "-p", "tcp,size=1500,df", "--detailed", "--backend", backend])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "DROP fragmentation needed (DF, longer than the MTU)" in out
    assert "ICMP 10.244.0.1 > 10.244.0.2 type 3 code 4 mtu 1450 ttl 64" in out
    rc = main(["trace", "-f", str(tmp_path / "c.yaml"), "-S", "default/a", "-D", "default/c",
               "-p", "tcp,size=1450,df", "--minimal", "--backend", backend])
    assert rc == 0, capsys.readouterr().out
