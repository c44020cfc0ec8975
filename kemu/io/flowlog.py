"""The flow log: JSON Lines in the shape of Cilium Hubble's ``GetFlowsResponse``.

One record per decision worth reporting, per input frame: a ``TRANSLATED`` record for every
service DNAT, masquerade and their reverse translations, then one record per place a copy of
the frame ended: ``FORWARDED`` when delivered to an endpoint (``TO_ENDPOINT``), a node
(``TO_HOST``) or out of the cluster (``TO_NETWORK``), ``DROPPED`` with Hubble's
``drop_reason_desc``. Flood copies that end hosts ignore are not reported. Field names follow
``flow.proto``'s JSON mapping with its field names (``IP``, ``l4``, ``source``,
``destination``, ``Type``, ``trace_observation_point``, ``node_name``, ``source_service``,
``destination_service``, ``is_reply``). ``--flow-format kemu`` adds ``kemu``: the frame
number, the hop and the texts of the decisions taken there, as the pcapng comment says them
(an outcome without a hop: its frame's hop-less decisions).

Cilium's L7 proxy (``kemu.dataplane.l7``): each HTTP request it judged (an ``EV_L7_HTTP``
event) adds two records after the batch's own, Hubble's ``Type: L7`` ones: the request
(``l7.type`` ``REQUEST``, ``verdict`` FORWARDED or DROPPED) and its response (``RESPONSE``
with ``http.code``, ``is_reply``), see ``FlowLog._l7_record``.

NetworkPolicy (P-1, P-2): the outcome records of a frame that met policy verdicts
(``EV_POLICY_ALLOW``/``EV_POLICY_DENY``: a new connection of a pod isolated in that direction)
carry ``traffic_direction`` (the direction of the denial, else of the last verdict:
``INGRESS``/``EGRESS``) and the policies, each as Hubble's ``Policy`` message (``name``,
``namespace``, ``labels`` as Cilium derives them: ``k8s:io.cilium.k8s.policy.derived-from=
NetworkPolicy``, ``...policy.name=``, ``...policy.namespace=``; ``kind``; no ``revision``:
kemu has no policy repository revision, and protojson leaves a zero out):
``egress_allowed_by``/``ingress_allowed_by`` the policy of the rule that allowed, and for a
denial (``DROPPED``, ``drop_reason_desc`` ``POLICY_DENIED``) ``egress_denied_by``/
``ingress_denied_by`` the policies that isolate the pod in that direction. Cilium itself fills
``*_denied_by`` only for its explicit deny rules (``ingressDeny``) and leaves it empty for a
NetworkPolicy's default deny; kemu names the isolating policies there, as the policies that
made the default deny. Records of frames without policy verdicts (replies riding conntrack,
pods not isolated) are unchanged.

Endpoints: a pod is its namespace, labels, name and workload; a node's address is
``reserved:host``, other addresses ``reserved:unmanaged`` inside the cluster CIDR and
``reserved:world`` outside. Cluster-scoped objects (nodes, ``reserved:*`` identities) have no
``namespace``. In Cilium mode (``spec.cni: cilium``) every endpoint also carries Hubble's
numeric ``identity``: a pod's security identity (256 + its identity index, as the VXLAN VNI
carries it), 1 for ``reserved:host``, 2 ``reserved:world``, 3 ``reserved:unmanaged``.
A Service's ClusterIP is no endpoint: a record names the Service instead
(``{"name":..., "namespace":...}``), ``destination_service`` for a request (the frame's
service DNAT, else a ClusterIP destination: a REJECTed one) and ``source_service`` for a reply
(its un-DNAT, else a ClusterIP source), and has no ``source``/``destination`` endpoint for that
address.

How records are made: without Python per record. What a record says is mostly fixed per
decision (interface, node, endpoints, service, verdict, the list of decisions); only the time,
the packet's header fields and a few numbers vary. Every fixed part is a JSON piece made once
with ``json.dumps`` (:class:`Pieces`: pod identities by address, interface and node names,
services, drop reasons, and, interned like the pcapng comments with ``HopComments``, each
distinct list of decisions). :func:`encode_flows` then lays out a batch's records in one
buffer from the pieces, formatting times, addresses, ports and flags itself;
``kemu._fastpath`` has a compiled twin with the same name and the same bytes
(``implementations()``). :class:`FlowLog` drives it batch by batch, one ``write`` per batch,
on the caller's thread (``write_batch``) or on a thread of its own (``write_later``: replay
runs the next batches through the datapath meanwhile; the compiled encoder lays records out
without the GIL).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import IO, Any

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane import l7 as l7_records
from kemu.dataplane.describe import rule_policy, selecting_policies
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables
from kemu.io.directio import next_item
from kemu.io.hops import HUSH, HopComments, decision_text, with_flows

__all__ = ["EndpointInfo", "FlowLog", "HopComments", "Pieces", "encode_flows", "rfc3339"]

TRANSLATIONS = np.zeros(1 << 16, np.uint8)  # event kinds that make a TRANSLATED record
TRANSLATIONS[[C.EV_DNAT, C.EV_SNAT, C.EV_UNDNAT, C.EV_UNSNAT, C.EV_IPVS_DNAT]] = 1
VERDICTS = np.zeros(1 << 16, np.uint8)  # event kinds of NetworkPolicy verdicts
VERDICTS[[C.EV_POLICY_ALLOW, C.EV_POLICY_DENY]] = 1
_NOISE = (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST, C.DROP_SAME_PORT)  # ends of copies, no drops
# observation points, by code (``Pieces.if_point``, ``encode_flows``)
P_STACK, P_ENDPOINT, P_NETWORK, P_HOST = range(4)
_POINTS = (b"TO_STACK", b"TO_ENDPOINT", b"TO_NETWORK", b"TO_HOST")
# the most a record's own text (everything but its pieces) can take, in bytes
RECORD_TEXT = 1024


@dataclass(frozen=True)
class EndpointInfo:
    namespace: str
    pod_name: str
    labels: tuple[str, ...]
    workload: tuple[str, str] | None  # (kind, name)

    def to_dict(self) -> dict:
        d: dict = {"namespace": self.namespace, "labels": list(self.labels),
                   "pod_name": self.pod_name}
        if self.workload:
            d["workloads"] = [{"name": self.workload[1], "kind": self.workload[0]}]
        return d


def rfc3339(ns: int) -> str:
    """``ns`` nanoseconds since the epoch as RFC 3339 UTC with nanoseconds (what
    ``datetime`` prints for years 1000 to 9999; other years too, with the digits they
    need)."""
    secs, frac = divmod(int(ns), 10**9)
    days, rem = divmod(secs, 86400)
    y, m, d = _civil(days)
    return (f"{y:04d}-{m:02d}-{d:02d}T{rem // 3600:02d}:{rem // 60 % 60:02d}:{rem % 60:02d}"
            f".{frac:09d}Z")


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01, proleptic Gregorian (H. Hinnant's
    ``civil_from_days``)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


CILIUM_ID_UNMANAGED = 3  # reserved:unmanaged (pkg/identity/numericidentity.go)


def _identities(t: Tables) -> list[int] | None:
    """Cilium mode: the security identity of each interface's address (``Tables.if_vni``,
    ``kemu/compiler/cilium.py``), as Hubble's ``identity``; None in other modes."""
    return [int(x) for x in t.if_vni] if len(t.if_vni) else None


def _reserved(ident: list[int] | None, number: int, label: str) -> dict:
    """A reserved endpoint: its label, and its number in Cilium mode."""
    return {"labels": [label]} if ident is None else {"identity": number, "labels": [label]}


class Pieces:
    """The fixed parts of records, as JSON text made once, by id: one growing byte buffer
    (``arrays()`` for the compiled encoder, ``items`` for the pure one) and the tables that
    say which piece goes where.

    Per interface: ``if_piece`` (``,"interface":{"name":...}``), ``if_node`` (its node's
    name as a JSON string, ``"node-network"`` when it has none) and ``if_point`` (the
    observation point of a delivery there). ``network_node``: ``"node-network"``, the node of
    a record without a hop. ``why[reason & 0xFFFF]``: ``,"drop_reason_desc":...`` of a drop
    reason; ``neigh_why`` that of an unresolved neighbour. ``fe_sp`` (frontend -> service
    port) and ``sp_piece`` (service port -> ``{"name":...,"namespace":...}``, -1 for none).
    ``ep_ip`` (sorted), ``ep_piece`` and ``ep_svc``: the endpoint of an address that has one
    of its own (pods, nodes; -1 for a Service's ClusterIP) and the Service whose ClusterIP it
    is (-1 for none); other addresses are ``unmanaged`` inside the cluster CIDR (``cnet``,
    ``cmask``), ``world`` outside. ``kemu_format``: records carry ``kemu``."""

    def __init__(self, t: Tables, endpoints: dict[int, EndpointInfo],
                 services: dict[int, tuple[str, str]], kemu_format: bool = False) -> None:
        self.items: list[bytes] = []
        # the longest piece of each kind: a record holds at most two endpoints, two
        # services, four others (drop reason, interface, node twice) and a list
        self.max_endpoint = self.max_service = self.max_size = self.max_list = 0
        self.max_policy = 0
        self._data = np.zeros(1 << 16, np.uint8)
        self._used = 0
        self._start = np.zeros(256, np.int64)
        self._size = np.zeros(256, np.int64)
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.kemu_format = bool(kemu_format)
        add = self.add
        nodes = [add(_js(name)) for name in t.node_name]
        self.network_node = add(_js("node-network"))
        n_if = t.n_ifaces
        self.if_piece = np.array([add(b',"interface":{"name":' + _js(t.if_name[i]) + b"}")
                                  for i in range(n_if)], np.int32)
        self.if_node = np.array([nodes[int(t.if_node[i])] if int(t.if_node[i]) >= 0
                                 else self.network_node for i in range(n_if)], np.int32)
        kinds = t.if_kind
        self.if_point = np.full(n_if, P_HOST, np.uint8)
        self.if_point[np.isin(kinds, [C.IF_POD_ETH, C.IF_POD_LO])] = P_ENDPOINT
        self.if_point[np.isin(kinds, [C.IF_EXT_ETH, C.IF_GW_ETH])] = P_NETWORK
        self.why = np.full(1 << 16, add(b',"drop_reason_desc":"DROP_REASON_UNKNOWN"'), np.int32)
        for reason, (_words, name) in C.DROP_NAMES.items():
            self.why[reason & 0xFFFF] = add(b',"drop_reason_desc":' + _js(name)) if name else -1
        self.neigh_why = add(b',"drop_reason_desc":"UNKNOWN_L3_TARGET_ADDRESS"')
        self.fe_sp = np.ascontiguousarray(t.fe_sp, np.int32)
        self.sp_piece = np.full(len(t.sp_name), -1, np.int32)
        for sp, (ns, name) in services.items():
            if 0 <= sp < len(self.sp_piece):
                self.sp_piece[sp] = self.add_service(_json({"name": name, "namespace": ns}))
        # addresses of their own: pods first, then node addresses (Tables.owner_of), then
        # Services' ClusterIPs (no endpoint: their Service)
        own: dict[int, tuple[int, int]] = {}
        ident = _identities(t)  # Cilium mode: Hubble's numeric identities
        for ip, info in endpoints.items():
            d = info.to_dict()
            if ident is not None and t.owner_of(int(ip)) >= 0:
                d = {"identity": ident[t.owner_of(int(ip))], **d}
            own[int(ip)] = (self.add_endpoint(_json(d)), -1)
        host = self.add_endpoint(_json(_reserved(ident, C.CILIUM_ID_HOST, "reserved:host")))
        for ip, i in zip(t.own_ip.tolist(), t.own_if.tolist(), strict=True):
            if int(kinds[i]) in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_OVS_GW):
                own.setdefault(int(ip), (host, -1))
        for sp, ip in enumerate(t.sp_ip.tolist()):
            if ip and int(self.sp_piece[sp]) >= 0:
                own.setdefault(int(ip), (-1, int(self.sp_piece[sp])))
        order = sorted(own)
        self.ep_ip = np.array(order, np.int64)
        self.ep_piece = np.array([own[ip][0] for ip in order], np.int32)
        self.ep_svc = np.array([own[ip][1] for ip in order], np.int32)
        self.cnet, self.cmask = (int(v) for v in t.cluster_cidr)
        self.unmanaged = self.add_endpoint(_json(_reserved(ident, CILIUM_ID_UNMANAGED,
                                                           "reserved:unmanaged")))
        self.world = self.add_endpoint(_json(_reserved(ident, C.CILIUM_ID_WORLD,
                                                       "reserved:world")))

    def add(self, text: bytes) -> int:
        """A new piece (a drop reason, an interface, a node); its id."""
        self.max_size = max(self.max_size, len(text))
        return self._add(text)

    def add_endpoint(self, text: bytes) -> int:
        """A new endpoint (``{"labels":...}``); its id."""
        self.max_endpoint = max(self.max_endpoint, len(text))
        return self._add(text)

    def add_service(self, text: bytes) -> int:
        """A new Service (``{"name":...,"namespace":...}``); its id."""
        self.max_service = max(self.max_service, len(text))
        return self._add(text)

    def add_list(self, text: bytes) -> int:
        """A new list of decisions (``["text",...]``); its id."""
        self.max_list = max(self.max_list, len(text))
        return self._add(text)

    def add_policy(self, text: bytes) -> int:
        """A new set of policy verdicts (``,"traffic_direction":...``); its id."""
        self.max_policy = max(self.max_policy, len(text))
        return self._add(text)

    def _add(self, text: bytes) -> int:
        k, n = len(self.items), len(text)
        if self._used + n > len(self._data):
            self._data = _grown(self._data, self._used + n)
        if k == len(self._start):
            self._start, self._size = _grown(self._start, k + 1), _grown(self._size, k + 1)
        self._data[self._used:self._used + n] = np.frombuffer(text, np.uint8)
        self._start[k], self._size[k] = self._used, n
        self._used += n
        self.items.append(text)
        self._arrays = None
        return k

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bytes, first byte, size) of every piece."""
        if self._arrays is None:
            k = len(self.items)
            self._arrays = (self._data[:self._used], self._start[:k], self._size[:k])
        return self._arrays


def _js(s: str) -> bytes:
    return json.dumps(s).encode()


def _json(d: dict) -> bytes:
    return json.dumps(d, separators=(",", ":")).encode()


def _grown(a: np.ndarray, need: int) -> np.ndarray:
    out = np.zeros(max(need, 2 * len(a)), a.dtype)
    out[:len(a)] = a
    return out


def record_bound(pieces: Pieces) -> int:
    """The most bytes one record can take: its own text, two endpoints, two services, four
    other pieces (drop reason, interface, node twice), a list of decisions and a set of
    policy verdicts."""
    return (RECORD_TEXT + 2 * pieces.max_endpoint + 2 * pieces.max_service
            + 4 * pieces.max_size + pieces.max_list + pieces.max_policy)


def encode_flows(res: Results, frame_ts: np.ndarray, frame_number: np.ndarray,
                 hop_dec: np.ndarray, ev_dec: np.ndarray, frame_dec: np.ndarray,
                 pieces: Pieces, space: Callable[[int], np.ndarray] | None = None,
                 oc_policy: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The flow records of a batch's results, as one uint8 array, and their count
    (``kemu._fastpath`` has the compiled twin). With ``space``, the array is
    ``space(size)[:n]`` for a ``size`` that bounds the batch's bytes (``record_bound`` per
    record), else a new one.

    Frame ``i`` of the batch was seen at ``frame_ts[i]`` ns and is number
    ``frame_number[i]``; ``hop_frame`` and ``oc_frame`` must not decrease. With
    ``pieces.kemu_format``, the decisions of a record are pieces too: ``hop_dec[h]`` lists
    hop ``h``'s events, ``ev_dec[e]`` the one event ``e`` (its TRANSLATED record),
    ``frame_dec[i]`` frame ``i``'s hop-less events (an outcome without a hop); otherwise
    these are not read. ``oc_policy[o]``: the policy verdicts piece of outcome ``o``'s
    record (-1: none; ``None``: none at all).
    """
    n_hops, n_ev, n_oc = _counts(res)
    n_frames = min(len(frame_ts), len(frame_number))
    kemu_format = pieces.kemu_format
    if kemu_format and (len(hop_dec) < n_hops or len(ev_dec) < n_ev
                        or len(frame_dec) < n_frames):
        raise ValueError("encode_flows: decisions arrays shorter than the results")
    if oc_policy is not None:
        pol_ids = oc_policy[:n_oc].tolist()
        if len(pol_ids) < n_oc or not all(-1 <= k < len(pieces.items) for k in pol_ids):
            raise ValueError("encode_flows: oc_policy shorter than the outcomes or a piece "
                             "id unknown")
    else:
        pol_ids = [-1] * n_oc
    hop_frame = res.hop_frame[:n_hops].tolist()
    oc_frame = res.oc_frame[:n_oc].tolist()
    if any(b < a for a, b in zip(hop_frame, hop_frame[1:], strict=False)) or any(
            b < a for a, b in zip(oc_frame, oc_frame[1:], strict=False)):
        raise ValueError("encode_flows: hops or outcomes out of frame order")
    ev_hop = res.ev_hop[:n_ev]
    kinds = res.ev_kind[:n_ev]
    tr = np.flatnonzero(TRANSLATIONS[kinds.view(np.uint16)].astype(bool) & (ev_hop >= 0)
                        & (ev_hop < n_hops))
    tr_of: dict[int, list[int]] = {}
    for e in tr.tolist():
        tr_of.setdefault(int(ev_hop[e]), []).append(e)
    fe_sp, sp_piece, why = pieces.fe_sp, pieces.sp_piece, pieces.why
    bound = record_bound(pieces)
    seconds: dict[int, bytes] = {}
    out: list[bytes] = []
    hp = op = 0
    while hp < n_hops or op < n_oc:
        fi = min(hop_frame[hp] if hp < n_hops else oc_frame[op],
                 oc_frame[op] if op < n_oc else hop_frame[hp])
        if not 0 <= fi < n_frames:
            raise ValueError(f"encode_flows: frame {fi} outside 0..{n_frames - 1}")
        ts = _time(int(frame_ts[fi]), seconds)
        number = int(frame_number[fi])
        src_svc = dst_svc = -1  # the frame's un-DNAT and DNAT so far: their Services
        reply = False
        while hp < n_hops and hop_frame[hp] == fi:
            for e in tr_of.get(hp, ()):
                kind, a = int(kinds[e]), int(res.ev_a[e])
                sp = -1
                if kind in (C.EV_DNAT, C.EV_IPVS_DNAT):  # (IPVS: kube-router)
                    if not 0 <= a < len(fe_sp):
                        raise ValueError(f"encode_flows: event {e}: frontend unknown")
                    sp = int(fe_sp[a])
                elif kind == C.EV_UNDNAT:
                    sp = a
                if sp >= 0 and kind in (C.EV_DNAT, C.EV_IPVS_DNAT):
                    dst_svc = int(sp_piece[sp]) if sp < len(sp_piece) else -1
                elif sp >= 0:
                    src_svc = int(sp_piece[sp]) if sp < len(sp_piece) else -1
                reply = reply or kind in (C.EV_UNDNAT, C.EV_UNSNAT)
                dec = int(ev_dec[e]) if kemu_format else -1
                out.append(_record(res, pieces, hp, ts, b"TRANSLATED", -1, P_STACK, src_svc,
                                   dst_svc, reply, number, dec, -1))
            hp += 1
        while op < n_oc and oc_frame[op] == fi:
            o = op
            op += 1
            kind, reason = int(res.oc_kind[o]), int(res.oc_reason[o])
            if kind == C.OUT_DROPPED and reason in _NOISE:
                continue
            h = int(res.oc_hop[o])
            if not -1 <= h < n_hops:
                raise ValueError(f"encode_flows: outcome {o}: hop outside the results")
            iface = int(res.oc_iface[o])
            if kind == C.OUT_DELIVERED:
                point = int(pieces.if_point[iface]) if 0 <= iface < len(pieces.if_point) \
                    else P_HOST
                verdict, w = b"FORWARDED", -1
            elif kind == C.OUT_LEFT:
                verdict, w, point = b"FORWARDED", -1, P_NETWORK
            elif kind == C.OUT_NEIGH:
                verdict, w, point = b"DROPPED", pieces.neigh_why, P_STACK
            else:
                verdict, w, point = b"DROPPED", int(why[reason & 0xFFFF]), P_STACK
            dec = -1
            if kemu_format:
                dec = int(hop_dec[h]) if h >= 0 else int(frame_dec[fi])
            out.append(_record(res, pieces, h, ts, verdict, w, point, src_svc, dst_svc, reply,
                               number, dec, pol_ids[o]))
    data = b"".join(out)
    if any(len(r) > bound for r in out):  # (the compiled twin lays out into the bound)
        raise AssertionError("encode_flows: a record beyond record_bound")
    if space is None:
        return np.frombuffer(data, np.uint8).copy(), len(out)
    into = space(len(out) * bound)
    if (not isinstance(into, np.ndarray) or into.dtype != np.uint8 or into.ndim != 1
            or len(into) < len(data) or not into.flags.writeable
            or not into.flags.c_contiguous):
        raise ValueError("encode_flows: space(n) must give a writable contiguous uint8 array "
                         "of n bytes or more")
    into[:len(data)] = np.frombuffer(data, np.uint8)
    return into[:len(data)], len(out)


def _counts(res: Results) -> tuple[int, int, int]:
    n_hops, n_ev, n_oc = res.n_hops, res.n_events, res.n_outcomes
    if not (0 <= n_hops <= min(len(res.hop_frame), len(res.hop_iface), len(res.hop_off),
                               len(res.hop_len))
            and 0 <= n_ev <= min(len(res.ev_hop), len(res.ev_kind), len(res.ev_a))
            and 0 <= n_oc <= min(len(res.oc_frame), len(res.oc_kind), len(res.oc_reason),
                                 len(res.oc_iface), len(res.oc_hop))):
        raise ValueError("encode_flows: counts beyond the arrays")
    return n_hops, n_ev, n_oc


def _time(ns: int, seconds: dict[int, bytes]) -> bytes:
    """``rfc3339(ns)``, the text up to the second made once per second (``seconds``)."""
    head = seconds.get(ns // 10**9)
    if head is None:
        head = seconds[ns // 10**9] = rfc3339(ns)[:-10].encode()
    return head + b"%09dZ" % (ns % 10**9)


_FLAGS = ((1, b"FIN"), (2, b"SYN"), (4, b"RST"), (8, b"PSH"), (16, b"ACK"), (32, b"URG"))


def _record(res: Results, pieces: Pieces, h: int, ts: bytes, verdict: bytes, why: int,
            point: int, src_svc: int, dst_svc: int, reply: bool, number: int,
            dec: int, pol: int) -> bytes:
    items = pieces.items
    parts = [b'{"flow":{"time":"', ts, b'","verdict":"', verdict, b'"']
    if why >= 0:
        parts.append(items[why])
    node = items[pieces.network_node]
    if h >= 0:
        off, ln = int(res.hop_off[h]), int(res.hop_len[h])
        iface = int(res.hop_iface[h])
        if off < 0 or ln < 0 or off + ln > len(res.arena) or not 0 <= iface < min(
                len(pieces.if_piece), len(pieces.if_node), len(pieces.if_point)):
            raise ValueError(f"encode_flows: hop {h}: bytes outside the arena or interface "
                             "unknown")
        d = res.arena[off:off + min(ln, 128)].tobytes()  # (headers only are read)
        node = items[int(pieces.if_node[iface])]
        if ln >= 14:
            parts += [b',"ethernet":{"source":"', _mac(d[6:12]), b'","destination":"',
                      _mac(d[0:6]), b'"}']
        if ln >= 34 and d[12] == 8 and d[13] == 0:
            sip, dip = int.from_bytes(d[26:30], "big"), int.from_bytes(d[30:34], "big")
            parts += [b',"IP":{"source":"', _ip(d[26:30]), b'","destination":"', _ip(d[30:34]),
                      b'","ipVersion":"IPv4"}']
            l4 = 14 + (d[14] & 0xF) * 4
            proto = d[23]
            if proto == C.PROTO_TCP and ln >= l4 + 14:
                fl = d[l4 + 13]
                names = [name for bit, name in _FLAGS if fl & bit]
                parts += [b',"l4":{"TCP":{"source_port":%d,"destination_port":%d,"flags":{'
                          % (_u16(d, l4), _u16(d, l4 + 2)),
                          b",".join(b'"%s":true' % name for name in names),
                          b'}}},"Summary":"TCP Flags: ', b", ".join(names), b'"']
            elif proto == C.PROTO_UDP and ln >= l4 + 4:
                parts.append(b',"l4":{"UDP":{"source_port":%d,"destination_port":%d}},'
                             b'"Summary":"UDP"' % (_u16(d, l4), _u16(d, l4 + 2)))
            elif proto == C.PROTO_ICMP and ln >= l4 + 2:
                parts.append(b',"l4":{"ICMPv4":{"type":%d,"code":%d}},"Summary":"ICMPv4 type %d'
                             b' code %d"' % (d[l4], d[l4 + 1], d[l4], d[l4 + 1]))
            src, src_addr_svc = _endpoint(pieces, sip)
            dst, dst_addr_svc = _endpoint(pieces, dip)
            if src >= 0:
                parts += [b',"source":', items[src]]
            if dst >= 0:
                parts += [b',"destination":', items[dst]]
            src_svc = src_svc if src_svc >= 0 else src_addr_svc
            dst_svc = dst_svc if dst_svc >= 0 else dst_addr_svc
        parts.append(items[int(pieces.if_piece[iface])])
    parts += [b',"Type":"L3_L4","node_name":', node, b',"trace_observation_point":"',
              _POINTS[point], b'","is_reply":', b"true" if reply else b"false"]
    if src_svc >= 0:
        parts += [b',"source_service":', items[src_svc]]
    if dst_svc >= 0:
        parts += [b',"destination_service":', items[dst_svc]]
    if pol >= 0:
        parts.append(items[pol])
    if dec >= 0:
        parts += [b',"kemu":{"frame":%d,"hop":%d,"decisions":' % (number, h), items[dec], b"}"]
    parts += [b'},"node_name":', node, b',"time":"', ts, b'"}\n']
    return b"".join(parts)


def _u16(d: bytes, o: int) -> int:
    return (d[o] << 8) | d[o + 1]


def _mac(b: bytes) -> bytes:
    return b.hex(":").encode()


def _ip(b: bytes) -> bytes:
    return b"%d.%d.%d.%d" % (b[0], b[1], b[2], b[3])


def _endpoint(pieces: Pieces, ip: int) -> tuple[int, int]:
    """(endpoint piece or -1, the piece of the Service whose ClusterIP it is or -1)."""
    k = int(np.searchsorted(pieces.ep_ip, ip))
    if k < len(pieces.ep_ip) and int(pieces.ep_ip[k]) == ip:
        return int(pieces.ep_piece[k]), int(pieces.ep_svc[k])
    return pieces.unmanaged if ip & pieces.cmask == pieces.cnet else pieces.world, -1


class FlowLog:
    """Writes the flow records of batches of results to ``out`` (a binary file; a text
    file is written through its ``buffer``), one ``write`` per batch. Where ``out`` has
    ``space`` (``kemu.io.directio.DirectFile``) the records are laid out in the file's own
    buffers. ``impl``: the module whose ``encode_flows`` and ``HopComments`` make them (this
    one, or ``kemu._fastpath``; the active backend's by default). ``write_later`` does the
    same on a thread of the log's own (replay's way: the records of one batch are laid out
    while the datapath runs the next), ``finish`` waits for it."""

    # the most bytes laid out in the file's own buffers at once (DirectFile gives up to a
    # buffer's worth in place, 16 MiB but a few KiB by default); larger batches go through a
    # scratch array and are copied there
    IN_PLACE = 12 << 20

    def __init__(self, out: IO[Any], tables: Tables, endpoints: dict[int, EndpointInfo],
                 services: dict[int, tuple[str, str]], kemu_format: bool = False,
                 impl: ModuleType | None = None) -> None:
        if hasattr(out, "buffer"):  # a text file: its bytes (nothing else writes to it)
            out.flush()
            out = out.buffer
        self.out = out
        self.t = tables
        self.impl = impl or active()
        self.pieces = Pieces(tables, endpoints, services, kemu_format)
        self.kemu_format = bool(kemu_format)
        self.records = 0
        self._scratch = np.zeros(0, np.uint8)
        self._no_ids = np.zeros(0, np.int32)
        self._space = getattr(out, "space", None)
        if self.kemu_format:
            self.comments = self.impl.HopComments()
            self.event_texts: list[bytes] = []
            self.comment_texts: list[bytes] = [b"[]"]
            self.dec_piece = np.array([self.pieces.add_list(b"[]")], np.int32)
            self._none = np.zeros(64, np.uint8)  # no kind skipped
            self._hushed = np.zeros(1 << 16, np.uint8)  # only what ``with_flows`` hushed
            self._hushed[HUSH] = 1
        # NetworkPolicy verdicts: each distinct list of a frame's verdicts, interned like the
        # decisions, is one piece (``policy_piece``; comment id 0, no verdict: -1)
        self.verdicts = self.impl.HopComments()
        self.verdict_events: list[tuple[int, int, int, int]] = []
        self.verdict_lists: list[list[tuple[int, int, int, int]]] = [[]]
        self.policy_piece = np.array([-1], np.int32)
        self._all = np.zeros(64, np.uint8)
        # write_later's thread, its queue of batches and the first error it met
        self._thread: threading.Thread | None = None
        self._jobs: queue.Queue[tuple[Results, np.ndarray, np.ndarray | None,
                                      threading.Event | None] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._dropping = False

    def write_later(self, res: Results, ts_ns: np.ndarray,
                    frame_numbers: np.ndarray | None = None,
                    done: threading.Event | None = None) -> None:
        """:meth:`write_batch` on the flow log's own thread, batches in the order given;
        ``done`` is set once it is over (or skipped after an error), and ``res``, ``ts_ns``
        and ``frame_numbers`` must stay untouched until then. The first error met there is
        raised here, by the next call, or by :meth:`finish`. Calls of :meth:`write_batch` and
        of this one are not to be mixed on one log."""
        if self._error is not None:
            if done is not None:
                done.set()
            raise self._error
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kemu flow log",
                                            daemon=True)
            self._thread.start()
        self._jobs.put((res, ts_ns, frame_numbers, done))

    def _run(self) -> None:
        while True:
            job = next_item(self._jobs)
            if job is None:
                return
            res, ts, numbers, done = job
            try:
                if self._error is None and not self._dropping:
                    self.write_batch(res, ts, numbers)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                self._error = e
            finally:
                if done is not None:
                    done.set()

    def finish(self, drop: bool = False) -> None:
        """Wait until every batch given to :meth:`write_later` is written (with ``drop``:
        the batches still waiting are skipped, the log is being dropped) and stop its thread;
        raises the error it met (unless ``drop``). A no-op without a thread."""
        if self._thread is not None:
            self._dropping = self._dropping or drop
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None and not drop:
            raise self._error

    def write_batch(self, res: Results, ts_ns: np.ndarray,
                    frame_numbers: np.ndarray | None = None) -> None:
        ts = np.ascontiguousarray(ts_ns, np.int64)
        numbers = (np.arange(1, len(ts) + 1, dtype=np.int64) if frame_numbers is None
                   else np.ascontiguousarray(frame_numbers, np.int64))
        hop_dec = ev_dec = frame_dec = self._no_ids
        if self.kemu_format:
            hop_dec, ev_dec, frame_dec = self._decisions(res, len(ts))
        oc_policy = self._policies(res, len(ts))
        data, n = self.impl.encode_flows(res, ts, numbers, hop_dec, ev_dec, frame_dec,
                                         self.pieces, self._layout, oc_policy)
        if n:
            self.out.write(data)
            self.records += n
        if self.t.rule_l7_count and res.n_events:
            l7 = np.flatnonzero(res.ev_kind[:res.n_events] == C.EV_L7_HTTP)
            if len(l7):
                lines = [self._l7_record(res, int(e), ts, numbers, reply) for e in l7.tolist()
                         for reply in (False, True)]
                self.out.write(b"".join(lines))
                self.records += len(lines)

    def _l7_record(self, res: Results, e: int, ts: np.ndarray, numbers: np.ndarray,
                   reply: bool) -> bytes:
        """The proxy's access log of one request (``EV_L7_HTTP`` ``e``), as Hubble shows it:
        ``Type: L7`` with ``l7: {type: REQUEST, http: {method, url, protocol, headers}}``
        (``verdict`` FORWARDED, or DROPPED for a denied request) and, ``reply``, the
        response ``l7: {type: RESPONSE, http: {code, ...}}`` (FORWARDED, ``is_reply``: the
        403 of a denied request included); ``ingress_allowed_by`` names the policy whose
        rule allowed it, ``ingress_denied_by`` the policies whose L7 rules it missed."""
        rec = l7_records.get(int(res.ev_b[e]))
        frame, hop = int(res.ev_frame[e]), int(res.ev_hop[e])
        when = rfc3339(int(ts[frame])) if 0 <= frame < len(ts) else ""
        node = json.loads(self.pieces.items[self.pieces.network_node])
        if 0 <= hop < res.n_hops:
            node = json.loads(self.pieces.items[int(self.pieces.if_node[
                int(res.hop_iface[hop])])])
        if rec is None:  # (a record of another process: nothing to say but the status)
            flow: dict[str, Any] = {"time": when, "verdict": "FORWARDED", "Type": "L7",
                                    "node_name": node, "is_reply": reply}
            return _json({"flow": flow, "node_name": node, "time": when}) + b"\n"
        (cip, cport), (sip, sport) = rec.client, rec.server
        src, dst = (sip, sport), (cip, cport)
        if not reply:
            src, dst = dst, src
        http: dict[str, Any] = {"method": rec.method, "url": rec.url,
                                "protocol": rec.protocol,
                                "headers": [{"key": k, "value": v} for k, v in rec.headers]}
        if reply:
            http = {"code": rec.code, **http}
        flow = {"time": when, "verdict": "FORWARDED" if reply or rec.allowed else "DROPPED",
                "IP": {"source": _ipv4(src[0]), "destination": _ipv4(dst[0]),
                       "ipVersion": "IPv4"},
                "l4": {"TCP": {"source_port": src[1], "destination_port": dst[1]}}}
        for key, ip in (("source", src[0]), ("destination", dst[0])):
            piece = _endpoint(self.pieces, ip)[0]
            if piece >= 0:
                flow[key] = json.loads(self.pieces.items[piece])
        flow.update({"Type": "L7", "node_name": node,
                     "l7": {"type": "RESPONSE" if reply else "REQUEST", "latency_ns": "0",
                            "http": http},
                     "is_reply": reply, "traffic_direction": "INGRESS"})
        names = list(self.t.pol_name)
        pols = [names.index(p) for p in rec.policies if p in names]
        if pols:
            key = "ingress_allowed_by" if rec.allowed else "ingress_denied_by"
            flow[key] = [policy_item(self.t, p) for p in pols]
        flow["Summary"] = (f"{rec.protocol} {rec.code} 0ms ({rec.method} {rec.url})" if reply
                           else f"{rec.protocol} {rec.method} {rec.url}")
        if self.kemu_format:
            n = int(numbers[frame]) if 0 <= frame < len(numbers) else -1
            flow["kemu"] = {"frame": n, "hop": hop, "decisions": [rec.text()]}
        return _json({"flow": flow, "node_name": node, "time": when}) + b"\n"

    def _policies(self, res: Results, n_frames: int) -> np.ndarray | None:
        """The policy verdicts piece of each outcome's record (its frame's verdicts, in event
        order), or ``None`` when the batch has no verdict (none at all without a policy: a pod
        no policy selects is not isolated and meets no verdict, P-1)."""
        if not self.t.pol_name:
            return None
        n_ev = res.n_events
        sel = np.flatnonzero(VERDICTS[res.ev_kind[:n_ev].view(np.uint16)])
        if not len(sel):
            return None
        frame_ids = np.zeros(n_frames, np.int32)
        frames = np.ascontiguousarray(res.ev_frame[sel])
        new_events, new_comments = self.verdicts.assign(
            frames, *(np.ascontiguousarray(c[sel]) for c in (res.ev_kind, res.ev_a, res.ev_b,
                                                              res.ev_c)),
            len(sel), np.ones(n_frames, np.uint8), self._all, frame_ids)
        self.verdict_events += [tuple(int(v) for v in ev) for ev in new_events]
        ids = []
        for parent, eid in new_comments:
            events = [*self.verdict_lists[parent], self.verdict_events[eid]]
            self.verdict_lists.append(events)
            ids.append(self.pieces.add_policy(policy_fragment(self.t, events)))
        if ids:
            self.policy_piece = np.concatenate([self.policy_piece, np.array(ids, np.int32)])
        oc_frame = res.oc_frame[:res.n_outcomes].astype(np.int64)
        inside = (oc_frame >= 0) & (oc_frame < n_frames)
        return np.where(inside, self.policy_piece[frame_ids[np.where(inside, oc_frame, 0)]],
                        -1).astype(np.int32)

    def _layout(self, n: int) -> np.ndarray:
        """Where ``encode_flows`` lays out a batch of at most ``n`` bytes: the file's own
        buffers up to ``IN_PLACE`` bytes, else the scratch array (then copied there)."""
        if self._space is not None and n <= self.IN_PLACE:
            return self._space(n)
        return self._scratch_space(n)

    def _scratch_space(self, n: int) -> np.ndarray:
        if len(self._scratch) < n:
            self._scratch = np.empty(max(n, 2 * len(self._scratch)), np.uint8)
        return self._scratch[:n]

    def _decisions(self, res: Results, n_frames: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decision-list pieces per hop, per translation event (its own), per frame (its
        hop-less events): ids of lists interned like the pcapng comments."""
        n_hops, n_ev = res.n_hops, res.n_events
        hop_ids = np.zeros(n_hops, np.int32)
        hc = self.comments
        cols = (res.ev_kind, res.ev_a, res.ev_b, res.ev_c)
        ended = np.zeros(n_hops, np.uint8)  # the hops copies ended at: their records' lists
        oc_hop = res.oc_hop[:res.n_outcomes]
        ended[oc_hop[(oc_hop >= 0) & (oc_hop < n_hops)]] = 1
        kinds, bs, cs = with_flows(res)  # (the policy denials' flows, as in the pcapng)
        new = [hc.assign(res.ev_hop, kinds, res.ev_a, bs, cs, n_ev, ended, self._hushed,
                         hop_ids)]
        kinds = res.ev_kind[:n_ev]
        hop = res.ev_hop[:n_ev]
        tr = np.flatnonzero(TRANSLATIONS[kinds.view(np.uint16)].astype(bool) & (hop >= 0))
        tr_ids = np.zeros(len(tr), np.int32)
        if len(tr):  # each translation alone: its own list
            new.append(hc.assign(np.arange(len(tr), dtype=np.int32),
                                 *(np.ascontiguousarray(c[tr]) for c in cols), len(tr),
                                 np.ones(len(tr), np.uint8), self._none, tr_ids))
        lone = np.flatnonzero(hop < 0)
        frame_ids = np.zeros(n_frames, np.int32)
        if len(lone):
            new.append(hc.assign(np.ascontiguousarray(res.ev_frame[lone]),
                                 *(np.ascontiguousarray(c[lone]) for c in cols), len(lone),
                                 np.ones(n_frames, np.uint8), self._none, frame_ids))
        for new_events, new_comments in new:
            self._name(new_events, new_comments)
        ev_ids = np.zeros(n_ev, np.int32)
        ev_ids[tr] = tr_ids
        dp = self.dec_piece
        return dp[hop_ids], dp[ev_ids], dp[frame_ids]

    def _name(self, new_events: list, new_comments: list) -> None:
        """Pieces of newly seen lists of decisions (``["text",...]``)."""
        t = self.t
        self.event_texts += [_js(decision_text(t, *ev)) for ev in new_events]
        ids = []
        for parent, eid in new_comments:
            text = self.event_texts[eid]
            if parent:
                text = self.comment_texts[parent][:-1] + b"," + text + b"]"
            else:
                text = b"[" + text + b"]"
            self.comment_texts.append(text)
            ids.append(self.pieces.add_list(text))
        if ids:
            self.dec_piece = np.concatenate([self.dec_piece, np.array(ids, np.int32)])


def policy_item(t: Tables, pol: int) -> dict[str, Any]:
    """A NetworkPolicy or CiliumNetworkPolicy as Hubble's ``Policy`` message names it
    (flow.proto; ``derived-from`` and ``kind`` say which)."""
    ns, _, name = t.pol_name[pol].partition("/")
    kind = t.pol_kind[pol] if pol < len(t.pol_kind) else "NetworkPolicy"
    prefix = "k8s:io.cilium.k8s.policy"
    return {"name": name, "namespace": ns,
            "labels": [f"{prefix}.derived-from={kind}", f"{prefix}.name={name}",
                       f"{prefix}.namespace={ns}"],
            "kind": kind}


def _ipv4(ip: int) -> str:
    return ".".join(str((ip >> s) & 0xFF) for s in (24, 16, 8, 0))


def policy_fragment(t: Tables, events: list[tuple[int, int, int, int]]) -> bytes:
    """The policy fields of a record whose frame met the verdicts ``events`` (kind, pod,
    direction, rule) in order: ``,"traffic_direction":...`` and the non-empty
    ``*_allowed_by``/``*_denied_by`` lists (see the module's docstring)."""
    lists: dict[str, list[int]] = {}
    direction = denied = 0
    for kind, pod, d, rule in events:
        word = "ingress" if d == C.POL_INGRESS else "egress" if d == C.POL_EGRESS else ""
        if not word:
            continue
        if kind == C.EV_POLICY_DENY:
            pols = selecting_policies(t, pod, d)
            key = f"{word}_denied_by"
            denied = denied or d
        else:
            pols = [rule_policy(t, rule)] if rule >= 0 else []
            key = f"{word}_allowed_by"
        have = lists.setdefault(key, [])
        have += [p for p in pols if p >= 0 and p not in have]
        direction = d
    direction = denied or direction
    out = b',"traffic_direction":' + _js("INGRESS" if direction == C.POL_INGRESS else
                                         "EGRESS" if direction == C.POL_EGRESS else
                                         "TRAFFIC_DIRECTION_UNKNOWN")
    for key in ("egress_allowed_by", "ingress_allowed_by", "egress_denied_by",
                "ingress_denied_by"):
        if lists.get(key):
            out += b',' + _js(key) + b":" + _json([policy_item(t, p) for p in lists[key]])
    return out


def implementations() -> dict[str, ModuleType]:
    """Backend name -> the module holding ``encode_flows`` (and ``HopComments``)."""
    from kemu._backend import twins

    return twins(__name__)


def active() -> ModuleType:
    """The module of the active backend (``kemu._backend.BACKEND``)."""
    from kemu._backend import BACKEND

    return implementations()[BACKEND]
