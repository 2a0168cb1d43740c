"""Schemathesis hooks and checks for the fuzz run (loaded with SCHEMATHESIS_HOOKS).

``not_a_server_error`` would count grpc-gateway's answer to a known path with
the wrong method (UNIMPLEMENTED "Method Not Allowed", HTTP 501), which the
gateway gives on purpose; ``no_server_error`` fails on every other 5xx.

Two request rules cannot be said in JSON Schema, so the run treats them apart:

- CreateTask's image must decode, and a pipeline must fit the image step by
  step (a crop inside it, right > left, no step past the pixel limit). The
  generated body gets a real small PNG (in the fuzzing phase; the coverage
  phase takes no hooks), ``positive_data_acceptance`` lets a 400 through there
  (schemathesis.toml), and ``refused_only_for_what_the_schema_cannot_say``
  checks that such a 400 carries only violations of those rules.
- CancelTask and GetTaskResult answer FAILED_PRECONDITION (HTTP 400, as
  grpc-gateway maps it) for a task in the wrong state: there a 400 must be
  code 9, never INVALID_ARGUMENT.
- A ListTasks page token is opaque (made by the server, with a checksum): the
  generated queries leave it out.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import schemathesis

from tests.support.images import image_bytes

WRONG_METHOD = {"code": 12, "message": "Method Not Allowed", "details": []}
CREATE_TASK = "POST /v1/tasks"
CREATE_WEBHOOK_ENDPOINT = "POST /v1/webhookEndpoints"
LIST_TASKS = "GET /v1/tasks"
IMAGE = base64.b64encode(image_bytes(48, 32)).decode()
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
# Violations of the rules JSON Schema cannot state (see the module docstring).
_BEYOND_THE_SCHEMA = {
    CREATE_TASK: (
        re.compile(r"image"),  # what the bytes are
        re.compile(r"filters\[\d+\]\.[a-z_]+"),  # a step that does not fit the image at its size
        re.compile(r"filters\[\d+\]\.crop\.(right|bottom)"),  # right > left, bottom > top
        re.compile(r"output_format"),  # the result's size against the format's largest side
    ),
    # Where the URL's host resolves to now, and the deployment's https-only and
    # private-address rules (TASKGATE_WEBHOOK_ALLOW_*), are beyond JSON Schema.
    CREATE_WEBHOOK_ENDPOINT: (re.compile(r"endpoint\.url"),),
}


def _label(ctx: Any) -> str | None:
    operation = getattr(ctx, "operation", None)
    return None if operation is None else str(operation.label)


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    if _label(ctx) == CREATE_TASK and isinstance(body, dict):
        return {**body, "image": IMAGE}
    return body


@schemathesis.hook
def map_query(ctx: Any, query: Any) -> Any:
    if _label(ctx) == LIST_TASKS and isinstance(query, dict):
        return {key: value for key, value in query.items() if key != "pageToken"}
    return query


@schemathesis.check
def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx, except grpc-gateway's 501 for a method the path does not have."""
    if response.status_code < 500:
        return
    if response.status_code == 501:
        try:
            if json.loads(response.content) == WRONG_METHOD:
                return
        except ValueError:
            pass
    raise AssertionError(f"server error {response.status_code}: {response.content[:300]!r}")


def _is_positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


STATE_REFUSALS = frozenset(
    {
        "POST /v1/tasks/{task_id}:cancel",
        "DELETE /v1/tasks/{task_id}",
        "GET /v1/tasks/{task_id}/result",
    }
)
FAILED_PRECONDITION = 9


@schemathesis.check
def refused_only_for_what_the_schema_cannot_say(ctx: Any, response: Any, case: Any) -> None:
    """Where valid data may get a 400 (schemathesis.toml), it is for a reason
    beyond the schema: a task's state, or CreateTask's image and pipeline fit."""
    label = f"{case.method} {case.path}"
    if response.status_code != 400 or not _is_positive(case):
        return
    body = json.loads(response.content)
    if label in STATE_REFUSALS:
        if body["code"] != FAILED_PRECONDITION:
            raise AssertionError(f"valid data refused: {body}")
        return
    if label == CREATE_WEBHOOK_ENDPOINT and body["code"] == FAILED_PRECONDITION:
        return  # the user has registered the most endpoints allowed: a state, not the data
    beyond = _BEYOND_THE_SCHEMA.get(label)
    if beyond is None:
        return
    violations = [
        violation
        for detail in body.get("details", [])
        if detail.get("@type") == BAD_REQUEST
        for violation in detail.get("fieldViolations", [])
    ]
    unexplained = [v for v in violations if not any(p.fullmatch(v["field"]) for p in beyond)]
    if not violations or unexplained:
        raise AssertionError(
            f"valid data refused: {body['message']!r} {unexplained or 'without field violations'}"
        )
