"""Cilium (``spec.cni: cilium``) as kemu compiles it: devices, addresses, routes, identities.

Owns what Cilium mode changes in the compiled cluster; ``compile.py`` and ``routes.py`` call it
through small hooks, and it reuses the routed CNIs' machinery (``cni_routed``: a host-side
veth as an L3 device of the node, ``IF_VETH_HOST``, per-pod /32 routes, proxy ARP).
Modelled from Cilium's own documentation and source:

- Documentation/network/concepts/routing.rst (tunnel mode: VXLAN on UDP 8472 over
  ``cilium_vxlan``; native routing with ``autoDirectNodeRoutes``: each node's pod CIDR via
  that node's address), Documentation/network/ebpf/intro.rst and lifeofapacket.rst (the
  programs at each device: ``cil_from_container``/``cil_to_container`` at a pod's ``lxc``,
  ``cil_from_netdev``/``cil_to_netdev`` at the node's device, ``cil_from_overlay``/
  ``cil_to_overlay`` at ``cilium_vxlan``, ``cil_from_host``/``cil_to_host`` at
  ``cilium_host``), bpf/bpf_lxc.c, bpf_host.c, bpf_overlay.c;
- pkg/datapath/linux (``cilium_host`` holding the node's router IP, its veth peer
  ``cilium_net``, ``cilium_vxlan`` a collect-metadata VXLAN device) and
  pkg/datapath/connector (``Endpoint2IfName``: ``lxc`` + the first 12 hex digits of
  sha256(endpoint id), 15 characters; kemu hashes the pod's ``namespace/name``, having no
  container id);
- the tunnel header: bpf/lib/encap.h puts the source's security identity in the VXLAN VNI
  (``cil_from_overlay`` takes it back from there); reserved identities host 1, world 2,
  cluster-local identities from 256 (pkg/identity/numericidentity.go).

Devices of a node: ``eth0``; ``cilium_host`` (the router IP, the first address of the pod
CIDR) and ``cilium_net`` (a veth pair, ``IF_CILIUM_HOST``); tunnel mode: ``cilium_vxlan``
(``IF_VTEP``, MTU 1450; kemu gives it the router IP as its address, the source Cilium's
route to another node's pod CIDR (``via <router IP> dev cilium_host src <router IP>``)
selects, and routes the other nodes' pod CIDRs onto it via their router IPs, where Cilium's
collect-md device finds the remote node in its tunnel map); per pod ``lxc<hash>``
(``IF_VETH_HOST``, proxy ARP: the eBPF ARP responder answers the pod's ARP with the lxc's
MAC). The pod: eth0 with its /32, ``default via <router
IP>`` (kemu's routed pod: every packet to the lxc's MAC). Routes (as Cilium's
``enable-endpoint-routes``): each local pod's /32 on its lxc; the other nodes' pod CIDRs on
``cilium_vxlan`` (tunnel) or via their addresses on eth0 (native); masquerade of pod
traffic leaving the cluster (``enable-ipv4-masquerade``, the default) to the node address.

Services: with ``kubeProxyReplacement`` (the default) the socket LB (bpf/bpf_sock.c
``cil_sock4_connect``, Documentation/network/kubernetes/kubeproxy-free.rst) translates a
pod's ClusterIP traffic before it leaves the pod (``Tables.sock_lb``; the datapath's
``inject`` room); kube-proxy's iptables rules stay for the rest.
Not modelled (said once in ``docs/CNI.md``): the replacement's NodePort/LoadBalancer
translation at the device (a notice; kube-proxy's rules do it), DSR, Geneve (refused), BPF host
routing (pod traffic crosses the node's IP stack: routing, conntrack, the FORWARD hook where
kemu's policy engine decides by identity), the tunnel map's own lookup (kemu routes to
``cilium_vxlan`` and encapsulates there).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kemu.compiler.cni_routed import RoutedMode, add_host_veth_pod
from kemu.dataplane import codes as C

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.control.model import ClusterConfig
    from kemu.dataplane.tables import Tables

VXLAN_OVERHEAD = 50  # outer Ether + IPv4 + UDP + VXLAN: Cilium's tunnel MTU is the device's - 50
HOST = "cilium_host"
NET = "cilium_net"
VXLAN = "cilium_vxlan"


@dataclass(frozen=True)
class CiliumMode:
    """The cluster's Cilium options, as the compiler reads them."""

    tunnel: bool              # routingMode: tunnel (VXLAN), else native
    kube_proxy_replacement: bool


def active(cfg: ClusterConfig) -> CiliumMode | None:
    """The cluster's Cilium mode, None with any other CNI."""
    if cfg.cni.name != "cilium":
        return None
    return CiliumMode(tunnel=cfg.cni.get("routingMode") == "tunnel",
                      kube_proxy_replacement=bool(cfg.cni.get("kubeProxyReplacement")))


def routed_mode(cfg: ClusterConfig) -> RoutedMode | None:
    """Cilium as a routed mode of ``cni_routed`` (lxc devices, /32 routes, proxy ARP on them,
    pods in the per-node pod CIDRs, masquerade beyond the cluster); None with another CNI."""
    if cfg.cni.name != "cilium":
        return None
    return RoutedMode("cilium", "lxc", pods_on_node_net=False, veth_proxy_arp=True,
                      egress_snat=True)


def lxc_name(namespace: str, name: str) -> str:
    """A pod's host-side device as Cilium names it (``Endpoint2IfName``): ``lxc`` and the
    first 12 hex digits of sha256 of the endpoint's id (kemu: ``namespace/name``)."""
    return "lxc" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:12]


def pod_mtu(cfg: ClusterConfig) -> int:
    """The pods' and lxc devices' MTU: the device's, less VXLAN's 50 in tunnel mode."""
    mode = active(cfg)
    return cfg.mtu - VXLAN_OVERHEAD if mode is not None and mode.tunnel else cfg.mtu


def _mac(key: str) -> int:
    d = hashlib.sha256(f"cilium/{key}".encode()).digest()
    return 0x02 << 40 | int.from_bytes(d[:5], "big")


def add_pod(ifs: Any, pod: Any, pi: int, ni: int, node_name: str, veth_mac: int,
            pod_mac: int, pod_ip: int, owner: str, mtu: int) -> int:
    """The pod's eth0 (its /32), lo (right after eth0), and its ``lxc<hash>``; eth0's id."""
    kname = lxc_name(pod.namespace, pod.name)
    return add_host_veth_pod(ifs, pod, pi, ni, node_name, kname,
                             f"lxc of {owner} on node {node_name} (Cilium endpoint)",
                             veth_mac, pod_mac, pod_ip, owner, mtu)


def add_devices(cluster: Cluster, ifs: Any) -> list[int]:
    """Every node's ``cilium_host``/``cilium_net`` pair and, in tunnel mode, its
    ``cilium_vxlan``; returns the VXLAN device per node (-1: native routing)."""
    cfg = cluster.config
    mode = active(cfg)
    assert mode is not None
    vteps: list[int] = []
    for ni, node in enumerate(cluster.nodes):
        nm = node.name
        host = ifs.add(f"{nm}/{HOST}", C.IF_CILIUM_HOST,
                       desc=f"Node {nm} cilium_host (router IP)", node=ni,
                       mac=_mac(f"{nm}/{HOST}"), ip=int(node.gateway_ip), mtu=cfg.mtu)
        net = ifs.add(f"{nm}/{NET}", C.IF_CILIUM_HOST, desc=f"Node {nm} cilium_net",
                      node=ni, mac=_mac(f"{nm}/{NET}"), mtu=cfg.mtu)
        ifs.rows[host]["peer"], ifs.rows[net]["peer"] = net, host
        if mode.tunnel:
            vteps.append(ifs.add(f"{nm}/{VXLAN}", C.IF_VTEP,
                                 desc=f"Node {nm} cilium_vxlan (VXLAN 8472, collect-md)",
                                 node=ni, mac=_mac(f"{nm}/{VXLAN}"),
                                 ip=int(node.gateway_ip),
                                 mtu=cfg.mtu - VXLAN_OVERHEAD))
        else:
            vteps.append(-1)
    return vteps


# the programs Cilium attaches at each kind of device (ingress, egress)
_PROGRAMS = {
    "lxc": ("cil_from_container", "cil_to_container"),
    "eth0": ("cil_from_netdev", "cil_to_netdev"),
    HOST: ("cil_from_host", "cil_to_host"),
    VXLAN: ("cil_from_overlay", "cil_to_overlay"),
}


def programs(t: Tables) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``Tables.if_bpf_in``/``if_bpf_out``: the eBPF program at each node device."""
    ins, outs = [], []
    for i in range(t.n_ifaces):
        kname = t.if_kernel_name[i]
        kind = int(t.if_kind[i])
        key = ""
        if kind == C.IF_VETH_HOST and kname.startswith("lxc"):
            key = "lxc"
        elif kind == C.IF_NODE_ETH:
            key = "eth0"
        elif kind in (C.IF_CILIUM_HOST, C.IF_VTEP) and kname in _PROGRAMS:
            key = kname
        pin, pout = _PROGRAMS.get(key, ("", ""))
        ins.append(pin)
        outs.append(pout)
    return tuple(ins), tuple(outs)


def pod_identities(cluster: Cluster) -> list[int]:
    """Each pod's numeric security identity: one per distinct (namespace, labels), numbered
    from 256 in the order of ``kemu.compiler.policy``'s identities (``Tables.ident_name``:
    identity index k is Cilium identity 256 + k); -1 for a hostNetwork pod (the host's)."""
    keys = sorted({(p.namespace, tuple(sorted(p.labels.items())))
                   for p in cluster.pods if not p.host_network})
    index = {k: C.CILIUM_ID_FIRST + i for i, k in enumerate(keys)}
    return [-1 if p.host_network else index[(p.namespace, tuple(sorted(p.labels.items())))]
            for p in cluster.pods]


def identities(t: Tables, cluster: Cluster) -> np.ndarray:
    """``Tables.if_vni``: per interface, the security identity a packet from its address
    carries in the VXLAN VNI: a pod's eth0 its identity (``pod_identities``), a node's
    addresses reserved:host (1), every other owner reserved:world (2)."""
    vni = np.full(t.n_ifaces, C.CILIUM_ID_WORLD, np.int32)
    kind = np.asarray(t.if_kind)
    vni[(kind == C.IF_NODE_ETH) | (kind == C.IF_CILIUM_HOST) | (kind == C.IF_VTEP)] = \
        C.CILIUM_ID_HOST
    for eth, ident in zip(np.asarray(t.pod_eth_if).tolist(), pod_identities(cluster),
                          strict=True):
        if eth >= 0:
            vni[eth] = ident if ident >= 0 else C.CILIUM_ID_HOST
    return vni


def finish(tables: Tables, cluster: Cluster, vteps: list[int]) -> Tables:
    """The routed tables (``cni_routed.finish``) with Cilium's columns: the VXLAN device and
    switch in tunnel mode, the identities for the VNI, the programs for the trace."""
    mode = active(cluster.config)
    assert mode is not None
    ins, outs = programs(tables)
    return dataclasses.replace(
        tables,
        vxlan=mode.tunnel,
        node_vtep_if=np.array(vteps, dtype=np.int32),
        if_vni=identities(tables, cluster),  # the VNI (tunnel); Hubble's identities (both)
        if_bpf_in=ins, if_bpf_out=outs,
        sock_lb=mode.kube_proxy_replacement,
    )


def node_routes(cluster: Cluster, Route: Any) -> dict[str, list[Any]]:
    """Each node's main table, as ``ip route`` shows it in kemu's Cilium mode: the router IP
    on cilium_host, each local pod's /32 on its lxc (endpoint routes), the node network on
    eth0, the other nodes' pod CIDRs on cilium_vxlan (tunnel; next hop their VTEP key) or
    via their addresses (native, ``autoDirectNodeRoutes``), the default route. ``Route`` is
    ``kemu.compiler.routes.Route`` (passed in: routes.py imports this module)."""
    import ipaddress

    cfg = cluster.config
    mode = active(cfg)
    assert mode is not None
    net = ipaddress.IPv4Network
    tables: dict[str, list[Any]] = {}
    for node in cluster.nodes:
        routes = [Route(cfg.node_network, "eth0", src=node.internal_ip, proto="kernel"),
                  Route(net(f"{node.gateway_ip}/32"), HOST, proto="kernel")]
        for pod in cluster.pods:
            if pod.node_name != node.name or pod.host_network or pod.ip is None:
                continue
            routes.append(Route(net(f"{pod.ip}/32"), lxc_name(pod.namespace, pod.name),
                                proto="boot", target_node=node.name))
        for other in cluster.nodes:
            if other.name == node.name:
                continue
            if mode.tunnel:
                routes.append(Route(other.pod_cidr, VXLAN, via=other.gateway_ip,
                                    src=node.gateway_ip, onlink=True, target_node=other.name))
            else:
                routes.append(Route(other.pod_cidr, "eth0", via=other.internal_ip,
                                    target_node=other.name))
        if cfg.gateway_ip is not None:
            routes.append(Route(net("0.0.0.0/0"), "eth0", via=cfg.gateway_ip))
        routes.sort(key=lambda r: (-r.prefix.prefixlen, int(r.prefix.network_address)))
        tables[node.name] = routes
    return tables
