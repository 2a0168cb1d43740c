"""Who Postgres runs as.

``initdb`` and ``postgres`` refuse to run as root. As a normal user they run as
that user. As root they run as the user who called ``sudo`` (``SUDO_UID``), or
else as ``nobody``, through ``setpriv`` (util-linux): no account is created.
The Postgres data folder is then owned by that account, and the ``can_*``
probes tell whether it reaches a folder or a program (devstack.postgres_places
moves them where it does).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class AccountError(RuntimeError):
    """Postgres cannot run as the chosen account."""


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    name: str

    @property
    def is_current(self) -> bool:
        return self.uid == os.getuid()

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run as this account (and ended if its parent, our supervisor, dies)."""
        if self.is_current:
            return argv
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise AccountError(
                "running as root: Postgres must run as an unprivileged user, and setpriv "
                "(util-linux) is missing; run as a normal user or set TASKGATE_DATABASE_URL"
            )
        return [
            setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--pdeathsig=INT",
            "--",
            *argv,
        ]

    def own(self, path: Path) -> None:
        """Give ``path`` (a folder this account works in) to it, private as Postgres wants."""
        path.mkdir(parents=True, exist_ok=True)
        if not self.is_current:
            os.chown(path, self.uid, self.gid)
        path.chmod(0o700)

    def can_run(self, program: Path) -> bool:
        """The account may execute ``program`` (every parent folder searchable)."""
        return self._passes("-x", program)

    def can_enter(self, folder: Path) -> bool:
        """The account may walk into ``folder`` (it and every parent searchable)."""
        return self._passes("-x", folder)

    def can_write(self, folder: Path) -> bool:
        return self._passes("-w", folder)

    def _passes(self, test: str, path: Path) -> bool:
        """``test <flag> path`` run as the account (always true for the current user)."""
        if self.is_current:
            return True
        probe = self.command(["/bin/sh", "-c", f'test {test} "$1"', "-", str(path)])
        return subprocess.run(probe, check=False).returncode == 0  # noqa: S603 - our argv

    def check_reaches(self, program: Path, folder: Path) -> None:
        """The account can run ``program`` and write in ``folder``, or AccountError says which."""
        blocked = [
            f"run {program}" if not self.can_run(program) else "",
            f"write in {folder}" if not self.can_write(folder) else "",
        ]
        if any(blocked):
            raise AccountError(
                f"running as root: Postgres runs as {self.name!r} (uid {self.uid}), who cannot "
                f"{' or '.join(filter(None, blocked))} (a parent folder is private); run as a "
                "normal user, or set TASKGATE_DATABASE_URL"
            )


def postgres_account() -> Account:
    """The current user, or when root the sudo caller or ``nobody``."""
    uid = os.getuid()
    if uid != 0:
        return Account(uid, os.getgid(), pwd.getpwuid(uid).pw_name)
    sudo_uid = os.environ.get("SUDO_UID", "")
    if sudo_uid.isdigit() and int(sudo_uid) != 0:
        entry = pwd.getpwuid(int(sudo_uid))
        return Account(entry.pw_uid, entry.pw_gid, entry.pw_name)
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        raise AccountError(
            "running as root and there is no 'nobody' account for Postgres to run as; "
            "run as a normal user or set TASKGATE_DATABASE_URL"
        ) from None
    return Account(entry.pw_uid, entry.pw_gid, entry.pw_name)
