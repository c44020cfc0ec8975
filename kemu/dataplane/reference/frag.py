"""IPv4 fragmentation and reassembly (L2-2, CT-1), as Linux does them.

Owns ``fragment`` (``ip_do_fragment``'s slow path: payloads of ``(MTU - IHL)`` rounded down
to a multiple of 8, the first fragment's header with every option, the later ones' with the
options whose copy flag is clear overwritten by NOOPs (``ip_options_fragment``: the header
keeps its length), MF on all but the last (and on the last too if the packet was itself a
non-last fragment), the offset, the IP id and DF kept, the header checksum recomputed),
``FragQueue`` (one ``ipq``: ``ip_frag_queue``'s checks, runs of contiguous fragments,
RFC 5722-style overlap handling: a fragment overlapping what the queue holds kills the whole
queue, an exact duplicate (inside one run) is dropped alone; complete when the first and the
last fragment are in and every byte is: ``ip_frag_reasm``), ``Reassembly`` (the queues of one
reassembling host, keyed (user, src, dst, proto, id), each expiring 30 s after its first
fragment: ``ipfrag_time``) and ``Frag``, the datapath's mixin: ``_defrag`` (nf_defrag_ipv4 at
a node's PREROUTING/OUTPUT, before conntrack and NAT) and ``_fragment_out``
(``ip_fragment`` on output: to the out device's MTU, or to the largest original fragment of a
reassembled packet, ``frag_max_size``).

Simplifications (documented in docs/ARCHITECTURE.md's room table): no ICMP "fragment
reassembly time exceeded" when a queue expires (conntrack's defrag users send none unless the
packet was for the node itself); no memory thresholds (``ipfrag_high_thresh``); a reassembled
packet is always refragmented by the slow path (``ip_do_fragment``'s fast path resends the
original fragments when each still fits: the same geometry when, as senders do, every
fragment but the last has the largest size).

Compiled twin: ``kemu/fastpath/frag.pxi``.
SEMANTICS ids: L2-2, CT-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kemu.dataplane import codes as C
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import Item
from kemu.dataplane.reference.util import ip_checksum, put16, u16, u32

IP_MF = 0x2000
IP_DF = 0x4000
IP_OFFSET = 0x1FFF
FRAG_DUP, FRAG_OVERLAP, FRAG_BAD = -1, -2, -3
# nf_defrag_ipv4's users: IP_DEFRAG_CONNTRACK_IN, _OUT, _BRIDGE_IN (br_netfilter's PREROUTING)
DEFRAG_IN, DEFRAG_OUT, DEFRAG_BRIDGE_IN = 0, 1, 2


def _set_csum(f: bytearray, ihl: int) -> None:
    put16(f, 24, 0)
    put16(f, 24, ip_checksum(f, 14, ihl))


def options_fragment(f: bytearray, ihl: int) -> None:
    """``ip_options_fragment``: options without the copy flag become NOOPs (in place)."""
    o, end = 34, 14 + ihl
    while o < end:
        t = f[o]
        if t == 0:  # end of options
            return
        if t == 1:  # NOOP
            o += 1
            continue
        if o + 1 >= end:
            return
        ln = f[o + 1]
        if ln < 2 or o + ln > end:
            return
        if not t & 0x80:
            f[o:o + ln] = b"\x01" * ln
        o += ln


def fragment(frame: bytes | bytearray, mtu: int) -> list[bytearray]:
    """``ip_do_fragment``'s slow path: the frame's IPv4 packet cut to fit ``mtu`` (each
    fragment keeps the frame's Ethernet header). A packet that fits comes back whole."""
    ihl = (frame[14] & 0xF) * 4
    tot = u16(frame, 16)
    if tot <= mtu:
        return [bytearray(frame[:14 + tot])]
    hdr = bytearray(frame[:14 + ihl])
    fo = u16(frame, 20)
    base = (fo & IP_OFFSET) << 3
    more = bool(fo & IP_MF)
    df = fo & IP_DF
    room = (mtu - ihl) & ~7
    out = []
    left, pos = tot - ihl, 0
    while left > 0:
        ln = left if left <= mtu - ihl else room
        f = hdr + frame[14 + ihl + pos: 14 + ihl + pos + ln]
        left -= ln
        off = ((base + pos) >> 3) | df
        if left > 0 or more:
            off |= IP_MF
        put16(f, 16, ihl + ln)
        put16(f, 20, off)
        _set_csum(f, ihl)
        out.append(f)
        if pos == 0:
            options_fragment(hdr, ihl)  # the later fragments: copied options only
        pos += ln
    return out


@dataclass
class FragQueue:
    """One reassembly queue (``struct ipq``)."""

    expires: int
    runs: list[list[int]] = field(default_factory=list)  # [start, end) of contiguous runs
    tail: int = 0                # end of the fragment with the highest offset (fragments_tail)
    len: int = 0                 # the payload's length as far as known (q.len)
    last_in: bool = False        # the last fragment (MF clear) is in: ``len`` is final
    meat: int = 0                # payload bytes received
    first: bytes = b""           # the header (Ethernet + IP) of the fragment at offset 0
    payload: bytearray = field(default_factory=bytearray)
    max_size: int = 0            # the largest fragment (IP total length)
    max_df_size: int = 0         # ... of those with DF
    count: int = 0               # fragments queued

    def add(self, d: bytes | bytearray) -> int:
        """``ip_frag_queue``: 0 queued, 1 complete, or FRAG_DUP (this fragment dropped) /
        FRAG_OVERLAP / FRAG_BAD (``discard_qp``: the whole queue is killed)."""
        ihl = (d[14] & 0xF) * 4
        fo = u16(d, 20)
        offset = (fo & IP_OFFSET) << 3
        end = offset + u16(d, 16) - ihl
        if not fo & IP_MF:
            if end < self.len or (self.last_in and end != self.len):
                return FRAG_BAD
            self.last_in = True
            self.len = end
        else:
            end &= ~7
            if end > self.len:
                if self.last_in:
                    return FRAG_BAD
                self.len = end
        if end == offset:
            return FRAG_BAD
        got = self._insert(offset, end)
        if got:
            return got
        if len(self.payload) < end:
            self.payload.extend(bytes(end - len(self.payload)))
        self.payload[offset:end] = d[14 + ihl: 14 + ihl + end - offset]
        if offset == 0:
            self.first = bytes(d[:14 + ihl])
        self.meat += end - offset
        self.count += 1
        size = end - offset + ihl
        self.max_size = max(self.max_size, size)
        if fo & IP_DF:
            self.max_df_size = max(self.max_df_size, size)
        return 1 if self.first and self.last_in and self.meat == self.len else 0

    def _insert(self, offset: int, end: int) -> int:
        """``inet_frag_queue_insert``: 0, FRAG_DUP or FRAG_OVERLAP."""
        if not self.runs:
            self.runs.append([offset, end])
            self.tail = end
        elif self.tail < end:
            if offset < self.tail:
                return FRAG_OVERLAP
            if offset == self.tail and self.runs[-1][1] == self.tail:
                self.runs[-1][1] = end
            else:
                self.runs.append([offset, end])
            self.tail = end
        else:
            for run in self.runs:
                if end <= run[0] or offset >= run[1]:
                    continue
                if offset >= run[0] and end <= run[1]:
                    return FRAG_DUP
                return FRAG_OVERLAP
            self.runs.append([offset, end])
            self.runs.sort()
        return 0

    def packet(self, eth: bytes | bytearray) -> bytearray:
        """``ip_frag_reasm``: the first fragment's header (its options), total length and
        checksum set, frag_off 0 (DF if every fragment had it), ``eth`` as the frame's L2."""
        ihl = len(self.first) - 14
        f = bytearray(eth[:14]) + bytearray(self.first[14:]) + self.payload[:self.len]
        put16(f, 16, ihl + self.len)
        put16(f, 20, IP_DF if self.max_df_size == self.max_size else 0)
        _set_csum(f, ihl)
        return f

    @property
    def frag_max_size(self) -> int:
        return max(self.max_size, self.max_df_size)


class Reassembly:
    """The fragment queues of one reassembling host (a node's conntrack, an end host)."""

    def __init__(self) -> None:
        self.queues: dict[tuple[int, int, int, int, int], FragQueue] = {}

    def expire(self, now: int) -> None:
        for k in [k for k, q in self.queues.items() if q.expires <= now]:
            del self.queues[k]

    def add(self, d: bytes | bytearray, now: int, user: int = DEFRAG_IN
            ) -> tuple[int, FragQueue | None]:
        """Queue one fragment: (FragQueue.add's result, the queue: complete or not)."""
        self.expire(now)
        key = (user, u32(d, 26), u32(d, 30), d[23], u16(d, 18))
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = FragQueue(now + C.FRAG_TIMEOUT_NS)
        r = q.add(d)
        if r in (FRAG_OVERLAP, FRAG_BAD) or r == 1:
            del self.queues[key]
        return r, q


def is_fragment(d: bytes | bytearray) -> bool:
    """An IPv4 frame whose packet is a fragment (MF or an offset)."""
    return len(d) >= 34 and u16(d, 12) == 0x0800 and bool(u16(d, 20) & 0x3FFF)


class Frag(Record):
    """nf_defrag_ipv4 at a node's hooks and ip_fragment on its output."""

    def _defrag(self, it: Item, node: int, user: int) -> int:
        """A fragment at PREROUTING (``user`` DEFRAG_IN) or OUTPUT: queued
        (DROP_FRAG_QUEUED), dropped (DROP_FRAG_OVERLAP, DROP_BAD_IP_HEADER; a duplicate:
        DROP_FRAG_QUEUED, as the kernel frees it silently) or, completing its datagram, the
        copy becomes the reassembled packet (0)."""
        d = it.data
        ihl = (d[14] & 0xF) * 4
        if ihl < 20 or 14 + ihl > len(d) or u16(d, 16) < ihl or 14 + u16(d, 16) > len(d):
            return C.DROP_BAD_IP_HEADER  # (the node's own packets have not met ip_rcv's checks)
        r, q = self.frags.setdefault(node, Reassembly()).add(d, self.now, user)
        if r == 0 or r == FRAG_DUP:
            return C.DROP_FRAG_QUEUED
        if r == FRAG_OVERLAP:
            return C.DROP_FRAG_OVERLAP
        if r == FRAG_BAD or q is None or q.len + len(q.first) - 14 > 0xFFFF:
            return C.DROP_BAD_IP_HEADER
        it.data[:] = q.packet(d)
        it.frag_max = q.frag_max_size
        self._changed(it)
        self._ev(it, C.EV_DEFRAG, q.count, len(it.data) - 14, node)
        return 0

    def _needs_fragment(self, it: Item, mtu: int) -> bool:
        """``ip_finish_output``: longer than the MTU, or a reassembled packet (refragmented
        to its largest original fragment)."""
        return u16(it.data, 16) > mtu or it.frag_max > 0

    def _fragment_out(self, it: Item, mtu: int, node: int) -> list[Item]:
        """``ip_fragment`` of the copy at ``mtu`` (a reassembled packet's ``frag_max_size``
        if smaller): the copy becomes the first fragment, forks of it the others (not yet
        on the stack); just the copy if it fits."""
        if it.frag_max and it.frag_max < mtu:
            mtu = it.frag_max
        it.frag_max = 0
        if u16(it.data, 16) <= mtu:
            return [it]
        pieces = fragment(it.data, mtu)
        self._ev(it, C.EV_FRAGMENT, len(pieces), mtu, node)
        out = [it]
        for f in pieces[1:]:
            c = it.fork(it.stage, it.a, it.b)
            c.data[:] = f
            self._changed(c)
            out.append(c)
        it.data[:] = pieces[0]
        self._changed(it)
        return out


__all__ = ["DEFRAG_BRIDGE_IN", "DEFRAG_IN", "DEFRAG_OUT", "Frag", "FragQueue", "Reassembly",
           "fragment", "is_fragment", "options_fragment"]
