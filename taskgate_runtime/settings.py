"""Settings primitives, on pydantic-settings, and the pieces every process shares.

A process's settings are one frozen model, built by mixing the pieces it needs
(:class:`LoggingSettings`, :class:`DatabaseSettings`, :class:`RedisSettings`)
with fields of its own. Every variable has the ``TASKGATE_`` prefix and the
field's name in capitals (``db_timeout`` is ``TASKGATE_DB_TIMEOUT``), unless
the field names another with ``validation_alias``.

- ``Model.from_env()`` reads the environment (or a mapping given for a test);
  a bad value raises :class:`ConfigError` with one line that names the
  variable and says what is allowed, never the value of a secret.
- ``Model(**values)`` reads nothing: defaults and the values given (tests).
- :data:`Duration` reads ``"24h"``, ``"90s"``, ``"250ms"``, ``"1.5m"``, ``"2d"`` or
  plain seconds; :data:`Address` a ``host:port``; :data:`CommaList` ``"a, b"``;
  :data:`OptionalPath`, :data:`OptionalText` and :data:`OptionalAddress` are None
  when unset or empty.
- DSNs are :class:`pydantic.SecretStr`: hidden in every repr and log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PREFIX = "TASKGATE_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("taskgate_environ", default=None)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def parse_duration(text: str) -> float:
    """Parse ``"24h"``, ``"90s"``, ``"250ms"``, ``"1.5m"`` or plain seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 5m, 24h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_addr(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:port`` for IPv6; ``:port`` is every interface)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a host:port address: {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - ":port" means all interfaces


def parse_list(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` → ``("a", "b", "c")``; empty → ``()``."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def cpu_count() -> int:
    """The CPUs this process may use (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _address(value: str) -> str:
    parse_addr(value)
    return value


def _optional_address(value: str | None) -> str | None:
    return None if value is None else _address(value)


def _comma_list(value: Any) -> Any:
    return parse_list(value) if isinstance(value, str) else value


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
"""A positive duration in seconds, written ``500ms``, ``30s``, ``5m``, ``24h``, ``7d`` or ``7``."""
OptionalDuration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
"""A duration where ``0`` means none."""
Address = Annotated[str, AfterValidator(_address)]
"""``host:port``; port 0 picks a free one."""
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
"""A comma-separated list; empty is ``()``."""
Count = Annotated[int, Field(gt=0)]
"""A whole number, 1 or more."""
NonNegative = Annotated[int, Field(ge=0)]
"""A whole number, 0 or more."""
OptionalPath = Annotated[Path | None, BeforeValidator(_blank_is_none)]
"""A file's path; unset or empty is None."""
OptionalText = Annotated[str | None, BeforeValidator(_blank_is_none)]
"""A string; unset or empty is None."""
OptionalAddress = Annotated[
    str | None, BeforeValidator(_blank_is_none), AfterValidator(_optional_address)
]
"""An :data:`Address`, or None when unset or empty (the listener is off)."""
LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)]
LogFormat = Annotated[Literal["json", "text"], BeforeValidator(_lower)]


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.case_sensitive:
            return dict(self._environ)
        return {name.lower(): value for name, value in self._environ.items()}


class TaskgateSettings(BaseSettings):
    """The base of every process's settings: frozen, ``TASKGATE_``-prefixed, environment only."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        frozen=True,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Within :meth:`from_env` the environment; otherwise only the values given."""
        environ = _ENVIRON.get()
        if environ is None:
            return (init_settings,)
        return (init_settings, _MappingEnvSource(settings_cls, environ))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings from ``environ`` (default ``os.environ``); ConfigError names a bad one."""
        token = _ENVIRON.set(os.environ if environ is None else environ)
        try:
            return cls()
        except ValidationError as exc:
            raise ConfigError(describe(cls, exc)) from None
        finally:
            _ENVIRON.reset(token)

    def model_post_init(self, context: Any, /) -> None:
        self.check()

    def check(self) -> None:
        """Rules across fields; raise :class:`ConfigError` naming a variable (``variable()``)."""

    def require_at_most(self, field: str, limit: str, *, extra: int = 0) -> None:
        """ConfigError unless ``field`` <= ``limit`` (+ ``extra``), naming both variables."""
        if getattr(self, field) > getattr(self, limit) + extra:
            plus = f" + {extra // 1024} KiB" if extra else ""
            raise ConfigError(
                f"{self.variable(field)}: must not exceed {self.variable(limit)}{plus}"
            )

    def require_together(self, first: str, second: str) -> None:
        """ConfigError unless both fields are set or neither is, naming the missing one."""
        given = getattr(self, first) is not None, getattr(self, second) is not None
        if given[0] != given[1]:
            missing, present = (second, first) if given[0] else (first, second)
            raise ConfigError(
                f"{self.variable(missing)}: must be set with {self.variable(present)}"
            )

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field``."""
        return variable_of(field, cls.model_fields[field])

    @classmethod
    def variables(cls) -> dict[str, str]:
        """``{variable: field}`` for every field of the model."""
        return {variable_of(name, info): name for name, info in cls.model_fields.items()}


def variable_of(name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    return alias if isinstance(alias, str) else PREFIX + name.upper()


def describe(model: type[TaskgateSettings], error: ValidationError) -> str:
    """One line for the first problem: the variable, what is wrong, what was given."""
    first = error.errors(include_url=False)[0]
    loc = str(first["loc"][0]) if first["loc"] else ""
    fields = model.model_fields
    name = next(
        (f for f, info in fields.items() if loc in (f, variable_of(f, info).lower())),
        loc,
    )
    info = fields.get(name)
    variable = variable_of(name, info) if info is not None else loc.upper()
    message = str(first["msg"]).removeprefix("Value error, ")
    secret = info is not None and info.annotation is SecretStr
    if secret or "input" not in first or message.startswith("not a"):
        return f"{variable}: {message}"
    return f"{variable}: {message} (got {first['input']!r})"


def settings_models(*models: type[TaskgateSettings]) -> Iterator[tuple[str, FieldInfo]]:
    """Every ``(variable, field)`` of ``models``: the README's configuration table checks them."""
    for model in models:
        for name, info in model.model_fields.items():
            yield variable_of(name, info), info


class LoggingSettings(TaskgateSettings):
    """``TASKGATE_LOG_LEVEL`` and ``TASKGATE_LOG_FORMAT``, read by every process."""

    log_level: LogLevel = "info"
    log_format: LogFormat = "json"


class DatabaseSettings(TaskgateSettings):
    """Where Postgres is and how long to wait for it."""

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/taskgate")
    db_timeout: Duration = 2.0
    db_reconnect_timeout: Duration = 2.0


class RedisSettings(TaskgateSettings):
    """Where Redis is, the prefix of every key, and how long to wait for it."""

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_key_prefix: str = "taskgate:"
    redis_timeout: Duration = 2.0
    redis_pool_size: Annotated[int, Field(gt=0)] = 64


def metrics_addr(variable: str, default: str) -> Any:
    """The ``metrics_addr`` field of a process whose ``/metrics`` address is ``variable``."""
    return Field(default=default, validation_alias=variable)
