"""The processor's settings: its own model, read by ``python -m server.processor``.

:class:`ProcessorTuning` is what a processor needs wherever it runs; the
server mixes it into its own settings for the processor it embeds
(TASKGATE_EMBEDDED_PROCESSOR) and hands that processor a
:class:`ProcessorSettings` (``Settings.embedded_processor_settings()``). A
standalone processor reads only these variables: no Redis, no gRPC address.
"""

from __future__ import annotations

from pydantic import Field

from server.webhooks.config import WebhookTuning
from taskgate_runtime.settings import (
    Address,
    Count,
    DatabaseSettings,
    Duration,
    LoggingSettings,
    NonNegative,
    cpu_count,
    metrics_addr,
)


class ProcessorTuning(WebhookTuning):
    """How a processor claims, leases, retries and runs tasks (and, with its webhook
    dispatcher, delivers task events)."""

    processor_concurrency: Count = Field(default_factory=cpu_count)
    processor_workers: Count = Field(default_factory=cpu_count)
    processor_poll_interval: Duration = 5.0
    processor_db_pool_size: NonNegative = 0
    processor_stats_interval: Duration = 5.0
    max_image_pixels: Count = 40_000_000
    max_result_bytes: Count = 32 * 1024 * 1024
    queue_fairness: bool = True
    user_max_running: NonNegative = 0
    task_lease: Duration = 30.0
    task_retry_backoff: Duration = 2.0
    task_retry_backoff_max: Duration = 300.0
    task_retention: Duration = 7 * 86400.0
    shutdown_grace: Duration = 10.0

    @property
    def processor_pool_size(self) -> int:
        """The processor's own connections: one per running task, plus heartbeat and claims."""
        return self.processor_db_pool_size or self.processor_concurrency + 2

    def check(self) -> None:
        super().check()
        self.require_at_most("task_retry_backoff", "task_retry_backoff_max")


class ProcessorSettings(LoggingSettings, DatabaseSettings, ProcessorTuning):
    """Everything ``python -m server.processor`` reads from its environment."""

    metrics_addr: Address = metrics_addr("TASKGATE_PROCESSOR_METRICS_ADDR", "127.0.0.1:9465")
