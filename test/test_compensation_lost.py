"""Compensation after a lost connection: with one transaction per migration, migration 1 has
committed when migration 2's backend is terminated; the runner must reconnect, re-take the
lock, find the history as it left it, and revert migration 1 with its down.

The other half of this path, "another run got there first" (the history changed while the
connection was lost, so nothing is compensated), is
test_faults.py::test_recovery_after_a_lost_connection_never_undoes_another_runners_work.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from support import (
    Server,
    finish,
    history,
    rows,
    run_cli,
    runner_in_pg_sleep,
    spawn_cli,
    tables,
    up,
    wait_until,
    write_migrations,
)

pytestmark = pytest.mark.db

APP_NAME = "heroku-migrate"  # the runner's application_name in pg_stat_activity


def test_migration_committed_before_a_lost_connection_is_reverted(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # Not a first release: the history (and its log) exist before, and stay.
    assert up(app, {"0_base.up.sql": "CREATE TABLE base (id int);\n"}, database_url).returncode == 0
    write_migrations(
        app,
        {
            "1_first.up.sql": "CREATE TABLE first_table (id int);\n",
            "1_first.down.sql": "DROP TABLE first_table;\n",
            "2_slow.up.sql": "CREATE TABLE slow_table (id int);\nSELECT pg_sleep(600);\n",
            "2_slow.down.sql": "DROP TABLE slow_table;\n",
        },
    )
    proc = spawn_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_TRANSACTION": "migration"}
    )
    try:
        wait_until(lambda: bool(runner_in_pg_sleep(pg_server, dbname)), 60, "migration 2's sleep")
        # Migration 1 is committed: another session sees its table and its history row.
        assert "first_table" in tables(pg_server.admin_url(dbname))
        assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [
            (0, "applied"),
            (1, "applied"),
        ]
        pid = runner_in_pg_sleep(pg_server, dbname)[0][0]
        rows(pg_server.admin_url("postgres"), "SELECT pg_terminate_backend(%s)", (pid,))
        result = finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(result.output)
    assert result.returncode == 1, result.output
    assert "the connection to the database was lost" in result.stderr, result.output
    assert (
        "Earlier migrations of this run were committed one by one (MIGRATE_TRANSACTION=migration);"
        " compensating, newest first:" in result.stderr
    ), result.output
    assert "reverted 1_first" in result.stderr, result.output
    assert "the schema is as before the run (checked" in result.stderr, result.output
    assert "could not reconnect" not in result.output, result.output
    remaining = tables(pg_server.admin_url(dbname))
    assert "first_table" not in remaining, "migration 1 was not reverted"
    assert "slow_table" not in remaining, "migration 2's open transaction was not rolled back"
    assert [r[0] for r in history(pg_server, dbname)] == [0], "migration 1's history row is left"
    # The failure is logged in the history's log for `status` to show.
    logged = rows(
        pg_server.admin_url(dbname),
        "SELECT event, detail FROM heroku_migrate_history_log ORDER BY id DESC LIMIT 1",
    )
    assert len(logged) == 1
    assert logged[0][0] == "failed", logged
    assert "reverted 1_first" in str(logged[0][1]), logged


def test_without_a_down_the_lost_run_says_what_is_left(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """No down for migration 1: nothing can be undone, and the error says what stays applied."""
    write_migrations(
        app,
        {
            "1_first.up.sql": "CREATE TABLE first_table (id int);\n",
            "2_slow.up.sql": "SELECT pg_sleep(600);\n",
        },
    )
    proc = spawn_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_TRANSACTION": "migration"}
    )
    try:
        wait_until(lambda: bool(runner_in_pg_sleep(pg_server, dbname)), 60, "migration 2's sleep")
        pid = runner_in_pg_sleep(pg_server, dbname)[0][0]
        rows(pg_server.admin_url("postgres"), "SELECT pg_terminate_backend(%s)", (pid,))
        result = finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert result.returncode == 1, result.output
    assert "1_first: has no down migration; cannot undo it" in result.stderr, result.output
    assert "STATE LEFT: still applied (possibly partly) from this run: 1_first" in result.stderr
    assert "first_table" in tables(pg_server.admin_url(dbname))
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [(1, "applied")]


GO_ON = "go on, test"  # the application_name that lets a waiting down proceed
# A down that waits until the test opens a connection named GO_ON (no lock: lock_timeout
# cannot cut the wait short), then drops what its up created.
WAITING_DOWN = (
    "DO $$ BEGIN\n"
    f"  WHILE NOT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = '{GO_ON}') LOOP\n"
    "    PERFORM pg_sleep(0.05);\n"
    "    PERFORM pg_stat_clear_snapshot();  -- pg_stat_activity is read once per transaction\n"
    "  END LOOP;\n"
    "END $$;\n"
    "DROP TABLE first_table;\n"
)


def our_advisory_locks(server: Server, pid: object) -> int:
    """How many advisory locks backend `pid` holds."""
    return int(
        str(
            rows(
                server.admin_url("postgres"),
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = %s",
                (pid,),
            )[0][0]
        )
    )


def test_after_a_lost_connection_the_migration_lock_is_taken_again_before_anything_runs(
    pg_server: Server, dbname: str, database_url: str, app: Path, tmp_path: Path
) -> None:
    """The connection is lost between two migrations (migration mode): the runner reconnects
    and, before it runs the next statement (the down that compensates migration 1), holds the
    migration lock again, seen from another session; a second runner started in that gap waits
    for the lock and gives up (exit 3) instead of migrating alongside."""
    write_migrations(
        app,
        {
            "1_first.up.sql": "CREATE TABLE first_table (id int);\n",
            "1_first.down.sql": WAITING_DOWN,
            "2_slow.up.sql": "SELECT pg_sleep(600);\n",
        },
    )
    other_app = tmp_path / "other"
    write_migrations(
        other_app,
        {
            "1_first.up.sql": "CREATE TABLE first_table (id int);\n",
            "3_other.up.sql": "CREATE TABLE other_table (id int);\n",
        },
    )
    proc = spawn_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_TRANSACTION": "migration"}
    )
    go_on = None
    try:
        wait_until(lambda: bool(runner_in_pg_sleep(pg_server, dbname)), 60, "migration 2's sleep")
        lost = runner_in_pg_sleep(pg_server, dbname)[0][0]
        assert our_advisory_locks(pg_server, lost) > 0, "no migration lock before the loss"
        rows(pg_server.admin_url("postgres"), "SELECT pg_terminate_backend(%s)", (lost,))
        wait_until(lambda: bool(waiting_downs(pg_server, dbname)), 60, "the down of migration 1")
        again = waiting_downs(pg_server, dbname)[0][0]
        assert again != lost
        assert our_advisory_locks(pg_server, again) > 0, "the lock was not taken again"
        second = run_cli(
            ["up"], cwd=other_app, database_url=database_url, env={"MIGRATE_LOCK_WAIT": "1"}
        )
        assert second.returncode == 3, second.output
        assert "other_table" not in tables(pg_server.admin_url(dbname))
        go_on = psycopg.connect(pg_server.admin_url("postgres"), application_name=GO_ON)
        result = finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if go_on is not None:
            go_on.close()
    assert result.returncode == 1, result.output
    assert "reverted 1_first" in result.stderr, result.output
    assert "the schema is as before the run" in result.stderr, result.output
    assert "first_table" not in tables(pg_server.admin_url(dbname))


def waiting_downs(server: Server, dbname: str) -> list[tuple[object, ...]]:
    """The runner's sessions on `dbname` running the down that waits for GO_ON."""
    return rows(
        server.admin_url("postgres"),
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
        " AND state = 'active' AND query LIKE %s",
        (dbname, APP_NAME, f"%{GO_ON}%"),
    )
