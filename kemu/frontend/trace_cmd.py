"""``kemu trace``: craft one packet, send it through the cluster, show what happened.

In the manner of Antrea Traceflow: ``-S`` source (``ns/pod``, ``ext/<host>``, a node, an
IP), ``-D`` destination (``ns/pod``, ``ns/svc``, ``ext/<host>``, a node, an IP), ``-p``
protocol and fields (``tcp,dport=80``, ``udp,dport=53``, ``icmp``). Observations grouped by
node; with the emulated stacks on (default) the answer is traced back too.

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
import ipaddress
import json

from kemu.frontend.cli import EXIT_NEGATIVE, EXIT_OK, Command, add_manifest_args


def configure(p: argparse.ArgumentParser) -> None:
    add_manifest_args(p)
    p.add_argument("-S", "--source", required=True, help="ns/pod, ext/<host>, node or IP")
    p.add_argument("-D", "--destination", required=True,
                   help="ns/pod, ns/svc, ext/<host>, node or IP")
    p.add_argument("-p", "--protocol", default="tcp",
                   help="tcp|udp|icmp[,dport=N][,sport=N][,flags=S][,ttl=N][,size=N][,df] "
                        "(default tcp, dport: the service's first port, else 80; udp to "
                        "port 53 sends a DNS query; size: the IPv4 total length, padded; "
                        "df: Don't Fragment set)")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--detailed", dest="level", action="store_const", const="detailed",
                       help="every hop: interface, packet and the datapath's decisions")
    level.add_argument("--summary", dest="level", action="store_const", const="summary",
                       help="observations grouped by node (default)")
    level.add_argument("--minimal", dest="level", action="store_const", const="minimal",
                       help="one line per packet: its outcome and where it ended")
    p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                   help="output format (default text; json and yaml hold every hop)")
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


def destination(emu, spec: str) -> tuple[str, int | None]:  # noqa: ANN001
    """(IPv4 address, default port or None) of ``-D``."""
    from kemu.errors import KemuError

    m = emu.model
    try:
        return str(ipaddress.IPv4Address(spec)), None
    except ValueError:
        pass
    ns, _, name = spec.rpartition("/")
    ns = ns or "default"
    for svc in m.services:
        if svc.namespace == ns and svc.name == name:
            if svc.cluster_ip is None:
                raise KemuError(f"-D {spec}: Service {svc.key} has no ClusterIP "
                                f"({'headless' if svc.headless else svc.type})")
            return str(svc.cluster_ip), svc.ports[0].port if svc.ports else None
    for pod in m.pods:
        if pod.namespace == ns and pod.name == name:
            ports = pod.container_ports()
            return str(pod.ip), ports[0].port if ports else None
    for ext in m.config.external_hosts:
        if spec in (ext.name, f"ext/{ext.name}"):
            return str(ext.ip), ext.ports[0][1] if ext.ports else None
    for node in m.nodes:
        if spec in (node.name, f"node/{node.name}"):
            return str(node.internal_ip), None
    raise KemuError(f"-D {spec}: not a pod, Service, external host, node or IPv4 address")


def run(args: argparse.Namespace) -> int:
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    from kemu.errors import KemuError
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.cli import load

    proto, fields = parse_protocol(args.protocol)
    emu = EmulatedCluster(load(args), backend=args.backend, seed=args.seed,
                          respond=not args.no_respond, cold=args.cold)
    dst, default_port = destination(emu, args.destination)
    ip = IP(dst=dst, ttl=int(fields.get("ttl", 64)), flags="DF" if "df" in fields else 0)
    dport = int(fields.get("dport", default_port or 80))
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
    trace = emu.send(pkt, src=args.source)
    verdict = trace.verdict()
    if args.output in ("json", "yaml"):
        data = {"reachable": verdict.reachable, "reason": verdict.reason, **trace.to_dict()}
        if args.output == "json":
            print(json.dumps(data, indent=2))
        else:
            import yaml

            print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(getattr(trace, args.level)(), end="")
        print(f"result: {verdict.reason}")
    return EXIT_OK if verdict.reachable else EXIT_NEGATIVE


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
