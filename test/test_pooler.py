"""Connection poolers, for real: a PgBouncer in transaction pooling mode is refused before any
change, one in session pooling mode works like a direct connection; our connections never
prepare statements and leave no session setting behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from herokumigrate.database import Target, connect, read_target
from herokumigrate.output import Output
from pgbouncer import PgBouncer
from support import Server, finish, history, run_cli, snapshot, spawn_cli, write_migrations

pytestmark = pytest.mark.db

StartPgBouncer = Callable[..., PgBouncer]
BANG = " !     "
MIGRATIONS = {
    "1_create_items.up.sql": (
        "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);\n"
        "CREATE TABLE applied (version bigint NOT NULL);\n"
        "INSERT INTO applied VALUES (1);\n"
    ),
    "1_create_items.down.sql": "DROP TABLE applied;\nDROP TABLE items;\n",
    "2_index_items.up.sql": (
        "CREATE INDEX items_name_idx ON items (name);\n"
        "SELECT pg_sleep(0.3);\n"  # widens the window in which a second runner could slip in
        "INSERT INTO applied VALUES (2);\n"
    ),
    "2_index_items.down.sql": "DROP INDEX items_name_idx;\n",
    "3_add_note.up.sql": (
        "ALTER TABLE items ADD COLUMN note text;\nINSERT INTO applied VALUES (3);\n"
    ),
    "3_add_note.down.sql": "ALTER TABLE items DROP COLUMN note;\n",
}


def _connect(url: str) -> tuple[Target, Output]:
    output = Output()
    target = read_target({"DATABASE_URL": url}, "DATABASE_URL", output)
    return target, output


def _error_lines(stderr: str) -> list[str]:
    return [line[len(BANG) :] for line in stderr.splitlines() if line.startswith(BANG)]


# ----- transaction pooling: refused, nothing changed --------------------------------------------


@pytest.mark.parametrize("pool_size", [1, 5], ids=["one-server-connection", "five"])
def test_transaction_pooling_is_refused_before_any_change(
    pg_server: Server, dbname: str, app: Path, pgbouncer: StartPgBouncer, pool_size: int
) -> None:
    bouncer = pgbouncer("transaction", pool_size=pool_size)
    write_migrations(app, MIGRATIONS)
    before = snapshot(pg_server, dbname)

    result = run_cli(["up"], cwd=app, database_url=bouncer.url(dbname))

    assert result.returncode == 2, result.output
    errors = _error_lines(result.stderr)
    assert errors, result.output
    assert "connection pooler in transaction mode" in errors[0], errors
    assert "PgBouncer" in errors[0], errors
    assert "MIGRATE_DATABASE_URL_VAR" in errors[-1], errors
    assert "Traceback" not in result.output
    assert snapshot(pg_server, dbname) == before
    assert history(pg_server, dbname) == []


def test_transaction_pooling_url_in_another_var_names_database_url_as_the_fix(
    pg_server: Server, dbname: str, app: Path, pgbouncer: StartPgBouncer
) -> None:
    bouncer = pgbouncer("transaction")
    write_migrations(app, MIGRATIONS)

    result = run_cli(
        ["up"],
        cwd=app,
        database_url=pg_server.url(dbname),
        env={
            "MIGRATE_DATABASE_URL_VAR": "DATABASE_CONNECTION_POOL_URL",
            "DATABASE_CONNECTION_POOL_URL": bouncer.url(dbname),
        },
    )

    assert result.returncode == 2, result.output
    errors = _error_lines(result.stderr)
    assert "DATABASE_CONNECTION_POOL_URL" in errors[-3], errors
    assert "MIGRATE_DATABASE_URL_VAR=DATABASE_URL" in errors[-1], errors
    assert history(pg_server, dbname) == []


def test_transaction_pooling_is_refused_by_every_command(
    pg_server: Server, dbname: str, app: Path, pgbouncer: StartPgBouncer
) -> None:
    bouncer = pgbouncer("transaction", pool_size=1)
    write_migrations(app, MIGRATIONS)
    for args in (["status"], ["plan"], ["force", "1"]):
        result = run_cli(args, cwd=app, database_url=bouncer.url(dbname))
        assert result.returncode == 2, (args, result.output)
        assert "transaction mode" in result.stderr, (args, result.output)
    assert history(pg_server, dbname) == []


def test_statement_pooling_is_refused_and_named_as_such(
    pg_server: Server, dbname: str, app: Path, pgbouncer: StartPgBouncer
) -> None:
    bouncer = pgbouncer("statement")
    write_migrations(app, MIGRATIONS)
    before = snapshot(pg_server, dbname)

    result = run_cli(["up"], cwd=app, database_url=bouncer.url(dbname))

    assert result.returncode == 2, result.output
    errors = _error_lines(result.stderr)
    assert "connection pooler in statement mode" in errors[0], errors
    assert "MIGRATE_DATABASE_URL_VAR" in errors[-1], errors
    assert snapshot(pg_server, dbname) == before
    assert history(pg_server, dbname) == []


# ----- session pooling: works ------------------------------------------------------------------


def test_session_pooling_applies_normally(
    pg_server: Server, dbname: str, app: Path, pgbouncer: StartPgBouncer
) -> None:
    bouncer = pgbouncer("session")
    write_migrations(app, MIGRATIONS)

    result = run_cli(["up"], cwd=app, database_url=bouncer.url(dbname))

    assert result.returncode == 0, result.output
    assert [row[0] for row in history(pg_server, dbname)] == [1, 2, 3]
    assert "pooler" not in result.output, result.output


def test_session_pool_of_one_connection_is_not_mistaken_for_transaction_pooling(
    pg_server: Server, dbname: str, app: Path, pgbouncer: StartPgBouncer
) -> None:
    # The second client of the check waits for the only server connection, which we hold.
    bouncer = pgbouncer("session", pool_size=1)
    write_migrations(app, MIGRATIONS)

    result = run_cli(["up"], cwd=app, database_url=bouncer.url(dbname))

    assert result.returncode == 0, result.output
    assert [row[0] for row in history(pg_server, dbname)] == [1, 2, 3]


def test_six_runners_through_session_pooling_apply_each_migration_once(
    pg_server: Server, dbname: str, app: Path, pgbouncer: StartPgBouncer
) -> None:
    bouncer = pgbouncer("session", pool_size=20)
    write_migrations(app, MIGRATIONS)
    url = bouncer.url(dbname)

    procs = [spawn_cli(["up"], cwd=app, database_url=url) for _ in range(6)]
    results = [finish(proc, timeout=300) for proc in procs]

    for result in results:
        assert result.returncode == 0, result.output
    assert [row[0] for row in history(pg_server, dbname)] == [1, 2, 3]
    with pg_server.admin_conn(dbname) as conn:
        counts = conn.execute(
            "SELECT version, count(*) FROM applied GROUP BY version ORDER BY version"
        ).fetchall()
    assert counts == [(1, 1), (2, 1), (3, 1)], counts


# ----- what our connections leave behind ----------------------------------------------------------


def test_connection_sets_nothing_session_level_and_never_prepares(
    pg_server: Server, database_url: str
) -> None:
    target, output = _connect(database_url)
    conn = connect(target, output, connect_timeout=10, connect_wait=0)
    try:
        assert conn.prepare_threshold is None
        for _ in range(8):  # psycopg would prepare from the 5th execution by default
            conn.execute("SELECT 1 + %s", (1,))
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert prepared == (0,)
        session = conn.execute(
            "SELECT name FROM pg_settings WHERE source = 'session' ORDER BY name"
        ).fetchall()
        assert session == []
        startup = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT name, setting FROM pg_settings WHERE source = 'client' ORDER BY name"
            ).fetchall()
        )
        assert startup.get("application_name") == "heroku-migrate", startup
        if conn.info.server_version >= 140000:
            assert startup.get("client_connection_check_interval") == "2000", startup
    finally:
        conn.close()


def test_session_pooler_without_options_support_still_connects(
    dbname: str, pgbouncer: StartPgBouncer
) -> None:
    # PgBouncer refuses the `options` startup parameter that carries the check interval.
    bouncer = pgbouncer("session")
    target, output = _connect(bouncer.url(dbname))
    conn = connect(target, output, connect_timeout=10, connect_wait=0)
    try:
        session = conn.execute(
            "SELECT name FROM pg_settings WHERE source = 'session' AND name <> 'application_name'"
        ).fetchall()
        assert session == [], "our connect or pooler check left a session setting behind"
    finally:
        conn.close()
    assert "unsupported startup parameter: options" in bouncer.log()


# ----- URLs that must fail at once -----------------------------------------------------------


def test_sslmode_require_without_tls_fails_at_once(
    pg_server: Server, dbname: str, app: Path, pgbouncer: StartPgBouncer
) -> None:
    # This PgBouncer offers no TLS (a real server that answers the SSL request with "no").
    bouncer = pgbouncer("session")
    write_migrations(app, MIGRATIONS)
    started = time.monotonic()

    result = run_cli(
        ["up"],
        cwd=app,
        database_url=bouncer.url(dbname, query="sslmode=require"),
        env={"MIGRATE_CONNECT_WAIT": "120"},
    )

    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.output
    assert "retrying" not in result.output, result.output
    assert elapsed < 60, f"waited {elapsed:.0f}s for a failure that retrying cannot fix"
    errors = _error_lines(result.stderr)
    assert "does not support SSL" in errors[0], errors
    assert "TLS" in errors[-1], errors
    assert history(pg_server, dbname) == []


def test_a_pooler_that_moves_our_session_after_the_probe_is_caught_by_our_own_recheck(
    pg_server: Server, dbname: str, pgbouncer: StartPgBouncer
) -> None:
    """Transaction pooling where the second client proves nothing: its pool is full, so it
    gets no server session in time (no pid to compare). Meanwhile PgBouncer closed our idle
    server session (server_idle_timeout), so our next transaction runs on another backend:
    only our own re-check after the probe sees that, and it must count."""
    from psycopg.conninfo import conninfo_to_dict

    from herokumigrate.pooler import detect_pooling

    probe_timeout = 3.0  # the probe's wait: three times the idle timeout
    bouncer = pgbouncer(
        "transaction",
        pool_size=1,
        aliases={"probe_pool": dbname},  # a pool of its own for the second client
        settings={"server_idle_timeout": "1"},
    )
    # The probe's pool has one server session, held in a transaction: the probe waits.
    holder = psycopg.connect(bouncer.url("probe_pool"))
    conn = psycopg.connect(bouncer.url(dbname), autocommit=True)
    try:
        holder.execute("SELECT 1")
        params = {k: str(v) for k, v in conninfo_to_dict(bouncer.url("probe_pool")).items()}
        started = time.monotonic()
        found = detect_pooling(conn, params, probe_timeout=probe_timeout)
        waited = time.monotonic() - started
    finally:
        conn.close()
        holder.close()
    assert waited >= probe_timeout, f"the probe got an answer after {waited:.2f}s"
    assert found == "transaction", bouncer.log()


def test_a_pooler_that_moves_our_session_between_two_queries_is_refused_at_once(
    pg_server: Server, dbname: str, pgbouncer: StartPgBouncer
) -> None:
    """Transaction pooling that hands out its server sessions in turn (server_round_robin):
    our own two consecutive queries already run on two backends, and that alone is proof."""
    from psycopg.conninfo import conninfo_to_dict

    from herokumigrate.pooler import detect_pooling

    bouncer = pgbouncer("transaction", pool_size=2, settings={"server_round_robin": "1"})
    # Two server sessions in the pool: two clients in a transaction at the same time.
    holders = [psycopg.connect(bouncer.url(dbname)) for _ in range(2)]
    for holder in holders:
        holder.execute("SELECT 1")
    backends = {holder.execute("SELECT pg_backend_pid()").fetchone() for holder in holders}
    for holder in holders:
        holder.commit()  # a server session left mid-transaction would be closed, not pooled
        holder.close()
    conn = psycopg.connect(bouncer.url(dbname), autocommit=True)
    try:
        seen = {conn.execute("SELECT pg_backend_pid()").fetchone() for _ in range(2)}
        assert len(seen) == 2, f"round robin did not alternate: {seen} ({backends})"
        params = {k: str(v) for k, v in conninfo_to_dict(bouncer.url(dbname)).items()}
        found = detect_pooling(conn, params, probe_timeout=1.0)
    finally:
        conn.close()
    assert found == "transaction", bouncer.log()
