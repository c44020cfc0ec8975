"""The Cython datapath (``kemu._fastpath``) against the pure-Python reference, byte for byte.

Hypothesis builds random clusters (``FakeCluster``: just what ``compile_cluster`` reads, so
these tests do not depend on the control plane) and random frame streams of raw bytes:
Ethernet with ARP, IPv4 with TCP/UDP/ICMP echo, ICMP errors quoting flows, VXLAN, other
protocols, and the broken kinds (truncated, bad checksums, fragments, IP options, IPv6,
VLAN, garbage), drawn mostly from a few "hot" addresses and ports of the cluster so that
conntrack, NAT and affinity entries get hit. Frames enter at random interfaces in every
injection mode, with timestamps that now and then jump past FDB ageing and conntrack
timeouts. Both implementations must return the same frame index from every ``process``
call (tiny ``Results`` exercise the grow-and-resume protocol), fill identical ``Results``
arrays and arenas, and keep identical ``state()``. Scapy, an independent oracle, checks the
checksums of every frame the fast path emits.

Malformed inputs the reference once raised on (an ICMP header cut off, a total length past
the frame at a node's local interface, a runt on flannel.1) are generated like any other and
pinned in ``test_malformed_inputs_that_once_crashed_the_reference``.
"""

from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kemu.compiler.compile import compile_cluster
from kemu.control.cni import cni_config
from kemu.control.model import (
    ClusterConfig,
    Container,
    ContainerPort,
    Endpoint,
    ExternalHost,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Node,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    Service,
    ServicePort,
)
from kemu.dataplane import codes as C
from kemu.dataplane import reference
from kemu.dataplane.packet import flow_hash, mix64
from kemu.dataplane.results import Results
from kemu.frontend.engine import Batch as EngineBatch

try:
    from kemu import _fastpath
except ImportError:
    if os.environ.get("KEMU_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("kemu._fastpath not built (KEMU_NO_EXTENSIONS)", allow_module_level=True)
    raise

EXAMPLES = int(os.environ.get("KEMU_EQUIVALENCE_EXAMPLES", "120"))
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
        HealthCheck.large_base_example]
NS = 10**9


# ------------------------------------------------------------------ a fake control plane
@dataclass
class FakeCluster:
    """What ``compile_cluster`` reads from a ``kemu.control.cluster.Cluster``."""

    config: ClusterConfig
    nodes: list[Node]
    pods: list[Pod]
    services: list[Service]
    endpoints: dict[tuple[str, str], list[tuple[Endpoint, int]]] = field(default_factory=dict)
    gateway_mac: str = "02:00:00:00:00:01"
    version: int = 0
    policies: list[NetworkPolicy] = field(default_factory=list)
    namespaces: dict = field(default_factory=dict)

    def backends(self, svc: Service, port: ServicePort) -> list[tuple[Endpoint, int]]:
        return list(self.endpoints.get((svc.key, port.name), []))


def mac(*b: int) -> str:
    return ":".join(f"{x:02x}" for x in (0x02, *b))


SERVICE_PORTS = [80, 53, 443]
TARGET_PORTS = [8080, 53, 80]
CLIENT_PORTS = [1000, 1001, 40000]


# flannel's backends, kube-router (issue #18: IPVS, its overlay with IP-in-IP devices),
# Cilium (lxc devices, cilium_host, cilium_vxlan with the identity as the VNI, or native) and
# Antrea (br-int's pipeline, the ovs room): encap with each tunnel type, noEncap
MODES = ["host-gw", "vxlan", "kube-router", "kube-router-full", "cilium", "cilium-native",
         "antrea", "antrea-vxlan", "antrea-gre", "antrea-noEncap"]
ANTREA_OPTS = {"antrea": {}, "antrea-vxlan": {"tunnelType": "vxlan"},
               "antrea-gre": {"tunnelType": "gre"},
               "antrea-noEncap": {"trafficEncapMode": "noEncap"}}


def mode_config(name: str, mode: str, **kw) -> ClusterConfig:
    """A ``ClusterConfig`` of one of ``MODES``."""
    if mode.startswith("kube-router"):
        opts = {"overlayType": "full"} if mode.endswith("-full") else {}
        return ClusterConfig(name=name, mode="host-gw", cni=cni_config("kube-router", opts), **kw)
    if mode.startswith("cilium"):
        opts = {"routingMode": "native"} if mode.endswith("-native") else {}
        return ClusterConfig(name=name, mode="host-gw", cni=cni_config("cilium", opts), **kw)
    if mode.startswith("antrea"):
        return ClusterConfig(name=name, mode="host-gw",
                             cni=cni_config("antrea", ANTREA_OPTS[mode]), **kw)
    return ClusterConfig(name=name, mode=mode, **kw)


@st.composite
def clusters(draw, max_nodes: int = 3) -> FakeCluster:
    n_nodes = draw(st.integers(1, max_nodes))
    prefix = draw(st.sampled_from([24, 24, 25, 23]))
    cfg = mode_config("eq", draw(st.sampled_from(MODES)),
                      gateway_ip=IPv4Address("172.18.0.1") if draw(st.integers(0, 4)) else None)
    cfg.external_hosts = [ExternalHost(f"e{k}", IPv4Address(f"172.18.0.{100 + k}"),
                                       mac=mac(5, 0, 0, 0, k))
                          for k in range(draw(st.integers(0, 2)))]
    base = int(IPv4Address("10.244.0.0"))
    nodes = [Node(f"node{i + 1}", IPv4Address(f"172.18.0.{10 + i}"),
                  IPv4Network((base + i * 2 ** (32 - prefix), prefix)),
                  mac=mac(1, 0, 0, 0, i), bridge_mac=mac(2, 0, 0, 0, i),
                  vtep_mac=mac(3, 0, 0, 0, i))
             for i in range(n_nodes)]
    pods = []
    for i, node in enumerate(nodes):
        for k in range(draw(st.integers(0, 3))):
            host = draw(st.integers(0, 12)) == 0
            ip = node.internal_ip if host else node.pod_cidr.network_address + 2 + k
            pods.append(Pod("default", f"p{i}{k}", node.name, ip,
                            mac="" if host else mac(4, 0, 0, i, k), host_network=host,
                            labels={"app": draw(st.sampled_from("ab"))},
                            containers=[Container("c", [ContainerPort(
                                draw(st.sampled_from(TARGET_PORTS)), "TCP", "web")])]))
    services, endpoints = [], {}
    for k in range(draw(st.integers(0, 3))):
        typ = draw(st.sampled_from(["ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"]))
        ports = []
        for j in range(draw(st.integers(1, 2))):
            ports.append(ServicePort(draw(st.sampled_from(SERVICE_PORTS)),
                                     draw(st.sampled_from(["TCP", "TCP", "UDP"])), name=f"p{j}",
                                     node_port=30000 + 10 * k + j if typ != "ClusterIP" else 0))
        svc = Service(
            "default", f"s{k}", type=typ, ports=ports,
            cluster_ip=IPv4Address(f"10.96.0.{10 + k}") if draw(st.integers(0, 9)) else None,
            session_affinity=draw(st.sampled_from(["None", "None", "ClientIP"])),
            affinity_timeout=draw(st.sampled_from([1, 20, 10800])),
            external_traffic_policy=draw(st.sampled_from(["Cluster", "Local"])),
            internal_traffic_policy=draw(st.sampled_from(["Cluster", "Cluster", "Local"])),
            external_ips=[IPv4Address(f"172.18.0.{150 + k}")] if draw(st.booleans()) else [],
            load_balancer_ips=([IPv4Address(f"172.18.0.{180 + k}")]
                               if typ == "LoadBalancer" else []))
        services.append(svc)
        targets = [(p.ip, p.node_name, p.key) for p in pods]
        targets += [(e.ip, "", "") for e in cfg.external_hosts]
        for port in ports:
            chosen = draw(st.lists(st.integers(0, max(0, len(targets) - 1)), max_size=3,
                                   unique=True)) if targets else []
            backends = []
            for c in chosen:
                ip, node_name, key = targets[c]
                ready = draw(st.integers(0, 5)) > 0
                terminating = not ready and draw(st.booleans())
                backends.append((Endpoint(ip, ready=ready, serving=ready or terminating,
                                          terminating=terminating, node_name=node_name,
                                          pod=key),
                                 draw(st.sampled_from(TARGET_PORTS))))
            endpoints[(svc.key, port.name)] = backends
    cfg.policy_icmp = draw(st.sampled_from(["deny", "allow"]))
    return FakeCluster(cfg, nodes, pods, services, endpoints,
                       policies=draw(st.lists(policies(), max_size=3, unique_by=lambda p: p.name)))


@st.composite
def policies(draw) -> NetworkPolicy:
    """A random NetworkPolicy over the pods' ``app`` label, the service/target/client ports
    and ipBlocks of the pod and node networks (#17)."""
    def selector() -> LabelSelector:
        return draw(st.sampled_from([LabelSelector(), LabelSelector({"app": "a"}),
                                     LabelSelector({"app": "b"})]))

    def rules() -> list[PolicyRule]:
        out = []
        for _ in range(draw(st.integers(0, 2))):
            peers = []
            for _ in range(draw(st.integers(0, 2))):
                kind = draw(st.integers(0, 2))
                if kind == 0:
                    peers.append(PolicyPeer(pod_selector=selector()))
                elif kind == 1:
                    peers.append(PolicyPeer(pod_selector=selector(),
                                            namespace_selector=LabelSelector()))
                else:
                    net = draw(st.sampled_from(["10.244.0.0/16", "172.18.0.0/24",
                                                "0.0.0.0/0"]))
                    exc = [IPv4Network("10.244.0.0/24")] if net != "172.18.0.0/24" and \
                        draw(st.booleans()) else []
                    peers.append(PolicyPeer(ip_block=IPBlock(IPv4Network(net), exc)))
            ports = []
            for _ in range(draw(st.integers(0, 2))):
                proto = draw(st.sampled_from(["TCP", "TCP", "UDP"]))
                port = draw(st.sampled_from([None, "web"] + TARGET_PORTS + SERVICE_PORTS))
                end = draw(st.sampled_from([None, None, 1001, 9000])) \
                    if isinstance(port, int) else None
                ports.append(PolicyPort(proto, port, end if end and end >= port else None))
            out.append(PolicyRule(peers, ports))
        return out

    types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    return NetworkPolicy("default", f"np{draw(st.integers(0, 9))}", selector(), types,
                         ingress=rules(), egress=rules())


# ------------------------------------------------------------------ raw frames
def csum(b: bytes) -> int:
    if len(b) & 1:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: int, dst: int, proto: int, payload: bytes, ttl: int = 64, ident: int = 1,
         frag: int = 0, options: bytes = b"", tot: int | None = None) -> bytes:
    ihl = 5 + len(options) // 4
    total = 4 * ihl + len(payload) if tot is None else tot
    h = struct.pack("!BBHHHBBHII", 0x40 | ihl, 0, total & 0xFFFF, ident, frag, ttl, proto, 0,
                    src, dst) + options
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def pseudo(src: int, dst: int, proto: int, n: int) -> bytes:
    return struct.pack("!IIBBH", src, dst, 0, proto, n)


def tcp(src: int, dst: int, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    h = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 8192, 0, 0) + payload
    c = csum(pseudo(src, dst, C.PROTO_TCP, len(h)) + h)
    return h[:16] + struct.pack("!H", c) + h[18:]


def udp(src: int, dst: int, sport: int, dport: int, payload: bytes = b"",
        zero: bool = False) -> bytes:
    h = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = 0 if zero else (csum(pseudo(src, dst, C.PROTO_UDP, len(h)) + h) or 0xFFFF)
    return h[:6] + struct.pack("!H", c) + h[8:]


def icmp(typ: int, code: int, rest: int, payload: bytes) -> bytes:
    h = struct.pack("!BBHI", typ, code, 0, rest) + payload
    return h[:2] + struct.pack("!H", csum(h)) + h[4:]


def ether(dst: int, src: int, etype: int, payload: bytes) -> bytes:
    return dst.to_bytes(6, "big") + src.to_bytes(6, "big") + struct.pack("!H", etype) + payload


def arp(op: int, sha: int, spa: int, tha: int, tpa: int) -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha.to_bytes(6, "big") + \
        struct.pack("!I", spa) + tha.to_bytes(6, "big") + struct.pack("!I", tpa)


def ip_of(s: str) -> int:
    return int(IPv4Address(s))


@dataclass
class Pools:
    ips: list[int]
    ports: list[int]
    macs: list[int]
    node_macs: list[int]
    node_ips: list[int]
    vtep_macs: set[int]
    sources: list[int]      # interfaces where traffic usually enters
    n_ifaces: int
    kinds: list[int]
    flows: list[tuple[int, int, int, int, int]]   # (proto, client, client port, server, port)
    svc_flows: list[tuple[int, int, int, int, int]]  # the ones to a Service frontend
    backends: dict[tuple[int, int, int], list[tuple[int, int]]]  # server -> [(ip, port)]
    snat_ips: list[int]     # addresses a masquerade may pick (eth0, cbr0, flannel.1)
    home: dict[int, int]    # address -> interface to send from


def pools_of(t) -> Pools:
    ips = {int(x) for x in t.if_ip if int(x)} | {int(x) for x in t.fe_ip if int(x)}
    ips |= {int(x) for x in t.be_ip} | {int(x) for x in t.sp_ip if int(x)}
    ips |= {ip_of("8.8.8.8"), ip_of("127.0.0.1"), ip_of("224.0.0.251"), 0xFFFFFFFF, 0,
            ip_of("10.244.7.7"), ip_of("10.96.0.99"), ip_of("172.18.0.77")}
    ports = set(SERVICE_PORTS + TARGET_PORTS + CLIENT_PORTS) | {int(x) for x in t.fe_port}
    ports |= {0, 8472, 65535}
    macs = sorted({int(x) for x in t.if_mac if int(x)} | {0xFFFFFFFFFFFF, 0x01005E0000FB, 0,
                                                          0x0200DEADBEEF})
    kinds = [int(k) for k in t.if_kind]
    sources = [i for i, k in enumerate(kinds)
               if k in (C.IF_POD_ETH, C.IF_EXT_ETH, C.IF_GW_ETH, C.IF_NODE_LOCAL)]
    vteps = {int(t.if_mac[i]) for i in t.node_vtep_if if int(i) >= 0}
    node_macs = [int(t.if_mac[i]) for i in t.node_eth_if]
    home = {}
    for i, k in enumerate(kinds):
        if k in (C.IF_POD_ETH, C.IF_EXT_ETH, C.IF_GW_ETH):
            home.setdefault(int(t.if_ip[i]), i)
    for node, ip in enumerate(t.node_ip):
        home.setdefault(int(ip), int(t.node_local_if[node]))
    clients = sorted(home)
    servers, backends = [], {}
    for i in range(len(t.fe_ip)):
        proto, port, sp = int(t.fe_proto[i]), int(t.fe_port[i]), int(t.fe_sp[i])
        bes = [(int(t.be_ip[b]), int(t.be_port[b]))
               for b in range(int(t.sp_be_start[sp]), int(t.sp_be_start[sp])
                              + int(t.sp_be_count[sp]))]
        fips = [int(t.fe_ip[i])] if int(t.fe_ip[i]) else [int(x) for x in t.node_ip]
        for fip in fips:
            servers.append((proto, fip, port))
            backends[(proto, fip, port)] = bes
            for be in bes:
                servers.append((proto, *be))
    for ip in clients:
        servers += [(C.PROTO_TCP, ip, 80), (C.PROTO_UDP, ip, 53), (C.PROTO_ICMP, ip, 0)]
    flows = [(proto, cip, cport, sip, sport) for proto, sip, sport in servers
             for cip in clients for cport in CLIENT_PORTS[:2]]
    svc_flows = [f for f in flows if (f[0], f[3], f[4]) in backends]
    snat = [int(t.if_ip[i]) for i, k in enumerate(kinds)
            if k in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP)]
    return Pools(sorted(ips), sorted(ports), macs, node_macs, [int(x) for x in t.node_ip],
                 vteps, sources or [0], t.n_ifaces, kinds, flows, svc_flows, backends, snat,
                 home)


TCP_FLAGS = [0x02, 0x12, 0x10, 0x18, 0x01, 0x11, 0x04, 0x14, 0x00]
KINDS = ["flow"] * 10 + ["reply"] * 6 + ["flowerr"] * 3 + ["tcp"] * 4 + ["udp"] * 3 + \
    ["echo"] * 2 + ["icmperr"] * 2 + ["arp"] * 2 + ["vxlan"] * 2 + \
    ["ipv6", "vlan", "garbage", "proto"]


class Draws:
    """Choices for the frame generator: from Hypothesis (shrinkable) or from a seeded
    ``random.Random`` (for streams too long for Hypothesis' buffer)."""

    def __init__(self, draw=None, rng: random.Random | None = None) -> None:
        self.draw, self.rng = draw, rng

    def one(self, seq: list):
        return self.draw(st.sampled_from(seq)) if self.draw else self.rng.choice(seq)

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi)) if self.draw else self.rng.randint(lo, hi)

    def binary(self, hi: int) -> bytes:
        if self.draw:
            return self.draw(st.binary(max_size=hi))
        return self.rng.randbytes(self.rng.randint(0, hi))


def make_frames(d: Draws, p: Pools, hot_ips: list[int], hot_ports: list[int], n: int,
                valid_only: bool = False, hot_flows: list | None = None,
                ) -> list[tuple[bytes, int, int, int, bool]]:
    """``n`` frames: (bytes, interface, injection mode, time step, checksums valid).
    Most follow a few flows of the cluster: requests, replies from the backends (to the
    client or to a masquerade address) and ICMP errors quoting them."""
    hot_flows = hot_flows or []

    def l4(proto: int, src: int, dst: int, sport: int, dport: int, reply: bool) -> bytes:
        if proto == C.PROTO_TCP:
            return tcp(src, dst, sport, dport,
                       d.one([0x12, 0x10, 0x18, 0x11, 0x04] if reply else TCP_FLAGS[:5]))
        if proto == C.PROTO_UDP:
            return udp(src, dst, sport, dport, b"x" * d.int(0, 2), zero=d.int(0, 5) == 0)
        return icmp(0 if reply else 8, 0, (sport or dport) << 16, b"ping")

    def flow_packet(kind: str) -> tuple[bytes, int, int]:
        """(IPv4 packet, source address, TTL) of a request, reply or error of a flow."""
        proto, cip, cport, sip, sport = d.one(hot_flows)
        ttl = d.one([64, 64, 64, 64, 2, 1])
        if kind == "flow":
            return ipv4(cip, sip, proto, l4(proto, cip, sip, cport, sport, False),
                        ttl=ttl), cip, ttl
        bip, bport = d.one(p.backends.get((proto, sip, sport)) or [(sip, sport)])
        to = cip if d.int(0, 2) else d.one(p.snat_ips or [cip])
        if kind == "reply" or proto == C.PROTO_ICMP:
            if proto == C.PROTO_ICMP:
                return ipv4(bip, to, proto, icmp(0, 0, cport, b"ping"), ttl=ttl), bip, ttl
            return ipv4(bip, to, proto, l4(proto, bip, to, bport, cport, True),
                        ttl=ttl), bip, ttl
        quoted = l4(proto, to, bip, cport, bport, False)[:d.one([8, 8, 20])]
        q = ipv4(to, bip, proto, quoted, tot=20 + len(quoted))
        return ipv4(bip, to, C.PROTO_ICMP, icmp(d.one([3, 11, 4]), d.one([3, 0, 1]), 0, q),
                    ttl=ttl), bip, ttl
    def ip_() -> int:
        return d.one(hot_ips) if d.int(0, 4) else d.one(p.ips)

    def port_() -> int:
        return d.one(hot_ports) if d.int(0, 4) else d.one(p.ports)

    def packet(kind: str) -> tuple[bytes, bool]:
        """An Ethernet payload with its type, and whether its checksums are valid."""
        src, dst = ip_(), ip_()
        ttl = d.one([64, 64, 64, 2, 1, 0])
        if kind == "arp":
            return struct.pack("!H", 0x0806) + arp(d.one([1, 2]), d.one(p.macs), src,
                                                   d.one([0] + p.macs), dst), True
        if kind == "ipv6":
            return struct.pack("!H", 0x86DD) + bytes(40), False
        if kind == "vlan":
            return struct.pack("!HHH", 0x8100, 5, 0x0800) + bytes(28), False
        if kind == "garbage":
            return d.binary(40), False
        if kind == "tcp":
            pl = tcp(src, dst, port_(), port_(), d.one(TCP_FLAGS), d.one([b"", b"hello"]))
            proto = C.PROTO_TCP
        elif kind == "udp":
            pl = udp(src, dst, port_(), port_(), b"x" * d.int(0, 3), zero=d.int(0, 5) == 0)
            proto = C.PROTO_UDP
        elif kind == "echo":
            pl = icmp(d.one([8, 0]), 0, (d.one(CLIENT_PORTS) << 16) | 1, b"ping")
            proto = C.PROTO_ICMP
        elif kind == "icmperr":
            qproto = d.one([C.PROTO_TCP, C.PROTO_UDP])
            qs, qd = ip_(), ip_()
            ql4 = tcp(qs, qd, port_(), port_(), 0x02) if qproto == C.PROTO_TCP else \
                udp(qs, qd, port_(), port_(), b"q")
            if d.int(0, 1):
                ql4 = ql4[:8]
            quoted = ipv4(qs, qd, qproto, ql4, tot=20 + len(ql4))
            pl = icmp(d.one([3, 3, 11, 4, 5, 12, 3]), d.one([3, 1, 0]), 0, quoted)
            proto = C.PROTO_ICMP
        else:  # "proto": SCTP (ports), GRE, or IP-in-IP (kube-router's tunnels) of a packet
            proto = d.one([C.PROTO_SCTP, 47, C.PROTO_IPIP])
            pl = struct.pack("!HH", port_(), port_()) + bytes(8)
            if proto == C.PROTO_IPIP and d.int(0, 3):
                isrc, idst = ip_(), ip_()
                pl = ipv4(isrc, idst, C.PROTO_TCP, tcp(isrc, idst, port_(), port_(),
                                                         d.one(TCP_FLAGS)), ttl=d.one([64, 1]))
        opts = b"\x01\x01\x01\x00" if d.int(0, 15) == 0 else b""
        frag = d.one([0x2000, 0x0010, 0x4000]) if d.int(0, 15) == 0 else 0
        pkt = ipv4(src, dst, proto, pl, ttl=ttl, ident=d.int(0, 3), frag=frag, options=opts)
        return struct.pack("!H", 0x0800) + pkt, frag == 0

    out = []
    for _ in range(n):
        kind = d.one(KINDS[:-4] if valid_only else KINDS)
        if kind in ("flow", "reply", "flowerr") and not hot_flows:
            kind = "tcp"
        dmac, smac = d.one(p.macs), d.one(p.macs)
        home = -1
        if kind in ("flow", "reply", "flowerr"):
            pkt, src, _ttl = flow_packet(kind)
            frame = ether(dmac, smac, 0x0800, pkt)
            valid = True
            home = p.home.get(src, -1)
        elif kind == "vxlan":
            body, valid = packet(d.one(["tcp", "udp", "echo", "arp"]))
            inner = ether(d.one(p.macs), d.one(p.macs), struct.unpack("!H", body[:2])[0],
                          body[2:])
            a, b = d.one(p.node_ips), d.one(p.node_ips)
            vx = struct.pack("!BBHI", 0x08, 0, 0, 1 << 8) + inner
            frame = ether(d.one(p.node_macs), smac, 0x0800,
                          ipv4(a, b, C.PROTO_UDP, udp(a, b, d.one([40000, 8472]), 8472, vx,
                                                      zero=True)))
        else:
            body, valid = packet(kind)
            frame = dmac.to_bytes(6, "big") + smac.to_bytes(6, "big") + body
        if not valid_only:
            m = d.int(0, 19)
            if m == 0:  # truncated
                frame = frame[:d.int(0, len(frame))]
                valid = False
            elif m == 1 and len(frame) > 25:  # bad IPv4 header checksum
                frame = frame[:24] + bytes([frame[24] ^ 0x5A]) + frame[25:]
                valid = False
            elif m == 2 and len(frame) > 40:  # a bad byte in the transport header
                frame = frame[:38] + bytes([frame[38] ^ 0xFF]) + frame[39:]
                valid = False
            elif m == 3:  # Ethernet padding
                frame = frame + bytes(max(0, 60 - len(frame)) + d.int(0, 4))
            elif m == 4 and len(frame) > 18:  # total length lies
                frame = frame[:16] + struct.pack("!H", d.int(0, 200)) + frame[18:]
                valid = False
            elif m == 5 and len(frame) > 15:  # version/IHL garbage
                frame = frame[:14] + bytes([d.int(0, 255)]) + frame[15:]
                valid = False
        if home >= 0 and d.int(0, 5):
            iface = home
            mode = d.one([C.INJ_TX_FIXL2, C.INJ_TX_FIXL2, C.INJ_TX_FIXL2, C.INJ_TX])
        else:
            iface = d.one(p.sources) if d.int(0, 3) else d.int(0, p.n_ifaces - 1)
            mode = d.one([C.INJ_TX, C.INJ_TX, C.INJ_TX_FIXL2, C.INJ_TX_FIXL2, C.INJ_RX])
        if d.int(0, 9) == 0:
            step = d.one([0, 1000, 10**6, NS, 2 * NS, 31 * NS, 121 * NS, 301 * NS])
        else:
            step = d.one([0, 1000, 1000])
        out.append((frame, iface, mode, step, valid))
    return out


@st.composite
def frames(draw, p: Pools, hot_ips: list[int], hot_ports: list[int], n: int,
           valid_only: bool = False, hot_flows: list | None = None,
           ) -> list[tuple[bytes, int, int, int, bool]]:
    return make_frames(Draws(draw), p, hot_ips, hot_ports, n, valid_only, hot_flows)


def hot(data: st.DataObject, p: Pools) -> tuple[list[int], list[int], list]:
    """A few addresses, ports and flows most frames of one example use."""
    ips = data.draw(st.lists(st.sampled_from(p.ips), min_size=2, max_size=6, unique=True))
    ports = data.draw(st.lists(st.sampled_from(p.ports), min_size=1, max_size=4, unique=True))
    flows = data.draw(st.lists(st.sampled_from(p.flows), max_size=2)) if p.flows else []
    if p.svc_flows:  # both client ports of a Service flow: affinity, port clashes
        for f in data.draw(st.lists(st.sampled_from(p.svc_flows), min_size=1, max_size=3)):
            flows += [f[:2] + (cport,) + f[3:] for cport in CLIENT_PORTS[:2]]
    return ips, ports, flows


# ------------------------------------------------------------------ running both
class Batch(EngineBatch):
    """The engine's batch: frames as (bytes, interface, injection mode, time in ns)."""

    of = EngineBatch.from_frames


def run(dp, res: Results, batch: Batch, n_if: int) -> list[int]:
    """The engine's loop: process, grow on early return, resume; the returned indices."""
    calls, start, n = [], 0, len(batch)
    while start < n:
        start = dp.process(batch.buf, batch.offsets, batch.lengths, batch.in_if,
                           batch.in_mode, batch.ts_ns, start, n, res)
        calls.append(start)
        if start < n:
            res.grow(int(batch.lengths[start]), n_if)
    return calls


HOPS = ["hop_frame", "hop_iface", "hop_dir", "hop_off", "hop_len"]
EVENTS = ["ev_frame", "ev_hop", "ev_kind", "ev_a", "ev_b", "ev_c"]
OUTCOMES = ["oc_frame", "oc_kind", "oc_reason", "oc_iface", "oc_hop", "oc_a", "oc_off",
            "oc_len", "oc_nat"]


def assert_same_results(ref: Results, fast: Results) -> None:
    assert (fast.n_hops, fast.n_events, fast.n_outcomes, fast.arena_used) == \
        (ref.n_hops, ref.n_events, ref.n_outcomes, ref.arena_used)
    for names, n, frame in ((HOPS, ref.n_hops, "hop_frame"), (EVENTS, ref.n_events, "ev_frame"),
                            (OUTCOMES, ref.n_outcomes, "oc_frame")):
        for name in names:
            a, b = getattr(ref, name)[:n], getattr(fast, name)[:n]
            if not np.array_equal(a, b):
                i = int(np.nonzero(a != b)[0][0])
                pytest.fail(f"{name}[{i}] (frame {int(getattr(ref, frame)[i])}): reference "
                            f"{a[max(0, i - 2): i + 3].tolist()}, fast "
                            f"{b[max(0, i - 2): i + 3].tolist()}")
    a, b = ref.arena[:ref.arena_used], fast.arena[:ref.arena_used]
    if not np.array_equal(a, b):
        pytest.fail(f"arena differs first at byte {int(np.nonzero(a != b)[0][0])}")


def assert_same_state(ref, fast) -> None:
    sa, sb = ref.state(), fast.state()
    for key in sa:
        if sa[key] != sb[key]:
            only_ref = [x for x in sa[key] if x not in sb[key]][:4]
            only_fast = [x for x in sb[key] if x not in sa[key]][:4]
            pytest.fail(f"state {key}: reference has {only_ref}, fast has {only_fast}")
    assert sa == sb


class Pair:
    """The reference and the fast datapath, driven identically."""

    def __init__(self, tables, seed: int, static: bool, hops: int, arena: int,
                 record: bool) -> None:
        self.t = tables
        self.ref = reference.Datapath(tables, seed, static)
        self.fast = _fastpath.Datapath(tables, seed, static)
        self.rres = Results(hops, arena, record)
        self.fres = Results(hops, arena, record)

    def batch(self, batch: Batch) -> None:
        calls_ref = run(self.ref, self.rres, batch, self.t.n_ifaces)
        calls_fast = run(self.fast, self.fres, batch, self.t.n_ifaces)
        assert calls_fast == calls_ref
        assert_same_results(self.rres, self.fres)
        assert_same_state(self.ref, self.fast)

    def both(self, method: str, *args) -> None:
        outcome = []
        for dp in (self.ref, self.fast):
            try:
                getattr(dp, method)(*args)
                outcome.append(None)
            except IndexError:  # stale affinity after a table swap (see cleanup)
                outcome.append(IndexError)
        assert outcome[0] == outcome[1], (method, outcome)
        assert_same_state(self.ref, self.fast)


def shrink_cluster(cl: FakeCluster, how: int) -> FakeCluster:
    """A changed cluster for a table swap: fewer services, backends or pods."""
    eps = dict(cl.endpoints)
    services = list(cl.services)
    pods = list(cl.pods)
    if how == 0 and services:
        services = services[1:]
    elif how == 1:
        eps = {k: v[:1] for k, v in eps.items()}
    elif how == 2 and pods:
        pods = pods[:-1]
    return FakeCluster(cl.config, cl.nodes, pods, services, eps, cl.gateway_mac,
                       cl.version + 1)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=SLOW)
@given(cl=clusters(), data=st.data())
def test_equivalence_random_streams(cl: FakeCluster, data: st.DataObject) -> None:
    track = _fastpath._set_track_ifaces(0 if data.draw(st.booleans()) else 4096)
    try:
        t = compile_cluster(cl)
        p = pools_of(t)
        hot_ips, hot_ports, hot_flows = hot(data, p)
        pair = Pair(t, data.draw(st.sampled_from([0, 1, 2**64 - 1])), data.draw(st.booleans()),
                    data.draw(st.sampled_from([1, 16, 4096])),
                    data.draw(st.sampled_from([64, 4096, 1 << 20])),
                    data.draw(st.sampled_from([True, True, False])))
        now = data.draw(st.sampled_from([0, 10**12]))
        for _ in range(data.draw(st.integers(1, 4))):
            stream = data.draw(frames(p, hot_ips, hot_ports, data.draw(st.integers(1, 60)),
                                      hot_flows=hot_flows))
            rows = []
            for frame, iface, mode, step, _valid in stream:
                now += step
                rows.append((frame, iface, mode, now))
            pair.batch(Batch.of(rows))
            action = data.draw(st.integers(0, 12))
            if action == 0:
                pair.both("cleanup", now + data.draw(st.sampled_from([0, 31 * NS, 301 * NS])))
            elif action == 1:
                pair.both("load", pair.t)                       # the same tables: nothing flushed
            elif action == 2:
                t2 = compile_cluster(shrink_cluster(cl, data.draw(st.integers(0, 3))))
                pair.both("load", t2)                           # swapped: FDB flushed, CT remapped
                pair.t, p = t2, pools_of(t2)
            elif action == 3:
                node = data.draw(st.integers(0, t.n_nodes - 1))
                pair.both("neigh_set", node, data.draw(st.sampled_from(p.ips)),
                          data.draw(st.sampled_from(p.macs + [-1])))
            elif action == 4:
                pair.both("reset")
            elif action == 5:
                pair.rres.clear()
                pair.fres.clear()
        pair.both("cleanup", now + 400 * NS)
        for node in range(pair.t.n_nodes):
            for ip in p.ips[:8]:
                assert pair.fast.neigh_lookup(node, ip) == pair.ref.neigh_lookup(node, ip)
    finally:
        _fastpath._set_track_ifaces(track)


@settings(max_examples=max(10, EXAMPLES // 4), deadline=None, suppress_health_check=SLOW)
@given(cl=clusters(max_nodes=2), data=st.data())
def test_equivalence_long_flows(cl: FakeCluster, data: st.DataObject) -> None:
    """Few addresses, many frames: conntrack states, masquerade port clashes, affinity."""
    t = compile_cluster(cl)
    p = pools_of(t)
    hot_ips, _ports, hot_flows = hot(data, p)
    pair = Pair(t, 5, data.draw(st.booleans()), 64, 1 << 16, data.draw(st.booleans()))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    now = 0
    for _ in range(3):
        rows = []
        for frame, iface, mode, step, _valid in make_frames(Draws(rng=rng), p, hot_ips,
                                                            CLIENT_PORTS[:2], 300,
                                                            hot_flows=hot_flows):
            now += step
            rows.append((frame, iface, mode, now))
        pair.batch(Batch.of(rows))


# ------------------------------------------------------------------ Scapy as the oracle
def scapy_checksums_ok(frame: bytes) -> bool:
    """Scapy rebuilds the IPv4 header, the TCP/UDP/ICMP header after it and an ICMP
    error's quoted IPv4 header with their checksums deleted: each must equal the frame's."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
    from scapy.layers.l2 import Ether

    pkt = Ether(frame)
    if IP not in pkt:
        return True
    ip = pkt[IP]
    fresh = ip.copy()
    del fresh.chksum
    l4 = ip.payload
    check_l4 = type(l4) in (TCP, UDP, ICMP) and not (type(l4) is UDP and l4.chksum == 0)
    if check_l4:
        del fresh.payload.chksum
    rebuilt = IP(bytes(fresh))
    if rebuilt.chksum != ip.chksum:
        return False
    if check_l4 and rebuilt.payload.chksum != l4.chksum:
        return False
    if IPerror in pkt:
        q = pkt[IPerror].copy()
        q.remove_payload()
        if len(bytes(q)) == q.ihl * 4:
            del q.chksum
            if IPerror(bytes(q)).chksum != pkt[IPerror].chksum:
                return False
    return True


@settings(max_examples=max(10, EXAMPLES // 4), deadline=None, suppress_health_check=SLOW)
@given(cl=clusters(), data=st.data())
def test_scapy_checksums_of_fast_path_output(cl: FakeCluster, data: st.DataObject) -> None:
    t = compile_cluster(cl)
    p = pools_of(t)
    hot_ips, hot_ports, hot_flows = hot(data, p)
    dp = _fastpath.Datapath(t, 0, data.draw(st.booleans()))
    res = Results(64, 1 << 16, True)
    stream = data.draw(frames(p, hot_ips, hot_ports, 40, valid_only=True, hot_flows=hot_flows))
    rows, valid, now = [], [], 0
    for frame, iface, mode, step, ok in stream:
        now += step
        rows.append((frame, iface, mode, now))
        valid.append(ok and scapy_checksums_ok(frame))
    run(dp, res, Batch.of(rows), t.n_ifaces)
    seen = set()
    for h in range(res.n_hops):
        f, off, ln = int(res.hop_frame[h]), int(res.hop_off[h]), int(res.hop_len[h])
        if valid[f] and off not in seen:
            seen.add(off)
            assert scapy_checksums_ok(res.frame_bytes(off, ln)), (f, h)
    for o in range(res.n_outcomes):
        f, ln = int(res.oc_frame[o]), int(res.oc_len[o])
        if valid[f] and ln:
            assert scapy_checksums_ok(res.frame_bytes(int(res.oc_off[o]), ln)), (f, o)


# ------------------------------------------------------------------ fixed scenarios
def scenario_cluster(mode: str = "host-gw") -> FakeCluster:
    """Two nodes; client c0 and server s0 on node1, server s1 on node2; an external host;
    ClusterIP, NodePort, affinity and a Service without endpoints."""
    cfg = mode_config("fixed", mode)
    cfg.external_hosts = [ExternalHost("ext", IPv4Address("172.18.0.100"), mac=mac(5, 0, 0, 0, 0))]
    nodes = [Node(f"node{i + 1}", IPv4Address(f"172.18.0.{10 + i}"),
                  IPv4Network(f"10.244.{i}.0/24"), mac=mac(1, 0, 0, 0, i),
                  bridge_mac=mac(2, 0, 0, 0, i), vtep_mac=mac(3, 0, 0, 0, i))
             for i in range(2)]
    pods = [Pod("default", "c0", "node1", IPv4Address("10.244.0.2"), mac=mac(4, 0, 0, 0, 0)),
            Pod("default", "s0", "node1", IPv4Address("10.244.0.3"), mac=mac(4, 0, 0, 0, 1)),
            Pod("default", "s1", "node2", IPv4Address("10.244.1.2"), mac=mac(4, 0, 0, 1, 0))]
    web = Service("default", "web", type="NodePort", cluster_ip=IPv4Address("10.96.0.10"),
                  ports=[ServicePort(80, "TCP", name="http", node_port=30080),
                         ServicePort(53, "UDP", name="dns", node_port=30053)])
    sticky = Service("default", "sticky", cluster_ip=IPv4Address("10.96.0.11"),
                     ports=[ServicePort(80, "TCP", name="http")], session_affinity="ClientIP",
                     affinity_timeout=5)
    empty = Service("default", "empty", cluster_ip=IPv4Address("10.96.0.12"),
                    ports=[ServicePort(80, "TCP", name="http")])
    ep = [(Endpoint(IPv4Address("10.244.0.3"), node_name="node1", pod="default/s0"), 8080),
          (Endpoint(IPv4Address("10.244.1.2"), node_name="node2", pod="default/s1"), 8080)]
    eps = {("default/web", "http"): ep, ("default/web", "dns"): [(e, 53) for e, _ in ep],
           ("default/sticky", "http"): ep, ("default/empty", "http"): []}
    return FakeCluster(cfg, nodes, pods, [web, sticky, empty], eps)


def conversation(t) -> list[tuple[bytes, int, int, int]]:
    """Connections through every NAT path, with replies written as the backends send them
    (the reply frames carry the backend's address: both implementations must agree on
    what the network does with them)."""
    c0, s0, s1 = ip_of("10.244.0.2"), ip_of("10.244.0.3"), ip_of("10.244.1.2")
    ext, node1, node2 = ip_of("172.18.0.100"), ip_of("172.18.0.10"), ip_of("172.18.0.11")
    vip, sticky, empty = ip_of("10.96.0.10"), ip_of("10.96.0.11"), ip_of("10.96.0.12")
    pod = {ip: i for i, ip in enumerate(int(x) for x in t.if_ip)
           if int(t.if_kind[i]) == C.IF_POD_ETH}
    ext_if = int(t.ext_if[0])
    snat_ips = [int(t.if_ip[i]) for i, k in enumerate(t.if_kind)   # eth0, cbr0, flannel.1
                if int(k) in (C.IF_NODE_ETH, C.IF_BRIDGE, C.IF_VTEP, C.IF_OVS_GW)]
    rows, now = [], 0

    def send(iface: int, payload: bytes, src: int, dst: int, proto: int) -> None:
        nonlocal now
        now += 1000
        rows.append((ether(0, 0, 0x0800, ipv4(src, dst, proto, payload)), iface,
                     C.INJ_TX_FIXL2, now))

    for sport in range(1000, 1040):
        for dst in (vip, sticky, empty):
            send(pod[c0], tcp(c0, dst, sport, 80, 0x02), c0, dst, C.PROTO_TCP)
        for be in (s0, s1):
            send(pod[be], tcp(be, c0, 8080, sport, 0x12), be, c0, C.PROTO_TCP)
            send(pod[be], icmp(3, 3, 0, ipv4(c0, be, C.PROTO_TCP,
                                              tcp(c0, be, sport, 8080, 0x02)[:8], tot=28)),
                 be, c0, C.PROTO_ICMP)
        send(pod[c0], tcp(c0, vip, sport, 80, 0x10), c0, vip, C.PROTO_TCP)
        send(pod[c0], udp(c0, vip, sport, 53, b"q"), c0, vip, C.PROTO_UDP)
        send(ext_if, tcp(ext, node1, sport, 30080, 0x02), ext, node1, C.PROTO_TCP)
        send(ext_if, udp(ext, node2, sport, 30053, b"q"), ext, node2, C.PROTO_UDP)
        for be in (s0, s1):   # replies to masqueraded flows, and errors quoting them
            for node in snat_ips:
                send(pod[be], tcp(be, node, 8080, sport, 0x12), be, node, C.PROTO_TCP)
                send(pod[be], icmp(11, 0, 0, ipv4(node, be, C.PROTO_UDP,
                                                  udp(node, be, sport, 53, b"q"))),
                     be, node, C.PROTO_ICMP)
        send(pod[c0], icmp(8, 0, (sport << 16) | 1, b"ping"), c0, s1, C.PROTO_ICMP)
        send(pod[s1], icmp(0, 0, (sport << 16) | 1, b"ping"), s1, c0, C.PROTO_ICMP)
        if sport % 10 == 0:
            now += 6 * NS    # affinity expires
    return rows


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("record", [True, False])
def test_equivalence_conversation(mode: str, static: bool, record: bool) -> None:
    cl = scenario_cluster(mode)
    t = compile_cluster(cl)
    pair = Pair(t, 3, static, 32, 1024, record)
    rows = conversation(t)
    for k in range(0, len(rows), 97):
        pair.batch(Batch.of(rows[k: k + 97]))
    kinds = set(pair.rres.ev_kind[:pair.rres.n_events].tolist())
    if record and static:
        dnat = C.EV_IPVS_DNAT if mode.startswith("kube-router") else C.EV_DNAT
        if mode.startswith("cilium"):  # the socket LB: pods' ClusterIP traffic, no DNAT
            assert {dnat, C.EV_SOCK_LB, C.EV_SNAT, C.EV_UNDNAT, C.EV_UNSNAT} <= kinds
        else:
            assert {dnat, C.EV_CT_REUSE, C.EV_SNAT, C.EV_UNDNAT, C.EV_UNSNAT,
                    C.EV_AFFINITY} <= kinds
        assert (C.EV_ENCAP in kinds) == (mode in ("vxlan", "cilium"))
        assert (C.EV_IPIP_ENCAP in kinds) == (C.EV_IPIP_DECAP in kinds) == (
            mode == "kube-router-full")
        assert (C.EV_OVS_ENCAP in kinds) == (C.EV_OVS_DECAP in kinds) == (
            mode in ("antrea", "antrea-vxlan", "antrea-gre"))
        assert (C.EV_OVS_TABLE in kinds) == mode.startswith("antrea")
    if not static:
        assert C.OUT_NEIGH in set(pair.rres.oc_kind[:pair.rres.n_outcomes].tolist())
    reload_fewer_backends(pair, cl, rows, 200)


def reload_fewer_backends(pair: Pair, cl: FakeCluster, rows: list, again: int) -> None:
    """After a conversation: expire what it left, load the cluster with fewer backends and
    send its first ``again`` frames once more, on both implementations."""
    pair.both("cleanup", rows[-1][3] + 10 * NS)
    pair.both("load", compile_cluster(shrink_cluster(cl, 1)))
    pair.batch(Batch.of(rows[:again]))


@pytest.mark.parametrize("mode", ["host-gw", "vxlan"])
@pytest.mark.parametrize("record", [True, False])
def test_equivalence_with_flow_prefetch(mode: str, record: bool) -> None:
    """Large tables make the fast path keep what each flow's frames looked up and prefetch
    it (``ce_touch``): forced on for a small cluster, nothing observable changes."""
    old = _fastpath._set_track_ifaces(0)
    try:
        cl = scenario_cluster(mode)
        t = compile_cluster(cl)
        pair = Pair(t, 5, True, 32, 1024, record)
        rows = conversation(t)
        for k in range(0, len(rows), 61):
            pair.batch(Batch.of(rows[k: k + 61]))
        reload_fewer_backends(pair, cl, rows, 300)
        pair.both("reset")
        pair.batch(Batch.of(rows[300:600]))
    finally:
        _fastpath._set_track_ifaces(old)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("record", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_reset_then_the_conversation_again(mode: str, record: bool, track: bool) -> None:
    """``reset`` keeps the conntrack entry pool's memory and hands its entries out again: the
    same conversation after a reset gives what the reference gives after its reset, round
    after round (entries recycled, their prefetch records and incarnations reused)."""
    old = _fastpath._set_track_ifaces(0 if track else 4096)
    try:
        t = compile_cluster(scenario_cluster(mode))
        rows = conversation(t)
        pair = Pair(t, 7, True, 32, 1024, record)
        for _round in range(3):
            for k in range(0, len(rows), 89):
                pair.batch(Batch.of(rows[k: k + 89]))
            assert pair.fast.state()["conntrack"]
            pair.both("reset")
    finally:
        _fastpath._set_track_ifaces(old)


def test_floods_from_every_interface() -> None:
    """Broadcast, unknown unicast and the interface's own MAC, sent and received at every
    interface (VXLAN mode: VTEPs encapsulate towards their own MAC too)."""
    cl = scenario_cluster("vxlan")
    t = compile_cluster(cl)
    pair = Pair(t, 0, True, 4, 64, True)
    rows = []
    for i in range(t.n_ifaces):
        for dmac in (0xFFFFFFFFFFFF, 0x0200CAFE0000, int(t.if_mac[i])):
            f = ether(dmac, 0x0200DEAD0000 + i, 0x0800,
                      ipv4(ip_of("10.244.0.2"), ip_of("10.244.1.2"), C.PROTO_UDP,
                           udp(ip_of("10.244.0.2"), ip_of("10.244.1.2"), 1, 2)))
            for mode in (C.INJ_TX, C.INJ_RX):
                rows.append((f, i, mode, len(rows)))
    pair.batch(Batch.of(rows))
    reasons = set(pair.rres.oc_reason[:pair.rres.n_outcomes].tolist())
    assert C.DROP_SAME_PORT in reasons or C.DROP_OTHERHOST in reasons


def test_malformed_inputs_that_once_crashed_the_reference() -> None:
    """Inputs the reference used to raise on: both end them normally, and identically."""
    cl = scenario_cluster("vxlan")
    t = compile_cluster(cl)
    local = int(t.node_local_if[0])
    vtep = int(t.node_vtep_if[0])
    src, dst = ip_of("10.244.0.2"), ip_of("10.244.1.2")
    bare_icmp = ether(int(t.if_mac[int(t.node_br_if[0])]), 0x02AA00000001, 0x0800,
                      ipv4(src, dst, C.PROTO_ICMP, b""))
    long_tot = ether(0, 0, 0x0800, ipv4(src, dst, C.PROTO_TCP, tcp(src, dst, 1, 2, 2)[:2],
                                        tot=400))
    short_vtep = int(t.if_mac[int(t.node_vtep_if[1])]).to_bytes(6, "big") + b"\x08\x00\x45"
    pod_c0 = int(t.pod_eth_if[0])
    for frame, iface, mode in [(bare_icmp, pod_c0, C.INJ_TX), (long_tot, local, C.INJ_TX),
                               (short_vtep, vtep, C.INJ_TX)]:
        results = []
        for impl in (reference, _fastpath):
            res = Results()
            dp = impl.Datapath(t)
            run(dp, res, Batch.of([(frame, iface, mode, 0)]), t.n_ifaces)
            assert res.n_outcomes >= 1
            results.append((res, dp.state()))
        assert_same_results(results[0][0], results[1][0])
        assert results[0][1] == results[1][1]
    # kube-router: a runt received on an IP-in-IP device (no link header to check, but still
    # the length of kemu's Ethernet header of zeros)
    t = compile_cluster(scenario_cluster("kube-router-full"))
    tun = int(t.tun_if[1])
    runt = bytes(12) + b"\x08"
    results = []
    for impl in (reference, _fastpath):
        res = Results()
        dp = impl.Datapath(t)
        run(dp, res, Batch.of([(runt, tun, C.INJ_RX, 0)]), t.n_ifaces)
        assert res.n_outcomes == 1 and int(res.oc_reason[0]) == C.DROP_TOO_SHORT
        results.append((res, dp.state()))
    assert_same_results(results[0][0], results[1][0])


def test_results_too_small_returns_early() -> None:
    """Results without room for one frame: ``process`` returns ``start`` untouched."""
    t = compile_cluster(scenario_cluster())
    batch = Batch.of([(bytes(60), 0, C.INJ_TX, 0)] * 3)
    for dp in (reference.Datapath(t), _fastpath.Datapath(t)):
        res = Results(hops=4, arena=64)
        assert dp.process(batch.buf, batch.offsets, batch.lengths, batch.in_if,
                          batch.in_mode, batch.ts_ns, 1, 3, res) == 1
        assert (res.n_hops, res.n_outcomes, res.arena_used) == (0, 0, 0)


def test_hash_functions_match() -> None:
    for x in (0, 1, 2**63, 2**64 - 1, 0x123456789ABCDEF):
        assert _fastpath.mix64(x) == mix64(x)
    for args in ((0, 0, 6, 1, 2, 3, 4), (2**64 - 1, 5, 17, 2**32 - 1, 65535, 7, 65535),
                 (-3, 2, 1, 10, 0, 20, 0)):
        assert _fastpath.py_flow_hash(*args) == flow_hash(*args)


def test_api_surface_matches_reference() -> None:
    public = {n for n in dir(reference.Datapath) if not n.startswith("_")}
    assert public <= set(dir(_fastpath.Datapath))
    lpm_public = {n for n in dir(reference.Lpm) if not n.startswith("_")}
    assert lpm_public <= set(dir(_fastpath.Lpm))


@pytest.mark.parametrize("mode", ["host-gw", "vxlan"])
def test_equivalence_frame_sizes(mode: str) -> None:
    """Empty, runt, jumbo and 64 KiB frames (VXLAN wraps them: the outer total length
    overflows 16 bits), recorded into tiny Results that must grow."""
    cl = scenario_cluster(mode)
    t = compile_cluster(cl)
    pod = {int(t.if_ip[i]): i for i in range(t.n_ifaces) if int(t.if_kind[i]) == C.IF_POD_ETH}
    c0, s1 = ip_of("10.244.0.2"), ip_of("10.244.1.2")
    rows = []
    for size in (0, 1, 13, 14, 33, 34, 60, 1514, 9000, 65535):
        body = bytes(range(256)) * (size // 256 + 1)
        for proto in (C.PROTO_UDP, C.PROTO_TCP):
            pl = udp(c0, s1, 1000, 8080, body[:max(0, size - 42)]) if proto == C.PROTO_UDP \
                else tcp(c0, s1, 1000, 8080, 0x10, body[:max(0, size - 54)])
            f = ether(0, 0, 0x0800, ipv4(c0, s1, proto, pl, tot=min(0xFFFF, 20 + len(pl))))
            rows.append((f[:size] if size < len(f) else f, pod[c0], C.INJ_TX_FIXL2, len(rows)))
    pair = Pair(t, 0, True, 1, 64, True)
    pair.batch(Batch.of(rows))
    assert pair.rres.arena_used > 65535


def test_compiled_codes_match_their_python_definitions(monkeypatch) -> None:
    """The datapath's numbers are compile-time constants; the import-time check refuses a
    build whose numbers disagree with kemu.dataplane.codes (their one definition)."""
    _fastpath._check_codes()
    monkeypatch.setattr(C, "DROP_MARTIAN", C.DROP_MARTIAN + 100)
    with pytest.raises(ImportError, match="DROP_MARTIAN"):
        _fastpath._check_codes()
