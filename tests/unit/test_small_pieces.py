"""Pure pieces: queries, rules, tokens, request ids, time budgets, log lines."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import uuid

import pytest

from server import context
from server.errors import InvalidArgument, Unauthenticated
from server.interceptors.auth import bearer_token
from server.interceptors.request_log import request_id_from
from server.services import rules
from server.services.tasks import RESULT_CHUNK_BYTES, result_chunk_bytes
from server.storage.postgres.queries import QUERIES, parse
from taskgate_runtime.logs import JsonFormatter


def test_queries_are_split_by_name_without_comments() -> None:
    queries = parse("-- header\n\n-- name: a\n-- about a\nSELECT 1;\n\n-- name: b\nSELECT\n  2;\n")
    assert {name: q.as_string() for name, q in queries.items()} == {
        "a": "SELECT 1",
        "b": "SELECT\n  2",
    }
    assert {"insert_user", "get_user", "get_credentials", "delete_user", "ping"} <= set(QUERIES)


def test_user_ids_and_me() -> None:
    caller = uuid.uuid4()
    assert rules.parse_user_id("me", caller) == caller
    other = uuid.uuid4()
    assert rules.parse_user_id(str(other), caller) == other
    for bad in ("", "ME", "123", str(other).replace("-", ""), "{" + str(other) + "}"):
        with pytest.raises(InvalidArgument):
            rules.parse_user_id(bad, caller)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer   abc ", "abc"), ("BEARER abc", "abc")],
)
def test_bearer_tokens(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "abc"])
def test_bad_authorization_headers(header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(header)


def test_request_ids_are_kept_when_sane_and_made_otherwise() -> None:
    assert request_id_from("abc-123.x:y_z") == "abc-123.x:y_z"
    for bad in (None, "", "a" * 129, "has space", 'quote"', "new\nline"):
        made = request_id_from(bad)
        assert len(made) == 32
        assert made != bad


async def test_time_budget_follows_the_deadline() -> None:
    assert context.time_budget(2.0) == 2.0
    token = context.deadline.set(asyncio.get_running_loop().time() + 0.5)
    try:
        assert 0.4 < context.time_budget(2.0) <= 0.5
        assert context.time_budget(0.1) == 0.1
    finally:
        context.deadline.reset(token)
    token = context.deadline.set(asyncio.get_running_loop().time() - 1)
    try:
        assert context.time_budget(2.0) == 0.0
    finally:
        context.deadline.reset(token)


def test_current_user_needs_a_session() -> None:
    with pytest.raises(Unauthenticated):
        context.current_user()


def test_json_log_lines_carry_the_call_context() -> None:
    user = uuid.uuid4()
    rid = context.request_id.set("req-1")
    uid = context.user_id.set(user)
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        record.fields = {"code": "OK"}
        line = json.loads(JsonFormatter("svc").format(record))
    finally:
        context.request_id.reset(rid)
        context.user_id.reset(uid)
    assert line["message"] == "hello world"
    assert line["service"] == "svc"
    assert line["request_id"] == "req-1"
    assert line["user_id"] == str(user)
    assert line["code"] == "OK"
    assert line["level"] == "info"


def test_json_log_lines_carry_a_bound_task_and_fields_win() -> None:
    task, owner = uuid.uuid4(), uuid.uuid4()

    def run() -> dict[str, object]:
        context.bind_task(task, user=owner, request="req-7")
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "task ran", (), None)
        record.fields = {"request_id": "from-fields"}
        line: dict[str, object] = json.loads(JsonFormatter("svc").format(record))
        return line

    line = contextvars.copy_context().run(run)  # as a processor runs each task
    assert line["task_id"] == str(task)
    assert line["user_id"] == str(owner)
    assert line["request_id"] == "from-fields"
    assert context.task_id.get() is None  # nothing leaked out of the task's context


def test_result_chunks_fit_the_servers_largest_message() -> None:
    assert result_chunk_bytes(10 * 1024 * 1024 + 64 * 1024) == RESULT_CHUNK_BYTES
    assert result_chunk_bytes(164 * 1024) == 164 * 1024 - 1024
    assert result_chunk_bytes(100) == 1


def test_webhook_retries_triple_up_to_the_maximum_for_about_a_day() -> None:
    from server.webhooks.config import WebhookTuning

    tuning = WebhookTuning()
    bases = [10.0, 30.0, 90.0, 270.0, 810.0, 2430.0, 7290.0, 21600.0, 21600.0]
    for attempt, base in enumerate(bases, start=1):
        delays = [tuning.retry_delay(attempt) for _ in range(50)]
        assert all(0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(set(delays)) > 1  # jitter
    total = sum(min(21600.0, 10.0 * 3.0 ** (n - 1)) for n in range(1, tuning.webhook_max_attempts))
    assert 24 * 3600 <= total <= 30 * 3600


def test_after_start_up_its_objects_leave_the_collectors_generations() -> None:
    import gc

    from taskgate_runtime import process

    try:
        process.started()
        assert gc.get_freeze_count() > 0
        assert gc.get_count()[0] < 50  # the young generation starts empty
    finally:
        gc.unfreeze()
