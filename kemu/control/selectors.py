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

``parse_selector_text`` reads kubectl's ``-l`` text form (``app=web,tier!=db``,
``env in (a,b)``, ``env notin (a)``, ``team``, ``!debug``; ``==`` is ``=``) into the same
``LabelSelector``: every requirement becomes a ``matchExpressions`` entry (``=`` is ``In`` of one
value, ``!=`` is ``NotIn`` of one value: like kubectl it matches objects without the key), so
``matches`` evaluates it with the API server's semantics.

``PodIndex`` indexes pods per namespace by label (key, value) and by label key, so that a
selector is evaluated against the few pods that can match instead of every pod: candidates are
the intersection of the index sets of ``matchLabels`` pairs, ``In`` (union over its values) and
``Exists`` requirements (all pods of the namespace when there are none), and every candidate is
then checked with ``matches`` (a map selector's candidates are already exact), so results
are exactly those of a scan. Results
are in ``namespace/name`` order, the order of ``Cluster.pods``.

``parse_policy`` reads a NetworkPolicy: ``podSelector`` (required; ``{}`` selects all), rules
whose peers are a pod and/or namespace selector (one element = AND, P-5) or an ``ipBlock``
whose ``except`` lies strictly inside its ``cidr`` (P-6), ports by number or name, ``endPort``
only with a numeric port (P-7), and ``policyTypes`` defaulted per P-3.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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
    Pod,
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


class PodIndex:
    """Pods by namespace, label (key, value) and label key (see the module docstring).

    Each pod is indexed under a copy of the labels it had when added: callers re-add a pod
    (``add`` replaces) after changing its labels, and ``remove`` it when it goes.
    """

    def __init__(self, pods: Iterable[Pod] = ()) -> None:
        # namespace -> pod key -> (pod, the labels it is indexed under)
        self._pods: dict[str, dict[str, tuple[Pod, dict[str, str]]]] = {}
        self._pairs: dict[str, dict[tuple[str, str], set[str]]] = {}  # ns -> (k, v) -> keys
        self._keys: dict[str, dict[str, set[str]]] = {}  # ns -> label key -> pod keys
        for pod in pods:
            self.add(pod)

    def __len__(self) -> int:
        return sum(len(v) for v in self._pods.values())

    def add(self, pod: Pod) -> None:
        """Index ``pod`` under its current labels (replacing an earlier entry of its key)."""
        key = pod.key
        ns = pod.namespace
        if key in self._pods.get(ns, ()):
            self.remove(pod)
        labels = dict(pod.labels)
        self._pods.setdefault(ns, {})[key] = (pod, labels)
        pairs = self._pairs.setdefault(ns, {})
        keys = self._keys.setdefault(ns, {})
        for item in labels.items():
            pairs.setdefault(item, set()).add(key)
            keys.setdefault(item[0], set()).add(key)

    def remove(self, pod: Pod) -> None:
        """Forget ``pod`` (by namespace and name); nothing happens when it is not indexed."""
        ns, key = pod.namespace, pod.key
        entry = self._pods.get(ns, {}).pop(key, None)
        if entry is None:
            return
        pairs, keys = self._pairs[ns], self._keys[ns]
        for item in entry[1].items():
            members = pairs[item]
            members.discard(key)
            if not members:
                del pairs[item]
            members = keys[item[0]]
            members.discard(key)
            if not members:
                del keys[item[0]]

    def _candidates(self, namespace: str, pairs: Iterable[tuple[str, str]],
                    any_of: Iterable[tuple[str, list[str]]], present: Iterable[str]
                    ) -> Iterable[str]:
        """Keys of the namespace's pods that have every pair, one of the values of each
        (key, values) of ``any_of``, and every key of ``present``: a superset of the matches."""
        index, by_key = self._pairs.get(namespace, {}), self._keys.get(namespace, {})
        sets: list[set[str]] = [index.get(p, set()) for p in pairs]
        for key, values in any_of:
            union: set[str] = set()
            for v in values:
                union |= index.get((key, v), set())
            sets.append(union)
        sets += [by_key.get(k, set()) for k in present]
        if not sets:
            return self._pods.get(namespace, {}).keys()
        sets.sort(key=len)
        out = sets[0]
        for other in sets[1:]:
            if not out:
                break
            out = out & other
        return out

    def _pick(self, namespace: str, keys: Iterable[str]) -> list[tuple[Pod, dict[str, str]]]:
        pods = self._pods.get(namespace, {})
        return [pods[k] for k in sorted(keys)]

    def select_map(self, namespace: str, selector: Mapping[str, str]) -> list[Pod]:
        """Pods of ``namespace`` matching the map selector, by key (``matches_map``)."""
        found = self._candidates(namespace, selector.items(), (), ())
        return [pod for pod, _ in self._pick(namespace, found)]  # exact: pairs only

    def select(self, namespace: str, selector: LabelSelector) -> list[Pod]:
        """Pods of ``namespace`` matching the ``LabelSelector``, by key (``matches``)."""
        reqs = selector.match_expressions
        found = self._candidates(namespace, selector.match_labels.items(),
                                 [(r.key, r.values) for r in reqs if r.operator == "In"],
                                 [r.key for r in reqs if r.operator == "Exists"])
        return [pod for pod, labels in self._pick(namespace, found) if matches(selector, labels)]


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


_TEXT_SET = re.compile(r"^(?P<key>[^\s!=(),<>]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_TEXT_EQ = re.compile(r"^(?P<key>[^\s!=(),<>]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),<>]*)$")
_TEXT_KEY = re.compile(r"^(?P<neg>!?)\s*(?P<key>[^\s!=(),<>]+)$")


def parse_selector_text(text: str) -> LabelSelector:
    """kubectl's ``-l`` syntax -> ``LabelSelector`` (module docstring); ``ValueError`` names
    the first requirement that is not one (unbalanced parentheses, bad key or value, ``<``/``>``
    which kubectl accepts for numbers only and kemu does not model)."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested parentheses in {text!r}")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced '(' in {text!r}")
    parts.append(text[start:])
    selector = LabelSelector()
    for raw in parts:
        part = raw.strip()
        if not part:
            if text.strip():
                raise ValueError(f"empty requirement in {text!r}")
            continue
        if m := _TEXT_SET.match(part):
            # "()" is the set of the empty value, as kubectl parses it
            values = [v.strip() for v in m["values"].split(",")]
            req = LabelSelectorRequirement(m["key"], "In" if m["op"] == "in" else "NotIn",
                                           values)
        elif m := _TEXT_EQ.match(part):
            req = LabelSelectorRequirement(m["key"], "NotIn" if m["op"] == "!=" else "In",
                                           [m["value"]])
        elif m := _TEXT_KEY.match(part):
            req = LabelSelectorRequirement(m["key"], "DoesNotExist" if m["neg"] else "Exists")
        else:
            hint = " (kemu does not model the numeric < and > operators)" if any(
                c in part for c in "<>") else ""
            raise ValueError(f"{part!r} is not a requirement: key, !key, key=value, "
                             f"key!=value, key in (v1,v2) or key notin (v1,v2){hint}")
        if err := label_key_error(req.key):
            raise ValueError(err)
        for v in req.values:
            if err := label_value_error(v):
                raise ValueError(err)
        selector.match_expressions.append(req)
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
                        policy_types=[],
                        labels=f.labels(f.mapping(obj, "", "metadata"), "metadata", "labels"))
    types = f.seq(spec, "spec", "policyTypes")
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            f.problem(f"spec.policyTypes[{i}]", f"{t!r} is not one of Ingress, Egress")
        elif t in pol.policy_types:
            f.problem(f"spec.policyTypes[{i}]", f"duplicate {t}")
        else:
            pol.policy_types.append(t)
    if "policyTypes" not in spec or not types:  # P-3: Egress iff there is an egress rule
        egress = spec.get("egress")
        pol.policy_types = ["Ingress"] + (["Egress"] if isinstance(egress, list) and egress
                                          else [])
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
