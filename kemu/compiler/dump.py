"""Compiled tables as deterministic text (golden tests, ``kemu show tables``); NetworkPolicy's
section only when the cluster has policies.

In the manner of Cilium's map dumps: one line per table row, sections in a fixed order,
addresses and names instead of numbers. The same cluster always gives the same text.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.describe import ip_str, mac_str, route_text
from kemu.dataplane.tables import PORT_ANY, Tables


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
    if t.pol_name:
        out += _policy_lines(t)
    return "\n".join(out) + "\n"


def _policy_lines(t: Tables) -> list[str]:
    """NetworkPolicy (kemu/compiler/policy.py): identities, each pod's selecting policies,
    the rules, the policy map."""
    dirs = {C.POL_INGRESS: "ingress", C.POL_EGRESS: "egress"}
    out = [f"[networkpolicy] icmp {'allow' if t.pol_icmp_allow else 'deny'}"]
    for i, name in enumerate(t.ident_name):
        out.append(f"identity {i} {name}")
    for p, key in enumerate(t.pod_key):
        sel = []
        for d in (C.POL_INGRESS, C.POL_EGRESS):
            s, n = int(t.sel_start[2 * p + d - 1]), int(t.sel_count[2 * p + d - 1])
            names = ",".join(t.pol_name[int(x)] for x in t.sel_pol[s:s + n]) or "-"
            sel.append(f"{dirs[d]} {names}")
        out.append(f"pod {key} identity {int(t.pod_ident[p])} {' '.join(sel)}")
    for r in range(len(t.rule_pol)):
        s, n = int(t.rule_port_start[r]), int(t.rule_port_count[r])
        ports = []
        for k in range(s, s + n):
            name = int(t.port_name[k])
            lo, hi = int(t.port_lo[k]), int(t.port_hi[k])
            port = (t.port_names[name] if name >= 0 else "*" if (lo, hi) == (0, 65535)
                    else str(lo) if lo == hi else f"{lo}-{hi}")
            ports.append(f"{port}/{C.PROTO_NAMES[int(t.port_proto[k])]}")
        cs, cn = int(t.rule_cidr_start[r]), int(t.rule_cidr_count[r])
        blocks = []
        for k in range(cs, cs + cn):
            es, en = int(t.cb_exc_start[k]), int(t.cb_exc_count[k])
            exc = "".join(f" except {ip_str(t.ex_net[x])}/{bin(int(t.ex_mask[x])).count('1')}"
                          for x in range(es, es + en))
            blocks.append(f"{ip_str(t.cb_net[k])}/{bin(int(t.cb_mask[k])).count('1')}{exc}")
        out.append(f"rule {r} {t.pol_name[int(t.rule_pol[r])]} {dirs[int(t.rule_dir[r])]}"
                   f"[{int(t.rule_idx[r])}] peers {'any' if t.rule_any_peer[r] else 'listed'}"
                   f" ipBlocks {'; '.join(blocks) or '-'} ports {' '.join(ports) or 'any'}")
    for k in range(len(t.pm_rule)):
        pd = int(t.pm_pd[k])
        peer, proto, port = int(t.pm_peer[k]), int(t.pm_proto[k]), int(t.pm_port[k])
        out.append(f"map {t.pol_name[pd // 2]} {dirs[pd % 2 + 1]} "
                   f"{'any' if peer < 0 else f'identity {peer}'} "
                   f"{'any' if proto == 0 else C.PROTO_NAMES[proto]}/"
                   f"{'any' if port == PORT_ANY else port} -> rule {int(t.pm_rule[k])}")
    for pd in range(len(t.pd_slow_start)):
        s, n = int(t.pd_slow_start[pd]), int(t.pd_slow_count[pd])
        if n:
            rules = " ".join(str(int(r)) for r in t.slow_rule[s:s + n])
            out.append(f"rules {t.pol_name[pd // 2]} {dirs[pd % 2 + 1]} one by one: {rules}")
    return out
