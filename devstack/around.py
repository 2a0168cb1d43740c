"""``python -m devstack.around -- COMMAND...``: COMMAND with test databases.

When TASKGATE_TEST_DATABASE_URL and TASKGATE_TEST_REDIS_URL are both set (CI,
or a developer with servers of their own), COMMAND runs against them as is.
Otherwise a throwaway local Postgres and Redis are started in a temporary
folder (fast and not crash-safe: fsync off, nothing saved), COMMAND runs with
those two variables pointing at them and the Postgres programs first on PATH
(``pg_dump`` for the migration check), and both are stopped afterwards.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack.databases import Tuning
from devstack.stack import local_databases
from taskgate_runtime import logs

log = logging.getLogger("devstack")

TEST_TUNING = Tuning(durable=False, max_connections=300)


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python -m devstack.around -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if env.get("TASKGATE_TEST_DATABASE_URL") and env.get("TASKGATE_TEST_REDIS_URL"):
        return subprocess.call(command, env=env)  # noqa: S603 - the caller's command
    logs.configure(service="taskgate-devstack", level="info", fmt="text")
    prefer = env.get("TASKGATE_DEV_BINARIES", "machine")
    with (
        tempfile.TemporaryDirectory(prefix="taskgate-test-") as folder,
        local_databases(Path(folder), prefer=prefer, tuning=TEST_TUNING) as (postgres, redis),
    ):
        env["TASKGATE_TEST_DATABASE_URL"] = postgres.admin_url()
        env["TASKGATE_TEST_REDIS_URL"] = redis.url
        env["PATH"] = f"{postgres.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        log.info("test databases: %s and %s", postgres.admin_url(), redis.url)
        return subprocess.call(command, env=env)  # noqa: S603 - the caller's command


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
