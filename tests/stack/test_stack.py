"""The real stack under a real Prometheus: every dashboard query and every rule
returns data.

It starts ``python -m server`` (embedded processor off), ``python -m
server.processor`` and ``python -m gateway``, each with its metrics port on a
free loopback port, and Debian's ``prometheus`` on loopback with its own data
directory, a 1s scrape and evaluation interval, and monitoring/prometheus.yml
with only its target lists pointed at those ports. It drives traffic through
gRPC and the gateway (image tasks, a watch stream, client errors, failed and
refused logins, unknown routes), then asks Prometheus's HTTP API: every target
up, every rule healthy, every dashboard query and every recording and alert
expression non-empty (alert expressions with ``bool`` after each comparison:
the series they watch exist, firing or not), and every family of the metrics
contract served by the process that owns it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from server.config import Settings
from tests.conftest import ROOT, TEST_REDIS_URL
from tests.support.clients import Client, blur, grayscale, resize, task_user
from tests.support.images import image_bytes
from tests.support.monitoring import (
    JOBS,
    MONITORING,
    alert_rules,
    contract_gaps,
    dashboard_queries,
    exported_series,
    grafana_variables,
    recording_rules,
)
from tests.support.net import free_port
from tests.support.promql import with_bool

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        PROMETHEUS is None, reason="prometheus is absent (Debian: apt-get install prometheus)"
    ),
]
RATE_INTERVAL = "1m"  # Grafana's $__rate_interval, for a 1s scrape over a short test
SETTLE = 90.0  # seconds for every query to have data


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int
    prometheus: int
    metrics: dict[str, int]  # by job


def prometheus_config(ports: Ports, directory: Path) -> Path:
    """monitoring/prometheus.yml with 1s intervals, its rule files by absolute path,
    and each job's targets (static or discovered) replaced by the test's port."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(MONITORING / pattern) for pattern in config["rule_files"]]
    assert {job["job_name"] for job in config["scrape_configs"]} == set(JOBS)
    for job in config["scrape_configs"]:
        for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[key]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports.metrics[job['job_name']]}"]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def running(name: str, command: list[str], env: dict[str, str], logs: Path) -> Iterator[None]:
    """A process with its output in ``logs/NAME.log``, stopped (SIGTERM, then kill) after."""
    with (logs / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def app_env(settings: Settings, redis_prefix: str, ports: Ports) -> dict[str, str]:
    return {
        **os.environ,
        "TASKGATE_DATABASE_URL": settings.database_url.reveal(),
        "TASKGATE_REDIS_URL": TEST_REDIS_URL,
        "TASKGATE_REDIS_KEY_PREFIX": redis_prefix,
        "TASKGATE_GRPC_ADDR": f"127.0.0.1:{ports.grpc}",
        "TASKGATE_SERVER_METRICS_ADDR": f"127.0.0.1:{ports.metrics['server']}",
        "TASKGATE_PROCESSOR_METRICS_ADDR": f"127.0.0.1:{ports.metrics['processor']}",
        "TASKGATE_GATEWAY_ADDR": f"127.0.0.1:{ports.http}",
        "TASKGATE_GATEWAY_UPSTREAM": f"127.0.0.1:{ports.grpc}",
        "TASKGATE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{ports.metrics['gateway']}",
        "TASKGATE_EMBEDDED_PROCESSOR": "false",
        "TASKGATE_PROCESSOR_CONCURRENCY": "2",
        "TASKGATE_PROCESSOR_WORKERS": "1",
        "TASKGATE_PROCESSOR_POLL_INTERVAL": "1s",
        "TASKGATE_SHUTDOWN_GRACE": "2s",
        "TASKGATE_ARGON2_MEMORY_KIB": "1024",
        "TASKGATE_ARGON2_TIME_COST": "1",
        "TASKGATE_ARGON2_PARALLELISM": "1",
        # Two wrong passwords for a user, then refusals: both show on the dashboard.
        "TASKGATE_LOGIN_RATE_LIMIT": "2",
        "TASKGATE_LOG_LEVEL": "info",
    }


@pytest.fixture
async def stack(settings: Settings, redis_prefix: str, tmp_path: Path) -> AsyncIterator[Ports]:
    assert PROMETHEUS is not None
    ports = Ports(
        grpc=free_port(),
        http=free_port(),
        prometheus=free_port(),
        metrics={job: free_port() for job in JOBS},
    )
    env = app_env(settings, redis_prefix, ports)
    python = sys.executable
    prometheus = [
        PROMETHEUS,
        f"--config.file={prometheus_config(ports, tmp_path)}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{ports.prometheus}",
        "--log.level=warn",
    ]
    try:
        with (
            running("server", [python, "-m", "server"], env, tmp_path),
            running("processor", [python, "-m", "server.processor"], env, tmp_path),
            running("gateway", [python, "-m", "gateway"], env, tmp_path),
            running("prometheus", prometheus, dict(os.environ), tmp_path),
        ):
            yield ports
    except BaseException:
        print_logs(tmp_path)
        raise


def print_logs(directory: Path) -> None:
    """The end of each process's log, for a failing test's report."""
    for log in sorted(directory.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


async def until_ok(session: aiohttp.ClientSession, url: str) -> None:
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)


async def grpc_traffic(port: int) -> None:
    """Image tasks to their end over WatchTask, client errors, failed and refused logins."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        client = Client(channel)
        tasks = await task_user(client)
        pipeline = [grayscale(), resize(32, 24), blur(1.0)]
        created = [await tasks.create(image_bytes(64, 48, seed=i), pipeline) for i in range(4)]
        for task in created:
            assert (await tasks.wait_until_ended(task.task_id)).task_id == task.task_id
        await tasks.list_page(page_size=2)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await tasks.get(str(uuid.uuid4()))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await tasks.create(b"not an image", pipeline)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        user = await client.register()
        codes = []
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await client.login(user.username, "wrong password")
            codes.append(wrong.value.code())
        assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED


async def http_traffic(port: int) -> None:
    """Through the gateway: register, log in, an image task, a 404 and an unknown route."""
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        await until_ok(http, "/ready")
        username = f"user{uuid.uuid4().hex[:12]}"
        password = "correct horse battery"
        body = {"username": username, "password": password}
        async with http.post("/v1/users", json=body) as response:
            assert response.status == 200, await response.text()
        async with http.post("/v1/sessions", json=body) as response:
            token = (await response.json())["session"]["sessionId"]
        auth = {"Authorization": f"Bearer {token}"}
        task_body = {
            "image": base64.b64encode(image_bytes(48, 32)).decode(),
            "filters": [{"grayscale": {}}, {"rotate": {"degrees": 90}}],
            "outputFormat": "IMAGE_FORMAT_PNG",
        }
        async with http.post("/v1/tasks", json=task_body, headers=auth) as response:
            assert response.status == 200, await response.text()
            task_id = (await response.json())["task"]["taskId"]
        async with http.get(f"/v1/tasks/{task_id}", headers=auth) as response:
            assert response.status == 200
        async with http.get(f"/v1/tasks/{uuid.uuid4()}", headers=auth) as response:
            assert response.status == 404
        async with http.get("/no/such/route") as response:
            assert response.status == 404


async def query(session: aiohttp.ClientSession, expr: str) -> list[Any]:
    async with session.get("/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


def expressions() -> dict[str, str]:
    """Every query to check, by where it comes from."""
    found = {
        f"dashboard {title}": grafana_variables(expr, RATE_INTERVAL)
        for title, expr in dashboard_queries().items()
    }
    found |= {f"record {name}": expr for name, expr in recording_rules().items()}
    found |= {f"record {name} (recorded)": name for name in recording_rules()}
    found |= {f"alert {name}": with_bool(rule["expr"]) for name, rule in alert_rules().items()}
    return found


async def empty_queries(session: aiohttp.ClientSession) -> list[str]:
    return [name for name, expr in expressions().items() if not await query(session, expr)]


async def unhealthy_rules(session: aiohttp.ClientSession) -> list[str]:
    async with session.get("/api/v1/rules") as response:
        groups = (await response.json())["data"]["groups"]
    return [
        f"{rule['name']}: {rule['health']} {rule.get('lastError', '')}"
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]


async def target_health(session: aiohttp.ClientSession) -> dict[str, str]:
    async with session.get("/api/v1/targets") as response:
        active = (await response.json())["data"]["activeTargets"]
    return {target["labels"]["job"]: target["health"] for target in active}


async def test_every_dashboard_query_and_rule_has_data(stack: Ports) -> None:
    prometheus_url = f"http://127.0.0.1:{stack.prometheus}"
    async with aiohttp.ClientSession(prometheus_url) as prometheus:
        await until_ok(prometheus, "/-/ready")
        await http_traffic(stack.http)
        await grpc_traffic(stack.grpc)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE
        while True:
            targets = await target_health(prometheus)
            empty = await empty_queries(prometheus)
            unhealthy = await unhealthy_rules(prometheus)
            settled = targets == dict.fromkeys(JOBS, "up") and not empty and not unhealthy
            if settled or loop.time() > deadline:
                break
            await asyncio.sleep(1.0)
        seen = {"targets": targets, "unhealthy rules": unhealthy, "empty queries": empty}
        assert seen == {
            "targets": dict.fromkeys(JOBS, "up"),
            "unhealthy rules": [],
            "empty queries": [],
        }
        assert await query(prometheus, 'ALERTS{alertstate="firing"}') == []

    async with aiohttp.ClientSession() as http:
        gaps = []
        for job, port in stack.metrics.items():
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                gaps += contract_gaps(job, exported_series(await response.text()))
    assert gaps == []
