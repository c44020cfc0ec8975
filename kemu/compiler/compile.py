"""Cluster model -> ``Tables``: pure and deterministic (the same cluster gives the same bytes).

What it decides, per SEMANTICS: the interfaces of the emulated datapath (L2-1: a veth pair
per pod, the node bridge ``cbr0`` holding the pod CIDR's gateway address, hairpin on every
pod port L2-4; the node uplink on the node network; flannel.1 in VXLAN mode, OV-1), the
shared route table (R-1, OV-2, OV-4), and kube-proxy's service frontends and backends in
iptables mode (S-3: ClusterIP, externalIPs, LoadBalancer ingress, NodePorts; S-4 backends;
S-11 only ready endpoints, falling back to serving+terminating ones when none is ready,
per node for a Local traffic policy (KEP-1669, ``BE_LOCAL_FALLBACK``);
S-13 headless and ExternalName services are not proxied; E-5 LB ipMode is not modelled:
every ingress IP is treated as VIP; E-4 loadBalancerSourceRanges per service port), the
gateway's routes (``RT_LB`` host routes to the node serving each LoadBalancer address in
routed mode) and the L2 announcement of LoadBalancer addresses (L2 mode: the announcing
node's eth0 owns the address, so its stack answers ARP for it and injected frames are
addressed to it; ``routes.lb_announcers``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import TYPE_CHECKING

import numpy as np

from kemu._gc import paused_gc
from kemu.compiler import antrea, cilium, cni_routed, kube_router
from kemu.compiler.policy import compile_policies
from kemu.compiler.routes import Route, lb_announcers, node_routes
from kemu.control.model import Service
from kemu.dataplane import codes as C
from kemu.dataplane.tables import Tables

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster

ROUTE_DROPS = {"blackhole": C.DROP_BLACKHOLE, "unreachable": C.DROP_ROUTE_UNREACHABLE,
               "prohibit": C.DROP_ROUTE_PROHIBIT}
LOOPBACK = 0x7F000001  # 127.0.0.1, a pod's lo
LO_MTU = 65536         # a pod's lo and a node's own processes (loopback_setup)
VXLAN_OVERHEAD = 50    # L2-2, OV-1: flannel's encapOverhead (outer Ether+IPv4+UDP+VXLAN)


def mac_to_int(mac: str) -> int:
    return int(mac.replace(":", "").replace("-", ""), 16)


def _ip(addr: object) -> int:
    if type(addr) is ipaddress.IPv4Address:  # the model's usual form: no re-parsing
        return int(addr)
    return int(ipaddress.IPv4Address(str(addr)))


def kernel_veth_name(pod_key: str) -> str:
    """The node-side veth name a Linux node would use (<= 15 chars), stable per pod."""
    return "veth" + hashlib.sha256(pod_key.encode()).hexdigest()[:8]


class _Ifaces:
    """Accumulates interface rows in a fixed order."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, name: str, kind: int, *, desc: str = "", kname: str = "", node: int = -1,
            mac: int = 0, ip: int = 0, bridge: int = -1, hairpin: int = 0,
            owner: int = -1, mtu: int = 1500) -> int:
        self.rows.append(dict(name=name, kind=kind, desc=desc, kname=kname or name.split("/")[-1],
                              node=node, mac=mac, ip=ip, bridge=bridge, hairpin=hairpin,
                              owner=owner, peer=-1, mtu=mtu))
        return len(self.rows) - 1

    def column(self, key: str, dtype: type) -> np.ndarray:
        return np.array([r[key] for r in self.rows], dtype=dtype)


def _veth_names(cluster: Cluster) -> dict[str, str]:
    """``veth-<pod>`` per pod, with the namespace added where two pods of a node share a name."""
    by_node: dict[tuple[str, str], int] = {}
    for p in cluster.pods:
        by_node[(p.node_name, p.name)] = by_node.get((p.node_name, p.name), 0) + 1
    return {p.key: (f"veth-{p.name}" if by_node[(p.node_name, p.name)] == 1
                    else f"veth-{p.namespace}-{p.name}") for p in cluster.pods}


def _owner_text(pod) -> str:
    if pod.owner is None:
        return f"Pod {pod.namespace}/{pod.name}"
    return f"Pod {pod.namespace}/{pod.name} (owner {pod.owner.kind}/{pod.owner.name})"


def compile_cluster(cluster: Cluster) -> Tables:
    """The flat tables of ``cluster`` (the cyclic garbage collector paused meanwhile)."""
    with paused_gc():
        return _compile(cluster)


def _compile(cluster: Cluster) -> Tables:
    cfg = cluster.config
    nodes = cluster.nodes
    node_index = {n.name: i for i, n in enumerate(nodes)}
    n_nodes = len(nodes)
    seg = n_nodes  # the node-network segment's bridge id
    ifs = _Ifaces()
    bridge_ports: list[list[int]] = [[] for _ in range(n_nodes + 1)]
    node_eth, node_br, node_vtep, node_local = [], [], [], []
    pod_eth_if = [-1] * len(cluster.pods)
    veth_names = _veth_names(cluster)
    # L2-2: the uplinks have the Cluster's MTU; in VXLAN mode flannel gives flannel.1 that
    # minus 50 and writes it as FLANNEL_MTU into subnet.env, which the flannel CNI plugin
    # hands the bridge plugin: cbr0, the veths and the pods' eth0 get it too; host-gw:
    # every device the uplink's MTU
    mtu = cfg.mtu
    pod_mtu = mtu - VXLAN_OVERHEAD if cfg.mode == "vxlan" else mtu
    kr = kube_router.active(cluster)  # kube-router's names, MTU, devices (kube_router.py)
    if kr:
        pod_mtu = kube_router.pod_mtu(cfg)
    routed = cni_routed.routed_mode(cfg)  # AWS VPC CNI, Azure CNI: routed veths
    bridged = routed is not None and routed.bridged  # Azure bridge mode: azure0 (cni_routed)
    br_dev = kube_router.BRIDGE if kr else cni_routed.BRIDGE if bridged else "cbr0"
    ant = antrea.active(cluster)  # Antrea: br-int's OVS ports (antrea.py)
    if ant:
        pod_mtu, br_dev = antrea.pod_mtu(cfg), antrea.BRIDGE
    cil = cilium.active(cfg)  # Cilium: lxc devices, cilium_host, cilium_vxlan (cilium.py)
    if cil is not None:
        routed = cilium.routed_mode(cfg)
        pod_mtu = cilium.pod_mtu(cfg)
    pods_by_node: dict[str, list[int]] = {}
    for pi, p in enumerate(cluster.pods):
        pods_by_node.setdefault(p.node_name, []).append(pi)

    for ni, node in enumerate(nodes):
        nm = node.name
        if bridged:  # eth0 enslaved to azure0, which holds the node's address
            eth, br = cni_routed.add_bridge_node(ifs, node, ni, mac_to_int(node.mac),
                                                 _ip(node.internal_ip), mtu)
            node_eth.append(eth)
            node_br.append(br)
            bridge_ports[seg].append(eth)
            bridge_ports[ni].append(eth)
        else:
            node_eth.append(ifs.add(f"{nm}/eth0", C.IF_NODE_ETH, desc=f"Node {nm} uplink",
                                    node=ni, mac=mac_to_int(node.mac),
                                    ip=_ip(node.internal_ip), bridge=seg, mtu=mtu))
            bridge_ports[seg].append(node_eth[-1])
        if routed is not None and not bridged:  # no bridge (cni_routed): the slot names eth0
            node_br.append(node_eth[-1])
        elif ant:  # br-int, antrea-gw0 (the slot), antrea-tun0 (the VTEP's slot)
            gw, tun = antrea.add_node(ifs, cluster, node, ni, mac_to_int(node.bridge_mac),
                                      _ip(node.gateway_ip))
            node_br.append(gw)
        elif not bridged:
            node_br.append(ifs.add(f"{nm}/{br_dev}", C.IF_BRIDGE, desc=f"Node {nm} pod bridge",
                                   node=ni, mac=mac_to_int(node.bridge_mac),
                                   ip=_ip(node.gateway_ip), bridge=ni, mtu=pod_mtu))
        if ant:
            node_vtep.append(tun)
        elif cfg.mode == "vxlan":
            node_vtep.append(ifs.add(f"{nm}/flannel.1", C.IF_VTEP, desc=f"Node {nm} VXLAN VTEP",
                                     node=ni, mac=mac_to_int(node.vtep_mac),
                                     ip=_ip(node.pod_cidr.network_address),
                                     mtu=mtu - VXLAN_OVERHEAD))
        else:
            node_vtep.append(-1)
        node_local.append(ifs.add(f"{nm}/local", C.IF_NODE_LOCAL, desc=f"Node {nm} processes",
                                  node=ni, ip=_ip(node.internal_ip), mtu=LO_MTU))
        for pi in pods_by_node.get(nm, []):
            pod = cluster.pods[pi]
            if pod.host_network:
                continue
            owner = _owner_text(pod)
            if cil is not None:  # Cilium's lxc<hash>, no bridge (cilium.py)
                pod_eth_if[pi] = cilium.add_pod(
                    ifs, pod, pi, ni, nm, _veth_mac_int(pod.key), mac_to_int(pod.mac),
                    _ip(pod.ip), owner, pod_mtu)
                continue
            if routed is not None and not bridged:  # a routed veth, no bridge (cni_routed)
                pod_eth_if[pi] = cni_routed.add_pod(
                    ifs, routed, pod, pi, ni, nm, _veth_mac_int(pod.key), mac_to_int(pod.mac),
                    _ip(pod.ip), owner, pod_mtu)
                continue
            if ant:  # an OVS port, no bridge (antrea)
                pod_eth_if[pi] = antrea.add_pod(
                    ifs, pod, pi, ni, nm, _veth_mac_int(pod.key), mac_to_int(pod.mac),
                    _ip(pod.ip), owner, pod_mtu, LOOPBACK, LO_MTU)
                continue
            kname = (cni_routed.host_veth_name("azv", pod.namespace, pod.name) if bridged
                     else kernel_veth_name(pod.key))  # Azure names its veths azv<hash>
            veth = ifs.add(f"{nm}/{kname if bridged else veth_names[pod.key]}", C.IF_VETH,
                           desc=f"veth of {owner} on node {nm}", kname=kname, node=ni,
                           mac=_veth_mac_int(pod.key), bridge=ni, hairpin=1, owner=pi,
                           mtu=pod_mtu)
            bridge_ports[ni].append(veth)
            eth = ifs.add(f"{pod.key}/eth0", C.IF_POD_ETH, desc=owner, kname="eth0", node=ni,
                          mac=mac_to_int(pod.mac), ip=_ip(pod.ip), owner=pi, mtu=pod_mtu)
            lo = ifs.add(f"{pod.key}/lo", C.IF_POD_LO, desc=f"{owner} loopback", kname="lo",
                         node=ni, ip=LOOPBACK, owner=pi, mtu=LO_MTU)
            ifs.rows[veth]["peer"], ifs.rows[eth]["peer"] = eth, veth
            ifs.rows[lo]["peer"] = lo
            pod_eth_if[pi] = eth
    ext_if = []
    for ei, ext in enumerate(cfg.external_hosts):
        ext_if.append(ifs.add(f"ext/{ext.name}/eth0", C.IF_EXT_ETH,
                              desc=f"External host {ext.name}", kname="eth0",
                              mac=mac_to_int(ext.mac), ip=_ip(ext.ip), bridge=seg, owner=ei,
                              mtu=mtu))
        bridge_ports[seg].append(ext_if[-1])
    gw_if = -1
    if cfg.gateway_ip is not None:
        gw_if = ifs.add("gateway/eth0", C.IF_GW_ETH, desc="Node network gateway", kname="eth0",
                        mac=mac_to_int(cluster.gateway_mac), ip=_ip(cfg.gateway_ip), bridge=seg,
                        mtu=mtu)
        bridge_ports[seg].append(gw_if)
    kr_devs = kube_router.add_devices(cluster, ifs, node_eth, node_br) if kr else None
    if cil is not None:  # cilium_host/cilium_net, cilium_vxlan (tunnel mode)
        node_vtep = cilium.add_devices(cluster, ifs)

    # bridges
    br_start, br_count, br_flat = [], [], []
    for ports in bridge_ports:
        br_start.append(len(br_flat))
        br_count.append(len(ports))
        br_flat.extend(ports)

    # routes: pod CIDRs, node network, default
    routes = [(_ip(c.network_address), c.prefixlen, C.RT_POD_CIDR, i)
              for i, n in enumerate(nodes) for c in (n.pod_cidr, *n.pod_blocks)]
    routes.append((_ip(cfg.node_network.network_address), cfg.node_network.prefixlen,
                   C.RT_NODE_NET, -1))
    announcers = lb_announcers(cluster)
    if cfg.lb_mode == "routed" and cfg.gateway_ip is not None:
        routes += [(_ip(ip), 32, C.RT_LB, node_index[node]) for ip, node in announcers.items()]
    if cfg.gateway_ip is not None:
        routes.append((0, 0, C.RT_DEFAULT, -1))
    routes.sort(key=lambda r: (r[1], r[0]))
    if routed is not None:
        routed_routes = cni_routed.shared_routes(
            cluster, routed, pod_eth_if, node_index,
            {i: node_br[r["node"]] for i, r in enumerate(ifs.rows) if r["kind"] == C.IF_POD_ETH}
            if bridged else
            {r["peer"]: i for i, r in enumerate(ifs.rows) if r["kind"] == C.IF_VETH_HOST})
        routes = [r[:4] for r in routed_routes]

    sv = _compile_services(cluster, node_index)
    mode_devs = kr_devs.node_devs if kr_devs is not None else (
        [{"eth0": node_eth[i], antrea.GATEWAY: node_br[i]} for i in range(n_nodes)]
        if ant else None)
    nrt = _node_route_tables(cluster, node_eth, node_br, node_vtep, mode_devs)

    # address ownership (for L2 fix-up on injection and for finding where a source lives)
    owners: dict[int, int] = {}
    for i, r in enumerate(ifs.rows):
        if r["kind"] in (C.IF_POD_ETH, C.IF_EXT_ETH, C.IF_GW_ETH, C.IF_NODE_ETH, C.IF_BRIDGE,
                         C.IF_CILIUM_HOST, C.IF_OVS_GW):
            owners.setdefault(r["ip"], i)
    if cfg.lb_mode == "l2":  # the announcing node's eth0 answers ARP for the address
        for ip, node in announcers.items():
            owners.setdefault(_ip(ip), node_eth[node_index[node]])
    own = sorted(owners.items())

    ifs_peer = ifs.column("peer", np.int32)
    tables = Tables(
        if_name=tuple(r["name"] for r in ifs.rows),
        if_desc=tuple(r["desc"] for r in ifs.rows),
        if_kernel_name=tuple(r["kname"] for r in ifs.rows),
        if_kind=ifs.column("kind", np.int8),
        if_node=ifs.column("node", np.int32),
        if_mac=ifs.column("mac", np.int64),
        if_ip=ifs.column("ip", np.uint32),
        if_peer=ifs_peer,
        if_bridge=ifs.column("bridge", np.int32),
        if_hairpin=ifs.column("hairpin", np.uint8),
        if_owner=ifs.column("owner", np.int32),
        if_mtu=ifs.column("mtu", np.int32),
        br_name=tuple(f"{n.name}/{br_dev}" for n in nodes) + ("node-network",),
        br_local_if=np.array(node_br + [-1], dtype=np.int32),
        br_netfilter=np.array([1] * n_nodes + [0], dtype=np.uint8),
        br_port_start=np.array(br_start, dtype=np.int32),
        br_port_count=np.array(br_count, dtype=np.int32),
        br_ports=np.array(br_flat, dtype=np.int32),
        ageing_ns=300 * 10**9,
        node_name=tuple(n.name for n in nodes),
        node_eth_if=np.array(node_eth, dtype=np.int32),
        node_br_if=np.array(node_br, dtype=np.int32),
        node_vtep_if=np.array(node_vtep, dtype=np.int32),
        node_local_if=np.array(node_local, dtype=np.int32),
        node_ip=np.array([_ip(n.internal_ip) for n in nodes], dtype=np.uint32),
        node_br_ip=np.array([_ip(n.gateway_ip) for n in nodes], dtype=np.uint32),
        rt_prefix=np.array([r[0] for r in routes], dtype=np.uint32),
        rt_len=np.array([r[1] for r in routes], dtype=np.uint8),
        rt_kind=np.array([r[2] for r in routes], dtype=np.int8),
        rt_node=np.array([r[3] for r in routes], dtype=np.int32),
        **nrt,
        gateway_ip=_ip(cfg.gateway_ip) if cfg.gateway_ip is not None else 0,
        gateway_if=gw_if,
        cluster_cidr=(_ip(cfg.cluster_cidr.network_address), _ip(cfg.cluster_cidr.netmask)),
        vxlan=cfg.mode == "vxlan",
        masq_random_fully=bool(cfg.masquerade_random_fully),
        egress_masq=bool(cfg.ip_masq),
        egress_random_fully=bool(cfg.ip_masq_random_fully),
        nonmasq_net=np.array([_ip(n.network_address) for n in cfg.non_masquerade()],
                             dtype=np.uint32),
        nonmasq_mask=np.array([_ip(n.netmask) for n in cfg.non_masquerade()],
                              dtype=np.uint32),
        **sv,
        own_ip=np.array([o[0] for o in own], dtype=np.uint32),
        own_if=np.array([o[1] for o in own], dtype=np.int32),
        pod_key=tuple(p.key for p in cluster.pods),
        pod_eth_if=np.array(pod_eth_if, dtype=np.int32),
        ext_name=tuple(e.name for e in cfg.external_hosts),
        ext_if=np.array(ext_if, dtype=np.int32),
        **compile_policies(cluster),
    )
    if kr_devs is not None:
        tables = kube_router.finish(cluster, tables, kr_devs)
    if ant:
        tables = antrea.finish(cluster, tables)
    if routed is not None:
        tables = cni_routed.finish(tables, cluster, routed, routed_routes)
    if cil is not None:
        tables = cilium.finish(tables, cluster, node_vtep)
    return tables


def _veth_mac(pod_key: str) -> str:
    d = hashlib.sha256(f"veth/{pod_key}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in d[:5])


def _veth_mac_int(pod_key: str) -> int:
    """``mac_to_int(_veth_mac(pod_key))`` without the text in between."""
    d = hashlib.sha256(f"veth/{pod_key}".encode()).digest()
    return 0x02 << 40 | int.from_bytes(d[:5], "big")


def _proxied(svc: Service) -> bool:
    """S-13: headless and ExternalName services are DNS only."""
    return svc.cluster_ip is not None and svc.type != "ExternalName"


def _compile_services(cluster: Cluster, node_index: dict[str, int]) -> dict:
    pod_index = {p.key: i for i, p in enumerate(cluster.pods)}
    fe: list[tuple[int, int, int, int, int]] = []
    sp_name, sp_ip, sp_port, sp_proto, sp_flags, sp_aff = [], [], [], [], [], []
    sp_start, sp_count = [], []
    be_ip, be_port, be_node, be_pod, be_flags = [], [], [], [], []
    sp_src_start, sp_src_count, src_net, src_mask = [], [], [], []
    for svc in cluster.services:
        if not _proxied(svc):
            continue
        for port in svc.ports:
            sp = len(sp_name)
            proto = C.PROTO_NUMBERS[port.protocol]
            sp_name.append(f"{svc.key}:{port.name}" if port.name else svc.key)
            sp_ip.append(_ip(svc.cluster_ip))
            sp_port.append(port.port)
            sp_proto.append(proto)
            flags = 0
            if svc.session_affinity == "ClientIP":
                flags |= C.SP_AFFINITY
            if svc.internal_traffic_policy == "Local":
                flags |= C.SP_ITP_LOCAL
            if svc.external_traffic_policy == "Local":
                flags |= C.SP_ETP_LOCAL
            sp_flags.append(flags)
            sp_aff.append(svc.affinity_timeout * 10**9)
            backends = cluster.backends(svc, port)
            usable = [(ep, tp, 0) for ep, tp in backends if ep.ready]
            if not usable:  # S-11: fall back to serving and terminating endpoints
                usable = [(ep, tp, 0) for ep, tp in backends if ep.serving and ep.terminating]
            elif flags & (C.SP_ITP_LOCAL | C.SP_ETP_LOCAL):
                # KEP-1669: a Local policy falls back per node: a node without a ready
                # endpoint uses its own serving+terminating ones (only for Local traffic)
                ready_nodes = {ep.node_name for ep, _tp, _f in usable}
                usable += [(ep, tp, C.BE_LOCAL_FALLBACK) for ep, tp in backends
                           if not ep.ready and ep.serving and ep.terminating
                           and ep.node_name not in ready_nodes]
            sp_start.append(len(be_ip))
            sp_count.append(len(usable))
            for ep, tp, bf in usable:
                be_ip.append(_ip(ep.ip))
                be_port.append(tp)
                be_node.append(node_index.get(ep.node_name, -1))
                be_pod.append(pod_index.get(ep.pod, -1))
                be_flags.append(bf)
            sp_src_start.append(len(src_net))
            ranges = svc.load_balancer_source_ranges if svc.type == "LoadBalancer" else []
            sp_src_count.append(len(ranges))
            src_net.extend(_ip(n.network_address) for n in ranges)
            src_mask.extend(_ip(n.netmask) for n in ranges)
            fe.append((_ip(svc.cluster_ip), port.port, proto, C.FE_CLUSTER_IP, sp))
            for ip in svc.external_ips:
                fe.append((_ip(ip), port.port, proto, C.FE_EXTERNAL_IP, sp))
            if svc.type == "LoadBalancer":
                for ip in svc.load_balancer_ips:
                    fe.append((_ip(ip), port.port, proto, C.FE_LOAD_BALANCER, sp))
            if port.node_port and svc.type in ("NodePort", "LoadBalancer"):
                fe.append((0, port.node_port, proto, C.FE_NODE_PORT, sp))
    # hostPort (the CNI portmap plugin): CNI-HOSTPORT-DNAT, --dst-type LOCAL -p PROTO --dport
    # HOSTPORT -j DNAT --to podIP:containerPort on the pod's node only: a frontend on each of
    # that node's own addresses (eth0, cbr0, flannel.1), matched there only (FE_HOST_PORT)
    for pi, pod in enumerate(cluster.pods):
        ni = node_index.get(pod.node_name, -1)
        if pod.host_network or ni < 0 or pod.ip is None:
            continue  # a hostNetwork pod binds the node's port itself: nothing to map
        node = cluster.nodes[ni]
        local = [_ip(node.internal_ip), _ip(node.gateway_ip)]
        if cni_routed.routed_mode(cluster.config) is not None:
            local = [_ip(node.internal_ip)]  # no bridge address: eth0's only
        elif cluster.config.cni.name == "cilium":  # eth0 and cilium_host's router IP
            local = [_ip(node.internal_ip), _ip(node.gateway_ip)]
        if cluster.config.mode == "vxlan":
            local.append(_ip(node.pod_cidr.network_address))
        for cp in pod.container_ports():
            if not cp.host_port:
                continue
            sp = len(sp_name)
            proto = C.PROTO_NUMBERS[cp.protocol]
            sp_name.append(f"{pod.key}:{cp.host_port}/{cp.protocol}")
            sp_ip.append(_ip(node.internal_ip))
            sp_port.append(cp.host_port)
            sp_proto.append(proto)
            sp_flags.append(C.SP_HOST_PORT)
            sp_aff.append(0)
            sp_start.append(len(be_ip))
            sp_count.append(1)
            sp_src_start.append(len(src_net))  # no source ranges: not a LoadBalancer
            sp_src_count.append(0)
            be_ip.append(_ip(pod.ip))
            be_port.append(cp.port)
            be_node.append(ni)
            be_pod.append(pi)
            be_flags.append(0)
            for ip in local:
                fe.append((ip, cp.host_port, proto, C.FE_HOST_PORT, sp))
    fe.sort()
    return dict(
        fe_ip=np.array([f[0] for f in fe], dtype=np.uint32),
        fe_port=np.array([f[1] for f in fe], dtype=np.uint16),
        fe_proto=np.array([f[2] for f in fe], dtype=np.uint8),
        fe_kind=np.array([f[3] for f in fe], dtype=np.int8),
        fe_sp=np.array([f[4] for f in fe], dtype=np.int32),
        sp_name=tuple(sp_name),
        sp_ip=np.array(sp_ip, dtype=np.uint32),
        sp_port=np.array(sp_port, dtype=np.uint16),
        sp_proto=np.array(sp_proto, dtype=np.uint8),
        sp_flags=np.array(sp_flags, dtype=np.int32),
        sp_affinity_ns=np.array(sp_aff, dtype=np.int64),
        sp_be_start=np.array(sp_start, dtype=np.int32),
        sp_be_count=np.array(sp_count, dtype=np.int32),
        be_ip=np.array(be_ip, dtype=np.uint32),
        be_port=np.array(be_port, dtype=np.uint16),
        be_node=np.array(be_node, dtype=np.int32),
        be_pod=np.array(be_pod, dtype=np.int32),
        be_flags=np.array(be_flags, dtype=np.int32),
        sp_src_start=np.array(sp_src_start, dtype=np.int32),
        sp_src_count=np.array(sp_src_count, dtype=np.int32),
        src_net=np.array(src_net, dtype=np.uint32),
        src_mask=np.array(src_mask, dtype=np.uint32),
    )


def _node_route_tables(cluster: Cluster, node_eth: list[int], node_br: list[int],
                       node_vtep: list[int], mode_devs: list[dict[str, int]] | None = None
                       ) -> dict[str, np.ndarray]:
    """``Tables.node_rt_*``/``nrt_*``: the whole table of every node whose routes were set
    one by one (R-2, ``kemu.compiler.routes.apply_changes``), longest prefix first."""
    nodes = cluster.nodes
    start, count = [0] * len(nodes), [0] * len(nodes)
    rows: list[tuple[int, int, int, int]] = []
    changed = {ch.node for ch in cluster.config.routes}
    tables = node_routes(cluster) if changed else {}
    for i, n in enumerate(nodes):
        if n.name not in changed:
            continue
        devs = {"eth0": node_eth[i], "cbr0": node_br[i], "flannel.1": node_vtep[i]} \
            if mode_devs is None else mode_devs[i]
        start[i] = len(rows)
        routes: list[Route] = tables[n.name]
        for r in routes:  # most specific first already
            out = devs[r.dev] if r.type == "unicast" else -ROUTE_DROPS[r.type]
            rows.append((_ip(r.prefix.network_address), r.prefix.prefixlen, out,
                         _ip(r.via) if r.via is not None else 0))
        count[i] = len(rows) - start[i]
    return {
        "node_rt_start": np.array(start, dtype=np.int32),
        "node_rt_count": np.array(count, dtype=np.int32),
        "nrt_prefix": np.array([r[0] for r in rows], dtype=np.uint32),
        "nrt_len": np.array([r[1] for r in rows], dtype=np.uint8),
        "nrt_if": np.array([r[2] for r in rows], dtype=np.int32),
        "nrt_nh": np.array([r[3] for r in rows], dtype=np.uint32),
    }
