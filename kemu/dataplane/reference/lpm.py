"""Longest-prefix match, pure-Python reference (R-2).

One dict per prefix length, searched from /32 down: obviously right, slow. The Cython
``kemu._fastpath.Lpm`` (DIR-24-8, after DPDK's rte_lpm) has the same API and is checked
against this one and against a brute-force scan.

Compiled twin: ``kemu/fastpath/lpm.pxi``.
SEMANTICS ids: R-2.
"""

from __future__ import annotations

import numpy as np


def _mask(depth: int) -> int:
    return (0xFFFFFFFF << (32 - depth)) & 0xFFFFFFFF if depth else 0


class Lpm:
    """Routes: (prefix, depth) -> next-hop id (a non-negative int below 2**24)."""

    def __init__(self) -> None:
        self._by_depth: list[dict[int, int]] = [{} for _ in range(33)]

    def add(self, prefix: int, depth: int, next_hop: int) -> None:
        if not 0 <= depth <= 32:
            raise ValueError(f"depth {depth} outside 0..32")
        if not 0 <= next_hop < 1 << 24:
            raise ValueError(f"next hop {next_hop} outside 0..2**24-1")
        self._by_depth[depth][prefix & _mask(depth)] = next_hop

    def delete(self, prefix: int, depth: int) -> bool:
        return self._by_depth[depth].pop(prefix & _mask(depth), None) is not None

    def lookup(self, ip: int) -> int:
        """Next-hop id of the longest prefix containing ``ip``, or -1."""
        for depth in range(32, -1, -1):
            d = self._by_depth[depth]
            if d:
                nh = d.get(ip & _mask(depth))
                if nh is not None:
                    return nh
        return -1

    def lookup_bulk(self, ips: np.ndarray, out: np.ndarray) -> None:
        for i in range(len(ips)):
            out[i] = self.lookup(int(ips[i]))

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_depth)
