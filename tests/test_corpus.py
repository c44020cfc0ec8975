"""Every capture of the real-world corpus is either read or refused cleanly.

The corpus (tcpdump's test captures: many link types, many malformed on purpose) lives in
``shared/corpus/tcpdump-tests`` beside the clone, or where ``KEMU_CORPUS`` points. For each file
``read_capture`` + ``to_ethernet`` must give consistent arrays or raise a ``CaptureError`` that
names the file: never another exception, a hang or a crash. Chunked reading must agree with
whole-file reading. A summary (read, refused by reason, damage by reason) is printed.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from kemu.errors import CaptureError
from kemu.io.capture import SUPPORTED_LINKTYPES, Capture, iter_capture, read_capture, to_ethernet

CORPUS = Path(os.environ.get("KEMU_CORPUS") or
              Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "tcpdump-tests")

if not CORPUS.is_dir():
    pytest.skip(f"capture corpus not found at {CORPUS}", allow_module_level=True)

FILES = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.name != "LICENSE")
PER_FILE_SECONDS = 20


@pytest.fixture(autouse=True)
def _each_scanner(capture_scanner: str) -> str:
    """Every test here runs with the compiled and the pure record scanners."""
    return capture_scanner


class Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Timeout


def consistent(cap: Capture) -> str | None:
    """What is wrong with the arrays of ``cap``, or None."""
    n = len(cap)
    if any(len(a) != n for a in (cap.offsets, cap.lengths, cap.orig_lengths, cap.ts_ns,
                                 cap.linktypes, cap.frame_numbers)):
        return "arrays of different lengths"
    if cap.buf.dtype != np.uint8:
        return "buf is not uint8"
    if n:
        if (cap.lengths < 0).any() or (cap.offsets < 0).any():
            return "negative offset or length"
        if int((cap.offsets + cap.lengths.astype(np.int64)).max()) > len(cap.buf):
            return "frame past the end of buf"
        if not (np.diff(cap.frame_numbers) > 0).all() or cap.frame_numbers[0] < 1:
            return "frame numbers not increasing from 1"
        if not set(cap.linktypes.tolist()) <= SUPPORTED_LINKTYPES:
            return "unsupported link type in the arrays"
    return None


def same(a: list[Capture], b: Capture) -> bool:
    def cat(caps: list[Capture], name: str) -> list[int]:
        return [x for c in caps for x in getattr(c, name).tolist()]

    fields = ("lengths", "orig_lengths", "ts_ns", "linktypes", "frame_numbers")
    return (all(cat(a, f) == cat([b], f) for f in fields)
            and [c.frame(i) for c in a for i in range(len(c))]
            == [b.frame(i) for i in range(len(b))]
            and [d for c in a for d in c.damaged] == b.damaged)


def check_file(path: Path) -> tuple[str, str, list[str]]:
    """(outcome, detail, damage reasons); outcome is read, refused or FAILED."""
    try:
        raw = read_capture(path)
        cap = to_ethernet(raw)
    except CaptureError as err:
        text = str(err)
        if str(path) not in text:
            return "FAILED", f"CaptureError does not name the file: {text}", []
        if "malformed capture" in text:  # the reader's last-resort net: a bug to fix
            return "FAILED", text, []
        message = re.sub(r"^(: frame \d+)?( \(byte offset \d+\))?: ", "", text[len(str(path)):])
        reason = re.sub(r"\d+ bytes", "N bytes", message.split(";")[0])
        return "refused", reason, []
    problem = consistent(raw) or consistent(cap)
    if problem:
        return "FAILED", problem, []
    if not same(list(iter_capture(path, 3, chunk_bytes=1 << 16)), raw):
        return "FAILED", "iter_capture disagrees with read_capture", []
    return "read", f"{len(cap)} frames", [d.reason for d in cap.damaged]


def test_every_corpus_file_reads_or_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert FILES, f"no capture in {CORPUS}"
    use_alarm = hasattr(signal, "SIGALRM")
    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    outcomes: collections.Counter[str] = collections.Counter()
    refusals: collections.Counter[str] = collections.Counter()
    damage: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    frames = 0
    start = time.perf_counter()
    try:
        for path in FILES:
            if use_alarm:
                signal.alarm(PER_FILE_SECONDS)
            try:
                outcome, detail, reasons = check_file(path)
            except Timeout:
                outcome, detail, reasons = "FAILED", f"no answer in {PER_FILE_SECONDS} s", []
            except Exception as err:  # noqa: BLE001 - exactly what the test is looking for
                outcome, detail, reasons = "FAILED", f"{type(err).__name__}: {err}", []
            finally:
                if use_alarm:
                    signal.alarm(0)
            outcomes[outcome] += 1
            if outcome == "refused":
                refusals[detail] += 1
            elif outcome == "read":
                frames += int(detail.split()[0])
                damage.update(reasons)
            else:
                failures.append(f"{path.name}: {detail}")
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, old)
    elapsed = time.perf_counter() - start
    lines = [
        f"corpus {CORPUS}: {len(FILES)} files in {elapsed:.1f} s: {outcomes['read']} read "
        f"({frames} frames), {outcomes['refused']} refused, {outcomes['FAILED']} failed",
        "refused by reason:",
        *(f"  {count:4d}  {reason}" for reason, count in refusals.most_common()),
        "damaged records by reason (in files read):",
        *(f"  {count:4d}  {reason}" for reason, count in damage.most_common()),
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not failures, "\n".join(failures)
    assert outcomes["read"] > 0
