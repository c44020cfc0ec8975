"""The slow path: answers of emulated end-host stacks and ICMP errors of node kernels.

Rare packets leave the batch datapath here, as in a real switch: an ARP request for an
address an interface owns, an ICMP echo request, a TCP SYN to a pod (SYN-ACK if the pod
listens on the port, RST if not), data on an accepted TCP connection (see below), UDP to a
listening port (an echo of the payload; DNS queries to a DNS pod answered by a resolver
callback), UDP to a closed port (ICMP port unreachable, type 3 code 3), and the ICMP errors
a node sends when it drops (time exceeded, port unreachable for S-9, net unreachable).

TCP data: a stack keeps one ``TcpStream`` per accepted connection, keyed by the 4-tuple
(peer address, peer port, own address, own port), made by the SYN it SYN-ACKs. In-order
data is appended to ``TcpStream.data`` and acknowledged; a segment past a hole is kept aside
(``TcpStream.ahead``) and the ACK stays at the hole (a duplicate ACK) until the hole fills;
a retransmission is acknowledged again and its known bytes dropped. The application behind
the port then consumes whole messages from ``data``: on port 53 of a DNS server (a stack with
a resolver listening there) RFC 7766 DNS over TCP (2-byte length-prefixed messages, each
answered the same way); on any other listening port a minimal HTTP/1.x server
(``http_requests``: pipelined requests, bodies by ``Content-Length``; each answered
``HTTP/1.1 200 OK`` with a short text body; ``Connection: close`` or HTTP/1.0 without
keep-alive closes after the answer; a request it cannot parse gets ``400 Bad Request`` and
the connection closed; a chunked request body ``411 Length Required``, as servers that do
not take chunked bodies answer). Answers go out in segments of at most the peer's MSS (the
SYN's option; 536 without one, RFC 9293), PSH on the last. An in-order FIN is answered with
FIN-ACK (the application closes its end at once) and the last ACK forgets the connection.
A segment of a connection the stack does not know (its SYN was not seen) is ignored, where
Linux would answer a RST after its SYN-cookie check fails. A connection Cilium redirects to
its L7 proxy has ``TcpStream.proxy`` set (``kemu.dataplane.l7``): the proxy takes the
requests from the stream and hands the pod's application only those it allows.

What a pod listens on is the control plane's
decision (``kemu.control.listen``). Everything is built from bytes; no Scapy. Answers are
Ethernet frames ready to inject; their layout follows what Linux sends (TTL 64, ICMP errors
quote up to 548 bytes of the offending datagram with TOS 0xC0, as ``icmp_send`` does).

DF: TCP and UDP answers set DF, ICMP ones (echo replies, errors) do not, as Linux does with
``ip_no_pmtu_disc`` 0: sockets default to ``IP_PMTUDISC_WANT`` and ``__ip_make_skb`` /
``ip_build_and_send_pkt`` set DF when ``ip_dont_fragment`` holds (a UDP reply fitting the
route's MTU, a SYN-ACK, a RST); ``icmp_reply`` and ``icmp_send`` send through the per-CPU
ICMP socket, which ``icmp_sk_init`` makes ``IP_PMTUDISC_DONT``: no DF
(``net/ipv4/icmp.c``, ``net/ipv4/ip_output.c``, ``include/net/ip.h``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from kemu.dataplane import codes as C
from kemu.dataplane.packet import (
    ETH_ARP,
    ETH_IP,
    flow_hash,
    ip_checksum,
    put16,
    u16,
    u32,
    u48,
)

# a DNS resolver: (query message, tcp=False) -> the response message or None; over UDP the
# response fits a UDP message (TC set when records were left out), over TCP it is whole
Resolver = Callable[..., bytes | None]


def mac_bytes(mac: int) -> bytes:
    return mac.to_bytes(6, "big")


def ether(dst: int, src: int, ethertype: int) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + ethertype.to_bytes(2, "big")


def ipv4(src: int, dst: int, proto: int, payload: bytes, *, ttl: int = 64, tos: int = 0,
         ident: int = 0, df: bool = False) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBHII", 0x45, tos, 20 + len(payload), ident,
                                0x4000 if df else 0, ttl, proto, 0, src, dst))
    put16(hdr, 10, ip_checksum(hdr, 0, 20))
    return bytes(hdr) + payload


def l4_checksum(src: int, dst: int, proto: int, seg: bytes) -> int:
    pseudo = struct.pack("!IIBBH", src, dst, 0, proto, len(seg))
    c = ip_checksum(pseudo + seg, 0, len(pseudo) + len(seg))
    return c


def icmp(type_: int, code: int, rest: bytes, body: bytes) -> bytes:
    msg = bytearray(struct.pack("!BBH", type_, code, 0) + rest + body)
    put16(msg, 2, ip_checksum(msg, 0, len(msg)))
    return bytes(msg)


def arp_reply(req: bytes, mac: int) -> bytes | None:
    """The reply to an ARP request (``req`` an Ethernet frame) for an address we own."""
    if len(req) < 42 or u16(req, 12) != ETH_ARP or u16(req, 20) != 1:
        return None
    sha, spa, tpa = u48(req, 22), u32(req, 28), u32(req, 38)
    body = struct.pack("!HHBBH", 1, ETH_IP, 6, 4, 2) + mac_bytes(mac) + tpa.to_bytes(4, "big") \
        + mac_bytes(sha) + spa.to_bytes(4, "big")
    return ether(sha, mac, ETH_ARP) + body


def arp_request(src_mac: int, src_ip: int, target_ip: int) -> bytes:
    body = struct.pack("!HHBBH", 1, ETH_IP, 6, 4, 1) + mac_bytes(src_mac) + \
        src_ip.to_bytes(4, "big") + bytes(6) + target_ip.to_bytes(4, "big")
    return ether(0xFFFFFFFFFFFF, src_mac, ETH_ARP) + body


def icmp_error(orig: bytes, type_: int, code: int, src: int = 0, mtu: int = 0) -> bytes:
    """An ICMP error about ``orig`` (an Ethernet frame), addressed to its source. ``src`` 0
    lets the node's routing pick the source address (``icmp_send`` with saddr 0); ``mtu``:
    the next-hop MTU of a "fragmentation needed" (3/4, RFC 1191: the header's low 16 bits,
    ``icmp_send``'s ``info``)."""
    ip = orig[14:]
    tot = u16(ip, 2) if len(ip) >= 20 else len(ip)
    quoted = ip[: min(tot, len(ip), 576 - 28)]
    msg = icmp(type_, code, struct.pack("!HH", 0, mtu & 0xFFFF), quoted)
    return ether(0, 0, ETH_IP) + ipv4(src, u32(ip, 12), C.PROTO_ICMP, msg, tos=0xC0)


def _reply_ip(frame: bytes, proto: int, payload: bytes) -> bytes:
    """An IPv4 frame from the receiver back to the sender (L2 filled in at injection)."""
    src, dst = u32(frame, 30), u32(frame, 26)
    return ether(u48(frame, 6), u48(frame, 0), ETH_IP) + ipv4(
        src, dst, proto, payload, df=proto in (C.PROTO_TCP, C.PROTO_UDP))  # see DF above


def tcp_segment(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int,
                window: int = 64240, options: bytes = b"", payload: bytes = b"") -> bytes:
    off = (20 + len(options)) // 4
    seg = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF,
                                ack & 0xFFFFFFFF, off << 4, flags, window, 0, 0) + options
                    + payload)
    put16(seg, 16, l4_checksum(src, dst, C.PROTO_TCP, bytes(seg)))
    return bytes(seg)


def udp_datagram(src: int, dst: int, sport: int, dport: int, payload: bytes) -> bytes:
    seg = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    c = l4_checksum(src, dst, C.PROTO_UDP, bytes(seg))
    put16(seg, 6, c or 0xFFFF)
    return bytes(seg)


MSS_DEFAULT = 536  # RFC 9293 3.7.1: the MSS a peer assumes without the option
MSS_OWN = 1460     # what the emulated stacks announce in their SYN-ACK (1500-byte MTU)
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SEQ = 0xFFFFFFFF


def _after(a: int, b: int) -> bool:
    """Sequence number ``a`` is after ``b`` (RFC 1982 arithmetic on 32 bits)."""
    return 0 < ((a - b) & SEQ) < 0x80000000


@dataclass
class TcpStream:
    """One accepted TCP connection of an emulated stack: what it received, in order.

    ``data`` holds the reassembled bytes the application has not consumed yet; ``rcv_nxt``
    is the next sequence number expected from the peer (what the stack acknowledges),
    ``snd_nxt`` the stack's own next one. ``ahead`` keeps segments past a hole by sequence
    number until the hole fills. ``received`` counts every in-order byte (consumed or not).
    """

    peer: tuple[int, int]   # (address, port) of the client
    local: tuple[int, int]  # (address, port) of the server
    rcv_nxt: int
    snd_nxt: int
    mss: int = MSS_DEFAULT
    data: bytearray = field(default_factory=bytearray)
    ahead: dict[int, bytes] = field(default_factory=dict)
    received: int = 0
    fin_received: bool = False
    fin_sent: bool = False
    close_after: bool = False  # the application closes once it has answered
    # an L7 proxy in front of the application (``kemu.dataplane.l7.HttpProxy``: a connection
    # Cilium redirects): called with the stream and the application, it returns the answer
    proxy: Callable[[TcpStream, Callable[[TcpStream], bytes]], bytes] | None = None

    def accept(self, seq: int, payload: bytes) -> None:
        """Take a segment's payload at ``seq``: in order (or overlapping what is known) it is
        appended and whatever it joins from ``ahead`` too; past a hole it waits there."""
        if payload and _after(seq, self.rcv_nxt):
            self.ahead.setdefault(seq, payload)
            return
        skip = (self.rcv_nxt - seq) & SEQ
        if skip < len(payload):
            self._append(payload[skip:])
        while self.ahead:
            progressed = False
            for s in sorted(self.ahead, key=lambda x: (x - self.rcv_nxt) & SEQ):
                if _after(s, self.rcv_nxt):
                    break
                part = self.ahead.pop(s)
                skip = (self.rcv_nxt - s) & SEQ
                if skip < len(part):
                    self._append(part[skip:])
                progressed = True
            if not progressed:
                break

    def _append(self, data: bytes) -> None:
        self.data += data
        self.received += len(data)
        self.rcv_nxt = (self.rcv_nxt + len(data)) & SEQ


# An application behind a TCP port: consumes whole messages from the stream's data and
# returns the bytes it sends back (b"" when it waits for more)
Application = Callable[[TcpStream], bytes]


def dns_over_tcp(resolver: Resolver) -> Application:
    """RFC 7766 (RFC 1035 4.2.2): each message has a 2-byte length prefix; every complete
    query is answered in the same framing, in order; one that is not a query is dropped."""

    def app(stream: TcpStream) -> bytes:
        out = b""
        while len(stream.data) >= 2:
            n = u16(stream.data, 0)
            if len(stream.data) < 2 + n:
                break
            query = bytes(stream.data[2: 2 + n])
            del stream.data[: 2 + n]
            answer = resolver(query, tcp=True)
            if answer is not None:
                out += len(answer).to_bytes(2, "big") + answer
        return out

    return app


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP/1.x request as it arrived: request line, headers (names lowercased), body."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    @property
    def keep_alive(self) -> bool:
        """RFC 9112 9.3: HTTP/1.1 persists unless ``Connection: close``; HTTP/1.0 only with
        ``Connection: keep-alive``."""
        conn = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


class HttpError(ValueError):
    """A request the server refuses: ``status`` and its reason phrase."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP/1\.[01])")
MAX_HEAD = 65536


def http_requests(buf: bytearray) -> list[HttpRequest]:
    """Every complete request at the start of ``buf``, consumed from it (pipelining, RFC
    9112 9.3.2); an incomplete one stays. Raises ``HttpError`` for one it cannot take."""
    out: list[HttpRequest] = []
    while buf:
        while buf[:2] == b"\r\n":  # RFC 9112 2.2: empty lines before a request
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD or (buf.find(b"\r\n") >= 0 and _REQUEST_LINE.fullmatch(
                    bytes(buf[: buf.find(b"\r\n")])) is None):
                raise HttpError(400, "Bad Request")
            break
        lines = bytes(buf[:end]).split(b"\r\n")
        m = _REQUEST_LINE.fullmatch(lines[0])
        if m is None:
            raise HttpError(400, "Bad Request")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise HttpError(400, "Bad Request")
            headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
        req = HttpRequest(m.group(1).decode(), m.group(2).decode("latin-1"),
                          m.group(3).decode(), tuple(headers), b"")
        if req.header("transfer-encoding") is not None:
            raise HttpError(411, "Length Required")  # chunked bodies: not taken
        length = req.header("content-length") or "0"
        if not length.isdigit():
            raise HttpError(400, "Bad Request")
        total = end + 4 + int(length)
        if len(buf) < total:
            break
        out.append(HttpRequest(req.method, req.target, req.version, req.headers,
                               bytes(buf[end + 4: total])))
        del buf[:total]
    return out


def http_response(status: int, reason: str, body: bytes, *, close: bool,
                  head: bool = False) -> bytes:
    """A minimal HTTP/1.1 response: Content-Type, Content-Length, ``Connection: close``
    when the server closes after it; no body for HEAD (RFC 9110 9.3.2)."""
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain",
             f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def http_server(stream: TcpStream) -> bytes:
    """The emulated HTTP/1.x server: ``200 OK`` and a line naming who answered what."""
    try:
        requests = http_requests(stream.data)
    except HttpError as e:
        stream.data.clear()
        stream.close_after = True
        return http_response(e.status, e.reason, f"{e.reason}\n".encode(), close=True)
    out = b""
    ip, port = stream.local
    for req in requests:
        body = f"{req.method} {req.target} answered by {_ip(ip)}:{port}\n".encode()
        close = not req.keep_alive
        out += http_response(200, "OK", body, close=close, head=req.method == "HEAD")
        if close:
            stream.close_after = True
            stream.data.clear()  # what follows a closing request is never read
            break
    return out


def _ip(a: int) -> str:
    return ".".join(str(b) for b in a.to_bytes(4, "big"))


def _peer_mss(frame: bytes, l4: int, end: int) -> int:
    """The MSS option of a SYN (RFC 9293 3.2), or the default without one."""
    off, stop = l4 + 20, min(end, l4 + (frame[l4 + 12] >> 4) * 4)
    while off < stop:
        kind = frame[off]
        if kind == 0:
            break
        if kind == 1:
            off += 1
            continue
        if off + 1 >= stop or frame[off + 1] < 2:
            break
        if kind == 2 and frame[off + 1] == 4 and off + 4 <= stop:
            return u16(frame, off + 2) or MSS_DEFAULT
        off += frame[off + 1]
    return MSS_DEFAULT


class HostStack:
    """What one end host (pod sandbox, external host, gateway) answers.

    ``listen``: set of (proto number, port) the host's applications listen on (a pod's:
    ``kemu.control.listen``); ``listen_all``: every port; ``udp_echo``: UDP ports that echo
    even when not listening (older ``kemu.dev/udp-echo``; every listening UDP port echoes);
    ``resolver``: answers DNS on UDP and TCP 53 when the host listens there; ``streams``:
    its accepted TCP connections (``TcpStream``) by 4-tuple.
    """

    def __init__(self, ip: int, mac: int, listen: set[tuple[int, int]] | None = None,
                 udp_echo: set[int] | None = None, resolver: Resolver | None = None,
                 seed: int = 0, listen_all: bool = False) -> None:
        self.ip, self.mac = ip, mac
        self.listen = listen or set()
        self.listen_all = listen_all
        self.udp_echo = udp_echo or set()
        self.resolver = resolver
        self.seed = seed
        # (proto, local port) of connections this host opened itself: their answers are
        # consumed by the client socket, not refused
        self.clients: set[tuple[int, int]] = set()
        self.streams: dict[tuple[int, int, int, int], TcpStream] = {}

    def note_sent(self, frame: bytes) -> None:
        """Remember the source port of a packet this host sends (its client socket)."""
        if len(frame) >= 38 and u16(frame, 12) == ETH_IP and frame[23] in (
                C.PROTO_TCP, C.PROTO_UDP):
            l4 = 14 + (frame[14] & 0xF) * 4
            if l4 + 2 <= len(frame):
                self.clients.add((frame[23], u16(frame, l4)))

    def application(self, port: int) -> Application:
        """What answers data on TCP ``port``: DNS over TCP on 53 of a DNS server, else HTTP."""
        if port == 53 and self.resolver is not None:
            return dns_over_tcp(self.resolver)
        return http_server

    def answer(self, frame: bytes, transport: bool = True, loopback: bool = False
               ) -> bytes | None:
        """The first frame this host sends back, or None (see ``answers``)."""
        out = self.answers(frame, transport, loopback)
        return out[0] if out else None

    def answers(self, frame: bytes, transport: bool = True, loopback: bool = False
                ) -> list[bytes]:
        """The frames this host sends back, in order. ``transport`` False: ARP only.
        ``loopback``: the frame came over ``lo``, where every address of 127.0.0.0/8 is
        the host's own too (the local table's ``local 127.0.0.0/8 dev lo``; an application
        bound to 0.0.0.0 answers there)."""
        if len(frame) < 14:
            return []
        et = u16(frame, 12)
        if et == ETH_ARP:
            reply = arp_reply(frame, self.mac) if len(frame) >= 42 and u32(
                frame, 38) == self.ip else None
            return [] if reply is None else [reply]
        if et != ETH_IP or not transport or len(frame) < 34:
            return []
        dst = u32(frame, 30)
        if (dst != self.ip and not (loopback and dst >> 24 == 127)) or u16(frame, 20) & 0x3FFF:
            return []
        ihl = (frame[14] & 0xF) * 4
        l4 = 14 + ihl
        end = 14 + u16(frame, 16)
        proto = frame[23]
        if proto == C.PROTO_ICMP and end - l4 >= 8 and frame[l4] == 8:
            return [_reply_ip(frame, C.PROTO_ICMP, icmp(0, 0, bytes(frame[l4 + 4: l4 + 8]),
                                                        bytes(frame[l4 + 8: end])))]
        if proto == C.PROTO_TCP and end - l4 >= 20:
            return self._tcp(frame, l4, end)
        if proto == C.PROTO_UDP and end - l4 >= 8:
            ans = self._udp(frame, l4, end)
            return [] if ans is None else [ans]
        return []

    def _tcp(self, frame: bytes, l4: int, end: int) -> list[bytes]:
        src, dst = u32(frame, 26), u32(frame, 30)
        sport, dport = u16(frame, l4), u16(frame, l4 + 2)
        seq, ack = u32(frame, l4 + 4), u32(frame, l4 + 8)
        flags = frame[l4 + 13]
        data_off = l4 + (frame[l4 + 12] >> 4) * 4
        data_len = max(0, end - data_off)
        key = (src, sport, dst, dport)
        if flags & TCP_RST:
            self.streams.pop(key, None)
            return []  # never answer a RST
        if (C.PROTO_TCP, dport) in self.clients:
            return []  # a client socket takes its own answers
        if self.listen_all or (C.PROTO_TCP, dport) in self.listen:
            if flags & TCP_SYN and not flags & TCP_ACK:
                isn = flow_hash(self.seed, 0, C.PROTO_TCP, src, sport, dst, dport) & SEQ
                self.streams[key] = TcpStream((src, sport), (dst, dport), (seq + 1) & SEQ,
                                              (isn + 1) & SEQ, _peer_mss(frame, l4, end))
                mss = MSS_OWN.to_bytes(2, "big")
                seg = tcp_segment(dst, src, dport, sport, isn, seq + 1, TCP_SYN | TCP_ACK,
                                  options=b"\x02\x04" + mss)
                return [_reply_ip(frame, C.PROTO_TCP, seg)]
            stream = self.streams.get(key)
            if stream is None or not flags & TCP_ACK:
                return []  # no connection this stack accepted (see the module docstring)
            return self._established(frame, stream, key, seq, bytes(frame[data_off: end]),
                                     flags)
        # closed port: tcp_v4_send_reset
        if flags & TCP_ACK:
            seg = tcp_segment(dst, src, dport, sport, ack, 0, TCP_RST, window=0)
        else:
            syn_fin = (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
            seg = tcp_segment(dst, src, dport, sport, 0, seq + data_len + syn_fin,
                              TCP_RST | TCP_ACK, window=0)
        return [_reply_ip(frame, C.PROTO_TCP, seg)]

    def _established(self, frame: bytes, stream: TcpStream, key: tuple[int, int, int, int],
                     seq: int, payload: bytes, flags: int) -> list[bytes]:
        """A segment of an accepted connection: data in, the application's answer out."""
        peer_ack = u32(frame, 14 + (frame[14] & 0xF) * 4 + 8)
        before = stream.rcv_nxt
        stream.accept(seq, payload)
        fin = bool(flags & TCP_FIN) and not stream.fin_received and \
            ((seq + len(payload)) & SEQ) == stream.rcv_nxt
        if fin:
            stream.fin_received = True
            stream.rcv_nxt = (stream.rcv_nxt + 1) & SEQ
        out_data = b""
        if stream.rcv_nxt != before and not stream.fin_sent:
            app = self.application(stream.local[1])
            out_data = app(stream) if stream.proxy is None else stream.proxy(stream, app)
        close = (fin or stream.close_after) and not stream.fin_sent
        segments = []
        if payload or flags & TCP_FIN or out_data or close:
            src, dst = stream.local[0], stream.peer[0]
            sport, dport = stream.local[1], stream.peer[1]
            chunks = [out_data[i: i + stream.mss] for i in range(0, len(out_data), stream.mss)]
            for n, chunk in enumerate(chunks):
                last = n == len(chunks) - 1
                fl = TCP_ACK | (TCP_PSH if last else 0) | (TCP_FIN if last and close else 0)
                segments.append(tcp_segment(src, dst, sport, dport, stream.snd_nxt,
                                            stream.rcv_nxt, fl, payload=chunk))
                stream.snd_nxt = (stream.snd_nxt + len(chunk)) & SEQ
            if close and not chunks:
                segments.append(tcp_segment(src, dst, sport, dport, stream.snd_nxt,
                                            stream.rcv_nxt, TCP_FIN | TCP_ACK))
            if close:
                stream.fin_sent = True
                stream.snd_nxt = (stream.snd_nxt + 1) & SEQ
            if not segments:  # acknowledge what arrived (at the hole, if any)
                segments.append(tcp_segment(src, dst, sport, dport, stream.snd_nxt,
                                            stream.rcv_nxt, TCP_ACK))
        if stream.fin_sent and stream.fin_received and peer_ack == stream.snd_nxt:
            del self.streams[key]  # both FINs sent and acknowledged: the connection is gone
        return [_reply_ip(frame, C.PROTO_TCP, seg) for seg in segments]

    def _udp(self, frame: bytes, l4: int, end: int) -> bytes | None:
        src, dst = u32(frame, 26), u32(frame, 30)
        sport, dport = u16(frame, l4), u16(frame, l4 + 2)
        payload = bytes(frame[l4 + 8: end])
        if (C.PROTO_UDP, dport) in self.clients:
            return None  # a client socket takes its answers (no echo ping-pong)
        listening = (C.PROTO_UDP, dport) in self.listen
        if listening and dport == 53 and self.resolver is not None and \
                dport not in self.udp_echo:
            # a DNS server: a DNS answer, nothing for what is not a query it can parse
            payload = self.resolver(payload)
            if payload is None:
                return None
        elif not (listening or self.listen_all or dport in self.udp_echo):
            # closed: ICMP port unreachable from the host itself
            err = icmp_error(frame, 3, 3, src=dst)
            return ether(u48(frame, 6), u48(frame, 0), ETH_IP) + err[14:]
        # an answer: the echo of the payload (or the DNS answer)
        return _reply_ip(frame, C.PROTO_UDP, udp_datagram(dst, src, dport, sport, payload))

# Which node drops earn an ICMP error, and which one (type, code)
ICMP_FOR_DROP = {
    C.DROP_TTL_EXCEEDED: (11, 0),
    C.DROP_REJECT_NO_ENDPOINTS: (3, 3),
    C.DROP_IPVS_NO_DEST: (3, 3),  # kube-router: ip_vs_leave's icmp_send (port unreachable)
    C.DROP_NO_ROUTE: (3, 0),
    C.DROP_ROUTE_UNREACHABLE: (3, 1),  # ip_error: RTN_UNREACHABLE -> host unreachable
    C.DROP_ROUTE_PROHIBIT: (3, 13),    # RTN_PROHIBIT -> communication administratively prohibited
    C.DROP_FRAG_NEEDED: (3, 4),  # RFC 1191: the next-hop MTU in the header (the outcome's a)
}


def is_icmp_error(frame: bytes) -> bool:
    """RFC 1122: never send an ICMP error about an ICMP error (or a broadcast)."""
    if len(frame) < 34 or u16(frame, 12) != ETH_IP:
        return True
    if frame[23] == C.PROTO_ICMP:
        l4 = 14 + (frame[14] & 0xF) * 4
        return len(frame) <= l4 or frame[l4] not in (0, 8, 13, 14, 15, 16, 17, 18)
    dst = u32(frame, 30)
    return dst == 0xFFFFFFFF or (dst & 0xF0000000) == 0xE0000000
