"""The Python API: load a cluster, send packets from pods, external hosts or nodes, get traces,
replay captures.

::

    import kemu
    from scapy.layers.inet import IP, TCP
    cluster = kemu.load("examples/cluster")
    trace = cluster.send(IP(dst="10.96.0.10") / TCP(dport=53), src="default/client")
    print(trace.summary())

``send`` injects one frame where its source lives and follows it, answers included (the
emulated end-host stacks answer unless ``respond=False``); ``send_many`` pushes many frames
through the batch datapath in one call. State (FDBs, conntrack, neighbours, affinity)
persists between sends until ``reset()``. The cluster starts warm, as one that has been
running (bridges have learned every MAC, neighbours are resolved: no first-packet floods);
``cold=True`` starts on empty FDBs to see first-packet behaviour (see ``kemu.frontend.engine``).
Scapy is imported only when a Scapy packet is given.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from kemu.control.cluster import Cluster, load_cluster
from kemu.dataplane import codes as C
from kemu.errors import KemuError, ManifestError, TopologyError
from kemu.frontend.engine import Engine
from kemu.frontend.trace import Trace


class EmulatedCluster:
    """A cluster model plus its running datapath."""

    def __init__(self, model: Cluster, *, backend: str | None = None, seed: int = 0,
                 respond: bool = True, icmp_errors: bool = True,
                 static_neighbours: bool = True, cold: bool = False) -> None:
        self.model = model
        resolver = _dns_resolver(model)
        self.engine = Engine(model, backend=backend, seed=seed, respond=respond,
                             icmp_errors=icmp_errors, static_neighbours=static_neighbours,
                             resolver=resolver, warm=not cold)
        self._clock = 0

    @property
    def tables(self):  # noqa: ANN201 - Tables
        self.engine.sync()
        return self.engine.tables

    @property
    def backend(self) -> str:
        return self.engine.backend

    # ------------------------------------------------------------ where things live
    def interface_of(self, src: str) -> int:
        """Resolve a source: ``ns/pod``, a pod name in ``default``, ``ext/<name>`` or an
        external host's name, ``node/<name>`` or a node name (the node's own processes), an
        IP address, or a full interface name (``node1/cbr0``)."""
        t = self.tables
        if src in t.if_name:
            return t.iface(src)
        key = src if "/" in src else f"default/{src}"
        if key in t.pod_key:
            i = int(t.pod_eth_if[t.pod_key.index(key)])
            if i < 0:  # hostNetwork pod: the node's stack (M-3)
                pod = self.model.pods[t.pod_key.index(key)]
                return int(t.node_local_if[t.node_name.index(pod.node_name)])
            return i
        name = src[4:] if src.startswith("ext/") else src
        if name in t.ext_name:
            return int(t.ext_if[t.ext_name.index(name)])
        name = src[5:] if src.startswith("node/") else src
        if name in t.node_name:
            return int(t.node_local_if[t.node_name.index(name)])
        try:
            ip = int(ipaddress.IPv4Address(src))
        except ValueError:
            raise TopologyError(f"unknown source {src!r}: not a pod, external host, node, "
                                "interface or IPv4 address of this cluster") from None
        owner = t.owner_of(ip)
        if owner < 0:
            raise TopologyError(f"no pod, host or node owns {src}")
        if int(t.if_kind[owner]) in (C.IF_NODE_ETH, C.IF_BRIDGE):
            return int(t.node_local_if[int(t.if_node[owner])])
        return owner

    # ------------------------------------------------------------ sending
    def frame_from(self, packet: Any, iface: int) -> tuple[bytes, int]:
        """(Ethernet frame bytes, injection mode) for bytes or a Scapy packet."""
        if isinstance(packet, (bytes, bytearray, memoryview)):
            return bytes(packet), C.INJ_TX
        from scapy.layers.inet import IP
        from scapy.layers.l2 import Ether

        t = self.tables
        if IP in packet and packet[IP].fields.get("src") is None:
            packet = packet.copy()
            packet[IP].src = str(ipaddress.IPv4Address(int(t.if_ip[iface]))) if int(
                t.if_kind[iface]) != C.IF_NODE_LOCAL else "0.0.0.0"
        if Ether not in packet:
            return bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") / packet), \
                C.INJ_TX_FIXL2
        return bytes(packet), C.INJ_TX_FIXL2

    def send(self, packet: Any, src: str | None = None, *, at: str | None = None,
             fix_l2: bool | None = None, time_ns: int | None = None) -> Trace:
        """Inject one frame from ``src`` (transmitted by it) or received ``at`` an interface."""
        return self.send_many([packet], src=src, at=at, fix_l2=fix_l2, time_ns=time_ns)

    def send_many(self, packets: list[Any], src: str | None = None, *, at: str | None = None,
                  fix_l2: bool | None = None, time_ns: int | None = None) -> Trace:
        if (src is None) == (at is None):
            raise TopologyError("give exactly one of src= (who sends) or at= (where it arrives)")
        iface = self.interface_of(src if src is not None else at)  # type: ignore[arg-type]
        frames = []
        for p in packets:
            data, mode = self.frame_from(p, iface)
            if fix_l2 is not None:
                mode = C.INJ_TX_FIXL2 if fix_l2 else C.INJ_TX
            if at is not None:
                mode = C.INJ_RX
            frames.append((data, iface, mode))
        if time_ns is None:
            self._clock = max(self._clock + 1_000_000, self.engine.clock_ns + 1_000_000)
            time_ns = self._clock
        packets_out = self.engine.exchange(frames, time_ns)
        self._clock = max(self._clock, self.engine.clock_ns)
        return Trace(self.engine.tables, packets_out, sender=iface if src is not None else -1,
                     respond=self.engine.respond)

    def replay(self, capture: str | os.PathLike, out: str | os.PathLike | None = None,
               flows: str | os.PathLike | None = None, **options: Any):  # noqa: ANN201
        """Replay a capture (see ``kemu.frontend.replay``); returns a ``ReplaySummary``."""
        from kemu.frontend.replay import ReplayOptions, replay

        return replay(self, capture, out, flows, ReplayOptions(**options))

    def advance(self, seconds: float) -> None:
        """Move the emulated clock forward (FDB ageing, conntrack and affinity timeouts)."""
        self._clock += int(seconds * 1e9)
        self.engine.clock_ns = max(self.engine.clock_ns, self._clock)

    def reset(self) -> None:
        """Forget all state (FDBs, conntrack, neighbours, affinity); a warm cluster learns
        everything again before the next frame."""
        self.engine.reset()

    # ------------------------------------------------------------ state a tool can set
    def _node(self, node: str) -> int:
        t = self.tables
        name = node[5:] if node.startswith("node/") else node
        if name not in t.node_name:
            raise TopologyError(f"unknown node {node!r} (have: {', '.join(t.node_name)})")
        return t.node_name.index(name)

    def flush_conntrack(self, node: str | None = None) -> None:
        """``conntrack -F`` on ``node`` (every node when None). ClientIP affinity records
        (``recent`` lists) are not conntrack and stay."""
        self.engine.settle()
        self.engine.dp.conntrack_flush(None if node is None else self._node(node))

    def flush_fdb(self, bridge: str) -> None:
        """``bridge fdb flush`` of one bridge: ``node1/cbr0`` (or ``node1``: its pod
        bridge), or ``node-network``. Nothing relearns it but traffic."""
        t = self.tables
        name = bridge if bridge in t.br_name else f"{bridge}/cbr0"
        if name not in t.br_name:
            raise TopologyError(f"unknown bridge {bridge!r} (have: {', '.join(t.br_name)})")
        self.engine.settle()  # a warm start's learning first: the flush is over it
        self.engine.dp.fdb_flush(t.br_name.index(name))

    def delete_neighbour(self, node: str, ip: str) -> bool:
        """``ip neigh del IP`` on ``node``; False if the node had no entry for it. Without
        static neighbours the node ARPs again; with them nobody answers (ICMP 3/1)."""
        n = self._node(node)
        self.engine.settle()
        return bool(self.engine.dp.neigh_delete(n, int(ipaddress.IPv4Address(ip))))

    def dump(self) -> str:
        """FDBs, conntrack, neighbours and affinity as deterministic text."""
        return self.engine.dump()

    # ------------------------------------------------------------ NetworkPolicy (#17)
    def apply(self, *sources: str | os.PathLike | dict | list) -> list[str]:
        """Add or replace NetworkPolicy objects (paths, dicts, lists of dicts, or YAML text:
        a string with a newline) in the running cluster; returns their ``ns/name``.

        The tables are recompiled and swapped at the next batch boundary; conntrack stays,
        so established connections keep flowing whatever the new policies say (as the
        conntrack-based kube-router, Calico and Cilium keep them) while every NEW connection
        is judged by the new policies. Any other kind is refused (``KemuError``), as is a
        policy with problems (``ManifestError``, naming file, object and field).
        """
        from kemu.control import loader, manifests
        from kemu.control.cluster import API_SOURCE

        problems: list = []
        docs = []
        for src in sources:
            if isinstance(src, str) and "\n" in src:
                docs.extend(manifests.parse_text(src, API_SOURCE, problems))
            else:
                more, probs = manifests.read(src)
                docs.extend(more)
                problems.extend(probs)
        if problems:
            raise ManifestError(problems)
        for doc in docs:
            kind = doc.obj.get("kind") if isinstance(doc.obj, dict) else None
            if kind != "NetworkPolicy":
                name = (doc.obj.get("metadata") or {}).get("name", "") \
                    if isinstance(doc.obj, dict) else ""
                raise KemuError(f"{doc.source}: {kind}/{name}: only NetworkPolicy can be "
                                "applied to a running cluster")
        parsed = loader.parse(docs, problems)
        if problems:
            raise ManifestError(problems)
        model = self.model
        new = {p.key: p for p in parsed.policies}
        model.policies = sorted([p for p in model.policies if p.key not in new]
                                + list(new.values()), key=lambda p: p.key)
        for pol in new.values():
            if pol.namespace not in model.namespaces:
                model._ensure_namespace(pol.namespace)
        model.version += 1
        return sorted(new)

    def delete(self, kind: str, name: str) -> None:
        """Remove one NetworkPolicy (``delete("NetworkPolicy", "ns/name")``; a name without
        a namespace is in ``default``); recompiled at the next batch, conntrack kept (as
        ``apply``). ``KemuError`` for another kind or a policy that does not exist."""
        if kind.lower() not in ("networkpolicy", "networkpolicies", "netpol"):
            raise KemuError(f"only NetworkPolicy can be deleted from a running cluster, "
                            f"not {kind}")
        key = name if "/" in name else f"default/{name}"
        model = self.model
        kept = [p for p in model.policies if p.key != key]
        if len(kept) == len(model.policies):
            raise KemuError(f"no NetworkPolicy {key} "
                            f"(have: {', '.join(p.key for p in model.policies) or 'none'})")
        model.policies = kept
        model.version += 1


def load(*sources: str | os.PathLike | dict | list, **options: Any) -> EmulatedCluster:
    """Load manifests (paths, dicts) into an emulated cluster; see ``EmulatedCluster``."""
    return EmulatedCluster(load_cluster(*sources), **options)


def _dns_resolver(model: Cluster):  # noqa: ANN202
    try:
        from kemu.control import dns
    except ImportError:
        return None
    from kemu.dataplane.dnswire import make_resolver

    return make_resolver(model, dns)
