"""``kemu tour``'s machinery: facts read from traces, checked expectations, the narrative,
the step's pcapng, topology page and Markdown.

A tour step (``kemu.frontend.tour_steps``) loads a bundled cluster, sends Scapy-crafted
packets through the Python API (``EmulatedCluster.send``/``dig``) and gathers them as
``Exchange``s. Everything the tour says about a packet comes from its ``Trace``:

- ``facts(trace)``: the decisions of every hop (the events the pcapng comments are made of,
  ``kemu.frontend.trace.hop_decisions``) as structured ``Fact``s: ``dnat`` (service,
  backend, backend_pod, node), ``encap`` (vni, remote), ``snat``, ``route``, ``policy-deny``,
  ``deliver``, ``arrived`` (the source and destination the receiver saw), ...
- ``Expect``: what a step claims (``"DNAT to a backend of shop/backend"``), as a fact kind
  and field values; ``check`` finds it among an exchange's facts (or its absence, for
  ``absent=True``). A step whose expectations are not all met FAILS (``kemu tour`` exits 1):
  when the datapath's behaviour changes, the tour says so instead of telling a stale story.
- ``narrative``: each hop in plain words, generated from the same events (never written by
  hand), then the verdict (``Trace.verdict``).

Outputs of a step (``write_outputs``): ``NAME.pcapng`` (every hop of every packet of every
exchange, one interface per device, each hop's decisions as its comment, as ``kemu dig -w``
writes them) and ``NAME.html`` (``kemu trace -o trace.html``'s page for the step's main
exchange: ``kemu.frontend.topology_cmd.write_trace_page``). Files are never overwritten:
an existing one is an error (``KemuError``, exit 2), checked before any work.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kemu.dataplane import codes as C
from kemu.dataplane.describe import (
    OVS_TUNNEL_WORDS,
    backend_text,
    drop_text,
    event_text,
    ip_str,
    owner_text,
    policy_verdict_text,
    route_text,
)
from kemu.dataplane.packet import ETH_IP, u16, u32
from kemu.dataplane.tables import Tables
from kemu.errors import KemuError
from kemu.frontend.trace import Trace, _flow_words, _is_ip, _summary, hop_decisions

_NOISE = (C.DROP_NOT_LOCAL, C.DROP_OTHERHOST)  # a flood's copies refused by other hosts
_QUIET = (C.EV_TTL, C.EV_FIXL2)


# ---------------------------------------------------------------------------- facts
@dataclass(frozen=True)
class Fact:
    """One decision (or observation) of a trace, as named fields."""

    kind: str
    packet: int                       # index of the packet in its trace
    origin: str                       # "injected", "answer", "icmp-error", "arp", ...
    fields: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str:
        return dict(self.fields).get(key, "")

    def text(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.fields)
        return f"{self.kind}({inner}) [{self.origin}]"


def fact(kind: str, packet: int = 0, origin: str = "state", **fields: object) -> Fact:
    """A ``Fact`` (a step's facts of state: FDB entries, conntrack, endpoints, DNS)."""
    return Fact(kind, packet, origin, tuple((k, str(v)) for k, v in fields.items()))


def _node(t: Tables, iface: int) -> str:
    n = int(t.if_node[iface]) if iface >= 0 else -1
    return t.node_name[n] if n >= 0 else "node-network"


def _pod_of_ip(t: Tables, ip: int) -> str:
    owner = t.owner_of(int(ip))
    if owner >= 0 and int(t.if_kind[owner]) in (C.IF_POD_ETH, C.IF_POD_LO):
        return t.pod_key[int(t.if_owner[owner])]
    return ""


def _addr(data: bytes, src: bool) -> str:
    """``ip:port`` (or ``ip``) of a frame's source or destination."""
    if len(data) < 34 or u16(data, 12) != ETH_IP:
        return ""
    ip = ip_str(u32(data, 26 if src else 30))
    l4 = 14 + (data[14] & 0xF) * 4
    if data[23] in (C.PROTO_TCP, C.PROTO_UDP) and len(data) >= l4 + 4:
        return f"{ip}:{u16(data, l4 if src else l4 + 2)}"
    return ip


def facts(trace: Trace) -> list[Fact]:
    """Every decision of every hop of ``trace`` as ``Fact``s, plus ``arrived`` (who got a
    packet, and the source and destination it saw) and ``verdict`` (the exchange's end)."""
    t = trace.tables
    out: list[Fact] = []
    for n, p in enumerate(trace.packets):
        o = p.origin
        for iface, d, data, events in p.hops:
            node = _node(t, iface)
            out.append(fact("hop", n, o, device=t.if_name[iface],
                             direction="out" if d == C.DIR_OUT else "in"))
            for kind, a, b, c in events:
                if kind in (C.EV_DNAT, C.EV_IPVS_DNAT):
                    sp = int(t.fe_sp[a])
                    be_ip = int(t.be_ip[b]) if b >= 0 else 0
                    out.append(fact("dnat", n, o, node=node, service=t.sp_name[sp],
                                     by="ipvs" if kind == C.EV_IPVS_DNAT else (
                                         "antrea-proxy" if int(t.if_kind[iface]) in (
                                             C.IF_OVS_PORT, C.IF_OVS_TUN) else "iptables"),
                                     frontend=f"{ip_str(c)}:{int(t.fe_port[a])}",
                                     type=C.FE_KIND_NAMES[int(t.fe_kind[a])],
                                     backend=backend_text(t, b), backend_pod=_pod_of_ip(
                                         t, be_ip)))
                elif kind in (C.EV_CT_REUSE, C.EV_AFFINITY, C.EV_UNDNAT):
                    name = {C.EV_CT_REUSE: "ct-reuse", C.EV_AFFINITY: "affinity",
                            C.EV_UNDNAT: "undnat"}[kind]
                    out.append(fact(name, n, o, node=t.node_name[c] if c >= 0 else node,
                                     service=t.sp_name[a] if 0 <= a < len(t.sp_name) else "?",
                                     backend=backend_text(t, b)))
                elif kind == C.EV_SNAT:
                    out.append(fact("snat", n, o, node=t.node_name[c], source=ip_str(a),
                                     port=b))
                elif kind == C.EV_UNSNAT:
                    out.append(fact("unsnat", n, o, node=t.node_name[c], to=ip_str(a)))
                elif kind == C.EV_ROUTE:
                    out.append(fact("route", n, o, node=t.node_name[c],
                                     route=route_text(t, a, b, c)))
                elif kind == C.EV_ENCAP:
                    out.append(fact("encap", n, o, node=node, remote=t.node_name[a], vni=b,
                                     outer=_summary(data)))
                elif kind == C.EV_DECAP:
                    out.append(fact("decap", n, o, node=t.node_name[a], vni=b))
                elif kind == C.EV_IPIP_ENCAP:  # kube-router's IP-in-IP (proto 4)
                    out.append(fact("ipip-encap", n, o, node=node, remote=t.node_name[a],
                                     device=t.if_kernel_name[b], outer=_summary(data)))
                elif kind == C.EV_OVS_TABLE:  # Antrea: a table of br-int's pipeline
                    out.append(fact("ovs-table", n, o, node=node,
                                    table=C.OVS_T_NAMES.get(a, str(a))))
                elif kind in (C.EV_OVS_ENCAP, C.EV_OVS_DECAP):  # Antrea's antrea-tun0
                    out.append(fact("ovs-encap" if kind == C.EV_OVS_ENCAP else "ovs-decap", n,
                                    o, node=node, remote=t.node_name[a] if
                                    kind == C.EV_OVS_ENCAP else node,
                                    tunnel=OVS_TUNNEL_WORDS.get(b, str(b))))
                elif kind == C.EV_IPIP_DECAP:
                    out.append(fact("ipip-decap", n, o, node=t.node_name[a],
                                     device=t.if_kernel_name[b]))
                elif kind in (C.EV_BR_FDB, C.EV_BR_FLOOD):
                    out.append(fact("fdb" if kind == C.EV_BR_FDB else "flood", n, o,
                                     bridge=t.br_name[b], port=t.if_name[a]))
                elif kind == C.EV_BRIDGED_DNAT:
                    out.append(fact("bridged-dnat", n, o, node=t.node_name[a]))
                elif kind == C.EV_LOCAL_ROUTE:
                    out.append(fact("lo", n, o, pod=owner_text(t, a).removeprefix("pod "),
                                     device=t.if_name[iface]))
                elif kind in (C.EV_POLICY_ALLOW, C.EV_POLICY_DENY):
                    name = "policy-allow" if kind == C.EV_POLICY_ALLOW else "policy-deny"
                    pol = int(t.rule_pol[c]) if 0 <= c < len(t.rule_pol) else -1
                    out.append(fact(name, n, o, node=node, pod=t.pod_key[a],
                                     direction="ingress" if b == C.POL_INGRESS else "egress",
                                     policy=t.pol_name[pol] if pol >= 0 else ""))
                elif kind == C.EV_DELIVER:
                    out.append(fact("deliver", n, o, to=owner_text(t, a),
                                     device=t.if_name[a], source=_addr(data, True),
                                     destination=_addr(data, False)))
                elif kind == C.EV_LEFT:
                    out.append(fact("left", n, o, node=node, destination=_addr(data, False)))
                elif kind == C.EV_DROP and a not in _NOISE:
                    out.append(fact("drop", n, o, node=node, reason=drop_text(a)))
                elif kind == C.EV_NEIGH_MISS:
                    out.append(fact("neigh-miss", n, o, node=t.node_name[b], ip=ip_str(a)))
    if trace.packets and trace.packets[0].hops and _is_ip(trace.packets[0].hops[0][2]):
        v = trace.verdict()
        out.append(fact("verdict", 0, trace.packets[0].origin,
                         reachable="yes" if v.reachable else "no", reason=v.reason))
    return out


# ---------------------------------------------------------------------------- expectations
@dataclass(frozen=True)
class Expect:
    """A step's claim: a fact of ``kind`` whose fields match ``where`` (a string: equal; a
    tuple/frozenset: one of them; a callable: true of the value) in packets of ``origin``
    (None: any), or, with ``absent``, no such fact."""

    claim: str
    kind: str
    where: tuple[tuple[str, Any], ...] = ()
    origin: str | None = None
    absent: bool = False

    def matches(self, f: Fact) -> bool:
        if f.kind != self.kind or (self.origin is not None and f.origin != self.origin):
            return False
        for key, want in self.where:
            have = f.get(key)
            if callable(want):
                if not want(have):
                    return False
            elif isinstance(want, (tuple, frozenset, set, list)):
                if have not in want:
                    return False
            elif have != str(want):
                return False
        return True

    def check(self, found: Iterable[Fact]) -> bool:
        hit = any(self.matches(f) for f in found)
        return not hit if self.absent else hit


def expect(claim: str, kind: str, *, origin: str | None = None, absent: bool = False,
           **where: Any) -> Expect:
    return Expect(claim, kind, tuple(where.items()), origin, absent)


# ---------------------------------------------------------------------------- exchanges
@dataclass
class Exchange:
    """Packets sent for one purpose: their traces, what they must show, and the command
    line that sends the same packet again (``rerun``: argv after ``kemu``; None when the
    exchange depends on what the step did before it)."""

    title: str
    traces: list[Trace]
    expects: list[Expect] = field(default_factory=list)
    crafted: str = ""                          # the Scapy expression of what was sent
    rerun: list[str] | None = None             # SENT in it: the step's capture of sent frames
    rerun_note: str = ""                       # why there is no command, or what to change
    frames: list[bytes] = field(default_factory=list)   # sent frames, for ``kemu replay``
    before: list[str] = field(default_factory=list)     # state shown before the packets
    notes: list[str] = field(default_factory=list)      # state shown after them
    verdict: bool = True                       # say the trace's verdict (not for ARP)
    extra_facts: list[Fact] = field(default_factory=list)  # facts not from hops (state, DNS)

    def facts(self) -> list[Fact]:
        out: list[Fact] = []
        for tr in self.traces:
            out.extend(facts(tr))
        return out + self.extra_facts

    def results(self) -> list[tuple[Expect, bool]]:
        found = self.facts()
        return [(e, e.check(found)) for e in self.expects]


@dataclass
class StepRun:
    """A step's exchanges on one emulated cluster; ``main`` is the exchange drawn on the
    topology page."""

    emu: Any                                   # EmulatedCluster
    cluster: str
    exchanges: list[Exchange] = field(default_factory=list)
    main: int = 0

    @property
    def passed(self) -> bool:
        return all(ok for x in self.exchanges for _e, ok in x.results())


@dataclass(frozen=True)
class Step:
    """One stop of the tour: a name, a title, a plain-words introduction (what the step is
    about, not what happened: that comes from the traces) and the function that runs it."""

    name: str
    title: str
    intro: str
    cluster: str                               # the bundled cluster, relative to the repo
    run: Callable[[Any], StepRun]               # (tour_steps.Ctx) -> StepRun
    semantics: str = ""                        # behaviour ids of docs/SEMANTICS (S-9, ...)
    capture: bool = False                      # writes NAME-sent.pcap (exchanges' frames)


@dataclass(frozen=True)
class Coming:
    """A step listed but not runnable yet: the feature is still being built."""

    name: str
    title: str
    why: str


# ---------------------------------------------------------------------------- narrative
def _where(t: Tables, iface: int, direction: int) -> str:
    return f"{t.if_name[iface]} ({'out' if direction == C.DIR_OUT else 'in'})"


def _plain(t: Tables, data: bytes, iface: int, ev: tuple[int, int, int, int],
           words: str) -> str | None:
    """A decision in plain words, from its event (``words``: its pcapng comment)."""
    kind, a, b, c = ev
    node = _node(t, iface)
    if kind in _QUIET or kind == C.EV_BR_LOCAL:
        return None
    if kind == C.EV_BR_FDB:
        return (f"the bridge {t.br_name[b]} finds the destination MAC in its forwarding "
                f"database and sends the frame out of {t.if_name[a]} only")
    if kind == C.EV_BR_FLOOD:
        return (f"the bridge {t.br_name[b]} does not know the destination MAC: it floods "
                f"a copy out of {t.if_name[a]}")
    if kind == C.EV_ROUTE:
        return f"{t.node_name[c]} routes it by its table: {route_text(t, a, b, c)}"
    if kind == C.EV_DNAT and int(t.if_kind[iface]) in (C.IF_OVS_PORT, C.IF_OVS_TUN):
        be_pod = _pod_of_ip(t, int(t.be_ip[b])) if b >= 0 else ""
        return (f"AntreaProxy's flows in {node}'s br-int pick the endpoint "
                f"{backend_text(t, b)}" + (f" (pod {be_pod})" if be_pod else "")
                + f" and rewrite the destination in OVS's conntrack zone: {words}")
    if kind == C.EV_DNAT:
        be_pod = _pod_of_ip(t, int(t.be_ip[b])) if b >= 0 else ""
        return (f"kube-proxy's rules on {node} pick the endpoint {backend_text(t, b)}"
                + (f" (pod {be_pod})" if be_pod else "")
                + f" and rewrite the destination (conntrack remembers it): {words}")
    if kind == C.EV_IPVS_DNAT:
        be_pod = _pod_of_ip(t, int(t.be_ip[b])) if b >= 0 else ""
        return (f"the Service address {ip_str(c)} is {node}'s own (kube-dummy-if holds it), "
                f"so the packet goes up to local input, where IPVS picks the real server "
                f"{backend_text(t, b)}" + (f" (pod {be_pod})" if be_pod else "")
                + f" and rewrites the destination: {words}")
    if kind == C.EV_IPIP_ENCAP:
        return (f"{node} wraps the packet in a second IPv4 header (IP-in-IP, protocol 4) on "
                f"{t.if_kernel_name[b]} for {t.node_name[a]}; on the wire it is now "
                f"{_summary(data)}, {len(data)} bytes")
    if kind == C.EV_IPIP_DECAP:
        return (f"{t.node_name[a]} takes the outer header off on {t.if_kernel_name[b]}; "
                f"inside: {_summary(data)}")
    if kind == C.EV_CT_REUSE:
        return f"conntrack on {t.node_name[c]} knows this connection: {words}"
    if kind == C.EV_AFFINITY:
        return (f"session affinity on {t.node_name[c]} sends the client to the same "
                f"endpoint: {words}")
    if kind == C.EV_UNDNAT:
        return (f"conntrack on {t.node_name[c]} sees the reply of a translated connection and "
                f"puts the Service's address back as its source: {words}")
    if kind == C.EV_SNAT:
        return (f"{t.node_name[c]} masquerades it: the source becomes its own address "
                f"{ip_str(a)}:{b}")
    if kind == C.EV_UNSNAT:
        return (f"conntrack on {t.node_name[c]} undoes the masquerade: the destination is "
                f"{ip_str(a)}:{b} again")
    if kind == C.EV_ENCAP:
        return (f"{node} wraps the packet in VXLAN (VNI {b}) for {t.node_name[a]}; on the "
                f"wire it is now {_summary(data)}, {len(data)} bytes")
    if kind == C.EV_DECAP:
        return (f"{t.node_name[a]} unwraps the VXLAN packet (VNI {b}); inside: "
                f"{_summary(data)}")
    if kind == C.EV_BRIDGED_DNAT:
        return ("the new destination is on the same bridge: br_netfilter sends it on "
                "through the bridge without routing")
    if kind == C.EV_LOCAL_ROUTE:
        return (f"the destination is local to {owner_text(t, a)}: the packet goes over its "
                "loopback device lo and never leaves the pod's network namespace")
    if kind in (C.EV_POLICY_ALLOW, C.EV_POLICY_DENY):
        flow = _flow_words(b, _frame_flow(data)) if kind == C.EV_POLICY_DENY else None
        return f"NetworkPolicy on {node}: {policy_verdict_text(t, kind, a, b, c, flow)}"
    if kind == C.EV_DELIVER:
        return (f"delivered to {owner_text(t, a)}, which sees {_addr(data, True)} -> "
                f"{_addr(data, False)}" if _addr(data, True) else
                f"delivered to {owner_text(t, a)}")
    if kind == C.EV_LEFT:
        return "handed to the gateway router: it leaves the cluster"
    if kind == C.EV_DROP:
        if a in _NOISE:
            return f"{owner_text(t, iface)} ignores it ({drop_text(a)})"
        return f"dropped on {node}: {drop_text(a)}"
    if kind == C.EV_NEIGH_MISS:
        return f"{t.node_name[b]} does not know the MAC of the next hop {ip_str(a)} yet"
    return words


def _frame_flow(data: bytes):  # noqa: ANN202
    from kemu.dataplane.describe import frame_flow

    return frame_flow(data)


def packet_story(trace: Trace, n: int) -> list[str]:
    """Packet ``n`` of ``trace``, hop by hop, in plain words."""
    t = trace.tables
    p = trace.packets[n]
    sent = _summary(p.sent) if p.sent else (_summary(p.hops[0][2]) if p.hops else "-")
    what = {"injected": "the packet", "answer": "the answer", "icmp-error": "an ICMP error",
            "arp": "an ARP packet", "resumed": "the packet, resumed"}.get(p.origin, p.origin)
    lines = [f"{what}: {sent}  => {trace.outcome(n)}"]
    for iface, d, data, events in p.hops:
        said = [s for ev, words in hop_decisions(t, data, events)
                if (s := _plain(t, data, iface, ev, words))]
        if said:
            lines.append(f"  at {_where(t, iface, d)}: " + "; ".join(said))
    return lines


def narrative(x: Exchange) -> list[str]:
    lines = []
    for tr in x.traces:
        for n in range(len(tr.packets)):
            lines.extend(packet_story(tr, n))
    if x.traces and x.verdict:
        lines.append(f"result: {x.traces[-1].verdict().reason}")
    return lines


SENT = "@SENT@"
"""In an exchange's ``rerun``: the step's capture of sent frames (``NAME-sent.pcap``)."""
REPLAYED = "@REPLAYED@"
"""In an exchange's ``rerun``: where that replay writes its pcapng."""


def rerun_argv(step: Step, x: Exchange, folder: str | None) -> list[str] | None:
    """``x.rerun`` with the step's capture paths in ``folder`` (None: as named in the
    Markdown, ``kemu-tour-NAME/...``)."""
    if x.rerun is None:
        return None
    where = folder if folder is not None else f"kemu-tour-{step.name}"
    names = {SENT: f"{step.name}-sent.pcap", REPLAYED: f"{step.name}-replayed.pcapng"}
    return [os.path.join(where, names[a]) if a in names else a for a in x.rerun]


def rerun_text(step: Step, x: Exchange, folder: str | None = None) -> str:
    argv = rerun_argv(step, x, folder)
    if argv is None:
        return x.rerun_note
    return "kemu " + shlex.join(argv) + (f"   # {x.rerun_note}" if x.rerun_note else "")


def report(step: Step, run: StepRun, files: list[str] | None = None,
           folder: str | None = None) -> str:
    """The text ``kemu tour STEP`` prints (``folder``: where its files went)."""
    out = [f"# {step.title}", "", *_wrap(step.intro), "", f"cluster: {step.cluster}"]
    for k, x in enumerate(run.exchanges, 1):
        out += ["", f"## {k}. {x.title}"]
        if x.crafted:
            out.append(f"sent (Scapy): {x.crafted}")
        out += x.before
        out += narrative(x)
        out += x.notes
        out.append(f"rerun: {rerun_text(step, x, folder)}")
        for e, ok in x.results():
            out.append(f"  {'ok  ' if ok else 'FAIL'} {e.claim}")
    if files:
        out += ["", "wrote: " + ", ".join(files)]
    out.append("")
    out.append(f"step {step.name}: {'passed' if run.passed else 'FAILED'}")
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int = 96) -> list[str]:
    import textwrap

    return textwrap.wrap(" ".join(text.split()), width) or [""]


# ---------------------------------------------------------------------------- outputs
def planned_files(step: Step, folder: str) -> list[str]:
    """The files a step writes in ``folder``: its pcapng and page, and with ``capture`` the
    frames it sent (for its ``kemu replay`` command) and where that replay writes."""
    names = [f"{step.name}.pcapng", f"{step.name}.html"]
    if step.capture:
        names += [f"{step.name}-sent.pcap", f"{step.name}-replayed.pcapng"]
    return [os.path.join(folder, n) for n in names]


def write_sent(run: StepRun, path: str) -> int:
    """The frames the exchanges sent as ``kemu replay`` input (pcap, Ethernet, a
    millisecond apart); returns how many."""
    import struct

    from kemu.io.outputs import AtomicFile

    frames = [f for x in run.exchanges for f in x.frames]
    with AtomicFile(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for k, frame in enumerate(frames, 1):
            f.write(struct.pack("<IIII", 0, k * 1000, len(frame), len(frame)) + frame)
    return len(frames)


def check_new(paths: Iterable[str]) -> None:
    """Refuse, before any work, to overwrite an existing file."""
    from kemu.io.outputs import check_outputs

    for path in paths:
        if os.path.lexists(path):
            raise KemuError(f"{path} exists; kemu tour never overwrites a file (give -o "
                            "another directory)")
    check_outputs({f"out={p}": p for p in paths})


def write_pcapng(step: Step, run: StepRun, path: str) -> int:
    """Every hop of every packet of every exchange into ``path``: one interface per device,
    each hop's decisions (``hop_decisions``, the trace's words) as its comment; exchange k
    at k milliseconds, an answer one microsecond after what it answers, hops a nanosecond
    apart. Returns the number of packets written."""
    from kemu._version import __version__
    from kemu.io.pcapng import INBOUND, OUTBOUND, PcapngWriter

    t = run.emu.tables
    file_if: dict[int, int] = {}
    written = 0
    with PcapngWriter(path, application=f"kemu {__version__} tour",
                      comment=f"kemu tour {step.name}: {step.title}") as w:
        for i in range(t.n_ifaces):
            if int(t.if_kind[i]) != C.IF_NODE_LOCAL:
                file_if[i] = w.add_interface(t.if_name[i], t.if_desc[i])
        clock = 0
        for x in run.exchanges:
            for tr in x.traces:
                clock += 1_000_000
                depth: list[int] = []
                for p in tr.packets:
                    depth.append(0 if p.parent < 0 else depth[p.parent] + 1)
                    for h, (iface, d, data, events) in enumerate(p.hops):
                        if iface not in file_if:
                            continue
                        words = "; ".join(w_ for ev, w_ in hop_decisions(tr.tables, data,
                                                                         events)
                                          if ev[0] not in _QUIET)
                        w.write_packet(file_if[iface], clock + depth[-1] * 1000 + h, data,
                                       flags=INBOUND if d == C.DIR_IN else OUTBOUND,
                                       comment=words or None)
                        written += 1
    return written


def write_outputs(step: Step, run: StepRun, folder: str) -> list[str]:
    """The step's pcapng and topology page in ``folder``; returns their paths."""
    from kemu.frontend.topology_cmd import write_trace_page

    pcap, page, *sent = planned_files(step, folder)
    write_pcapng(step, run, pcap)
    files = [pcap]
    main = run.exchanges[run.main]
    if main.traces:
        write_trace_page(page, run.emu.model, run.emu.tables, main.traces[-1])
        files.append(page)
    if sent:
        write_sent(run, sent[0])
        files.append(sent[0])
    return files


def event_words(t: Tables, ev: tuple[int, int, int, int]) -> str:
    """``event_text`` (re-exported for steps that quote a decision)."""
    return event_text(t, *ev)
