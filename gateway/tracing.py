"""Each HTTP request's OpenTelemetry SERVER span (when tracing is on).

An aiohttp middleware, outermost: the caller's ``traceparent``/``tracestate``
(W3C) is the parent; the span is named ``{method} {route}`` with the route
template (the handler names it, :func:`taskgate_runtime.telemetry.name_http_span`)
and carries the stable HTTP semantic conventions' attributes:
``http.request.method``, ``url.scheme``, ``url.path``, ``server.address``,
``server.port``, ``network.protocol.version``, ``user_agent.original``,
``client.address``, ``http.route``, ``http.response.status_code``; a 5xx
marks it as an error. No header value but the user agent, no query string, no
body. ``/metrics``, ``/live`` and ``/ready`` make no span.

Why not opentelemetry-instrumentation-aiohttp-server's middleware: it collects
every attribute before the sampler decides, so each request costs that work
even when it is not sampled (99 % of them by default). ``make bench-tracing``
measured it at 60-100 us of gateway CPU per request; this one does the
attribute work only for a sampled request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
QUIET_PATHS = frozenset({"/metrics", "/live", "/ready"})
_KNOWN = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _request_attributes(request: web.Request) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "url.scheme": request.scheme,
        "url.path": request.path,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
    }
    host, _, port = request.host.rpartition(":")
    if host and port.isdigit():
        attributes["server.address"], attributes["server.port"] = host, int(port)
    else:
        attributes["server.address"] = request.host
    if agent := request.headers.get("User-Agent"):
        attributes["user_agent.original"] = agent
    if request.remote:
        attributes["client.address"] = request.remote
    return attributes


def middleware() -> Middleware:
    tracer = trace.get_tracer("taskgate.gateway")

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in QUIET_PATHS:
            return await handler(request)
        method = request.method if request.method in _KNOWN else "_OTHER"
        parent = propagate.extract(request.headers)
        span = tracer.start_span(
            method if method != "_OTHER" else "HTTP",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        )
        if span.is_recording():
            span.set_attributes(_request_attributes(request))
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _status(span, exc.status)
            raise
        except asyncio.CancelledError:
            # The client went away (or the gateway is stopping): no answer, and no fault of
            # the request's. No exception event either: formatting its traceback would cost
            # each hang-up a millisecond.
            span.set_attribute("error.type", "cancelled")
            raise
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise
        else:
            _status(span, response.status)
            return response
        finally:
            otel_context.detach(token)
            span.end()

    return traced


def _status(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
