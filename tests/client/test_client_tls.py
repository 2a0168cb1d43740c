"""The Python clients (sync and asyncio) verify a TLS server: with the CA given
as files they are served, with another CA they never reach it, and a server
known by another name than the target's host is verified under that name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from devstack.certs import Authority
from server.app import App
from server.config import Settings
from taskgate_client import AsyncClient, Client, TlsFiles, Transport
from taskgate_client.transport import rpc_status
from tests.support.clients import PASSWORD, new_username
from tests.support.tls import Files, write

SERVER_NAME = "api.taskgate.test"


@pytest.fixture
def ca() -> Authority:
    return Authority("test CA")


@pytest.fixture
def server_files(ca: Authority, tmp_path: Path) -> Files:
    return write(ca.issue("server", hosts=[SERVER_NAME]), ca, tmp_path / "server")


@pytest.fixture
async def tls_app(settings: Settings, server_files: Files) -> AsyncIterator[App]:
    update = {"tls_cert_file": server_files.cert, "tls_key_file": server_files.key}
    app = App(settings.model_copy(update=update))
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.5)


def _transport(app: App, ca_file: Path, server_name: str | None = SERVER_NAME) -> Transport:
    return Transport(
        f"127.0.0.1:{app.port}", tls=TlsFiles(ca_file=ca_file), server_name=server_name,
        max_attempts=2,
    )  # fmt: skip


def _sync_filters(transport: Transport) -> int:
    with Client(transport, timeout=5) as client:
        return len(client.filters())


async def test_both_clients_verify_the_server_with_the_ca_and_its_name(
    tls_app: App, server_files: Files
) -> None:
    transport = _transport(tls_app, server_files.ca)
    assert transport.carries_call_credentials
    assert await asyncio.to_thread(_sync_filters, transport) > 0
    async with AsyncClient(transport, timeout=5) as client:
        user = await client.register(new_username(), PASSWORD)
    assert user.user_id


async def test_another_ca_or_name_never_reaches_the_server(
    tls_app: App, tmp_path: Path, server_files: Files
) -> None:
    other = tmp_path / "other.crt"
    other.write_bytes(Authority("other").pem)
    for transport in (_transport(tls_app, other), _transport(tls_app, server_files.ca, None)):
        with pytest.raises(grpc.RpcError) as refused:
            await asyncio.to_thread(_sync_filters, transport)
        assert rpc_status(refused.value)[0] == grpc.StatusCode.UNAVAILABLE
        async with AsyncClient(transport, timeout=5) as client:
            with pytest.raises(grpc.aio.AioRpcError) as refused_aio:
                await client.register(new_username(), PASSWORD)
        assert refused_aio.value.code() == grpc.StatusCode.UNAVAILABLE
