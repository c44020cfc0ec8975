"""State a tool builder can set, one piece at a time instead of ``reset()``: ``conntrack -F``
on one node (``flush_conntrack``), ``bridge fdb flush`` of one bridge (``flush_fdb``),
``ip neigh del`` (``delete_neighbour``); the datapath methods behind them give the same
``state()`` on both backends."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import IP, TCP

from kemu._backend import IMPLEMENTATIONS
from kemu.errors import TopologyError
from tests.helpers import scenario


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def busy(backend: str, **kw):  # noqa: ANN201
    """Conntrack entries on node1 (a -> svc-c) and node2 (c -> svc-a)."""
    emu = scenario(backend, **kw)
    emu.send(IP(dst="10.96.0.22") / TCP(sport=40000, dport=80, flags="S"), src="a")
    emu.send(IP(dst="10.96.0.20") / TCP(sport=40001, dport=80, flags="S"), src="c")
    return emu


def test_flush_conntrack_one_node(backend: str) -> None:
    emu = busy(backend)
    nodes = {e[0] for e in emu.engine.dp.state()["conntrack"]}
    assert {0, 1} <= nodes
    emu.flush_conntrack("node1")
    left = emu.engine.dp.state()["conntrack"]
    assert left and all(e[0] != 0 for e in left)
    emu.flush_conntrack()
    assert emu.engine.dp.state()["conntrack"] == []
    # a flushed flow starts again: a new SYN is NEW and DNATed again
    trace = emu.send(IP(dst="10.96.0.22") / TCP(sport=40000, dport=80, flags="S"), src="a")
    assert any("default/c" in d for d in trace.delivered_to())
    assert 0 in {e[0] for e in emu.engine.dp.state()["conntrack"]}
    with pytest.raises(TopologyError, match="unknown node"):
        emu.flush_conntrack("node9")


def test_flush_fdb_one_bridge_then_flood(backend: str) -> None:
    emu = busy(backend)
    t = emu.tables
    before = emu.engine.dp.state()["fdb"]
    br = t.br_name.index("node1/cbr0")
    assert any(e[0] == br for e in before)
    emu.flush_fdb("node1/cbr0")
    after = emu.engine.dp.state()["fdb"]
    assert not any(e[0] == br for e in after)
    assert [e for e in before if e[0] != br] == [e for e in after if e[0] != br]
    # a -> b on node1: b's MAC is unknown now, so the bridge floods (b and the bridge port)
    trace = emu.send(IP(dst="10.244.0.3") / TCP(sport=40002, dport=80, flags="S"), src="a")
    assert len(trace.frames_at("node1/veth-b", "out")) >= 1
    assert "flood" in trace.detailed()
    with pytest.raises(TopologyError, match="unknown bridge"):
        emu.flush_fdb("node9/cbr0")


def test_delete_neighbour(backend: str) -> None:
    emu = scenario(backend, static_neighbours=False)
    emu.send(IP(dst="10.244.0.3") / TCP(sport=40000, dport=80, flags="S"), src="a")
    assert emu.engine.dp.neigh_lookup(0, ip("10.244.0.3")) >= 0
    assert emu.delete_neighbour("node1", "10.244.0.3")
    assert emu.engine.dp.neigh_lookup(0, ip("10.244.0.3")) == -1
    assert not emu.delete_neighbour("node1", "10.244.0.3")
    # node1 now ARPs for b again before forwarding c -> b
    trace = emu.send(IP(dst="10.244.0.3") / TCP(sport=40003, dport=80, flags="S"), src="c")
    assert any(p.origin == "arp" for p in trace.packets)
    assert any("default/b" in d for p in range(len(trace.packets))
               for d in trace.delivered_to(p))


def test_twins_agree_on_every_write() -> None:
    states = []
    for name in sorted(IMPLEMENTATIONS):
        emu = busy(name)
        dp, t = emu.engine.dp, emu.tables
        seen = [dp.state()]
        dp.conntrack_flush(1)
        seen.append(dp.state())
        dp.fdb_flush(t.br_name.index("node-network"))
        seen.append(dp.state())
        # shared node-network entries (the cython backend keeps them once) and a pod's
        assert dp.neigh_delete(0, ip("172.18.0.3"))
        assert dp.neigh_delete(0, ip("10.244.0.2"))
        assert not dp.neigh_delete(0, ip("10.244.0.2"))
        seen.append(dp.state())
        assert dp.neigh_lookup(1, ip("172.18.0.2")) >= 0  # other nodes keep theirs
        dp.conntrack_flush()
        seen.append(dp.state())
        states.append(seen)
    assert all(s == states[0] for s in states)
