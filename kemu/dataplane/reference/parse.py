"""Header checks and parsing.

Owns ``Parse``: ``_l3_check`` (a drop reason for anything but a sane IPv4 packet, after ARP
was handled), ``_ip_check`` (``ip_rcv``'s sanity checks: version, IHL, total length, header
checksum) and ``_l4`` (protocol, L4 offset, ports; safe on short frames).

Compiled twin: ``kemu/fastpath/parse.pxi`` (``ip_check``, ``l4info``).
SEMANTICS ids: none of its own.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.packet import ETH_IP, ETH_IPV6
from kemu.dataplane.reference.state import State
from kemu.dataplane.reference.util import ip_checksum, u16


class Parse(State):
    """IPv4 sanity checks and L4 parsing."""

    def _l3_check(self, d: bytearray, et: int) -> int:
        """A drop reason for anything but a sane IPv4 packet (after ARP was handled), or 0."""
        if et == ETH_IPV6:
            return C.DROP_IPV6
        if et != ETH_IP:
            return C.DROP_UNKNOWN_ETHERTYPE
        return self._ip_check(d)

    def _ip_check(self, d: bytearray) -> int:
        """``ip_rcv``'s sanity checks; a drop reason or 0."""
        if len(d) < 34:
            return C.DROP_TOO_SHORT
        vihl = d[14]
        ihl = (vihl & 0xF) * 4
        if vihl >> 4 != 4 or ihl < 20 or len(d) < 14 + ihl:
            return C.DROP_BAD_IP_HEADER
        tot = u16(d, 16)
        if tot < ihl or 14 + tot > len(d):
            return C.DROP_BAD_IP_HEADER
        if ip_checksum(d, 14, ihl) != 0:
            return C.DROP_BAD_IP_CSUM
        return 0

    def _l4(self, d: bytearray) -> tuple[int, int, int, int]:
        """(proto, l4 offset, sport, dport); ports 0 where the protocol has none. Safe on
        short frames: the total length is clamped to the frame (local output and flannel.1
        run no ``ip_rcv`` checks)."""
        n = len(d)
        l4 = 14 + ((d[14] & 0xF) * 4 if n > 14 else 0)
        proto = d[23] if n > 23 else 0
        tot_end = min(14 + u16(d, 16), n) if n > 17 else 0
        if proto in (C.PROTO_TCP, C.PROTO_UDP, C.PROTO_SCTP) and l4 + 4 <= tot_end:
            return proto, l4, u16(d, l4), u16(d, l4 + 2)
        if proto == C.PROTO_ICMP and l4 + 8 <= tot_end and d[l4] in (0, 8):
            # the echo id stands for the request's source "port" and the reply's destination
            # one, so a reply matches its request's reply tuple (nf_conntrack_proto_icmp)
            ident = u16(d, l4 + 4)
            return (proto, l4, ident, 0) if d[l4] == 8 else (proto, l4, 0, ident)
        return proto, l4, 0, 0
