"""Recorded hops as pcapng blocks: the comment id of each hop and the blocks of a batch.

Owns the step from a batch's ``Results`` (hops, events) to the bytes of enhanced packet
blocks, in two pure functions of their inputs; ``kemu._fastpath`` has compiled twins with the
same names and the same results (``implementations()`` gives both where both exist):

- :class:`HopComments` interns decisions. Each distinct event ``(kind, a, b, c)`` gets an id
  (0, 1, ... in order of first sight); the list of events attached to one hop is a path in a
  trie whose nodes are comment ids (0: no comment, then 1, 2, ... in order of creation).
  ``assign`` walks each kept hop's events, in event order, and reports the ids it created so
  that the caller makes each text once (``event_text`` of a new event; a new comment is its
  parent's text, ``"; "``, the event's text).
- :func:`encode_hops` lays out the EPBs of the kept hops: interface ``file_if[hop_iface]``,
  time stamp of the hop's frame plus the hop's rank among that frame's hops (nanoseconds, so
  Wireshark keeps their order), the frame's bytes from the arena, the comment option of the
  hop's comment id, the direction in ``epb_flags`` and the end of options; the same bytes as
  ``PcapngWriter.write_packet`` for each hop.

NetworkPolicy denials (P-1/P-2) name the connection they refused, in the pcapng comments and
the flow log's decisions alike: before the walk, :func:`with_flows` gives each
``EV_POLICY_DENY`` of a batch its flow, read from its hop's bytes in the arena (with numpy, no
Python per event), as a decision of its own: kind ``FLOW_DENY | direction << 8 | protocol``,
``a`` the pod, ``b`` ``source port << 16 | destination port``, ``c`` the peer's address (the
source for ingress, the destination for egress: the source is then the pod itself);
:func:`decision_text` says it (``DROP policy: default deny ingress of ns/pod (selected by ...;
no rule allows 10.244.1.5:41000 -> 9090/TCP)``). The ``EV_DROP`` of reason ``DROP_POLICY`` at
the same hop adds nothing to it: its kind becomes ``HUSH``, which writers skip.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane.describe import event_text, flow_text, policy_text
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables
from kemu.io.pcapng import encode_epbs

_LIM = 1 << 32
FLOW_DENY = 0x4000  # a policy denial with its flow: | direction << 8 | protocol
HUSH = 0x7FFF       # a decision said as part of another (the policy drop after a denial)
_PORTED = np.zeros(256, bool)
_PORTED[[C.PROTO_TCP, C.PROTO_UDP, C.PROTO_SCTP]] = True


class HopComments:
    """Comment ids of recorded hops (pure twin of ``kemu._fastpath.HopComments``)."""

    def __init__(self) -> None:
        self._events: dict[tuple[int, int, int, int], int] = {}
        self._trie: dict[tuple[int, int], int] = {}
        self.n_event_ids = 0
        self.n_comment_ids = 1

    def assign(self, ev_hop: np.ndarray, ev_kind: np.ndarray, ev_a: np.ndarray,
               ev_b: np.ndarray, ev_c: np.ndarray, n_events: int, keep: np.ndarray,
               skip: np.ndarray, cur: np.ndarray
               ) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
        """Walk events ``0..n_events-1``: an event at hop ``h`` with ``keep[h]`` and a kind
        not marked in ``skip`` moves ``cur[h]`` (a comment id, 0 at first) one step down the
        trie. Returns the new events ``(kind, a, b, c)`` and the new comments
        ``(parent comment, event id)``, each in the order their ids were given."""
        n_hops = len(cur)
        if n_events < 0 or n_events > min(len(ev_hop), len(ev_kind), len(ev_a), len(ev_b),
                                          len(ev_c)):
            raise ValueError(f"assign: {n_events} events, arrays hold fewer")
        if len(keep) < n_hops:
            raise ValueError("assign: keep is shorter than cur")
        new_events: list[tuple[int, int, int, int]] = []
        new_comments: list[tuple[int, int]] = []
        cols = zip(ev_hop[:n_events].tolist(), ev_kind[:n_events].tolist(),
                   ev_a[:n_events].tolist(), ev_b[:n_events].tolist(),
                   ev_c[:n_events].tolist(), strict=True)
        for e, (h, k, a, b, c) in enumerate(cols):
            if h < 0 or h >= n_hops or not keep[h]:
                continue
            if 0 <= k < len(skip) and skip[k]:
                continue
            key = (k, a, b, c)
            if not 0 <= k < 1 << 16 or not all(-_LIM < v < _LIM for v in (a, b, c)):
                raise ValueError(f"assign: event {e} ({k}, {a}, {b}, {c}) has a value "
                                 "outside (-2**32, 2**32)")
            eid = self._events.get(key)
            if eid is None:
                eid = self._events[key] = self.n_event_ids
                self.n_event_ids += 1
                new_events.append(key)
            edge = (int(cur[h]), eid)
            cid = self._trie.get(edge)
            if cid is None:
                cid = self._trie[edge] = self.n_comment_ids
                self.n_comment_ids += 1
                new_comments.append(edge)
            cur[h] = cid
        return new_events, new_comments


def encode_hops(hop_frame: np.ndarray, hop_iface: np.ndarray, hop_dir: np.ndarray,
                hop_off: np.ndarray, hop_len: np.ndarray, n: int, keep: np.ndarray,
                file_if: np.ndarray, frame_ts: np.ndarray, hop_cid: np.ndarray,
                comment_bytes: np.ndarray, comment_start: np.ndarray,
                comment_size: np.ndarray, arena: np.ndarray,
                space: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, int]:
    """The EPBs of hops ``h < n`` with ``keep[h]``, as one uint8 array, and their count.
    With ``space``, the array is ``space(size)[:size]`` (where a writer wants the bytes, see
    ``PcapngWriter.write_later``), else a new one.

    ``comment_bytes[comment_start[c]:+comment_size[c]]`` is comment ``c``'s encoded option
    (a multiple of 4 bytes; size 0: none). ``hop_frame`` must not decrease; the hops of one
    frame are consecutive.
    """
    if n < 0 or n > min(len(hop_frame), len(hop_iface), len(hop_dir), len(hop_off),
                        len(hop_len), len(keep), len(hop_cid)):
        raise ValueError(f"encode_hops: {n} hops, arrays hold fewer")
    frames = hop_frame[:n].astype(np.int64)
    idx = np.flatnonzero(keep[:n])
    if not len(idx):
        return np.zeros(0, np.uint8), 0
    fr = frames[idx]
    bad_order = np.flatnonzero(idx > 0)
    bad_order = bad_order[frames[idx[bad_order] - 1] > fr[bad_order]]
    bad = (fr < 0) | (fr >= len(frame_ts))
    if bad.any() or len(bad_order):
        h = int(idx[np.flatnonzero(bad)[0] if bad.any() else bad_order[0]])
        raise ValueError(f"encode_hops: hop {h}: frame {int(frames[h])} out of range or order")
    iface = hop_iface[idx].astype(np.int64)
    bad = (iface < 0) | (iface >= len(file_if))
    fif = file_if[np.where(bad, 0, iface)].astype(np.int64)
    bad |= fif < 0
    if bad.any():
        h = int(idx[np.flatnonzero(bad)[0]])
        raise ValueError(f"encode_hops: hop {h}: interface {int(hop_iface[h])} has no file "
                         "interface")
    off = hop_off[idx].astype(np.int64)
    length = hop_len[idx].astype(np.int64)
    bad = (length < 0) | (off < 0) | (off + length > len(arena))
    if bad.any():
        raise ValueError(f"encode_hops: hop {int(idx[np.flatnonzero(bad)[0]])}: bytes outside "
                         "the arena")
    cid = hop_cid[idx].astype(np.int64)
    bad = (cid < 0) | (cid >= len(comment_size))
    cc = np.where(bad, 0, cid)
    bad |= (comment_start[cc] < 0) | (comment_start[cc] + comment_size[cc] > len(comment_bytes))
    bad |= (comment_size[cc] & 3) != 0
    if bad.any():
        h = int(idx[np.flatnonzero(bad)[0]])
        raise ValueError(f"encode_hops: hop {h}: comment {int(hop_cid[h])} unknown")
    ts = frame_ts[fr].astype(np.int64)
    if (ts < 0).any():
        h = int(idx[np.flatnonzero(ts < 0)[0]])
        raise ValueError(f"encode_hops: hop {h}: negative time stamp")
    rank = idx - np.searchsorted(frames, fr)  # the hops of a frame a nanosecond apart
    words = np.frombuffer(comment_bytes.tobytes(), dtype="<u4")
    out = encode_epbs(fif, ts + rank, arena, off, length, hop_dir[idx].astype(np.int64),
                      cid, words, np.asarray(comment_start, np.int64) >> 2,
                      np.asarray(comment_size, np.int64) >> 2)
    if space is not None:
        into = _checked_space(space, len(out))
        into[:] = out
        out = into
    return out, len(idx)


def _checked_space(space: Callable[[int], np.ndarray], size: int) -> np.ndarray:
    """``space(size)``, checked: a writable one-dimensional uint8 array of ``size`` bytes or
    more; its first ``size``."""
    got = space(size)
    if (not isinstance(got, np.ndarray) or got.dtype != np.uint8 or got.ndim != 1
            or len(got) < size or not got.flags.writeable or not got.flags.c_contiguous):
        raise ValueError(f"encode_hops: space({size}) must give a writable contiguous uint8 "
                         f"array of {size} bytes or more")
    return got[:size]


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
    at = hop[deny]
    kinds[drops[np.isin(hop[drops], at[at >= 0])]] = HUSH
    if len(res.arena) < 34:  # (no frame there to read a flow from)
        return kinds, bs, cs
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
    ports = _PORTED[proto]
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


def implementations() -> dict[str, ModuleType]:
    """Backend name -> the module holding ``HopComments`` and ``encode_hops``."""
    from kemu._backend import twins

    return twins(__name__)


def active() -> ModuleType:
    """The module of the active backend (``kemu._backend.BACKEND``)."""
    from kemu._backend import BACKEND

    return implementations()[BACKEND]
