"""Recovery on a real PostgreSQL: our bookkeeping survives what migrations do to the session and
to our tables, a failed run is undone exactly, and what the report claims is checked.

"Unchanged" means `pg_dump --schema-only` and the history rows equal a snapshot taken before
the run. Every CLI run goes through `run_cli`/`finish` (no password, no traceback printed).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from support import (
    Result,
    Server,
    concurrent_builds_waiting,
    finish,
    history,
    rows,
    run_cli,
    scalar,
    snapshot,
    spawn_cli,
    tables,
    up,
    wait_until,
    write_migrations,
)

pytestmark = pytest.mark.db

MIGRATION = {"MIGRATE_TRANSACTION": "migration"}


# ----- helpers ----------------------------------------------------------------------------------


def errors(result: Result) -> str:
    """The ` !     ` lines of a run, joined."""
    return "\n".join(line for line in result.stderr.splitlines() if line.startswith(" !"))


def golang_migrate_database(server: Server, dbname: str, version: int, setup_sql: str) -> None:
    """A database golang-migrate migrated up to `version`: its schema and its one-row table."""
    with server.admin_conn(dbname) as conn:
        conn.execute(setup_sql.encode())
        conn.execute(
            "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY,"
            " dirty boolean NOT NULL)"
        )
        conn.execute("INSERT INTO schema_migrations VALUES (%s, false)", (version,))
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO hm_tester")
        conn.execute("ALTER TABLE schema_migrations OWNER TO hm_tester")


def native_rows(server: Server, dbname: str) -> list[tuple[object, ...]]:
    """golang-migrate's rows."""
    return rows(server.admin_url(dbname), "SELECT version, dirty FROM schema_migrations")


def invalid_indexes(server: Server, dbname: str) -> list[tuple[object, ...]]:
    """Indexes left INVALID by a failed or killed concurrent build."""
    return rows(
        server.admin_url(dbname),
        "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid",
    )


def our_tables(server: Server, dbname: str) -> list[str]:
    """heroku-migrate's tables in `public`."""
    return [t for t in tables(server.admin_url(dbname)) if t.startswith("heroku_migrate")]


DUPLICATES = {
    "2_dup.up.sql": (
        "CREATE TABLE dup (id int PRIMARY KEY, v int NOT NULL);\n"
        "INSERT INTO dup SELECT g, g % 10 FROM generate_series(1, 100) g;\n"
    ),
    "2_dup.down.sql": "DROP TABLE dup;\n",
}
# Fails on duplicate values after the index build before it committed.
HALF_APPLIED = (
    "CREATE INDEX CONCURRENTLY dup_id_idx ON dup (id);\n"
    "CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v);\n"
)


# ----- 1. a migration's search_path cannot break our bookkeeping --------------------------------


@pytest.mark.parametrize("mode", ["release", "migration"])
@pytest.mark.parametrize(
    "change",
    [
        "SELECT set_config('search_path', '', false);",
        "CREATE SCHEMA other;\nSET search_path = other;",
    ],
    ids=["empty", "other_schema"],
)
def test_migration_changing_search_path_does_not_break_bookkeeping(
    pg_server: Server, dbname: str, database_url: str, app: Path, *, mode: str, change: str
) -> None:
    """Adopted from golang-migrate, so the native table is synced after each migration."""
    golang_migrate_database(pg_server, dbname, 1, "CREATE TABLE a (id int);")
    files = {
        "1_a.up.sql": "CREATE TABLE a (id int);\n",
        "2_path.up.sql": change + "\n",
        "2_path.down.sql": "SELECT 1;\n",
        "3_b.up.sql": "CREATE TABLE public.b (id int);\n",
        "3_b.down.sql": "DROP TABLE public.b;\n",
    }

    result = up(app, files, database_url, env={"MIGRATE_TRANSACTION": mode})

    assert result.returncode == 0, result.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3]
    assert native_rows(pg_server, dbname) == [(3, False)]
    assert "b" in tables(pg_server.admin_url(dbname))


@pytest.mark.parametrize("mode", ["release", "migration"])
def test_after_search_path_emptied_a_failing_migration_is_named_and_undone(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    golang_migrate_database(pg_server, dbname, 1, "CREATE TABLE a (id int);")
    before = snapshot(pg_server, dbname)
    files = {
        "1_a.up.sql": "CREATE TABLE a (id int);\n",
        "2_path.up.sql": "CREATE TABLE public.p (id int);\n"
        "SELECT set_config('search_path', '', false);\n",
        "2_path.down.sql": "DROP TABLE p;\n",  # unqualified: compensation resets search_path
        "3_b.up.sql": "CREATE TABLE b (id int);\n",  # no schema to create in
    }

    result = up(app, files, database_url, env={"MIGRATE_TRANSACTION": mode})

    assert result.returncode == 1, result.output
    assert "3_b.up.sql: line 1" in errors(result), result.output
    assert "3F000" in errors(result), result.output
    assert "does not exist" not in result.output, result.output
    assert snapshot(pg_server, dbname) == before
    assert native_rows(pg_server, dbname) == [(1, False)]
    if mode == "migration":
        assert "reverted 2_path" in result.stderr, result.output
        assert "the schema is as before the run" in result.stderr, result.output


# ----- 2. an error in our own bookkeeping: same path as a failing statement ----------------------

RAISING_TRIGGER = (
    "CREATE FUNCTION refuse_history() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  RAISE EXCEPTION 'history write refused for %', NEW.version;\n"
    "END\n"
    "$$;\n"
    "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON heroku_migrate_history\n"
    "  FOR EACH ROW WHEN (NEW.version = 12) EXECUTE FUNCTION refuse_history();\n"
)


def baseline(app: Path, database_url: str) -> None:
    """A history to start from, so that creating our tables is not part of the comparison."""
    result = up(
        app,
        {"1_base.up.sql": "CREATE TABLE base (id int);\n", "1_base.down.sql": "DROP TABLE base;\n"},
        database_url,
    )
    assert result.returncode == 0, result.output


def test_trigger_on_our_history_fails_release_naming_the_migration(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    files = {
        "11_trigger.up.sql": RAISING_TRIGGER,
        "12_next.up.sql": "CREATE TABLE next (id int);\n",
    }

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "12_next.up.sql: recording its history row failed: ERROR P0001" in text, text
    assert "history write refused for 12" in text, text
    assert "rolled back" in text, text
    assert snapshot(pg_server, dbname) == before


def test_trigger_on_our_history_in_migration_mode_is_compensated(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    files = {
        "10_first.up.sql": "CREATE TABLE first (id int);\n",
        "10_first.down.sql": "DROP TABLE first;\n",
        "11_trigger.up.sql": RAISING_TRIGGER,
        "11_trigger.down.sql": "DROP TRIGGER refuse ON heroku_migrate_history;\n"
        "DROP FUNCTION refuse_history();\n",
        "12_next.up.sql": "CREATE TABLE next (id int);\n",
    }

    result = up(app, files, database_url, env=MIGRATION)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "12_next.up.sql: recording its history row failed" in text, text
    assert text.index("reverted 11_trigger") < text.index("reverted 10_first"), text
    assert "the schema is as before the run" in text, text
    assert snapshot(pg_server, dbname) == before


def test_revoked_history_table_fails_release_naming_the_migration(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    files = {"5_revoke.up.sql": "REVOKE INSERT ON heroku_migrate_history FROM CURRENT_USER;\n"}

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "5_revoke.up.sql: recording its history row failed: ERROR 42501" in text, text
    assert "internal error" not in result.output
    assert snapshot(pg_server, dbname) == before


def test_bookkeeping_error_after_a_concurrent_build_is_compensated(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """The partial row written after the concurrent statement fails: the index that statement
    built is dropped, the migration before it reverted."""
    baseline(app, database_url)
    write_migrations(app, DUPLICATES)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    before = snapshot(pg_server, dbname)
    trigger = RAISING_TRIGGER.replace("NEW.version = 12", "NEW.progress = 2")
    files = {
        "10_trigger.up.sql": trigger,
        "10_trigger.down.sql": "DROP TRIGGER refuse ON heroku_migrate_history;\n"
        "DROP FUNCTION refuse_history();\n",
        "11_index.up.sql": "CREATE TABLE side (id int);\n" + HALF_APPLIED,
        "11_index.down.sql": "DROP INDEX CONCURRENTLY IF EXISTS dup_id_idx;\nDROP TABLE side;\n",
    }

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "11_index.up.sql: recording its partial history row failed" in text, text
    assert "reverted 11_index" in text, text
    assert "the schema is as before the run" in text, text
    assert snapshot(pg_server, dbname) == before


# ----- 3. a half-applied migration: undo exactly what ran ---------------------------------------


@pytest.mark.parametrize("mode", ["release", "migration"])
def test_half_applied_migration_drops_exactly_the_indexes_it_built(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    write_migrations(app, DUPLICATES)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    before = snapshot(pg_server, dbname)
    files = {
        "10_before.up.sql": "CREATE TABLE before_idx (id int);\n",
        "10_before.down.sql": "DROP TABLE before_idx;\n",
        "11_indexes.up.sql": HALF_APPLIED,
        # Its full down fails on the index that was never built.
        "11_indexes.down.sql": "DROP INDEX CONCURRENTLY dup_v_key;\n"
        "DROP INDEX CONCURRENTLY dup_id_idx;\n",
    }

    result = up(app, files, database_url, env={"MIGRATE_TRANSACTION": mode})

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "11_indexes.up.sql: line 2: ERROR 23505" in text, text
    undid = "undid what ran of the half-applied 11_indexes: dropped index public.dup_id_idx"
    assert undid + " (line 1)" in text, text
    assert "reverted 10_before" in text, text
    assert "the schema is as before the run" in text, text
    assert "does not exist" not in text, text
    assert invalid_indexes(pg_server, dbname) == []
    assert snapshot(pg_server, dbname) == before


def test_half_applied_migration_with_other_statements_runs_its_down(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, DUPLICATES)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    before = snapshot(pg_server, dbname)
    files = {
        "11_mixed.up.sql": "CREATE TABLE side (id int);\n" + HALF_APPLIED,
        "11_mixed.down.sql": "DROP INDEX CONCURRENTLY IF EXISTS dup_id_idx;\nDROP TABLE side;\n",
    }

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    assert "reverted 11_mixed" in result.stderr, result.output
    assert "the schema is as before the run" in result.stderr, result.output
    assert snapshot(pg_server, dbname) == before


def test_half_applied_migration_whose_down_fails_claims_nothing(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, DUPLICATES)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    files = {
        "11_mixed.up.sql": "CREATE TABLE side (id int);\n" + HALF_APPLIED,
        "11_mixed.down.sql": "DROP INDEX CONCURRENTLY dup_v_key;\nDROP TABLE side;\n",
    }

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "down of 11_mixed failed: 11_mixed.down.sql: line 1: ERROR 42704" in text, text
    assert "STATE LEFT: still applied (possibly partly) from this run: 11_mixed" in text, text
    assert "table public.side" in text, text  # what the run left, from the snapshot
    assert "as before" not in result.output
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [(2, "applied"), (11, "partial")]


def test_failing_first_concurrent_statement_leaves_no_invalid_index(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """Nothing was committed, but the failed build left an INVALID index: it is dropped, and
    only then is the schema said to be as before."""
    write_migrations(app, DUPLICATES)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    before = snapshot(pg_server, dbname)
    files = {"11_unique.up.sql": "CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v);\n"}

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "dropped INVALID index public.dup_v_key left by the failed build" in text, text
    assert "Nothing remains: the schema is as before the run" in text, text
    assert "unchanged" not in text, text
    assert invalid_indexes(pg_server, dbname) == []
    assert snapshot(pg_server, dbname) == before


def test_a_valid_index_of_the_same_name_is_not_taken_for_a_finished_build(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """Only a resumed run may skip a concurrent build whose index is there and valid (it finished
    before the kill). On a fresh run, an index of the same name from an unrelated earlier
    migration does not make the build "done": the statement runs, and fails as PostgreSQL
    says."""
    write_migrations(app, DUPLICATES)
    write_migrations(app, {"3_old.up.sql": "CREATE INDEX dup_id_idx ON dup (v);\n"})
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    before = snapshot(pg_server, dbname)

    result = up(
        app,
        {"11_build.up.sql": "CREATE INDEX CONCURRENTLY dup_id_idx ON dup (id);\n"},
        database_url,
    )

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "11_build.up.sql: line 1: ERROR 42P07" in text, text
    assert 'relation "dup_id_idx" already exists' in text, text
    assert "built before the interruption" not in result.output, result.output
    assert snapshot(pg_server, dbname) == before


def test_exact_undo_keeps_an_index_that_existed_before_the_run(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """`CREATE INDEX CONCURRENTLY IF NOT EXISTS` on an index an earlier release built does
    nothing; when a later statement of the migration fails, the undo of what ran must keep that
    index: it is not this run's."""
    write_migrations(app, DUPLICATES)
    write_migrations(app, {"3_old.up.sql": "CREATE INDEX dup_id_idx ON dup (id);\n"})
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    before = snapshot(pg_server, dbname)
    files = {
        "11_indexes.up.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS dup_id_idx ON dup (id);\n"
        "CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v);\n",
        "11_indexes.down.sql": "DROP INDEX CONCURRENTLY dup_v_key;\n"
        "DROP INDEX CONCURRENTLY dup_id_idx;\n",
    }

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "11_indexes.up.sql: line 2: ERROR 23505" in text, text
    assert "undid what ran of the half-applied 11_indexes: nothing of it needed undoing" in text
    assert "dropped index public.dup_id_idx" not in text, text
    assert "the schema is as before the run" in text, text
    assert "public.dup_id_idx" in [
        str(r[0])
        for r in rows(pg_server.admin_url(dbname), "SELECT 'public.' || indexname FROM pg_indexes")
    ], "the index built before the run was dropped"
    assert snapshot(pg_server, dbname) == before


def test_the_build_that_finished_before_its_progress_was_recorded_is_undone(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """The exact boundary: the concurrent build completed, then writing its progress failed
    (as when the connection is lost right after it, before the next statement starts). The
    history still says "statement 1 in flight"; the build was in flight and finished, so its
    index is this run's and is dropped."""
    write_migrations(app, DUPLICATES)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(
            RAISING_TRIGGER.replace("NEW.version = 12", "NEW.version = 11 AND NEW.progress = 1")
        )
    before = snapshot(pg_server, dbname)
    files = {
        "11_indexes.up.sql": "CREATE INDEX CONCURRENTLY dup_id_idx ON dup (id);\n"
        "CREATE INDEX CONCURRENTLY dup_v_idx ON dup (v);\n",
        "11_indexes.down.sql": "DROP INDEX CONCURRENTLY dup_v_idx;\n"
        "DROP INDEX CONCURRENTLY dup_id_idx;\n",
    }

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "history write refused for 11" in text, text
    undid = "undid what ran of the half-applied 11_indexes: dropped index public.dup_id_idx"
    assert undid + " (line 1)" in text, text
    assert "the schema is as before the run" in text, text
    assert snapshot(pg_server, dbname) == before


def test_compensation_drops_only_the_invalid_indexes_of_its_own_run(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """An INVALID index that was there before the run (someone's failed build) is not ours to
    drop: only the one this release's failed build left is dropped and reported."""
    write_migrations(app, DUPLICATES)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    with pg_server.admin_conn(dbname) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY someones_key ON dup (v)")
    assert invalid_indexes(pg_server, dbname) == [("someones_key",)]
    before = snapshot(pg_server, dbname)
    files = {"11_unique.up.sql": "CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v);\n"}

    result = up(app, files, database_url)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "dropped INVALID index public.dup_v_key left by the failed build" in text, text
    assert "someones_key" not in text, text
    assert invalid_indexes(pg_server, dbname) == [("someones_key",)]
    assert snapshot(pg_server, dbname) == before


# ----- 4. no stale partial row after a successful recovery --------------------------------------


@pytest.mark.slow
def test_connection_lost_during_first_concurrent_statement_leaves_no_partial_row(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """The in-flight mark of the migration's first statement is committed before the
    statement runs; a lost connection must not leave it behind once all is undone."""
    write_migrations(app, DUPLICATES)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    before = snapshot(pg_server, dbname)
    write_migrations(
        app,
        {
            "10_first.up.sql": "CREATE TABLE first (id int);\n",
            "10_first.down.sql": "DROP TABLE first;\n",
            "11_index.up.sql": "CREATE INDEX CONCURRENTLY dup_id_idx ON dup (id);\n",
            "11_index.down.sql": "DROP INDEX CONCURRENTLY dup_id_idx;\n",
        },
    )
    admin = pg_server.admin_url("postgres")
    blocker = pg_server.admin_conn(dbname)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE dup IN SHARE UPDATE EXCLUSIVE MODE")
    proc: subprocess.Popen[str] | None = spawn_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_LOCK_TIMEOUT": "600"}
    )
    try:
        wait_until(
            lambda: concurrent_builds_waiting(pg_server, dbname),
            60,
            "the concurrent build to wait for its lock",
        )
        waiting = concurrent_builds_waiting(pg_server, dbname)
        assert [(r[0], r[3], r[4]) for r in history(pg_server, dbname)][-1] == (
            11,
            "partial",
            0,
        ), "expected the in-flight mark"
        rows(admin, "SELECT pg_terminate_backend(%s)", (waiting[0][0],))
        blocker.execute("ROLLBACK")
        assert proc is not None
        result = finish(proc, timeout=120)
        proc = None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        blocker.close()

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "undid what ran of the half-applied 11_index" in text, text
    assert "reverted 10_first" in text, text
    assert "the schema is as before the run" in text, text
    assert snapshot(pg_server, dbname) == before  # no partial row of 11 left
    status = run_cli(["status"], cwd=app, database_url=database_url)
    assert "partial" not in status.stdout, status.output
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0, again.output
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [
        (2, "applied"),
        (10, "applied"),
        (11, "applied"),
    ]


# ----- 5. a failed first release leaves no table of ours ----------------------------------------


@pytest.mark.parametrize(
    ("mode", "first"),
    [
        ("migration", "CREATE TABLE a (id int);\n"),
        ("release", "CREATE INDEX CONCURRENTLY a_idx ON pg_class_copy (oid);\n"),
    ],
    ids=["migration_mode", "concurrent_first_statement"],
)
def test_failed_first_release_leaves_no_table(
    pg_server: Server, dbname: str, database_url: str, app: Path, *, mode: str, first: str
) -> None:
    with pg_server.admin_conn(dbname) as conn:
        conn.execute("CREATE TABLE pg_class_copy AS SELECT oid FROM pg_class")
        conn.execute("ALTER TABLE pg_class_copy OWNER TO hm_tester")
    before = snapshot(pg_server, dbname)
    files = {
        "1_a.up.sql": first,
        "1_a.down.sql": "DROP INDEX CONCURRENTLY a_idx;\n"
        if "INDEX" in first
        else "DROP TABLE a;\n",
        "2_fails.up.sql": "CREATE TABLE b (id int);\nSELECT 1 / 0;\n",
    }

    result = up(app, files, database_url, env={"MIGRATE_TRANSACTION": mode})

    assert result.returncode == 1, result.output
    assert "2_fails.up.sql: line 2: ERROR 22012" in errors(result), result.output
    assert our_tables(pg_server, dbname) == []
    assert snapshot(pg_server, dbname) == before
    assert "the schema is as before the run" in result.stderr, result.output


def test_failed_first_release_drops_the_history_schema_it_created(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    before = snapshot(pg_server, dbname)
    files = {
        "1_a.up.sql": "CREATE TABLE a (id int);\n",
        "1_a.down.sql": "DROP TABLE a;\n",
        "2_fails.up.sql": "SELECT 1 / 0;\n",
    }

    result = up(app, files, database_url, env={**MIGRATION, "MIGRATE_HISTORY_SCHEMA": "hm"})

    assert result.returncode == 1, result.output
    assert "the schema is as before the run" in result.stderr, result.output
    assert snapshot(pg_server, dbname) == before
    assert scalar(pg_server.admin_url(dbname), "SELECT to_regnamespace('hm') IS NULL") is True


def test_failed_first_release_after_adoption_leaves_native_state(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    golang_migrate_database(pg_server, dbname, 1, "CREATE TABLE a (id int);")
    before = snapshot(pg_server, dbname)
    files = {
        "1_a.up.sql": "CREATE TABLE a (id int);\n",
        "2_b.up.sql": "CREATE TABLE b (id int);\n",
        "2_b.down.sql": "DROP TABLE b;\n",
        "3_fails.up.sql": "SELECT 1 / 0;\n",
    }

    result = up(app, files, database_url, env=MIGRATION)

    assert result.returncode == 1, result.output
    assert our_tables(pg_server, dbname) == []
    assert native_rows(pg_server, dbname) == [(1, False)]
    assert snapshot(pg_server, dbname) == before


# ----- 6. --allow-changed records the accepted edit ---------------------------------------------


def test_allow_changed_records_the_accepted_checksum_once(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    assert up(app, {"1_a.up.sql": "CREATE TABLE a (id int);\n"}, database_url).returncode == 0
    edited = "-- edited after it ran\nCREATE TABLE a (id int);\n"
    write_migrations(app, {"1_a.up.sql": edited})
    refused = run_cli(["up"], cwd=app, database_url=database_url)
    assert refused.returncode == 2, refused.output
    allowed = {"MIGRATE_ALLOW_CHANGED": "true"}

    first = run_cli(["up"], cwd=app, database_url=database_url, env=allowed)

    assert first.returncode == 0, first.output
    assert "changed since they ran: 1_a.up.sql (allowed)" in first.stderr, first.output
    assert "Accepted the edit of 1_a" in first.stdout, first.output
    from herokumigrate.migration import checksum_of

    assert history(pg_server, dbname)[0][2] == checksum_of(edited)
    events = rows(
        pg_server.admin_url(dbname),
        "SELECT event, detail FROM heroku_migrate_history_log WHERE event = 'accepted change'",
    )
    assert len(events) == 1, events
    assert "1_a.up.sql" in str(events[0][1])

    second = run_cli(["up"], cwd=app, database_url=database_url, env=allowed)
    assert second.returncode == 0, second.output
    assert "changed" not in second.output, second.output
    assert "up to date" in second.stdout, second.output
    # Accepted for good: without the setting too.
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    status = run_cli(["status"], cwd=app, database_url=database_url)
    assert "changed" not in status.stdout, status.output


def test_allow_changed_dry_run_records_nothing(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    assert up(app, {"1_a.up.sql": "CREATE TABLE a (id int);\n"}, database_url).returncode == 0
    before = history(pg_server, dbname)
    write_migrations(app, {"1_a.up.sql": "-- edited\nCREATE TABLE a (id int);\n"})
    result = run_cli(
        ["plan"], cwd=app, database_url=database_url, env={"MIGRATE_ALLOW_CHANGED": "true"}
    )
    assert result.returncode == 0, result.output
    assert "Would accept the edit of 1_a" in result.stdout, result.output
    assert history(pg_server, dbname) == before


def test_goto_does_not_accept_an_edit_without_allow_changed(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    files = {"1_a.up.sql": "CREATE TABLE a (id int);\n", "2_b.up.sql": "CREATE TABLE b (id int);\n"}
    assert up(app, {"1_a.up.sql": files["1_a.up.sql"]}, database_url).returncode == 0
    before = history(pg_server, dbname)[0][2]
    write_migrations(app, {**files, "1_a.up.sql": "-- edited\n" + files["1_a.up.sql"]})

    result = run_cli(["goto", "2"], cwd=app, database_url=database_url)

    assert result.returncode == 0, result.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2]
    assert history(pg_server, dbname)[0][2] == before
    assert "Accepted" not in result.output, result.output


# ----- 7. migration-mode compensation keeps golang-migrate's table right ------------------------


def test_compensation_syncs_golang_migrate_table_from_the_real_history(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """Adopted at 3; applies 4, 5, 6 one transaction each; 7 fails after a concurrent build.
    golang-migrate's table must say 3 afterwards (it said nothing at all: 0 rows)."""
    setup = (
        "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int); CREATE TABLE t3 (id int);"
        "CREATE TABLE dup (id int PRIMARY KEY, v int);"
        "INSERT INTO dup SELECT g, g % 10 FROM generate_series(1, 100) g;"
        "ALTER TABLE dup OWNER TO hm_tester;"
    )
    golang_migrate_database(pg_server, dbname, 3, setup)
    files = {
        "1_t1.up.sql": "CREATE TABLE t1 (id int);\n",
        "2_t2.up.sql": "CREATE TABLE t2 (id int);\n",
        "3_t3.up.sql": "CREATE TABLE t3 (id int);\nCREATE TABLE dup (id int PRIMARY KEY, v int);\n",
    }
    for j in (4, 5, 6):
        files[f"{j}_t{j}.up.sql"] = f"CREATE TABLE t{j} (id int);\n"
        files[f"{j}_t{j}.down.sql"] = f"DROP TABLE t{j};\n"
    files["7_indexes.up.sql"] = HALF_APPLIED
    files["7_indexes.down.sql"] = "DROP INDEX CONCURRENTLY dup_v_key;\n"
    before = snapshot(pg_server, dbname)

    result = up(app, files, database_url, env=MIGRATION)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "7_indexes.up.sql: line 2: ERROR 23505" in text, text
    for j in (6, 5, 4):
        assert f"reverted {j}_t{j}" in text, text
    assert native_rows(pg_server, dbname) == [(3, False)]
    assert snapshot(pg_server, dbname) == before

    files["7_indexes.up.sql"] = "CREATE INDEX CONCURRENTLY dup_id_idx ON dup (id);\n"
    fixed = up(app, files, database_url, env=MIGRATION)
    assert fixed.returncode == 0, fixed.output
    assert native_rows(pg_server, dbname) == [(7, False)]


def test_down_syncs_golang_migrate_table_with_adopted_versions(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    golang_migrate_database(pg_server, dbname, 1, "CREATE TABLE a (id int);")
    files = {
        "1_a.up.sql": "CREATE TABLE a (id int);\n",
        "2_b.up.sql": "CREATE TABLE b (id int);\n",
        "2_b.down.sql": "DROP TABLE b;\n",
    }
    assert up(app, files, database_url).returncode == 0
    assert native_rows(pg_server, dbname) == [(2, False)]
    result = run_cli(["down", "1", "--yes"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert native_rows(pg_server, dbname) == [(1, False)]


# ----- 8. empty downs and downs that leave things behind: no false "as before" -----------------


def test_empty_down_in_compensation_says_its_changes_remain(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    baseline(app, database_url)
    files = {
        "10_column.up.sql": "ALTER TABLE base ADD COLUMN c int;\n",
        "10_column.down.sql": "",
        "11_fails.up.sql": "SELECT 1 / 0;\n",
    }

    result = up(app, files, database_url, env=MIGRATION)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "10_column: its down is empty; its changes remain" in text, text
    assert "left behind: column public.base.c integer" in text, text
    assert "as before" not in result.output, result.output


def test_no_op_migration_with_empty_down_is_reverted_cleanly(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    files = {
        "10_nothing.up.sql": "-- kept for numbering\n",
        "10_nothing.down.sql": "",
        "11_real.up.sql": "CREATE TABLE eleven (id int);\n",
        "11_real.down.sql": "DROP TABLE eleven;\n",
        "12_fails.up.sql": "SELECT 1 / 0;\n",
    }

    result = up(app, files, database_url, env=MIGRATION)

    assert result.returncode == 1, result.output
    assert "reverted 11_real" in result.stderr, result.output
    assert "reverted 10_nothing" in result.stderr, result.output
    assert "the schema is as before the run" in result.stderr, result.output
    assert snapshot(pg_server, dbname) == before


def test_downs_that_leave_objects_behind_are_reported(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """Issue 9, item 10: a set's own downs left functions and an extension behind."""
    baseline(app, database_url)
    extension = bool(
        scalar(
            pg_server.admin_url(dbname),
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'citext'",
        )
    )
    up_sql = (
        "CREATE TABLE tagged (id int);\n"
        "CREATE FUNCTION tag() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
    )
    if extension:
        up_sql = "CREATE EXTENSION citext;\n" + up_sql
    files = {
        "10_tagged.up.sql": up_sql,
        "10_tagged.down.sql": "DROP TABLE tagged;\n",
        "11_fails.up.sql": "SELECT 1 / 0;\n",
    }

    result = up(app, files, database_url, env=MIGRATION)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "reverted 10_tagged" in text, text
    assert "the schema differs from before the run" in text, text
    assert "function public.tag()" in text, text
    if extension:
        assert "extension citext" in text, text
    assert "as before the run (checked" not in text, text


def test_a_down_that_drops_more_than_its_up_created_is_not_called_as_before(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """Compensation ran a down that also dropped a table from before the run: objects vanished,
    so the report says what differs instead of "as before"."""
    baseline(app, database_url)
    files = {
        "10_greedy.up.sql": "CREATE TABLE greedy (id int);\n",
        "10_greedy.down.sql": "DROP TABLE greedy;\nDROP TABLE base;\n",
        "11_fails.up.sql": "SELECT 1 / 0;\n",
    }

    result = up(app, files, database_url, env=MIGRATION)

    assert result.returncode == 1, result.output
    text = errors(result)
    assert "reverted 10_greedy" in text, text
    assert "the schema differs from before the run" in text, text
    assert "gone" in text, text
    assert "table public.base" in text, text
    assert "as before the run" not in text, text
    assert "base" not in tables(pg_server.admin_url(dbname))


@pytest.mark.parametrize("count", [7, 8, 9])
def test_a_schema_difference_names_each_object_up_to_its_limit_then_counts_the_rest(
    count: int,
) -> None:
    """The report names 8 objects per list; "and N more" only when more remain."""
    from herokumigrate.snapshot import SchemaDifference

    names = [f"table public.t{n}" for n in range(count)]
    text = SchemaDifference(appeared=names, vanished=[]).describe(limit=8)
    assert text.startswith("left behind: table public.t0, "), text
    shown = names[:8]
    more = f" and {count - 8} more" if count > 8 else ""
    assert text == "left behind: " + ", ".join(shown) + more, text


def test_compensation_report_is_in_the_log_and_status(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    baseline(app, database_url)
    files = {
        "10_a.up.sql": "CREATE TABLE ten (id int);\n",
        "10_a.down.sql": "DROP TABLE ten;\n",
        "11_fails.up.sql": "SELECT 1 / 0;\n",
    }
    assert up(app, files, database_url, env=MIGRATION).returncode == 1
    detail = scalar(
        pg_server.admin_url(dbname),
        "SELECT detail FROM heroku_migrate_history_log WHERE event = 'failed'"
        " ORDER BY id DESC LIMIT 1",
    )
    assert "reverted 10_a" in str(detail), detail
    assert "as before the run" in str(detail), detail
    status = run_cli(["status"], cwd=app, database_url=database_url)
    assert "reverted 10_a" in status.stderr, status.output


def test_history_reads_ignore_functions_shadowing_the_catalog(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """A session whose search_path puts a schema before pg_catalog, with look-alikes of the
    catalog functions we call: our reads call pg_catalog's, and see our tables."""
    baseline(app, database_url)
    from herokumigrate.history import HistoryTable
    from herokumigrate.ledger import Ledger
    from herokumigrate.manifest import Fingerprint
    from herokumigrate.native_tables import NativeTables
    from herokumigrate.source import load_migrations
    from herokumigrate.versions import INTEGER

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA evil")
        conn.execute(
            "CREATE FUNCTION evil.to_regclass(text) RETURNS regclass LANGUAGE sql"
            " AS 'SELECT NULL::regclass'"
        )
        conn.execute(
            "CREATE FUNCTION evil.current_setting(text) RETURNS text LANGUAGE sql AS 'SELECT 1'"
        )
        conn.execute("SELECT set_config('search_path', 'evil, pg_catalog, public', false)")
        table = HistoryTable("public", "heroku_migrate_history", INTEGER)
        ledger = Ledger(table, NativeTables())
        state = ledger.read(conn)
        assert state.exists
        assert [v.number for v in sorted(state.rows)] == [1]
        assert table.log_exists(conn)
        assert state.search_path == "evil, pg_catalog, public"
        migrations = load_migrations(app / "db" / "migrations", app)
        assert ledger.matches(conn, Fingerprint.of(migrations))
