"""hostNetwork pods (M-3) and hostPort (the CNI portmap plugin's CNI-HOSTPORT-DNAT).

A hostNetwork pod lives in its node's network namespace: its endpoints are the node's address,
its listening ports are the node's sockets (the node answers SYN-ACK instead of RST), and what
it sends leaves from the node's own stack. Every test on both backends."""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import kemu

NODES = {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "t"},
         "spec": {"nodes": [{"name": "node1"}, {"name": "node2"}],
                  "externalHosts": [{"name": "outside", "ip": "172.18.0.200"}]}}
CLIENT = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
          "spec": {"nodeName": "node2", "containers": [{"name": "c"}]}}
AGENT = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
         "spec": {"selector": {"matchLabels": {"app": "agent"}},
                  "template": {"metadata": {"labels": {"app": "agent"}},
                               "spec": {"hostNetwork": True, "containers": [
                                   {"name": "a", "ports": [{"containerPort": 9100}]}]}}}}
AGENT_SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "agent"},
             "spec": {"selector": {"app": "agent"}, "ports": [{"port": 80,
                                                              "targetPort": 9100}]}}


def load(backend: str, *docs: dict[str, Any]) -> kemu.frontend.api.EmulatedCluster:
    return kemu.load([NODES, CLIENT, *docs], backend=backend)


def received(trace: Any, iface: str) -> list[Any]:
    return [Ether(f)[IP] for f in trace.frames_at(iface, "in")]


def syn(dst: str, dport: int, sport: int = 41000) -> Any:
    return IP(dst=dst) / TCP(sport=sport, dport=dport, flags="S")


def test_hostnetwork_pod_port_is_a_node_socket(backend: str) -> None:
    emu = load(backend, AGENT)
    node1 = str(emu.model.node("node1").internal_ip)
    got = received(emu.send(syn(node1, 9100), src="default/client"), "default/client/eth0")
    assert got[-1][TCP].flags == "SA" and got[-1].src == node1
    got = received(emu.send(syn(node1, 9101), src="default/client"), "default/client/eth0")
    assert got[-1][TCP].flags == "RA"  # nothing listens there: the node's RST


def test_service_of_hostnetwork_daemonset_answers_from_the_node(backend: str) -> None:
    emu = load(backend, AGENT, AGENT_SVC)
    vip = str(emu.model.service("default", "agent").cluster_ip)
    for sport in range(41000, 41008):  # both endpoints (node1, node2) get chosen
        trace = emu.send(syn(vip, 80, sport), src="default/client")
        got = received(trace, "default/client/eth0")
        assert got[-1][TCP].flags == "SA" and got[-1].src == vip and got[-1][TCP].sport == 80


def test_send_from_hostnetwork_pod_leaves_from_the_node(backend: str) -> None:
    web = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"nodeName": "node2", "containers": [
               {"name": "w", "ports": [{"containerPort": 8080}]}]}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    emu = load(backend, AGENT, web, svc)
    pod = next(p for p in emu.model.pods if p.name.startswith("agent") and p.node_name == "node1")
    vip = str(emu.model.service("default", "web").cluster_ip)
    trace = emu.send(syn(vip, 80), src=pod.key)
    node1 = str(emu.model.node("node1").internal_ip)
    at_web = received(trace, "default/web/eth0")
    assert at_web[0].src == node1  # M-3: the node's address, no NAT
    assert trace.verdict().reachable
    answer = Ether(trace.answers()[-1].hops[-1][2])[IP]
    assert answer[TCP].flags == "SA" and answer.dst == node1
    assert vip in trace.verdict().reason
    # the node's client socket took the SYN-ACK: no RST answer to it
    assert not [f for f in trace.frames_at("node1/local", "out")
                if TCP in Ether(f) and Ether(f)[TCP].flags & 0x04]


WEB_HP = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
          "spec": {"nodeName": "node1", "containers": [
              {"name": "w", "ports": [{"containerPort": 8080, "hostPort": 30800}]}]}}


def test_hostport_from_outside_reaches_the_pod(backend: str) -> None:
    emu = load(backend, WEB_HP)
    node1 = str(emu.model.node("node1").internal_ip)
    web = str(emu.model.pod("default", "web").ip)
    trace = emu.send(syn(node1, 30800), src="ext/outside")
    at_web = received(trace, "default/web/eth0")
    # CNI-HOSTPORT-DNAT: to podIP:containerPort, the client's address kept (no SETMARK)
    assert at_web[0].dst == web and at_web[0][TCP].dport == 8080
    assert at_web[0].src == "172.18.0.200"
    back = received(trace, "ext/outside/eth0")
    assert back[-1][TCP].flags == "SA" and back[-1].src == node1 and back[-1][TCP].sport == 30800
    assert f"DNAT {node1}:30800 -> {web}:8080 hostPort default/web" in trace.detailed()


def test_hostport_is_mapped_on_its_node_only(backend: str) -> None:
    emu = load(backend, WEB_HP)
    node2 = str(emu.model.node("node2").internal_ip)
    trace = emu.send(syn(node2, 30800), src="ext/outside")
    assert not trace.frames_at("default/web/eth0")
    back = received(trace, "ext/outside/eth0")
    assert back[-1][TCP].flags == "RA" and back[-1].src == node2  # node2's own RST


def test_hostport_from_a_pod_of_another_node(backend: str) -> None:
    """node2 routes to node1's address untouched (not local there: no DNAT on node2; its
    egress masquerade, flannel --ip-masq, takes the source); node1 maps it."""
    emu = load(backend, WEB_HP)
    node1 = str(emu.model.node("node1").internal_ip)
    node2 = str(emu.model.node("node2").internal_ip)
    trace = emu.send(syn(node1, 30800), src="default/client")
    leaving = [Ether(f)[IP] for f in trace.frames_at("node2/eth0", "out")][0]
    assert leaving.dst == node1 and leaving[TCP].dport == 30800
    assert received(trace, "default/web/eth0")[0].src == node2
    assert trace.verdict().reachable


def test_hostport_hairpin_from_its_own_node_is_masqueraded(backend: str) -> None:
    other = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other"},
             "spec": {"nodeName": "node1", "containers": [{"name": "c"}]}}
    emu = load(backend, WEB_HP, other)
    node1 = str(emu.model.node("node1").internal_ip)
    trace = emu.send(syn(node1, 30800), src="default/other")
    assert received(trace, "default/web/eth0")[0].src == str(emu.model.node("node1").gateway_ip)
    assert trace.verdict().reachable


def test_twins_agree_on_hostport_and_hostnetwork() -> None:
    """Hop by hop, byte by byte and in state(): the compiled datapath and its pure twin."""
    from kemu._backend import IMPLEMENTATIONS

    other = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other"},
             "spec": {"nodeName": "node1", "containers": [{"name": "c"}]}}
    runs = []
    for name in sorted(IMPLEMENTATIONS):
        emu = load(name, WEB_HP, other, AGENT, AGENT_SVC)
        vip = str(emu.model.service("default", "agent").cluster_ip)
        seen = []
        for src, dst, port in (("ext/outside", "172.18.0.2", 30800),
                               ("ext/outside", "172.18.0.3", 30800),
                               ("default/other", "172.18.0.2", 30800),
                               ("default/client", "172.18.0.2", 30800),
                               ("default/client", vip, 80), ("node2", "172.18.0.2", 30800)):
            trace = emu.send(syn(dst, port), src=src)
            seen.append([(p.origin, p.hops, p.outcomes) for p in trace.packets])
        seen.append(emu.engine.dp.state())
        runs.append(seen)
    assert all(r == runs[0] for r in runs)
