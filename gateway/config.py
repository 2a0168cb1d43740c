"""Gateway settings, read once from the environment (``TASKGATE_GATEWAY_*``).

Values are cast explicitly; a bad one fails at start-up with the variable named.
The parsers are the server's (:mod:`server.config`), so durations and addresses
read the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from server.config import ConfigError, Env, check_addrs, check_logging, parse_duration

_T = TypeVar("_T")


def parse_origins(text: str) -> tuple[str, ...]:
    """A comma-separated list of origins (``https://app.example.com``) or ``*``."""
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and "://" not in origin:
            raise ValueError(f"not an origin: {origin!r} (use scheme://host[:port] or *)")
    return origins


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _non_negative_duration(text: str) -> float:
    value = parse_duration(text)
    if value < 0:  # pragma: no cover - parse_duration has no sign
        raise ValueError("must not be negative")
    return value


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the gateway reads from its environment."""

    addr: str = "127.0.0.1:8080"
    upstream: str = "127.0.0.1:50051"
    metrics_addr: str = "127.0.0.1:9466"
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 14 * 1024 * 1024
    default_timeout: float = 30.0
    stream_timeout: float = 3600.0
    sse_keepalive: float = 15.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    body_budget_bytes: int = 64 * 1024 * 1024
    anonymous_body_budget_bytes: int = 16 * 1024 * 1024
    log_level: str = "info"
    log_format: str = "json"

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC message the channel accepts from the server."""
        return max(self.max_body_bytes, 64 * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        get = Env(os.environ if environ is None else environ).cast
        settings = cls(
            addr=get("GATEWAY_ADDR", cls.addr, str),
            upstream=get("GATEWAY_UPSTREAM", cls.upstream, str),
            metrics_addr=get("GATEWAY_METRICS_ADDR", cls.metrics_addr, str),
            cors_origins=get("GATEWAY_CORS_ORIGINS", "", parse_origins),
            max_body_bytes=get("GATEWAY_MAX_BODY_BYTES", str(cls.max_body_bytes), _positive_int),
            default_timeout=get("GATEWAY_DEFAULT_TIMEOUT", "30s", parse_duration),
            stream_timeout=get("GATEWAY_STREAM_TIMEOUT", "1h", _non_negative_duration),
            sse_keepalive=get("GATEWAY_SSE_KEEPALIVE", "15s", parse_duration),
            header_timeout=get("GATEWAY_HEADER_TIMEOUT", "10s", parse_duration),
            body_timeout=get("GATEWAY_BODY_TIMEOUT", "60s", parse_duration),
            body_budget_bytes=get(
                "GATEWAY_BODY_BUDGET_BYTES", str(cls.body_budget_bytes), _positive_int
            ),
            anonymous_body_budget_bytes=get(
                "GATEWAY_ANONYMOUS_BODY_BUDGET_BYTES",
                str(cls.anonymous_body_budget_bytes),
                _positive_int,
            ),
            log_level=get("LOG_LEVEL", "info", str.lower),
            log_format=get("LOG_FORMAT", "json", str.lower),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        addrs = {
            "GATEWAY_ADDR": self.addr,
            "GATEWAY_UPSTREAM": self.upstream,
            "GATEWAY_METRICS_ADDR": self.metrics_addr,
        }
        check_addrs(addrs)
        check_logging(self.log_level, self.log_format)
        if self.default_timeout <= 0:
            raise ConfigError("TASKGATE_GATEWAY_DEFAULT_TIMEOUT: must be greater than 0")
        if self.sse_keepalive <= 0:
            raise ConfigError("TASKGATE_GATEWAY_SSE_KEEPALIVE: must be greater than 0")
        self._validate_body_limits()

    def _validate_body_limits(self) -> None:
        for name, value in (("HEADER", self.header_timeout), ("BODY", self.body_timeout)):
            if value <= 0:
                raise ConfigError(f"TASKGATE_GATEWAY_{name}_TIMEOUT: must be greater than 0")
        if self.body_budget_bytes < self.max_body_bytes:
            raise ConfigError(
                "TASKGATE_GATEWAY_BODY_BUDGET_BYTES: must be at least "
                "TASKGATE_GATEWAY_MAX_BODY_BYTES (else no body of that size could be read)"
            )
        if self.anonymous_body_budget_bytes > self.body_budget_bytes:
            raise ConfigError(
                "TASKGATE_GATEWAY_ANONYMOUS_BODY_BUDGET_BYTES: must not exceed "
                "TASKGATE_GATEWAY_BODY_BUDGET_BYTES"
            )
