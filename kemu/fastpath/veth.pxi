# veth.pxi: veth pairs and the loopback device (D-1, D-2): what a pod's eth0 or a host-side veth
# sends arrives at its peer's receive side in the other network namespace, with a fresh
# per-namespace context; a pod's lo hands the packet back to itself. Receive handling of each
# end is its owner's (a pod's stack: host.pxi; a bridge port: bridge.pxi). Twin:
# ``kemu/dataplane/reference/veth.py``.

cdef inline int veth_xmit(DP* dp, Item* it, const IfInfo* f) noexcept nogil:
    """A veth end transmits: the frame is received by its peer (another namespace)."""
    ctx_reset(&it.ctx)
    it.stage = S_RX
    it.a = f.peer
    return go_rx(dp, it)


cdef inline int lo_xmit(DP* dp, Item* it) noexcept nogil:
    """loopback_xmit: what lo sends, lo receives."""
    it.stage = S_RX
    return go_rx(dp, it)
