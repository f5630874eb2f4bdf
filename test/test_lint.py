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
from herokumigrate.pgparse import ParsedSection
from herokumigrate.sections import SourceFile, SqlSection
from herokumigrate.source import load_migrations
from herokumigrate.sqlsplit import Statement

PARSER = pgparse.load_parser()
EXAMPLE = Path(__file__).resolve().parent.parent / "migrations_example"


def section(sql: str, name: str = "2_change.up.sql", first_line: int = 1) -> SqlSection:
    return SqlSection(SourceFile(f"/nowhere/{name}", name), sql, first_line=first_line)


def parsed(*sqls: str, start: int = 1, wanted: Any = lint.NODES_READ) -> list[ParsedSection]:
    """Files {start}_m.up.sql, ... parsed as the lint reads them."""
    return [
        pgparse.parse_section(PARSER, section(sql, f"{n}_m.up.sql"), wanted=wanted)
        for n, sql in enumerate(sqls, start)
    ]


def run(
    *sqls: str,
    table_exists: Any = None,
    wanted: Any = lint.NODES_READ,
    context: tuple[str, ...] = (),
    one_transaction: bool = True,
) -> list[lint.FileReport]:
    """Lint files 1_m.up.sql, 2_m.up.sql, ... as one release, after `context` (files 0_m...,
    released before)."""
    return lint.lint_sections(
        parsed(*sqls, wanted=wanted),
        parser=PARSER,
        table_exists=table_exists,
        context=parsed(*context, start=-len(context)),
        one_transaction=one_transaction,
    )


def found(
    *sqls: str,
    table_exists: Any = None,
    context: tuple[str, ...] = (),
    one_transaction: bool = True,
) -> list[tuple[str, str, int]]:
    """(rule id, file, line) of every finding."""
    return [
        (f.rule.id, f.file, f.line)
        for report in run(
            *sqls, table_exists=table_exists, context=context, one_transaction=one_transaction
        )
        for f in report.findings
    ]


# The schema the cases' context creates (a release before the one checked).
SCHEMA = (
    "CREATE TABLE users (id bigint PRIMARY KEY, email varchar(100) UNIQUE, name text, "
    "note varchar, nick varchar(20) NOT NULL, total numeric(10,2), ip cidr);\n"
    "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, total numeric, "
    "CONSTRAINT orders_user_key UNIQUE (user_id));\n"
    "CREATE VIEW user_names AS SELECT id, name FROM users;\n"
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\n"
    "CREATE TYPE mood AS ENUM ('sad', 'happy');\n"
    "CREATE DOMAIN positive AS int;\n"
    "CREATE SEQUENCE invoice_numbers;\n"
    "CREATE INDEX users_name ON users (name);\n"
)

# rule id: (SQL that breaks it, SQL that does the same job safely or is not concerned); each
# checked as one release after SCHEMA.
RULE_CASES: dict[str, tuple[list[str], list[str]]] = {
    "rename-column": (
        [
            "ALTER TABLE users RENAME COLUMN name TO full_name;",
            "ALTER TABLE app.users RENAME name TO n;",
        ],
        [
            "ALTER TABLE users ADD COLUMN full_name text;",
            "ALTER TABLE users ADD COLUMN x text;\nALTER TABLE users RENAME x TO y;",
        ],
    ),
    "rename-table": (
        ["ALTER TABLE users RENAME TO accounts;", "ALTER TABLE users SET SCHEMA archive;"],
        ["CREATE VIEW accounts AS SELECT * FROM users;", "ALTER INDEX users_pkey RENAME TO pk;"],
    ),
    "rename-object": (
        [
            "ALTER VIEW user_names RENAME TO people;",
            "ALTER VIEW user_names RENAME COLUMN name TO n;",
            "ALTER FUNCTION touch() RENAME TO touch2;",
            "ALTER TYPE mood RENAME TO feeling;",
            "ALTER TYPE mood RENAME VALUE 'sad' TO 'blue';",
            "ALTER SEQUENCE invoice_numbers RENAME TO numbers;",
            "ALTER SCHEMA app RENAME TO application;",
            "ALTER FUNCTION touch() SET SCHEMA app;",
        ],
        [
            "ALTER INDEX users_name RENAME TO users_name_idx;",
            "ALTER TABLE users RENAME CONSTRAINT users_pkey TO pk;",
            "CREATE TYPE t AS ENUM ('a');\nALTER TYPE t RENAME TO u;",
        ],
    ),
    "drop-column": (
        [
            "ALTER TABLE users DROP COLUMN name;",
            "ALTER TABLE users DROP COLUMN IF EXISTS a, DROP b;",
        ],
        [
            "ALTER TABLE users ALTER COLUMN name SET STATISTICS 100;",
            "ALTER TABLE users ADD COLUMN x text;\nALTER TABLE users DROP COLUMN x;",
        ],
    ),
    "drop-table": (
        ["DROP TABLE users;", "DROP TABLE IF EXISTS app.users CASCADE;"],
        [
            "CREATE TABLE scratch (a int);\nDROP TABLE scratch;",
            "DROP INDEX CONCURRENTLY users_name;",
        ],
    ),
    "drop-object": (
        [
            "DROP VIEW user_names;",
            "DROP FUNCTION touch();",
            "DROP TYPE mood;",
            "DROP DOMAIN positive;",
            "DROP SEQUENCE invoice_numbers;",
            "DROP SCHEMA app CASCADE;",
            "DROP EXTENSION pg_trgm;",
            "DROP MATERIALIZED VIEW totals;",
        ],
        [
            "DROP VIEW user_names;\nCREATE VIEW user_names AS SELECT id, name, email FROM users;",
            "DROP FUNCTION touch();\nCREATE FUNCTION touch() RETURNS trigger LANGUAGE sql "
            "AS $$ SELECT NULL $$;",
            "CREATE VIEW v AS SELECT 1;\nDROP VIEW v;",
            "DROP TRIGGER t ON users;",
        ],
    ),
    "drop-database": (["DROP DATABASE analytics;"], ["CREATE DATABASE analytics;"]),
    "add-required-column": (
        [
            "ALTER TABLE users ADD COLUMN plan text NOT NULL;",
            "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT NULL;",
        ],
        [
            "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';",
            "ALTER TABLE users ADD COLUMN plan text;",
            "CREATE TABLE t (a int);\nALTER TABLE t ADD COLUMN b int NOT NULL;",
        ],
    ),
    "change-column-type": (
        [
            "ALTER TABLE users ALTER COLUMN id TYPE int;",
            "ALTER TABLE users ALTER a SET DATA TYPE int USING a::int;",
            "ALTER TABLE users ALTER COLUMN email TYPE varchar(50);",
            "ALTER TABLE users ALTER COLUMN name TYPE varchar(200);",
            "ALTER TABLE users ALTER COLUMN total TYPE numeric(12,3);",
            "ALTER TABLE users ALTER COLUMN email TYPE text USING lower(email);",
            'ALTER TABLE users ALTER COLUMN note TYPE text COLLATE "C";',
        ],
        [
            "ALTER TABLE users ALTER COLUMN email TYPE varchar(200);",
            "ALTER TABLE users ALTER COLUMN email TYPE text;",
            "ALTER TABLE users ALTER COLUMN note TYPE text;",
            "ALTER TABLE users ALTER COLUMN name TYPE varchar;",
            "ALTER TABLE users ALTER COLUMN total TYPE numeric(14,2);",
            "ALTER TABLE users ALTER COLUMN total TYPE numeric;",
            "ALTER TABLE users ALTER COLUMN ip TYPE inet;",
            "ALTER TABLE users ALTER COLUMN email TYPE varchar(300) USING email::varchar(300);",
            "ALTER TABLE users ALTER COLUMN id SET DEFAULT 0;",
        ],
    ),
    "set-not-null": (
        [
            "ALTER TABLE users ALTER COLUMN email SET NOT NULL;",
            "ALTER TABLE users ADD CONSTRAINT name_nn NOT NULL name;",
        ],
        [
            "ALTER TABLE users ADD CONSTRAINT email_nn CHECK (email IS NOT NULL) NOT VALID;",
            "ALTER TABLE users ALTER COLUMN nick SET NOT NULL;",
            "ALTER TABLE users ADD CONSTRAINT name_nn NOT NULL name NOT VALID;",
        ],
    ),
    "drop-not-null": (
        [
            "ALTER TABLE users ALTER COLUMN nick DROP NOT NULL;",
            "ALTER TABLE orders ALTER COLUMN shop_id DROP NOT NULL;",  # not known: may be
        ],
        [
            "ALTER TABLE users ALTER COLUMN name DROP NOT NULL;",  # nullable: changes nothing
            "ALTER TABLE users ADD COLUMN x text NOT NULL DEFAULT '';\n"
            "ALTER TABLE users ALTER x DROP NOT NULL;",
        ],
    ),
    "drop-default": (
        [
            "ALTER TABLE users ALTER COLUMN nick DROP DEFAULT;",
            "ALTER TABLE users ALTER COLUMN g DROP EXPRESSION;",
            # The running release inserts rows without the new column: they relied on it.
            "ALTER TABLE users ADD COLUMN x int NOT NULL DEFAULT 0;\n"
            "ALTER TABLE users ALTER x DROP DEFAULT;",
        ],
        [
            "ALTER TABLE users ALTER COLUMN nick SET DEFAULT 'x';",
            "CREATE TABLE t (a int DEFAULT 1);\nALTER TABLE t ALTER a DROP DEFAULT;",
        ],
    ),
    "alter-identity": (
        [
            "ALTER TABLE users ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;",
            "ALTER TABLE users ALTER COLUMN id SET GENERATED ALWAYS;",
            "ALTER TABLE users ALTER COLUMN id DROP IDENTITY;",
        ],
        [
            "ALTER TABLE users ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY;",
            "ALTER TABLE users ALTER COLUMN id SET GENERATED BY DEFAULT;",
        ],
    ),
    "drop-unique-constraint": (
        [
            "ALTER TABLE users DROP CONSTRAINT users_email_key;",
            "ALTER TABLE orders DROP CONSTRAINT orders_user_key;",
            "ALTER TABLE users DROP CONSTRAINT users_pkey;",
        ],
        [
            "ALTER TABLE users DROP CONSTRAINT users_pkey,\n"
            "    ADD CONSTRAINT users_pkey PRIMARY KEY USING INDEX users_id_email;",
            "ALTER TABLE users DROP CONSTRAINT users_email_key;\n"
            "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_ci;",
            "ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey;",
            "ALTER TABLE users DROP CONSTRAINT some_check_we_never_saw;",
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
            "CREATE MATERIALIZED VIEW m AS SELECT 1 AS a;\nCREATE UNIQUE INDEX ON m (a);",
        ],
    ),
    "drop-index-without-concurrently": (
        ["DROP INDEX users_name;", "DROP INDEX IF EXISTS app.some_index, other_index;"],
        [
            "DROP INDEX CONCURRENTLY users_name;",
            "CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);\nDROP INDEX t_a;",
        ],
    ),
    "constraint-without-not-valid": (
        [
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);",
            "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0);",
            "ALTER TABLE orders ADD COLUMN shop_id bigint REFERENCES shops (id);",
            "ALTER TABLE orders ADD COLUMN n int CHECK (n > 0);",
        ],
        [
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)"
            " NOT VALID;",
            "ALTER TABLE orders VALIDATE CONSTRAINT fk;",
            "CREATE TABLE t (a int);\nALTER TABLE t ADD CHECK (a > 0);",
        ],
    ),
    "validate-in-same-transaction": (
        [
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)"
            " NOT VALID;\nALTER TABLE orders VALIDATE CONSTRAINT fk;",
            "ALTER TABLE orders ADD CHECK (total > 0) NOT VALID;\n"
            "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_check;",
        ],
        [
            "ALTER TABLE orders VALIDATE CONSTRAINT fk;",
            "CREATE TABLE t (a int);\nALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID;\n"
            "ALTER TABLE t VALIDATE CONSTRAINT c;",
        ],
    ),
    "unique-constraint-builds-index": (
        [
            "ALTER TABLE users ADD CONSTRAINT u UNIQUE (email);",
            "ALTER TABLE users ADD PRIMARY KEY (id);",
            "ALTER TABLE users ADD COLUMN code text UNIQUE;",
            "ALTER TABLE orders ADD CONSTRAINT no_overlap EXCLUDE USING gist (total WITH =);",
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
            "CREATE FUNCTION pick() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n"
            "ALTER TABLE users ADD COLUMN p int DEFAULT pick();",
        ],
        [
            "ALTER TABLE users ADD COLUMN created_at timestamptz DEFAULT now();",
            "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';",
            "ALTER TABLE users ADD COLUMN d int GENERATED ALWAYS AS (a * 2) VIRTUAL;",
            "ALTER TABLE users ALTER COLUMN token SET DEFAULT gen_random_uuid();",
            "CREATE FUNCTION pick() RETURNS int STABLE LANGUAGE sql AS $$ SELECT 1 $$;\n"
            "ALTER TABLE users ADD COLUMN p int DEFAULT pick();",
        ],
    ),
    "detach-partition-without-concurrently": (
        ["ALTER TABLE events DETACH PARTITION events_2020;"],
        [
            "ALTER TABLE events DETACH PARTITION events_2020 CONCURRENTLY;",
            "ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES IN (2027);",
        ],
    ),
    "domain-constraint": (
        [
            "ALTER DOMAIN positive ADD CONSTRAINT p CHECK (VALUE > 0);",
            "ALTER DOMAIN positive VALIDATE CONSTRAINT p;",
            "ALTER DOMAIN positive SET NOT NULL;",
        ],
        [
            "ALTER DOMAIN positive ADD CONSTRAINT p CHECK (VALUE > 0) NOT VALID;",
            "ALTER DOMAIN positive DROP NOT NULL;",
            "CREATE DOMAIN d AS int;\nALTER DOMAIN d ADD CHECK (VALUE > 0);",
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
        [
            "REINDEX TABLE CONCURRENTLY users;",
            "REINDEX (CONCURRENTLY) INDEX users_pkey;",
            "CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);\nREINDEX INDEX t_a;",
        ],
    ),
    "lock-table": (
        ["LOCK TABLE users IN EXCLUSIVE MODE;", "LOCK users;"],
        ["SELECT id FROM users WHERE id = 1 FOR UPDATE;"],
    ),
    "truncate-cascade": (
        ["TRUNCATE users CASCADE;", "TRUNCATE TABLE orders, users CASCADE;"],
        ["TRUNCATE orders;", "CREATE TABLE t (a int);\nTRUNCATE t CASCADE;"],
    ),
    "create-domain-with-constraint": (
        [
            "CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');",
            "CREATE DOMAIN id AS bigint NOT NULL;",
        ],
        ["CREATE DOMAIN label AS text;"],
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


def test_every_rule_has_cases_a_level_a_why_and_an_instead() -> None:
    assert set(RULE_CASES) == set(lint.RULES)
    for rule in lint.RULES.values():
        assert rule.why
        assert rule.instead
        assert rule.level in ("error", "warning")
        assert rule.category in ("breaks the running release", "blocks the table", "risky shape")


@pytest.mark.parametrize(
    ("rule_id", "sql"),
    [(rule_id, sql) for rule_id, (bad, _) in RULE_CASES.items() for sql in bad],
)
def test_rule_finds_what_it_is_about(rule_id: str, sql: str) -> None:
    findings = found("-- a comment first\n" + sql, context=(SCHEMA,))
    assert {rule for rule, _, _ in findings} == {rule_id}
    # Named on the statement's line, in the right file.
    assert all(file == "1_m.up.sql" and line >= 2 for _, file, line in findings)


@pytest.mark.parametrize(
    ("rule_id", "sql"),
    [(rule_id, sql) for rule_id, (bad, _) in RULE_CASES.items() for sql in bad],
)
def test_allow_comment_silences_every_rule(rule_id: str, sql: str) -> None:
    """`-- heroku-migrate:allow <rule>` above each statement: nothing is reported, each
    finding is counted as allowed."""
    allowed = "\n".join(f"-- heroku-migrate:allow {rule_id}\n{s};" for s in _statements(sql))
    (report,) = run(allowed, context=(SCHEMA,))
    assert report.findings == []
    assert report.suppressed >= 1
    assert report.notes == []


def _statements(sql: str) -> list[str]:
    parsed_sql = pgparse.parse_section(PARSER, section(sql), trees=False)
    return [sql[s.start : s.end] for s in parsed_sql.statements]


@pytest.mark.parametrize(
    ("rule_id", "sql"),
    [(rule_id, sql) for rule_id, (_, good) in RULE_CASES.items() for sql in good],
)
def test_rule_leaves_safe_sql_alone(rule_id: str, sql: str) -> None:
    assert found(sql, context=(SCHEMA,)) == []


def test_partial_trees_find_what_whole_trees_find() -> None:
    every = [sql for bad, good in RULE_CASES.values() for sql in [*bad, *good]]
    whole = [
        (f.rule.id, f.line, f.subject)
        for r in run(*every, wanted=None, context=(SCHEMA,))
        for f in r.findings
    ]
    partial = [
        (f.rule.id, f.line, f.subject) for r in run(*every, context=(SCHEMA,)) for f in r.findings
    ]
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


def test_a_table_created_earlier_in_the_release_is_exempt() -> None:
    first = "CREATE TABLE app.events (id int, user_id bigint, name text);"
    later = (
        "CREATE INDEX ON events (name);\n"
        "ALTER TABLE app.events RENAME COLUMN name TO title;\n"
        "ALTER TABLE events ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);\n"
        "ALTER TABLE events ADD CONSTRAINT u UNIQUE (title);\n"
        "ALTER TABLE events ADD COLUMN kind text NOT NULL;\n"
        "ALTER TABLE events ALTER COLUMN id TYPE bigint;\n"
        "ALTER TABLE events RENAME TO happenings;\n"
        "ALTER TABLE happenings ALTER COLUMN id SET NOT NULL;\n"
        "CREATE INDEX ON users (email);\n"
    )
    assert found(first, later) == [("index-without-concurrently", "2_m.up.sql", 9)]
    # The first file released before: every statement is about an existing table.
    assert len(found(later, context=(first,))) == 9
    assert len(found(later)) == 9  # a table no file created counts as existing


def test_create_table_if_not_exists_of_an_existing_table_exempts_nothing() -> None:
    sql = "CREATE TABLE IF NOT EXISTS users (id int);\nCREATE INDEX ON users (id);"
    assert found(sql, context=("CREATE TABLE users (id int);",)) == [
        ("index-without-concurrently", "1_m.up.sql", 2)
    ]
    assert found(sql) == []  # no file created it before: this one does


def test_a_release_is_exempt_only_from_its_own_tables() -> None:
    linter = lint.ReleaseLint(PARSER)
    assert linter.check(parsed("CREATE TABLE t (a int);\nCREATE INDEX ON t (a);")) == []
    (report,) = linter.check(parsed("CREATE INDEX ON t (a);", start=2))
    assert [f.rule.id for f in report.findings] == ["index-without-concurrently"]


def test_set_not_null_after_a_validated_check_is_not_flagged() -> None:
    added = "ALTER TABLE users ADD CONSTRAINT email_nn CHECK (email IS NOT NULL) NOT VALID;"
    validated = "ALTER TABLE users VALIDATE CONSTRAINT email_nn;"
    set_not_null = "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"
    assert found(set_not_null, context=(added, validated)) == []
    assert found(validated + "\n" + set_not_null, context=(added,)) == []
    assert found(set_not_null, context=("ALTER TABLE users ADD CHECK (email IS NOT NULL);",)) == []
    both = "ALTER TABLE users ADD CHECK (name IS NOT NULL AND email IS NOT NULL);"
    assert found(set_not_null, context=(both,)) == []
    # Not validated, dropped, or about another column: PostgreSQL scans the table.
    flagged = [("set-not-null", "1_m.up.sql", 1)]
    assert found(set_not_null, context=(added,)) == flagged
    dropped = "ALTER TABLE users DROP CONSTRAINT email_nn;"
    assert found(set_not_null, context=(added, validated, dropped)) == flagged
    other = "ALTER TABLE users ADD CHECK (name IS NOT NULL);"
    assert found(set_not_null, context=(other,)) == flagged
    either = "ALTER TABLE users ADD CHECK (name IS NOT NULL OR email IS NOT NULL);"
    assert found(set_not_null, context=(either,)) == flagged


def test_not_valid_then_validate_in_a_later_release_is_not_flagged() -> None:
    add = "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users NOT VALID;"
    validate = "ALTER TABLE orders VALIDATE CONSTRAINT fk;"
    assert found(add) == []
    assert found(validate, context=(add,)) == []
    # In one release, one transaction: the NOT VALID lock is held while VALIDATE scans.
    assert found(add, validate) == [("validate-in-same-transaction", "2_m.up.sql", 1)]
    # transaction = "migration": each file commits on its own.
    assert found(add, validate, one_transaction=False) == []
    assert found(add + "\n" + validate, one_transaction=False) == [
        ("validate-in-same-transaction", "1_m.up.sql", 2)
    ]


def test_an_unnamed_not_valid_constraint_is_found_by_postgres_name() -> None:
    add = "ALTER TABLE orders ADD CHECK (total > 0) NOT VALID;"
    validate = "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_check;"
    assert found(add, validate) == [("validate-in-same-transaction", "2_m.up.sql", 1)]


def test_a_view_dropped_and_created_again_is_gone_only_between_transactions() -> None:
    drop = "DROP VIEW user_names;"
    create = "CREATE VIEW user_names AS SELECT id FROM users;"
    assert found(drop, create, context=(SCHEMA,)) == []
    assert found(drop, create, context=(SCHEMA,), one_transaction=False) == [
        ("drop-object", "1_m.up.sql", 1)
    ]
    # Created again before the drop: it is gone.
    assert found(create.replace("CREATE", "CREATE OR REPLACE"), drop, context=(SCHEMA,)) == [
        ("drop-object", "2_m.up.sql", 1)
    ]


def test_a_type_change_is_flagged_when_the_old_type_is_unknown() -> None:
    widen = "ALTER TABLE users ALTER COLUMN email TYPE text;"
    assert found(widen, context=(SCHEMA,)) == []
    assert found(widen) == [("change-column-type", "1_m.up.sql", 1)]
    # The type a later release gave it is the one that counts.
    narrowed = "ALTER TABLE users ALTER COLUMN email TYPE varchar(20);"
    assert found(widen.replace("text", "varchar(50)"), context=(SCHEMA, narrowed)) == []
    assert found(widen.replace("text", "varchar(10)"), context=(SCHEMA, narrowed)) == [
        ("change-column-type", "1_m.up.sql", 1)
    ]


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
        "rule ids are listed in docs/lint.md"
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


def test_the_docs_list_every_rule_with_its_level_why_and_instead() -> None:
    docs = (EXAMPLE.parent / "docs/lint.md").read_text()
    table = [line for line in docs.splitlines() if line.startswith("| `")]
    rows = [
        f"| `{r.id}` | {r.level} | {r.category} | {r.why} | {r.instead} |"
        for r in lint.RULES.values()
    ]
    assert [line for line in table if line.count(" | ") == 4] == rows
    for rule in lint.RULES.values():
        assert f"- `{rule.id}`: " in docs  # what it catches
