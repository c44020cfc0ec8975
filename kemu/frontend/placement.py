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
from typing import NamedTuple

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
            if int(kinds[i]) in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_OVS_GW):
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



# -- shard keys (#21: flow-sharded replay, docs/SHARDING.md) ----------------------------------

_K_PORT, _K_CLIENT, _K_ADDR, _K_PAIR, _K_TUPLE = 1, 2, 3, 4, 5
_M64 = (1 << 64) - 1
_ECHO_TYPES = (0, 8, 13, 14, 15, 16, 17, 18)   # ICMP queries and replies: an identifier
_ERROR_TYPES = (3, 4, 5, 11, 12)               # ICMP errors: the quoted header
FRAG_TABLE_MAX = 1 << 16                       # open datagrams remembered at most
SVC_AFFINITY, SVC_MASQ = 1, 2                  # svc_flags / be_flags bits
POD_BACKEND = 1                                # pod_flags: a Service's backend


def _mix(x: int) -> int:
    """splitmix64's finaliser, to 32 bits (the compiled room's ``shard_mix``)."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return (x ^ (x >> 31)) >> 32


def _key_pair(proto: int, a: int, b: int) -> int:
    lo, hi = (a, b) if a <= b else (b, a)
    return _mix(_mix((lo << 32) | hi) ^ ((_K_PAIR << 56) | (proto << 32)))  # _K_PAIR: 4


def _find(keys: np.ndarray, k: int) -> int:
    i = int(np.searchsorted(keys, k))
    return i if i < len(keys) and int(keys[i]) == k else -1


class ShardTables(NamedTuple):
    """What ``shard_keys`` knows of the cluster (``shard_tables`` makes it from ``Tables``):
    Service frontends (sorted ``proto << 48 | ip << 16 | port``, a NodePort's ip 0) with
    their flags and Service port; backends (same keys) with
    flags; ``sp << 32 | ip`` of each Service port's backends (sorted); pods' addresses
    (sorted) with flags; the nodes' addresses (sorted)."""

    svc_keys: np.ndarray   # int64
    svc_flags: np.ndarray  # uint8: SVC_AFFINITY, SVC_MASQ (not a ClusterIP: masqueraded)
    svc_sp: np.ndarray     # int32
    be_keys: np.ndarray    # int64
    be_flags: np.ndarray   # uint8: SVC_AFFINITY
    sp_be: np.ndarray      # int64
    pod_ips: np.ndarray    # int64
    pod_flags: np.ndarray  # uint8: POD_BACKEND
    node_ips: np.ndarray   # int64


def _key_ports(proto: int, s: int, sp: int, d: int, dp: int, tb: ShardTables
               ) -> tuple[int, int]:
    """(key, uncertain) of a TCP/UDP header (an ICMP query's: ports = its identifier)."""
    ks, kd = (proto << 48) | (s << 16) | sp, (proto << 48) | (d << 16) | dp
    fd = _find(tb.svc_keys, kd)
    if fd < 0:
        fd = _find(tb.svc_keys, (proto << 48) | dp)
    fs = _find(tb.svc_keys, ks)
    if fs < 0:
        fs = _find(tb.svc_keys, (proto << 48) | sp)
    bd, bs = _find(tb.be_keys, kd), _find(tb.be_keys, ks)
    server_d, server_s = fd >= 0 or bd >= 0, fs >= 0 or bs >= 0
    if server_d == server_s:  # neither or both: symmetric in the two ends
        if not server_d and _find(tb.pod_ips, s) >= 0 and _find(tb.pod_ips, d) >= 0:
            a, b = ks & ((1 << 48) - 1), kd & ((1 << 48) - 1)  # pod to pod: never NATed
            lo, hi = (a, b) if a <= b else (b, a)
            return _mix(_mix(lo | (proto << 48)) ^ hi ^ (_K_TUPLE << 56)), 0
        return _mix((_K_PORT << 56) | (proto << 32) | max(sp, dp)), 0
    # one end a Service's (frontend or backend): the other is the client
    if server_d:
        c, cp, f, fl = s, sp, fd, (tb.svc_flags[fd] if fd >= 0 else tb.be_flags[bd])
    else:
        c, cp, f, fl = d, dp, fs, (tb.svc_flags[fs] if fs >= 0 else tb.be_flags[bs])
    if int(fl) & SVC_AFFINITY:  # ClientIP affinity (S-8): by the client's address
        # (the reply to a node address may be to a masquerade: the client elsewhere)
        return _mix((_K_ADDR << 56) ^ c), int(_find(tb.node_ips, c) >= 0)
    pod = _find(tb.pod_ips, c)
    if pod >= 0:
        # a pod's own address (the client port kept through DNAT), unless masquerade
        # may change it: a NodePort/external/LoadBalancer frontend, or the client a backend
        # of the Service it calls (hairpin)
        unc = 0
        if f >= 0:
            unc = int(bool(int(tb.svc_flags[f]) & SVC_MASQ)) or int(
                int(tb.pod_flags[pod]) & POD_BACKEND and _find(
                    tb.sp_be, (int(tb.svc_sp[f]) << 32) | c) >= 0)
        return _mix((_K_CLIENT << 56) | (proto << 48) | (c << 16) | cp), unc
    # a node, an external host: masqueraded or not, the client port is kept (S-7) unless
    # taken or --random-fully
    return _mix((_K_PORT << 56) | (proto << 32) | cp), 0


def shard_keys(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, tb: ShardTables,
               frags: dict, cache: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shard key of each Ethernet frame (``kemu._fastpath`` has the compiled twin) and
    whether its fate could depend on frames of another shard (docs/SHARDING.md has the
    argument).

    A connection with a Service's end (a frontend or a backend address and port): by the
    client's address and port when the client is a pod (DNAT keeps them), else by the
    client's port alone (masquerade keeps it, S-7); ClientIP affinity (S-8) by the client's
    address. Pod to pod: by the unordered pair of (address, port). Anything else: by the
    larger port (both directions agree). ICMP queries use their identifier as both ports,
    ICMP errors key by the header they quote, fragments after the first by their datagram's
    first fragment (``frags``: (src, dst, proto, id) -> key, kept across chunks), ARP and
    other IP protocols by the address pair, other frames 0. Uncertain: a fragment whose first
    fragment was not seen, a pod's connection to a NodePort/external/LoadBalancer frontend or
    to a Service it backs itself (masquerade may move the reply), an affinity reply to a node
    address. ``cache``: the compiled twin's memo of TCP/UDP answers by 5-tuple (a function
    of the tuple: ignored here)."""
    n = len(offsets)
    if len(lengths) != n or not len(tb.svc_keys) == len(tb.svc_flags) == len(tb.svc_sp) \
            or len(tb.be_keys) != len(tb.be_flags) or len(tb.pod_ips) != len(tb.pod_flags):
        raise ValueError("shard_keys: arrays of different lengths")
    keys = np.zeros(n, np.uint32)
    unc = np.zeros(n, np.uint8)
    for i in range(n):
        o, ln = int(offsets[i]), int(lengths[i])
        if o < 0 or ln < 0 or o + ln > len(buf):
            raise ValueError(f"shard_keys: frame {i} lies outside the buffer")
        d = buf[o:o + ln]
        if ln < 14:
            continue
        et = (int(d[12]) << 8) | int(d[13])
        if et == 0x0806 and ln >= 42:
            keys[i] = _key_pair(0, _u32(d, 28), _u32(d, 38))
            continue
        if et != 0x0800 or ln < 34 or int(d[14]) >> 4 != 4 or int(d[14]) & 15 < 5:
            continue
        proto, s, t = int(d[23]), _u32(d, 26), _u32(d, 30)
        ident = (int(d[18]) << 8) | int(d[19])
        fo = ((int(d[20]) & 0x1F) << 8) | int(d[21])
        mf = int(d[20]) & 0x20
        frag = (s, t, proto, ident)
        if fo:
            k = frags.get(frag)
            if k is None:
                keys[i], unc[i] = _key_pair(proto, s, t), 1
            else:
                keys[i] = k
                if not mf:
                    del frags[frag]
            continue
        keys[i], unc[i] = _key_l4(d, ln, 14 + (int(d[14]) & 15) * 4, proto, s, t, tb)
        if mf:
            if len(frags) >= FRAG_TABLE_MAX:
                frags.clear()
            frags[frag] = int(keys[i])
    return keys, unc


def _u32(d: np.ndarray, at: int) -> int:
    return int.from_bytes(d[at:at + 4].tobytes(), "big")


def _u16(d: np.ndarray, at: int) -> int:
    return (int(d[at]) << 8) | int(d[at + 1])


def _key_l4(d: np.ndarray, n: int, l4: int, proto: int, s: int, t: int, tb: ShardTables
            ) -> tuple[int, int]:
    if proto in (6, 17) and l4 + 4 <= n:
        return _key_ports(proto, s, _u16(d, l4), t, _u16(d, l4 + 2), tb)
    if proto == 1 and l4 + 8 <= n:
        typ = int(d[l4])
        if typ in _ECHO_TYPES:
            ident = _u16(d, l4 + 4)
            return _key_ports(1, s, ident, t, ident, tb)
        q = l4 + 8
        if typ in _ERROR_TYPES and q + 20 <= n and int(d[q]) >> 4 == 4 and int(d[q]) & 15 >= 5:
            iproto, qs, qt = int(d[q + 9]), _u32(d, q + 12), _u32(d, q + 16)
            il4 = q + (int(d[q]) & 15) * 4
            if iproto != 1:
                return _key_l4(d, n, il4, iproto, qs, qt, tb)
            if il4 + 8 <= n and int(d[il4]) in _ECHO_TYPES:  # quoting an ICMP query
                ident = _u16(d, il4 + 4)
                return _key_ports(1, qs, ident, qt, ident, tb)
            return _key_pair(1, qs, qt), 0
    return _key_pair(proto, s, t), 0


def shard_tables(t: Tables) -> ShardTables:
    """The tables ``shard_keys`` reads, from the compiled ``Tables``."""
    flags: dict[int, int] = {}
    sps: dict[int, int] = {}
    be: dict[int, int] = {}
    sp_be: set[int] = set()
    for f in range(len(t.fe_ip)):
        sp = int(t.fe_sp[f])
        proto = int(t.fe_proto[f])
        k = (proto << 48) | (int(t.fe_ip[f]) << 16) | int(t.fe_port[f])
        aff = SVC_AFFINITY if int(t.sp_flags[sp]) & C.SP_AFFINITY else 0
        flags[k] = flags.get(k, 0) | aff | (SVC_MASQ if int(t.fe_kind[f]) != C.FE_CLUSTER_IP
                                            else 0)
        sps.setdefault(k, sp)
    for sp in range(len(t.sp_be_start)):
        lo, cnt = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        aff = SVC_AFFINITY if int(t.sp_flags[sp]) & C.SP_AFFINITY else 0
        for ip, port in zip(t.be_ip[lo:lo + cnt].tolist(), t.be_port[lo:lo + cnt].tolist(),
                            strict=True):
            key = (int(t.sp_proto[sp]) << 48) | (ip << 16) | port
            be[key] = be.get(key, 0) | aff
            sp_be.add((sp << 32) | ip)
    svc = sorted(flags)
    bes = sorted(be)
    pods = t.if_ip[(t.if_kind == C.IF_POD_ETH) & (t.if_ip != 0)].astype(np.int64)
    pod_ips = np.unique(pods)
    backend_ips = np.unique(np.array([k & 0xFFFFFFFF for k in sp_be], np.int64))
    node = np.isin(t.if_kind, [C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP, C.IF_OVS_GW]) & (
        t.if_ip != 0)
    return ShardTables(
        np.array(svc, np.int64), np.array([flags[k] for k in svc], np.uint8),
        np.array([sps[k] for k in svc], np.int32),
        np.array(bes, np.int64), np.array([be[k] for k in bes], np.uint8),
        np.array(sorted(sp_be), np.int64), pod_ips,
        np.isin(pod_ips, backend_ips).astype(np.uint8),
        np.unique(t.if_ip[node].astype(np.int64)))
