"""The reference datapath's state: work items, conntrack entries, contexts, and the attributes
every room uses.

Owns the work-stack stages ``S_TX`` .. ``S_LOCAL_OUT`` (private to each implementation: the
compiled ones are in ``kemu/fastpath/codes.pxi``), ``CtEntry`` (one conntrack entry of one
node), ``Ctx`` (a copy's netfilter context inside one node's kernel), ``Item`` (one copy of a
frame on the LIFO work stack; a flood forks copies) and ``State``: the attributes of a
``Datapath`` that the rooms' mixins read and write, annotated once here.

Compiled twin: ``kemu/fastpath/state.pxi`` (``CtE``, ``Ctx``, ``Item``, ``DP``).
SEMANTICS ids: none of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kemu.dataplane.reference.lpm import Lpm
    from kemu.dataplane.results import Results
    from kemu.dataplane.tables import Tables

S_TX, S_RX, S_BRIDGE_IN, S_BRIDGE_OUT, S_NODE_IN, S_LOCAL_OUT = range(6)


@dataclass
class CtEntry:
    """One conntrack entry of one node: original and reply tuples, NAT, state, expiry."""

    node: int
    orig: tuple[int, int, int, int, int]   # (proto, sip, sport, dip, dport)
    reply: tuple[int, int, int, int, int]
    flags: int = 0
    dnat_ip: int = 0
    dnat_port: int = 0
    snat_ip: int = 0
    snat_port: int = 0
    masq: bool = False
    sp: int = -1
    be: int = -1
    state: int = 0
    expires: int = 0


@dataclass
class Ctx:
    """Per-copy netfilter context while a frame is inside one node's kernel."""

    node: int = -1
    ct: CtEntry | None = None
    reply_dir: bool = False
    new: bool = False
    pre_done: bool = False
    verdict: int = 0          # pending filter verdict from the service lookup (DROP_* code)
    verdict_sp: int = -1
    related: CtEntry | None = None  # an ICMP error's flow, for the un-DNAT at POSTROUTING

    def copy(self) -> Ctx:
        return Ctx(self.node, self.ct, self.reply_dir, self.new, self.pre_done, self.verdict,
                   self.verdict_sp, self.related)


@dataclass
class Item:
    data: bytearray
    stage: int
    a: int               # interface (TX/RX/NODE_IN), bridge (BRIDGE_*), node (LOCAL_OUT)
    b: int = -1          # ingress port (BRIDGE_IN), out port (BRIDGE_OUT)
    ctx: Ctx = field(default_factory=Ctx)
    hops: int = 0
    last_hop: int = -1
    snap_off: int = -1
    snap_len: int = 0
    pend: list = field(default_factory=list)
    flood: bool = False
    nat: bool = False    # a translation rewrote this copy (Results.oc_nat), recording or not
    frag_max: int = 0    # reassembled by conntrack: its largest fragment (frag_max_size)

    def fork(self, stage: int, a: int, b: int = -1) -> Item:
        return Item(bytearray(self.data), stage, a, b, self.ctx.copy(), self.hops,
                    self.last_hop, self.snap_off, self.snap_len, list(self.pend), self.flood,
                    self.nat, self.frag_max)


class State:
    """What a ``Datapath`` holds, as its rooms see it: the root of the rooms' mixin classes.

    Mutable state: per-bridge FDB, per-node conntrack and neighbour tables, session
    affinity. Time is the emulated clock (each frame's timestamp), never the wall clock.
    """

    # the constructor's arguments (Datapath.__init__)
    seed: int
    static_neighbours: bool
    # mutable state, kept across batches and table swaps (Datapath.reset clears it)
    fdb: dict[tuple[int, int], tuple[int, int]]      # (bridge, mac) -> (port, seen)
    ct: dict[tuple, tuple[CtEntry, bool]]            # (node, tuple) -> (entry, reply)
    neigh: dict[tuple[int, int], int]                # (node, ip) -> mac
    neigh_hh: set[tuple[int, int]]                   # entries with a cached header
    # (node, service port, client ip) -> (endpoint ip, endpoint port, last seen)
    affinity: dict[tuple[int, int, int], tuple[int, int, int]]
    frags: dict                                      # node -> its frag.Reassembly queues
    ipvs_rr: dict[tuple[int, int], int]              # (frontend, node) -> next rr position
    # the tables, and what Datapath.load derives from them
    t: Tables
    lpm: Lpm                                         # destination -> route id
    fe: dict[tuple[int, int, int], int]              # (ip, proto, port) -> frontend
    fe_nodeport: dict[tuple[int, int], int]          # (proto, port) -> NodePort frontend
    local_ips: dict[tuple[int, int], int]            # (node, ip) -> the node's interface
    if_kind: list[int]                               # per interface: the tables' columns
    if_mac: list[int]
    if_ip: list[int]
    if_node: list[int]
    if_peer: list[int]
    if_bridge: list[int]
    if_hairpin: list[int]
    if_mtu: list[int]
    rt_tun_nh: dict[int, int]                        # Cilium: pod /32 -> its node's VTEP
    if_vni: list[int]                                # Cilium's VNI per source ([]: 1)
    # the frame being run (Stages._frame)
    now: int                                         # its timestamp (ns)
    res: Results
    fi: int                                          # its index in the batch
