"""The ``kemu`` command line: argparse, a table of subcommands, exit codes.

Each subcommand is a ``Command`` (name, help, ``configure(parser)``, ``run(args) -> int``)
exported by some module; ``COMMANDS`` lists them as ``"module:attribute"`` in ``--help`` order.
To add one (``replay``, ``trace``, ``bench``), write the module and append it to ``COMMANDS``;
keep heavy imports inside ``run`` so ``kemu --help`` stays fast.

Exit codes (kubectl/tshark conventions): 0 ok; 1 a negative answer (a trace that drops, ...);
2 usage error, unreadable input, invalid manifests, or an output that cannot be written;
70 an internal error (``EX_SOFTWARE``: a bug in kemu); 130 interrupted (Ctrl-C), 143 and 129
stopped by SIGTERM and SIGHUP, which are handled as Ctrl-C is (outputs removed). A
``KemuError`` prints ``kemu: <message>`` on stderr, one line per problem, never a traceback;
any other exception prints one line too, unless ``--debug`` asks for the traceback.

Files: before a command runs, every file it would write (``OUTPUTS``) is checked against its
inputs (``-r``, ``-f``) and for writability (``kemu.io.outputs.check_outputs``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from kemu._version import __version__
from kemu.errors import KemuError

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE: an internal error


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
    "kemu.frontend.dig_cmd:DIG",
    "kemu.bench.command:BENCH",
    "kemu.frontend.wireshark_cmd:WIRESHARK_PROFILE",
    "kemu.frontend.policy_cmd:POLICY",
    "kemu.frontend.topology_cmd:TOPOLOGY",
    "kemu.frontend.tour_cmd:TOUR",
]
NAMES = ("validate", "show", "replay", "trace", "dig", "bench", "wireshark-profile",
         "policy", "topology", "tour")
"""The command of each entry of ``COMMANDS``, so that a run imports only its own module."""
OUTPUTS: dict[str, dict[str, str]] = {
    "replay": {"-w": "out", "--flows": "flows"},
    "dig": {"-w": "out"},
    "bench": {"--json": "json_out", "--plot": "plot"},
    "topology": {"-o": "out"},
}
"""The files each command writes: option -> attribute of its arguments (``trace``, ``show``
and ``validate`` write to standard output only). Checked before the command runs: none is
an input of it (``-r``, every manifest file of ``-f``), none another, each can be created."""
GLOBAL_FLAGS = ("--debug",)


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
        if line not in cluster.said:  # ignored kinds are said once per kind, as warnings
            print(f"  {line}")
    warn(cluster)
    return EXIT_OK


def warn(cluster: Cluster) -> None:
    """Say on stderr, once each, what the manifests ask for that kemu does not model (the
    cluster's notices; silence means modelled). ``validate``, and ``trace`` and ``replay``
    once their work is done (an error that stops them stays their one line)."""
    for notice in cluster.notices:
        print(f"kemu: warning: {notice}", file=sys.stderr)


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
    parser.add_argument("--debug", action="store_true",
                        help="on an internal error, print the traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in zip(NAMES, COMMANDS, strict=True):
        if only is not None and name != only:
            continue
        module, _, attr = entry.partition(":")
        cmd: Command = getattr(importlib.import_module(module), attr)
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        # also after the command (kemu replay ... --debug); absent unless given there
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
        p.set_defaults(run=cmd.run)
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread where Ctrl-C raises KeyboardInterrupt, so
    that the same cleanup runs (partial outputs removed)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """While inside: SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (the
    first one only: one arriving during the cleanup does not cut it short). Signals that are
    ignored or handled already (``nohup``: SIGHUP ignored) are left so. The previous handlers
    come back on leaving: the Python API is not affected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _command_word(words: Sequence[str]) -> str | None:
    """The first word that is not a global flag (``kemu --debug replay``: ``replay``)."""
    return next((w for w in words if w not in GLOBAL_FLAGS), None)


def _check_files(args: argparse.Namespace) -> None:
    """Refuse the command's outputs (``OUTPUTS``) that are inputs or cannot be written."""
    wanted = OUTPUTS.get(getattr(args, "command", None) or "")
    outputs = {opt: getattr(args, attr, None) for opt, attr in (wanted or {}).items()}
    if all(path is None for path in outputs.values()):
        return
    from kemu.io.outputs import check_outputs

    inputs: dict[str, Any] = {}
    if getattr(args, "capture", None):
        inputs[f"the input capture (-r {args.capture})"] = args.capture
    for source in getattr(args, "manifests", None) or []:
        from kemu.control.manifests import files

        inputs[f"an input manifest (-f {source})"] = files(source)
    check_outputs(outputs, inputs)


def _traceback() -> None:
    import traceback  # only when asked for: start-up time

    traceback.print_exc()


def _one_line(err: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run kemu; returns the exit code (the console script exits with it)."""
    # kemu does no linear algebra: one BLAS thread (numpy's OpenBLAS otherwise starts one
    # per core at import, and they spin for a while, taking CPU from replay's threads)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in (words[:words.index("--")] if "--" in words else words)
    try:
        with signals_as_interrupts():
            return _run(words)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        if signum == signal.SIGINT:
            print("kemu: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"kemu: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except KemuError as err:
        if debug:
            _traceback()
        for line in str(err).splitlines() or [type(err).__name__]:
            print(f"kemu: {line}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `kemu show ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as err:  # the system refused something (a disk full, ...): not a bug
        if debug:
            _traceback()
        where = f"{err.filename}: " if err.filename else ""
        print(f"kemu: {where}{err.strerror or _one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - never a traceback, unless asked for
        if debug:
            _traceback()
            print("kemu: internal error (this is a bug in kemu; please report it with the "
                  "traceback above)", file=sys.stderr)
        else:
            print(f"kemu: internal error: {_one_line(err)} (this is a bug in kemu; run again "
                  "with --debug for the traceback and report it)", file=sys.stderr)
        return EXIT_SOFTWARE


def _run(words: list[str]) -> int:
    command = _command_word(words)
    parser = build_parser(command if command in NAMES else None)
    try:
        args = parser.parse_args(words)
    except SystemExit as exit_:  # --help, --version, usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if getattr(args, "run", None) is None:
        parser.print_usage(sys.stderr)
        print("kemu: error: a command is required", file=sys.stderr)
        return EXIT_USAGE
    _check_files(args)
    return int(args.run(args))
