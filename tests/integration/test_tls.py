"""The server over TLS: clients verify it, mTLS refuses clients without a
certificate of the client CA, rotated files are served to new handshakes
without a restart, and the plaintext health port answers probes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.certs import Authority
from server.app import App, ListenError
from server.config import Settings
from taskgate.v1 import task_service_pb2 as task_pb
from taskgate.v1 import task_service_pb2_grpc as task_grpc
from tests.support.tls import (
    LOCAL_HOSTS,
    Files,
    SecretVolume,
    channel_credentials,
    replace,
    write,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
# A channel of its own per check: no connection shared with an earlier channel.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture
def ca() -> Authority:
    return Authority("test CA")


@pytest.fixture
def server_files(ca: Authority, tmp_path: Path) -> Files:
    return write(ca.issue("server", hosts=LOCAL_HOSTS), ca, tmp_path / "server")


@pytest.fixture
def tls_settings(settings: Settings, server_files: Files) -> Settings:
    return settings.model_copy(
        update={"tls_cert_file": server_files.cert, "tls_key_file": server_files.key}
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[App]:
    app = App(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.5)


async def check(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """OK when a call over a fresh connection with ``credentials`` succeeds, else its code."""
    target = f"localhost:{port}"
    channel = (
        grpc.aio.insecure_channel(target, options=OWN_CONNECTION)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials, options=OWN_CONNECTION)
    )
    async with channel:
        try:
            await task_grpc.TaskServiceStub(channel).ListFilters(
                task_pb.ListFiltersRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_a_client_verifying_the_server_with_its_ca_is_served(
    tls_settings: Settings, ca: Authority
) -> None:
    async with running(tls_settings) as app:
        assert app.tls is not None
        assert await check(app.port, channel_credentials(ca)) == grpc.StatusCode.OK


async def test_a_client_trusting_another_ca_or_speaking_plaintext_is_refused(
    tls_settings: Settings,
) -> None:
    async with running(tls_settings) as app:
        other = channel_credentials(Authority("someone else"))
        assert await check(app.port, other) == grpc.StatusCode.UNAVAILABLE
        assert await check(app.port, None) == grpc.StatusCode.UNAVAILABLE


async def test_with_a_client_ca_only_clients_with_its_certificates_get_in(
    tls_settings: Settings, ca: Authority, tmp_path: Path
) -> None:
    clients = Authority("client CA")
    client_ca = tmp_path / "clients.crt"
    client_ca.write_bytes(clients.pem)
    mtls = tls_settings.model_copy(update={"tls_client_ca_file": client_ca})
    async with running(mtls) as app:
        assert await check(app.port, channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE
        stranger = Authority("stranger").issue("gateway", client=True)
        assert await check(app.port, channel_credentials(ca, stranger)) != grpc.StatusCode.OK
        member = clients.issue("gateway", client=True)
        assert await check(app.port, channel_credentials(ca, member)) == grpc.StatusCode.OK


async def test_rotated_files_are_served_to_new_handshakes_without_a_restart(
    tls_settings: Settings, ca: Authority, server_files: Files
) -> None:
    async with running(tls_settings) as app:
        assert app.tls is not None
        assert await check(app.port, channel_credentials(ca)) == grpc.StatusCode.OK
        successor = Authority("next CA")
        replace(server_files, successor.issue("server", hosts=LOCAL_HOSTS), successor)

        assert await check(app.port, channel_credentials(successor)) == grpc.StatusCode.OK
        assert await check(app.port, channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE
        assert app.tls.files.reloads == 1


async def test_a_kubernetes_secret_volume_update_is_served_without_a_restart(
    settings: Settings, ca: Authority, tmp_path: Path
) -> None:
    volume = SecretVolume(tmp_path / "secret")
    volume.write(ca.issue("server", hosts=LOCAL_HOSTS), ca)
    files = volume.files
    update = {"tls_cert_file": files.cert, "tls_key_file": files.key}
    async with running(settings.model_copy(update=update)) as app:
        assert await check(app.port, channel_credentials(ca)) == grpc.StatusCode.OK
        renewed = Authority("renewed CA")
        volume.write(renewed.issue("server", hosts=LOCAL_HOSTS), renewed)

        assert await check(app.port, channel_credentials(renewed)) == grpc.StatusCode.OK
        assert await check(app.port, channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE


async def test_a_half_written_rotation_keeps_the_previous_certificate(
    tls_settings: Settings, ca: Authority, server_files: Files
) -> None:
    async with running(tls_settings) as app:
        assert app.tls is not None
        successor = Authority("next CA")
        issued = successor.issue("server", hosts=LOCAL_HOSTS)
        server_files.cert.write_bytes(issued.certificate)  # the key is still the old one

        assert await check(app.port, channel_credentials(ca)) == grpc.StatusCode.OK
        assert app.tls.files.reloads == 0

        server_files.key.write_bytes(issued.private_key)
        assert await check(app.port, channel_credentials(successor)) == grpc.StatusCode.OK
        assert app.tls.files.reloads == 1


async def test_unusable_files_stop_the_start_naming_the_variable(
    tls_settings: Settings, ca: Authority, tmp_path: Path
) -> None:
    other_key = tmp_path / "other.key"
    other_key.write_bytes(ca.issue("other", hosts=LOCAL_HOSTS).private_key)
    mismatched = tls_settings.model_copy(update={"tls_key_file": other_key})
    with pytest.raises(ListenError, match=r"TASKGATE_TLS_KEY_FILE: .* does not match the cert"):
        await App(mismatched).start()
    missing = tls_settings.model_copy(update={"tls_cert_file": tmp_path / "absent.crt"})
    with pytest.raises(ListenError, match=r"TASKGATE_TLS_CERT_FILE: .*absent\.crt: cannot read"):
        await App(missing).start()


async def test_the_health_port_answers_plaintext_probes_and_serves_nothing_else(
    tls_settings: Settings,
) -> None:
    with_health = tls_settings.model_copy(update={"grpc_health_addr": "127.0.0.1:0"})
    async with (
        running(with_health) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.health_port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "liveness", "taskgate.v1.TaskService"):
            request = health_pb2.HealthCheckRequest(service=service)
            assert (await health.Check(request, timeout=5)).status == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await task_grpc.TaskServiceStub(channel).ListFilters(
                task_pb.ListFiltersRequest(), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m server.healthcheck`` with ``env``, off the loop that runs the server."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.healthcheck"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_the_image_healthcheck_asks_the_health_port_of_a_tls_server(
    tls_settings: Settings, server_files: Files
) -> None:
    with_health = tls_settings.model_copy(update={"grpc_health_addr": "127.0.0.1:0"})
    tls_env = {"TASKGATE_TLS_CERT_FILE": str(server_files.cert),
               "TASKGATE_TLS_KEY_FILE": str(server_files.key)}  # fmt: skip
    async with running(with_health) as app:
        served = await _healthcheck({**tls_env, "TASKGATE_GRPC_HEALTH_ADDR": f":{app.health_port}"})
        assert served.returncode == 0, served.stderr
        without = await _healthcheck({**tls_env, "TASKGATE_GRPC_ADDR": f"127.0.0.1:{app.port}"})
        assert without.returncode == 1
        assert "set TASKGATE_GRPC_HEALTH_ADDR" in without.stderr
    gone = await _healthcheck({**tls_env, "TASKGATE_GRPC_HEALTH_ADDR": f":{app.health_port}"})
    assert gone.returncode == 1
    assert "UNAVAILABLE" in gone.stderr
