"""The taskgate CLI, driven through its main() with argv (in a thread, next to a
real server on this event loop), and once as the installed console script."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from server.app import App
from taskgate_client.cli import main
from taskgate_client.cli.errors import Exit
from tests.support.clients import PASSWORD, new_username
from tests.support.images import image_bytes
from tests.support.net import free_port


@dataclass
class Run:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    def __init__(self, server: str, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.server = server
        self.config = config
        self.capsys = capsys

    async def __call__(self, *argv: str, stdin: str = "", server: str | None = None) -> Run:
        self.capsys.readouterr()
        real_stdin = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            args = ["--server", server or self.server, *argv]
            status = await asyncio.to_thread(main, args)
        finally:
            sys.stdin = real_stdin
        captured = self.capsys.readouterr()
        return Run(status, captured.out, captured.err)

    async def logged_in(self) -> str:
        username = new_username()
        assert (await self("register", username, "--password-stdin", stdin=PASSWORD)).status == 0
        assert (await self("login", username, "--password-stdin", stdin=PASSWORD)).status == 0
        return username


@pytest.fixture
def cli(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    config = tmp_path / "config" / "cli.json"
    monkeypatch.setenv("TASKGATE_CLI_CONFIG", str(config))
    monkeypatch.delenv("TASKGATE_SERVER", raising=False)
    monkeypatch.chdir(tmp_path)
    return Cli(f"127.0.0.1:{app.port}", config, capsys)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(image_bytes(64, 48))
    return path


async def test_register_and_login_keep_the_token_in_a_private_file(cli: Cli) -> None:
    username = new_username()
    registered = await cli("--json", "register", username, "--password-stdin", stdin=PASSWORD)
    logged_in = await cli("--json", "login", username, "--password-stdin", stdin=PASSWORD)

    assert registered.status == 0
    assert registered.json()["username"] == username
    assert logged_in.status == 0
    saved = json.loads(cli.config.read_text())
    assert saved["token"] == logged_in.json()["sessionId"]
    assert saved["server"] == cli.server
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600


async def test_a_task_from_submit_through_watch_status_and_list_to_result(
    cli: Cli, image: Path, tmp_path: Path
) -> None:
    await cli.logged_in()

    submitted = await cli(
        "submit", str(image), "-f", "blur:radius=2", "-f", "resize:width=32,height=16"
    )
    task_id = submitted.out.strip()
    watched = await cli("watch", task_id)
    status = await cli("status", task_id)
    status_json = await cli("--json", "status", task_id)
    listed = await cli("list")
    listed_json = await cli("--json", "list", "--status", "completed")
    result = await cli("result", task_id, "-o", str(tmp_path / "out.png"))

    assert submitted.status == 0
    assert watched.status == 0
    assert "2/2 filters" in watched.err  # the progress bar
    assert "completed" in status.out
    assert status_json.json()["status"] == "TASK_STATUS_COMPLETED"
    assert status_json.json()["filters"][1] == {"resize": {"width": 32, "height": 16}}
    assert task_id in listed.out
    assert [t["taskId"] for t in listed_json.json()] == [task_id]
    assert result.status == 0
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (32, 16)


async def test_submit_wait_saves_the_result_and_json_follows_each_change(
    cli: Cli, image: Path, tmp_path: Path
) -> None:
    await cli.logged_in()

    waited = await cli("--json", "submit", str(image), "-f", "grayscale", "--format", "jpeg",
                       "--wait", "-o", str(tmp_path / "gray.jpg"))  # fmt: skip
    lines = [json.loads(line) for line in waited.out.splitlines()]

    assert waited.status == 0
    assert lines[-2]["status"] == "TASK_STATUS_COMPLETED"
    assert lines[-1]["file"] == str(tmp_path / "gray.jpg")
    assert lines[-1]["contentType"] == "image/jpeg"
    with Image.open(tmp_path / "gray.jpg") as gray:
        assert gray.mode == "L"


async def test_filters_lists_names_and_parameters(cli: Cli) -> None:
    text = await cli("filters")
    as_json = await cli("--json", "filters")

    assert text.status == 0
    assert "resize:width=int32,height=int32" in text.out
    by_name = {f["name"]: f for f in as_json.json()}
    assert [p["name"] for p in by_name["blur"]["parameters"]] == ["radius"]


async def test_cancel_of_an_ended_task_is_refused(cli: Cli, image: Path) -> None:
    await cli.logged_in()
    task_id = (await cli("submit", str(image), "-f", "invert", "--wait", "-o", "x.png")).out.strip()

    cancelled = await cli("cancel", task_id)

    assert cancelled.status == Exit.REJECTED
    assert cancelled.err.startswith("taskgate: error: ")
    assert len(cancelled.err.strip().splitlines()) == 1


async def test_logout_forgets_the_session_everywhere(cli: Cli) -> None:
    await cli.logged_in()
    token = json.loads(cli.config.read_text())["token"]

    out = await cli("logout")
    after = await cli("list")

    assert out.status == 0
    assert json.loads(cli.config.read_text())["token"] is None
    assert after.status == Exit.NOT_LOGGED_IN
    assert "taskgate login" in after.err
    cli.config.write_text(json.dumps({"server": cli.server, "token": token}))
    assert (await cli("list")).status == Exit.NOT_LOGGED_IN  # ended on the server too


async def test_no_server_exits_3(cli: Cli) -> None:
    run = await cli("filters", server=f"127.0.0.1:{free_port()}")

    assert run.status == Exit.UNREACHABLE
    assert "cannot reach the server" in run.err


async def test_a_bad_token_exits_4(cli: Cli) -> None:
    cli.config.parent.mkdir(parents=True)
    cli.config.write_text(json.dumps({"server": cli.server, "token": "not-a-session"}))

    run = await cli("list")

    assert run.status == Exit.NOT_LOGGED_IN


async def test_an_unknown_task_exits_5(cli: Cli) -> None:
    await cli.logged_in()

    run = await cli("status", "0b7c7d0e-1111-4222-8333-944455556666")

    assert run.status == Exit.NOT_FOUND
    assert "not found" in run.err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blurr:radius=2", "unknown filter 'blurr'"),
        ("blur:radius=two", "radius must be a number"),
        ("blur:sigma=2", "blur has no parameter 'sigma'"),
        ("resize:width", "write parameters as key=value"),
        ("flip:direction=diagonal", "use one of horizontal, vertical"),
    ],
)
async def test_bad_filter_syntax_exits_2_before_sending(
    cli: Cli, image: Path, spec: str, message: str
) -> None:
    run = await cli("submit", str(image), "-f", spec, server=f"127.0.0.1:{free_port()}")

    assert run.status == Exit.USAGE
    assert message in run.err


async def test_a_refused_request_and_a_missing_image(cli: Cli, tmp_path: Path) -> None:
    username = await cli.logged_in()

    again = await cli("register", username, "--password-stdin", stdin=PASSWORD)
    missing = await cli("submit", str(tmp_path / "nope.png"), "-f", "grayscale")

    assert again.status == Exit.REJECTED
    assert missing.status == Exit.LOCAL_FILE
    assert "cannot read" in missing.err


def test_the_console_script_is_installed_and_documents_its_exit_statuses() -> None:
    taskgate = Path(sys.executable).parent / "taskgate"
    done = subprocess.run(
        [str(taskgate), "--help"], capture_output=True, text=True, env={**os.environ}, check=False
    )

    assert done.returncode == 0
    assert "8 local file error" in done.stdout.replace("\n", " ")
