"""Property tests of the fair claim over random arrival patterns, on real
Postgres with the very statements the server and the processor run.

- The fairness bound: a task submitted by a user with nothing else pending
  waits for at most one task of each other user who had pending work while it
  waited; and each user's tasks start in the order they were submitted. The
  ``overtaken`` the claim reports (the metric) is that count.
- The position estimate is exact for a backlog drained without new arrivals.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from server.storage.postgres.queries import QUERIES
from tests.support.queue import COUNT_MISMATCHES

pytestmark = pytest.mark.timeout(300)
Conn = psycopg.Connection[dict[str, Any]]
USERS = 5
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def fresh_users(conn: Conn) -> list[UUID]:
    conn.execute("TRUNCATE users CASCADE")
    return [
        conn.execute(
            QUERIES["insert_user"],
            {"username": f"p{secrets.token_hex(6)}", "password_hash": "not-a-hash"},
        ).fetchone()["id"]  # type: ignore[index]
        for _ in range(USERS)
    ]


def submit(conn: Conn, user: UUID, priority: int = 0) -> UUID:
    row = conn.execute(
        QUERIES["insert_task"],
        {
            "user_id": user, "filters": Jsonb([{"grayscale": {}}]), "output_format": "png",
            "idempotency_key": None, "request_hash": None, "request_id": None,
            "image": b"not decoded here", "content_type": "image/png", "width": 8,
            "height": 8, "size_bytes": 16, "max_attempts": 3, "priority": priority,
            "max_pending": 0, "trace_context": None,
        },
    ).fetchone()  # fmt: skip
    assert row is not None
    task_id: UUID = row["id"]
    return task_id


def claim(conn: Conn, limit: int) -> list[dict[str, Any]]:
    params = {"limit": limit, "max_running": 0, "owner": "property", "lease": 30}
    rows = conn.execute(QUERIES["claim_tasks_fair"], params).fetchall()
    conn.execute(
        "UPDATE tasks SET status = 'completed', finished_at = now(), lease_owner = NULL, "
        "lease_expires_at = NULL WHERE id = ANY(%s)",
        ([row["task_id"] for row in rows],),
    )
    return rows


def counts_mismatched(conn: Conn) -> int:
    row = conn.execute(COUNT_MISMATCHES).fetchone()
    assert row is not None
    return int(row["count"])


@dataclass
class Waiting:
    """A submitted task that has not started: who else had pending work meanwhile."""

    user: UUID
    lone: bool  # its user had nothing else pending when it was submitted
    overtaken_by: list[UUID] = field(default_factory=list)
    others_pending: set[UUID] = field(default_factory=set)


# A step: submit `count` tasks for user `index`, or claim a batch of `count`.
steps = st.lists(
    st.tuples(st.sampled_from(["submit", "claim"]), st.integers(0, USERS - 1), st.integers(1, 3)),
    min_size=1,
    max_size=40,
)


class Run:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.users = fresh_users(conn)
        self.waiting: dict[UUID, Waiting] = {}
        self.started: dict[UUID, list[UUID]] = {}  # by user, in start order
        self.submitted: dict[UUID, list[UUID]] = {}

    def pending_users(self) -> set[UUID]:
        return {w.user for w in self.waiting.values()}

    def submit(self, user: UUID, count: int) -> None:
        for _ in range(count):
            lone = user not in self.pending_users()
            task_id = submit(self.conn, user)
            self.waiting[task_id] = Waiting(user, lone)
            self.submitted.setdefault(user, []).append(task_id)
        self._note_pending()

    def _note_pending(self) -> None:
        users = self.pending_users()
        for wait in self.waiting.values():
            wait.others_pending |= users - {wait.user}

    def claim(self, limit: int) -> None:
        for row in claim(self.conn, limit):
            wait = self.waiting.pop(row["task_id"])
            self.started.setdefault(wait.user, []).append(row["task_id"])
            if limit == 1:  # within one batch the count is approximate
                assert row["overtaken"] == len(wait.overtaken_by)
            if wait.lone:
                assert len(wait.overtaken_by) == len(set(wait.overtaken_by))
                assert set(wait.overtaken_by) <= wait.others_pending
            for other in self.waiting.values():
                if other.user != wait.user:
                    other.overtaken_by.append(wait.user)


@PROPERTY_SETTINGS
@given(program=steps)
def test_a_lone_task_waits_for_at_most_one_task_per_busy_user(
    conn: Conn, program: list[tuple[str, int, int]]
) -> None:
    run = Run(conn)
    for action, index, count in program:
        if action == "submit":
            run.submit(run.users[index], count)
        else:
            run.claim(count)
        assert counts_mismatched(conn) == 0
    while run.waiting:
        before = len(run.waiting)
        run.claim(2)
        assert len(run.waiting) < before  # every pending task is due: none is skipped
    assert run.started == run.submitted  # each user's tasks in the order submitted
    assert counts_mismatched(conn) == 0


backlogs = st.lists(
    st.tuples(st.integers(0, USERS - 1), st.integers(-2, 2)), min_size=1, max_size=30
)


@PROPERTY_SETTINGS
@given(
    served=st.lists(st.integers(0, USERS - 1), max_size=6),
    backlog=backlogs,
    batch=st.integers(1, 4),
)
def test_the_position_estimate_is_exact_without_new_arrivals(
    conn: Conn, served: list[int], backlog: list[tuple[int, int]], batch: int
) -> None:
    users = fresh_users(conn)
    for index in served:  # give the users turns of different ages
        submit(conn, users[index])
        claim(conn, 1)
    tasks = [(users[index], submit(conn, users[index], priority)) for index, priority in backlog]
    positions = {
        task_id: conn.execute(
            QUERIES["get_task_positioned_fair"], {"id": task_id, "user_id": user}
        ).fetchone()["queue_position"]  # type: ignore[index]
        for user, task_id in tasks
    }
    order: list[UUID] = []
    while rows := claim(conn, batch):
        order += [row["task_id"] for row in rows]
    assert positions == {task_id: order.index(task_id) for task_id in positions}
