"""Outputs: never one of the inputs, checked before the work, never left half-written.

Owns the rules every kemu command that writes files follows (``kemu replay -w/--flows``,
``kemu bench --json/--plot``, the Python API's ``replay``):

- :func:`check_outputs`, called before any input is read: no output is one of the inputs, by
  path or as the same file reached through a symbolic or hard link (resolved paths and
  ``(st_dev, st_ino)`` are compared); no two outputs are one file; each output's directory
  exists and takes a new file, found by creating and removing a probe file there (permission
  bits do not stop root, but a read-only, immutable or ``/proc`` file system does); the output
  is not a directory, nor anything else but a regular file (renaming a finished file over
  ``/dev/null`` would replace the device).
- :func:`part_name` and :class:`AtomicFile`: bytes go to ``NAME.part-PID`` beside ``NAME``,
  renamed over ``NAME`` when complete and removed on any failure, KeyboardInterrupt included.
  :class:`kemu.io.pcapng.PcapngWriter` writes its file the same way.
- :func:`write_error`: a failure while writing (``ENOSPC``, ``EIO``) as one
  :class:`~kemu.errors.OutputError` naming the file and the system's error.

A problem is an :class:`~kemu.errors.OutputError` (a :class:`~kemu.errors.KemuError`: the
command line prints one line and exits 2).
"""

from __future__ import annotations

import errno
import os
import stat
import weakref
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import IO, Any

from kemu.errors import OutputError
from kemu.io.directio import DirectFile

__all__ = ["AtomicFile", "check_outputs", "part_name", "write_error"]

PathLike = str | os.PathLike[str]


def part_name(path: PathLike) -> str:
    """Where ``path`` is written until complete: ``NAME.part-PID`` beside it."""
    folder, name = os.path.split(os.fspath(path))
    return os.path.join(folder, f"{name}.part-{os.getpid()}")


def write_error(path: PathLike, err: OSError) -> OutputError:
    """``err``, met while writing ``path``, as the error a user reads."""
    return OutputError(os.fspath(path), f"{os.fspath(path)}: cannot write: "
                       f"{err.strerror or err}", err.errno)


def _name(label: str, path: str) -> str:
    """How an output or input is named in messages: ``-w out.pcapng``, ``out=out.pcapng``."""
    return f"{label}{path}" if label.endswith("=") else f"{label} {path}"


def _identity(path: str) -> tuple[str, tuple[int, int] | None]:
    """(resolved path, (st_dev, st_ino) of the file it reaches, or None when none exists)."""
    try:
        st = os.stat(path)
        ino: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        ino = None
    return os.path.realpath(path), ino


def _same(a: str, b: str) -> str | None:
    """None when ``a`` and ``b`` are different files, else how they are one: ``""`` (the same
    path), ``"a symbolic link"`` or ``"a hard link"``."""
    (real_a, ino_a), (real_b, ino_b) = _identity(a), _identity(b)
    if os.path.abspath(a) == os.path.abspath(b):
        return ""
    if real_a == real_b:
        return "a symbolic link"
    if ino_a is not None and ino_a == ino_b:
        return "a hard link"
    return None


def _files(value: PathLike | Iterable[PathLike] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a regular file"


def _writable(label: str, path: str) -> None:
    """Raise when ``path`` cannot be written as a new file (see the module docstring)."""
    who = _name(label, path)
    if not path:
        raise OutputError(path, f"{label}: an empty file name")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:  # ENOTDIR (a file where a directory should be), ELOOP, EACCES
        if err.errno != errno.ENOTDIR:
            raise OutputError(path, f"{who}: {err.strerror or err}", err.errno) from None
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(path, f"{who}: is a directory; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(path, f"{who}: {_kind(st.st_mode)}; kemu writes its outputs as "
                          "regular files (renamed into place when complete)")
    folder = os.path.dirname(path) or "."
    if not os.path.exists(folder):
        raise OutputError(path, f"{who}: directory {folder} does not exist")
    if not os.path.isdir(folder):
        raise OutputError(path, f"{who}: {folder} is not a directory")
    # the only test that does not lie to root: make a file there (O_EXCL: a new one, no
    # tempfile module: start-up time)
    probe = os.path.join(folder, f".kemu-probe-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        why = ("the file system there takes no new files" if err.errno == errno.ENOENT
               else err.strerror or str(err))
        raise OutputError(path, f"{who}: cannot create a file in {folder}: {why}",
                          err.errno) from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(outputs: Mapping[str, PathLike | None],
                  inputs: Mapping[str, PathLike | Iterable[PathLike] | None] | None = None
                  ) -> None:
    """Refuse, before any work, outputs that would destroy an input or cannot be written.

    ``outputs``: option -> path (None: not written), e.g. ``{"-w": "out.pcapng",
    "--flows": None}``; an option ending in ``=`` (``"out="``) is glued to its path in
    messages. ``inputs``: each input as messages describe it -> its file or files, e.g.
    ``{"the input capture (-r in.pcap)": "in.pcap", "an input manifest (-f cluster)":
    ["cluster/web.yaml", ...]}`` (``-``, standard input, is no file).

    Raises :class:`~kemu.errors.OutputError` with one line:
    ``-w in.pcap is the input capture (-r in.pcap); refusing to overwrite it``.
    """
    given = [(label, os.fspath(p)) for label, p in outputs.items() if p is not None]
    for label, path in given:
        for what, value in (inputs or {}).items():
            for source in _files(value):
                if source == "-":
                    continue
                how = _same(path, source)
                if how is not None:
                    via = f", through {how}" if how else ""
                    raise OutputError(path, f"{_name(label, path)} is {what}{via}; refusing to "
                                      "overwrite it")
    for k, (label, path) in enumerate(given):
        for other, other_path in given[k + 1:]:
            if _same(path, other_path) is not None:
                raise OutputError(path, f"{_name(label, path)} and {_name(other, other_path)} "
                                  "are the same file; give each output a file of its own")
    for label, path in given:
        _writable(label, path)


def _remove(f: IO[Any] | DirectFile, tmp: str) -> None:
    try:
        f.discard() if isinstance(f, DirectFile) else f.close()
    except OSError:  # the last bytes would not go (ENOSPC): the file goes anyway
        pass
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


class AtomicFile:
    """A file written as ``NAME.part-PID`` and renamed over ``NAME`` by :meth:`commit`;
    :meth:`discard` (or leaving a ``with`` block by an exception, or dropping the object)
    removes it. Errors of the system while writing are :class:`~kemu.errors.OutputError`
    naming ``NAME``; the partial file is then removed at once.

    >>> with AtomicFile("flows.jsonl") as f:           # doctest: +SKIP
    ...     f.write(line)
    """

    def __init__(self, path: PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                 buffering: int = -1, direct: bool = False) -> None:
        self.path = os.fspath(path)
        self.tmp = part_name(self.path)
        try:
            if direct:  # bytes around the page cache (``DirectFile``), laid out in place
                self._f: IO[Any] | DirectFile = DirectFile(self.tmp)
                self.space = self._f.space
            else:
                self._f = open(self.tmp, mode, buffering=buffering,  # noqa: SIM115
                               encoding=None if "b" in mode else encoding)
        except OSError as err:
            raise write_error(self.path, err) from None
        self._finalizer = weakref.finalize(self, _remove, self._f, self.tmp)
        self.closed = False

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.discard()
            raise write_error(self.path, err) from None

    def commit(self) -> None:
        """Finish the file and move it to its final name (no-op when already closed)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._f.close()
            os.replace(self.tmp, self.path)
        except OSError as err:
            self._finalizer()
            raise write_error(self.path, err) from None
        except BaseException:
            self._finalizer()
            raise
        self._finalizer.detach()

    def discard(self) -> None:
        """Drop the file: delete the temporary file, leave the final name untouched."""
        self.closed = True
        self._finalizer()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
