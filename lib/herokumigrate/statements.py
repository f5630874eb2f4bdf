"""Running migrations' statements: one at a time, or many in one round trip; a failure becomes
a StepFailed that names the file and line.

A round trip may carry several migrations' statements (`batches`): the server then runs them
back to back, never waiting for the client between two migrations. Our own statements go
between them: the timeouts re-asserted as the migration changes, and a mark that reads the
server's clock, so that each migration's share of the round trip is known.
"""

from __future__ import annotations

import bisect
import itertools
import re
import time
from typing import TYPE_CHECKING

import psycopg

from herokumigrate.output import one_line

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from psycopg.pq.abc import PGresult

    from herokumigrate.plan import Step

    Conn = psycopg.Connection[tuple[object, ...]]

# SQL characters sent per round trip when statements run in a batch: a large file goes to the
# server in pieces of about this size, all in the same transaction.
BATCH_CHARS = 1 << 20

# Where a round trip carries several migrations: the server's clock before each one and at the
# end (seconds, as text). Its column's name tells the mark's result from a migration's.
_MARK_COLUMN = b"heroku_migrate_mark"
# numeric: its text does not depend on extra_float_digits (a migration may set it).
_MARK = (
    "SELECT EXTRACT(epoch FROM pg_catalog.clock_timestamp())::pg_catalog.numeric(20, 6)"
    " AS heroku_migrate_mark;"
)

# A round trip's statements: (our own statements sent first, or "", one migration's consecutive
# statements), in order.
Segment = tuple[str, "list[Step]"]


class StepFailed(Exception):
    """A statement failed; carries where, for the message.

    `position` is PostgreSQL's 1-based error position within `step`'s text, when known;
    `pinpointed` is False when a batch failed without saying which of its statements did.
    """

    def __init__(
        self,
        step: Step,
        error: psycopg.Error,
        *,
        position: int | None = None,
        pinpointed: bool = True,
        data_line: int | None = None,
        through: Step | None = None,
    ) -> None:
        super().__init__(str(error))
        self.step = step
        self.error = error
        self.position = position
        self.pinpointed = pinpointed
        self.data_line = data_line  # the 1-based line of a COPY's data that failed
        # Not pinpointed, in a round trip that carried several migrations: its last statement.
        self.through = through

    def with_error(self, error: psycopg.Error) -> StepFailed:
        """The same failure, where it happened, as another error (e.g. a cancel turned into
        the lock timeout it stood for)."""
        return StepFailed(
            self.step,
            error,
            position=self.position,
            pinpointed=self.pinpointed,
            data_line=self.data_line,
            through=self.through,
        )

    def describe(self) -> str:
        """`file: line N: ERROR SQLSTATE: message (detail) hint: ...` for the user."""
        diag = self.error.diag
        path = self.step.section.path.name
        if self.data_line is not None:
            line = self.step.statement.data_line + self.data_line - 1
            where = f"{path}: line {line} (COPY data)"
        elif self.pinpointed:
            line = self.step.section.file_line(self.step.statement, self.position)
            where = f"{path}: line {line}"
        elif self.through is not None:
            last = self.through.section.path.name
            where = (
                f"{path} ... {last} (sent in one round trip; the failing statement could not "
                "be pinpointed)"
            )
        else:
            where = f"{path} (the failing statement could not be pinpointed)"
        message = diag.message_primary or one_line(str(self.error))
        parts = [f"{where}: ERROR {self.error.sqlstate or '?'}: {message}"]
        if diag.message_detail:
            parts.append(f"({one_line(diag.message_detail)})")
        if diag.message_hint:
            parts.append(f"hint: {one_line(diag.message_hint)}")
        return " ".join(parts)


def execute(conn: Conn, step: Step) -> None:
    """Run one statement; StepFailed on a SQL error, the psycopg error if the session is gone.
    A `COPY ... FROM STDIN` sends its inline data through the COPY protocol."""
    data = step.statement.data
    try:
        if data is not None:
            _copy_in(conn, step.statement.text, data)
        else:
            conn.execute(step.statement.text.encode("utf-8"))
    except psycopg.OperationalError as exc:
        if connection_lost(exc):
            raise  # handled as such, not as a SQL error
        raise _step_failed(step, exc) from exc
    except psycopg.Error as exc:
        raise _step_failed(step, exc) from exc


def _copy_in(conn: Conn, text: str, data: str) -> None:
    """`COPY ... FROM stdin` with the data lines that followed it in the file, as psql sends
    them (a piece at a time: a large seed file is not copied in memory again)."""
    with conn.cursor() as cursor, cursor.copy(text.encode("utf-8")) as copy:
        for at in range(0, len(data), BATCH_CHARS):
            copy.write(data[at : at + BATCH_CHARS].encode("utf-8"))


# PostgreSQL's context of a failed COPY FROM: "COPY t, line 3, column id: "x"".
_COPY_LINE_RE = re.compile(r"^COPY [^\n]*?, line ([0-9]+)", re.MULTILINE)


def _step_failed(step: Step, exc: psycopg.Error) -> StepFailed:
    """The StepFailed of one statement: where PostgreSQL placed the error, and for COPY data,
    the data line it names."""
    data_line = None
    if step.statement.data is not None:
        found = _COPY_LINE_RE.search(exc.diag.context or "")
        data_line = int(found.group(1)) if found else None
    position = _int_or_none(exc.diag.statement_position)
    return StepFailed(step, exc, position=position, data_line=data_line)


def execute_batch(conn: Conn, segments: list[Segment]) -> list[float]:
    """Statements in one round trip (simple query protocol), each segment's after its prefix
    (our own statements, e.g. the timeouts re-asserted: no round trip of their own); the ms
    each segment took. Of one segment, the round trip's time; of several, the server's clock
    read between them (a mark before each and one at the end).

    An error position from PostgreSQL is mapped back to the statement and its line; an
    error without one, or in our own statements, leaves the batch un-pinpointed (see
    `runner.UnitRunner.pinpoint`).
    """
    started = time.perf_counter()
    if len(segments) > 1:
        cursor, at = _send(conn, segments, marks=True)
        stamps = _marks(cursor, at)
        if len(stamps) == len(segments) + 1:
            # (A clock set back by the server's time sync gives 0, not a negative time.)
            return [max(0.0, (b - a) * 1000) for a, b in itertools.pairwise(stamps)]
        raise AssertionError(f"{len(stamps)} marks for {len(segments)} migrations")  # a bug
    prefix, steps = segments[0]
    if any(step.statement.data is not None for step in steps):
        if prefix:  # a COPY's data cannot share a simple query: one round trip each
            conn.execute(prefix.encode("utf-8"))
        for step in steps:
            execute(conn, step)
    elif len(steps) == 1 and not prefix:
        execute(conn, steps[0])
    else:
        _send(conn, segments, marks=False)
    return [(time.perf_counter() - started) * 1000]


def _send(
    conn: Conn, segments: list[Segment], *, marks: bool
) -> tuple[psycopg.Cursor[tuple[object, ...]], list[int]]:
    """The segments' statements as one query (a prefix is one statement); StepFailed names the
    statement that failed. The cursor, and which of its results are the marks."""
    spans: list[tuple[int, Step | None]] = []  # where each statement starts in the query
    parts: list[str] = []
    at: list[int] = []  # the marks' statements
    offset = 0

    def add(text: str, step: Step | None) -> None:
        nonlocal offset
        spans.append((offset, step))
        parts.append(text)
        offset += len(text) + 1

    def mark() -> None:
        at.append(len(parts))
        add(_MARK, None)

    for prefix, steps in segments:
        if marks:
            mark()
        if prefix:
            add(prefix, None)
        for step in steps:
            text = step.statement.text
            if not text.rstrip().endswith(";"):
                text += "\n;"  # on its own line: the text may end in a -- comment
            add(text, step)
    if marks:
        mark()
    try:
        return conn.execute("\n".join(parts).encode("utf-8")), at
    except psycopg.OperationalError as exc:
        if connection_lost(exc):
            raise
        raise _batch_failure(spans, exc) from exc
    except psycopg.Error as exc:
        raise _batch_failure(spans, exc) from exc


def _marks(cursor: psycopg.Cursor[tuple[object, ...]], at: list[int]) -> list[float]:
    """The server's clock at each mark: the results at `at` (a statement gives one), else
    (a file's statement that gave none, or several) the marks found among all of them."""
    try:
        return [_mark(cursor.set_result(i).pgresult) for i in at]
    except (IndexError, ValueError):
        pass
    stamps = []
    for result in cursor.set_result(0).results():  # from the first, wherever the cursor is
        try:
            stamps.append(_mark(result.pgresult))
        except ValueError:
            continue
    return stamps


def _mark(result: PGresult | None) -> float:
    """The clock a mark's result gives; ValueError for any other result."""
    if result is None or result.nfields != 1 or result.fname(0) != _MARK_COLUMN:
        raise ValueError("not a mark")
    return float(result.get_value(0, 0) or 0)


def batches(
    steps: Iterable[Step], limit: int = BATCH_CHARS, *, per_migration: bool = False
) -> Iterator[list[Step]]:
    """Consecutive steps grouped, at most `limit` characters of SQL per group (a longer
    statement is a group of its own, as is a COPY with its data), across migrations unless
    `per_migration`; read lazily, so that a large file is sent a bounded piece at a time."""
    batch: list[Step] = []
    size = 0
    for step in steps:
        length = len(step.statement.text)
        if step.statement.data is not None:  # COPY's data goes its own way: a group of its own
            if batch:
                yield batch
            yield [step]
            batch, size = [], 0
            continue
        apart = per_migration and batch and batch[-1].migration is not step.migration
        if batch and (apart or size + length > limit):
            yield batch
            batch, size = [], 0
        batch.append(step)
        size += length
    if batch:
        yield batch


def _batch_failure(spans: list[tuple[int, Step | None]], exc: psycopg.Error) -> StepFailed:
    """The StepFailed of a query of several statements: the one at PostgreSQL's error
    position, else (no position, or one in our own statements) the first, un-pinpointed."""
    steps = [step for _, step in spans if step is not None]
    first, last = steps[0], steps[-1]
    through = last if last.migration is not first.migration else None
    position = _int_or_none(exc.diag.statement_position)
    if position is None:
        # Our own statements set values PostgreSQL accepted at connect time: a lone statement
        # of the file's it is.
        return StepFailed(first, exc, pinpointed=len(steps) == 1, through=through)
    index = bisect.bisect_right([start for start, _ in spans], position - 1) - 1
    start, step = spans[index] if index >= 0 else (0, None)
    if step is None:  # in our own statements
        return StepFailed(first, exc, pinpointed=False, through=through)
    return StepFailed(step, exc, position=position - start)


def connection_lost(exc: psycopg.Error) -> bool:
    """True for errors that mean the session is gone (terminated, network), not bad SQL. An
    error without a SQLSTATE counts only when it is about the connection: psycopg's refusal of a
    statement (a ProgrammingError) is not."""
    if exc.sqlstate is None:
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return exc.sqlstate.startswith(("08", "57P0"))


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
