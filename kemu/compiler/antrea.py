"""Antrea as a datapath mode (``spec.cni: antrea``): its devices, addresses, routes and tables.

What it owns: the compiler's side of the mode: the names, MACs and MTUs of an Antrea node's
devices (the OVS bridge ``br-int`` with its ports: each pod's host-side veth,
``antrea-gw0``, ``antrea-tun0``), the node routing tables as the Antrea agent installs them,
and the ``Tables`` fields that switch the datapath to br-int's pipeline (``ovs_tunnel``).
``compile.py`` and ``routes.py`` call it through small hooks; the datapath stays mode-free
(the ``ovs`` room: ``kemu/fastpath/ovs.pxi``, ``kemu/dataplane/reference/ovs.py``).

Modelled from Antrea's documentation and source (antrea-io/antrea):

- Devices (docs/design/architecture.md): per node the OVS bridge ``br-int``; ``antrea-gw0``,
  an OVS internal port holding the gateway address of the node's pod CIDR (its first
  address) and a MAC of its own; ``antrea-tun0``, the flow-based tunnel port (``remote_ip=
  flow``: one port for every peer, the destination set by the flows) of type Geneve (the
  default), VXLAN or GRE (``tunnelType``); each pod's host-side veth, an OVS port named by
  ``GenerateContainerInterfaceName`` (pkg/agent/util/net.go): the pod name's first 8
  characters, ``-``, the first 6 hex digits of sha1 of the container ID. kemu has no
  container IDs: it takes sha256 of ``containerd/<namespace>/<pod>`` (64 hex digits, the
  shape of one) as the pod's sandbox ID. MTU (pkg/agent/agent.go ``getInterfaceMTU``;
  pkg/agent/config: ``GeneveOverhead = 50``, ``VXLANOverhead = 50``, ``GREOverhead = 38``):
  the node's MTU minus the tunnel's overhead in encap mode, the node's MTU in noEncap.
- Routes (docs/design/architecture.md "Traffic walk", pkg/agent/route/route_linux.go): the
  node's own pod CIDR connected on antrea-gw0; in encap mode every peer's pod CIDR
  ``via <peer's gateway address> dev antrea-gw0 onlink`` (the host hands such packets to
  OVS, whose ARPResponder answers for the peers' gateways with the Global Virtual MAC
  aa:bb:cc:dd:ee:ff); in noEncap mode (docs/noencap-hybrid-modes.md) ``via <peer node>
  dev eth0``: the node network routes pods.
- The pipeline (docs/design/ovs-pipeline.md): the ``ovs`` room. A same-node pod-to-pod
  frame is switched by L2ForwardingCalc on its destination MAC (no TTL change); towards a
  peer's pod CIDR L3Forwarding sets the source MAC to antrea-gw0's, the destination to the
  Global Virtual MAC and ``tun_dst`` to the peer, L3DecTTL decrements the TTL, and
  antrea-tun0 encapsulates (Geneve VNI 0, protocol 0x6558, UDP 6081; VXLAN UDP 4789; GRE)
  between the nodes' addresses; at the peer the frame enters from antrea-tun0 and
  L3Forwarding rewrites the MACs to the gateway's and the pod's, L3DecTTL again.
- AntreaProxy (docs/antrea-proxy.md; on by default since Antrea v1.0): a pod's connection
  to a Service is translated in OVS at the source node (the conntrack zone, ServiceLB,
  EndpointDNAT), its replies un-DNATed there; kube-proxy's rules are not in that path.
  What reaches a node's own addresses from outside (NodePort) is the host's: kemu models
  it with the node's kube-proxy rules (``proxyAll`` off, the default: antrea-proxy.md
  says kube-proxy then still serves NodePort traffic), then through antrea-gw0 into OVS.
- Egress: pod traffic leaving the cluster's pod CIDR through eth0 is masqueraded by the
  agent's ``ANTREA-POSTROUTING`` rule (pkg/agent/route/route_linux.go).

Not modelled (docs/CNI.md ``## Antrea``): AntreaProxy's hairpin SNAT to 169.254.0.253 (a pod
reaching itself through a Service is dropped), ``proxyAll`` (NodePort in OVS), Antrea-native
policies, Egress, Multicast, IPsec/WireGuard, hybrid/networkPolicyOnly modes, the ARP
replies OVS makes itself (a settled cluster's neighbours are resolved already), OVS's own
ICMP for a TTL running out (dropped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from typing import TYPE_CHECKING, Any

import numpy as np

from kemu.dataplane import codes as C

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.control.model import ClusterConfig
    from kemu.dataplane.tables import Tables

NAME = "antrea"
BRIDGE = "br-int"
GATEWAY = "antrea-gw0"
TUNNEL = "antrea-tun0"
TUNNEL_TYPES = {"geneve": C.ANTREA_GENEVE, "vxlan": C.ANTREA_VXLAN, "gre": C.ANTREA_GRE}
OVERHEAD = {"geneve": 50, "vxlan": 50, "gre": 38}  # pkg/agent/config: *Overhead
OVS_MTU = 1500  # br-int's internal port (down), as `ip link` shows a new internal port


def active(cluster: Cluster) -> bool:
    """The cluster runs Antrea (``spec.cni``)."""
    return cluster.config.cni.name == NAME


def encap(cfg: ClusterConfig) -> bool:
    return cfg.cni.get("trafficEncapMode") != "noEncap"


def tunnel_code(cfg: ClusterConfig) -> int:
    """``Tables.ovs_tunnel``: the tunnel type in encap mode, ``ANTREA_NOENCAP`` otherwise."""
    if not encap(cfg):
        return C.ANTREA_NOENCAP
    return TUNNEL_TYPES[str(cfg.cni.get("tunnelType") or "geneve")]


def pod_mtu(cfg: ClusterConfig) -> int:
    """The pods', their veths' and antrea-gw0's MTU (``getInterfaceMTU``)."""
    if not encap(cfg):
        return cfg.mtu
    return cfg.mtu - OVERHEAD[str(cfg.cni.get("tunnelType") or "geneve")]


def sandbox_id(pod_key: str) -> str:
    """kemu's stand-in for the pod's container (sandbox) ID: 64 hex digits."""
    return hashlib.sha256(f"containerd/{pod_key}".encode()).hexdigest()


def interface_name(pod_name: str, pod_key: str) -> str:
    """``GenerateContainerInterfaceName``: ``generateInterfaceName(containerID, podName,
    true)``: the pod name's first 8 characters, ``-``, 6 hex digits of sha1 of the ID."""
    key = hashlib.sha1(sandbox_id(pod_key).encode()).hexdigest()  # noqa: S324 (a name)
    return f"{pod_name[:8]}-{key[:6]}"


def _mac(key: str) -> int:
    d = hashlib.sha256(f"antrea/{key}".encode()).digest()
    return int.from_bytes(b"\x02" + d[:5], "big")


def add_node(ifs: Any, cluster: Cluster, node: Any, ni: int, gw_mac: int, gw_ip: int
             ) -> tuple[int, int]:
    """Append the node's ``br-int``, ``antrea-gw0`` and (encap mode) ``antrea-tun0`` to
    ``ifs`` (``compile._Ifaces``); (antrea-gw0, antrea-tun0 or -1)."""
    cfg = cluster.config
    nm = node.name
    ifs.add(f"{nm}/{BRIDGE}", C.IF_OVS_PORT, node=ni, mac=_mac(f"{nm}/{BRIDGE}"), mtu=OVS_MTU,
            desc=f"Node {nm} OVS bridge (its internal port, down: the flows forward)")
    gw = ifs.add(f"{nm}/{GATEWAY}", C.IF_OVS_GW, desc=f"Node {nm} Antrea gateway (OVS port)",
                 node=ni, mac=gw_mac, ip=gw_ip, mtu=pod_mtu(cfg))
    tun = -1
    if encap(cfg):
        kind = str(cfg.cni.get("tunnelType") or "geneve")
        tun = ifs.add(f"{nm}/{TUNNEL}", C.IF_OVS_TUN, node=ni, mac=_mac(f"{nm}/{TUNNEL}"),
                      desc=f"Node {nm} Antrea tunnel port ({kind}, flow-based)", mtu=cfg.mtu)
    return gw, tun


def add_pod(ifs: Any, pod: Any, pi: int, ni: int, node_name: str, veth_mac: int,
            pod_mac: int, ip: int, owner: str, mtu: int, lo_ip: int, lo_mtu: int) -> int:
    """The pod's OVS port (its host-side veth), eth0 and lo; the eth0's interface id."""
    kname = interface_name(pod.name, pod.key)
    port = ifs.add(f"{node_name}/{kname}", C.IF_OVS_PORT, desc=f"OVS port of {owner}",
                   kname=kname, node=ni, mac=veth_mac, owner=pi, mtu=mtu)
    eth = ifs.add(f"{pod.key}/eth0", C.IF_POD_ETH, desc=owner, kname="eth0", node=ni,
                  mac=pod_mac, ip=ip, owner=pi, mtu=mtu)
    lo = ifs.add(f"{pod.key}/lo", C.IF_POD_LO, desc=f"{owner} loopback", kname="lo",
                 node=ni, ip=lo_ip, owner=pi, mtu=lo_mtu)
    ifs.rows[port]["peer"], ifs.rows[eth]["peer"] = eth, port
    ifs.rows[lo]["peer"] = lo
    return eth


def node_routes(cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    """Every node's main table as the Antrea agent leaves it (module docstring), most
    specific first, as ``kemu.compiler.routes.Route`` keyword arguments."""
    cfg = cluster.config
    tables: dict[str, list[dict[str, Any]]] = {}
    for node in cluster.nodes:
        routes: list[dict[str, Any]] = [
            dict(prefix=node.pod_cidr, dev=GATEWAY, src=node.gateway_ip, proto="kernel",
                 target_node=node.name),
            dict(prefix=cfg.node_network, dev="eth0", src=node.internal_ip, proto="kernel")]
        for peer in cluster.nodes:
            if peer.name == node.name:
                continue
            if encap(cfg):
                routes.append(dict(prefix=peer.pod_cidr, dev=GATEWAY, via=peer.gateway_ip,
                                   proto="boot", onlink=True, target_node=peer.name))
            else:
                routes.append(dict(prefix=peer.pod_cidr, dev="eth0", via=peer.internal_ip,
                                   proto="boot", target_node=peer.name))
        if cfg.gateway_ip is not None:
            routes.append(dict(prefix=ipaddress.IPv4Network("0.0.0.0/0"), dev="eth0",
                               via=cfg.gateway_ip))
        routes.sort(key=lambda r: (-r["prefix"].prefixlen, int(r["prefix"].network_address)))
        tables[node.name] = routes
    return tables


def node_devices(cluster: Cluster) -> tuple[str, ...]:
    """The devices a route set by ``spec.routes`` can name."""
    return ("eth0", GATEWAY)


def finish(cluster: Cluster, tables: Tables) -> Tables:
    """The mode's ``Tables`` fields: br-int's pipeline with the tunnel type, the agent's
    masquerade of pod traffic leaving the cluster's pod CIDR."""
    cfg = cluster.config
    return dataclasses.replace(
        tables,
        ovs_tunnel=tunnel_code(cfg),
        br_netfilter=np.zeros(len(tables.br_netfilter), dtype=np.uint8),
        egress_masq=True,
        nonmasq_net=np.array([int(cfg.cluster_cidr.network_address)], dtype=np.uint32),
        nonmasq_mask=np.array([int(cfg.cluster_cidr.netmask)], dtype=np.uint32),
    )
