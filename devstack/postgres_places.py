"""Where the local Postgres keeps its data and finds its programs.

As a normal user, and as root in a checkout that every account may walk into,
that is the stack's data folder (``.devstack/postgres``) and the programs where
devstack.binaries found them. As root, Postgres runs as another account
(devstack.accounts), which must reach both through folders it may search: a
checkout under a private folder (a clone in root's home, mode 0700) is not
such a place. Then:

- the data goes to ``STATE_ROOT/<checkout>-<folder>-<hash>``: a folder of that
  data folder's own, named from a hash of its path (so the cluster survives
  restarts as ``.devstack/`` does), owned by the account, mode 0700;
- when the programs are the pgserver wheel's inside that private checkout's
  ``.venv``, they are copied once to ``STATE_ROOT/pgserver-<hash>`` (root's,
  readable by all). The machine's programs (Debian's /usr/lib/postgresql) are
  reachable as they are.

``STATE_ROOT`` is /var/lib/taskgate-devstack, in the system's state directory,
rather than /tmp or /var/tmp: their cleaners (systemd-tmpfiles) delete files by
age, which would break a cluster left alone for a few weeks; /tmp is often in
memory, empty after a reboot; and a name in a folder anybody may write in can
be taken first by anybody, while root keeps programs it runs there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from devstack.accounts import Account, AccountError
from devstack.binaries import PGSERVER_WHEEL, copy_wheel_postgres

log = logging.getLogger("devstack")

STATE_ROOT = Path("/var/lib/taskgate-devstack")


@dataclass(frozen=True)
class PostgresPlaces:
    bin_dir: Path  # holds initdb and postgres
    data_dir: Path  # the cluster (PGDATA)


def postgres_places(
    account: Account, bin_dir: Path, origin: str, data_dir: Path, *, state_root: Path = STATE_ROOT
) -> PostgresPlaces:
    """Where Postgres, run as ``account``, finds its programs and keeps its data, given the
    programs found (``bin_dir``, from ``origin``) and the stack's ``data_dir`` (which exists)."""
    cluster = data_dir / "postgres"
    if not account.can_enter(data_dir):
        cluster = state_root / stable_name(data_dir)
        _state_root(state_root)
        log.info(
            "%s cannot walk into %s (a parent folder is private): Postgres keeps its data in %s",
            account.name,
            data_dir,
            cluster,
        )
    if origin == PGSERVER_WHEEL and not account.can_run(bin_dir / "postgres"):
        _state_root(state_root)
        try:
            copied = copy_wheel_postgres(bin_dir, state_root)
        except OSError as exc:
            raise AccountError(f"cannot copy PostgreSQL into {state_root}: {exc}") from exc
        log.info(
            "%s cannot run the programs in %s (a parent folder is private): using a copy in %s",
            account.name,
            bin_dir,
            copied,
        )
        bin_dir = copied
    return PostgresPlaces(bin_dir, cluster)


def stable_name(data_dir: Path) -> str:
    """``/root/taskgate/.devstack`` → ``taskgate-devstack-<16 hex digits of the path's hash>``:
    the same folder on every run, another one for another checkout."""
    path = data_dir.resolve()
    readable = "-".join(part.strip(".") for part in path.parts[-2:] if part != "/")
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', readable)}-{digest}"


def _state_root(folder: Path) -> None:
    """``folder``, ours and searchable by all (the account walks through it to its cluster),
    writable by us alone (the copied programs in it run as us too)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AccountError(
            f"Postgres's account cannot reach the checkout, and {folder} cannot be made for "
            f"it: {exc}; clone taskgate where every user may walk, or set TASKGATE_DATABASE_URL"
        ) from exc
    if folder.stat().st_uid != os.getuid():
        raise AccountError(
            f"{folder} belongs to another user; remove it or set TASKGATE_DATABASE_URL"
        )
    folder.chmod(0o755)
