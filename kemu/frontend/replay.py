"""Replay a capture through an emulated cluster: kemu's main job.

Frames are read in chunks (no Python object per frame), converted to Ethernet and placed where
their source lives on a reader thread (``kemu.io.ahead``), then pushed through the batch
datapath in batches; hop comments and pcapng blocks are made on the writer's thread
(``kemu.frontend.hopwriter``, ``kemu.io.pcapng``), flow records on the flow log's
(``kemu.io.flowlog.FlowLog.write_later``), while the next batches run. Placement, in order:
the pod, external host, gateway or node owning the source IPv4 address (ARP: the sender
address), else the interface owning the source MAC; frames with neither are counted by reason
(or, with ``unknown_at_gateway``, enter from the gateway). A placed frame is transmitted by its
owner with Ethernet addresses rewritten as the owner's stack would address it (captures from a
real cluster carry that cluster's MACs, not kemu's) unless ``keep_l2`` (then as captured: an
unknown destination MAC is flooded by the bridge, a foreign one ignored by its receiver).
``inject_at`` puts every frame at one interface instead. Emulated time follows the capture's
timestamps. ``address_map`` rewrites a foreign capture's addresses onto the cluster's hosts
first (``kemu.frontend.addrmap``).

Output: a pcapng with every hop (``capture_points``: all, pods, drops), a Hubble-style flow
log, and a ``ReplaySummary`` in tcpreplay's manner. Outputs are written under temporary names
and renamed when complete (``kemu.io.outputs``: checked first, never an input, nothing left
behind on failure). A compressed capture (gzip, xz, bzip2, zstd) is decompressed once into
an unnamed temporary file (``kemu.io.compressed``). ``kemu.frontend.shard`` runs this in
several processes, each on the frames of its shard (``ReplayOptions.source``), and merges
their outputs into these same bytes (#21, docs/SHARDING.md).
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO, Protocol

import numpy as np

from kemu.control.cluster import Cluster
from kemu.dataplane import codes as C
from kemu.dataplane.describe import AT_GATEWAY, drop_text
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables
from kemu.errors import KemuError, TopologyError
from kemu.frontend.engine import Batch, Engine
from kemu.frontend.hopwriter import HopWriter
from kemu.frontend.placement import (
    NOISE,
    TRANSLATING,
    UNPLACED,
    WHY_AT_GATEWAY,
    Placer,
    mark_at_gateway,
    unknown_sources,
)
from kemu.frontend.placement import implementations as placement_twins
from kemu.io.ahead import ahead
from kemu.io.capture import Capture, iter_capture
from kemu.io.compressed import open_decompressed
from kemu.io.flowlog import EndpointInfo, FlowLog
from kemu.io.flowlog import implementations as flowlog_twins
from kemu.io.hops import implementations
from kemu.io.linktypes import to_ethernet
from kemu.io.outputs import AtomicFile, check_outputs
from kemu.io.pcapng import PcapngWriter

if TYPE_CHECKING:
    from kemu.frontend.addrmap import AddressMap

BATCH = 4096
Placement = tuple[np.ndarray, np.ndarray, np.ndarray]  # per frame: interface, mode, why not


class Emulation(Protocol):
    """What replay needs of an emulated cluster: its model, the engine running it, the
    compiled tables and the backend's name. ``kemu.frontend.api.EmulatedCluster`` is one
    (the API imports replay for ``EmulatedCluster.replay``; replay does not import the API)."""

    model: Cluster
    engine: Engine

    @property
    def tables(self) -> Tables: ...

    @property
    def backend(self) -> str: ...


@dataclass
class ReplayOptions:
    limit: int = 0                 # stop after this many input frames (0: all)
    loop: int = 1                  # replay the capture this many times
    inject_at: str | None = None
    keep_l2: bool = False          # frames keep their own Ethernet addresses (no fix-up)
    respond: bool = False          # synthesize answers of emulated stacks and ICMP errors
    unknown_at_gateway: bool = False
    capture_points: str = "all"    # all | pods | drops
    flow_format: str = "hubble"    # hubble | kemu
    batch: int = BATCH
    # capture address or CIDR -> NS/POD, NS/, svc/NS/NAME, ext/NAME, node/NAME or a cluster
    # IP ({"10.0.0.5": "default/client"} or ["10.0.0.5=default/client"]; addrmap)
    address_map: Mapping[str, str] | Iterable[str] | None = None
    # called with each batch's Results and its frames' numbers in the capture, after the
    # writers took them (``kemu topology -r`` reads the recorded hops there); res is read only
    on_batch: Callable[[Results, np.ndarray], None] | None = None
    # the frames of each chunk to replay, on the reader thread (a shard's, ``kemu.frontend.
    # shard``: it applies ``limit`` itself then); None from it: read no further
    select: Callable[[Capture], Capture | None] | None = None
    # the Ethernet chunks to replay instead of the capture's (a shard's frames, read from the
    # capture by byte offset: ``kemu.frontend.shard``; it applies ``limit`` itself then)
    source: Callable[[], Iterable[Capture]] | None = None
    # outputs written around the page cache (O_DIRECT: files of gigabytes); a shard's parts
    # go through it, as the merge reads them right back
    direct: bool = True


@dataclass
class ReplaySummary:
    packets: int = 0
    bytes: int = 0
    injected: int = 0
    delivered: int = 0
    left: int = 0
    dropped: Counter = field(default_factory=Counter)
    translated: int = 0
    unplaced: Counter = field(default_factory=Counter)
    damaged: Counter = field(default_factory=Counter)
    answers: int = 0
    hops_written: int = 0
    flow_records: int = 0
    seconds: float = 0.0
    at_gateway: int = 0            # injected at the gateway: source unknown to the cluster
    mapped: int | None = None      # frames rewritten by an address map (None: no map)
    mapped_addresses: int = 0      # the map's capture addresses met in them
    unknown_sources: set[int] = field(default_factory=set)  # of unplaced frames (some)
    workers: int = 1               # processes that replayed shards (``kemu.frontend.shard``)
    cross_shard: int | None = None  # frames whose fate could depend on another shard

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        extra: dict = {}
        if self.at_gateway:
            extra["enteredAtGateway"] = self.at_gateway
        if self.mapped is not None:
            extra["mapped"] = {"frames": self.mapped, "addresses": self.mapped_addresses}
        if self.cross_shard is not None:
            extra["sharded"] = {"workers": self.workers, "crossShard": self.cross_shard}
        return {**extra, "packets": self.packets, "bytes": self.bytes, "injected": self.injected,
                "delivered": self.delivered, "left": self.left,
                "dropped": dict(sorted(self.dropped.items())),
                "droppedTotal": sum(self.dropped.values()), "translated": self.translated,
                "unplaced": dict(sorted(self.unplaced.items())),
                "damaged": dict(sorted(self.damaged.items())), "answers": self.answers,
                "hopsWritten": self.hops_written, "flowRecords": self.flow_records,
                "seconds": round(self.seconds, 6), "pps": round(self.pps, 1)}

    def render(self) -> str:
        lines = [
            f"Actual: {self.packets} packets ({self.bytes} bytes) sent in "
            f"{self.seconds:.2f} seconds",
            f"Rated: {self.bytes / self.seconds if self.seconds else 0:.1f} Bps, "
            f"{self.pps:.1f} pps",
            *([f"Mapped:      {self.mapped} frames ({self.mapped_addresses} addresses)"]
              if self.mapped is not None else []),
            f"Injected:    {self.injected}",
            *([f"  {AT_GATEWAY}: {self.at_gateway}"] if self.at_gateway else []),
            f"Delivered:   {self.delivered}",
            f"Left:        {self.left} (through the gateway)",
            f"Translated:  {self.translated}",
            f"Dropped:     {sum(self.dropped.values())}",
        ]
        lines += [f"  {reason}: {n}" for reason, n in sorted(self.dropped.items())]
        if self.unplaced:
            lines.append(f"Not placed:  {sum(self.unplaced.values())}")
            lines += [f"  {reason}: {n}" for reason, n in sorted(self.unplaced.items())]
        if self.damaged:
            lines.append(f"Damaged:     {sum(self.damaged.values())}")
            lines += [f"  {reason}: {n}" for reason, n in sorted(self.damaged.items())]
        if self.answers:
            lines.append(f"Answers:     {self.answers} (emulated stacks and ICMP errors)")
        lines.append(f"Written:     {self.hops_written} hops, {self.flow_records} flow records")
        if self.cross_shard is not None:
            lines.append(f"Sharded:     {self.workers} workers; {self.cross_shard} frames whose "
                         "fate could depend on another shard")
        return "\n".join(lines) + "\n"


def replay(emu: Emulation, capture: str | os.PathLike, out: str | os.PathLike | None = None,
           flows: str | os.PathLike | None = None, options: ReplayOptions | None = None,
           progress: Callable[[int], None] | None = None) -> ReplaySummary:
    opts = options or ReplayOptions()
    t0 = time.perf_counter()
    check_outputs({"out=": out, "flows=": flows},
                  {f"the input capture (capture={os.fspath(capture)})": capture})
    t = emu.tables
    inject_at = None
    if opts.inject_at is not None:
        try:
            inject_at = t.iface(opts.inject_at)
        except KeyError:
            raise TopologyError(f"--inject-at: no interface {opts.inject_at!r}; interfaces are "
                                f"named like {t.if_name[0]!r}, 'ns/pod/eth0'") from None
    placer = Placer(t, inject_at, opts.unknown_at_gateway, placement_twins()[emu.backend],
                    keep_l2=opts.keep_l2)
    amap = None
    if opts.address_map:
        from kemu.frontend.addrmap import AddressMap, parse_rules

        amap = AddressMap.build(emu.model, t, parse_rules(opts.address_map), capture,
                                opts.limit)
    summary = ReplaySummary()
    if amap is not None:
        summary.mapped = 0
    writer = flow_file = flowlog = None
    # a compressed capture decompressed once, here (not on the reader thread, once per loop)
    source = ExitStack()
    try:
        file = source.enter_context(open_decompressed(capture))
        writer = open_writer(out, t, direct=opts.direct) if out is not None else None
        hop_writer = HopWriter(writer, t, opts.capture_points, implementations()[emu.backend]) \
            if writer is not None else None
        # the flow log's bytes around the page cache, laid out in the file's own buffers
        flow_file = AtomicFile(flows, "wb", direct=opts.direct) if flows is not None else None
        if flow_file is not None:
            flowlog = FlowLog(flow_file, t, _endpoint_infos(emu), _service_names(t),
                              kemu_format=opts.flow_format == "kemu",
                              impl=flowlog_twins()[emu.backend])
        record = writer is not None or flowlog is not None or opts.respond \
            or opts.on_batch is not None
        # three Results in turn: the writers' threads encode one batch's hops and flow records
        # while the next batches run in the others (the third absorbs the threads' jitter); a
        # Results is free again once both its events are set
        worst_hops, worst_arena = Results.worst_case(1514, t.n_ifaces)
        hops = opts.batch * 16 + worst_hops  # sized so that a batch of typical frames fits
        slots = [(Results(hops=hops, arena=hops * 96 + worst_arena, record=record),
                  threading.Event(), threading.Event()) for _ in range(3)]
        for _res, encoded, flowed in slots:
            encoded.set()
            flowed.set()
        done = turn = 0
        # (select or source applies it)
        limit = 0 if opts.select is not None or opts.source is not None else opts.limit
        for _loop in range(max(1, opts.loop)):
            # the next chunk read, indexed and placed on a thread of its own meanwhile
            for cap, placed, mapped in ahead(_placed_chunks(capture, placer, amap, file,
                                                            opts.select, opts.source),
                                             "kemu capture reader"):
                for d in cap.damaged:
                    summary.damaged[d.reason] += 1
                n = len(cap)
                if limit:
                    n = min(n, limit - done)
                if mapped is not None and amap is not None:
                    summary.mapped = (summary.mapped or 0) + amap.count(mapped, n)
                for lo in range(0, n, opts.batch):
                    hi = min(n, lo + opts.batch)
                    res, encoded, flowed = slots[turn]
                    turn = (turn + 1) % len(slots)
                    encoded.wait()
                    flowed.wait()
                    encoded.clear()
                    flowed.clear()
                    _run_batch(emu, cap, lo, hi, placed, res, hop_writer, flowlog, summary,
                               opts, encoded, flowed)
                    done += hi - lo
                    if progress is not None:
                        progress(done)
                if limit and done >= limit:
                    break
            if limit and done >= limit:
                break
        if flowlog is not None:
            flowlog.finish()
        if writer is not None:
            writer.close()
        if flow_file is not None:
            flow_file.commit()
            summary.flow_records = flowlog.records if flowlog else 0
    except BaseException:
        if flowlog is not None:
            flowlog.finish(drop=True)
        if writer is not None:
            writer.abort()
        if flow_file is not None:
            flow_file.discard()
        raise
    finally:
        source.close()
    if amap is not None:
        summary.mapped_addresses = int(np.count_nonzero(amap.hits))
    summary.seconds = time.perf_counter() - t0
    return summary


def open_writer(out: str | os.PathLike, t: Tables, background: bool = True,
                direct: bool = True) -> PcapngWriter:
    """The replay's pcapng: kemu's section header, an interface per device but the
    node-local ones (a sharded replay's merged output starts the same way)."""
    from kemu._backend import BACKEND
    from kemu._version import __version__

    folder = os.path.dirname(os.fspath(out)) or "."
    if not os.path.isdir(folder):
        raise KemuError(f"{out}: directory {folder} does not exist")
    w = PcapngWriter(out, application=f"kemu {__version__} (backend {BACKEND})",
                     comment="kemu: emulated Kubernetes cluster; one interface per hop",
                     background=background, direct=direct)
    for i in range(t.n_ifaces):
        if int(t.if_kind[i]) != C.IF_NODE_LOCAL:
            w.add_interface(t.if_name[i], t.if_desc[i])
    return w


def _placed_chunks(capture: str | os.PathLike[str], placer: Placer, amap: AddressMap | None,
                   file: BinaryIO | None = None,
                   select: Callable[[Capture], Capture | None] | None = None,
                   source: Callable[[], Iterable[Capture]] | None = None
                   ) -> Iterator[tuple[Capture, Placement, tuple[np.ndarray, np.ndarray] | None]]:
    """The capture (``file``'s bytes when given, see ``iter_capture``) as Ethernet chunks with
    each frame's placement (the reader thread's work), rewritten through ``amap`` first (then
    also the map index of each frame's source and destination). Windows rotate through three
    memories: the chunk being replayed, one waiting, one being made (``kemu.io.ahead``); replay
    is done with a chunk's bytes when it takes the next. ``source``: these Ethernet chunks
    instead of the capture's."""
    # 8 MiB windows: the three stay in the last-level cache between the reader's copy and the
    # datapath's reads (whole replays measured 1.04M frames/s with 32 MiB, 1.15M with 8)
    chunks: Iterable[Capture] = source() if source is not None else (
        to_ethernet(chunk)  # (its damage: the chunk's and the conversion's)
        for chunk in iter_capture(capture, chunk_bytes=8 << 20, reuse_buffer=3, file=file))
    for cap in chunks:
        if select is not None:  # a shard's frames
            sel = select(cap)
            if sel is None:
                return
            cap = sel
        mapped = amap.apply(cap) if amap is not None else None
        placed = placer.place(cap.buf, cap.offsets, cap.lengths)
        if mapped is not None and amap is not None:
            amap.unplace_services(placed, mapped)
        yield cap, placed, mapped


def _run_batch(emu: Emulation, cap: Capture, lo: int, hi: int, placed: Placement,
               res: Results, writer: HopWriter | None, flowlog: FlowLog | None,
               summary: ReplaySummary, opts: ReplayOptions, encoded: threading.Event,
               flowed: threading.Event) -> None:
    """One batch: run, count, write; ``encoded`` and ``flowed`` are set once the pcapng's
    and the flow log's writers are done with ``res`` (both: it is free again)."""
    handed = (False, False)  # whether the writers took res (they set the events then)
    try:
        handed = _run_batch_in(emu, cap, lo, hi, placed, res, writer, flowlog, summary, opts,
                               encoded, flowed)
    finally:
        if not handed[0]:
            encoded.set()
        if not handed[1]:
            flowed.set()


def _run_batch_in(emu: Emulation, cap: Capture, lo: int, hi: int, placed: Placement,
                  res: Results, writer: HopWriter | None, flowlog: FlowLog | None,
                  summary: ReplaySummary, opts: ReplayOptions, encoded: threading.Event,
                  flowed: threading.Event) -> tuple[bool, bool]:
    offs = cap.offsets[lo:hi]
    lens = cap.lengths[lo:hi]
    iface, mode, why = (a[lo:hi] for a in placed)
    fates = placement_twins()[emu.backend]  # its count_fates
    summary.packets += hi - lo
    summary.bytes += int(lens.sum())
    k = int(np.count_nonzero(iface >= 0))
    sel: np.ndarray | slice = slice(None)
    if k < hi - lo:  # some not placed: count them, run the others
        for code, name in UNPLACED.items():
            unplaced = int(np.count_nonzero(why == code))
            if unplaced:
                summary.unplaced[name] += unplaced
        if len(summary.unknown_sources) < 100_000:
            summary.unknown_sources.update(unknown_sources(cap.buf, offs, lens, why))
        if not k:
            return False, False
        sel = np.flatnonzero(iface >= 0)
    batch = Batch(cap.buf, offs[sel], lens[sel], iface[sel], mode[sel], cap.ts_ns[lo:hi][sel])
    res.clear()
    emu.engine.run(batch, res)
    summary.injected += k
    if opts.unknown_at_gateway:
        summary.at_gateway += mark_at_gateway(res, why[sel] == WHY_AT_GATEWAY)
    handed = writer is not None
    if writer is not None:  # from here on res is only read: the writer's thread reads it too
        # the fates are counted there too, before the blocks are made (the summary's counts
        # are read once the writer is closed)
        summary.hops_written += writer.write(res, batch.ts_ns, encoded,
                                             first=lambda: _count(res, k, summary, fates))
    else:
        _count(res, k, summary, fates)
    flows = flowlog is not None
    if flowlog is not None:  # on the flow log's thread: it sets ``flowed``
        flowlog.write_later(res, batch.ts_ns, cap.frame_numbers[lo:hi][sel], flowed)
    if opts.on_batch is not None:
        opts.on_batch(res, cap.frame_numbers[lo:hi][sel])
    if opts.respond:
        _respond(emu, res, batch, writer, flowlog, summary)
    return handed, flows


def _count(res: Results, n: int, summary: ReplaySummary, impl: ModuleType) -> None:
    """Fates of a batch's frames into the summary (``count_fates`` of ``impl``). Translated
    frames are counted from the outcomes' ``oc_nat`` alone, set with recording on or off (the
    events say it only when recorded): the same count with or without outputs."""
    delivered, left, ignored, translated, drops = impl.count_fates(
        res.oc_frame, res.oc_kind, res.oc_reason, res.n_outcomes, n, NOISE,
        res.ev_frame, res.ev_kind, 0, TRANSLATING, res.oc_nat)
    summary.delivered += delivered
    summary.left += left
    for (r, neigh), count in Counter(drops).items():
        summary.dropped["neighbour unresolved" if neigh else drop_text(r)] += count
    if ignored:
        summary.dropped["ignored by every receiver"] += ignored
    summary.translated += translated


def _respond(emu: Emulation, res: Results, batch: Batch, writer: HopWriter | None,
             flowlog: FlowLog | None, summary: ReplaySummary) -> None:
    """Answers of emulated stacks and node ICMP errors, a microsecond after their trigger,
    and the answers to those (an ARP request, its reply, the frames held for it, their
    answers, ...) for as many rounds as ``send`` follows (``MAX_ROUNDS``, the same loop as
    ``Engine.exchange``, ARP that went unanswered included: ICMP host unreachable)."""
    eng = emu.engine
    from kemu.frontend.engine import MAX_ROUNDS, Packet

    def follow(res: Results, origin: str, ts_ns: np.ndarray) -> list:
        """The answers the batch's outcomes call for, 1 us after the frame they answer."""
        packets = [Packet(origin, k) for k in range(len(ts_ns))]
        eng.collect(res, packets, 0)
        ts = [int(x) for x in ts_ns]
        return [(f, i, m, ts[idx] + 1000) for idx, p in enumerate(packets)
                for f, i, m, _origin, _parent in eng.follow_up(p, idx)]

    ts = [int(x) for x in batch.ts_ns]
    frames = follow(res, "injected", batch.ts_ns)
    for _round in range(1, MAX_ROUNDS):
        if not frames and eng._held:  # ARP went unanswered: host unreachable
            for (_node, _ip), held in sorted(eng._held.items()):
                for f, i, _m in held:
                    err = eng._node_icmp(f, i, 3, 1)
                    if err is not None:
                        frames.append(err + (max(ts) + 1000,))
            eng._held.clear()
        if not frames:
            return
        ab = Batch.from_frames(frames)
        ares = Results(hops=4096)
        eng.run(ab, ares)
        summary.answers += len(frames)
        if writer is not None:
            summary.hops_written += writer.write(ares, ab.ts_ns)
        if flowlog is not None:  # (after the batch's own records: one queue, in order)
            flowlog.write_later(ares, ab.ts_ns)
        ts = [int(x) for x in ab.ts_ns]
        frames = follow(ares, "answer", ab.ts_ns)


def _endpoint_infos(emu: Emulation) -> dict[int, EndpointInfo]:
    out = {}
    for pod in emu.model.pods:
        if pod.host_network:
            continue
        labels = tuple(sorted(f"k8s:{k}={v}" for k, v in pod.labels.items())) + (
            f"k8s:io.kubernetes.pod.namespace={pod.namespace}",)
        wl = (pod.owner.kind, pod.owner.name) if pod.owner else None
        out[int(ipaddress.IPv4Address(str(pod.ip)))] = EndpointInfo(
            pod.namespace, pod.name, labels, wl)
    return out


def _service_names(t: Tables) -> dict[int, tuple[str, str]]:
    out = {}
    for sp, name in enumerate(t.sp_name):
        key = name.split(":", 1)[0]
        ns, svc = key.split("/", 1)
        out[sp] = (ns, svc)
    return out
