"""HTTPS → ``python -m gateway`` → gRPC over mutual TLS → the server: the
gateway verifies the server (by a name other than the address it dials),
presents its client certificate, serves HTTPS, and takes a rotated HTTPS
certificate without a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from devstack.certs import Authority
from gateway.__main__ import channel_for
from gateway.app import create_app
from gateway.config import Settings as GatewaySettings
from server.app import App
from server.config import Settings
from tests.gateway.conftest import Client
from tests.support.clients import PASSWORD, new_username
from tests.support.net import free_port
from tests.support.tls import LOCAL_HOSTS, Files, replace, write

ROOT = Path(__file__).resolve().parents[2]
SERVER_NAME = "taskgate-server"  # the only name in the server's certificate


@pytest.fixture
def ca() -> Authority:
    return Authority("test CA")


@pytest.fixture
def pki(ca: Authority, tmp_path: Path) -> dict[str, Files]:
    return {
        "server": write(ca.issue("server", hosts=[SERVER_NAME]), ca, tmp_path / "server"),
        "client": write(ca.issue("gateway", client=True), ca, tmp_path / "client"),
        "site": write(ca.issue("gateway", hosts=LOCAL_HOSTS), ca, tmp_path / "site"),
    }


@pytest.fixture
async def mtls_app(settings: Settings, pki: dict[str, Files]) -> AsyncIterator[App]:
    server = pki["server"]
    app = App(
        settings.model_copy(
            update={
                "tls_cert_file": server.cert,
                "tls_key_file": server.key,
                "tls_client_ca_file": server.ca,
            }
        )
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.5)


def https_to(ca: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.pem.decode())


async def status_of(url: str, context: ssl.SSLContext | bool) -> int | str:
    """The HTTP status over a new connection, or the kind of failure."""
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(url) as response,
        ):
            return response.status
    except aiohttp.ClientConnectorCertificateError:
        return "certificate refused"
    except aiohttp.ClientError as exc:
        return type(exc).__name__


@asynccontextmanager
async def python_m_gateway(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", cwd=ROOT, env={**clean, **env},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 10)


async def wait_ready(url: str, context: ssl.SSLContext) -> None:
    for _ in range(200):
        if await status_of(url, context) == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered 200")


async def test_https_through_the_gateway_to_a_server_requiring_client_certificates(
    mtls_app: App, pki: dict[str, Files], ca: Authority
) -> None:
    port = free_port()
    env = {
        "TASKGATE_GATEWAY_ADDR": f"127.0.0.1:{port}",
        "TASKGATE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "TASKGATE_GATEWAY_UPSTREAM": f"127.0.0.1:{mtls_app.port}",
        "TASKGATE_GATEWAY_UPSTREAM_CA_FILE": str(pki["client"].ca),
        "TASKGATE_GATEWAY_UPSTREAM_CERT_FILE": str(pki["client"].cert),
        "TASKGATE_GATEWAY_UPSTREAM_KEY_FILE": str(pki["client"].key),
        "TASKGATE_GATEWAY_UPSTREAM_SERVER_NAME": SERVER_NAME,
        "TASKGATE_GATEWAY_TLS_CERT_FILE": str(pki["site"].cert),
        "TASKGATE_GATEWAY_TLS_KEY_FILE": str(pki["site"].key),
        "TASKGATE_LOG_LEVEL": "warning",
    }
    base = f"https://127.0.0.1:{port}"
    async with python_m_gateway(env) as process:
        await wait_ready(f"{base}/ready", https_to(ca))
        username = new_username()
        credentials = {"username": username, "password": PASSWORD}
        connector = aiohttp.TCPConnector(ssl=https_to(ca))
        async with aiohttp.ClientSession(base, connector=connector) as http:
            async with http.post("/v1/users", json=credentials) as created:
                assert created.status == 200, await created.text()
            async with http.post("/v1/sessions", json=credentials) as login:
                token = (await login.json())["session"]["sessionId"]
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get("/v1/users/me", headers=headers) as me:
                assert (await me.json())["user"]["username"] == username, await me.text()

        # Plain HTTP, or a client that does not trust the site's CA, gets nowhere.
        assert await status_of(f"http://127.0.0.1:{port}/live", False) != 200
        assert await status_of(f"{base}/live", https_to(Authority("x"))) == "certificate refused"

        # The site's certificate is rotated: new connections get the new one.
        successor = Authority("next CA")
        replace(pki["site"], successor.issue("gateway", hosts=LOCAL_HOSTS), successor)
        assert await status_of(f"{base}/live", https_to(successor)) == 200
        assert await status_of(f"{base}/live", https_to(ca)) == "certificate refused"
        assert process.returncode is None


def _gateway_settings(**changes: object) -> GatewaySettings:
    return GatewaySettings(addr="127.0.0.1:0", metrics_addr="127.0.0.1:0").model_copy(
        update=changes
    )


async def _filters_status(settings: GatewaySettings) -> int:
    """GET /v1/filters (public) through a gateway on the channel ``settings`` make."""
    async with channel_for(settings) as channel:
        client: Client = TestClient(TestServer(create_app(settings, channel), host="127.0.0.1"))
        async with client:
            response = await client.get("/v1/filters")
            return response.status


async def test_the_gateway_reaches_the_server_only_with_the_right_ca_name_and_certificate(
    mtls_app: App, pki: dict[str, Files], ca: Authority, tmp_path: Path
) -> None:
    client = pki["client"]
    upstream = {"upstream": f"127.0.0.1:{mtls_app.port}", "upstream_ca_file": client.ca,
                "upstream_server_name": SERVER_NAME}  # fmt: skip
    with_cert = {"upstream_cert_file": client.cert, "upstream_key_file": client.key}
    assert await _filters_status(_gateway_settings(**upstream, **with_cert)) == 200
    # No client certificate: the server refuses the handshake.
    assert await _filters_status(_gateway_settings(**upstream)) == 503
    # The address is not a name in the server's certificate.
    unnamed = {**upstream, "upstream_server_name": None}
    assert await _filters_status(_gateway_settings(**unnamed, **with_cert)) == 503
    # Another CA.
    other = tmp_path / "other.crt"
    other.write_bytes(Authority("other").pem)
    wrong_ca = {**upstream, "upstream_ca_file": other}
    assert await _filters_status(_gateway_settings(**wrong_ca, **with_cert)) == 503


async def test_python_m_gateway_refuses_to_start_on_an_unusable_file(
    pki: dict[str, Files], ca: Authority, tmp_path: Path
) -> None:
    stray_key = tmp_path / "stray.key"
    stray_key.write_bytes(ca.issue("stray", hosts=LOCAL_HOSTS).private_key)
    env = {
        "TASKGATE_GATEWAY_ADDR": f"127.0.0.1:{free_port()}",
        "TASKGATE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "TASKGATE_GATEWAY_TLS_CERT_FILE": str(pki["site"].cert),
        "TASKGATE_GATEWAY_TLS_KEY_FILE": str(stray_key),
    }
    async with python_m_gateway(env) as process:
        _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert b"TASKGATE_GATEWAY_TLS_KEY_FILE" in err
    assert b"does not match the certificate in TASKGATE_GATEWAY_TLS_CERT_FILE" in err
