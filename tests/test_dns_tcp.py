"""TCP data on the emulated stacks (``kemu.dataplane.slowpath``): DNS over TCP (RFC 7766) from
the CoreDNS pods through the kube-dns Service, and the minimal HTTP/1.x server on other
listening ports: sequence and acknowledgement numbers checked with Scapy, pipelining,
requests in several segments, out-of-order data acknowledged only up to the hole, FIN
answered with FIN-ACK. Packets flow: every test on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, in4_chksum
from scapy.layers.l2 import Ether
from scapy.utils import checksum

import kemu
from kemu.dataplane import codes as C
from kemu.dataplane.slowpath import (
    HostStack,
    HttpError,
    TcpStream,
    ether,
    http_requests,
    ipv4,
    tcp_segment,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cluster"
CLIENT = "default/client"
DNS_VIP = "10.96.0.10"
BACKEND_VIP = "10.96.0.11"  # shop/backend, ClusterIP 9090 -> the pods' 9090


class Conn:
    """A client TCP connection driven by hand from a pod, through ``EmulatedCluster.send``."""

    def __init__(self, cluster: kemu.EmulatedCluster, dst: str, dport: int,
                 sport: int = 40000) -> None:
        self.cluster, self.dst, self.dport, self.sport = cluster, dst, dport, sport
        self.seq = 1000
        self.iface = cluster.interface_of(CLIENT)

    def send(self, flags: str, data: bytes = b"", seq: int | None = None,
             ack: int | None = None) -> list[Ether]:
        pkt = IP(dst=self.dst) / TCP(sport=self.sport, dport=self.dport, flags=flags,
                                     seq=self.seq if seq is None else seq,
                                     ack=getattr(self, "rcv", 0) if ack is None else ack)
        if data:
            pkt = pkt / data
        trace = self.cluster.send(pkt, src=CLIENT)
        got = []
        for p in trace.answers():
            for (kind, _r, i, _a), frame in zip(p.outcomes, p.outcome_frames, strict=True):
                if kind == C.OUT_DELIVERED and i == self.iface:
                    got.append(Ether(frame))
        return got

    def open(self) -> TCP:
        (synack,) = self.send("S")
        tcp = synack[TCP]
        assert tcp.flags == "SA" and tcp.ack == self.seq + 1
        self.seq += 1
        self.rcv = tcp.seq + 1
        assert self.send("A") == []  # the handshake's last ACK: nothing to answer
        return tcp


@pytest.fixture
def cluster(backend: str) -> kemu.EmulatedCluster:
    return kemu.load(EXAMPLE, backend=backend)


def dns_query(name: str, ident: int = 7, qtype: str = "A") -> bytes:
    msg = bytes(DNS(id=ident, rd=1, qd=DNSQR(qname=name, qtype=qtype)))
    return len(msg).to_bytes(2, "big") + msg


def test_dns_over_tcp_through_the_service(cluster: kemu.EmulatedCluster) -> None:
    c = Conn(cluster, DNS_VIP, 53)
    c.open()
    q = dns_query("backend.shop.svc.cluster.local")
    (ans,) = c.send("PA", q)
    tcp = ans[TCP]
    assert ans[IP].src == DNS_VIP and tcp.sport == 53  # un-DNATed on the way back
    assert tcp.seq == c.rcv and tcp.ack == c.seq + len(q) and tcp.flags == "PA"
    payload = bytes(tcp.payload)
    n = int.from_bytes(payload[:2], "big")
    assert n == len(payload) - 2  # RFC 7766: one length-prefixed message
    msg = DNS(payload[2:])
    assert msg.id == 7 and msg.qr == 1 and msg.rcode == 0 and msg.ancount == 1
    assert msg.an[0].rdata == "10.96.0.11"
    assert_checksums(ans)


def assert_checksums(frame: Ether) -> None:
    """Scapy recomputes both checksums over the bytes as sent."""
    raw = bytes(frame[IP])
    hdr = IP(raw[:20] + b"")
    zeroed = bytearray(raw[:20])
    zeroed[10:12] = b"\0\0"
    assert checksum(bytes(zeroed)) == hdr.chksum
    seg = bytearray(raw[20: frame[IP].len])
    want = int.from_bytes(seg[16:18], "big")
    seg[16:18] = b"\0\0"
    assert in4_chksum(6, frame[IP], bytes(seg)) == want


def test_dns_over_tcp_two_queries_in_one_segment_and_a_split_one(
        cluster: kemu.EmulatedCluster) -> None:
    c = Conn(cluster, DNS_VIP, 53)
    c.open()
    two = dns_query("kube-dns.kube-system.svc.cluster.local", 1) + \
        dns_query("nope.shop.svc.cluster.local", 2)
    (ans,) = c.send("PA", two)
    c.seq += len(two)
    data = bytes(ans[TCP].payload)
    first = int.from_bytes(data[:2], "big")
    m1, m2 = DNS(data[2: 2 + first]), DNS(data[4 + first:])
    assert (m1.id, m1.rcode, m1.an[0].rdata) == (1, 0, "10.96.0.10")
    assert (m2.id, m2.rcode, m2.ancount) == (2, 3, 0)  # NXDOMAIN (D-9)
    c.rcv += len(data)
    q = dns_query("redis.shop.svc.cluster.local", 3)
    (ack,) = c.send("A", q[:5])  # the first five bytes: acknowledged, not yet answered
    assert ack[TCP].ack == c.seq + 5 and not bytes(ack[TCP].payload)
    c.seq += 5
    (ans,) = c.send("PA", q[5:])
    c.seq += len(q) - 5
    assert ans[TCP].seq == c.rcv and ans[TCP].ack == c.seq
    m3 = DNS(bytes(ans[TCP].payload)[2:])
    assert m3.id == 3 and sorted(m3.an[i].rdata for i in range(m3.ancount)) == [
        "10.244.0.5", "10.244.2.4"]


def test_fin_answered_with_fin_ack_then_forgotten(cluster: kemu.EmulatedCluster) -> None:
    c = Conn(cluster, DNS_VIP, 53)
    c.open()
    (finack,) = c.send("FA")
    assert finack[TCP].flags == "FA" and finack[TCP].ack == c.seq + 1
    assert finack[TCP].seq == c.rcv
    c.seq += 1
    assert c.send("A", ack=c.rcv + 1) == []  # the last ACK
    stacks = [s for s in cluster.engine._stacks.values() if s.streams or s.listen]
    assert not any(s.streams for s in stacks)


def test_http_request_answered_200_with_content_length(cluster: kemu.EmulatedCluster) -> None:
    c = Conn(cluster, BACKEND_VIP, 9090)
    c.open()
    req = b"GET /healthz HTTP/1.1\r\nHost: backend\r\n\r\n"
    (ans,) = c.send("PA", req)
    tcp = ans[TCP]
    assert tcp.seq == c.rcv and tcp.ack == c.seq + len(req) and tcp.flags == "PA"
    head, _, body = bytes(tcp.payload).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert f"Content-Length: {len(body)}".encode() in lines
    assert body.startswith(b"GET /healthz answered by 10.244.")


def test_http_pipelined_and_split_and_out_of_order(cluster: kemu.EmulatedCluster) -> None:
    c = Conn(cluster, BACKEND_VIP, 9090)
    c.open()
    one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    two = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    both = one + two
    # the second half first: out of order, the ACK stays at the hole (a duplicate ACK)
    (dup,) = c.send("PA", both[10:], seq=c.seq + 10)
    assert dup[TCP].ack == c.seq and not bytes(dup[TCP].payload)
    (ans,) = c.send("PA", both[:10])  # the hole filled: both requests answered, in order
    assert ans[TCP].ack == c.seq + len(both)
    data = bytes(ans[TCP].payload)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"GET /a") < data.index(b"POST /b")
    c.seq += len(both)
    c.rcv += len(data)
    # a retransmission of known bytes: acknowledged again, not answered twice
    (again,) = c.send("PA", one, seq=c.seq - len(both))
    assert again[TCP].ack == c.seq and not bytes(again[TCP].payload)


def test_http_connection_close_sends_fin_with_the_answer(cluster: kemu.EmulatedCluster
                                                         ) -> None:
    c = Conn(cluster, BACKEND_VIP, 9090)
    c.open()
    req = b"GET / HTTP/1.0\r\n\r\n"  # HTTP/1.0 without keep-alive: closed after the answer
    (ans,) = c.send("PA", req)
    assert ans[TCP].flags == "FPA" and b"Connection: close" in bytes(ans[TCP].payload)


def test_http_bad_request_and_large_answers_segmented(backend: str) -> None:
    bad = bytearray(b"\x16\x03\x01 not http\r\n")
    with pytest.raises(HttpError) as e:
        http_requests(bad)
    assert e.value.status == 400
    chunked = bytearray(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HttpError):
        http_requests(chunked)
    partial = bytearray(b"GET / HTTP/1.1\r\nHost")
    assert http_requests(partial) == [] and partial == b"GET / HTTP/1.1\r\nHost"
    # a DNS answer longer than the peer's MSS goes out in MSS-sized segments
    doc = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}",
                                                             "labels": {"app": "many"}},
            "spec": {"containers": [{"name": "c"}]}} for i in range(60)]
    doc.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "many"},
                "spec": {"clusterIP": "None", "selector": {"app": "many"},
                         "ports": [{"port": 80}]}})
    cl = kemu.load(str(EXAMPLE / "cluster.yaml"), str(EXAMPLE / "dns.yaml"),
                   str(EXAMPLE / "client.yaml"), doc, backend=backend)
    c = Conn(cl, DNS_VIP, 53)
    (synack,) = c.send("S")
    c.seq += 1
    c.rcv = synack[TCP].seq + 1  # the SYN had no MSS option: 536 (RFC 9293)
    q = dns_query("many.default.svc.cluster.local")
    segs = c.send("PA", q)
    assert len(segs) > 1 and all(len(bytes(s[TCP].payload)) <= 536 for s in segs)
    assert [s[TCP].seq for s in segs] == [
        c.rcv + sum(len(bytes(x[TCP].payload)) for x in segs[:k]) for k in range(len(segs))]
    assert [str(s[TCP].flags) for s in segs] == ["A"] * (len(segs) - 1) + ["PA"]
    for s in segs:
        assert_checksums(s)
    data = b"".join(bytes(s[TCP].payload) for s in segs)
    assert DNS(data[2:]).ancount == 60


def test_stream_reassembly_unit() -> None:
    s = TcpStream((1, 2), (3, 4), rcv_nxt=0xFFFFFFF0, snd_nxt=1)
    s.accept(0x0, b"world")  # past the hole (across the wrap)
    assert s.data == b"" and s.rcv_nxt == 0xFFFFFFF0
    s.accept(0xFFFFFFF0, b"x" * 11 + b"hello")
    assert bytes(s.data) == b"x" * 11 + b"helloworld" and s.rcv_nxt == 5
    s.accept(0xFFFFFFF5, b"zzzzzz")  # old bytes: nothing new
    assert s.received == 21


def test_reset_forgets_the_connections(cluster: kemu.EmulatedCluster) -> None:
    c = Conn(cluster, BACKEND_VIP, 9090)
    c.open()
    assert any(s.streams for s in cluster.engine._stacks.values())
    cluster.reset()
    assert not any(s.streams for s in cluster.engine._stacks.values())
    # data of the forgotten connection: no answer (its SYN was not seen)
    assert c.send("PA", b"GET / HTTP/1.1\r\n\r\n") == []


def test_host_network_pod_answers_http_over_the_nodes_stack(backend: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hn"},
           "spec": {"hostNetwork": True, "nodeName": "node2",
                    "containers": [{"name": "c", "ports": [{"containerPort": 8088}]}]}}
    cl = kemu.load(EXAMPLE, pod, backend=backend)
    c = Conn(cl, "172.18.0.3", 8088)  # node2's address: the pod's sockets are the node's
    c.open()
    req = b"GET /x HTTP/1.1\r\n\r\n"
    (ans,) = c.send("PA", req)
    assert ans[TCP].ack == c.seq + len(req) and b"200 OK" in bytes(ans[TCP].payload)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_segmentation_and_order_gives_the_same_answers(data: st.DataObject) -> None:
    """A stack fed a pipelined HTTP byte stream in random segments, in random order (with
    duplicates), acknowledges exactly the in-order prefix it holds after each segment and,
    once every byte arrived, has answered each request once, in order."""
    stream = b"".join(f"GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(3))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=8))))
    bounds = [0, *cuts, len(stream)]
    segs = [(bounds[i], stream[bounds[i]: bounds[i + 1]]) for i in range(len(bounds) - 1)]
    order = data.draw(st.permutations(segs))
    order += data.draw(st.lists(st.sampled_from(segs), max_size=3))  # retransmissions
    client, server = 0x0A000001, 0x0A000002
    stack = HostStack(server, 0x020000000002, listen={(C.PROTO_TCP, 80)})

    def frame(seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
        seg = tcp_segment(client, server, 5555, 80, seq, ack, flags, payload=payload)
        return ether(0x020000000002, 0x020000000001, 0x0800) + ipv4(client, server, 6, seg)

    (synack,) = stack.answers(frame(99, 0, 0x02))
    isn = int.from_bytes(synack[38:42], "big")
    have = bytearray(len(stream))
    got = [False] * len(stream)
    out = b""
    for off, part in order:
        answers = stack.answers(frame(100 + off, isn + 1, 0x18, part))
        have[off: off + len(part)] = part
        for k in range(off, off + len(part)):
            got[k] = True
        prefix = got.index(False) if False in got else len(got)
        assert answers, "every data segment is answered (data or an ACK)"
        assert int.from_bytes(answers[-1][42:46], "big") == 100 + prefix  # ACK at the hole
        for a in answers:
            out += a[54:]
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert [out.index(f"GET /{i} ".encode()) for i in range(3)] == sorted(
        out.index(f"GET /{i} ".encode()) for i in range(3))
