"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.rows import TupleRow

from server.config import Settings


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
    """A connection of its own (autocommit) to the test's database."""
    async with await psycopg.AsyncConnection.connect(
        settings.database_url.get_secret_value(), autocommit=True
    ) as conn:
        yield conn
