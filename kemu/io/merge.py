"""The parts of a sharded replay merged into one output: a streaming k-way merge.

Owns reading a part (a pcapng written by one shard, or a flow log of JSON lines) as items
(enhanced packet blocks, lines) each tagged by a number from a side file of int64 (the
capture's frame number the item belongs to, ``kemu.frontend.shard``), and merging the parts
by tag into one stream. Tags increase (not strictly: a frame has several hops) within a part
and no tag is in two parts (a frame is in one shard), so the merged order is the one a single
process writes: by frame number, then each frame's items in their part's order.

The merge streams: each part is memory-mapped and read in windows of ``WINDOW`` items; the
items of every part with a tag up to the smallest "last tag of a window" among the parts
that have more are merged (a stable sort of the window's tags: the ``heapq.merge`` of the
parts, done a window at a time in numpy) and their bytes gathered into one write, a slice per
run of items that follow each other in one part (a frame's hops are one run). Memory is
bounded by the windows, not by the parts' sizes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

WINDOW = 1 << 16  # items read ahead per part
CHUNK = 16 << 20  # bytes read at once from a part
_EPB = 6


class _Part:
    """One part's items: start and length of each (found a window at a time), their tags,
    and the bytes from the first item not yet merged on, read in chunks (plain sequential
    reads: the kernel's read-ahead, no page faults per page)."""

    def __init__(self, data_path: str, tags_path: str, first: int,
                 scan: Callable[[np.ndarray, int, int], tuple[np.ndarray, int]]) -> None:
        self.size = os.path.getsize(data_path)
        self.f = open(data_path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self.f.seek(first)
        self.base = first       # file offset of buf[0]
        self.mem = np.empty(2 * CHUNK, np.uint8)
        self.hi = 0             # valid bytes in mem
        self.buf = self.mem[:0]
        ntags = os.path.getsize(tags_path) // 8
        self.tags = (np.memmap(tags_path, np.int64, mode="r") if ntags
                     else np.zeros(0, np.int64))
        self.path = data_path
        self.pos = first        # byte offset of the next item not yet scanned
        self.next = 0           # index of the next item not yet merged
        self.scan = scan
        self.starts = np.zeros(0, np.int64)  # scanned, not merged: starts and lengths
        self.lens = np.zeros(0, np.int64)

    def close(self) -> None:
        self.f.close()

    def _more(self) -> bool:
        """The next chunk read in; the bytes before the first item not yet merged dropped
        (moved to the front of the buffer, which grows only for a window that needs it)."""
        keep = (int(self.starts[0]) if len(self.starts) else self.pos) - self.base
        held = self.hi - keep
        if keep:
            self.mem[:held] = self.mem[keep:self.hi]
            self.base += keep
        if len(self.mem) < held + CHUNK:
            grown = np.empty(max(2 * len(self.mem), held + CHUNK), np.uint8)
            grown[:held] = self.mem[:held]
            self.mem = grown
        got = self.f.readinto(memoryview(self.mem)[held:held + CHUNK])
        self.hi = held + (got or 0)
        self.buf = self.mem[:self.hi]
        return bool(got)

    def fill(self) -> None:
        """Scan up to ``WINDOW`` items ahead (fewer at the end of the part)."""
        want = WINDOW - len(self.starts)
        while want > 0 and self.pos < self.size:
            starts, end = self.scan(self.buf, self.pos - self.base, want)
            if len(starts):
                starts = starts + self.base
                end += self.base
                self.starts = np.concatenate([self.starts, starts])
                self.lens = np.concatenate([self.lens, np.diff(np.append(starts, end))])
                want -= len(starts)
                self.pos = end
            if len(self.starts) and self.pos - int(self.starts[0]) >= CHUNK:
                break  # a window's worth of bytes held: merge those first
            if want > 0 and self.pos < self.size and not self._more():
                raise ValueError(f"{self.path}: unreadable item at byte {self.pos}")

    @property
    def at_end(self) -> bool:
        return self.pos >= self.size

    def window_tags(self) -> np.ndarray:
        n = len(self.starts)
        tags = np.asarray(self.tags[self.next:self.next + n])
        if len(tags) != n:
            raise ValueError(f"{self.path}: {self.next + n} items but {len(self.tags)} tags")
        return tags

    def take(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        starts, lens = self.starts[:k], self.lens[:k]
        self.starts, self.lens = self.starts[k:], self.lens[k:]
        self.next += k
        return starts, lens


def merge(parts: list[_Part], write: Callable[[bytes], None]) -> int:
    """Every item of ``parts`` in tag order, written a window at a time; returns how many."""
    written = 0
    while True:
        for p in parts:
            p.fill()
        live = [p for p in parts if len(p.starts)]
        if not live:
            break
        tags = [p.window_tags() for p in live]
        # the smallest tag a part that has more items could still bring
        bound = min((int(t[-1]) for p, t in zip(live, tags, strict=True) if not p.at_end),
                    default=None)
        chosen: list[tuple[_Part, np.ndarray, np.ndarray, np.ndarray]] = []
        for p, t in zip(live, tags, strict=True):
            k = len(t) if bound is None else int(np.searchsorted(t, bound, side="right"))
            if k:
                starts, lens = p.take(k)
                chosen.append((p, t[:k], starts, lens))
        all_tags = np.concatenate([c[1] for c in chosen])
        which = np.concatenate([np.full(len(c[1]), j, np.int32) for j, c in enumerate(chosen)])
        starts = np.concatenate([c[2] for c in chosen])
        ends = starts + np.concatenate([c[3] for c in chosen])
        order = np.argsort(all_tags, kind="stable")  # ties: within one part, its order
        w, st, en = which[order], starts[order], ends[order]
        # runs: items that follow each other in one part are one slice of it (a frame's
        # hops, a frame's records, frames of one shard in a row)
        first = np.ones(len(order), bool)
        first[1:] = (w[1:] != w[:-1]) | (st[1:] != en[:-1])
        at = np.flatnonzero(first)
        last = np.append(at[1:], len(order)) - 1
        views = [memoryview(c[0].buf) for c in chosen]
        base = np.array([c[0].base for c in chosen], np.int64)
        wa = w[at]
        out = b"".join([views[j][a:b] for j, a, b in
                        zip(wa.tolist(), (st[at] - base[wa]).tolist(),
                            (en[last] - base[wa]).tolist(), strict=True)])
        write(out)
        written += len(order)
    return written


def _scan_blocks(data: np.ndarray, pos: int, want: int) -> tuple[np.ndarray, int]:
    """Starts of up to ``want`` enhanced packet blocks from ``pos`` (little-endian, as
    ``kemu.io.pcapng`` writes them), and the byte after the last."""
    from kemu.io.capture import scanner

    starts, end = scanner().pcapng_scan(memoryview(data), pos, want, _EPB, 32, False)
    return np.asarray(starts, np.int64), int(end)


def _scan_lines(data: np.ndarray, pos: int, want: int) -> tuple[np.ndarray, int]:
    """Starts of up to ``want`` lines from ``pos`` and the byte after the last newline."""
    step = 1 << 22
    ends: list[np.ndarray] = []
    got = 0
    at = pos
    while got < want and at < len(data):
        nl = np.flatnonzero(data[at:at + step] == 10)[:want - got] + at + 1
        ends.append(nl)
        got += len(nl)
        at = int(nl[-1]) if len(nl) and got >= want else min(len(data), at + step)
    e = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    if not len(e):
        return e, pos
    starts = np.concatenate([[pos], e[:-1]]).astype(np.int64)
    return starts, int(e[-1])


def pcapng_body_start(path: str) -> int:
    """Byte offset of the first block after a pcapng's section header and interface
    blocks (where the packet blocks of a part begin)."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
        pos = 0
        while True:
            if pos + 8 > len(head):
                more = f.read(1 << 20)
                if not more:
                    return pos
                head += more
                continue
            btype = int.from_bytes(head[pos:pos + 4], "little")
            blen = int.from_bytes(head[pos + 4:pos + 8], "little")
            if btype == _EPB:
                return pos
            if blen < 12:
                raise ValueError(f"{path}: bad block length {blen} at byte {pos}")
            pos += blen


def merge_pcapng(parts: list[tuple[str, str]], write_blocks: Callable[[bytes, int], None]
                 ) -> int:
    """The packet blocks of the part pcapngs ``(path, tags path)`` in tag order, handed to
    ``write_blocks(blocks, count)`` (``PcapngWriter.write_blocks``); returns how many."""
    readers = [_Part(p, t, pcapng_body_start(p), _scan_blocks) for p, t in parts]
    before = [0]

    def write(out: bytes) -> None:
        n = sum(p.next for p in readers) - before[0]
        before[0] += n
        write_blocks(out, n)

    return _merged(readers, write)


def merge_lines(parts: list[tuple[str, str]], out: BinaryIO) -> int:
    """The lines of the part files ``(path, tags path)`` in tag order, written to ``out``;
    returns how many."""
    readers = [_Part(p, t, 0, _scan_lines) for p, t in parts]
    return _merged(readers, out.write)


def _merged(readers: list[_Part], write: Callable[[bytes], None]) -> int:
    try:
        return merge(readers, write)
    finally:
        for r in readers:
            r.close()
