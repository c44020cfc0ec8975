"""Mutators for ``tests/test_fuzz.py``: structure-aware damage to captures and manifests.

Every mutator takes a ``random.Random`` and the seed's bytes (or parsed documents) and returns
the mutant with a short description of what it did, so that a failing case can be told and
rebuilt. Nothing here runs kemu: the test does.

Captures (``mutate_capture``): bit flips and interesting bytes anywhere; truncation at random
and at record boundaries; classic pcap record headers (caplen and len 0, huge, above the
snaplen, off by one; time stamps) and the global header (magic variants, version, snaplen,
link type); pcapng blocks (type, total length and the trailing copy, section header byte
order and version, options with bad lengths, interface ids out of range, IDB link type,
snaplen and time-stamp resolution, EPBs rewritten as SPBs or obsolete PBs); records
duplicated, dropped, swapped and spliced in from another capture. One to three at a time,
and now and then the result compressed (gzip, bzip2, xz), whole or cut short.

Manifests (``mutate_documents``, ``mutate_text``): on the parsed YAML tree, keys deleted,
values of the wrong type (containers, strings, numbers, booleans, null, huge and negative
integers, empty, unicode and very long strings), interesting numbers, objects duplicated,
kinds and apiVersions swapped, lists grown to 10,000 items, 1,000 levels of nesting, an alias
bomb (billion laughs) and an alias that contains itself; on the text, truncation, tabs,
invalid UTF-8, deleted lines and bytes.
"""

from __future__ import annotations

import copy
import json
import random
import struct
from collections.abc import Callable
from typing import Any

import yaml

# -- captures ---------------------------------------------------------------------------------

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
               b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
BOM_LE, BOM_BE = b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"
LINKTYPES = (0, 1, 6, 9, 10, 12, 14, 50, 101, 104, 105, 108, 113, 127, 147, 192, 197, 220,
             228, 229, 239, 276, 0xFFFF)
BLOCK_TYPES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x0A0D0D0A, 0xBAD, 0x40000BAD, 0x204,
               0x80000001, 0xFFFFFFFF)
U32_VALUES = (0, 1, 2, 3, 4, 7, 8, 12, 13, 16, 28, 31, 32, 33, 60, 64, 0x7F, 0x80, 0xFF,
              0xFFFF, 0x10000, 262144, 262145, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFF)


def capture_format(data: bytes) -> str:
    if data[:4] in PCAP_MAGICS:
        return "pcap"
    if data[:4] == PCAPNG_MAGIC:
        return "pcapng"
    return "?"


def pcap_records(data: bytes) -> tuple[str, list[tuple[int, int]]]:
    """Byte order and (offset, caplen) of the records of a pcap, as far as they frame."""
    endian = PCAP_MAGICS.get(data[:4], "<")
    out: list[tuple[int, int]] = []
    p = 24
    while p + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, p + 8)[0]
        if p + 16 + caplen > len(data):
            break
        out.append((p, caplen))
        p += 16 + caplen
    return endian, out


def pcapng_blocks(data: bytes) -> list[tuple[int, int, int, str]]:
    """(offset, type, total length, byte order) of the blocks of a pcapng, as far as they
    frame."""
    out: list[tuple[int, int, int, str]] = []
    p, endian = 0, "<"
    while p + 12 <= len(data):
        if data[p:p + 4] == PCAPNG_MAGIC:
            bom = data[p + 8:p + 12]
            endian = ">" if bom == BOM_BE else "<"
        btype, blen = struct.unpack_from(endian + "II", data, p)
        if blen < 12 or blen % 4 or p + blen > len(data):
            break
        out.append((p, btype, blen, endian))
        p += blen
    return out


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every record (pcap: header and data; pcapng: block)."""
    fmt = capture_format(data)
    if fmt == "pcap":
        return [(p, 16 + c) for p, c in pcap_records(data)[1]]
    if fmt == "pcapng":
        return [(p, n) for p, _t, n, _e in pcapng_blocks(data)]
    return []


def _put32(data: bytearray, at: int, endian: str, value: int) -> None:
    if 0 <= at and at + 4 <= len(data):
        struct.pack_into(endian + "I", data, at, value & 0xFFFFFFFF)


def _u32(rng: random.Random, near: int | None = None) -> tuple[int, str]:
    if near is not None and rng.random() < 0.4:
        delta = rng.choice((-4, -1, 1, 4, 8))
        return (near + delta) & 0xFFFFFFFF, f"{near}{delta:+d}"
    if rng.random() < 0.15:
        v = rng.getrandbits(32)
        return v, str(v)
    v = rng.choice(U32_VALUES)
    return v, str(v)


Mut = Callable[[random.Random, bytearray], str]


def m_bitflip(rng: random.Random, data: bytearray) -> str:
    if not data:
        return "bit flip (empty file)"
    places = []
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        bit = rng.randrange(8)
        data[i] ^= 1 << bit
        places.append(f"{i}.{bit}")
    return f"bit flips at {','.join(places)}"


def m_bytes(rng: random.Random, data: bytearray) -> str:
    if not data:
        return "bytes (empty file)"
    i = rng.randrange(len(data))
    value = rng.choice((b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00",
                        b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", bytes([rng.randrange(256)])))
    data[i:i + len(value)] = value
    return f"bytes {value.hex()} at {i}"


def m_truncate(rng: random.Random, data: bytearray) -> str:
    recs = _records(bytes(data))
    if recs and rng.random() < 0.6:
        off, n = rng.choice(recs)
        at = rng.choice((off, off + 1, off + 4, off + 8, off + 12, off + 16, off + n - 1,
                         off + n - 4, off + n))
        how = f"at record {off} (+{at - off})"
    else:
        at = rng.choice((0, 1, 3, 4, 8, 12, 23, 24, 25, 28, 40)) if rng.random() < 0.3 \
            else rng.randrange(len(data) + 1)
        how = "at random"
    at = max(0, min(at, len(data)))
    del data[at:]
    return f"truncated to {at} bytes {how}"


def m_pcap_record(rng: random.Random, data: bytearray) -> str:
    endian, recs = pcap_records(bytes(data))
    if not recs:
        return m_bitflip(rng, data)
    k = rng.randrange(len(recs))
    off, caplen = recs[k]
    field = rng.choice(("caplen", "len", "caplen", "both", "ts_sec", "ts_frac"))
    snaplen = struct.unpack_from(endian + "I", data, 16)[0]
    if field in ("caplen", "both", "len"):
        value, how = rng.choice([_u32(rng, caplen), (snaplen + 1, "snaplen+1"),
                                 (caplen + 1, "caplen+1"), (max(caplen - 1, 0), "caplen-1"),
                                 (0, "0")])
    else:
        value, how = _u32(rng)
    at = {"caplen": 8, "len": 12, "both": 8, "ts_sec": 0, "ts_frac": 4}[field]
    _put32(data, off + at, endian, value)
    if field == "both":
        _put32(data, off + 12, endian, value)
    return f"pcap record {k + 1} (offset {off}): {field} = {how}"


def m_pcap_header(rng: random.Random, data: bytearray) -> str:
    if len(data) < 24:
        return m_bitflip(rng, data)
    endian = PCAP_MAGICS.get(bytes(data[:4]), "<")
    field = rng.choice(("magic", "version", "snaplen", "linktype", "linktype", "fcs"))
    if field == "magic":
        magic = rng.choice([*PCAP_MAGICS, PCAPNG_MAGIC, b"\xd4\xc3\xb2\xa0", b"\x00" * 4,
                            bytes(rng.randrange(256) for _ in range(4))])
        data[:4] = magic
        return f"pcap magic = {magic.hex()}"
    if field == "version":
        major, minor = rng.choice(((1, 0), (2, 3), (2, 4), (3, 0), (0, 0), (0xFFFF, 0xFFFF)))
        struct.pack_into(endian + "HH", data, 4, major, minor)
        return f"pcap version = {major}.{minor}"
    if field == "snaplen":
        value, how = rng.choice(((0, "0"), (1, "1"), (14, "14"), (262144, "262144"),
                                 (262145, "262145"), (0xFFFFFFFF, "0xFFFFFFFF"), _u32(rng)))
        _put32(data, 16, endian, value)
        return f"pcap snaplen = {how}"
    network = rng.choice(LINKTYPES) if rng.random() < 0.8 else rng.getrandbits(16)
    if field == "fcs":
        network |= rng.choice((0x10000000, 0x04000000, 0xF0000000, 0x03FF0000))
    _put32(data, 20, endian, network)
    return f"pcap link type = {network:#x}"


def m_pcapng_block(rng: random.Random, data: bytearray) -> str:
    blocks = pcapng_blocks(bytes(data))
    if not blocks:
        return m_bitflip(rng, data)
    k = rng.randrange(len(blocks))
    off, btype, blen, endian = blocks[k]
    what = rng.choice(("type", "length", "trailing", "both", "length4"))
    if what == "type":
        value = rng.choice(BLOCK_TYPES)
        _put32(data, off, endian, value)
        return f"pcapng block {k} (type {btype}, offset {off}): type = {value:#x}"
    value, how = _u32(rng, blen)
    if what == "length4":
        value, how = rng.choice(((blen + 2, f"{blen}+2"), (blen - 1, f"{blen}-1"), (0, "0"),
                                 (12, "12"), (8, "8"), (blen + 4, f"{blen}+4")))
    if what in ("length", "both", "length4"):
        _put32(data, off + 4, endian, value)
    if what in ("trailing", "both"):
        _put32(data, off + blen - 4, endian, value)
    return f"pcapng block {k} (type {btype}, offset {off}): {what} length = {how}"


def _options_start(btype: int, data: bytes, off: int, endian: str) -> int | None:
    """Offset of the options of a block kemu or Wireshark reads options from."""
    if btype == 0x0A0D0D0A:
        return off + 24
    if btype == 1:
        return off + 16
    if btype == 6:
        caplen = struct.unpack_from(endian + "I", data, off + 20)[0]
        return off + 28 + caplen + (-caplen % 4)
    return None


def m_pcapng_option(rng: random.Random, data: bytearray) -> str:
    raw = bytes(data)
    blocks = [b for b in pcapng_blocks(raw) if b[1] in (0x0A0D0D0A, 1, 6)]
    if not blocks:
        return m_bitflip(rng, data)
    off, btype, blen, endian = rng.choice(blocks)
    start = _options_start(btype, raw, off, endian)
    end = off + blen - 4
    if start is None or start + 4 > end:
        # no options: give it one whose length runs past the block
        code, olen = rng.choice(((1, 0xFFFF), (2, 3), (9, 1), (14, 8), (0, 100)))
        data[end:end] = struct.pack(endian + "HH", code, olen)
        _put32(data, off + 4, endian, blen + 4)
        _put32(data, off + blen, endian, blen + 4)
        return f"pcapng block at {off} (type {btype}): added option {code} length {olen}"
    # walk to a random option
    opts = []
    at = start
    while at + 4 <= end:
        code, olen = struct.unpack_from(endian + "HH", raw, at)
        opts.append((at, code, olen))
        if code == 0:
            break
        at += 4 + olen + (-olen % 4)
    at, code, olen = rng.choice(opts)
    what = rng.choice(("length", "code", "drop end"))
    if what == "length":
        value = rng.choice((0, 1, 3, 5, 7, 8, 0x7FFF, 0xFFFF, olen + 1, olen + 4, blen))
        struct.pack_into(endian + "H", data, at + 2, value & 0xFFFF)
        return f"pcapng block at {off} (type {btype}): option {code} at {at} length = {value}"
    if what == "code":
        value = rng.choice((0, 1, 2, 3, 4, 9, 14, 0x8000, 0xFFFF))
        struct.pack_into(endian + "H", data, at, value)
        if value == 9:  # if_tsresol: a strange resolution
            data[at + 4:at + 5] = bytes([rng.choice((0, 10, 19, 20, 63, 0x80, 0xBF, 0xFF))])
        return f"pcapng block at {off} (type {btype}): option code {code} at {at} = {value}"
    struct.pack_into(endian + "HH", data, opts[-1][0], 0xFFFF, 0xFFFF)
    return f"pcapng block at {off} (type {btype}): end of options replaced"


def m_pcapng_section(rng: random.Random, data: bytearray) -> str:
    raw = bytes(data)
    shbs = [b for b in pcapng_blocks(raw) if b[1] == 0x0A0D0D0A]
    if not shbs:
        return m_bitflip(rng, data)
    off, _t, blen, endian = rng.choice(shbs)
    what = rng.choice(("swap", "bom", "version", "section length"))
    if what == "swap":  # the whole section header rewritten in the other byte order
        other = ">" if endian == "<" else "<"
        major, minor, slen = struct.unpack_from(endian + "HHq", raw, off + 12)
        data[off + 4:off + 8] = struct.pack(other + "I", blen)
        data[off + 8:off + 12] = BOM_BE if other == ">" else BOM_LE
        data[off + 12:off + 24] = struct.pack(other + "HHq", major, minor, slen)
        data[off + blen - 4:off + blen] = struct.pack(other + "I", blen)
        return f"section header at {off} in the other byte order (rest unchanged)"
    if what == "bom":
        bom = rng.choice((BOM_BE, BOM_LE, b"\0\0\0\0", b"\x4d\x3c\x2b\x1b"))
        data[off + 8:off + 12] = bom
        return f"section header at {off}: byte-order magic = {bom.hex()}"
    if what == "version":
        major, minor = rng.choice(((2, 0), (0, 0), (1, 2), (0xFFFF, 0)))
        struct.pack_into(endian + "HH", data, off + 12, major, minor)
        return f"section header at {off}: version = {major}.{minor}"
    value = rng.choice((-1, 0, 1, 2**62, -(2**63)))
    struct.pack_into(endian + "q", data, off + 16, value)
    return f"section header at {off}: section length = {value}"


def m_pcapng_interface(rng: random.Random, data: bytearray) -> str:
    raw = bytes(data)
    blocks = pcapng_blocks(raw)
    epbs = [b for b in blocks if b[1] in (2, 6)]
    idbs = [b for b in blocks if b[1] == 1]
    if idbs and (not epbs or rng.random() < 0.5):
        off, _t, _n, endian = rng.choice(idbs)
        what = rng.choice(("linktype", "snaplen"))
        if what == "linktype":
            lt = rng.choice(LINKTYPES)
            struct.pack_into(endian + "H", data, off + 8, lt)
            return f"IDB at {off}: link type = {lt}"
        value, how = rng.choice(((0, "0"), (1, "1"), (13, "13"), (0xFFFFFFFF, "huge"),
                                 (262145, "262145")))
        _put32(data, off + 12, endian, value)
        return f"IDB at {off}: snaplen = {how}"
    if not epbs:
        return m_bitflip(rng, data)
    off, btype, _n, endian = rng.choice(epbs)
    value = rng.choice((len(idbs), len(idbs) + 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1000))
    if btype == 2:
        struct.pack_into(endian + "H", data, off + 8, value & 0xFFFF)
    else:
        _put32(data, off + 8, endian, value)
    return f"packet block at {off}: interface id = {value}"


def m_pcapng_packet_kind(rng: random.Random, data: bytearray) -> str:
    """An EPB rewritten as a simple packet block or an obsolete packet block."""
    raw = bytes(data)
    epbs = [b for b in pcapng_blocks(raw) if b[1] == 6 and b[2] >= 32]
    if not epbs:
        return m_bitflip(rng, data)
    off, _t, blen, e = rng.choice(epbs)
    ifid, hi, lo, caplen, orig = struct.unpack_from(e + "IIIII", raw, off + 8)
    caplen = min(caplen, blen - 32)
    body = raw[off + 28:off + 28 + caplen]
    pad = b"\0" * (-len(body) % 4)
    if rng.random() < 0.5:
        orig = rng.choice((orig, caplen, caplen + 100, 0, 0xFFFFFFFF))
        n = 16 + len(body) + len(pad)
        new = struct.pack(e + "III", 3, n, orig) + body + pad + struct.pack(e + "I", n)
        what = f"SPB (original length {orig})"
    else:
        n = 32 + len(body) + len(pad)
        new = (struct.pack(e + "IIHHIIII", 2, n, ifid & 0xFFFF, 0, hi, lo, caplen, orig)
               + body + pad + struct.pack(e + "I", n))
        what = "obsolete packet block"
    data[off:off + blen] = new
    return f"EPB at {off} rewritten as an {what}"


def m_records(rng: random.Random, data: bytearray, other: bytes | None = None) -> str:
    recs = _records(bytes(data))
    first = 24 if capture_format(bytes(data)) == "pcap" else 0
    recs = [r for r in recs if r[0] >= first]
    if not recs:
        return m_bitflip(rng, data)
    off, n = rng.choice(recs)
    what = rng.choice(("duplicate", "drop", "swap", "splice", "repeat"))
    if what == "duplicate":
        data[off:off] = data[off:off + n]
    elif what == "repeat":
        data[off:off] = data[off:off + n] * rng.choice((2, 10, 200))
    elif what == "drop":
        del data[off:off + n]
    elif what == "swap":
        off2, n2 = rng.choice(recs)
        if off2 < off:
            off, n, off2, n2 = off2, n2, off, n
        if off + n <= off2:
            a, b = bytes(data[off:off + n]), bytes(data[off2:off2 + n2])
            data[off2:off2 + n2] = a
            data[off:off + n] = b
    elif other:  # a record of another capture (for pcapng maybe a whole section)
        orecs = [r for r in _records(other)
                 if r[0] >= (24 if capture_format(other) == "pcap" else 0)]
        if orecs:
            o, k = rng.choice(orecs)
            if capture_format(other) == "pcapng" and rng.random() < 0.3:
                o, k = 0, len(other)  # a second section
            data[off:off] = other[o:o + k]
            return f"spliced {k} bytes of another capture at {off}"
    return f"record at {off} ({n} bytes): {what}"


def m_compress(rng: random.Random, data: bytearray) -> str:
    """The capture compressed as gzip, bzip2 or xz (kemu may read these), maybe cut short."""
    import bz2
    import gzip
    import lzma

    name, packed = rng.choice((("gzip", gzip.compress), ("bzip2", bz2.compress),
                               ("xz", lzma.compress)))
    out = packed(bytes(data))
    how = f"compressed with {name}"
    if rng.random() < 0.4:
        cut = rng.randrange(len(out))
        out = out[:cut]
        how += f", cut to {cut} bytes"
    data[:] = out
    return how


PCAP_MUTATORS: list[tuple[Mut, int]] = [
    (m_bitflip, 4), (m_bytes, 2), (m_truncate, 3), (m_pcap_record, 5), (m_pcap_header, 3),
    (m_records, 3)]
PCAPNG_MUTATORS: list[tuple[Mut, int]] = [
    (m_bitflip, 4), (m_bytes, 2), (m_truncate, 3), (m_pcapng_block, 5), (m_pcapng_option, 3),
    (m_pcapng_section, 2), (m_pcapng_interface, 3), (m_pcapng_packet_kind, 2), (m_records, 3)]


def mutate_capture(rng: random.Random, seed: bytes, other: bytes | None = None
                   ) -> tuple[bytes, str]:
    """One to three structure-aware mutations of the capture ``seed`` (``other``: a capture
    to splice records from)."""
    data = bytearray(seed)
    steps = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        table = PCAP_MUTATORS if capture_format(bytes(data)) == "pcap" else PCAPNG_MUTATORS
        fn = rng.choices([m for m, _w in table], weights=[w for _m, w in table])[0]
        if fn is m_records:
            steps.append(m_records(rng, data, other))
        else:
            steps.append(fn(rng, data))
    if rng.random() < 0.04:  # last: compressing first would leave the others no structure
        steps.append(m_compress(rng, data))
    return bytes(data), "; ".join(steps)


# -- manifests --------------------------------------------------------------------------------

HUGE = 2**70
LONG = "x" * 100_000
UNICODE = "ünïcødé-☃-\u202e-𝓤-\u0000"
WRONG_VALUES: list[tuple[Any, str]] = [
    ([], "[]"), ({}, "{}"), ("", "''"), ("text", "'text'"), (0, "0"), (1, "1"), (-1, "-1"),
    (True, "true"), (False, "false"), (None, "null"), (1.5, "1.5"), (float("inf"), ".inf"),
    (float("nan"), ".nan"), (HUGE, "2**70"), (-HUGE, "-2**70"), (2**63, "2**63"),
    (UNICODE, "unicode"), (LONG, "100,000 x"), ([1, "a", None], "[1, a, null]"),
    ({"a": {"b": [1]}}, "{a: {b: [1]}}"), ("10.0.0.1", "'10.0.0.1'"), ("None", "'None'"),
    ("999.1.1.1/40", "a bad CIDR"), ([{}], "[{}]"), ("-", "'-'"),
]
NUMBERS = (0, -1, 1, 65535, 65536, 100_000, 4096, 4097, 2**31, 2**63, HUGE, -HUGE)
KINDS = ("Namespace", "Node", "Pod", "Service", "Deployment", "ReplicaSet", "StatefulSet",
         "DaemonSet", "Job", "EndpointSlice", "NetworkPolicy", "Cluster", "List", "PodList",
         "ConfigMap", "", "Unknown")
API_VERSIONS = ("v1", "apps/v1", "batch/v1", "discovery.k8s.io/v1", "networking.k8s.io/v1",
                "kemu.dev/v1alpha1", "kemu.dev/v2", "", "v2", "/", "a/b/c")
MARK = "kemu-fuzz-mark-"
"""Placeholder strings the serializers leave alone, replaced by raw text afterwards (deep
nesting and aliases, which neither PyYAML's dumper nor json can write)."""


def _paths(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every path (of keys and indexes) into ``obj``, containers first."""
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*path, i)))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def _show(path: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path) or "(root)"


def _grown(item: Any, i: int) -> Any:
    """Copy ``i`` of a list item, its names and small numbers made distinct."""
    new = copy.deepcopy(item)
    if isinstance(new, dict):
        for k, v in list(new.items()):
            if k == "name" and isinstance(v, str):
                new[k] = f"{v[:40]}-{i}"
            elif isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536:
                new[k] = 1 + i % 65535
    elif isinstance(new, str):
        new = f"{new}-{i}"
    return new


class Raw:
    """Raw text to put in place of a marker after serializing (see ``MARK``)."""

    def __init__(self) -> None:
        self.texts: dict[str, tuple[str, str]] = {}  # marker -> (yaml text, json text)

    def add(self, yaml_text: str, json_text: str) -> str:
        key = f"{MARK}{len(self.texts)}"
        self.texts[key] = (yaml_text, json_text)
        return key


def deep(depth: int, as_map: bool) -> str:
    """``depth`` levels of nesting, flow style (valid YAML and JSON)."""
    if as_map:
        return '{"a": ' * depth + "1" + "}" * depth
    return "[" * depth + "1" + "]" * depth


def bomb(levels: int = 9, width: int = 9) -> str:
    """A billion-laughs flow sequence: ``width ** levels`` leaves from a few hundred bytes."""
    parts = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        parts.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + "]"


def mutate_documents(rng: random.Random, docs: list[Any], raw: Raw, yaml_ok: bool
                     ) -> tuple[list[Any], str]:
    """One to three mutations of the parsed documents of one file."""
    docs = copy.deepcopy(docs)
    steps = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        steps.append(_mutate_tree(rng, docs, raw, yaml_ok))
    return docs, "; ".join(steps)


def _mutate_tree(rng: random.Random, docs: list[Any], raw: Raw, yaml_ok: bool) -> str:
    if not docs:
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
    d = rng.randrange(len(docs))
    if not isinstance(docs[d], dict | list):
        docs[d] = {"value": docs[d]}
    paths = _paths(docs[d])
    path = rng.choice(paths)
    parent_path, key = path[:-1], path[-1] if path else None
    op = rng.choices(
        ("delete", "wrong", "number", "duplicate", "kind", "api", "grow", "deep", "bomb",
         "cycle", "name"),
        weights=(5, 8, 4, 2, 2, 2, 1, 1, 1, 1, 2))[0]
    where = f"document {d + 1}{_show(path)}"
    if op == "delete" and path:
        container = _get(docs[d], parent_path)
        del container[key]
        return f"{where}: deleted"
    if op == "number":
        ints = [p for p in paths if p and isinstance(_get(docs[d], p), int)]
        if ints:
            path = rng.choice(ints)
            value = rng.choice(NUMBERS)
            _get(docs[d], path[:-1])[path[-1]] = value
            return f"document {d + 1}{_show(path)} = {value}"
        op = "wrong"
    if op == "duplicate":
        twin = copy.deepcopy(docs[d])
        if rng.random() < 0.5 and isinstance(twin, dict) and isinstance(
                twin.get("metadata"), dict):
            twin["metadata"]["name"] = f"{twin['metadata'].get('name')}-twin"
        docs.append(twin)
        return f"document {d + 1} duplicated"
    if op in ("kind", "api") and isinstance(docs[d], dict):
        field, value = ("kind", rng.choice(KINDS)) if op == "kind" else (
            "apiVersion", rng.choice(API_VERSIONS))
        docs[d][field] = value
        return f"document {d + 1}.{field} = {value!r}"
    if op == "name" and isinstance(docs[d], dict):
        meta = docs[d].setdefault("metadata", {})
        if isinstance(meta, dict):
            value = rng.choice(("", "UPPER", "a" * 64, "a" * 254, "-x", "x.", "a/b", "ü",
                                "kube-system", "a..b"))
            meta[rng.choice(("name", "namespace"))] = value
            return f"document {d + 1}.metadata name/namespace = {value!r}"
    if op == "grow":
        lists = [p for p in paths if isinstance(_get(docs[d], p), list) and _get(docs[d], p)]
        if lists:
            path = rng.choice(lists)
            items = _get(docs[d], path)
            n = rng.choice((1000, 10_000))
            first = items[0]
            items[:] = [_grown(first, i) for i in range(n)]
            return f"document {d + 1}{_show(path)}: {n} items"
        op = "wrong"
    if op in ("deep", "bomb", "cycle") and path:
        if op == "deep":
            depth = rng.choice((100, 1000, 1000, 5000))
            as_map = rng.random() < 0.5
            text = deep(depth, as_map)
            value = raw.add(text, text)
            how = f"{depth} levels of {'mappings' if as_map else 'lists'}"
        elif op == "bomb" and yaml_ok:
            value = raw.add(bomb(), json.dumps("lol"))
            how = "an alias bomb (9**9 leaves)"
        elif yaml_ok:
            value = raw.add("&cycle [1, *cycle]", json.dumps("cycle"))
            how = "a list that contains itself (alias)"
        else:
            value, how = LONG, "100,000 x"
        _get(docs[d], parent_path)[key] = value
        return f"{where} = {how}"
    if not path:
        return f"document {d + 1}: unchanged"
    value, how = rng.choice(WRONG_VALUES)
    _get(docs[d], parent_path)[key] = copy.deepcopy(value)
    return f"{where} = {how}"


def dump(docs: list[Any], raw: Raw, as_json: bool) -> str:
    """The documents as YAML (several documents) or JSON (the first), markers replaced."""
    if as_json:
        text = json.dumps(docs[0] if len(docs) == 1 else
                          {"apiVersion": "v1", "kind": "List", "items": docs}, indent=1)
        for key, (_y, j) in raw.texts.items():
            text = text.replace(json.dumps(key), j)
        return text
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump_all(docs, Dumper=dumper, sort_keys=False, allow_unicode=True,
                         width=1 << 20)
    for key, (y, _j) in raw.texts.items():
        text = text.replace(key, y)
    return text


def mutate_text(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """A mutation of a manifest's bytes."""
    op = rng.choice(("truncate", "tab", "utf8", "delete line", "bytes", "bomb", "indent"))
    lines = data.split(b"\n")
    if op == "truncate":
        at = rng.randrange(len(data) + 1)
        return data[:at], f"text truncated to {at} bytes"
    if op == "tab":
        k = rng.randrange(len(lines))
        lines[k] = b"\t" + lines[k]
        return b"\n".join(lines), f"tab at the start of line {k + 1}"
    if op == "utf8":
        at = rng.randrange(len(data) + 1)
        junk = rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\0"))
        return data[:at] + junk + data[at:], f"bytes {junk.hex()} at {at}"
    if op == "delete line":
        k = rng.randrange(len(lines))
        del lines[k]
        return b"\n".join(lines), f"line {k + 1} deleted"
    if op == "bytes":
        at = rng.randrange(len(data) + 1)
        junk = rng.choice((b":", b"-", b"{", b"[", b"&a", b"*a", b"!!python/object:os.system",
                           b"!!binary", b"? ", b"%YAML 9.9\n", b"---\n", b"...\n", b"'", b'"'))
        return data[:at] + junk + data[at:], f"{junk!r} inserted at {at}"
    if op == "indent":
        k = rng.randrange(len(lines))
        lines[k] = b"   " + lines[k]
        return b"\n".join(lines), f"line {k + 1} indented"
    return data + b"\n---\nbomb: " + bomb().encode() + b"\n", "an alias bomb document appended"


def load_documents(data: bytes, as_json: bool) -> list[Any] | None:
    """The documents of a seed file, or None when it does not parse."""
    try:
        text = data.decode("utf-8")
        if as_json:
            return [json.loads(text)]
        return list(yaml.safe_load_all(text))
    except (UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
