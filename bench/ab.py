"""A/B: two builds of kemu measured side by side, rounds alternating.

    python bench/ab.py OLD_TREE NEW_TREE [--rounds 7] [--mix-frames N] [--churn-flows N]

Each tree is a kemu checkout with its extension built in place (``python setup.py
build_ext --inplace``; e.g. ``git worktree add --detach /tmp/old HEAD~1`` and a build there).
One worker process per tree imports kemu from that tree, builds the same workloads as ``kemu
bench`` (the 3-node cluster mix, churn), then waits; the parent asks the two workers for one
round each in turn (A B, B A, A B, ...), so both builds meet the same minutes of this shared
machine. A round runs the ``kemu bench`` datapath rows once: the mix with the flow cache, the
mix with every frame through the stages, the mix with every hop recorded, and churn (new
flows). Printed: each row's median frames/s per build and the ratio NEW/OLD with the spread of
the per-round ratios. Rates are never asserted here: read them (the rule is within 5%).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROWS = ("mix", "mix, flow cache off", "mix, every hop recorded", "churn")

WORKER = r"""
import json, os, sys, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
try:
    from kemu.bench import workloads as W
except ImportError:  # trees from before kemu/bench/
    from kemu.frontend import workloads as W
import kemu
from kemu._backend import IMPLEMENTATIONS
from kemu.compiler.compile import compile_cluster
from kemu.control.cluster import load_cluster

mix_frames, churn_flows, batch = (int(a) for a in sys.argv[1:4])
impl = IMPLEMENTATIONS["cython"]
tables = compile_cluster(load_cluster(W.synthetic_cluster(3, 120, 30)))
mix = W.cluster_mix(tables, 10_000, mix_frames)
churn = W.churn(tables, churn_flows)


def fresh(record, cache):
    old = impl._set_flow_cache(cache)
    try:
        dp = impl.Datapath(tables, 0, True)
    finally:
        impl._set_flow_cache(old)
    return dp, W.results_for(tables, batch, record, 1514)


mixes = []
for record, cache in ((False, True), (False, False), (True, True)):
    dp, res = fresh(record, cache)
    W.drive(dp, mix.warm, res, batch)
    mixes.append((dp, res))
cdp, cres = fresh(False, True)
print(json.dumps({"ready": kemu.__file__}), flush=True)
span = len(mix) * 1000
r = 0
for line in sys.stdin:
    if line.strip() != "round":
        break
    r += 1
    out = []
    for dp, res in mixes:
        w = mix.shifted(r * span)
        t = time.perf_counter()
        W.drive(dp, w, res, batch)
        out.append(len(w) / (time.perf_counter() - t))
    cdp.reset()
    W.drive(cdp, churn.warm, cres, batch)
    t = time.perf_counter()
    W.drive(cdp, churn, cres, batch)
    out.append(len(churn) / (time.perf_counter() - t))
    print(json.dumps(out), flush=True)
"""


def _worker(tree: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(tree), OPENBLAS_NUM_THREADS="1")
    env.pop("KEMU_NO_EXTENSIONS", None)
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(args.mix_frames),
                          str(args.churn_flows), str(args.batch)], cwd=tree, env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    ready = json.loads(p.stdout.readline() or "{}")
    where = ready.get("ready", "")
    if not where.startswith(str(tree.resolve())):
        p.kill()
        sys.exit(f"ab: the worker for {tree} imported kemu from {where or 'nowhere'}")
    return p


def _round(p: subprocess.Popen[str]) -> list[float]:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("round\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--mix-frames", type=int, default=1_000_000)
    ap.add_argument("--churn-flows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    procs = {"old": _worker(args.old, args), "new": _worker(args.new, args)}
    runs: dict[str, list[list[float]]] = {"old": [], "new": []}
    try:
        for r in range(args.rounds):
            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                runs[side].append(_round(procs[side]))
            print(f"round {r + 1}: " + "; ".join(
                f"{row} {runs['new'][-1][k] / runs['old'][-1][k]:.3f}"
                for k, row in enumerate(ROWS)), file=sys.stderr)
    finally:
        for p in procs.values():
            p.kill()
    print(f"{'row':28} {'old (median/s)':>15} {'new (median/s)':>15} {'new/old':>8} "
          f"{'per-round ratios':>20}")
    for k, row in enumerate(ROWS):
        old = statistics.median(x[k] for x in runs["old"])
        new = statistics.median(x[k] for x in runs["new"])
        ratios = [n[k] / o[k] for o, n in zip(runs["old"], runs["new"], strict=True)]
        print(f"{row:28} {old:15,.0f} {new:15,.0f} {new / old:8.3f} "
              f"{min(ratios):9.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main()
