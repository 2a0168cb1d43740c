"""Each call's OpenTelemetry SERVER span, with the caller's W3C trace context.

opentelemetry-instrumentation-grpc's aio server interceptor expects a
streaming behavior to be an async generator; the interceptors here also serve
coroutine behaviors (unary methods served as streams, ``context.write``
streams), which it fails with a TypeError. This one is built on the same
per-call scope as the others (:mod:`server.interceptors.wrap`) and writes what
it would: the span is named ``{rpc.service}/{rpc.method}`` with
``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code`` and
the peer's address, as the semantic conventions for RPC spans say; the
parent comes from the ``traceparent``/``tracestate`` metadata. The codes
that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
INTERNAL, UNAVAILABLE, DATA_LOSS) mark the span as an error.

It is the outermost interceptor, so every log line of the call (the access
log included) and every statement and Redis command below it are in the span
(their spans, :func:`taskgate_runtime.telemetry.client_span`, are made only
below a recorded span: a call that is not sampled costs them one lookup).
"""

from __future__ import annotations

import functools

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.interceptors.wrap import Context, Scope, ScopedInterceptor, final_code

SERVER_ERRORS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})  # fmt: skip


class TracingInterceptor(ScopedInterceptor):
    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        """``tracer_provider``: the global one unless given (tests)."""
        super().__init__()
        self._tracer = trace.get_tracer("taskgate.server", tracer_provider=tracer_provider)

    def scope(self, method: str) -> Scope:
        service, _, name = method.lstrip("/").rpartition("/")
        return functools.partial(_Traced, self._tracer, service, name)


def _peer(context: Context) -> dict[str, str | int]:
    """``ipv4:1.2.3.4:5678`` / ``ipv6:[::1]:5678`` → network.peer.address and .port."""
    family, _, rest = context.peer().partition(":")
    host, _, port = rest.rpartition(":")
    if family not in ("ipv4", "ipv6") or not port.isdigit():
        return {}
    return {"network.peer.address": host.strip("[]"), "network.peer.port": int(port)}


class _Traced:
    __slots__ = ("_context", "_method", "_service", "_span", "_token", "_tracer")

    def __init__(self, tracer: trace.Tracer, service: str, method: str, context: Context) -> None:
        self._tracer = tracer
        self._service = service
        self._method = method
        self._context = context
        self._span: trace.Span | None = None
        self._token: object = None

    async def __aenter__(self) -> None:
        carrier = {key: value for key, value in self._context.invocation_metadata() or ()
                   if isinstance(value, str)}  # fmt: skip
        parent = propagate.extract(carrier)
        span = self._tracer.start_span(
            f"{self._service}/{self._method}", context=parent, kind=SpanKind.SERVER
        )
        if span.is_recording():  # the attribute work for a sampled call only
            span.set_attributes({
                "rpc.system": "grpc",
                "rpc.service": self._service,
                "rpc.method": self._method,
                **_peer(self._context),
            })  # fmt: skip
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span, parent))

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        span = self._span
        assert span is not None
        code = final_code(self._context, error)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))
            if error is not None and code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                span.record_exception(error)
        otel_context.detach(self._token)  # type: ignore[arg-type]
        span.end()
