"""Compressed captures, read as tshark reads them: gzip, xz, bzip2 and, when the ``zstandard``
package is installed, Zstandard, recognised by their magic bytes (never by the file's name).

Owns :func:`decompressed` and :func:`open_decompressed`: a capture file's bytes as a seekable
file for the reader (``kemu.io.capture``), whose windows and read-ahead need one. An
uncompressed file is handed over as it is: the same file, the same reads, the same speed as
before. A compressed one is decompressed once, on the calling thread (where Ctrl-C lands),
into an unnamed temporary file in ``$TMPDIR`` (``tempfile.TemporaryFile``: on Linux it never
has a name, so it is gone when closed, on an error, on an interrupt, even on SIGKILL), and the
reader reads that. Damaged or truncated compressed data is a
:class:`~kemu.errors.CaptureError` naming the file, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO

from kemu.errors import CaptureError

__all__ = ["MAGICS", "compression", "decompressed", "open_decompressed"]

MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
"""Leading bytes of each compressed format kemu reads."""

_CHUNK = 1 << 20


def compression(head: bytes) -> str | None:
    """The compression format whose magic ``head`` (a file's first bytes) starts with, or
    None."""
    for magic, kind in MAGICS:
        if head.startswith(magic):
            return kind
    return None


def decompressed(name: str, f: BinaryIO) -> BinaryIO:
    """``f`` itself (rewound) when its bytes are not compressed; else a temporary file holding
    them decompressed, positioned at 0 (``f`` is closed then). ``name`` is the file as the user
    gave it, for messages."""
    head = f.read(6)
    f.seek(0)
    kind = compression(head)
    if kind is None:
        return f
    with f:
        return _decompress(name, f, kind)


@contextlib.contextmanager
def open_decompressed(path: str | os.PathLike[str]) -> Iterator[BinaryIO | None]:
    """For a reader that goes over a capture several times or on another thread (replay): when
    the file at ``path`` is compressed, its decompressed bytes, made once here and removed on
    leaving the block; else None (the reader opens the file itself, as always). A file that
    cannot be opened also gives None: the reader reports it as it reports any."""
    f = _compressed_file(path)
    if f is None:
        yield None
        return
    out = decompressed(os.fspath(path), f)
    try:
        yield out
    finally:
        out.close()


def _compressed_file(path: str | os.PathLike[str]) -> BinaryIO | None:
    """The file at ``path``, open at 0, when it is a compressed regular file; else None (a pipe
    is no capture kemu reads: its bytes are left unread for the reader's message)."""
    try:
        f = open(os.fspath(path), "rb")  # noqa: SIM115 - returned, or closed here
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode) and compression(f.read(6)) is not None:
            f.seek(0)
            return f
    except OSError:
        pass
    f.close()
    return None


def _reader(name: str, f: BinaryIO, kind: str) -> tuple[Any, tuple[type[BaseException], ...]]:
    """A file object giving the decompressed bytes, and the exceptions that mean bad data
    (besides OSError without an errno: gzip's BadGzipFile, bz2's "Invalid data stream"; and
    EOFError: a stream cut short). Imported here: start-up time of uncompressed replays."""
    import lzma
    import zlib

    corrupt: tuple[type[BaseException], ...] = (zlib.error, lzma.LZMAError, ValueError)
    if kind == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=f, mode="rb"), corrupt
    if kind == "xz":
        return lzma.LZMAFile(f), corrupt
    if kind == "bzip2":
        import bz2

        return bz2.BZ2File(f), corrupt
    try:
        import zstandard
    except ImportError:
        raise CaptureError(name, "compressed with Zstandard: reading it needs the zstandard "
                           "package (pip install zstandard)") from None
    return (zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True),
            (*corrupt, zstandard.ZstdError))


def _decompress(name: str, f: BinaryIO, kind: str) -> BinaryIO:
    import tempfile

    where = tempfile.gettempdir()
    try:
        out = tempfile.TemporaryFile(prefix="kemu-capture-")  # noqa: SIM115 - the caller's
    except OSError as err:
        raise CaptureError(name, f"cannot decompress: no temporary file in {where}: "
                           f"{err.strerror or err}") from None
    try:
        reader, corrupt = _reader(name, f, kind)
        with reader as z:
            while True:
                try:
                    data = z.read(_CHUNK)
                except EOFError:
                    raise CaptureError(name, f"{kind} data is truncated (the file ends inside "
                                       "the compressed stream)") from None
                except OSError as err:
                    if err.errno is not None:  # the disk, not the data
                        raise CaptureError(name, f"read error: {err.strerror or err}") from None
                    raise CaptureError(name, f"{kind} data is corrupt ({err})") from None
                except corrupt as err:
                    raise CaptureError(name, f"{kind} data is corrupt ({err})") from None
                if not data:
                    break
                try:
                    out.write(data)
                except OSError as err:
                    raise CaptureError(name, f"cannot decompress into {where}: "
                                       f"{err.strerror or err}") from None
        try:
            out.flush()
        except OSError as err:
            raise CaptureError(name, f"cannot decompress into {where}: "
                               f"{err.strerror or err}") from None
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out
