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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from server import context as call_context
from server.interceptors.wrap import Context, Continuation, Handler, metadata_value, wrap_handler

log = logging.getLogger("taskgate.access")

REQUEST_ID_KEY = "x-request-id"
# Probed every few seconds by orchestrators: logged at debug level unless they fail.
QUIET_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(value: str | None) -> str:
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    code: object = context.code()  # None until a status is set
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class RequestLogInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, *, quiet: frozenset[str] = QUIET_METHODS) -> None:
        self._quiet = quiet

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, functools.partial(self._logged, handler_call_details.method))

    @asynccontextmanager
    async def _logged(self, method: str, context: Context) -> AsyncIterator[None]:
        started = time.perf_counter()
        request_id = request_id_from(metadata_value(context, REQUEST_ID_KEY))
        call_context.request_id.set(request_id)
        remaining = context.time_remaining()
        if remaining is not None:
            call_context.deadline.set(asyncio.get_running_loop().time() + remaining)
        await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            code = final_code(context, error)
            quiet = code == grpc.StatusCode.OK and method in self._quiet
            level = logging.DEBUG if quiet else logging.INFO
            if log.isEnabledFor(level):
                self._log(level, method, code, context, request_id, started)

    @staticmethod
    def _log(
        level: int,
        method: str,
        code: grpc.StatusCode,
        context: Context,
        request_id: str,
        started: float,
    ) -> None:
        log.log(
            level,
            "%s %s",
            method,
            code.name,
            extra={
                "fields": {
                    "method": method,
                    "code": code.name,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "peer": context.peer(),
                    "request_id": request_id,
                    "user_id": str(call_context.user_id.get() or "") or None,
                }
            },
        )
