"""Longest-prefix match: both implementations against a brute-force scan of the rules.

``kemu.dataplane.reference.lpm.Lpm`` (one dict per depth) and ``kemu._fastpath.Lpm``
(DIR-24-8 after DPDK's rte_lpm) must agree with an oracle that knows nothing about either:
every rule is an ``ipaddress.IPv4Network`` and a lookup scans them all for the longest one
containing the address. Cases: DPDK's ``test_lpm`` idea (one address, every depth 1..32
added, then deleted backwards, checking the fallback each time), random rule sets with
deletes (Hypothesis), the /0 default, overlapping prefixes, more than 32,767 second-level
groups, and ``lookup_bulk`` against ``lookup``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kemu.dataplane.reference.lpm import Lpm as ReferenceLpm

try:
    from kemu._fastpath import Lpm as FastLpm
except ImportError:
    if os.environ.get("KEMU_NO_EXTENSIONS", "") not in ("", "0"):
        FastLpm = None
    else:
        raise

IMPLEMENTATIONS = {"reference": ReferenceLpm}
if FastLpm is not None:
    IMPLEMENTATIONS["fast"] = FastLpm


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make_lpm(request: pytest.FixtureRequest) -> Callable:
    return IMPLEMENTATIONS[request.param]


class Oracle:
    """Rules as networks; a lookup scans every rule (independent of both tables)."""

    def __init__(self) -> None:
        self.rules: dict[IPv4Network, int] = {}

    def add(self, prefix: int, depth: int, nh: int) -> None:
        self.rules[IPv4Network((prefix, depth), strict=False)] = nh

    def delete(self, prefix: int, depth: int) -> bool:
        return self.rules.pop(IPv4Network((prefix, depth), strict=False), None) is not None

    def lookup(self, ip: int) -> int:
        addr = IPv4Address(ip)
        best, nh = -1, -1
        for net, hop in self.rules.items():
            if net.prefixlen > best and addr in net:
                best, nh = net.prefixlen, hop
        return nh


def probes(rules, extra=()) -> list[int]:
    """Addresses where answers change: each rule's first and last address and their
    neighbours, plus ``extra``."""
    out = set(extra)
    for net in rules:
        lo, hi = int(net.network_address), int(net.broadcast_address)
        out.update(x & 0xFFFFFFFF for x in (lo - 1, lo, lo + 1, hi - 1, hi, hi + 1))
    return sorted(out)


def check(lpm, oracle: Oracle, ips) -> None:
    for ip in ips:
        assert lpm.lookup(ip) == oracle.lookup(ip), f"{IPv4Address(ip)}"
    assert len(lpm) == len(oracle.rules)


def test_every_depth_added_then_deleted_backwards(make_lpm) -> None:
    """DPDK test_lpm: add 1.2.3.4/1../32 checking after each add, then delete from /32
    down, checking that each lookup falls back to the next shorter rule."""
    for ip in (0x01020304, 0xFFFFFFFF, 0x80000000, 0xC0A80101):
        lpm, oracle = make_lpm(), Oracle()
        near = [ip ^ (1 << b) for b in range(32)] + [ip]
        for depth in range(1, 33):
            lpm.add(ip, depth, depth)
            oracle.add(ip, depth, depth)
            assert lpm.lookup(ip) == depth
            check(lpm, oracle, near)
        for depth in range(32, 0, -1):
            assert lpm.delete(ip, depth)
            oracle.delete(ip, depth)
            assert lpm.lookup(ip) == depth - 1 if depth > 1 else lpm.lookup(ip) == -1
            check(lpm, oracle, near)
        assert len(lpm) == 0


def test_default_route(make_lpm) -> None:
    lpm, oracle = make_lpm(), Oracle()
    samples = [0, 1, 0x7F000001, 0xFFFFFFFF, 0x0A000001]
    assert [lpm.lookup(ip) for ip in samples] == [-1] * len(samples)
    lpm.add(0x12345678, 0, 7)   # the prefix is masked away at /0
    oracle.add(0, 0, 7)
    check(lpm, oracle, samples)
    lpm.add(0x0A000000, 8, 8)
    oracle.add(0x0A000000, 8, 8)
    lpm.add(0x0A000100, 25, 25)
    oracle.add(0x0A000100, 25, 25)
    check(lpm, oracle, probes(oracle.rules, samples))
    assert lpm.delete(0, 0)
    oracle.delete(0, 0)
    assert not lpm.delete(0, 0)
    check(lpm, oracle, probes(oracle.rules, samples))
    assert lpm.delete(0x0A000100, 25)
    oracle.delete(0x0A000100, 25)
    check(lpm, oracle, probes(oracle.rules, samples))


def test_overlapping_prefixes_and_updates(make_lpm) -> None:
    lpm, oracle = make_lpm(), Oracle()
    rules = [("10.0.0.0", 8, 1), ("10.1.0.0", 16, 2), ("10.1.2.0", 24, 3), ("10.1.2.128", 25, 4),
             ("10.1.2.130", 32, 5), ("10.1.0.0", 20, 6), ("10.1.2.0", 23, 7), ("0.0.0.0", 1, 8),
             ("10.1.2.128", 26, 9), ("10.1.2.129", 31, 10)]
    for text, depth, nh in rules:
        prefix = int(IPv4Address(text))
        lpm.add(prefix, depth, nh)
        oracle.add(prefix, depth, nh)
        check(lpm, oracle, probes(oracle.rules))
    lpm.add(int(IPv4Address("10.1.2.128")), 25, 40)   # same rule, new next hop
    oracle.add(int(IPv4Address("10.1.2.128")), 25, 40)
    check(lpm, oracle, probes(oracle.rules))
    for text, depth, _nh in rules[::2] + rules[1::2]:
        prefix = int(IPv4Address(text))
        assert lpm.delete(prefix, depth) == oracle.delete(prefix, depth)
        check(lpm, oracle, probes(oracle.rules) + [int(IPv4Address(text))])
    assert not lpm.delete(int(IPv4Address("10.0.0.0")), 8)


def test_rejects_bad_arguments(make_lpm) -> None:
    lpm = make_lpm()
    with pytest.raises(ValueError):
        lpm.add(0, 33, 1)
    with pytest.raises(ValueError):
        lpm.add(0, -1, 1)
    with pytest.raises(ValueError):
        lpm.add(0, 8, 1 << 24)
    with pytest.raises(ValueError):
        lpm.add(0, 8, -1)
    lpm.add(0x0A000000, 8, (1 << 24) - 1)
    assert lpm.lookup(0x0A0B0C0D) == (1 << 24) - 1


rule = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 2**24 - 1))


@settings(max_examples=int(os.environ.get("KEMU_LPM_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rules=st.lists(rule, max_size=40), deletes=st.lists(st.integers(0, 39), max_size=25),
       extra=st.lists(st.integers(0, 2**32 - 1), max_size=20),
       near=st.sampled_from([0, 0x0A000000, 0xC0A80000]))
def test_random_rule_sets(make_lpm, rules, deletes, extra, near) -> None:
    """Random rules (half of them near one address, so that they overlap), random deletes;
    every boundary address checked after the adds and after each delete."""
    lpm, oracle = make_lpm(), Oracle()
    rules = [((p & 0xFFFF) | near if k % 2 else p, d, nh) for k, (p, d, nh) in enumerate(rules)]
    for prefix, depth, nh in rules:
        lpm.add(prefix, depth, nh)
        oracle.add(prefix, depth, nh)
    check(lpm, oracle, probes(oracle.rules, extra))
    for k in deletes:
        if k < len(rules):
            prefix, depth, _nh = rules[k]
            assert lpm.delete(prefix, depth) == oracle.delete(prefix, depth)
            check(lpm, oracle, probes(oracle.rules, extra + [prefix]))


def test_more_than_32767_second_level_groups(make_lpm) -> None:
    """41,000 /25s in distinct /24s: one second-level group each in DIR-24-8 (a 16-bit group
    index would wrap past 32,767 and answer with another group's routes)."""
    lpm = make_lpm()
    n = 41_000
    base = 0x0A000000
    for i in range(n):
        lpm.add(base + (i << 8) + (128 if i & 1 else 0), 25, i)
    lpm.add(base, 8, 999_999)   # a covering rule for the other halves
    assert len(lpm) == n + 1
    rng = np.random.default_rng(7)
    picks = list(range(0, n, 997)) + list(range(32_760, 32_780)) + list(range(n - 20, n))
    picks += rng.integers(0, n, 200).tolist()

    def expect(i: int, low: int) -> int:
        inside = (low >= 128) == bool(i & 1)
        return i if inside else 999_999

    for i in picks:
        for low in (0, 1, 127, 128, 200, 255):
            assert lpm.lookup(base + (i << 8) + low) == expect(i, low), (i, low)
    for i in range(0, n, 2):
        assert lpm.delete(base + (i << 8), 25)
    assert len(lpm) == n // 2 + n % 2 + 1
    for i in picks:
        for low in (0, 200):
            want = expect(i, low) if i & 1 else 999_999
            assert lpm.lookup(base + (i << 8) + low) == want, (i, low)
    for i in range(n):   # re-adding reuses the freed groups
        lpm.add(base + (i << 8) + (128 if i & 1 else 0), 25, i)
    for i in picks:
        assert lpm.lookup(base + (i << 8) + (128 if i & 1 else 5)) == i


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_lookup_bulk_equals_lookup(make_lpm, dtype) -> None:
    lpm = make_lpm()
    rng = np.random.default_rng(1)
    for prefix, depth in zip(rng.integers(0, 2**32, 300), rng.integers(0, 33, 300),
                             strict=True):
        lpm.add(int(prefix), int(depth), int(prefix) % 1000)
    ips = np.concatenate([rng.integers(0, 2**32, 2000), [0, 2**32 - 1]]).astype(np.uint32)
    out = np.full(len(ips) + 3, -7, dtype)
    lpm.lookup_bulk(ips, out)
    assert out[:len(ips)].tolist() == [lpm.lookup(int(ip)) for ip in ips]
    assert out[len(ips):].tolist() == [-7] * 3


def test_implementations_agree_on_a_cluster_like_table() -> None:
    """The shape kemu uses: pod CIDRs, the node network, a default route."""
    if FastLpm is None:
        pytest.skip("no compiled Lpm")
    a, b = ReferenceLpm(), FastLpm()
    routes = [(0x0AF40000 + (i << 8), 24) for i in range(200)] + [(0xAC120000, 24), (0, 0)]
    for i, (p, d) in enumerate(routes):
        a.add(p, d, i)
        b.add(p, d, i)
    ips = np.random.default_rng(3).integers(0, 2**32, 5000).astype(np.uint32)
    ips[:200] = 0x0AF40005 + (np.arange(200, dtype=np.uint32) << 8)
    out_a, out_b = np.zeros(len(ips), np.int64), np.zeros(len(ips), np.int64)
    a.lookup_bulk(ips, out_a)
    b.lookup_bulk(ips, out_b)
    assert np.array_equal(out_a, out_b)


# ---------------------------------------------------------------- lookup_bulk edge cases
# The compiled lookup_bulk runs a software pipeline (addresses prefetched up to 128 ahead,
# a ring of 64, the main loop unrolled by 4): lengths around those numbers, and tables
# with second-level groups, must give the same answers as lookup().

def _mixed_table(lpm, rng: np.random.Generator, n: int = 400) -> None:
    for prefix, depth in zip(rng.integers(0, 2**32, n), rng.integers(8, 33, n), strict=True):
        lpm.add(int(prefix), int(depth), int(prefix) % 5000)
    for i in range(64):   # some groups in one /16, so that addresses there hit tbl8
        lpm.add(0x0A0A0000 + (i << 8) + 128, 25, 7000 + i)
    lpm.add(0x0A000000, 8, 6999)


def _addresses(rng: np.random.Generator, n: int) -> np.ndarray:
    near = 0x0A0A0000 + rng.integers(0, 1 << 14, n)
    ips = np.where(rng.random(n) < 0.5, near, rng.integers(0, 2**32, n))
    return ips.astype(np.uint32)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 63, 64, 65, 127, 128, 129, 130, 131, 191,
                               192, 193, 255, 256, 257, 1000, 4099])
def test_lookup_bulk_lengths(make_lpm, n) -> None:
    lpm = make_lpm()
    rng = np.random.default_rng(n)
    _mixed_table(lpm, rng)
    ips = _addresses(rng, n)
    want = [lpm.lookup(int(ip)) for ip in ips]
    for dtype in (np.int32, np.int64):
        out = np.full(n + 2, -7, dtype)
        lpm.lookup_bulk(ips, out)
        assert out[:n].tolist() == want
        assert out[n:].tolist() == [-7, -7]


@pytest.mark.parametrize("dtype", [np.int16, np.float64, np.uint32, np.intp])
def test_lookup_bulk_other_out_dtypes(make_lpm, dtype) -> None:
    lpm = make_lpm()
    rng = np.random.default_rng(5)
    _mixed_table(lpm, rng, 50)
    lpm.add(0, 0, 3)   # every answer fits in each dtype
    ips = _addresses(rng, 300)
    out = np.zeros(300, dtype)
    lpm.lookup_bulk(ips, out)
    assert out.tolist() == [lpm.lookup(int(ip)) for ip in ips]


def test_lookup_bulk_strided_out_and_other_inputs(make_lpm) -> None:
    lpm = make_lpm()
    rng = np.random.default_rng(6)
    _mixed_table(lpm, rng, 100)
    ips = _addresses(rng, 500)
    want = [lpm.lookup(int(ip)) for ip in ips]
    for dtype in (np.int32, np.int64):
        big = np.full(1000, -7, dtype)
        lpm.lookup_bulk(ips, big[::2])   # a non-contiguous view is written too
        assert big[::2].tolist() == want and set(big[1::2].tolist()) == {-7}
    out = np.empty(500, np.int64)
    lpm.lookup_bulk(ips.astype(np.int64)[::-1], out)   # any integer array, any layout
    assert out.tolist() == want[::-1]
    lpm.lookup_bulk([int(x) for x in ips[:10]], out)   # a list
    assert out[:10].tolist() == want[:10]
    with pytest.raises(IndexError):
        lpm.lookup_bulk(ips, np.empty(499, np.int32))


def test_lookup_bulk_empty_table_and_default_only(make_lpm) -> None:
    ips = np.random.default_rng(8).integers(0, 2**32, 300).astype(np.uint32)
    for dtype in (np.int32, np.int64):
        lpm = make_lpm()
        out = np.zeros(300, dtype)
        lpm.lookup_bulk(ips, out)
        assert set(out.tolist()) == {-1}
        lpm.add(0, 0, 42)   # only a default route: no first-level table at all
        lpm.lookup_bulk(ips, out)
        assert set(out.tolist()) == {42}
        lpm.add(0x0A000000, 8, 8)
        lpm.delete(0x0A000000, 8)   # an all-empty first-level table falls back as well
        lpm.lookup_bulk(ips, out)
        assert set(out.tolist()) == {42}
        lpm.delete(0, 0)
        lpm.lookup_bulk(ips, out)
        assert set(out.tolist()) == {-1}


def test_lookup_bulk_after_changes(make_lpm) -> None:
    """Adds and deletes between batches (groups allocated, grown, recycled, reused): each
    batch agrees with the oracle."""
    lpm, oracle = make_lpm(), Oracle()
    rng = np.random.default_rng(9)
    rules = []
    for step in range(4):
        for _ in range(80):
            p, d = int(rng.integers(0, 2**32)), int(rng.integers(0, 33))
            p = (p & 0xFFFF) | 0xC0A80000 if rng.random() < 0.5 else p
            lpm.add(p, d, step * 1000 + d)
            oracle.add(p, d, step * 1000 + d)
            rules.append((p, d))
        for k in rng.integers(0, len(rules), 30).tolist():
            assert lpm.delete(*rules[k]) == oracle.delete(*rules[k])
        ips = np.array(probes(list(oracle.rules)[:60]) + rng.integers(0, 2**32, 200).tolist(),
                       np.uint32)
        out = np.empty(len(ips), np.int32)
        lpm.lookup_bulk(ips, out)
        assert out.tolist() == [oracle.lookup(int(ip)) for ip in ips]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(FastLpm is None or not os.path.exists("/proc/self/statm"),
                    reason="needs the compiled Lpm and Linux")
def test_memory_is_freed_with_the_lpm() -> None:
    """The first-level table (64 MiB, hugepage-backed where possible) and the second-level
    groups go back to the system when the Lpm goes away."""
    import gc

    gc.collect()
    before = _rss()
    lpm = FastLpm()
    lpm.add(0, 1, 1)
    lpm.add(0x80000000, 1, 2)   # touches the whole first-level table
    for i in range(5000):       # 5,000 groups: 5 MiB of tbl8
        lpm.add(0x0A000000 + (i << 8) + 128, 25, i)
    out = np.empty(1000, np.int32)
    lpm.lookup_bulk(np.arange(1000, dtype=np.uint32) << 20, out)
    grown = _rss() - before
    assert grown > 60 << 20
    del lpm
    gc.collect()
    assert _rss() - before < 8 << 20


def test_a_table_growing_past_the_hugepage_threshold() -> None:
    """The compiled table moves its first level to hugepages once it holds 1,024 rules:
    answers before and after the move (and after deletes) match the reference."""
    if FastLpm is None:
        pytest.skip("no compiled Lpm")
    fast, ref = FastLpm(), ReferenceLpm()
    rng = np.random.default_rng(11)
    ips = rng.integers(0, 2**32, 3000).astype(np.uint32)
    out = np.empty(len(ips), np.int32)
    rules = []
    for k in range(1500):
        p, d = int(rng.integers(0, 2**32)), int(rng.integers(8, 33))
        fast.add(p, d, k)
        ref.add(p, d, k)
        rules.append((p, d))
        ips[k] = p   # addresses inside the rules too
        if k in (0, 1000, 1022, 1023, 1024, 1025, 1499):
            fast.lookup_bulk(ips, out)
            assert out.tolist() == [ref.lookup(int(ip)) for ip in ips], k
    for p, d in rules[::3]:
        assert fast.delete(p, d) == ref.delete(p, d)
    fast.lookup_bulk(ips, out)
    assert out.tolist() == [ref.lookup(int(ip)) for ip in ips]
