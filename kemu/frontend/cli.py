"""The ``kemu`` command line: argparse, a table of subcommands, exit codes.

Each subcommand is a ``Command`` (name, help, ``configure(parser)``, ``run(args) -> int``)
exported by some module; ``COMMANDS`` lists them as ``"module:attribute"`` in ``--help`` order.
To add one (``replay``, ``trace``, ``bench``), write the module and append it to ``COMMANDS``;
keep heavy imports inside ``run`` so ``kemu --help`` stays fast.

Exit codes (kubectl/tshark conventions): 0 ok; 1 a negative answer (a trace that drops, ...);
2 usage error, unreadable input or invalid manifests; 130 interrupted. A ``KemuError`` prints
``kemu: <message>`` on stderr, one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kemu._version import __version__
from kemu.errors import KemuError

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[str] = [
    "kemu.frontend.cli:VALIDATE",
    "kemu.frontend.show:SHOW",
    "kemu.frontend.replay_cmd:REPLAY",
    "kemu.frontend.trace_cmd:TRACE",
    "kemu.bench.command:BENCH",
    "kemu.frontend.wireshark_cmd:WIRESHARK_PROFILE",
]
NAMES = ("validate", "show", "replay", "trace", "bench", "wireshark-profile")
"""The command of each entry of ``COMMANDS``, so that a run imports only its own module."""


def add_manifest_args(parser: argparse.ArgumentParser) -> None:
    """``-f PATH`` (repeatable): manifest files or directories, ``-`` for stdin (kubectl)."""
    parser.add_argument("-f", "--filename", dest="manifests", action="append", required=True,
                        metavar="PATH", help="manifest file or directory (repeatable; - reads "
                        "stdin). Without a kemu Cluster document or Node objects the cluster "
                        "has 3 nodes node1..node3")


def load(args: argparse.Namespace) -> Cluster:
    from kemu.control.cluster import load_cluster

    return load_cluster(*args.manifests)


def _validate(args: argparse.Namespace) -> int:
    cluster = load(args)
    counts = [(len(cluster.nodes), "node"), (len(cluster.pods), "pod"),
              (len(cluster.services), "service"),
              (len(cluster.all_endpoint_slices()), "endpoint slice"),
              (len(cluster.policies), "network policy")]
    text = ", ".join(f"{n} {_plural(word, n)}" for n, word in counts)
    if cluster.ignored:
        text += f" (ignored: {len(cluster.ignored)} {_plural('object', len(cluster.ignored))})"
    print(f"ok: {text}")
    for line in cluster.ignored:
        print(f"  {line}")
    return EXIT_OK


def _plural(word: str, n: int) -> str:
    if n == 1:
        return word
    return word[:-1] + "ies" if word.endswith("policy") else word + "s"


VALIDATE = Command("validate", "check manifests; print what the emulated cluster contains",
                   add_manifest_args, _validate)


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and the "
                         "active data-plane backend")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        try:
            from kemu._backend import BACKEND
        except ImportError:  # the data plane is not built/installed
            BACKEND = "unavailable"
        print(f"kemu {__version__} (backend: {BACKEND})")
        parser.exit(EXIT_OK)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``only`` of that command alone (start-up time:
    ``kemu replay`` need not import ``kemu bench``)."""
    parser = argparse.ArgumentParser(
        prog="kemu", description="Packet-level emulator of Kubernetes cluster networking.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in zip(NAMES, COMMANDS, strict=True):
        if only is not None and name != only:
            continue
        module, _, attr = entry.partition(":")
        cmd: Command = getattr(importlib.import_module(module), attr)
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run kemu; returns the exit code (the console script exits with it)."""
    # kemu does no linear algebra: one BLAS thread (numpy's OpenBLAS otherwise starts one
    # per core at import, and they spin for a while, taking CPU from replay's threads)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(words[0] if words and words[0] in NAMES else None)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help, --version, usage errors
            return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
        if getattr(args, "run", None) is None:
            parser.print_usage(sys.stderr)
            print("kemu: error: a command is required", file=sys.stderr)
            return EXIT_USAGE
        return int(args.run(args))
    except KeyboardInterrupt:
        print("kemu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KemuError as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            print(f"kemu: {line}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `kemu show ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
