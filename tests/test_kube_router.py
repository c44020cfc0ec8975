"""kube-router as the cluster's CNI (``spec.cni: kube-router``, issue #18), on every backend.

What kube-router's documentation and source say a node does (kemu/compiler/kube_router.py
cites the pages), checked with real packets: pods on ``kube-bridge``; other nodes' pod CIDRs
learned over iBGP (``proto 17``), routed directly (overlayType subnet in one node network)
or over IP-in-IP devices ``tun-<hash>`` (overlayType full: protocol 4, outer addresses the
nodes', re-dissected by Scapy); Services by IPVS at LOCAL_IN (the address held on
``kube-dummy-if``), round robin per virtual service, source hashing as an option,
kube-router's masquerade rule, NodePorts on the node's address, no real server: ICMP port
unreachable (ip_vs_leave). The cluster: examples/cni/kube-router/cluster.yaml.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import all_frames, checksums_valid, delivered_frame
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

import kemu
from kemu.compiler.kube_router import tunnel_name
from kemu.dataplane import codes as C

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cni" / "kube-router" / "cluster.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
CLUSTER_IP = "10.96.0.11"   # default/web (IPAM: in order of the Services)
EMPTY_IP = "10.96.0.10"     # default/empty: no endpoints
WEB = {"10.244.1.2", "10.244.2.2"}


def _docs(**cni: object) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for d in docs:
        if d["kind"] == "Cluster":
            d["spec"]["cni"].update(cni)
    # a second pod on node1, for same-node traffic
    local = copy.deepcopy(next(d for d in docs if d["kind"] == "Pod"
                               and d["metadata"]["name"] == "client"))
    local["metadata"]["name"] = "neighbour"
    docs.append(local)
    return docs


def _emu(backend: str, respond: bool = False, **cni: object) -> kemu.frontend.api.EmulatedCluster:
    return kemu.load(_docs(**cni), backend=backend, respond=respond)


def _syn(dst: str, dport: int, sport: int = 40000) -> IP:
    return IP(dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=1)


def _wire(emu: kemu.frontend.api.EmulatedCluster, trace, name: str) -> list[bytes]:
    """The frames the trace recorded on interface ``name``."""
    i = emu.tables.iface(name)
    return [data for p in trace.packets for (iface, _d, data, _e) in p.hops if iface == i]


def test_devices_of_a_node(backend: str) -> None:
    """kube-bridge holds the pod CIDR's gateway, kube-dummy-if exists, and with overlayType
    full one tun-<hash> per peer named as GenerateTunnelName names it, MTU minus 20."""
    emu = _emu(backend)
    t = emu.tables
    names = [n for n in t.if_name if n.startswith("node1/")]
    assert "node1/kube-bridge" in names and "node1/kube-dummy-if" in names
    assert "node1/cbr0" not in names
    br = t.iface("node1/kube-bridge")
    assert int(t.if_ip[br]) == int(__import__("ipaddress").IPv4Address("10.244.0.1"))
    assert int(t.if_mtu[br]) == 1480  # --auto-mtu with the overlay on: 1500 - 20
    tuns = {t.if_kernel_name[t.iface(n)] for n in names if "/tun-" in n}
    assert tuns == {tunnel_name("172.18.0.3"), tunnel_name("172.18.0.4")}
    assert all(len(k) == 15 for k in tuns)
    for n in names:
        if "/tun-" in n:
            i = t.iface(n)
            assert int(t.if_kind[i]) == C.IF_IPIP and int(t.if_mtu[i]) == 1480
    # the bridge plugin's veth name: veth + 8 hex digits
    veth = t.iface("node1/veth-client")
    assert t.if_kernel_name[veth].startswith("veth") and len(t.if_kernel_name[veth]) == 12


def test_tunnel_name_is_kube_routers() -> None:
    """GenerateTunnelName: sha256 of the address without its dots, 11 hex digits."""
    import hashlib

    assert tunnel_name("10.0.0.1") == "tun-" + hashlib.sha256(b"10001").hexdigest()[:11]


def test_routes_are_bgp_learned() -> None:
    """proto 17 (ZebraOriginator): via the peer in subnet mode, on the tunnel in full mode."""
    subnet = kemu.load(_docs(overlayType="subnet"), backend="python")
    assert "10.244.1.0/24 via 172.18.0.3 dev eth0 proto 17" in subnet.routes("node1")
    assert "10.244.0.0/24 dev kube-bridge proto kernel scope link src 10.244.0.1" in \
        subnet.routes("node1")
    full = kemu.load(_docs(), backend="python")
    tun = tunnel_name("172.18.0.3")
    assert f"10.244.1.0/24 dev {tun} proto 17 scope link src 172.18.0.2" in full.routes("node1")
    off = kemu.load(_docs(enableOverlay=False), backend="python")
    assert "10.244.1.0/24 via 172.18.0.3 dev eth0 proto 17" in off.routes("node1")
    assert not any("/tun-" in n for n in off.tables.if_name)
    assert int(off.tables.if_mtu[off.tables.iface("node1/kube-bridge")]) == 1500


def test_pod_to_pod_same_node(backend: str) -> None:
    emu = _emu(backend)
    trace = emu.send(_syn("10.244.0.3", 8080), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    got = delivered_frame(trace)
    assert (got.src, got.dst, got.ttl) == ("10.244.0.2", "10.244.0.3", 64)
    assert not _wire(emu, trace, "node1/eth0")


def test_pod_to_pod_cross_node_direct(backend: str) -> None:
    emu = _emu(backend, overlayType="subnet")
    trace = emu.send(_syn("10.244.1.2", 8080), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    got = delivered_frame(trace)
    assert (got.src, got.dst, got.ttl) == ("10.244.0.2", "10.244.1.2", 62)
    out = [Ether(f) for f in _wire(emu, trace, "node1/eth0")]
    assert out and all(f[IP].proto == C.PROTO_TCP and f[IP].dst == "10.244.1.2" for f in out)


def test_pod_to_pod_cross_node_ipip(backend: str) -> None:
    """overlayType full: node1's eth0 carries IP-in-IP (protocol 4) from 172.18.0.2 to
    172.18.0.3; Scapy re-dissects outer and inner headers, checksums right, TTL and DF
    inherited (ip_tunnel_xmit with ttl 0, pmtudisc off)."""
    emu = _emu(backend)
    trace = emu.send(IP(dst="10.244.1.2", flags="DF") / TCP(sport=40000, dport=8080,
                                                             flags="S"), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    got = delivered_frame(trace)
    assert (got.src, got.dst, got.ttl) == ("10.244.0.2", "10.244.1.2", 62)
    wire = _wire(emu, trace, "node1/eth0")
    assert len(wire) == 1
    outer = Ether(wire[0])
    assert outer[IP].proto == 4 and (outer[IP].src, outer[IP].dst) == (
        "172.18.0.2", "172.18.0.3")
    inner = outer[IP].payload
    assert isinstance(inner, IP) and TCP in inner
    assert (inner.src, inner.dst, inner[TCP].dport) == ("10.244.0.2", "10.244.1.2", 8080)
    assert outer[IP].len == inner.len + 20 and outer[IP].ttl == inner.ttl == 63
    assert outer[IP].flags == "DF" and outer[IP].tos == 0
    fresh = outer[IP].copy()
    del fresh.chksum
    assert IP(bytes(fresh)).chksum == outer[IP].chksum
    inner_fresh = inner.copy()
    del inner_fresh.chksum
    del inner_fresh[TCP].chksum
    rebuilt = IP(bytes(inner_fresh))
    assert rebuilt.chksum == inner.chksum and rebuilt[TCP].chksum == inner[TCP].chksum
    for frame in all_frames(trace):
        assert checksums_valid(frame)
    # the tunnel devices saw the inner packet (no link header: zero MACs)
    tun_out = _wire(emu, trace, f"node1/{tunnel_name('172.18.0.3')}")
    tun_in = _wire(emu, trace, f"node2/{tunnel_name('172.18.0.2')}")
    assert tun_out and tun_in
    assert Ether(tun_in[0])[IP].proto == C.PROTO_TCP
    assert Ether(tun_in[0]).dst == "00:00:00:00:00:00"


def test_ipip_answer_comes_back_through_the_tunnel(backend: str) -> None:
    emu = _emu(backend, respond=True)
    trace = emu.send(_syn(CLUSTER_IP, 80), src="default/client")
    answers = trace.answers()
    assert answers and trace.outcome(1) == "DELIVERED", trace.detailed()
    synack = Ether(answers[0].hops[-1][2])
    assert (synack[IP].src, synack[TCP].sport, synack[IP].dst) == (CLUSTER_IP, 80,
                                                                   "10.244.0.2")


def test_clusterip_is_ipvs_at_local_in(backend: str) -> None:
    """The translation is IPVS's (EV_IPVS_DNAT), not kube-proxy's PREROUTING DNAT; the
    client's address is kept (kube-router masquerades only ! -s podCIDR ! -d podCIDR)."""
    emu = _emu(backend)
    trace = emu.send(_syn(CLUSTER_IP, 80), src="default/client")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    got = delivered_frame(trace)
    assert got.dst in WEB and got.src == "10.244.0.2" and got[TCP].dport == 8080
    kinds = [k for p in trace.packets for (_i, _d, _f, evs) in p.hops for (k, *_r) in evs]
    assert C.EV_IPVS_DNAT in kinds and C.EV_DNAT not in kinds
    assert "IPVS at LOCAL_IN (kube-dummy-if holds 10.96.0.11): rr" in trace.detailed()


def test_trace_golden(backend: str) -> None:
    """``kemu trace`` of pod -> ClusterIP on another node, the text pinned in a golden."""
    env = dict(os.environ, KEMU_NO_EXTENSIONS="1" if backend == "python" else "")
    if backend != "python":
        env.pop("KEMU_NO_EXTENSIONS")
    out = subprocess.run([sys.executable, "-m", "kemu", "trace", "-f", str(EXAMPLE), "-S",
                          "default/client", "-D", "default/web:80"], capture_output=True,
                         text=True, env=env, cwd=ROOT, check=True).stdout
    golden = GOLDEN / "cni-kube-router-trace.txt"
    if os.environ.get("KEMU_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()


def test_round_robin_is_deterministic(backend: str) -> None:
    """rr: each new connection takes the next real server of the virtual service."""
    emu = _emu(backend)
    seen = [delivered_frame(emu.send(_syn(CLUSTER_IP, 80, 41000 + k),
                                     src="default/client")).dst for k in range(6)]
    assert set(seen) == WEB
    assert seen[0::2] == [seen[0]] * 3 and seen[1::2] == [seen[1]] * 3
    again = _emu(backend)
    assert seen == [delivered_frame(again.send(_syn(CLUSTER_IP, 80, 42000 + k),
                                               src="default/client")).dst for k in range(6)]


def test_source_hashing(backend: str) -> None:
    """sh: one client address, one real server, whatever its ports."""
    emu = _emu(backend, serviceScheduler="sh")
    seen = {delivered_frame(emu.send(_syn(CLUSTER_IP, 80, 41000 + k),
                                     src="default/client")).dst for k in range(6)}
    assert len(seen) == 1 and seen <= WEB


def test_established_connection_keeps_its_server(backend: str) -> None:
    emu = _emu(backend)
    first = delivered_frame(emu.send(_syn(CLUSTER_IP, 80, 43000), src="default/client")).dst
    for _ in range(3):
        t = emu.send(IP(dst=CLUSTER_IP) / TCP(sport=43000, dport=80, flags="A"),
                     src="default/client")
        assert delivered_frame(t).dst == first


def test_nodeport_from_outside(backend: str) -> None:
    """NodePort on the node's address: IPVS picks a server on another node, kube-router's
    SNAT rule rewrites the source to the node (neither end in node1's pod CIDR); the
    answer comes back from the node's address and port."""
    emu = _emu(backend, respond=True)
    trace = emu.send(_syn("172.18.0.2", 30080, 5555), src="ext/outside")
    assert trace.outcome(0) == "DELIVERED", trace.detailed()
    got = delivered_frame(trace)
    assert got.dst in WEB and got.src == "172.18.0.2"
    ans = Ether(trace.answers()[0].hops[-1][2])
    assert (ans[IP].src, ans[TCP].sport, ans[IP].dst, ans[TCP].dport) == (
        "172.18.0.2", 30080, "172.18.0.100", 5555)


def test_nodeport_only_on_the_node_address(backend: str) -> None:
    """kube-router's NodePort virtual services are on the node's IP, not on kube-bridge's
    address (kube-proxy's iptables mode matches every local address)."""
    emu = _emu(backend)
    trace = emu.send(_syn("10.244.0.1", 30080), src="default/client")
    assert delivered_frame(trace) is None


def test_no_endpoints_icmp_port_unreachable(backend: str) -> None:
    """A virtual service without real servers: ip_vs_leave sends ICMP port unreachable
    and drops, at LOCAL_IN (no forwarding: the TTL is untouched)."""
    emu = _emu(backend, respond=True)
    trace = emu.send(_syn(EMPTY_IP, 80), src="default/client")
    assert trace.outcome(0) == "DROPPED"
    assert trace.drop_reasons(0) == ["IPVS: no real server (ICMP port unreachable)"]
    errs = [p for p in trace.packets if p.origin == "icmp-error"]
    assert len(errs) == 1, trace.detailed()
    icmp = Ether(errs[0].hops[-1][2])
    assert icmp[ICMP].type == 3 and icmp[ICMP].code == 3 and icmp[IP].dst == "10.244.0.2"
    quoted = icmp[ICMP].payload
    assert quoted.dst == EMPTY_IP and quoted.ttl == 64


@pytest.mark.parametrize(("cni", "field"), [("{name: kube-router, dsr: true}", "spec.cni.dsr"),
                                           ("kube-router", "spec.mode")])
def test_refused_settings(tmp_path: Path, cni: str, field: str) -> None:
    """DSR is not modelled; flannel's vxlan backend is not kube-router's: one line, exit 2."""
    mode = "vxlan" if field == "spec.mode" else "host-gw"
    (tmp_path / "c.yaml").write_text(
        "apiVersion: kemu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n"
        f"spec:\n  nodes: 2\n  mode: {mode}\n  cni: {cni}\n")
    r = subprocess.run([sys.executable, "-m", "kemu", "validate", "-f", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stdout + r.stderr
    assert field in r.stderr and "Traceback" not in r.stderr


def test_show_interfaces_lists_the_service_addresses() -> None:
    from kemu.frontend.views import interface_items

    emu = kemu.load(_docs(), backend="python")
    items = {it["name"]: it for it in interface_items(emu.model, emu.tables)}
    dummy = items["node1/kube-dummy-if"]
    assert dummy["kind"] == "dummy" and dummy["ip"] is None
    assert dummy["addresses"] == [EMPTY_IP, CLUSTER_IP]
    tun = items[f"node1/{tunnel_name('172.18.0.3')}"]
    assert tun["kind"] == "ipip" and tun["peer"] == f"node2/{tunnel_name('172.18.0.2')}"


def test_bench_refuses_a_mode_not_built() -> None:
    """``kemu bench --cni NAME``: any built mode but flannel (the baseline); others exit 2
    (flannel itself: the one name that stays refused as modes get built)."""
    r = subprocess.run([sys.executable, "-m", "kemu", "bench", "--cni", "flannel", "--quick"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--cni flannel" in r.stderr and "kube-router" in r.stderr


def test_pcapng_has_the_new_devices(backend: str, tmp_path: Path) -> None:
    """A replayed capture's pcapng names kube-bridge, kube-dummy-if and every tun-<hash>
    among its interfaces, and carries the IP-in-IP packet on the node's eth0."""
    from scapy.utils import PcapNgReader, wrpcap

    emu = _emu(backend)
    t = emu.tables
    client = t.iface("default/client/eth0")
    frame = Ether(src=":".join(f"{b:02x}" for b in int(t.if_mac[client]).to_bytes(6, "big")),
                  dst=":".join(f"{b:02x}" for b in int(
                      t.if_mac[t.iface("node1/kube-bridge")]).to_bytes(6, "big"))) / IP(
        src="10.244.0.2", dst=CLUSTER_IP) / TCP(sport=44000, dport=80, flags="S")
    wrpcap(str(tmp_path / "in.pcap"), [frame])
    emu.replay(tmp_path / "in.pcap", tmp_path / "out.pcapng")
    raw = (tmp_path / "out.pcapng").read_bytes()
    for name in ("node1/kube-bridge", "node1/kube-dummy-if",
                 f"node1/{tunnel_name('172.18.0.3')}", f"node2/{tunnel_name('172.18.0.2')}"):
        assert name.encode() in raw
    pkts = list(PcapNgReader(str(tmp_path / "out.pcapng")))
    assert any(IP in p and p[IP].proto == 4 and p[IP].src == "172.18.0.2" for p in pkts)


def test_clusterip_with_a_server_on_the_same_node_is_routed(backend: str) -> None:
    """IPVS is at LOCAL_IN, not at the bridge's PREROUTING (br_netfilter): a server on the
    client's own bridge gets the packet routed by the node (TTL 63, from kube-bridge's MAC),
    where kube-proxy's DNAT would bridge it straight across."""
    docs = _docs()
    for d in docs:
        if d["kind"] == "Pod" and d["metadata"]["name"] == "neighbour":
            d["metadata"]["labels"] = {"app": "near"}
            d["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    docs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "near", "namespace": "default"},
                 "spec": {"selector": {"app": "near"},
                          "ports": [{"port": 80, "targetPort": 8080}]}})
    emu = kemu.load(docs, backend=backend, respond=False)
    svc = next(s for s in emu.model.services if s.name == "near")
    trace = emu.send(_syn(str(svc.cluster_ip), 80), src="default/client")
    got = delivered_frame(trace)
    assert got is not None and got.dst == "10.244.0.3" and got.ttl == 63, trace.detailed()
    kinds = [k for p in trace.packets for (_i, _d, _f, evs) in p.hops for (k, *_r) in evs]
    assert C.EV_BRIDGED_DNAT not in kinds and C.EV_IPVS_DNAT in kinds


def test_flow_log_marks_the_ipvs_translation(backend: str, tmp_path: Path) -> None:
    """The Hubble-shaped flow log has a TRANSLATED record for IPVS's NAT, naming the
    Service as its destination, as for kube-proxy's DNAT."""
    import json

    from scapy.utils import wrpcap

    emu = _emu(backend)
    t = emu.tables
    client = t.iface("default/client/eth0")
    frame = Ether(src=":".join(f"{b:02x}" for b in int(t.if_mac[client]).to_bytes(6, "big")),
                  dst=":".join(f"{b:02x}" for b in int(
                      t.if_mac[t.iface("node1/kube-bridge")]).to_bytes(6, "big"))) / IP(
        src="10.244.0.2", dst=CLUSTER_IP) / TCP(sport=44001, dport=80, flags="S")
    wrpcap(str(tmp_path / "in.pcap"), [frame])
    emu.replay(tmp_path / "in.pcap", tmp_path / "out.pcapng", tmp_path / "flows.jsonl")
    records = [json.loads(x) for x in (tmp_path / "flows.jsonl").read_text().splitlines()]
    translated = [r for r in records if "TRANSLATED" in json.dumps(r)]
    assert translated, records
    assert any("web" in json.dumps(r.get("flow", r).get("destination_service", {}))
               for r in translated), translated
