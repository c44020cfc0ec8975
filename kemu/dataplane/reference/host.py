"""An end host's receive side: a pod's own network stack, an external host's, the gateway's.

Owns ``Host``: ``_host_rcv`` (a frame addressed to the host at L2: ARP for its address and
IPv4 to it, broadcast or multicast are delivered; the gateway passes everything else out of
the cluster; anything else is not for this host) and ``_lo_rcv`` (a pod's lo receives what
the pod sent itself: delivered; the compiled ``st_rx`` does this inline).

Compiled twin: ``kemu/fastpath/host.pxi``.
SEMANTICS ids: none cited here.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.packet import ETH_ARP
from kemu.dataplane.reference.parse import Parse
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import Item
from kemu.dataplane.reference.util import u16, u32


class Host(Record, Parse):
    """End hosts receiving: pods, external hosts, the gateway."""

    def _host_rcv(self, it: Item, i: int, stack: list[Item]) -> None:
        """An end host receives a frame addressed to it at L2 (``_rx`` checked the MAC)."""
        kind = self.if_kind[i]
        d = it.data
        et = u16(d, 12)
        if et == ETH_ARP:
            if len(d) < 42:
                return self._end(it, C.OUT_DROPPED, C.DROP_TOO_SHORT, i)
            if u32(d, 38) == self.if_ip[i]:
                return self._end(it, C.OUT_DELIVERED, 0, i)
            return self._end(it, C.OUT_DROPPED, C.DROP_NOT_LOCAL, i)
        bad = self._l3_check(d, et)
        if bad:
            return self._end(it, C.OUT_DROPPED, bad, i)
        dst = u32(d, 30)
        if dst == self.if_ip[i] or dst == 0xFFFFFFFF or (dst & 0xF0000000) == 0xE0000000:
            return self._end(it, C.OUT_DELIVERED, 0, i)
        if kind == C.IF_GW_ETH:
            return self._end(it, C.OUT_LEFT, 0, i)
        return self._end(it, C.OUT_DROPPED, C.DROP_NOT_LOCAL, i)

    def _lo_rcv(self, it: Item, i: int, stack: list[Item]) -> None:
        """A pod's lo receives what the pod sent itself: delivered to its own stack."""
        return self._end(it, C.OUT_DELIVERED, 0, i)
