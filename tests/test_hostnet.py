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
