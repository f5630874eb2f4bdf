"""Applying a plan: its statements grouped into commit units, run in order, each unit retried
with backoff on lock timeout or deadlock, progress recorded in the history as it commits.

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

A failure stops the run with RunFailed, which says what this run committed; undoing that is
`compensate`'s job, called by the migrator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from herokumigrate.firstcontact import (
    accepted_edits,
    labels,
    report_first_contact,
    write_first_contact,
)
from herokumigrate.history import HistoryState
from herokumigrate.indexes import drop_invalid_index_of, invalid_indexes
from herokumigrate.lockretry import RETRYABLE, with_lock_retries
from herokumigrate.plan import build_units
from herokumigrate.recording import RecordFailed, recording
from herokumigrate.signals import transaction
from herokumigrate.snapshot import take_snapshot
from herokumigrate.sqlsplit import NO_TRANSACTION
from herokumigrate.statements import StepFailed, batches, execute, execute_batch, first_words

if TYPE_CHECKING:
    from collections.abc import Callable

    from herokumigrate.config import Config
    from herokumigrate.history import DatabaseState, HistoryTable, RecordedState
    from herokumigrate.locks import LockObserver
    from herokumigrate.native import NativeHistory
    from herokumigrate.output import Output
    from herokumigrate.plan import ReleasePlan, Unit
    from herokumigrate.session import Session
    from herokumigrate.snapshot import SchemaSnapshot
    from herokumigrate.source import Migration

# Replaying these to find the statement would only wait, or be cancelled, all over again.
_NO_REPLAY = {"55P03", "40P01", "57014"}


@dataclass
class RunProgress:
    """What a run has committed so far."""

    resume: dict[int, int]  # version -> statement index an interrupted run stopped at
    applied: set[int] = field(default_factory=set)
    durations: dict[int, float] = field(default_factory=dict)  # ms, per version
    committed: dict[int, Migration] = field(
        default_factory=dict
    )  # with committed effects, in order
    # What the history holds once this run's commits are in (nobody else writes it while the
    # lock is held): after a lost connection, any difference means another run wrote it.
    expected: dict[int, RecordedState] = field(default_factory=dict)
    before: SchemaSnapshot | None = None  # the schema before the run, when it may need undoing
    created_history: bool = False  # this run created our tables (first contact)
    created_native: NativeHistory | None = None  # the native tool's table this run created

    def recorded_applied(self, migrations: list[Migration]) -> None:
        """This run committed `applied` rows for `migrations`."""
        for m in migrations:
            self.expected[m.version] = (HistoryState.APPLIED, None)

    def recorded_partial(self, migration: Migration, progress: int) -> None:
        """This run committed a `partial` row for `migration`."""
        self.expected[migration.version] = (HistoryState.PARTIAL, progress)


class RunFailed(Exception):
    """A run stopped: a statement failed (`step_failed`), recording it in our history failed
    (`record_failed`) or the connection was lost (`lost`).

    Nothing has been compensated yet: `committed` lists this run's migrations with committed
    effects (a committed "in flight" mark included), in order; `invalid_before` the INVALID
    indexes that existed before it; `expected` the history as this run left it; `before` the
    schema before it (when it could need undoing); `created_history` whether it created our
    tables.
    """

    def __init__(
        self,
        *,
        step_failed: StepFailed | None = None,
        record_failed: RecordFailed | None = None,
        lost: psycopg.Error | None = None,
        committed: list[Migration] | None = None,
        invalid_before: set[str] | None = None,
        expected: dict[int, RecordedState] | None = None,
        before: SchemaSnapshot | None = None,
        created_history: bool = False,
        created_native: NativeHistory | None = None,
        outside_transaction: bool = False,
    ) -> None:
        super().__init__(str(step_failed or record_failed or lost))
        self.step_failed = step_failed
        self.record_failed = record_failed
        self.lost = lost
        self.committed = committed or []
        self.invalid_before = invalid_before or set()
        self.expected = expected or {}  # the history as this run left it, see RunProgress
        self.before = before
        self.created_history = created_history
        self.created_native = created_native
        # It stopped in a statement run outside a transaction, which may leave an INVALID index.
        self.outside_transaction = outside_transaction

    @classmethod
    def of(
        cls,
        run: RunProgress,
        invalid_before: set[str],
        *,
        step_failed: StepFailed | None = None,
        record_failed: RecordFailed | None = None,
        lost: psycopg.Error | None = None,
        outside_transaction: bool = False,
    ) -> RunFailed:
        """The failure of `run`, with its cause."""
        return cls(
            outside_transaction=outside_transaction,
            step_failed=step_failed,
            record_failed=record_failed,
            lost=lost,
            committed=list(run.committed.values()),
            invalid_before=invalid_before,
            expected=run.expected,
            before=run.before,
            created_history=run.created_history,
            created_native=run.created_native,
        )

    @property
    def error(self) -> psycopg.Error | None:
        """The database error behind the failure."""
        if self.step_failed is not None:
            return self.step_failed.error
        if self.record_failed is not None:
            return self.record_failed.error
        return self.lost

    @property
    def needs_compensation(self) -> bool:
        """True when the run committed something that the failure leaves to undo."""
        return bool(self.committed) or self.created_history or self.outside_transaction


class Applier:
    """Runs a release plan on a session, holding the migration lock."""

    def __init__(
        self,
        session: Session,
        history: HistoryTable,
        state: DatabaseState,
        config: Config,
        output: Output,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session
        self.history = history
        self.state = state  # as read under the lock
        self.config = config
        self.output = output
        self.sleep = sleep

    def apply(
        self, plan: ReleasePlan, *, dry_run: bool, observer: LockObserver | None = None
    ) -> int:
        """Apply the plan (or rehearse it and roll back, showing `observer` each migration);
        returns the number of migrations applied. Raises RunFailed, with nothing compensated,
        when the run fails."""
        items = []
        for m in plan.pending:
            start = plan.partial.get(m.version, 0)
            if start:
                self.output.detail(
                    f"Resuming {m.label}: {start} statement(s) ran before an interrupted run"
                )
            items.append((m, m.up, start))
        per_migration = self.config.transaction == "migration"
        units = build_units(items, per_migration)
        mode = "one transaction per migration" if per_migration else "one transaction"
        if any(u.autocommit for u in units):
            mode += ", with statements that must run outside a transaction"
        # First contact (creating our tables, adopting a legacy tool's state) commits with the
        # first transaction of the run, so a failed first release leaves no trace either.
        run = RunProgress(resume=dict(plan.partial), expected=self.state.recorded())
        for version in plan.forget:  # the setup forgets them, in the first transaction
            run.expected.pop(version, None)
        if not dry_run and (len(units) > 1 or any(u.autocommit for u in units)):
            # Parts will commit one by one: what a failure leaves is checked against this.
            run.before = take_snapshot(self.session.conn)
        setup = (
            plan.needs_setup
            or bool(plan.adopt or plan.forget or plan.create_native)
            or bool(accepted_edits(plan, self.config))
        )
        if setup and (dry_run or not units or units[0].autocommit):
            self._setup(plan, run, dry_run=dry_run)
            setup = False
        if not units:
            return 0
        verb = "Dry run of" if dry_run else "Applying"
        self.output.step(f"{verb} {len(plan.pending)} migration(s) ({mode})")
        if dry_run:
            return self._dry_run(units, plan, observer)
        return self._apply_units(units, plan, run, setup_in_first_unit=setup)

    def _setup(self, plan: ReleasePlan, run: RunProgress, *, dry_run: bool) -> None:
        """Create our tables and adopt a legacy tool's state, in a transaction of their own."""
        if dry_run:
            if plan.adopt and self.state.legacy is not None:
                self.output.detail(
                    f"Would adopt {len(plan.adopt)} migration(s) from {self.state.legacy.tool}"
                )
            if accepted_edits(plan, self.config):
                self.output.detail(f"Would accept the edit of {labels(plan.changed)}")
            return
        conn = self.session.conn
        with transaction(conn):
            self._write_setup(plan)
        run.created_history = plan.needs_setup
        run.created_native = plan.create_native
        run.recorded_applied(plan.adopt)
        report_first_contact(self.output, self.state, plan, self.config)

    def _write_setup(self, plan: ReleasePlan) -> None:
        """Create our tables and record what a legacy tool applied (caller's transaction)."""
        write_first_contact(self.session.conn, self.history, self.state, plan, self.config)

    def _dry_run(self, units: list[Unit], plan: ReleasePlan, observer: LockObserver | None) -> int:
        """Run every transactional statement in one transaction, report, then roll back."""
        conn = self.session.conn
        count = 0
        try:
            with conn.transaction(force_rollback=True):
                self.session.set_local_timeouts()
                # As the real run: the native tool's table exists before the first file runs.
                self._write_setup(plan)
                previous: Migration | None = None
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
                    for step in unit.steps():
                        if step.migration is not previous:
                            self.session.set_local_timeouts()
                            previous = step.migration
                        if observer is not None:
                            observer.starting(conn, step.migration)
                        execute(conn, step)
                    for m in unit.finishes:
                        count += 1
                        done = "no SQL; recorded as applied" if m.applies_nothing else "ok"
                        self.output.detail(f"{m.label}: {done}")
                if observer is not None:
                    observer.end(conn)
        except StepFailed as exc:
            raise RunFailed(step_failed=exc) from None
        self.output.step(f"Dry run: {count} migration(s) ran and were rolled back")
        return 0

    def _apply_units(
        self, units: list[Unit], plan: ReleasePlan, run: RunProgress, *, setup_in_first_unit: bool
    ) -> int:
        """Run the units; on failure, RunFailed says what was committed before it."""
        started = time.monotonic()
        run.applied = self.state.applied_versions() - set(plan.forget)
        run.applied.update(m.version for m in plan.adopt)
        has_autocommit = any(u.autocommit for u in units)
        invalid_before = invalid_indexes(self.session.conn) if has_autocommit else set()
        count = 0
        try:
            for position, unit in enumerate(units):
                unit_start = time.monotonic()
                with_setup = setup_in_first_unit and position == 0
                self._run_unit(unit, run, plan if with_setup else None)
                for m in unit.migrations():
                    run.committed.setdefault(m.version, m)
                for m in unit.finishes:
                    count += 1
                    if m.applies_nothing:
                        self.output.detail(f"{m.label}: no SQL; recorded as applied")
                    else:
                        ms = run.durations.get(m.version, 0.0)
                        self.output.detail(f"{m.label} ({ms:.0f} ms)")
                if unit.alone is not None and time.monotonic() - unit_start >= 1.0:
                    self.output.detail(
                        f"{unit.alone.migration.label}: statement at line "
                        f"{unit.alone.statement.line} ran outside the transaction in "
                        f"{time.monotonic() - unit_start:.1f}s"
                    )
        except StepFailed as exc:
            outside = exc.step.statement.kind == NO_TRANSACTION or not exc.step.section.transaction
            raise RunFailed.of(
                run, invalid_before, step_failed=exc, outside_transaction=outside
            ) from None
        except RecordFailed as exc:
            # Our own bookkeeping failed: the same path as a failing statement of the migration.
            raise RunFailed.of(run, invalid_before, record_failed=exc) from None
        except psycopg.OperationalError as exc:
            # The connection died (terminated backend, network): the server rolled back the
            # open transaction; committed parts still need compensating.
            raise RunFailed.of(
                run, invalid_before, lost=exc, outside_transaction=has_autocommit
            ) from None
        elapsed = time.monotonic() - started
        self.output.step(f"Applied {count} migration(s) in {elapsed:.2f}s")
        return count

    def _run_unit(self, unit: Unit, run: RunProgress, setup: ReleasePlan | None) -> None:
        """Run one unit, retrying the whole of it on lock timeout or deadlock (lockretry.py:
        short, growing lock waits, pauses between, a bounded total). With `setup`, the
        first-contact set-up of that plan commits in the unit's transaction."""

        def attempt() -> None:
            if unit.autocommit:
                self._run_autocommit_unit(unit, run)
            else:
                self._run_transaction_unit(unit, run, setup)

        def drop_invalid_index(exc: StepFailed) -> None:
            drop_invalid_index_of(self.session.conn, self.output, exc.step)

        try:
            with_lock_retries(
                self.session,
                self.output,
                attempt,
                sleep=self.sleep,
                before_retry=drop_invalid_index if unit.autocommit else None,
            )
        except StepFailed as exc:
            if isinstance(exc.error, RETRYABLE):
                raise
            raise pinpoint(self.session, unit, exc) from None

    def _run_transaction_unit(
        self, unit: Unit, run: RunProgress, setup: ReleasePlan | None
    ) -> None:
        """Statements and their history rows in one transaction."""
        conn = self.session.conn
        spent: dict[int, float] = {}
        finished = {m.version for m in unit.finishes}
        with transaction(conn):
            self.session.set_local_timeouts()
            if setup is not None:
                self._write_setup(setup)
            previous = unit.spans[0].migration if unit.spans else None
            for batch in batches(unit.steps()):
                if batch[0].migration is not previous:
                    # A migration's own SET/RESET must not disarm the next one's protection.
                    self.session.set_local_timeouts()
                    previous = batch[0].migration
                t0 = time.perf_counter()
                execute_batch(conn, batch)
                key = batch[0].migration.version
                spent[key] = spent.get(key, 0.0) + (time.perf_counter() - t0) * 1000
            with recording(unit.finishes, "history row"):
                self.history.record_applied(
                    conn, [(m, spent.get(m.version, 0.0)) for m in unit.finishes]
                )
            last = unit.spans[-1] if unit.spans else None
            partial = last is not None and last.migration.version not in finished
            if last is not None and partial:
                with recording([last.migration], "partial history row"):
                    self.history.record_partial(
                        conn, last.migration, last.stop, spent[last.migration.version]
                    )
            if finished or partial:
                # As golang-migrate: a migration left part-way is marked dirty until it ends.
                in_flight = last.migration.version if last is not None and partial else None
                with recording(unit.finishes, "version in the native tool's table"):
                    self.history.sync_legacy(
                        conn, self.state.legacy, run.applied | finished, in_flight
                    )
        if setup is not None:
            run.created_history = setup.needs_setup
            run.created_native = setup.create_native
            run.recorded_applied(setup.adopt)
            report_first_contact(self.output, self.state, setup, self.config)
        run.recorded_applied(unit.finishes)
        if last is not None and partial:
            run.recorded_partial(last.migration, last.stop)
        for key, ms in spent.items():
            run.durations[key] = run.durations.get(key, 0.0) + ms
        run.applied.update(finished)

    def _run_autocommit_unit(self, unit: Unit, run: RunProgress) -> None:
        """One statement outside any transaction, then its progress in the history."""
        step = unit.alone
        assert step is not None
        assert not unit.finishes
        conn = self.session.conn
        key = step.migration.version
        # An earlier, killed run had this very statement in flight: it may have finished.
        resuming = run.resume.pop(key, None) == step.index
        committed_before = key in run.committed
        if not resuming:
            # Record "statement k in flight" first, so a kill during it is visible next time;
            # golang-migrate's row turns dirty as golang-migrate sets it before a migration.
            with transaction(conn), recording([step.migration], "partial history row"):
                self.history.record_partial(conn, step.migration, step.index, 0.0)
                if not committed_before:
                    self.history.sync_legacy(conn, self.state.legacy, run.applied, key)
            run.recorded_partial(step.migration, step.index)
            # Committed: if the connection is lost now, compensation must see this migration.
            run.committed.setdefault(key, step.migration)
        try:
            if drop_invalid_index_of(conn, self.output, step, skip_if_valid=resuming):
                ms = 0.0
            else:
                t0 = time.perf_counter()
                with self.session.timeouts_outside_transaction(step):
                    execute(conn, step)
                ms = (time.perf_counter() - t0) * 1000
        except StepFailed:
            if not committed_before and not resuming:
                # Nothing of this migration was committed before: forget the in-flight mark.
                with transaction(conn), recording([step.migration], "partial history row"):
                    self.history.delete(conn, [key])
                run.expected.pop(key, None)
                run.committed.pop(key, None)
            raise
        with transaction(conn), recording([step.migration], "partial history row"):
            self.history.record_partial(conn, step.migration, step.index + 1, ms)
        run.recorded_partial(step.migration, step.index + 1)
        run.durations[key] = run.durations.get(key, 0.0) + ms


def pinpoint(session: Session, unit: Unit, exc: StepFailed) -> StepFailed:
    """Find the statement behind an un-pinpointed batch failure by replaying the unit in a
    transaction that is always rolled back (failure path only): the batches before the failing
    one as they ran, then that one a statement at a time."""
    if exc.pinpointed or exc.error.sqlstate in _NO_REPLAY:
        return exc
    conn = session.conn
    failing = exc.step  # the first statement of the batch that failed
    try:
        with conn.transaction(force_rollback=True):
            previous: Migration | None = None
            for batch in batches(unit.steps()):
                if batch[0].migration is not previous:
                    session.set_local_timeouts()
                    previous = batch[0].migration
                if batch[0].section is not failing.section or batch[0].index != failing.index:
                    execute_batch(conn, batch)
                    continue
                for step in batch:
                    execute(conn, step)
                break  # the failing batch ran without error this time: nothing to report
    except StepFailed as precise:
        if precise.error.sqlstate == exc.error.sqlstate:
            return precise
    except psycopg.Error:
        pass  # the replay is a courtesy; report what we know
    return exc
