"""A pool of worker processes for the CPU work, sized to the machine.

Each worker (``server.processor.worker``) is a child process that runs one
pipeline at a time over a private socketpair and reports progress after each
filter; a job can be cancelled between two filters. A worker that dies (or
whose job the processor abandons) is killed and replaced on demand, so a
crash costs one attempt, never the pool. Workers start lazily, on the first
jobs.

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
from dataclasses import dataclass
from typing import Any

from server.imaging.filters import FilterStep, steps_to_json
from server.processor.frames import HEADER, pack, unpack

log = logging.getLogger(__name__)


class WorkerDied(Exception):
    """The worker process ended in the middle of a job."""


@dataclass(frozen=True, slots=True)
class Pipeline:
    """What a worker runs: an image through steps, encoded as ``output_format``."""

    image: bytes
    steps: Sequence[FilterStep]
    output_format: str
    max_pixels: int | None = None  # a last check at run time; validation did the first

    def message(self) -> tuple[object, ...]:
        return (self.image, steps_to_json(self.steps), self.output_format, self.max_pixels)


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


class Worker:
    _seq = itertools.count(1)

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer

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

    async def run(
        self, pipeline: Pipeline, *, control: JobControl, on_progress: Callable[[int], None]
    ) -> Outcome:
        seq = next(self._seq)
        self._writer.write(pack(("run", seq, *pipeline.message())))
        control.bind(lambda: self._writer.write(pack(("cancel", seq))))
        try:
            await self._writer.drain()
            while True:
                kind, _, *rest = await self._receive()
                if kind == "progress":
                    on_progress(rest[0])
                    continue
                return _OUTCOMES[kind](*rest)
        finally:
            control.bind(None)

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
    def __init__(self, *, size: int) -> None:
        self.size = size
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        self._closed = False

    async def run(
        self, pipeline: Pipeline, *, control: JobControl, on_progress: Callable[[int], None]
    ) -> Outcome:
        """Runs a pipeline in a worker; WorkerDied if its process ends mid-job."""
        async with self._slots:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            worker = self._idle.pop() if self._idle else await Worker.spawn()
            self._busy.add(worker)
            healthy = False
            try:
                outcome = await worker.run(pipeline, control=control, on_progress=on_progress)
                healthy = True
                return outcome
            finally:
                self._busy.discard(worker)
                if healthy and not self._closed:
                    self._idle.append(worker)
                else:  # died, or abandoned mid-job: its state is unknown
                    await asyncio.shield(worker.close(kill=True))

    async def close(self) -> None:
        """Stops every worker: idle ones cleanly, busy ones (abandoned jobs) at once."""
        self._closed = True
        idle, self._idle = self._idle, []
        busy = list(self._busy)
        await asyncio.gather(*(w.close() for w in idle), *(w.close(kill=True) for w in busy))
