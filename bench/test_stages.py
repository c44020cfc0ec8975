"""Datapath stages, each isolated by its traffic: bridging (same-node pod -> pod: veth,
bridge FDB, br_netfilter conntrack) and conntrack + DNAT (pod -> ClusterIP with the endpoint
on another node), established flows and new flows. Every implementation side by side."""

from __future__ import annotations

import pytest
from conftest import DATAPATH_IMPLS, FRAMES, Clock, Runner, need, timed

from kemu.bench import workloads as W

_cache: dict[str, W.Workload] = {}


def workload(name: str, tables) -> W.Workload:
    if name not in _cache:
        if name == "bridge":
            _cache[name] = W.cluster_mix(tables, 5_000, 100_000, kinds=(W.MIX_SAME_NODE,))
        elif name == "dnat":
            _cache[name] = W.cluster_mix(tables, 10_000, 100_000, kinds=(W.MIX_SERVICE,))
        else:
            _cache[name] = W.churn(tables, 50_000, data_share=0.0, kinds=(W.MIX_SERVICE,))
    return _cache[name]


@pytest.mark.parametrize("impl", DATAPATH_IMPLS)
def test_bridge(benchmark, impl, tables):
    need(impl)
    benchmark.group = "stage: bridge (same-node pod -> pod)"
    full = workload("bridge", tables)
    w = full.head(min(len(full), FRAMES[impl]))
    r = Runner.warmed(impl, tables, full, len(w))
    clock = Clock(w)
    timed(benchmark, lambda: r.run(clock.current), len(w), setup=clock.next,
          rounds=5 if impl == "cython" else 3, impl=impl)


@pytest.mark.parametrize("impl", DATAPATH_IMPLS)
def test_conntrack_dnat_established(benchmark, impl, tables):
    need(impl)
    benchmark.group = "stage: conntrack + DNAT, established flows"
    full = workload("dnat", tables)
    w = full.head(min(len(full), FRAMES[impl]))
    r = Runner.warmed(impl, tables, full, len(w))
    clock = Clock(w)
    timed(benchmark, lambda: r.run(clock.current), len(w), setup=clock.next,
          rounds=5 if impl == "cython" else 3, impl=impl)


@pytest.mark.parametrize("impl", DATAPATH_IMPLS)
def test_conntrack_dnat_new(benchmark, impl, tables):
    need(impl)
    benchmark.group = "stage: conntrack + DNAT, new flows (SYN)"
    full = workload("dnat-new", tables)
    w = full.head(min(len(full), FRAMES[impl]))
    r = Runner.warmed(impl, tables, full, len(w))
    timed(benchmark, lambda: r.run(w), len(w), setup=r.reset,
          rounds=5 if impl == "cython" else 3, impl=impl)
