"""Fixtures of kemu's benchmark suites (``python -m pytest bench/ --benchmark-only``).

Workloads come from ``kemu.bench.workloads`` and are built once per session, outside any
timed region; every suite puts kemu's fast path, its pure-Python reference and the peers
(Scapy pipeline, pytricia, the Linux kernel) side by side, and stores the rate in
``benchmark.extra_info["pps"]`` (frames, lookups or hops per second; median round).

Environment: ``KEMU_BENCH_SCALE=1`` adds the 5,000-node load/compile benchmark (slow);
``KEMU_BENCH_NO_KERNEL=1`` skips the network-namespace peer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from kemu._backend import IMPLEMENTATIONS
from kemu.bench import peers as P
from kemu.bench import workloads as W
from kemu.compiler.compile import compile_cluster
from kemu.control.cluster import load_cluster
from kemu.dataplane.tables import Tables

BATCH = 1024
MIX_FRAMES = 200_000
SCALE = os.environ.get("KEMU_BENCH_SCALE", "") not in ("", "0")
NO_KERNEL = os.environ.get("KEMU_BENCH_NO_KERNEL", "") not in ("", "0")
# frames per round for the slow implementations: a round takes a fraction of a second
FRAMES = {"cython": MIX_FRAMES, "python": 3_000, "scapy": 300}
DATAPATH_IMPLS = [*sorted(IMPLEMENTATIONS), "scapy"]


def record_rate(benchmark: Any, n: int, unit: str = "frames", **info: Any) -> None:
    """``extra_info["pps"]``: ``n`` per median round."""
    stats = getattr(benchmark, "stats", None)
    if stats:
        benchmark.extra_info["pps"] = n / stats.stats.median
    benchmark.extra_info["unit"] = unit
    benchmark.extra_info["n"] = n
    benchmark.extra_info.update(info)


def timed(benchmark: Any, fn: Callable[[], Any], n: int, *, rounds: int = 5,
          setup: Callable[[], Any] | None = None, unit: str = "frames", **info: Any) -> None:
    """Run ``fn`` ``rounds`` times (``setup`` untimed before each) and record the rate."""
    if setup is None:
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    else:
        def prepared() -> tuple[tuple, dict]:
            setup()
            return (), {}
        benchmark.pedantic(fn, setup=prepared, rounds=rounds, iterations=1)
    record_rate(benchmark, n, unit, **info)


@pytest.fixture(scope="session")
def tables() -> Tables:
    """The three-node example: 3 nodes, 120 pods, 30 Services (2 endpoints each)."""
    return compile_cluster(load_cluster(W.synthetic_cluster(3, 120, 30)))


@pytest.fixture(scope="session")
def mix(tables: Tables) -> W.Workload:
    return W.cluster_mix(tables, 10_000, MIX_FRAMES)


@pytest.fixture(scope="session")
def churn(tables: Tables) -> W.Workload:
    return W.churn(tables, 50_000)


def need(impl: str) -> None:
    if impl == "scapy":
        if not P.scapy_available():
            pytest.skip("Scapy is not installed")
    elif impl not in IMPLEMENTATIONS:
        pytest.skip(f"backend {impl} is not available")


class Runner:
    """One implementation (a kemu backend or the Scapy pipeline) warmed on a workload."""

    def __init__(self, impl: str, t: Tables, warm: W.Workload | None, record: bool = False,
                 flow_cache: bool = True) -> None:
        self.impl, self.t, self.record, self.warm = impl, t, record, warm
        if impl == "scapy":
            self.dp: Any = P.ScapyPipeline(t)
            self.res = None
        elif impl == "cython":
            fast = IMPLEMENTATIONS[impl]
            old = fast._set_flow_cache(flow_cache)  # off: every frame through the stages
            try:
                self.dp = fast.Datapath(t, 0, True)
            finally:
                fast._set_flow_cache(old)
            self.res = W.results_for(t, BATCH, record, 1514)
        else:
            self.dp = IMPLEMENTATIONS[impl].Datapath(t, 0, True)
            self.res = W.results_for(t, BATCH, record, 1514)
        if warm is not None:
            self.run(warm)

    @classmethod
    def warmed(cls, impl: str, t: Tables, w: W.Workload, n: int, record: bool = False,
               flow_cache: bool = True) -> Runner:
        """Warmed with what frames ``0..n`` of ``w`` need (all of it for the fast path)."""
        return cls(impl, t, w.warm if impl == "cython" else w.warm_for(0, n), record,
                   flow_cache)

    def run(self, w: W.Workload) -> int:
        if self.impl == "scapy":
            return self.dp.run(w)
        return W.drive(self.dp, w, self.res, BATCH)

    def reset(self) -> None:
        """Empty conntrack and FDBs, then warm again (untimed, between rounds)."""
        if self.impl == "scapy":
            self.dp = P.ScapyPipeline(self.t)
        else:
            self.dp.reset()
        if self.warm is not None:
            self.run(self.warm)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A table of rates (``extra_info["pps"]``) after pytest-benchmark's tables."""
    session = getattr(terminalreporter.config, "_benchmarksession", None)
    marks = [b for b in getattr(session, "benchmarks", []) if b.extra_info.get("pps")]
    if not marks:
        return
    tr = terminalreporter
    tr.write_sep("-", "rates (median round): extra_info['pps']")
    for b in sorted(marks, key=lambda b: (b.group or "", -b.extra_info["pps"])):
        tr.write_line(f"{b.group or '':<46} {b.name:<44} "
                      f"{b.extra_info['pps']:>16,.0f} {b.extra_info.get('unit', '')}/s")


class Clock:
    """Fresh timestamps per round (the emulated clock must not run backwards)."""

    def __init__(self, w: W.Workload) -> None:
        self.w, self.round = w, 0
        self.current = w

    def next(self) -> None:
        self.round += 1
        self.current = self.w.shifted(self.round * (len(self.w) + 1) * 1000)
