"""A pool of worker processes for the CPU work, sized to the machine.

Each worker (``server.processor.worker``) is a child process that runs one
batch of pipelines at a time (one pipeline, or a few light ones) over a
private socketpair and reports progress after each filter; a job can be
cancelled between two filters, also when the processor abandons it. A worker
that dies is killed and replaced on demand, so a crash costs one attempt (of
each task in its batch), never the pool. One that died while idle costs
nothing: it is found dead before it is handed work (its process ended, its
socket closed), or its socket refuses the jobs, and they go to a fresh
worker. Workers start lazily, on the first jobs.

``concurrent.futures.ProcessPoolExecutor`` fits neither need: a submitted
call can neither report progress nor be told to stop between two filters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from server.imaging.filters import FilterStep, Size, fit_problem, output_size, steps_to_json
from server.processor.frames import HEADER, pack, unpack

log = logging.getLogger(__name__)

# A pipeline whose steps each see at most this many pixels runs in well under
# the time of a trip to a worker process and back (an 8x8 grayscale: ~0.1 ms).
LIGHT_PIXELS = 64 * 64
LIGHT_BATCH = 8


class WorkerDied(Exception):
    """The worker process ended in the middle of a job."""


class WorkerGone(WorkerDied):
    """The worker process had ended before it was handed its jobs: they never ran."""


def is_light(steps: Sequence[FilterStep], size: Size) -> bool:
    """Whether every step, from an input of ``size``, works on at most ``LIGHT_PIXELS`` pixels."""
    for step in steps:
        if fit_problem(step, size) is not None:
            return False  # it fails there: no need to guess
        after = output_size(step, size)
        if max(size[0] * size[1], after[0] * after[1]) > LIGHT_PIXELS:
            return False
        size = after
    return True


@dataclass(frozen=True, slots=True)
class Pipeline:
    """What a worker runs: an image through steps, encoded as ``output_format``."""

    image: bytes
    steps: Sequence[FilterStep]
    output_format: str
    max_pixels: int | None = None  # a last check at run time; validation did the first
    size: Size | None = None  # the input's, when known
    max_result_bytes: int | None = None  # a larger result fails its task

    @property
    def light(self) -> bool:
        """Whether every step works on at most ``LIGHT_PIXELS`` pixels (needs ``size``)."""
        return self.size is not None and is_light(self.steps, self.size)

    def message(self) -> tuple[object, ...]:
        return (
            self.image,
            steps_to_json(self.steps),
            self.output_format,
            self.max_pixels,
            self.max_result_bytes,
        )


@dataclass(frozen=True, slots=True)
class Done:
    data: bytes
    content_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Failed:
    """The input cannot be processed: retrying cannot help."""

    message: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    done: int


@dataclass(frozen=True, slots=True)
class Crashed:
    """The pipeline raised something unexpected: a retry may go better."""

    message: str


Outcome = Done | Failed | Cancelled | Crashed


class JobControl:
    """The processor's handle on a running job: ask it to stop between two filters."""

    def __init__(self) -> None:
        self.cancelled = False
        self._send_cancel: Callable[[], None] | None = None

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self._send_cancel is not None:
                self._send_cancel()

    def bind(self, send_cancel: Callable[[], None] | None) -> None:
        self._send_cancel = send_cancel
        if send_cancel is not None and self.cancelled:
            send_cancel()


_SEQ = itertools.count(1)


@dataclass
class _Job:
    """A pipeline handed to a worker, and who waits for its outcome."""

    pipeline: Pipeline
    control: JobControl
    on_progress: Callable[[int], None]
    outcome: asyncio.Future[Outcome]
    seq: int = field(default_factory=lambda: next(_SEQ))


class Worker:
    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def spawn(cls) -> Worker:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server.processor.worker",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return cls(process, reader, writer)

    async def run(self, jobs: Sequence[_Job]) -> None:
        """Runs ``jobs`` one after the other, in one message each way; sets their outcomes.

        WorkerDied if the process ends first.
        """
        by_seq = {job.seq: job for job in jobs}
        await self._send(pack(("run", [(job.seq, *job.pipeline.message()) for job in jobs])))
        for job in jobs:
            job.control.bind(partial(self._cancel, job.seq))
        try:
            while True:
                kind, *rest = await self._receive()
                if kind == "progress":
                    seq, done = rest
                    by_seq[seq].on_progress(done)
                    continue
                for outcome_kind, seq, *fields in rest[0]:
                    future = by_seq[seq].outcome
                    if not future.done():
                        future.set_result(_OUTCOMES[outcome_kind](*fields))
                return
        finally:
            for job in jobs:
                job.control.bind(None)

    @property
    def alive(self) -> bool:
        """Whether it can take work: its process has not ended, nor its socket closed."""
        return (
            self._process.returncode is None
            and not self._reader.at_eof()
            and not self._writer.is_closing()
        )

    async def _send(self, message: bytes) -> None:
        """WorkerGone when the socket is closed (the process died while it was idle)."""
        if not self.alive:
            raise WorkerGone(f"the idle worker process had ended ({self._process.returncode})")
        try:
            self._writer.write(message)
            await self._writer.drain()
        except ConnectionError as exc:
            raise WorkerGone(f"the idle worker process had ended ({exc})") from exc

    def _cancel(self, seq: int) -> None:
        if not self._writer.is_closing():
            self._writer.write(pack(("cancel", seq)))

    async def _receive(self) -> tuple[Any, ...]:
        try:
            header = await self._reader.readexactly(HEADER.size)
            (length,) = HEADER.unpack(header)
            return unpack(await self._reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerDied(f"the worker process ended ({self._process.returncode})") from exc

    async def close(self, *, kill: bool = False) -> None:
        """Ends the process: at once with ``kill`` (mid-job), else when it sees the socket close."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        try:
            async with asyncio.timeout(5):
                await self._process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


_OUTCOMES: dict[object, Callable[..., Outcome]] = {
    "done": Done,
    "failed": Failed,
    "cancelled": Cancelled,
    "error": Crashed,
}


class WorkerPool:
    """Runs pipelines in up to ``size`` worker processes, one batch per worker at a time.

    A light pipeline (see :attr:`Pipeline.light`) runs in less time than a trip to
    a worker and back, so the light ones handed over at the same moment (the
    tasks of one claim) travel together, up to ``LIGHT_BATCH`` in one message
    to one worker, and their outcomes come back together. Any other pipeline
    gets a worker of its own.
    """

    def __init__(self, *, size: int) -> None:
        self.size = size
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        self._light: list[_Job] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._closed = False

    async def run(
        self, pipeline: Pipeline, *, control: JobControl, on_progress: Callable[[int], None]
    ) -> Outcome:
        """Runs a pipeline in a worker; WorkerDied if its process ends mid-job."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        job = _Job(pipeline, control, on_progress, asyncio.get_running_loop().create_future())
        if pipeline.light:
            if not self._light:  # the others handed over now join it before it leaves
                asyncio.get_running_loop().call_soon(self._send_light)
            self._light.append(job)
        else:
            self._start([job])
        try:
            return await asyncio.shield(job.outcome)
        except asyncio.CancelledError:
            control.cancel()  # abandoned: the worker stops it at the next filter
            raise

    def _send_light(self) -> None:
        light, self._light = self._light, []
        for start in range(0, len(light), LIGHT_BATCH):
            self._start(light[start : start + LIGHT_BATCH])

    def _start(self, jobs: list[_Job]) -> None:
        batch = asyncio.create_task(self._run_batch(jobs))
        self._batches.add(batch)
        batch.add_done_callback(self._batches.discard)

    async def _run_batch(self, jobs: list[_Job]) -> None:
        try:
            async with self._slots:
                await self._run_on_a_worker(jobs)
        except Exception as exc:
            for job in jobs:
                if not job.outcome.done():
                    job.outcome.set_exception(exc)
        finally:
            for job in jobs:
                job.outcome.cancel()  # no-op once set

    async def _run_on_a_worker(self, jobs: list[_Job]) -> None:
        """Runs ``jobs`` on an idle worker, or a new one; on a fresh one if the first
        turns out to have died while idle (it never saw them). WorkerDied mid-job."""
        if await self._use(await self._idle_or_new(), jobs):
            return
        log.warning("a worker process had died while idle; its next jobs go to a fresh one")
        if not await self._use(await self._spawn(), jobs):
            raise WorkerDied("a fresh worker process ended before it took its jobs")

    async def _idle_or_new(self) -> Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            log.warning("a worker process died while idle; it is replaced")
            await asyncio.shield(worker.close(kill=True))
        return await self._spawn()

    async def _spawn(self) -> Worker:
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        return await Worker.spawn()

    async def _use(self, worker: Worker, jobs: list[_Job]) -> bool:
        """Runs ``jobs`` on ``worker``; False when it had died before it got them."""
        healthy = False
        self._busy.add(worker)
        try:
            await worker.run(jobs)
            healthy = True
        except WorkerGone:
            return False
        finally:
            self._busy.discard(worker)
            if healthy and not self._closed:
                self._idle.append(worker)
            else:  # died, or closed mid-job: its state is unknown
                await asyncio.shield(worker.close(kill=True))
        return True

    def pids(self) -> list[int]:
        """The live workers' process ids (their CPU and memory are exported)."""
        return [worker.pid for worker in (*self._idle, *self._busy)]

    async def close(self) -> None:
        """Stops every worker: idle ones cleanly, busy ones (abandoned jobs) at once."""
        self._closed = True
        idle, self._idle = self._idle, []
        busy = list(self._busy)
        await asyncio.gather(*(w.close() for w in idle), *(w.close(kill=True) for w in busy))
        await asyncio.gather(*self._batches, return_exceptions=True)
