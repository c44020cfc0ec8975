# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""kemu's compiled datapath: the same API and the same results, byte for byte, as the pure
reference ``kemu.dataplane.reference`` (the oracle; read it for the semantics of every stage).

This file is a table of contents. The extension is assembled from rooms in
``kemu/fastpath/``, one concern each, ``include``d here in dependency order: the compiler
sees one module, so functions inline across rooms as they did when this was one file. Each
room's opening comment says what it holds; its pure twin is the module of the same name in
``kemu/dataplane/reference/`` (or the file the comment names). ``docs/ARCHITECTURE.md`` walks
a frame through the rooms and says where to add a stage, a device kind or a hook.

Invariants kept across rooms: the inner functions hold no Python objects and run without the
GIL; ``process`` takes the raw data of the caller's numpy arrays, re-acquired on every call
(``Results.grow`` replaces them), and writes the counters back on return; numbers come from
``kemu.dataplane.codes`` as compile-time constants, checked against it at import.
"""

from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t, uintptr_t)
from libc.stdlib cimport calloc, free, malloc, realloc

cdef extern from "<stdlib.h>" nogil:
    void* aligned_alloc(size_t alignment, size_t size)
from libc.string cimport memcpy, memset

cimport numpy as cnp

import numpy as np

from kemu.dataplane import codes as _C
from kemu.dataplane import packet as _P
from kemu.dataplane.reference import conntrack as _R

cnp.import_array()

# -- foundations ------------------------------------------------------------------------------
include "fastpath/codes.pxi"      # numbers shared with Python, checked at import
include "fastpath/util.pxi"       # byte loads/stores, checksums, flow hash, huge pages
include "fastpath/htab.pxi"       # open-addressing hash table (FDB, neighbours, ...)
include "fastpath/lpm.pxi"        # DIR-24-8 longest-prefix match; class Lpm
include "fastpath/state.pxi"      # C structs of the datapath, buffers, the work stack
include "fastpath/record.pxi"     # hops, events, outcomes; what a path touched
include "fastpath/parse.pxi"      # ip_rcv checks, L4 parsing

# -- a node's stack ---------------------------------------------------------------------------
include "fastpath/conntrack.pxi"  # connection tracking
include "fastpath/nat.pxi"        # rewrites, masquerade, RELATED ICMP translation
include "fastpath/proxy.pxi"      # kube-proxy Service DNAT for new flows
include "fastpath/policy.pxi"     # NetworkPolicy at FORWARD for new connections
include "fastpath/netfilter.pxi"  # hooks: PREROUTING/OUTPUT, FORWARD, POSTROUTING
include "fastpath/tunnel.pxi"     # VXLAN encapsulation and decapsulation
include "fastpath/inject.pxi"     # how an injected frame enters its host

# -- devices and the pipeline -----------------------------------------------------------------
include "fastpath/veth.pxi"       # veth pairs and lo: what one end sends, the other gets
include "fastpath/bridge.pxi"     # Linux bridge: ports, learning, forwarding, flooding
include "fastpath/host.pxi"       # end hosts' receive side: pods, external hosts, gateway
include "fastpath/gateway.pxi"    # the gateway: a router on the node network
include "fastpath/routing.pxi"    # routes, neighbours, ip_rcv/forward/output, local out
include "fastpath/frag.pxi"       # IPv4 fragmentation and conntrack's reassembly
include "fastpath/ovs.pxi"        # Antrea's OVS bridge br-int: pipeline, tunnel port
include "fastpath/stages.pxi"     # stage dispatch, device-kind registry, run_frame, cold
include "fastpath/flowcache.pxi"  # flow cache for established flows, prefetching

# -- Python-facing ----------------------------------------------------------------------------
include "fastpath/datapath.pxi"   # class Datapath: API writes, reset, state, process
include "fastpath/load.pxi"       # loading Tables into the C state, checked first
include "fastpath/hops.pxi"       # pcapng hop comments and blocks (twin: kemu.io.hops)
include "fastpath/capture.pxi"    # pcap/pcapng record scanning (twin: kemu.io.capture)
include "fastpath/placement.pxi"  # replay placement and fates (twin: kemu.frontend.placement)
include "fastpath/flowlog.pxi"    # flow log records (twin: kemu.io.flowlog)
