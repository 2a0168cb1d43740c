"""Wrapping an RPC method handler in a per-call scope, for every call shape.

An interceptor supplies a *scope*: an async context manager entered around the
call. Unary and streaming handlers, coroutine or async-generator style, all
run inside it, so each interceptor is written once.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
Scope = Callable[[Context], AbstractAsyncContextManager[None]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the type stubs
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]

_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def wrap_handler(handler: Handler, scope: Scope) -> Handler:
    for kind, factory in _FACTORIES.items():
        behavior = getattr(handler, kind)
        if behavior is not None:
            wrapped = _wrap(behavior, scope, streams=kind.endswith("stream"))
            return factory(
                wrapped,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler  # pragma: no cover - grpc always sets one behavior


def _wrap(behavior: Callable[..., Any], scope: Scope, *, streams: bool) -> Callable[..., Any]:
    if streams and inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with scope(context):
                async for response in behavior(request, context):
                    yield response

        return stream

    async def call(request: Any, context: Context) -> Any:
        async with scope(context):
            return await behavior(request, context)

    return call


def metadata_value(context: Context, key: str) -> str | None:
    """The first value of a metadata key (keys arrive lower-cased)."""
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None
