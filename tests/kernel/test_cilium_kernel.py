"""Cilium's native routing against the Linux kernel, frame by frame (``kemu/compiler/cilium.py``).

The test kernel has no eBPF, so this compares what native routing leaves to the kernel in
kemu's model: per pod a veth pair (``eth0`` in the pod with its /32 and ``default via <router
IP>``, the host end ``lxc<hash>`` without an address, proxy ARP on it standing for Cilium's ARP
responder), ``<pod>/32 dev lxc<hash>`` on the node (Cilium's endpoint routes),
``cilium_host``/``cilium_net`` (a veth pair, the router IP on cilium_host), the other nodes' pod
CIDRs via their addresses (``autoDirectNodeRoutes``), masquerade of pod traffic leaving the
cluster CIDR and the node network, and kube-proxy's rules (``kubeProxyReplacement: false``).
The namespaces are built by the routed CNIs' harness (``test_cni_routed_kernel.RoutedKernel``,
whose overlay shape is this one: pods in per-node pod CIDRs routed via the nodes, proxy ARP on
the host devices, the same masquerade), with Cilium's own pod routes and devices on top.

Tunnel mode is not compared here: the kernel's VXLAN device puts VNI 1 (or a fixed one) in
every packet where Cilium writes the source's identity from eBPF; tests/test_cilium_mode.py
checks those headers from Cilium's documentation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether

import kemu
from kemu.dataplane import codes as C

from .test_cni_routed_kernel import (  # noqa: F401  (the shared tests run here too)
    _WHY_SKIP,
    DATA,
    RoutedKernel,
    _ip,
    _mac,
    arp,
    compare,
    kemu_frames,
    test_egress_snat,
    test_nodeport_from_outside,
    test_pod_to_clusterip_on_another_node,
    test_pod_to_pod,
)

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(_WHY_SKIP is not None, reason=_WHY_SKIP or "")]

CNI = "cni: {name: cilium, routingMode: native, kubeProxyReplacement: false}"


class CiliumKernel(RoutedKernel):
    """The routed harness in its overlay shape (``mode`` "azure-overlay": what the shared
    tests and the harness branch on), with Cilium's pod routes and cilium_host."""

    def __init__(self, emu: kemu.frontend.api.EmulatedCluster) -> None:
        super().__init__(emu, "azure-overlay")
        self.prefix = self.prefix.replace("-r", "-cil", 1)

    def build(self) -> CiliumKernel:
        super().build()
        t = self.t
        for node in t.node_name:
            host = t.iface(f"{node}/cilium_host")
            net = t.iface(f"{node}/cilium_net")
            self.sh(node, "ip link add cilium_host type veth peer name cilium_net",
                    f"ip link set cilium_host address {_mac(t.if_mac[host])}",
                    f"ip link set cilium_net address {_mac(t.if_mac[net])}",
                    f"ip addr add {_ip(t.if_ip[host])}/32 dev cilium_host",
                    "ip link set cilium_net up", "ip link set cilium_host up")
        return self

    def _pod(self, hv: int, nodes: list[str]) -> None:
        """The harness's pod, then Cilium's pod routes: default via the router IP (the
        node's cilium_host address) instead of 169.254.1.1."""
        super()._pod(hv, nodes)
        t = self.t
        eth = int(t.if_peer[hv])
        node = int(t.if_node[hv])
        router = _ip(t.if_ip[t.iface(f"{t.node_name[node]}/cilium_host")])
        role = f"pod-{t.pod_key[int(t.if_owner[eth])]}"
        self.sh(role, "ip route del default", "ip route del 169.254.1.1 dev eth0",
                f"ip route add {router} dev eth0 scope link",
                f"ip route add default via {router} dev eth0")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RoutedKernel, Path]]:
    path = tmp_path_factory.mktemp("cilium") / "cluster.yaml"
    path.write_text((DATA / "scenario" / "cluster.yaml").read_text().replace(
        "  nodes: 3\n", f"  nodes: 3\n  {CNI}\n", 1))
    k = CiliumKernel(kemu.load(path, backend="python", respond=False))
    assert all(t.startswith("lxc") for i, t in enumerate(k.t.if_kernel_name)
               if int(k.t.if_kind[i]) == C.IF_VETH_HOST)
    try:
        k.build()
        yield "azure-overlay", k, path
    finally:
        k.teardown()


def test_arp_for_the_router_ip(kernel: tuple[str, RoutedKernel, Path], backend: str) -> None:
    """Pod a ARPs for its router IP: answered on its lxc with the lxc's MAC (the kernel: the
    address is the node's own, on cilium_host; Cilium: its ARP responder); the same bytes."""
    _mode, k, path = kernel
    t = k.t
    a = t.iface("default/a/eth0")
    router = _ip(t.if_ip[t.iface("node1/cilium_host")])
    frame = bytes(Ether(src=_mac(t.if_mac[a]), dst="ff:ff:ff:ff:ff:ff")
                  / ARP(op=1, hwsrc=_mac(t.if_mac[a]), psrc=_ip(t.if_ip[a]), pdst=router))
    kern = k.run("default/a/eth0", frame)
    replied = [b for v in kern.values() for _d, b in v if arp(2, router)(b)]
    assert replied
    assert Ether(replied[0])[ARP].hwsrc == _mac(t.if_mac[int(t.if_peer[a])])
    compare(kern, kemu_frames(path, backend, "default/a/eth0", frame, respond=True),
            arp(2, router), set(k.caps))
