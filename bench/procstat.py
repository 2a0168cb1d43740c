"""CPU time of the processes under test, from /proc (Linux only; elsewhere: none).

A :class:`CpuGroups` snapshot holds utime + stime of named groups of processes
(a processor, its worker children, the Postgres backends serving it) and the
machine's busy and total time from /proc/stat. The difference of two snapshots
says which process used how much CPU over a measured window.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.infra import process_cpu_seconds

PROC = Path("/proc")


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (all its threads'), oldest first."""
    found: list[int] = []
    try:
        threads = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for thread in threads:
        try:
            found += [int(child) for child in (thread / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


def machine_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs."""
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0, 0.0
    ticks = [int(value) for value in first[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    idle = ticks[3] + ticks[4]
    hertz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hertz, total / hertz


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    times: dict[int, float] = {}
    for pid in pids:
        seconds = process_cpu_seconds(pid)
        if seconds is not None:
            times[pid] = seconds
    return times


@dataclass
class CpuGroups:
    """CPU seconds per pid of each named group, and the machine's (busy, total)."""

    groups: dict[str, dict[int, float]] = field(default_factory=dict)
    machine: tuple[float, float] = (0.0, 0.0)
    own: float = 0.0  # this (bench) process

    @classmethod
    def take(cls, groups: Mapping[str, Iterable[int]]) -> CpuGroups:
        times = os.times()
        return cls(
            groups={name: cpu_by_pid(pids) for name, pids in groups.items()},
            machine=machine_times(),
            own=times.user + times.system,
        )

    def since(self, before: CpuGroups) -> CpuUse:
        """The CPU used between ``before`` and this snapshot; a pid new since then counts
        from its start (it started within the window)."""
        used: dict[str, float] = {}
        for name, pids in self.groups.items():
            earlier = before.groups.get(name, {})
            used[name] = sum(max(0.0, now - earlier.get(pid, 0.0)) for pid, now in pids.items())
        busy = self.machine[0] - before.machine[0]
        total = self.machine[1] - before.machine[1]
        return CpuUse(used, busy, total, self.own - before.own)


@dataclass(frozen=True)
class CpuUse:
    groups: dict[str, float]
    machine_busy: float
    machine_total: float
    bench: float

    def describe(self, wall: float) -> str:
        """``processor 1.20s (60% of a core), ...; machine 85% busy`` over ``wall`` seconds."""
        if self.machine_total <= 0 or wall <= 0:
            return "CPU: n/a (no /proc)"
        parts = [
            f"{name} {seconds:.2f}s ({seconds / wall:.0%} of a core)"
            for name, seconds in self.groups.items()
        ]
        parts.append(f"bench {self.bench:.2f}s")
        listed = sum(self.groups.values()) + self.bench
        other = max(0.0, self.machine_busy - listed)
        parts.append(f"everything else {other:.2f}s")
        cores = self.machine_total / wall
        return (
            "; ".join(parts)
            + f" | machine {self.machine_busy / self.machine_total:.0%} busy of {cores:.0f} cores"
        )
