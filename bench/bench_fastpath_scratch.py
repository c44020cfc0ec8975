"""Scratch benchmark: frames/s of the Cython fast path and the pure-Python reference.

A "cluster mix" of 64-byte TCP frames over ~10k flows with warm conntrack and FDBs: half
pod -> ClusterIP with the endpoint on another node, a quarter same-node pod-to-pod, a quarter
cross-node pod-to-pod. Frames are prebuilt outside the timed region; each measurement is
the median of several repeats of ``process`` over the whole stream in batches. Run:

    PYTHONPATH=. python bench/bench_fastpath_scratch.py [--flows 10000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import struct
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

import numpy as np

from kemu import _fastpath
from kemu.compiler.compile import compile_cluster
from kemu.control.model import ClusterConfig, Endpoint, Node, Pod, Service, ServicePort
from kemu.dataplane import codes as C
from kemu.dataplane import reference
from kemu.dataplane.results import Results


@dataclass
class BenchCluster:
    config: ClusterConfig
    nodes: list[Node]
    pods: list[Pod]
    services: list[Service]
    endpoints: dict = field(default_factory=dict)
    gateway_mac: str = "02:00:00:00:00:01"
    version: int = 0

    def backends(self, svc, port):
        return self.endpoints.get((svc.key, port.name), [])


def mac(*b: int) -> str:
    return ":".join(f"{x:02x}" for x in (0x02, *b))


def build_cluster(n_nodes: int, pods_per_node: int, mode: str) -> BenchCluster:
    cfg = ClusterConfig(name="bench", mode=mode)
    nodes = [Node(f"node{i + 1}", IPv4Address(f"172.18.0.{10 + i}"),
                  IPv4Network(f"10.244.{i}.0/24"), mac=mac(1, 0, 0, 0, i),
                  bridge_mac=mac(2, 0, 0, 0, i), vtep_mac=mac(3, 0, 0, 0, i))
             for i in range(n_nodes)]
    pods = [Pod("default", f"p{i}-{k}", f"node{i + 1}", IPv4Address(f"10.244.{i}.{2 + k}"),
                mac=mac(4, 0, 0, i, k))
            for i in range(n_nodes) for k in range(pods_per_node)]
    services, eps = [], {}
    for i, pod in enumerate(pods[::4]):   # one Service per 4th pod, that pod its endpoint
        svc = Service("default", f"s{i}",
                      cluster_ip=IPv4Address(f"10.96.{i // 200}.{10 + i % 200}"),
                      ports=[ServicePort(80, "TCP", name="http")])
        services.append(svc)
        eps[(svc.key, "http")] = [(Endpoint(pod.ip, node_name=pod.node_name, pod=pod.key), 8080)]
    return BenchCluster(cfg, nodes, pods, services, eps)


def csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame64(dmac: int, smac: int, src: int, dst: int, sport: int, dport: int,
            flags: int) -> bytes:
    payload = b"\0" * 10
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 8192, 0, 0) + payload
    ph = struct.pack("!IIBBH", src, dst, 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(ph + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    f = dmac.to_bytes(6, "big") + smac.to_bytes(6, "big") + b"\x08\x00" + ip + tcp
    assert len(f) == 64
    return f


def flows(t, n_flows: int, seed: int = 1) -> list[tuple[bytes, bytes, int]]:
    """(SYN, ACK, interface) per flow, in the mix described above."""
    rng = random.Random(seed)
    pods = [(i, int(t.if_ip[i]), int(t.if_mac[i]), int(t.if_node[i]))
            for i in range(t.n_ifaces) if int(t.if_kind[i]) == C.IF_POD_ETH]
    br_mac = [int(t.if_mac[int(b)]) for b in t.node_br_if]
    svcs = [(int(t.sp_ip[sp]), int(t.be_node[int(t.sp_be_start[sp])]))
            for sp in range(len(t.sp_ip))]
    out = []
    for k in range(n_flows):
        sport = 1024 + k % 60000
        r = k % 4
        if r < 2:      # pod -> ClusterIP, endpoint on another node
            vip, be_node = rng.choice(svcs)
            c = rng.choice([p for p in pods if p[3] != be_node])
            dst, dport, dmac = vip, 80, br_mac[c[3]]
        elif r == 2:   # same node pod -> pod
            c = rng.choice(pods)
            s = rng.choice([p for p in pods if p[3] == c[3] and p != c])
            dst, dport, dmac = s[1], 8080, s[2]
        else:          # cross node pod -> pod
            c = rng.choice(pods)
            s = rng.choice([p for p in pods if p[3] != c[3]])
            dst, dport, dmac = s[1], 8080, br_mac[c[3]]
        out.append((frame64(dmac, c[2], c[1], dst, sport, dport, 0x02),
                    frame64(dmac, c[2], c[1], dst, sport, dport, 0x10), c[0]))
    return out


def arrays(frames: list[bytes], ifaces: list[int], t0: int):
    n = len(frames)
    buf = np.frombuffer(b"".join(frames), np.uint8).copy()
    lengths = np.array([len(f) for f in frames], np.int32)
    offsets = np.zeros(n, np.int64)
    offsets[1:] = np.cumsum(lengths[:-1])
    return (buf, offsets, lengths, np.array(ifaces, np.int32),
            np.full(n, C.INJ_TX, np.uint8), t0 + np.arange(n, dtype=np.int64) * 1000)


def run_stream(dp, arr, batch: int, res: Results, n_if: int) -> None:
    buf, offsets, lengths, in_if, in_mode, ts = arr
    n = len(lengths)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        res.clear()
        while start < stop:
            start = dp.process(buf, offsets, lengths, in_if, in_mode, ts, start, stop, res)
            if start < stop:
                res.grow(int(lengths[start]), n_if)


def measure(impl, t, fl, n_frames: int, batch: int, record: bool, repeats: int) -> float:
    dp = impl.Datapath(t, 0, True)
    n_if = t.n_ifaces
    warm = arrays([f[0] for f in fl] + [f[1] for f in fl], [f[2] for f in fl] * 2, 0)
    res = Results(hops=64 * batch, arena=(1 << 16) * 64 if record else 1 << 20, record=record)
    run_stream(dp, warm, 4096, res, n_if)
    rng = random.Random(2)
    picks = [rng.randrange(len(fl)) for _ in range(n_frames)]
    times = []
    for r in range(repeats):
        # the emulated clock runs on from the warm-up: FDB entries (300 s) stay fresh
        arr = arrays([fl[i][1] for i in picks], [fl[i][2] for i in picks],
                     int(warm[5][-1]) + 1000 + r * n_frames * 1000)
        t0 = time.perf_counter()
        run_stream(dp, arr, batch, res, n_if)
        times.append(time.perf_counter() - t0)
    return n_frames / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--ref-frames", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mode", default="host-gw")
    ap.add_argument("--batches", default="256,1024,4096")
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()
    cl = build_cluster(3, 40, args.mode)
    t = compile_cluster(cl)
    fl = flows(t, args.flows)
    print(f"cluster: {t.n_nodes} nodes, {t.n_ifaces} interfaces, {len(t.sp_ip)} services; "
          f"{len(fl)} flows; mode {args.mode}")
    print(f"{'backend':>10} {'record':>6} {'batch':>6} {'frames/s':>14}")
    for record in (False, True):
        for batch in (int(b) for b in args.batches.split(",")):
            fps = measure(_fastpath, t, fl, args.frames, batch, record, args.repeats)
            print(f"{'cython':>10} {str(record):>6} {batch:>6} {fps:>14,.0f}", flush=True)
        if not args.no_reference:
            fps = measure(reference, t, fl, args.ref_frames, 1024, record, 3)
            print(f"{'python':>10} {str(record):>6} {1024:>6} {fps:>14,.0f}", flush=True)


if __name__ == "__main__":
    main()
