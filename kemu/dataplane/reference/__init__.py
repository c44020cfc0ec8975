"""The pure-Python reference datapath: the oracle for ``kemu/_fastpath.pyx``.

``Datapath`` (``datapath.py``) and ``Lpm`` (``lpm.py``): the same API and the same results,
byte for byte, as the compiled module's. The conntrack states and timeouts are re-exported
for the compiled module, which reads them from here at import.
"""

from kemu.dataplane.reference.datapath import (
    CT_CLOSE,
    CT_ESTABLISHED,
    CT_FIN,
    CT_ICMP,
    CT_NONE,
    CT_SYN_RECV,
    CT_SYN_SENT,
    CT_UDP,
    ICMP_TIMEOUT,
    NS,
    OTHER_TIMEOUT,
    TCP_TIMEOUTS,
    UDP_STREAM_TIMEOUT,
    UDP_TIMEOUT,
    Datapath,
)
from kemu.dataplane.reference.lpm import Lpm

__all__ = [
    "CT_CLOSE",
    "CT_ESTABLISHED",
    "CT_FIN",
    "CT_ICMP",
    "CT_NONE",
    "CT_SYN_RECV",
    "CT_SYN_SENT",
    "CT_UDP",
    "ICMP_TIMEOUT",
    "NS",
    "OTHER_TIMEOUT",
    "TCP_TIMEOUTS",
    "UDP_STREAM_TIMEOUT",
    "UDP_TIMEOUT",
    "Datapath",
    "Lpm",
]
