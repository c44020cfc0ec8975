"""``kemu tour``: a guided walk through the paths a packet takes in a cluster (issue #22).

``kemu tour`` lists the steps (and the ones still coming: CNI modes not built yet);
``kemu tour N`` or ``kemu tour NAME`` runs one on its bundled cluster: it sends the step's
Scapy-crafted packets, prints what happened at each hop in plain words (from the trace's
decisions, ``kemu.frontend.tour``), the ``kemu trace``/``kemu dig``/``kemu replay`` command
that sends the same packets again, and the step's checks. It writes ``NAME.pcapng`` and
``NAME.html`` (the topology page with the packet's path) into ``-o DIR`` (default: a new
directory ``kemu-tour-NAME`` here, ``kemu-tour-all`` for ``--all``), and for a step whose
packets ``kemu trace`` cannot craft (an ARP request) ``NAME-sent.pcap``, the input of its
``kemu replay`` command. Files are never overwritten.
``kemu tour --all`` runs every step; ``kemu tour --markdown`` prints ``docs/tour.md``.

Exit codes: 0 every step run passed its checks, 1 a step's trace did not show what the step
claims (the datapath's behaviour changed), 2 bad input (an unknown step, an output that
exists or cannot be written).
"""

from __future__ import annotations

import argparse
import os

from kemu.frontend.cli import EXIT_NEGATIVE, EXIT_OK, Command


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("step", nargs="?", metavar="STEP",
                   help="the step to run: its number or name (without: list the steps)")
    p.add_argument("--all", action="store_true", help="run every step")
    p.add_argument("-o", "--output-dir", dest="out", metavar="DIR",
                   help="where the step's pcapng and topology page go (default: a new "
                        "directory kemu-tour-STEP in the current directory)")
    p.add_argument("--markdown", action="store_true",
                   help="print the whole tour as Markdown (docs/tour.md)")
    p.add_argument("--backend", choices=("auto", "cython", "python"), default="auto",
                   help="data-plane implementation (default auto: the compiled one when built)")


def listing() -> str:
    from kemu.frontend.tour_steps import STEPS, coming

    lines = ["kemu tour: Kubernetes networking, packet by packet. Run a step with "
             "`kemu tour N` or `kemu tour NAME`, or all with `kemu tour --all`.", ""]
    width = max(len(s.name) for s in STEPS)
    for n, s in enumerate(STEPS, 1):
        lines.append(f"{n:>3}. {s.name:<{width}}  {s.title}")
    soon = coming()
    if soon:
        lines += ["", "coming:"]
        for c in soon:
            lines.append(f"     {c.name:<{width}}  {c.title} ({c.why})")
    return "\n".join(lines) + "\n"


def _new_dir(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... : the first that does not exist."""
    path, k = base, 1
    while os.path.lexists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def run(args: argparse.Namespace) -> int:
    import sys

    from kemu.errors import KemuError
    from kemu.frontend import tour
    from kemu.frontend.tour_steps import STEPS, find, run_step

    if args.markdown:
        if args.step or args.all or args.out:
            raise KemuError("--markdown takes no step, --all or -o")
        print(markdown(args.backend), end="")
        return EXIT_OK
    if args.step is None and not args.all:
        print(listing(), end="")
        return EXIT_OK
    if args.step is not None and args.all:
        raise KemuError("give a step or --all, not both")
    steps = STEPS if args.all else [find(args.step)]
    folder = args.out or _new_dir(f"kemu-tour-{'all' if args.all else steps[0].name}")
    planned = [p for s in steps for p in tour.planned_files(s, folder)]
    if os.path.isdir(folder):
        tour.check_new(planned)
    elif os.path.lexists(folder):
        raise KemuError(f"-o {folder}: exists and is not a directory")
    failed = []
    backend = None if args.backend == "auto" else args.backend
    made = False
    for k, step in enumerate(steps):
        result = run_step(step, backend)
        if not made:
            os.makedirs(folder, exist_ok=True)
            tour.check_new(planned)
            made = True
        files = tour.write_outputs(step, result, folder)
        if k:
            print()
        print(tour.report(step, result, files, folder), end="")
        sys.stdout.flush()
        if not result.passed:
            failed.append(step.name)
    if args.all:
        print(f"\n{len(steps) - len(failed)} of {len(steps)} steps passed"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_NEGATIVE if failed else EXIT_OK


def markdown(backend: str = "auto") -> str:
    """The whole tour as Markdown: every step run, its narrative and commands (the
    cluster paths relative to the repository)."""
    from kemu.frontend import tour
    from kemu.frontend.tour_steps import STEPS, coming, run_step

    out = ["# The kemu tour", "",
           "<!-- generated by `kemu tour --markdown > docs/tour.md`; "
           "tests/test_tour.py checks it is current -->", "",
           "Kubernetes networking, packet by packet: each step sends real packets through a "
           "bundled cluster and tells, hop by hop, what the emulated datapath did. Every "
           "sentence about a packet below is generated from its trace, and every claim is "
           "checked (`kemu tour STEP` exits 1 when the trace does not show it). Run one "
           "with `kemu tour N` (it also writes the step's pcapng and its topology page).", ""]
    for n, s in enumerate(STEPS, 1):
        out.append(f"{n}. [{s.title}](#{n}-{s.name}) (`kemu tour {s.name}`)")
    for c in coming():
        out.append(f"- coming: {c.title} ({c.why})")
    b = None if backend == "auto" else backend
    for n, s in enumerate(STEPS, 1):
        result = run_step(s, b, shown=s.cluster)
        text = tour.report(s, result).splitlines()
        out += ["", f"## {n}. {s.name}", "", f"**{s.title}**", "", " ".join(s.intro.split()),
                "", f"Cluster: `{s.cluster}`" + (f"; behaviours {s.semantics} of "
                                                 "SEMANTICS" if s.semantics else ""), "",
                "```text", *text[text.index(f"cluster: {s.cluster}") + 2:], "```"]
    return "\n".join(out) + "\n"


TOUR = Command("tour", "a guided walk through the paths a packet takes in a cluster, "
               "step by step", configure, run)
