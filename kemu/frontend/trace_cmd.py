"""``kemu trace``: craft one packet, send it through the cluster, show what happened.

In the manner of Antrea Traceflow: ``-S`` source and ``-D`` destination, each any name of
``kemu.frontend.names``: ``ns/pod``, ``ns/svc``, ``[ns/]kind/name`` of a workload (one of its
pods, chosen deterministically), a Service's DNS name (``svc``, ``svc.ns``,
``svc.ns.svc.cluster.local``; for ``-D`` looked up as the source pod's resolver would, D-10),
``ext/<host>``, a node, an IP; ``-D`` may end in ``:port`` or ``:portname`` (the Service port,
and its protocol unless ``-p`` says one). ``-p`` protocol and fields (``tcp,dport=80``,
``udp,dport=53``, ``icmp``); ``--http 'GET /path'`` sends an HTTP/1.1 request on the TCP
connection once the handshake completes and traces it and its answer too (a Cilium L7
proxy's verdict included: a 403 from it exits 1).
When a name took a choice or a translation, the text output's
first lines say what it became (``source: deploy/frontend -> ...``); JSON and YAML carry
``source`` and ``destination``. Observations grouped by node; with the emulated stacks on
(default) the answer is traced back too.

The exit code answers "can the source reach the destination?": 0 when the exchange completes
(a SYN-ACK, an echo reply or a UDP reply reaches the source), 1 for a drop (a NetworkPolicy
denial: ``result: denied by NetworkPolicy on NODE: ingress of ns/pod (selected by ...; no rule
allows ...)``), a RST, an ICMP error, no answer (always so with ``--no-respond``) or an
answer that does not reach the source (e.g. it leaves the cluster through the gateway). The
text output's last line says why (``result: ...``); JSON and YAML carry ``reachable`` and
``reason``. UDP to port 53 carries a DNS query.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from kemu.frontend.cli import EXIT_NEGATIVE, EXIT_OK, Command, add_manifest_args

if TYPE_CHECKING:
    from kemu.frontend.names import Target
    from kemu.frontend.trace import Verdict


def configure(p: argparse.ArgumentParser) -> None:
    add_manifest_args(p)
    p.add_argument("-S", "--source", required=True,
                   help="ns/pod, [ns/]kind/name (deploy, sts, ds, rs, rc, job, pod, svc: one "
                        "of its pods, the first ready by name), a Service's DNS name, "
                        "ext/<host>, node or IP")
    p.add_argument("-D", "--destination", required=True,
                   help="ns/pod, ns/svc, [ns/]kind/name, a DNS name (svc, svc.ns, "
                        "svc.ns.svc.<zone>: searched from the source pod's namespace as its "
                        "resolver would), ext/<host>, node or IP; optionally :port or "
                        ":portname (the Service port, and its protocol unless -p says one)")
    p.add_argument("-p", "--protocol", default=None,
                   help="tcp|udp|icmp[,dport=N][,sport=N][,flags=S][,ttl=N][,size=N][,df] "
                        "(default tcp or the protocol of -D's :port; dport: -D's :port, else "
                        "the service's first port, else 80; udp to port 53 sends a DNS "
                        "query; size: the IPv4 total length, padded; df: Don't Fragment set)")
    p.add_argument("--http", metavar="'METHOD PATH'", default=None,
                   help="after the TCP handshake, send this HTTP/1.1 request (Host: -D as "
                        "given) and trace it and its answer (a Cilium L7 proxy's verdict "
                        "included); exit 1 unless the answer is 1xx-3xx")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--detailed", dest="level", action="store_const", const="detailed",
                       help="every hop: interface, packet and the datapath's decisions")
    level.add_argument("--summary", dest="level", action="store_const", const="summary",
                       help="observations grouped by node (default)")
    level.add_argument("--minimal", dest="level", action="store_const", const="minimal",
                       help="one line per packet: its outcome and where it ended")
    p.add_argument("-o", "--output", type=_output, default="text",
                   help="output format (default text; json and yaml hold every hop), or a "
                        "file ending in .html: the topology page with the traced packet's "
                        "path and the answers' paths, step by step")
    p.add_argument("--no-respond", action="store_true",
                   help="emulated stacks do not answer (trace one direction only; nothing "
                        "answers, so the exit code is 1: not shown reachable)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of load-balancing choices (default 0)")
    p.add_argument("--cold", action="store_true",
                   help="start on empty FDBs (first-packet floods), not warm as a running "
                        "cluster")
    p.add_argument("--backend", choices=("auto", "cython", "python"), default="auto",
                   help="data-plane implementation (default auto: the compiled one when built)")
    p.set_defaults(level="summary")


def _output(value: str) -> str:
    if value in ("text", "json", "yaml") or value.lower().endswith((".html", ".htm")):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: text, json, yaml or a file ending in .html")


def parse_protocol(spec: str) -> tuple[str, dict[str, str]]:
    from kemu.errors import KemuError

    parts = [s.strip() for s in spec.split(",") if s.strip()]
    proto = parts[0].lower() if parts else "tcp"
    if proto not in ("tcp", "udp", "icmp"):
        raise KemuError(f"-p {spec!r}: protocol must be tcp, udp or icmp")
    fields = {}
    for part in parts[1:]:
        if part.lower() == "df":
            fields["df"] = "1"
            continue
        key, eq, value = part.partition("=")
        if not eq or key not in ("dport", "sport", "flags", "ttl", "size"):
            raise KemuError(f"-p {spec!r}: {part!r} is not dport=, sport=, flags=, ttl=, "
                            "size= or df")
        if key != "flags" and not value.isdigit():
            raise KemuError(f"-p {spec!r}: {key} must be a number")
        fields[key] = value
    return proto, fields


def destination(emu, spec: str, client: str | None = None,  # noqa: ANN001
                protocol: str | None = None) -> tuple[str, int | None]:
    """(IPv4 address, port or None) of ``-D`` (see ``target``)."""
    t = target(emu, spec, client, protocol)
    return str(t.ip), t.port


def target(emu, spec: str, client: str | None = None,  # noqa: ANN001
           protocol: str | None = None) -> Target:
    """What ``-D`` names (``kemu.frontend.names.resolve_destination``), from the pod
    ``client`` (``ns/name``: its namespace is the resolver's, D-10) if the source is one;
    ``protocol`` is ``-p``'s (``TCP``/``UDP``) when it gave one. Without a port in the name:
    a Service's first port, a pod's first container port, an external host's first port."""
    from kemu.control.model import Pod
    from kemu.frontend import names
    from kemu.frontend.names import Target

    m = emu.model
    pod: Pod | None = None
    if client is not None:
        ns, _, name = client.partition("/")
        pod = m.pod(ns, name)
    target = names.resolve_destination(m, spec, pod, protocol)
    if target.kind == "service":
        svc = m.service(*target.name.split("/", 1))
        if target.port is None and svc.ports:  # the Service's first port, as before
            return Target(target.typed, target.kind, target.name, target.ip,
                          svc.ports[0].port, None, target.note)
    elif target.kind == "pod" and target.port is None:
        ns, _, name = target.name.partition("/")
        ports = m.pod(ns, name).container_ports()
        if ports:
            return Target(target.typed, target.kind, target.name, target.ip, ports[0].port,
                          None, target.note)
    elif target.kind == "external" and target.port is None:
        ext = next(e for e in m.config.external_hosts if e.name == target.name)
        if ext.ports:
            return Target(target.typed, target.kind, target.name, target.ip, ext.ports[0][1],
                          None, target.note)
    return target


def _described(target: Target | None) -> dict[str, object]:
    """``source``/``destination`` of the JSON and YAML output."""
    if target is None:
        return {"typed": None}
    return {"typed": target.typed, "kind": target.kind, "name": target.name,
            "ip": str(target.ip) if target.ip is not None else None, "port": target.port,
            "protocol": target.protocol, "note": target.note}


def run(args: argparse.Namespace) -> int:
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    from kemu.errors import KemuError
    from kemu.frontend import names
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.cli import load, warn

    proto, fields = parse_protocol(args.protocol or "tcp")
    page = args.output not in ("text", "json", "yaml")
    if page:
        from kemu.control.manifests import files
        from kemu.io.outputs import check_outputs

        check_outputs({"-o": args.output}, {f"an input manifest (-f {m})": files(m)
                                            for m in args.manifests})
    model = load(args)
    emu = EmulatedCluster(model, backend=args.backend, seed=args.seed,
                          respond=not args.no_respond, cold=args.cold)
    src = emu.resolve_source(args.source)
    client = src.name if src is not None and src.kind == "pod" else None
    explicit = proto.upper() if args.protocol and proto != "icmp" else None
    dst = target(emu, args.destination, client, explicit)
    if dst.protocol is not None and args.protocol is None:
        if dst.protocol not in ("TCP", "UDP"):
            raise KemuError(f"-D {args.destination}: port {dst.port} is {dst.protocol}; kemu "
                            "traces tcp, udp and icmp (give -p)")
        proto = dst.protocol.lower()
    if names.split_port(args.destination)[1] is not None and "dport" in fields \
            and int(fields["dport"]) != dst.port:
        raise KemuError(f"-D {args.destination} names port {dst.port} but -p says "
                        f"dport={fields['dport']}: give the port once")
    ip = IP(dst=str(dst.ip), ttl=int(fields.get("ttl", 64)),
            flags="DF" if "df" in fields else 0)
    dport = int(fields.get("dport", dst.port or 80))
    sport = int(fields.get("sport", 40000))
    if proto == "tcp":
        pkt = ip / TCP(sport=sport, dport=dport, flags=fields.get("flags", "S"), seq=1000)
    elif proto == "udp":
        pkt = ip / UDP(sport=sport, dport=dport) / (_dns_query(emu) if dport == 53 else b"kemu")
    else:
        pkt = ip / ICMP(id=1, seq=1) / b"kemu"
    if "size" in fields:
        size = int(fields["size"])
        if not len(pkt) <= size <= 65535:
            raise KemuError(f"-p {args.protocol!r}: size must be {len(pkt)}..65535")
        if size > len(pkt):
            pkt = pkt / (b"\0" * (size - len(pkt)))
    trace = emu.send(pkt, src=client or args.source)
    verdict = trace.verdict()
    http = None
    if args.http is not None:
        if proto != "tcp" or "flags" in fields:
            raise KemuError("--http needs a TCP handshake (-p tcp without flags=)")
        method, _, path = args.http.strip().partition(" ")
        if not method.isalpha() or not path.strip().startswith("/"):
            raise KemuError(f"--http {args.http!r}: give 'METHOD /path'")
        if verdict.reachable:
            host = names.split_port(args.destination)[0]
            host = host if "/" not in host else str(dst.ip)  # a DNS name, else the address
            req = f"{method} {path.strip()} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            http = emu.send(ip / TCP(sport=sport, dport=dport, flags="PA", seq=1001, ack=1)
                            / req, src=client or args.source)
            verdict = _http_verdict(http)
    if page:
        from kemu.frontend.topology_cmd import write_trace_page

        write_trace_page(args.output, model, emu.tables, trace)
        print(f"wrote {args.output}")
        print(f"result: {verdict.reason}")
    elif args.output in ("json", "yaml"):
        data = {"reachable": verdict.reachable, "reason": verdict.reason,
                "source": _described(src), "destination": _described(dst),
                **trace.to_dict(), **({"http": http.to_dict()} if http is not None else {})}
        if args.output == "json":
            print(json.dumps(data, indent=2))
        else:
            import yaml

            print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        for role, named in (("source", src), ("destination", dst)):
            if named is not None and named.note:
                print(f"{role}: {named.typed} -> {_became(named)} ({named.note})")
        print(getattr(trace, args.level)(), end="")
        if http is not None:
            print(f"HTTP request {args.http.strip()}:")
            print(getattr(http, args.level)(), end="")
        print(f"result: {verdict.reason}")
    sys.stdout.flush()
    warn(model)  # after the trace: an error that stops it (a bad -S/-D) stays its one line
    return EXIT_OK if verdict.reachable else EXIT_NEGATIVE


def _http_verdict(http) -> Verdict:  # noqa: ANN001 - Trace
    """The answer to ``--http``: its status line, and the L7 proxy's verdict when one
    judged the request."""
    from kemu.dataplane import codes as C
    from kemu.dataplane import l7
    from kemu.frontend.trace import Verdict

    body = b""
    for p in http.answers():
        f = p.sent
        l4 = 14 + (f[14] & 0xF) * 4
        body += f[l4 + (f[l4 + 12] >> 4) * 4: 14 + int.from_bytes(f[16:18], "big")]
    line = body.split(b"\r\n", 1)[0].decode("latin-1")
    words = [l7.get(ev[2]).text() for p in http.packets for _i, _d, _b, evs in p.hops
             for ev in evs if ev[0] == C.EV_L7_HTTP and l7.get(ev[2]) is not None]
    if not line.startswith("HTTP/"):
        return Verdict(False, "no HTTP answer")
    ok = line[9:10] in ("1", "2", "3")
    return Verdict(ok, line + (f" ({'; '.join(words)})" if words else ""))


def _became(t: Target) -> str:
    """``pod shop/x-1 10.244.0.3:8080/TCP``: what a name became, in a few words."""
    where = f"{t.ip}" if t.port is None else f"{t.ip}:{t.port}"
    what = {"pod": "pod", "service": "Service", "external": "external host", "node": "node",
            "ip": ""}[t.kind]
    name = f"{what} {t.name} " if t.kind != "ip" else ""
    return f"{name}{where}" + (f"/{t.protocol}" if t.protocol else "")


def _dns_query(emu) -> bytes:  # noqa: ANN001
    """A DNS query (A record) for the first Service with a ClusterIP, else kubernetes.default."""
    from scapy.layers.dns import DNS, DNSQR

    m = emu.model
    named = sorted((s.namespace, s.name) for s in m.services if s.cluster_ip is not None)
    ns, name = named[0] if named else ("default", "kubernetes")
    qname = f"{name}.{ns}.svc.{m.config.dns_domain}"
    return bytes(DNS(id=0x6B65, rd=1, qd=DNSQR(qname=qname, qtype="A")))


TRACE = Command("trace", "trace one packet (and its answer) through the cluster", configure,
                run)
