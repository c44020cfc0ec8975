"""Probes of this process and this machine for ``kemu bench`` (Linux ``/proc`` based).

Owns: the resident and the peak memory of this process (``rss_bytes``, ``peak_rss_bytes``),
its memory in transparent huge pages (``huge_page_bytes``), the free space of a folder and
the pace of plain writes there the way replay writes (``free_bytes``, ``write_seconds``), and
the description of the machine a run reports (``machine``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Any


def free_bytes(folder: str) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def write_seconds(path: str, size: int, chunk: int = 4 << 20) -> float:
    """Seconds to write ``size`` bytes to a new file at ``path`` in 4 MiB writes the way
    replay writes its pcapng (``DirectFile``: around the page cache where the file system
    allows; no fsync, as kemu does not sync either); the file is removed afterwards."""
    from kemu.io.directio import DirectFile

    block = b"\x5a" * chunk
    t0 = time.perf_counter()
    try:
        with DirectFile(path) as f:
            left = size
            while left > 0:
                f.write(block if left >= chunk else block[:left])
                left -= chunk
        return time.perf_counter() - t0
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def huge_page_bytes() -> int | None:
    """Bytes of this process's anonymous memory in transparent huge pages now (Linux; None
    where unknown): random lookups in big tables miss the TLB without them."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``VmHWM``; unlike ``ru_maxrss`` it is not
    inherited from the parent through fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from kemu._version import __version__

    return {"cpu": cpu, "nproc": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}", "kemu": __version__,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
