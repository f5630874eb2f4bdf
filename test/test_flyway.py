"""Flyway's folders, found, read, applied and recorded as `flyway migrate` does (flyway-core,
FORMATS.md): `V<version>__<description>.sql` in version order (numeric parts, `_` as `.`,
leading zeros kept in the text), then `R__` repeatables by description (run again when they
change, a new row each time), Flyway's CRC-32 checksums, `.sql.conf`, placeholders,
`flyway_schema_history` rows as Flyway writes them, a database Flyway migrated half-way
adopted, Flyway's failed rows and out-of-order versions refused with the fix, its lock held.
The oracle is prisma_flyway_tools.py (Flyway itself needs Maven Central, not reachable here).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from herokumigrate.buildpack.detect import applies
from herokumigrate.config import load_config
from herokumigrate.errors import BadInput
from herokumigrate.formats.flyway import checksum_of
from herokumigrate.native.flyway import lock_key
from herokumigrate.source import load_migrations
from prisma_flyway_tools import (
    FLYWAY_ROWS,
    ToolRefuses,
    apply_as_flyway,
    flyway_crc,
    flyway_folder,
    flyway_would_apply,
)
from rust_tools import schema_without_ours
from support import TEST_ROLE, Server, rows, run_cli, scalar, tables

FOLDER = "src/main/resources/db/migration"
# A Spring Boot app's set: dotted and underscored versions, a leading zero, a version that
# sorts after 1.2 as a number and before it as text (1.10), CRLF and BOM files, repeatable
# views (run after every version, by description), a Teams-only undo file.
SET: dict[str, str | bytes] = {
    "V1__create_users.sql": "CREATE TABLE users (id bigserial PRIMARY KEY, email text);\n",
    "V1.1__add_name.sql": b"ALTER TABLE users ADD name text;\r\n",
    "V1_2__add_posts.sql": (
        "CREATE TABLE posts (id bigserial PRIMARY KEY, user_id bigint REFERENCES users);\n"
    ),
    "V1.10__posts_title.sql": b"\xef\xbb\xbfALTER TABLE posts ADD title text;\n",
    "V02__function.sql": (
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.email := lower(NEW.email); RETURN NEW; END;\n$$;\n"
        "CREATE TRIGGER users_touch BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION touch();\n"
    ),
    "R__b_views.sql": "CREATE OR REPLACE VIEW user_posts AS SELECT u.id, p.title FROM users u"
    " JOIN posts p ON p.user_id = u.id;\n",
    "R__a_views.sql": "CREATE OR REPLACE VIEW user_emails AS SELECT id, email FROM users;\n",
    "U1.1__add_name.sql": "ALTER TABLE users DROP name;\n",
}


def flyway_app(app: Path, files: dict[str, str | bytes], folder: str = FOLDER) -> Path:
    """A Spring Boot app: pom.xml naming Flyway, `files` in its migration folder."""
    where = app / folder
    where.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (where / name).write_bytes(data)
    (app / "pom.xml").write_text(
        "<project><dependencies><dependency><groupId>org.flywaydb</groupId>"
        "<artifactId>flyway-core</artifactId></dependency></dependencies></project>\n"
    )
    return where


@pytest.fixture
def tool_db(pg_server: Server) -> str:
    """A second database, for Flyway's own way of applying the same files."""
    name = pg_server.create_database()
    yield name  # type: ignore[misc]
    pg_server.drop_database_soon(name)


# ----- reading the folder (no database) ------------------------------------------------------


def test_versions_and_repeatables_are_ordered_and_named_as_flyway_does(app: Path) -> None:
    folder = flyway_app(app, SET)
    migrations = load_migrations(folder, app)
    assert [m.version.canonical for m in migrations] == [
        "1",
        "1.1",
        "1.2",
        "1.10",
        "02",
        "R__a_views",
        "R__b_views",
    ]
    assert [m.version.canonical for m in migrations] == [
        s.version or f"R__{s.description.replace(' ', '_')}" for s in flyway_folder(folder)
    ]
    assert {m.format for m in migrations} == {"flyway"}
    assert [m.repeatable for m in migrations] == [False] * 5 + [True] * 2
    assert all(m.down is None for m in migrations)  # the U file is never run


def test_checksums_are_flyways_crc32_the_same_for_lf_crlf_and_bom(app: Path) -> None:
    assert checksum_of("CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n") == -279898995
    lf = "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n"
    assert checksum_of(lf.replace("\n", "\r\n")) == checksum_of("\ufeff" + lf) == -279898995
    folder = flyway_app(app, SET)
    ours = {m.up.path.name: int(m.checksum) for m in load_migrations(folder, app)}
    assert ours == {s.script: s.checksum for s in flyway_folder(folder)}


def test_one_version_written_twice_is_refused_as_flyway_refuses_it(app: Path) -> None:
    folder = flyway_app(app, {"V1__a.sql": "SELECT 1;\n", "V1.0__b.sql": "SELECT 2;\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(folder, app)
    assert "version 1 is also used by V1.0__b.sql" in caught.value.message


def test_the_folder_is_found_with_no_path_setting_spring_boot_and_cli(app: Path) -> None:
    flyway_app(app, SET)
    assert applies(app)
    assert load_config(app, {}).path == FOLDER
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 0, result.output
    assert f"Validated 7 migration(s) in {FOLDER}" in result.stdout
    assert "Format: flyway (" in result.stdout


def test_the_flyway_cli_folder_is_found_too(app: Path) -> None:
    flyway_app(app, {"V1__a.sql": "SELECT 1;\n"}, folder="db/migration")
    assert load_config(app, {}).path == "db/migration"


@pytest.mark.parametrize(
    ("config", "text", "folder"),
    [
        (
            "application.properties",
            "server.port=8080\nspring.flyway.locations=classpath:db/migration/{vendor},"
            "classpath:db/other\n",
            "src/main/resources/db/migration/postgresql",
        ),
        (
            "application.yml",
            "spring:\n  datasource:\n    url: x\n  flyway:\n    enabled: true\n"
            "    locations:\n      - classpath:db/flyway\n",
            "src/main/resources/db/flyway",
        ),
        (
            "application.yaml",
            "spring:\n  flyway.locations: 'filesystem:sql/migrations'\n",
            "sql/migrations",
        ),
    ],
)
def test_the_location_spring_boot_names_is_found(
    app: Path, config: str, text: str, folder: str
) -> None:
    (app / "src/main/resources").mkdir(parents=True)
    (app / "src/main/resources" / config).write_text(text)
    flyway_app(app, {"V1__a.sql": "CREATE TABLE a (id int);\n"}, folder=folder)
    found = load_config(app, {})
    assert found.path == folder
    assert "spring.flyway.locations" in found.path_origin
    assert applies(app)


def test_flyway_locations_config_var_names_the_folder(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flyway_app(app, {"V1__a.sql": "CREATE TABLE a (id int);\n"}, folder="db/pg")
    monkeypatch.setenv("FLYWAY_LOCATIONS", "filesystem:db/pg")
    assert load_config(app, {}).path == "db/pg"


def test_a_callback_script_is_refused_naming_it(app: Path) -> None:
    folder = flyway_app(app, {"V1__a.sql": "SELECT 1;\n", "afterMigrate.sql": "SELECT 2;\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(folder, app)
    assert "afterMigrate.sql: a Flyway callback script" in caught.value.message


BASELINED = {
    "V1__a.sql": "CREATE TABLE a (id int);\n",
    "V2__b.sql": "CREATE TABLE b (id int);\n",
    "B2__base.sql": "CREATE TABLE a (id int);\nCREATE TABLE b (id int, note text);\n",
    "V3__c.sql": "CREATE TABLE c (id int);\n",
    "R__v.sql": "CREATE OR REPLACE VIEW v AS SELECT id FROM b;\n",
}


@pytest.mark.db
def test_a_baseline_migration_runs_instead_of_the_versions_it_covers_on_an_empty_history(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = flyway_app(app, BASELINED)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    apply_as_flyway(pg_server.url(tool_db), folder)
    ours = rows(database_url, FLYWAY_ROWS)
    assert ours == rows(pg_server.url(tool_db), FLYWAY_ROWS)
    assert [(r[1], r[3], r[4]) for r in ours] == [
        ("2", "SQL_BASELINE", "B2__base.sql"),
        ("3", "SQL", "V3__c.sql"),
        (None, "SQL", "R__v.sql"),
    ]
    assert "note" in str(
        rows(database_url, "SELECT attname FROM pg_attribute WHERE attrelid = 'b'::regclass")
    )
    assert flyway_would_apply(database_url, folder) == []
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0, again.output
    assert "Applying" not in again.stdout  # V1, V2 adopted as below the baseline


@pytest.mark.db
def test_a_baseline_migration_is_ignored_once_anything_is_applied(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = flyway_app(app, {k: v for k, v in BASELINED.items() if k == "V1__a.sql"})
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    apply_as_flyway(pg_server.url(tool_db), folder)
    flyway_app(app, BASELINED)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    apply_as_flyway(pg_server.url(tool_db), folder)
    assert rows(database_url, FLYWAY_ROWS) == rows(pg_server.url(tool_db), FLYWAY_ROWS)
    assert [r[4] for r in rows(database_url, FLYWAY_ROWS)] == [
        "V1__a.sql",
        "V2__b.sql",
        "V3__c.sql",
        "R__v.sql",
    ]
    assert flyway_would_apply(database_url, folder) == []


def test_placeholders_are_replaced_from_flyways_config_vars(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "V1__a.sql": "-- for ${owner}\nCREATE TABLE ${flyway:table}_x (id int);\n"
        "GRANT SELECT ON ${flyway:table}_x TO ${Owner};\n",
        "V2__literal.sql": "SELECT '${not_a_placeholder}';\n",
        "V2__literal.sql.conf": "placeholderReplacement=false\n",
    }
    folder = flyway_app(app, files)
    monkeypatch.setenv("FLYWAY_PLACEHOLDERS_OWNER", "app_reader")
    first, literal = load_migrations(folder, app)
    assert first.up.text == (
        "-- for app_reader\nCREATE TABLE flyway_schema_history_x (id int);\n"
        "GRANT SELECT ON flyway_schema_history_x TO app_reader;\n"
    )
    assert literal.up.text == "SELECT '${not_a_placeholder}';\n"
    # A versioned script's checksum is that of the file as written.
    assert int(first.checksum) == flyway_crc(files["V1__a.sql"])


def test_an_unknown_placeholder_fails_the_build_naming_file_line_and_name(app: Path) -> None:
    flyway_app(app, {"V1__a.sql": "SELECT 1;\nCREATE TABLE t (owner text DEFAULT '${owner}');\n"})
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 2, result.output
    assert "V1__a.sql: line 2: unknown placeholder ${owner}" in result.stderr
    assert "FLYWAY_PLACEHOLDERS_OWNER" in result.stderr


# ----- applied as Flyway applies them ----------------------------------------------------------


ROW_COLUMNS = (
    "SELECT installed_rank, version, description, type, script, checksum, installed_by, success"
    " FROM flyway_schema_history ORDER BY installed_rank"
)


@pytest.mark.db
def test_a_set_applies_as_flyway_would_schema_and_rows_alike(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = flyway_app(app, SET)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    tool_url = pg_server.url(tool_db)
    apply_as_flyway(tool_url, folder)

    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )
    ours = rows(database_url, FLYWAY_ROWS)
    assert ours == rows(tool_url, FLYWAY_ROWS)
    assert [(r[1], r[2], r[4]) for r in ours] == [
        ("1", "create users", "V1__create_users.sql"),
        ("1.1", "add name", "V1.1__add_name.sql"),
        ("1.2", "add posts", "V1_2__add_posts.sql"),
        ("1.10", "posts title", "V1.10__posts_title.sql"),
        ("02", "function", "V02__function.sql"),
        (None, "a views", "R__a_views.sql"),
        (None, "b views", "R__b_views.sql"),
    ]
    assert flyway_would_apply(database_url, folder) == []  # `flyway migrate` does nothing
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert "Database is up to date (7 migration(s) applied, none pending)" in again.stdout


@pytest.mark.db
def test_a_changed_repeatable_runs_again_with_a_new_row_as_in_flyway(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = flyway_app(app, SET)
    tool_url = pg_server.url(tool_db)
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    apply_as_flyway(tool_url, folder)
    (folder / "R__a_views.sql").write_text(
        "CREATE OR REPLACE VIEW user_emails AS SELECT id, email, name FROM users;\n"
    )
    assert flyway_would_apply(database_url, folder) == ["R__a_views.sql"]
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "R__a_views" in result.stdout
    apply_as_flyway(tool_url, folder)
    assert rows(database_url, FLYWAY_ROWS) == rows(tool_url, FLYWAY_ROWS)
    assert len(rows(database_url, FLYWAY_ROWS)) == 8
    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )
    assert flyway_would_apply(database_url, folder) == []


@pytest.mark.db
def test_a_database_flyway_migrated_half_way_is_adopted_and_finished(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = flyway_app(app, SET)
    apply_as_flyway(database_url, folder, only=3)
    before = rows(database_url, "SELECT * FROM flyway_schema_history ORDER BY installed_rank")
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "Adopted 3 migration(s) already applied by flyway" in result.stdout
    after = rows(database_url, "SELECT * FROM flyway_schema_history ORDER BY installed_rank")
    assert after[:3] == before  # Flyway's own rows untouched
    apply_as_flyway(pg_server.url(tool_db), folder)
    assert rows(database_url, FLYWAY_ROWS) == rows(pg_server.url(tool_db), FLYWAY_ROWS)
    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )
    assert flyway_would_apply(database_url, folder) == []


@pytest.mark.db
def test_an_execute_in_transaction_false_script_runs_outside_the_transaction(
    dbname: str, database_url: str, app: Path
) -> None:
    files = {
        "V1__t.sql": "CREATE TABLE t (id int);\n",
        "V2__index.sql": "CREATE INDEX CONCURRENTLY t_id ON t (id);\nSELECT 1;\n",
        "V2__index.sql.conf": "# Flyway per-script config\nexecuteInTransaction=false\n",
    }
    folder = flyway_app(app, files)
    [_, index] = load_migrations(folder, app)
    assert not index.up.transaction
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "statements that must run outside a transaction" in result.stdout
    assert scalar(
        database_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id'::regclass"
    )


@pytest.mark.db
def test_flyways_failed_row_is_refused_before_any_change_with_the_fix(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    folder = flyway_app(app, {k: v for k, v in SET.items() if k.startswith("V1")})
    apply_as_flyway(database_url, folder, only=2)
    with psycopg.connect(database_url, autocommit=True) as conn:  # what a failed run leaves
        conn.execute("UPDATE flyway_schema_history SET success = false WHERE version = '1.1'")
    with pytest.raises(ToolRefuses):
        flyway_would_apply(database_url, folder)
    before = pg_server.pg_dump(dbname), rows(database_url, FLYWAY_ROWS)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 2, result.output
    assert "records a failed migration: version 1.1 (add name)" in result.stderr
    assert "heroku-migrate resolve 1.1 --applied" in result.stderr
    assert "flyway repair" in result.stderr
    assert (pg_server.pg_dump(dbname), rows(database_url, FLYWAY_ROWS)) == before


@pytest.mark.db
def test_an_out_of_order_version_is_refused_as_flyway_does_unless_allowed(
    dbname: str, database_url: str, app: Path
) -> None:
    folder = flyway_app(
        app, {"V1__a.sql": "CREATE TABLE a ();\n", "V3__c.sql": "CREATE TABLE c ();\n"}
    )
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    (folder / "V2__b.sql").write_text("CREATE TABLE b ();\n")
    with pytest.raises(ToolRefuses):
        flyway_would_apply(database_url, folder)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 2, result.output
    assert "older than the newest applied one (3): 2_b" in result.stderr
    assert "FLYWAY_OUT_OF_ORDER=true" in result.stderr
    assert "b" not in tables(database_url)
    allowed = run_cli(
        ["up"], cwd=app, database_url=database_url, env={"FLYWAY_OUT_OF_ORDER": "true"}
    )
    assert allowed.returncode == 0, allowed.output
    assert "b" in tables(database_url)


@pytest.mark.db
def test_an_applied_script_edited_since_is_refused(
    dbname: str, database_url: str, app: Path
) -> None:
    folder = flyway_app(app, {"V1__a.sql": "CREATE TABLE a (id int);\n"})
    apply_as_flyway(database_url, folder)
    (folder / "V1__a.sql").write_bytes(b"CREATE TABLE a (id int);\r\n")  # same checksum
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    (folder / "V1__a.sql").write_text("CREATE TABLE a (id bigint);\n")
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 2, result.output
    assert "V1__a.sql: changed after it was applied" in result.stderr


@pytest.mark.db
def test_flyways_lock_held_elsewhere_keeps_the_run_out(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    assert lock_key("public", "flyway_schema_history") == 77433833903597  # FORMATS.md
    flyway_app(app, SET)
    with pg_server.admin_conn(dbname) as other:  # a `flyway migrate` in its transaction
        other.execute("BEGIN")
        other.execute("SELECT pg_try_advisory_xact_lock(%s)", (77433833903597,))
        result = run_cli(["up"], cwd=app, database_url=database_url, env={"MIGRATE_LOCK_WAIT": "1"})
        other.execute("ROLLBACK")
    assert result.returncode == 3, result.output
    assert tables(database_url) == []


@pytest.mark.db
def test_resolve_settles_flyways_failed_row_as_flyway_repair_does(
    dbname: str, database_url: str, app: Path
) -> None:
    folder = flyway_app(app, {k: v for k, v in SET.items() if k.startswith("V1")})
    apply_as_flyway(database_url, folder, only=2)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE flyway_schema_history SET success = false WHERE version = '1.1'")
    result = run_cli(["resolve", "1.1", "--applied"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert flyway_would_apply(database_url, folder) == [
        "V1_2__add_posts.sql",
        "V1.10__posts_title.sql",
    ]
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    assert flyway_would_apply(database_url, folder) == []
    # Rolled back instead: Flyway's repair deletes the failed row, and the migration runs again.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE flyway_schema_history SET success = false WHERE version = '1.10'")
        conn.execute("ALTER TABLE posts DROP title")
    result = run_cli(["resolve", "1.10", "--rolled-back"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert flyway_would_apply(database_url, folder) == ["V1.10__posts_title.sql"]
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    assert flyway_would_apply(database_url, folder) == []
    assert scalar(database_url, "SELECT count(*) FROM flyway_schema_history") == 4


@pytest.mark.db
def test_subfolders_are_read_as_flyway_scans_them_the_script_their_path(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    files = {
        "V1__a.sql": "CREATE TABLE a (id int);\n",
        "2024/V2__b.sql": "CREATE TABLE b (id int);\n",
        "2024/q1/V10__c.sql": "CREATE TABLE c (id int);\n",
        "2024/notes.md": "not a migration\n",
        "views/R__v.sql": "CREATE OR REPLACE VIEW v AS SELECT id FROM c;\n",
    }
    folder = app / FOLDER
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    flyway_app(app, {})
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    apply_as_flyway(pg_server.url(tool_db), folder)
    ours = rows(database_url, FLYWAY_ROWS)
    assert ours == rows(pg_server.url(tool_db), FLYWAY_ROWS)
    assert [r[4] for r in ours] == [
        "V1__a.sql",
        "2024/V2__b.sql",
        "2024/q1/V10__c.sql",
        "views/R__v.sql",
    ]
    assert flyway_would_apply(database_url, folder) == []


COPY_SCRIPT = (
    "CREATE TABLE cp (id int, name text);\n"
    "COPY cp (id, name) FROM stdin;\n"
    "1\tends with a semicolon;\n"
    "2\t$$ not a quote\n"
    "3\t\\N\n"
    "\\.\n"
    "\n"
    "INSERT INTO cp VALUES (4, $$x;y$$);\n"
)


def test_copy_from_stdin_data_is_split_off_with_its_statement() -> None:
    from herokumigrate.sqlsplit import split_statements

    create, copy, insert = split_statements(COPY_SCRIPT)
    assert copy.text == "COPY cp (id, name) FROM stdin;"
    assert copy.data == "1\tends with a semicolon;\n2\t$$ not a quote\n3\t\\N\n"
    assert (create.data, insert.data) == (None, None)
    assert insert.line == 8
    from herokumigrate.sqlsplit import SplitError

    with pytest.raises(SplitError, match="no end line"):
        split_statements("COPY cp FROM stdin;\n1\tx\n")


def test_copy_data_passes_postgresqls_parser_at_build_time(app: Path) -> None:
    pytest.importorskip("pglast")
    from herokumigrate.pgparse import check_boundaries, load_parser, parse_section

    folder = flyway_app(app, {"V1__copy.sql": COPY_SCRIPT})
    [m] = load_migrations(folder, app)
    parsed = parse_section(load_parser(), m.up, trees=False)
    check_boundaries(parsed, "flyway")
    assert [s.line for s in parsed.statements] == [1, 2, 8]


@pytest.mark.db
def test_copy_from_stdin_with_inline_data_is_applied_as_flyway_applies_it(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = flyway_app(app, {"V1__copy.sql": COPY_SCRIPT, "V2__more.sql": "SELECT 1;\n"})
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    found = rows(database_url, "SELECT id, name FROM cp ORDER BY id")
    assert found == [(1, "ends with a semicolon;"), (2, "$$ not a quote"), (3, None), (4, "x;y")]
    # psql, reading the same file, loads the same rows.
    with pg_server.admin_conn(tool_db) as conn:
        conn.execute("CREATE TABLE cp (id int, name text)")
        with conn.cursor().copy("COPY cp (id, name) FROM STDIN") as copy:
            copy.write("1\tends with a semicolon;\n2\t$$ not a quote\n3\t\\N\n")
        conn.execute("INSERT INTO cp VALUES (4, $$x;y$$)")
        assert found == rows(conn, "SELECT id, name FROM cp ORDER BY id")
    assert flyway_would_apply(database_url, folder) == []


@pytest.mark.db
def test_down_goto_and_force_move_along_the_versions_leaving_repeatables_alone(
    dbname: str, database_url: str, app: Path
) -> None:
    folder = flyway_app(
        app,
        {
            "V1__a.sql": "CREATE TABLE a (id int);\n",
            "V2__b.sql": "CREATE TABLE b (id int);\n",
            "R__v.sql": "CREATE OR REPLACE VIEW v AS SELECT id FROM a;\n",
        },
    )
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    down = run_cli(["down", "1", "--yes"], cwd=app, database_url=database_url)
    assert down.returncode == 2, down.output  # V2, not R__v: Flyway keeps no downs
    assert "V2__b.sql: has no down migration" in down.stderr
    assert "Undo it in a new migration" in down.stderr
    forced = run_cli(["force", "1"], cwd=app, database_url=database_url)
    assert forced.returncode == 0, forced.output
    assert rows(
        database_url, "SELECT version, script FROM flyway_schema_history ORDER BY installed_rank"
    ) == [("1", "V1__a.sql"), (None, "R__v.sql")]
    assert flyway_would_apply(database_url, folder) == ["V2__b.sql"]


@pytest.mark.db
def test_flyways_default_schema_holds_its_table_and_the_migrations_unqualified_names(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(f"GRANT CREATE ON DATABASE {dbname} TO {TEST_ROLE}")
    folder = flyway_app(app, {"V1__t.sql": "CREATE TABLE t (id int);\n"})
    env = {"FLYWAY_SCHEMAS": "app,other", "FLYWAY_PLACEHOLDERS_X": "1"}
    result = run_cli(["up"], cwd=app, database_url=database_url, env=env)
    assert result.returncode == 0, result.output
    assert tables(database_url, "app") == ["flyway_schema_history", "t"]
    assert "t" not in tables(database_url)
    again = run_cli(["status"], cwd=app, database_url=database_url, env=env)
    assert "Up to date" in again.stdout, again.output
    assert folder.is_dir()


# A Spring Boot app's set whose first script is a pg_dump (session settings, a schema-qualified
# search_path reset, COPY data, sequences set), then hand-written versions and a repeatable.
PG_DUMP = (
    "--\n-- PostgreSQL database dump\n--\n\n"
    "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n"
    "SET standard_conforming_strings = on;\n"
    "SELECT pg_catalog.set_config('search_path', 'public', false);\n"
    "SET check_function_bodies = false;\n\n"
    "CREATE TABLE public.country (\n    id integer NOT NULL,\n    name text NOT NULL\n);\n\n"
    "CREATE SEQUENCE public.country_id_seq AS integer START WITH 1 INCREMENT BY 1 NO MINVALUE"
    " NO MAXVALUE CACHE 1;\n"
    "ALTER SEQUENCE public.country_id_seq OWNED BY public.country.id;\n"
    "ALTER TABLE ONLY public.country ALTER COLUMN id SET DEFAULT"
    " nextval('public.country_id_seq'::regclass);\n\n"
    "COPY public.country (id, name) FROM stdin;\n1\tFrance\n2\tCôte d'Ivoire\n3\t\\N-ish\n\\.\n\n"
    "SELECT pg_catalog.setval('public.country_id_seq', 3, true);\n\n"
    "ALTER TABLE ONLY public.country ADD CONSTRAINT country_pkey PRIMARY KEY (id);\n"
)
SPRING_SET = {
    "V1__baseline_dump.sql": PG_DUMP,
    "V1.1__city.sql": (
        "CREATE TABLE city (id serial PRIMARY KEY, country_id int REFERENCES country (id),"
        " name text);\n"
    ),
    "V2__index.sql": "CREATE INDEX CONCURRENTLY city_country ON city (country_id);\n",
    "R__views.sql": "CREATE OR REPLACE VIEW city_names AS SELECT c.name FROM city c;\n",
}


@pytest.mark.db
def test_a_spring_boot_set_with_a_pg_dump_applies_as_flyway_would(
    pg_server: Server, dbname: str, database_url: str, tool_db: str, app: Path
) -> None:
    folder = flyway_app(app, SPRING_SET)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    tool_url = pg_server.url(tool_db)
    scripts = {s.script: s for s in flyway_folder(folder)}
    with psycopg.connect(tool_url, autocommit=True) as conn:  # COPY through psql's protocol
        dump = scripts["V1__baseline_dump.sql"].text
        head, _, rest = dump.partition("COPY public.country (id, name) FROM stdin;\n")
        data, _, tail = rest.partition("\\.\n")
        conn.execute(head)
        with conn.cursor().copy("COPY public.country (id, name) FROM STDIN") as copy:
            copy.write(data)
        conn.execute(tail)
    (folder / "V1__baseline_dump.sql").rename(folder.parent / "dump.sql")
    apply_as_flyway(tool_url, folder)  # the rest, as Flyway runs it
    (folder.parent / "dump.sql").rename(folder / "V1__baseline_dump.sql")
    assert schema_without_ours(pg_server.pg_dump(dbname)) == schema_without_ours(
        pg_server.pg_dump(tool_db)
    )
    assert rows(database_url, "SELECT name FROM country ORDER BY id") == [
        ("France",),
        ("Côte d'Ivoire",),
        ("N-ish",),  # COPY reads `\\N-ish` as PostgreSQL does
    ]
    assert [r[4] for r in rows(database_url, FLYWAY_ROWS)] == [
        "V1__baseline_dump.sql",
        "V1.1__city.sql",
        "V2__index.sql",
        "R__views.sql",
    ]
    assert flyway_would_apply(database_url, folder) == []


def test_placeholder_replacement_turned_off_for_the_app_keeps_every_text(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = flyway_app(app, {"V1__a.sql": "SELECT '${not_a_placeholder}';\n"})
    monkeypatch.setenv("FLYWAY_PLACEHOLDER_REPLACEMENT", "false")
    [m] = load_migrations(folder, app)
    assert m.up.text == "SELECT '${not_a_placeholder}';\n"
    monkeypatch.delenv("FLYWAY_PLACEHOLDER_REPLACEMENT")
    with pytest.raises(BadInput, match="unknown placeholder"):
        load_migrations(folder, app)


def test_spring_boots_flyway_placeholders_are_read_from_the_apps_config(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (app / "src/main/resources").mkdir(parents=True)
    (app / "src/main/resources/application.yml").write_text(
        "spring:\n  flyway:\n    placeholders:\n      owner: ${APP_OWNER:app_reader}\n"
        "      tableName: things\n"
    )
    (app / "src/main/resources/application.properties").write_text(
        "spring.flyway.placeholders.suffix=_v2\n"
    )
    folder = flyway_app(
        app,
        {
            "V1__a.sql": (
                "CREATE TABLE ${tableName}${suffix} (id int);\nGRANT ALL ON x TO ${owner};\n"
            )
        },
    )
    [m] = load_migrations(folder, app)
    assert m.up.text == "CREATE TABLE things_v2 (id int);\nGRANT ALL ON x TO app_reader;\n"
    monkeypatch.setenv("FLYWAY_PLACEHOLDERS_OWNER", "from_env")  # Flyway's variable wins
    monkeypatch.setenv("APP_OWNER", "ignored")
    [m] = load_migrations(folder, app)
    assert "TO from_env;" in m.up.text
    (app / "src/main/resources/application.properties").write_text(
        "spring.flyway.placeholder-replacement=false\n"
    )
    [m] = load_migrations(folder, app)
    assert "${tableName}" in m.up.text


@pytest.mark.db
def test_spring_boots_flyway_schema_table_and_out_of_order_are_read(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(f"GRANT CREATE ON DATABASE {dbname} TO {TEST_ROLE}")
    (app / "src/main/resources").mkdir(parents=True)
    (app / "src/main/resources/application.yml").write_text(
        "spring:\n  flyway:\n    default-schema: app\n    table: schema_history\n"
        "    out-of-order: true\n"
    )
    folder = flyway_app(
        app, {"V1__a.sql": "CREATE TABLE a (id int);\n", "V3__c.sql": "SELECT 1;\n"}
    )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert tables(database_url, "app") == ["a", "schema_history"]
    (folder / "V2__b.sql").write_text("CREATE TABLE b (id int);\n")  # out of order: allowed
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "b" in tables(database_url, "app")
