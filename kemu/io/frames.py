"""A capture's frames in memory, and the byte copies made on them.

Owns the data types every capture-handling module shares: :class:`Capture` (a frame buffer
plus per-frame numpy arrays; what ``kemu.io.capture`` reads and ``kemu.io.linktypes``
converts) and :class:`Damage` (a record left out, and why), and :func:`copy_segments`, the
vectorised gather of byte segments from one buffer into another (used to convert link types,
to write pcapng blocks and captures). Reading and the rules for damaged input live in
``kemu.io.capture``; the invariants of a :class:`Capture` are stated there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Capture", "Damage", "copy_segments"]


@dataclass(frozen=True)
class Damage:
    """A record of the file kept out of the frame arrays, and why."""

    frame: int  # 1-based frame number (of the next frame, for blocks that are not packets)
    offset: int  # byte offset of the record (pcapng: of its block) in the file
    reason: str


@dataclass
class Capture:
    """Frames of a capture as one byte buffer plus per-frame arrays (see the module docstring)."""

    path: str
    buf: np.ndarray  # uint8; frames' bytes (may be the whole file)
    offsets: np.ndarray  # int64, start of each frame in buf
    lengths: np.ndarray  # int32, captured length
    orig_lengths: np.ndarray  # int32, length on the wire
    ts_ns: np.ndarray  # int64, nanoseconds since the epoch
    linktypes: np.ndarray  # int32, link type of each frame's interface
    frame_numbers: np.ndarray  # int64, 1-based frame number in the file
    damaged: list[Damage] = field(default_factory=list)
    format: str = "pcap"  # "pcap" | "pcapng"
    file_offset: int | None = 0  # file offset of buf[0] when buf holds the file's bytes

    def __len__(self) -> int:
        return len(self.offsets)

    def frame(self, i: int) -> bytes:
        """The captured bytes of frame ``i`` (an index into the arrays, not a frame number)."""
        off = int(self.offsets[i])
        return self.buf[off : off + int(self.lengths[i])].tobytes()


def copy_segments(dst: np.ndarray, dst_starts: np.ndarray, src: np.ndarray,
                  src_starts: np.ndarray, lengths: np.ndarray) -> None:
    """``dst[dst_starts[i]:+lengths[i]] = src[src_starts[i]:+lengths[i]]`` for every i, in numpy.

    Segments of one length are copied as rows of strided views (no per-byte index arrays);
    when lengths are too varied for that, in slices of a few MiB with per-element indices.
    The destination segments must not overlap.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return
    dst_starts = np.asarray(dst_starts, dtype=np.int64)
    src_starts = np.asarray(src_starts, dtype=np.int64)
    if lengths.min() == lengths.max():
        groups = [np.arange(n)]
    else:
        order = np.argsort(lengths, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1)
    if len(groups) <= max(16, n // 32):
        for g in groups:
            width = int(lengths[g[0]])
            if width:
                rows = sliding_window_view(src, width)[src_starts[g]]
                sliding_window_view(dst, width, writeable=True)[dst_starts[g]] = rows
        return
    ends = np.cumsum(lengths)
    step = 1 << 22
    lo = 0
    while lo < n:
        base = int(ends[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(ends, base + step, side="right")), lo + 1)
        seg = lengths[lo:hi]
        total = int(ends[hi - 1]) - base
        if total:
            firsts = ends[lo:hi] - seg - base  # start of each segment in the flat range
            flat = np.arange(total, dtype=np.int64)
            d = flat + np.repeat(dst_starts[lo:hi] - firsts, seg)
            s = flat + np.repeat(src_starts[lo:hi] - firsts, seg)
            dst[d] = src[s]
        lo = hi
