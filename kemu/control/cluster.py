"""The emulated cluster's control-plane state (``Cluster``) and ``load_cluster``.

``Cluster`` owns the model objects (``kemu.control.model``) after loading, placement and
allocation, and keeps them consistent under edits: ``add_pod``/``delete_pod``,
``set_pod_labels``, ``set_pod_ready``, ``add_service``/``delete_service``. Each edit validates
like loading does (raising ``ManifestError``), allocates what is missing, and bumps ``version``,
the counter the compiler watches. EndpointSlices of selector Services are derived on demand
from the current pods (``kemu.control.endpoints``) and cached per ``version``, so they are
always current right after an edit; a ``PodIndex`` (pods by label, kept in step by every
edit) gives each Service its pods without a scan of all pods.

Placement and addressing (deterministic, pins first): pods with ``spec.nodeName`` (or a pinned
IP inside a node's pod CIDR) stay there; the others, in ``namespace/name`` order, go to the
eligible node with the fewest pods, ties by name. Pod IPs: pins, then the lowest free address
of the node's pod CIDR (.2 up, R-3); hostNetwork pods take the node IP and have no MAC (M-3).
ClusterIPs: pins, then ``kube-system/kube-dns`` gets the 10th address, then the others the
lowest free address from the 10th up, in key order; NodePorts: pins, then the lowest free port.

Without a kemu document or Node objects the cluster has three nodes ``node1``..``node3``.

Problems are grouped before they are raised: the same problem (file, field, message) of many
objects is one line naming the first and counting the others. ``Cluster.notices`` holds the
warnings (accepted input kemu does not model, named targetPorts no selected pod declares,
what was inferred for a dump), notices saying the same thing grouped the same way.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import fields, is_dataclass
from typing import Any

from kemu._gc import paused_gc
from kemu.control import endpoints, ipam, loader, manifests, workloads
from kemu.control.manifests import Document, Fields
from kemu.control.model import (
    ClusterConfig,
    Endpoint,
    EndpointSlice,
    IPv4Address,
    IPv4Network,
    Namespace,
    NetworkPolicy,
    Node,
    Notice,
    Pod,
    Service,
    ServicePort,
)
from kemu.control.selectors import PodIndex
from kemu.errors import ManifestError, Problem

API_SOURCE = "<api>"
DNS_SERVICE = "kube-system/kube-dns"


def load_cluster(*sources: str | os.PathLike[str] | dict[str, Any] | list[dict[str, Any]]
                 ) -> Cluster:
    """Load manifests (files, directories, dicts, lists of dicts) into a ``Cluster``.

    Raises ``ManifestError`` carrying every problem of every source.

    The cyclic garbage collector is paused meanwhile (``kemu._gc``).
    """
    with paused_gc():
        return _load(sources)


def _load(sources: tuple[str | os.PathLike[str] | dict[str, Any] | list[dict[str, Any]], ...]
          ) -> Cluster:
    names: list[str] = []
    docs, problems = manifests.read(*sources, order=names)
    parsed = loader.parse(docs, problems)
    cluster = Cluster._build(parsed, problems)
    if problems:  # grouped by file, in reading order
        order = {s: i for i, s in reversed(list(enumerate(names)))}
        raise ManifestError(group_problems(
            sorted(problems, key=lambda p: order.get(p.source, len(names)))))
    return cluster


def group_problems(problems: list[Problem]) -> list[Problem]:
    """Identical problems (same file, field and message) of many objects as one, naming the
    first object and how many more said the same."""
    first: dict[tuple[str, str, str], int] = {}
    counts: list[int] = []
    kept: list[Problem] = []
    for p in problems:
        key = (p.source, p.field, p.message)
        at = first.get(key)
        if at is None:
            first[key] = len(kept)
            kept.append(p)
            counts.append(1)
        else:
            counts[at] += 1
    return [p if n == 1 else Problem(p.source, p.obj, p.field,
                                     f"{p.message} (and {n - 1} more like it)")
            for p, n in zip(kept, counts, strict=True)]


def group_notices(notices: list[Notice]) -> list[Notice]:
    """Notices saying the same thing (same field and message) as one, with their count."""
    out: dict[tuple[str, str], Notice] = {}
    for n in notices:
        key = (n.field, n.message)
        if key in out:
            out[key].count += n.count
        else:
            out[key] = Notice(n.source, n.obj, n.field, n.message, n.count, n.covers)
    return list(out.values())


class Cluster:
    """Namespaces, nodes, pods, services, policies and derived endpoints of one cluster."""

    def __init__(self, config: ClusterConfig | None = None, nodes: list[Node] | None = None,
                 node_pool: ipam.AddressPool | None = None) -> None:
        self.config = config or ClusterConfig()
        self.nodes: list[Node] = sorted(nodes or [], key=lambda n: n.name)
        self.namespaces: dict[str, Namespace] = {}
        self.pods: list[Pod] = []
        self.services: list[Service] = []
        self.policies: list[NetworkPolicy] = []
        self.gateway_mac = ipam.mac_address("gateway")
        self.ignored: list[str] = []
        self.notices: list[Notice] = []  # accepted but not modelled: warnings, said once
        self.said: set[str] = set()  # lines of ``ignored`` that a notice says (per kind)
        self.version = 0
        self._nodes = {n.name: n for n in self.nodes}
        self._pods: dict[str, Pod] = {}
        self._by_ip: dict[IPv4Address, Pod] = {}
        self._index = PodIndex()  # pods by label, for Service selectors
        self._per_node: dict[str, int] = {}  # node name -> number of pods
        self._macs: set[str] = set()  # MACs of the pods
        self._services: dict[str, Service] = {}
        self._pod_pools = ipam.pod_pools(self.config, self.nodes, node_pool)
        # pods' addresses in blocks outside their node's pod CIDR (Calico, Cilium), every
        # address usable (blocks are not subnets: no network or broadcast address)
        self._block_pools: dict[IPv4Network, ipam.AddressPool] = {}
        for n in self.nodes:
            for b in n.pod_blocks:
                self._block_pools[b] = ipam.AddressPool(b, first=0)
                self._block_pools[b].reserved.clear()
        self._node_pool = node_pool
        self._service_pool = ipam.AddressPool(self.config.service_cidr, first=10)
        self._node_ports = ipam.PortPool(*self.config.node_port_range)
        # LoadBalancer addresses (spec.loadBalancer.pool): every address of each CIDR, in
        # order (MetalLB hands out a CIDR's network and broadcast addresses too)
        self._lb_pools = [ipam.AddressPool(n, first=0) for n in self.config.lb_pool]
        for pool in self._lb_pools:
            pool.reserved.clear()
        self._explicit: dict[tuple[str, str], list[EndpointSlice]] = {}
        self._slices: dict[str, list[EndpointSlice]] = {}
        self._slices_version = -1

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def _build(cls, parsed: loader.Parsed, problems: list[Problem]) -> Cluster:
        nodes, pool = ipam.build_nodes(parsed.config, parsed.nodes, problems,
                                       parsed.config_origin)
        cluster = cls(parsed.config, nodes, pool)
        cluster.namespaces = dict(parsed.namespaces)
        cluster.ignored = list(parsed.ignored)
        cluster._ensure_namespace("default")
        cluster._admit_pods(parsed.pods, problems)
        added = cluster._admit_services(parsed.services, problems)
        for draft in added:
            cluster._check_target_ports(draft)
        given_mirrors = {(sd.slice.namespace, sd.slice.service) for sd in parsed.slices
                         if sd.mirrored and not sd.from_endpoints}
        for sd in parsed.slices:
            svc = cluster._services.get(f"{sd.slice.namespace}/{sd.slice.service}")
            if sd.from_endpoints:  # kemu's mirror of a v1 Endpoints object
                if svc is None:
                    line = (f"{sd.source}: {sd.obj} ignored (no Service "
                            f"{sd.slice.namespace}/{sd.slice.service} to mirror it for)")
                    if line not in cluster.ignored:
                        cluster.ignored.append(line)
                    continue
                if svc.selector is not None or (svc.namespace, svc.name) in given_mirrors:
                    continue  # the endpoints controller's own output, or mirrored already
            elif svc is None or svc.selector is not None:
                reason = (f"no Service {sd.slice.namespace}/{sd.slice.service}" if svc is None
                          else f"Service {svc.key} has a selector: kemu derives its slices")
                if svc is not None and not sd.controller_managed:
                    reason += "; a real kube-proxy would also use this hand-made slice"
                cluster.ignored.append(f"{sd.source}: {sd.obj} ignored ({reason})")
                continue
            cluster._explicit.setdefault((svc.namespace, svc.name), []).append(sd.slice)
            cluster._ensure_namespace(sd.slice.namespace)
        for slices in cluster._explicit.values():
            slices.sort(key=lambda s: s.name)
        cluster.policies = sorted(parsed.policies, key=lambda p: p.key)
        for pol in cluster.policies:
            cluster._ensure_namespace(pol.namespace)
        cluster.ignored.sort()
        cluster.said = {n.covers for n in parsed.notices if n.covers}
        cluster._dns_notice()
        cluster.notices = group_notices(parsed.notices + cluster.notices)
        return cluster

    def _dns_notice(self) -> None:
        """Say when pods resolve through the cluster DNS but the manifests hold no
        ``kube-system/kube-dns`` Service: their resolv.conf names kubelet's clusterDNS (the
        tenth address of the service CIDR, kubeadm's default), where a real cluster's
        CoreDNS answers; here nothing does (or another Service holds the address)."""
        if DNS_SERVICE in self._services:
            return
        users = [p for p in self.pods if p.dns_policy == "ClusterFirstWithHostNet"
                 or (p.dns_policy == "ClusterFirst" and not p.host_network)]
        if not users:
            return
        tenth = self.config.service_cidr.network_address + 10
        holder = next((s.key for s in self.services if s.cluster_ip == tenth), None)
        there = f"; {holder} holds that address here" if holder else ""
        self.notices.append(Notice(
            "", "", "",
            f"no kube-system/kube-dns Service: {len(users)} "
            f"{'pod resolves' if len(users) == 1 else 'pods resolve'} names through "
            f"{tenth} (kubelet's clusterDNS) and nothing answers DNS there{there}; add "
            "CoreDNS's Deployment and Service (examples/cluster/dns.yaml is one)"))

    def _ensure_namespace(self, name: str) -> None:
        if name not in self.namespaces:
            self.namespaces[name] = Namespace(name=name, implicit=True,
                                              labels={"kubernetes.io/metadata.name": name})
            self.namespaces = dict(sorted(self.namespaces.items()))

    def _node_list(self) -> str:
        return ", ".join(self._nodes) or "none"

    def _admit_pods(self, drafts: list[workloads.PodDraft], problems: list[Problem]) -> list[Pod]:
        """Place, address and add pods (see the module docstring); bad ones become problems."""
        def problem(d: workloads.PodDraft, fld: str, msg: str, prefix: bool = True) -> None:
            problems.append(Problem(d.source, d.obj, (d.path if prefix else "") + fld, msg))

        accepted: dict[str, workloads.PodDraft] = {}
        for key, d in sorted(((d.key, d) for d in drafts), key=lambda kd: kd[0]):
            if key in self._pods or key in accepted:
                other = self._pods[key].source if key in self._pods else accepted[key].source
                problem(d, "metadata.name", f"pod {key} is defined twice (also in {other})",
                        prefix=False)
            else:
                accepted[key] = d
        counts = {n: 0 for n in self._nodes}
        counts.update(self._per_node)
        placed: dict[str, Node] = {}
        pending: list[workloads.PodDraft] = []
        by_cidr: ipam.NetworkLookup | None = None  # these two built on first use
        by_ip: dict[IPv4Address, Node] | None = None
        owners: list[Node] = []  # the node of each network of by_cidr
        for key, d in accepted.items():
            if d.node_name:
                node = self._nodes.get(d.node_name)
                if node is None:
                    problem(d, "spec.nodeName", f"node '{d.node_name}' does not exist (nodes: "
                            f"{self._node_list()})")
                    continue
            elif d.ip is not None:
                if d.template.host_network:
                    if by_ip is None:  # the first node with an IP wins
                        by_ip = {n.internal_ip: n for n in reversed(self.nodes)}
                    node = by_ip.get(d.ip)
                else:
                    if by_cidr is None:
                        owners = [n for n in self.nodes for _ in (n.pod_cidr, *n.pod_blocks)]
                        by_cidr = ipam.NetworkLookup(c for n in self.nodes
                                                     for c in (n.pod_cidr, *n.pod_blocks))
                    found = by_cidr.find(d.ip)
                    node = owners[found] if found is not None else None
                if node is None and not d.template.host_network:
                    problem(d, "status.podIP", f"{d.ip} is in no node's pod CIDR ("
                            + ", ".join(f"{n.name} {n.pod_cidr}" for n in self.nodes) + ")",
                            prefix=False)
                    continue
                if node is None:
                    pending.append(d)
                    continue
            else:
                pending.append(d)
                continue
            placed[key] = node
            counts[node.name] += 1
        spreader = ipam.Spreader(self.nodes, counts)
        for d in pending:
            node = spreader.choose(d.template.node_selector)
            if node is None:
                problem(d, "spec.nodeSelector", "matches no node's labels (nodes: "
                        f"{self._node_list()})")
                continue
            placed[d.key] = node
            counts[node.name] += 1
        ips: dict[str, IPv4Address] = {}
        full: dict[tuple[str, str], tuple[list[str], dict[str, IPv4Network]]] = {}
        order = sorted(placed)
        for key in order:  # pins first, then the others, each in key order
            d, node = accepted[key], placed[key]
            if d.template.host_network:
                if d.ip is not None and d.ip != node.internal_ip:
                    problem(d, "status.podIP", f"{d.ip} is not the IP {node.internal_ip} of node "
                            f"{node.name} (hostNetwork pod)", prefix=False)
                ips[key] = node.internal_ip
            elif d.ip is not None:
                pool = self._pool_of(node, d.ip)
                own = self._pod_pools[node.name]  # (routed CNIs: the node network's)
                if pool is not None:
                    err = pool.claim(d.ip, f"{d.namespace}/Pod/{d.name}")
                elif isinstance(own, ipam.NodeNetworkPodPool):
                    err = f"{d.ip} is outside the pod addresses of {node.name}: {own.describe()}"
                else:
                    err = f"{d.ip} is outside {node.name}'s pod CIDR {node.pod_cidr}"
                if err:
                    problem(d, "status.podIP", err, prefix=False)
                    continue
                ips[key] = d.ip
        for key in order:
            d, node = accepted[key], placed[key]
            if key in ips or d.ip is not None:
                continue
            ip = self._pod_pools[node.name].allocate(f"{d.namespace}/Pod/{d.name}")
            if ip is None:  # said once per object below, not once per pod
                pods, nodes = full.setdefault((d.source, d.obj), ([], {}))
                pods.append(d.key)
                pool = self._pod_pools[node.name]
                nodes[node.name] = (pool.describe() if isinstance(pool, ipam.NodeNetworkPodPool)
                                    else node.pod_cidr)
                continue
            ips[key] = ip
        for (source, obj), (pods, nodes) in full.items():
            where = ", ".join(f"{n} {c}" for n, c in sorted(nodes.items()))
            what = f"pod {pods[0]}" if len(pods) == 1 else \
                f"{len(pods)} pods (the first {pods[0]})"
            problems.append(Problem(source, obj, "", f"no free pod address left for {what}: "
                                    f"the pod CIDRs are full ({where})"))
        macs = self._macs  # _insert_pod adds each new pod's
        out = []
        for key in sorted(ips):
            d, node = accepted[key], placed[key]
            mac = "" if d.template.host_network else (
                d.template.mac or ipam.mac_address(f"pod/{d.namespace}/{d.name}/eth0"))
            if mac and mac in macs:
                problem(d, f"metadata.annotations[{workloads.MAC_ANNOTATION}]",
                        f"MAC {mac} is already used by another pod", prefix=False)
                if not d.template.host_network:
                    self._pod_pools[node.name].release(ips[key])
                continue
            pod = Pod(namespace=d.namespace, name=d.name, node_name=node.name, ip=ips[key],
                      mac=mac, labels=dict(d.labels),
                      containers=[c.clone() for c in d.template.containers],
                      host_network=d.template.host_network, ready=d.ready,
                      terminating=d.terminating, hostname=d.hostname, subdomain=d.subdomain,
                      dns_policy=d.template.dns_policy,  # type: ignore[arg-type]
                      dns_config=d.template.dns_config, owner=d.owner, source=d.source,
                      listen=list(d.template.listen), listen_all=d.template.listen_all)
            self._insert_pod(pod)
            out.append(pod)
        if len(out) > 16:  # one sort of the whole list (two sorted runs: linear)
            self.pods.extend(out)
            self.pods.sort(key=lambda p: p.key)
        else:
            for pod in out:
                bisect.insort(self.pods, pod, key=lambda p: p.key)
        return out

    def _pool_of(self, node: Node, ip: IPv4Address) -> ipam.AddressPool | None:
        """The pool of ``node`` holding ``ip``: its pod CIDR's or one of its blocks'."""
        if ip in self._pod_pools[node.name]:  # (routed CNIs: the node network's)
            return self._pod_pools[node.name]
        return next((self._block_pools[b] for b in node.pod_blocks if ip in b), None)

    def _insert_pod(self, pod: Pod) -> None:
        """Register ``pod`` everywhere but in ``self.pods`` (the caller inserts it there)."""
        self._pods[pod.key] = pod
        self._index.add(pod)
        self._per_node[pod.node_name] = self._per_node.get(pod.node_name, 0) + 1
        if pod.mac:
            self._macs.add(pod.mac)
        if not pod.host_network:
            self._by_ip[pod.ip] = pod
        self._ensure_namespace(pod.namespace)

    def _admit_services(self, drafts: list[loader.ServiceDraft],
                        problems: list[Problem]) -> list[loader.ServiceDraft]:
        """Allocate ClusterIPs and NodePorts and add the services (module docstring)."""
        accepted: dict[str, loader.ServiceDraft] = {}
        for d in sorted(drafts, key=lambda d: d.service.key):
            key = d.service.key
            if key in self._services or key in accepted:
                other = self._services[key].source if key in self._services else \
                    accepted[key].source
                problems.append(Problem(d.source, d.obj, "metadata.name",
                                        f"duplicate Service (also in {other})"))
            else:
                accepted[key] = d
        cidr = self.config.service_cidr
        for d in accepted.values():
            if d.cluster_ip is not None:
                err = (f"{d.cluster_ip} is outside the service CIDR {cidr}"
                       if d.cluster_ip not in cidr
                       else self._service_pool.claim(d.cluster_ip, f"{d.service.namespace}/"
                                                     f"Service/{d.service.name}"))
                if err:
                    problems.append(Problem(d.source, d.obj, d.ip_field, err))
                d.service.cluster_ip = d.cluster_ip
            seen: set[tuple[int, str]] = set()
            for i, sp in enumerate(d.service.ports):
                if sp.node_port and (sp.node_port, sp.protocol) not in seen:
                    seen.add((sp.node_port, sp.protocol))
                    err = self._node_ports.claim(sp.node_port, f"{d.service.namespace}/Service/"
                                                 f"{d.service.name}")
                    if err:
                        problems.append(Problem(d.source, d.obj, f"spec.ports[{i}].nodePort", err))
                elif sp.node_port:
                    problems.append(Problem(d.source, d.obj, f"spec.ports[{i}].nodePort",
                                            f"duplicate nodePort {sp.node_port}/{sp.protocol}"))
        dns = accepted.get(DNS_SERVICE)
        if dns is not None and dns.wants_ip and dns.cluster_ip is None:
            tenth = cidr.network_address + 10
            if self._service_pool.claim(tenth, "kube-system/Service/kube-dns") is None:
                dns.service.cluster_ip, dns.wants_ip = tenth, False
        for d in accepted.values():  # pinned LoadBalancer addresses first
            svc = d.service
            if svc.type == "LoadBalancer" and not svc.load_balancer_ips and \
                    svc.load_balancer_ip is not None:
                svc.load_balancer_ips = [svc.load_balancer_ip]
            for ip in svc.load_balancer_ips if svc.type == "LoadBalancer" else []:
                for pool in self._lb_pools:
                    if ip in pool:
                        pool.claim(ip, f"{svc.namespace}/Service/{svc.name}")
        for key, d in accepted.items():
            label = f"{d.service.namespace}/Service/{d.service.name}"
            if d.service.type == "LoadBalancer" and not d.service.load_balancer_ips:
                for pool in self._lb_pools:  # IPAM: the lowest free pool address
                    ip = pool.allocate(label)
                    if ip is not None:
                        d.service.load_balancer_ips = [ip]
                        break
            if d.wants_ip and d.service.cluster_ip is None:
                d.service.cluster_ip = self._service_pool.allocate(label)
                if d.service.cluster_ip is None:
                    problems.append(Problem(d.source, d.obj, "spec.clusterIP", f"the service "
                                            f"CIDR {cidr} has no free address"))
            for sp in d.service.ports:
                if d.wants_node_ports and not sp.node_port:
                    sp.node_port = self._node_ports.allocate(label) or 0
            bisect.insort(self.services, d.service, key=lambda s: s.key)
            self._services[key] = d.service
            self._ensure_namespace(d.service.namespace)
        return list(accepted.values())

    def _check_target_ports(self, d: loader.ServiceDraft) -> None:
        """Warn about named targetPorts that selected pods do not declare (accepted, as
        Kubernetes does; those pods are left out of that port's endpoints)."""
        for i, missing, selected in endpoints.missing_target_ports(d.service, self._index):
            sp = d.service.ports[i]
            which = "any of the pods it selects" if missing == selected else \
                f"{missing} of the {selected} pods it selects"
            self.notices.append(Notice(
                d.source, d.obj, f"spec.ports[{i}].targetPort",
                f"port {sp.port}/{sp.protocol}: '{sp.target_port}' is no {sp.protocol} "
                f"containerPort name of {which}: they are left out of its endpoints"))

    # --- reading ------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} (nodes: {self._node_list()})") from None

    def pod(self, namespace: str, name: str) -> Pod:
        try:
            return self._pods[f"{namespace}/{name}"]
        except KeyError:
            raise KeyError(f"no pod {namespace}/{name}") from None

    def service(self, namespace: str, name: str) -> Service:
        try:
            return self._services[f"{namespace}/{name}"]
        except KeyError:
            raise KeyError(f"no service {namespace}/{name}") from None

    def pod_by_ip(self, ip: IPv4Address | str) -> Pod | None:
        """The pod owning ``ip`` (hostNetwork pods share their node's IP: never returned)."""
        return self._by_ip.get(IPv4Address(ip))

    def endpoint_slices(self, service: Service) -> list[EndpointSlice]:
        """Current slices: explicit ones for selector-less Services, derived ones otherwise."""
        if service.selector is None:
            return list(self._explicit.get((service.namespace, service.name), []))
        if self._slices_version != self.version:
            self._slices.clear()
            self._slices_version = self.version
        if service.key not in self._slices:
            self._slices[service.key] = endpoints.derive_slices(service, self._index,
                                                                   self._nodes)
        return list(self._slices[service.key])

    def all_endpoint_slices(self) -> list[EndpointSlice]:
        """Every service's slices, in service order."""
        return [s for svc in self.services for s in self.endpoint_slices(svc)]

    def backends(self, service: Service, port: ServicePort) -> list[tuple[Endpoint, int]]:
        """(endpoint, target port) for one service port, by IP; all conditions kept (S-11)."""
        return endpoints.backends(port, self.endpoint_slices(service))

    # --- editing ------------------------------------------------------------------------------

    def add_pod(self, pod: dict[str, Any] | Pod, source: str = API_SOURCE) -> Pod:
        """Validate and add a pod (a Pod manifest dict, or a ``Pod``); allocate what is unset.

        A ``Pod`` object with ``node_name == ""`` is placed, with IP ``0.0.0.0`` addressed.
        """
        obj = workloads.pod_to_dict(pod) if isinstance(pod, Pod) else dict(pod)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Pod")
        problems: list[Problem] = []
        parsed = loader.parse([Document(source, 0, obj)], problems)
        if obj.get("kind") != "Pod":
            problems.append(Problem(source, "", "kind", f"expected a Pod, got {obj['kind']!r}"))
        if not problems and not parsed.pods:
            problems.append(Problem(source, "", "", "the pod is not running: "
                                    + "; ".join(parsed.ignored)))
        if not problems:
            added = self._admit_pods(parsed.pods, problems)
        if problems:
            raise ManifestError(problems)
        if isinstance(pod, Pod) and pod.owner is not None:
            added[0].owner = pod.owner
        self.version += 1
        return added[0]

    def delete_pod(self, namespace: str, name: str) -> None:
        pod = self.pod(namespace, name)
        _drop(self.pods, pod)
        del self._pods[pod.key]
        self._index.remove(pod)
        self._per_node[pod.node_name] -= 1
        self._macs.discard(pod.mac)
        if not pod.host_network:
            self._by_ip.pop(pod.ip, None)
            pool = self._pool_of(self._nodes[pod.node_name], pod.ip)
            if pool is not None:
                pool.release(pod.ip)
        self.version += 1

    def set_pod_labels(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        pod = self.pod(namespace, name)
        problems: list[Problem] = []
        checked = Fields(problems, API_SOURCE, f"{namespace}/Pod/{name}").labels(
            {"labels": labels}, "metadata", "labels")
        if problems:
            raise ManifestError(problems)
        pod.labels = checked
        self._index.add(pod)
        self.version += 1

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        self.pod(namespace, name).ready = bool(ready)
        self.version += 1

    def add_service(self, svc: dict[str, Any] | Service, source: str = API_SOURCE) -> Service:
        """Validate and add a Service (a manifest dict, or a ``Service``); allocate its IPs."""
        obj = service_to_dict(svc) if isinstance(svc, Service) else dict(svc)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Service")
        problems: list[Problem] = []
        parsed = loader.parse([Document(source, 0, obj)], problems)
        if obj.get("kind") != "Service":
            problems.append(Problem(source, "", "kind", f"expected a Service, got "
                                    f"{obj['kind']!r}"))
        if not problems and parsed.services:
            added = self._admit_services(parsed.services, problems)
            for d in added:
                self._check_target_ports(d)
            if problems:
                for d in added:
                    self._remove_service(d.service)
        if problems:
            raise ManifestError(problems)
        self.version += 1
        return added[0].service

    def delete_service(self, namespace: str, name: str) -> None:
        self._remove_service(self.service(namespace, name))
        self.version += 1

    def _remove_service(self, svc: Service) -> None:
        _drop(self.services, svc)
        del self._services[svc.key]
        if svc.cluster_ip is not None:
            self._service_pool.release(svc.cluster_ip, f"{svc.namespace}/Service/{svc.name}")
        for ip in svc.load_balancer_ips:
            for pool in self._lb_pools:
                pool.release(ip, f"{svc.namespace}/Service/{svc.name}")
        for sp in svc.ports:
            if sp.node_port:
                self._node_ports.release(sp.node_port, f"{svc.namespace}/Service/{svc.name}")

    # --- dumping ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything, deterministic and JSON-able (golden tests, ``kemu show -o json``)."""
        c = self.config
        return {
            "config": {
                "name": c.name, "cluster_cidr": str(c.cluster_cidr),
                "node_cidr_prefix": c.node_cidr_prefix, "service_cidr": str(c.service_cidr),
                "node_network": str(c.node_network), "gateway_ip": jsonable(c.gateway_ip),
                "mode": c.mode, "mtu": c.mtu, "dns_domain": c.dns_domain, "listen": c.listen,
                "node_port_range": list(c.node_port_range),
            },
            "gateway": {"ip": jsonable(c.gateway_ip), "mac": self.gateway_mac},
            "external_hosts": jsonable(c.external_hosts),
            "namespaces": jsonable([self.namespaces[n] for n in sorted(self.namespaces)]),
            "nodes": [{**jsonable(n), "gateway_ip": str(n.gateway_ip)} for n in self.nodes],
            "pods": jsonable(self.pods),
            "services": jsonable(self.services),
            "endpoint_slices": jsonable(self.all_endpoint_slices()),
            "network_policies": jsonable(self.policies),
            "ignored": list(self.ignored),
        }


def _drop(items: list[Any], obj: Pod | Service) -> None:
    """Remove ``obj`` from ``items``, a list sorted by key (found by bisection)."""
    at = bisect.bisect_left(items, obj.key, key=lambda o: o.key)
    if at < len(items) and items[at] is obj:
        del items[at]
    else:  # the list was reordered from outside: the plain way
        items.remove(obj)


def jsonable(value: Any) -> Any:
    """Dataclasses, addresses, tuples -> JSON types (field order kept; ``except_`` -> except)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name.rstrip("_"): jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(value[k]) for k in sorted(value)}
    if isinstance(value, IPv4Address | IPv4Network):
        return str(value)
    return value


def service_to_dict(svc: Service) -> dict[str, Any]:
    """A ``Service`` as a manifest; ``cluster_ip`` None means headless for type ClusterIP."""
    spec: dict[str, Any] = {"type": svc.type, "ports": [
        {"port": p.port, "protocol": p.protocol, "targetPort": p.target_port or p.port,
         **({"name": p.name} if p.name else {}),
         **({"nodePort": p.node_port} if p.node_port else {})} for p in svc.ports]}
    if svc.cluster_ip is not None:
        spec["clusterIP"] = str(svc.cluster_ip)
    elif svc.type == "ClusterIP":
        spec["clusterIP"] = "None"
    if svc.selector is not None:
        spec["selector"] = dict(svc.selector)
    if svc.session_affinity == "ClientIP":
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.affinity_timeout}}
    if svc.external_traffic_policy == "Local":
        spec["externalTrafficPolicy"] = "Local"
    if svc.internal_traffic_policy == "Local":
        spec["internalTrafficPolicy"] = "Local"
    if svc.external_ips:
        spec["externalIPs"] = [str(ip) for ip in svc.external_ips]
    if svc.load_balancer_source_ranges:
        spec["loadBalancerSourceRanges"] = [str(n) for n in svc.load_balancer_source_ranges]
    if svc.external_name:
        spec["externalName"] = svc.external_name
    if svc.publish_not_ready_addresses:
        spec["publishNotReadyAddresses"] = True
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": svc.name, "namespace": svc.namespace,
                                        "labels": dict(svc.labels)}, "spec": spec}
    if svc.load_balancer_ips:
        out["status"] = {"loadBalancer": {"ingress": [{"ip": str(ip)}
                                                      for ip in svc.load_balancer_ips]}}
    return out
