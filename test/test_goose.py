"""goose SQL migrations, read as goose v3 reads them (internal/sqlparser/parser.go), without a
database: sections, StatementBegin/End blocks as one statement each with their file lines,
NO TRANSACTION, a file without Down, and every annotation goose refuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from herokumigrate.errors import BadInput
from herokumigrate.formats import new_migration_files
from herokumigrate.source import load_migrations
from herokumigrate.sqlsplit import classify
from herokumigrate.tools import TOOL_NAMES
from herokumigrate.validation import check_folder


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "db" / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content)
    return folder


PLPGSQL = (
    "-- +goose Up\n"  # 1
    "CREATE TABLE accounts (id bigserial PRIMARY KEY, updated_at timestamptz);\n"  # 2
    "\n"  # 3
    "-- +goose StatementBegin\n"  # 4
    "CREATE OR REPLACE FUNCTION touch() RETURNS trigger\n"  # 5
    "LANGUAGE plpgsql AS\n"  # 6
    "'\n"  # 7
    "BEGIN\n"  # 8
    "  NEW.updated_at := now();\n"  # 9
    "  RETURN NEW;\n"  # 10
    "END;\n"  # 11
    "';\n"  # 12
    "-- +goose StatementEnd\n"  # 13
    "CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts\n"  # 14
    "  FOR EACH ROW EXECUTE FUNCTION touch();\n"  # 15
    "\n"  # 16
    "-- +goose Down\n"  # 17
    "-- +goose StatementBegin\n"  # 18
    "DROP TRIGGER accounts_touch ON accounts;\n"  # 19
    "DROP FUNCTION touch();\n"  # 20
    "-- +goose StatementEnd\n"  # 21
    "DROP TABLE accounts;\n"  # 22
)

CONCURRENT_INDEX = (
    "-- +goose NO TRANSACTION\n"
    "-- +goose Up\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_updated ON accounts (updated_at);\n"
    "\n"
    "-- +goose Down\n"
    "DROP INDEX CONCURRENTLY IF EXISTS accounts_updated;\n"
)


def test_statement_blocks_are_one_statement_with_file_lines(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"00001_accounts.sql": PLPGSQL})
    [m] = load_migrations(folder)
    assert (m.version.number, m.version.written, m.name, m.format) == (
        1,
        "00001",
        "accounts",
        "goose",
    )
    assert m.label == "00001_accounts"
    assert m.up.transaction is True
    create, function, trigger = m.up.statements
    assert (create.line, create.text.split()[:2]) == (2, ["CREATE", "TABLE"])
    assert function.line == 5
    assert function.text.startswith("CREATE OR REPLACE FUNCTION touch()")
    assert function.text.endswith("END;\n';")
    assert function.kind == classify(function.text) == "sql"
    assert trigger.line == 14
    # a position on the function's 5th line maps to line 9 of the file
    position = function.text.index("NEW.updated_at") + 1
    assert m.up.file_line(function, position) == 9
    assert m.down is not None
    drops, table = m.down.statements
    assert (drops.line, table.line) == (19, 22)
    assert drops.text == "DROP TRIGGER accounts_touch ON accounts;\nDROP FUNCTION touch();"
    assert "+goose" not in m.up.sql.replace("-- +goose StatementBegin", "").replace(
        "-- +goose StatementEnd", ""
    )


def test_checksum_covers_the_up_section_only(tmp_path: Path) -> None:
    one = _folder(tmp_path / "one", {"1_a.sql": PLPGSQL})
    two = _folder(tmp_path / "two", {"1_a.sql": PLPGSQL.replace("DROP TABLE", "DROP TABLE IF")})
    three = _folder(tmp_path / "three", {"1_a.sql": PLPGSQL.replace("now()", "clock_timestamp()")})
    first, second, third = (load_migrations(f)[0] for f in (one, two, three))
    assert first.checksum == second.checksum != third.checksum


def test_no_transaction_runs_both_directions_outside_a_transaction(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"2_index.sql": CONCURRENT_INDEX})
    [m] = load_migrations(folder)
    assert m.up.transaction is False
    assert m.down is not None
    assert m.down.transaction is False
    assert [s.kind for s in m.up.statements] == ["no_transaction"]
    assert m.up.statements[0].line == 3


def test_file_without_down_reverts_nothing_as_goose_does(tmp_path: Path) -> None:
    # goose parses no Down statements and, on down, runs nothing and deletes the version row.
    folder = _folder(tmp_path, {"3_seed.sql": "-- +goose Up\nINSERT INTO t VALUES (1);\n"})
    [m] = load_migrations(folder)
    assert m.down is not None
    assert m.down.statements == []
    assert m.reverts_nothing


def test_empty_sections_are_no_ops(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "4_empty.sql": "-- +goose Up\n-- +goose StatementBegin\n-- nothing yet\n"
            "-- +goose StatementEnd\n-- +goose Down\n",
        },
    )
    [m] = load_migrations(folder)
    assert m.applies_nothing
    assert m.reverts_nothing
    assert check_folder(folder)[1].applies_nothing == ["4_empty"]


def test_annotations_are_case_insensitive_and_tolerate_crlf_and_comments_first(
    tmp_path: Path,
) -> None:
    # goose looks for "+goose" case-sensitively, then compares the command without case.
    text = (
        "-- Adds the widgets table.\r\n\r\n--+goose up\r\nCREATE TABLE w (id int);\r\n"
        "-- +goose statementbegin\r\nSELECT 1;\r\nSELECT 2;\r\n-- +goose STATEMENTEND\r\n"
        "--   +goose   Down  \r\nDROP TABLE w;\r\n"
    )
    folder = _folder(tmp_path, {"5_w.sql": text})
    [m] = load_migrations(folder)
    assert [(s.line, s.text) for s in m.up.statements] == [
        (4, "CREATE TABLE w (id int);"),
        (6, "SELECT 1;\r\nSELECT 2;"),
    ]
    assert m.down is not None
    assert [s.line for s in m.down.statements] == [10]


def test_goose_and_dbmate_files_share_a_folder(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "1_a.sql": "-- migrate:up\nSELECT 1;\n",
            "2_b.sql": "-- +goose Up\nSELECT 2;\n",
            "3_c.up.sql": "SELECT 3;\n",
        },
    )
    assert [m.format for m in load_migrations(folder)] == ["dbmate", "goose", "golang-migrate"]


ERRORS = [
    ("no-up", "-- +goose NO TRANSACTION\nSELECT 1;\n", "has no '-- +goose Up' annotation"),
    ("sql-before-up", "SELECT 0;\n-- +goose Up\nSELECT 1;\n", "line 1: SQL before"),
    ("down-before-up", "-- +goose Down\nSELECT 1;\n-- +goose Up\nSELECT 2;\n",
     "line 1: '-- +goose Down' must come after '-- +goose Up'"),
    ("two-ups", "-- +goose Up\nSELECT 1;\n-- +goose Up\n", "line 3: '-- +goose Up' is a second"),
    ("two-downs", "-- +goose Up\n-- +goose Down\n-- +goose Down\n",
     "line 3: '-- +goose Down' is a second"),
    ("begin-never-ended", "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n",
     "line 2: '-- +goose StatementBegin' is never closed"),
    ("end-without-begin", "-- +goose Up\nSELECT 1;\n-- +goose StatementEnd\n",
     "line 3: '-- +goose StatementEnd' closes no"),
    ("down-inside-block", "-- +goose Up\n-- +goose StatementBegin\n-- +goose Down\n",
     "line 3: '-- +goose Down' is inside the block opened on line 2"),
    ("indented", "-- +goose Up\n  -- +goose StatementBegin\nSELECT 1;\n",
     "line 2: the goose annotation is indented"),
    ("unknown", "-- +goose Up\n-- +goose Sideways\n",
     "line 2: unknown goose annotation 'Sideways'"),
    ("comment-mentions-goose", "-- +goose Up\n-- converted with +goose tools\n",
     "line 2: unknown goose annotation"),
    ("two-on-a-line", "-- +goose Up -- +goose Down\n", "line 1: holds two '+goose'"),
    ("envsub", "-- +goose Up\n-- +goose ENVSUB ON\nCREATE ROLE ${ROLE};\n-- +goose ENVSUB OFF\n",
     "line 2: '-- +goose ENVSUB ON' asks for environment variable substitution"),
    ("bad-sql-in-block", "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\nSELECT 'x;\n"
     "-- +goose StatementEnd\n", "line 4: unterminated"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_files_goose_refuses_are_errors_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    folder = _folder(tmp_path, {"7_x.sql": text})
    with pytest.raises(BadInput) as caught:
        check_folder(folder)
    assert caught.value.message.startswith("7_x.sql: "), caught.value.message
    assert message in caught.value.message
    assert caught.value.fix


def test_envsub_error_says_how_to_inline_the_value(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"7_x.sql": "-- +goose ENVSUB ON\n-- +goose Up\nSELECT 1;\n"})
    with pytest.raises(BadInput) as caught:
        load_migrations(folder)
    assert "does not do" in caught.value.message
    assert "Write the values into the SQL itself" in caught.value.fix


def test_envsub_off_alone_changes_nothing_and_is_accepted(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"7_x.sql": "-- +goose Up\n-- +goose ENVSUB OFF\nSELECT 1;\n"})
    [m] = load_migrations(folder)
    assert [s.text for s in m.up.statements] == ["SELECT 1;"]


# ----- `new` templates ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", TOOL_NAMES)
def test_new_migration_template_loads_as_a_no_op_in_its_format(tmp_path: Path, fmt: str) -> None:
    files = new_migration_files(fmt, "20260101120000", "add_users", "add users")  # type: ignore[arg-type]
    folder = _folder(tmp_path, {})
    for new in files:
        (folder / new.name).parent.mkdir(exist_ok=True)
        (folder / new.name).write_text(new.content)
    [m] = load_migrations(folder)
    stamp = "2026-01-01-120000-0000" if fmt == "diesel" else "20260101120000"
    assert (m.format, m.label) == (fmt, f"{stamp}_add_users")
    assert m.applies_nothing
    # sqlx's `migrate add` writes one simple file, and Prisma and Flyway (Community) keep no
    # downs: no down; the others write an empty down.
    assert m.reverts_nothing is (fmt not in ("sqlx", "prisma", "flyway"))
    assert "add users" in files[0].content
