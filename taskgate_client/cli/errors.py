"""Exit statuses, one per kind of failure, and the one-line message for each."""

from __future__ import annotations

from enum import IntEnum

import grpc

from taskgate_client.transport import rpc_status


class Exit(IntEnum):
    OK = 0
    SERVER_ERROR = 1  # the server failed (INTERNAL, UNKNOWN, DATA_LOSS...)
    USAGE = 2  # bad arguments or filter syntax: nothing was sent
    UNREACHABLE = 3  # no server at the address, or no answer in time
    NOT_LOGGED_IN = 4  # no session, or an expired or unknown one
    NOT_FOUND = 5  # no such task (or not yours)
    REJECTED = 6  # the server refused the request (invalid, exists, not ready, limits)
    TASK_FAILED = 7  # the task ended failed or cancelled (--wait, watch)
    LOCAL_FILE = 8  # an image could not be read, or a result not written


class CliError(Exception):
    def __init__(self, status: Exit, message: str) -> None:
        super().__init__(message)
        self.status = status


_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: Exit.UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Exit.UNREACHABLE,
    grpc.StatusCode.UNAUTHENTICATED: Exit.NOT_LOGGED_IN,
    grpc.StatusCode.PERMISSION_DENIED: Exit.NOT_LOGGED_IN,
    grpc.StatusCode.NOT_FOUND: Exit.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: Exit.REJECTED,
    grpc.StatusCode.ALREADY_EXISTS: Exit.REJECTED,
    grpc.StatusCode.FAILED_PRECONDITION: Exit.REJECTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Exit.REJECTED,
    grpc.StatusCode.OUT_OF_RANGE: Exit.REJECTED,
    grpc.StatusCode.ABORTED: Exit.REJECTED,
}


def from_rpc(error: grpc.RpcError, server: str) -> CliError:
    code, details = rpc_status(error)
    status = _BY_CODE.get(code, Exit.SERVER_ERROR)
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach the server at {server}: {details}"
        if "handshake" in details.lower():
            message += " (TLS: check --tls, --ca-file, --cert-file/--key-file, --server-name)"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"no answer from {server} in time (--timeout)"
    elif status == Exit.NOT_LOGGED_IN:
        message = f"{details} (run: taskgate login USERNAME)"
    else:
        message = details
    return CliError(status, " ".join(message.split()))
