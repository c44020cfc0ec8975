"""What each pod's application listens on: the ports its emulated stack answers.

In a real cluster the application listens where its Service sends traffic, whether or not the
pod spec declares the port (``containerPorts`` are informational; many charts declare none).
kemu's emulated stack (``kemu.dataplane.slowpath.HostStack``) answers a TCP SYN to a listening
port with SYN-ACK (else RST) and a UDP datagram to one with an echo of its payload (DNS to a
DNS pod: a DNS answer) (else ICMP port unreachable). A pod listens on (Cluster ``spec.listen``):

- ``declared``: its declared containerPorts (the protocol each declares);
- ``services`` (the default): those, every port a Service selecting it targets (S-13: the
  Service port's protocol; a named targetPort resolved on this pod; EndpointSlices given
  explicitly count for the pods owning their addresses), and every port its containers'
  liveness/readiness/startup probes connect to (``httpGet``, ``tcpSocket``, ``grpc``: TCP;
  named ones resolved against the container's ports);
- ``all``: every port, TCP and UDP.

The pod annotation ``kemu.dev/listen`` adds ports in every mode: ``"8080,9000/udp"`` (TCP
unless ``/udp`` or ``/sctp`` follows) or ``"all"``. ``kemu.dev/udp-echo`` (older, still read)
names declared UDP containerPorts that echo: every listening UDP port echoes now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.control.model import Pod


@dataclass(frozen=True)
class Listening:
    """A pod's listening set: (protocol name, port) pairs, or every port (``all``)."""

    ports: frozenset[tuple[str, int]]
    all: bool = False

    def __contains__(self, key: tuple[str, int]) -> bool:
        return self.all or key in self.ports

    def text(self) -> str:
        """``80/TCP,9000/UDP`` (sorted), ``all`` or ``<none>``."""
        if self.all:
            return "all"
        return ",".join(f"{port}/{proto}" for proto, port in
                        sorted(self.ports, key=lambda k: (k[1], k[0]))) or "<none>"


def declared(pod: Pod) -> set[tuple[str, int]]:
    """The declared containerPorts and the ``kemu.dev/listen`` ports of ``pod``."""
    out = {(p.protocol, p.port) for p in pod.container_ports()}
    out.update(pod.listen)
    return out


def probes(pod: Pod) -> set[tuple[str, int]]:
    return {("TCP", port) for c in pod.containers for port in c.probe_ports}


def service_targets(cluster: Cluster) -> dict[str, set[tuple[str, int]]]:
    """Pod key -> the (protocol, port) pairs Services send it to, from every EndpointSlice
    (derived ones carry targetPorts resolved per pod; explicit ones name addresses: the pod
    owning each address counts)."""
    by_ip = {p.ip: p.key for p in cluster.pods if not p.host_network}
    out: dict[str, set[tuple[str, int]]] = {}
    for sl in cluster.all_endpoint_slices():
        if not sl.ports:
            continue
        ports = {(p.protocol, p.port) for p in sl.ports}
        for ep in sl.endpoints:
            key = ep.pod or by_ip.get(ep.ip, "")
            if key:
                out.setdefault(key, set()).update(ports)
    return out


def listening_map(cluster: Cluster) -> dict[str, Listening]:
    """Pod key -> its listening set under the cluster's ``spec.listen`` setting."""
    mode = cluster.config.listen
    targets = service_targets(cluster) if mode == "services" else {}
    out: dict[str, Listening] = {}
    for pod in cluster.pods:
        ports = declared(pod)
        if mode == "services":
            ports |= targets.get(pod.key, set())
            ports |= probes(pod)
        out[pod.key] = Listening(frozenset(ports), mode == "all" or pod.listen_all)
    return out
