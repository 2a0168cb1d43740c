"""OpenTelemetry tracing for every taskgate process, configured by the standard
``OTEL_*`` variables.

- Off unless an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or when ``OTEL_SDK_DISABLED=true``
  or ``OTEL_TRACES_EXPORTER=none``. Off means no tracer provider, no
  instrumentation and no interceptor: nothing is exported and nothing slows down.
- On: a batch span processor exporting over OTLP/gRPC (the exporter reads
  ``OTEL_EXPORTER_OTLP_*`` itself: endpoint, headers, certificate, timeout),
  the service name from ``OTEL_SERVICE_NAME`` (else the process's own), and
  sampling from ``OTEL_TRACES_SAMPLER``/``_ARG``. Without them it is
  ``parentbased_traceidratio`` at 0.01: a trace a client started (its
  ``traceparent`` says sampled) is followed whole, and 1 % of the others.
- Spans by hand where taskgate's own code is the one place a call passes: the
  server's calls (``server.interceptors.tracing``: the grpc instrumentation's
  aio server interceptor cannot serve coroutine stream handlers), the
  gateway's requests (``gateway.tracing``: the aiohttp-server instrumentation
  does its attribute work before the sampler decides, for every request), the
  gateway's call metadata (:func:`carrier`; the grpc instrumentation's aio
  client interceptors put every call on grpc.aio's slower intercepted-call
  path), and each SQL statement and Redis call (:func:`client_span`, from
  ``server.storage``: the psycopg and redis instrumentations cost every call
  40-60 us of CPU even when nothing is sampled, named statements "WITH", put
  keys (session ids) in ``db.statement``, and wrote the old ``net.peer.*``
  attributes). ``make bench-tracing`` measured each. HTTP, RPC and database
  spans follow the current (stable) semantic conventions; no SQL parameter and
  no Redis key is recorded, only the statement text and the command.
- A task's trace: :func:`carrier` is the W3C ``traceparent``/``tracestate``
  of the current span, stored with the task when it is created;
  :func:`context_of` turns it back into a parent for the processor's spans.
- Logs and metrics: :func:`current_ids` gives the ids a log line carries,
  :func:`exemplar` the trace id a histogram observation carries.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

DEFAULT_ROOT_RATIO = 0.01

_propagator = TraceContextTextMapPropagator()
_state: dict[str, Any] = {"provider": None, "tracer": None}
_NOTHING: AbstractContextManager[None] = nullcontext()


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def enabled() -> bool:
    """Whether :func:`configure` set tracing up in this process."""
    return _state["provider"] is not None


def _sampler(env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.trace import sampling

    if env.get("OTEL_TRACES_SAMPLER", "").strip():
        return sampling._get_from_env_or_default()  # the SDK's own reading of the variables
    ratio = DEFAULT_ROOT_RATIO
    if raw := env.get("OTEL_TRACES_SAMPLER_ARG", "").strip():
        ratio = min(1.0, max(0.0, float(raw)))
    return sampling.ParentBased(sampling.TraceIdRatioBased(ratio))


def _resource(service: str) -> Any:
    """The process's resource (Resource.create reads ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_SERVICE_NAME``; a name set there wins over ``service``), its hash computed once:
    the OTLP encoder groups each batch's spans by resource, and the SDK's
    ``Resource.__hash__`` serializes every attribute to JSON for each span (a tenth of
    the export's CPU). A resource never changes: one hash holds for its life."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    class HashedOnce(Resource):
        def __init__(self, resource: Resource) -> None:
            super().__init__(resource.attributes, resource.schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:
            return self._hash

    named = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    return HashedOnce(Resource.create({} if named else {SERVICE_NAME: service}))


@dataclass
class Telemetry:
    """What :func:`configure` set up; ``shutdown`` flushes the spans still buffered."""

    active: bool

    def shutdown(self) -> None:
        provider = _state["provider"]
        if provider is not None:
            provider.shutdown()
            _state["provider"] = _state["tracer"] = None


def configure(*, service: str) -> Telemetry:
    """Sets tracing up for this process when :func:`wanted`; a no-op otherwise."""
    if not wanted() or enabled():
        return Telemetry(active=enabled())
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "database")
    provider = TracerProvider(resource=_resource(service), sampler=_sampler(os.environ))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _state["provider"] = provider
    _state["tracer"] = trace.get_tracer("taskgate.storage")
    return Telemetry(active=True)


@contextmanager
def quiet() -> Iterator[None]:
    """No store spans (:func:`client_span`) inside: for background loops (health probes,
    a processor's claims and heartbeats) that would make a trace every second."""
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        otel_context.detach(token)


def client_span(
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    answers: tuple[type[BaseException], ...] = (),
) -> AbstractContextManager[trace.Span | None]:
    """A CLIENT span for one call to a store (a SQL statement, a Redis call), child of
    the current span, when that one is recorded and not :func:`quiet`; else nothing, at
    the cost of a lookup or two. It ends with the block: an exception marks it as an
    error (``error.type``, and ``db.response.status_code`` from its or its cause's
    SQLSTATE), but one of ``answers`` (a unique violation, the caller's own deadline)
    and a cancellation only get their ``error.type``. The span is not made current:
    nothing runs below a store call."""
    tracer = _state["tracer"]
    if (
        tracer is None
        or not trace.get_current_span().is_recording()
        or otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)
    ):
        return _NOTHING
    return _ClientSpan(
        tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes), answers
    )


class _ClientSpan:
    __slots__ = ("_answers", "_span")

    def __init__(self, span: trace.Span, answers: tuple[type[BaseException], ...]) -> None:
        self._span = span
        self._answers = answers

    def __enter__(self) -> trace.Span:
        return self._span

    def __exit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        span = self._span
        if error is not None:
            if isinstance(error, asyncio.CancelledError):
                span.set_attribute("error.type", "cancelled")
            else:
                span.set_attribute("error.type", type(error).__qualname__)
                if not isinstance(error, self._answers):
                    span.set_status(Status(StatusCode.ERROR))
            sqlstate = getattr(error, "sqlstate", None) or getattr(
                error.__cause__, "sqlstate", None
            )
            if isinstance(sqlstate, str):
                span.set_attribute("db.response.status_code", sqlstate)
        span.end()


def name_http_span(*, method: str, route: str, known: bool) -> None:
    """Names the current HTTP server span ``{method} {route}`` (the semantic conventions'
    name): the gateway has one catch-all aiohttp route, the template is its own."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    if known:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    else:
        span.update_name(method)


def carrier() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``, ``tracestate``); {} without one."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    headers: dict[str, str] = {}
    _propagator.inject(headers)
    return headers


def context_of(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The context ``headers`` (a stored :func:`carrier`) name, as a parent; None for {}."""
    if not headers:
        return None
    return _propagator.extract(dict(headers))


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the current span, None outside one."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return (
        trace.format_trace_id(span_context.trace_id),
        trace.format_span_id(span_context.span_id),
    )


def exemplar() -> dict[str, str] | None:
    """The exemplar labels of an observation made in a sampled span: its trace and span ids."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return {
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
    }


def links_of(contexts: Sequence[otel_context.Context | None]) -> list[trace.Link]:
    """Span links to the spans current in ``contexts``."""
    links = []
    for ctx in contexts:
        if ctx is None:
            continue
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            links.append(trace.Link(span_context))
    return links
