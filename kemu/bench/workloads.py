"""Benchmark workloads: synthetic clusters, frame batches and capture files, all deterministic.

Everything here is a pure function of its arguments (sizes and a seed): the same call gives
the same manifests and the same bytes. Frames are laid out with numpy, never with Scapy or a
Python object per frame, so millions of them take seconds.

- ``synthetic_cluster(nodes, pods, services)``: manifests as dicts: a kemu ``Cluster``
  document, Pods already placed (``spec.nodeName``, what the scheduler wrote) and ClusterIP
  Services. Service ``svc<i>`` has ``backends`` pods ``svc<i>-<k>`` on consecutive nodes (so a
  client on another node exists), found by its selector or, with ``endpoints="slices"``, listed
  in an EndpointSlice as in a cluster dump (``kubectl get -o yaml``: pod IPs and node pod
  CIDRs given); the remaining pods ``client<j>`` even out the pods per node.
- ``cluster_mix(tables)``: 64-byte TCP ACK frames over ``n_flows`` flows, by flow: half pod ->
  ClusterIP with every endpoint on another node, a quarter same-node pod -> pod, a quarter
  cross-node pod -> pod. The timed frames cycle through the flows in a shuffled order; ``warm``
  fills the FDBs (an ARP from every pod and every node, as everyday traffic would) and
  conntrack (one frame per flow; loose pickup: an ACK without an entry creates an
  ESTABLISHED one, in kemu and in the kernel) before any timing.
- ``synthetic_policies(n, namespaces)``: NetworkPolicies over the synthetic cluster that
  isolate its pods and allow exactly the cluster mix, and the usual recipes in namespaces
  without pods (the ``policy`` row of ``kemu bench``, the compile-time measurement).
- ``churn(tables)``: 100k flows, mostly new: a SYN per flow, half of them followed by one data
  frame of an IMIX size (64, 576, 1514 bytes in 7:4:1) a little later; same flow kinds.
- ``drive(dp, workload, res, batch)``: push a workload through ``Datapath.process`` in batches.
- ``write_pcap(path, workload)``: a classic pcap (nanosecond timestamps) for ``kemu replay``.
- ``route_table(n)``, ``route_addresses``: Internet-shaped prefixes and lookup addresses.

Frames a pod transmits are addressed as its stack would: source MAC the pod's, destination
MAC the peer pod's on the same node, else the node bridge's (``cbr0``); they enter at the
pod's ``eth0`` with ``INJ_TX``. IPv4 and TCP checksums are correct.
"""

from __future__ import annotations

import ipaddress
import os
import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kemu.dataplane import codes as C
from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables
from kemu.io.frames import copy_segments

MIX_SERVICE, MIX_SAME_NODE, MIX_CROSS_NODE = 0, 1, 2
MIX_NAMES = ("pod->ClusterIP (remote endpoint)", "pod->pod same node", "pod->pod cross node")
TCP_ACK, TCP_PSH_ACK, TCP_SYN = 0x10, 0x18, 0x02
HEADER = 54  # Ethernet + IPv4 + TCP, no options
IMIX = ((64, 7), (576, 4), (1514, 1))
EPOCH_NS = 1_700_000_000 * 10**9
POD_PORT = 8080
SERVICE_PORT = 80
POD_FRAME, NODE_FRAME = -1, -2  # ``Workload.flow`` of warm-up frames that are in no flow


# ------------------------------------------------------------------ synthetic clusters
def synthetic_cluster(nodes: int = 3, pods: int = 120, services: int = 30, *,
                      backends: int = 2, mode: str = "host-gw", name: str = "bench",
                      endpoints: str = "selector", cni: str | dict[str, Any] | None = None
                      ) -> list[dict[str, Any]]:
    """Manifests of a cluster of ``nodes`` nodes, ``pods`` pods and ``services`` Services.

    Each Service has ``backends`` endpoints (at most ``nodes - 1``, so some node holds none),
    on consecutive nodes; clients fill the remaining pods. Address ranges grow with the size:
    a /24 of pods per node from 10.244.0.0/16, or 10.128.0.0/9 beyond 256 nodes; the node
    network is 172.18.0.0/24, or 172.16.0.0/12 beyond 250 nodes.

    ``cni``: the Cluster's ``spec.cni`` (a built mode's name or a mapping with options; None:
    flannel in ``mode``).

    ``endpoints="selector"``: Services select their pods by label (kemu derives the
    EndpointSlices). ``"slices"``: what a full cluster dump holds instead: nodes with their
    pod CIDRs, pods with their IPs, selector-less Services and their EndpointSlices.
    """
    if endpoints not in ("selector", "slices"):
        raise ValueError(f"endpoints must be 'selector' or 'slices', not {endpoints!r}")
    backends = max(1, min(backends, nodes - 1)) if nodes > 1 else 1
    if services * backends > pods:
        raise ValueError(f"{services} services x {backends} backends need more than {pods} pods")
    if pods > nodes * 250:
        raise ValueError(f"{pods} pods do not fit {nodes} nodes (250 per node)")
    cluster_net = 0x0AF40000 if nodes <= 256 else 0x0A800000  # 10.244/16, 10.128/9
    spec: dict[str, Any] = {
        "clusterCIDR": "10.244.0.0/16" if nodes <= 256 else "10.128.0.0/9",
        "serviceCIDR": "10.96.0.0/12",
        "nodeNetwork": "172.18.0.0/24" if nodes <= 250 else "172.16.0.0/12",
        "mode": mode,
    }
    if cni is not None:  # spec.mode is flannel's alone
        spec["cni"] = CNI_VARIANTS.get(cni, cni) if isinstance(cni, str) else cni
        del spec["mode"]
        if endpoints != "selector" and (cni in ROUTED or isinstance(cni, dict)
                                        and cni.get("name") in ROUTED):
            raise ValueError("a routed CNI's pods take node-network addresses: make its "
                             "cluster with endpoints='selector'")
    slices = endpoints == "slices"
    if slices:
        spec["nodes"] = [{"name": f"node{i + 1}",
                          "podCIDR": f"{_dotted(cluster_net + (i << 8))}/24"}
                         for i in range(nodes)]
    else:
        spec["nodes"] = nodes if nodes <= 4096 else [f"node{i}" for i in range(1, nodes + 1)]
    docs: list[dict[str, Any]] = [{"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster",
                                   "metadata": {"name": name}, "spec": spec}]
    count = [0] * nodes

    def pod(pname: str, labels: dict[str, str], node: int) -> dict[str, Any]:
        count[node] += 1
        ip = _dotted(cluster_net + (node << 8) + 1 + count[node]) if slices else None
        return _pod(pname, labels, node + 1, ip)

    members: list[list[dict[str, Any]]] = []
    for s in range(services):
        members.append([])
        for k in range(backends):
            docs.append(pod(f"svc{s}-{k}", {"app": f"svc{s}"}, (s + k) % nodes))
            members[-1].append(docs[-1])
    clients = pods - services * backends
    # clients even the nodes out: round robin over the nodes still short of their share
    share = [pods // nodes + (1 if n < pods % nodes else 0) for n in range(nodes)]
    short = [max(0, share[n] - count[n]) for n in range(nodes)]
    order = [n for r in range(max(short, default=0)) for n in range(nodes) if short[n] > r]
    order += [j % nodes for j in range(clients - len(order))]
    for j in range(clients):
        docs.append(pod(f"client{j}", {"app": "client"}, order[j]))
    for s in range(services):
        svc: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                               "metadata": {"name": f"svc{s}", "namespace": "default"},
                               "spec": {"ports": [{"name": "http", "port": SERVICE_PORT,
                                                   "targetPort": "http"}]}}
        docs.append(svc)
        if not slices:
            svc["spec"]["selector"] = {"app": f"svc{s}"}
            continue
        svc["spec"]["ports"][0]["targetPort"] = POD_PORT
        docs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc{s}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": f"svc{s}"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": POD_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [m["status"]["podIP"]], "conditions": {"ready": True},
                           "nodeName": m["spec"]["nodeName"],
                           "targetRef": {"kind": "Pod", "namespace": "default",
                                         "name": m["metadata"]["name"]}}
                          for m in members[s]]})
    return docs


# ``kemu bench --cni NAME``: a built mode by name, or one of these variants of a mode
CNI_VARIANTS: dict[str, Any] = {"azure-overlay": {"name": "azure", "mode": "overlay"},
                                "azure-bridge": {"name": "azure", "mode": "bridge"},
                                "cilium-native": {"name": "cilium", "routingMode": "native"}}
# pods addressed from the node network
ROUTED = ("aws-vpc", "azure", "azure-overlay", "azure-bridge")


def _dotted(v: int) -> str:
    return f"{v >> 24 & 255}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"


def _pod(name: str, labels: dict[str, str], node: int, ip: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": f"node{node}",
                 "containers": [{"name": "app", "image": "example/app:1",
                                 "ports": [{"name": "http", "containerPort": POD_PORT}]}]}}
    if ip is not None:
        doc["status"] = {"podIP": ip}
    return doc


def synthetic_policies(n_policies: int = 1000, namespaces: int = 100, services: int = 30,
                       cluster_cidr: str = "10.244.0.0/16") -> list[dict[str, Any]]:
    """``n_policies`` NetworkPolicies spread evenly over ``namespaces`` namespaces: ``default``
    (the synthetic cluster's pods) and ``ns1``.. (labelled ``team``, without pods).

    In ``default`` they isolate every pod both ways and then allow exactly the cluster mix
    (every pod -> pod and pod -> Service endpoint connection on the pod port, DNS to
    kube-system): a default deny, egress to the namespace's pods and to DNS, ingress of the
    clients on the named port ``http``, and per group of ``svc<i>`` Services
    (``matchExpressions``) ingress from the namespace's pods on ``http`` or a port range, from
    the cluster CIDR (ipBlock with an except) and from other teams' namespaces. Elsewhere: the
    usual recipes (deny-all, allow from the same namespace, from a team's namespaces,
    frontend -> backend on named ports, egress DNS and the Internet except private ranges).
    """
    per_ns = max(1, n_policies // namespaces)
    docs: list[dict[str, Any]] = []
    net = ipaddress.IPv4Network(cluster_cidr)
    last = str(ipaddress.IPv4Network((int(net.broadcast_address) - 3, 30)))  # no pod there

    def pol(ns: str, name: str, spec: dict[str, Any]) -> None:
        if len(docs) < n_policies:
            docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"name": name, "namespace": ns}, "spec": spec})

    for n in range(1, namespaces):
        docs.append({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": f"ns{n}", "labels": {"team": f"t{n % 7}"}}})
    n_docs_ns = len(docs)
    n_policies += n_docs_ns  # the Namespace objects do not count
    http = {"port": "http"}
    pod_port = {"port": POD_PORT}
    fixed = [
        ("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ("egress-pods", {"podSelector": {}, "egress": [
            {"to": [{"podSelector": {}}], "ports": [pod_port]}]}),
        ("egress-dns", {"podSelector": {}, "egress": [
            {"to": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "kube-system"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
        ("clients-in", {"podSelector": {"matchLabels": {"app": "client"}}, "ingress": [
            {"from": [{"podSelector": {}}], "ports": [http]}]}),
    ]
    for name, spec in fixed:
        pol("default", name, spec)
    groups = max(1, per_ns - len(fixed))
    for g in range(groups):
        apps = [f"svc{s}" for s in range(services) if s % groups == g]
        if not apps:
            continue
        pol("default", f"svc-group{g}", {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                  "values": apps}]},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                          {"podSelector": {"matchExpressions": [
                              {"key": "app", "operator": "Exists"}]}}],
                 "ports": [http, {"port": POD_PORT, "endPort": POD_PORT + 10}]},
                {"from": [{"ipBlock": {"cidr": cluster_cidr, "except": [last]}}],
                 "ports": [pod_port]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{g % 7}"}},
                           "podSelector": {"matchLabels": {"role": "monitor"}}}],
                 "ports": [{"port": "metrics"}]}]})
    while len(docs) - n_docs_ns < per_ns and len(docs) < n_policies:
        pol("default", f"extra{len(docs)}", {"podSelector": {"matchLabels": {
            "app": f"svc{len(docs) % max(1, services)}"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                 "ports": [http]}]})
    recipes = [
        lambda ns, k: {"podSelector": {}},
        lambda ns, k: {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
        lambda ns, k: {"podSelector": {"matchLabels": {"app": f"backend{k}"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": f"frontend{k}"}}}],
             "ports": [{"port": "http"}, {"port": 8443}]}]},
        lambda ns, k: {"podSelector": {"matchLabels": {"app": f"db{k}"}}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{k % 7}"}}}],
             "ports": [{"port": 5432}]}]},
        lambda ns, k: {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
                "k8s-app": "kube-dns"}}}], "ports": [{"protocol": "UDP", "port": 53}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [
                "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}]}]},
        lambda ns, k: {"podSelector": {"matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["public"]}]}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "default"}}}],
             "ports": [{"port": 9000, "endPort": 9100}]}]},
    ]
    for n in range(1, namespaces):
        for k in range(per_ns):
            pol(f"ns{n}", f"p{k}", recipes[k % len(recipes)](f"ns{n}", k))
    return docs


# ------------------------------------------------------------------ flows and frames
@dataclass
class Flows:
    """One row per flow: where it enters and the headers of its frames."""

    kind: np.ndarray     # int8, MIX_*
    in_if: np.ndarray    # int32, the client pod's eth0
    src_mac: np.ndarray  # int64
    dst_mac: np.ndarray  # int64
    src_ip: np.ndarray   # uint32
    dst_ip: np.ndarray   # uint32
    sport: np.ndarray    # uint16
    dport: np.ndarray    # uint16
    dst_if: np.ndarray   # int32, the pod eth0 it should reach (-1: a Service, any backend)
    sp: np.ndarray       # int32, the service port (-1: pod to pod)
    n_ifaces: int        # of the tables the flows were made for

    def __len__(self) -> int:
        return len(self.kind)


@dataclass
class Workload:
    """Frames in one buffer plus the per-frame arrays ``Datapath.process`` takes."""

    name: str
    buf: np.ndarray       # uint8
    offsets: np.ndarray   # int64
    lengths: np.ndarray   # int32
    in_if: np.ndarray     # int32
    in_mode: np.ndarray   # uint8
    ts_ns: np.ndarray     # int64
    flow: np.ndarray      # int32, the row in ``flows`` of each frame (< 0: POD_/NODE_FRAME)
    flows: Flows
    warm: Workload | None = None  # not timed: run first to fill FDBs and conntrack

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def n_bytes(self) -> int:
        return int(self.lengths.sum())

    def frame(self, i: int) -> bytes:
        off = int(self.offsets[i])
        return self.buf[off: off + int(self.lengths[i])].tobytes()

    def head(self, n: int) -> Workload:
        """The first ``n`` frames (a smaller run of the same workload for slow peers)."""
        return replace(self, offsets=self.offsets[:n], lengths=self.lengths[:n],
                       in_if=self.in_if[:n], in_mode=self.in_mode[:n], ts_ns=self.ts_ns[:n],
                       flow=self.flow[:n])

    def take(self, idx: np.ndarray) -> Workload:
        """Frames ``idx`` (indices into this workload), sharing its buffer."""
        return replace(self, offsets=self.offsets[idx], lengths=self.lengths[idx],
                       in_if=self.in_if[idx], in_mode=self.in_mode[idx], ts_ns=self.ts_ns[idx],
                       flow=self.flow[idx], warm=None)

    def warm_for(self, lo: int, hi: int) -> Workload | None:
        """The part of ``warm`` that frames ``lo..hi`` need: the frames that teach the
        bridges every pod (flow -1) and the first frame of each of their flows."""
        if self.warm is None:
            return None
        need = np.unique(self.flow[lo:hi])
        wf = self.warm.flow
        return self.warm.take(np.flatnonzero((wf < 0) | np.isin(wf, need)))

    def shifted(self, ns: int) -> Workload:
        """The same frames ``ns`` later on the emulated clock (a fresh timestamps array)."""
        return replace(self, ts_ns=self.ts_ns + ns)


class _Topology:
    """The parts of ``Tables`` a pod's stack uses to address its frames."""

    def __init__(self, t: Tables) -> None:
        pod_if = np.flatnonzero(t.if_kind == C.IF_POD_ETH).astype(np.int32)
        if not len(pod_if):
            raise ValueError("the cluster has no pods with their own network")
        self.pod_if = pod_if
        self.ip = t.if_ip[pod_if].astype(np.uint32)
        self.mac = t.if_mac[pod_if].astype(np.int64)
        self.node = t.if_node[pod_if].astype(np.int32)
        self.n_nodes = t.n_nodes
        # where a pod's frames go first: its node's bridge, or (the routed CNIs: /32, default
        # via 169.254.1.1) its host veth, for every destination
        peer = t.if_peer[pod_if].astype(np.int64)
        self.routed = t.if_kind[peer] == C.IF_VETH_HOST
        self.gw_mac = np.where(self.routed, t.if_mac[peer],
                               t.if_mac[t.node_br_if][self.node]).astype(np.int64)
        # Azure CNI bridge mode: pods on the VNet's L2, default via its gateway; a pod of
        # another node is reached at that node's MAC (the NIC holding the address)
        self.node_mac = t.if_mac[t.node_eth_if].astype(np.int64)
        self.vnet = t.if_kind[t.node_eth_if][self.node] == C.IF_BRIDGE
        if self.vnet.any() and t.gateway_if >= 0:
            self.gw_mac[self.vnet] = int(t.if_mac[t.gateway_if])
        order = np.argsort(self.node, kind="stable")
        self.by_node = np.split(order, np.cumsum(np.bincount(self.node, minlength=t.n_nodes))[:-1])
        # service ports usable for "endpoint on another node": TCP ClusterIP with backends
        self.sp: list[tuple[int, int, int, frozenset[int]]] = []
        for sp in range(len(t.sp_ip)):
            start, count = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
            if count and int(t.sp_ip[sp]) and int(t.sp_proto[sp]) == C.PROTO_TCP:
                nodes = frozenset(int(x) for x in t.be_node[start: start + count])
                self.sp.append((sp, int(t.sp_ip[sp]), int(t.sp_port[sp]), nodes))


def mix_flows(t: Tables, n_flows: int, seed: int = 1,
              kinds: tuple[int, ...] = (MIX_SERVICE, MIX_SERVICE, MIX_SAME_NODE, MIX_CROSS_NODE)
              ) -> Flows:  # the default is MIX, defined below
    """``n_flows`` flows; flow ``k`` is of kind ``kinds[k % len(kinds)]`` (the cluster mix by
    default). Source ports are unique per client pod, so every flow is distinct."""
    topo = _Topology(t)
    rng = random.Random(seed)
    n_pods = len(topo.pod_if)
    kind = np.array(kinds, np.int8)[np.arange(n_flows) % len(kinds)]
    client = np.zeros(n_flows, np.int64)
    peer = np.full(n_flows, -1, np.int64)
    sp = np.full(n_flows, -1, np.int32)
    dst_ip = np.zeros(n_flows, np.uint32)
    dport = np.full(n_flows, POD_PORT, np.uint16)
    multi = [g for g in topo.by_node if len(g) >= 2]
    pod_nodes = frozenset(int(n) for n in np.unique(topo.node))
    services = [s for s in topo.sp if not pod_nodes <= s[3]]  # some client node has none
    for k in range(n_flows):
        if kind[k] == MIX_SERVICE:
            if not services:
                raise ValueError("no TCP ClusterIP Service has a pod on a node without "
                                 "endpoints: no pod -> ClusterIP (remote endpoint) flows")
            s, vip, port, be_nodes = services[rng.randrange(len(services))]
            for _try in range(64):  # a client pod on a node without an endpoint
                cl = rng.randrange(n_pods)
                if int(topo.node[cl]) not in be_nodes:
                    break
            else:  # endpoints on most nodes: choose among the others explicitly
                others = [g for n, g in enumerate(topo.by_node) if n not in be_nodes and len(g)]
                group = others[rng.randrange(len(others))]
                cl = int(group[rng.randrange(len(group))])
            client[k], sp[k], dst_ip[k], dport[k] = cl, s, vip, port
        elif kind[k] == MIX_SAME_NODE:
            if not multi:
                raise ValueError("no node has two pods: no same-node flows")
            group = multi[rng.randrange(len(multi))]
            i, j = rng.sample(range(len(group)), 2)
            client[k], peer[k] = group[i], group[j]
        else:
            if topo.n_nodes < 2 or max(len(g) for g in topo.by_node) == n_pods:
                raise ValueError("all pods on one node: no cross-node flows")
            cl = rng.randrange(n_pods)
            while True:
                other = rng.randrange(n_pods)
                if topo.node[other] != topo.node[cl]:
                    break
            client[k], peer[k] = cl, other
    has_peer = peer >= 0
    dst_ip[has_peer] = topo.ip[peer[has_peer]]
    same = kind == MIX_SAME_NODE
    dst_mac = topo.gw_mac[client].copy()
    bridged = same & ~topo.routed[client]  # a bridge: straight to the peer's MAC
    dst_mac[bridged] = topo.mac[peer[bridged]]
    vnet = has_peer & ~same & topo.vnet[client]  # Azure bridge mode: the peer's node's MAC
    dst_mac[vnet] = topo.node_mac[topo.node[peer[vnet]]]
    # source ports: per client pod, counting from 10000
    order = np.argsort(client, kind="stable")
    starts = np.searchsorted(client[order], client[order])
    rank = np.empty(n_flows, np.int64)
    rank[order] = np.arange(n_flows) - starts
    if rank.max(initial=0) >= 55000:
        raise ValueError("too many flows per client pod for distinct source ports")
    dst_if = np.where(has_peer, topo.pod_if[np.maximum(peer, 0)], -1).astype(np.int32)
    return Flows(kind=kind, in_if=topo.pod_if[client], src_mac=topo.mac[client],
                 dst_mac=dst_mac.astype(np.int64), src_ip=topo.ip[client], dst_ip=dst_ip,
                 sport=(10000 + rank).astype(np.uint16), dport=dport, dst_if=dst_if, sp=sp,
                 n_ifaces=t.n_ifaces)


def build_frames(name: str, flows: Flows, flow: np.ndarray, lengths: np.ndarray,
                 tcp_flags: np.ndarray | int, ts_ns: np.ndarray) -> Workload:
    """Frames ``i`` of flow ``flow[i]``, ``lengths[i]`` bytes (>= 54; zero payload), TCP
    ``tcp_flags``, correct IPv4 header and TCP checksums."""
    flow = np.asarray(flow, np.int64)
    n = len(flow)
    lengths = np.asarray(lengths, np.int64)
    if n and lengths.min() < HEADER:
        raise ValueError(f"frames shorter than {HEADER} bytes")
    offsets = np.zeros(n, np.int64)
    if n:
        offsets[1:] = np.cumsum(lengths[:-1])
    buf = np.zeros(max(1, int(lengths.sum())), np.uint8)
    flags = np.broadcast_to(np.asarray(tcp_flags, np.int64), (n,))
    h = np.zeros((n, HEADER), np.uint8)
    _put(h, 0, flows.dst_mac[flow], 6)
    _put(h, 6, flows.src_mac[flow], 6)
    _put(h, 12, 0x0800, 2)
    ip_len = lengths - 14
    _put(h, 14, 0x4500, 2)
    _put(h, 16, ip_len, 2)
    _put(h, 18, np.arange(n) & 0xFFFF, 2)  # IP ID
    _put(h, 20, 0x4000, 2)                  # DF
    _put(h, 22, (64 << 8) | C.PROTO_TCP, 2)
    src, dst = flows.src_ip[flow].astype(np.int64), flows.dst_ip[flow].astype(np.int64)
    _put(h, 26, src, 4)
    _put(h, 30, dst, 4)
    _put(h, 24, _fold(_words(h, 14, 20)), 2)
    sport, dport = flows.sport[flow].astype(np.int64), flows.dport[flow].astype(np.int64)
    _put(h, 34, sport, 2)
    _put(h, 36, dport, 2)
    _put(h, 38, (sport * 7919 + 1000) & 0xFFFFFFFF, 4)  # seq
    _put(h, 42, np.where(flags & 0x10, 1, 0), 4)          # ack
    _put(h, 46, (5 << 12) | flags, 2)
    _put(h, 48, 64240, 2)
    tcp_len = ip_len - 20
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + C.PROTO_TCP + tcp_len
    _put(h, 50, _fold(_words(h, 34, 20) + pseudo), 2)  # the payload is zeros
    idx = offsets[:, None] + np.arange(HEADER)
    buf[idx.ravel()] = h.ravel()
    return Workload(name, buf, offsets, lengths.astype(np.int32),
                    flows.in_if[flow].astype(np.int32), np.full(n, C.INJ_TX, np.uint8),
                    np.asarray(ts_ns, np.int64), flow.astype(np.int32), flows)


def _put(h: np.ndarray, at: int, value: Any, width: int) -> None:
    v = np.asarray(value, np.int64)
    for i in range(width):
        h[:, at + i] = (v >> (8 * (width - 1 - i))) & 0xFF


def _words(h: np.ndarray, at: int, n: int) -> np.ndarray:
    w = h[:, at: at + n].astype(np.int64)
    return (w[:, 0::2] << 8).sum(axis=1) + w[:, 1::2].sum(axis=1)


def _fold(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, np.int64)
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


MIX = (MIX_SERVICE, MIX_SERVICE, MIX_SAME_NODE, MIX_CROSS_NODE)


def cluster_mix(t: Tables, n_flows: int = 10_000, n_frames: int = 200_000, seed: int = 1,
                frame_len: int = 64, kinds: tuple[int, ...] = MIX) -> Workload:
    """The cluster mix: ``n_frames`` frames of ``frame_len`` bytes cycling through the flows
    (each flow equally often, in a shuffled order), after a warm-up of one frame per flow.
    ``kinds`` picks another mix (``(MIX_SAME_NODE,)``: bridging only)."""
    flows = mix_flows(t, n_flows, seed, kinds)
    rng = np.random.default_rng(seed + 1)
    order = np.resize(np.arange(n_flows), n_frames)
    rng.shuffle(order)
    warm = concat("cluster-mix warm-up", [
        arp_frames(t, flows, EPOCH_NS), node_frames(t, flows, EPOCH_NS),
        build_frames("flows", flows, np.arange(n_flows), np.full(n_flows, frame_len),
                     TCP_PSH_ACK, EPOCH_NS + (1 + np.arange(n_flows, dtype=np.int64)) * 1000)])
    ts = EPOCH_NS + (n_flows + 1 + np.arange(n_frames, dtype=np.int64)) * 1000
    w = build_frames("cluster mix", flows, order, np.full(n_frames, frame_len), TCP_PSH_ACK, ts)
    w.warm = warm
    return w


def churn(t: Tables, n_flows: int = 100_000, seed: int = 2, data_share: float = 0.5,
          warm_flows: int = 2_000, kinds: tuple[int, ...] = MIX) -> Workload:
    """Mostly new flows: a SYN for every flow, one IMIX-sized data frame for ``data_share``
    of them a few frames after their SYN. ``warm`` (other flows of the same pods) only fills
    the FDBs; conntrack meets every timed flow for the first time."""
    flows = mix_flows(t, n_flows + warm_flows, seed, kinds)
    rng = np.random.default_rng(seed + 1)
    timed = np.arange(warm_flows, warm_flows + n_flows)
    with_data = timed[rng.random(n_flows) < data_share]
    sizes, weights = zip(*IMIX, strict=True)
    p = np.array(weights, float) / sum(weights)
    data_len = rng.choice(np.array(sizes), size=len(with_data), p=p)
    key = np.concatenate([timed - warm_flows,
                          with_data - warm_flows + rng.uniform(1.5, 200.5, len(with_data))])
    fl = np.concatenate([timed, with_data])
    ln = np.concatenate([np.full(n_flows, 64), data_len])
    flags = np.concatenate([np.full(n_flows, TCP_SYN), np.full(len(with_data), TCP_PSH_ACK)])
    order = np.argsort(key, kind="stable")
    n = len(order)
    ts = EPOCH_NS + (warm_flows + np.arange(n, dtype=np.int64)) * 1000
    w = build_frames("churn", flows, fl[order], ln[order], flags[order], ts)
    w.warm = concat("churn warm-up", [
        arp_frames(t, flows, EPOCH_NS), node_frames(t, flows, EPOCH_NS),
        build_frames("flows", flows, np.arange(warm_flows), np.full(warm_flows, 64),
                     TCP_PSH_ACK, EPOCH_NS + (1 + np.arange(warm_flows, dtype=np.int64)) * 1000)])
    return w


def arp_frames(t: Tables, flows: Flows, ts_ns: int) -> Workload:
    """One broadcast ARP request per pod for its gateway (the node bridge address), all at
    ``ts_ns``: every bridge learns every pod's MAC, as it would have from earlier traffic."""
    topo = _Topology(t)
    n = len(topo.pod_if)
    gw_ip = t.node_br_ip[topo.node].astype(np.int64)
    h = np.zeros((n, 60), np.uint8)  # padded to the Ethernet minimum
    _put(h, 0, 0xFFFFFFFFFFFF, 6)
    _put(h, 6, topo.mac, 6)
    _put(h, 12, 0x0806, 2)
    _put(h, 14, 0x0001_0800, 4)     # htype Ethernet, ptype IPv4
    _put(h, 18, 0x0604_0001, 4)     # hlen, plen, request
    _put(h, 22, topo.mac, 6)
    _put(h, 28, topo.ip.astype(np.int64), 4)
    _put(h, 38, gw_ip, 4)
    lengths = np.full(n, 60, np.int32)
    return Workload("arp", h.ravel().copy(), np.arange(n, dtype=np.int64) * 60, lengths,
                    topo.pod_if.copy(), np.full(n, C.INJ_TX, np.uint8),
                    np.full(n, ts_ns, np.int64), np.full(n, POD_FRAME, np.int32), flows)


def node_frames(t: Tables, flows: Flows, ts_ns: int) -> Workload:
    """One unicast ARP reply per node on the node network, node ``k`` to node ``k - 1``
    (node 0 to node 1): the node network's switch learns every node's MAC, as it would from
    the nodes' everyday traffic, with a single flood (the first frame) instead of one per
    node."""
    n = t.n_nodes
    if n < 2:
        return _empty_workload(flows)
    eth = t.node_eth_if.astype(np.int64)
    mac = t.if_mac[eth].astype(np.int64)
    ip = t.node_ip.astype(np.int64)
    to = np.concatenate([[1], np.arange(n - 1)])  # node 0 -> 1, then k -> k - 1
    h = np.zeros((n, 60), np.uint8)
    _put(h, 0, mac[to], 6)
    _put(h, 6, mac, 6)
    _put(h, 12, 0x0806, 2)
    _put(h, 14, 0x0001_0800, 4)
    _put(h, 18, 0x0604_0002, 4)     # reply
    _put(h, 22, mac, 6)
    _put(h, 28, ip, 4)
    _put(h, 32, mac[to], 6)
    _put(h, 38, ip[to], 4)
    return Workload("node arp", h.ravel().copy(), np.arange(n, dtype=np.int64) * 60,
                    np.full(n, 60, np.int32), eth.astype(np.int32),
                    np.full(n, C.INJ_TX, np.uint8), np.full(n, ts_ns, np.int64),
                    np.full(n, NODE_FRAME, np.int32), flows)


def _empty_workload(flows: Flows) -> Workload:
    i64 = np.zeros(0, np.int64)
    return Workload("empty", np.zeros(0, np.uint8), i64, np.zeros(0, np.int32),
                    np.zeros(0, np.int32), np.zeros(0, np.uint8), i64.copy(),
                    np.zeros(0, np.int32), flows)


def concat(name: str, parts: list[Workload]) -> Workload:
    """The frames of ``parts`` one after the other (the flows of the last part)."""
    base = np.cumsum([0] + [len(p.buf) for p in parts[:-1]])
    return Workload(name, np.concatenate([p.buf for p in parts]),
                    np.concatenate([p.offsets + b for p, b in zip(parts, base, strict=True)]),
                    np.concatenate([p.lengths for p in parts]),
                    np.concatenate([p.in_if for p in parts]),
                    np.concatenate([p.in_mode for p in parts]),
                    np.concatenate([p.ts_ns for p in parts]),
                    np.concatenate([p.flow for p in parts]), parts[-1].flows)


# ------------------------------------------------------------------ driving the datapath
def results_for(t: Tables, batch: int, record: bool, max_len: int = 1514) -> Results:
    """A ``Results`` large enough that a batch of ``batch`` frames never returns early in the
    common case (the capacity check reserves a worst case per frame)."""
    if record:
        worst_hops, worst_arena = Results.worst_case(max_len, t.n_ifaces)
        return Results(hops=worst_hops + 24 * batch,
                       arena=worst_arena + batch * 16 * (max_len + 64), record=True)
    # floods: a copy per port of one bridge (pods' broadcasts on their node, one unicast
    # flood on the node network while it learns)
    node_ports = int(t.br_port_count[:-1].max(initial=0)) + 2
    few = t.n_ifaces * 2 + 8
    extra = batch * node_ports + int(t.br_port_count[-1]) + 8 * batch
    return Results(hops=few + extra, arena=(max_len + 64) * (few + extra), record=False)


def drive(dp: Any, w: Workload, res: Results, batch: int = 1024,
          on_batch: Any = None) -> int:
    """Run every frame of ``w`` through ``dp.process`` in batches of ``batch``; ``res`` is
    cleared before each batch and grown when the datapath asks. ``on_batch(res, lo, hi)``,
    when given, sees each batch's results (e.g. to write them). Returns the frames run."""
    n = len(w)
    n_if = w.flows.n_ifaces
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        res.clear()
        start = lo
        while start < hi:
            start = dp.process(w.buf, w.offsets, w.lengths, w.in_if, w.in_mode, w.ts_ns,
                               start, hi, res)
            if start < hi:
                res.grow(int(w.lengths[start]), n_if)
        if on_batch is not None:
            on_batch(res, lo, hi)
    return n


# ------------------------------------------------------------------ captures
PCAP_MAGIC_NS = 0xA1B23C4D


def write_pcap(path: str | os.PathLike[str], w: Workload, snaplen: int = 262144,
               chunk: int = 1 << 18) -> int:
    """Write ``w``'s frames as a classic pcap (Ethernet, nanosecond timestamps), laid out
    with numpy in chunks; returns the bytes written."""
    import struct

    n = len(w)
    total = 24
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, 1))
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            ln = w.lengths[lo:hi].astype(np.int64)
            rec = 16 + ln
            starts = np.zeros(hi - lo, np.int64)
            starts[1:] = np.cumsum(rec[:-1])
            out = np.zeros(int(rec.sum()), np.uint8)
            hdr = np.empty((hi - lo, 4), "<u4")
            ts = w.ts_ns[lo:hi]
            hdr[:, 0] = ts // 10**9
            hdr[:, 1] = ts % 10**9
            hdr[:, 2] = ln
            hdr[:, 3] = ln
            out[(starts[:, None] + np.arange(16)).ravel()] = hdr.view(np.uint8).ravel()
            copy_segments(out, starts + 16, w.buf, w.offsets[lo:hi], ln)
            f.write(out)
            total += len(out)
    return total


def repeat_workload(w: Workload, n_frames: int) -> Workload:
    """``w`` (its warm-up first, then its frames; the nodes' frames left out) cycled to
    ``n_frames`` frames with rising timestamps, sharing ``w``'s buffer (a long capture built
    from a short workload)."""
    whole = concat(w.name, ([w.warm] if w.warm is not None else []) + [w])
    # without the nodes' own frames: a capture of pod traffic holds none
    idx = np.resize(np.flatnonzero(whole.flow != NODE_FRAME), n_frames)
    ts = EPOCH_NS + np.arange(n_frames, dtype=np.int64) * 1000
    return Workload(f"{w.name} x{n_frames}", whole.buf, whole.offsets[idx],
                    whole.lengths[idx], whole.in_if[idx], whole.in_mode[idx], ts,
                    whole.flow[idx], w.flows)


# ------------------------------------------------------------------ route tables
def route_table(n: int, seed: int = 3, long_share: float = 0.1
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` distinct prefixes shaped like an Internet table: about 55% /24, 30% /17../23,
    5% /8../16 and ``long_share`` longer than /24 (/25../32, each in its own /24 mostly, so a
    500k table needs more than 32,767 second-level groups). Returns (prefix uint32, depth
    uint8, next hop int32), next hops ``0..n-1``."""
    rng = np.random.default_rng(seed)
    shares = np.array([0.05, 0.30, 0.65 - long_share, long_share])
    groups = [(8, 16), (17, 23), (24, 24), (25, 32)]
    prefixes: list[np.ndarray] = []
    depths: list[np.ndarray] = []
    seen: set[tuple[int, int]] = set()
    want = np.round(shares * n).astype(int)
    want[2] += n - want.sum()
    for (lo, hi), k in zip(groups, want, strict=True):
        got_p, got_d = [], []
        while len(got_p) < k:
            d = rng.integers(lo, hi + 1, size=2 * (k - len(got_p)) + 16)
            p = rng.integers(1 << 24, 224 << 24, size=len(d), dtype=np.int64)  # 1/8..223/8
            p &= (0xFFFFFFFF << (32 - d)) & 0xFFFFFFFF
            for pi, di in zip(p.tolist(), d.tolist(), strict=True):
                if (pi, di) not in seen:
                    seen.add((pi, di))
                    got_p.append(pi)
                    got_d.append(di)
                    if len(got_p) == k:
                        break
        prefixes.append(np.array(got_p, np.int64))
        depths.append(np.array(got_d, np.int64))
    p = np.concatenate(prefixes)
    d = np.concatenate(depths)
    order = rng.permutation(n)
    return (p[order].astype(np.uint32), d[order].astype(np.uint8),
            np.arange(n, dtype=np.int32))


def route_addresses(prefixes: np.ndarray, depths: np.ndarray, n: int, seed: int = 4,
                    hit_share: float = 0.9) -> np.ndarray:
    """``n`` lookup addresses: ``hit_share`` of them inside random prefixes of the table
    (random host bits), the rest uniform over the address space; uint32."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, len(prefixes), size=n)
    host = rng.integers(0, 1 << 32, size=n, dtype=np.int64)
    d = depths[k].astype(np.int64)
    mask = (0xFFFFFFFF << (32 - d)) & 0xFFFFFFFF
    ips = (prefixes[k].astype(np.int64) & mask) | (host & ~mask & 0xFFFFFFFF)
    miss = rng.random(n) >= hit_share
    ips[miss] = rng.integers(0, 1 << 32, size=int(miss.sum()), dtype=np.int64)
    return ips.astype(np.uint32)
