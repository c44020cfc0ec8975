"""Which data-plane implementation is active, and that a normal install really compiled one.

A silent fallback to the pure-Python reference must not pass CI: unless KEMU_NO_EXTENSIONS
forces the reference, the Cython fast path has to be the active backend.
"""

from __future__ import annotations

import os
import subprocess
import sys

from kemu import _backend
from kemu.dataplane import reference


def test_compiled_backend_active_after_install() -> None:
    if _backend.NO_EXTENSIONS:
        assert _backend.BACKEND == "python"
        assert set(_backend.IMPLEMENTATIONS) == {"python"}
        return
    assert _backend.BACKEND == "cython", "kemu._fastpath did not import: build it"
    assert set(_backend.IMPLEMENTATIONS) == {"cython", "python"}
    assert _backend.impl.__name__ == "kemu._fastpath"


def test_both_implementations_export_the_same_api() -> None:
    for mod in _backend.IMPLEMENTATIONS.values():
        for name in ("Datapath", "Lpm"):
            assert hasattr(mod, name), (mod.__name__, name)
        for method in ("load", "process", "reset", "state", "cleanup", "neigh_set",
                       "neigh_lookup"):
            assert hasattr(mod.Datapath, method), (mod.__name__, method)
    assert _backend.IMPLEMENTATIONS["python"] is reference


def test_environment_variable_forces_the_reference() -> None:
    env = dict(os.environ, KEMU_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-m", "kemu", "--version"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("(backend: python)")
