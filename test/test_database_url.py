"""Reading the database URL: golang-migrate's `x-*` parameters honoured and stripped, what
golang-migrate's CLI hashes (the path), and parameters no PostgreSQL client knows named in a
clear exit-2 error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from herokumigrate.database import read_target
from herokumigrate.errors import BadInput
from herokumigrate.lock import MigrationsTable
from herokumigrate.output import Output
from support import Server, history, run_cli, snapshot, write_migrations

BASE = "postgres://app:s3cr3t-pw@db.example.com:5432/d1"


def _read(url: str, var: str = "DATABASE_URL") -> tuple[object, ...]:
    target = read_target({var: url}, var, Output())
    return target.params, target.url_path, target.migrations_table, target.statement_timeout


def test_golang_migrate_parameters_are_stripped_before_connecting() -> None:
    params, url_path, table, timeout = _read(
        BASE + "?sslmode=require&x-migrations-table=schema_om&x-multi-statement=true"
        "&x-statement-timeout=1500&x-multi-statement-max-size=100&application_name=web"
    )
    assert params == {
        "user": "app",
        "password": "s3cr3t-pw",
        "host": "db.example.com",
        "port": "5432",
        "dbname": "d1",
        "sslmode": "require",
        "application_name": "web",
    }
    assert url_path == "/d1"
    assert table == MigrationsTable("schema_om")
    assert timeout == 1.5


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", None),
        ("x-migrations-table=my.table", MigrationsTable("my.table")),  # unquoted: one name
        ("x-migrations-table=%22ops%22.%22my.table%22&x-migrations-table-quoted=true",
         MigrationsTable("my.table", "ops")),
        ("x-migrations-table=%22mine%22&x-migrations-table-quoted=1", MigrationsTable("mine")),
        ("x-migrations-table=plain&x-migrations-table-quoted=false", MigrationsTable("plain")),
        ("x-migrations-table=first&x-migrations-table=second", MigrationsTable("first")),
    ],
)  # fmt: skip
def test_migrations_table_is_read_as_golang_migrate_reads_it(
    query: str, expected: MigrationsTable | None
) -> None:
    _, _, table, _ = _read(BASE + ("?" + query if query else ""))
    assert table == expected


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("x-migrations-table=mine&x-migrations-table-quoted=true", "x-migrations-table"),
        ("x-migrations-table=%22a%22.%22b%22.%22c%22&x-migrations-table-quoted=true",
         "x-migrations-table"),
        ("x-migrations-table=mine&x-migrations-table-quoted=yes", "x-migrations-table-quoted"),
        ("x-statement-timeout=5s", "x-statement-timeout"),
    ],
)  # fmt: skip
def test_bad_golang_migrate_parameters_are_bad_input(query: str, named: str) -> None:
    with pytest.raises(BadInput) as caught:
        _read(f"{BASE}?{query}")
    assert named in caught.value.message
    assert "DATABASE_URL" in caught.value.message
    assert "s3cr3t" not in " ".join(caught.value.lines())


@pytest.mark.parametrize(
    ("url", "url_path"),
    [
        ("postgres://u:p@h/my%20db", "/my db"),  # Go's url.Parse decodes the path
        ("postgresql://u:p@h:5432/d1?sslmode=disable", "/d1"),
        ("postgres://u:p@/d1?host=/run/postgresql", "/d1"),
        ("postgres://u:p@h", ""),  # golang-migrate then falls back to current_database()
        ("host=h dbname=d1 user=u", None),  # not a URL: golang-migrate's CLI cannot take it
    ],
)
def test_url_path_is_what_golang_migrates_cli_hashes(url: str, url_path: str | None) -> None:
    assert _read(url)[1] == url_path


@pytest.mark.parametrize(
    ("url", "name", "prisma"),
    [
        (BASE + "?schema=public", "schema", True),
        (BASE + "?sslmode=require&connection_limit=5", "connection_limit", True),
        (BASE + "?pgbouncer=true", "pgbouncer", True),
        (BASE + "?search_path=app", "search_path", False),
        ("host=h dbname=d1 schema=public", "schema", True),
    ],
)
def test_unknown_url_parameter_is_named(url: str, name: str, prisma: bool) -> None:
    with pytest.raises(BadInput) as caught:
        _read(url)
    error = caught.value
    assert f"{name!r}" in error.message
    assert ("Prisma" in error.message) is prisma
    assert "MIGRATE_DATABASE_URL_VAR" in error.fix
    assert "s3cr3t" not in " ".join(error.lines())


def test_unknown_parameter_that_could_be_a_secret_is_not_printed() -> None:
    with pytest.raises(BadInput) as caught:
        _read(BASE + "?hunter2%20with%20spaces%21=1")
    assert "hunter2" not in " ".join(caught.value.lines())


# ----- through the real CLI ------------------------------------------------------------------


@pytest.mark.db
def test_prisma_schema_parameter_exits_2_naming_it(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, {"1_t.up.sql": "CREATE TABLE t (id int);\n"})
    before = snapshot(pg_server, dbname)
    sep = "&" if "?" in database_url else "?"

    result = run_cli(["up"], cwd=app, database_url=f"{database_url}{sep}schema=public")

    assert result.returncode == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith(" !     ")]
    assert len(errors) == 2, errors
    assert "'schema'" in errors[0]
    assert "Prisma" in errors[0]
    assert "MIGRATE_DATABASE_URL_VAR" in errors[1]
    assert snapshot(pg_server, dbname) == before


@pytest.mark.db
def test_golang_migrate_url_parameters_do_not_stop_a_release(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, {"1_t.up.sql": "CREATE TABLE t (id int);\n"})
    sep = "&" if "?" in database_url else "?"
    url = f"{database_url}{sep}x-migrations-table=schema_om&x-multi-statement=true"

    result = run_cli(["up"], cwd=app, database_url=url)

    assert result.returncode == 0, result.output
    assert [row[0] for row in history(pg_server, dbname)] == [1]


@pytest.mark.db
def test_x_statement_timeout_limits_statements_unless_the_setting_is_set(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # golang-migrate's x-statement-timeout (milliseconds) applies when MIGRATE_STATEMENT_TIMEOUT
    # (or migrate.toml) leaves statement_timeout unset.
    write_migrations(app, {"1_slow.up.sql": "CREATE TABLE t (id int);\nSELECT pg_sleep(1);\n"})
    before = snapshot(pg_server, dbname)
    sep = "&" if "?" in database_url else "?"
    url = f"{database_url}{sep}x-statement-timeout=300"

    limited = run_cli(["up"], cwd=app, database_url=url)
    assert limited.returncode == 1, limited.output
    assert "57014" in limited.output, limited.output
    assert "x-statement-timeout" in limited.output, limited.output
    assert snapshot(pg_server, dbname) == before

    setting = run_cli(["up"], cwd=app, database_url=url, env={"MIGRATE_STATEMENT_TIMEOUT": "30"})
    assert setting.returncode == 0, setting.output
    assert [row[0] for row in history(pg_server, dbname)] == [1]


def test_our_session_lets_the_server_end_it_and_our_side_notices_a_dead_network(
    database_url: str,
) -> None:
    # Startup settings only (source "client"): nothing of ours is SET on the session.
    from herokumigrate.database import IDLE_IN_TRANSACTION_SECONDS, SESSION_OPTIONS, connect

    output = Output()
    sep = "&" if "?" in database_url else "?"
    url = f"{database_url}{sep}keepalives_idle=7"  # the URL's own choice wins
    conn = connect(read_target({"DATABASE_URL": url}, "DATABASE_URL", output), output,
                   connect_timeout=5, connect_wait=5)  # fmt: skip
    with conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE source = 'client' AND name = ANY(%s)",
                (list(SESSION_OPTIONS),),
            ).fetchall()
        )
        client = {i.keyword.decode(): i.val for i in conn.pgconn.info if i.val is not None}
        over_tcp = not conn.info.host.startswith("/")
    # Over a Unix socket the server ignores its TCP settings and reads them as 0.
    expected = {
        k: v if over_tcp or not k.startswith("tcp_") else "0" for k, v in SESSION_OPTIONS.items()
    }
    assert settings == expected, settings
    idle_ms = str(IDLE_IN_TRANSACTION_SECONDS * 1000)
    assert settings["idle_in_transaction_session_timeout"] == idle_ms, settings
    assert client["keepalives"] == b"1", client
    assert client["keepalives_idle"] == b"7", client
    assert client["tcp_user_timeout"] == b"30000", client
