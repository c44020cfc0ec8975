"""kube-proxy in iptables mode, for a new flow: the Service port a frontend names, the endpoint.

Owns ``Proxy``: ``_service`` (KUBE-SVC / KUBE-EXT / KUBE-SEP: the candidate endpoints, local
ones only under a Local traffic policy; ClientIP session affinity, kept in
``State.affinity``, else the flow hash; REJECT or DROP without endpoints; DNAT; the
masquerade mark: S-5, S-6, E-1, E-2) and ``_find_backend`` (a service port's endpoint by
address and port). ``netfilter.py``'s ``_prerouting`` calls ``_service`` for new TCP and UDP
flows to a frontend (S-1..S-8).

Compiled twin: ``kemu/fastpath/proxy.pxi``.
SEMANTICS ids: S-1..S-8, E-1, E-2.

kube-router's IPVS (``_ipvs_service``, when ``Tables.ipvs``): the compiled twin's
``ipvs_service`` docstring says what it models and from which pages.
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.reference.nat import Nat
from kemu.dataplane.reference.record import Record
from kemu.dataplane.reference.state import CtEntry, Item
from kemu.dataplane.reference.util import flow_hash


class Proxy(Nat, Record):
    """KUBE-SERVICES for a new flow."""

    def _service(self, it: Item, e: CtEntry, node: int, fe: int, sip: int, sport: int,
                 proto: int, l4: int) -> int:
        """KUBE-SVC/KUBE-EXT/KUBE-SEP for a new flow: pick a backend, DNAT, mark masquerade."""
        t = self.t
        sp = int(t.fe_sp[fe])
        kind = int(t.fe_kind[fe])
        flags = int(t.sp_flags[sp])
        start, count = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        cnet, cmask = t.cluster_cidr
        from_cluster = (sip & cmask) == cnet
        external = kind != C.FE_CLUSTER_IP
        local_src = (node, sip) in self.local_ips
        local_only = False
        masq = False
        if kind == C.FE_LOAD_BALANCER and not self._src_allowed(sp, sip):
            return C.DROP_LB_SOURCE_RANGE  # E-4: KUBE-FW's DROP (no ICMP)
        if kind == C.FE_HOST_PORT:  # CNI-HOSTPORT-SETMARK: from the node's own pod subnet
            r = self.lpm.lookup(sip)
            masq = r >= 0 and int(t.rt_kind[r]) == C.RT_POD_CIDR and int(t.rt_node[r]) == node
        elif external:
            if not flags & C.SP_ETP_LOCAL:
                masq = True  # E-1: KUBE-EXT always marks for masquerade
            elif local_src:
                masq = True  # E-2: the node itself: masquerade, cluster-wide endpoints
            elif not from_cluster:
                local_only = True  # E-2: KUBE-SVL, local endpoints, client IP kept
            # E-2: pods short-circuit to KUBE-SVC without masquerade
        else:
            masq = not from_cluster  # S-6
            if flags & C.SP_ITP_LOCAL:
                local_only = True
        cands = list(range(start, start + count))
        if local_only:
            cands = [b for b in cands if int(t.be_node[b]) == node]
        else:  # KEP-1669 fallbacks: only for Local traffic
            cands = [b for b in cands if not int(t.be_flags[b]) & C.BE_LOCAL_FALLBACK]
        if count == 0:
            return C.DROP_REJECT_NO_ENDPOINTS
        if not cands:
            return C.DROP_NO_LOCAL_ENDPOINTS
        be = self._affine(it, node, sp, sip, cands) if flags & C.SP_AFFINITY else -1
        if be < 0:
            h = flow_hash(self.seed, node, proto, sip, sport, e.orig[3], e.orig[4])
            be = cands[h % len(cands)]
        if flags & C.SP_AFFINITY:
            self.affinity[(node, sp, sip)] = (int(t.be_ip[be]), int(t.be_port[be]), self.now)
        bip, bport = int(t.be_ip[be]), int(t.be_port[be])
        if sip == bip:
            masq = True  # S-5: hairpin
        e.flags |= C.CT_DNAT
        e.dnat_ip, e.dnat_port, e.sp, e.be, e.masq = bip, bport, sp, be, masq
        e.reply = (proto, bip, bport, sip, sport)
        self._set_dst(it.data, bip, bport, proto, l4)
        self._changed(it)
        self._ev(it, C.EV_DNAT, fe, be, e.orig[3])
        return 0

    def _own_pod(self, node: int, ip: int) -> bool:
        r = self.lpm.lookup(ip)
        return r >= 0 and int(self.t.rt_kind[r]) == C.RT_POD_CIDR and int(
            self.t.rt_node[r]) == node

    def _ipvs_service(self, it: Item, e: CtEntry, node: int, fe: int, sip: int, sport: int,
                      proto: int, l4: int) -> int:
        """kube-router's IPVS virtual service (NAT) for a new connection at LOCAL_IN: real
        servers (local ones only under a Local traffic policy), none: DROP_IPVS_NO_DEST
        (ip_vs_leave: ICMP port unreachable); rr per (frontend, node) or sh
        (hash_32(source, 8) over 256 buckets dealt in turn); kube-router's SNAT rule
        ``! -s podCIDR ! -d podCIDR`` (the compiled twin's ``ipvs_service``)."""
        t = self.t
        sp = int(t.fe_sp[fe])
        kind = int(t.fe_kind[fe])
        flags = int(t.sp_flags[sp])
        start, count = int(t.sp_be_start[sp]), int(t.sp_be_count[sp])
        local_only = bool(flags & (C.SP_ITP_LOCAL if kind == C.FE_CLUSTER_IP
                                   else C.SP_ETP_LOCAL))
        if kind == C.FE_LOAD_BALANCER and not self._src_allowed(sp, sip):
            return C.DROP_LB_SOURCE_RANGE
        cands = [b for b in range(start, start + count)
                 if not int(t.be_flags[b]) & C.BE_LOCAL_FALLBACK
                 and (not local_only or int(t.be_node[b]) == node)]
        if not cands:
            return C.DROP_IPVS_NO_DEST
        # IPVS persistence
        be = self._affine(it, node, sp, sip, cands) if flags & C.SP_AFFINITY else -1
        if be < 0:
            if int(t.ipvs_sched) == C.IPVS_SH:
                be = cands[(((sip * 0x61C88647) & 0xFFFFFFFF) >> 24) % len(cands)]
            else:
                pos = self.ipvs_rr.get((fe, node), 0)
                self.ipvs_rr[(fe, node)] = (pos + 1) % len(cands)
                be = cands[pos % len(cands)]
        bip, bport = int(t.be_ip[be]), int(t.be_port[be])
        if flags & C.SP_AFFINITY:
            self.affinity[(node, sp, sip)] = (bip, bport, self.now)
        e.flags |= C.CT_DNAT
        e.dnat_ip, e.dnat_port, e.sp, e.be = bip, bport, sp, be
        e.masq = not self._own_pod(node, sip) and not self._own_pod(node, bip)
        e.reply = (proto, bip, bport, sip, sport)
        self._set_dst(it.data, bip, bport, proto, l4)
        self._changed(it)
        self._ev(it, C.EV_IPVS_DNAT, fe, be, e.orig[3])
        return 0

    def _src_allowed(self, sp: int, sip: int) -> bool:
        """E-4: ``sip`` is in one of the service port's loadBalancerSourceRanges (none: any)."""
        t = self.t
        s, c = int(t.sp_src_start[sp]), int(t.sp_src_count[sp])
        if c == 0:
            return True
        return any((sip & int(t.src_mask[k])) == int(t.src_net[k]) for k in range(s, s + c))

    def _affine(self, it, node: int, sp: int, sip: int, cands: list[int]) -> int:  # noqa: ANN001
        """S-5: the backend a ClientIP-affinity record still names, if it is a candidate
        (``EV_AFFINITY``), else -1."""
        rec = self.affinity.get((node, sp, sip))
        if rec is not None and self.now - rec[2] <= int(self.t.sp_affinity_ns[sp]):
            b = self._find_backend(sp, rec[0], rec[1])
            if b in cands:
                self._ev(it, C.EV_AFFINITY, sp, b, node)
                return b
        return -1

    def _find_backend(self, sp: int, ip: int, port: int) -> int:
        t = self.t
        s = int(t.sp_be_start[sp])
        for b in range(s, s + int(t.sp_be_count[sp])):
            if int(t.be_ip[b]) == ip and int(t.be_port[b]) == port:
                return b
        return -1
