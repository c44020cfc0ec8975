"""``kemu tour`` (issue #22): every step runs and its claims hold on both backends; the claims
are checked against the traces (a trace that does not show them fails the step, exit 1);
each printed command sends the same packet again along the same path; docs/tour.md is the
steps' own Markdown; outputs are new files only; bad input is one line, exit 2.

Behaviours the steps show: M-4 (pod-localhost), L2 learning and M-5 (same-node), R-* and OV-1
(host-gw, VXLAN and its MTU), S-* and S-12 (ClusterIP, readiness), D-10 (DNS), S-9 (NodePort,
LoadBalancer, externalTrafficPolicy Local), P-1/P-2 (NetworkPolicy).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from scapy.utils import RawPcapNgReader

from kemu.control import cni
from kemu.frontend import tour, tour_cmd, tour_steps
from kemu.frontend.cli import main
from kemu.io.capture import read_capture

ROOT = Path(__file__).resolve().parents[1]
STEPS = {s.name: s for s in tour_steps.STEPS}


@pytest.fixture(scope="module")
def runs() -> dict[str, tour.StepRun]:
    """Every step run once on the default backend (the commands and outputs tests)."""
    return {name: tour_steps.run_step(s, shown=s.cluster) for name, s in STEPS.items()}


@pytest.mark.parametrize("name", list(STEPS))
def test_every_step_passes_its_checks(backend: str, name: str) -> None:
    run = tour_steps.run_step(STEPS[name], backend, shown=STEPS[name].cluster)
    failed = [(x.title, e.claim) for x in run.exchanges for e, ok in x.results() if not ok]
    assert failed == []
    assert run.passed
    assert all(x.expects for x in run.exchanges), "every exchange claims something"
    assert sum(len(x.traces) for x in run.exchanges) >= 1


def test_both_backends_tell_the_same_story() -> None:
    from kemu._backend import IMPLEMENTATIONS

    if len(IMPLEMENTATIONS) < 2:
        pytest.skip("one backend in this build")
    for name, step in STEPS.items():
        texts = {tour.report(step, tour_steps.run_step(step, b, shown=step.cluster))
                 for b in sorted(IMPLEMENTATIONS)}
        assert len(texts) == 1, name


def test_a_claim_the_trace_does_not_show_fails_the_step(runs) -> None:
    """The checks can fail: the ClusterIP step's claims against the egress step's trace
    (no DNAT, no un-DNAT, no answer), and the absence claims against a trace that has it."""
    clusterip = runs["clusterip"].exchanges[0]
    other = replace(clusterip, traces=runs["egress"].exchanges[0].traces, extra_facts=[])
    results = dict((e.claim, ok) for e, ok in other.results())
    assert results["DNAT to a backend of shop/backend"] is False
    assert results["the connection is established"] is False
    lb = runs["loadbalancer-local"].exchanges[0]
    masq = replace(lb, traces=runs["nodeport"].exchanges[0].traces)
    assert dict((e.claim, ok) for e, ok in masq.results())["no masquerade"] is False
    run = tour.StepRun(runs["clusterip"].emu, "x", [other])
    assert not run.passed


def test_a_failing_step_exits_1(monkeypatch, tmp_path, capsys) -> None:
    step = STEPS["egress"]

    def wrong(ctx: tour_steps.Ctx) -> tour.StepRun:
        run = step.run(ctx)
        run.exchanges[0].expects.append(tour.expect("it is DNATed", "dnat"))
        return run

    monkeypatch.setattr(tour_steps, "STEPS", [replace(step, run=wrong)])
    assert main(["tour", "egress", "-o", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "  FAIL it is DNATed" in out and out.endswith("step egress: FAILED\n")


def _path(packets: list[dict]) -> list[list[tuple[str, str, tuple[str, ...]]]]:
    return [[(h["interface"], h["direction"], tuple(h["decisions"])) for h in p["hops"]]
            for p in packets]


def _hops(x: tour.Exchange) -> list[tuple[str, str]]:
    """(device, decisions) of every hop of ``x`` that a pcapng holds, in order."""
    from kemu.dataplane import codes as C
    from kemu.frontend.trace import hop_decisions

    out = []
    for tr in x.traces:
        t = tr.tables
        for p in tr.packets:
            for iface, _d, data, events in p.hops:
                if int(t.if_kind[iface]) != C.IF_NODE_LOCAL:
                    out.append((t.if_name[iface], "; ".join(
                        w for e, w in hop_decisions(t, data, events)
                        if e[0] not in (C.EV_TTL, C.EV_FIXL2))))
    return out


def test_printed_commands_rerun_the_same_path(runs, capsys, monkeypatch, tmp_path) -> None:
    """Each exchange's command (``kemu trace``, ``kemu dig``, ``kemu replay``, ``kemu
    validate``) run as printed, from the repository: the same packets along the same hops
    with the same decisions, and the exit code of the same verdict."""
    monkeypatch.chdir(ROOT)
    checked = 0
    for name, run in runs.items():
        folder = str(tmp_path / name)
        os.makedirs(folder)
        tour.write_outputs(STEPS[name], run, folder)
        for x in run.exchanges:
            argv = tour.rerun_argv(STEPS[name], x, folder)
            if argv is None:
                assert x.rerun_note, (name, x.title)
                continue
            capsys.readouterr()
            if argv[0] == "replay":
                assert main(argv) == 0
                out = argv[argv.index("-w") + 1]
                with RawPcapNgReader(out) as reader:
                    got = [(meta.ifname.decode(), b"".join(meta.comments or []).decode())
                           for _d, meta in reader]
                assert got == _hops(x), (name, x.title)
            elif x.rerun[0] == "trace":
                code = main([*x.rerun, "-o", "json"])
                data = json.loads(capsys.readouterr().out)
                (tr,) = x.traces
                assert _path(data["packets"]) == _path(tr.to_dict()["packets"]), (name, x.title)
                assert code == (0 if tr.verdict().reachable else 1)
                assert data["reason"] == tr.verdict().reason
            elif x.rerun[0] == "dig":
                code = main([*x.rerun, "-o", "json"])
                data = json.loads(capsys.readouterr().out)
                got = [(q["name"], q["status"], q["answeredBy"]) for q in data["queries"]]
                want = [(f.get("qname"), f.get("status"), f.get("answered_by"))
                        for f in x.extra_facts if f.kind == "dns"]
                assert (code, got) == (0, want)
            else:
                assert x.rerun[0] == "validate"
                assert main(x.rerun) == 2
                assert "M-4" in capsys.readouterr().err
            checked += 1
    assert checked >= 15


def test_commands_name_the_cluster_as_the_user_reaches_it(monkeypatch, tmp_path) -> None:
    """From the repository: its relative path; from elsewhere: the absolute one."""
    step = STEPS["egress"]
    monkeypatch.chdir(ROOT)
    assert tour_steps.run_step(step).exchanges[0].rerun[2] == "examples/cluster"
    monkeypatch.chdir(tmp_path)
    assert tour_steps.run_step(step).exchanges[0].rerun[2] == str(ROOT / "examples/cluster")


def test_narrative_comes_from_the_trace(runs) -> None:
    """Each hop with a decision gets a sentence naming what the trace recorded: the VXLAN
    outer header, the route, the DNAT's endpoint; the pcapng comments carry the same
    decisions."""
    x = runs["cross-node-vxlan"].exchanges[0]
    text = "\n".join(tour.narrative(x))
    encap = next(f for f in x.facts() if f.kind == "encap")
    assert encap.get("outer") in text
    route = next(f for f in x.facts() if f.kind == "route")
    assert route.get("route") in text
    assert text.splitlines()[-1] == f"result: {x.traces[0].verdict().reason}"
    x = runs["clusterip"].exchanges[0]
    dnat = next(f for f in x.facts() if f.kind == "dnat")
    assert f"pick the endpoint {dnat.get('backend')} (pod {dnat.get('backend_pod')})" in \
        "\n".join(tour.narrative(x))
    # a hop whose decisions are all quiet (TTL, L2 fix-up) says nothing
    for line in tour.narrative(x):
        assert not line.endswith(": ")


def test_list_shows_steps_and_coming_cni_modes(capsys) -> None:
    assert main(["tour"]) == 0
    out = capsys.readouterr().out
    for n, s in enumerate(tour_steps.STEPS, 1):
        assert f"{n:>3}. {s.name}" in out
    for name in cni.NAMES:
        if name in cni.BUILT:
            assert f"cni-{name}" in STEPS, f"CNI {name} is built: the tour needs its step"
        else:
            assert f"cni-{name}" in out and "not modelled yet" in out
    assert [c.name for c in tour_steps.coming()] == [
        f"cni-{n}" for n in cni.NAMES if n not in cni.BUILT]


def test_coming_follows_cni_built(monkeypatch) -> None:
    """A mode becomes built: it leaves the coming list, or is listed as missing its step."""
    monkeypatch.setattr(cni, "BUILT", frozenset({"flannel", "cilium"}))
    monkeypatch.setattr(tour_steps, "STEPS",
                        [s for s in tour_steps.STEPS if s.name != "cni-cilium"])
    soon = {c.name: c.why for c in tour_steps.coming()}
    assert soon["cni-cilium"] == "built, but its tour step is not written yet"


def test_a_coming_step_is_refused_in_one_line(capsys, monkeypatch) -> None:
    """A CNI mode not built (every one is today: pretend antrea is not) is listed as coming
    and `kemu tour cni-antrea` says so in one line, exit 2."""
    monkeypatch.setattr(cni, "BUILT", cni.BUILT - {"antrea"})
    monkeypatch.setattr(tour_steps, "STEPS",
                        [s for s in tour_steps.STEPS if s.name != "cni-antrea"])
    assert main(["tour", "cni-antrea"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tour step cni-antrea is coming" in err


@pytest.mark.parametrize(("argv", "words"), [
    (["tour", "nope"], "unknown tour step 'nope'"),
    (["tour", "99"], "unknown tour step '99'"),
    (["tour", "1", "--all"], "give a step or --all, not both"),
    (["tour", "--markdown", "1"], "--markdown takes no step"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, words) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and err.startswith("kemu: ")


def test_outputs_new_directory_never_overwritten(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["tour", "10"]) == 0
    assert main(["tour", "egress"]) == 0
    out = capsys.readouterr().out
    first, second = tmp_path / "kemu-tour-egress", tmp_path / "kemu-tour-egress-2"
    assert sorted(os.listdir(first)) == sorted(os.listdir(second)) == [
        "egress.html", "egress.pcapng"]
    assert "wrote: kemu-tour-egress-2/egress.pcapng, kemu-tour-egress-2/egress.html" in out
    assert main(["tour", "same-node"]) == 0
    assert sorted(os.listdir(tmp_path / "kemu-tour-same-node")) == [
        "same-node-sent.pcap", "same-node.html", "same-node.pcapng"]
    out = capsys.readouterr().out  # run from elsewhere: the cluster's absolute path
    assert (f"kemu replay -f {ROOT / 'examples/cluster'} -r "
            "kemu-tour-same-node/same-node-sent.pcap -w "
            "kemu-tour-same-node/same-node-replayed.pcapng --respond --cold --keep-l2") in out
    before = (first / "egress.pcapng").read_bytes()
    assert main(["tour", "egress", "-o", str(first)]) == 2
    assert "exists; kemu tour never overwrites a file" in capsys.readouterr().err
    assert (first / "egress.pcapng").read_bytes() == before
    (tmp_path / "plain").write_text("x")
    assert main(["tour", "egress", "-o", "plain"]) == 2


def test_pcapng_holds_every_hop_with_its_decisions(runs, tmp_path) -> None:
    step, run = STEPS["clusterip"], runs["clusterip"]
    path = tmp_path / "c.pcapng"
    n = tour.write_pcapng(step, run, str(path))
    hops = [h for x in run.exchanges for tr in x.traces for p in tr.packets for h in p.hops]
    assert n == len(hops) == len(read_capture(path))
    with RawPcapNgReader(str(path)) as reader:
        comments = [b"".join(meta.comments or []).decode() for _d, meta in reader]
    assert any("DNAT 10.96.0.11:9090 -> " in c for c in comments)
    assert any("un-DNAT" in c for c in comments)


def test_topology_page_draws_the_main_exchange(runs, tmp_path) -> None:
    step, run = STEPS["cni-flannel"], runs["cni-flannel"]
    files = tour.write_outputs(step, run, str(tmp_path))
    assert files == [str(tmp_path / "cni-flannel.pcapng"), str(tmp_path / "cni-flannel.html")]
    page = (tmp_path / "cni-flannel.html").read_text()
    assert "kemu trace:" in page and "10.96.0.10" in page


def test_docs_tour_md_is_current() -> None:
    """docs/tour.md is ``kemu tour --markdown`` (regenerate with that command)."""
    assert (ROOT / "docs" / "tour.md").read_text() == tour_cmd.markdown()
