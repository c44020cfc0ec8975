"""Reading manifests: files, directories, dicts -> a flat list of ``Document`` (source, index, obj).

Owns everything between the bytes on disk and a plain ``dict`` per Kubernetes object:

- multi-document YAML (``yaml.CSafeLoader`` when PyYAML has it), JSON (``.json`` files),
  ``kind: List`` and typed lists (``PodList`` ...) flattened into their items, nested lists too;
- directories: their ``*.yaml``, ``*.yml`` and ``*.json`` files in name order, not recursive
  (like ``kubectl apply -f DIR``); hidden files are skipped; ``-`` reads standard input;
- ``Fields``: typed access to one object's fields that records a ``Problem`` instead of
  raising, so the loader can report every problem of every file at once.

Invariants: reading never raises for bad input; an unreadable or unparsable file gives a
``Problem`` naming the file (and the line, for parse errors) and reading goes on with the next
source. Empty documents (``---`` with nothing after it) are skipped. Every document handed on
is a tree the loader can walk: nested at most :data:`MAX_DEPTH` levels, no list or mapping
inside itself (a recursive YAML alias), and aliases repeating at most :data:`MAX_ALIAS_VALUES`
values (a "billion laughs" document of a few hundred bytes names billions); others are a
``Problem`` naming the file and document. Text nested far deeper than that never reaches
PyYAML's C composer, which recurses per level and crashes the process (not an exception) past
some 30,000 levels.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kemu.errors import Problem

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DICT_SOURCE = "<dict>"
MAX_DEPTH = 100
"""Deepest nesting of mappings and lists in one document (Kubernetes objects need ~15)."""
MAX_ALIAS_VALUES = 1_000_000
"""Most values that YAML aliases may add to one document by repeating what they name."""
_COMPOSER_SAFE_DEPTH = 24000  # text surely nested less deeply goes to the C composer unchecked
# (its recursion took 30,000 levels and crashed at 50,000 in an 8 MiB stack, x86-64)


@dataclass(frozen=True)
class Document:
    """One Kubernetes object as read: where it came from and its raw content.

    Unpacks like the tuple ``(source, index, obj)``.
    """

    source: str  # the file as given ("examples/cluster/web.yaml"), "<dict>" or "<stdin>"
    index: int   # 0-based position among the objects read from ``source``
    obj: dict[str, Any]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.source, self.index, self.obj))


Source = str | os.PathLike[str] | dict[str, Any] | list[dict[str, Any]]


def read(*sources: Source, order: list[str] | None = None
         ) -> tuple[list[Document], list[Problem]]:
    """Read every source; return the documents and the problems met on the way.

    ``order``, when given, receives every source name in reading order (files, ``<dict>``).
    """
    docs: list[Document] = []
    problems: list[Problem] = []
    seen = order if order is not None else []
    for src in sources:
        if isinstance(src, dict | list):
            seen.append(DICT_SOURCE)
            items = [src] if isinstance(src, dict) else src
            docs.extend(_flatten(items, DICT_SOURCE, _count(docs, DICT_SOURCE), problems))
        else:
            seen.append(os.fspath(src))
            for path in _expand(src, problems):
                seen.append(path)
                docs.extend(read_file(path, problems))
    return docs, problems


def files(*sources: str | os.PathLike[str]) -> list[str]:
    """The files :func:`read` reads for these sources (a directory's manifests; ``-`` as
    such), without reading them: what a command must never overwrite."""
    return [path for src in sources for path in _expand(src, [])]


def _count(docs: list[Document], source: str) -> int:
    return sum(1 for d in docs if d.source == source)


def _expand(src: str | os.PathLike[str], problems: list[Problem]) -> Iterator[str]:
    name = os.fspath(src)
    if name == "-":
        yield name
        return
    path = Path(name)
    if path.is_dir():
        entries = sorted(p for p in path.iterdir()
                         if p.suffix in MANIFEST_SUFFIXES and not p.name.startswith(".")
                         and p.is_file())
        if not entries:
            problems.append(Problem(name, "", "", "directory has no .yaml, .yml or .json files"))
        for entry in entries:
            yield os.path.join(name, entry.name)
    elif path.exists():
        yield name
    else:
        problems.append(Problem(name, "", "", "No such file or directory"))


def read_file(path: str, problems: list[Problem]) -> list[Document]:
    """Read one file (``-``: standard input) into documents."""
    if path == "-":
        return parse_text(sys.stdin.read(), "<stdin>", problems)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as err:
        problems.append(Problem(path, "", "", f"not UTF-8 text ({err.reason} at byte {err.start})"))
        return []
    except OSError as err:
        problems.append(Problem(path, "", "", err.strerror or str(err)))
        return []
    return parse_text(text, path, problems, as_json=path.endswith(".json"))


def yaml_loader() -> Any:
    """PyYAML's C loader when it has one. PyYAML is imported only when YAML is read: a
    ``kemu replay`` of JSON manifests starts without it."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_text(text: str, source: str, problems: list[Problem],
               as_json: bool = False) -> list[Document]:
    """Parse YAML (multi-document) or JSON text; items of lists become documents."""
    raw: list[Any] = []
    if as_json:
        try:
            raw.append(json.loads(text))
        except json.JSONDecodeError as err:
            problems.append(Problem(source, "", f"line {err.lineno}",
                                    f"{err.msg} (column {err.colno})"))
        except RecursionError:
            problems.append(Problem(source, "", "", f"nested deeper than {MAX_DEPTH} levels"))
    else:
        import yaml

        try:
            deep = _too_deep(text)
            if deep is not None:
                problems.append(Problem(source, "", f"line {deep.line + 1}", f"nested deeper "
                                        f"than {MAX_DEPTH} levels (column {deep.column + 1})"))
                return []
            for doc in yaml.load_all(text, Loader=yaml_loader()):
                raw.append(doc)
        except RecursionError:  # PyYAML without its C part composes recursively
            problems.append(Problem(source, "", "", f"nested deeper than {MAX_DEPTH} levels"))
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = f"line {mark.line + 1}" if mark is not None else ""
            message = err.problem or err.context or "cannot parse YAML"
            if mark is not None:
                message = f"{message} (column {mark.column + 1})"
            problems.append(Problem(source, "", line, message))
        except yaml.YAMLError as err:
            problems.append(Problem(source, "", "", f"cannot parse YAML: {err}"))
    return _flatten(raw, source, 0, problems, len(text), aliases=not as_json)


def _flatten(raw: Iterable[Any], source: str, start: int, problems: list[Problem],
             text_size: int | None = None, aliases: bool = False) -> list[Document]:
    """Documents of ``raw``, lists flattened; parsed text (``text_size`` characters, with YAML
    ``aliases`` or not) must pass :func:`shape_problem` (API dicts are trusted to be trees)."""
    out: list[Document] = []

    def visit(obj: Any, where: str) -> None:
        if obj is None:
            return
        if not isinstance(obj, dict):
            problems.append(Problem(source, where, "", "expected a Kubernetes object (a mapping), "
                                    f"got {type_name(obj)}"))
            return
        kind = obj.get("kind")
        items = obj.get("items")
        if isinstance(kind, str) and kind.endswith("List") and "items" in obj:
            if not isinstance(items, list):
                problems.append(Problem(source, where, "items", "expected a list, got "
                                        f"{type_name(items)}"))
                return
            item_kind = kind[: -len("List")]
            for i, item in enumerate(items):
                if isinstance(item, dict) and item_kind and "kind" not in item:
                    # typed lists (PodList) leave kind/apiVersion off their items
                    item = {"kind": item_kind, "apiVersion": obj.get("apiVersion"), **item}
                visit(item, f"{where} items[{i}]")
            return
        out.append(Document(source, start + len(out), obj))

    for n, doc in enumerate(raw):
        where = f"document {n + 1}"
        problem = (shape_problem(doc, text_size if aliases else None)
                   if text_size is not None else None)
        if problem is not None:
            problems.append(Problem(source, where, "", problem))
            continue
        visit(doc, where)
    return out


_LONG_LINE = _COMPOSER_SAFE_DEPTH // 8
_COMPACT_RUN = re.compile(rf" *(?:[-?] +){{{_LONG_LINE}}}")


def _too_deep(text: str) -> Any:
    """Where YAML ``text`` nests deeper than :data:`MAX_DEPTH` (a PyYAML mark), when it may
    nest deeper than the C composer can take; else None.

    Cheap bounds first: flow collections nest by brackets, at most as deep as ``text`` has
    opening ones; a block collection nests in another by indentation (one level more for a
    sequence that is a mapping's value) or by compact ``- `` and ``? `` entries opening a line,
    so within about twice the length of a line. Only text over a bound (crafted to be deep, or
    with thousands of brackets or lines of thousands of characters) is parsed to events,
    which PyYAML makes without recursion, to find the depth exactly (that costs about a third
    of loading it).
    """
    suspect = text.count("[") + text.count("{") > _COMPOSER_SAFE_DEPTH // 2
    if not suspect:
        lines = text.split("\n")
        if max(map(len, lines)) > _LONG_LINE:
            suspect = any(len(line) - len(line.lstrip(" ")) > _LONG_LINE
                          or _COMPACT_RUN.match(line) for line in lines if len(line) > _LONG_LINE)
    if not suspect:
        return None
    import yaml

    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml_loader()):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # loading reports it
    return None


def shape_problem(doc: Any, text_size: int | None = None) -> str | None:
    """Why ``doc`` is no tree the loader can walk (see the module docstring), or None.

    ``text_size``: the length of the text it was read from, when aliases are possible (YAML):
    without them a document cannot hold more values than its text has characters. The
    common case costs one walk, level by level, that stops as soon as a document is too deep
    or holds too many values; only then does a second walk tell why.
    """
    if not isinstance(doc, dict | list):
        return None
    budget = (text_size + MAX_ALIAS_VALUES) if text_size is not None else None
    level, depth, seen = [doc], 0, 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return _shape_why(doc)
        below: list[Any] = []
        for node in level:
            seen += len(node)
            if budget is not None and seen > budget:
                return _shape_why(doc)
            below += [v for v in (node.values() if isinstance(node, dict) else node)
                      if isinstance(v, dict | list)]
        level = below
    return None


def _shape_why(doc: Any) -> str:
    """What :func:`shape_problem` found: one walk without recursion that walks a list or
    mapping met again through an alias only once (a billion-laughs document costs no more
    than its text)."""
    expanded: dict[int, int] = {}  # id of a container walked -> values in it, aliases repeated
    path: set[int] = set()  # ids of the containers from the document down to the current one
    distinct = 0
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        values = node.values() if isinstance(node, dict) else node
        if done:
            path.discard(key)
            expanded[key] = len(node) + sum(expanded[id(v)] for v in values
                                            if isinstance(v, dict | list))
            continue
        if key in expanded:
            continue
        if key in path:
            return "a list or mapping contains itself (a recursive YAML alias)"
        path.add(key)
        if len(path) > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        distinct += len(node)
        stack.append((node, True))
        stack.extend((v, False) for v in values if isinstance(v, dict | list))
    if expanded[id(doc)] - distinct > MAX_ALIAS_VALUES:
        return (f"YAML aliases repeat more than {MAX_ALIAS_VALUES} values (a billion-laughs "
                "document?)")
    return f"nested deeper than {MAX_DEPTH} levels or too large"  # (not expected)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- typed field access ------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_LETTER = re.compile(r"[a-z]")
_DOTTED_QUAD = re.compile(r"(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\."
                          r"(0|[1-9][0-9]{0,2})")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
PROTOCOLS = ("TCP", "UDP", "SCTP")


def join(path: str, key: str | int) -> str:
    """``join("spec.ports", 0) == "spec.ports[0]"``; ``join("spec", "x") == "spec.x"``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


# The validators below are pure functions of short strings that repeat a lot across objects
# (port names, label keys and values): cached.

@functools.lru_cache(maxsize=1 << 16)
def dns_label_error(value: str, rfc1035: bool = False) -> str | None:
    """Why ``value`` is not a DNS label (RFC 1123, or RFC 1035: starting with a letter)."""
    pattern = _DNS1035_LABEL if rfc1035 else _DNS_LABEL
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not pattern.match(value):
        first = "a lowercase letter" if rfc1035 else "a lowercase letter or digit"
        return (f"must consist of lowercase letters, digits and '-', start with {first} "
                "and end with a letter or digit")
    return None


def dns_subdomain_error(value: str) -> str | None:
    if len(value) <= 63 and _DNS_LABEL.match(value):
        return None  # one valid label (no dots): the common case, without the cache
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not value or any(dns_label_error(part) for part in value.split(".")):
        return ("must consist of lowercase letters, digits, '-' and '.', and start and end "
                "with a letter or digit")
    return None


@functools.lru_cache(maxsize=1 << 16)
def port_name_error(value: str) -> str | None:
    """Why ``value`` is not an IANA service name (container port names, named targetPorts)."""
    if len(value) > 15:
        return "must be no more than 15 characters"
    if not _IANA_SVC_NAME.match(value) or "--" in value:
        return "must consist of lowercase letters, digits and '-' (no '--', not at either end)"
    if not _LETTER.search(value):  # the pattern above allows letters a-z only
        return "must contain at least one letter"
    return None


@functools.lru_cache(maxsize=1 << 16)
def label_key_error(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and dns_subdomain_error(prefix):
        return f"label key '{key}': prefix must be a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME.match(name):
        return (f"label key '{key}': name must be 63 characters or less, alphanumeric, '-', "
                "'_' or '.', starting and ending with an alphanumeric character")
    return None


@functools.lru_cache(maxsize=1 << 16)
def label_value_error(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return (f"label value '{value}' must be 63 characters or less, alphanumeric, '-', '_' "
                "or '.', starting and ending with an alphanumeric character")
    return None


class Fields:
    """Typed access to one object's fields; each wrong value becomes a ``Problem``.

    ``path`` arguments are JSON paths of the containing mapping (``spec.ports[0]``); getters
    return a safe fallback after recording the problem, so callers go on and find more.
    """

    def __init__(self, problems: list[Problem], source: str, obj: str,
                 notices: list[Any] | None = None) -> None:
        self.problems, self.source, self.obj = problems, source, obj
        self.notices = notices  # kemu.control.model.Notice items (None: not collected)

    def problem(self, field: str, message: str) -> None:
        self.problems.append(Problem(self.source, self.obj, field, message))

    def notice(self, field: str, message: str) -> None:
        """Record accepted input that kemu does not model (a warning, not a problem)."""
        if self.notices is not None:
            from kemu.control.model import Notice

            self.notices.append(Notice(self.source, self.obj, field, message))

    def _get(self, d: dict[str, Any], path: str, key: str, required: bool) -> Any:
        value = d.get(key)
        if value is None and required:
            self.problem(join(path, key), "required field is missing")
        return value

    def mapping(self, d: dict[str, Any], path: str, key: str,
                required: bool = False) -> dict[str, Any]:
        value = d.get(key)
        if value is None:
            if required:
                self.problem(join(path, key), "required field is missing")
            return {}
        if not isinstance(value, dict):
            self.problem(join(path, key), f"expected a mapping, got {type_name(value)}")
            return {}
        return value

    def seq(self, d: dict[str, Any], path: str, key: str, required: bool = False) -> list[Any]:
        value = d.get(key)
        if value is None:
            if required:
                self.problem(join(path, key), "required field is missing")
            return []
        if not isinstance(value, list):
            self.problem(join(path, key), f"expected a list, got {type_name(value)}")
            return []
        return value

    def mappings(self, d: dict[str, Any], path: str, key: str,
                 required: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """A list of mappings as (path of the item, item); non-mappings are problems."""
        out = []
        base = join(path, key)
        for i, item in enumerate(self.seq(d, path, key, required)):
            where = f"{base}[{i}]"
            if isinstance(item, dict):
                out.append((where, item))
            else:
                self.problem(where, f"expected a mapping, got {type_name(item)}")
        return out

    def string(self, d: dict[str, Any], path: str, key: str, required: bool = False,
               default: str = "") -> str:
        value = d.get(key)
        if value is None:
            if required:
                self.problem(join(path, key), "required field is missing")
            return default
        if not isinstance(value, str):
            self.problem(join(path, key), f"expected a string, got {type_name(value)} "
                         f"({_show(value)})")
            return default
        return value

    def integer(self, d: dict[str, Any], path: str, key: str, required: bool = False,
                default: int | None = None, lo: int | None = None,
                hi: int | None = None) -> int | None:
        value = self._get(d, path, key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(join(path, key), f"expected an integer, got {type_name(value)} "
                         f"({_show(value)})")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.problem(join(path, key), f"{value} is out of range {lo}-{hi}" if hi is not None
                         else f"{value} is less than {lo}")
            return default
        return value

    def boolean(self, d: dict[str, Any], path: str, key: str, default: bool = False) -> bool:
        value = d.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(join(path, key), f"expected true or false, got {type_name(value)} "
                         f"({_show(value)})")
            return default
        return value

    def choice(self, d: dict[str, Any], path: str, key: str, choices: Iterable[str],
               default: str) -> str:
        value = self.string(d, path, key, default=default)
        options = tuple(choices)
        if value not in options:
            self.problem(join(path, key), f"'{value}' is not one of {', '.join(options)}")
            return default
        return value

    def protocol(self, d: dict[str, Any], path: str, key: str = "protocol") -> str:
        return self.choice(d, path, key, PROTOCOLS, "TCP")

    def labels(self, d: dict[str, Any], path: str, key: str) -> dict[str, str]:
        """A string->string map with label syntax checked (labels, selectors)."""
        out: dict[str, str] = {}
        where = join(path, key)
        for k, v in self.mapping(d, path, key).items():
            if not isinstance(k, str):
                self.problem(where, f"label key {_show(k)} is {type_name(k)}; keys must be "
                             "strings (quote it)")
                continue
            if not isinstance(v, str):
                self.problem(where, f"label '{k}' has {type_name(v)} value {_show(v)}; "
                             "values must be strings (quote it)")
                continue
            err = label_key_error(k) or label_value_error(v)
            if err:
                self.problem(where, err)
                continue
            out[k] = v
        return out

    def ip(self, value: Any, field: str) -> ipaddress.IPv4Address | None:
        """Parse an IPv4 address given as a string."""
        if not isinstance(value, str):
            self.problem(field, f"expected an IPv4 address, got {type_name(value)}")
            return None
        m = _DOTTED_QUAD.fullmatch(value)
        if m is not None:  # the usual form, parsed without ipaddress' general parser
            a, b, c, d = (int(x) for x in m.groups())
            if a < 256 and b < 256 and c < 256 and d < 256:
                return ipaddress.IPv4Address(a << 24 | b << 16 | c << 8 | d)
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            self.problem(field, f"'{value}' is not a valid IPv4 address")
            return None

    def cidr(self, value: Any, field: str) -> ipaddress.IPv4Network | None:
        """Parse an IPv4 CIDR given as a string; host bits must be zero."""
        if not isinstance(value, str):
            self.problem(field, f"expected an IPv4 CIDR, got {type_name(value)}")
            return None
        try:
            return ipaddress.IPv4Network(value)
        except ValueError as err:
            reason = "has host bits set" if "host bits" in str(err) else "is not a valid IPv4 CIDR"
            self.problem(field, f"'{value}' {reason}")
            return None

    def known(self, d: dict[str, Any], path: str, allowed: Iterable[str]) -> None:
        """Report keys of ``d`` that are not ``allowed`` (typos in fields kemu interprets)."""
        options = list(allowed)
        for key in d:
            if key not in options:
                hint = difflib.get_close_matches(str(key), options, n=1)
                also = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.problem(path, f"unknown field '{key}'{also}")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)
