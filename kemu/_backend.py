"""Selects the data-plane implementation: the Cython ``kemu._fastpath`` or the pure reference.

The compiled module is used when it imports; ``KEMU_NO_EXTENSIONS=1`` (any non-empty value
other than ``0``) forces the pure-Python reference, as does a Python without the compiled
module. Both export the same names (see ``kemu.dataplane.reference``). ``BACKEND`` says which
one is active; ``kemu --version`` prints it.
"""

from __future__ import annotations

import os
import platform
from types import ModuleType

from kemu.dataplane import reference as _reference

NO_EXTENSIONS = os.environ.get("KEMU_NO_EXTENSIONS", "") not in ("", "0")

impl: ModuleType
if NO_EXTENSIONS or platform.python_implementation() != "CPython":
    impl, BACKEND = _reference, "python"
else:
    try:
        from kemu import _fastpath as impl  # type: ignore[no-redef]

        BACKEND = "cython"
    except ImportError:  # no compiler at install time
        impl, BACKEND = _reference, "python"

IMPLEMENTATIONS: dict[str, ModuleType] = {"python": _reference}
if BACKEND == "cython":
    IMPLEMENTATIONS["cython"] = impl
elif not NO_EXTENSIONS:
    try:
        from kemu import _fastpath as _compiled

        IMPLEMENTATIONS["cython"] = _compiled
    except ImportError:
        pass


def twins(pure: str) -> dict[str, ModuleType]:
    """Backend name -> module for functions that have a pure version in module ``pure``
    and a compiled twin of the same name in ``kemu._fastpath`` (when it is built)."""
    import sys

    out = {"python": sys.modules[pure]}
    if "cython" in IMPLEMENTATIONS:
        out["cython"] = IMPLEMENTATIONS["cython"]
    return out
