"""The CLI against a server speaking TLS: it verifies the server with the CA
it is given (or the system's), presents a client certificate where one is
required, and keeps its TLS choice with the login so that no later command
falls back to plaintext."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devstack.certs import Authority
from server.app import App
from server.config import Settings
from taskgate_client.cli.errors import Exit
from tests.cli.test_cli import Cli
from tests.support.clients import PASSWORD, new_username
from tests.support.tls import LOCAL_HOSTS, Files, write


@pytest.fixture
def ca() -> Authority:
    return Authority("test CA")


@pytest.fixture
def server_files(ca: Authority, tmp_path: Path) -> Files:
    return write(ca.issue("server", hosts=LOCAL_HOSTS), ca, tmp_path / "server")


async def _serving(settings: Settings) -> AsyncIterator[App]:
    app = App(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.5)


@pytest.fixture
async def tls_app(settings: Settings, server_files: Files) -> AsyncIterator[App]:
    update = {"tls_cert_file": server_files.cert, "tls_key_file": server_files.key}
    async for app in _serving(settings.model_copy(update=update)):
        yield app


@pytest.fixture
async def mtls_app(settings: Settings, server_files: Files) -> AsyncIterator[App]:
    update = {"tls_cert_file": server_files.cert, "tls_key_file": server_files.key,
              "tls_client_ca_file": server_files.ca}  # fmt: skip
    async for app in _serving(settings.model_copy(update=update)):
        yield app


def _cli(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    config = tmp_path / "config" / "cli.json"
    monkeypatch.setenv("TASKGATE_CLI_CONFIG", str(config))
    for name in ("TASKGATE_SERVER", "TASKGATE_CLI_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return Cli(f"localhost:{app.port}", config, capsys)


async def test_the_ca_given_at_login_verifies_the_server_for_every_later_command(
    tls_app: App, server_files: Files, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    cli = _cli(tls_app, tmp_path, monkeypatch, capsys)
    username = new_username()
    ca = ["--ca-file", str(server_files.ca)]
    assert (await cli(*ca, "register", username, "--password-stdin", stdin=PASSWORD)).status == 0
    assert (await cli(*ca, "login", username, "--password-stdin", stdin=PASSWORD)).status == 0

    saved = json.loads(cli.config.read_text())
    assert saved["tls"]["ca_file"] == str(server_files.ca)
    listed = await cli("--json", "list")  # no flag: the login's TLS choice
    assert listed.status == 0, listed.err
    assert listed.json() == []


async def test_without_the_right_ca_the_cli_does_not_reach_the_server(
    tls_app: App, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    cli = _cli(tls_app, tmp_path, monkeypatch, capsys)
    plaintext = await cli("filters")
    system_roots = await cli("--tls", "filters")
    other = tmp_path / "other.crt"
    other.write_bytes(Authority("other").pem)
    wrong_ca = await cli("--ca-file", str(other), "filters")

    assert plaintext.status == Exit.UNREACHABLE
    assert system_roots.status == Exit.UNREACHABLE
    assert wrong_ca.status == Exit.UNREACHABLE
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_ca.err
    assert "--ca-file" in wrong_ca.err


async def test_the_ca_may_come_from_the_environment_and_a_missing_file_exits_8(
    tls_app: App, server_files: Files, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    cli = _cli(tls_app, tmp_path, monkeypatch, capsys)
    monkeypatch.setenv("TASKGATE_CLI_CA_FILE", str(server_files.ca))
    assert (await cli("filters")).status == 0
    missing = await cli("--ca-file", str(tmp_path / "absent.crt"), "filters")
    assert missing.status == Exit.LOCAL_FILE
    assert "absent.crt: cannot read it" in missing.err


async def test_a_server_requiring_client_certificates_lets_in_only_a_cli_with_one(
    mtls_app: App, server_files: Files, ca: Authority, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    cli = _cli(mtls_app, tmp_path, monkeypatch, capsys)
    me = write(ca.issue("alice", client=True), ca, tmp_path / "alice")
    verify = ["--ca-file", str(server_files.ca)]

    without = await cli(*verify, "filters")
    with_cert = await cli(
        *verify, "--cert-file", str(me.cert), "--key-file", str(me.key), "filters"
    )
    half = await cli(*verify, "--cert-file", str(me.cert), "filters")

    assert without.status == Exit.UNREACHABLE
    assert with_cert.status == 0, with_cert.err
    assert half.status == Exit.USAGE
