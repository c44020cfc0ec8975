"""Replay placement: where each frame of a capture enters the cluster, and how a batch's
frames' fates are counted. The pure twin of the compiled room ``kemu/fastpath/placement.pxi``
(``place_frames``, ``count_fates``: same results, checked by tests/test_placement.py and
tests/test_fates.py against brute force on both backends).

Placement, in order: the pod, external host, gateway or node owning the source IPv4 address
(ARP: the sender address), else the interface owning the source MAC; frames with neither are
counted by reason (or, with ``unknown_at_gateway``, enter from the gateway). ``inject_at``
puts every frame at one interface instead.

``Placer.place`` gives each frame a why-code: 0 placed by its owner, ``WHY_SHORT`` too short,
``WHY_UNKNOWN`` source unknown (not placed), ``WHY_AT_GATEWAY`` source unknown, placed at the
gateway; replay adds ``WHY_SERVICE`` (a mapped source that is a Service address: not placed).
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables

WHY_SHORT, WHY_UNKNOWN, WHY_AT_GATEWAY, WHY_SERVICE = 1, 2, 3, 4
UNPLACED = {WHY_SHORT: "frame too short", WHY_UNKNOWN: "unknown source",
            WHY_SERVICE: "source is a Service address (its endpoints answer with --respond)"}


class Placer:
    """Decides where each frame of a capture enters, vectorised over a chunk."""

    def __init__(self, t: Tables, inject_at: int | None, unknown_at_gateway: bool,
                 impl: ModuleType | None = None, keep_l2: bool = False) -> None:
        self.t = t
        self.inject_at = inject_at
        # keep_l2: frames keep their own Ethernet addresses (INJ_TX, no fix-up): an unknown
        # or foreign MAC is then flooded or ignored as the kernel would
        self.fix_l2 = C.INJ_TX if keep_l2 else C.INJ_TX_FIXL2
        self.impl = impl or sys.modules[__name__]  # place_frames: this module's or compiled
        self.gateway = int(t.gateway_if) if unknown_at_gateway and t.gateway_if >= 0 else -1
        kinds = t.if_kind
        end_hosts = np.isin(kinds, [C.IF_POD_ETH, C.IF_EXT_ETH, C.IF_GW_ETH, C.IF_NODE_ETH])
        ids = np.nonzero(end_hosts)[0]
        order = np.argsort(t.if_mac[ids], kind="stable")
        self.mac_keys = np.ascontiguousarray(t.if_mac[ids][order], np.int64)
        self.mac_ifs = ids[order].astype(np.int32)
        # owners of IPs: node addresses mean the node's own processes
        own_if = t.own_if.astype(np.int32)
        for k in range(len(own_if)):
            i = int(own_if[k])
            if int(kinds[i]) in (C.IF_NODE_ETH, C.IF_BRIDGE):
                own_if[k] = int(t.node_local_if[int(t.if_node[i])])
        self.own_ip = t.own_ip.astype(np.int64)
        self.own_if = own_if          # IPv4 from a node address: the node's own processes
        self.own_if_l2 = t.own_if.astype(np.int32)  # ARP from a node address: its interface

    def place(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(interface, mode, why-not code) per frame; interface -1 when unplaced."""
        n = len(offsets)
        if self.inject_at is not None:
            kind = int(self.t.if_kind[self.inject_at])
            mode = self.fix_l2 if kind in (C.IF_POD_ETH, C.IF_EXT_ETH, C.IF_GW_ETH) \
                else C.INJ_RX
            return (np.full(n, self.inject_at, np.int32), np.full(n, mode, np.uint8),
                    np.zeros(n, np.int8))
        iface, why = self.impl.place_frames(
            buf, np.ascontiguousarray(offsets, np.int64), np.ascontiguousarray(lengths, np.int32),
            self.own_ip, self.own_if, self.own_if_l2, self.mac_keys, self.mac_ifs, -1)
        if self.gateway >= 0:  # the unknown enter at the gateway, marked so (same places)
            unknown = why == WHY_UNKNOWN
            iface[unknown] = self.gateway
            why[unknown] = WHY_AT_GATEWAY
        return iface, np.full(n, self.fix_l2, np.uint8), why


def place_frames(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 own_ip: np.ndarray, own_if: np.ndarray, own_if_l2: np.ndarray,
                 mac_keys: np.ndarray, mac_ifs: np.ndarray, gateway: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Where each frame enters, vectorised (``kemu._fastpath`` has the compiled twin):
    (interface or -1, why-not code: 1 too short, 2 unknown source).

    The owner of the source IPv4 address (of an ARP frame: the sender address; ``own_ip`` is
    sorted, ``own_if``/``own_if_l2`` give the interface for IPv4/ARP), else the interface
    owning the source MAC (``mac_keys`` sorted, ``mac_ifs``), else ``gateway`` when it is
    not -1."""
    n = len(offsets)
    if len(lengths) != n or not len(own_ip) == len(own_if) == len(own_if_l2) \
            or len(mac_keys) != len(mac_ifs):
        raise ValueError("place_frames: arrays of different lengths")
    outside = (offsets < 0) | (lengths < 0) | (offsets + lengths > len(buf))
    if outside.any():
        raise ValueError(f"place_frames: frame {int(np.flatnonzero(outside)[0])} lies outside "
                         "the buffer")
    iface = np.full(n, -1, np.int32)
    why = np.zeros(n, np.int8)
    ok = lengths >= 14
    why[~ok] = 1
    et = np.zeros(n, np.int64)
    idx = np.nonzero(ok)[0]
    et[idx] = (buf[offsets[idx] + 12].astype(np.int64) << 8) | buf[offsets[idx] + 13]
    src_ip = np.full(n, -1, np.int64)
    ipv4 = idx[(et[idx] == 0x0800) & (lengths[idx] >= 34)]
    arp = idx[(et[idx] == 0x0806) & (lengths[idx] >= 42)]
    for sel, at in ((ipv4, 26), (arp, 28)):
        if len(sel):
            o = offsets[sel] + at
            src_ip[sel] = ((buf[o].astype(np.int64) << 24) | (buf[o + 1].astype(np.int64) << 16)
                           | (buf[o + 2].astype(np.int64) << 8) | buf[o + 3])
    has_ip = src_ip >= 0
    if len(own_ip):
        pos = np.searchsorted(own_ip, src_ip)
        pos_c = np.minimum(pos, len(own_ip) - 1)
        hit = has_ip & (own_ip[pos_c] == src_ip)
        iface[hit] = own_if[pos_c[hit]]
        is_arp = np.zeros(n, bool)
        is_arp[arp] = True
        iface[hit & is_arp] = own_if_l2[pos_c[hit & is_arp]]
    rest = np.nonzero(ok & (iface < 0))[0]
    if len(rest) and len(mac_keys):
        o = offsets[rest] + 6
        mac = np.zeros(len(rest), np.int64)
        for k in range(6):
            mac = (mac << 8) | buf[o + k].astype(np.int64)
        pos = np.minimum(np.searchsorted(mac_keys, mac), len(mac_keys) - 1)
        hit = mac_keys[pos] == mac
        iface[rest[hit]] = mac_ifs[pos[hit]]
    unknown = ok & (iface < 0)
    why[unknown] = 2
    if gateway >= 0:
        iface[unknown] = gateway
        why[unknown] = 0
    return iface, why


def count_fates(oc_frame: np.ndarray, oc_kind: np.ndarray, oc_reason: np.ndarray,
                n_outcomes: int, n: int, noise: np.ndarray, ev_frame: np.ndarray,
                ev_kind: np.ndarray, n_events: int, translating: np.ndarray,
                oc_nat: np.ndarray | None = None
                ) -> tuple[int, int, int, int, list[tuple[int, bool]]]:
    """Fates of frames ``0..n-1`` from their outcomes (``kemu._fastpath`` has the compiled
    twin): (delivered, left and not delivered, ignored by every receiver, translated, the
    drop that ended each other frame as (reason, neighbour unresolved), in frame order).

    A frame's fate: delivered if any copy was; else left the cluster if any copy did; else
    its first drop (in outcome order) that is not noise (``noise[reason]``: drops that end a
    copy but are no drop), or a copy stuck on an unresolved neighbour; else ignored. It was
    translated when one of its events is of a kind marked in ``translating``, or one of its
    outcomes has ``oc_nat`` set (``Results.oc_nat``: known with recording off too; replay
    counts from it alone, with no events)."""
    if not 0 <= n_outcomes <= min(len(oc_frame), len(oc_kind), len(oc_reason)) or not (
            0 <= n_events <= min(len(ev_frame), len(ev_kind))) or (
            oc_nat is not None and len(oc_nat) < n_outcomes):
        raise ValueError("count_fates: counts beyond the arrays")
    fr, kind, reason = oc_frame[:n_outcomes], oc_kind[:n_outcomes], oc_reason[:n_outcomes]
    if len(fr) and (int(fr.min()) < 0 or int(fr.max()) >= n) or n_events and (
            int(ev_frame[:n_events].min()) < 0 or int(ev_frame[:n_events].max()) >= n):
        raise ValueError(f"count_fates: a frame index outside 0..{n - 1}")
    delivered = np.zeros(n, bool)
    delivered[fr[kind == C.OUT_DELIVERED]] = True
    left = np.zeros(n, bool)
    left[fr[kind == C.OUT_LEFT]] = True
    fate = delivered | left
    drops = np.flatnonzero((kind == C.OUT_DROPPED) & ~noise[reason.view(np.uint16)]
                           | (kind == C.OUT_NEIGH))
    drops = drops[~fate[fr[drops]]]
    frames, first = np.unique(fr[drops], return_index=True)  # each frame's first drop
    ended = drops[first]
    translated = np.zeros(n, bool)
    translated[ev_frame[:n_events][translating[ev_kind[:n_events].view(np.uint16)]]] = True
    if oc_nat is not None:
        translated[fr[oc_nat[:n_outcomes] != 0]] = True
    return (int(np.count_nonzero(delivered)), int(np.count_nonzero(left & ~delivered)),
            n - int(np.count_nonzero(fate)) - len(frames), int(np.count_nonzero(translated)),
            list(zip(reason[ended].tolist(), (kind[ended] == C.OUT_NEIGH).tolist(),
                     strict=True)))


NOISE = np.zeros(1 << 16, bool)  # drop reasons that end a copy but are no drop
NOISE[[C.DROP_NOT_LOCAL, C.DROP_OTHERHOST, C.DROP_SAME_PORT]] = True
TRANSLATING = np.zeros(1 << 16, bool)  # events that rewrite addresses
TRANSLATING[[C.EV_DNAT, C.EV_SNAT, C.EV_UNDNAT, C.EV_UNSNAT, C.EV_CT_REUSE,
             C.EV_IPVS_DNAT]] = True


def mark_at_gateway(res: Results, at_gateway: np.ndarray) -> int:
    """Of a batch's frames, those placed at the gateway for an unknown source
    (``at_gateway[frame]``): their injection (``EV_FIXL2``, never written) becomes
    ``EV_AT_GATEWAY``, whose words (``describe.AT_GATEWAY``) the comment of their first hop
    carries, as the summary does. Returns how many."""
    count = int(np.count_nonzero(at_gateway))
    ne = res.n_events if res.record else 0
    if count and ne:
        kinds = res.ev_kind[:ne]
        kinds[(kinds == C.EV_FIXL2) & at_gateway[res.ev_frame[:ne]]] = C.EV_AT_GATEWAY
    return count


def unknown_sources(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                    why: np.ndarray) -> list[int]:
    """The distinct IPv4 source (ARP: sender) addresses of frames not placed for an unknown
    source (``why``: their why-codes)."""
    sel = np.flatnonzero(why == WHY_UNKNOWN)
    if not len(sel):
        return []
    off = np.asarray(offsets, np.int64)[sel]
    ln = np.asarray(lengths, np.int64)[sel]
    src = np.full(len(sel), -1, np.int64)
    ok = np.flatnonzero(ln >= 14)
    et = (buf[off[ok] + 12].astype(np.int64) << 8) | buf[off[ok] + 13]
    for pick, at in ((ok[(et == 0x0800) & (ln[ok] >= 34)], 26),
                     (ok[(et == 0x0806) & (ln[ok] >= 42)], 28)):
        o = off[pick] + at
        src[pick] = ((buf[o].astype(np.int64) << 24) | (buf[o + 1].astype(np.int64) << 16)
                     | (buf[o + 2].astype(np.int64) << 8) | buf[o + 3])
    return np.unique(src[src >= 0]).tolist()


def implementations() -> dict[str, ModuleType]:
    """Backend name -> module with ``place_frames`` and ``count_fates`` (this one:
    "python", ``kemu._fastpath``: "cython")."""
    from kemu._backend import twins

    return twins(__name__)
