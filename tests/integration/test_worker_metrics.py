"""The processor's worker processes' CPU and memory, on its registry.

A pipeline runs in a real worker process: the worker's CPU shows in
``taskgate_processor_workers_cpu_seconds_total`` (the processor's own
``process_cpu_seconds_total`` does not see it), its memory in
``..._resident_memory_bytes``; once the worker has ended, its CPU stays counted.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from server.imaging.filters import FilterStep
from server.processor.worker_metrics import WorkerCollector
from server.processor.workers import Done, JobControl, Pipeline, WorkerPool
from tests.support.images import image_bytes
from tests.support.metrics import value

CPU = "taskgate_processor_workers_cpu_seconds_total"
RSS = "taskgate_processor_workers_resident_memory_bytes"
ALIVE = "taskgate_processor_workers"


async def test_a_workers_cpu_and_memory_are_exported_and_its_cpu_outlives_it() -> None:
    pool = WorkerPool(size=1)
    registry = CollectorRegistry()
    registry.register(WorkerCollector(pool.pids))
    before = value(registry, CPU)
    assert value(registry, ALIVE) == 0
    try:
        outcome = await pool.run(
            Pipeline(image_bytes(1200, 1200), [FilterStep("blur", {"radius": 20.0})] * 3, "png"),
            control=JobControl(),
            on_progress=lambda n: None,
        )
        assert isinstance(outcome, Done)
        assert value(registry, ALIVE) == 1
        assert value(registry, RSS) > 20 * 2**20  # Python, Pillow and a 1200x1200 image
        busy = value(registry, CPU)
        assert busy - before > 0.05
    finally:
        await pool.close()
    assert value(registry, ALIVE) == 0
    assert value(registry, RSS) == 0
    assert value(registry, CPU) >= busy  # the ended worker's CPU (getrusage of children)
