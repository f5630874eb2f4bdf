"""Running a migration's statements: one at a time, or a section's consecutive statements in
one round trip; a failure becomes a StepFailed that names the file and line.
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING

import psycopg

from herokumigrate.output import one_line

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from herokumigrate.plan import Step

    Conn = psycopg.Connection[tuple[object, ...]]

# SQL characters sent per round trip when a section's statements run in a batch: a large file
# goes to the server in pieces of about this size, all in the same transaction.
BATCH_CHARS = 1 << 20


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
    ) -> None:
        super().__init__(str(error))
        self.step = step
        self.error = error
        self.position = position
        self.pinpointed = pinpointed
        self.data_line = data_line  # the 1-based line of a COPY's data that failed

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


def execute_batch(conn: Conn, steps: list[Step], prefix: str = "") -> None:
    """One migration's consecutive statements in one round trip (simple query protocol),
    after `prefix` (our own statements, e.g. the timeouts re-asserted: no round trip of their
    own).

    An error position from PostgreSQL is mapped back to the statement and its line; an
    error without one, or in the prefix, leaves the batch un-pinpointed (see
    `runner.UnitRunner.pinpoint`).
    """
    if any(step.statement.data is not None for step in steps):
        if prefix:  # a COPY's data cannot share a simple query: one round trip each
            conn.execute(prefix.encode("utf-8"))
        for step in steps:
            execute(conn, step)
        return
    if len(steps) == 1 and not prefix:
        execute(conn, steps[0])
        return
    starts: list[int] = []
    parts: list[str] = [prefix] if prefix else []
    offset = len(prefix) + 1 if prefix else 0
    for step in steps:
        text = step.statement.text
        if not text.rstrip().endswith(";"):
            text += "\n;"  # on its own line: the text may end in a -- comment
        starts.append(offset)
        parts.append(text)
        offset += len(text) + 1
    try:
        conn.execute("\n".join(parts).encode("utf-8"))
    except psycopg.OperationalError as exc:
        if connection_lost(exc):
            raise
        raise _batch_failure(steps, starts, exc) from exc
    except psycopg.Error as exc:
        raise _batch_failure(steps, starts, exc) from exc


def batches(steps: Iterable[Step], limit: int = BATCH_CHARS) -> Iterator[list[Step]]:
    """Consecutive steps of the same migration section, grouped, at most `limit` characters of
    SQL per group (a longer statement is a group of its own); read lazily, so that a large
    file is sent a bounded piece at a time."""
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
        if batch and (batch[-1].section is not step.section or size + length > limit):
            yield batch
            batch, size = [], 0
        batch.append(step)
        size += length
    if batch:
        yield batch


def _batch_failure(steps: list[Step], starts: list[int], exc: psycopg.Error) -> StepFailed:
    position = _int_or_none(exc.diag.statement_position)
    if position is None:
        # Our prefix sets values PostgreSQL accepted at connect time: a lone statement it is.
        return StepFailed(steps[0], exc, pinpointed=len(steps) == 1)
    index = bisect.bisect_right(starts, position - 1) - 1
    if index < 0:  # in the prefix
        return StepFailed(steps[0], exc, pinpointed=False)
    return StepFailed(steps[index], exc, position=position - starts[index])


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
