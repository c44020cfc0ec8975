"""The compiler: deterministic tables (same cluster, same bytes), golden text dumps, routes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kemu.compiler.compile import compile_cluster, kernel_veth_name
from kemu.compiler.dump import dump_tables
from kemu.compiler.routes import node_routes
from kemu.control.cluster import load_cluster
from kemu.dataplane import codes as C

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "tables"
CLUSTERS = {"example": ROOT / "examples" / "cluster",
            "scenario": ROOT / "tests" / "data" / "scenario"}


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_tables_golden(name: str) -> None:
    text = dump_tables(compile_cluster(load_cluster(CLUSTERS[name])))
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("KEMU_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_same_cluster_same_bytes(tmp_path: Path) -> None:
    a = compile_cluster(load_cluster(CLUSTERS["example"])).digest()
    assert a == compile_cluster(load_cluster(CLUSTERS["example"])).digest()
    # the same files in another directory, read in another order, give the same tables
    files = sorted(CLUSTERS["example"].glob("*.yaml"), reverse=True)
    for i, f in enumerate(files):
        shutil.copy(f, tmp_path / f"{i:02d}-{f.name}")
    assert compile_cluster(load_cluster(tmp_path)).digest() == a


def test_interfaces_follow_the_design_names() -> None:
    t = compile_cluster(load_cluster(CLUSTERS["scenario"]))
    for name in ("node1/eth0", "node1/cbr0", "node1/veth-a", "default/a/eth0", "default/a/lo",
                 "ext/client/eth0", "gateway/eth0"):
        t.iface(name)
    veth = t.iface("node1/veth-a")
    assert int(t.if_hairpin[veth]) == 1  # L2-4
    assert t.if_kernel_name[veth] == kernel_veth_name("default/a")
    assert len(t.if_kernel_name[veth]) <= 15
    assert "Pod default/a" in t.if_desc[t.iface("default/a/eth0")]


def test_routes_per_node_host_gw_and_vxlan() -> None:
    c = load_cluster(CLUSTERS["scenario"])
    routes = {n: [r.render() for r in rs] for n, rs in node_routes(c).items()}
    assert "10.244.1.0/24 via 172.18.0.3 dev eth0 proto static" in routes["node1"]
    assert "10.244.0.0/24 dev cbr0 proto kernel scope link src 10.244.0.1" in routes["node1"]
    assert routes["node1"][-1] == "default via 172.18.0.1 dev eth0 proto static"
    c.config.mode = "vxlan"
    vx = [r.render() for r in node_routes(c)["node1"]]
    assert "10.244.1.0/24 via 10.244.1.0 dev flannel.1 proto static onlink" in vx  # OV-2


def test_headless_and_externalname_are_not_proxied() -> None:
    t = compile_cluster(load_cluster(CLUSTERS["example"]))
    assert not any(n.startswith("shop/redis") for n in t.sp_name)  # headless (S-13)
    assert all(int(k) != 0 for k in t.fe_kind)
    assert C.FE_NODE_PORT in set(int(k) for k in t.fe_kind)
