"""Label selectors, and the NetworkPolicy objects built from them.

Selectors: parsing ``matchLabels``/``matchExpressions`` and matching label sets.

Two forms exist in Kubernetes and both live here:

- the *map* selector of Services, ReplicaSet templates and ``nodeSelector``: every key must be
  present with an equal value (``matches_map``); the empty map matches everything (callers
  decide whether an empty Service selector means "selector-less": it does, see the loader);
- ``LabelSelector`` (workloads, NetworkPolicy ``podSelector``/``namespaceSelector``, P-4/P-5):
  ``matchLabels`` AND every requirement of ``matchExpressions`` (``matches``). The empty selector
  matches everything; ``NotIn`` and ``DoesNotExist`` match objects that lack the key.

Parsing checks what the API server checks: operators, values present for ``In``/``NotIn`` and
absent for ``Exists``/``DoesNotExist``, label key and value syntax.

``parse_policy`` reads a NetworkPolicy: ``podSelector`` (required; ``{}`` selects all), rules
whose peers are a pod and/or namespace selector (one element = AND, P-5) or an ``ipBlock``
whose ``except`` lies strictly inside its ``cidr`` (P-6), ports by number or name, ``endPort``
only with a numeric port (P-7), and ``policyTypes`` defaulted per P-3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kemu.control.manifests import (
    Fields,
    join,
    label_key_error,
    label_value_error,
    port_name_error,
    type_name,
)
from kemu.control.model import (
    IPBlock,
    LabelSelector,
    LabelSelectorRequirement,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def matches_map(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Equality-based selector (Service ``spec.selector``, ``nodeSelector``)."""
    return all(labels.get(k) == v for k, v in selector.items())


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """``matchLabels`` AND all ``matchExpressions``; the empty selector matches everything."""
    if not matches_map(selector.match_labels, labels):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In":
            ok = present and labels[req.key] in req.values
        elif req.operator == "NotIn":
            ok = not present or labels[req.key] not in req.values
        elif req.operator == "Exists":
            ok = present
        else:  # DoesNotExist
            ok = not present
        if not ok:
            return False
    return True


def is_empty(selector: LabelSelector) -> bool:
    return not selector.match_labels and not selector.match_expressions


def parse_selector(f: Fields, d: dict[str, Any], path: str, key: str) -> LabelSelector:
    """Parse ``d[key]`` as a ``LabelSelector`` (absent: the empty selector)."""
    where = join(path, key)
    raw = f.mapping(d, path, key)
    f.known(raw, where, ("matchLabels", "matchExpressions"))
    selector = LabelSelector(match_labels=f.labels(raw, where, "matchLabels"))
    for epath, expr in f.mappings(raw, where, "matchExpressions"):
        f.known(expr, epath, ("key", "operator", "values"))
        k = f.string(expr, epath, "key", required=True)
        if k and (err := label_key_error(k)):
            f.problem(join(epath, "key"), err)
        op = f.string(expr, epath, "operator", required=True)
        if op and op not in OPERATORS:
            f.problem(join(epath, "operator"), f"'{op}' is not one of {', '.join(OPERATORS)}")
            continue
        values: list[str] = []
        for i, v in enumerate(f.seq(expr, epath, "values")):
            if not isinstance(v, str):
                f.problem(join(join(epath, "values"), i),
                          f"expected a string, got {type_name(v)} ({v!r}); quote it")
            elif err := label_value_error(v):
                f.problem(join(join(epath, "values"), i), err)
            else:
                values.append(v)
        if op in ("In", "NotIn") and not expr.get("values"):
            f.problem(join(epath, "values"), f"must be non-empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and expr.get("values"):
            f.problem(join(epath, "values"), f"must be empty for operator {op}")
        if k and op:
            selector.match_expressions.append(
                LabelSelectorRequirement(key=k, operator=op, values=values))  # type: ignore[arg-type]
    return selector


def describe(selector: LabelSelector) -> str:
    """kubectl's text form: ``app=web,tier in (a,b),!debug``; ``<none>`` when empty."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        if req.operator == "In":
            parts.append(f"{req.key} in ({','.join(req.values)})")
        elif req.operator == "NotIn":
            parts.append(f"{req.key} notin ({','.join(req.values)})")
        elif req.operator == "Exists":
            parts.append(req.key)
        else:
            parts.append(f"!{req.key}")
    return ",".join(parts) if parts else "<none>"


# --- NetworkPolicy (P-3..P-7) ---------------------------------------------------------------

def parse_policy(f: Fields, obj: dict[str, Any], namespace: str, name: str) -> NetworkPolicy:
    spec = f.mapping(obj, "", "spec", required=True)
    f.known(spec, "spec", ("podSelector", "policyTypes", "ingress", "egress"))
    if "podSelector" not in spec and spec:
        f.problem("spec.podSelector", "required field is missing (use {} to select all pods)")
    pol = NetworkPolicy(namespace=namespace, name=name, source=f.source,
                        pod_selector=parse_selector(f, spec, "spec", "podSelector"),
                        policy_types=[])
    types = f.seq(spec, "spec", "policyTypes")
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            f.problem(f"spec.policyTypes[{i}]", f"{t!r} is not one of Ingress, Egress")
        elif t in pol.policy_types:
            f.problem(f"spec.policyTypes[{i}]", f"duplicate {t}")
        else:
            pol.policy_types.append(t)
    if "policyTypes" not in spec or not types:  # P-3
        pol.policy_types = ["Ingress"] + (["Egress"] if "egress" in spec else [])
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = getattr(pol, direction)
        for rpath, r in f.mappings(spec, "spec", direction):
            f.known(r, rpath, (peers_key, "ports"))
            rule = PolicyRule()
            for ppath, p in f.mappings(r, rpath, peers_key):
                peer = _peer(f, p, ppath)
                if peer is not None:
                    rule.peers.append(peer)
            for ppath, p in f.mappings(r, rpath, "ports"):
                rule.ports.append(_policy_port(f, p, ppath))
            rules.append(rule)
    return pol


def _peer(f: Fields, p: dict[str, Any], path: str) -> PolicyPeer | None:
    f.known(p, path, ("podSelector", "namespaceSelector", "ipBlock"))
    peer = PolicyPeer()
    if "podSelector" in p:
        peer.pod_selector = parse_selector(f, p, path, "podSelector")
    if "namespaceSelector" in p:
        peer.namespace_selector = parse_selector(f, p, path, "namespaceSelector")
    if "ipBlock" in p:
        if peer.pod_selector is not None or peer.namespace_selector is not None:
            f.problem(path, "ipBlock cannot be combined with podSelector or namespaceSelector")
        block = f.mapping(p, path, "ipBlock")
        bpath = join(path, "ipBlock")
        f.known(block, bpath, ("cidr", "except"))
        cidr = f.cidr(block["cidr"], join(bpath, "cidr")) if "cidr" in block else None
        if "cidr" not in block:
            f.problem(join(bpath, "cidr"), "required field is missing")
        if cidr is None:
            return None
        peer.ip_block = IPBlock(cidr=cidr)
        for i, v in enumerate(f.seq(block, bpath, "except")):
            ex = f.cidr(v, f"{bpath}.except[{i}]")
            if ex is not None and (not ex.subnet_of(cidr) or ex == cidr):
                f.problem(f"{bpath}.except[{i}]", f"{ex} is not strictly inside cidr {cidr}")
            elif ex is not None:
                peer.ip_block.except_.append(ex)
    if peer.pod_selector is None and peer.namespace_selector is None and peer.ip_block is None:
        f.problem(path, "must specify a peer (podSelector, namespaceSelector or ipBlock)")
        return None
    return peer


def _policy_port(f: Fields, p: dict[str, Any], path: str) -> PolicyPort:
    f.known(p, path, ("protocol", "port", "endPort"))
    out = PolicyPort(protocol=f.protocol(p, path))  # type: ignore[arg-type]
    port = p.get("port")
    if isinstance(port, str):
        if err := port_name_error(port):
            f.problem(join(path, "port"), f"'{port}' {err}")
        out.port = port
    elif port is not None:
        out.port = f.integer(p, path, "port", lo=1, hi=65535)
    if "endPort" in p:
        end = f.integer(p, path, "endPort", lo=1, hi=65535)
        if not isinstance(out.port, int):
            f.problem(join(path, "endPort"), "requires a numeric port")
        elif end is not None and end < out.port:
            f.problem(join(path, "endPort"), f"{end} is less than port {out.port}")
        else:
            out.end_port = end
    return out
