"""PostgreSQL's own parser (pglast, i.e. libpg_query) over migration sections.

It gives three things: a syntax error with file, line, column and PostgreSQL's message; the
statement trees the release-safety lint reads (`lint.py`); and a cross-check of the runtime
splitter (`sqlsplit.py`), whose statement boundaries must be exactly the parser's.

pglast is a compiled extension, one wheel per CPython version: it never goes into the slug. The
build imports it from a wheel unpacked in its cache (`buildpack/parser.py`); on a laptop it comes
from `pip install pglast`. Trees are read from libpg_query's JSON output: building pglast's
Python node objects costs ~40 times more (8.5 s against 0.2 s for 10,000 files).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herokumigrate.errors import BadInput
from herokumigrate.sections import SqlSection

if TYPE_CHECKING:
    from herokumigrate.tools import ToolName

NO_PARSE_DIRECTIVE = "heroku-migrate:no-parse"
"""A `-- heroku-migrate:no-parse` line in a file: PostgreSQL's parser skips it (syntax newer than
the parser's PostgreSQL version); no syntax check, no split cross-check and no lint for it."""
_STATEMENT = re.compile(r'\{"stmt":\{"(\w+)":')
_DECODER = json.JSONDecoder()
_NO_PARSE_RE = re.compile(r"^[ \t]*--[ \t]*heroku-migrate:no-parse[ \t]*$", re.MULTILINE)
# A `COPY ... FROM STDIN;` line (its data follows), and the `\\.` line that ends the data.
_COPY_IN_LINE = re.compile(
    r"^[ \t]*copy\b[^;]*\bfrom\s+stdin\b[^;]*;[^\n]*\n", re.IGNORECASE | re.MULTILINE
)
_END_OF_DATA = re.compile(r"^\\\.[ \t\r]*$", re.MULTILINE)
GOOSE_FORMAT: ToolName = "goose"
PGLAST_REQUIREMENT = "pglast==8.8"
"""The pglast the build pins (buildpack/build_wheels.txt) and the tests use: what to install to
run `heroku-migrate lint` (a test keeps the three equal)."""


class ParserUnavailable(Exception):
    """pglast cannot be imported here (not installed, or no wheel for this Python)."""


@dataclass(frozen=True, slots=True)
class ParsedStatement:
    """One statement as PostgreSQL's parser sees it."""

    node_type: str
    """The parse tree's top node type, e.g. `RenameStmt`, `IndexStmt`."""
    node: dict[str, Any]
    """That node's fields, as libpg_query's JSON output has them."""
    start: int
    """Character offset in the section where the statement's first token starts."""
    end: int
    """Character offset just past its last significant character (before its `;`)."""
    line: int
    """Line of the file where it starts."""


@dataclass(frozen=True)
class ParsedSection:
    """A section with its statements as parsed."""

    section: SqlSection
    statements: list[ParsedStatement]


def load_parser() -> Any:
    """The `pglast.parser` module, or ParserUnavailable."""
    try:
        return importlib.import_module("pglast.parser")
    except ImportError as exc:  # also a wheel built for another Python or platform
        raise ParserUnavailable(str(exc)) from None


def describe_parser(parser: Any) -> str:
    """`pglast 8.8, PostgreSQL 18.6`, for the build's report."""
    import pglast  # type: ignore[import-not-found,unused-ignore]

    major, minor = parser.get_postgresql_version()
    return f"pglast {str(pglast.__version__).lstrip('v')}, PostgreSQL {major}.{minor}"


def skips_parsing(section: SqlSection) -> bool:
    """Whether the section holds a `-- heroku-migrate:no-parse` line."""
    return NO_PARSE_DIRECTIVE in section.sql and _NO_PARSE_RE.search(section.sql) is not None


def parse_section(
    parser: Any,
    section: SqlSection,
    *,
    trees: bool = True,
    wanted: Mapping[str, str | None] | None = None,
) -> ParsedSection:
    """The section's statements, or BadInput naming file, line, column and PostgreSQL's message.

    Without `trees`, only where each statement starts and ends (node_type "", node {}), which is
    all `check_boundaries` needs. With `wanted` (node type -> the one field the caller reads, or
    None for the whole node), other nodes come back empty: decoding the JSON trees costs several
    times the parse, and most statements of a migration (CREATE TABLE, INSERT) concern no rule.
    A field named there must be its node's first one in libpg_query's output (struct order).
    """
    sql = blank_copy_data(section.sql)
    try:
        slices = parser.split(sql, with_parser=True, only_slices=True)
    except parser.ParseError as exc:
        location = exc.args[1] if len(exc.args) > 1 else None
        raise _syntax_error(section, str(exc.args[0]), location) from None
    nodes = _trees(parser, sql, wanted) if trees else [("", {})] * len(slices)
    statements = []
    for piece, (node_type, node) in zip(slices, nodes, strict=True):
        # `piece`: character offsets of the statement without its `;` and outer blanks.
        line = section.first_line + sql.count("\n", 0, piece.start)
        statements.append(ParsedStatement(node_type, node, piece.start, piece.stop, line))
    return ParsedSection(section, statements)


def blank_copy_data(sql: str) -> str:
    """`sql` with the inline data of its `COPY ... FROM STDIN` statements (and their `\\.`
    lines) blanked out, line breaks kept: the parser reads SQL, and the data is not; offsets
    and lines stay those of the file."""
    if "stdin" not in sql.lower():
        return sql
    out, pos = [], 0
    for found in _COPY_IN_LINE.finditer(sql):
        if found.start() < pos:
            continue
        end = _END_OF_DATA.search(sql, found.end())
        stop = end.end() if end is not None else len(sql)
        out += [sql[pos : found.end()], re.sub(r"[^\n]", " ", sql[found.end() : stop])]
        pos = stop
    out.append(sql[pos:])
    return "".join(out)


def _trees(
    parser: Any, sql: str, wanted: Mapping[str, str | None] | None
) -> list[tuple[str, dict[str, Any]]]:
    """Each statement's node type and (as much as `wanted` asks of) its node, decoded from the
    JSON one node at a time: `"stmt"` is a field of RawStmt only, the top-level statement."""
    doc = parser.parse_sql_json(sql)
    nodes: list[tuple[str, dict[str, Any]]] = []
    for head in _STATEMENT.finditer(doc):
        node_type = head.group(1)
        if wanted is not None and node_type not in wanted:
            nodes.append((node_type, {}))
            continue
        field = None if wanted is None else wanted[node_type]
        if field is None:
            nodes.append((node_type, _DECODER.raw_decode(doc, head.end())[0]))
            continue
        prefix = f'{{"{field}":'
        if doc.startswith(prefix, head.end()):
            value = _DECODER.raw_decode(doc, head.end() + len(prefix))[0]
            nodes.append((node_type, {field: value}))
        else:
            nodes.append((node_type, {}))  # the field is absent (it would come first)
    return nodes


def _syntax_error(section: SqlSection, message: str, position: int | None) -> BadInput:
    sql = section.sql
    # No position means "at end of input": point at the last significant character. (pglast
    # gives characters here, not bytes.)
    offset = max(len(sql.rstrip()) - 1, 0) if position is None else min(position, len(sql))
    line = section.first_line + sql.count("\n", 0, offset)
    column = offset - sql.rfind("\n", 0, offset)
    name = section.path.name
    return BadInput(
        f"{name}: line {line}, column {column}: {message}",
        fix=f"Fix the SQL in {name} (PostgreSQL would reject it at release). For syntax newer "
        f"than the build's parser, add a line `-- {NO_PARSE_DIRECTIVE}` to the file, or set "
        "MIGRATE_PARSE=false.",
    )


def check_boundaries(parsed: ParsedSection, migration_format: ToolName) -> None:
    """BadInput when the runtime splitter would cut the section other than PostgreSQL does.

    Each of the splitter's statements must be exactly one of the parser's: same line, same text.
    In goose files a `StatementBegin`/`StatementEnd` block is sent as one statement and may hold
    several of the parser's.
    """
    section = parsed.section
    theirs = parsed.statements
    sql = section.sql
    allow_blocks = migration_format == GOOSE_FORMAT
    j = 0
    for statement in section.statements:
        terminated = statement.text.endswith(";")
        body = (statement.text[:-1] if terminated else statement.text).rstrip()
        if j >= len(theirs) or theirs[j].line != statement.line:
            line = statement.line if j >= len(theirs) else min(statement.line, theirs[j].line)
            raise _split_disagreement(section, line)
        start = theirs[j].start
        k = j
        while True:
            text = sql[start : theirs[k].end].rstrip()
            # Without a `;`, the parser's last statement runs on over trailing comments.
            last = k == len(theirs) - 1
            if text == body or (not terminated and last and text.startswith(body)):
                break
            if not allow_blocks or len(text) >= len(body) or k + 1 >= len(theirs):
                raise _split_disagreement(section, statement.line)
            k += 1
        j = k + 1
    if j < len(theirs):
        raise _split_disagreement(section, theirs[j].line)


def _split_disagreement(section: SqlSection, line: int) -> BadInput:
    name = section.path.name
    return BadInput(
        f"{name}: line {line}: PostgreSQL's parser and heroku-migrate's statement splitter "
        "disagree on where a statement starts or ends: the release would run this file split "
        "differently from how PostgreSQL reads it",
        fix="Please report it (with the file) at "
        "https://github.com/heroku-buildpack-migrate/heroku-buildpack-migrate/issues; "
        "rewriting the statement near that line (e.g. a dollar-quoted body) usually avoids it.",
    )
