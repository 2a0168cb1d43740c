"""CPU and memory of a processor's worker processes, which ``process_*`` misses.

``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` describe
the processor's own process; the image work runs in its worker children
(:mod:`server.processor.workers`). Read at scrape time, without labels (the
workers come and go; their number is bounded by TASKGATE_PROCESSOR_WORKERS):

- ``taskgate_processor_workers_cpu_seconds_total``: user + system CPU of the
  live workers (``/proc/<pid>/stat``) plus that of every child already ended
  and reaped (``getrusage(RUSAGE_CHILDREN)``), so it only grows;
- ``taskgate_processor_workers_resident_memory_bytes``: the live workers' RSS
  (``/proc/<pid>/statm``);
- ``taskgate_processor_workers``: how many are alive.

Without ``/proc`` (not Linux) only the reaped children's CPU is known.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of proc(5)


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class WorkerCollector(Collector):
    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        """``pids``: the live workers' process ids, when scraped."""
        self._pids = pids

    def describe(self) -> Iterable[Metric]:
        return self._families(0.0, 0, 0)

    def collect(self) -> Iterable[Metric]:
        pids = list(self._pids())
        ended = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = ended.ru_utime + ended.ru_stime + sum(_cpu_seconds(pid) for pid in pids)
        return self._families(cpu, sum(_rss_bytes(pid) for pid in pids), len(pids))

    @staticmethod
    def _families(cpu: float, rss: int, alive: int) -> list[Metric]:
        return [
            CounterMetricFamily(
                "taskgate_processor_workers_cpu_seconds",
                "User and system CPU time of the processor's worker processes, ended ones too.",
                value=cpu,
            ),
            GaugeMetricFamily(
                "taskgate_processor_workers_resident_memory_bytes",
                "Resident memory of the processor's live worker processes.",
                value=rss,
            ),
            GaugeMetricFamily(
                "taskgate_processor_workers", "The processor's live worker processes.", value=alive
            ),
        ]
