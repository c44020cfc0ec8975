"""The flow log's test oracle: the straightforward per-frame code ``kemu/io/flowlog.py`` had
before its records were interned and encoded per batch (``encode_flows``), kept to check that
both twins write the same bytes (tests/test_flowlog.py).

Changes since, made on purpose in both: an outcome without a hop lists the decisions of its
own frame's hop-less events (the old code listed every hop-less event of the batch); a
Service's ClusterIP is no endpoint (no ``reserved:world``): records name the Service, a
request's ``destination_service`` (its DNAT, else a ClusterIP destination), a reply's
``source_service`` (its un-DNAT, else a ClusterIP source). NetworkPolicy (#17): the outcome
records of a frame with policy verdicts carry ``traffic_direction`` and the
``*_allowed_by``/``*_denied_by`` policies (``_policy_fields``, written from the tables' arrays
here, not through ``kemu.dataplane.describe``).
"""

from __future__ import annotations

import ipaddress
import json
from typing import IO

from kemu.dataplane import codes as C
from kemu.dataplane.describe import event_text, mac_str
from kemu.dataplane.packet import ETH_IP, u16, u32, u48
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables
from kemu.io.flowlog import EndpointInfo, rfc3339

_TRANSLATIONS = {C.EV_DNAT, C.EV_SNAT, C.EV_UNDNAT, C.EV_UNSNAT, C.EV_IPVS_DNAT}
_DNATS = {C.EV_DNAT, C.EV_IPVS_DNAT}  # kube-proxy's, kube-router's IPVS
_NOISE = {C.DROP_NOT_LOCAL, C.DROP_OTHERHOST, C.DROP_SAME_PORT}


class OracleFlowLog:
    """The flow log as kemu wrote it before records were interned: one frame, one record
    at a time, through ``json.dumps``."""

    def __init__(self, out: IO[str], tables: Tables, endpoints: dict[int, EndpointInfo],
                 services: dict[int, tuple[str, str]], kemu_format: bool = False) -> None:
        self.out = out
        self.t = tables
        self.endpoints = endpoints   # IPv4 (int) -> pod identity
        self.services = services     # service-port id -> (namespace, name)
        self.kemu_format = kemu_format
        self.records = 0
        self.cluster_ips = {int(ip): services[sp] for sp, ip in enumerate(tables.sp_ip)
                            if int(ip) and sp in services}

    def write_batch(self, res: Results, ts_ns, frame_numbers=None) -> None:  # noqa: ANN001
        t = self.t
        events_of: dict[int, list[int]] = {}
        for e in range(res.n_events):
            events_of.setdefault(int(res.ev_hop[e]), []).append(e)
        hops_of: dict[int, list[int]] = {}
        for h in range(res.n_hops):
            hops_of.setdefault(int(res.hop_frame[h]), []).append(h)
        outcomes_of: dict[int, list[int]] = {}
        for o in range(res.n_outcomes):
            outcomes_of.setdefault(int(res.oc_frame[o]), []).append(o)
        lines = []
        for fi in sorted(set(hops_of) | set(outcomes_of)):
            ts = int(ts_ns[fi])
            number = int(frame_numbers[fi]) if frame_numbers is not None else fi + 1
            src_svc: tuple[str, str] | None = None
            dst_svc: tuple[str, str] | None = None
            reply = False
            for h in hops_of.get(fi, []):
                for e in events_of.get(h, []):
                    kind = int(res.ev_kind[e])
                    if kind not in _TRANSLATIONS:
                        continue
                    a = int(res.ev_a[e])
                    sp = int(t.fe_sp[a]) if kind in _DNATS else (
                        a if kind == C.EV_UNDNAT else -1)
                    if sp >= 0 and kind in _DNATS:
                        dst_svc = self.services.get(sp)
                    elif sp >= 0:
                        src_svc = self.services.get(sp)
                    reply = reply or kind in (C.EV_UNDNAT, C.EV_UNSNAT)
                    lines.append(self._record(res, h, ts, "TRANSLATED", None, "TO_STACK",
                                              src_svc, dst_svc, reply, number, [e], {}))
            for o in outcomes_of.get(fi, []):
                kind, reason = int(res.oc_kind[o]), int(res.oc_reason[o])
                if kind == C.OUT_DROPPED and reason in _NOISE:
                    continue
                h = int(res.oc_hop[o])
                iface = int(res.oc_iface[o])
                ikind = int(t.if_kind[iface]) if iface >= 0 else -1
                if kind == C.OUT_DELIVERED:
                    point = "TO_ENDPOINT" if ikind in (C.IF_POD_ETH, C.IF_POD_LO) else (
                        "TO_NETWORK" if ikind in (C.IF_EXT_ETH, C.IF_GW_ETH) else "TO_HOST")
                    verdict, why = "FORWARDED", None
                elif kind == C.OUT_LEFT:
                    verdict, why, point = "FORWARDED", None, "TO_NETWORK"
                elif kind == C.OUT_NEIGH:
                    verdict, why, point = "DROPPED", "UNKNOWN_L3_TARGET_ADDRESS", "TO_STACK"
                else:
                    why = C.DROP_NAMES.get(reason, ("", "DROP_REASON_UNKNOWN"))[1]
                    verdict = "DROPPED"
                    point = "TO_STACK"
                evs = events_of.get(h, [])
                if h < 0:  # the frame's own hop-less events
                    evs = [e for e in evs if int(res.ev_frame[e]) == fi]
                lines.append(self._record(res, h, ts, verdict, why, point, src_svc, dst_svc,
                                          reply, number, evs, self._policy_fields(res, fi)))
        if lines:
            self.out.write("".join(lines))
            self.records += len(lines)

    def _address(self, ip: int) -> tuple[dict | None, tuple[str, str] | None]:
        """(the endpoint of an address, or None for a Service's ClusterIP; that Service)."""
        info = self.endpoints.get(ip)
        if info is not None:
            return info.to_dict(), None
        owner = self.t.owner_of(ip)
        if owner >= 0 and int(self.t.if_kind[owner]) in (C.IF_NODE_ETH, C.IF_BRIDGE):
            return {"labels": ["reserved:host"]}, None
        if ip in self.cluster_ips:
            return None, self.cluster_ips[ip]
        cnet, cmask = self.t.cluster_cidr
        if ip & cmask == cnet:
            return {"labels": ["reserved:unmanaged"]}, None
        return {"labels": ["reserved:world"]}, None

    def _record(self, res: Results, h: int, ts: int, verdict: str, why: str | None,
                point: str, src_svc: tuple[str, str] | None,
                dst_svc: tuple[str, str] | None, reply: bool, number: int,
                evs: list[int], policy: dict) -> str:
        t = self.t
        flow: dict = {"time": rfc3339(ts), "verdict": verdict}
        if why:
            flow["drop_reason_desc"] = why
        node = "node-network"
        if h >= 0:
            off, ln = int(res.hop_off[h]), int(res.hop_len[h])
            data = res.arena[off: off + ln].tobytes()
            iface = int(res.hop_iface[h])
            n = int(t.if_node[iface])
            node = t.node_name[n] if n >= 0 else "node-network"
            flow.update(_packet_fields(data))
            ip = flow.get("IP")
            if ip:
                src, src_addr_svc = self._address(int(ipaddress.IPv4Address(ip["source"])))
                dst, dst_addr_svc = self._address(
                    int(ipaddress.IPv4Address(ip["destination"])))
                if src is not None:
                    flow["source"] = src
                if dst is not None:
                    flow["destination"] = dst
                src_svc = src_svc or src_addr_svc
                dst_svc = dst_svc or dst_addr_svc
            flow["interface"] = {"name": t.if_name[iface]}
        flow["Type"] = "L3_L4"
        flow["node_name"] = node
        flow["trace_observation_point"] = point
        flow["is_reply"] = reply
        if src_svc:
            flow["source_service"] = {"name": src_svc[1], "namespace": src_svc[0]}
        if dst_svc:
            flow["destination_service"] = {"name": dst_svc[1], "namespace": dst_svc[0]}
        flow.update(policy)
        if self.kemu_format:
            flow["kemu"] = {"frame": number, "hop": h,
                            "decisions": self._decisions(res, h, evs)}
        return json.dumps({"flow": flow, "node_name": node, "time": flow["time"]},
                          separators=(",", ":")) + "\n"

    def _decisions(self, res: Results, h: int, evs: list[int]) -> list[str]:
        """The words of events ``evs`` (of hop ``h``, -1: hop-less): a policy denial at a
        hop names the flow of the hop's packet, and the policy drop after it is left out."""
        t = self.t
        events = [(int(res.ev_kind[e]), int(res.ev_a[e]), int(res.ev_b[e]), int(res.ev_c[e]))
                  for e in evs]
        denied = h >= 0 and any(k == C.EV_POLICY_DENY for k, *_ in events)
        data = b""
        if denied:
            off, ln = int(res.hop_off[h]), int(res.hop_len[h])
            data = res.arena[off:off + ln].tobytes()
        out = []
        for kind, a, b, c in events:
            if denied and kind == C.EV_DROP and a == C.DROP_POLICY:
                continue
            text = event_text(t, kind, a, b, c)
            if kind == C.EV_POLICY_DENY and h >= 0 and len(data) >= 34 and data[12:14] == \
                    b"\x08\x00":
                text = text.replace("the connection)", _flow_words(t, a, b, data) + ")")
            out.append(text)
        return out


    def _policy_fields(self, res: Results, fi: int) -> dict:
        """Frame ``fi``'s policy verdicts as Hubble's fields: the policy of each allowing
        rule, the policies selecting a denied pod in the denied direction; the direction of
        the denial, else of the last verdict."""
        t = self.t
        fields: dict[str, list] = {}
        direction = denied = None
        for e in range(res.n_events):
            kind = int(res.ev_kind[e])
            if int(res.ev_frame[e]) != fi or kind not in (C.EV_POLICY_ALLOW, C.EV_POLICY_DENY):
                continue
            pod, d, rule = int(res.ev_a[e]), int(res.ev_b[e]), int(res.ev_c[e])
            word = {C.POL_INGRESS: "ingress", C.POL_EGRESS: "egress"}[d]
            if kind == C.EV_POLICY_DENY:
                k = 2 * pod + d - 1
                start = int(t.sel_start[k])
                pols = [int(x) for x in t.sel_pol[start:start + int(t.sel_count[k])]]
                key = f"{word}_denied_by"
                denied = denied or d
            else:
                pols = [int(t.rule_pol[rule])] if rule >= 0 else []
                key = f"{word}_allowed_by"
            for pol in pols:
                ns, name = t.pol_name[pol].split("/")
                item = {"name": name, "namespace": ns, "labels": [
                    "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
                    f"k8s:io.cilium.k8s.policy.name={name}",
                    f"k8s:io.cilium.k8s.policy.namespace={ns}"], "kind": "NetworkPolicy"}
                if item not in fields.setdefault(key, []):
                    fields[key].append(item)
            direction = d
        if direction is None:
            return {}
        out: dict = {"traffic_direction": {C.POL_INGRESS: "INGRESS", C.POL_EGRESS: "EGRESS"}[
            denied or direction]}
        for key in ("egress_allowed_by", "ingress_allowed_by", "egress_denied_by",
                    "ingress_denied_by"):
            if fields.get(key):
                out[key] = fields[key]
        return out


def _flow_words(t: Tables, pod: int, direction: int, data: bytes) -> str:
    """``10.244.0.3:41000 -> 8080/TCP`` (ingress) or ``SRC:SPORT -> DST:DPORT/TCP`` (egress,
    the source the pod's own address)."""
    l4 = 14 + (data[14] & 0xF) * 4
    proto = data[23]
    name = {C.PROTO_TCP: "TCP", C.PROTO_UDP: "UDP", C.PROTO_SCTP: "SCTP",
            C.PROTO_ICMP: "ICMP"}.get(proto, f"proto {proto}")
    src = str(ipaddress.IPv4Address(u32(data, 26)))
    dst = str(ipaddress.IPv4Address(u32(data, 30)))
    if direction == C.POL_EGRESS:
        src = str(ipaddress.IPv4Address(int(t.if_ip[int(t.pod_eth_if[pod])])))
    if name in ("TCP", "UDP", "SCTP"):
        sport, dport = u16(data, l4), u16(data, l4 + 2)
        if direction == C.POL_INGRESS:
            return f"{src}:{sport} -> {dport}/{name}"
        return f"{src}:{sport} -> {dst}:{dport}/{name}"
    return f"{src} -> {name}" if direction == C.POL_INGRESS else f"{src} -> {dst} {name}"


def _packet_fields(data: bytes) -> dict:
    out: dict = {}
    if len(data) >= 14:
        out["ethernet"] = {"source": mac_str(u48(data, 6)), "destination": mac_str(u48(data, 0))}
    if len(data) < 34 or u16(data, 12) != ETH_IP:
        return out
    out["IP"] = {"source": str(ipaddress.IPv4Address(u32(data, 26))),
                 "destination": str(ipaddress.IPv4Address(u32(data, 30))), "ipVersion": "IPv4"}
    l4 = 14 + (data[14] & 0xF) * 4
    proto = data[23]
    if proto == C.PROTO_TCP and len(data) >= l4 + 14:
        fl = data[l4 + 13]
        flags = {name: True for bit, name in ((1, "FIN"), (2, "SYN"), (4, "RST"), (8, "PSH"),
                                              (16, "ACK"), (32, "URG")) if fl & bit}
        out["l4"] = {"TCP": {"source_port": u16(data, l4), "destination_port": u16(data, l4 + 2),
                             "flags": flags}}
        out["Summary"] = "TCP Flags: " + ", ".join(flags)
    elif proto == C.PROTO_UDP and len(data) >= l4 + 4:
        out["l4"] = {"UDP": {"source_port": u16(data, l4), "destination_port": u16(data, l4 + 2)}}
        out["Summary"] = "UDP"
    elif proto == C.PROTO_ICMP and len(data) >= l4 + 2:
        out["l4"] = {"ICMPv4": {"type": data[l4], "code": data[l4 + 1]}}
        out["Summary"] = f"ICMPv4 type {data[l4]} code {data[l4 + 1]}"
    return out
