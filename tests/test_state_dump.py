"""Data-plane state (FDBs, conntrack, neighbours, affinity) dumps to deterministic text, the
same on every backend, and ``reset`` empties it."""

from __future__ import annotations

import os
from pathlib import Path

import kemu

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "state-after-example-replay.txt"


def test_state_golden_after_replay(backend: str) -> None:
    emu = kemu.load(ROOT / "examples" / "cluster", backend=backend, respond=False)
    emu.replay(ROOT / "examples" / "capture.pcap")
    text = emu.dump()
    if os.environ.get("KEMU_UPDATE_GOLDEN") and backend == "python":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert "ct node1 TCP" in text and "fdb node1/cbr0" in text


def test_reset_forgets_everything_but_static_neighbours(backend: str) -> None:
    emu = kemu.load(ROOT / "examples" / "cluster", backend=backend, respond=False)
    fresh = emu.dump()
    emu.replay(ROOT / "examples" / "capture.pcap")
    assert emu.dump() != fresh
    emu.reset()
    assert emu.dump() == fresh
    assert all(line.startswith("neigh ") for line in fresh.splitlines())
