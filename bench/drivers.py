"""Load drivers: h2load (preferred) and a multi-process grpc.aio fallback.

Both run outside the server process and report successful calls per second
over the measured window (after a warm-up that is not counted).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.infra import BenchError


@dataclass(frozen=True)
class Call:
    """One unary RPC as the drivers see it: a path, a serialized request, metadata."""

    name: str
    path: str  # "/package.Service/Method"
    request: bytes
    metadata: tuple[tuple[str, str], ...]
    response_size: int  # serialized size of the known-good response


@dataclass(frozen=True)
class Load:
    target: str
    duration: float
    warmup: float
    concurrency: int
    connections: int  # h2load connections / fallback client processes


@dataclass(frozen=True)
class RunResult:
    calls_per_s: float
    calls: int
    server_cpu_s: float | None


CpuProbe = Callable[[], float | None]


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, big-endian length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


# -- h2load ----------------------------------------------------------------------------


def h2load_path() -> str | None:
    return shutil.which("h2load")


def h2load_version(binary: str) -> str:
    result = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return result.stdout.strip() or "h2load"


_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s|m|h), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_DATA = re.compile(r"\((\d+)\) data")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class H2loadStats:
    seconds: float
    req_per_s: float
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_non_2xx: int
    data_bytes: int


def parse_h2load(output: str) -> H2loadStats:
    finished = _FINISHED.search(output)
    requests = _REQUESTS.search(output)
    status = _STATUS.search(output)
    data = _DATA.search(output)
    if finished is None or requests is None or status is None or data is None:
        raise BenchError(f"cannot parse h2load output:\n{output}")
    _total, _started, done, succeeded, failed, errored, timeout = map(int, requests.groups())
    return H2loadStats(
        seconds=float(finished.group(1)) * _SECONDS[finished.group(2)],
        req_per_s=float(finished.group(3)),
        done=done,
        succeeded=succeeded,
        failed=failed,
        errored=errored,
        timeout=timeout,
        status_non_2xx=sum(int(n) for n in status.groups()[1:]),
        data_bytes=int(data.group(1)),
    )


def check_h2load(stats: H2loadStats, call: Call, load: Load) -> None:
    """h2load sees HTTP status only; the DATA byte count exposes gRPC errors.

    An OK unary response carries exactly one framed message (5 + size bytes of
    DATA); an error is trailers-only and carries none. So fewer DATA bytes than
    ``succeeded * frame`` means some "succeeded" requests were gRPC errors.
    (Responses cut off at the end of the window may add a little extra, never less.)
    """
    problems = []
    if stats.succeeded == 0:
        problems.append("no request succeeded")
    if stats.failed or stats.errored or stats.timeout:
        problems.append(
            f"{stats.failed} failed, {stats.errored} errored, {stats.timeout} timed out"
        )
    if stats.status_non_2xx:
        problems.append(f"{stats.status_non_2xx} responses were not HTTP 2xx")
    frame = 5 + call.response_size
    if stats.data_bytes < stats.succeeded * frame:
        missing = (stats.succeeded * frame - stats.data_bytes) / frame
        problems.append(
            f"{stats.data_bytes} DATA bytes for {stats.succeeded} calls of {frame} bytes: "
            f"~{missing:.0f} responses carried no message (gRPC errors)"
        )
    if stats.data_bytes > (stats.succeeded + load.concurrency) * frame:
        problems.append(f"{stats.data_bytes} DATA bytes: responses larger than expected")
    if problems:
        raise BenchError(f"h2load run of {call.name} is not clean: " + "; ".join(problems))


def _h2load_args(binary: str, call: Call, load: Load, body: Path, seconds: float) -> list[str]:
    streams = max(1, load.concurrency // load.connections)
    args = [
        binary,
        f"http://{load.target}{call.path}",
        f"--data={body}",
        f"--clients={load.connections}",
        f"--max-concurrent-streams={streams}",
        "--threads=1",
        f"--duration={round(seconds * 1000)}ms",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
    ]
    return args + [f"--header={key}: {value}" for key, value in call.metadata]


async def _h2load(args: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    output = out.decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"h2load exited with {process.returncode}:\n{output}")
    return output


async def run_h2load(binary: str, call: Call, load: Load, cpu: CpuProbe) -> RunResult:
    """A warm-up run (not counted), then the measured run.

    h2load's own ``--warm-up-time`` is not used: it keeps counting the warm-up's
    traffic bytes (and reports the warm-up in "finished in"), which would spoil
    the DATA-byte check below.
    """
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        body = Path(tmp) / "request.bin"
        body.write_bytes(grpc_frame(call.request))
        if load.warmup > 0:
            check_h2load(
                parse_h2load(await _h2load(_h2load_args(binary, call, load, body, load.warmup))),
                call,
                load,
            )
        cpu_before = cpu()
        output = await _h2load(_h2load_args(binary, call, load, body, load.duration))
        cpu_after = cpu()
    stats = parse_h2load(output)
    check_h2load(stats, call, load)
    return RunResult(
        calls_per_s=stats.succeeded / stats.seconds,
        calls=stats.succeeded,
        server_cpu_s=_cpu_delta(cpu_before, cpu_after),
    )


# -- grpc.aio fallback -------------------------------------------------------------------


@dataclass(frozen=True)
class _WorkerJob:
    call: Call
    target: str
    streams: int
    start_at: float  # wall clock: counting starts (warm-up before it)
    stop_at: float


@dataclass(frozen=True)
class _WorkerResult:
    ok: int
    errors: dict[str, int]
    late_by: float  # > 0: the worker began after start_at (no warm-up at all)


def _identity(data: bytes) -> bytes:
    return data


async def _worker_main(job: _WorkerJob) -> _WorkerResult:
    ok = 0
    errors: dict[str, int] = {}
    late_by = time.time() - job.start_at
    async with grpc.aio.insecure_channel(job.target) as channel:
        method = channel.unary_unary(
            job.call.path, request_serializer=_identity, response_deserializer=_identity
        )

        async def stream() -> None:
            nonlocal ok
            while True:
                now = time.time()
                if now >= job.stop_at:
                    return
                try:
                    await method(job.call.request, metadata=job.call.metadata, timeout=10.0)
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    if job.start_at <= time.time() < job.stop_at:
                        errors[code] = errors.get(code, 0) + 1
                    continue
                if job.start_at <= time.time() < job.stop_at:
                    ok += 1

        await asyncio.gather(*(stream() for _ in range(job.streams)))
    return _WorkerResult(ok=ok, errors=errors, late_by=late_by)


def _worker(job: _WorkerJob) -> _WorkerResult:
    return asyncio.run(_worker_main(job))


# Spawned interpreters import grpc before their first call; counting starts only
# after this much time plus the warm-up.
_SPAWN_SLACK = 2.0


async def run_python(call: Call, load: Load, cpu: CpuProbe) -> RunResult:
    processes = load.connections
    streams = max(1, load.concurrency // processes)
    start_at = time.time() + _SPAWN_SLACK + load.warmup
    job = _WorkerJob(
        call=call,
        target=load.target,
        streams=streams,
        start_at=start_at,
        stop_at=start_at + load.duration,
    )
    context = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    with context.Pool(processes) as pool:
        pending = pool.map_async(_worker, [job] * processes)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu_before = cpu()
        await asyncio.sleep(max(0.0, job.stop_at - time.time()))
        cpu_after = cpu()
        results = await loop.run_in_executor(None, pending.get, load.duration + 60.0)
    errors: dict[str, int] = {}
    for result in results:
        for code, count in result.errors.items():
            errors[code] = errors.get(code, 0) + count
    if errors:
        raise BenchError(f"{call.name} calls failed during the load run: {errors}")
    late = max(result.late_by for result in results)
    if late > 0:
        raise BenchError(f"a client process started {late:.1f}s late; raise --warmup")
    calls = sum(result.ok for result in results)
    if calls == 0:
        raise BenchError(f"no {call.name} call completed")
    return RunResult(
        calls_per_s=calls / load.duration,
        calls=calls,
        server_cpu_s=_cpu_delta(cpu_before, cpu_after),
    )


def default_processes() -> int:
    return max(1, min(4, os.cpu_count() or 1))
