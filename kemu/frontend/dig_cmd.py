"""``kemu dig``: look a name up from a pod as its resolver does (``kemu.frontend.dig``).

``kemu dig -f CLUSTER -S NS/POD NAME [TYPE] [--tcp] [-w out.pcapng] [-o text|json|yaml]``
prints a section per query (question, status, answers, the pod that answered), like ``dig
+search``. Exit codes: 0 when a query got an answer with records, 1 when none did (NXDOMAIN,
NODATA, no reply), 2 for bad input (an unknown pod or type, a name that is not a DNS name, an
output that cannot be written).
"""

from __future__ import annotations

import argparse

from kemu.dataplane import dnswire
from kemu.frontend.cli import EXIT_NEGATIVE, EXIT_OK, Command, add_manifest_args

# --- the command -------------------------------------------------------------------------------

def configure(p: argparse.ArgumentParser) -> None:
    add_manifest_args(p)
    p.add_argument("-S", "--source", required=True, metavar="POD",
                   help="the pod that looks the name up: NAMESPACE/POD (or POD in -n)")
    p.add_argument("-n", "--namespace", help="namespace of -S POD (default: default)")
    p.add_argument("name", metavar="NAME", help="the name, as the pod's program gives it "
                   "(backend, backend.shop, a trailing dot for an absolute name)")
    p.add_argument("type", metavar="TYPE", nargs="?", default="A",
                   help=f"record type (default A; one of {', '.join(dnswire.TYPES)})")
    p.add_argument("--tcp", action="store_true",
                   help="ask over TCP (RFC 7766), as glibc's options use-vc does")
    p.add_argument("-w", "--write", dest="out", metavar="OUT.pcapng",
                   help="write every hop of every packet of the lookup to this pcapng")
    p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                   help="output format (default text: a section per query, like dig +search)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of load-balancing choices (default 0)")
    p.add_argument("--backend", choices=("auto", "cython", "python"), default="auto",
                   help="data-plane implementation (default auto: the compiled one when built)")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.cli import load
    from kemu.frontend.dig import lookup, write_pcapng

    emu = EmulatedCluster(load(args), backend=args.backend, seed=args.seed)
    result = lookup(emu, args.source, args.name, args.type, tcp=args.tcp,
                    namespace=args.namespace)
    if args.out:
        n = write_pcapng(result, emu, args.out)
        print(f"kemu: wrote {n} packets to {args.out}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(result.to_dict(), indent=2))
    elif args.output == "yaml":
        import yaml

        print(yaml.safe_dump(result.to_dict(), sort_keys=False), end="")
    else:
        print(result.text(), end="")
    return EXIT_OK if result.answered else EXIT_NEGATIVE


DIG = Command("dig", "look a name up from a pod as its resolver does (resolv.conf search "
              "list, ndots), each query a packet through the cluster", configure, run)
