"""The named queries of ``queries.sql``, loaded once at import.

A ``-- name: x`` line starts a statement; a ``-- fragment: y`` line starts a
piece of SQL (a column list) that statements include as ``{y}``.
"""

from __future__ import annotations

import re
from importlib import resources

from psycopg import sql

_HEADER = re.compile(r"^-- (name|fragment): (\w+)\s*$", re.MULTILINE)


def _body(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if not line.startswith("--")]
    return "\n".join(lines).strip().rstrip(";")


def parse(text: str) -> dict[str, sql.SQL]:
    """Split ``text`` at its header lines into {name: statement}, fragments filled in."""
    parts = _HEADER.split(text)
    fragments: dict[str, str] = {}
    statements: dict[str, str] = {}
    for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        (fragments if kind == "fragment" else statements)[name] = _body(body)
    queries: dict[str, sql.SQL] = {}
    for name, statement in statements.items():
        for fragment, value in fragments.items():
            statement = statement.replace(f"{{{fragment}}}", value)
        queries[name] = sql.SQL(statement)
    return queries


QUERIES = parse(resources.files(__package__).joinpath("queries.sql").read_text())
