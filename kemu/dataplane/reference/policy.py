"""NetworkPolicy at the filter FORWARD/OUTPUT hook, for a new connection.

Owns ``PolicyMaps`` (what ``load`` derives from the tables' policy fields: the policy map as
a dict, the ipBlock, named-port and identity-membership lookups, pod addresses) and
``Policy._policy`` (the verdict of a NEW connection's first packet, called by
``_filter_forward`` after DNAT and before SNAT on each node it crosses):

- the **egress** of the source pod is judged on the source pod's node, the **ingress** of
  the destination pod on the destination pod's node (P-2: both must allow); each only when
  the pod is isolated in that direction (P-1), else nothing is recorded;
- the remote end is its address as this node sees it (after DNAT for the destination, after
  an earlier node's SNAT for the source: traffic masqueraded on the way, such as a NodePort
  on another node, arrives from that node's address and only ipBlock peers match it),
  with the identity of the pod owning it (none for other addresses);
- a pod reaching itself (also through a Service hairpin: the source is still the pod at
  FORWARD) and its own node reaching it (kubelet probes, node processes) pass (P-9);
- ICMP and other protocols without ports match only port-less rules, unless the cluster's
  ``networkPolicy.icmp`` is ``allow`` (P-8): then ICMP passes, with an ALLOW event of rule -1;
- events: ``EV_POLICY_ALLOW`` (pod, direction, rule id) or ``EV_POLICY_DENY`` (pod,
  direction, -1); a denied packet ends DROPPED with ``DROP_POLICY`` (its unconfirmed
  conntrack entry dies with it, so a retransmission is judged again);
- Cilium L7 rules (their rule ids come last, ``Tables.rule_l7_count``): the lowest rule id
  is an L3/L4 rule's whenever one allows (an L4 allow of the port wildcards the L7 rules);
  when only L7 rules allow, ``EV_L7_REDIRECT`` (pod, port, rule id) follows the ALLOW: the
  connection goes to the HTTP proxy of the pod's node, which judges each request
  (``kemu.dataplane.l7``, driven by the engine around the batch).

Established connections ride conntrack (CT-6): replies and later packets are not NEW, and a
policy change (a table swap) keeps them, as conntrack-based implementations do.

Compiled twin: ``kemu/fastpath/policy.pxi``.
SEMANTICS ids: P-1, P-2, P-4..P-10, P-12, CT-6.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.reference.parse import Parse
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import Item
from kemu.dataplane.reference.util import u32
from kemu.dataplane.tables import PORT_ANY, Tables

PORTED = (C.PROTO_TCP, C.PROTO_UDP, C.PROTO_SCTP)


class PolicyMaps:
    """The tables' policy fields as lookups (built at ``load``)."""

    def __init__(self, t: Tables) -> None:
        self.t = t
        self.icmp_allow = bool(t.pol_icmp_allow)
        self.pm = {(int(a), int(b), int(c), int(d)): int(r) for a, b, c, d, r in zip(
            t.pm_pd, t.pm_peer, t.pm_proto, t.pm_port, t.pm_rule, strict=True)}
        self.ri = {(int(r), int(i)) for r, i in zip(t.ri_rule, t.ri_ident, strict=True)}
        self.named = {(int(p), int(pr), int(n)): int(port) for p, pr, n, port in zip(
            t.np_pod, t.np_proto, t.np_name, t.np_port, strict=True)}
        self.pod_of_ip: dict[int, int] = {}
        self.pod_node: list[int] = []
        for p, eth in enumerate(t.pod_eth_if):
            eth = int(eth)
            self.pod_node.append(int(t.if_node[eth]) if eth >= 0 else -1)
            if eth >= 0:
                self.pod_of_ip[int(t.if_ip[eth])] = p
        self.sel_start = [int(x) for x in t.sel_start]
        self.sel_count = [int(x) for x in t.sel_count]
        self.sel_pol = [int(x) for x in t.sel_pol]
        self.pod_ident = [int(x) for x in t.pod_ident]
        self.pd_keys = [int(x) for x in t.pd_keys]
        self.l7_first = len(t.rule_pol) - int(t.rule_l7_count)  # rule ids from here: L7

    def rule_allows(self, r: int, ident: int, rip: int, proto: int, port: int,
                    named_pod: int) -> bool:
        """One rule in full: a peer and a port of it match (P-4..P-7)."""
        t = self.t
        peer = bool(t.rule_any_peer[r]) or (ident >= 0 and (r, ident) in self.ri)
        if not peer:
            s = int(t.rule_cidr_start[r])
            for k in range(s, s + int(t.rule_cidr_count[r])):
                if rip & int(t.cb_mask[k]) == int(t.cb_net[k]):
                    e = int(t.cb_exc_start[k])
                    if not any(rip & int(t.ex_mask[x]) == int(t.ex_net[x])
                               for x in range(e, e + int(t.cb_exc_count[k]))):
                        peer = True
                        break
        if not peer:
            return False
        s, n = int(t.rule_port_start[r]), int(t.rule_port_count[r])
        if n == 0:
            return True
        if proto not in PORTED:
            return False
        for k in range(s, s + n):
            if int(t.port_proto[k]) != proto:
                continue
            name = int(t.port_name[k])
            if name >= 0:
                if named_pod >= 0 and self.named.get((named_pod, proto, name)) == port:
                    return True
            elif int(t.port_lo[k]) <= port <= int(t.port_hi[k]):
                return True
        return False

    def verdict(self, pod: int, dirn: int, rip: int, rpod: int, proto: int, port: int,
                named_pod: int) -> int:
        """The lowest rule id of the policies selecting ``pod`` in ``dirn`` that allows the
        connection, or -1 (the pod is isolated that way: the caller checked)."""
        k = 2 * pod + dirn - 1
        s, n = self.sel_start[k], self.sel_count[k]
        ident = self.pod_ident[rpod] if rpod >= 0 else -1
        peers = (ident, -1) if ident >= 0 else (-1,)
        ported = proto in PORTED
        best = -1
        t = self.t
        pm = self.pm
        for pol in self.sel_pol[s:s + n]:
            pd = 2 * pol + dirn - 1
            bits = self.pd_keys[pd]  # only the kinds of key this policy has (pd_keys)
            for peer in peers:
                shift = 3 if peer < 0 else 0
                for bit, key in ((1, (pd, peer, 0, PORT_ANY)), (2, (pd, peer, proto, port)),
                                 (4, (pd, peer, proto, PORT_ANY))):
                    if not bits & (bit << shift) or (bit != 1 and not ported):
                        continue
                    r = pm.get(key, -1)
                    if r >= 0 and (best < 0 or r < best):
                        best = r
            ss = int(t.pd_slow_start[pd])
            for j in range(ss, ss + int(t.pd_slow_count[pd])):
                r = int(t.slow_rule[j])
                if (best < 0 or r < best) and self.rule_allows(r, ident, rip, proto, port,
                                                               named_pod):
                    best = r
            if 0 <= best < self.l7_first:
                break  # sel_pol ascends and rule ids go policy by policy: no lower id follows
                # (an L7 rule's may still lose to a later policy's L3/L4 rule)
        return best


class Policy(Record, Parse):
    """The NetworkPolicy verdict of a new connection (module docstring)."""

    pol: PolicyMaps | None

    def _policy(self, it: Item) -> int:
        """Egress of a local source pod, then ingress of a local destination pod: 0 or
        ``DROP_POLICY`` (events recorded on ``it``)."""
        pm = self.pol
        assert pm is not None
        d = it.data
        node = it.ctx.node
        proto, _l4, _sport, dport = self._l4(d)
        sip, dip = u32(d, 26), u32(d, 30)
        if sip == dip:
            return 0  # P-9: a pod reaches itself
        spod = pm.pod_of_ip.get(sip, -1)
        dpod = pm.pod_of_ip.get(dip, -1)
        if spod >= 0 and pm.pod_node[spod] == node:
            if not self._judge(it, pm, spod, C.POL_EGRESS, dip, dpod, proto, dport, dpod):
                return C.DROP_POLICY
        if dpod >= 0 and pm.pod_node[dpod] == node and (node, sip) not in self.local_ips:
            if not self._judge(it, pm, dpod, C.POL_INGRESS, sip, spod, proto, dport, dpod):
                return C.DROP_POLICY
        return 0

    def _judge(self, it: Item, pm: PolicyMaps, pod: int, dirn: int, rip: int, rpod: int,
               proto: int, port: int, named_pod: int) -> bool:
        if pm.sel_count[2 * pod + dirn - 1] == 0:
            return True  # not isolated that way (P-1): nothing recorded
        if proto == C.PROTO_ICMP and pm.icmp_allow:
            self._ev(it, C.EV_POLICY_ALLOW, pod, dirn, -1)  # P-8 knob
            return True
        r = pm.verdict(pod, dirn, rip, rpod, proto, port, named_pod)
        if r < 0:
            self._ev(it, C.EV_POLICY_DENY, pod, dirn, -1)
            return False
        self._ev(it, C.EV_POLICY_ALLOW, pod, dirn, r)
        if r >= pm.l7_first:  # only L7 rules allow it: to the node's HTTP proxy
            self._ev(it, C.EV_L7_REDIRECT, pod, port, r)
        return True
