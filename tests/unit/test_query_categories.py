"""Every named query has a statement category for db_query_* metrics."""

from __future__ import annotations

import pytest

from server.storage.postgres.queries import CATEGORIES, QUERIES, category, category_of


def test_every_query_has_a_known_category() -> None:
    assert {category(name) for name in QUERIES} == set(CATEGORIES)


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("get_task", "select"),
        ("insert_task", "insert"),
        ("delete_user", "delete"),
        ("cancel_task", "update"),
        ("claim_tasks_fair", "update"),  # WITH ... FOR UPDATE SKIP LOCKED ... UPDATE
        ("claim_tasks_fifo", "update"),
        ("queue_stats", "select"),
        ("claim_tasks_fair+claimed_inputs", "update"),  # pipelined: the write names them
        ("claimed_inputs+get_task", "select"),
    ],
)
def test_the_category_is_the_first_write(operation: str, expected: str) -> None:
    assert category(operation) == expected


def test_a_row_lock_is_not_a_write() -> None:
    assert category_of("SELECT id FROM tasks FOR UPDATE SKIP LOCKED") == "select"
