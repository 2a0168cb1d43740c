"""Reading requests: per-method size limits, and nothing read before auth.

grpc.aio reads a unary request whole before any interceptor code runs, and its
only size limit is server-wide (the largest message: an image upload). So an
anonymous client could make the server hold a 10 MiB message per call on any
method. This interceptor, the innermost, changes that:

- Every unary-request handler is served as a request-streaming one, and the
  one request is read here, inside the outer scopes: after authentication.
  A call that fails auth is answered without its request ever being read;
  until it is read, a call holds at most one HTTP/2 stream window of it
  (see :mod:`server.transport`).
- Each method has a size limit (``limits``, else ``default_limit``), checked
  on the raw bytes before parsing: past it the call is RESOURCE_EXHAUSTED, as
  grpc answers past its own limit. Bytes that do not parse are INVALID_ARGUMENT.
- Requests of methods that need no session are read at most
  ``unauthenticated_reads`` at a time, so what anonymous calls make the server
  hold at once is bounded by that many server-wide-limit messages, however many
  calls there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from server.errors import InvalidArgument, MessageTooLarge
from server.interceptors.wrap import (
    Context,
    Handler,
    HandlerWrapper,
    Malformed,
    TolerantDeserializer,
    checked_stream,
    with_requests,
)


class TooLarge(Malformed):
    """What the deserializer returns for a request past its method's limit."""

    __slots__ = ("limit", "size")

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit

    def raise_invalid(self) -> None:
        raise MessageTooLarge(
            f"the request is {self.size} bytes; this method accepts at most {self.limit}"
        )


class _LimitedDeserializer(TolerantDeserializer):
    __slots__ = ("_limit",)

    def __init__(self, parse: Callable[[bytes], Any], limit: int) -> None:
        super().__init__(parse)
        self._limit = limit

    def __call__(self, data: bytes) -> Any:
        if len(data) > self._limit:
            return TooLarge(len(data), self._limit)
        return super().__call__(data)


Read = Callable[[Context], Awaitable[Any]]


class RequestReader(HandlerWrapper):
    def __init__(
        self,
        *,
        default_limit: int,
        limits: Mapping[str, int],
        unauthenticated: frozenset[str],
        unauthenticated_reads: int,
    ) -> None:
        self._default_limit = default_limit
        self._limits = limits
        self._unauthenticated = unauthenticated
        self._gate = asyncio.Semaphore(unauthenticated_reads)
        super().__init__()

    def wrap(self, method: str, handler: Handler) -> Handler:
        if handler.request_deserializer is None:  # pragma: no cover - generated code sets one
            return handler
        limit = self._limits.get(method, self._default_limit)
        deserializer = _LimitedDeserializer(handler.request_deserializer, limit)
        serializer = handler.response_serializer
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _checking(handler.stream_unary), deserializer, serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _checking(handler.stream_stream), deserializer, serializer
            )
        read = self._gated_read if method in self._unauthenticated else _read
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _reading(handler.unary_unary, read), deserializer, serializer
            )
        assert handler.unary_stream is not None  # grpc always sets one behavior
        return grpc.stream_stream_rpc_method_handler(
            _reading(handler.unary_stream, read), deserializer, serializer
        )

    async def _gated_read(self, context: Context) -> Any:
        async with self._gate:
            return await _read(context)


async def _read(context: Context) -> Any:
    request = await context.read()
    if request is grpc.aio.EOF:
        raise InvalidArgument([], "the call ended before its request message")
    if isinstance(request, Malformed):
        request.raise_invalid()
    return request


def _reading(behavior: Callable[..., Any], read: Read) -> Callable[..., Any]:
    """A unary-request behavior as a streaming-request one that reads its request."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(requests: object, context: Context) -> AsyncIterator[Any]:
            request = await read(context)
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response

        return stream

    async def call(requests: object, context: Context) -> Any:
        return await behavior(await read(context), context)

    return call


def _checking(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """A streaming-request behavior whose requests raise when malformed or too large."""
    return with_requests(behavior, checked_stream)
