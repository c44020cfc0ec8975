"""Traces: what happened to one injected packet and everything it caused, for people and scripts.

A ``Trace`` wraps the engine's ``Packet`` records. ``observations()`` groups decisions by
node in the manner of Antrea Traceflow: each has a component (Forwarding, LB, NAT, Routing,
Overlay) and an action (Forwarded, Delivered, Dropped, Rejected, Left). Three renderings:
``minimal`` (one line per packet, stable for golden tests), ``summary`` (observations) and
``detailed`` (every hop with its decisions). ``verdict()`` answers "can the sender reach the
destination?": yes when the exchange completes (a SYN-ACK, an echo reply, a UDP reply reaches
the sender), no for a drop, a RST, an ICMP error, no answer, or an answer that ends elsewhere
(e.g. leaves the cluster through the gateway); with the reason in words.

NetworkPolicy (P-1, P-2): a verdict on a new connection is an observation of its own
(component ``Policy``, action ``Allowed``/``Denied``: ``ingress of ns/pod allowed by ns/policy
ingress rule 0``, ``ingress of ns/pod denied (selected by ...; no rule allows FLOW)``), the
denial naming the flow as the hop saw it; the drop that follows a denial adds nothing and is
not repeated. A request a policy dropped is ``denied by NetworkPolicy: ...`` in ``verdict()``.
Cilium (``spec.cni: cilium``): each hop at a device with an eBPF program attached is an
observation of component ``eBPF`` naming the program (``cil_from_container at lxc...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kemu.dataplane import codes as C
from kemu.dataplane.describe import (
    bpf_program,
    denial_text,
    drop_text,
    event_text,
    flow_text,
    frame_flow,
    ip_str,
    owner_text,
    policy_text,
    policy_verdict_text,
)
from kemu.dataplane.packet import ETH_ARP, ETH_IP, u16, u32
from kemu.dataplane.tables import Tables
from kemu.frontend.engine import Packet

_COMPONENT = {
    C.EV_BR_FDB: "Forwarding", C.EV_BR_FLOOD: "Forwarding", C.EV_BR_LOCAL: "Forwarding",
    C.EV_ROUTE: "Routing", C.EV_DNAT: "LB", C.EV_CT_REUSE: "LB", C.EV_AFFINITY: "LB",
    C.EV_UNDNAT: "LB", C.EV_SNAT: "NAT", C.EV_UNSNAT: "NAT", C.EV_DELIVER: "Forwarding",
    C.EV_LEFT: "Routing", C.EV_BRIDGED_DNAT: "Forwarding", C.EV_ENCAP: "Overlay",
    C.EV_DECAP: "Overlay", C.EV_LOCAL_ROUTE: "Routing", C.EV_NEIGH_MISS: "Routing",
    C.EV_NODE_INPUT: "Forwarding", C.EV_L7_REDIRECT: "Policy", C.EV_L7_HTTP: "L7 proxy",
    C.EV_IPVS_DNAT: "LB", C.EV_IPIP_ENCAP: "Overlay", C.EV_IPIP_DECAP: "Overlay",
    C.EV_EBT_SNAT: "NAT", C.EV_EBT_DNAT: "NAT",
    C.EV_SOCK_LB: "LB",
    C.EV_OVS_ENCAP: "Overlay", C.EV_OVS_DECAP: "Overlay",
}
# Antrea's OVS tables as Traceflow's observations name their component (componentInfo: the
# table, first in the detail)
_OVS_COMPONENT = {
    C.OVS_T_CLASSIFIER: "Classifier", C.OVS_T_SPOOFGUARD: "SpoofGuard",
    C.OVS_T_ARP: "Forwarding", C.OVS_T_ENDPOINT_DNAT: "LB", C.OVS_T_L3_FORWARDING: "Routing",
    C.OVS_T_L3_DEC_TTL: "Routing", C.OVS_T_L2_FORWARDING: "Forwarding",
    C.OVS_T_OUTPUT: "Forwarding",
}
_QUIET = {C.EV_TTL, C.EV_FIXL2, C.EV_BR_LOCAL, C.EV_NODE_INPUT}
_POLICY = (C.EV_POLICY_ALLOW, C.EV_POLICY_DENY)


def hop_decisions(t: Tables, data: bytes, events: list[tuple[int, int, int, int]]
                  ) -> list[tuple[tuple[int, int, int, int], str]]:
    """A hop's events with their words, as its pcapng comment says them: a policy denial
    names the flow in ``data`` (the hop's frame), the policy drop after it is left out."""
    denied = any(e[0] == C.EV_POLICY_DENY for e in events)
    flow = frame_flow(data) if denied else None
    out = []
    for e in events:
        kind, a, b, c = e
        if denied and kind == C.EV_DROP and a == C.DROP_POLICY:
            continue
        if kind == C.EV_POLICY_DENY:
            out.append((e, policy_text(t, kind, a, b, c, _flow_words(b, flow))))
        else:
            out.append((e, event_text(t, kind, a, b, c)))
    return out


def _flow_words(direction: int, flow: tuple[int, int, int, int, int] | None) -> str | None:
    return flow_text(direction, *flow) if flow is not None else None


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


@dataclass(frozen=True)
class Verdict:
    """Whether the exchange a trace started completed, and why (one line of words)."""

    reachable: bool
    reason: str


_ICMP_ERRORS = {(3, 0): "network unreachable", (3, 1): "host unreachable",
                (3, 2): "protocol unreachable", (3, 3): "port unreachable",
                (3, 4): "fragmentation needed", (3, 9): "network prohibited",
                (3, 10): "host prohibited", (3, 13): "administratively prohibited",
                (11, 0): "time exceeded (TTL)", (11, 1): "time exceeded (reassembly)"}


@dataclass
class Trace:
    tables: Tables
    packets: list[Packet] = field(default_factory=list)
    sender: int = -1        # the interface that sent packet 0 (-1: its source address's owner)
    respond: bool = True    # whether the emulated stacks answered

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

    # ------------------------------------------------------------ can A reach B?
    def verdict(self) -> Verdict:
        """Reachable when the answer the first packet asks for reaches its sender: a SYN-ACK
        to a SYN (any TCP segment but a RST to other segments), an echo reply to an echo
        request, a UDP datagram to a UDP datagram. Not reachable on a drop, a RST, an ICMP
        error, no answer (``respond`` off: the stacks never answer) or an answer that ends
        elsewhere (dropped, left through the gateway, delivered to another host)."""
        if not self.packets:
            return Verdict(False, "nothing was sent")
        if not self.packets[0].hops:
            if self.outcome(0) == "DELIVERED":  # a node's packet to its own address or lo
                return Verdict(False, "delivered to the node's own stack without crossing a "
                               "device; kemu does not model a node answering itself")
            return Verdict(False, "nothing was sent")
        request = self.packets[0].hops[0][2]
        chain = {0}  # the request and its resumptions (held for ARP, then sent on)
        key = _frag_key(request)  # a fragment: the other injected fragments of its datagram
        for n, p in enumerate(self.packets):
            if (p.origin == "resumed" and p.parent in chain) or (
                    key is not None and p.origin == "injected" and p.hops
                    and _frag_key(p.hops[0][2]) == key):
                chain.add(n)
        last = max(n for n in chain if self.packets[n].origin == "injected")
        mine = self._sender_ifaces(request)
        want = _wanted(request)
        answers = []  # (kind, frame as it arrived or was first sent, where it ended, packet)
        for p in self.packets:
            if p.origin not in ("answer", "icmp-error") or p.parent not in chain or not p.hops:
                continue
            reached = [f for (k, _r, i, _a), f in zip(p.outcomes, p.outcome_frames, strict=True)
                       if k == C.OUT_DELIVERED and i in mine]
            frame = reached[0] if reached and len(reached[0]) >= 14 else p.hops[0][2]
            answers.append((_kind(frame), frame, bool(reached), p))
        for kinds, words in ((want, None), ({"rst"}, "connection refused"),
                             ({"icmp-error"}, "unreachable")):
            for kind, frame, reached, p in answers:
                if reached and kind in kinds:
                    text = f"{_answer_words(kind, frame)} from {_endpoint(frame, kind)}" \
                        f"{self._by(p)}"
                    if words is None:
                        done = "connection established" if kind == "synack" else "answered"
                        return Verdict(True, f"{done} ({text})")
                    return Verdict(False, f"{words} ({text}){self._drop_note(last)}")
        if answers:
            kind, frame, reached, p = next((a for a in answers if a[0] in want), answers[0])
            if reached:  # an answer, but not one that completes the exchange
                return Verdict(False, f"unexpected answer ({_answer_words(kind, frame)} from "
                                      f"{_endpoint(frame, kind)}{self._by(p)})")
            return Verdict(False, f"no answer reached the sender (the "
                                  f"{_answer_words(kind, frame)} from {_endpoint(frame, kind)}"
                                  f"{self._by(p)}, {self._fate(p)})")
        fate = self.outcome(last)
        denial = self._denial(last)
        if fate == "DROPPED" and denial:
            return Verdict(False, f"denied by NetworkPolicy{self._drop_where(last)}: {denial}")
        if fate == "DROPPED":
            return Verdict(False, f"dropped{self._drop_where(last)}: "
                                  f"{', '.join(self.drop_reasons(last)) or 'ignored'}")
        if fate == "LEFT":
            return Verdict(False, "no answer: the packet left the cluster through the gateway "
                                  f"(to {ip_str(u32(request, 30)) if _is_ip(request) else '?'})")
        if fate == "NEIGH_MISS":
            return Verdict(False, "no answer: the next hop's address was not resolved")
        to = ", ".join(sorted(set(self.delivered_to(last)))) or "?"
        if not self.respond:
            return Verdict(False, f"no answer: delivered to {to}; the emulated stacks do not "
                                  "answer (--no-respond)")
        return Verdict(False, f"no answer: delivered to {to}, which sent nothing back")

    def _denial(self, packet: int = 0) -> str:
        """The policy denial that dropped the request (its words), or ``""``."""
        if C.DROP_POLICY not in {r for k, r, _i, _a in self.packets[packet].outcomes
                                 if k == C.OUT_DROPPED}:
            return ""
        for _i, _d, data, events in self.packets[packet].hops:
            for kind, a, b, _c in events:
                if kind == C.EV_POLICY_DENY:
                    return denial_text(self.tables, a, b, _flow_words(b, frame_flow(data)))
        return ""

    def _sender_ifaces(self, request: bytes) -> set[int]:
        t = self.tables
        i = self.sender
        if i < 0 and _is_ip(request):
            i = t.owner_of(u32(request, 26))
        if i < 0:
            return set()
        kind = int(t.if_kind[i])
        node_kinds = (C.IF_NODE_LOCAL, C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP, C.IF_OVS_GW)
        if kind in node_kinds:
            node = int(t.if_node[i])  # a node's processes: any of its addresses
            return {k for k in range(t.n_ifaces) if int(t.if_node[k]) == node and int(
                t.if_kind[k]) in node_kinds}
        if kind == C.IF_POD_ETH:  # a pod's answers to itself arrive on its lo (M-4)
            owner = int(t.if_owner[i])
            return {i} | {k for k in range(t.n_ifaces) if int(t.if_kind[k]) == C.IF_POD_LO
                          and int(t.if_owner[k]) == owner}
        return {i}

    def _by(self, p: Packet) -> str:
        """Who sent an answer, when its source address does not say it (NAT, a node)."""
        who = owner_text(self.tables, p.hops[0][0])
        return f", {who}" if who != "?" else ""

    def _fate(self, p: Packet) -> str:
        kinds = {k for k, r, _i, _a in p.outcomes if not (k == C.OUT_DROPPED and r in (
            C.DROP_NOT_LOCAL, C.DROP_OTHERHOST))}
        if C.OUT_LEFT in kinds:
            return "left the cluster through the gateway"
        drops = [(r, i) for k, r, i, _a in p.outcomes if k == C.OUT_DROPPED
                 and r not in (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST)]
        if drops:
            where = f" on {_node_of(self.tables, drops[0][1])}" if drops[0][1] >= 0 else ""
            return f"was dropped{where}: {drop_text(drops[0][0])}"
        ends = [owner_text(self.tables, i) for k, _r, i, _a in p.outcomes
                if k == C.OUT_DELIVERED]
        if ends:
            return f"was delivered to {', '.join(sorted(set(ends)))} instead"
        return "was lost (neighbour unresolved)" if C.OUT_NEIGH in kinds else "was ignored"

    def _drop_where(self, packet: int = 0) -> str:
        nodes = [_node_of(self.tables, i) for k, r, i, _a in self.packets[packet].outcomes
                 if k == C.OUT_DROPPED and r not in (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST)
                 and i >= 0]
        return f" on {nodes[0]}" if nodes else ""

    def _drop_note(self, packet: int = 0) -> str:
        """The request's drop, when an ICMP error or RST came of one."""
        if self.outcome(packet) != "DROPPED" or not self.drop_reasons(packet):
            return ""
        return (f"; dropped{self._drop_where(packet)}: "
                f"{', '.join(self.drop_reasons(packet))}")

    # ------------------------------------------------------------ observations
    def observations(self, packet: int = 0) -> list[Observation]:
        t = self.tables
        obs: list[Observation] = []
        for iface, d, data, events in self.packets[packet].hops:
            node = _node_of(t, iface)
            # Cilium: the eBPF program at this hop, after the hop's events (the decisions
            # that led to the device: forwarding to it, a decapsulation, a route)
            prog = bpf_program(t, iface, d)
            for (kind, a, b, c), text in hop_decisions(t, data, events):
                if kind in _QUIET:
                    continue
                action = "Forwarded"
                comp = _COMPONENT.get(kind, "Forwarding")
                if kind == C.EV_OVS_TABLE:
                    comp = _OVS_COMPONENT.get(a, "Forwarding")
                if kind in _POLICY:
                    comp = "Policy"
                    action = "Denied" if kind == C.EV_POLICY_DENY else "Allowed"
                    flow = frame_flow(data) if kind == C.EV_POLICY_DENY else None
                    text = policy_verdict_text(t, kind, a, b, c, _flow_words(b, flow))
                elif kind == C.EV_L7_REDIRECT:
                    action = "Redirected"
                elif kind == C.EV_L7_HTTP:  # the proxy's verdict on one request (c: status)
                    action = "Denied" if " denied by " in text else "Allowed"
                elif kind == C.EV_DELIVER:
                    action = "Delivered"
                elif kind == C.EV_LEFT:
                    action = "Left"
                elif kind == C.EV_DROP:
                    if a in (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST):
                        continue
                    action = "Rejected" if a == C.DROP_REJECT_NO_ENDPOINTS else "Dropped"
                    comp = {C.DROP_REJECT_NO_ENDPOINTS: "LB", C.DROP_NO_LOCAL_ENDPOINTS: "LB",
                            C.DROP_TTL_EXCEEDED: "Routing", C.DROP_NO_ROUTE: "Routing",
                            C.DROP_FRAG_NEEDED: "Routing", C.DROP_BLACKHOLE: "Routing",
                            C.DROP_ROUTE_UNREACHABLE: "Routing",
                            C.DROP_ROUTE_PROHIBIT: "Routing"
                            }.get(a, "Forwarding")
                o = Observation(node, comp, action, text, t.if_name[iface])
                if comp != "Forwarding" and any(
                        (x.node, x.component, x.detail) == (o.node, o.component, o.detail)
                        for x in obs):
                    continue  # a flood's copies repeat the decisions made before the flood
                obs.append(o)
            if prog:
                obs.append(Observation(node, "eBPF", "Forwarded",
                                       f"{prog} at {t.if_kernel_name[iface]}",
                                       t.if_name[iface]))
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
                prog = [bpf_program(t, iface, d)] if bpf_program(t, iface, d) else []
                words = [w for e, w in hop_decisions(t, data, events) if e[0] != C.EV_TTL]
                text = "; ".join(words + prog)
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
                      "decisions": [w for _e, w in hop_decisions(t, data, ev)]}
                     for i, d, data, ev in p.hops],
            "observations": [o.to_dict() for o in self.observations(n)],
        } for n, p in enumerate(self.packets)]}


def _is_ip(data: bytes) -> bool:
    return len(data) >= 34 and u16(data, 12) == ETH_IP


def _frag_key(data: bytes) -> tuple[int, int, int, int] | None:
    """(src, dst, protocol, id) of an IPv4 fragment; None for a whole packet."""
    if not _is_ip(data) or not u16(data, 20) & 0x3FFF:
        return None
    return (u32(data, 26), u32(data, 30), data[23], u16(data, 18))


def _l4(data: bytes) -> int:
    return 14 + (data[14] & 0xF) * 4


def _kind(data: bytes) -> str:
    """What an answer is: synack, rst, tcp, echo-reply, icmp-error, icmp, udp, other."""
    if not _is_ip(data) or len(data) < _l4(data) + 1:
        return "other"
    proto, l4 = data[23], _l4(data)
    if proto == C.PROTO_TCP and len(data) >= l4 + 14:
        flags = data[l4 + 13]
        return "rst" if flags & 4 else "synack" if flags & 0x12 == 0x12 else "tcp"
    if proto == C.PROTO_ICMP:
        return "echo-reply" if data[l4] == 0 else "icmp-error" if data[l4] in (
            3, 4, 5, 11, 12) else "icmp"
    return "udp" if proto == C.PROTO_UDP else "other"


def _wanted(request: bytes) -> set[str]:
    """The answers that complete the exchange ``request`` starts."""
    kind = _kind(request)
    if kind in ("synack", "rst", "tcp"):
        l4 = _l4(request)
        flags = request[l4 + 13]
        return {"synack"} if flags & 0x12 == 0x02 else {"synack", "tcp"}
    if _is_ip(request) and request[23] == C.PROTO_ICMP:
        return {"echo-reply"} if request[_l4(request)] == 8 else {"echo-reply", "icmp"}
    return {"udp"} if kind == "udp" else {"udp", "synack", "tcp", "echo-reply", "icmp"}


def _answer_words(kind: str, data: bytes) -> str:
    if kind == "icmp-error":
        l4 = _l4(data)
        code = (data[l4], data[l4 + 1]) if len(data) > l4 + 1 else (0, 0)
        return "ICMP " + _ICMP_ERRORS.get(code, f"error type {code[0]} code {code[1]}")
    if kind == "udp" and len(data) >= _l4(data) + 4 and 53 in (
            u16(data, _l4(data)), u16(data, _l4(data) + 2)):
        return "DNS answer"
    return {"synack": "SYN-ACK", "rst": "RST", "tcp": "TCP segment", "echo-reply": "echo reply",
            "icmp": "ICMP message", "udp": "UDP reply"}.get(kind, "answer")


def _endpoint(data: bytes, kind: str) -> str:
    if not _is_ip(data):
        return "?"
    src = ip_str(u32(data, 26))
    if kind in ("synack", "rst", "tcp", "udp") and len(data) >= _l4(data) + 2:
        return f"{src}:{u16(data, _l4(data))}"
    return src


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
        if u16(data, 20) == 1:  # as tcpdump words them
            return f"ARP request who-has {ip_str(u32(data, 38))} tell {ip_str(u32(data, 28))}"
        mac = ":".join(f"{b:02x}" for b in data[22:28])
        return f"ARP reply {ip_str(u32(data, 28))} is-at {mac}"
    if et != ETH_IP or len(data) < 34:
        return f"ethertype {et:#06x}, {len(data)} bytes"
    src, dst, proto, ttl = ip_str(u32(data, 26)), ip_str(u32(data, 30)), data[23], data[22]
    l4 = 14 + (data[14] & 0xF) * 4
    fo = u16(data, 20)
    if fo & 0x1FFF:  # a non-first fragment: no transport header of its own
        name = C.PROTO_NAMES.get(proto, f"proto {proto}")
        more = " MF" if fo & 0x2000 else ""
        return (f"IP fragment {src} > {dst} {name} id {u16(data, 18)} offset "
                f"{(fo & 0x1FFF) * 8}{more}, {u16(data, 16)} bytes ttl {ttl}")
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
        mtu = (f" mtu {u16(data, l4 + 6)}" if data[l4] == 3 and data[l4 + 1] == 4
               and len(data) >= l4 + 8 else "")  # RFC 1191's next-hop MTU
        return f"ICMP {src} > {dst} type {data[l4]} code {data[l4 + 1]}{mtu} ttl {ttl}"
    return f"IP {src} > {dst} proto {proto} ttl {ttl}"
