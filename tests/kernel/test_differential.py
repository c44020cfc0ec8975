"""Differential tests: kemu against the real Linux kernel, hop by hop, on the same cluster.

The kernel cluster is built once per module from kemu's own scenario cluster
(``tests/data/scenario``) with ``kernel_topology`` (same nodes, IPs, MACs, pod CIDRs, bridge
addresses, veth names and MACs, listeners, external hosts, gateway, Services as kemu resolved
them); each test loads a fresh kemu (``respond=True``, static neighbours) for every data-plane
backend this build has, injects the same Ethernet frames at the same place in both, and
compares what every interface saw:

* per interface (kemu's names; the kernel's veth names are mapped back), the ordered list of
  ``(direction, decisive fields)``; the decisive fields are src/dst IP and ports, TTL, DF, TCP
  flags, ICMP type/code/id and the quoted header of ICMP errors (addresses, ports, TTL), ARP op
  and addresses, and the Ethernet source/destination named by owner (``default/a``,
  ``node1/cbr0``, ``node2/eth0``, ``gateway``, ...), never as raw MACs;
* for linear paths also the global order of hops (kernel timestamps vs kemu's hop order).

Both sides start each test the same way: static neighbours, every bridge has learned every MAC
(``kc.learn_macs()`` in the kernel, one broadcast 0x88b5 frame from every pod, node, external
host and the gateway in kemu), and no cached neighbour header (the kernel's permanent
neighbour entries of the pods are re-created before each test, so the first bridged-DNAT packet
behaves as in a fresh kemu). Source ports and ICMP ids are fresh per test (conntrack is not
flushed between tests in the kernel).

Not compared (a designed difference of kemu's emulated stacks, see DIFFERENCES.md): what a
sender's stack does with answers to frames we injected raw. A kernel pod/host has no socket
for them and answers with RST (TCP) or ICMP port unreachable (UDP); kemu's stacks remember the
source ports they sent from and stay silent. Those frames are removed from the kernel side only
after checking they are exactly that.

The harness's node-network switch ports (``net/*``) have no kemu counterpart and are dropped.
Each scenario runs in the kernel once and its capture is reused for every kemu backend.
``KEMU_DIFF_SHOW=1`` (with ``-s``) prints both sides of every comparison. Needs root, ``ip``,
``bridge`` and ``iptables(-restore)``; skipped otherwise. Every difference seen and why it is
(or is not) accepted: DIFFERENCES.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import ARP, Ether

import kemu
from kemu.dataplane import codes as C

from .netns import (
    SO_TIMESTAMPNS,
    Decoded,
    KernelCluster,
    Obs,
    decode,
    in_netns,
    missing_for,
)
from .topology import HARNESS_ONLY_PREFIXES, interface_map, kernel_topology, mac_roles

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenario"

# addresses of tests/data/scenario (asserted against kemu's model in the fixture)
A, B, C_, D = "10.244.0.2", "10.244.0.3", "10.244.1.2", "10.244.2.2"
BR1, BR2 = "10.244.0.1", "10.244.1.1"
NODE1, NODE2, NODE3 = "172.18.0.2", "172.18.0.3", "172.18.0.4"
CLIENT, WEB, GW = "172.18.0.100", "172.18.0.200", "172.18.0.1"
SVC_A, SVC_B, SVC_C, SVC_CD, SVC_NONE = (f"10.96.0.2{i}" for i in range(5))
NP_A, NP_C = 30080, 30081
BCAST = "ff:ff:ff:ff:ff:ff"


_WHY_SKIP = missing_for("kernel differential tests",
                        ("ip", "bridge", "iptables", "iptables-restore"))
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(_WHY_SKIP is not None, reason=_WHY_SKIP or "")]


# --------------------------------------------------------------------------------------------
# rows: one frame seen on one interface in one direction, decisive fields only


@dataclass(frozen=True)
class Row:
    iface: str        # kemu's interface name
    direction: str    # "in" | "out"
    what: str         # decisive fields, MACs named by owner
    d: Decoded

    def __str__(self) -> str:
        return f"{self.iface:22s} {self.direction:3s} {self.what}"


def _ep(ip: str | None, port: int | None) -> str:
    return f"{ip}:{port}" if port is not None else str(ip)


def summary(frame: bytes, roles: dict[str, str]) -> tuple[str, Decoded]:
    d = decode(frame)

    def r(mac: str | None) -> str:
        return roles.get((mac or "").lower(), mac or "?")

    head = f"{r(d.src_mac)}>{r(d.dst_mac)}"
    if d.arp_op is not None:
        return (f"{head} ARP op={d.arp_op} {d.arp_psrc}->{d.arp_pdst} hw={r(d.arp_hwsrc)}", d)
    if d.src is None:
        return f"{head} ethertype=0x{d.ethertype:04x}", d
    s = f"{head} {d.l4.upper()} {_ep(d.src, d.sport)}>{_ep(d.dst, d.dport)} ttl={d.ttl}"
    if d.df:
        s += " DF"
    if d.proto == 6:
        s += f" [{d.flags}]"
    elif d.proto == 1:
        s += f" type={d.icmp_type}/{d.icmp_code}"
        if d.icmp_type == 3 and d.icmp_code == 4 and len(frame) >= 14 + 20 + 8:
            l4 = 14 + (frame[14] & 0xF) * 4  # RFC 1191: the next-hop MTU
            s += f" mtu={int.from_bytes(frame[l4 + 6:l4 + 8], 'big')}"
        if d.icmp_id is not None:
            s += f" id={d.icmp_id}"
        if d.inner is not None:
            i = d.inner
            s += (f" quoting[{i.l4} {_ep(i.src, i.sport)}>{_ep(i.dst, i.dport)} "
                  f"ttl={i.ttl}]")
    return s, d


def fmt(rows: list[Row]) -> str:
    return "\n".join(f"    {r}" for r in rows) or "    (nothing)"


# --------------------------------------------------------------------------------------------
# the two clusters


@dataclass
class Kernel:
    kc: KernelCluster
    topo: dict[str, Any]
    to_kemu: dict[str, str]          # harness Obs.iface -> kemu interface name
    roles: dict[str, str]
    # a scenario's kernel capture, reused by every kemu backend: (test name, call no.) -> obs
    cache: dict[tuple[str, int], list[Obs]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)      # test name -> first port


def _timestamp_keeper() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return s


def _wait_for_timestamps(kc: KernelCluster, topo: dict[str, Any]) -> None:
    """Until a probe ping a -> b is seen with distinct, causally ordered kernel timestamps."""
    a, b = topo["pods"][0], topo["pods"][1]
    for n in range(50):
        f = (Ether(src=a["mac"], dst=b["mac"]) / IP(src=a["ip"], dst=b["ip"])
             / ICMP(id=100 + n))
        obs = [o for o in kc.run([(f"pod:{a['key']}", f)], wait=0.05)
               if o.d.icmp_type == 8 and o.iface.endswith("/eth0")]
        if [o.direction for o in obs] == ["out", "in"] and obs[0].ts_ns < obs[1].ts_ns:
            return
        time.sleep(0.05)
    raise AssertionError("the kernel does not timestamp captured frames")


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    emu0 = kemu.load(SCENARIO, backend="python")
    topo = kernel_topology(emu0)
    to_kemu = {v: k for k, v in interface_map(emu0).items()}
    kc = KernelCluster(topo)
    keeper: socket.socket | None = None
    try:
        kc.build()
        kc.settle()
        # The harness opens its capture sockets per run. With no other socket asking for
        # timestamps, the kernel enables packet timestamping from a workqueue
        # (net_enable_timestamp), so under load the first frames of a run can miss their
        # receive stamp and are stamped when drained: the hop order is lost. One socket with
        # SO_TIMESTAMPNS held open for the module (in the harness's switch netns) keeps
        # timestamping on for every run.
        keeper = in_netns(kc.netns["net"], _timestamp_keeper)
        _wait_for_timestamps(kc, topo)
        yield Kernel(kc, topo, to_kemu, mac_roles(emu0))
    finally:
        if keeper is not None:
            keeper.close()
        kc.teardown()


def _learn(emu: Any) -> None:
    """kemu's ``learn_macs``: one broadcast 0x88b5 frame from every pod, node, host, gateway."""
    t = emu.tables
    for i, name in enumerate(t.if_name):
        if int(t.if_kind[i]) in (C.IF_POD_ETH, C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH):
            src = int(t.if_mac[i]).to_bytes(6, "big")
            emu.send(b"\xff" * 6 + src + b"\x88\xb5" + b"kemu-learn".ljust(46, b"\0"), src=name)


def _forget_neighbour_headers(k: Kernel) -> None:
    """Re-create every node's permanent neighbour entries of its pods (on cbr0): the new entries
    have no cached hardware header, as in a freshly built cluster (and a fresh kemu)."""
    for n in k.topo["nodes"]:
        lines = []
        for p in k.topo["pods"]:
            if p["node"] == n["name"]:
                lines += [f"neigh del {p['ip']} dev cbr0",
                          f"neigh replace {p['ip']} lladdr {p['mac']} dev cbr0 nud permanent"]
        if lines:
            subprocess.run(["ip", "-n", k.kc.netns[f"node:{n['name']}"], "-batch", "-"],
                           input="\n".join(lines) + "\n", text=True, check=True,
                           capture_output=True, timeout=10)


@dataclass
class Pair:
    """The kernel cluster and one fresh kemu, driven together for one test."""

    k: Kernel
    emu: Any
    name: str                        # the test (without the backend parameter)
    backend: str
    port: int                        # first of this test's 100 ports (and ICMP ids)
    calls: int = 0
    prepared: bool = False

    def __post_init__(self) -> None:
        model = self.emu.model
        self.mac = {p.key: p.mac.lower() for p in model.pods}
        self.mac.update({f"{n.name}/cbr0": n.bridge_mac.lower() for n in model.nodes})
        self.mac.update({f"{n.name}/eth0": n.mac.lower() for n in model.nodes})
        self.mac.update({f"ext/{h.name}": h.mac.lower() for h in model.config.external_hosts})
        self.mac["gateway"] = model.gateway_mac.lower()

    # ---- driving
    def kernel_run(self, frames: list[tuple[str, bytes]], wait: float = 0.3, gap: float = 0.02,
                   env: Callable[[], Any] | None = None) -> list[Obs]:
        """The kernel's observations of ``frames`` (run once per scenario, then cached for the
        other backends). ``env``: a context manager factory wrapped around the kernel run."""
        key = (self.name, self.calls)
        self.calls += 1
        if key not in self.k.cache:
            if not self.prepared:
                _forget_neighbour_headers(self.k)
                self.k.kc.learn_macs()
                self.prepared = True
            with env() if env is not None else contextlib.nullcontext():
                self.k.cache[key] = self.k.kc.run(frames, wait=wait, gap=gap)
        return self.k.cache[key]

    def kemu_run(self, frames: list[tuple[str, bytes]]) -> list[Row]:
        rows: list[Row] = []
        for where, f in frames:
            rows.extend(self.kemu_rows(self.emu.send(f, src=_kemu_src(where))))
        return rows

    def run(self, injections: list[tuple[str, Any]], wait: float = 0.3, gap: float = 0.02,
            env: Callable[[], Any] | None = None) -> tuple[list[Row], list[Row]]:
        """Inject each (where, frame) into both; ``where`` is the harness's (``pod:default/a``,
        ``ext:client``, ``node:node1``). Returns (kernel rows, kemu rows)."""
        frames = [(w, bytes(f)) for w, f in injections]
        krows = self.kernel_rows(self.kernel_run(frames, wait, gap, env))
        return krows, self.kemu_run(frames)

    def kernel_rows(self, obs: list[Obs]) -> list[Row]:
        rows = []
        for o in obs:
            if o.iface.startswith(HARNESS_ONLY_PREFIXES) or (
                    o.iface.endswith("/lo") and o.iface.count("/") == 1):
                continue            # node-network switch ports, nodes' lo: not in kemu
            name = self.k.to_kemu.get(o.iface)
            assert name is not None, f"harness interface {o.iface} has no kemu counterpart"
            what, d = summary(o.frame, self.k.roles)
            rows.append(Row(name, o.direction, what, d))
        return rows

    def kemu_rows(self, trace: Any) -> list[Row]:
        t = self.emu.tables
        rows = []
        for p in trace.packets:
            for iface, direction, frame, _events in p.hops:
                if int(t.if_kind[iface]) == C.IF_NODE_LOCAL:
                    continue        # the node's processes: never captured
                what, d = summary(frame, self.k.roles)
                rows.append(Row(t.if_name[iface], "in" if direction == C.DIR_IN else "out",
                                what, d))
        return rows


def _kemu_src(where: str) -> str:
    kind, _, name = where.partition(":")
    return {"pod": name, "ext": f"ext/{name}", "node": f"{name}/eth0"}.get(kind, where)


@pytest.fixture
def pair(kernel: Kernel, backend: str, request: pytest.FixtureRequest) -> Pair:
    name = request.node.originalname
    port = kernel.ports.setdefault(name, 40000 + 100 * len(kernel.ports))
    emu = kemu.load(SCENARIO, backend=backend, respond=True, static_neighbours=True, seed=0)
    _check_scenario(emu)
    _learn(emu)
    return Pair(kernel, emu, name, backend, port)


def _check_scenario(emu: Any) -> None:
    pods = {p.key: str(p.ip) for p in emu.model.pods}
    assert pods == {"default/a": A, "default/b": B, "default/c": C_, "default/d": D}
    svcs = {s.name: str(s.cluster_ip) for s in emu.model.services}
    assert (svcs["svc-a"], svcs["svc-b"], svcs["svc-c"], svcs["svc-cd"], svcs["svc-none"]) == (
        SVC_A, SVC_B, SVC_C, SVC_CD, SVC_NONE)
    assert [str(n.internal_ip) for n in emu.model.nodes] == [NODE1, NODE2, NODE3]


# --------------------------------------------------------------------------------------------
# comparison


def _per_iface(rows: list[Row]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        out.setdefault(r.iface, []).append((r.direction, r.what))
    return out


def compare(krows: list[Row], erows: list[Row], *, ordered: bool = True,
            keep: Callable[[Row], bool] | None = None) -> None:
    """Assert kemu saw what the kernel saw: per interface, in order, on the decisive fields;
    with ``ordered`` also the global hop sequence (linear paths only; floods reach ports in
    the kernel's port-list order)."""
    if keep is not None:
        krows = [r for r in krows if keep(r)]
        erows = [r for r in erows if keep(r)]
    msg = f"\n  kernel:\n{fmt(krows)}\n  kemu:\n{fmt(erows)}"
    if os.environ.get("KEMU_DIFF_SHOW"):
        print(msg)
    assert krows, f"the kernel saw nothing of this flow:{msg}"
    kd, ed = _per_iface(krows), _per_iface(erows)
    for iface in sorted(set(kd) | set(ed)):
        assert kd.get(iface, []) == ed.get(iface, []), f"interface {iface} differs:{msg}"
    if ordered:
        assert [str(r) for r in krows] == [str(r) for r in erows], f"hop order differs:{msg}"


def flow(*ports: int) -> Callable[[Row], bool]:
    """Rows of TCP/UDP flows using one of ``ports`` (either side) and ICMP errors quoting them."""
    want = set(ports)

    def keep(r: Row) -> bool:
        d = r.d
        if d.proto in (6, 17):
            return bool({d.sport, d.dport} & want)
        if d.proto == 1 and d.inner is not None:
            return bool({d.inner.sport, d.inner.dport} & want)
        return False
    return keep


def drop_stack_answers(krows: list[Row], sender: str, kind: str, ports: set[int]) -> list[Row]:
    """Remove the raw sender's own answers to the replies (see the module docstring): TCP RSTs
    (``kind="tcp"``) or ICMP port unreachables (``kind="udp"``) that ``sender`` (an interface
    name prefix, ``default/a`` / ``ext/client``) sends on its flows, every hop of them.
    Asserts the kernel really sent them from ``sender``."""
    def is_answer(r: Row) -> bool:
        d = r.d
        if kind == "tcp":
            return d.proto == 6 and d.flags is not None and "R" in d.flags and bool(
                {d.sport, d.dport} & ports)
        return (d.proto == 1 and d.icmp_type == 3 and d.icmp_code == 3 and d.inner is not None
                and d.inner.dport in ports and d.inner.proto == 17)
    gone = [r for r in krows if is_answer(r)]
    assert gone and gone[0].iface == f"{sender}/eth0" and gone[0].direction == "out", (
        f"expected {sender}'s stack to answer first:\n{fmt(gone)}")
    return [r for r in krows if not is_answer(r)]


def is_arp(r: Row) -> bool:
    return r.d.arp_op is not None


def icmp_id(ident: int) -> Callable[[Row], bool]:
    """ICMP echo request/reply rows with this id."""
    return lambda r: r.d.proto == 1 and r.d.icmp_id == ident


def quoting(r: Row, dst: str) -> bool:
    """An ICMP error quoting a packet to ``dst``."""
    return r.d.inner is not None and r.d.inner.dst == dst


def dns_query(name: str) -> Any:
    return DNS(id=0x4B4B, rd=1, qd=DNSQR(qname=name))


def _endpoint_of(rows: list[Row], sport: int) -> str | None:
    """The svc-cd endpoint (pod IP) that received the SYN from client port ``sport``."""
    hit = [r.d.dst for r in rows if r.d.proto == 6 and r.d.sport == sport and r.d.flags == "S"
           and r.direction == "in" and r.iface in ("default/c/eth0", "default/d/eth0")]
    return hit[0] if len(hit) == 1 else None


def _rename_port(rows: list[Row], port: int) -> list[str]:
    """Rows as text with a's client port written as ``*`` (to compare two flows)."""
    return [str(r).replace(f"{A}:{port}", f"{A}:*").replace(f"{BR1}:{port}", f"{BR1}:*")
            for r in rows]


def tcp_syn(src: str, dst: str, sport: int, dport: int, smac: str, dmac: str,
            ttl: int = 64) -> Any:
    return (Ether(src=smac, dst=dmac) / IP(src=src, dst=dst, ttl=ttl)
            / TCP(sport=sport, dport=dport, flags="S", seq=1000))


def from_a(p: Pair, dst: str, sport: int, dport: int, ttl: int = 64) -> tuple[str, Any]:
    return ("pod:default/a", tcp_syn(A, dst, sport, dport, p.mac["default/a"],
                                     p.mac["node1/cbr0"], ttl))


def from_client(p: Pair, dst: str, sport: int, dport: int, via: str = "node1/eth0"
                ) -> tuple[str, Any]:
    return ("ext:client", tcp_syn(CLIENT, dst, sport, dport, p.mac["ext/client"], p.mac[via]))


# --------------------------------------------------------------------------------------------
# L2: bridge learning, flooding, hairpin, ARP (L2-1, L2-3, L2-4, L2-5)


def test_arp_for_pod_gateway(pair: Pair) -> None:
    """L2-3 (a broadcast floods to every port and up to cbr0), L2-4 (hairpin on: reflected back
    out of the sender's own port too), L2-5 (the bridge answers for its own IP, unicast)."""
    p = pair
    req = Ether(src=p.mac["default/a"], dst=BCAST) / ARP(
        op=1, hwsrc=p.mac["default/a"], psrc=A, pdst=BR1)
    k, e = p.run([("pod:default/a", req)])
    compare(k, e, ordered=False, keep=is_arp)
    compare(k, e, keep=lambda r: r.d.arp_op == 2)           # the reply is a linear path


def test_arp_for_pod_on_same_bridge(pair: Pair) -> None:
    """L2-5 (pods on the same bridge ARP each other directly; b answers, unicast), L2-3, L2-4."""
    p = pair
    req = Ether(src=p.mac["default/a"], dst=BCAST) / ARP(
        op=1, hwsrc=p.mac["default/a"], psrc=A, pdst=B)
    k, e = p.run([("pod:default/a", req)])
    compare(k, e, ordered=False, keep=is_arp)
    compare(k, e, keep=lambda r: r.d.arp_op == 2)


def test_arp_for_node_network_gateway(pair: Pair) -> None:
    """L2-3 on the node network (the request reaches every node, host and the gateway), L2-5
    (the gateway answers)."""
    p = pair
    req = Ether(src=p.mac["ext/client"], dst=BCAST) / ARP(
        op=1, hwsrc=p.mac["ext/client"], psrc=CLIENT, pdst=GW)
    k, e = p.run([("ext:client", req)])
    compare(k, e, ordered=False, keep=is_arp)
    compare(k, e, keep=lambda r: r.d.arp_op == 2)


def test_icmp_same_node(pair: Pair) -> None:
    """L2-1, L2-3 (learned: unicast a -> b and back), M-1 (no NAT): bridged, TTL 64
    everywhere, MACs untouched, never on cbr0."""
    p = pair
    ping = (Ether(src=p.mac["default/a"], dst=p.mac["default/b"]) / IP(src=A, dst=B)
            / ICMP(id=p.port, seq=1))
    k, e = p.run([("pod:default/a", ping)])
    compare(k, e, keep=icmp_id(p.port))


def test_udp_same_node(pair: Pair) -> None:
    """L2-3, M-1: UDP a -> b:53 (b answers: the kernel's listener echoes, kemu's DNS stack
    answers the query; same addresses, ports and path) and a -> b:54 (closed port: ICMP 3/3
    from b quoting a's datagram)."""
    p = pair
    sport = p.port
    q = (Ether(src=p.mac["default/a"], dst=p.mac["default/b"]) / IP(src=A, dst=B)
         / UDP(sport=sport, dport=53) / dns_query("svc-a.default.svc.cluster.local"))
    closed = (Ether(src=p.mac["default/a"], dst=p.mac["default/b"]) / IP(src=A, dst=B)
              / UDP(sport=sport + 1, dport=54) / b"x")
    k, e = p.run([("pod:default/a", q), ("pod:default/a", closed)], gap=0.05)
    k = drop_stack_answers(k, "default/a", "udp", {sport})
    compare(k, e, keep=flow(sport))
    compare(k, e, keep=flow(sport + 1))


def test_df_of_answers(pair: Pair) -> None:
    """DF (a decisive field): a ping with DF set gets an echo reply without it (``icmp_reply``
    sends through the ICMP socket, ``IP_PMTUDISC_DONT``); a SYN without DF gets a SYN-ACK and
    a RST with it, a UDP query an answer with it (sockets' default ``IP_PMTUDISC_WANT``)."""
    p = pair
    ping = (Ether(src=p.mac["default/a"], dst=p.mac["default/b"]) / IP(src=A, dst=B, flags="DF")
            / ICMP(id=p.port, seq=1))
    syn = (Ether(src=p.mac["default/a"], dst=p.mac["default/b"]) / IP(src=A, dst=B)
           / TCP(sport=p.port + 1, dport=8080, flags="S", seq=1000))
    closed = (Ether(src=p.mac["default/a"], dst=p.mac["default/b"]) / IP(src=A, dst=B)
              / TCP(sport=p.port + 2, dport=81, flags="S", seq=1000))
    k, e = p.run([("pod:default/a", ping), ("pod:default/a", syn), ("pod:default/a", closed)],
                 gap=0.05)
    k = drop_stack_answers(k, "default/a", "tcp", {p.port + 1})
    compare(k, e, keep=icmp_id(p.port))
    compare(k, e, keep=flow(p.port + 1))
    compare(k, e, keep=flow(p.port + 2))
    replies = [r for r in e if r.iface == "default/a/eth0" and r.direction == "in"]
    assert [(r.d.proto, r.d.df) for r in replies] == [(1, False), (6, True), (6, True)]


def test_unknown_unicast_flood(pair: Pair) -> None:
    """L2-3 (unknown unicast floods to every port), L2-4 (hairpin: back out of the ingress
    port too); not passed up to cbr0 (not its MAC), never leaves the node."""
    p = pair
    f = (Ether(src=p.mac["default/a"], dst="02:00:00:00:99:99") / IP(src=A, dst="10.244.0.99")
         / ICMP(id=p.port))
    k, e = p.run([("pod:default/a", f)])
    compare(k, e, ordered=False, keep=icmp_id(p.port))


# --------------------------------------------------------------------------------------------
# routing (R-1, R-2, OV-4, M-1, M-5)


def test_tcp_cross_node_syn_and_synack(pair: Pair) -> None:
    """R-1 (another node's pod CIDR via its node IP), OV-4 (host-gw), M-1/M-5 (no NAT): SYN
    a -> c:8080 and c's SYN-ACK back, TTL 64/63/62, MACs rewritten per routed hop."""
    p = pair
    k, e = p.run([from_a(p, C_, p.port, 8080)])
    k = drop_stack_answers(k, "default/a", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))


def test_udp_cross_node_closed_port(pair: Pair) -> None:
    """R-1, M-1: UDP a -> c:54 (closed): c's ICMP 3/3 routed back (quoting TTL 62)."""
    p = pair
    f = (Ether(src=p.mac["default/a"], dst=p.mac["node1/cbr0"]) / IP(src=A, dst=C_)
         / UDP(sport=p.port, dport=54) / b"x")
    k, e = p.run([("pod:default/a", f)])
    compare(k, e, keep=flow(p.port))


def test_routed_to_pod_on_same_node(pair: Pair) -> None:
    """R-1: a sends to b's IP but to cbr0's MAC: routed by node1 back out of cbr0 (TTL 63,
    cbr0 -> b), no ICMP redirect; b's answer is bridged straight back."""
    p = pair
    k, e = p.run([from_a(p, B, p.port, 8080)])
    k = drop_stack_answers(k, "default/a", "tcp", {p.port})
    compare(k, e, keep=lambda r: flow(p.port)(r) or r.d.icmp_type == 5)


def test_external_client_to_pod(pair: Pair) -> None:
    """R-1, M-1: the client sends to a's IP via node1's MAC: routed in, no NAT; a's answer is
    routed out to the client directly (node network is connected)."""
    p = pair
    k, e = p.run([from_client(p, A, p.port, 8080)])
    k = drop_stack_answers(k, "ext/client", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))


def test_pod_to_external_host(pair: Pair) -> None:
    """R-1, M-5/OV-5 (not kube-proxy, but flannel's ipMasq masquerades pod traffic leaving
    the cluster: ``-s 10.244.0.0/24 ! -d 10.244.0.0/16 -j MASQUERADE``): a -> web:80 leaves
    node1 as 172.18.0.2:port (kept: no clash, no --random-fully); web's SYN-ACK comes back to
    node1, is un-SNATed (CT-2) and bridged to a."""
    p = pair
    k, e = p.run([from_a(p, WEB, p.port, 80)])
    k = drop_stack_answers(k, "default/a", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))
    assert any(r.iface == "default/a/eth0" and r.direction == "in" and r.d.flags == "SA"
               and r.d.src == WEB for r in e), fmt(e)


def test_pod_to_pod_not_masqueraded(pair: Pair) -> None:
    """M-1, OV-5: flannel's masquerade rule excepts the cluster CIDR: a -> d (node3) keeps
    a's address on every hop."""
    p = pair
    k, e = p.run([from_a(p, D, p.port, 9090)])
    k = drop_stack_answers(k, "default/a", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))
    assert all(r.d.src in (A, D) for r in e if flow(p.port)(r)), fmt(e)


def test_default_route_to_sink(pair: Pair) -> None:
    """R-1 (anything else -> default route via the gateway; the gateway is a sink)."""
    p = pair
    f = (Ether(src=p.mac["default/a"], dst=p.mac["node1/cbr0"]) / IP(src=A, dst="192.0.2.1")
         / ICMP(id=p.port))
    k, e = p.run([("pod:default/a", f)])
    compare(k, e, keep=lambda r: icmp_id(p.port)(r) or quoting(r, "192.0.2.1"))


def test_gateway_routes_client_to_pod(pair: Pair) -> None:
    """The gateway router: the client sends to c through its default route, the gateway,
    which routes the pod CIDR via node2 (TTL 63 at node2's eth0, 62 at c); c's SYN-ACK goes
    from node2 straight to the client (the node network is connected)."""
    p = pair
    k, e = p.run([from_client(p, C_, p.port, 8080, via="gateway")])
    k = drop_stack_answers(k, "ext/client", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))
    assert any(r.iface == "default/c/eth0" and r.direction == "in" and r.d.ttl == 62
               for r in e), fmt(e)


def test_gateway_ttl_expiry(pair: Pair) -> None:
    """The gateway router: the client's packet to c with TTL 1 expires at the gateway, which
    answers ICMP 11/0 from 172.18.0.1 quoting TTL 1; nothing reaches node2."""
    p = pair
    f = (Ether(src=p.mac["ext/client"], dst=p.mac["gateway"]) / IP(src=CLIENT, dst=C_, ttl=1)
         / TCP(sport=p.port, dport=8080, flags="S", seq=1000))
    k, e = p.run([("ext:client", f)])
    compare(k, e, keep=lambda r: flow(p.port)(r) or quoting(r, C_))
    assert any(r.iface == "ext/client/eth0" and r.direction == "in" and r.d.icmp_type == 11
               and r.d.src == GW for r in e), fmt(e)


def test_gateway_default_route_leaves(pair: Pair) -> None:
    """The gateway router: the client's packet to an address outside the cluster's networks:
    the gateway forwards it out of the cluster (the kernel: its blackhole default route; kemu:
    LEFT), nothing comes back."""
    p = pair
    f = (Ether(src=p.mac["ext/client"], dst=p.mac["gateway"]) / IP(src=CLIENT, dst="192.0.2.7")
         / ICMP(id=p.port))
    k, e = p.run([("ext:client", f)])
    compare(k, e, keep=lambda r: icmp_id(p.port)(r) or quoting(r, "192.0.2.7"))


@contextlib.contextmanager
def _node3_without_default_route(k: Kernel) -> Iterator[None]:
    k.kc.exec("node:node3", "ip", "route", "del", "default")
    try:
        yield
    finally:
        k.kc.exec("node:node3", "ip", "route", "replace", "default", "via", GW, "dev", "eth0")


def test_no_route(pair: Pair, tmp_path: Path) -> None:
    """R-1, R-2: a node without a default route: client -> 8.8.8.8 sent to node3 gets ICMP 3/0
    (net unreachable) from 172.18.0.4 at once, quoting TTL 64 (no decrement before the failed
    lookup). kemu removes the default route cluster-wide only (``gateway: none``: no gateway,
    no node has a default route); the kernel removes node3's for this test only. The compared
    flow never involves the gateway or another node's default route."""
    p = pair
    text = (SCENARIO / "cluster.yaml").read_text()
    assert "  nodes: 3\n" in text
    (tmp_path / "cluster.yaml").write_text(text.replace("  nodes: 3\n",
                                                        "  nodes: 3\n  gateway: none\n", 1))
    p.emu = kemu.load(tmp_path / "cluster.yaml", backend=p.backend, respond=True,
                      static_neighbours=True, seed=0)
    _learn(p.emu)
    f = (Ether(src=p.mac["ext/client"], dst=p.mac["node3/eth0"]) / IP(src=CLIENT, dst="8.8.8.8")
         / ICMP(id=p.port))
    k, e = p.run([("ext:client", f)], env=lambda: _node3_without_default_route(p.k))
    compare(k, e, keep=lambda r: icmp_id(p.port)(r) or quoting(r, "8.8.8.8"))


@contextlib.contextmanager
def _node1_eth0_mtu(k: Kernel, mtu: int) -> Iterator[None]:
    k.kc.exec("node:node1", "ip", "link", "set", "dev", "eth0", "mtu", str(mtu))
    try:
        yield
    finally:
        k.kc.exec("node:node1", "ip", "link", "set", "dev", "eth0", "mtu", "1500")


def test_frag_needed_from_the_node(pair: Pair) -> None:
    """L2-2 (ip_forward's ip_exceeds_mtu): node1's eth0 lowered to 1400; a 1500-byte DF
    segment a -> c is refused on node1, which answers ICMP 3/4 with the next-hop MTU 1400
    from 10.244.0.1, quoting TTL 64 (before the decrement); nothing leaves node1. kemu gets
    the same MTU for node1/eth0 through its tables (the Cluster's ``spec.mtu`` is one value
    for every uplink)."""
    p = pair
    t = p.emu.tables
    mtu = t.if_mtu.copy()
    mtu[t.iface("node1/eth0")] = 1400
    p.emu.engine.tables = dataclasses.replace(t, if_mtu=mtu)
    p.emu.engine.dp.load(p.emu.engine.tables)
    f = (Ether(src=p.mac["default/a"], dst=p.mac["node1/cbr0"])
         / IP(src=A, dst=C_, flags="DF") / TCP(sport=p.port, dport=8080, flags="A", seq=1)
         / (b"k" * 1460))
    assert len(f) == 1514
    k, e = p.run([("pod:default/a", f)], env=lambda: _node1_eth0_mtu(p.k, 1400))
    compare(k, e, keep=flow(p.port))
    assert any("type=3/4 mtu=1400" in r.what and r.iface == "default/a/eth0" for r in k), fmt(k)
    assert not any(r.iface == "node1/eth0" for r in k if flow(p.port)(r)), fmt(k)


# --------------------------------------------------------------------------------------------
# the node's own IP stack


def test_node_answers_ping(pair: Pair) -> None:
    """M-2 (pods reach their node): a pings node1's node IP and cbr0 IP (answered by node1
    from that address) and node2's IP (routed there and answered by node2)."""
    p = pair
    pings = [("pod:default/a", Ether(src=p.mac["default/a"], dst=p.mac["node1/cbr0"])
              / IP(src=A, dst=dst) / ICMP(id=p.port + i))
             for i, dst in enumerate((NODE1, BR1, NODE2))]
    k, e = p.run(pings)
    for i in range(3):
        compare(k, e, keep=icmp_id(p.port + i))


def test_node_closed_ports(pair: Pair) -> None:
    """The node's stack refuses what nothing listens on: TCP client -> node1:22 gets a RST
    (ACK|RST) from 172.18.0.2, UDP client -> node1:9 an ICMP 3/3 from 172.18.0.2."""
    p = pair
    u = (Ether(src=p.mac["ext/client"], dst=p.mac["node1/eth0"]) / IP(src=CLIENT, dst=NODE1)
         / UDP(sport=p.port + 1, dport=9) / b"x")
    k, e = p.run([from_client(p, NODE1, p.port, 22), ("ext:client", u)])
    compare(k, e, keep=flow(p.port))
    compare(k, e, keep=flow(p.port + 1))


# --------------------------------------------------------------------------------------------
# ClusterIP Services (S-3..S-6, S-9, R-4, CT-1, CT-2)


def test_clusterip_same_node_bridged_dnat(pair: Pair) -> None:
    """S-3, CT-1, CT-2 with br_netfilter: a -> svc-b:80 with the endpoint b on the same bridge
    is DNATed in the bridge's PREROUTING and BRIDGED (no TTL decrement, MACs a -> b, no SNAT).
    The first flow needs node1's neighbour entry for b without a cached header: it leaves
    through ``node1/cbr0 out`` once; the second flow is bridged directly. The reply is
    un-DNATed (source = ClusterIP) with b's MAC, never on cbr0."""
    p = pair
    first, second = p.port, p.port + 1
    k, e = p.run([from_a(p, SVC_B, first, 80), from_a(p, SVC_B, second, 80)], gap=0.05)
    k = drop_stack_answers(k, "default/a", "tcp", {first, second})
    compare(k, e, keep=flow(first))
    compare(k, e, keep=flow(second))


def test_clusterip_udp_same_node(pair: Pair) -> None:
    """S-3, CT-2 for UDP: a -> svc-b:53 (DNS) bridged-DNATed to b:53, the answer un-DNATed."""
    p = pair
    q = (Ether(src=p.mac["default/a"], dst=p.mac["node1/cbr0"]) / IP(src=A, dst=SVC_B)
         / UDP(sport=p.port, dport=53) / dns_query("svc-c.default.svc.cluster.local"))
    k, e = p.run([("pod:default/a", q)])
    k = drop_stack_answers(k, "default/a", "udp", {p.port})
    compare(k, e, keep=flow(p.port))


def test_clusterip_remote_endpoint(pair: Pair) -> None:
    """S-3, CT-1, CT-2, R-1: a -> svc-c:80, DNAT to c:8080 on node2 (``node1/cbr0 in``
    already DNATed), no SNAT for a pod source (S-6); the reply is un-DNATed at node1."""
    p = pair
    k, e = p.run([from_a(p, SVC_C, p.port, 80)])
    k = drop_stack_answers(k, "default/a", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))


def test_two_endpoints(pair: Pair) -> None:
    """S-4 (uniform random choice between svc-cd's endpoints c:8080 on node2 and d:9090 on
    node3), CT-1, CT-2. The kernel picks at random, kemu by flow hash: for each endpoint, a
    flow the kernel sent there is compared with a flow kemu sent there (client ports renamed).
    Every flow reaches exactly one endpoint; both sides reach both endpoints."""
    p = pair
    ports = list(range(p.port, p.port + 16))
    frames = [("pod:default/a", bytes(from_a(p, SVC_CD, s, 80)[1])) for s in ports]
    krows = p.kernel_rows(p.kernel_run(frames, wait=0.4, gap=0.005))
    kchose = {s: _endpoint_of(krows, s) for s in ports}
    assert None not in kchose.values(), fmt(krows)
    assert set(kchose.values()) == {C_, D}, kchose      # P(one endpoint only) = 2**-15
    echose: dict[str, tuple[int, list[Row]]] = {}
    for s, f in zip(ports, frames, strict=True):
        erows = p.kemu_run([f])
        ep = _endpoint_of(erows, s)
        assert ep in (C_, D), fmt(erows)
        echose.setdefault(ep, (s, erows))
    assert set(echose) == {C_, D}, f"kemu sent all 16 flows to {set(echose)}"
    no_rst = [r for r in krows if not (r.d.proto == 6 and "R" in (r.d.flags or ""))]
    for ep, (es, erows) in sorted(echose.items()):
        ks = min(s for s, v in kchose.items() if v == ep)
        kpath = _rename_port([r for r in no_rst if flow(ks)(r)], ks)
        epath = _rename_port([r for r in erows if flow(es)(r)], es)
        assert kpath == epath, (f"endpoint {ep}:\n  kernel (port {ks}):\n" + "\n".join(kpath)
                                + f"\n  kemu (port {es}):\n" + "\n".join(epath))


def test_hairpin_to_own_service(pair: Pair) -> None:
    """S-5 (KUBE-SEP -s a -> MARK-MASQ: a reaching its own Service is SNATed to the bridge IP,
    port kept), L2-4 (hairpin: back out of a's own port, MACs a -> a both ways), CT-2. The
    first flow goes through ``cbr0 out`` (before SNAT), the second is bridged directly."""
    p = pair
    first, second = p.port, p.port + 1
    k, e = p.run([from_a(p, SVC_A, first, 80), from_a(p, SVC_A, second, 80)], gap=0.05)
    k = drop_stack_answers(k, "default/a", "tcp", {first, second})
    compare(k, e, keep=flow(first))
    compare(k, e, keep=flow(second))


def test_external_client_to_clusterip(pair: Pair) -> None:
    """S-6 (off-cluster source to a ClusterIP is masqueraded: b sees 10.244.0.1), CT-2, for
    TCP (svc-b:80) and UDP (svc-b:53)."""
    p = pair
    q = (Ether(src=p.mac["ext/client"], dst=p.mac["node1/eth0"]) / IP(src=CLIENT, dst=SVC_B)
         / UDP(sport=p.port + 1, dport=53) / dns_query("svc-c.default.svc.cluster.local"))
    k, e = p.run([from_client(p, SVC_B, p.port, 80), ("ext:client", q)], gap=0.05)
    k = drop_stack_answers(k, "ext/client", "tcp", {p.port})
    k = drop_stack_answers(k, "ext/client", "udp", {p.port + 1})
    compare(k, e, keep=flow(p.port))
    compare(k, e, keep=flow(p.port + 1))


def test_clusterip_not_proxied(pair: Pair) -> None:
    """R-4 (a ClusterIP is only meaningful where the proxy DNATs it), S-3 (rules match
    protocol and port): ICMP echo to svc-b and TCP to svc-b:81 are not DNATed and follow the
    default route to the gateway (iptables mode has no S-10 reject for undefined ports)."""
    p = pair
    ping = (Ether(src=p.mac["default/a"], dst=p.mac["node1/cbr0"]) / IP(src=A, dst=SVC_B)
            / ICMP(id=p.port))
    k, e = p.run([("pod:default/a", ping), from_a(p, SVC_B, p.port + 1, 81)])
    compare(k, e, keep=lambda r: icmp_id(p.port)(r) or quoting(r, SVC_B))
    compare(k, e, keep=flow(p.port + 1))


def test_service_without_endpoints(pair: Pair) -> None:
    """S-9: svc-none has no endpoints: filter REJECT -> ICMP 3/3 (not RST) from the cbr0
    address, quoting the SYN after the forwarding TTL decrement (ttl 63)."""
    p = pair
    k, e = p.run([from_a(p, SVC_NONE, p.port, 80)])
    compare(k, e, keep=flow(p.port))


# --------------------------------------------------------------------------------------------
# NodePort (S-3, E-1, S-7, CT-2)


def test_nodeport_local_endpoint(pair: Pair) -> None:
    """S-3 (addrtype LOCAL -> KUBE-NODEPORTS), E-1 (masquerade; toward a local pod to the cbr0
    address, S-7), CT-2 (reply: un-SNAT in the bridge PREROUTING, un-DNAT at POSTROUTING)."""
    p = pair
    k, e = p.run([from_client(p, NODE1, p.port, NP_A)])
    k = drop_stack_answers(k, "ext/client", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))


def test_nodeport_remote_endpoint(pair: Pair) -> None:
    """E-1, S-7 (MASQUERADE to the node IP, out of the interface it came in on, no ICMP
    redirect), R-1, CT-2 (the reply comes back through node1, TTL 62 at the client)."""
    p = pair
    k, e = p.run([from_client(p, NODE1, p.port, NP_C)])
    k = drop_stack_answers(k, "ext/client", "tcp", {p.port})
    compare(k, e, keep=lambda r: flow(p.port)(r) or r.d.icmp_type == 5)


def test_nodeport_on_other_node(pair: Pair) -> None:
    """E-1 ("any node works"), S-7, CT-2: client -> node2:30080 whose endpoint a is on node1:
    masqueraded to node2's IP, routed to node1, reply back through node2."""
    p = pair
    k, e = p.run([from_client(p, NODE2, p.port, NP_A, via="node2/eth0")])
    k = drop_stack_answers(k, "ext/client", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))


def test_pod_to_nodeport_same_node(pair: Pair) -> None:
    """E-1: KUBE-EXT-X always marks for masquerade with externalTrafficPolicy=Cluster, also for
    a pod source. a -> node1:30080 (endpoint a itself: bridged DNAT + hairpin SNAT to the
    bridge IP) and a -> node1:30081 (endpoint c: masqueraded to node1's IP on eth0)."""
    p = pair
    local, remote = p.port, p.port + 1
    k, e = p.run([from_a(p, NODE1, local, NP_A), from_a(p, NODE1, remote, NP_C)], gap=0.05)
    k = drop_stack_answers(k, "default/a", "tcp", {local, remote})
    compare(k, e, keep=flow(local))
    compare(k, e, keep=flow(remote))


def test_pod_to_nodeport_other_node(pair: Pair) -> None:
    """E-1, S-7, CT-2: a -> node2:30080 (endpoint a, back on node1: node2 masquerades to its
    node IP) and a -> node2:30081 (endpoint c, local to node2: masqueraded to node2's cbr0
    address 10.244.1.1)."""
    p = pair
    back, local = p.port, p.port + 1
    k, e = p.run([from_a(p, NODE2, back, NP_A), from_a(p, NODE2, local, NP_C)], gap=0.05)
    k = drop_stack_answers(k, "default/a", "tcp", {back, local})
    compare(k, e, keep=flow(back))
    compare(k, e, keep=flow(local))


# --------------------------------------------------------------------------------------------
# TTL expiry (ICMP 11) and ICMP errors about NATed flows (CT-2)


def test_ttl_expiry_on_first_node(pair: Pair) -> None:
    """R-1: a -> c with TTL 1: node1 answers ICMP 11/0 from 10.244.0.1 (the route back to a)
    quoting TTL 1; the SYN never leaves node1."""
    p = pair
    k, e = p.run([from_a(p, C_, p.port, 8080, ttl=1)])
    compare(k, e, keep=flow(p.port))


def test_ttl_expiry_on_second_node(pair: Pair) -> None:
    """R-1: a -> c with TTL 2 expires on node2, which answers from its node IP (the route back
    to a), forwarded by node1 (TTL 63 at a)."""
    p = pair
    k, e = p.run([from_a(p, C_, p.port, 8080, ttl=2)])
    compare(k, e, keep=flow(p.port))


def test_ttl_one_to_bridged_service(pair: Pair) -> None:
    """S-3 + br_netfilter: TTL 1 to svc-b (endpoint on the same bridge) is bridged and
    delivered with TTL 1: no ICMP time exceeded. b answers; the answer is un-DNATed."""
    p = pair
    k, e = p.run([from_a(p, SVC_B, p.port, 80, ttl=1)])
    k = drop_stack_answers(k, "default/a", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))


def test_ttl_one_to_routed_service(pair: Pair) -> None:
    """CT-2 for RELATED ICMP: TTL 1 to svc-c (routed DNAT): ICMP 11/0 whose outer source is
    the ClusterIP and whose quote is un-DNATed (a -> 10.96.0.22:80, ttl 1)."""
    p = pair
    k, e = p.run([from_a(p, SVC_C, p.port, 80, ttl=1)])
    compare(k, e, keep=flow(p.port))


def test_ttl_two_to_routed_service(pair: Pair) -> None:
    """CT-2 for RELATED ICMP across nodes: TTL 2 to svc-c expires on node2 (error from
    172.18.0.3 quoting a -> c:8080); node1's conntrack rewrites it on the way back: outer
    source = the ClusterIP, quote un-DNATed."""
    p = pair
    k, e = p.run([from_a(p, SVC_C, p.port, 80, ttl=2)])
    compare(k, e, keep=flow(p.port))


def test_ttl_expiry_on_nodeport(pair: Pair) -> None:
    """CT-2 with DNAT and SNAT (E-1): client -> node1:30081 with TTL 1 (expires on node1:
    error from 172.18.0.2 quoting the original) and TTL 2 (expires on node2: error to
    172.18.0.2 quoting the masqueraded SYN, un-SNATed and un-DNATed by node1 for the
    client)."""
    p = pair
    f1 = tcp_syn(CLIENT, NODE1, p.port, NP_C, p.mac["ext/client"], p.mac["node1/eth0"], ttl=1)
    f2 = tcp_syn(CLIENT, NODE1, p.port + 1, NP_C, p.mac["ext/client"], p.mac["node1/eth0"],
                 ttl=2)
    k, e = p.run([("ext:client", f1), ("ext:client", f2)], gap=0.05)
    compare(k, e, keep=flow(p.port))
    compare(k, e, keep=flow(p.port + 1))


# --------------------------------------------------------------------------------------------
# the node's own connections (a process in the node's namespace connects: CT-2 at LOCAL_IN)


def _not_final_ack(r: Row) -> bool:
    """Everything but the node's final ACK of the handshake (kemu's emulated client sockets,
    pods' and nodes' alike, take the SYN-ACK without answering; see DIFFERENCES.md)."""
    return not (r.d.proto == 6 and r.d.flags == "A")


def _node_connect(p: Pair, dst: str, dport: int) -> tuple[list[Row], list[Row]]:
    """node1's stack connects to dst:dport from port ``p.port`` (a real socket in the kernel,
    a SYN from node1's processes in kemu)."""
    sport = p.port
    krows = p.kernel_rows(p.kernel_run([("sock:node:node1", (dst, dport, sport))]))
    # a Linux socket's SYN: DF set (IP_PMTUDISC_WANT, the default)
    trace = p.emu.send(IP(dst=dst, flags="DF") / TCP(sport=sport, dport=dport, flags="S",
                                                     seq=1000), src="node1")
    erows = p.kemu_rows(trace)
    keep = flow(sport)
    # the kernel's socket completed the handshake: its final ACK left node1, and no RST
    assert any(r.iface == "node1/eth0" and r.direction == "out" and r.d.flags == "A"
               for r in krows if keep(r)), fmt(krows)
    assert not any("R" in (r.d.flags or "") for r in krows + erows if keep(r)), (
        f"\n  kernel:\n{fmt(krows)}\n  kemu:\n{fmt(erows)}")
    return [r for r in krows if _not_final_ack(r)], erows


def test_node_to_service_on_other_node(pair: Pair) -> None:
    """S-1 (nat OUTPUT -> KUBE-SERVICES), S-6 (the node's address is outside the cluster CIDR:
    masqueraded, to the same address, port kept), CT-2 at LOCAL_IN: node1's socket connects to
    svc-c (10.96.0.22:80, endpoint c:8080 on node2); c's SYN-ACK is un-SNATed and un-DNATed
    on node1's input, so the socket sees 10.96.0.22:80 and completes (no RST)."""
    p = pair
    k, e = _node_connect(p, SVC_C, 80)
    compare(k, e, keep=flow(p.port))


def test_node_to_nodeport_on_other_node(pair: Pair) -> None:
    """E-1 from a node: node1's socket connects to node2:30081 (endpoint c on node2,
    masqueraded to node2's cbr0 address); the answer comes back as 172.18.0.3:30081."""
    p = pair
    k, e = _node_connect(p, NODE2, NP_C)
    compare(k, e, keep=flow(p.port))


def test_node_to_external_host(pair: Pair) -> None:
    """M-5 does not apply to the node's own traffic (not from a pod CIDR): node1's socket
    connects to web:80 from 172.18.0.2; web's SYN-ACK completes it."""
    p = pair
    k, e = _node_connect(p, WEB, 80)
    compare(k, e, keep=flow(p.port))


# --------------------------------------------------------------------------------------------
# hostPort (the CNI portmap plugin: CNI-HOSTPORT-DNAT, CNI-HOSTPORT-SETMARK)

HOST_PORT = 30900


@contextlib.contextmanager
def _portmap_on_node1(k: Kernel) -> Iterator[None]:
    """The rules portmap installs for pod a's ``hostPort: 30900`` -> 8080 (node1 only)."""
    dn = ["-p", "tcp", "-m", "tcp", "--dport", str(HOST_PORT)]
    rules = [
        ["-N", "CNI-HOSTPORT-DNAT"], ["-N", "CNI-HOSTPORT-SETMARK"], ["-N", "CNI-HOSTPORT-MASQ"],
        ["-A", "CNI-HOSTPORT-SETMARK", "-j", "MARK", "--set-xmark", "0x2000/0x2000"],
        ["-A", "CNI-HOSTPORT-MASQ", "-m", "mark", "--mark", "0x2000/0x2000", "-j",
         "MASQUERADE"],
        ["-A", "CNI-HOSTPORT-DNAT", *dn, "-s", "10.244.0.0/24", "-j", "CNI-HOSTPORT-SETMARK"],
        ["-A", "CNI-HOSTPORT-DNAT", *dn, "-s", "127.0.0.1", "-j", "CNI-HOSTPORT-SETMARK"],
        ["-A", "CNI-HOSTPORT-DNAT", *dn, "-j", "DNAT", "--to-destination", f"{A}:8080"],
        ["-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j",
         "CNI-HOSTPORT-DNAT"],
        ["-A", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
        ["-A", "POSTROUTING", "-j", "CNI-HOSTPORT-MASQ"],
    ]
    for r in rules:
        k.kc.exec("node:node1", "iptables", "-t", "nat", *r)
    try:
        yield
    finally:
        for r in reversed(rules):
            if r[0] == "-A" and r[1] in ("PREROUTING", "OUTPUT", "POSTROUTING"):
                k.kc.exec("node:node1", "iptables", "-t", "nat", "-D", *r[1:])
        for chain in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
            k.kc.exec("node:node1", "iptables", "-t", "nat", "-F", chain)
            k.kc.exec("node:node1", "iptables", "-t", "nat", "-X", chain)


def _with_host_port(p: Pair, tmp_path: Path) -> None:
    text = (SCENARIO / "cluster.yaml").read_text()
    old = "containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]\nstatus: " \
          "{podIP: 10.244.0.2}"
    assert old in text
    (tmp_path / "cluster.yaml").write_text(text.replace(old, old.replace(
        "name: http}", f"name: http, hostPort: {HOST_PORT}}}"), 1))
    p.emu = kemu.load(tmp_path / "cluster.yaml", backend=p.backend, respond=True,
                      static_neighbours=True, seed=0)
    _learn(p.emu)


def test_hostport_from_external_client(pair: Pair, tmp_path: Path) -> None:
    """portmap's CNI-HOSTPORT-DNAT (--dst-type LOCAL): client -> node1:30900 is DNATed to
    a:8080 with the client's address kept, the SYN-ACK un-DNATed back from node1:30900."""
    p = pair
    _with_host_port(p, tmp_path)
    k, e = p.run([from_client(p, NODE1, p.port, HOST_PORT)],
                 env=lambda: _portmap_on_node1(p.k))
    k = drop_stack_answers(k, "ext/client", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))


def test_hostport_not_mapped_on_other_node(pair: Pair, tmp_path: Path) -> None:
    """portmap maps a hostPort on the pod's node only: client -> node2:30900 reaches node2's
    own stack (nothing listens: its RST)."""
    p = pair
    _with_host_port(p, tmp_path)
    k, e = p.run([from_client(p, NODE2, p.port, HOST_PORT, via="node2/eth0")],
                 env=lambda: _portmap_on_node1(p.k))
    compare(k, e, keep=flow(p.port))


def test_hostport_hairpin_from_own_node(pair: Pair, tmp_path: Path) -> None:
    """CNI-HOSTPORT-SETMARK: b (node1's own pod subnet) -> node1:30900 -> a:8080 is
    masqueraded (to cbr0's address) so that a's reply comes back through node1."""
    p = pair
    _with_host_port(p, tmp_path)
    syn = tcp_syn(B, NODE1, p.port, HOST_PORT, p.mac["default/b"], p.mac["node1/cbr0"])
    k, e = p.run([("pod:default/b", syn)], env=lambda: _portmap_on_node1(p.k))
    k = drop_stack_answers(k, "default/b", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))


# --------------------------------------------------------------------------------------------
# LoadBalancer frontends with loadBalancerSourceRanges (E-4): kube-proxy's KUBE-FW-/KUBE-EXT-
# chains and the KUBE-PROXY-FIREWALL DROP (netns.kube_proxy_rules)

LB_PORT = 81
LB_SERVICE = f"""---
apiVersion: v1
kind: Service
metadata: {{name: lb-ranged, namespace: default}}
spec:
  type: LoadBalancer
  selector: {{app: c}}
  loadBalancerSourceRanges: [{CLIENT}/32]
  ports: [{{port: {LB_PORT}, targetPort: 8080}}]
"""


def _with_lb(p: Pair, tmp_path: Path) -> tuple[str, str]:
    """The scenario plus ``lb-ranged`` (an address from an L2 pool, the client's /32 the only
    allowed source); (its address, the node announcing it)."""
    from kemu.compiler.routes import lb_announcers

    text = (SCENARIO / "cluster.yaml").read_text()
    assert "  nodes: 3\n" in text
    text = text.replace("  nodes: 3\n", "  nodes: 3\n  loadBalancer: {pool: [172.18.0.240/28], "
                        "mode: l2}\n", 1)
    (tmp_path / "cluster.yaml").write_text(text + LB_SERVICE)
    p.emu = kemu.load(tmp_path / "cluster.yaml", backend=p.backend, respond=True,
                      static_neighbours=True, seed=0)
    _check_scenario(p.emu)
    _learn(p.emu)
    svc = next(s for s in p.emu.model.services if s.name == "lb-ranged")
    ip = svc.load_balancer_ips[0]
    return str(ip), lb_announcers(p.emu.model)[ip]


@contextlib.contextmanager
def _lb_rules(p: Pair) -> Iterator[None]:
    """Every node's kube-proxy rules with ``lb-ranged`` (from kemu's tables), then the
    scenario's own again."""
    topo = kernel_topology(p.emu)
    svc = next(s for s in topo["services"] if s["key"].startswith("default/lb-ranged"))
    assert svc["load_balancer_ips"] and svc["source_ranges"] == [f"{CLIENT}/32"], svc
    p.k.kc.load_rules(topo)
    try:
        yield
    finally:
        p.k.kc.load_rules()


def test_lb_source_range_allows_client(pair: Pair, tmp_path: Path) -> None:
    """E-4: the client (inside loadBalancerSourceRanges) -> the LB address at the announcing
    node: KUBE-FW-X -> KUBE-EXT-X (masquerade to the node) -> c:8080 on node2; the SYN-ACK
    comes back from the LB address, TTL 62."""
    p = pair
    ip, node = _with_lb(p, tmp_path)
    k, e = p.run([from_client(p, ip, p.port, LB_PORT, via=f"{node}/eth0")],
                 env=lambda: _lb_rules(p))
    # (the kernel client's stack would RST the SYN-ACK, but first ARPs for the LB address,
    # which the harness announces nowhere: that ARP is not part of the flow)
    compare(k, e, keep=flow(p.port))
    assert any(r.iface == "default/c/eth0" and r.direction == "in" for r in k), fmt(k)


def test_lb_source_range_refuses_other_host(pair: Pair, tmp_path: Path) -> None:
    """E-4: web (outside the ranges) -> the same address: KUBE-FW-X falls through without a
    DNAT, filter KUBE-PROXY-FIREWALL drops the NEW packet; nothing answers, nothing reaches
    c, and the node sends web no ICMP redirect (as FINDINGS.md saw for NodePorts)."""
    p = pair
    ip, node = _with_lb(p, tmp_path)
    f = ("ext:web", tcp_syn(WEB, ip, p.port, LB_PORT, p.mac["ext/web"], p.mac[f"{node}/eth0"]))
    k, e = p.run([f], env=lambda: _lb_rules(p))
    compare(k, e, keep=flow(p.port))
    assert not any(r.iface.startswith("default/c") for r in k if flow(p.port)(r)), fmt(k)
    assert [r.iface for r in k if flow(p.port)(r)] == ["ext/web/eth0", f"{node}/eth0"], fmt(k)


# --------------------------------------------------------------------------------------------
# a node's routes set one by one (R-2: ``ip route replace`` / kemu's ``replace_route``)


@contextlib.contextmanager
def _node1_route(k: Kernel, *spec: str) -> Iterator[None]:
    k.kc.exec("node:node1", "ip", "route", "replace", *spec)
    try:
        yield
    finally:
        k.kc.exec("node:node1", "ip", "route", "replace", "10.244.1.0/24", "via", NODE2,
                  "dev", "eth0")


def test_replaced_route_redirects_via_node3(pair: Pair) -> None:
    """R-2: node1's route to node2's pod CIDR replaced by one via node3 (``ip route replace
    10.244.1.0/24 via 172.18.0.4``): a -> c goes node1 -> node3 -> node2 (TTL 61 at c), c's
    answer comes straight back by node2's own route. node3 forwards back out of the eth0 it
    received on; the kernel sends no ICMP redirect there either (compared)."""
    p = pair
    p.emu.replace_route("node1", "10.244.1.0/24", via=NODE3)
    f = from_a(p, C_, p.port, 8080)
    k, e = p.run([f], env=lambda: _node1_route(p.k, "10.244.1.0/24", "via", NODE3,
                                               "dev", "eth0"))
    k = drop_stack_answers(k, "default/a", "tcp", {p.port})
    compare(k, e, keep=flow(p.port))
    assert any(r.iface == "node3/eth0" and r.direction == "out" for r in k), fmt(k)


def test_replaced_route_blackhole(pair: Pair) -> None:
    """R-2: ``ip route replace blackhole 10.244.1.0/24`` on node1: a -> c is discarded at
    node1 silently (no ICMP), nothing leaves node1."""
    p = pair
    p.emu.replace_route("node1", "10.244.1.0/24", type="blackhole")
    k, e = p.run([from_a(p, C_, p.port, 8080)],
                 env=lambda: _node1_route(p.k, "blackhole", "10.244.1.0/24"))
    compare(k, e, keep=flow(p.port))
    assert not any(r.iface == "node1/eth0" for r in k if flow(p.port)(r)), fmt(k)


def test_replaced_route_unreachable(pair: Pair) -> None:
    """R-2: ``ip route replace unreachable 10.244.1.0/24`` on node1: ICMP 3/1 (host
    unreachable) from 10.244.0.1 to a (ip_error), quoting TTL 64 (no decrement before the
    failed lookup)."""
    p = pair
    p.emu.replace_route("node1", "10.244.1.0/24", type="unreachable")
    k, e = p.run([from_a(p, C_, p.port, 8080)],
                 env=lambda: _node1_route(p.k, "unreachable", "10.244.1.0/24"))
    compare(k, e, keep=flow(p.port))
    assert any("type=3/1" in r.what for r in k), fmt(k)


# --------------------------------------------------------------------------------------------
# IPv4 fragments (L2-2, CT-1): conntrack's reassembly on each node, refragmentation on output,
# the end host's reassembly and its answer in fragments


def _a_c_icmp(r: Row) -> bool:
    return r.d.proto == 1 and {r.d.src, r.d.dst} == {A, C_}


def test_fragmented_ping_cross_node(pair: Pair) -> None:
    """a sends a 3028-byte echo request in three fragments (1500, 1500, 68: as its stack cuts
    it at MTU 1500) to c on node2. node1's bridge PREROUTING (br_netfilter, conntrack's
    defrag) holds the first two and reassembles on the third: cbr0 passes the whole 3028-byte
    packet up; node1 forwards it and ip_fragment cuts it again at eth0; node2 reassembles at
    PREROUTING and refragments into cbr0 (frag_max_size); c reassembles, answers 3028 bytes
    without DF in three fragments, which come back the same way."""
    p = pair
    pkt = (Ether(src=p.mac["default/a"], dst=p.mac["node1/cbr0"])
           / IP(src=A, dst=C_, id=p.port, flags=0) / ICMP(id=p.port, seq=1)
           / (b"f" * 3000))
    frags = [Ether(src=p.mac["default/a"], dst=p.mac["node1/cbr0"]) / f
             for f in fragment(pkt[IP], fragsize=1480)]
    assert [len(f) for f in frags] == [1514, 1514, 82]
    k, e = p.run([("pod:default/a", f) for f in frags], wait=0.5)
    # A capture artifact of the kernel side: veth hands the same skb from node1's eth0 to
    # node2's, the capture socket's copy shares its data, and node2's ip_do_fragment fast
    # path (resending the original fragments) rewrites their Ethernet and IP headers in place
    # before the harness reads the socket: the non-first fragments between the nodes show
    # node2's next hop and TTL. Those rows are left out on the node network's interfaces
    # (their payload, b"f", decodes as ICMP type/code 102); the first fragment, the whole
    # packet on cbr0 and every fragment on the pods' sides are compared, per interface (the
    # kernel captures a node's output burst before the next node's input).
    def keep(r: Row) -> bool:
        between = r.iface in ("node1/eth0", "node2/eth0") and "type=102/102" in r.what
        return _a_c_icmp(r) and not between
    compare(k, e, keep=keep, ordered=False)
    for rows in (k, e):  # the count of fragments between the nodes, each way
        assert [sum(1 for r in rows if r.iface == i and r.direction == "out" and _a_c_icmp(r))
                for i in ("node1/eth0", "node2/eth0")] == [3, 3], fmt(rows)
    assert [r.d.ttl for r in k if r.iface == "default/c/eth0" and r.direction == "in"] == [
        62, 62, 62], fmt(k)
    assert sum(1 for r in k if r.iface == "default/a/eth0" and r.direction == "in") == 3, \
        fmt(k)
