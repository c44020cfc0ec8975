"""The routed CNIs against the Linux kernel, frame by frame (``kemu/compiler/cni_routed.py``).

The test builds, from kemu's own compiled tables, what the AWS VPC CNI and Azure CNI
(transparent, overlay) make of a node, in network namespaces it creates and removes (root):
per pod a veth pair (``eth0`` in the pod with its address as a /32, ``default via
169.254.1.1`` on-link; the host end ``eni<hash>`` / ``azv<hash>`` without an address), the
node's ``<pod>/32 dev <veth> scope link`` route and the pod's neighbour entry; the AWS CNI's
static ARP entry for 169.254.1.1 in the pod and its ``ip rule ... to <pod> lookup main``
(priority 512); Azure's proxy ARP on the host veth; proxy ARP on each node's eth0 for its pods
of the node network (the ENI holding the address: the VPC answers for it); the other nodes'
pods as neighbours of eth0 at their node's MAC (kemu's static neighbours) or, for the
overlay, each node's pod CIDR via that node; the egress SNAT (the AWS CNI's
``AWS-SNAT-CHAIN-0``, ip-masq-agent's ``IP-MASQ-AGENT``) and kube-proxy's rules for the
Services (``tests/kernel/netns.py``'s ``kube_proxy_rules``) in iptables. The node network is a
bridge in its own namespace with the gateway (a sink) and an external host.

The same frames are injected into kemu (both backends) and into the kernel; the frames of the
flow under test seen at every pod eth0, host veth and node eth0 must be the same bytes, in
the same order per interface and direction: pod to pod (same node, cross node), pod to a
ClusterIP whose endpoint is on another node, a NodePort from outside, egress SNAT, proxy ARP
(on eth0 for the node's pods, on Azure's host veths).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

import kemu
from kemu.dataplane import codes as C

from .netns import (
    PACKET_OUTGOING,
    RUN_PREFIX,
    SO_TIMESTAMPNS,
    _open_capture_sockets,
    _open_tx_socket,
    _run,
    in_netns,
    kube_proxy_rules,
    missing_for,
)

DATA = Path(__file__).resolve().parents[1] / "data"
NODE_NET_IPS = {"10.244.0.2": "172.18.0.10", "10.244.0.3": "172.18.0.11",
                "10.244.1.2": "172.18.0.12", "10.244.2.2": "172.18.0.13"}
MODES = {"aws-vpc": "cni: aws-vpc", "azure": "cni: azure",
         "azure-overlay": "cni: {name: azure, mode: overlay}"}


_WHY_SKIP = missing_for("kernel differential tests", ("ip", "iptables"))
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(_WHY_SKIP is not None, reason=_WHY_SKIP or "")]


def cluster_text(mode: str) -> str:
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    text = text.replace("  nodes: 3\n", f"  nodes: 3\n  {MODES[mode]}\n", 1)
    if mode != "azure-overlay":
        for old, new in NODE_NET_IPS.items():
            text = text.replace(f"podIP: {old}}}", f"podIP: {new}}}")
    return text


def _mac(v: int) -> str:
    return ":".join(f"{(int(v) >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def _ip(v: int) -> str:
    return str(ipaddress.IPv4Address(int(v)))


class RoutedKernel:
    """Namespaces built from kemu's tables of a routed mode (module docstring)."""

    def __init__(self, emu: kemu.frontend.api.EmulatedCluster, mode: str) -> None:
        self.t = emu.tables
        self.model = emu.model
        self.mode = mode
        self.prefix = f"{RUN_PREFIX}-r{abs(hash(mode)) % 1000}"
        self.ns: dict[str, str] = {}  # role -> netns
        self.caps: dict[str, tuple[str, str]] = {}  # kemu interface name -> (netns, ifname)

    def __repr__(self) -> str:
        return f"RoutedKernel({self.mode}, {self.prefix})"

    # ---------------------------------------------------------------- building
    def sh(self, role: str, *cmds: str) -> None:
        for cmd in cmds:
            _run(["ip", "netns", "exec", self.ns[role], *cmd.split()])

    def add_ns(self, role: str) -> str:
        ns = f"{self.prefix}-{len(self.ns)}"
        _run(["ip", "netns", "add", ns])
        self.ns[role] = ns
        self.sh(role, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
                "sysctl -qw net.ipv6.conf.default.disable_ipv6=1", "ip link set lo up")
        return ns

    def build(self) -> RoutedKernel:
        t, cfg = self.t, self.model.config
        net = self.add_ns("net")
        self.sh("net", "ip link add br0 type bridge mcast_snooping 0", "ip link set br0 up")
        plen = cfg.node_network.prefixlen
        gw = _ip(t.gateway_ip)
        on_net = self.mode != "azure-overlay"

        def uplink(role: str, port: str, iface: int) -> None:
            ns = self.ns[role]
            _run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name",
                  port, "netns", net])
            self.sh(role, f"ip link set eth0 address {_mac(t.if_mac[iface])}",
                    f"ip addr add {_ip(t.if_ip[iface])}/{plen} dev eth0", "ip link set eth0 up")
            self.sh("net", f"ip link set {port} master br0", f"ip link set {port} up")

        self.add_ns("gw")
        uplink("gw", "gw", t.gateway_if)
        for e, name in enumerate(t.ext_name):
            self.add_ns(f"ext-{name}")
            uplink(f"ext-{name}", f"x-{name}", int(t.ext_if[e]))
            self.sh(f"ext-{name}", f"ip route add default via {gw}")
        nodes = list(t.node_name)
        for n, node in enumerate(nodes):
            self.add_ns(node)
            eth = int(t.node_eth_if[n])
            uplink(node, f"n-{node}", eth)
            self.caps[f"{node}/eth0"] = (self.ns[node], "eth0")
            self.sh(node, "sysctl -qw net.ipv4.ip_forward=1",
                    "sysctl -qw net.ipv4.conf.all.rp_filter=2",
                    "sysctl -qw net.ipv4.conf.eth0.rp_filter=2",
                    f"ip route add default via {gw} dev eth0",
                    f"ip neigh replace {gw} lladdr {_mac(t.if_mac[t.gateway_if])} dev eth0 "
                    "nud permanent")
            if on_net:  # the ENI / VNet NIC holds its pods' addresses: ARP answered for them
                self.sh(node, "sysctl -qw net.ipv4.conf.eth0.proxy_arp=1",
                        "sysctl -qw net.ipv4.neigh.eth0.proxy_delay=0")
            for m in range(len(nodes)):
                if m != n:
                    self.sh(node, f"ip neigh replace {_ip(t.node_ip[m])} lladdr "
                            f"{_mac(t.if_mac[int(t.node_eth_if[m])])} dev eth0 nud permanent")
            for e in range(len(t.ext_name)):
                x = int(t.ext_if[e])
                self.sh(node, f"ip neigh replace {_ip(t.if_ip[x])} lladdr {_mac(t.if_mac[x])} "
                        "dev eth0 nud permanent")
            self._kube_proxy(node)
            self._snat(node, _ip(t.node_ip[n]))
        for i in range(t.n_ifaces):
            if int(t.if_kind[i]) != C.IF_VETH_HOST:
                continue
            self._pod(i, nodes)
        if not on_net:  # Azure CNI Overlay: the VNet routes each node's pod CIDR to it
            for n, node in enumerate(nodes):
                for m, other in enumerate(self.model.nodes):
                    if m != n:
                        self.sh(node, f"ip route add {other.pod_cidr} via {other.internal_ip} "
                                "dev eth0")
        self.learn()
        return self

    def learn(self) -> None:
        """The node network's bridge learns every host's MAC (as kemu's warm start has):
        one broadcast frame of the local-experimental EtherType 0x88b5 from each eth0."""
        t = self.t
        macs = {"gw": int(t.if_mac[t.gateway_if])}
        macs.update({f"ext-{n}": int(t.if_mac[int(t.ext_if[e])]) for e, n in enumerate(t.ext_name)})
        macs.update({n: int(t.if_mac[int(t.node_eth_if[i])]) for i, n in enumerate(t.node_name)})
        for role, mac in macs.items():
            tx = in_netns(self.ns[role], _open_tx_socket, "eth0")
            try:
                tx.send(b"\xff" * 6 + mac.to_bytes(6, "big") + b"\x88\xb5"
                        + b"kemu-learn".ljust(46, b"\0"))
            finally:
                tx.close()
        time.sleep(0.05)

    def _pod(self, hv: int, nodes: list[str]) -> None:
        t = self.t
        eth = int(t.if_peer[hv])
        key = t.pod_key[int(t.if_owner[eth])]
        node = nodes[int(t.if_node[hv])]
        role = f"pod-{key}"
        self.add_ns(role)
        kname = t.if_kernel_name[hv]
        pod_ip, pod_mac, hv_mac = _ip(t.if_ip[eth]), _mac(t.if_mac[eth]), _mac(t.if_mac[hv])
        _run(["ip", "link", "add", kname, "netns", self.ns[node], "type", "veth", "peer",
              "name", "eth0", "netns", self.ns[role]])
        self.sh(node, f"ip link set {kname} address {hv_mac}", f"ip link set {kname} up",
                f"ip route add {pod_ip}/32 dev {kname} scope link",
                f"ip neigh replace {pod_ip} lladdr {pod_mac} dev {kname} nud permanent",
                f"sysctl -qw net.ipv4.conf.{kname}.rp_filter=2")
        self.sh(role, f"ip link set eth0 address {pod_mac}", f"ip addr add {pod_ip}/32 dev eth0",
                "ip link set eth0 up", "ip route add 169.254.1.1 dev eth0 scope link",
                "ip route add default via 169.254.1.1 dev eth0")
        if self.mode == "aws-vpc":  # cni-proposal.md: static ARP entry, the ip rule
            self.sh(role, f"ip neigh replace 169.254.1.1 lladdr {hv_mac} dev eth0 "
                    "nud permanent")
            self.sh(node, f"ip rule add to {pod_ip} lookup main pref 512")
        else:  # Azure: proxy ARP on the host veth
            self.sh(node, f"sysctl -qw net.ipv4.conf.{kname}.proxy_arp=1",
                    f"sysctl -qw net.ipv4.neigh.{kname}.proxy_delay=0")
        self.caps[f"{key}/eth0"] = (self.ns[role], "eth0")
        self.caps[f"{node}/{kname}"] = (self.ns[node], kname)
        if self.mode != "azure-overlay":  # the other nodes: the pod at its node's eth0
            owner_mac = _mac(t.if_mac[int(t.node_eth_if[int(t.if_node[hv])])])
            for other in nodes:
                if other != node:
                    self.sh(other, f"ip neigh replace {pod_ip} lladdr {owner_mac} dev eth0 "
                            "nud permanent")

    def _kube_proxy(self, node: str) -> None:
        """kube-proxy's iptables rules (the harness's ``kube_proxy_rules``, the shape kube-proxy
        writes) for kemu's Services as compiled, the Cluster-policy ones without affinity (the
        shape the harness writes); its cluster CIDR is kemu's (the VPC subnet, or the pod CIDR
        of the overlay)."""
        t = self.t
        net, mask = (int(x) for x in t.cluster_cidr)
        node_ports = {int(t.fe_sp[f]): int(t.fe_port[f]) for f in range(len(t.fe_ip))
                      if int(t.fe_kind[f]) == C.FE_NODE_PORT}
        services = []
        for sp, name in enumerate(t.sp_name):
            flags = int(t.sp_flags[sp])
            if flags & (C.SP_AFFINITY | C.SP_ITP_LOCAL | C.SP_ETP_LOCAL | C.SP_HOST_PORT) or int(
                    t.sp_proto[sp]) not in (C.PROTO_TCP, C.PROTO_UDP) or not int(t.sp_ip[sp]):
                continue
            start, count = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
            services.append({
                "key": name, "cluster_ip": _ip(t.sp_ip[sp]), "port": int(t.sp_port[sp]),
                "protocol": "tcp" if int(t.sp_proto[sp]) == C.PROTO_TCP else "udp",
                "node_port": node_ports.get(sp),
                "endpoints": [{"ip": _ip(t.be_ip[b]), "port": int(t.be_port[b])}
                              for b in range(start, start + count)]})
        topo = {"cluster_cidr": str(ipaddress.IPv4Network((net, bin(mask).count("1")))),
                "services": services, "ip_masq": False,
                "nodes": [{"name": n, "ip": _ip(t.node_ip[i])}
                          for i, n in enumerate(t.node_name)]}
        _run(["ip", "netns", "exec", self.ns[node], "iptables-restore"],
             input=kube_proxy_rules(topo, node))

    def _snat(self, node: str, node_ip: str) -> None:
        """The AWS CNI's SNAT chain (SNAT to the primary address), ip-masq-agent's (Azure)."""
        cfg = self.model.config
        keep = [str(cfg.node_network)] + ([str(cfg.cluster_cidr)]
                                          if self.mode == "azure-overlay" else [])
        chain = "AWS-SNAT-CHAIN-0" if self.mode == "aws-vpc" else "IP-MASQ-AGENT"
        target = (f"SNAT --to-source {node_ip}" if self.mode == "aws-vpc" else "MASQUERADE")
        self.sh(node, f"iptables -t nat -N {chain}",
                f"iptables -t nat -A POSTROUTING -m addrtype ! --dst-type LOCAL -j {chain}")
        for net in keep:
            self.sh(node, f"iptables -t nat -A {chain} -d {net} -j RETURN")
        self.sh(node, f"iptables -t nat -A {chain} -o eth0 -j {target}")

    def teardown(self) -> None:
        for ns in self.ns.values():
            _run(["ip", "netns", "del", ns], check=False)

    # ---------------------------------------------------------------- running
    def run(self, where: str, frame: bytes, wait: float = 0.3
            ) -> dict[str, list[tuple[str, bytes]]]:
        """Send ``frame`` out of kemu interface ``where`` (a pod's or a host's eth0); every
        captured interface's frames, by kemu name: [(direction, bytes)]."""
        if where.startswith("ext/"):
            tx_ns, tx_if = self.ns[f"ext-{where.split('/')[1]}"], "eth0"
        else:
            tx_ns, tx_if = self.caps[where]
        socks: list[tuple[str, socket.socket]] = []
        by_ns: dict[str, list[tuple[str, str]]] = {}
        for name, (ns, ifname) in self.caps.items():
            by_ns.setdefault(ns, []).append((name, ifname))
        try:
            for ns, lst in by_ns.items():
                opened = in_netns(ns, _open_capture_sockets, [i for _n, i in lst], 1 << 20)
                socks += [(n, s) for (n, _i), s in zip(lst, opened, strict=True)]
            tx = in_netns(tx_ns, _open_tx_socket, tx_if)
            try:
                tx.send(frame)
            finally:
                tx.close()
            time.sleep(wait)
            out: dict[str, list[tuple[int, str, bytes]]] = {}
            for name, s in socks:
                while True:
                    try:
                        data, anc, _f, addr = s.recvmsg(65536, socket.CMSG_SPACE(16))
                    except BlockingIOError:
                        break
                    ts = next((struct.unpack("qq", c[:16]) for lv, ty, c in anc
                               if lv == socket.SOL_SOCKET and ty == SO_TIMESTAMPNS), (0, 0))
                    out.setdefault(name, []).append(
                        (ts[0] * 10**9 + ts[1], "out" if addr[2] == PACKET_OUTGOING else "in",
                         data))
            return {n: [(d, b) for _ts, d, b in sorted(v, key=lambda r: r[0])]
                    for n, v in out.items()}
        finally:
            for _n, s in socks:
                s.close()


@pytest.fixture(scope="module", params=sorted(MODES))
def kernel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, RoutedKernel, Path]]:
    mode = request.param
    path = tmp_path_factory.mktemp(mode) / "cluster.yaml"
    path.write_text(cluster_text(mode))
    k = RoutedKernel(kemu.load(path, backend="python", respond=False), mode)
    try:
        k.build()
        yield mode, k, path
    finally:
        k.teardown()


def kemu_frames(path: Path, backend: str, where: str, frame: bytes, respond: bool = False
                ) -> dict[str, list[tuple[str, bytes]]]:
    emu = kemu.load(path, backend=backend, respond=respond)
    t = emu.tables
    src = where if where.startswith("ext/") else where.rsplit("/", 1)[0]
    trace = emu.send(Ether(frame), src=src)
    out: dict[str, list[tuple[str, bytes]]] = {}
    for p in trace.packets:
        for i, d, data, _e in p.hops:
            out.setdefault(t.if_name[i], []).append(("in" if d == C.DIR_IN else "out", data))
    return out


def compare(kern: dict[str, list[tuple[str, bytes]]], emu: dict[str, list[tuple[str, bytes]]],
            keep: Callable[[bytes], bool], names: set[str]) -> None:
    """The kept frames at every captured interface: the same bytes in the same order."""
    seen = False
    for name in sorted(names):
        k = [(d, b) for d, b in kern.get(name, []) if keep(b)]
        e = [(d, b) for d, b in emu.get(name, []) if keep(b)]
        seen = seen or bool(k)
        assert [(d, b.hex()) for d, b in e] == [(d, b.hex()) for d, b in k], name
    assert seen, "the kernel saw none of the frames"


def ip_flow(proto: int, dst: str | None = None, icmp_type: int | None = None
            ) -> Callable[[bytes], bool]:
    def keep(b: bytes) -> bool:
        if len(b) < 34 or b[12:14] != b"\x08\x00" or b[23] != proto:
            return False
        if icmp_type is not None and b[14 + (b[14] & 0xF) * 4] != icmp_type:
            return False
        return dst is None or socket.inet_ntoa(b[30:34]) == dst
    return keep


def arp(op: int, target: str) -> Callable[[bytes], bool]:
    def keep(b: bytes) -> bool:
        if len(b) < 42 or b[12:14] != b"\x08\x06" or b[20:22] != op.to_bytes(2, "big"):
            return False
        return socket.inet_ntoa(b[38:42] if op == 1 else b[28:32]) == target
    return keep


def _pod_ip(mode: str, ip: str) -> str:
    return ip if mode == "azure-overlay" else NODE_NET_IPS[ip]


def _frame(k: RoutedKernel, src_if: str, pkt) -> bytes:  # noqa: ANN001
    """``pkt`` from the pod's eth0 as its stack sends it: to the host veth's MAC."""
    t = k.t
    i = t.iface(src_if)
    return bytes(Ether(src=_mac(t.if_mac[i]), dst=_mac(t.if_mac[int(t.if_peer[i])])) / pkt)


@pytest.mark.parametrize("dst_pod", ["b", "c"])
def test_pod_to_pod(kernel: tuple[str, RoutedKernel, Path], backend: str, dst_pod: str) -> None:
    """Same node (a -> b: routed through node1's stack) and cross node (a -> c: over the
    node network unencapsulated, to node2's eth0): identical frames everywhere."""
    mode, k, path = kernel
    dst = _pod_ip(mode, {"b": "10.244.0.3", "c": "10.244.1.2"}[dst_pod])
    frame = _frame(k, "default/a/eth0", IP(src=_pod_ip(mode, "10.244.0.2"), dst=dst, ttl=9)
                   / ICMP(id=0x1234, seq=1) / b"routed")
    keep = ip_flow(1, dst, icmp_type=8)
    compare(k.run("default/a/eth0", frame), kemu_frames(path, backend, "default/a/eth0", frame),
            keep, set(k.caps))


def test_egress_snat(kernel: tuple[str, RoutedKernel, Path], backend: str) -> None:
    """A pod to outside the VPC/VNet: SNAT to the node's address at node1's eth0."""
    mode, k, path = kernel
    frame = _frame(k, "default/a/eth0", IP(src=_pod_ip(mode, "10.244.0.2"), dst="8.8.8.8")
                   / UDP(sport=4040, dport=53) / b"query")
    kern = k.run("default/a/eth0", frame)
    got = [b for d, b in kern.get("node1/eth0", []) if d == "out" and ip_flow(17)(b)]
    assert got and socket.inet_ntoa(got[0][26:30]) == "172.18.0.2"
    compare(kern, kemu_frames(path, backend, "default/a/eth0", frame), ip_flow(17, "8.8.8.8"),
            set(k.caps))


def test_owner_node_answers_arp_for_its_pod(kernel: tuple[str, RoutedKernel, Path],
                                           backend: str) -> None:
    """The node network's ARP for pod c's address: node2's eth0 answers (proxy ARP: it
    routes the address out of c's veth), no other node; the same reply bytes."""
    mode, k, path = kernel
    if mode == "azure-overlay":
        pytest.skip("overlay pods are not on the node network")
    t = k.t
    x = int(t.ext_if[0])
    target = _pod_ip(mode, "10.244.1.2")
    frame = bytes(Ether(src=_mac(t.if_mac[x]), dst="ff:ff:ff:ff:ff:ff")
                  / ARP(op=1, hwsrc=_mac(t.if_mac[x]), psrc=_ip(t.if_ip[x]), pdst=target))
    kern = k.run("ext/client", frame)
    replies = {n for n, v in kern.items() for d, b in v if d == "out" and arp(2, target)(b)}
    assert replies == {"node2/eth0"}
    compare(kern, kemu_frames(path, backend, "ext/client", frame, respond=True),
            arp(2, target), {"node2/eth0"})


def test_proxy_arp_on_the_host_veth(kernel: tuple[str, RoutedKernel, Path],
                                    backend: str) -> None:
    """Azure: pod a ARPs for its gateway 169.254.1.1; the host veth answers with its own
    MAC (proxy_arp on azv...); AWS pods do not ARP (a static entry) and nobody answers."""
    mode, k, path = kernel
    t = k.t
    a = t.iface("default/a/eth0")
    frame = bytes(Ether(src=_mac(t.if_mac[a]), dst="ff:ff:ff:ff:ff:ff")
                  / ARP(op=1, hwsrc=_mac(t.if_mac[a]), psrc=_ip(t.if_ip[a]),
                        pdst="169.254.1.1"))
    kern = k.run("default/a/eth0", frame)
    emu = kemu_frames(path, backend, "default/a/eth0", frame, respond=True)
    replied = [b for v in kern.values() for _d, b in v if arp(2, "169.254.1.1")(b)]
    assert bool(replied) == (mode != "aws-vpc")
    if replied:
        compare(kern, emu, arp(2, "169.254.1.1"), set(k.caps))
    else:
        assert not [b for v in emu.values() for _d, b in v if arp(2, "169.254.1.1")(b)]



def test_pod_to_clusterip_on_another_node(kernel: tuple[str, RoutedKernel, Path],
                                          backend: str) -> None:
    """Pod a -> svc-c (its endpoint c on node2): DNAT on node1 (kube-proxy's rules), then
    routed to node2 unencapsulated; the same frames at every interface."""
    mode, k, path = kernel
    frame = _frame(k, "default/a/eth0", IP(src=_pod_ip(mode, "10.244.0.2"), dst="10.96.0.22")
                   / TCP(sport=41000, dport=80, flags="S", seq=1000))
    keep = tcp_from(41000)
    kern = k.run("default/a/eth0", frame)
    got = [b for d, b in kern.get("default/c/eth0", []) if d == "in" and keep(b)]
    assert got and socket.inet_ntoa(got[0][30:34]) == _pod_ip(mode, "10.244.1.2")
    compare(kern, kemu_frames(path, backend, "default/a/eth0", frame), keep, set(k.caps))


def test_nodeport_from_outside(kernel: tuple[str, RoutedKernel, Path], backend: str) -> None:
    """ext/client -> node1:30081 (svc-np-c, endpoint c on node2): DNAT and masquerade to
    node1's address, forwarded to node2 and c's veth."""
    mode, k, path = kernel
    t = k.t
    x = int(t.ext_if[0])
    frame = bytes(Ether(src=_mac(t.if_mac[x]), dst=_mac(t.if_mac[int(t.node_eth_if[0])]))
                  / IP(src=_ip(t.if_ip[x]), dst=_ip(t.node_ip[0]))
                  / TCP(sport=42000, dport=30081, flags="S", seq=7))
    keep = tcp_from(42000)
    kern = k.run("ext/client", frame)
    got = [b for d, b in kern.get("default/c/eth0", []) if d == "in" and keep(b)]
    assert got and socket.inet_ntoa(got[0][26:30]) == _ip(t.node_ip[0])
    compare(kern, kemu_frames(path, backend, "ext/client", frame), keep, set(k.caps))


def tcp_from(sport: int) -> Callable[[bytes], bool]:
    """The forward direction of a TCP flow from ``sport`` (whatever NAT did to it)."""
    def keep(b: bytes) -> bool:
        if len(b) < 54 or b[12:14] != b"\x08\x00" or b[23] != 6:
            return False
        l4 = 14 + (b[14] & 0xF) * 4
        return b[l4 + 13] & 0x12 == 0x02 and (  # a SYN, not a SYN-ACK
            int.from_bytes(b[l4:l4 + 2], "big") == sport
            or int.from_bytes(b[l4 + 2:l4 + 4], "big") in (80, 8080, 30081))
    return keep
