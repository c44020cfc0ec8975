"""``kemu replay``: a capture through the emulated cluster, to pcapng and a flow log.

Conventions from tshark (``-r``, ``-w``) and tcpreplay (``--limit``, ``--loop``, a final
summary with packets, bytes and packets per second). A progress bar on stderr when it is a
terminal, updated per batch. No Scapy on this path (start-up time). ``--map`` places a
capture from elsewhere onto the cluster's hosts (``kemu.frontend.addrmap``). When no frame of
a capture could be placed, a hint on stderr says why and how to map, and the exit code is 1.
``--workers N`` / ``--scheduler`` replay it sharded by flow (``kemu.frontend.shard``), the
progress bar showing each worker's frames.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from kemu.frontend.cli import EXIT_NEGATIVE, EXIT_OK, Command, add_manifest_args


def configure(p: argparse.ArgumentParser) -> None:
    add_manifest_args(p)
    p.add_argument("-r", "--read", dest="capture", required=True, metavar="IN.pcap[ng]",
                   help="capture to replay (pcap or pcapng)")
    p.add_argument("-w", "--write", dest="out", metavar="OUT.pcapng",
                   help="write every hop of every frame here (one interface per device)")
    p.add_argument("--flows", metavar="OUT.jsonl", help="write a Hubble-style flow log")
    p.add_argument("--flow-format", choices=("hubble", "kemu"), default="hubble",
                   help="kemu adds frame, hop and decision texts to each record")
    p.add_argument("--capture-points", choices=("all", "pods", "drops"), default="all",
                   help="which hops go to the pcapng (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of load-balancing choices")
    p.add_argument("--limit", type=_at_least(1), default=0, metavar="N",
                   help="stop after N frames")
    p.add_argument("--loop", type=_at_least(1), default=1, metavar="N", help="replay N times")
    p.add_argument("--inject-at", metavar="IFACE",
                   help="enter every frame at this interface (e.g. node1/eth0)")
    p.add_argument("--keep-l2", action="store_true",
                   help="inject frames with their own Ethernet addresses (default: rewritten as "
                        "their sender's stack would address them); an unknown MAC is then "
                        "flooded or dropped by MAC as the kernel would")
    p.add_argument("--respond", action="store_true",
                   help="emulated stacks answer and nodes send ICMP errors (off: the capture "
                        "already holds both directions)")
    p.add_argument("--unknown-at-gateway", action="store_true",
                   help="frames whose source the cluster does not know enter from the gateway "
                        "(their first hop's comment and the summary say so)")
    p.add_argument("--map", dest="address_map", action="append", metavar="ADDR=TARGET",
                   help="replay a capture from elsewhere: its IPv4 address or CIDR ADDR becomes "
                        "TARGET in both directions (repeatable): NS/POD; NS/ (a CIDR's hosts "
                        "onto the namespace's pods, in address and name order); svc/NS/NAME or "
                        "a ClusterIP (frames to it are load-balanced; its replies are not "
                        "placed: use --respond); ext/NAME; node/NAME; or an IP of the cluster. "
                        "E.g. --map 10.0.0.5=default/client --map 10.0.0.0/24=shop/")
    p.add_argument("--cold", action="store_true",
                   help="start on empty FDBs (as a just-booted cluster), not warm as the "
                        "running cluster a capture comes from")
    p.add_argument("--backend", choices=("auto", "cython", "python"), default="auto",
                   help="data-plane implementation (default auto: the compiled one when built)")
    p.add_argument("--workers", type=_at_least(1), default=None, metavar="N",
                   help="replay in N processes, the capture sharded by flow; outputs are the "
                        "same bytes as with one (default 1: this process)")
    p.add_argument("--scheduler", metavar="tcp://HOST:8786",
                   help="replay on a Dask cluster (pip install 'kemu[dask]'): --workers shards "
                        "(default: the cluster's worker count); the capture and the outputs' "
                        "folder must be at the same path on every worker")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``lo`` (argparse's error names the option)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is less than {lo}")
        return value
    return parse


def run(args: argparse.Namespace) -> int:
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.cli import load, warn
    from kemu.frontend.replay import ReplayOptions, replay

    if (args.workers or 1) > 1 and not args.scheduler:
        from kemu.frontend.shard import prestart

        prestart()  # the pool's fork server imports kemu while the manifests load
    model = load(args)
    if not os.path.exists(args.capture):
        raise_missing(args.capture)
    emu = EmulatedCluster(model, backend=args.backend, seed=args.seed, respond=args.respond,
                          icmp_errors=args.respond, cold=args.cold)
    opts = ReplayOptions(limit=args.limit, loop=args.loop, inject_at=args.inject_at,
                         keep_l2=args.keep_l2, respond=args.respond,
                         unknown_at_gateway=args.unknown_at_gateway,
                         capture_points=args.capture_points, flow_format=args.flow_format,
                         address_map=args.address_map)
    progress = _progress() if sys.stderr.isatty() and not args.json else None
    try:
        if (args.workers or 1) != 1 or args.scheduler:
            from kemu.frontend.shard import replay_sharded, worker_count

            workers = args.workers or worker_count(args.scheduler)
            summary = replay_sharded(model, args.capture, args.out, args.flows, opts,
                                     workers=workers, scheduler=args.scheduler,
                                     backend=args.backend, seed=args.seed, cold=args.cold,
                                     progress=progress.workers if progress else None)
        else:
            summary = replay(emu, args.capture, args.out, args.flows, opts,
                             progress=progress.update if progress else None)
    finally:
        if progress:
            progress.close()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        sys.stdout.write(summary.render())
        for path in (args.out, args.flows):
            if path:
                print(f"wrote {path}")
    sys.stdout.flush()
    placed = not (summary.packets and not summary.injected)
    if not placed:
        print(f"kemu: {nothing_placed(summary, args)}", file=sys.stderr)
    warn(model)  # after the run: an error that stops it stays its one line
    return EXIT_OK if placed else EXIT_NEGATIVE


def nothing_placed(summary, args: argparse.Namespace) -> str:  # noqa: ANN001 - ReplaySummary
    """Why no frame of the capture could be placed, and what to do about it."""
    import ipaddress

    head = f"no frame of {args.capture} could be placed"
    unknown = summary.unplaced.get("unknown source", 0)
    service = sum(n for why, n in summary.unplaced.items() if why.startswith("source is a Serv"))
    if not unknown:
        reasons = ", ".join(f"{why}: {n}" for why, n in sorted(summary.unplaced.items()))
        more = " (its replies come from the Service's endpoints with --respond)" \
            if service else ""
        return f"{head} ({reasons or 'nothing to place'}){more}"
    srcs = [str(ipaddress.IPv4Address(a)) for a in sorted(summary.unknown_sources)]
    files = " ".join(f"-f {m}" for m in args.manifests)
    if srcs:
        shown = ", ".join(srcs[:2]) + (f" and {len(srcs) - 2} more" if len(srcs) > 2 else "")
        what = f"its sources ({shown}) are not in the cluster"
        example = srcs[0]
    else:  # nothing --map could rewrite: no IPv4 source to map
        return (f"{head}: its frames have no IPv4 header right after the Ethernet header "
                "(VLAN-tagged, IPv6 or another protocol: kemu places frames by IPv4 source "
                "and models no VLANs) and source MACs the cluster does not know; enter them "
                "at one interface with --inject-at IFACE (kemu show "
                f"{files} interfaces lists them) or use --unknown-at-gateway")
    return (f"{head}: {what}; map them with --map {example}=NAMESPACE/POD "
            f"(kemu show {files} pods -A lists pods) or use --unknown-at-gateway")


def raise_missing(path: str) -> None:
    from kemu.errors import KemuError

    raise KemuError(f"{path}: No such file or directory")


class _progress:
    """A frames counter on stderr, redrawn per batch (sharded: each worker's frames)."""

    def __init__(self) -> None:
        self.n = 0
        self.width = 40

    def update(self, n: int) -> None:
        self.n = n
        sys.stderr.write(f"\rreplaying: {n} frames")
        sys.stderr.flush()

    def workers(self, counts: dict[int, int]) -> None:
        each = "  ".join(f"w{k}: {n}" for k, n in sorted(counts.items()))
        line = f"replaying: {sum(counts.values())} frames ({each})"
        self.width = max(self.width, len(line))
        sys.stderr.write("\r" + line.ljust(self.width))
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\r" + " " * self.width + "\r")
        sys.stderr.flush()


REPLAY = Command("replay", "replay a capture through the emulated cluster", configure, run)
