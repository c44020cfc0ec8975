"""The pure-Python reference datapath: the oracle for ``kemu/_fastpath.pyx``.

Same API and the same results, byte for byte, as the Cython implementation. Readability
first: every stage is a method named after the kernel function it stands for. The packet
path, hook by hook (reference: a kubeadm node, kubenet/flannel, kube-proxy iptables mode)::

    pod eth0 --veth--> node veth (bridge port) --> bridge_in
        bridge_in: br_netfilter PREROUTING (conntrack, DNAT; S-1..S-8, CT-1, CT-2)
                   bridged DNAT if the new destination is on the same bridge
                   learn src MAC (L2-3); dst == bridge MAC -> cbr0 (node stack)
                   broadcast/unknown -> flood (L2-3); hairpin ports may send back (L2-4)
        bridge_out: br_netfilter POSTROUTING (masquerade, reply un-DNAT) -> port TX
    node_in (cbr0 / eth0 / flannel.1 RX):
        ip_rcv checks -> PREROUTING (if the bridge did not run it) -> local? INPUT
        -> forward: LPM route (R-1, R-2), TTL, filter FORWARD (S-9 REJECT), POSTROUTING
           (S-7 MASQUERADE to the egress address), neighbour -> TX
    node_local_out (node processes, ICMP errors): route, nat OUTPUT, POSTROUTING -> TX

Mutable state: per-bridge FDB, per-node conntrack and neighbour tables, session affinity,
per-node reassembly queues.
Time is the emulated clock (each frame's timestamp), never the wall clock.

The package mirrors the compiled datapath's rooms (``kemu/fastpath/*.pxi``): each module is
the pure twin of the room of the same name, and its docstring says what it owns and which
SEMANTICS ids it implements.

    state       S_* stages, CtEntry, Ctx, Item; State: the attributes the rooms use
    util        byte loads/stores, checksums, the flow hash (defined in dataplane.packet)
    lpm         Lpm: longest-prefix match (R-2)
    record      hops, events, outcomes
    parse       ip_rcv's checks, L4 parsing
    conntrack   conntrack states, timeouts, entries
    nat         rewrites, masquerade, RELATED ICMP translation
    proxy       kube-proxy's KUBE-SERVICES for new flows
    netfilter   PREROUTING / OUTPUT, FORWARD, POSTROUTING
    tunnel      VXLAN encapsulation and decapsulation
    inject      how an injected frame enters its host
    veth        veth pairs and lo: what one end sends, the other gets
    bridge      the Linux bridge: ports, learning, forwarding, flooding
    host        end hosts' receive side: pods, external hosts, the gateway
    gateway     the node network's gateway: a router (routes, TTL, static neighbours)
    frag        IPv4 fragmentation on output, conntrack's reassembly (nf_defrag_ipv4)
    routing     a node's IP stack: routes, neighbours, forward, local in and out
    stages      a frame's run: the stage loop, the device-kind registry (TX, RX)
    load        Load.load: Tables in, what the stages read derived once
    datapath    Datapath: remapping after a load, reset, cleanup, state, process

Rooms without a module here: ``htab`` (the reference's tables are dicts), ``flowcache``
(compiled only; ``tests/test_flow_cache.py`` checks that it changes no result), and
``hops``, ``capture``, ``placement``, ``flowlog``, whose twins are ``kemu/io/hops.py``,
``kemu/io/capture.py``, ``kemu/frontend/placement.py`` and ``kemu/io/flowlog.py``;
``codes`` is ``kemu/dataplane/codes.py``. ``tests/test_twins.py`` keeps the rooms and the
modules matched.

How the class is split: ``Datapath`` is one class made of mixins, one per module, each
holding that room's methods under their old names. Each room's mixin derives from the rooms
whose methods it calls (``class Bridge(Routing, Netfilter, Record, Parse)``), so the class
statement lists a room's dependencies and a type checker sees every method it uses; their
root, ``State``, annotates the attributes.

Exports what the compiled module exports for the datapath: ``Datapath`` and ``Lpm``.
"""

from kemu.dataplane.reference.datapath import Datapath
from kemu.dataplane.reference.lpm import Lpm

__all__ = ["Datapath", "Lpm"]
