"""PostgreSQL's parser over migration files (pgparse) and the release-safety lint (lint).

Unit tests with the real pglast (the `test` extra): every rule with SQL that breaks it and SQL
that does not, where tables count as existing, suppression comments, syntax errors with file,
line and column, and the cross-check of our splitter against the parser's statements.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from herokumigrate import lint, pgparse
from herokumigrate.config import load_config
from herokumigrate.errors import BadInput
from herokumigrate.sections import SourceFile, SqlSection
from herokumigrate.source import load_migrations
from herokumigrate.sqlsplit import Statement

PARSER = pgparse.load_parser()
EXAMPLE = Path(__file__).resolve().parent.parent / "migrations_example"


def section(sql: str, name: str = "2_change.up.sql", first_line: int = 1) -> SqlSection:
    return SqlSection(SourceFile(f"/nowhere/{name}", name), sql, first_line=first_line)


def run(
    *sqls: str, table_exists: Any = None, wanted: Any = lint.NODES_READ
) -> list[lint.FileReport]:
    """Lint files 1.up.sql, 2.up.sql, ... as one batch."""
    parsed = [
        pgparse.parse_section(PARSER, section(sql, f"{n}_m.up.sql"), wanted=wanted)
        for n, sql in enumerate(sqls, 1)
    ]
    return lint.lint_sections(parsed, parser=PARSER, table_exists=table_exists)


def found(*sqls: str, table_exists: Any = None) -> list[tuple[str, str, int]]:
    """(rule id, file, line) of every finding."""
    return [
        (f.rule.id, f.file, f.line)
        for report in run(*sqls, table_exists=table_exists)
        for f in report.findings
    ]


# rule id: (SQL that breaks it, SQL that does the same job safely or is not concerned)
RULE_CASES: dict[str, tuple[list[str], list[str]]] = {
    "rename-column": (
        [
            "ALTER TABLE users RENAME COLUMN name TO full_name;",
            "ALTER TABLE app.users RENAME name TO n;",
        ],
        ["ALTER TABLE users ADD COLUMN full_name text;", "ALTER VIEW v RENAME COLUMN a TO b;"],
    ),
    "rename-table": (
        ["ALTER TABLE users RENAME TO accounts;", "ALTER TABLE users SET SCHEMA archive;"],
        ["CREATE VIEW accounts AS SELECT * FROM users;", "ALTER INDEX users_pkey RENAME TO pk;"],
    ),
    "drop-column": (
        [
            "ALTER TABLE users DROP COLUMN name;",
            "ALTER TABLE users DROP COLUMN IF EXISTS a, DROP b;",
        ],
        ["ALTER TABLE users ALTER COLUMN name DROP DEFAULT;"],
    ),
    "drop-table": (
        ["DROP TABLE users;", "DROP TABLE IF EXISTS app.users CASCADE;"],
        ["DROP VIEW users_view;", "DROP INDEX CONCURRENTLY users_email;"],
    ),
    "change-column-type": (
        [
            "ALTER TABLE users ALTER COLUMN id TYPE bigint;",
            "ALTER TABLE users ALTER a SET DATA TYPE int USING a::int;",
        ],
        ["ALTER TABLE users ALTER COLUMN id SET DEFAULT 0;"],
    ),
    "set-not-null": (
        ["ALTER TABLE users ALTER COLUMN email SET NOT NULL;"],
        [
            "ALTER TABLE users ADD CONSTRAINT email_nn CHECK (email IS NOT NULL) NOT VALID;",
            "ALTER TABLE users ALTER email DROP NOT NULL;",
        ],
    ),
    "index-without-concurrently": (
        [
            "CREATE INDEX users_email ON users (email);",
            "CREATE UNIQUE INDEX ON app.users (lower(email));",
        ],
        [
            "CREATE INDEX CONCURRENTLY users_email ON users (email);",
            "CREATE TABLE t (a int);\nCREATE INDEX ON t (a);",
        ],
    ),
    "constraint-without-not-valid": (
        [
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);",
            "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0);",
        ],
        [
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)"
            " NOT VALID;",
            "ALTER TABLE orders VALIDATE CONSTRAINT fk;",
        ],
    ),
    "unique-constraint-builds-index": (
        [
            "ALTER TABLE users ADD CONSTRAINT u UNIQUE (email);",
            "ALTER TABLE users ADD PRIMARY KEY (id);",
        ],
        ["ALTER TABLE users ADD CONSTRAINT u UNIQUE USING INDEX users_email;"],
    ),
    "volatile-default": (
        [
            "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();",
            "ALTER TABLE users ADD COLUMN n bigserial;",
            "ALTER TABLE users ADD COLUMN r float DEFAULT (random() * 10);",
            "ALTER TABLE users ADD COLUMN i bigint GENERATED ALWAYS AS IDENTITY;",
            "ALTER TABLE users ADD COLUMN d int GENERATED ALWAYS AS (a * 2) STORED;",
        ],
        [
            "ALTER TABLE users ADD COLUMN created_at timestamptz DEFAULT now();",
            "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';",
            "ALTER TABLE users ADD COLUMN d int GENERATED ALWAYS AS (a * 2) VIRTUAL;",
            "ALTER TABLE users ALTER COLUMN token SET DEFAULT gen_random_uuid();",
        ],
    ),
    "vacuum-full": (
        [
            "VACUUM FULL users;",
            "VACUUM (FULL, ANALYZE) users;",
            "VACUUM FULL;",
            "VACUUM (FULL 1) t;",
        ],
        ["VACUUM ANALYZE users;", "VACUUM (FULL false) users;", "VACUUM (FULL 0, ANALYZE) users;"],
    ),
    "cluster": (
        ["CLUSTER users USING users_pkey;", "CLUSTER;"],
        ["ANALYZE users;"],
    ),
    "reindex-without-concurrently": (
        [
            "REINDEX TABLE users;",
            "REINDEX INDEX users_pkey;",
            "REINDEX SCHEMA app;",
            "REINDEX (CONCURRENTLY false) TABLE users;",
        ],
        ["REINDEX TABLE CONCURRENTLY users;", "REINDEX (CONCURRENTLY) INDEX users_pkey;"],
    ),
    "lock-table": (
        ["LOCK TABLE users IN EXCLUSIVE MODE;", "LOCK users;"],
        ["SELECT id FROM users WHERE id = 1 FOR UPDATE;"],
    ),
    "concurrent-with-others": (
        [
            "UPDATE users SET a = 1;\nCREATE INDEX CONCURRENTLY i ON users (a);",
            "CREATE INDEX CONCURRENTLY i ON users (a);\nCREATE INDEX CONCURRENTLY j ON users (b);",
        ],
        ["CREATE INDEX CONCURRENTLY i ON users (a);", "BEGIN;\nUPDATE users SET a = 1;\nCOMMIT;"],
    ),
    "set-timeout": (
        ["SET lock_timeout = '1s';", "SET LOCAL statement_timeout = 0;", "RESET lock_timeout;"],
        ["SET LOCAL work_mem = '64MB';", "SHOW lock_timeout;"],
    ),
    "set-search-path": (
        ["SET search_path TO app, public;", "SET LOCAL search_path = app;"],
        ["CREATE TABLE app.orders (id int);", "SELECT current_setting('search_path');"],
    ),
}


def test_every_rule_has_cases_and_a_why_and_an_instead() -> None:
    assert set(RULE_CASES) == set(lint.RULES)
    for rule in lint.RULES.values():
        assert rule.why
        assert rule.instead
        assert rule.category in ("breaks the running release", "blocks the table", "risky shape")


@pytest.mark.parametrize(
    ("rule_id", "sql"),
    [(rule_id, sql) for rule_id, (bad, _) in RULE_CASES.items() for sql in bad],
)
def test_rule_finds_what_it_is_about(rule_id: str, sql: str) -> None:
    findings = found("-- a comment first\n" + sql)
    assert {rule for rule, _, _ in findings} == {rule_id}
    # Named on the statement's line, in the right file.
    assert all(file == "1_m.up.sql" and line >= 2 for _, file, line in findings)


@pytest.mark.parametrize(
    ("rule_id", "sql"),
    [(rule_id, sql) for rule_id, (_, good) in RULE_CASES.items() for sql in good],
)
def test_rule_leaves_safe_sql_alone(rule_id: str, sql: str) -> None:
    assert found(sql) == []


def test_partial_trees_find_what_whole_trees_find() -> None:
    every = [sql for bad, good in RULE_CASES.values() for sql in [*bad, *good]]
    whole = [(f.rule.id, f.line, f.subject) for r in run(*every, wanted=None) for f in r.findings]
    partial = [(f.rule.id, f.line, f.subject) for r in run(*every) for f in r.findings]
    assert partial == whole
    assert len(whole) > len(RULE_CASES)


def test_lines_of_findings_are_file_lines() -> None:
    parsed = pgparse.parse_section(
        PARSER,
        section("\nSELECT 1;\n\nALTER TABLE users DROP COLUMN a;\n", "5_x.sql", first_line=10),
    )
    (report,) = lint.lint_sections([parsed], parser=PARSER)
    assert [(f.rule.id, f.line, f.subject) for f in report.findings] == [
        ("drop-column", 13, "users.a")
    ]


def test_tables_created_earlier_in_the_batch_are_exempt() -> None:
    first = "CREATE TABLE app.events (id int, name text);"
    later = (
        "CREATE INDEX ON events (name);\n"
        "ALTER TABLE app.events RENAME COLUMN name TO title;\n"
        "ALTER TABLE events RENAME TO happenings;\n"
        "ALTER TABLE happenings ALTER COLUMN id SET NOT NULL;\n"
        "CREATE INDEX ON users (email);\n"
    )
    assert found(first, later) == [("index-without-concurrently", "2_m.up.sql", 5)]
    # Without the first file in the batch (applied by an earlier release), all of it counts.
    assert len(found(later)) == 5


def test_table_exists_lets_plan_say_which_tables_the_database_has() -> None:
    sql = "CREATE INDEX ON orders (a);\nCREATE INDEX ON users (a);"
    assert found(sql, table_exists=lambda t: t.name == "users") == [
        ("index-without-concurrently", "1_m.up.sql", 2)
    ]


def test_allow_comment_silences_exactly_the_statement_it_names() -> None:
    sql = (
        "-- heroku-migrate:allow rename-column\n"
        "ALTER TABLE users RENAME COLUMN a TO b;\n"
        "ALTER TABLE users RENAME COLUMN c TO d;\n"
        "ALTER TABLE users RENAME COLUMN e TO f; -- heroku-migrate:allow rename-column\n"
        "ALTER TABLE users DROP COLUMN g, -- heroku-migrate:allow rename-column, set-not-null\n"
        "   ALTER COLUMN h SET NOT NULL;\n"
        "/* heroku-migrate:allow index-without-concurrently */ CREATE INDEX ON users (i);\n"
    )
    (report,) = run(sql)
    assert [(f.rule.id, f.line) for f in report.findings] == [
        ("rename-column", 3),
        ("drop-column", 5),
    ]
    assert report.suppressed == 4
    assert report.notes == []


def test_allow_comment_with_an_unknown_rule_is_noted() -> None:
    (report,) = run("ALTER TABLE users RENAME a TO b; -- heroku-migrate:allow rename-colum\n")
    assert [f.rule.id for f in report.findings] == ["rename-column"]
    assert report.notes == [
        "line 1: heroku-migrate:allow names no known rule (rename-colum); "
        "rule ids are listed in the README"
    ]


def test_allow_in_a_string_is_not_a_comment() -> None:
    sql = "SELECT '-- heroku-migrate:allow drop-table';\nDROP TABLE users;"
    assert found(sql) == [("drop-table", "1_m.up.sql", 2)]


def test_lint_migrations_parses_and_checks_up_sections_only(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / "1_a.up.sql").write_text("CREATE TABLE t (a int);\n")
    (folder / "2_b.up.sql").write_text("SELECT 1;\nALTER TABLE t RENAME a TO b;\n")
    (folder / "2_b.down.sql").write_text("ALTER TABLE t RENAME b TO a;\n")
    (folder / "3_c.sql").write_text("-- migrate:up\n-- heroku-migrate:no-parse\nDROP TABLE t;\n")
    migrations = load_migrations(folder)
    reports = lint.lint_migrations(migrations[1:])
    assert [(r.file, [(f.rule.id, f.line) for f in r.findings]) for r in reports] == [
        ("2_b.up.sql", [("rename-column", 2)])
    ]
    assert lint.lint_migrations(migrations) == []


# ----- settings -------------------------------------------------------------------------------


def test_lint_and_parse_are_settings_from_config_var_then_migrate_toml(tmp_path: Path) -> None:
    def modes(env: dict[str, str]) -> tuple[str, bool]:
        config = load_config(tmp_path, env)
        return str(config.lint), config.parse

    assert modes({}) == ("warn", True)
    (tmp_path / "migrate.toml").write_text('lint = "error"\nparse = false\n')
    assert modes({}) == ("error", False)
    assert modes({"MIGRATE_LINT": "off\n", "MIGRATE_PARSE": "true"}) == ("off", True)
    (tmp_path / "migrate.toml").write_text('[migrate]\nlint = "off"\n')
    assert modes({}) == ("off", True)
    with pytest.raises(BadInput, match="invalid value 'loud' for lint"):
        load_config(tmp_path, {"MIGRATE_LINT": "loud"})
    with pytest.raises(BadInput, match="invalid value 'maybe' for parse"):
        load_config(tmp_path, {"MIGRATE_PARSE": "maybe"})


# ----- parsing and the splitter cross-check -----------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "first_line", "expected"),
    [
        (
            "SELECT 1;\ncreate tabel oops (id int);\n",
            1,
            'line 2, column 8: syntax error at or near "tabel"',
        ),
        (
            "\nSELECT 'é';\n  create tabel oops (id int);\n",
            4,
            'line 6, column 10: syntax error at or near "tabel"',
        ),
        ("SELECT 1;\nSELECT (1\n\n", 1, "line 2, column 9: syntax error at end of input"),
    ],
)
def test_syntax_error_names_file_line_column_and_postgres_message(
    sql: str, first_line: int, expected: str
) -> None:
    with pytest.raises(BadInput) as caught:
        pgparse.parse_section(PARSER, section(sql, "7_oops.sql", first_line))
    assert caught.value.message == f"7_oops.sql: {expected}"
    assert pgparse.NO_PARSE_DIRECTIVE in caught.value.fix
    assert "MIGRATE_PARSE=false" in caught.value.fix


def test_no_parse_directive_is_a_line_of_its_own() -> None:
    assert pgparse.skips_parsing(section("-- heroku-migrate:no-parse\nSELECT 1;"))
    assert not pgparse.skips_parsing(section("SELECT '-- heroku-migrate:no-parse';"))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "SELECT 1 -- no semicolon, then comments\n/* more */\n",
        "BEGIN;\nCREATE TABLE t (a int);\nCOMMIT;\n",
        "SELECT 'é;'; SELECT $$;$$ ;; SELECT 2 -- x\n;",
        "CREATE FUNCTION f() RETURNS int\nBEGIN ATOMIC SELECT 1; SELECT 2; END;\nSELECT 3;",
        "CREATE INDEX CONCURRENTLY i ON t (a);\n/* nested /* comment */ ; */ SELECT 1;",
    ],
)
@pytest.mark.parametrize("trees", [True, False])
def test_splitter_agrees_with_the_parser(sql: str, trees: bool) -> None:
    sec = section(sql, first_line=3)
    parsed = pgparse.parse_section(PARSER, sec, trees=trees)
    assert [s.line for s in parsed.statements] == [s.line for s in sec.statements]
    pgparse.check_boundaries(parsed, "golang-migrate")


def test_splitter_agrees_on_the_example_app() -> None:
    for migration in load_migrations(EXAMPLE / "db/migrations"):
        for sec in (migration.up, migration.down):
            if sec is not None:
                pgparse.check_boundaries(pgparse.parse_section(PARSER, sec), migration.format)


def test_disagreement_with_the_splitter_names_file_and_line() -> None:
    sec = section("SELECT 1;\nSELECT 2;\nSELECT 3;\n", "4_d.up.sql", first_line=1)
    parsed = pgparse.parse_section(PARSER, sec)
    missing = pgparse.ParsedSection(sec, parsed.statements[:2])
    with pytest.raises(BadInput, match=r"^4_d.up.sql: line 3: PostgreSQL's parser and"):
        pgparse.check_boundaries(missing, "golang-migrate")
    extra = pgparse.ParsedSection(sec, [*parsed.statements, parsed.statements[-1]])
    with pytest.raises(BadInput, match=r"^4_d.up.sql: line 3: PostgreSQL's parser and"):
        pgparse.check_boundaries(extra, "golang-migrate")
    cut = pgparse.ParsedSection(
        sec, [parsed.statements[0], replace(parsed.statements[1], end=parsed.statements[1].end - 1)]
    )
    with pytest.raises(BadInput, match=r"^4_d.up.sql: line 2: PostgreSQL's parser and"):
        pgparse.check_boundaries(cut, "golang-migrate")
    # Our splitter taking two of the parser's statements as one: wrong, except in a goose block.
    merged = section("SELECT 1; SELECT 2;\nSELECT 3;", "5_goose.sql", first_line=2)
    merged.__dict__["statements"] = [
        Statement("SELECT 1; SELECT 2;", 2, "sql"),
        Statement("SELECT 3;", 3, "sql"),
    ]
    parsed = pgparse.parse_section(PARSER, merged)
    with pytest.raises(BadInput, match=r"^5_goose.sql: line 2: "):
        pgparse.check_boundaries(parsed, "golang-migrate")
    pgparse.check_boundaries(parsed, pgparse.GOOSE_FORMAT)


def test_readme_lists_every_rule_with_its_why() -> None:
    readme = (EXAMPLE.parent / "README.md").read_text()
    section = readme[readme.index("### Release-safety lint") :]
    section = section[: section.index("\n### ", 1)]
    for rule in lint.RULES.values():
        assert f"| `{rule.id}` | {rule.category} | {rule.why} | {rule.instead} |" in section
