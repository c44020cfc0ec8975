"""Compiled tables as deterministic text (golden tests, ``kemu show tables``).

In the manner of Cilium's map dumps: one line per table row, sections in a fixed order,
addresses and names instead of numbers. The same cluster always gives the same text.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.describe import ip_str, mac_str, route_text
from kemu.dataplane.tables import Tables


def dump_tables(t: Tables) -> str:
    out = [f"# kemu tables {t.digest()[:16]}", "[interfaces]"]
    for i in range(t.n_ifaces):
        kind = C.IF_KIND_NAMES[int(t.if_kind[i])]
        line = f"{i:4d} {t.if_name[i]} {kind} mac {mac_str(t.if_mac[i])}"
        if int(t.if_ip[i]):
            line += f" ip {ip_str(t.if_ip[i])}"
        if int(t.if_peer[i]) >= 0:
            line += f" peer {t.if_name[int(t.if_peer[i])]}"
        if int(t.if_bridge[i]) >= 0:
            line += f" bridge {t.br_name[int(t.if_bridge[i])]}"
        if int(t.if_hairpin[i]):
            line += " hairpin"
        out.append(line)
    out.append("[bridges]")
    for b, name in enumerate(t.br_name):
        s, n = int(t.br_port_start[b]), int(t.br_port_count[b])
        ports = " ".join(t.if_name[int(p)] for p in t.br_ports[s: s + n])
        local = int(t.br_local_if[b])
        out.append(f"{name} local {t.if_name[local] if local >= 0 else '-'} "
                   f"br_netfilter {int(t.br_netfilter[b])} ports {ports}")
    out.append("[masquerade]")
    out.append(f"kube-proxy random-fully {int(t.masq_random_fully)}")
    nm = " ".join(f"{ip_str(n)}/{bin(int(m)).count('1')}"
                  for n, m in zip(t.nonmasq_net, t.nonmasq_mask, strict=True))
    out.append(f"egress {int(t.egress_masq)} random-fully {int(t.egress_random_fully)} "
               f"except {nm or '-'}")
    out.append("[routes]")
    for node, name in enumerate(t.node_name):
        for r in range(len(t.rt_prefix)):
            kind = int(t.rt_kind[r])
            owner = int(t.rt_node[r])
            if kind == C.RT_POD_CIDR and owner != node:
                nh = int(t.rt_prefix[r]) if t.vxlan else int(t.node_ip[owner])
            elif kind == C.RT_DEFAULT:
                nh = t.gateway_ip
            else:
                nh = 0
            out.append(f"{name} {route_text(t, r, nh, node)}")
    out.append("[frontends]")
    for f in range(len(t.fe_ip)):
        sp = int(t.fe_sp[f])
        addr = ip_str(t.fe_ip[f]) if int(t.fe_ip[f]) else "<node addresses>"
        out.append(f"{C.FE_KIND_NAMES[int(t.fe_kind[f])]} {addr}:{int(t.fe_port[f])}/"
                   f"{C.PROTO_NAMES[int(t.fe_proto[f])]} -> {t.sp_name[sp]}")
    out.append("[services]")
    for sp, name in enumerate(t.sp_name):
        s, n = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        backends = ",".join(f"{ip_str(t.be_ip[b])}:{int(t.be_port[b])}"
                            for b in range(s, s + n)) or "<none: REJECT>"
        flags = [name for bit, name in ((C.SP_AFFINITY, "ClientIP"),
                                        (C.SP_ITP_LOCAL, "ITP=Local"),
                                        (C.SP_ETP_LOCAL, "ETP=Local"))
                 if int(t.sp_flags[sp]) & bit]
        out.append(f"{name} {ip_str(t.sp_ip[sp])}:{int(t.sp_port[sp])}/"
                   f"{C.PROTO_NAMES[int(t.sp_proto[sp])]} backends {backends}"
                   + (f" {' '.join(flags)}" if flags else ""))
    return "\n".join(out) + "\n"
