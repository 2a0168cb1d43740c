"""The processor: claims due tasks, runs their pipelines, and finishes them.

- **Exchange**: one loop talks to the queue for the hot path, one round trip
  at a time: it ends every attempt that finished since its last round trip
  (one fenced statement for them all, like River's batch completer) and, in
  the same round trip and transaction, claims up to the free concurrency
  (``FOR UPDATE SKIP LOCKED``, in turns across users, attempts counted and
  recorded in the same statement: see ``QueueRepository``) and reads the
  claimed tasks' inputs. A busy queue costs about
  one round trip per task, fewer when endings pile up during one. When idle
  it claims whenever a task becomes pending (LISTEN taskgate_tasks), a retry's
  backoff ends, or at the latest every ``poll_interval``.
- **Prefetch**: while every task it holds is light (a pipeline that runs in
  less time than a round trip, see ``workers.is_light``), the exchange claims
  up to ``prefetch`` tasks beyond the free concurrency. They are RUNNING in the
  database (leased, heartbeat, attempt recorded, cancellable) but wait in
  memory for a slot: when a worker returns, the next tasks go to it at once
  while the endings and the next claim travel to Postgres, so the worker trip
  and the database trip overlap instead of alternating. At most
  ``concurrency`` tasks execute at once. A prefetched task's ``started_at``
  (set by the claim) is early by the light work it waited behind, a few
  milliseconds; behind heavy work nothing is prefetched, so a task never shows
  RUNNING for long while it waits, and other processors can take it.
- **Lease**: one heartbeat statement extends the leases of every running task
  and reports those whose owners asked to cancel (also heard at once on
  LISTEN taskgate_task_cancel). A job whose lease was lost is abandoned: the
  fenced updates would refuse its result anyway.
- **Finish**: only through fenced updates. A filter that fails on its input
  fails the task; an unexpected error or a dead worker process retries it
  with backoff; a cancellation stops it between two filters. A database
  error while a task runs or ends (a result too slow to store) retries it
  with that reason, when the database answers that much; only a processor
  that cannot reach it at all leaves its tasks to the rescuer.
- **Maintenance**: the rescuer puts tasks whose lease expired (their processor
  died) back to PENDING with backoff, or FAILED after the last attempt; the
  pruner deletes the image bytes of tasks ended longer ago than the retention;
  queue depth and age are sampled for the metrics.
- **Shutdown**: stop claiming, let running tasks finish for ``grace``
  seconds, then hand back the rest (PENDING, due at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from opentelemetry import trace

from server import context
from server.errors import TaskgateError
from server.metrics import TaskMetrics
from server.models import Job, TaskStatus
from server.processor import tracing
from server.processor.workers import (
    Cancelled,
    Crashed,
    Done,
    Failed,
    JobControl,
    Outcome,
    Pipeline,
    WorkerDied,
    WorkerPool,
    is_light,
)
from server.storage.postgres.listener import Listener
from server.storage.postgres.queue import Claimed, Ending, Output, QueueRepository
from taskgate_runtime import telemetry

log = logging.getLogger(__name__)

PENDING_CHANNEL = "taskgate_tasks"
CANCEL_CHANNEL = "taskgate_task_cancel"
CLAIM_BATCH_MAX = 10


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    concurrency: int
    lease: float
    poll_interval: float
    retry_backoff: float
    retry_backoff_max: float
    retention: float
    max_pixels: int | None = None
    max_result_bytes: int | None = None
    prune_interval: float = 60.0
    stats_interval: float = 5.0
    prefetch: int | None = None  # claimed ahead behind light work; None: concurrency

    @property
    def ahead(self) -> int:
        return self.concurrency if self.prefetch is None else max(0, self.prefetch)

    @property
    def heartbeat_interval(self) -> float:
        return self.lease / 3

    @property
    def rescue_interval(self) -> float:
        return max(0.1, min(self.lease / 2, self.poll_interval))

    def backoff(self, attempt: int) -> float:
        return float(min(self.retry_backoff_max, self.retry_backoff * 2 ** (attempt - 1)))


@dataclass
class Running:
    job: Job
    control: JobControl
    task: asyncio.Task[None]
    light: bool  # it holds a slot for less than a round trip
    waiting: bool = False  # for a slot (prefetched)
    lost: bool = False


class Processor:
    def __init__(
        self,
        *,
        queue: QueueRepository,
        pool: WorkerPool,
        listener: Listener,
        metrics: TaskMetrics,
        config: ProcessorConfig,
    ) -> None:
        self._queue = queue
        self._pool = pool
        self._metrics = metrics
        self._config = config
        self._running: dict[UUID, Running] = {}  # the tasks claimed, executing or waiting
        self._slots = asyncio.Semaphore(config.concurrency)  # the tasks executing
        self._executing: set[asyncio.Task[None]] = set()
        self._endings: list[tuple[Ending, asyncio.Future[bool]]] = []
        self._stir = asyncio.Event()  # the exchange loop has something to do
        self._wanted = True  # tasks may be due: claim them when slots are free
        self._stopping = False
        self._closed = False
        self._loops: list[asyncio.Task[None]] = []
        self._exchanger: asyncio.Task[None] | None = None
        listener.subscribe(PENDING_CHANNEL, lambda _: self._want())
        listener.subscribe(CANCEL_CHANNEL, self._cancel_asked)
        listener.on_reconnect(self._want)

    @property
    def id(self) -> str:
        return self._queue.owner

    def start(self) -> None:
        self._exchanger = asyncio.create_task(self._exchange_loop(), name="processor-exchange")
        self._loops = [
            asyncio.create_task(self._every(self._config.heartbeat_interval, self._heartbeat)),
            asyncio.create_task(self._every(self._config.rescue_interval, self._rescue)),
            asyncio.create_task(self._every(self._config.prune_interval, self._prune)),
            asyncio.create_task(self._every(self._config.stats_interval, self._sample)),
        ]
        log.info("processor %s started", self.id, extra={"fields": {"processor": self.id}})

    async def stop(self, grace: float) -> None:
        """Stops claiming, waits up to ``grace`` for running tasks, hands back the rest."""
        self._stopping = True
        self._stir.set()
        for held in self._running.values():
            if held.waiting:
                held.task.cancel()  # prefetched: hand it back at once
        running = list(self._executing)
        if running:
            _, unfinished = await asyncio.wait(running, timeout=grace)
            for task in unfinished:
                task.cancel()  # each hands its task back on the way out
            await asyncio.gather(*unfinished, return_exceptions=True)
        self._closed = True
        self._stir.set()
        if self._exchanger is not None:
            await self._exchanger
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._pool.close()
        log.info("processor %s stopped", self.id)

    # --- the exchange loop: endings out, claimed jobs in ---------------------------------

    def _want(self) -> None:
        self._wanted = True
        self._stir.set()

    async def _exchange_loop(self) -> None:
        with telemetry.quiet():  # each task's spans are in its own trace (tracing.attempt)
            await self._exchanges()

    async def _exchanges(self) -> None:
        while True:
            self._stir.clear()
            endings, self._endings = self._endings, []
            # The slots of the attempts ending now pass to their successors.
            free = self._capacity() - len(self._running) + len(endings)
            asked = 0
            if not self._stopping and (self._wanted or endings):
                asked = max(0, min(free, CLAIM_BATCH_MAX))
            if endings or asked:
                await self._exchange(endings, asked)
            elif self._closed:
                return
            else:
                idle = free > 0 and not self._stopping
                if not await self._stirred(await self._idle_time() if idle else None):
                    self._wanted = True  # a poll: nothing heard, look anyway

    def _capacity(self) -> int:
        """How many tasks to hold: the concurrency, plus the prefetch behind light work."""
        held = self._running.values()
        if held and all(r.light for r in held):
            return self._config.concurrency + self._config.ahead
        return self._config.concurrency

    async def _exchange(
        self, endings: list[tuple[Ending, asyncio.Future[bool]]], asked: int
    ) -> None:
        """One round trip: ends ``endings``, claims up to ``asked`` tasks and launches them."""
        if asked:
            self._wanted = False  # until a claim comes back full, or news arrives
        sent = time.time_ns()
        try:
            ended, claimed = await self._queue.finish([e for e, _ in endings], claim=asked)
        except TaskgateError as exc:
            for _, future in endings:
                if not future.done():
                    future.set_exception(exc)
            if asked:
                self._wanted = True
                log.warning("claiming tasks failed: %s", exc)
                await self._stirred(min(self._config.poll_interval, 1.0))
            return
        for ending, future in endings:
            self._running.pop(ending.job.task_id, None)
            if not future.done():
                future.set_result(ending.job.task_id in ended)
        if asked and len(claimed) == asked:
            self._wanted = True  # there may be more
        await self._start_all(claimed, (sent, time.time_ns()))

    async def _start_all(self, claimed: list[Claimed], window: tuple[int, int]) -> None:
        for job in claimed:
            if self._stopping:  # shutdown began while it was claimed: hand it back
                await self._release(job.job, {"task_id": str(job.job.task_id)})
            else:
                self._launch(job, window)

    async def _idle_time(self) -> float:
        """How long to wait for a notification: until a backoff ends, or one poll interval."""
        wait = self._config.poll_interval
        with contextlib.suppress(TaskgateError):
            due = await self._queue.next_run_after()
            if due is not None:
                wait = min(wait, max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.005)
        return wait

    async def _stirred(self, seconds: float | None) -> bool:
        """Waits for something to do, at most ``seconds``; False when it timed out."""
        try:
            async with asyncio.timeout(seconds):
                await self._stir.wait()
        except TimeoutError:
            return False
        return True

    def _launch(self, claimed: Claimed, window: tuple[int, int]) -> None:
        """Runs the job in a task of its own; ``window``: when its claim was sent and answered."""
        job = claimed.job
        self._metrics.queue_wait.observe(
            max(0.0, (job.started_at - max(job.created_at, job.run_after)).total_seconds())
        )
        if job.overtaken is not None:
            self._metrics.overtaken.observe(job.overtaken)
        control = JobControl()
        task = asyncio.create_task(
            self._execute(claimed, control, window), name=f"task-{job.task_id}"
        )
        size = (job.input_width, job.input_height)
        self._running[job.task_id] = Running(job, control, task, is_light(job.filters, size))
        self._executing.add(task)
        task.add_done_callback(self._executing.discard)

    async def _end(self, ending: Ending) -> bool:
        """Hands the ending to the exchange loop; whether the fence held."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (ending, future)
        self._endings.append(entry)
        self._stir.set()
        with tracing.finishing():
            try:
                return await future
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    self._endings.remove(entry)  # not sent yet: never will be
                raise

    def _cancel_asked(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            running = self._running.get(UUID(payload))
            if running is not None:
                running.control.cancel()

    # --- running one task --------------------------------------------------------------

    async def _execute(
        self, claimed: Claimed, control: JobControl, window: tuple[int, int]
    ) -> None:
        job = claimed.job
        with tracing.attempt(job, processor=self.id, claim_sent=window[0], claimed=window[1]):
            await self._attempt(claimed, control)

    async def _attempt(self, claimed: Claimed, control: JobControl) -> None:
        job = claimed.job
        context.bind_task(job.task_id, user=job.user_id, request=job.request_id)
        claimed_at = time.perf_counter()
        fields = {"task_id": str(job.task_id), "attempt": job.attempt, "processor": self.id}
        try:
            image = claimed.image
            if image is None:  # not read with the claim
                image = await self._queue.input_image(job)
            if image is None:
                log.warning("task %s: lease lost before it started", job.task_id,
                            extra={"fields": fields})  # fmt: skip
                return
            progress = ProgressRecorder(self._queue, job, control, self._lose(job))
            ran = None
            if not self._stopping:
                ran = await self._run(job, image, control, progress, claimed_at, fields)
            if ran is None:  # shutdown began before it had a slot
                await self._release(job, fields)
                return
            await progress.flush()
            await self._finish(job, *ran, fields)
        except WorkerDied as exc:
            await self._retry(job, str(exc), fields)
        except TaskgateError as exc:  # the database: retried now if it answers, else rescued
            await self._retry(job, f"the database failed: {exc}", fields)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(job, fields))
            raise
        except Exception as exc:  # a bug: retried now, never left to its lease
            log.exception("task %s: unexpected error", job.task_id, extra={"fields": fields})
            await self._retry(job, f"{type(exc).__name__}: {exc}", fields)
        finally:
            if self._running.pop(job.task_id, None) is not None:
                self._stir.set()  # a slot freed without an ending (a retry, a hand-back)

    async def _run(
        self,
        job: Job,
        image: bytes,
        control: JobControl,
        progress: ProgressRecorder,
        claimed_at: float,
        fields: dict[str, object],
    ) -> tuple[Outcome, float] | None:
        """Runs the pipeline in one of the ``concurrency`` slots once one is free (a
        prefetched job waits here): its outcome and time, None if shutdown began first.

        The slot is freed as soon as the pipeline returns: the next job starts
        while this one's ending travels to the database.
        """
        running = self._running.get(job.task_id)
        if running is not None:
            running.waiting = True
        async with self._slots:
            if running is not None:
                running.waiting = False
            if self._stopping:
                return None
            if control.cancelled:  # asked (or the lease lost) while it waited: never runs
                return Cancelled(0), 0.0
            self._metrics.claim_to_start.observe(time.perf_counter() - claimed_at)
            log.info("task %s started: attempt %d, %d filters", job.task_id, job.attempt,
                     len(job.filters), extra={"fields": fields})  # fmt: skip
            started = time.perf_counter()
            size = (job.input_width, job.input_height)
            pipeline = Pipeline(
                image,
                job.filters,
                job.output_format,
                self._config.max_pixels,
                size,
                self._config.max_result_bytes,
            )
            spans = tracing.FilterSpans(job)
            spans.started()
            outcome = await self._pool.run(
                pipeline, control=control, on_progress=spans.reporting(progress)
            )
            spans.ended(outcome)
            return outcome, time.perf_counter() - started

    def _lose(self, job: Job) -> Callable[[], None]:
        def lost() -> None:
            running = self._running.get(job.task_id)
            if running is not None:
                running.lost = True
                running.control.cancel()

        return lost

    async def _finish(
        self, job: Job, outcome: Outcome, seconds: float, fields: dict[str, object]
    ) -> None:
        if self._running[job.task_id].lost:
            log.warning("task %s: lease lost; result dropped", job.task_id,
                        extra={"fields": fields})  # fmt: skip
            return
        match outcome:
            case Done():
                await self._completed(job, outcome, seconds, fields)
            case Failed():
                if await self._end(Ending(job, TaskStatus.FAILED, outcome.message)):
                    self._ended(job, TaskStatus.FAILED, fields, outcome.message)
            case Cancelled():
                reason = (
                    f"cancelled by its owner after {outcome.done} of {len(job.filters)} filters"
                )
                if await self._end(Ending(job, TaskStatus.CANCELLED, reason)):
                    self._ended(job, TaskStatus.CANCELLED, fields)
            case Crashed():
                await self._retry(job, outcome.message, fields)

    async def _completed(
        self, job: Job, outcome: Done, seconds: float, fields: dict[str, object]
    ) -> None:
        output = Output(outcome.data, outcome.content_type, outcome.width, outcome.height)
        try:
            ended = await self._end(Ending(job, TaskStatus.COMPLETED, output=output))
        except TaskgateError as exc:  # it may have been slow to take in: say so
            reason = f"storing its {len(outcome.data)}-byte result failed: {exc}"
            await self._retry(job, reason, fields)
            return
        if ended:
            self._metrics.processing_time.observe(seconds, telemetry.exemplar())
            for step in job.filters:
                self._metrics.filters_used.labels(step.name).inc()
            self._ended(job, TaskStatus.COMPLETED, fields)

    def _ended(
        self, job: Job, status: TaskStatus, fields: dict[str, object], error: str | None = None
    ) -> None:
        self._metrics.finished.labels(status.value).inc()
        tracing.outcome(trace.get_current_span(), status.value, error)
        log.info("task %s %s", job.task_id, status.value,
                 extra={"fields": {**fields, "status": status.value, "error": error}})  # fmt: skip

    async def _retry(self, job: Job, error: str, fields: dict[str, object]) -> None:
        log.error("task %s: attempt %d failed: %s", job.task_id, job.attempt, error,
                  extra={"fields": fields})  # fmt: skip
        tracing.outcome(trace.get_current_span(), "retried", error)
        try:
            status = await self._queue.retry(job, error, delay=self._config.backoff(job.attempt))
        except TaskgateError as exc:
            log.warning("task %s: could not retry it (%s); its lease will expire",
                        job.task_id, exc, extra={"fields": fields})  # fmt: skip
            return
        if status is TaskStatus.FAILED:
            self._metrics.finished.labels(TaskStatus.FAILED.value).inc()
        elif status is TaskStatus.PENDING:
            self._metrics.retried.labels("error").inc()

    async def _release(self, job: Job, fields: dict[str, object]) -> None:
        try:
            if await self._queue.release(job) is not None:
                self._metrics.retried.labels("released").inc()
                tracing.outcome(trace.get_current_span(), "released")
                log.info("task %s handed back", job.task_id, extra={"fields": fields})
        except TaskgateError as exc:
            log.warning("task %s: could not hand it back (%s); its lease will expire",
                        job.task_id, exc, extra={"fields": fields})  # fmt: skip

    # --- maintenance -------------------------------------------------------------------

    async def _every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        with telemetry.quiet():
            await self._repeat(interval, action)

    async def _repeat(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except TaskgateError as exc:
                log.warning("%s failed: %s", action.__name__.strip("_"), exc)

    async def _heartbeat(self) -> None:
        held = {r.job.task_id: r for r in self._running.values() if not r.lost}
        if not held:
            return
        leases = await self._queue.extend_leases(list(held))
        kept = {lease.id: lease for lease in leases}
        for task_id, running in held.items():
            lease = kept.get(task_id)
            if lease is None:
                self._lose(running.job)()
            elif lease.cancel_requested:
                running.control.cancel()

    async def _rescue(self) -> None:
        rescued = await self._queue.rescue_expired(
            backoff=self._config.retry_backoff, backoff_max=self._config.retry_backoff_max
        )
        for task in rescued:
            tracing.lost(task)
            if task.status == TaskStatus.FAILED.value:
                self._metrics.finished.labels(TaskStatus.FAILED.value).inc()
            else:
                self._metrics.retried.labels("lost").inc()
            ids = {"task_id": task.task_id, "user_id": task.user_id, "request_id": task.request_id}
            log.warning("task %s: lease expired; now %s", task.task_id, task.status,
                        extra={"fields": ids})  # fmt: skip

    async def _prune(self) -> None:
        while await self._queue.prune_images(retention=self._config.retention) > 0:
            pass

    async def _sample(self) -> None:
        stats = await self._queue.stats()
        self._metrics.queue_depth.set(stats.pending)
        self._metrics.running.set(stats.running)
        self._metrics.oldest_pending_age.set(stats.oldest_pending_seconds)
        self._metrics.users_pending.set(stats.users_pending)
        self._metrics.largest_backlog.set(stats.largest_backlog)


class ProgressRecorder:
    """Records a job's progress after each filter, in order, one write at a time.

    The last filter's progress is left to the completion, which records it
    with the result. A write that finds cancellation asked passes it on to the
    worker; one that finds the lease gone abandons the job.
    """

    def __init__(
        self, queue: QueueRepository, job: Job, control: JobControl, lost: Callable[[], None]
    ) -> None:
        self._queue = queue
        self._job = job
        self._control = control
        self._lost = lost
        self._latest = 0
        self._written = 0
        self._writer: asyncio.Task[None] | None = None

    def __call__(self, done: int) -> None:
        if done >= len(self._job.filters):
            return
        self._latest = done
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def flush(self) -> None:
        if self._writer is not None:
            await self._writer

    async def _write(self) -> None:
        while self._written < self._latest:
            done = self._latest
            try:
                cancel = await self._queue.record_progress(self._job, done)
            except TaskgateError as exc:
                log.warning("task %s: progress not recorded: %s", self._job.task_id, exc)
                return
            self._written = done
            log.debug("task %s: %d of %d filters done", self._job.task_id, done,
                      len(self._job.filters))  # fmt: skip
            if cancel is None:
                self._lost()
                return
            if cancel:
                self._control.cancel()
