"""``python -m bench.claim_plan``: what the claim costs as the backlog grows.

In a fresh, migrated database (dropped at the end) it fills the queue in
steps — 1,000, 10,000 and 100,000 pending tasks spread over 1,000 users (a
tenth of them served before, so turns differ), then the same 100,000 for one
user — and runs the processor's claim statements (``claim_tasks_fair``, and
``claim_tasks_fifo`` for comparison) under ``EXPLAIN (ANALYZE, BUFFERS)`` in a
transaction that is rolled back, so every run sees the same backlog. It prints
the median execution time and buffers per statement and step, both with the
custom plan and the generic plan (what the processor runs: its connections
set plan_cache_mode=force_generic_plan, and psycopg prepares a statement
after five runs), and the fair claim's plan at 100,000 tasks across 1,000
users.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bench.infra import DEFAULT_DATABASE_URL, BenchEnv, BenchError
from server.storage.postgres.queries import QUERIES

STEPS = ((1_000, 1_000), (10_000, 1_000), (100_000, 1_000), (100_000, 1))
TIME = re.compile(r"Execution Time: ([\d.]+) ms")
BUFFERS = re.compile(r"Buffers: shared hit=(\d+)(?: read=(\d+))?")
PARAMETER = re.compile(r"%\((\w+)\)s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_plan", description=__doc__)
    parser.add_argument("--batch", type=int, default=10, help="tasks per claim (10)")
    parser.add_argument("--repeats", type=int, default=7, help="EXPLAIN runs per case (7)")
    parser.add_argument(
        "--database-url", default=os.environ.get("TASKGATE_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    return parser.parse_args(argv)


def fill(conn: psycopg.Connection[Any], tasks: int, users: int) -> None:
    """Exactly ``tasks`` pending tasks over ``users`` users (as CreateTask stores them)."""
    conn.execute("TRUNCATE users CASCADE")
    conn.execute(
        "INSERT INTO users (username, password_hash) "
        "SELECT 'bench' || n, 'not-a-hash' FROM generate_series(1, %s) AS n",
        (users,),
    )
    conn.execute(
        """INSERT INTO tasks (user_id, filters, output_format, input_image, input_content_type,
                              input_width, input_height, input_size_bytes, priority, created_at)
           SELECT u.id, '[{"grayscale": {}}]', 'png', '\\x00', 'image/png', 8, 8, 1,
                  (n %% 3) - 1, now() - make_interval(secs => %(tasks)s - n)
           FROM generate_series(1, %(tasks)s) AS n
           JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM users) AS u
             ON u.k = n %% %(users)s""",
        {"tasks": tasks, "users": users},
    )
    # A tenth of the users were served before: their turns are later.
    conn.execute(
        "UPDATE user_queues SET turn = nextval('task_queue_turns') "
        "WHERE user_id IN (SELECT id FROM users ORDER BY id LIMIT greatest(1, %s / 10))",
        (users,),
    )
    conn.execute("VACUUM ANALYZE tasks")
    conn.execute("VACUUM ANALYZE user_queues")


@dataclass
class Measured:
    times: list[float]
    buffers: list[int]
    plan: str

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def prepare(conn: psycopg.Connection[Any], name: str) -> str:
    """PREPAREs the named statement (its %(x)s parameters as $n); returns its EXECUTE."""
    text = QUERIES[name].as_string(conn)
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    body = PARAMETER.sub(number, text)
    conn.execute(sql.SQL("PREPARE {} AS ").format(sql.Identifier(name)) + sql.SQL(body))
    values = {"limit": "%(batch)s", "max_running": "0", "owner": "'bench'", "lease": "30"}
    return f"EXECUTE {name}({', '.join(values[n] for n in names)})"


def explain(
    conn: psycopg.Connection[Any], execute: str, batch: int, repeats: int, generic: bool
) -> Measured:
    statement = "EXPLAIN (ANALYZE, BUFFERS) " + execute % {"batch": batch}
    times, buffers, plan = [], [], ""
    for _ in range(repeats):
        with conn.transaction(force_rollback=True):
            mode = "force_generic_plan" if generic else "force_custom_plan"
            conn.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.Literal(mode)))
            rows = conn.execute(statement).fetchall()
        plan = "\n".join(row[0] for row in rows)
        found = TIME.search(plan)
        if found is None:
            raise BenchError(f"no execution time in the plan:\n{plan}")
        times.append(float(found.group(1)))
        top = BUFFERS.search(plan)
        buffers.append(int(top.group(1)) + int(top.group(2) or 0) if top else 0)
    if "Update on tasks" not in plan:
        raise BenchError(f"the plan updates no tasks:\n{plan}")
    return Measured(times, buffers, plan)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = BenchEnv(base_database_url=args.database_url)
    try:
        env.migrate()
        with psycopg.connect(env.database_url, autocommit=True) as conn:
            report(conn, args)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for problem in env.close():
            print(f"clean-up failed: {problem}", file=sys.stderr)
    return 0


def report(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    print(
        f"claim of {args.batch} tasks, median of {args.repeats} EXPLAIN ANALYZE runs (rolled back)"
    )
    row = "{:>9} {:>6}  {:<18}{:>12}{:>10}{:>12}{:>10}"
    print(
        row.format("pending", "users", "statement", "custom ms", "buffers", "generic ms", "buffers")
    )
    shown = ""
    executes = {name: prepare(conn, name) for name in ("claim_tasks_fair", "claim_tasks_fifo")}
    for tasks, users in STEPS:
        fill(conn, tasks, users)
        for name, execute in executes.items():
            custom = explain(conn, execute, args.batch, args.repeats, generic=False)
            generic = explain(conn, execute, args.batch, args.repeats, generic=True)
            print(
                row.format(
                    f"{tasks:,}", f"{users:,}", name, f"{custom.median:.3f}",
                    int(statistics.median(custom.buffers)), f"{generic.median:.3f}",
                    int(statistics.median(generic.buffers)),
                )
            )  # fmt: skip
            if (tasks, users, name) == (100_000, 1_000, "claim_tasks_fair"):
                shown = custom.plan
    print("\nclaim_tasks_fair at 100,000 pending tasks across 1,000 users (custom plan):\n")
    print(shown)


if __name__ == "__main__":
    sys.exit(main())
