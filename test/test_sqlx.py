"""sqlx's migrations, read, applied and recorded as sqlx does (sqlx-core migrate/source.rs and
migrator.rs, sqlx-postgres migrate.rs), in a Rust app's `migrations/`: simple and reversible
files, `-- no-transaction` files sent whole as one query, `_sqlx_migrations` rows as sqlx writes
them, a database sqlx migrated half-way adopted, reverts, sqlx's failure states. The oracle is
sqlx's behaviour written in rust_tools.py from its source (cargo cannot fetch sqlx here).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from herokumigrate.errors import BadInput
from herokumigrate.native import NativeName
from herokumigrate.native.sqlx import SqlxTable
from herokumigrate.source import load_migrations
from herokumigrate.versions import Version
from rust_tools import (
    SQLX_DDL,
    SqlxRefuses,
    apply_as_sqlx,
    schema_without_ours,
    sqlx_folder,
    sqlx_would_apply,
)
from support import Server, rows, run_cli, scalar, snapshot, tables

CARGO = '[package]\nname = "app"\nversion = "0.1.0"\n\n[dependencies]\nsqlx = { version = "0.8" }\n'

# A Rust app's set, as sqlx ships them: simple and reversible files, a function body with `;`
# inside dollar quotes, a concurrent index built outside a transaction, and a version whose
# zero-padded name sorts after a longer one as text but before it as a number.
SET = {
    "0001_create_users.sql": (
        "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);\n"
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.email := lower(NEW.email); RETURN NEW; END;\n$$;\n"
        "CREATE TRIGGER users_touch BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION touch();\n"
    ),
    "0002_add_posts.up.sql": "CREATE TABLE posts (id bigserial PRIMARY KEY, user_id bigint);\n",
    "0002_add_posts.down.sql": "DROP TABLE posts;\n",
    "0003_posts_index.up.sql": (
        "-- no-transaction\nCREATE INDEX CONCURRENTLY posts_user ON posts (user_id);\n"
    ),
    "0003_posts_index.down.sql": "-- no-transaction\nDROP INDEX CONCURRENTLY posts_user;\n",
    "10_slow_seed.sql": "SELECT pg_sleep(0.05);\nINSERT INTO users (email) VALUES ('A@B.C');\n",
}


def sqlx_app(app: Path, files: dict[str, str | bytes], *, cargo: bool = True) -> Path:
    """A Rust app: Cargo.toml depending on sqlx, and `files` in its `migrations/`."""
    folder = app / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (folder / name).write_bytes(data)
    if cargo:
        (app / "Cargo.toml").write_text(CARGO)
    return folder


@pytest.fixture
def tool_db(pg_server: Server) -> str:
    """A second database, for sqlx's own way of applying the same files."""
    name = pg_server.create_database()
    yield name  # type: ignore[misc]
    pg_server.drop_database_soon(name)


# ----- reading the folder (no database) ------------------------------------------------------


def test_simple_and_reversible_files_are_read_as_sqlx_reads_them(app: Path) -> None:
    folder = sqlx_app(app, SET)
    migrations = load_migrations(folder, app)
    assert [(m.format, m.version.number, m.label) for m in migrations] == [
        ("sqlx", 1, "0001_create_users"),
        ("sqlx", 2, "0002_add_posts"),
        ("sqlx", 3, "0003_posts_index"),
        ("sqlx", 10, "10_slow_seed"),
    ]
    users, posts, index, _ = migrations
    # The checksum is the SHA-384 of the file's bytes, as sqlx stores it.
    for m in migrations:
        assert m.checksum == hashlib.sha384((folder / m.up.path.name).read_bytes()).hexdigest()
    assert users.down is None  # a simple file has no down
    assert posts.down is not None
    assert posts.down.transaction
    assert (index.up.transaction, index.up.one_query) == (False, True)
    assert index.down is not None
    assert not index.down.transaction  # sqlx obeys it in downs too


def test_a_stray_file_sqlx_fails_on_fails_the_build_saying_so(app: Path) -> None:
    sqlx_app(app, {"1_a.sql": "SELECT 1;\n", "notes_todo.sql": "-- later\n"})
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 2, result.output
    assert "notes_todo.sql: sqlx fails on this folder" in result.stderr
    assert "expected integer version prefix" in result.stderr
    assert "Rename it" in result.stderr


def test_a_sql_file_without_an_underscore_is_one_sqlx_never_runs(app: Path) -> None:
    folder = sqlx_app(app, {"1_a.sql": "SELECT 1;\n", "schema.sql": "CREATE TABLE x ();\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(folder, app)
    assert "schema.sql: sqlx skips this file" in caught.value.message


def test_a_byte_order_mark_sqlx_would_send_is_refused(app: Path) -> None:
    folder = sqlx_app(app, {"1_a.sql": b"\xef\xbb\xbfCREATE TABLE a (id int);\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(folder, app)
    assert "byte-order mark" in caught.value.message


def test_sqlx_toml_names_the_folder_and_the_ignored_characters(app: Path) -> None:
    (app / "sqlx.toml").write_text(
        '[migrate]\nmigrations-dir = "db/sqlx"\nignored-chars = ["\\r"]\n'
    )
    folder = app / "db" / "sqlx"
    folder.mkdir(parents=True)
    text = b"CREATE TABLE a (id int);\r\nCREATE TABLE b (id int);\r\n"
    (folder / "1_a.sql").write_bytes(text)
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 0, result.output
    assert "Validated 1 migration(s) in db/sqlx" in result.stdout
    assert "Format: sqlx (sqlx.toml exists)" in result.stdout
    [m] = load_migrations(folder, app)
    assert m.checksum == hashlib.sha384(text.replace(b"\r", b"")).hexdigest()


# ----- applied as sqlx applies them ----------------------------------------------------------


@pytest.mark.db
def test_a_set_applies_as_sqlx_would_schema_and_rows_alike(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = sqlx_app(app, SET)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    apply_as_sqlx(pg_server.url(tool_db), folder)

    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )
    query = "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version"
    ours = rows(database_url, query)
    assert ours == rows(pg_server.url(tool_db), query)
    expected = [(int(m.version), m.description, True, m.checksum) for m in sqlx_folder(folder)]
    assert [(v, d, s, bytes(c)) for v, d, s, c in ours] == expected  # type: ignore[arg-type]
    assert [d for _, d, _, _ in ours] == ["create users", "add posts", "posts index", "slow seed"]
    # Nanoseconds: the pg_sleep(0.05) migration took at least 50,000,000 of them.
    times = dict(rows(database_url, "SELECT version, execution_time FROM _sqlx_migrations"))
    assert all(int(str(t)) > 0 for t in times.values()), times
    assert int(str(times[10])) >= 50_000_000, times
    # The app binary's own migrate!().run() at boot finds nothing to do and no mismatch.
    assert sqlx_would_apply(database_url, folder) == []


@pytest.mark.db
def test_a_no_transaction_file_is_one_query_all_or_nothing_as_in_sqlx(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    failing = (
        "-- no-transaction\nCREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n"
        "INSERT INTO missing VALUES (1);\n"
    )
    files = {
        "1_ok.up.sql": "CREATE TABLE ok (id int);\n",
        "1_ok.down.sql": "DROP TABLE ok;\n",
        "2_half.sql": failing,
    }
    folder = sqlx_app(app, files)
    # sqlx sends the file as one query: PostgreSQL runs it in one implicit transaction.
    with pytest.raises(psycopg.errors.UndefinedTable):
        apply_as_sqlx(pg_server.url(tool_db), folder)
    assert "a" not in tables(pg_server.url(tool_db))

    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1, result.output
    assert "2_half.sql: line 4" in result.stderr, result.output
    assert "a" not in tables(database_url)  # none of the file, as in sqlx
    # and nothing of the release: 1_ok committed before the file ran alone, and was reverted
    assert "ok" not in tables(database_url)
    assert "reverted 1_ok" in result.stderr, result.output


@pytest.mark.db
def test_a_no_transaction_file_of_several_statements_runs_whole_outside_a_transaction(
    dbname: str, database_url: str, app: Path
) -> None:
    body = "-- no-transaction\nCREATE TABLE b (id int);\nINSERT INTO b VALUES (1), (2);\n"
    folder = sqlx_app(app, {"1_b.sql": body})
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "statements that must run outside a transaction" in result.stdout
    assert scalar(database_url, "SELECT count(*) FROM b") == 2
    assert sqlx_would_apply(database_url, folder) == []


@pytest.mark.db
def test_a_concurrent_build_among_statements_of_a_no_transaction_file_fails_the_build(
    pg_server: Server, dbname: str, app: Path
) -> None:
    body = (
        "-- no-transaction\nCREATE TABLE c (id int);\nCREATE INDEX CONCURRENTLY c_id ON c (id);\n"
    )
    sqlx_app(app, {"1_c.sql": body})
    # What sqlx would get: PostgreSQL refuses it in the implicit transaction of one query.
    with (
        pg_server.admin_conn(dbname) as conn,
        pytest.raises(psycopg.errors.ActiveSqlTransaction),
    ):
        conn.execute(body)
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 2, result.output
    assert "1_c.sql: line 3: CREATE INDEX CONCURRENTLY c_id ON c (id); cannot run" in result.stderr
    assert "a migration of its own" in result.stderr


# ----- a database sqlx manages -----------------------------------------------------------------


@pytest.mark.db
def test_a_database_sqlx_migrated_half_way_is_adopted_and_finished(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = sqlx_app(app, SET)
    apply_as_sqlx(database_url, folder, only=2)
    before = rows(database_url, "SELECT * FROM _sqlx_migrations ORDER BY version")

    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "Adopted 2 migration(s) already applied by sqlx" in result.stdout
    after = rows(database_url, "SELECT * FROM _sqlx_migrations ORDER BY version")
    assert after[:2] == before  # sqlx's own rows untouched
    assert [r[0] for r in after] == [1, 2, 3, 10]
    apply_as_sqlx(pg_server.url(tool_db), folder)
    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )
    assert sqlx_would_apply(database_url, folder) == []
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert "Database is up to date (4 migration(s) applied, none pending)" in again.stdout


@pytest.mark.db
def test_a_revert_deletes_sqlxs_row_as_sqlx_does(dbname: str, database_url: str, app: Path) -> None:
    files = {k: v for k, v in SET.items() if not k.startswith("10_")}
    folder = sqlx_app(app, files)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    result = run_cli(["down", "2", "--yes"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert [r[0] for r in rows(database_url, "SELECT version FROM _sqlx_migrations")] == [1]
    assert "posts" not in tables(database_url)
    assert sqlx_would_apply(database_url, folder) == ["2", "3"]


@pytest.mark.db
def test_a_row_sqlx_marks_failed_is_refused_with_the_fix(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    sqlx_app(app, SET)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SQLX_DDL)
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum,"
            " execution_time) VALUES (1, 'create users', false, '\\x00', -1)"
        )
    before = snapshot(pg_server, dbname)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 2, result.output
    assert "marks migration 1 as failed (success = false)" in result.stderr
    assert "heroku-migrate resolve 1 --applied" in result.stderr
    assert snapshot(pg_server, dbname) == before


@pytest.mark.db
def test_resolve_settles_a_failed_sqlx_row_as_applied_or_rolled_back(database_url: str) -> None:
    name = NativeName("_sqlx_migrations")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SQLX_DDL)
        insert = (
            "INSERT INTO _sqlx_migrations (version, description, success, checksum,"
            " execution_time) VALUES (%s, 'x', false, '\\x00', -1)"
        )
        conn.execute(insert, (1,))
        conn.execute(insert, (2,))
        table = SqlxTable.read(conn, name)
        failure = table.failure()
        assert failure is not None
        assert failure.version == Version((1,), "1", "1", 1)
        one, two = (Version((n,), str(n), str(n), n) for n in (1, 2))
        table.resolve(conn, one, "applied")
        table.resolve(conn, two, "rolled-back")
        assert rows(conn, "SELECT version, success FROM _sqlx_migrations") == [(1, True)]
        assert SqlxTable.read(conn, name).failure() is None
        with pytest.raises(BadInput, match="no failed row for version 1"):
            table.resolve(conn, one, "rolled-back")


@pytest.mark.db
def test_an_applied_file_edited_since_sqlx_ran_it_is_refused_then_accepted(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    folder = sqlx_app(app, SET)
    apply_as_sqlx(database_url, folder, only=1)
    with (folder / "0001_create_users.sql").open("a") as edited:
        edited.write("-- edited after it ran\n")
    before = snapshot(pg_server, dbname)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 2, result.output
    assert "0001_create_users.sql: changed after it was applied" in result.stderr
    assert snapshot(pg_server, dbname) == before
    with pytest.raises(SqlxRefuses, match="has been modified"):
        sqlx_would_apply(database_url, folder)

    accepted = run_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_ALLOW_CHANGED": "true"}
    )
    assert accepted.returncode == 0, accepted.output
    # sqlx's table holds the edited file's checksum: the app's own check at boot passes.
    assert sqlx_would_apply(database_url, folder) == []


@pytest.mark.db
def test_an_applied_version_whose_file_is_gone_is_reported_as_sqlx_would(
    dbname: str, database_url: str, app: Path
) -> None:
    folder = sqlx_app(app, SET)
    apply_as_sqlx(database_url, folder)
    (folder / "10_slow_seed.sql").unlink()
    result = run_cli(["up"], cwd=app, database_url=database_url)
    # As after `heroku rollback`: it stays applied, and the release goes on; sqlx's own check
    # would refuse to start, which the warning says.
    assert result.returncode == 0, result.output
    assert "_sqlx_migrations (sqlx) has 1 migration(s) these files do not: 10" in result.stderr
    assert "VersionMissing" in result.stderr
    with pytest.raises(SqlxRefuses, match="missing"):
        sqlx_would_apply(database_url, folder)


@pytest.mark.db
def test_a_failed_release_undoes_all_of_a_no_transaction_file_not_its_first_statement(
    dbname: str, database_url: str, app: Path
) -> None:
    # The file ran whole (one query) before a later migration failed: compensation must see
    # all of it as run, not just its first statement (an index build it could drop alone).
    files = {
        "1_t.up.sql": "CREATE TABLE t (a int);\n",
        "1_t.down.sql": "DROP TABLE t;\n",
        "2_mixed.up.sql": (
            "-- no-transaction\nCREATE INDEX t_a ON t (a);\nCREATE INDEX t_a2 ON t (a);\n"
            "CREATE TABLE z (id int);\n"
        ),
        "2_mixed.down.sql": "DROP TABLE z;\nDROP INDEX t_a2;\nDROP INDEX t_a;\n",
        "3_fails.sql": "SELECT 1/0;\n",
    }
    sqlx_app(app, files)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1, result.output
    assert "reverted 2_mixed" in result.stderr, result.output
    assert tables(database_url) == []  # z, t and our first-release tables: all gone
