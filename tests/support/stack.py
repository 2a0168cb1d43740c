"""The three processes as an operator runs them: ``python -m server`` (without its
embedded processor), ``python -m server.processor`` and ``python -m gateway``, each
on free loopback ports, logging JSON to a file of its own."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.net import free_port
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    module: str = ""
    env: Mapping[str, str] = field(default_factory=dict)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line it wrote to stderr so far (anything else fails the test)."""
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Stack:
    server: Process
    processor: Process
    gateway: Process
    grpc_port: int
    http_port: int
    processes: list[Process] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def _spawn(name: str, module: str, env: Mapping[str, str], log_dir: Path, metrics: int) -> Process:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **env}, stderr=log_file
        )
    return Process(name, popen, log_path, metrics, module, env)


def respawn(stack: Stack, process: Process) -> Process:
    """``process`` started again (after it was killed), in its place in ``stack``."""
    again = _spawn(process.name, process.module, process.env, process.log_path.parent,
                   process.metrics_port)  # fmt: skip
    stack.processes[stack.processes.index(process)] = again
    setattr(stack, process.name, again)
    return again


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


@asynccontextmanager
async def running_stack(
    *, database_url: str, redis_url: str, redis_prefix: str, log_dir: Path, **extra: str
) -> AsyncIterator[Stack]:
    """The stack, ready (the gateway's /ready passes); SIGTERM to each on the way out."""
    grpc_port, http_port = free_port(), free_port()
    common = {
        "TASKGATE_DATABASE_URL": database_url,
        "TASKGATE_LOG_FORMAT": "json",
        "TASKGATE_LOG_LEVEL": "info",
        **extra,
    }
    ports = {name: free_port() for name in ("server", "processor", "gateway")}
    server = _spawn("server", "server", {
        **common,
        "TASKGATE_REDIS_URL": redis_url,
        "TASKGATE_REDIS_KEY_PREFIX": redis_prefix,
        "TASKGATE_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "TASKGATE_SERVER_METRICS_ADDR": f"127.0.0.1:{ports['server']}",
        "TASKGATE_EMBEDDED_PROCESSOR": "false",
        "TASKGATE_DB_POOL_MAX_SIZE": "4",
        "TASKGATE_ARGON2_TIME_COST": "1",
        "TASKGATE_ARGON2_MEMORY_KIB": "1024",
        "TASKGATE_ARGON2_PARALLELISM": "1",
    }, log_dir, ports["server"])  # fmt: skip
    processor = _spawn("processor", "server.processor", {
        **common,
        "TASKGATE_PROCESSOR_METRICS_ADDR": f"127.0.0.1:{ports['processor']}",
        "TASKGATE_PROCESSOR_CONCURRENCY": "1",
        "TASKGATE_PROCESSOR_WORKERS": "1",
        "TASKGATE_PROCESSOR_STATS_INTERVAL": "200ms",
    }, log_dir, ports["processor"])  # fmt: skip
    gateway = _spawn("gateway", "gateway", {
        **common,
        "TASKGATE_GATEWAY_ADDR": f"127.0.0.1:{http_port}",
        "TASKGATE_GATEWAY_UPSTREAM": f"127.0.0.1:{grpc_port}",
        "TASKGATE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{ports['gateway']}",
    }, log_dir, ports["gateway"])  # fmt: skip
    stack = Stack(server, processor, gateway, grpc_port, http_port, [server, processor, gateway])
    try:
        await eventually(functools.partial(_answers, f"{stack.http}/ready"), within=30)
        for process in stack.processes:
            url = f"http://127.0.0.1:{process.metrics_port}/metrics"
            await eventually(functools.partial(_answers, url), within=30)
        yield stack
    finally:
        for process in stack.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in stack.processes:
            try:
                await asyncio.to_thread(process.popen.wait, 15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                await asyncio.to_thread(process.popen.wait, 5)
