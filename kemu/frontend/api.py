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
from typing import TYPE_CHECKING, Any

from kemu.control.cluster import Cluster, load_cluster
from kemu.dataplane import codes as C
from kemu.errors import KemuError, ManifestError, TopologyError
from kemu.frontend import names
from kemu.frontend.engine import Engine
from kemu.frontend.names import Target
from kemu.frontend.trace import Trace

if TYPE_CHECKING:
    from kemu.frontend.dig import DigResult


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
    def resolve_source(self, src: str) -> Target | None:
        """What a source name means (``kemu.frontend.names``): a pod (a workload's or a
        Service's: ``deploy/frontend``, ``shop/sts/redis``, ``svc/web``, chosen
        deterministically, ``note`` says which), an external host, a node or an address;
        None for a full interface name (``node1/cbr0``)."""
        if src in self.tables.if_name:
            return None
        return names.resolve_source(self.model, src)

    def interface_of(self, src: str) -> int:
        """Resolve a source to the interface it transmits on: any name of
        ``resolve_source`` (``ns/pod``, a pod name in ``default``, ``[ns/]kind/name`` of a
        workload or Service, a Service's DNS name, ``ext/<name>`` or an external host's name,
        ``node/<name>`` or a node name (the node's own processes), an IP address), or a full
        interface name (``node1/cbr0``). Unknown names raise ``TopologyError`` naming the
        nearest valid ones."""
        t = self.tables
        target = self.resolve_source(src)
        if target is None:
            return t.iface(src)
        if target.kind == "pod":
            n = t.pod_key.index(target.name)
            i = int(t.pod_eth_if[n])
            if i < 0:  # hostNetwork pod: the node's stack (M-3)
                pod = self.model.pods[n]
                return int(t.node_local_if[t.node_name.index(pod.node_name)])
            return i
        if target.kind == "external":
            return int(t.ext_if[t.ext_name.index(target.name)])
        if target.kind == "node":
            return int(t.node_local_if[t.node_name.index(target.name)])
        owner = t.owner_of(int(target.ip))  # type: ignore[arg-type]
        if owner < 0:
            raise TopologyError(
                f"no pod, host or node owns {src}: a machine outside the cluster is an "
                "external host of the Cluster document (spec.externalHosts: [{name: client, "
                "ip: <an address of spec.nodeNetwork>}]), then the source ext/client")
        if int(t.if_kind[owner]) in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_OVS_GW):
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
            if ipaddress.IPv4Address(packet[IP].dst).is_loopback:
                # the local table's `local 127.0.0.0/8 dev lo src 127.0.0.1`: a packet to a
                # loopback address leaves from 127.0.0.1 (fib_lookup's preferred source)
                packet[IP].src = "127.0.0.1"
            else:
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

    def replace_route(self, node: str, prefix: str, via: str | None = None,
                      dev: str | None = None, *, type: str = "unicast",  # noqa: A002
                      onlink: bool = False) -> None:
        """``ip route replace PREFIX [via VIA] [dev DEV] [onlink]`` on ``node`` (``type``
        ``blackhole``, ``unreachable`` or ``prohibit``: ``ip route replace TYPE PREFIX``);
        as ``spec.routes`` in the Cluster document (R-2, ``kemu.compiler.routes``). The
        node's table takes it from the next frame on, swapped in as for any change of the
        cluster (conntrack kept, CT-4; FDBs flushed, relearned by a warm cluster).
        A route Linux refuses (unknown device, a next hop no connected route reaches) is a
        ``TopologyError``."""
        if type not in ("unicast", "blackhole", "unreachable", "prohibit"):
            raise TopologyError(f"replace_route: type {type!r}: expected unicast, blackhole, "
                                "unreachable or prohibit")
        if type != "unicast" and (via is not None or dev is not None or onlink):
            raise TopologyError(f"replace_route: a {type} route has no via, dev or onlink")
        self._route_change(node, prefix, via=via, dev=dev or "", type=type, onlink=onlink)

    def delete_route(self, node: str, prefix: str) -> None:
        """``ip route del PREFIX`` on ``node``; a ``TopologyError`` if it has no such route."""
        self._route_change(node, prefix, delete=True)

    def routes(self, node: str) -> list[str]:
        """``ip route`` on ``node``: its main table as text, most specific first, with the
        routes set by ``replace_route``/``delete_route`` or ``spec.routes``."""
        from kemu.compiler.routes import node_routes

        name = self.tables.node_name[self._node(node)]
        return [r.render() for r in node_routes(self.model)[name]]

    def _route_change(self, node: str, prefix: str, **change: Any) -> None:
        from kemu.compiler.routes import apply_changes, node_routes
        from kemu.control.model import RouteChange

        name = self.tables.node_name[self._node(node)]
        try:
            net = ipaddress.IPv4Network("0.0.0.0/0" if prefix == "default" else prefix)
            via = change.pop("via", None)
            ch = RouteChange(node=name, prefix=net, via=None if via is None
                             else ipaddress.IPv4Address(via), **change)
        except ValueError as err:
            raise TopologyError(f"route {prefix} on {name}: {err}") from None
        apply_changes(self.model, node_routes(self.model), [ch])  # refused: nothing changes
        self.engine.settle()  # a due warm start's learning first, as before any state write
        self.model.config.routes.append(ch)
        self.model.version += 1

    def dump(self) -> str:
        """FDBs, conntrack, neighbours and affinity as deterministic text."""
        return self.engine.dump()

    # ------------------------------------------------------------ a pod's resolver
    def dig(self, pod: str, name: str, qtype: str = "A", *, tcp: bool = False
            ) -> DigResult:
        """Look ``name`` up from ``pod`` (``ns/pod``) as its resolver does: its resolv.conf's
        search list and ndots, each query a packet through the datapath to its nameserver
        and back (UDP, or TCP with ``tcp=True``). The result holds every query (``queries``)
        and the one that answered (``answer``, ``records``); see ``kemu.frontend.dig``.
        """
        from kemu.frontend.dig import lookup

        return lookup(self, pod, name, qtype, tcp=tcp)

    # ------------------------------------------------------------ NetworkPolicy (#17)
    def apply(self, *sources: str | os.PathLike | dict | list) -> list[str]:
        """Add or replace NetworkPolicy and CiliumNetworkPolicy objects (paths, dicts, lists
        of dicts, or YAML text: a string with a newline) in the running cluster; returns
        their ``ns/name``.

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
            if kind not in ("NetworkPolicy", "CiliumNetworkPolicy"):
                name = (doc.obj.get("metadata") or {}).get("name", "") \
                    if isinstance(doc.obj, dict) else ""
                raise KemuError(f"{doc.source}: {kind}/{name}: only NetworkPolicy and "
                                "CiliumNetworkPolicy can be applied to a running cluster")
        parsed = loader.parse(docs, problems)
        if problems:
            raise ManifestError(problems)
        model = self.model
        new = {(p.kind, p.key): p for p in parsed.policies}
        model.policies = sorted([p for p in model.policies if (p.kind, p.key) not in new]
                                + list(new.values()), key=lambda p: p.key)
        for pol in new.values():
            if pol.namespace not in model.namespaces:
                model._ensure_namespace(pol.namespace)
        model.version += 1
        return sorted(p.key for p in new.values())

    def delete(self, kind: str, name: str) -> None:
        """Remove one NetworkPolicy or CiliumNetworkPolicy (``delete("NetworkPolicy",
        "ns/name")``, ``delete("CiliumNetworkPolicy", "ns/name")``; a name without a
        namespace is in ``default``); recompiled at the next batch, conntrack kept (as
        ``apply``). ``KemuError`` for another kind or a policy that does not exist."""
        kinds = {"networkpolicy": "NetworkPolicy", "networkpolicies": "NetworkPolicy",
                 "netpol": "NetworkPolicy", "ciliumnetworkpolicy": "CiliumNetworkPolicy",
                 "ciliumnetworkpolicies": "CiliumNetworkPolicy", "cnp": "CiliumNetworkPolicy"}
        want = kinds.get(kind.lower())
        if want is None:
            raise KemuError(f"only NetworkPolicy and CiliumNetworkPolicy can be deleted from "
                            f"a running cluster, not {kind}")
        key = name if "/" in name else f"default/{name}"
        model = self.model
        kept = [p for p in model.policies if p.key != key or p.kind != want]
        if len(kept) == len(model.policies):
            raise KemuError(f"no {want} {key} "
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
