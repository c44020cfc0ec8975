"""kemu: a packet-level emulator of Kubernetes cluster networking.

Layers, imports pointing one way: ``kemu.control`` (the cluster model from manifests) ->
``kemu.compiler`` (flat tables) -> ``kemu.dataplane`` (the batch datapath: the Cython
``kemu._fastpath`` and its pure-Python reference) -> ``kemu.io`` (captures, pcapng, flow logs)
and ``kemu.frontend`` (the engine, the Python API, replay, traces, the CLI).

The Python API in one line: ``kemu.load(paths...)`` returns an ``EmulatedCluster`` whose
``send()`` traces a packet and ``replay()`` runs a capture (see ``kemu.frontend.api``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EmulatedCluster", "load", "__version__"]

if TYPE_CHECKING:
    from kemu.frontend.api import EmulatedCluster, load


def __getattr__(name: str) -> Any:  # lazy: `import kemu` stays cheap for the CLI
    if name in ("load", "EmulatedCluster"):
        from kemu.frontend import api

        return getattr(api, name)
    raise AttributeError(f"module 'kemu' has no attribute {name!r}")
