"""A migration larger than one batch: its statements reach the server a bounded piece at a
time (statements.BATCH_CHARS of SQL per round trip), all in the release's one transaction.
Checked with the real CLI on a real PostgreSQL: a late error still names its line and changes
nothing; a success records exactly the migration's history row."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from herokumigrate.statements import BATCH_CHARS
from support import Server, history, rows, run_cli, snapshot, up, write_migrations

pytestmark = pytest.mark.db

BASE = {"1_base.up.sql": "CREATE TABLE items (id int PRIMARY KEY, name text);\n"}
HEADER = "-- a data migration larger than one batch\n\n"


def _inserts(first: int, count: int) -> str:
    return "".join(
        f"INSERT INTO items (id, name) VALUES ({i}, 'item number {i} of a large migration');\n"
        for i in range(first, first + count)
    )


def _rows_for(size: int) -> int:
    """How many INSERT lines make about `size` characters."""
    return size // len(_inserts(1_000_000, 1))


def _large(bad: str, at: int, total: int) -> tuple[str, int]:
    """A file of `total` INSERTs whose statement number `at` (0-based) is `bad`, and the line
    of the file where that statement is."""
    text = HEADER + _inserts(0, at) + bad + "\n" + _inserts(at + 1, total - at - 1)
    return text, HEADER.count("\n") + at + 1


@pytest.mark.parametrize(
    "case",
    [
        # An error with a position: mapped back to its statement from the batch's text.
        ("INSERT INTO missing_table VALUES (1);", "42P01"),
        # A unique violation has no position: the rolled-back replay finds the statement.
        ("INSERT INTO items (id, name) VALUES (7, 'a duplicate');", "23505"),
    ],
)
def test_a_late_error_in_a_multi_batch_migration_names_its_line_and_changes_nothing(
    pg_server: Server, dbname: str, database_url: str, app: Path, case: tuple[str, str]
) -> None:
    bad, sqlstate = case
    assert up(app, BASE, database_url).returncode == 0
    before = snapshot(pg_server, dbname)
    total = _rows_for(3 * BATCH_CHARS)
    text, line = _large(bad, total - 50, total)  # in the last batch
    assert len(text) > 2 * BATCH_CHARS
    write_migrations(app, {"2_data.up.sql": text})
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1, result.output
    assert f"2_data.up.sql: line {line}: ERROR {sqlstate}" in result.stderr, result.stderr
    assert "the database is unchanged" in result.stderr
    assert snapshot(pg_server, dbname) == before
    assert rows(pg_server.admin_url(dbname), "SELECT count(*) FROM items") == [(0,)]


@pytest.mark.parametrize("mode", ["release", "migration"])
def test_a_multi_batch_migration_records_exactly_its_history_row(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    total = _rows_for(3 * BATCH_CHARS)
    text = HEADER + _inserts(0, total)
    result = up(app, {**BASE, "2_data.up.sql": text}, database_url, {"MIGRATE_TRANSACTION": mode})
    assert result.returncode == 0, result.output
    assert "2_data (" in result.stdout
    sha = hashlib.sha256(text.encode()).hexdigest()
    base_sha = hashlib.sha256(BASE["1_base.up.sql"].encode()).hexdigest()
    assert history(pg_server, dbname) == [
        (1, "base", base_sha, "applied", None),
        (2, "data", sha, "applied", None),
    ]
    assert rows(pg_server.admin_url(dbname), "SELECT count(*), max(id) FROM items") == [
        (total, total - 1)
    ]


def test_statements_around_a_concurrent_index_in_a_large_file_run_once_each(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # The index splits the file into two transactions around it, each several batches long.
    half = _rows_for(2 * BATCH_CHARS)
    text = (
        HEADER
        + _inserts(0, half)
        + "CREATE INDEX CONCURRENTLY items_name ON items (name);\n"
        + _inserts(half, half)
    )
    result = up(app, {**BASE, "2_data.up.sql": text}, database_url)
    assert result.returncode == 0, result.output
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [(1, "applied"), (2, "applied")]
    assert rows(pg_server.admin_url(dbname), "SELECT count(*), max(id) FROM items") == [
        (2 * half, 2 * half - 1)
    ]
    assert rows(
        pg_server.admin_url(dbname),
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_name'::regclass",
    ) == [(True,)]


# With a statement timeout, each migration has its own round trip; without, several share one.
@pytest.mark.parametrize("timeout", [("30", "30s"), (None, "0")])
def test_a_migrations_timeouts_never_reach_the_next_one_in_the_same_transaction(
    pg_server: Server, dbname: str, database_url: str, app: Path, timeout: tuple[str | None, str]
) -> None:
    statement_timeout, shown = timeout
    # Our timeouts travel in the first round trip of each migration: a file's SET or RESET ALL
    # ends with that file, whether the next migration is one statement or several.
    seen = (
        "INSERT INTO seen SELECT '{}', current_setting('lock_timeout'),"
        " current_setting('statement_timeout');\n"
    )
    files = {
        "1_off.up.sql": "SET lock_timeout = 0;\nSET statement_timeout = 0;\n"
        "CREATE TABLE seen (name text, lock_timeout text, statement_timeout text);\n",
        "2_one.up.sql": seen.format("one"),
        "3_off_again.up.sql": "SET lock_timeout = 0;\nSET statement_timeout = 0;\n",
        "4_many.up.sql": "CREATE TABLE other (id int);\n" + seen.format("many"),
        "5_reset.up.sql": "RESET ALL;\n",
        "6_after_reset.up.sql": seen.format("after reset"),
    }
    env = {"MIGRATE_LOCK_TIMEOUT": "2"}
    if statement_timeout is not None:
        env["MIGRATE_STATEMENT_TIMEOUT"] = statement_timeout
    result = up(app, files, database_url, env=env)
    assert result.returncode == 0, result.output
    # The first attempt waits 0.1 s for a lock (lockretry.py), every statement 30 s at most.
    assert rows(pg_server.admin_url(dbname), "SELECT * FROM seen ORDER BY name") == [
        ("after reset", "100ms", shown),
        ("many", "100ms", shown),
        ("one", "100ms", shown),
    ]
