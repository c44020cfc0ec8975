"""Exceptions shared by every layer and by both data-plane implementations.

Each error names where the problem is: a manifest file, object and field, or a capture
file, frame number and byte offset. Front ends print ``str(err)`` and exit 2; they never
show a traceback for these.
"""

from __future__ import annotations

from dataclasses import dataclass


class KemuError(Exception):
    """Base class of every error kemu reports to a user."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as kemu can.

    ``source`` is the file (or ``<dict>`` for API input), ``obj`` is
    ``namespace/Kind/name`` (or ``Kind/name`` for cluster-scoped objects), ``field`` is the
    JSON path inside the object (``spec.ports[0].targetPort``).
    """

    source: str
    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.obj, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


class ManifestError(KemuError):
    """The cluster manifests are invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class CaptureError(KemuError):
    """A capture file cannot be read at all (bad magic, unsupported link type, ...)."""

    def __init__(self, path: str, message: str, frame: int | None = None,
                 offset: int | None = None) -> None:
        self.path, self.frame, self.offset = path, frame, offset
        where = path
        if frame is not None:
            where += f": frame {frame}"
        if offset is not None:
            where += f" (byte offset {offset})"
        super().__init__(f"{where}: {message}")


class TopologyError(KemuError):
    """A request names something the emulated cluster does not have (pod, interface, ...)."""


class OutputError(KemuError):
    """An output file cannot be written: refused before the work (it is one of the inputs, its
    directory is missing or read-only, ...) or failed while writing (``ENOSPC``, ``EIO``).
    Nothing is left under its name nor as a temporary ``.part-*`` file beside it."""

    def __init__(self, path: str, message: str, errno: int | None = None) -> None:
        self.path, self.errno = path, errno
        super().__init__(message)
