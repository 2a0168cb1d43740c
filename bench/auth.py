"""``python -m bench.auth``: GetUser (through auth) vs. health Check, in calls/s.

Starts a throw-away server (fresh database, own Redis prefix), registers and logs
in a user, then alternates load runs of ``grpc.health.v1.Health/Check`` and
``taskgate.v1.UserService/GetUser`` (``user_id: "me"`` with a bearer token) at
the same duration and concurrency, and compares the means. The load comes from
h2load when it is installed (else from a multi-process grpc.aio client), always
in processes separate from the server. After every run a batch of real gRPC
calls must all be OK, so a run of errors cannot pass for a fast one.

Exit status: 0 when the benchmark ran (whether or not the aim was met), 1 when
it could not run or calls failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
from collections import Counter
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.drivers import (
    Call,
    Load,
    RunResult,
    default_processes,
    h2load_path,
    h2load_version,
    run_h2load,
    run_python,
)
from bench.infra import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, BenchEnv, BenchError, run_bench
from taskgate.v1 import (
    session_service_pb2,
    session_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)

AIM = 0.50  # GetUser should reach at least half of Check's calls/s
CHECK_PATH = "/grpc.health.v1.Health/Check"
GET_USER_PATH = "/taskgate.v1.UserService/GetUser"
SERVER_LOG_LEVEL = "warning"


@dataclass(frozen=True)
class Login:
    user_id: str
    token: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.auth",
        description="GetUser (auth: Redis session + Postgres user) vs health Check, calls/s.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds first (1)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent streams (32)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="Check+GetUser pairs, alternating (2)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="h2load connections (1) / fallback client processes (CPUs, max 4); "
        "the streams are split between them",
    )
    parser.add_argument(
        "--driver",
        choices=("auto", "h2load", "python"),
        default="auto",
        help="load generator: h2load if installed, else grpc.aio processes (auto)",
    )
    parser.add_argument(
        "--verify-calls", type=int, default=200, help="gRPC calls checked after each run (200)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TASKGATE_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="Postgres server to use; a taskgate_bench_<random> database is made and dropped",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("TASKGATE_REDIS_URL", DEFAULT_REDIS_URL)
    )
    args = parser.parse_args(argv)
    for name in ("duration", "concurrency", "rounds", "verify_calls"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be greater than 0")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.connections is not None and not 0 < args.connections <= args.concurrency:
        parser.error("--connections must be between 1 and --concurrency")
    return args


# -- real gRPC calls ----------------------------------------------------------------------


async def register_and_login(channel: grpc.aio.Channel) -> Login:
    username = f"bench_{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(18)
    users = user_service_pb2_grpc.UserServiceStub(channel)
    sessions = session_service_pb2_grpc.SessionServiceStub(channel)
    created = await users.CreateUser(
        user_service_pb2.CreateUserRequest(username=username, password=password), timeout=10
    )
    login = await sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(username=username, password=password),
        timeout=10,
    )
    if login.session.user_id != created.user.user_id or not login.session.session_id:
        raise BenchError(f"CreateSession returned an unexpected session: {login}")
    return Login(user_id=created.user.user_id, token=login.session.session_id)


async def verify(channel: grpc.aio.Channel, login: Login, count: int, parallel: int) -> None:
    """``count`` Check and ``count`` GetUser calls; all must be OK with the right answer."""
    health = health_pb2_grpc.HealthStub(channel)
    users = user_service_pb2_grpc.UserServiceStub(channel)
    metadata = (("authorization", f"Bearer {login.token}"),)
    gate = asyncio.Semaphore(parallel)
    outcomes: Counter[str] = Counter()

    async def check() -> None:
        async with gate:
            try:
                response = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            except grpc.aio.AioRpcError as exc:
                outcomes[f"Check {exc.code().name}: {exc.details()}"] += 1
                return
            serving = response.status == health_pb2.HealthCheckResponse.SERVING
            outcomes["Check OK" if serving else f"Check status {response.status}"] += 1

    async def get_user() -> None:
        async with gate:
            try:
                response = await users.GetUser(
                    user_service_pb2.GetUserRequest(user_id="me"), metadata=metadata, timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                outcomes[f"GetUser {exc.code().name}: {exc.details()}"] += 1
                return
            right = response.user.user_id == login.user_id
            outcomes["GetUser OK" if right else "GetUser returned another user"] += 1

    await asyncio.gather(*(check() for _ in range(count)), *(get_user() for _ in range(count)))
    bad = {outcome: n for outcome, n in outcomes.items() if not outcome.endswith(" OK")}
    if bad:
        raise BenchError(f"verification calls failed: {bad}")


async def make_calls(channel: grpc.aio.Channel, login: Login) -> tuple[Call, Call]:
    """The two calls, with the size of their known-good responses (checked against h2load)."""
    check_request = health_pb2.HealthCheckRequest()
    get_user_request = user_service_pb2.GetUserRequest(user_id="me")
    metadata = (("authorization", f"Bearer {login.token}"),)
    health_response = await health_pb2_grpc.HealthStub(channel).Check(check_request, timeout=10)
    user_response = await user_service_pb2_grpc.UserServiceStub(channel).GetUser(
        get_user_request, metadata=metadata, timeout=10
    )
    check = Call(
        name="Check",
        path=CHECK_PATH,
        request=check_request.SerializeToString(),
        metadata=(),
        response_size=len(health_response.SerializeToString()),
    )
    get_user = Call(
        name="GetUser",
        path=GET_USER_PATH,
        request=get_user_request.SerializeToString(),
        metadata=metadata,
        response_size=len(user_response.SerializeToString()),
    )
    return check, get_user


# -- the benchmark -------------------------------------------------------------------------


@dataclass(frozen=True)
class Driver:
    name: str
    description: str
    h2load: str | None  # the binary, when h2load drives the load


def pick_driver(args: argparse.Namespace) -> tuple[Driver, int]:
    binary = h2load_path() if args.driver in {"auto", "h2load"} else None
    if args.driver == "h2load" and binary is None:
        raise BenchError(
            "--driver h2load: h2load is not installed (apt-get install nghttp2-client)"
        )
    if binary is not None:
        connections = args.connections or 1
        streams = max(1, args.concurrency // connections)
        return (
            Driver(
                "h2load",
                f"{h2load_version(binary)}: {connections} connection(s) x {streams} streams, "
                "1 thread",
                binary,
            ),
            connections,
        )
    processes = min(args.connections or default_processes(), args.concurrency)
    streams = max(1, args.concurrency // processes)
    note = "" if args.driver == "python" else " (h2load not found: fallback)"
    return (
        Driver(
            "grpc.aio",
            f"grpc.aio client{note}: {processes} process(es) x {streams} streams",
            None,
        ),
        processes,
    )


async def load_run(driver: Driver, call: Call, load: Load, env: BenchEnv) -> RunResult:
    if driver.h2load is not None:
        return await run_h2load(driver.h2load, call, load, env.server_cpu_seconds)
    return await run_python(call, load, env.server_cpu_seconds)


def cpu_per_call(results: list[RunResult]) -> str:
    cpu = [r.server_cpu_s for r in results]
    if any(c is None for c in cpu):
        return "n/a"
    total = sum(c for c in cpu if c is not None)
    return f"{total / sum(r.calls for r in results) * 1e6:.0f}"


def report(
    driver: Driver,
    load: Load,
    rounds: list[tuple[RunResult, RunResult]],
    load_before: tuple[float, float, float],
) -> None:
    print()
    print(f"driver:      {driver.description}")
    print(
        f"load:        {load.concurrency} concurrent streams, {load.duration:g}s per run "
        f"after {load.warmup:g}s warm-up, {len(rounds)} round(s) of Check then GetUser"
    )
    print(
        f"server:      python -m server, TASKGATE_LOG_LEVEL={SERVER_LOG_LEVEL} "
        f"(access logs off), {os.cpu_count()} CPUs on this machine"
    )
    print(f"load avg:    {' / '.join(f'{x:.2f}' for x in load_before)} (1/5/15 min, at start)")
    print()
    row = "{:<20}{:>15}{:>17}{:>15}"
    print(row.format("round", "Check calls/s", "GetUser calls/s", "GetUser/Check"))
    for number, (check, get_user) in enumerate(rounds, 1):
        ratio = get_user.calls_per_s / check.calls_per_s
        print(
            row.format(
                number, f"{check.calls_per_s:,.0f}", f"{get_user.calls_per_s:,.0f}", f"{ratio:.1%}"
            )
        )
    check_mean = statistics.fmean(c.calls_per_s for c, _ in rounds)
    get_user_mean = statistics.fmean(g.calls_per_s for _, g in rounds)
    ratio = get_user_mean / check_mean
    print(row.format("mean", f"{check_mean:,.0f}", f"{get_user_mean:,.0f}", f"{ratio:.1%}"))
    print(
        row.format(
            "server CPU us/call",
            cpu_per_call([c for c, _ in rounds]),
            cpu_per_call([g for _, g in rounds]),
            "",
        )
    )
    print()
    verdict = "MET" if ratio >= AIM else "NOT MET"
    print(f"aim: GetUser >= {AIM:.0%} of Check -> {ratio:.1%}: {verdict}")


async def bench(args: argparse.Namespace, env: BenchEnv) -> None:
    driver, connections = pick_driver(args)
    load_before = os.getloadavg()
    print(f"database {env.database_name}, redis prefix {env.redis_prefix!r}", flush=True)
    await asyncio.to_thread(env.migrate)
    env.start_server()
    await env.wait_serving()
    print(f"server on {env.target}; load driver: {driver.description}", flush=True)
    load = Load(
        target=env.target,
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        connections=connections,
    )
    async with grpc.aio.insecure_channel(env.target) as channel:
        login = await register_and_login(channel)
        await verify(channel, login, args.verify_calls, args.concurrency)
        check, get_user = await make_calls(channel, login)
        rounds: list[tuple[RunResult, RunResult]] = []
        for number in range(1, args.rounds + 1):
            pair = []
            for call in (check, get_user):
                result = await load_run(driver, call, load, env)
                await verify(channel, login, args.verify_calls, args.concurrency)
                print(
                    f"  round {number} {call.name:<8} {result.calls_per_s:>10,.0f} calls/s "
                    f"({result.calls} OK calls; verified)",
                    flush=True,
                )
                pair.append(result)
            rounds.append((pair[0], pair[1]))
    report(driver, load, rounds, load_before)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = BenchEnv(
        base_database_url=args.database_url,
        redis_url=args.redis_url,
        log_level=SERVER_LOG_LEVEL,
    )
    return run_bench(
        bench(args, env),
        close=env.close,
        on_failure=lambda: f"server log (tail):\n{env.server_log_tail()}" if env.process else None,
    )


if __name__ == "__main__":
    sys.exit(main())
