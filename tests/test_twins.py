"""The compiled datapath's rooms and their pure twins, by name.

``kemu/_fastpath.pyx`` is assembled from rooms, ``kemu/fastpath/*.pxi``, one concern each;
each room's opening comment names its pure twin (``Twin: ``path````) or says it has none.
The reference package ``kemu/dataplane/reference/`` mirrors them: each of its modules (but
``__init__``) is the twin of the room of the same name. The device-kind registry is kept in
both: the reference's ``TX``/``RX`` tables list the kinds of the compiled registry's comment
table in ``stages.pxi``, each kind with the twin of the function the compiled table names.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from kemu.dataplane import codes as C
from kemu.dataplane import reference
from kemu.dataplane.reference import stages

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ROOT / "kemu" / "fastpath"
REFERENCE = ROOT / "kemu" / "dataplane" / "reference"
# rooms whose opening comment says they have no twin file
NO_TWIN = {"htab": "no file of its own", "flowcache": "the reference has no twin"}
TWIN = re.compile(r"Twin: ``(kemu/[^`]+)``")


def opening_comment(path: Path) -> str:
    """The comment lines a file opens with, joined into one line."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        out.append(line.lstrip("#").strip())
    return " ".join(out)


def room_names() -> list[str]:
    return sorted(p.stem for p in ROOMS.glob("*.pxi"))


def module_names() -> list[str]:
    return sorted(p.stem for p in REFERENCE.glob("*.py") if p.stem != "__init__")


def test_the_rooms_and_modules_are_there() -> None:
    rooms = set(room_names())
    assert {"state", "record", "stages", "datapath", "htab", "flowcache"} <= rooms
    assert {"state", "record", "stages", "datapath", "lpm", "util"} <= set(module_names())


@pytest.mark.parametrize("room", room_names())
def test_each_room_names_a_twin_that_exists(room: str) -> None:
    comment = opening_comment(ROOMS / f"{room}.pxi")
    assert comment.startswith(f"{room}.pxi: "), f"{room}.pxi opens without its comment"
    twins = TWIN.findall(comment)
    if room in NO_TWIN:
        assert not twins and NO_TWIN[room] in comment, comment
        return
    assert len(twins) == 1, f"{room}.pxi names {twins or 'no'} twin: {comment}"
    twin = Path(twins[0])
    assert twin.stem == room, f"{room}.pxi's twin {twin} has another name"
    assert (ROOT / twin).is_file(), f"{room}.pxi's twin {twin} does not exist"


@pytest.mark.parametrize("module", module_names())
def test_each_reference_module_has_its_room(module: str) -> None:
    room = ROOMS / f"{module}.pxi"
    assert room.is_file(), f"kemu/dataplane/reference/{module}.py has no room {room.name}"
    assert TWIN.findall(opening_comment(room)) == [f"kemu/dataplane/reference/{module}.py"]
    doc = importlib.import_module(f"kemu.dataplane.reference.{module}").__doc__ or ""
    assert f"Compiled twin: ``kemu/fastpath/{module}.pxi``" in doc, f"{module}.py's docstring"


def test_rooms_without_a_module_are_named_in_the_package_docstring() -> None:
    doc = reference.__doc__ or ""
    for room in sorted(set(room_names()) - set(module_names())):
        assert f"``{room}``" in doc, f"room {room} has no module and the docstring says nothing"


def registry_table(path: Path) -> dict[str, tuple[tuple[str, str] | None, ...]]:
    """The device-kind table of a registry comment: kind name -> (transmit, receive), each
    (function, room) or None where the cell names no function."""
    rows: dict[str, tuple[tuple[str, str] | None, ...]] = {}
    tx_col = rx_col = -1
    for line in path.read_text().splitlines():
        if re.match(r"#\s+kind\s+transmit\s+receive\s*$", line):
            tx_col, rx_col = line.index("transmit"), line.index("receive")
            continue
        if tx_col < 0:
            continue
        if not line.startswith("#"):
            break
        m = re.match(r"#\s+(IF_\w+)\s", line)
        if m:
            cells = (line[tx_col:rx_col], line[rx_col:])
            fn = [re.match(r"(\w+) \((\w+)\)", c.strip()) for c in cells]
            rows[m.group(1)] = tuple((f.group(1), f.group(2)) if f else None for f in fn)
    assert rows, f"no device-kind table in {path}"
    return rows


def test_the_reference_registry_lists_the_compiled_kinds() -> None:
    compiled = registry_table(ROOMS / "stages.pxi")
    kinds = {getattr(C, name) for name in compiled}
    assert set(stages.TX) == kinds
    assert set(stages.RX) == kinds


@pytest.mark.parametrize("column", [0, 1], ids=["TX", "RX"])
def test_each_kind_maps_to_the_twin_of_the_compiled_function(column: int) -> None:
    compiled = registry_table(ROOMS / "stages.pxi")
    documented = registry_table(REFERENCE / "stages.py")
    table = (stages.TX, stages.RX)[column]
    assert set(documented) == set(compiled)
    for name, cells in compiled.items():
        fn = table[getattr(C, name)]
        room = fn.__module__.rsplit(".", 1)[-1]
        # the reference's comment table says what its table holds
        assert documented[name][column] == (fn.__name__, room), name
        if cells[column] is None:  # the compiled table names no function (lo: delivered)
            continue
        cname, croom = cells[column]
        assert (fn.__name__, room) == (f"_{cname}", croom), name
        assert re.search(rf"^cdef .*\b{cname}\(", (ROOMS / f"{croom}.pxi").read_text(),
                         re.M), f"{cname} is not in {croom}.pxi"
