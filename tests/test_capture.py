"""Capture reading (kemu.io.capture) and link-type conversion (kemu.io.linktypes).

Files are crafted with Scapy (wrpcap, wrpcapng) or byte by byte with struct (byte orders,
nanosecond pcap, several pcapng sections, mixed interfaces, damage); Scapy's raw readers are the
oracle for bytes, lengths and time stamps, and Scapy dissects the converted Ethernet frames.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, Ether
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Loopback
from scapy.utils import RawPcapReader, wrpcap, wrpcapng

from kemu.errors import CaptureError
from kemu.io.ahead import ahead
from kemu.io.capture import (
    MAX_SNAPLEN,
    MAX_TS_NS,
    SUPPORTED_LINKTYPES,
    Capture,
    Damage,
    iter_capture,
    read_capture,
    to_ethernet,
)
from kemu.io.compressed import open_decompressed

# -- builders ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _each_scanner(capture_scanner: str) -> str:
    """Every test here runs with the compiled and the pure record scanners."""
    return capture_scanner


def pcap_file(records: list[tuple[int, bytes] | tuple[int, bytes, int]], *, endian: str = "<",
              ns: bool = False, linktype: int = 1, snaplen: int = 65535) -> bytes:
    """A classic pcap; each record is (ts_ns, data[, orig_len])."""
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        ts, data = rec[0], rec[1]
        orig = rec[2] if len(rec) > 2 else len(data)  # type: ignore[misc]
        frac = ts % 10**9 if ns else ts % 10**9 // 1000
        out.append(struct.pack(endian + "IIII", ts // 10**9, frac, len(data), orig) + data)
    return b"".join(out)


def pcap_record(endian: str, sec: int, frac: int, caplen: int, orig: int, data: bytes) -> bytes:
    return struct.pack(endian + "IIII", sec, frac, caplen, orig) + data


def block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    blen = len(body) + 12
    return struct.pack(endian + "II", btype, blen) + body + struct.pack(endian + "I", blen)


def option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(endian: str = "<", major: int = 1) -> bytes:
    return block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, major, 0, -1))


def idb(endian: str = "<", linktype: int = 1, snaplen: int = 0, tsresol: int | None = None,
        tsoffset: int | None = None, name: str = "") -> bytes:
    opts = b""
    if name:
        opts += option(endian, 2, name.encode())
    if tsresol is not None:
        opts += option(endian, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(endian, 14, struct.pack(endian + "q", tsoffset))
    if opts:
        opts += b"\0\0\0\0"
    return block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts)


def epb(endian: str, iface: int, ts: int, data: bytes, orig: int | None = None,
        caplen: int | None = None) -> bytes:
    head = struct.pack(endian + "5I", iface, ts >> 32, ts & 0xFFFFFFFF,
                       len(data) if caplen is None else caplen,
                       len(data) if orig is None else orig)
    return block(endian, 6, head + data)


def spb(endian: str, data: bytes, orig: int | None = None) -> bytes:
    return block(endian, 3, struct.pack(endian + "I", len(data) if orig is None else orig) + data)


def pb(endian: str, iface: int, ts: int, data: bytes) -> bytes:
    head = struct.pack(endian + "HH4I", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data),
                       len(data))
    return block(endian, 2, head + data)


def frames_of(cap: Capture) -> list[bytes]:
    return [cap.frame(i) for i in range(len(cap))]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def udp(i: int, size: int = 0) -> bytes:
    pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
           / IP(src=f"10.0.{i // 250}.{i % 250 + 1}", dst="10.96.0.10")
           / UDP(sport=1024 + i, dport=53) / (b"q" * size))
    return bytes(pkt)


def check_consistent(cap: Capture) -> None:
    n = len(cap)
    for arr in (cap.offsets, cap.lengths, cap.orig_lengths, cap.ts_ns, cap.linktypes,
                cap.frame_numbers):
        assert len(arr) == n
    assert cap.buf.dtype == np.uint8
    assert cap.offsets.dtype == np.int64 and cap.lengths.dtype == np.int32
    assert cap.orig_lengths.dtype == np.int32 and cap.ts_ns.dtype == np.int64
    assert cap.linktypes.dtype == np.int32 and cap.frame_numbers.dtype == np.int64
    if n:
        assert (cap.lengths > 0).all()
        assert (cap.offsets >= 0).all()
        assert int((cap.offsets + cap.lengths).max()) <= len(cap.buf)
        assert (np.diff(cap.frame_numbers) > 0).all() and cap.frame_numbers[0] >= 1
        assert set(cap.linktypes.tolist()) <= SUPPORTED_LINKTYPES


def oracle(path: Path) -> list[tuple[bytes, int, int]]:
    """(bytes, wire length, ts in ns) of every packet, as Scapy's raw readers see them."""
    out = []
    with RawPcapReader(str(path)) as reader:
        nano = getattr(reader, "nano", False)
        for data, meta in reader:
            if hasattr(meta, "tshigh"):
                raw = (meta.tshigh << 32) | meta.tslow
                ts = raw * 10**9 // meta.tsresol
            else:
                ts = meta.sec * 10**9 + meta.usec * (1 if nano else 1000)
            out.append((data, meta.wirelen, ts))
    return out


def assert_matches_oracle(cap: Capture, path: Path) -> None:
    expected = oracle(path)
    assert frames_of(cap) == [e[0] for e in expected]
    assert cap.orig_lengths.tolist() == [e[1] for e in expected]
    assert cap.lengths.tolist() == [len(e[0]) for e in expected]
    assert cap.ts_ns.tolist() == [e[2] for e in expected]
    assert cap.frame_numbers.tolist() == list(range(1, len(expected) + 1))


# -- well-formed files against the oracle ---------------------------------------------------------


@pytest.fixture
def packets() -> list:
    pkts = []
    for i in range(40):
        p = Ether(bytes(Ether() / IP(src=f"10.1.0.{i + 1}", dst="10.2.0.1") / TCP(dport=80)
                        / (b"x" * (i * 7))))
        p.time = 1_700_000_000 + i * 0.013 + 0.000_001
        pkts.append(p)
    return pkts


def test_scapy_pcap_matches_scapy_reader(tmp_path: Path, packets: list) -> None:
    path = tmp_path / "a.pcap"
    wrpcap(str(path), packets)
    cap = read_capture(path)
    check_consistent(cap)
    assert cap.format == "pcap" and not cap.damaged
    assert (cap.linktypes == 1).all()
    assert_matches_oracle(cap, path)
    assert frames_of(cap) == [bytes(p) for p in packets]


def test_scapy_pcapng_matches_scapy_reader(tmp_path: Path, packets: list) -> None:
    path = tmp_path / "a.pcapng"
    wrpcapng(str(path), packets)
    cap = read_capture(path)
    check_consistent(cap)
    assert cap.format == "pcapng" and not cap.damaged
    assert_matches_oracle(cap, path)
    assert frames_of(cap) == [bytes(p) for p in packets]


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("ns", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, ns: bool) -> None:
    records = [(1_700_000_000_000_000_000 + i * 1_234_567_891, udp(i, i), 1000 + i)
               for i in range(25)]
    path = write(tmp_path, "o.pcap", pcap_file(records, endian=endian, ns=ns))
    cap = read_capture(path)
    check_consistent(cap)
    assert_matches_oracle(cap, path)
    expect_ts = [ts if ns else ts // 1000 * 1000 for ts, _, _ in records]
    assert cap.ts_ns.tolist() == expect_ts
    assert frames_of(cap) == [r[1] for r in records]
    assert cap.orig_lengths.tolist() == [r[2] for r in records]
    # The frame buffer is the file itself: offsets point just past each record header.
    assert cap.offsets[0] == 24 + 16 and len(cap.buf) == path.stat().st_size


def test_pcapng_sections_interfaces_resolutions(tmp_path: Path) -> None:
    a, b, c, d, e = (udp(i, i) for i in range(5))
    sll = bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\xaa\xbb\xcc\xdd\xee",
                            proto=0x0800) / IP(src="10.3.0.1", dst="10.3.0.2") / UDP())
    t0 = 1_700_000_000
    data = b"".join([
        shb("<"),
        idb("<", 1),  # default resolution: microseconds
        idb("<", 1, tsresol=9, name="ns"),
        idb("<", 1, tsresol=0x80 | 20, tsoffset=100),  # 2^-20 s units, +100 s
        block("<", 0x00000BAD, b"custom block, skipped"),
        block("<", 4, b"\0\0\0\0"),  # an empty name resolution block, skipped
        epb("<", 0, t0 * 10**6 + 123456, a),
        epb("<", 1, t0 * 10**9 + 987654321, b, orig=1500),
        epb("<", 2, (t0 << 20) + (1 << 19), c),
        block("<", 5, struct.pack("<III", 0, 0, 0)),  # an interface statistics block, skipped
        shb(">"),  # a second section, big-endian: interface numbering starts again
        idb(">", 113, tsresol=3),
        epb(">", 0, t0 * 1000 + 5, sll),
        spb(">", d),
        pb(">", 0, t0 * 1000 + 7, e),
    ])
    path = write(tmp_path, "multi.pcapng", data)
    cap = read_capture(path)
    check_consistent(cap)
    assert not cap.damaged
    assert frames_of(cap) == [a, b, c, sll, d, e]
    assert cap.linktypes.tolist() == [1, 1, 1, 113, 113, 113]
    assert cap.orig_lengths.tolist() == [len(a), 1500, len(c), len(sll), len(d), len(e)]
    assert cap.ts_ns.tolist() == [
        t0 * 10**9 + 123_456_000,
        t0 * 10**9 + 987_654_321,
        (t0 + 100) * 10**9 + 500_000_000,
        t0 * 10**9 + 5_000_000,
        0,  # an SPB has no time stamp
        t0 * 10**9 + 7_000_000,
    ]
    # Wireshark numbers the custom block as a record too (frame 1), so the packets are 2..7.
    assert cap.frame_numbers.tolist() == [2, 3, 4, 5, 6, 7]
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number",
                              "-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.time_epoch"],
                             capture_output=True, text=True, check=True)
        rows = {int(r[0]): r for r in (line.split("\t") for line in out.stdout.splitlines())}
        assert len(rows) == 7
        shown = [rows[n] for n in cap.frame_numbers.tolist()]
        assert [int(r[1]) for r in shown] == cap.orig_lengths.tolist()
        assert [int(r[2]) for r in shown] == cap.lengths.tolist()
        epoch = [(r[3] or "0.0").split(".") for r in shown]  # the SPB has no time: shown empty
        assert [int(s) * 10**9 + int(f.ljust(9, "0")) for s, f in epoch] == cap.ts_ns.tolist()


def test_pcapng_binary_and_decimal_resolutions_exact(tmp_path: Path) -> None:
    raws = [0, 1, 999_999_999, 1_700_000_000_123_456_789, (1 << 63) - 12345]
    for resol in (0, 3, 6, 9, 12, 0x80 | 10, 0x80 | 30, 0x80 | 32):
        blocks = [shb(), idb(tsresol=resol)]
        raw_list = [r % (1 << 62) for r in raws]
        blocks += [epb("<", 0, r, udp(1)) for r in raw_list]
        path = write(tmp_path, f"r{resol}.pcapng", b"".join(blocks))
        cap = read_capture(path)
        per_s = 2 ** (resol & 0x7F) if resol & 0x80 else 10 ** resol
        expect = [min(r * 10**9 // per_s, MAX_TS_NS) for r in raw_list]  # clamped, not wrapped
        assert cap.ts_ns.tolist() == expect, resol


def test_pcapng_time_stamps_out_of_range_are_clamped(tmp_path: Path) -> None:
    """Found by tests/test_fuzz.py: a zeroed if_tsresol (seconds) made raw time stamps wrap to
    negative nanoseconds, and replay's pcapng writer raised on them (a traceback). Time stamps
    are clamped to 0 .. MAX_TS_NS (1970 to 2106) and the replay goes through."""
    blocks = [shb(), idb(tsresol=0), idb(tsresol=6, tsoffset=-(1 << 40)),
              idb(tsresol=0x80, tsoffset=1 << 62), idb(tsresol=6, tsoffset=-10)]
    blocks += [epb("<", 0, 1_700_000_000, udp(1)), epb("<", 0, (1 << 64) - 1, udp(2)),
               epb("<", 1, 1_700_000_000_000_000, udp(3)), epb("<", 2, 5, udp(4)),
               epb("<", 3, 4_000_000, udp(5)), epb("<", 3, 20_000_000, udp(6))]
    path = write(tmp_path, "times.pcapng", b"".join(blocks))
    cap = read_capture(path)
    assert cap.ts_ns.tolist() == [1_700_000_000 * 10**9, MAX_TS_NS, 0, MAX_TS_NS, 0,
                                  10 * 10**9]
    pcap = write(tmp_path, "late.pcap", pcap_file([(0, udp(1))]))
    data = bytearray(pcap.read_bytes())
    struct.pack_into("<II", data, 24, 0xFFFFFFFF, 0xFFFFFFFF)  # the last second, + 4295 s
    pcap.write_bytes(bytes(data))
    assert read_capture(pcap).ts_ns.tolist() == [MAX_TS_NS]
    from kemu.frontend.cli import main

    out = tmp_path / "out.pcapng"
    root = Path(__file__).resolve().parents[1]
    assert main(["replay", "-f", str(root / "examples" / "cluster"), "-r", str(path),
                 "-w", str(out), "--respond", "--unknown-at-gateway"]) == 0
    assert read_capture(out).ts_ns.max() <= MAX_TS_NS + 10**6


def test_mixed_link_types_drop_unsupported_frames(tmp_path: Path) -> None:
    wifi = b"\x08\x00" + b"\0" * 30
    blocks = [shb(), idb(linktype=1), idb(linktype=105), idb(linktype=101)]
    raw = bytes(IP(src="10.9.0.1", dst="10.9.0.2") / UDP())
    offsets = []
    pos = sum(len(b) for b in blocks)
    for i, (iface, data) in enumerate([(0, udp(0)), (1, wifi), (2, raw), (1, wifi), (0, udp(1))]):
        blk = epb("<", iface, 1_000_000 + i, data)
        offsets.append(pos)
        pos += len(blk)
        blocks.append(blk)
    path = write(tmp_path, "mixed.pcapng", b"".join(blocks))
    cap = read_capture(path)
    check_consistent(cap)
    assert cap.frame_numbers.tolist() == [1, 3, 5]
    assert cap.linktypes.tolist() == [1, 101, 1]
    assert cap.damaged == [Damage(2, offsets[1], "unsupported link type 105"),
                           Damage(4, offsets[3], "unsupported link type 105")]


# -- files that cannot be read at all -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("empty", b"", "empty file"),
        ("garbage", b"this is not a capture at all, just text\n" * 3, "not a pcap or pcapng"),
        ("short-magic", b"\xd4\xc3", "truncated file header"),
        ("truncated-pcap-header", pcap_file([])[:20], "truncated pcap file header"),
        ("truncated-shb", shb()[:20], "section header block"),
        ("bad-shb-bom", shb()[:8] + b"\x11\x22\x33\x44" + shb()[12:], "byte-order magic"),
        ("shb-major-2", shb(major=2), "unsupported pcapng version 2"),
        ("shb-bad-trailer", shb()[:-4] + b"\0\0\0\0", "bad block length"),
        ("first-block-idb", idb() + shb(), "not a pcap or pcapng"),
        ("pcap-major-9", struct.pack("<IHHiIII", 0xA1B2C3D4, 9, 0, 0, 0, 65535, 1),
         "unsupported pcap version 9"),
    ],
)
def test_unreadable_files_raise_capture_error(tmp_path: Path, name: str, data: bytes,
                                               words: str) -> None:
    path = write(tmp_path, name, data)
    with pytest.raises(CaptureError) as info:
        read_capture(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    with pytest.raises(CaptureError):
        list(iter_capture(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open"):
        read_capture(tmp_path / "nope.pcap")


def test_pcap_of_unsupported_link_type_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "wifi.pcap", pcap_file([(0, b"\x08\x00" + b"\0" * 22)], linktype=105))
    with pytest.raises(CaptureError) as info:
        read_capture(path)
    assert str(info.value).endswith(
        "unsupported link type 105 (IEEE802_11); kemu replays Ethernet, Linux cooked (SLL/SLL2), "
        "raw IP and BSD loopback captures")
    assert info.value.offset == 20 and info.value.frame is None  # the header's link type field
    path = write(tmp_path, "odd.pcap", pcap_file([(0, b"xx")], linktype=4000))
    with pytest.raises(CaptureError, match=r"unsupported link type 4000; kemu replays"):
        read_capture(path)


def test_pcap_link_type_upper_bits_are_fcs_information(tmp_path: Path) -> None:
    path = write(tmp_path, "fcs.pcap", pcap_file([(0, udp(0))], linktype=0x30000001))
    assert read_capture(path).linktypes.tolist() == [1]


def test_pcapng_without_supported_interface_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "wifi.pcapng",
                 shb() + idb(linktype=105) + epb("<", 0, 0, b"\x08\x00" + b"\0" * 22))
    with pytest.raises(CaptureError, match=r"no interface of a supported link type.*105"):
        read_capture(path)
    with pytest.raises(CaptureError, match="no interface"):
        list(iter_capture(path))
    path = write(tmp_path, "bare.pcapng", shb())
    with pytest.raises(CaptureError, match="describes no interface"):
        read_capture(path)


# -- damaged records inside readable files --------------------------------------------------------


def test_pcap_truncated_record_header(tmp_path: Path) -> None:
    good = pcap_file([(10**9, udp(0)), (2 * 10**9, udp(1))])
    path = write(tmp_path, "t.pcap", good + b"\x01\x02\x03\x04\x05\x06\x07")
    cap = read_capture(path)
    assert frames_of(cap) == [udp(0), udp(1)]
    assert cap.damaged == [Damage(3, len(good), "truncated record")]


def test_pcap_truncated_record_data(tmp_path: Path) -> None:
    full = pcap_file([(10**9, udp(0)), (2 * 10**9, udp(1, 50))])
    path = write(tmp_path, "t.pcap", full[:-10])
    cap = read_capture(path)
    assert frames_of(cap) == [udp(0)]
    assert cap.damaged == [Damage(2, 24 + 16 + len(udp(0)), "truncated record")]


def test_pcap_zero_length_record_is_skipped(tmp_path: Path) -> None:
    e = "<"
    data = (pcap_file([(0, udp(0))])
            + pcap_record(e, 1, 0, 0, 60, b"")
            + pcap_record(e, 2, 0, len(udp(2)), len(udp(2)), udp(2)))
    cap = read_capture(write(tmp_path, "z.pcap", data))
    assert frames_of(cap) == [udp(0), udp(2)]
    assert cap.frame_numbers.tolist() == [1, 3]
    assert cap.damaged == [Damage(2, 24 + 16 + len(udp(0)), "zero-length record")]


def test_pcap_caplen_above_snaplen_resyncs_when_next_record_is_sound(tmp_path: Path) -> None:
    big = udp(1, 200)
    data = (pcap_file([(0, udp(0))], snaplen=100)
            + pcap_record("<", 1, 0, len(big), len(big), big)
            + pcap_record("<", 2, 0, len(udp(2)), len(udp(2)), udp(2)))
    cap = read_capture(write(tmp_path, "s.pcap", data))
    assert frames_of(cap) == [udp(0), udp(2)]
    assert cap.frame_numbers.tolist() == [1, 3]
    assert cap.damaged == [Damage(2, 24 + 16 + len(udp(0)), "caplen above snaplen")]


def test_pcap_caplen_above_snaplen_stops_when_next_record_is_unsound(tmp_path: Path) -> None:
    big = udp(1, 200)
    data = (pcap_file([(0, udp(0))], snaplen=100)
            + pcap_record("<", 1, 0, len(big) - 30, len(big), big)  # caplen lies: 30 bytes short
            + pcap_record("<", 2, 0, len(udp(2)), len(udp(2)), udp(2)))
    cap = read_capture(write(tmp_path, "s.pcap", data))
    assert frames_of(cap) == [udp(0)]
    assert cap.damaged == [Damage(2, 24 + 16 + len(udp(0)), "caplen above snaplen")]


def test_pcap_absurd_caplen_stops_without_allocating(tmp_path: Path) -> None:
    data = pcap_file([(0, udp(0))], snaplen=0) + pcap_record("<", 1, 0, 0xFFFFFFF0, 64, b"x" * 64)
    cap = read_capture(write(tmp_path, "a.pcap", data))
    assert frames_of(cap) == [udp(0)]
    assert cap.damaged == [Damage(2, 24 + 16 + len(udp(0)), "caplen above snaplen")]
    assert MAX_SNAPLEN == 262144


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda blk: blk[:4] + struct.pack("<I", 30) + blk[8:], "bad block length"),
        (lambda blk: blk[:4] + struct.pack("<I", 8) + blk[8:], "bad block length"),
        (lambda blk: blk[:4] + struct.pack("<I", 1 << 30) + blk[8:], "truncated record"),
        (lambda blk: blk[:-4] + struct.pack("<I", len(blk) + 4), "bad block length"),
        (lambda blk: blk[: len(blk) // 2], "bad block length"),  # the next block is misread
    ],
    ids=["not-multiple-of-4", "below-12", "past-eof", "trailer-mismatch", "cut"],
)
def test_pcapng_bad_block_length_stops(tmp_path: Path, mangle, reason: str) -> None:
    head = shb() + idb() + epb("<", 0, 1, udp(0))
    bad = mangle(epb("<", 0, 2, udp(1)))
    path = write(tmp_path, "b.pcapng", head + bad + epb("<", 0, 3, udp(2)))
    cap = read_capture(path)
    assert frames_of(cap) == [udp(0)]
    assert cap.damaged == [Damage(2, len(head), reason)]


def test_pcapng_epb_on_undefined_interface_continues(tmp_path: Path) -> None:
    head = shb() + idb()
    first = epb("<", 0, 1, udp(0))
    stray = epb("<", 7, 2, udp(1))
    path = write(tmp_path, "u.pcapng", head + first + stray + epb("<", 0, 3, udp(2)))
    cap = read_capture(path)
    assert frames_of(cap) == [udp(0), udp(2)]
    assert cap.frame_numbers.tolist() == [1, 3]
    assert cap.damaged == [Damage(2, len(head) + len(first), "undefined interface")]


def test_pcapng_record_damage_that_continues(tmp_path: Path) -> None:
    head = shb() + idb(snaplen=100)
    blocks = [
        epb("<", 0, 1, udp(0)),
        epb("<", 0, 2, b""),  # zero-length
        epb("<", 0, 3, udp(1), caplen=5000),  # caplen runs past the block
        epb("<", 0, 4, udp(2, 200)),  # caplen above the interface's snaplen
        block("<", 6, b"\0" * 8),  # an EPB too short to hold its fields
        epb("<", 0, 6, udp(3)),
    ]
    offsets = np.cumsum([len(head)] + [len(b) for b in blocks]).tolist()
    cap = read_capture(write(tmp_path, "d.pcapng", head + b"".join(blocks)))
    assert frames_of(cap) == [udp(0), udp(3)]
    assert cap.frame_numbers.tolist() == [1, 6]
    assert cap.damaged == [
        Damage(2, offsets[1], "zero-length record"),
        Damage(3, offsets[2], "caplen past end of block"),
        Damage(4, offsets[3], "caplen above snaplen"),
        Damage(5, offsets[4], "block too short"),
    ]


def test_pcapng_later_section_damage(tmp_path: Path) -> None:
    head = shb() + idb() + epb("<", 0, 1, udp(0))
    bad_bom = shb()[:8] + b"\0\0\0\0" + shb()[12:]
    cap = read_capture(write(tmp_path, "s.pcapng", head + bad_bom + idb() + epb("<", 0, 2, udp(1))))
    assert frames_of(cap) == [udp(0)]
    assert cap.damaged == [Damage(2, len(head), "bad section header")]
    cap = read_capture(write(tmp_path, "v.pcapng", head + shb(major=3) + idb()))
    assert cap.damaged == [Damage(2, len(head), "unsupported pcapng version")]


def test_pcapng_trailing_garbage_below_a_block(tmp_path: Path) -> None:
    head = shb() + idb() + epb("<", 0, 1, udp(0))
    cap = read_capture(write(tmp_path, "g.pcapng", head + b"\x06\0\0\0\x20"))
    assert frames_of(cap) == [udp(0)]
    assert cap.damaged == [Damage(2, len(head), "truncated record")]


# -- conversion to Ethernet ---------------------------------------------------------------------


def test_to_ethernet_keeps_ethernet_capture(tmp_path: Path) -> None:
    cap = read_capture(write(tmp_path, "e.pcap", pcap_file([(0, udp(0))])))
    assert to_ethernet(cap) is cap


def converted(tmp_path: Path, linktype: int, frames: list[bytes]) -> Capture:
    path = write(tmp_path, f"l{linktype}.pcap",
                 pcap_file([(i, f) for i, f in enumerate(frames)], linktype=linktype))
    cap = to_ethernet(read_capture(path))
    check_consistent(cap)
    assert (cap.linktypes == 1).all()
    return cap


def test_sll_to_ethernet(tmp_path: Path) -> None:
    mac = b"\x02\x11\x22\x33\x44\x55"
    ip4 = IP(src="10.244.1.3", dst="10.96.0.10") / UDP(sport=5000, dport=53)
    frames = [
        bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=mac + b"\0\0", proto=0x0800)
              / ip4),
        bytes(CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=0, src=b"\0" * 8, proto=0x86DD)
              / IPv6(src="fd00::1", dst="fd00::2") / UDP()),
        bytes(CookedLinux(pkttype=1, lladdrtype=1, lladdrlen=6, src=mac + b"\0\0", proto=0x0800)
              / IP(src="10.0.0.1", dst="255.255.255.255") / UDP()),
        bytes(CookedLinux(pkttype=2, lladdrtype=1, lladdrlen=6, src=mac + b"\0\0", proto=0x0800)
              / IP(src="10.0.0.1", dst="239.129.2.3") / UDP()),
        bytes(CookedLinux(pkttype=2, lladdrtype=1, lladdrlen=6, src=mac + b"\0\0", proto=0x86DD)
              / IPv6(src="fe80::1", dst="ff02::1:ff00:1234") / UDP()),
        b"\0\0\0\1\0\6",  # too short for the 16-byte header
        bytes(CookedLinux(pkttype=0, lladdrtype=824, lladdrlen=0, proto=0x0000) / (b"\0" * 20)),
    ]
    cap = converted(tmp_path, 113, frames)
    assert cap.frame_numbers.tolist() == [1, 2, 3, 4, 5]
    eth = [Ether(cap.frame(i)) for i in range(len(cap))]
    assert eth[0].src == "02:11:22:33:44:55" and eth[0].dst == "00:00:00:00:00:00"
    assert eth[0][IP].src == "10.244.1.3" and eth[0][IP].dst == "10.96.0.10"
    assert eth[0][UDP].dport == 53
    assert bytes(eth[0][IP]) == bytes(ip4)
    assert eth[1].type == 0x86DD and eth[1][IPv6].dst == "fd00::2"
    assert eth[1].src == "00:00:00:00:00:00"
    assert eth[2].dst == "ff:ff:ff:ff:ff:ff"
    assert eth[3].dst == "01:00:5e:01:02:03" and eth[3][IP].dst == "239.129.2.3"
    assert eth[4].dst == "33:33:ff:00:12:34"
    assert cap.lengths.tolist() == [len(f) - 16 + 14 for f in frames[:5]]
    assert [d.reason for d in cap.damaged] == ["frame too short for link header",
                                               "unsupported SLL protocol 0x0000"]
    assert [d.frame for d in cap.damaged] == [6, 7]


def test_sll2_to_ethernet(tmp_path: Path) -> None:
    mac = b"\x02\x99\x88\x77\x66\x55"
    frames = [
        bytes(CookedLinuxV2(proto=0x0800, ifindex=3, lladdrtype=1, pkttype=0, lladdrlen=6,
                            src=mac + b"\0\0") / IP(src="10.244.2.7", dst="10.244.1.3") / TCP()),
        bytes(CookedLinuxV2(proto=0x0806, ifindex=3, lladdrtype=1, pkttype=1, lladdrlen=6,
                            src=mac + b"\0\0") / (b"\0" * 28)),
    ]
    cap = converted(tmp_path, 276, frames)
    eth = [Ether(cap.frame(i)) for i in range(len(cap))]
    assert eth[0].src == "02:99:88:77:66:55" and eth[0].dst == "00:00:00:00:00:00"
    assert eth[0][IP].src == "10.244.2.7" and eth[0][IP].dst == "10.244.1.3"
    assert eth[1].type == 0x0806 and eth[1].dst == "ff:ff:ff:ff:ff:ff"
    assert cap.orig_lengths.tolist() == [len(f) - 20 + 14 for f in frames]


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_to_ethernet(tmp_path: Path, linktype: int) -> None:
    v4 = bytes(IP(src="192.168.1.1", dst="10.96.0.1") / TCP(dport=443))
    v6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(dport=53))
    cap = converted(tmp_path, linktype, [v4, v6, b"\x50garbage"])
    eth = [Ether(cap.frame(i)) for i in range(len(cap))]
    assert eth[0].type == 0x0800 and eth[0][IP].src == "192.168.1.1"
    assert eth[0][IP].dst == "10.96.0.1" and bytes(eth[0][IP]) == v4
    assert eth[1].type == 0x86DD and eth[1][IPv6].src == "2001:db8::1"
    assert cap.damaged == [Damage(3, 24 + 16 * 3 + len(v4) + len(v6), "not an IP packet")]


def test_ipv4_ipv6_link_types_to_ethernet(tmp_path: Path) -> None:
    v4 = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / UDP())
    v6 = bytes(IPv6(src="::1", dst="::2") / UDP())
    assert Ether(converted(tmp_path, 228, [v4]).frame(0))[IP].dst == "5.6.7.8"
    assert Ether(converted(tmp_path, 229, [v6]).frame(0))[IPv6].dst == "::2"


def test_bsd_loopback_to_ethernet(tmp_path: Path) -> None:
    v4 = IP(src="127.0.0.1", dst="127.0.0.2") / UDP(dport=7)
    v6 = IPv6(src="::1", dst="::1") / UDP(dport=9)
    null = [bytes(Loopback(type=2) / v4), struct.pack(">I", 2) + bytes(v4),
            bytes(Loopback(type=30) / v6), struct.pack("<I", 24) + bytes(v6),
            struct.pack("<I", 7) + b"osi", b"\2\0"]
    cap = converted(tmp_path, 0, null)
    eth = [Ether(cap.frame(i)) for i in range(len(cap))]
    assert [e.type for e in eth] == [0x0800, 0x0800, 0x86DD, 0x86DD]
    assert eth[0][IP].dst == "127.0.0.2" and eth[1][IP].src == "127.0.0.1"
    assert eth[2][UDP].dport == 9
    assert [d.reason for d in cap.damaged] == ["unsupported address family 7",
                                               "frame too short for link header"]
    loop = [struct.pack(">I", 2) + bytes(v4), struct.pack(">I", 28) + bytes(v6)]
    cap = converted(tmp_path, 108, loop)
    assert Ether(cap.frame(0))[IP].dst == "127.0.0.2"
    assert Ether(cap.frame(1))[IPv6].src == "::1"


def test_to_ethernet_on_mixed_pcapng(tmp_path: Path) -> None:
    raw = bytes(IP(src="10.9.0.1", dst="10.9.0.2") / UDP())
    sll = bytes(CookedLinux(proto=0x0800, lladdrlen=6, src=b"\2\3\4\5\6\7\0\0") / raw)
    data = (shb() + idb(linktype=1) + idb(linktype=101) + idb(linktype=113)
            + b"".join(epb("<", i % 3, i, [udp(i), raw, sll][i % 3]) for i in range(9)))
    cap = to_ethernet(read_capture(write(tmp_path, "m.pcapng", data)))
    check_consistent(cap)
    assert len(cap) == 9 and not cap.damaged
    for i in range(9):
        frame = Ether(cap.frame(i))
        if i % 3 == 0:
            assert cap.frame(i) == udp(i)
        else:
            assert frame[IP].src == "10.9.0.1" and frame[IP].dst == "10.9.0.2"
    assert cap.ts_ns.tolist() == [i * 1000 for i in range(9)]


def test_conversion_damage_comes_after_reading_damage(tmp_path: Path) -> None:
    """Callers count to_ethernet's own damage as the entries past the input's."""
    raw = bytes(IP(src="10.9.0.1", dst="10.9.0.2") / UDP())
    data = (shb() + idb(linktype=101) + epb("<", 0, 1, b"\x50not ip") + epb("<", 0, 2, raw)
            + epb("<", 0, 3, b""))
    cap = read_capture(write(tmp_path, "o.pcapng", data))
    assert [(d.frame, d.reason) for d in cap.damaged] == [(3, "zero-length record")]
    eth = to_ethernet(cap)
    assert eth.damaged[: len(cap.damaged)] == cap.damaged
    assert [(d.frame, d.reason) for d in eth.damaged[len(cap.damaged) :]] == [
        (1, "not an IP packet")]
    assert eth.frame_numbers.tolist() == [2]


# -- chunked reading ----------------------------------------------------------------------------


def concat(chunks: list[Capture]) -> dict[str, list]:
    out: dict[str, list] = {"frames": [], "damaged": []}
    for field in ("lengths", "orig_lengths", "ts_ns", "linktypes", "frame_numbers"):
        out[field] = [x for c in chunks for x in getattr(c, field).tolist()]
    for c in chunks:
        check_consistent(c)
        out["frames"] += frames_of(c)
        out["damaged"] += c.damaged
    return out


@pytest.mark.parametrize(("reuse", "read_ahead"), [(False, False), (True, False),
                                                   (False, True), (True, True)])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("chunk_frames", [1, 7, 100, 262144])
def test_iter_capture_concatenates_to_read_capture(tmp_path: Path, fmt: str, chunk_frames: int,
                                                   reuse: bool, read_ahead: bool) -> None:
    frames = [udp(i, (i * 37) % 900) for i in range(600)]  # ~330 kB: several 64 kB windows
    if fmt == "pcap":
        records = [(10**9 + i * 1000, f) for i, f in enumerate(frames)]
        records[100] = (0, b"")  # a zero-length record in the middle
        data = pcap_file(records)
    else:
        blocks = [shb(), idb(tsresol=9), idb(linktype=105)]
        blocks += [epb("<", 1 if i % 50 == 0 else 0, 10**9 + i, f) for i, f in enumerate(frames)]
        blocks.insert(300, idb())  # an interface described between packets
        data = b"".join(blocks)
    path = write(tmp_path, f"big.{fmt}", data[:-7])  # and a truncated last record
    whole = read_capture(path)
    want = concat([whole])
    if reuse:  # windows read into the same memory (three in turn when read ahead, as replay
        parts, bases = [], set()   # does): each chunk is read before the next is taken
        chunks = iter_capture(path, chunk_frames, chunk_bytes=1 << 16,
                              reuse_buffer=3 if read_ahead else True)
        for c in ahead(chunks, "kemu capture reader") if read_ahead else chunks:
            assert len(c) <= chunk_frames and len(c.buf) <= max(1 << 16, 2000)
            if read_ahead:
                time.sleep(0.001)  # the reader goes on meanwhile: it must not touch c.buf
            parts.append(concat([c]))
            if len(c.buf):
                bases.add(c.buf.__array_interface__["data"][0])
        got = {k: [x for p in parts for x in p[k]] for k in want}
        assert len(bases) == (3 if read_ahead else 1)  # several windows (330 kB, 64 kB each)
        assert got == want
        return
    chunks = iter_capture(path, chunk_frames, chunk_bytes=1 << 16)
    chunks = list(ahead(chunks) if read_ahead else chunks)
    assert all(len(c) <= chunk_frames for c in chunks)
    assert all(len(c.buf) <= max(1 << 16, 2000) for c in chunks)
    got = concat(chunks)
    assert got == want
    assert whole.damaged and whole.damaged[-1].reason == "truncated record"


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kemu capture reader"]


def test_read_ahead_raises_where_reading_in_turn_does(tmp_path: Path) -> None:
    """An error met by the reader thread reaches the caller after the chunks before it, as
    the same error reading in turn; leaving the loop early stops the reader."""
    path = write(tmp_path, "wifi.pcapng", shb() + idb(linktype=105)
                 + epb("<", 0, 0, b"\x08\x00" + b"\0" * 22))
    with pytest.raises(CaptureError, match="no interface"):
        list(iter_capture(path))
    with pytest.raises(CaptureError, match="no interface"):
        list(ahead(iter_capture(path), "kemu capture reader"))
    assert not _readers()
    frames = [udp(i, i) for i in range(400)]
    path = write(tmp_path, "many.pcap", pcap_file([(10**9 + i, f) for i, f in enumerate(frames)]))
    cut = path.read_bytes()[:-30]  # the last record cut short: damage after 39 full chunks
    short = write(tmp_path, "short.pcap", cut)
    seen = [len(c) for c in ahead(iter_capture(short, 10, chunk_bytes=1 << 16),
                                  "kemu capture reader")]
    assert seen == [len(c) for c in iter_capture(short, 10, chunk_bytes=1 << 16)]
    for stop_after in (1, 2):
        it = ahead(iter_capture(path, 10, chunk_bytes=1 << 16, reuse_buffer=3),
                   "kemu capture reader")
        for k, c in enumerate(it):
            assert len(c) == 10
            if k + 1 == stop_after:
                break
        it.close()  # type: ignore[attr-defined]
        assert not _readers()
    with pytest.raises(ValueError, match="reuse_buffer"):
        iter_capture(path, reuse_buffer=0)


# -- robustness ---------------------------------------------------------------------------------


def _seed_files() -> list[bytes]:
    frames = [udp(i, i * 3) for i in range(6)]
    pcap = pcap_file([(10**9 * i, f) for i, f in enumerate(frames)], snaplen=200)
    ng = (shb() + idb(tsresol=9) + idb(linktype=113) + b"".join(
        epb("<", i % 2, i, f) for i, f in enumerate(frames)) + spb("<", frames[0])
        + shb(">") + idb(">", 1) + pb(">", 0, 5, frames[1]))
    return [pcap, ng]


@settings(max_examples=int(os.environ.get("KEMU_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from([0, 1]),
       edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
       cut=st.integers(0, 2000))
def test_mutated_files_never_crash(tmp_path: Path, which: int, edits: list[tuple[int, int]],
                                   cut: int) -> None:
    data = bytearray(_seed_files()[which])
    for at, value in edits:
        if at < len(data):
            data[at] = value
    del data[len(data) - cut % (len(data) + 1):]
    path = write(tmp_path, "fuzz", bytes(data))
    try:
        cap = to_ethernet(read_capture(path))
    except CaptureError as err:
        assert str(path) in str(err)
        assert "malformed capture" not in str(err)  # the reader's last-resort net: a bug
        return
    check_consistent(cap)
    for d in cap.damaged:
        assert d.frame >= 1 and 0 <= d.offset <= len(data) and d.reason
    chunks = list(iter_capture(path, 2, chunk_bytes=1 << 16))
    assert concat(chunks) == concat([read_capture(path)])


# -- compressed captures (kemu.io.compressed) ---------------------------------------------------
COMPRESSORS = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_files_read_as_the_file_inside(tmp_path: Path, kind: str) -> None:
    """Recognised by their magic bytes (the file's name says nothing), read whole or in
    chunks; ``open_decompressed`` decompresses once for several passes (replay's loops) and
    gives None for a file that is not compressed."""
    frames = [udp(i, i) for i in range(300)]
    raw = pcap_file([(10**9 + i, f) for i, f in enumerate(frames)])
    plain = write(tmp_path, "plain.pcap", raw)
    packed = write(tmp_path, "packed.pcap", COMPRESSORS[kind](raw))
    expected = concat([read_capture(plain)])
    assert concat([read_capture(packed)]) == expected
    assert concat(list(iter_capture(packed, 7, chunk_bytes=1 << 16))) == expected
    with open_decompressed(packed) as f:
        assert f is not None
        for _ in range(2):
            assert concat(list(iter_capture(packed, 7, chunk_bytes=1 << 16, file=f))) == expected
    assert f.closed
    with open_decompressed(plain) as f:
        assert f is None
    with open_decompressed(tmp_path / "missing.pcap") as f:
        assert f is None  # the reader reports it as any unreadable file


@settings(max_examples=int(os.environ.get("KEMU_FUZZ_EXAMPLES", "300")) // 3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(COMPRESSORS)),
       edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 2000))
def test_damaged_compressed_files_never_crash(tmp_path: Path, kind: str,
                                              edits: list[tuple[int, int]], cut: int) -> None:
    """Corrupt or cut compressed data: a CaptureError naming the file, or the frames that
    could be read; never another exception."""
    data = bytearray(COMPRESSORS[kind](_seed_files()[0]))
    for at, value in edits:
        if 6 <= at < len(data):  # the magic stays: damage inside the stream
            data[at] = value
    del data[max(6, len(data) - cut % (len(data) + 1)):]
    path = write(tmp_path, "fuzz.gz", bytes(data))
    try:
        cap = read_capture(path)
    except CaptureError as err:
        assert str(err).startswith(str(path))
        return
    check_consistent(cap)
