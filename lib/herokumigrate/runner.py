"""The core: plans a release against the recorded history and applies it.

How a release runs (README, "How a release is applied"):
- Every pending migration's statements, and their history rows, run in ONE transaction
  (`transaction = "release"`, the default) or one transaction per migration
  (`transaction = "migration"`).
- A statement PostgreSQL refuses inside a transaction block (CREATE INDEX CONCURRENTLY, ...)
  or a dbmate section marked `transaction:false` runs where the files put it: the open
  transaction is committed first, with a `partial` history row for a migration that is half
  done, then the statement runs on its own and its progress is recorded.
- Any failure rolls back the open transaction. If earlier parts of this run were already
  committed, they are compensated: an INVALID index left by a failed concurrent build is
  dropped, then the `down` of every migration this run applied runs, newest first. Nothing
  older is ever touched.
- A run killed between committed parts leaves a `partial` row; the next run drops the INVALID
  index a killed concurrent build left, then resumes that migration where it stopped.
"""

from __future__ import annotations

import bisect
import contextlib
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from herokumigrate.errors import BadInput, MigrateError, MigrationFailed
from herokumigrate.history import (
    STATE_APPLIED,
    STATE_PARTIAL,
    DatabaseState,
    HistoryRow,
    HistoryTable,
    adopt,
)
from herokumigrate.lock import AdvisoryLock, lock_key

if TYPE_CHECKING:
    from herokumigrate.config import Config
    from herokumigrate.output import Output
    from herokumigrate.source import Migration, SqlSection
    from herokumigrate.sqlsplit import Statement

    Conn = psycopg.Connection[tuple[object, ...]]

_RETRYABLE = (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected)
# Replaying these to find the statement would only wait, or be cancelled, all over again.
_NO_REPLAY = {"55P03", "40P01", "57014"}
# A concurrent index build, and the name of the index it leaves behind (INVALID) when it fails.
_CONCURRENT_INDEX_RE = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?((?:\"(?:[^\"]|\"\")+\"|[\w$]+)(?:\.(?:\"(?:[^\"]|\"\")+\"|[\w$]+))?)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Step:
    """One statement of a migration's section, in the order of the run."""

    migration: Migration
    section: SqlSection
    index: int  # position among the section's statements
    statement: Statement


@dataclass
class Unit:
    """A piece of the run that commits as a whole: a transaction, or one autocommit statement."""

    steps: list[Step] = field(default_factory=list)
    autocommit: bool = False
    finishes: list[Migration] = field(default_factory=list)


@dataclass
class RunProgress:
    """What a run has committed so far."""

    resume: dict[int, int]  # version -> statement index an interrupted run stopped at
    applied: set[int] = field(default_factory=set)
    durations: dict[int, float] = field(default_factory=dict)  # ms, per version
    committed: dict[int, Migration] = field(
        default_factory=dict
    )  # with committed effects, in order


@dataclass
class ReleasePlan:
    """What `up` would do: pending migrations, and what the database knows that the files don't."""

    pending: list[Migration]
    unknown: list[int]
    changed: list[Migration]
    adopt: list[Migration]
    partial: dict[int, int]  # version -> statements already done
    needs_setup: bool

    @property
    def nothing_to_do(self) -> bool:
        """True when the run would not write anything."""
        return not (self.pending or self.adopt or self.needs_setup)


def make_plan(
    migrations: list[Migration], state: DatabaseState, *, target: int | None = None
) -> ReleasePlan:
    """Compare files with the recorded state (adopting legacy state) and list what is pending."""
    rows = state.rows
    adopted = adopt(state.legacy, migrations, rows)
    adopted_versions = {m.version for m in adopted}
    by_version = {m.version: m for m in migrations}
    unknown = sorted(v for v in rows if v not in by_version)
    changed = [
        m
        for m in migrations
        if m.version in rows
        and rows[m.version].state == STATE_APPLIED
        and rows[m.version].checksum != m.checksum
    ]
    partial = {
        v: row.progress or 0
        for v, row in rows.items()
        if row.state == STATE_PARTIAL and v in by_version
    }
    pending = [
        m
        for m in migrations
        if (m.version not in rows or m.version in partial)
        and m.version not in adopted_versions
        and (target is None or m.version <= target)
    ]
    return ReleasePlan(pending, unknown, changed, adopted, partial, not state.exists)


def build_units(items: list[tuple[Migration, SqlSection, int]], per_migration: bool) -> list[Unit]:
    """Group the statements of a run into commit units.

    `items` lists (migration, section, first statement to run). A migration finishes in the
    unit holding its last statement; transaction-control statements in files are skipped,
    since the runner owns the transaction.
    """
    units: list[Unit] = []
    current: Unit | None = None
    for migration, section, start in items:
        if per_migration and current is not None and current.steps:
            units.append(current)
            current = None
        for index, statement in enumerate(section.statements):
            if index < start or statement.kind == "transaction_control":
                continue
            autocommit = statement.kind == "no_transaction" or not section.transaction
            step = Step(migration, section, index, statement)
            if autocommit:
                if current is not None and (current.steps or current.finishes):
                    units.append(current)
                units.append(Unit([step], autocommit=True))
                current = None
            else:
                if current is None:
                    current = Unit()
                current.steps.append(step)
        if current is None:
            current = Unit()
        current.finishes.append(migration)
    if current is not None and (current.steps or current.finishes):
        units.append(current)
    return units


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
    ) -> None:
        super().__init__(str(error))
        self.step = step
        self.error = error
        self.position = position
        self.pinpointed = pinpointed

    def describe(self) -> str:
        """`file: line N: ERROR SQLSTATE: message (detail) hint: ...` for the user."""
        diag = self.error.diag
        path = self.step.section.path.name
        if self.pinpointed:
            line = self.step.section.file_line(self.step.statement, self.position)
            where = f"{path}: line {line}"
        else:
            where = f"{path} (the failing statement could not be pinpointed)"
        message = diag.message_primary or _one_line(str(self.error))
        parts = [f"{where}: ERROR {self.error.sqlstate or '?'}: {message}"]
        if diag.message_detail:
            parts.append(f"({_one_line(diag.message_detail)})")
        if diag.message_hint:
            parts.append(f"hint: {_one_line(diag.message_hint)}")
        return " ".join(parts)


class Runner:
    """Applies and reverts migrations on one connection, holding the migration lock."""

    def __init__(
        self,
        config: Config,
        output: Output,
        conn: Conn,
        reconnect: Callable[[], Conn],
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.output = output
        self.conn = conn
        self.reconnect = reconnect
        self.history = HistoryTable(config.history_schema, config.history_table)
        self.sleep = sleep
        self.lock: AdvisoryLock | None = None
        self.state: DatabaseState | None = None
        self._deferred_setup: ReleasePlan | None = None

    # ----- session set-up ---------------------------------------------------------------

    def read_state(self) -> DatabaseState:
        """Read the recorded history (no lock needed: it only reads)."""
        self.state = self.history.read(self.conn)
        return self.state

    def take_lock(self) -> None:
        """Take the migration lock and set the session's timeouts."""
        dbname = self.conn.info.dbname
        self.lock = AdvisoryLock(self.conn, lock_key(dbname), self.output)
        self.lock.acquire(self.config.lock_wait)
        self.conn.execute(self._timeouts_sql(local=False))

    def release_lock(self) -> None:
        """Give the lock back, if the connection still works."""
        if self.lock is not None:
            with contextlib.suppress(psycopg.Error):  # a dead session released its locks already
                self.lock.release()

    def _timeouts_sql(self, *, local: bool) -> sql.Composed:
        scope = sql.SQL("SET LOCAL " if local else "SET ")
        return sql.SQL("{}lock_timeout = {}; {}statement_timeout = {}").format(
            scope,
            sql.Literal(_milliseconds(self.config.lock_timeout)),
            scope,
            sql.Literal(_milliseconds(self.config.statement_timeout)),
        )

    # ----- up ---------------------------------------------------------------------------

    def up(self, plan: ReleasePlan, *, dry_run: bool) -> int:
        """Apply the plan. Returns the number of migrations applied."""
        state = self.state
        assert state is not None
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
        setup = plan.needs_setup or bool(plan.adopt)
        if setup and (dry_run or not units or units[0].autocommit):
            self._setup(plan, state, dry_run=dry_run)
            setup = False
        self._deferred_setup = plan if setup else None
        if not units:
            return 0
        verb = "Dry run of" if dry_run else "Applying"
        self.output.step(f"{verb} {len(plan.pending)} migration(s) ({mode})")
        if dry_run:
            return self._dry_run(units)
        return self._apply_up(units, plan)

    def _setup(self, plan: ReleasePlan, state: DatabaseState, *, dry_run: bool) -> None:
        """Create our tables and adopt a legacy tool's state, in a transaction of their own."""
        if dry_run:
            if plan.adopt and state.legacy is not None:
                self.output.detail(
                    f"Would adopt {len(plan.adopt)} migration(s) from {state.legacy.tool}"
                )
            return
        with self.conn.transaction():
            self._setup_in_transaction(plan, state)
        self._report_setup(plan, state)

    def _setup_in_transaction(self, plan: ReleasePlan, state: DatabaseState) -> None:
        """Create our tables and record what a legacy tool applied (caller's transaction)."""
        self.history.create(self.conn)
        if plan.adopt:
            assert state.legacy is not None
            source = f"adopted from {state.legacy.tool}"
            self.history.record_applied(self.conn, ((m, 0.0) for m in plan.adopt), source)
            self.history.log(
                self.conn,
                "adopted",
                f"{len(plan.adopt)} migration(s) recorded by {state.legacy.tool}, "
                f"up to {plan.adopt[-1].version}",
            )

    def _report_setup(self, plan: ReleasePlan, state: DatabaseState) -> None:
        if plan.adopt and state.legacy is not None:
            self.output.detail(
                f"Adopted {len(plan.adopt)} migration(s) already applied by {state.legacy.tool}"
                f" (up to {plan.adopt[-1].version}); they will not run again"
            )

    def _dry_run(self, units: list[Unit]) -> int:
        """Run every transactional statement in one transaction, report, then roll back."""
        count = 0
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute(self._timeouts_sql(local=True))
                for unit in units:
                    if unit.autocommit:
                        step = unit.steps[0]
                        self.output.detail(
                            f"{step.migration.label}: would run outside the transaction "
                            f"(line {step.statement.line}): {_first_words(step.statement.text)}"
                        )
                        continue
                    for step in unit.steps:
                        self._execute(step)
                    for m in unit.finishes:
                        count += 1
                        self.output.detail(f"{m.label}: ok")
        except StepFailed as exc:
            raise self._failure(exc, committed=[], dry_run=True) from None
        self.output.step(f"Dry run: {count} migration(s) ran and were rolled back")
        return 0

    def _apply_up(self, units: list[Unit], plan: ReleasePlan) -> int:
        """Run the units, compensating committed ones if a later one fails."""
        started = time.monotonic()
        rows = self.state.rows if self.state else {}
        run = RunProgress(resume=dict(plan.partial))
        run.applied = {v for v, r in rows.items() if r.state == STATE_APPLIED}
        run.applied.update(m.version for m in plan.adopt)
        invalid_before = self._invalid_indexes() if any(u.autocommit for u in units) else set()
        count = 0
        try:
            for unit in units:
                unit_start = time.monotonic()
                self._run_unit(unit, run)
                for m in _migrations_of(unit):
                    run.committed.setdefault(m.version, m)
                for m in unit.finishes:
                    count += 1
                    self.output.detail(f"{m.label} ({run.durations.get(m.version, 0.0):.0f} ms)")
                if unit.autocommit and time.monotonic() - unit_start >= 1.0:
                    self.output.detail(
                        f"{unit.steps[0].migration.label}: statement at line "
                        f"{unit.steps[0].statement.line} ran outside the transaction in "
                        f"{time.monotonic() - unit_start:.1f}s"
                    )
        except StepFailed as exc:
            raise self._failure(
                exc, committed=list(run.committed.values()), invalid_before=invalid_before
            ) from None
        except psycopg.OperationalError as exc:
            # The connection died (terminated backend, network): the server rolled back the
            # open transaction; committed parts still need compensating.
            raise self._failure(
                None,
                committed=list(run.committed.values()),
                invalid_before=invalid_before,
                lost=exc,
            ) from None
        elapsed = time.monotonic() - started
        self.output.step(f"Applied {count} migration(s) in {elapsed:.2f}s")
        return count

    def _run_unit(self, unit: Unit, run: RunProgress) -> None:
        """Run one unit, retrying the whole of it on lock timeout or deadlock."""
        attempt = 0
        while True:
            try:
                if unit.autocommit:
                    self._run_autocommit_unit(unit, run)
                else:
                    self._run_transaction_unit(unit, run)
                return
            except StepFailed as exc:
                if not isinstance(exc.error, _RETRYABLE):
                    raise self._pinpoint(unit, exc) from None
                if attempt >= self.config.retries:
                    self.output.warn(f"Gave up after {attempt} retries")
                    raise
                attempt += 1
                delay = min(30.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)  # noqa: S311
                what = (
                    "lock_timeout"
                    if isinstance(exc.error, pg_errors.LockNotAvailable)
                    else "deadlock"
                )
                self.output.warn(
                    f"{exc.step.migration.label}: line {exc.step.statement.line}: {what} "
                    f"({exc.error.sqlstate}); retry {attempt} of {self.config.retries} "
                    f"in {delay:.1f}s (the app's queries are not kept waiting meanwhile)"
                )
                if unit.autocommit:
                    self._drop_invalid_index_of(exc.step)
                self.sleep(delay)

    def _run_transaction_unit(self, unit: Unit, run: RunProgress) -> None:
        """Statements and their history rows in one transaction."""
        spent: dict[int, float] = {}
        finished = {m.version for m in unit.finishes}
        with self.conn.transaction():
            self.conn.execute(self._timeouts_sql(local=True))
            if self._deferred_setup is not None and self.state is not None:
                self._setup_in_transaction(self._deferred_setup, self.state)
            for batch in _batches(unit.steps):
                t0 = time.perf_counter()
                self._execute_batch(batch)
                key = batch[0].migration.version
                spent[key] = spent.get(key, 0.0) + (time.perf_counter() - t0) * 1000
            self.history.record_applied(
                self.conn, [(m, spent.get(m.version, 0.0)) for m in unit.finishes]
            )
            last = unit.steps[-1] if unit.steps else None
            if last is not None and last.migration.version not in finished:
                self.history.record_partial(
                    self.conn, last.migration, last.index + 1, spent[last.migration.version]
                )
            if finished:
                self._sync_legacy(run.applied | finished)
        if self._deferred_setup is not None and self.state is not None:
            self._report_setup(self._deferred_setup, self.state)
            self._deferred_setup = None
        for key, ms in spent.items():
            run.durations[key] = run.durations.get(key, 0.0) + ms
        run.applied.update(finished)

    def _run_autocommit_unit(self, unit: Unit, run: RunProgress) -> None:
        """One statement outside any transaction, then its progress in the history."""
        assert len(unit.steps) == 1
        assert not unit.finishes
        step = unit.steps[0]
        key = step.migration.version
        # An earlier, killed run had this very statement in flight: it may have finished.
        resuming = run.resume.pop(key, None) == step.index
        if not resuming:
            # Record "statement k in flight" first, so a kill during it is visible next time.
            with self.conn.transaction():
                self.history.record_partial(self.conn, step.migration, step.index, 0.0)
        try:
            if self._drop_invalid_index_of(step, skip_if_valid=resuming):
                ms = 0.0
            else:
                t0 = time.perf_counter()
                self._execute(step)
                ms = (time.perf_counter() - t0) * 1000
        except StepFailed:
            if key not in run.committed and not resuming:
                # Nothing of this migration was committed before: forget the in-flight mark.
                with self.conn.transaction():
                    self.history.delete(self.conn, [key])
            raise
        with self.conn.transaction():
            self.history.record_partial(self.conn, step.migration, step.index + 1, ms)
        run.durations[key] = run.durations.get(key, 0.0) + ms

    def _sync_legacy(self, applied_versions: set[int]) -> None:
        legacy = self.state.legacy if self.state else None
        self.history.sync_legacy(self.conn, legacy, applied_versions)

    def _execute_batch(self, steps: list[Step]) -> None:
        """One migration's consecutive statements in one round trip (simple query protocol).

        An error position from PostgreSQL is mapped back to the statement and its line; an
        error without one leaves the batch un-pinpointed (see `_pinpoint`).
        """
        if len(steps) == 1:
            self._execute(steps[0])
            return
        starts: list[int] = []
        parts: list[str] = []
        offset = 0
        for step in steps:
            text = step.statement.text
            if not text.rstrip().endswith(";"):
                text += "\n;"  # on its own line: the text may end in a -- comment
            starts.append(offset)
            parts.append(text)
            offset += len(text) + 1
        try:
            self.conn.execute("\n".join(parts).encode("utf-8"))
        except psycopg.OperationalError as exc:
            if _connection_lost(exc):
                raise
            raise self._batch_failure(steps, starts, exc) from exc
        except psycopg.Error as exc:
            raise self._batch_failure(steps, starts, exc) from exc

    @staticmethod
    def _batch_failure(steps: list[Step], starts: list[int], exc: psycopg.Error) -> StepFailed:
        position = _int_or_none(exc.diag.statement_position)
        if position is None:
            return StepFailed(steps[0], exc, pinpointed=False)
        index = bisect.bisect_right(starts, position - 1) - 1
        return StepFailed(steps[index], exc, position=position - starts[index])

    def _pinpoint(self, unit: Unit, exc: StepFailed) -> StepFailed:
        """Find the statement behind an un-pinpointed batch failure by replaying the unit one
        statement at a time in a transaction that is always rolled back (failure path only)."""
        if exc.pinpointed or exc.error.sqlstate in _NO_REPLAY:
            return exc
        failing = exc.step.section
        last = max(i for i, step in enumerate(unit.steps) if step.section is failing)
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute(self._timeouts_sql(local=True))
                for step in unit.steps[: last + 1]:
                    self._execute(step)
        except StepFailed as precise:
            if precise.error.sqlstate == exc.error.sqlstate:
                return precise
        except psycopg.Error:
            pass  # the replay is a courtesy; report what we know
        return exc

    def _execute(self, step: Step) -> None:
        try:
            self.conn.execute(step.statement.text.encode("utf-8"))
        except psycopg.OperationalError as exc:
            if _connection_lost(exc):
                raise  # handled as such, not as a SQL error
            raise StepFailed(step, exc, position=_int_or_none(exc.diag.statement_position)) from exc
        except psycopg.Error as exc:
            raise StepFailed(step, exc, position=_int_or_none(exc.diag.statement_position)) from exc

    # ----- INVALID indexes ------------------------------------------------------------

    def _invalid_indexes(self) -> set[str]:
        rows = self.conn.execute(
            "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE NOT i.indisvalid"
        ).fetchall()
        return {str(r[0]) for r in rows}

    def _drop_invalid_index_of(self, step: Step, *, skip_if_valid: bool = False) -> bool:
        """Drop the INVALID index a failed or killed `CREATE INDEX CONCURRENTLY` left behind.

        With `skip_if_valid` (resuming a killed run), returns True when the index exists and is
        valid: the statement finished before the kill and must not run again.
        """
        match = _CONCURRENT_INDEX_RE.match(step.statement.text)
        if not match:
            return False
        row = self.conn.execute(
            "SELECT c.oid::regclass::text, i.indisvalid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.oid = to_regclass(%s)",
            (match.group(1),),
        ).fetchone()
        if row is None:
            return False
        if row[1]:
            if skip_if_valid:
                self.output.detail(f"Index {row[0]} was built before the interruption")
            return skip_if_valid
        self.output.detail(f"Dropping INVALID index {row[0]} left by an earlier failed build")
        self._drop_index(str(row[0]))
        return False

    def _drop_new_invalid_indexes(self, before: set[str]) -> list[str]:
        dropped = sorted(self._invalid_indexes() - before)
        for name in dropped:
            self._drop_index(name)
        return dropped

    def _drop_index(self, regclass: str) -> None:
        """Drop an index named as PostgreSQL prints a regclass (already quoted where needed)."""
        self.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(regclass)))

    # ----- failure and compensation ---------------------------------------------------

    def _failure(
        self,
        exc: StepFailed | None,
        *,
        committed: list[Migration],
        invalid_before: set[str] | None = None,
        dry_run: bool = False,
        lost: psycopg.Error | None = None,
    ) -> MigrateError:
        """Build the error for a failed run, compensating what this run committed."""
        if exc is not None:
            headline = exc.describe()
        else:
            headline = (
                "the connection to the database was lost: "
                f"{_one_line(self.output.redact(str(lost)))}"
            )
        fix = _fix_for(exc.error if exc is not None else lost)
        if dry_run:
            return MigrationFailed(
                headline, details=("Dry run: everything was rolled back.",), fix=fix
            )
        details: list[str] = []
        if not committed:
            details.append("Everything this run did was rolled back: the database is unchanged.")
            self._log_safely("failed", headline)
            return MigrationFailed(headline, details=tuple(details), fix=fix)
        why = (
            "earlier migrations of this run were committed one by one (MIGRATE_TRANSACTION="
            "migration)"
            if self.config.transaction == "migration"
            else "parts of this run were committed around statements that cannot run in a "
            "transaction"
        )
        details.append(f"{why[0].upper()}{why[1:]}; compensating with their downs, newest first:")
        outcome = self._compensate(committed, invalid_before or set())
        details.extend(outcome)
        self._log_safely("failed", headline + " | " + " ".join(outcome))
        return MigrationFailed(
            headline,
            details=tuple(details),
            fix=fix + " `heroku-migrate status` shows the state.",
        )

    def _compensate(self, committed: list[Migration], invalid_before: set[str]) -> list[str]:
        """Undo what this run committed: INVALID indexes, then downs newest first."""
        lines: list[str] = []
        try:
            if self.conn.closed or self.conn.broken:
                self.conn = self.reconnect()
                if self.lock is not None:
                    self.lock = AdvisoryLock(self.conn, self.lock.key, self.output)
                    self.lock.acquire(self.config.lock_wait)
                self.conn.execute(self._timeouts_sql(local=False))
            for name in self._drop_new_invalid_indexes(invalid_before):
                lines.append(f"dropped INVALID index {name} left by the failed build")
        except psycopg.Error as exc:
            lines.append(f"could not reconnect to compensate: {_one_line(str(exc))}")
            lines.append(_remaining_state(committed, done=[]))
            return lines
        reverted: list[Migration] = []
        for m in reversed(committed):
            if m.down is None:
                lines.append(f"{m.label}: has no down migration; cannot undo it")
                lines.append(_remaining_state(committed, done=reverted))
                return lines
            try:
                self._apply_downs([m], per_migration=True, done=[], announce=False)
            except StepFailed as exc:
                lines.append(f"down of {m.label} failed: {exc.describe()}")
                lines.append(_remaining_state(committed, done=reverted))
                return lines
            reverted.append(m)
            lines.append(f"reverted {m.label}")
        lines.append("All of this run's migrations were reverted: the database is as before.")
        return lines

    def _apply_downs(
        self,
        targets: list[Migration],
        *,
        per_migration: bool,
        done: list[Migration],
        announce: bool = True,
    ) -> None:
        """Run the downs of `targets` in this order, each migration forgotten (and the legacy
        table synced) in the transaction of its last statement. Appends every reverted
        migration to `done`, so that a caller knows how far a failure got."""
        state = self.state
        legacy = state.legacy if state else None
        remaining = {
            v for v, r in (state.rows if state else {}).items() if r.state == STATE_APPLIED
        }
        items = [(m, m.down, 0) for m in targets if m.down is not None]
        for unit in build_units(items, per_migration):
            if unit.autocommit:
                self._execute(unit.steps[0])
                continue
            gone = {m.version for m in unit.finishes}
            with self.conn.transaction():
                self.conn.execute(self._timeouts_sql(local=True))
                for step in unit.steps:
                    self._execute(step)
                if gone:
                    self.history.delete(self.conn, gone)
                    remaining -= gone
                    self.history.sync_legacy(self.conn, legacy, remaining)
            for m in unit.finishes:
                done.append(m)
                if announce:
                    self.output.detail(f"reverted {m.label}")

    def _log_safely(self, event: str, detail: str) -> None:
        try:
            if self.conn.closed or self.conn.broken:
                return
            # Only into an existing log: a failed first release must leave no table behind.
            found = self.conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (self.history.log_ident.as_string(self.conn),)
            ).fetchone()
            if not found or not found[0]:
                return
            with self.conn.transaction():
                self.history.log(self.conn, event, self.output.redact(detail))
        except psycopg.Error:
            pass  # the log is a courtesy; the error itself is what the user must see

    # ----- down / goto / force ----------------------------------------------------------

    def down(self, migrations: list[Migration], count: int) -> list[Migration]:
        """Revert the `count` newest applied migrations, newest first, in one transaction."""
        state = self.read_state()
        by_version = {m.version: m for m in migrations}
        applied = sorted((v for v in state.rows), reverse=True)[:count]
        return self._revert([self._revertible(v, by_version, state.rows) for v in applied])

    def goto(self, migrations: list[Migration], version: int) -> tuple[int, int]:
        """Revert what is newer than `version`, then apply what is pending up to it."""
        state = self.read_state()
        by_version = _by_version_checked(migrations, version)
        newer = sorted((v for v in state.rows if v > version), reverse=True)
        reverted = self._revert([self._revertible(v, by_version, state.rows) for v in newer])
        state = self.read_state()
        plan = make_plan(migrations, state, target=version)
        applied = self.up(plan, dry_run=False) if not plan.nothing_to_do else 0
        return len(reverted), applied

    def _revertible(
        self, version: int, by_version: dict[int, Migration], rows: dict[int, HistoryRow]
    ) -> Migration:
        m = by_version.get(version)
        if m is None:
            raise BadInput(
                f"version {version} is applied but its file is not in the migrations folder",
                fix="Restore the file (git log --all -- db/migrations), or use "
                "`heroku-migrate force VERSION` to only change the record.",
            )
        if m.down is None:
            raise BadInput(
                f"{m.filename}: has no down migration, so it cannot be reverted",
                fix="Write its down SQL (a .down.sql file or a '-- migrate:down' section).",
            )
        if rows[version].state == STATE_PARTIAL:
            raise BadInput(
                f"{m.filename}: is only partly applied",
                fix="Run `heroku-migrate up` to finish it, or repair by hand and use "
                "`heroku-migrate force VERSION`.",
            )
        return m

    def _revert(self, targets: list[Migration]) -> list[Migration]:
        if not targets:
            return []
        self.output.step(f"Reverting {len(targets)} migration(s), newest first")
        done: list[Migration] = []
        try:
            self._apply_downs(
                targets, per_migration=self.config.transaction == "migration", done=done
            )
        except StepFailed as exc:
            headline = exc.describe()
            self._log_safely("down failed", headline)
            still = ", ".join(m.label for m in targets if m not in done)
            raise MigrationFailed(
                headline,
                details=(
                    f"Reverted before the failure: {', '.join(m.label for m in done) or 'none'}.",
                    f"Still applied: {still}.",
                ),
                fix="Fix the down migration and run the command again.",
            ) from None
        with self.conn.transaction():
            self.history.log(
                self.conn, "down", "reverted " + ", ".join(str(m.version) for m in done)
            )
        return done

    def force(self, migrations: list[Migration], version: int) -> tuple[int, int]:
        """Record that exactly the files up to `version` are applied, running no SQL."""
        state = self.read_state()
        _by_version_checked(migrations, version)
        with self.conn.transaction():
            self.history.create(self.conn)
            drop = [v for v in state.rows if v > version]
            self.history.delete(self.conn, drop)
            mark = [
                m
                for m in migrations
                if m.version <= version
                and (m.version not in state.rows or state.rows[m.version].state != STATE_APPLIED)
            ]
            self.history.record_applied(self.conn, ((m, 0.0) for m in mark), "forced")
            applied = {v for v in state.rows if v <= version} | {m.version for m in mark}
            self.history.sync_legacy(self.conn, state.legacy, applied)
            self.history.log(
                self.conn,
                "forced",
                f"recorded version {version}: marked {len(mark)}, forgot {len(drop)}",
            )
        return len(mark), len(drop)


def _by_version_checked(migrations: list[Migration], version: int) -> dict[int, Migration]:
    """Migrations by version, after checking that `version` is one of them (or 0: none)."""
    by_version = {m.version: m for m in migrations}
    if version != 0 and version not in by_version:
        raise BadInput(
            f"version {version} is not one of the migration files",
            fix="Pick a version from `heroku-migrate status`, or 0 for none.",
        )
    return by_version


def _migrations_of(unit: Unit) -> list[Migration]:
    """The migrations a unit touches, in order, each once."""
    seen: dict[int, Migration] = {}
    for step in unit.steps:
        seen.setdefault(step.migration.version, step.migration)
    for m in unit.finishes:
        seen.setdefault(m.version, m)
    return list(seen.values())


def _batches(steps: list[Step]) -> list[list[Step]]:
    """Consecutive steps of the same migration section, grouped."""
    groups: list[list[Step]] = []
    for step in steps:
        if groups and groups[-1][-1].section is step.section:
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def _connection_lost(exc: psycopg.Error) -> bool:
    """True for errors that mean the session is gone (terminated, network), not bad SQL."""
    return exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P0"))


def _fix_for(error: psycopg.Error | None) -> str:
    """What the user should do about a failed run, by the kind of failure."""
    state = error.sqlstate if error is not None else None
    if error is None or _connection_lost(error):
        return (
            "The connection was lost (database restart or maintenance?): check heroku pg:info, "
            "then retry the release (heroku releases:retry)."
        )
    if state in ("55P03", "40P01"):
        return (
            "Another session held a conflicting lock. Retry the release when traffic is lower "
            "(heroku releases:retry), find the blocker in pg_stat_activity, or raise "
            "MIGRATE_LOCK_TIMEOUT / MIGRATE_RETRIES."
        )
    if state == "57014":
        return "A statement ran past statement_timeout: raise MIGRATE_STATEMENT_TIMEOUT."
    if state == "53200":
        return (
            "One transaction touched more objects than the server's lock table holds: set "
            "MIGRATE_TRANSACTION=migration, or raise max_locks_per_transaction."
        )
    return "Fix the migration and push again."


def _milliseconds(seconds: float) -> str:
    """A PostgreSQL duration; a positive value never rounds down to 0 (which means "off")."""
    ms = round(seconds * 1000)
    return f"{max(ms, 1) if seconds > 0 else 0}ms"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _remaining_state(committed: list[Migration], done: list[Migration]) -> str:
    left = [m.label for m in committed if m not in done]
    return (
        "STATE LEFT: still applied (possibly partly) from this run: "
        + ", ".join(left)
        + ". Repair by hand, then record the truth with `heroku-migrate force VERSION`."
    )


def _first_words(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
