"""Concurrency on a real PostgreSQL: runners racing each other, table locks held by the app,
and the migration lock held by someone else.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from herokumigrate.lock import lock_key
from support import (
    SLACK_SECONDS,
    Probe,
    Server,
    finish,
    history,
    read_until,
    run_cli,
    runner_in_pg_sleep,
    scalar,
    snapshot,
    spawn_cli,
    wait_until,
    write_migrations,
)

pytestmark = pytest.mark.db


# ----- 5. runners started at once -------------------------------------------------------------

RACE_MIGRATIONS = 30


def race_files() -> dict[str, str]:
    """30 migrations; each creates a table and counts itself in `applied_counter`."""
    files = {
        "1_counter.up.sql": (
            "CREATE TABLE applied_counter (version bigint NOT NULL);\n"
            "INSERT INTO applied_counter VALUES (1);\n"
        ),
        "1_counter.down.sql": "DROP TABLE applied_counter;\n",
    }
    for v in range(2, RACE_MIGRATIONS + 1):
        files[f"{v}_race_{v:02d}.up.sql"] = (
            f"CREATE TABLE race_{v:02d} (id serial PRIMARY KEY, note text);\n"
            f"INSERT INTO race_{v:02d} (note) VALUES ('once');\n"
            f"INSERT INTO applied_counter VALUES ({v});\n"
        )
        files[f"{v}_race_{v:02d}.down.sql"] = f"DROP TABLE race_{v:02d};\n"
    return files


@pytest.mark.parametrize("runners", [4, 8])
def test_runners_started_at_once_apply_each_migration_exactly_once(
    pg_server: Server, dbname: str, database_url: str, app: Path, runners: int
) -> None:
    write_migrations(app, race_files())
    procs = [spawn_cli(["up"], cwd=app, database_url=database_url) for _ in range(runners)]
    results = [finish(p) for p in procs]

    for r in results:
        assert r.returncode == 0, r.output
    recorded = history(pg_server, dbname)
    assert [r[0] for r in recorded] == list(range(1, RACE_MIGRATIONS + 1))
    assert all(r[3] == "applied" for r in recorded)
    with pg_server.admin_conn(dbname) as conn:
        counts = dict(
            conn.execute(
                "SELECT version, count(*) FROM applied_counter GROUP BY version"
            ).fetchall()  # type: ignore[arg-type]
        )
    assert counts == dict.fromkeys(range(1, RACE_MIGRATIONS + 1), 1), counts
    tables = scalar(
        pg_server.admin_url(dbname),
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^race_'",
    )
    assert tables == RACE_MIGRATIONS - 1
    for v in (2, RACE_MIGRATIONS):
        assert scalar(pg_server.admin_url(dbname), f"SELECT count(*) FROM race_{v:02d}") == 1
    applied_by = [r for r in results if "Applied 30 migration(s)" in r.stdout]
    assert len(applied_by) == 1, [r.stdout for r in results]


# ----- 6. lock contention on a table the app is using -----------------------------------------

LOCK_TIMEOUT = 1.0


def contention_app(app: Path, database_url: str, pg_server: Server, dbname: str) -> None:
    write_migrations(
        app,
        {
            "1_t.up.sql": (
                "CREATE TABLE t (id int PRIMARY KEY);\n"
                "INSERT INTO t SELECT generate_series(1, 1000);\n"
            ),
            "1_t.down.sql": "DROP TABLE t;\n",
        },
    )
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    write_migrations(
        app,
        {
            "2_other.up.sql": "CREATE TABLE other (id int);\n",
            "2_other.down.sql": "DROP TABLE other;\n",
            "3_alter_t.up.sql": "-- needs ACCESS EXCLUSIVE on t\nALTER TABLE t ADD COLUMN c int;\n",
            "3_alter_t.down.sql": "ALTER TABLE t DROP COLUMN c;\n",
        },
    )


def hold_table_lock(server: Server, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    """A session with an open transaction that read `t`: it holds ACCESS SHARE on it."""
    conn = psycopg.connect(**dict(server.admin, dbname=dbname), autocommit=False)  # type: ignore[arg-type]
    conn.execute("SET application_name = 'app-long-transaction'")
    conn.execute("SELECT count(*) FROM t").fetchone()
    return conn


@pytest.mark.slow
def test_lock_contention_gives_up_after_retries_without_blocking_app_traffic(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    contention_app(app, database_url, pg_server, dbname)
    before = snapshot(pg_server, dbname)
    holder = hold_table_lock(pg_server, dbname)
    probe = Probe(pg_server, dbname, interval=0.02)
    probe.start()
    try:
        t0 = time.monotonic()
        result = run_cli(
            ["up"],
            cwd=app,
            database_url=database_url,
            env={"MIGRATE_LOCK_TIMEOUT": "1", "MIGRATE_RETRIES": "2"},
        )
        elapsed = time.monotonic() - t0
    finally:
        worst = probe.finish()
        holder.rollback()
        holder.close()
    print(f"lock contention (holder never lets go): probe worst wait {worst:.3f}s,")
    print(f"  {len(probe.waits)} probe queries, runner gave up after {elapsed:.1f}s")
    print(result.output)

    assert result.returncode == 1, result.output
    assert probe.errors == [], probe.errors[:3]
    assert worst < LOCK_TIMEOUT + SLACK_SECONDS, f"the app's query waited {worst:.2f}s"
    # Three attempts, in order: two retries, then the run gives up.
    events = ["retry 1 of 2", "retry 2 of 2", "Gave up after 2 retries", "3_alter_t.up.sql"]
    at = [result.output.find(event) for event in events]  # retries on stdout, then stderr
    assert -1 not in at, result.output
    assert at == sorted(at), result.output
    assert "retry 3" not in result.output, result.output
    assert "55P03" in result.output, result.output
    # 3 attempts waiting 0.1, 0.2 and 0.4 s (growing up to lock_timeout) plus at most
    # 0.3 + 0.6 s of pauses: a lower bound load cannot break; the upper one only catches a hang.
    assert elapsed >= 0.1 + 0.2 + 0.4, f"did not wait lock_timeout per attempt: {elapsed:.1f}s"
    assert elapsed < 3 * LOCK_TIMEOUT + 2.25 + SLACK_SECONDS, f"took {elapsed:.1f}s"
    assert snapshot(pg_server, dbname) == before


@pytest.mark.slow
def test_lock_contention_succeeds_when_holder_lets_go_during_retries(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    contention_app(app, database_url, pg_server, dbname)
    holder = hold_table_lock(pg_server, dbname)
    probe = Probe(pg_server, dbname, interval=0.02)
    probe.start()
    try:
        t0 = time.monotonic()
        proc = spawn_cli(
            ["up"],
            cwd=app,
            database_url=database_url,
            env={"MIGRATE_LOCK_TIMEOUT": "1"},  # retried within lock_retry_budget
        )
        try:
            # The holder lets go once the first attempt has timed out, whatever that took.
            first = read_until(proc, "retry 1, ", 60, stream="stdout")
        finally:
            holder.rollback()
        result = finish(proc)
        elapsed = time.monotonic() - t0
    finally:
        worst = probe.finish()
        holder.close()
    result.stdout = "".join(first) + result.stdout
    print(f"lock contention (holder lets go at the first retry): probe worst wait {worst:.3f}s,")
    print(f"  {len(probe.waits)} probe queries, runner finished after {elapsed:.1f}s")
    print(result.output)

    assert result.returncode == 0, result.output
    assert probe.errors == [], probe.errors[:3]
    assert worst < LOCK_TIMEOUT + SLACK_SECONDS, f"the app's query waited {worst:.2f}s"
    assert "retry 1, " in result.output, result.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3]
    assert scalar(
        pg_server.admin_url(dbname),
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'c'",
    )


# ----- 10. the migration lock held by another session -----------------------------------------


def hold_migration_lock(server: Server, dbname: str) -> tuple[psycopg.Connection, int]:  # type: ignore[type-arg]
    conn = server.admin_conn(dbname)
    conn.execute("SET application_name = 'laptop-migrate'")
    conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(sql.Literal(lock_key(dbname))))
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert pid is not None
    return conn, int(pid[0])  # type: ignore[call-overload]


def test_lock_wait_timeout_exits_3_naming_the_holder(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, race_files())
    holder, pid = hold_migration_lock(pg_server, dbname)
    try:
        before = snapshot(pg_server, dbname)
        t0 = time.monotonic()
        result = run_cli(["up"], cwd=app, database_url=database_url, env={"MIGRATE_LOCK_WAIT": "2"})
        elapsed = time.monotonic() - t0
    finally:
        holder.close()
    print(f"lock wait 2 s: exit {result.returncode} after {elapsed:.1f}s\n{result.output}")

    assert result.returncode == 3, result.output
    assert 2.0 <= elapsed < 2.0 + SLACK_SECONDS, f"took {elapsed:.1f}s"
    errors = [line for line in result.stderr.splitlines() if line.startswith(" !")]
    assert errors, result.output
    assert str(pid) in errors[0], errors[0]
    assert "laptop-migrate" in errors[0], errors[0]
    assert "None" not in errors[0], f"a value the role may not see is printed as None: {errors[0]}"
    assert "MIGRATE_LOCK_WAIT" in result.stderr, result.output
    assert "waiting" in result.output.lower(), f"no progress while waiting:\n{result.output}"
    assert snapshot(pg_server, dbname) == before


def test_the_holder_named_is_in_our_database_not_a_run_on_another(
    pg_server: Server, dbname: str, database_url: str, app: Path, tmp_path: Path
) -> None:
    """Advisory locks belong to a database. A run on another database of the same server (a
    staging app's, a review app's) may hold the same keys (the tools' constant ones, goose's)
    and have started earlier: the lock error must still name the session that holds ours."""
    other_db = pg_server.create_database()
    other_app = tmp_path / "other"
    write_migrations(other_app, {"1_slow.up.sql": "SELECT pg_sleep(60);\n"})
    other = spawn_cli(["up"], cwd=other_app, database_url=pg_server.url(other_db))
    try:
        wait_until(lambda: runner_in_pg_sleep(pg_server, other_db), 60, "the other run's sleep")
        write_migrations(app, race_files())
        holder, pid = hold_migration_lock(pg_server, dbname)
        try:
            result = run_cli(
                ["up"], cwd=app, database_url=database_url, env={"MIGRATE_LOCK_WAIT": "1"}
            )
        finally:
            holder.close()
    finally:
        other.kill()
        other.communicate()
        pg_server.drop_database_soon(other_db)
    print(result.output)
    assert result.returncode == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith(" !")]
    assert errors, result.output
    assert f"held by backend pid {pid} (laptop-migrate)" in errors[0], errors[0]


def test_lock_released_while_waiting_lets_the_run_proceed(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, race_files())
    holder, pid = hold_migration_lock(pg_server, dbname)
    try:
        proc = spawn_cli(
            ["up"], cwd=app, database_url=database_url, env={"MIGRATE_LOCK_WAIT": "600"}
        )
        try:
            # The holder lets go once the runner says it waits, however long start-up took.
            waiting = read_until(proc, "Waiting for the migration lock", 120, stream="stdout")
            # It started waiting before it said so: after 1 s more it has waited over 1 s,
            # long enough to report "acquired after".
            time.sleep(1.0)
        finally:
            holder.close()
        result = finish(proc)
    finally:
        holder.close()
    result.stdout = "".join(waiting) + result.stdout

    assert result.returncode == 0, result.output
    assert str(pid) in result.output, f"progress does not name the holder:\n{result.output}"
    assert "acquired" in result.output, result.output
    assert len(history(pg_server, dbname)) == RACE_MIGRATIONS
