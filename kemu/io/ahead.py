"""Items made one ahead on a thread of their own: ``ahead(items)``.

Owns the hand-over between a producer thread and its consumer for kemu's pipelines: replay
reads and indexes the next capture chunk (file reads, record scans, frame placement, most of
it without the GIL) while the main thread runs the datapath on the current one. Order is
kept, at most one finished item waits, and an exception the producer meets is raised in the
consumer at the point it would have been met without the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["ahead"]


def ahead(items: Iterator[T], name: str = "kemu reader") -> Iterator[T]:
    """``items``, each made on a thread named ``name`` while the caller works on the one
    before: the caller holds one item, one more may wait and the thread makes a third (a
    producer that reuses memory must keep three items' worth valid). Leaving the loop early,
    or closing the iterator, stops the thread after the item it is making and closes
    ``items``."""
    ready: queue.Queue[tuple[bool, T | BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: tuple[bool, T | BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as err:  # noqa: BLE001 - raised in the caller's thread
            put((False, err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=run, name=name, daemon=True)
    producer.start()
    try:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item  # type: ignore[misc]
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        producer.join()
