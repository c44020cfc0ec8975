"""The slow path: answers of emulated end-host stacks and ICMP errors of node kernels.

Rare packets leave the batch datapath here, as in a real switch: an ARP request for an
address an interface owns, an ICMP echo request, a TCP SYN to a pod (SYN-ACK if the pod
listens on the port, RST if not), UDP to a listening port (an echo of the payload; DNS
queries to a DNS pod answered by a resolver callback), UDP to a closed port (ICMP port
unreachable, type 3 code 3), and the ICMP errors a node sends when it drops (time exceeded,
port unreachable for S-9, net unreachable). What a pod listens on is the control plane's
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

import struct
from collections.abc import Callable

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

# a DNS resolver: (query payload bytes) -> response payload bytes or None
Resolver = Callable[[bytes], bytes | None]


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
                window: int = 64240, options: bytes = b"") -> bytes:
    off = (20 + len(options)) // 4
    seg = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF,
                                ack & 0xFFFFFFFF, off << 4, flags, window, 0, 0) + options)
    put16(seg, 16, l4_checksum(src, dst, C.PROTO_TCP, bytes(seg)))
    return bytes(seg)


def udp_datagram(src: int, dst: int, sport: int, dport: int, payload: bytes) -> bytes:
    seg = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    c = l4_checksum(src, dst, C.PROTO_UDP, bytes(seg))
    put16(seg, 6, c or 0xFFFF)
    return bytes(seg)


class HostStack:
    """What one end host (pod sandbox, external host, gateway) answers.

    ``listen``: set of (proto number, port) the host's applications listen on (a pod's:
    ``kemu.control.listen``); ``listen_all``: every port; ``udp_echo``: UDP ports that echo
    even when not listening (older ``kemu.dev/udp-echo``; every listening UDP port echoes);
    ``resolver``: answers DNS on UDP 53 when the host listens there.
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

    def note_sent(self, frame: bytes) -> None:
        """Remember the source port of a packet this host sends (its client socket)."""
        if len(frame) >= 38 and u16(frame, 12) == ETH_IP and frame[23] in (
                C.PROTO_TCP, C.PROTO_UDP):
            l4 = 14 + (frame[14] & 0xF) * 4
            if l4 + 2 <= len(frame):
                self.clients.add((frame[23], u16(frame, l4)))

    def answer(self, frame: bytes, transport: bool = True) -> bytes | None:
        """The frame this host sends back, or None. ``transport`` False: ARP only."""
        if len(frame) < 14:
            return None
        et = u16(frame, 12)
        if et == ETH_ARP:
            if len(frame) >= 42 and u32(frame, 38) == self.ip:
                return arp_reply(frame, self.mac)
            return None
        if et != ETH_IP or not transport or len(frame) < 34:
            return None
        if u32(frame, 30) != self.ip or u16(frame, 20) & 0x3FFF:
            return None
        ihl = (frame[14] & 0xF) * 4
        l4 = 14 + ihl
        end = 14 + u16(frame, 16)
        proto = frame[23]
        if proto == C.PROTO_ICMP and end - l4 >= 8 and frame[l4] == 8:
            return _reply_ip(frame, C.PROTO_ICMP, icmp(0, 0, bytes(frame[l4 + 4: l4 + 8]),
                                                       bytes(frame[l4 + 8: end])))
        if proto == C.PROTO_TCP and end - l4 >= 20:
            return self._tcp(frame, l4, end)
        if proto == C.PROTO_UDP and end - l4 >= 8:
            return self._udp(frame, l4, end)
        return None

    def _tcp(self, frame: bytes, l4: int, end: int) -> bytes | None:
        src, dst = u32(frame, 26), u32(frame, 30)
        sport, dport = u16(frame, l4), u16(frame, l4 + 2)
        seq, ack = u32(frame, l4 + 4), u32(frame, l4 + 8)
        flags = frame[l4 + 13]
        data_len = end - l4 - (frame[l4 + 12] >> 4) * 4
        if flags & 0x04 or (C.PROTO_TCP, dport) in self.clients:
            return None  # never answer a RST; a client socket takes its own answers
        if self.listen_all or (C.PROTO_TCP, dport) in self.listen:
            if flags & 0x02 and not flags & 0x10:
                isn = flow_hash(self.seed, 0, C.PROTO_TCP, src, sport, dst, dport) & 0xFFFFFFFF
                mss = b"\x02\x04\x05\xb4"
                seg = tcp_segment(dst, src, dport, sport, isn, seq + 1, 0x12, options=mss)
                return _reply_ip(frame, C.PROTO_TCP, seg)
            return None  # an established connection's segment: the application consumes it
        # closed port: tcp_v4_send_reset
        if flags & 0x10:
            seg = tcp_segment(dst, src, dport, sport, ack, 0, 0x04, window=0)
        else:
            syn_fin = (1 if flags & 0x02 else 0) + (1 if flags & 0x01 else 0)
            seg = tcp_segment(dst, src, dport, sport, 0, seq + data_len + syn_fin, 0x14,
                              window=0)
        return _reply_ip(frame, C.PROTO_TCP, seg)

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
