"""What a ``kemu bench`` run is made of: names, sizes and measured rows.

Owns the names of the workloads and implementations as the table and the JSON show them
(``MIX``, ``CHURN``, ``POLICY``, ``FAST``, ``REF``, ``SCAPY``, ``KERNEL``, ``STAGES``), the
sizes of a full and of a ``--quick`` run (``Sizes``), and ``Row``: one measured line
(workload, implementation, the rate of each run, their median). Everything else in
``kemu.bench`` refers to rows by these names, so a name changes here or nowhere.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

MIX = "cluster mix"
CHURN = "churn"
POLICY = "cluster mix, policies"  # the mix with 1,000 NetworkPolicies (#17)
POLICY_CHURN = "churn, policies"  # new flows, each judged by them
POLICY_COUNT, POLICY_NAMESPACES = 1000, 100
FAST, REF, SCAPY, KERNEL = ("kemu fast path (cython)", "kemu reference (pure Python)",
                            "Scapy-object pipeline", "Linux kernel (netns, bridge, iptables)")
STAGES = FAST + ", flow cache off"  # every frame through every stage
FLOWS_ROW = "kemu replay, pcapng and flow log (whole process)"  # -w and --flows
FLOWS_SHM_ROW = "kemu replay, pcapng and flow log into /dev/shm (tmpfs)"  # the same, no disk


@dataclass(frozen=True)
class Sizes:
    mix_frames: int
    churn_flows: int
    ref_frames: int
    scapy_frames: int
    kernel_seconds: float
    route_sizes: tuple[int, ...]
    lookups: int
    replay_frames: int
    pod_cluster: tuple[int, int, int]  # nodes, pods, services for bytes per pod

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(100_000, 20_000, 1_000, 100, 0.5, (10_000, 100_000), 500_000, 20_000,
                       (20, 600, 60))
        return cls(1_000_000, 100_000, 20_000, 2_000, 2.0, (10_000, 500_000), 2_000_000,
                   1_000_000, (200, 6_000, 400))


@dataclass
class Row:
    group: str       # datapath, routes, replay
    workload: str
    name: str
    unit: str        # what the rate counts: "frames", "lookups"
    n: int           # per run
    runs: list[float] = field(default_factory=list)  # rate per run
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "workload": self.workload, "name": self.name,
                "unit": self.unit, "n": self.n, "median": self.median,
                "min": min(self.runs, default=0.0), "max": max(self.runs, default=0.0),
                "runs": self.runs, "note": self.note}
