"""Writes the hops of batch results into a pcapng: which hops (capture points), their
comments (the decisions taken there) and their blocks.

Owns the pcapng side of replay: one interface per emulated device (node-local pseudo
interfaces are left out), and per hop the frame's bytes at that point, its direction and the
texts of its decisions joined by ``"; "`` (TTL decrements and L2 fix-ups are implied by the
hop and not written). The per-hop work runs in the backend's ``HopComments``/``encode_hops``
(``kemu.io.hops``); Python only makes the text of a decision, or of a list of decisions, the
first time it is seen.

NetworkPolicy denials (P-1/P-2) name the connection they refused (``kemu.io.hops.with_flows``
before the walk, ``decision_text`` for the words): ``DROP policy: default deny ingress of
ns/pod (selected by ...; no rule allows 10.244.1.5:41000 -> 9090/TCP)``; the policy drop at
the same hop adds nothing to them and is not written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables
from kemu.io import hops
from kemu.io.hops import HUSH, decision_text, with_flows
from kemu.io.pcapng import PcapngWriter, Space

POINTS = ("all", "pods", "drops")
_QUIET = (C.EV_TTL, C.EV_FIXL2)  # events that get no words of their own
_NOISE = (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST)  # not drops worth a capture point


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
        self.skip[[*_QUIET, HUSH]] = 1
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

