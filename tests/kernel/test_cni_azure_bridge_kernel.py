"""Azure CNI bridge mode against the Linux kernel, frame by frame (``kemu/compiler/cni_routed.py``).

The test builds, from kemu's compiled tables, what Azure CNI's bridge mode makes of a node
(Azure/azure-container-networking ``network/network_linux.go`` ``connectExternalInterface``,
``network/bridge_networkclient_linux.go``, ``network/bridge_endpointclient_linux.go``), in
network namespaces it creates and removes (root): per node the bridge ``azure0`` with the
node's address and eth0's MAC, ``eth0`` enslaved to it in hairpin mode, the routes on azure0
(the node network connected, default via the VNet's gateway), br_netfilter on; per pod a veth
pair, the host end ``azv<hash>`` a hairpin port of azure0, the pod's ``eth0`` with its VNet
address and the subnet's prefix, ``default via`` the gateway; Azure's ebtables nat rules
(``-s unicast -o eth0 -j snat --to-src <eth0 MAC> --snat-arp``, ``-p ARP -i eth0 --arp-op
Reply -j dnat --to-dst ff:ff:ff:ff:ff:ff``, per pod ``-p IPv4 -i eth0 --ip-dst <pod> -j dnat
--to-dst <pod MAC>``); kube-proxy's rules and ip-masq-agent's MASQUERADE in iptables. The
neighbours are kemu's static ones (a pod of another node at that node's MAC: the VNet's NIC
holding the address; kemu does not model Azure's SDN answering ARP, nor the ebtables arpreply
rules, so no ARP is exchanged here). The node network is a bridge in its own namespace with the
gateway (a sink) and the external hosts; it floods where the VNet would not, so broadcasts
reflected by eth0's hairpin are dropped at azure0 (``ebtables -A FORWARD -i eth0 -o eth0 -d
Multicast -j DROP``), as kemu's uplink hairpin is for known unicast only.

The same frames are injected into kemu (both backends) and into the kernel; the frames of the
flow under test at every pod eth0, azv veth and node eth0 must be the same bytes, in the same
order per interface and direction: pod to pod on one node (bridged) and across nodes, pod to a
ClusterIP whose endpoint is on another node (br_netfilter's DNAT, bridged on), a NodePort from
outside (back out of eth0: hairpin), egress SNAT.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

import kemu
from kemu.dataplane import codes as C

from .netns import _run, missing_for
from .test_cni_routed_kernel import (
    NODE_NET_IPS,
    RoutedKernel,
    _ip,
    _mac,
    compare,
    ip_flow,
    kemu_frames,
    tcp_from,
)

DATA = Path(__file__).resolve().parents[1] / "data"

_WHY_SKIP = missing_for("kernel differential tests", ("ip", "iptables", "ebtables", "bridge"))
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(_WHY_SKIP is not None, reason=_WHY_SKIP or "")]


def cluster_text() -> str:
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    text = text.replace("  nodes: 3\n", "  nodes: 3\n  cni: {name: azure, mode: bridge}\n", 1)
    for old, new in NODE_NET_IPS.items():
        text = text.replace(f"podIP: {old}}}", f"podIP: {new}}}")
    return text


class BridgeKernel(RoutedKernel):
    """Namespaces built from kemu's tables of Azure CNI bridge mode (module docstring)."""

    def build(self) -> BridgeKernel:  # type: ignore[override]
        t, cfg = self.t, self.model.config
        net = self.add_ns("net")
        self.sh("net", "ip link add br0 type bridge mcast_snooping 0", "ip link set br0 up",
                "sysctl -qw net.bridge.bridge-nf-call-iptables=0")
        plen = cfg.node_network.prefixlen
        gw, gw_mac = _ip(t.gateway_ip), _mac(t.if_mac[t.gateway_if])

        def wire(role: str, port: str, mac: int, addr: str | None) -> None:
            ns = self.ns[role]
            _run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name",
                  port, "netns", net])
            self.sh(role, f"ip link set eth0 address {_mac(mac)}", "ip link set eth0 up")
            if addr is not None:
                self.sh(role, f"ip addr add {addr}/{plen} dev eth0")
            self.sh("net", f"ip link set {port} master br0", f"ip link set {port} up")

        self.add_ns("gw")
        wire("gw", "gw", int(t.if_mac[t.gateway_if]), gw)
        for e, name in enumerate(t.ext_name):
            x = int(t.ext_if[e])
            self.add_ns(f"ext-{name}")
            wire(f"ext-{name}", f"x-{name}", int(t.if_mac[x]), _ip(t.if_ip[x]))
            self.sh(f"ext-{name}", f"ip route add default via {gw}")
        nodes = list(t.node_name)
        # every address of the node network and the MAC a host of it resolves it to (kemu's
        # static neighbours): nodes, the gateway, external hosts; pods at their node's MAC
        hosts = {_ip(t.node_ip[n]): _mac(t.if_mac[int(t.node_eth_if[n])])
                 for n in range(len(nodes))}
        hosts[gw] = gw_mac
        hosts.update({_ip(t.if_ip[int(x)]): _mac(t.if_mac[int(x)]) for x in t.ext_if})
        pods = [i for i in range(t.n_ifaces) if int(t.if_kind[i]) == C.IF_POD_ETH]
        for n, node in enumerate(nodes):
            self.add_ns(node)
            eth = t.iface(f"{node}/eth0")
            mac = _mac(t.if_mac[eth])
            wire(node, f"n-{node}", int(t.if_mac[eth]), None)
            self.caps[f"{node}/eth0"] = (self.ns[node], "eth0")
            self.sh(node, "sysctl -qw net.ipv4.ip_forward=1",
                    "sysctl -qw net.bridge.bridge-nf-call-iptables=1",
                    "sysctl -qw net.ipv4.conf.all.rp_filter=2",
                    f"ip link add azure0 address {mac} type bridge mcast_snooping 0",
                    "ip link set eth0 master azure0",
                    # the VNet never floods: a broadcast eth0's hairpin reflects is dropped
                    # there (kemu: the uplink's hairpin is for known unicast only); here the
                    # node network floods, so the reflection stops at azure0 instead
                    "ebtables -A FORWARD -i eth0 -o eth0 -d Multicast -j DROP",
                    "bridge link set dev eth0 hairpin on",
                    "ip link set azure0 up",
                    f"ip addr add {_ip(t.node_ip[n])}/{plen} dev azure0",
                    f"ip route add default via {gw} dev azure0",
                    f"ebtables -t nat -A POSTROUTING -s unicast -o eth0 -j snat --to-src {mac} "
                    "--snat-arp --snat-target ACCEPT",
                    "ebtables -t nat -A PREROUTING -p ARP -i eth0 --arp-op Reply -j dnat "
                    "--to-dst ff:ff:ff:ff:ff:ff --dnat-target ACCEPT")
            for ip, hmac in hosts.items():
                if ip != _ip(t.node_ip[n]):
                    self.sh(node, f"ip neigh replace {ip} lladdr {hmac} dev azure0 "
                            "nud permanent")
            for p in pods:
                m = int(t.if_node[p])
                pmac = _mac(t.if_mac[p]) if m == n else _mac(t.if_mac[int(t.node_eth_if[m])])
                self.sh(node, f"ip neigh replace {_ip(t.if_ip[p])} lladdr {pmac} dev azure0 "
                        "nud permanent")
            self._kube_proxy(node)
            self.sh(node, "iptables -t nat -N IP-MASQ-AGENT",
                    "iptables -t nat -A POSTROUTING -m addrtype ! --dst-type LOCAL "
                    "-j IP-MASQ-AGENT",
                    f"iptables -t nat -A IP-MASQ-AGENT -d {cfg.node_network} -j RETURN",
                    "iptables -t nat -A IP-MASQ-AGENT -j MASQUERADE")
        for p in pods:
            self._bridged_pod(p, nodes, pods, hosts, plen, gw)
        self.learn()
        return self

    def _bridged_pod(self, eth: int, nodes: list[str], pods: list[int], hosts: dict[str, str],
                     plen: int, gw: str) -> None:
        t = self.t
        hv = int(t.if_peer[eth])
        key = t.pod_key[int(t.if_owner[eth])]
        n = int(t.if_node[eth])
        node = nodes[n]
        role = f"pod-{key}"
        self.add_ns(role)
        kname = t.if_kernel_name[hv]
        pod_ip, pod_mac = _ip(t.if_ip[eth]), _mac(t.if_mac[eth])
        _run(["ip", "link", "add", kname, "netns", self.ns[node], "type", "veth", "peer",
              "name", "eth0", "netns", self.ns[role]])
        self.sh(node, f"ip link set {kname} address {_mac(t.if_mac[hv])}",
                f"ip link set {kname} master azure0",
                f"bridge link set dev {kname} hairpin on", f"ip link set {kname} up",
                f"ebtables -t nat -A PREROUTING -p IPv4 -i eth0 --ip-dst {pod_ip} -j dnat "
                f"--to-dst {pod_mac} --dnat-target ACCEPT")
        self.sh(role, f"ip link set eth0 address {pod_mac}",
                f"ip addr add {pod_ip}/{plen} dev eth0", "ip link set eth0 up",
                f"ip route add default via {gw} dev eth0")
        for ip, hmac in hosts.items():
            self.sh(role, f"ip neigh replace {ip} lladdr {hmac} dev eth0 nud permanent")
        for p in pods:
            if p == eth:
                continue
            m = int(t.if_node[p])
            pmac = _mac(t.if_mac[p]) if m == n else _mac(t.if_mac[int(t.node_eth_if[m])])
            self.sh(role, f"ip neigh replace {_ip(t.if_ip[p])} lladdr {pmac} dev eth0 "
                    "nud permanent")
        self.caps[f"{key}/eth0"] = (self.ns[role], "eth0")
        self.caps[f"{node}/{kname}"] = (self.ns[node], kname)

    def learn(self) -> None:
        """Every bridge learns every host's MAC (kemu's warm start): a broadcast of the
        local-experimental EtherType from each host of the node network and each pod."""
        from .netns import _open_tx_socket, in_netns
        t = self.t
        senders = [("gw", int(t.if_mac[t.gateway_if]))]
        senders += [(f"ext-{n}", int(t.if_mac[int(t.ext_if[e])]))
                    for e, n in enumerate(t.ext_name)]
        senders += [(n, int(t.if_mac[t.iface(f"{n}/eth0")])) for n in t.node_name]
        senders += [(f"pod-{t.pod_key[int(t.if_owner[i])]}", int(t.if_mac[i]))
                    for i in range(t.n_ifaces) if int(t.if_kind[i]) == C.IF_POD_ETH]
        for role, mac in senders:
            tx = in_netns(self.ns[role], _open_tx_socket, "eth0")
            try:
                tx.send(b"\xff" * 6 + mac.to_bytes(6, "big") + b"\x88\xb5"
                        + b"kemu-learn".ljust(46, b"\0"))
            finally:
                tx.close()
        import time
        time.sleep(0.05)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BridgeKernel, Path]]:
    path = tmp_path_factory.mktemp("azure-bridge") / "cluster.yaml"
    path.write_text(cluster_text())
    k = BridgeKernel(kemu.load(path, backend="python", respond=False), "azure-bridge")
    try:
        k.build()
        yield k, path
    finally:
        k.teardown()


def _frame(k: BridgeKernel, src_if: str, dst_mac: str, pkt) -> bytes:  # noqa: ANN001
    i = k.t.iface(src_if)
    return bytes(Ether(src=_mac(k.t.if_mac[i]), dst=dst_mac) / pkt)


def _mac_of(k: BridgeKernel, name: str) -> str:
    return _mac(k.t.if_mac[k.t.iface(name)])


@pytest.mark.parametrize("dst_pod", ["b", "c"])
def test_pod_to_pod(kernel: tuple[BridgeKernel, Path], backend: str, dst_pod: str) -> None:
    """a -> b (same node: bridged on azure0) and a -> c (across: to node2's MAC, ebtables
    snat leaving node1's eth0, dnat to c's MAC arriving on node2's): identical frames."""
    k, path = kernel
    dst = NODE_NET_IPS[{"b": "10.244.0.3", "c": "10.244.1.2"}[dst_pod]]
    mac = _mac_of(k, "default/b/eth0") if dst_pod == "b" else _mac_of(k, "node2/eth0")
    frame = _frame(k, "default/a/eth0", mac, IP(src=NODE_NET_IPS["10.244.0.2"], dst=dst, ttl=9)
                   / ICMP(id=0x1234, seq=1) / b"bridged")
    keep = ip_flow(1, dst, icmp_type=8)
    kern = k.run("default/a/eth0", frame)
    got = [b for d, b in kern.get(f"default/{dst_pod}/eth0", []) if d == "in" and keep(b)]
    assert got and got[0][:6] == bytes.fromhex(_mac_of(k, f"default/{dst_pod}/eth0")
                                               .replace(":", ""))
    compare(kern, kemu_frames(path, backend, "default/a/eth0", frame), keep, set(k.caps))


def test_egress_snat(kernel: tuple[BridgeKernel, Path], backend: str) -> None:
    """A pod to outside the VNet: via the VNet gateway, bridged; ip-masq-agent's
    MASQUERADE to the node's address, the node's MAC on the wire."""
    k, path = kernel
    frame = _frame(k, "default/a/eth0", _mac_of(k, "gateway/eth0"),
                   IP(src=NODE_NET_IPS["10.244.0.2"], dst="8.8.8.8")
                   / UDP(sport=4040, dport=53) / b"query")
    kern = k.run("default/a/eth0", frame)
    got = [b for d, b in kern.get("node1/eth0", []) if d == "out" and ip_flow(17)(b)]
    assert got and socket.inet_ntoa(got[0][26:30]) == "172.18.0.2"
    compare(kern, kemu_frames(path, backend, "default/a/eth0", frame), ip_flow(17, "8.8.8.8"),
            set(k.caps))


def test_pod_to_clusterip_on_another_node(kernel: tuple[BridgeKernel, Path],
                                          backend: str) -> None:
    """a -> svc-c (endpoint c on node2): br_netfilter's DNAT on azure0, bridged to eth0 at
    node2's MAC, the ebtables rewrites; the same frames at every interface."""
    k, path = kernel
    frame = _frame(k, "default/a/eth0", _mac_of(k, "gateway/eth0"),
                   IP(src=NODE_NET_IPS["10.244.0.2"], dst="10.96.0.22")
                   / TCP(sport=41000, dport=80, flags="S", seq=1000))
    keep = tcp_from(41000)
    kern = k.run("default/a/eth0", frame)
    got = [b for d, b in kern.get("default/c/eth0", []) if d == "in" and keep(b)]
    assert got and socket.inet_ntoa(got[0][30:34]) == NODE_NET_IPS["10.244.1.2"]
    compare(kern, kemu_frames(path, backend, "default/a/eth0", frame), keep, set(k.caps))


def test_nodeport_from_outside(kernel: tuple[BridgeKernel, Path], backend: str) -> None:
    """ext/client -> node1:30081 (svc-np-c, endpoint c on node2): DNAT and masquerade on
    node1, back out of eth0 (hairpin) to node2 and c."""
    k, path = kernel
    t = k.t
    x = int(t.ext_if[0])
    frame = bytes(Ether(src=_mac(t.if_mac[x]), dst=_mac_of(k, "node1/eth0"))
                  / IP(src=_ip(t.if_ip[x]), dst=_ip(t.node_ip[0]))
                  / TCP(sport=42000, dport=30081, flags="S", seq=7))
    keep = tcp_from(42000)
    kern = k.run("ext/client", frame)
    got = [b for d, b in kern.get("default/c/eth0", []) if d == "in" and keep(b)]
    assert got and socket.inet_ntoa(got[0][26:30]) == _ip(t.node_ip[0])
    compare(kern, kemu_frames(path, backend, "ext/client", frame), keep, set(k.caps))
