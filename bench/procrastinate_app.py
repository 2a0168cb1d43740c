"""procrastinate's side of ``python -m bench.tasks``: a no-op task and its worker.

``python -m bench.procrastinate_app DSN --concurrency C`` runs one procrastinate
worker (async, LISTEN/NOTIFY on, its default 5 s polling fallback, jobs kept
after they end so their events can be read) until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from procrastinate import App, PsycopgConnector

NOOP = "noop"
WORKER_APPLICATION = "bench-procrastinate-worker"


async def noop() -> None:
    """The job: nothing at all."""


def make_app(dsn: str, application_name: str) -> App:
    """An app on ``dsn`` whose connections carry ``application_name`` (to find their CPU)."""
    connector = PsycopgConnector(conninfo=dsn, kwargs={"application_name": application_name})
    app = App(connector=connector)
    app.task(name=NOOP)(noop)
    return app


async def run_worker(dsn: str, concurrency: int) -> None:
    app = make_app(dsn, WORKER_APPLICATION)
    async with app.open_async():
        await app.run_worker_async(concurrency=concurrency, wait=True, install_signal_handlers=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.procrastinate_app")
    parser.add_argument("dsn")
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(run_worker(args.dsn, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
