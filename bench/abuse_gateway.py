"""The gateway rounds of ``make bench-abuse``: memory held for bodies, and streams.

Each runs a throw-away server (no processor) and ``python -m gateway`` in front
of it, both with their default limits, and measures from outside:

- ``gateway-memory``: the gateway's RSS (VmRSS, sampled every 20 ms) idle, at its
  peak while 100 concurrent ``POST /v1/tasks`` of just under 14 MiB each are in
  flight without credentials, and 2 s after they were answered; then the same with
  an ``Authorization`` header (a made-up token: the total budget, not the smaller
  share, applies). Aim: peak under 300 MB, and back within 50 MB of idle after.
- ``streams``: one user asks for 1,000 NDJSON watch streams of a PENDING task
  through the gateway and keeps those it gets. Meanwhile another user's
  ``GetTask`` (over gRPC and through the gateway) and ``Health/Check`` are timed,
  20 sequential calls each, before and during. Aim: every one under 100 ms. Then
  every client disconnects at once, and the server's WatchTask calls still in
  flight (its ``grpc_server_started_total`` minus ``grpc_server_handled_total``)
  are polled every 10 ms until none is left; the same with Server-Sent Events.
  Aim: gone within 1 s.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from io import BytesIO

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bench.abuse import PeakRss, rss_mb
from bench.auth import Login, register_and_login
from bench.gateway import GatewayProcess
from bench.infra import BenchEnv, BenchError
from taskgate.v1 import task_service_pb2, task_service_pb2_grpc

BODY_BYTES = 14 * 1024 * 1024 - 1024  # just under the gateway's largest body
UPLOADS = 100
RSS_AIM_MB = 300
GIVE_BACK_MB = 50
STREAMS = 1000
LATENCY_AIM_MS = 100.0
DRAIN_AIM_S = 1.0
WATCH = "WatchTask"


def upload_body(size: int) -> bytes:
    """A CreateTask JSON body of exactly ``size`` bytes (its image: base64 zeros)."""
    head, tail = b'{"filters": [{"grayscale": {}}], "image": "', b'"}'
    room = size - len(head) - len(tail)
    padding = room % 4  # base64 comes in fours; the rest is spaces after the object
    return head + b"A" * (room - padding) + tail + b" " * padding


async def gateway_memory(env: BenchEnv) -> None:
    gateway = GatewayProcess(upstream=env.target)
    gateway.start()
    try:
        await gateway.wait_ready()
        assert gateway.process is not None
        pid = gateway.process.pid
        body = upload_body(BODY_BYTES)
        print(f"\ngateway memory: pid {pid}, {UPLOADS} concurrent bodies of {len(body):,} bytes")
        for name, headers in (
            ("without credentials", {}),
            ("with a made-up token", {"Authorization": "Bearer not-a-session"}),
        ):
            await _upload_round(gateway, pid, body, name, headers)
    finally:
        gateway.stop()


async def _upload_round(
    gateway: GatewayProcess, pid: int, body: bytes, name: str, headers: dict[str, str]
) -> None:
    idle = rss_mb(pid)
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.post(
                f"{gateway.base}/v1/tasks",
                data=body,
                headers={"Content-Type": "application/json", **headers},
            ) as response:
                await response.read()
                statuses[response.status] += 1

        started = time.monotonic()
        async with PeakRss(pid) as rss:
            await asyncio.gather(*(one() for _ in range(UPLOADS)))
        took = time.monotonic() - started
    await asyncio.sleep(2.0)
    after = rss_mb(pid)
    peak_ok = "MET" if rss.peak < RSS_AIM_MB else "NOT MET"
    back_ok = "MET" if after < idle + GIVE_BACK_MB else "NOT MET"
    print(
        f"  {name:<22} RSS idle {idle:4.0f} MB, peak {rss.peak:4.0f} MB "
        f"(aim < {RSS_AIM_MB}: {peak_ok}), 2 s after {after:4.0f} MB "
        f"(aim < idle + {GIVE_BACK_MB}: {back_ok}); {took:4.1f}s; HTTP {dict(statuses)}",
        flush=True,
    )


# -- streams -----------------------------------------------------------------------------


def _png() -> bytes:
    out = BytesIO()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


async def _pending_task(channel: grpc.aio.Channel, login: Login) -> str:
    created = await task_service_pb2_grpc.TaskServiceStub(channel).CreateTask(
        task_service_pb2.CreateTaskRequest(
            image=_png(), filters=[task_service_pb2.Filter(invert=task_service_pb2.Filter.Invert())]
        ),
        metadata=(("authorization", f"Bearer {login.token}"),),
        timeout=10,
    )
    return created.task.task_id


async def watches_in_flight(session: aiohttp.ClientSession, metrics_url: str) -> int:
    async with session.get(metrics_url) as response:
        text = await response.text()
    started = handled = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("grpc_method") != WATCH:
                continue
            if sample.name == "grpc_server_started_total":
                started += sample.value
            elif sample.name == "grpc_server_handled_total":
                handled += sample.value
    return int(started - handled)


async def _timed(call: Callable[[], Awaitable[object]], count: int = 20) -> list[float]:
    took = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        took.append((time.perf_counter() - started) * 1000)
    return took


def _latency_line(name: str, before: list[float], during: list[float]) -> str:
    worst = max(during)
    verdict = "MET" if worst < LATENCY_AIM_MS else "NOT MET"
    return (
        f"  {name:<26} before: median {statistics.median(before):5.1f} ms, max {max(before):5.1f}"
        f" | during: median {statistics.median(during):5.1f} ms, max {worst:5.1f} ms "
        f"(aim < {LATENCY_AIM_MS:.0f}: {verdict})"
    )


@dataclass
class Held:
    """A watch stream a client holds open: its own session (connection) and response."""

    session: aiohttp.ClientSession
    response: aiohttp.ClientResponse

    async def close(self) -> None:
        self.response.close()  # drops the connection: the client is gone
        await self.session.close()


class StreamBench:
    def __init__(self, env: BenchEnv, gateway: GatewayProcess, metrics_url: str) -> None:
        self.env = env
        self.gateway = gateway
        self.metrics_url = metrics_url
        self.samples: dict[int, str] = {}  # one refusal's body per HTTP status

    async def run(self) -> None:
        async with (
            grpc.aio.insecure_channel(self.env.target) as channel,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
        ):
            flooder, other = await register_and_login(channel), await register_and_login(channel)
            flooded = await _pending_task(channel, flooder)
            own = await _pending_task(channel, other)
            probes = self._probes(channel, session, other, own)
            before = {name: await _timed(probe) for name, probe in probes.items()}
            held, codes = await self._open(flooder, flooded, "application/x-ndjson", STREAMS)
            print(f"\nstreams: one user asked for {STREAMS} NDJSON watch streams: HTTP {codes}")
            during = {name: await _timed(probe) for name, probe in probes.items()}
            for name in probes:
                print(_latency_line(name, before[name], during[name]), flush=True)
            await self._drain(session, held, "NDJSON")
            held, codes = await self._open(flooder, flooded, "text/event-stream", STREAMS)
            print(f"  {STREAMS} SSE watch streams asked for: HTTP {codes}")
            await self._drain(session, held, "SSE")
            for status, sample in sorted(self.samples.items()):
                print(f"  a refusal with HTTP {status}: {sample}")

    def _probes(
        self,
        channel: grpc.aio.Channel,
        session: aiohttp.ClientSession,
        login: Login,
        task_id: str,
    ) -> dict[str, Callable[[], Awaitable[object]]]:
        metadata = (("authorization", f"Bearer {login.token}"),)
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        url = f"{self.gateway.base}/v1/tasks/{task_id}"

        async def get_task() -> object:
            request = task_service_pb2.GetTaskRequest(task_id=task_id)
            return await tasks.GetTask(request, metadata=metadata, timeout=10)

        async def check() -> object:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                raise BenchError(f"Health/Check answered {reply.status}")
            return reply

        async def get_task_http() -> object:
            async with session.get(url, headers={"Authorization": metadata[0][1]}) as response:
                if response.status != 200:
                    raise BenchError(f"GET {url}: HTTP {response.status}")
                return await response.read()

        return {
            "other user GetTask (gRPC)": get_task,
            "other user GetTask (HTTP)": get_task_http,
            "Health/Check (gRPC)": check,
        }

    async def _open(
        self, login: Login, task_id: str, accept: str, count: int
    ) -> tuple[list[Held], dict[int, int]]:
        """``count`` watch streams, each on a connection of its own; those that were served."""
        url = f"{self.gateway.base}/v1/tasks/{task_id}:watch"
        headers = {"Authorization": f"Bearer {login.token}", "Accept": accept}
        codes: Counter[int] = Counter()

        async def one() -> Held | None:
            session = aiohttp.ClientSession()
            response = await session.get(url, headers=headers)
            codes[response.status] += 1
            if response.status == 200:
                await response.content.readuntil(b"TASK_STATUS_PENDING")
                return Held(session, response)
            body = await response.read()
            self.samples.setdefault(response.status, body.decode(errors="replace")[:200])
            await session.close()
            return None

        opened = await asyncio.gather(*(one() for _ in range(count)))
        return [held for held in opened if held is not None], dict(codes)

    async def _drain(self, monitor: aiohttp.ClientSession, held: list[Held], kind: str) -> None:
        in_flight = await watches_in_flight(monitor, self.metrics_url)
        started = time.monotonic()
        await asyncio.gather(*(stream.close() for stream in held))
        while (left := await watches_in_flight(monitor, self.metrics_url)) > 0:
            if time.monotonic() - started > 30:
                raise BenchError(f"{left} {kind} upstream streams still open 30 s after")
            await asyncio.sleep(0.01)
        took = time.monotonic() - started
        verdict = "MET" if took < DRAIN_AIM_S else "NOT MET"
        print(
            f"  {kind}: {len(held)} clients held streams ({in_flight} upstream); all disconnect: "
            f"upstream streams gone after {took * 1000:.0f} ms (aim < 1 s: {verdict})",
            flush=True,
        )


async def streams(env: BenchEnv, metrics_addr: str) -> None:
    gateway = GatewayProcess(upstream=env.target)
    gateway.start()
    try:
        await gateway.wait_ready()
        await StreamBench(env, gateway, f"http://{metrics_addr}/metrics").run()
    finally:
        gateway.stop()
