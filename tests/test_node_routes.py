"""A node's routes set one by one (issue #15 item 10, R-1, R-2): ``replace_route`` /
``delete_route`` / ``routes`` of the API and ``spec.routes`` of the Cluster document, the
equivalents of ``ip route replace`` / ``ip route del`` / ``ip route``. A replaced route
redirects or discards (blackhole silently, unreachable with ICMP 3/1, prohibit with 3/13)
from the next frame on, on both backends alike; ``kemu show routes`` shows the node's table
with the change; what Linux refuses is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from kemu._backend import IMPLEMENTATIONS
from kemu.errors import TopologyError
from kemu.frontend.cli import main
from tests.helpers import scenario


def ping(emu, dst: str, src: str = "a"):  # noqa: ANN001, ANN201
    return emu.send(IP(dst=dst) / ICMP(id=7, seq=1), src=src)


def icmp_errors(trace) -> list[tuple[int, int]]:  # noqa: ANN001
    """(type, code) of the ICMP errors the trace's nodes sent back."""
    out = []
    for p in trace.packets:
        if p.origin == "icmp-error" and p.hops:
            icmp = Ether(p.hops[0][2])[ICMP]
            out.append((icmp.type, icmp.code))
    return out


def test_routes_lists_the_table_and_the_change(backend: str) -> None:
    emu = scenario(backend)
    before = emu.routes("node1")
    assert "10.244.1.0/24 via 172.18.0.3 dev eth0 proto static" in before
    emu.replace_route("node1", "10.244.1.0/24", via="172.18.0.4")
    after = emu.routes("node/node1")
    assert "10.244.1.0/24 via 172.18.0.4 dev eth0" in after  # proto boot: not printed
    assert len(after) == len(before)  # replaced, not added
    assert emu.routes("node2") == scenario(backend).routes("node2")  # one node only


def test_replaced_route_redirects_through_another_node(backend: str) -> None:
    emu = scenario(backend, respond=True)
    direct = ping(emu, "10.244.1.2")
    assert direct.delivered_to() == ["pod default/c"]
    assert not direct.frames_at("node3/eth0")
    emu.replace_route("node1", "10.244.1.0/24", via="172.18.0.4")  # node3 as the next hop
    trace = ping(emu, "10.244.1.2")
    assert trace.delivered_to() == ["pod default/c"]
    # node3 routes it on to node2 (its own, shared route): in and out of its eth0
    assert trace.frames_at("node3/eth0", "in") and trace.frames_at("node3/eth0", "out")
    assert "route 10.244.1.0/24 via 172.18.0.4 dev eth0" in trace.detailed()
    assert trace.verdict().reachable  # the answer comes back by node2's own route


def test_blackhole_route_drops_silently(backend: str) -> None:
    emu = scenario(backend, respond=True)
    emu.replace_route("node1", "10.244.1.0/24", type="blackhole")
    assert "blackhole 10.244.1.0/24" in emu.routes("node1")
    trace = ping(emu, "10.244.1.2")
    assert trace.outcome() == "DROPPED"
    assert trace.drop_reasons() == ["blackhole route"]
    assert icmp_errors(trace) == []
    assert not trace.frames_at("node1/eth0")
    # the rest of the node's table is untouched: node3's pod still answers
    assert ping(emu, "10.244.2.2").verdict().reachable


@pytest.mark.parametrize(("rtype", "code"), [("unreachable", 1), ("prohibit", 13)])
def test_unreachable_and_prohibit_routes_answer_icmp(backend: str, rtype: str,
                                                     code: int) -> None:
    emu = scenario(backend, respond=True)
    emu.replace_route("node1", "10.244.1.2/32", type=rtype)
    trace = ping(emu, "10.244.1.2")
    assert trace.outcome() == "DROPPED"
    assert trace.drop_reasons() == [f"{rtype} route"]
    assert icmp_errors(trace) == [(3, code)]
    assert not trace.verdict().reachable
    # node2's own pod sends to its neighbour on cbr0: node2's table has no change
    other = emu.send(IP(dst="10.244.1.2") / ICMP(id=8), src="10.244.1.1")
    assert other.outcome() == "DELIVERED"


def test_delete_route_then_no_route(backend: str) -> None:
    emu = scenario(backend, respond=True)
    assert ping(emu, "10.244.2.2").verdict().reachable
    emu.delete_route("node1", "10.244.2.0/24")
    # without its own route, node1 sends node3's pods by its default route, to the gateway
    trace = ping(emu, "10.244.2.2")
    assert "route default via 172.18.0.1 dev eth0" in trace.detailed()
    assert "gateway/eth0" in [n for n, _d in trace.path(0)]  # and the gateway routes it on
    emu.delete_route("node1", "default")
    assert not any(r.startswith("default") for r in emu.routes("node1"))
    trace = ping(emu, "10.244.2.2")
    assert trace.outcome() == "DROPPED"
    assert trace.drop_reasons() == ["no route"]
    with pytest.raises(TopologyError, match="No such process"):
        emu.delete_route("node1", "default")


def test_route_changes_refused_as_linux_refuses_them(backend: str) -> None:
    emu = scenario(backend)
    with pytest.raises(TopologyError, match="unknown node"):
        emu.replace_route("node9", "10.0.0.0/8", via="172.18.0.3")
    with pytest.raises(TopologyError, match="Nexthop has invalid gateway"):
        emu.replace_route("node1", "10.0.0.0/8", via="192.0.2.1")  # no connected route
    with pytest.raises(TopologyError, match="Nexthop has invalid gateway"):
        emu.replace_route("node1", "10.0.0.0/8", via="172.18.0.3", dev="cbr0")
    with pytest.raises(TopologyError, match="Nexthop has invalid gateway"):
        emu.replace_route("node1", "10.0.0.0/8", via="172.18.0.2")  # node1's own address
    with pytest.raises(TopologyError, match="Cannot find device"):
        emu.replace_route("node1", "10.0.0.0/8", dev="flannel.1")  # host-gw: no VTEP
    with pytest.raises(TopologyError, match="no via, dev or onlink"):
        emu.replace_route("node1", "10.0.0.0/8", via="172.18.0.3", type="blackhole")
    with pytest.raises(TopologyError, match="10.0.0.1/8"):
        emu.replace_route("node1", "10.0.0.1/8", dev="eth0")  # host bits set
    # onlink: the next hop taken on the device's word
    emu.replace_route("node1", "10.0.0.0/8", via="192.0.2.1", dev="eth0", onlink=True)
    assert "10.0.0.0/8 via 192.0.2.1 dev eth0 onlink" in emu.routes("node1")
    assert emu.model.config.routes[-1].onlink  # nothing refused was recorded
    assert len(emu.model.config.routes) == 1


def test_both_backends_alike_hop_by_hop() -> None:
    if len(IMPLEMENTATIONS) < 2:
        pytest.skip("one backend built")
    runs = []
    for backend in sorted(IMPLEMENTATIONS):
        emu = scenario(backend, respond=True)
        emu.replace_route("node1", "10.244.1.0/24", via="172.18.0.4")
        emu.replace_route("node1", "10.244.2.2/32", type="unreachable")
        emu.replace_route("node2", "10.244.0.0/24", type="blackhole")
        got = []
        for dst, src in (("10.244.1.2", "a"), ("10.244.2.2", "a"), ("10.244.2.3", "b"),
                         ("10.244.0.2", "c"), ("172.18.0.200", "a")):
            trace = ping(emu, dst, src)
            got.append([(p.origin, p.hops, p.outcomes) for p in trace.packets])
            got.append(trace.detailed())
        got.append(emu.engine.dp.state())
        runs.append(got)
    assert runs[0] == runs[1]


CLUSTER_ROUTES = """\
apiVersion: kemu.dev/v1alpha1
kind: Cluster
metadata: {{name: routes}}
spec:
  nodes: 3
  routes:
{routes}
"""


def test_spec_routes_in_kemu_show_routes(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER_ROUTES.format(routes="""\
    - {node: node1, prefix: 10.244.1.0/24, via: 172.18.0.4}
    - {node: node1, prefix: 10.244.2.0/24, type: blackhole}
    - {node: node2, prefix: default, delete: true}
"""))
    assert main(["show", "routes", "-f", str(tmp_path)]) == 0
    out = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "node1 10.244.1.0/24 via 172.18.0.4 dev eth0" in out
    assert "node1 blackhole 10.244.2.0/24" in out
    assert not any(line.startswith("node2 default") for line in out)
    assert any(line.startswith("node3 default via 172.18.0.1") for line in out)
    assert main(["show", "routes", "-f", str(tmp_path), "-o", "json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert {"node": "node1", "prefix": "10.244.2.0/24", "type": "blackhole"}.items() <= next(
        i for i in items if i["prefix"] == "10.244.2.0/24" and i["node"] == "node1").items()


@pytest.mark.parametrize(("route", "words"), [
    ("- {node: node1, prefix: 10.0.0.0/8, via: 192.0.2.1}",
     "spec.routes[0]: via 192.0.2.1: Nexthop has invalid gateway"),
    ("- {node: node7, prefix: 10.0.0.0/8, dev: eth0}", "spec.routes[0]: unknown node 'node7'"),
    ("- {node: node1, prefix: 10.0.0.0/8, type: blackhole, dev: eth0}",
     "spec.routes[0].type: a blackhole route has no via, dev or onlink"),
    ("- {node: node1, prefix: 10.0.0.0/8, type: broadcast}", "spec.routes[0].type"),
    ("- {node: node1, prefix: 10.9.0.0/16, delete: true}", "No such process"),
    ("- {node: node1, prefix: 10.0.0.0/8, dev: eth0, metric: 5}", "metric"),
])
def test_spec_routes_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         route: str, words: str) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER_ROUTES.format(routes="    " + route))
    assert main(["show", "routes", "-f", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err

