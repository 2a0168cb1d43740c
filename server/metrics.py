"""Task and queue metrics, created on a registry passed in (never the global one).

The API side counts submissions, refusals by limit and cancellations of
pending tasks; the processor times pipelines, counts filters, outcomes and
rescues, observes how many other users' tasks overtook each claimed task,
and samples the queue. No metric has a per-user label. The observability work
serves the registry on a metrics port.
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
# Tasks of other users started while one waited: 0 on an idle queue, about one
# per busy user with fair claims, the whole backlog first-in-first-out.
OVERTAKEN_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000)
OUTCOMES = ("completed", "failed", "cancelled")
LIMITS = ("max_pending",)


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
        self.refused = Counter(
            "task_limit_refusals",
            "CreateTask calls refused by a per-user limit, by limit (max_pending).",
            ["limit"], registry=registry,
        )  # fmt: skip
        self.overtaken = Histogram(
            "task_claim_overtaken",
            "Tasks of other users that started while a task waited for its first claim.",
            buckets=OVERTAKEN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.users_pending = Gauge(
            "tasks_queue_users", "Users with at least one PENDING task.", registry=registry
        )
        self.largest_backlog = Gauge(
            "tasks_queue_largest_user_backlog", "The most PENDING tasks of any one user.",
            registry=registry,
        )  # fmt: skip
        for limit in LIMITS:
            self.refused.labels(limit)
        for status in OUTCOMES:
            self.finished.labels(status)
        for reason in ("error", "lost", "released"):
            self.retried.labels(reason)
