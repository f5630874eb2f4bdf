"""The release-safety lint's facts about PostgreSQL, checked on a real server: the type changes it
lets pass are exactly those PostgreSQL makes without rewriting the table, the names it gives
unnamed constraints are PostgreSQL's, and the safe-change set (test/fixtures/lint_safe) applies
cleanly with no finding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from herokumigrate import pgparse
from herokumigrate.lintalter import rewrite_free
from herokumigrate.lintnodes import constraint_name, type_ref
from herokumigrate.lintschema import TypeRef
from herokumigrate.sections import SourceFile, SqlSection
from support import Server, rows, run_cli, scalar

pytestmark = pytest.mark.db

PARSER = pgparse.load_parser()
SAFE = Path(__file__).resolve().parent / "fixtures/lint_safe"

# (column type, ALTER ... TYPE clause): PostgreSQL rewrites or not; the lint must agree.
TYPE_CHANGES = [
    ("varchar(10)", "varchar(20)"),
    ("varchar(10)", "varchar(10)"),
    ("varchar(10)", "varchar"),
    ("varchar(10)", "text"),
    ("varchar", "text"),
    ("text", "varchar"),
    ("varchar(10)", "varchar(300) USING c::varchar(300)"),
    ("varchar(10)", "text USING c"),
    ("numeric(10,2)", "numeric(14,2)"),
    ("numeric(10)", "numeric(12)"),
    ("numeric(10,2)", "numeric"),
    ("varbit(8)", "varbit(16)"),
    ("cidr", "inet"),
    ("integer", "integer"),
    # rewritten, or checked row by row:
    ("varchar(20)", "varchar(10)"),
    ("text", "varchar(20)"),
    ("numeric(10,2)", "numeric(12,3)"),
    ("numeric", "numeric(12,2)"),
    ("integer", "bigint"),
    ("varchar(10)", "text USING lower(c)"),
    ("varchar(10)", 'text COLLATE "C"'),
    ("varchar(10)[]", "varchar(20)[]"),
    ("timestamp", "timestamptz"),
    ("inet", "cidr"),
]


def _column_type(sql_type: str) -> TypeRef | None:
    statement = pgparse.parse_section(
        PARSER, _section(f"CREATE TABLE t (c {sql_type});"), wanted=None
    ).statements[0]
    return type_ref(statement.node["tableElts"][0]["ColumnDef"]["typeName"])


def _section(sql: str) -> SqlSection:
    return SqlSection(SourceFile("/nowhere/1_t.up.sql", "1_t.up.sql"), sql)


@pytest.mark.parametrize(("old", "new"), TYPE_CHANGES)
def test_type_changes_the_lint_lets_pass_are_the_ones_postgres_makes_without_a_rewrite(
    pg_server: Server, dbname: str, old: str, new: str
) -> None:
    alter = f"ALTER TABLE t ALTER COLUMN c TYPE {new}"
    statement = pgparse.parse_section(PARSER, _section(alter + ";"), wanted=None).statements[0]
    command = statement.node["cmds"][0]["AlterTableCmd"]
    definition = command["def"]["ColumnDef"]
    lint_passes = rewrite_free(
        _column_type(old),
        type_ref(definition.get("typeName")),
        definition,
        "c",
    )
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(f"CREATE TABLE t (c {old})".encode())
        conn.execute(b"CREATE INDEX t_c ON t (c)")
        before = conn.execute(
            b"SELECT pg_relation_filenode('t'), pg_relation_filenode('t_c')"
        ).fetchone()
        conn.execute(alter.encode())
        after = conn.execute(
            b"SELECT pg_relation_filenode('t'), pg_relation_filenode('t_c')"
        ).fetchone()
    assert lint_passes == (before == after), (old, new, before, after)


@pytest.mark.parametrize(
    "definition",
    [
        "a int PRIMARY KEY, b int",
        "a int, b int, UNIQUE (a, b)",
        "a int UNIQUE, b int CHECK (b > 0)",
        "a int, b int, CHECK (b > a)",
        "a int REFERENCES other (id), b int",
        "a int, b int, FOREIGN KEY (a, b) REFERENCES pair (x, y)",
        "a int, b int, CHECK (1 > 0)",
        "a_rather_long_column_name_of_forty_chars int UNIQUE, b int",
    ],
)
def test_unnamed_constraints_get_postgres_names(
    pg_server: Server, dbname: str, definition: str
) -> None:
    table = "a_table_with_a_name_long_enough_to_be_shortened"
    create = f"CREATE TABLE {table} ({definition})"
    statement = pgparse.parse_section(PARSER, _section(create + ";"), wanted=None).statements[0]
    ours = set()
    for element in statement.node["tableElts"]:
        column = element.get("ColumnDef")
        for item in column.get("constraints", ()) if column else [element]:
            constraint = item["Constraint"]
            if constraint["contype"] not in ("CONSTR_NOTNULL", "CONSTR_DEFAULT"):
                ours.add(constraint_name(table, constraint, column and column["colname"]))
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(b"CREATE TABLE other (id int PRIMARY KEY)")
        conn.execute(b"CREATE TABLE pair (x int, y int, PRIMARY KEY (x, y))")
        conn.execute(create.encode())
        names = conn.execute(
            b"SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype <> 'n'",
            (table,),
        ).fetchall()
    assert ours == {name for (name,) in names}


def test_the_safe_change_set_applies_cleanly_and_the_lint_finds_nothing(
    app: Path, database_url: str
) -> None:
    folder = app / "db/migrations"
    shutil.copytree(SAFE, folder)
    for number, path in enumerate(sorted(folder.glob("*.up.sql")), 1):
        applied = run_cli(["goto", path.name.split("_")[0]], cwd=app, database_url=database_url)
        assert applied.returncode == 0, applied.output
        assert scalar(database_url, "SELECT count(*) FROM heroku_migrate_history") == number
    assert rows(database_url, "SELECT 1 FROM pg_index WHERE NOT indisvalid") == []
    linted = run_cli(["lint", "--format", "json"], cwd=app)
    assert linted.returncode == 0, linted.output
    assert json.loads(linted.stdout)["findings"] == []
