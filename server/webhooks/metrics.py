"""Webhook metrics, on a registry passed in: deliveries by outcome, their
latency, the outbox's lag and the disabled endpoints."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.webhooks.sender import OUTCOMES

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
)  # fmt: skip


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "webhook_deliveries",
            "Webhook POSTs by outcome: delivered (2xx), http_error (another status), gone "
            "(410: the endpoint is disabled), timeout, connection_error, refused (the SSRF guard).",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "webhook_delivery_seconds", "Time of one webhook POST, connect to answer.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.oldest_undelivered = Gauge(
            "outbox_oldest_undelivered_age_seconds",
            "Age of the oldest webhook delivery not yet finished (to an enabled endpoint).",
            registry=registry,
        )  # fmt: skip
        self.disabled_endpoints = Gauge(
            "webhook_endpoints_disabled", "Webhook endpoints disabled (410 Gone, or failing).",
            registry=registry,
        )  # fmt: skip
        self.rescued = Counter(
            "webhook_deliveries_rescued",
            "Deliveries whose dispatcher stopped during the POST, put back to pending.",
            registry=registry,
        )  # fmt: skip
        for outcome in OUTCOMES:
            self.deliveries.labels(outcome)
