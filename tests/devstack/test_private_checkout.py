"""`make run` as root in a checkout under a private folder (a clone in root's
home, mode 0700). Postgres then runs as `nobody` (or the sudo caller), who
cannot walk into the checkout: its data goes to a folder of the checkout's own
under the state root, and the pgserver wheel's programs, when the virtualenv is
in the checkout too, to a copy there. Each test starts the local databases
through devstack.stack.local_databases, connects, stops them, and removes the
state root it used; no process outlives it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack import binaries
from devstack.accounts import AccountError, postgres_account
from devstack.databases import LocalPostgres, Tuning
from devstack.postgres_places import PostgresPlaces, postgres_places, stable_name
from devstack.stack import local_databases

FAST = Tuning(durable=False, max_connections=20)
pytestmark = [
    pytest.mark.skipif(
        os.getuid() != 0,
        reason="only root's Postgres runs as another account, which a private folder shuts out",
    ),
    pytest.mark.timeout(120),
]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout's data folder under a folder of mode 0700, like /root/taskgate/.devstack."""
    home = tmp_path / "root-home"
    home.mkdir()
    home.chmod(0o700)
    return home / "taskgate" / ".devstack"


@pytest.fixture
def state_root() -> Iterator[Path]:
    """A state root of this test's own (instead of /var/lib/taskgate-devstack), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="taskgate-state-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        assert not folder.exists()


def processes_using(folder: Path) -> list[str]:
    """Command lines of running processes that name ``folder``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if str(folder) in argv:
            found.append(argv)
    return found


def server_data_directory(postgres: LocalPostgres) -> str:
    with psycopg.connect(postgres.admin_url(), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row is not None
    return str(row[0])


def test_data_in_a_private_checkout_moves_to_a_stable_folder_of_the_account(
    checkout: Path, state_root: Path
) -> None:
    account = postgres_account()
    moved_to = state_root / stable_name(checkout)

    with local_databases(checkout, tuning=FAST, state_root=state_root) as (postgres, _):
        assert postgres.data_dir == moved_to
        assert server_data_directory(postgres) == str(moved_to)
        with psycopg.connect(postgres.admin_url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (note text)")
            conn.execute("INSERT INTO kept VALUES ('survives a restart')")
        first = postgres.child
    assert first is not None
    assert not first.running

    stat = moved_to.stat()
    assert (stat.st_uid, stat.st_mode & 0o777) == (account.uid, 0o700)
    assert not (checkout / "postgres").exists()
    assert (checkout / "logs" / "postgres.log").is_file()  # the logs stay in the checkout

    with (
        local_databases(checkout, tuning=FAST, state_root=state_root) as (postgres, _),
        psycopg.connect(postgres.admin_url()) as conn,
    ):
        assert conn.execute("SELECT note FROM kept").fetchall() == [("survives a restart",)]
    assert processes_using(state_root) == []


def test_the_wheels_programs_in_a_private_checkout_run_from_a_copy(
    checkout: Path, state_root: Path
) -> None:
    wheel_bin, origin = binaries.postgres_bin("wheels")
    assert origin == binaries.PGSERVER_WHEEL
    site = checkout.parent / ".venv" / "lib" / "python3" / "site-packages"  # private too
    for part in binaries.PGSERVER_PARTS:
        shutil.copytree(wheel_bin.parent / part, site / "pgserver" / "pginstall" / part)
    shutil.copytree(wheel_bin.parent.parent.parent / "pgserver.libs", site / "pgserver.libs")
    private_bin = site / "pgserver" / "pginstall" / "bin"
    redis, redis_origin = binaries.redis_server()
    programs = binaries.Programs(private_bin, origin, redis, redis_origin)

    with local_databases(checkout, tuning=FAST, programs=programs, state_root=state_root) as (
        postgres,
        _,
    ):
        assert postgres.bin_dir.is_relative_to(state_root)
        with psycopg.connect(postgres.admin_url()) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        copied_postgres = postgres.bin_dir / "postgres"
    assert version is not None
    assert version[0].startswith("16.")
    assert copied_postgres.stat().st_uid == 0  # root's: make test puts it on root's PATH
    assert copied_postgres.stat().st_mode & 0o022 == 0
    assert processes_using(state_root) == []


def test_the_machines_programs_in_a_private_folder_are_refused_with_what_is_unreachable(
    checkout: Path, state_root: Path
) -> None:
    private_bin = checkout.parent / "postgresql" / "bin"  # e.g. a build in root's home
    private_bin.mkdir(parents=True)
    (private_bin / "postgres").write_text("#!/bin/sh\nexit 1\n")
    (private_bin / "postgres").chmod(0o755)
    redis, redis_origin = binaries.redis_server()
    programs = binaries.Programs(private_bin, "machine", redis, redis_origin)

    with (
        pytest.raises(AccountError) as refused,
        local_databases(checkout, tuning=FAST, programs=programs, state_root=state_root),
    ):
        pytest.fail("Postgres started from a folder its account cannot reach")

    assert f"who cannot run {private_bin / 'postgres'} (a parent folder is private)" in str(
        refused.value
    )
    assert [path.name for path in state_root.iterdir()] == [stable_name(checkout)]


def test_root_in_a_folder_every_account_reaches_keeps_everything_in_place(
    state_root: Path,
) -> None:
    account = postgres_account()
    # The machine's programs when it has them (reachable wherever the checkout is):
    # this test is about where the data goes.
    bin_dir, origin = binaries.postgres_bin("machine")
    with tempfile.TemporaryDirectory(prefix="taskgate-reachable-") as folder:
        Path(folder).chmod(0o755)
        data_dir = Path(folder) / ".devstack"
        data_dir.mkdir(mode=0o755)

        places = postgres_places(account, bin_dir, origin, data_dir, state_root=state_root)

    assert places == PostgresPlaces(bin_dir, data_dir / "postgres")
    assert list(state_root.iterdir()) == []


def test_each_data_folder_has_a_stable_folder_of_its_own() -> None:
    name = stable_name(Path("/root/taskgate/.devstack"))

    assert name.startswith("taskgate-devstack-")
    assert name == stable_name(Path("/root/taskgate/.devstack"))
    assert name != stable_name(Path("/root/taskgate-2/.devstack"))
    assert name != stable_name(Path("/root/other/taskgate/.devstack"))
