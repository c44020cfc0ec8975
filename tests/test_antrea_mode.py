"""Antrea as the cluster's CNI (``spec.cni: antrea``, issue #18), on every backend.

What Antrea's documentation and source say a node does (kemu/compiler/antrea.py cites the
pages: docs/design/architecture.md, docs/design/ovs-pipeline.md, docs/antrea-proxy.md,
docs/noencap-hybrid-modes.md, pkg/agent/util/net.go), checked with real packets: pods are
ports of the OVS bridge ``br-int`` named as ``GenerateContainerInterfaceName`` names them,
``antrea-gw0`` holds the pod CIDR's gateway, ``antrea-tun0`` is the flow-based tunnel port;
peers' pod CIDRs are routed onlink via their gateways on antrea-gw0 (encap) or via the peer
on eth0 (noEncap); a same-node frame is switched by its destination MAC (no TTL change); a
cross-node one gets L3Forwarding's MACs (antrea-gw0's, the Global Virtual MAC), L3DecTTL
and Geneve (UDP 6081, VNI 0, protocol 0x6558) / VXLAN (UDP 4789) / GRE between the nodes'
addresses, re-dissected by Scapy; AntreaProxy translates a pod's ClusterIP connection in OVS
at the source node (the frame on the wire is addressed to the endpoint) and un-DNATs the
reply there; SpoofGuard drops a forged source. The cluster: examples/cni/antrea/cluster.yaml.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import all_frames, checksums_valid, delivered_frame
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN

import kemu
from kemu.compiler.antrea import interface_name, sandbox_id
from kemu.dataplane import codes as C

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cni" / "antrea" / "cluster.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
CLUSTER_IP = "10.96.0.10"   # default/web
WEB = {"10.244.1.2", "10.244.2.2"}
GVMAC = "aa:bb:cc:dd:ee:ff"


def _docs(**cni: object) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for d in docs:
        if d["kind"] == "Cluster":
            d["spec"]["cni"].update(cni)
    return docs


def _emu(backend: str, respond: bool = False, **cni: object) -> kemu.frontend.api.EmulatedCluster:
    return kemu.load(_docs(**cni), backend=backend, respond=respond)


def _syn(dst: str, dport: int, sport: int = 40000, **ip: object) -> IP:
    return IP(dst=dst, **ip) / TCP(sport=sport, dport=dport, flags="S", seq=1)


def _wire(emu: kemu.frontend.api.EmulatedCluster, trace, name: str) -> list[bytes]:
    i = emu.tables.iface(name)
    return [data for p in trace.packets for (iface, _d, data, _e) in p.hops if iface == i]


def _mac(emu: kemu.frontend.api.EmulatedCluster, name: str) -> str:
    m = int(emu.tables.if_mac[emu.tables.iface(name)])
    return ":".join(f"{b:02x}" for b in m.to_bytes(6, "big"))


def _tables(trace) -> list[int]:
    """The OVS tables (EV_OVS_TABLE's a) the trace's packet 0 met, in order."""
    return [a for (_i, _d, _f, evs) in trace.packets[0].hops for (k, a, _b, _c) in evs
            if k == C.EV_OVS_TABLE]


def test_devices_of_a_node(backend: str) -> None:
    """br-int (its internal port, no peer), antrea-gw0 with the pod CIDR's .1, antrea-tun0,
    a pod's OVS port named as Antrea names it; no Linux bridge; MTU = 1500 - 50 (Geneve)."""
    emu = _emu(backend)
    t = emu.tables
    names = [n for n in t.if_name if n.startswith("node1/")]
    assert {"node1/br-int", "node1/antrea-gw0", "node1/antrea-tun0"} <= set(names)
    assert "node1/cbr0" not in names
    gw = t.iface("node1/antrea-gw0")
    assert int(t.if_kind[gw]) == C.IF_OVS_GW and int(t.if_mtu[gw]) == 1450
    assert int(t.if_ip[gw]) == int(ipaddress.IPv4Address("10.244.0.1"))
    assert int(t.if_kind[t.iface("node1/antrea-tun0")]) == C.IF_OVS_TUN
    br = t.iface("node1/br-int")
    assert int(t.if_kind[br]) == C.IF_OVS_PORT and int(t.if_peer[br]) == -1
    port = t.iface(f"node1/{interface_name('client', 'default/client')}")
    assert int(t.if_kind[port]) == C.IF_OVS_PORT and int(t.if_mtu[port]) == 1450
    assert t.if_name[int(t.if_peer[port])] == "default/client/eth0"
    assert t.ovs_tunnel == C.ANTREA_GENEVE
    gre = _emu(backend, tunnelType="gre").tables
    assert int(gre.if_mtu[gre.iface("node1/antrea-gw0")]) == 1462  # GREOverhead 38
    plain = _emu(backend, trafficEncapMode="noEncap").tables
    assert int(plain.if_mtu[plain.iface("node1/antrea-gw0")]) == 1500
    assert not any(n.endswith("/antrea-tun0") for n in plain.if_name)


def test_interface_name_is_antreas() -> None:
    """GenerateContainerInterfaceName: podName[:8] + "-" + sha1(containerID)[:6]."""
    key = hashlib.sha1(sandbox_id("default/frontend-abc").encode()).hexdigest()[:6]
    assert interface_name("frontend-abc", "default/frontend-abc") == f"frontend-{key}"
    assert len(interface_name("frontend-abc", "default/frontend-abc")) == 15
    assert interface_name("db", "default/db").startswith("db-")


def test_routes_as_the_agent_installs_them() -> None:
    enc = kemu.load(_docs(), backend="python")
    r = enc.routes("node1")
    assert "10.244.0.0/24 dev antrea-gw0 proto kernel scope link src 10.244.0.1" in r
    assert "10.244.1.0/24 via 10.244.1.1 dev antrea-gw0 onlink" in r
    plain = kemu.load(_docs(trafficEncapMode="noEncap"), backend="python")
    assert "10.244.1.0/24 via 172.18.0.3 dev eth0" in plain.routes("node1")


def test_same_node_is_l2_in_ovs(backend: str) -> None:
    """L2ForwardingCalc by the destination MAC: no rewrite, no TTL change, nothing on eth0."""
    emu = _emu(backend)
    trace = emu.send(_syn("10.244.0.3", 8080), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    got = delivered_frame(trace)
    assert (got.src, got.dst, got.ttl) == ("10.244.0.2", "10.244.0.3", 64)
    eth = Ether(bytes(trace.packets[0].outcome_frames[0]))
    assert eth.src == _mac(emu, "default/client/eth0")
    assert not _wire(emu, trace, "node1/eth0")
    tables = _tables(trace)
    assert tables == [C.OVS_T_CLASSIFIER, C.OVS_T_SPOOFGUARD, C.OVS_T_L3_FORWARDING,
                      C.OVS_T_L2_FORWARDING, C.OVS_T_OUTPUT]


def test_cross_node_geneve_on_the_wire(backend: str) -> None:
    """node1's eth0 carries Geneve (UDP 6081, VNI 0, protocol 0x6558, no options) from
    172.18.0.2 to 172.18.0.3; the inner frame is from antrea-gw0's MAC to the Global Virtual
    MAC with TTL 63; outer TTL 64 with DF; checksums right; delivered with TTL 62 from
    node2's gateway MAC."""
    emu = _emu(backend)
    trace = emu.send(_syn("10.244.1.2", 8080), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    wire = _wire(emu, trace, "node1/eth0")
    assert len(wire) == 1
    outer = Ether(wire[0])
    assert (outer[IP].src, outer[IP].dst, outer[IP].ttl) == ("172.18.0.2", "172.18.0.3", 64)
    assert outer[IP].flags == "DF" and outer[UDP].dport == 6081 and outer[UDP].chksum == 0
    assert 32768 <= outer[UDP].sport < 61000
    g = outer[GENEVE]
    assert (g.version, g.optionlen, g.vni, g.proto) == (0, 0, 0, 0x6558)
    inner = g.payload
    assert isinstance(inner, Ether)
    assert (inner.src, inner.dst) == (_mac(emu, "node1/antrea-gw0"), GVMAC)
    assert (inner[IP].src, inner[IP].dst, inner[IP].ttl) == ("10.244.0.2", "10.244.1.2", 63)
    assert outer[IP].len == 20 + 8 + 8 + len(inner)
    for frame in all_frames(trace):
        assert checksums_valid(frame)
    assert checksums_valid(bytes(inner))
    got = delivered_frame(trace)
    assert got.ttl == 62
    eth = Ether(bytes(trace.packets[0].outcome_frames[0]))
    assert (eth.src, eth.dst) == (_mac(emu, "node2/antrea-gw0"),
                                  _mac(emu, "default/web-1/eth0"))


@pytest.mark.parametrize("tunnel", ["vxlan", "gre"])
def test_cross_node_vxlan_and_gre_on_the_wire(backend: str, tunnel: str) -> None:
    emu = _emu(backend, tunnelType=tunnel)
    trace = emu.send(_syn("10.244.1.2", 8080), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    outer = Ether(_wire(emu, trace, "node1/eth0")[0])
    if tunnel == "vxlan":
        assert outer[UDP].dport == 4789 and outer[VXLAN].vni == 0
        inner = outer[VXLAN].payload
    else:
        assert outer[IP].proto == 47 and outer[GRE].proto == 0x6558
        assert not outer[GRE].key_present
        inner = outer[GRE].payload
    assert isinstance(inner, Ether) and inner.dst == GVMAC and inner[IP].ttl == 63
    assert checksums_valid(_wire(emu, trace, "node1/eth0")[0])
    assert delivered_frame(trace).ttl == 62


def test_noencap_routes_through_the_hosts(backend: str) -> None:
    """noEncap: out of OVS to antrea-gw0, the host routes it on eth0 to the peer node, whose
    host hands it to OVS through its antrea-gw0: no encapsulation, TTL 62."""
    emu = _emu(backend, trafficEncapMode="noEncap")
    trace = emu.send(_syn("10.244.1.2", 8080), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    out = Ether(_wire(emu, trace, "node1/eth0")[0])
    assert out[IP].proto == C.PROTO_TCP and out[IP].dst == "10.244.1.2"
    assert out.dst == _mac(emu, "node2/eth0")
    assert delivered_frame(trace).ttl == 62
    assert _wire(emu, trace, "node2/antrea-gw0")


def test_clusterip_translated_in_ovs_at_the_source(backend: str) -> None:
    """AntreaProxy: the DNAT happens in node1's pipeline (EndpointDNAT), so the Geneve
    packet on the wire already carries the endpoint's address; the reply is un-DNATed in
    node1's OVS (source back to the ClusterIP) and no kube-proxy hop is involved."""
    emu = _emu(backend, respond=True)
    trace = emu.send(_syn(CLUSTER_IP, 80), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    assert C.OVS_T_ENDPOINT_DNAT in _tables(trace)
    inner = Ether(_wire(emu, trace, "node1/eth0")[0])[GENEVE].payload
    assert inner[IP].dst in WEB and inner[TCP].dport == 8080
    assert not _wire(emu, trace, "node1/antrea-gw0")  # never through the host
    synack = Ether(trace.answers()[0].hops[-1][2])
    assert (synack[IP].src, synack[TCP].sport, synack[IP].dst) == (CLUSTER_IP, 80,
                                                                   "10.244.0.2")


def test_nodeport_from_outside(backend: str) -> None:
    """A NodePort from outside: the host's rules (proxyAll off) DNAT and masquerade, then
    antrea-gw0 hands the packet to OVS; the answer comes back from the node's address."""
    emu = _emu(backend, respond=True)
    trace = emu.send(_syn("172.18.0.2", 30080, 5555), src="ext/outside")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    got = delivered_frame(trace)
    assert got.dst in WEB
    ans = Ether(trace.answers()[0].hops[-1][2])
    assert (ans[IP].src, ans[TCP].sport, ans[IP].dst, ans[TCP].dport) == (
        "172.18.0.2", 30080, "172.18.0.100", 5555)


def test_spoofguard_drops_a_forged_source(backend: str) -> None:
    emu = _emu(backend)
    trace = emu.send(IP(src="10.244.0.99", dst="10.244.0.3") / TCP(dport=8080, flags="S"),
                     src="default/client")
    assert trace.outcome(0) == "DROPPED"
    assert trace.drop_reasons(0) == [C.DROP_NAMES[C.DROP_OVS_SPOOFGUARD][0]]


@pytest.mark.parametrize(("name", "args"), [
    ("cni-antrea-trace.txt", ["-S", "default/client", "-D", "default/web:80"]),
    ("cni-antrea-nodeport-trace.txt", ["-S", "ext/outside", "-D", "172.18.0.2:30080"]),
])
def test_trace_golden(backend: str, name: str, args: list[str]) -> None:
    """``kemu trace`` of pod -> ClusterIP on another node and of a NodePort from outside,
    the OVS tables walked as Traceflow's observations, pinned in goldens."""
    env = dict(os.environ, KEMU_NO_EXTENSIONS="1")
    if backend != "python":
        env.pop("KEMU_NO_EXTENSIONS")
    out = subprocess.run([sys.executable, "-m", "kemu", "trace", "-f", str(EXAMPLE), *args],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout
    golden = GOLDEN / name
    if os.environ.get("KEMU_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()


@pytest.mark.parametrize(("cni", "field"), [("{name: antrea, tunnelType: stt}",
                                             "spec.cni.tunnelType"),
                                            ("{name: antrea, trafficEncapMode: hybrid}",
                                             "spec.cni.trafficEncapMode")])
def test_refused_settings(tmp_path: Path, cni: str, field: str) -> None:
    (tmp_path / "c.yaml").write_text(
        "apiVersion: kemu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n"
        f"spec:\n  nodes: 2\n  cni: {cni}\n")
    r = subprocess.run([sys.executable, "-m", "kemu", "validate", "-f", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stdout + r.stderr
    assert field in r.stderr and "Traceback" not in r.stderr


def test_pcapng_has_the_ovs_ports(backend: str, tmp_path: Path) -> None:
    """A replayed capture's pcapng has an interface per OVS port (br-int's ports: the pods'
    veths, antrea-gw0, antrea-tun0) and the Geneve packet on node1's eth0."""
    from scapy.utils import PcapNgReader, wrpcap

    emu = _emu(backend)
    frame = Ether(src=_mac(emu, "default/client/eth0"), dst=_mac(emu, "node1/antrea-gw0")) / IP(
        src="10.244.0.2", dst=CLUSTER_IP) / TCP(sport=44000, dport=80, flags="S")
    wrpcap(str(tmp_path / "in.pcap"), [frame])
    emu.replay(tmp_path / "in.pcap", tmp_path / "out.pcapng")
    raw = (tmp_path / "out.pcapng").read_bytes()
    for name in ("node1/antrea-gw0", "node1/antrea-tun0", "node2/antrea-tun0",
                 f"node1/{interface_name('client', 'default/client')}"):
        assert name.encode() in raw
    assert b"L3Forwarding" in raw and b"Geneve" in raw
    pkts = list(PcapNgReader(str(tmp_path / "out.pcapng")))
    assert any(GENEVE in p and p[IP].src == "172.18.0.2" for p in pkts)


def test_pod_pings_its_gateway_and_the_node_answers(backend: str) -> None:
    """L3Forwarding's flow for the gateway's address: to antrea-gw0, the host answers."""
    from scapy.layers.inet import ICMP

    emu = _emu(backend, respond=True)
    trace = emu.send(IP(dst="10.244.0.1") / ICMP(id=7, seq=1), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    assert trace.answers() and trace.outcome(1) == "DELIVERED", trace.detailed()
    reply = Ether(trace.answers()[0].hops[-1][2])
    assert reply[IP].src == "10.244.0.1" and reply[ICMP].type == 0


def test_networkpolicy_applies_in_the_pipeline(backend: str) -> None:
    """kemu's NetworkPolicy enforcement in br-int (EgressRule/IngressRule): a default-deny
    ingress on web-1 drops the client's SYN at node2's pipeline, cross-node and in OVS."""
    docs = _docs() + [{
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}]
    emu = kemu.load(docs, backend=backend)
    trace = emu.send(_syn("10.244.1.2", 8080), src="default/client")
    assert trace.outcome(0) == "DROPPED", trace.detailed()
    assert trace.drop_reasons(0) == [C.DROP_NAMES[C.DROP_POLICY][0]]
    drop_if = [i for k, _r, i, _a in trace.packets[0].outcomes if k == C.OUT_DROPPED][0]
    assert emu.tables.if_name[drop_if] == "node2/antrea-tun0"
    ok = emu.send(_syn("10.244.0.3", 8080), src="default/client")
    assert ok.outcome(0) == "DELIVERED"


def _with_services() -> list[dict]:
    return _docs() + [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "empty", "namespace": "default"},
         "spec": {"selector": {"app": "none"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "loc", "namespace": "default"},
         "spec": {"selector": {"app": "local"}, "ports": [{"port": 80, "targetPort": 8080}]}}]


def test_service_without_endpoints_is_rejected(backend: str) -> None:
    emu = kemu.load(_with_services(), backend=backend, respond=True)
    ip = str(emu.model.service("default", "empty").cluster_ip)
    trace = emu.send(_syn(ip, 80), src="default/client")
    assert trace.drop_reasons(0) == [C.DROP_NAMES[C.DROP_REJECT_NO_ENDPOINTS][0]]
    assert [p.origin for p in trace.packets] == ["injected", "icmp-error"]


def test_same_node_service_and_the_unmodelled_hairpin(backend: str) -> None:
    """A Service whose endpoint is on the client's node: DNAT in OVS, MACs rewritten
    (RewriteMACRegMark), TTL 63; a pod reaching itself through its Service needs AntreaProxy's
    hairpin SNAT, which kemu does not model: no flow, dropped (docs/CNI.md)."""
    emu = kemu.load(_with_services(), backend=backend, respond=True)
    ip = str(emu.model.service("default", "loc").cluster_ip)
    trace = emu.send(_syn(ip, 80), src="default/client")
    got = delivered_frame(trace)
    assert (got.dst, got.ttl) == ("10.244.0.3", 63) and trace.verdict().reachable
    assert not _wire(emu, trace, "node1/eth0")
    hairpin = emu.send(_syn(ip, 80), src="default/local")
    assert hairpin.drop_reasons(0) == [C.DROP_NAMES[C.DROP_OVS_NO_FLOW][0]]


def test_egress_is_masqueraded_to_the_node(backend: str) -> None:
    """ANTREA-POSTROUTING: pod traffic leaving the pod CIDR through eth0 takes the node's
    address; the answer comes back to the pod through antrea-gw0."""
    emu = _emu(backend, respond=True)
    trace = emu.send(_syn("172.18.0.100", 80), src="default/client")
    assert delivered_frame(trace).src == "172.18.0.2"
    assert trace.outcome(1) == "DELIVERED"
    assert _wire(emu, trace, "node1/antrea-gw0")


def test_topology_draws_the_ovs_ports(tmp_path: Path) -> None:
    """``kemu topology``: each node's antrea-gw0 and its antrea-tun0 (its line to eth0 says
    Geneve), the pods' OVS ports."""
    out = tmp_path / "t.html"
    subprocess.run([sys.executable, "-m", "kemu", "topology", "-f", str(EXAMPLE), "-o",
                    str(out)], check=True, capture_output=True, cwd=ROOT)
    svg = out.read_text()
    assert "antrea-gw0" in svg and "antrea-tun0" in svg and "Geneve" in svg
