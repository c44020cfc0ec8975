"""Azure CNI bridge mode (``cni: {name: azure, mode: bridge}``, ``kemu/compiler/cni_routed.py``).

Each node's ``eth0`` is enslaved to the Linux bridge ``azure0`` (``IF_UPLINK``), which holds
the node's address; pods take VNet addresses on veths ``azv<hash>`` of azure0 (hairpin on),
their default route via the VNet's gateway; Azure's ebtables rules on eth0 rewrite the MACs
(``network/bridge_networkclient_linux.go`` ``AddL2Rules``: the source MAC of every unicast
frame leaving eth0 becomes eth0's; ``bridge_endpointclient_linux.go`` ``AddEndpointRules``: an
IPv4 packet for a pod of the node arriving on eth0 gets the pod's MAC; ARP replies arriving
on eth0 are broadcast). Every datapath test runs on both backends; the cluster is the
scenario with the pods' addresses on the node network. SEMANTICS ids: L2-1/L2-3/L2-4 (the
bridge), S-3/S-6 (Services), M-5 (egress SNAT), R-1 (routes).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import DATA
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

import kemu
from kemu.compiler.cni_routed import host_veth_name
from kemu.dataplane import codes as C
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
NODE_NET_IPS = {"10.244.0.2": "172.18.0.10", "10.244.0.3": "172.18.0.11",
                "10.244.1.2": "172.18.0.12", "10.244.2.2": "172.18.0.13"}
IPS = {"a": "172.18.0.10", "b": "172.18.0.11", "c": "172.18.0.12", "d": "172.18.0.13"}


def cluster_text() -> str:
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    text = text.replace("  nodes: 3\n", "  nodes: 3\n  cni: {name: azure, mode: bridge}\n", 1)
    for old, new in NODE_NET_IPS.items():
        text = text.replace(f"podIP: {old}}}", f"podIP: {new}}}")
    return text


def load(backend: str, tmp_path: Path, **options):
    path = tmp_path / "azure-bridge.yaml"
    path.write_text(cluster_text())
    options.setdefault("respond", False)
    return kemu.load(path, backend=backend, **options)


def mac_of(t, name: str) -> str:
    v = int(t.if_mac[t.iface(name)])
    return ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def veth(node: str, pod: str) -> str:
    return f"{node}/{host_veth_name('azv', 'default', pod)}"


def test_devices_azure0_with_eth0_enslaved(backend: str, tmp_path: Path) -> None:
    """azure0 holds the node's address and eth0's MAC; eth0 has no address, is a port of
    azure0 and of the node network; the pods' veths azv<hash> are hairpin ports of azure0."""
    emu = load(backend, tmp_path)
    t = emu.tables
    for n, node in enumerate(("node1", "node2", "node3")):
        eth, br = t.iface(f"{node}/eth0"), t.iface(f"{node}/azure0")
        assert int(t.if_kind[eth]) == C.IF_UPLINK and int(t.if_ip[eth]) == 0
        assert int(t.if_kind[br]) == C.IF_BRIDGE
        assert str(t.if_ip[br]) and int(t.if_ip[br]) == int(t.node_ip[n])
        assert int(t.if_mac[br]) == int(t.if_mac[eth])
        assert int(t.if_bridge[eth]) == n and int(t.node_eth_if[n]) == br
        seg = len(t.br_local_if) - 1
        ports = {int(p) for p in t.br_ports[t.br_port_start[seg]:
                                              t.br_port_start[seg] + t.br_port_count[seg]]}
        assert eth in ports
    v = t.iface(veth("node1", "a"))
    assert int(t.if_kind[v]) == C.IF_VETH and int(t.if_hairpin[v]) == 1
    assert t.if_kernel_name[v] == host_veth_name("azv", "default", "a")
    assert int(t.if_bridge[v]) == 0


def test_same_node_is_bridged(backend: str, tmp_path: Path) -> None:
    """a -> b on node1: bridged on azure0 (no routing: TTL kept), no ebtables rewrite."""
    emu = load(backend, tmp_path)
    trace = emu.send(IP(dst=IPS["b"]) / TCP(dport=8080, flags="S"), src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    got = Ether(trace.frames_at("default/b/eth0", "in")[0])
    assert got[IP].ttl == 64 and got.dst == mac_of(emu.tables, "default/b/eth0")
    assert not trace.frames_at("node1/eth0", "out")


def test_cross_node_macs_rewritten_by_ebtables(backend: str, tmp_path: Path) -> None:
    """a (node1) -> c (node2): the pod addresses c's node (the VNet's NIC holding c's
    address); leaving node1's eth0 the source MAC is node1's (ebtables snat); arriving on
    node2's eth0 the destination MAC becomes c's (ebtables dnat); bridged all the way."""
    emu = load(backend, tmp_path)
    t = emu.tables
    trace = emu.send(IP(dst=IPS["c"]) / TCP(dport=8080, flags="S"), src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    sent = Ether(trace.frames_at("default/a/eth0", "out")[0])
    assert sent.src == mac_of(t, "default/a/eth0") and sent.dst == mac_of(t, "node2/eth0")
    wire = Ether(trace.frames_at("node1/eth0", "out")[0])
    assert wire.src == mac_of(t, "node1/eth0") and wire.dst == mac_of(t, "node2/eth0")
    assert wire[IP].src == IPS["a"] and wire[IP].ttl == 64
    got = Ether(trace.frames_at("default/c/eth0", "in")[0])
    assert got.dst == mac_of(t, "default/c/eth0") and got.src == mac_of(t, "node1/eth0")
    path = [n for n, _d in trace.path(0)]
    assert path.index("node2/eth0") < path.index(veth("node2", "c"))
    assert "node1/azure0" not in path and "node2/azure0" not in path  # bridged, not routed


def test_pod_gateway_is_the_vnet_gateway(backend: str, tmp_path: Path) -> None:
    """A pod's default route is via the VNet's gateway (.1): its frame to outside is
    addressed to the gateway's MAC and bridged out of eth0; ip-masq-agent SNATs it to the
    node (outside the VNet); inside the VNet the pod's address is kept."""
    emu = load(backend, tmp_path)
    t = emu.tables
    out = emu.send(IP(dst="8.8.8.8") / UDP(sport=4000, dport=53) / b"q", src="default/a")
    assert out.outcome(0) == "LEFT"
    sent = Ether(out.frames_at("default/a/eth0", "out")[0])
    assert sent.dst == mac_of(t, "gateway/eth0")
    wire = Ether(out.frames_at("node1/eth0", "out")[0])
    assert wire[IP].src == "172.18.0.2" and wire.src == mac_of(t, "node1/eth0")
    inside = emu.send(IP(dst="172.18.0.200") / TCP(sport=4001, dport=80, flags="S"),
                      src="default/a")
    assert Ether(inside.frames_at("node1/eth0", "out")[0])[IP].src == IPS["a"]


def test_external_host_to_pod(backend: str, tmp_path: Path) -> None:
    """A VNet host sends to a pod on-link: to the MAC of the node holding the address; node2's
    eth0 gives the frame c's MAC (ebtables dnat) and azure0 bridges it to c."""
    emu = load(backend, tmp_path)
    t = emu.tables
    trace = emu.send(IP(dst=IPS["c"]) / TCP(dport=8080, flags="S"), src="ext/client")
    assert trace.outcome(0) == "DELIVERED"
    assert Ether(trace.frames_at("node2/eth0", "in")[0]).dst == mac_of(t, "node2/eth0")
    assert Ether(trace.frames_at("default/c/eth0", "in")[0]).dst == mac_of(
        t, "default/c/eth0")


def test_arp_reply_arriving_on_eth0_is_broadcast(backend: str, tmp_path: Path) -> None:
    """``-p ARP -i eth0 --arp-op Reply -j dnat --to-dst ff:ff:ff:ff:ff:ff``: an ARP reply
    from the wire reaches every port of azure0; a pod's ARP request leaving eth0 carries the
    node's MAC as sender (``--snat-arp``)."""
    emu = load(backend, tmp_path)
    t = emu.tables
    reply = Ether(dst=mac_of(t, "default/a/eth0")) / ARP(
        op=2, psrc="172.18.0.100", pdst=IPS["a"], hwdst=mac_of(t, "default/a/eth0"))
    trace = emu.send(reply, src="ext/client")
    at_a = trace.frames_at("default/a/eth0", "in")
    at_b = trace.frames_at("default/b/eth0", "in")
    assert at_a and at_b and Ether(at_a[0]).dst == "ff:ff:ff:ff:ff:ff"
    req = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=IPS["a"], pdst="172.18.0.100")
    trace = emu.send(req, src="default/a")
    wire = Ether(trace.frames_at("node1/eth0", "out")[0])
    assert wire.src == mac_of(t, "node1/eth0") and wire[ARP].hwsrc == mac_of(t, "node1/eth0")


def test_clusterip_to_another_node_golden(backend: str, capsys: pytest.CaptureFixture,
                                          tmp_path: Path) -> None:
    """pod -> ClusterIP on another node: br_netfilter's DNAT on azure0, bridged to eth0,
    the ebtables rewrites (``kemu trace``, golden)."""
    path = tmp_path / "cluster.yaml"
    path.write_text(cluster_text())
    rc = main(["trace", "-f", str(path), "-S", "default/a", "-D", "default/svc-c",
               "--backend", backend])
    out = capsys.readouterr().out
    golden = GOLDEN / "cni-azure-bridge-trace.txt"
    if os.environ.get("KEMU_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert rc == 0
    assert out == golden.read_text()


def test_nodeport_from_outside(backend: str, tmp_path: Path) -> None:
    """S-3: ext/client -> node1:NodePort of svc-c (c on node2): DNAT and masquerade on node1,
    out of azure0 to node2; the answer back the same way."""
    emu = load(backend, tmp_path, respond=True)
    svc = next(s for s in emu.model.services if s.type == "NodePort"
               and s.selector == {"app": "c"})
    port = svc.ports[0].node_port
    trace = emu.send(IP(dst="172.18.0.2") / TCP(sport=5555, dport=port, flags="S"),
                     src="ext/client")
    assert trace.outcome(0) == "DELIVERED"
    got = Ether(trace.frames_at("default/c/eth0", "in")[0])
    assert got[IP].src == "172.18.0.2"
    answer = trace.answers()[0]
    assert answer.outcomes[0][0] == C.OUT_DELIVERED
    back = Ether(answer.hops[-1][2])
    assert back[IP].src == "172.18.0.2" and back[TCP].sport == port


def test_ping_the_node(backend: str, tmp_path: Path) -> None:
    """The node's address is azure0's: a pod pings its node, bridged to the local port."""
    emu = load(backend, tmp_path)
    trace = emu.send(IP(dst="172.18.0.2") / ICMP(), src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    assert [emu.tables.if_name[i] for k, _r, i, _a in trace.packets[0].outcomes
            if k == C.OUT_DELIVERED] == ["node1/azure0"]


def test_show_routes_and_interfaces(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(cluster_text())
    assert main(["show", "routes", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    assert "172.18.0.0/24 dev azure0 proto kernel scope link src 172.18.0.2" in out
    assert "default via 172.18.0.1 dev azure0" in out
    assert main(["show", "interfaces", "-f", str(path), "-o", "wide"]) == 0
    out = capsys.readouterr().out
    assert "node1/azure0" in out and "uplink" in out
    assert host_veth_name("azv", "default", "a") in out


def test_example(capsys: pytest.CaptureFixture) -> None:
    """examples/cni/azure-bridge: pod a -> Service web (its pod on node2) is established."""
    assert main(["trace", "-f", str(ROOT / "examples" / "cni" / "azure-bridge"),
                 "-S", "default/a", "-D", "default/web"]) == 0
    out = capsys.readouterr().out
    assert "connection established" in out and "ebtables snat on eth0" in out


def test_bench_mix(backend: str) -> None:
    """``kemu bench --cni azure-bridge``'s workload: every mix frame delivered."""
    from kemu._backend import IMPLEMENTATIONS
    from kemu.bench import workloads as W
    from kemu.compiler.compile import compile_cluster
    from kemu.control.cluster import load_cluster

    t = compile_cluster(load_cluster(W.synthetic_cluster(3, 30, 6, cni="azure-bridge")))
    assert (t.if_kind == C.IF_UPLINK).sum() == 3
    mix = W.cluster_mix(t, 200, 400)
    dp = IMPLEMENTATIONS[backend].Datapath(t, 0, True)
    res = W.results_for(t, 64, False, 1514)
    delivered = 0

    def count(r, lo: int, hi: int) -> None:  # noqa: ANN001
        nonlocal delivered
        delivered += int((r.oc_kind[: r.n_outcomes] == C.OUT_DELIVERED).sum())

    W.drive(dp, mix, res, 64, count)
    assert delivered == len(mix)


@pytest.mark.parametrize("static", [True, False])
def test_twins_equivalent(static: bool) -> None:
    """Both datapaths: the same hops, bytes, events, outcomes and state over the bench mix,
    ARP both ways across eth0, egress and a table reload (the flow cache on)."""
    import ipaddress

    from kemu._backend import IMPLEMENTATIONS
    if "cython" not in IMPLEMENTATIONS:
        pytest.skip("one backend built")
    from test_fastpath_equivalence import Batch, Pair

    from kemu.bench import workloads as W
    from kemu.compiler.compile import compile_cluster
    from kemu.control.cluster import load_cluster

    t = compile_cluster(load_cluster(W.synthetic_cluster(3, 24, 4, cni="azure-bridge")))
    mix = W.cluster_mix(t, 60, 300)
    rows = [(mix.frame(i), int(mix.in_if[i]), int(mix.in_mode[i]), int(mix.ts_ns[i]))
            for i in range(len(mix))]
    now = int(mix.ts_ns[-1])
    pods = [i for i in range(t.n_ifaces) if int(t.if_kind[i]) == C.IF_POD_ETH]
    for k, i in enumerate(pods[:6]):
        src = str(ipaddress.IPv4Address(int(t.if_ip[i])))
        dst = str(ipaddress.IPv4Address(int(t.if_ip[pods[-1 - k]])))
        arp = bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
                    / ARP(op=1, psrc=src, pdst=dst))
        rows.append((arp, i, C.INJ_TX_FIXL2, now + 1000 * k))
        rep = bytes(Ether(dst="02:00:00:00:00:09") / ARP(op=2, psrc=dst, pdst=src))
        rows.append((rep, int(t.ext_if[0]) if len(t.ext_if) else i, C.INJ_TX_FIXL2,
                     now + 1000 * k + 500))
        out = bytes(Ether() / IP(src=src, dst="8.8.8.8") / UDP(sport=3000 + k, dport=53)
                    / b"q")
        rows.append((out, i, C.INJ_TX_FIXL2, now + 1000 * k + 700))
    pair = Pair(t, 5, static, 32, 4096, True)
    for k in range(0, len(rows), 61):
        pair.batch(Batch.of(rows[k: k + 61]))
    pair.both("load", compile_cluster(load_cluster(
        W.synthetic_cluster(3, 24, 4, cni="azure-bridge"))))
    pair.batch(Batch.of(rows[:120]))


def test_replay_pcapng_and_flow_log(backend: str, tmp_path: Path) -> None:
    """``kemu replay``: the pcapng names azure0, the uplink and the azv veths and comments
    the ebtables rewrites (their MACs fit the event fields); the flow log has the flow."""
    from scapy.utils import wrpcap

    path = tmp_path / "c.yaml"
    path.write_text(cluster_text())
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                      / IP(src=IPS["a"], dst=IPS["c"]) / TCP(sport=4242, dport=8080,
                                                             flags="S")])
    out, flows = tmp_path / "out.pcapng", tmp_path / "flows.jsonl"
    assert main(["replay", "-f", str(path), "-r", str(src), "-w", str(out), "--flows",
                 str(flows), "--backend", backend]) == 0
    data = out.read_bytes()
    for word in (b"azure0", host_veth_name("azv", "default", "c").encode(),
                 b"ebtables snat on eth0: src MAC", b"ebtables dnat on eth0: dst MAC"):
        assert word in data, word
    assert IPS["c"] in flows.read_text()
