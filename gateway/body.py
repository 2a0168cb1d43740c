"""Request bodies: read whole into one buffer, within budgets of bytes held, and in time.

A body must be held whole before it can be transcoded (one JSON value into one
protobuf message: there is nothing to stream upstream), so what the gateway
holds for requests it has not answered yet is bounded instead:

- each body by ``max_bytes`` (413, as before);
- all bodies held at once by :class:`BodyBudget`'s ``total``, and those of
  requests without credentials (no ``Authorization`` header, no
  ``Grpc-Metadata-Authorization``) by its smaller ``anonymous`` share. A body is
  counted from its declared ``Content-Length`` before a byte of it is read (a
  chunked or compressed body, as it arrives), and stays counted until its
  request has been answered: its message is held until then. Past a budget the
  request is refused at once, unread: 503 UNAVAILABLE with ``Retry-After`` and a
  ``google.rpc.RetryInfo`` (the budget is everybody's: the gateway is busy, the
  client did nothing wrong). A body that could never fit the anonymous share is
  a 413 for a request without credentials.
- a body must have arrived ``time_limit`` seconds after its request's head did,
  else 408 (a slow or stalled client holds its share of the budget no longer).

A declared length is read into one buffer of exactly that size: no growing
copies, so a body costs its size once while it is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType

import grpc
from aiohttp import StreamReader, web
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2

from gateway import errors
from gateway.errors import GatewayError

RETRY_AFTER_S = 1  # bodies are answered within a second or two on a sound connection
CREDENTIALS = ("Authorization", "Grpc-Metadata-Authorization")


def has_credentials(headers: Mapping[str, str]) -> bool:
    return any(name in headers for name in CREDENTIALS)


def busy(budget: str, size: int) -> GatewayError:
    delay = duration_pb2.Duration(seconds=RETRY_AFTER_S)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        f"the gateway holds as many request bodies as it may ({budget}: {size} bytes); "
        "try again shortly",
        details=[detail],
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def too_large_without_credentials(limit: int) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"a request without credentials may carry a body of at most {limit} bytes",
        http_status=413,
    )


def too_slow(timeout: float) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the request body did not arrive within {timeout:g}s",
        http_status=408,
    )


class BodyBudget:
    """Bytes of request bodies held at once: by all requests, and by those without
    credentials (one event loop: no lock)."""

    def __init__(self, *, total: int, anonymous: int) -> None:
        self.total = total
        self.anonymous = anonymous
        self.held = 0
        self.held_anonymous = 0

    def reservation(self, *, anonymous: bool) -> Reservation:
        return Reservation(self, anonymous=anonymous)


class Reservation:
    """One request's bytes against the budgets; given back when the ``with`` ends."""

    __slots__ = ("_anonymous", "_budget", "size")

    def __init__(self, budget: BodyBudget, *, anonymous: bool) -> None:
        self._budget = budget
        self._anonymous = anonymous
        self.size = 0

    def grow(self, size: int) -> None:
        """``size`` bytes more, or the refusal (a GatewayError) when a budget is spent."""
        budget = self._budget
        if self._anonymous:
            if self.size + size > budget.anonymous:
                raise too_large_without_credentials(budget.anonymous)
            if budget.held_anonymous + size > budget.anonymous:
                raise busy("requests without credentials", budget.anonymous)
        if budget.held + size > budget.total:
            raise busy("all requests", budget.total)
        budget.held += size
        if self._anonymous:
            budget.held_anonymous += size
        self.size += size

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._budget.held -= self.size
        if self._anonymous:
            self._budget.held_anonymous -= self.size
        self.size = 0


async def read_body(
    request: web.Request, reservation: Reservation, *, max_bytes: int, time_limit: float
) -> bytearray:
    """The whole body, counted in ``reservation``; 413, 503 or 408 as above."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise errors.too_large(max_bytes)
    if "Content-Encoding" in request.headers:
        declared = None  # the length on the wire is not the length inflated
    try:
        async with asyncio.timeout(time_limit):
            if declared is not None:
                return await _read_declared(request.content, declared, reservation)
            return await _read_streamed(request.content, max_bytes, reservation)
    except TimeoutError:
        raise too_slow(time_limit) from None


async def _read_declared(content: StreamReader, size: int, reservation: Reservation) -> bytearray:
    reservation.grow(size)  # before a byte is read
    body = bytearray(size)
    done = 0
    with memoryview(body) as view:
        while done < size:
            chunk = await content.readany()
            if not chunk:
                raise errors.invalid_argument("the request body is shorter than its Content-Length")
            end = min(size, done + len(chunk))
            view[done:end] = chunk[: end - done]
            done = end
    return body


async def _read_streamed(
    content: StreamReader, max_bytes: int, reservation: Reservation
) -> bytearray:
    body = bytearray()
    async for chunk in content.iter_any():
        if len(body) + len(chunk) > max_bytes:
            raise errors.too_large(max_bytes)
        reservation.grow(len(chunk))
        body += chunk
    return body
