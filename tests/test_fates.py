"""Fates of replayed frames (``count_fates``, pure and compiled): against a brute-force
per-frame oracle on random outcomes, events and translated marks (``oc_nat``), as replay's
summary counts them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kemu.dataplane import codes as C
from kemu.frontend import placement as P

IMPLS = P.implementations()  # backend name -> module with count_fates
NOISE = P.NOISE
TRANSLATING = P.TRANSLATING
KINDS = [C.OUT_DELIVERED, C.OUT_DROPPED, C.OUT_LEFT, C.OUT_NEIGH]
REASONS = [C.DROP_NOT_LOCAL, C.DROP_OTHERHOST, C.DROP_SAME_PORT, 1, 2, 3, 7, -3]
EVENTS = [C.EV_DNAT, C.EV_SNAT, C.EV_UNDNAT, C.EV_ROUTE, C.EV_ENCAP, -1]


def oracle(n: int, outcomes: list[tuple[int, int, int]], events: list[tuple[int, int]]
           ) -> tuple[int, int, int, int, list[tuple[int, bool]]]:
    """One frame at a time, as the replay summary's rules say (see ``count_fates``)."""
    delivered = left = ignored = translated = 0
    drops = []
    for f in range(n):
        mine = [(k, r) for fr, k, r in outcomes if fr == f]
        if any(k == C.OUT_DELIVERED for k, _r in mine):
            delivered += 1
        elif any(k == C.OUT_LEFT for k, _r in mine):
            left += 1
        else:
            ends = [(r, k == C.OUT_NEIGH) for k, r in mine
                    if k == C.OUT_NEIGH or (k == C.OUT_DROPPED and not NOISE[r & 0xFFFF])]
            if ends:
                drops.append(ends[0])
            else:
                ignored += 1
        translated += any(fr == f and TRANSLATING[k & 0xFFFF] for fr, k in events)
    return delivered, left, ignored, translated, drops


def arrays(outcomes: list[tuple[int, int, int]], events: list[tuple[int, int]], spare: int
           ) -> tuple:
    """Results-shaped columns with ``spare`` unused entries after the counted ones."""
    oc = outcomes + [(0, C.OUT_DELIVERED, 0)] * spare
    ev = events + [(0, C.EV_DNAT)] * spare
    return (np.array([o[0] for o in oc], np.int32), np.array([o[1] for o in oc], np.uint8),
            np.array([o[2] for o in oc], np.int16), np.array([e[0] for e in ev], np.int32),
            np.array([e[1] for e in ev], np.int16))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 40), spare=st.integers(0, 3))
def test_fates_equal_the_per_frame_oracle(data: st.DataObject, n: int, spare: int) -> None:
    frame = st.integers(0, n - 1)
    outcomes = data.draw(st.lists(st.tuples(frame, st.sampled_from(KINDS),
                                            st.sampled_from(REASONS)), max_size=80))
    events = data.draw(st.lists(st.tuples(frame, st.sampled_from(EVENTS)), max_size=40))
    fr, kind, reason, ef, ek = arrays(outcomes, events, spare)
    want = oracle(n, outcomes, events)
    # outcomes marked translated (Results.oc_nat): counted as a translating event would be
    nat = data.draw(st.lists(st.booleans(), min_size=len(outcomes), max_size=len(outcomes)))
    marked = [(f, C.EV_DNAT) for (f, _k, _r), m in zip(outcomes, nat, strict=True) if m]
    want_nat = oracle(n, outcomes, events + marked)
    oc_nat = np.array(nat + [True] * spare, np.uint8)
    for name, mod in IMPLS.items():
        got = mod.count_fates(fr, kind, reason, len(outcomes), n, NOISE, ef, ek, len(events),
                              TRANSLATING)
        assert got == want, name
        got = mod.count_fates(fr, kind, reason, len(outcomes), n, NOISE, ef, ek, len(events),
                              TRANSLATING, oc_nat)
        assert got == want_nat, name


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_bad_counts_and_frames_are_refused(name: str) -> None:
    fr, kind, reason, ef, ek = arrays([(0, C.OUT_DELIVERED, 0), (5, C.OUT_LEFT, 0)],
                                      [(1, C.EV_DNAT)], 0)
    count = IMPLS[name].count_fates
    with pytest.raises(ValueError, match="beyond the arrays"):
        count(fr, kind, reason, 3, 6, NOISE, ef, ek, 1, TRANSLATING)
    with pytest.raises(ValueError, match="beyond the arrays"):
        count(fr, kind, reason, 2, 6, NOISE, ef, ek, 2, TRANSLATING)
    with pytest.raises(ValueError, match="outside 0..4"):
        count(fr, kind, reason, 2, 5, NOISE, ef, ek, 1, TRANSLATING)
    with pytest.raises(ValueError, match="outside 0..0"):
        count(fr, kind, reason, 1, 1, NOISE, ef, ek, 1, TRANSLATING)
    assert count(fr, kind, reason, 2, 6, NOISE, ef, ek, 1, TRANSLATING) == (1, 1, 4, 1, [])
    nat = np.array([0, 1], np.uint8)
    with pytest.raises(ValueError, match="beyond the arrays"):
        count(fr, kind, reason, 2, 6, NOISE, ef, ek, 0, TRANSLATING, nat[:1])
    assert count(fr, kind, reason, 2, 6, NOISE, ef, ek, 0, TRANSLATING, nat) == (1, 1, 4, 1, [])
    assert count(fr, kind, reason, 2, 6, NOISE, ef, ek, 1, TRANSLATING, nat) == (1, 1, 4, 2, [])
