"""Cilium mode (``spec.cni: cilium``, ``kemu/compiler/cilium.py``): lxc devices without a bridge,
cilium_host/cilium_net, cilium_vxlan with the source's security identity in the VNI (tunnel) or
routes via the nodes (native), the eBPF programs named in the trace, the options kemu refuses.

Stated from Cilium's documentation (Documentation/network/concepts/routing.rst, ebpf/
lifeofapacket.rst) and source (pkg/datapath/connector ``Endpoint2IfName``, bpf/lib/encap.h):
the test kernel has no eBPF to compare with. Every datapath test runs on both backends. The
cluster is the datapath tests' scenario (pods a and b on node1, c on node2, d on node3).
SEMANTICS ids: R-1 (routes), S-3/S-7 (Services, NodePort masquerade), P-1 (policy).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import DATA, checksums_valid, delivered_frame
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

import kemu
from kemu.compiler.cilium import lxc_name, pod_identities
from kemu.dataplane import codes as C
from kemu.errors import KemuError
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLE = ROOT / "examples" / "cni" / "cilium" / "cluster.yaml"
MODES = {"tunnel": "cni: {name: cilium, kubeProxyReplacement: false}",
         "native": "cni: {name: cilium, routingMode: native, kubeProxyReplacement: false}"}
IPS = {"a": "10.244.0.2", "b": "10.244.0.3", "c": "10.244.1.2", "d": "10.244.2.2"}


def cluster_text(mode: str, extra: str = "") -> str:
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    return text.replace("  nodes: 3\n", f"  nodes: 3\n  {MODES[mode]}\n{extra}", 1)


def load(mode: str, backend: str, tmp_path: Path, text: str | None = None, **options):
    path = tmp_path / f"cilium-{mode}.yaml"
    path.write_text(text if text is not None else cluster_text(mode))
    options.setdefault("respond", False)
    return kemu.load(path, backend=backend, **options)


def lxc(node: str, pod: str) -> str:
    return f"{node}/{lxc_name('default', pod)}"


def mac_of(emu, name: str) -> int:
    t = emu.tables
    return int(t.if_mac[t.iface(name)])


def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


# ---- 1. devices, addresses, routes

def test_lxc_name_as_cilium_makes_it() -> None:
    """``Endpoint2IfName``: ``lxc`` + 12 hex digits of sha256: 15 characters (IFNAMSIZ - 1)."""
    name = lxc_name("default", "a")
    assert name.startswith("lxc") and len(name) == 15
    int(name[3:], 16)
    assert lxc_name("default", "b") != name


@pytest.mark.parametrize("mode", MODES)
def test_devices_no_bridge(mode: str, backend: str, tmp_path: Path) -> None:
    emu = load(mode, backend, tmp_path)
    t = emu.tables
    kinds = {t.if_name[i]: int(t.if_kind[i]) for i in range(t.n_ifaces)}
    assert not [n for n, k in kinds.items() if k in (C.IF_BRIDGE, C.IF_VETH)]
    assert kinds[lxc("node1", "a")] == C.IF_VETH_HOST
    assert t.if_name[int(t.if_peer[t.iface(lxc("node1", "a"))])] == "default/a/eth0"
    for n, node in enumerate(("node1", "node2", "node3")):
        host, net = t.iface(f"{node}/cilium_host"), t.iface(f"{node}/cilium_net")
        assert kinds[f"{node}/cilium_host"] == kinds[f"{node}/cilium_net"] == C.IF_CILIUM_HOST
        assert int(t.if_peer[host]) == net and int(t.if_peer[net]) == host
        assert int(t.if_ip[host]) == int.from_bytes(bytes([10, 244, n, 1]), "big")  # router
        assert int(t.if_ip[net]) == 0
    vxlan = [n for n, k in kinds.items() if k == C.IF_VTEP]
    if mode == "tunnel":
        assert vxlan == ["node1/cilium_vxlan", "node2/cilium_vxlan", "node3/cilium_vxlan"]
        assert int(t.if_mtu[t.iface("node1/cilium_vxlan")]) == 1450
        assert int(t.if_mtu[t.iface("default/a/eth0")]) == 1450  # pods: tunnel MTU
        assert t.vxlan
    else:
        assert vxlan == [] and not t.vxlan
        assert int(t.if_mtu[t.iface("default/a/eth0")]) == 1500


@pytest.mark.parametrize("mode", MODES)
def test_show_interfaces_and_routes(mode: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(cluster_text(mode))
    assert main(["show", "interfaces", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    assert "node1/cilium_host" in out and "10.244.0.1" in out and "node1/cilium_net" in out
    assert lxc("node1", "a") in out and "cbr0" not in out
    assert ("node1/cilium_vxlan" in out) == (mode == "tunnel")
    assert main(["show", "routes", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    node1 = [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("node1 ")]
    assert f"10.244.0.2/32 dev {lxc_name('default', 'a')} scope link" in node1
    assert "10.244.0.1/32 dev cilium_host proto kernel scope link" in node1
    if mode == "tunnel":
        assert ("10.244.1.0/24 via 10.244.1.1 dev cilium_vxlan proto static src 10.244.0.1 "
                "onlink") in node1
    else:  # autoDirectNodeRoutes
        assert "10.244.1.0/24 via 172.18.0.3 dev eth0 proto static" in node1
    assert "default via 172.18.0.1 dev eth0 proto static" in node1
    gateway = [line.split(None, 1)[1] for line in out.splitlines()
               if line.startswith("gateway ")]
    # the network's router knows the pod CIDRs in native routing only (tunnel: encapsulated)
    assert ("10.244.1.0/24 via 172.18.0.3 dev eth0 proto static" in gateway) == (
        mode == "native")


@pytest.mark.parametrize("mode", MODES)
def test_arp_responder_at_lxc(mode: str, backend: str, tmp_path: Path) -> None:
    """The pod ARPs for its router IP (its default route's gateway): answered with the
    lxc's MAC (Cilium's ARP responder in cil_from_container; kemu: proxy ARP on lxc)."""
    emu = load(mode, backend, tmp_path, respond=True)
    trace = emu.send(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, pdst="10.244.0.1"),
                     src="default/a")
    replies = [p for p in trace.packets if p.origin == "arp"]
    assert replies, trace.detailed()
    reply = Ether(replies[0].hops[0][2])
    assert reply[ARP].op == 2 and reply[ARP].psrc == "10.244.0.1"
    assert mac_int(reply[ARP].hwsrc) == mac_of(emu, lxc("node1", "a"))


# ---- 2. forwarding

@pytest.mark.parametrize("mode", MODES)
def test_same_node_routed_to_lxc(mode: str, backend: str, tmp_path: Path) -> None:
    """a -> b on node1: from a's lxc straight to b's lxc, MACs rewritten, TTL - 1."""
    emu = load(mode, backend, tmp_path)
    trace = emu.send(IP(dst=IPS["b"], ttl=10) / TCP(dport=8080, flags="S"), src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    assert [n for n, _d in trace.path(0)] == [
        "default/a/eth0", lxc("node1", "a"), lxc("node1", "b"), "default/b/eth0"]
    first = Ether(trace.frames_at("default/a/eth0")[0])
    assert mac_int(first.dst) == mac_of(emu, lxc("node1", "a"))  # default via the router
    got = Ether(trace.frames_at("default/b/eth0")[0])
    assert got[IP].ttl == 9
    assert mac_int(got.src) == mac_of(emu, lxc("node1", "b"))
    assert mac_int(got.dst) == mac_of(emu, "default/b/eth0")
    assert checksums_valid(bytes(got))
    text = trace.detailed()
    assert "cil_from_container" in text and "cil_to_container" in text


def test_tunnel_vni_is_the_source_identity(backend: str, tmp_path: Path) -> None:
    """a (node1) -> c (node2) in tunnel mode: VXLAN on UDP 8472 from node1's to node2's
    address, the VNI a's security identity, checksums valid; node2 decapsulates and
    delivers through c's lxc."""
    emu = load("tunnel", backend, tmp_path)
    trace = emu.send(IP(dst=IPS["c"], ttl=10) / TCP(sport=4444, dport=8080, flags="S"),
                     src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    wire = Ether(trace.frames_at("node1/eth0", "out")[0])
    assert wire[IP].src == "172.18.0.2" and wire[IP].dst == "172.18.0.3"
    assert wire[UDP].dport == 8472
    ident = pod_identities(emu.model)[[p.key for p in emu.model.pods].index("default/a")]
    assert ident >= 256
    assert wire[VXLAN].vni == ident
    inner = wire[VXLAN].payload
    assert inner[IP].src == IPS["a"] and inner[IP].dst == IPS["c"] and inner[IP].ttl == 9
    assert checksums_valid(bytes(wire)) and checksums_valid(bytes(inner))
    path = [n for n, _d in trace.path(0)]
    want = ["default/a/eth0", lxc("node1", "a"), "node1/cilium_vxlan", "node1/eth0",
            "node2/eth0", "node2/cilium_vxlan", lxc("node2", "c"), "default/c/eth0"]
    it = iter(path)
    assert all(hop in it for hop in want), path
    text = trace.summary()
    assert f"VXLAN encap VNI {ident} (source identity {ident}) -> node2" in text
    assert f"VXLAN decap VNI {ident} (source identity {ident})" in text
    for prog in ("cil_from_container at lxc", "cil_to_overlay at cilium_vxlan",
                 "cil_from_netdev at eth0", "cil_from_overlay at cilium_vxlan",
                 "cil_to_container at lxc"):
        assert prog in text, text
    # the reply carries c's identity (another one: other labels)
    ident_c = pod_identities(emu.model)[[p.key for p in emu.model.pods].index("default/c")]
    assert ident_c != ident
    back = emu.send(IP(dst=IPS["a"]) / TCP(sport=8080, dport=4444, flags="SA"),
                    src="default/c")
    assert Ether(back.frames_at("node2/eth0", "out")[0])[VXLAN].vni == ident_c


def test_tunnel_node_source_is_host_identity(backend: str, tmp_path: Path) -> None:
    """The node's own packet to a remote pod: reserved:host (1) in the VNI."""
    emu = load("tunnel", backend, tmp_path)
    trace = emu.send(IP(src="172.18.0.2", dst=IPS["c"]) / UDP(dport=9) / b"x", src="node1")
    wire = Ether(trace.frames_at("node1/eth0", "out")[0])
    assert wire[VXLAN].vni == C.CILIUM_ID_HOST


def test_native_routing_via_node_addresses(backend: str, tmp_path: Path) -> None:
    """Native routing: no encapsulation, node2's pod CIDR via node2's address on eth0."""
    emu = load("native", backend, tmp_path)
    trace = emu.send(IP(dst=IPS["c"], ttl=10) / TCP(dport=8080, flags="S"), src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    wire = Ether(trace.frames_at("node1/eth0", "out")[0])
    assert UDP not in wire and wire[IP].src == IPS["a"] and wire[IP].dst == IPS["c"]
    assert mac_int(wire.dst) == mac_of(emu, "node2/eth0")
    assert checksums_valid(bytes(wire))
    text = trace.detailed()
    assert "route 10.244.1.0/24 via 172.18.0.3 dev eth0" in text
    assert "cil_from_netdev" in text
    assert Ether(trace.frames_at("default/c/eth0")[0])[IP].ttl == 8


@pytest.mark.parametrize("mode", MODES)
def test_clusterip_and_reply(mode: str, backend: str, tmp_path: Path) -> None:
    """pod -> ClusterIP (kube-proxy's rules: kubeProxyReplacement false), the answer back."""
    emu = load(mode, backend, tmp_path, respond=True)
    trace = emu.send(IP(dst=str(next(s.cluster_ip for s in emu.model.services
                                     if s.name == "svc-c")))
                     / TCP(sport=40000, dport=80, flags="S"), src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    got = delivered_frame(trace)
    assert got.dst == IPS["c"] and got[TCP].dport == 8080
    assert trace.verdict().reachable


@pytest.mark.parametrize("mode", MODES)
def test_nodeport_from_outside(mode: str, backend: str, tmp_path: Path) -> None:
    """ext/client -> node1:NodePort of svc-c (c on node2): DNAT and masquerade on node1
    (S-7), to node2 over the tunnel or natively, the answer back the same way."""
    emu = load(mode, backend, tmp_path, respond=True)
    svc = next(s for s in emu.model.services if s.type == "NodePort"
               and s.selector == {"app": "c"})
    port = svc.ports[0].node_port
    trace = emu.send(IP(dst="172.18.0.2") / TCP(sport=5555, dport=port, flags="S"),
                     src="ext/client")
    assert trace.outcome(0) == "DELIVERED"
    got = delivered_frame(trace)
    # MASQUERADE takes the out route's source: eth0's (native), the router IP (tunnel:
    # Cilium's route to another node's pod CIDR says src <router IP>)
    assert got is not None and got.src == ("10.244.0.1" if mode == "tunnel" else "172.18.0.2")
    answer = trace.answers()[0]
    assert answer.outcomes[0][0] == C.OUT_DELIVERED
    back = Ether(answer.hops[-1][2])
    assert back[IP].src == "172.18.0.2" and back[TCP].sport == port
    if mode == "tunnel":
        wire = Ether(trace.frames_at("node1/eth0", "out")[0])
        assert wire[VXLAN].vni == C.CILIUM_ID_HOST  # masqueraded to the node: host


# ---- 3. the kube-proxy replacement: the socket LB

KPR = {"tunnel": "cni: cilium", "native": "cni: {name: cilium, routingMode: native}"}


def kpr_text(mode: str) -> str:
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    return text.replace("  nodes: 3\n", f"  nodes: 3\n  {KPR[mode]}\n", 1)


def cluster_ip(emu, name: str) -> str:
    return str(next(s.cluster_ip for s in emu.model.services if s.name == name))


@pytest.mark.parametrize("mode", MODES)
def test_socket_lb_translates_in_the_pod(mode: str, backend: str, tmp_path: Path) -> None:
    """kubeProxyReplacement (the default): a -> svc-c's ClusterIP leaves a's eth0 already
    addressed to c (cil_sock4_connect): no DNAT on the node, no un-DNAT of the answer, which
    reaches a from c's own address."""
    emu = load(mode, backend, tmp_path, text=kpr_text(mode), respond=True)
    assert emu.tables.sock_lb
    trace = emu.send(IP(dst=cluster_ip(emu, "svc-c")) / TCP(sport=40000, dport=80, flags="S"),
                     src="default/a")
    first = Ether(trace.frames_at("default/a/eth0", "out")[0])
    assert first[IP].dst == IPS["c"] and first[TCP].dport == 8080
    assert checksums_valid(bytes(first))
    kinds = [k for p in trace.packets for (_i, _d, _f, evs) in p.hops for (k, *_r) in evs]
    assert C.EV_SOCK_LB in kinds and C.EV_DNAT not in kinds and C.EV_UNDNAT not in kinds
    assert "socket LB (cil_sock4_connect)" in trace.summary()
    answer = trace.answers()[0]
    back = Ether(answer.hops[-1][2])
    assert back[IP].src == IPS["c"] and back[TCP].sport == 8080
    assert trace.verdict().reachable


def test_socket_lb_keeps_a_socket_on_one_backend(backend: str, tmp_path: Path) -> None:
    """svc-cd has two backends (c, d): every packet of one socket takes the same one, and
    sockets spread over both."""
    emu = load("tunnel", backend, tmp_path, text=kpr_text("tunnel"))
    vip = cluster_ip(emu, "svc-cd")
    port = next(s.ports[0].port for s in emu.model.services if s.name == "svc-cd")

    def dst(sport: int, flags: str) -> str:
        t = emu.send(IP(dst=vip) / TCP(sport=sport, dport=port, flags=flags), src="default/a")
        return Ether(t.frames_at("default/a/eth0", "out")[0])[IP].dst

    assert {dst(41000, "S"), dst(41000, "A"), dst(41000, "PA")} == {dst(41000, "S")}
    assert {dst(42000 + k, "S") for k in range(16)} == {IPS["c"], IPS["d"]}


def test_without_replacement_kube_proxy_dnats(backend: str, tmp_path: Path) -> None:
    """kubeProxyReplacement false: the pod's packet leaves addressed to the ClusterIP and
    kube-proxy's rules DNAT it on the node."""
    emu = load("tunnel", backend, tmp_path)
    assert not emu.tables.sock_lb
    trace = emu.send(IP(dst=cluster_ip(emu, "svc-c")) / TCP(sport=40000, dport=80, flags="S"),
                     src="default/a")
    first = Ether(trace.frames_at("default/a/eth0", "out")[0])
    assert first[IP].dst == cluster_ip(emu, "svc-c")
    kinds = [k for p in trace.packets for (_i, _d, _f, evs) in p.hops for (k, *_r) in evs]
    assert C.EV_DNAT in kinds and C.EV_SOCK_LB not in kinds


# ---- 4. policy by identity

POLICY = """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-a, namespace: default}
spec:
  podSelector: {matchLabels: {app: c}}
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]
"""


@pytest.mark.parametrize("mode", MODES)
def test_policy_by_identity_across_nodes(mode: str, backend: str, tmp_path: Path) -> None:
    """c admits a only: a's SYN is allowed at c's node, b's denied there (ingress on the
    destination's node, after the tunnel)."""
    emu = load(mode, backend, tmp_path, text=cluster_text(mode) + POLICY)
    ok = emu.send(IP(dst=IPS["c"]) / TCP(sport=1000, dport=8080, flags="S"), src="default/a")
    assert ok.outcome(0) == "DELIVERED"
    no = emu.send(IP(dst=IPS["c"]) / TCP(sport=1001, dport=8080, flags="S"), src="default/b")
    assert no.outcome(0) == "DROPPED"
    denied = [o for o in no.observations() if o.action == "Denied"]
    assert denied and denied[0].node == "node2"


# ---- 5. options and notices

@pytest.mark.parametrize("body, field", [
    ("{name: cilium, tunnelProtocol: geneve}", "spec.cni.tunnelProtocol"),
    ("{name: cilium, loadBalancerMode: dsr}", "spec.cni.loadBalancerMode"),
])
def test_refused_options(body: str, field: str, tmp_path: Path) -> None:
    text = (DATA / "scenario" / "cluster.yaml").read_text().replace(
        "  nodes: 3\n", f"  nodes: 3\n  cni: {body}\n", 1)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(KemuError, match=field.replace(".", r"\.")):
        kemu.load(path)


def test_kube_proxy_replacement_is_said(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """kubeProxyReplacement (true by default): the translation at the device is not
    modelled (kube-proxy's rules do NodePorts): a warning names the field."""
    text = (DATA / "scenario" / "cluster.yaml").read_text().replace(
        "  nodes: 3\n", "  nodes: 3\n  cni: cilium\n", 1)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["validate", "-f", str(path)]) == 0
    err = capsys.readouterr().err
    assert "spec.cni.kubeProxyReplacement" in err and "cil_from_netdev" in err


def test_cilium_network_policy_without_cilium_is_said(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    cnp = """---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cnp-c, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: c}}
  ingress: [{fromEndpoints: [{matchLabels: {app: a}}]}]
"""
    path = tmp_path / "c.yaml"
    path.write_text((DATA / "scenario" / "cluster.yaml").read_text() + cnp)
    assert main(["validate", "-f", str(path)]) == 0
    err = capsys.readouterr().err
    assert "cnp-c" in err and "only Cilium enforces it" in err
    path.write_text(cluster_text("tunnel") + cnp)
    assert main(["validate", "-f", str(path)]) == 0
    assert "only Cilium enforces it" not in capsys.readouterr().err


# ---- goldens

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("what", ["clusterip", "nodeport"])
def test_trace_golden(mode: str, what: str, backend: str, tmp_path: Path,
                      capsys: pytest.CaptureFixture) -> None:
    """``kemu trace`` of pod -> ClusterIP on another node (the socket LB) and of a NodePort
    from outside (kube-proxy's rules), per routing mode (the example cluster), in goldens."""
    text = EXAMPLE.read_text()
    if mode == "native":
        text = text.replace("routingMode: tunnel ", "routingMode: native ", 1)
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    args = (["-S", "default/client", "-D", "default/web:80"] if what == "clusterip" else
            ["-S", "outside", "-D", "172.18.0.2:30080"])
    rc = main(["trace", "-f", str(path), *args, "--backend", backend])
    out = capsys.readouterr().out
    golden = GOLDEN / f"cni-cilium-{mode}-{what}-trace.txt"
    if os.environ.get("KEMU_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert rc == 0
    assert out == golden.read_text()


# ---- the flow log's identities

def test_flow_log_carries_identities(backend: str, tmp_path: Path) -> None:
    """Hubble's endpoints carry the numeric security identity: the pods' (as in the VNI),
    reserved:host 1, reserved:world 2."""
    import json

    from scapy.utils import wrpcap

    emu = load("tunnel", backend, tmp_path)
    t = emu.tables
    a = t.iface("default/a/eth0")
    mac = ":".join(f"{b:02x}" for b in int(t.if_mac[a]).to_bytes(6, "big"))
    peer = ":".join(f"{b:02x}" for b in int(t.if_mac[t.iface(lxc("node1", "a"))]).to_bytes(
        6, "big"))
    frames = [Ether(src=mac, dst=peer) / IP(src=IPS["a"], dst=IPS["c"])
              / TCP(sport=44001, dport=8080, flags="S"),
              Ether(src=mac, dst=peer) / IP(src=IPS["a"], dst="8.8.8.8")
              / UDP(sport=44002, dport=53) / b"q"]
    wrpcap(str(tmp_path / "in.pcap"), frames)
    emu.replay(tmp_path / "in.pcap", tmp_path / "out.pcapng", tmp_path / "flows.jsonl")
    records = [json.loads(x) for x in (tmp_path / "flows.jsonl").read_text().splitlines()]
    flows = [r.get("flow", r) for r in records]
    keys = [p.key for p in emu.model.pods]
    ids = pod_identities(emu.model)
    to_c = [f for f in flows if f.get("destination", {}).get("pod_name") == "c"]
    assert to_c, flows
    assert to_c[0]["source"]["identity"] == ids[keys.index("default/a")]
    assert to_c[0]["destination"]["identity"] == ids[keys.index("default/c")]
    out = [f for f in flows if f.get("IP", {}).get("destination") == "8.8.8.8"]
    assert out and out[0]["destination"] == {"identity": 2, "labels": ["reserved:world"]}
