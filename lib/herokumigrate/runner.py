"""The one routine that runs a commit unit (`plan.Unit`): a transaction of statements and its
bookkeeping, or one statement outside any transaction with its progress recorded around it.

Whatever the direction (`up`, `down`, a compensation's downs) and purpose (apply, rehearse,
replay), a unit runs the same way:

- under our timeouts: `SET LOCAL` at the start of its transaction and again before each
  migration's statements (a file's own SET or RESET cannot disarm the next one's protection);
  around a statement outside a transaction, `SET`, then `RESET` (session.py);
- retried as a whole on lock timeout or deadlock, each attempt's lock wait short and growing
  (lockretry.py), and held to it by a watchdog whatever the migration does to lock_timeout
  (lockwatch.py); an INVALID index a failed concurrent build left is dropped before a retry, or
  before the statement that builds it runs again;
- its statements sent a batch at a time (`statements.batches`: ~1 MiB of SQL per round trip,
  many migrations' statements together, so that the server never waits for the client between
  them; one migration's per round trip where a statement timeout is set); a failure PostgreSQL
  does not place in the batch is pinpointed by replaying the unit, a statement at a time for
  the failing batch, in a transaction that is rolled back;
- its bookkeeping (`UnitRecords`: history rows, the tool's table) written in the unit's own
  transaction right after its statements (`_transaction`: the one place a unit's statements
  and its bookkeeping are sent).
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

import psycopg

from herokumigrate.indexes import drop_invalid_index_of
from herokumigrate.lockretry import RETRYABLE, LockRetryPolicy, with_lock_retries
from herokumigrate.signals import transaction
from herokumigrate.statements import BATCH_CHARS, StepFailed, batches, execute, execute_batch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from herokumigrate.locks import LockObserver
    from herokumigrate.migration import Migration
    from herokumigrate.output import Output
    from herokumigrate.plan import Step, Unit
    from herokumigrate.session import Conn, Session
    from herokumigrate.statements import Segment
    from herokumigrate.versions import Version

# Replaying these to find the statement would only wait, or be cancelled, all over again.
_NO_REPLAY = {"55P03", "40P01", "57014"}


class UnitRecords(Protocol):
    """What a run writes around its units' statements (apply.py's for `up`, revert.py's for
    downs). Each `conn` method runs in the transaction the runner holds open for it."""

    def at_start(self, conn: Conn, unit: Unit) -> None:
        """First in a transaction unit's transaction (first-contact set-up)."""

    def after_statements(self, conn: Conn, unit: Unit, spent: dict[Version, float]) -> None:
        """After a transaction unit's statements, in its transaction (`spent`: ms per
        migration)."""

    def committed(self, unit: Unit, spent: dict[Version, float]) -> None:
        """The unit committed (no database access)."""

    def before_alone(self, conn: Conn, step: Step) -> bool:
        """Before a statement outside a transaction (not in a transaction: open one to write);
        True when an interrupted run had this very statement in flight."""

    def alone_failed(self, conn: Conn, step: Step) -> None:
        """That statement failed (not in a transaction)."""

    def alone_ran(self, conn: Conn, step: Step, ms: float) -> None:
        """That statement ran, in `ms` (not in a transaction)."""


class UnitRunner:
    """Runs units on a session, holding the migration lock (see the module's docstring)."""

    def __init__(
        self, session: Session, output: Output, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.session = session
        self.output = output
        self.sleep = sleep
        self.policy = LockRetryPolicy.from_config(session.config)

    def run(self, unit: Unit, records: UnitRecords) -> dict[Version, float]:
        """Run `unit` until it commits, retried on lock conflicts; returns the ms each migration
        spent in it. Raises StepFailed (pinpointed), RecordFailed, or psycopg's error for a
        lost connection."""
        spent: dict[Version, float] = {}
        # After a lock conflict the server did not place, the retries send less at a time: a
        # migration's statements where the round trip carried several, else a statement. Their
        # progress lines, and the final error, name the statement that waited, while the
        # transaction's locks are held over as few extra round trips as that takes.
        spread = [Spread.first(self.session)]  # the next attempt's, then the last one's

        def attempt(lock_timeout: float) -> None:
            if unit.alone is not None:
                spent.update(self._alone(unit.alone, records, lock_timeout))
                return
            try:
                # lock_timeout holds even where a migration switched it off (lockwatch.py).
                with self.session.guard_lock_waits(lock_timeout):
                    spent.update(self._transaction(unit, records, lock_timeout, spread[0]))
            except StepFailed as exc:
                if not exc.pinpointed and isinstance(exc.error, RETRYABLE):
                    narrower = Spread.PER_MIGRATION if exc.through else Spread.PER_STATEMENT
                    spread[0] = max(spread[0], narrower)
                raise

        def drop_invalid_index(exc: StepFailed) -> None:
            drop_invalid_index_of(self.session.conn, self.output, exc.step)

        try:
            with_lock_retries(
                self.policy,
                self.output,
                attempt,
                sleep=self.sleep,
                before_retry=drop_invalid_index if unit.autocommit else None,
            )
        except StepFailed as exc:
            if isinstance(exc.error, RETRYABLE):
                raise
            raise self.pinpoint(unit, exc, spread[0]) from None
        records.committed(unit, spent)
        return spent

    def _transaction(
        self, unit: Unit, records: UnitRecords, lock_timeout: float, spread: Spread
    ) -> dict[Version, float]:
        """The unit's statements (`spread`: what one round trip may carry), then its
        bookkeeping, in one transaction."""
        conn = self.session.conn
        with transaction(conn):
            self.session.set_local_timeouts(lock_timeout)
            records.at_start(conn, unit)
            first = unit.spans[0].migration if unit.spans else None
            spent = self.send(spread.batches(unit), lock_timeout, first)
            records.after_statements(conn, unit, spent)
        return spent

    def _alone(self, step: Step, records: UnitRecords, lock_timeout: float) -> dict[Version, float]:
        """One statement outside any transaction, its progress recorded before and after."""
        conn = self.session.conn
        resuming = records.before_alone(conn, step)
        try:
            # A killed run's build may have finished (valid: skip it) or left an INVALID index.
            if drop_invalid_index_of(conn, self.output, step, skip_if_valid=resuming):
                ms = 0.0
            else:
                started = time.perf_counter()
                with self.session.timeouts_outside_transaction(step, lock_timeout):
                    execute(conn, step)
                ms = (time.perf_counter() - started) * 1000
        except StepFailed:
            records.alone_failed(conn, step)
            raise
        records.alone_ran(conn, step, ms)
        return {step.migration.version: ms}

    def send(
        self,
        groups: Iterable[list[Step]],
        lock_timeout: float | None,
        previous: Migration | None = None,
        observer: LockObserver | None = None,
    ) -> dict[Version, float]:
        """Send groups of statements in the open transaction, a round trip each, our timeouts
        re-asserted as the migration changes (`previous`: the one they were set for); the ms
        per migration. With an `observer`, each group must hold one migration's statements."""
        conn = self.session.conn
        spent: dict[Version, float] = {}
        timeouts = self.session.timeouts_sql(local=True, lock_timeout=lock_timeout).as_string(conn)
        for group in groups:
            segments: list[Segment] = []
            for step in group:
                if segments and segments[-1][1][-1].migration is step.migration:
                    segments[-1][1].append(step)
                    continue
                prefix = ""
                if step.migration is not previous:
                    # A migration's own SET/RESET must not disarm the next one's protection: our
                    # timeouts go first in its statements' round trip.
                    prefix = timeouts + ";"
                    previous = step.migration
                segments.append((prefix, [step]))
            if observer is not None:
                observer.starting(conn, group[0].migration)
            for (_, steps), ms in zip(segments, execute_batch(conn, segments), strict=True):
                version = steps[0].migration.version
                spent[version] = spent.get(version, 0.0) + ms
        return spent

    def pinpoint(self, unit: Unit, exc: StepFailed, spread: Spread) -> StepFailed:
        """Find the statement behind an un-pinpointed batch failure by replaying the unit in a
        transaction that is always rolled back (failure path only): the batches before the
        failing one as they ran (`spread`), then that one a statement at a time."""
        if exc.pinpointed or exc.error.sqlstate in _NO_REPLAY:
            return exc
        try:
            with self.session.conn.transaction(force_rollback=True):
                self.send(_up_to_failing(unit, exc.step, spread), None)
        except StepFailed as precise:
            if precise.error.sqlstate == exc.error.sqlstate:
                return precise
        except psycopg.Error:
            pass  # the replay is a courtesy; report what we know
        return exc


class Spread(IntEnum):
    """What one round trip of a unit's statements may carry (see `statements.batches`)."""

    ACROSS_MIGRATIONS = 0
    PER_MIGRATION = 1
    PER_STATEMENT = 2

    @staticmethod
    def first(session: Session) -> Spread:
        """A unit's first attempt: across migrations, unless a statement timeout is set (its
        cancel does not say which statement it stopped: a round trip of one migration's
        statements lets the error name the file)."""
        return Spread.PER_MIGRATION if session.statement_timeout else Spread.ACROSS_MIGRATIONS

    def batches(self, unit: Unit) -> Iterator[list[Step]]:
        """The unit's statements, a round trip's worth at a time."""
        limit = 0 if self is Spread.PER_STATEMENT else BATCH_CHARS
        return batches(unit.steps(), limit, per_migration=self is not Spread.ACROSS_MIGRATIONS)


def _up_to_failing(unit: Unit, failing: Step, spread: Spread) -> Iterator[list[Step]]:
    """The unit's batches up to the one that failed, which comes a statement at a time (it ran
    without error this time: the replay ends there, with nothing to report)."""
    for batch in spread.batches(unit):
        if batch[0].section is not failing.section or batch[0].index != failing.index:
            yield batch
            continue
        for step in batch:
            yield [step]
        return
