"""Every capture of tcpdump's test corpus replays through the example cluster (exit 1 with a
hint when none of its frames could be placed) or is refused with exit code 2 and a message
naming it: never a traceback, a crash or a partial output."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("KEMU_CORPUS", ROOT.parent / "shared" / "corpus" / "tcpdump-tests"))
FILES = sorted(p for p in CORPUS.glob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))
pytestmark = pytest.mark.skipif(not FILES, reason=f"corpus not found at {CORPUS}")


def _alarm(_sig, _frame):  # noqa: ANN001
    raise TimeoutError("replay took more than 30 s")


def test_corpus_replays_or_is_refused(tmp_path: Path, backend: str,
                                      capsys: pytest.CaptureFixture) -> None:
    outcomes = {0: 0, 1: 0, 2: 0}
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for cap in FILES:
            out = tmp_path / "out.pcapng"
            signal.alarm(30)
            rc = main(["replay", "-f", str(ROOT / "examples" / "cluster"), "-r", str(cap),
                       "-w", str(out), "--backend", backend, "--json", "--respond"])
            signal.alarm(0)
            captured = capsys.readouterr()
            assert rc in (0, 1, 2), (cap.name, rc, captured.err)
            outcomes[rc] += 1
            if rc == 2:
                assert cap.name in captured.err, captured.err
                assert "Traceback" not in captured.err
                assert not out.exists()
            else:
                if rc == 1:
                    assert captured.err.startswith(f"kemu: no frame of {cap} could be placed")
                assert out.exists()
                out.unlink()
            assert not list(tmp_path.glob("*.part-*")), cap.name
    finally:
        signal.signal(signal.SIGALRM, old)
    print(f"corpus: {outcomes[0]} replayed, {outcomes[1]} with no frame placed, "
          f"{outcomes[2]} refused")
    assert outcomes[0] + outcomes[1] > len(FILES) // 2
