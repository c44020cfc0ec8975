"""NetworkPolicy verdicts explained (#17, P-1/P-2/P-4): a Scapy-crafted packet a policy denies
and one it allows, replayed through the scenario cluster with a deny-all and an allow policy
(and an egress policy), on both backends:

- the pcapng comment at the hop of the verdict (read back with a small pcapng reader of this
  file): ``DROP policy: default deny ingress of default/c (selected by ...; no rule allows
  10.244.0.3:41000 -> 8080/TCP)`` and ``ALLOW policy default/allow-a ingress rule 0``; the
  egress denial names both ends;
- the flow log in Hubble's shape: ``DROPPED``/``POLICY_DENIED``, ``traffic_direction``,
  ``*_denied_by``/``*_allowed_by`` as Hubble's ``Policy`` messages, the other records as
  before; both encoders byte for byte equal to the oracle (``flowlog_oracle``);
- ``kemu trace``: the policy step in the summary and the detail, exit 1 with
  ``result: denied by NetworkPolicy ...``;
- ``kemu show networkpolicies``: no "not enforced" warning, the pods each policy selects.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

import kemu
from kemu.dataplane import codes as C
from kemu.frontend.cli import main
from kemu.io.flowlog import policy_fragment

DATA = Path(__file__).resolve().parent / "data"
A, B, C_IP, D = "10.244.0.2", "10.244.0.3", "10.244.1.2", "10.244.2.2"  # pods a, b (node1), c, d

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: default}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-a, namespace: default}
spec:
  podSelector: {matchLabels: {app: c}}
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 8080}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: d-egress, namespace: default}
spec:
  podSelector: {matchLabels: {app: d}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: c}}}], ports: [{port: 8080}]}]
"""

DENIED_C = ("DROP policy: default deny ingress of default/c (selected by default/allow-a, "
            f"default/deny-all; no rule allows {B}:41000 -> 8080/TCP)")
ALLOWED_C = "ALLOW policy default/allow-a ingress rule 0"
DENIED_D = ("DROP policy: default deny egress of default/d (selected by default/d-egress; "
            f"no rule allows {D}:41002 -> {A}:9999/UDP)")
ALLOWED_D = "ALLOW policy default/d-egress egress rule 0"


def policy_item(name: str) -> dict:
    p = "k8s:io.cilium.k8s.policy"
    return {"name": name, "namespace": "default",
            "labels": [f"{p}.derived-from=NetworkPolicy", f"{p}.name={name}",
                       f"{p}.namespace=default"], "kind": "NetworkPolicy"}


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    """The scenario cluster plus the policies above."""
    d = tmp_path / "cluster"
    shutil.copytree(DATA / "scenario", d)
    (d / "policies.yaml").write_text(POLICIES)
    return d


def capture(path: Path) -> Path:
    """b -> c:8080 SYN (denied: ingress of c), a -> c:8080 SYN (allowed by allow-a),
    d -> a:9999/UDP (denied: egress of d), d -> c:8080 SYN (allowed by d-egress, and at c's
    ingress? no: d is no peer of allow-a, so denied there)."""
    frames = [Ether() / IP(src=B, dst=C_IP) / TCP(sport=41000, dport=8080, flags="S"),
              Ether() / IP(src=A, dst=C_IP) / TCP(sport=41001, dport=8080, flags="S"),
              Ether() / IP(src=D, dst=A) / UDP(sport=41002, dport=9999) / b"x",
              Ether() / IP(src=D, dst=C_IP) / TCP(sport=41003, dport=8080, flags="S")]
    for k, f in enumerate(frames):
        f.time = 1_767_225_600 + k
    wrpcap(str(path), frames)
    return path


def pcapng_comments(path: Path) -> list[str]:
    """The comment of every enhanced packet block (a reader of its own: blocks, then the
    EPB's options after its padded data; option 1 is opt_comment)."""
    data = path.read_bytes()
    out = []
    at = 0
    while at + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, at)
        if btype == 6:
            caplen = struct.unpack_from("<I", data, at + 20)[0]
            o = at + 28 + ((caplen + 3) & ~3)
            comment = ""
            while o + 4 <= at + blen - 4:
                code, size = struct.unpack_from("<HH", data, o)
                if code == 0:
                    break
                if code == 1:
                    comment = data[o + 4:o + 4 + size].decode()
                o += 4 + ((size + 3) & ~3)
            out.append(comment)
        at += blen
    return out


def replay(cluster: Path, tmp: Path, backend: str, fmt: str = "hubble") -> tuple[list, list]:
    cap = capture(tmp / "in.pcap")
    assert main(["replay", "-f", str(cluster), "-r", str(cap), "-w", str(tmp / "out.pcapng"),
                 "--flows", str(tmp / "f.jsonl"), "--flow-format", fmt,
                 "--backend", backend]) == 0
    records = [json.loads(line)["flow"] for line in (tmp / "f.jsonl").read_text().splitlines()]
    return pcapng_comments(tmp / "out.pcapng"), records


def test_pcapng_comment_at_the_hop_of_the_verdict(cluster: Path, tmp_path: Path,
                                                  backend: str, capsys) -> None:
    comments, _ = replay(cluster, tmp_path, backend)
    capsys.readouterr()
    with_policy = [c for c in comments if "policy" in c]
    # each verdict once, at one hop; the denial's drop is said by the denial itself
    assert sum(DENIED_C in c for c in comments) == 1
    assert sum(ALLOWED_C in c for c in comments) == 1
    assert sum(DENIED_D in c for c in comments) == 1
    assert sum(ALLOWED_D in c for c in comments) == 1
    assert not any("DROP policy denied" in c for c in comments)
    denied = next(c for c in comments if DENIED_C in c)
    assert denied.endswith(DENIED_C)  # the last decision of its hop: the packet ends there
    # d -> c: allowed at d's egress on node3, denied at c's ingress on node2
    assert any(c.endswith("DROP policy: default deny ingress of default/c (selected by "
                          "default/allow-a, default/deny-all; no rule allows "
                          f"{D}:41003 -> 8080/TCP)") for c in comments)
    assert len(with_policy) == 5


def test_flow_log_in_hubbles_shape(cluster: Path, tmp_path: Path, backend: str,
                                   capsys) -> None:
    _, records = replay(cluster, tmp_path, backend)
    capsys.readouterr()
    with_policy = [r for r in records if "traffic_direction" in r]
    by_port = {r["l4"][next(iter(r["l4"]))]["source_port"]: r for r in with_policy}
    assert sorted(by_port) == [41000, 41001, 41002, 41003]
    denied = by_port[41000]
    assert (denied["verdict"], denied["drop_reason_desc"], denied["traffic_direction"]) == (
        "DROPPED", "POLICY_DENIED", "INGRESS")
    assert denied["ingress_denied_by"] == [policy_item("allow-a"), policy_item("deny-all")]
    assert not {"ingress_allowed_by", "egress_allowed_by", "egress_denied_by"} & set(denied)
    allowed = by_port[41001]
    assert (allowed["verdict"], allowed["traffic_direction"]) == ("FORWARDED", "INGRESS")
    assert allowed["ingress_allowed_by"] == [policy_item("allow-a")]
    assert allowed["destination"]["pod_name"] == "c" and "drop_reason_desc" not in allowed
    egress = by_port[41002]
    assert (egress["verdict"], egress["drop_reason_desc"], egress["traffic_direction"]) == (
        "DROPPED", "POLICY_DENIED", "EGRESS")
    assert egress["egress_denied_by"] == [policy_item("d-egress")]
    both = by_port[41003]  # egress allowed at d, ingress denied at c: the denial's direction
    assert (both["verdict"], both["traffic_direction"]) == ("DROPPED", "INGRESS")
    assert both["egress_allowed_by"] == [policy_item("d-egress")]
    assert both["ingress_denied_by"] == [policy_item("allow-a"), policy_item("deny-all")]
    # the records without a policy verdict are as they were: no policy field at all
    keys = {"traffic_direction", "ingress_allowed_by", "egress_allowed_by",
            "ingress_denied_by", "egress_denied_by"}
    assert all(not keys & set(r) for r in records if r not in with_policy)
    assert len(with_policy) == 4


def test_both_encoders_write_the_oracles_bytes(cluster: Path, tmp_path: Path, backend: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Policy records through the real FlowLog, each encoder twin and the oracle."""
    from test_flowlog import Tee, tee_replay

    for fmt, batch in (("hubble", 4096), ("kemu", 1), ("hubble", 3)):
        emu = kemu.load(cluster, backend=backend, respond=True)  # (fresh conntrack)
        s = tee_replay(monkeypatch, emu, capture(tmp_path / "in.pcap"), tmp_path / "f.jsonl",
                       flow_format=fmt, batch=batch, respond=True)
        assert Tee.records_seen == s.flow_records > 4  # with the SYN-ACK's
        text = (tmp_path / "f.jsonl").read_text()
        assert text.count('"traffic_direction"') == 4
        if fmt == "kemu":  # the decisions say the denial as the pcapng comment does
            assert text.count(json.dumps(DENIED_C)) == 1 and "DROP policy denied" not in text


def test_policy_fragment_names_the_policies(cluster: Path) -> None:
    """The piece itself: a denial lists the policies isolating the pod in that direction,
    allows the policy of their rule, each once, in the order of the verdicts."""
    t = kemu.load(cluster, backend="python").engine.tables
    c = t.pod_key.index("default/c")
    rule = next(r for r in range(len(t.rule_pol))
                if t.pol_name[int(t.rule_pol[r])] == "default/allow-a")
    got = json.loads(b"{" + policy_fragment(t, [(C.EV_POLICY_ALLOW, c, C.POL_INGRESS, rule),
                                               (C.EV_POLICY_ALLOW, c, C.POL_INGRESS, rule)])[1:]
                     + b"}")
    assert got == {"traffic_direction": "INGRESS", "ingress_allowed_by": [policy_item("allow-a")]}
    got = json.loads(b"{" + policy_fragment(t, [(C.EV_POLICY_DENY, c, C.POL_INGRESS, -1)])[1:]
                     + b"}")
    assert got == {"traffic_direction": "INGRESS",
                   "ingress_denied_by": [policy_item("allow-a"), policy_item("deny-all")]}


def test_trace_shows_the_policy_step_and_exits_1_on_a_deny(cluster: Path, backend: str,
                                                           capsys) -> None:
    code = main(["trace", "-f", str(cluster), "-S", "default/b", "-D", "default/c",
                 "-p", "tcp,dport=8080", "--summary", "--backend", backend])
    out = capsys.readouterr().out
    assert code == 1
    assert ("    Policy     Denied    ingress of default/c denied (selected by default/allow-a, "
            "default/deny-all; no rule allows 10.244.0.3:") in out
    assert out.splitlines()[-1].startswith(
        "result: denied by NetworkPolicy on node2: ingress of default/c (selected by "
        "default/allow-a, default/deny-all; no rule allows 10.244.0.3:")
    assert out.splitlines()[-1].endswith(" -> 8080/TCP)")
    code = main(["trace", "-f", str(cluster), "-S", "default/a", "-D", "default/c",
                 "-p", "tcp,dport=8080", "--detailed", "--backend", backend])
    out = capsys.readouterr().out
    assert code == 0
    assert f"[{ALLOWED_C}; route 10.244.1.0/24 dev cbr0]" in out
    assert out.splitlines()[-1].startswith("result: connection established")


def test_trace_api_observations(cluster: Path, backend: str) -> None:
    emu = kemu.load(cluster, backend=backend, respond=True)
    tr = emu.send(IP(dst=C_IP) / TCP(sport=41000, dport=8080, flags="S"), src="default/b")
    obs = [(o.node, o.component, o.action, o.detail) for o in tr.observations()]
    assert obs[-1] == ("node2", "Policy", "Denied", DENIED_C.replace(
        "DROP policy: default deny ingress of default/c (", "ingress of default/c denied ("))
    assert not tr.verdict().reachable
    assert tr.verdict().reason.startswith("denied by NetworkPolicy on node2: ingress of "
                                          "default/c (selected by")
    decisions = [d for h in tr.to_dict()["packets"][0]["hops"] for d in h["decisions"]]
    assert decisions[-1] == DENIED_C and "DROP policy denied" not in decisions
    tr = emu.send(IP(dst=C_IP) / TCP(sport=41001, dport=8080, flags="S"), src="default/a")
    assert ("node2", "Policy", "Allowed",
            "ingress of default/c allowed by default/allow-a ingress rule 0") in [
        (o.node, o.component, o.action, o.detail) for o in tr.observations()]
    assert tr.verdict().reachable
    # the reply rides conntrack: no verdict of its own (CT-6)
    assert not any(e[0] in (C.EV_POLICY_ALLOW, C.EV_POLICY_DENY)
                   for p in tr.answers() for h in p.hops for e in h[3])


def test_show_networkpolicies_lists_the_selected_pods_without_a_warning(cluster: Path,
                                                                         capsys) -> None:
    code = main(["show", "-f", str(cluster), "netpol", "-o", "wide"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["NAME", "POD-SELECTOR", "POLICY-TYPES", "PODS"]
    assert rows["deny-all"] == ["deny-all", "<none>", "Ingress", "a,b,c,d"]
    assert rows["allow-a"] == ["allow-a", "app=c", "Ingress", "c"]
    assert rows["d-egress"] == ["d-egress", "app=d", "Egress", "d"]


def test_vxlan_mode_names_the_inner_flow(cluster: Path, tmp_path: Path, backend: str,
                                         capsys) -> None:
    """In VXLAN mode the verdicts are made on the inner packet, at the hops where it is not
    encapsulated: the comments and records name the pods' flow, not the tunnel's."""
    conf = cluster / "cluster.yaml"
    text = conf.read_text()
    assert "\n  nodes: 3\n" in text
    conf.write_text(text.replace("\n  nodes: 3\n", "\n  nodes: 3\n  mode: vxlan\n", 1))
    comments, records = replay(cluster, tmp_path, backend)
    capsys.readouterr()
    assert any("VXLAN encap" in c for c in comments)  # (the mode took)
    assert sum(DENIED_C in c for c in comments) == 1
    assert sum(DENIED_D in c for c in comments) == 1
    assert sum(ALLOWED_C in c for c in comments) == 1
    denied = [r for r in records if r.get("drop_reason_desc") == "POLICY_DENIED"]
    assert sorted((r["IP"]["source"], r["traffic_direction"]) for r in denied) == [
        (B, "INGRESS"), (D, "EGRESS"), (D, "INGRESS")]


def test_both_comment_twins_write_the_same_pcapng(cluster: Path, tmp_path: Path, backend: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys) -> None:
    """The denials' flows go through each ``HopComments``/``encode_hops`` twin alike."""
    from kemu.io import hops

    got = {}
    for name, mod in hops.implementations().items():
        monkeypatch.setattr(hops, "active", lambda mod=mod: mod)
        (tmp_path / name).mkdir()
        comments, _ = replay(cluster, tmp_path / name, backend)
        assert sum(DENIED_C in c for c in comments) == 1
        got[name] = (tmp_path / name / "out.pcapng").read_bytes()
    capsys.readouterr()
    assert len(set(got.values())) == 1
