"""The server's own metrics, in process: its metrics port, the Postgres pools and
statements, Redis calls, logins and limits, and the queue gauges of its processor."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest
from aiohttp import web
from pydantic import SecretStr

from server.app import App, ListenError
from server.config import Settings
from taskgate.v1 import task_service_pb2 as pb
from tests.conftest import ROOT
from tests.integration.test_outages import proxies, via
from tests.support.clients import PASSWORD, blur, grayscale, task_user
from tests.support.images import image_bytes
from tests.support.metrics import find, scrape, value
from tests.support.net import free_port
from tests.support.polling import eventually
from tests.support.proxy import TcpProxy
from tests.support.servers import serving


async def test_the_server_serves_its_registry_on_its_metrics_port(settings: Settings) -> None:
    async with serving(settings) as (app, client):
        await client.register()
        status, content_type, text = await scrape(app.metrics_server.port)
    assert status == 200
    assert content_type.startswith("text/plain")
    started = find(text, "grpc_server_started_total", {"grpc_method": "CreateUser"})
    assert [s.value for s in started] == [1.0]
    assert find(text, "process_cpu_seconds_total")


async def _listening_elsewhere() -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def test_a_taken_metrics_port_fails_start_up_clearly(settings: Settings) -> None:
    runner, port = await _listening_elsewhere()
    try:
        app = App(settings.model_copy(update={"metrics_addr": f"127.0.0.1:{port}"}))
        with pytest.raises(ListenError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await app.start()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("module", "variable"),
    [
        ("server", "TASKGATE_SERVER_METRICS_ADDR"),
        ("server.processor", "TASKGATE_PROCESSOR_METRICS_ADDR"),
    ],
)  # fmt: skip
async def test_python_m_fails_on_a_taken_metrics_port(
    settings: Settings, module: str, variable: str
) -> None:
    runner, port = await _listening_elsewhere()
    try:
        env = {
            "TASKGATE_DATABASE_URL": settings.database_url.get_secret_value(),
            "TASKGATE_GRPC_ADDR": f"127.0.0.1:{free_port()}",
            variable: f"127.0.0.1:{port}",
        }
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", module],
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        await runner.cleanup()
    assert result.returncode == 1, result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}".encode() in result.stderr
    assert b"Traceback" not in result.stderr


async def test_the_pool_gauges_follow_the_pool(settings: Settings) -> None:
    async with serving(settings, db_pool_max_size=1) as (app, _):
        registry = app.registry
        assert value(registry, "db_pool_connections_max", pool="api") == 1
        assert value(registry, "db_pool_connections_max", pool="processor") == 4  # 2 + 2
        async with app.pool.connection():
            assert value(registry, "db_pool_connections_in_use", pool="api") == 1
            assert value(registry, "db_pool_connections_idle", pool="api") == 0
            waiting = asyncio.create_task(app.database.ping())

            async def queued() -> bool:
                return value(registry, "db_pool_requests_waiting", pool="api") == 1

            await eventually(queued)
        await waiting
        assert value(registry, "db_pool_requests_waiting", pool="api") == 0
        assert value(registry, "db_pool_connections_idle", pool="api") == 1
        assert (
            value(registry, "db_query_duration_seconds_count", operation="ping", category="select")
            >= 1
        )


@pytest.mark.parametrize(
    ("dependency", "family", "label"),
    [
        (
            "postgres",
            "db_query_errors_total",
            {"operation": "get_credentials", "category": "select"},
        ),
        ("redis", "redis_command_errors_total", {"command": "counter_read"}),
    ],
)
async def test_a_stalled_store_counts_errors_by_call(
    settings: Settings,
    proxies: dict[str, TcpProxy],
    dependency: str,
    family: str,
    label: dict[str, str],
) -> None:
    proxied = serving(
        settings,
        database_url=SecretStr(
            via(settings.database_url.get_secret_value(), proxies["postgres"].port)
        ),
        redis_url=SecretStr(via(settings.redis_url.get_secret_value(), proxies["redis"].port)),
        db_timeout=0.5,
        redis_timeout=0.5,
        embedded_processor=False,
    )
    async with proxied as (app, client):
        user = await client.register()
        await client.login(user.username)
        duration = family.replace("errors_total", "duration_seconds_count")
        timed = value(app.registry, duration, **label)
        assert timed > 0
        assert value(app.registry, family, **label) == 0
        proxies[dependency].stall()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.login(user.username)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert value(app.registry, family, **label) == 1
        assert value(app.registry, duration, **label) == timed + 1  # failures are timed too


async def test_logins_and_limits_are_counted(settings: Settings) -> None:
    async with serving(settings, client_login_limit=3, login_rate_limit=1) as (app, client):
        user = await client.register()
        await client.login(user.username)

        async def refused(username: str, password: str) -> grpc.StatusCode:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.login(username, password)
            return caught.value.code()

        codes = [
            await refused(user.username, "a wrong password"),
            await refused(user.username, PASSWORD),  # one failure is the limit: locked out
            await refused("nobody", PASSWORD),
            await refused("nobody", PASSWORD),  # the address's fourth login in the window
        ]
        assert [code.name for code in codes] == [
            "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED",
        ]  # fmt: skip
        registry = app.registry
        assert value(registry, "sessions_created_total") == 1
        assert value(registry, "login_failures_total", reason="wrong_password") == 1
        assert value(registry, "login_failures_total", reason="unknown_user") == 1
        assert value(registry, "rate_limit_refusals_total", limit="login_lockout") == 1
        assert value(registry, "rate_limit_refusals_total", limit="client_login") == 1
        assert value(registry, "rate_limit_refusals_total", limit="password_hashing") == 0


async def test_the_queue_gauges_follow_the_queue_while_the_processor_runs(
    settings: Settings,
) -> None:
    fast = settings.model_copy(update={"processor_concurrency": 1, "processor_stats_interval": 0.1})
    async with serving(fast) as (app, client):
        tasks = await task_user(client)
        heavy = await tasks.create(image_bytes(1200, 1200), [blur(60)] * 20)
        call = tasks.stub.WatchTask(
            pb.WatchTaskRequest(task_id=heavy.task_id), metadata=tasks.metadata
        )
        async for message in call:
            if message.task.status == pb.TASK_STATUS_RUNNING:
                break
        call.cancel()
        for seed in (1, 2):
            await tasks.create(image_bytes(seed=seed), [grayscale()])
        registry = app.registry

        async def backlog() -> bool:
            return (
                value(registry, "tasks_queue_depth") == 2
                and value(registry, "tasks_running") == 1
                and value(registry, "tasks_oldest_pending_age_seconds") > 0
            )

        await eventually(backlog)
        await tasks.cancel(heavy.task_id)

        async def drained() -> bool:
            return (
                value(registry, "tasks_queue_depth") == 0
                and value(registry, "tasks_running") == 0
                and value(registry, "tasks_oldest_pending_age_seconds") == 0
            )

        await eventually(drained, within=20)
        assert value(registry, "tasks_finished_total", status="completed") == 2
        assert value(registry, "tasks_finished_total", status="cancelled") == 1


__all__ = ["proxies"]  # the fixture, shared with the outage tests


async def test_a_server_without_a_processor_samples_the_queue_gauges(settings: Settings) -> None:
    """No processor anywhere: the queue still shows (and its alerts can fire)."""
    alone = settings.model_copy(
        update={"embedded_processor": False, "processor_stats_interval": 0.1}
    )
    async with serving(alone) as (app, client):
        tasks = await task_user(client)
        for seed in (1, 2, 3):
            await tasks.create(image_bytes(seed=seed), [grayscale()])
        registry = app.registry

        async def backlog() -> bool:
            return (
                value(registry, "tasks_queue_depth") == 3
                and value(registry, "tasks_running") == 0
                and value(registry, "tasks_oldest_pending_age_seconds") > 0
            )

        await eventually(backlog)
