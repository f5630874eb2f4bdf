"""Our bookkeeping: what a run writes besides the migrations' own statements, our history rows
and the tool's own table, together, in the caller's transaction (`Bookkeeping`: the one place a
unit's bookkeeping is sent from).

Its failing (a trigger on our table, a REVOKE) takes the same path as a failing statement of the
migration being recorded (rolled back, then compensated), and its error names that migration
(`RecordFailed`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import psycopg

from herokumigrate.native import AppliedMigration, NativeChange
from herokumigrate.output import one_line
from herokumigrate.statements import connection_lost

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from herokumigrate.history import Conn, HistoryTable
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable
    from herokumigrate.versions import Version

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


class Bookkeeping:
    """Writes a run's history rows and keeps the tool's table (`native`, if any) following
    them, each write in the caller's transaction. `files` spell the versions the tool's table
    keeps as written ("001"); the table is written under `search_path`, the session's before
    any migration ran, so that a migration's `SET search_path` cannot hide it."""

    def __init__(
        self,
        history: HistoryTable,
        native: NativeTable | None,
        search_path: str | None,
        files: Iterable[Migration],
    ) -> None:
        self.history = history
        self.native = native
        self.search_path = search_path
        self._files = {m.version: m for m in files}

    def applied(
        self,
        conn: Conn,
        done: Sequence[AppliedMigration],
        *,
        applied: set[Version],
        partial: tuple[Migration, int, float] | None = None,
        earlier_ms: Mapping[Version, float] | None = None,
    ) -> None:
        """Record `done` as applied (each with the ms of this transaction; our rows add them
        up) and, with `partial`, a migration run up to statement k (and its ms here); the
        tool's table follows (`applied`: everything applied once this commits), each migration
        with its whole time in this run (`earlier_ms`: its parts committed before), the partial
        one marked in flight where the tool does."""
        if not done and partial is None:
            return
        finished = [a.migration for a in done]
        with recording(finished, "history row"):
            self.history.record_applied(conn, ((a.migration, a.duration_ms) for a in done))
        if partial is not None:
            migration, progress, ms = partial
            with recording([migration], "partial history row"):
                self.history.record_partial(conn, migration, progress, ms)
        before = earlier_ms or {}
        whole = [
            a._replace(duration_ms=a.duration_ms + before.get(a.migration.version, 0.0))
            for a in done
        ]
        flight = partial[0].version if partial is not None else None
        with recording(finished, "version in the native tool's table"):
            self.follow(conn, NativeChange(frozenset(applied), whole, (), flight), read_back=False)

    def in_flight(
        self, conn: Conn, migration: Migration, progress: int, applied: set[Version] | None
    ) -> None:
        """Before statement `progress` of `migration` runs outside a transaction: its partial
        row says so; with `applied` (nothing of the migration committed before), the tool's
        table marks it in flight where the tool does."""
        with recording([migration], "partial history row"):
            self.history.record_partial(conn, migration, progress, 0.0)
            if applied is not None:
                change = NativeChange(
                    frozenset(applied), in_flight=migration.version, flying=migration
                )
                self.follow(conn, change, read_back=False)

    def progress(self, conn: Conn, migration: Migration, progress: int, ms: float) -> None:
        """Statement `progress - 1` of `migration` ran outside a transaction, in `ms`."""
        with recording([migration], "partial history row"):
            self.history.record_partial(conn, migration, progress, ms)

    def forget_mark(self, conn: Conn, migration: Migration) -> None:
        """Forget the in-flight mark of a migration nothing of which committed (its statement
        outside a transaction failed); the tool's table keeps its mark until compensation
        syncs it."""
        with recording([migration], "partial history row"):
            self.history.delete(conn, [migration.version])

    def forget(
        self, conn: Conn, migrations: Sequence[Migration], what: str = "history row"
    ) -> None:
        """Forget `migrations` (reverted, or undone); the tool's table follows what our history
        then holds."""
        with recording(migrations, what):
            self.history.delete(conn, [m.version for m in migrations])
            self.follow(conn, NativeChange(frozenset(), removed=[m.version for m in migrations]))

    def follow(self, conn: Conn, change: NativeChange, *, read_back: bool = True) -> None:
        """Make the tool's table follow `change`; with `read_back`, its `applied` set (and the
        newest partial row, in flight) is read from our history in this transaction instead:
        what the table must say then is exactly what our history holds."""
        native = self.native
        if native is None:
            return
        if read_back:
            applied, partial = self.history.applied_and_partial(conn)
            flight = change.in_flight or (max(partial) if partial else None)
            change = change._replace(applied=frozenset(applied), in_flight=flight)
        spelled = frozenset(self._spelled(v) for v in change.applied)
        change = change._replace(applied=spelled)
        current = _search_path(conn)
        if self.search_path is None or current == self.search_path:
            native.follow(conn, change)
            return
        _set_local_search_path(conn, self.search_path)
        native.follow(conn, change)
        _set_local_search_path(conn, current)

    def _spelled(self, version: Version) -> Version:
        """The version as its file writes it, where a file has it."""
        found = self._files.get(version)
        return found.version if found is not None else version

    def with_files(self, versions: Iterable[Version]) -> list[AppliedMigration]:
        """The migrations of `versions` that have a file, in order (what a table created now,
        beside an existing history, records for them)."""
        found = (self._files.get(v) for v in sorted(versions))
        return [AppliedMigration(m, 0.0) for m in found if m is not None]


def _search_path(conn: Conn) -> str:
    row = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
    return str(row[0]) if row else ""


def _set_local_search_path(conn: Conn, value: str) -> None:
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (value,))
