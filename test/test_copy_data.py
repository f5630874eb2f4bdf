"""`COPY ... FROM stdin` with its data inline (pg_dump's output, Flyway's supported form, seed
migrations): applied as psql applies it, the data lines through the COPY protocol, inside the
release's transaction; a bad data line is named by its line in the file. Real CLI, real server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from herokumigrate.sections import SPLIT_CHUNK
from support import history, rows, run_cli, scalar, write_migrations

if TYPE_CHECKING:
    from pathlib import Path

    from support import Server

pytestmark = pytest.mark.db

# pg_dump's form: the data lines are text format (tab-separated, \N for NULL, backslash
# escapes); a line may end in `;` or hold a quote, which SQL splitting must not see.
SEED = (
    "CREATE TABLE people (id int PRIMARY KEY, name text, note text);\n"
    "\n"
    "COPY public.people (id, name, note) FROM stdin;\n"
    "1\tAda\tfirst; programmer\n"
    "2\tGrace O'Hara\t\\N\n"
    "3\tback\\\\slash\tend;\n"
    "\\.\n"
    "\n"
    "CREATE INDEX people_name_idx ON people (name);\n"
)


def test_copy_from_stdin_loads_its_inline_data_in_the_release_transaction(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(
        app,
        {"1_people.up.sql": SEED, "2_broken.up.sql": "SELECT 1/0;\n"},
    )
    validated = run_cli(["validate"], cwd=app)
    assert validated.returncode == 0, validated.output

    failed = run_cli(["up"], cwd=app, database_url=database_url)
    # The release is one transaction: the rows COPY loaded go with the failure of 2.
    assert failed.returncode == 1, failed.output
    assert "2_broken.up.sql: line 1: ERROR 22012" in failed.output, failed.output
    assert scalar(pg_server.admin_url(dbname), "SELECT to_regclass('people')") is None

    write_migrations(app, {"2_broken.up.sql": "UPDATE people SET note = 'seen' WHERE id = 2;\n"})
    applied = run_cli(["up"], cwd=app, database_url=database_url)
    assert applied.returncode == 0, applied.output
    assert rows(pg_server.admin_url(dbname), "SELECT id, name, note FROM people ORDER BY id") == [
        (1, "Ada", "first; programmer"),
        (2, "Grace O'Hara", "seen"),
        (3, "back\\slash", "end;"),
    ]
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2]


def test_copy_data_larger_than_a_split_chunk_is_loaded_whole(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # Files are split a chunk at a time, cut after a line ending in `;`: these data lines end
    # in `;` and the data spans several chunks.
    count = 3 * SPLIT_CHUNK // 40
    data = "".join(f"{i}\t{'x' * 30};\n" for i in range(count))
    write_migrations(
        app,
        {
            "1_big.up.sql": "CREATE TABLE big (id int, v text);\nCOPY big FROM stdin;\n"
            + data
            + "\\.\nCREATE TABLE after_big (id int);\n"
        },
    )
    applied = run_cli(["up"], cwd=app, database_url=database_url)
    assert applied.returncode == 0, applied.output
    url = pg_server.admin_url(dbname)
    assert scalar(url, "SELECT count(*) FROM big") == count
    assert scalar(url, "SELECT count(*) FROM big WHERE v = repeat('x', 30) || ';'") == count
    assert scalar(url, "SELECT to_regclass('after_big')") is not None


def test_a_bad_copy_data_line_is_named_by_its_line_in_the_file(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    bad = SEED.replace("3\tback", "three\tback")  # line 6 of the file
    write_migrations(app, {"1_people.up.sql": bad})
    failed = run_cli(["up"], cwd=app, database_url=database_url)

    assert failed.returncode == 1, failed.output
    assert "1_people.up.sql: line 6 (COPY data): ERROR 22P02" in failed.output, failed.output
    assert "Fix the migration" in failed.output, failed.output
    assert "connection was lost" not in failed.output, failed.output
    assert "127.0.0.1" not in failed.output, failed.output  # no connection details
    assert scalar(pg_server.admin_url(dbname), "SELECT to_regclass('people')") is None


def test_copy_data_inside_a_goose_statement_block_fails_validate(app: Path) -> None:
    # A StatementBegin/End block goes to the server as one text, where COPY data cannot go.
    write_migrations(
        app,
        {
            "00001_people.sql": "-- +goose Up\n-- +goose StatementBegin\n"
            "CREATE TABLE people (id int);\nCOPY people FROM stdin;\n1\n\\.\n"
            "-- +goose StatementEnd\n"
        },
    )
    result = run_cli(["validate"], cwd=app)
    assert result.returncode == 2, result.output
    assert "00001_people.sql: line 4: COPY ... FROM stdin inside a StatementBegin" in result.stderr
    assert "StatementEnd" in result.stderr.splitlines()[-1], result.output
