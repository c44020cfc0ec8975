"""Traces: what happened to one injected packet and everything it caused, for people and scripts.

A ``Trace`` wraps the engine's ``Packet`` records. ``observations()`` groups decisions by
node in the manner of Antrea Traceflow: each has a component (Forwarding, LB, NAT, Routing,
Overlay) and an action (Forwarded, Delivered, Dropped, Rejected, Left). Three renderings:
``minimal`` (one line per packet, stable for golden tests), ``summary`` (observations) and
``detailed`` (every hop with its decisions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kemu.dataplane import codes as C
from kemu.dataplane.describe import drop_text, event_text, ip_str, owner_text
from kemu.dataplane.packet import ETH_ARP, ETH_IP, u16, u32
from kemu.dataplane.tables import Tables
from kemu.frontend.engine import Packet

_COMPONENT = {
    C.EV_BR_FDB: "Forwarding", C.EV_BR_FLOOD: "Forwarding", C.EV_BR_LOCAL: "Forwarding",
    C.EV_ROUTE: "Routing", C.EV_DNAT: "LB", C.EV_CT_REUSE: "LB", C.EV_AFFINITY: "LB",
    C.EV_UNDNAT: "LB", C.EV_SNAT: "NAT", C.EV_UNSNAT: "NAT", C.EV_DELIVER: "Forwarding",
    C.EV_LEFT: "Routing", C.EV_BRIDGED_DNAT: "Forwarding", C.EV_ENCAP: "Overlay",
    C.EV_DECAP: "Overlay", C.EV_LOCAL_ROUTE: "Routing", C.EV_NEIGH_MISS: "Routing",
    C.EV_NODE_INPUT: "Forwarding",
}
_QUIET = {C.EV_TTL, C.EV_FIXL2, C.EV_BR_LOCAL, C.EV_NODE_INPUT}


@dataclass
class Observation:
    node: str
    component: str
    action: str
    detail: str
    interface: str = ""

    def to_dict(self) -> dict:
        return {"node": self.node, "component": self.component, "action": self.action,
                "detail": self.detail, "interface": self.interface}


@dataclass
class Trace:
    tables: Tables
    packets: list[Packet] = field(default_factory=list)

    # ------------------------------------------------------------ verdicts
    @property
    def first(self) -> Packet:
        return self.packets[0]

    def outcome(self, packet: int = 0) -> str:
        """DELIVERED when any copy reached an end host that wanted it; else the first drop."""
        p = self.packets[packet]
        kinds = [k for k, r, _i, _a in p.outcomes if not (k == C.OUT_DROPPED and r in (
            C.DROP_NOT_LOCAL, C.DROP_OTHERHOST))]
        if C.OUT_DELIVERED in kinds:
            return "DELIVERED"
        if C.OUT_LEFT in kinds:
            return "LEFT"
        if C.OUT_NEIGH in kinds:
            return "NEIGH_MISS"
        return "DROPPED"

    @property
    def dropped(self) -> bool:
        return self.outcome(0) == "DROPPED"

    def drop_reasons(self, packet: int = 0) -> list[str]:
        return [drop_text(r) for k, r, _i, _a in self.packets[packet].outcomes
                if k == C.OUT_DROPPED and r not in (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST)]

    def delivered_to(self, packet: int = 0) -> list[str]:
        return [owner_text(self.tables, i) for k, _r, i, _a in self.packets[packet].outcomes
                if k == C.OUT_DELIVERED]

    def answers(self) -> list[Packet]:
        return [p for p in self.packets if p.origin == "answer"]

    def frames_at(self, iface: str, direction: str | None = None) -> list[bytes]:
        """Every frame seen at an interface (by name), optionally only ``in`` or ``out``."""
        i = self.tables.iface(iface)
        want = {None: None, "in": C.DIR_IN, "out": C.DIR_OUT}[direction]
        return [data for p in self.packets for (hi, d, data, _e) in p.hops
                if hi == i and (want is None or d == want)]

    def path(self, packet: int = 0) -> list[tuple[str, str]]:
        t = self.tables
        return [(t.if_name[i], "in" if d == C.DIR_IN else "out")
                for i, d, _data, _e in self.packets[packet].hops]

    # ------------------------------------------------------------ observations
    def observations(self, packet: int = 0) -> list[Observation]:
        t = self.tables
        obs: list[Observation] = []
        for iface, _d, _data, events in self.packets[packet].hops:
            node = _node_of(t, iface)
            for kind, a, b, c in events:
                if kind in _QUIET:
                    continue
                action = "Forwarded"
                comp = _COMPONENT.get(kind, "Forwarding")
                if kind == C.EV_DELIVER:
                    action = "Delivered"
                elif kind == C.EV_LEFT:
                    action = "Left"
                elif kind == C.EV_DROP:
                    if a in (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST):
                        continue
                    action = "Rejected" if a == C.DROP_REJECT_NO_ENDPOINTS else "Dropped"
                    comp = {C.DROP_REJECT_NO_ENDPOINTS: "LB", C.DROP_NO_LOCAL_ENDPOINTS: "LB",
                            C.DROP_TTL_EXCEEDED: "Routing", C.DROP_NO_ROUTE: "Routing"
                            }.get(a, "Forwarding")
                o = Observation(node, comp, action, event_text(t, kind, a, b, c),
                                t.if_name[iface])
                if comp != "Forwarding" and any(
                        (x.node, x.component, x.detail) == (o.node, o.component, o.detail)
                        for x in obs):
                    continue  # a flood's copies repeat the decisions made before the flood
                obs.append(o)
        return obs

    # ------------------------------------------------------------ renderings
    def minimal(self) -> str:
        lines = []
        for n, p in enumerate(self.packets):
            lines.append(f"{p.origin}: {_first(p)} => "
                         f"{self.outcome(n)}"
                         + (f" ({', '.join(self.drop_reasons(n))})" if self.drop_reasons(n)
                            else "")
                         + (f" to {', '.join(self.delivered_to(n))}"
                            if self.delivered_to(n) else ""))
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        lines = []
        for n, p in enumerate(self.packets):
            lines.append(f"{p.origin}: {_first(p)}")
            current = None
            for o in self.observations(n):
                if o.node != current:
                    lines.append(f"  {o.node}")
                    current = o.node
                lines.append(f"    {o.component:<10} {o.action:<9} {o.detail}")
            lines.append(f"  => {self.outcome(n)}")
        return "\n".join(lines) + "\n"

    def detailed(self) -> str:
        t = self.tables
        lines = []
        for n, p in enumerate(self.packets):
            lines.append(f"{p.origin}: => {self.outcome(n)}")
            for iface, d, data, events in p.hops:
                arrow = "->" if d == C.DIR_OUT else "<-"
                text = "; ".join(event_text(t, *e) for e in events if e[0] != C.EV_TTL)
                lines.append(f"  {arrow} {t.if_name[iface]:<32} {_summary(data)}"
                             + (f"  [{text}]" if text else ""))
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        t = self.tables
        return {"packets": [{
            "origin": p.origin,
            "outcome": self.outcome(n),
            "dropReasons": self.drop_reasons(n),
            "deliveredTo": self.delivered_to(n),
            "hops": [{"interface": t.if_name[i], "direction": "in" if d == C.DIR_IN else "out",
                      "packet": _summary(data),
                      "decisions": [event_text(t, *e) for e in ev]}
                     for i, d, data, ev in p.hops],
            "observations": [o.to_dict() for o in self.observations(n)],
        } for n, p in enumerate(self.packets)]}


def _first(p: Packet) -> str:
    """A packet as its sender sent it (before any NAT on the way), else its first hop."""
    if p.sent:
        return _summary(p.sent)
    return _summary(p.hops[0][2]) if p.hops else "-"


def _node_of(t: Tables, iface: int) -> str:
    n = int(t.if_node[iface])
    return t.node_name[n] if n >= 0 else "node-network"


def _summary(data: bytes) -> str:
    """A one-line, Scapy-free description of a frame (stable for golden files)."""
    if len(data) < 14:
        return f"runt frame ({len(data)} bytes)"
    et = u16(data, 12)
    if et == ETH_ARP and len(data) >= 42:
        op = "request who-has" if u16(data, 20) == 1 else "reply is-at"
        return f"ARP {op} {ip_str(u32(data, 38))} tell {ip_str(u32(data, 28))}"
    if et != ETH_IP or len(data) < 34:
        return f"ethertype {et:#06x}, {len(data)} bytes"
    src, dst, proto, ttl = ip_str(u32(data, 26)), ip_str(u32(data, 30)), data[23], data[22]
    l4 = 14 + (data[14] & 0xF) * 4
    if proto in (C.PROTO_TCP, C.PROTO_UDP) and len(data) >= l4 + 4:
        sp, dp = u16(data, l4), u16(data, l4 + 2)
        name = "TCP" if proto == C.PROTO_TCP else "UDP"
        extra = ""
        if proto == C.PROTO_TCP and len(data) >= l4 + 14:
            fl = data[l4 + 13]
            extra = " [" + "".join(ch for bit, ch in ((2, "S"), (16, "A"), (1, "F"), (4, "R"),
                                                       (8, "P")) if fl & bit) + "]"
        return f"{name} {src}:{sp} > {dst}:{dp}{extra} ttl {ttl}"
    if proto == C.PROTO_ICMP and len(data) >= l4 + 2:
        return f"ICMP {src} > {dst} type {data[l4]} code {data[l4 + 1]} ttl {ttl}"
    return f"IP {src} > {dst} proto {proto} ttl {ttl}"
