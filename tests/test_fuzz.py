"""Mutation fuzzing of captures and manifests through every command: never a traceback.

Mutants (``tests/fuzz.py`` makes them) of these seeds go through ``kemu.frontend.cli.main``
in-process, each call under a time limit:

- captures: ``examples/capture.pcap``, two pcapng files made from it (``kemu replay -w``'s
  output, with many interfaces, comments and flags, and a plain one-interface file written
  by ``PcapngWriter``), and a sample of the capture corpus (``shared/corpus/tcpdump-tests``
  beside the clone, or ``$KEMU_CORPUS``; that test is skipped without it). Each mutant is
  replayed through ``examples/cluster`` to a pcapng and a flow log, sometimes with
  ``--respond``, ``--inject-at``, ``--unknown-at-gateway``, ``--capture-points``, and on the
  pure-Python backend for a share of them.
- manifests: every file of ``examples/cluster``, ``examples/dump``,
  ``tests/data/manifests/good`` and ``tests/data/manifests/bad``; one file of the seed's
  directory is mutated and the directory goes through ``validate``, ``show`` (pods, services,
  routes, dns), ``trace`` (between a pod and a service of the seed) and a short ``replay``.

Every call must return 0, 1 or 2 within the time limit with no exception escaping and no
"Traceback" on stderr; exit 2 prints ``kemu: ...`` lines (naming the capture, for captures)
and leaves neither output nor any ``OUT*.part*`` behind; after exit 0 the pcapng reads back
with kemu's reader (and, in a few iterations, with ``tshark`` when it is installed) and the
flow log is JSON per line. Failures are collected, not stopped at: each one names the seed,
the iteration and the mutations, and its files are kept under pytest's ``tmp_path``
(``failures/<test>-<iteration>/``) with the command line to rerun.

Settings (environment): ``KEMU_FUZZ_ITERATIONS`` mutants per capture test and a quarter of
that for manifests (each goes through seven commands); the default, 700, takes about a minute
for the whole file on a 2-core machine, on the compiled backend and on the pure-Python one
(``KEMU_NO_EXTENSIONS=1``) alike. ``KEMU_FUZZ_SEED`` (default 1) picks the mutations and the
corpus sample, ``KEMU_FUZZ_TIME_LIMIT`` is the limit per call in seconds (default 20). CI runs
the defaults; a longer session, with a new seed each time::

    KEMU_FUZZ_ITERATIONS=20000 KEMU_FUZZ_SEED=$RANDOM python -m pytest -q -s tests/test_fuzz.py

(about an hour on the compiled backend; ``-s`` prints the exit codes and the slowest call of
each test). A failing iteration is rerun alone with the same seed and
``KEMU_FUZZ_ONLY=<iteration>`` (its files are also kept, see above).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import fuzz
import pytest

from kemu.frontend.cli import main
from kemu.io.capture import read_capture
from kemu.io.pcapng import PcapngWriter

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "examples" / "cluster"
CAPTURE = ROOT / "examples" / "capture.pcap"
CORPUS = Path(os.environ.get("KEMU_CORPUS") or ROOT.parent / "shared" / "corpus"
              / "tcpdump-tests")
MANIFEST_SEEDS = [ROOT / "examples" / "cluster", ROOT / "examples" / "dump",
                  ROOT / "tests" / "data" / "manifests" / "good",
                  ROOT / "tests" / "data" / "manifests" / "bad"]

# measured to take about 60 s for the whole file on either backend (2 cores): these tiny
# captures cost kemu's fixed work per call (loading, compiling, threads, files), not the datapath
DEFAULT_ITERATIONS = 700
ITERATIONS = int(os.environ.get("KEMU_FUZZ_ITERATIONS") or DEFAULT_ITERATIONS)
MANIFEST_SHARE = 4  # a manifest mutant goes through 7 commands: ITERATIONS // 4 of them
SEED = int(os.environ.get("KEMU_FUZZ_SEED") or 1)
TIME_LIMIT = float(os.environ.get("KEMU_FUZZ_TIME_LIMIT") or 20)
ONLY = os.environ.get("KEMU_FUZZ_ONLY")
CORPUS_SAMPLE = 16  # corpus files per run (the seed picks them), each at most:
CORPUS_MAX_BYTES = 32 << 10
PYTHON_SHARE = 0.2  # of replays on the pure-Python backend (slow)
TSHARK = shutil.which("tshark")
TSHARK_CHECKS = 3  # per test, on the first successful replays


class Hang(BaseException):
    """A call went over the time limit (raised by SIGALRM in the main thread)."""


def _alarm(_signum: int, _frame: object) -> None:
    raise Hang


@dataclass
class Outcome:
    argv: list[str]
    rc: int | None = None
    out: str = ""
    err: str = ""
    escaped: str = ""  # an exception that escaped main, or the hang
    seconds: float = 0.0


def run(argv: list[str]) -> Outcome:
    """``kemu ARGV`` in this process, its output captured, under the time limit."""
    o = Outcome(list(argv))
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    # the last resort when a hang is in compiled code that SIGALRM cannot interrupt
    faulthandler.dump_traceback_later(TIME_LIMIT * 4 + 30, exit=True)
    start = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            o.rc = main(argv)
    except Hang:
        o.escaped = f"no answer in {TIME_LIMIT:g} s"
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - exactly what is looked for
        o.escaped = f"{type(exc).__name__} escaped: {str(exc)[:500]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)
    o.seconds = time.perf_counter() - start
    o.out, o.err = out.getvalue(), err.getvalue()
    return o


@dataclass
class Fuzz:
    """The failures of one fuzz test, and where their files are kept."""

    name: str
    tmp: Path
    failures: list[str] = field(default_factory=list)
    calls: int = 0
    codes: dict[int | None, int] = field(default_factory=dict)
    tshark_left: int = TSHARK_CHECKS
    slowest: tuple[float, str] = (0.0, "")

    def iterations(self) -> range:
        if ONLY is not None:
            return range(int(ONLY), int(ONLY) + 1)
        return range(ITERATIONS // MANIFEST_SHARE if self.name == "manifests" else ITERATIONS)

    def rng(self, i: int) -> random.Random:
        """The random numbers of iteration ``i`` alone (reruns with KEMU_FUZZ_ONLY agree)."""
        return random.Random(f"{SEED}/{self.name}/{i}")

    def check(self, o: Outcome, outdir: Path, outputs: list[Path], name: str = "") -> list[str]:
        """What is wrong with a call's outcome (``name``: a file exit 2 must name)."""
        self.calls += 1
        self.codes[o.rc] = self.codes.get(o.rc, 0) + 1
        if o.seconds > self.slowest[0]:
            self.slowest = (o.seconds, " ".join(o.argv[:1] + o.argv[-6:]))
        problems = []
        if o.escaped:
            problems.append(o.escaped)
        elif o.rc not in (0, 1, 2):
            problems.append(f"exit code {o.rc}")
        if "Traceback" in o.err:
            problems.append("a traceback on stderr")
        if "malformed capture" in o.err:  # the capture reader's last-resort net
            problems.append("the reader's last-resort error (a case its checks missed)")
        left = sorted(p.name for p in outdir.iterdir()) if outdir.is_dir() else []
        if o.rc in (0, 1):  # done (1: a negative answer, e.g. no frame placed): outputs whole
            stray = [n for n in left if n not in {p.name for p in outputs}]
            if stray:
                problems.append(f"files left beside the outputs: {stray}")
            problems += self.check_outputs(outputs)
        elif left:
            problems.append(f"exit {o.rc} left files behind: {left}")
        if o.rc == 2:
            lines = [line for line in o.err.splitlines() if line.strip()]
            if not lines or not all(line.startswith("kemu: ") for line in lines):
                problems.append("exit 2 without 'kemu: ...' lines on stderr")
            elif name and name not in o.err:
                problems.append(f"the error does not name {name}")
        return problems

    def check_outputs(self, outputs: list[Path]) -> list[str]:
        problems = []
        for path in outputs:
            if not path.exists():
                problems.append(f"exit 0 without {path.name}")
            elif path.suffix == ".pcapng":
                try:
                    read_capture(path)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{path.name} does not read back: {exc}")
                if TSHARK and self.tshark_left > 0:
                    self.tshark_left -= 1
                    r = subprocess.run([TSHARK, "-r", str(path), "-c", "1"], capture_output=True,
                                       text=True, timeout=60, check=False)
                    if r.returncode != 0:
                        problems.append(f"tshark cannot read {path.name}: {r.stderr.strip()}")
            elif path.suffix == ".jsonl":
                for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    try:
                        json.loads(line)
                    except ValueError:
                        problems.append(f"{path.name} line {n} is not JSON")
                        break
        return problems

    def fail(self, i: int, what: str, o: Outcome, problems: list[str], files: dict[str, Path]
             ) -> None:
        """Record a failure; keep ``files`` (name in the command -> file) for a rerun."""
        keep = self.tmp / "failures" / f"{self.name}-{i}"
        keep.mkdir(parents=True, exist_ok=True)
        argv = list(o.argv)
        for label, path in files.items():
            dest = keep / label
            if path.is_dir():
                shutil.copytree(path, dest, dirs_exist_ok=True)
            elif path.exists():
                shutil.copyfile(path, dest)
            argv = [str(dest) if a == str(path) else a for a in argv]
        (keep / "command.txt").write_text("kemu " + " ".join(argv) + "\n", encoding="utf-8")
        self.failures.append(
            f"seed {SEED} iteration {i} ({self.name}): {what}\n"
            f"    kemu {' '.join(argv)}\n    exit {o.rc}: {'; '.join(problems)}\n"
            f"    stderr: {o.err.strip()[:300]!r}\n    kept in {keep}")

    def finish(self) -> None:
        codes = ", ".join(f"exit {k}: {v}" for k, v in sorted(self.codes.items(),
                                                               key=lambda kv: str(kv[0])))
        print(f"\n{self.name}: seed {SEED}, {len(self.iterations())} mutants, {self.calls} "
              f"calls ({codes}); slowest {self.slowest[0]:.2f} s ({self.slowest[1]}); "
              f"{len(self.failures)} failures")
        assert not self.failures, f"{len(self.failures)} failing cases:\n" + "\n".join(
            self.failures[:30])


# -- captures ---------------------------------------------------------------------------------

def _quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


@pytest.fixture(scope="module")
def capture_seeds(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    """(name, bytes) of the example capture and of two pcapng files made from it."""
    d = tmp_path_factory.mktemp("seeds")
    hops = d / "hops.pcapng"
    assert _quiet(["replay", "-f", str(CLUSTER), "-r", str(CAPTURE), "-w", str(hops),
                   "--respond"]) == 0
    plain = d / "plain.pcapng"
    cap = read_capture(CAPTURE)
    with PcapngWriter(plain, comment="one interface") as w:
        eth0 = w.add_interface("eth0", "capture.pcap")
        for k in range(len(cap)):
            w.write_packet(eth0, int(cap.ts_ns[k]), cap.frame(k),
                           comment="frame" if k % 2 else None)
    return [("examples/capture.pcap", CAPTURE.read_bytes()),
            ("replay -w of examples/capture.pcap", hops.read_bytes()),
            ("PcapngWriter copy of examples/capture.pcap", plain.read_bytes())]


def corpus_sample() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    files = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.name != "LICENSE"
                   and p.stat().st_size <= CORPUS_MAX_BYTES)
    return random.Random(SEED).sample(files, min(CORPUS_SAMPLE, len(files)))


def replay_options(rng: random.Random) -> list[str]:
    opts = []
    if rng.random() < 0.25:
        opts.append("--respond")
    if rng.random() < 0.15:
        opts += ["--inject-at", rng.choice(("node1/eth0", "shop/redis-0/eth0"))]
    if rng.random() < 0.2:
        opts.append("--unknown-at-gateway")
    if rng.random() < 0.2:
        opts += ["--capture-points", rng.choice(("drops", "pods"))]
    if rng.random() < 0.1:
        opts += ["--flow-format", "kemu"]
    if rng.random() < 0.05:
        opts += ["--loop", "2"]
    if rng.random() < PYTHON_SHARE:
        opts += ["--backend", "python"]
    return opts


def fuzz_captures(fz: Fuzz, seeds: list[tuple[str, bytes]]) -> None:
    work = fz.tmp / "work"
    for i in fz.iterations():
        rng = fz.rng(i)
        name, seed = rng.choice(seeds)
        _other, other = rng.choice(seeds)
        data, what = fuzz.mutate_capture(rng, seed, other)
        shutil.rmtree(work, ignore_errors=True)
        (work / "out").mkdir(parents=True)
        mutant = work / ("mutant.pcapng" if fuzz.capture_format(seed) == "pcapng"
                         else "mutant.pcap")
        mutant.write_bytes(data)
        out, flows = work / "out" / "OUT.pcapng", work / "out" / "OUT.jsonl"
        argv = ["replay", "-f", str(CLUSTER), "-r", str(mutant), "-w", str(out),
                "--flows", str(flows), *replay_options(rng)]
        o = run(argv)
        problems = fz.check(o, work / "out", [out, flows], name=str(mutant))
        if problems:
            fz.fail(i, f"{name}: {what}", o, problems, {mutant.name: mutant})
    fz.finish()


def test_fuzz_captures(capture_seeds: list[tuple[str, bytes]], tmp_path: Path) -> None:
    fuzz_captures(Fuzz("captures", tmp_path), capture_seeds)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"capture corpus not found at {CORPUS} "
                    "(set KEMU_CORPUS)")
def test_fuzz_corpus_captures(capture_seeds: list[tuple[str, bytes]], tmp_path: Path) -> None:
    seeds = [(p.name, p.read_bytes()) for p in corpus_sample()]
    fuzz_captures(Fuzz("corpus", tmp_path), seeds + capture_seeds[:1])


# -- manifests --------------------------------------------------------------------------------

@dataclass
class ManifestSeed:
    folder: Path
    files: list[Path]  # every file of the folder (not recursive), manifest or not
    source: str  # -S and -D of trace: a pod and a service (or pod) of the seed
    destination: str


def _trace_names(folder: Path) -> tuple[str, str]:
    from kemu.control.cluster import load_cluster
    from kemu.errors import KemuError

    try:
        cluster = load_cluster(folder)
    except KemuError:  # the bad seeds: names they would have
        return "default/a", "default/one"
    pod = next(p for p in cluster.pods if not p.host_network)
    svc = next((s for s in cluster.services if s.cluster_ip is not None), None)
    return pod.key, svc.key if svc else pod.key


@pytest.fixture(scope="module")
def manifest_seeds() -> list[ManifestSeed]:
    out = []
    for folder in MANIFEST_SEEDS:
        src, dst = _trace_names(folder)
        out.append(ManifestSeed(folder, sorted(p for p in folder.iterdir() if p.is_file()),
                                src, dst))
    return out


def test_manifest_seeds_are_known() -> None:
    """The fuzzer's seeds exist (a moved example would silently shrink the fuzzing)."""
    for folder in MANIFEST_SEEDS:
        assert any(p.suffix in (".yaml", ".json") for p in folder.iterdir()), folder


def mutate_manifest(rng: random.Random, path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    as_json = path.suffix == ".json"
    docs = fuzz.load_documents(data, as_json)
    if docs is None or rng.random() < 0.25:
        return fuzz.mutate_text(rng, data)
    raw = fuzz.Raw()
    mutated, what = fuzz.mutate_documents(rng, docs, raw, yaml_ok=not as_json)
    return fuzz.dump(mutated, raw, as_json).encode("utf-8", "surrogatepass"), what


def test_fuzz_manifests(manifest_seeds: list[ManifestSeed], tmp_path: Path) -> None:
    fz = Fuzz("manifests", tmp_path)
    work = tmp_path / "work"
    for i in fz.iterations():
        rng = fz.rng(i)
        seed = rng.choice(manifest_seeds)
        targets = [p for p in seed.files if p.suffix in (".yaml", ".yml", ".json")]
        target = rng.choice(targets)
        data, what = mutate_manifest(rng, target)
        what = f"{target.relative_to(ROOT)}: {what}"
        shutil.rmtree(work, ignore_errors=True)
        folder = work / "manifests"
        folder.mkdir(parents=True)
        (work / "out").mkdir()
        for p in seed.files:
            (folder / p.name).write_bytes(data if p == target else p.read_bytes())
        out, flows = work / "out" / "OUT.pcapng", work / "out" / "OUT.jsonl"
        f = ["-f", str(folder)]
        backend = ["--backend", "python"] if rng.random() < PYTHON_SHARE else []
        commands = [
            ["validate", *f],
            ["show", *f, "pods", "-A"],
            ["show", *f, "services", "-A"],
            ["show", *f, "routes"],
            ["show", *f, "dns", "-A"],
            ["trace", *f, "-S", seed.source, "-D", seed.destination, *backend],
            ["replay", *f, "-r", str(CAPTURE), "-w", str(out), "--flows", str(flows),
             "--limit", "4", *backend],
        ]
        for argv in commands:
            o = run(argv)
            outputs = [out, flows] if argv[0] == "replay" else []
            problems = fz.check(o, work / "out", outputs)
            if problems:
                fz.fail(i, what, o, problems, {"manifests": folder})
                break
            for p in outputs:
                p.unlink(missing_ok=True)
    fz.finish()


def test_run_reports_an_escaping_exception_and_a_hang(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """The harness itself: an exception out of main and a call over the limit are failures."""
    import test_fuzz as me

    def boom(_argv: list[str]) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(me, "main", boom)
    fz = Fuzz("self", tmp_path)
    assert fz.check(run(["validate"]), tmp_path, []) == ["RuntimeError escaped: boom"]

    def slow(_argv: list[str]) -> int:
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(me, "main", slow)
    monkeypatch.setattr(me, "TIME_LIMIT", 0.2)
    assert fz.check(run(["validate"]), tmp_path, [])[0].startswith("no answer in 0.2 s")
    (tmp_path / "OUT.pcapng.part-1").write_bytes(b"")
    monkeypatch.setattr(me, "main", lambda _argv: print("kemu: no", file=sys.stderr) or 2)
    assert fz.check(run(["validate"]), tmp_path, []) == [
        "exit 2 left files behind: ['OUT.pcapng.part-1']"]
