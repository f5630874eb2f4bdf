"""After a failed run: undo what it committed, and explain the failure.

Compensation drops an INVALID index a failed concurrent build left, then undoes every migration
this run committed, newest first: a half-applied one by undoing exactly what ran of it when
that is known (`halfway`), any other by its `down` (the downs routine of `revert`). Nothing
older is ever touched. It then syncs the native tool's table with what our history really
holds, drops the tables a failed first release created, and compares the schema with the
snapshot taken before the run: "as before" is said only when that check holds.
`failure_error` then builds the error the user sees, with the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from herokumigrate.config import TransactionMode
from herokumigrate.errors import MigrationFailed
from herokumigrate.halfway import exact_undo, ran_statements, undo_index_builds
from herokumigrate.history import HistoryState
from herokumigrate.indexes import drop_new_invalid_indexes
from herokumigrate.native import NativeChange
from herokumigrate.output import one_line
from herokumigrate.recording import RecordFailed
from herokumigrate.revert import run_downs
from herokumigrate.signals import transaction
from herokumigrate.snapshot import WHAT_IS_COMPARED, take_snapshot
from herokumigrate.sqlsplit import NO_TRANSACTION
from herokumigrate.statements import StepFailed, connection_lost

if TYPE_CHECKING:
    from herokumigrate.apply import RunFailed
    from herokumigrate.config import Config
    from herokumigrate.history import Conn, RecordedState
    from herokumigrate.ledger import DatabaseState
    from herokumigrate.migration import Migration
    from herokumigrate.output import Output
    from herokumigrate.recording import Bookkeeping
    from herokumigrate.runner import UnitRunner
    from herokumigrate.versions import Version


class _CannotUndo(Exception):
    """A migration of the run cannot be undone (no down): compensation stops there."""


def compensate(
    runner: UnitRunner, book: Bookkeeping, state: DatabaseState, failed: RunFailed
) -> list[str]:
    """Undo what the failed run committed: INVALID indexes, then its migrations newest first.

    Reconnects (and re-locks) first if the connection was lost, then re-reads the history:
    if another run changed it in the gap, nothing is compensated (its work would be undone).
    Returns the report, one line per thing done or left; never raises for a database error.
    """
    session = runner.session
    try:
        if session.reconnect_if_lost() and _recorded(book, session.conn) != failed.run.expected:
            return [
                "the history changed while the connection was lost: another run took the "
                "migration lock meanwhile, so nothing was compensated (that could undo its work)",
                "STATE LEFT: this run's progress stays recorded as it was (partial rows "
                "included); `heroku-migrate status` shows the state, `heroku-migrate up` "
                "finishes what is pending.",
            ]
        return _Compensation(runner, book, state, failed).run()
    except psycopg.Error as exc:
        return [
            f"could not compensate: {one_line(str(exc))}",
            _remaining_state(failed.committed, done=[]),
        ]


class _Compensation:
    """One compensation: its steps, and the report they write."""

    def __init__(
        self, runner: UnitRunner, book: Bookkeeping, state: DatabaseState, failed: RunFailed
    ) -> None:
        self.runner = runner
        self.session = runner.session
        self.book = book
        self.history = book.history
        self.state = state
        self.failed = failed
        self.lines: list[str] = []
        self.done: list[Migration] = []
        self.changes_remain: list[Migration] = []  # "reverted" by an empty down

    def run(self) -> list[str]:
        """Undo the run; the report."""
        conn = self.session.conn
        # The downs run as on a fresh connection, whatever search_path a migration set.
        conn.execute("RESET search_path")
        dropped, left = drop_new_invalid_indexes(
            conn, self.failed.run.invalid_before, self.session.statement_timeout
        )
        for name in dropped:
            self.lines.append(f"dropped INVALID index {name} left by the failed build")
        for name in left:
            self.lines.append(
                f"INVALID index {name} left by the failed build is still there: dropping it "
                "waited too long for older transactions on its table; the next run drops it "
                "before building it again"
            )
        stopped = False
        for m in reversed(self.failed.committed):
            try:
                self.lines.append(self._undo(m))
            except _CannotUndo as exc:
                self.lines.append(str(exc))
                stopped = True
            except StepFailed as exc:
                self.lines.append(f"down of {m.label} failed: {exc.describe()}")
                stopped = True
            except RecordFailed as exc:
                self.lines.append(f"undoing {m.label} failed: {exc.describe()}")
                stopped = True
            except psycopg.Error as exc:
                self.lines.append(f"undoing {m.label} failed: {one_line(str(exc))}")
                stopped = True
                if connection_lost(exc):
                    self.lines.append(_remaining_state(self.failed.committed, self.done))
                    return self.lines
            if stopped:
                break
            self.done.append(m)
        self._sync_native()
        if not stopped:
            self._drop_first_release_tables()
        self.lines.append(self._outcome(stopped))
        return self.lines

    def _undo(self, m: Migration) -> str:
        """Undo one migration of the run; the report line. Raises what its down raises."""
        exactly = self._undo_what_ran(m)
        if exactly is not None:
            return exactly
        if m.applies_nothing and m.down is None:
            self._forget(m)
            return f"forgot {m.label} (it applies nothing)"
        if m.down is None:
            raise _CannotUndo(f"{m.label}: has no down migration; cannot undo it")
        run_downs(self.runner, self.book, [m], per_migration=True, done=[])
        if m.reverts_nothing and not m.applies_nothing:
            self.changes_remain.append(m)
            return (
                f"{m.label}: its down is empty; its changes remain (no longer recorded: "
                "the next release runs it again)"
            )
        return f"reverted {m.label}"

    def _undo_what_ran(self, m: Migration) -> str | None:
        """For a migration this run left half-applied, undo exactly what ran of it when that
        is known; None when its down must decide."""
        row = self.failed.run.expected.get(m.version)
        before = self.failed.run.before
        if row is None or row[0] is not HistoryState.PARTIAL or before is None:
            return None
        resumed = self.state.rows.get(m.version)
        if resumed is not None and resumed.state is HistoryState.PARTIAL:
            return None  # an earlier run did its first part: the down undoes all of it
        progress = row[1] or 0
        builds = exact_undo(ran_statements(m, progress, in_flight_ran=self._in_flight(m, progress)))
        if builds is None:
            return None
        dropped = undo_index_builds(self.session.conn, builds, before)
        self._forget(m)
        what = f"dropped index {', '.join(dropped)}" if dropped else "nothing of it needed undoing"
        return f"undid what ran of the half-applied {m.label}: {what}"

    def _forget(self, m: Migration) -> None:
        """Delete the history row of an undone migration; the native table follows."""
        conn = self.session.conn
        with transaction(conn):
            self.book.forget(conn, [m])

    def _in_flight(self, m: Migration, progress: int) -> bool:
        """True when statement `progress` of `m` ran outside a transaction as the run stopped
        and may have finished (it did not fail itself)."""
        statements = m.up.statements
        if progress >= len(statements):
            return False
        outside = statements[progress].kind is NO_TRANSACTION or not m.up.transaction
        cause = self.failed.cause
        step = cause.step if isinstance(cause, StepFailed) else None
        failed_itself = step is not None and step.migration is m and step.index == progress
        return outside and not failed_itself

    def _sync_native(self) -> None:
        """Make the native tool's table say what our history really holds now."""
        native = self.book.native
        if native is None:
            return
        conn = self.session.conn
        try:
            with transaction(conn):
                self.book.follow(conn, NativeChange(frozenset()))
        except psycopg.Error as exc:
            self.lines.append(
                f"could not sync {native.tool}'s table with the history: {one_line(str(exc))}"
            )

    def _drop_first_release_tables(self) -> None:
        """A failed first release leaves no table of ours: drop the history tables it created,
        when they hold nothing but what it adopted from a native tool (adopted again next
        time)."""
        if self.state.exists:
            return
        conn = self.session.conn
        try:
            with transaction(conn):
                found = conn.execute(
                    sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE source NOT LIKE %s)").format(
                        self.history.ident
                    ),
                    ("adopted from %",),
                ).fetchone()
                if found is None or found[0]:
                    return
                self.history.drop(conn)
                native = self.failed.run.created_native
                if native is not None:  # created with our tables: it goes with them
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(native.name.ident))
        except psycopg.errors.UndefinedTable:
            return
        except psycopg.Error as exc:
            self.lines.append(f"could not drop the history tables: {one_line(str(exc))}")
            return
        created = self.failed.run.created_native
        also = f" and {created.table}" if created is not None else ""
        self.lines.append(f"dropped the history tables{also} this first release created")
        self._drop_created_schema()

    def _drop_created_schema(self) -> None:
        """The history schema too, when this run created it (nothing else is in it then)."""
        before = self.failed.run.before
        schema = self.history.schema
        if before is None or schema == "public":
            return
        conn = self.session.conn
        try:
            row = conn.execute("SELECT pg_catalog.quote_ident(%s)", (schema,)).fetchone()
            if row is None or f"schema {row[0]}" in before.objects:
                return
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema)))
        except psycopg.Error:
            return  # something else is in it: the schema check reports what

    def _outcome(self, stopped: bool) -> str:
        """The last line: what is left, and whether the schema is checked as before."""
        difference = None
        before = self.failed.run.before
        if before is not None:
            try:
                difference = before.compare(take_snapshot(self.session.conn))
            except psycopg.Error:
                difference = None
        if stopped:
            line = _remaining_state(self.failed.committed, self.done)
            if difference is not None and not difference.none:
                line += f" Schema changes since the run began: {difference.describe()}."
            return line
        remain = ", ".join(m.label for m in self.changes_remain)
        if difference is None:
            line = "This run's migrations were undone (the schema could not be checked"
            line += " against the start of the run)."
        elif difference.none and not remain:
            what = "All of this run's migrations were undone" if self.done else "Nothing remains"
            return (
                f"{what}: the schema is as before the run "
                f"(checked: {WHAT_IS_COMPARED}; rows of data are not compared)."
            )
        elif difference.none:
            line = "This run's migrations were undone and the schema's objects are as before"
            line += " the run, but not every change was reverted."
        else:
            line = "This run's migrations were undone, but the schema differs from before the run: "
            line += difference.describe() + "."
        if remain:
            line += f" Changes remain of {remain} (empty down)."
        return line


def headline(failed: RunFailed, output: Output) -> str:
    """The first line of the error: its cause (redacted)."""
    return output.redact(failed.cause.describe())


def failure_error(
    failed: RunFailed,
    output: Output,
    config: Config,
    *,
    dry_run: bool = False,
    report: list[str] | None = None,
) -> MigrationFailed:
    """The error for a failed run; `report` is what `compensate` did (None: not called)."""
    text = headline(failed, output)
    cause = failed.cause
    fix = cause.fix if isinstance(cause, RecordFailed) else fix_for(cause.error)
    if dry_run:
        return MigrationFailed(text, details=("Dry run: everything was rolled back.",), fix=fix)
    if report is None:
        return MigrationFailed(
            text,
            details=("Everything this run did was rolled back: the database is unchanged.",),
            fix=fix,
        )
    if not (failed.committed or failed.run.created_history):
        why = "the failing statement ran outside a transaction"
    elif config.transaction is TransactionMode.MIGRATION:
        why = "earlier migrations of this run were committed one by one"
        why += " (MIGRATE_TRANSACTION=migration)"
    else:
        why = "parts of this run were committed around statements that cannot run in a transaction"
    details = [f"{why[0].upper()}{why[1:]}; compensating, newest first:"]
    details.extend(report)
    return MigrationFailed(
        text, details=tuple(details), fix=fix + " `heroku-migrate status` shows the state."
    )


def fix_for(error: psycopg.Error | None) -> str:
    """What the user should do about a failed run, by the kind of failure."""
    state = error.sqlstate if error is not None else None
    if error is None or connection_lost(error):
        return (
            "The connection was lost (a database restart or maintenance, or the network between "
            "the dyno and the database): check heroku pg:info, "
            "then retry the release (heroku releases:retry)."
        )
    if state in ("55P03", "40P01"):
        return (
            "Another session held a conflicting lock. Retry the release when traffic is lower "
            "(heroku releases:retry), find the blocker in pg_stat_activity, or raise "
            "MIGRATE_LOCK_TIMEOUT / MIGRATE_RETRIES."
        )
    if state == "57014":
        return (
            "A statement ran past statement_timeout: raise MIGRATE_STATEMENT_TIMEOUT (or the "
            "database URL's x-statement-timeout, used when that setting is 0)."
        )
    if state == "53200":
        return (
            "One transaction touched more objects than the server's lock table holds: set "
            "MIGRATE_TRANSACTION=migration, or raise max_locks_per_transaction."
        )
    if state == "55P04":
        return (
            "An enum value added earlier in this release is used before the release commits "
            "(PostgreSQL allows that only after a commit; Prisma and Flyway commit each "
            "migration): set MIGRATE_TRANSACTION=migration, or use the value in a later release."
        )
    return "Fix the migration and push again."


def _remaining_state(committed: list[Migration], done: list[Migration]) -> str:
    left = [m.label for m in committed if m not in done]
    return (
        "STATE LEFT: still applied (possibly partly) from this run: "
        + ", ".join(left)
        + ". Repair by hand, then record the truth with `heroku-migrate force VERSION`."
    )


def _recorded(book: Bookkeeping, conn: Conn) -> dict[Version, RecordedState]:
    """Each recorded version's state and progress, as the history says now."""
    rows = book.history.read(conn) or {}
    return {v: (r.state, r.progress) for v, r in rows.items()}
