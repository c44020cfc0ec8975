"""Big sequential outputs written around the page cache (``O_DIRECT``), where the system has it.

Owns :class:`DirectFile`, the file object behind replay's pcapng (gigabytes written once, read
later, if ever, by another program). Written through the page cache, such a file costs the
writing process a copy into freshly allocated cache pages and then throttles it to the pace of
write-back; with ``O_DIRECT`` the device reads the bytes from the process's own buffer. On this
project's VM the same 2 GB went to disk at 262 MB/s through the cache and 1.1 to 1.3 GB/s
direct (``dd``, ``oflag=direct``).

How: bytes are gathered in a page-aligned staging buffer and written a whole buffer at a time
(multiples of 4 KiB, from aligned memory: what ``O_DIRECT`` asks); the tail, at :meth:`close`,
is written after ``O_DIRECT`` is switched off for the descriptor (``fcntl F_SETFL``), so the
file has exactly the bytes written. A producer that can lay its bytes out in place asks
:meth:`DirectFile.space` for the staging memory they will occupy and writes them there: the
bytes are then copied by nobody (replay's hop blocks, gigabytes, are encoded this way).

Where ``O_DIRECT`` is unknown (not Linux) or refused (some file systems refuse the ``open`` or
the first ``write``: ``EINVAL``), the same code writes through the cache: only the speed
differs, never the bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import queue
import threading
from typing import Any

import numpy as np

_ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def next_item(q: queue.Queue[Any]) -> Any:
    """The next item of ``q``, waiting in steps: a wake-up lost to an exception raised in the
    putting thread inside ``put`` (KeyboardInterrupt, kemu's SIGTERM/SIGHUP: they land at any
    point of the main thread) is not waited for forever, the item is taken at the next step.
    The writing threads of the outputs (this module's, ``kemu.io.pcapng``'s, the flow
    log's) wait for their work this way."""
    while True:
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            continue


class DirectFile:
    """A write-only binary file (``write``, ``close``, ``discard``) created or truncated at
    ``path``, written with ``O_DIRECT`` when ``direct`` and the system allow it.

    Full staging buffers go to a thread of their own that writes them (``O_DIRECT`` writes
    return when the device has the bytes) while the caller fills the next one: ``buffers``
    buffers, handed over once they hold ``chunk`` bytes, so that writing overlaps the work
    that makes the bytes. Each has ``slack`` bytes more (``chunk`` by default) for
    :meth:`space`: a block laid out in place may run past ``chunk``; the buffer then goes with
    its bytes up to the last whole 4 KiB, and the few after move to the next one."""

    def __init__(self, path: str, *, direct: bool = True, chunk: int = 8 << 20,
                 buffers: int = 3, slack: int | None = None) -> None:
        slack = chunk if slack is None else slack
        if chunk <= 0 or chunk % _ALIGN or buffers < 2 or slack < 0 or slack % _ALIGN:
            raise ValueError(f"chunk {chunk}, slack {slack}: multiples of {_ALIGN}, chunk "
                             "positive; buffers >= 2")
        self._chunk = chunk
        base = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.direct = bool(direct and _O_DIRECT)
        fd = -1
        if self.direct:
            try:
                fd = os.open(path, base | _O_DIRECT, 0o666)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.direct = False
        self.fd = fd if fd >= 0 else os.open(path, base, 0o666)
        # anonymous mappings: page-aligned, as O_DIRECT wants; filled through numpy, which
        # copies without holding the GIL
        self._bufs = [mmap.mmap(-1, chunk + slack) for _ in range(buffers)]
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        for b in self._bufs[1:]:
            self._free.put(np.frombuffer(b, np.uint8))
        self._view = np.frombuffer(self._bufs[0], np.uint8)
        self._fill = 0
        self._full: queue.Queue[tuple[np.ndarray, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._dropping = False
        self._thread = threading.Thread(target=self._run, name="kemu direct writer",
                                        daemon=True)
        self._thread.start()
        self.closed = False

    def write(self, data: Any) -> int:
        """Append ``data`` (any buffer); returns its length in bytes. Bytes already in place
        (a prefix of what :meth:`space` gave last) are taken where they are."""
        if self.closed:
            raise ValueError("write to a closed DirectFile")
        mv = np.frombuffer(memoryview(data).cast("B"), np.uint8)
        n, pos = len(mv), 0
        if n and n <= len(self._view) - self._fill and (
                mv.ctypes.data == self._view.ctypes.data + self._fill):
            self._fill += n  # laid out in place
            if self._fill >= self._chunk:
                self._hand_over()
            return n
        while pos < n:
            k = min(n - pos, self._chunk - self._fill)
            np.copyto(self._view[self._fill:self._fill + k], mv[pos:pos + k])
            self._fill += k
            pos += k
            if self._fill == self._chunk:
                self._hand_over()
        return n

    def space(self, n: int) -> np.ndarray:
        """Writable memory for the next ``n`` bytes of the file: :meth:`write` of the array
        (or of its first bytes) appends them without copying them. Any other write or
        ``space`` call first makes it stale. Beyond a buffer's size, a fresh array (that
        :meth:`write` copies)."""
        if self.closed:
            raise ValueError("space of a closed DirectFile")
        if n > len(self._view) - self._fill and self._fill >= _ALIGN:
            self._hand_over()  # what is there goes now: room for n in the next buffer
        if n > len(self._view) - self._fill:
            return np.empty(n, np.uint8)
        return self._view[self._fill:self._fill + n]

    def _hand_over(self) -> None:
        """The buffer's bytes up to the last whole 4 KiB to the writing thread (all of them
        when it is full); the rest, fewer than 4 KiB, to the start of the next free one."""
        if self._error is not None:
            raise self._error
        view, fill = self._view, self._fill
        whole = fill - fill % _ALIGN
        self._full.put((view, whole))
        self._view = self._free.get()
        self._fill = fill - whole
        if self._fill:  # the writing thread reads view[:whole] only
            np.copyto(self._view[:self._fill], view[whole:fill])
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            item = next_item(self._full)
            if item is None:
                return
            view, size = item
            try:
                if self._error is None and not self._dropping:
                    self._write_all(view[:size])
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                self._error = e.with_traceback(None)  # (its frames would hold the buffer)
            finally:
                self._free.put(view)

    def _write_all(self, view: np.ndarray) -> None:
        done = 0
        while done < len(view):
            try:
                done += os.write(self.fd, view[done:])
            except OSError as e:  # a file system that takes O_DIRECT opens but not writes
                if e.errno != errno.EINVAL or not self.direct or done:
                    raise
                self._cached()

    def _cached(self) -> None:
        """From now on through the page cache."""
        if self.direct:
            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
            self.direct = False

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._full.put(None)
            self._thread.join()

    def close(self) -> None:
        """Write what is left and close (no-op when closed)."""
        if self.closed:
            return
        try:
            self._stop()  # every full buffer written, in order
            if self._error is not None:
                raise self._error
            if self._fill:
                if self._fill % _ALIGN:
                    self._cached()  # the tail, of any length
                self._write_all(self._view[:self._fill])
        finally:
            self.discard()

    def discard(self) -> None:
        """Close without writing what is left (the caller deletes the file)."""
        if self.closed:
            return
        self.closed = True
        self._dropping = True
        try:
            self._stop()
            os.close(self.fd)
        finally:
            del self._view  # the arrays over the buffers go first
            while not self._free.empty():
                self._free.get()
            for b in self._bufs:
                with contextlib.suppress(BufferError):  # a view still held: freed with it
                    b.close()

    def __enter__(self) -> DirectFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
