"""``kemu replay --map``: a capture from elsewhere placed onto the emulated cluster's hosts
(addresses rewritten both ways, checksums kept valid), its errors (exit 2), the hint when no
frame could be placed (exit 1), and ``--unknown-at-gateway``'s words in comments and summary."""

from __future__ import annotations

import ipaddress
import json
import random
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from kemu._backend import IMPLEMENTATIONS
from kemu.dataplane.packet import csum_replace32
from kemu.frontend.addrmap import AddressMap, csum_update, parse_rules
from kemu.frontend.cli import main
from kemu.io.capture import read_capture

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster"
CLIENT, SERVER = "10.0.0.5", "10.0.0.9"
CLIENT_POD = "10.244.0.2"                      # default/client
FRONTEND = "shop/frontend-tt4zl4844t-q4psg"    # 10.244.0.4 on node1, listens on 8080
SERVICE_AT = "Service address (its endpoints answer with --respond)"


def _conversation() -> list:
    """client 10.0.0.5:40000 <-> server 10.0.0.9:80: handshake, a request and its answer."""
    cm, sm = "aa:00:00:00:00:05", "aa:00:00:00:00:09"
    c = Ether(src=cm, dst=sm) / IP(src=CLIENT, dst=SERVER)
    s = Ether(src=sm, dst=cm) / IP(src=SERVER, dst=CLIENT)
    frames = [c / TCP(sport=40000, dport=80, flags="S", seq=100),
              s / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101),
              c / TCP(sport=40000, dport=80, flags="A", seq=101, ack=501),
              c / TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501)
              / Raw(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n"),
              s / TCP(sport=80, dport=40000, flags="PA", seq=501, ack=131)
              / Raw(b"HTTP/1.1 200 OK\r\n\r\n")]
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i / 1000
    return frames


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    path = tmp_path / "foreign.pcap"
    wrpcap(str(path), _conversation())
    return path


def _replay(tmp_path: Path, capture: Path, backend: str, *extra: str,
            capsys: pytest.CaptureFixture) -> tuple[int, dict, Path]:
    out = tmp_path / f"{backend}.pcapng"
    rc = main(["replay", "-f", str(EXAMPLE), "-r", str(capture), "-w", str(out), "--json",
               "--backend", backend, *extra])
    text = capsys.readouterr().out
    return rc, json.loads(text) if rc in (0, 1) else {}, out


def _frames(path: Path) -> list[bytes]:
    cap = read_capture(path)
    return [cap.frame(i) for i in range(len(cap))]


def _checksums_valid(data: bytes) -> bool:
    """Scapy dissects the frame, recomputes every checksum it holds: the same bytes."""
    p = Ether(data)
    layer = p
    while layer:
        if "chksum" in layer.fields:
            layer.chksum = None
        layer = layer.payload if layer.payload else None
    return bytes(Ether(bytes(p))) == data


def _addresses(data: bytes) -> set[str]:
    p = Ether(data)
    return {p[IP].src, p[IP].dst} if IP in p else set()


def test_mapped_onto_a_pod_and_a_service(tmp_path: Path, foreign: Path, backend: str,
                                         capsys: pytest.CaptureFixture) -> None:
    rc, s, out = _replay(tmp_path, foreign, backend, "--map", f"{CLIENT}=default/client",
                         "--map", f"{SERVER}=svc/shop/frontend", capsys=capsys)
    assert rc == 0
    assert s["mapped"] == {"frames": 5, "addresses": 2}
    # the client's three frames are placed and load-balanced like in-cluster traffic; the
    # server's replies now come from a ClusterIP: not placed (the endpoints answer instead)
    assert s["injected"] == 3 and s["delivered"] == 3 and s["translated"] == 3
    assert s["unplaced"] == {f"source is a {SERVICE_AT}": 2}
    frames = _frames(out)
    addrs = set().union(*(_addresses(f) for f in frames))
    assert not {CLIENT, SERVER} & addrs
    assert addrs <= {CLIENT_POD, "10.96.0.12", "10.244.0.4", "10.244.1.4"}
    first = Ether(frames[0])
    assert (first[IP].src, first[IP].dst, first[TCP].dport) == (CLIENT_POD, "10.96.0.12", 80)
    assert any(Ether(f)[IP].dst in ("10.244.0.4", "10.244.1.4") and Ether(f)[TCP].dport == 8080
               for f in frames)  # DNAT to an endpoint
    assert all(_checksums_valid(f) for f in frames)


def test_mapped_both_ways_onto_pods(tmp_path: Path, foreign: Path, backend: str,
                                    capsys: pytest.CaptureFixture) -> None:
    """A reply from 10.0.0.9 becomes a reply from the pod: every frame is placed."""
    rc, s, out = _replay(tmp_path, foreign, backend, "--map", f"{CLIENT}=default/client",
                         "--map", f"{SERVER}={FRONTEND}", capsys=capsys)
    assert rc == 0 and s["injected"] == 5 and s["delivered"] == 5 and "unplaced" in s
    assert s["unplaced"] == {}
    frames = _frames(out)
    assert set().union(*(_addresses(f) for f in frames)) == {CLIENT_POD, "10.244.0.4"}
    assert all(_checksums_valid(f) for f in frames)
    replies = [Ether(f) for f in frames if Ether(f)[IP].src == "10.244.0.4"]
    assert replies and all(r[TCP].sport == 80 for r in replies)


def test_backends_write_the_same_bytes(tmp_path: Path, foreign: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    if len(IMPLEMENTATIONS) < 2:
        pytest.skip("only one backend in this run (KEMU_NO_EXTENSIONS=1)")
    for args in (("--map", f"{CLIENT}=default/client", "--map", f"{SERVER}=svc/shop/frontend"),
                 ("--map", f"{CLIENT}=default/client", "--unknown-at-gateway")):
        _, _, a = _replay(tmp_path, foreign, "cython", *args, capsys=capsys)
        _, _, b = _replay(tmp_path, foreign, "python", *args, capsys=capsys)
        assert a.read_bytes() == b.read_bytes()


def test_cidr_onto_a_namespace(tmp_path: Path, foreign: Path, backend: str,
                               capsys: pytest.CaptureFixture) -> None:
    # shop's pods by name: backend-hdjlqw9kdn-cmtwh (10.244.0.3), -gxszb (10.244.1.3), ...
    rc, s, out = _replay(tmp_path, foreign, backend, "--map", "10.0.0.0/24=shop/",
                         capsys=capsys)
    assert rc == 0 and s["mapped"] == {"frames": 5, "addresses": 2} and s["injected"] == 5
    first = Ether(_frames(out)[0])
    assert (first[IP].src, first[IP].dst) == ("10.244.0.3", "10.244.1.3")
    # a more specific rule wins; the namespace's pods it names are skipped
    rc, s, out = _replay(tmp_path, foreign, backend, "--map", f"{CLIENT}=shop/backend-"
                         "hdjlqw9kdn-cmtwh", "--map", "10.0.0.0/24=shop/", capsys=capsys)
    assert rc == 0
    first = Ether(_frames(out)[0])
    assert (first[IP].src, first[IP].dst) == ("10.244.0.3", "10.244.1.3")
    rc, s, out = _replay(tmp_path, foreign, backend, "--map", f"{CLIENT}=default/client",
                         "--map", "10.0.0.0/24=shop/", capsys=capsys)
    first = Ether(_frames(out)[0])
    assert (first[IP].src, first[IP].dst) == (CLIENT_POD, "10.244.0.3")


def test_other_targets(tmp_path: Path, foreign: Path, capsys: pytest.CaptureFixture) -> None:
    rc, s, out = _replay(tmp_path, foreign, "python", "--map", f"{CLIENT}=ext/client",
                         "--map", f"{SERVER}=node/node2", capsys=capsys)
    assert rc == 0 and s["injected"] == 5
    first = Ether(_frames(out)[0])
    assert (first[IP].src, first[IP].dst) == ("172.18.0.100", "172.18.0.3")
    rc, s, out = _replay(tmp_path, foreign, "python", "--map", f"{CLIENT}=10.244.0.2",
                         "--map", f"{SERVER}=10.96.0.12", capsys=capsys)
    assert rc == 0 and s["injected"] == 3 and s["translated"] == 3


@pytest.mark.parametrize("maps,message", [
    ([f"{CLIENT}=default/nobody"], f"--map {CLIENT}=default/nobody: no pod default/nobody"),
    ([f"{CLIENT}=svc/shop/nothing"], "no Service shop/nothing"),
    ([f"{CLIENT}=svc/shop/redis"], "Service shop/redis has no ClusterIP (headless)"),
    ([f"{CLIENT}=ext/nope"], "no external host nope"),
    ([f"{CLIENT}=node/node9"], "no node node9"),
    ([f"{CLIENT}=192.0.2.1"], "192.0.2.1 is not an address of this cluster"),
    ([f"{CLIENT}=a/b/c/d"], "is not NS/POD, NS/, svc/NS/NAME"),
    (["10.0.0=default/client"], "'10.0.0' is not an IPv4 address or CIDR"),
    ([CLIENT], f"--map {CLIENT}: expected ADDR=TARGET"),
    ([f"{CLIENT}=default/client", f"{CLIENT}/32=shop/"], "is already mapped by --map"),
    ([f"{CLIENT}=default/client", f"{SERVER}=default/client"],
     f"--map {CLIENT}=default/client and --map {SERVER}=default/client: capture hosts "
     f"{CLIENT}, {SERVER} would all become pod default/client"),
    (["10.0.0.0/24=default/client"], "--map 10.0.0.0/24=default/client: the capture has 2 "
     f"hosts in 10.0.0.0/24 ({CLIENT}, {SERVER}): they cannot all become pod default/client"),
    (["10.0.0.0/24=kube-system/", "10.0.0.200=kube-system/coredns-jkd7xh88pj-74v6g"],
     "--map 10.0.0.0/24=kube-system/: the capture has 2 hosts in 10.0.0.0/24 but namespace "
     "kube-system has 1 pod to put them on (1 more named by other --map)"),
    (["10.0.0.0/24=nowhere/"], "namespace nowhere has no pods"),
])
def test_bad_maps_exit_2_before_writing(tmp_path: Path, foreign: Path, maps: list[str],
                                        message: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o.pcapng"
    args = [a for m in maps for a in ("--map", m)]
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(foreign), "-w", str(out),
                 *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("kemu: --map ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.pcap"]


def test_more_hosts_than_pods(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cap = tmp_path / "three.pcap"
    wrpcap(str(cap), [Ether() / IP(src=f"10.0.0.{i}", dst="10.0.0.1") / UDP()
                      for i in (5, 6, 7)])
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(cap), "--map",
                 "10.0.0.0/24=kube-system/"]) == 2
    assert ("--map 10.0.0.0/24=kube-system/: the capture has 4 hosts in 10.0.0.0/24 but "
            "namespace kube-system has 2 pods to put them on") in capsys.readouterr().err


def test_no_frame_placed_says_why_and_exits_1(tmp_path: Path, foreign: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(foreign)]) == 1
    captured = capsys.readouterr()
    assert "Not placed:  5" in captured.out
    assert captured.err.split("kemu: warning: ")[0] == (  # (any warning after it)
        f"kemu: no frame of {foreign} could be placed: its sources ({CLIENT}, {SERVER}) are "
        f"not in the cluster; map them with --map {CLIENT}=NAMESPACE/POD (kemu show -f "
        f"{EXAMPLE} pods -A lists pods) or use --unknown-at-gateway\n")
    many = tmp_path / "many.pcap"
    wrpcap(str(many), [Ether() / IP(src=f"10.0.0.{i}", dst="10.0.0.1") / UDP()
                       for i in range(2, 7)])
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(many), "--json"]) == 1
    assert "its sources (10.0.0.2, 10.0.0.3 and 3 more) are not in the cluster" in \
        capsys.readouterr().err
    # replies mapped onto a Service only: nothing placed, and the hint says why
    replies = tmp_path / "replies.pcap"
    wrpcap(str(replies), [f for f in _conversation() if f[IP].src == SERVER])
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(replies), "--map",
                 f"{SERVER}=svc/shop/frontend"]) == 1
    assert "(its replies come from the Service's endpoints with --respond)" in \
        capsys.readouterr().err
    # an empty capture: nothing asked, nothing to say
    empty = tmp_path / "empty.pcap"
    wrpcap(str(empty), [])
    assert main(["replay", "-f", str(EXAMPLE), "-r", str(empty)]) == 0
    assert "kemu: no frame" not in capsys.readouterr().err


def test_gateway_words_in_comments_and_summary(tmp_path: Path, backend: str,
                                               capsys: pytest.CaptureFixture) -> None:
    from kemu.dataplane.describe import AT_GATEWAY

    cap = tmp_path / "stranger.pcap"
    wrpcap(str(cap), [Ether() / IP(src="192.0.2.7", dst="172.18.0.2")
                      / TCP(sport=40000 + i, dport=30080, flags="S") for i in range(3)])
    out = tmp_path / "o.pcapng"
    args = ["replay", "-f", str(EXAMPLE), "-r", str(cap), "-w", str(out), "--backend",
            backend, "--unknown-at-gateway"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"Injected:    3\n  {AT_GATEWAY}: 3\n" in text
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["enteredAtGateway"] == 3
    comments = _comments(out)
    labelled = [(name, c) for name, c in comments if AT_GATEWAY in c]
    assert labelled == [("gateway/eth0", AT_GATEWAY)] * 3  # each frame's first hop
    assert sum("deliver to pod shop/frontend-" in c for _n, c in comments) == 3


def _comments(path: Path) -> list[tuple[str, str]]:
    """(interface name, comment) of each packet of a kemu pcapng, read with Scapy."""
    from scapy.utils import PcapNgReader

    with PcapNgReader(str(path)) as reader:
        return [(pkt.sniffed_on or "", (pkt.comments or [b""])[0].decode()) for pkt in reader]


def test_api_address_map(tmp_path: Path, foreign: Path) -> None:
    import kemu

    emu = kemu.load(EXAMPLE, backend="python", respond=False)
    s = emu.replay(foreign, tmp_path / "o.pcapng",
                   address_map={CLIENT: "default/client", SERVER: FRONTEND})
    assert s.mapped == 5 and s.mapped_addresses == 2 and s.injected == 5
    assert "Mapped:      5 frames (2 addresses)" in s.render()
    # with --respond the Service's endpoint answers the mapped client's SYN
    emu = kemu.load(EXAMPLE, backend="python", respond=True)
    s = emu.replay(foreign, address_map={CLIENT: "default/client", SERVER: "svc/shop/frontend"},
                   respond=True, limit=1)
    assert s.injected == 1 and s.answers >= 1


# ---------------------------------------------------------------------- the rewrite itself
def test_vectorised_checksum_update_equals_rfc1624() -> None:
    rng = random.Random(7)
    checks, olds, news = [], [[], []], [[], []]
    want = []
    for _ in range(2000):
        c = rng.randrange(1 << 16)
        pairs = [(rng.randrange(1 << 32), rng.randrange(1 << 32)) for _ in range(2)]
        if rng.random() < 0.3:
            pairs[1] = (pairs[1][0], pairs[1][0])  # one field unchanged
        w = c
        for o, n in pairs:
            w = csum_replace32(w, o, n)
        checks.append(c)
        for k, (o, n) in enumerate(pairs):
            olds[k].append(o)
            news[k].append(n)
        want.append(w)
    got = csum_update(np.array(checks), tuple(np.array(o) for o in olds),
                      tuple(np.array(n) for n in news))
    assert got.tolist() == want


def _map(**pairs: str) -> AddressMap:
    from kemu.frontend.api import load

    emu = load(str(EXAMPLE), backend="python")
    rules = parse_rules({k.replace("_", "."): v for k, v in pairs.items()})
    return AddressMap.build(emu.model, emu.tables, rules)


def _rewrite(amap: AddressMap, frames: list) -> list[bytes]:
    data = [bytes(f) for f in frames]
    lengths = np.array([len(d) for d in data], np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
    buf = np.frombuffer(b"".join(data), np.uint8).copy()
    amap.rewrite(buf, offsets, lengths)
    return [buf[o:o + n].tobytes() for o, n in zip(offsets, lengths, strict=True)]


def test_rewrite_keeps_every_checksum_valid() -> None:
    amap = _map(**{"10_0_0_5": "default/client", "10_0_0_9": FRONTEND})
    quoted = IP(src=CLIENT, dst=SERVER) / UDP(sport=5000, dport=53) / Raw(b"q" * 12)
    frames = [
        Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=1, dport=2) / Raw(b"x" * 33),
        Ether() / IP(src=SERVER, dst=CLIENT, options=b"\x01" * 4) / UDP(sport=9, dport=10)
        / Raw(b"y" * 7),
        Ether() / IP(src=SERVER, dst="10.0.0.77") / ICMP() / Raw(b"ping"),
        # an ICMP error quoting the client's datagram: outer and quoted headers rewritten
        Ether() / IP(src=SERVER, dst=CLIENT) / ICMP(type=3, code=3) / bytes(quoted),
    ]
    out = _rewrite(amap, frames)
    for data in out:
        assert _checksums_valid(data), Ether(data).show(dump=True)
    assert (Ether(out[0])[IP].src, Ether(out[0])[IP].dst) == (CLIENT_POD, "10.244.0.4")
    assert Ether(out[2])[IP].dst == "10.0.0.77"  # not in the map: left alone
    err = Ether(out[3])
    inner = IP(bytes(err[ICMP].payload))
    assert (err[IP].src, err[IP].dst) == ("10.244.0.4", CLIENT_POD)
    assert (inner.src, inner.dst) == (CLIENT_POD, "10.244.0.4")


def test_rewrite_udp_without_checksum_arp_and_fragments() -> None:
    amap = _map(**{"10_0_0_5": "default/client", "10_0_0_9": FRONTEND})
    udp = Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=9, dport=10, chksum=0) / b"abc"
    arp = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=CLIENT, pdst=SERVER)
    later = Ether() / IP(src=CLIENT, dst=SERVER, frag=100, proto=6) / Raw(b"z" * 20)
    bad = Ether() / IP(src=CLIENT, dst=SERVER, chksum=0x1234) / TCP()
    out = _rewrite(amap, [udp, arp, later, bad])
    assert Ether(out[0])[UDP].chksum == 0
    ip_only = Ether(out[0])
    ip_only[IP].chksum = None
    assert bytes(ip_only) == out[0]
    a = Ether(out[1])[ARP]
    assert (a.psrc, a.pdst) == (CLIENT_POD, "10.244.0.4")
    assert bytes(Ether(out[2])[Raw]) == b"z" * 20 and _checksums_valid(out[2])
    assert not _checksums_valid(out[3])  # a wrong checksum stays wrong (RFC 1624)
    fixed = Ether(out[3])
    fixed[IP].chksum = None
    assert _checksums_valid(bytes(fixed))  # ... and only it: the TCP checksum is right


def test_capture_hosts_skip_network_and_broadcast(tmp_path: Path) -> None:
    from kemu.frontend.addrmap import capture_hosts

    cap = tmp_path / "b.pcap"
    wrpcap(str(cap), [Ether() / IP(src=CLIENT, dst="10.0.0.255") / UDP(),
                      Ether() / IP(src="10.0.0.0", dst=SERVER) / UDP(),
                      Ether() / IP(src="192.0.2.1", dst=SERVER) / UDP()])
    net = ipaddress.IPv4Network("10.0.0.0/24")
    hosts = capture_hosts(cap, [net])
    assert [str(ipaddress.IPv4Address(int(a))) for a in hosts] == [
        "10.0.0.0", CLIENT, SERVER, "10.0.0.255"]  # all met; the rule leaves out .0 and .255
    assert len(capture_hosts(cap, [net], limit=1)) == 2
