"""The stack ``make run`` starts: databases (given or local), migrations, the
server (with its processor) and the gateway; stopped in reverse order."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr

from devstack import binaries
from devstack.accounts import postgres_account
from devstack.children import Child, wait_until
from devstack.databases import LocalPostgres, LocalRedis, LocalReplica, Tuning
from devstack.postgres_places import STATE_ROOT, postgres_places
from gateway.config import Settings as GatewaySettings
from server.config import Settings as ServerSettings
from server.processor.config import ProcessorSettings
from taskgate_runtime.settings import LogFormat, LogLevel, TaskgateSettings

log = logging.getLogger("devstack")

ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "taskgate"
SERVE_TIMEOUT = 60.0


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


def _absolute(path: Path) -> Path:
    return path.absolute()


def _dev(name: str, default: Any) -> Any:
    return Field(default=default, validation_alias=f"TASKGATE_DEV_{name}")


OptionalUrl = Annotated[SecretStr | None, BeforeValidator(_blank_is_none)]


class DevSettings(TaskgateSettings):
    """What ``make run`` reads besides the server's and the gateway's own settings."""

    data_dir: Annotated[Path, AfterValidator(_absolute)] = _dev("DATA_DIR", ROOT / ".devstack")
    binaries: Literal["machine", "wheels"] = _dev("BINARIES", "machine")
    replicas: bool = _dev("REPLICAS", False)
    database_url: OptionalUrl = None
    redis_url: OptionalUrl = None
    log_level: LogLevel = "info"
    log_format: LogFormat | None = None

    def log_format_on(self, *, terminal: bool) -> str:
        """``TASKGATE_LOG_FORMAT``, else text on a terminal and JSON elsewhere."""
        return self.log_format or ("text" if terminal else "json")


@dataclass(frozen=True)
class Endpoints:
    grpc: str
    http: str
    server_metrics: str
    processor_metrics: str
    gateway_metrics: str
    database: str
    redis: str
    postgres_data: str = ""  # the local Postgres's cluster; empty when the URL was given
    replica: str = ""  # the local replica's URL (TASKGATE_DEV_REPLICAS); empty without one

    def lines(self) -> list[str]:
        return [
            f"gRPC      {self.grpc}   (grpcurl -plaintext {self.grpc} list)",
            f"HTTP      http://{self.http}",
            f"docs      http://{self.http}/docs",
            f"metrics   http://{self.server_metrics}/metrics (server), "
            f"http://{self.processor_metrics}/metrics (processor), "
            f"http://{self.gateway_metrics}/metrics (gateway)",
            f"Postgres  {self.database}",
            *([f"          data in {self.postgres_data}"] if self.postgres_data else []),
            *([f"Replica   {self.replica}   (reads)"] if self.replica else []),
            f"Redis     {self.redis}",
        ]


@contextlib.contextmanager
def local_databases(
    data_dir: Path,
    *,
    prefer: str = "machine",
    tuning: Tuning | None = None,
    programs: binaries.Programs | None = None,
    state_root: Path = STATE_ROOT,
) -> Iterator[tuple[LocalPostgres, LocalRedis]]:
    """A local Postgres and Redis with their data and logs under ``data_dir``, the programs
    ``programs`` (by default found with ``prefer``). As root, Postgres's data and programs
    move under ``state_root`` when its account cannot reach them (devstack.postgres_places)."""
    tuning = tuning or Tuning()
    programs = programs or binaries.find(prefer)
    data_dir.mkdir(parents=True, exist_ok=True)
    account = postgres_account()
    if not account.is_current:
        data_dir.chmod(0o755)  # the Postgres account walks through it to its own folder
    places = postgres_places(
        account,
        programs.postgres_bin,
        programs.postgres_origin,
        data_dir,
        state_root=state_root,
    )
    postgres = LocalPostgres(places.bin_dir, places.data_dir, account, tuning)
    redis = LocalRedis(programs.redis_server, data_dir / "redis", tuning)
    logs = data_dir / "logs"
    log.info(
        "Postgres from %s (%s, running as %s, data in %s), Redis from %s (%s)",
        programs.postgres_origin,
        places.bin_dir,
        account.name,
        places.data_dir,
        programs.redis_origin,
        programs.redis_server,
    )
    try:
        postgres.start(logs / "postgres.log")
        redis.start(logs / "redis.log")
        yield postgres, redis
    finally:
        redis.stop()
        postgres.stop()


@contextlib.contextmanager
def local_replica(
    primary: LocalPostgres, *, name: str = "postgres-replica"
) -> Iterator[LocalReplica]:
    """A streaming replica of ``primary`` (running), its data beside the primary's in ``name``."""
    replica = LocalReplica(primary, primary.data_dir.with_name(name))
    logs = primary.log_file.parent if primary.log_file else replica.data_dir.parent
    try:
        replica.start(logs / f"{name}.log")
        yield replica
    finally:
        replica.stop()


def migrate(database_url: str, environ: Mapping[str, str]) -> None:
    """dbmate up (scripts/migrate.sh): creates the database when it is missing."""
    dbmate = Path(sys.executable).parent / "dbmate"
    env = {**environ, "TASKGATE_DATABASE_URL": database_url, "DBMATE": str(dbmate)}
    done = subprocess.run(  # noqa: S603 - our own script
        ["bash", str(ROOT / "scripts" / "migrate.sh"), "up"],  # noqa: S607 - bash from PATH
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrations failed: {(done.stderr or done.stdout).strip()}")
    for line in done.stdout.splitlines():
        if line.strip():
            log.info("dbmate: %s", line.strip())


def _grpc_serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _http_ready(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/ready", timeout=1.0) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _connectable(addr: str) -> str:
    """``0.0.0.0:p`` / ``:p`` → ``127.0.0.1:p``: where this machine reaches a listener."""
    host, _, port = addr.rpartition(":")
    return f"127.0.0.1:{port}" if host.strip("[]") in {"", "0.0.0.0", "::"} else addr  # noqa: S104


class Stack:
    """The product's processes, started in order and stopped in reverse."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = dict(environ)
        self.children: list[Child] = []

    def start(self, database_url: str, redis_url: str, replica_url: str = "") -> Endpoints:
        env = {
            **self.environ,
            "TASKGATE_DATABASE_URL": database_url,
            "TASKGATE_REDIS_URL": redis_url,
        }
        if replica_url:
            env["TASKGATE_DATABASE_REPLICA_URLS"] = replica_url
        # A local trial sends webhooks to receivers on this machine, over plain http.
        env.setdefault("TASKGATE_WEBHOOK_ALLOW_HTTP", "true")
        env.setdefault("TASKGATE_WEBHOOK_ALLOW_PRIVATE", "true")
        server = ServerSettings.from_env(env)
        env.setdefault("TASKGATE_GATEWAY_UPSTREAM", _connectable(server.grpc_addr))
        gateway = GatewaySettings.from_env(env)
        migrate(database_url, env)
        grpc_addr, http_addr = _connectable(server.grpc_addr), _connectable(gateway.addr)
        self._start(
            "server", [sys.executable, "-m", "server"], env, lambda: _grpc_serving(grpc_addr)
        )
        self._start(
            "gateway", [sys.executable, "-m", "gateway"], env, lambda: _http_ready(http_addr)
        )
        return Endpoints(
            grpc=grpc_addr,
            http=http_addr,
            server_metrics=_connectable(server.metrics_addr),
            processor_metrics=_connectable(ProcessorSettings.from_env(env).metrics_addr),
            gateway_metrics=_connectable(gateway.metrics_addr),
            database=_without_password(database_url),
            redis=_without_password(redis_url),
            replica=_without_password(replica_url) if replica_url else "",
        )

    def _start(
        self, name: str, argv: list[str], env: Mapping[str, str], ready: Callable[[], bool]
    ) -> None:
        child = Child(name, argv, env=env, cwd=ROOT)
        self.children.append(child)
        wait_until(ready, child=child, timeout=SERVE_TIMEOUT, what=name)

    def check(self) -> None:
        for child in self.children:
            child.check()

    def stop(self, grace: float) -> None:
        for child in reversed(self.children):
            child.stop(grace)
        self.children.clear()


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def database_url_in(postgres: LocalPostgres) -> str:
    return postgres.admin_url(DATABASE_NAME)
