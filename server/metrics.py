"""Task and queue metrics, created on a registry passed in (never the global one).

The API side counts submissions and cancellations of pending tasks; the
processor times pipelines, counts filters, outcomes and rescues, and samples
the queue. The observability work serves the registry on a metrics port.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Image work: from a few milliseconds (a thumbnail) to a minute (a 40-megapixel
# pipeline of twenty filters).
PROCESSING_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
# Waiting: a claim on a notification takes milliseconds, a backlog minutes.
WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
)  # fmt: skip
OUTCOMES = ("completed", "failed", "cancelled")


class TaskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.created = Counter(
            "tasks_created", "Tasks accepted by CreateTask (idempotent repeats not counted).",
            registry=registry,
        )  # fmt: skip
        self.finished = Counter(
            "tasks_finished", "Tasks that reached a final status, by that status.",
            ["status"], registry=registry,
        )  # fmt: skip
        self.retried = Counter(
            "tasks_retried",
            "Attempts that gave their task back, by reason: error (retryable failure), "
            "lost (the lease expired), released (processor shutdown).",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.processing_time = Histogram(
            "processing_time_seconds", "Time to run a task's pipeline, decode to encode.",
            buckets=PROCESSING_BUCKETS, registry=registry,
        )  # fmt: skip
        self.filters_used = Counter(
            "filters_used", "Filters run by processors, by filter.", ["filter"],
            registry=registry,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "task_queue_wait_seconds",
            "From when a task became due (created, or its retry backoff ended) to its claim.",
            buckets=WAIT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.claim_to_start = Histogram(
            "task_claim_to_start_seconds",
            "From a task's claim to its pipeline starting in a worker process.",
            buckets=WAIT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "tasks_queue_depth", "Tasks waiting to be processed (PENDING).", registry=registry
        )
        self.running = Gauge("tasks_running", "Tasks being processed (RUNNING).", registry=registry)
        self.oldest_pending_age = Gauge(
            "tasks_oldest_pending_age_seconds", "Age of the oldest PENDING task.",
            registry=registry,
        )  # fmt: skip
        for status in OUTCOMES:
            self.finished.labels(status)
        for reason in ("error", "lost", "released"):
            self.retried.labels(reason)
