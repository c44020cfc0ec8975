"""The kernel harness's topology for a kemu cluster, and the names that tie the two together.

``kernel_topology(emu)`` turns a loaded ``kemu.EmulatedCluster`` into the plain dict that
``tests.kernel.netns.KernelCluster`` builds from network namespaces: the same nodes (node IP and
eth0 MAC, pod CIDR, cbr0 address and MAC), the same pods (IP, eth0 MAC, the node-side veth with
kemu's kernel name and MAC, real listening sockets where kemu's stack listens:
``kemu.control.listen``), the same
external hosts and gateway, and the Services as kemu resolved them (ClusterIP port -> ready
endpoints ``ip:targetPort``, nodePorts, LoadBalancer ingress IPs with their
``loadBalancerSourceRanges``). Every value is read from kemu's compiled tables
(``emu.tables``), i.e. from what kemu's datapath itself uses, so the two clusters cannot drift.

What the harness cannot model is left out and listed under ``"kemu_skipped"`` (a key the
harness ignores):

* Services with ``sessionAffinity: ClientIP`` (S-8), ``internalTrafficPolicy: Local`` or
  ``externalTrafficPolicy: Local`` (S-9, E-2): the harness writes kube-proxy rules for the
  Cluster/Cluster/no-affinity shape only, so the whole Service is left out (a kernel packet to
  its ClusterIP or nodePort is not proxied at all);
* SCTP service ports and externalIPs (no rules for them); LoadBalancer ingress IPs get
  kube-proxy's rules (``load_balancer_ips``, ``source_ranges``), but not how the address
  reaches a node (MetalLB's ARP answer, the gateway's route): a test sends to the announcing
  node's MAC;
* headless and ExternalName Services are not proxied by kube-proxy either (S-13): not listed;
* hostNetwork pods (no veth, no sandbox netns);
* ``--random-fully`` (kemu's seeded random masquerade ports; the kernel's are random) and
  non-masquerade CIDRs other than the cluster CIDR (flannel's rule has only that one).

``"ip_masq"`` asks the harness for flannel's masquerade of pod traffic leaving the cluster
(``tests.kernel.netns.flannel_masq_rules``) when kemu's cluster has it (``spec.masquerade``).

``interface_map(emu)`` maps kemu's interface names to the harness's ``Obs.iface`` names. They
are the same (``node1/eth0``, ``node1/cbr0``, ``default/a/eth0``, ``default/a/lo``,
``ext/client/eth0``, ``gateway/eth0``) except the node ends of the veth pairs: kemu names them
``node1/veth-a``, the harness ``node1/<kernel name>`` (``node1/veth9efb3611``). kemu's
``<node>/local`` (the node's own processes) is never captured and has no kernel counterpart;
the harness's node-network switch ports (``net/n-node1``, ``net/gw``, ``net/x-client``) and the
nodes' ``lo`` have no kemu counterpart (kemu's node network is a port-less L2 segment).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kemu.control.listen import listening_map
from kemu.dataplane import codes as C

__all__ = ["kernel_topology", "interface_map", "mac_roles", "mac_str", "ip_str",
           "HARNESS_ONLY_PREFIXES"]

#: ``Obs.iface`` prefixes the harness captures that kemu has no interface for.
HARNESS_ONLY_PREFIXES = ("net/",)

_PROTO = {C.PROTO_TCP: "tcp", C.PROTO_UDP: "udp"}


def mac_str(mac: int) -> str:
    """48-bit int -> ``02:00:...`` (lower case, as the harness prints MACs)."""
    return ":".join(f"{b:02x}" for b in int(mac).to_bytes(6, "big"))


def ip_str(ip: int) -> str:
    return str(ipaddress.IPv4Address(int(ip)))


def interface_map(emu: Any) -> dict[str, str]:
    """kemu interface name -> harness ``Obs.iface`` name, for every interface both have."""
    t = emu.tables
    out: dict[str, str] = {}
    for i, name in enumerate(t.if_name):
        kind = int(t.if_kind[i])
        if kind == C.IF_NODE_LOCAL:
            continue                     # the node's processes: no device, never captured
        if kind == C.IF_VETH:
            node = name.split("/", 1)[0]
            out[name] = f"{node}/{t.if_kernel_name[i]}"
        else:
            out[name] = name
    return out


def mac_roles(emu: Any) -> dict[str, str]:
    """MAC (``aa:bb:..``) -> owner role, the same for kemu and the kernel: ``default/a`` (pod
    eth0), ``node1/veth-a``, ``node1/cbr0``, ``node1/eth0``, ``ext/client``, ``gateway``,
    ``bcast``. Names are kemu's (veths included)."""
    t = emu.tables
    roles: dict[str, str] = {"ff:ff:ff:ff:ff:ff": "bcast", "00:00:00:00:00:00": "zero"}
    for i, name in enumerate(t.if_name):
        mac = int(t.if_mac[i])
        if not mac:
            continue
        kind = int(t.if_kind[i])
        if kind == C.IF_POD_ETH:
            role = name.rsplit("/", 1)[0]             # default/a
        elif kind == C.IF_EXT_ETH:
            role = name.rsplit("/", 1)[0]             # ext/client
        elif kind == C.IF_GW_ETH:
            role = "gateway"
        else:
            role = name                               # node1/cbr0, node1/eth0, node1/veth-a
        roles[mac_str(mac)] = role
    return roles


def _listen(ports: list[tuple[str, int]]) -> list[list[Any]]:
    out = []
    for proto, port in ports:
        p = str(proto).lower()
        if p in ("tcp", "udp") and [p, int(port)] not in out:
            out.append([p, int(port)])
    return out


def kernel_topology(emu: Any) -> dict[str, Any]:
    """The harness topology dict of ``emu``'s cluster (see the module docstring).

    Every node gets a default route via the gateway, as in kemu (``kemu/compiler/routes.py``).
    A kemu cluster with ``gateway: none`` (no gateway, no default routes) becomes nodes without
    a default route; the harness always builds a gateway host, so it gets a free address of the
    node network (recorded under ``kemu_skipped``). kemu removes default routes cluster-wide
    only; a test that needs one node without it changes the kernel for its own run.
    """
    t = emu.tables
    m = emu.model
    cfg = m.config
    listening = listening_map(m)
    gw_if = int(t.gateway_if)
    skipped: list[str] = []
    if gw_if >= 0:
        # kemu's gateway is a router (the pod CIDRs via their nodes, a default route out)
        gateway = {"ip": ip_str(t.if_ip[gw_if]), "mac": mac_str(t.if_mac[gw_if]),
                   "router": True}
    else:
        used = {int(ip) for ip in t.if_ip}
        free = next(str(h) for h in cfg.node_network.hosts() if int(h) not in used)
        gateway = {"ip": free, "mac": m.gateway_mac.lower()}
        skipped.append(f"gateway: none in kemu; the harness's gateway host gets {free} and no "
                       "node has a default route")
    topo: dict[str, Any] = {
        "node_network": str(cfg.node_network),
        "gateway": gateway,
        "cluster_cidr": str(cfg.cluster_cidr),
        "service_cidr": str(cfg.service_cidr),
        "static_neighbors": True,
        "nodes": [],
        "pods": [],
        "external_hosts": [],
        "services": [],
        "kemu_skipped": skipped,
    }
    # flannel's ipMasq (M-5, OV-5): the harness writes flannel's rule, whose only exception is
    # the cluster CIDR, and no MASQUERADE with --random-fully (the kernel's port would be
    # random, kemu's seeded)
    nonmasq = [(int(n), int(m)) for n, m in zip(t.nonmasq_net, t.nonmasq_mask, strict=True)]
    topo["ip_masq"] = bool(t.egress_masq) and nonmasq == [tuple(t.cluster_cidr)]
    if bool(t.egress_masq) and not topo["ip_masq"]:
        skipped.append("masquerade: nonMasqueradeCIDRs other than the cluster CIDR (flannel "
                       "cannot say it): no masquerade rule in the kernel")
    if t.masq_random_fully or (t.egress_masq and t.egress_random_fully):
        skipped.append("MASQUERADE --random-fully: the kernel's rules keep the port")
    if cfg.mode != "host-gw":
        raise ValueError(f"the kernel harness builds host-gw clusters only, not {cfg.mode!r}")
    for n, node in enumerate(m.nodes):
        name = t.node_name[n]
        assert name == node.name
        eth, br = int(t.node_eth_if[n]), int(t.node_br_if[n])
        topo["nodes"].append({
            "name": name,
            "ip": ip_str(t.if_ip[eth]),
            "mac": mac_str(t.if_mac[eth]),
            "pod_cidr": str(node.pod_cidr),
            "bridge_ip": ip_str(t.if_ip[br]),
            "bridge_mac": mac_str(t.if_mac[br]),
            "default_route": gw_if >= 0,
        })
    for k, key in enumerate(t.pod_key):
        eth = int(t.pod_eth_if[k])
        pod = m.pods[k]
        assert pod.key == key
        if eth < 0:
            topo["kemu_skipped"].append(f"pod {key}: hostNetwork")
            continue
        node = pod.node_name
        veth = int(t.if_peer[eth])            # the node end of the pod's veth pair
        assert int(t.if_kind[veth]) == C.IF_VETH, t.if_name[veth]
        topo["pods"].append({
            "key": key,
            "node": node,
            "ip": ip_str(t.if_ip[eth]),
            "mac": mac_str(t.if_mac[eth]),
            "veth": t.if_kernel_name[veth],
            "veth_mac": mac_str(t.if_mac[veth]),
            # what kemu's stack listens on (kemu.control.listen): declared, Service, probe ports
            "listen": _listen(sorted(listening[pod.key].ports)),
        })
    for h, ext in enumerate(cfg.external_hosts):
        i = int(t.ext_if[h])
        topo["external_hosts"].append({
            "name": t.ext_name[h],
            "ip": ip_str(t.if_ip[i]),
            "mac": mac_str(t.if_mac[i]),
            "listen": _listen(list(ext.ports)),
        })
    node_ports: dict[int, int] = {}
    lb_ips: dict[int, list[str]] = {}
    extra_fe: dict[int, list[str]] = {}
    for f in range(len(t.fe_ip)):
        sp, kind = int(t.fe_sp[f]), int(t.fe_kind[f])
        if kind == C.FE_NODE_PORT:
            node_ports[sp] = int(t.fe_port[f])
        elif kind == C.FE_LOAD_BALANCER:  # kube-proxy's "loadbalancer IP" rules (E-4)
            lb_ips.setdefault(sp, []).append(ip_str(t.fe_ip[f]))
        elif kind != C.FE_CLUSTER_IP:
            extra_fe.setdefault(sp, []).append(
                f"{C.FE_KIND_NAMES[kind]} {ip_str(t.fe_ip[f])}:{int(t.fe_port[f])}")
    for sp, name in enumerate(t.sp_name):
        proto = _PROTO.get(int(t.sp_proto[sp]))
        flags = int(t.sp_flags[sp])
        if flags & C.SP_HOST_PORT:  # portmap's rules, not kube-proxy's: a test adds them
            topo["kemu_skipped"].append(f"hostPort {name}: no portmap rules in the harness")
            continue
        why = []
        if proto is None:
            why.append(f"protocol {C.PROTO_NAMES.get(int(t.sp_proto[sp]))}")
        if flags & C.SP_AFFINITY:
            why.append("sessionAffinity ClientIP")
        if flags & C.SP_ITP_LOCAL:
            why.append("internalTrafficPolicy Local")
        if flags & C.SP_ETP_LOCAL:
            why.append("externalTrafficPolicy Local")
        if why:
            topo["kemu_skipped"].append(f"service port {name}: {', '.join(why)}")
            continue
        if sp in extra_fe:
            topo["kemu_skipped"].append(f"service port {name}: frontends "
                                        f"{', '.join(extra_fe[sp])} (ClusterIP kept)")
        start, count = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        topo["services"].append({
            # kube-proxy's ServicePortName.String(): "ns/name:port" or "ns/name" if unnamed
            "key": name,
            "cluster_ip": ip_str(t.sp_ip[sp]),
            "port": int(t.sp_port[sp]),
            "protocol": proto,
            "node_port": node_ports.get(sp),
            "load_balancer_ips": lb_ips.get(sp, []),
            "source_ranges": [
                str(ipaddress.IPv4Network((int(t.src_net[r]), bin(int(t.src_mask[r])).count("1"))))
                for r in range(int(t.sp_src_start[sp]),
                               int(t.sp_src_start[sp]) + int(t.sp_src_count[sp]))],
            "endpoints": [{"ip": ip_str(t.be_ip[b]), "port": int(t.be_port[b])}
                          for b in range(start, start + count)],
        })
    return topo
