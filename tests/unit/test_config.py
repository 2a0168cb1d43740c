from __future__ import annotations

import pytest
from pydantic import SecretStr

from server.config import Settings
from server.processor.config import ProcessorSettings
from taskgate_runtime.settings import ConfigError, parse_addr, parse_duration


def test_defaults_match_the_design() -> None:
    settings = Settings.from_env({})
    assert settings.grpc_addr == "127.0.0.1:50051"
    assert settings.metrics_addr == "127.0.0.1:9464"
    assert settings.session_ttl == 24 * 3600
    assert settings.embedded_processor is True
    assert settings.log_level == "info"
    assert settings.log_format == "json"


def test_values_are_read_and_cast() -> None:
    settings = Settings.from_env(
        {
            "TASKGATE_DATABASE_URL": "postgresql://u:hunter2@db/x",
            "TASKGATE_SESSION_TTL": "90m",
            "TASKGATE_DB_TIMEOUT": "250ms",
            "TASKGATE_LOGIN_RATE_LIMIT": "3",
            "TASKGATE_EMBEDDED_PROCESSOR": "false",
            "TASKGATE_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.session_ttl == 5400
    assert settings.db_timeout == 0.25
    assert settings.login_rate_limit == 3
    assert settings.embedded_processor is False
    assert settings.log_level == "debug"
    assert settings.database_url.get_secret_value() == "postgresql://u:hunter2@db/x"


def test_secrets_stay_out_of_reprs() -> None:
    settings = Settings.from_env({"TASKGATE_DATABASE_URL": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.database_url)
    assert SecretStr("a") == SecretStr("a") != SecretStr("b")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_TTL", "forever"),
        ("SESSION_TTL", "0s"),
        ("SESSION_TTL", "-5s"),
        ("DB_TIMEOUT", ""),
        ("LOGIN_RATE_LIMIT", "many"),
        ("LOGIN_RATE_LIMIT", "0"),
        ("EMBEDDED_PROCESSOR", "maybe"),
        ("GRPC_ADDR", "localhost"),
        ("GRPC_ADDR", "host:99999"),
        ("SERVER_METRICS_ADDR", "nope"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("DB_POOL_MIN_SIZE", "20"),
        ("USER_CACHE_SIZE", "-1"),
    ],
)
def test_bad_values_fail_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"TASKGATE_{name}"):
        Settings.from_env({f"TASKGATE_{name}": value})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("30s", 30), ("1.5m", 90), ("250ms", 0.25), ("2d", 172800), ("7", 7)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_addr_and_bools() -> None:
    assert parse_addr("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert parse_addr("[::1]:80") == ("::1", 80)
    assert parse_addr(":8080") == ("0.0.0.0", 8080)  # noqa: S104
    assert Settings.from_env({"TASKGATE_EMBEDDED_PROCESSOR": "Yes"}).embedded_processor is True
    assert Settings.from_env({"TASKGATE_EMBEDDED_PROCESSOR": "off"}).embedded_processor is False


def test_task_and_processor_settings() -> None:
    settings = Settings.from_env(
        {
            "TASKGATE_PROCESSOR_CONCURRENCY": "8",
            "TASKGATE_PROCESSOR_WORKERS": "3",
            "TASKGATE_TASK_LEASE": "10s",
            "TASKGATE_TASK_RETRY_BACKOFF": "500ms",
            "TASKGATE_TASK_RETRY_BACKOFF_MAX": "1m",
            "TASKGATE_TASK_RETENTION": "2d",
            "TASKGATE_MAX_IMAGE_PIXELS": "1000000",
            "TASKGATE_TASK_MAX_ATTEMPTS": "5",
        }
    )
    assert settings.processor_concurrency == 8
    assert settings.processor_workers == 3
    assert settings.processor_pool_size == 10  # one per task in flight, plus two
    assert settings.task_lease == 10
    assert settings.task_retry_backoff == 0.5
    assert settings.task_retry_backoff_max == 60
    assert settings.task_retention == 2 * 86400
    assert settings.max_image_pixels == 1_000_000
    assert settings.task_max_attempts == 5
    assert Settings.from_env({"TASKGATE_PROCESSOR_DB_POOL_SIZE": "4"}).processor_pool_size == 4
    assert Settings.from_env({}).processor_concurrency >= 1


def test_the_limits_are_read() -> None:
    settings = Settings.from_env(
        {
            "TASKGATE_MAX_REQUEST_BYTES": "1000",
            "TASKGATE_MAX_CONCURRENT_RPCS": "50",
            "TASKGATE_MAX_CONCURRENT_HEALTH_RPCS": "5",
            "TASKGATE_MAX_STREAMS_PER_USER": "1",
            "TASKGATE_GRPC_MAX_CONNECTION_IDLE": "30s",
            "TASKGATE_GRPC_KEEPALIVE_WITHOUT_CALLS": "false",
            "TASKGATE_PASSWORD_HASH_QUEUE": "0",
            "TASKGATE_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7",
            "TASKGATE_CLIENT_RATE_WINDOW": "2m",
        }
    )
    assert settings.max_request_bytes == 1000
    assert settings.max_concurrent_rpcs == 50
    assert (settings.max_concurrent_health_rpcs, settings.max_streams_per_user) == (5, 1)
    assert settings.grpc_max_connection_idle == 30
    assert settings.grpc_keepalive_without_calls is False
    assert settings.password_hash_queue == 0
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.7")
    assert settings.client_rate_window == 120
    assert Settings.from_env({}).trusted_proxies == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TASKGATE_PROCESSOR_CONCURRENCY", "0"),
        ("TASKGATE_PROCESSOR_WORKERS", "-1"),
        ("TASKGATE_TASK_LEASE", "soon"),
        ("TASKGATE_MAX_IMAGE_PIXELS", "0"),
        ("TASKGATE_TASK_RETRY_BACKOFF", "10m"),  # past the maximum of 5m
        ("TASKGATE_TRUSTED_PROXIES", "10.0.0.0/8, gateway"),
        ("TASKGATE_MAX_REQUEST_BYTES", str(20 * 1024 * 1024)),
        ("TASKGATE_MAX_CONCURRENT_RPCS", "0"),
        ("TASKGATE_MAX_CONCURRENT_HEALTH_RPCS", "0"),
        ("TASKGATE_MAX_STREAMS_PER_USER", "0"),
        ("TASKGATE_PASSWORD_HASH_WORKERS", "0"),
        ("TASKGATE_GRPC_MAX_CONNECTION_IDLE", "never"),
    ],
)
def test_a_bad_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_a_bad_value_is_one_line_that_says_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TASKGATE_LOG_LEVEL": "loud"})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("TASKGATE_LOG_LEVEL: ")
    assert "'debug', 'info', 'warning' or 'error'" in message


def test_a_secret_is_never_echoed_in_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TASKGATE_DATABASE_URL": ["postgresql://u:hunter2@db/x"]})  # type: ignore[dict-item]
    assert "TASKGATE_DATABASE_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_constructing_reads_nothing_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKGATE_GRPC_ADDR", "127.0.0.1:1")
    assert Settings().grpc_addr == "127.0.0.1:50051"
    assert Settings.from_env().grpc_addr == "127.0.0.1:1"


def test_the_processor_reads_only_its_own_settings() -> None:
    server_only = {"TASKGATE_GRPC_ADDR": "nowhere", "TASKGATE_REDIS_TIMEOUT": "never"}
    processor = ProcessorSettings.from_env(
        {**server_only, "TASKGATE_PROCESSOR_CONCURRENCY": "3", "TASKGATE_TASK_LEASE": "9s"}
    )
    assert (processor.processor_concurrency, processor.task_lease) == (3, 9.0)
    assert processor.metrics_addr == "127.0.0.1:9465"
    assert not hasattr(processor, "redis_url")
    with pytest.raises(ConfigError, match="TASKGATE_PROCESSOR_METRICS_ADDR"):
        ProcessorSettings.from_env({"TASKGATE_PROCESSOR_METRICS_ADDR": "nowhere"})


def test_the_embedded_processor_gets_the_servers_processor_settings() -> None:
    server = Settings.from_env(
        {
            "TASKGATE_DATABASE_URL": "postgresql://u:hunter2@db/x",
            "TASKGATE_PROCESSOR_WORKERS": "5",
            "TASKGATE_TASK_RETENTION": "1d",
            "TASKGATE_SERVER_METRICS_ADDR": "127.0.0.1:1234",
        }
    )
    embedded = server.embedded_processor_settings()
    assert isinstance(embedded, ProcessorSettings)
    assert embedded.database_url.get_secret_value() == "postgresql://u:hunter2@db/x"
    assert (embedded.processor_workers, embedded.task_retention) == (5, 86400.0)
    assert embedded.metrics_addr == "127.0.0.1:9465"  # its metrics are the server's


def test_tls_is_off_unless_a_certificate_and_its_key_are_given() -> None:
    assert not Settings.from_env({}).tls
    assert not Settings.from_env({"TASKGATE_TLS_CERT_FILE": "", "TASKGATE_TLS_KEY_FILE": ""}).tls
    on = Settings.from_env(
        {"TASKGATE_TLS_CERT_FILE": "/tls/tls.crt", "TASKGATE_TLS_KEY_FILE": "/tls/tls.key",
         "TASKGATE_TLS_CLIENT_CA_FILE": "/tls/ca.crt", "TASKGATE_GRPC_HEALTH_ADDR": ":50052"}
    )  # fmt: skip
    assert on.tls
    assert str(on.tls_client_ca_file) == "/tls/ca.crt"
    assert on.grpc_health_addr == ":50052"
    assert Settings.from_env({}).grpc_health_addr is None


CERT, KEY, CLIENT_CA = (
    "TASKGATE_TLS_CERT_FILE",
    "TASKGATE_TLS_KEY_FILE",
    "TASKGATE_TLS_CLIENT_CA_FILE",
)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({CERT: "/c"}, f"{KEY}: must be set with {CERT}"),
        ({KEY: "/k"}, f"{CERT}: must be set with {KEY}"),
        ({CLIENT_CA: "/ca"}, f"{CLIENT_CA}: client certificates need TLS"),
        ({"TASKGATE_GRPC_HEALTH_ADDR": "nowhere"}, "TASKGATE_GRPC_HEALTH_ADDR: not a host:port"),
    ],
)
def test_incomplete_tls_settings_are_refused_by_name(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)
