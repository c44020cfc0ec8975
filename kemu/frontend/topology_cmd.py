"""``kemu topology``: the cluster as a picture, a self-contained HTML page or a static SVG.

``kemu topology -f CLUSTER [-r CAPTURE | --flows FLOWS.jsonl] -o topology.html|topology.svg``.
The page draws the node network, its gateway and external hosts, each node with its devices
(``eth0``, the pod bridge, ``flannel.1`` in VXLAN mode), each pod on its veth grouped by node
and namespace, and Services with edges to their ready endpoints (``kemu.frontend.topology``).
With ``-r`` the capture is replayed in memory (as ``kemu replay --flow-format kemu`` would,
warm, no answers) and its flow records drawn; with ``--flows`` a flow log ``kemu replay
--flows`` wrote is read. The SVG is the static picture without flows. The output's suffix
chooses the format (``.html``/``.htm`` or ``.svg``); it is written whole or not at all
(``kemu.io.outputs.AtomicFile``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from kemu.frontend.cli import EXIT_OK, Command, add_manifest_args

FORMATS = {".html": "html", ".htm": "html", ".svg": "svg"}


def output_format(path: str, option: str = "-o") -> str:
    """``html`` or ``svg`` by the file's suffix; anything else is a usage error."""
    from kemu.errors import KemuError

    fmt = FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise KemuError(f"{option} {path}: give a file ending in .html or .svg")
    return fmt


def configure(p: argparse.ArgumentParser) -> None:
    add_manifest_args(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("-r", "--read", dest="capture", metavar="IN.pcap[ng]",
                     help="replay this capture in memory and draw its flows")
    src.add_argument("--flows", dest="flow_log", metavar="FLOWS.jsonl",
                     help="draw the flows of a flow log (kemu replay --flows; --flow-format "
                          "kemu gives each flow all its hops and decisions)")
    p.add_argument("-o", "--output", dest="out", required=True,
                   metavar="topology.html|topology.svg",
                   help="write the picture here: .html (one self-contained page, opens from "
                        "disk) or .svg (static, without flows)")
    p.add_argument("--seed", type=int, default=0, help="seed of load-balancing choices (-r)")
    p.add_argument("--backend", choices=("auto", "cython", "python"), default="auto",
                   help="data-plane implementation for -r (default auto)")


def replay_records(emu, capture: str) -> list[dict]:  # noqa: ANN001 - EmulatedCluster
    """The flow records (kemu format) of replaying ``capture`` through ``emu``."""
    from kemu.frontend.replay import ReplayOptions, replay
    from kemu.frontend.topology import read_flow_log

    with tempfile.TemporaryDirectory(prefix="kemu-topology-") as tmp:
        flows = os.path.join(tmp, "flows.jsonl")
        replay(emu, capture, None, flows, ReplayOptions(flow_format="kemu"))
        return read_flow_log(flows)


def write_trace_page(path: str, model, t, trace) -> None:  # noqa: ANN001
    """``kemu trace -o trace.html``: the topology page with one flow per packet of ``trace``
    (the traced one first, then the answers), shown step by step when the page opens."""
    from kemu.frontend import topology
    from kemu.io.outputs import AtomicFile

    graph = topology.build_graph(model, t)
    graph["flows"] = topology.flows_from_trace(trace, graph)
    graph["serviceMap"] = topology.service_map(graph["flows"], graph)
    graph["trace"] = True
    graph["title"] = "kemu trace: " + graph["title"].removeprefix("kemu topology: ")
    with AtomicFile(path, "w") as f:
        f.write(topology.render_html(graph))


def run(args: argparse.Namespace) -> int:
    from kemu.errors import KemuError
    from kemu.frontend import topology
    from kemu.frontend.api import EmulatedCluster
    from kemu.frontend.cli import load, warn
    from kemu.io.outputs import AtomicFile, check_outputs

    fmt = output_format(args.out)
    for opt, path in (("-r", args.capture), ("--flows", args.flow_log)):
        if path is not None and not os.path.isfile(path):
            raise KemuError(f"{opt} {path}: no such file")
    if args.flow_log is not None:  # the CLI checked -o against -r and -f already
        check_outputs({"-o": args.out},
                      {f"the input flow log (--flows {args.flow_log})": args.flow_log})
    model = load(args)
    records = None
    if args.capture is not None:  # a data path only to replay on
        emu = EmulatedCluster(model, backend=args.backend, seed=args.seed, respond=False,
                              icmp_errors=False)
        graph = topology.build_graph(model, emu.tables)
        records = replay_records(emu, args.capture)
    else:
        from kemu.compiler.compile import compile_cluster

        graph = topology.build_graph(model, compile_cluster(model))
    if args.flow_log is not None:
        records = topology.read_flow_log(args.flow_log)
    if records is not None:
        if fmt == "svg":
            print("kemu: warning: -o .svg is the static picture: the flows are not drawn "
                  "(use .html)", file=sys.stderr)
        graph["flows"] = topology.flows_from_records(records, graph)
        graph["serviceMap"] = topology.service_map(graph["flows"], graph)
    text = topology.render_html(graph) if fmt == "html" else topology.render_svg(graph)
    with AtomicFile(args.out, "w") as f:
        f.write(text)
    n_pods = sum(len(ns["pods"]) for n in graph["nodes"] for ns in n["namespaces"])
    print(f"wrote {args.out}: {len(graph['nodes'])} nodes, {n_pods} pods, "
          f"{len(graph['services'])} Services, {len(graph['flows'])} flows")
    warn(model)
    return EXIT_OK


TOPOLOGY = Command("topology", "draw the cluster (and its flows) as an HTML page or an SVG",
                   configure, run)
