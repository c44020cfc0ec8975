"""Control plane and compiler: ``load_cluster`` then ``compile_cluster`` of synthetic clusters
(the three-node example, 30 nodes, 100 nodes; 5,000 nodes / 150,000 pods / 10,000 Services
with ``KEMU_BENCH_SCALE=1``). ``extra_info["pps"]`` is pods per second."""

from __future__ import annotations

import pytest
from conftest import SCALE, timed

from kemu.bench import workloads as W
from kemu.compiler.compile import compile_cluster
from kemu.control.cluster import load_cluster

SIZES = [(3, 120, 30), (30, 900, 90), (100, 3_000, 200)]
if SCALE:
    SIZES.append((5_000, 150_000, 10_000))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}nodes-{s[1]}pods-{s[2]}svc")
def test_load_and_compile(benchmark, size):
    benchmark.group = "control plane: load + compile"
    docs = W.synthetic_cluster(*size)
    timed(benchmark, lambda: compile_cluster(load_cluster(docs)), size[1],
          rounds=1 if size[0] >= 100 else 3, unit="pods", nodes=size[0], services=size[2])


@pytest.mark.parametrize("size", SIZES[:2], ids=lambda s: f"{s[0]}nodes-{s[1]}pods")
def test_compile_only(benchmark, size):
    benchmark.group = "control plane: compile"
    cluster = load_cluster(W.synthetic_cluster(*size))
    timed(benchmark, lambda: compile_cluster(cluster), size[1], rounds=3, unit="pods")


POLICY_SIZES = [(3, 120, 30, 1_000), (100, 3_000, 200, 1_000)]
if SCALE:
    POLICY_SIZES.append((5_000, 150_000, 10_000, 10_000))


@pytest.mark.parametrize("size", POLICY_SIZES,
                         ids=lambda s: f"{s[0]}nodes-{s[1]}pods-{s[3]}policies")
def test_compile_policies(benchmark, size):
    """NetworkPolicy's part of compiling (#17): identities, selections, the policy map, for
    ``synthetic_policies`` over 100 namespaces (the goal at scale: < 10 s)."""
    from kemu._gc import paused_gc
    from kemu.compiler.policy import compile_policies

    benchmark.group = "control plane: compile NetworkPolicies"
    nodes, pods, services, n_policies = size
    docs = W.synthetic_cluster(nodes, pods, services, endpoints="slices")
    cluster = load_cluster(docs + W.synthetic_policies(
        n_policies, 100, services, cluster_cidr=docs[0]["spec"]["clusterCIDR"]))

    def run():
        with paused_gc():  # as compile_cluster runs it
            return compile_policies(cluster)

    timed(benchmark, run, n_policies, rounds=3, unit="policies", pods=pods)
