"""The pcapng writer: the capture Wireshark opens, one interface per emulated device.

Owns: the bytes of kemu's pcapng output. One little-endian section: a section header block
naming the writing application (``shb_userappl``, optionally ``shb_hardware``, ``shb_os`` and a
comment), interface description blocks (``if_name``, ``if_description``, ``if_tsresol`` = 9,
that is nanoseconds), and enhanced packet blocks with the packet comment (``opt_comment``) and
the direction bits of ``epb_flags`` (:data:`INBOUND`, :data:`OUTBOUND`).

Invariants:

- Nothing appears under the final name until the file is complete: blocks go to
  ``<name>.part-<pid>`` beside it, which :meth:`PcapngWriter.close` renames over the final name
  and :meth:`PcapngWriter.abort` deletes (a ``with`` block aborts on any exception, including
  KeyboardInterrupt; a writer dropped without either is aborted when collected). An error of
  the system while writing (``ENOSPC``, ``EIO``, met here or on the writing threads) is raised
  as :class:`~kemu.errors.OutputError` naming the final file (``kemu.io.outputs``).
- :meth:`PcapngWriter.write_batch` writes exactly the bytes that :meth:`write_packet` would for
  the same packets, one by one; options come in code order (comment, then flags), a packet with
  neither has no options at all, and an empty comment is no comment.
- Output depends only on the calls made: no clock, host name or OS is written unless given.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from kemu.io.directio import DirectFile, next_item
from kemu.io.frames import copy_segments
from kemu.io.outputs import part_name, write_error

__all__ = ["INBOUND", "OUTBOUND", "PcapngWriter"]

INBOUND = 1
OUTBOUND = 2
"""Direction bits of ``epb_flags`` (``flags & 3``): 1 inbound, 2 outbound."""

_SHB, _IDB, _EPB = 0x0A0D0D0A, 1, 6
_OPT_COMMENT, _OPT_FLAGS = 1, 2
_SHB_HARDWARE, _SHB_OS, _SHB_USERAPPL = 2, 3, 4
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_END = b"\0\0\0\0"
_FLAGS_HEADER = _OPT_FLAGS | 4 << 16  # option code and length as one little-endian word
_BATCH = 1 << 16  # packets encoded per slice of write_batch
_U32 = np.dtype("<u4")


def _text(value: str) -> bytes:
    """UTF-8 bytes of an option string, cut at a character boundary to fit 65535 bytes."""
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 0xFFFF:
        raw = raw[:0xFFFF].decode("utf-8", "ignore").encode("utf-8")
    return raw


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    blen = len(body) + 12
    return struct.pack("<II", btype, blen) + body + struct.pack("<I", blen)


def encode_epbs(iface: np.ndarray, ts_ns: np.ndarray, buf: np.ndarray, offsets: np.ndarray,
                lengths: np.ndarray, flags: np.ndarray | None, cid: np.ndarray | None,
                words: np.ndarray, first: np.ndarray, size: np.ndarray,
                orig: np.ndarray | None = None) -> np.ndarray:
    """The EPBs of packets ``buf[offsets[i]:+lengths[i]]`` as one little-endian uint8 array.

    Comment ``cid[i]`` is the encoded option ``words[first[c]:+size[c]]`` (32-bit words; size
    0 for none); ``flags[i]`` (when not 0) becomes ``epb_flags``. Arguments are trusted: the
    callers check them.
    """
    data_words = (lengths + 3) >> 2
    comment_words = size[cid] if cid is not None else 0
    flag_words = np.where(flags != 0, 2, 0) if flags is not None else 0
    opt_words = comment_words + flag_words
    opt_words = opt_words + np.where(opt_words > 0, 1, 0)  # opt_endofopt
    block_words = 8 + data_words + opt_words
    ends = np.cumsum(block_words)
    w = ends - block_words  # first word of each block
    out32 = np.zeros(int(ends[-1]) if len(ends) else 0, dtype=_U32)
    blen = block_words * 4
    ts = ts_ns.view(np.uint64)
    out32[w] = _EPB
    out32[w + 1] = blen
    out32[w + 2] = iface
    out32[w + 3] = ts >> np.uint64(32)
    out32[w + 4] = ts & np.uint64(0xFFFFFFFF)
    out32[w + 5] = lengths
    out32[w + 6] = lengths if orig is None else orig
    out32[ends - 1] = blen
    out = out32.view(np.uint8)
    copy_segments(out, (w + 7) * 4, buf, offsets, lengths)
    at = w + 7 + data_words  # first option word
    if cid is not None:
        has = np.flatnonzero(cid > 0)
        if len(has):
            c = cid[has]
            copy_segments(out32, at[has], words, first[c], size[c])
            at = at + comment_words
    if flags is not None:
        has = np.flatnonzero(flags != 0)
        out32[at[has]] = _FLAGS_HEADER
        out32[at[has] + 1] = flags[has]
    return out


class _Scratch:
    """``space(n)`` for a file that has none of its own: one array, reused (grown when too
    small), so that blocks encoded batch after batch do not fault in fresh memory each time.
    What it gave is written (copied out) before it is asked again."""

    def __init__(self) -> None:
        self.buf = np.zeros(0, np.uint8)

    def __call__(self, n: int) -> np.ndarray:
        if len(self.buf) < n:
            self.buf = np.empty(max(n, 2 * len(self.buf)), np.uint8)
        return self.buf[:n]


Space = Callable[[int], np.ndarray]
"""``space(n)``: writable memory for the next ``n`` bytes of a file (see
:meth:`PcapngWriter.write_later`)."""


class _Drain:
    """A thread that writes queued blocks to the file, so that writing overlaps the work that
    makes the next ones (``write`` releases the GIL). At most ``depth`` blocks wait."""

    def __init__(self, f: BinaryIO | DirectFile, name: str, space: Space,
                 depth: int = 8) -> None:
        self.f = f
        self.space = space
        self.queue: queue.Queue[Any] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.dropping = False
        self.thread = threading.Thread(target=self._run, name=f"pcapng writer {name}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            data = next_item(self.queue)
            if data is None:
                return
            try:
                if callable(data):  # a job that encodes the blocks here (always run: it may
                    data = data(self.space)   # release what its caller waits for)
                if self.error is None and not self.dropping:
                    self.f.write(data)
            except BaseException as e:  # noqa: BLE001 - handed to the writing thread
                if self.error is None:
                    self.error = e

    def put(self, data: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(data)

    def finish(self, drop: bool = False) -> None:
        """Write (or, with ``drop``, discard) what is queued and stop the thread."""
        if self.thread.is_alive():
            self.dropping = self.dropping or drop
            self.queue.put(None)
            self.thread.join()
        if self.error is not None and not drop:
            raise self.error


def _discard(f: BinaryIO | DirectFile, tmp: str, drain: _Drain | None = None) -> None:
    try:
        if drain is not None:
            drain.finish(drop=True)
        f.discard() if isinstance(f, DirectFile) else f.close()
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


class PcapngWriter:
    """Writes one pcapng file atomically; usable as a context manager.

    >>> with PcapngWriter("out.pcapng") as w:           # doctest: +SKIP
    ...     eth0 = w.add_interface("node1/eth0", "node node1")
    ...     w.write_packet(eth0, 1_700_000_000_123_456_789, frame, flags=OUTBOUND,
    ...                    comment="route 10.244.2.0/24 via 172.18.0.3")
    """

    packets_written: int

    def __init__(self, path: str | os.PathLike[str], *, application: str = "kemu",
                 hardware: str = "", comment: str = "", os_name: str = "",
                 background: bool = False, direct: bool = False) -> None:
        self.path = os.fspath(path)
        name = os.path.basename(self.path)
        self._tmp = part_name(self.path)
        # direct: around the page cache where the file system allows (kemu.io.directio), for
        # files of gigabytes such as replay's
        try:
            self._f: BinaryIO | DirectFile = (
                DirectFile(self._tmp) if direct
                else open(self._tmp, "wb", buffering=1 << 20))  # noqa: SIM115
        except OSError as err:
            raise write_error(self.path, err) from None
        # where write_later's jobs encode: in the file's staging buffers when it has them
        self._space: Space = (self._f.space if isinstance(self._f, DirectFile)
                              else _Scratch())
        self._drain = _Drain(self._f, name, self._space) if background else None
        self._finalizer = weakref.finalize(self, _discard, self._f, self._tmp, self._drain)
        self._closed = False
        self._snaplens: list[int] = []
        self.packets_written = 0
        # Comment cache: text -> id; id 0 is "no comment". Encoded options, as words and bytes.
        self._comment_ids: dict[str | None, int] = {None: 0, "": 0}
        self._comment_opts: list[bytes] = [b""]
        self._comment_words = np.zeros(0, dtype=_U32)  # _comment_table(), rebuilt when stale
        self._comment_start = np.zeros(0, dtype=np.int64)
        self._comment_len = np.zeros(0, dtype=np.int64)
        options = b"".join(
            _option(code, _text(value))
            for code, value in ((_OPT_COMMENT, comment), (_SHB_HARDWARE, hardware),
                                (_SHB_OS, os_name), (_SHB_USERAPPL, application))
            if value
        )
        body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + options + (_END if options else b"")
        self._write(_block(_SHB, body))

    # -- blocks --------------------------------------------------------------------------------

    def _write(self, data: bytes | memoryview | np.ndarray) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        try:
            if self._drain is not None:
                self._drain.put(data)
            else:
                self._f.write(data)
        except OSError as err:
            raise write_error(self.path, err) from None

    def add_interface(self, name: str, description: str = "", linktype: int = 1,
                      snaplen: int = 262144) -> int:
        """Describe an interface (an IDB, nanosecond resolution); returns its id, 0, 1, ..."""
        if not 0 <= linktype <= 0xFFFF or not 0 <= snaplen <= 0xFFFFFFFF:
            raise ValueError(f"bad link type {linktype} or snaplen {snaplen}")
        options = b"".join(
            _option(code, value)
            for code, value in ((_IF_NAME, _text(name)), (_IF_DESCRIPTION, _text(description)),
                                (_IF_TSRESOL, b"\x09"))
            if value
        )
        self._write(_block(_IDB, struct.pack("<HHI", linktype, 0, snaplen) + options + _END))
        self._snaplens.append(snaplen)
        return len(self._snaplens) - 1

    def comment_id(self, comment: str) -> int:
        """The id of ``comment`` in the cache, encoding it on first sight (0: no comment)."""
        cid = self._comment_ids.get(comment)
        if cid is None:
            cid = len(self._comment_opts)
            self._comment_ids[comment] = cid
            self._comment_opts.append(_option(_OPT_COMMENT, _text(comment)))
        return cid

    def _comment_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every cached comment option as words: (all words, first word, word count) per id."""
        if len(self._comment_len) != len(self._comment_opts):
            sizes = np.array([len(o) >> 2 for o in self._comment_opts], dtype=np.int64)
            self._comment_words = np.frombuffer(b"".join(self._comment_opts), dtype=_U32)
            self._comment_start = np.cumsum(sizes) - sizes
            self._comment_len = sizes
        return self._comment_words, self._comment_start, self._comment_len

    def comment_options(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every cached comment as its encoded option: (bytes, first byte, byte count) per
        id, for :func:`kemu.io.hops.encode_hops`."""
        words, first, size = self._comment_table()
        return words.view(np.uint8), first * 4, size * 4

    def write_blocks(self, blocks: np.ndarray | bytes, packets: int) -> None:
        """Append ``packets`` enhanced packet blocks encoded elsewhere (``encode_hops``), for
        interfaces and comments of this writer. The array is not to be changed afterwards."""
        self._write(blocks)
        self.packets_written += packets

    def write_later(self, job: Callable[[Space], np.ndarray | bytes], packets: int) -> None:
        """Like :meth:`write_blocks` with the blocks that ``job(space)`` returns, called on
        the writer's thread when it has one (so that encoding overlaps the caller's work; the
        job runs even when the file is being dropped), else now. ``space(n)`` is writable
        memory for ``n`` bytes where the file wants them next: blocks the job encodes there
        and returns (a prefix of that array) are not copied again."""
        if self._drain is None:
            self.write_blocks(job(self._space), packets)
            return
        self._write(job)  # type: ignore[arg-type]
        self.packets_written += packets

    def write_packet(self, iface: int, ts_ns: int, data: bytes | memoryview, *, flags: int = 0,
                     comment: str | None = None, orig_len: int | None = None) -> None:
        """Write one packet (an EPB) seen at interface ``iface`` at ``ts_ns`` ns since 1970."""
        if not 0 <= iface < len(self._snaplens):
            raise ValueError(f"interface {iface} was not added")
        if not 0 <= ts_ns < 1 << 64:
            raise ValueError(f"time stamp {ts_ns} ns out of range")
        data = bytes(data)
        n = len(data)
        flags &= 0xFFFFFFFF
        opts = self._comment_opts[self.comment_id(comment)] if comment else b""
        if flags:
            opts += struct.pack("<HHI", _OPT_FLAGS, 4, flags)
        if opts:
            opts += _END
        pad = -n % 4
        blen = 32 + n + pad + len(opts)
        self._write(
            struct.pack("<7I", _EPB, blen, iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, n,
                        n if orig_len is None else orig_len)
            + data + b"\0" * pad + opts + struct.pack("<I", blen))
        self.packets_written += 1

    def write_batch(self, iface: np.ndarray, ts_ns: np.ndarray, buf: np.ndarray,
                    offsets: np.ndarray, lengths: np.ndarray, flags: np.ndarray | None = None,
                    comments: Sequence[str | None] | None = None, *,
                    orig_lengths: np.ndarray | None = None) -> None:
        """Write many packets at once: packet i is ``buf[offsets[i]:+lengths[i]]``.

        The same bytes as :meth:`write_packet` called for each; the blocks are laid out with
        numpy and comments are encoded once per distinct text.
        """
        iface = np.asarray(iface, dtype=np.int64)
        n = len(iface)
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        buf = np.asarray(buf).view(np.uint8).reshape(-1)
        arrays = [ts_ns, offsets, lengths]
        if flags is not None:
            flags = np.asarray(flags).astype(np.int64) & 0xFFFFFFFF
            arrays.append(flags)
        if orig_lengths is not None:
            orig_lengths = np.asarray(orig_lengths, dtype=np.int64)
            arrays.append(orig_lengths)
        if comments is not None and len(comments) != n or any(len(a) != n for a in arrays):
            raise ValueError("write_batch: arrays of different lengths")
        if n == 0:
            return
        if iface.min() < 0 or iface.max() >= len(self._snaplens):
            raise ValueError("write_batch: packet on an interface that was not added")
        if ts_ns.min() < 0:
            raise ValueError("write_batch: negative time stamp")
        if lengths.min() < 0 or offsets.min() < 0 or (offsets + lengths).max() > len(buf):
            raise ValueError("write_batch: frame outside buf")
        cid = self._comment_ids_of(comments) if comments is not None else None
        for lo in range(0, n, _BATCH):
            hi = min(n, lo + _BATCH)
            self._write(self._encode(
                iface[lo:hi], ts_ns[lo:hi], buf, offsets[lo:hi], lengths[lo:hi],
                None if flags is None else flags[lo:hi], None if cid is None else cid[lo:hi],
                None if orig_lengths is None else orig_lengths[lo:hi]))
            self.packets_written += hi - lo

    def _comment_ids_of(self, comments: Sequence[str | None]) -> np.ndarray:
        known = self._comment_ids
        for text in dict.fromkeys(comments):  # each distinct comment once, in C
            if text not in known:
                self.comment_id(text)  # type: ignore[arg-type]
        return np.fromiter(map(known.__getitem__, comments), dtype=np.int64, count=len(comments))

    def _encode(self, iface: np.ndarray, ts_ns: np.ndarray, buf: np.ndarray,
                offsets: np.ndarray, lengths: np.ndarray, flags: np.ndarray | None,
                cid: np.ndarray | None, orig: np.ndarray | None) -> np.ndarray:
        words, first, size = self._comment_table()
        return encode_epbs(iface, ts_ns, buf, offsets, lengths, flags, cid, words, first, size,
                           orig)

    # -- end -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish the file and move it to its final name (no-op when already closed)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._drain is not None:
                self._drain.finish()
            self._f.close()
            os.replace(self._tmp, self.path)
        except OSError as err:
            self._finalizer()
            raise write_error(self.path, err) from None
        except BaseException:
            self._finalizer()
            raise
        self._finalizer.detach()

    def abort(self) -> None:
        """Drop the file: delete the temporary file, leave the final name untouched."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
