"""``python -m bench.tracing``: what tracing costs GetTask over HTTP, in one run.

Three server + gateway pairs run side by side on one fresh database and Redis
prefix, identical but for their ``OTEL_*`` variables:

- ``off``: no endpoint (the default): no tracer, no instrumentation;
- ``default``: exporting to a real OTLP/gRPC receiver (``bench.otlp_receiver``,
  a process of its own, over the network) with the default sampler
  (parent-based, 1 % of the traces begun here);
- ``100%``: the same with ``OTEL_TRACES_SAMPLER_ARG=1``: every request traced
  (the gateway's HTTP and gRPC client spans, the server's RPC, Redis and SQL
  spans), batched and exported;
- ``off again``: a second ``off`` pair, the control: how far apart two
  identical setups measure on this machine in this run (the noise floor).

wrk (HTTP/1.1, keep-alive) drives ``GET /v1/tasks/{id}`` through each
gateway in turn, the order rotating every round; each run's answers are
checked. Every round starts every pair afresh (new server and gateway
processes): one process can run a few per cent faster or slower than an
identical one for its whole life (its memory layout, its hash seed), and with
the same processes in every round that bias never averaged out (the control
pair measured 91-113 % of ``off``). Each round's ratio is of runs minutes
apart at most, so the machine's drifts (it is shared) cancel out; the ratio
judged is the median of the rounds' ratios, each against the mean of that
round's two tracing-off pairs (the ratio of the means is shown too). Aims:
``100%`` >= 80 % of ``off``; ``default`` >= 97 %. The gateway's and the
server's CPU time per request (user + system, from /proc) is reported
too: on a machine shared with other work it varies far less than the rates.

Exit status: 0 when the benchmark ran (whether or not the aims were met), 1
when it could not run or calls failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass

import grpc

from bench.auth import register_and_login
from bench.drivers import Load
from bench.gateway import GatewayProcess, HttpResult, http_run, pick_target, verify_http
from bench.infra import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    ROOT,
    BenchEnv,
    BenchError,
    free_port,
    run_bench,
)

LOG_LEVEL = "warning"
AIMS = {"100%": 0.80, "default": 0.97}
CONTROL = "off again"  # a second pair set up as ``off``: how far apart identical setups measure
_OFF = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}


@dataclass
class Pair:
    name: str
    env: BenchEnv
    gateway: GatewayProcess

    def cpu_seconds(self) -> float:
        return (self.gateway.cpu_seconds() or 0.0) + (self.env.server_cpu_seconds() or 0.0)


@dataclass
class Run:
    http: HttpResult
    cpu_s: float  # gateway + server

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.http.calls * 1e6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tracing",
        description="GetTask over HTTP with tracing off, at the default sampling and at 100%.",
    )
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run (2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up s per run (1)")
    parser.add_argument("--concurrency", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--rounds", type=int, default=15, help="runs of each setting (15)")
    parser.add_argument("--verify-calls", type=int, default=50, help="calls checked per run")
    parser.add_argument(
        "--database-url", default=os.environ.get("TASKGATE_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("TASKGATE_REDIS_URL", DEFAULT_REDIS_URL)
    )
    args = parser.parse_args(argv)
    for name in ("duration", "concurrency", "rounds", "verify_calls"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be greater than 0")
    return args


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.counted = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.otlp_receiver", str(self.port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise BenchError("the OTLP receiver did not start")

    def stop(self) -> str:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            out, _ = self.process.communicate(timeout=20)
            self.counted = out.strip()
        return self.counted


def settings(receiver: Receiver) -> dict[str, dict[str, str]]:
    exporting = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
        "OTEL_TRACES_SAMPLER": "",
        "OTEL_SDK_DISABLED": "false",
    }
    return {
        "off": dict(_OFF),
        "default": {**exporting, "OTEL_TRACES_SAMPLER_ARG": ""},
        "100%": {**exporting, "OTEL_TRACES_SAMPLER_ARG": "1"},
        CONTROL: dict(_OFF),
    }


def pairs(args: argparse.Namespace, receiver: Receiver, tag: str) -> list[Pair]:
    made = []
    for name, otel in settings(receiver).items():
        env = BenchEnv(
            base_database_url=args.database_url,
            redis_url=args.redis_url,
            log_level=LOG_LEVEL,
            tag=tag,  # one database and Redis prefix for all three
            extra_env=otel,
        )
        made.append(Pair(name, env, GatewayProcess(upstream="", extra_env=otel)))
    return made


async def start(pair: Pair) -> None:
    pair.env.start_server()
    await pair.env.wait_serving()
    pair.gateway.upstream = pair.env.target
    pair.gateway.start()
    await pair.gateway.wait_ready()


async def restart(pair: Pair) -> None:
    """New server and gateway processes for the pair (its spans flushed on the way out);
    the old server's log is deleted (only the running one's is kept)."""
    pair.gateway.stop()
    log = pair.env._log_path
    pair.env._stop_server()
    if log is not None:
        log.unlink(missing_ok=True)
    pair.gateway = GatewayProcess(upstream="", extra_env=pair.gateway.extra_env)
    await start(pair)


def report(results: dict[str, list[Run]], load: Load, spans: str) -> None:
    print()
    print("call:        GetTask: GET /v1/tasks/{task_id} through the gateway")
    print(f"HTTP driver: wrk, 1 thread, {load.concurrency} connections (HTTP/1.1 keep-alive)")
    print(
        f"load:        {load.duration:g}s per run after {load.warmup:g}s warm-up; "
        f"TASKGATE_LOG_LEVEL={LOG_LEVEL}; {os.cpu_count()} CPUs"
    )
    print(f"receiver:    bench.otlp_receiver (OTLP/gRPC, own process): {spans}")
    print()
    row = "{:<10}{:>48}{:>8}{:>9}{:>10}{:>12}{:>9}"
    print(row.format("tracing", "calls/s per round", "mean", "vs offs", "median", "CPU us/req",
                     "off/it"))  # fmt: skip
    print(row.format("", "", "", "(means)", "(rounds)", "(gw+srv)", ""))
    off_cpu = _cpu_us(results["off"] + results[CONTROL])
    base = statistics.fmean((_mean(results["off"]), _mean(results[CONTROL])))
    for name, runs in results.items():
        mean = statistics.fmean(r.http.calls_per_s for r in runs)
        each = ", ".join(f"{r.http.calls_per_s:,.0f}" for r in runs)
        cpu = _cpu_us(runs)
        print(row.format(name, each, f"{mean:,.0f}", f"{mean / base:.1%}",
                         f"{_paired(results, name):.1%}", f"{cpu:,.0f}",
                         f"{off_cpu / cpu:.1%}"))  # fmt: skip
    print()
    print(f"control: {CONTROL} at {_paired(results, CONTROL):.1%} of off (the same settings): "
          "differences of that size are this machine's noise")  # fmt: skip
    for name, aim in AIMS.items():
        ratio = _paired(results, name)
        by_cpu = off_cpu / _cpu_us(results[name])
        met = "MET" if ratio >= aim else "NOT MET"
        print(f"aim: {name} >= {aim:.0%} of off -> {ratio:.1%} (median of the rounds): {met} "
              f"(by CPU per request: {by_cpu:.1%})")  # fmt: skip


def _mean(runs: list[Run]) -> float:
    return statistics.fmean(r.http.calls_per_s for r in runs)


def _paired(results: dict[str, list[Run]], name: str) -> float:
    """The median over the rounds of this setting's rate / that round's tracing-off rate
    (the mean of ``off`` and ``off again``: two identical pairs measure steadier than one)."""
    if name == CONTROL:
        offs = [off.http.calls_per_s for off in results["off"]]
    else:
        offs = [statistics.fmean((a.http.calls_per_s, b.http.calls_per_s))
                for a, b in zip(results["off"], results[CONTROL], strict=True)]  # fmt: skip
    return statistics.median(
        it.http.calls_per_s / off for it, off in zip(results[name], offs, strict=True)
    )


def _cpu_us(runs: list[Run]) -> float:
    return sum(r.cpu_s for r in runs) / sum(r.http.calls for r in runs) * 1e6


async def bench(args: argparse.Namespace, receiver: Receiver, made: list[Pair]) -> None:
    receiver.start()
    await asyncio.to_thread(made[0].env.migrate)
    for pair in made:
        await start(pair)
    load = Load(
        target=made[0].env.target,
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        connections=1,
    )
    async with grpc.aio.insecure_channel(made[0].env.target) as channel:
        login = await register_and_login(channel)
        target = await pick_target(channel, login, "GetTask")
    for pair in made:
        await verify_http(pair.gateway, target, login, args.verify_calls)
    results: dict[str, list[Run]] = {pair.name: [] for pair in made}
    for number in range(args.rounds):
        order = made[number % len(made) :] + made[: number % len(made)]
        for pair in order:
            if number > 0:
                await restart(pair)
            warm = Load(load.target, load.warmup, 0.0, load.concurrency, load.connections)
            counted = Load(load.target, load.duration, 0.0, load.concurrency, load.connections)
            await http_run(pair.gateway, target, login, warm)
            before = pair.cpu_seconds()
            result = await http_run(pair.gateway, target, login, counted)
            results[pair.name].append(Run(result, pair.cpu_seconds() - before))
            await verify_http(pair.gateway, target, login, args.verify_calls)
        print(
            f"  round {number + 1}: "
            + ", ".join(
                f"{n} {r[-1].http.calls_per_s:,.0f}/s {r[-1].cpu_us:,.0f}us"
                for n, r in results.items()
            ),
            flush=True,
        )
    for pair in made:
        pair.gateway.stop()  # flushes its last spans on the way out
        pair.env._stop_server()
    report(results, load, receiver.stop())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    receiver = Receiver()
    made = pairs(args, receiver, tag=os.urandom(4).hex())

    def close() -> list[str]:
        problems: list[str] = []
        for pair in reversed(made):  # the first one created the database: it drops it last
            pair.gateway.stop()
            problems += pair.env.close()
        receiver.stop()
        return problems

    return run_bench(
        bench(args, receiver, made),
        close=close,
        on_failure=lambda: "\n".join(
            f"{p.name} gateway log (tail):\n{p.gateway.log_tail()}" for p in made
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
