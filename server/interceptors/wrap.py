"""Wrapping RPC method handlers in a per-call scope, for every call shape.

An interceptor supplies a *scope* for each call: an async context manager
entered around it. Unary and streaming handlers, coroutine or async-generator
style, all run inside it, so each interceptor is written once. The wrapped
handler of a method is built once and reused: only the scope is per call.

The innermost wrapper also makes a request that does not parse an
INVALID_ARGUMENT inside the scopes (grpc would answer UNKNOWN and show the
parser's message): its deserializer hands a :class:`Malformed` on, and the
wrapper raises it as a domain error where the error interceptor can map it.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from server.errors import InvalidArgument

Context = grpc.aio.ServicerContext[Any, Any]
Scope = Callable[[Context], AbstractAsyncContextManager[None]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the type stubs
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]
Count = Callable[[], None]

_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


class HandlerWrapper(grpc.aio.ServerInterceptor):
    """Base of the interceptors: wraps each method's handler once, and reuses it."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    @abstractmethod
    def wrap(self, method: str, handler: Handler) -> Handler:
        """The handler to serve ``method`` with (``handler`` itself to leave it alone)."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self.wrap(method, handler))
            self._wrapped[method] = cached
        return cached[1]


class ScopedInterceptor(HandlerWrapper):
    """Runs each call of a method inside ``scope(method)``."""

    @abstractmethod
    def scope(self, method: str) -> Scope | None:
        """The scope factory for a method's calls, or None to leave it alone."""

    def wrap(self, method: str, handler: Handler) -> Handler:
        scope = self.scope(method)
        return handler if scope is None else wrap_handler(handler, scope)


class Malformed:
    """What the deserializer returns for bytes that are not the request message."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error

    def raise_invalid(self) -> None:
        raise InvalidArgument(
            [], "the request body is not a valid protobuf message of the method's request type"
        ) from self.error


class TolerantDeserializer:
    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[bytes], Any]) -> None:
        self._parse = parse

    def __call__(self, data: bytes) -> Any:
        try:
            return self._parse(data)
        except DecodeError as error:
            return Malformed(error)


def wrap_handler(
    handler: Handler, scope: Scope, *, sent: Count | None = None, received: Count | None = None
) -> Handler:
    """``handler`` with each call inside ``scope``; ``sent`` is called for each message
    a response stream yields, ``received`` for each one read from a request stream."""
    deserializer = handler.request_deserializer
    innermost = False
    if deserializer is not None and not isinstance(deserializer, TolerantDeserializer):
        deserializer = TolerantDeserializer(deserializer)
        innermost = True
    for kind, factory in _FACTORIES.items():
        behavior = getattr(handler, kind)
        if behavior is not None:
            check = ("stream" if kind.startswith("stream") else "unary") if innermost else None
            counts = received if kind.startswith("stream") else None
            wrapped = _wrap(
                behavior, scope, streams=kind.endswith("stream"), check=check, sent=sent
            )
            if counts is not None:
                wrapped = _counting_requests(wrapped, counts)
            return factory(
                wrapped,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler  # pragma: no cover - grpc always sets one behavior


def _checked(request: Any, check: str | None) -> Any:
    """The request, with any Malformed message raised as INVALID_ARGUMENT."""
    if check == "unary" and isinstance(request, Malformed):
        request.raise_invalid()
    if check == "stream":
        return checked_stream(request)
    return request


async def checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Malformed):
            request.raise_invalid()
        yield request


def _wrap(
    behavior: Callable[..., Any],
    scope: Scope,
    *,
    streams: bool,
    check: str | None,
    sent: Count | None = None,
) -> Callable[..., Any]:
    if streams and inspect.isasyncgenfunction(behavior):
        if sent is not None:
            return _counting_responses(behavior, scope, check, sent)

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with scope(context):
                async for response in behavior(_checked(request, check), context):
                    yield response

        return stream

    async def call(request: Any, context: Context) -> Any:
        async with scope(context):
            return await behavior(_checked(request, check), context)

    return call


def _counting_responses(
    behavior: Callable[..., Any], scope: Scope, check: str | None, sent: Count
) -> Callable[..., Any]:
    async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
        async with scope(context):
            async for response in behavior(_checked(request, check), context):
                yield response
                sent()  # grpc took it: the generator resumes once the message is written

    return stream


def _counting_requests(behavior: Callable[..., Any], received: Count) -> Callable[..., Any]:
    async def counted(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            received()
            yield request

    return with_requests(behavior, counted)


def with_requests(
    behavior: Callable[..., Any],
    transform: Callable[[AsyncIterator[Any]], AsyncIterator[Any]],
) -> Callable[..., Any]:
    """A streaming-request behavior whose request stream first passes ``transform``."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for response in behavior(transform(requests), context):
                yield response

        return stream

    async def call(requests: AsyncIterator[Any], context: Context) -> Any:
        return await behavior(transform(requests), context)

    return call


DEADLINE_SLACK = 0.1
"""Seconds before the server's deadline within which a cancellation counts as it."""


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with, given what escaped it (None when it returned).

    A cancellation is the caller's deadline or the caller going away; so is a
    response stream closed while it waited at a ``yield`` (GeneratorExit). A client
    cancels at its deadline, which it counts from when it sent the call: the
    cancellation reaches the server up to a transit time before the server's own
    count of the deadline ends, so one that close to it is the deadline.
    """
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    code: object = context.code()  # None until a status is set
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


def metadata_value(context: Context, key: str) -> str | None:
    """The first value of a metadata key (keys arrive lower-cased)."""
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def call_is_over(context: Context) -> bool:
    """The caller is gone (cancelled, or its deadline passed): nothing can be sent."""
    remaining = context.time_remaining()
    return bool(context.cancelled()) or (remaining is not None and remaining <= 0)
