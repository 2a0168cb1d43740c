"""``python -m devstack`` (``make run``): the whole product until Ctrl-C.

Uses TASKGATE_DATABASE_URL / TASKGATE_REDIS_URL when they are set; otherwise
starts a local Postgres and Redis in TASKGATE_DEV_DATA_DIR (``.devstack/`` in
the checkout). Exit status: 0 after Ctrl-C or SIGTERM, 1 when something could
not start or stopped on its own, 2 for bad settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import FrameType

from devstack.accounts import AccountError
from devstack.binaries import MissingBinary
from devstack.children import ChildExited
from devstack.stack import (
    DATABASE_NAME,
    DevSettings,
    Endpoints,
    Stack,
    database_url_in,
    local_databases,
    local_replica,
)
from gateway.config import Settings as GatewaySettings
from server.config import Settings
from taskgate_runtime import logs
from taskgate_runtime.settings import ConfigError

log = logging.getLogger("devstack")


@dataclass(frozen=True)
class Databases:
    database_url: str
    redis_url: str
    postgres_data: str = ""  # the local Postgres's data folder; "" when its URL was given
    replica_url: str = ""  # the local replica (TASKGATE_DEV_REPLICAS); "" without one


@contextlib.contextmanager
def databases(settings: DevSettings) -> Iterator[Databases]:
    """The URLs given, or a local Postgres and Redis started for this run (and a streaming
    replica of the local Postgres with TASKGATE_DEV_REPLICAS)."""
    database_url, redis_url = settings.database_url, settings.redis_url
    if database_url is not None and redis_url is not None:
        yield Databases(database_url.get_secret_value(), redis_url.get_secret_value())
        return
    with contextlib.ExitStack() as started:
        postgres, redis = started.enter_context(
            local_databases(settings.data_dir, prefer=settings.binaries)
        )
        replica_url = ""
        if settings.replicas and database_url is None:
            replica = started.enter_context(local_replica(postgres))
            replica_url = replica.admin_url(DATABASE_NAME)
        yield Databases(
            database_url.get_secret_value() if database_url else database_url_in(postgres),
            redis_url.get_secret_value() if redis_url else redis.url,
            "" if database_url else str(postgres.data_dir),
            replica_url,
        )


def stop_event() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def announce(endpoints: Endpoints, fmt: str) -> None:
    if fmt == "text":
        print("\ntaskgate is running:", *(f"  {line}" for line in endpoints.lines()), sep="\n")
        print("Ctrl-C stops everything this command started.\n", flush=True)
    else:
        log.info("taskgate is running", extra={"fields": {"endpoints": vars(endpoints)}})


def run(settings: DevSettings, fmt: str, stop: threading.Event) -> int:
    stack = Stack({**os.environ, "TASKGATE_LOG_FORMAT": fmt})
    grace = Settings.from_env(os.environ).shutdown_grace + 5.0
    try:
        with databases(settings) as found:
            try:
                endpoints = stack.start(found.database_url, found.redis_url, found.replica_url)
                announce(replace(endpoints, postgres_data=found.postgres_data), fmt)
                while not stop.wait(0.5):
                    stack.check()
                log.info("stopping")
            finally:
                stack.stop(grace)
    except (ChildExited, TimeoutError, RuntimeError, AccountError, MissingBinary) as exc:
        log.error("%s", exc)
        return 1
    log.info("stopped")
    return 0


def main() -> int:
    try:
        settings = DevSettings.from_env(os.environ)
        Settings.from_env(os.environ)  # its own errors, before anything starts
        GatewaySettings.from_env(os.environ)
    except ConfigError as exc:
        print(f"make run: configuration error: {exc}", file=sys.stderr)
        return 2
    fmt = settings.log_format_on(terminal=sys.stderr.isatty())
    logs.configure(service="taskgate-devstack", level=settings.log_level, fmt=fmt)
    return run(settings, fmt, stop_event())


if __name__ == "__main__":
    sys.exit(main())
