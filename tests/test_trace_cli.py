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
    assert rc == (1 if name in ("no-endpoints", "ttl-expiry") else 0)


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
    first = data["packets"][0]
    assert first["outcome"] == "DELIVERED"
    assert {"node", "component", "action", "detail", "interface"} <= set(
        first["observations"][0])
    assert data["packets"][1]["origin"] == "answer"


@pytest.mark.parametrize("args,message", [
    (["-S", "default/nobody", "-D", "default/a"], "unknown source"),
    (["-S", "default/a", "-D", "default/nothing"], "-D default/nothing"),
    (["-S", "default/a", "-D", "default/c", "-p", "gre"], "protocol must be"),
    (["-S", "default/a", "-D", "default/c", "-p", "tcp,dport=x"], "dport must be a number"),
])
def test_bad_arguments_exit_2(args: list[str], message: str,
                              capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", "-f", str(SCENARIO), *args]) == 2
    assert message in capsys.readouterr().err
