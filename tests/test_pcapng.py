"""The pcapng writer (kemu.io.pcapng): Wireshark's tools read what it writes, as it was meant.

tshark and capinfos are the oracle for interfaces, comments, direction flags and nanosecond
time stamps; kemu's own reader and Scapy's read the files back; write_batch must write the same
bytes as write_packet; and no output ever appears half-written under the final name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, Ether
from scapy.utils import RawPcapNgReader

from kemu.io.capture import MAX_TS_NS, read_capture
from kemu.io.pcapng import INBOUND, OUTBOUND, PcapngWriter

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
needs_capinfos = pytest.mark.skipif(shutil.which("capinfos") is None,
                                    reason="capinfos not installed")

T0 = 1_700_000_000_123_456_789


def frame(i: int, size: int = 0) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src=f"10.244.1.{i % 250 + 1}", dst="10.96.0.10")
                 / UDP(sport=1000 + i, dport=80) / (b"p" * size))


INTERFACES = [
    ("node1/eth0", "node node1"),
    ("node1/cbr0", "bridge of node1"),
    ("default/web-0/eth0", "Pod default/web-0 (StatefulSet default/web)"),
]
COMMENTS = [
    "DNAT 10.96.0.10:80 -> 10.244.1.3:8080 svc default/web",
    None,
    "route 10.244.2.0/24 via 172.18.0.3",
    "DROP no endpoints",
    "",
    "ünïcödé ✓ comment",
]


def packets(n: int) -> list[tuple[int, int, bytes, int, str | None]]:
    """(iface, ts_ns, data, flags, comment) for n packets, every combination covered."""
    return [(i % 3, T0 + i * 1_000_001, frame(i, i % 7), [0, INBOUND, OUTBOUND][i % 3],
             COMMENTS[i % len(COMMENTS)]) for i in range(n)]


def write_sample(path: Path, n: int = 18) -> list[tuple[int, int, bytes, int, str | None]]:
    pkts = packets(n)
    with PcapngWriter(path, comment="kemu replay of test.pcap", hardware="test rig") as w:
        for name, desc in INTERFACES:
            w.add_interface(name, desc)
        for iface, ts, data, flags, comment in pkts:
            w.write_packet(iface, ts, data, flags=flags, comment=comment)
        assert w.packets_written == n
    return pkts


def comment_field() -> str:
    """tshark's name for the packet comment: frame.comment (4.x), pkt_comment before."""
    fields = subprocess.run(["tshark", "-G", "fields"], capture_output=True, text=True).stdout
    return "frame.comment" if "\tframe.comment\t" in fields else "pkt_comment"


@needs_tshark
def test_tshark_reads_interfaces_comments_flags_and_ns_times(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    pkts = write_sample(path)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|",
         "-e", "frame.interface_name", "-e", "frame.interface_description",
         "-e", comment_field(), "-e", "frame.packet_flags_direction", "-e", "frame.time_epoch"],
        capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in out.stdout.splitlines()]
    assert len(rows) == len(pkts)
    for (iface, ts, _data, flags, comment), row in zip(pkts, rows, strict=True):
        name, desc, text, direction, epoch = row
        assert (name, desc) == INTERFACES[iface]
        assert text == (comment or "")
        if flags:
            assert int(direction, 0) == flags
        else:
            assert direction in ("", "0x00000000", "0")
        assert epoch == f"{ts // 10**9}.{ts % 10**9:09d}"


@needs_capinfos
def test_capinfos_sees_section_and_interfaces(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    pkts = write_sample(path)
    out = subprocess.run(["capinfos", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert "pcapng" in out
    assert f"Number of packets:   {len(pkts)}" in out
    assert "nanoseconds (9)" in out
    assert "Capture application: kemu" in out
    assert "Capture hardware:    test rig" in out
    assert "Capture comment:     kemu replay of test.pcap" in out
    assert "Number of interfaces in file: 3" in out
    for name, desc in INTERFACES:
        assert f"Name = {name}" in out
        assert f"Description = {desc}" in out


def test_roundtrip_through_kemu_and_scapy_readers(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    pkts = write_sample(path)
    cap = read_capture(path)
    assert not cap.damaged and cap.format == "pcapng"
    assert [cap.frame(i) for i in range(len(cap))] == [p[2] for p in pkts]
    assert cap.ts_ns.tolist() == [p[1] for p in pkts]
    assert (cap.linktypes == 1).all()
    with RawPcapNgReader(str(path)) as reader:
        seen = list(reader)
    assert [data for data, _ in seen] == [p[2] for p in pkts]
    for (_i, ts, _d, flags, comment), (_data, meta) in zip(pkts, seen, strict=True):
        assert ((meta.tshigh << 32) | meta.tslow) * 10**9 // meta.tsresol == ts
        assert meta.tsresol == 10**9
        assert meta.direction == (flags or None)
        expect = [comment.encode()] if comment else None
        assert meta.comments == expect


def test_nanoseconds_exact_at_the_edges(tmp_path: Path) -> None:
    stamps = [0, 1, 999_999_999, T0, 2**32 - 1, 2**32, 2**63 - 1]
    path = tmp_path / "ts.pcapng"
    with PcapngWriter(path) as w:
        w.add_interface("a")
        for ts in stamps:
            w.write_packet(0, ts, frame(0))
    # the reader clamps what is past a classic pcap's clock (2106): kemu.io.capture.MAX_TS_NS
    assert read_capture(path).ts_ns.tolist() == [min(ts, MAX_TS_NS) for ts in stamps]


def test_orig_len_and_other_link_types(tmp_path: Path) -> None:
    path = tmp_path / "o.pcapng"
    raw = bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP())
    with PcapngWriter(path) as w:
        eth = w.add_interface("eth", snaplen=96)
        ip = w.add_interface("raw", linktype=101)
        w.write_packet(eth, 5, frame(1)[:40], orig_len=1514)
        w.write_packet(ip, 6, raw)
    cap = read_capture(path)
    assert cap.orig_lengths.tolist() == [1514, len(raw)]
    assert cap.lengths.tolist() == [40, len(raw)]
    assert cap.linktypes.tolist() == [1, 101]


def test_interface_added_between_packets(tmp_path: Path) -> None:
    path = tmp_path / "late.pcapng"
    with PcapngWriter(path) as w:
        assert w.add_interface("first") == 0
        w.write_packet(0, 1, frame(1))
        assert w.add_interface("second") == 1
        w.write_packet(1, 2, frame(2), comment="late")
        w.write_packet(0, 3, frame(3))
    cap = read_capture(path)
    assert len(cap) == 3 and not cap.damaged


def test_bad_calls_are_refused(tmp_path: Path) -> None:
    with PcapngWriter(tmp_path / "x.pcapng") as w:
        w.add_interface("a")
        with pytest.raises(ValueError):
            w.write_packet(1, 0, frame(0))
        with pytest.raises(ValueError):
            w.write_packet(0, -1, frame(0))
        with pytest.raises(ValueError):
            w.write_batch(np.array([3]), np.array([0]), np.zeros(60, np.uint8), np.array([0]),
                          np.array([60]))
        with pytest.raises(ValueError):
            w.write_batch(np.array([0]), np.array([0]), np.zeros(60, np.uint8), np.array([10]),
                          np.array([60]))
    with pytest.raises(ValueError):
        w.write_packet(0, 0, frame(0))  # closed


# -- atomic output ------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_nothing_under_final_name_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    w = PcapngWriter(path)
    w.add_interface("a")
    w.write_packet(0, 1, frame(1))
    assert not path.exists()
    assert leftovers(tmp_path) == [f"out.pcapng.part-{os.getpid()}"]
    w.close()
    assert leftovers(tmp_path) == ["out.pcapng"]
    w.close()  # a second close does nothing
    assert len(read_capture(path)) == 1


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_with_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    path = tmp_path / "out.pcapng"
    with pytest.raises(error), PcapngWriter(path) as w:
        w.add_interface("a")
        w.write_packet(0, 1, frame(1))
        raise error("interrupted")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("background", [False, True])
def test_a_write_error_names_the_file_and_leaves_nothing(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         background: bool) -> None:
    """ENOSPC met by the writing thread (direct file) or here: an OutputError naming the
    final file and the system's error; the writer's abort leaves nothing."""
    import errno

    from kemu.errors import OutputError
    from kemu.io import directio

    def full(self: object, view: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(directio.DirectFile, "_write_all", full)
    path = tmp_path / "out.pcapng"
    with pytest.raises(OutputError, match=r"out.pcapng: cannot write: No space left on device"):
        with PcapngWriter(path, background=background, direct=True) as w:
            w.add_interface("a")
            for i in range(2000):
                w.write_packet(0, i, frame(i, 1400))
    assert leftovers(tmp_path) == []


def test_abort_keeps_an_older_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    path.write_bytes(b"older output")
    w = PcapngWriter(path)
    w.add_interface("a")
    w.write_packet(0, 1, frame(1))
    w.abort()
    assert path.read_bytes() == b"older output"
    assert leftovers(tmp_path) == ["out.pcapng"]
    with PcapngWriter(path) as w:
        w.add_interface("a")
    assert path.read_bytes() != b"older output"
    assert leftovers(tmp_path) == ["out.pcapng"]


def test_writer_dropped_without_close_leaves_nothing(tmp_path: Path) -> None:
    w = PcapngWriter(tmp_path / "out.pcapng")
    w.add_interface("a")
    del w
    import gc

    gc.collect()
    assert leftovers(tmp_path) == []


# -- write_batch --------------------------------------------------------------------------------


def batch_arrays(pkts: list[tuple[int, int, bytes, int, str | None]]) -> dict:
    datas = [p[2] for p in pkts]
    lengths = np.array([len(d) for d in datas], dtype=np.int32)
    gap = 3  # frames not back to back in the buffer, as in a capture file
    offsets = np.cumsum(lengths + gap) - lengths
    buf = np.zeros(int(offsets[-1] + lengths[-1]) if pkts else 0, dtype=np.uint8)
    for off, d in zip(offsets.tolist(), datas, strict=True):
        buf[off : off + len(d)] = np.frombuffer(d, dtype=np.uint8)
    return {
        "iface": np.array([p[0] for p in pkts], dtype=np.int32),
        "ts_ns": np.array([p[1] for p in pkts], dtype=np.int64),
        "buf": buf,
        "offsets": offsets.astype(np.int64),
        "lengths": lengths,
        "flags": np.array([p[3] for p in pkts], dtype=np.uint32),
        "comments": [p[4] for p in pkts],
    }


def one_by_one(path: Path, pkts: list, n_ifaces: int = 3) -> bytes:
    with PcapngWriter(path) as w:
        for i in range(n_ifaces):
            w.add_interface(f"if{i}")
        for iface, ts, data, flags, comment in pkts:
            w.write_packet(iface, ts, data, flags=flags, comment=comment)
    return path.read_bytes()


def batched(path: Path, pkts: list, n_ifaces: int = 3, splits: int = 1) -> bytes:
    with PcapngWriter(path) as w:
        for i in range(n_ifaces):
            w.add_interface(f"if{i}")
        step = max(1, -(-len(pkts) // splits))
        for lo in range(0, len(pkts), step):
            w.write_batch(**batch_arrays(pkts[lo : lo + step]))
        assert w.packets_written == len(pkts)
    return path.read_bytes()


@pytest.mark.parametrize("splits", [1, 3])
def test_write_batch_equals_write_packet(tmp_path: Path, splits: int) -> None:
    pkts = packets(60)
    assert batched(tmp_path / "b.pcapng", pkts, splits=splits) == one_by_one(
        tmp_path / "p.pcapng", pkts)


def test_write_batch_without_flags_or_comments(tmp_path: Path) -> None:
    pkts = [(i % 2, T0 + i, frame(i, i), 0, None) for i in range(20)]
    arrays = batch_arrays(pkts)
    del arrays["flags"], arrays["comments"]
    path = tmp_path / "b.pcapng"
    with PcapngWriter(path) as w:
        w.add_interface("if0")
        w.add_interface("if1")
        w.add_interface("if2")
        w.write_batch(**arrays)
    assert path.read_bytes() == one_by_one(tmp_path / "p.pcapng", pkts)


def test_write_batch_many_distinct_comments_and_slices(tmp_path: Path) -> None:
    n = 70_000  # more than one internal slice
    frames = [frame(i, i % 5) for i in range(50)]
    pkts = [(i % 3, T0 + i, frames[i % 50], i % 4,
             f"flow {i % 1000}" if i % 5 else None) for i in range(n)]
    assert batched(tmp_path / "b.pcapng", pkts, splits=2) == one_by_one(
        tmp_path / "p.pcapng", pkts)
    cap = read_capture(tmp_path / "b.pcapng")
    assert len(cap) == n and cap.ts_ns.tolist() == [p[1] for p in pkts]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2**63 - 1), st.binary(max_size=70),
                          st.integers(0, 2**32 - 1),
                          st.one_of(st.none(), st.text(max_size=30))),
                min_size=1, max_size=40))
def test_write_batch_equals_write_packet_random(tmp_path: Path, pkts: list) -> None:
    assert batched(tmp_path / "b.pcapng", pkts, n_ifaces=2) == one_by_one(
        tmp_path / "p.pcapng", pkts, n_ifaces=2)
