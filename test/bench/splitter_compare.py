"""Measure herokumigrate.sqlsplit, and compare its speed with sqlparse and pglast where installed.

Not part of the test suite. Where our statements end is checked against PostgreSQL's own lexer
and parser by the suite itself (test_sqlsplit.py, with pglast from the `test` extra); this script
only times. Run it with the project's venv (pglast comes with `.[test]`), adding sqlparse for
the full comparison:

    .venv/bin/pip install sqlparse   # optional
    .venv/bin/python test/bench/splitter_compare.py

It prints, for each splitter, how many of a few tricky cases it splits right and how long it
takes over 500 synthetic migrations of about 300 bytes; for ours, also 10,000 such migrations
split and classified in memory, and `validate`-like reading of 10,000 such files from disk.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from herokumigrate.sqlsplit import split_statements

# (name, sql, the statements it holds, as the SQL between the boundaries, stripped)
TRICKY: list[tuple[str, str, list[str]]] = [
    (
        "dollar quotes with a tag, holding $$ and ;",
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $fn$ SELECT $$a;b$$ $fn$;\nSELECT 2;",
        [
            "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $fn$ SELECT $$a;b$$ $fn$",
            "SELECT 2",
        ],
    ),
    (
        "plpgsql BEGIN ... END; inside a dollar body",
        "CREATE FUNCTION g() RETURNS void LANGUAGE plpgsql AS $body$\nBEGIN\n"
        "  PERFORM 1;\nEND;\n$body$;\nSELECT 3;",
        [
            "CREATE FUNCTION g() RETURNS void LANGUAGE plpgsql AS $body$\nBEGIN\n"
            "  PERFORM 1;\nEND;\n$body$",
            "SELECT 3",
        ],
    ),
    (
        "nested block comments holding ;",
        "SELECT 1 /* outer /* inner; */ still; comment */;\nSELECT 2;",
        ["SELECT 1 /* outer /* inner; */ still; comment */", "SELECT 2"],
    ),
    (
        "BEGIN ATOMIC with CASE ... END",
        "CREATE FUNCTION h(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC\n"
        "  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;\n  SELECT 2;\nEND;\nSELECT 4;",
        [
            "CREATE FUNCTION h(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC\n"
            "  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;\n  SELECT 2;\nEND",
            "SELECT 4",
        ],
    ),
    (
        "E'' string with \\' escape",
        "SELECT E'it\\'s; here';\nSELECT 5;",
        ["SELECT E'it\\'s; here'", "SELECT 5"],
    ),
    (
        "quoted identifier holding ; and $$",
        'CREATE TABLE "a;$$b" (x int);\nSELECT 6;',
        ['CREATE TABLE "a;$$b" (x int)', "SELECT 6"],
    ),
]


def synthetic_migration(i: int) -> str:
    """One migration of about 300 bytes, of a few common shapes."""
    shape = i % 4
    if shape == 0:
        return (
            f"-- add a note to accounts {i}, shown to staff on the account page\n"
            f"ALTER TABLE accounts_{i} ADD COLUMN note text NOT NULL DEFAULT '';\n"
            f"UPDATE accounts_{i} SET note = 'it''s; fine' WHERE id > {i};\n"
            f"CREATE INDEX CONCURRENTLY accounts_{i}_note_idx ON accounts_{i} (note);\n"
            f"COMMENT ON COLUMN accounts_{i}.note IS 'free text, shown to staff';\n"
        )
    if shape == 1:
        return (
            f"-- events of sign-up and login, kept for ninety days\n"
            f"CREATE TABLE events_{i} (\n"
            "    id bigserial PRIMARY KEY,\n"
            "    kind text NOT NULL, -- 'signup' or 'login'\n"
            "    payload jsonb NOT NULL DEFAULT '{}'::jsonb,\n"
            "    created_at timestamptz NOT NULL DEFAULT now()\n"
            ");\n"
            f"CREATE INDEX events_{i}_created_at_idx ON events_{i} (created_at);\n"
        )
    if shape == 2:
        return (
            f"-- keep updated_at current on every update of items_{i}\n"
            f"CREATE OR REPLACE FUNCTION touch_{i}() RETURNS trigger\n"
            "LANGUAGE plpgsql AS $$\nBEGIN\n  NEW.updated_at := now();\n  RETURN NEW;\nEND;\n$$;\n"
            f"CREATE TRIGGER touch_{i} BEFORE UPDATE ON items_{i}\n"
            f"  FOR EACH ROW EXECUTE FUNCTION touch_{i}();\n"
        )
    return (
        f"/* backfill {i}: turn the feature on, and rename the total column */\n"
        f"INSERT INTO settings (key, value) VALUES ('feature_{i}', 'on')\n"
        "  ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;\n"
        f'ALTER TABLE "Orders_{i}" RENAME COLUMN "Total" TO total_cents;\n'
        f'ALTER TABLE "Orders_{i}" ALTER COLUMN total_cents SET DEFAULT 0;\n'
    )


def ours(sql: str) -> list[str]:
    return [s.text.rstrip(";").strip() for s in split_statements(sql)]


def load_others() -> dict[str, Callable[[str], list[str]]]:
    out: dict[str, Callable[[str], list[str]]] = {}
    try:
        sqlparse = importlib.import_module("sqlparse")
    except ImportError:
        pass
    else:

        def with_sqlparse(sql: str) -> list[str]:
            return [s.rstrip(";").strip() for s in sqlparse.split(sql) if s.strip()]

        out[f"sqlparse {sqlparse.__version__}"] = with_sqlparse
    try:
        pglast_parser = importlib.import_module("pglast.parser")
        pglast = importlib.import_module("pglast")
    except ImportError:
        pass
    else:

        def with_pglast(sql: str) -> list[str]:
            return list(pglast_parser.split(sql, with_parser=True))

        def with_pglast_scanner(sql: str) -> list[str]:
            return list(pglast_parser.split(sql, with_parser=False))

        out[f"pglast {pglast.__version__} (parser)"] = with_pglast
        out[f"pglast {pglast.__version__} (scanner)"] = with_pglast_scanner
    return out


def strip_comments_around(statements: list[str]) -> list[str]:
    """Drop leading comment lines, so splitters that keep them compare equal."""
    out = []
    for s in statements:
        lines = s.splitlines()
        while lines and lines[0].lstrip().startswith("--"):
            lines.pop(0)
        out.append("\n".join(lines).strip())
    return out


def check(split: Callable[[str], list[str]]) -> list[str]:
    wrong = []
    for name, sql, expected in TRICKY:
        try:
            got = strip_comments_around(split(sql))
        except Exception as exc:
            wrong.append(f"{name} (raised {type(exc).__name__})")
            continue
        if got != expected:
            wrong.append(name)
    return wrong


def timed(split: Callable[[str], list[str]], corpus: list[str]) -> tuple[float, int]:
    """CPU seconds to split `corpus`, and the statements found: CPU time, and the best of
    several rounds, so that other work on a shared machine counts less."""
    begin = time.process_time()
    count = 0
    for sql in corpus:
        count += len(split(sql))
    return time.process_time() - begin, count


def main() -> None:
    splitters: dict[str, Callable[[str], list[str]]] = {"herokumigrate.sqlsplit": ours}
    splitters.update(load_others())
    corpus500 = [synthetic_migration(i) for i in range(500)]
    mean = sum(map(len, corpus500)) / len(corpus500)
    print(f"synthetic migrations: mean {mean:.0f} bytes")
    for name, split in splitters.items():
        wrong = check(split)
        best = min(timed(split, corpus500)[0] for _ in range(9))
        _, statements = timed(split, corpus500)
        print(
            f"{name}: {len(TRICKY) - len(wrong)}/{len(TRICKY)} tricky cases right"
            + (f" (wrong: {'; '.join(wrong)})" if wrong else "")
            + f"; 500 migrations in {best * 1000:.1f} ms ({statements / best:,.0f} statements/s)"
        )

    corpus = [synthetic_migration(i) for i in range(10_000)]
    best = min(timed(split_statements_kinds, corpus)[0] for _ in range(9))
    _, statements = timed(split_statements_kinds, corpus)
    print(
        f"herokumigrate.sqlsplit, 10,000 migrations in memory: {best * 1000:.0f} ms "
        f"({statements / best:,.0f} statements/s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for i, sql in enumerate(corpus):
            Path(tmp, f"{i:05d}_m.up.sql").write_text(sql)
        names = sorted(os.listdir(tmp))
        begin = time.perf_counter()
        for name in names:
            Path(tmp, name).read_text(encoding="utf-8")
        reading = time.perf_counter() - begin
        begin = time.perf_counter()
        for name in names:
            split_statements(Path(tmp, name).read_text(encoding="utf-8"))
        elapsed = time.perf_counter() - begin
    print(
        f"herokumigrate.sqlsplit, 10,000 files read from disk and split: {elapsed * 1000:.0f} ms"
        f" (reading alone: {reading * 1000:.0f} ms)"
    )


def split_statements_kinds(sql: str) -> list[str]:
    return [s.kind for s in split_statements(sql)]


if __name__ == "__main__":
    main()
