"""The engine: drives the batch datapath over a cluster, with the slow path around it.

It owns one data-plane instance (Cython or pure, see ``kemu._backend``) and the tables
compiled from the cluster; it recompiles when the cluster's ``version`` moved and swaps the
tables at a batch boundary. ``run`` pushes a batch through the fast path, growing the result
arrays as needed. ``exchange`` adds the slow path: answers of emulated end-host stacks
(a setting), ICMP errors of node kernels, and ARP resolution of neighbour misses, each
injected back into the datapath until the exchange settles.

Warm start (the default; ``warm=False`` is a cold one): a cluster that has been running a
while, not one just booted. Before the first frame (and again after ``reset`` or a table
swap) every bridge has learned the MAC of every host behind its ports (each pod on its node's
bridge, every node, external host and gateway on the node network: what one frame from each
teaches, L2-3) and, without static neighbours, every node has resolved its neighbours (L2-5),
all stamped with the first frame's time so that nothing has aged (300 s, L2-3). A cold start
shows first-packet behaviour: unknown unicast flooded to every port until learned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from kemu import _backend
from kemu.compiler.compile import compile_cluster
from kemu.control.listen import Listening, listening_map

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
from kemu.dataplane import codes as C
from kemu.dataplane import l7
from kemu.dataplane.describe import dump_state, selecting_policies
from kemu.dataplane.packet import ip_checksum, u16, u32, u48
from kemu.dataplane.reference.frag import Reassembly, fragment, is_fragment
from kemu.dataplane.reference.policy import PolicyMaps
from kemu.dataplane.results import Results
from kemu.dataplane.slowpath import (
    ICMP_FOR_DROP,
    HostStack,
    Resolver,
    arp_reply,
    arp_request,
    icmp_error,
    is_icmp_error,
)
from kemu.dataplane.tables import Tables
from kemu.errors import KemuError

MAX_ROUNDS = 16  # slow-path rounds per exchange (answers of answers, ARP, ICMP errors)


@dataclass
class Batch:
    """Frames to inject: one buffer, offsets and lengths, where and how each enters, when."""

    buf: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    in_if: np.ndarray
    in_mode: np.ndarray
    ts_ns: np.ndarray

    @classmethod
    def from_frames(cls, frames: list[tuple[bytes, int, int, int]]) -> Batch:
        """``frames``: (bytes, interface id, injection mode, time in ns)."""
        lengths = np.array([len(f[0]) for f in frames], dtype=np.int32)
        offsets = np.zeros(len(frames), dtype=np.int64)
        if len(frames):
            offsets[1:] = np.cumsum(lengths[:-1], dtype=np.int64)
        buf = np.frombuffer(b"".join(f[0] for f in frames) or b"\0", dtype=np.uint8).copy()
        return cls(buf, offsets, lengths, np.array([f[1] for f in frames], dtype=np.int32),
                   np.array([f[2] for f in frames], dtype=np.uint8),
                   np.array([f[3] for f in frames], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass
class Packet:
    """One injected frame's journey inside an exchange, and why it was sent."""

    origin: str             # "injected", "answer", "icmp-error", "arp", "resumed"
    frame: int              # index in its batch
    hops: list[tuple[int, int, bytes, list[tuple[int, int, int, int]]]] = field(
        default_factory=list)  # (iface, dir, bytes, events)
    # (kind, reason, iface, a) per place a copy ended
    outcomes: list[tuple[int, int, int, int]] = field(default_factory=list)
    outcome_frames: list[bytes] = field(default_factory=list)  # the frame as it ended
    parent: int = -1        # index of the packet this one answers
    sent: bytes = b""       # the frame as its sender sent it (before any NAT)


class Engine:
    def __init__(self, cluster: Cluster, *, backend: str | None = None, seed: int = 0,
                 respond: bool = True, icmp_errors: bool = True,
                 static_neighbours: bool = True, resolver: Resolver | None = None,
                 warm: bool = True) -> None:
        self.cluster = cluster
        self.impl: ModuleType = _pick(backend)
        self.backend = "cython" if self.impl is _backend.IMPLEMENTATIONS.get("cython") \
            else "python"
        self.seed = seed
        self.respond = respond
        self.icmp_errors = icmp_errors
        self.static_neighbours = static_neighbours
        self.resolver = resolver
        self._version = -1
        self.tables: Tables = compile_cluster(cluster)
        self._version = cluster.version
        self.dp = self.impl.Datapath(self.tables, seed, static_neighbours)
        self._stacks: dict[int, HostStack] = {}
        self._listening: dict[str, Listening] | None = None  # pod key -> listening set
        # node -> what its hostNetwork pods listen on (``_node_listening``)
        self._node_listen: dict[int, tuple[set[tuple[int, int]], set[int], bool]] = {}
        self._held: dict[tuple[int, int], list[tuple[bytes, int, int]]] = {}
        # per node: (proto, local port) of the connections the node's own processes opened
        # (kubelet probes, hostNetwork pods, ``-S node1``), as a pod's stack remembers its own
        self._node_clients: dict[int, set[tuple[int, int]]] = {}
        self._node_streams: dict[int, dict] = {}  # per node: its accepted TCP connections
        # end hosts' reassembly queues (pods, external hosts, the gateway), by interface
        self._reasm: dict[int, Reassembly] = {}
        # Cilium's L7 proxy (``kemu.dataplane.l7``): the proxies of redirected connections by
        # (pod interface, 4-tuple), the policy lookups they are made from, and the proxy
        # verdicts waiting for the answer frame that carries them (``_l7_mark``)
        self._proxies: dict[tuple[int, tuple[int, int, int, int]], l7.HttpProxy] = {}
        self._polmaps: PolicyMaps | None = None
        self._l7_marks: dict[bytes, list[tuple[int, int, int]]] = {}
        self.clock_ns = 0
        self.warm = warm
        self._warm_due = warm  # learn everything before the next frame (at its time)

    # ------------------------------------------------------------ tables
    def sync(self) -> None:
        """Recompile if the cluster changed since the last batch; swap tables whole."""
        if self.cluster.version != self._version:
            self.tables = compile_cluster(self.cluster)
            self._version = self.cluster.version
            self.dp.load(self.tables)
            self._stacks.clear()
            self._node_clients.clear()
            self._node_streams.clear()
            self._listening = None
            self._node_listen.clear()
            self._proxies.clear()
            self._polmaps = None
            self._warm_due = self.warm  # new pods, nodes or hosts: learned too

    def reset(self) -> None:
        self.dp.reset()
        for st in self._stacks.values():  # the emulated stacks' TCP connections go too
            st.streams.clear()
        self._node_streams.clear()
        self._reasm.clear()
        self._proxies.clear()
        self._warm_due = self.warm

    def dump(self) -> str:
        """The state as it is: a warm start's entries are there once a frame has run."""
        return dump_state(self.tables, self.dp.state())

    def settle(self) -> None:
        """Tables current and a due warm start's learning done now (at the engine's
        clock), before a tool writes state over it (``flush_fdb``, ``delete_neighbour``)."""
        self.sync()
        if self._warm_due:
            self.learn_all(self.clock_ns)
            self._warm_due = False

    def learn_all(self, now: int) -> None:
        """A warm start: every bridge port's MAC learned and (without static neighbours)
        every node's neighbours resolved at ``now``, as after a while of traffic."""
        t = self.tables
        kind, peer, bridge, mac = t.if_kind, t.if_peer, t.if_bridge, t.if_mac
        neighbours = []
        routed = {} if self.static_neighbours else routed_pod_neighbours(t)
        for i in range(t.n_ifaces):
            k = int(kind[i])
            if k == C.IF_VTEP and not self.static_neighbours:
                neighbours.append((k, int(t.if_node[i]), int(t.if_ip[i]), int(mac[i])))
                continue
            if k == C.IF_UPLINK:  # Azure bridge mode's eth0: on the segment, and the
                seg = len(t.br_local_if) - 1  # segment's hosts on its own bridge
                self.dp.fdb_set(seg, int(mac[i]), i, now)
                for j in range(t.n_ifaces):
                    if j != i and int(kind[j]) in (C.IF_UPLINK, C.IF_EXT_ETH, C.IF_GW_ETH,
                                                   C.IF_NODE_ETH) and int(mac[j]):
                        self.dp.fdb_set(int(bridge[i]), int(mac[j]), i, now)
                continue
            if k == C.IF_BRIDGE and i == int(t.node_eth_if[int(t.if_node[i])]):
                if not self.static_neighbours:  # azure0 holds the node's address
                    neighbours.append((C.IF_NODE_ETH, int(t.if_node[i]), int(t.if_ip[i]),
                                       int(mac[i])))
            if k == C.IF_OVS_GW and 0 < t.ovs_tunnel < C.ANTREA_NOENCAP and \
                    not self.static_neighbours:  # Antrea: OVS answers for the peers' gateways
                neighbours.append((k, int(t.if_node[i]), int(t.if_ip[i]),
                                   C.GLOBAL_VIRTUAL_MAC))
                continue
            if k == C.IF_POD_ETH:
                port = int(peer[i])  # the node-side veth, the bridge port
            elif k in (C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH):
                port = i
            else:
                continue
            if port >= 0 and int(bridge[port]) >= 0 and int(mac[i]):
                self.dp.fdb_set(int(bridge[port]), int(mac[i]), port, now)
            if not self.static_neighbours and int(t.if_ip[i]):
                neighbours.append((k, int(t.if_node[i]), int(t.if_ip[i]), int(mac[i])))
        for k, node, ip, m in neighbours:  # what _seed_neighbours gives with static ones
            if k == C.IF_POD_ETH:
                self.dp.neigh_set(node, ip, m)
                if ip in routed:  # a routed pod of the node network: its node's eth0
                    for other in range(t.n_nodes):
                        if other != node:
                            self.dp.neigh_set(other, ip, routed[ip])
            else:
                for other in range(t.n_nodes):
                    if other != node:
                        self.dp.neigh_set(other, ip, m)

    # ------------------------------------------------------------ fast path
    def run(self, batch: Batch, res: Results | None = None, record: bool = True) -> Results:
        self.sync()
        if self._warm_due and len(batch):
            self.learn_all(int(batch.ts_ns[0]))
            self._warm_due = False
        if res is None:
            res = Results(hops=max(1024, 16 * len(batch)), record=record)
        start, n = 0, len(batch)
        n_if = self.tables.n_ifaces
        while start < n:
            start = self.dp.process(batch.buf, batch.offsets, batch.lengths, batch.in_if,
                                    batch.in_mode, batch.ts_ns, start, n, res)
            if start < n:
                res.grow(int(batch.lengths[start]), n_if)
        if self._l7_marks:
            if res.record:
                self._l7_mark(batch, res)
            self._l7_marks.clear()  # (made for this batch's answers: never for a later one)
        if n:
            self.clock_ns = max(self.clock_ns, int(batch.ts_ns[-1]))
        return res

    # ------------------------------------------------------------ slow path
    def stack_of(self, iface: int) -> HostStack | None:
        """The emulated stack of an end host interface (pod eth0, external host, gateway)."""
        if iface in self._stacks:
            return self._stacks[iface]
        t = self.tables
        kind = int(t.if_kind[iface])
        ip, mac = int(t.if_ip[iface]), int(t.if_mac[iface])
        listen: set[tuple[int, int]] = set()
        echo: set[int] = set()
        listen_all = False
        if kind == C.IF_POD_ETH:
            pod = self.cluster.pods[int(t.if_owner[iface])]
            if self._listening is None:
                self._listening = listening_map(self.cluster)
            ls = self._listening[pod.key]
            listen = {(C.PROTO_NUMBERS[proto], port) for proto, port in ls.ports}
            listen_all = ls.all
            echo = {p.port for p in pod.container_ports() if p.udp_echo}
        elif kind == C.IF_EXT_ETH:
            ext = self.cluster.config.external_hosts[int(t.if_owner[iface])]
            for proto, port in ext.ports:
                listen.add((C.PROTO_NUMBERS[proto.upper()], int(port)))
        elif kind != C.IF_GW_ETH:
            return None
        st = HostStack(ip, mac, listen, echo, self.resolver, self.seed, listen_all)
        self._stacks[iface] = st
        return st

    def exchange(self, frames: list[tuple[bytes, int, int]], ts_ns: int | None = None
                 ) -> list[Packet]:
        """Inject frames (bytes, iface, mode) and follow everything they cause."""
        self.sync()
        now = self.clock_ns if ts_ns is None else ts_ns
        packets: list[Packet] = []
        pending = [(f, i, m, "injected", -1) for f, i, m in frames]
        for f, i, _m in frames:
            kind = int(self.tables.if_kind[i])
            if kind in (C.IF_POD_ETH, C.IF_EXT_ETH):
                st = self.stack_of(i)
                if st is not None:
                    st.note_sent(f)
            elif kind == C.IF_NODE_LOCAL:
                self._node_socket(int(self.tables.if_node[i])).note_sent(f)
        for _round in range(MAX_ROUNDS):
            if not pending:
                break
            batch = Batch.from_frames([(f, i, m, now) for f, i, m, _o, _p in pending])
            res = self.run(batch)
            base = len(packets)
            for k, (f, i, _m, origin, parent) in enumerate(pending):
                packets.append(Packet(origin, k, parent=parent, sent=self._as_sent(f, i)))
            self.collect(res, packets, base)
            pending = []
            for idx in range(base, len(packets)):
                pending.extend(self.follow_up(packets[idx], idx))
            if not pending and self._held:  # ARP went unanswered: host unreachable
                for (_node, _ip), frames in sorted(self._held.items()):
                    for f, i, _m in frames:
                        err = self._node_icmp(f, i, 3, 1)
                        if err is not None:
                            pending.append(err + ("icmp-error", len(packets) - 1))
                self._held.clear()
            now += 1000  # answers come a microsecond later on the emulated clock
        self.clock_ns = max(self.clock_ns, now)
        return packets

    def collect(self, res: Results, packets: list[Packet], base: int) -> None:
        evs: dict[int, list[tuple[int, int, int, int]]] = {}
        for e in range(res.n_events):
            evs.setdefault(int(res.ev_hop[e]), []).append(
                (int(res.ev_kind[e]), int(res.ev_a[e]), int(res.ev_b[e]), int(res.ev_c[e])))
        for h in range(res.n_hops):
            p = packets[base + int(res.hop_frame[h])]
            off, ln = int(res.hop_off[h]), int(res.hop_len[h])
            p.hops.append((int(res.hop_iface[h]), int(res.hop_dir[h]),
                           res.arena[off: off + ln].tobytes(), evs.get(h, [])))
        for o in range(res.n_outcomes):
            p = packets[base + int(res.oc_frame[o])]
            hop = int(res.oc_hop[o])
            off, ln = int(res.oc_off[o]), int(res.oc_len[o])
            if ln:
                data = res.arena[off: off + ln].tobytes()
            elif hop >= 0:
                data = res.arena[int(res.hop_off[hop]): int(res.hop_off[hop])
                                 + int(res.hop_len[hop])].tobytes()
            else:
                data = b""
            p.outcomes.append((int(res.oc_kind[o]), int(res.oc_reason[o]),
                               int(res.oc_iface[o]), int(res.oc_a[o])))
            p.outcome_frames.append(data)

    def follow_up(self, p: Packet, idx: int) -> list[tuple[bytes, int, int, str, int]]:
        t = self.tables
        out: list[tuple[bytes, int, int, str, int]] = []
        for (kind, reason, iface, a), data in zip(p.outcomes, p.outcome_frames, strict=True):
            ikind = int(t.if_kind[iface]) if iface >= 0 else -1
            if kind == C.OUT_DELIVERED and ikind == C.IF_POD_LO:
                # the pod talking to itself (M-4): its own stack answers, over lo again;
                # a frame shorter than its IPv4 total length fails ip_rcv there: no answer
                eth = int(t.pod_eth_if[int(t.if_owner[iface])])
                whole = len(data) >= 34 and u16(data, 12) == 0x0800 and \
                    len(data) >= 14 + u16(data, 16)
                st = self.stack_of(eth) if eth >= 0 and self.respond and whole else None
                ans = st.answer(data, loopback=True) if st is not None else None
                if ans is not None:
                    out.append((ans, eth, C.INJ_TX_FIXL2, "answer", idx))
            elif kind == C.OUT_DELIVERED and ikind in (C.IF_POD_ETH, C.IF_EXT_ETH,
                                                       C.IF_GW_ETH):
                st = self.stack_of(iface)
                if st is None:
                    continue
                if is_fragment(data):  # the host's own ip_defrag before its stack (L2-2)
                    r, q = self._reasm.setdefault(iface, Reassembly()).add(data,
                                                                          self.clock_ns)
                    if r != 1 or q is None:
                        continue
                    data = bytes(q.packet(data))
                answers = st.answers(data, transport=self.respond and ikind != C.IF_GW_ETH)
                marks = self._l7_proxy(p, data, iface, st) if ikind == C.IF_POD_ETH and \
                    self.tables.rule_l7_count else []
                for ans in answers:
                    fits = self._fit(ans, iface)
                    if marks and fits:  # the proxy's verdicts go with its first answer
                        self._l7_marks.setdefault(fits[0], []).extend(marks)
                        marks = []
                    out.extend((f, iface, C.INJ_TX_FIXL2, "answer", idx) for f in fits)
            elif kind == C.OUT_DELIVERED and ikind in (C.IF_BRIDGE, C.IF_NODE_ETH, C.IF_VTEP,
                                                       C.IF_VETH_HOST, C.IF_OVS_GW):
                out.extend(self._node_arp(data, iface, idx))
                if self.respond:
                    out.extend(self._node_answer(data, iface, idx))
            elif kind == C.OUT_DROPPED and reason in ICMP_FOR_DROP:
                err = self._node_icmp(data, iface, *ICMP_FOR_DROP[reason],
                                      mtu=a if reason == C.DROP_FRAG_NEEDED else 0)
                if err is not None:
                    out.append(err + ("icmp-error", idx))
            elif kind == C.OUT_NEIGH:
                out.extend(self._resolve(data, iface, a, idx))
        return out

    # ------------------------------------------------------------ Cilium's L7 proxy
    def _l7_proxy(self, p: Packet, data: bytes, iface: int, st: HostStack
                  ) -> list[tuple[int, int, int]]:
        """A TCP segment delivered to a pod, after its stack took it: a SYN the datapath
        redirected (``EV_L7_REDIRECT``) gets an ``l7.HttpProxy`` in front of the pod's
        application; the verdicts a proxy made on this segment's requests are returned as
        (pod, record id, status), for the answer that carries their responses."""
        if len(data) < 54 or u16(data, 12) != 0x0800 or data[23] != C.PROTO_TCP:
            return []
        l4 = 14 + (data[14] & 0xF) * 4
        key = (u32(data, 26), u16(data, l4), u32(data, 30), u16(data, l4 + 2))
        pod = int(self.tables.if_owner[iface])
        flags = data[l4 + 13]
        if flags & 0x02 and not flags & 0x10:  # a SYN: redirected?
            redirected = any(ev[0] == C.EV_L7_REDIRECT and ev[1] == pod
                             for _i, _d, _b, evs in p.hops for ev in evs)
            stream = st.streams.get(key)
            proxy = self._proxies.get((iface, key))
            if redirected:
                proxy = self._make_proxy(pod, key[0], key[3])
                self._proxies[(iface, key)] = proxy
            if stream is not None and proxy is not None:
                # (a retransmitted SYN rides conntrack, unjudged: its connection's proxy
                # stays in front of the stream the stack made again)
                stream.proxy = proxy
            return []
        proxy = self._proxies.get((iface, key))
        if proxy is None or not proxy.pending:
            return []
        done, proxy.pending = proxy.pending, []
        if key not in st.streams:
            del self._proxies[(iface, key)]  # the connection is gone
        return [(pod, rid, status) for rid, status in done]

    def _make_proxy(self, pod: int, client: int, port: int) -> l7.HttpProxy:
        """The proxy of a connection from ``client`` to ``pod``'s TCP ``port``: every L7
        rule of the policies selecting the pod for ingress that allows it (rule by rule, as
        the datapath's slow rules; the HTTP rules from the cluster's policies)."""
        t = self.tables
        if self._polmaps is None:
            self._polmaps = PolicyMaps(t)
        pm = self._polmaps
        by_key = {pol.key: pol for pol in self.cluster.policies}
        selecting = set(selecting_policies(t, pod, C.POL_INGRESS))
        rpod = pm.pod_of_ip.get(client, -1)
        ident = pm.pod_ident[rpod] if rpod >= 0 else -1
        rules = []
        for r in range(pm.l7_first, len(t.rule_pol)):
            pi = int(t.rule_pol[r])
            if int(t.rule_dir[r]) != C.POL_INGRESS or pi not in selecting or \
                    not pm.rule_allows(r, ident, client, C.PROTO_TCP, port, pod):
                continue
            pol = by_key.get(t.pol_name[pi])
            idx = int(t.rule_idx[r])
            if pol is None or idx >= len(pol.ingress) or pol.ingress[idx].http is None:
                continue  # (the cluster moved on; the tables swap at the next batch)
            rules.append(l7.L7Rule(pol.key, idx, tuple(
                l7.HttpMatch.of(h) for h in pol.ingress[idx].http or ())))
        return l7.HttpProxy(t.pod_key[pod], rules)

    def _l7_mark(self, batch: Batch, res: Results) -> None:
        """The proxy's verdicts as ``EV_L7_HTTP`` events (pod, record id, status) of the
        answers that carry their responses, at the answer's hop on the pod's node-side veth
        (the node, where Cilium's proxy sits), else its first hop."""
        t = self.tables
        want: dict[int, list[tuple[int, int, int]]] = {}
        for k in range(len(batch)):
            off, ln = int(batch.offsets[k]), int(batch.lengths[k])
            marks = self._l7_marks.get(batch.buf[off: off + ln].tobytes())
            if marks:
                want[k] = marks
        if not want:
            return
        hops: dict[int, list[int]] = {}
        for h in range(res.n_hops):
            k = int(res.hop_frame[h])
            if k in want:
                hops.setdefault(k, []).append(h)
        for k, marks in want.items():
            hs = hops.get(k)
            if not hs:
                continue
            eth = int(t.pod_eth_if[marks[0][0]])
            veth = int(t.if_peer[eth]) if eth >= 0 else -1
            h = next((x for x in hs if int(res.hop_iface[x]) == veth), hs[0])
            for pod, rid, status in marks:
                n = res.n_events
                if n >= res.cap_events:
                    res.grow(64, t.n_ifaces)
                res.ev_frame[n], res.ev_hop[n], res.ev_kind[n] = k, h, C.EV_L7_HTTP
                res.ev_a[n], res.ev_b[n], res.ev_c[n] = pod, rid, status
                res.n_events = n + 1

    def _fit(self, frame: bytes, iface: int) -> list[bytes]:
        """An end host's answer as its kernel sends it out of ``iface``: a datagram longer
        than the MTU goes without DF (path MTU discovery's ``IP_PMTUDISC_WANT`` sets DF only
        on what fits) and in fragments (``ip_fragment``, L2-2)."""
        mtu = int(self.tables.if_mtu[iface])
        if len(frame) < 34 or u16(frame, 12) != 0x0800 or u16(frame, 16) <= mtu:
            return [frame]
        f = bytearray(frame)
        f[20] &= 0xBF  # DF off
        ihl = (f[14] & 0xF) * 4
        f[24:26] = b"\0\0"
        f[24:26] = ip_checksum(f, 14, ihl).to_bytes(2, "big")
        return [bytes(x) for x in fragment(f, mtu)]

    def _node_arp(self, data: bytes, iface: int, idx: int) -> list:
        """A node got ARP for one of its addresses: learn the sender, answer requests."""
        if len(data) < 42 or u16(data, 12) != 0x0806:
            return []
        t = self.tables
        node = int(t.if_node[iface])
        self.dp.neigh_set(node, u32(data, 28), u48(data, 22))
        if u16(data, 20) == 1:
            ans = arp_reply(data, int(t.if_mac[iface]))
            if ans is not None:
                return [(ans, iface, C.INJ_TX, "arp", idx)]
        else:  # a reply: release frames held for this neighbour, now addressed
            mac = u48(data, 22).to_bytes(6, "big")
            return [(mac + f[6:], i, m, "resumed", idx)
                    for f, i, m in self._held.pop((node, u32(data, 28)), [])]
        return []

    def _as_sent(self, frame: bytes, iface: int) -> bytes:
        """The frame as its sender sent it: a node's unbound socket has the source address
        connect() picked (the preferred source of the route to the destination, before any
        NAT; the datapath fills it in the same way)."""
        t = self.tables
        if (int(t.if_kind[iface]) != C.IF_NODE_LOCAL or len(frame) < 34
                or u16(frame, 12) != 0x0800 or u32(frame, 26) != 0):
            return bytes(frame)
        out_if = route_dev(t, int(t.if_node[iface]), u32(frame, 30))
        if out_if < 0:
            return bytes(frame)
        f = bytearray(frame)
        src = int(t.if_ip[out_if]) or int(t.node_ip[int(t.if_node[iface])])  # a routed veth
        f[26:30] = src.to_bytes(4, "big")
        return bytes(f)

    def _node_socket(self, node: int) -> HostStack:
        """The client sockets of a node's processes (the answers to them are theirs)."""
        st = HostStack(0, 0, seed=self.seed)
        st.clients = self._node_clients.setdefault(node, set())
        return st

    def _node_listening(self, node: int) -> tuple[set[tuple[int, int]], set[int], bool]:
        """What listens in a node's network namespace: the ports of its hostNetwork pods
        (M-3: their sockets are the node's, bound on every node address), as
        ``kemu.control.listen`` gives them; (listen, UDP echo ports, every port)."""
        got = self._node_listen.get(node)
        if got is not None:
            return got
        name = self.tables.node_name[node]
        listen: set[tuple[int, int]] = set()
        echo: set[int] = set()
        listen_all = False
        for pod in self.cluster.pods:
            if not pod.host_network or pod.node_name != name:
                continue
            if self._listening is None:
                self._listening = listening_map(self.cluster)
            ls = self._listening[pod.key]
            listen |= {(C.PROTO_NUMBERS[proto], port) for proto, port in ls.ports}
            listen_all = listen_all or ls.all
            echo |= {p.port for p in pod.container_ports() if p.udp_echo}
        got = (listen, echo, listen_all)
        self._node_listen[node] = got
        return got

    def _node_answer(self, data: bytes, iface: int, idx: int) -> list:
        """A node's own stack: it answers ping on its addresses, SYN-ACKs TCP and answers
        UDP on the ports its hostNetwork pods listen on (M-3), RSTs TCP and refuses UDP to
        ports nothing listens on, from the address asked.
        Answers to the connections its own processes opened go to their sockets: a SYN-ACK
        completes the handshake without an answer (as a pod's emulated client does)."""
        t = self.tables
        if len(data) < 34 or u16(data, 12) != 0x0800:
            return []
        node = int(t.if_node[iface])
        listen, echo, listen_all = self._node_listening(node)
        stack = HostStack(u32(data, 30), int(t.if_mac[iface]), listen, echo, self.resolver,
                          self.seed, listen_all)
        stack.clients = self._node_clients.get(node, set())
        stack.streams = self._node_streams.setdefault(node, {})
        return [(ans, int(t.node_local_if[node]), C.INJ_TX, "answer", idx)
                for ans in stack.answers(data)]

    def _node_icmp(self, data: bytes, iface: int, typ: int, code: int, mtu: int = 0
                   ) -> tuple[bytes, int, int] | None:
        """The ICMP error a node kernel sends about a frame it dropped (``icmp_send``): from
        the destination when that is the node's own address (RTCF_LOCAL), else from the
        address of the route back to the sender (source 0: the node's routing picks it)."""
        t = self.tables
        if not self.icmp_errors or not data or is_icmp_error(data) or iface < 0:
            return None
        if int(t.if_kind[iface]) == C.IF_GW_ETH:
            return self._gateway_icmp(data, iface, typ, code)
        node = int(t.if_node[iface])
        if node < 0:
            return None
        dst = u32(data, 30)
        owner = t.owner_of(dst)
        local = owner >= 0 and int(t.if_node[owner]) == node and int(t.if_kind[owner]) in (
            C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP, C.IF_OVS_GW)
        return (icmp_error(data, typ, code, src=dst if local else 0, mtu=mtu),
                int(t.node_local_if[node]), C.INJ_TX)

    def _gateway_icmp(self, data: bytes, iface: int, typ: int, code: int
                      ) -> tuple[bytes, int, int] | None:
        """The ICMP error the gateway (a Linux router) sends about a packet it dropped: from
        its own address, out of its eth0 towards the next hop of its route back to the
        sender (``gateway_next_hop``); an error whose way back is the default route leaves
        the cluster unseen (None)."""
        t = self.tables
        err = icmp_error(data, typ, code, src=int(t.if_ip[iface]))
        hop = gateway_next_hop(t, u32(err, 30))
        owner = t.owner_of(hop) if hop else -1
        if owner < 0 or owner == iface:
            return None
        l2 = int(t.if_mac[owner]).to_bytes(6, "big") + int(t.if_mac[iface]).to_bytes(6, "big")
        return (l2 + err[12:], iface, C.INJ_TX)

    def _resolve(self, data: bytes, out_if: int, nexthop: int, idx: int) -> list:
        """Neighbour miss: without static neighbours, ARP for the next hop and hold the
        frame until the answer comes; with them, nobody owns the address: after the ARP
        probes a Linux node would send, ICMP host unreachable (3/1) to the sender."""
        if self.static_neighbours:
            err = self._node_icmp(data, out_if, 3, 1)
            return [err + ("icmp-error", idx)] if err is not None else []
        t = self.tables
        node = int(t.if_node[out_if])
        key = (node, nexthop)
        first = key not in self._held
        self._held.setdefault(key, []).append((data, out_if, C.INJ_TX))
        if not first:
            return []
        req = arp_request(int(t.if_mac[out_if]), int(t.if_ip[out_if]), nexthop)
        return [(req, out_if, C.INJ_TX, "arp", idx)]


def routed_pod_neighbours(t: Tables) -> dict[int, int]:
    """The routed pods of the node network (AWS VPC CNI, Azure CNI): address -> the MAC of
    their node's eth0, which answers ARP for them (the datapath's ``_seed_neighbours``)."""
    net = next(((int(t.rt_prefix[r]), int(t.rt_len[r])) for r in range(len(t.rt_kind))
                if int(t.rt_kind[r]) == C.RT_NODE_NET), None)
    if net is None:
        return {}
    mask = (0xFFFFFFFF << (32 - net[1])) & 0xFFFFFFFF
    out = {}
    for i in range(t.n_ifaces):
        if (int(t.if_kind[i]) == C.IF_POD_ETH and int(t.if_peer[i]) >= 0
                and (int(t.if_kind[int(t.if_peer[i])]) == C.IF_VETH_HOST or int(t.if_kind[
                    int(t.node_eth_if[int(t.if_node[i])])]) == C.IF_BRIDGE)
                and (int(t.if_ip[i]) & mask) == net[0]):
            out[int(t.if_ip[i])] = int(t.if_mac[int(t.node_eth_if[int(t.if_node[i])])])
    return out


def longest_route(t: Tables, dst: int) -> int:
    """The id of the longest route of the shared table matching ``dst`` (R-2), -1: none (a
    scan: for names and the slow path, not the fast path)."""
    best, best_len = -1, -1
    for r in range(len(t.rt_prefix)):
        ln = int(t.rt_len[r])
        mask = (0xFFFFFFFF << (32 - ln)) & 0xFFFFFFFF if ln else 0
        if ln > best_len and (dst & mask) == int(t.rt_prefix[r]):
            best, best_len = r, ln
    return best


def route_dev(t: Tables, node: int, dst: int) -> int:
    """The interface ``node`` routes ``dst`` out of (R-1, R-2), -1: no route; as the
    datapath's ``route_dev`` (for names, not the fast path); a node with its own table (R-2):
    its first route containing ``dst`` (-reason for a discarding one)."""
    if int(t.node_rt_count[node]):
        s = int(t.node_rt_start[node])
        for k in range(s, s + int(t.node_rt_count[node])):
            ln = int(t.nrt_len[k])
            if (dst ^ int(t.nrt_prefix[k])) & ((0xFFFFFFFF << (32 - ln)) & 0xFFFFFFFF) == 0:
                return int(t.nrt_if[k])
        return -1
    best = longest_route(t, dst)
    if best < 0:
        return -1
    if int(t.rt_kind[best]) == C.RT_POD_CIDR:
        dev = int(t.rt_dev[best]) if len(t.rt_dev) else -1
        if int(t.rt_node[best]) == node:
            return dev if dev >= 0 else int(t.node_br_if[node])
        if len(t.tun_if) and int(t.tun_if[node * t.n_nodes + int(t.rt_node[best])]) >= 0:
            return int(t.tun_if[node * t.n_nodes + int(t.rt_node[best])])  # kube-router IPIP
        if 0 < t.ovs_tunnel < C.ANTREA_NOENCAP:  # Antrea: onlink via the peer's gateway
            return int(t.node_br_if[node])
        return int(t.node_vtep_if[node]) if t.vxlan else int(t.node_eth_if[node])
    return int(t.node_eth_if[node])


def gateway_next_hop(t: Tables, dst: int) -> int:
    """The next hop the gateway routes ``dst`` to (the datapath's ``gw_rcv``): ``dst``
    itself on the node network, the owning node's address for a pod CIDR (host-gw) or a
    routed LoadBalancer address; 0: the default route, out of the cluster."""
    best = longest_route(t, dst)
    if best < 0:
        return 0
    kind = int(t.rt_kind[best])
    if kind == C.RT_NODE_NET:
        return dst
    if (kind == C.RT_POD_CIDR and not t.vxlan) or kind == C.RT_LB:
        return int(t.node_ip[int(t.rt_node[best])])
    return 0


def _pick(backend: str | None) -> ModuleType:
    if backend in (None, "auto"):
        return _backend.impl
    try:
        return _backend.IMPLEMENTATIONS[backend]
    except KeyError:
        raise KemuError(f"backend {backend!r} is not available (have: "
                        f"{', '.join(sorted(_backend.IMPLEMENTATIONS))})") from None
