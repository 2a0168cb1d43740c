"""``python -m bench.tasks``: the task queue and processor, next to procrastinate.

Four parts, each in fresh databases on the same Postgres, dropped at the end:

1. **Drain rate**: N tiny tasks (an 8x8 grey PNG, one grayscale filter) are
   inserted in one transaction with ``insert_task`` (the statement CreateTask
   runs) while ``python -m server.processor`` (concurrency C, W worker
   processes) waits; it drains them. Next to it, a procrastinate worker
   (``python -m bench.procrastinate_app``, concurrency C) drains N no-op jobs
   deferred in one ``batch_defer_async``. Rates are N / (first start -> last
   end) on Postgres's clock; rounds alternate the two systems.
2. **End to end**: ``python -m server`` (embedded processor) and K concurrent
   grpc.aio clients calling CreateTask for T seconds; tasks/s created and
   completed, every task checked COMPLETED.
3. **Create-to-start latency** on an idle processor: one CreateTask (gRPC) at
   a time, alternating with one procrastinate ``defer_async``; started_at -
   created_at (and procrastinate's started - deferred events), p50/p99.
4. **Image work**: a 1024x1024 RGB PNG through grayscale, blur 2 and resize
   512x512 to PNG, one task at a time (finished_at - started_at), against the
   same Pillow calls in a plain loop in this process, interleaved.

Exit status: 0 when everything ran and every task completed (aims met or not),
1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

import grpc
from PIL import Image, ImageFilter
from prometheus_client import CollectorRegistry

from bench.auth import register_and_login
from bench.infra import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, BenchError, run_bench
from bench.procrastinate_app import NOOP, make_app
from bench.procstat import CpuGroups, CpuUse, children
from bench.taskenv import (
    BENCH_APPLICATION,
    JOBS_ENDED,
    TASKS_ENDED,
    Conn,
    ProcrastinateEnv,
    TaskBatch,
    TaskEnv,
    Waiter,
    backend_pids,
    column,
    connect,
    insert_task,
    insert_tasks,
    insert_user,
    one,
)
from server.imaging.filters import FilterStep, steps_from_json
from server.imaging.images import PNG_COMPRESS_LEVEL, ImageInfo, probe
from server.imaging.pipeline import run_pipeline, validate_pipeline
from server.metrics import TaskMetrics
from server.processor.config import ProcessorSettings
from server.processor.runtime import ProcessorRuntime
from server.storage.postgres.listener import Listener
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import task_service_pb2_grpc as task_grpc

DRAIN_AIM, LATENCY_AIM, IMAGE_AIM = 1.5, 0.010, 1.10
TINY_FILTERS: list[dict[str, Any]] = [{"grayscale": {}}]
IMAGE_FILTERS: list[dict[str, Any]] = [
    {"grayscale": {}},
    {"blur": {"radius": 2.0}},
    {"resize": {"width": 512, "height": 512}},
]
PARTS = ("drain", "e2e", "latency", "image")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cpus = cpu_count()
    parser = argparse.ArgumentParser(
        prog="python -m bench.tasks",
        description="Task queue and processor: drain rate vs procrastinate, end to end, "
        "create-to-start latency, image work vs plain Pillow.",
    )
    add = parser.add_argument
    add("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    add("--tasks", type=int, default=2000, help="drain: tasks (and jobs) per round (2000)")
    add("--rounds", type=int, default=2, help="drain: rounds, alternating the systems (2)")
    add("--concurrency", type=int, default=cpus, help=f"processor/worker concurrency ({cpus})")
    add("--workers", type=int, default=cpus, help=f"taskgate worker processes ({cpus})")
    add("--clients", type=int, default=8, help="end to end: concurrent gRPC clients (8)")
    add("--duration", type=float, default=10.0, help="end to end: seconds of creating (10)")
    add("--samples", type=int, default=200, help="latency: tasks (and jobs) one at a time (200)")
    add("--spacing", type=float, default=0.05, help="latency: seconds between tasks (0.05)")
    add("--image-tasks", type=int, default=20, help="image work: tasks one at a time (20)")
    add("--image-size", type=int, default=1024, help="image work: input side in pixels (1024)")
    add("--log-level", default="warning", help="taskgate's TASKGATE_LOG_LEVEL (warning)")
    add(
        "--database-url",
        default=os.environ.get("TASKGATE_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="Postgres server to use; taskgate_bench_<random>* databases are made and dropped",
    )
    add("--redis-url", default=os.environ.get("TASKGATE_REDIS_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown or not args.parts:
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    for name in ("tasks", "rounds", "concurrency", "workers", "clients", "duration"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be greater than 0")
    for name in ("samples", "spacing", "image_tasks"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be greater than 0")
    if args.image_size < 512:
        parser.error("--image-size must be at least 512 (the pipeline resizes to 512x512)")
    return args


# -- inputs ---------------------------------------------------------------------------------


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def tiny_png() -> bytes:
    """The lightest valid input: an 8x8 grey gradient."""
    return png(Image.linear_gradient("L").resize((8, 8)))


def photo_png(side: int) -> bytes:
    """An RGB image with smooth areas and noise, so PNG has work to do both ways."""
    size = (side, side)
    red = Image.linear_gradient("L").resize(size)
    green = Image.radial_gradient("L").resize(size)
    blue = Image.effect_noise(size, 48)
    return png(Image.merge("RGB", (red, green, blue)))


def validated(image: bytes, filters: list[dict[str, Any]]) -> ImageInfo:
    """What CreateTask checks (bytes, format, pixels, pipeline); BenchError if it would refuse."""
    info = probe(image, max_bytes=10 * 1024 * 1024, max_pixels=40_000_000)
    steps = [FilterStep.from_json(step) for step in filters]
    violations = validate_pipeline(steps, info.size, max_pixels=40_000_000, output_format="png")
    if violations:
        raise BenchError(f"the bench's own task is invalid: {violations}")
    return info


def tiny_request() -> task_pb.CreateTaskRequest:
    return task_pb.CreateTaskRequest(
        image=tiny_png(), filters=[task_pb.Filter(grayscale=task_pb.Filter.Grayscale())]
    )


def plain_pillow(data: bytes, side: int = 512) -> bytes:
    """The image part's work with Pillow alone: decode, the three filters, encode PNG."""
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    grey = decoded.convert("L").filter(ImageFilter.GaussianBlur(2.0))
    small = grey.resize((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


def percentile(values: Sequence[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


# -- 1. drain rate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    system: str
    count: int
    span: float  # first start -> last end, Postgres's clock
    wall: float  # commit -> every item seen ended (20 ms polls)
    # mean start -> end of one item (taskgate: from its claim, so a prefetched wait counts)
    busy: float
    cpu: CpuUse

    @property
    def rate(self) -> float:
        return self.count / self.span

    @property
    def wall_rate(self) -> float:
        return self.count / self.wall


class Drainer(Protocol):
    name: str

    async def groups(self) -> dict[str, list[int]]: ...
    async def enqueue(self, label: str, count: int) -> None: ...
    async def wait(self, label: str, count: int) -> None: ...
    async def timing(self, label: str, count: int) -> tuple[float, float]: ...


async def drain_round(drainer: Drainer, label: str, count: int) -> Drain:
    """Enqueue ``count`` items at once and time their draining; CPU per process group."""
    groups = await drainer.groups()
    before = CpuGroups.take(groups)
    await drainer.enqueue(label, count)
    committed = time.perf_counter()
    await drainer.wait(label, count)
    wall = time.perf_counter() - committed
    for name, pids in (await drainer.groups()).items():
        groups[name] = sorted(set(groups.get(name, [])) | set(pids))
    cpu = CpuGroups.take(groups).since(before)
    span, busy = await drainer.timing(label, count)
    return Drain(drainer.name, count, span, wall, busy, cpu)


@dataclass
class TaskgateDrainer:
    env: TaskEnv
    conn: Conn
    batch: TaskBatch
    name: str = "taskgate"

    async def groups(self) -> dict[str, list[int]]:
        assert self.env.process is not None
        pid = self.env.process.pid
        return {"processor": [pid], "workers": children(pid), "postgres": await self._backends()}

    async def _backends(self) -> list[int]:
        return await backend_pids(self.conn)

    async def enqueue(self, label: str, count: int) -> None:
        await insert_tasks(self.conn, self.batch, count, label)

    async def wait(self, label: str, count: int) -> None:
        await Waiter(self.conn, TASKS_ENDED, (label,), count, self.env.check_alive).wait()

    async def timing(self, label: str, count: int) -> tuple[float, float]:
        row = await one(
            self.conn,
            "SELECT count(*) FILTER (WHERE status = 'completed' AND attempts = 1 "
            "  AND result_width = %s AND result_size_bytes > 0) AS ok, "
            "extract(epoch FROM max(finished_at) - min(started_at))::float8 AS span, "
            "extract(epoch FROM avg(finished_at - started_at))::float8 AS busy "
            "FROM tasks WHERE request_id = %s",
            (self.batch.info.width, label),
        )
        if row["ok"] != count:
            raise BenchError(f"{label}: {row['ok']} of {count} tasks completed with a result")
        return row["span"], row["busy"]


@dataclass
class ProcrastinateDrainer:
    env: ProcrastinateEnv
    conn: Conn
    app: Any  # procrastinate.App, opened
    name: str = "procrastinate"

    async def groups(self) -> dict[str, list[int]]:
        assert self.env.process is not None
        return {"worker": [self.env.process.pid], "postgres": await backend_pids(self.conn)}

    async def enqueue(self, label: str, count: int) -> None:
        deferrer = self.app.tasks[NOOP].configure(queue=label)
        await deferrer.batch_defer_async(*({} for _ in range(count)))

    async def wait(self, label: str, count: int) -> None:
        await Waiter(self.conn, JOBS_ENDED, (label,), count, self.env.check_alive).wait()

    async def timing(self, label: str, count: int) -> tuple[float, float]:
        row = await one(
            self.conn,
            "SELECT count(*) AS ok, "
            "extract(epoch FROM max(s.at) - min(b.at))::float8 AS span, "
            "extract(epoch FROM avg(s.at - b.at))::float8 AS busy "
            "FROM procrastinate_events b "
            "JOIN procrastinate_events s ON s.job_id = b.job_id AND s.type = 'succeeded' "
            "JOIN procrastinate_jobs j ON j.id = b.job_id "
            "WHERE b.type = 'started' AND j.queue_name = %s",
            (label,),
        )
        if row["ok"] != count:
            raise BenchError(f"{label}: {row['ok']} of {count} procrastinate jobs succeeded")
        return row["span"], row["busy"]


@dataclass
class Context:
    args: argparse.Namespace
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    cleanups: list[Callable[[], list[str]]] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    aims: list[str] = field(default_factory=list)

    def task_env(self, part: str) -> TaskEnv:
        env = TaskEnv(
            base_database_url=self.args.database_url,
            redis_url=self.args.redis_url,
            log_level=self.args.log_level,
            tag=f"{self.tag}_{part}",
            concurrency=self.args.concurrency,
            workers=self.args.workers,
        )
        self.cleanups.append(env.close)
        return env

    def procrastinate_env(self, part: str) -> ProcrastinateEnv:
        env = ProcrastinateEnv(self.args.database_url, f"{self.tag}_{part}", self.args.concurrency)
        self.cleanups.append(env.close)
        return env

    def close_all(self) -> list[str]:
        problems: list[str] = []
        while self.cleanups:
            problems += self.cleanups.pop()()
        return problems


def progress(text: str) -> None:
    print(text, flush=True)


async def part_drain(ctx: Context) -> None:
    args = ctx.args
    env, penv = ctx.task_env("drain"), ctx.procrastinate_env("drain")
    await asyncio.to_thread(env.migrate)
    await penv.create()
    env.start_processor()
    penv.start_worker()
    image = tiny_png()
    async with (
        await connect(env.database_url) as tg_conn,
        await connect(penv.database_url) as pc_conn,
    ):
        user = await insert_user(tg_conn, "bench_drain")
        batch = TaskBatch(user, image, validated(image, TINY_FILTERS), TINY_FILTERS)
        app = make_app(penv.database_url, BENCH_APPLICATION)
        async with app.open_async():
            drainers: list[Drainer] = [
                TaskgateDrainer(env, tg_conn, batch),
                ProcrastinateDrainer(penv, pc_conn, app),
            ]
            for drainer in drainers:  # start-up, worker processes, first connections
                await drain_round(drainer, "warmup", 4 * args.concurrency)
            results: list[Drain] = []
            for number in range(1, args.rounds + 1):
                order = drainers if number % 2 else drainers[::-1]
                for drainer in order:
                    result = await drain_round(drainer, f"drain-{number}", args.tasks)
                    progress(
                        f"  drain round {number} {result.system:<14}{result.rate:>8,.0f}/s "
                        f"(wall {result.wall_rate:,.0f}/s; {result.count} verified)"
                    )
                    results.append(result)
    report_drain(ctx, results)


def report_drain(ctx: Context, results: list[Drain]) -> None:
    args, out = ctx.args, ctx.report
    version = metadata.version("procrastinate")
    out.append(
        f"1. DRAIN RATE  {args.tasks} items/round, concurrency {args.concurrency}, "
        f"{args.rounds} round(s) alternating"
    )
    out.append(
        "   taskgate: 8x8 L PNG + [grayscale] -> PNG, inserted with insert_task (CreateTask's "
        "INSERT) in one transaction; `python -m server.processor`, "
        f"TASKGATE_PROCESSOR_CONCURRENCY={args.concurrency}, WORKERS={args.workers}"
    )
    out.append(
        f"   procrastinate {version}: async no-op task, batch_defer_async (one statement); "
        f"worker subprocess, concurrency={args.concurrency}, listen_notify on"
    )
    out.append(
        "   rate = N / (first start -> last end, Postgres clock: tasks.started_at/finished_at, "
        "procrastinate_events); wall = commit -> all seen ended"
    )
    row = "   {:<7}{:<15}{:>10}{:>13}{:>22}"
    out.append(row.format("round", "system", "items/s", "wall items/s", "start->end per item"))
    for index, result in enumerate(results):
        number = index // 2 + 1
        out.append(
            row.format(
                number,
                result.system,
                f"{result.rate:,.0f}",
                f"{result.wall_rate:,.0f}",
                ms(result.busy),
            )
        )
    means = {
        system: statistics.fmean(r.rate for r in results if r.system == system)
        for system in ("taskgate", "procrastinate")
    }
    ratio = means["taskgate"] / means["procrastinate"]
    out.append(
        row.format("mean", "taskgate", f"{means['taskgate']:,.0f}", "", "")
        + f"   taskgate/procrastinate = {ratio:.2f}x"
    )
    out.append(row.format("mean", "procrastinate", f"{means['procrastinate']:,.0f}", "", ""))
    for result in results[-2:]:
        out.append(f"   CPU, last {result.system} round ({result.wall:.2f}s wall):")
        out.append(f"     {result.cpu.describe(result.wall)}")
        per_item = sum(result.cpu.groups.values()) / result.count * 1e6
        out.append(f"     system under test: {per_item:,.0f} us CPU per item")
    met = verdict(ratio >= DRAIN_AIM)
    ctx.aims.append(f"drain: taskgate >= {DRAIN_AIM}x procrastinate -> {ratio:.2f}x: {met}")


# -- 2. end to end ---------------------------------------------------------------------------


@dataclass
class Creators:
    stub: task_grpc.TaskServiceAsyncStub
    metadata: tuple[tuple[str, str], ...]
    request: task_pb.CreateTaskRequest
    created: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    async def create(self) -> None:
        try:
            await self.stub.CreateTask(self.request, metadata=self.metadata, timeout=30)
        except grpc.aio.AioRpcError as exc:
            key = f"{exc.code().name}: {exc.details()}"
            self.errors[key] = self.errors.get(key, 0) + 1
        else:
            self.created += 1

    async def run(self, clients: int, duration: float) -> float:
        deadline = time.monotonic() + duration
        started = time.perf_counter()

        async def client() -> None:
            while time.monotonic() < deadline:
                await self.create()

        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - started


async def server_groups(env: TaskEnv, conn: Conn) -> dict[str, list[int]]:
    assert env.process is not None
    pid = env.process.pid
    return {"server": [pid], "workers": children(pid), "postgres": await backend_pids(conn)}


async def wait_all_tasks(conn: Conn, env: TaskEnv, since: Any, total: int) -> None:
    query = (
        "SELECT count(*) FILTER (WHERE status = 'completed') AS ended, "
        "count(*) FILTER (WHERE status IN ('failed', 'cancelled')) AS failed "
        "FROM tasks WHERE created_at >= %s"
    )
    await Waiter(conn, query, (since,), total, env.check_alive).wait()


async def verify_results(creators: Creators, conn: Conn, since: Any, sample: int = 5) -> None:
    """A few results over gRPC, as a client reads them: 8x8, grey."""
    ids = await column(
        conn, "SELECT id FROM tasks WHERE created_at >= %s ORDER BY random() LIMIT %s",
        (since, sample),
    )  # fmt: skip
    for task_id in ids:
        call = creators.stub.GetTaskResult(
            task_pb.GetTaskResultRequest(task_id=str(task_id)),
            metadata=creators.metadata,
            timeout=10,
        )
        (body,) = [chunk async for chunk in call]  # one chunk: small results
        result = Image.open(io.BytesIO(body.data))
        if body.content_type != "image/png" or result.size != (8, 8) or result.mode != "L":
            raise BenchError(f"task {task_id}: unexpected result {result.size} {result.mode}")


async def part_end_to_end(ctx: Context) -> None:
    args = ctx.args
    env = ctx.task_env("e2e")
    await asyncio.to_thread(env.migrate)
    env.start_server()
    await env.wait_serving()
    async with (
        await connect(env.database_url) as conn,
        grpc.aio.insecure_channel(env.target) as channel,
    ):
        login = await register_and_login(channel)
        creators = Creators(
            task_grpc.TaskServiceStub(channel),
            (("authorization", f"Bearer {login.token}"),),
            tiny_request(),
        )
        warm_since = (await one(conn, "SELECT now() AS t"))["t"]
        await asyncio.gather(*(creators.create() for _ in range(4 * args.concurrency)))
        await wait_all_tasks(conn, env, warm_since, 4 * args.concurrency)
        creators.created = 0
        groups = await server_groups(env, conn)
        before = CpuGroups.take(groups)
        since = (await one(conn, "SELECT now() AS t"))["t"]
        elapsed = await creators.run(args.clients, args.duration)
        until = (await one(conn, "SELECT now() AS t"))["t"]
        cpu = CpuGroups.take(groups | await server_groups(env, conn)).since(before)
        if creators.errors:
            raise BenchError(f"CreateTask failed: {creators.errors}")
        await wait_all_tasks(conn, env, since, creators.created)
        await verify_results(creators, conn, since)
        row = await one(
            conn,
            "SELECT count(*) AS n, "
            "count(*) FILTER (WHERE status = 'completed' AND attempts = 1) AS ok, "
            "count(*) FILTER (WHERE finished_at <= %s) AS in_window, "
            "extract(epoch FROM max(finished_at) - %s)::float8 AS to_last "
            "FROM tasks WHERE created_at >= %s",
            (until, since, since),
        )
    if row["n"] != creators.created or row["ok"] != creators.created:
        raise BenchError(f"{creators.created} created, {row['n']} stored, {row['ok']} completed")
    report_end_to_end(ctx, creators.created, elapsed, row, cpu)
    progress(f"  end to end: {creators.created / elapsed:,.0f} created/s, all completed")


def report_end_to_end(
    ctx: Context, created: int, elapsed: float, row: dict[str, Any], cpu: CpuUse
) -> None:
    args, out = ctx.args, ctx.report
    out.append(
        f"2. END TO END  {args.clients} grpc.aio clients (one channel, in the bench process) "
        f"calling CreateTask (8x8 PNG, [grayscale]) for {elapsed:.1f}s"
    )
    out.append(
        f"   server: `python -m server`, embedded processor, concurrency {args.concurrency}, "
        f"{args.workers} workers"
    )
    window = row["in_window"]
    out.append(
        f"   created   {created / elapsed:>8,.0f} tasks/s  ({created} tasks, all COMPLETED "
        "with 1 attempt; results checked over GetTaskResult)"
    )
    out.append(
        f"   completed {window / elapsed:>8,.0f} tasks/s  while creating ({window} done in the "
        f"window, {created - window} still queued at its end)"
    )
    out.append(
        f"   completed {created / row['to_last']:>8,.0f} tasks/s  overall (window start -> last "
        f"finished_at, {row['to_last']:.1f}s)"
    )
    out.append(f"   CPU over the window: {cpu.describe(elapsed)}")


# -- 3. latency ------------------------------------------------------------------------------


async def procrastinate_latencies(conn: Conn, queue: str) -> list[float]:
    return await column(
        conn,
        "SELECT extract(epoch FROM s.at - d.at)::float8 FROM procrastinate_events d "
        "JOIN procrastinate_events s ON s.job_id = d.job_id AND s.type = 'started' "
        "JOIN procrastinate_jobs j ON j.id = d.job_id "
        "WHERE d.type = 'deferred' AND j.queue_name = %s",
        (queue,),
    )


async def part_latency(ctx: Context) -> None:
    args = ctx.args
    env, penv = ctx.task_env("latency"), ctx.procrastinate_env("latency")
    await asyncio.to_thread(env.migrate)
    await penv.create()
    env.start_server()
    penv.start_worker()
    await env.wait_serving()
    app = make_app(penv.database_url, BENCH_APPLICATION)
    async with (
        await connect(env.database_url) as conn,
        await connect(penv.database_url) as pc_conn,
        grpc.aio.insecure_channel(env.target) as channel,
        app.open_async(),
    ):
        login = await register_and_login(channel)
        creators = Creators(
            task_grpc.TaskServiceStub(channel),
            (("authorization", f"Bearer {login.token}"),),
            tiny_request(),
        )
        for _ in range(5):  # warm up both: connections, worker processes
            await creators.create()
            await app.tasks[NOOP].configure(queue="warmup").defer_async()
            await asyncio.sleep(args.spacing)
        await Waiter(pc_conn, JOBS_ENDED, ("warmup",), 5, penv.check_alive).wait()
        since = (await one(conn, "SELECT now() AS t"))["t"]
        for _ in range(args.samples):
            await creators.create()
            await asyncio.sleep(args.spacing / 2)
            await app.tasks[NOOP].configure(queue="latency").defer_async()
            await asyncio.sleep(args.spacing / 2)
        if creators.errors:
            raise BenchError(f"CreateTask failed: {creators.errors}")
        await wait_all_tasks(conn, env, since, args.samples)
        await Waiter(pc_conn, JOBS_ENDED, ("latency",), args.samples, penv.check_alive).wait()
        ours = await column(
            conn,
            "SELECT extract(epoch FROM started_at - created_at)::float8 FROM tasks "
            "WHERE created_at >= %s AND status = 'completed'",
            (since,),
        )
        theirs = await procrastinate_latencies(pc_conn, "latency")
    if len(ours) != args.samples or len(theirs) != args.samples:
        raise BenchError(f"latency: {len(ours)} tasks and {len(theirs)} jobs measured")
    report_latency(ctx, ours, theirs)
    progress(
        f"  latency: p50 {ms(percentile(ours, 50))} (procrastinate {ms(percentile(theirs, 50))})"
    )


def report_latency(ctx: Context, ours: list[float], theirs: list[float]) -> None:
    args, out = ctx.args, ctx.report
    out.append(
        f"3. CREATE-TO-START LATENCY  {args.samples} tasks one at a time, every "
        f"{args.spacing * 1000:.0f} ms, alternating with procrastinate, idle processors"
    )
    out.append(
        "   taskgate: CreateTask over gRPC to `python -m server` (embedded processor); "
        "started_at - created_at (both Postgres now())"
    )
    out.append(
        "   procrastinate: defer_async from the bench, worker subprocess; "
        "'started' event at - 'deferred' event at"
    )
    row = "   {:<15}{:>10}{:>10}{:>10}{:>10}"
    out.append(row.format("", "p50", "p90", "p99", "max"))
    for name, values in (("taskgate", ours), ("procrastinate", theirs)):
        out.append(
            row.format(
                name,
                ms(percentile(values, 50)),
                ms(percentile(values, 90)),
                ms(percentile(values, 99)),
                ms(max(values)),
            )
        )
    p50 = percentile(ours, 50)
    ctx.aims.append(f"latency: p50 < {ms(LATENCY_AIM)} -> {ms(p50)}: {verdict(p50 < LATENCY_AIM)}")


# -- 4. image work ---------------------------------------------------------------------------


def timed(work: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


@dataclass
class ImageSamples:
    service: list[float] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)
    pipeline: list[float] = field(default_factory=list)
    identical: int = 0


async def wait_task(conn: Conn, task_id: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = await one(
            conn,
            "SELECT status, extract(epoch FROM finished_at - started_at)::float8 AS took, "
            "result_width, result_height, result_image FROM tasks WHERE id = %s",
            (task_id,),
        )
        if row["status"] == "completed":
            return row
        if row["status"] in ("failed", "cancelled"):
            raise BenchError(f"image task {task_id} ended {row['status']}")
        await asyncio.sleep(0.025)  # light: the worker needs the CPU more
    raise BenchError(f"image task {task_id} did not complete within 60s")


async def run_image_samples(conn: Conn, batch: TaskBatch, count: int) -> ImageSamples:
    samples = ImageSamples()
    steps = steps_from_json(IMAGE_FILTERS)
    for number in range(count):
        row = await wait_task(conn, await insert_task(conn, batch, f"image-{number}"))
        if (row["result_width"], row["result_height"]) != (512, 512):
            raise BenchError(f"image task: result {row['result_width']}x{row['result_height']}")
        samples.service.append(row["took"])
        took, plain = timed(lambda: plain_pillow(batch.image))
        samples.plain.append(took)
        samples.identical += plain == row["result_image"]
        took, _ = timed(lambda: run_pipeline(batch.image, steps, "png"))
        samples.pipeline.append(took)
    return samples


def histogram_mean(registry: CollectorRegistry, name: str) -> tuple[float, float]:
    total = registry.get_sample_value(f"{name}_sum") or 0.0
    count = registry.get_sample_value(f"{name}_count") or 0.0
    return total, count


async def part_image(ctx: Context) -> None:
    args = ctx.args
    env = ctx.task_env("image")
    await asyncio.to_thread(env.migrate)
    settings = ProcessorSettings.from_env(
        {
            "TASKGATE_DATABASE_URL": env.database_url,
            "TASKGATE_PROCESSOR_CONCURRENCY": str(args.concurrency),
            "TASKGATE_PROCESSOR_WORKERS": str(args.workers),
            "TASKGATE_LOG_LEVEL": args.log_level,
        }
    )
    registry = CollectorRegistry()
    listener = Listener(conninfo=env.database_url, connect_timeout=settings.db_timeout)
    runtime = ProcessorRuntime(settings, listener=listener, metrics=TaskMetrics(registry))
    image = photo_png(args.image_size)
    await runtime.start()
    listener.start()
    try:
        async with await connect(env.database_url) as conn:
            user = await insert_user(conn, "bench_image")
            batch = TaskBatch(user, image, validated(image, IMAGE_FILTERS), IMAGE_FILTERS)
            await run_image_samples(conn, batch, 2)  # warm-up: a worker process, imports
            processing_before = histogram_mean(registry, "processing_time_seconds")
            claim_before = histogram_mean(registry, "task_claim_to_start_seconds")
            samples = await run_image_samples(conn, batch, args.image_tasks)
            processing = subtract(
                histogram_mean(registry, "processing_time_seconds"), processing_before
            )
            claim = subtract(histogram_mean(registry, "task_claim_to_start_seconds"), claim_before)
    finally:
        await runtime.stop(10.0)
        await listener.stop()
    report_image(ctx, len(image), samples, processing, claim)
    ratio = statistics.fmean(samples.service) / statistics.fmean(samples.plain)
    progress(f"  image work: service/plain = {ratio:.2f}x")


def subtract(after: tuple[float, float], before: tuple[float, float]) -> float:
    """The mean of a histogram's observations between two readings."""
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count else float("nan")


def report_image(
    ctx: Context, input_bytes: int, samples: ImageSamples, processing: float, claim: float
) -> None:
    args, out = ctx.args, ctx.report
    side = args.image_size
    out.append(
        f"4. IMAGE WORK  {side}x{side} RGB PNG ({input_bytes / 1e6:.2f} MB) -> grayscale, "
        f"blur 2, resize 512x512 -> PNG (compress_level {PNG_COMPRESS_LEVEL}); "
        f"{len(samples.service)} tasks one at a time, interleaved"
    )
    out.append(
        "   service: inserted with insert_task; ProcessorRuntime (the one the server embeds) "
        "in the bench process, real worker processes; finished_at - started_at"
    )
    out.append("   plain: PIL open/load, convert L, GaussianBlur(2), resize LANCZOS, save PNG")
    row = "   {:<42}{:>12}{:>12}"
    out.append(row.format("", "mean", "median"))
    service_mean = statistics.fmean(samples.service)
    plain_mean = statistics.fmean(samples.plain)
    for name, values in (
        ("service (finished_at - started_at)", samples.service),
        ("plain Pillow loop, bench process", samples.plain),
        ("run_pipeline in the bench process", samples.pipeline),
    ):
        out.append(row.format(name, ms(statistics.fmean(values)), ms(statistics.median(values))))
    out.append(row.format("  of which processing_time_seconds", ms(processing), ""))
    out.append(row.format("  of which claim_to_start (input read)", ms(claim), ""))
    ratio = service_mean / plain_mean
    median_ratio = statistics.median(samples.service) / statistics.median(samples.plain)
    out.append(
        f"   service/plain = {ratio:.2f}x (medians {median_ratio:.2f}x); results byte-identical "
        f"to the plain loop's: {samples.identical} of {len(samples.service)}"
    )
    ctx.aims.append(
        f"image work: service <= {IMAGE_AIM}x plain -> {ratio:.2f}x: {verdict(ratio <= IMAGE_AIM)}"
    )


# -- main ------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Context], Awaitable[None]]] = {
    "drain": part_drain,
    "e2e": part_end_to_end,
    "latency": part_latency,
    "image": part_image,
}


async def bench(ctx: Context) -> None:
    load = os.getloadavg()
    progress(
        f"bench-tasks: {cpu_count()} CPUs, load average {load[0]:.2f}/{load[1]:.2f}/"
        f"{load[2]:.2f}; databases taskgate_bench_{ctx.tag}_*"
    )
    started = time.perf_counter()
    for part in ctx.args.parts:
        progress(f"{part} ...")
        try:
            await RUNNERS[part](ctx)
        finally:
            problems = await asyncio.to_thread(ctx.close_all)
            if problems:
                raise BenchError("; ".join(problems))
    print()
    print("\n".join(ctx.report))
    print()
    for aim in ctx.aims:
        print(f"aim: {aim}")
    print(f"(total {time.perf_counter() - started:.0f}s; TASKGATE_LOG_LEVEL={ctx.args.log_level})")


def main(argv: list[str] | None = None) -> int:
    ctx = Context(parse_args(argv))
    return run_bench(bench(ctx), close=ctx.close_all)


if __name__ == "__main__":
    sys.exit(main())
