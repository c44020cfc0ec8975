"""What listens (``kemu.control.listen``): a pod answers where its Services send traffic, on
its probe ports and its declared containerPorts (S-13: targetPort, named ones resolved per
pod); the ``kemu.dev/listen`` annotation and the Cluster's ``spec.listen`` setting; UDP echo;
DF on the emulated stacks' UDP answers and not on ICMP ones (Linux's ``icmp_sk_init``
``IP_PMTUDISC_DONT``; sockets' default ``IP_PMTUDISC_WANT``). Every test on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

import kemu
from kemu.control.listen import listening_map
from kemu.control.workloads import parse_listen
from kemu.errors import KemuError

NODES = {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "t"},
         "spec": {"nodes": [{"name": "node1"}, {"name": "node2"}]}}


def deployment(name: str, containers: list[dict[str, Any]], annotations: dict | None = None
               ) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {"app": name}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": meta, "spec": {"containers": containers}}}}


def service(name: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": ports}}


CLIENT = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
          "spec": {"nodeName": "node2", "containers": [{"name": "c"}]}}


def cluster(backend: str, *docs: dict[str, Any], listen: str | None = None
            ) -> kemu.frontend.api.EmulatedCluster:
    nodes = {**NODES, "spec": {**NODES["spec"], **({"listen": listen} if listen else {})}}
    return kemu.load([nodes, CLIENT, *docs], backend=backend)


def web(backend: str, **kw: Any) -> kemu.frontend.api.EmulatedCluster:
    """A Deployment declaring no ports behind a Service with targetPort 8080 (many charts)."""
    return cluster(backend, deployment("web", [{"name": "app", "image": "x"}]),
                   service("web", [{"port": 80, "targetPort": 8080}]), **kw)


def pod_ip(emu: kemu.frontend.api.EmulatedCluster, prefix: str) -> str:
    return next(str(p.ip) for p in emu.model.pods if p.name.startswith(prefix))


def answer(emu: kemu.frontend.api.EmulatedCluster, pkt: Any) -> Any:
    """The emulated stack's answer to ``pkt`` from the client, as the client received it."""
    trace = emu.send(pkt, src="default/client")
    got = trace.frames_at("default/client/eth0", "in")
    return Ether(got[-1])[IP] if got else None


def syn(dst: str, dport: int) -> Any:
    return IP(dst=dst) / TCP(sport=41000, dport=dport, flags="S")


def test_service_target_port_answers_syn_ack(backend: str) -> None:
    emu = web(backend)
    ip = pod_ip(emu, "web")
    assert answer(emu, syn(ip, 8080))[TCP].flags == "SA"
    assert answer(emu, syn(ip, 9999))[TCP].flags == "RA"  # nobody targets it: RST
    # through the Service too: ClusterIP:80 -> pod:8080, SYN-ACK back from the ClusterIP
    vip = str(emu.model.service("default", "web").cluster_ip)
    got = answer(emu, syn(vip, 80))
    assert got[TCP].flags == "SA" and got.src == vip and got[TCP].sport == 80


def test_declared_setting_keeps_the_old_rule(backend: str) -> None:
    emu = web(backend, listen="declared")
    assert answer(emu, syn(pod_ip(emu, "web"), 8080))[TCP].flags == "RA"


def test_all_setting_answers_every_port(backend: str) -> None:
    emu = web(backend, listen="all")
    ip = pod_ip(emu, "web")
    assert answer(emu, syn(ip, 9999))[TCP].flags == "SA"
    got = answer(emu, IP(dst=ip) / UDP(sport=41000, dport=7777) / b"hi")
    assert got[UDP].payload.load == b"hi"


def test_named_target_port_resolved_per_pod(backend: str) -> None:
    a = deployment("api", [{"name": "app", "ports": [{"name": "http", "containerPort": 9376}]}])
    emu = cluster(backend, a, service("api", [{"port": 80, "targetPort": "http"}]))
    ip = pod_ip(emu, "api")
    assert answer(emu, syn(ip, 9376))[TCP].flags == "SA"
    assert ("TCP", 9376) in listening_map(emu.model)[f"default/{emu.model.pods[0].name}"]


@pytest.mark.parametrize("probe", [
    {"livenessProbe": {"httpGet": {"path": "/healthz", "port": 8081}}},
    {"readinessProbe": {"tcpSocket": {"port": 8081}}},
    {"startupProbe": {"grpc": {"port": 8081}}},
    {"readinessProbe": {"httpGet": {"port": "health"}}},
])
def test_probe_port_listens(backend: str, probe: dict[str, Any]) -> None:
    c = {"name": "app", **probe}
    if "health" in str(probe):
        c["ports"] = [{"name": "health", "containerPort": 8081}]
    emu = cluster(backend, deployment("job", [c]))
    ip = pod_ip(emu, "job")
    assert answer(emu, syn(ip, 8081))[TCP].flags == "SA"
    assert answer(emu, syn(ip, 8082))[TCP].flags == "RA"


def test_udp_to_service_port_echoes_with_df(backend: str) -> None:
    emu = cluster(backend, deployment("stats", [{"name": "app"}]),
                  service("stats", [{"port": 8125, "protocol": "UDP", "targetPort": 9125}]))
    ip = pod_ip(emu, "stats")
    got = answer(emu, IP(dst=ip) / UDP(sport=41000, dport=9125) / b"metric:1|c")
    assert got[UDP].sport == 9125 and got[UDP].dport == 41000
    assert got[UDP].payload.load == b"metric:1|c"
    assert got.flags == "DF"  # a UDP socket's default IP_PMTUDISC_WANT
    # the Service port's protocol decides: TCP to 9125 is refused
    assert answer(emu, syn(ip, 9125))[TCP].flags == "RA"
    # another UDP port: ICMP port unreachable (3/3), no DF (the ICMP socket's PMTUDISC_DONT)
    got = answer(emu, IP(dst=ip) / UDP(sport=41000, dport=9126) / b"x")
    assert (got[ICMP].type, got[ICMP].code) == (3, 3) and got.flags == 0
    # through the ClusterIP: the echo comes back from it
    vip = str(emu.model.service("default", "stats").cluster_ip)
    got = answer(emu, IP(dst=vip) / UDP(sport=41001, dport=8125) / b"m")
    assert got.src == vip and got[UDP].sport == 8125 and got[UDP].payload.load == b"m"


def test_icmp_echo_reply_has_no_df(backend: str) -> None:
    emu = web(backend)
    got = answer(emu, IP(dst=pod_ip(emu, "web"), flags="DF") / ICMP(id=7) / b"ping")
    assert got[ICMP].type == 0 and got.flags == 0  # icmp_reply: IP_PMTUDISC_DONT


def test_tcp_answers_keep_df(backend: str) -> None:
    emu = web(backend)
    ip = pod_ip(emu, "web")
    assert answer(emu, syn(ip, 8080)).flags == "DF"
    assert answer(emu, syn(ip, 1)).flags == "DF"


def test_listen_annotation(backend: str) -> None:
    d = deployment("ann", [{"name": "app"}], {"kemu.dev/listen": "8080, 9000/udp"})
    emu = cluster(backend, d, listen="declared")
    ip = pod_ip(emu, "ann")
    assert answer(emu, syn(ip, 8080))[TCP].flags == "SA"
    assert answer(emu, IP(dst=ip) / UDP(sport=41000, dport=9000) / b"u")[UDP].load == b"u"
    assert answer(emu, IP(dst=ip) / UDP(sport=41000, dport=8080) / b"u")[ICMP].type == 3
    d = deployment("ann", [{"name": "app"}], {"kemu.dev/listen": "all"})
    emu = cluster(backend, d, listen="declared")
    assert answer(emu, syn(pod_ip(emu, "ann"), 12345))[TCP].flags == "SA"


def test_udp_echo_annotation_still_echoes(backend: str) -> None:
    c = {"name": "app", "ports": [{"name": "echo", "containerPort": 5353, "protocol": "UDP"}]}
    emu = cluster(backend, deployment("e", [c], {"kemu.dev/udp-echo": "echo"}))
    got = answer(emu, IP(dst=pod_ip(emu, "e")) / UDP(sport=41000, dport=5353) / b"q")
    assert got[UDP].load == b"q"


def test_declared_udp_port_echoes(backend: str) -> None:
    c = {"name": "app", "ports": [{"containerPort": 5000, "protocol": "UDP"}]}
    emu = cluster(backend, deployment("e", [c]), listen="declared")
    got = answer(emu, IP(dst=pod_ip(emu, "e")) / UDP(sport=41000, dport=5000) / b"q")
    assert got[UDP].load == b"q"


def test_listen_parsing_and_problems() -> None:
    assert parse_listen("8080,9000/udp, 53/TCP") == (
        [("TCP", 53), ("TCP", 8080), ("UDP", 9000)], False)
    assert parse_listen("all") == ([], True)
    assert isinstance(parse_listen("http"), str) and isinstance(parse_listen(8080), str)
    with pytest.raises(KemuError, match=r"kemu.dev/listen.*'70000'"):
        kemu.load([NODES, deployment("x", [{"name": "a"}], {"kemu.dev/listen": "70000"})])
    with pytest.raises(KemuError, match=r"spec.listen"):
        kemu.load([{**NODES, "spec": {**NODES["spec"], "listen": "some"}}])


def test_listening_map_and_round_trip() -> None:
    from kemu.control.workloads import pod_to_dict

    c = {"name": "app", "readinessProbe": {"tcpSocket": {"port": 8081}}}
    emu = kemu.load([NODES, CLIENT, deployment("web", [c], {"kemu.dev/listen": "7/udp"}),
                     service("web", [{"port": 80, "targetPort": 8080}])])
    key = next(p.key for p in emu.model.pods if p.name.startswith("web"))
    assert listening_map(emu.model)[key].text() == "7/UDP,8080/TCP,8081/TCP"
    assert listening_map(emu.model)["default/client"].text() == "<none>"
    pod = emu.model.pod("default", key.split("/")[1])
    back = kemu.load([NODES, pod_to_dict(pod)]).model.pods[0]
    assert (back.listen, back.containers[0].probe_ports) == ([("UDP", 7)], [8081])
