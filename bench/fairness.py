"""``python -m bench.fairness``: one user's backlog against another user's tasks.

In one run, each in a fresh database on the same Postgres (dropped at the end):

1. **Idle**: ``python -m server.processor`` (concurrency C, W workers) waits;
   user B submits ``--arrivals`` tasks one at a time, every ``--spacing``
   seconds (8x8 PNG, [grayscale], the statement CreateTask runs). Their
   create->start (``started_at - created_at``, Postgres's clock) is the idle
   baseline.
2. **Backlog, fairness on** (TASKGATE_QUEUE_FAIRNESS=true): user A's
   ``--backlog`` tasks are committed at once; once the processor is busy on
   them, B submits ``--arrivals`` tasks one at a time. B's create->start
   p50/p99, and the drain rate of all of them (A's and B's: N / first start
   -> last end).
3. **Backlog, fairness off** (first-in-first-out): the same, on a processor
   started with TASKGATE_QUEUE_FAIRNESS=false.
4. **procrastinate**: ``--backlog`` no-op jobs deferred at once, drained by a
   procrastinate worker of the same concurrency (bench.tasks' machinery).

Steps 1-3 run on a fresh processor and database per scenario; ``--rounds``
repeats 2 and 3 alternating their order (on, off, off, on, ...), and the
figures pool the rounds (rates: their mean).

Aims: B's p99 with fairness under the idle p99 + 50 ms; the drain rate with
fairness at least 95 % of without, and at least 1.5x procrastinate's.
Exit status 0 when everything ran and every task completed (aims met or not).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.infra import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, BenchError, run_bench
from bench.procrastinate_app import make_app
from bench.taskenv import (
    BENCH_APPLICATION,
    TASKS_ENDED,
    Conn,
    ProcrastinateEnv,
    TaskBatch,
    TaskEnv,
    Waiter,
    column,
    connect,
    insert_task,
    insert_tasks,
    insert_user,
    one,
)
from bench.tasks import (
    TINY_FILTERS,
    ProcrastinateDrainer,
    cpu_count,
    drain_round,
    ms,
    percentile,
    tiny_png,
    validated,
    verdict,
)

P99_MARGIN, DRAIN_VS_FIFO, DRAIN_VS_PROCRASTINATE = 0.050, 0.95, 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cpus = cpu_count()
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    add = parser.add_argument
    add("--backlog", type=int, default=5000, help="user A's tasks at once (5000)")
    add("--arrivals", type=int, default=50, help="user B's tasks, one at a time (50)")
    add("--spacing", type=float, default=0.02, help="seconds between B's tasks (0.02)")
    add("--busy", type=int, default=200, help="A's tasks started before B begins (200)")
    add("--rounds", type=int, default=2, help="rounds, alternating fairness on and off (2)")
    add("--concurrency", type=int, default=cpus, help=f"processor concurrency ({cpus})")
    add("--workers", type=int, default=cpus, help=f"worker processes ({cpus})")
    add("--log-level", default="warning", help="taskgate's TASKGATE_LOG_LEVEL (warning)")
    add(
        "--database-url",
        default=os.environ.get("TASKGATE_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="Postgres server to use; taskgate_bench_<random>* databases are made and dropped",
    )
    add("--redis-url", default=os.environ.get("TASKGATE_REDIS_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args(argv)
    for name in ("backlog", "arrivals", "spacing", "busy", "rounds", "concurrency", "workers"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be greater than 0")
    if args.busy >= args.backlog:
        parser.error("--busy must be less than --backlog")
    return args


@dataclass
class Scenario:
    """One mode's runs: B's waits, idle and behind the backlog, and drain rates."""

    name: str
    idle: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.fmean(self.rates)


@dataclass
class Context:
    args: argparse.Namespace
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    cleanups: list[Any] = field(default_factory=list)

    def task_env(self, name: str, fair: bool) -> TaskEnv:
        env = TaskEnv(
            base_database_url=self.args.database_url,
            redis_url=self.args.redis_url,
            log_level=self.args.log_level,
            tag=f"{self.tag}_{name}",
            concurrency=self.args.concurrency,
            workers=self.args.workers,
            extra_env={"TASKGATE_QUEUE_FAIRNESS": "true" if fair else "false"},
        )
        self.cleanups.append(env.close)
        return env

    def close_all(self) -> list[str]:
        problems: list[str] = []
        while self.cleanups:
            problems += self.cleanups.pop()()
        return problems


async def wait_ended(conn: Conn, env: TaskEnv, label: str, count: int) -> None:
    await Waiter(conn, TASKS_ENDED, (label,), count, env.check_alive).wait()


async def arrive(conn: Conn, batch: TaskBatch, label: str, count: int, spacing: float) -> None:
    """B's tasks, one at a time."""
    for _ in range(count):
        await insert_task(conn, batch, label)
        await asyncio.sleep(spacing)


async def create_to_start(conn: Conn, label: str) -> list[float]:
    return await column(
        conn,
        "SELECT extract(epoch FROM started_at - created_at)::float8 FROM tasks "
        "WHERE request_id = %s AND status = 'completed' AND attempts = 1",
        (label,),
    )


async def until_busy(conn: Conn, env: TaskEnv, label: str, started: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = await one(
            conn, "SELECT count(*) AS n FROM tasks WHERE request_id = %s AND attempts > 0",
            (label,),
        )  # fmt: skip
        if row["n"] >= started:
            return
        env.check_alive()
        await asyncio.sleep(0.005)
    raise BenchError(f"{label}: the processor did not start {started} tasks within 60s")


async def run_scenario(ctx: Context, result: Scenario, fair: bool, number: int) -> None:
    args = ctx.args
    name = result.name
    env = ctx.task_env(f"{name}{number}", fair)
    await asyncio.to_thread(env.migrate)
    env.start_processor()
    image = tiny_png()
    info = validated(image, TINY_FILTERS)
    async with await connect(env.database_url) as conn:
        a = TaskBatch(await insert_user(conn, "bench_a"), image, info, TINY_FILTERS)
        b = TaskBatch(await insert_user(conn, "bench_b"), image, info, TINY_FILTERS)
        await insert_tasks(conn, a, 4 * args.concurrency, "warmup")
        await wait_ended(conn, env, "warmup", 4 * args.concurrency)
        await arrive(conn, b, "idle", args.arrivals, args.spacing)
        await wait_ended(conn, env, "idle", args.arrivals)
        result.idle += await create_to_start(conn, "idle")
        await insert_tasks(conn, a, args.backlog, "backlog")
        await until_busy(conn, env, "backlog", args.busy)
        await arrive(conn, b, "arrivals", args.arrivals, args.spacing)
        await wait_ended(conn, env, "arrivals", args.arrivals)
        await wait_ended(conn, env, "backlog", args.backlog)
        waits = await create_to_start(conn, "arrivals")
        row = await one(
            conn,
            "SELECT count(*) FILTER (WHERE status = 'completed' AND attempts = 1) AS ok, "
            "extract(epoch FROM max(finished_at) - min(started_at))::float8 AS span "
            "FROM tasks WHERE request_id IN ('backlog', 'arrivals')",
        )
    if row["ok"] != args.backlog + args.arrivals or len(waits) != args.arrivals:
        raise BenchError(f"{name}: {row['ok']} of {args.backlog + args.arrivals} completed")
    result.waits += waits
    result.rates.append(row["ok"] / row["span"])
    print(
        f"  round {number} {name}: B's create->start p50 {ms(percentile(waits, 50))}, "
        f"p99 {ms(percentile(waits, 99))}; drain {result.rates[-1]:,.0f} tasks/s",
        flush=True,
    )


async def procrastinate_rate(ctx: Context) -> float:
    args = ctx.args
    penv = ProcrastinateEnv(args.database_url, f"{ctx.tag}_procrastinate", args.concurrency)
    ctx.cleanups.append(penv.close)
    await penv.create()
    penv.start_worker()
    app = make_app(penv.database_url, BENCH_APPLICATION)
    async with await connect(penv.database_url) as conn, app.open_async():
        drainer = ProcrastinateDrainer(penv, conn, app)
        await drain_round(drainer, "warmup", 4 * args.concurrency)
        drained = await drain_round(drainer, "backlog", args.backlog)
    print(f"  procrastinate: drain {drained.rate:,.0f} jobs/s", flush=True)
    return drained.rate


def report(args: argparse.Namespace, fair: Scenario, fifo: Scenario, theirs: float) -> None:
    print()
    print(
        f"FAIRNESS  {args.rounds} round(s); user A: {args.backlog} tasks at once; once "
        f"{args.busy} have started, user B submits {args.arrivals}, one every "
        f"{args.spacing * 1000:.0f} ms (8x8 PNG, [grayscale])"
    )
    print(
        f"   `python -m server.processor`, concurrency {args.concurrency}, {args.workers} "
        "workers; create->start = started_at - created_at (Postgres's clock)"
    )
    row = "   {:<34}{:>11}{:>11}{:>11}"
    print(row.format("B's create->start", "p50", "p99", "max"))
    idle = fair.idle + fifo.idle
    for name, values in (
        ("idle processor (both runs)", idle),
        ("A's backlog, fairness on", fair.waits),
        ("A's backlog, fairness off (FIFO)", fifo.waits),
    ):
        print(
            row.format(
                name, ms(percentile(values, 50)), ms(percentile(values, 99)), ms(max(values))
            )
        )
    print(
        f"   drain rate (A's and B's, first start -> last end; mean of {args.rounds} rounds): "
        f"fairness on {fair.rate:,.0f}/s ({', '.join(f'{r:,.0f}' for r in fair.rates)}), "
        f"off {fifo.rate:,.0f}/s ({', '.join(f'{r:,.0f}' for r in fifo.rates)}); "
        f"procrastinate {theirs:,.0f} jobs/s ({args.backlog} no-op jobs at once)"
    )
    p99, aim = percentile(fair.waits, 99), percentile(idle, 99) + P99_MARGIN
    vs_fifo, vs_theirs = fair.rate / fifo.rate, fair.rate / theirs
    print()
    print(
        f"aim: B's p99 with fairness < idle p99 + {ms(P99_MARGIN)} ({ms(aim)}) -> {ms(p99)}: "
        f"{verdict(p99 < aim)}"
    )
    print(
        f"aim: drain, fairness on >= {DRAIN_VS_FIFO:.0%} of off -> {vs_fifo:.1%}: "
        f"{verdict(vs_fifo >= DRAIN_VS_FIFO)}"
    )
    print(
        f"aim: drain, fairness on >= {DRAIN_VS_PROCRASTINATE}x procrastinate -> {vs_theirs:.2f}x: "
        f"{verdict(vs_theirs >= DRAIN_VS_PROCRASTINATE)}"
    )


async def bench(ctx: Context) -> None:
    load = os.getloadavg()
    print(
        f"bench-fairness: {cpu_count()} CPUs, load average {load[0]:.2f}/{load[1]:.2f}/"
        f"{load[2]:.2f}; databases taskgate_bench_{ctx.tag}_*",
        flush=True,
    )
    started = time.perf_counter()
    fair, fifo = Scenario("fair"), Scenario("fifo")
    try:
        for number in range(1, ctx.args.rounds + 1):
            order = [(fair, True), (fifo, False)]
            for scenario, on in order if number % 2 else order[::-1]:
                await run_scenario(ctx, scenario, on, number)
        theirs = await procrastinate_rate(ctx)
    finally:
        problems = await asyncio.to_thread(ctx.close_all)
        if problems:
            raise BenchError("; ".join(problems))
    report(ctx.args, fair, fifo, theirs)
    print(f"(total {time.perf_counter() - started:.0f}s)")


def main(argv: list[str] | None = None) -> int:
    ctx = Context(parse_args(argv))
    return run_bench(bench(ctx), close=ctx.close_all)


if __name__ == "__main__":
    sys.exit(main())
