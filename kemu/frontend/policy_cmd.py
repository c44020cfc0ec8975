"""``kemu policy matrix``: a NetworkPolicy reachability matrix probed with real packets.

Owns the probing of pod pairs (``probe``, ``matrix``), the truth table it makes (``Matrix``:
text in the shape the upstream network-policy e2e tests and cyclonus print, JSON, CSV), reading
an expected table back (``parse_expected``) and diffing against it (``Matrix.diff``), and the
``policy`` command with its ``matrix`` subcommand.

Every probe is one new connection through the datapath, never an evaluation of the policies in
Python: for TCP a SYN (the answer wanted is the SYN-ACK), for UDP a datagram (the answer
wanted is the emulated stack's echo), each from a fresh source port so that no conntrack entry
of an earlier probe carries it (replies of an allowed connection pass: P-2). The probes of one
source pod go through the batch datapath in one ``EmulatedCluster.send_many`` call; the trace
of each probe (the request and everything it caused) is then judged on its own:

- ``.`` allowed: the answer reached the source (``Trace.verdict``);
- ``X`` denied: a copy of the request (or of its answer) was dropped by NetworkPolicy
  (``DROP_POLICY``); the policies that isolate the pod that denied (the destination for
  ingress, the source for egress) are named (``denied_by``), as Hubble's
  ``ingress_denied_by``/``egress_denied_by`` name them;
- ``R`` refused: the destination's stack answered RST or ICMP port unreachable: nothing listens
  on that port (``kemu.control.listen`` decides), which is not a policy deny;
- ``?`` anything else (dropped for another reason, no answer), with the trace's reason.

A pod probing itself goes over its own ``lo`` (M-4) and is always allowed (P-9); upstream's
e2e ignores those cells (``ignoreLoopback``). hostNetwork pods are left out by default (they
cannot be selected by policies, P-12). kemu models no SCTP stack: SCTP ports are not probed.
"""

from __future__ import annotations

import argparse
import csv
import io
import ipaddress
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from kemu.frontend.cli import EXIT_NEGATIVE, EXIT_OK, Command, add_manifest_args

if TYPE_CHECKING:
    from kemu.control.model import Pod
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.trace import Trace

MARKS = {"allowed": ".", "denied": "X", "refused": "R", "failed": "?"}
VERDICTS = {mark: verdict for verdict, mark in MARKS.items()}
LEGEND = "# . allowed, X denied by policy, R refused (nothing listens), ? other failure"
PROTOCOLS = ("TCP", "UDP")
FIRST_PORT, LAST_PORT = 32768, 60999  # Linux's ip_local_port_range: the probes' source ports

# source pod key -> the next source port, per emulated cluster: probes never reuse a tuple
_NEXT_PORT: WeakKeyDictionary[Any, dict[str, int]] = WeakKeyDictionary()


@dataclass(frozen=True, order=True)
class Case:
    """One table: a destination port and protocol."""

    port: int
    protocol: str  # TCP or UDP

    def text(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Probe:
    src: str   # ns/pod
    dst: str   # ns/pod
    case: Case


@dataclass(frozen=True)
class Result:
    """What one probe found."""

    probe: Probe
    verdict: str                   # allowed, denied, refused, failed
    reason: str = ""               # the trace's words
    direction: str = ""            # ingress or egress, for a deny
    denied_by: tuple[str, ...] = ()  # ns/name of the policies isolating the denying pod

    @property
    def mark(self) -> str:
        return MARKS[self.verdict]

    def record(self) -> dict[str, Any]:
        return {"from": self.probe.src, "to": self.probe.dst, "port": self.probe.case.port,
                "protocol": self.probe.case.protocol, "verdict": self.verdict,
                "mark": self.mark, "direction": self.direction or None,
                "denied_by": list(self.denied_by), "reason": self.reason}


@dataclass
class Matrix:
    """Probe results as truth tables: rows = from, columns = to, one table per ``Case``."""

    sources: list[str]
    destinations: list[str]
    cases: list[Case]
    results: dict[tuple[str, str, Case], Result] = field(default_factory=dict)

    def mark(self, src: str, dst: str, case: Case) -> str:
        return self.results[(src, dst, case)].mark

    def table(self, case: Case) -> str:
        """One table, tab-separated as upstream's ``TruthTable.PrettyPrint``."""
        lines = ["\t".join(["-", *self.destinations])]
        for src in self.sources:
            lines.append("\t".join([src, *(self.mark(src, d, case) for d in self.destinations)]))
        return "\n".join(lines)

    def text(self) -> str:
        blocks = [LEGEND]
        for case in self.cases:
            blocks.append(f"{case.text()}\n{self.table(case)}")
        return "\n\n".join(blocks) + "\n"

    def records(self) -> list[dict[str, Any]]:
        return [self.results[(s, d, c)].record() for c in self.cases for s in self.sources
                for d in self.destinations]

    def json(self) -> str:
        return json.dumps(self.records(), indent=2) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["from", "to", "port", "protocol", "verdict", "direction", "denied_by",
                    "reason"])
        for r in self.records():
            w.writerow([r["from"], r["to"], r["port"], r["protocol"], r["verdict"],
                        r["direction"] or "", " ".join(r["denied_by"]), r["reason"]])
        return out.getvalue()

    def render(self, fmt: str) -> str:
        return {"text": self.text, "json": self.json, "csv": self.csv}[fmt]()

    def diff(self, expected: Expected) -> list[str]:
        """Every cell where this matrix and ``expected`` differ, one line each (empty: equal).
        A cell only one of them has is a difference too."""
        lines = []
        for case in self.cases:
            want = expected.table_for(case)
            if want is None:
                lines.append(f"{case.text()}: no expected table (have: "
                             f"{', '.join(expected.case_names()) or 'none'})")
                continue
            cells = {(s, d) for s in self.sources for d in self.destinations}
            for s, d in sorted(cells | set(want)):
                got = self.results.get((s, d, case))
                exp = want.get((s, d))
                if got is not None and exp == got.mark:
                    continue
                got_text = "not probed" if got is None else _mark_words(got)
                exp_text = "nothing (not in the expected table)" if exp is None else exp
                lines.append(f"{case.text()} {s} -> {d}: expected {exp_text}, got {got_text}")
        for name in expected.case_names():
            if name != "*" and name not in {c.text() for c in self.cases}:
                lines.append(f"{name}: expected a table, not probed")
        return lines


def _mark_words(r: Result) -> str:
    if r.verdict == "denied":
        by = f" by {', '.join(r.denied_by)}" if r.denied_by else ""
        return f"X (denied {r.direction}{by})"
    if r.verdict == "allowed":
        return "."
    return f"{r.mark} ({r.reason})"


@dataclass
class Expected:
    """An expected matrix: per case (``80/TCP``, or ``*`` for a table that holds for every
    probed case) the mark of each (from, to) cell."""

    tables: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)

    def table_for(self, case: Case) -> dict[tuple[str, str], str] | None:
        return self.tables.get(case.text(), self.tables.get("*"))

    def case_names(self) -> list[str]:
        return list(self.tables)


# ------------------------------------------------------------------ reading expected tables
_CASE_LINE = re.compile(r"^(\d+)/(tcp|udp|sctp)$", re.IGNORECASE)


def parse_expected(text: str, source: str = "<expected>") -> Expected:
    """A table in ``Matrix.text``'s format (``#`` comments, a ``PORT/PROTO`` line before each
    table; a table without one holds for every case), or ``Matrix.json``'s records. Raises
    ``KemuError`` naming ``source`` and the line."""
    from kemu.errors import KemuError

    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        return _parse_expected_json(text, source)
    out = Expected()
    case: str | None = None
    header: list[str] | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            header = None if not line else header
            continue
        m = _CASE_LINE.match(line)
        if m:
            case, header = f"{int(m.group(1))}/{m.group(2).upper()}", None
            if case in out.tables:
                raise KemuError(f"{source}:{n}: a second table for {case}")
            continue
        words = line.split()
        if words[0] == "-":
            header = words[1:]
            name = case or "*"
            if name in out.tables and out.tables[name]:
                raise KemuError(f"{source}:{n}: a second table for "
                                f"{'every case' if name == '*' else name}")
            out.tables[name] = {}
            case = name
            continue
        if header is None or case is None:
            raise KemuError(f"{source}:{n}: a row before the table's header line "
                            "(\"-\" then the destination pods)")
        if len(words) != len(header) + 1:
            raise KemuError(f"{source}:{n}: row {words[0]} has {len(words) - 1} cells, the "
                            f"header names {len(header)} pods")
        for dst, mark in zip(header, words[1:], strict=True):
            if mark not in VERDICTS:
                raise KemuError(f"{source}:{n}: cell {words[0]} -> {dst} is {mark!r}: "
                                "expected one of . X R ?")
            out.tables[case][(words[0], dst)] = mark
    if not out.tables:
        raise KemuError(f"{source}: no table (a line \"-\" then the destination pods, then a "
                        "row per source pod)")
    return out


def _parse_expected_json(text: str, source: str) -> Expected:
    from kemu.errors import KemuError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise KemuError(f"{source}:{err.lineno}: not valid JSON ({err.msg})") from None
    if isinstance(data, dict):
        data = data.get("probes")
    if not isinstance(data, list):
        raise KemuError(f"{source}: JSON must be a list of records (from, to, port, protocol, "
                        "verdict), as -o json prints")
    out = Expected()
    for n, rec in enumerate(data):
        try:
            case = f"{int(rec['port'])}/{str(rec['protocol']).upper()}"
            verdict = rec.get("verdict")
            mark = MARKS.get(verdict) if verdict is not None else rec.get("mark")
            if mark not in VERDICTS:
                raise KemuError(f"{source}: record {n}: verdict {verdict!r} is not one of "
                                f"{', '.join(MARKS)}")
            out.tables.setdefault(case, {})[(str(rec["from"]), str(rec["to"]))] = mark
        except (KeyError, TypeError, ValueError) as err:
            raise KemuError(f"{source}: record {n}: needs from, to, port, protocol and "
                            f"verdict ({type(err).__name__}: {err})") from None
    return out


# ------------------------------------------------------------------ what to probe
def probed_pods(emu: EmulatedCluster, namespaces: Sequence[str] | None = None) -> list[Pod]:
    """The pods of ``namespaces`` (all when None), hostNetwork pods left out (P-12), in
    namespace/name order."""
    from kemu.errors import KemuError

    model = emu.model
    if namespaces is not None:
        unknown = [ns for ns in namespaces if ns not in model.namespaces]
        if unknown:
            raise KemuError(f"--namespaces: no namespace {', '.join(unknown)} (have: "
                            f"{', '.join(model.namespaces)})")
    pods = [p for p in model.pods if not p.host_network
            and (namespaces is None or p.namespace in namespaces)]
    return sorted(pods, key=lambda p: (p.namespace, p.name))


def default_cases(pods: Iterable[Pod], ports: Sequence[int] | None = None,
                  protocols: Sequence[str] | None = None) -> tuple[list[Case], list[str]]:
    """(cases, warnings). Without ``ports``: every declared containerPort of the destination
    pods (of ``protocols`` when given); with ``ports`` and ``protocols``: every pair; with
    ``ports`` only: each port with the protocols pods declare it with (TCP if none)."""
    declared = {(p.port, p.protocol) for pod in pods for p in pod.container_ports()}
    warnings = []
    if any(proto == "SCTP" for _port, proto in declared):
        warnings.append("SCTP containerPorts are not probed: kemu models no SCTP stack")
    declared = {(port, proto) for port, proto in declared if proto in PROTOCOLS}
    if ports is not None and protocols is not None:
        cases = {Case(port, proto) for port in ports for proto in protocols}
    elif ports is not None:
        cases = set()
        for port in ports:
            protos = {proto for p, proto in declared if p == port} or {"TCP"}
            cases.update(Case(port, proto) for proto in protos)
    else:
        cases = {Case(port, proto) for port, proto in declared
                 if protocols is None or proto in protocols}
    return sorted(cases, key=lambda c: (c.protocol, c.port)), warnings


# ------------------------------------------------------------------ probing
def _source_port(emu: EmulatedCluster, src: str) -> int:
    ports = _NEXT_PORT.setdefault(emu, {})
    port = ports.get(src, FIRST_PORT)
    ports[src] = port + 1 if port < LAST_PORT else FIRST_PORT
    return port


def dns_query(domain: str) -> bytes:
    """A DNS query (A, recursion desired) for ``kubernetes.default.svc.<domain>``: what a UDP
    probe to port 53 carries, so that a DNS server answers it (a non-query it ignores)."""
    qname = b"".join(bytes([len(label)]) + label.encode("ascii")
                     for label in f"kubernetes.default.svc.{domain}".split(".") if label)
    return bytes.fromhex("6b65 0100 0001 0000 0000 0000") + qname + b"\0" + \
        bytes.fromhex("0001 0001")


def _frame(src_ip: int, dst_ip: int, case: Case, sport: int, domain: str) -> bytes:
    """The probe: a SYN (TCP) or a datagram (UDP; a DNS query to port 53), addressed at L3;
    the injection fixes L2."""
    from kemu.dataplane import codes as C
    from kemu.dataplane.packet import ETH_IP
    from kemu.dataplane.slowpath import ether, ipv4, tcp_segment, udp_datagram

    if case.protocol == "TCP":
        seg = tcp_segment(src_ip, dst_ip, sport, case.port, 1000, 0, 0x02)
        l4 = ipv4(src_ip, dst_ip, C.PROTO_TCP, seg, df=True)
    else:
        payload = dns_query(domain) if case.port == 53 else b"kemu-policy-probe"
        seg = udp_datagram(src_ip, dst_ip, sport, case.port, payload)
        l4 = ipv4(src_ip, dst_ip, C.PROTO_UDP, seg, df=True)
    return ether(0, 0, ETH_IP) + l4


def split_trace(trace: Trace) -> list[Trace]:
    """One ``Trace`` per injected frame of a ``send_many`` call: the frame and everything it
    caused (answers, ICMP errors, ARP, resumptions), parents renumbered."""
    from kemu.frontend.trace import Trace as TraceClass

    roots: list[int] = []
    for n, p in enumerate(trace.packets):
        roots.append(n if p.parent < 0 else roots[p.parent])
    groups: dict[int, list[int]] = {}
    for n, r in enumerate(roots):
        groups.setdefault(r, []).append(n)
    out = []
    for r in sorted(groups):
        members = groups[r]
        index = {old: new for new, old in enumerate(members)}
        packets = []
        for old in members:
            p = trace.packets[old]
            q = type(p)(p.origin, p.frame, p.hops, p.outcomes, p.outcome_frames,
                        index.get(p.parent, -1), p.sent)
            packets.append(q)
        out.append(TraceClass(trace.tables, packets, sender=trace.sender,
                              respond=trace.respond))
    return out


def judge(emu: EmulatedCluster, probe: Probe, trace: Trace) -> Result:
    """A probe's verdict from its trace (see the module docstring)."""
    from kemu.dataplane import codes as C

    policy_drop = any(k == C.OUT_DROPPED and r == C.DROP_POLICY
                      for p in trace.packets for k, r, _i, _a in p.outcomes)
    if policy_drop:
        direction, pod_index = "", -1
        for p in trace.packets:
            for _i, _d, _data, events in p.hops:
                for kind, a, b, _c in events:
                    if kind == C.EV_POLICY_DENY and not direction:
                        direction = "ingress" if b == C.POL_INGRESS else "egress"
                        pod_index = a
        if not direction:  # no verdict event recorded: which side denied is not known
            return Result(probe, "denied", "policy denied")
        denied_by = _isolating(emu, pod_index, probe, direction)
        where = "" if pod_index < 0 or pod_index >= len(emu.model.pods) else \
            f" of {emu.model.pods[pod_index].key}"
        return Result(probe, "denied", f"policy denied ({direction}{where})", direction,
                      denied_by)
    verdict = trace.verdict()
    if verdict.reachable:
        return Result(probe, "allowed", verdict.reason)
    for p in trace.packets:
        if p.origin not in ("answer", "icmp-error") or not p.hops:
            continue
        frame = p.hops[0][2]
        if _refusal(frame, C):
            return Result(probe, "refused", verdict.reason)
    return Result(probe, "failed", verdict.reason)


def _refusal(frame: bytes, C: Any) -> bool:  # noqa: N803 - the codes module
    """A TCP RST or an ICMP port unreachable: the stack has nothing listening there."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return False
    l4 = 14 + (frame[14] & 0xF) * 4
    if frame[23] == C.PROTO_TCP and len(frame) >= l4 + 14:
        return bool(frame[l4 + 13] & 0x04)
    if frame[23] == C.PROTO_ICMP and len(frame) >= l4 + 2:
        return frame[l4] == 3 and frame[l4 + 1] == 3
    return False


def _isolating(emu: EmulatedCluster, pod_index: int, probe: Probe,
               direction: str) -> tuple[str, ...]:
    """The policies selecting the pod that denied, with that direction in their types (P-1):
    the ``selected by`` list of a default deny, as Hubble's ``*_denied_by`` names them."""
    from kemu.control.selectors import matches

    model = emu.model
    if 0 <= pod_index < len(model.pods):
        pod = model.pods[pod_index]
    else:
        ns, _, name = (probe.dst if direction == "ingress" else probe.src).partition("/")
        pod = model.pod(ns, name)
    want = "Ingress" if direction == "ingress" else "Egress"
    return tuple(pol.key for pol in model.policies if pol.namespace == pod.namespace
                 and want in pol.policy_types and matches(pol.pod_selector, pod.labels))


def probe(emu: EmulatedCluster, probes: Sequence[Probe]) -> list[Result]:
    """Send every probe through the datapath (one ``send_many`` batch per source pod) and
    judge each from its own trace; results in the order of ``probes``."""
    model = emu.model
    by_key = {p.key: p for p in model.pods}
    by_src: dict[str, list[int]] = {}
    for n, pr in enumerate(probes):
        by_src.setdefault(pr.src, []).append(n)
    results: list[Result | None] = [None] * len(probes)
    for src, idxs in by_src.items():
        src_ip = int(ipaddress.IPv4Address(by_key[src].ip))
        frames = [_frame(src_ip, int(ipaddress.IPv4Address(by_key[probes[n].dst].ip)),
                         probes[n].case, _source_port(emu, src), model.config.dns_domain)
                  for n in idxs]
        trace = emu.send_many(frames, src=src, fix_l2=True)
        parts = split_trace(trace)
        if len(parts) != len(idxs):
            raise RuntimeError(f"{len(idxs)} probes from {src} made {len(parts)} traces")
        for n, part in zip(idxs, parts, strict=True):
            results[n] = judge(emu, probes[n], part)
    return [r for r in results if r is not None]


def matrix(emu: EmulatedCluster, namespaces: Sequence[str] | None = None,
           ports: Sequence[int] | None = None, protocols: Sequence[str] | None = None,
           pods: Sequence[str] | None = None) -> tuple[Matrix, list[str]]:
    """Probe every (source pod, destination pod, case) and return (the matrix, warnings).
    ``pods`` (``ns/name``) restricts both sides further, as upstream's tests name theirs."""
    from kemu.errors import KemuError

    chosen = probed_pods(emu, namespaces)
    if pods is not None:
        have = {p.key for p in chosen}
        missing = [k for k in pods if k not in have]
        if missing:
            raise KemuError(f"no pod {', '.join(missing)} to probe")
        chosen = [p for p in chosen if p.key in set(pods)]
    if not chosen:
        raise KemuError("no pod to probe" + (f" in namespaces {', '.join(namespaces)}"
                                             if namespaces else ""))
    cases, warnings = default_cases(chosen, ports,
                                    [p.upper() for p in protocols] if protocols else None)
    if not cases:
        raise KemuError("no port to probe: no destination pod declares a TCP or UDP "
                        "containerPort; name them with --ports")
    keys = [p.key for p in chosen]
    probes = [Probe(s, d, c) for c in cases for s in keys for d in keys]
    m = Matrix(keys, keys, cases)
    for r in probe(emu, probes):
        m.results[(r.probe.src, r.probe.dst, r.probe.case)] = r
    return m, warnings


# ------------------------------------------------------------------ the command
def _csv_list(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{what}: an empty list")
    return items


def _ports(text: str) -> list[int]:
    out = []
    for item in _csv_list(text, "--ports"):
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise argparse.ArgumentTypeError(f"--ports: {item!r} is not a port 1..65535")
        out.append(int(item))
    return out


def _protocols(text: str) -> list[str]:
    out = []
    for item in _csv_list(text, "--protocols"):
        if item.upper() == "SCTP":
            raise argparse.ArgumentTypeError("--protocols: sctp cannot be probed (kemu models "
                                             "no SCTP stack)")
        if item.upper() not in PROTOCOLS:
            raise argparse.ArgumentTypeError(f"--protocols: {item!r} is not tcp or udp")
        out.append(item.upper())
    return out


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="policy_command", metavar="{matrix}", required=True)
    m = sub.add_parser("matrix", help="probe every pod pair with real packets; print the "
                       "reachability truth table", description="Probe every (source pod, "
                       "destination pod, port, protocol) with a new connection through the "
                       "datapath (TCP SYN and its SYN-ACK, a UDP datagram and its reply) and "
                       "print one truth table per port/protocol: rows = from, columns = to; "
                       ". allowed, X denied by policy, R refused (nothing listens), ? other.")
    add_manifest_args(m)
    m.add_argument("--namespaces", type=lambda s: _csv_list(s, "--namespaces"),
                   metavar="NS,..", help="the pods of these namespaces (default: all; "
                   "hostNetwork pods are never probed)")
    m.add_argument("--ports", type=_ports, metavar="N,..",
                   help="destination ports (default: the destinations' declared "
                   "containerPorts)")
    m.add_argument("--protocols", type=_protocols, metavar="tcp,udp",
                   help="protocols (default: those the ports are declared with)")
    m.add_argument("--expect", metavar="FILE", help="a table in the text format (or -o json's "
                   "records) to compare with; exit 1 and print each differing cell")
    m.add_argument("-o", "--output", choices=("text", "json", "csv"), default="text",
                   help="text (truth tables, default), json or csv (one record per probe)")
    m.add_argument("--backend", choices=("auto", "cython", "python"), default="auto",
                   help="data-plane implementation (default auto)")


def run(args: argparse.Namespace) -> int:
    from kemu.errors import KemuError
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.cli import load

    expected = None
    if args.expect is not None:
        try:
            with open(args.expect, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise KemuError(f"--expect {args.expect}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise KemuError(f"--expect {args.expect}: not UTF-8 text") from None
        expected = parse_expected(text, args.expect)
    emu = EmulatedCluster(load(args), backend=args.backend)
    m, warnings = matrix(emu, args.namespaces, args.ports, args.protocols)
    for w in warnings:
        print(f"kemu: warning: {w}", file=sys.stderr)
    sys.stdout.write(m.render(args.output))
    if expected is None:
        return EXIT_OK
    diff = m.diff(expected)
    if not diff:
        return EXIT_OK
    out = sys.stdout if args.output == "text" else sys.stderr
    print(f"\n{len(diff)} {'cell differs' if len(diff) == 1 else 'cells differ'} from "
          f"{args.expect}:", file=out)
    for line in diff:
        print(f"  {line}", file=out)
    return EXIT_NEGATIVE


POLICY = Command("policy", "NetworkPolicy tools: `policy matrix` probes every pod pair",
                 configure, run)
