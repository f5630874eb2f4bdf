"""Fast guards (not @slow) for promises the slow tests also cover, so that a `-m "not slow"` run
still catches their loss: lock_timeout is set inside migrations, a lock timeout is retried and
the run then succeeds, an SQL error is not retried, and the next run cleans up an INVALID index
that an interrupted concurrent build left.

Every wait is for an event (a line of output, a backend's state in pg_stat_activity), never
for a length of time.
"""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from support import (
    Result,
    Server,
    finish,
    history,
    read_until,
    rows,
    run_cli,
    scalar,
    spawn_cli,
    tables,
    up,
    wait_until,
    write_migrations,
)

pytestmark = pytest.mark.db

APP_NAME = "heroku-migrate"  # the runner's application_name in pg_stat_activity

READ_TIMEOUTS = (
    "CREATE TABLE seen_{n} AS SELECT current_setting('lock_timeout') AS lock_timeout,"
    " current_setting('statement_timeout') AS statement_timeout;\n"
)


# ----- lock_timeout and statement_timeout are set inside the migrations ----------------------


@pytest.mark.parametrize("mode", ["release", "migration"])
def test_lock_timeout_and_statement_timeout_are_set_inside_migrations(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    files = {f"{n}_seen_{n}.up.sql": READ_TIMEOUTS.format(n=n) for n in (1, 2)}
    env = {
        "MIGRATE_TRANSACTION": mode,
        "MIGRATE_LOCK_TIMEOUT": "0.05",
        "MIGRATE_STATEMENT_TIMEOUT": "90",
    }
    result = up(app, files, database_url, env=env)
    assert result.returncode == 0, result.output
    for n in (1, 2):
        seen = rows(pg_server.admin_url(dbname), f"SELECT * FROM seen_{n}")
        # lock_timeout is the cap of the growing steps: below the first step, it is the step.
        assert seen == [("50ms", "90s")], (n, seen)


def test_first_lock_timeout_step_is_a_tenth_of_a_second_and_statement_timeout_off(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    result = up(app, {"1_seen_1.up.sql": READ_TIMEOUTS.format(n=1)}, database_url)
    assert result.returncode == 0, result.output
    # The first attempt's step (0.1 s, growing up to lock_timeout = 0.5 s on retries).
    assert rows(pg_server.admin_url(dbname), "SELECT * FROM seen_1") == [("100ms", "0")]


@pytest.mark.parametrize("mode", ["release", "migration"])
@pytest.mark.parametrize(
    "statement", ["SET lock_timeout = '1h'", "SET lock_timeout = 0", "RESET ALL"]
)
def test_a_migration_that_changes_the_timeouts_does_not_change_the_next_ones(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    *,
    statement: str,
    mode: str,
) -> None:
    """A session-level SET in a file outlives its transaction (migration mode), and within the
    release's one transaction it would carry into every later migration (release mode); every
    migration still runs with the configured timeouts: the runner re-asserts them before each
    migration, not only at the start of a transaction."""
    files = {
        "1_changes.up.sql": f"{statement};\n",
        "2_seen_2.up.sql": READ_TIMEOUTS.format(n=2),
    }
    env = {"MIGRATE_TRANSACTION": mode, "MIGRATE_LOCK_TIMEOUT": "0.05"}
    result = up(app, files, database_url, env=env)
    assert result.returncode == 0, result.output
    assert rows(pg_server.admin_url(dbname), "SELECT * FROM seen_2") == [("50ms", "0")]


# ----- a lock timeout is retried, then the run succeeds ----------------------------------------


def test_a_lock_timeout_is_retried_and_the_run_succeeds_once_the_lock_is_free(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    assert up(app, {"1_t.up.sql": "CREATE TABLE t (id int);\n"}, database_url).returncode == 0
    write_migrations(app, {"2_alter_t.up.sql": "-- ACCESS EXCLUSIVE\nALTER TABLE t ADD c int;\n"})
    # The app's long transaction: it read t, so it holds ACCESS SHARE until it ends.
    holder = psycopg.connect(pg_server.admin_url(dbname))
    holder.execute("SELECT count(*) FROM t")
    try:
        proc = spawn_cli(
            ["up"],
            cwd=app,
            database_url=database_url,
            env={"MIGRATE_LOCK_TIMEOUT": "0.2", "MIGRATE_RETRIES": "8"},
        )
        try:
            before_release = read_until(proc, "retry 1 of 8", 60, stream="stdout")
        finally:
            holder.rollback()  # the lock is free from now on: the next attempt gets it
        result = finish(proc)
    finally:
        holder.close()
    stdout = "".join(before_release) + result.stdout
    assert result.returncode == 0, stdout + result.stderr
    assert (
        "2_alter_t: line 2: lock not granted within 0.1s (55P03), rolled back; retry 1 of 8 in"
        in stdout
    ), stdout
    assert "Gave up" not in result.stderr, result.stderr
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [(1, "applied"), (2, "applied")]
    assert scalar(
        pg_server.admin_url(dbname),
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'c'",
    )


# ----- an SQL error is not retried ---------------------------------------------------------------


def assert_failed_without_retry(result: Result) -> None:
    assert result.returncode == 1, result.output
    assert "retry" not in result.output.lower(), result.output
    assert "Gave up" not in result.output, result.output


@pytest.mark.parametrize("mode", ["release", "migration"])
def test_a_syntax_error_is_not_retried(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    write_migrations(
        app,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);\n",
            "1_a.down.sql": "DROP TABLE a;\n",
            "2_b.up.sql": "CREATE TABLE b (id int\n",
        },
    )
    env = {"MIGRATE_TRANSACTION": mode, "MIGRATE_RETRIES": "5", "MIGRATE_LOCK_TIMEOUT": "1"}
    result = run_cli(["up"], cwd=app, database_url=database_url, env=env)
    assert_failed_without_retry(result)
    assert "2_b.up.sql: line 1: ERROR 42601" in result.stderr, result.stderr
    assert "a" not in tables(pg_server.admin_url(dbname))


def test_a_failed_concurrent_build_is_not_retried(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(
        app,
        {
            "1_dup.up.sql": "CREATE TABLE dup (x int);\nINSERT INTO dup VALUES (1), (1);\n",
            "1_dup.down.sql": "DROP TABLE dup;\n",
            "2_unique.up.sql": "CREATE UNIQUE INDEX CONCURRENTLY dup_x_key ON dup (x);\n",
        },
    )
    result = run_cli(["up"], cwd=app, database_url=database_url, env={"MIGRATE_RETRIES": "5"})
    assert_failed_without_retry(result)
    assert "2_unique.up.sql: line 1: ERROR 23505" in result.stderr, result.stderr
    assert "reverted 1_dup" in result.stderr, result.stderr


# ----- the next run cleans up an INVALID index ---------------------------------------------------


def invalid_index_names(server: Server, dbname: str) -> list[str]:
    """The INVALID indexes of the database."""
    found = rows(
        server.admin_url(dbname),
        "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1",
    )
    return [str(r[0]) for r in found]


def test_an_invalid_index_holding_the_name_is_dropped_and_built_again(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """An INVALID index of the same name (a build that failed earlier, by hand or by an older
    release) does not stop the pending concurrent build: it is dropped, then built valid."""
    base = {"1_dup.up.sql": "CREATE TABLE dup (x int);\nINSERT INTO dup VALUES (1), (1), (2);\n"}
    assert up(app, base, database_url).returncode == 0
    with pg_server.admin_conn(dbname) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY dup_x_key ON dup (x)")
        conn.execute("DELETE FROM dup WHERE ctid = (SELECT max(ctid) FROM dup WHERE x = 1)")
    assert invalid_index_names(pg_server, dbname) == ["dup_x_key"]
    write_migrations(
        app, {"2_unique.up.sql": "CREATE UNIQUE INDEX CONCURRENTLY dup_x_key ON dup (x);\n"}
    )

    result = run_cli(["up"], cwd=app, database_url=database_url)

    assert result.returncode == 0, result.output
    assert (
        "Dropping INVALID index public.dup_x_key left by an earlier failed build" in result.output
    )
    assert invalid_index_names(pg_server, dbname) == []
    assert scalar(pg_server.admin_url(dbname), "SELECT to_regclass('dup_x_key') IS NOT NULL")
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [(1, "applied"), (2, "applied")]


def test_a_run_killed_during_a_concurrent_build_is_resumed_and_its_invalid_index_rebuilt(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """The state a dyno killed mid-build leaves: a `partial` row at the concurrent build and the
    INVALID index it had created. Made without timing: the build waits for the test's open
    write transaction on the table (after creating its INVALID catalog entry), the runner is
    killed with SIGKILL, and its orphaned backend is terminated."""
    base = {"1_t.up.sql": "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1), (2);\n"}
    assert up(app, base, database_url).returncode == 0
    write_migrations(
        app,
        {
            "2_index.up.sql": "CREATE TABLE before_index (id int);\n"
            "CREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n"
            "CREATE TABLE after_index (id int);\n",
            "3_after.up.sql": "CREATE TABLE after_all (id int);\n",
        },
    )
    writer = psycopg.connect(pg_server.admin_url(dbname))
    writer.execute("INSERT INTO t VALUES (3)")  # an open write transaction on t
    proc = spawn_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_LOCK_TIMEOUT": "600"}
    )
    try:

        def build_waiting() -> list[tuple[object, ...]]:
            return rows(
                pg_server.admin_url("postgres"),
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
                " AND wait_event_type = 'Lock' AND query LIKE 'CREATE INDEX CONCURRENTLY%%'",
                (dbname, APP_NAME),
            )

        wait_until(build_waiting, 60, "the concurrent build to wait for the open transaction")
        wait_until(
            lambda: invalid_index_names(pg_server, dbname) == ["t_id_idx"],
            60,
            "the build's INVALID catalog entry",
        )
        pid = build_waiting()[0][0]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        rows(pg_server.admin_url("postgres"), "SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: not build_waiting(), 60, "the orphaned backend to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        writer.rollback()
        writer.close()
    assert invalid_index_names(pg_server, dbname) == ["t_id_idx"]
    assert [(r[0], r[3], r[4]) for r in history(pg_server, dbname)] == [
        (1, "applied", None),
        (2, "partial", 1),
    ]

    result = run_cli(["up"], cwd=app, database_url=database_url)

    assert result.returncode == 0, result.output
    assert "Resuming 2_index: 1 statement(s) ran before an interrupted run" in result.output
    assert "Dropping INVALID index public.t_id_idx left by an earlier failed build" in result.output
    assert invalid_index_names(pg_server, dbname) == []
    assert scalar(pg_server.admin_url(dbname), "SELECT to_regclass('t_id_idx') IS NOT NULL")
    assert {"before_index", "after_index", "after_all"} <= set(tables(pg_server.admin_url(dbname)))
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [
        (1, "applied"),
        (2, "applied"),
        (3, "applied"),
    ]


# ----- down, force and adoption: what the history and golang-migrate's table say --------------


@pytest.mark.parametrize("mode", ["release", "migration"])
def test_a_failing_down_reverts_per_the_transaction_mode(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    """`down 2` where the older down fails: in one transaction nothing is reverted; one
    transaction per migration keeps the newer one reverted."""
    files = {
        "1_a.up.sql": "CREATE TABLE a (id int);\n",
        "1_a.down.sql": "DROP TABLE no_such_table;\n",
        "2_b.up.sql": "CREATE TABLE b (id int);\n",
        "2_b.down.sql": "DROP TABLE b;\n",
    }
    assert up(app, files, database_url).returncode == 0
    env = {"MIGRATE_TRANSACTION": mode}
    result = run_cli(["down", "2", "--yes"], cwd=app, database_url=database_url, env=env)
    assert result.returncode == 1, result.output
    assert "1_a.down.sql: line 1: ERROR 42P01" in result.stderr, result.stderr
    recorded = [r[0] for r in history(pg_server, dbname)]
    if mode == "release":
        assert "Reverted before the failure: none." in result.stderr, result.stderr
        assert "Still applied: 2_b, 1_a." in result.stderr, result.stderr
        assert recorded == [1, 2]
        assert {"a", "b"} <= set(tables(pg_server.admin_url(dbname)))
    else:
        assert "Reverted before the failure: 2_b." in result.stderr, result.stderr
        assert "Still applied: 1_a." in result.stderr, result.stderr
        assert recorded == [1]
        assert "b" not in tables(pg_server.admin_url(dbname))


GOLANG_MIGRATE_TABLE = (
    "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);"
    " ALTER TABLE schema_migrations OWNER TO hm_tester;"
)


def golang_migrate_version(server: Server, dbname: str) -> list[tuple[object, ...]]:
    """golang-migrate's record: [(version, dirty)]."""
    return rows(server.admin_url(dbname), "SELECT version, dirty FROM schema_migrations")


def test_adoption_is_logged_and_force_keeps_golang_migrates_table_in_step(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(
            (GOLANG_MIGRATE_TABLE + " INSERT INTO schema_migrations VALUES (1, false);").encode()
        )
    files = {f"{n}_t{n}.up.sql": f"CREATE TABLE t{n} (id int);\n" for n in (1, 2, 3)}
    files["1_t1.up.sql"] = "SELECT 1;\n"  # golang-migrate applied it already
    result = up(app, files, database_url)
    assert result.returncode == 0, result.output
    events = rows(
        pg_server.admin_url(dbname),
        "SELECT event, detail FROM heroku_migrate_history_log WHERE event = 'adopted'",
    )
    assert events == [("adopted", "1 migration(s) recorded by golang-migrate, up to 1")]
    assert golang_migrate_version(pg_server, dbname) == [(3, False)]

    forced = run_cli(["force", "2"], cwd=app, database_url=database_url)

    assert forced.returncode == 0, forced.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2]
    assert golang_migrate_version(pg_server, dbname) == [(2, False)]


def test_golang_migrate_version_0_counts_as_applied(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """golang-migrate writes -1 for "nothing applied"; 0 is a real version."""
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(
            (GOLANG_MIGRATE_TABLE + " INSERT INTO schema_migrations VALUES (0, false);").encode()
        )
    files = {"0_init.up.sql": "SELECT 1/0;\n", "1_t.up.sql": "CREATE TABLE t (id int);\n"}
    result = up(app, files, database_url)
    assert result.returncode == 0, result.output
    assert "Adopted 1 migration(s) already applied by golang-migrate" in result.stdout
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [(0, "applied"), (1, "applied")]


def test_a_first_release_starting_at_version_0_warns_of_nothing(
    database_url: str, app: Path
) -> None:
    files = {"0_init.up.sql": "CREATE TABLE i (id int);\n", "1_t.up.sql": "SELECT 1;\n"}
    result = up(app, files, database_url)
    assert result.returncode == 0, result.output
    assert result.stderr == "", result.stderr


@pytest.mark.parametrize("recorded", ["", " INSERT INTO schema_migrations VALUES (-1, false);"])
def test_golang_migrates_table_with_nothing_applied_adopts_nothing(
    pg_server: Server, dbname: str, database_url: str, app: Path, recorded: str
) -> None:
    """An empty table, or golang-migrate's -1 ("nothing applied"): every file runs."""
    with pg_server.admin_conn(dbname) as conn:
        conn.execute((GOLANG_MIGRATE_TABLE + recorded).encode())
    files = {"0_a.up.sql": "CREATE TABLE a (id int);\n", "1_b.up.sql": "CREATE TABLE b (id int);\n"}
    result = up(app, files, database_url)
    assert result.returncode == 0, result.output
    assert "Adopted" not in result.stdout, result.stdout
    assert {"a", "b"} <= set(tables(pg_server.admin_url(dbname)))
    assert golang_migrate_version(pg_server, dbname) == [(1, False)]


@pytest.mark.parametrize("mode", ["release", "migration"])
def test_a_migration_failing_after_its_concurrent_build_is_reverted_too(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    """The concurrent build committed on its own; the statement after it fails: compensation
    undoes exactly what ran of that migration (the index it built), then the earlier one."""
    assert up(app, {"0_base.up.sql": "CREATE TABLE base (id int);\n"}, database_url).returncode == 0
    write_migrations(
        app,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);\n",
            "1_a.down.sql": "DROP TABLE a;\n",
            "2_b.up.sql": "CREATE INDEX CONCURRENTLY base_id_idx ON base (id);\nSELECT 1/0;\n",
            "2_b.down.sql": "DROP INDEX IF EXISTS base_id_idx;\n",
        },
    )
    result = run_cli(["up"], cwd=app, database_url=database_url, env={"MIGRATE_TRANSACTION": mode})
    assert result.returncode == 1, result.output
    assert "2_b.up.sql: line 2: ERROR 22012" in result.stderr, result.stderr
    undone = "undid what ran of the half-applied 2_b: dropped index public.base_id_idx (line 1)"
    assert undone in result.stderr, result.stderr
    assert result.stderr.find(undone) < result.stderr.find("reverted 1_a"), result.stderr
    assert scalar(pg_server.admin_url(dbname), "SELECT to_regclass('base_id_idx') IS NULL")
    assert "a" not in tables(pg_server.admin_url(dbname))
    assert [r[0] for r in history(pg_server, dbname)] == [0]
