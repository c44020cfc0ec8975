"""Test helpers: an emulated scenario cluster per backend, and independent checks with Scapy."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

import kemu
from kemu.frontend.trace import Trace

DATA = Path(__file__).resolve().parent / "data"


def scenario(backend: str, **options) -> kemu.frontend.api.EmulatedCluster:
    options.setdefault("respond", False)
    return kemu.load(DATA / "scenario", backend=backend, **options)


def checksums_valid(frame: bytes) -> bool:
    """Scapy recomputes the IPv4 header checksum and the checksum of the transport header
    right after it; True when both equal the frame's own (UDP checksum 0 means none)."""
    pkt = Ether(frame)
    if IP not in pkt:
        return True
    ip = pkt[IP]
    l4 = ip.payload
    fresh = ip.copy()
    del fresh.chksum
    if type(l4) in (TCP, UDP, ICMP) and not (type(l4) is UDP and l4.chksum == 0):
        del fresh.payload.chksum
    rebuilt = IP(bytes(fresh))
    if rebuilt.chksum != ip.chksum:
        return False
    if type(l4) in (TCP, UDP, ICMP) and not (type(l4) is UDP and l4.chksum == 0):
        return rebuilt.payload.chksum == l4.chksum
    return True


def all_frames(trace: Trace) -> list[bytes]:
    return [data for p in trace.packets for (_i, _d, data, _e) in p.hops]


def delivered_frame(trace: Trace, packet: int = 0) -> IP | None:
    """The IP packet as the first end host that accepted it received it."""
    from kemu.dataplane import codes as C

    p = trace.packets[packet]
    for (kind, _r, iface, _a), data in zip(p.outcomes, p.outcome_frames, strict=True):
        if kind == C.OUT_DELIVERED and int(trace.tables.if_kind[iface]) in (
                C.IF_POD_ETH, C.IF_EXT_ETH, C.IF_POD_LO):
            return Ether(data)[IP] if IP in Ether(data) else None
    return None
