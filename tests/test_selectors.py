"""Label selectors: parsing and validation; matching checked against a brute-force matcher;
the pod label index checked against a scan."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kemu.control.manifests import Fields
from kemu.control.model import LabelSelector, LabelSelectorRequirement, Pod
from kemu.control.selectors import (
    PodIndex,
    describe,
    matches,
    matches_map,
    parse_selector,
    parse_selector_text,
)
from kemu.errors import Problem

KEYS = st.sampled_from(["app", "tier", "env", "example.com/team"])
VALUES = st.sampled_from(["web", "db", "prod", "", "x"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=4)
EXPRESSION = st.one_of(
    st.fixed_dictionaries({"key": KEYS, "operator": st.sampled_from(["In", "NotIn"]),
                           "values": st.lists(VALUES, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"key": KEYS,
                           "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
)
SELECTOR = st.fixed_dictionaries({}, optional={
    "matchLabels": st.dictionaries(KEYS, VALUES, max_size=2),
    "matchExpressions": st.lists(EXPRESSION, max_size=3)})


def brute_force(raw: dict[str, Any], labels: dict[str, str]) -> bool:
    """The selector as a conjunction of predicates over the (key, value) pairs of ``labels``."""
    pairs = list(labels.items())
    reqs = [(k, "In", [v]) for k, v in raw.get("matchLabels", {}).items()]
    reqs += [(e["key"], e["operator"], e.get("values", [])) for e in
             raw.get("matchExpressions", [])]
    for key, op, values in reqs:
        has_key = any(k == key for k, _ in pairs)
        has_value = any(k == key and v in values for k, v in pairs)
        ok = {"In": has_value, "NotIn": not has_value, "Exists": has_key,
              "DoesNotExist": not has_key}[op]
        if not ok:
            return False
    return True


def parse(raw: dict[str, Any]) -> tuple[LabelSelector, list[Problem]]:
    problems: list[Problem] = []
    sel = parse_selector(Fields(problems, "f.yaml", "ns/NetworkPolicy/p"), {"s": raw}, "spec",
                         "s")
    return sel, problems


@given(SELECTOR, LABELS)
def test_matches_agrees_with_brute_force(raw: dict[str, Any], labels: dict[str, str]) -> None:
    selector, problems = parse(raw)
    assert problems == []
    assert matches(selector, labels) == brute_force(raw, labels)


@given(st.dictionaries(KEYS, VALUES, max_size=3), LABELS)
def test_map_selector_is_equality_on_every_key(sel: dict[str, str],
                                               labels: dict[str, str]) -> None:
    assert matches_map(sel, labels) == all(k in labels and labels[k] == v
                                           for k, v in sel.items())
    assert matches_map(sel, labels) == matches(LabelSelector(match_labels=sel), labels)


def test_empty_selector_matches_everything() -> None:
    assert matches(LabelSelector(), {}) and matches(LabelSelector(), {"a": "b"})


def test_not_in_and_does_not_exist_match_objects_without_the_key() -> None:
    not_in = LabelSelector(match_expressions=[LabelSelectorRequirement("env", "NotIn", ["x"])])
    absent = LabelSelector(match_expressions=[LabelSelectorRequirement("env", "DoesNotExist")])
    assert matches(not_in, {}) and matches(absent, {"app": "web"})
    assert not matches(not_in, {"env": "x"}) and not matches(absent, {"env": ""})


def test_invalid_selectors_are_reported() -> None:
    _, problems = parse({"matchLabels": {"app": 3}, "matchExpressions": [
        {"key": "a", "operator": "In"},
        {"key": "b", "operator": "Exists", "values": ["x"]},
        {"key": "bad key", "operator": "Exists"},
        {"operator": "Exists"},
        {"key": "c", "operator": "In", "values": [1]}],
        "matchLabel": {}})
    assert [str(p) for p in problems] == [
        "f.yaml: ns/NetworkPolicy/p: spec.s: unknown field 'matchLabel' (did you mean "
        "'matchLabels'?)",
        "f.yaml: ns/NetworkPolicy/p: spec.s.matchLabels: label 'app' has a number value 3; "
        "values must be strings (quote it)",
        "f.yaml: ns/NetworkPolicy/p: spec.s.matchExpressions[0].values: must be non-empty for "
        "operator In",
        "f.yaml: ns/NetworkPolicy/p: spec.s.matchExpressions[1].values: must be empty for "
        "operator Exists",
        "f.yaml: ns/NetworkPolicy/p: spec.s.matchExpressions[2].key: label key 'bad key': "
        "name must be 63 characters or less, alphanumeric, '-', '_' or '.', starting and "
        "ending with an alphanumeric character",
        "f.yaml: ns/NetworkPolicy/p: spec.s.matchExpressions[3].key: required field is missing",
        "f.yaml: ns/NetworkPolicy/p: spec.s.matchExpressions[4].values[0]: expected a string, "
        "got a number (1); quote it",
    ]


def test_describe_like_kubectl() -> None:
    sel, _ = parse({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["a", "b"]},
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
        {"key": "team", "operator": "Exists"}, {"key": "debug", "operator": "DoesNotExist"}]})
    assert describe(sel) == "app=web,tier in (a,b),env notin (dev),team,!debug"
    assert describe(LabelSelector()) == "<none>"


# --- kubectl's -l text form ------------------------------------------------------------------

TEXT_REQ = st.one_of(
    st.tuples(KEYS, st.sampled_from(["=", "==", "!="]), VALUES.map(lambda v: [v])),
    st.tuples(KEYS, st.sampled_from(["in", "notin"]), st.lists(VALUES, min_size=1, max_size=3)),
    st.tuples(KEYS, st.sampled_from(["", "!"]), st.just([])),
)


def text_of(req: tuple[str, str, list[str]], space: str) -> str:
    key, op, values = req
    if op in ("in", "notin"):
        return f"{key} {op}{space}({f',{space}'.join(values)})"
    if op in ("", "!"):
        return f"{op}{space}{key}" if op else key
    return f"{key}{space}{op}{space}{values[0]}"


def holds(reqs: list[tuple[str, str, list[str]]], labels: dict[str, str]) -> bool:
    """kubectl's meaning, requirement by requirement, over the (key, value) pairs."""
    pairs = list(labels.items())
    for key, op, values in reqs:
        has_key = any(k == key for k, _ in pairs)
        has_value = any(k == key and v in values for k, v in pairs)
        ok = {"=": has_value, "==": has_value, "in": has_value, "!=": not has_value,
              "notin": not has_value, "": has_key, "!": not has_key}[op]
        if not ok:
            return False
    return True


@given(st.lists(TEXT_REQ, max_size=4), st.sampled_from(["", " "]), LABELS)
def test_selector_text_agrees_with_brute_force(reqs: list, space: str,
                                               labels: dict[str, str]) -> None:
    text = f",{space}".join(text_of(r, space) for r in reqs)
    assert matches(parse_selector_text(text), labels) == holds(reqs, labels), text


def test_selector_text_errors_name_the_requirement() -> None:
    import pytest

    for text, message in [
            ("app in (a", "unbalanced '(' in 'app in (a'"),
            ("app=a)", "unbalanced ')' in 'app=a)'"),
            ("a,,b", "empty requirement in 'a,,b'"),
            ("replicas>1", "'replicas>1' is not a requirement: key, !key, key=value, key!=value, "
                           "key in (v1,v2) or key notin (v1,v2) (kemu does not model the numeric "
                           "< and > operators)"),
            ("app=a b", "'app=a b' is not a requirement"),
            ("-app=x", "label key '-app': name must be 63 characters or less"),
            ("app=-x", "label value '-x' must be 63 characters or less")]:
        with pytest.raises(ValueError) as err:
            parse_selector_text(text)
        assert str(err.value).startswith(message), (text, str(err.value))
    assert describe(parse_selector_text("")) == "<none>"
    assert describe(parse_selector_text("app in ()")) == "app in ()"  # kubectl: the value ""
    assert describe(parse_selector_text(" app = web , !debug,tier notin (a, b)")) == (
        "app in (web),!debug,tier notin (a,b)")


# --- PodIndex: the same pods, in the same order, as a scan ------------------------------------

NAMESPACES = st.sampled_from(["a", "b"])
PODS = st.lists(st.tuples(NAMESPACES, LABELS), max_size=12)


def _pods(specs: list[tuple[str, dict[str, str]]]) -> list[Pod]:
    pods = [Pod(namespace=ns, name=f"p{i}", node_name="n", ip=IPv4Address(i), labels=labels)
            for i, (ns, labels) in enumerate(specs)]
    return sorted(pods, key=lambda p: p.key)


def _scan(pods: list[Pod], ns: str, selector: LabelSelector) -> list[str]:
    return [p.key for p in pods if p.namespace == ns and matches(selector, p.labels)]


@given(PODS, SELECTOR, NAMESPACES)
def test_pod_index_selects_what_a_scan_selects(specs: list[tuple[str, dict[str, str]]],
                                               raw: dict[str, Any], ns: str) -> None:
    selector, problems = parse(raw)
    assert problems == []
    pods = _pods(specs)
    index = PodIndex(reversed(pods))  # insertion order must not matter
    assert [p.key for p in index.select(ns, selector)] == _scan(pods, ns, selector)
    assert [p.key for p in index.select_map(ns, selector.match_labels)] == [
        p.key for p in pods if p.namespace == ns and matches_map(selector.match_labels, p.labels)]


EDIT = st.tuples(st.sampled_from(["add", "remove", "relabel"]), st.integers(0, 11), NAMESPACES,
                 LABELS)


@given(PODS, st.lists(EDIT, max_size=15), st.lists(SELECTOR, min_size=1, max_size=3))
def test_pod_index_follows_adds_removes_and_relabels(
        specs: list[tuple[str, dict[str, str]]], edits: list[tuple[str, int, str, dict[str, str]]],
        raws: list[dict[str, Any]]) -> None:
    live = {p.key: p for p in _pods(specs)}
    index = PodIndex(live.values())
    for op, i, ns, labels in edits:
        key = f"{ns}/p{i}"
        if op == "add" and key not in live:
            live[key] = Pod(namespace=ns, name=f"p{i}", node_name="n", ip=IPv4Address(i),
                            labels=dict(labels))
            index.add(live[key])
        elif op == "remove" and key in live:
            index.remove(live.pop(key))
        elif op == "relabel" and key in live:
            live[key].labels = dict(labels)
            index.add(live[key])
        assert len(index) == len(live)
    pods = sorted(live.values(), key=lambda p: p.key)
    for raw in raws:
        selector, _ = parse(raw)
        for ns in ("a", "b"):
            assert [p.key for p in index.select(ns, selector)] == _scan(pods, ns, selector)


def test_pod_index_of_an_unknown_namespace_is_empty() -> None:
    index = PodIndex(_pods([("a", {"app": "web"})]))
    assert index.select("zz", LabelSelector()) == [] and index.select_map("zz", {}) == []
    assert [p.key for p in index.select("a", LabelSelector())] == ["a/p0"]
    index.remove(Pod(namespace="zz", name="p0", node_name="n", ip=IPv4Address(0)))  # no-op
    assert len(index) == 1
