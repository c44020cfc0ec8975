"""The CLI: ``validate`` and ``show`` (against golden files), exit codes, ``--version``.

Golden files live in ``tests/golden/``; they are exactly what ``kemu show`` prints. After a
deliberate change, regenerate them with ``KEMU_UPDATE_GOLDEN=1 pytest tests/test_cli_show.py``
and review the diff before committing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kemu.control import load_cluster
from kemu.frontend import cli, show
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KEMU_UPDATE_GOLDEN") == "1"
BAD = Path("tests") / "data" / "manifests" / "bad"


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths in outputs (``source``) are the ones given on the command line: relative."""
    monkeypatch.chdir(ROOT)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with KEMU_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"output differs from {path}"


# --- golden files ------------------------------------------------------------------------------

CASES = [(r, o) for r in ("nodes", "pods", "services", "endpoints", "dns", "listeners")
         for o in show.OUTPUTS]


@pytest.mark.parametrize("resource, output", CASES, ids=[f"{r}-{o}" for r, o in CASES])
def test_show_example_matches_golden(capsys, resource: str, output: str) -> None:
    code, out, err = run(capsys, "show", "-f", "examples/cluster", resource, "-A", "-o", output)
    assert (code, err) == (0, "")
    check_golden(f"example-{resource}-{output}.txt", out)


@pytest.mark.parametrize("output", show.OUTPUTS)
def test_show_routes_matches_golden(capsys, output: str) -> None:
    code, out, err = run(capsys, "show", "-f", "examples/cluster", "routes", "-o", output)
    assert (code, err) == (0, "")
    check_golden(f"example-routes-{output}.txt", out)


@pytest.mark.parametrize("resource", ["nodes", "pods", "services", "endpoints"])
def test_show_dump_matches_golden(capsys, resource: str) -> None:
    code, out, _ = run(capsys, "show", "-f", "examples/dump", resource, "-A", "-o", "wide")
    assert code == 0
    check_golden(f"dump-{resource}-wide.txt", out)


def test_golden_json_is_the_matching_part_of_to_dict(capsys) -> None:
    data = load_cluster("examples/cluster").to_dict()
    for resource, key in (("pods", "pods"), ("services", "services"),
                          ("endpoints", "endpoint_slices"), ("nodes", "nodes")):
        golden = json.loads((GOLDEN / f"example-{resource}-json.txt").read_text())
        assert golden == {key: data[key]}
        assert yaml.safe_load((GOLDEN / f"example-{resource}-yaml.txt").read_text()) == golden


# --- tables --------------------------------------------------------------------------------------

def test_default_namespace_and_dash_n(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "pods")
    assert out.splitlines() == ["NAME     READY   STATUS    IP           NODE",
                                "client   1/1     Running   10.244.0.2   node1"]
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "svc", "-n", "shop")
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                                           "PORT(S)"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["backend", "frontend",
                                                                  "legacy", "redis"]


def test_service_columns_like_kubectl(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "services", "-n", "shop")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["frontend"] == ["frontend", "NodePort", "10.96.0.12", "<none>", "80:30080/TCP"]
    assert rows["redis"] == ["redis", "ClusterIP", "None", "<none>", "6379/TCP"]


def test_endpoints_table_truncates_like_kubectl(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "endpoints", "-n", "kube-system")
    assert out.splitlines()[1] == ("kube-dns   10.244.1.2:53,10.244.2.2:53,10.244.1.2:9153 + 1 "
                                   "more...")
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "ep", "-n", "shop")
    assert "legacy     <none>" in out.splitlines()


def test_dns_narrowed_to_a_namespace(capsys) -> None:
    _, out, _ = run(capsys, "show", "-f", "examples/cluster", "dns", "-n", "kube-system")
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert "kube-dns.kube-system.svc.cluster.local." in names
    assert "10.0.96.10.in-addr.arpa." in names  # its PTR points into the namespace
    assert not any(".shop." in n or n.startswith("dns-version") for n in names)


def test_route_lines_like_ip_route() -> None:
    from ipaddress import IPv4Address, IPv4Network

    class R:  # the shape kemu.compiler.routes.Route has
        def __init__(self, prefix: str, dev: str, via: str | None = None,
                     src: str | None = None, proto: str = "static", onlink: bool = False):
            self.prefix, self.dev = IPv4Network(prefix), dev
            self.proto, self.onlink = proto, onlink
            self.via = IPv4Address(via) if via else None
            self.src = IPv4Address(src) if src else None

    text = show.render_route_table({"node1": [
        R("10.244.0.0/24", "cbr0", src="10.244.0.1", proto="kernel"),
        R("10.244.1.0/24", "flannel.1", via="10.244.1.0", onlink=True),
        R("0.0.0.0/0", "eth0", via="172.18.0.1")]})
    assert text.splitlines() == [
        "node1  10.244.0.0/24 dev cbr0 proto kernel scope link src 10.244.0.1",
        "node1  10.244.1.0/24 via 10.244.1.0 dev flannel.1 proto static onlink",
        "node1  default via 172.18.0.1 dev eth0 proto static"]


def test_table_alignment() -> None:
    assert show.table(["A", "BB"], [["xxx", "y"], ["z", ""]]) == "A     BB\nxxx   y\nz\n"


# --- validate and exit codes ---------------------------------------------------------------

def test_validate_ok(capsys) -> None:
    code, out, err = run(capsys, "validate", "-f", "examples/cluster")
    assert (code, err) == (0, "")
    assert out == ("ok: 3 nodes, 10 pods, 5 services, 4 endpoint slices, 0 network policies\n")


def test_validate_lists_ignored_objects(capsys) -> None:
    code, out, _ = run(capsys, "validate", "-f", "examples/dump")
    assert code == 0
    assert out.splitlines()[0] == ("ok: 3 nodes, 5 pods, 4 services, 4 endpoint slices, 0 "
                                   "network policies (ignored: 3 objects)")
    assert out.splitlines()[1] == ("  examples/dump/cluster-dump.yaml: web/ConfigMap/"
                                   "kube-root-ca.crt ignored (ConfigMap is not modelled)")


def test_validate_invalid_manifests_exit_2_with_every_problem(capsys) -> None:
    code, out, err = run(capsys, "validate", "-f", str(BAD / "web.yaml"), "-f",
                         str(BAD / "conflicts.yaml"))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"kemu: {BAD / 'web.yaml'}: shop/Service/web: spec.ports[0].targetPort: 'htp' matches "
        "no TCP containerPort of the pods it selects",
        f"kemu: {BAD / 'conflicts.yaml'}: default/Pod/a: spec.containers[1].ports[0]: port "
        "8080/TCP of container 'sidecar' is already declared by container 'app' (containers "
        "of a pod share one network namespace, M-4)",
        f"kemu: {BAD / 'conflicts.yaml'}: default/Service/two: spec.ports[0].port: expected an "
        "integer, got a string ('eighty')",
        f"kemu: {BAD / 'conflicts.yaml'}: default/Pod/b: status.podIP: 10.244.0.9 is already "
        "used by default/Pod/a",
        f"kemu: {BAD / 'conflicts.yaml'}: default/Service/two: spec.clusterIP: 10.96.5.5 is "
        "already used by default/Service/one",
    ]


def test_bad_yaml_exit_2(capsys) -> None:
    code, _, err = run(capsys, "show", "-f", str(BAD / "syntax.json"), "pods")
    assert (code, err) == (2, f"kemu: {BAD / 'syntax.json'}: line 4: Expecting ',' delimiter "
                              "(column 3)\n")


def test_unreadable_path_exit_2(capsys) -> None:
    code, out, err = run(capsys, "show", "-f", "no/such/dir", "pods")
    assert (code, out, err) == (2, "", "kemu: no/such/dir: No such file or directory\n")


@pytest.mark.parametrize("argv", [[], ["show", "pods"], ["show", "-f", "examples/cluster"],
                                  ["show", "-f", "examples/cluster", "volumes"],
                                  ["show", "-f", "x", "pods", "-n", "a", "-A"],
                                  ["show", "-f", "x", "pods", "-o", "xml"], ["nope"]])
def test_usage_errors_exit_2(capsys, argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage: kemu" in err


def test_help_exits_0(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "validate" in out and "show" in out


def test_keyboard_interrupt_exits_130(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load", interrupted)
    code, _, err = run(capsys, "validate", "-f", "examples/cluster")
    assert (code, err) == (130, "kemu: interrupted\n")


def test_version_names_the_backend(capsys) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    from kemu import _backend

    assert out == f"kemu 0.1.0 (backend: {_backend.BACKEND})\n"


def test_python_dash_m_kemu() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kemu", "validate", "-f", "examples/cluster"],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("ok: 3 nodes, 10 pods")
    proc = subprocess.run([sys.executable, "-m", "kemu", "validate", "-f", "missing"],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert (proc.returncode, proc.stderr) == (2, "kemu: missing: No such file or directory\n")


def test_commands_come_from_the_table() -> None:
    assert cli.COMMANDS[:2] == ["kemu.frontend.cli:VALIDATE", "kemu.frontend.show:SHOW"]
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"validate", "show"}  # type: ignore[arg-type]


def test_a_command_alone_gets_its_own_parser_only() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(cli.NAMES)  # type: ignore[arg-type]
    for name in cli.NAMES:
        only = cli.build_parser(name)
        sub = next(a for a in only._actions if a.dest == "command")
        assert list(sub.choices) == [name]  # type: ignore[arg-type]
