"""Settings, read once from the environment (and nowhere else).

Every variable has the ``TASKGATE_`` prefix. Values are cast explicitly and a
bad value fails at start-up with a message naming the variable. Secrets (the
DSNs, which may hold passwords) are wrapped in :class:`Secret` so that they
never show in a repr or a log line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_T = TypeVar("_T")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """A setting is missing or malformed."""


class Secret:
    """A string that keeps itself out of reprs and logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def parse_duration(text: str) -> float:
    """Parse ``"24h"``, ``"90s"``, ``"250ms"``, ``"1.5m"`` or plain seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 5m, 24h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def parse_addr(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:port`` for IPv6)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a host:port address: {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - ":port" means all interfaces


def _cpu_count() -> int:
    """The CPUs this process may use (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


class Env:
    """The ``TASKGATE_*`` variables, read and cast, a bad value a ConfigError naming it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str, default: str) -> str:
        return self._environ.get(f"TASKGATE_{name}", default)

    def cast(self, name: str, default: str, cast: Callable[[str], _T]) -> _T:
        raw = self.get(name, default)
        try:
            return cast(raw)
        except ValueError as exc:
            raise ConfigError(f"TASKGATE_{name}: {exc}") from None

    def positive(self, name: str, default: str, cast: Callable[[str], float]) -> float:
        value = self.cast(name, default, cast)
        if value <= 0:
            raise ConfigError(f"TASKGATE_{name}: must be greater than 0, got {value}")
        return value


def check_addrs(addrs: Mapping[str, str]) -> None:
    """Each ``{variable name without prefix: host:port}`` parses, or ConfigError names it."""
    for name, addr in addrs.items():
        try:
            parse_addr(addr)
        except ValueError as exc:
            raise ConfigError(f"TASKGATE_{name}: {exc}") from None


def check_logging(level: str, fmt: str) -> None:
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError("TASKGATE_LOG_LEVEL: use debug, info, warning or error")
    if fmt not in {"json", "text"}:
        raise ConfigError("TASKGATE_LOG_FORMAT: use json or text")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server reads from its environment."""

    database_url: Secret
    redis_url: Secret
    redis_key_prefix: str = "taskgate:"
    grpc_addr: str = "127.0.0.1:50051"
    metrics_addr: str = "127.0.0.1:9464"
    log_level: str = "info"
    log_format: str = "json"
    session_ttl: float = 24 * 3600.0
    login_rate_limit: int = 10
    login_rate_window: float = 60.0
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    db_timeout: float = 2.0
    redis_timeout: float = 2.0
    health_check_interval: float = 2.0
    shutdown_grace: float = 10.0
    max_image_bytes: int = 10 * 1024 * 1024
    embedded_processor: bool = True
    user_cache_size: int = 10_000
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 64 * 1024
    argon2_parallelism: int = 4
    max_image_pixels: int = 40_000_000
    task_max_attempts: int = 3
    task_lease: float = 30.0
    task_retry_backoff: float = 2.0
    task_retry_backoff_max: float = 300.0
    task_retention: float = 7 * 86400.0
    watch_poll_interval: float = 5.0
    processor_concurrency: int = field(default_factory=_cpu_count)
    processor_workers: int = field(default_factory=_cpu_count)
    processor_poll_interval: float = 5.0
    processor_db_pool_size: int = 0
    processor_metrics_addr: str = "127.0.0.1:9465"
    processor_stats_interval: float = 5.0
    queue_fairness: bool = True
    user_max_pending: int = 10_000
    user_max_running: int = 0

    @property
    def processor_pool_size(self) -> int:
        """The processor's own connections: one per running task, plus heartbeat and claims."""
        return self.processor_db_pool_size or self.processor_concurrency + 2

    # Abuse and limits (issue 8): what an anonymous client can make the server spend.
    max_request_bytes: int = 64 * 1024
    max_concurrent_rpcs: int = 1000
    max_unauthenticated_reads: int = 4
    grpc_stream_window_bytes: int = 64 * 1024
    grpc_max_connection_idle: float = 300.0
    grpc_max_connection_age: float = 3600.0
    grpc_max_connection_age_grace: float = 300.0
    grpc_keepalive_time: float = 60.0
    grpc_keepalive_timeout: float = 20.0
    grpc_min_ping_interval: float = 10.0
    grpc_max_ping_strikes: int = 2
    grpc_keepalive_without_calls: bool = True
    password_hash_workers: int = 1
    password_hash_queue: int = 4
    client_login_limit: int = 30
    client_register_limit: int = 10
    client_rate_window: float = 60.0
    trusted_proxies: tuple[str, ...] = ()
    db_reconnect_timeout: float = 2.0
    user_cache_ttl: float = 60.0

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: one image of the largest size, plus its envelope."""
        return self.max_image_bytes + 64 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(os.environ if environ is None else environ)
        settings = cls(
            database_url=Secret(
                env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/taskgate")
            ),
            redis_url=Secret(env.get("REDIS_URL", "redis://127.0.0.1:6379/0")),
            redis_key_prefix=env.get("REDIS_KEY_PREFIX", "taskgate:"),
            grpc_addr=env.get("GRPC_ADDR", "127.0.0.1:50051"),
            metrics_addr=env.get("SERVER_METRICS_ADDR", "127.0.0.1:9464"),
            log_level=env.get("LOG_LEVEL", "info").lower(),
            log_format=env.get("LOG_FORMAT", "json").lower(),
            session_ttl=env.positive("SESSION_TTL", "24h", parse_duration),
            login_rate_limit=int(env.positive("LOGIN_RATE_LIMIT", "10", int)),
            login_rate_window=env.positive("LOGIN_RATE_WINDOW", "60s", parse_duration),
            db_pool_min_size=int(env.positive("DB_POOL_MIN_SIZE", "1", int)),
            db_pool_max_size=int(env.positive("DB_POOL_MAX_SIZE", "10", int)),
            db_timeout=env.positive("DB_TIMEOUT", "2s", parse_duration),
            redis_timeout=env.positive("REDIS_TIMEOUT", "2s", parse_duration),
            health_check_interval=env.positive("HEALTH_CHECK_INTERVAL", "2s", parse_duration),
            shutdown_grace=env.positive("SHUTDOWN_GRACE", "10s", parse_duration),
            max_image_bytes=int(env.positive("MAX_IMAGE_BYTES", str(10 * 1024 * 1024), int)),
            embedded_processor=env.cast("EMBEDDED_PROCESSOR", "true", parse_bool),
            user_cache_size=env.cast("USER_CACHE_SIZE", "10000", _non_negative_int),
            argon2_time_cost=int(env.positive("ARGON2_TIME_COST", "3", int)),
            argon2_memory_kib=int(env.positive("ARGON2_MEMORY_KIB", "65536", int)),
            argon2_parallelism=int(env.positive("ARGON2_PARALLELISM", "4", int)),
            max_image_pixels=int(env.positive("MAX_IMAGE_PIXELS", "40000000", int)),
            task_max_attempts=int(env.positive("TASK_MAX_ATTEMPTS", "3", int)),
            task_lease=env.positive("TASK_LEASE", "30s", parse_duration),
            task_retry_backoff=env.positive("TASK_RETRY_BACKOFF", "2s", parse_duration),
            task_retry_backoff_max=env.positive("TASK_RETRY_BACKOFF_MAX", "5m", parse_duration),
            task_retention=env.positive("TASK_RETENTION", "7d", parse_duration),
            watch_poll_interval=env.positive("WATCH_POLL_INTERVAL", "5s", parse_duration),
            processor_concurrency=int(
                env.positive("PROCESSOR_CONCURRENCY", str(_cpu_count()), int)
            ),
            processor_workers=int(env.positive("PROCESSOR_WORKERS", str(_cpu_count()), int)),
            processor_poll_interval=env.positive("PROCESSOR_POLL_INTERVAL", "5s", parse_duration),
            processor_db_pool_size=env.cast("PROCESSOR_DB_POOL_SIZE", "0", _non_negative_int),
            processor_metrics_addr=env.get("PROCESSOR_METRICS_ADDR", "127.0.0.1:9465"),
            processor_stats_interval=env.positive("PROCESSOR_STATS_INTERVAL", "5s", parse_duration),
            queue_fairness=env.cast("QUEUE_FAIRNESS", "true", parse_bool),
            user_max_pending=env.cast("USER_MAX_PENDING", "10000", _non_negative_int),
            user_max_running=env.cast("USER_MAX_RUNNING", "0", _non_negative_int),
            **_limits_from(env),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        self._validate_limits()
        addrs = {
            "GRPC_ADDR": self.grpc_addr,
            "SERVER_METRICS_ADDR": self.metrics_addr,
            "PROCESSOR_METRICS_ADDR": self.processor_metrics_addr,
        }
        check_addrs(addrs)
        check_logging(self.log_level, self.log_format)
        if self.task_retry_backoff > self.task_retry_backoff_max:
            raise ConfigError(
                "TASKGATE_TASK_RETRY_BACKOFF: must not exceed TASKGATE_TASK_RETRY_BACKOFF_MAX"
            )
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ConfigError(
                "TASKGATE_DB_POOL_MIN_SIZE: must not exceed TASKGATE_DB_POOL_MAX_SIZE"
            )

    def _validate_limits(self) -> None:
        if self.max_request_bytes > self.max_message_bytes:
            raise ConfigError(
                "TASKGATE_MAX_REQUEST_BYTES: must not exceed TASKGATE_MAX_IMAGE_BYTES + 64 KiB"
            )
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    f"TASKGATE_TRUSTED_PROXIES: not an IP address or CIDR: {proxy!r}"
                ) from None


def parse_list(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` → ``("a", "b", "c")``; empty → ``()``."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _limits_from(env: Env) -> dict[str, Any]:
    """The settings of issue 8's limits (each a ``TASKGATE_*`` variable)."""
    cpus = os.cpu_count() or 1

    def count(name: str, default: int) -> int:
        return int(env.positive(name, str(default), int))

    def duration(name: str, default: str) -> float:
        return env.positive(name, default, parse_duration)

    return {
        "max_request_bytes": count("MAX_REQUEST_BYTES", 64 * 1024),
        "max_concurrent_rpcs": count("MAX_CONCURRENT_RPCS", 1000),
        "max_unauthenticated_reads": count("MAX_UNAUTHENTICATED_READS", 4),
        "grpc_stream_window_bytes": count("GRPC_STREAM_WINDOW_BYTES", 64 * 1024),
        "grpc_max_connection_idle": duration("GRPC_MAX_CONNECTION_IDLE", "5m"),
        "grpc_max_connection_age": duration("GRPC_MAX_CONNECTION_AGE", "1h"),
        "grpc_max_connection_age_grace": duration("GRPC_MAX_CONNECTION_AGE_GRACE", "5m"),
        "grpc_keepalive_time": duration("GRPC_KEEPALIVE_TIME", "1m"),
        "grpc_keepalive_timeout": duration("GRPC_KEEPALIVE_TIMEOUT", "20s"),
        "grpc_min_ping_interval": duration("GRPC_MIN_PING_INTERVAL", "10s"),
        "grpc_max_ping_strikes": env.cast("GRPC_MAX_PING_STRIKES", "2", _non_negative_int),
        "grpc_keepalive_without_calls": env.cast(
            "GRPC_KEEPALIVE_WITHOUT_CALLS", "true", parse_bool
        ),
        # argon2 runs its lanes (TASKGATE_ARGON2_PARALLELISM) in threads of their own:
        # one hash per two CPUs leaves the event loop room to answer.
        "password_hash_workers": count("PASSWORD_HASH_WORKERS", max(1, cpus // 2)),
        "password_hash_queue": env.cast("PASSWORD_HASH_QUEUE", "4", _non_negative_int),
        "client_login_limit": count("CLIENT_LOGIN_LIMIT", 30),
        "client_register_limit": count("CLIENT_REGISTER_LIMIT", 10),
        "client_rate_window": duration("CLIENT_RATE_WINDOW", "60s"),
        "trusted_proxies": env.cast("TRUSTED_PROXIES", "", parse_list),
        "db_reconnect_timeout": duration("DB_RECONNECT_TIMEOUT", "2s"),
        "user_cache_ttl": duration("USER_CACHE_TTL", "60s"),
    }
