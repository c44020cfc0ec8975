"""The kernel reference harness against SEMANTICS.md: what the real Linux datapath does.

Every test builds a fresh cluster (``example_topology``: node1 has pods a, b, d; node2 has c;
node3 has no pods and no default route; an external client; a sink gateway) out of network
namespaces, injects Scapy-crafted frames and asserts the hop-by-hop observations. The expected
tables are the kernel's behaviour written down (see FINDINGS.md); kemu is compared against them.
Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from .netns import (
    RUN_PREFIX,
    HarnessError,
    KernelCluster,
    Obs,
    chain_hash,
    cleanup_leftovers,
    example_topology,
    kernel_harness_available,
    kube_proxy_rules,
    netns_list,
)

pytestmark = pytest.mark.kernel

# addresses of example_topology()
A, B, D, C = "10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.1.2"
CLIENT = "172.18.0.100"
NODE1, NODE2, NODE3 = "172.18.0.2", "172.18.0.3", "172.18.0.4"
A_MAC, B_MAC, D_MAC, C_MAC = (f"02:00:00:00:aa:0{i}" for i in (1, 2, 3, 4))
BR1_MAC, BR2_MAC = "02:00:00:00:b0:01", "02:00:00:00:b0:02"
N1_MAC, N2_MAC, N3_MAC = "02:00:00:00:10:02", "02:00:00:00:10:03", "02:00:00:00:10:04"
GW_MAC, CL_MAC = "02:00:00:00:00:01", "02:00:00:00:00:64"
VA, VB, VD, VC = "node1/vetha01", "node1/vethb02", "node1/vethd03", "node2/vethc04"
SVC_A, SVC_B, SVC_C, SVC_TWO, SVC_NONE = (f"10.96.0.1{i}" for i in range(5))
BCAST = "ff:ff:ff:ff:ff:ff"


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module", autouse=True)
def _kernel_module() -> Iterator[None]:
    ok, why = kernel_harness_available()
    if not ok:
        pytest.skip(f"kernel harness unavailable: {why}")
    old = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt("SIGTERM")      # so every finalizer below still runs

        old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        cleanup_leftovers(RUN_PREFIX)
        assert not [ns for ns in netns_list() if ns.startswith(RUN_PREFIX)]


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[KernelCluster] = []

    def _make(static: bool = True, learn: bool = True, **kw: Any) -> KernelCluster:
        topo = example_topology()
        topo["static_neighbors"] = static
        kc = KernelCluster(topo, **kw)
        made.append(kc)
        kc.build()
        kc.settle()
        if learn:
            kc.learn_macs()
        return kc

    try:
        yield _make
    finally:
        for kc in made:
            kc.teardown()


@pytest.fixture
def kc(make: Any) -> KernelCluster:
    """Static neighbours, bridges have learned every MAC: first frames are unicast."""
    return make(static=True, learn=True)


@pytest.fixture
def fresh(make: Any) -> KernelCluster:
    """Static neighbours, nothing learned yet (first frame to a MAC floods)."""
    return make(static=True, learn=False)


@pytest.fixture
def dyn(make: Any) -> KernelCluster:
    """No static neighbours (ARP on the wire), nothing learned."""
    return make(static=False, learn=False)


# --------------------------------------------------------------------------------------------
# helpers


def syn(src: str, dst: str, sport: int, dport: int, smac: str, dmac: str, ttl: int = 64) -> Any:
    return (Ether(src=smac, dst=dmac) / IP(src=src, dst=dst, ttl=ttl)
            / TCP(sport=sport, dport=dport, flags="S", seq=1000))


def from_a(dst: str, sport: int, dport: int, ttl: int = 64) -> tuple[str, Any]:
    return ("pod:default/a", syn(A, dst, sport, dport, A_MAC, BR1_MAC, ttl))


def ep(ip: str | None, port: int | None) -> str:
    return f"{ip}:{port}" if port is not None else str(ip)


def row(kc: KernelCluster, o: Obs) -> tuple[Any, ...]:
    """(iface, dir, src, dst, ttl, src MAC role, dst MAC role)."""
    d, n = o.d, kc.mac_names
    return (o.iface, o.direction, ep(d.src, d.sport), ep(d.dst, d.dport), d.ttl,
            n.get(d.src_mac, d.src_mac), n.get(d.dst_mac, d.dst_mac))


def tcp(obs: list[Obs], port: int, flags: str | None = None) -> list[Obs]:
    """TCP observations of the flow whose client port is ``port`` (either direction)."""
    return [o for o in obs if o.d.proto == 6 and port in (o.d.sport, o.d.dport)
            and (flags is None or o.d.flags == flags)]


def icmp_err(obs: list[Obs], port: int | None = None, typ: int | None = None) -> list[Obs]:
    """ICMP errors (optionally quoting client port ``port``, of type ``typ``)."""
    out = []
    for o in obs:
        d = o.d
        if d.proto == 1 and d.inner is not None and (typ is None or d.icmp_type == typ):
            if port is None or port in (d.inner.sport, d.inner.dport):
                out.append(o)
    return out


def kind(o: Obs) -> tuple[Any, ...]:
    """("who-has", target, sender) / ("is-at", sender, target) / ("tcp", flags) / (proto,)."""
    d = o.d
    if d.arp_op == 1:
        return ("who-has", d.arp_pdst, d.arp_psrc)
    if d.arp_op == 2:
        return ("is-at", d.arp_psrc, d.arp_pdst)
    if d.proto == 6:
        return ("tcp", d.flags)
    return (d.l4,)


def hops(obs: list[Obs]) -> list[tuple[str, str]]:
    return [(o.iface, o.direction) for o in obs]


def dump(kc: KernelCluster, obs: list[Obs]) -> str:
    return "\n" + kc.format(obs)


def assert_flood(kc: KernelCluster, obs: list[Obs], head: list[tuple[str, str]],
                 ports: dict[str, str]) -> None:
    """``head`` in order, then each flooded port's ``out`` followed by its pod's ``in``.

    The order between flooded ports is the kernel's port-list order and is not asserted.
    """
    got = hops(obs)
    assert got[: len(head)] == head, dump(kc, obs)
    rest = got[len(head):]
    want = {(p, "out") for p in ports} | {(pod, "in") for pod in ports.values()}
    assert sorted(rest) == sorted(want), dump(kc, obs)
    for port, pod in ports.items():
        assert rest.index((port, "out")) < rest.index((pod, "in")), dump(kc, obs)


# --------------------------------------------------------------------------------------------
# the harness itself


def test_chain_names_match_kube_proxy() -> None:
    # vectors from kubernetes pkg/proxy/iptables/proxier_test.go (S-2)
    assert chain_hash("ns1/svc1:p80", "tcp") == "XPGD46QRK7WJZT7O"
    assert chain_hash("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "SXIVWICOYRO3J4NJ"
    rules = kube_proxy_rules(example_topology())
    assert "-j KUBE-SVC-" + chain_hash("default/svc-b:http", "tcp") in rules
    assert rules.count("--probability 0.5000000000") == 1        # svc-two: 1/2 then rest (S-4)
    last = [line for line in rules.splitlines() if line.startswith("-A KUBE-SERVICES")][-1]
    assert "--dst-type LOCAL -j KUBE-NODEPORTS" in last            # S-3: last rule


def test_layout_sysctls_and_rules(fresh: KernelCluster) -> None:
    kc = fresh
    ours = [ns for ns in netns_list() if ns.startswith(kc.prefix)]
    assert sorted(ours) == sorted(kc.netns.values())
    # bridge-nf-call-iptables is per netns: 1 on the nodes, 0 on the node-network switch, at once
    assert kc.sysctl("node:node1", "net.bridge.bridge-nf-call-iptables") == "1"
    assert kc.sysctl("net", "net.bridge.bridge-nf-call-iptables") == "0"
    assert kc.sysctl("node:node1", "net.ipv4.ip_forward") == "1"
    assert kc.sysctl("gateway", "net.ipv4.ip_forward") == "0"
    assert kc.sysctl("pod:default/a", "net.ipv6.conf.all.disable_ipv6") == "1"
    assert kc.sysctl("node:node1", "net.ipv4.conf.all.route_localnet") == "0"
    routes = {r["dst"]: r for r in json.loads(
        kc.exec("node:node1", "ip", "-j", "route", "show"))}
    assert routes["10.244.0.0/24"]["dev"] == "cbr0"
    assert routes["10.244.1.0/24"]["gateway"] == NODE2
    assert routes["10.244.2.0/24"]["gateway"] == NODE3
    assert routes["default"]["gateway"] == "172.18.0.1"
    n3 = json.loads(kc.exec("node:node3", "ip", "-j", "route", "show"))
    assert "default" not in {r["dst"] for r in n3}
    ports = json.loads(kc.exec("node:node1", "bridge", "-j", "-d", "link", "show"))
    assert {p["ifname"]: p.get("hairpin") for p in ports} == {
        "vetha01": True, "vethb02": True, "vethd03": True}
    saved = kc.iptables_save("node1", counters=False)
    assert "KUBE-SVC-" + chain_hash("default/svc-two:http", "tcp") in saved
    assert "--reject-with icmp-port-unreachable" in saved
    neigh = {(n["dst"], n["dev"]): n for n in kc.neigh("node1")}
    assert neigh[(A, "cbr0")]["lladdr"] == A_MAC and "PERMANENT" in neigh[(A, "cbr0")]["state"]
    assert all(v == "off" for res in kc.csum_offload.values() for v in res.values())


def test_quiet_after_settle_and_ipv6_noise(make: Any) -> None:
    kc = make(learn=False)
    assert kc.run([], wait=0.5) == []           # no IPv6, no IGMP (mcast_snooping off), no ARP
    noisy = make(learn=False, disable_ipv6=False)
    obs = noisy.run([], wait=1.0)
    assert any(o.d.ethertype == 0x86DD for o in obs)   # ND / MLD / RS when IPv6 stays on


def test_teardown_removes_namespaces_even_on_error() -> None:
    topo = example_topology()
    kc = KernelCluster(topo)
    with pytest.raises(RuntimeError), kc:
        assert set(kc.netns.values()) <= set(netns_list())
        raise RuntimeError("boom")
    assert not [ns for ns in netns_list() if ns.startswith(kc.prefix)]
    bad = example_topology()
    bad["pods"][1]["veth"] = bad["pods"][0]["veth"]       # two ports with one name on node1
    with pytest.raises(HarnessError):
        KernelCluster(bad)
    bad = example_topology()
    bad["pods"][0]["mac"] = "not-a-mac"                   # fails inside build: rolled back
    kc2 = KernelCluster(bad)
    with pytest.raises(HarnessError):
        kc2.build()
    assert not [ns for ns in netns_list() if ns.startswith(kc2.prefix)]


def test_tx_checksum_offload_shows_partial_sums(make: Any) -> None:
    def synack_ok(kc: KernelCluster) -> bool:
        obs = kc.run([("pod:default/a", syn(A, B, 40000, 8080, A_MAC, B_MAC))])
        (o,) = [o for o in tcp(obs, 40000, "SA") if o.iface == "default/b/eth0"]
        p = Ether(o.frame)
        got = p[TCP].chksum
        del p[TCP].chksum
        return got == Ether(bytes(p))[TCP].chksum

    assert synack_ok(make())                            # default: offload off, full checksums
    assert not synack_ok(make(full_checksums=False))    # CHECKSUM_PARTIAL pseudo-header sum


# --------------------------------------------------------------------------------------------
# L2 (L2-3, L2-4, L2-5)


def test_arp_for_gateway(dyn: KernelCluster) -> None:
    kc = dyn
    req = Ether(src=A_MAC, dst=BCAST) / ARP(op=1, hwsrc=A_MAC, psrc=A, pdst="10.244.0.1")
    obs = kc.run([("pod:default/a", req)])
    request = [o for o in obs if o.d.arp_op == 1]
    reply = [o for o in obs if o.d.arp_op == 2]
    assert len(request) + len(reply) == len(obs), dump(kc, obs)
    # broadcast: up to the node stack (cbr0 in) and flooded to every port, the ingress port too
    # (hairpin on reflects floods back to the sender)
    assert_flood(kc, request, [("default/a/eth0", "out"), (VA, "in"), ("node1/cbr0", "in")],
                 {VB: "default/b/eth0", VD: "default/d/eth0", VA: "default/a/eth0"})
    assert hops(reply) == [("node1/cbr0", "out"), (VA, "out"), ("default/a/eth0", "in")]
    r = reply[0].d
    assert (r.src_mac, r.dst_mac, r.arp_psrc, r.arp_hwsrc, r.arp_pdst) == (
        BR1_MAC, A_MAC, "10.244.0.1", BR1_MAC, A)
    fdb = {(e["mac"], e["ifname"]) for e in kc.fdb("node1") if "permanent" not in e["state"]}
    assert (A_MAC, "vetha01") in fdb
    assert any(n["dst"] == A and n.get("lladdr") == A_MAC for n in kc.neigh("node1"))


def test_icmp_same_node_bridged_and_learning(fresh: KernelCluster) -> None:
    kc = fresh
    ping = Ether(src=A_MAC, dst=B_MAC) / IP(src=A, dst=B) / ICMP(id=7, seq=1)
    obs = kc.run([("pod:default/a", ping)])
    req = [o for o in obs if o.d.icmp_type == 8]
    rep = [o for o in obs if o.d.icmp_type == 0]
    assert len(req) + len(rep) == len(obs), dump(kc, obs)
    # b's MAC is not learned yet: unknown unicast floods (incl. back out of the hairpin port)
    assert_flood(kc, req, [("default/a/eth0", "out"), (VA, "in")],
                 {VB: "default/b/eth0", VD: "default/d/eth0", VA: "default/a/eth0"})
    assert hops(rep) == [("default/b/eth0", "out"), (VB, "in"), (VA, "out"),
                         ("default/a/eth0", "in")]
    assert {o.d.ttl for o in obs} == {64}                 # bridged: no TTL decrement
    assert not [o for o in obs if o.iface.startswith("node1/cbr0")]
    # ... yet br_netfilter runs it through the node's iptables: it is conntracked on node1
    ct = [e for e in kc.conntrack("node1") if e["proto"] == "icmp"]
    assert [e["orig"] for e in ct] == [{"src": A, "dst": B, "type": 8, "code": 0, "id": 7}]
    obs = kc.run([("pod:default/a", ping)])              # now learned: unicast
    assert hops([o for o in obs if o.d.icmp_type == 8]) == [
        ("default/a/eth0", "out"), (VA, "in"), (VB, "out"), ("default/b/eth0", "in")]


def test_udp_same_node_echo_and_port_unreachable(kc: KernelCluster) -> None:
    u = Ether(src=A_MAC, dst=B_MAC) / IP(src=A, dst=B) / UDP(sport=5000, dport=53) / b"hello"
    closed = Ether(src=A_MAC, dst=B_MAC) / IP(src=A, dst=B) / UDP(sport=5001, dport=54) / b"x"
    obs = kc.run([("pod:default/a", u), ("pod:default/a", closed)], gap=0.05)
    udp = [o for o in obs if o.d.proto == 17 and 5000 in (o.d.sport, o.d.dport)]
    assert [row(kc, o)[:4] for o in udp] == [
        ("default/a/eth0", "out", f"{A}:5000", f"{B}:53"), (VA, "in", f"{A}:5000", f"{B}:53"),
        (VB, "out", f"{A}:5000", f"{B}:53"), ("default/b/eth0", "in", f"{A}:5000", f"{B}:53"),
        ("default/b/eth0", "out", f"{B}:53", f"{A}:5000"), (VB, "in", f"{B}:53", f"{A}:5000"),
        (VA, "out", f"{B}:53", f"{A}:5000"), ("default/a/eth0", "in", f"{B}:53", f"{A}:5000")]
    assert udp[-1].frame.endswith(b"hello")
    # a's own stack has no socket on 5000: it answers the echo with port unreachable
    (a_err,) = [o for o in icmp_err(obs, 5000) if o.iface == "default/a/eth0"]
    assert (a_err.d.src, a_err.d.dst, a_err.d.icmp_type, a_err.d.icmp_code) == (A, B, 3, 3)
    # closed port on b: b's stack answers ICMP 3/3 quoting the datagram
    errs = icmp_err(obs, 5001)
    assert hops(errs) == [("default/b/eth0", "out"), (VB, "in"), (VA, "out"),
                          ("default/a/eth0", "in")]
    d = errs[-1].d
    assert (d.src, d.dst, d.icmp_type, d.icmp_code, d.inner.dst, d.inner.dport) == (
        B, A, 3, 3, B, 54)


def test_unknown_unicast_flood(kc: KernelCluster) -> None:
    f = Ether(src=A_MAC, dst="02:00:00:00:99:99") / IP(src=A, dst="10.244.0.99") / ICMP(id=3)
    obs = kc.run([("pod:default/a", f)])
    assert_flood(kc, obs, [("default/a/eth0", "out"), (VA, "in")],
                 {VB: "default/b/eth0", VD: "default/d/eth0", VA: "default/a/eth0"})
    # not to the node stack (cbr0 is not promiscuous) and never off the node
    assert not [o for o in obs if o.iface in ("node1/cbr0", "node1/eth0")]


# --------------------------------------------------------------------------------------------
# routing (R-1, OV-4)


def test_tcp_syn_cross_node(kc: KernelCluster) -> None:
    obs = kc.run([from_a(C, 41000, 8080)])
    assert [row(kc, o) for o in tcp(obs, 41000, "S")] == [
        ("default/a/eth0", "out", f"{A}:41000", f"{C}:8080", 64, "default/a", "node1/cbr0"),
        (VA, "in", f"{A}:41000", f"{C}:8080", 64, "default/a", "node1/cbr0"),
        ("node1/cbr0", "in", f"{A}:41000", f"{C}:8080", 64, "default/a", "node1/cbr0"),
        ("node1/eth0", "out", f"{A}:41000", f"{C}:8080", 63, "node1/eth0", "node2/eth0"),
        ("net/n-node1", "in", f"{A}:41000", f"{C}:8080", 63, "node1/eth0", "node2/eth0"),
        ("net/n-node2", "out", f"{A}:41000", f"{C}:8080", 63, "node1/eth0", "node2/eth0"),
        ("node2/eth0", "in", f"{A}:41000", f"{C}:8080", 63, "node1/eth0", "node2/eth0"),
        ("node2/cbr0", "out", f"{A}:41000", f"{C}:8080", 62, "node2/cbr0", "default/c"),
        (VC, "out", f"{A}:41000", f"{C}:8080", 62, "node2/cbr0", "default/c"),
        ("default/c/eth0", "in", f"{A}:41000", f"{C}:8080", 62, "node2/cbr0", "default/c")]
    assert [row(kc, o) for o in tcp(obs, 41000, "SA")] == [
        ("default/c/eth0", "out", f"{C}:8080", f"{A}:41000", 64, "default/c", "node2/cbr0"),
        (VC, "in", f"{C}:8080", f"{A}:41000", 64, "default/c", "node2/cbr0"),
        ("node2/cbr0", "in", f"{C}:8080", f"{A}:41000", 64, "default/c", "node2/cbr0"),
        ("node2/eth0", "out", f"{C}:8080", f"{A}:41000", 63, "node2/eth0", "node1/eth0"),
        ("net/n-node2", "in", f"{C}:8080", f"{A}:41000", 63, "node2/eth0", "node1/eth0"),
        ("net/n-node1", "out", f"{C}:8080", f"{A}:41000", 63, "node2/eth0", "node1/eth0"),
        ("node1/eth0", "in", f"{C}:8080", f"{A}:41000", 63, "node2/eth0", "node1/eth0"),
        ("node1/cbr0", "out", f"{C}:8080", f"{A}:41000", 62, "node1/cbr0", "default/a"),
        (VA, "out", f"{C}:8080", f"{A}:41000", 62, "node1/cbr0", "default/a"),
        ("default/a/eth0", "in", f"{C}:8080", f"{A}:41000", 62, "node1/cbr0", "default/a")]
    # the pod's stack never opened this connection: it resets it
    assert tcp(obs, 41000, "R")[0].iface == "default/a/eth0"


def test_cross_node_with_arp_on_the_wire(dyn: KernelCluster) -> None:
    kc = dyn
    obs = kc.run([from_a(C, 41001, 8080)], wait=0.5)
    seq = [(o.iface, o.direction, kind(o)) for o in obs]
    # node1 resolves node2 on eth0 before forwarding; node2 resolves c on cbr0 before delivering;
    # node1 resolves a on cbr0 before delivering the SYN-ACK
    i = seq.index(("node1/eth0", "out", ("who-has", NODE2, NODE1)))
    assert i < seq.index(("node1/eth0", "out", ("tcp", "S"))), dump(kc, obs)
    i = seq.index(("node2/cbr0", "out", ("who-has", C, "10.244.1.1")))
    assert i < seq.index(("node2/cbr0", "out", ("tcp", "S"))), dump(kc, obs)
    i = seq.index(("node1/cbr0", "out", ("who-has", A, "10.244.0.1")))
    assert i < seq.index(("node1/cbr0", "out", ("tcp", "SA"))), dump(kc, obs)
    assert ("default/c/eth0", "in", ("tcp", "S")) in seq
    assert ("default/a/eth0", "in", ("tcp", "SA")) in seq


# --------------------------------------------------------------------------------------------
# Services (S-3..S-9, CT-1, CT-2)


def test_clusterip_endpoint_on_same_bridge(kc: KernelCluster) -> None:
    obs = kc.run([from_a(SVC_B, 42000, 80)])
    obs2 = kc.run([from_a(SVC_B, 42001, 80)])
    # first packet that needs node1's neighbour entry for b: leaves the stack through cbr0
    # (out, already DNATed, MACs a -> b), then bridged to b. No TTL decrement, no SNAT.
    assert [row(kc, o) for o in tcp(obs, 42000, "S")] == [
        ("default/a/eth0", "out", f"{A}:42000", f"{SVC_B}:80", 64, "default/a", "node1/cbr0"),
        (VA, "in", f"{A}:42000", f"{SVC_B}:80", 64, "default/a", "node1/cbr0"),
        ("node1/cbr0", "out", f"{A}:42000", f"{B}:8080", 64, "default/a", "default/b"),
        (VB, "out", f"{A}:42000", f"{B}:8080", 64, "default/a", "default/b"),
        ("default/b/eth0", "in", f"{A}:42000", f"{B}:8080", 64, "default/a", "default/b")]
    # the reply is bridged straight back, un-DNATed (src = ClusterIP) but with b's MAC
    assert [row(kc, o) for o in tcp(obs, 42000, "SA")] == [
        ("default/b/eth0", "out", f"{B}:8080", f"{A}:42000", 64, "default/b", "default/a"),
        (VB, "in", f"{B}:8080", f"{A}:42000", 64, "default/b", "default/a"),
        (VA, "out", f"{SVC_B}:80", f"{A}:42000", 64, "default/b", "default/a"),
        ("default/a/eth0", "in", f"{SVC_B}:80", f"{A}:42000", 64, "default/b", "default/a")]
    assert hops(tcp(obs, 42000, "R")) == [("default/a/eth0", "out"), (VA, "in"), (VB, "out"),
                                          ("default/b/eth0", "in")]
    # later flows (neighbour entry now has a cached header): bridged directly, never on cbr0
    assert [row(kc, o) for o in tcp(obs2, 42001, "S")] == [
        ("default/a/eth0", "out", f"{A}:42001", f"{SVC_B}:80", 64, "default/a", "node1/cbr0"),
        (VA, "in", f"{A}:42001", f"{SVC_B}:80", 64, "default/a", "node1/cbr0"),
        (VB, "out", f"{A}:42001", f"{B}:8080", 64, "default/a", "default/b"),
        ("default/b/eth0", "in", f"{A}:42001", f"{B}:8080", 64, "default/a", "default/b")]
    assert not [o for o in obs2 if o.iface == "node1/cbr0"]
    ct = [e for e in kc.conntrack("node1") if e["proto"] == "tcp"
          and e["orig"].get("sport") == 42001]
    assert ct and ct[0]["orig"] == {"src": A, "dst": SVC_B, "sport": 42001, "dport": 80}
    assert ct[0]["reply"] == {"src": B, "dst": A, "sport": 8080, "dport": 42001}


def test_clusterip_same_bridge_with_arp(dyn: KernelCluster) -> None:
    kc = dyn
    obs = kc.run([from_a(SVC_B, 42002, 80)], wait=0.5)
    seq = [(o.iface, o.direction, kind(o), o.d.src_mac) for o in obs]
    # node1 ARPs for the endpoint from cbr0, then the DNATed SYN leaves through cbr0
    arp = seq.index(("node1/cbr0", "out", ("who-has", B, "10.244.0.1"), BR1_MAC))
    assert arp < seq.index(("node1/cbr0", "out", ("tcp", "S"), A_MAC)), dump(kc, obs)
    assert ("default/b/eth0", "in", ("tcp", "S"), A_MAC) in seq


def test_clusterip_remote_endpoint(kc: KernelCluster) -> None:
    obs = kc.run([from_a(SVC_C, 43000, 80)])
    assert [row(kc, o) for o in tcp(obs, 43000, "S")] == [
        ("default/a/eth0", "out", f"{A}:43000", f"{SVC_C}:80", 64, "default/a", "node1/cbr0"),
        (VA, "in", f"{A}:43000", f"{SVC_C}:80", 64, "default/a", "node1/cbr0"),
        # br_netfilter already DNATed in the bridge's PREROUTING before handing it up
        ("node1/cbr0", "in", f"{A}:43000", f"{C}:8080", 64, "default/a", "node1/cbr0"),
        ("node1/eth0", "out", f"{A}:43000", f"{C}:8080", 63, "node1/eth0", "node2/eth0"),
        ("net/n-node1", "in", f"{A}:43000", f"{C}:8080", 63, "node1/eth0", "node2/eth0"),
        ("net/n-node2", "out", f"{A}:43000", f"{C}:8080", 63, "node1/eth0", "node2/eth0"),
        ("node2/eth0", "in", f"{A}:43000", f"{C}:8080", 63, "node1/eth0", "node2/eth0"),
        ("node2/cbr0", "out", f"{A}:43000", f"{C}:8080", 62, "node2/cbr0", "default/c"),
        (VC, "out", f"{A}:43000", f"{C}:8080", 62, "node2/cbr0", "default/c"),
        ("default/c/eth0", "in", f"{A}:43000", f"{C}:8080", 62, "node2/cbr0", "default/c")]
    assert [row(kc, o) for o in tcp(obs, 43000, "SA")] == [
        ("default/c/eth0", "out", f"{C}:8080", f"{A}:43000", 64, "default/c", "node2/cbr0"),
        (VC, "in", f"{C}:8080", f"{A}:43000", 64, "default/c", "node2/cbr0"),
        ("node2/cbr0", "in", f"{C}:8080", f"{A}:43000", 64, "default/c", "node2/cbr0"),
        ("node2/eth0", "out", f"{C}:8080", f"{A}:43000", 63, "node2/eth0", "node1/eth0"),
        ("net/n-node2", "in", f"{C}:8080", f"{A}:43000", 63, "node2/eth0", "node1/eth0"),
        ("net/n-node1", "out", f"{C}:8080", f"{A}:43000", 63, "node2/eth0", "node1/eth0"),
        ("node1/eth0", "in", f"{C}:8080", f"{A}:43000", 63, "node2/eth0", "node1/eth0"),
        ("node1/cbr0", "out", f"{SVC_C}:80", f"{A}:43000", 62, "node1/cbr0", "default/a"),
        (VA, "out", f"{SVC_C}:80", f"{A}:43000", 62, "node1/cbr0", "default/a"),
        ("default/a/eth0", "in", f"{SVC_C}:80", f"{A}:43000", 62, "node1/cbr0", "default/a")]


def test_two_endpoints_uniform_choice(kc: KernelCluster) -> None:
    ports = range(44100, 44116)
    obs = kc.run([from_a(SVC_TWO, p, 80) for p in ports], gap=0.005)
    chosen = {}
    for p in ports:
        got = [o.d.dst for o in tcp(obs, p, "S")
               if o.iface in ("default/b/eth0", "default/c/eth0") and o.direction == "in"]
        assert len(got) == 1, dump(kc, tcp(obs, p))
        chosen[p] = got[0]
    assert set(chosen.values()) == {B, C}       # P(all 16 on one endpoint) = 2**-15
    saved = kc.iptables_save("node1")
    svc = "KUBE-SVC-" + chain_hash("default/svc-two:http", "tcp")
    counts = [int(line[1:].split(":")[0]) for line in saved.splitlines()
              if f"-A {svc} -m comment --comment \"default/svc-two:http ->" in line]
    assert sum(counts) == 16


def test_hairpin_to_own_service(kc: KernelCluster) -> None:
    obs = kc.run([from_a(SVC_A, 44000, 80)])
    obs2 = kc.run([from_a(SVC_A, 44001, 80)])
    # DNAT to a itself + masquerade (KUBE-SEP -s a -> MARK-MASQ, S-5) to the bridge IP; the
    # frame goes back out of a's own port (hairpin, L2-4) with a's MAC as both source and dest
    assert [row(kc, o) for o in tcp(obs, 44000, "S")] == [
        ("default/a/eth0", "out", f"{A}:44000", f"{SVC_A}:80", 64, "default/a", "node1/cbr0"),
        (VA, "in", f"{A}:44000", f"{SVC_A}:80", 64, "default/a", "node1/cbr0"),
        ("node1/cbr0", "out", f"{A}:44000", f"{A}:8080", 64, "default/a", "default/a"),
        (VA, "out", "10.244.0.1:44000", f"{A}:8080", 64, "default/a", "default/a"),
        ("default/a/eth0", "in", "10.244.0.1:44000", f"{A}:8080", 64, "default/a",
         "default/a")]
    assert [row(kc, o) for o in tcp(obs, 44000, "SA")] == [
        ("default/a/eth0", "out", f"{A}:8080", "10.244.0.1:44000", 64, "default/a",
         "node1/cbr0"),
        (VA, "in", f"{A}:8080", "10.244.0.1:44000", 64, "default/a", "node1/cbr0"),
        (VA, "out", f"{SVC_A}:80", f"{A}:44000", 64, "default/a", "default/a"),
        ("default/a/eth0", "in", f"{SVC_A}:80", f"{A}:44000", 64, "default/a", "default/a")]
    assert hops(tcp(obs2, 44001, "S")) == [("default/a/eth0", "out"), (VA, "in"), (VA, "out"),
                                           ("default/a/eth0", "in")]
    ct = [e for e in kc.conntrack("node1") if e["proto"] == "tcp"
          and e["orig"].get("sport") == 44000]
    assert ct[0]["reply"] == {"src": A, "dst": "10.244.0.1", "sport": 8080, "dport": 44000}


def test_nodeport_local_endpoint(kc: KernelCluster) -> None:
    obs = kc.run([("ext:client", syn(CLIENT, NODE1, 45000, 30080, CL_MAC, N1_MAC))])
    cl, n1 = f"{CLIENT}:45000", f"{NODE1}:30080"
    assert [row(kc, o) for o in tcp(obs, 45000, "S")] == [
        ("ext/client/eth0", "out", cl, n1, 64, "ext/client", "node1/eth0"),
        ("net/x-client", "in", cl, n1, 64, "ext/client", "node1/eth0"),
        ("net/n-node1", "out", cl, n1, 64, "ext/client", "node1/eth0"),
        ("node1/eth0", "in", cl, n1, 64, "ext/client", "node1/eth0"),
        ("node1/cbr0", "out", "10.244.0.1:45000", f"{A}:8080", 63, "node1/cbr0", "default/a"),
        (VA, "out", "10.244.0.1:45000", f"{A}:8080", 63, "node1/cbr0", "default/a"),
        ("default/a/eth0", "in", "10.244.0.1:45000", f"{A}:8080", 63, "node1/cbr0",
         "default/a")]
    assert [row(kc, o) for o in tcp(obs, 45000, "SA")] == [
        ("default/a/eth0", "out", f"{A}:8080", "10.244.0.1:45000", 64, "default/a",
         "node1/cbr0"),
        (VA, "in", f"{A}:8080", "10.244.0.1:45000", 64, "default/a", "node1/cbr0"),
        # un-SNAT (dst) already done by the bridge PREROUTING, un-DNAT (src) at POSTROUTING
        ("node1/cbr0", "in", f"{A}:8080", cl, 64, "default/a", "node1/cbr0"),
        ("node1/eth0", "out", n1, cl, 63, "node1/eth0", "ext/client"),
        ("net/n-node1", "in", n1, cl, 63, "node1/eth0", "ext/client"),
        ("net/x-client", "out", n1, cl, 63, "node1/eth0", "ext/client"),
        ("ext/client/eth0", "in", n1, cl, 63, "node1/eth0", "ext/client")]
    ct = [e for e in kc.conntrack("node1") if e["proto"] == "tcp"
          and e["orig"].get("sport") == 45000]
    assert ct[0]["reply"] == {"src": A, "dst": "10.244.0.1", "sport": 8080, "dport": 45000}


def test_nodeport_remote_endpoint(kc: KernelCluster) -> None:
    obs = kc.run([("ext:client", syn(CLIENT, NODE1, 45001, 30081, CL_MAC, N1_MAC))])
    cl, n1, snat, cc = f"{CLIENT}:45001", f"{NODE1}:30081", f"{NODE1}:45001", f"{C}:8080"
    assert [row(kc, o) for o in tcp(obs, 45001, "S")] == [
        ("ext/client/eth0", "out", cl, n1, 64, "ext/client", "node1/eth0"),
        ("net/x-client", "in", cl, n1, 64, "ext/client", "node1/eth0"),
        ("net/n-node1", "out", cl, n1, 64, "ext/client", "node1/eth0"),
        ("node1/eth0", "in", cl, n1, 64, "ext/client", "node1/eth0"),
        ("node1/eth0", "out", snat, cc, 63, "node1/eth0", "node2/eth0"),
        ("net/n-node1", "in", snat, cc, 63, "node1/eth0", "node2/eth0"),
        ("net/n-node2", "out", snat, cc, 63, "node1/eth0", "node2/eth0"),
        ("node2/eth0", "in", snat, cc, 63, "node1/eth0", "node2/eth0"),
        ("node2/cbr0", "out", snat, cc, 62, "node2/cbr0", "default/c"),
        (VC, "out", snat, cc, 62, "node2/cbr0", "default/c"),
        ("default/c/eth0", "in", snat, cc, 62, "node2/cbr0", "default/c")]
    assert [row(kc, o) for o in tcp(obs, 45001, "SA")] == [
        ("default/c/eth0", "out", cc, snat, 64, "default/c", "node2/cbr0"),
        (VC, "in", cc, snat, 64, "default/c", "node2/cbr0"),
        ("node2/cbr0", "in", cc, snat, 64, "default/c", "node2/cbr0"),
        ("node2/eth0", "out", cc, snat, 63, "node2/eth0", "node1/eth0"),
        ("net/n-node2", "in", cc, snat, 63, "node2/eth0", "node1/eth0"),
        ("net/n-node1", "out", cc, snat, 63, "node2/eth0", "node1/eth0"),
        ("node1/eth0", "in", cc, snat, 63, "node2/eth0", "node1/eth0"),
        ("node1/eth0", "out", n1, cl, 62, "node1/eth0", "ext/client"),
        ("net/n-node1", "in", n1, cl, 62, "node1/eth0", "ext/client"),
        ("net/x-client", "out", n1, cl, 62, "node1/eth0", "ext/client"),
        ("ext/client/eth0", "in", n1, cl, 62, "node1/eth0", "ext/client")]
    assert not [o for o in obs if o.d.icmp_type == 5]      # no ICMP redirect despite in == out


def test_external_client_to_clusterip_is_masqueraded(kc: KernelCluster) -> None:
    obs = kc.run([("ext:client", syn(CLIENT, SVC_B, 45002, 80, CL_MAC, N1_MAC))])
    (at_b,) = [o for o in tcp(obs, 45002, "S") if o.iface == "default/b/eth0"]
    assert (at_b.d.src, at_b.d.dst, at_b.d.dport, at_b.d.ttl) == ("10.244.0.1", B, 8080, 63)
    (back,) = [o for o in tcp(obs, 45002, "SA") if o.iface == "ext/client/eth0"]
    assert (back.d.src, back.d.sport, back.d.dst) == (SVC_B, 80, CLIENT)
    # the client has no route to the service CIDR: its RST goes to the gateway, not node1
    (rst,) = [o for o in tcp(obs, 45002, "R") if o.iface == "ext/client/eth0"]
    assert rst.d.dst_mac == GW_MAC


def test_service_without_endpoints_rejects(kc: KernelCluster) -> None:
    obs = kc.run([from_a(SVC_NONE, 46000, 80),
                  ("ext:client", syn(CLIENT, NODE1, 46001, 30082, CL_MAC, N1_MAC))], gap=0.05)
    assert hops(tcp(obs, 46000)) == [("default/a/eth0", "out"), (VA, "in"), ("node1/cbr0", "in")]
    errs = icmp_err(obs, 46000)
    assert [row(kc, o) for o in errs] == [
        ("node1/cbr0", "out", "10.244.0.1", A, 64, "node1/cbr0", "default/a"),
        (VA, "out", "10.244.0.1", A, 64, "node1/cbr0", "default/a"),
        ("default/a/eth0", "in", "10.244.0.1", A, 64, "node1/cbr0", "default/a")]
    d = errs[-1].d
    assert (d.icmp_type, d.icmp_code) == (3, 3)             # S-9: port unreachable, not RST
    assert (d.inner.src, d.inner.sport, d.inner.dst, d.inner.dport, d.inner.ttl) == (
        A, 46000, SVC_NONE, 80, 63)                         # quoted after the TTL decrement
    # NodePort without endpoints: KUBE-EXTERNAL-SERVICES rejects in INPUT, from the node IP
    errs = icmp_err(obs, 46001)
    assert [row(kc, o) for o in errs][0] == (
        "node1/eth0", "out", NODE1, CLIENT, 64, "node1/eth0", "ext/client")
    assert errs[-1].iface == "ext/client/eth0"
    assert (errs[-1].d.icmp_type, errs[-1].d.icmp_code, errs[-1].d.inner.ttl) == (3, 3, 64)


def test_ttl_expiry(kc: KernelCluster) -> None:
    obs = kc.run([from_a(C, 47000, 8080, ttl=1), from_a(C, 47001, 8080, ttl=2),
                  from_a(SVC_B, 47002, 80, ttl=1), from_a(SVC_C, 47003, 80, ttl=1)], gap=0.05)
    # routed with TTL 1: node1 answers time-exceeded from its cbr0 address
    assert [row(kc, o) for o in icmp_err(obs, 47000)] == [
        ("node1/cbr0", "out", "10.244.0.1", A, 64, "node1/cbr0", "default/a"),
        (VA, "out", "10.244.0.1", A, 64, "node1/cbr0", "default/a"),
        ("default/a/eth0", "in", "10.244.0.1", A, 64, "node1/cbr0", "default/a")]
    assert icmp_err(obs, 47000)[0].d.icmp_type == 11
    assert not [o for o in tcp(obs, 47000) if o.iface == "node1/eth0"]
    # TTL 2: expires on node2, which answers from its node IP (route back via node1)
    err2 = icmp_err(obs, 47001, typ=11)
    assert row(kc, err2[0]) == ("node2/eth0", "out", NODE2, A, 64, "node2/eth0", "node1/eth0")
    assert row(kc, err2[-1]) == ("default/a/eth0", "in", NODE2, A, 63, "node1/cbr0",
                                 "default/a")
    # TTL 1 to a ClusterIP whose endpoint is on the same bridge: bridged, delivered with TTL 1
    (at_b,) = [o for o in tcp(obs, 47002, "S") if o.iface == "default/b/eth0"]
    assert (at_b.d.dst, at_b.d.ttl) == (B, 1)
    assert not icmp_err(obs, 47002)
    # TTL 1 to a routed ClusterIP: the error comes FROM the ClusterIP (conntrack NATs the
    # related ICMP's outer source) and quotes the original, un-DNATed header
    err4 = icmp_err(obs, 47003)
    assert [row(kc, o)[:5] for o in err4] == [
        ("node1/cbr0", "out", SVC_C, A, 64), (VA, "out", SVC_C, A, 64),
        ("default/a/eth0", "in", SVC_C, A, 64)]
    i = err4[-1].d.inner
    assert (err4[-1].d.icmp_type, i.dst, i.dport, i.ttl) == (11, SVC_C, 80, 1)


def test_unreachable_and_no_route(kc: KernelCluster) -> None:
    echo = Ether(src=A_MAC, dst=BR1_MAC) / IP(src=A, dst="10.244.0.99") / ICMP(id=9)
    nowhere = Ether(src=CL_MAC, dst=N3_MAC) / IP(src=CLIENT, dst="8.8.8.8") / ICMP(id=10)
    sink = Ether(src=A_MAC, dst=BR1_MAC) / IP(src=A, dst="192.0.2.1") / ICMP(id=11)
    obs = kc.run([("pod:default/a", echo), ("ext:client", nowhere), ("pod:default/a", sink)],
                 wait=3.6, gap=0.02)
    t0 = obs[0].ts_ns
    # (1) on-link pod IP nobody owns: 3 broadcast ARP probes ~1 s apart, then host unreachable
    probes = [o for o in obs if o.iface == "node1/cbr0" and o.d.arp_pdst == "10.244.0.99"]
    assert len(probes) == 3 and all(p.d.arp_psrc == "10.244.0.1" for p in probes)
    gaps = [(b.ts_ns - a.ts_ns) / 1e9 for a, b in zip(probes, probes[1:], strict=False)]
    assert all(0.7 < g < 1.5 for g in gaps), gaps
    (err,) = [o for o in icmp_err(obs, typ=3) if o.d.inner.dst == "10.244.0.99"
              and o.iface == "default/a/eth0"]
    assert (err.d.src, err.d.icmp_code, err.d.inner.ttl) == ("10.244.0.1", 1, 63)
    assert (err.ts_ns - t0) / 1e9 > 2.5
    # (2) node3 has no default route: net unreachable at once, from its node IP
    (nr,) = [o for o in icmp_err(obs, typ=3) if o.d.inner.dst == "8.8.8.8"
             and o.iface == "node3/eth0"]
    assert (nr.direction, nr.d.src, nr.d.dst, nr.d.icmp_code, nr.d.inner.ttl) == (
        "out", NODE3, CLIENT, 0, 64)
    # (3) default route to the gateway, which is a sink (ip_forward=0): silently dropped
    out = [row(kc, o) for o in obs if o.d.dst == "192.0.2.1" and o.iface in (
        "node1/eth0", "gateway/eth0")]
    assert out == [("node1/eth0", "out", A, "192.0.2.1", 63, "node1/eth0", "gateway"),
                   ("gateway/eth0", "in", A, "192.0.2.1", 63, "node1/eth0", "gateway")]
    assert not [o for o in icmp_err(obs) if o.d.inner.dst == "192.0.2.1"]
