"""Many migrations in one round trip (statements.batches): the server runs a release's
statements back to back, never waiting for the client between two migrations. Checked on a
real PostgreSQL: the batch really is one query, each migration's time is its own (the server's
clock, read between them), a failure still names its file and line and changes nothing, and
where a statement timeout is set each migration has its round trip, so that a cancel without a
position still names its file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from herokumigrate.plan import Step, build_units
from herokumigrate.source import load_migrations
from herokumigrate.statements import execute_batch
from support import (
    SLACK_SECONDS,
    Server,
    finish,
    rows,
    scalar,
    snapshot,
    spawn_cli,
    up,
    wait_until,
    write_migrations,
)

pytestmark = pytest.mark.db

SEEN = "CREATE TABLE IF NOT EXISTS seen (name text, query text);\n"


def test_several_migrations_go_in_one_query_and_each_is_timed_by_the_server(
    pg_server: Server, dbname: str, app: Path
) -> None:
    files = {
        "1_a.up.sql": SEEN + "INSERT INTO seen VALUES ('a', NULL);\n",
        "2_sleep.up.sql": "SELECT pg_sleep(0.3);\n",
        # The server shows our backend's current query: this migration's and the first one's.
        "3_c.up.sql": "INSERT INTO seen SELECT 'c', query FROM pg_stat_activity"
        " WHERE pid = pg_backend_pid();\n",
    }
    folder = write_migrations(app, files)
    migrations = load_migrations(folder, app)
    (unit,) = build_units([(m, m.up, 0) for m in migrations], per_migration=False)
    by_migration: dict[str, list[Step]] = {}
    for step in unit.steps():
        by_migration.setdefault(step.migration.name, []).append(step)
    segments = [("", steps) for steps in by_migration.values()]
    with pg_server.admin_conn(dbname) as conn:
        spent = execute_batch(conn, segments)
        query = str(scalar(conn, "SELECT query FROM seen WHERE name = 'c'"))
    assert "INSERT INTO seen VALUES ('a', NULL);" in query
    assert "pg_sleep(0.3)" in query
    assert len(spent) == 3
    assert spent[1] >= 300.0, spent
    assert spent[0] < 300.0, spent
    assert spent[2] < 300.0, spent


def test_a_release_records_each_migrations_own_time(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    files = {
        # Settings that change how the server prints numbers and times do not change the marks.
        "1_a.up.sql": "SET extra_float_digits = -15;\nSET TIME ZONE 'Pacific/Chatham';\n"
        "SET DateStyle = 'SQL, DMY';\nCREATE TABLE a (id int);\n",
        "2_sleep.up.sql": "SELECT pg_sleep(0.3);\n",
        "3_c.up.sql": "CREATE TABLE c (id int);\n",
    }
    result = up(app, files, database_url)
    assert result.returncode == 0, result.output
    took = {
        int(str(version)): float(str(ms))
        for version, ms in rows(
            pg_server.admin_url(dbname),
            "SELECT version, duration_ms FROM heroku_migrate_history ORDER BY version",
        )
    }
    assert took[2] >= 300.0, took
    assert took[1] < 300.0, took
    assert took[3] < 300.0, took


@pytest.mark.parametrize(
    "case",
    [
        # A position: mapped back to its statement in the query of several migrations.
        ("INSERT INTO missing_table VALUES (1);", "42P01"),
        # No position: the rolled-back replay finds the statement.
        ("INSERT INTO a VALUES (1);", "23505"),
    ],
)
def test_a_failure_among_migrations_sent_together_names_its_file_and_line(
    pg_server: Server, dbname: str, database_url: str, app: Path, case: tuple[str, str]
) -> None:
    bad, sqlstate = case
    assert (
        up(app, {"1_a.up.sql": "CREATE TABLE a (id int PRIMARY KEY);\n"}, database_url).returncode
        == 0
    )
    before = snapshot(pg_server, dbname)
    files = {
        "2_b.up.sql": "INSERT INTO a VALUES (1);\nCREATE TABLE b (id int);\n",
        "3_c.up.sql": "CREATE TABLE c (id int);\n",
        "4_d.up.sql": "-- the fourth\nCREATE TABLE d (id int);\n" + bad + "\n",
        "5_e.up.sql": "CREATE TABLE e (id int);\n",
    }
    result = up(app, files, database_url)
    assert result.returncode == 1, result.output
    assert f"4_d.up.sql: line 3: ERROR {sqlstate}" in result.stderr, result.stderr
    assert snapshot(pg_server, dbname) == before


def _cancel_when_sleeping(pg_server: Server, dbname: str, env: dict[str, str], app: Path) -> str:
    """Run `up` in a process, cancel its statement from outside while it sleeps; its stderr."""
    proc = spawn_cli(["up"], cwd=app, database_url=pg_server.url(dbname), env=env)
    sleeping = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event = 'PgSleep'"
    )
    admin = pg_server.admin_url(dbname)
    try:
        wait_until(lambda: rows(admin, sleeping), SLACK_SECONDS, "the migration's pg_sleep")
        rows(admin, f"SELECT pg_cancel_backend(pid) FROM ({sleeping}) s")
    finally:
        result = finish(proc)
    assert result.returncode == 1, result.output
    return result.stderr


SLEEPER = {
    "1_a.up.sql": "CREATE TABLE a (id int);\n",
    "2_sleep.up.sql": "CREATE TABLE b (id int);\nSELECT pg_sleep(60);\n",
    "3_c.up.sql": "CREATE TABLE c (id int);\n",
}


def test_a_cancel_among_migrations_sent_together_names_all_of_them(
    pg_server: Server, dbname: str, app: Path
) -> None:
    # A cancel has no position and is not replayed: the error names the round trip's span.
    write_migrations(app, SLEEPER)
    stderr = _cancel_when_sleeping(pg_server, dbname, {}, app)
    assert "1_a.up.sql ... 3_c.up.sql (sent in one round trip;" in stderr, stderr
    assert "ERROR 57014" in stderr
    assert rows(pg_server.admin_url(dbname), "SELECT to_regclass('a')") == [(None,)]


def test_with_a_statement_timeout_each_migration_has_its_round_trip(
    pg_server: Server, dbname: str, app: Path
) -> None:
    # A statement timeout's cancel names its migration's file: it went alone.
    write_migrations(app, SLEEPER)
    stderr = _cancel_when_sleeping(pg_server, dbname, {"MIGRATE_STATEMENT_TIMEOUT": "300"}, app)
    assert "2_sleep.up.sql (the failing statement could not be pinpointed): ERROR 57014" in stderr
    assert rows(pg_server.admin_url(dbname), "SELECT to_regclass('a')") == [(None,)]


def test_a_statement_that_gives_no_result_does_not_misplace_the_marks(
    pg_server: Server, dbname: str, app: Path
) -> None:
    # Each file's statement gives one result, which places the marks; a statement that gives
    # none (a comment alone) shifts them, and they are then looked for among all results.
    folder = write_migrations(app, {"1_a.up.sql": "SELECT 1;\n", "2_b.up.sql": "SELECT 2;\n"})
    (unit,) = build_units([(m, m.up, 0) for m in load_migrations(folder, app)], per_migration=False)
    first, second = unit.steps()
    silent = dataclasses.replace(
        first, statement=dataclasses.replace(first.statement, text="-- nothing to run\n")
    )
    with pg_server.admin_conn(dbname) as conn:
        spent = execute_batch(conn, [("", [first, silent]), ("", [second])])
    assert len(spent) == 2
    assert all(0.0 <= ms < 1000.0 for ms in spent), spent


def test_non_ascii_text_before_the_failure_does_not_shift_its_line(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # PostgreSQL places an error in characters, not bytes, across the whole round trip.
    files = {
        "1_a.up.sql": "CREATE TABLE a (name text);\n"
        "INSERT INTO a VALUES ('naïve café ☕ 日本語 𝄞');\nCOMMENT ON TABLE a IS 'ünïcödé';\n",
        "2_b.up.sql": "-- ☕☕☕\nINSERT INTO a VALUES ('𝄞𝄞');\nSELECT * FROM missing_table;\n",
    }
    result = up(app, files, database_url)
    assert result.returncode == 1, result.output
    assert "2_b.up.sql: line 3: ERROR 42P01" in result.stderr, result.stderr
    assert rows(pg_server.admin_url(dbname), "SELECT to_regclass('a')") == [(None,)]
