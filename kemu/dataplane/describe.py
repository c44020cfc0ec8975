"""Words for the data plane's numbers: event texts (pcapng comments, traces) and state dumps.

One renderer for every output, so a pcapng comment, a trace line and a golden test say the
same thing. Pure functions of ``Tables`` and the raw records; deterministic.
"""

from __future__ import annotations

import ipaddress

from kemu.dataplane import codes as C
from kemu.dataplane import l7
from kemu.dataplane.tables import Tables


def ip_str(ip: int) -> str:
    return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))


def mac_str(mac: int) -> str:
    h = f"{int(mac) & 0xFFFFFFFFFFFF:012x}"
    return ":".join(h[i: i + 2] for i in range(0, 12, 2))


def short_if(t: Tables, iface: int) -> str:
    """``veth-web-1`` for node devices, ``ns/pod/eth0`` for pods."""
    if iface < 0:
        return "-"
    name = t.if_name[iface]
    return name.split("/", 1)[1] if int(t.if_node[iface]) >= 0 and int(
        t.if_kind[iface]) not in (C.IF_POD_ETH, C.IF_POD_LO) else name


def route_text(t: Tables, route: int, nh: int, node: int) -> str:
    if route < 0:
        return "no route"
    if route >= len(t.rt_prefix):  # route k of a node's own table (R-2, Tables.nrt_*)
        k = route - len(t.rt_prefix)
        ln = int(t.nrt_len[k])
        prefix = "default" if ln == 0 else f"{ip_str(t.nrt_prefix[k])}/{ln}"
        out = int(t.nrt_if[k])
        dev = t.if_kernel_name[out] if out >= 0 else "?"
        via = f" via {ip_str(nh)}" if nh else ""
        return f"route {prefix}{via} dev {dev}"
    ln = int(t.rt_len[route])
    prefix = "default" if ln == 0 else f"{ip_str(t.rt_prefix[route])}/{ln}"
    kind = int(t.rt_kind[route])
    owner = int(t.rt_node[route])
    tun = int(t.tun_if[node * t.n_nodes + owner]) if len(t.tun_if) and kind == C.RT_POD_CIDR \
        and 0 <= node < t.n_nodes and 0 <= owner < t.n_nodes else -1
    routed = int(t.rt_dev[route]) if len(t.rt_dev) else -1  # a routed CNI's pod route
    if kind == C.RT_POD_CIDR and routed >= 0 and int(t.if_kind[routed]) == C.IF_BRIDGE:
        # Azure bridge mode: a pod of the VNet, on the node's connected route on azure0
        net = next((r for r in range(len(t.rt_kind)) if int(t.rt_kind[r]) == C.RT_NODE_NET),
                   -1)
        where = (f"{ip_str(t.rt_prefix[net])}/{int(t.rt_len[net])}" if net >= 0 else prefix)
        br = t.if_kernel_name[routed]
        if int(t.rt_node[route]) == node:
            return f"route {where} dev {br}"
        return f"route {where} dev {br} (held by {t.node_name[int(t.rt_node[route])]}'s eth0)"
    if kind == C.RT_POD_CIDR and routed >= 0 and int(t.rt_node[route]) == node:
        dev = t.if_kernel_name[routed]
    elif kind == C.RT_POD_CIDR and routed >= 0 and not nh:
        # another node's pod in the node network: this node's connected route; the
        # address's owner (its ENI, its VNet NIC) is the owner node's eth0
        net = next((r for r in range(len(t.rt_kind)) if int(t.rt_kind[r]) == C.RT_NODE_NET),
                   -1)
        where = (f"{ip_str(t.rt_prefix[net])}/{int(t.rt_len[net])}" if net >= 0 else prefix)
        return (f"route {where} dev eth0 (held by {t.node_name[int(t.rt_node[route])]}'s "
                "eth0)")
    elif kind == C.RT_POD_CIDR and routed >= 0:  # Azure CNI Overlay: the owner's pod CIDR
        owner = int(t.rt_node[route])
        cidr = next((r for r in range(len(t.rt_kind)) if int(t.rt_kind[r]) == C.RT_POD_CIDR
                     and int(t.rt_node[r]) == owner and int(t.rt_dev[r]) < 0), -1)
        if cidr >= 0:
            prefix = f"{ip_str(t.rt_prefix[cidr])}/{int(t.rt_len[cidr])}"
        vtep = int(t.node_vtep_if[node]) if t.vxlan and 0 <= node < t.n_nodes else -1
        dev = t.if_kernel_name[vtep] if vtep >= 0 else "eth0"  # Cilium: cilium_vxlan
    elif kind == C.RT_POD_CIDR and owner == node:
        br = int(t.node_br_if[node]) if 0 <= node < t.n_nodes else -1
        dev = t.if_kernel_name[br] if br >= 0 else "cbr0"
    elif tun >= 0:  # kube-router's IP-in-IP device towards the owner
        dev = t.if_kernel_name[tun]
    elif kind == C.RT_POD_CIDR and t.vxlan:
        vtep = int(t.node_vtep_if[node]) if 0 <= node < t.n_nodes else -1
        dev = t.if_kernel_name[vtep] if vtep >= 0 else "flannel.1"
    elif kind == C.RT_POD_CIDR and 0 < t.ovs_tunnel < C.ANTREA_NOENCAP:
        return f"route {prefix} via {ip_str(nh)} dev antrea-gw0 onlink"  # Antrea encap
    else:
        dev = "eth0"
    via = f" via {ip_str(nh)}" if nh else ""
    return f"route {prefix}{via} dev {dev}"


def identity_text(ident: int) -> str:
    """A Cilium numeric security identity in words: reserved ones by name."""
    return {C.CILIUM_ID_HOST: "1 reserved:host", C.CILIUM_ID_WORLD: "2 reserved:world"}.get(
        ident, str(ident))


def bpf_program(t: Tables, iface: int, direction: int) -> str:
    """The eBPF program Cilium runs where ``iface`` receives (DIR_IN) or transmits (DIR_OUT)
    a packet (``Tables.if_bpf_in``/``if_bpf_out``); "" where none is attached."""
    names = t.if_bpf_in if direction == C.DIR_IN else t.if_bpf_out
    return names[iface] if 0 <= iface < len(names) else ""


def backend_text(t: Tables, be: int) -> str:
    return f"{ip_str(t.be_ip[be])}:{int(t.be_port[be])}" if be >= 0 else "?"


# Antrea's tunnel types on the wire (ovs room)
OVS_TUNNEL_WORDS = {C.ANTREA_GENEVE: f"Geneve VNI 0 (UDP {C.GENEVE_PORT})",
                    C.ANTREA_VXLAN: f"VXLAN VNI 0 (UDP {C.ANTREA_VXLAN_PORT})",
                    C.ANTREA_GRE: "GRE (proto 47, 0x6558)"}
_OVS_FROM = {C.OVS_FROM_POD: "FromPodRegMark", C.OVS_FROM_GATEWAY: "FromGatewayRegMark",
             C.OVS_FROM_TUNNEL: "FromTunnelRegMark"}


def ovs_table_text(t: Tables, table: int, b: int, c: int) -> str:
    """An OVS table's decision (``EV_OVS_TABLE``) in the words of Antrea's pipeline."""
    name = C.OVS_T_NAMES.get(table, f"table {table}")
    if table == C.OVS_T_CLASSIFIER:
        return f"{name}: in_port {t.if_kernel_name[c]} ({_OVS_FROM.get(b, b)})"
    if table == C.OVS_T_SPOOFGUARD:
        return f"{name}: in_port {t.if_kernel_name[b]}, the pod's own MAC and IP"
    if table == C.OVS_T_ENDPOINT_DNAT:
        return "ServiceLB/EndpointDNAT: AntreaProxy, a new Service connection (ct zone 65520)"
    if table == C.OVS_T_L3_FORWARDING:
        if b == C.OVS_L3_TUNNEL:
            return (f"{name}: remote pod CIDR of {t.node_name[c]}: eth_src antrea-gw0, "
                    f"eth_dst aa:bb:cc:dd:ee:ff, tun_dst {ip_str(t.node_ip[c])}")
        if b == C.OVS_L3_LOCAL_POD:
            pod = int(t.if_peer[c])
            return (f"{name}: local pod {owner_text(t, pod)}: eth_src antrea-gw0, eth_dst "
                    f"{mac_str(int(t.if_mac[pod]))}")
        if b == C.OVS_L3_L2:
            return f"{name}: local pod, not routed (NotRewriteMACRegMark)"
        return f"{name}: to antrea-gw0 (ToGatewayRegMark" + (
            ", eth_dst antrea-gw0)" if c else ")")
    if table == C.OVS_T_L3_DEC_TTL:
        return f"{name}: ttl {b}"
    if table in (C.OVS_T_L2_FORWARDING, C.OVS_T_OUTPUT, C.OVS_T_ARP):
        how = "ARP, normal action" if table == C.OVS_T_ARP else (
            "eth_dst" if table == C.OVS_T_L2_FORWARDING else "out")
        return f"{name}: {how} -> port {t.if_kernel_name[b]}"
    return name


def drop_text(reason: int) -> str:
    return C.DROP_NAMES.get(reason, (f"reason {reason}", ""))[0]


def event_text(t: Tables, kind: int, a: int, b: int, c: int) -> str:
    if kind in (C.EV_BR_FDB, C.EV_BR_FLOOD):
        how = "fdb" if kind == C.EV_BR_FDB else "flood"
        return f"bridge {t.br_name[b]}: {how} -> {short_if(t, a)}"
    if kind == C.EV_BR_LOCAL:
        return f"bridge: to local device {t.if_name[a]}"
    if kind == C.EV_ROUTE:
        return route_text(t, a, b, c)
    if kind == C.EV_DNAT:
        sp = int(t.fe_sp[a])
        fe_port = int(t.fe_port[a])
        if int(t.fe_kind[a]) == C.FE_HOST_PORT:  # CNI portmap's CNI-HOSTPORT-DNAT
            return f"DNAT {ip_str(c)}:{fe_port} -> {backend_text(t, b)} {_svc(t, sp)}"
        return (f"DNAT {ip_str(c)}:{fe_port} -> {backend_text(t, b)} svc {t.sp_name[sp]}"
                f" ({C.FE_KIND_NAMES[int(t.fe_kind[a])]})")
    if kind == C.EV_IPVS_DNAT:  # kube-router: the address is local on kube-dummy-if
        sp = int(t.fe_sp[a])
        sched = "sh" if t.ipvs_sched == C.IPVS_SH else "rr"
        return (f"IPVS at LOCAL_IN (kube-dummy-if holds {ip_str(c)}): {sched} -> "
                f"{backend_text(t, b)} masq svc {t.sp_name[sp]} "
                f"({C.FE_KIND_NAMES[int(t.fe_kind[a])]} {ip_str(c)}:{int(t.fe_port[a])})")
    if kind == C.EV_IPIP_ENCAP:
        return (f"IPIP encap on {t.if_kernel_name[b]} -> {t.node_name[a]} "
                f"({ip_str(t.node_ip[a])}, proto 4)")
    if kind == C.EV_SOCK_LB:  # Cilium's kube-proxy replacement: at the pod's socket
        sp = int(t.fe_sp[a])
        return (f"socket LB (cil_sock4_connect): {ip_str(t.fe_ip[a])}:{int(t.fe_port[a])} -> "
                f"{backend_text(t, b)} svc {t.sp_name[sp]}, before the packet leaves the pod")
    if kind == C.EV_IPIP_DECAP:
        return f"IPIP decap (ipip_rcv) -> {t.if_kernel_name[b]}"
    if kind == C.EV_EBT_SNAT:
        return (f"ebtables snat on {t.if_kernel_name[a]}: src MAC {mac_str(b << 24 | c)} -> "
                f"{mac_str(int(t.if_mac[a]))}")
    if kind == C.EV_EBT_DNAT:
        return f"ebtables dnat on {t.if_kernel_name[a]}: dst MAC -> {mac_str(b << 24 | c)}"
    if kind == C.EV_OVS_TABLE:
        return ovs_table_text(t, a, b, c)
    if kind in (C.EV_OVS_ENCAP, C.EV_OVS_DECAP):
        tun = OVS_TUNNEL_WORDS.get(b, f"tunnel {b}")
        if kind == C.EV_OVS_DECAP:
            return f"{tun} decap -> antrea-tun0"
        return f"{tun} encap on antrea-tun0 -> {t.node_name[a]} ({ip_str(t.node_ip[a])})"
    if kind == C.EV_CT_REUSE:
        return f"conntrack: established, DNAT -> {backend_text(t, b)} {_svc(t, a)}"
    if kind == C.EV_UNDNAT:
        return f"conntrack: reply, un-DNAT src -> {_svc(t, a)}"
    if kind == C.EV_SNAT:
        return f"MASQUERADE src -> {ip_str(a)}:{b}"
    if kind == C.EV_UNSNAT:
        return f"conntrack: reply, un-SNAT dst -> {ip_str(a)}:{b}"
    if kind == C.EV_AFFINITY:
        return f"session affinity (ClientIP) -> {backend_text(t, b)} svc {_sp(t, a)}"
    if kind == C.EV_DROP:
        return f"DROP {drop_text(a)}"
    if kind == C.EV_DELIVER:
        return f"deliver to {owner_text(t, a)}"
    if kind == C.EV_LEFT:
        return "to the gateway: leaves the cluster"
    if kind == C.EV_BRIDGED_DNAT:
        return "br_netfilter: DNAT target on the same bridge, bridged without routing"
    if kind == C.EV_ENCAP:
        if len(t.if_vni):  # Cilium: the VNI is the source's security identity
            return (f"VXLAN encap VNI {b} (source identity {identity_text(b)}) -> "
                    f"{t.node_name[a]}")
        return f"VXLAN encap VNI {b} -> {t.node_name[a]}"
    if kind == C.EV_DECAP:
        if len(t.if_vni):  # Cilium's cil_from_overlay takes the identity from the VNI
            return f"VXLAN decap VNI {b} (source identity {identity_text(b)})"
        return f"VXLAN decap VNI {b}"
    if kind == C.EV_LOCAL_ROUTE:
        return "local route: stays in the pod (lo)"
    if kind == C.EV_NEIGH_MISS:
        return f"neighbour {ip_str(a)} unresolved"
    if kind == C.EV_FIXL2:
        return "injected: Ethernet addresses set by the sender's stack"
    if kind == C.EV_TTL:
        return f"ttl {a}"
    if kind == C.EV_NODE_INPUT:
        return f"local delivery on node {t.node_name[a]}"
    if kind == C.EV_AT_GATEWAY:
        return AT_GATEWAY
    if kind == C.EV_FRAGMENT:
        return f"fragmented: {a} fragments for MTU {b}"
    if kind == C.EV_DEFRAG:
        return f"conntrack defrag: {a} fragments reassembled, {b} bytes"
    if kind in (C.EV_POLICY_ALLOW, C.EV_POLICY_DENY):
        return policy_text(t, kind, a, b, c)
    if kind == C.EV_L7_REDIRECT:
        return l7_redirect_text(t, a, b, c)
    if kind == C.EV_L7_HTTP:
        rec = l7.get(b)
        return rec.text() if rec is not None else f"L7 proxy: request {b} ({c})"
    return f"event {kind}"


def l7_redirect_text(t: Tables, pod: int, port: int, rule: int) -> str:
    """``redirect to the L7 proxy: shop/web-0 port 80/TCP has HTTP rules (shop/cnp-web
    ingress rule 0)`` (``EV_L7_REDIRECT``)."""
    idx = int(t.rule_idx[rule]) if 0 <= rule < len(t.rule_idx) else -1
    return (f"redirect to the L7 proxy: {pod_name(t, pod)} port {port}/TCP has HTTP rules "
            f"({policy_name(t, rule_policy(t, rule))} ingress rule {idx})")


AT_GATEWAY = "entered at the gateway: source unknown to the cluster"
"""Words for a replayed frame placed at the gateway, in its pcapng comment and the summary."""


POLICY_DIRECTIONS = {C.POL_INGRESS: "ingress", C.POL_EGRESS: "egress"}
"""Words for a policy direction (``EV_POLICY_*`` b)."""


def policy_direction(direction: int) -> str:
    return POLICY_DIRECTIONS.get(int(direction), f"direction {direction}")


def pod_name(t: Tables, pod: int) -> str:
    """``ns/name`` of a pod index, ``pod N`` when the tables do not know it."""
    return t.pod_key[pod] if 0 <= pod < len(t.pod_key) else f"pod {pod}"


def policy_name(t: Tables, pol: int) -> str:
    return t.pol_name[pol] if 0 <= pol < len(t.pol_name) else f"policy {pol}"


def rule_policy(t: Tables, rule: int) -> int:
    """The policy index of a rule id, -1 for none."""
    return int(t.rule_pol[rule]) if 0 <= rule < len(t.rule_pol) else -1


def selecting_policies(t: Tables, pod: int, direction: int) -> list[int]:
    """The policies selecting ``pod`` with ``direction`` among their policy types (P-1):
    those that make it isolated in that direction, in the compiler's order."""
    k = 2 * int(pod) + int(direction) - 1
    if not 0 <= k < min(len(t.sel_start), len(t.sel_count)) or direction not in (
            C.POL_INGRESS, C.POL_EGRESS):
        return []
    start, count = int(t.sel_start[k]), int(t.sel_count[k])
    return [int(p) for p in t.sel_pol[start:start + count]]


def flow_text(direction: int, src: int, sport: int, dst: int, dport: int, proto: int) -> str:
    """The connection a policy judged, as its words say it: the peer and the destination
    port for ingress (``10.244.1.5:41000 -> 9090/TCP``: the destination is the pod itself),
    both ends for egress (``10.244.1.5:41000 -> 10.244.2.7:9090/TCP``); protocols without
    ports name the addresses and the protocol."""
    name = C.PROTO_NAMES.get(int(proto), f"proto {proto}")
    if int(proto) in (C.PROTO_TCP, C.PROTO_UDP, C.PROTO_SCTP):
        to = f"{dport}/{name}" if direction == C.POL_INGRESS else f"{ip_str(dst)}:{dport}/{name}"
        return f"{ip_str(src)}:{sport} -> {to}"
    if direction == C.POL_INGRESS:
        return f"{ip_str(src)} -> {name}"
    return f"{ip_str(src)} -> {ip_str(dst)} {name}"


def frame_flow(frame: bytes) -> tuple[int, int, int, int, int] | None:
    """(source, source port, destination, destination port, protocol) of an Ethernet/IPv4
    frame (ports 0 for protocols without them), ``None`` for anything else."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    l4 = 14 + (frame[14] & 0xF) * 4
    proto = frame[23]
    src, dst = int.from_bytes(frame[26:30], "big"), int.from_bytes(frame[30:34], "big")
    if proto in (C.PROTO_TCP, C.PROTO_UDP, C.PROTO_SCTP):
        if len(frame) < l4 + 4:
            return None
        return (src, int.from_bytes(frame[l4:l4 + 2], "big"), dst,
                int.from_bytes(frame[l4 + 2:l4 + 4], "big"), proto)
    return src, 0, dst, 0, proto


def policy_text(t: Tables, kind: int, pod: int, direction: int, rule: int,
                flow: str | None = None) -> str:
    """Words of a NetworkPolicy verdict (``EV_POLICY_ALLOW``/``EV_POLICY_DENY``, P-1/P-2):
    ``ALLOW policy shop/allow-frontend ingress rule 0``, or ``DROP policy: default deny
    ingress of shop/backend-x (selected by shop/deny-all, shop/allow-frontend; no rule allows
    FLOW)`` with ``flow`` (``flow_text``) when the caller has the packet."""
    d = policy_direction(direction)
    if kind == C.EV_POLICY_ALLOW:
        if rule < 0:  # (a pod that is not isolated in that direction: every connection)
            return f"ALLOW policy: {d} of {pod_name(t, pod)} not isolated"
        idx = int(t.rule_idx[rule]) if rule < len(t.rule_idx) else -1
        return f"ALLOW policy {policy_name(t, rule_policy(t, rule))} {d} rule {idx}"
    return f"DROP policy: default deny {denial_text(t, pod, direction, flow)}"


def denial_text(t: Tables, pod: int, direction: int, flow: str | None = None) -> str:
    """What a denial denied: ``ingress of shop/backend-x (selected by shop/deny-all; no rule
    allows FLOW)``."""
    by = ", ".join(policy_name(t, p) for p in selecting_policies(t, pod, direction))
    return (f"{policy_direction(direction)} of {pod_name(t, pod)} (selected by {by or '?'}; "
            f"no rule allows {flow or 'the connection'})")


def policy_verdict_text(t: Tables, kind: int, pod: int, direction: int, rule: int,
                        flow: str | None = None) -> str:
    """A verdict for people reading a trace: ``ingress of shop/backend-x denied (selected by
    shop/deny-all; no rule allows FLOW)`` or ``ingress of shop/backend-x allowed by
    shop/allow-frontend ingress rule 0``."""
    d = policy_direction(direction)
    who = f"{d} of {pod_name(t, pod)}"
    if kind == C.EV_POLICY_DENY:
        return denial_text(t, pod, direction, flow).replace(" (", " denied (", 1)
    if rule < 0:
        return f"{who} allowed (not isolated)"
    idx = int(t.rule_idx[rule]) if rule < len(t.rule_idx) else -1
    return (f"{who} allowed by {policy_name(t, rule_policy(t, rule))} {d} rule {idx}")


def _sp(t: Tables, sp: int) -> str:
    return t.sp_name[sp] if 0 <= sp < len(t.sp_name) else "?"


def _svc(t: Tables, sp: int) -> str:
    """``svc ns/name[:port]``, or ``hostPort ns/pod`` for a pod's hostPort mapping."""
    if 0 <= sp < len(t.sp_name) and int(t.sp_flags[sp]) & C.SP_HOST_PORT:
        return f"hostPort {t.sp_name[sp].split(':', 1)[0]}"
    return f"svc {_sp(t, sp)}"


def owner_text(t: Tables, iface: int) -> str:
    if iface < 0:
        return "?"
    kind = int(t.if_kind[iface])
    if kind in (C.IF_POD_ETH, C.IF_POD_LO):
        return f"pod {t.pod_key[int(t.if_owner[iface])]}"
    if kind == C.IF_EXT_ETH:
        return f"external host {t.ext_name[int(t.if_owner[iface])]}"
    if kind == C.IF_GW_ETH:
        return "gateway"
    return f"node {t.node_name[int(t.if_node[iface])]}"


def dump_state(t: Tables, state: dict[str, list[tuple]]) -> str:
    """The data plane's mutable state as deterministic text (both backends must agree)."""
    lines = []
    for b, mac, port, seen in state["fdb"]:
        lines.append(f"fdb {t.br_name[b]} {mac_str(mac)} port {t.if_name[port]} seen {seen}")
    for row in state["conntrack"]:
        node, p, s, sp_, d, dp, rp, rs, rsp, rd, rdp, flags, st, exp, svc, be = row
        lines.append(
            f"ct {t.node_name[node]} {C.PROTO_NAMES.get(p, p)} {ip_str(s)}:{sp_} > "
            f"{ip_str(d)}:{dp} reply {ip_str(rs)}:{rsp} > {ip_str(rd)}:{rdp} "
            f"{C.CT_STATES[st]} flags {flags:#x} expires {exp} svc {_sp(t, svc)} "
            f"backend {backend_text(t, be)}")
        del rp
    for node, ip, mac, hh in state["neigh"]:
        lines.append(f"neigh {t.node_name[node]} {ip_str(ip)} {mac_str(mac)}"
                     + (" hh" if hh else ""))
    for node, sp, client, bip, bport, last in state["affinity"]:
        lines.append(f"affinity {t.node_name[node]} {_sp(t, sp)} {ip_str(client)} -> "
                     f"{ip_str(bip)}:{bport} last {last}")
    for node, user, src, dst, proto, ident, meat, length, exp in state.get("frags", []):
        lines.append(f"frag {t.node_name[node]} {('in', 'out', 'bridge-in')[user]} "
                     f"{ip_str(src)} > {ip_str(dst)} {C.PROTO_NAMES.get(proto, proto)} id "
                     f"{ident} held {meat} of {length} expires {exp}")
    return "\n".join(lines) + ("\n" if lines else "")
