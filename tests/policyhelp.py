"""NetworkPolicy test helpers: the policy test cluster, probes, and a brute-force oracle.

The oracle evaluates networking.k8s.io/v1 NetworkPolicy directly over the model's objects
(its own label matching, ``ipaddress`` for ipBlocks), written without the compiler or the
datapath: P-1 isolation per direction, P-2 union and both ends, P-3..P-7 peers and ports,
P-9 a pod to itself, P-12 hostNetwork pods never selected.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP

import kemu
from kemu.control.model import LabelSelector, NetworkPolicy, Pod
from kemu.dataplane import codes as C
from kemu.frontend.trace import Trace


def pod(name: str, ns: str, node: str, labels: dict[str, str],
        ports: list[tuple[int, str, str]] = (), host_network: bool = False) -> dict[str, Any]:
    """A Pod manifest: ports (number, name, protocol)."""
    spec: dict[str, Any] = {"nodeName": node, "containers": [{"name": "c", "ports": [
        {"containerPort": p, **({"name": n} if n else {}), "protocol": proto}
        for p, n, proto in ports]}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def policy(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def cluster_docs(icmp: str = "deny") -> list[dict[str, Any]]:
    """Two namespaces (x: team=a, y: team=b); x/a and x/b on node1, x/b2 (same labels as
    x/b, but its port named ``http`` is 8080) and y/c on node2, y/d on node1; x/h hostNetwork
    on node1; Service x/svc-b (app=b, port 80 -> http); an external host."""
    return [
        {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "pol"},
         "spec": {"nodes": 2, "listen": "all", "networkPolicy": {"icmp": icmp},
                  "kubeProxy": {"masqueradeRandomFully": False},
                  "masquerade": {"enabled": True, "randomFully": False},
                  "externalHosts": [{"name": "client", "ip": "172.18.0.100"}]}},
        namespace("x", team="a"), namespace("y", team="b"),
        pod("a", "x", "node1", {"app": "a"}, [(80, "http", "TCP")]),
        pod("b", "x", "node1", {"app": "b"}, [(80, "http", "TCP"), (81, "alt", "TCP"),
                                               (53, "dns", "UDP")]),
        pod("b2", "x", "node2", {"app": "b"}, [(8080, "http", "TCP"), (53, "dns", "UDP")]),
        pod("c", "y", "node2", {"app": "c"}, [(80, "http", "TCP")]),
        pod("d", "y", "node1", {"app": "d", "tier": "db"}, [(5432, "pg", "TCP")]),
        pod("h", "x", "node1", {"app": "h"}, [(9100, "metrics", "TCP")], host_network=True),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-b", "namespace": "x"},
         "spec": {"selector": {"app": "b"}, "clusterIP": "10.96.0.50",
                  "ports": [{"port": 80, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-a", "namespace": "x"},
         "spec": {"selector": {"app": "a"}, "clusterIP": "10.96.0.51", "type": "NodePort",
                  "ports": [{"port": 80, "targetPort": 80, "nodePort": 30080}]}},
    ]


def make(backend: str, *policies: dict[str, Any], icmp: str = "deny",
         respond: bool = True) -> kemu.frontend.api.EmulatedCluster:
    return kemu.load(cluster_docs(icmp) + list(policies), backend=backend, respond=respond)


def ip_of(c: kemu.frontend.api.EmulatedCluster, key: str) -> str:
    t = c.tables
    p = c.model.pods[t.pod_key.index(key)]
    return str(p.ip)


_SPORT = [41000]


def probe(c: kemu.frontend.api.EmulatedCluster, src: str, dst: str, port: int = 80,
          proto: str = "tcp", sport: int | None = None) -> Trace:
    """A SYN (TCP), a datagram (UDP) or an echo request (ICMP) from ``src`` to ``dst`` (a
    pod key or an address), a fresh source port each time."""
    if sport is None:
        _SPORT[0] = _SPORT[0] + 1 if _SPORT[0] < 60000 else 41000
        sport = _SPORT[0]
    dip = ip_of(c, dst) if "/" in dst and not dst[0].isdigit() else dst
    if proto == "tcp":
        pkt = IP(dst=dip) / TCP(sport=sport, dport=port, flags="S", seq=1)
    elif proto == "udp":
        pkt = IP(dst=dip) / UDP(sport=sport, dport=port) / b"q"
    else:
        pkt = IP(dst=dip) / ICMP(id=sport)
    return c.send(pkt, src=src)


def reachable(c: kemu.frontend.api.EmulatedCluster, src: str, dst: str, port: int = 80,
              proto: str = "tcp") -> bool:
    return probe(c, src, dst, port, proto).verdict().reachable


def policy_events(trace: Trace) -> list[tuple[str, str, str, int]]:
    """(ALLOW|DENY, pod, ingress|egress, rule) of every packet of the trace, in order."""
    t = trace.tables
    out = []
    for p in trace.packets:
        for _i, _d, _data, evs in p.hops:
            for kind, a, b, cc in evs:
                if kind in (C.EV_POLICY_ALLOW, C.EV_POLICY_DENY):
                    out.append(("ALLOW" if kind == C.EV_POLICY_ALLOW else "DENY",
                                t.pod_key[a], "ingress" if b == C.POL_INGRESS else "egress",
                                int(cc)))
    return out


def policy_dropped(trace: Trace, packet: int = 0) -> bool:
    return any(k == C.OUT_DROPPED and r == C.DROP_POLICY
               for k, r, _i, _a in trace.packets[packet].outcomes)


# ---- the oracle -----------------------------------------------------------------------------

def _sel(sel: LabelSelector, labels: dict[str, str]) -> bool:
    for k, v in sel.match_labels.items():
        if labels.get(k) != v:
            return False
    for r in sel.match_expressions:
        has = r.key in labels
        val = labels.get(r.key)
        ok = {"In": has and val in r.values, "NotIn": not has or val not in r.values,
              "Exists": has, "DoesNotExist": not has}[r.operator]
        if not ok:
            return False
    return True


def _ns_labels(model: Any, ns: str) -> dict[str, str]:
    n = model.namespaces.get(ns)
    labels = dict(n.labels) if n is not None else {}
    labels.setdefault("kubernetes.io/metadata.name", ns)
    return labels


def _selects(pol: NetworkPolicy, p: Pod) -> bool:
    return not p.host_network and p.namespace == pol.namespace and _sel(pol.pod_selector,
                                                                       p.labels)


def _peer_ok(model: Any, pol: NetworkPolicy, rule: Any, remote: Pod | None,
             remote_ip: str) -> bool:
    if not rule.peers:
        return True
    addr = ipaddress.IPv4Address(remote_ip)
    for peer in rule.peers:
        if peer.ip_block is not None:
            if addr in peer.ip_block.cidr and not any(addr in e for e in peer.ip_block.except_):
                return True
            continue
        if remote is None or remote.host_network:
            continue
        if peer.namespace_selector is not None:
            if not _sel(peer.namespace_selector, _ns_labels(model, remote.namespace)):
                continue
        elif remote.namespace != pol.namespace:
            continue
        if peer.pod_selector is not None and not _sel(peer.pod_selector, remote.labels):
            continue
        return True
    return False


def _port_ok(rule: Any, proto: str, port: int, dst: Pod | None) -> bool:
    if not rule.ports:
        return True
    for p in rule.ports:
        if p.protocol != proto:
            continue
        if p.port is None:
            return True
        if isinstance(p.port, str):
            if dst is None:
                continue
            for c in dst.containers:
                for cp in c.ports:
                    if cp.name == p.port and cp.protocol == proto and cp.port == port:
                        return True
            continue
        if p.port <= port <= (p.end_port or p.port):
            return True
    return False


def oracle(model: Any, src: Pod, dst: Pod, proto: str, port: int) -> bool:
    """May ``src`` open a connection to ``dst`` (pod to pod, no NAT) on ``proto``/``port``?"""
    if src is dst:
        return True  # P-9
    for local, remote, dirn, ptype in ((src, dst, "egress", "Egress"),
                                       (dst, src, "ingress", "Ingress")):
        pols = [p for p in model.policies if ptype in p.policy_types and _selects(p, local)]
        if not pols:
            continue  # not isolated that way (P-1)
        remote_ip = str(remote.ip)
        if not any(_peer_ok(model, pol, rule, remote, remote_ip)
                   and _port_ok(rule, proto, port, dst)
                   for pol in pols for rule in getattr(pol, dirn)):
            return False
    return True
