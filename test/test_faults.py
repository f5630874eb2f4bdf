"""Fault injection on a real PostgreSQL: what the runner survives.

"Unchanged" means `pg_dump --schema-only` and the history rows are identical to a snapshot taken
before the run (after some baseline migrations, so creating the history table is not what is
compared). Every CLI run goes through `run_cli`/`finish`, which assert that no password and no
traceback is printed.
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from herokumigrate.errors import MigrationFailed
from support import (
    LIB,
    TEST_PASSWORD,
    Result,
    Server,
    assert_no_secret,
    finish,
    history,
    rows,
    run_cli,
    runner_backends,
    scalar,
    snapshot,
    spawn_cli,
    tables,
    up,
    write_migrations,
)

if TYPE_CHECKING:
    from herokumigrate.config import Config

pytestmark = pytest.mark.db

APP_NAME = "heroku-migrate"  # the runner's application_name in pg_stat_activity


# ----- helpers (kept here: only the fault tests need them) ---------------------------------------


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it is true, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_runner_gone(server: Server, dbname: str, timeout: float = 15) -> None:
    """Wait until no runner session is left on the database (a killed client's backend ends)."""
    wait_until(lambda: not runner_backends(server, dbname), timeout, "the runner's backend to end")


def bang_lines(result: Result) -> list[str]:
    """The ` !     ` lines (warnings and errors) of a run."""
    return [line for line in result.stderr.splitlines() if line.startswith(" !")]


def failure_line(result: Result, filename: str) -> str:
    """The error line naming `filename`."""
    found = [line for line in bang_lines(result) if filename in line]
    assert found, f"no error line names {filename}:\n{result.output}"
    return found[0]


def table_count(server: Server, dbname: str, pattern: str) -> int:
    """How many tables in `public` match the regular expression `pattern`."""
    return int(
        scalar(
            server.admin_url(dbname),
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname ~ %s",
            (pattern,),
        )
    )


def invalid_indexes(server: Server, dbname: str) -> list[tuple]:
    """Indexes left INVALID (a failed or killed concurrent build)."""
    return rows(
        server.admin_url(dbname),
        "SELECT i.indexrelid::regclass::text FROM pg_index i WHERE NOT i.indisvalid",
    )


BASELINE = {
    "1_base.up.sql": (
        "CREATE TABLE base (id int PRIMARY KEY, name text NOT NULL);\n"
        "INSERT INTO base SELECT g, 'name ' || g FROM generate_series(1, 50) g;\n"
    ),
    "1_base.down.sql": "DROP TABLE base;\n",
    "2_base_index.up.sql": (
        "CREATE INDEX base_name_idx ON base (name);\n"
        "CREATE FUNCTION base_count() RETURNS bigint LANGUAGE sql\n"
        "    AS $$ SELECT count(*) FROM base $$;\n"
    ),
    "2_base_index.down.sql": "DROP FUNCTION base_count();\nDROP INDEX base_name_idx;\n",
}


def apply_baseline(app: Path, database_url: str, extra: dict[str, str] | None = None) -> None:
    """Apply the baseline migrations (and `extra` ones) so that later runs have history."""
    result = up(app, {**BASELINE, **(extra or {})}, database_url)
    assert result.returncode == 0, result.output


def good_migration(j: int) -> tuple[str, str]:
    """Up and down SQL of a valid migration that also changes the baseline table."""
    up = (
        f"-- migration {j}: a table, an index, rows, and a change to an existing table\n"
        f"CREATE TABLE m{j:02d} (id int PRIMARY KEY, note text);\n"
        f"CREATE INDEX m{j:02d}_note_idx ON m{j:02d} (note);\n"
        f"INSERT INTO m{j:02d} VALUES (1, 'semi;colon'), (2, $$dollar ; quoted$$);\n"
        f"ALTER TABLE base ADD COLUMN c{j:02d} int DEFAULT {j};\n"
        f"UPDATE base SET name = name || '+' WHERE id = {j};\n"
    )
    down = f"ALTER TABLE base DROP COLUMN c{j:02d};\nDROP TABLE m{j:02d};\n"
    return up, down


@dataclass(frozen=True)
class SqlError:
    """An erroneous statement, the line (text) PostgreSQL's error points at, and the error."""

    sql: str
    needle: str  # text of the line the error must be reported at (first occurrence)
    sqlstate: str
    message: str


def sql_error(kind: int, table: str) -> SqlError:
    """One of several kinds of SQL error, on statements spanning several lines."""
    kinds = [
        SqlError(
            "CREATE TABLE broken (\n    id int,\n    oops oops oops\n);\n",
            "oops oops oops",
            "42601",
            'syntax error at or near "oops"',
        ),
        SqlError(
            "INSERT INTO no_such_table\n    VALUES (1);\n",
            "INSERT INTO no_such_table",
            "42P01",
            'relation "no_such_table" does not exist',
        ),
        SqlError(
            f"SELECT 1 / (count(*) - count(*))\n  FROM {table};\n",
            "SELECT 1 / (count(*)",
            "22012",
            "division by zero",
        ),
        SqlError(
            f"INSERT INTO {table} VALUES (3, 'c'),\n    (1, 'duplicate');\n",
            f"INSERT INTO {table} VALUES (3, 'c')",
            "23505",
            f'duplicate key value violates unique constraint "{table}_pkey"',
        ),
        SqlError(
            f"SELECT id,\n       missing_column\n  FROM {table};\n",
            "missing_column",
            "42703",
            'column "missing_column" does not exist',
        ),
        SqlError(
            "DO $$\nBEGIN\n  RAISE EXCEPTION 'migration % refused; really', 42;\nEND\n$$;\n",
            "DO $$",
            "P0001",
            "migration 42 refused; really",
        ),
    ]
    return kinds[kind % len(kinds)]


def failing_migration(k: int) -> tuple[str, SqlError]:
    """A migration that does valid work first, then hits a SQL error a few lines into the file."""
    table = f"f{k:02d}"
    error = sql_error(k, table)
    text = (
        f"-- migration {k}: valid statements first; a comment; with semicolons\n"
        "/* a block comment; /* nested; */ still comment */\n"
        f"CREATE TABLE {table} (id int PRIMARY KEY, note text);\n"
        f"INSERT INTO {table} VALUES (1, 'a;b'), (2, $$dollar ; quoted$$);\n"
        "\n" + error.sql
    )
    return text, error


def expected_line(text: str, needle: str) -> int:
    """1-based line of the first line of `text` containing `needle`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the migration")


def assert_names_error(result: Result, filename: str, line: int, error: SqlError) -> None:
    """The failure is reported on one line with the file, its line, the SQLSTATE and message."""
    text = failure_line(result, filename)
    assert re.search(rf"\bline {line}\b", text), f"expected line {line} in: {text}"
    assert error.sqlstate in text, text
    assert error.message in text, text


# ----- 1. a SQL error at any position of a 20-migration run ------------------------------------


@pytest.mark.parametrize("k", range(1, 21))
def test_sql_error_at_any_position_leaves_database_unchanged(
    pg_server: Server, dbname: str, database_url: str, app: Path, k: int
) -> None:
    apply_baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    files: dict[str, str] = {}
    error = None
    failing_text = ""
    for j in range(1, 21):
        version = 100 + j
        if j == k:
            failing_text, error = failing_migration(j)
            files[f"{version}_fails_here.up.sql"] = failing_text
            files[f"{version}_fails_here.down.sql"] = f"DROP TABLE f{j:02d};\n"
        else:
            up, down = good_migration(j)
            files[f"{version}_step_{j:02d}.up.sql"] = up
            files[f"{version}_step_{j:02d}.down.sql"] = down
    write_migrations(app, files)
    assert error is not None

    result = run_cli(["up"], cwd=app, database_url=database_url)

    assert result.returncode == 1, result.output
    assert snapshot(pg_server, dbname) == before, "the failed run changed the database"
    assert scalar(
        pg_server.admin_url(dbname), "SELECT string_agg(name, ',' ORDER BY id) FROM base"
    ) == (",".join(f"name {i}" for i in range(1, 51))), "row changes of the failed run were kept"
    filename = f"{100 + k}_fails_here.up.sql"
    assert_names_error(result, filename, expected_line(failing_text, error.needle), error)
    # Fixing the file makes the very same run succeed.
    good_up, _ = good_migration(k)
    (app / "db/migrations" / filename).write_text(good_up.replace(f"m{k:02d}", f"f{k:02d}"))
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0, again.output
    assert len(history(pg_server, dbname)) == 22


# ----- 2. a failure after earlier valid DDL in the same run -------------------------------------


def test_failure_after_valid_ddl_leaves_schema_byte_identical(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    apply_baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    data_before = rows(pg_server.admin_url(dbname), "SELECT * FROM base ORDER BY id")
    failing = (
        "-- all valid until the last statement\n"
        "CREATE TYPE mood AS ENUM ('ok', 'meh');\n"
        "ALTER TABLE base ADD COLUMN mood mood;\n"
        "CREATE OR REPLACE FUNCTION base_count() RETURNS bigint LANGUAGE plpgsql AS $fn$\n"
        "BEGIN\n"
        "  RETURN (SELECT count(*) + 1 FROM base); -- a comment; inside\n"
        "END\n"
        "$fn$;\n"
        "DROP INDEX base_name_idx;\n"
        "CREATE VIEW base_view AS SELECT id, name FROM base;\n"
        "\n"
        "ALTER TABLE base\n"
        "    ADD COLUMN broken no_such_type;\n"
    )
    files = {}
    for j in (1, 2, 3):
        up, down = good_migration(j)
        files[f"{10 + j}_step_{j}.up.sql"] = up
        files[f"{10 + j}_step_{j}.down.sql"] = down
    files["14_sequence.up.sql"] = (
        "CREATE SEQUENCE s14;\nSELECT nextval('s14');\n"
        "TRUNCATE m01;\nDELETE FROM base WHERE id > 40;\n"
    )
    files["15_mood_and_more.up.sql"] = failing
    write_migrations(app, files)

    result = run_cli(["up"], cwd=app, database_url=database_url)

    assert result.returncode == 1, result.output
    after_dump, after_history = snapshot(pg_server, dbname)
    assert after_dump == before[0], "pg_dump --schema-only differs after the failed run"
    assert after_history == before[1], "the history changed"
    assert rows(pg_server.admin_url(dbname), "SELECT * FROM base ORDER BY id") == data_before
    error = SqlError("", "ADD COLUMN broken", "42704", 'type "no_such_type" does not exist')
    assert_names_error(
        result, "15_mood_and_more.up.sql", expected_line(failing, "ADD COLUMN broken"), error
    )


# ----- 3. kill -9 at random moments of a 300-migration run --------------------------------------

KILL_MIGRATIONS = 300


def write_kill_set(app: Path) -> None:
    """300 migrations (like ../shared/bench's): a table, an index, rows, and an apply log row."""
    files = {
        "20260101000000_apply_log.up.sql": "CREATE TABLE apply_log (version bigint NOT NULL);\n",
        "20260101000000_apply_log.down.sql": "DROP TABLE apply_log;\n",
    }
    for i in range(1, KILL_MIGRATIONS):
        v = 20260101000000 + i
        files[f"{v}_create_t{i:05d}.up.sql"] = (
            f"CREATE TABLE t{i:05d} (id bigserial PRIMARY KEY, name text NOT NULL,"
            " created_at timestamptz DEFAULT now());\n"
            f"CREATE INDEX t{i:05d}_name_idx ON t{i:05d} (name);\n"
            f"INSERT INTO t{i:05d} (name) SELECT 'row ' || g FROM generate_series(1, 10) g;\n"
            f"INSERT INTO apply_log VALUES ({v});\n"
        )
        files[f"{v}_create_t{i:05d}.down.sql"] = f"DROP TABLE t{i:05d};\n"
    write_migrations(app, files)


def kill_state(server: Server, dbname: str) -> str:
    """'none' or 'all' after a kill; anything in between fails the test."""
    tables = table_count(server, dbname, r"^t\d{5}$")
    has_log = table_count(server, dbname, r"^apply_log$")
    recorded = history(server, dbname)
    assert all(r[3] == "applied" for r in recorded), f"partial history rows: {recorded[:3]}"
    if tables == 0 and not has_log and not recorded:
        return "none"
    if tables == KILL_MIGRATIONS - 1 and has_log and len(recorded) == KILL_MIGRATIONS:
        return "all"
    raise AssertionError(
        f"partial state after kill -9: {tables} tables, apply_log {bool(has_log)},"
        f" {len(recorded)} history rows"
    )


def assert_all_applied_once(server: Server, dbname: str) -> None:
    """Every migration applied, each exactly once."""
    assert kill_state(server, dbname) == "all"
    versions = [r[0] for r in history(server, dbname)]
    assert len(set(versions)) == KILL_MIGRATIONS
    per_version = rows(
        server.admin_url(dbname),
        "SELECT version, count(*) FROM apply_log GROUP BY version HAVING count(*) <> 1",
    )
    assert per_version == [], f"migrations applied more than once: {per_version[:5]}"
    assert scalar(server.admin_url(dbname), "SELECT count(*) FROM apply_log") == KILL_MIGRATIONS - 1
    assert scalar(server.admin_url(dbname), "SELECT count(*) FROM t00001") == 10
    assert scalar(server.admin_url(dbname), "SELECT count(*) FROM t00299") == 10


_HISTORY_INSERT = re.compile(r'INSERT INTO \S*heroku_migrate_history"?\s*\(', re.IGNORECASE)
# Each migration of the kill set creates six relations (the table, its sequence, its toast
# table and toast index, its two indexes), each locked ACCESS EXCLUSIVE until the commit.
LOCKS_PER_KILL_MIGRATION = 6
# How far the runner's backend is: its relation locks taken ACCESS EXCLUSIVE. The statement's
# text cannot say: many migrations go in one round trip, whose text shows from its start.
_RELATIONS_LOCKED = (
    "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'relation'"
    " AND mode = 'AccessExclusiveLock'"
)


def kill_moment(rng: random.Random) -> tuple[str, float]:
    """Where to kill: in start-up (seconds), at migration i, the history write, or COMMIT."""
    roll = rng.random()
    if roll < 0.1:
        return "startup", rng.uniform(0.0, 0.4)
    if roll < 0.2:
        return "history", 0.0
    if roll < 0.3:
        return "commit", 0.0
    return "migration", float(rng.randint(1, KILL_MIGRATIONS - 1))


def wait_for_moment(
    monitor: psycopg.Connection[tuple[object, ...]],
    dbname: str,
    proc: subprocess.Popen[str],
    moment: tuple[str, float],
) -> str:
    """Return when the runner reaches `moment`, watched through pg_stat_activity and the
    locks its backend holds (or exits); says where it was."""
    kind, value = moment
    if kind == "startup":
        time.sleep(value)
        return "start-up"
    deadline = time.monotonic() + 60
    seen = ""  # the last query that wrote the history
    while proc.poll() is None and time.monotonic() < deadline:
        row = monitor.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (dbname, APP_NAME),
        ).fetchone()
        query = str(row[1] or "") if row else ""
        commit = query.strip().upper() == "COMMIT" and "heroku_migrate_history" in seen
        at_end = bool(_HISTORY_INSERT.search(query)) or commit
        if "heroku_migrate_history" in query:
            seen = query
        if (kind == "history" and at_end) or (kind == "commit" and commit):
            return kind
        if kind == "migration" and row is not None:
            locked = int(str(scalar(monitor, _RELATIONS_LOCKED, (row[0],))))
            if at_end:
                return "history"
            if locked >= value * LOCKS_PER_KILL_MIGRATION:
                return f"migration {locked // LOCKS_PER_KILL_MIGRATION}"
        time.sleep(0.001)
    return "exited" if proc.poll() is not None else "timed out"


@pytest.mark.slow
def test_kill_9_at_random_moments_applies_all_or_nothing(pg_server: Server, app: Path) -> None:
    seed = int(os.environ.get("KILL_SEED", str(int(time.time()))))
    print(f"kill -9 seed: {seed} (rerun with KILL_SEED={seed})")
    rng = random.Random(seed)
    write_kill_set(app)
    started = time.monotonic()
    dbname = pg_server.create_database()
    monitor = pg_server.admin_conn()
    try:
        outcomes: list[tuple[str, str]] = []
        fresh = True
        kills = 20  # real kills: a run that finished before its moment does not count
        n = 0
        while sum(s != "finished first" for _, s in outcomes) < kills:
            n += 1
            assert n <= 3 * kills, f"too few runs could be killed: {outcomes}"
            if not fresh:
                pg_server.drop_database_soon(dbname)
                dbname = pg_server.create_database()
            url = pg_server.url(dbname)
            moment = kill_moment(rng)
            proc = spawn_cli(["up"], cwd=app, database_url=url)
            reached = wait_for_moment(monitor, dbname, proc, moment)
            proc.send_signal(signal.SIGKILL)  # a no-op if the run has ended
            proc.communicate(timeout=30)
            wait_runner_gone(pg_server, dbname)
            state = kill_state(pg_server, dbname)
            where = f"{moment[0]} {moment[1]:g} (at {reached})"
            if proc.returncode == 0:
                assert state == "all"
                outcomes.append((where, "finished first"))
            else:
                assert proc.returncode == -signal.SIGKILL, proc.returncode
                outcomes.append((where, state))
            # "none" leaves a fresh database for the next kill; every fifth time (and after
            # "all"), the next `up` runs to the end and must apply each migration once.
            if state == "all" or n % 5 == 0:
                result = run_cli(["up"], cwd=app, database_url=url)
                assert result.returncode == 0, result.output
                assert_all_applied_once(pg_server, dbname)
                if state == "all":
                    assert "up to date" in result.stdout, result.output
                fresh = False
            else:
                fresh = True
        if fresh:  # the last kill left nothing: the next `up` must complete
            result = run_cli(["up"], cwd=app, database_url=pg_server.url(dbname))
            assert result.returncode == 0, result.output
            assert_all_applied_once(pg_server, dbname)
        elapsed = time.monotonic() - started
        print(f"kill moments (where, outcome): {outcomes}")
        counts = {k: sum(s == k for _, s in outcomes) for k in ("none", "all", "finished first")}
        print(f"{kills} kills -9 of a {KILL_MIGRATIONS}-migration run in {elapsed:.1f}s: {counts}")
    finally:
        monitor.close()
        pg_server.drop_database_soon(dbname)


# ----- 4. the runner's backend terminated mid-run -----------------------------------------------


def test_terminated_backend_fails_cleanly_and_next_run_succeeds(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    apply_baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    up, down = good_migration(1)
    write_migrations(
        app,
        {
            "10_first.up.sql": up,
            "10_first.down.sql": down,
            "11_slow.up.sql": "SELECT pg_sleep(3);\n",
            "12_after.up.sql": "CREATE TABLE after_slow (id int);\n",
        },
    )
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    try:

        def sleeping() -> list[tuple]:
            return [b for b in runner_backends(pg_server, dbname) if "pg_sleep" in str(b[2])]

        wait_until(lambda: bool(sleeping()), 20, "the runner to reach pg_sleep")
        pid = sleeping()[0][0]
        rows(pg_server.admin_url("postgres"), "SELECT pg_terminate_backend(%s)", (pid,))
        result = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"terminated backend:\n{result.output}")
    assert result.returncode == 1, result.output
    errors = [line for line in bang_lines(result) if line.strip() != "!"]
    assert errors, result.output
    headline = errors[0]
    assert re.search(r"connection|terminat", headline, re.IGNORECASE), headline
    assert "\n" not in headline
    wait_runner_gone(pg_server, dbname)
    assert snapshot(pg_server, dbname) == before, "the interrupted run changed the database"
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0, again.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 10, 11, 12]


# ----- 7. CREATE UNIQUE INDEX CONCURRENTLY failing on duplicate rows ----------------------------


@pytest.mark.parametrize("mode", ["release", "migration"])
def test_failed_unique_index_concurrently_is_dropped_and_run_compensated(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    apply_baseline(
        app,
        database_url,
        {
            "3_users.up.sql": (
                "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);\n"
                "INSERT INTO users SELECT g, 'user' || (g % 500) || '@example.com'"
                " FROM generate_series(1, 1000) g;\n"
            ),
            "3_users.down.sql": "DROP TABLE users;\n",
        },
    )
    before = snapshot(pg_server, dbname)
    users_before = rows(pg_server.admin_url(dbname), "SELECT * FROM users ORDER BY id")
    up, down = good_migration(1)
    write_migrations(
        app,
        {
            "10_profiles.up.sql": up,
            "10_profiles.down.sql": down,
            "11_users_flag.up.sql": "ALTER TABLE users ADD COLUMN flag boolean DEFAULT false;\n",
            "11_users_flag.down.sql": "ALTER TABLE users DROP COLUMN flag;\n",
            "12_unique_email.up.sql": (
                "-- duplicates make this fail\n"
                "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);\n"
            ),
            "12_unique_email.down.sql": "DROP INDEX CONCURRENTLY users_email_key;\n",
        },
    )

    result = run_cli(["up"], cwd=app, database_url=database_url, env={"MIGRATE_TRANSACTION": mode})

    assert result.returncode == 1, result.output
    assert invalid_indexes(pg_server, dbname) == [], "an INVALID index was left behind"
    assert table_count(pg_server, dbname, r"^m01$") == 0, "10_profiles was not reverted"
    columns = rows(
        pg_server.admin_url(dbname),
        "SELECT attname FROM pg_attribute WHERE attrelid = 'users'::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
    )
    assert columns == [("id",), ("email",)], "11_users_flag was not reverted"
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3], "history rows of the run left"
    assert rows(pg_server.admin_url(dbname), "SELECT * FROM users ORDER BY id") == users_before
    assert snapshot(pg_server, dbname) == before, "downs did not restore the schema"
    line = failure_line(result, "12_unique_email.up.sql")
    assert "23505" in line, line
    assert re.search(r"\bline 2\b", line), line
    assert re.search(r"revert\w* 10_profiles|10_profiles.*revert", result.output), result.output

    status = run_cli(["status"], cwd=app, database_url=database_url)
    assert status.returncode == 0, status.output
    print(f"failed CIC ({mode}):\n{result.output}\nstatus:\n{status.output}")
    assert re.search(r"last run failed", status.output, re.IGNORECASE), status.output
    assert "12_unique_email" in status.output or "users_email_key" in status.output
    assert "revert" in status.output.lower(), status.output


# ----- 8. kill -9 during CREATE INDEX CONCURRENTLY ----------------------------------------------

BIG_ROWS = 2_000_000


def big_table_app(app: Path, database_url: str, *, cic_first: bool = True) -> None:
    """Baseline plus a big table; then a CIC migration and one after it, pending.

    With `cic_first` the concurrent build is the migration's first statement; otherwise a
    transactional statement of the same migration comes before it.
    """
    before = "" if cic_first else "CREATE TABLE side (id int);\n"
    apply_baseline(
        app,
        database_url,
        {
            "3_big.up.sql": (
                "CREATE TABLE big (id bigint PRIMARY KEY, val text NOT NULL);\n"
                f"INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {BIG_ROWS}) g;\n"
            ),
            "3_big.down.sql": "DROP TABLE big;\n",
        },
    )
    write_migrations(
        app,
        {
            "10_before.up.sql": "CREATE TABLE before_cic (id int);\n",
            "10_before.down.sql": "DROP TABLE before_cic;\n",
            "11_big_val_index.up.sql": before
            + "CREATE INDEX CONCURRENTLY big_val_idx ON big (val);\n",
            "11_big_val_index.down.sql": "DROP INDEX CONCURRENTLY big_val_idx;\n",
            "12_after.up.sql": "CREATE TABLE after_cic (id int);\n",
            "12_after.down.sql": "DROP TABLE after_cic;\n",
        },
    )


def kill_during_cic(
    pg_server: Server, dbname: str, app: Path, database_url: str, *, server_finishes: bool = False
) -> None:
    """Start `up`, wait until the concurrent build runs, then kill -9 the runner.

    With `server_finishes`, the runner is frozen (SIGSTOP) first and killed only once its
    backend has finished the build: a client that vanished without the server noticing during
    the statement (client_connection_check_interval ends a build whose client is known gone)."""
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    try:

        def building() -> bool:
            return any(
                b[1] == "active" and "CONCURRENTLY" in str(b[2])
                for b in runner_backends(pg_server, dbname)
            )

        wait_until(building, 30, "the concurrent index build to start")
        time.sleep(0.3)
        if server_finishes:
            proc.send_signal(signal.SIGSTOP)
            wait_until(lambda: not building(), 60, "the server to finish the build")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def assert_cic_run_complete(pg_server: Server, dbname: str) -> None:
    recorded = history(pg_server, dbname)
    assert [r[0] for r in recorded] == [1, 2, 3, 10, 11, 12], recorded
    assert all(r[3] == "applied" for r in recorded), recorded
    assert invalid_indexes(pg_server, dbname) == []
    assert (
        scalar(pg_server.admin_url(dbname), "SELECT to_regclass('big_val_idx') IS NOT NULL") is True
    )
    assert table_count(pg_server, dbname, r"^(before|after)_cic$") == 2


@pytest.mark.slow
def test_kill_9_during_index_build_next_up_drops_invalid_index_and_completes(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    big_table_app(app, database_url)
    # The server notices the killed client within 100 ms and aborts the build, leaving the
    # INVALID index a crash (or a failover) leaves.
    with pg_server.admin_conn() as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET client_connection_check_interval = 100')
    kill_during_cic(pg_server, dbname, app, database_url)
    wait_runner_gone(pg_server, dbname)
    assert [r[0] for r in invalid_indexes(pg_server, dbname)] == ["big_val_idx"], (
        "expected the killed build to leave an INVALID index"
    )

    result = run_cli(["up"], cwd=app, database_url=database_url)

    assert result.returncode == 0, result.output
    assert "INVALID" in result.output, result.output
    assert_cic_run_complete(pg_server, dbname)


@pytest.mark.slow
@pytest.mark.parametrize("cic_first", [True, False], ids=["cic_first", "cic_after_ddl"])
def test_kill_9_during_index_build_that_the_server_finishes_next_up_completes(
    pg_server: Server, dbname: str, database_url: str, app: Path, cic_first: bool
) -> None:
    """The dyno dies while the server goes on and finishes the build on its own."""
    big_table_app(app, database_url, cic_first=cic_first)
    kill_during_cic(pg_server, dbname, app, database_url, server_finishes=True)
    wait_runner_gone(pg_server, dbname, timeout=60)  # the orphaned backend finishes the build
    applied = [r[0] for r in history(pg_server, dbname) if r[3] == "applied"]
    assert applied == [1, 2, 3, 10], "not killed mid-build"
    assert invalid_indexes(pg_server, dbname) == []
    assert (
        scalar(pg_server.admin_url(dbname), "SELECT to_regclass('big_val_idx') IS NOT NULL") is True
    )

    result = run_cli(["up"], cwd=app, database_url=database_url)

    assert result.returncode == 0, result.output
    assert_cic_run_complete(pg_server, dbname)


# ----- 9. one transaction per migration: compensation by downs ----------------------------------


def test_per_migration_failure_compensates_this_runs_migrations_only(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    env = {"MIGRATE_TRANSACTION": "migration"}
    apply_baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    files = {}
    for j in (1, 2):
        up, down = good_migration(j)
        files[f"{10 + j}_step_{j}.up.sql"] = up
        files[f"{10 + j}_step_{j}.down.sql"] = down
    failing_text, error = failing_migration(3)
    files["13_third_fails.up.sql"] = failing_text
    files["13_third_fails.down.sql"] = "DROP TABLE f03;\n"
    for j in (4, 5):
        up, down = good_migration(j)
        files[f"{10 + j}_step_{j}.up.sql"] = up
        files[f"{10 + j}_step_{j}.down.sql"] = down
    write_migrations(app, files)

    result = run_cli(["up"], cwd=app, database_url=database_url, env=env)

    assert result.returncode == 1, result.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2]
    assert table_count(pg_server, dbname, r"^(m0\d|f03)$") == 0
    assert snapshot(pg_server, dbname) == before
    assert scalar(pg_server.admin_url(dbname), "SELECT count(*) FROM base") == 50
    assert_names_error(
        result, "13_third_fails.up.sql", expected_line(failing_text, error.needle), error
    )
    out = result.output
    assert out.index("11_step_1") < out.index("12_step_2")
    reverted = re.findall(r"reverted (\d+)_", out)
    assert reverted == ["12", "11"], f"expected 12 then 11 reverted (newest first): {out}"


# ----- a bug in the runner --------------------------------------------------------------------


def test_an_unexpected_exception_is_one_redacted_line_without_traceback(
    app: Path, tmp_path: Path, database_url: str
) -> None:
    """Any exception that is not an explained error still goes through the one error funnel."""
    hook = tmp_path / "hook"
    hook.mkdir()
    # Loaded at interpreter start-up: breaks the history read with an exception that carries
    # the URL and the bare password, as a careless library message might.
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "from psycopg.conninfo import conninfo_to_dict\n"
        "import herokumigrate.history as history\n"
        "def broken(self, conn):\n"
        "    url = os.environ['DATABASE_URL']\n"
        "    secret = conninfo_to_dict(url)['password']\n"
        "    raise RuntimeError(f'cannot read {url} with\\n{secret}')\n"
        "history.HistoryTable.read = broken\n"
    )
    write_migrations(app, {"1_a.up.sql": "CREATE TABLE a (id int);"})
    result = run_cli(
        ["up"], cwd=app, database_url=database_url, env={"PYTHONPATH": f"{hook}:{LIB}"}
    )
    # run_cli already failed the test on a traceback or a leaked password.
    assert result.returncode == 1, result.output
    assert result.stderr.splitlines() == [
        " !     internal error in heroku-migrate: RuntimeError: cannot read "
        "[REDACTED] with [REDACTED] (a bug: please report it with this line)"
    ], result.stderr


# ----- a lost connection and another runner in the gap (issue 8, item 3) ---------------------


def connection_limit(server: Server, dbname: str, limit: int) -> None:
    """ALTER DATABASE ... CONNECTION LIMIT (-1: none); superusers are exempt."""
    with server.admin_conn() as conn:
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                psycopg.sql.Identifier(dbname), psycopg.sql.Literal(limit)
            )
        )


def test_recovery_after_a_lost_connection_never_undoes_another_runners_work(
    pg_server: Server, dbname: str, app: Path, database_url: str
) -> None:
    """Runner A loses its connection during CREATE INDEX CONCURRENTLY; runner B takes the lock
    in the gap and finishes the release. When A gets back, it must compensate nothing.

    Made deterministic: a table lock holds A's concurrent build, B is already waiting for the
    migration lock, and a connection limit of 1 on the database keeps A from reconnecting until
    B has finished and disconnected.
    """
    assert up(app, {"0_big.up.sql": "CREATE TABLE big (id int);"}, database_url).returncode == 0
    write_migrations(
        app,
        {
            "1_t.up.sql": "CREATE TABLE t1 (id int);\n"
            "CREATE INDEX CONCURRENTLY big_id_idx ON big (id);",
            "1_t.down.sql": "DROP INDEX IF EXISTS big_id_idx;\nDROP TABLE t1;",
            "2_u.up.sql": "CREATE TABLE u (id int);",
        },
    )
    admin = pg_server.admin_url("postgres")
    blocker = pg_server.admin_conn(dbname)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE big IN SHARE UPDATE EXCLUSIVE MODE")
    runner_a = spawn_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_LOCK_TIMEOUT": "600"}
    )
    runner_b: subprocess.Popen[str] | None = None
    try:

        def building() -> list[tuple[object, ...]]:
            return rows(
                admin,
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
                " AND query LIKE 'CREATE INDEX CONCURRENTLY%%'",
                (dbname,),
            )

        wait_until(lambda: bool(building()), 60, "runner A to wait in its concurrent build")
        pid_a = building()[0][0]
        runner_b = spawn_cli(["up"], cwd=app, database_url=database_url)

        def b_waits_for_the_lock() -> bool:
            return bool(
                rows(
                    admin,
                    "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
                    " AND query LIKE '%%pg_try_advisory_lock%%'",
                    (dbname, pid_a),
                )
            )

        wait_until(b_waits_for_the_lock, 60, "runner B to wait for the migration lock")
        connection_limit(pg_server, dbname, 1)
        rows(admin, "SELECT pg_terminate_backend(%s)", (pid_a,))
        blocker.execute("ROLLBACK")
        blocker.close()
        result_b = finish(runner_b, timeout=120)
        assert result_b.returncode == 0, result_b.output
        result_a = finish(runner_a, timeout=120)
    finally:
        for proc in (runner_a, runner_b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        blocker.close()
        connection_limit(pg_server, dbname, -1)
    assert result_a.returncode == 1, result_a.output
    assert "changed while the connection was lost" in result_a.stderr, result_a.output
    assert "the database is as before" not in result_a.output
    assert "reverted" not in result_a.stderr, result_a.output
    # B's work stands: the table, the valid index, and the history that says so.
    assert "t1" in tables(pg_server.admin_url(dbname))
    assert rows(
        pg_server.admin_url(dbname),
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass('big_id_idx')",
    ) == [(True,)]
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [
        (0, "applied"),
        (1, "applied"),
        (2, "applied"),
    ]


# ----- no secret in the history's log ----------------------------------------------------------


def test_a_failure_quoting_the_url_and_password_leaves_no_secret_in_the_log_table(
    pg_server: Server, dbname: str, app: Path, database_url: str
) -> None:
    """The failure text and the compensation's report are written to the log table too (for
    `status`): redacted like the output, so a migration (or a down) whose error quotes the
    database URL or its password stores neither."""
    assert up(app, {"1_base.up.sql": "CREATE TABLE base (id int);\n"}, database_url).returncode == 0
    for n, secret in ((2, TEST_PASSWORD), (4, database_url)):
        # PostgreSQL quotes the value it cannot read as an integer in its error message: the
        # up fails, then compensation runs the down of the migration before it, which fails
        # the same way (its line goes into the report).
        quoting = f"SELECT $q${secret}$q$::int;\n"
        files = {
            f"{n}_first.up.sql": "SELECT 1;\n",
            f"{n}_first.down.sql": quoting,
            f"{n + 1}_quotes.up.sql": quoting,
        }
        result = up(app, files, database_url, env={"MIGRATE_TRANSACTION": "migration"})
        assert result.returncode == 1, result.output  # run_cli checked the printed output
        assert f"down of {n}_first failed" in result.stderr, result.output
        for name in files:
            (app / "db" / "migrations" / name).unlink()
    logged = rows(
        pg_server.admin_url(dbname),
        "SELECT detail FROM heroku_migrate_history_log WHERE event = 'failed' ORDER BY id",
    )
    assert len(logged) == 2, logged
    for (detail,) in logged:
        text = str(detail)
        assert text.count("invalid input syntax for type integer") == 2, text
        assert "[REDACTED]" in text, text
        assert_no_secret(text)
        assert database_url not in text, text


# ----- the migration lock is released on every failure path ---------------------------------

# Each way a run can fail after it took the lock: the files after a first migration that commits
# on its own (migration mode), so that compensation runs (and, after a lost connection,
# reconnects and locks again) before the command gives up.
FAILURES = {
    "sql error": "SELECT 1 / 0;\n",
    "lost connection": "SELECT pg_terminate_backend(pg_backend_pid());\n",
    "bookkeeping": "CREATE TABLE refused (id int);\n",
    "signal": "SELECT pg_sleep(600);\n",
}
REFUSE_VERSION_3 = (
    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'refused'; END $$;\n"
    "CREATE TRIGGER refuse BEFORE INSERT ON heroku_migrate_history"
    " FOR EACH ROW WHEN (NEW.version = 3) EXECUTE FUNCTION refuse();\n"
)


def advisory_locks(server: Server, dbname: str) -> list[tuple[object, ...]]:
    """The advisory locks held on `dbname`, by anyone."""
    return rows(
        server.admin_url("postgres"),
        "SELECT pid, objid FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = %s)",
        (dbname,),
    )


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_the_migration_lock_is_released_on_every_failure_path(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    *,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """In the runner's own process (its sessions kept referenced, so nothing is closed by the
    process ending or by garbage collection): after the failure, another session sees no
    advisory lock of ours."""
    from herokumigrate.config import load_config
    from herokumigrate.migrator import Migrator
    from herokumigrate.output import Output
    from herokumigrate.session import Session
    from herokumigrate.signals import Interrupted
    from herokumigrate.source import load_migrations

    assert up(app, {"1_base.up.sql": "CREATE TABLE base (id int);\n"}, database_url).returncode == 0
    if failure == "bookkeeping":
        with pg_server.admin_conn(dbname) as conn:
            conn.execute(REFUSE_VERSION_3)
    write_migrations(
        app,
        {
            "2_first.up.sql": "CREATE TABLE first_table (id int);\n",
            "2_first.down.sql": "DROP TABLE first_table;\n",
            "3_fails.up.sql": FAILURES[failure],
        },
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    config = load_config(app, {"MIGRATE_TRANSACTION": "migration"})
    out = io.StringIO()
    sessions: list[Session] = []

    def open_session(config: Config, output: Output) -> Session:
        session = Session.open(config, output)
        sessions.append(session)
        return session

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    def signal_when_sleeping() -> None:
        wait_until(
            lambda: rows(
                pg_server.admin_url("postgres"),
                "SELECT FROM pg_stat_activity WHERE datname = %s"
                " AND query LIKE 'SELECT pg_sleep%%'",
                (dbname,),
            ),
            60,
            "the migration's sleep",
        )
        os.kill(os.getpid(), signal.SIGTERM)

    migrator = Migrator(config, Output(out, out, color=False), open_session=open_session)
    migrations = load_migrations(config.migrations_dir, config.app_dir)
    previous = signal.signal(signal.SIGTERM, interrupt)
    sender = threading.Thread(target=signal_when_sleeping, daemon=True)
    if failure == "signal":
        sender.start()
    try:
        with pytest.raises((MigrationFailed, Interrupted)) as raised:
            migrator.up(migrations)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if failure == "signal":
            sender.join(60)
    try:
        assert isinstance(raised.value, Interrupted) == (failure == "signal"), out.getvalue()
        assert sessions, "no session was opened"
        if failure != "signal":  # compensation ran (after a reconnect, locked again)
            assert "reverted 2_first" in str(raised.value.lines()), raised.value.lines()
        assert advisory_locks(pg_server, dbname) == [], f"{failure}: lock held\n{out.getvalue()}"
    finally:
        for session in sessions:
            session.conn.close()
