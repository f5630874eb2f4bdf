"""Our own bookkeeping failing: a history row, a partial row or the native table could not be
written. Such a failure takes the same path as a failing statement of the migration being
recorded (rolled back, then compensated), and its error names that migration.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import psycopg

from herokumigrate.statements import connection_lost, one_line

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from herokumigrate.source import Migration

_SHOWN = 3  # migrations named in one message; a long release lists "and N more"


class RecordFailed(Exception):
    """Writing our bookkeeping for `migrations` failed with `error` (a SQL error, not a lost
    connection); `what` says which record ("applied rows", "partial row", ...)."""

    def __init__(self, migrations: Sequence[Migration], what: str, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.migrations = list(migrations)
        self.what = what
        self.error = error

    def describe(self) -> str:
        """`file: recording its <what> failed: ERROR SQLSTATE: message` for the user."""
        names = [m.filename for m in self.migrations[:_SHOWN]]
        if len(self.migrations) > _SHOWN:
            names.append(f"and {len(self.migrations) - _SHOWN} more")
        who = ", ".join(names) or "the run"
        diag = self.error.diag
        message = diag.message_primary or one_line(str(self.error))
        text = f"{who}: recording its {self.what} failed: ERROR {self.error.sqlstate or '?'}: "
        text += message
        if diag.message_detail:
            text += f" ({one_line(diag.message_detail)})"
        if diag.context and "PL/pgSQL" in diag.context:
            text += f" (in {one_line(diag.context)})"  # a trigger on our table raised it
        return text

    @property
    def fix(self) -> str:
        """What to do: our tables must be left to us."""
        return (
            "A migration changed heroku-migrate's own tables (a trigger, REVOKE, ALTER or "
            "lock on the history, its _log or the native tool's table): leave them to the "
            "runner, fix the migration and push again."
        )


@contextlib.contextmanager
def recording(migrations: Sequence[Migration], what: str) -> Iterator[None]:
    """Turn a SQL error of the bookkeeping inside into RecordFailed naming `migrations`; a lost
    connection stays a psycopg error (it is handled as such)."""
    try:
        yield
    except psycopg.Error as exc:
        if connection_lost(exc):
            raise
        raise RecordFailed(migrations, what, exc) from exc
