"""``kemu replay``: the bundled example end to end, outputs checked with tshark field by field,
byte-identical outputs on both backends, atomic outputs, bad captures (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from kemu._backend import IMPLEMENTATIONS
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster"
CAPTURE = ROOT / "examples" / "capture.pcap"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed (scripts/setup.sh "
                                  "installs it)")


def _replay(tmp_path: Path, backend: str, *extra: str) -> tuple[int, Path, Path]:
    out, flows = tmp_path / f"{backend}.pcapng", tmp_path / f"{backend}.jsonl"
    rc = main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "-w", str(out), "--flows",
               str(flows), "--backend", backend, *extra])
    return rc, out, flows


def _tshark(path: Path, *fields: str) -> list[list[str]]:
    cmd = [TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def test_replay_prints_a_tcpreplay_summary(tmp_path: Path, backend: str,
                                           capsys: pytest.CaptureFixture) -> None:
    rc, out, flows = _replay(tmp_path, backend)
    assert rc == 0
    text = capsys.readouterr().out
    assert "Actual: 14 packets" in text
    assert "no endpoints (REJECT): 1" in text
    assert out.exists() and flows.exists()
    assert not list(tmp_path.glob("*.part-*"))


def test_backends_write_identical_outputs(tmp_path: Path) -> None:
    if len(IMPLEMENTATIONS) < 2:
        pytest.skip("only one backend in this run (KEMU_NO_EXTENSIONS=1)")
    _, a, fa = _replay(tmp_path, "cython")
    _, b, fb = _replay(tmp_path, "python")
    assert a.read_bytes() == b.read_bytes()
    assert fa.read_bytes() == fb.read_bytes()


@needs_tshark
def test_pcapng_fields_in_tshark(tmp_path: Path) -> None:
    _, out, _ = _replay(tmp_path, "python")
    rows = _tshark(out, "frame.interface_name", "frame.interface_description",
                   "frame.packet_flags_direction", "frame.comment", "ip.src", "ip.dst")
    names = {r[0] for r in rows}
    assert "default/client/eth0" in names and "node1/cbr0" in names and "node1/eth0" in names
    assert any(n.startswith("node1/veth-") for n in names)
    descs = {r[0]: r[1] for r in rows}
    assert descs["default/client/eth0"].startswith("Pod default/client")
    assert {r[2] for r in rows} <= {"0x00000001", "0x00000002", "1", "2"}
    comments = [r[3] for r in rows]
    assert any(c.startswith("DNAT 10.96.0.10:53 -> ") and "svc kube-system/kube-dns" in c
               for c in comments)
    assert any("route 10.244." in c and "via 172.18.0." in c for c in comments)
    assert any("DROP no endpoints (REJECT)" in c for c in comments)
    # the reply of the DNS query reaches the client from the Service address (CT-2)
    assert any(r[0] == "default/client/eth0" and r[2] in ("0x00000001", "1")
               and r[4] == "10.96.0.10" for r in rows)


@needs_tshark
def test_capinfos_sees_nanoseconds_and_interfaces(tmp_path: Path) -> None:
    _, out, _ = _replay(tmp_path, "python")
    info = subprocess.run(["capinfos", "-M", str(out)], capture_output=True, text=True,
                          check=True).stdout
    assert "pcapng" in info
    assert "nanoseconds" in info.lower()
    rows = _tshark(out, "frame.time_epoch")
    assert rows[0][0].startswith("1767225600.000000000")


def test_flow_log_is_hubble_shaped(tmp_path: Path) -> None:
    _, _, flows = _replay(tmp_path, "python")
    records = [json.loads(line) for line in flows.read_text().splitlines()]
    verdicts = {r["flow"]["verdict"] for r in records}
    assert verdicts == {"FORWARDED", "DROPPED", "TRANSLATED"}
    drop = next(r for r in records if r["flow"]["verdict"] == "DROPPED")
    assert drop["flow"]["drop_reason_desc"] == "SERVICE_BACKEND_NOT_FOUND"
    fwd = next(r for r in records if r["flow"]["verdict"] == "FORWARDED")
    for key in ("time", "IP", "l4", "source", "destination", "node_name",
                "trace_observation_point", "Type"):
        assert key in fwd["flow"], key
    dns = next(r for r in records if r["flow"].get("destination_service", {}).get("name")
               == "kube-dns")
    assert dns["flow"]["destination_service"]["namespace"] == "kube-system"
    assert dns["flow"]["source"]["pod_name"] == "client"


def test_kemu_flow_format_adds_decisions(tmp_path: Path) -> None:
    _, _, flows = _replay(tmp_path, "python", "--flow-format", "kemu")
    rec = json.loads(flows.read_text().splitlines()[0])
    assert rec["flow"]["kemu"]["frame"] == 1
    assert any(d.startswith("DNAT") for d in rec["flow"]["kemu"]["decisions"])


def test_capture_points(tmp_path: Path) -> None:
    _, full, _ = _replay(tmp_path, "python")
    out = tmp_path / "drops.pcapng"
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "-w", str(out),
                 "--capture-points", "drops"]) == 0
    assert 0 < out.stat().st_size < full.stat().st_size


def test_limit_and_loop(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "--limit", "5",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["packets"] == 5
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "--loop", "3",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["packets"] == 42


def test_respond_synthesizes_answers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "--respond", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answers"] > 0


@pytest.mark.parametrize("batch", [2, 4096])
def test_answers_follow_their_batch_in_the_file(tmp_path: Path, backend: str,
                                                batch: int) -> None:
    """In file order each batch's own hops come before the answers they caused (answers are
    stamped a microsecond after their trigger), also with the writer's thread behind."""
    import kemu
    from kemu.frontend.replay import ReplayOptions, replay
    from kemu.io.capture import read_capture

    emu = kemu.load(EXAMPLE, backend=backend, respond=True)
    out = tmp_path / "o.pcapng"
    s = replay(emu, CAPTURE, out, options=ReplayOptions(batch=batch, respond=True))
    assert s.answers > 0
    cap, written = read_capture(CAPTURE), read_capture(out)
    assert len(written) == s.hops_written
    assert int(written.ts_ns[0]) == int(cap.ts_ns[0])


def test_unknown_sources_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cap = tmp_path / "stranger.pcap"
    wrpcap(str(cap), [Ether() / IP(src="192.0.2.7", dst="10.244.0.2") / TCP()] * 3)
    # nothing placed: a negative answer, with a hint on stderr (tests/test_replay_map.py)
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(cap), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["unplaced"] == {"unknown source": 3}
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(cap), "--json",
                 "--unknown-at-gateway"]) == 0
    assert json.loads(capsys.readouterr().out)["injected"] == 3


def test_inject_at_an_interface(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "--inject-at",
                 "node1/eth0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["injected"] == 14
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), "--inject-at",
                 "nowhere/eth9"]) == 2


@pytest.mark.parametrize("content", [b"", b"garbage garbage garbage", b"\xd4\xc3\xb2\xa1\x02"])
def test_unreadable_capture_exits_2_and_writes_nothing(tmp_path: Path, content: bytes,
                                                       capsys: pytest.CaptureFixture) -> None:
    cap = tmp_path / "bad.pcap"
    cap.write_bytes(content)
    out = tmp_path / "out.pcapng"
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(cap), "-w", str(out)]) == 2
    assert "bad.pcap" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [cap]


def test_missing_capture_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(tmp_path / "nope.pcap")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_truncated_capture_replays_what_it_can(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    data = CAPTURE.read_bytes()
    cap = tmp_path / "cut.pcap"
    cap.write_bytes(data[: len(data) - 30])
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(cap), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["packets"] == 13
    assert summary["damaged"] == {"truncated record": 1}


def test_python_api_replay(tmp_path: Path) -> None:
    import kemu

    emu = kemu.load(EXAMPLE, backend="python", respond=False)
    s = emu.replay(CAPTURE, tmp_path / "o.pcapng")
    assert s.packets == 14 and s.delivered == 13
    assert np.isclose(s.pps, s.packets / s.seconds)


def test_node_arp_in_a_capture_enters_at_the_node_interface(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture
                                                            ) -> None:
    from scapy.layers.l2 import ARP

    cap = tmp_path / "arp.pcap"
    wrpcap(str(cap), [Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="172.18.0.2",
                                                          pdst="172.18.0.3")])
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(cap), "--json", "--respond"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["delivered"] == 1 and summary["answers"] == 1, summary


@pytest.mark.parametrize("failure", ["interrupt", "encoder"])
def test_replay_stopped_midway_leaves_nothing_behind(tmp_path: Path, backend: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     failure: str) -> None:
    """Blocks are encoded on the writer's thread while the next batch runs: a Ctrl-C between
    batches, or an error inside the encoder, stops the replay cleanly (no output, no temporary
    file, no thread left) instead of hanging."""
    import threading

    import kemu
    from kemu.frontend import hopwriter
    from kemu.frontend.replay import ReplayOptions, replay

    emu = kemu.load(EXAMPLE, backend=backend, respond=False)
    threads = threading.active_count()
    progress = None
    if failure == "interrupt":
        def progress(done: int) -> None:
            if done >= 6:
                raise KeyboardInterrupt

        error: type[BaseException] = KeyboardInterrupt
    else:
        real = hopwriter.HopWriter.write

        def broken(self, res, ts, encoded=None, first=None):  # noqa: ANN001, ANN202
            self.impl = type("Broken", (), {"encode_hops": staticmethod(_raise)})
            return real(self, res, ts, encoded, first)

        monkeypatch.setattr(hopwriter.HopWriter, "write", broken)
        error = ValueError
    out, flows = tmp_path / "o.pcapng", tmp_path / "o.jsonl"
    with pytest.raises(error):
        replay(emu, CAPTURE, out, flows, ReplayOptions(batch=2), progress=progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert threading.active_count() == threads


def _raise(*args: object) -> None:
    raise ValueError("encode_hops: hop 0: comment 7 unknown")


def test_reader_thread_and_window_rotation_change_nothing(tmp_path: Path, backend: str,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Replay reads the next chunk on a reader thread into windows rotating through three
    memories. With chunks of 50 frames in 64 KiB windows (the example's frames 300 times over:
    many windows, each reused while replay works on the others), the pcapng and flow log
    are those of reading chunk after chunk on the main thread, and of the default sizes."""
    import kemu
    from kemu.frontend import replay as R
    from kemu.io import capture as K
    from kemu.io.capture import read_capture

    src = read_capture(CAPTURE)
    big = tmp_path / "big.pcap"
    with big.open("wb") as f:  # the example 300 times, 0.1 s apart each time
        f.write(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
        for k in range(300):
            for i in range(len(src.offsets)):
                o, n = int(src.offsets[i]), int(src.lengths[i])
                ts = int(src.ts_ns[i]) // 1000 + k * 100_000
                f.write(np.array([ts // 10**6, ts % 10**6, n, n], "<u4").tobytes())
                f.write(src.buf[o:o + n].tobytes())
    real_iter = K.iter_capture

    def small(path, *args, reuse_buffer=False, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        return real_iter(path, 50, chunk_bytes=1 << 16, reuse_buffer=reuse_buffer)

    def outputs(name: str) -> tuple[bytes, bytes, dict]:
        emu = kemu.load(EXAMPLE, backend=backend, respond=False)
        s = emu.replay(big, tmp_path / f"{name}.pcapng", tmp_path / f"{name}.jsonl")
        counts = {k: v for k, v in vars(s).items() if k not in ("seconds", "pps")}
        return ((tmp_path / f"{name}.pcapng").read_bytes(),
                (tmp_path / f"{name}.jsonl").read_bytes(), counts)

    default = outputs("default")
    monkeypatch.setattr(R, "iter_capture", small)
    ahead = outputs("ahead")
    monkeypatch.setattr(R, "ahead", lambda items, name: items)  # in turn, on this thread
    in_turn = outputs("in-turn")
    assert ahead == in_turn == default
    assert default[2]["packets"] == 4200 and default[2]["delivered"] == 3900


def test_respond_follows_as_many_rounds_as_send(tmp_path: Path, backend: str) -> None:
    """Without static neighbours on a cold cluster a SYN across nodes is an ARP chain: ARP
    request, reply, the held SYN resumed, its SYN-ACK (and that one's ARP, ...): replay with
    --respond answers every round, as ``send`` does (it stopped after the first)."""
    import kemu
    from kemu.frontend.replay import ReplayOptions, replay

    scenario = ROOT / "tests" / "data" / "scenario"
    syn = Ether(src="02:94:16:80:91:8b", dst="02:ba:4d:b8:5d:c3") / IP(
        src="10.244.0.2", dst="10.244.1.2") / TCP(sport=40000, dport=80, flags="S")
    sender = kemu.load(scenario, backend=backend, respond=True, static_neighbours=False,
                       cold=True)
    sent = sender.send(syn, src="default/a", time_ns=1_000_000)
    rounds = len(sent.packets) - 1
    assert rounds >= 4 and any(p.origin == "resumed" for p in sent.packets)
    cap = tmp_path / "syn.pcap"
    wrpcap(str(cap), [syn])
    emu = kemu.load(scenario, backend=backend, respond=True, static_neighbours=False,
                    cold=True)
    s = replay(emu, cap, tmp_path / "o.pcapng", options=ReplayOptions(respond=True))
    assert s.answers == rounds
    # the same state as after send (the SYN-ACK came back: the flow is tracked as replied,
    # every neighbour resolved), but for the times
    def timeless(dp: object) -> dict:
        st = dp.state()  # type: ignore[attr-defined]
        return {"conntrack": [e[:13] + e[14:] for e in st["conntrack"]],
                "neigh": st["neigh"], "fdb": [e[:3] for e in st["fdb"]]}

    assert timeless(emu.engine.dp) == timeless(sender.engine.dp)


def test_keep_l2_floods_an_unknown_mac(tmp_path: Path, backend: str) -> None:
    """--inject-at rewrites a frame's Ethernet addresses as its sender's stack would;
    --keep-l2 keeps them: a destination MAC the bridge has not learned is flooded to every
    other port (L2-3) and ignored by hosts it is not for (the kernel's PACKET_OTHERHOST)."""
    import kemu
    from kemu.frontend.replay import ReplayOptions, replay

    scenario = ROOT / "tests" / "data" / "scenario"
    frame = Ether(src="02:94:16:80:91:8b", dst="02:00:00:00:00:99") / IP(
        src="10.244.0.2", dst="10.244.0.3") / TCP(sport=40000, dport=80, flags="S")
    cap = tmp_path / "unknown.pcap"
    wrpcap(str(cap), [frame])
    seen = {}
    for keep in (False, True):
        emu = kemu.load(scenario, backend=backend)
        s = replay(emu, cap, tmp_path / f"{keep}.pcapng", tmp_path / f"{keep}.jsonl",
                   options=ReplayOptions(inject_at="default/a/eth0", keep_l2=keep,
                                         flow_format="kemu"))
        seen[keep] = (s, (tmp_path / f"{keep}.jsonl").read_text())
    fixed, kept = seen[False][0], seen[True][0]
    assert fixed.delivered == 1 and not fixed.dropped  # rewritten: b's MAC, delivered
    assert kept.delivered == 0 and kept.dropped  # kept: flooded, nobody's MAC
    assert dict(kept.dropped) == {"ignored by every receiver": 1}
    assert kept.hops_written > fixed.hops_written  # the flood's copies
    assert main(["replay", "-f", str(scenario), "-r", str(cap), "--inject-at",
                 "default/a/eth0", "--keep-l2", "--backend", backend]) == 0


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--loop", "0", "argument --loop: 0 is less than 1"),
    ("--limit", "-1", "argument --limit: -1 is less than 1"),
    ("--workers", "0", "argument --workers: 0 is less than 1"),
    ("--workers", "two", "argument --workers: 'two' is not a whole number"),
])
def test_counts_must_be_whole_and_positive(option: str, value: str, said: str,
                                           capsys: pytest.CaptureFixture) -> None:
    """``--loop 0`` (tcpreplay's 'forever'), a negative limit, no workers: refused with the
    option named (exit 2), never a silent replay of something else."""
    from kemu.frontend.cli import main

    assert main(["replay", "-f", str(EXAMPLE), "-r", str(CAPTURE), option, value]) == 2
    assert said in capsys.readouterr().err
