"""The whole datapath on the cluster mix and the churn workload: kemu's fast path (without and
with every hop recorded), its pure-Python reference, the Scapy pipeline and the Linux kernel."""

from __future__ import annotations

import time

import pytest
from conftest import DATAPATH_IMPLS, FRAMES, NO_KERNEL, Clock, Runner, need, record_rate, timed

from kemu.bench import peers as P


@pytest.mark.parametrize("impl", DATAPATH_IMPLS)
def test_cluster_mix(benchmark, impl, tables, mix):
    need(impl)
    benchmark.group = "datapath: cluster mix"
    w = mix.head(FRAMES[impl])
    r = Runner.warmed(impl, tables, mix, len(w))
    clock = Clock(w)
    timed(benchmark, lambda: r.run(clock.current), len(w), setup=clock.next,
          rounds=5 if impl == "cython" else 3, impl=impl)


def test_cluster_mix_stages(benchmark, tables, mix):
    """The fast path with its flow cache off: every frame through every stage."""
    need("cython")
    benchmark.group = "datapath: cluster mix"
    w = mix.head(FRAMES["cython"])
    r = Runner.warmed("cython", tables, mix, len(w), flow_cache=False)
    clock = Clock(w)
    timed(benchmark, lambda: r.run(clock.current), len(w), setup=clock.next, rounds=5,
          impl="cython, flow cache off")


@pytest.mark.parametrize("impl", sorted(set(DATAPATH_IMPLS) - {"scapy"}))
def test_cluster_mix_every_hop(benchmark, impl, tables, mix):
    need(impl)
    benchmark.group = "datapath: cluster mix, every hop recorded"
    w = mix.head(FRAMES[impl])
    r = Runner.warmed(impl, tables, mix, len(w), record=True)
    clock = Clock(w)
    timed(benchmark, lambda: r.run(clock.current), len(w), setup=clock.next,
          rounds=5 if impl == "cython" else 3, impl=impl)


@pytest.mark.parametrize("impl", DATAPATH_IMPLS)
def test_churn(benchmark, impl, tables, churn):
    need(impl)
    benchmark.group = "datapath: churn (new flows, IMIX)"
    w = churn.head(FRAMES[impl] // 2 if impl == "cython" else FRAMES[impl])
    r = Runner.warmed(impl, tables, churn, len(w))
    timed(benchmark, lambda: r.run(w), len(w), setup=r.reset,
          rounds=5 if impl == "cython" else 3, impl=impl)


def test_kernel(benchmark, tables, mix):
    """The Linux kernel forwarding the cluster mix through the same cluster in network
    namespaces, one core (see ``kemu.bench.peers.KernelPeer``)."""
    ok, why = P.kernel_available()
    if NO_KERNEL or not ok:
        pytest.skip("KEMU_BENCH_NO_KERNEL set" if NO_KERNEL else why)
    import os

    benchmark.group = "datapath: cluster mix"
    old = os.sched_getaffinity(0)
    cpu = max(old)
    stats: list[dict] = []
    try:
        os.sched_setaffinity(0, {cpu})
        with P.KernelPeer(tables) as k:
            k.send_all(mix.warm)
            time.sleep(0.1)
            benchmark.pedantic(lambda: stats.append(k.blast(mix, 1.0)), rounds=3, iterations=1)
    finally:
        os.sched_setaffinity(0, old)
    delivered = sorted(s["delivered"] for s in stats)[len(stats) // 2]
    record_rate(benchmark, delivered, impl="kernel",
                delivered_share=sum(s["delivered"] for s in stats) / sum(s["sent"] for s in stats))


@pytest.mark.parametrize("batch", [16, 64, 256, 1024, 4096])
def test_batch_size(benchmark, batch, tables, mix):
    """Frames per ``Datapath.process`` call: the per-call cost is amortised over the batch."""
    need("cython")
    from kemu.bench import workloads as W

    benchmark.group = "datapath: cluster mix by batch size (cython)"
    w = mix.head(FRAMES["cython"] // 2)
    r = Runner.warmed("cython", tables, mix, len(w))
    res = W.results_for(tables, batch, False, 64)
    clock = Clock(w)
    timed(benchmark, lambda: W.drive(r.dp, clock.current, res, batch), len(w),
          setup=clock.next, impl="cython", batch=batch)
