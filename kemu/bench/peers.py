"""What kemu's benchmarks compare the fast path with: a Scapy pipeline, pytricia, the kernel.

- ``ScapyPipeline``: the decisions of kemu's datapath for pod traffic, made on Scapy objects
  the way a Scapy-based emulator would: parse each frame once (``Ether(bytes)``), learn and
  look up bridge FDBs (dicts), conntrack (a dict of tuples, both directions), kube-proxy DNAT
  to a backend (chosen by kemu's flow hash, so the choices match) with checksums recomputed,
  longest-prefix routing (a dict per prefix length), TTL, next-hop MACs, and the frame's bytes
  rebuilt once where it is delivered. No hop recording, like kemu's datapath-only runs.
- ``PytriciaRoutes``: a pytricia (Patricia trie in C) route table; lookups go through
  ``map(tree.get, ints)``, the fastest way to call it from Python.
- ``KernelPeer``: the same cluster (same addresses and MACs, from the compiled ``Tables``) in
  Linux network namespaces: per node a bridge ``cbr0`` with br_netfilter, veth pairs to pod
  namespaces, kube-proxy-shaped iptables DNAT for the ClusterIPs, host-gw routes, static
  neighbours; the node network is a bridge in its own namespace. Frames are sent from the
  pods' namespaces through AF_PACKET sockets with ``sendmmsg`` (ctypes, the GIL released),
  for a fixed time; delivered frames are counted at the node-side veths (their TX counters).
  Every namespace name starts with a random ``kemu-bench-`` prefix and is deleted in
  ``close`` (also on Ctrl-C and at exit); nothing is changed outside those namespaces.

Scapy is imported inside ``ScapyPipeline`` only; pytricia inside ``PytriciaRoutes``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from kemu.bench.workloads import Workload
from kemu.dataplane import codes as C
from kemu.dataplane.packet import flow_hash
from kemu.dataplane.tables import Tables


def _mac(v: int) -> str:
    return ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def _ip(v: int) -> str:
    return socket.inet_ntoa(int(v).to_bytes(4, "big"))


def _ip_int(s: str) -> int:
    return int.from_bytes(socket.inet_aton(s), "big")


# ------------------------------------------------------------------ the Scapy pipeline
class ScapyPipeline:
    """kemu's forwarding decisions for pod traffic, on Scapy packets. ``process`` returns,
    per input frame, where its copies ended: ``("delivered", iface, bytes)`` or
    ``("dropped", why)``.
    Handles what the cluster mix needs: pods, node bridges, host-gw routing, ClusterIP DNAT
    (no VXLAN, NodePorts, masquerade or policies)."""

    def __init__(self, t: Tables, seed: int = 0) -> None:
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.l2 import Ether

        self.Ether, self.IP, self.TCP, self.UDP = Ether, IP, TCP, UDP
        if t.vxlan:
            raise ValueError("the Scapy pipeline emulates host-gw clusters only")
        self.seed = seed
        self.n_nodes = t.n_nodes
        n = t.n_ifaces
        self.kind = [int(x) for x in t.if_kind]
        self.node = [int(x) for x in t.if_node]
        self.peer = [int(x) for x in t.if_peer]
        self.bridge = [int(x) for x in t.if_bridge]
        self.mac = [_mac(int(x)) for x in t.if_mac]
        self.ports = {b: [int(p) for p in t.br_ports[int(s): int(s) + int(c)]]
                      for b, (s, c) in enumerate(zip(t.br_port_start, t.br_port_count,
                                                     strict=True))}
        self.br_if = [int(x) for x in t.node_br_if]
        self.eth_if = [int(x) for x in t.node_eth_if]
        self.local_ips = {(self.node[i], _ip(int(t.if_ip[i]))) for i in range(n)
                          if self.kind[i] in (C.IF_NODE_ETH, C.IF_BRIDGE)}
        self.node_ip = [_ip(int(x)) for x in t.node_ip]
        # static neighbours: pods on their node, node-network hosts on every node
        self.neigh: dict[tuple[int, str], str] = {}
        for i in range(n):
            if self.kind[i] == C.IF_POD_ETH:
                self.neigh[(self.node[i], _ip(int(t.if_ip[i])))] = self.mac[i]
            elif self.kind[i] in (C.IF_NODE_ETH, C.IF_EXT_ETH, C.IF_GW_ETH):
                for m in range(self.n_nodes):
                    if m != self.node[i]:
                        self.neigh[(m, _ip(int(t.if_ip[i])))] = self.mac[i]
        # routes: one dict per prefix length, longest first
        self.routes: list[tuple[int, dict[int, tuple[int, int]]]] = []
        by_len: dict[int, dict[int, tuple[int, int]]] = {}
        for r in range(len(t.rt_prefix)):
            by_len.setdefault(int(t.rt_len[r]), {})[int(t.rt_prefix[r])] = (
                int(t.rt_kind[r]), int(t.rt_node[r]))
        for depth in sorted(by_len, reverse=True):
            mask = (0xFFFFFFFF << (32 - depth)) & 0xFFFFFFFF if depth else 0
            self.routes.append((mask, by_len[depth]))
        self.gateway_ip = _ip(t.gateway_ip) if t.gateway_ip else None
        # kube-proxy: ClusterIP frontends -> (service port, backends)
        self.services: dict[tuple[str, int, int], list[tuple[str, int]]] = {}
        for f in range(len(t.fe_ip)):
            if int(t.fe_kind[f]) != C.FE_CLUSTER_IP:
                continue
            sp = int(t.fe_sp[f])
            s, c = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
            self.services[(_ip(int(t.fe_ip[f])), int(t.fe_port[f]), int(t.fe_proto[f]))] = [
                (_ip(int(t.be_ip[b])), int(t.be_port[b])) for b in range(s, s + c)]
        self.fdb: dict[tuple[int, str], int] = {}
        self.ct: dict[tuple, tuple[str, int] | None] = {}

    def process(self, frames: Iterable[tuple[bytes, int]]) -> list[list[tuple]]:
        return [self.frame(data, iface) for data, iface in frames]

    def run(self, w: Workload, lo: int = 0, hi: int | None = None) -> int:
        """Process frames ``lo..hi`` of a workload (bytes sliced out of its buffer)."""
        hi = len(w) if hi is None else hi
        buf = w.buf
        frame = self.frame
        for i in range(lo, hi):
            off = int(w.offsets[i])
            frame(bytes(buf[off: off + int(w.lengths[i])]), int(w.in_if[i]))
        return hi - lo

    # -- one frame, stage by stage
    def frame(self, data: bytes, in_if: int) -> list[tuple]:
        """Where each copy of one frame ended (floods make several copies)."""
        pkt = self.Ether(data)
        # a pod transmits: the frame appears on the node side of its veth, a bridge port;
        # a node's uplink (or another host on the node network) is a port itself
        port = self.peer[in_if] if self.kind[in_if] == C.IF_POD_ETH else in_if
        work = [(pkt, self.bridge[port], port, -1, 0)]
        ends: list[tuple] = []
        while work:
            pkt, b, port, conntracked, hops = work.pop()
            if hops > 16:
                ends.append(("dropped", "loop"))
                continue
            # bridge: learn, br_netfilter PREROUTING, forward
            self.fdb[(b, pkt.src)] = port
            if b < self.n_nodes and conntracked != b and self.IP in pkt:
                if self._conntrack(b, pkt) is not None:
                    ends.append(("dropped", "no endpoints"))
                    continue
                conntracked = b
            dst = pkt.dst
            if b < self.n_nodes and dst == self.mac[self.br_if[b]]:
                outs = [self._route(b, pkt)]
            else:
                out = self.fdb.get((b, dst))
                if out is not None:
                    outs = [self._arrive(out, pkt)]
                else:  # unknown or broadcast: flood every other port
                    outs = [self._arrive(p, pkt.copy()) for p in self.ports[b] if p != port]
            for where in outs:
                if where[0] == "bridge":
                    work.append(where[1:] + (hops + 1,))
                else:
                    ends.append(where)
        return ends

    def _arrive(self, port: int, pkt: Any) -> tuple:
        """The bridge sent ``pkt`` out of ``port``: a pod's veth or a node's uplink."""
        kind = self.kind[port]
        if kind == C.IF_VETH:
            pod = self.peer[port]
            if pkt.dst != self.mac[pod]:
                return ("dropped", "not our MAC")
            return ("delivered", pod, bytes(pkt))
        if kind == C.IF_NODE_ETH:
            node = self.node[port]
            if pkt.dst != self.mac[port]:
                return ("dropped", "not our MAC")
            if self.IP not in pkt:  # ARP and the like: the node's own stack
                return ("delivered", port, bytes(pkt))
            return self._route(node, pkt, conntrack=True)
        return ("delivered", port, bytes(pkt))

    def _conntrack(self, node: int, pkt: Any) -> str | None:
        """PREROUTING: find the flow (either direction) or create it, DNAT ClusterIPs."""
        ip = pkt[self.IP]
        l4 = ip.payload
        if not isinstance(l4, (self.TCP, self.UDP)):
            return None
        key = (node, ip.proto, ip.src, l4.sport, ip.dst, l4.dport)
        if key in self.ct:
            nat = self.ct[key]
        else:
            nat = None
            bes = self.services.get((ip.dst, l4.dport, ip.proto))
            if bes is not None:
                if not bes:
                    return "no endpoints"
                h = flow_hash(self.seed, node, ip.proto, _ip_int(ip.src), l4.sport,
                              _ip_int(ip.dst), l4.dport)
                nat = bes[h % len(bes)]
            self.ct[key] = nat
            rip, rport = nat if nat is not None else (ip.dst, l4.dport)
            self.ct[(node, ip.proto, rip, rport, ip.src, l4.sport)] = None  # the reply
        if nat is not None:
            ip.dst, l4.dport = nat
            del ip.chksum
            del l4.chksum
        return None

    def _route(self, node: int, pkt: Any, conntrack: bool = False) -> tuple:
        """The node's IP stack: local delivery or forward (LPM, TTL, neighbour, out)."""
        if conntrack and self._conntrack(node, pkt) is not None:
            return ("dropped", "no endpoints")
        ip = pkt[self.IP]
        if (node, ip.dst) in self.local_ips:
            return ("delivered", self.br_if[node], bytes(pkt))
        dst = _ip_int(ip.dst)
        for mask, table in self.routes:
            hit = table.get(dst & mask)
            if hit is not None:
                break
        else:
            return ("dropped", "no route")
        rkind, owner = hit
        if ip.ttl <= 1:
            return ("dropped", "TTL exceeded")
        ip.ttl -= 1
        del ip.chksum
        if rkind == C.RT_POD_CIDR and owner == node:
            out, nexthop = self.br_if[node], ip.dst
        elif rkind == C.RT_POD_CIDR:
            out, nexthop = self.eth_if[node], self.node_ip[owner]
        elif rkind == C.RT_NODE_NET:
            out, nexthop = self.eth_if[node], ip.dst
        else:
            out, nexthop = self.eth_if[node], self.gateway_ip
        mac = self.neigh.get((node, nexthop))
        if mac is None:
            return ("dropped", "neighbour unresolved")
        pkt.src, pkt.dst = self.mac[out], mac
        if out == self.br_if[node]:  # into the node's bridge from its own device
            return ("bridge", pkt, node, out, node)
        return ("bridge", pkt, self.n_nodes, out, -1)  # onto the node network


# ------------------------------------------------------------------ pytricia
class PytriciaRoutes:
    """A pytricia route table with the same prefixes; ``lookup_bulk`` over Python ints."""

    def __init__(self, prefixes: np.ndarray, depths: np.ndarray, next_hops: np.ndarray) -> None:
        import pytricia

        self.tree = pytricia.PyTricia(32)
        for p, d, nh in zip(prefixes.tolist(), depths.tolist(), next_hops.tolist(),
                            strict=True):
            self.tree.insert(f"{_ip(p)}/{d}", nh)

    def lookup_bulk(self, ips: list[int]) -> list[Any]:
        return list(map(self.tree.get, ips))


def pytricia_available() -> bool:
    try:
        import pytricia  # noqa: F401
    except ImportError:
        return False
    return True


def scapy_available() -> bool:
    try:
        import scapy  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ the kernel
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_live: set[KernelPeer] = set()


class KernelPeerError(RuntimeError):
    """The kernel peer could not be built or driven."""


def kernel_available() -> tuple[bool, str]:
    """(usable, why not): root, iproute2, iptables-restore, br_netfilter, sendmmsg."""
    if os.geteuid() != 0:
        return False, "needs root"
    for tool in ("ip", "iptables-restore"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found"
    if not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
        return False, "br_netfilter is not loaded"
    if not hasattr(_libc, "sendmmsg"):
        return False, "no sendmmsg in libc"
    return True, "ok"


def _run(cmd: list[str], input: str | None = None, timeout: float = 60.0,
         check: bool = True) -> str:
    try:
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise KernelPeerError(f"{' '.join(cmd[:4])}: timed out") from e
    if check and p.returncode:
        raise KernelPeerError(f"{' '.join(cmd[:6])} failed: {p.stderr.strip()[:400]}")
    return p.stdout


def in_netns(ns: str, fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Any:
    """Run ``fn`` in a new thread that joined netns ``ns`` (the caller's netns is untouched;
    sockets made there stay in ``ns``)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            out["v"] = fn(*args)
        except BaseException as e:  # handed to the caller
            out["e"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise KernelPeerError(f"netns {ns}: timed out")
    if "e" in out:
        raise out["e"]
    return out.get("v")


def _sysctl(settings: list[tuple[str, int]]) -> None:
    for key, value in settings:
        path = "/proc/sys/" + key.replace(".", "/")
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write(f"{value}\n")


def _dev_counters() -> dict[str, tuple[int, int]]:
    """(rx_packets, tx_packets) per device of the calling thread's netns."""
    with open("/proc/thread-self/net/dev") as f:
        lines = f.read().splitlines()[2:]
    out = {}
    for line in lines:
        name, _, rest = line.partition(":")
        v = rest.split()
        out[name.strip()] = (int(v[1]), int(v[9]))
    return out


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    s.bind((ifname, 0))
    return s


class _Sender:
    """Prebuilt ``struct mmsghdr``/``iovec`` arrays over a frame buffer for ``sendmmsg``."""

    def __init__(self, sock: socket.socket, buf: np.ndarray, offsets: np.ndarray,
                 lengths: np.ndarray) -> None:
        self.sock = sock
        self.buf = buf
        n = len(offsets)
        self.n = n
        self.iov = np.zeros((n, 2), np.uint64)
        self.iov[:, 0] = buf.ctypes.data + offsets.astype(np.uint64)
        self.iov[:, 1] = lengths.astype(np.uint64)
        self.msg = np.zeros((n, 8), np.uint64)  # struct mmsghdr is 64 bytes on LP64
        self.msg[:, 2] = self.iov.ctypes.data + np.arange(n, dtype=np.uint64) * 16
        self.msg[:, 3] = 1
        self.base = self.msg.ctypes.data

    def send(self, lo: int, hi: int) -> int:
        """Send frames ``lo..hi``; returns how many the kernel took."""
        sent = _libc.sendmmsg(self.sock.fileno(), ctypes.c_void_p(self.base + 64 * lo),
                              ctypes.c_uint(hi - lo), 0)
        return max(0, sent)


class KernelPeer:
    """The cluster of ``Tables`` (host-gw) built from network namespaces. A context manager."""

    def __init__(self, t: Tables, pods: Iterable[int] | None = None) -> None:
        if t.vxlan:
            raise KernelPeerError("the kernel peer builds host-gw clusters only")
        self.t = t
        self.prefix = f"kemu-bench-{secrets.token_hex(3)}-"
        self.pods = sorted(set(pods) if pods is not None else
                           {int(i) for i in np.flatnonzero(t.if_kind == C.IF_POD_ETH)})
        self.netns: dict[str, str] = {"net": self.prefix + "net"}
        for n in range(t.n_nodes):
            self.netns[f"n{n}"] = f"{self.prefix}n{n}"
        for i in self.pods:
            self.netns[f"p{i}"] = f"{self.prefix}p{i}"
        self.created: list[str] = []
        self.socks: dict[int, socket.socket] = {}
        self.build_seconds = 0.0

    # -- building
    def __enter__(self) -> KernelPeer:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        t0 = time.perf_counter()
        _live.add(self)
        try:
            self._namespaces()
            self._links()
            self._iptables()
            self._settle()
            for i in self.pods:
                self.socks[i] = in_netns(self.netns[f"p{i}"], _packet_socket, "eth0")
            for n in range(self.t.n_nodes):  # nodes transmit too (warm-up ARP)
                self.socks[int(self.t.node_eth_if[n])] = in_netns(
                    self.netns[f"n{n}"], _packet_socket, "eth0")
        except BaseException:
            self.close()
            raise
        self.build_seconds = time.perf_counter() - t0

    def _namespaces(self) -> None:
        for ns in self.netns.values():
            assert ns.startswith("kemu-bench-")
        _run(["ip", "-batch", "-"], input="".join(f"netns add {ns}\n"
                                                 for ns in self.netns.values()))
        self.created = list(self.netns.values())
        off = [("net.ipv6.conf.all.disable_ipv6", 1), ("net.ipv6.conf.default.disable_ipv6", 1)]
        for role, ns in self.netns.items():
            s = list(off)
            if role.startswith("n") and role != "net":
                s += [("net.ipv4.ip_forward", 1), ("net.bridge.bridge-nf-call-iptables", 1),
                      ("net.ipv4.conf.all.rp_filter", 2), ("net.ipv4.conf.default.rp_filter", 2),
                      ("net.netfilter.nf_conntrack_tcp_be_liberal", 1)]
            elif role == "net":
                s += [("net.bridge.bridge-nf-call-iptables", 0)]
            in_netns(ns, _sysctl, s)

    def _links(self) -> None:
        t = self.t
        plen = {n: int(t.rt_len[r]) for r in range(len(t.rt_len))
                if int(t.rt_kind[r]) == C.RT_POD_CIDR for n in [int(t.rt_node[r])]}
        cidr = {int(t.rt_node[r]): f"{_ip(int(t.rt_prefix[r]))}/{int(t.rt_len[r])}"
                for r in range(len(t.rt_len)) if int(t.rt_kind[r]) == C.RT_POD_CIDR}
        net_len = next(int(t.rt_len[r]) for r in range(len(t.rt_len))
                       if int(t.rt_kind[r]) == C.RT_NODE_NET)
        net = ["link add br0 type bridge mcast_snooping 0", "link set br0 up"]
        for n in range(t.n_nodes):
            eth = int(t.node_eth_if[n])
            net += [f"link add u{n} type veth peer name eth0 address {_mac(int(t.if_mac[eth]))}"
                    f" netns {self.netns[f'n{n}']}", f"link set u{n} master br0",
                    f"link set u{n} up"]
        self._batch("net", net)
        for n in range(t.n_nodes):
            br, eth = int(t.node_br_if[n]), int(t.node_eth_if[n])
            lines = ["link set lo up",
                     f"link add cbr0 address {_mac(int(t.if_mac[br]))} type bridge "
                     "mcast_snooping 0 forward_delay 0",
                     f"addr add {_ip(int(t.if_ip[br]))}/{plen[n]} dev cbr0", "link set cbr0 up",
                     f"addr add {_ip(int(t.if_ip[eth]))}/{net_len} dev eth0", "link set eth0 up"]
            for i in self.pods:
                if int(t.if_node[i]) != n:
                    continue
                v = f"v{i}"
                lines += [f"link add {v} address {_mac(int(t.if_mac[int(t.if_peer[i])]))} "
                          f"type veth peer name eth0 address {_mac(int(t.if_mac[i]))} "
                          f"netns {self.netns[f'p{i}']}", f"link set {v} master cbr0",
                          f"link set dev {v} type bridge_slave hairpin on learning on",
                          f"link set {v} up",
                          f"neigh replace {_ip(int(t.if_ip[i]))} lladdr "
                          f"{_mac(int(t.if_mac[i]))} dev cbr0 nud permanent"]
            for m in range(t.n_nodes):
                if m != n:
                    lines += [f"route add {cidr[m]} via {_ip(int(t.node_ip[m]))} dev eth0",
                              f"neigh replace {_ip(int(t.node_ip[m]))} lladdr "
                              f"{_mac(int(t.if_mac[int(t.node_eth_if[m])]))} dev eth0 "
                              "nud permanent"]
            self._batch(f"n{n}", lines)
        for i in self.pods:
            n = int(t.if_node[i])
            br = int(t.node_br_if[n])
            self._batch(f"p{i}", [
                "link set lo up", f"addr add {_ip(int(t.if_ip[i]))}/{plen[n]} dev eth0",
                "link set eth0 up", f"route add default via {_ip(int(t.if_ip[br]))} dev eth0",
                f"neigh replace {_ip(int(t.if_ip[br]))} lladdr {_mac(int(t.if_mac[br]))} "
                "dev eth0 nud permanent"])

    def _batch(self, role: str, lines: list[str]) -> None:
        _run(["ip", "-n", self.netns[role], "-batch", "-"], input="\n".join(lines) + "\n")

    def _iptables(self) -> None:
        rules = kube_proxy_rules(self.t)
        # pods drop what they receive before their TCP stack answers it (no RSTs back)
        sink = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
               "-A PREROUTING -p tcp -j DROP\nCOMMIT\n"
        with tempfile.TemporaryDirectory(prefix=self.prefix) as tmp:
            for path, text in (("node.rules", rules), ("pod.rules", sink)):
                with open(os.path.join(tmp, path), "w") as f:
                    f.write(text)
            for role, ns in self.netns.items():
                if role == "net":
                    continue
                path = os.path.join(tmp, "pod.rules" if role.startswith("p") else "node.rules")
                _run(["ip", "netns", "exec", ns, "iptables-restore", path])

    def _settle(self, timeout: float = 10.0) -> None:
        """Wait until every node-side veth forwards (bridge ports start in 'listening')."""
        deadline = time.monotonic() + timeout
        while True:
            pending = 0
            for n in range(self.t.n_nodes):
                out = _run(["ip", "-n", self.netns[f"n{n}"], "-br", "link", "show"])
                pending += sum(1 for line in out.splitlines()
                               if line.split()[1:2] not in (["UP"], ["UNKNOWN"]))
            if not pending:
                return
            if time.monotonic() > deadline:
                raise KernelPeerError(f"{pending} interfaces not up after {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        """Close sockets and delete every namespace this peer created. Idempotent."""
        for s in self.socks.values():
            with contextlib.suppress(OSError):
                s.close()
        self.socks.clear()
        if self.created:
            _run(["ip", "-force", "-batch", "-"], check=False,
                 input="".join(f"netns del {ns}\n" for ns in reversed(self.created)))
            left = set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()
            for ns in self.created:
                if ns in left:
                    _run(["ip", "netns", "del", ns], check=False)
            left = set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()
            self.created = [ns for ns in self.created if ns in left]
        if not self.created:
            _live.discard(self)

    # -- traffic
    def delivered(self) -> int:
        """Frames the node bridges have sent to pods so far (node-side veth TX counters)."""
        total = 0
        for n in range(self.t.n_nodes):
            for name, (_rx, tx) in in_netns(self.netns[f"n{n}"], _dev_counters).items():
                if name.startswith("v"):
                    total += tx
        return total

    def senders(self, w: Workload) -> list[tuple[_Sender, np.ndarray]]:
        """One sender per pod (or node) that transmits in ``w``, its frames in order."""
        out = []
        for i in np.unique(w.in_if):
            sel = np.flatnonzero(w.in_if == i)
            if int(i) not in self.socks:
                raise KernelPeerError(f"interface {int(i)} is not a pod or node uplink of this "
                                      "kernel peer")
            out.append((_Sender(self.socks[int(i)], w.buf, w.offsets[sel], w.lengths[sel]),
                        sel))
        return out

    def send_all(self, w: Workload, chunk: int = 64) -> int:
        """Send every frame of ``w`` once (round robin over the pods, ``chunk`` at a time)."""
        sent = 0
        snd = [s for s, _ in self.senders(w)]
        pos = [0] * len(snd)
        while any(p < s.n for p, s in zip(pos, snd, strict=True)):
            for k, s in enumerate(snd):
                if pos[k] < s.n:
                    hi = min(s.n, pos[k] + chunk)
                    sent += s.send(pos[k], hi)
                    pos[k] = hi
        return sent

    def blast(self, w: Workload, seconds: float, chunk: int = 64) -> dict[str, float]:
        """Send ``w``'s frames over and over for about ``seconds``; count deliveries."""
        snd = [s for s, _ in self.senders(w)]
        pos = [0] * len(snd)
        before = self.delivered()
        sent = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            for k, s in enumerate(snd):
                hi = min(s.n, pos[k] + chunk)
                sent += s.send(pos[k], hi)
                pos[k] = hi if hi < s.n else 0
        elapsed = time.perf_counter() - t0
        time.sleep(0.05)  # let backlogs drain
        got = self.delivered() - before
        return {"sent": sent, "delivered": got, "seconds": elapsed,
                "pps": got / elapsed, "sent_pps": sent / elapsed}


def injection_rate(seconds: float = 1.0, frame_len: int = 64, chunk: int = 64) -> float:
    """Frames/s one core pushes through AF_PACKET ``sendmmsg`` into a veth whose peer drops
    them on receipt (no protocol handler): the cost of the sender and the first veth hop
    alone, which bounds the kernel measurement."""
    ns = f"kemu-bench-{secrets.token_hex(3)}-sink"
    _run(["ip", "netns", "add", ns])
    try:
        _run(["ip", "-n", ns, "-batch", "-"],
             input="link add d0 type veth peer name d1\nlink set d1 up\nlink set d0 up\n")
        sock = in_netns(ns, _packet_socket, "d0")
        try:
            n = 1024
            buf = np.zeros(n * frame_len, np.uint8)
            buf[0::frame_len] = 0x02
            s = _Sender(sock, buf, np.arange(n, dtype=np.int64) * frame_len,
                        np.full(n, frame_len, np.int32))
            sent, pos = 0, 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                sent += s.send(pos, pos + chunk)
                pos = (pos + chunk) % n
            return sent / (time.perf_counter() - t0)
        finally:
            sock.close()
    finally:
        _run(["ip", "netns", "del", ns], check=False)


def _cleanup_at_exit() -> None:
    for peer in list(_live):
        with contextlib.suppress(Exception):
            peer.close()


atexit.register(_cleanup_at_exit)


def kube_proxy_rules(t: Tables) -> str:
    """iptables-restore input in the shape of kube-proxy's iptables mode for the ClusterIPs of
    ``t`` (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* with ``statistic`` probabilities, DNAT,
    masquerade marks for sources outside the cluster CIDR; the FORWARD conntrack rules)."""
    net, mask = t.cluster_cidr
    cidr = f"{_ip(net)}/{bin(mask).count('1')}"
    filt = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]",
            "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
            "-A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES",
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
            "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
            "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "COMMIT"]
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    head = ["-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES",
            "-A POSTROUTING -j KUBE-POSTROUTING",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            "-A KUBE-POSTROUTING -j MASQUERADE"]
    svc, rest = [], []
    for f in range(len(t.fe_ip)):
        if int(t.fe_kind[f]) != C.FE_CLUSTER_IP:
            continue
        sp = int(t.fe_sp[f])
        s, c = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        proto = C.PROTO_NAMES.get(int(t.fe_proto[f]), "TCP").lower()
        vip, port = _ip(int(t.fe_ip[f])), int(t.fe_port[f])
        if not c:
            continue
        name = f"SVC{sp}"
        chains.append(f":KUBE-{name} - [0:0]")
        svc.append(f"-A KUBE-SERVICES -d {vip}/32 -p {proto} -m {proto} --dport {port} "
                   f"-j KUBE-{name}")
        rest.append(f"-A KUBE-{name} ! -s {cidr} -d {vip}/32 -p {proto} -m {proto} "
                    f"--dport {port} -j KUBE-MARK-MASQ")
        for k, b in enumerate(range(s, s + c)):
            sep = f"SEP{sp}-{k}"
            chains.append(f":KUBE-{sep} - [0:0]")
            prob = (f"-m statistic --mode random --probability {1.0 / (c - k):.10f} "
                    if k < c - 1 else "")
            rest.append(f"-A KUBE-{name} {prob}-j KUBE-{sep}")
            bip, bport = _ip(int(t.be_ip[b])), int(t.be_port[b])
            rest.append(f"-A KUBE-{sep} -s {bip}/32 -j KUBE-MARK-MASQ")
            rest.append(f"-A KUBE-{sep} -p {proto} -m {proto} -j DNAT "
                        f"--to-destination {bip}:{bport}")
    nat = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
           ":POSTROUTING ACCEPT [0:0]"] + chains + head + svc + rest + ["COMMIT"]
    return "\n".join(filt + nat) + "\n"
