"""Domain errors → gRPC statuses, in one place.

A :class:`~server.errors.TaskgateError` becomes its status code and message,
with google.rpc details where they help (BadRequest field violations,
RetryInfo). Anything else is a bug: the client gets INTERNAL with a generic
message, and the traceback goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from server.errors import InvalidArgument, ResourceExhausted, TaskgateError
from server.interceptors.wrap import Context, Continuation, Handler, wrap_handler

log = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"
INTERNAL_MESSAGE = (
    "internal error; the request id in the response metadata identifies it in the logs"
)


def status_details(error: TaskgateError) -> list[any_pb2.Any]:
    details = []
    if isinstance(error, InvalidArgument):
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


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        return None if handler is None else wrap_handler(handler, self._scope)

    @asynccontextmanager
    async def _scope(self, context: Context) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except TaskgateError as error:
            if error.code != grpc.StatusCode.INTERNAL:
                await abort_with(context, error)
            log.exception("internal error")
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        except Exception:
            log.exception("unexpected error")
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
