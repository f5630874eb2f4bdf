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

Here: 10,000 such files split and classified in ~120 ms (~220,000 statements/s). The same script
with `--fuzz` finds no difference from libpg_query's lexer in where 100,000 random runs of tricky
tokens end their statements or fail, nor from its parser on 3,000 files of BEGIN ATOMIC bodies.

How: one compiled regex jumps between the few characters that matter (quotes, `$`, comment
starts, `;`, backslash) and each quoted run is skipped by a regex of its own, so a statement
costs a handful of regex calls, not a Python loop per character. Words (`BEGIN ATOMIC`, `CASE`,
`END`) are only looked at in statements that start `CREATE [OR REPLACE] FUNCTION|PROCEDURE`,
the only place a SQL-standard body can appear.

Lexical rules follow PostgreSQL's scanner with `standard_conforming_strings` on: in '...' a
backslash is literal and '' is a quote; E'...' also takes backslash escapes, including in a
continuation ('...' after a line break); "..." identifiers take ""; U&'...' and U&"..." need
nothing more; $tag$...$tag$ ends at the same tag, and neither `$1` nor the `$` inside an
identifier (`a$b`) opens one; `/* */` comments nest; `--` comments end at a line break. A
backslash outside quotes and comments is never SQL: it is reported as a psql meta-command
(`\\connect`, `\\set`, ...), which a migration runner cannot execute.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "NO_TRANSACTION",
    "PROTECTED_SETTINGS",
    "SQL",
    "TRANSACTION_CONTROL",
    "SplitError",
    "Statement",
    "classify",
    "session_setting",
    "split_statements",
]

SQL = "sql"
NO_TRANSACTION = "no_transaction"
TRANSACTION_CONTROL = "transaction_control"


class SplitError(Exception):
    """The file cannot be split: an unterminated quote, comment, dollar body or BEGIN ATOMIC
    body, or a psql meta-command. `line` is the 1-based line where the offending part starts."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a migration file."""

    text: str
    """From its first significant character up to and including its terminating `;`, if any.
    Leading comments and whitespace are excluded; comments inside are kept."""
    line: int
    """1-based line of the input where `text` starts."""
    kind: str
    """`sql`, `no_transaction` or `transaction_control`: see `classify`."""


# PostgreSQL takes every non-ASCII character as an identifier character. The classes are written
# as "anything but these ASCII characters": spelled with a range up to U+10FFFF, they would take
# tens of milliseconds to compile at every start-up.
_IDENT_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # letters, `_`, non-ASCII
_IDENT_CONT = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also digits, `$`
_TAG_CONT = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # a dollar tag: no `$`
_WS = " \t\n\r\f\v"

# The characters that change the scanner's state. Everything else is skipped at C speed.
_NEXT = re.compile(r"--|/\*|[;'\"$\\]")
# The same, plus whole identifiers: used only inside CREATE FUNCTION/PROCEDURE statements.
_NEXT_WITH_WORDS = re.compile(rf"--|/\*|[;'\"$\\]|{_IDENT_START}{_IDENT_CONT}*")
# What may stand between two statements: whitespace, line comments and empty statements.
_GAP = re.compile(rf"(?:[{_WS};]+|--[^\n\r]*)*")
_LINE_COMMENT = re.compile(r"--[^\n\r]*")
_COMMENT_DELIM = re.compile(r"/\*|\*/")
# The rest of a quoted run, after its opening quote. A doubled quote never closes one.
_STRING_REST = re.compile(r"[^']*(?:''[^']*)*'(?!')")
_ESCAPE_STRING_REST = re.compile(r"[^'\\]*(?:(?:''|\\.)[^'\\]*)*'(?!')", re.DOTALL)
# Whitespace holding a line break, then a quote: the string goes on, in the same mode, so an
# E'...' string continued on the next line keeps its backslash escapes.
_CONTINUATION = re.compile(r"(?:[ \t\f\v]|--[^\n\r]*)*[\n\r](?:[ \t\n\r\f\v]+|--[^\n\r]*[\n\r])*'")
_IDENT_REST = re.compile(r'[^"]*(?:""[^"]*)*"(?!")')
_DOLLAR_TAG = re.compile(rf"\$(?:{_IDENT_START}{_TAG_CONT}*)?\$")
_META_COMMAND = re.compile(r"\\[^\s\\]*")
_ROUTINE_HEAD = re.compile(
    rf"create[{_WS}]+(?:or[{_WS}]+replace[{_WS}]+)?(?:function|procedure)(?!{_IDENT_CONT})",
    re.IGNORECASE,
)
_CONCURRENTLY = re.compile("concurrently", re.IGNORECASE)
_LEAD_WORD = re.compile(rf"[{_WS}]*([A-Za-z_]+)(?!{_IDENT_CONT})")
_SECOND_WORD = re.compile(rf"[{_WS}]+([A-Za-z_]+)(?!{_IDENT_CONT})")
# One token for `classify`: a word, the opening of an escape string, a number, or one character.
_TOKEN = re.compile(
    rf"[{_WS}]*(?:([Ee]')|({_IDENT_START}{_IDENT_CONT}*)|([0-9][0-9A-Za-z_.]*)|(.))",
    re.DOTALL,
)
# For these first words, the second words that may make the statement something other than
# plain `sql`; a cheap look at the second word settles the common CREATE TABLE, ALTER TABLE ...
_SECOND_WORDS = {
    "create": frozenset({"unique", "index", "database", "tablespace", "subscription"}),
    "drop": frozenset({"index", "database", "tablespace", "subscription"}),
    "alter": frozenset({"system", "subscription", "database", "table"}),
}
# Statements whose first word may make them something other than plain `sql`.
_LEADERS = frozenset(
    {
        "abort",
        "alter",
        "begin",
        "cluster",
        "commit",
        "create",
        "drop",
        "end",
        "reindex",
        "rollback",
        "start",
        "vacuum",
    }
)
_STANDARD_STRINGS = (
    "in '...' strings a backslash is an ordinary character: write '' for a quote inside one, "
    "or use E'...'"
)
_FALSE_WORDS = frozenset({"false", "off", "0", "no"})


def _is_ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$" or c >= "\x80"


def _line_at(sql: str, index: int) -> int:
    return sql.count("\n", 0, index) + 1


def _skip_block_comment(sql: str, start: int) -> int:
    """Index just past the `*/` closing the comment opened at `start` (comments nest), or -1."""
    close = sql.find("*/", start + 2)
    if close < 0:
        return -1
    # `close + 1`: in `/*/` an opening shares its `*` with a closing, and the opening wins.
    if sql.find("/*", start + 2, close + 1) < 0:
        return close + 2
    depth = 1
    pos = start + 2
    while True:
        m = _COMMENT_DELIM.search(sql, pos)
        if m is None:
            return -1
        pos = m.end()
        if m.group() == "/*":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return pos


def _end_of_escape_string(sql: str, pos: int) -> int:
    """Index just past the E'...' string whose body starts at `pos`, or -1 if unterminated."""
    m = _ESCAPE_STRING_REST.match(sql, pos)
    while m is not None:
        more = _CONTINUATION.match(sql, m.end())
        if more is None:
            return m.end()
        m = _ESCAPE_STRING_REST.match(sql, more.end())
    return -1


def _opens_escape_string(sql: str, quote: int, boundary: int) -> bool:
    """Whether the `'` at `quote` opens an E'...' string: an `E` that is a word of its own."""
    return (
        quote > boundary
        and sql[quote - 1] in "eE"
        and (quote - 1 == boundary or not _is_ident_char(sql[quote - 2]))
    )


def _opens_dollar_quote(sql: str, pos: int, boundary: int) -> bool:
    """Whether a `$` at `pos` may open a dollar quote: not when it continues an identifier."""
    if pos == boundary:
        return True
    prev = sql[pos - 1]
    if not _is_ident_char(prev):
        return True
    if not "0" <= prev <= "9":
        return False
    # Digits: a number (`1$$`) or a parameter (`$1$$`) ends before the `$`; `a1$$` does not.
    k = pos - 1
    while k > boundary and "0" <= sql[k - 1] <= "9":
        k -= 1
    if k == boundary or not _is_ident_char(sql[k - 1]):
        return True
    return sql[k - 1] == "$" and (k - 1 == boundary or not _is_ident_char(sql[k - 2]))


def _skip_quoted(sql: str, pos: int, c: str, boundary: int) -> int:
    """Index just past the quoted run, comment or dollar body opening at `pos` with `c`.

    `c` is `'`, `"`, `$`, `--` or `/*`. `boundary` is where the current token run began: the
    statement's start, or the end of the quoted run just before, so that the character before
    `pos` is only looked at when it belongs to the same word. A `$` that opens nothing (`$1`,
    or inside an identifier such as `a$b`) is stepped over: the result is then `pos + 1`.
    """
    if c == "'":
        if _opens_escape_string(sql, pos, boundary):
            end = _end_of_escape_string(sql, pos + 1)
        else:
            m = _STRING_REST.match(sql, pos + 1)
            end = -1 if m is None else m.end()
        if end < 0:
            message = "unterminated quoted string"
            if "\\'" in sql[sql.rfind("\n", 0, pos) + 1 : pos]:
                message += f" ({_STANDARD_STRINGS})"
            raise SplitError(message, _line_at(sql, pos))
        return end
    if c == '"':
        m = _IDENT_REST.match(sql, pos + 1)
        if m is None:
            raise SplitError("unterminated quoted identifier", _line_at(sql, pos))
        return m.end()
    if c == "$":
        if not _opens_dollar_quote(sql, pos, boundary):
            return pos + 1
        m = _DOLLAR_TAG.match(sql, pos)
        if m is None:
            return pos + 1
        tag = m.group()
        close = sql.find(tag, m.end())
        if close < 0:
            raise SplitError(
                f"unterminated dollar-quoted string (no closing {tag})", _line_at(sql, pos)
            )
        return close + len(tag)
    if c == "--":
        m = _LINE_COMMENT.match(sql, pos)
        return len(sql) if m is None else m.end()
    if c == "/*":
        end = _skip_block_comment(sql, pos)
        if end < 0:
            raise SplitError("unterminated /* comment */", _line_at(sql, pos))
        return end
    raise _meta_command_error(sql, pos)  # c == "\\"


def _meta_command_error(sql: str, pos: int) -> SplitError:
    m = _META_COMMAND.match(sql, pos)
    command = m.group()[:24] if m is not None else "\\"
    line = _line_at(sql, pos)
    if command[1:2].isalpha() or command[1:2] in ("!", "?", "."):
        return SplitError(
            f"psql meta-command {command} is not supported in migrations: a migration is plain "
            "SQL sent to the server, and psql backslash commands are not SQL",
            line,
        )
    return SplitError(
        f"a backslash outside quotes ({command}) is not SQL ({_STANDARD_STRINGS})", line
    )


def _looks_like_routine(sql: str, start: int, end: int) -> bool:
    """Whether the statement at `start` begins CREATE [OR REPLACE] FUNCTION|PROCEDURE."""
    if sql[start : start + 6].lower() != "create":
        return False
    if _ROUTINE_HEAD.match(sql, start) is not None:
        return True
    head = sql[start:end]
    if "--" not in head and "/*" not in head:
        return False
    words = _tokens(head)
    next(words, None)
    word = next(words, None)
    if word == "or":
        if next(words, None) != "replace":
            return False
        word = next(words, None)
    return word in ("function", "procedure")


def _scan_routine(sql: str, start: int) -> int:
    """Like the plain scan, but a `;` inside a BEGIN ATOMIC ... END body does not end the
    statement. Returns the index of the terminating `;`, or -1 at the end of the input."""
    atomic_at = -1  # where the BEGIN of the body we are in starts, or -1 outside one
    case_depth = 0
    begin_at = -1  # where the last word was BEGIN, or -1
    previous = ""
    pos = boundary = start
    while True:
        m = _NEXT_WITH_WORDS.search(sql, pos)
        if m is None:
            if atomic_at >= 0:
                raise SplitError(
                    "unterminated BEGIN ATOMIC body (no END before the end of the file)",
                    _line_at(sql, atomic_at),
                )
            return -1
        tok = m.group()
        j = m.start()
        first = tok[0]
        if first == ";":
            if atomic_at < 0:
                return j
            pos = j + 1
            begin_at = -1
            previous = ";"
        elif first in "'\"$-/\\":
            pos = _skip_quoted(sql, j, tok, boundary)
            if pos != j + 1 or _opens_dollar_quote(sql, j, boundary):
                boundary = pos
        else:
            pos = m.end()
            word = tok.lower()
            # `t.end` and `AS end` use a keyword as a column name: not the keyword.
            if previous == "as" or (j > 0 and sql[j - 1] == "."):
                pass
            elif atomic_at < 0:
                if begin_at >= 0 and word == "atomic":
                    atomic_at = begin_at
                    case_depth = 0
                begin_at = j if word == "begin" else -1
            elif word == "case":
                case_depth += 1
            elif word == "end":
                if case_depth:
                    case_depth -= 1
                else:
                    atomic_at = -1
            previous = word


def _significant_end(sql: str, start: int) -> int:
    """Where the statement at `start`, which runs to the end of the input without a final `;`,
    ends once trailing whitespace and comments are left out."""
    end = pos = boundary = start
    while True:
        m = _NEXT.search(sql, pos)
        stop = len(sql) if m is None else m.start()
        if sql[pos:stop].strip(_WS):
            end = pos + len(sql[pos:stop].rstrip(_WS))
        if m is None:
            return end
        tok = m.group()
        if tok == ";":  # inside a BEGIN ATOMIC body
            end = pos = stop + 1
            continue
        pos = _skip_quoted(sql, stop, tok, boundary)
        if tok not in ("--", "/*"):
            end = pos
        if pos != stop + 1 or _opens_dollar_quote(sql, stop, boundary):
            boundary = pos


def split_statements(sql: str) -> list[Statement]:
    """The statements of `sql`, in order, each with its starting line and kind.

    Splits on `;` at top level only. Statements that are only comments or whitespace are
    dropped; a last statement without `;` is kept, without its trailing whitespace and
    comments. Raises SplitError for an unterminated quote, identifier, dollar body, block
    comment or BEGIN ATOMIC body (with the line where it started), and for psql meta-commands.
    """
    out: list[Statement] = []
    n = len(sql)
    line = 1
    line_pos = 0
    pos = 0
    gap = _GAP.match
    search = _NEXT.search
    while True:
        # Skip what lies between statements.
        while True:
            skipped = gap(sql, pos)
            if skipped is not None:  # always: the gap may be empty
                pos = skipped.end()
            if sql.startswith("/*", pos):
                pos = _skip_quoted(sql, pos, "/*", pos)
            else:
                break
        if pos >= n:
            return out
        start = boundary = pos
        checked_routine = False
        while True:
            m = search(sql, pos)
            if m is None:
                end = _significant_end(sql, start)
                pos = n
                break
            tok = m.group()
            j = m.start()
            if tok == ";":
                if not checked_routine:
                    checked_routine = True
                    if sql[start] in "cC" and _looks_like_routine(sql, start, j):
                        semi = _scan_routine(sql, start)
                        if semi < 0:
                            end = _significant_end(sql, start)
                            pos = n
                        else:
                            end = pos = semi + 1
                        break
                end = pos = j + 1
                break
            pos = _skip_quoted(sql, j, tok, boundary)
            # A `$` stepped over inside an identifier (`a$b`) leaves the word going on.
            if pos != j + 1 or _opens_dollar_quote(sql, j, boundary):
                boundary = pos
        line += sql.count("\n", line_pos, start)
        line_pos = start
        text = sql[start:end]
        out.append(Statement(text, line, classify(text)))


def _tokens(text: str) -> Iterator[str]:
    """The significant tokens of `text`, words lowercased: comments and whitespace are skipped,
    a string or dollar body becomes `'` and its raw body, a quoted identifier `"` and its name.
    Stops at anything unterminated."""
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:  # only whitespace left
            return
        estring, word, number, char = m.groups()
        if word is not None:
            pos = m.end()
            yield word.lower()
            continue
        if number is not None:
            pos = m.end()
            yield number
            continue
        if estring is not None:
            pos = _end_of_escape_string(text, m.end())
            if pos < 0:
                return
            yield "'" + text[m.end() : pos - 1]
            continue
        j = m.start(4)
        if char in "'\"$" or text.startswith(("--", "/*"), j):
            c = text[j : j + 2] if char in "-/" else char
            try:
                end = _skip_quoted(text, j, c, j)
            except SplitError:
                return
            pos = end
            if c in ("--", "/*"):
                continue
            if c == "$" and end == j + 1:
                yield "$"
            elif c == '"':
                yield '"' + text[j + 1 : end - 1].replace('""', '"')
            elif c == "$":
                tag = text.index("$", j + 1) + 1 - j
                yield "'" + text[j + tag : end - tag]
            else:
                yield "'" + text[j + 1 : end - 1]
            continue
        pos = m.end()
        yield char


def _next_word(words: Iterator[str]) -> str:
    return next(words, "")


def classify(statement_text: str) -> str:
    """The kind of one statement: `sql`, `no_transaction` or `transaction_control`.

    `no_transaction`: PostgreSQL refuses it inside a transaction block (CREATE/DROP INDEX
    CONCURRENTLY, REINDEX ... CONCURRENTLY or of a whole SCHEMA/DATABASE/SYSTEM, VACUUM,
    CREATE/DROP DATABASE, ALTER DATABASE ... SET TABLESPACE, CREATE/DROP TABLESPACE, ALTER SYSTEM,
    CLUSTER of every table, CREATE/ALTER/DROP SUBSCRIPTION, DETACH PARTITION ... CONCURRENTLY).
    `transaction_control`: a top-level BEGIN/START TRANSACTION/COMMIT/END/ROLLBACK/ABORT (not
    BEGIN ATOMIC, savepoints, or the PREPARED forms). Words are compared case-insensitively;
    comments, strings and quoted identifiers never count as keywords.
    """
    m = _LEAD_WORD.match(statement_text)
    if m is not None:
        lead = m.group(1).lower()
        if lead not in _LEADERS:
            return SQL
        seconds = _SECOND_WORDS.get(lead)
        if seconds is not None:
            m = _SECOND_WORD.match(statement_text, m.end())
            if m is not None:
                second = m.group(1).lower()
                if second not in seconds:
                    return SQL
                if second == "table" and _CONCURRENTLY.search(statement_text) is None:
                    return SQL
    words = _tokens(statement_text)
    first = _next_word(words)
    if first not in _LEADERS:
        return SQL
    if first == "vacuum":
        return NO_TRANSACTION
    if first in ("begin", "start", "commit", "end", "rollback", "abort"):
        return _classify_transaction_control(first, words)
    if first == "create":
        second = _next_word(words)
        if second == "unique":
            second = _next_word(words)
        if second == "index":
            return NO_TRANSACTION if _next_word(words) == "concurrently" else SQL
        return NO_TRANSACTION if second in ("database", "tablespace", "subscription") else SQL
    if first == "drop":
        second = _next_word(words)
        if second == "index":
            return NO_TRANSACTION if _next_word(words) == "concurrently" else SQL
        return NO_TRANSACTION if second in ("database", "tablespace", "subscription") else SQL
    if first == "alter":
        return _classify_alter(statement_text, words)
    if first == "reindex":
        return _classify_reindex(words)
    # CLUSTER
    return _classify_cluster(words)


def _classify_transaction_control(first: str, words: Iterator[str]) -> str:
    second = _next_word(words)
    if first == "begin":
        return SQL if second == "atomic" else TRANSACTION_CONTROL
    if first == "start":
        return TRANSACTION_CONTROL if second == "transaction" else SQL
    if first == "commit":
        return SQL if second == "prepared" else TRANSACTION_CONTROL
    if first == "rollback":
        if second == "prepared":
            return SQL
        if second in ("work", "transaction"):
            second = _next_word(words)
        return SQL if second == "to" else TRANSACTION_CONTROL
    return TRANSACTION_CONTROL  # END, ABORT


def _classify_alter(text: str, words: Iterator[str]) -> str:
    second = _next_word(words)
    if second in ("system", "subscription"):
        return NO_TRANSACTION
    if second == "database":
        _next_word(words)  # the database's name
        if _next_word(words) == "set" and _next_word(words) == "tablespace":
            return NO_TRANSACTION
        return SQL
    if second == "table" and _CONCURRENTLY.search(text) is not None:
        for word in words:
            if word == "detach":
                if _next_word(words) != "partition":
                    return SQL
                return NO_TRANSACTION if "concurrently" in words else SQL
    return SQL


def _skip_options(words: Iterator[str]) -> bool:
    """Consume a parenthesised option list (after its `(`); whether CONCURRENTLY is on in it."""
    concurrently = False
    option: list[str] = []
    for word in words:
        if word in (",", ")"):
            if option and option[0] == "concurrently":
                concurrently = len(option) == 1 or option[1] not in _FALSE_WORDS
            if word == ")":
                break
            option = []
        else:
            option.append(word)
    return concurrently


def _classify_reindex(words: Iterator[str]) -> str:
    second = _next_word(words)
    if second == "(":
        if _skip_options(words):
            return NO_TRANSACTION
        second = _next_word(words)
    if second in ("schema", "database", "system"):
        return NO_TRANSACTION
    return NO_TRANSACTION if _next_word(words) == "concurrently" else SQL


def _classify_cluster(words: Iterator[str]) -> str:
    second = _next_word(words)
    if second == "(":
        _skip_options(words)
        second = _next_word(words)
    elif second == "verbose":
        second = _next_word(words)
    return NO_TRANSACTION if second in ("", ";") else SQL


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
    words = _tokens(statement_text)
    first = _next_word(words)
    if first == "set":
        word = _next_word(words)
        if word in ("session", "local"):
            word = _next_word(words)
        if word == "schema":
            return "search_path"
        name = _setting_name(word)
        if name in PROTECTED_SETTINGS and _next_word(words) in ("to", "="):
            return name
        return None
    if first == "reset":
        word = _next_word(words)
        if word == "all":
            return "all"
        name = _setting_name(word)
        return name if name in PROTECTED_SETTINGS and _next_word(words) in ("", ";") else None
    if first == "discard":
        return "all" if _next_word(words) == "all" else None
    previous = ""
    for word in words:
        if previous == "set_config" and word == "(":
            argument = _next_word(words)
            if argument.startswith("'") and argument[1:].lower() in PROTECTED_SETTINGS:
                return argument[1:].lower()
        previous = word
    return None
