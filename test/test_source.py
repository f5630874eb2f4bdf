"""Finding and reading migration files, without a database: the three formats, where each section
and statement sits in its file, what the checksum covers, which files are skipped on purpose, and
how every problem of a folder is reported at once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from herokumigrate.errors import BadInput
from herokumigrate.manifest import read_manifest, write_manifest
from herokumigrate.migration import checksum_of
from herokumigrate.source import list_folder, load_migrations
from herokumigrate.validation import check_folder, validate
from herokumigrate.versions import MAX_VERSION

FORMAT_GOLANG = "golang-migrate"
FORMAT_DBMATE = "dbmate"


def _folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / "db" / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    return folder


DBMATE_FILE = (
    "-- migrate:up\n"  # 1
    "CREATE TABLE users (\n"  # 2
    "  id bigint PRIMARY KEY\n"  # 3
    ");\n"  # 4
    "\n"  # 5
    "CREATE INDEX users_id ON users (id);\n"  # 6
    "\n"  # 7
    "-- migrate:down\n"  # 8
    "DROP INDEX users_id;\n"  # 9
    "DROP TABLE users;\n"  # 10
)


# ----- golang-migrate ---------------------------------------------------------------------


def test_golang_pair_is_one_migration(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "20240101120000_create_users.up.sql": "CREATE TABLE users (id int);\n",
            "20240101120000_create_users.down.sql": "DROP TABLE users;\n",
        },
    )
    [m] = load_migrations(folder)
    assert (m.version.number, m.name, m.format) == (20240101120000, "create_users", FORMAT_GOLANG)
    assert m.filename == "20240101120000_create_users.up.sql"
    assert m.label == "20240101120000_create_users"
    assert m.up.sql == "CREATE TABLE users (id int);\n"
    assert m.up.first_line == 1
    assert m.up.transaction is True
    assert m.down is not None
    assert m.down.path.name == "20240101120000_create_users.down.sql"
    assert m.down.sql == "DROP TABLE users;\n"


def test_golang_down_is_optional(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"1_a.up.sql": "SELECT 1;\n"})
    [m] = load_migrations(folder)
    assert m.down is None


def test_golang_statement_lines_are_file_lines(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {"1_a.up.sql": "-- header\n\nCREATE TABLE a (id int);\n\nINSERT INTO a\nVALUES (1);\n"},
    )
    [m] = load_migrations(folder)
    assert [(s.line, s.text.split()[0]) for s in m.up.statements] == [(3, "CREATE"), (5, "INSERT")]


def test_largest_bigint_version_is_accepted(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {f"{MAX_VERSION}_last.up.sql": "SELECT 1;\n"})
    [m] = load_migrations(folder)
    assert m.version.number == 2**63 - 1


def test_leading_zeros_are_the_same_version_as_without(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"0007_a.up.sql": "SELECT 1;\n"})
    [m] = load_migrations(folder)
    assert m.version.number == 7


def test_version_is_shown_as_written(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "0180_2.15.0_schema.up.sql": "SELECT 1;\n",
            "0180_2.15.0_schema.down.sql": "SELECT 2;\n",
            "0181_x.sql": "-- migrate:up\nSELECT 1;\n",
        },
    )
    first, second = load_migrations(folder)
    assert (first.version.number, first.version.written, first.label) == (
        180,
        "0180",
        "0180_2.15.0_schema",
    )
    assert first.filename == "0180_2.15.0_schema.up.sql"
    assert (second.version.number, second.label) == (181, "0181_x")


def test_versions_equal_as_integers_are_a_duplicate(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"01_a.up.sql": "SELECT 1;\n", "1_b.up.sql": "SELECT 2;\n"})
    with pytest.raises(BadInput, match=r"^1_b\.up\.sql: version 1 is also used by 01_a\.up\.sql"):
        load_migrations(folder)


def test_version_digits_must_be_ascii(tmp_path: Path) -> None:
    # U+0661 ARABIC-INDIC DIGIT ONE: Python's \d and int() take it as 1.
    folder = _folder(tmp_path, {"\u0661_x.up.sql": "SELECT 1;\n", "2_y.up.sql": "SELECT 2;\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(folder)
    assert caught.value.message.startswith("\u0661_x.up.sql: the version")
    assert "U+0661" in caught.value.message
    assert "0-9" in caught.value.fix


@pytest.mark.parametrize(
    "name", ["1_a\n.up.sql", "1_a\x1b[31m.up.sql", "1_a.up.sql\n", "1_a\r.sql", "1_\x7f.sql"]
)
def test_control_characters_in_a_name_are_an_error_printed_escaped(
    tmp_path: Path, name: str
) -> None:
    folder = _folder(tmp_path, {name: "SELECT 1;\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(folder)
    message = caught.value.message
    assert message.startswith(repr(name) + ": the file name holds")
    assert message.isprintable(), "the raw control character must not reach the terminal"


# ----- dbmate -------------------------------------------------------------------------------


def test_dbmate_sections_and_their_lines(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"20240102_create_users.sql": DBMATE_FILE})
    [m] = load_migrations(folder)
    assert (m.version.number, m.name, m.format) == (20240102, "create_users", FORMAT_DBMATE)
    assert m.up.first_line == 1
    assert m.down is not None
    assert m.down.first_line == 8
    assert [s.line for s in m.up.statements] == [2, 6]
    assert [s.line for s in m.down.statements] == [9, 10]
    assert "migrate:" not in m.up.sql
    assert "DROP" not in m.up.sql
    assert "CREATE" not in m.down.sql


def test_dbmate_error_position_is_a_file_line(tmp_path: Path) -> None:
    text = DBMATE_FILE.replace("DROP TABLE users;\n", "DROP TABLE 'users;\n")
    folder = _folder(tmp_path, {"3_x.sql": text})
    [m] = load_migrations(folder)
    assert m.down is not None
    with pytest.raises(BadInput) as caught:
        _ = m.down.statements
    assert caught.value.message.startswith("3_x.sql: line 10:")


def test_dbmate_statement_position_maps_to_file_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"3_x.sql": DBMATE_FILE})
    [m] = load_migrations(folder)
    create = m.up.statements[0]
    # a character position on the statement's second line ("  id bigint ...")
    position = create.text.index("id bigint") + 1
    assert m.up.file_line(create, position) == 3
    assert m.up.file_line(create) == 2


def test_dbmate_transaction_false_per_section(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "5_idx.sql": (
                "-- migrate:up transaction:false\n"
                "CREATE INDEX CONCURRENTLY a_id ON a (id);\n"
                "-- migrate:down\n"
                "DROP INDEX a_id;\n"
            )
        },
    )
    [m] = load_migrations(folder)
    assert m.up.transaction is False
    assert m.down is not None
    assert m.down.transaction is True


def test_dbmate_without_title_or_down(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"5.sql": "-- migrate:up\nSELECT 1;\n"})
    [m] = load_migrations(folder)
    assert (m.version.number, m.name, m.label, m.down) == (5, "", "5", None)


def test_dbmate_empty_down_section_reverts_nothing(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"5_x.sql": "-- migrate:up\nSELECT 1;\n\n-- migrate:down\n\n"})
    [m] = load_migrations(folder)
    assert m.down is not None
    assert m.down.statements == []
    assert m.reverts_nothing


def test_dbmate_without_down_marker_is_irreversible(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"5_x.sql": "-- migrate:up\nSELECT 1;\n"})
    [m] = load_migrations(folder)
    assert m.down is None
    assert not m.reverts_nothing


def test_dbmate_comments_before_the_up_marker_are_allowed(tmp_path: Path) -> None:
    # dbmate itself accepts blank and comment lines above '-- migrate:up'
    # (statementsPrecedeMigrateBlocks skips them); a file dbmate runs must load here too.
    folder = _folder(
        tmp_path,
        {"5_x.sql": "-- Adds the widgets table.\n\n-- migrate:up\nSELECT 1;\n-- migrate:down\n"},
    )
    [m] = load_migrations(folder)
    assert m.up.first_line == 3
    assert [s.line for s in m.up.statements] == [4]


def test_dbmate_markers_tolerate_crlf(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {"5_x.sql": b"-- migrate:up\r\nSELECT 1;\r\n-- migrate:down\r\nSELECT 2;\r\n"},
    )
    [m] = load_migrations(folder)
    assert m.down is not None
    assert m.up.sql.strip() == "SELECT 1;"
    assert m.down.sql.strip() == "SELECT 2;"


# ----- checksums ----------------------------------------------------------------------------


def test_checksum_is_sha256_of_the_up_sql(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {"1_a.up.sql": "SELECT 1;\n", "1_a.down.sql": "SELECT 2;\n", "2_b.sql": DBMATE_FILE},
    )
    golang, dbmate = load_migrations(folder)
    assert golang.checksum == hashlib.sha256(b"SELECT 1;\n").hexdigest()
    assert dbmate.checksum == checksum_of(dbmate.up.sql)


def test_checksum_ignores_the_down_sql(tmp_path: Path) -> None:
    one = _folder(tmp_path / "one", {"1_a.up.sql": "SELECT 1;\n", "1_a.down.sql": "SELECT 2;\n"})
    two = _folder(tmp_path / "two", {"1_a.up.sql": "SELECT 1;\n", "1_a.down.sql": "SELECT 3;\n"})
    three = _folder(tmp_path / "three", {"1_a.up.sql": "SELECT 1;\n"})
    assert {load_migrations(f)[0].checksum for f in (one, two, three)} == {
        checksum_of("SELECT 1;\n")
    }
    four = _folder(tmp_path / "four", {"2_b.sql": DBMATE_FILE})
    five = _folder(
        tmp_path / "five", {"2_b.sql": DBMATE_FILE.replace("DROP TABLE", "DROP TABLE IF EXISTS")}
    )
    assert load_migrations(four)[0].checksum == load_migrations(five)[0].checksum


def test_checksum_changes_with_the_up_sql(tmp_path: Path) -> None:
    one = _folder(tmp_path / "one", {"1_a.up.sql": "SELECT 1;\n"})
    two = _folder(tmp_path / "two", {"1_a.up.sql": "SELECT 1; -- edited\n"})
    assert load_migrations(one)[0].checksum != load_migrations(two)[0].checksum


def test_byte_order_mark_is_not_part_of_the_sql(tmp_path: Path) -> None:
    plain = _folder(tmp_path / "plain", {"1_a.up.sql": "SELECT 1;\n"})
    bom = _folder(tmp_path / "bom", {"1_a.up.sql": "\ufeffSELECT 1;\n".encode()})
    assert load_migrations(bom)[0].up.sql == "SELECT 1;\n"
    assert load_migrations(bom)[0].checksum == load_migrations(plain)[0].checksum


# ----- the folder ---------------------------------------------------------------------------


def test_both_formats_share_a_folder_sorted_by_version(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "10_c.up.sql": "SELECT 10;\n",
            "2_b.sql": "-- migrate:up\nSELECT 2;\n",
            "1_a.up.sql": "SELECT 1;\n",
        },
    )
    assert [(m.version.number, m.format) for m in load_migrations(folder)] == [
        (1, FORMAT_GOLANG),
        (2, FORMAT_DBMATE),
        (10, FORMAT_GOLANG),
    ]


def test_non_sql_files_dotfiles_and_subfolders_are_skipped(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "1_a.up.sql": "SELECT 1;\n",
            "README.md": "# migrations\n",
            ".keep": "",
            ".#1_a.up.sql": "editor lock file",
            "schema.rb": "# not ours",
        },
    )
    (folder / "archive").mkdir()
    (folder / "archive" / "0_old.up.sql").write_text("SELECT 0;\n")
    assert [m.version.number for m in load_migrations(folder)] == [1]


def test_symlink_inside_the_app_is_followed(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {})
    shared = tmp_path / "sql" / "users.sql"
    shared.parent.mkdir()
    shared.write_text("CREATE TABLE users (id int);\n")
    (folder / "1_users.up.sql").symlink_to(shared)
    [m] = load_migrations(folder, app_root=tmp_path)
    assert m.up.sql == "CREATE TABLE users (id int);\n"


def test_symlink_outside_the_app_is_refused(tmp_path: Path) -> None:
    app = tmp_path / "app"
    folder = _folder(app, {})
    outside = tmp_path / "outside.sql"
    outside.write_text("SELECT 1;\n")
    (folder / "1_a.up.sql").symlink_to(outside)
    with pytest.raises(BadInput, match=r"^1_a\.up\.sql: is a symlink leading outside the app"):
        list_folder(folder, app_root=app)


def test_validate_counts(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
            "1_a.down.sql": "DROP TABLE a;\n",
            "2_b.sql": DBMATE_FILE,
        },
    )
    assert validate(load_migrations(folder)) == {
        "migrations": 2,
        "statements": 4,
        "no_transaction": 1,
        "downs": 2,
    }


# ----- errors name the file -----------------------------------------------------------------

ERRORS = [
    ("letters-as-version", {"v1_a.up.sql": "SELECT 1;\n"}, "v1_a.up.sql: is not a migration"),
    ("dup-version", {"1_a.up.sql": "SELECT 1;\n", "1_b.sql": "-- migrate:up\nSELECT 1;\n"},
     "1_b.sql: version 1 is also used by 1_a.up.sql"),
    ("down-only", {"1_a.down.sql": "SELECT 1;\n"}, "1_a.down.sql: down file without an up"),
    # (in a folder of dbmate's files: a folder of such files alone is sqlx's)
    ("no-annotation", {"1_a.sql": "SELECT 1;\n", "2_b.sql": "-- migrate:up\nSELECT 2;\n"},
     "1_a.sql: has neither a '-- migrate:up' (dbmate) nor a '-- +goose Up' (goose) annotation"),
    ("no-up-marker", {"1_a.sql": "-- migrate:down\nSELECT 1;\n"},
     "1_a.sql: has no '-- migrate:up' marker"),
    ("two-formats", {"1_a.sql": "-- migrate:up\nSELECT 1;\n-- +goose Down\nSELECT 2;\n"},
     "1_a.sql: holds the annotations of two formats: dbmate (line 1) and goose (line 3)"),
    ("down-before-up", {"1_a.sql": "-- migrate:down\nSELECT 2;\n-- migrate:up\nSELECT 1;\n"},
     "1_a.sql: '-- migrate:down' comes before '-- migrate:up'"),
    ("statement-before-up", {"1_a.sql": "SELECT 0;\n-- migrate:up\nSELECT 1;\n"},
     "1_a.sql: has SQL before the '-- migrate:up' marker"),
    ("latin1", {"1_a.up.sql": b"SELECT 1;\n\nSELECT 'caf\xe9';\n"},
     "1_a.up.sql: line 3: is not valid UTF-8"),
    ("nul-bytes", {"1_a.up.sql": b"SELECT 1;\x00\n"}, "1_a.up.sql: is binary"),
    ("too-large-version", {f"{MAX_VERSION + 1}_a.up.sql": "SELECT 1;\n"}, "is too large"),
]  # fmt: skip


@pytest.mark.parametrize(("files", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_files_raise_bad_input_naming_the_file(
    tmp_path: Path, files: dict[str, str | bytes], message: str
) -> None:
    folder = _folder(tmp_path, files)
    with pytest.raises(BadInput) as caught:
        load_migrations(folder)
    assert message in caught.value.message
    assert caught.value.fix
    assert caught.value.exit_code == 2


def test_manifest_stands_for_the_files_only_while_they_are_unchanged(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"1_a.up.sql": "CREATE TABLE a (id int);\n", "2_b.sql": DBMATE_FILE})
    migrations = load_migrations(folder)
    manifest = tmp_path / "out" / "manifest.json"
    write_manifest(manifest, folder, "db/migrations", migrations)
    expected = [(m.version, m.checksum) for m in migrations]
    found = read_manifest(str(manifest), folder, "db/migrations")
    assert found is not None
    assert found.migrations == expected
    # Another migrations path setting, an added file, an edited file: the files must be read.
    assert read_manifest(str(manifest), folder, "other/path") is None
    (folder / "3_c.up.sql").write_text("SELECT 1;\n")
    assert read_manifest(str(manifest), folder, "db/migrations") is None
    (folder / "3_c.up.sql").unlink()
    found = read_manifest(str(manifest), folder, "db/migrations")
    assert found is not None
    assert found.migrations == expected
    (folder / "1_a.up.sql").write_text("CREATE TABLE a (id bigint);\n")
    assert read_manifest(str(manifest), folder, "db/migrations") is None
    assert read_manifest(str(tmp_path / "missing.json"), folder, "db/migrations") is None


# ----- migrations that change nothing, downs that revert nothing ---------------------------

LOREM = (
    "-- Lorem ipsum dolor sit amet, consectetur adipiscing elit. Aenean sed interdum velit, "
    "tristique iaculis justo.\n"
)


def test_comment_only_and_empty_ups_are_no_op_migrations(tmp_path: Path) -> None:
    # Shaped like golang-migrate's own postgres example: comment-only ups without downs.
    folder = _folder(
        tmp_path,
        {
            "1085649617_create_users_table.up.sql": "CREATE TABLE users (user_id integer);\n",
            "1085649617_create_users_table.down.sql": "DROP TABLE IF EXISTS users;\n",
            "1585849751_just_a_comment.up.sql": LOREM,
            "1685849751_another_comment.up.sql": LOREM,
            "1785849751_empty.up.sql": "",
            "1885849751_blank.up.sql": "  \n\t\n",
            "1985849751_only_a_transaction.up.sql": "BEGIN;\nCOMMIT;\n",
            "2085849751_block_comment.sql": "-- migrate:up\n/* later */\n-- migrate:down\n",
        },
    )
    migrations = load_migrations(folder)
    assert [m.applies_nothing for m in migrations] == [False, True, True, True, True, True, True]
    comment = migrations[1]
    assert comment.up.statements == []
    assert comment.checksum == checksum_of(LOREM)
    report = check_folder(folder)[1]
    assert report.migrations == 7
    assert report.applies_nothing == [m.label for m in migrations[1:]]
    assert report.details()[1].startswith("6 migration(s) have no SQL")
    assert "1585849751_just_a_comment" in report.details()[1]


def test_empty_down_file_reverts_nothing_and_a_missing_one_is_irreversible(
    tmp_path: Path,
) -> None:
    folder = _folder(
        tmp_path,
        {
            "1_schema.up.sql": "CREATE TABLE t (id int);\n",
            "1_schema.down.sql": "DROP TABLE t;\n",
            "2_backfill.up.sql": "UPDATE t SET id = id + 1;\n",
            "2_backfill.down.sql": "",
            "3_more.up.sql": "UPDATE t SET id = id + 1;\n",
            "3_more.down.sql": "-- cannot be undone, and nothing to undo\n",
            "4_final.up.sql": "UPDATE t SET id = id + 1;\n",
        },
    )
    schema, backfill, more, final = load_migrations(folder)
    assert schema.down is not None
    assert not schema.reverts_nothing
    for no_op in (backfill, more):
        assert no_op.down is not None
        assert no_op.down.statements == []
        assert no_op.reverts_nothing
    assert final.down is None
    assert not final.reverts_nothing
    report = check_folder(folder)[1]
    assert (report.downs, report.reverts_nothing) == (3, ["2_backfill", "3_more"])
    assert "2 down migration(s) are empty" in report.details()[1]


def test_many_empty_downs_in_a_large_set_validate(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {}
    for v in range(1, 270):
        files[f"{v:04d}_step.up.sql"] = f"CREATE TABLE t{v} (id int);\n"
        files[f"{v:04d}_step.down.sql"] = "" if v % 11 == 0 else f"DROP TABLE t{v};\n"
    report = check_folder(_folder(tmp_path, files))[1]
    assert (report.migrations, report.downs, len(report.reverts_nothing)) == (269, 269, 24)
    assert report.details()[1].endswith("and 14 more")


# ----- every problem in one run ---------------------------------------------------------------


def test_every_bad_file_is_reported_at_once_sorted_by_name(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "1_ok.up.sql": "SELECT 1;\n",
            "9_zz.sql": "-- migrate:down\nSELECT 'no up section';\n",
            "2_bad_sql.up.sql": "SELECT 'unterminated;\n",
            "3_latin1.up.sql": b"SELECT 'caf\xe9';\n",
            "abc.sql": "SELECT 1;\n",
            "4_a.up.sql": "SELECT 1;\n",
            "04_b.up.sql": "SELECT 1;\n",
            "5_x.down.sql": "SELECT 1;\n",
        },
    )
    with pytest.raises(BadInput) as caught:
        check_folder(folder)
    error = caught.value
    assert error.exit_code == 2
    assert error.message == "6 problems in the migration files:"
    assert [d.split(":")[0] for d in error.details] == [
        "2_bad_sql.up.sql",
        "3_latin1.up.sql",
        "4_a.up.sql",
        "5_x.down.sql",
        "9_zz.sql",
        "abc.sql",
    ]
    assert "line 1: unterminated" in error.details[0]
    assert "Fix the SQL in 2_bad_sql.up.sql" in error.details[0]
    assert "version 4 is also used by 04_b.up.sql" in error.details[2]
    assert "validate" in error.fix


def test_load_reports_every_bad_file_but_not_the_sql(tmp_path: Path) -> None:
    # The release reads files without splitting them: bad SQL is validate's (the build's) job.
    folder = _folder(
        tmp_path,
        {
            "1_bad_sql.up.sql": "SELECT 'x;\n",
            "2_a.sql": "-- migrate:down\nSELECT 1;\n",
            "3_b.sql": "-- migrate:down\nSELECT 1;\n",
        },
    )
    with pytest.raises(BadInput) as caught:
        load_migrations(folder)
    assert caught.value.message == "2 problems in the migration files:"
    assert [d.split(":")[0] for d in caught.value.details] == ["2_a.sql", "3_b.sql"]


def test_a_long_list_of_problems_is_capped_with_a_count(tmp_path: Path) -> None:
    files = {f"{v}_x.sql": "-- migrate:down\nSELECT 1;\n" for v in range(1, 121)}
    folder = _folder(tmp_path, files)
    with pytest.raises(BadInput) as caught:
        load_migrations(folder)
    assert caught.value.message == "120 problems in the migration files:"
    assert len(caught.value.details) == 51
    assert caught.value.details[-1] == "... and 70 more"
    assert caught.value.details[0].startswith("100_x.sql: ")  # sorted by name


# ----- protected settings -------------------------------------------------------------------


def test_validate_warns_about_statements_changing_protected_settings(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            # pg_dump output starts like this
            "1_dump.up.sql": (
                "SET statement_timeout = 0;\n"
                "SET lock_timeout = 0;\n"
                "SELECT pg_catalog.set_config('search_path', '', false);\n"
                "CREATE TABLE t (id int);\n"
                "SET LOCAL lock_timeout = '10s';\n"
            ),
            "2_reset.sql": "-- migrate:up\nCREATE TABLE u (id int);\nRESET ALL;\n",
            "3_plain.up.sql": "CREATE TABLE settings (name text);\nINSERT INTO settings "
            "VALUES ('SET lock_timeout = 0');\n",
        },
    )
    report = check_folder(folder)[1]
    assert [w.split(", which")[0].split(": resets")[0] for w in report.warnings] == [
        "1_dump.up.sql: line 1: changes statement_timeout",
        "1_dump.up.sql: line 2: changes lock_timeout",
        "1_dump.up.sql: line 3: changes search_path",
        "2_reset.sql: line 3",
    ]
    assert report.statements == 9  # warnings do not fail the check


# ----- large files --------------------------------------------------------------------------


def test_large_section_is_split_in_pieces_exactly_as_a_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herokumigrate import sections
    from herokumigrate.sqlsplit import split_statements

    # Statements whose `;` ends a line inside strings, dollar bodies, comments and BEGIN ATOMIC
    # bodies: a piece may not end there.
    parts = [
        "INSERT INTO t VALUES (1, 'a;\nb;\n');\n",
        "CREATE FUNCTION f() RETURNS int AS $$\nBEGIN\n  RETURN 1;\nEND;\n$$ LANGUAGE plpgsql;\n",
        "/* a comment;\nstill; */ SELECT 2;\n",
        "SELECT 3 -- trailing;\n;\n",
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n"
        "  SELECT 2;\nEND;\n",
        "SELECT E'x\\';\n';\n",
    ]
    text = "".join(parts[i % len(parts)] for i in range(600))
    folder = _folder(tmp_path, {"1_a.up.sql": text, "2_b.sql": "-- migrate:up\n" + text})
    whole = split_statements(text)
    monkeypatch.setattr(sections, "SPLIT_CHUNK", 7)
    golang, dbmate = load_migrations(folder)
    assert list(golang.up.iter_statements()) == whole
    shifted = [(s.text, s.line + 1, s.kind) for s in whole]
    assert [(s.text, s.line, s.kind) for s in dbmate.up.iter_statements()] == shifted


def test_split_error_in_a_large_section_names_its_file_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herokumigrate import sections

    text = "SELECT 1;\n" * 50 + "SELECT 'never closed;\n" + "SELECT 2;\n" * 50
    folder = _folder(tmp_path, {"1_a.sql": "-- migrate:up\n" + text})
    monkeypatch.setattr(sections, "SPLIT_CHUNK", 20)
    [m] = load_migrations(folder)
    with pytest.raises(BadInput, match=r"^1_a\.sql: line 52: unterminated"):
        list(m.up.iter_statements())


def test_protected_setting_warnings_are_capped_with_a_count(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"1_dump.up.sql": "SET lock_timeout = 0;\n" * 60})
    report = check_folder(folder)[1]
    assert len(report.warnings) == 51
    assert report.warnings[49].startswith("1_dump.up.sql: line 50: changes lock_timeout")
    assert report.warnings[-1] == "... and 10 more statement(s) changing protected settings"
