"""NetworkPolicy -> the policy fields of ``Tables``: identities, selections, the policy map.

Compiled the way Cilium compiles it (networking.k8s.io/v1 semantics, SEMANTICS P-1..P-12):

- **identities**: each distinct (namespace, pod labels) of the pods that are not hostNetwork
  gets a number (sorted by namespace then labels); selectors are evaluated once per identity,
  not per pod. hostNetwork pods have none: they are never selected and their traffic is their
  node's (P-12);
- **selections** (P-1, P-3): per pod and direction the policies selecting it whose
  ``policyTypes`` name that direction (``sel_start``/``sel_count`` into ``sel_pol``); pods of
  one identity share one range. A pod with none is not isolated that way;
- **rules**: a rule id for every effective rule (policy by policy, ingress then egress; rules
  of a direction the policy's types do not name are ignored, as the API server's
  consumers do). A rule allows a connection when one of its peers matches (none: any peer,
  P-4) and one of its ports (none: every port of every protocol, P-4). Peers: a podSelector
  (the policy's namespace), a namespaceSelector (every pod of the matching namespaces,
  ``kubernetes.io/metadata.name`` included), both in one peer = AND, separate peers = OR (P-5);
  an ipBlock matches any address, pod addresses included, except the ``except`` CIDRs (P-6, as
  iptables-based kube-router and Calico match it: Cilium's ipBlock does not match pod
  addresses); CiliumNetworkPolicy's entities (``world``, ``cluster``, node addresses,
  ``all``) and CIDRs (never inside the cluster) become CIDR blocks with excepts over the
  cluster's ranges (``_entity_blocks``);
- **L7 rules** (CiliumNetworkPolicy ``toPorts[].rules.http``, ``PolicyRule.http``) get
  the last rule ids (``rule_l7_count`` of them), after every L3/L4 rule: the lowest rule
  id allowing a connection is then an L3/L4 rule whenever one allows it, which is Cilium's
  merge (an L4-only allow of the same port wildcards the L7 rules: every request passes,
  https://docs.cilium.io/en/stable/security/policy/layer7/), and an L7 rule only when
  nothing else allows: the datapath redirects that connection to the node's HTTP proxy;
- **the policy map**: (2 * policy + direction - 1, remote identity or -1 = any peer,
  protocol or 0 = every protocol, port or ``PORT_ANY``) -> the lowest rule id, and per
  (policy, direction) the kinds of key it holds (``pd_keys``): a new connection costs the
  few lookups of those kinds per selecting policy. Rules whose ports are ranges
  (``endPort``) or names (resolved per destination pod: the same name may be a different
  number on two pods of one identity, P-7) or whose peers are ipBlocks are also listed per
  (policy, direction) and evaluated rule by rule (``ri_*`` holds their selector identities,
  ``np_*`` the named ports). The verdict is the lowest rule id that allows, in both
  evaluations.

Deterministic: the same cluster gives the same arrays. Compile time grows with pods +
identities x policies of their namespace + map entries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, collapse_addresses
from typing import TYPE_CHECKING, Any

import numpy as np

from kemu.control.selectors import PodIndex, matches
from kemu.dataplane import codes as C
from kemu.dataplane.tables import PORT_ANY

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster
    from kemu.control.model import LabelSelector, NetworkPolicy, PolicyPeer, PolicyRule

_DIRS = ((C.POL_INGRESS, "Ingress", "ingress"), (C.POL_EGRESS, "Egress", "egress"))


def _selector_key(sel: LabelSelector) -> tuple:
    return (tuple(sorted(sel.match_labels.items())),
            tuple((r.key, r.operator, tuple(r.values)) for r in sel.match_expressions))


@dataclass
class _IdentPod:
    """An identity as ``PodIndex`` indexes pods (its key sorts in identity order)."""

    namespace: str
    key: str
    labels: dict[str, str]
    ident: int


class _Idents:
    """Identities and the pods of each, with selector evaluation cached per selector."""

    def __init__(self, cluster: Cluster) -> None:
        keys: dict[tuple[str, frozenset], tuple] = {}  # -> its sorted form
        pod_key: list[tuple[str, frozenset] | None] = []
        for pod in cluster.pods:
            if pod.host_network:
                pod_key.append(None)
                continue
            k = (pod.namespace, frozenset(pod.labels.items()))
            if k not in keys:
                keys[k] = (k[0], tuple(sorted(k[1])))
            pod_key.append(k)
        order = sorted(keys, key=keys.__getitem__)
        index = {k: i for i, k in enumerate(order)}
        self.names = tuple(f"{k[0]}:" + ",".join(f"{a}={b}" for a, b in keys[k][1])
                           for k in order)
        self.labels = [dict(k[1]) for k in order]
        self.by_ns: dict[str, list[int]] = {}
        for i, k in enumerate(order):
            self.by_ns.setdefault(k[0], []).append(i)
        self.pod_ident = np.array([index[k] if k is not None else -1 for k in pod_key],
                                  dtype=np.int32)
        # selectors through the label index (candidates by label, then ``matches``): not a
        # scan of every identity per selector
        idents = (_IdentPod(k[0], f"{k[0]}/{i:010d}", self.labels[i], i)
                  for i, k in enumerate(order))
        self._index = PodIndex(idents)  # type: ignore[arg-type]
        self.ns_labels = {name: ns.labels for name, ns in cluster.namespaces.items()}
        self._pods_cache: dict[tuple, tuple[int, ...]] = {}
        self._ns_cache: dict[tuple, tuple[str, ...]] = {}
        self._peer_cache: dict[tuple, tuple[int, ...]] = {}

    def in_namespace(self, ns: str, sel: LabelSelector) -> tuple[int, ...]:
        key = (ns, _selector_key(sel))
        hit = self._pods_cache.get(key)
        if hit is None:
            hit = tuple(p.ident for p in self._index.select(ns, sel))  # type: ignore[attr-defined]
            self._pods_cache[key] = hit
        return hit

    def namespaces(self, sel: LabelSelector) -> tuple[str, ...]:
        key = _selector_key(sel)
        hit = self._ns_cache.get(key)
        if hit is None:
            names = set(self.ns_labels) | set(self.by_ns)
            hit = tuple(sorted(n for n in names if matches(
                sel, self.ns_labels.get(n, {"kubernetes.io/metadata.name": n}))))
            self._ns_cache[key] = hit
        return hit

    def peer(self, pol: NetworkPolicy, pod_sel: LabelSelector | None,
             ns_sel: LabelSelector | None) -> Iterable[int]:
        """The identities a pod/namespace selector peer matches (P-5)."""
        if ns_sel is None:
            assert pod_sel is not None
            return self.in_namespace(pol.namespace, pod_sel)
        key = (None if pod_sel is None else _selector_key(pod_sel), _selector_key(ns_sel))
        hit = self._peer_cache.get(key)
        if hit is None:
            out: list[int] = []
            for ns in self.namespaces(ns_sel):
                if ns not in self.by_ns:
                    continue
                if pod_sel is None:
                    out.extend(self.by_ns[ns])
                else:
                    out.extend(self.in_namespace(ns, pod_sel))
            hit = self._peer_cache[key] = tuple(out)
        return hit


def _key_bit(any_peer: bool, proto: int, port: int) -> int:
    """``Tables.pd_keys``'s bit of a map key's kind."""
    kind = 0 if proto == 0 else 2 if port == PORT_ANY else 1
    return 1 << (kind + (3 if any_peer else 0))


def _simple_ports(rule: PolicyRule) -> bool:
    """Ports the map holds directly: none, or single numbers, or a protocol alone."""
    return all(not isinstance(p.port, str) and p.end_port is None for p in rule.ports)


def _cluster_ranges(cluster: Cluster) -> list[IPv4Network]:
    """The addresses inside the cluster (Cilium's ``cluster`` entity): the cluster CIDR,
    every node's pod CIDR and pod blocks, and every node's address."""
    nets = [cluster.config.cluster_cidr]
    for n in cluster.nodes:
        nets += [n.pod_cidr, *n.pod_blocks, IPv4Network(f"{n.internal_ip}/32")]
    return list(collapse_addresses(nets))


def _entity_blocks(peer: PolicyPeer, inside: list[IPv4Network], nodes: list[Any]
                   ) -> list[tuple[IPv4Network, list[IPv4Network]]]:
    """A Cilium entity peer (``kemu.control.cilium``) as (CIDR, excepts) blocks."""
    world = IPv4Network("0.0.0.0/0")
    if peer.entity == "all":
        return [(world, [])]
    if peer.entity == "cluster":
        return [(net, []) for net in inside]
    if peer.entity == "nodes":
        return [(IPv4Network(f"{ip}/32"), []) for ip in nodes]
    assert peer.entity == "world", peer.entity
    if peer.ip_block is None:
        return [(world, inside)]
    block = peer.ip_block
    if any(block.cidr.subnet_of(net) for net in inside):
        return []  # a CIDR inside the cluster matches nothing (Cilium's CIDR identities)
    return [(block.cidr, [*block.except_, *(n for n in inside if n.subnet_of(block.cidr))])]


def compile_policies(cluster: Cluster) -> dict[str, Any]:
    """The ``Tables`` fields of NetworkPolicy (module docstring); {} without policies."""
    policies = cluster.policies
    if not policies:
        return {}
    ids = _Idents(cluster)
    n_pods = len(cluster.pods)
    n_id = len(ids.names)
    pols = sorted(policies, key=lambda p: p.key)
    # selections per identity and direction (P-1, P-3)
    sel_by_ident: list[list[list[int]]] = [[[], []] for _ in range(n_id)]
    for pi, pol in enumerate(pols):
        chosen = ids.in_namespace(pol.namespace, pol.pod_selector)
        for dirn, ptype, _attr in _DIRS:
            if ptype in pol.policy_types:
                for i in chosen:
                    sel_by_ident[i][dirn - 1].append(pi)
    ranges: dict[tuple[int, ...], int] = {}
    sel_pol: list[int] = []
    ident_range: list[tuple[int, int, int, int]] = []
    for i in range(n_id):
        row = []
        for k in (0, 1):
            tup = tuple(sel_by_ident[i][k])
            if not tup:
                row += [0, 0]
                continue
            start = ranges.get(tup)
            if start is None:
                start = ranges[tup] = len(sel_pol)
                sel_pol.extend(tup)
            row += [start, len(tup)]
        ident_range.append(tuple(row))  # type: ignore[arg-type]
    sel_start = np.zeros(2 * n_pods, dtype=np.int32)
    sel_count = np.zeros(2 * n_pods, dtype=np.int32)
    if n_id:
        table = np.array(ident_range, dtype=np.int32).reshape(n_id, 4)
        has = ids.pod_ident >= 0
        rows = table[ids.pod_ident[has]]
        where = np.nonzero(has)[0]
        sel_start[2 * where], sel_count[2 * where] = rows[:, 0], rows[:, 1]
        sel_start[2 * where + 1], sel_count[2 * where + 1] = rows[:, 2], rows[:, 3]

    n_pol = len(pols)
    pd_keys = np.zeros(2 * n_pol, dtype=np.uint8)
    rule_pol: list[int] = []
    rule_dir: list[int] = []
    rule_idx: list[int] = []
    rule_any_peer: list[int] = []
    rule_port: list[tuple[int, int]] = []
    rule_cidr: list[tuple[int, int]] = []
    ports: list[tuple[int, int, int, int]] = []  # proto, lo, hi, name
    names: dict[str, int] = {}
    cidrs: list[tuple[int, int, int, int]] = []  # net, mask, exc start, exc count
    excs: list[tuple[int, int]] = []
    pmap: dict[tuple[int, int, int, int], int] = {}
    slow: dict[int, list[int]] = {}
    cluster_ranges: list[list[IPv4Network]] = []
    node_ips = sorted({n.internal_ip for n in cluster.nodes})

    def ranges() -> list[IPv4Network]:
        if not cluster_ranges:
            cluster_ranges.append(_cluster_ranges(cluster))
        return cluster_ranges[0]

    ri_r: list[np.ndarray] = []  # per slow rule, in rule order: (rule, identity) sorted
    ri_i: list[np.ndarray] = []
    l7_first = 0
    for l7_pass in (False, True):  # L3/L4 rules first, then the L7 ones (module docstring)
        for pi, pol in enumerate(pols):
            for dirn, ptype, attr in _DIRS:
                if ptype not in pol.policy_types:
                    continue
                pd = 2 * pi + dirn - 1
                for ri_idx, rule in enumerate(getattr(pol, attr)):
                    if (rule.http is not None) != l7_pass:
                        continue
                    r = len(rule_pol)
                    rule_pol.append(pi)
                    rule_dir.append(dirn)
                    rule_idx.append(ri_idx)
                    rule_any_peer.append(0 if rule.peers else 1)
                    p0 = len(ports)
                    for p in rule.ports:
                        proto = C.PROTO_NUMBERS[p.protocol]
                        if isinstance(p.port, str):
                            ports.append((proto, 0, 0, names.setdefault(p.port, len(names))))
                        elif p.port is None:
                            ports.append((proto, 0, 65535, -1))
                        else:
                            ports.append((proto, p.port, p.end_port or p.port, -1))
                    rule_port.append((p0, len(ports) - p0))
                    c0 = len(cidrs)
                    idents: set[int] = set()
                    for peer in rule.peers:
                        if peer.entity is not None:
                            for net, exc in _entity_blocks(peer, ranges(), node_ips):
                                e0 = len(excs)
                                excs.extend((int(x.network_address), int(x.netmask))
                                            for x in exc)
                                cidrs.append((int(net.network_address), int(net.netmask), e0,
                                              len(excs) - e0))
                        elif peer.ip_block is not None:
                            e0 = len(excs)
                            for ex in peer.ip_block.except_:
                                excs.append((int(ex.network_address), int(ex.netmask)))
                            b = peer.ip_block.cidr
                            cidrs.append((int(b.network_address), int(b.netmask), e0,
                                          len(excs) - e0))
                        else:
                            idents.update(ids.peer(pol, peer.pod_selector,
                                                   peer.namespace_selector))
                    rule_cidr.append((c0, len(cidrs) - c0))
                    # (L7 rules are judged rule by rule: the proxy needs every one allowing)
                    simple = _simple_ports(rule) and rule.http is None
                    if simple:
                        keys = ([(0, PORT_ANY)] if not rule.ports else
                                [(C.PROTO_NUMBERS[p.protocol],
                                  PORT_ANY if p.port is None else int(p.port))
                                 for p in rule.ports])
                        peers = [-1] if not rule.peers else sorted(idents)
                        for peer_id in peers:
                            for proto, port in keys:
                                pmap.setdefault((pd, peer_id, proto, port), r)
                        for proto, port in keys:
                            if peers:
                                pd_keys[pd] |= _key_bit(peers == [-1], proto, port)
                    if not simple or len(cidrs) > c0:
                        slow.setdefault(pd, []).append(r)
                        if idents:
                            ri_i.append(np.array(sorted(idents), dtype=np.int32))
                            ri_r.append(np.full(len(idents), r, dtype=np.int32))
        if not l7_pass:
            l7_first = len(rule_pol)
    # named ports the policies name, per pod (P-7)
    np_rows: list[tuple[int, int, int, int]] = []
    if names:
        for p_i, pod in enumerate(cluster.pods):
            if pod.host_network:
                continue
            for c in pod.containers:
                for cp in c.ports:
                    nid = names.get(cp.name) if cp.name else None
                    if nid is not None:
                        np_rows.append((p_i, C.PROTO_NUMBERS[cp.protocol], nid, cp.port))
        np_rows = sorted(set(np_rows))
    slow_start = np.zeros(2 * n_pol, dtype=np.int32)
    slow_count = np.zeros(2 * n_pol, dtype=np.int32)
    slow_flat: list[int] = []
    for pd in sorted(slow):
        slow_start[pd], slow_count[pd] = len(slow_flat), len(slow[pd])
        slow_flat.extend(slow[pd])
    keys_sorted = sorted(pmap)
    km = np.array(keys_sorted, dtype=np.int64).reshape(len(keys_sorted), 4)
    col = np.array  # short alias for the columns below

    def i32(rows: list, k: int) -> np.ndarray:
        return col([x[k] for x in rows], dtype=np.int32)

    return dict(
        pol_name=tuple(p.key for p in pols), pol_kind=tuple(p.kind for p in pols),
        pol_icmp_allow=cluster.config.policy_icmp == "allow",
        rule_pol=col(rule_pol, dtype=np.int32),
        rule_dir=col(rule_dir, dtype=np.int8),
        rule_idx=col(rule_idx, dtype=np.int32), rule_l7_count=len(rule_pol) - l7_first,
        sel_start=sel_start, sel_count=sel_count, sel_pol=col(sel_pol, dtype=np.int32),
        ident_name=ids.names, pod_ident=ids.pod_ident,
        pm_pd=km[:, 0].astype(np.int32), pm_peer=km[:, 1].astype(np.int32),
        pm_proto=km[:, 2].astype(np.uint8), pm_port=km[:, 3].astype(np.int32),
        pm_rule=col([pmap[k] for k in keys_sorted], dtype=np.int32),
        pd_keys=pd_keys, pd_slow_start=slow_start, pd_slow_count=slow_count,
        slow_rule=col(slow_flat, dtype=np.int32),
        rule_any_peer=col(rule_any_peer, dtype=np.uint8),
        rule_port_start=i32(rule_port, 0), rule_port_count=i32(rule_port, 1),
        port_proto=col([p[0] for p in ports], dtype=np.uint8),
        port_lo=i32(ports, 1), port_hi=i32(ports, 2), port_name=i32(ports, 3),
        port_names=tuple(sorted(names, key=names.__getitem__)),
        rule_cidr_start=i32(rule_cidr, 0), rule_cidr_count=i32(rule_cidr, 1),
        cb_net=col([c[0] for c in cidrs], dtype=np.uint32),
        cb_mask=col([c[1] for c in cidrs], dtype=np.uint32),
        cb_exc_start=i32(cidrs, 2), cb_exc_count=i32(cidrs, 3),
        ex_net=col([e[0] for e in excs], dtype=np.uint32),
        ex_mask=col([e[1] for e in excs], dtype=np.uint32),
        ri_rule=np.concatenate(ri_r) if ri_r else np.zeros(0, np.int32),
        ri_ident=np.concatenate(ri_i) if ri_i else np.zeros(0, np.int32),
        np_pod=i32(np_rows, 0), np_proto=col([x[1] for x in np_rows], dtype=np.uint8),
        np_name=i32(np_rows, 2), np_port=i32(np_rows, 3),
    )
