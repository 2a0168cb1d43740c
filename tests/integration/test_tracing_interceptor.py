"""The server's RPC span interceptor on a real grpc.aio server: the caller's
``traceparent`` is the parent, the attributes are the RPC conventions', a
server failure marks the span, and coroutine stream handlers (which
opentelemetry-instrumentation-grpc's aio interceptor fails on) are served."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from server.interceptors.tracing import TracingInterceptor


def _identity(data: bytes) -> bytes:
    return data


async def _ok(request: bytes, context: Any) -> bytes:
    return b"ok"


async def _fail(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable")
    raise AssertionError("abort raises")


async def _written(request: bytes, context: Any) -> None:
    for part in (b"a", b"b"):
        await context.write(part)


HANDLERS = {
    "Ok": grpc.unary_unary_rpc_method_handler(_ok, _identity, _identity),
    "Fail": grpc.unary_unary_rpc_method_handler(_fail, _identity, _identity),
    "Written": grpc.unary_stream_rpc_method_handler(_written, _identity, _identity),
}


@pytest.fixture
async def traced() -> AsyncIterator[tuple[grpc.aio.Channel, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = grpc.aio.server(interceptors=[TracingInterceptor(tracer_provider=provider)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.v1.Svc", HANDLERS),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, exporter
    finally:
        await server.stop(None)
        provider.shutdown()


async def _only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    for _ in range(100):
        if exporter.get_finished_spans():
            break
        await asyncio.sleep(0.01)
    (span,) = exporter.get_finished_spans()
    return span


async def test_the_callers_traceparent_is_the_parent_of_the_rpc_span(
    traced: tuple[grpc.aio.Channel, InMemorySpanExporter],
) -> None:
    channel, exporter = traced
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.v1.Svc/Ok")
    assert await call(b"", metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),)) == b"ok"
    span = await _only_span(exporter)
    assert span.name == "test.v1.Svc/Ok"
    assert span.kind is SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == parent_id
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": "test.v1.Svc",
        "rpc.method": "Ok",
        "network.peer.address": "127.0.0.1",
        "network.peer.port": span.attributes["network.peer.port"],
        "rpc.grpc.status_code": 0,
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_a_server_failure_marks_the_span(
    traced: tuple[grpc.aio.Channel, InMemorySpanExporter],
) -> None:
    channel, exporter = traced
    fail: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.v1.Svc/Fail")
    with pytest.raises(grpc.aio.AioRpcError):
        await fail(b"")
    span = await _only_span(exporter)
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert span.status.status_code is StatusCode.ERROR
    assert span.parent is None  # no traceparent: a root


async def test_a_coroutine_stream_handler_is_served_in_its_span(
    traced: tuple[grpc.aio.Channel, InMemorySpanExporter],
) -> None:
    channel, exporter = traced
    written: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        "/test.v1.Svc/Written"
    )
    replies = [reply async for reply in written(b"")]
    assert replies == [b"a", b"b"]
    span = await _only_span(exporter)
    assert span.name == "test.v1.Svc/Written"
    assert span.status.status_code is StatusCode.UNSET
