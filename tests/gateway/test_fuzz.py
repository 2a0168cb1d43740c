"""schemathesis against /openapi.json, through a real gateway in front of a real
server, authenticated: every check (``--checks all``) on positive data, so a
request the document calls valid must not be refused (``positive_data_acceptance``),
and no 5xx; every response fits the document (status, schema, content type,
headers). Fixed seed, bounded examples and time."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from server.config import Settings as ServerSettings
from tests.conftest import ROOT
from tests.gateway.conftest import Client
from tests.gateway.test_product import login, register

ST = Path(sys.executable).parent / "st"
SEED = 20261203
# DeleteUser with `me` (a valid value) would delete the fuzzing user itself and
# end the run's session: it has its own tests (tests/gateway/test_product.py).
EXCLUDED = ("UserService_DeleteUser",)
CONFIG = """\
# Written by tests/gateway/test_fuzz.py.
[checks.not_a_server_error]
enabled = false  # replaced by no_server_error (st_hooks.py): 501 Method Not Allowed is on purpose

# A 400 that valid data may get where a rule lies beyond JSON Schema (the image,
# a pipeline's fit) or in the task's state (FAILED_PRECONDITION, which
# grpc-gateway answers 400); refused_only_for_what_the_schema_cannot_say
# (st_hooks.py) checks that every such 400 is one of those.
[[operations]]
include-operation-id-regex = "^TaskService_(CreateTask|CancelTask2?|GetTaskResult)$"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]

[[operations]]
include-operation-id-regex = "^WebhookService_CreateWebhookEndpoint$"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]
"""


@pytest.fixture
def settings(settings: ServerSettings) -> ServerSettings:
    """Per-client registration and login limits out of the way: the run makes a few
    hundred such calls from one address (the limits have their own tests)."""
    return settings.model_copy(
        update={
            "client_register_limit": 100_000,
            "client_login_limit": 100_000,
            "login_rate_limit": 100_000,
        }
    )


@pytest.mark.timeout(180)
async def test_schemathesis_finds_no_failure(http: Client, tmp_path: Path) -> None:
    assert ST.exists(), "schemathesis is a dev dependency: make install"
    user = await register(http)
    token = await login(http, user["username"])
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    args = [
        f"--config-file={config}",
        "run",
        f"http://127.0.0.1:{http.port}/openapi.json",
        "--checks=all",
        "--mode=positive",
        "--phases=examples,coverage,fuzzing",
        "--max-examples=40",
        "--max-time=60",
        f"--seed={SEED}",
        "--request-timeout=10",
        "--workers=1",
        "--no-color",
        "--warnings=off",
        f"--header=Authorization: Bearer {token}",
        f"--report-dir={tmp_path}",
        *(f"--exclude-operation-id={operation}" for operation in EXCLUDED),
        # A stream that follows new events and never ends by itself.
        "--exclude-operation-id=TaskService_WatchTaskEvents",
    ]
    process = await asyncio.create_subprocess_exec(
        str(ST),
        *args,
        cwd=tmp_path,  # schemathesis keeps a cache folder where it runs
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.gateway.st_hooks",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 150)
    output = out.decode(errors="replace")
    assert process.returncode == 0, output[-8000:]
    assert "Tested:" in output or "passed" in output, output[-3000:]
    print(output[-2500:])
