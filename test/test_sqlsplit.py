"""The statement splitter: where statements end, where they start, and what kind they are."""

from __future__ import annotations

import dataclasses
import random
import re
import time
from pathlib import Path
from types import ModuleType

import pytest

from herokumigrate import sqlsplit
from herokumigrate.sqlsplit import (
    SplitError,
    Statement,
    StatementKind,
    classify,
    session_setting,
    split_statements,
)
from support import run_cli

SQL = "sql"
NO_TX = "no_transaction"
TX = "transaction_control"


def texts(sql: str) -> list[str]:
    return [s.text for s in split_statements(sql)]


def triples(sql: str) -> list[tuple[str, int, str]]:
    return [(s.text, s.line, s.kind) for s in split_statements(sql)]


# --- quoting -----------------------------------------------------------------------------------


def test_semicolon_inside_single_quoted_string_does_not_split() -> None:
    assert triples("SELECT 'a;b';\nSELECT 2;") == [
        ("SELECT 'a;b';", 1, SQL),
        ("SELECT 2;", 2, SQL),
    ]


def test_doubled_quote_inside_string_does_not_end_it() -> None:
    sql = "INSERT INTO t VALUES ('it''s; fine', '''');\nSELECT ''';''';\n"
    assert texts(sql) == ["INSERT INTO t VALUES ('it''s; fine', '''');", "SELECT ''';''';"]


def test_backslash_escapes_quote_only_in_escape_strings() -> None:
    sql = (
        "SELECT E'it\\'s; here';\n"
        "SELECT e'\\\\';\n"
        "SELECT 'C:\\';\n"
        "SELECT E'a''b;c\\\\';\n"
        "SELECT 'x' AS e;\n"
    )
    assert triples(sql) == [
        ("SELECT E'it\\'s; here';", 1, SQL),
        ("SELECT e'\\\\';", 2, SQL),
        ("SELECT 'C:\\';", 3, SQL),
        ("SELECT E'a''b;c\\\\';", 4, SQL),
        ("SELECT 'x' AS e;", 5, SQL),
    ]


def test_word_ending_in_e_before_a_string_is_not_an_escape_prefix() -> None:
    # `name'...'` is not E'...': the backslash stays literal, so the string ends at its quote.
    assert texts("SELECT typname'\\'; SELECT 2;") == ["SELECT typname'\\';", "SELECT 2;"]


def test_semicolon_inside_dollar_quoted_body_does_not_split() -> None:
    sql = "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;\nSELECT 1;"
    assert triples(sql) == [
        ("DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;", 1, SQL),
        ("SELECT 1;", 2, SQL),
    ]


def test_tagged_dollar_quote_ends_only_at_the_same_tag() -> None:
    sql = (
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $fn$\n"
        "  SELECT $$a;b$$ || $x$;$x$ || $fn_2$;$fn_2$;\n"
        "$fn$;\n"
        "SELECT $_$;$_$;"
    )
    assert triples(sql) == [
        (
            "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $fn$\n"
            "  SELECT $$a;b$$ || $x$;$x$ || $fn_2$;$fn_2$;\n"
            "$fn$;",
            1,
            SQL,
        ),
        ("SELECT $_$;$_$;", 4, SQL),
    ]


def test_positional_parameters_are_not_dollar_quotes() -> None:
    sql = (
        "CREATE FUNCTION add(int, int) RETURNS int LANGUAGE sql AS $body$\n"
        "  SELECT $1 + $2;\n"
        "$body$;\n"
        "PREPARE p(int) AS SELECT $1;\n"
        "EXECUTE p(1);\n"
    )
    assert triples(sql) == [
        (
            "CREATE FUNCTION add(int, int) RETURNS int LANGUAGE sql AS $body$\n"
            "  SELECT $1 + $2;\n"
            "$body$;",
            1,
            SQL,
        ),
        ("PREPARE p(int) AS SELECT $1;", 4, SQL),
        ("EXECUTE p(1);", 5, SQL),
    ]


def test_dollar_inside_identifier_is_not_a_dollar_quote() -> None:
    sql = "SELECT a$b$ FROM t$$;\nSELECT x$1, é$$ FROM y;\nSELECT 3;"
    assert texts(sql) == ["SELECT a$b$ FROM t$$;", "SELECT x$1, é$$ FROM y;", "SELECT 3;"]


def test_dollar_quote_right_after_another_opens_a_new_one() -> None:
    sql = 'SELECT $a$x$a$$b$;$b$, "q"$$;$$;\nSELECT 2;'
    assert texts(sql) == ['SELECT $a$x$a$$b$;$b$, "q"$$;$$;', "SELECT 2;"]


def test_dollar_after_a_number_or_parameter_can_open_a_quote() -> None:
    # As in PostgreSQL's lexer: `1` and `$1` end before a `$`; only identifiers take it in.
    sql = "SELECT 1$$;$$, $1$x$;$x$, a1$$;\nSELECT 2;"
    assert texts(sql) == ["SELECT 1$$;$$, $1$x$;$x$, a1$$;", "SELECT 2;"]


@pytest.mark.parametrize("digits", ["1", "12", "123", "1234"])
def test_digits_inside_an_identifier_of_any_length_keep_its_dollars(digits: str) -> None:
    # The identifier's digits are walked back one by one, whatever their count.
    sql = f"SELECT a{digits}$$;\nSELECT 12$$;$$, $12$x$;$x$;\nSELECT 3;"
    assert texts(sql) == [f"SELECT a{digits}$$;", "SELECT 12$$;$$, $12$x$;$x$;", "SELECT 3;"]


def test_escape_string_continued_on_next_line_keeps_backslash_escapes() -> None:
    # 'a' <newline> 'b' is one literal; continuing an E'' string, the second part is E'' too.
    sql = "SELECT E'a' -- note\n  '\\';';\nSELECT 'b'\n'\\';\nSELECT 3;"
    assert texts(sql) == [
        "SELECT E'a' -- note\n  '\\';';",
        "SELECT 'b'\n'\\';",
        "SELECT 3;",
    ]


def test_quoted_identifier_hides_semicolon_and_dollars() -> None:
    sql = 'CREATE TABLE "we;ird$$" ("a""b;" int, "$x$" int);\nSELECT "$$";'
    assert triples(sql) == [
        ('CREATE TABLE "we;ird$$" ("a""b;" int, "$x$" int);', 1, SQL),
        ('SELECT "$$";', 2, SQL),
    ]


def test_unicode_escape_strings_and_identifiers_are_quoted_runs() -> None:
    sql = "SELECT U&'d\\0061t;a' UESCAPE '\\', U&\"d;\\0061\" FROM t;\nSELECT 2;"
    assert texts(sql) == [
        "SELECT U&'d\\0061t;a' UESCAPE '\\', U&\"d;\\0061\" FROM t;",
        "SELECT 2;",
    ]


# --- comments ----------------------------------------------------------------------------------


def test_nested_block_comments_hide_semicolons() -> None:
    sql = "SELECT 1 /* outer /* inner; */ still; comment */ + 1;\nSELECT 2 /**/;"
    assert triples(sql) == [
        ("SELECT 1 /* outer /* inner; */ still; comment */ + 1;", 1, SQL),
        ("SELECT 2 /**/;", 2, SQL),
    ]


def test_comment_opening_that_shares_its_star_with_a_closing_nests() -> None:
    # In `/*/` the `/*` opens a nested comment; the `*/` sharing its `*` does not close one.
    sql = "SELECT 1 /* a /*/ ; */ still; */;\nSELECT 2 /*/ x */;"
    assert texts(sql) == ["SELECT 1 /* a /*/ ; */ still; */;", "SELECT 2 /*/ x */;"]


def test_line_comment_hides_quote_and_semicolon() -> None:
    sql = "SELECT 1 -- it's; not the end $$\n  + 1;\nSELECT 2;--done;"
    assert triples(sql) == [
        ("SELECT 1 -- it's; not the end $$\n  + 1;", 1, SQL),
        ("SELECT 2;", 3, SQL),
    ]


def test_comment_markers_inside_strings_are_text() -> None:
    sql = "SELECT '--', '/*', \"/*\";\nSELECT 2;"
    assert texts(sql) == ["SELECT '--', '/*', \"/*\";", "SELECT 2;"]


def test_leading_comments_are_excluded_and_line_points_at_the_statement() -> None:
    sql = (
        "-- migrate:up\n"
        "/* a header\n   over lines; */\n"
        "\n"
        "  CREATE TABLE t (id int); -- trailing note\n"
        "/* between */ -- and more\n"
        "INSERT INTO t VALUES (1);\n"
    )
    assert triples(sql) == [
        ("CREATE TABLE t (id int);", 5, SQL),
        ("INSERT INTO t VALUES (1);", 7, SQL),
    ]


def test_comments_inside_a_statement_are_kept() -> None:
    sql = "SELECT 1, -- one\n  2 /* two */;"
    assert texts(sql) == ["SELECT 1, -- one\n  2 /* two */;"]


# --- empty parts, line endings, odd input ------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "\n\n  \t",
        "-- only a comment",
        "-- one\n-- two\n",
        "/* block /* nested */ */\n",
        ";;\n ; -- nothing ; here\n;",
    ],
)
def test_comment_only_or_empty_input_has_no_statements(sql: str) -> None:
    assert split_statements(sql) == []


def test_trailing_comment_after_last_semicolon_produces_no_statement() -> None:
    assert texts("SELECT 1;\n-- the end; really\n/* bye */\n") == ["SELECT 1;"]


def test_empty_statements_between_semicolons_are_dropped() -> None:
    assert triples("SELECT 1;;\n;SELECT 2;") == [("SELECT 1;", 1, SQL), ("SELECT 2;", 2, SQL)]


def test_last_statement_without_semicolon_or_newline_is_kept() -> None:
    assert triples("SELECT 1;\nSELECT 2") == [("SELECT 1;", 1, SQL), ("SELECT 2", 2, SQL)]
    assert triples("  UPDATE t SET a = 1 \n\n") == [("UPDATE t SET a = 1", 1, SQL)]


def test_last_statement_without_semicolon_leaves_out_trailing_comments() -> None:
    sql = "SELECT 1;\nSELECT 2 -- two\n  + 'x' /* done; */ -- really;\n/* bye */\n"
    assert triples(sql) == [("SELECT 1;", 1, SQL), ("SELECT 2 -- two\n  + 'x'", 2, SQL)]


def test_crlf_line_endings_split_and_count_lines() -> None:
    sql = "-- header\r\nCREATE TABLE t (\r\n  id int -- x;\r\n);\r\n\r\nSELECT 'a;\r\nb';\r\n"
    assert triples(sql) == [
        ("CREATE TABLE t (\r\n  id int -- x;\r\n);", 2, SQL),
        ("SELECT 'a;\r\nb';", 6, SQL),
    ]


def test_unicode_identifiers_and_text_keep_their_characters() -> None:
    sql = "CREATE TABLE café (naïve int, \"日本;\" text);\nINSERT INTO café VALUES (1, '😀;');"
    assert triples(sql) == [
        ('CREATE TABLE café (naïve int, "日本;" text);', 1, SQL),
        ("INSERT INTO café VALUES (1, '😀;');", 2, SQL),
    ]


def test_several_statements_on_one_line_share_its_number() -> None:
    assert triples("\n\nSELECT 1; SELECT 2;  SELECT 3") == [
        ("SELECT 1;", 3, SQL),
        ("SELECT 2;", 3, SQL),
        ("SELECT 3", 3, SQL),
    ]


# --- BEGIN ATOMIC and function bodies ----------------------------------------------------------


def test_begin_atomic_body_with_case_is_one_statement() -> None:
    sql = (
        "CREATE FUNCTION sign_of(x int) RETURNS int LANGUAGE sql\n"
        "BEGIN ATOMIC\n"
        "  SELECT CASE WHEN x > 0 THEN 1 WHEN x < 0 THEN -1 ELSE 0 END;\n"
        "  SELECT (CASE x WHEN 0 THEN 0 ELSE CASE WHEN x > 9 THEN 2 END END);\n"
        "END;\n"
        "SELECT sign_of(3);\n"
    )
    assert triples(sql) == [
        (
            "CREATE FUNCTION sign_of(x int) RETURNS int LANGUAGE sql\n"
            "BEGIN ATOMIC\n"
            "  SELECT CASE WHEN x > 0 THEN 1 WHEN x < 0 THEN -1 ELSE 0 END;\n"
            "  SELECT (CASE x WHEN 0 THEN 0 ELSE CASE WHEN x > 9 THEN 2 END END);\n"
            "END;",
            1,
            SQL,
        ),
        ("SELECT sign_of(3);", 6, SQL),
    ]


def test_begin_atomic_in_procedure_with_comments_between_head_words() -> None:
    sql = (
        "create /* c */ or replace -- x\n"
        "procedure p() language sql begin /* ; */ atomic\n"
        "  insert into t values (1);\n"
        "  insert into t values ('end;');\n"
        "end;\n"
        "call p();"
    )
    assert triples(sql) == [
        (
            "create /* c */ or replace -- x\n"
            "procedure p() language sql begin /* ; */ atomic\n"
            "  insert into t values (1);\n"
            "  insert into t values ('end;');\n"
            "end;",
            1,
            SQL,
        ),
        ("call p();", 6, SQL),
    ]


def test_end_used_as_a_column_label_does_not_close_begin_atomic() -> None:
    sql = (
        "CREATE FUNCTION spans() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC\n"
        '  SELECT s.end AS end FROM spans_table s WHERE s."end" > 0;\n'
        "END;\nSELECT 2;"
    )
    assert texts(sql) == [
        "CREATE FUNCTION spans() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC\n"
        '  SELECT s.end AS end FROM spans_table s WHERE s."end" > 0;\n'
        "END;",
        "SELECT 2;",
    ]


def test_begin_atomic_function_as_last_statement_without_semicolon() -> None:
    sql = (
        "SELECT 1;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END -- x\n"
    )
    assert triples(sql) == [
        ("SELECT 1;", 1, SQL),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", 2, SQL),
    ]


def test_begin_without_atomic_in_function_head_is_not_a_body() -> None:
    sql = (
        "CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN begin;\n"
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql RETURN CASE WHEN true THEN 1 END;\n"
        "SELECT 3;"
    )
    assert texts(sql) == [
        "CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN begin;",
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql RETURN CASE WHEN true THEN 1 END;",
        "SELECT 3;",
    ]


def test_begin_and_atomic_apart_are_not_a_body() -> None:
    # Found by the comparison with PostgreSQL's parser: `begin + atomic` is no BEGIN ATOMIC.
    sql = (
        "CREATE FUNCTION h(begin int, atomic int) RETURNS int LANGUAGE sql RETURN begin + atomic;\n"
        "CREATE FUNCTION i(begin int) RETURNS int LANGUAGE sql RETURN begin /* x */ - 1;\n"
        "SELECT 2;"
    )
    assert [s.line for s in split_statements(sql)] == [1, 2, 3]


def test_plpgsql_begin_end_inside_dollar_body_is_one_statement() -> None:
    sql = (
        "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
        "BEGIN\n"
        "  IF NEW.x IS NULL THEN\n"
        "    RAISE EXCEPTION 'x; is null: %', $1;\n"
        "  END IF;\n"
        "  NEW.updated_at := now();\n"
        "  RETURN NEW;\n"
        "END;\n"
        "$fn$;\n"
        "CREATE TRIGGER touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch();\n"
    )
    statements = split_statements(sql)
    assert [(s.line, s.kind) for s in statements] == [(1, SQL), (10, SQL)]
    assert statements[0].text == sql[: sql.index("$fn$;\n") + 5]
    assert statements[1].text.startswith("CREATE TRIGGER")


def test_create_statements_other_than_routines_end_at_their_first_semicolon() -> None:
    sql = "CREATE TABLE functions (id int);\nCREATE VIEW v AS SELECT 1 AS begin;\nSELECT 2;"
    assert texts(sql) == [
        "CREATE TABLE functions (id int);",
        "CREATE VIEW v AS SELECT 1 AS begin;",
        "SELECT 2;",
    ]


# --- kinds -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a);", NO_TX),
        ("create unique index concurrently if not exists i on t (a)", NO_TX),
        ("CREATE /* why */ INDEX -- note\n  Concurrently i ON t (a);", NO_TX),
        ("DROP INDEX CONCURRENTLY IF EXISTS i;", NO_TX),
        ("REINDEX INDEX CONCURRENTLY i;", NO_TX),
        ("REINDEX TABLE CONCURRENTLY t;", NO_TX),
        ("REINDEX (CONCURRENTLY) TABLE t;", NO_TX),
        ("REINDEX (VERBOSE, CONCURRENTLY true) INDEX i;", NO_TX),
        ("REINDEX (CONCURRENTLY false) TABLE t;", SQL),
        ("REINDEX (CONCURRENTLY 'off') TABLE t;", SQL),
        ("REINDEX (VERBOSE) TABLE CONCURRENTLY t;", NO_TX),
        ("REINDEX (VERBOSE) SCHEMA s;", NO_TX),
        ("REINDEX (VERBOSE) TABLE t;", SQL),
        ("REINDEX TABLE t;", SQL),
        ("REINDEX DATABASE app;", NO_TX),
        ("REINDEX SYSTEM;", NO_TX),
        ("REINDEX SCHEMA public;", NO_TX),
        ("VACUUM;", NO_TX),
        ("vacuum (analyze, verbose) t;", NO_TX),
        ("CREATE DATABASE other;", NO_TX),
        ("DROP DATABASE IF EXISTS other;", NO_TX),
        ("ALTER DATABASE app SET TABLESPACE fast;", NO_TX),
        ('ALTER DATABASE "app" SET search_path = public;', SQL),
        ("CREATE TABLESPACE fast LOCATION '/ssd';", NO_TX),
        ("DROP TABLESPACE fast;", NO_TX),
        ("ALTER SYSTEM SET work_mem = '64MB';", NO_TX),
        ("CLUSTER;", NO_TX),
        ("CLUSTER VERBOSE;", NO_TX),
        ("CLUSTER (VERBOSE)", NO_TX),
        ("CLUSTER t USING t_pkey;", SQL),
        ("CLUSTER (VERBOSE) t;", SQL),
        ("CLUSTER VERBOSE t;", SQL),
        ("CREATE SUBSCRIPTION s CONNECTION 'dbname=x' PUBLICATION p;", NO_TX),
        ("ALTER SUBSCRIPTION s DISABLE;", NO_TX),
        ("DROP SUBSCRIPTION s;", NO_TX),
        ("ALTER TABLE m DETACH PARTITION m_2020 CONCURRENTLY;", NO_TX),
        ('ALTER TABLE IF EXISTS ONLY s.m DETACH PARTITION s."m;2020" concurrently;', NO_TX),
        ("ALTER TABLE m DETACH PARTITION m_2020;", SQL),
        ("ALTER TABLE m ADD COLUMN concurrently_seen bool;", SQL),
        ("CREATE INDEX i ON t (a);", SQL),
        ("CREATE UNIQUE INDEX i ON t (a);", SQL),
        ("DROP INDEX i;", SQL),
        ("CREATE TABLE t (id int);", SQL),
        ("ANALYZE t;", SQL),
        ("DISCARD ALL;", NO_TX),
        ("discard /* everything */ all", NO_TX),
        ("DISCARD PLANS;", SQL),
        ("COMMIT PREPARED 'x';", NO_TX),
        ("ROLLBACK PREPARED 'x';", NO_TX),
        ("PREPARE p AS SELECT 1;", SQL),
    ],
)
def test_no_transaction_exactly_for_statements_postgres_refuses_in_a_transaction(
    statement: str, kind: str
) -> None:
    assert classify(statement) == kind


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE INDEX i ON t ((note = 'concurrently'));",
        'CREATE INDEX "concurrently" ON t (a);',
        "CREATE INDEX /* concurrently */ i ON t (a);",
        "CREATE INDEX -- concurrently\n i ON t (a);",
        "SELECT 'CREATE INDEX CONCURRENTLY i ON t (a)';",
        "DO $$ BEGIN EXECUTE 'VACUUM'; END $$;",
        "COMMENT ON INDEX i IS 'built concurrently';",
        "ALTER TABLE m DETACH PARTITION m_2020; -- not concurrently",
    ],
)
def test_concurrently_inside_string_comment_or_identifier_is_plain_sql(statement: str) -> None:
    assert classify(statement) == SQL


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("BEGIN;", TX),
        ("begin work;", TX),
        ("BEGIN TRANSACTION;", TX),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE;", TX),
        ("START TRANSACTION READ ONLY;", TX),
        ("COMMIT;", TX),
        ("COMMIT WORK", TX),
        ("commit transaction;", TX),
        ("COMMIT AND CHAIN;", TX),
        ("END;", TX),
        ("END TRANSACTION;", TX),
        ("ROLLBACK;", TX),
        ("ROLLBACK WORK;", TX),
        ("ABORT;", TX),
        ("/* done */ COMMIT;", TX),
        ("ROLLBACK TO SAVEPOINT a;", SQL),
        ("ROLLBACK TO a;", SQL),
        ("ROLLBACK TRANSACTION TO SAVEPOINT a;", SQL),
        ("SAVEPOINT a;", SQL),
        ("RELEASE SAVEPOINT a;", SQL),
        ("BEGIN ATOMIC SELECT 1; END;", SQL),
        ("START_TIME;", SQL),
    ],
)
def test_transaction_control_statements_are_recognised(statement: str, kind: str) -> None:
    assert classify(statement) == kind


def test_split_statements_reports_each_kind() -> None:
    sql = (
        "BEGIN;\n"
        "CREATE TABLE t (id int);\n"
        "COMMIT;\n"
        "-- build it without locking writes\n"
        "CREATE INDEX CONCURRENTLY t_id ON t (id);\n"
        "VACUUM t"
    )
    assert triples(sql) == [
        ("BEGIN;", 1, TX),
        ("CREATE TABLE t (id int);", 2, SQL),
        ("COMMIT;", 3, TX),
        ("CREATE INDEX CONCURRENTLY t_id ON t (id);", 5, NO_TX),
        ("VACUUM t", 6, NO_TX),
    ]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "line", "words"),
    [
        ("SELECT 1;\nSELECT 'abc;\n\nSELECT 2;", 2, "quoted string"),
        ("SELECT 1;\n\nSELECT 'it''s;\nmore''", 3, "quoted string"),
        ("SELECT E'abc\\';\nSELECT 2;", 1, "quoted string"),
        ('SELECT 1;\nSELECT "abc;\nSELECT 2;', 2, "quoted identifier"),
        ("SELECT 1;\nDO $body$ BEGIN\nEND $$;\n", 2, "dollar-quoted"),
        ("SELECT 1;\n\n/* outer /* inner */ still open;\n", 3, "comment"),
        ("SELECT 1 /* open\n", 1, "comment"),
        (
            "SELECT 1;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
            "  SELECT CASE WHEN true THEN 1 END;\n",
            3,
            "BEGIN ATOMIC",
        ),
    ],
)
def test_unterminated_part_raises_split_error_at_its_first_line(
    sql: str, line: int, words: str
) -> None:
    with pytest.raises(SplitError) as caught:
        split_statements(sql)
    assert caught.value.line == line
    assert words in caught.value.message
    assert "unterminated" in caught.value.message


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        ("\\connect other\nSELECT 1;", 1),
        ("SELECT 1;\n-- switch\n\\set ON_ERROR_STOP on\nSELECT 2;", 3),
        ("SELECT 1; \\gset\n", 1),
        ("SELECT 1\n\\g\n", 2),
        ("\r\n\\i other.sql\r\n", 2),
    ],
)
def test_psql_meta_command_raises_split_error(sql: str, line: int) -> None:
    with pytest.raises(SplitError) as caught:
        split_statements(sql)
    assert caught.value.line == line
    assert "psql meta-command" in caught.value.message
    assert "not supported in migrations" in caught.value.message


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        ("SELECT 1;\nSELECT 'it\\'s';", 2),
        ("SELECT 1 \\ 2;", 1),
        ("SELECT 'C:\\' \\ 'x';", 1),
    ],
)
def test_backslash_escape_in_plain_string_gets_a_hint_about_standard_strings(
    sql: str, line: int
) -> None:
    with pytest.raises(SplitError) as caught:
        split_statements(sql)
    assert caught.value.line == line
    assert "write '' for a quote" in caught.value.message
    assert "E'...'" in caught.value.message


def test_split_error_carries_message_and_line() -> None:
    err = SplitError("unterminated quoted string", 7)
    assert (err.message, err.line) == ("unterminated quoted string", 7)
    assert str(err) == "line 7: unterminated quoted string"
    assert isinstance(err, Exception)


def test_statement_is_immutable() -> None:
    statement = Statement(text="SELECT 1;", line=1, kind=SQL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        statement.line = 2  # type: ignore[misc]


# --- round trip and speed ----------------------------------------------------------------------

FRAGMENTS = [
    "x",
    "1",
    "$1",
    "a$b",
    "'a;b'",
    "'it''s'",
    "E'\\';'",
    "e'\\\\'",
    '"c;d"',
    '"e""f;"',
    "$$ ; $$",
    "$t$ $$ ; $$ $t$",
    "/* ; /* ; */ ; */",
    "-- ; ' \" $$\n",
    "U&'\\0041;'",
    "(CASE WHEN x THEN 'end;' END)",
    "\n",
    "+",
    "'\n;\n'",
]


def generated_statement(rng: random.Random) -> str:
    parts = ["SELECT"]
    for _ in range(rng.randint(1, 8)):
        parts.append(rng.choice(FRAGMENTS))
    parts.append("z")  # never end in a line comment, which would swallow the `;`
    return " ".join(parts)


@pytest.mark.parametrize("seed", range(20))
def test_generated_statements_joined_with_semicolons_split_back(seed: int) -> None:
    rng = random.Random(seed)
    statements = [generated_statement(rng) for _ in range(rng.randint(1, 30))]
    ending = rng.choice(["", ";", ";\n", ";\n-- end\n"])
    sql = ";\n".join(statements) + ending
    expected_texts = [text + ";" for text in statements]
    if not ending:
        expected_texts[-1] = statements[-1]
    expected_lines = []
    line = 1
    for text in statements:
        expected_lines.append(line)
        line += text.count("\n") + 1

    got = split_statements(sql)

    assert [s.text for s in got] == expected_texts
    assert [s.line for s in got] == expected_lines
    assert all(s.kind == SQL for s in got)


def test_large_file_splits_in_linear_time() -> None:
    # Line numbers are counted incrementally and each quoted run is skipped once: 20,000
    # statements must take a fraction of a second, not minutes, and four times the file about
    # four times the time (a quadratic splitter takes sixteen). CPU time, not wall time: what
    # else the machine runs must not decide this test.
    def split_cpu_seconds(count: int) -> float:
        sql = "".join(
            f"-- step {i}\nINSERT INTO t VALUES ({i}, 'a;b', $${i};$$); /* c */\n"
            for i in range(count)
        )
        begin = time.process_time()
        statements = split_statements(sql)
        elapsed = time.process_time() - begin
        assert len(statements) == count
        assert statements[-1].line == 2 * count
        return elapsed

    quarter = min(split_cpu_seconds(5_000) for _ in range(3))
    whole = min(split_cpu_seconds(20_000) for _ in range(3))
    assert whole < 2.0
    assert whole < 8 * max(quarter, 0.001), f"5,000: {quarter:.3f}s, 20,000: {whole:.3f}s"


# --- session settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "setting"),
    [
        ("SET lock_timeout = 0;", "lock_timeout"),
        ("set lock_timeout to '5s'", "lock_timeout"),
        ("SET SESSION statement_timeout = 0;", "statement_timeout"),
        ("SET LOCAL statement_timeout TO DEFAULT;", "statement_timeout"),
        ("SET search_path = a, public;", "search_path"),
        ("SET search_path TO '';", "search_path"),
        ("SET SCHEMA 'a';", "search_path"),
        ("SET idle_in_transaction_session_timeout = 0;", "idle_in_transaction_session_timeout"),
        ('SET "Lock_Timeout" = 0;', "lock_timeout"),
        ("/* pg_dump */ SET\n  lock_timeout -- why\n  = 0;", "lock_timeout"),
        ("RESET lock_timeout;", "lock_timeout"),
        ("reset search_path", "search_path"),
        ("RESET ALL;", "all"),
        ("DISCARD ALL;", "all"),
        ("SELECT set_config('search_path', '', false);", "search_path"),
        ("SELECT pg_catalog.set_config('lock_timeout', '0', true);", "lock_timeout"),
        ("SELECT 1, SET_CONFIG ( 'Statement_Timeout', '0', false );", "statement_timeout"),
        ("SELECT set_config($$search_path$$, '', false);", "search_path"),
        ("SELECT set_config(E'lock_timeout', '0', false);", "lock_timeout"),
        ("SET work_mem = '64MB';", None),
        ("SET SESSION AUTHORIZATION app;", None),
        ("SET ROLE app;", None),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;", None),
        ("SET TIME ZONE 'UTC';", None),
        ("SET lock_timeout.x = 1;", None),
        ("RESET work_mem;", None),
        ("RESET ROLE;", None),
        ("DISCARD PLANS;", None),
        ("SELECT set_config('work_mem', '1MB', false);", None),
        ("SELECT set_config(name, '0', false) FROM s;", None),
        ("SELECT 'SET lock_timeout = 0';", None),
        ("-- SET lock_timeout = 0\nSELECT 1;", None),
        ("ALTER ROLE app SET statement_timeout = 0;", None),
        ("ALTER DATABASE app SET search_path = a;", None),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = '' RETURN 1;", None),
        ("SELECT set_config", None),
        ("SET", None),
        ("", None),
    ],
)
def test_session_setting_names_the_protected_setting_a_statement_changes(
    statement: str, setting: str | None
) -> None:
    assert session_setting(statement) == setting


# --- statement kinds as a type, and statements that would end the runner's transaction ---------


def test_statement_kind_is_an_enum_equal_to_its_old_strings() -> None:
    assert [kind.value for kind in StatementKind] == [SQL, NO_TX, TX]
    assert StatementKind.TRANSACTION_CONTROL == "transaction_control"
    assert str(StatementKind.NO_TRANSACTION) == "no_transaction"
    assert f"{StatementKind.SQL}" == "sql"
    assert sqlsplit.SQL is StatementKind.SQL
    assert sqlsplit.NO_TRANSACTION is StatementKind.NO_TRANSACTION
    assert sqlsplit.TRANSACTION_CONTROL is StatementKind.TRANSACTION_CONTROL
    kinds = [s.kind for s in split_statements("BEGIN; VACUUM; SELECT 1;")]
    assert kinds == [StatementKind.TRANSACTION_CONTROL, "no_transaction", StatementKind.SQL]
    assert all(type(kind) is StatementKind for kind in kinds)


@pytest.mark.parametrize(
    ("sql", "line", "word"),
    [
        ("BEGIN;\nCREATE TABLE t (id int);\nROLLBACK;\n", 3, "ROLLBACK"),
        ("SELECT 1;\n\n  rollback", 3, "ROLLBACK"),
        ("ROLLBACK WORK;", 1, "ROLLBACK"),
        ("ROLLBACK TRANSACTION AND NO CHAIN;", 1, "ROLLBACK"),
        ("SELECT 1;\r\nROLLBACK AND CHAIN;", 2, "ROLLBACK"),
        ("SELECT 1;\n/* undo */ ABORT;", 2, "ABORT"),
        ("ABORT WORK;", 1, "ABORT"),
        ("abort transaction", 1, "ABORT"),
        ("SELECT 1;\nPREPARE TRANSACTION 'x';", 2, "PREPARE TRANSACTION"),
    ],
)
def test_rollback_or_abort_in_a_migration_is_an_error_naming_its_line(
    sql: str, line: int, word: str
) -> None:
    with pytest.raises(SplitError) as caught:
        split_statements(sql)
    assert caught.value.line == line
    assert caught.value.message.startswith(f"{word} is not allowed in a migration")
    assert "the runner owns the transaction" in caught.value.message
    assert caught.value.fix.startswith(f"Remove the {word} line")


def test_rollback_in_a_file_fails_validate_with_its_line_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "db" / "migrations"
    folder.mkdir(parents=True)
    (folder / "1_t.up.sql").write_text("BEGIN;\nCREATE TABLE t (id int);\nROLLBACK;\n")
    result = run_cli(["validate"], cwd=tmp_path)
    assert result.returncode == 2
    assert "1_t.up.sql: line 3: ROLLBACK is not allowed in a migration" in result.stderr
    assert "Remove the ROLLBACK line" in result.stderr


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("SAVEPOINT a;", SQL),
        ("ROLLBACK TO SAVEPOINT a;", SQL),
        ("ROLLBACK WORK TO a;", SQL),
        ("RELEASE SAVEPOINT a;", SQL),
        ("COMMIT PREPARED 'x';", NO_TX),
        ("ROLLBACK PREPARED 'x';", NO_TX),
        ("PREPARE p(int) AS SELECT $1;", SQL),
        ("BEGIN;", TX),
        ("COMMIT;", TX),
        ("END;", TX),
        ("START TRANSACTION;", TX),
    ],
)
def test_savepoints_and_prepared_transactions_split_as_ordinary_statements(
    statement: str, kind: str
) -> None:
    assert triples(f"SELECT 1;\n{statement}") == [("SELECT 1;", 1, SQL), (statement, 2, kind)]


def test_dollar_quote_tags_are_case_sensitive() -> None:
    # `$a$` does not close `$A$`: the body runs to the second `$A$`.
    assert texts("SELECT $A$ x $a$; y $A$; SELECT 2;") == [
        "SELECT $A$ x $a$; y $A$;",
        "SELECT 2;",
    ]
    with pytest.raises(SplitError) as caught:
        split_statements("SELECT 1;\nDO $Body$ BEGIN NULL; END $body$;")
    assert caught.value.line == 2
    assert "no closing $Body$" in caught.value.message


def test_bare_carriage_return_line_endings_count_lines() -> None:
    sql = "-- header\rCREATE TABLE t (\r  id int\r);\r\rSELECT 'a;\rb';\rSELECT 3;\n\r\nSELECT 4;"
    assert triples(sql) == [
        ("CREATE TABLE t (\r  id int\r);", 2, SQL),
        ("SELECT 'a;\rb';", 6, SQL),
        ("SELECT 3;", 8, SQL),
        ("SELECT 4;", 10, SQL),
    ]
    with pytest.raises(SplitError) as caught:
        split_statements("SELECT 1;\r\rSELECT 'open;\r")
    assert caught.value.line == 3


# --- against PostgreSQL's own lexer and parser (libpg_query, through pglast) -------------------
# pglast is a test-only dependency (the `test` extra): a compiled extension cannot ship in the
# slug, but it holds PostgreSQL's real scanner. Where it is not installed, these tests skip.

# Inputs lexically tricky for a splitter; those holding BEGIN ATOMIC are compared with the parser.
TRICKY_SQL = [
    "SELECT 'a;b';\nSELECT 2;",
    "INSERT INTO t VALUES ('it''s; fine', '''');\nSELECT ''';''';\n",
    "SELECT E'it\\'s; here';\nSELECT e'\\\\';\nSELECT 'C:\\';\n"
    "SELECT E'a''b;c\\\\';\nSELECT 'x' AS e;",
    "SELECT typname'\\'; SELECT 2;",
    "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;\nSELECT 1;",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $fn$\n"
    "  SELECT $$a;b$$ || $x$;$x$ || $fn_2$;$fn_2$;\n$fn$;\nSELECT $_$;$_$;",
    "CREATE FUNCTION add(int, int) RETURNS int LANGUAGE sql AS $body$\n  SELECT $1 + $2;\n"
    "$body$;\nPREPARE p(int) AS SELECT $1;\nEXECUTE p(1);\n",
    "SELECT a$b$ FROM t$$;\nSELECT x$1, é$$ FROM y;\nSELECT 3;",
    'SELECT $a$x$a$$b$;$b$, "q"$$;$$;\nSELECT 2;',
    "SELECT 1$$;$$, $1$x$;$x$, a1$$;\nSELECT 2;",
    "SELECT $A$ x $a$; y $A$; SELECT 2;",
    "SELECT $Tag$;$tag$;$TAG$;$Tag$; SELECT $tag$ $Tag$ $tag$;",
    "SELECT E'a' -- note\n  '\\';';\nSELECT 'b'\n'\\';\nSELECT 3;",
    'CREATE TABLE "we;ird$$" ("a""b;" int, "$x$" int);\nSELECT "$$";',
    "SELECT U&'d\\0061t;a' UESCAPE '\\', U&\"d;\\0061\" FROM t;\nSELECT 2;",
    "SELECT 1 /* outer /* inner; */ still; comment */ + 1;\nSELECT 2 /**/;",
    "SELECT 1 /* a /*/ ; */ still; */;\nSELECT 2 /*/ x */;",
    "SELECT 1 -- it's; not the end $$\n  + 1;\nSELECT 2;--done;",
    "SELECT '--', '/*', \"/*\";\nSELECT 2;",
    "-- migrate:up\n/* a header\n   over lines; */\n\n  CREATE TABLE t (id int); -- note\n"
    "/* between */ -- and more\nINSERT INTO t VALUES (1);\n",
    ";;\n ; -- nothing ; here\n;",
    "SELECT 1;\nSELECT 2 -- two\n  + 'x' /* done; */ -- really;\n/* bye */\n",
    "-- header\r\nCREATE TABLE t (\r\n  id int -- x;\r\n);\r\n\r\nSELECT 'a;\r\nb';\r\n",
    "-- header\rSELECT 'a;\rb' -- c;\r;\rSELECT 2",
    "CREATE TABLE café (naïve int, \"日本;\" text);\nINSERT INTO café VALUES (1, '😀;');",
    "SELECT 1;\nSELECT 'abc;\n\nSELECT 2;",
    "SELECT E'abc\\';\nSELECT 2;",
    "SELECT 1;\nDO $body$ BEGIN\nEND $$;\n",
    "SELECT 1;\n\n/* outer /* inner */ still open;\n",
    "\\connect other\nSELECT 1;",
    "SELECT 1;\nSELECT 'it\\'s';",
    "SELECT 'C:\\' \\ 'x';",
    "CREATE FUNCTION sign_of(x int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
    "  SELECT CASE WHEN x > 0 THEN 1 WHEN x < 0 THEN -1 ELSE 0 END;\n"
    "  SELECT (CASE x WHEN 0 THEN 0 ELSE CASE WHEN x > 9 THEN 2 END END);\nEND;\n"
    "SELECT sign_of(3);\n",
    "create /* c */ or replace -- x\nprocedure p() language sql begin /* ; */ atomic\n"
    "  insert into t values (1);\n  insert into t values ('end;');\nend;\ncall p();",
    "CREATE FUNCTION spans() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC\n"
    '  SELECT s.end AS end FROM spans_table s WHERE s."end" > 0;\nEND;\nSELECT 2;',
    "SELECT 1;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END -- x\n",
    "CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN begin;\n"
    "CREATE FUNCTION g() RETURNS int LANGUAGE sql RETURN CASE WHEN true THEN 1 END;\nSELECT 3;",
    "CREATE TABLE functions (id int);\nCREATE VIEW v AS SELECT 1 AS begin;\nSELECT 2;",
]

# Pieces of SQL, lexically tricky, joined at random for the generated cases.
PIECES = [
    *("x", "1", "$1", "a$b", "x$$y", "é$$", "1.5e3", "x.y", "::text", "+", "-", "/", "*", "&"),
    *("'a;b'", "'it''s'", "''", "'\\'", "'\n;\n'", "N'x;'", "B'01'", "X'1f'", "U&'\\0041;'"),
    *("E'\\';'", "e'\\\\'", "e'\\''", "E''", "E'''\\''", '"c;d"', '"e""f;"', '"$$"', 'U&"a;"'),
    *("$$ ; $$", "$t$ $$ ; $$ $t$", "$a$;$a$", "$$$$", "$a$$a$", "$$a$$", "$_$;$_$"),
    *("$A$ ; $a$ ; $A$", "$Tag$;$tag$;$Tag$", "$a$ $A$ ;", "$A$"),
    *("/* ; /* ; */ ; */", "/**/", "/*/ ; */", "*/", "/* $$ ' \" */", "-- ; ' \" $$\n"),
    *("--\n", "-- x\r", "\n", "\r\n", "\r", "\t", "\f", "\v", "; SELECT", "; ; SELECT"),
    "\u00a0",  # not whitespace to PostgreSQL: every non-ASCII character is an identifier's
]


def spans_of_ours(sql: str) -> list[tuple[int, int]] | int:
    """Our statements as (start, end) offsets, or the line of the SplitError."""
    try:
        statements = split_statements(sql)
    except SplitError as exc:
        return exc.line
    spans = []
    pos = 0
    for statement in statements:
        start = sql.index(statement.text, pos)
        pos = start + len(statement.text)
        spans.append((start, pos))
    return spans


def spans_of_lexer(parser: ModuleType, sql: str) -> list[tuple[int, int]] | int | None:
    """The statements libpg_query's lexer sees, as (start, end): from the first token that is
    not a comment to the `;` after it, or to the last token; empty statements left out. Where
    it fails on an unterminated run or finds a backslash, the line of that; None for its other
    errors (`1x`, `""`), which are no splitter's business."""
    try:
        tokens = parser.scan(sql)
    except parser.ParseError as exc:
        if "unterminated" not in str(exc):
            return None
        tokens = []
        failed_at = int(re.findall(r"at index (\d+)", str(exc))[-1])
    else:
        failed_at = -1
    backslashes = [t.start for t in tokens if sql[t.start : t.end + 1] == "\\"]
    if backslashes or failed_at >= 0:
        index = min(backslashes) if backslashes else failed_at
        return len(re.findall(r"\r\n|\r|\n", sql[:index])) + 1
    spans = []
    start = last_end = -1
    for token in tokens:
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        if token.name == "ASCII_59":
            if start >= 0:
                spans.append((start, token.end + 1))
            start = -1
        else:
            if start < 0:
                start = token.start
            last_end = token.end + 1
    if start >= 0:
        spans.append((start, last_end))
    return spans


def spans_of_parser(parser: ModuleType, sql: str) -> list[tuple[int, int]]:
    """The statements libpg_query's parser sees (it knows BEGIN ATOMIC bodies), each from its
    first token that is not a comment to its `;`, or to its last such token."""
    significant = [t for t in parser.scan(sql) if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    spans = []
    for part in parser.split(sql, with_parser=True, only_slices=True):
        inside = [t for t in significant if part.start <= t.start < part.stop]
        end = inside[-1].end + 1
        if sql.startswith(";", part.stop):
            end = part.stop + 1
        spans.append((inside[0].start, end))
    return spans


@pytest.fixture(scope="module")
def pg_query() -> ModuleType:
    try:
        from pglast import parser
    except ImportError as exc:  # not installed, or no wheel that loads on this Python
        pytest.skip(f"pglast (libpg_query) cannot be imported on this Python: {exc}")
    return parser


@pytest.mark.parametrize("sql", TRICKY_SQL, ids=range(len(TRICKY_SQL)))
def test_tricky_sql_splits_where_postgres_own_scanner_does(pg_query: ModuleType, sql: str) -> None:
    if "atomic" in sql.lower():
        assert spans_of_ours(sql) == spans_of_parser(pg_query, sql)
    else:
        expected = spans_of_lexer(pg_query, sql)
        assert expected is not None, "a corpus case PostgreSQL's lexer rejects for other reasons"
        assert spans_of_ours(sql) == expected


def test_generated_runs_of_tricky_tokens_split_where_postgres_lexer_does(
    pg_query: ModuleType,
) -> None:
    rng = random.Random(20261126)
    compared = failing = 0
    differences = []
    for _ in range(6000):
        sql = "SELECT " + " ".join(rng.choice(PIECES) for _ in range(rng.randint(1, 15)))
        expected = spans_of_lexer(pg_query, sql)
        if expected is None:
            continue
        compared += 1
        failing += isinstance(expected, int)
        got = spans_of_ours(sql)
        if got != expected:
            differences.append((sql, got, expected))
    assert differences[:3] == []
    # The comparison must not become vacuous: most cases count, and both outcomes occur.
    assert compared > 5000
    assert 600 < failing < compared - 600


def generated_atomic_file(rng: random.Random) -> str:
    """Plain statements and BEGIN ATOMIC routines, with CASE ... END, `t.end`, `AS end`, and
    `end` or `;` inside strings, quoted identifiers and comments."""
    exprs = [
        *("1", "x", "'end;'", "t.end", "$$;end$$", '"end"', "/* end; */ 3", "-- end;\n 4"),
        *("$E$;$e$;$E$", "E'end\\';'", "/* /* ; */ end */ 5"),
        "(CASE WHEN x > 0 THEN 1 ELSE 0 END)",
        "CASE x WHEN 1 THEN 'a;' END",
        "CASE WHEN true THEN CASE WHEN false THEN 2 END END",
    ]

    def plain() -> str:
        return rng.choice(
            [
                "SELECT " + ", ".join(rng.choice(exprs) for _ in range(rng.randint(1, 3))),
                "INSERT INTO t VALUES (" + rng.choice(exprs) + ")",
                "UPDATE t SET a = " + rng.choice(exprs) + " WHERE x = 1",
                "SELECT x AS end FROM t",
            ]
        )

    parts = []
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.1:  # the words, not as a body
            parts.append(
                "CREATE FUNCTION h(begin int, atomic int) RETURNS int LANGUAGE sql"
                " RETURN begin + atomic"
            )
        elif rng.random() < 0.5:
            body = ";\n  ".join(plain() for _ in range(rng.randint(1, 4)))
            head = rng.choice(
                ["FUNCTION f(x int) RETURNS int", "OR REPLACE PROCEDURE p(x int)", "function g()"]
            )
            end = rng.choice(["END", "end", "END /* ; */"])
            parts.append(f"CREATE {head} LANGUAGE sql\nBEGIN ATOMIC\n  {body};\n{end}")
        else:
            parts.append(plain())
    return ";\n".join(parts) + rng.choice([";\n", "", ";\n-- done\n"])


def test_generated_begin_atomic_files_split_where_postgres_parser_does(
    pg_query: ModuleType,
) -> None:
    rng = random.Random(7)
    differences = []
    for _ in range(600):
        sql = generated_atomic_file(rng)
        got = spans_of_ours(sql)
        expected = spans_of_parser(pg_query, sql)
        if got != expected:
            differences.append((sql, got, expected))
    assert differences[:3] == []
