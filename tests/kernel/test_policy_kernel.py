"""NetworkPolicy, kemu against the Linux kernel: the same cluster, the same policies rendered as
iptables rules the way kube-router writes them, the same probes, verdict by verdict.

The kernel cluster is the upstream e2e model (``tests/data/netpol/model.yaml``: namespaces x,
y, z, pods a, b, c listening on 80 and 81, TCP and UDP) plus a DNS pod
(``kube-system/dns``, 53 TCP and UDP), built once per module in network namespaces with
``kernel_topology`` (same nodes, addresses, MACs, listeners: ``tests/kernel/netns.py``).

Policies become per-node filter rules in kube-router's shape (its
``pkg/controllers/netpol``: ``KUBE-ROUTER-FORWARD``, ``KUBE-POD-FW-*``, ``KUBE-NWPLCY-*``),
loaded with ``iptables-restore --noflush`` (declared chains are flushed and rewritten on every
sync, as kube-router's full syncs do):

- ``FORWARD`` jumps first (``-I FORWARD 1``) to ``KUBE-ROUTER-FORWARD``, which sends traffic
  to or from each pod of this node to that pod's ``KUBE-POD-FW-<hash>`` chain, once with
  ``-m physdev --physdev-is-bridged`` (pod-to-pod traffic on one node crosses the bridge:
  br_netfilter hands it to FORWARD) and once without (routed traffic from other nodes);
- a pod chain accepts ``RELATED,ESTABLISHED`` first (replies and connections that were open
  before a policy change keep flowing: conntrack), drops ``INVALID``, accepts traffic from the
  node itself (``--src-type LOCAL``: kubelet probes, P-9), then jumps to the policy chains of
  the policies selecting the pod (``-d pod`` for ingress, ``-s pod`` for egress); a policy
  chain MARKs 0x10000 what a rule allows; an isolated pod drops what is left unmarked (P-1,
  P-2: default deny per direction; Calico's and kemu's DROP, where kube-router REJECTs:
  DIFFERENCES.md), and the mark is cleared between the two directions;
- peers are pod IPs (kube-router keeps them in ipsets; one rule per address here), ipBlock is a
  sub-chain that RETURNs for each ``except`` before MARKing the CIDR; ports are ``-p proto
  --dport N[:endPort]``, named ports resolved on each destination pod (P-7).

Probes are real sockets in each source pod's netns (a TCP ``connect`` and a UDP datagram with
its echo), all at once with one timeout: connected / answered = ``.``, ECONNREFUSED (RST or
ICMP port unreachable) = ``R``, nothing before the timeout = ``X``. kemu's side is
``kemu policy matrix`` (``kemu.frontend.policy_cmd.matrix``) on each data-plane backend.
Needs root, ``ip`` and ``iptables-restore`` with the physdev and addrtype matches; skipped
otherwise.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kemu._backend import IMPLEMENTATIONS
from kemu.control.cluster import Cluster, load_cluster
from kemu.control.model import NetworkPolicy, Pod, PolicyPeer, PolicyPort
from kemu.control.selectors import matches
from kemu.frontend.api import EmulatedCluster
from kemu.frontend.policy_cmd import Case, dns_query, matrix

from .netns import KernelCluster, chain_hash, in_netns, missing_for
from .topology import kernel_topology

MODEL = Path(__file__).resolve().parents[1] / "data" / "netpol" / "model.yaml"
DNS_POD = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "dns", "namespace": "kube-system",
                        "labels": {"k8s-app": "kube-dns"}},
           "spec": {"nodeName": "node2", "containers": [{"name": "coredns", "ports": [
               {"name": "dns", "containerPort": 53, "protocol": "UDP"},
               {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}]}}
MARK = "0x10000/0x10000"
TIMEOUT = 1.0  # seconds a probe waits for its answer in the kernel
NS_NAME = "kubernetes.io/metadata.name"


def _skip_reason() -> str | None:
    why = missing_for("kernel policy differential",
                      ("ip", "bridge", "iptables", "iptables-restore"))
    if why is None and not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
        return "br_netfilter is not loaded (bridged pod traffic would bypass iptables)"
    return why


_WHY_SKIP = _skip_reason()
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(_WHY_SKIP is not None, reason=_WHY_SKIP or "")]


# ------------------------------------------------------------------ kube-router's rules
def _peer_pods(cluster: Cluster, pol: NetworkPolicy, peer: PolicyPeer) -> list[Pod]:
    """Pods a podSelector / namespaceSelector peer selects (P-5; hostNetwork pods never,
    P-12)."""
    labels = {ns.name: {**ns.labels, NS_NAME: ns.name} for ns in cluster.namespaces.values()}
    out = []
    for pod in cluster.pods:
        if pod.host_network:
            continue
        if peer.namespace_selector is None:
            in_ns = pod.namespace == pol.namespace
        else:
            in_ns = matches(peer.namespace_selector, labels.get(pod.namespace, {}))
        if in_ns and (peer.pod_selector is None or matches(peer.pod_selector, pod.labels)):
            out.append(pod)
    return out


def _port_matches(ports: list[PolicyPort], pod: Pod | None) -> list[str]:
    """``-p proto --dport ..`` per port entry; a named port resolved on ``pod`` (the
    destination), none when it does not declare it. SCTP entries match no probe (kemu probes
    TCP and UDP only): left out. Empty list: every port (``[""]``)."""
    if not ports:
        return [""]
    out = []
    for p in ports:
        proto = p.protocol.lower()
        if proto == "sctp":
            continue
        if p.port is None:
            out.append(f"-p {proto}")
            continue
        if isinstance(p.port, str):
            if pod is None:
                continue
            num = pod.find_port(p.port, p.protocol)
            if num is None:
                continue
            out.append(f"-p {proto} -m {proto} --dport {num}")
            continue
        rng = f"{p.port}:{p.end_port}" if p.end_port else f"{p.port}"
        out.append(f"-p {proto} -m {proto} --dport {rng}")
    return out


def _targets(cluster: Cluster, pol: NetworkPolicy) -> list[Pod]:
    return [p for p in cluster.pods if not p.host_network and p.namespace == pol.namespace
            and matches(pol.pod_selector, p.labels)]


def _policy_chain(cluster: Cluster, pol: NetworkPolicy, direction: str
                  ) -> tuple[str, list[str], list[str]]:
    """(chain, its rules, sub-chains) of one policy in one direction."""
    name = f"KUBE-NWPLCY-{chain_hash(pol.key, direction)}"
    rules: list[str] = []
    subs: list[str] = []
    me, peer_flag = ("-d", "-s") if direction == "ingress" else ("-s", "-d")
    allow = f"-j MARK --set-xmark {MARK}"
    done = f"-A {name} -m mark --mark {MARK} -j RETURN"
    comment = f'-m comment --comment "{pol.key} {direction}"'
    for r, rule in enumerate(pol.ingress if direction == "ingress" else pol.egress):
        for t in _targets(cluster, pol):
            tgt = f"{me} {t.ip}/32"
            if not rule.peers:  # every peer (P-4)
                if direction == "ingress":
                    for pm in _port_matches(rule.ports, t):
                        rules += [f"-A {name} {comment} {tgt} {pm} {allow}", done]
                elif any(isinstance(p.port, str) for p in rule.ports):
                    # a named egress port: resolved on every pod declaring it (kube-router)
                    for dst in cluster.pods:
                        if dst.host_network:
                            continue
                        for pm in _port_matches(rule.ports, dst):
                            rules += [f"-A {name} {comment} {tgt} -d {dst.ip}/32 {pm} {allow}",
                                      done]
                    for pm in _port_matches([p for p in rule.ports
                                             if not isinstance(p.port, str)], None):
                        if pm:
                            rules += [f"-A {name} {comment} {tgt} {pm} {allow}", done]
                else:
                    for pm in _port_matches(rule.ports, None):
                        rules += [f"-A {name} {comment} {tgt} {pm} {allow}", done]
                continue
            for k, peer in enumerate(rule.peers):
                if peer.ip_block is not None:
                    sub = f"KUBE-NWPLCY-{chain_hash(pol.key, direction, str(r), str(k))}"
                    if sub not in subs:
                        subs.append(sub)
                        for ex in peer.ip_block.except_:
                            rules.append(f"-A {sub} {peer_flag} {ex} -j RETURN")
                        rules.append(f"-A {sub} {peer_flag} {peer.ip_block.cidr} {allow}")
                    for pm in _port_matches(rule.ports, t if direction == "ingress" else None):
                        rules += [f"-A {name} {comment} {tgt} {pm} -j {sub}", done]
                    continue
                for pod in _peer_pods(cluster, pol, peer):
                    dst = t if direction == "ingress" else pod
                    for pm in _port_matches(rule.ports, dst):
                        rules += [f"-A {name} {comment} {tgt} {peer_flag} {pod.ip}/32 {pm} "
                                  f"{allow}", done]
    return name, rules, subs


def policy_rules(cluster: Cluster, node: str) -> str:
    """``iptables-restore --noflush`` input: kube-router's filter chains on ``node``."""
    chains = ["KUBE-ROUTER-FORWARD"]
    rules: list[str] = []
    for pol in cluster.policies:
        for direction, typ in (("ingress", "Ingress"), ("egress", "Egress")):
            if typ in pol.policy_types:
                name, body, subs = _policy_chain(cluster, pol, direction)
                chains += [name, *subs]
                rules += body
    for pod in cluster.pods:
        if pod.host_network or pod.node_name != node:
            continue
        fw = f"KUBE-POD-FW-{chain_hash(pod.key)}"
        chains.append(fw)
        ip = f"{pod.ip}/32"
        c = f'-m comment --comment "{pod.key}"'
        for flag in ("-d", "-s"):
            rules.append(f"-A KUBE-ROUTER-FORWARD {c} -m physdev --physdev-is-bridged "
                         f"{flag} {ip} -j {fw}")
            rules.append(f"-A KUBE-ROUTER-FORWARD {c} {flag} {ip} -j {fw}")
        rules += [f"-A {fw} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                  f"-A {fw} -m conntrack --ctstate INVALID -j DROP",
                  f"-A {fw} -d {ip} -m addrtype --src-type LOCAL -j ACCEPT"]
        for direction, typ, flag in (("ingress", "Ingress", "-d"), ("egress", "Egress", "-s")):
            selecting = [p for p in cluster.policies if typ in p.policy_types
                         and p.namespace == pod.namespace and matches(p.pod_selector, pod.labels)]
            for pol in selecting:
                rules.append(f"-A {fw} {flag} {ip} -j "
                             f"KUBE-NWPLCY-{chain_hash(pol.key, direction)}")
            if selecting:  # isolated in this direction (P-1): what no rule marked is dropped
                rules.append(f'-A {fw} -m comment --comment "default deny {direction} of '
                             f'{pod.key}" {flag} {ip} -m mark ! --mark {MARK} -j DROP')
            rules.append(f"-A {fw} -j MARK --set-xmark 0x0/0x10000")
    lines = ["*filter", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT"]
    return "\n".join(lines) + "\n"


def load_policy_rules(kc: KernelCluster, cluster: Cluster) -> None:
    """Render and load every node's rules (a kube-router sync)."""
    for node in cluster.nodes:
        text = policy_rules(cluster, node.name)
        _restore(kc, node.name, text)
        have = kc.exec(node.name, "iptables", "-S", "FORWARD")
        if "KUBE-ROUTER-FORWARD" not in have:
            kc.exec(node.name, "iptables", "-I", "FORWARD", "1", "-m", "comment", "--comment",
                    "kube-router netpol", "-j", "KUBE-ROUTER-FORWARD")


def _restore(kc: KernelCluster, node: str, text: str) -> None:
    import subprocess

    ns = kc.netns[f"node:{node}"]
    p = subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "--noflush"],
                       input=text, capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        raise AssertionError(f"iptables-restore on {node} failed: {p.stderr.strip()}\n{text}")


# ------------------------------------------------------------------ probes in the kernel
def _probe_from_here(targets: list[tuple[str, int, str]], payload53: bytes,
                     timeout: float) -> list[str]:
    """Runs inside a pod's netns: one socket per target, all at once; the mark of each."""
    socks: list[socket.socket] = []
    marks: list[str | None] = []
    for ip, port, proto in targets:
        if proto == "TCP":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.setblocking(False)
            err = s.connect_ex((ip, port))
            marks.append("." if err == 0 else "R" if err == errno.ECONNREFUSED else None)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.connect((ip, port))
            s.send(payload53 if port == 53 else b"kemu-policy-probe")
            marks.append(None)
        socks.append(s)
    deadline = time.monotonic() + timeout
    try:
        while any(m is None for m in marks):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wr = [s for s, m, t in zip(socks, marks, targets, strict=True)
                  if m is None and t[2] == "TCP"]
            rd = [s for s, m, t in zip(socks, marks, targets, strict=True)
                  if m is None and t[2] == "UDP"]
            r, w, _ = select.select(rd, wr, [], min(left, 0.05))
            for n, s in enumerate(socks):
                if marks[n] is not None:
                    continue
                if s in w:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    marks[n] = "." if err == 0 else "R" if err == errno.ECONNREFUSED else "?"
                elif s in r:
                    try:
                        s.recv(65535)
                        marks[n] = "."
                    except ConnectionRefusedError:
                        marks[n] = "R"
                    except OSError:
                        marks[n] = "?"
    finally:
        for s in socks:
            s.close()
    return [m if m is not None else "X" for m in marks]


def kernel_matrix(kc: KernelCluster, cluster: Cluster, pods: list[str], cases: list[Case]
                  ) -> dict[tuple[str, str, Case], str]:
    ips = {p.key: str(p.ip) for p in cluster.pods}
    payload = dns_query(cluster.config.dns_domain)
    jobs = {src: [(ips[dst], c.port, c.protocol) for c in cases for dst in pods] for src in pods}
    with ThreadPoolExecutor(max_workers=len(pods)) as pool:
        futures = {src: pool.submit(in_netns, kc.netns[f"pod:{src}"], _probe_from_here,
                                    targets, payload, TIMEOUT, timeout=TIMEOUT + 10)
                   for src, targets in jobs.items()}
        results = {src: f.result() for src, f in futures.items()}
    out = {}
    for src in pods:
        marks = iter(results[src])
        for c in cases:
            for dst in pods:
                out[(src, dst, c)] = next(marks)
    return out


# ------------------------------------------------------------------ the cluster
@dataclass
class Kernel:
    kc: KernelCluster
    base: Cluster


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    base = load_cluster(MODEL, DNS_POD)
    topo = kernel_topology(EmulatedCluster(base, backend="python"))
    kc = KernelCluster(topo)
    try:
        kc.build()
        kc.settle()
        yield Kernel(kc, base)
    finally:
        kc.teardown()


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _cluster(docs: list[dict[str, Any]]) -> Cluster:
    return load_cluster(MODEL, DNS_POD, *docs)


@dataclass
class KScenario:
    name: str
    policies: str   # YAML
    cases: list[Case]
    pods: list[str] = field(default_factory=lambda: ["x/a", "x/b", "y/a", "z/a",
                                                    "kube-system/dns"])


def _ip(key: str) -> str:
    ns, _, name = key.partition("/")
    return str(load_cluster(MODEL).pod(ns, name).ip)


def _np(name: str, ns: str, spec: str) -> str:
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n")


T80, T81, U80, U81 = Case(80, "TCP"), Case(81, "TCP"), Case(80, "UDP"), Case(81, "UDP")
XB = _ip("x/b")
SCENARIOS = [
    KScenario("no policy", "", [T80, U80]),
    KScenario("deny-all ingress", _np("deny-all", "x", "  podSelector: {}\n"
                                      "  policyTypes: [Ingress]\n"), [T80, U80]),
    KScenario("deny-all ingress and egress", _np("deny-all", "x", "  podSelector: {}\n"
                                                 "  policyTypes: [Ingress, Egress]\n"),
              [T80, U81]),
    KScenario("allow from namespace", _np("deny-all", "x", "  podSelector: {}\n"
                                          "  policyTypes: [Ingress]\n")
              + _np("allow-from-y", "x", "  podSelector: {matchLabels: {pod: a}}\n"
                    "  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n"),
              [T80, U80]),
    KScenario("pod AND namespace selector", _np(
        "allow-ya", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
        "  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: "
        "{matchLabels: {pod: a}}}]\n"), [T80],
        ["x/a", "x/b", "y/a", "y/b", "z/a"]),
    KScenario("ipBlock with except (egress)", _np(
        "cidr-except", "x", "  podSelector: {matchLabels: {pod: a}}\n  egress:\n"
        f"  - to: [{{ipBlock: {{cidr: 0.0.0.0/4, except: [{XB}/32]}}}}]\n"), [T80, U80],
        ["x/a", "x/b", "x/c", "y/a"]),
    KScenario("ipBlock ingress from a pod CIDR", _np(
        "cidr-in", "y", "  podSelector: {}\n  ingress:\n"
        "  - from: [{ipBlock: {cidr: 10.244.0.0/24}}]\n"), [T80],
        ["x/a", "x/b", "y/a", "y/b", "z/a"]),
    KScenario("named port", _np("named-81", "x", "  podSelector: {}\n  ingress:\n"
                                "  - ports: [{port: serve-81-tcp}]\n"), [T80, T81, U81]),
    KScenario("endPort range", _np("range", "x", "  podSelector: {}\n  ingress:\n"
                                   "  - ports: [{protocol: UDP, port: 70, endPort: 80}]\n"),
              [U80, U81, T80]),
    KScenario("egress deny with DNS allowed", _np(
        "deny-egress-dns", "x", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n"
        "  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "
        "kube-system}}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]\n"
        "    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]\n"),
        [Case(53, "UDP"), Case(53, "TCP"), T80]),
    KScenario("egress to one namespace on a named port", _np(
        "egress-y-80", "x", "  podSelector: {matchLabels: {pod: a}}\n  egress:\n"
        "  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]\n"
        "    ports: [{port: serve-80-tcp}]\n"), [T80, T81]),
    KScenario("UDP-only rule does not allow TCP", _np(
        "udp-81", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
        "  - ports: [{port: 81, protocol: UDP}]\n"), [T81, U81]),
]


def _backends() -> list[str]:
    return sorted(IMPLEMENTATIONS)


def _compare(kernel: Kernel, docs: list[dict[str, Any]], pods: list[str], cases: list[Case],
             emus: dict[str, EmulatedCluster] | None = None) -> list[str]:
    cluster = _cluster(docs)
    load_policy_rules(kernel.kc, cluster)
    want = kernel_matrix(kernel.kc, cluster, pods, cases)
    problems = []
    for backend in _backends():
        emu = emus[backend] if emus else EmulatedCluster(_cluster(docs), backend=backend)
        m, _ = matrix(emu, pods=pods, ports=sorted({c.port for c in cases}),
                      protocols=sorted({c.protocol for c in cases}))
        for key, mark in sorted(want.items(), key=str):
            got = m.results[key]
            if got.mark != mark:
                s, d, c = key
                problems.append(f"{backend}: {c.text()} {s} -> {d}: kernel {mark}, kemu "
                                f"{got.mark} ({got.reason})")
    return problems


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name.replace(" ", "-") for s in SCENARIOS])
def test_policy_verdicts_match_the_kernel(kernel: Kernel, sc: KScenario) -> None:
    docs = _docs(sc.policies)
    problems = _compare(kernel, docs, sc.pods, sc.cases)
    assert not problems, f"{sc.name}:\n" + "\n".join(problems)


def test_kernel_renders_deny(kernel: Kernel) -> None:
    """The rendering is live: under deny-all ingress in x the kernel drops y/a -> x/a and
    still answers x/a -> y/a (a harness that allowed everything could not pass)."""
    docs = _docs(SCENARIOS[1].policies)
    cluster = _cluster(docs)
    load_policy_rules(kernel.kc, cluster)
    got = kernel_matrix(kernel.kc, cluster, ["x/a", "y/a"], [T80])
    assert got == {("x/a", "x/a", T80): ".", ("x/a", "y/a", T80): ".",
                   ("y/a", "x/a", T80): "X", ("y/a", "y/a", T80): "."}
    load_policy_rules(kernel.kc, _cluster([]))
    got = kernel_matrix(kernel.kc, _cluster([]), ["y/a", "x/a"], [Case(82, "TCP")])
    assert set(got.values()) == {"R"}


def test_policy_deleted_matches_the_kernel(kernel: Kernel) -> None:
    """A policy removed while the cluster runs: both allow again (``EmulatedCluster.delete``,
    a kube-router resync without it)."""
    docs = _docs(SCENARIOS[2].policies)
    emus = {b: EmulatedCluster(_cluster(docs), backend=b) for b in _backends()}
    pods = ["x/a", "y/a", "z/a"]
    assert not _compare(kernel, docs, pods, [T80], emus)
    for emu in emus.values():
        emu.delete("NetworkPolicy", "x/deny-all")
    assert not _compare(kernel, [], pods, [T80], emus)


# ------------------------------------------------------------------ a connection open
def _kernel_connection(kernel: Kernel, src: str, dst: str, port: int
                       ) -> tuple[socket.socket, socket.socket]:
    """A TCP connection from ``src`` to ``dst``:``port``, both ends (client, accepted)."""
    cluster = kernel.base
    ns, _, name = dst.partition("/")
    ip = str(cluster.pod(ns, name).ip)

    def connect() -> socket.socket:
        s = socket.create_connection((ip, port), timeout=TIMEOUT)
        s.settimeout(TIMEOUT)
        return s

    client = in_netns(kernel.kc.netns[f"pod:{src}"], connect)
    listener = next(s for key, proto, s in kernel.kc._listeners
                    if key == dst and proto == "tcp" and s.getsockname()[1] == port)
    # the accept queue also holds the earlier probes' connections (never accepted, reset
    # since): take this client's one
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            server, addr = listener.accept()
        except BlockingIOError:
            if time.monotonic() > deadline:
                client.close()
                raise AssertionError("the kernel's listener never saw the connection") from None
            time.sleep(0.01)
            continue
        if addr == client.getsockname():
            break
        server.close()
    server.settimeout(TIMEOUT)
    return client, server


def _kernel_exchange(client: socket.socket, server: socket.socket) -> bool:
    """Data both ways on an open connection; True when both arrived."""
    try:
        client.sendall(b"ping")
        if server.recv(16) != b"ping":
            return False
        server.sendall(b"pong")
        return client.recv(16) == b"pong"
    except OSError:
        return False


def _kemu_connection(emu: EmulatedCluster, src: str, dst: str, port: int, sport: int
                     ) -> tuple[int, int]:
    """SYN, SYN-ACK, ACK through kemu; (client's next seq, server's next seq)."""
    from scapy.layers.inet import IP, TCP

    ns, _, name = dst.partition("/")
    ip = str(emu.model.pod(ns, name).ip)
    trace = emu.send(IP(dst=ip) / TCP(sport=sport, dport=port, flags="S", seq=1000), src=src)
    assert trace.verdict().reachable, trace.verdict().reason
    synack = trace.answers()[0].hops[0][2]
    l4 = 14 + (synack[14] & 0xF) * 4
    server_seq = int.from_bytes(synack[l4 + 4: l4 + 8], "big") + 1
    ack = emu.send(IP(dst=ip) / TCP(sport=sport, dport=port, flags="A", seq=1001,
                                    ack=server_seq), src=src)
    assert ack.outcome() == "DELIVERED"
    return 1001, server_seq


def _kemu_exchange(emu: EmulatedCluster, src: str, dst: str, port: int, sport: int,
                   seqs: tuple[int, int]) -> bool:
    """Data both ways on the open connection: True when both segments were delivered."""
    from scapy.layers.inet import IP, TCP

    s_ns, _, s_name = src.partition("/")
    d_ns, _, d_name = dst.partition("/")
    src_ip, dst_ip = str(emu.model.pod(s_ns, s_name).ip), str(emu.model.pod(d_ns, d_name).ip)
    c_seq, s_seq = seqs
    there = emu.send(IP(dst=dst_ip) / TCP(sport=sport, dport=port, flags="PA", seq=c_seq,
                                          ack=s_seq) / b"ping", src=src)
    back = emu.send(IP(src=dst_ip, dst=src_ip) / TCP(sport=port, dport=sport, flags="PA",
                                                     seq=s_seq, ack=c_seq + 4) / b"pong",
                    src=dst)
    return there.delivered_to(0) == [f"pod {dst}"] and back.delivered_to(0) == [f"pod {src}"]


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_policy_added_with_a_connection_open(kernel: Kernel, direction: str) -> None:
    """A connection open before a deny keeps working (conntrack: ESTABLISHED is accepted
    first, as kube-router, Calico and Cilium keep it); a new one is denied. Both sides."""
    src, dst, port = ("y/a", "x/a", 80) if direction == "ingress" else ("x/a", "y/a", 80)
    deny = _docs(SCENARIOS[1].policies if direction == "ingress" else _np(
        "deny-egress", "x", "  podSelector: {}\n  policyTypes: [Egress]\n"))
    load_policy_rules(kernel.kc, _cluster([]))
    client, server = _kernel_connection(kernel, src, dst, port)
    try:
        assert _kernel_exchange(client, server)
        cluster = _cluster(deny)
        load_policy_rules(kernel.kc, cluster)
        kernel_open = _kernel_exchange(client, server)
        kernel_new = kernel_matrix(kernel.kc, cluster, [src, dst], [T80])[(src, dst, T80)]
    finally:
        client.close()
        server.close()
        load_policy_rules(kernel.kc, _cluster([]))
    assert (kernel_open, kernel_new) == (True, "X")  # the harness shows the behaviour
    for backend in _backends():
        emu = EmulatedCluster(_cluster([]), backend=backend)
        seqs = _kemu_connection(emu, src, dst, port, sport=41000)
        assert _kemu_exchange(emu, src, dst, port, 41000, seqs)
        emu.apply(*deny)
        kemu_open = _kemu_exchange(emu, src, dst, port, 41000, (seqs[0] + 4, seqs[1] + 4))
        m, _ = matrix(emu, pods=[src, dst], ports=[80], protocols=["TCP"])
        assert (kemu_open, m.mark(src, dst, T80)) == (kernel_open, kernel_new), backend


def test_rules_have_kube_router_shape() -> None:
    """The rendering itself (no root needed to read it): per-pod chains entered from
    KUBE-ROUTER-FORWARD with and without physdev, ESTABLISHED first, default deny last."""
    cluster = _cluster(_docs(SCENARIOS[3].policies))
    text = policy_rules(cluster, "node1")
    fw = f"KUBE-POD-FW-{chain_hash('x/a')}"
    lines = [ln for ln in text.splitlines() if ln.startswith(f"-A {fw} ")]
    assert lines[0] == f"-A {fw} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    assert any("default deny ingress of x/a" in ln and ln.endswith("-j DROP") for ln in lines)
    assert f'-A KUBE-ROUTER-FORWARD -m comment --comment "x/a" -m physdev ' \
           f"--physdev-is-bridged -d {ipaddress.IPv4Address(_ip('x/a'))}/32 -j {fw}" in text
    assert f"KUBE-POD-FW-{chain_hash('x/b')}" not in text  # x/b lives on node2
