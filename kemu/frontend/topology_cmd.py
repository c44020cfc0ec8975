"""``kemu topology``: the cluster as a picture, a self-contained HTML page or a static SVG.

``kemu topology -f CLUSTER [-r CAPTURE | --flows FLOWS.jsonl] -o topology.html|topology.svg``.
The page draws the node network, its gateway and external hosts, each node with its devices
(``eth0``, the pod bridge, ``flannel.1`` in VXLAN mode), each pod on its veth grouped by node
and namespace, and Services with edges to their ready endpoints (``kemu.frontend.topology``).
With ``-r`` the capture is replayed in memory (as ``kemu replay --flow-format kemu`` would,
warm, no answers) and its flows drawn, each with every hop the datapath recorded for its
frame (``HopRecorder``: the devices, directions and decisions the pcapng of ``kemu replay -w``
holds, with the flow log's verdicts on the hops they were written at); with ``--flows`` a
flow log ``kemu replay --flows`` wrote is read. The SVG is the static picture without
flows. The output's suffix chooses the format (``.html``/``.htm`` or ``.svg``); it is
written whole or not at all (``kemu.io.outputs.AtomicFile``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

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


class HopRecorder:
    """Every hop a replay recorded, per input frame (its number in the capture): the device,
    the direction and the decisions taken there, in the words of the pcapng comments
    (``kemu.frontend.hopwriter``: the same interning, the same texts, the same hops: those
    on the devices the pcapng has, node-local pseudo interfaces left out)."""

    def __init__(self, t: Any, impl: Any) -> None:  # Tables, a kemu.io.hops twin
        import numpy as np

        from kemu.dataplane import codes as C
        from kemu.frontend.hopwriter import _QUIET
        from kemu.io.hops import HUSH

        self.t = t
        self.comments = impl.HopComments()
        self.skip = np.zeros(1 << 16, np.uint8)
        self.skip[[*_QUIET, HUSH]] = 1
        self.device = (t.if_kind != C.IF_NODE_LOCAL).astype(np.uint8)
        self.event_texts: list[str] = []
        self.comment_texts: list[list[str]] = [[]]
        self.hops: dict[int, list[dict[str, Any]]] = {}

    def __call__(self, res: Any, frame_numbers: Any) -> None:  # Results, int64 array
        import numpy as np

        from kemu.dataplane import codes as C
        from kemu.io.hops import decision_text, with_flows

        n = res.n_hops
        keep = self.device[res.hop_iface[:n]]
        cur = np.zeros(n, np.int32)
        kinds, bs, cs = with_flows(res)
        new_events, new_comments = self.comments.assign(
            res.ev_hop, kinds, res.ev_a, bs, cs, res.n_events, keep, self.skip, cur)
        self.event_texts += [decision_text(self.t, *ev) for ev in new_events]
        for parent, eid in new_comments:
            self.comment_texts.append([*self.comment_texts[parent], self.event_texts[eid]])
        names = self.t.if_name
        frames = res.hop_frame[:n].tolist()
        ifaces = res.hop_iface[:n].tolist()
        dirs = res.hop_dir[:n].tolist()
        numbers = frame_numbers.tolist()
        for h in np.flatnonzero(keep).tolist():
            self.hops.setdefault(int(numbers[frames[h]]), []).append({
                "iface": names[ifaces[h]],
                "direction": "in" if dirs[h] == C.DIR_IN else "out" if dirs[h] == C.DIR_OUT
                else "",
                "decisions": list(self.comment_texts[int(cur[h])])})


def replay_records(emu, capture: str,  # noqa: ANN001 - EmulatedCluster
                   recorder: HopRecorder | None = None) -> list[dict]:
    """The flow records (kemu format) of replaying ``capture`` through ``emu``; with
    ``recorder``, every hop the replay recorded goes to it too."""
    from kemu.frontend.replay import ReplayOptions, replay
    from kemu.frontend.topology import read_flow_log

    with tempfile.TemporaryDirectory(prefix="kemu-topology-") as tmp:
        flows = os.path.join(tmp, "flows.jsonl")
        replay(emu, capture, None, flows, ReplayOptions(flow_format="kemu", on_batch=recorder))
        return read_flow_log(flows)


def replay_hops(emu, capture: str  # noqa: ANN001 - EmulatedCluster
                ) -> tuple[list[dict], dict[int, list[dict[str, Any]]]]:
    """The flow records of replaying ``capture`` and every hop the replay recorded, per
    frame number."""
    from kemu.io.hops import implementations

    recorder = HopRecorder(emu.tables, implementations()[emu.backend])
    records = replay_records(emu, capture, recorder)
    return records, recorder.hops


def write_trace_page(path: str, model, t, trace) -> None:  # noqa: ANN001
    """``kemu trace -o trace.html``: the topology page with one flow per packet of ``trace``
    (the traced one first, then the answers), shown step by step when the page opens."""
    from kemu.frontend import topology
    from kemu.io.outputs import AtomicFile

    graph = topology.build_graph(model, t)
    graph["flows"] = topology.flows_from_trace(trace, graph)
    graph["serviceMap"] = topology.service_map(graph["flows"], graph)
    graph["trace"] = True
    if not graph["collapsed"]:
        graph["positions"] = topology.preset_layout(graph)
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
    records = hops = None
    if args.capture is not None:  # a data path only to replay on
        emu = EmulatedCluster(model, backend=args.backend, seed=args.seed, respond=False,
                              icmp_errors=False)
        graph = topology.build_graph(model, emu.tables)
        records, hops = replay_hops(emu, args.capture)
    else:
        from kemu.compiler.compile import compile_cluster

        graph = topology.build_graph(model, compile_cluster(model))
    if args.flow_log is not None:
        records = topology.read_flow_log(args.flow_log)
    if records is not None:
        if fmt == "svg":
            print("kemu: warning: -o .svg is the static picture: the flows are not drawn "
                  "(use .html)", file=sys.stderr)
        graph["flows"] = topology.flows_from_records(records, graph, hops)
        graph["serviceMap"] = topology.service_map(graph["flows"], graph)
    if not graph["collapsed"]:
        graph["positions"] = topology.preset_layout(graph)
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
