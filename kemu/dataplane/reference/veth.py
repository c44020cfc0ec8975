"""veth pairs and the loopback device.

Owns ``Veth``: ``_veth_xmit`` (a pod's eth0 or a host-side veth transmits: its peer receives
the frame in the other network namespace, with a fresh per-namespace context) and
``_lo_xmit`` (a pod's lo hands the packet back to itself). Receiving is each end's owner's:
a pod's stack (``host.py``), a bridge port (``bridge.py``).

Compiled twin: ``kemu/fastpath/veth.pxi``.
SEMANTICS ids: none cited here.
"""

from __future__ import annotations

from kemu.dataplane.reference.state import S_RX, Ctx, Item, State


class Veth(State):
    """What one end of a veth pair sends, the other receives; lo sends to itself."""

    def _veth_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """A veth end transmits: the frame is received by its peer (another namespace)."""
        it.ctx = Ctx()
        it.stage, it.a = S_RX, self.if_peer[i]
        stack.append(it)

    def _lo_xmit(self, it: Item, i: int, stack: list[Item]) -> None:
        """loopback_xmit: what lo sends, lo receives."""
        it.stage = S_RX
        stack.append(it)
