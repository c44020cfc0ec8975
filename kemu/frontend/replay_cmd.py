"""``kemu replay``: a capture through the emulated cluster, to pcapng and a flow log.

Conventions from tshark (``-r``, ``-w``) and tcpreplay (``--limit``, ``--loop``, a final
summary with packets, bytes and packets per second). A progress bar on stderr when it is a
terminal, updated per batch. No Scapy on this path (start-up time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from kemu.frontend.cli import EXIT_OK, Command, add_manifest_args


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
    p.add_argument("--limit", type=int, default=0, metavar="N", help="stop after N frames")
    p.add_argument("--loop", type=int, default=1, metavar="N", help="replay N times")
    p.add_argument("--inject-at", metavar="IFACE",
                   help="enter every frame at this interface (e.g. node1/eth0)")
    p.add_argument("--respond", action="store_true",
                   help="emulated stacks answer and nodes send ICMP errors (off: the capture "
                        "already holds both directions)")
    p.add_argument("--unknown-at-gateway", action="store_true",
                   help="frames whose source the cluster does not know enter from the gateway")
    p.add_argument("--cold", action="store_true",
                   help="start on empty FDBs (as a just-booted cluster), not warm as the "
                        "running cluster a capture comes from")
    p.add_argument("--backend", choices=("auto", "cython", "python"), default="auto")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.cli import load
    from kemu.frontend.replay import ReplayOptions, replay

    model = load(args)
    if not os.path.exists(args.capture):
        raise_missing(args.capture)
    emu = EmulatedCluster(model, backend=args.backend, seed=args.seed, respond=args.respond,
                          icmp_errors=args.respond, cold=args.cold)
    opts = ReplayOptions(limit=args.limit, loop=args.loop, inject_at=args.inject_at,
                         respond=args.respond, unknown_at_gateway=args.unknown_at_gateway,
                         capture_points=args.capture_points, flow_format=args.flow_format)
    progress = _progress() if sys.stderr.isatty() and not args.json else None
    try:
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
    return EXIT_OK


def raise_missing(path: str) -> None:
    from kemu.errors import KemuError

    raise KemuError(f"{path}: No such file or directory")


class _progress:
    """A frames counter on stderr, redrawn per batch."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int) -> None:
        self.n = n
        sys.stderr.write(f"\rreplaying: {n} frames")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\r" + " " * 40 + "\r")
        sys.stderr.flush()


REPLAY = Command("replay", "replay a capture through the emulated cluster", configure, run)
