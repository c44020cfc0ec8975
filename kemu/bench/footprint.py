"""The footprint of a synthetic cluster, measured in a fresh child process.

Owns ``cluster_footprint``: load and compile a synthetic cluster (seconds, peak memory,
memory per pod) and, for ``--scale``, the cluster mix on it against the three-node cluster;
and ``policy_compile``: the NetworkPolicy part of compiling such a cluster with
``synthetic_policies`` (#17).
``kemu bench`` runs it in a child process of its own (``Bench._child``: ``python -c`` importing
this module by name), so that the memory figures are the cluster's alone.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from kemu.bench.probes import huge_page_bytes, peak_rss_bytes, rss_bytes


def cluster_footprint(nodes: int, pods: int, services: int, repeat: int,
                      endpoints: str = "selector") -> dict[str, Any]:
    """Load and compile a synthetic cluster in this (fresh) process: seconds, memory per
    pod; with ``repeat``, the cluster mix on it against the three-node cluster, alternating
    runs (the median ratio of rates)."""
    from kemu.bench import workloads as W
    from kemu.compiler.compile import compile_cluster
    from kemu.control.cluster import load_cluster

    out: dict[str, Any] = {"nodes": nodes, "pods": pods, "services": services,
                           "endpoints": endpoints}
    docs = W.synthetic_cluster(nodes, pods, services, endpoints=endpoints)
    base = rss_bytes()
    t0 = time.perf_counter()
    cluster = load_cluster(docs)
    t1 = time.perf_counter()
    tables = compile_cluster(cluster)
    t2 = time.perf_counter()
    del docs
    out.update(load_seconds=round(t1 - t0, 2), compile_seconds=round(t2 - t1, 2),
               load_compile_seconds=round(t2 - t0, 2),
               load_compile_peak_rss_bytes=peak_rss_bytes())
    from kemu._backend import IMPLEMENTATIONS

    dp = None
    if "cython" in IMPLEMENTATIONS:
        dp = IMPLEMENTATIONS["cython"].Datapath(tables, 0, True)
        out["datapath_seconds"] = round(time.perf_counter() - t2, 2)
    import numpy as np

    out["tables_bytes"] = int(sum(v.nbytes for v in vars(tables).values()
                                  if isinstance(v, np.ndarray)))
    out["bytes_per_pod"] = round((rss_bytes() - base) / pods, 1)
    out["bytes_per_pod_note"] = ("RSS growth of load + compile + Cython Datapath, per pod "
                                 "(tables_bytes: the compiled numpy tables alone)")
    out["peak_rss_bytes"] = peak_rss_bytes()
    if repeat and dp is not None:
        small = compile_cluster(load_cluster(W.synthetic_cluster(3, 120, 30)))
        runs: dict[str, list[float]] = {"three-node": [], "scale": []}
        setups = []
        for name, t in (("three-node", small), ("scale", tables)):
            w = W.cluster_mix(t, 10_000, 400_000)
            d = dp if t is tables else IMPLEMENTATIONS["cython"].Datapath(t, 0, True)
            res = W.results_for(t, 1024, False, 64)
            W.drive(d, w.warm, res)
            setups.append((name, d, w, res))
        for r in range(repeat):
            for name, d, w, res in setups:
                ws = w.shifted((r + 1) * len(w) * 1000)
                t0 = time.perf_counter()
                W.drive(d, ws, res)
                runs[name].append(len(w) / (time.perf_counter() - t0))
        out["mix_pps"] = {k: statistics.median(v) for k, v in runs.items()}
        out["mix_runs"] = runs
        out["mix_ratio"] = out["mix_pps"]["scale"] / out["mix_pps"]["three-node"]
        # what the kernel gave in 2 MiB pages (the scale tables ask for them): without,
        # the scale mix misses the TLB as often as the caches
        out["anon_huge_page_bytes"] = huge_page_bytes()
        out["peak_rss_bytes"] = peak_rss_bytes()
    return out


def policy_compile(nodes: int, pods: int, services: int, n_policies: int,
                   namespaces: int) -> dict[str, Any]:
    """A synthetic cluster (a cluster dump) with ``n_policies`` NetworkPolicies over
    ``namespaces`` namespaces: seconds of ``compile_policies`` (identities, selections, the
    policy map: the median of three) and of the whole ``compile_cluster`` with them."""
    from kemu._gc import paused_gc
    from kemu.bench import workloads as W
    from kemu.compiler.compile import compile_cluster
    from kemu.compiler.policy import compile_policies
    from kemu.control.cluster import load_cluster

    docs = W.synthetic_cluster(nodes, pods, services, endpoints="slices")
    docs += W.synthetic_policies(n_policies, namespaces, services,
                                 cluster_cidr=docs[0]["spec"]["clusterCIDR"])
    t0 = time.perf_counter()
    cluster = load_cluster(docs)
    load_s = time.perf_counter() - t0
    runs = []
    for _ in range(3):
        with paused_gc():  # as compile_cluster runs it
            t0 = time.perf_counter()
            fields = compile_policies(cluster)
            runs.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    compile_cluster(cluster)
    whole = time.perf_counter() - t0
    policies, cluster.policies = cluster.policies, []
    t0 = time.perf_counter()
    compile_cluster(cluster)
    without = time.perf_counter() - t0
    cluster.policies = policies
    return {"nodes": nodes, "pods": pods, "policies": len(cluster.policies),
            "namespaces": namespaces, "load_seconds": round(load_s, 2),
            "compile_seconds": round(statistics.median(runs), 2),
            "compile_runs": [round(x, 2) for x in runs],
            "compile_cluster_seconds": round(whole, 2),
            "compile_cluster_without_policies_seconds": round(without, 2),
            "identities": len(fields.get("ident_name", ())),
            "map_entries": len(fields.get("pm_rule", ())),
            "rules": len(fields.get("rule_pol", ())),
            "peak_rss_bytes": peak_rss_bytes()}
