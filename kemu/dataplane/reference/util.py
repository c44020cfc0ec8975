"""The pure helpers of the util room: big-endian loads and stores of frame bytes, the
Internet checksum and its incremental updates (RFC 1624), the flow hash, multicast MACs.

The flow hash (``flow_hash``, built on splitmix64's finalizer ``mix64``) picks a Service's
endpoint (``proxy.py``) and a VXLAN source port (``tunnel.py``). These helpers are defined
once, in ``kemu.dataplane.packet`` (the slow path, the trace and flow-log writers and the
Scapy peer use them too); the rooms import them from here.

Compiled twin: ``kemu/fastpath/util.pxi`` (``rd16``..``wr48``, ``csum_replace16``/``32``,
``ip_checksum``, ``flow_hash``/``kemu_mix64``; its ``py_flow_hash`` and ``mix64`` expose the
hash to tests, which check them against these).
SEMANTICS ids: none of its own.
"""

from kemu.dataplane.packet import (
    csum_replace16,
    csum_replace32,
    flow_hash,
    ip_checksum,
    is_multicast_mac,
    mix64,
    put16,
    put32,
    put48,
    u16,
    u32,
    u48,
)

__all__ = [
    "csum_replace16",
    "csum_replace32",
    "flow_hash",
    "ip_checksum",
    "is_multicast_mac",
    "mix64",
    "put16",
    "put32",
    "put48",
    "u16",
    "u32",
    "u48",
]
