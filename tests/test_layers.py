"""kemu's import graph: no cycles, and every import pointing down the layers.

The graph has a node per module under ``kemu/``: every ``.py`` file, parsed with ``ast``, and
``kemu/*.pyx`` / ``kemu/fastpath/*.pxi`` (when present), read line by line for their
``import``, ``cimport`` and ``from ... (c)import`` statements (a ``.pxi`` belongs to the ``.pyx``
that ``include``s it). Every import of a ``kemu`` module is an edge, wherever it is: at module
level, inside a function, under ``if TYPE_CHECKING:`` (a type-only import still ties the two
modules together); relative imports are resolved. ``from P import n`` is an edge to ``P.n`` when
that is a module, else to ``P``. Not edges: a package's ``__init__`` run implicitly for its
submodules, and the subcommand registry ``kemu.frontend.cli.COMMANDS``, which names each
command's module as a string for importlib (that is how the CLI reaches ``kemu bench`` without
depending on it).

Layers, lowest first. A module may import from its own layer and from layers of a lower rank;
never from a higher rank, nor from the other layer of its own rank:

====  =========  ==========================================================================
rank  layer      modules
====  =========  ==========================================================================
0     base       ``kemu.errors``, ``kemu._gc``, ``kemu._version`` (import no kemu module)
1     control    ``kemu.control``: the cluster model from manifests
1     dataplane  ``kemu.dataplane``, ``kemu._fastpath``, ``kemu._backend``: the datapath
2     compiler   ``kemu.compiler``: the model compiled into the dataplane's tables
3     io         ``kemu.io``: captures, pcapng, flow logs
4     frontend   ``kemu.frontend``: engine, Python API, replay, trace, CLI
5     bench      ``kemu.bench``: ``kemu bench``, its workloads and peers
6     entry      ``kemu`` (the package's facade, re-exporting ``kemu.frontend.api``) and
                 ``kemu.__main__``; nothing inside kemu imports them
====  =========  ==========================================================================

Control and dataplane share a rank and never import each other: the datapath runs on flat
tables and knows nothing of the model (``kemu.dataplane.dnswire.make_resolver`` is handed
``kemu.control.dns`` by its caller). The compiler sits above both: it reads the model and
writes the dataplane's own table layout (``kemu.compiler.compile`` and ``kemu.compiler.dump``
import ``kemu.dataplane.tables``, ``codes`` and ``describe``), so the order once written as
control < compiler < dataplane is, for imports, {control, dataplane} < compiler. ``kemu.io``
imports the dataplane (codes, tables, the backend) and nothing of control or compiler.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kemu"

LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (0, "base", ("kemu.errors", "kemu._gc", "kemu._version")),
    (1, "control", ("kemu.control",)),
    (1, "dataplane", ("kemu.dataplane", "kemu._fastpath", "kemu._backend")),
    (2, "compiler", ("kemu.compiler",)),
    (3, "io", ("kemu.io",)),
    (4, "frontend", ("kemu.frontend",)),
    (5, "bench", ("kemu.bench",)),
    (6, "entry", ("kemu", "kemu.__main__")),  # exact names: the facade and ``python -m kemu``
]
EXACT = {"kemu", "kemu.__main__"}

Edges = dict[str, dict[str, str]]  # module -> {imported module: "path:line" of the first import}

_CYTHON_IMPORT = re.compile(
    r"^\s*(?:from\s+(?P<mod>\.*[\w.]*)\s+c?import\s+(?P<names>.+)|c?import\s+(?P<plain>.+))$")
_INCLUDE = re.compile(r"""^\s*include\s+["']([^"']+)["']""")


# ------------------------------------------------------------------------------ the graph
def module_files(package: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every ``.py`` and ``.pyx`` under ``package``."""
    out: dict[str, tuple[Path, bool]] = {}
    base = package.parent
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.pyx")]):
        parts = list(path.relative_to(base).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def resolve(name: str, modules: Iterable[str]) -> str | None:
    """``name`` if it is a module, else the nearest enclosing one (``kemu.x.y`` -> ``kemu.x``)."""
    known = set(modules)
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    """The absolute module of ``from <level dots><name> import ...`` written in ``module``."""
    if not level:
        return name or ""
    parts = module.split(".") if is_pkg else module.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def _targets(base: str, names: Iterable[str], modules: set[str]) -> list[str]:
    """Modules that ``from base import names`` imports (a name is a submodule or not)."""
    out = []
    for n in names:
        full = f"{base}.{n}" if base else n
        out.append(full if full in modules else base)
    return out


def python_imports(module: str, is_pkg: bool, source: str, modules: set[str]
                   ) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in ``source``."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_pkg, node.level, node.module)
            out += [(t, node.lineno) for t in _targets(base, (a.name for a in node.names),
                                                      modules)]
    return out


def cython_imports(module: str, is_pkg: bool, source: str, modules: set[str]
                   ) -> list[tuple[str, int]]:
    """(imported module, line) for the ``(c)import`` / ``from ... (c)import`` lines of a
    ``.pyx`` or ``.pxi`` (parenthesised name lists may run over several lines)."""
    out: list[tuple[str, int]] = []
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line, start = lines[i].split("#", 1)[0], i + 1
        while line.count("(") > line.count(")") and i + 1 < len(lines):
            i += 1
            line += " " + lines[i].split("#", 1)[0]
        i += 1
        m = _CYTHON_IMPORT.match(line)
        if not m:
            continue
        if m["plain"]:
            names = [n.split()[0] for n in m["plain"].split(",") if n.strip()]
            out += [(n, start) for n in names]
            continue
        mod = m["mod"]
        level = len(mod) - len(mod.lstrip("."))
        base = _absolute(module, is_pkg, level, mod.lstrip(".") or None)
        names = [n.split()[0] for n in m["names"].strip("() ").split(",") if n.strip()]
        out += [(t, start) for t in _targets(base, names, modules)]
    return out


def import_graph(package: Path = PACKAGE) -> Edges:
    """Module -> {kemu module it imports: where}, self-imports left out."""
    files = module_files(package)
    modules = set(files)
    root = package.name
    graph: Edges = {m: {} for m in files}

    def add(src: str, imported: Iterable[tuple[str, int]], path: Path) -> None:
        for name, line in imported:
            if name.split(".")[0] != root:
                continue
            target = resolve(name, modules)
            if target and target != src:
                graph[src].setdefault(target, f"{path.relative_to(package.parent)}:{line}")

    owner: dict[Path, str] = {}  # .pxi -> the .pyx module including it
    for m, (path, is_pkg) in files.items():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".py":
            add(m, python_imports(m, is_pkg, text, modules), path)
        else:
            add(m, cython_imports(m, is_pkg, text, modules), path)
            for line in text.splitlines():
                inc = _INCLUDE.match(line)
                if inc:
                    owner[(path.parent / inc[1]).resolve()] = m
    for pxi in sorted([*package.glob("*.pxi"), *package.glob("fastpath/*.pxi")]):
        m = owner.get(pxi.resolve()) or ".".join(
            pxi.relative_to(package.parent).with_suffix("").parts)
        graph.setdefault(m, {})
        add(m, cython_imports(m, False, pxi.read_text(encoding="utf-8"), modules), pxi)
    return graph


# ------------------------------------------------------------------------------ the checks
def cycles(graph: Edges) -> list[tuple[list[str], list[str]]]:
    """For every set of modules importing each other in a circle (a strongly connected
    component): its modules, and its shortest cycle ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan, recursive (the graph is small)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    out = []
    for comp in comps:
        members = set(comp)
        if len(comp) == 1 and comp[0] not in graph.get(comp[0], {}):
            continue
        shortest = min((_shortest_cycle(m, graph, members) for m in sorted(members)), key=len)
        out.append((sorted(members), shortest))
    return out


def _shortest_cycle(start: str, graph: Edges, members: set[str]) -> list[str]:
    """The shortest way from ``start`` back to it through ``members`` (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, {})):
                if w == start:
                    return paths[v] + [start]
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return [start, start]


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, layer name) of ``module``; None when no layer claims it."""
    best: tuple[int, int, str] | None = None
    for rank, name, prefixes in LAYERS:
        for p in prefixes:
            if module == p or (p not in EXACT and module.startswith(p + ".")):
                if best is None or len(p) > best[0]:
                    best = (len(p), rank, name)
    return (best[1], best[2]) if best else None


def violations(graph: Edges) -> list[str]:
    """Imports against the layer order, and modules in no layer, one line each."""
    out = []
    for src in sorted(graph):
        a = layer_of(src)
        if a is None:
            out.append(f"{src}: in no layer (add it to LAYERS in tests/test_layers.py)")
            continue
        for dst, where in sorted(graph[src].items()):
            b = layer_of(dst)
            if b is None or b[1] == a[1] or b[0] < a[0]:
                continue  # (a module in no layer is reported as a source)
            why = "a higher layer" if b[0] > a[0] else "a sibling layer of the same rank"
            out.append(f"{src} ({a[1]}) imports {dst} ({b[1]}, {why}) at {where}")
    return out


def _describe(members: list[str], cycle: list[str], graph: Edges) -> str:
    return (f"{len(members)} modules in a circle: {', '.join(members)}\n  the shortest: "
            + " -> ".join(cycle) + "\n    " + "\n    ".join(
                f"{a} -> {b} at {graph[a][b]}" for a, b in zip(cycle, cycle[1:], strict=False)))


# ------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def graph() -> Edges:
    return import_graph()


def test_graph_sees_every_kind_of_import(graph):
    """The parser finds what the checks rely on (so an empty graph cannot pass them)."""
    assert len(graph) > 40 and sum(map(len, graph.values())) > 100
    assert "kemu.frontend.replay" in graph["kemu.frontend.api"]  # inside a method
    assert "kemu.frontend.api" in graph["kemu"]  # under TYPE_CHECKING and inside __getattr__
    assert "kemu._fastpath" in graph["kemu._backend"]  # from kemu import _fastpath
    assert {"kemu.dataplane.codes", "kemu.dataplane.packet",  # the .pyx, by regex
            "kemu.dataplane.reference.conntrack"} <= set(graph["kemu._fastpath"])
    assert {"kemu.bench.command", "kemu.bench.runner", "kemu.io.frames"} <= set(graph)


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles in kemu/:\n" + "\n".join(
        _describe(members, cycle, graph) for members, cycle in found)


def test_imports_point_down_the_layers(graph):
    bad = violations(graph)
    assert not bad, ("imports against the layer order (see tests/test_layers.py's docstring):\n"
                     + "\n".join(bad))


def test_the_checks_catch_a_backward_import_and_a_cycle(graph):
    """A control module importing the frontend, and two io modules importing each other,
    are both reported (with the places of the imports)."""
    bad = {m: dict(e) for m, e in graph.items()}
    bad["kemu.control.model"]["kemu.frontend.api"] = "kemu/control/model.py:1"
    bad["kemu.io.frames"]["kemu.io.capture"] = "kemu/io/frames.py:1"
    assert any(v.startswith("kemu.control.model (control) imports kemu.frontend.api")
               for v in violations(bad))
    assert ["kemu.io.capture", "kemu.io.frames", "kemu.io.capture"] in [
        cycle for _, cycle in cycles(bad)]
    bad["kemu.dataplane.tables"]["kemu.control.model"] = "kemu/dataplane/tables.py:1"
    assert any("sibling layer" in v for v in violations(bad))


def test_parser_resolves_relative_function_level_and_cython_imports():
    modules = {"kemu", "kemu.io", "kemu.io.capture", "kemu.io.frames", "kemu.errors",
               "kemu.dataplane", "kemu.dataplane.codes"}
    src = ("from . import frames\nfrom .frames import Capture\nfrom ..errors import E\n"
           "def f():\n    import kemu.dataplane.codes as C\n    from kemu import errors\n")
    got = python_imports("kemu.io.capture", False, src, modules)
    assert got == [("kemu.io.frames", 1), ("kemu.io.frames", 2), ("kemu.errors", 3),
                   ("kemu.dataplane.codes", 5), ("kemu.errors", 6)]
    assert python_imports("kemu.io", True, "from . import capture", modules) == [
        ("kemu.io.capture", 1)]
    pyx = ("from libc.stdint cimport (int8_t,\n    int16_t)\ncimport numpy as cnp\n"
           "from kemu.dataplane import (codes as _C,\n    missing)\n"
           "from kemu.io.frames cimport Capture  # a .pxd\nimport kemu.errors\n")
    got = cython_imports("kemu._fastpath", False, pyx, modules)
    assert [g for g in got if g[0].startswith("kemu")] == [
        ("kemu.dataplane.codes", 4), ("kemu.dataplane", 4), ("kemu.io.frames", 6),
        ("kemu.errors", 7)]
    assert resolve("kemu.io.frames.Capture", modules) == "kemu.io.frames"
