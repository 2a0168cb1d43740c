"""gRPC statuses → HTTP statuses and grpc-gateway's JSON error body.

The body is the ``google.rpc.Status`` in protobuf JSON::

    {"code": 3, "message": "username: ...",
     "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", ...}]}

with the details taken from the ``grpc-status-details-bin`` trailer. The HTTP
status follows grpc-gateway v2's ``HTTPStatusFromCode``. Errors of the gateway
itself use the same body: an unknown path is NOT_FOUND (404), a known path with
the wrong method is UNIMPLEMENTED "Method Not Allowed" (501, as grpc-gateway
answers), a request that does not transcode is INVALID_ARGUMENT (400), a
malformed escape in a path value is UNKNOWN with HTTP 400 (as grpc-gateway's
mux answers it), a body over the limit is RESOURCE_EXHAUSTED with HTTP 413, and
a header line over the limit RESOURCE_EXHAUSTED with HTTP 431 (the status Go's
net/http gives).

Details are written as grpc-gateway writes them (protojson with
``EmitUnpopulated``): every field, an unset message field as ``null``
(``"localizedMessage": null`` in a ``BadRequest.FieldViolation``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2, status_pb2

from gateway.transcode import SPECIAL_JSON_TYPES, dumps, to_dict

log = logging.getLogger(__name__)

# Imported for its side effect as well: the google.rpc detail types must be in
# the descriptor pool for their "@type" to be written out in JSON.
assert error_details_pb2.BadRequest

STATUS_DETAILS_KEY = "grpc-status-details-bin"
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
WWW_AUTHENTICATE = 'Bearer realm="taskgate"'


def code_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


@dataclass
class GatewayError(Exception):
    """An error answered with the JSON error body."""

    code: grpc.StatusCode
    message: str
    details: list[any_pb2.Any] = field(default_factory=list)
    http_status: int | None = None  # None: from the code
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 500) if self.http_status is None else self.http_status

    def status_dict(self) -> dict[str, Any]:
        return {
            "code": code_number(self.code),
            "message": self.message,
            "details": [detail_dict(d) for d in self.details],
        }

    def body(self) -> bytes:
        return dumps(self.status_dict())

    def response_headers(self) -> dict[str, str]:
        if self.code == grpc.StatusCode.UNAUTHENTICATED:
            return {"WWW-Authenticate": WWW_AUTHENTICATE, **self.headers}
        return self.headers


def detail_dict(detail: any_pb2.Any) -> dict[str, Any]:
    """A detail as protobuf JSON; one of a type unknown here keeps its bytes in base64."""
    name = detail.type_url.rpartition("/")[2]
    try:
        message_type = descriptor_pool.Default().FindMessageTypeByName(name)
        message = message_factory.GetMessageClass(message_type)()
        message.ParseFromString(detail.value)
    except Exception:  # an unknown type or bytes that do not parse: kept as they came
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}
    value = to_dict(message)
    if message.DESCRIPTOR.full_name in SPECIAL_JSON_TYPES:
        return {"@type": detail.type_url, "value": value}  # a well-known type, as protojson
    return {"@type": detail.type_url, **value}


def _rich_details(
    trailing: Iterable[tuple[str, str | bytes]] | None, code: grpc.StatusCode
) -> list[any_pb2.Any]:
    for key, value in trailing or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a malformed trailer must not hide the error itself
            log.warning("unparsable %s trailer", STATUS_DETAILS_KEY)
            return []
        if status.code == code_number(code):
            return list(status.details)
    return []


def from_rpc_error(error: grpc.aio.AioRpcError) -> GatewayError:
    code = error.code()
    return GatewayError(
        code=code,
        message=error.details() or "",
        details=_rich_details(error.trailing_metadata(), code),
    )


def not_found() -> GatewayError:
    return GatewayError(grpc.StatusCode.NOT_FOUND, "Not Found")


def method_not_allowed() -> GatewayError:
    return GatewayError(grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed")


def invalid_argument(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message)


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the request body is larger than {limit} bytes",
        http_status=413,
    )


def malformed_path(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.UNKNOWN, message, http_status=400)


def header_too_large(name: str, limit: int) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the header {name} is longer than {limit} bytes",
        http_status=431,
    )


def internal() -> GatewayError:
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        "internal error; the X-Request-Id of the response identifies it in the gateway's log",
    )
