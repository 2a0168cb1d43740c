"""The gateway's settings: one model, read once from the environment
(``TASKGATE_GATEWAY_*`` and the shared ``TASKGATE_LOG_*``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

from taskgate_runtime.settings import (
    Address,
    ConfigError,
    Count,
    Duration,
    LoggingSettings,
    OptionalDuration,
    OptionalPath,
    OptionalText,
    metrics_addr,
)

MIN_MESSAGE_BYTES = 64 * 1024 * 1024
"""The channel accepts results this large from the server, whatever the body limit."""


def parse_origins(text: str) -> tuple[str, ...]:
    """A comma-separated list of origins (``https://app.example.com``) or ``*``."""
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and "://" not in origin:
            raise ValueError(f"not an origin: {origin!r} (use scheme://host[:port] or *)")
    return origins


def _origins(value: Any) -> Any:
    return parse_origins(value) if isinstance(value, str) else value


Origins = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_origins)]


def _gateway(name: str, default: Any) -> Any:
    return Field(default=default, validation_alias=f"TASKGATE_GATEWAY_{name}")


class Settings(LoggingSettings):
    """Everything ``python -m gateway`` reads from its environment."""

    addr: Address = _gateway("ADDR", "127.0.0.1:8080")
    upstream: Address = _gateway("UPSTREAM", "127.0.0.1:50051")
    metrics_addr: Address = metrics_addr("TASKGATE_GATEWAY_METRICS_ADDR", "127.0.0.1:9466")
    cors_origins: Origins = _gateway("CORS_ORIGINS", ())
    max_body_bytes: Count = _gateway("MAX_BODY_BYTES", 14 * 1024 * 1024)
    default_timeout: Duration = _gateway("DEFAULT_TIMEOUT", 30.0)
    stream_timeout: OptionalDuration = _gateway("STREAM_TIMEOUT", 3600.0)
    sse_keepalive: Duration = _gateway("SSE_KEEPALIVE", 15.0)
    header_timeout: Duration = _gateway("HEADER_TIMEOUT", 10.0)
    body_timeout: Duration = _gateway("BODY_TIMEOUT", 60.0)
    body_budget_bytes: Count = _gateway("BODY_BUDGET_BYTES", 64 * 1024 * 1024)
    anonymous_body_budget_bytes: Count = _gateway("ANONYMOUS_BODY_BUDGET_BYTES", 16 * 1024 * 1024)

    # TLS to the server: on when UPSTREAM_TLS is true or any upstream file is set.
    upstream_tls: bool = _gateway("UPSTREAM_TLS", False)
    upstream_ca_file: OptionalPath = _gateway("UPSTREAM_CA_FILE", None)
    upstream_cert_file: OptionalPath = _gateway("UPSTREAM_CERT_FILE", None)
    upstream_key_file: OptionalPath = _gateway("UPSTREAM_KEY_FILE", None)
    upstream_server_name: OptionalText = _gateway("UPSTREAM_SERVER_NAME", None)
    # HTTPS for its own clients: on when both are set (reloaded when they change).
    tls_cert_file: OptionalPath = _gateway("TLS_CERT_FILE", None)
    tls_key_file: OptionalPath = _gateway("TLS_KEY_FILE", None)

    @property
    def upstream_uses_tls(self) -> bool:
        files = (self.upstream_ca_file, self.upstream_cert_file)
        return self.upstream_tls or any(f is not None for f in files)

    @property
    def https(self) -> bool:
        return self.tls_cert_file is not None

    def check(self) -> None:
        super().check()
        if self.body_budget_bytes < self.max_body_bytes:
            raise ConfigError(
                f"{self.variable('body_budget_bytes')}: must be at least "
                f"{self.variable('max_body_bytes')} (else no body of that size could be read)"
            )
        self.require_at_most("anonymous_body_budget_bytes", "body_budget_bytes")
        self.require_together("upstream_cert_file", "upstream_key_file")
        self.require_together("tls_cert_file", "tls_key_file")

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC message the channel accepts from the server."""
        return max(self.max_body_bytes, MIN_MESSAGE_BYTES)
