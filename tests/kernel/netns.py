"""Build kemu's emulated cluster out of real Linux network namespaces (the kernel reference).

This is a library for tests, not a test module. From a plain, JSON-able topology dict (see
``example_topology``) it builds what a kubeadm node with kubenet / flannel host-gw looks like:

* one netns per node: bridge ``cbr0`` (bridge_mac, bridge_ip/<pod prefix>), ``eth0`` (node IP),
  routes ``pod_cidr dev cbr0``, ``<other pod_cidr> via <other node>``, ``default via gateway``,
  ``ip_forward=1``, ``bridge-nf-call-iptables=1`` (per netns), rp_filter loose, kube-proxy
  iptables-mode rules loaded with ``iptables-restore`` (``kube_proxy_rules``);
* one netns per pod: ``eth0`` (pod IP/MAC), ``lo``, default route via the node's bridge IP; the node
  end of the veth (``veth``/``veth_mac``) is a ``cbr0`` port with hairpin on. Ports in ``listen``
  get real sockets created inside the pod netns (TCP listen, UDP echo) owned by this process;
* netns ``net``: bridge ``br0`` = the node network; nodes (port ``n-<node>``), the gateway (``gw``)
  and external hosts (``x-<name>``) attach by veth pairs. The gateway is a sink (ip_forward=0)
  unless the topology's gateway says ``"router": True`` (kemu's gateway): then it forwards
  (ip_forward=1, send_redirects=0: kemu models no ICMP redirects), routes each pod CIDR via its
  node and has a blackhole default route (the outside world: what leaves is not seen again, as
  kemu's LEFT; no dummy device needed); external hosts have a default route via the gateway.

Optional topology keys beyond kemu's: a node may carry ``"default_route": False`` (no default
route; the no-route scenario). Settings (keyword arguments of ``KernelCluster``), each chosen to
keep captures to exactly what the injected frames cause:

* IPv6 is disabled in every netns before any interface exists (``disable_ipv6``): otherwise
  DAD / MLD / router solicitations flood every capture (hundreds of frames in 3 s);
* multicast snooping is off on both bridges (``mcast_snooping``): otherwise each bridge joins
  224.0.0.106 and sends IGMPv3 reports for about a second after coming up;
* TX checksum offload is off on every interface (``full_checksums``): otherwise TCP/UDP segments
  the kernel originates carry CHECKSUM_PARTIAL pseudo-header sums in every capture;
* rp_filter is 2 (loose, what systemd-based kubeadm hosts have; ``rp_filter``).

Every netns name starts with ``RUN_PREFIX`` (``kemu-<random>``), unique per process; nothing is
created or changed in the root namespace. ``KernelCluster`` is a context manager: namespaces and
sockets are removed on exit, on errors during build, and at interpreter exit (``atexit``).

Injection and capture::

    with KernelCluster(topo) as kc:
        kc.settle()
        obs = kc.run([("pod:default/a", frame_bytes), ...], wait=0.3)

``where`` is ``pod:<key>``, ``ext:<name>``, ``node:<name>`` (out of the node's eth0), ``gateway``
or ``iface:<kemu interface name>``. ``run`` opens one AF_PACKET socket per interface (inside the
owning netns, before injecting), transmits each frame out of the named interface with another
AF_PACKET socket, waits, drains every capture socket and returns ``Obs`` ordered by kernel
timestamp (SO_TIMESTAMPNS). Captured: pod eth0 and lo, node veths, cbr0, eth0 and lo, the
node-network switch ports (``net/n-node1``, ``net/gw``, ``net/x-client``; not its bridge device),
gateway and external hosts' eth0. Timestamps tie when one skb is seen twice on receive (a port's
``in`` and then its bridge's ``in`` keep the first receive stamp): ties put the port first.
A socket bound to one interface sees a frame once per direction on that interface: received
frames as ``in``, transmitted frames (PACKET_OUTGOING) as ``out``. A bridge port (``node1/veth..``)
shows what enters the bridge from that port (``in``) and what the bridge sends out of it (``out``);
the bridge device ``cbr0`` shows only what the bridge hands to / takes from the node's own IP stack
(``in`` = passed up, ``out`` = transmitted by the stack). Frames bridged port-to-port never appear
on ``cbr0`` (the capture socket does not set promiscuous mode).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import copy
import ctypes
import errno
import fcntl
import hashlib
import ipaddress
import itertools
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RUN_PREFIX",
    "HarnessError",
    "KernelCluster",
    "Obs",
    "Decoded",
    "Topology",
    "cleanup_leftovers",
    "decode",
    "describe",
    "example_topology",
    "kube_proxy_rules",
    "chain_hash",
    "in_netns",
    "kernel_harness_available",
    "netns_list",
    "parse_conntrack_line",
]

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x00000017
NETNS_DIR = "/run/netns"
MASQ_MARK = "0x4000"
BCAST = "ff:ff:ff:ff:ff:ff"

#: Every netns this process creates starts with this prefix (per-process random suffix).
RUN_PREFIX = f"kemu-{secrets.token_hex(3)}"

_libc = ctypes.CDLL(None, use_errno=True)
_cluster_ids = itertools.count()
_live: set[KernelCluster] = set()


def missing_for(what: str, tools: Sequence[str]) -> str | None:
    """Why a kernel test module cannot run here (not root, a tool missing), or None: the
    reason its ``pytest.mark.skipif`` gives."""
    if os.geteuid() != 0:
        return f"{what} needs root (network namespaces)"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{what} needs {tool!r} (not found)"
    return None


class HarnessError(RuntimeError):
    """The kernel harness could not build, drive or read the namespaces."""


# --------------------------------------------------------------------------------------------
# small process / namespace helpers


def _run(cmd: Sequence[str], *, input: str | None = None, timeout: float = 20.0,
         check: bool = True) -> str:
    try:
        p = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"{' '.join(cmd)}: timed out after {timeout}s") from e
    if check and p.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def in_netns(ns: str, fn: Callable[..., Any], *args: Any, timeout: float = 10.0,
             **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in a fresh thread that has joined netns ``ns``.

    setns(CLONE_NEWNET) only changes the calling thread; the thread ends afterwards, so the
    caller's namespace is never touched. Sockets created there stay in ``ns`` for their lifetime.
    """
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise HarnessError(f"in_netns({ns}, {getattr(fn, '__name__', fn)}): timed out")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _write_sysctl(path: str, value: str | int, *, missing_ok: bool = False) -> bool:
    full = "/proc/sys/" + path.replace(".", "/") if not path.startswith("/") else path
    try:
        with open(full, "w") as f:
            f.write(f"{value}\n")
    except FileNotFoundError:
        if missing_ok:
            return False
        raise
    return True


def _read_sysctl(path: str) -> str | None:
    full = "/proc/sys/" + path.replace(".", "/")
    try:
        with open(full) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _sysctls(settings: Iterable[tuple[str, str | int, bool]]) -> dict[str, str | None]:
    """In the current (thread's) netns: write each (key, value, missing_ok); return read-backs."""
    back: dict[str, str | None] = {}
    for key, value, missing_ok in settings:
        _write_sysctl(key, value, missing_ok=missing_ok)
        back[key] = _read_sysctl(key)
    return back


def _disable_tx_csum(ifnames: Iterable[str]) -> dict[str, str]:
    """Legacy ETHTOOL_STXCSUM ioctl (no ethtool binary needed); returns per-interface result."""
    res: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in ifnames:
            ev = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
            ifr = struct.pack("16sP", name.encode(), ctypes.addressof(ev)).ljust(40, b"\0")
            try:
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
                res[name] = "off"
            except OSError as e:
                res[name] = f"error: {errno.errorcode.get(e.errno, e.errno)}"
    return res


def _open_capture_sockets(ifnames: Sequence[str], rcvbuf: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for name in ifnames:
            # protocol 0 at creation: the socket receives nothing until bound to one interface
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind((name, ETH_P_ALL))
            s.setblocking(False)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _open_tx_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((ifname, 0))
    except BaseException:
        s.close()
        raise
    return s


def _tcp_connect(dst: str, dport: int, sport: int) -> socket.socket:
    """A process's TCP client socket: bound to ``sport``, a non-blocking connect() started."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.bind(("0.0.0.0", sport))
    s.setblocking(False)
    s.connect_ex((dst, dport))
    return s


def _open_listeners(listen: Sequence[Sequence[Any]]) -> list[tuple[str, socket.socket]]:
    out: list[tuple[str, socket.socket]] = []
    try:
        for proto, port in listen:
            proto = str(proto).lower()
            if proto == "tcp":
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                out.append((proto, s))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", int(port)))
                s.listen(128)
            elif proto == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                out.append((proto, s))
                s.bind(("0.0.0.0", int(port)))
            else:
                raise HarnessError(f"listen: unsupported protocol {proto!r}")
            s.setblocking(False)
    except BaseException:
        for _, s in out:
            s.close()
        raise
    return out


def _read_proc_net(name: str) -> str | None:
    try:
        with open(f"/proc/thread-self/net/{name}") as f:
            return f.read()
    except FileNotFoundError:
        return None


def netns_list() -> list[str]:
    """Names of all named network namespaces (what ``ip netns list`` reads: /run/netns)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def cleanup_leftovers(prefix: str = RUN_PREFIX) -> list[str]:
    """Delete every named netns whose name starts with ``prefix`` (must start with 'kemu-')."""
    if not prefix.startswith("kemu-") or len(prefix) < 8:
        raise ValueError(f"refusing to clean up with prefix {prefix!r}")
    gone = []
    for ns in netns_list():
        if ns.startswith(prefix):
            _run(["ip", "netns", "del", ns], check=False)
            gone.append(ns)
    return gone


def _atexit_cleanup() -> None:
    for kc in list(_live):
        with contextlib.suppress(Exception):
            kc.teardown()
    with contextlib.suppress(Exception):
        cleanup_leftovers(RUN_PREFIX)


atexit.register(_atexit_cleanup)


def kernel_harness_available() -> tuple[bool, str]:
    """(usable, reason): root, iproute2, iptables-restore, netns creation."""
    if os.geteuid() != 0:
        return False, "needs root"
    for tool in ("ip", "bridge", "iptables-restore"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found"
    if not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
        return False, "br_netfilter not loaded (no /proc/sys/net/bridge)"
    ns = f"{RUN_PREFIX}-probe"
    try:
        _run(["ip", "netns", "add", ns])
    except HarnessError as e:
        return False, str(e)
    finally:
        _run(["ip", "netns", "del", ns], check=False)
    return True, "ok"


# --------------------------------------------------------------------------------------------
# kube-proxy (iptables mode) rules


def chain_hash(*parts: str) -> str:
    """kube-proxy's chain suffix: first 16 chars of base32(sha256(concatenation)) (S-2)."""
    return base64.b32encode(hashlib.sha256("".join(parts).encode()).digest()).decode()[:16]


def flannel_masq_rules(topo: dict[str, Any], node: str | None) -> tuple[list[str], list[str]]:
    """(nat chains, nat rules) of flanneld's ``--ip-masq`` on ``node`` (M-5, OV-5), as
    flannel's ``MasqRules`` writes them (``FLANNEL-POSTRTG``), without ``--random-fully`` (kemu's
    ``spec.masquerade.randomFully: false``) and without flannel's host rule ``! -s <cluster> -d
    <cluster> -j MASQUERADE`` (node/external traffic to remote pods, not modelled by kemu).
    Nothing unless ``topo["ip_masq"]``."""
    if not topo.get("ip_masq") or node is None:
        return [], []
    pod = next(n["pod_cidr"] for n in topo["nodes"] if n["name"] == node)
    cluster = topo["cluster_cidr"]
    c = '-m comment --comment "flanneld masq"'
    return ["FLANNEL-POSTRTG"], [
        f"-A POSTROUTING {c} -j FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark {MASQ_MARK}/{MASQ_MARK} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {pod} -d {cluster} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {cluster} -d {pod} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s {cluster} -d {pod} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {pod} ! -d {cluster} {c} -j MASQUERADE",
    ]


def kube_proxy_rules(topo: dict[str, Any], node: str | None = None) -> str:
    """iptables-restore input in the shape kube-proxy's iptables proxier writes (S-1..S-9, E-1),
    plus flannel's masquerade of ``node``'s pod traffic leaving the cluster when
    ``topo["ip_masq"]`` (``flannel_masq_rules``).

    kube-proxy's part is identical on every node (all services use
    externalTrafficPolicy=Cluster, internalTrafficPolicy=Cluster, no session affinity) but for
    a ``loadBalancerSourceRanges`` range holding the node's own address (kube-proxy's
    ``allowFromNode``: the LB addresses are allowed sources too). A service's
    ``load_balancer_ips`` and ``source_ranges`` give kube-proxy's LoadBalancer rules
    (``KUBE-FW-``/``KUBE-EXT-``, the ``KUBE-PROXY-FIREWALL`` DROP).
    """
    cluster_cidr = topo["cluster_cidr"]
    f_chains = ["KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-NODEPORTS",
                "KUBE-PROXY-FIREWALL", "KUBE-SERVICES"]
    filt = [
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible '
        'service portals" -j KUBE-EXTERNAL-SERVICES',
        "-A INPUT -j KUBE-FIREWALL",
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
        "-j KUBE-SERVICES",
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible '
        'service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
        "-j KUBE-SERVICES",
        "-A OUTPUT -j KUBE-FIREWALL",
        '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" '
        "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    n_chains = ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES"]
    nat_head = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE",
    ]
    services_rules: list[str] = []
    nodeport_rules: list[str] = []
    other: list[str] = []
    for svc in topo.get("services", []):
        spn = svc["key"]
        proto = str(svc.get("protocol", "tcp")).lower()
        cip, port, np = svc["cluster_ip"], int(svc["port"]), svc.get("node_port")
        m = f"-m {proto} -p {proto}"
        eps = svc.get("endpoints") or []
        lbs = svc.get("load_balancer_ips") or []
        ranges = svc.get("source_ranges") or []
        if not eps:
            filt.append(f'-A KUBE-SERVICES -m comment --comment "{spn} has no endpoints" {m} '
                        f"-d {cip} --dport {port} -j REJECT")
            filt += [f'-A KUBE-EXTERNAL-SERVICES -m comment --comment "{spn} has no endpoints" '
                     f"{m} -d {lb} --dport {port} -j REJECT" for lb in lbs]
            if np:
                filt.append(f'-A KUBE-EXTERNAL-SERVICES -m comment --comment "{spn} has no '
                            f'endpoints" -m addrtype --dst-type LOCAL {m} --dport {np} -j REJECT')
            continue
        svc_chain = "KUBE-SVC-" + chain_hash(spn, proto)
        n_chains.append(svc_chain)
        services_rules.append(f'-A KUBE-SERVICES -m comment --comment "{spn} cluster IP" {m} '
                              f"-d {cip} --dport {port} -j {svc_chain}")
        ext_chain = "KUBE-EXT-" + chain_hash(spn, proto)
        if np or lbs:
            n_chains.append(ext_chain)
            other.append(f'-A {ext_chain} -m comment --comment "masquerade traffic for {spn} '
                         f'external destinations" -j KUBE-MARK-MASQ')
            other.append(f"-A {ext_chain} -j {svc_chain}")
        if np:
            nodeport_rules.append(f"-A KUBE-NODEPORTS -m comment --comment {spn} {m} "
                                  f"--dport {np} -j {ext_chain}")
        # LoadBalancer ingress IPs (E-4): with loadBalancerSourceRanges through KUBE-FW-X,
        # whose allowed sources jump to KUBE-EXT-X; what falls through is not DNATed and is
        # dropped by KUBE-PROXY-FIREWALL (filter, ctstate NEW) as kube-proxy writes it
        fw_chain = "KUBE-FW-" + chain_hash(spn, proto)
        for lb in lbs:
            services_rules.append(f'-A KUBE-SERVICES -m comment --comment "{spn} loadbalancer '
                                  f'IP" {m} -d {lb} --dport {port} -j '
                                  f"{fw_chain if ranges else ext_chain}")
            if ranges:
                filt.append(f'-A KUBE-PROXY-FIREWALL -m comment --comment "{spn} traffic not '
                            f'accepted by {fw_chain}" {m} -d {lb} --dport {port} -j DROP')
        if lbs and ranges:
            n_chains.append(fw_chain)
            other += [f'-A {fw_chain} -m comment --comment "{spn} loadbalancer IP" -s {src} '
                      f"-j {ext_chain}" for src in ranges]
            node_ip = next((n["ip"] for n in topo["nodes"] if n["name"] == node), None)
            if node_ip is not None and any(ipaddress.ip_address(node_ip)
                                           in ipaddress.ip_network(r) for r in ranges):
                other += [f'-A {fw_chain} -m comment --comment "{spn} loadbalancer IP" -s {lb} '
                          f"-j {ext_chain}" for lb in lbs]  # allowFromNode
            other.append(f'-A {fw_chain} -m comment --comment "other traffic to {spn} will be '
                         'dropped by KUBE-PROXY-FIREWALL"')
        other.append(f'-A {svc_chain} -m comment --comment "{spn} cluster IP" {m} -d {cip} '
                     f"--dport {port} ! -s {cluster_cidr} -j KUBE-MARK-MASQ")
        n = len(eps)
        sep_rules: list[str] = []
        for i, ep in enumerate(eps):
            dest = f"{ep['ip']}:{int(ep['port'])}"
            sep = "KUBE-SEP-" + chain_hash(spn, proto, dest)
            n_chains.append(sep)
            prob = (f"-m statistic --mode random --probability {1.0 / (n - i):0.10f} "
                    if i < n - 1 else "")
            other.append(f'-A {svc_chain} -m comment --comment "{spn} -> {dest}" {prob}-j {sep}')
            sep_rules.append(f"-A {sep} -m comment --comment {spn} -s {ep['ip']} "
                             "-j KUBE-MARK-MASQ")
            sep_rules.append(f"-A {sep} -m comment --comment {spn} {m} -j DNAT "
                             f"--to-destination {dest}")
        other.extend(sep_rules)
    services_rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
        'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [f":{c} - [0:0]" for c in f_chains]
    lines += filt + ["COMMIT", "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]",
                     ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    fl_chains, fl_rules = flannel_masq_rules(topo, node)
    lines += [f":{c} - [0:0]" for c in n_chains + fl_chains]
    lines += nat_head + fl_rules + nodeport_rules + services_rules + other + ["COMMIT"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# frame decoding (struct-based: fast and with no dependency; ``describe`` for humans)


@dataclass(frozen=True)
class Decoded:
    """Decisive fields of a frame. Absent fields are None."""

    src_mac: str
    dst_mac: str
    ethertype: int
    arp_op: int | None = None          # 1 request, 2 reply
    arp_psrc: str | None = None
    arp_pdst: str | None = None
    arp_hwsrc: str | None = None
    src: str | None = None             # IPv4
    dst: str | None = None
    proto: int | None = None           # 1 icmp, 6 tcp, 17 udp
    ttl: int | None = None
    sport: int | None = None
    dport: int | None = None
    flags: str | None = None           # TCP flags as letters, e.g. "S", "SA", "R", "RA"
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    inner: Decoded | None = None       # the header quoted in an ICMP error (no MACs)
    df: bool | None = None             # IPv4 don't-fragment bit

    @property
    def l4(self) -> str:
        return {1: "icmp", 6: "tcp", 17: "udp"}.get(self.proto or -1, str(self.proto))


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _tcp_flags(v: int) -> str:
    return "".join(ch for bit, ch in zip((0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80),
                                         "FSRPAUEC", strict=True) if v & bit)


def _decode_ip(buf: bytes, src_mac: str = "", dst_mac: str = "", et: int = 0x0800,
               quoted: bool = False) -> Decoded:
    if len(buf) < 20:
        return Decoded(src_mac, dst_mac, et)
    ihl = (buf[0] & 0x0F) * 4
    ttl, proto = buf[8], buf[9]
    df = bool(buf[6] & 0x40)
    src, dst = socket.inet_ntoa(buf[12:16]), socket.inet_ntoa(buf[16:20])
    l4 = buf[ihl:]
    kw: dict[str, Any] = {}
    if proto in (6, 17) and len(l4) >= 4:
        kw["sport"], kw["dport"] = struct.unpack("!HH", l4[:4])
        if proto == 6 and len(l4) >= 14:
            kw["flags"] = _tcp_flags(l4[13])
    elif proto == 1 and len(l4) >= 4:
        kw["icmp_type"], kw["icmp_code"] = l4[0], l4[1]
        if l4[0] in (0, 8) and len(l4) >= 6:
            kw["icmp_id"] = struct.unpack("!H", l4[4:6])[0]
        if l4[0] in (3, 4, 5, 11, 12) and not quoted and len(l4) >= 28:
            kw["inner"] = _decode_ip(l4[8:], quoted=True)
    return Decoded(src_mac, dst_mac, et, src=src, dst=dst, proto=proto, ttl=ttl, df=df, **kw)


def decode(frame: bytes) -> Decoded:
    """Decode Ethernet / ARP / IPv4 / TCP / UDP / ICMP (with the quoted header of errors)."""
    if len(frame) < 14:
        return Decoded("", "", 0)
    dst_mac, src_mac = _mac(frame[0:6]), _mac(frame[6:12])
    et = struct.unpack("!H", frame[12:14])[0]
    body = frame[14:]
    if et == 0x0806 and len(body) >= 28:
        op = struct.unpack("!H", body[6:8])[0]
        return Decoded(src_mac, dst_mac, et, arp_op=op, arp_hwsrc=_mac(body[8:14]),
                       arp_psrc=socket.inet_ntoa(body[14:18]),
                       arp_pdst=socket.inet_ntoa(body[24:28]))
    if et == 0x0800:
        return _decode_ip(body, src_mac, dst_mac, et)
    return Decoded(src_mac, dst_mac, et)


def _ep(ip: str | None, port: int | None) -> str:
    return f"{ip}:{port}" if port is not None else f"{ip}"


def _describe_l3(d: Decoded) -> str:
    if d.proto == 6:
        return f"TCP {_ep(d.src, d.sport)} > {_ep(d.dst, d.dport)} [{d.flags}] ttl={d.ttl}"
    if d.proto == 17:
        return f"UDP {_ep(d.src, d.sport)} > {_ep(d.dst, d.dport)} ttl={d.ttl}"
    if d.proto == 1:
        s = f"ICMP {d.src} > {d.dst} type={d.icmp_type}/{d.icmp_code} ttl={d.ttl}"
        if d.inner is not None:
            i = d.inner
            s += f" quoting [{i.l4} {_ep(i.src, i.sport)} > {_ep(i.dst, i.dport)} ttl={i.ttl}]"
        return s
    return f"IP proto={d.proto} {d.src} > {d.dst} ttl={d.ttl}"


def describe(frame: bytes, mac_names: dict[str, str] | None = None) -> str:
    """One line: ``<src mac role> > <dst mac role> <L3/L4 summary>``."""
    d = decode(frame)
    names = mac_names or {}
    head = f"{names.get(d.src_mac, d.src_mac)} > {names.get(d.dst_mac, d.dst_mac)}"
    if d.arp_op == 1:
        return f"{head} ARP who-has {d.arp_pdst} tell {d.arp_psrc}"
    if d.arp_op == 2:
        hw = names.get(d.arp_hwsrc or "", d.arp_hwsrc)
        return f"{head} ARP reply {d.arp_psrc} is-at {hw} (to {d.arp_pdst})"
    if d.src is not None:
        return f"{head} {_describe_l3(d)}"
    return f"{head} ethertype=0x{d.ethertype:04x} len={len(frame)}"


# --------------------------------------------------------------------------------------------
# the cluster


@dataclass(frozen=True)
class Obs:
    """One frame seen on one interface in one direction."""

    iface: str          # kemu naming: "node1/cbr0", "default/a/eth0", "ext/client/eth0", ...
    direction: str      # "in" | "out" (PACKET_OUTGOING -> "out")
    frame: bytes
    ts_ns: int

    @property
    def d(self) -> Decoded:
        return decode(self.frame)

    def __repr__(self) -> str:
        return f"Obs({self.iface} {self.direction} {describe(self.frame)})"


@dataclass(frozen=True)
class _Iface:
    name: str       # kemu name
    netns: str
    ifname: str
    rank: int       # tie-break for equal timestamps: bridge devices after their ports


def _deterministic_mac(label: str) -> str:
    h = hashlib.sha256(label.encode()).digest()
    return "02:fe:" + ":".join(f"{x:02x}" for x in h[:4])


def _plen(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).prefixlen


def _port_name(prefix: str, name: str) -> str:
    cand = f"{prefix}{name}"
    if len(cand) <= 15 and all(c.isalnum() or c in "-_." for c in cand):
        return cand
    return prefix + hashlib.sha256(name.encode()).hexdigest()[: 15 - len(prefix)]


def _validate(topo: dict[str, Any]) -> None:
    def need(obj: dict[str, Any], keys: Iterable[str], what: str) -> None:
        for k in keys:
            if k not in obj:
                raise HarnessError(f"topology: {what} lacks {k!r}")

    need(topo, ("node_network", "gateway", "cluster_cidr", "nodes"), "topology")
    need(topo["gateway"], ("ip", "mac"), "gateway")
    node_net = ipaddress.ip_network(topo["node_network"])
    names = set()
    for n in topo["nodes"]:
        need(n, ("name", "ip", "mac", "pod_cidr", "bridge_ip", "bridge_mac"), "node")
        if n["name"] in names:
            raise HarnessError(f"topology: duplicate node {n['name']!r}")
        names.add(n["name"])
        if ipaddress.ip_address(n["ip"]) not in node_net:
            raise HarnessError(f"topology: node {n['name']} ip {n['ip']} not in node_network")
        if ipaddress.ip_address(n["bridge_ip"]) not in ipaddress.ip_network(n["pod_cidr"]):
            raise HarnessError(f"topology: node {n['name']} bridge_ip not in pod_cidr")
    keys, veths = set(), set()
    for p in topo.get("pods", []):
        need(p, ("key", "node", "ip", "mac", "veth", "veth_mac"), "pod")
        if p["node"] not in names:
            raise HarnessError(f"topology: pod {p['key']} on unknown node {p['node']!r}")
        if p["key"] in keys:
            raise HarnessError(f"topology: duplicate pod {p['key']!r}")
        keys.add(p["key"])
        v = p["veth"]
        if not (1 <= len(v) <= 15) or v in ("eth0", "lo", "cbr0") or "/" in v or " " in v:
            raise HarnessError(f"topology: pod {p['key']} veth name {v!r} unusable")
        if (p["node"], v) in veths:
            raise HarnessError(f"topology: veth {v!r} used twice on {p['node']}")
        veths.add((p["node"], v))
    for h in topo.get("external_hosts", []):
        need(h, ("name", "ip", "mac"), "external host")


class KernelCluster:
    """The topology built from network namespaces. Use as a context manager.

    Roles (also the ``where`` of ``run``): ``node:<name>``, ``pod:<key>``, ``ext:<name>``,
    ``gateway``, ``net`` (the node-network switch). ``netns[role]`` is the netns name.
    """

    def __init__(self, topo: dict[str, Any], *, full_checksums: bool = True, rp_filter: int = 2,
                 mcast_snooping: bool = False, disable_ipv6: bool = True,
                 rcvbuf: int = 1 << 22) -> None:
        _validate(topo)
        self.topo = copy.deepcopy(topo)
        self.full_checksums = full_checksums
        self.rp_filter = rp_filter
        self.mcast_snooping = mcast_snooping
        self.disable_ipv6 = disable_ipv6
        self.rcvbuf = rcvbuf
        self.prefix = f"{RUN_PREFIX}-{next(_cluster_ids)}-"
        self.netns: dict[str, str] = {}
        self.ifaces: dict[str, _Iface] = {}
        self.mac_names: dict[str, str] = {BCAST: "bcast"}
        self.sysctl_readback: dict[str, dict[str, str | None]] = {}
        self.csum_offload: dict[str, dict[str, str]] = {}
        self.iptables_text: dict[str, str] = {}
        self.last_capture_drops = 0
        self._created: list[str] = []
        self._listeners: list[tuple[str, str, socket.socket]] = []   # (pod key, proto, sock)
        self._stop = threading.Event()
        self._echo_thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self.built = False
        self._plan()

    # ---- layout ------------------------------------------------------------------------
    def _plan(self) -> None:
        t = self.topo
        self._nodes = {n["name"]: n for n in t["nodes"]}
        self._pods = {p["key"]: p for p in t.get("pods", [])}
        self._exts = {h["name"]: h for h in t.get("external_hosts", [])}
        self.netns["net"] = self.prefix + "net"
        self.netns["gateway"] = self.prefix + "gw"
        for i, n in enumerate(self._nodes):
            self.netns[f"node:{n}"] = f"{self.prefix}n{i}"
        for i, k in enumerate(self._pods):
            self.netns[f"pod:{k}"] = f"{self.prefix}p{i}"
        for i, h in enumerate(self._exts):
            self.netns[f"ext:{h}"] = f"{self.prefix}x{i}"
        self._net_ports: dict[str, str] = {}   # role -> port name in the net netns
        used: set[str] = set()
        for role in self.netns:
            if role == "net" or role.startswith("pod:"):
                continue
            if role == "gateway":
                pname = "gw"
            elif role.startswith("node:"):
                pname = _port_name("n-", role[5:])
            else:
                pname = _port_name("x-", role[4:])
            if pname in used or pname == "br0":
                raise HarnessError(f"node-network port name clash: {pname}")
            used.add(pname)
            self._net_ports[role] = pname

        def add(name: str, role: str, ifname: str, rank: int = 0) -> None:
            self.ifaces[name] = _Iface(name, self.netns[role], ifname, rank)

        for key in self._pods:
            add(f"{key}/eth0", f"pod:{key}", "eth0")
            add(f"{key}/lo", f"pod:{key}", "lo")
        for n in self._nodes:
            for p in self._pods.values():
                if p["node"] == n:
                    add(f"{n}/{p['veth']}", f"node:{n}", p["veth"])
            add(f"{n}/cbr0", f"node:{n}", "cbr0", rank=1)
            add(f"{n}/eth0", f"node:{n}", "eth0")
            add(f"{n}/lo", f"node:{n}", "lo")
        for pname in self._net_ports.values():
            add(f"net/{pname}", "net", pname)
        add("gateway/eth0", "gateway", "eth0")
        for h in self._exts:
            add(f"ext/{h}/eth0", f"ext:{h}", "eth0")

        mn = self.mac_names
        mn[t["gateway"]["mac"].lower()] = "gateway"
        for n in self._nodes.values():
            mn[n["mac"].lower()] = f"{n['name']}/eth0"
            mn[n["bridge_mac"].lower()] = f"{n['name']}/cbr0"
        for p in self._pods.values():
            mn[p["mac"].lower()] = p["key"]
            mn[p["veth_mac"].lower()] = f"{p['node']}/{p['veth']}"
        for h in self._exts.values():
            mn[h["mac"].lower()] = f"ext/{h['name']}"

    # ---- build / teardown --------------------------------------------------------------
    def __enter__(self) -> KernelCluster:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def build(self) -> KernelCluster:
        if self.built:
            return self
        _live.add(self)
        try:
            self._tmpdir = tempfile.mkdtemp(prefix=self.prefix)
            self._create_namespaces()
            self._apply_sysctls()
            self._create_links()
            self._load_iptables()
            if self.full_checksums:
                self._no_tx_csum()
            self._start_listeners()
            # Packet timestamping is switched on lazily, from a workqueue, when the first
            # socket asks for it: under load the first frames of a run would miss their
            # receive stamp and lose their order. One unbound socket asking for stamps for
            # the whole life of the cluster keeps it on (it sends and receives nothing).
            self._ts_keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._ts_keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except BaseException:
            self.teardown()
            raise
        self.built = True
        return self

    def teardown(self) -> None:
        """Stop listeners, close sockets, delete every netns this cluster created. Idempotent."""
        self._stop.set()
        keeper = getattr(self, "_ts_keeper", None)
        if keeper is not None:
            keeper.close()
            self._ts_keeper = None
        if self._echo_thread is not None:
            self._echo_thread.join(2.0)
            self._echo_thread = None
        for _, _, s in self._listeners:
            with contextlib.suppress(OSError):
                s.close()
        self._listeners.clear()
        if self._created:
            batch = "".join(f"netns del {ns}\n" for ns in reversed(self._created))
            _run(["ip", "-force", "-batch", "-"], input=batch, check=False)
            left = set(netns_list())
            for ns in self._created:
                if ns in left:
                    _run(["ip", "netns", "del", ns], check=False)
            left = set(netns_list())
            self._created = [ns for ns in self._created if ns in left]
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self.built = False
        if not self._created:
            _live.discard(self)

    def _create_namespaces(self) -> None:
        for ns in self.netns.values():
            if not ns.startswith("kemu-"):
                raise HarnessError(f"bad netns name {ns}")
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)

    def _apply_sysctls(self) -> None:
        off = int(self.disable_ipv6)
        v6 = [("net.ipv6.conf.all.disable_ipv6", off, True),
              ("net.ipv6.conf.default.disable_ipv6", off, True)]
        rp = self.rp_filter
        for role, ns in self.netns.items():
            s = list(v6)
            if role.startswith("node:"):
                s += [("net.ipv4.ip_forward", 1, False),
                      ("net.bridge.bridge-nf-call-iptables", 1, False),
                      ("net.ipv4.conf.all.rp_filter", rp, False),
                      ("net.ipv4.conf.default.rp_filter", rp, False)]
            elif role == "net":
                # the node network is a plain switch: no netfilter on its bridge
                s += [("net.bridge.bridge-nf-call-iptables", 0, True),
                      ("net.bridge.bridge-nf-call-arptables", 0, True),
                      ("net.bridge.bridge-nf-call-ip6tables", 0, True)]
            elif role == "gateway":
                router = bool(self.topo["gateway"].get("router", False))
                s += [("net.ipv4.ip_forward", int(router), False)]
                if router:
                    s += [("net.ipv4.conf.all.send_redirects", 0, False),
                          ("net.ipv4.conf.default.send_redirects", 0, False)]
            self.sysctl_readback[role] = in_netns(ns, _sysctls, s)
            if role.startswith("node:"):
                self.sysctl_readback[role].update(in_netns(ns, lambda: {
                    k: _read_sysctl(k) for k in ("net.ipv4.conf.all.route_localnet",
                                                 "net.netfilter.nf_conntrack_tcp_be_liberal")}))

    def _batch(self, role: str, lines: list[str]) -> None:
        if lines:
            _run(["ip", "-n", self.netns[role], "-batch", "-"], input="\n".join(lines) + "\n")

    def _create_links(self) -> None:
        t = self.topo
        node_plen = _plen(t["node_network"])
        gw = t["gateway"]
        static = bool(t.get("static_neighbors", False))
        # node network switch + one veth per attached host
        snoop = int(self.mcast_snooping)
        net = [f"link add br0 address {_deterministic_mac(self.prefix + 'br0')} type bridge "
               f"mcast_snooping {snoop}", "link set br0 up"]
        macs = {"gateway": gw["mac"]}
        macs.update({f"node:{n}": v["mac"] for n, v in self._nodes.items()})
        macs.update({f"ext:{h}": v["mac"] for h, v in self._exts.items()})
        for role, pname in self._net_ports.items():
            net += [f"link add {pname} address {_deterministic_mac(self.prefix + pname)} "
                    f"type veth peer name eth0 address {macs[role]} netns {self.netns[role]}",
                    f"link set {pname} master br0", f"link set {pname} up"]
        self._batch("net", net)

        # who is on the node network (for static neighbours)
        l2 = [(gw["ip"], gw["mac"], "gateway")]
        l2 += [(v["ip"], v["mac"], f"node:{n}") for n, v in self._nodes.items()]
        l2 += [(v["ip"], v["mac"], f"ext:{h}") for h, v in self._exts.items()]

        def neigh_l2(me: str) -> list[str]:
            if not static:
                return []
            return [f"neigh replace {ip} lladdr {mac} dev eth0 nud permanent"
                    for ip, mac, role in l2 if role != me]

        for name, n in self._nodes.items():
            role = f"node:{name}"
            plen = _plen(n["pod_cidr"])
            lines = ["link set lo up",
                     f"link add cbr0 address {n['bridge_mac']} type bridge "
                     f"mcast_snooping {snoop}",
                     f"addr add {n['bridge_ip']}/{plen} dev cbr0",
                     "link set cbr0 up",
                     f"addr add {n['ip']}/{node_plen} dev eth0",
                     "link set eth0 up"]
            for p in self._pods.values():
                if p["node"] != name:
                    continue
                v = p["veth"]
                lines += [f"link add {v} address {p['veth_mac']} type veth peer name eth0 "
                          f"address {p['mac']} netns {self.netns['pod:' + p['key']]}",
                          f"link set {v} master cbr0",
                          f"link set dev {v} type bridge_slave hairpin on",
                          f"link set {v} up"]
                if static:
                    lines.append(f"neigh replace {p['ip']} lladdr {p['mac']} dev cbr0 "
                                 "nud permanent")
            for other in self._nodes.values():
                if other["name"] != name:
                    lines.append(f"route add {other['pod_cidr']} via {other['ip']} dev eth0")
            if n.get("default_route", True):
                lines.append(f"route add default via {gw['ip']} dev eth0")
            lines += neigh_l2(role)
            self._batch(role, lines)

        for key, p in self._pods.items():
            n = self._nodes[p["node"]]
            lines = ["link set lo up", f"addr add {p['ip']}/{_plen(n['pod_cidr'])} dev eth0",
                     "link set eth0 up", f"route add default via {n['bridge_ip']} dev eth0"]
            if static:
                lines.append(f"neigh replace {n['bridge_ip']} lladdr {n['bridge_mac']} "
                             "dev eth0 nud permanent")
                lines += [f"neigh replace {q['ip']} lladdr {q['mac']} dev eth0 nud permanent"
                          for q in self._pods.values()
                          if q["node"] == p["node"] and q["key"] != key]
            self._batch(f"pod:{key}", lines)

        router = []
        if gw.get("router", False):
            router = [f"route add {n['pod_cidr']} via {n['ip']} dev eth0"
                      for n in self._nodes.values()]
            router.append("route add blackhole default")  # the outside world: silence
        self._batch("gateway", ["link set lo up", f"addr add {gw['ip']}/{node_plen} dev eth0",
                                "link set eth0 up"] + neigh_l2("gateway") + router)
        for h, v in self._exts.items():
            self._batch(f"ext:{h}", ["link set lo up", f"addr add {v['ip']}/{node_plen} dev eth0",
                                     "link set eth0 up", f"route add default via {gw['ip']}"]
                        + neigh_l2(f"ext:{h}"))

    def load_rules(self, topo: dict[str, Any] | None = None) -> None:
        """Replace every node's iptables rules with kube-proxy's for ``topo`` (a topology of
        the same nodes, pods and hosts with other Services; None: the cluster's own again).
        Conntrack entries stay, as when kube-proxy resyncs."""
        self._load_iptables(self.topo if topo is None else topo)

    def _load_iptables(self, topo: dict[str, Any] | None = None) -> None:
        assert self._tmpdir is not None
        for name in self._nodes:
            text = kube_proxy_rules(self.topo if topo is None else topo, name)
            path = os.path.join(self._tmpdir, f"iptables-{name}.rules")
            with open(path, "w") as f:
                f.write(text)
            _run(["ip", "netns", "exec", self.netns[f"node:{name}"], "iptables-restore", path])
            self.iptables_text[name] = text

    def _no_tx_csum(self) -> None:
        by_ns: dict[str, list[str]] = {}
        for i in self.ifaces.values():
            if i.ifname != "lo":
                by_ns.setdefault(i.netns, []).append(i.ifname)
        by_ns.setdefault(self.netns["net"], []).append("br0")
        for ns, names in by_ns.items():
            self.csum_offload[ns] = in_netns(ns, _disable_tx_csum, names)

    def _start_listeners(self) -> None:
        for key, p in self._pods.items():
            if p.get("listen"):
                for proto, s in in_netns(self.netns[f"pod:{key}"], _open_listeners, p["listen"]):
                    self._listeners.append((key, proto, s))
        for h, v in self._exts.items():
            if v.get("listen"):
                for proto, s in in_netns(self.netns[f"ext:{h}"], _open_listeners, v["listen"]):
                    self._listeners.append((f"ext:{h}", proto, s))
        udp = [s for _, proto, s in self._listeners if proto == "udp"]
        if udp:
            self._stop.clear()
            self._echo_thread = threading.Thread(target=self._udp_echo, args=(udp,),
                                                 name=f"{self.prefix}udp-echo", daemon=True)
            self._echo_thread.start()

    def _udp_echo(self, socks: list[socket.socket]) -> None:
        import select

        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(socks, [], [], 0.05)
            except (OSError, ValueError):
                return
            for s in ready:
                with contextlib.suppress(OSError):
                    data, addr = s.recvfrom(65535)
                    s.sendto(data, addr)

    # ---- readiness ---------------------------------------------------------------------
    def settle(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until every veth is UP and every bridge port is forwarding."""
        deadline = time.monotonic() + timeout
        pending: list[str] = []
        while True:
            pending = self._not_ready()
            if not pending:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"settle: not ready after {timeout}s: {pending}")
            time.sleep(0.02)

    def _not_ready(self) -> list[str]:
        pending: list[str] = []
        by_ns: dict[str, list[_Iface]] = {}
        for i in self.ifaces.values():
            by_ns.setdefault(i.netns, []).append(i)
        for ns, ifs in by_ns.items():
            links = {x["ifname"]: x for x in json.loads(_run(["ip", "-n", ns, "-j", "link",
                                                              "show"]) or "[]")}
            ports = {x["ifname"]: x for x in json.loads(
                _run(["bridge", "-n", ns, "-j", "link", "show"]) or "[]")}
            has_ports = {x.get("master") for x in ports.values()}
            for i in ifs:
                if i.ifname == "lo":
                    continue
                link = links.get(i.ifname)
                if link is None:
                    pending.append(f"{i.name}: missing")
                    continue
                if i.ifname in ("cbr0", "br0") and i.ifname not in has_ports:
                    continue        # a bridge with no ports has no carrier; nothing crosses it
                if link.get("operstate") != "UP":
                    pending.append(f"{i.name}: {link.get('operstate')}")
                if i.ifname in ports and ports[i.ifname].get("state") != "forwarding":
                    pending.append(f"{i.name}: port {ports[i.ifname].get('state')}")
        return pending

    # ---- injection and capture ---------------------------------------------------------
    def _tx_target(self, where: str) -> tuple[str, str]:
        if where.startswith("iface:"):
            i = self.ifaces.get(where[6:])
            if i is None:
                raise HarnessError(f"unknown interface {where[6:]!r}")
            return i.netns, i.ifname
        if where in ("gateway",) or where.split(":", 1)[0] in ("pod", "ext", "node"):
            if where not in self.netns:
                raise HarnessError(f"unknown injection point {where!r}")
            return self.netns[where], "eth0"
        raise HarnessError(f"unknown injection point {where!r}")

    def run(self, injections: Sequence[tuple[str, Any]], wait: float = 0.3,
            gap: float = 0.02, ifaces: Iterable[str] | None = None) -> list[Obs]:
        """Capture every interface, send each (where, frame) in order, wait, return ``Obs``.

        ``frame`` is bytes or anything ``bytes()`` accepts (a Scapy packet); for ``where``
        ``sock:<netns role>`` (``sock:node:node1``) it is ``(dst, dport, sport)``: a TCP socket
        of that namespace's own stack connects (non-blocking, open until the capture ends).
        ``wait`` and ``gap`` are seconds (bounded). ``ifaces`` restricts capture to those kemu
        interface names.
        """
        if not self.built:
            raise HarnessError("run() before build()")
        if not (0 <= wait <= 30 and 0 <= gap <= 5):
            raise HarnessError("wait must be within [0, 30] s and gap within [0, 5] s")
        wanted = [self.ifaces[n] for n in ifaces] if ifaces is not None else list(
            self.ifaces.values())
        caps: list[tuple[_Iface, socket.socket]] = []
        txs: dict[str, socket.socket] = {}
        clients: list[socket.socket] = []
        try:
            by_ns: dict[str, list[_Iface]] = {}
            for i in wanted:
                by_ns.setdefault(i.netns, []).append(i)
            for ns, ifs in by_ns.items():
                socks = in_netns(ns, _open_capture_sockets, [i.ifname for i in ifs], self.rcvbuf)
                caps.extend(zip(ifs, socks, strict=True))
            for where, _ in injections:
                if where not in txs and not where.startswith("sock:"):
                    ns, ifname = self._tx_target(where)
                    txs[where] = in_netns(ns, _open_tx_socket, ifname)
            for k, (where, frame) in enumerate(injections):
                if k:
                    time.sleep(gap)
                if where.startswith("sock:"):  # a process's connect(): (dst, dport, sport)
                    if where[5:] not in self.netns:
                        raise HarnessError(f"unknown injection point {where!r}")
                    clients.append(in_netns(self.netns[where[5:]], _tcp_connect, *frame))
                else:
                    txs[where].send(bytes(frame))
            time.sleep(wait)
            return self._drain(caps)
        finally:
            for _, s in caps:
                s.close()
            for s in txs.values():
                s.close()
            for s in clients:
                s.close()

    def learn_macs(self, roles: Iterable[str] | None = None, wait: float = 0.05) -> None:
        """Teach every bridge (cbr0s, br0) where each host's MAC lives, without IP traffic.

        Each role (default: every pod, node, external host and the gateway) sends one broadcast
        frame with the local-experimental EtherType 0x88b5 from its eth0. Bridges learn the
        source MAC on the ingress port; IP stacks, ARP tables and conntrack are untouched.
        A real cluster learns the same from ordinary traffic; tests call this to make the first
        frame of a scenario unicast instead of flooded.
        """
        if roles is None:
            roles = [r for r in self.netns if r != "net"]
        macs = {f"pod:{k}": p["mac"] for k, p in self._pods.items()}
        macs.update({f"node:{n}": v["mac"] for n, v in self._nodes.items()})
        macs.update({f"ext:{h}": v["mac"] for h, v in self._exts.items()})
        macs["gateway"] = self.topo["gateway"]["mac"]
        frames = []
        for role in roles:
            src = bytes.fromhex(macs[role].replace(":", ""))
            frames.append((role, b"\xff" * 6 + src + b"\x88\xb5" + b"kemu-learn".ljust(46, b"\0")))
        self.run(frames, wait=wait, gap=0.0, ifaces=[])

    def _drain(self, caps: list[tuple[_Iface, socket.socket]]) -> list[Obs]:
        rows: list[tuple[int, int, int, Obs]] = []
        seq = 0
        drops = 0
        anc = socket.CMSG_SPACE(16)
        for iface, s in caps:
            while True:
                try:
                    data, ancdata, _flags, addr = s.recvmsg(65536, anc)
                except BlockingIOError:
                    break
                ts = 0
                for level, typ, cdata in ancdata:
                    if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cdata) >= 16:
                        sec, nsec = struct.unpack("qq", cdata[:16])
                        ts = sec * 1_000_000_000 + nsec
                direction = "out" if addr[2] == PACKET_OUTGOING else "in"
                rows.append((ts, iface.rank, seq, Obs(iface.name, direction, data, ts)))
                seq += 1
            st = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            drops += struct.unpack("II", st)[1]
        self.last_capture_drops = drops
        if drops:
            raise HarnessError(f"capture sockets dropped {drops} frames (raise rcvbuf)")
        rows.sort(key=lambda r: r[:3])
        return [r[3] for r in rows]

    def format(self, obs: Iterable[Obs]) -> str:
        """Human-readable table of observations, MACs named by role."""
        lines = []
        t0 = None
        for o in obs:
            t0 = o.ts_ns if t0 is None else t0
            lines.append(f"{(o.ts_ns - t0) / 1000:9.1f}us {o.iface:28s} {o.direction:3s} "
                         f"{describe(o.frame, self.mac_names)}")
        return "\n".join(lines)

    # ---- state readers -----------------------------------------------------------------
    def _role_ns(self, role: str) -> str:
        if role in self.netns:
            return self.netns[role]
        if f"node:{role}" in self.netns:
            return self.netns[f"node:{role}"]
        raise HarnessError(f"unknown node/role {role!r}")

    def conntrack(self, node: str) -> list[dict[str, Any]]:
        """Conntrack entries of a node, parsed from /proc/net/nf_conntrack (or ``conntrack -L``)."""
        ns = self._role_ns(node)
        text = in_netns(ns, _read_proc_net, "nf_conntrack")
        if text is None:
            if shutil.which("conntrack") is None:
                raise HarnessError("no /proc/net/nf_conntrack and no conntrack tool")
            text = _run(["ip", "netns", "exec", ns, "conntrack", "-L"], check=False)
        return [e for e in (parse_conntrack_line(line) for line in text.splitlines()) if e]

    def fdb(self, node: str, bridge: str = "cbr0") -> list[dict[str, Any]]:
        """``bridge fdb show br cbr0`` (JSON) for a node (or role 'net' with bridge 'br0')."""
        return json.loads(_run(["bridge", "-n", self._role_ns(node), "-j", "fdb", "show", "br",
                                bridge]) or "[]")

    def neigh(self, role: str) -> list[dict[str, Any]]:
        """``ip neigh show`` (JSON) of a node or any role."""
        return json.loads(_run(["ip", "-n", self._role_ns(role), "-j", "neigh", "show"]) or "[]")

    def iptables_save(self, node: str, counters: bool = True) -> str:
        cmd = ["ip", "netns", "exec", self._role_ns(node), "iptables-save"]
        return _run(cmd + (["-c"] if counters else []))

    def exec(self, role: str, *cmd: str, timeout: float = 10.0, check: bool = True) -> str:
        """Run a command inside a role's netns (bounded)."""
        return _run(["ip", "netns", "exec", self._role_ns(role), *cmd], timeout=timeout,
                    check=check)

    def sysctl(self, role: str, key: str) -> str | None:
        return in_netns(self._role_ns(role), _read_sysctl, key)


#: The brief's name for the builder; same object.
Topology = KernelCluster


def parse_conntrack_line(line: str) -> dict[str, Any] | None:
    """Parse one /proc/net/nf_conntrack (or ``conntrack -L``) line into a dict."""
    toks = line.split()
    if not toks:
        return None
    i = 0
    e: dict[str, Any] = {"flags": []}
    if toks[0] in ("ipv4", "ipv6"):
        e["family"] = toks[0]
        i = 2
    e["proto"] = toks[i]
    e["timeout"] = int(toks[i + 2])
    i += 3
    if i < len(toks) and "=" not in toks[i] and not toks[i].startswith("["):
        e["state"] = toks[i]
        i += 1
    tuples: list[dict[str, Any]] = []
    for tok in toks[i:]:
        if tok.startswith("["):
            e["flags"].append(tok.strip("[]"))
        elif "=" in tok:
            k, v = tok.split("=", 1)
            if k == "src":
                tuples.append({})
            if k in ("src", "dst", "sport", "dport", "type", "code", "id") and tuples and \
                    len(tuples) <= 2 and k not in tuples[-1]:
                tuples[-1][k] = int(v) if k != "src" and k != "dst" else v
            else:
                e[k] = int(v) if v.isdigit() else v
    if len(tuples) >= 1:
        e["orig"] = tuples[0]
    if len(tuples) >= 2:
        e["reply"] = tuples[1]
    return e


def example_topology() -> dict[str, Any]:
    """The scenario cluster: 3 nodes, pods a,b,d on node1, c on node2, client, gateway, services.

    node3 has no pods and (for the no-route scenario) no default route.
    """
    def mac(x: int, y: int) -> str:
        return f"02:00:00:00:{x:02x}:{y:02x}"

    nodes = []
    for i in range(3):
        nodes.append({"name": f"node{i + 1}", "ip": f"172.18.0.{i + 2}", "mac": mac(0x10, i + 2),
                      "pod_cidr": f"10.244.{i}.0/24", "bridge_ip": f"10.244.{i}.1",
                      "bridge_mac": mac(0xB0, i + 1)})
    nodes[2]["default_route"] = False

    def pod(name: str, node: int, host: int, n: int, listen: list[list[Any]]) -> dict[str, Any]:
        return {"key": f"default/{name}", "node": f"node{node}", "ip": f"10.244.{node - 1}.{host}",
                "mac": mac(0xAA, n), "veth": f"veth{name}{n:02d}", "veth_mac": mac(0xEE, n),
                "listen": listen}

    web = [["tcp", 8080], ["udp", 53]]
    pods = [pod("a", 1, 2, 1, web), pod("b", 1, 3, 2, web), pod("d", 1, 4, 3, []),
            pod("c", 2, 2, 4, web)]
    a, b, c = "10.244.0.2", "10.244.0.3", "10.244.1.2"

    def svc(name: str, ip: str, eps: list[str], node_port: int | None = None) -> dict[str, Any]:
        return {"key": f"default/{name}:http", "cluster_ip": ip, "port": 80, "protocol": "tcp",
                "node_port": node_port, "endpoints": [{"ip": e, "port": 8080} for e in eps]}

    return {
        "node_network": "172.18.0.0/24",
        "gateway": {"ip": "172.18.0.1", "mac": mac(0, 1)},
        "cluster_cidr": "10.244.0.0/16",
        "service_cidr": "10.96.0.0/12",
        "nodes": nodes,
        "pods": pods,
        "external_hosts": [{"name": "client", "ip": "172.18.0.100", "mac": mac(0, 0x64),
                            "listen": []}],
        "services": [
            svc("svc-a", "10.96.0.10", [a]),
            svc("svc-b", "10.96.0.11", [b]),
            svc("svc-c", "10.96.0.12", [c]),
            svc("svc-two", "10.96.0.13", [b, c]),
            svc("svc-none", "10.96.0.14", []),
            svc("np-local", "10.96.0.20", [a], node_port=30080),
            svc("np-remote", "10.96.0.21", [c], node_port=30081),
            svc("np-none", "10.96.0.22", [], node_port=30082),
        ],
        "static_neighbors": True,
    }
