"""``python -m bench.abuse``: what anonymous clients can make the server spend.

Scenarios against a throw-away ``python -m server`` (fresh database, own Redis
prefix), each measured from outside the server process:

- ``memory``: the server's RSS (VmRSS from /proc/<pid>/status, sampled every
  20 ms) before and at its peak while 100 concurrent max-size CreateUser calls,
  then 250 concurrent max-size CreateSession calls, all without a session, and
  then a gzip flood (requests of ~10 KB on the wire, each inflating to the
  largest message) are in flight. Aim: peak under 500 MB.
- ``argon2``: production argon2 costs; 100 concurrent loops of CreateSession
  with random unknown usernames (the flood), while a legitimate user logs in
  every 0.5 s from another address, with the device token of its previous
  login. The flood comes from one address, then (``--spread``) from a fresh
  address per call, through the trusted-proxy ``x-forwarded-for`` path (the
  server trusts 127.0.0.1 as a proxy). Reports the legitimate logins' latency
  and outcome. Aim: under 1 s.
- ``uploads`` (bench/abuse_uploads.py): one authenticated user floods CreateTask
  with small PNGs declaring 40 MP while another user submits small images.
  Aims: the other user's CreateTask under 200 ms, the server's RSS under 500 MB.
- ``results`` (bench/abuse_results.py): 8 concurrent downloads of a 14.5 MB
  result, three times. Aims: every download whole, the server's RSS under 500 MB.
- ``returning``: production argon2 costs; 100 flooding addresses (``--addresses``),
  one loop each, guessing passwords of unknown usernames and of the legitimate
  users alike, while 2 legitimate users (``--users``), each on an address of
  its own, log in every 0.5 s with the device token of their previous login
  (they logged in once before the flood), and one more logs in without a
  token. Aim: at least 95 % of the returning users' logins succeed, with a
  p99 latency under 1.5 s. The tokenless user's outcomes are printed too.

Exit status: 0 when it ran (whether or not the aims were met), 1 when it could not.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import grpc

from bench.infra import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    BenchEnv,
    BenchError,
    free_port,
)
from taskgate.v1 import (
    session_service_pb2,
    session_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_MESSAGE_BYTES = MAX_IMAGE_BYTES + 64 * 1024
RSS_AIM_MB = 500
LATENCY_AIM_S = 1.0
RETURNING_SUCCESS_AIM = 0.95
RETURNING_P99_AIM_S = 1.5
CREATE_USER = "/taskgate.v1.UserService/CreateUser"
CREATE_SESSION = "/taskgate.v1.SessionService/CreateSession"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError("no VmRSS in /proc (not Linux?)")


class PeakRss:
    """Samples a process's RSS until stopped; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PeakRss:
        self.peak = rss_mb(self.pid)
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, rss_mb(self.pid))

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb(self.pid))
            await asyncio.sleep(0.02)


def identity(data: bytes) -> bytes:
    return data


def max_size_request(size: int) -> bytes:
    """A request of ``size`` bytes whose field 1 (username) is one long string."""
    varint = bytearray()
    value = size - 1 - 4  # the tag, and a 4-byte varint length (for sizes 2-256 MiB)
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            varint.append(byte | 0x80)
        else:
            varint.append(byte)
            break
    return b"\x0a" + bytes(varint) + b"x" * (size - 1 - len(varint))


async def flood(
    target: str,
    path: str,
    payload: bytes,
    calls: int,
    compression: grpc.Compression | None = None,
) -> Counter[str]:
    """``calls`` concurrent calls of ``path`` with ``payload``; their status codes."""
    channels = [
        grpc.aio.insecure_channel(
            target,
            options=[("grpc.max_send_message_length", -1)],
            compression=compression,
        )
        for _ in range(max(1, calls // 50))
    ]
    codes: Counter[str] = Counter()

    async def one(number: int) -> None:
        call = channels[number % len(channels)].unary_unary(path, identity, identity)
        try:
            await call(payload, timeout=60)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1

    try:
        await asyncio.gather(*(one(n) for n in range(calls)))
    finally:
        for channel in channels:
            await channel.close()
    return codes


async def memory(env: BenchEnv, args: argparse.Namespace) -> None:
    assert env.process is not None
    pid = env.process.pid
    payload = max_size_request(MAX_MESSAGE_BYTES)
    print(f"\nmemory: server pid {pid}, request size {len(payload):,} bytes, no session")
    print(f"  idle RSS: {rss_mb(pid):.0f} MB")
    runs: list[tuple[str, str, bytes, int, grpc.Compression | None]] = [
        ("CreateUser x100", CREATE_USER, payload, 100, None),
        ("CreateSession x250", CREATE_SESSION, payload, 250, None),
        ("gzip CreateUser x400", CREATE_USER, payload, args.gzip_calls, grpc.Compression.Gzip),
    ]
    for name, path, body, calls, compression in runs:
        before = rss_mb(pid)
        started = time.monotonic()
        async with PeakRss(pid) as rss:
            codes = await flood(env.target, path, body, calls, compression)
        took = time.monotonic() - started
        verdict = "MET" if rss.peak < RSS_AIM_MB else "NOT MET"
        print(
            f"  {name:<22} RSS before {before:5.0f} MB, peak {rss.peak:5.0f} MB "
            f"(aim < {RSS_AIM_MB}: {verdict}); {took:4.1f}s; {dict(codes)}",
            flush=True,
        )


async def register(target: str, address: str) -> tuple[str, str]:
    username, password = f"legit_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    async with grpc.aio.insecure_channel(target) as channel:
        await user_service_pb2_grpc.UserServiceStub(channel).CreateUser(
            user_service_pb2.CreateUserRequest(username=username, password=password),
            metadata=(("x-forwarded-for", address),),
            timeout=30,
        )
    return username, password


async def argon2_flood(env: BenchEnv, args: argparse.Namespace, spread: bool) -> None:
    username, password = await register(env.target, "192.0.2.1")
    stop = asyncio.Event()
    flood_codes: Counter[str] = Counter()

    async def attacker(stub: session_service_pb2_grpc.SessionServiceAsyncStub) -> None:
        while not stop.is_set():
            address = (
                f"10.{random.randrange(256)}.{random.randrange(256)}.1"
                if spread
                else ("198.51.100.66")
            )
            try:
                await stub.CreateSession(
                    session_service_pb2.CreateSessionRequest(
                        username=f"nobody_{secrets.token_hex(6)}",
                        password="not the password",  # noqa: S106
                    ),
                    metadata=(("x-forwarded-for", address),),
                    timeout=30,
                )
                flood_codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                flood_codes[error.code().name] += 1

    latencies: list[float] = []
    outcomes: Counter[str] = Counter()

    async def legitimate(
        stub: session_service_pb2_grpc.SessionServiceAsyncStub, token: str
    ) -> None:
        await asyncio.sleep(1.0)  # let the flood build up
        ends = time.monotonic() + args.duration
        while time.monotonic() < ends:
            started = time.monotonic()
            try:
                token = (await login(stub, username, password, "192.0.2.1", token)).device_token
                outcomes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                outcomes[error.code().name] += 1
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.5)
        stop.set()

    async with (
        grpc.aio.insecure_channel(env.target) as attack,
        grpc.aio.insecure_channel(env.target) as legit,
    ):
        attack_stub = session_service_pb2_grpc.SessionServiceStub(attack)
        legit_stub = session_service_pb2_grpc.SessionServiceStub(legit)
        # Logged in once before the flood, as a returning user has: its device token.
        token = (await login(legit_stub, username, password, "192.0.2.1")).device_token
        await asyncio.gather(
            legitimate(legit_stub, token),
            *(attacker(attack_stub) for _ in range(args.flood)),
        )
    where = "a fresh address per call" if spread else "one address"
    worst = max(latencies)
    verdict = "MET" if worst < LATENCY_AIM_S else "NOT MET"
    print(
        f"  flood from {where}: legitimate logins {dict(outcomes)}, latency median "
        f"{statistics.median(latencies) * 1000:.0f} ms, max {worst * 1000:.0f} ms "
        f"(aim < {LATENCY_AIM_S:.0f} s: {verdict}); flood calls {dict(flood_codes)}",
        flush=True,
    )


class Logins:
    """Outcomes and latencies of one kind of login."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.latencies: list[float] = []

    async def call(self, login: Awaitable[session_service_pb2.CreateSessionResponse]) -> str:
        """The device token the login returned ("" when it failed)."""
        started = time.monotonic()
        try:
            response = await login
        except grpc.aio.AioRpcError as error:
            self.outcomes[error.code().name] += 1
            return ""
        finally:
            self.latencies.append(time.monotonic() - started)
        self.outcomes["OK"] += 1
        return response.device_token

    def summary(self) -> str:
        total = sum(self.outcomes.values())
        return (
            f"{self.outcomes['OK']}/{total} OK ({self.success:.0%}) {dict(self.outcomes)}, "
            f"latency median {statistics.median(self.latencies) * 1000:.0f} ms, "
            f"p99 {self.p99 * 1000:.0f} ms, max {max(self.latencies) * 1000:.0f} ms"
        )

    @property
    def success(self) -> float:
        return self.outcomes["OK"] / max(1, sum(self.outcomes.values()))

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def login(
    stub: session_service_pb2_grpc.SessionServiceAsyncStub,
    username: str,
    password: str,
    address: str,
    device_token: str = "",
) -> Awaitable[session_service_pb2.CreateSessionResponse]:
    return stub.CreateSession(
        session_service_pb2.CreateSessionRequest(
            username=username, password=password, device_token=device_token
        ),
        metadata=(("x-forwarded-for", address),),
        timeout=30,
    )


def run_guessing_flood(
    target: str, usernames: list[str], addresses: int, seconds: float
) -> Counter[str]:
    """In a process of its own: ``addresses`` loops, each from one address, guessing
    passwords of ``usernames`` and of unknown names for ``seconds``; their status codes."""
    return asyncio.run(guessing_flood(target, usernames, addresses, seconds))


async def guessing_flood(
    target: str, usernames: list[str], addresses: int, seconds: float
) -> Counter[str]:
    codes: Counter[str] = Counter()
    ends = time.monotonic() + seconds

    async def attacker(stub: session_service_pb2_grpc.SessionServiceAsyncStub, n: int) -> None:
        address = f"10.1.{n // 250}.{n % 250 + 1}"
        while time.monotonic() < ends:
            victim = random.choice([*usernames, f"nobody_{secrets.token_hex(6)}"])
            try:
                await login(stub, victim, f"guess-{secrets.token_hex(4)}", address)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1

    async with grpc.aio.insecure_channel(target) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        await asyncio.gather(*(attacker(stub, n) for n in range(addresses)))
    return codes


async def returning_users_flood(env: BenchEnv, args: argparse.Namespace) -> None:
    homes = [f"192.0.2.{10 + n}" for n in range(args.users + 1)]
    users = [await register(env.target, home) for home in homes]
    returning, tokenless = Logins(), Logins()

    async def user(
        stub: session_service_pb2_grpc.SessionServiceAsyncStub, number: int, token: str
    ) -> None:
        (username, password), home = users[number], homes[number]
        kind = tokenless if number == args.users else returning
        await asyncio.sleep(1.0 + number * 0.1)  # let the flood build up; spread the users
        ends = time.monotonic() + args.duration
        while time.monotonic() < ends:
            sent = token if kind is returning else ""
            token = await kind.call(login(stub, username, password, home, sent)) or token
            await asyncio.sleep(0.5)

    async with grpc.aio.insecure_channel(env.target) as legit:
        legit_stub = session_service_pb2_grpc.SessionServiceStub(legit)
        before = [  # each user's login before the flood: its device token
            (await login(legit_stub, u, p, home)).device_token
            for (u, p), home in zip(users, homes, strict=True)
        ]
        # The flood runs in a process of its own, as an attacker elsewhere would: the
        # legitimate clients' event loop then measures the server, not the flood's client.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            flood = asyncio.get_running_loop().run_in_executor(
                pool,
                run_guessing_flood,
                env.target,
                [u for u, _ in users],
                args.addresses,
                args.duration + 1.5 + args.users * 0.1,
            )
            await asyncio.gather(*(user(legit_stub, n, t) for n, t in enumerate(before)))
            flood_codes = await flood
    met = returning.success >= RETURNING_SUCCESS_AIM and returning.p99 < RETURNING_P99_AIM_S
    print(
        f"  flood from {args.addresses} addresses (its own process), {args.users} returning "
        f"users + 1 without a device token, logging in every 0.5 s for {args.duration:g} s\n"
        f"  returning users (device token): {returning.summary()} "
        f"(aim >= {RETURNING_SUCCESS_AIM:.0%} OK, p99 < {RETURNING_P99_AIM_S} s: "
        f"{'MET' if met else 'NOT MET'})\n"
        f"  without a device token:         {tokenless.summary()}\n"
        f"  flood calls {dict(flood_codes)}",
        flush=True,
    )


async def run(
    args: argparse.Namespace, env: BenchEnv, scenario: Callable[[], Awaitable[None]]
) -> None:
    await asyncio.to_thread(env.migrate)
    env.start_server()
    await env.wait_serving()
    await scenario()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.abuse", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--only",
        choices=(
            "memory", "argon2", "returning", "uploads", "results", "gateway-memory", "streams",
        ),
        default=None,
    )  # fmt: skip
    parser.add_argument("--gzip-calls", type=int, default=400, help="gzip flood calls (400)")
    parser.add_argument("--flood", type=int, default=100, help="concurrent flood loops (100)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of logins (8)")
    parser.add_argument(
        "--addresses", type=int, default=100, help="flooding addresses, returning (100)"
    )
    parser.add_argument("--users", type=int, default=2, help="returning users (2)")
    parser.add_argument(
        "--database-url", default=os.environ.get("TASKGATE_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("TASKGATE_REDIS_URL", DEFAULT_REDIS_URL)
    )
    return parser.parse_args(argv)


def scenarios(
    args: argparse.Namespace,
) -> list[tuple[str, dict[str, str], Callable[[BenchEnv], Awaitable[None]]]]:
    production_argon2 = {
        "TASKGATE_ARGON2_TIME_COST": "3",
        "TASKGATE_ARGON2_MEMORY_KIB": "65536",
        "TASKGATE_ARGON2_PARALLELISM": "4",
        "TASKGATE_TRUSTED_PROXIES": "127.0.0.1",
    }
    found: list[tuple[str, dict[str, str], Callable[[BenchEnv], Awaitable[None]]]] = []
    if args.only in (None, "memory"):
        found.append(("memory", {}, lambda env: memory(env, args)))
    if args.only in (None, "uploads"):
        from bench.abuse_uploads import uploads  # it imports this module's RSS helpers

        proxy = {"TASKGATE_TRUSTED_PROXIES": "127.0.0.1"}
        found.append(("uploads", proxy, lambda env: uploads(env, args.duration)))
    if args.only in (None, "results"):
        from bench.abuse_results import results  # it imports this module's RSS helpers

        found.append(("results", {}, results))
    from bench import abuse_gateway  # it uses this module's RSS sampler

    if args.only in (None, "gateway-memory"):
        found.append(("", {}, abuse_gateway.gateway_memory))
    if args.only in (None, "streams"):
        metrics_addr = f"127.0.0.1:{free_port()}"
        found.append(
            (
                "",  # the round prints its own title
                {"TASKGATE_SERVER_METRICS_ADDR": metrics_addr},
                lambda env: abuse_gateway.streams(env, metrics_addr),
            )
        )
    if args.only in (None, "argon2"):
        print_header = "argon2: production costs (t=3, 64 MiB, p=4), flood of unknown-user logins"
        found.append(
            (print_header, production_argon2, lambda env: argon2_flood(env, args, spread=False))
        )
        found.append(
            (print_header, production_argon2, lambda env: argon2_flood(env, args, spread=True))
        )
    if args.only in (None, "returning"):
        found.append(
            (
                "returning users: production argon2 costs, a guessing flood from many addresses",
                production_argon2,
                lambda env: returning_users_flood(env, args),
            )
        )
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}; defaults of every other limit"
    )
    for title, extra_env, scenario in scenarios(args):
        if title and title not in ("memory", "uploads", "results"):
            print(f"\n{title}")
        env = BenchEnv(
            base_database_url=args.database_url,
            redis_url=args.redis_url,
            extra_env=extra_env,
        )
        try:
            asyncio.run(run(args, env, lambda env=env, scenario=scenario: scenario(env)))  # type: ignore[misc]
        except BenchError as exc:
            print(f"bench failed: {exc}\n{env.server_log_tail()}", file=sys.stderr)
            return 1
        finally:
            for problem in env.close():
                print(f"clean-up failed: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
