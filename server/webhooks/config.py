"""The webhook settings: what the API checks endpoints against, and how
dispatchers deliver. The processor's and the server's settings include
:class:`WebhookTuning`; ``python -m server.webhooks`` reads :class:`WebhookSettings`.
"""

from __future__ import annotations

import random

from taskgate_runtime.settings import (
    Address,
    Count,
    DatabaseSettings,
    Duration,
    LoggingSettings,
    TaskgateSettings,
    metrics_addr,
)


class WebhookTuning(TaskgateSettings):
    """Which URLs are allowed, and how deliveries are sent and retried."""

    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_dispatcher: bool = True
    webhook_concurrency: Count = 64
    webhook_endpoint_concurrency: Count = 4
    webhook_connect_timeout: Duration = 3.0
    webhook_timeout: Duration = 10.0
    webhook_response_max_bytes: Count = 4096
    webhook_retry_backoff: Duration = 10.0
    webhook_retry_backoff_max: Duration = 6 * 3600.0
    webhook_max_attempts: Count = 12
    webhook_disable_after: Duration = 5 * 86400.0
    webhook_secret_rotation_period: Duration = 86400.0
    webhook_max_endpoints: Count = 20
    webhook_poll_interval: Duration = 5.0
    event_retention: Duration = 7 * 86400.0

    @property
    def webhook_lease(self) -> float:
        """A claimed delivery's lease: its whole POST, with room to record the result."""
        return self.webhook_timeout + self.webhook_connect_timeout + 2.0

    def retry_delay(self, attempt: int) -> float:
        """How long after failed attempt ``attempt`` (from 1) to try again: the
        backoff tripling with each attempt up to its maximum, ±20 % of jitter."""
        base = min(
            self.webhook_retry_backoff_max, self.webhook_retry_backoff * 3.0 ** (attempt - 1)
        )
        return float(base * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret

    def check(self) -> None:
        super().check()
        self.require_at_most("webhook_retry_backoff", "webhook_retry_backoff_max")
        self.require_at_most("webhook_endpoint_concurrency", "webhook_concurrency")


class WebhookSettings(LoggingSettings, DatabaseSettings, WebhookTuning):
    """Everything ``python -m server.webhooks`` reads from its environment."""

    metrics_addr: Address = metrics_addr("TASKGATE_WEBHOOK_METRICS_ADDR", "127.0.0.1:9467")
    shutdown_grace: Duration = 10.0
