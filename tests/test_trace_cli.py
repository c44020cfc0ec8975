"""``kemu trace``: observations grouped by node, exit codes, stable ``--minimal`` goldens."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "data" / "scenario"
GOLDEN = ROOT / "tests" / "golden" / "trace"

CASES = {
    "clusterip-remote": ["-S", "default/a", "-D", "default/svc-c"],
    "clusterip-local": ["-S", "default/a", "-D", "default/svc-b"],
    "hairpin": ["-S", "default/a", "-D", "default/svc-a"],
    "no-endpoints": ["-S", "default/a", "-D", "default/svc-none"],
    "nodeport": ["-S", "ext/client", "-D", "172.18.0.2", "-p", "tcp,dport=30081"],
    "dns-udp": ["-S", "default/a", "-D", "10.96.0.21", "-p", "udp,dport=53"],
    "pod-to-pod-icmp": ["-S", "default/a", "-D", "default/d", "-p", "icmp"],
    "ttl-expiry": ["-S", "default/a", "-D", "default/c", "-p", "udp,dport=9,ttl=1"],
    "closed-port": ["-S", "default/a", "-D", "default/c", "-p", "tcp,dport=1"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_minimal_golden(name: str, backend: str, capsys: pytest.CaptureFixture) -> None:
    rc = main(["trace", "-f", str(SCENARIO), *CASES[name], "--minimal", "--backend", backend])
    out = capsys.readouterr().out
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("KEMU_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()
    assert rc == (1 if name in ("no-endpoints", "ttl-expiry", "closed-port") else 0)


def test_summary_groups_by_node(capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", "-f", str(SCENARIO), "-S", "default/a", "-D", "default/svc-c"]) == 0
    out = capsys.readouterr().out
    assert "  node1\n" in out and "  node2\n" in out
    assert "LB         Forwarded DNAT 10.96.0.22:80 -> 10.244.1.2:8080" in out
    assert "Routing    Forwarded route 10.244.1.0/24 via 172.18.0.3 dev eth0" in out
    assert "Forwarding Delivered deliver to pod default/c" in out


def test_rejected_action(capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", "-f", str(SCENARIO), "-S", "default/a", "-D", "default/svc-none",
                 "--no-respond"]) == 1
    assert "LB         Rejected  DROP no endpoints (REJECT)" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_machine_readable(fmt: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", "-f", str(SCENARIO), "-S", "default/a", "-D", "default/svc-c",
                 "-o", fmt]) == 0
    out = capsys.readouterr().out
    data = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert data["reachable"] is True
    assert data["reason"] == "connection established (SYN-ACK from 10.96.0.22:80, pod default/c)"
    assert list(data)[:2] == ["reachable", "reason"]
    first = data["packets"][0]
    assert first["outcome"] == "DELIVERED"
    assert {"node", "component", "action", "detail", "interface"} <= set(
        first["observations"][0])
    assert data["packets"][1]["origin"] == "answer"


@pytest.mark.parametrize("args,message", [
    (["-S", "default/nobody", "-D", "default/a"], "unknown source"),
    (["-S", "default/a", "-D", "default/nothing"], "unknown destination 'default/nothing'"),
    (["-S", "default/a", "-D", "default/c", "-p", "gre"], "protocol must be"),
    (["-S", "default/a", "-D", "default/c", "-p", "tcp,dport=x"], "dport must be a number"),
    (["-S", "198.51.100.7", "-D", "default/c"], "is an external host of the Cluster document"),
])
def test_bad_arguments_exit_2(args: list[str], message: str,
                              capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", "-f", str(SCENARIO), *args]) == 2
    assert message in capsys.readouterr().err


EXAMPLE = ROOT / "examples" / "cluster"
BACKEND_POD = "shop/backend-hdjlqw9kdn-gxszb"  # on node2, listens on 9090
# on node2 too, and selected by no NetworkPolicy (the backend's allow only its grpc port)
FRONTEND_POD = "shop/frontend-tt4zl4844t-qz7l7"
REACH = {  # name: (arguments, exit code, the reason's words)
    "pod-to-service": (["-S", "default/client", "-D", "shop/backend"], 0,
                       "connection established (SYN-ACK from 10.96.0.11:9090, pod shop/backend-"),
    "service-without-endpoints": (["-S", "default/client", "-D", "shop/legacy"], 1,
                                  "unreachable (ICMP port unreachable from 10.244.0.1, node "
                                  "node1); dropped on node1: no endpoints (REJECT)"),
    "tcp-closed-port": (["-S", "default/client", "-D", FRONTEND_POD, "-p", "tcp,dport=1"], 1,
                        f"connection refused (RST from 10.244.1.4:1, pod {FRONTEND_POD})"),
    "icmp-echo": (["-S", "default/client", "-D", FRONTEND_POD, "-p", "icmp"], 0,
                  f"answered (echo reply from 10.244.1.4, pod {FRONTEND_POD})"),
    "policy-denied": (["-S", "default/client", "-D", BACKEND_POD, "-p", "tcp,dport=1"], 1,
                      f"denied by NetworkPolicy on node2: ingress of {BACKEND_POD} (selected "
                      "by shop/backend-grpc; no rule allows 10.244.0.2:40000 -> 1/TCP)"),
    "dns": (["-S", "default/client", "-D", "kube-system/kube-dns", "-p", "udp,dport=53"], 0,
            "answered (DNS answer from 10.96.0.10:53, pod kube-system/coredns-"),
    "udp-closed-port": (["-S", "default/client", "-D", FRONTEND_POD, "-p", "udp,dport=9"], 1,
                        f"unreachable (ICMP port unreachable from 10.244.1.4, pod {FRONTEND_POD})"),
    "pod-to-external-host": (["-S", "default/client", "-D", "ext/db"], 0,  # masqueraded
                             "connection established (SYN-ACK from 172.18.0.200:5432, "
                             "external host db)"),
    "request-leaves": (["-S", "default/client", "-D", "8.8.8.8"], 1,
                       "no answer: the packet left the cluster through the gateway (to 8.8.8.8)"),
    "no-respond": (["-S", "default/client", "-D", "shop/backend", "--no-respond"], 1,
                   "no answer: delivered to pod shop/backend-hdjlqw9kdn-cmtwh; the emulated "
                   "stacks do not answer (--no-respond)"),
    "nodeport-from-outside": (["-S", "ext/client", "-D", "node2", "-p", "tcp,dport=30080"], 0,
                              "connection established (SYN-ACK from 172.18.0.3:30080, pod "
                              "shop/frontend-"),
    "node-to-pod": (["-S", "node1", "-D", "shop/frontend"], 0,
                    "connection established (SYN-ACK from 10.96.0.12:80, pod shop/frontend-"),
    "tcp-ack-unanswered": (["-S", "default/client", "-D", "shop/backend", "-p",
                            "tcp,flags=A"], 1, "no answer: delivered to pod shop/backend-"),
}


@pytest.mark.parametrize("name", sorted(REACH))
def test_exit_code_answers_can_a_reach_b(name: str, backend: str,
                                         capsys: pytest.CaptureFixture) -> None:
    args, code, reason = REACH[name]
    for level in ("--minimal", "--summary", "--detailed"):
        assert main(["trace", "-f", str(EXAMPLE), *args, level, "--backend", backend]) == code
        last = capsys.readouterr().out.splitlines()[-1]
        assert last.startswith(f"result: {reason}"), last
    assert main(["trace", "-f", str(EXAMPLE), *args, "-o", "json", "--backend", backend]) == code
    data = json.loads(capsys.readouterr().out)
    assert data["reachable"] is (code == 0)
    assert data["reason"].startswith(reason)


def test_an_answer_that_leaves_the_cluster_is_no_answer(backend: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Without egress masquerade (``spec.masquerade.enabled: false``) the external host
    answers the pod's own address through its default route, the gateway: in host-gw
    mode the gateway routes the pod CIDR to its node (the connection completes); in VXLAN
    mode pod CIDRs are not routable on the node network and the gateway's default route
    takes the answer out of the cluster: exit 1."""
    import shutil

    cluster = tmp_path / "cluster"
    shutil.copytree(EXAMPLE, cluster)
    doc = cluster / "cluster.yaml"
    text = doc.read_text()
    assert "masquerade: {enabled: true, randomFully: true}" in text
    text = text.replace("masquerade: {enabled: true, randomFully: true}",
                        "masquerade: {enabled: false}")
    doc.write_text(text)
    assert main(["trace", "-f", str(cluster), "-S", "default/client", "-D", "ext/db",
                 "--backend", backend]) == 0
    capsys.readouterr()
    assert "mode: host-gw" in text
    doc.write_text(text.replace("mode: host-gw", "mode: vxlan"))
    assert main(["trace", "-f", str(cluster), "-S", "default/client", "-D", "ext/db",
                 "--backend", backend]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == ("result: no answer reached the sender (the SYN-ACK from 172.18.0.200:5432, "
                    "external host db, left the cluster through the gateway)"), last


def test_verdict_in_the_api() -> None:
    from scapy.layers.inet import IP, TCP

    import kemu

    cluster = kemu.load(str(EXAMPLE))
    trace = cluster.send(IP(dst="10.96.0.11") / TCP(dport=9090, flags="S"),
                         src="default/client")
    assert trace.verdict().reachable
    # a source address nobody in the cluster owns: the answer leaves through the gateway
    # (to a frontend pod: the backend's NetworkPolicy admits no address outside the cluster)
    trace = cluster.send(IP(src="203.0.113.9", dst="10.244.1.4") / TCP(sport=5, dport=8080),
                         src="default/client")
    v = trace.verdict()
    assert not v.reachable and "left the cluster through the gateway" in v.reason
