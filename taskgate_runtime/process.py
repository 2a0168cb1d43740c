"""The process main of every taskgate process (server, processor, gateway):
settings from the environment, logging, tracing (when the ``OTEL_*`` variables
ask for it, see :mod:`taskgate_runtime.telemetry`), and serving until SIGTERM
or SIGINT; the spans still buffered are exported on the way out. Each
process's start-up ends with :func:`started`."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from taskgate_runtime import logs, telemetry
from taskgate_runtime.settings import ConfigError


class ProcessSettings(Protocol):
    @property
    def log_level(self) -> str: ...

    @property
    def log_format(self) -> str: ...


S = TypeVar("S", bound=ProcessSettings)


def stop_requested() -> asyncio.Event:
    """An event the running loop sets on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def started() -> None:
    """Start-up is over: what it made (modules, settings, the app and its pools) lives as
    long as the process. It is moved out of the garbage collector's generations
    (``gc.freeze``), so that a full collection walks only what was made since: in a
    running server each one took 40-50 ms, a pause every call in flight waited out, and
    tracing's spans (alive until exported) made them more frequent. Frozen objects are
    still freed when their last reference goes; only a cycle among them would stay."""
    gc.collect()
    gc.freeze()


def main(
    *,
    service: str,
    load: Callable[[], S],
    serve: Callable[[S], Coroutine[Any, Any, bool]],
) -> int:
    """Exit status: 0 after a clean stop, 1 when ``serve`` could not start, 2 for bad settings."""
    try:
        settings = load()
    except ConfigError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(service=service, level=settings.log_level, fmt=settings.log_format)
    tracing = telemetry.configure(service=service)
    try:
        return 0 if asyncio.run(serve(settings)) else 1
    finally:
        tracing.shutdown()
