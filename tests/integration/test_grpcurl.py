"""grpcurl, as an operator would use it: reflection, and the protos on disk."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

from server.app import App
from tests.conftest import ROOT

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(*args: str) -> str:
    result = await asyncio.to_thread(
        subprocess.run, [GRPCURL, *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_reflection_lists_services_and_calls_by_name(app: App) -> None:
    target = f"127.0.0.1:{app.port}"
    services = (await grpcurl("-plaintext", target, "list")).split()
    assert services == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "taskgate.v1.SessionService",
        "taskgate.v1.TaskService",
        "taskgate.v1.UserService",
        "taskgate.v1.WebhookService",
    ]
    described = await grpcurl("-plaintext", target, "describe", "taskgate.v1.TaskService")
    assert '"/v1/tasks/{task_id}:cancel"' in described

    body = json.dumps({"username": "grpcurler", "password": "long enough"})
    out = json.loads(
        await grpcurl("-plaintext", "-d", body, target, "taskgate.v1.UserService/CreateUser")
    )
    assert out["user"]["username"] == "grpcurler"
    health = json.loads(await grpcurl("-plaintext", target, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}


async def test_describe_from_the_proto_files(tmp_path: Path) -> None:
    third_party = tmp_path / "third_party"
    await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / "scripts" / "third_party_protos.sh"), str(third_party)],
        cwd=ROOT,
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    out = await grpcurl(
        "-import-path",
        str(ROOT / "proto"),
        "-import-path",
        str(third_party),
        "-proto",
        "taskgate/v1/user_service.proto",
        "-proto",
        "taskgate/v1/session_service.proto",
        "-proto",
        "taskgate/v1/task_service.proto",
        "describe",
    )
    for rpc in (
        "CreateUser",
        "GetUser",
        "DeleteUser",
        "CreateSession",
        "GetSession",
        "DeleteSession",
        "ListFilters",
        "CreateTask",
        "GetTask",
        "GetTaskResult",
        "ListTasks",
        "CancelTask",
        "WatchTask",
    ):
        assert f"rpc {rpc} (" in out, rpc
    assert "additional_bindings" in out
    assert "returns ( stream .taskgate.v1.WatchTaskResponse )" in out
