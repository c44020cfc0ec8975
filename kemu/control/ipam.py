"""Address allocation: MACs, address pools, node subnets, NodePorts, pod placement.

Everything here is deterministic: the same requests in the same order give the same
addresses, and callers make the order canonical (node names, ``namespace/name`` keys) before
asking. Pinned values (from the manifests) are claimed before anything is allocated, and
allocation hands out the lowest free value, so a pin never moves another object's address.

- ``mac_address(name)``: a locally administered unicast MAC ``02:xx:xx:xx:xx:xx`` from sha256 of
  a stable name (``node/<name>/eth0``, ``node/<name>/cbr0``, ``node/<name>/flannel.1``,
  ``pod/<ns>/<name>/eth0``, ``ext/<name>/eth0``, ``gateway``).
- ``AddressPool``: the usable addresses of one network (network and broadcast address never,
  reserved ones named); pod CIDRs start at .2, skipping the bridge/gateway .1 (R-3).
- ``subnets``: per-node pod CIDRs carved from the cluster CIDR in node order, skipping pins (R-1).
- ``PortPool``: NodePorts from the NodePort range (S-13).
- ``choose_node``: spreading: the eligible node with the fewest pods, ties by node name;
  ``Spreader`` gives the same answers for many pods in a row (a heap per ``nodeSelector``).
- ``NetworkLookup``: the first of many networks (node pod CIDRs) holding an address.
- ``build_nodes``: node IPs on the node network (from .2; the gateway is .1) and pod CIDRs,
  in node-name order, pins first; external hosts' MACs and addresses.
- ``infer``: a cluster dump's node network, cluster and service CIDRs and per-node pod
  blocks (Calico, Cilium cluster-pool) from its own objects, when no kemu document says them.

Costs stay near linear in the number of nodes and pods (5,000 nodes, 150,000 pods): pin
overlaps are found by bisection in sorted address spans, never by comparing pairs.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kemu.control.cni import ENI_LIMITS
from kemu.control.model import ClusterConfig, IPv4Address, IPv4Network, Node
from kemu.control.selectors import matches_map
from kemu.errors import Problem

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def mac_address(name: str) -> str:
    """Locally administered unicast MAC derived from ``name`` (first octet 0x02)."""
    digest = hashlib.sha256(name.encode()).digest()
    return "02:" + digest[:5].hex(":")


def mac_error(value: str) -> str | None:
    """Why ``value`` cannot be an interface MAC (syntax, multicast, all zero)."""
    mac = value.lower().replace("-", ":")
    if not _MAC.match(mac):
        return f"'{value}' is not a MAC address (aa:bb:cc:dd:ee:ff)"
    if int(mac[:2], 16) & 1:
        return f"'{value}' is a multicast MAC address"
    if mac == "00:00:00:00:00:00":
        return f"'{value}' is the zero MAC address"
    return None


def normalize_mac(value: str) -> str:
    return value.lower().replace("-", ":")


class AddressPool:
    """Usable addresses of ``network`` handed out lowest first from ``first`` (an offset).

    ``reserved`` maps addresses to a description ("the gateway (bridge) address of node1") that
    ``claim`` reports when a pin hits one; the network and broadcast address are always
    reserved. ``owners`` records who holds each claimed or allocated address.
    """

    def __init__(self, network: IPv4Network, first: int = 1,
                 reserved: Mapping[IPv4Address, str] | None = None) -> None:
        self.network = network
        self.first = first
        self.reserved: dict[IPv4Address, str] = dict(reserved or {})
        if network.num_addresses > 2:
            self.reserved.setdefault(network.network_address, f"the network address of {network}")
            self.reserved.setdefault(network.broadcast_address,
                                     f"the broadcast address of {network}")
        self.owners: dict[IPv4Address, str] = {}
        self._cursor = first

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPv4Address) and ip in self.network

    def owner(self, ip: IPv4Address) -> str | None:
        return self.owners.get(ip)

    def claim(self, ip: IPv4Address, owner: str) -> str | None:
        """Take a pinned address; returns why it cannot be taken, or None on success."""
        if ip not in self.network:
            return f"{ip} is outside {self.network}"
        if ip in self.reserved:
            return f"{ip} is {self.reserved[ip]}"
        holder = self.owners.get(ip)
        if holder is not None and holder != owner:
            return f"{ip} is already used by {holder}"
        self.owners[ip] = owner
        return None

    def allocate(self, owner: str) -> IPv4Address | None:
        """The lowest free address at or above ``first``; None when the pool is exhausted."""
        base = int(self.network.network_address)
        last = self.network.num_addresses - 1
        offset = self._cursor
        while offset <= last:
            ip = IPv4Address(base + offset)
            if ip not in self.reserved and ip not in self.owners:
                self.owners[ip] = owner
                self._cursor = offset + 1
                return ip
            offset += 1
        return None

    def release(self, ip: IPv4Address, owner: str | None = None) -> None:
        """Free ``ip`` (only if ``owner`` holds it, when given)."""
        if owner is not None and self.owners.get(ip) != owner:
            return
        if self.owners.pop(ip, None) is not None:
            offset = int(ip) - int(self.network.network_address)
            if self.first <= offset < self._cursor:
                self._cursor = offset


def pod_pool(node: Node) -> AddressPool:
    """Pod addresses of ``node``: its pod CIDR minus network, bridge (.1) and broadcast (R-3)."""
    return AddressPool(node.pod_cidr, first=2, reserved={
        node.gateway_ip: f"the gateway (bridge) address of {node.name}"})


def eni_capacity(instance_type: str) -> int | None:
    """Pod addresses of a node of ``instance_type`` (``ENI_LIMITS``); None: not known."""
    limits = ENI_LIMITS.get(instance_type)
    return None if limits is None else limits[0] * (limits[1] - 1)


class NodeNetworkPodPool:
    """A node's pod addresses taken from the node network itself (AWS VPC CNI: secondary IPs
    of the node's ENIs in the VPC subnet; Azure CNI: VNet addresses), every node drawing on
    the one pool of the node network (``shared``), at most ``capacity`` pods per node."""

    def __init__(self, shared: AddressPool, node: str, capacity: int | None,
                 what: str) -> None:
        self.shared = shared
        self.network = shared.network
        self.node = node
        self.capacity = capacity
        self.what = what
        self.held: set[IPv4Address] = set()

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPv4Address) and ip in self.network

    def _full(self) -> bool:
        return self.capacity is not None and len(self.held) >= self.capacity

    def claim(self, ip: IPv4Address, owner: str) -> str | None:
        if ip not in self.held and self._full():
            return f"node {self.node} has no free pod address: {self.describe()}"
        err = self.shared.claim(ip, owner)
        if err is None:
            self.held.add(ip)
        return err

    def allocate(self, owner: str) -> IPv4Address | None:
        if self._full():
            return None
        ip = self.shared.allocate(owner)
        if ip is not None:
            self.held.add(ip)
        return ip

    def release(self, ip: IPv4Address, owner: str | None = None) -> None:
        if ip in self.held:
            self.shared.release(ip, owner)
            if self.shared.owner(ip) is None:
                self.held.discard(ip)

    def describe(self) -> str:
        """Where the addresses come from and how many a node may hold."""
        cap = "" if self.capacity is None else f", at most {self.capacity} per node"
        return f"{self.what} {self.network}{cap}"


def pod_pools(config: ClusterConfig, nodes: list[Node], node_pool: AddressPool | None
              ) -> dict[str, AddressPool | NodeNetworkPodPool]:
    """Each node's pod address pool: its pod CIDR's (``pod_pool``) or, for the CNIs whose
    pods take node-network addresses (AWS VPC CNI, Azure CNI transparent), a share of the
    node network's pool (``NodeNetworkPodPool``, capacity per ``spec.cni.instanceType``)."""
    cni = config.cni
    on_node_net = cni.name == "aws-vpc" or (cni.name == "azure" and cni.get("mode") != "overlay")
    if not on_node_net:
        return {n.name: pod_pool(n) for n in nodes}
    if node_pool is None:  # (a cluster made without build_nodes): the nodes' addresses held
        node_pool = AddressPool(config.node_network, first=2, reserved={
            config.gateway_ip: "the node network's gateway"} if config.gateway_ip else {})
        for n in nodes:
            node_pool.claim(n.internal_ip, f"Node/{n.name}")
        for h in config.external_hosts:
            node_pool.claim(h.ip, f"external host '{h.name}'")
    if cni.name == "aws-vpc":
        itype = cni.get("instanceType")
        what = "secondary IPs of the ENIs" + (f" of a {itype}" if itype else "") + " in"
        capacity = eni_capacity(itype) if itype else None
    else:
        what, capacity = "VNet addresses in", None
    return {n.name: NodeNetworkPodPool(node_pool, n.name, capacity, what) for n in nodes}


def subnets(cluster_cidr: IPv4Network, prefix: int, names: Iterable[str],
            pinned: Mapping[str, IPv4Network]) -> dict[str, IPv4Network | None]:
    """A pod CIDR per name: pins as given, others the next /prefix not overlapping a pin.

    None for a name when the cluster CIDR has no room left.
    """
    out: dict[str, IPv4Network | None] = {}
    spans = sorted((int(t.network_address), int(t.broadcast_address))
                   for t in pinned.values())
    starts = [lo for lo, _ in spans]
    reach: list[int] = []  # reach[i]: the highest end among spans[:i + 1]
    for _, hi in spans:
        reach.append(max(hi, reach[-1]) if reach else hi)

    def overlaps_pin(s: IPv4Network) -> bool:
        i = bisect.bisect_right(starts, int(s.broadcast_address))
        return i > 0 and reach[i - 1] >= int(s.network_address)

    free = (s for s in cluster_cidr.subnets(new_prefix=prefix) if not overlaps_pin(s))
    for name in names:
        out[name] = pinned[name] if name in pinned else next(free, None)
    return out


class PortPool:
    """NodePorts: a range of port numbers, each owned by one service (lowest free first)."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.owners: dict[int, str] = {}

    def claim(self, port: int, owner: str) -> str | None:
        if not self.lo <= port <= self.hi:
            return f"{port} is outside the NodePort range {self.lo}-{self.hi}"
        holder = self.owners.get(port)
        if holder is not None and holder != owner:
            return f"{port} is already allocated to {holder}"
        self.owners[port] = owner
        return None

    def allocate(self, owner: str) -> int | None:
        for port in range(self.lo, self.hi + 1):
            if port not in self.owners:
                self.owners[port] = owner
                return port
        return None

    def release(self, port: int, owner: str) -> None:
        if self.owners.get(port) == owner:
            del self.owners[port]


def choose_node(nodes: Iterable[Node], counts: Mapping[str, int],
                node_selector: Mapping[str, str]) -> Node | None:
    """Spreading: the eligible node (``nodeSelector`` matches) with the fewest pods, then name."""
    eligible = [n for n in nodes if matches_map(node_selector, n.labels)]
    if not eligible:
        return None
    return min(eligible, key=lambda n: (counts.get(n.name, 0), n.name))


class Spreader:
    """``choose_node`` for many pods in a row, without a scan of every node per pod.

    One heap of (pod count, name) per distinct ``nodeSelector``; ``counts`` is the caller's
    dict, which it increments for the chosen node. Counts only grow, so a heap entry is a lower
    bound: a stale top is refreshed and pushed back until the top is current, which makes it
    the node ``choose_node`` would pick.
    """

    def __init__(self, nodes: list[Node], counts: Mapping[str, int]) -> None:
        self.nodes, self.counts = nodes, counts
        self._by_name = {n.name: n for n in nodes}
        self._heaps: dict[tuple[tuple[str, str], ...], list[tuple[int, str]]] = {}

    def choose(self, node_selector: Mapping[str, str]) -> Node | None:
        """What ``choose_node(nodes, counts, node_selector)`` returns now."""
        signature = tuple(sorted(node_selector.items()))
        heap = self._heaps.get(signature)
        if heap is None:
            heap = [(self.counts.get(n.name, 0), n.name) for n in self.nodes
                    if matches_map(node_selector, n.labels)]
            heapq.heapify(heap)
            self._heaps[signature] = heap
        while heap:
            count, name = heap[0]
            now = self.counts.get(name, 0)
            if now == count:
                return self._by_name[name]
            heapq.heapreplace(heap, (now, name))
        return None



class _Spans:
    """Mutually disjoint networks, each with a name, sorted by address (pod CIDR pins)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._spans: list[tuple[int, int, int, str]] = []  # (first, last, insertion, name)

    def add(self, net: IPv4Network, name: str) -> None:
        """Add ``net``; the caller made sure it overlaps none already here."""
        lo = int(net.network_address)
        i = bisect.bisect_right(self._starts, lo)
        self._starts.insert(i, lo)
        self._spans.insert(i, (lo, int(net.broadcast_address), len(self._spans), name))

    def first_overlap(self, net: IPv4Network) -> str | None:
        """The name of the earliest added network overlapping ``net``, or None."""
        lo, hi = int(net.network_address), int(net.broadcast_address)
        i = bisect.bisect_right(self._starts, hi) - 1
        best: tuple[int, str] | None = None
        while i >= 0 and self._spans[i][1] >= lo:  # disjoint and sorted: ends ascend too
            _, _, order, name = self._spans[i]
            if best is None or order < best[0]:
                best = (order, name)
            i -= 1
        return best[1] if best is not None else None


class NetworkLookup:
    """Which of some networks holds an address: the position of the first one that does.

    One dict per prefix length in use, so a lookup costs a few dict probes whatever the number
    of networks (the pod CIDRs of thousands of nodes).
    """

    def __init__(self, networks: Iterable[IPv4Network]) -> None:
        self._by_len: dict[int, dict[int, int]] = {}
        for position, net in enumerate(networks):
            self._by_len.setdefault(net.prefixlen, {}).setdefault(int(net.network_address),
                                                                   position)
        self._masks = [((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF, table)
                       for n, table in self._by_len.items()]

    def find(self, ip: IPv4Address) -> int | None:
        """The position of the first network containing ``ip``; None when none does."""
        value = int(ip)
        hits = [p for mask, table in self._masks if (p := table.get(value & mask)) is not None]
        return min(hits) if hits else None


@dataclass
class NodeDraft:
    """A node before addressing: name, labels, and pins with the fields they came from."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: IPv4Address | None = None
    ip_field: str = ""
    pod_cidr: IPv4Network | None = None
    cidr_field: str = ""
    source: str = ""
    obj: str = ""
    pod_blocks: list[IPv4Network] = field(default_factory=list)  # see ``infer``
    cidr_unused: bool = False  # a dump's podCIDR its CNI does not use: may lie anywhere


def build_nodes(config: ClusterConfig, drafts: list[NodeDraft], problems: list[Problem],
                doc: tuple[str, str] = ("", "")) -> tuple[list[Node], AddressPool]:
    """Address the nodes (in name order) and the external hosts; returns the node network pool.

    Node IPs: pins first, then the lowest free address of the node network from .2 up (the
    gateway, default .1, and external hosts excluded). Pod CIDRs: pins
    (inside the cluster CIDR, not overlapping), then ``subnets``. ``doc`` is (source, object) of
    the kemu document, where external-host problems are reported.
    """
    net = config.node_network
    gateway = {config.gateway_ip: "the node network's gateway"} if config.gateway_ip else {}
    pool = AddressPool(net, first=2, reserved=gateway)
    for i, host in enumerate(config.external_hosts):
        host.mac = host.mac or mac_address(f"ext/{host.name}/eth0")
        where = f"spec.externalHosts[{i}].ip"
        err = (f"{host.ip} is outside the node network {net}" if host.ip not in net
               else pool.claim(host.ip, f"external host '{host.name}'"))
        if err:
            problems.append(Problem(doc[0], doc[1], where, err))
    drafts = sorted(drafts, key=lambda d: d.name)
    ips: dict[str, IPv4Address | None] = {}
    for d in drafts:
        if d.ip is None:
            continue
        err = (f"{d.ip} is outside the node network {net} (set spec.nodeNetwork in the kemu "
               "Cluster document)" if d.ip not in net else pool.claim(d.ip, f"Node/{d.name}"))
        if err:
            problems.append(Problem(d.source, d.obj, d.ip_field, err))
        ips[d.name] = d.ip
    for d in drafts:
        if d.name not in ips:
            ips[d.name] = pool.allocate(f"Node/{d.name}")
            if ips[d.name] is None:
                problems.append(Problem(d.source, d.obj, "", f"the node network {net} has no "
                                        f"free address for node {d.name}"))
    pinned: dict[str, IPv4Network] = {}
    spans = _Spans()
    for d in drafts:
        if d.pod_cidr is None:
            continue
        if not d.pod_cidr.subnet_of(config.cluster_cidr) and not d.cidr_unused:
            problems.append(Problem(d.source, d.obj, d.cidr_field, f"{d.pod_cidr} is outside the "
                                    f"cluster CIDR {config.cluster_cidr} (set spec.clusterCIDR "
                                    "in the kemu Cluster document)"))
            continue
        clash = spans.first_overlap(d.pod_cidr)
        if clash is not None:
            problems.append(Problem(d.source, d.obj, d.cidr_field, f"{d.pod_cidr} overlaps "
                                    f"Node/{clash}'s pod CIDR {pinned[clash]}"))
            continue
        pinned[d.name] = d.pod_cidr
        spans.add(d.pod_cidr, d.name)
    cidrs = subnets(config.cluster_cidr, config.node_cidr_prefix, [d.name for d in drafts],
                    pinned)
    nodes = []
    for d in drafts:
        cidr, ip = cidrs[d.name], ips[d.name]
        if cidr is None:
            problems.append(Problem(d.source, d.obj, "", f"the cluster CIDR "
                                    f"{config.cluster_cidr} has no /{config.node_cidr_prefix} "
                                    f"left for node {d.name}"))
        if cidr is None or ip is None:
            continue
        nodes.append(Node(name=d.name, internal_ip=ip, pod_cidr=cidr, labels=dict(d.labels),
                          mac=mac_address(f"node/{d.name}/eth0"),
                          bridge_mac=mac_address(f"node/{d.name}/cbr0"),
                          vtep_mac=mac_address(f"node/{d.name}/flannel.1"),
                          pod_blocks=list(d.pod_blocks)))
    return nodes, pool


# --- a cluster dump's address ranges ----------------------------------------------------------

NODE_NETWORK_MAX_PREFIX = 24
CLUSTER_CIDR_MAX_PREFIX = 16
SERVICE_CIDR_MAX_PREFIX = 16


def covering(addresses: Iterable[IPv4Address | IPv4Network], longest: int) -> IPv4Network | None:
    """The smallest network holding every address (and network), but no longer than
    ``/longest``; None for no address."""
    lo = hi = None
    for a in addresses:
        first, last = (int(a.network_address), int(a.broadcast_address)) \
            if isinstance(a, IPv4Network) else (int(a), int(a))
        lo = first if lo is None else min(lo, first)
        hi = last if hi is None else max(hi, last)
    if lo is None or hi is None:
        return None
    prefix = min(longest, 32 - (lo ^ hi).bit_length())
    return IPv4Network((lo, prefix), strict=False)


@dataclass
class PodAddress:
    """What ``infer`` needs of a pod: its pinned IP and its node."""

    ip: IPv4Address
    node: str


def infer(config: ClusterConfig, nodes: list[NodeDraft], pods: list[PodAddress],
          cluster_ips: list[IPv4Address]) -> str:
    """Fill ``config`` from a cluster dump (no kemu Cluster document) where its defaults do
    not hold (some address lies outside the default range); returns what was inferred, in one
    line ("" when the defaults hold).

    - node network: the smallest prefix holding every node's InternalIP, at most /24; its
      gateway the first address unless a node has it (then the last one, else none);
    - cluster CIDR: the smallest prefix holding every ``podCIDR`` and pod IP, at most /16
      (what flannel and kubeadm default to), ``nodeCIDRMaskSize`` the nodes' podCIDR length;
      when pods live outside their node's podCIDR, the pod IPs alone (the CNI's pool) and
      the podCIDRs stay the nodes' bridge subnets wherever they are;
    - service CIDR: the smallest prefix holding every ClusterIP (the ``kubernetes`` Service's
      first address among them), at most /16;
    - pod blocks: pod IPs outside their node's ``podCIDR`` (Calico and Cilium cluster-pool
      IPAM hand out blocks per node) are routed to their node in blocks of the shortest
      length from /24 to /32 at which no block holds pods of two nodes (Calico's /26, Cilium's
      /24 as a rule); ``NodeDraft.pod_blocks``.
    """
    said = []
    ips = [d.ip for d in nodes if d.ip is not None]
    net = covering(ips, NODE_NETWORK_MAX_PREFIX)
    if net is not None and any(ip not in config.node_network for ip in ips):
        config.node_network = net
        taken = set(ips)
        gw = next((g for g in (net.network_address + 1, net.broadcast_address - 1)
                   if g not in taken), None) if net.num_addresses > 2 else None
        config.gateway_ip = gw
        said.append(f"node network {net} (gateway {gw or 'none'})")
    cidrs = [d.pod_cidr for d in nodes if d.pod_cidr is not None]
    by_name = {d.name: d for d in nodes}
    outside = [p for p in pods if p.node in by_name and (
        by_name[p.node].pod_cidr is None or p.ip not in by_name[p.node].pod_cidr)]
    if outside:  # the CNI's own IPAM: its pool is what the pods use, not the podCIDRs
        for d in nodes:
            d.cidr_unused = True
        held: list[IPv4Address | IPv4Network] = [p.ip for p in pods]
    else:
        held = [*cidrs, *(p.ip for p in pods)]
    cluster = covering(held, CLUSTER_CIDR_MAX_PREFIX)
    if cluster is not None and any(
            (a not in config.cluster_cidr) if isinstance(a, IPv4Address)
            else not a.subnet_of(config.cluster_cidr) for a in held):
        config.cluster_cidr = cluster
        lengths = {c.prefixlen for c in cidrs}
        if len(lengths) == 1 and (n := lengths.pop()) >= cluster.prefixlen:
            config.node_cidr_prefix = n
        said.append(f"cluster CIDR {cluster}")
    services = covering(cluster_ips, SERVICE_CIDR_MAX_PREFIX)
    if services is not None and any(ip not in config.service_cidr for ip in cluster_ips):
        config.service_cidr = services
        said.append(f"service CIDR {services}")
    if outside:
        length = 24
        while length < 32:
            owner: dict[int, str] = {}
            mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
            if all(owner.setdefault(int(p.ip) & mask, p.node) == p.node
                   for p in pods if p.node in by_name):
                break
            length += 1
        blocks: dict[str, set[IPv4Network]] = {}
        for p in outside:
            blocks.setdefault(p.node, set()).add(IPv4Network((int(p.ip), length), strict=False))
        for name, nets in blocks.items():
            by_name[name].pod_blocks = sorted(nets)
        said.append(f"{sum(map(len, blocks.values()))} pod address blocks /{length} outside "
                    f"the nodes' podCIDRs routed to their nodes")
    return ", ".join(said)
