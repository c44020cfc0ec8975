"""Loading compiled ``Tables``: what the stages read, derived once per load.

Owns ``Load.load``: a table swap at a batch boundary. The routes go into a new ``Lpm``; the
Service frontends into dicts keyed (address, protocol, port) and, for NodePorts, (protocol,
port); the nodes' local addresses into ``local_ips``; the interface columns into lists; the
NetworkPolicy fields into ``PolicyMaps`` (``pol``, None without policies). After
a swap the FDBs are flushed, conntrack and affinity are remapped onto the new tables
(``datapath.py``: ``_remap_conntrack``, CT-4; ``_remap_affinity``) and static neighbours seeded
again (OV-2). The routed CNIs' columns (``rt_dev``, ``if_proxy_arp``) into lists.

Compiled twin: ``kemu/fastpath/load.pxi`` (``load_tables``; it also checks the tables' shapes
and ranges, ``_check_tables``, so that a bad table is an exception, not a crash).
SEMANTICS ids: CT-4, OV-2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kemu.dataplane import codes as C
from kemu.dataplane.reference.lpm import Lpm
from kemu.dataplane.reference.policy import PolicyMaps
from kemu.dataplane.reference.state import State
from kemu.dataplane.tables import Tables


class Load(State):
    """The ``load`` of ``Datapath``."""

    tun_if: dict[tuple[int, int], int]

    if TYPE_CHECKING:
        def _remap_conntrack(self) -> None: ...
        def _remap_affinity(self, old: Tables) -> None: ...
        def _seed_neighbours(self) -> None: ...

    def load(self, tables: Tables) -> None:
        """Swap in new tables at a batch boundary; keep conntrack, re-resolve its services."""
        old = getattr(self, "_loaded", None)
        self.t = t = tables
        self.lpm = Lpm()
        for i in range(len(t.rt_prefix)):
            self.lpm.add(int(t.rt_prefix[i]), int(t.rt_len[i]), i)
        self.fe = {}
        self.fe_nodeport = {}
        for i in range(len(t.fe_ip)):
            key = (int(t.fe_proto[i]), int(t.fe_port[i]))
            if int(t.fe_kind[i]) == C.FE_NODE_PORT:
                self.fe_nodeport[key] = i
            else:
                self.fe[(int(t.fe_ip[i]),) + key] = i
        self.local_ips = {}
        for i in range(t.n_ifaces):
            k = int(t.if_kind[i])
            if k in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP, C.IF_CILIUM_HOST, C.IF_OVS_GW):
                self.local_ips[(int(t.if_node[i]), int(t.if_ip[i]))] = i
        self.if_kind = [int(x) for x in t.if_kind]
        self.if_mac = [int(x) for x in t.if_mac]
        self.if_ip = [int(x) for x in t.if_ip]
        self.if_node = [int(x) for x in t.if_node]
        self.if_peer = [int(x) for x in t.if_peer]
        self.if_bridge = [int(x) for x in t.if_bridge]
        self.if_hairpin = [int(x) for x in t.if_hairpin]
        self.if_mtu = [int(x) for x in t.if_mtu]
        self.pol = PolicyMaps(t) if t.pol_name else None  # NetworkPolicy (policy.py)
        n = t.n_nodes  # kube-router's IPIP devices: (node, peer) -> tun-<hash>
        self.tun_if = {(k // n, k % n): int(v) for k, v in enumerate(t.tun_if) if v >= 0}
        # Cilium: the VXLAN VNI (security identity) of a source per interface; []: VNI 1
        self.if_vni = [int(x) for x in t.if_vni]
        self.ipvs_rr = {}  # IPVS services are synced anew: schedulers start over
        # routed CNIs: a pod route's device on its owner (-1: the bridge), and the routes a
        # non-owner reaches over the node network, connected (a pod /32 inside it)
        n_rt = len(t.rt_prefix)
        self.rt_dev = [int(x) for x in t.rt_dev] if len(t.rt_dev) else [-1] * n_rt
        net = next(((int(t.rt_prefix[i]), int(t.rt_len[i])) for i in range(n_rt)
                    if int(t.rt_kind[i]) == C.RT_NODE_NET), None)
        self.rt_connected = {
            r for r in range(n_rt)
            if self.rt_dev[r] >= 0 and int(t.rt_kind[r]) == C.RT_POD_CIDR and net is not None
            and int(t.rt_len[r]) >= net[1]
            and (int(t.rt_prefix[r]) & ((0xFFFFFFFF << (32 - net[1])) & 0xFFFFFFFF)) == net[0]}
        # Cilium's tunnel mode (VXLAN with routed devices): a pod route of another node
        # goes to that node's VTEP address (its router IP)
        self.rt_tun_nh = {
            r: self.if_ip[int(t.node_vtep_if[int(t.rt_node[r])])] for r in range(n_rt)
            if t.vxlan and len(t.rt_dev) and int(t.rt_kind[r]) == C.RT_POD_CIDR
            and 0 <= int(t.rt_node[r]) < t.n_nodes
            and int(t.node_vtep_if[int(t.rt_node[r])]) >= 0}
        self.proxy_arp = ([bool(x) for x in t.if_proxy_arp] if len(t.if_proxy_arp)
                          else [False] * t.n_ifaces)
        if old is not None and old is not tables:
            self.fdb.clear()
            self._remap_conntrack()
            self._remap_affinity(old)
        if self.static_neighbours:
            self._seed_neighbours()
        self._loaded = tables
