"""The node's own connections and masquerade, on every backend.

* A node's processes (kubelet probes, hostNetwork pods, ``kemu trace -S node1``) open
  connections that complete: the reply is un-SNATed at PREROUTING and un-DNATed at LOCAL_IN
  (CT-2; NF_INET_LOCAL_IN conntrack NAT), and the node's stack takes the SYN-ACK on its client
  socket instead of answering RST.
* MASQUERADE (S-7): without ``--random-fully`` the source port is kept unless another
  connection holds the resulting reply tuple (get_unique_tuple; a connection's own reply entry
  is no clash); with it (``spec.kubeProxy.masqueradeRandomFully``, kube-proxy's default) a
  random port from kemu's seed.
* Pod traffic leaving the cluster is masqueraded to the node (flannel ipMasq, M-5/OV-5:
  ``-s <podCIDR> ! -d <nonMasqueradeCIDRs> -j MASQUERADE``), configurable with
  ``spec.masquerade``; pod to pod never is (M-1).

Cluster: tests/data/scenario (random-fully off for both, as the kernel harness's rules).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import DATA, delivered_frame, scenario
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import kemu
from kemu.dataplane import codes as C

NODE1, NODE2 = "172.18.0.2", "172.18.0.3"
WEB = "172.18.0.200"
SETTINGS = ("  kubeProxy: {masqueradeRandomFully: false}\n"
            "  masquerade: {enabled: true, randomFully: false}\n")


def _variant(tmp_path: Path, settings: str) -> Path:
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    assert SETTINGS in text
    path = tmp_path / "cluster.yaml"
    path.write_text(text.replace(SETTINGS, settings, 1))
    return path


def _syn(dst: str, dport: int, sport: int = 40000):
    return IP(dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=1)


def _tcp(frame: bytes) -> tuple[str, int, str, int, str]:
    ip = Ether(frame)[IP]
    return ip.src, ip[TCP].sport, ip.dst, ip[TCP].dport, str(ip[TCP].flags)


def _node_delivered(trace, node: str) -> list[bytes]:
    """Frames delivered to ``node``'s own stack, as it received them (after LOCAL_IN)."""
    t = trace.tables
    out = []
    for p in trace.packets:
        for (kind, _r, iface, _a), data in zip(p.outcomes, p.outcome_frames, strict=True):
            if (kind == C.OUT_DELIVERED and int(t.if_node[iface]) == t.node_name.index(node)
                    and int(t.if_kind[iface]) in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP)):
                out.append(data)
    return out


def _no_rst(trace) -> None:
    for p in trace.packets:
        for _i, _d, data, _e in p.hops:
            pkt = Ether(data)
            assert not (TCP in pkt and pkt[TCP].flags & 0x04), trace.detailed()


def _handshake(trace, node: str, server: tuple[str, int], client_port: int) -> None:
    """The node's SYN was answered by a SYN-ACK from ``server`` (as the node's socket
    connected to it) to its own port, taken by its socket: no RST, nothing else."""
    assert [p.origin for p in trace.packets] == ["injected", "answer"], trace.summary()
    got = _node_delivered(trace, node)
    assert len(got) == 1, trace.detailed()
    assert _tcp(got[0]) == (server[0], server[1], NODE1 if node == "node1" else NODE2,
                            client_port, "SA"), trace.detailed()
    _no_rst(trace)


# ---- the node's own connections


def test_node_to_clusterip_handshake(backend: str) -> None:
    """CT-2 at LOCAL_IN: node1 -> svc-c (10.96.0.22:80, endpoint c on node2): the SYN-ACK
    reaches node1's socket as 10.96.0.22:80 -> 172.18.0.2:40000 and is not refused."""
    emu = scenario(backend, respond=True)
    trace = emu.send(_syn("10.96.0.22", 80), src="node1")
    _handshake(trace, "node1", ("10.96.0.22", 80), 40000)
    assert trace.summary().splitlines()[0] == (
        "injected: TCP 172.18.0.2:40000 > 10.96.0.22:80 [S] ttl 64")  # as sent, before NAT


def test_node_to_own_nodeport_handshake(backend: str) -> None:
    """E-1 from the node itself: node1 -> 172.18.0.2:30081 (endpoint c on node2), DNATed and
    masqueraded in nat OUTPUT/POSTROUTING; the reply un-NATed back to the NodePort."""
    emu = scenario(backend, respond=True)
    trace = emu.send(_syn(NODE1, 30081, 40001), src="node1")
    _handshake(trace, "node1", (NODE1, 30081), 40001)


def test_node_to_other_nodes_nodeport_handshake(backend: str) -> None:
    """node1 -> node2:30081: node2 DNATs and masquerades, its reply comes back as
    172.18.0.3:30081 to node1's socket."""
    emu = scenario(backend, respond=True)
    trace = emu.send(_syn(NODE2, 30081, 40002), src="node1")
    _handshake(trace, "node1", (NODE2, 30081), 40002)


def test_node_to_external_host_handshake(backend: str) -> None:
    """node1 -> web:80 (outside the cluster): no NAT (not from a pod CIDR), the SYN-ACK is
    taken by the node's socket."""
    emu = scenario(backend, respond=True)
    trace = emu.send(_syn(WEB, 80, 40003), src="node1")
    web = delivered_frame(trace)
    assert web is not None and (web.src, web[TCP].sport) == (NODE1, 40003), trace.detailed()
    _handshake(trace, "node1", (WEB, 80), 40003)


def test_node_closed_port_still_refused(backend: str) -> None:
    """A connection the node did not open is still refused: the client -> node1:22 gets a
    RST (the node remembers only its own sockets)."""
    emu = scenario(backend, respond=True)
    emu.send(_syn(WEB, 80, 40004), src="node1")
    trace = emu.send(_syn(NODE1, 22, 40005), src="ext/client")
    flags = [_tcp(p.hops[0][2])[4] for p in trace.packets if p.origin == "answer"]
    assert flags == ["RA"], trace.detailed()


# ---- MASQUERADE's port (S-7)


def test_masquerade_keeps_the_port(backend: str) -> None:
    """random-fully off: node1 -> svc-c from port 40000 reaches c as 172.18.0.2:40000 (the
    connection's own reply entry is no clash: this was 40001)."""
    emu = scenario(backend)
    trace = emu.send(_syn("10.96.0.22", 80), src="node1")
    got = delivered_frame(trace)
    assert got is not None and (got.src, got[TCP].sport) == (NODE1, 40000), trace.detailed()


def test_masquerade_clash_moves_the_port(backend: str) -> None:
    """random-fully off: a:41000 and b:41000 -> web:80 both leave as 172.18.0.2: the first
    keeps 41000, the second's reply tuple would be the first's, so it gets another port
    (nf_nat_l4proto_unique_tuple: from a random offset, kemu's seed), in 1024-65535."""
    emu = scenario(backend)
    first = delivered_frame(emu.send(_syn(WEB, 80, 41000), src="default/a"))
    second = delivered_frame(emu.send(_syn(WEB, 80, 41000), src="default/b"))
    assert first is not None and second is not None
    assert (first.src, first[TCP].sport) == (NODE1, 41000)
    assert second.src == NODE1 and second[TCP].sport != 41000
    assert 1024 <= second[TCP].sport <= 65535


def _random_fully_port(backend: str, path: Path, seed: int) -> int:
    emu = kemu.load(path, backend=backend, respond=False, seed=seed)
    got = delivered_frame(emu.send(_syn("10.96.0.22", 80), src="node1"))
    assert got is not None and got.src == NODE1
    return int(got[TCP].sport)


def test_masquerade_random_fully_is_seeded(backend: str, tmp_path: Path) -> None:
    """``spec.kubeProxy.masqueradeRandomFully: true`` (NF_NAT_RANGE_PROTO_RANDOM_FULLY): a
    port in 1024-65535 from kemu's seed: the same seed gives the same port, seeds differ."""
    path = _variant(tmp_path, "  kubeProxy: {masqueradeRandomFully: true}\n")
    ports = [_random_fully_port(backend, path, seed) for seed in (0, 0, 1, 2, 3)]
    assert ports[0] == ports[1]
    assert all(1024 <= p <= 65535 for p in ports)
    assert len(set(ports)) > 2, ports


def test_random_fully_is_the_default(tmp_path: Path) -> None:
    """kube-proxy adds --random-fully where iptables supports it: the default of both
    settings when the Cluster document does not say."""
    path = _variant(tmp_path, "")
    t = kemu.load(path).tables
    assert t.masq_random_fully and t.egress_masq and t.egress_random_fully
    assert [int(n) for n in t.nonmasq_net] == [0x0AF40000]


# ---- pod egress (flannel ipMasq)


def test_pod_to_external_host_masqueraded_and_answered(backend: str) -> None:
    """M-5/OV-5: a -> web:80 leaves node1 as 172.18.0.2:40000; web's SYN-ACK comes back to
    node1, is un-SNATed and reaches a as 172.18.0.200:80 -> 10.244.0.2:40000."""
    emu = scenario(backend, respond=True)
    trace = emu.send(_syn(WEB, 80), src="default/a")
    web = delivered_frame(trace)
    assert web is not None and (web.src, web[TCP].sport) == (NODE1, 40000), trace.detailed()
    assert trace.outcome(1) == "DELIVERED", trace.detailed()
    back = delivered_frame(trace, 1)
    assert back is not None and (back.src, back[TCP].sport, back.dst, back[TCP].dport) == (
        WEB, 80, "10.244.0.2", 40000), trace.detailed()
    assert str(back[TCP].flags) == "SA"


def test_pod_to_other_nodes_pod_not_masqueraded(backend: str) -> None:
    """M-1: a -> c (another node's pod, inside the cluster CIDR) keeps a's address."""
    emu = scenario(backend)
    got = delivered_frame(emu.send(_syn("10.244.1.2", 8080), src="default/a"))
    assert got is not None and got.src == "10.244.0.2"


@pytest.mark.parametrize("settings", [
    "  masquerade: {nonMasqueradeCIDRs: [10.244.0.0/16, 172.18.0.0/24]}\n",
    "  masquerade: {nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "
    "169.254.0.0/16]}\n",   # ip-masq-agent's defaults
    "  masquerade: {enabled: false}\n",
], ids=["listed", "ip-masq-agent", "disabled"])
def test_pod_to_non_masquerade_cidr_kept(backend: str, tmp_path: Path, settings: str) -> None:
    """A destination in a configured non-masquerade CIDR (or masquerade disabled): a -> web
    keeps a's address; web cannot route back to the pod CIDR (its answer leaves through the
    gateway), as without the rule."""
    emu = kemu.load(_variant(tmp_path, settings), backend=backend, respond=False)
    got = delivered_frame(emu.send(_syn(WEB, 80), src="default/a"))
    assert got is not None and got.src == "10.244.0.2"


def test_pod_outside_listed_cidrs_masqueraded(backend: str, tmp_path: Path) -> None:
    """ip-masq-agent-shaped list without the node network's range: 8.8.8.8 and web are
    masqueraded (random-fully default), a pod of another node is not."""
    path = _variant(tmp_path, "  masquerade: {nonMasqueradeCIDRs: [10.244.0.0/16]}\n")
    emu = kemu.load(path, backend=backend, respond=False)
    got = delivered_frame(emu.send(_syn(WEB, 80), src="default/a"))
    assert got is not None and got.src == NODE1
    got = delivered_frame(emu.send(_syn("10.244.2.2", 9090), src="default/a"))
    assert got is not None and got.src == "10.244.0.2"
