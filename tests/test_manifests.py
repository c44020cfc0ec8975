"""Reading manifests: YAML multi-doc, JSON, lists, directories, dicts, stdin; parse errors."""

from __future__ import annotations

import io
import ipaddress
import sys
from pathlib import Path

import yaml

from kemu.control import manifests
from kemu.control.manifests import Fields, parse_text, read
from kemu.errors import Problem

DATA = Path(__file__).parent / "data" / "manifests"
GOOD = DATA / "good"
BAD = DATA / "bad"


def test_multi_document_yaml_skips_empty_documents() -> None:
    problems: list[Problem] = []
    docs = parse_text("---\nkind: A\n---\n---\n# nothing\n---\nkind: B\n", "f.yaml", problems)
    assert problems == []
    assert [(d.source, d.index, d.obj["kind"]) for d in docs] == [("f.yaml", 0, "A"),
                                                                  ("f.yaml", 1, "B")]


def test_kind_list_items_are_flattened_recursively() -> None:
    text = """
apiVersion: v1
kind: List
items:
  - {kind: Pod, metadata: {name: a}}
  - kind: List
    items:
      - {kind: Service, metadata: {name: b}}
---
kind: ConfigMap
"""
    docs = parse_text(text, "l.yaml", [])
    assert [(d.index, d.obj["kind"]) for d in docs] == [(0, "Pod"), (1, "Service"),
                                                        (2, "ConfigMap")]


def test_typed_list_items_get_their_kind_and_api_version() -> None:
    docs = parse_text("apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n", "p", [])
    assert docs[0].obj == {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a"}}


def test_list_items_that_are_not_a_list() -> None:
    problems: list[Problem] = []
    assert parse_text("kind: List\nitems: 3\n", "l.yaml", problems) == []
    assert [str(p) for p in problems] == ["l.yaml: document 1: items: expected a list, got a "
                                          "number"]


def test_json_file_with_a_list() -> None:
    docs, problems = read(GOOD / "pods.json")
    assert problems == []
    assert [(d.source, d.obj["metadata"]["name"]) for d in docs] == [
        (str(GOOD / "pods.json"), "debug"), (str(GOOD / "pods.json"), "node-exporter")]


def test_directory_reads_manifest_files_in_name_order_not_recursively() -> None:
    docs, problems = read(GOOD)
    assert problems == []
    files = list(dict.fromkeys(Path(d.source).name for d in docs))
    assert files == ["cluster.yaml", "ignored.yaml", "pods.json", "services.yaml",
                     "workloads.yaml"]
    assert all("nested" not in d.source for d in docs)


def test_sources_may_be_dicts_and_lists_of_dicts() -> None:
    docs, problems = read({"kind": "Pod"}, [{"kind": "A"}, {"kind": "List", "items": [
        {"kind": "B"}]}])
    assert problems == []
    assert [(d.source, d.index, d.obj["kind"]) for d in docs] == [
        ("<dict>", 0, "Pod"), ("<dict>", 1, "A"), ("<dict>", 2, "B")]


def test_dash_reads_standard_input(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("kind: Pod\n---\nkind: Service\n"))
    docs, problems = read("-")
    assert problems == []
    assert [(d.source, d.obj["kind"]) for d in docs] == [("<stdin>", "Pod"),
                                                          ("<stdin>", "Service")]


def test_missing_path() -> None:
    docs, problems = read("no/such/file.yaml")
    assert docs == []
    assert [str(p) for p in problems] == ["no/such/file.yaml: No such file or directory"]


def test_empty_directory(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    _, problems = read(tmp_path)
    assert [p.message for p in problems] == ["directory has no .yaml, .yml or .json files"]


def test_bad_yaml_names_file_and_line() -> None:
    _, problems = read(BAD / "syntax.yaml")
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{BAD / 'syntax.yaml'}: line 8: ")
    assert problems[0].field == "line 8"


def test_bad_json_names_file_and_line() -> None:
    _, problems = read(BAD / "syntax.json")
    assert [str(p) for p in problems] == [
        f"{BAD / 'syntax.json'}: line 4: Expecting ',' delimiter (column 3)"]


def test_documents_before_a_yaml_error_are_kept() -> None:
    problems: list[Problem] = []
    docs = parse_text("kind: A\n---\nkind: [B\n", "x.yaml", problems)
    assert [d.obj["kind"] for d in docs] == ["A"]
    assert problems[0].source == "x.yaml" and problems[0].field == "line 4"


def test_document_that_is_not_a_mapping() -> None:
    _, problems = read(BAD / "not-a-mapping.yaml")
    assert [str(p) for p in problems] == [f"{BAD / 'not-a-mapping.yaml'}: document 1: expected "
                                          "a Kubernetes object (a mapping), got a list"]


def test_file_that_is_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"kind: Pod\nname: caf\xe9\n")
    _, problems = read(path)
    assert [str(p) for p in problems] == [f"{path}: not UTF-8 text (invalid continuation byte "
                                          "at byte 19)"]


def test_reading_goes_on_after_a_bad_source() -> None:
    docs, problems = read("missing.yaml", {"kind": "Pod"})
    assert len(docs) == 1 and len(problems) == 1


# --- found by tests/test_fuzz.py: documents that are no tree to walk -----------------------------

DEEP_LABELS = ("kind: Pod\napiVersion: v1\nmetadata:\n  name: p\n  labels: "
               + "[" * 1000 + "]" * 1000 + "\nspec: {containers: [{name: c}]}\n")


def test_recursive_alias_is_a_problem_not_a_crash(tmp_path) -> None:
    """``ports: &p [*p]`` made a list that contains itself: json.dumps in the loader raised
    ValueError (a traceback)."""
    problems: list[Problem] = []
    docs = parse_text("kind: A\n---\nkind: Pod\nspec: &s {containers: [*s]}\n", "x.yaml",
                      problems)
    assert [d.obj["kind"] for d in docs] == ["A"]
    assert [str(p) for p in problems] == [
        "x.yaml: document 2: a list or mapping contains itself (a recursive YAML alias)"]


def test_alias_bomb_is_refused_without_expanding_it() -> None:
    """A billion laughs: 9 levels of 9 aliases, 387,420,489 values from 300 bytes (the loader
    hashed every workload template with json.dumps: a hang, then memory)."""
    levels = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    problems: list[Problem] = []
    docs = parse_text("kind: Pod\nx: [" + ", ".join(levels) + "]\n", "bomb.yaml", problems)
    assert docs == [] and [str(p) for p in problems] == [
        f"bomb.yaml: document 1: YAML aliases repeat more than {manifests.MAX_ALIAS_VALUES} "
        "values (a billion-laughs document?)"]
    few = parse_text("kind: Pod\nx: &a [1, 2]\ny: [*a, *a]\n", "ok.yaml", problems)
    assert len(few) == 1 and len(problems) == 1  # aliases as such are fine


def test_deep_nesting_is_a_problem_naming_file_and_document() -> None:
    """1,000 levels of lists in a label value raised RecursionError in the loader's messages
    (json.dumps) and in its container cache (repr)."""
    problems: list[Problem] = []
    assert parse_text(DEEP_LABELS, "deep.yaml", problems) == []
    # (PyYAML 6.0.4 and later refuse past 1,000 levels themselves, naming line and column)
    assert [str(p) for p in problems] in (
        [f"deep.yaml: document 1: nested deeper than {manifests.MAX_DEPTH} levels"],
        ["deep.yaml: line 5: exceeded maximum nesting depth (column 1009)"])
    problems = []
    assert parse_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "deep.json", problems,
                      as_json=True) == []
    assert [str(p) for p in problems] == [
        f"deep.json: nested deeper than {manifests.MAX_DEPTH} levels"]
    problems = []
    ok = "kind: Pod\nx: " + "[" * (manifests.MAX_DEPTH - 1) + "]" * (manifests.MAX_DEPTH - 1)
    assert len(parse_text(ok, "ok.yaml", problems)) == 1 and not problems


def test_very_deep_yaml_never_reaches_the_c_composer(tmp_path) -> None:
    """PyYAML's C composer recurses per level: 50,000 levels (of flow lists, or of compact
    block sequences on one line) crashed the process with SIGSEGV. Run in a child process so
    that a crash fails this test instead of ending the run."""
    import subprocess

    for name, text in (("flow", "a: " + "[" * 50_000 + "]" * 50_000),
                       ("block", "a:\n" + "- " * 50_000 + "x\n")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        r = subprocess.run([sys.executable, "-m", "kemu", "validate", "-f", str(path)],
                           capture_output=True, text=True, timeout=120, check=False,
                           cwd=Path(__file__).resolve().parents[1])
        assert r.returncode == 2, (name, r.returncode, r.stderr[-500:])
        line = 2 if name == "block" else 1
        # kemu's own check, or PyYAML's (6.0.4 and later refuse past 1,000 levels themselves)
        assert r.stderr.startswith((f"kemu: {path}: line {line}: nested deeper than",
                                    f"kemu: {path}: line {line}: exceeded maximum nesting "
                                    "depth")), r.stderr
        assert r.stderr.count("\n") == 1, r.stderr


def test_uses_the_c_loader_when_pyyaml_has_it() -> None:
    assert manifests.yaml_loader() is getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- Fields -----------------------------------------------------------------------------------

def fields() -> tuple[Fields, list[Problem]]:
    problems: list[Problem] = []
    return Fields(problems, "f.yaml", "ns/Kind/x"), problems


def test_integer_rejects_strings_booleans_and_out_of_range() -> None:
    f, problems = fields()
    d = {"a": "80", "b": True, "c": 70000, "d": -1, "e": 5}
    assert f.integer(d, "spec", "a") is None
    assert f.integer(d, "spec", "b") is None
    assert f.integer(d, "spec", "c", lo=1, hi=65535) is None
    assert f.integer(d, "spec", "d", lo=0) is None
    assert f.integer(d, "spec", "e", lo=1) == 5
    assert f.integer(d, "spec", "z", required=True) is None
    assert [str(p) for p in problems] == [
        "f.yaml: ns/Kind/x: spec.a: expected an integer, got a string ('80')",
        "f.yaml: ns/Kind/x: spec.b: expected an integer, got a boolean (true)",
        "f.yaml: ns/Kind/x: spec.c: 70000 is out of range 1-65535",
        "f.yaml: ns/Kind/x: spec.d: -1 is less than 0",
        "f.yaml: ns/Kind/x: spec.z: required field is missing",
    ]


def test_labels_must_be_strings_with_label_syntax() -> None:
    f, problems = fields()
    labels = f.labels({"labels": {"app": "web", "version": 1, "bad key!": "x", "ok": "-no"}},
                      "metadata", "labels")
    assert labels == {"app": "web"}
    assert [p.message for p in problems] == [
        "label 'version' has a number value 1; values must be strings (quote it)",
        "label key 'bad key!': name must be 63 characters or less, alphanumeric, '-', '_' or "
        "'.', starting and ending with an alphanumeric character",
        "label value '-no' must be 63 characters or less, alphanumeric, '-', '_' or '.', "
        "starting and ending with an alphanumeric character",
    ]


def test_unknown_fields_get_a_hint() -> None:
    f, problems = fields()
    f.known({"port": 1, "targetport": 2}, "spec.ports[0]", ("port", "targetPort"))
    assert [str(p) for p in problems] == ["f.yaml: ns/Kind/x: spec.ports[0]: unknown field "
                                          "'targetport' (did you mean 'targetPort'?)"]


def test_addresses_and_cidrs() -> None:
    f, problems = fields()
    assert f.ip("10.0.0.1", "a") == ipaddress.IPv4Address("10.0.0.1")
    assert f.ip("10.0.0.256", "b") is None
    assert f.cidr("10.0.0.0/8", "c") == ipaddress.IPv4Network("10.0.0.0/8")
    assert f.cidr("10.0.0.1/8", "d") is None
    assert f.cidr(8, "e") is None
    assert [p.message for p in problems] == ["'10.0.0.256' is not a valid IPv4 address",
                                             "'10.0.0.1/8' has host bits set",
                                             "expected an IPv4 CIDR, got a number"]
