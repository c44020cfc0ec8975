"""Batched route lookups: kemu's DIR-24-8 ``Lpm`` (Cython), its pure-Python reference and
pytricia, on Internet-shaped tables of 10k and 500k prefixes (the 500k one needs more than
32,767 second-level groups)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import timed

from kemu._backend import IMPLEMENTATIONS
from kemu.bench import peers as P
from kemu.bench import workloads as W

LOOKUPS = 2_000_000
_tables: dict[int, tuple] = {}


def table(n: int) -> tuple:
    if n not in _tables:
        p, d, nh = W.route_table(n)
        _tables[n] = (p, d, nh, W.route_addresses(p, d, LOOKUPS))
    return _tables[n]


@pytest.mark.parametrize("impl", [*sorted(IMPLEMENTATIONS), "pytricia"])
@pytest.mark.parametrize("size", [10_000, 500_000])
def test_lookup_bulk(benchmark, impl, size):
    benchmark.group = f"routes: {size // 1000}k prefixes"
    p, d, nh, ips = table(size)
    if impl == "pytricia":
        if not P.pytricia_available():
            pytest.skip("pytricia is not installed")
        tree = P.PytriciaRoutes(p, d, nh)
        ints = ips[:500_000].tolist()  # the rate per lookup; a round stays short
        timed(benchmark, lambda: tree.lookup_bulk(ints), len(ints), unit="lookups", rounds=3,
              impl=impl)
        return
    lpm = IMPLEMENTATIONS[impl].Lpm()
    for a, b, c in zip(p.tolist(), d.tolist(), nh.tolist(), strict=True):
        lpm.add(a, b, c)
    some = ips if impl == "cython" else ips[:20_000]
    out = np.empty(len(some), np.int32)
    timed(benchmark, lambda: lpm.lookup_bulk(some, out), len(some), unit="lookups",
          rounds=5 if impl == "cython" else 3, impl=impl)
    if impl != "python":   # the answers timed are the reference's
        ref = IMPLEMENTATIONS["python"].Lpm()
        for a, b, c in zip(p.tolist(), d.tolist(), nh.tolist(), strict=True):
            ref.add(a, b, c)
        want = np.empty(5_000, np.int32)
        ref.lookup_bulk(some[-5_000:], want)
        assert np.array_equal(out[len(some) - 5_000:len(some)], want)
