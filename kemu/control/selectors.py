"""Label selectors: parsing ``matchLabels``/``matchExpressions`` and matching label sets.

Two forms exist in Kubernetes and both live here:

- the *map* selector of Services, ReplicaSet templates and ``nodeSelector``: every key must be
  present with an equal value (``matches_map``); the empty map matches everything (callers
  decide whether an empty Service selector means "selector-less": it does, see the loader);
- ``LabelSelector`` (workloads, NetworkPolicy ``podSelector``/``namespaceSelector``, P-4/P-5):
  ``matchLabels`` AND every requirement of ``matchExpressions`` (``matches``). The empty selector
  matches everything; ``NotIn`` and ``DoesNotExist`` match objects that lack the key.

Parsing checks what the API server checks: operators, values present for ``In``/``NotIn`` and
absent for ``Exists``/``DoesNotExist``, label key and value syntax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kemu.control.manifests import (
    Fields,
    join,
    label_key_error,
    label_value_error,
    type_name,
)
from kemu.control.model import LabelSelector, LabelSelectorRequirement

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
