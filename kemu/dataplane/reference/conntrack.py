"""Connection tracking: the states, the timeouts, and the table's entries.

Owns the conntrack states (``CT_NONE`` .. ``CT_ICMP``) and timeouts (``TCP_TIMEOUTS`` per
state, ``UDP_TIMEOUT``, ``UDP_STREAM_TIMEOUT``, ``ICMP_TIMEOUT``, ``OTHER_TIMEOUT``: seconds
of ``NS`` nanoseconds), their one definition: the compiled module reads them from here at
import. And ``Conntrack``: an entry under both its tuples (``_ct_insert``), deleting the keys
that still name an entry (``_ct_delete``), the small TCP state machine and the timeouts after
it (``_ct_update``), expiry at ``cleanup`` (``_ct_expire``). The table is ``State.ct``:
(node, proto, sip, sport, dip, dport) -> (entry, reply direction); ``netfilter.py`` looks it
up and creates entries (CT-1, CT-2).

Compiled twin: ``kemu/fastpath/conntrack.pxi`` (states and timeouts: ``codes.pxi``).
SEMANTICS ids: CT-1, CT-2 (with ``netfilter.py``).
"""

from __future__ import annotations

from kemu.dataplane import codes as C
from kemu.dataplane.reference.state import CtEntry, State

NS = 10**9
# conntrack timeouts (kube-proxy sets established 24 h and close-wait 1 h; kernel defaults else)
CT_NONE, CT_SYN_SENT, CT_SYN_RECV, CT_ESTABLISHED, CT_FIN, CT_CLOSE, CT_UDP, CT_ICMP = range(8)
TCP_TIMEOUTS = (120, 120, 60, 86400, 120, 10)  # indexed by state
UDP_TIMEOUT, UDP_STREAM_TIMEOUT, ICMP_TIMEOUT, OTHER_TIMEOUT = 30, 120, 30, 600


class Conntrack(State):
    """The conntrack table's entries: insert, delete, update, expire."""

    def _ct_insert(self, e: CtEntry) -> None:
        self.ct[(e.node,) + e.orig] = (e, False)
        self.ct[(e.node,) + e.reply] = (e, True)

    def _ct_delete(self, e: CtEntry) -> None:
        for key, dirn in (((e.node,) + e.orig, False), ((e.node,) + e.reply, True)):
            hit = self.ct.get(key)
            if hit is not None and hit[0] is e and hit[1] == dirn:
                del self.ct[key]

    def _ct_update(self, e: CtEntry, is_reply: bool, d: bytearray, l4: int,
                   proto: int) -> None:
        """A small TCP state machine (FIN and CLOSE are sticky) and the timeouts after it."""
        if is_reply:
            e.flags |= C.CT_REPLIED
        if proto == C.PROTO_TCP and l4 + 14 <= len(d):
            fl = d[l4 + 13]
            st = e.state
            if st == CT_CLOSE or fl & 0x04:
                st = CT_CLOSE
            elif fl & 0x01 or st == CT_FIN:
                st = CT_FIN
            elif fl & 0x02 and not fl & 0x10:
                st = CT_SYN_SENT if st in (CT_NONE, CT_SYN_SENT) else st
            elif fl & 0x12 == 0x12 and is_reply:
                st = CT_SYN_RECV
            elif fl & 0x10 and e.flags & C.CT_REPLIED:
                st = CT_ESTABLISHED
            elif st == CT_NONE:
                st = CT_ESTABLISHED if fl & 0x10 else CT_SYN_SENT  # loose pickup
            e.state = st
            e.expires = self.now + TCP_TIMEOUTS[st] * NS
        elif proto == C.PROTO_UDP:
            e.state = CT_UDP
            e.expires = self.now + (UDP_STREAM_TIMEOUT if e.flags & C.CT_REPLIED
                                    else UDP_TIMEOUT) * NS
        elif proto == C.PROTO_ICMP:
            e.state = CT_ICMP
            e.expires = self.now + ICMP_TIMEOUT * NS
        else:
            e.expires = self.now + OTHER_TIMEOUT * NS

    def _ct_expire(self, now: int) -> None:
        """``cleanup``'s conntrack part: delete the entries past their timeout."""
        for e, is_reply in list(self.ct.values()):
            if not is_reply and e.expires < now:
                self._ct_delete(e)
