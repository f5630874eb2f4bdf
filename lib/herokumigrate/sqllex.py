"""PostgreSQL's lexical rules, for the splitter: quoted runs, comments, and one scan over them.

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

__all__ = [
    "COMMENTS",
    "IDENT_CONT",
    "NEXT",
    "NEXT_TOKEN",
    "PASSED_OVER",
    "QUOTES",
    "WS",
    "SplitError",
    "line_at",
    "line_breaks",
    "runs",
    "skip_quoted",
    "tokens",
]


class SplitError(Exception):
    """The file cannot be split: an unterminated quote, comment, dollar body or BEGIN ATOMIC
    body, a psql meta-command, or a statement that would end the runner's transaction.
    `line` is the 1-based line where the offending part starts; `fix`, when given, says what
    to do instead of the generic "fix the SQL"."""

    def __init__(self, message: str, line: int, fix: str = "") -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line
        self.fix = fix

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


# PostgreSQL takes every non-ASCII character as an identifier character. The classes are written
# as "anything but these ASCII characters": spelled with a range up to U+10FFFF, they would take
# tens of milliseconds to compile at every start-up.
_IDENT_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # letters, `_`, non-ASCII
IDENT_CONT = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also digits, `$`
_TAG_CONT = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # a dollar tag: no `$`
WS = " \t\n\r\f\v"

# What `runs` stops at. Plain statements: only the characters that change the scanner's state;
# everything else is skipped at C speed.
NEXT = re.compile(r"--|/\*|[;'\"$\\]")
# CREATE FUNCTION/PROCEDURE statements, to follow BEGIN ATOMIC ... END, and `classify` and
# `session_setting`: every token (words, numbers, any other character).
NEXT_TOKEN = re.compile(
    rf"--|/\*|[;'\"$\\]|{_IDENT_START}{IDENT_CONT}*|[0-9][0-9A-Za-z_.]*|[^{WS}]"
)
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
_STANDARD_STRINGS = (
    "in '...' strings a backslash is an ordinary character: write '' for a quote inside one, "
    "or use E'...'"
)


def _is_ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$" or c >= "\x80"


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


def skip_quoted(sql: str, pos: int, c: str, boundary: int) -> int:
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
            line_start = max(sql.rfind("\n", 0, pos), sql.rfind("\r", 0, pos)) + 1
            if "\\'" in sql[line_start:pos]:
                message += f" ({_STANDARD_STRINGS})"
            raise SplitError(message, line_at(sql, pos))
        return end
    if c == '"':
        m = _IDENT_REST.match(sql, pos + 1)
        if m is None:
            raise SplitError("unterminated quoted identifier", line_at(sql, pos))
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
                f"unterminated dollar-quoted string (no closing {tag})", line_at(sql, pos)
            )
        return close + len(tag)
    if c == "--":
        m = _LINE_COMMENT.match(sql, pos)
        return len(sql) if m is None else m.end()
    if c == "/*":
        end = _skip_block_comment(sql, pos)
        if end < 0:
            raise SplitError("unterminated /* comment */", line_at(sql, pos))
        return end
    raise _meta_command_error(sql, pos)  # c == "\\"


def _meta_command_error(sql: str, pos: int) -> SplitError:
    m = _META_COMMAND.match(sql, pos)
    command = m.group()[:24] if m is not None else "\\"
    line = line_at(sql, pos)
    if command[1:2].isalpha() or command[1:2] in ("!", "?", "."):
        return SplitError(
            f"psql meta-command {command} is not supported in migrations: a migration is plain "
            "SQL sent to the server, and psql backslash commands are not SQL",
            line,
        )
    return SplitError(
        f"a backslash outside quotes ({command}) is not SQL ({_STANDARD_STRINGS})", line
    )


# ----- the scanner ----------------------------------------------------------------------------
# One loop, `runs`, walks the input for every caller: the splitter asks it for statement ends
# (and, in routines, words), `tokens` for every token `classify` and `session_setting` read.

_OPENERS = frozenset({"'", '"', "$", "--", "/*", "\\"})
COMMENTS = frozenset({"--", "/*"})
QUOTES = frozenset({"'", '"', "$"})
# What the splitter steps over without a look: quoted runs and comments.
PASSED_OVER = frozenset({"'", '"', "$", "--", "/*"})
_NOTHING: frozenset[str] = frozenset()


def runs(
    sql: str, pos: int, pattern: re.Pattern[str], silent: frozenset[str] = _NOTHING
) -> Iterator[tuple[str, int, int]]:
    """Every match of `pattern` in `sql` from `pos` on, as (token, start, end), but for tokens
    in `silent`, which are stepped over without a word.

    A quote, comment or dollar-quote opener (see `skip_quoted`) comes as one run: its token is
    the opener and `end` is past the whole quoted run, so nothing inside it is ever matched.
    Raises SplitError for an unterminated run or a backslash outside quotes.
    """
    boundary = pos
    search = pattern.search
    while (m := search(sql, pos)) is not None:
        token = m.group()
        start = m.start()
        if token in _OPENERS:
            pos = skip_quoted(sql, start, token, boundary)
            # A `$` stepped over inside an identifier (`a$b`) leaves the word going on.
            if pos != start + 1 or _opens_dollar_quote(sql, start, boundary):
                boundary = pos
            if token in silent:
                continue
        else:
            pos = m.end()
        yield token, start, pos


def line_breaks(sql: str, start: int, end: int) -> int:
    """Line breaks in sql[start:end]: `\\n`, `\\r\\n` and a bare `\\r` each end a line."""
    newlines = sql.count("\n", start, end)
    returns = sql.count("\r", start, end)
    if returns:
        return newlines + returns - sql.count("\r\n", start, end)
    return newlines


def line_at(sql: str, index: int) -> int:
    return line_breaks(sql, 0, index) + 1


def tokens(text: str, pos: int) -> Iterator[str]:
    """The significant tokens of `text` from `pos`, words lowercased. Comments and whitespace
    are skipped; a string or dollar body becomes `'` and its raw body, a quoted identifier `"`
    and its name. Stops quietly at anything unterminated: the splitter reports those."""
    try:
        for token, start, end in runs(text, pos, NEXT_TOKEN):
            first = token[0]
            if first == "'":
                yield "'" + text[start + 1 : end - 1]
            elif first == '"':
                yield '"' + text[start + 1 : end - 1].replace('""', '"')
            elif first == "$":
                if end == start + 1:
                    yield "$"
                else:
                    tag = text.index("$", start + 1) + 1 - start
                    yield "'" + text[start + tag : end - tag]
            elif token in COMMENTS:
                continue
            elif token in ("e", "E") and text.startswith("'", end):
                continue  # the prefix of an E'...' string
            else:
                yield token.lower()
    except SplitError:
        return
