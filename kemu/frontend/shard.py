"""Flow-sharded replay (#21): one capture replayed by N processes, on this machine
(``concurrent.futures.ProcessPoolExecutor``, forkserver/spawn) or on a Dask cluster
(``distributed``), with outputs byte-identical to a single process's.

Owns the plan (one job per shard), the one index pass of the coordinator (``Index``: the
capture read and keyed once, each shard's frames written as segments of byte offsets), the
worker (``run_shard``: its own datapath from the pickled cluster model, its frames' bytes
read from the capture at their offsets, ``shard_frames``, its own part of each output), the
backends that run the jobs, progress from every worker, and the merge of the parts
(``kemu.io.merge``) into the one pcapng and flow log. docs/SHARDING.md has the design: the
shard key (``shard_keys`` of the ``placement`` room, by flow), why state that crosses flows
gives the same answers, and what is counted as ``cross_shard``.

What a worker sends back is its ``ReplaySummary`` and a count; no packet crosses the
scheduler. The index and the parts are written into a temporary directory beside the first
output (visible to every worker when that folder is shared), always removed; each part comes
with a side file of int64 tags, the capture frame number of each block or record, by which
the merge orders them (a single process writes frame after frame, each frame's hops and
records in order).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from kemu.errors import KemuError
from kemu.io.capture import Capture

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.dataplane.results import Results
    from kemu.dataplane.tables import Tables
    from kemu.frontend.replay import ReplayOptions, ReplaySummary

PROGRESS_EVERY = 0.2  # seconds between a worker's progress reports


@dataclass
class ShardJob:
    """What one worker needs: the cluster model (pickled once for all), the capture's path
    (every worker reads its own frames' bytes there), the folder where the coordinator writes
    its index, its shard, the replay's options and where its parts go."""

    model: bytes
    capture: str
    folder: str
    index: int
    count: int
    backend: str | None
    seed: int
    cold: bool
    options: ReplayOptions
    warm_ns: int | None        # the first placed frame's time: a warm start's
    out: str | None            # part pcapng (tags: + ".tags")
    flows: str | None          # part flow log (tags: + ".tags")


@dataclass
class ShardResult:
    index: int
    summary: ReplaySummary
    frames: int                # frames of the shard (placed or not)
    seconds: float


# a shard's index segment: per frame, its bytes' offset in the capture file, time, frame
# number (int64), captured length, length on the wire, link type (int32), column after column
_COLUMNS = (np.int64, np.int64, np.int64, np.int32, np.int32, np.int32)
_ROW = sum(np.dtype(c).itemsize for c in _COLUMNS)
POLL = 0.002  # seconds a worker waits before it looks for its next segment again


# The shards' shares of the flows: the key's low bits pick one of ``BUCKETS`` buckets, dealt
# to the shards by weight (shard 0 is the coordinator's). Equal shares: a lighter share for
# the coordinator (which also runs the index pass) balanced the CPU seconds of a 4M-frame
# replay (weight 0.25: coordinator 1.18 s, worker 1.10 s) but lost in wall time, the worker
# starting later and the coordinator's index pass and segment writing costing per frame
# whatever its own share: 100M frames, 2 workers: weight 0.25 44.3 s, 1.0 27.4 s
# (docs/SHARDING.md).
BUCKETS = 1024
COORDINATOR_WEIGHT = 1.0  # the coordinator's share against a worker's


def shard_buckets(count: int) -> np.ndarray:
    """Bucket (``key % BUCKETS``) -> shard, for ``count`` shards: contiguous runs of buckets,
    shard 0 weighing ``COORDINATOR_WEIGHT``, the others 1 each."""
    if count <= 1:
        return np.zeros(BUCKETS, np.uint32)
    weights = np.array([COORDINATOR_WEIGHT] + [1.0] * (count - 1))
    edges = np.round(np.cumsum(weights) / weights.sum() * BUCKETS)
    return np.searchsorted(edges, np.arange(BUCKETS), side="right").astype(np.uint32)


def _segment(folder: str, index: int, n: int) -> str:
    return os.path.join(folder, f"seg-{index}-{n:06d}")


def _end(folder: str, index: int) -> str:
    return os.path.join(folder, f"end-{index}")


class Index:
    """The coordinator's one pass over the capture (#21): windows read and indexed as replay
    reads them, converted to Ethernet, every frame's shard key computed (``shard_keys`` of
    the ``placement`` room, one call a window), within ``limit`` frames; each shard's frames
    (their byte offsets in the capture and what the index knows of them) written to
    ``folder`` as a segment a window (``seg-K-NNNNNN``, renamed into place when complete),
    then ``end-K`` with the count. Workers read those and only those frames' bytes."""

    WINDOW = 8 << 20  # bytes of the capture read at a time (a segment per shard each)

    def __init__(self, t: Tables, folder: str, count: int, limit: int, backend: str) -> None:
        from kemu.frontend.placement import implementations, shard_tables

        self.impl = implementations()[backend]
        self.tabs = shard_tables(t)
        self.folder, self.count, self.limit = folder, count, limit
        self.buckets = shard_buckets(count)
        self.frags: dict = {}   # datagrams whose first fragment was seen: their keys
        self.cache = np.zeros(3 << 16, np.uint64)  # the compiled twin's memo by 5-tuple
        self.frames = [0] * count
        self.cross_shard = [0] * count
        self.segments = [0] * count
        self.damaged: Counter = Counter()

    def run(self, path: str) -> None:
        """The whole index written (the coordinator replays no shard itself)."""
        for _ in self.chunks(path):
            pass

    def chunks(self, path: str, keep: int | None = None) -> Iterator[Capture]:
        """The index written as the capture is read; the frames of shard ``keep`` (the
        coordinator's own) yielded instead, as Ethernet chunks for ``replay`` (``source``;
        windows rotate through three memories, as replay's own reading does)."""
        from kemu.io.capture import iter_capture
        from kemu.io.linktypes import to_ethernet

        seen = 0
        for chunk in iter_capture(path, chunk_bytes=self.WINDOW,
                                  reuse_buffer=3 if keep is not None else True):
            cap = to_ethernet(chunk)  # (its damage: the chunk's and the conversion's)
            for d in cap.damaged:
                self.damaged[d.reason] += 1
            n = len(cap) if not self.limit else min(len(cap), self.limit - seen)
            seen += n
            if chunk.file_offset is None:
                raise KemuError(f"{path}: the capture's windows are not the file's bytes")
            if n:
                keys, unc = self.impl.shard_keys(cap.buf, cap.offsets[:n], cap.lengths[:n],
                                                 self.tabs, self.frags, self.cache)
                # the frames as the file has them (a conversion to Ethernet drops damaged
                # ones and moves the others into a buffer of its own)
                raw = np.arange(n) if cap is chunk else \
                    np.searchsorted(chunk.frame_numbers, cap.frame_numbers[:n])
                shard = self.buckets[keys % np.uint32(BUCKETS)]
                own = None
                for k in range(self.count):
                    mine = np.flatnonzero(shard == k) if self.count > 1 else np.arange(n)
                    self.frames[k] += len(mine)
                    self.cross_shard[k] += int(np.count_nonzero(unc[mine]))
                    if k == keep:
                        own = mine
                    elif len(mine):
                        at = raw[mine]
                        self._write(k, (chunk.offsets[at] + chunk.file_offset,
                                        chunk.ts_ns[at], chunk.frame_numbers[at],
                                        chunk.lengths[at], chunk.orig_lengths[at],
                                        chunk.linktypes[at]))
                if own is not None and len(own):
                    yield replace(cap, offsets=cap.offsets[own], lengths=cap.lengths[own],
                                  orig_lengths=cap.orig_lengths[own], ts_ns=cap.ts_ns[own],
                                  linktypes=cap.linktypes[own],
                                  frame_numbers=cap.frame_numbers[own], damaged=[])
            if self.limit and seen >= self.limit:
                break
        for k in range(self.count):
            if k != keep:
                tmp = _end(self.folder, k) + ".tmp"
                with open(tmp, "w") as f:
                    f.write(str(self.segments[k]))
                os.replace(tmp, _end(self.folder, k))

    def _write(self, k: int, cols: tuple[np.ndarray, ...]) -> None:
        name = _segment(self.folder, k, self.segments[k])
        with open(name + ".tmp", "wb") as f:
            for col, kind in zip(cols, _COLUMNS, strict=True):
                f.write(memoryview(np.ascontiguousarray(col, kind)))
        os.replace(name + ".tmp", name)
        self.segments[k] += 1


def shard_frames(capture: str, folder: str, index: int) -> Iterator[Capture]:
    """A worker's frames, a segment of its index at a time as the coordinator writes them:
    their bytes read from the capture by offset (a memory map of the part of the file the
    segment spans: no frame of another shard is parsed or keyed here, and a worker's memory
    stays a few windows whatever the capture's size), as Ethernet chunks for ``replay``
    (``source``)."""
    from kemu.io.frames import copy_segments
    from kemu.io.linktypes import ETHERNET, to_ethernet

    with open(capture, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        fmt = "pcapng" if f.read(4) == b"\x0a\x0d\x0d\x0a" else "pcap"
        n = 0
        while True:
            name = _segment(folder, index, n)
            if not os.path.exists(name):
                end = _end(folder, index)
                if os.path.exists(end):
                    with open(end) as e:
                        if n >= int(e.read()):
                            return
                    continue  # (segments are all there before the end is)
                if not os.path.isdir(folder):
                    raise KemuError(f"shard {index}: the coordinator's index {folder} went "
                                    "away")
                time.sleep(POLL)
                continue
            raw = np.fromfile(name, np.uint8)
            os.unlink(name)
            n += 1
            rows = len(raw) // _ROW
            cols, at = [], 0
            for kind in _COLUMNS:
                width = np.dtype(kind).itemsize * rows
                cols.append(raw[at:at + width].view(kind))
                at += width
            off, ts, numbers, lengths, orig, links = cols
            if not off.size:
                continue
            lo, hi = int(off.min()), int((off + lengths).max())
            if lo < 0 or hi > size:
                raise KemuError(f"{capture}: changed while being replayed (shard {index})")
            buf, off = _window(f.fileno(), lo, hi, off)
            if bool(np.all(links == ETHERNET)):
                yield Capture(capture, buf, off, lengths, orig, ts, links, numbers, [], fmt, 0)
                continue
            # other link types: the frames gathered, then converted as the coordinator did
            # (its damage was counted there)
            lens = lengths.astype(np.int64)
            starts = np.cumsum(lens) - lens
            own = np.empty(int(lens.sum()), np.uint8)
            copy_segments(own, starts, buf, off, lens)
            cap = to_ethernet(Capture(capture, own, starts, lengths, orig, ts, links, numbers,
                                      [], fmt, None))
            cap.damaged = []
            yield cap


def _window(fd: int, lo: int, hi: int, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes ``lo..hi`` of the file ``fd`` as a private memory map (nothing reaches the file,
    whatever is done to a frame's bytes), from the page ``lo`` is on, and ``off`` made
    relative to it. The map goes when the last array over it does: a worker maps only the
    windows its replay still holds (a whole-capture map would keep every page it touched
    resident: 7.6 GB for a 100M-frame capture)."""
    start = lo - lo % mmap.ALLOCATIONGRANULARITY
    mm = mmap.mmap(fd, hi - start, offset=start, access=mmap.ACCESS_COPY)
    return np.frombuffer(mm, np.uint8), off - start


class _Tags:
    """The side files of a worker's parts: per pcapng block and per flow record, the
    capture frame number it belongs to (``kemu.io.merge`` orders by them)."""

    def __init__(self, t: Tables, points: str, out: str | None, flows: str | None) -> None:
        from kemu.frontend.hopwriter import HopWriter

        self.keeper = HopWriter(None, t, points) if out else None  # type: ignore[arg-type]
        self.hops = open(out + ".tags", "wb") if out else None  # noqa: SIM115
        self.recs = open(flows + ".tags", "wb") if flows else None  # noqa: SIM115
        self.n_hops = self.n_recs = 0

    def __call__(self, res: Results, numbers: np.ndarray) -> None:
        from kemu.dataplane import codes as C
        from kemu.io.flowlog import _NOISE, TRANSLATIONS

        numbers = np.asarray(numbers, np.int64)
        nh = res.n_hops
        hop_frame = res.hop_frame[:nh]
        if self.hops is not None and self.keeper is not None:
            kept = np.flatnonzero(self.keeper.keep(res))
            self.hops.write(numbers[hop_frame[kept]].tobytes())
            self.n_hops += len(kept)
        if self.recs is not None:
            # a record per translation at a hop, per outcome but the ends of copies
            # (``encode_flows``), in frame order
            ne, no = res.n_events, res.n_outcomes
            ev_hop = res.ev_hop[:ne]
            tr = (TRANSLATIONS[res.ev_kind[:ne].view(np.uint16)].astype(bool)
                  & (ev_hop >= 0) & (ev_hop < nh))
            ends = (res.oc_kind[:no] == C.OUT_DROPPED) & np.isin(res.oc_reason[:no], _NOISE)
            per = (np.bincount(hop_frame[ev_hop[tr]], minlength=len(numbers))
                   + np.bincount(res.oc_frame[:no][~ends], minlength=len(numbers)))
            self.recs.write(np.repeat(numbers, per[:len(numbers)]).tobytes())
            self.n_recs += int(per.sum())

    def close(self) -> None:
        for f in (self.hops, self.recs):
            if f is not None:
                f.close()


_report: Callable[[int, int], None] | None = None  # this worker process's progress sink


def _init_pool(q: Any) -> None:
    """A pool process's initializer: progress goes to the parent through ``q``."""
    global _report

    def report(index: int, done: int) -> None:
        with contextlib.suppress(Exception):
            q.put_nowait((index, done))

    _report = report


def run_shard(job: ShardJob, progress_queue: Any = None,
              reporter: Callable[[int, int], None] | None = None,
              source: Callable[[], Iterator[Capture]] | None = None) -> ShardResult:
    """One shard replayed into its parts (the worker's side; runs in a pool process, on
    a Dask worker, or in the coordinator). ``progress_queue``: a ``distributed.Queue``
    (Dask) to report to; ``reporter``: a function to report to; ``source``: the shard's
    frames (the coordinator's, made as it indexes) instead of the index's segments."""
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.replay import replay

    t0 = time.perf_counter()
    model = pickle.loads(job.model)
    emu = EmulatedCluster(model, backend=job.backend, seed=job.seed, respond=False,
                          icmp_errors=False, cold=job.cold)
    if job.warm_ns is not None and not job.cold:
        # a warm start at the time a single process makes it: the first placed frame's
        emu.engine.clock_ns = job.warm_ns
        emu.engine.settle()
    t = emu.tables
    tags = _Tags(t, job.options.capture_points, job.out, job.flows)
    report = reporter or _report
    if progress_queue is not None:
        def report(index: int, done: int) -> None:
            with contextlib.suppress(Exception):
                progress_queue.put((index, done), timeout=1)
    last = [0.0]

    def progress(done: int) -> None:
        now = time.monotonic()
        if report is not None and now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            report(job.index, done)

    # (no outputs: no hook, so that hops are not recorded for nothing)
    opts = replace(job.options, limit=0, direct=False,
                   source=source or (lambda: shard_frames(job.capture, job.folder, job.index)),
                   on_batch=tags if job.out or job.flows else None)
    try:
        summary = replay(emu, job.capture, job.out, job.flows, opts, progress=progress)
    finally:
        tags.close()
    if job.out and tags.n_hops != summary.hops_written:
        raise KemuError(f"shard {job.index}: {summary.hops_written} hops written but "
                        f"{tags.n_hops} tagged")
    if job.flows and tags.n_recs != summary.flow_records:
        raise KemuError(f"shard {job.index}: {summary.flow_records} flow records written but "
                        f"{tags.n_recs} tagged")
    if report is not None:
        report(job.index, summary.packets)
    return ShardResult(job.index, summary, summary.packets, time.perf_counter() - t0)


def refuse(options: ReplayOptions) -> None:
    """Options a sharded replay does not take (one line naming the option)."""
    if options.respond:
        raise KemuError("--respond with --workers/--scheduler: answers are made between "
                        "batches of one process; replay with --workers 1")
    if options.loop > 1:
        raise KemuError("--loop with --workers/--scheduler: replay with --workers 1")
    if options.address_map:
        raise KemuError("--map with --workers/--scheduler: replay with --workers 1")
    if options.on_batch is not None or options.select is not None \
            or options.source is not None:
        raise KemuError("replay_sharded: on_batch, select and source are the workers' own")


def first_placed_ns(t: Tables, capture: str, options: ReplayOptions, backend: str
                    ) -> int | None:
    """The time of the first frame that replay places (a warm start happens then), within
    ``options.limit``; None when none is."""
    from kemu.frontend.placement import Placer
    from kemu.frontend.placement import implementations as twins
    from kemu.io.capture import iter_capture
    from kemu.io.linktypes import to_ethernet

    inject_at = t.iface(options.inject_at) if options.inject_at is not None else None
    placer = Placer(t, inject_at, options.unknown_at_gateway, twins()[backend],
                    keep_l2=options.keep_l2)
    seen = 0
    for chunk in iter_capture(capture, chunk_bytes=8 << 20):
        cap = to_ethernet(chunk)
        n = len(cap) if not options.limit else min(len(cap), options.limit - seen)
        iface = placer.place(cap.buf, cap.offsets[:n], cap.lengths[:n])[0]
        hit = np.flatnonzero(iface >= 0)
        if len(hit):
            return int(cap.ts_ns[hit[0]])
        seen += n
        if options.limit and seen >= options.limit:
            break
    return None


def replay_sharded(model: Cluster, capture: str | os.PathLike, out: str | os.PathLike | None,
                   flows: str | os.PathLike | None, options: ReplayOptions, *,
                   workers: int = 2, scheduler: Any = None, backend: str | None = None,
                   seed: int = 0, cold: bool = False,
                   progress: Callable[[dict[int, int]], None] | None = None
                   ) -> ReplaySummary:
    """Replay ``capture`` in ``workers`` shards: processes of this machine, or the workers
    of the Dask cluster ``scheduler`` (an address ``tcp://HOST:8786``, a
    ``distributed.Client`` or a cluster object), and merge their parts into ``out`` and
    ``flows``. ``progress`` is called with each worker's frames so far."""
    from kemu.frontend.api import EmulatedCluster
    from kemu.io.compressed import open_decompressed
    from kemu.io.outputs import check_outputs

    if workers < 1:
        raise KemuError(f"--workers {workers}: must be 1 or more")
    refuse(options)
    t0 = time.perf_counter()
    check_outputs({"out=": out, "flows=": flows},
                  {f"the input capture (capture={os.fspath(capture)})": capture})
    emu = EmulatedCluster(model, backend=backend, seed=seed, respond=False, icmp_errors=False,
                          cold=cold)
    t = emu.tables
    if options.inject_at is not None and options.inject_at not in t.if_name:
        from kemu.errors import TopologyError

        raise TopologyError(f"--inject-at: no interface {options.inject_at!r}; interfaces are "
                            f"named like {t.if_name[0]!r}, 'ns/pod/eth0'")
    path = os.path.abspath(os.fspath(capture))
    parts = tempfile.mkdtemp(prefix=".kemu-parts-", dir=_parts_folder(out, flows, path,
                                                                       scheduler))
    try:
        with open_decompressed(path) as f:
            if f is not None:  # decompressed once, where every worker can read it
                path = os.path.join(parts, "capture")
                with open(path, "wb") as g:
                    shutil.copyfileobj(f, g, 1 << 20)
        warm = first_placed_ns(t, path, options, emu.backend)
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        index = Index(t, parts, workers, options.limit, emu.backend)
        jobs = [ShardJob(blob, path, parts, k, workers, emu.backend, seed, cold, options, warm,
                         os.path.join(parts, f"part-{k}.pcapng") if out is not None else None,
                         os.path.join(parts, f"part-{k}.jsonl") if flows is not None
                         else None)
                for k in range(workers)]
        if scheduler is None:
            results = _run_pool(jobs, progress, lambda: index.chunks(path, 0))
        else:
            results = _run_dask(jobs, scheduler, progress, lambda: index.chunks(path, 0))
        results.sort(key=lambda r: r.index)
        for r in results:
            if r.frames != index.frames[r.index]:
                raise KemuError(f"shard {r.index}: replayed {r.frames} frames of "
                                f"{index.frames[r.index]}")
        summary = _combine([r.summary for r in results])
        summary.damaged.update(index.damaged)  # (the coordinator read the whole capture)
        summary.workers = workers
        summary.cross_shard = sum(index.cross_shard)
        _merge_outputs(t, jobs, out, flows, summary)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def _parts_folder(out: str | os.PathLike | None, flows: str | os.PathLike | None,
                  capture: str, scheduler: Any) -> str:
    """Where the index and the parts go: beside the first output; without outputs the
    temporary directory, or for a Dask cluster beside the capture (every worker reads that
    folder) when it can be written."""
    first = out if out is not None else flows
    if first is not None:
        return os.path.dirname(os.path.abspath(os.fspath(first)))
    near = os.path.dirname(capture)
    if scheduler is not None and os.access(near, os.W_OK):
        return near
    return tempfile.gettempdir()


def _merge_outputs(t: Tables, jobs: list[ShardJob], out: str | os.PathLike | None,
                   flows: str | os.PathLike | None, summary: ReplaySummary) -> None:
    """The parts merged into the outputs: the flow log on a thread of its own beside the
    pcapng; both renamed into place only when both are complete."""
    from concurrent.futures import ThreadPoolExecutor

    from kemu.frontend.replay import open_writer
    from kemu.io.merge import merge_lines, merge_pcapng
    from kemu.io.outputs import AtomicFile

    def merge_flows() -> tuple[AtomicFile, int]:
        f = AtomicFile(os.fspath(flows), "wb", direct=True)  # type: ignore[arg-type]
        try:
            return f, merge_lines([(j.flows, j.flows + ".tags") for j in jobs if j.flows], f)
        except BaseException:
            f.discard()
            raise

    writer = None
    with ThreadPoolExecutor(1, thread_name_prefix="kemu merge") as pool:
        pending = pool.submit(merge_flows) if flows is not None else None
        try:
            if out is not None:
                writer = open_writer(out, t)  # (its writes on a thread of its own, O_DIRECT)
                n = merge_pcapng([(j.out, j.out + ".tags") for j in jobs if j.out],
                                 writer.write_blocks)
                if n != summary.hops_written:
                    raise KemuError(f"{out}: merged {n} blocks of {summary.hops_written}")
            f, n = pending.result() if pending is not None else (None, 0)
            if f is not None and n != summary.flow_records:
                f.discard()
                raise KemuError(f"{flows}: merged {n} records of {summary.flow_records}")
            if writer is not None:
                writer.close()
            if f is not None:
                f.commit()
        except BaseException:
            if writer is not None:
                writer.abort()
            if pending is not None:
                with contextlib.suppress(BaseException):
                    pending.result()[0].discard()
            raise


def _combine(parts: list[ReplaySummary]) -> ReplaySummary:
    from kemu.frontend.replay import ReplaySummary

    s = ReplaySummary()
    for p in parts:
        for name in ("packets", "bytes", "injected", "delivered", "left", "translated",
                     "answers", "hops_written", "flow_records", "at_gateway"):
            setattr(s, name, getattr(s, name) + getattr(p, name))
        s.dropped.update(p.dropped)
        s.unplaced.update(p.unplaced)
        s.damaged.update(p.damaged)
        if len(s.unknown_sources) < 100_000:
            s.unknown_sources |= p.unknown_sources
    return s


def _pool_context() -> Any:
    import multiprocessing as mp

    # never fork a process that has threads (the reader and writer threads of replay): a
    # fork server, which imports kemu's replay once and forks the workers from there
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["kemu.frontend.shard", "kemu.frontend.api",
                                "kemu.frontend.replay"])
    return ctx


def prestart() -> None:
    """Start the fork server now (it imports kemu's replay once, the pool's workers are
    forked from it): ``kemu replay --workers N`` calls this first, so that those imports
    run beside its own loading of the manifests."""
    ctx = _pool_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _run_pool(jobs: list[ShardJob], progress: Callable[[dict[int, int]], None] | None,
              own: Callable[[], Iterator[Capture]]) -> list[ShardResult]:
    """The first shard here, in this process, its frames (``own``) taken from the index
    while the index is written for the others (its reader thread makes it), which run in a
    pool of processes started at once (forked from the fork server)."""
    from concurrent.futures import ProcessPoolExecutor

    ctx = _pool_context()
    q = ctx.Queue()
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(stop.is_set, q.get, progress),
                                name="kemu progress", daemon=True)
    pool = ProcessPoolExecutor(len(jobs) - 1, mp_context=ctx, initializer=_init_pool,
                               initargs=(q,)) if len(jobs) > 1 else None
    futures = [pool.submit(run_shard, job) for job in jobs[1:]] if pool is not None else []
    try:
        follower.start()
        here = run_shard(jobs[0], reporter=lambda i, n: q.put_nowait((i, n)), source=own)
        results = [here] + [f.result() for f in futures]
        stop.set()
        follower.join()
        return results
    except BaseException:
        for f in futures:
            f.cancel()
        if pool is not None:
            for p in list(getattr(pool, "_processes", {}).values()):  # stop them now
                with contextlib.suppress(Exception):
                    p.terminate()
        raise
    finally:
        stop.set()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        q.close()


def _follow(finished: Callable[[], bool], get: Callable[..., Any],
            progress: Callable[[dict[int, int]], None] | None) -> None:
    """Progress reports drained until every job is finished."""
    counts: dict[int, int] = {}
    last = False
    while not last:
        last = finished()  # then what is still queued: the workers' final counts
        while True:
            try:
                index, done = get(timeout=0.05 if last else 0.1)
            except (queue.Empty, TimeoutError):
                break
            except Exception:  # noqa: BLE001 - a distributed.Queue timing out says so its way
                break
            counts[index] = done
            if progress is not None:
                progress(dict(counts))
            if not last and finished():
                break


def _client(scheduler: Any) -> tuple[Any, bool]:
    """A ``distributed.Client`` for ``scheduler`` and whether it is ours to close."""
    try:
        from distributed import Client
    except ImportError:
        raise KemuError("--scheduler needs Dask's distributed (pip install 'kemu[dask]')") \
            from None
    if isinstance(scheduler, Client):
        return scheduler, False
    try:
        return Client(scheduler, timeout="10s"), True
    except (OSError, TimeoutError) as err:
        raise KemuError(f"--scheduler {scheduler}: cannot connect ({err})") from None


def worker_count(scheduler: Any) -> int:
    """How many workers the Dask cluster has (at least 1)."""
    client, own = _client(scheduler)
    try:
        return max(1, len(client.scheduler_info().get("workers", {})))
    finally:
        if own:
            client.close()


def _run_dask(jobs: list[ShardJob], scheduler: Any,
              progress: Callable[[dict[int, int]], None] | None,
              mine: Callable[[], Iterator[Capture]]) -> list[ShardResult]:
    """The first shard here, from the index this process makes as it reads the capture
    (``mine``, as with a pool), the others as tasks of the Dask cluster reading that index."""
    client, own = _client(scheduler)
    from distributed import Queue

    try:
        q = Queue(f"kemu-progress-{uuid.uuid4().hex}", client=client)
        futures = [client.submit(run_shard, job, q, pure=False,
                                 key=f"kemu-shard-{job.index}-{uuid.uuid4().hex}")
                   for job in jobs[1:]]
        here: queue.Queue = queue.Queue()  # this process's shard's reports
        waiting: list[Any] = []

        def get(timeout: float) -> Any:
            # every report waiting, without blocking on the scheduler (a get that times
            # out there is logged as an error by distributed)
            with contextlib.suppress(queue.Empty):
                return here.get_nowait()
            if not waiting and futures:
                waiting.extend(q.get(batch=True) or ())
            if not waiting:
                time.sleep(timeout)
                raise queue.Empty
            return waiting.pop(0)

        done = threading.Event()
        follower = threading.Thread(target=_follow, args=(done.is_set, get, progress),
                                    name="kemu progress", daemon=True)
        try:
            follower.start()
            first = run_shard(jobs[0], reporter=lambda i, n: here.put((i, n)), source=mine)
            rest = list(client.gather(futures))
            return [first] + rest
        finally:
            done.set()
            follower.join()
            for f in futures:
                f.cancel()
    finally:
        if own:
            client.close()
