"""Writes the hops of batch results into a pcapng: which hops (capture points), their
comments (the decisions taken there) and their blocks.

Owns the pcapng side of replay: one interface per emulated device (node-local pseudo
interfaces are left out), and per hop the frame's bytes at that point, its direction and the
texts of its decisions joined by ``"; "`` (TTL decrements and L2 fix-ups are implied by the
hop and not written). The per-hop work runs in the backend's ``HopComments``/``encode_hops``
(``kemu.io.hops``); Python only makes the text of a decision, or of a list of decisions, the
first time it is seen.

NetworkPolicy denials (P-1/P-2) name the connection they refused: before the walk, each
``EV_POLICY_DENY`` of the batch is given its flow, read from its hop's bytes in the arena (with
numpy, no Python per event), as a decision of its own: kind ``FLOW_DENY | direction << 8 |
protocol``, ``a`` the pod, ``b`` ``source port << 16 | destination port``, ``c`` the peer's
address (the source for ingress, the destination for egress: the source is then the pod
itself). Its words are ``DROP policy: default deny ingress of ns/pod (selected by ...; no rule
allows 10.244.1.5:41000 -> 9090/TCP)``; the ``EV_DROP`` of reason ``DROP_POLICY`` at the
same hop adds nothing to them and is not written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane.describe import event_text, flow_text, policy_text
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables
from kemu.io import hops
from kemu.io.pcapng import PcapngWriter, Space

POINTS = ("all", "pods", "drops")
_QUIET = (C.EV_TTL, C.EV_FIXL2)  # events that get no words of their own
_NOISE = (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST)  # not drops worth a capture point
FLOW_DENY = 0x4000  # a policy denial with its flow: | direction << 8 | protocol
_HUSH = 0x7FFF      # a decision written as part of another (the drop after a denial)
_PORTS = np.zeros(256, bool)
_PORTS[[C.PROTO_TCP, C.PROTO_UDP, C.PROTO_SCTP]] = True


class HopWriter:
    def __init__(self, writer: PcapngWriter, t: Tables, points: str = "all",
                 impl: ModuleType | None = None) -> None:
        if points not in POINTS:
            raise ValueError(f"capture points {points!r}: one of {', '.join(POINTS)}")
        self.writer = writer
        self.t = t
        self.points = points
        self.impl = impl or hops.active()
        self.comments = self.impl.HopComments()
        self.event_texts: list[str] = []
        self.comment_texts: list[str] = [""]
        self.writer_cid = np.zeros(1, np.int32)  # comment id -> the writer's comment id
        self._options: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.skip = np.zeros(1 << 16, np.uint8)
        self.skip[[*_QUIET, _HUSH]] = 1
        self.file_if = (np.cumsum(t.if_kind != C.IF_NODE_LOCAL) - 1).astype(np.int32)
        self.file_if[t.if_kind == C.IF_NODE_LOCAL] = -1
        self.pod_if = np.isin(t.if_kind, [C.IF_POD_ETH, C.IF_POD_LO]).astype(np.uint8)
        self.hops_written = 0

    def keep(self, res: Results) -> np.ndarray:
        """1 for each hop written at these capture points."""
        n = res.n_hops
        if self.points == "pods":
            return self.pod_if[res.hop_iface[:n]]
        if self.points == "drops":
            keep = np.zeros(n, np.uint8)
            k = res.n_outcomes
            d = res.oc_hop[:k][(res.oc_kind[:k] == C.OUT_DROPPED)
                               & ~np.isin(res.oc_reason[:k], _NOISE)]
            keep[d[d >= 0]] = 1
            return keep
        return np.ones(n, np.uint8)

    def write(self, res: Results, frame_ts: np.ndarray,
              encoded: threading.Event | None = None,
              first: Callable[[], None] | None = None) -> int:
        """Write the kept hops of ``res`` (frame ``i`` of the batch seen at ``frame_ts[i]``
        ns); returns how many. Their comments and blocks are made on the writer's thread when
        it has one (in order, one batch after the other: the comment state is that thread's
        alone), after ``first()`` (the caller's own reading of ``res``, done there too):
        ``res`` must then stay untouched until ``encoded`` is set (it is set in any case)."""
        try:
            n = res.n_hops
            keep = self.keep(res)
            count = int(np.count_nonzero(keep))
            if not count and first is not None:
                first()
        except BaseException:
            if encoded is not None:
                encoded.set()
            raise
        if not count:
            if encoded is not None:
                encoded.set()
            return 0
        ts = np.ascontiguousarray(frame_ts, np.int64)

        def job(space: Space) -> np.ndarray:
            try:
                if first is not None:
                    first()
                cur = np.zeros(n, np.int32)
                kinds, bs, cs = with_flows(res)
                new_events, new_comments = self.comments.assign(
                    res.ev_hop, kinds, res.ev_a, bs, cs, res.n_events, keep, self.skip, cur)
                if new_events or new_comments:
                    self._name(new_events, new_comments)
                return self.impl.encode_hops(
                    res.hop_frame, res.hop_iface, res.hop_dir, res.hop_off, res.hop_len, n,
                    keep, self.file_if, ts, cur, *self._comment_options(), res.arena,
                    space)[0]
            finally:
                if encoded is not None:
                    encoded.set()

        self.writer.write_later(job, count)
        self.hops_written += count
        return count

    def _comment_options(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The writer's encoded comment options indexed by this writer's comment ids (the
        hops' own ids then need no translation, hop by hop)."""
        if self._options is None:
            data, first, size = self.writer.comment_options()
            self._options = (data, first[self.writer_cid], size[self.writer_cid])
        return self._options

    def _name(self, new_events: list, new_comments: list) -> None:
        """Texts of newly seen decisions and lists of decisions."""
        t = self.t
        self.event_texts += [decision_text(t, *ev) for ev in new_events]
        ids = []
        for parent, eid in new_comments:
            text = self.event_texts[eid]
            if parent:
                text = f"{self.comment_texts[parent]}; {text}"
            self.comment_texts.append(text)
            ids.append(self.writer.comment_id(text))
        self.writer_cid = np.concatenate([self.writer_cid, np.array(ids, np.int32)])
        self._options = None


def with_flows(res: Results) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``res``'s event kinds, ``b`` and ``c``, with each policy denial's flow in it (see the
    module's docstring) and the policy drop after it hushed; the arrays themselves when the
    batch has no denial."""
    n = res.n_events
    kinds = res.ev_kind[:n]
    deny = np.flatnonzero(kinds == C.EV_POLICY_DENY)
    if not len(deny):
        return res.ev_kind, res.ev_b, res.ev_c
    kinds, bs, cs = (np.ascontiguousarray(x[:n]).copy() for x in (res.ev_kind, res.ev_b,
                                                                     res.ev_c))
    hop = res.ev_hop[:n]
    drops = np.flatnonzero((kinds == C.EV_DROP) & (res.ev_a[:n] == C.DROP_POLICY))
    kinds[drops[np.isin(hop[drops], hop[deny])]] = _HUSH
    h = hop[deny].astype(np.int64)
    good = (h >= 0) & (h < res.n_hops)
    deny, h = deny[good], h[good]
    off = res.hop_off[h].astype(np.int64)
    ln = res.hop_len[h].astype(np.int64)
    arena = res.arena
    good = (off >= 0) & (ln >= 34) & (off + ln <= len(arena))
    off = np.where(good, off, 0)
    ipv4 = good & (arena[off + 12] == 8) & (arena[off + 13] == 0)
    l4 = off + 14 + (arena[off + 14] & 0xF).astype(np.int64) * 4
    proto = arena[off + 23].astype(np.int64)
    ports = _PORTS[proto]
    ipv4 &= ~ports | (l4 + 4 <= off + ln)
    l4 = np.where(ipv4 & ports, l4, off)

    def word(at: np.ndarray, size: int) -> np.ndarray:
        v = np.zeros(len(at), np.int64)
        for k in range(size):
            v = (v << 8) | arena[at + k]
        return v

    sport = np.where(ports, word(l4, 2), 0)
    dport = np.where(ports, word(l4 + 2, 2), 0)
    direction = res.ev_b[deny].astype(np.int64)
    ingress = direction == C.POL_INGRESS
    peer = np.where(ingress, word(off + 26, 4), word(off + 30, 4))
    ok = ipv4 & (ingress | (direction == C.POL_EGRESS))
    e = deny[ok]
    kinds[e] = FLOW_DENY | (direction[ok] << 8) | proto[ok]
    bs[e] = (sport[ok] << 16) | dport[ok]
    cs[e] = peer[ok]
    return kinds, bs, cs


def decision_text(t: Tables, kind: int, a: int, b: int, c: int) -> str:
    """``event_text``, and the words of a denial with its flow (``with_flows``)."""
    if kind & ~0x3FF != FLOW_DENY:
        return event_text(t, kind, a, b, c)
    direction, proto = (kind >> 8) & 3, kind & 0xFF
    sport, dport = b >> 16, b & 0xFFFF
    if direction == C.POL_INGRESS:
        flow = flow_text(direction, c, sport, 0, dport, proto)
    else:  # egress: the pod itself is the source
        eth = int(t.pod_eth_if[a]) if 0 <= a < len(t.pod_eth_if) else -1
        src = int(t.if_ip[eth]) if eth >= 0 else 0
        flow = flow_text(direction, src, sport, c, dport, proto)
    return policy_text(t, C.EV_POLICY_DENY, a, direction, -1, flow)
