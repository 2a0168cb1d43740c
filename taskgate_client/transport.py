"""How a client reaches the server: channel credentials, options, retry policy.

The session token travels as call credentials (``authorization: Bearer …``).
gRPC sends call credentials only over a channel it considers secure enough:

- TLS: ``tls=True`` verifies the server against the system's roots,
  ``tls=TlsFiles(ca_file=...)`` against your CA (and presents a client
  certificate to a server that requires one: ``cert_file``, ``key_file``), or
  pass your own ``grpc.ssl_channel_credentials``. ``server_name`` is the name
  to expect in the server's certificate when the target's host is not in it;
- a loopback address (127.0.0.1, ::1, localhost) with
  ``grpc.local_channel_credentials()``, which needs no TLS on the server;
- anything else without TLS: gRPC refuses call credentials there ("Established
  channel does not have a sufficient security level to transfer call
  credential"), so the token is sent as plain ``authorization`` metadata —
  only for networks you trust, as with any plaintext connection.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from taskgate_runtime.tls import TlsFile, TlsFileError, read_ca, read_key_pair

SERVICES = ("taskgate.v1.UserService", "taskgate.v1.SessionService", "taskgate.v1.TaskService")
DEFAULT_TARGET = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def retry_service_config(max_attempts: int = 4) -> str:
    """A service config retrying UNAVAILABLE (nothing was processed) with backoff.

    Every RPC may be retried: reads are safe, CreateUser and CreateSession
    fail cleanly on a repeat, and the clients give CreateTask an idempotency key.
    """
    policy = {
        "maxAttempts": max_attempts,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    config = {
        "methodConfig": [
            {"name": [{"service": service} for service in SERVICES], "retryPolicy": policy}
        ]
    }
    return json.dumps(config)


def is_loopback(target: str) -> bool:
    host = target.rpartition(":")[0].strip("[]") if ":" in target else target
    host = host.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TlsFiles:
    """TLS from PEM files: the CA that signed the server (None: the system's roots),
    and a client certificate with its key for servers that require one (mTLS)."""

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the files; TlsFileError (a ConfigError) names the one that is unusable."""
        if (self.cert_file is None) != (self.key_file is None):
            raise TlsFileError("a client certificate needs both cert_file and key_file")
        ca = None if self.ca_file is None else read_ca(TlsFile("CA file", Path(self.ca_file)))
        pair = None
        if self.cert_file is not None and self.key_file is not None:
            pair = read_key_pair(
                TlsFile("client certificate", Path(self.cert_file)),
                TlsFile("client key", Path(self.key_file)),
            )
        return grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=None if pair is None else pair.private_key,
            certificate_chain=None if pair is None else pair.certificate_chain,
        )


@dataclass(frozen=True)
class Transport:
    """Where the server is and how to reach it."""

    target: str = DEFAULT_TARGET
    tls: bool | TlsFiles | grpc.ChannelCredentials = False
    max_attempts: int = 4
    server_name: str | None = None

    @property
    def carries_call_credentials(self) -> bool:
        return bool(self.tls) or is_loopback(self.target)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """None: a plaintext channel (the token then goes as metadata)."""
        if isinstance(self.tls, grpc.ChannelCredentials):
            return self.tls
        if isinstance(self.tls, TlsFiles):
            return self.tls.credentials()
        if self.tls:
            return grpc.ssl_channel_credentials()
        if is_loopback(self.target):
            return grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        return None

    def options(self) -> Sequence[tuple[str, Any]]:
        name = (
            []
            if self.server_name is None
            else [("grpc.ssl_target_name_override", self.server_name)]
        )
        return [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry_service_config(self.max_attempts)),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            *name,
        ]

    def sync_channel(self) -> grpc.Channel:
        creds = self.channel_credentials()
        if creds is None:
            return grpc.insecure_channel(self.target, options=self.options())
        return grpc.secure_channel(self.target, creds, options=self.options())

    def aio_channel(self) -> grpc.aio.Channel:
        creds = self.channel_credentials()
        if creds is None:
            return grpc.aio.insecure_channel(self.target, options=self.options())
        return grpc.aio.secure_channel(self.target, creds, options=self.options())


def rpc_status(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The code and details of a failed call (the stubs raise ``RpcError`` that is a ``Call``)."""
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    status = code() if callable(code) else grpc.StatusCode.UNKNOWN
    text = details() if callable(details) else None
    return status, text or status.name


@dataclass(frozen=True)
class Auth:
    """The session token, as call credentials where gRPC allows them, else as metadata."""

    token: str | None
    as_call_credentials: bool

    def credentials(self) -> grpc.CallCredentials | None:
        if self.token and self.as_call_credentials:
            return grpc.access_token_call_credentials(self.token)
        return None

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        if self.token and not self.as_call_credentials:
            return (("authorization", f"Bearer {self.token}"),)
        return None
