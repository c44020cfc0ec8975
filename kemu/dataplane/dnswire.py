"""DNS on the wire for the emulated cluster DNS pods (D-1..D-9, D-8 TTL 5 s) and their clients.

Server side: ``answer`` parses a query message, asks ``kemu.control.dns.lookup`` (through the
callback ``make_resolver`` builds) for the answer and encodes the response (A, AAAA, CNAME,
PTR, SRV, TXT records; NXDOMAIN vs NODATA as D-9 says, with the zone's SOA in the authority
section). No compression on output; names are
case-insensitive on input and echoed as asked. The same message answers UDP datagrams and
RFC 7766 TCP streams (the framing is the slow path's, ``kemu.dataplane.slowpath``).

Client side (``kemu dig``, a pod's resolver): ``query`` encodes a question (RD set, as
glibc's ``res_mkquery``), ``parse_message`` decodes a response into a ``Message`` (header,
question, answer and authority records in presentation form, compression pointers
followed).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
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
    if rtype == "SOA":  # "mname rname serial refresh retry expire minimum"
        mname, rname, *numbers = str(value).split()
        return encode_name(mname) + encode_name(rname) + struct.pack(
            "!IIIII", *(int(x) for x in numbers))
    if rtype == "SRV":  # "prio weight port target"
        prio, weight, port, target = str(value).split()
        return struct.pack("!HHH", int(prio), int(weight), int(port)) + encode_name(target)
    raise ValueError(f"cannot encode {rtype}")


UDP_SIZE = 512        # RFC 1035 4.2.1: a UDP message without EDNS0
TYPE_OPT = 41         # RFC 6891 EDNS0 pseudo-record
TCP_SIZE = 65535      # RFC 7766: a TCP message is limited by its 2-byte length only


def _edns_size(query: bytes, off: int) -> int | None:
    """The UDP payload size of the query's EDNS0 OPT record (after the question at
    ``off``), or None without one."""
    arcount = struct.unpack_from("!H", query, 10)[0]
    for _ in range(arcount):
        try:
            _name, off = parse_name(query, off)
        except ValueError:
            return None
        if off + 10 > len(query):
            return None
        rtype, rclass, _ttl, n = struct.unpack_from("!HHIH", query, off)
        if rtype == TYPE_OPT:
            return rclass
        off += 10 + n
    return None


def _rr(r: Any) -> bytes:
    rd = _rdata(r.type, r.value)
    return encode_name(r.name) + struct.pack("!HHIH", TYPES[r.type], 1, int(r.ttl), len(rd)) + rd


def answer(query: bytes, lookup: Callable[[str, str], tuple[int, list]], *,
           tcp: bool = False, authority: Callable[[str], list] | None = None) -> bytes | None:
    """The response to a DNS query message, or None when it is not a query.

    Over UDP (``tcp`` False) the response fits the client's limit as CoreDNS makes it fit
    (``request.Scrub``, miekg/dns ``Msg.Truncate``): 512 bytes, or the EDNS0 OPT's payload
    size when the query has one (then the response carries an OPT too); answer records that
    do not fit are left out and TC set, which sends the client to TCP (glibc's ``res_send``
    retries over TCP on TC). Over TCP nothing is cut. ``authority(qname)``: the records of
    the authority section of a negative answer (NXDOMAIN, or NODATA: NOERROR without
    records), the zone's SOA as CoreDNS sends it (D-9).
    """
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
    edns = _edns_size(query, off + 4)
    opt = b"\0" + struct.pack("!HHIH", TYPE_OPT, max(UDP_SIZE, edns), 0, 0) \
        if edns is not None else b""
    limit = TCP_SIZE if tcp else max(UDP_SIZE, edns or 0)
    rcode, records = lookup(qname, TYPE_NAMES.get(qtype, str(qtype)))
    question = query[12: off + 4]
    size = 12 + len(question) + len(opt)
    body = b""
    n = 0
    truncated = False
    for r in records:
        try:
            rr = _rr(r)
        except ValueError:
            continue
        if size + len(rr) > limit:
            truncated = True
            break
        body += rr
        size += len(rr)
        n += 1
    auth, ns = b"", 0
    if authority is not None and not n and rcode in (0, 3):
        for r in authority(qname):
            rr = _rr(r)
            if size + len(rr) <= limit:
                auth += rr
                size += len(rr)
                ns += 1
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | (rcode & 0xF) | (
        0x0200 if truncated else 0)
    header = struct.pack("!HHHHHH", ident, rflags, 1, n, ns, 1 if opt else 0)
    return header + question + body + auth + opt


def make_resolver(model: Any, dns: ModuleType) -> Callable[..., bytes | None]:
    """``resolve(query, tcp=False)``: the response of the cluster DNS (``answer``)."""

    def soa(name: str) -> list:
        record = dns.soa(model, name)
        return [] if record is None else [record]

    def resolve(payload: bytes, tcp: bool = False) -> bytes | None:
        return answer(payload, lambda name, qtype: dns.lookup(model, name, qtype), tcp=tcp,
                      authority=soa)

    return resolve


RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED"}


def query(ident: int, qname: str, qtype: str, edns: int | None = None) -> bytes:
    """A standard query for ``qname``/``qtype`` (class IN), recursion desired; ``edns``: an
    EDNS0 OPT record with that UDP payload size (glibc's ``options edns0``: 1200)."""
    header = struct.pack("!HHHHHH", ident & 0xFFFF, 0x0100, 1, 0, 0, 1 if edns else 0)
    opt = b"\0" + struct.pack("!HHIH", TYPE_OPT, edns, 0, 0) if edns else b""
    return header + encode_name(qname) + struct.pack("!HH", TYPES[qtype.upper()], 1) + opt


@dataclass(frozen=True)
class Answer:
    """One resource record of a response, in zone-file presentation form."""

    name: str
    type: str
    ttl: int
    value: str

    def __str__(self) -> str:
        return f"{self.name}\t{self.ttl}\tIN\t{self.type}\t{self.value}"


@dataclass(frozen=True)
class Message:
    """A decoded DNS response: id, flags, rcode, the question, the answer records."""

    ident: int
    flags: int
    rcode: int
    qname: str
    qtype: str
    answers: tuple[Answer, ...]
    authority: tuple[Answer, ...] = ()

    @property
    def status(self) -> str:
        return RCODE_NAMES.get(self.rcode, str(self.rcode))

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def truncated(self) -> bool:
        """TC: the answer did not fit a UDP message (ask again over TCP)."""
        return bool(self.flags & 0x0200)


def _rdata_text(msg: bytes, rtype: int, off: int, n: int) -> str:
    rd = msg[off: off + n]
    if rtype == 1 and n == 4:
        return str(ipaddress.IPv4Address(rd))
    if rtype == 28 and n == 16:
        return str(ipaddress.IPv6Address(rd))
    if rtype in (2, 5, 12):
        return parse_name(msg, off)[0]
    if rtype == 16:
        parts, i = [], 0
        while i < n:
            k = rd[i]
            parts.append('"' + rd[i + 1: i + 1 + k].decode("ascii", "replace") + '"')
            i += 1 + k
        return " ".join(parts)
    if rtype == 6:
        mname, o = parse_name(msg, off)
        rname, o = parse_name(msg, o)
        if o + 20 > off + n:
            raise ValueError("SOA runs past its record")
        return f"{mname} {rname} " + " ".join(str(x) for x in struct.unpack_from("!IIIII",
                                                                                   msg, o))
    if rtype == 33 and n >= 7:
        prio, weight, port = struct.unpack_from("!HHH", msg, off)
        return f"{prio} {weight} {port} {parse_name(msg, off + 6)[0]}"
    return "\\# " + str(n) + (" " + rd.hex() if n else "")  # RFC 3597


def parse_message(msg: bytes) -> Message:
    """Decode a response; ``ValueError`` when it is not a well-formed DNS message."""
    if len(msg) < 12:
        raise ValueError("shorter than a DNS header")
    ident, flags, qd, an, ns = struct.unpack_from("!HHHHH", msg)
    off, qname, qtype = 12, "", ""
    for _ in range(qd):
        name, off = parse_name(msg, off)
        if off + 4 > len(msg):
            raise ValueError("question runs past the message")
        t = struct.unpack_from("!H", msg, off)[0]
        qname, qtype = qname or name, qtype or TYPE_NAMES.get(t, str(t))
        off += 4
    sections: list[list[Answer]] = [[], []]
    for section, count in ((0, an), (1, ns)):
        for _ in range(count):
            name, off = parse_name(msg, off)
            if off + 10 > len(msg):
                raise ValueError("record runs past the message")
            rtype, _cls, ttl, n = struct.unpack_from("!HHIH", msg, off)
            off += 10
            if off + n > len(msg):
                raise ValueError("record data runs past the message")
            sections[section].append(Answer(name, TYPE_NAMES.get(rtype, str(rtype)), ttl,
                                            _rdata_text(msg, rtype, off, n)))
            off += n
    return Message(ident, flags, flags & 0xF, qname, qtype, tuple(sections[0]),
                   tuple(sections[1]))
