"""The L7 proxy's verdict registry (``kemu.dataplane.l7.RECORDS``, #17): ids keep counting,
only the latest ``KEEP`` records are held (a day-long replay full of HTTP keeps its memory
bounded), and an evicted verdict is named by its status alone in comments."""

from __future__ import annotations

import pytest

from kemu.dataplane import codes as C
from kemu.dataplane import l7
from kemu.dataplane.describe import event_text


def _rec(i: int) -> l7.L7Record:
    return l7.L7Record(pod="shop/web-0", client=(0x0A000001, 40000 + i % 1000),
                       server=(0x0A000002, 80), method="GET", target=f"/{i}",
                       url=f"http://web/{i}", protocol="HTTP/1.1", headers=(), allowed=True,
                       code=200, policies=("shop/cnp",), rule="shop/cnp ingress rule 0")


def test_registry_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(l7, "KEEP", 8)
    monkeypatch.setattr(l7, "RECORDS", {})
    ids = [l7.record(_rec(i)) for i in range(20)]
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert len(l7.RECORDS) == 8
    assert all(l7.get(i) is None for i in ids[:12])
    assert [l7.get(i).target for i in ids[12:]] == [f"/{i}" for i in range(12, 20)]
    assert l7.get(ids[-1] + 1) is None and l7.get(-1) is None


def test_evicted_verdict_named_by_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(l7, "KEEP", 2)
    monkeypatch.setattr(l7, "RECORDS", {})
    first = l7.record(_rec(1))
    kept = [l7.record(_rec(i)) for i in (2, 3)]
    t = None  # (the text of an L7 verdict needs no tables)
    assert event_text(t, C.EV_L7_HTTP, 0, first, 200) == f"L7 proxy: request {first} (200)"
    assert event_text(t, C.EV_L7_HTTP, 0, kept[-1], 200) == \
        "L7 proxy: GET /3 allowed by policy shop/cnp ingress rule 0 (200)"
