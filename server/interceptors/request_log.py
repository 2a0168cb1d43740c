"""Request ids and the access log: one JSON line per call.

The request id comes from the ``x-request-id`` metadata (when it is sane) or
is made here; it is bound for the logs of the call and sent back in the
initial metadata. The caller's deadline is bound too, for the storage layer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid

import grpc

from server import context as call_context
from server.client_address import ClientAddresses
from server.interceptors.wrap import (
    Context,
    Scope,
    ScopedInterceptor,
    call_is_over,
    final_code,
    metadata_value,
)

log = logging.getLogger("taskgate.access")

REQUEST_ID_KEY = "x-request-id"
FORWARDED_FOR_KEY = "x-forwarded-for"
# Probed every few seconds by orchestrators: logged at debug level unless they fail.
QUIET_METHODS = frozenset(
    {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List"}
)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(value: str | None) -> str:
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestLogInterceptor(ScopedInterceptor):
    def __init__(
        self,
        *,
        quiet: frozenset[str] = QUIET_METHODS,
        client_addresses: ClientAddresses | None = None,
    ) -> None:
        super().__init__()
        self._quiet = quiet
        self._addresses = client_addresses or ClientAddresses()

    def scope(self, method: str) -> Scope:
        return functools.partial(_Logged, method, method in self._quiet, self._addresses)


class _Logged:
    """Binds the request id, deadline and client address; logs the call's outcome."""

    __slots__ = (
        "_addresses",
        "_context",
        "_method",
        "_peer",
        "_quiet",
        "_request_id",
        "_started",
    )

    def __init__(
        self, method: str, quiet: bool, addresses: ClientAddresses, context: Context
    ) -> None:
        self._method = method
        self._quiet = quiet
        self._addresses = addresses
        self._context = context
        self._started = time.perf_counter()
        self._request_id = request_id_from(metadata_value(context, REQUEST_ID_KEY))
        # Read while the call is alive: grpc.aio's peer() on a call the client has
        # cancelled reads freed core memory and can crash the process (SIGSEGV).
        self._peer: str = context.peer()

    async def __aenter__(self) -> None:
        call_context.request_id.set(self._request_id)
        call_context.client_address.set(
            self._addresses.resolve(self._peer, metadata_value(self._context, FORWARDED_FOR_KEY))
        )
        remaining = self._context.time_remaining()
        if remaining is not None:
            call_context.deadline.set(asyncio.get_running_loop().time() + remaining)
        try:
            await self._context.send_initial_metadata(((REQUEST_ID_KEY, self._request_id),))
        except asyncio.CancelledError:
            self._over_before_it_began()
            raise
        except Exception:
            if not call_is_over(self._context):
                raise
            self._over_before_it_began()
            raise asyncio.CancelledError from None

    def _over_before_it_began(self) -> None:
        """The caller's deadline passed (or it cancelled) before the call began: an
        ordinary client decision, not a server error. The call ends as cancelled,
        logged like every call the metrics count (``__aexit__`` does not run for it)."""
        self._log(logging.INFO, final_code(self._context, asyncio.CancelledError()))

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        code = final_code(self._context, error)
        level = logging.DEBUG if self._quiet and code == grpc.StatusCode.OK else logging.INFO
        if log.isEnabledFor(level):
            self._log(level, code)

    def _log(self, level: int, code: grpc.StatusCode) -> None:
        user = call_context.user_id.get()
        log.log(
            level,
            "%s %s",
            self._method,
            code.name,
            extra={
                "fields": {
                    "method": self._method,
                    "code": code.name,
                    "duration_ms": round((time.perf_counter() - self._started) * 1000, 3),
                    "peer": self._peer,
                    "client": call_context.client_address.get(),
                    "request_id": self._request_id,
                    "user_id": None if user is None else str(user),
                }
            },
        )
