"""kemu: a packet-level emulator of Kubernetes cluster networking.

Layers, imports pointing one way: ``kemu.control`` (the cluster model from manifests) ->
``kemu.compiler`` (flat tables) -> ``kemu.dataplane`` (the batch datapath, Cython and pure
Python) -> ``kemu.io`` and ``kemu.frontend`` (captures, flow logs, traces, CLI).
"""

__version__ = "0.1.0"
