"""Words for the data plane's numbers: event texts (pcapng comments, traces) and state dumps.

One renderer for every output, so a pcapng comment, a trace line and a golden test say the
same thing. Pure functions of ``Tables`` and the raw records; deterministic.
"""

from __future__ import annotations

import ipaddress

from kemu.dataplane import codes as C
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
    if kind == C.RT_POD_CIDR and int(t.rt_node[route]) == node:
        dev = "cbr0"
    elif kind == C.RT_POD_CIDR and t.vxlan:
        dev = "flannel.1"
    else:
        dev = "eth0"
    via = f" via {ip_str(nh)}" if nh else ""
    return f"route {prefix}{via} dev {dev}"


def backend_text(t: Tables, be: int) -> str:
    return f"{ip_str(t.be_ip[be])}:{int(t.be_port[be])}" if be >= 0 else "?"


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
        return f"VXLAN encap VNI {b} -> {t.node_name[a]}"
    if kind == C.EV_DECAP:
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
    return f"event {kind}"


AT_GATEWAY = "entered at the gateway: source unknown to the cluster"
"""Words for a replayed frame placed at the gateway, in its pcapng comment and the summary."""


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
