"""Recording: what a frame's copies leave in ``Results``.

Owns ``Record``: hops (``_hop``: interface, direction, and a snapshot of the bytes when they
changed since the copy's last one: ``_changed``), events (``_ev`` holds a decision until the
copy's next hop or its end, ``_emit`` writes it) and outcomes (``_end``: delivered, left
the cluster, dropped with a reason, or waiting for a neighbour, the frame kept when it is
needed again; an unconfirmed conntrack entry dies with its dropped packet, so ``Record``
derives from ``Conntrack``).

Compiled twin: ``kemu/fastpath/record.pxi`` (its flow-cache bookkeeping has no twin).
SEMANTICS ids: none of its own.
"""

from __future__ import annotations

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane.reference.conntrack import Conntrack
from kemu.dataplane.reference.state import Item

# events that rewrite addresses: a copy with one ends with oc_nat set (with recording off too)
TRANSLATING = frozenset((C.EV_DNAT, C.EV_SNAT, C.EV_UNDNAT, C.EV_UNSNAT, C.EV_CT_REUSE,
                         C.EV_IPVS_DNAT))

class Record(Conntrack):
    """Hops, events and outcomes of a frame's copies."""

    def _hop(self, it: Item, iface: int, direction: int) -> None:
        res = self.res
        it.hops += 1
        if not res.record:
            it.pend.clear()
            return
        h = res.n_hops
        if it.snap_off < 0:
            n = len(it.data)
            res.arena[res.arena_used: res.arena_used + n] = np.frombuffer(bytes(it.data),
                                                                           np.uint8)
            it.snap_off, it.snap_len = res.arena_used, n
            res.arena_used += (n + 7) & ~7
        res.hop_frame[h] = self.fi
        res.hop_iface[h] = iface
        res.hop_dir[h] = direction
        res.hop_off[h] = it.snap_off
        res.hop_len[h] = it.snap_len
        res.n_hops = h + 1
        it.last_hop = h
        for ev in it.pend:
            self._emit(h, *ev)
        it.pend.clear()

    def _emit(self, hop: int, kind: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        res = self.res
        e = res.n_events
        res.ev_frame[e] = self.fi
        res.ev_hop[e] = hop
        res.ev_kind[e] = kind
        res.ev_a[e], res.ev_b[e], res.ev_c[e] = a, b, c
        res.n_events = e + 1

    def _changed(self, it: Item) -> None:
        it.snap_off = -1

    def _end(self, it: Item, kind: int, reason: int, iface: int, a: int = 0,
             keep: bool = False) -> None:
        """Terminal outcome of one copy; pending events attach to its last hop."""
        res = self.res
        if it.ctx.new and kind == C.OUT_DROPPED and it.ctx.ct is not None:
            if reason in (C.DROP_TTL_EXCEEDED, C.DROP_REJECT_NO_ENDPOINTS, C.DROP_NO_ROUTE,
                          C.DROP_FRAG_NEEDED):
                # unconfirmed, but the ICMP error this drop causes is still RELATED to it
                # (the kernel attaches the entry to the error): it expires right away
                it.ctx.ct.expires = self.now
            else:
                self._ct_delete(it.ctx.ct)  # unconfirmed conntrack entries die with the packet
        if res.record:
            for ev in it.pend:
                self._emit(it.last_hop, *ev)
            if kind == C.OUT_DROPPED:
                self._emit(it.last_hop, C.EV_DROP, reason, self._node_of(iface))
            elif kind == C.OUT_DELIVERED:
                self._emit(it.last_hop, C.EV_DELIVER, iface)
            elif kind == C.OUT_LEFT:
                self._emit(it.last_hop, C.EV_LEFT, iface)
        it.pend.clear()
        o = res.n_outcomes
        res.oc_frame[o] = self.fi
        res.oc_kind[o] = kind
        res.oc_reason[o] = reason
        res.oc_iface[o] = iface
        res.oc_hop[o] = it.last_hop
        res.oc_a[o] = a
        res.oc_off[o] = -1
        res.oc_len[o] = 0
        res.oc_nat[o] = it.nat
        if keep:  # the frame is needed again (neighbour hold, ICMP error quoting)
            n = len(it.data)
            res.arena[res.arena_used: res.arena_used + n] = np.frombuffer(bytes(it.data),
                                                                           np.uint8)
            res.oc_off[o], res.oc_len[o] = res.arena_used, n
            res.arena_used += (n + 7) & ~7
        res.n_outcomes = o + 1

    def _node_of(self, iface: int) -> int:
        return self.if_node[iface] if iface >= 0 else -1

    def _ev(self, it: Item, kind: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        if kind in TRANSLATING:
            it.nat = True
        if self.res.record:
            it.pend.append((kind, a, b, c))
