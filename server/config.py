"""The server's settings: one model, read once from the environment.

Built from the shared pieces of :mod:`taskgate_runtime.settings` (logging,
Postgres, Redis) and :class:`~server.processor.config.ProcessorTuning` for the
processor it embeds, plus its own: where it listens, sessions, password
hashing, and what a client can make it spend.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr

from server.processor.config import ProcessorSettings, ProcessorTuning
from taskgate_runtime.settings import (
    Address,
    CommaList,
    ConfigError,
    Count,
    DatabaseSettings,
    Duration,
    LoggingSettings,
    NonNegative,
    OptionalAddress,
    OptionalDuration,
    OptionalPath,
    RedisSettings,
    TaskgateSettings,
    cpu_count,
    metrics_addr,
    parse_list,
)

MESSAGE_ENVELOPE = 64 * 1024
"""What a CreateTask message may carry besides its image."""


def _replica_urls(value: SecretStr) -> SecretStr:
    for url in parse_list(value.get_secret_value()):
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("use comma-separated postgresql:// URLs")
    return value


ReplicaUrls = Annotated[SecretStr, AfterValidator(_replica_urls)]
"""Comma-separated DSNs: secret as a whole (they may hold passwords), never in a message."""


def _half_the_cpus() -> int:
    """argon2 runs its lanes (TASKGATE_ARGON2_PARALLELISM) in threads of their own:
    one hash per two CPUs leaves the event loop room to answer."""
    return max(1, cpu_count() // 2)


class ReplicaSettings(TaskgateSettings):
    """Streaming replicas that serve reads (none: every read on the primary)."""

    database_replica_urls: ReplicaUrls = SecretStr("")
    database_replica_pool_size: Count = 10
    database_replica_max_lag: Duration = 30.0
    database_replica_check_interval: Duration = 0.5
    database_replica_timeout: Duration = 0.5
    database_replica_wait: OptionalDuration = 0.0

    @property
    def replica_urls(self) -> tuple[str, ...]:
        return parse_list(self.database_replica_urls.get_secret_value())


class Settings(LoggingSettings, DatabaseSettings, ReplicaSettings, RedisSettings, ProcessorTuning):
    """Everything ``python -m server`` reads from its environment."""

    grpc_addr: Address = "127.0.0.1:50051"
    metrics_addr: Address = metrics_addr("TASKGATE_SERVER_METRICS_ADDR", "127.0.0.1:9464")
    embedded_processor: bool = True
    health_check_interval: Duration = 2.0
    db_pool_min_size: Count = 1
    db_pool_max_size: Count = 10

    # Sessions and passwords.
    session_ttl: Duration = 24 * 3600.0
    login_rate_limit: Count = 10
    login_rate_window: Duration = 60.0
    user_cache_size: NonNegative = 10_000
    user_cache_ttl: Duration = 60.0
    argon2_time_cost: Count = 3
    argon2_memory_kib: Count = 64 * 1024
    argon2_parallelism: Count = 4
    password_hash_workers: Count = Field(default_factory=_half_the_cpus)
    password_hash_queue: NonNegative = 256
    password_hash_per_username: Count = 2
    password_hash_max_wait: Duration = 2.0
    device_token_ttl: Duration = 30 * 24 * 3600.0

    # Tasks.
    max_image_bytes: Count = 10 * 1024 * 1024
    user_max_pending: NonNegative = 10_000
    task_max_attempts: Count = 3
    watch_poll_interval: Duration = 5.0

    # What a client can make the server spend.
    max_request_bytes: Count = 64 * 1024
    max_concurrent_rpcs: Count = 1000
    max_concurrent_health_rpcs: Count = 100
    max_streams_per_user: Count = 100
    max_unauthenticated_reads: Count = 4
    grpc_stream_window_bytes: Count = 64 * 1024
    grpc_max_connection_idle: Duration = 300.0
    grpc_max_connection_age: Duration = 3600.0
    grpc_max_connection_age_grace: Duration = 300.0
    grpc_keepalive_time: Duration = 60.0
    grpc_keepalive_timeout: Duration = 20.0
    grpc_min_ping_interval: Duration = 10.0
    grpc_max_ping_strikes: NonNegative = 2
    grpc_keepalive_without_calls: bool = True
    client_login_limit: Count = 30
    client_register_limit: Count = 10
    client_rate_window: Duration = 60.0
    trusted_proxies: CommaList = ()

    # Transport security: TLS when a certificate and key are given (reloaded when
    # the files change), client certificates required when a client CA is given.
    tls_cert_file: OptionalPath = None
    tls_key_file: OptionalPath = None
    tls_client_ca_file: OptionalPath = None
    # A plaintext port serving grpc.health.v1 only, for probes that speak no TLS.
    grpc_health_addr: OptionalAddress = None

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: one image of the largest size, plus its envelope."""
        return self.max_image_bytes + MESSAGE_ENVELOPE

    def embedded_processor_settings(self) -> ProcessorSettings:
        """The settings of the processor this server runs inside itself."""
        shared = ProcessorSettings.model_fields.keys() & type(self).model_fields.keys()
        shared -= {"metrics_addr"}  # its metrics are on the server's registry and port
        return ProcessorSettings(**{name: getattr(self, name) for name in shared})

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def check(self) -> None:
        super().check()
        self.require_together("tls_cert_file", "tls_key_file")
        if self.tls_client_ca_file is not None and not self.tls:
            raise ConfigError(
                f"{self.variable('tls_client_ca_file')}: client certificates need TLS: "
                f"set {self.variable('tls_cert_file')} and {self.variable('tls_key_file')}"
            )
        self.require_at_most("db_pool_min_size", "db_pool_max_size")
        self.require_at_most("max_request_bytes", "max_image_bytes", extra=MESSAGE_ENVELOPE)
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{self.variable('trusted_proxies')}: not an IP address or CIDR: {proxy!r}"
                ) from None
