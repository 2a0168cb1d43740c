from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from server.errors import InvalidArgument
from server.services import page_tokens
from server.storage.postgres.tasks import Cursor


def test_a_token_round_trips_to_the_microsecond() -> None:
    cursor = Cursor(datetime(2026, 11, 22, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4())
    token = page_tokens.encode(cursor, 3)
    assert page_tokens.decode(token, 3) == cursor
    assert "=" not in token


@pytest.mark.parametrize("token", ["!!!", "a", "abc=def", "A" * 46])
def test_anything_else_is_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_tokens.decode(token, 0)
    assert caught.value.violations[0].field == "page_token"


def test_a_token_is_bound_to_its_status_filter() -> None:
    token = page_tokens.encode(Cursor(datetime.now(UTC), uuid.uuid4()), 1)
    with pytest.raises(InvalidArgument):
        page_tokens.decode(token, 2)
