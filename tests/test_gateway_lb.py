"""The gateway as a router and LoadBalancer Services from outside (E-4; E-6, S-11: KEP-1669)."""

from __future__ import annotations

from pathlib import Path

from helpers import DATA, checksums_valid, scenario
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

import kemu
from kemu.compiler.routes import gateway_routes, lb_announcers


def _cluster(tmp_path: Path, backend: str, extra: str = "", spec: str = "",
             mode: str = "host-gw", **options) -> kemu.frontend.api.EmulatedCluster:
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    text = text.replace("  nodes: 3\n", f"  nodes: 3\n  mode: {mode}\n{spec}", 1)
    (tmp_path / "c.yaml").write_text(text + extra)
    options.setdefault("respond", True)
    return kemu.load(tmp_path / "c.yaml", backend=backend, **options)


def _errors(trace) -> list[Ether]:
    return [Ether(p.hops[-1][2]) for p in trace.packets if p.origin == "icmp-error"]


# ---------------------------------------------------------------- item 5: the gateway routes
def test_gateway_routes_a_pod_cidr_to_its_node(backend: str) -> None:
    """host-gw: an external host's packet to a pod goes via its default route, the gateway,
    which routes the pod CIDR via node2 (TTL 64 -> 63 at the gateway, 62 at node2)."""
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="10.244.1.2") / TCP(sport=4000, dport=8080, flags="S"),
                     src="ext/client")
    path = [n for n, _d in trace.path(0)]
    it = iter(path)
    assert all(h in it for h in ["ext/client/eth0", "gateway/eth0", "node2/eth0",
                                 "default/c/eth0"]), path
    assert Ether(trace.frames_at("default/c/eth0")[0])[IP].ttl == 62
    assert "route 10.244.1.0/24 via 172.18.0.3 dev eth0" in trace.detailed()
    assert trace.verdict().reachable  # the SYN-ACK comes back (node2 -> client directly)


def test_gateway_ttl_expiry_sends_time_exceeded_from_the_gateway(backend: str) -> None:
    emu = scenario(backend, respond=True)
    trace = emu.send(IP(dst="10.244.1.2", ttl=1) / UDP(sport=7, dport=9) / b"x",
                     src="ext/client")
    assert trace.drop_reasons(0) == ["TTL exceeded"]
    (err,) = _errors(trace)
    assert (err[ICMP].type, err[ICMP].code) == (11, 0)
    assert err[IP].src == "172.18.0.1" and err[IP].dst == "172.18.0.100"
    assert err[IP].tos == 0xC0 and checksums_valid(bytes(err))
    assert "external host client" in {d for n in range(len(trace.packets))
                                      for d in trace.delivered_to(n)}


def test_gateway_host_unreachable_on_the_node_network(backend: str) -> None:
    """A node-network address nobody owns: no neighbour, ICMP host unreachable (3/1)."""
    emu = scenario(backend, respond=True)
    t = emu.engine.tables
    gw = t.iface("gateway/eth0")
    frame = Ether(dst=int(t.if_mac[gw]).to_bytes(6, "big"), src="02:00:00:00:00:01") / \
        IP(src="172.18.0.100", dst="172.18.0.99") / UDP(sport=7, dport=9) / b"x"
    trace = emu.send(frame, src="ext/client", fix_l2=False)
    assert trace.outcome(0) == "NEIGH" or "NEIGH" in str(trace.outcome(0))
    (err,) = _errors(trace)
    assert (err[ICMP].type, err[ICMP].code) == (3, 1)
    assert err[IP].src == "172.18.0.1"


def test_vxlan_pod_cidrs_leave_through_the_gateway(backend: str, tmp_path: Path) -> None:
    emu = _cluster(tmp_path, backend, mode="vxlan")
    trace = emu.send(IP(dst="10.244.1.2") / TCP(sport=4000, dport=8080, flags="S"),
                     src="ext/client")
    assert trace.outcome(0) == "LEFT"


def test_outside_destinations_leave(backend: str) -> None:
    emu = scenario(backend)
    trace = emu.send(IP(dst="8.8.8.8") / UDP(dport=53) / b"q", src="ext/client")
    assert trace.outcome(0) == "LEFT"


def test_show_routes_lists_the_gateway(tmp_path: Path) -> None:
    c = kemu.load(DATA / "scenario").engine.cluster
    rendered = [r.render() for r in gateway_routes(c)]
    assert rendered[0].startswith("10.244.0.0/24 via 172.18.0.2 dev eth0")
    assert rendered[-1].startswith("default dev eth0")


# ---------------------------------------------------------------- item 8: LoadBalancer
LB = """---
apiVersion: v1
kind: Service
metadata: {name: lb-c, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: c}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: lb-ranged, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: c}
  loadBalancerSourceRanges: [172.18.0.100/32]
  ports: [{port: 81, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: lb-pinned, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerIP: 172.18.0.250
  selector: {app: a}
  ports: [{port: 80, targetPort: 8080}]
"""
L2 = "  loadBalancer: {pool: [172.18.0.240/28], mode: l2}\n"
ROUTED = "  loadBalancer: {pool: [203.0.113.0/28], mode: routed}\n"


def test_lb_ipam_assigns_from_the_pool(backend: str, tmp_path: Path) -> None:
    emu = _cluster(tmp_path, backend, LB, L2)
    c = emu.engine.cluster
    got = {s.name: [str(ip) for ip in s.load_balancer_ips] for s in c.services
           if s.type == "LoadBalancer"}
    assert got == {"lb-c": ["172.18.0.240"], "lb-ranged": ["172.18.0.241"],
                   "lb-pinned": ["172.18.0.250"]}
    # the only ready endpoint of lb-c is on node2; Cluster policy: any node may announce
    assert set(lb_announcers(c)) == {ip for s in c.services for ip in s.load_balancer_ips}


def test_lb_l2_from_outside(backend: str, tmp_path: Path) -> None:
    """MetalLB L2: a node answers ARP for the address; the client's SYN reaches it, the LB
    frontend DNATs to pod c, the SYN-ACK returns."""
    emu = _cluster(tmp_path, backend, LB, L2)
    node = lb_announcers(emu.engine.cluster)[next(iter(
        s.load_balancer_ips[0] for s in emu.engine.cluster.services if s.name == "lb-c"))]
    t = emu.engine.tables
    arp = emu.send(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="172.18.0.240", psrc="172.18.0.100"),
                   src="ext/client")
    replies = [Ether(p.hops[0][2]) for p in arp.packets if p.origin == "arp"]
    assert replies and replies[0][ARP].hwsrc == \
        ":".join(f"{b:02x}" for b in int(t.if_mac[t.iface(f"{node}/eth0")]).to_bytes(6, "big"))
    trace = emu.send(IP(dst="172.18.0.240") / TCP(sport=4000, dport=80, flags="S"),
                     src="ext/client")
    assert "pod default/c" in trace.delivered_to(0)
    assert trace.verdict().reachable


def test_lb_routed_from_outside(backend: str, tmp_path: Path) -> None:
    emu = _cluster(tmp_path, backend, LB, ROUTED)
    c = emu.engine.cluster
    ip = [s for s in c.services if s.name == "lb-c"][0].load_balancer_ips[0]
    assert str(ip) == "203.0.113.0"
    trace = emu.send(IP(dst=str(ip)) / TCP(sport=4000, dport=80, flags="S"), src="ext/client")
    path = [n for n, _d in trace.path(0)]
    assert "gateway/eth0" in path
    assert "pod default/c" in trace.delivered_to(0)
    assert trace.verdict().reachable
    assert any(r.prefix.prefixlen == 32 for r in gateway_routes(c))


def test_lb_source_ranges(backend: str, tmp_path: Path) -> None:
    emu = _cluster(tmp_path, backend, LB, L2)
    ok = emu.send(IP(dst="172.18.0.241") / TCP(sport=4000, dport=81, flags="S"),
                  src="ext/client")
    assert ok.verdict().reachable
    denied = emu.send(IP(dst="172.18.0.241") / TCP(sport=4001, dport=81, flags="S"),
                      src="ext/web")
    assert denied.drop_reasons(0) == ["source not in loadBalancerSourceRanges (KUBE-FW DROP)"]
    assert not _errors(denied)  # a DROP: no ICMP
    # the range applies to the LoadBalancer address only, not to the Service's ClusterIP
    svc = [s for s in emu.engine.cluster.services if s.name == "lb-ranged"][0]
    via_cip = emu.send(IP(dst=str(svc.cluster_ip)) / TCP(sport=4002, dport=81, flags="S"),
                       src="default/a")
    assert "pod default/c" in via_cip.delivered_to(0)


ETP = """---
apiVersion: v1
kind: Pod
metadata: {name: e, namespace: default, labels: {app: e},
           deletionTimestamp: "2024-01-01T00:00:00Z"}
spec:
  nodeName: node1
  containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]
status: {podIP: 10.244.0.9}
---
apiVersion: v1
kind: Pod
metadata: {name: f, namespace: default, labels: {app: e}}
spec:
  nodeName: node2
  containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]
status: {podIP: 10.244.1.9}
---
apiVersion: v1
kind: Service
metadata: {name: np-e, namespace: default}
spec:
  type: NodePort
  selector: {app: e}
  externalTrafficPolicy: Local
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
"""


def test_etp_local_falls_back_to_local_terminating_endpoints(backend: str,
                                                              tmp_path: Path) -> None:
    """KEP-1669: node1 has no ready endpoint of np-e, only the terminating (still serving)
    pod e: external traffic to node1's NodePort goes to e, not to node2's ready pod f."""
    emu = _cluster(tmp_path, backend, ETP)
    trace = emu.send(IP(dst="172.18.0.2") / TCP(sport=4000, dport=30090, flags="S"),
                     src="ext/client")
    assert "pod default/e" in trace.delivered_to(0)
    # cluster-wide traffic (the ClusterIP) keeps to the ready endpoint
    svc = [s for s in emu.engine.cluster.services if s.name == "np-e"][0]
    for sport in range(5000, 5008):
        t2 = emu.send(IP(dst=str(svc.cluster_ip)) / TCP(sport=sport, dport=80, flags="S"),
                      src="default/a")
        assert "pod default/f" in t2.delivered_to(0)
    # node2 has its ready pod f
    t3 = emu.send(IP(dst="172.18.0.3") / TCP(sport=4001, dport=30090, flags="S"),
                  src="ext/client")
    assert "pod default/f" in t3.delivered_to(0)
