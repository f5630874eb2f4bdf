"""Split a migration file into PostgreSQL statements, and tell which cannot run in a transaction.

Why hand-written: the runner must know where each statement ends, to run the few that PostgreSQL
refuses inside a transaction block on their own, and this runs over every pending file on every
release and over every file in `validate` at build time. Measured with
`test/bench/splitter_compare.py` (500 synthetic ~315-byte migrations, 1,375 statements):

- sqlparse 0.6.1 (pure Python): 160-340 ms against 6-9 ms here, ~25x slower (10,000 files would
  take seconds), and it splits inside nested `/* /* */ ; */` comments; tagged dollar quotes,
  E'' escapes and BEGIN ATOMIC it gets right.
- pglast 8.8 (libpg_query, PostgreSQL's own parser): right on all cases and ~5x faster (1.4 ms),
  but a compiled extension, one wheel per CPython version and platform
  (cp311-manylinux2014_x86_64 ...): it cannot ship as one pure wheel into a slug for any stack.
  Its scanner-only split, which tolerates invalid SQL, splits BEGIN ATOMIC bodies apart.

Here: 10,000 such files split and classified in ~250 ms of CPU on a loaded 2-core machine
(~110,000 statements/s; best of 9). The suite checks where statements end against libpg_query's
lexer and parser (pglast, a test-only dependency): the tricky cases of test_sqlsplit.py, 6,000
generated runs of tricky tokens and 600 generated files of BEGIN ATOMIC bodies.

How: one scan loop (`sqllex.runs`) serves every reader: a compiled regex jumps between the few
characters that matter (quotes, `$`, comment starts, `;`, backslash) and each quoted run is
skipped by a regex of its own, so a statement costs a handful of regex calls, not a Python loop
per character. Every token is read (for BEGIN ATOMIC, CASE, END) only in a statement that
starts CREATE [OR REPLACE] FUNCTION|PROCEDURE and holds ATOMIC before its first `;`, the only
place a SQL-standard body can appear. `classify` reads one table, by first and second word.

Lexical rules, and the one scan over them: see `herokumigrate.sqllex`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from herokumigrate.sqllex import (
    COMMENTS,
    IDENT_CONT,
    NEXT,
    NEXT_TOKEN,
    PASSED_OVER,
    QUOTES,
    WS,
    SplitError,
    line_at,
    line_breaks,
    runs,
    skip_quoted,
    tokens,
)

__all__ = [
    "NO_TRANSACTION",
    "PROTECTED_SETTINGS",
    "SQL",
    "TRANSACTION_CONTROL",
    "SplitError",
    "Statement",
    "StatementKind",
    "classify",
    "session_setting",
    "split_statements",
]


class StatementKind(str, Enum):
    """What the runner does with a statement (see `classify`); compared by member
    (`kind is NO_TRANSACTION`)."""

    SQL = "sql"
    """Runs in the migration's transaction."""
    NO_TRANSACTION = "no_transaction"
    """PostgreSQL refuses it inside a transaction block: it runs on its own, in autocommit."""
    TRANSACTION_CONTROL = "transaction_control"
    """BEGIN, COMMIT and their kin: skipped, the runner owns the transaction."""

    def __str__(self) -> str:
        return self.value


SQL = StatementKind.SQL
NO_TRANSACTION = StatementKind.NO_TRANSACTION
TRANSACTION_CONTROL = StatementKind.TRANSACTION_CONTROL


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a migration file."""

    text: str
    """From its first significant character up to and including its terminating `;`, if any.
    Leading comments and whitespace are excluded; comments inside are kept."""
    line: int
    """1-based line of the input where `text` starts."""
    kind: StatementKind
    """See `classify`."""
    data: str | None = None
    """The inline data of a `COPY ... FROM STDIN` (the lines after it, up to its `\\.` line),
    sent through the COPY protocol; None for any other statement."""

    @property
    def data_line(self) -> int:
        """The line of the input where `data` starts (the one after the statement's end)."""
        return self.line + self.text.count("\n") + 1


# A statement's first word, and a next one after whitespace only, when they are plain: read
# without `runs`, they settle most statements (INSERT ..., CREATE TABLE ...). A word followed
# by `'` is left to `runs`, as it may prefix a string (E'...').
_FIRST_WORD = re.compile(rf"[{WS}]*([A-Za-z_]+)(?!{IDENT_CONT}|')")
_PLAIN_WORD = re.compile(rf"[{WS}]+([A-Za-z_]+)(?!{IDENT_CONT}|')")
_ATOMIC = re.compile("atomic", re.IGNORECASE)
# CREATE [OR REPLACE] and the next word, when they are plain.
_CREATE_HEAD = re.compile(
    rf"create[{WS}]+(?:or[{WS}]+replace[{WS}]+)?([A-Za-z_]+)(?!{IDENT_CONT}|')",
    re.IGNORECASE,
)
# A COPY reading its rows from the client (`COPY t (a, b) FROM stdin;`), and the line that
# ends its inline data.
_COPY_IN = re.compile(r"copy\b.*\bfrom[\s]+stdin\b", re.IGNORECASE | re.DOTALL)
_END_OF_DATA = re.compile(r"^\\\.[ \t\r]*$", re.MULTILINE)
# What may stand between two statements: whitespace, line comments and empty statements.
_GAP = re.compile(rf"(?:[{WS};]+|--[^\n\r]*)*")


def _routine_end(sql: str, start: int) -> tuple[int, int]:
    """The CREATE FUNCTION/PROCEDURE statement starting at `start`: (where its text ends, where
    the next statement may start). A `;` inside its BEGIN ATOMIC ... END body does not end it."""
    atomic_at = -1  # where the BEGIN of the body we are in starts, or -1 outside one
    case_depth = 0
    begin_at = -1  # where the last word was BEGIN, or -1
    previous = ""
    for found, at, end in runs(sql, start, NEXT_TOKEN):
        if found == ";":
            if atomic_at < 0:
                return end, end
            begin_at = -1
            previous = ";"
            continue
        if found in COMMENTS:
            continue
        word = found.lower()  # or a number, a quoted run, any other character
        # `t.end` and `AS end` use a keyword as a column name: not the keyword.
        if previous == "as" or (at > 0 and sql[at - 1] == "."):
            pass
        elif atomic_at < 0:
            if begin_at >= 0 and word == "atomic":
                atomic_at = begin_at
                case_depth = 0
            begin_at = at if word == "begin" else -1
        elif word == "case":
            case_depth += 1
        elif word == "end":
            if case_depth:
                case_depth -= 1
            else:
                atomic_at = -1
        previous = word
    if atomic_at >= 0:
        raise SplitError(
            "unterminated BEGIN ATOMIC body (no END before the end of the file)",
            line_at(sql, atomic_at),
        )
    return _code_end(sql, start), len(sql)


def _code_end(sql: str, start: int) -> int:
    """Where the code of sql[start:] ends, trailing whitespace and comments left out."""
    code_end = last = start  # the end of the code so far; the end of the last run
    for found, at, end in runs(sql, start, NEXT, QUOTES):
        if found in COMMENTS:
            kept = len(sql[last:at].rstrip(WS))  # before the comment, after the last run
            if kept:
                code_end = last + kept
        else:
            code_end = end
        last = end
    kept = len(sql[last:].rstrip(WS))
    return last + kept if kept else code_end


def _starts_routine(sql: str, start: int) -> bool:
    """Whether the statement at `start` begins CREATE [OR REPLACE] FUNCTION|PROCEDURE: the only
    statements where a SQL-standard body (BEGIN ATOMIC ... END) may hold `;`."""
    plain = _CREATE_HEAD.match(sql, start)
    if plain is not None and plain.group(1).lower() != "or":
        return plain.group(1).lower() in ("function", "procedure")  # settled without reading on
    words = tokens(sql, start)
    if next(words, "") != "create":
        return False
    word = next(words, "")
    if word == "or":
        if next(words, "") != "replace":
            return False
        word = next(words, "")
    return word in ("function", "procedure")


def split_statements(sql: str) -> list[Statement]:
    """The statements of `sql`, in order, each with its starting line and kind.

    Splits on `;` at top level only. Statements that are only comments or whitespace are
    dropped; a last statement without `;` is kept, without its trailing whitespace and
    comments. Raises SplitError for an unterminated quote, identifier, dollar body, block
    comment or BEGIN ATOMIC body (with the line where it started), for psql meta-commands, and
    for ROLLBACK, ABORT and PREPARE TRANSACTION, which would end the runner's transaction.
    """
    out: list[Statement] = []
    n = len(sql)
    line = 1
    line_pos = 0
    pos = 0
    gap = _GAP.match
    # Counting `\r` only where there is one keeps the common case at one count per statement.
    breaks = line_breaks if "\r" in sql else None
    while True:
        # Skip what lies between statements.
        while True:
            skipped = gap(sql, pos)
            if skipped is not None:  # always: the gap may be empty
                pos = skipped.end()
            if sql.startswith("/*", pos):
                pos = skip_quoted(sql, pos, "/*", pos)
            else:
                break
        if pos >= n:
            return out
        start = pos
        for _, _, end in runs(sql, start, NEXT, PASSED_OVER):  # only `;` come
            pos = end
            break
        else:  # no `;`: the statement runs to the end
            end = _code_end(sql, start)
            pos = n
        # A BEGIN ATOMIC body holds its first `;` after the word ATOMIC: without the word
        # before the first `;`, no need to look at the statement's words.
        if (
            sql[start] in "cC"
            and _ATOMIC.search(sql, start, end) is not None
            and _starts_routine(sql, start)
        ):
            end, pos = _routine_end(sql, start)
        line += sql.count("\n", line_pos, start) if breaks is None else breaks(sql, line_pos, start)
        line_pos = start
        text = sql[start:end]
        kind = classify(text)
        if kind is TRANSACTION_CONTROL:
            _refuse_ending_the_transaction(text, line)
        if sql[start] in "cC" and _COPY_HEAD.match(text) is not None:
            _refuse_copy_to_the_client(text, line)
            if _COPY_IN.match(text):
                # Without its `;` it ends the file: no data can follow (a SplitError).
                after = pos if text.endswith(";") else len(sql)
                data, pos = _copy_data(sql, after, line + text.count("\n"))
                out.append(Statement(text, line, kind, data))
                continue
        out.append(Statement(text, line, kind))


_COPY_HEAD = re.compile(rf"copy[{WS}(]", re.IGNORECASE)


def _refuse_copy_to_the_client(text: str, line: int) -> None:
    """SplitError for `COPY ... TO STDOUT`: a migration has nowhere to put the rows."""
    words = list(tokens(text, 0))
    if ("to", "stdout") in set(itertools.pairwise(words)):
        raise SplitError(
            "COPY ... TO stdout sends rows to the client: a migration has nowhere to put them",
            line,
            fix="Remove the COPY ... TO stdout statement (to export data, run it with psql).",
        )


def _copy_data(sql: str, pos: int, line: int) -> tuple[str, int]:
    """The inline data after a `COPY ... FROM STDIN;` ending at `pos` (from the next line up to
    its `\\.` line, as psql and Flyway read it), and where the text goes on after that line.
    SplitError when the `\\.` line is missing."""
    newline = sql.find("\n", pos)
    start = len(sql) if newline < 0 else newline + 1
    end = _END_OF_DATA.search(sql, start)
    if end is None:
        raise SplitError(
            "COPY ... FROM STDIN: its inline data has no end line `\\.`",
            line,
            fix="End the data with a line holding only \\. (as pg_dump writes it).",
        )
    return sql[start : end.start()], end.end()


def _refuse_ending_the_transaction(text: str, line: int) -> None:
    """ROLLBACK, ABORT and PREPARE TRANSACTION would be skipped as transaction control, and the
    file's work committed anyway: an error, not a silent skip."""
    first = next(tokens(text, 0), "")
    if first in ("rollback", "abort"):
        raise SplitError(
            f"{first.upper()} is not allowed in a migration: the runner owns the transaction and "
            "would commit the file's changes anyway",
            line,
            fix=f"Remove the {first.upper()} line: every pending migration runs in the runner's "
            "transaction. To leave a change out, don't ship its migration.",
        )
    if first == "prepare":
        raise SplitError(
            "PREPARE TRANSACTION is not allowed in a migration: the runner owns the transaction",
            line,
            fix="Remove the PREPARE TRANSACTION line.",
        )


# ----- kinds ----------------------------------------------------------------------------------
# One table says which statements are not plain `sql`: by first word, then by second word, each
# entry a kind or a function reading on. `classify` reads the first two words with a cheap
# match when they are plain, and with `tokens` otherwise; both feed the same table, so no
# statement can be known to one path and not the other.

_FALSE_WORDS = frozenset({"false", "off", "0", "no"})


def _concurrently_next(text: str, words: Iterator[str]) -> StatementKind:
    """... INDEX CONCURRENTLY, REINDEX INDEX|TABLE CONCURRENTLY."""
    return NO_TRANSACTION if next(words, "") == "concurrently" else SQL


def _unique_index(text: str, words: Iterator[str]) -> StatementKind:
    """CREATE UNIQUE INDEX CONCURRENTLY."""
    return _concurrently_next(text, words) if next(words, "") == "index" else SQL


def _sets_tablespace(text: str, words: Iterator[str]) -> StatementKind:
    """ALTER DATABASE x SET TABLESPACE."""
    next(words, "")  # the database's name
    if next(words, "") == "set" and next(words, "") == "tablespace":
        return NO_TRANSACTION
    return SQL


def _detaches_concurrently(text: str, words: Iterator[str]) -> StatementKind:
    """ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY."""
    # Reading every word of every ALTER TABLE would be slow; without the word, no need to.
    if "concurrently" not in text.lower():
        return SQL
    for word in words:
        if word == "detach":
            if next(words, "") != "partition":
                return SQL
            return NO_TRANSACTION if "concurrently" in words else SQL
    return SQL


def _options_turn_on_concurrently(words: Iterator[str]) -> bool:
    """Consume a parenthesised option list (after its `(`); whether CONCURRENTLY is on in it."""
    concurrently = False
    option: list[str] = []
    for word in words:
        if word in (",", ")"):
            if option and option[0] == "concurrently":
                value = option[1].removeprefix("'").lower() if len(option) > 1 else ""
                concurrently = value not in _FALSE_WORDS
            if word == ")":
                break
            option = []
        else:
            option.append(word)
    return concurrently


def _reindex_options(text: str, words: Iterator[str]) -> StatementKind:
    """REINDEX (options) ...: CONCURRENTLY among them, or what follows them decides."""
    if _options_turn_on_concurrently(words):
        return NO_TRANSACTION
    return _kind_after("reindex", next(words, ""), text, words)


def _cluster_options(text: str, words: Iterator[str]) -> StatementKind:
    """CLUSTER (options) ...: what follows them decides."""
    _options_turn_on_concurrently(words)  # only to pass over the list
    return _kind_after("cluster", next(words, ""), text, words)


def _cluster_verbose(text: str, words: Iterator[str]) -> StatementKind:
    """CLUSTER VERBOSE ...: what follows decides."""
    return _kind_after("cluster", next(words, ""), text, words)


def _rollback_to(text: str, words: Iterator[str]) -> StatementKind:
    """ROLLBACK WORK|TRANSACTION TO [SAVEPOINT] x is a savepoint's; otherwise the end."""
    return SQL if next(words, "") == "to" else TRANSACTION_CONTROL


_Outcome: TypeAlias = StatementKind | Callable[[str, Iterator[str]], StatementKind]
_IN_A_DATABASE_OF_ITS_OWN: dict[str, _Outcome] = {
    "database": NO_TRANSACTION,
    "tablespace": NO_TRANSACTION,
    "subscription": NO_TRANSACTION,
}
# First word -> (outcome by second word, outcome for any other second word). A second word of
# "" means none; `(` opens an option list.
_RULES: dict[str, tuple[dict[str, _Outcome], _Outcome]] = {
    "abort": ({}, TRANSACTION_CONTROL),
    "alter": (
        {
            "system": NO_TRANSACTION,
            "subscription": NO_TRANSACTION,
            "database": _sets_tablespace,
            "table": _detaches_concurrently,
        },
        SQL,
    ),
    "begin": ({"atomic": SQL}, TRANSACTION_CONTROL),
    "cluster": (
        {
            "": NO_TRANSACTION,
            ";": NO_TRANSACTION,
            "(": _cluster_options,
            "verbose": _cluster_verbose,
        },
        SQL,
    ),
    "commit": ({"prepared": NO_TRANSACTION}, TRANSACTION_CONTROL),
    "create": (
        {"index": _concurrently_next, "unique": _unique_index, **_IN_A_DATABASE_OF_ITS_OWN},
        SQL,
    ),
    "discard": ({"all": NO_TRANSACTION}, SQL),
    "drop": ({"index": _concurrently_next, **_IN_A_DATABASE_OF_ITS_OWN}, SQL),
    "end": ({}, TRANSACTION_CONTROL),
    "prepare": ({"transaction": TRANSACTION_CONTROL}, SQL),
    "reindex": (
        {
            "(": _reindex_options,
            "schema": NO_TRANSACTION,
            "database": NO_TRANSACTION,
            "system": NO_TRANSACTION,
        },
        _concurrently_next,
    ),
    "rollback": (
        {"prepared": NO_TRANSACTION, "to": SQL, "work": _rollback_to, "transaction": _rollback_to},
        TRANSACTION_CONTROL,
    ),
    "start": ({"transaction": TRANSACTION_CONTROL}, SQL),
    "vacuum": ({}, NO_TRANSACTION),
}


def _kind_after(first: str, second: str, text: str, words: Iterator[str]) -> StatementKind:
    """The kind of a statement starting `first second`, whose next words `words` holds."""
    by_second, otherwise = _RULES[first]
    found = by_second.get(second, otherwise)
    return found if isinstance(found, StatementKind) else found(text, words)


def classify(statement_text: str) -> StatementKind:
    """The kind of one statement: `sql`, `no_transaction` or `transaction_control`.

    `no_transaction`: PostgreSQL refuses it inside a transaction block (CREATE/DROP INDEX
    CONCURRENTLY, REINDEX ... CONCURRENTLY or of a whole SCHEMA/DATABASE/SYSTEM, VACUUM,
    CREATE/DROP DATABASE, ALTER DATABASE ... SET TABLESPACE, CREATE/DROP TABLESPACE, ALTER SYSTEM,
    CLUSTER of every table, CREATE/ALTER/DROP SUBSCRIPTION, DETACH PARTITION ... CONCURRENTLY,
    COMMIT/ROLLBACK PREPARED, DISCARD ALL).
    `transaction_control`: a top-level BEGIN/START TRANSACTION/COMMIT/END/ROLLBACK/ABORT/PREPARE
    TRANSACTION (not BEGIN ATOMIC, savepoints, or the PREPARED forms). Words are compared
    case-insensitively; comments, strings and quoted identifiers never count as keywords.
    """
    text = statement_text
    words: Iterator[str] | None = None
    head = _FIRST_WORD.match(text)
    if head is None:
        words = tokens(text, 0)
        first = next(words, "")
        if first not in _RULES:
            return SQL
        second = next(words, "")
    else:
        first = head.group(1).lower()
        if first not in _RULES:
            return SQL
        plain = _PLAIN_WORD.match(text, head.end())
        if plain is None:
            words = tokens(text, head.end())
            second = next(words, "")
        else:
            second = plain.group(1).lower()
            by_second, otherwise = _RULES[first]
            found = by_second.get(second, otherwise)
            if isinstance(found, StatementKind):
                return found
            return found(text, tokens(text, plain.end()))
    return _kind_after(first, second, text, words)


PROTECTED_SETTINGS = frozenset(
    {"lock_timeout", "statement_timeout", "search_path", "idle_in_transaction_session_timeout"}
)
"""The settings the runner sets for itself, which a migration must not change under it."""


def _setting_name(token: str) -> str:
    """A setting's name as PostgreSQL looks it up: quoted or not, case does not matter."""
    return token[1:].lower() if token.startswith('"') else token


def session_setting(statement_text: str) -> str | None:
    """The protected setting (see PROTECTED_SETTINGS) that a statement changes, `all` for
    RESET ALL and DISCARD ALL, else None.

    Recognised: `SET [SESSION | LOCAL] name {TO | =} ...`, `SET SCHEMA ...` (search_path),
    `RESET name`, `RESET ALL`, `DISCARD ALL`, and, best effort, a call `set_config('name', ...)`
    anywhere among the statement's own tokens (not inside a function body or a string that is
    run later). ALTER ROLE/DATABASE ... SET and a function's SET clause change other sessions or
    the function only: None.
    """
    words = tokens(statement_text, 0)
    first = next(words, "")
    if first == "set":
        word = next(words, "")
        if word in ("session", "local"):
            word = next(words, "")
        if word == "schema":
            return "search_path"
        name = _setting_name(word)
        if name in PROTECTED_SETTINGS and next(words, "") in ("to", "="):
            return name
        return None
    if first == "reset":
        word = next(words, "")
        if word == "all":
            return "all"
        name = _setting_name(word)
        return name if name in PROTECTED_SETTINGS and next(words, "") in ("", ";") else None
    if first == "discard":
        return "all" if next(words, "") == "all" else None
    previous = ""
    for word in words:
        if previous == "set_config" and word == "(":
            argument = next(words, "")
            if argument.startswith("'") and argument[1:].lower() in PROTECTED_SETTINGS:
                return argument[1:].lower()
        previous = word
    return None
