"""Domain errors → gRPC statuses, in one place.

A :class:`~server.errors.TaskgateError` becomes its status code and message,
with google.rpc details where they help (BadRequest field violations,
RetryInfo, QuotaFailure). Anything else is a bug: the client gets INTERNAL
with a generic message, and the traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from server.errors import InvalidArgument, ResourceExhausted, TaskgateError
from server.interceptors.wrap import Context, Scope, ScopedInterceptor, call_is_over

log = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"
INTERNAL_MESSAGE = (
    "internal error; the request id in the response metadata identifies it in the logs"
)


def status_details(error: TaskgateError) -> list[any_pb2.Any]:
    details = []
    if isinstance(error, InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    elif isinstance(error, ResourceExhausted):
        if error.quota:
            quota = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=v.subject, description=v.description
                    )
                    for v in error.quota
                ]
            )
            details.append(_pack(quota))
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return details


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


async def abort_with(context: Context, error: TaskgateError) -> None:
    details = status_details(error)
    trailing: tuple[tuple[str, str | bytes], ...] = ()
    if details:
        status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
        trailing = ((STATUS_DETAILS_KEY, status.SerializeToString()),)
    await context.abort(error.code, error.message, trailing)


class ErrorInterceptor(ScopedInterceptor):
    def scope(self, method: str) -> Scope:
        return _ErrorsMapped


class _ErrorsMapped:
    """Turns what escapes the call into a status: its own, or a generic INTERNAL."""

    __slots__ = ("_context",)

    def __init__(self, context: Context) -> None:
        self._context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> bool:
        if error is None or not isinstance(error, Exception):
            return False  # success, or cancellation: nothing to map
        if isinstance(error, grpc.aio.AbortError):
            return False
        if call_is_over(self._context):
            # The caller's deadline passed or it went away: no status can reach it,
            # and its own decision is no server error. End the call as cancelled.
            log.debug("call over before its outcome was sent: %r", error)
            raise asyncio.CancelledError from None
        if isinstance(error, TaskgateError) and error.code != grpc.StatusCode.INTERNAL:
            await abort_with(self._context, error)
        log.error("internal error", exc_info=error)
        await self._context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)  # raises
