"""``kemu.io.directio.DirectFile``: the same bytes as a plain file, with ``O_DIRECT`` or without,
through every way the staging buffer fills, and when a file system refuses ``O_DIRECT``."""

from __future__ import annotations

import errno
import fcntl
import os
import random

import numpy as np
import pytest

from kemu.io import directio
from kemu.io.directio import DirectFile
from kemu.io.pcapng import OUTBOUND, PcapngWriter

CHUNK = 3 * 4096  # small, so that the writes below cross many buffer boundaries


def _pieces(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 4095, 4096, 4097, CHUNK, CHUNK - 1, CHUNK + 1, 2 * CHUNK, 7]
    sizes += [rng.randrange(0, 3 * CHUNK) for _ in range(40)]
    rng.shuffle(sizes)
    return [rng.randbytes(n) for n in sizes]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_file_holds_exactly_what_was_written(tmp_path, direct, seed):
    pieces = _pieces(seed)
    path = tmp_path / "out.bin"
    with DirectFile(str(path), direct=direct, chunk=CHUNK) as f:
        for p in pieces:
            assert f.write(p) == len(p)
        if f.direct:  # the descriptor really bypasses the cache while it can
            assert fcntl.fcntl(f.fd, fcntl.F_GETFL) & os.O_DIRECT
    assert path.read_bytes() == b"".join(pieces)


@pytest.mark.parametrize("size", [0, 4096, CHUNK, 2 * CHUNK, 2 * CHUNK + 5])
def test_sizes_at_and_around_the_buffer(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    path = tmp_path / "out.bin"
    f = DirectFile(str(path), chunk=CHUNK)
    f.write(data)  # any buffer: a numpy array here
    f.close()
    f.close()  # no-op
    assert path.read_bytes() == data.tobytes()
    with pytest.raises(ValueError, match="closed"):
        f.write(b"x")


def _staged(f: DirectFile, a: np.ndarray) -> bool:
    return any(np.shares_memory(a, np.frombuffer(b, np.uint8)) for b in f._bufs)


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("seed", [5, 6, 7])
def test_bytes_laid_out_in_space_are_written_in_place(tmp_path, direct, seed):
    """space(n) then write of its first k bytes, mixed with plain writes, sizes across the
    chunk, the slack and beyond a whole buffer: the file holds exactly those bytes, and those
    that fit were made in the staging buffer itself (no copy)."""
    rng = random.Random(seed)
    path = tmp_path / "out.bin"
    want = []
    slack = 2 * 4096
    with DirectFile(str(path), direct=direct, chunk=CHUNK, slack=slack) as f:
        for _ in range(120):
            if rng.random() < 0.3:
                p = rng.randbytes(rng.randrange(0, 2 * CHUNK))
                f.write(p)
                want.append(p)
                continue
            n = rng.choice([0, 1, 4095, 4096, slack, slack + 1, CHUNK + slack, CHUNK + slack + 1,
                            rng.randrange(0, CHUNK + 2 * slack)])
            room = f.space(n)
            assert len(room) == n and room.dtype == np.uint8
            if 0 < n <= CHUNK + slack - 4095:  # room for it after at most 4095 carried bytes
                assert _staged(f, room)
            elif n > CHUNK + slack:
                assert not _staged(f, room)
            k = rng.randrange(0, n + 1)
            data = rng.randbytes(k)
            room[:k] = np.frombuffer(data, np.uint8)
            f.write(room[:k])
            want.append(data)
    assert path.read_bytes() == b"".join(want)


def test_discard_writes_nothing_more(tmp_path):
    path = tmp_path / "out.bin"
    f = DirectFile(str(path), chunk=CHUNK)
    f.write(b"a" * (CHUNK + 10))
    f.discard()
    # a full buffer handed to the writing thread may or may not have gone out; the tail not
    assert path.read_bytes() in (b"", b"a" * CHUNK)
    f.close()  # no-op after discard


def test_open_refused_falls_back_to_the_cache(tmp_path, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(directio.os, "open", no_direct)
    path = tmp_path / "out.bin"
    pieces = _pieces(4)
    with DirectFile(str(path), chunk=CHUNK) as f:
        assert not f.direct
        for p in pieces:
            f.write(p)
    assert path.read_bytes() == b"".join(pieces)


def test_write_refused_falls_back_to_the_cache(tmp_path, monkeypatch):
    real_write = os.write
    refused = []

    def no_direct(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(directio.os, "write", no_direct)
    path = tmp_path / "out.bin"
    pieces = _pieces(5)
    with DirectFile(str(path), chunk=CHUNK) as f:
        for p in pieces:
            f.write(p)
    assert path.read_bytes() == b"".join(pieces)
    assert len(refused) <= 1  # refused once (where O_DIRECT opened), then through the cache


def test_other_errors_are_not_swallowed(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(directio.os, "write", full)
    f = DirectFile(str(tmp_path / "out.bin"), chunk=CHUNK)
    with pytest.raises(OSError, match="No space"):  # met by the writing thread, raised here
        for _ in range(10):
            f.write(b"b" * CHUNK)
        f.close()
    f.discard()
    assert f.closed


def test_bad_chunk_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiples of 4096"):
        DirectFile(str(tmp_path / "x"), chunk=1000)
    with pytest.raises(ValueError, match="multiples of 4096"):
        DirectFile(str(tmp_path / "x"), slack=100)
    with pytest.raises(ValueError, match="buffers"):
        DirectFile(str(tmp_path / "x"), buffers=1)


@pytest.mark.parametrize("background", [False, True])
def test_pcapng_direct_or_not_gives_the_same_file(tmp_path, background):
    outs = []
    for direct in (False, True):
        rng = np.random.default_rng(7)
        path = tmp_path / f"{direct}.pcapng"
        with PcapngWriter(path, application="t", background=background, direct=direct) as w:
            a = w.add_interface("node1/eth0", "node node1")
            b = w.add_interface("ns/pod/eth0")
            for k in range(12_000):  # past one 8 MiB staging buffer
                frame = rng.integers(0, 256, int(rng.integers(14, 1515)), dtype=np.uint8)
                w.write_packet(a if k % 3 else b, 1_700_000_000_000_000_000 + k,
                               frame.tobytes(), flags=OUTBOUND if k % 2 else 0,
                               comment=f"hop {k % 17}" if k % 5 else None)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 8 << 20
    assert not [p for p in os.listdir(tmp_path) if ".part-" in p]
