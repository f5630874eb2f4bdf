"""Applying a plan: its statements grouped into commit units, each run by the runner
(runner.py: timeouts, lock retries, pinpointing), progress recorded in the history as it
commits.

How a release runs (README, "How a release is applied"):
- Every pending migration's statements, and their history rows, run in ONE transaction
  (`transaction = "release"`, the default) or one transaction per migration
  (`transaction = "migration"`).
- A statement PostgreSQL refuses inside a transaction block (CREATE INDEX CONCURRENTLY, ...)
  or a dbmate section marked `transaction:false` runs where the files put it: the open
  transaction is committed first, with a `partial` history row for a migration that is half
  done, then the statement runs on its own and its progress is recorded.
- A run killed between committed parts leaves a `partial` row; the next run drops the INVALID
  index a killed concurrent build left, then resumes that migration where it stopped.

A failure stops the run with RunFailed: what this run committed, and exactly one cause.
Undoing it is `compensate`'s job, called by the migrator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import psycopg

from herokumigrate.config import TransactionMode
from herokumigrate.firstcontact import labels, report_first_contact, write_first_contact
from herokumigrate.history import HistoryState
from herokumigrate.indexes import invalid_indexes
from herokumigrate.native import AppliedMigration
from herokumigrate.output import first_words, one_line
from herokumigrate.plan import build_units
from herokumigrate.recording import Bookkeeping, RecordFailed
from herokumigrate.runner import UnitRunner
from herokumigrate.signals import transaction
from herokumigrate.snapshot import take_snapshot
from herokumigrate.sqlsplit import NO_TRANSACTION
from herokumigrate.statements import StepFailed

if TYPE_CHECKING:
    from collections.abc import Callable

    from herokumigrate.config import Config
    from herokumigrate.history import HistoryTable, RecordedState
    from herokumigrate.locks import LockObserver
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable
    from herokumigrate.output import Output
    from herokumigrate.plan import ReleasePlan, Step, Unit
    from herokumigrate.session import Conn, Session
    from herokumigrate.snapshot import SchemaSnapshot
    from herokumigrate.versions import Version


@dataclass
class RunProgress:
    """What a run has committed so far (all of it, when it failed)."""

    resume: dict[Version, int] = field(default_factory=dict)  # statement a killed run stopped at
    applied: set[Version] = field(default_factory=set)  # applied once the next unit commits
    durations: dict[Version, float] = field(default_factory=dict)  # ms, per version
    committed: dict[Version, Migration] = field(default_factory=dict)  # with effects, in order
    # What the history holds once this run's commits are in (nobody else writes it while the
    # lock is held): after a lost connection, any difference means another run wrote it.
    expected: dict[Version, RecordedState] = field(default_factory=dict)
    before: SchemaSnapshot | None = None  # the schema before the run, when it may need undoing
    invalid_before: set[str] = field(default_factory=set)  # INVALID indexes before the run
    created_history: bool = False  # this run created our tables (first contact)
    created_native: NativeTable | None = None  # the native tool's table this run created

    def recorded_applied(self, migrations: list[Migration]) -> None:
        """This run committed `applied` rows for `migrations`."""
        for m in migrations:
            self.expected[m.version] = (HistoryState.APPLIED, None)

    def recorded_partial(self, migration: Migration, progress: int) -> None:
        """This run committed a `partial` row for `migration`."""
        self.expected[migration.version] = (HistoryState.PARTIAL, progress)


class ConnectionLost(NamedTuple):
    """The connection died (terminated backend, network): the server rolled back the open
    transaction; `during_autocommit_run`: the run had statements outside a transaction, one
    of which may have been in flight."""

    error: psycopg.Error
    during_autocommit_run: bool

    def describe(self) -> str:
        """The first line of the error."""
        return f"the connection to the database was lost: {one_line(str(self.error))}"


# Why a run stopped: a statement failed, recording it failed, or the connection was lost.
FailureCause = StepFailed | RecordFailed | ConnectionLost


class RunFailed(Exception):
    """A run stopped: `run` says what it committed (nothing has been compensated yet), `cause`
    why, as golang-migrate's typed errors carry what the caller needs."""

    def __init__(self, run: RunProgress, cause: FailureCause) -> None:
        super().__init__(cause.describe())
        self.run = run
        self.cause = cause

    @property
    def outside_transaction(self) -> bool:
        """It stopped in (or around) a statement outside a transaction: an INVALID index may
        be left, and a lost connection may have let that statement finish."""
        cause = self.cause
        if isinstance(cause, StepFailed):
            return cause.step.statement.kind is NO_TRANSACTION or not cause.step.section.transaction
        if isinstance(cause, ConnectionLost):
            return cause.during_autocommit_run
        return False

    @property
    def committed(self) -> list[Migration]:
        """This run's migrations with committed effects, in order."""
        return list(self.run.committed.values())

    @property
    def needs_compensation(self) -> bool:
        """True when the run committed something that the failure leaves to undo."""
        return bool(self.run.committed) or self.run.created_history or self.outside_transaction


class Applier:
    """Runs a release plan on a session, holding the migration lock."""

    def __init__(
        self,
        session: Session,
        history: HistoryTable,
        config: Config,
        output: Output,
        files: list[Migration],
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session
        self.history = history
        self.config = config
        self.output = output
        self.files = files
        self.runner = UnitRunner(session, output, sleep=sleep)

    def apply(self, plan: ReleasePlan) -> int:
        """Apply the plan (read under the lock); the number of migrations applied. Raises
        RunFailed, with nothing compensated, when the run fails."""
        units = self._units(plan)
        run = self._progress(plan, units)
        records = _UpRecords(self, plan, run)
        if records.setup_pending and (not units or units[0].autocommit):
            records.write_setup_alone()
        if not units:
            return 0
        self.output.step(f"Applying {len(plan.pending)} migration(s) ({_mode(self.config, units)})")
        started = time.monotonic()
        try:
            count = sum(self._run_unit(unit, records) for unit in units)
        except (StepFailed, RecordFailed) as exc:
            # Our own bookkeeping failing takes the path of a failing statement of the migration.
            raise RunFailed(run, exc) from None
        except psycopg.OperationalError as exc:
            # Committed parts still need compensating.
            lost = ConnectionLost(exc, any(u.autocommit for u in units))
            raise RunFailed(run, lost) from None
        elapsed = time.monotonic() - started
        self.output.step(f"Applied {count} migration(s) in {elapsed:.2f}s")
        return count

    def rehearse(self, plan: ReleasePlan, observer: LockObserver | None) -> int:
        """Run every transactional statement of the plan in one transaction, report, then roll
        back; RunFailed (with nothing committed) when a statement fails."""
        units = self._units(plan)
        _say_what_setup_would_do(self.output, plan)
        if not units:
            return 0
        self.output.step(
            f"Dry run of {len(plan.pending)} migration(s) ({_mode(self.config, units)})"
        )
        try:
            count = self._rehearse(plan, units, observer)
        except StepFailed as exc:
            raise RunFailed(RunProgress(), exc) from None
        self.output.step(f"Dry run: {count} migration(s) ran and were rolled back")
        return 0

    def _rehearse(self, plan: ReleasePlan, units: list[Unit], observer: LockObserver | None) -> int:
        conn = self.session.conn
        count = 0
        with conn.transaction(force_rollback=True):
            self.session.set_local_timeouts()
            # As the real run: the native tool's table exists before the first file runs.
            write_first_contact(conn, self.history, plan, self._book(plan))
            if observer is not None:
                observer.begin(conn, units)
            for unit in units:
                if unit.alone is not None:
                    step = unit.alone
                    self.output.detail(
                        f"{step.migration.label}: would run outside the transaction "
                        f"(line {step.statement.line}): {first_words(step.statement.text)}"
                    )
                    continue
                # One statement at a time: the observer sees each migration's, and an error
                # is always placed.
                self.runner.send(([step] for step in unit.steps()), None, None, observer)
                for m in unit.finishes:
                    count += 1
                    done = "no SQL; recorded as applied" if m.applies_nothing else "ok"
                    self.output.detail(f"{m.label}: {done}")
            if observer is not None:
                observer.end(conn)
        return count

    def _units(self, plan: ReleasePlan) -> list[Unit]:
        items = []
        for m in plan.pending:
            start = plan.partial.get(m.version, 0)
            if start:
                self.output.detail(
                    f"Resuming {m.label}: {start} statement(s) ran before an interrupted run"
                )
            items.append((m, m.up, start))
        return build_units(items, self.config.transaction is TransactionMode.MIGRATION)

    def _progress(self, plan: ReleasePlan, units: list[Unit]) -> RunProgress:
        """The run's progress before its first unit: what the history holds, what a killed run
        left partial, and the schema (and its INVALID indexes) when parts commit one by one."""
        state = plan.state
        forgotten = set(plan.forget)  # the set-up forgets them, in the first transaction
        run = RunProgress(resume=dict(plan.partial))
        run.expected = {v: s for v, s in state.recorded().items() if v not in forgotten}
        run.applied = state.applied_versions() - forgotten
        run.applied.update(m.version for m in plan.adopt)
        if len(units) > 1 or any(u.autocommit for u in units):
            # Parts will commit one by one: what a failure leaves is checked against this.
            run.before = take_snapshot(self.session.conn)
        if any(u.autocommit for u in units):
            run.invalid_before = invalid_indexes(self.session.conn)
        return run

    def _run_unit(self, unit: Unit, records: _UpRecords) -> int:
        """Run one unit and say what it finished; how many migrations it finished."""
        started = time.monotonic()
        self.runner.run(unit, records)
        for m in unit.finishes:
            if m.applies_nothing:
                self.output.detail(f"{m.label}: no SQL; recorded as applied")
            else:
                ms = records.run.durations.get(m.version, 0.0)
                self.output.detail(f"{m.label} ({ms:.0f} ms)")
        took = time.monotonic() - started
        if unit.alone is not None and took >= 1.0:
            self.output.detail(
                f"{unit.alone.migration.label}: statement at line {unit.alone.statement.line} "
                f"ran outside the transaction in {took:.1f}s"
            )
        return len(unit.finishes)

    def _book(self, plan: ReleasePlan) -> Bookkeeping:
        return Bookkeeping(self.history, plan.native, plan.state.search_path, self.files)


class _UpRecords:
    """`up`'s bookkeeping around each unit (runner.UnitRecords): history rows and the tool's
    table, the first-contact set-up in the first transaction, and the run's progress."""

    def __init__(self, applier: Applier, plan: ReleasePlan, run: RunProgress) -> None:
        self.applier = applier
        self.plan = plan
        self.run = run
        self.book = applier._book(plan)
        # The statement outside a transaction now running is the first committed part of its
        # migration: a failure of it forgets the in-flight mark again.
        self._unmark_on_failure = False
        # First contact (creating our tables, adopting the native tool's state) commits with
        # the first transaction of the run, so a failed first release leaves no trace either.
        self.setup_pending = plan.needs_setup or bool(
            plan.adopt or plan.forget or plan.create_native or plan.accept
        )

    def write_setup_alone(self) -> None:
        """The set-up in a transaction of its own (the run starts outside a transaction)."""
        with transaction(self.applier.session.conn):
            self._write_setup(self.applier.session.conn)
        self._setup_committed()

    def _write_setup(self, conn: Conn) -> None:
        write_first_contact(conn, self.applier.history, self.plan, self.book)

    def _setup_committed(self) -> None:
        self.setup_pending = False
        self.run.created_history = self.plan.needs_setup
        self.run.created_native = self.plan.create_native
        self.run.recorded_applied(self.plan.adopt)
        report_first_contact(self.applier.output, self.plan)

    def at_start(self, conn: Conn, unit: Unit) -> None:
        if self.setup_pending:
            self._write_setup(conn)

    def after_statements(self, conn: Conn, unit: Unit, spent: dict[Version, float]) -> None:
        finished = {m.version for m in unit.finishes}
        done = [AppliedMigration(m, spent.get(m.version, 0.0)) for m in unit.finishes]
        left = self._partial(unit)
        partial = None if left is None else (left[0], left[1], spent[left[0].version])
        applied = self.run.applied | finished
        self.book.applied(
            conn, done, applied=applied, partial=partial, earlier_ms=self.run.durations
        )

    def committed(self, unit: Unit, spent: dict[Version, float]) -> None:
        run = self.run
        if self.setup_pending and unit.alone is None:
            self._setup_committed()
        run.recorded_applied(unit.finishes)
        partial = self._partial(unit)
        if partial is not None:
            run.recorded_partial(partial[0], partial[1])
        for key, ms in spent.items():
            run.durations[key] = run.durations.get(key, 0.0) + ms
        run.applied.update(m.version for m in unit.finishes)
        for m in unit.migrations():
            run.committed.setdefault(m.version, m)

    @staticmethod
    def _partial(unit: Unit) -> tuple[Migration, int] | None:
        """The migration a transaction unit leaves part-way (its last span's), and how far."""
        last = unit.spans[-1] if unit.spans else None
        if last is None or last.migration in unit.finishes:
            return None
        return last.migration, last.stop

    def before_alone(self, conn: Conn, step: Step) -> bool:
        run = self.run
        key = step.migration.version
        # An earlier, killed run had this very statement in flight: it may have finished.
        resuming = run.resume.pop(key, None) == step.index
        first = key not in run.committed
        self._unmark_on_failure = first and not resuming
        if resuming:
            return True
        # Record "statement k in flight" first, so a kill during it is visible next time;
        # golang-migrate's row turns dirty as golang-migrate sets it before a migration.
        with transaction(conn):
            self.book.in_flight(conn, step.migration, step.index, run.applied if first else None)
        run.recorded_partial(step.migration, step.index)
        # Committed: if the connection is lost now, compensation must see this migration.
        run.committed.setdefault(key, step.migration)
        return False

    def alone_failed(self, conn: Conn, step: Step) -> None:
        if not self._unmark_on_failure:
            return
        # Nothing of this migration was committed before: forget the in-flight mark.
        with transaction(conn):
            self.book.forget_mark(conn, step.migration)
        self.run.expected.pop(step.migration.version, None)
        self.run.committed.pop(step.migration.version, None)

    def alone_ran(self, conn: Conn, step: Step, ms: float) -> None:
        with transaction(conn):
            self.book.progress(conn, step.migration, step.index + 1, ms)
        self.run.recorded_partial(step.migration, step.index + 1)


def _mode(config: Config, units: list[Unit]) -> str:
    per_migration = config.transaction is TransactionMode.MIGRATION
    mode = "one transaction per migration" if per_migration else "one transaction"
    if any(u.autocommit for u in units):
        mode += ", with statements that must run outside a transaction"
    return mode


def _say_what_setup_would_do(output: Output, plan: ReleasePlan) -> None:
    native = plan.state.native
    if plan.adopt and native is not None:
        output.detail(f"Would adopt {len(plan.adopt)} migration(s) from {native.tool}")
    if plan.accept:
        output.detail(f"Would accept the edit of {labels(plan.accept)}")
