"""Byte-level helpers of the pure-Python reference: header offsets, checksums, rewrites.

The reference works on ``bytearray`` frames, Ethernet II with an IPv4 header at offset 14.
Checksum updates are incremental (RFC 1624, eqn. 3) exactly as the Cython fast path does
them, so both produce identical bytes; ``ip_checksum`` recomputes from scratch (used to
validate incoming headers, like ``ip_rcv``).
"""

from __future__ import annotations

M64 = (1 << 64) - 1
ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
BROADCAST = 0xFFFFFFFFFFFF


def u16(b: bytearray | bytes, o: int) -> int:
    return (b[o] << 8) | b[o + 1]


def u32(b: bytearray | bytes, o: int) -> int:
    return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]


def u48(b: bytearray | bytes, o: int) -> int:
    return int.from_bytes(b[o: o + 6], "big")


def put16(b: bytearray, o: int, v: int) -> None:
    b[o] = (v >> 8) & 0xFF
    b[o + 1] = v & 0xFF


def put32(b: bytearray, o: int, v: int) -> None:
    b[o: o + 4] = (v & 0xFFFFFFFF).to_bytes(4, "big")


def put48(b: bytearray, o: int, v: int) -> None:
    b[o: o + 6] = (v & 0xFFFFFFFFFFFF).to_bytes(6, "big")


def csum_fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum_replace16(check: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')."""
    s = (~check & 0xFFFF) + (~old & 0xFFFF) + new
    return ~csum_fold(s) & 0xFFFF


def csum_replace32(check: int, old: int, new: int) -> int:
    check = csum_replace16(check, old >> 16, new >> 16)
    return csum_replace16(check, old & 0xFFFF, new & 0xFFFF)


def ip_checksum(b: bytearray | bytes, o: int, n: int) -> int:
    """Internet checksum of ``n`` bytes at ``o`` (header checksum field included)."""
    s = 0
    for i in range(o, o + n - 1, 2):
        s += (b[i] << 8) | b[i + 1]
    if n & 1:
        s += b[o + n - 1] << 8
    return ~csum_fold(s) & 0xFFFF


def mix64(x: int) -> int:
    """splitmix64's finalizer: the seeded hash both implementations share."""
    x &= M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def flow_hash(seed: int, node: int, proto: int, sip: int, sport: int, dip: int,
              dport: int) -> int:
    h = mix64((seed & M64) ^ (node + 1))
    h = mix64(h ^ ((sip << 32) | dip))
    return mix64(h ^ ((proto << 32) | (sport << 16) | dport))


def is_multicast_mac(mac: int) -> bool:
    return bool((mac >> 40) & 1)
