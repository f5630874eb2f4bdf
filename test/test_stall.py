"""The app never stalls long behind a migration: short, growing lock waits with retries, re-asserted
before every migration, none of our settings left on the session, concurrent index builds
exempt from lock_timeout. Real servers, real CLI runs, an app probe timing its queries.
"""

from __future__ import annotations

import io
import threading
import time
from typing import TYPE_CHECKING

import psycopg
import pytest

from herokumigrate.config import load_config
from herokumigrate.lockretry import LockRetryPolicy
from herokumigrate.migrator import Migrator
from herokumigrate.output import Output
from herokumigrate.session import Session, waits_only_for_snapshots
from herokumigrate.source import load_migrations
from support import Probe, finish, history, run_cli, scalar, snapshot, spawn_cli, write_migrations

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pgbouncer import PgBouncer
    from support import Server

# The promise: no app query waits more than 0.5 s behind the migration's lock request. This
# bound adds a generous margin for a loaded 2-core test machine (scheduling, the probe's own
# round trip); the measured figure is printed.
PROBE_BOUND_SECONDS = 0.5 + 0.4
# How long the "long transaction" of the app holds the table.
BLOCKER_SECONDS = 5.0


def _table_t(app: Path, database_url: str) -> None:
    write_migrations(
        app,
        {
            "1_t.up.sql": "CREATE TABLE t (id int PRIMARY KEY);\n"
            "INSERT INTO t SELECT generate_series(1, 1000);\n",
            "1_t.down.sql": "DROP TABLE t;\n",
        },
    )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output


def _hold_t(server: Server, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    """The app's long transaction: it read `t`, so it holds ACCESS SHARE on it."""
    conn = psycopg.connect(**dict(server.admin, dbname=dbname), autocommit=False)  # type: ignore[arg-type]
    conn.execute("SELECT count(*) FROM t").fetchone()
    return conn


def _release_against_blocker(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    env: dict[str, str] | None = None,
    *,
    command: tuple[str, ...] = ("up",),
    blocker_seconds: float = BLOCKER_SECONDS,
) -> tuple[int, str, float, float, int]:
    """Run `command` (`up`) while a long transaction holds `t` for `blocker_seconds` and the
    probe runs; returns (exit code, output, worst probe wait, elapsed, probe queries)."""
    holder = _hold_t(pg_server, dbname)
    probe = Probe(pg_server, dbname)
    probe.start()
    released = threading.Timer(blocker_seconds, holder.commit)
    try:
        t0 = time.monotonic()
        proc = spawn_cli(list(command), cwd=app, database_url=database_url, env=env)
        released.start()
        result = finish(proc, timeout=180)
        elapsed = time.monotonic() - t0
    finally:
        released.cancel()
        released.join()
        worst = probe.finish()
        holder.close()
    assert probe.errors == [], probe.errors[:3]
    return result.returncode, result.output, worst, elapsed, len(probe.waits)


@pytest.mark.slow
def test_app_query_waits_at_most_half_a_second_and_release_succeeds_after_blocker(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _table_t(app, database_url)
    write_migrations(app, {"2_alter_t.up.sql": "ALTER TABLE t ADD COLUMN c int;\n"})

    code, output, worst, elapsed, queries = _release_against_blocker(
        pg_server, dbname, database_url, app
    )
    print(
        f"[{pg_server.label}] default settings, blocker holds t for {BLOCKER_SECONDS:g}s: "
        f"worst app probe wait {worst:.3f}s over {queries} queries; release exit {code} "
        f"after {elapsed:.1f}s"
    )
    print(output)

    assert code == 0, output
    assert worst <= PROBE_BOUND_SECONDS, f"an app query waited {worst:.2f}s behind the migration"
    assert "2_alter_t: line 1: lock not granted within 0.1s (55P03)" in output, output
    assert "retry 1, " in output, output
    assert "of lock_retry_budget left" in output, output
    assert elapsed >= BLOCKER_SECONDS, "the release cannot have finished before the blocker did"
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2]
    assert scalar(
        pg_server.admin_url(dbname),
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'c'",
    )


@pytest.mark.slow
def test_lock_retry_budget_bounds_the_retries_and_nothing_changes(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _table_t(app, database_url)
    write_migrations(app, {"2_alter_t.up.sql": "ALTER TABLE t ADD COLUMN c int;\n"})
    before = snapshot(pg_server, dbname)

    code, output, worst, elapsed, _ = _release_against_blocker(
        pg_server, dbname, database_url, app, env={"MIGRATE_LOCK_RETRY_BUDGET": "2"}
    )
    print(f"budget 2 s: exit {code} after {elapsed:.1f}s, worst probe wait {worst:.3f}s")
    print(output)

    assert code == 1, output
    assert "Gave up after" in output, output
    assert "55P03" in output, output
    assert elapsed < BLOCKER_SECONDS, f"the budget did not stop the retries: {elapsed:.1f}s"
    assert worst <= PROBE_BOUND_SECONDS, f"an app query waited {worst:.2f}s"
    assert snapshot(pg_server, dbname) == before


@pytest.mark.slow
def test_lock_retries_and_the_final_error_name_the_statement_that_waited(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _table_t(app, database_url)
    # Sent in one round trip, the lock wait of line 3 is not placed by the server.
    write_migrations(
        app,
        {"2_two.up.sql": "CREATE TABLE other (id int);\n\nALTER TABLE t ADD COLUMN c int;\n"},
    )
    before = snapshot(pg_server, dbname)

    code, output, _, elapsed, _ = _release_against_blocker(
        pg_server, dbname, database_url, app, env={"MIGRATE_LOCK_RETRY_BUDGET": "2"}
    )
    print(f"exit {code} after {elapsed:.1f}s\n{output}")

    assert code == 1, output
    assert "2_two: line 3: lock not granted within" in output, output
    assert "2_two.up.sql: line 3: ERROR 55P03" in output, output
    assert "could not be pinpointed" not in output, output
    assert snapshot(pg_server, dbname) == before


def test_down_waits_for_its_lock_in_short_retries_like_up(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # The downs (`down`, `goto`, and compensation after a failed release) share one routine:
    # its ALTER queues for ACCESS EXCLUSIVE behind the app's transaction like an up's.
    _table_t(app, database_url)
    write_migrations(
        app,
        {
            "2_c.up.sql": "ALTER TABLE t ADD COLUMN c int;\n",
            "2_c.down.sql": "ALTER TABLE t DROP COLUMN c;\n",
        },
    )
    applied = run_cli(["up"], cwd=app, database_url=database_url)
    assert applied.returncode == 0, applied.output
    blocker = 2.0
    code, output, worst, elapsed, queries = _release_against_blocker(
        pg_server,
        dbname,
        database_url,
        app,
        command=("down", "1", "--yes"),
        blocker_seconds=blocker,
    )
    print(
        f"[{pg_server.label}] down, blocker holds t for {blocker:g}s: worst app probe wait "
        f"{worst:.3f}s over {queries} queries; exit {code} after {elapsed:.1f}s\n{output}"
    )
    assert code == 0, output
    assert "2_c: line 1: lock not granted within 0.1s (55P03)" in output, output
    assert "retry 1, " in output, output
    assert "reverted 2_c" in output, output
    assert worst <= PROBE_BOUND_SECONDS, f"an app query waited {worst:.2f}s behind the down"
    assert elapsed >= blocker, "the down cannot have finished before the blocker did"
    assert [r[0] for r in history(pg_server, dbname)] == [1]
    assert not scalar(
        pg_server.admin_url(dbname),
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'c'",
    )


@pytest.mark.slow
def test_a_migrations_set_lock_timeout_zero_does_not_disarm_the_next(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _table_t(app, database_url)
    write_migrations(
        app,
        {
            # pg_dump output starts like this; in the same transaction, it must not leave the
            # next migration waiting without limit.
            "2_dump.up.sql": "SET lock_timeout = 0;\nSET statement_timeout = 0;\n"
            "CREATE TABLE other (id int);\n",
            "3_reset.up.sql": "RESET ALL;\nCREATE TABLE other2 (id int);\n",
            "4_alter_t.up.sql": "ALTER TABLE t ADD COLUMN c int;\n",
        },
    )

    code, output, worst, elapsed, _ = _release_against_blocker(pg_server, dbname, database_url, app)
    print(
        f"after SET lock_timeout = 0: worst probe wait {worst:.3f}s, exit {code} in {elapsed:.1f}s"
    )
    print(output)

    assert code == 0, output
    # Sent together, the three migrations' first attempt cannot say which statement waited;
    # the retries send a statement at a time. Each waited no longer than its attempt allowed.
    assert (
        "2_dump: line 1 ... 4_alter_t (one round trip): lock not granted within 0.1s (55P03)"
        in output
    ), output
    assert "4_alter_t: line 1: lock not granted within 0.2s (55P03)" in output, output
    assert worst <= PROBE_BOUND_SECONDS, f"an app query waited {worst:.2f}s behind the migration"
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3, 4]


# Ways a migration can switch lock_timeout off for its own next statement (issue 20): the
# server cannot know, so the watchdog (lockwatch.py) holds the wait to lock_timeout.
ESCAPES = {
    "set": "SET lock_timeout = 0;",
    "reset-all": "RESET ALL;",
    "set-session": "SET SESSION lock_timeout = 0;",
    "set-config": "SELECT set_config('lock_timeout', '0', false);",
    "do-block": "DO $$ BEGIN PERFORM set_config('lock_timeout', '0', false); END $$;",
}


@pytest.mark.slow
@pytest.mark.parametrize("escape", list(ESCAPES), ids=list(ESCAPES))
def test_a_migration_cannot_switch_off_lock_timeout_for_itself(
    pg_server: Server, dbname: str, database_url: str, app: Path, escape: str
) -> None:
    _table_t(app, database_url)
    write_migrations(
        app, {"2_alter_t.up.sql": f"{ESCAPES[escape]}\nALTER TABLE t ADD COLUMN c int;\n"}
    )
    blocker = 3.0

    code, output, worst, elapsed, queries = _release_against_blocker(
        pg_server, dbname, database_url, app, blocker_seconds=blocker
    )
    print(
        f"[{pg_server.label}] {ESCAPES[escape]!r} then ALTER behind a {blocker:g}s blocker: "
        f"worst app probe wait {worst:.3f}s over {queries} queries; exit {code} after "
        f"{elapsed:.1f}s\n{output}"
    )

    assert code == 0, output
    assert worst <= PROBE_BOUND_SECONDS, f"an app query waited {worst:.2f}s behind the migration"
    assert "lock not granted within 0.1s (55P03)" in output, output
    assert elapsed >= blocker, "the release cannot have finished before the blocker did"
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2]


@pytest.mark.slow
def test_the_lock_watchdog_works_through_a_session_pooler(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    pgbouncer: Callable[..., PgBouncer],
) -> None:
    # Through PgBouncer the pid libpq knows is the pooler's, not our server session's.
    bouncer = pgbouncer("session")
    _table_t(app, database_url)
    write_migrations(
        app, {"2_alter_t.up.sql": f"{ESCAPES['set-config']}\nALTER TABLE t ADD COLUMN c int;\n"}
    )
    code, output, worst, _, _ = _release_against_blocker(
        pg_server, dbname, bouncer.url(dbname), app, blocker_seconds=3.0
    )
    print(f"[{pg_server.label}] through PgBouncer (session): worst app probe wait {worst:.3f}s")
    assert code == 0, output
    assert worst <= PROBE_BOUND_SECONDS, f"an app query waited {worst:.2f}s behind the migration"
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2]


def _snapshot_writer(server: Server, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(**dict(server.admin, dbname=dbname), autocommit=False)  # type: ignore[arg-type]
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    conn.execute("INSERT INTO t VALUES (-1)")
    return conn


def test_concurrent_index_build_waits_for_old_snapshots_without_lock_timeout(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _table_t(app, database_url)
    write_migrations(app, {"2_index.up.sql": "CREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n"})
    # The app's open transaction that wrote to t and keeps its snapshot: the build waits for
    # it (a lock wait on its transaction, then its snapshot), which blocks nobody.
    holder = _snapshot_writer(pg_server, dbname)
    released = threading.Timer(3.0, holder.rollback)
    try:
        t0 = time.monotonic()
        proc = spawn_cli(["up"], cwd=app, database_url=database_url)
        released.start()
        result = finish(proc, timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        released.cancel()
        released.join()
        holder.close()
    print(f"CIC behind a 3 s snapshot: exit {result.returncode} after {elapsed:.1f}s")
    print(result.output)

    assert result.returncode == 0, result.output
    assert "retry" not in result.output, "the concurrent build hit a lock_timeout"
    assert elapsed >= 2.5, f"the build did not wait for the old snapshot ({elapsed:.1f}s)"
    assert scalar(
        pg_server.admin_url(dbname),
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id_idx'::regclass",
    )


def test_statement_timeout_still_applies_to_a_concurrent_index_build(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _table_t(app, database_url)
    write_migrations(app, {"2_index.up.sql": "CREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n"})
    holder = _snapshot_writer(pg_server, dbname)
    try:
        result = run_cli(
            ["up"], cwd=app, database_url=database_url, env={"MIGRATE_STATEMENT_TIMEOUT": "1"}
        )
    finally:
        holder.rollback()
        holder.close()
    print(result.output)
    assert result.returncode == 1, result.output
    assert "57014" in result.output, result.output
    assert "2_index.up.sql" in result.output, result.output


class _KeptSession(Session):
    """A session whose connection stays open after the run, to inspect what it left."""

    kept: list[psycopg.Connection[tuple[object, ...]]] = []  # noqa: RUF012 -- test registry

    def close(self) -> None:
        self.release()
        _KeptSession.kept.append(self.conn)


@pytest.mark.parametrize("fails", [False, True])
def test_no_setting_of_ours_outlives_the_run_on_its_connection(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    *,
    monkeypatch: pytest.MonkeyPatch,
    fails: bool,
) -> None:
    _table_t(app, database_url)
    write_migrations(
        app,
        {
            "2_col.up.sql": "ALTER TABLE t ADD COLUMN c int;\n",
            "2_col.down.sql": "ALTER TABLE t DROP COLUMN c;\n",
            "3_index.up.sql": "CREATE UNIQUE INDEX CONCURRENTLY t_c_idx ON t (c);\n",
            "3_index.down.sql": "DROP INDEX CONCURRENTLY t_c_idx;\n",
            "4_fill.up.sql": ("UPDATE t SET c = 1;\n" if fails else "UPDATE t SET c = id;\n")
            + "CREATE UNIQUE INDEX CONCURRENTLY t_c2_idx ON t (c);\n",
            "4_fill.down.sql": "DROP INDEX CONCURRENTLY IF EXISTS t_c2_idx;\n",
        },
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    config = load_config(app, {"MIGRATE_LOCK_TIMEOUT": "0.3", "MIGRATE_STATEMENT_TIMEOUT": "60"})
    out = io.StringIO()
    migrator = Migrator(config, Output(out, out, color=False), open_session=_KeptSession.open)
    _KeptSession.kept.clear()
    migrations = load_migrations(config.migrations_dir, config.app_dir)
    try:
        migrator.up(migrations, dry_run=False)
        raised = None
    except Exception as exc:  # the failing case must fail
        raised = exc
    assert (raised is not None) == fails, out.getvalue()
    [conn] = _KeptSession.kept
    try:
        assert not conn.closed
        left = conn.execute(
            "SELECT name, setting, source FROM pg_settings WHERE source = 'session'"
        ).fetchall()
        assert left == [], f"session settings left by the run: {left}"
        for name in ("lock_timeout", "statement_timeout"):
            shown = scalar(conn, f"SHOW {name}")
            server_default = scalar(pg_server.admin_url(dbname), f"SHOW {name}")
            assert shown == server_default, (name, shown, server_default)
    finally:
        conn.close()


def test_lock_waits_grow_from_a_tenth_of_a_second_to_lock_timeout_within_a_budget() -> None:
    default = LockRetryPolicy(0.5, 120.0, None)
    assert [default.attempt_lock_timeout(a) for a in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    # An old configuration's lock_timeout = 5 stays the longest wait: reached step by step.
    old = LockRetryPolicy(5.0, 120.0, 5)
    assert [round(old.attempt_lock_timeout(a), 2) for a in range(8)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        5.0,
        5.0,
    ]
    assert LockRetryPolicy(0.0, 120.0, None).attempt_lock_timeout(3) == 0.0  # 0: no limit
    middle = [default.pause(r, rng=lambda low, high: 1.0) for r in range(1, 7)]
    assert middle == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert default.pause(1, rng=lambda low, high: low) == 0.1
    assert default.pause(9, rng=lambda low, high: high) == 3.0
    assert default.may_retry(40, started=0.0, pause=2.0, now=100.0)
    assert not default.may_retry(41, started=0.0, pause=2.0, now=119.0)
    assert old.may_retry(5, started=0.0, pause=0.1, now=1.0)
    assert not old.may_retry(6, started=0.0, pause=0.1, now=1.0)


@pytest.mark.parametrize(
    ("statement", "exempt"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (id);", True),
        ("create unique index concurrently if not exists i on t (id);", True),
        ("DROP INDEX CONCURRENTLY i;", True),
        ("REINDEX (VERBOSE) INDEX CONCURRENTLY i;", True),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY;", True),
        ("ALTER TABLE t ADD COLUMN c int /* added concurrently with the app */;", False),
        ("ALTER TABLE t ADD COLUMN c int; -- concurrently", False),
        ("INSERT INTO notes VALUES ('concurrently');", False),
        ('CREATE INDEX "concurrently" ON t (id);', False),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv;", False),  # blocks writes while it waits
    ],
)
def test_only_the_concurrently_keyword_exempts_a_statement_from_lock_timeout(
    statement: str, exempt: bool
) -> None:
    assert waits_only_for_snapshots(statement) is exempt


def test_a_comment_saying_concurrently_does_not_lift_the_lock_timeout(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # Outside a transaction (dbmate transaction:false), an ALTER whose comment says
    # "concurrently" used to run without lock_timeout, and the app queued behind it.
    _table_t(app, database_url)
    write_migrations(
        app,
        {
            "2_c.sql": "-- migrate:up transaction:false\n"
            "ALTER TABLE t ADD COLUMN c int /* added concurrently with the app */;\n"
            "-- migrate:down\nALTER TABLE t DROP COLUMN c;\n"
        },
    )
    code, output, worst, _, _ = _release_against_blocker(
        pg_server, dbname, database_url, app, blocker_seconds=2.0
    )
    print(f"[{pg_server.label}] worst app probe wait {worst:.3f}s\n{output}")
    assert code == 0, output
    assert "2_c: line 2: lock not granted within 0.1s (55P03)" in output, output
    assert worst <= PROBE_BOUND_SECONDS, f"an app query waited {worst:.2f}s behind the migration"
