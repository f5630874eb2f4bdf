"""Finding and reading migration files, without a database: both formats, where each section and
statement sits in its file, what the checksum covers, and which files are skipped on purpose.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from herokumigrate.errors import BadInput
from herokumigrate.source import (
    FORMAT_DBMATE,
    FORMAT_GOLANG,
    MAX_VERSION,
    checksum_of,
    list_migration_files,
    load_migrations,
    read_manifest,
    validate,
    write_manifest,
)


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
    assert (m.version, m.name, m.format) == (20240101120000, "create_users", FORMAT_GOLANG)
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
    assert m.version == 2**63 - 1


def test_leading_zeros_are_the_same_version_as_without(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"0007_a.up.sql": "SELECT 1;\n"})
    [m] = load_migrations(folder)
    assert m.version == 7


# ----- dbmate -------------------------------------------------------------------------------


def test_dbmate_sections_and_their_lines(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"20240102_create_users.sql": DBMATE_FILE})
    [m] = load_migrations(folder)
    assert (m.version, m.name, m.format) == (20240102, "create_users", FORMAT_DBMATE)
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
    assert (m.version, m.name, m.label, m.down) == (5, "", "5", None)


def test_dbmate_empty_down_section_means_irreversible(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"5_x.sql": "-- migrate:up\nSELECT 1;\n\n-- migrate:down\n\n"})
    [m] = load_migrations(folder)
    assert m.down is None


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
    assert [(m.version, m.format) for m in load_migrations(folder)] == [
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
    assert [m.version for m in load_migrations(folder)] == [1]


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
        list_migration_files(folder, app_root=app)


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
    ("no-up-marker", {"1_a.sql": "SELECT 1;\n"}, "1_a.sql: has no '-- migrate:up' marker"),
    ("down-before-up", {"1_a.sql": "-- migrate:down\nSELECT 2;\n-- migrate:up\nSELECT 1;\n"},
     "1_a.sql: '-- migrate:down' comes before '-- migrate:up'"),
    ("statement-before-up", {"1_a.sql": "SELECT 0;\n-- migrate:up\nSELECT 1;\n"},
     "1_a.sql: has SQL before the '-- migrate:up' marker"),
    ("latin1", {"1_a.up.sql": b"SELECT 1;\n\nSELECT 'caf\xe9';\n"},
     "1_a.up.sql: line 3: is not valid UTF-8"),
    ("nul-bytes", {"1_a.up.sql": b"SELECT 1;\x00\n"}, "1_a.up.sql: is binary"),
    ("empty", {"1_a.up.sql": ""}, "1_a.up.sql: up migration is empty"),
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
    assert read_manifest(str(manifest), folder, "db/migrations") == expected
    # Another migrations path setting, an added file, an edited file: the files must be read.
    assert read_manifest(str(manifest), folder, "other/path") is None
    (folder / "3_c.up.sql").write_text("SELECT 1;\n")
    assert read_manifest(str(manifest), folder, "db/migrations") is None
    (folder / "3_c.up.sql").unlink()
    assert read_manifest(str(manifest), folder, "db/migrations") == expected
    (folder / "1_a.up.sql").write_text("CREATE TABLE a (id bigint);\n")
    assert read_manifest(str(manifest), folder, "db/migrations") is None
    assert read_manifest(str(tmp_path / "missing.json"), folder, "db/migrations") is None
