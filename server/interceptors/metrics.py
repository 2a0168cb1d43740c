"""gRPC server metrics for grpc.aio, with py-grpc-prometheus's families and names.

py-grpc-prometheus's own ``PromServerInterceptor`` is a sync interceptor that
``grpc.aio.server()`` rejects; its metric definitions are reused here as they are
(``server_metrics.init_metrics`` registers every family, on the registry given):

- ``grpc_server_started_total{grpc_type, grpc_service, grpc_method}``
- ``grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}``
- ``grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}`` (histogram,
  streams included: a stream's time is its whole life)
- ``grpc_server_msg_received_total`` / ``grpc_server_msg_sent_total``: the messages
  of request streams and of response streams (as the package counts them: a
  unary side is not a stream). A response stream counts what its generator
  yields; a servicer writing with ``context.write`` is not counted.
- ``grpc_server_calls_in_flight{grpc_type, grpc_service, grpc_method}`` (ours): calls
  begun and not yet ended, open streams included; every method served shows
  from its first call on (``started - handled`` shows a method only once one of
  its calls has ended).
- ``grpc_server_handling_seconds`` observations made in a sampled trace carry
  its trace id as an exemplar.

The interceptor is the outermost, so ``grpc_code`` is the call's real final
status, whoever set it: the error mapping, the auth check, the request reader,
a deadline that passed (DEADLINE_EXCEEDED), a client that went away
(CANCELLED), an exception that escaped every mapping (UNKNOWN).

``grpc_type`` is the method's type as its proto declares it: the inner
interceptors serve unary methods as streaming ones (see
:mod:`server.interceptors.reading`), which the handler's shape would show.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import CollectorRegistry, Gauge
from py_grpc_prometheus import grpc_utils, server_metrics

from server.interceptors.wrap import Context, Handler, HandlerWrapper, final_code, wrap_handler
from taskgate_runtime import telemetry


class _CallDetails(NamedTuple):
    """What ``grpc_utils.split_method_call`` reads of a call's details."""

    method: str


def method_kind(method: str, handler: Handler) -> tuple[bool, bool]:
    """(request streaming, response streaming) as the method's proto declares them."""
    service, name, ok = grpc_utils.split_method_call(_CallDetails(method))
    if ok:
        try:
            found = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
        except KeyError:
            pass
        else:
            return found.client_streaming, found.server_streaming
    return bool(handler.request_streaming), bool(handler.response_streaming)


class _MethodMetrics:
    """One method's label children, looked up once."""

    __slots__ = ("_handled", "_in_flight", "_labels", "_seconds", "_started", "_with_code")

    def __init__(self, families: GrpcMetrics, labels: tuple[str, str, str]) -> None:
        self._labels = labels
        self._started = families.started.labels(*labels).inc
        self._seconds = families.seconds.labels(*labels).observe
        self._in_flight = families.in_flight.labels(*labels)
        self._handled = families.handled
        self._with_code: dict[grpc.StatusCode, Any] = {}

    def started(self) -> None:
        self._started()
        self._in_flight.inc()

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        self._in_flight.dec()
        child = self._with_code.get(code)
        if child is None:
            child = self._with_code[code] = self._handled.labels(*self._labels, code.name)
        child.inc()
        self._seconds(seconds, telemetry.exemplar())


class _Measured:
    """Counts a call as started on entry, and as handled with its final code on exit."""

    __slots__ = ("_context", "_method", "_started")

    def __init__(self, method: _MethodMetrics, context: Context) -> None:
        self._method = method
        self._context = context
        self._started = 0.0

    async def __aenter__(self) -> None:
        self._method.started()
        self._started = time.perf_counter()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        self._method.handled(final_code(self._context, error), time.perf_counter() - self._started)


class GrpcMetrics:
    """py-grpc-prometheus's server families, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        families = server_metrics.init_metrics(registry)
        self.started = families["grpc_server_started_counter"]
        self.seconds = families["grpc_server_handled_histogram"]
        self.received = families["grpc_server_stream_msg_received"]
        self.sent = families["grpc_server_stream_msg_sent"]
        self.handled = server_metrics.get_grpc_server_handled_counter(False, registry)
        self.in_flight = Gauge(
            "grpc_server_calls_in_flight",
            "Calls begun and not yet ended (open streams included), by method.",
            ["grpc_type", "grpc_service", "grpc_method"],
            registry=registry,
        )


class MetricsInterceptor(HandlerWrapper):
    def __init__(self, *, registry: CollectorRegistry) -> None:
        super().__init__()
        self.metrics = GrpcMetrics(registry)

    def wrap(self, method: str, handler: Handler) -> Handler:
        request_streaming, response_streaming = method_kind(method, handler)
        service, name, _ = grpc_utils.split_method_call(_CallDetails(method))
        labels = (
            grpc_utils.get_method_type(request_streaming, response_streaming),
            service,
            name,
        )
        return wrap_handler(
            handler,
            functools.partial(_Measured, _MethodMetrics(self.metrics, labels)),
            sent=self.metrics.sent.labels(*labels).inc if response_streaming else None,
            received=self.metrics.received.labels(*labels).inc if request_streaming else None,
        )
