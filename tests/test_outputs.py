"""A user's data is never lost and a traceback never shown (``kemu.io.outputs``,
``kemu.io.compressed``, ``kemu.frontend.cli.main``).

An output that is one of the inputs is refused before anything is read (same path, symbolic
or hard link, a manifest file, two outputs on one file), with the input unchanged byte for
byte; an output that cannot be written is refused before the work starts; a write that fails
midway (ENOSPC, EIO), SIGTERM, SIGHUP or Ctrl-C leave nothing behind; an unexpected exception
is one line and exit 70 (``--debug``: the traceback); compressed captures replay to the very
bytes of the uncompressed one.
"""

from __future__ import annotations

import bz2
import dataclasses
import errno
import gzip
import hashlib
import lzma
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kemu.errors import OutputError
from kemu.frontend.cli import main
from kemu.io.outputs import AtomicFile, check_outputs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster"
CAPTURE = ROOT / "examples" / "capture.pcap"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding in.pcap (the example capture), a copy of the example cluster in
    cluster/, a symbolic link sym.pcap and a hard link hard.pcap to in.pcap; the current
    directory."""
    shutil.copy(CAPTURE, tmp_path / "in.pcap")
    shutil.copytree(EXAMPLE, tmp_path / "cluster")
    (tmp_path / "sym.pcap").symlink_to("in.pcap")
    os.link(tmp_path / "in.pcap", tmp_path / "hard.pcap")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ----------------------------------------------------------------------------- refusals
REFUSALS = [
    (["-w", "in.pcap"],
     "kemu: -w in.pcap is the input capture (-r in.pcap); refusing to overwrite it"),
    (["-w", "./in.pcap"],
     "kemu: -w ./in.pcap is the input capture (-r in.pcap); refusing to overwrite it"),
    (["-w", "sym.pcap"],
     "kemu: -w sym.pcap is the input capture (-r in.pcap), through a symbolic link; "
     "refusing to overwrite it"),
    (["-w", "hard.pcap"],
     "kemu: -w hard.pcap is the input capture (-r in.pcap), through a hard link; "
     "refusing to overwrite it"),
    (["--flows", "in.pcap"],
     "kemu: --flows in.pcap is the input capture (-r in.pcap); refusing to overwrite it"),
    (["-w", "cluster/backend.yaml"],
     "kemu: -w cluster/backend.yaml is an input manifest (-f cluster); refusing to overwrite it"),
    (["-w", "o.pcapng", "--flows", "o.pcapng"],
     "kemu: -w o.pcapng and --flows o.pcapng are the same file; give each output a file of "
     "its own"),
    (["-w", "o.x", "--flows", "./o.x"],
     "kemu: -w o.x and --flows ./o.x are the same file; give each output a file of its own"),
]


@pytest.mark.parametrize(("options", "message"), REFUSALS,
                         ids=["same", "dot-slash", "symlink", "hardlink", "flows", "manifest",
                              "w-is-flows", "w-is-flows-dot"])
def test_an_output_is_never_an_input(work: Path, capsys: pytest.CaptureFixture,
                                     options: list[str], message: str) -> None:
    before = {p.name: _md5(p) for p in work.rglob("*") if p.is_file()}
    listing = _listing(work)
    assert main(["replay", "-f", "cluster", "-r", "in.pcap", *options]) == 2
    err = capsys.readouterr().err
    assert err == message + "\n"
    assert {p.name: _md5(p) for p in work.rglob("*") if p.is_file()} == before
    assert _listing(work) == listing


def test_a_manifest_named_as_a_file_and_the_capture_through_a_link(
        work: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "-f", "cluster/backend.yaml", "-r", "sym.pcap", "--flows",
                 "cluster/backend.yaml"]) == 2
    assert capsys.readouterr().err == ("kemu: --flows cluster/backend.yaml is an input manifest "
                                       "(-f cluster/backend.yaml); refusing to overwrite it\n")
    assert main(["replay", "-f", "cluster", "-r", "sym.pcap", "-w", "in.pcap"]) == 2
    assert capsys.readouterr().err == ("kemu: -w in.pcap is the input capture (-r sym.pcap), "
                                       "through a symbolic link; refusing to overwrite it\n")
    assert _md5(work / "in.pcap") == _md5(CAPTURE)


def test_refused_before_anything_is_read(work: Path, capsys: pytest.CaptureFixture) -> None:
    """Invalid manifests and an unreadable capture are not even looked at."""
    (work / "cluster" / "broken.yaml").write_text("kind: [unclosed\n")
    (work / "in.pcap").write_bytes(b"not a capture")
    assert main(["replay", "-f", "cluster", "-r", "in.pcap", "-w", "hard.pcap"]) == 2
    assert "refusing to overwrite it" in capsys.readouterr().err
    assert (work / "in.pcap").read_bytes() == b"not a capture"


def test_the_python_api_refuses_too(work: Path) -> None:
    import kemu

    emu = kemu.load(EXAMPLE, backend="python", respond=False)
    with pytest.raises(OutputError, match=r"^out=sym.pcap is the input capture "
                       r"\(capture=in.pcap\), through a symbolic link; refusing"):
        emu.replay("in.pcap", "sym.pcap")
    with pytest.raises(OutputError, match="are the same file"):
        emu.replay("in.pcap", "o.pcapng", "o.pcapng")
    assert _md5(work / "in.pcap") == _md5(CAPTURE)
    assert "o.pcapng" not in _listing(work)


def test_check_outputs_takes_none_and_stdin(work: Path) -> None:
    check_outputs({"-w": None, "--flows": "new.jsonl"}, {"a manifest (-f -)": ["-"],
                                                         "nothing": None})


# ----------------------------------------------------------------------------- unwritable
UNWRITABLE = [
    (["-w", "/proc/x.pcapng"], "kemu: -w /proc/x.pcapng: cannot create a file in /proc: "),
    (["--flows", "missing/x.jsonl"], "kemu: --flows missing/x.jsonl: directory missing does "
                                     "not exist"),
    (["--flows", "in.pcap/x.jsonl"], "kemu: --flows in.pcap/x.jsonl: in.pcap is not a "
                                     "directory"),
    (["-w", "cluster"], "kemu: -w cluster: is a directory; give a file name"),
    (["-w", "/dev/null"], "kemu: -w /dev/null: a character device; kemu writes its outputs as "
                          "regular files"),
]


@pytest.mark.parametrize(("options", "start"), UNWRITABLE,
                         ids=["proc", "missing-dir", "file-as-dir", "directory", "device"])
def test_outputs_checked_before_the_work(work: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch, options: list[str],
                                         start: str) -> None:
    from kemu.frontend import cli

    def no_loading(args: object) -> None:
        raise AssertionError("manifests loaded before the outputs were checked")

    monkeypatch.setattr(cli, "load", no_loading)
    listing = _listing(work)
    assert main(["replay", "-f", "cluster", "-r", "in.pcap", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert _listing(work) == listing


def _in_namespace(script: str, *args: str) -> subprocess.CompletedProcess:
    """``script`` (sh, ``$1``... = ``args``) in a private mount namespace."""
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *args],
                          capture_output=True, text=True, env=ENV, timeout=300)


def _namespaces_work() -> bool:
    if not IS_ROOT or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(),
    reason="needs root and unshare -m (a private mount namespace) to mount a read-only or a "
           "tiny tmpfs")


@needs_namespaces
@pytest.mark.parametrize("option", ["-w", "--flows"])
def test_a_read_only_directory_is_refused_up_front(tmp_path: Path, option: str) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = _in_namespace('mount -t tmpfs -o ro tmpfs "$1" && exec "$2" -m kemu replay -f "$3" '
                         '-r "$4" "$5" "$1/out"', str(ro), sys.executable, str(EXAMPLE),
                         str(CAPTURE), option)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"kemu: {option} {ro}/out: cannot create a file in {ro}: "
                           "Read-only file system\n")


@pytest.mark.skipif(shutil.which("chattr") is None or not IS_ROOT,
                    reason="needs chattr and root (an immutable directory)")
def test_an_immutable_directory_is_refused_up_front(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    if subprocess.run(["chattr", "+i", str(frozen)], capture_output=True).returncode:
        pytest.skip("this file system has no immutable attribute")
    try:
        assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "-w",
                     str(frozen / "o.pcapng")]) == 2
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)
    assert capsys.readouterr().err == (f"kemu: -w {frozen}/o.pcapng: cannot create a file in "
                                       f"{frozen}: Operation not permitted\n")
    assert _listing(frozen) == []


# ----------------------------------------------------------------------------- write errors
def _big_capture(path: Path, repeats: int) -> Path:
    """The example's frames ``repeats`` times, 0.1 s apart each time (a classic pcap)."""
    from kemu.io.capture import read_capture

    src = read_capture(CAPTURE)
    frames = [(int(src.ts_ns[i]) // 1000,
               src.buf[int(src.offsets[i]):int(src.offsets[i]) + int(src.lengths[i])].tobytes())
              for i in range(len(src))]
    parts = [bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")]
    for k in range(repeats):
        for ts, data in frames:
            t = ts + k * 100_000
            parts.append(np.array([t // 10**6, t % 10**6, len(data), len(data)],
                                  "<u4").tobytes() + data)
    path.write_bytes(b"".join(parts))
    return path


@needs_namespaces
@pytest.mark.parametrize("option", ["-w", "--flows"])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, option: str) -> None:
    big = _big_capture(tmp_path / "big.pcap", 300)
    full = tmp_path / "full"
    full.mkdir()
    proc = _in_namespace('mount -t tmpfs -o size=256k tmpfs "$1" && "$2" -m kemu replay '
                         '-f "$3" -r "$4" "$5" "$1/out"; code=$?; ls -A "$1"; exit $code',
                         str(full), sys.executable, str(EXAMPLE), str(big), option)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"kemu: {full}/out: cannot write: No space left on device\n"
    assert proc.stdout == ""  # the listing of the full file system: empty


class _Failing:
    """A file whose writes fail with EIO."""

    def __init__(self, f: object) -> None:
        self.f = f

    def write(self, data: object) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    def close(self) -> None:
        self.f.close()  # type: ignore[attr-defined]


def test_a_failing_flow_log_is_one_line_and_leaves_nothing(work: Path,
                                                           capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from kemu.frontend import replay as R

    def failing(path: str, *args: object, **kwargs: object) -> AtomicFile:
        f = AtomicFile(path, *args, **kwargs)  # type: ignore[arg-type]
        f._f = _Failing(f._f)  # type: ignore[assignment]
        return f

    monkeypatch.setattr(R, "AtomicFile", failing)
    listing = _listing(work)
    assert main(["replay", "-f", "cluster", "-r", "in.pcap", "-w", "o.pcapng",
                 "--flows", "o.jsonl"]) == 2
    assert capsys.readouterr().err == "kemu: o.jsonl: cannot write: Input/output error\n"
    assert _listing(work) == listing


def test_a_failing_pcapng_is_one_line_and_leaves_nothing(work: Path,
                                                         capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from kemu.io import directio

    def full(self: object, view: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(directio.DirectFile, "_write_all", full)
    listing = _listing(work)
    assert main(["replay", "-f", "cluster", "-r", "in.pcap", "-w", "o.pcapng",
                 "--flows", "o.jsonl"]) == 2
    assert capsys.readouterr().err == "kemu: o.pcapng: cannot write: No space left on device\n"
    assert _listing(work) == listing


def test_atomic_file(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    with AtomicFile(path) as f:
        f.write("one\n")
        assert _listing(tmp_path) == [f"a.txt.part-{os.getpid()}"]
    assert path.read_text() == "one\n"
    with pytest.raises(KeyboardInterrupt), AtomicFile(path) as f:
        f.write("two\n")
        raise KeyboardInterrupt
    assert path.read_text() == "one\n" and _listing(tmp_path) == ["a.txt"]
    f = AtomicFile(tmp_path / "b.bin", "wb")
    f.write(b"x")
    del f  # dropped: removed
    assert _listing(tmp_path) == ["a.txt"]


# ----------------------------------------------------------------------------- signals
@pytest.mark.parametrize(("sig", "code", "line"),
                         [(signal.SIGTERM, 143, "kemu: interrupted by SIGTERM"),
                          (signal.SIGHUP, 129, "kemu: interrupted by SIGHUP"),
                          (signal.SIGINT, 130, "kemu: interrupted")],
                         ids=["TERM", "HUP", "INT"])
def test_signals_leave_nothing_behind(tmp_path: Path, sig: int, code: int, line: str) -> None:
    big = _big_capture(tmp_path / "big.pcap", 2000)
    out = tmp_path / "out"
    out.mkdir()
    # 4M frames: far longer than the test waits, so the signal always lands mid-replay (with
    # 100k frames a fast run could end just as it was sent, and exit 0)
    proc = subprocess.Popen([sys.executable, "-m", "kemu", "replay", "-f", str(EXAMPLE), "-r",
                             str(big), "--loop", "2000", "-w", str(out / "o.pcapng"), "--flows",
                             str(out / "o.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("o.*.part-*"))) < 2:  # both outputs open: replaying
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the replay never started"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the replay loop
        assert proc.poll() is None
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    assert stderr == line + "\n"
    assert stdout == ""
    assert _listing(out) == []


def test_main_restores_the_signal_handlers(capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from kemu.frontend import cli

    seen = []

    def run(args: object) -> int:
        seen.append((signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)))
        return 0

    monkeypatch.setattr(cli, "VALIDATE", dataclasses.replace(cli.VALIDATE, run=run))
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    assert main(["validate", "-f", str(EXAMPLE)]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before
    assert all(callable(h) for h in seen[0])  # handled while the command ran
    # nohup: an ignored SIGHUP stays ignored
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert main(["validate", "-f", str(EXAMPLE)]) == 0
        assert seen[1][1] == signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)


# ----------------------------------------------------------------------------- no traceback
@pytest.fixture
def broken_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    from kemu.frontend import replay_cmd

    def run(args: object) -> int:
        raise RuntimeError("the flux capacitor\nis empty")

    monkeypatch.setattr(replay_cmd, "REPLAY", dataclasses.replace(replay_cmd.REPLAY, run=run))


INTERNAL = ("kemu: internal error: RuntimeError: the flux capacitor; is empty (this is a bug "
            "in kemu; run again with --debug for the traceback and report it)\n")


def test_an_unexpected_exception_is_one_line_and_exit_70(broken_replay: None,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE)]) == 70
    assert capsys.readouterr().err == INTERNAL


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_prints_the_traceback(broken_replay: None, capsys: pytest.CaptureFixture,
                                    where: str) -> None:
    words = ["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE)]
    words = ["--debug", *words] if where == "before" else [*words, "--debug"]
    assert main(words) == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "RuntimeError: the flux capacitor" in err and "in run" in err


def test_an_unexpected_exception_in_a_subprocess(tmp_path: Path) -> None:
    """The same through ``python -m kemu``: a manifest the loader chokes on in a way it does
    not expect would be a traceback; here the error is injected with a sitecustomize."""
    (tmp_path / "sitecustomize.py").write_text(
        "import dataclasses\n"
        "from kemu.frontend import cli, show\n"
        "def run(args):\n"
        "    raise ZeroDivisionError('division by zero')\n"
        "show.SHOW = dataclasses.replace(show.SHOW, run=run)\n")
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "kemu", "show", "-f", str(EXAMPLE), "pods"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 70
    assert proc.stderr == ("kemu: internal error: ZeroDivisionError: division by zero (this is "
                           "a bug in kemu; run again with --debug for the traceback and report "
                           "it)\n")
    proc = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 70 and "Traceback" in proc.stderr


def test_kemu_errors_keep_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "-f", str(EXAMPLE), "-r", "/nonexistent.pcap"]) == 2
    assert capsys.readouterr().err == "kemu: /nonexistent.pcap: No such file or directory\n"


def test_bench_outputs_are_checked_before_it_runs(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--json", "/proc/b.json"]) == 2
    assert capsys.readouterr().err.startswith("kemu: --json /proc/b.json: cannot create")
    same = str(tmp_path / "b")
    assert main(["bench", "--json", same, "--plot", same]) == 2
    assert "are the same file" in capsys.readouterr().err
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------- compressed
COMPRESSORS = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_captures_replay_to_identical_outputs(tmp_path: Path, kind: str,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    packed = tmp_path / "capture.bin"  # the name says nothing: magic bytes decide
    packed.write_bytes(COMPRESSORS[kind](CAPTURE.read_bytes()))
    outputs = {}
    for name, cap in (("plain", CAPTURE), ("packed", packed)):
        assert main(["replay", "-f", str(EXAMPLE), "-r", str(cap), "--loop", "2",
                     "-w", str(tmp_path / f"{name}.pcapng"),
                     "--flows", str(tmp_path / f"{name}.jsonl")]) == 0
        outputs[name] = ((tmp_path / f"{name}.pcapng").read_bytes(),
                         (tmp_path / f"{name}.jsonl").read_bytes())
    assert outputs["packed"] == outputs["plain"]
    assert _listing(scratch) == []  # the decompressed copy is gone


@pytest.mark.parametrize(("content", "message"), [
    (lambda raw: gzip.compress(raw)[:300],
     "kemu: cut.gz: gzip data is truncated (the file ends inside the compressed stream)"),
    (lambda raw: gzip.compress(raw)[:10] + b"\x00" * 200,
     "kemu: cut.gz: gzip data is corrupt"),
    (lambda raw: b"\xfd7zXZ\x00" + b"\x01" * 100, "kemu: cut.gz: xz data is corrupt"),
    (lambda raw: b"BZh9" + b"\x01" * 100, "kemu: cut.gz: bzip2 data is corrupt"),
], ids=["truncated-gzip", "corrupt-gzip", "corrupt-xz", "corrupt-bzip2"])
def test_a_damaged_compressed_capture_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  content: Callable[[bytes], bytes],
                                                  message: str) -> None:
    cap = tmp_path / "cut.gz"
    cap.write_bytes(content(CAPTURE.read_bytes()))
    monkeypatch.chdir(tmp_path)
    assert main(["replay", "-f", str(EXAMPLE), "-r", "cut.gz", "-w", "o.pcapng"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert _listing(tmp_path) == ["cut.gz"]


def test_zstd_needs_its_package(tmp_path: Path, capsys: pytest.CaptureFixture,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails
    cap = tmp_path / "c.zst"
    cap.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 40)
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(cap)]) == 2
    assert capsys.readouterr().err == (f"kemu: {cap}: compressed with Zstandard: reading it "
                                       "needs the zstandard package (pip install zstandard)\n")


def test_zstd_with_its_package(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    from kemu.io.capture import read_capture

    cap = tmp_path / "c.zst"
    cap.write_bytes(zstandard.ZstdCompressor().compress(CAPTURE.read_bytes()))
    a, b = read_capture(cap), read_capture(CAPTURE)
    assert a.buf.tobytes() == b.buf.tobytes() and len(a) == len(b)


def test_a_full_tmpdir_while_decompressing_is_one_line(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from kemu.errors import CaptureError

    class Full:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self) -> None:
            pass

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **kw: Full())
    cap = tmp_path / "c.gz"
    cap.write_bytes(gzip.compress(CAPTURE.read_bytes()))
    from kemu.io.capture import read_capture

    with pytest.raises(CaptureError, match=r"c.gz: cannot decompress into .*: No space left"):
        read_capture(cap)
