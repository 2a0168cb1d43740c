"""``python -m bench.events``: the outbox and its webhooks.

Three parts, each in fresh databases on the same Postgres, dropped at the end:

1. **Commit → receiver latency** on an idle system: a webhook dispatcher alone
   (``python -m server.webhooks``) and one endpoint, an aiohttp receiver in
   this process; one task inserted at a time with ``insert_task`` (the
   statement CreateTask runs, which writes the task.created event and its
   delivery), from its commit (the statement's return) to the signed POST
   arriving, p50/p99. Every POST is verified with ``standardwebhooks``.
2. **Deliveries per second** to a fast local receiver: E endpoints, N tasks
   inserted in one transaction (N x E deliveries at once); commit → the last
   one accepted.
3. **Drain with and without the outbox**: ``make bench-tasks``'s drain (N tiny
   tasks inserted in one transaction, ``python -m server.processor`` drains
   them; N / (first start → last end), Postgres's clock), rounds rotating, in
   the same run, three ways:
   - this tree;
   - this tree with the events not written: its database has a trigger that
     drops each task_events row before it is numbered, so the statements are
     the same and the outbox's own work (the id lock, the row, its index, its
     WAL, the notification) is what differs: what the outbox costs;
   - the tree just before the outbox (``git archive`` of the parent of the
     commit that added the task_events migration, or ``--baseline``: its
     migrations, its processor): the last figures, which differ in more than
     the outbox (the fair queue and tracing came later);
   - this tree, events not written and fairness off (FIFO claims): what of
     the rest the fair claim costs.

Exit status: 0 when everything ran and every delivery and task arrived (aims
met or not), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bench.infra import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, ROOT, BenchError, run_bench
from bench.taskenv import (
    TASKS_ENDED,
    Conn,
    TaskBatch,
    TaskEnv,
    Waiter,
    connect,
    insert_task,
    insert_tasks,
    insert_user,
    one,
)
from bench.tasks import TINY_FILTERS, tiny_png, validated
from server.storage.postgres.queries import QUERIES, parse
from server.webhooks.signing import new_secret

OUTBOX_MIGRATION = "db/migrations/20261203070000_task_events.sql"
LATENCY_AIM = 0.020  # p50
DRAIN_COST_AIM = 0.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    add = parser.add_argument
    add("--parts", default="latency,throughput,drain", help="comma-separated subset")
    add("--samples", type=int, default=200, help="latency: tasks one at a time (200)")
    add("--spacing", type=float, default=0.05, help="latency: seconds between tasks (0.05)")
    add("--endpoints", type=int, default=8, help="throughput: endpoints (8)")
    add("--deliveries", type=int, default=4000, help="throughput: deliveries in all (4000)")
    add("--tasks", type=int, default=2000, help="drain: tasks per round (2000)")
    add("--rounds", type=int, default=2, help="drain: rounds of each tree (2)")
    add("--concurrency", type=int, default=cpus, help=f"processor concurrency ({cpus})")
    add("--workers", type=int, default=cpus, help=f"worker processes ({cpus})")
    add("--baseline", default="", help="drain: the git ref to compare with (before the outbox)")
    add("--log-level", default="warning")
    add("--database-url", default=os.environ.get("TASKGATE_DATABASE_URL", DEFAULT_DATABASE_URL))
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not set(args.parts) <= {"latency", "throughput", "drain"} or not args.parts:
        parser.error("--parts: choose from latency, throughput, drain")
    for name in ("samples", "endpoints", "deliveries", "tasks", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be greater than 0")
    return args


# -- the receiver --------------------------------------------------------------------------


@dataclass
class Receiver:
    """An aiohttp receiver in this process: when each delivery arrived, verified."""

    secrets: dict[str, str] = field(default_factory=dict)  # path -> the endpoint's secret
    arrivals: dict[tuple[str, str], float] = field(default_factory=dict)  # (path, id) -> time
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.perf_counter()
        Webhook(self.secrets[request.path]).verify(body, dict(request.headers))
        self.arrivals.setdefault((request.path, request.headers["webhook-id"]), at)
        self.arrived.set()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, within: float = 120.0) -> None:
        async with asyncio.timeout(within):
            while len(self.arrivals) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def add_endpoint(
    conn: Conn, receiver: Receiver, user_id: Any, path: str, types: list[str]
) -> None:
    secret = new_secret()
    receiver.secrets[path] = secret
    await one(
        conn,
        QUERIES["insert_webhook_endpoint"],
        {
            "user_id": user_id,
            "url": receiver.url + path,
            "event_types": types,
            "secret": secret,
            "max_endpoints": 1000,
        },
    )


def tiny_batch(user_id: Any) -> TaskBatch:
    image = tiny_png()
    return TaskBatch(user_id, image, validated(image, TINY_FILTERS), TINY_FILTERS)


# -- the parts -----------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    envs: list[TaskEnv] = field(default_factory=list)
    report: list[str] = field(default_factory=list)

    def env(self, part: str, root: Path = ROOT, extra: dict[str, str] | None = None) -> TaskEnv:
        env = TaskEnv(
            base_database_url=self.args.database_url,
            redis_url=DEFAULT_REDIS_URL,
            log_level=self.args.log_level,
            tag=f"{os.getpid()}_{part}",
            concurrency=self.args.concurrency,
            workers=self.args.workers,
            root=root,
            extra_env={
                "TASKGATE_WEBHOOK_ALLOW_HTTP": "true",
                "TASKGATE_WEBHOOK_ALLOW_PRIVATE": "true",
                **(extra or {}),
            },
        )
        self.envs.append(env)
        return env

    def close(self) -> list[str]:
        return [problem for env in self.envs for problem in env.close()]

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.report.append(line)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def dispatcher_env(ctx: Context, part: str) -> tuple[TaskEnv, Conn, Any]:
    env = ctx.env(part)
    env.migrate()
    conn = await connect(env.database_url)
    user_id = await insert_user(conn, f"bench-{part}")
    env.start_dispatcher()
    return env, conn, user_id


async def latency(ctx: Context, receiver: Receiver) -> None:
    env, conn, user_id = await dispatcher_env(ctx, "latency")
    batch = tiny_batch(user_id)
    await add_endpoint(conn, receiver, user_id, "/latency", ["task.created"])
    await asyncio.sleep(2.0)  # the dispatcher starts and LISTENs
    env.check_alive()
    samples: list[float] = []
    for number in range(ctx.args.samples):
        before = len(receiver.arrivals)
        await insert_task(conn, batch, f"latency-{number}")
        committed = time.perf_counter()
        await receiver.wait_for(before + 1, within=30)
        arrived = max(receiver.arrivals.values())
        samples.append(arrived - committed)
        await asyncio.sleep(ctx.args.spacing)
    p50, p99 = quantile(samples, 0.5), quantile(samples, 0.99)
    aim = "met" if p50 < LATENCY_AIM else "NOT met"
    ctx.say(
        f"commit -> receiver, idle, {len(samples)} tasks one at a time: p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms (aim p50 < {LATENCY_AIM * 1000:.0f} ms: {aim})"
    )
    await conn.close()


async def throughput(ctx: Context, receiver: Receiver) -> None:
    env, conn, user_id = await dispatcher_env(ctx, "throughput")
    endpoints = ctx.args.endpoints
    tasks = max(1, ctx.args.deliveries // endpoints)
    for number in range(endpoints):
        await add_endpoint(conn, receiver, user_id, f"/fast/{number}", ["task.created"])
    batch = tiny_batch(user_id)
    await asyncio.sleep(2.0)
    env.check_alive()
    before = len(receiver.arrivals)
    started = time.perf_counter()
    await insert_tasks(conn, batch, tasks, "throughput")
    committed = time.perf_counter()
    await receiver.wait_for(before + tasks * endpoints, within=300)
    took = time.perf_counter() - committed
    ctx.say(
        f"deliveries to a fast local receiver: {tasks * endpoints} ({endpoints} endpoints x "
        f"{tasks} events) in {took:.2f} s after the commit: {tasks * endpoints / took:.0f}/s "
        f"(inserting took {committed - started:.2f} s)"
    )
    await conn.close()


def baseline_tree(ref: str) -> tuple[Path, str]:
    """The source tree at ``ref`` (default: before the outbox), extracted with git archive."""
    if not ref:
        added = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%H", "--", OUTBOX_MIGRATION],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        if not added:
            raise BenchError(f"no commit adds {OUTBOX_MIGRATION}: give --baseline")
        ref = subprocess.run(
            ["git", "rev-parse", "--short=12", added[-1] + "^"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    target = Path(tempfile.mkdtemp(prefix="taskgate-bench-baseline-"))
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target, ref


@dataclass
class Tree:
    """A source tree under test: its processor, its database, its insert_task."""

    env: TaskEnv
    conn: Conn
    batch: TaskBatch
    insert: Any
    events: int = 0


async def drain_once(tree: Tree, label: str, count: int) -> float:
    env, conn = tree.env, tree.conn
    await insert_tasks(conn, tree.batch, count, label, tree.insert)
    await Waiter(conn, TASKS_ENDED, (label,), count, env.check_alive).wait()
    row = await one(
        conn,
        "SELECT count(*) FILTER (WHERE status = 'completed') AS ok, "
        "extract(epoch FROM max(finished_at) - min(started_at))::float8 AS span "
        "FROM tasks WHERE request_id = %s",
        (label,),
    )
    if row["ok"] != count:
        raise BenchError(f"{label}: {row['ok']} of {count} tasks completed")
    return float(count / row["span"])


# Installed in the "events not written" database: fires before the id trigger
# (triggers fire in name order) and drops the row, so nothing of the outbox's
# writes happens (the id lock, the sequence, the row, its index entries, its
# WAL, the notification), while the statements are this tree's own.
SKIP_EVENTS = """
CREATE FUNCTION bench_skip_task_event() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RETURN NULL; END; $$;
CREATE TRIGGER task_events_0_bench_skip BEFORE INSERT ON task_events
    FOR EACH ROW EXECUTE FUNCTION bench_skip_task_event();
"""


async def drain(ctx: Context) -> None:
    baseline, ref = baseline_tree(ctx.args.baseline)
    fifo = {"TASKGATE_QUEUE_FAIRNESS": "false"}
    # name: (tree, database set-up after its migrations, processor environment)
    trees: dict[str, tuple[Path, str, dict[str, str]]] = {
        "with the outbox": (ROOT, "", {}),
        "events not written": (ROOT, SKIP_EVENTS, {}),
        f"before the outbox ({ref})": (baseline, "", {}),
        "events not written, FIFO claims": (ROOT, SKIP_EVENTS, fifo),
    }
    setups: dict[str, Tree] = {}
    for number, (name, (root, setup, extra)) in enumerate(trees.items()):
        env = ctx.env(f"drain_{number}", root=root, extra=extra)
        env.migrate()
        conn = await connect(env.database_url)
        if setup:
            await conn.execute(setup)
        user_id = await insert_user(conn, "bench-drain")
        env.start_processor()
        statements = parse((root / "server/storage/postgres/queries.sql").read_text())
        setups[name] = Tree(env, conn, tiny_batch(user_id), statements["insert_task"])
    await asyncio.sleep(3.0)
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for number in range(ctx.args.rounds):
        # The order rotates: no setup always runs first (or right after another's drain).
        names = list(setups)[number % len(setups) :] + list(setups)[: number % len(setups)]
        for name in names:
            rate = await drain_once(setups[name], f"drain-{number}", ctx.args.tasks)
            rates[name].append(rate)
            ctx.say(f"drain round {number + 1}, {name}: {rate:.0f} tasks/s")
    for tree in setups.values():
        has = await one(tree.conn, "SELECT to_regclass('task_events') IS NOT NULL AS t", ())
        if has["t"]:
            events = await one(tree.conn, "SELECT count(*) AS n FROM task_events", ())
            tree.events = int(events["n"])
    on, off, before, unfair = rates
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ctx.say(
        f"drain of {ctx.args.tasks} tiny tasks, medians of {ctx.args.rounds} rounds: "
        + ", ".join(f"{name} {rate:.0f}/s" for name, rate in medians.items())
        + "; events written: "
        + ", ".join(f"{name} {tree.events}" for name, tree in setups.items())
    )
    # Each round's runs are minutes apart at most: their ratio is less exposed to the load.
    for other, what in ((off, "its writes (same tree, events not written)"),
                        (before, f"against the tree before it ({ref})")):  # fmt: skip
        ratios = [a / b for a, b in zip(rates[on], rates[other], strict=True)]
        cost = 1 - statistics.median(ratios)
        aim = "met" if cost <= DRAIN_COST_AIM else "NOT met"
        ctx.say(
            f"  the outbox costs {cost * 100:.1f} % of the drain, {what}; per-round ratios "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (aim <= {DRAIN_COST_AIM * 100:.0f} %: {aim})"
        )
    ratios = [a / b for a, b in zip(rates[off], rates[unfair], strict=True)]
    ctx.say(
        f"  (not the outbox's: the fair claim costs {(1 - statistics.median(ratios)) * 100:.1f} % "
        f"against FIFO claims, events not written in both; per-round ratios "
        f"{', '.join(f'{r:.2f}' for r in ratios)})"
    )
    for tree in setups.values():
        await tree.conn.close()
    shutil.rmtree(baseline, ignore_errors=True)


async def bench(ctx: Context) -> None:
    receiver = Receiver()
    await receiver.start()
    parts: dict[str, Callable[[], Any]] = {
        "latency": lambda: latency(ctx, receiver),
        "throughput": lambda: throughput(ctx, receiver),
        "drain": lambda: drain(ctx),
    }
    try:
        for part in ctx.args.parts:
            await parts[part]()
    finally:
        await receiver.stop()
    print("\n".join(["", "summary:", *ctx.report]))


def main(argv: list[str] | None = None) -> int:
    ctx = Context(parse_args(argv))
    return run_bench(bench(ctx), close=ctx.close)


if __name__ == "__main__":
    sys.exit(main())
