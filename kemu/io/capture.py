"""Capture reading: classic pcap and pcapng files indexed into one frame buffer plus arrays.

Owns: parsing capture files (pcap in microsecond and nanosecond resolution, either byte order;
pcapng with several sections of either byte order, several interfaces, EPB, SPB and the obsolete
PB) into a :class:`Capture`, and the rules for damaged input.

Invariants of every :class:`Capture` this module returns:

- No Python object per packet: ``buf`` is one ``uint8`` array (for :func:`read_capture` the
  whole file, frames are never copied one by one) and every per-frame value lives in a numpy
  array of the same length; ``offsets[i] + lengths[i] <= len(buf)`` and ``lengths[i] > 0``.
- ``linktypes`` holds only members of :data:`SUPPORTED_LINKTYPES`; frames of other link types
  are left out and listed in ``damaged``.
- ``frame_numbers`` counts the records of the file from 1 as Wireshark does: every packet,
  including the damaged ones left out, and the few non-packet pcapng blocks Wireshark lists
  (custom blocks, systemd journal entries, sysdig events); numbers increase, with gaps.
- ``ts_ns`` is nanoseconds since the epoch (pcapng ``if_tsresol`` and ``if_tsoffset`` applied;
  SPBs, which carry no time stamp, get 0), within ``0 ..`` :data:`MAX_TS_NS`: a pcapng time
  stamp before 1970 or after 2106 (the span of a classic pcap's clock) is clamped to that range.

Bad input, decided the way Wireshark and tcpdump decide it: a file that cannot be read at all
raises :class:`~kemu.errors.CaptureError` (and nothing else ever escapes); a damaged record
inside a readable file becomes a :class:`Damage` entry, and reading goes on when the next record
can still be found reliably, else stops there. Damage reasons are short and stable:
``truncated record``, ``caplen above snaplen``, ``zero-length record``, ``bad block length``,
``block too short``, ``caplen past end of block``, ``undefined interface``,
``unsupported link type N``, ``bad section header``, ``unsupported pcapng version``. No header
value makes the reader allocate more than the file's size (or, for :func:`iter_capture`, more
than one chunk).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import BinaryIO

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kemu.errors import CaptureError
from kemu.io.compressed import decompressed
from kemu.io.frames import Capture, Damage, copy_segments
from kemu.io.linktypes import (
    SUPPORTED_DESCRIPTION,
    SUPPORTED_LINKTYPES,
    linktype_name,
    to_ethernet,
    unsupported_message,
)

__all__ = [
    "MAX_SNAPLEN",
    "MAX_TS_NS",
    "SUPPORTED_LINKTYPES",
    "Capture",
    "Damage",
    "copy_segments",
    "iter_capture",
    "read_capture",
    "to_ethernet",
]

MAX_SNAPLEN = 262144
"""Largest captured length accepted for one frame (Wireshark's limit for these link types)."""
MAX_TS_NS = (1 << 32) * 1_000_000_000 - 1
"""Latest time stamp of a frame (2106-02-07, the end of a classic pcap's 32-bit seconds).
pcapng time stamps can say more (64 bits of any resolution, a 64-bit offset); clamping them
here keeps every later sum of emulated times (answers a microsecond later, ...) in int64."""

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_SHB = 0x0A0D0D0A
_IDB, _PB, _SPB, _EPB = 1, 2, 3, 6
_MIN_BLOCK = {_PB: 32, _SPB: 16, _EPB: 32}
# Blocks that are not packets but that Wireshark lists as records (custom blocks, systemd
# journal entries, sysdig events): they take a frame number, silently.
_OTHER_RECORDS = frozenset({0x00000BAD, 0x40000BAD, 9, 0x204, 0x208, 0x216, 0x217, 0x221, 0x222})
_BAD = -1  # run kind of packet records found damaged while framing them
_DEFAULT_CHUNK_BYTES = 64 << 20
_INT32_MAX = 2**31 - 1


# -- the hot loops ----------------------------------------------------------------------------
# Walking records is sequential (each length says where the next one starts), so it is the
# one per-frame loop of reading. ``kemu._fastpath`` has compiled twins of these two functions;
# ``scanner()`` picks the active backend's.

def pcap_scan(w: memoryview, r: int, remaining: int, limit: int, big: bool
               ) -> tuple[array, int, bool]:
    """Offsets in ``w`` of up to ``remaining`` pcap records from ``r``, stopping before the
    first one whose header or data is cut by the end of ``w`` or whose caplen is above
    ``limit``; returns (offsets, where it stopped, whether ``remaining`` were found)."""
    caplen_at = struct.Struct(">I" if big else "<I").unpack_from
    end = len(w)
    found = array("q")
    append = found.append
    for _ in range(remaining):  # one record per turn
        q = r + 16
        if q > end:
            break
        c = caplen_at(w, r + 8)[0]
        if c > limit:
            break
        q += c
        if q > end:
            break
        append(r)
        r = q
    else:
        return found, r, True
    return found, r, False


def pcapng_scan(w: memoryview, r: int, remaining: int, kind: int, minlen: int, big: bool
                 ) -> tuple[array, int]:
    """Offsets in ``w`` of up to ``remaining`` pcapng blocks of type ``kind`` from ``r``,
    stopping before the first block of another type, with a length below ``minlen`` or not a
    multiple of 4, cut by the end of ``w`` or whose trailing length differs; returns
    (offsets, where it stopped)."""
    e = ">" if big else "<"
    head = struct.Struct(e + "II").unpack_from
    tail = struct.Struct(e + "I").unpack_from
    end = len(w)
    found = array("q")
    append = found.append
    for _ in range(remaining):  # one block per turn
        if r + 12 > end:
            break
        t, bl = head(w, r)
        if t != kind or bl < minlen or bl & 3:
            break
        q = r + bl
        if q > end or tail(w, q - 4)[0] != bl:
            break
        append(r)
        r = q
    return found, r


def scanners() -> dict[str, ModuleType]:
    """Backend name -> module with ``pcap_scan`` and ``pcapng_scan`` (this one: "python")."""
    from kemu._backend import twins

    return twins(__name__)


_scanner: ModuleType | None = None


def scanner() -> ModuleType:
    """The active backend's scanners (``kemu._backend.BACKEND``)."""
    global _scanner
    if _scanner is None:
        from kemu._backend import BACKEND

        _scanner = scanners()[BACKEND]
    return _scanner


@dataclass
class _Interface:
    linktype: int
    snap_limit: int
    tsresol: int  # the raw if_tsresol byte (6 = microseconds)
    tsoffset: int  # seconds


class _Parser:
    """Incremental indexer of one capture file.

    Reads a window of the file, indexes up to a number of frames in it and turns the index into
    a :class:`Capture` whose ``buf`` is that window. :func:`read_capture` uses one window holding
    the whole file; :func:`iter_capture` bounded ones.
    """

    def __init__(self, path: str, f: BinaryIO, size: int, reuse: int = 0) -> None:
        self.path, self.f, self.size = path, f, size
        self.pos = 0  # absolute offset of the next record or block to index
        self.frames = 0  # packet records met so far, kept or not
        self.done = False
        self.arr = np.zeros(0, dtype=np.uint8)  # the window of the file indexed now
        # windows read into these memories in turn (iter_capture's reuse_buffer), if any
        self.spares: list[np.ndarray | None] = [None] * reuse
        self.turn = 0
        self.win = memoryview(self.arr)  # the same bytes, for struct
        self.base = 0  # absolute offset of win[0]
        self.positions = array("q")  # per chunk: where each packet record starts, in win
        self.bad: dict[int, str] = {}  # per chunk: records found damaged while framing them
        self.stops: list[Damage] = []  # per chunk: damage that is not one packet record
        self.runs: list[tuple[int, int, str, tuple[int, ...]]] = []
        self._at_window_end, self._needed = False, 0
        head = self._read_at(0, 24)
        if not head:
            raise CaptureError(path, "empty file (not a pcap or pcapng capture)")
        magic = head[:4]
        if len(magic) < 4 and any(m.startswith(magic) for m in (*_PCAP_MAGICS, _PCAPNG_MAGIC)):
            raise CaptureError(path, f"truncated file header ({len(head)} bytes)", offset=0)
        if magic in _PCAP_MAGICS:
            self.format = "pcap"
            self._open_pcap(head, *_PCAP_MAGICS[magic])
        elif magic == _PCAPNG_MAGIC:
            self.format = "pcapng"
            self._open_pcapng()
        else:
            raise CaptureError(path, f"not a pcap or pcapng capture (magic {magic.hex()})",
                               offset=0)

    # -- file access ---------------------------------------------------------------------------

    def _read_at(self, pos: int, n: int) -> bytes:
        """Up to ``n`` bytes at absolute ``pos`` (from the window when it holds them)."""
        rel = pos - self.base
        if 0 <= rel and pos + n <= self.base + len(self.win):
            return self.win[rel : rel + n].tobytes()
        self.f.seek(pos)
        return self.f.read(max(0, min(n, self.size - pos)))

    def _load_window(self, start: int, n: int) -> None:
        n = max(0, min(n, self.size - start))
        k = self.turn % len(self.spares) if self.spares else -1
        self.turn += 1
        spare = self.spares[k] if k >= 0 else None
        if spare is not None and len(spare) >= n:
            arr = spare[:n]  # its pages are there already (new ones cost, on a VM more)
        else:
            arr = np.empty(n, dtype=np.uint8)
            if k >= 0:
                self.spares[k] = arr
        self.f.seek(start)
        got = self.f.readinto(memoryview(arr))
        if got != n:
            raise CaptureError(self.path, "file changed while being read", offset=start + got)
        self.arr, self.win, self.base = arr, memoryview(arr), start
        if start + n < self.size:  # the kernel reads the next window while this one is used
            _will_need(self.f, start + n, n)

    # -- headers -------------------------------------------------------------------------------

    def _open_pcap(self, head: bytes, endian: str, frac_mult: int) -> None:
        if len(head) < 24:
            raise CaptureError(self.path, f"truncated pcap file header ({len(head)} of 24 bytes)",
                               offset=0)
        major, minor, _zone, _sigfigs, snaplen, network = struct.unpack(endian + "HHiIII",
                                                                        head[4:24])
        if major != 2:
            raise CaptureError(self.path, f"unsupported pcap version {major}.{minor}", offset=4)
        linktype = network & 0xFFFF  # upper bits carry FCS information
        if linktype not in SUPPORTED_LINKTYPES:
            raise CaptureError(self.path, unsupported_message(linktype), offset=20)
        self.endian, self.frac_mult, self.linktype = endian, frac_mult, linktype
        self.snap_limit = snaplen if 0 < snaplen < MAX_SNAPLEN else MAX_SNAPLEN
        self.frac_limit = 1_000_000 if frac_mult == 1000 else 1_000_000_000
        self.pos = 24

    def _open_pcapng(self) -> None:
        self.interfaces: list[_Interface] = []
        self.section: list[int] = []  # global interface numbers of the current section
        self.endian = "<"
        problem = self._pcapng_block(0, first=True)
        if problem is not None:
            raise CaptureError(self.path, f"bad pcapng section header block: {problem}", offset=0)

    # -- chunks --------------------------------------------------------------------------------

    def chunk(self, max_frames: int, max_bytes: int | None) -> Capture:
        """Index up to ``max_frames`` frames from ``self.pos`` into a Capture."""
        if max_bytes is None:
            if self.base != 0 or len(self.win) != self.size:
                self._load_window(0, self.size)
        else:
            # Go on in the current window while a good part of it is left (chunks then share
            # it: their frames never overlap), else read the next window from here.
            left = self.base + len(self.win) - self.pos
            if self.pos < self.base or (left < max_bytes // 4
                                        and self.base + len(self.win) < self.size):
                self._load_window(self.pos, max_bytes)
        self.positions = array("q")
        self.bad = {}
        self.stops = []
        self.runs = []
        while not self.done and len(self.positions) < max_frames:
            before = (self.pos, len(self.positions))
            if self.format == "pcap":
                self._pcap_records(max_frames)
            else:
                self._pcapng_blocks(max_frames)
            if self._at_window_end:
                if not self.positions and self.base + len(self.win) < self.size:
                    # Nothing indexed yet: read a window from here, as large as the record.
                    self._load_window(self.pos, max(max_bytes or 0, self._needed - self.pos))
                    continue
                break
            if (self.pos, len(self.positions)) == before and not self.done:
                self._stop(self.pos, "unreadable record")  # never loop without progress
        if self.format == "pcap":
            cap = self._finish_pcap()
        else:
            cap = self._finish_pcapng()
        self.frames += len(self.positions)
        return cap

    def _window_short(self, needed: int) -> bool:
        """True (and remember it) when the window ends before ``needed`` but the file does not."""
        if needed <= self.base + len(self.win):
            return False
        self._at_window_end, self._needed = True, needed
        return True

    def _stop(self, pos: int, reason: str) -> None:
        self.stops.append(Damage(self.frames + len(self.positions) + 1, pos, reason))
        self.done = True

    # -- classic pcap --------------------------------------------------------------------------

    def _pcap_records(self, max_frames: int) -> None:
        self._at_window_end = False
        remaining = max_frames - len(self.positions)
        w, base = self.win, self.base
        caplen_at = struct.Struct(self.endian + "I").unpack_from
        limit = self.snap_limit
        found, r, finished = scanner().pcap_scan(w, self.pos - base, remaining, limit,
                                                 self.endian == ">")
        self.positions.frombytes(memoryview(found).cast("B"))
        if finished:
            self.pos = r + base
            return
        self.pos = p = r + base
        # The record at p stopped the hot loop: end of data, damage, or end of the window.
        if p == self.size:
            self.done = True
        elif p + 16 > self.size:
            self._stop(p, "truncated record")
        elif self._window_short(p + 16):
            pass
        else:
            c = caplen_at(w, r + 8)[0]
            nxt = p + 16 + c
            if c > limit:
                if c <= MAX_SNAPLEN and nxt <= self.size and self._pcap_plausible(nxt):
                    self.bad[len(self.positions)] = "caplen above snaplen"
                    self.positions.append(r)
                    self.pos = nxt
                else:
                    self._stop(p, "caplen above snaplen")
            elif nxt > self.size:
                self._stop(p, "truncated record")
            else:
                self._window_short(nxt)

    def _pcap_plausible(self, pos: int) -> bool:
        """Whether a record header that looks sane starts at ``pos`` (or the file ends there)."""
        head = self._read_at(pos, 16)
        if len(head) < 16:
            return True  # the end of the file: nothing left to misread
        _sec, frac, caplen, _orig = struct.unpack(self.endian + "IIII", head)
        return frac < self.frac_limit and caplen <= MAX_SNAPLEN

    def _finish_pcap(self) -> Capture:
        pos = np.frombuffer(self.positions, dtype=np.int64)
        n = len(pos)
        buf = self.arr
        words = _gather_words(buf, pos, 0, 4, self.endian)
        sec, frac, caplen, orig = words[:, 0], words[:, 1], words[:, 2], words[:, 3]
        keep = caplen > 0
        reasons: dict[int, str] = {int(i): "zero-length record" for i in np.flatnonzero(~keep)}
        for i, why in self.bad.items():
            keep[i] = False
            reasons[i] = why
        ts = sec.astype(np.int64) * 1_000_000_000 + frac.astype(np.int64) * self.frac_mult
        np.minimum(ts, MAX_TS_NS, out=ts)  # (a fraction above one second at the last second)
        damaged = [Damage(self.frames + i + 1, self.base + int(pos[i]), reasons[i])
                   for i in sorted(reasons)]
        sel = np.flatnonzero(keep) if reasons else slice(None)
        return Capture(
            path=self.path,
            buf=buf,
            offsets=(pos + 16)[sel],
            lengths=caplen[sel].astype(np.int32),
            orig_lengths=np.minimum(orig[sel], _INT32_MAX).astype(np.int32),
            ts_ns=ts[sel],
            linktypes=np.full(n, self.linktype, dtype=np.int32)[sel],
            frame_numbers=np.arange(self.frames + 1, self.frames + n + 1, dtype=np.int64)[sel],
            damaged=sorted(damaged + self.stops, key=_damage_order),
            format="pcap",
            file_offset=self.base,
        )

    # -- pcapng --------------------------------------------------------------------------------

    def _pcapng_blocks(self, max_frames: int) -> None:
        self._at_window_end = False
        w, base = self.win, self.base
        positions = self.positions
        while len(positions) < max_frames and not self.done and not self._at_window_end:
            p = self.pos
            if p == self.size:
                self.done = True
                return
            kind = self._pcapng_block(p)
            if kind is None:
                continue
            # A sound packet block of type `kind` opened a run: index the same blocks after it.
            found, r = scanner().pcapng_scan(w, self.pos - base, max_frames - len(positions),
                                             kind, _MIN_BLOCK[kind], self.endian == ">")
            positions.frombytes(memoryview(found).cast("B"))
            self.pos = r + base

    def _pcapng_block(self, p: int, first: bool = False) -> int | str | None:
        """Handle the block at ``p`` outside the hot loop.

        Returns the block type when it is a sound packet block (already indexed, and a new run
        opened for it), a problem string for a bad first section header, else None.
        """
        if not first:
            self._at_window_end = False
        if p + 12 > self.size:
            if first:
                return "truncated"
            self._stop(p, "truncated record")
            return None
        head = self._read_at(p, 12)
        btype = struct.unpack(self.endian + "I", head[:4])[0]
        if btype == _SHB:
            bom = head[8:12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                if first:
                    return f"byte-order magic {bom.hex()}"
                self._stop(p, "bad section header")
                return None
        else:
            endian = self.endian
        blen = struct.unpack(endian + "I", head[4:8])[0]
        problem = None
        if blen < 12 or blen & 3:
            problem = "bad block length"
        elif p + blen > self.size:
            problem = "truncated record"
        elif struct.unpack(endian + "I", self._read_at(p + blen - 4, 4))[0] != blen:
            problem = "bad block length"
        elif btype == _SHB and blen < 28:
            problem = "bad block length"
        if problem is not None:
            if first:
                return f"{problem} ({blen})"
            self._stop(p, problem)
            return None
        if btype == _SHB:
            major, minor = struct.unpack(endian + "HH", self._read_at(p + 12, 4))
            if major != 1:
                if first:
                    return f"unsupported pcapng version {major}.{minor}"
                self._stop(p, "unsupported pcapng version")
                return None
            self.endian, self.section = endian, []
        elif btype == _IDB:
            self._interface(p, blen)
        elif btype in _OTHER_RECORDS:
            self.bad[len(self.positions)] = ""  # numbered, not a frame and not damage
            self.runs.append((len(self.positions), _BAD, endian, ()))
            self.positions.append(p - self.base)
        elif btype in _MIN_BLOCK:
            if blen < _MIN_BLOCK[btype]:
                self.bad[len(self.positions)] = "block too short"
                self.runs.append((len(self.positions), _BAD, endian, ()))
                self.positions.append(p - self.base)
            elif self._window_short(p + blen):
                return None
            else:
                self.runs.append((len(self.positions), btype, endian, tuple(self.section)))
                self.positions.append(p - self.base)
                self.pos = p + blen
                return btype
        self.pos = p + blen
        return None

    def _interface(self, p: int, blen: int) -> None:
        body = self._read_at(p + 8, blen - 12)
        if len(body) < 8:
            self.stops.append(Damage(self.frames + len(self.positions) + 1, p, "block too short"))
            return
        e = self.endian
        linktype, _reserved, snaplen = struct.unpack_from(e + "HHI", body)
        tsresol, tsoffset = 6, 0
        at = 8
        while at + 4 <= len(body):
            code, olen = struct.unpack_from(e + "HH", body, at)
            value = body[at + 4 : at + 4 + olen]
            if code == 0 or len(value) < olen:
                break
            if code == 9 and olen == 1:
                tsresol = value[0]
            elif code == 14 and olen == 8:
                tsoffset = struct.unpack(e + "q", value)[0]
            at += 4 + olen + (-olen % 4)
        limit = snaplen if 0 < snaplen < MAX_SNAPLEN else MAX_SNAPLEN
        self.section.append(len(self.interfaces))
        self.interfaces.append(_Interface(linktype, limit, tsresol, tsoffset))

    def _finish_pcapng(self) -> Capture:
        pos = np.frombuffer(self.positions, dtype=np.int64)
        n = len(pos)
        buf = self.arr
        data = np.zeros(n, dtype=np.int64)
        caplen = np.zeros(n, dtype=np.int64)
        orig = np.zeros(n, dtype=np.int64)
        room = np.zeros(n, dtype=np.int64)  # bytes the block has for packet data
        gid = np.full(n, -1, dtype=np.int64)
        ts_raw = np.zeros(n, dtype=np.uint64)
        bounds = [r[0] for r in self.runs[1:]] + [n] * bool(self.runs)
        for (lo, kind, e, section), hi in zip(self.runs, bounds, strict=True):
            if kind == _BAD or hi == lo:
                continue
            p = pos[lo:hi]
            lookup = np.array(section + (-1,), dtype=np.int64)
            if kind == _SPB:
                words = _gather_words(buf, p, 4, 2, e)
                blen, olen = words[:, 0].astype(np.int64), words[:, 1].astype(np.int64)
                g = np.full(hi - lo, lookup[0])
                snap = self.interfaces[section[0]].snap_limit if section else 0
                caplen[lo:hi] = np.minimum(np.minimum(olen, blen - 16), snap)
                orig[lo:hi], room[lo:hi], data[lo:hi] = olen, blen - 16, p + 12
            else:
                words = _gather_words(buf, p, 4, 6, e)
                blen = words[:, 0].astype(np.int64)
                if kind == _EPB:
                    ifid = words[:, 1].astype(np.int64)
                else:  # PB: 16-bit interface id, then 16-bit drops count
                    ifid = _gather_words(buf, p, 8, 1, e, "u2")[:, 0].astype(np.int64)
                g = lookup[np.minimum(ifid, len(section))]
                high, low = words[:, 2].astype(np.uint64), words[:, 3].astype(np.uint64)
                ts_raw[lo:hi] = (high << np.uint64(32)) | low
                caplen[lo:hi], orig[lo:hi] = words[:, 4], words[:, 5]
                room[lo:hi], data[lo:hi] = blen - 32, p + 28
            gid[lo:hi] = g

        lts = np.array([i.linktype for i in self.interfaces] + [-1], dtype=np.int64)
        snaps = np.array([i.snap_limit for i in self.interfaces] + [0], dtype=np.int64)
        linktype = lts[gid]
        supported = np.isin(linktype, np.array(sorted(SUPPORTED_LINKTYPES)))
        checks = [
            (gid < 0, None),
            (~supported, None),
            (caplen > room, "caplen past end of block"),
            (caplen == 0, "zero-length record"),
            (caplen > snaps[gid], "caplen above snaplen"),
        ]
        keep = np.ones(n, dtype=bool)
        reasons = {i: why for i, why in self.bad.items() if why}
        keep[list(self.bad)] = False
        for mask, why in checks:
            hit = np.flatnonzero(mask & keep)
            if len(hit):
                keep[hit] = False
                for i in hit.tolist():
                    if why is not None:
                        reasons[i] = why
                    elif gid[i] < 0:
                        reasons[i] = "undefined interface"
                    else:
                        reasons[i] = f"unsupported link type {int(linktype[i])}"
        ts = self._timestamps(ts_raw, gid, keep)
        damaged = [Damage(self.frames + i + 1, self.base + int(pos[i]), reasons[i])
                   for i in sorted(reasons)]
        sel = np.flatnonzero(keep)
        return Capture(
            path=self.path,
            buf=buf,
            offsets=data[sel],
            lengths=caplen[sel].astype(np.int32),
            orig_lengths=np.minimum(orig[sel], _INT32_MAX).astype(np.int32),
            ts_ns=ts[sel],
            linktypes=linktype[sel].astype(np.int32),
            frame_numbers=np.arange(self.frames + 1, self.frames + n + 1, dtype=np.int64)[sel],
            damaged=sorted(damaged + self.stops, key=_damage_order),
            format="pcapng",
            file_offset=self.base,
        )

    def _timestamps(self, raw: np.ndarray, gid: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Raw pcapng time stamps to ns, interface by interface (grouped by resolution)."""
        ts = np.zeros(len(raw), dtype=np.int64)
        if not len(raw):
            return ts
        kinds: dict[tuple[int, int], list[int]] = {}
        for i, iface in enumerate(self.interfaces):
            kinds.setdefault((iface.tsresol, iface.tsoffset), []).append(i)
        if len(kinds) == 1:
            (resol, offset), _ = kinds.popitem()
            ts[:] = _raw_to_ns(raw, resol, offset)
        else:
            for (resol, offset), members in kinds.items():
                sel = np.flatnonzero(np.isin(gid, members) & keep)
                if len(sel):
                    ts[sel] = _raw_to_ns(raw[sel], resol, offset)
        return ts

    def no_supported_interface(self) -> bool:
        return self.format == "pcapng" and not any(
            i.linktype in SUPPORTED_LINKTYPES for i in self.interfaces)

    def refusal(self) -> CaptureError:
        found = sorted({i.linktype for i in self.interfaces})
        if not found:
            return CaptureError(self.path, "pcapng file describes no interface")
        names = ", ".join(f"{t} ({linktype_name(t)})" if linktype_name(t) else str(t)
                          for t in found)
        return CaptureError(self.path, f"no interface of a supported link type (found link "
                                       f"types {names}); {SUPPORTED_DESCRIPTION}")


def _damage_order(d: Damage) -> tuple[int, int]:
    return d.frame, d.offset


def _gather_words(buf: np.ndarray, pos: np.ndarray, start: int, count: int, endian: str,
                  kind: str = "u4") -> np.ndarray:
    """The ``count`` integers at ``pos + start`` of each record, as a (n, count) int64 array."""
    width = count * int(kind[1])
    if not len(pos):
        return np.zeros((0, count), dtype=np.int64)
    rows = sliding_window_view(buf, width)  # a view: row i is buf[i:i + width]
    return rows[pos + start].view(np.dtype(endian + kind)).astype(np.int64)


def _raw_to_ns(raw: np.ndarray, resol: int, offset_s: int) -> np.ndarray:
    """pcapng time stamp units (``if_tsresol`` byte ``resol``) to int64 nanoseconds, plus
    ``offset_s`` seconds, clamped to ``0 ..`` :data:`MAX_TS_NS` (never wrapping around)."""
    raw = raw.astype(np.uint64)
    giga = 1_000_000_000
    n = resol & 0x7F
    if not resol & 0x80:  # 10^-n seconds
        if n <= 9:
            ns = _times(raw, 10 ** (9 - n))
        elif n - 9 <= 19:
            ns = raw // np.uint64(10 ** (n - 9))
        else:
            ns = np.zeros_like(raw)
    elif n == 0:
        ns = _times(raw, giga)
    elif n <= 34:  # 2^-n seconds, exact: whole seconds plus the fraction
        whole = raw >> np.uint64(n)
        frac = raw & np.uint64((1 << n) - 1)
        ns = _times(whole, giga) + ((frac * np.uint64(giga)) >> np.uint64(n))
    else:
        whole = raw >> np.uint64(n) if n < 64 else np.zeros_like(raw)
        frac32 = (raw >> np.uint64(n - 32)) & np.uint64(0xFFFFFFFF) if n - 32 < 64 else whole
        ns = _times(whole, giga) + ((frac32 * np.uint64(giga)) >> np.uint64(32))
    out = np.minimum(ns, np.uint64(MAX_TS_NS)).astype(np.int64)
    if offset_s:  # (beyond 2^32 s either way every time stamp is clamped anyway)
        offset_s = max(-(1 << 32), min(offset_s, 1 << 32))
        out = np.clip(out + np.int64(offset_s) * np.int64(giga), 0, MAX_TS_NS)
    return out


def _times(a: np.ndarray, k: int) -> np.ndarray:
    """``a * k`` for uint64 ``a``, saturated at :data:`MAX_TS_NS` instead of wrapping."""
    return np.where(a > np.uint64(MAX_TS_NS // k), np.uint64(MAX_TS_NS), a * np.uint64(k))


_PARSE_ERRORS = (struct.error, ValueError, IndexError, OverflowError)


def _will_need(f: BinaryIO, offset: int, length: int) -> None:
    """Ask the kernel to read ``length`` bytes at ``offset`` ahead (no-op where it can't)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            advise(f.fileno(), offset, length, os.POSIX_FADV_WILLNEED)


def _open(path: str | os.PathLike[str], file: BinaryIO | None = None
          ) -> tuple[str, BinaryIO, int]:
    """(name, file, size) of the capture at ``path``, decompressed if it is compressed
    (``kemu.io.compressed``), or of ``file`` when given (its bytes; ``path`` names it)."""
    name = os.fspath(path)
    try:
        if file is not None:
            return name, file, os.fstat(file.fileno()).st_size
        f = open(name, "rb")  # noqa: SIM115 - closed by the callers
        f = decompressed(name, f)
        size = os.fstat(f.fileno()).st_size
    except OSError as err:
        raise CaptureError(name, f"cannot open: {err.strerror or err}") from None
    return name, f, size


def read_capture(path: str | os.PathLike[str]) -> Capture:
    """Index the whole capture at ``path``; ``buf`` is the file's bytes (decompressed, for a
    gzip, xz, bzip2 or zstd file: ``kemu.io.compressed``)."""
    name, f, size = _open(path)
    try:
        with f:
            parser = _Parser(name, f, size)
            cap = parser.chunk(sys.maxsize, None)
            if parser.no_supported_interface():
                raise parser.refusal()
            return cap
    except OSError as err:
        raise CaptureError(name, f"read error: {err.strerror or err}") from None
    except MemoryError:
        raise CaptureError(name, "capture too large for memory; use iter_capture") from None
    except _PARSE_ERRORS as err:  # a case the checks above missed: still the file's fault
        raise CaptureError(name, f"malformed capture ({err})") from None


def iter_capture(path: str | os.PathLike[str], chunk_frames: int = 262144, *,
                 chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
                 reuse_buffer: bool | int = False,
                 file: BinaryIO | None = None) -> Iterator[Capture]:
    """Index the capture at ``path`` chunk by chunk, for captures too large for memory.

    Each chunk holds at most ``chunk_frames`` frames and its ``buf`` is a window of the file of
    about ``chunk_bytes`` (more only when a single record is larger). Frame numbers continue
    across chunks; damage is reported with the chunk that met it (a chunk may hold no frame
    but only damage). Concatenating the chunks gives :func:`read_capture`'s result.

    With ``reuse_buffer`` windows are read into the same memory again and again: a chunk's
    ``buf`` holds its frames only until the next chunk is asked for (for a consumer done with
    each chunk before the next, as replay is). A number ``k`` instead of True: windows rotate
    through ``k`` memories, and a chunk's ``buf`` holds until the ``k``-th chunk after it is
    asked for (3 for a consumer one chunk behind a reader thread: see ``kemu.io.ahead``).

    A compressed capture is decompressed first (``kemu.io.compressed``). ``file``: read these
    bytes (a seekable binary file, left open) instead of opening ``path``, which then only
    names them in messages; replay passes a compressed capture decompressed once this way.
    """
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be positive")
    if reuse_buffer is not False and int(reuse_buffer) < 1:
        raise ValueError("reuse_buffer: True or a number of buffers >= 1")
    return _iter_chunks(path, chunk_frames, chunk_bytes, int(reuse_buffer), file)


def _iter_chunks(path: str | os.PathLike[str], chunk_frames: int, chunk_bytes: int,
                 buffers: int, file: BinaryIO | None = None) -> Iterator[Capture]:
    name, f, size = _open(path, file)
    pending: list[Damage] = []
    with f if file is None else contextlib.nullcontext(f):
        try:
            parser = _Parser(name, f, size, buffers)
            while not parser.done:
                cap = parser.chunk(chunk_frames, max(chunk_bytes, 1 << 16))
                if len(cap) == 0:
                    pending.extend(cap.damaged)
                    continue
                cap.damaged[:0] = pending
                pending = []
                yield cap
            if parser.no_supported_interface():
                raise parser.refusal()
        except OSError as err:
            raise CaptureError(name, f"read error: {err.strerror or err}") from None
        except MemoryError:
            raise CaptureError(name, "chunk too large for memory") from None
        except _PARSE_ERRORS as err:
            raise CaptureError(name, f"malformed capture ({err})") from None
    if pending:
        yield _empty(name, parser.format, pending)


def _empty(path: str, fmt: str, damaged: list[Damage]) -> Capture:
    i64, i32 = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    return Capture(path, np.zeros(0, dtype=np.uint8), i64, i32, i32.copy(), i64.copy(),
                   i32.copy(), i64.copy(), damaged, fmt, None)
