"""kube-router mode (``spec.cni: kube-router``), kemu against the Linux kernel: what this kernel
can build of it.

The kernel cluster is built with the harness (``tests/kernel/netns.py``) from kemu's own
kube-router cluster (``examples/cni/kube-router/cluster.yaml`` with ``overlayType: subnet``,
the default: in one node network kube-router routes every peer directly), and then given
kube-router's routes exactly as kemu renders them (``kemu show routes``): each peer's pod
CIDR ``via <peer> dev eth0 proto 17``, installed with ``ip route replace`` as kube-router's
netlink call installs them (``Protocol: 0x11``). Checked:

- the kernel accepts every ``proto 17`` route kemu lists and ``ip route show proto 17``
  prints them back as kemu prints them;
- pod -> pod on one node (bridged) and across nodes (routed by those routes): the frame each
  destination pod receives (addresses, ports, TTL, flags) and the answer its listening
  socket sends back are the same in kemu, on every backend, as in the kernel.

Not built here, and tested from kube-router's documentation instead (tests/test_kube_router.py):
the IP-in-IP tunnels (this kernel has no ``ipip`` module) and IPVS (no ``ip_vs``). The
harness names the pod bridge ``cbr0``; kube-router's is ``kube-bridge`` (the name alone
differs: frames are compared by address, not by device name). Needs root, ``ip``,
``bridge`` and ``iptables-restore``; skipped otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import kemu
from kemu._backend import IMPLEMENTATIONS
from kemu.dataplane import codes as C

from .netns import KernelCluster, kernel_harness_available
from .topology import kernel_topology

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cni" / "kube-router" / "cluster.yaml"
NODES = ("node1", "node2", "node3")

_ok, _why = kernel_harness_available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"kernel harness: {_why}")


def _docs() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for d in docs:
        if d["kind"] == "Cluster":
            d["spec"]["cni"]["overlayType"] = "subnet"
    neighbour = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "neighbour", "namespace": "default",
                              "labels": {"app": "neighbour"}},
                 "spec": {"nodeName": "node1", "containers": [
                     {"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]}}
    return docs + [neighbour]


def _routes(lines: list[str]) -> list[str]:
    return sorted(" ".join(x.split()) for x in lines if " proto 17" in x)


@pytest.fixture(scope="module")
def kernel() -> Iterator[tuple[KernelCluster, Any]]:
    emu0 = kemu.load(_docs(), backend="python")
    kc = KernelCluster(kernel_topology(emu0))
    try:
        kc.build()
        kc.settle()
        for node in NODES:  # kube-router's injectRoute, as kemu renders it
            for line in _routes(emu0.routes(node)):
                kc.exec(f"node:{node}", "ip", "route", "replace", *line.split())
        yield kc, emu0
    finally:
        kc.teardown()


@pytest.mark.parametrize("node", NODES)
def test_bgp_routes_in_the_kernel(kernel: tuple[KernelCluster, Any], node: str) -> None:
    kc, emu0 = kernel
    got = kc.exec(f"node:{node}", "ip", "route", "show", "proto", "17").splitlines()
    # ``ip route show proto 17`` leaves the protocol out of each line: add it back
    got = sorted(" ".join(x.split()) + " proto 17" for x in got if x.strip())
    want = [w.replace(" proto 17", "") + " proto 17" for w in _routes(emu0.routes(node))]
    assert got == sorted(want)
    assert len(got) == len(NODES) - 1


def _fields(frame: bytes) -> tuple[Any, ...]:
    p = Ether(frame)
    return (p[IP].src, p[IP].dst, p[IP].ttl, p[TCP].sport, p[TCP].dport, str(p[TCP].flags))


def _kernel_seen(kc: KernelCluster, obs: list[Any], iface: str) -> list[tuple[Any, ...]]:
    """What ``iface`` received, without the RST the kernel client's stack sends for the
    SYN-ACK to a SYN it never sent (we injected it raw; kemu's stacks remember what they
    sent from: DIFFERENCES.md, a designed difference)."""
    return [f for f in (_fields(o.frame) for o in obs if o.iface == iface
                        and o.direction == "in" and TCP in Ether(o.frame))
            if not (f[0] == "10.244.0.2" and f[5] == "R")]


def _kemu_seen(emu: Any, trace: Any, iface: str) -> list[tuple[Any, ...]]:
    i = emu.tables.iface(iface)
    return [_fields(data) for p in trace.packets for (j, d, data, _e) in p.hops
            if j == i and d == C.DIR_IN and TCP in Ether(data)]


@pytest.mark.parametrize("backend", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize(("dst_pod", "dst_ip", "sport"), [
    ("default/neighbour", "10.244.0.3", 47001),  # the same node: bridged
    ("default/web-1", "10.244.1.2", 47002),      # node2: via 172.18.0.3 proto 17
    ("default/web-2", "10.244.2.2", 47003),      # node3
])
def test_pod_to_pod(kernel: tuple[KernelCluster, Any], backend: str, dst_pod: str,
                    dst_ip: str, sport: int) -> None:
    kc, emu0 = kernel
    emu = kemu.load(_docs(), backend=backend, respond=True)
    client = emu.tables.iface("default/client/eth0")
    br = emu.tables.iface("node1/kube-bridge")
    smac = ":".join(f"{b:02x}" for b in int(emu.tables.if_mac[client]).to_bytes(6, "big"))
    if dst_pod == "default/neighbour":
        peer = emu.tables.iface(f"{dst_pod}/eth0")
        dmac_int = int(emu.tables.if_mac[peer])
    else:
        dmac_int = int(emu.tables.if_mac[br])
    dmac = ":".join(f"{b:02x}" for b in dmac_int.to_bytes(6, "big"))
    frame = Ether(src=smac, dst=dmac) / IP(src="10.244.0.2", dst=dst_ip, ttl=64) / TCP(
        sport=sport, dport=8080, flags="S", seq=1000)
    obs = kc.run([("pod:default/client", bytes(frame))], wait=0.5)
    trace = emu.send(frame, src="default/client")
    want = _kernel_seen(kc, obs, f"{dst_pod}/eth0")
    got = _kemu_seen(emu, trace, f"{dst_pod}/eth0")
    assert want and got == want, (want, got, trace.detailed())
    # the listening socket's SYN-ACK, as the client receives it
    answers = [f for f in _kernel_seen(kc, obs, "default/client/eth0") if f[1] == "10.244.0.2"]
    assert answers and _kemu_seen(emu, trace, "default/client/eth0") == answers
