"""``python -m bench.events``: the outbox and its webhooks.

Four parts, each in fresh databases on the same Postgres, dropped at the end:

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
   the same run, every processor started afresh each round (one process can
   run a few per cent faster or slower than an identical one for its whole
   life), five ways:
   - this tree;
   - this tree with the events not written: its database has a trigger that
     drops each task_events row before it is numbered, so the statements are
     the same and the outbox's writes (the id lock, the row, its index, its
     WAL, the notification) are what differs;
   - this tree without the outbox: a copy of the tree whose statements write
     no event (their ``events`` CTEs cut out of ``queries.sql``) and build no
     payload (the ``task_snapshot`` fragment ``'{}'``): everything the outbox
     adds to the drain, what the aim judges;
   - the tree just before the outbox (``git archive`` of the parent of the
     commit that added the task_events migration, or ``--baseline``: its
     migrations, its processor): the last figures, which differ in more than
     the outbox (the fair queue and tracing came later);
   - this tree again, a database of its own: the control, how far apart two
     identical setups measure in this run.

4. **The outbox's statements alone**: the processor's claim (10 tasks) and its
   batched finish (those 10), 20 of each per transaction, rolled back so
   every round sees the same 3,000 pending tasks, on one connection with the
   processor's generic plans; the Postgres backend's CPU time per task (from
   /proc, when Postgres runs on this machine) and the wall time, rounds
   rotating, four ways: with the outbox, events not written (the trigger
   above, enabled inside the transaction), without the outbox (the statements
   of the copy above), and the tree before the outbox (its statements, on a
   database of its own migrations). No processor, no scheduling: far steadier
   than the drain's rates, which swing by a tenth or more between identical
   setups on a shared machine. With the drain part in
   the same run, the cost is also put as a share of the drain's time per task.

Exit status: 0 when everything ran and every delivery and task arrived (aims
met or not), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
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

import psycopg
from aiohttp import web
from psycopg.rows import dict_row
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
CONTROL = "with the outbox, again"  # a second identical setup: the drain's noise floor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    add = parser.add_argument
    add("--parts", default="latency,throughput,drain,statements", help="comma-separated subset")
    add("--samples", type=int, default=200, help="latency: tasks one at a time (200)")
    add("--spacing", type=float, default=0.05, help="latency: seconds between tasks (0.05)")
    add("--endpoints", type=int, default=8, help="throughput: endpoints (8)")
    add("--deliveries", type=int, default=4000, help="throughput: deliveries in all (4000)")
    add("--tasks", type=int, default=2000, help="drain: tasks per round (2000)")
    add("--rounds", type=int, default=4, help="drain: rounds of each tree (4)")
    add("--statement-rounds", type=int, default=30, help="statements: rounds of each way (30)")
    add("--concurrency", type=int, default=cpus, help=f"processor concurrency ({cpus})")
    add("--workers", type=int, default=cpus, help=f"worker processes ({cpus})")
    add("--baseline", default="", help="drain: the git ref to compare with (before the outbox)")
    add("--log-level", default="warning")
    add("--database-url", default=os.environ.get("TASKGATE_DATABASE_URL", DEFAULT_DATABASE_URL))
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not set(args.parts) <= {"latency", "throughput", "drain", "statements"} or not args.parts:
        parser.error("--parts: choose from latency, throughput, drain, statements")
    for name in ("samples", "endpoints", "deliveries", "tasks", "rounds", "statement_rounds"):
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
    drain_per_task: float = 0.0  # seconds, with the outbox (set by the drain part)

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


def without_outbox() -> Path:
    """A copy of this tree's tracked files whose statements write no event: no
    ``events`` CTE (the INSERT INTO task_events of each statement that changes a task),
    and the ``task_snapshot`` fragment (the payload) ``'{}'``."""
    target = Path(tempfile.mkdtemp(prefix="taskgate-bench-no-outbox-"))
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    queries = target / "server/storage/postgres/queries.sql"
    text = queries.read_text()
    head, _, rest = text.partition("-- fragment: task_snapshot\n")
    if not rest:
        raise BenchError("queries.sql has no task_snapshot fragment")
    _, _, after = rest.partition("\n\n")  # the fragment runs to the first blank line
    text = f"{head}-- fragment: task_snapshot\n'{{}}'::jsonb\n\n{after}"
    # Each events CTE runs from "), events AS (" to the first line that is ")" alone.
    text, cut = _EVENTS_CTE.subn(")", text)
    if not cut or "INSERT INTO task_events" in text:
        raise BenchError("queries.sql: the events CTEs were not all found")
    queries.write_text(text)
    return target


_EVENTS_CTE = re.compile(r"\), events AS \(\n.*?\n\)", re.DOTALL)


async def drain(ctx: Context) -> None:
    baseline, ref = baseline_tree(ctx.args.baseline)
    bare = without_outbox()
    try:
        await _drain(ctx, baseline, ref, bare)
    finally:
        shutil.rmtree(baseline, ignore_errors=True)
        shutil.rmtree(bare, ignore_errors=True)


def _restart_processor(env: TaskEnv) -> None:
    """A fresh processor (the last one's log deleted: only the running one's is kept)."""
    log = env._log_path
    env._stop_server()
    if log is not None:
        log.unlink(missing_ok=True)
    env.start_processor()


async def _drain(ctx: Context, baseline: Path, ref: str, bare: Path) -> None:
    # name: (tree, database set-up after its migrations)
    trees: dict[str, tuple[Path, str]] = {
        "with the outbox": (ROOT, ""),
        "events not written": (ROOT, SKIP_EVENTS),
        "without the outbox": (bare, ""),
        f"before the outbox ({ref})": (baseline, ""),
        CONTROL: (ROOT, ""),
    }
    setups: dict[str, Tree] = {}
    for number, (name, (root, setup)) in enumerate(trees.items()):
        env = ctx.env(f"drain_{number}", root=root)
        env.migrate()
        conn = await connect(env.database_url)
        if setup:
            await conn.execute(setup)
        user_id = await insert_user(conn, "bench-drain")
        statements = parse((root / "server/storage/postgres/queries.sql").read_text())
        setups[name] = Tree(env, conn, tiny_batch(user_id), statements["insert_task"])
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for number in range(ctx.args.rounds):
        # The order rotates: no setup always runs first (or right after another's drain).
        names = list(setups)[number % len(setups) :] + list(setups)[: number % len(setups)]
        for name in names:
            tree = setups[name]
            _restart_processor(tree.env)
            await asyncio.sleep(2.0)  # started and listening before the batch commits
            rate = await drain_once(tree, f"drain-{number}", ctx.args.tasks)
            rates[name].append(rate)
            ctx.say(f"drain round {number + 1}, {name}: {rate:.0f} tasks/s")
    for tree in setups.values():
        has = await one(tree.conn, "SELECT to_regclass('task_events') IS NOT NULL AS t", ())
        if has["t"]:
            events = await one(tree.conn, "SELECT count(*) AS n FROM task_events", ())
            tree.events = int(events["n"])
    on, unwritten, bare_rates, before, control = rates
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ctx.drain_per_task = 1 / medians[on]
    ctx.say(
        f"drain of {ctx.args.tasks} tiny tasks, medians of {ctx.args.rounds} rounds: "
        + ", ".join(f"{name} {rate:.0f}/s" for name, rate in medians.items())
        + "; events written: "
        + ", ".join(f"{name} {tree.events}" for name, tree in setups.items())
    )
    # Each round's runs are minutes apart at most: their ratio is less exposed to the load.
    for other, what, judged in (
        (bare_rates, "all of it (same tree, no payload built, no event written)", True),
        (unwritten, "its writes alone (same tree, payloads built, events not written)", False),
        (before, f"against the tree before it ({ref}; more than the outbox differs)", False),
    ):
        ratios = [a / b for a, b in zip(rates[on], rates[other], strict=True)]
        cost = 1 - statistics.median(ratios)
        met = "met" if cost <= DRAIN_COST_AIM else "NOT met"
        aim = f" (aim <= {DRAIN_COST_AIM * 100:.0f} %: {met})" if judged else ""
        ctx.say(
            f"  the outbox costs {cost * 100:.1f} % of the drain, {what}; per-round ratios "
            f"{', '.join(f'{r:.2f}' for r in ratios)}{aim}"
        )
    ratios = [a / b for a, b in zip(rates[control], rates[on], strict=True)]
    ctx.say(
        f"  control: {control} (the same tree and set-up) at "
        f"{statistics.median(ratios) * 100:.1f} % of with the outbox; per-round ratios "
        f"{', '.join(f'{r:.2f}' for r in ratios)}: differences of that size are this "
        "machine's noise"
    )
    for tree in setups.values():
        await tree.conn.close()


def _finish_params(owner: str, claimed: list[dict[str, Any]]) -> dict[str, Any]:
    count = len(claimed)
    output = tiny_png()
    return {
        "owner": owner,
        "running": "running",
        "ids": [row["task_id"] for row in claimed],
        "attempts": [row["attempt"] for row in claimed],
        "statuses": ["completed"] * count,
        "errors": [None] * count,
        "images": [output] * count,
        "content_types": ["image/png"] * count,
        "widths": [8] * count,
        "heights": [8] * count,
    }


def _backend_cpu(pid: int) -> float | None:
    """utime + stime of a Postgres backend on this machine, in seconds (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Statements:
    """One way of running the claim and the finish: a database, its statements, and
    whether that database's trigger drops the events."""

    runner: Conn  # on the processor's generic plans
    pid: int  # its Postgres backend
    queries: dict[str, Any]
    claim: str = "claim_tasks_fair"
    skip: bool = False


async def _statements_database(ctx: Context, part: str, root: Path, skip: bool) -> Conn:
    """A fresh database migrated from ``root``'s tree with 3,000 pending tasks (and the
    events-dropping trigger, disabled, when ``skip``); the runner's connection to it."""
    env = ctx.env(part, root=root)
    env.migrate()
    queries = parse((root / "server/storage/postgres/queries.sql").read_text())
    async with await connect(env.database_url) as conn:
        if skip:
            await conn.execute(SKIP_EVENTS)
            await conn.execute("ALTER TABLE task_events DISABLE TRIGGER task_events_0_bench_skip")
        user_id = await insert_user(conn, "bench-statements")
        await insert_tasks(conn, tiny_batch(user_id), 3000, "statements", queries["insert_task"])
    runner: Conn = await psycopg.AsyncConnection.connect(  # the processor's plans
        env.database_url,
        autocommit=True,
        row_factory=dict_row,
        options="-c plan_cache_mode=force_generic_plan",
    )
    return runner


async def _claim_and_finish(way: Statements, batches: int, per_batch: int) -> None:
    """``batches`` claims of ``per_batch`` tasks, each finished, in a rolled-back transaction."""
    runner = way.runner
    async with runner.transaction(force_rollback=True):
        if way.skip:
            await runner.execute("ALTER TABLE task_events ENABLE TRIGGER task_events_0_bench_skip")
        for _ in range(batches):
            cursor = await runner.execute(
                way.queries[way.claim],
                {"owner": "bench", "limit": per_batch, "lease": 30, "max_running": 0},
            )
            claimed = await cursor.fetchall()
            if len(claimed) != per_batch:
                raise BenchError(f"claimed {len(claimed)} of {per_batch}")
            cursor = await runner.execute(
                way.queries["finish_tasks"], _finish_params("bench", claimed)
            )
            if len(await cursor.fetchall()) != per_batch:
                raise BenchError("a finish did not end its tasks")


async def statements(ctx: Context) -> None:
    bare = without_outbox()
    baseline, ref = baseline_tree(ctx.args.baseline)
    try:
        none = parse((bare / "server/storage/postgres/queries.sql").read_text())
        old = parse((baseline / "server/storage/postgres/queries.sql").read_text())
        here = await _statements_database(ctx, "statements", ROOT, skip=True)
        before = await _statements_database(ctx, "statements_before", baseline, skip=False)
    finally:
        shutil.rmtree(bare, ignore_errors=True)
        shutil.rmtree(baseline, ignore_errors=True)
    pids = {}
    for runner in (here, before):
        pids[id(runner)] = int((await one(runner, "SELECT pg_backend_pid() AS pid", ()))["pid"])
    old_claim = "claim_tasks" if "claim_tasks" in old else "claim_tasks_fair"
    ways = {
        "with the outbox": Statements(here, pids[id(here)], QUERIES),
        "events not written": Statements(here, pids[id(here)], QUERIES, skip=True),
        "without the outbox": Statements(here, pids[id(here)], none),
        f"before the outbox ({ref})": Statements(before, pids[id(before)], old, old_claim),
    }
    try:
        walls, cpus = await _measure_statements(ctx, ways)
    finally:
        await here.close()
        await before.close()
    _report_statements(ctx, walls, cpus)


BATCHES, PER_BATCH = 20, 10


async def _measure_statements(
    ctx: Context, ways: dict[str, Statements]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per task, wall and Postgres CPU, of each way, rounds rotating."""
    walls: dict[str, list[float]] = {name: [] for name in ways}
    cpus: dict[str, list[float]] = {name: [] for name in ways}
    tasks = BATCHES * PER_BATCH
    for number in range(ctx.args.statement_rounds):
        names = list(ways)[number % len(ways) :] + list(ways)[: number % len(ways)]
        for name in names:
            way = ways[name]
            started, cpu = time.perf_counter(), _backend_cpu(way.pid)
            await _claim_and_finish(way, BATCHES, PER_BATCH)
            walls[name].append((time.perf_counter() - started) / tasks)
            after = _backend_cpu(way.pid)
            if cpu is not None and after is not None:
                cpus[name].append((after - cpu) / tasks)
    return walls, cpus


def _report_statements(
    ctx: Context, walls: dict[str, list[float]], cpus: dict[str, list[float]]
) -> None:
    ctx.say(
        f"statements: claim {PER_BATCH} + finish {PER_BATCH}, {BATCHES} of each per "
        f"rolled-back transaction, {ctx.args.statement_rounds} rounds; per task:"
    )
    for name in walls:
        cpu_part = (
            f", Postgres CPU {statistics.fmean(cpus[name]) * 1e6:.0f} us (mean)"
            if cpus[name]
            else ""
        )
        ctx.say(f"  {name}: wall {statistics.median(walls[name]) * 1e6:.0f} us (median){cpu_part}")
    figures = cpus if all(cpus.values()) else walls
    kind = "Postgres CPU" if figures is cpus else "wall time"
    on = statistics.fmean(figures["with the outbox"])
    for other, what in (("without the outbox", "all of it"), ("events not written", "its writes")):
        cost = max(0.0, on - statistics.fmean(figures[other]))
        share = ""
        if ctx.drain_per_task:
            share = f": {cost / ctx.drain_per_task * 100:.1f} % of the drain's time per task"
            share += f" ({ctx.drain_per_task * 1e6:.0f} us)"
        ctx.say(f"  the outbox, {what}: {cost * 1e6:.0f} us of {kind} per task{share}")


async def bench(ctx: Context) -> None:
    receiver = Receiver()
    await receiver.start()
    parts: dict[str, Callable[[], Any]] = {
        "latency": lambda: latency(ctx, receiver),
        "throughput": lambda: throughput(ctx, receiver),
        "drain": lambda: drain(ctx),
        "statements": lambda: statements(ctx),
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
