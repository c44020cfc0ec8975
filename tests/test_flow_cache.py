"""The flow cache of the Cython datapath: established flows' cached paths give exactly what
the stages give.

With recording off, ``kemu._fastpath`` runs a frame of an established flow by the path its
flow's previous frame took (``fc_try``: FDB refreshes, conntrack updates, the outcome)
instead of through the stages. Every test here runs three datapaths on the same frames:
the pure-Python reference (which has no cache), the Cython one with its flow cache and the
Cython one without it. ``Results`` and ``state()`` must be identical after every batch,
whatever happens between two frames of a flow: its conntrack entries or FDB entries
expire, its TTL runs short, TCP flags close it, a checksum breaks, a MAC moves to another
port, the API rewrites a neighbour, tables are reloaded or cleaned up. Frames come from the
benchmark's cluster mix (correctly addressed pod traffic: the paths worth caching), then
are perturbed at random by Hypothesis.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fastpath_equivalence import (
    Batch,
    assert_same_results,
    assert_same_state,
    csum,
    ether,
    ip_of,
    ipv4,
    run,
    scenario_cluster,
    tcp,
)

from kemu.bench import workloads as W
from kemu.compiler.compile import compile_cluster
from kemu.control.cluster import load_cluster
from kemu.dataplane import codes as C
from kemu.dataplane import reference
from kemu.dataplane.results import Results

try:
    from kemu import _fastpath
except ImportError:
    if os.environ.get("KEMU_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("kemu._fastpath not built (KEMU_NO_EXTENSIONS)", allow_module_level=True)
    raise

NS = 10**9
EXAMPLES = max(10, int(os.environ.get("KEMU_EQUIVALENCE_EXAMPLES", "120")) // 3)
Row = tuple[bytes, int, int, int]


def fast_datapath(t, cached: bool):
    old = _fastpath._set_flow_cache(cached)
    try:
        return _fastpath.Datapath(t, 7, True)
    finally:
        _fastpath._set_flow_cache(old)


class Trio:
    """The reference and the Cython datapath with and without its flow cache."""

    def __init__(self, t, record: bool = False) -> None:
        self.t = t
        self.ref = reference.Datapath(t, 7, True)
        self.cached = fast_datapath(t, True)
        self.plain = fast_datapath(t, False)
        self.res = [Results(64, 1 << 16, record) for _ in range(3)]

    @property
    def dps(self) -> tuple:
        return self.ref, self.cached, self.plain

    def batch(self, rows: list[Row]) -> None:
        b = Batch.of(rows)
        calls = [run(dp, res, b, self.t.n_ifaces)
                 for dp, res in zip(self.dps, self.res, strict=True)]
        assert calls[1] == calls[0] and calls[2] == calls[0]
        for k in (1, 2):
            assert_same_results(self.res[0], self.res[k])
            assert_same_state(self.ref, self.dps[k])
        for res in self.res:
            res.clear()

    def both(self, method: str, *args) -> None:
        for dp in self.dps:
            getattr(dp, method)(*args)
        for k in (1, 2):
            assert_same_state(self.ref, self.dps[k])


def mix_rows(nodes: int = 3, pods: int = 24, services: int = 6, flows: int = 40,
             frames: int = 600, mode: str = "host-gw") -> tuple:
    """A small cluster and its cluster mix (warm-up first) as rows; ``mode`` flannel's
    backend, kube-router (``kube-router``, ``kube-router-full``) or Cilium (``cilium``,
    ``cilium-native``: issue #18)."""
    cni = None
    if mode.startswith("kube-router"):
        cni = {"name": "kube-router", "overlayType": "full" if mode.endswith("full")
               else "subnet"}
        mode = "host-gw"
    if mode.startswith("cilium"):  # Cilium (issue #18): tunnel, or native routing
        cni = {"name": "cilium", "routingMode": "native" if mode.endswith("native")
               else "tunnel"}
        mode = "host-gw"
    if mode.startswith("antrea"):  # br-int's pipeline (the ovs room): Geneve, GRE, noEncap
        cni = {"name": "antrea", **({"trafficEncapMode": "noEncap"} if mode == "antrea-noEncap"
                                    else {"tunnelType": "gre"} if mode == "antrea-gre" else {})}
        mode = "host-gw"
    t = compile_cluster(load_cluster(W.synthetic_cluster(nodes, pods, services, mode=mode,
                                                         cni=cni)))
    w = W.cluster_mix(t, flows, frames, seed=3)
    rows: list[Row] = []
    for part in (w.warm, w):
        rows += [(part.frame(i), int(part.in_if[i]), int(part.in_mode[i]),
                  int(part.ts_ns[i])) for i in range(len(part))]
    return t, rows, len(w.warm)


def with_ip_header(frame: bytes, **fields: int) -> bytes:
    """The frame with IPv4 header fields replaced (ttl, frag) and its checksum redone."""
    h = bytearray(frame[14:34])
    if "ttl" in fields:
        h[8] = fields["ttl"]
    if "frag" in fields:
        h[6:8] = struct.pack("!H", fields["frag"])
    h[10:12] = b"\0\0"
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return frame[:14] + bytes(h) + frame[34:]


def perturb(rows: list[Row], kind: int, rng: random.Random, t) -> list[Row]:
    """One kind of trouble for some of the frames (their times are kept)."""
    out = []
    pods = [i for i, k in enumerate(t.if_kind) if int(k) == C.IF_POD_ETH]
    for frame, iface, mode, ts in rows:
        if rng.random() < 0.3:
            if kind == 0:    # TTL too short for the path (1..3 routing hops)
                frame = with_ip_header(frame, ttl=rng.randint(0, 3))
            elif kind == 1 and frame[23] == C.PROTO_TCP:    # SYN, FIN, RST, no flags
                b = bytearray(frame)
                b[47] = rng.choice([0x02, 0x01, 0x04, 0x11, 0x00, 0x12])
                frame = bytes(b)
            elif kind == 2:  # a broken IPv4 header checksum
                b = bytearray(frame)
                b[24] ^= 0x5A
                frame = bytes(b)
            elif kind == 3:  # the pod's MAC seen on another pod's port
                iface = rng.choice(pods)
            elif kind == 4:  # fragments, options, short frames, padding
                frame = rng.choice([with_ip_header(frame, frag=0x2000),
                                    with_ip_header(frame, frag=0x0001),
                                    frame[:rng.randint(14, len(frame) - 1)],
                                    frame + b"\0" * rng.randint(1, 8)])
        out.append((frame, iface, mode, ts))
    return out


def shifted(rows: list[Row], ns: int) -> list[Row]:
    return [(f, i, m, ts + ns) for f, i, m, ts in rows]


@pytest.mark.parametrize("mode", ["host-gw", "kube-router", "cilium-native", "antrea",
                                  "antrea-noEncap"])
def test_established_flows_take_the_cache(mode: str) -> None:
    """The cluster mix replayed: after the first frame of each flow, its frames come from
    the cache; the same frames with recording on never do; nothing differs (kube-router:
    IPVS-translated flows are cached as kube-proxy's are)."""
    t, rows, n_warm = mix_rows(mode=mode)
    trio = Trio(t)
    trio.batch(rows)
    first = trio.cached.flow_cache_hits
    assert first > 0
    trio.batch(shifted(rows[n_warm:], 10**9))
    assert trio.cached.flow_cache_hits - first >= 0.9 * (len(rows) - n_warm)
    assert trio.plain.flow_cache_hits == 0
    recording = Trio(t, record=True)
    recording.batch(rows)
    assert recording.cached.flow_cache_hits == 0


@pytest.mark.parametrize("mode", ["host-gw", "vxlan", "kube-router", "kube-router-full",
                                  "cilium", "cilium-native", "antrea",
                                  "antrea-gre", "antrea-noEncap"])
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       steps=st.lists(st.integers(0, 11), min_size=1, max_size=6))
def test_flow_cache_gives_what_the_stages_give(mode: str, seed: int, steps: list[int]) -> None:
    t, rows, n_warm = mix_rows(mode=mode)
    rng = random.Random(seed)
    trio = Trio(t)
    trio.batch(rows)
    timed = rows[n_warm:]
    clock = 0
    for step in steps:
        clock += 10**9
        part = rng.sample(timed, k=min(len(timed), rng.randint(50, 300)))
        part.sort(key=lambda r: r[3])
        if step <= 4:
            part = perturb(part, step, rng, t)
        elif step == 5:      # past FDB ageing (300 s), within TCP's established timeout
            clock += 301 * NS
        elif step == 6:      # past every conntrack timeout
            clock += 86_401 * NS
        elif step == 7:      # a neighbour rewritten by the API (a MAC that is or is not)
            node = rng.randrange(t.n_nodes)
            ip = int(rng.choice([int(x) for x in t.if_ip if int(x)]))
            mac = rng.choice([int(x) for x in t.if_mac if int(x)] + [0x02AA00000001, -1])
            trio.both("neigh_set", node, ip, mac)
        elif step == 8:
            trio.both("cleanup", part[0][3] + clock + rng.choice([0, 31, 301]) * NS)
        elif step == 9:
            trio.both("load", t)
        elif step == 10:
            trio.both("reset")
            trio.batch(shifted(rows[:n_warm], clock))
        trio.batch(shifted(part, clock))


def test_a_new_flow_taking_a_cached_flows_reply_key() -> None:
    """c0 -> ClusterIP:80 (DNAT to a backend) is established and its replies cached; then
    c0 opens the same ports to that backend directly: the new entry takes the reply key
    (conntrack overwrites it), so the backend's next reply belongs to the new flow. The
    cached path of the old one must not be used (the old entry lost a key: a new
    incarnation) — the reference updates the new entry, and so must the cache."""
    cl = scenario_cluster("host-gw")
    t = compile_cluster(cl)
    pod_if = {ip: i for i, ip in enumerate(int(x) for x in t.if_ip)
              if int(t.if_kind[i]) == C.IF_POD_ETH}
    bridge_mac = {int(t.if_node[i]): int(t.if_mac[i]) for i in range(t.n_ifaces)
                  if int(t.if_kind[i]) == C.IF_BRIDGE}
    c0, vip = ip_of("10.244.0.2"), ip_of("10.96.0.10")
    trio = Trio(t)
    clock = [0]

    def send(src: int, dst: int, sport: int, dport: int, flags: int) -> Row:
        clock[0] += 1000
        i = pod_if[src]
        node = int(t.if_node[i])
        same = (dst & 0xFFFFFF00) == (src & 0xFFFFFF00) and dst in pod_if
        dmac = int(t.if_mac[pod_if[dst]]) if same else bridge_mac[node]
        frame = ether(dmac, int(t.if_mac[i]), 0x0800,
                      ipv4(src, dst, C.PROTO_TCP, tcp(src, dst, sport, dport, flags)))
        return frame, i, C.INJ_TX, clock[0]

    trio.batch([send(c0, vip, 1000, 80, 0x02)])
    (entry,) = [e for e in trio.ref.state()["conntrack"] if e[1] == C.PROTO_TCP
                and e[2] == c0 and e[4] == vip]
    backend = entry[7]  # the reply's source: the backend DNAT chose
    rows = [send(backend, c0, 8080, 1000, 0x12), send(c0, vip, 1000, 80, 0x10)]
    rows += [send(backend, c0, 8080, 1000, 0x10) for _ in range(4)]
    trio.batch(rows)
    hits = trio.cached.flow_cache_hits
    assert hits >= 2, "the established replies were not cached"
    trio.batch([send(c0, backend, 1000, 8080, 0x02)])          # takes the reply key
    trio.batch([send(backend, c0, 8080, 1000, 0x12), send(backend, c0, 8080, 1000, 0x10),
                send(backend, c0, 8080, 1000, 0x10)])
