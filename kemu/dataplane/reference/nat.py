"""NAT: address and port rewrites, masquerade, ICMP errors RELATED to a NATed flow.

Owns ``Nat``: rewrites with incremental checksums (``_l4_csum_off``, ``_set_addr``,
``_set_dst``, ``_set_src``), masquerade (``_masquerade``: SNAT to the outgoing interface's
address, S-7: the source port kept unless the reply tuple is another connection's, as
get_unique_tuple/nf_nat_used_tuple, or a seeded random one with --random-fully) and the
translation of ICMP errors that quote a packet of a NATed flow
(nf_nat_icmp_reply_translation: ``_inner``, ``_inner_set``; ``_related_pre`` undoes the
flow's SNAT at PREROUTING, ``_related_post`` its DNAT at POSTROUTING).

Compiled twin: ``kemu/fastpath/nat.pxi``.
SEMANTICS ids: S-7 (the rewrite; ``netfilter.py`` decides when).
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.reference.parse import Parse
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import CtEntry, Item
from kemu.dataplane.reference.util import (
    csum_replace16,
    csum_replace32,
    flow_hash,
    put16,
    put32,
    u16,
    u32,
)


class Nat(Record, Parse):
    """Rewrites, masquerade and RELATED ICMP translation."""

    def _l4_csum_off(self, proto: int, l4: int, d: bytearray) -> int:
        if proto == C.PROTO_TCP and l4 + 18 <= len(d):
            return l4 + 16
        if proto == C.PROTO_UDP and l4 + 8 <= len(d) and u16(d, l4 + 6) != 0:
            return l4 + 6
        return -1

    def _set_addr(self, d: bytearray, at: int, ip: int, port: int, proto: int, l4: int,
                  port_at: int) -> None:
        old_ip = u32(d, at)
        put32(d, at, ip)
        put16(d, 24, csum_replace32(u16(d, 24), old_ip, ip))
        co = self._l4_csum_off(proto, l4, d)
        if co >= 0:
            c = csum_replace32(u16(d, co), old_ip, ip)
            if port >= 0 and l4 + port_at + 2 <= len(d):
                c = csum_replace16(c, u16(d, l4 + port_at), port)
            if proto == C.PROTO_UDP and c == 0:
                c = 0xFFFF
            put16(d, co, c)
        if port >= 0 and proto in (C.PROTO_TCP, C.PROTO_UDP) and l4 + port_at + 2 <= len(d):
            put16(d, l4 + port_at, port)

    def _set_dst(self, d: bytearray, ip: int, port: int, proto: int = 0, l4: int = 0) -> None:
        self._set_addr(d, 30, ip, port, proto, l4, 2)

    def _set_src(self, d: bytearray, ip: int, port: int, proto: int = -1, l4: int = 0) -> None:
        if proto < 0:
            proto, l4, _s, _d = self._l4(d)
        self._set_addr(d, 26, ip, port, proto, l4, 0)

    def _nat_used(self, e: CtEntry, key: tuple[int, int, int, int, int, int]) -> bool:
        """nf_nat_used_tuple: the reply tuple is another connection's (entry ``e``'s own reply
        key, its tuple before the SNAT, is no clash: nf_conntrack_tuple_taken ignores it)."""
        hit = self.ct.get(key)
        return hit is not None and hit[0] is not e

    def _masquerade(self, it: Item, e: CtEntry, node: int, out_if: int, proto: int,
                    l4: int, random_fully: bool) -> None:
        """MASQUERADE (S-7, get_unique_tuple): the outgoing interface's address; the source
        port kept unless the reply tuple is taken; with ``random_fully``
        (NF_NAT_RANGE_PROTO_RANDOM_FULLY), or on a clash, a port of the source port's class
        (1-511, 600-1023, 1024-65535) from a random offset (kemu's seed and the tuple), the
        next free one after it (nf_nat_l4proto_unique_tuple)."""
        # (a device without an address, a routed veth: inet_select_addr takes the node's)
        new_ip = self.if_ip[out_if] or int(self.t.node_ip[node])
        port = e.orig[2]
        rproto, rsip, rsport = e.reply[0], e.reply[1], e.reply[2]
        if proto in (C.PROTO_TCP, C.PROTO_UDP) and (
                random_fully or self._nat_used(e, (node, rproto, rsip, rsport, new_ip, port))):
            lo, size = (1, 511) if port < 512 else (600, 424) if port < 1024 else (1024, 64512)
            off = (flow_hash(self.seed, node, proto, e.orig[1], e.orig[2], e.orig[3],
                             e.orig[4]) >> 32) & 0xFFFF
            port = lo + off % size
            tries = 0
            while tries < size - 1 and self._nat_used(e, (node, rproto, rsip, rsport, new_ip,
                                                          port)):
                off += 1
                port = lo + off % size
                tries += 1
        self.ct.pop((node,) + e.reply, None)
        e.reply = (rproto, rsip, rsport, new_ip, port)
        self.ct[(node,) + e.reply] = (e, True)
        e.flags |= C.CT_SNAT
        e.snat_ip, e.snat_port = new_ip, port
        self._set_src(it.data, new_ip, port if proto != C.PROTO_ICMP else -1, proto, l4)
        self._changed(it)
        self._ev(it, C.EV_SNAT, new_ip, port, node)

    # ---- ICMP errors RELATED to a NATed flow (nf_nat_icmp_reply_translation)
    def _inner(self, d: bytearray, l4: int) -> tuple[int, int, int, int] | None:
        """(inner IP offset, inner L4 offset, inner protocol, end) of a quoted TCP/UDP header."""
        end = min(len(d), 14 + u16(d, 16))
        inner = l4 + 8
        if inner + 20 > end or d[inner] >> 4 != 4 or (d[inner] & 0xF) < 5:
            return None
        il4 = inner + (d[inner] & 0xF) * 4
        iproto = d[inner + 9]
        if iproto not in (C.PROTO_TCP, C.PROTO_UDP) or il4 + 4 > end:
            return None
        return inner, il4, iproto, end

    def _related_pre(self, it: Item, node: int, l4: int) -> None:
        """An ICMP error quoting a packet of a tracked flow: at PREROUTING, undo the flow's
        SNAT (outer destination and quoted source back to the client)."""
        d = it.data
        if l4 >= len(d) or d[l4] not in (3, 4, 5, 11, 12):
            return
        q = self._inner(d, l4)
        if q is None:
            return
        inner, il4, iproto, _end = q
        key = (node, iproto, u32(d, inner + 16), u16(d, il4 + 2), u32(d, inner + 12),
               u16(d, il4))
        hit = self.ct.get(key)
        if hit is None or not hit[1]:
            return
        e = hit[0]
        it.ctx.related = e
        if e.flags & C.CT_SNAT:
            self._set_addr(d, 30, e.orig[1], -1, C.PROTO_ICMP, l4, 0)
            self._inner_set(d, l4, q, inner + 12, e.orig[1], 0, e.orig[2])
            self._changed(it)
            self._ev(it, C.EV_UNSNAT, e.orig[1], e.orig[2], node)

    def _related_post(self, it: Item, node: int) -> None:
        """At POSTROUTING: undo the flow's DNAT (outer source and quoted destination become
        the Service's address, as the kernel rewrites them)."""
        e = it.ctx.related
        it.ctx.related = None
        if e is None or not e.flags & C.CT_DNAT:
            return
        d = it.data
        l4 = 14 + (d[14] & 0xF) * 4
        q = self._inner(d, l4)
        if q is None:
            return
        self._set_addr(d, 26, e.orig[3], -1, C.PROTO_ICMP, l4, 0)
        self._inner_set(d, l4, q, q[0] + 16, e.orig[3], 2, e.orig[4])
        self._changed(it)
        self._ev(it, C.EV_UNDNAT, e.sp, e.be, node)

    def _inner_set(self, d: bytearray, l4: int, q: tuple[int, int, int, int], at_ip: int,
                   ip: int, port_at: int, port: int) -> None:
        """Rewrite a quoted address and port, fixing the quoted IP and L4 checksums and the
        ICMP checksum over all of them."""
        inner, il4, iproto, end = q
        icmp_c = l4 + 2

        def set16(off: int, new: int) -> None:
            old = u16(d, off)
            put16(d, off, new)
            put16(d, icmp_c, csum_replace16(u16(d, icmp_c), old, new))

        old_ip = u32(d, at_ip)
        old_port = u16(d, il4 + port_at)
        set16(inner + 10, csum_replace32(u16(d, inner + 10), old_ip, ip))
        set16(at_ip, ip >> 16)
        set16(at_ip + 2, ip & 0xFFFF)
        co = -1
        if iproto == C.PROTO_TCP and il4 + 18 <= end:
            co = il4 + 16
        elif iproto == C.PROTO_UDP and il4 + 8 <= end and u16(d, il4 + 6) != 0:
            co = il4 + 6
        if co >= 0:
            c = csum_replace16(csum_replace32(u16(d, co), old_ip, ip), old_port, port)
            if iproto == C.PROTO_UDP and c == 0:
                c = 0xFFFF
            set16(co, c)
        set16(il4 + port_at, port)
