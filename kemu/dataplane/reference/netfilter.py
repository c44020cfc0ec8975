"""The netfilter hooks of a node.

Owns ``Netfilter``: ``_prerouting`` (PREROUTING, and nat OUTPUT for the node's own packets:
conntrack lookup, ICMP errors RELATED to a tracked flow, kube-proxy's KUBE-SERVICES for new
flows, DNAT: CT-1, CT-2, S-1..S-8), ``_filter_forward`` (filter FORWARD/OUTPUT: the REJECT
or DROP that KUBE-SERVICES left for a new flow, S-9; then NetworkPolicy's verdict,
``policy.py``) and ``_postrouting``
(KUBE-POSTROUTING: masquerade of marked new flows, S-7, and flannel's of pod traffic leaving
the cluster, ``_egress_masq``, M-5; un-DNAT of replies; the entry is confirmed) and
``_local_in_nat`` (LOCAL_IN: a reply to the node's own socket un-DNATed, CT-2). A new hook,
or a stage at a hook, is called from here.

Compiled twin: ``kemu/fastpath/netfilter.pxi``.
SEMANTICS ids: CT-1, CT-2, S-1..S-9.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.reference.conntrack import Conntrack
from kemu.dataplane.reference.frag import DEFRAG_BRIDGE_IN, DEFRAG_IN, DEFRAG_OUT, Frag
from kemu.dataplane.reference.nat import Nat
from kemu.dataplane.reference.parse import Parse
from kemu.dataplane.reference.policy import Policy
from kemu.dataplane.reference.proxy import Proxy
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import CtEntry, Item
from kemu.dataplane.reference.util import u16, u32


class Netfilter(Policy, Proxy, Nat, Frag, Record, Conntrack, Parse):
    """PREROUTING / OUTPUT, FORWARD, POSTROUTING."""

    def _prerouting(self, it: Item, node: int, in_if: int) -> int:
        """Conntrack lookup, kube-proxy KUBE-SERVICES for new flows, DNAT (CT-1, CT-2).
        Returns a drop reason or 0; a filter verdict for later hooks lands in ``ctx``."""
        d = it.data
        ctx = it.ctx
        if ctx.node != node:
            ctx.node, ctx.ct, ctx.new, ctx.reply_dir = node, None, False, False
            ctx.verdict, ctx.verdict_sp, ctx.related = 0, -1, None
        ctx.pre_done = True
        if u16(d, 20) & 0x3FFF:  # a fragment: nf_defrag_ipv4 first (priority -400)
            user = (DEFRAG_OUT if in_if == int(self.t.node_local_if[node]) else
                    DEFRAG_BRIDGE_IN if self.if_kind[in_if] == C.IF_VETH else DEFRAG_IN)
            r = self._defrag(it, node, user)
            if r:
                return r
        proto, l4, sport, dport = self._l4(d)
        if proto == C.PROTO_ICMP and (l4 + 1 > len(d) or d[l4] not in (0, 8)):
            self._related_pre(it, node, l4)  # no entry of its own: RELATED to what it quotes
            return 0
        sip, dip = u32(d, 26), u32(d, 30)
        key = (node, proto, sip, sport, dip, dport)
        hit = self.ct.get(key)
        if hit is not None and hit[0].expires < self.now:
            self._ct_delete(hit[0])
            hit = None
        if hit is not None:
            e, is_reply = hit
            ctx.ct, ctx.reply_dir, ctx.new = e, is_reply, False
            self._ct_update(e, is_reply, d, l4, proto)
            if not is_reply and e.flags & C.CT_DNAT:
                self._set_dst(d, e.dnat_ip, e.dnat_port, proto, l4)
                self._changed(it)
                self._ev(it, C.EV_CT_REUSE, e.sp, e.be, node)
            elif is_reply and e.flags & C.CT_SNAT:
                self._set_dst(d, e.orig[1], e.orig[2], proto, l4)
                self._changed(it)
                self._ev(it, C.EV_UNSNAT, e.orig[1], e.orig[2], node)
            return 0
        # a new flow: KUBE-SERVICES (TCP/UDP only; ICMP and others are not proxied)
        e = CtEntry(node, (proto, sip, sport, dip, dport), (proto, dip, dport, sip, sport))
        ctx.ct, ctx.reply_dir, ctx.new = e, False, True
        if proto in (C.PROTO_TCP, C.PROTO_UDP):
            fe = self.fe.get((dip, proto, dport))
            if fe is not None and int(self.t.fe_kind[fe]) == C.FE_HOST_PORT \
                    and (node, dip) not in self.local_ips:
                fe = None  # another node's hostPort: not a local address here
            if fe is None and (node, dip) in self.local_ips and (
                    not self.t.ipvs or dip == int(self.t.node_ip[node])):  # kube-router: node IP
                fe = self.fe_nodeport.get((proto, dport))
            if fe is not None:
                if self.t.ipvs and int(self.t.fe_kind[fe]) != C.FE_HOST_PORT:
                    r = self._ipvs_service(it, e, node, fe, sip, sport, proto, l4)
                else:
                    r = self._service(it, e, node, fe, sip, sport, proto, l4)
                if r == C.DROP_IPVS_NO_DEST:  # dropped at LOCAL_IN (ip_vs_leave), unconfirmed
                    ctx.ct = None
                    return r
                if r:
                    ctx.verdict, ctx.verdict_sp = r, int(self.t.fe_sp[fe])
        self._ct_update(e, False, d, l4, proto)
        self._ct_insert(e)
        return 0

    def _filter_forward(self, it: Item) -> int:
        """filter FORWARD/OUTPUT for NEW flows: KUBE-SERVICES REJECT/DROP (S-9), then
        NetworkPolicy (``policy.py``: after DNAT, before SNAT; one test when the tables have
        no policies)."""
        ctx = it.ctx
        if ctx.new:
            if ctx.verdict:
                return ctx.verdict
            if self.pol is not None:
                return self._policy(it)
        return 0

    def _egress_masq(self, node: int, out_if: int, sip: int, dip: int) -> bool:
        """flannel ipMasq (M-5, OV-5): ``-s <node podCIDR> ! -d <nonMasqueradeCIDRs> -j
        MASQUERADE`` for a new flow, where it leaves through the node's eth0."""
        t = self.t
        if not t.egress_masq or out_if != int(t.node_eth_if[node]):
            return False
        r = self.lpm.lookup(sip)
        if r < 0 or int(t.rt_kind[r]) != C.RT_POD_CIDR or int(t.rt_node[r]) != node:
            return False
        return not any((dip & int(m)) == int(n)
                       for n, m in zip(t.nonmasq_net, t.nonmasq_mask, strict=True))

    def _postrouting(self, it: Item, node: int, out_if: int) -> None:
        """KUBE-POSTROUTING masquerade (S-7) for marked new flows, flannel's for pod traffic
        leaving the cluster (M-5); reply un-DNAT; confirm."""
        ctx = it.ctx
        if ctx.related is not None and ctx.node == node:
            self._related_post(it, node)
        e = ctx.ct
        if e is None or ctx.node != node:
            return
        d = it.data
        proto, l4, _sport, _dport = self._l4(d)
        if not ctx.reply_dir:
            if ctx.new and not e.flags & C.CT_SNAT and (
                    e.masq or self._egress_masq(node, out_if, u32(d, 26), u32(d, 30))):
                self._masquerade(it, e, node, out_if, proto, l4,
                                 self.t.masq_random_fully if e.masq
                                 else self.t.egress_random_fully)
            elif e.flags & C.CT_SNAT:
                self._set_src(d, e.snat_ip, e.snat_port if proto != C.PROTO_ICMP else -1,
                              proto, l4)
                self._changed(it)
        elif e.flags & C.CT_DNAT:
            self._set_src(d, e.orig[3], e.orig[4] if proto != C.PROTO_ICMP else -1, proto, l4)
            self._changed(it)
            self._ev(it, C.EV_UNDNAT, e.sp, e.be, node)
        ctx.new = False  # confirmed

    def _local_in_nat(self, it: Item, node: int) -> None:
        """NF_INET_LOCAL_IN conntrack NAT: a reply delivered to the node's own stack is
        un-DNATed here (the source back to the Service address the node's socket connected
        to, CT-2), as POSTROUTING does for a reply forwarded on; its un-SNAT was done at
        PREROUTING."""
        ctx = it.ctx
        e = ctx.ct
        if e is None or ctx.node != node:
            return
        if ctx.reply_dir and e.flags & C.CT_DNAT:
            d = it.data
            proto, l4, _sport, _dport = self._l4(d)
            self._set_src(d, e.orig[3], e.orig[4] if proto != C.PROTO_ICMP else -1, proto, l4)
            self._changed(it)
            self._ev(it, C.EV_UNDNAT, e.sp, e.be, node)
