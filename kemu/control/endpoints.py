"""The EndpointSlice controller: Services with selectors -> EndpointSlices (S-11, S-12, S-13).

``derive_slices`` does what kube-controller-manager does for one Service:

- every pod of the Service's namespace whose labels match its selector is an endpoint, with its
  pod IP (the node IP for hostNetwork pods, M-3); completed pods never reach the cluster model;
- conditions (S-12): ``ready`` = pod Ready and not terminating (always true with
  ``publishNotReadyAddresses``), ``serving`` = pod Ready, ``terminating`` = deletion requested;
- ``hostname`` = the pod's hostname when its subdomain names this Service (D-5); ``zone`` from
  the node label ``topology.kubernetes.io/zone``;
- ports: each Service port with ``targetPort`` resolved on the pod (a *named* target may resolve
  to different numbers on different pods; a pod without that name gets no such port). Pods are
  grouped by resolved port set, one slice per group and per 100 endpoints (S-12), named
  ``<service>-<5 chars of sha256>``. A Service selecting no pod gets one empty slice (the
  controller's placeholder).

Pods are given as a list or as a ``kemu.control.selectors.PodIndex`` (what ``Cluster`` passes:
selection then costs the matching pods, not every pod of the cluster).

``backends`` turns slices into (endpoint, target port) pairs for one Service port, whoever made
the slices (derived, or given for selector-less Services), sorted by IP then port. It returns
every endpoint with its conditions: choosing the usable ones (S-11) is the proxy's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kemu.control.model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    Pod,
    Service,
    ServicePort,
)
from kemu.control.selectors import PodIndex, matches_map
from kemu.control.workloads import encode

MAX_ENDPOINTS_PER_SLICE = 100
ZONE_LABEL = "topology.kubernetes.io/zone"


def target_port(port: ServicePort, pod: Pod) -> int | None:
    """The port on ``pod`` that ``port`` sends to; None when a named target is missing there."""
    if isinstance(port.target_port, str):
        return pod.find_port(port.target_port, port.protocol)
    return port.target_port or port.port


def selected_pods(service: Service, pods: Iterable[Pod] | PodIndex) -> list[Pod]:
    """Pods the Service's selector picks (none for selector-less Services).

    ``pods`` is a list (scanned, result in its order) or a ``PodIndex`` (result in key order,
    the order of ``Cluster.pods``).
    """
    if service.selector is None:
        return []
    if isinstance(pods, PodIndex):
        return pods.select_map(service.namespace, service.selector)
    return [p for p in pods
            if p.namespace == service.namespace and matches_map(service.selector, p.labels)]


def pod_endpoint(service: Service, pod: Pod, nodes: Mapping[str, Node]) -> Endpoint:
    node = nodes.get(pod.node_name)
    ip = node.internal_ip if pod.host_network and node is not None else pod.ip
    hostname = pod.hostname if pod.hostname and pod.subdomain == service.name else ""
    return Endpoint(ip=ip, ready=(pod.ready and not pod.terminating)
                    or service.publish_not_ready_addresses,
                    serving=pod.ready, terminating=pod.terminating, node_name=pod.node_name,
                    pod=pod.key, hostname=hostname,
                    zone=node.labels.get(ZONE_LABEL, "") if node is not None else "")


def derive_slices(service: Service, pods: Iterable[Pod] | PodIndex,
                  nodes: Mapping[str, Node]) -> list[EndpointSlice]:
    """The EndpointSlices the controller keeps for ``service`` (see the module docstring)."""
    if service.selector is None or service.type == "ExternalName":
        return []
    groups: dict[tuple[tuple[int, str, str], ...], list[Endpoint]] = {}
    for pod in selected_pods(service, pods):
        ports: list[tuple[int, str, str]] = []
        for sp in service.ports:
            number = target_port(sp, pod)
            if number is not None:
                ports.append((number, sp.protocol, sp.name))
        groups.setdefault(tuple(ports), []).append(pod_endpoint(service, pod, nodes))
    if not groups:
        return [_slice(service, (), [], 0)]
    out = []
    for port_set, members in sorted(groups.items()):
        members.sort(key=lambda e: (e.ip, e.pod))
        for chunk in range(0, len(members), MAX_ENDPOINTS_PER_SLICE):
            out.append(_slice(service, port_set, members[chunk:chunk + MAX_ENDPOINTS_PER_SLICE],
                              chunk))
    out.sort(key=lambda s: s.name)
    return out


def _slice(service: Service, ports: tuple[tuple[int, str, str], ...], endpoints: list[Endpoint],
           chunk: int) -> EndpointSlice:
    seed = f"{service.key}/{ports}/{chunk}"
    return EndpointSlice(namespace=service.namespace, name=f"{service.name}-{encode(seed, 5)}",
                         service=service.name, endpoints=endpoints,
                         ports=[EndpointPort(port=n, protocol=p, name=name)  # type: ignore[arg-type]
                                for n, p, name in ports])


def backends(port: ServicePort, slices: Iterable[EndpointSlice]) -> list[tuple[Endpoint, int]]:
    """(endpoint, target port) for one Service port: slice ports match by name and protocol."""
    out: list[tuple[Endpoint, int]] = []
    for s in slices:
        for ep_port in s.ports:
            if ep_port.name == port.name and ep_port.protocol == port.protocol:
                out.extend((ep, ep_port.port) for ep in s.endpoints)
                break
    out.sort(key=lambda pair: (pair[0].ip, pair[1], pair[0].pod))
    return out


def unresolved_target_ports(service: Service, pods: Iterable[Pod] | PodIndex) -> list[int]:
    """Indexes of ports whose *named* targetPort matches no containerPort of any selected pod.

    Empty when the Service selects no pods at all (nothing to check against yet).
    """
    chosen = selected_pods(service, pods)
    if not chosen:
        return []
    return [i for i, sp in enumerate(service.ports)
            if isinstance(sp.target_port, str)
            and all(p.find_port(sp.target_port, sp.protocol) is None for p in chosen)]


def missing_target_ports(service: Service, pods: Iterable[Pod] | PodIndex
                         ) -> list[tuple[int, int, int]]:
    """(port index, pods without it, pods selected) for each *named* targetPort that some
    selected pod does not declare: the controller leaves those pods out of that port's
    slices (Kubernetes accepts the Service). Empty when the Service selects no pod."""
    chosen = selected_pods(service, pods)
    out = []
    for i, sp in enumerate(service.ports):
        if isinstance(sp.target_port, str):
            missing = sum(1 for p in chosen if p.find_port(sp.target_port, sp.protocol) is None)
            if missing:
                out.append((i, missing, len(chosen)))
    return out
