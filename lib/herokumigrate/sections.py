"""Where migration SQL sits in its file, and its statements, whatever the file's format.

A section (one direction of a migration) points into the text of its file rather than copying
it: a 50 MB file is held once, and its statements are split a chunk at a time (see
`SqlSection.iter_statements`), so that checking or applying a large file never holds all
its statements.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

from herokumigrate.errors import BadInput

if TYPE_CHECKING:  # the splitter is imported on first use: a no-op release never splits
    from herokumigrate.sqlsplit import SplitError, Statement

# Past this size a plain region is split in pieces that end at a line ending in `;`.
SPLIT_CHUNK = 1 << 20
_LINE_ENDING_STATEMENT = re.compile(r";[ \t\r]*\n")
# A section this small keeps its statements after a complete split, so that checking it, then
# running it, splits it once; a larger one is split again each time (its statements are not all
# held at once: a 50 MiB file streams).
KEEP_CHARS = 64 * 1024


class SectionShape(NamedTuple):
    """Where a section's statements stand, without their text: how many there are, and those
    that are not plain SQL (run outside a transaction, or BEGIN/COMMIT the runner skips) by
    index, in the order of the file."""

    total: int
    apart: dict[int, Statement]


class SourceFile(NamedTuple):
    """A migration file: its path and name. Lighter than pathlib.Path, whose construction cost
    ~6 us per file, a visible share of a no-op release with thousands of files."""

    full: str
    name: str

    def __fspath__(self) -> str:
        return self.full

    @property
    def shown(self) -> str:
        """The name as printed: escaped when it holds control or unprintable characters."""
        return shown_name(self.name)


def shown_name(name: str) -> str:
    """A file name safe to print on one line: repr-escaped unless every character is printable
    (a newline, a control character or an undecodable byte must not reach the terminal raw)."""
    return name if name.isprintable() else repr(name)


@dataclass(frozen=True)
class SqlSection:
    """One direction (up or down) of a migration: a span of its file's text.

    `single_statements` lists spans (absolute offsets in `text`) that are ONE statement each
    whatever semicolons they hold (goose's StatementBegin/StatementEnd blocks).

    `one_query` says that the section's tool sends it as one simple query (sqlx, Diesel): run
    outside a transaction, it is sent whole, so that PostgreSQL runs several statements in it
    as one implicit transaction (all or none of them, as in the tool) and a single statement
    as it is. In a transaction its statements run in ours, as they would in the tool's.
    """

    path: SourceFile
    text: str = field(repr=False)  # the whole file
    start: int = 0
    end: int = -1  # -1: to the end of the text
    first_line: int = 1  # line of the file where the section starts
    transaction: bool = True  # False: dbmate's `transaction:false`, goose's NO TRANSACTION
    single_statements: tuple[tuple[int, int], ...] = field(default=())
    one_query: bool = False  # sent whole outside a transaction, as sqlx and Diesel send a file

    @property
    def stop(self) -> int:
        """Offset in `text` just past the section."""
        return len(self.text) if self.end < 0 else self.end

    @property
    def sql(self) -> str:
        """The section's SQL (a copy, except when it is the whole file)."""
        return self.text[self.start : self.stop]

    @cached_property
    def statements(self) -> list[Statement]:
        """The section split into statements, with line numbers of the file."""
        return list(self.iter_statements())

    @property
    def is_empty(self) -> bool:
        """True when the section holds no statement but comments, blanks or BEGIN/COMMIT."""
        from herokumigrate.sqlsplit import TRANSACTION_CONTROL

        return not any(s.kind is not TRANSACTION_CONTROL for s in self.iter_statements())

    @property
    def shape(self) -> SectionShape:
        """How many statements, and where those that are not plain SQL are: noted by the last
        complete pass of `iter_statements` (validate's, before a run), else by a pass now."""
        shape = self.__dict__.get("_shape")
        if shape is None:
            for _ in self.iter_statements():
                pass
            shape = self.__dict__["_shape"]
        assert isinstance(shape, SectionShape)
        return shape

    def iter_statements(self) -> Iterator[Statement]:
        """The statements one after another, without keeping them (BadInput on bad SQL). A
        pass to the end notes the section's `shape`."""
        from herokumigrate.sqlsplit import SQL

        kept = self.__dict__.get("_kept")
        if kept is not None:  # a small section split before: validate, then the run
            yield from kept
            return
        keep: list[Statement] | None = [] if self.stop - self.start <= KEEP_CHARS else None
        count = 0
        apart: dict[int, Statement] = {}
        for statement in self._statements():
            if statement.kind is not SQL:
                apart[count] = statement
            count += 1
            if keep is not None:
                keep.append(statement)
            yield statement
        self.__dict__["_shape"] = SectionShape(count, apart)  # frozen: not via setattr
        if keep is not None:
            self.__dict__["_kept"] = keep

    def _statements(self) -> Iterator[Statement]:
        pos, line = self.start, self.first_line
        for block_start, block_end in self.single_statements:
            yield from self._split_region(pos, block_start, line)
            line += self.text.count("\n", pos, block_start)
            statement = self._block_statement(block_start, block_end, line)
            if statement is not None:
                yield statement
            line += self.text.count("\n", block_start, block_end)
            pos = block_end
        yield from self._split_region(pos, self.stop, line)

    def file_line(self, statement: Statement, position: int | None = None) -> int:
        """The line of the file for a statement, or for a 1-based character position in it."""
        if position is None or position < 1:
            return statement.line
        return statement.line + statement.text.count("\n", 0, position - 1)

    def _error(self, exc: SplitError, first_line: int) -> BadInput:
        line = exc.line + first_line - 1
        return BadInput(
            f"{self.path.shown}: line {line}: {exc.message}",
            fix=exc.fix or f"Fix the SQL in {self.path.shown} and push again.",
        )

    def _split_region(self, start: int, stop: int, line: int) -> Iterator[Statement]:
        """Split text[start:stop] a piece at a time. A piece ends after a line ending in `;`
        and is kept only when the splitter ends its last statement at that `;` without an
        error: the scanner is then between statements, exactly as on the whole text (no token
        spans a line break), so the pieces' statements are the whole region's."""
        from herokumigrate.sqlsplit import SplitError, Statement, split_statements

        text = self.text
        while start < stop:
            size = SPLIT_CHUNK
            while True:
                cut = _cut_after(text, start + size, stop)
                piece = text[start:cut]
                try:
                    found = split_statements(piece)
                except SplitError as exc:
                    if cut >= stop:
                        raise self._error(exc, line) from None
                    size *= 2
                    continue
                if cut >= stop or not found or found[-1].text.endswith(";"):
                    break
                size *= 2
            shift = line - 1
            for s in found:
                yield Statement(s.text, s.line + shift, s.kind, s.data) if shift else s
            line += piece.count("\n")
            start = cut

    def _block_statement(self, start: int, stop: int, line: int) -> Statement | None:
        """A StatementBegin/End block as one statement (None when it holds only comments)."""
        from herokumigrate.sqlsplit import SplitError, Statement, classify, split_statements

        body = self.text[start:stop]
        try:
            found = split_statements(body)
            if not found:
                return None
            copy = next((s for s in found if s.data is not None), None)
            if copy is not None:  # the block goes to the server as one text: no COPY data
                raise SplitError(
                    "COPY ... FROM stdin inside a StatementBegin/StatementEnd block: its data "
                    "cannot be sent with the block",
                    copy.line,
                    fix="Move the COPY statement and its data lines after -- +goose StatementEnd.",
                )
        except SplitError as exc:
            raise self._error(exc, line) from None
        stripped = body.lstrip()
        line += body.count("\n", 0, len(body) - len(stripped))
        stripped = stripped.rstrip()
        return Statement(stripped, line, classify(stripped))


def _cut_after(text: str, at: int, stop: int) -> int:
    """The offset just past the first line ending in `;` at or after `at`, or `stop`."""
    if at >= stop:
        return stop
    found = _LINE_ENDING_STATEMENT.search(text, at, stop)
    return stop if found is None else found.end()
