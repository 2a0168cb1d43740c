"""A local Postgres and Redis of the stack's own, in a data folder.

Both listen on 127.0.0.1 only, on free ports; Postgres has no unix socket (its
default folder, /var/run/postgresql, is not ours). Postgres accepts the
``postgres`` user without a password (trust), which is why it never listens
beyond the loopback interface.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from devstack.accounts import Account
from devstack.children import Child, wait_until

log = logging.getLogger("devstack")

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Tuning:
    """``durable=False`` (the tests) trades crash safety for speed; Redis then keeps nothing."""

    durable: bool = True
    max_connections: int = 100


class LocalPostgres:
    def __init__(self, bin_dir: Path, data_dir: Path, account: Account, tuning: Tuning) -> None:
        self.bin_dir = bin_dir
        self.data_dir = data_dir
        self.account = account
        self.tuning = tuning
        self.port = free_port()
        self.child: Child | None = None
        self.log_file: Path | None = None

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _create(self, env: dict[str, str], log_file: Path) -> None:
        """A new cluster in the empty data folder."""
        log.info("initialising a Postgres cluster in %s", self.data_dir)
        argv = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        if not self.tuning.durable:
            argv.append("--no-sync")
        self._run("initdb", argv, env, log_file)

    def _run(self, what: str, argv: list[str], env: dict[str, str], log_file: Path) -> None:
        with log_file.open("ab") as out:
            done = subprocess.run(  # noqa: S603 - our own argv
                self.account.command(argv), env=env, stdout=out, stderr=subprocess.STDOUT
            )
        if done.returncode != 0:
            tail = "\n  ".join(log_file.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{what} failed (status {done.returncode}):\n  {tail}")

    def start(self, log_file: Path) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_file
        self.account.own(self.data_dir)
        self.account.check_reaches(self.bin_dir / "postgres", self.data_dir)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if not (self.data_dir / "PG_VERSION").exists():
            self._create(env, log_file)
        argv = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", f"max_connections={self.tuning.max_connections}",
        ]  # fmt: skip
        if not self.tuning.durable:
            argv += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        self.child = Child(
            "postgres",
            self.account.command(argv),
            env=env,
            stop_signal=signal.SIGINT,  # "fast" shutdown: roll back sessions, checkpoint, exit
            log_file=log_file,
        )
        wait_until(self._accepts, child=self.child, timeout=START_TIMEOUT, what="Postgres")

    def _accepts(self) -> bool:
        try:
            with psycopg.connect(self.admin_url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(STOP_TIMEOUT)


class LocalReplica(LocalPostgres):
    """A streaming replica of ``primary`` (``pg_basebackup -R``): read-only, hot standby.

    initdb's default pg_hba.conf lets 127.0.0.1 replicate with trust, and the
    default ``wal_level=replica`` streams, so the primary needs nothing more.
    """

    def __init__(self, primary: LocalPostgres, data_dir: Path) -> None:
        super().__init__(primary.bin_dir, data_dir, primary.account, primary.tuning)
        self.primary = primary

    def _create(self, env: dict[str, str], log_file: Path) -> None:
        log.info(
            "copying the Postgres on port %d into a replica in %s", self.primary.port, self.data_dir
        )
        argv = [
            str(self.bin_dir / "pg_basebackup"),
            f"--pgdata={self.data_dir}",
            "--host=127.0.0.1",
            f"--port={self.primary.port}",
            "--username=postgres",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
        ]
        if not self.tuning.durable:
            argv.append("--no-sync")
        self._run("pg_basebackup", argv, env, log_file)


class LocalRedis:
    def __init__(self, program: Path, data_dir: Path, tuning: Tuning) -> None:
        self.program = program
        self.data_dir = data_dir
        self.tuning = tuning
        self.port = free_port()
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, log_file: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(self.program),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--save", "60 1" if self.tuning.durable else "",
            "--appendonly", "no",
        ]  # fmt: skip
        self.child = Child("redis", argv, env=dict(os.environ), log_file=log_file)
        wait_until(self._pongs, child=self.child, timeout=START_TIMEOUT, what="Redis")

    def _pongs(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(STOP_TIMEOUT)
