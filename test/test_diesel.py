"""Diesel's migrations, read, applied and recorded as diesel_migrations does (migrations_internals,
file_based_migrations.rs, migration_harness.rs): a folder per migration in both name forms,
versions ordered as strings, `metadata.toml` with and without its key, an empty `up.sql`, the
set-up migration `diesel setup` writes, `__diesel_schema_migrations` rows, a database Diesel
migrated half-way adopted, reverts. The oracle is Diesel's behaviour written in rust_tools.py
from its source (cargo cannot fetch Diesel here).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from herokumigrate.errors import BadInput
from herokumigrate.source import load_migrations
from rust_tools import apply_as_diesel, diesel_folder, diesel_would_apply, schema_without_ours
from support import Server, rows, run_cli, scalar, tables

# Shaped like the set-up migration `diesel setup` writes (our own text): a helper function and
# a trigger function, bodies in dollar quotes holding `;`.
INITIAL_SETUP = """-- Helper functions, written by the set-up.

CREATE OR REPLACE FUNCTION app_manage_updated_at(_tbl regclass) RETURNS VOID AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER set_updated_at BEFORE UPDATE ON %s
                    FOR EACH ROW EXECUTE PROCEDURE app_set_updated_at()', _tbl);
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION app_set_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := current_timestamp;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""

# Both name forms (the CLI's older `YYYY-MM-DD-HHMMSS` and current `...-0000`), a metadata.toml
# turning the transaction off for a concurrent build, and the set-up migration.
SET: dict[str, str] = {
    "00000000000000_diesel_initial_setup/up.sql": INITIAL_SETUP,
    "00000000000000_diesel_initial_setup/down.sql": (
        "DROP FUNCTION IF EXISTS app_manage_updated_at(_tbl regclass);\n"
        "DROP FUNCTION IF EXISTS app_set_updated_at();\n"
    ),
    "2019-02-26-002946_create_users/up.sql": (
        "CREATE TABLE users (id serial PRIMARY KEY, name text, updated_at timestamp NOT NULL"
        " DEFAULT now());\nSELECT app_manage_updated_at('users');\n"
    ),
    "2019-02-26-002946_create_users/down.sql": "DROP TABLE users;\n",
    "2024-05-01-101010-0000_users_by_name/up.sql": (
        "CREATE INDEX CONCURRENTLY users_by_name ON users (name);\n"
    ),
    "2024-05-01-101010-0000_users_by_name/down.sql": "DROP INDEX CONCURRENTLY users_by_name;\n",
    "2024-05-01-101010-0000_users_by_name/metadata.toml": "run_in_transaction = false\n",
    "2024-06-01-000000-0000_posts/up.sql": (
        "CREATE TABLE posts (id serial PRIMARY KEY, user_id int REFERENCES users);\n"
    ),
    "2024-06-01-000000-0000_posts/down.sql": "DROP TABLE posts;\n",
}


def diesel_app(app: Path, files: dict[str, str], folder: str = "migrations") -> Path:
    """A Rust app's Diesel folder holding `files` (`folder/file` -> content)."""
    root = app / folder
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


@pytest.fixture
def tool_db(pg_server: Server) -> str:
    """A second database, for Diesel's own way of applying the same folders."""
    name = pg_server.create_database()
    yield name  # type: ignore[misc]
    pg_server.drop_database_soon(name)


# ----- reading the folder (no database) ------------------------------------------------------


def test_both_name_forms_give_diesels_version_strings(app: Path) -> None:
    folder = diesel_app(app, SET)
    migrations = load_migrations(folder, app)
    assert [(m.format, m.version.canonical, m.label) for m in migrations] == [
        ("diesel", "00000000000000", "00000000000000_diesel_initial_setup"),
        ("diesel", "20190226002946", "2019-02-26-002946_create_users"),
        ("diesel", "202405011010100000", "2024-05-01-101010-0000_users_by_name"),
        ("diesel", "202406010000000000", "2024-06-01-000000-0000_posts"),
    ]
    assert [m.version.canonical for m in migrations] == [m.version for m in diesel_folder(folder)]
    assert [m.up.transaction for m in migrations] == [True, True, False, True]
    index = migrations[2]
    assert index.down is not None
    assert not index.down.transaction  # metadata.toml covers the revert too


def test_versions_are_ordered_as_strings_not_numbers(app: Path) -> None:
    folder = diesel_app(app, {"9_b/up.sql": "SELECT 9;\n", "10_a/up.sql": "SELECT 10;\n"})
    assert [m.version.canonical for m in load_migrations(folder, app)] == ["10", "9"]


@pytest.mark.parametrize(
    ("metadata", "in_transaction"),
    [
        (None, True),  # no metadata.toml: in a transaction
        ("run_in_transaction = false\n", False),
        ("run_in_transaction = true\n", True),
        ("# a present file without the key\n", False),  # serde's default for a bool
        ("other_key = 1\n", False),
        ("run_in_transaction = 'no'\n", True),  # a wrong type: Diesel falls back to its default
        ("not toml at all [\n", True),  # Diesel ignores a file it cannot parse
    ],
)
def test_metadata_toml_is_read_as_diesel_reads_it(
    app: Path, metadata: str | None, in_transaction: bool
) -> None:
    files = {"2024-01-01-000000_a/up.sql": "CREATE TABLE a (id int);\n"}
    if metadata is not None:
        files["2024-01-01-000000_a/metadata.toml"] = metadata
    folder = diesel_app(app, files)
    [m] = load_migrations(folder, app)
    assert m.up.transaction is in_transaction
    assert diesel_folder(folder)[0].in_transaction is in_transaction


def test_an_empty_up_sql_fails_the_build_with_diesels_error(app: Path) -> None:
    diesel_app(app, {"2024-01-01-000000_a/up.sql": "", "2024-01-02-000000_b/up.sql": "  \n"})
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 2, result.output
    assert "2024-01-01-000000_a/up.sql: is empty; Diesel refuses to run it" in result.stderr
    assert "Attempted to run an empty migration" in result.stderr
    assert "2024-01-02" not in result.stderr  # blank is not empty: Diesel runs it


def test_a_folder_without_up_sql_fails_as_diesel_fails_and_an_empty_one_is_skipped(
    app: Path,
) -> None:
    folder = diesel_app(app, {"2024-01-01-000000_a/up.sql": "SELECT 1;\n"})
    (folder / "2024-01-02-000000_empty").mkdir()
    assert len(load_migrations(folder, app)) == 1
    (folder / "2024-01-03-000000_b").mkdir()
    (folder / "2024-01-03-000000_b" / "down.sql").write_text("SELECT 1;\n")
    with pytest.raises(BadInput) as caught:
        load_migrations(folder, app)
    assert "2024-01-03-000000_b/: holds no up.sql; Diesel fails on such a folder" in str(
        caught.value.message
    )


def test_diesel_toml_names_the_folder(app: Path) -> None:
    (app / "diesel.toml").write_text('[migrations_directory]\ndir = "db/diesel"\n')
    diesel_app(app, {"2024-01-01-000000_a/up.sql": "SELECT 1;\n"}, folder="db/diesel")
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 0, result.output
    assert "Validated 1 migration(s) in db/diesel" in result.stdout
    assert "Format: diesel (2024-01-01-000000_a: a folder holding up.sql (Diesel))" in (
        result.stdout
    )


# ----- applied as Diesel applies them --------------------------------------------------------


@pytest.mark.db
def test_a_set_applies_as_diesel_would_schema_and_rows_alike(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = diesel_app(app, SET)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    apply_as_diesel(pg_server.url(tool_db), folder)
    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )
    query = "SELECT version FROM __diesel_schema_migrations ORDER BY version"
    assert rows(database_url, query) == rows(pg_server.url(tool_db), query)
    assert [r[0] for r in rows(database_url, query)] == [
        "00000000000000",
        "20190226002946",
        "202405011010100000",
        "202406010000000000",
    ]
    assert diesel_would_apply(database_url, folder) == []
    # The set-up migration's helper works: the trigger it installs sets updated_at.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name, updated_at) VALUES ('a', '2000-01-01')")
        conn.execute("UPDATE users SET name = 'b'")
        assert scalar(conn, "SELECT updated_at > '2000-01-01' FROM users") is True


@pytest.mark.db
def test_string_order_is_the_order_applied(
    dbname: str, database_url: str, tool_db: str, pg_server: Server, app: Path
) -> None:
    # `10_` runs before `9_` in Diesel: the table 9 alters must exist by then.
    folder = diesel_app(
        app,
        {
            "9_widen/up.sql": "ALTER TABLE t ADD COLUMN wide text;\n",
            "10_create/up.sql": "CREATE TABLE t (id int);\n",
        },
    )
    apply_as_diesel(pg_server.url(tool_db), folder)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert result.stdout.index("10_create") < result.stdout.index("9_widen")
    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )


@pytest.mark.db
def test_a_migration_outside_a_transaction_is_one_query_all_or_nothing(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    files = {
        "2024-01-01-000000_ok/up.sql": "CREATE TABLE ok (id int);\n",
        "2024-01-01-000000_ok/down.sql": "DROP TABLE ok;\n",
        "2024-01-02-000000_half/up.sql": (
            "CREATE TABLE a (id int);\nINSERT INTO missing VALUES (1);\n"
        ),
        "2024-01-02-000000_half/metadata.toml": "run_in_transaction = false\n",
    }
    folder = diesel_app(app, files)
    with pytest.raises(psycopg.errors.UndefinedTable):
        apply_as_diesel(pg_server.url(tool_db), folder)
    assert "a" not in tables(pg_server.url(tool_db))  # batch_execute: one implicit transaction
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1, result.output
    assert "2024-01-02-000000_half/up.sql: line 2" in result.stderr, result.output
    assert "a" not in tables(database_url)
    assert "ok" not in tables(database_url)  # the release: all or none


# ----- a database Diesel manages ---------------------------------------------------------------


@pytest.mark.db
def test_a_database_diesel_migrated_half_way_is_adopted_and_finished(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = diesel_app(app, SET)
    apply_as_diesel(database_url, folder, only=2)
    before = rows(database_url, "SELECT * FROM __diesel_schema_migrations ORDER BY version")
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "Adopted 2 migration(s) already applied by diesel" in result.stdout
    after = rows(database_url, "SELECT * FROM __diesel_schema_migrations ORDER BY version")
    assert after[:2] == before  # Diesel's own rows (their run_on) untouched
    assert len(after) == 4
    apply_as_diesel(pg_server.url(tool_db), folder)
    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )
    assert diesel_would_apply(database_url, folder) == []


@pytest.mark.db
def test_a_revert_deletes_diesels_row_as_diesel_does(
    dbname: str, database_url: str, app: Path
) -> None:
    folder = diesel_app(app, SET)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    result = run_cli(["down", "2", "--yes"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    versions = [r[0] for r in rows(database_url, "SELECT version FROM __diesel_schema_migrations")]
    assert sorted(versions) == ["00000000000000", "20190226002946"]
    assert diesel_would_apply(database_url, folder) == ["202405011010100000", "202406010000000000"]
    status = run_cli(["status"], cwd=app, database_url=database_url)
    assert "202405011010100000  pending" in status.stdout, status.output


def test_diesels_table_is_told_from_dbmates_by_its_columns() -> None:
    from herokumigrate.native.dbmate import DbmateTable
    from herokumigrate.native.diesel import DieselTable

    diesel = {"version": "character varying(50)", "run_on": "timestamp without time zone"}
    dbmate = {"version": "character varying(128)"}
    assert (DieselTable.recognizes(diesel), DbmateTable.recognizes(diesel)) == (True, False)
    assert (DieselTable.recognizes(dbmate), DbmateTable.recognizes(dbmate)) == (False, True)
