"""The real stack under a real Prometheus: every dashboard query and every rule
returns data.

It starts ``python -m server`` (embedded processor off), ``python -m
server.processor`` and ``python -m gateway`` (tests/support/stack.py), each with
its metrics port on a free loopback port, and Debian's ``prometheus`` on loopback with its own data
directory, a 1s scrape and evaluation interval, and monitoring/prometheus.yml
with only its target lists pointed at those ports. It drives traffic through
gRPC and the gateway (image tasks, a watch stream, client errors, failed and
refused logins, unknown routes), then asks Prometheus's HTTP API: every target
up, every rule healthy, every dashboard query and every recording and alert
expression non-empty (alert expressions with ``bool`` after each comparison:
the series they watch exist, firing or not). That each process exports its
exact families and labels is tests/e2e/test_observability.py's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import subprocess
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
from tests.conftest import TEST_REDIS_URL
from tests.support.clients import Client, blur, grayscale, resize, task_user
from tests.support.images import image_bytes
from tests.support.monitoring import (
    JOBS,
    MONITORING,
    alert_rules,
    dashboard_queries,
    grafana_variables,
    recording_rules,
)
from tests.support.net import free_port
from tests.support.promql import with_bool
from tests.support.stack import running_stack

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        PROMETHEUS is None, reason="prometheus is absent (Debian: apt-get install prometheus)"
    ),
]
RATE_INTERVAL = "1m"  # Grafana's $__rate_interval, for a 1s scrape over a short test
SETTLE = 90.0  # seconds for every query to have data


def prometheus_config(metrics_ports: dict[str, int], directory: Path) -> Path:
    """monitoring/prometheus.yml with 1s intervals, its rule files by absolute path,
    and each job's targets (static or discovered) replaced by the test's port."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(MONITORING / pattern) for pattern in config["rule_files"]]
    assert {job["job_name"] for job in config["scrape_configs"]} == set(JOBS)
    for job in config["scrape_configs"]:
        for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[key]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_ports[job['job_name']]}"]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def prometheus(config: Path, port: int, directory: Path) -> Iterator[None]:
    """Debian's prometheus on 127.0.0.1:PORT with its own data directory; stopped after."""
    assert PROMETHEUS is not None
    command = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int
    prometheus: int
    metrics: dict[str, int]  # by job


@pytest.fixture
async def stack(settings: Settings, redis_prefix: str, tmp_path: Path) -> AsyncIterator[Ports]:
    try:
        async with running_stack(
            database_url=settings.database_url.get_secret_value(),
            redis_url=TEST_REDIS_URL,
            redis_prefix=redis_prefix,
            log_dir=tmp_path,
            # Two wrong passwords for a user, then refusals: both show on the dashboard.
            TASKGATE_LOGIN_RATE_LIMIT="2",
            TASKGATE_PROCESSOR_POLL_INTERVAL="1s",
            TASKGATE_SHUTDOWN_GRACE="2s",
            # The replica panels and alerts need a replica's series: the primary named as
            # one, which the monitor keeps out of rotation (it is not replaying WAL).
            TASKGATE_DATABASE_REPLICA_URLS=settings.database_url.get_secret_value(),
        ) as processes:
            metrics = {p.name: p.metrics_port for p in processes.processes}
            ports = Ports(processes.grpc_port, processes.http_port, free_port(), metrics)
            with prometheus(prometheus_config(metrics, tmp_path), ports.prometheus, tmp_path):
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
