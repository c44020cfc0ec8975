"""Generate ``examples/capture.pcap``: traffic of the example cluster, crafted with Scapy.

What the pods and hosts of ``examples/cluster`` transmit, both directions, as a capture
merged from their interfaces would hold it (replies come from the serving pod's own address;
kemu's conntrack turns them back into the Service's address):

1. the client pod asks kube-dns for ``backend.shop.svc.cluster.local`` (UDP), and the answer;
2. the client pod opens a TCP connection to the ``backend`` ClusterIP (handshake, a request,
   the response, FIN);
3. cross-node pod-to-pod: a frontend pod pings a redis pod on another node (ICMP echo);
4. the external host ``client`` reaches the ``frontend`` NodePort on node1 (SYN, SYN-ACK);
5. the client pod connects to ``legacy``, a Service without endpoints (REJECTed).

Deterministic: the same cluster gives the same bytes. Which backend serves a connection is
kemu's seeded choice, so the script asks kemu which pod it picks and answers from that pod.
Run: ``python examples/make_capture.py [OUT]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

import kemu

HERE = Path(__file__).resolve().parent
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def main(out: str = str(HERE / "capture.pcap")) -> None:
    emu = kemu.load(HERE / "cluster", respond=False)
    m = emu.model
    pod = {p.key: p for p in m.pods}
    client = pod["default/client"]
    svc = {s.key: s for s in m.services}
    frames: list = []
    clock = [T0]

    def add(pkt, src_mac: str, dst_mac: str = "02:00:00:00:00:00") -> None:
        f = Ether(src=src_mac, dst=dst_mac) / pkt
        f.time = clock[0]
        clock[0] += 0.001
        frames.append(f)

    def chosen(pkt, src: str) -> str:
        """The pod kemu's datapath delivers this packet to."""
        return delivery(pkt, src)[0]

    def delivery(pkt, src: str) -> tuple[str, IP]:
        """(pod, the packet as that pod receives it) for a packet kemu delivers."""
        tr = emu.send(pkt, src=src)
        return tr.delivered_to(0)[0].removeprefix("pod "), Ether(tr.first.hops[-1][2])[IP]

    cip = str(client.ip)
    # 1. DNS
    dns_ip = str(svc["kube-system/kube-dns"].cluster_ip)
    q = IP(src=cip, dst=dns_ip) / UDP(sport=41000, dport=53) / DNS(
        id=0x1234, rd=1, qd=DNSQR(qname="backend.shop.svc.cluster.local"))
    server = pod[chosen(q, "default/client")]
    add(q, client.mac)
    add(IP(src=str(server.ip), dst=cip) / UDP(sport=53, dport=41000) / DNS(
        id=0x1234, qr=1, aa=1, rd=1, ra=1, qd=DNSQR(qname="backend.shop.svc.cluster.local"),
        an=DNSRR(rrname="backend.shop.svc.cluster.local", ttl=5,
                 rdata=str(svc["shop/backend"].cluster_ip))), server.mac)
    # 2. TCP to the backend ClusterIP
    bip = str(svc["shop/backend"].cluster_ip)
    bport = svc["shop/backend"].ports[0].port
    syn = IP(src=cip, dst=bip) / TCP(sport=42000, dport=bport, flags="S", seq=1000)
    be = pod[chosen(syn, "default/client")]
    tport = be.container_ports()[0].port
    req = b"GET /api/orders HTTP/1.1\r\nHost: backend\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"
    add(syn, client.mac)
    add(IP(src=str(be.ip), dst=cip) / TCP(sport=tport, dport=42000, flags="SA", seq=5000,
                                          ack=1001), be.mac)
    add(IP(src=cip, dst=bip) / TCP(sport=42000, dport=bport, flags="A", seq=1001, ack=5001),
        client.mac)
    add(IP(src=cip, dst=bip) / TCP(sport=42000, dport=bport, flags="PA", seq=1001, ack=5001)
        / req, client.mac)
    add(IP(src=str(be.ip), dst=cip) / TCP(sport=tport, dport=42000, flags="PA", seq=5001,
                                          ack=1001 + len(req)) / resp, be.mac)
    add(IP(src=cip, dst=bip) / TCP(sport=42000, dport=bport, flags="FA", seq=1001 + len(req),
                                   ack=5001 + len(resp)), client.mac)
    add(IP(src=str(be.ip), dst=cip) / TCP(sport=tport, dport=42000, flags="FA",
                                          seq=5001 + len(resp), ack=1002 + len(req)), be.mac)
    # 3. cross-node ping between a frontend pod and a redis pod on another node
    fe = next(p for p in m.pods if p.labels.get("app") == "frontend")
    rd = next(p for p in m.pods if p.name.startswith("redis") and p.node_name != fe.node_name)
    add(IP(src=str(fe.ip), dst=str(rd.ip)) / ICMP(id=7, seq=1) / (b"kemu" * 8), fe.mac)
    add(IP(src=str(rd.ip), dst=str(fe.ip)) / ICMP(type=0, id=7, seq=1) / (b"kemu" * 8), rd.mac)
    # 4. external host -> NodePort on node1
    ext = next(h for h in m.config.external_hosts if h.name == "client")
    node1 = m.nodes[0]
    np_port = svc["shop/frontend"].ports[0].node_port
    nsyn = IP(src=str(ext.ip), dst=str(node1.internal_ip)) / TCP(sport=50000, dport=np_port,
                                                                 flags="S", seq=77)
    web_key, seen = delivery(nsyn, "ext/client")
    web = pod[web_key]
    add(nsyn, ext.mac)
    # the pod answers the masqueraded connection (E-1): to the address it saw
    add(IP(src=str(web.ip), dst=seen.src) / TCP(
        sport=web.container_ports()[0].port, dport=seen[TCP].sport, flags="SA", seq=900,
        ack=78), web.mac)
    # 5. a Service without endpoints
    lip = str(svc["shop/legacy"].cluster_ip)
    add(IP(src=cip, dst=lip) / TCP(sport=43000, dport=80, flags="S", seq=1), client.mac)
    wrpcap(out, frames)
    print(f"wrote {len(frames)} frames to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
