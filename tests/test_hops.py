"""Hops as pcapng blocks (kemu.io.hops and its compiled twins in kemu._fastpath): comment ids
against a brute-force join of event texts, blocks against ``PcapngWriter.write_packet`` one
hop at a time, bad input refused with the hop named, identical results on both backends; the
writer's background thread."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kemu.io import hops
from kemu.io.capture import read_capture
from kemu.io.pcapng import PcapngWriter

IMPLS = hops.implementations()


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest):  # noqa: ANN201 - a module
    return IMPLS[request.param]


def text(ev: tuple[int, int, int, int]) -> str:
    return "ev{}({},{},{})".format(*ev)


class Namer:
    """What HopWriter does with new ids, on made-up texts."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.comments = [""]

    def add(self, new_events: list, new_comments: list) -> None:
        self.events += [text(e) for e in new_events]
        for parent, eid in new_comments:
            t = self.events[eid]
            self.comments.append(f"{self.comments[parent]}; {t}" if parent else t)


events_st = st.lists(st.tuples(st.integers(-1, 7), st.integers(0, 5), st.integers(-2, 3),
                               st.sampled_from([0, 1, -1, 0xFFFFFFFF, 0xFFFFFFFE, -(2**32) + 1]),
                               st.integers(0, 2)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.tuples(events_st, st.lists(st.booleans(), min_size=8, max_size=8)),
                        min_size=1, max_size=4),
       skip_kind=st.integers(0, 5))
def test_comment_ids_equal_a_brute_force_join(batches: list, skip_kind: int) -> None:
    skip = np.zeros(8, np.uint8)
    skip[skip_kind] = 1
    got: dict[str, list] = {}
    for name, mod in IMPLS.items():
        hc, namer, out = mod.HopComments(), Namer(), []
        for events, keep in batches:
            cur = np.zeros(8, np.int32)
            cols = list(zip(*events, strict=True)) if events else [[]] * 5
            arr = [np.array(cols[0], np.int32), np.array(cols[1], np.int16)] + [
                np.array(c, np.int64) for c in cols[2:]]
            new_ev, new_cm = hc.assign(*arr, len(events), np.array(keep, np.uint8), skip, cur)
            namer.add(new_ev, new_cm)
            out.append((cur.tolist(), new_ev, new_cm))
            for h in range(8):  # the oracle: this hop's kept events, joined in order
                want = "; ".join(text(e[1:]) for e in events
                                 if e[0] == h and keep[h] and not skip[e[1]])
                assert namer.comments[cur[h]] == want
        assert len(set(namer.comments)) == len(namer.comments)  # one id per distinct list
        got[name] = out
    assert len({repr(v) for v in got.values()}) == 1  # the same ids on both backends


def test_event_values_outside_the_key_are_refused(impl) -> None:  # noqa: ANN001
    for bad in (2**32, -(2**32), 2**40):
        with pytest.raises(ValueError, match=r"event 1 \(4, 0, .* outside"):
            impl.HopComments().assign(
                np.array([0, 0], np.int32), np.array([4, 4], np.int16),
                np.array([0, 0], np.int64), np.array([0, bad], np.int64),
                np.array([0, 0], np.int64), 2, np.ones(1, np.uint8), np.zeros(8, np.uint8),
                np.zeros(1, np.int32))


def test_short_arrays_are_refused(impl) -> None:  # noqa: ANN001
    z32, z16, z64 = np.zeros(2, np.int32), np.zeros(2, np.int16), np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="3 events"):
        impl.HopComments().assign(z32, z16, z64, z64, z64, 3, np.ones(2, np.uint8),
                                  np.zeros(8, np.uint8), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="keep is shorter"):
        impl.HopComments().assign(z32, z16, z64, z64, z64, 2, np.ones(1, np.uint8),
                                  np.zeros(8, np.uint8), np.zeros(2, np.int32))


# -- blocks -------------------------------------------------------------------------------------

def hop_batch(rng: np.random.Generator, n: int, n_frames: int) -> dict:
    frames = np.sort(rng.integers(0, n_frames, n)).astype(np.int32)
    lengths = rng.integers(0, 90, n).astype(np.int32)
    offsets = (np.cumsum(lengths + 5) - lengths).astype(np.int64)
    arena = rng.integers(0, 256, int(offsets[-1] + lengths[-1]) + 3 if n else 3).astype(np.uint8)
    return {"hop_frame": frames, "hop_iface": rng.integers(0, 6, n).astype(np.int32),
            "hop_dir": rng.integers(0, 3, n).astype(np.uint8), "hop_off": offsets,
            "hop_len": lengths, "keep": (rng.random(n) < 0.8).astype(np.uint8),
            "frame_ts": rng.integers(0, 2**62, n_frames).astype(np.int64),
            "arena": arena}


def writer_with(path: Path, comments: list[str]) -> PcapngWriter:
    w = PcapngWriter(path)
    for i in range(5):
        w.add_interface(f"if{i}")
    for c in comments:
        w.comment_id(c)
    return w


FILE_IF = np.array([0, 1, -1, 2, 3, 4], np.int32)  # interface 2 is not in the file
COMMENTS = ["route 10.0.0.0/8 via 1.2.3.4 dev eth0", "x", "é; DNAT 10.96.0.1:80 -> a:1", "abc"]


@pytest.mark.parametrize("seed", range(6))
def test_blocks_equal_write_packet_hop_by_hop(tmp_path: Path, impl, seed: int) -> None:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    b = hop_batch(rng, int(rng.integers(0, 300)), 40)
    n = len(b["hop_frame"])
    b["keep"][b["hop_iface"] == 2] = 0
    cid = rng.integers(0, len(COMMENTS) + 1, n).astype(np.int32)
    a = writer_with(tmp_path / "a.pcapng", COMMENTS)
    data, count = impl.encode_hops(b["hop_frame"], b["hop_iface"], b["hop_dir"], b["hop_off"],
                                   b["hop_len"], n, b["keep"], FILE_IF, b["frame_ts"], cid,
                                   *a.comment_options(), b["arena"])
    a.write_blocks(data, count)
    a.close()
    ref = writer_with(tmp_path / "b.pcapng", COMMENTS)
    for h in range(n):
        if b["keep"][h]:
            first = int(np.searchsorted(b["hop_frame"], b["hop_frame"][h]))
            o, ln = int(b["hop_off"][h]), int(b["hop_len"][h])
            ref.write_packet(int(FILE_IF[b["hop_iface"][h]]),
                             int(b["frame_ts"][b["hop_frame"][h]]) + h - first,
                             b["arena"][o:o + ln].tobytes(), flags=int(b["hop_dir"][h]),
                             comment=([None] + COMMENTS)[cid[h]])
    ref.close()
    assert count == int(b["keep"].sum()) == ref.packets_written
    assert (tmp_path / "a.pcapng").read_bytes() == (tmp_path / "b.pcapng").read_bytes()


def test_blocks_laid_out_in_given_space(tmp_path: Path, impl) -> None:  # noqa: ANN001
    """``space``: the same bytes, in the memory the caller gave (a writer's staging buffer),
    and a space that cannot hold them is refused."""
    rng = np.random.default_rng(11)
    b = hop_batch(rng, 200, 30)
    n = len(b["hop_frame"])
    b["keep"][b["hop_iface"] == 2] = 0
    cid = rng.integers(0, len(COMMENTS) + 1, n).astype(np.int32)
    w = writer_with(tmp_path / "a.pcapng", COMMENTS)
    args = (b["hop_frame"], b["hop_iface"], b["hop_dir"], b["hop_off"], b["hop_len"], n,
            b["keep"], FILE_IF, b["frame_ts"], cid, *w.comment_options(), b["arena"])
    want, count = impl.encode_hops(*args)
    room = np.full(len(want) + 100, 0xEE, np.uint8)
    asked = []
    got, count2 = impl.encode_hops(*args, lambda k: asked.append(k) or room)
    assert asked == [len(want)] and count2 == count
    assert np.shares_memory(got, room) and got.tobytes() == want.tobytes()
    assert (room[len(want):] == 0xEE).all()  # nothing written past the blocks
    for bad in (np.zeros(len(want) - 1, np.uint8), np.zeros(len(want), np.int32),
                np.zeros(2 * len(want), np.uint8)[::2], np.frombuffer(bytes(len(want)), np.uint8)):
        with pytest.raises(ValueError, match="space"):
            impl.encode_hops(*args, lambda k, bad=bad: bad)
    w.abort()


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b["hop_frame"].__setitem__(3, 99), "hop 3: frame 99 out of range or order"),
    (lambda b: b["hop_frame"].__setitem__(4, 0), "hop 4: frame 0 out of range or order"),
    (lambda b: b["hop_iface"].__setitem__(5, 2), "hop 5: interface 2 has no file interface"),
    (lambda b: b["hop_iface"].__setitem__(5, 9), "hop 5: interface 9 has no file interface"),
    (lambda b: b["hop_off"].__setitem__(6, 10**9), "hop 6: bytes outside the arena"),
    (lambda b: b["hop_len"].__setitem__(6, -1), "hop 6: bytes outside the arena"),
    (lambda b: b["cid"].__setitem__(7, 9), "hop 7: comment 9 unknown"),
    (lambda b: b["frame_ts"].__setitem__(8, -5), "hop 8: negative time stamp"),
])
def test_bad_hops_are_refused_with_the_hop_named(tmp_path: Path, impl, change,  # noqa: ANN001
                                                 message: str) -> None:
    b = hop_batch(np.random.default_rng(1), 10, 10)
    b["hop_frame"][:] = np.arange(10)
    b["hop_iface"][:] = 1
    b["keep"][:] = 1
    b["cid"] = np.zeros(10, np.int32)
    change(b)
    w = writer_with(tmp_path / "a.pcapng", COMMENTS)
    with pytest.raises(ValueError, match=message):
        impl.encode_hops(b["hop_frame"], b["hop_iface"], b["hop_dir"], b["hop_off"],
                         b["hop_len"], 10, b["keep"], FILE_IF, b["frame_ts"], b["cid"],
                         *w.comment_options(), b["arena"])
    w.abort()


def test_nothing_kept_is_nothing_written(impl) -> None:  # noqa: ANN001
    b = hop_batch(np.random.default_rng(2), 5, 5)
    z = np.zeros(0, np.int64)
    data, count = impl.encode_hops(b["hop_frame"], b["hop_iface"], b["hop_dir"], b["hop_off"],
                                   b["hop_len"], 5, np.zeros(5, np.uint8), FILE_IF,
                                   b["frame_ts"], np.zeros(5, np.int32), np.zeros(0, np.uint8),
                                   np.zeros(1, np.int64), np.zeros(1, np.int64), b["arena"])
    assert (len(data), count) == (0, 0)
    with pytest.raises(ValueError, match="6 hops"):
        impl.encode_hops(*[b[k] for k in ("hop_frame", "hop_iface", "hop_dir", "hop_off",
                                          "hop_len")], 6, b["keep"], FILE_IF, b["frame_ts"],
                         np.zeros(5, np.int32), np.zeros(0, np.uint8), z, z, b["arena"])


# -- the writer's thread ---------------------------------------------------------------------

def test_background_writer_writes_the_same_file(tmp_path: Path) -> None:
    files = []
    for bg in (False, True):
        path = tmp_path / f"{bg}.pcapng"
        with PcapngWriter(path, background=bg) as w:
            w.add_interface("a")
            for k in range(3000):
                w.write_packet(0, k, bytes([k & 0xFF]) * (k % 70 + 1), comment=f"c{k % 7}")
        files.append(path.read_bytes())
    assert files[0] == files[1]
    assert len(read_capture(tmp_path / "True.pcapng")) == 3000


def test_background_writer_aborts_and_reports_errors(tmp_path: Path) -> None:
    w = PcapngWriter(tmp_path / "out.pcapng", background=True)
    w.add_interface("a")
    w.write_packet(0, 1, b"x" * 60)
    w.abort()
    assert os.listdir(tmp_path) == []
    w = PcapngWriter(tmp_path / "full.pcapng", background=True)
    w.add_interface("a")
    w._f.close()  # the disk goes away under the thread  # noqa: SLF001
    w.write_packet(0, 1, b"x" * 60)
    with pytest.raises(ValueError, match="closed file"):
        for _ in range(20):  # the error surfaces on a later write or at close
            w.write_packet(0, 1, b"x" * 60)
        w.close()
    assert not (tmp_path / "full.pcapng").exists()
    w.abort()
    assert os.listdir(tmp_path) == []
