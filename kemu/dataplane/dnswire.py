"""DNS on the wire for the emulated cluster DNS pods (D-1..D-9, D-8 TTL 5 s).

Parses a query datagram, asks ``kemu.control.dns.lookup`` for the answer and encodes the
response (A, AAAA, CNAME, PTR, SRV, TXT records; NXDOMAIN vs NODATA as D-9 says). No
compression on output; names are case-insensitive on input and echoed as asked.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from types import ModuleType
from typing import Any

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}
TYPE_NAMES = {v: k for k, v in TYPES.items()}


def parse_name(msg: bytes, off: int) -> tuple[str, int]:
    labels, jumps, end = [], 0, -1
    while True:
        if off >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or jumps > 16:
                raise ValueError("bad compression pointer")
            if end < 0:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off: off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels) + ".", (end if end >= 0 else off)


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def _rdata(rtype: str, value: Any) -> bytes:
    if rtype == "A":
        return ipaddress.IPv4Address(str(value)).packed
    if rtype == "AAAA":
        return ipaddress.IPv6Address(str(value)).packed
    if rtype in ("CNAME", "PTR", "NS"):
        return encode_name(str(value))
    if rtype == "TXT":
        s = str(value).strip('"').encode()
        return bytes([len(s)]) + s
    if rtype == "SRV":  # "prio weight port target"
        prio, weight, port, target = str(value).split()
        return struct.pack("!HHH", int(prio), int(weight), int(port)) + encode_name(target)
    raise ValueError(f"cannot encode {rtype}")


def answer(query: bytes, lookup: Callable[[str, str], tuple[int, list]]) -> bytes | None:
    """The response to a DNS query datagram, or None when it is not a query."""
    if len(query) < 12:
        return None
    ident, flags, qd = struct.unpack_from("!HHH", query)
    if flags & 0x8000 or qd != 1:
        return None
    try:
        qname, off = parse_name(query, 12)
    except ValueError:
        return None
    if off + 4 > len(query):
        return None
    qtype, qclass = struct.unpack_from("!HH", query, off)
    rcode, records = lookup(qname, TYPE_NAMES.get(qtype, str(qtype)))
    body = b""
    n = 0
    for r in records:
        try:
            rd = _rdata(r.type, r.value)
        except ValueError:
            continue
        body += encode_name(r.name) + struct.pack("!HHIH", TYPES[r.type], 1, int(r.ttl), len(rd))
        body += rd
        n += 1
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | (rcode & 0xF)
    header = struct.pack("!HHHHHH", ident, rflags, 1, n, 0, 0)
    return header + query[12: off + 4] + body


def make_resolver(model: Any, dns: ModuleType) -> Callable[[bytes], bytes | None]:
    def resolve(payload: bytes) -> bytes | None:
        return answer(payload, lambda name, qtype: dns.lookup(model, name, qtype))

    return resolve
