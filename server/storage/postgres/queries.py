"""The named queries of ``queries.sql``, loaded once at import.

A ``-- name: x`` line starts a statement; a ``-- fragment: y`` line starts a
piece of SQL (a column list) that statements include as ``{y}``.

Each statement has a category for the metrics (:func:`category`): ``select``,
``insert``, ``update`` or ``delete``, the kind of its first data-changing
verb (a ``WITH`` whose CTE updates is an update; ``FOR UPDATE`` is a lock,
not one).
"""

from __future__ import annotations

import re
from importlib import resources

from psycopg import sql

_HEADER = re.compile(r"^-- (name|fragment): (\w+)\s*$", re.MULTILINE)
_WRITES = re.compile(r"(?<!FOR )\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
CATEGORIES = ("select", "insert", "update", "delete")


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


def category_of(statement: str) -> str:
    """``insert``, ``update`` or ``delete``: the first write in ``statement``; else ``select``."""
    write = _WRITES.search(statement)
    return "select" if write is None else write.group(1).lower()


QUERIES = parse(resources.files(__package__).joinpath("queries.sql").read_text())
_CATEGORY = {name: category_of(query.as_string()) for name, query in QUERIES.items()}


def category(operation: str) -> str:
    """The category of a named query, or of statements pipelined together
    (``claim_tasks+claimed_inputs``): the first write among them, else ``select``."""
    kinds = [_CATEGORY.get(name, "select") for name in operation.split("+")]
    return next((kind for kind in kinds if kind != "select"), "select")
