"""A name looked up from a pod as its resolver does: ``EmulatedCluster.dig``, ``kemu dig``.

The pod's resolv.conf (``kemu.control.resolvconf``, D-10) gives the nameservers, the search
list and ``ndots``; ``Search`` walks the candidate names in glibc's ``res_nsearch`` order,
stopping at the first answer with records (NXDOMAIN, NODATA and SERVFAIL go on to the next
candidate; REFUSED and other errors end the search list, after which the name as it is is
still tried if it was not). Each query is a real packet sent from the pod through the
datapath (``Emulator.send``) to the nameserver (the kube-dns ClusterIP, DNAT'd to a
CoreDNS pod, whose emulated stack answers) and back: UDP, or TCP with ``tcp=True`` (RFC
7766: handshake, one length-prefixed query, the answer acknowledged, FIN both ways), as
glibc does with ``options use-vc`` in the pod's resolv.conf (honoured too). A UDP answer with
TC set (it did not fit 512 bytes, or the EDNS0 size that ``options edns0`` advertises: 1200,
as glibc) is asked again over TCP from the same nameserver, as glibc's ``res_send`` does;
both queries are listed. A query whose answer does not come back (dropped, REJECTed,
left the cluster) goes to the next nameserver of the file, as glibc rotates through them
(one attempt each: kemu's clock does not wait out ``timeout:``). One type is asked per name,
like ``dig +search`` and ``host -t``, where getaddrinfo would ask A and AAAA together.

Source ports come from Linux's ephemeral range (32768-60999), one per query, in turn, so that
each query is its own conntrack flow; query ids and the client's TCP initial sequence
numbers count up from fixed starts (a seeded emulator: the same run gives the same bytes).

``-w out.pcapng`` writes every hop of every packet of the lookup (queries, answers, the TCP
segments, ARP if any), one interface per emulated device as ``kemu replay -w`` does, each
hop's decisions as its comment; time stamps are the emulated clock's, an answer one
microsecond after what it answers (as the engine's rounds), the hops of one packet a
nanosecond apart, each send a millisecond after the previous one (as the API's clock).

``kemu.frontend.dig_cmd`` is the command (exit 0 when a query got an answer with records, 1
when none did); the API imports this module for ``EmulatedCluster.dig``, which this module
does not import (``Emulator`` says what it uses of one).
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kemu.dataplane import codes as C
from kemu.dataplane import dnswire
from kemu.dataplane.describe import event_text, owner_text
from kemu.dataplane.packet import ETH_IP, u16, u32
from kemu.errors import KemuError

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.dataplane.tables import Tables
    from kemu.frontend.engine import Engine
    from kemu.frontend.trace import Trace

EPHEMERAL = (32768, 60999)  # Linux's net.ipv4.ip_local_port_range
FIRST_ID = 0x1000
EDNS_SIZE = 1200  # glibc's RESOLV_EDNS_BUFFER_SIZE with options edns0
TCP_ISN = 1_000_000
_QUIET = (C.EV_TTL, C.EV_FIXL2)


class Emulator(Protocol):
    """What a lookup uses of ``kemu.frontend.api.Emulator``."""

    model: Cluster
    engine: Engine
    _clock: int

    @property
    def tables(self) -> Tables: ...

    def send(self, packet: Any, src: str | None = None, *, at: str | None = None,
             fix_l2: bool | None = None, time_ns: int | None = None) -> Trace: ...


@dataclass
class DnsQuery:
    """One question sent and what came back: ``message`` None when no answer arrived."""

    qname: str
    qtype: str
    server: str
    transport: str               # "UDP" or "TCP"
    ident: int
    message: dnswire.Message | None = None
    answered_by: str = ""        # the pod whose stack answered (owner of the answer's hop)
    traces: list[Trace] = field(default_factory=list)  # every packet of this query
    times: list[int] = field(default_factory=list)     # when each trace was sent (ns)

    @property
    def rcode(self) -> int | None:
        return None if self.message is None else self.message.rcode

    @property
    def status(self) -> str:
        return "no reply" if self.message is None else self.message.status

    @property
    def answered(self) -> bool:
        """glibc's ``res_query`` success: NOERROR with at least one answer record (a
        truncated UDP answer is asked again over TCP instead)."""
        return self.message is not None and self.rcode == 0 and bool(
            self.message.answers) and not self.message.truncated


@dataclass
class DigResult:
    """A lookup: the pod, its resolv.conf, every query in order, the one that answered."""

    pod: str
    name: str
    qtype: str
    resolv_conf: str
    queries: list[DnsQuery] = field(default_factory=list)

    @property
    def answer(self) -> DnsQuery | None:
        return next((q for q in self.queries if q.answered), None)

    @property
    def answered(self) -> bool:
        return self.answer is not None

    @property
    def records(self) -> list[dnswire.Answer]:
        a = self.answer
        return list(a.message.answers) if a is not None and a.message is not None else []

    def text(self) -> str:
        """``dig +search``-like sections, one per query, then the outcome."""
        lines = [f"; <<>> kemu dig <<>> -S {self.pod} {self.name} {self.qtype}",
                 f";; resolv.conf of {self.pod}:"]
        lines += [f";;   {line}" for line in self.resolv_conf.splitlines()]
        for n, q in enumerate(self.queries, 1):
            lines += ["", f";; query {n} of {len(self.queries)}: {q.qname} {q.qtype} to "
                      f"{q.server}#53 ({q.transport})"]
            if q.message is None:
                lines.append(";; no reply (the packets' fates are in the pcapng, or use "
                             "kemu trace)")
                continue
            m = q.message
            lines.append(f";; ->>HEADER<<- opcode: QUERY, status: {m.status}, id: {m.ident}"
                         + (" (truncated: TC set, asked again over TCP)" if m.truncated else ""))
            lines += [";; QUESTION SECTION:", f";{m.qname}\t\tIN\t{m.qtype}"]
            if m.answers:
                lines += ["", ";; ANSWER SECTION:", *(str(a) for a in m.answers)]
            if m.authority:
                lines += ["", ";; AUTHORITY SECTION:", *(str(a) for a in m.authority)]
            lines.append(f";; SERVER: {q.server}#53({q.server}) ({q.transport})"
                         + (f", answered by {q.answered_by}" if q.answered_by else ""))
        a = self.answer
        lines.append("")
        if a is not None:
            lines.append(f";; answer: {a.qname} {a.qtype} (query {self.queries.index(a) + 1}"
                         f" of {len(self.queries)})")
        else:
            last = self.queries[-1].status if self.queries else "no nameserver"
            lines.append(f";; no answer for {self.name} {self.qtype} after "
                         f"{len(self.queries)} queries (last: {last})")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"pod": self.pod, "name": self.name, "type": self.qtype,
                "answered": self.answered, "resolvConf": self.resolv_conf,
                "queries": [{"name": q.qname, "type": q.qtype, "server": q.server,
                             "transport": q.transport, "id": q.ident, "status": q.status,
                             "truncated": bool(q.message and q.message.truncated),
                             "answeredBy": q.answered_by,
                             "answers": [{"name": r.name, "type": r.type, "ttl": r.ttl,
                                          "value": r.value}
                                         for r in (q.message.answers if q.message else ())]}
                            for q in self.queries]}


def _check_name(name: str) -> None:
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if not name or name == "." or len(name.rstrip(".")) > 253 or any(
            not 0 < len(label) <= 63 for label in labels) or not name.isascii() or any(
            c.isspace() for c in name):
        raise KemuError(f"{name!r} is not a DNS name (dot-separated labels of 1 to 63 "
                        "characters, 253 in all)")


def lookup(emu: Emulator, pod_ref: str, name: str, qtype: str = "A", *,
           tcp: bool = False, namespace: str | None = None) -> DigResult:
    """Resolve ``name`` from the pod ``pod_ref`` (``ns/pod``, or a pod in ``namespace``)."""
    from kemu.control.resolvconf import Search, resolv_conf
    from kemu.frontend.views import find_pod

    qtype = qtype.upper()
    if qtype not in dnswire.TYPES:
        raise KemuError(f"unknown DNS type {qtype!r} (have: {', '.join(dnswire.TYPES)})")
    _check_name(name)
    pod = find_pod(emu.model, pod_ref, namespace)
    conf = resolv_conf(emu.model, pod)
    result = DigResult(pod.key, name, qtype, conf.text())
    servers = [ns for ns in conf.nameservers if ipaddress.ip_address(ns).version == 4]
    if not servers:
        raise KemuError(f"pod {pod.key} has no IPv4 nameserver in its resolv.conf "
                        f"(policy {conf.policy}); kemu models IPv4 only")
    tcp = tcp or "use-vc" in conf.options
    edns = EDNS_SIZE if "edns0" in conf.options else None
    search = Search(name, conf)  # as typed: the server compares case-insensitively (D-8)
    for qname in search:
        q = None
        for server in servers:
            q = _ask(emu, pod.key, qname, qtype, server, tcp, edns)
            result.queries.append(q)
            if q.message is not None and q.message.truncated and not tcp:
                q = _ask(emu, pod.key, qname, qtype, server, True, edns)  # TC: again by TCP
                result.queries.append(q)
            if q.message is not None:
                break
        search.result(q.rcode if q is not None else None, q is not None and q.answered)
    return result


def _ports(emu: Emulator) -> itertools.cycle:
    ports = getattr(emu, "_dig_ports", None)
    if ports is None:
        ports = itertools.cycle(range(*EPHEMERAL))
        emu._dig_ports = ports  # type: ignore[attr-defined]
    return ports


def _ask(emu: Emulator, src: str, qname: str, qtype: str, server: str,
         tcp: bool, edns: int | None = None) -> DnsQuery:
    port = next(_ports(emu))
    ident = FIRST_ID + port - EPHEMERAL[0]
    q = DnsQuery(qname, qtype, server, "TCP" if tcp else "UDP", ident & 0xFFFF)
    msg = dnswire.query(q.ident, qname, qtype, edns)
    payload = _tcp_exchange(emu, src, server, port, msg, q) if tcp else \
        _udp_exchange(emu, src, server, port, msg, q)
    if payload is not None:
        try:
            m = dnswire.parse_message(payload)
        except ValueError:
            m = None
        if m is not None and m.is_response and m.ident == q.ident:
            q.message = m
    return q


def _udp_exchange(emu: Emulator, src: str, server: str, port: int, msg: bytes,
                  q: DnsQuery) -> bytes | None:
    from scapy.layers.inet import IP, UDP

    trace = _send(emu, IP(dst=server) / UDP(sport=port, dport=53) / msg, src, q)
    got = _received(trace, server, port, C.PROTO_UDP, q)
    if not got:
        return None
    frame = got[0]
    l4 = 14 + (frame[14] & 0xF) * 4
    return bytes(frame[l4 + 8: 14 + u16(frame, 16)])


def _tcp_exchange(emu: Emulator, src: str, server: str, port: int, msg: bytes,
                  q: DnsQuery) -> bytes | None:
    """RFC 7766 from the client's side: SYN, ACK, the query, ACKs, FIN; the answer or None."""
    from scapy.layers.inet import IP, TCP

    seq = TCP_ISN + port

    def send(flags: str, ack: int, data: bytes = b"") -> list[bytes]:
        pkt = IP(dst=server) / TCP(sport=port, dport=53, flags=flags, seq=seq, ack=ack,
                                   options=[("MSS", 1460)] if flags == "S" else [])
        trace = _send(emu, pkt / data if data else pkt, src, q)
        return _received(trace, server, port, C.PROTO_TCP, q)

    synack = [f for f in send("S", 0) if _tcp_flags(f) & 0x12 == 0x12]
    if not synack:
        return None
    seq += 1
    rcv = (_tcp_u32(synack[0], 4) + 1) & 0xFFFFFFFF
    send("A", rcv)
    wire = len(msg).to_bytes(2, "big") + msg
    segments = send("PA", rcv, wire)
    seq += len(wire)
    data = b""
    for f in segments:
        off = 14 + (f[14] & 0xF) * 4
        body = f[off + (f[off + 12] >> 4) * 4: 14 + u16(f, 16)]
        if _tcp_u32(f, 4) == (rcv + len(data)) & 0xFFFFFFFF:
            data += body
    rcv = (rcv + len(data)) & 0xFFFFFFFF
    fin = [f for f in send("FA", rcv) if _tcp_flags(f) & 0x01]
    seq += 1
    if fin:
        send("A", (rcv + 1) & 0xFFFFFFFF)
    if len(data) < 2 or len(data) < 2 + u16(data, 0):
        return None
    return data[2: 2 + u16(data, 0)]


def _send(emu: Emulator, pkt: Any, src: str, q: DnsQuery) -> Trace:
    """``emu.send`` at the next millisecond of the emulated clock, remembered for -w."""
    ts = max(emu._clock, emu.engine.clock_ns) + 1_000_000
    trace = emu.send(pkt, src=src, time_ns=ts)
    q.traces.append(trace)
    q.times.append(ts)
    return trace


def _tcp_u32(frame: bytes, at: int) -> int:
    return u32(frame, 14 + (frame[14] & 0xF) * 4 + at)


def _tcp_flags(frame: bytes) -> int:
    return frame[14 + (frame[14] & 0xF) * 4 + 13]


def _received(trace: Trace, server: str, port: int, proto: int, q: DnsQuery) -> list[bytes]:
    """The frames from ``server``:53 to the client's ``port`` that reached it, in order."""
    want = int(ipaddress.IPv4Address(server))
    out = []
    for p in trace.packets:
        if p.origin != "answer":
            continue
        for (kind, _r, _i, _a), f in zip(p.outcomes, p.outcome_frames, strict=True):
            if kind != C.OUT_DELIVERED or len(f) < 34 or u16(f, 12) != ETH_IP or f[23] != proto:
                continue
            l4 = 14 + (f[14] & 0xF) * 4
            if u32(f, 26) == want and u16(f, l4) == 53 and u16(f, l4 + 2) == port:
                out.append(f)
                if p.hops and not q.answered_by:
                    q.answered_by = owner_text(trace.tables, p.hops[0][0])
    return out


def write_pcapng(result: DigResult, emu: Emulator, path: str) -> int:
    """Every hop of every packet of ``result`` into ``path`` (see the module docstring);
    returns the number of packets written."""
    from kemu._version import __version__
    from kemu.io.pcapng import INBOUND, OUTBOUND, PcapngWriter

    t = emu.tables
    file_if: dict[int, int] = {}
    written = 0
    with PcapngWriter(path, application=f"kemu {__version__} dig",
                      comment=f"kemu dig -S {result.pod} {result.name} {result.qtype}: one "
                      "interface per hop") as w:
        for i in range(t.n_ifaces):
            if int(t.if_kind[i]) != C.IF_NODE_LOCAL:
                file_if[i] = w.add_interface(t.if_name[i], t.if_desc[i])
        for q in result.queries:
            for trace, clock in zip(q.traces, q.times, strict=True):
                depth: list[int] = []
                for p in trace.packets:
                    depth.append(0 if p.parent < 0 else depth[p.parent] + 1)
                    for h, (iface, direction, data, events) in enumerate(p.hops):
                        if iface not in file_if:
                            continue
                        words = "; ".join(event_text(t, *e) for e in events
                                          if e[0] not in _QUIET)
                        w.write_packet(file_if[iface], clock + depth[-1] * 1000 + h, data,
                                       flags=INBOUND if direction == C.DIR_IN else OUTBOUND,
                                       comment=words or None)
                        written += 1
    return written
