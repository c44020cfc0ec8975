"""Capture I/O: indexing a pcap into frame arrays (``read_capture``, ``iter_capture``),
writing pcapng with every hop of a recorded batch, comments included: as ``kemu replay``
writes them (``HopWriter``, both backends) and through ``PcapngWriter.write_batch``; and the
Hubble flow log of the same batch as ``kemu replay --flows`` writes it (``FlowLog``, both
backends and both formats)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import BATCH, Runner, need, record_rate, timed

from kemu.bench import workloads as W
from kemu.dataplane import codes as C
from kemu.dataplane.describe import event_text
from kemu.frontend.hopwriter import HopWriter
from kemu.io import flowlog, hops
from kemu.io.capture import iter_capture, read_capture
from kemu.io.flowlog import FlowLog
from kemu.io.pcapng import PcapngWriter

CAPTURE_FRAMES = 1_000_000


@pytest.fixture(scope="module")
def capture(tmp_path_factory, mix):
    path = tmp_path_factory.mktemp("capture") / "mix.pcap"
    W.write_pcap(path, W.repeat_workload(mix, CAPTURE_FRAMES))
    return path


def test_read_capture(benchmark, capture):
    benchmark.group = "io: capture reading"
    timed(benchmark, lambda: read_capture(capture), CAPTURE_FRAMES, rounds=3,
          mib=os.path.getsize(capture) / 2**20)


def test_iter_capture(benchmark, capture):
    benchmark.group = "io: capture reading"

    def run():
        return sum(len(c) for c in iter_capture(capture))

    timed(benchmark, run, CAPTURE_FRAMES, rounds=3)


@pytest.mark.parametrize("impl", sorted(hops.implementations()))
def test_hop_writer(benchmark, tmp_path, tables, mix, impl):
    """Every hop of ``BATCH * 16`` cluster-mix frames written as ``kemu replay`` writes them
    (``HopWriter``: comments interned, blocks encoded, a writer thread), per backend."""
    need("cython")
    benchmark.group = "io: pcapng writing (every hop)"
    r = Runner("cython", tables, mix.warm, record=True)
    w = mix.head(BATCH * 16 if impl == "cython" else BATCH)
    res = W.results_for(tables, len(w), True, 64)
    W.drive(r.dp, w.shifted(10**9), res, batch=len(w))
    path = tmp_path / "out.pcapng"

    def write():
        with PcapngWriter(path, background=True) as out:
            for i in range(tables.n_ifaces):
                if int(tables.if_kind[i]) != C.IF_NODE_LOCAL:
                    out.add_interface(tables.if_name[i], tables.if_desc[i])
            HopWriter(out, tables, impl=hops.implementations()[impl]).write(res, w.ts_ns)

    timed(benchmark, write, len(w), rounds=5, impl=impl)
    record_rate(benchmark, len(w), hops=res.n_hops, impl=impl,
                hops_per_s=benchmark.extra_info.get("pps", 0) * res.n_hops / len(w),
                bytes=os.path.getsize(path))


@pytest.mark.parametrize("comments", [False, True])
def test_pcapng_write_batch(benchmark, tmp_path, tables, mix, comments):
    """The same hops through ``PcapngWriter.write_batch`` (numpy; comments made per hop in
    Python), the general-purpose batch API."""
    need("cython")
    benchmark.group = "io: pcapng writing (every hop)"
    r = Runner("cython", tables, mix.warm, record=True)
    w = mix.head(BATCH * 16)
    res = W.results_for(tables, len(w), True, 64)
    W.drive(r.dp, w.shifted(10**9), res, batch=len(w))
    n = res.n_hops
    file_if = np.cumsum(tables.if_kind != C.IF_NODE_LOCAL) - 1
    texts: list[str | None] = [None] * n
    if comments:
        by_hop: dict[int, list[str]] = {}
        for e in range(res.n_events):
            key = (int(res.ev_kind[e]), int(res.ev_a[e]), int(res.ev_b[e]), int(res.ev_c[e]))
            if key[0] not in (C.EV_TTL, C.EV_FIXL2):
                by_hop.setdefault(int(res.ev_hop[e]), []).append(event_text(tables, *key))
        texts = ["; ".join(by_hop[h]) if h in by_hop else None for h in range(n)]
    path = tmp_path / "out.pcapng"

    def write():
        with PcapngWriter(path) as out:
            for i in range(tables.n_ifaces):
                if int(tables.if_kind[i]) != C.IF_NODE_LOCAL:
                    out.add_interface(tables.if_name[i], tables.if_desc[i])
            out.write_batch(file_if[res.hop_iface[:n]], w.ts_ns[res.hop_frame[:n]],
                            res.arena, res.hop_off[:n], res.hop_len[:n], res.hop_dir[:n],
                            texts)

    timed(benchmark, write, len(w), rounds=5)
    record_rate(benchmark, len(w), hops=n,
                hops_per_s=benchmark.extra_info.get("pps", 0) * n / len(w))


@pytest.mark.parametrize("fmt", ["hubble", "kemu"])
@pytest.mark.parametrize("impl", sorted(flowlog.implementations()))
def test_flow_log(benchmark, tmp_path, tables, mix, impl, fmt):
    """The flow log of ``BATCH * 16`` cluster-mix frames (every hop recorded) as ``kemu
    replay --flows`` writes it (``FlowLog``: pieces made once, records laid out per batch,
    one write), per backend; written to a file in the temporary directory."""
    from types import SimpleNamespace

    from kemu.control.cluster import load_cluster
    from kemu.frontend.replay import _endpoint_infos, _service_names

    need("cython")
    benchmark.group = f"io: flow log writing ({fmt})"
    r = Runner("cython", tables, mix.warm, record=True)
    w = mix.head(BATCH * 16 if impl == "cython" else BATCH)
    res = W.results_for(tables, len(w), True, 64)
    W.drive(r.dp, w.shifted(10**9), res, batch=len(w))
    model = load_cluster(W.synthetic_cluster(3, 120, 30))
    infos = _endpoint_infos(SimpleNamespace(model=model))
    path = tmp_path / "flows.jsonl"
    with open(path, "wb") as out:  # (the pieces are made once, as in a replay)
        log = FlowLog(out, tables, infos, _service_names(tables), fmt == "kemu",
                      flowlog.implementations()[impl])
        timed(benchmark, lambda: log.write_batch(res, w.ts_ns), len(w), rounds=5, impl=impl)
        rounds = 6  # (a warm-up round and 5 timed)
        record_rate(benchmark, len(w), impl=impl, records=log.records // rounds,
                    bytes=os.path.getsize(path) // rounds)
