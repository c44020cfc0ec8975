"""Type stub of the Cython datapath (``kemu/_fastpath.pyx``).

The same API, with the same results byte for byte, as ``kemu.dataplane.reference``
(``Datapath``) and ``kemu.dataplane.lpm`` (``Lpm``).
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from kemu.dataplane.results import Results
from kemu.dataplane.tables import Tables

class Lpm:
    """Routes: (prefix, depth) -> next-hop id (below 2**24); DIR-24-8 like DPDK's rte_lpm."""

    def __init__(self) -> None: ...
    def add(self, prefix: int, depth: int, next_hop: int) -> None: ...
    def delete(self, prefix: int, depth: int) -> bool: ...
    def lookup(self, ip: int) -> int: ...
    def lookup_bulk(self, ips: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = lookup(ips[i])``; ``ips`` is taken as uint32. A C-contiguous int32 or
        int64 ``out`` is written directly (software-pipelined, prefetching ahead), any other
        through an int64 copy."""
    def __len__(self) -> int: ...

class Datapath:
    """Batch datapath over compiled ``Tables``; state persists across ``process`` calls."""

    @property
    def t(self) -> Tables: ...
    @property
    def seed(self) -> int: ...
    @property
    def static_neighbours(self) -> bool: ...
    @property
    def lpm(self) -> Lpm: ...
    @property
    def flow_cache_hits(self) -> int: ...
    def __init__(self, tables: Tables, seed: int = 0, static_neighbours: bool = True) -> None: ...
    def load(self, tables: Tables) -> None: ...
    def reset(self) -> None: ...
    def neigh_set(self, node: int, ip: int, mac: int) -> None: ...
    def neigh_lookup(self, node: int, ip: int) -> int: ...
    def cleanup(self, now: int) -> None: ...
    def state(self) -> dict[str, list[tuple[Any, ...]]]: ...
    def process(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                in_if: np.ndarray, in_mode: np.ndarray, ts_ns: np.ndarray, start: int,
                stop: int, res: Results) -> int: ...

def mix64(x: int) -> int: ...
def py_flow_hash(seed: int, node: int, proto: int, sip: int, sport: int, dip: int,
                 dport: int) -> int: ...
def _set_track_ifaces(n: int) -> int: ...
def _set_flow_cache(on: bool) -> bool: ...

# -- pcapng output of hops (twins of kemu.io.hops) -------------------------------------------

class HopComments:
    """Comment ids of recorded hops; see ``kemu.io.hops.HopComments``."""

    n_event_ids: int
    n_comment_ids: int
    def assign(self, ev_hop: np.ndarray, ev_kind: np.ndarray, ev_a: np.ndarray,
               ev_b: np.ndarray, ev_c: np.ndarray, n_events: int, keep: np.ndarray,
               skip: np.ndarray, cur: np.ndarray
               ) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]: ...

def encode_hops(hop_frame: np.ndarray, hop_iface: np.ndarray, hop_dir: np.ndarray,
                hop_off: np.ndarray, hop_len: np.ndarray, n: int, keep: np.ndarray,
                file_if: np.ndarray, frame_ts: np.ndarray, hop_cid: np.ndarray,
                comment_bytes: np.ndarray, comment_start: np.ndarray,
                comment_size: np.ndarray, arena: np.ndarray,
                space: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, int]: ...

# -- capture record scanning (twins of kemu.io.capture.pcap_scan / pcapng_scan) -------------

def pcap_scan(w: memoryview, r: int, remaining: int, limit: int, big: bool
              ) -> tuple[np.ndarray, int, bool]: ...
def pcapng_scan(w: memoryview, r: int, remaining: int, kind: int, minlen: int, big: bool
                ) -> tuple[np.ndarray, int]: ...

# -- replay placement (twins in kemu.frontend.placement) ---------------------------------

def count_fates(oc_frame: np.ndarray, oc_kind: np.ndarray, oc_reason: np.ndarray,
                n_outcomes: int, n: int, noise: np.ndarray, ev_frame: np.ndarray,
                ev_kind: np.ndarray, n_events: int, translating: np.ndarray,
                oc_nat: np.ndarray | None = None
                ) -> tuple[int, int, int, int, list[tuple[int, bool]]]: ...

def place_frames(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 own_ip: np.ndarray, own_if: np.ndarray, own_if_l2: np.ndarray,
                 mac_keys: np.ndarray, mac_ifs: np.ndarray, gateway: int
                 ) -> tuple[np.ndarray, np.ndarray]: ...

# -- the flow log (twin of kemu.io.flowlog.encode_flows) -------------------------------------

FLOW_RECORD_TEXT: int

def encode_flows(res: Results, frame_ts: np.ndarray, frame_number: np.ndarray,
                 hop_dec: np.ndarray, ev_dec: np.ndarray, frame_dec: np.ndarray, pieces: Any,
                 space: Callable[[int], np.ndarray] | None = None
                 ) -> tuple[np.ndarray, int]: ...
