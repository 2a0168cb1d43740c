"""HTTP metrics of the gateway, in a registry of their own, served on their own port.

- ``taskgate_gateway_http_requests_total{method, route, status}``
- ``taskgate_gateway_http_request_duration_seconds{method, route}`` (histogram)
- ``taskgate_gateway_http_requests_in_flight``
- ``taskgate_gateway_body_bytes_held{share}``: request body bytes counted against
  the budgets now (``share="all"``, ``share="without_credentials"``)

``route`` is the path template (``/v1/users/{user_id}``), never the raw path,
so the label values stay bounded: a request that matches no route is
``unmatched``. An observation made in a sampled trace carries its trace id as
an exemplar (shown in the OpenMetrics exposition).

The registry also carries the process, platform and GC collectors
(:func:`taskgate_runtime.metrics_http.process_registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from taskgate_runtime import metrics_http, telemetry

UNMATCHED = "unmatched"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = metrics_http.process_registry() if registry is None else registry
        self.requests = Counter(
            "taskgate_gateway_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "taskgate_gateway_http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "taskgate_gateway_http_requests_in_flight",
            "HTTP requests being answered now.",
            registry=self.registry,
        )
        # Counted in a plain int (one event loop) and read at scrape time: no lock per request.
        self.active = 0
        self.in_flight.set_function(lambda: self.active)
        self.body_bytes = Gauge(
            "taskgate_gateway_body_bytes_held",
            "Request body bytes held against the budgets now: by all requests, "
            "and by those without credentials.",
            ["share"],
            registry=self.registry,
        )
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def track_bodies(self, held: Callable[[], int], held_anonymous: Callable[[], int]) -> None:
        """Reads the body budgets' counts at scrape time."""
        self.body_bytes.labels("all").set_function(held)
        self.body_bytes.labels("without_credentials").set_function(held_anonymous)

    def started(self) -> None:
        self.active += 1

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        self.active -= 1
        self.observe(method, route, status, seconds)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self.requests.labels(method, route, str(status))
            self._counters[(method, route, status)] = counter
        counter.inc()
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = self.duration.labels(method, route)
            self._histograms[(method, route)] = histogram
        histogram.observe(seconds, telemetry.exemplar())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(metrics: HttpMetrics) -> web.Application:
    """The gateway's registry on ``/metrics`` (process metrics included)."""
    return metrics_http.metrics_app(metrics.registry)
