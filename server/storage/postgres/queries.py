"""The named queries of ``queries.sql``, loaded once at import."""

from __future__ import annotations

import re
from importlib import resources

from psycopg import sql

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, sql.SQL]:
    """Split ``text`` at its ``-- name: x`` lines into {name: statement}."""
    parts = _NAME.split(text)
    queries: dict[str, sql.SQL] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = sql.SQL("\n".join(lines).strip().rstrip(";"))
    return queries


QUERIES = parse(resources.files(__package__).joinpath("queries.sql").read_text())
