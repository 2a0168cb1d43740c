"""Domain errors, each knowing its gRPC status code.

::

    TaskgateError                   INTERNAL (never raised as such)
    ├── InvalidArgument             INVALID_ARGUMENT, with field violations
    ├── Unauthenticated             UNAUTHENTICATED
    ├── NotFound                    NOT_FOUND
    ├── AlreadyExists               ALREADY_EXISTS
    ├── FailedPrecondition          FAILED_PRECONDITION
    ├── ResourceExhausted           RESOURCE_EXHAUSTED, with a retry delay (and quota violations)
    │   └── QuotaExceeded           ... a limit on what is held at once (google.rpc.QuotaFailure)
    ├── MessageTooLarge             RESOURCE_EXHAUSTED (a request past its method's limit)
    ├── Unavailable                 UNAVAILABLE (Postgres or Redis unreachable)
    ├── DeadlineExceeded            DEADLINE_EXCEEDED (the caller's deadline came first)
    └── Unimplemented               UNIMPLEMENTED

Services raise these; one interceptor (``server.interceptors.errors``) turns
them into statuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``filters[2].blur.radius``) and why."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One quota a request ran into (a google.rpc.QuotaFailure violation)."""

    subject: str
    description: str


class TaskgateError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(TaskgateError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        if message is None:
            message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message)
        self.violations = violations

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class Unauthenticated(TaskgateError):
    code = grpc.StatusCode.UNAUTHENTICATED


class NotFound(TaskgateError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TaskgateError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(TaskgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(TaskgateError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self, message: str, *, retry_after: float, quota: tuple[QuotaViolation, ...] = ()
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.quota = quota


class QuotaExceeded(ResourceExhausted):
    """A limit on what is held at once (calls in flight, a user's streams) was reached.

    ``subject`` names whose quota it is (``user:<id>``, ``server``), ``description``
    which quota and its size: the google.rpc.QuotaFailure violation of the status.
    """

    def __init__(self, message: str, *, subject: str, description: str, retry_after: float) -> None:
        violation = QuotaViolation(subject, description)
        super().__init__(message, retry_after=retry_after, quota=(violation,))
        self.subject = subject
        self.description = description


class MessageTooLarge(TaskgateError):
    """A request larger than its method accepts: retrying cannot help, so no delay."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(TaskgateError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(TaskgateError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(TaskgateError):
    code = grpc.StatusCode.UNIMPLEMENTED
