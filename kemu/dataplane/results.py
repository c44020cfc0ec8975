"""What a batch call returns: hops, events and outcomes in growable numpy arrays.

Both implementations fill the same ``Results``: a hop is one frame seen at one interface in
one direction (with the frame's bytes at that moment, stored once per change in ``arena``);
an event is a decision attached to a hop (codes.EV_*); an outcome is where one copy of a
frame ended (codes.OUT_*). Floods fan one input frame out into several outcomes. An outcome's
``oc_nat`` is 1 when a translation (service DNAT, masquerade, their reverses, a conntrack NAT
reused) rewrote that copy on its way, with recording on or off: the events of those kinds
are recorded only with recording on.

Capacity protocol: before each input frame the implementation checks ``room(frame_len)``;
when it is short the call returns early with the index of the next frame, and the driver
grows the arrays (``grow``) and calls again. A frame is never half-recorded.
"""

from __future__ import annotations

import numpy as np

from kemu.dataplane.codes import MAX_HOPS


class Results:
    def __init__(self, hops: int = 4096, arena: int = 1 << 20, record: bool = True) -> None:
        self.record = record
        self.n_hops = self.n_events = self.n_outcomes = 0
        self.arena_used = 0
        self._alloc(hops, arena)

    def _alloc(self, hops: int, arena: int) -> None:
        self.cap_hops = hops
        self.hop_frame = np.zeros(hops, np.int32)
        self.hop_iface = np.zeros(hops, np.int32)
        self.hop_dir = np.zeros(hops, np.uint8)
        self.hop_off = np.zeros(hops, np.int64)
        self.hop_len = np.zeros(hops, np.int32)
        self.cap_events = 2 * hops
        self.ev_frame = np.zeros(2 * hops, np.int32)
        self.ev_hop = np.zeros(2 * hops, np.int32)
        self.ev_kind = np.zeros(2 * hops, np.int16)
        self.ev_a = np.zeros(2 * hops, np.int64)
        self.ev_b = np.zeros(2 * hops, np.int64)
        self.ev_c = np.zeros(2 * hops, np.int64)
        self.cap_outcomes = hops
        self.oc_frame = np.zeros(hops, np.int32)
        self.oc_kind = np.zeros(hops, np.uint8)
        self.oc_reason = np.zeros(hops, np.int16)
        self.oc_iface = np.zeros(hops, np.int32)
        self.oc_hop = np.zeros(hops, np.int32)
        self.oc_a = np.zeros(hops, np.int64)
        self.oc_off = np.zeros(hops, np.int64)
        self.oc_len = np.zeros(hops, np.int32)
        self.oc_nat = np.zeros(hops, np.uint8)
        self.arena = np.zeros(arena, np.uint8)

    def clear(self) -> None:
        self.n_hops = self.n_events = self.n_outcomes = 0
        self.arena_used = 0

    @staticmethod
    def worst_case(frame_len: int, n_ifaces: int) -> tuple[int, int]:
        """Hops and arena bytes one input frame can need at the most (floods included)."""
        hops = MAX_HOPS * (n_ifaces + 2)
        return hops, hops * (frame_len + 64) + 4096

    def need(self, frame_len: int, n_ifaces: int) -> tuple[int, int]:
        """What ``room`` reserves for one frame: the recording worst case, or without
        recording a bound on the outcomes (every copy ends once: floods copy a frame to at
        most every interface) and the frames kept with them."""
        if self.record:
            return self.worst_case(frame_len, n_ifaces)
        few = n_ifaces * 2 + 8
        return few, (frame_len + 64) * few

    def room(self, frame_len: int, n_ifaces: int) -> bool:
        hops, arena = self.need(frame_len, n_ifaces)
        return (self.n_hops + hops <= self.cap_hops
                and self.n_events + 2 * hops <= self.cap_events
                and self.n_outcomes + hops <= self.cap_outcomes
                and self.arena_used + arena <= len(self.arena))

    def grow(self, frame_len: int, n_ifaces: int) -> None:
        """Enlarge every array (keeping contents) so that at least one more frame fits."""
        hops, arena = self.need(frame_len, n_ifaces)
        new_hops = max(2 * self.cap_hops, self.n_hops + hops, self.n_outcomes + hops)
        new_arena = max(2 * len(self.arena), self.arena_used + arena)
        old = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        self._alloc(new_hops, new_arena)
        for k, v in old.items():
            getattr(self, k)[: len(v)] = v

    def frame_bytes(self, off: int, length: int) -> bytes:
        return self.arena[off: off + length].tobytes()
