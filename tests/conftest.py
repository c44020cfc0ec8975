"""Shared fixtures: the data-plane backends (every datapath test runs on each) and clusters.

Like multidict's facade: ``backend`` is parametrized over every implementation this build
has (``cython`` and ``python``; only ``python`` when KEMU_NO_EXTENSIONS=1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kemu._backend import IMPLEMENTATIONS

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
