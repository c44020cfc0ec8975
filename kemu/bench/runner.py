"""The measurements of ``kemu bench``: kemu against its peers on this machine, in one run.

What it measures, each the median of ``--repeat`` runs (with min and max), side by side:

- the datapath on the *cluster mix* (``kemu.bench.workloads.cluster_mix``: 64-byte TCP
  frames, 10k flows with warm conntrack, half pod -> ClusterIP with the endpoint on another
  node, a quarter same-node and a quarter cross-node pod -> pod) on a synthetic three-node
  cluster (120 pods, 30 Services): the Cython fast path without and with every hop recorded,
  the pure-Python reference, and ``kemu.bench.peers.ScapyPipeline`` making the same
  decisions on Scapy objects; the *churn* workload (100k new flows, IMIX sizes);
- the Linux kernel forwarding the same frames through the same cluster built from network
  namespaces (``KernelPeer``; root, iproute2, iptables and br_netfilter needed; skipped with
  ``--no-kernel``);
- the cluster mix again with 1,000 NetworkPolicies over 100 namespaces that isolate every pod
  and allow exactly the mix's connections (``policy`` row, its ratio to the mix row; the
  goal is >= 0.85), the churn workload with them (every new flow judged: what a verdict
  costs), and the time ``compile_cluster`` takes with them;
- batched route lookups: kemu's ``Lpm.lookup_bulk`` against pytricia, 10k and 500k prefixes;
- whole-process ``kemu replay`` of a cluster-mix capture to a pcapng of every hop (1M frames
  by default, ``--replay-frames 4000000`` for the issue's target; three runs into the
  temporary directory, one into /dev/shm), the same with the Hubble flow log too
  (``--flows``, three runs into the temporary directory), and the start-up time of ``kemu
  replay`` (and whether it imports Scapy);
- memory: bytes per route, per conntrack flow and per pod;
- with ``--scale``: a 5,000-node, 150,000-pod, 10,000-Service cluster loaded and compiled in a
  child process (seconds, peak memory) and the cluster mix on it against the three-node one
  (and compiled again with 10,000 NetworkPolicies: ``policy_compile``);
  given as a cluster dump (pod IPs, EndpointSlices) and as selector-based manifests (cut off
  after ``--scale-timeout`` and extrapolated from smaller sizes).

Owns ``Bench``: a ``kemu.bench.report.Report`` that runs these measurements and fills in its
rows, ``info`` and ``memory``. Frames are generated before any timing; workloads come from
``kemu.bench.workloads``, the peers from ``kemu.bench.peers``, child processes run
``kemu.bench.footprint`` and ``kemu replay``.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kemu.bench.probes import free_bytes, rss_bytes, write_seconds
from kemu.bench.report import Report
from kemu.bench.rows import (
    CHURN,
    FAST,
    FLOWS_ROW,
    FLOWS_SHM_ROW,
    KERNEL,
    MIX,
    POLICY,
    POLICY_CHURN,
    POLICY_COUNT,
    POLICY_NAMESPACES,
    REF,
    SCAPY,
    STAGES,
    Row,
    Sizes,
)


def _say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


class Bench(Report):
    """The measurements of one run (``run_all``), each stage adding its rows and figures."""

    def __init__(self, *, quick: bool = False, repeat: int = 5, batch: int = 1024,
                 kernel: bool = True, replay: bool = True, scale: bool = False,
                 replay_frames: int = 0, scale_timeout: float = 900, cni: str = "") -> None:
        sizes = Sizes.of(quick)
        if replay_frames > 0:
            sizes = replace(sizes, replay_frames=replay_frames)
        super().__init__(quick=quick, repeat=max(1, repeat), batch=batch, sizes=sizes)
        self.do_kernel, self.do_replay, self.do_scale = kernel, replay, scale
        self.scale_timeout = scale_timeout
        self.cni = cni  # ``--cni MODE``: the cluster mix in that mode beside flannel's only
        self.t0 = time.perf_counter()

    # ---------------------------------------------------------------- helpers
    def measure(self, row: Row, fn: Callable[[int], Any],
                setup: Callable[[int], Any] | None = None, repeat: int | None = None,
                warmup: bool = False) -> Row:
        """Time ``fn(run)`` ``repeat`` times (``setup(run)`` untimed before each; with
        ``warmup`` one untimed run first, e.g. to fault in a fresh table's pages)."""
        if warmup:
            fn(-1)
        for r in range(repeat or self.repeat):
            if setup is not None:
                setup(r)
            t0 = time.perf_counter()
            fn(r)
            row.runs.append(row.n / (time.perf_counter() - t0))
        self.rows.append(row)
        _say(f"{row.workload}: {row.name}: {row.median:,.0f} {row.unit}/s")
        return row

    # ---------------------------------------------------------------- stages
    def run_all(self) -> None:
        if self.cni:
            self.cni_rows()
            self.info["seconds"] = round(time.perf_counter() - self.t0, 1)
            return
        self.setup()
        self.datapath()
        self.peers()
        if self.do_kernel:
            self.kernel()
        self.routes()
        if self.do_replay:
            self.replay()
        self.pod_memory()
        if self.do_scale:
            self.scale()
        self.info["seconds"] = round(time.perf_counter() - self.t0, 1)

    def setup(self) -> None:
        from kemu.bench import workloads as W
        from kemu.compiler.compile import compile_cluster
        from kemu.control.cluster import load_cluster

        _say("generating workloads")
        self.docs = W.synthetic_cluster(3, 120, 30)
        self.tables = compile_cluster(load_cluster(self.docs))
        self.mix = W.cluster_mix(self.tables, 10_000, self.sizes.mix_frames)
        self.churn = W.churn(self.tables, self.sizes.churn_flows)
        t0 = time.perf_counter()
        self.policy_tables = compile_cluster(load_cluster(
            self.docs + W.synthetic_policies(POLICY_COUNT, POLICY_NAMESPACES)))
        self.info["policy_compile_seconds"] = round(time.perf_counter() - t0, 3)
        if self.policy_tables.if_name != self.tables.if_name:
            raise RuntimeError("the policy cluster's interfaces differ from the mix cluster's")
        self.info["cluster"] = {"nodes": 3, "pods": 120, "services": 30,
                                "interfaces": self.tables.n_ifaces}
        self.info["workloads"] = {
            MIX: {"flows": 10_000, "frames": len(self.mix), "frame_bytes": 64},
            CHURN: {"flows": self.sizes.churn_flows, "frames": len(self.churn),
                    "mean_frame_bytes": round(self.churn.n_bytes / len(self.churn), 1),
                    "new_flow_share": round(self.sizes.churn_flows / len(self.churn), 3)}}

    def _fast(self, record: bool = False, flow_cache: bool = True) -> tuple[Any, Any]:
        from kemu._backend import IMPLEMENTATIONS
        from kemu.bench import workloads as W

        impl = IMPLEMENTATIONS["cython"]
        old = impl._set_flow_cache(flow_cache)
        try:
            dp = impl.Datapath(self.tables, 0, True)
        finally:
            impl._set_flow_cache(old)
        res = W.results_for(self.tables, self.batch, record, 1514)
        return dp, res

    def datapath(self) -> None:
        from kemu._backend import IMPLEMENTATIONS
        from kemu.bench import workloads as W

        if "cython" not in IMPLEMENTATIONS:
            _say("the Cython extension is not built: fast-path rows skipped")
            self.info["fast_path"] = "not built"
            return
        span = len(self.mix) * 1000
        for record, cache, name in ((False, True, FAST), (False, False, STAGES),
                                    (True, True, FAST + ", every hop recorded")):
            dp, res = self._fast(record, cache)
            W.drive(dp, self.mix.warm, res, self.batch)
            shifted: list[Any] = [None]

            def setup(r: int, s: list[Any] = shifted) -> None:
                s[0] = self.mix.shifted((r + 1) * span)

            before = dp.flow_cache_hits
            row = self.measure(Row("datapath", MIX, name, "frames", len(self.mix)),
                               lambda r, dp=dp, res=res, s=shifted: W.drive(dp, s[0], res,
                                                                            self.batch),
                               setup)
            share = (dp.flow_cache_hits - before) / (len(self.mix) * len(row.runs))
            if name == FAST:
                row.note = (f"{share:.1%} of frames by the flow cache (established flows' "
                            "cached paths); the row below runs every frame through the stages")
                self.info["flow_cache_share"] = {MIX: round(share, 4)}
        self.policy_row(span)
        dp, res = self._fast(False)

        def churn_setup(r: int) -> None:
            dp.reset()
            W.drive(dp, self.churn.warm, res, self.batch)

        before = dp.flow_cache_hits
        row = self.measure(Row("datapath", CHURN, FAST, "frames", len(self.churn)),
                           lambda r: W.drive(dp, self.churn, res, self.batch), churn_setup)
        self.info.setdefault("flow_cache_share", {})[CHURN] = round(
            (dp.flow_cache_hits - before) / (len(self.churn) * len(row.runs)), 4)
        # bytes per flow: conntrack after the churn flows, measured on a fresh datapath
        dp2, res2 = self._fast(False)
        W.drive(dp2, self.churn.warm, res2, self.batch)
        before = rss_bytes()
        W.drive(dp2, self.churn, res2, self.batch)
        self.memory["bytes_per_flow"] = round((rss_bytes() - before) / self.sizes.churn_flows, 1)
        self.memory["bytes_per_flow_note"] = (
            "RSS growth of the Cython datapath over the churn flows, conntrack entries on "
            "every node a flow crosses (1 or 2) included")

    def cni_rows(self) -> None:
        """``kemu bench --cni MODE``: the cluster mix on the same synthetic cluster (3 nodes,
        120 pods, 30 Services) compiled in CNI mode ``self.cni``, the fast path with its flow
        cache, in rounds alternating with flannel's (host-gw) mix; both rows and the ratio
        (the goal: >= 0.8 of flannel's rate)."""
        from kemu._backend import IMPLEMENTATIONS
        from kemu.bench import workloads as W
        from kemu.compiler.compile import compile_cluster
        from kemu.control.cluster import load_cluster

        if "cython" not in IMPLEMENTATIONS:
            _say("the Cython extension is not built: --cni rows skipped")
            self.info["fast_path"] = "not built"
            return
        impl = IMPLEMENTATIONS["cython"]
        _say(f"generating workloads (flannel and {self.cni})")
        self.tables = compile_cluster(load_cluster(W.synthetic_cluster(3, 120, 30)))
        self.mix = W.cluster_mix(self.tables, 10_000, self.sizes.mix_frames)
        tables = compile_cluster(load_cluster(W.synthetic_cluster(3, 120, 30, cni=self.cni)))
        mix = W.cluster_mix(tables, 10_000, self.sizes.mix_frames)
        self.info["cluster"] = {"nodes": 3, "pods": 120, "services": 30,
                                "interfaces": self.tables.n_ifaces}
        span = len(self.mix) * 1000
        sides = []
        for t, w, label in ((self.tables, self.mix, MIX),
                            (tables, mix, f"mix, {self.cni}")):
            dp = impl.Datapath(t, 0, True)
            res = W.results_for(t, self.batch, False, 1514)
            W.drive(dp, w.warm, res, self.batch)
            sides.append((dp, res, w, Row("datapath", label, FAST, "frames", len(w))))
        for r in range(self.repeat):  # alternating rounds: the same machine state for both
            for dp, res, w, row in sides:
                shifted = w.shifted((r + 1) * span)
                t0 = time.perf_counter()
                W.drive(dp, shifted, res, self.batch)
                row.runs.append(row.n / (time.perf_counter() - t0))
        for *_x, row in sides:
            self.rows.append(row)
            _say(f"{row.workload}: {row.name}: {row.median:,.0f} {row.unit}/s")
        ratio = sides[1][3].median / sides[0][3].median if sides[0][3].median else None
        self.info["cni"] = {"mode": self.cni, "interfaces": tables.n_ifaces,
                            "ratio_to_flannel": round(ratio, 4) if ratio else None}
        _say(f"cni {self.cni} / flannel: {ratio:.2f}" if ratio else "no ratio")

    def policy_row(self, span: int) -> None:
        """The cluster mix through tables with NetworkPolicies (#17), the fast path with its
        flow cache as in the mix row, in rounds alternating with the same mix without
        policies (the ratio is of those alternating runs: the shared machine's drift cancels
        out); every connection of the mix must be allowed."""
        from kemu._backend import IMPLEMENTATIONS
        from kemu.bench import workloads as W
        from kemu.dataplane import codes as C

        impl = IMPLEMENTATIONS["cython"]
        denied = [0]

        def count(r: Any, lo: int, hi: int) -> None:
            n = r.n_outcomes
            denied[0] += int(((r.oc_kind[:n] == C.OUT_DROPPED)
                              & (r.oc_reason[:n] == C.DROP_POLICY)).sum())

        pair = []
        for t in (self.tables, self.policy_tables):
            dp = impl.Datapath(t, 0, True)
            res = W.results_for(t, self.batch, False, 1514)
            W.drive(dp, self.mix.warm, res, self.batch, count)
            pair.append((dp, res))
        row = Row("datapath", POLICY, FAST, "frames", len(self.mix))
        plain: list[float] = []
        rounds = max(self.repeat, 7)  # the ratio of a shared machine's rates needs a few
        for r in range(rounds):
            w = self.mix.shifted((r + 1) * span)
            for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                dp, res = pair[k]
                t0 = time.perf_counter()
                W.drive(dp, w, res, self.batch, count if k else None)
                (row.runs if k else plain).append(len(w) / (time.perf_counter() - t0))
        self.rows.append(row)
        # the median of each round's ratio (its two runs back to back): drift cancels out
        ratio = statistics.median(a / b for a, b in zip(row.runs, plain, strict=True))
        t = self.policy_tables
        row.note = (f"{POLICY_COUNT:,} NetworkPolicies over {POLICY_NAMESPACES} namespaces "
                    f"({len(t.ident_name)} identities, {len(t.pm_rule):,} policy-map entries); "
                    f"{ratio:.2f} of the same mix without them (the median ratio of {rounds} "
                    f"alternating rounds; without: {statistics.median(plain):,.0f}/s); "
                    f"{denied[0]} frames denied")
        _say(f"{row.workload}: {row.name}: {row.median:,.0f} {row.unit}/s ({ratio:.2f} of "
             "the mix without policies)")
        # the churn: every timed flow is new, so each one's first frame is judged
        crow = Row("datapath", POLICY_CHURN, FAST, "frames", len(self.churn))
        cplain: list[float] = []
        for r in range(rounds):
            for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                dp, res = pair[k]
                dp.reset()
                W.drive(dp, self.churn.warm, res, self.batch)
                t0 = time.perf_counter()
                W.drive(dp, self.churn, res, self.batch, count if k else None)
                (crow.runs if k else cplain).append(len(self.churn) / (time.perf_counter() - t0))
        self.rows.append(crow)
        cratio = statistics.median(a / b for a, b in zip(crow.runs, cplain, strict=True))
        crow.note = (f"{cratio:.2f} of the same churn without policies (alternating rounds; "
                     f"{statistics.median(cplain):,.0f}/s); {denied[0]} frames denied in all")
        _say(f"{crow.workload}: {crow.name}: {crow.median:,.0f} {crow.unit}/s ({cratio:.2f} of "
             "the churn without policies)")
        self.info["policy"] = {"policies": len(t.pol_name), "rules": len(t.rule_pol),
                               "churn_ratio": round(cratio, 4),
                               "identities": len(t.ident_name),
                               "map_entries": len(t.pm_rule), "denied_frames": denied[0],
                               "mix_ratio": round(ratio, 4),
                               "mix_without_pps": round(statistics.median(plain)),
                               "compile_seconds": self.info.get("policy_compile_seconds")}

    def peers(self) -> None:
        from kemu._backend import IMPLEMENTATIONS
        from kemu.bench import peers as P
        from kemu.bench import workloads as W

        ref = IMPLEMENTATIONS["python"]
        dp = ref.Datapath(self.tables, 0, True)
        res = W.results_for(self.tables, self.batch, False, 1514)
        head = self.mix.head(self.sizes.ref_frames)
        W.drive(dp, self.mix.warm_for(0, len(head)), res, self.batch)
        self.measure(Row("datapath", MIX, REF, "frames", len(head)),
                     lambda r: W.drive(dp, head.shifted((r + 1) * 10**9), res, self.batch),
                     repeat=min(self.repeat, 3))
        if not P.scapy_available():
            _say("Scapy is not installed: the Scapy pipeline is skipped")
            return
        sp = P.ScapyPipeline(self.tables)
        n = self.sizes.scapy_frames
        repeat = min(self.repeat, 3)
        sp.run(self.mix.warm_for(0, n * repeat))
        self.measure(Row("datapath", MIX, SCAPY, "frames", n),
                     lambda r: sp.run(self.mix, r * n, (r + 1) * n), repeat=repeat)

    def kernel(self) -> None:
        from kemu.bench import peers as P

        ok, why = P.kernel_available()
        if not ok:
            self.info["kernel"] = {"skipped": why}
            _say(f"kernel peer skipped: {why}")
            return
        _say("building the cluster from network namespaces")
        cpu = max(os.sched_getaffinity(0))
        old = os.sched_getaffinity(0)
        info: dict[str, Any] = {"cpu": cpu}
        try:
            os.sched_setaffinity(0, {cpu})  # the sender and its softirqs on one core
            info["injection_pps"] = P.injection_rate(min(1.0, self.sizes.kernel_seconds))
            with P.KernelPeer(self.tables) as k:
                info["build_seconds"] = round(k.build_seconds, 2)
                k.send_all(self.mix.warm)
                time.sleep(0.1)
                stats: list[dict[str, float]] = []
                row = Row("datapath", MIX, KERNEL, "frames", 0)
                for _ in range(self.repeat):
                    s = k.blast(self.mix, self.sizes.kernel_seconds)
                    stats.append(s)
                    row.runs.append(s["pps"])
                row.n = int(statistics.median(s["delivered"] for s in stats))
        finally:
            os.sched_setaffinity(0, old)
        sent = sum(s["sent"] for s in stats)
        info["delivered_share"] = round(sum(s["delivered"] for s in stats) / max(1, sent), 4)
        inj = info["injection_pps"]
        fwd = row.median
        info["forwarding_only_pps"] = (1 / (1 / fwd - 1 / inj)) if fwd and inj > fwd else None
        bound = ("the kernel's own work: one sendmmsg call per 64 frames costs no Python per "
                 "frame" if inj > 2 * fwd else "the sender (AF_PACKET injection) as much as "
                 "forwarding")
        row.note = (f"AF_PACKET sendmmsg from the pods' namespaces, one core (CPU {cpu}); "
                    f"injection alone {inj:,.0f}/s; delivered {info['delivered_share']:.1%} "
                    f"of sent; bound by {bound}")
        info["measured"] = ("frames sent from pod namespaces through AF_PACKET sockets "
                            "(sendmmsg) and delivered to the destination pods' veths, "
                            "counted by the node-side veth TX counters; per core: the "
                            "sender thread is pinned and the kernel forwards in its softirq")
        self.rows.append(row)
        self.info["kernel"] = info
        _say(f"{MIX}: {KERNEL}: {row.median:,.0f} frames/s")

    def routes(self) -> None:
        import numpy as np

        from kemu._backend import IMPLEMENTATIONS
        from kemu.bench import peers as P
        from kemu.bench import workloads as W

        for n in self.sizes.route_sizes:
            label = f"{n // 1000}k prefixes"
            p, d, nh = W.route_table(n)
            ips = W.route_addresses(p, d, self.sizes.lookups)
            out = np.empty(len(ips), np.int32)
            if "cython" in IMPLEMENTATIONS:
                before = rss_bytes()
                lpm = IMPLEMENTATIONS["cython"].Lpm()
                for a, b, c in zip(p.tolist(), d.tolist(), nh.tolist(), strict=True):
                    lpm.add(a, b, c)
                if n == max(self.sizes.route_sizes):
                    self.memory["bytes_per_route"] = round((rss_bytes() - before) / n, 1)
                    self.memory["bytes_per_route_note"] = (
                        f"RSS growth of a Cython Lpm holding {n:,} prefixes (DIR-24-8: the "
                        "64 MiB first-level table, 1 KiB per second-level group, the rules)")
                self.measure(Row("routes", label, "kemu Lpm.lookup_bulk (cython)", "lookups",
                                 len(ips)),
                             lambda r, lpm=lpm, ips=ips, out=out: lpm.lookup_bulk(ips, out),
                             warmup=True)
                del lpm
            ref = IMPLEMENTATIONS["python"].Lpm()
            for a, b, c in zip(p.tolist(), d.tolist(), nh.tolist(), strict=True):
                ref.add(a, b, c)
            few = ips[: max(1, len(ips) // 100)]
            self.measure(Row("routes", label, "kemu Lpm reference (pure Python)", "lookups",
                             len(few)),
                         lambda r, ref=ref, few=few, out=out: ref.lookup_bulk(few, out),
                         repeat=min(self.repeat, 3))
            if P.pytricia_available():
                tree = P.PytriciaRoutes(p, d, nh)
                as_ints = ips.tolist()
                self.measure(Row("routes", label, "pytricia (map(tree.get, ints))", "lookups",
                                 len(ips)), lambda r, tree=tree, a=as_ints: tree.lookup_bulk(a),
                             warmup=True)
                del tree

    def replay(self) -> None:
        """Whole-process ``kemu replay`` to a pcapng of every hop: into the temporary
        directory (a disk, usually) and into /dev/shm (memory), each beside the rate at which
        plain ``write`` calls put the same bytes there right after (the ceiling); and the
        start-up time of ``kemu replay`` on a one-frame capture."""
        from kemu.bench import workloads as W

        n = self.sizes.replay_frames
        info: dict[str, Any] = {"frames": n}
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        # byte code as an installed kemu has it (pip compiles it; PYTHONDONTWRITEBYTECODE
        # would otherwise make every start compile every module again)
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(root, "kemu")],
                       env=env, capture_output=True, check=False)
        with tempfile.TemporaryDirectory(prefix="kemu-bench-") as tmp:
            manifests = os.path.join(tmp, "cluster.json")
            with open(manifests, "w") as f:
                json.dump({"apiVersion": "v1", "kind": "List", "items": self.docs}, f)
            cap, tiny = os.path.join(tmp, "mix.pcap"), os.path.join(tmp, "one.pcap")
            _say(f"writing a {n:,}-frame capture")
            W.write_pcap(cap, W.repeat_workload(self.mix, n))
            W.write_pcap(tiny, self.mix.head(1))
            info["capture_bytes"] = os.path.getsize(cap)
            cmd = [sys.executable, "-m", "kemu", "replay", "-f", manifests, "--json"]
            out = os.path.join(tmp, "out.pcapng")
            starts = []
            for _ in range(3 if self.quick else 7):
                t0 = time.perf_counter()
                subprocess.run(cmd + ["-r", tiny, "-w", out], env=env, check=True,
                               capture_output=True)
                starts.append(time.perf_counter() - t0)
            info["startup_seconds"] = {"median": statistics.median(starts), "min": min(starts),
                                       "max": max(starts)}
            p = subprocess.run([sys.executable, "-X", "importtime"] + cmd[1:]
                               + ["-r", tiny, "-w", out], env=env, check=True,
                               capture_output=True, text=True)
            info["startup_imports_scapy"] = any(
                line.rsplit("|", 1)[-1].strip().startswith("scapy")
                for line in p.stderr.splitlines())
            places = [("disk", tmp, "kemu replay (whole process, pcapng of every hop)")]
            shm = "/dev/shm"
            if os.path.isdir(shm) and os.access(shm, os.W_OK):
                places.append(("memory", shm, "kemu replay, pcapng into /dev/shm (tmpfs)"))
            summaries: list[dict[str, Any]] = []
            info["plain_write"] = {}
            for where, folder, name in places:
                out = os.path.join(folder, f"kemu-bench-{os.getpid()}.pcapng")
                if summaries and free_bytes(folder) < 1.2 * info.get("output_bytes", 0):
                    info[f"skipped_{where}"] = f"not enough room in {folder}"
                    continue
                row = Row("replay", f"{MIX} capture", name, "frames", n)
                # the disk row is the target: three runs, the median (a shared machine's rate
                # moves by a tenth or more from one run to the next); /dev/shm once
                reps = min(self.repeat, 3) if where == "disk" or n < 1_000_000 else 1
                try:
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        p = subprocess.run(cmd + ["-r", cap, "-w", out], env=env, check=True,
                                           capture_output=True, text=True)
                        row.runs.append(n / (time.perf_counter() - t0))
                        summaries.append(json.loads(p.stdout))
                        info["output_bytes"] = os.path.getsize(out)
                        os.unlink(out)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(out)
                s = summaries[-1]
                row.note = (f"start-up {info['startup_seconds']['median']:.2f} s included; "
                            f"{s.get('hopsWritten', 0) / max(1, n):.1f} hops, "
                            f"{info['output_bytes'] / max(1, n):,.0f} bytes written per frame")
                self.rows.append(row)
                _say(f"replay ({where}): {row.median:,.0f} frames/s")
                # the pace of writes there, right after (about a ceiling: replay lays its
                # blocks out in the staging buffers, this copies them in): new files' pages
                # cost what they cost on this machine (on a VM, the host's too)
                size = info["output_bytes"]
                secs = write_seconds(os.path.join(folder, f"kemu-bench-{os.getpid()}.bin"),
                                      size)
                info["plain_write"][where] = {"folder": folder, "bytes": size,
                                              "seconds": round(secs, 3),
                                              "bytes_per_second": size / secs}
                place = "/dev/shm" if where == "memory" else "same directory"
                self.rows.append(Row("replay", f"{MIX} capture", "only writing its bytes "
                                     f"({place}, as replay writes)", "frames", n, [n / secs],
                                     note=f"{size / secs / 1e6:,.0f} MB/s: the pace of writes "
                                     "there right after, the way replay writes"))
                _say(f"replay ({where}): plain writes of the same bytes {size / secs / 1e6:,.0f}"
                     " MB/s")
            self._replay_flows(cmd, env, cap, tmp, n, info)
            s = summaries[-1]
            info["summary"] = {k: s.get(k) for k in ("packets", "injected", "delivered",
                                                     "droppedTotal", "hopsWritten", "pps")}
            _say(f"replay: start-up {info['startup_seconds']['median']:.2f} s")
        self.info["replay"] = info

    def _replay_flows(self, cmd: list[str], env: dict[str, str], cap: str, tmp: str, n: int,
                      info: dict[str, Any]) -> None:
        """Whole-process ``kemu replay`` writing the pcapng of every hop and the Hubble flow
        log (``--flows``) side by side: into the temporary directory (three runs, the median),
        then into /dev/shm (tmpfs: kemu's own pace where the disk's write rate is no limit)."""
        places = [("disk", tmp, FLOWS_ROW)]
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            places.append(("memory", "/dev/shm", FLOWS_SHM_ROW))
        for where, folder, name in places:
            tag = f"kemu-bench-{os.getpid()}"
            out, flows = os.path.join(folder, tag + ".pcapng"), os.path.join(folder, tag + ".jsonl")
            if free_bytes(folder) < 2.2 * info.get("output_bytes", 0):
                info[f"skipped_flows_{where}"] = f"not enough room in {folder}"
                continue
            row = Row("replay", f"{MIX} capture", name, "frames", n)
            try:
                for _ in range(min(self.repeat, 3)):
                    t0 = time.perf_counter()
                    p = subprocess.run(cmd + ["-r", cap, "-w", out, "--flows", flows],
                                       env=env, check=True, capture_output=True, text=True)
                    row.runs.append(n / (time.perf_counter() - t0))
                    info["flow_records"] = json.loads(p.stdout).get("flowRecords")
                    info["flow_log_bytes"] = os.path.getsize(flows)
                    info["flows_output_bytes"] = os.path.getsize(out) + os.path.getsize(flows)
                    for f in (out, flows):
                        os.unlink(f)
            finally:
                for f in (out, flows):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f)
            row.note = (f"{info['flow_records'] / max(1, n):.2f} flow records, "
                        f"{info['flow_log_bytes'] / max(1, n):,.0f} bytes of flow log per frame "
                        f"besides the pcapng ({info['flows_output_bytes'] / max(1, n):,.0f} "
                        "bytes written per frame in all)")
            self.rows.append(row)
            _say(f"replay with --flows ({where}): {row.median:,.0f} frames/s")

    def _child(self, fn: str, *args: Any, timeout: float = 1800) -> dict[str, Any]:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        code = f"import json, kemu.bench.footprint as b; print(json.dumps(b.{fn}(*{args!r})))"
        try:
            p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"timeout_seconds": timeout}
        if p.returncode:
            return {"error": p.stderr.strip().splitlines()[-1:] or ["failed"]}
        return json.loads(p.stdout.strip().splitlines()[-1])

    def pod_memory(self) -> None:
        nodes, pods, services = self.sizes.pod_cluster
        _say(f"memory per pod ({nodes} nodes, {pods:,} pods) in a child process")
        r = self._child("cluster_footprint", nodes, pods, services, 0, "selector")
        self.memory["per_pod"] = r
        if "bytes_per_pod" in r:
            self.memory["bytes_per_pod"] = r["bytes_per_pod"]

    def scale(self) -> None:
        """The big cluster twice: as a cluster dump (pod IPs, EndpointSlices) and as
        selector-based manifests; the latter is cut off after ``scale_timeout`` seconds and
        extrapolated from two smaller sizes (its cost grows with pods x Services)."""
        nodes, pods, services = 5000, 150_000, 10_000
        _say(f"scale: {nodes:,} nodes, {pods:,} pods, {services:,} Services (cluster dump "
             "with EndpointSlices) in a child process")
        r = self._child("cluster_footprint", nodes, pods, services, self.repeat, "slices",
                        timeout=self.scale_timeout)
        self.info["scale"] = r
        _say(f"scale: compiling {10 * POLICY_COUNT:,} NetworkPolicies over "
             f"{POLICY_NAMESPACES} namespaces for it, in a child process")
        r["policy"] = self._child("policy_compile", nodes, pods, services, 10 * POLICY_COUNT,
                                  POLICY_NAMESPACES, timeout=self.scale_timeout)
        if "bytes_per_pod" in r:
            self.memory["bytes_per_pod_at_scale"] = r["bytes_per_pod"]
        ladder = []
        for k in (50, 25):
            _say(f"scale: selector manifests at 1/{k} of the size")
            ladder.append(self._child("cluster_footprint", nodes // k, pods // k,
                                      services // k, 0, "selector", timeout=600))
        _say(f"scale: selector manifests at full size (cut off after {self.scale_timeout} s)")
        full = self._child("cluster_footprint", nodes, pods, services, 0, "selector",
                           timeout=self.scale_timeout)
        sel: dict[str, Any] = {"ladder": ladder, "full": full}
        ok = [x for x in ladder if "load_compile_seconds" in x]
        if len(ok) == 2:
            import math

            (a, b) = ok
            work = [x["pods"] * x["services"] for x in ok]
            exp = math.log(b["load_compile_seconds"] / a["load_compile_seconds"]) / \
                math.log(work[1] / work[0])
            sel["growth_exponent_in_pods_x_services"] = round(exp, 2)
            sel["extrapolated_seconds"] = round(
                b["load_compile_seconds"] * (pods * services / work[1]) ** exp, 0)
        self.info["scale_selector"] = sel
