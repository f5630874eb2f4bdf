"""Whose files a top-level `migrations/` holds, where sqlx, Diesel, golang-migrate, dbmate and
goose all keep theirs: decided once for the folder (formatchoice.py), from the `tool` setting,
the tools' markers in the files, the app's own files, the names; the build says which and why,
and an ambiguous folder fails the build naming what it saw (through the real buildpack:
test_rust_apps_buildpack.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from herokumigrate.config import load_config
from herokumigrate.errors import BadInput
from herokumigrate.source import load_migrations
from support import run_cli

SQLX_CARGO = '[package]\nname = "app"\nversion = "0.1.0"\n\n[dependencies]\nsqlx = "0.8"\n'
PAIR = {"1_a.up.sql": "CREATE TABLE a (id int);\n", "1_a.down.sql": "DROP TABLE a;\n"}
DBMATE = {"2_b.sql": "-- migrate:up\nCREATE TABLE b (id int);\n-- migrate:down\nDROP TABLE b;\n"}
GOOSE = {"3_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n"}


def folder_of(app: Path, files: dict[str, str], folder: str = "migrations") -> Path:
    root = app / folder
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def read(app: Path, tool: str | None = None) -> tuple[set[str], str]:
    """The formats of the migrations the app's folder holds, and `validate`'s Format line."""
    config = load_config(app, {"MIGRATE_TOOL": tool} if tool else {})
    migrations = load_migrations(config.migrations_dir, app, config.tool)
    result = run_cli(["validate"], cwd=app, env={"MIGRATE_TOOL": tool} if tool else None)
    assert result.returncode == 0, result.output
    line = next(x.strip() for x in result.stdout.splitlines() if "Format:" in x)
    return {m.format for m in migrations}, line


def test_go_tools_files_still_work_in_migrations(app: Path) -> None:
    folder_of(app, {**PAIR, **DBMATE, **GOOSE})
    formats, line = read(app)
    assert formats == {"golang-migrate", "dbmate", "goose"}
    assert "dbmate (line 1)" in line


def test_up_sql_pairs_alone_are_golang_migrates_unless_the_app_names_sqlx(app: Path) -> None:
    folder_of(app, PAIR)
    formats, line = read(app)
    assert formats == {"golang-migrate"}
    assert "fit golang-migrate and sqlx, and nothing in the app names sqlx" in line
    (app / "Cargo.toml").write_text(SQLX_CARGO)
    formats, line = read(app)
    assert formats == {"sqlx"}
    assert line == "Format: sqlx (Cargo.toml depends on sqlx)"


@pytest.mark.parametrize(
    ("sign", "said"),
    [
        ("sqlx.toml", "sqlx.toml exists"),
        (".sqlx/query-1.json", "the app holds .sqlx/ (sqlx's query data)"),
        ("Cargo.toml", "Cargo.toml depends on sqlx"),
    ],
)
def test_each_sign_of_sqlx_in_the_app_is_read(app: Path, sign: str, said: str) -> None:
    folder_of(app, PAIR)
    (app / sign).parent.mkdir(parents=True, exist_ok=True)
    content = {"sqlx.toml": "[migrate]\n", "Cargo.toml": SQLX_CARGO}.get(sign, "{}")
    (app / sign).write_text(content)
    assert read(app) == ({"sqlx"}, f"Format: sqlx ({said})")


def test_a_workspace_crate_with_its_own_migrations_is_read_as_sqlx(app: Path) -> None:
    (app / "Cargo.toml").write_text('[workspace]\nmembers = ["server"]\n')
    folder_of(app, PAIR, folder="server/migrations")
    (app / "server/Cargo.toml").write_text(SQLX_CARGO)
    (app / "migrate.toml").write_text('path = "server/migrations"\n')
    assert read(app) == ({"sqlx"}, "Format: sqlx (server/Cargo.toml depends on sqlx)")


def test_a_renamed_sqlx_dependency_is_a_sign_too(app: Path) -> None:
    folder_of(app, PAIR)
    (app / "Cargo.toml").write_text(
        '[package]\nname = "app"\n\n[dependencies]\ndb = { package = "sqlx", version = "0.8" }\n'
    )
    assert read(app)[0] == {"sqlx"}


def test_plain_sql_files_are_sqlxs_simple_migrations(app: Path) -> None:
    folder_of(app, {"1_a.sql": "CREATE TABLE a (id int);\n", "2_b.sql": "SELECT 1;\n"})
    formats, line = read(app)
    assert formats == {"sqlx"}
    assert "1_a.sql (it has no '-- migrate:up' or '-- +goose Up'): only sqlx reads it" in line


def test_the_tools_markers_win_over_the_apps_signs(app: Path) -> None:
    # A Rust app that uses sqlx for queries and dbmate for migrations.
    (app / "Cargo.toml").write_text(SQLX_CARGO)
    folder_of(app, DBMATE)
    assert read(app)[0] == {"dbmate"}


def test_diesel_folders_are_diesels(app: Path) -> None:
    folder_of(app, {"2024-01-01-000000_a/up.sql": "SELECT 1;\n"})
    assert read(app)[0] == {"diesel"}


@pytest.mark.parametrize(
    ("files", "seen"),
    [
        (
            {**DBMATE, "3_c.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY c ON b (id);\n"},
            ["golang-migrate, dbmate and goose: 2_b.sql: dbmate (line 1)", "sqlx: 3_c.sql: sqlx's"],
        ),
        (
            {**DBMATE, "2024-01-01-000000_a/up.sql": "SELECT 1;\n"},
            ["2_b.sql: dbmate (line 1)", "diesel: 2024-01-01-000000_a: a folder holding up.sql"],
        ),
    ],
    ids=["dbmate-and-sqlx", "dbmate-and-diesel"],
)
def test_a_folder_with_two_tools_markers_fails_naming_what_it_saw(
    app: Path, files: dict[str, str], seen: list[str]
) -> None:
    folder_of(app, files)
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 2, result.output
    assert "the migrations folder holds markers of several tools" in result.stderr
    for text in seen:
        assert text in result.stderr, result.stderr
    assert "set the `tool` setting" in result.stderr


def test_an_unannotated_file_among_dbmates_is_still_reported_as_before(app: Path) -> None:
    folder_of(app, {**DBMATE, "3_c.sql": "CREATE TABLE c (id int);\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(app / "migrations", app)
    assert "3_c.sql: has neither a '-- migrate:up' (dbmate) nor a '-- +goose Up'" in (
        caught.value.message
    )


def test_the_tool_setting_decides_and_is_checked(app: Path) -> None:
    folder_of(app, PAIR)
    assert read(app, "sqlx") == (
        {"sqlx"},
        "Format: sqlx (set by the `tool` setting (MIGRATE_TOOL, or `tool` in migrate.toml))",
    )
    result = run_cli(["validate"], cwd=app, env={"MIGRATE_TOOL": "flyway-ish"})
    assert result.returncode == 2, result.output
    assert "MIGRATE_TOOL: invalid value 'flyway-ish' for tool" in result.stderr
    assert "golang-migrate, dbmate, goose, sqlx, diesel" in result.stderr


def test_another_tools_file_in_a_folder_set_to_one_tool_is_refused(app: Path) -> None:
    folder_of(app, {**PAIR, "2024-01-01-000000_a/up.sql": "SELECT 1;\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(app / "migrations", app, "sqlx")
    assert "2024-01-01-000000_a: a diesel migration in a folder of sqlx migrations" in str(
        caught.value.details or caught.value.message
    )


@pytest.mark.db
def test_a_tools_table_the_files_are_not_read_for_is_pointed_out(
    database_url: str, app: Path
) -> None:
    # sqlx migrated the database; the app's folder of .up.sql files shows no sign of sqlx.
    folder_of(app, PAIR)
    assert (
        run_cli(["up"], cwd=app, database_url=database_url, env={"MIGRATE_TOOL": "sqlx"}).returncode
        == 0
    )
    # Read as golang-migrate's, each file has another checksum: the fix names the setting first.
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 2, result.output
    assert "1_a.up.sql: changed after it was applied" in result.stderr
    assert "If sqlx applies this folder, set the `tool` setting (MIGRATE_TOOL=sqlx)" in (
        result.stderr
    )
    # With the edit accepted, the table found still says whose it is.
    env = {"MIGRATE_ALLOW_CHANGED": "true"}
    allowed = run_cli(["up"], cwd=app, database_url=database_url, env=env)
    assert allowed.returncode == 0, allowed.output
    assert "The database's _sqlx_migrations is sqlx's, but the files were read as" in (
        allowed.stderr
    )


def test_the_folder_found_is_said_to_be_the_tool_the_app_names(app: Path) -> None:
    folder_of(app, PAIR)
    assert "golang-migrate" in load_config(app, {}).path_origin
    (app / "Cargo.toml").write_text(SQLX_CARGO)
    config = load_config(app, {})
    assert (config.path, config.path_origin) == ("migrations", "sqlx's folder")
    (app / "Cargo.toml").write_text(SQLX_CARGO.replace("sqlx", "diesel"))
    assert load_config(app, {}).path_origin == "Diesel's folder"


def test_src_migrations_is_looked_at_only_in_an_app_that_uses_diesel(app: Path) -> None:
    folder_of(app, {"2024-01-01-000000_a/up.sql": "SELECT 1;\n"}, folder="src/migrations")
    assert load_config(app, {}).path == "db/migrations"  # a TypeScript app's, say: not ours
    (app / "Cargo.toml").write_text(SQLX_CARGO.replace("sqlx", "diesel"))
    config = load_config(app, {})
    assert (config.path, config.path_origin) == (
        "src/migrations",
        "where Diesel's embed_migrations!() looks first",
    )
