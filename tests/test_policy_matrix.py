"""``kemu policy matrix``: the command, its outputs (text, JSON, CSV), ``--expect`` and its
errors, and the verdicts that are not policy (R: nothing listens; hostNetwork pods left out),
on both backends (P-1, P-2, P-7, P-9, P-12)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from kemu.control.cluster import load_cluster
from kemu.frontend.api import EmulatedCluster
from kemu.frontend.cli import main
from kemu.frontend.policy_cmd import Case, matrix, parse_expected

MODEL = Path(__file__).resolve().parent / "data" / "netpol" / "model.yaml"

DENY_PLUS_ALLOW = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
      ports: [{port: serve-80-tcp}]
"""

# x is isolated for ingress; x/a takes 80/TCP (named serve-80-tcp) from namespace y; a pod
# reaches itself over lo whatever the policies say (P-9)
EXPECTED_80 = """\
# deny-all in x plus allow-from-y to x/a on serve-80-tcp
80/TCP
-\tx/a\tx/b\ty/a
x/a\t.\tX\t.
x/b\tX\t.\t.
y/a\t.\tX\t.
"""


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(DENY_PLUS_ALLOW)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _model_subset(tmp_path: Path, pods: list[str]) -> Path:
    """The e2e model with only ``pods`` (upstream's initializeResources), as a file."""
    import yaml

    docs = list(yaml.safe_load_all(MODEL.read_text()))
    keep = [d for d in docs if d["kind"] != "Pod"
            or f"{d['metadata']['namespace']}/{d['metadata']['name']}" in pods]
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump_all(keep))
    return path


def test_text_table_and_expect_equal(tmp_path: Path, policies: Path, backend: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_subset(tmp_path, ["x/a", "x/b", "y/a"])
    expect = tmp_path / "expected.txt"
    expect.write_text(EXPECTED_80)
    code, out, err = _run(capsys, "policy", "matrix", "-f", str(model), "-f", str(policies),
                          "--ports", "80", "--protocols", "tcp", "--backend", backend,
                          "--expect", str(expect))
    assert (code, err) == (0, "")
    assert out.splitlines()[2:] == ["80/TCP", "-\tx/a\tx/b\ty/a", "x/a\t.\tX\t.",
                                    "x/b\tX\t.\t.", "y/a\t.\tX\t."]


def test_expect_difference_exits_1_naming_cells(tmp_path: Path, policies: Path, backend: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_subset(tmp_path, ["x/a", "x/b", "y/a"])
    expect = tmp_path / "expected.txt"
    # claims y/a -> x/b allowed and says nothing of 81/TCP
    expect.write_text(EXPECTED_80.replace("y/a\t.\tX\t.", "y/a\t.\t.\t."))
    code, out, _err = _run(capsys, "policy", "matrix", "-f", str(model), "-f", str(policies),
                           "--ports", "80,81", "--protocols", "tcp", "--backend", backend,
                           "--expect", str(expect))
    assert code == 1
    tail = out[out.index("cells differ"):]
    assert "80/TCP y/a -> x/b: expected ., got X (denied ingress by x/allow-from-y, " \
           "x/deny-all)" not in tail  # x/b is not selected by allow-from-y
    assert "80/TCP y/a -> x/b: expected ., got X (denied ingress by x/deny-all)" in tail
    assert "81/TCP: no expected table (have: 80/TCP)" in tail


def test_table_without_case_line_holds_for_every_case(tmp_path: Path, backend: str,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    model = _model_subset(tmp_path, ["x/a", "y/a"])
    expect = tmp_path / "all.txt"
    expect.write_text("-\tx/a\ty/a\nx/a\t.\t.\ny/a\t.\t.\n")
    code, _out, _err = _run(capsys, "policy", "matrix", "-f", str(model), "--backend", backend,
                            "--expect", str(expect))
    assert code == 0


def test_json_and_csv_records(tmp_path: Path, policies: Path, backend: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_subset(tmp_path, ["x/a", "x/b", "y/a"])
    code, out, _ = _run(capsys, "policy", "matrix", "-f", str(model), "-f", str(policies),
                        "--backend", backend, "-o", "json")
    assert code == 0
    records = json.loads(out)
    assert len(records) == 3 * 3 * 4  # from x to x 80/81 TCP/UDP
    by = {(r["from"], r["to"], r["port"], r["protocol"]): r for r in records}
    denied = by[("y/a", "x/b", 80, "TCP")]
    assert (denied["verdict"], denied["direction"], denied["denied_by"]) == \
        ("denied", "ingress", ["x/deny-all"])
    # x/a is selected by both: the deny names every policy isolating it (Hubble's *_denied_by)
    assert by[("y/a", "x/a", 81, "TCP")]["denied_by"] == ["x/allow-from-y", "x/deny-all"]
    assert by[("y/a", "x/a", 80, "TCP")]["verdict"] == "allowed"
    assert by[("y/a", "x/a", 80, "UDP")]["verdict"] == "denied"  # the named port is TCP
    # the JSON output is an --expect file as it is
    expect = tmp_path / "expected.json"
    expect.write_text(out)
    code, _, _ = _run(capsys, "policy", "matrix", "-f", str(model), "-f", str(policies),
                      "--backend", backend, "--expect", str(expect), "-o", "csv")
    assert code == 0
    code, out, _ = _run(capsys, "policy", "matrix", "-f", str(model), "-f", str(policies),
                        "--backend", backend, "-o", "csv", "--ports", "80",
                        "--protocols", "tcp")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 9
    assert {(r["from"], r["to"], r["verdict"], r["denied_by"]) for r in rows
            if r["verdict"] == "denied"} == {("x/a", "x/b", "denied", "x/deny-all"),
                                             ("x/b", "x/a", "denied",
                                              "x/allow-from-y x/deny-all"),
                                             ("y/a", "x/b", "denied", "x/deny-all")}


def test_refused_is_not_denied(backend: str) -> None:
    """A port nothing listens on answers RST / ICMP port unreachable: R, whatever policies
    say; a deny still wins where the policy drops first."""
    emu = EmulatedCluster(load_cluster(MODEL, DENY_PLUS_ALLOW_DOCS()), backend=backend)
    m, _ = matrix(emu, ports=[9999], protocols=["TCP", "UDP"], pods=["x/a", "y/a"])
    marks = {(s, d, c.text()): m.mark(s, d, c) for (s, d, c) in m.results}
    assert marks[("x/a", "y/a", "9999/TCP")] == "R"   # y is not isolated: RST
    assert marks[("x/a", "y/a", "9999/UDP")] == "R"   # ICMP port unreachable
    assert marks[("y/a", "x/a", "9999/TCP")] == "X"   # x/a isolated: dropped before the stack
    assert marks[("x/a", "x/a", "9999/UDP")] == "R"   # its own lo, no listener


def DENY_PLUS_ALLOW_DOCS() -> list[dict]:  # noqa: N802 - a constant made fresh each time
    import yaml

    return list(yaml.safe_load_all(DENY_PLUS_ALLOW))


def test_probes_use_fresh_tuples(backend: str) -> None:
    """A second matrix on the same running cluster is judged afresh (new source ports): a
    deny applied in between shows, conntrack of the first probes notwithstanding."""
    emu = EmulatedCluster(load_cluster(MODEL), backend=backend)
    first, _ = matrix(emu, ports=[80], protocols=["TCP"], pods=["x/a", "y/a"])
    assert {r.mark for r in first.results.values()} == {"."}
    emu.apply(DENY_PLUS_ALLOW_DOCS()[0])
    second, _ = matrix(emu, ports=[80], protocols=["TCP"], pods=["x/a", "y/a"])
    assert second.mark("y/a", "x/a", Case(80, "TCP")) == "X"
    assert second.mark("x/a", "y/a", Case(80, "TCP")) == "."


def test_hostnetwork_pods_and_sctp_left_out(tmp_path: Path, backend: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("""\
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: x}
spec:
  hostNetwork: true
  nodeName: node1
  containers: [{name: c, ports: [{containerPort: 9100}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: sctp, namespace: y}
spec:
  nodeName: node2
  containers: [{name: c, ports: [{containerPort: 7777, protocol: SCTP}]}]
""")
    code, out, err = _run(capsys, "policy", "matrix", "-f", str(MODEL), "-f", str(extra),
                          "--namespaces", "x,y", "--backend", backend)
    assert code == 0
    assert "x/agent" not in out
    assert "y/sctp" in out.splitlines()[3]
    assert "7777" not in out
    assert err == "kemu: warning: SCTP containerPorts are not probed: kemu models no SCTP " \
                  "stack\n"


@pytest.mark.parametrize("argv, message", [
    (["--namespaces", "x,nope"], "kemu: --namespaces: no namespace nope (have: "),
    (["--protocols", "sctp"], "sctp cannot be probed"),
    (["--ports", "0"], "--ports: '0' is not a port 1..65535"),
    (["--expect", "/nonexistent/table.txt"], "kemu: --expect /nonexistent/table.txt: "),
])
def test_bad_input_exit_2_one_line(argv: list[str], message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run(capsys, "policy", "matrix", "-f", str(MODEL), *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text, message", [
    ("x/a\t.\n", "t.txt:1: a row before the table's header line"),
    ("-\tx/a\tx/b\nx/a\t.\n", "t.txt:2: row x/a has 1 cells, the header names 2 pods"),
    ("-\tx/a\nx/a\tY\n", "t.txt:2: cell x/a -> x/a is 'Y': expected one of . X R ?"),
    ("# nothing\n", "t.txt: no table"),
    ("80/TCP\n-\tx/a\nx/a\t.\n80/tcp\n", "t.txt:4: a second table for 80/TCP"),
    ("[{\"from\": \"x/a\"}]", "t.txt: record 0: needs from, to, port, protocol and verdict"),
    ("[{\"from\": \"x/a\", \"to\": \"x/a\", \"port\": 80, \"protocol\": \"TCP\", "
     "\"verdict\": \"maybe\"}]", "t.txt: record 0: verdict 'maybe' is not one of"),
])
def test_expected_table_errors(text: str, message: str) -> None:
    from kemu.errors import KemuError

    with pytest.raises(KemuError, match=None) as err:
        parse_expected(text, "t.txt")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_policy_without_subcommand_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run(capsys, "policy")
    assert code == 2
    assert "matrix" in err
