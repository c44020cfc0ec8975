"""kemu: a packet-level emulator of Kubernetes cluster networking.

Packages: ``kemu.control`` (the cluster model from manifests) and ``kemu.dataplane`` (the
batch datapath: the Cython ``kemu._fastpath`` and its pure-Python reference), which never
import each other; ``kemu.compiler`` (the model compiled into the dataplane's flat tables);
``kemu.io`` (captures, pcapng, flow logs); ``kemu.frontend`` (the engine, the Python API,
replay, traces, the CLI); ``kemu.bench`` (``kemu bench``). Imports point one way, each
package importing only from those before it; ``tests/test_layers.py`` keeps it so.

The Python API in one line: ``kemu.load(paths...)`` returns an ``EmulatedCluster`` whose
``send()`` traces a packet and ``replay()`` runs a capture (see ``kemu.frontend.api``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kemu._version import __version__

__all__ = ["EmulatedCluster", "load", "__version__"]

if TYPE_CHECKING:
    from kemu.frontend.api import EmulatedCluster, load


def __getattr__(name: str) -> Any:  # lazy: `import kemu` stays cheap for the CLI
    if name in ("load", "EmulatedCluster"):
        from kemu.frontend import api

        return getattr(api, name)
    raise AttributeError(f"module 'kemu' has no attribute {name!r}")
