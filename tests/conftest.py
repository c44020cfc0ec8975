"""Shared fixtures: the data-plane backends (every datapath test runs on each) and clusters.

Like multidict's facade: ``backend`` is parametrized over every implementation this build
has (``cython`` and ``python``; only ``python`` when KEMU_NO_EXTENSIONS=1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kemu._backend import IMPLEMENTATIONS
from kemu.io import capture
from kemu.io.capture import scanners

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def scenario_path() -> Path:
    return DATA / "scenario"


@pytest.fixture
def example_path() -> Path:
    return ROOT / "examples" / "cluster"


@pytest.fixture(params=sorted(scanners()))
def capture_scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a capture test once per implementation of the record scanners."""
    monkeypatch.setattr(capture, "_scanner", scanners()[request.param])
    return request.param
