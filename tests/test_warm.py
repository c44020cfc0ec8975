"""A running cluster, not a cold one: by default every bridge has learned the MAC behind each
of its ports (L2-3) and nodes have resolved their neighbours (L2-5) before the first frame,
stamped with that frame's time; ``cold=True`` / ``--cold`` starts on empty FDBs.
``Datapath.fdb_set`` writes an FDB entry directly, the same on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP

import kemu
from kemu.dataplane import codes as C
from kemu.frontend.cli import main
from tests.helpers import scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "data" / "scenario"


def learn_by_broadcast(emu: kemu.frontend.api.EmulatedCluster, time_ns: int) -> None:
    """What tests/kernel's ``_learn`` does: one broadcast frame from every end host."""
    t = emu.tables
    for i, name in enumerate(t.if_name):
        if int(t.if_kind[i]) in (C.IF_POD_ETH, C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH):
            src = int(t.if_mac[i]).to_bytes(6, "big")
            emu.send(b"\xff" * 6 + src + b"\x88\xb5" + b"kemu-learn".ljust(46, b"\0"),
                     src=name, time_ns=time_ns)


def test_warm_fdb_is_what_one_frame_from_everyone_teaches(backend: str) -> None:
    taught = scenario(backend, cold=True)
    learn_by_broadcast(taught, 5_000)
    warm = scenario(backend, cold=True)
    warm.engine.learn_all(5_000)
    fdb = warm.engine.dp.state()["fdb"]
    assert fdb == taught.engine.dp.state()["fdb"]
    assert len(fdb) == sum(int(k) in (C.IF_POD_ETH, C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH)
                           for k in warm.tables.if_kind)


def test_fdb_set_twins_agree_and_check_their_input() -> None:
    from kemu._backend import IMPLEMENTATIONS

    states = []
    for name in sorted(IMPLEMENTATIONS):
        emu = scenario(name, cold=True)
        t, dp = emu.tables, emu.engine.dp
        veth = t.iface("node1/veth-a")
        dp.fdb_set(int(t.if_bridge[veth]), 0x02AABBCCDDEE, veth, 123)
        dp.fdb_set(int(t.if_bridge[veth]), 0x02AABBCCDDEE, veth, 456)  # a refresh
        with pytest.raises(ValueError, match="not a port of bridge"):
            dp.fdb_set(int(t.if_bridge[veth]) + 1, 0x02AABBCCDDEE, veth, 1)
        with pytest.raises(ValueError, match="not a port of bridge"):
            dp.fdb_set(int(t.if_bridge[veth]), 0x02AABBCCDDEE, t.iface("node1/cbr0"), 1)
        with pytest.raises(ValueError, match="unicast"):
            dp.fdb_set(int(t.if_bridge[veth]), 0x01005E000001, veth, 1)
        states.append(dp.state())
        assert states[-1]["fdb"] == [(int(t.if_bridge[veth]), 0x02AABBCCDDEE, veth, 456)]
    assert all(s == states[0] for s in states)


def test_warm_trace_has_no_floods_cold_one_does(backend: str) -> None:
    ping = IP(dst="10.244.0.3") / ICMP()
    warm = scenario(backend).send(ping, src="default/a")
    cold = scenario(backend, cold=True).send(ping, src="default/a")
    assert warm.outcome() == cold.outcome() == "DELIVERED"
    assert "flood" not in warm.detailed()
    assert "bridge node1/cbr0: flood -> veth-b" in cold.detailed()
    # exactly the flood's other copies disappear (back out of veth-a: hairpin, L2-4)
    assert warm.path() == [h for h in cold.path() if h not in (
        ("node1/veth-a", "out"), ("default/a/eth0", "in"))]
    assert warm.delivered_to() == ["pod default/b"]


def test_warm_entries_are_fresh_at_the_first_frame(backend: str) -> None:
    """Stamped with the first frame's time: 1000 s in (past the 300 s ageing), no flood."""
    emu = scenario(backend)
    trace = emu.send(IP(dst="10.244.0.3") / ICMP(), src="default/a", time_ns=1000 * 10**9)
    assert "flood" not in trace.detailed()
    assert {e[3] for e in emu.engine.dp.state()["fdb"]} >= {1000 * 10**9}


def test_warm_again_after_reset_and_cluster_edits(backend: str) -> None:
    emu = scenario(backend)
    emu.send(IP(dst="10.244.0.3") / ICMP(), src="default/a")
    emu.reset()
    assert emu.engine.dp.state()["fdb"] == []
    assert "flood" not in emu.send(IP(dst="10.244.0.3") / ICMP(), src="default/a").detailed()
    pod = emu.model.add_pod({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "late", "namespace": "default"},
                             "spec": {"nodeName": "node1", "containers": [{"name": "c"}]}})
    trace = emu.send(IP(dst=str(pod.ip)) / ICMP(), src="default/a")
    assert trace.outcome() == "DELIVERED" and "flood" not in trace.detailed()


def test_warm_resolves_neighbours_without_static_ones(backend: str) -> None:
    """L2-5 after a while: no ARP before the first cross-node frame (cold: ARP first)."""
    pkt = IP(dst="10.244.1.2") / TCP(sport=1, dport=8080, flags="S")
    warm = scenario(backend, static_neighbours=False, respond=True).send(pkt, src="default/a")
    assert "arp" not in [p.origin for p in warm.packets]
    cold = scenario(backend, static_neighbours=False, respond=True, cold=True)
    assert "arp" in [p.origin for p in cold.send(pkt, src="default/a").packets]
    neigh = scenario(backend, static_neighbours=False)
    neigh.engine.learn_all(0)
    seeded = scenario(backend)
    assert neigh.engine.dp.state()["neigh"] == [
        (n, ip, mac, 0) for n, ip, mac, _hh in seeded.engine.dp.state()["neigh"]]


def test_cli_trace_cold(backend: str, capsys: pytest.CaptureFixture) -> None:
    args = ["trace", "-f", str(SCENARIO), "-S", "default/a", "-D", "default/svc-c",
            "--backend", backend]
    assert main(args) == 0
    assert "flood" not in capsys.readouterr().out
    assert main([*args, "--cold"]) == 0
    assert "flood" in capsys.readouterr().out


def test_replay_warm_by_default(backend: str, tmp_path: Path) -> None:
    cap = ROOT / "examples" / "capture.pcap"
    warm = kemu.load(ROOT / "examples" / "cluster", backend=backend).replay(cap)
    cold = kemu.load(ROOT / "examples" / "cluster", backend=backend, cold=True).replay(cap)
    assert (warm.injected, warm.delivered, warm.dropped) == (
        cold.injected, cold.delivered, cold.dropped)
    hops = {}
    for flag in ([], ["--cold"]):
        out = tmp_path / f"o{len(flag)}.pcapng"
        assert main(["replay", "-f", str(ROOT / "examples" / "cluster"), "-r", str(cap), "-w",
                     str(out), "--backend", backend, "--json", *flag]) == 0
        hops[bool(flag)] = out.stat().st_size
    assert hops[False] < hops[True]  # the cold replay's first frames flood
