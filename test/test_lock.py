"""The migration lock: golang-migrate's key formula pinned by its own published test vectors,
keys read from the server, and every key held by another session keeping us out.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from herokumigrate.database import connect, read_target
from herokumigrate.errors import LockTimeout
from herokumigrate.lock import MigrationsTable, golang_migrate_lock_id, lock_key
from herokumigrate.output import Output
from herokumigrate.session import migration_lock
from pgbouncer import PgBouncer
from support import TEST_ROLE, Server, history, run_cli, snapshot, write_migrations

Conn = psycopg.Connection[tuple[object, ...]]


# ----- golang-migrate's formula --------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("database_name",), 1764327054),
        (("database_name", "schema_name_1"), 2453313553),
        (("database_name", "schema_name_2"), 235207038),
        (("database_name", "schema_name_1", "schema_name_2"), 3743845847),
    ],
)
def test_golang_migrate_published_lock_ids(names: tuple[str, ...], expected: int) -> None:
    # database/util_test.go TestGenerateAdvisoryLockId: GenerateAdvisoryLockId(dbname, extra...)
    assert golang_migrate_lock_id(*names) == expected


def test_lock_key_is_golang_migrates_schema_table_database_order() -> None:
    # Lock() calls GenerateAdvisoryLockId(DatabaseName, migrationsSchemaName, migrationsTableName)
    assert lock_key("database_name", "schema_name_1", "schema_name_2") == 3743845847


# ----- keys from the server ------------------------------------------------------------------


# Prisma's schema engine: pg_advisory_lock(72707369), the same for every database.
PRISMA_KEY = 72707369


def flyway_key(schema: str) -> int:
    """Flyway's PostgreSQL lock: 0x466C79776179 plus Java's String.hashCode of its table's
    quoted name (77433833903597 for public.flyway_schema_history, as FORMATS.md reads it)."""
    code = 0
    for char in f'"{schema}"."flyway_schema_history"':
        code = (code * 31 + ord(char)) & 0xFFFFFFFF
    return 0x466C79776179 + (code - 2**32 if code >= 2**31 else code)


def test_flyway_key_of_public_is_the_one_read_from_its_source() -> None:
    assert flyway_key("public") == 77433833903597


def sqlx_key(dbname: str) -> int:
    """sqlx-postgres's generate_lock_id: 0x3d32ad9e times the CRC-32 (IEEE) of the database's
    name (368907709894077238 for `postgres`, as FORMATS.md reads it from the source)."""
    return 0x3D32AD9E * zlib.crc32(dbname.encode())


def test_sqlx_key_of_postgres_is_the_one_read_from_its_source() -> None:
    assert sqlx_key("postgres") == 368907709894077238


def _connect(url: str) -> tuple[Conn, Output, str | None]:
    output = Output()
    target = read_target({"DATABASE_URL": url}, "DATABASE_URL", output)
    return connect(target, output, connect_timeout=10, connect_wait=0), output, target.url_path


@pytest.fixture
def app_schema(pg_server: Server, dbname: str) -> str:
    """The test database's sessions start with `current_schema()` = app (not public)."""
    with pg_server.admin_conn(dbname) as conn:
        role = sql.Identifier(TEST_ROLE)
        conn.execute(sql.SQL("CREATE SCHEMA app AUTHORIZATION {}").format(role))
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = app, public").format(
                sql.Identifier(dbname)
            )
        )
    return "app"


@pytest.mark.db
def test_keys_come_from_the_servers_database_and_schema(
    dbname: str, database_url: str, app_schema: str
) -> None:
    conn, output, url_path = _connect(database_url)
    try:
        lock = migration_lock(conn, output, url_path=url_path)
    finally:
        conn.close()
    assert url_path == f"/{dbname}"
    assert lock.keys == (
        lock_key(dbname),
        golang_migrate_lock_id(dbname, app_schema, "schema_migrations"),
        golang_migrate_lock_id(f"/{dbname}", app_schema, "schema_migrations"),
        sqlx_key(dbname),
        PRISMA_KEY,
        flyway_key(app_schema),
    )
    assert lock.key == lock_key(dbname)


@pytest.mark.db
def test_pooler_alias_does_not_change_the_server_keys(
    dbname: str, pgbouncer: Callable[..., PgBouncer]
) -> None:
    # Through an alias the URL names another database: only golang-migrate's CLI key follows
    # the URL (as golang-migrate's CLI would with that URL); ours and its library's do not.
    bouncer = pgbouncer("session", aliases={"aliased": dbname})
    conn, output, url_path = _connect(bouncer.url("aliased"))
    try:
        lock = migration_lock(conn, output, url_path=url_path)
    finally:
        conn.close()
    # golang-migrate's library key for public.schema_migrations is our own key: held once.
    assert golang_migrate_lock_id(dbname, "public", "schema_migrations") == lock_key(dbname)
    assert lock.keys == (
        lock_key(dbname),
        golang_migrate_lock_id("/aliased", "public", "schema_migrations"),
        sqlx_key(dbname),  # sqlx's library: the server's current_database(), not the alias
        PRISMA_KEY,
        flyway_key("public"),
    )


@pytest.mark.db
def test_custom_migrations_table_keys(dbname: str, database_url: str) -> None:
    conn, output, url_path = _connect(database_url)
    try:
        plain = migration_lock(conn, output, table=MigrationsTable("my_migrations"))
        quoted = migration_lock(
            conn, output, table=MigrationsTable("my_migrations", "ops"), url_path=url_path
        )
    finally:
        conn.close()
    assert plain.keys == (
        lock_key(dbname),
        golang_migrate_lock_id(dbname, "public", "my_migrations"),
        sqlx_key(dbname),
        PRISMA_KEY,
        flyway_key("public"),
    )
    assert quoted.keys == (
        lock_key(dbname),
        golang_migrate_lock_id(dbname, "ops", "my_migrations"),
        golang_migrate_lock_id(f"/{dbname}", "ops", "my_migrations"),
        sqlx_key(dbname),
        PRISMA_KEY,
        flyway_key("public"),
    )


# ----- held by another session -----------------------------------------------------------------


def _held_keys(server: Server, dbname: str) -> set[int]:
    with server.admin_conn(dbname) as conn:
        rows = conn.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return {int(str(row[0])) for row in rows}


@pytest.fixture
def other_session(pg_server: Server, dbname: str) -> Iterator[Conn]:
    """Another session on the test database (a golang-migrate run, say)."""
    conn = pg_server.admin_conn(dbname)
    conn.execute("SET application_name = 'migrate'")
    yield conn
    conn.close()


KEY_OWNERS: dict[str, Callable[[str], int]] = {
    "heroku-migrate": lock_key,
    "golang-migrate-library": lambda db: golang_migrate_lock_id(db, "public", "my_migrations"),
    "golang-migrate-cli": lambda db: golang_migrate_lock_id(f"/{db}", "public", "my_migrations"),
    "sqlx": sqlx_key,
    "prisma": lambda db: PRISMA_KEY,
    "flyway": lambda db: flyway_key("public"),
}


@pytest.mark.db
@pytest.mark.parametrize("owner", list(KEY_OWNERS))
def test_any_key_held_elsewhere_keeps_the_lock_out_and_takes_nothing(
    pg_server: Server, dbname: str, database_url: str, other_session: Conn, owner: str
) -> None:
    other_session.execute("SELECT pg_advisory_lock(%s)", (KEY_OWNERS[owner](dbname),))
    conn, output, url_path = _connect(database_url)
    try:
        lock = migration_lock(
            conn, output, table=MigrationsTable("my_migrations"), url_path=url_path
        )
        assert len(lock.keys) == 6
        with pytest.raises(LockTimeout) as caught:
            lock.acquire(0.5)
        # What it took before the miss was given back: only the other session's key is held.
        assert _held_keys(pg_server, dbname) == {KEY_OWNERS[owner](dbname)}
        assert "migrate" in caught.value.message, caught.value.message
    finally:
        conn.close()


@pytest.mark.db
def test_acquire_holds_every_key_and_release_gives_all_back(
    pg_server: Server, dbname: str, database_url: str
) -> None:
    conn, output, url_path = _connect(database_url)
    try:
        lock = migration_lock(conn, output, url_path=url_path)
        lock.acquire(1)
        assert _held_keys(pg_server, dbname) == set(lock.keys)
        assert len(lock.keys) == 5  # ours (= golang-migrate library's), its CLI's, sqlx's,
        # Prisma's, Flyway's
        lock.release()
        assert _held_keys(pg_server, dbname) == set()
        again = lock.on(conn)
        again.acquire(1)
        assert _held_keys(pg_server, dbname) == set(lock.keys)
        again.release()
    finally:
        conn.close()


CLI_CASES = [
    pytest.param("", lock_key, id="heroku-migrate"),
    pytest.param(
        "",
        lambda db: golang_migrate_lock_id(db, "public", "schema_migrations"),
        id="golang-migrate-library",
    ),
    pytest.param(
        "",
        lambda db: golang_migrate_lock_id(f"/{db}", "public", "schema_migrations"),
        id="golang-migrate-cli",
    ),
    pytest.param(
        "x-migrations-table=my_migrations",
        lambda db: golang_migrate_lock_id(db, "public", "my_migrations"),
        id="golang-migrate-library-custom-table",
    ),
    pytest.param(
        "x-migrations-table=my_migrations",
        lambda db: golang_migrate_lock_id(f"/{db}", "public", "my_migrations"),
        id="golang-migrate-cli-custom-table",
    ),
    pytest.param("", sqlx_key, id="sqlx-library"),
]


@pytest.mark.db
@pytest.mark.parametrize(("query", "key"), CLI_CASES)
def test_runner_exits_3_while_any_key_is_held_elsewhere(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    other_session: Conn,
    *,
    query: str,
    key: Callable[[str], int],
) -> None:
    write_migrations(app, {"1_t.up.sql": "CREATE TABLE t (id int);\n"})
    other_session.execute("SELECT pg_advisory_lock(%s)", (key(dbname),))
    before = snapshot(pg_server, dbname)
    url = database_url + (("&" if "?" in database_url else "?") + query if query else "")

    result = run_cli(["up"], cwd=app, database_url=url, env={"MIGRATE_LOCK_WAIT": "1"})

    assert result.returncode == 3, result.output
    assert "MIGRATE_LOCK_WAIT" in result.stderr, result.output
    assert snapshot(pg_server, dbname) == before
    assert history(pg_server, dbname) == []


@pytest.mark.db
@pytest.mark.parametrize(
    "database_name",
    [pytest.param(lambda db: db, id="library"), pytest.param(lambda db: f"/{db}", id="cli")],
)
def test_migrations_table_setting_names_the_table_in_golang_migrates_keys(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    other_session: Conn,
    *,
    database_name: Callable[[str], str],
) -> None:
    write_migrations(app, {"1_t.up.sql": "CREATE TABLE t (id int);\n"})
    key = golang_migrate_lock_id(database_name(dbname), "public", "my_migrations")
    other_session.execute("SELECT pg_advisory_lock(%s)", (key,))
    before = snapshot(pg_server, dbname)

    result = run_cli(
        ["up"],
        cwd=app,
        database_url=database_url,
        env={"MIGRATE_LOCK_WAIT": "1", "MIGRATE_MIGRATIONS_TABLE": "my_migrations"},
    )

    assert result.returncode == 3, result.output
    assert snapshot(pg_server, dbname) == before


def test_versions_only_the_database_has_found_after_the_lock_wait_are_warned_about(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # An older slug's release (files 1, 2) waits for the lock while a newer one applies 2 and
    # 3: under the lock, 3 is a version these files do not have.
    import time

    from support import finish, spawn_cli

    files = {f"{n}_{t}.up.sql": f"CREATE TABLE {t} (id int);" for n, t in ((1, "a"), (2, "b"))}
    write_migrations(app, {**files, "3_c.up.sql": "CREATE TABLE c (id int);"})
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    (app / "db/migrations/3_c.up.sql").unlink()
    admin = pg_server.admin_conn(dbname)
    try:
        admin.execute("CREATE TEMP TABLE later AS SELECT * FROM heroku_migrate_history"
                      " WHERE version > 1")  # fmt: skip
        admin.execute("DELETE FROM heroku_migrate_history WHERE version > 1")
        admin.execute("SELECT pg_advisory_lock(%s)", (lock_key(dbname),))
        proc = spawn_cli(["up"], cwd=app, database_url=database_url)
        time.sleep(2.0)  # it found 2 pending, and waits for the lock
        admin.execute("INSERT INTO heroku_migrate_history SELECT * FROM later")
        admin.execute("SELECT pg_advisory_unlock_all()")
        result = finish(proc)
    finally:
        admin.close()
    assert result.returncode == 0, result.output
    assert "Waiting for the migration lock" in result.output, result.output
    assert "The database has 1 migration(s) these files do not: 3" in result.stderr, result.output
