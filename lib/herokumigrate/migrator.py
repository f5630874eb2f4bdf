"""The core API: each command as a method that returns a result, holding the sequence that
makes it safe, as golang-migrate's: lock, read the history (and the tool's table: dirty?) under
the lock, plan, run. Each command's checks are checks.py's.

The CLI renders the results; progress lines are printed here, as the run goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Literal, NamedTuple

from herokumigrate.errors import BadInput, MigrateError, MigrationFailed
from herokumigrate.history import HistoryState, HistoryTable
from herokumigrate.ledger import Ledger
from herokumigrate.manifest import Fingerprint
from herokumigrate.session import Session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from herokumigrate.config import Config
    from herokumigrate.history import HistoryRow, LogEvent
    from herokumigrate.ledger import DatabaseState
    from herokumigrate.locks import LockObserver, MigrationLocks
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable, Resolution
    from herokumigrate.output import Output
    from herokumigrate.plan import ReleasePlan
    from herokumigrate.planlint import PendingLint
    from herokumigrate.recording import Bookkeeping
    from herokumigrate.runner import UnitRunner
    from herokumigrate.signals import Interrupted
    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version

StatusKind = Literal["pending", "partial", "applied", "adopted", "changed"]


class UpResult(NamedTuple):
    """What `up`/`plan` did. `applied` counts this run's migrations (0 for a dry run);
    `up_to_date` means there was nothing to do, `recorded` then how many are applied;
    `reverted`, what a rollback reverted first (rollback.py)."""

    applied: int
    up_to_date: bool = False
    recorded: int = 0
    reverted: int = 0  # migrations newer than the files a rollback reverted (on_rollback)


class PlanReport(NamedTuple):
    """What `plan` saw: `result` None when the rehearsal failed with `failure` (in `failed`,
    when a migration's statement did); `migrations` lists every pending one, in order, with
    its locks; `lint` is None when it did not run (nothing pending, or not asked)."""

    result: UpResult | None
    migrations: list[MigrationLocks]
    lint: PendingLint | None
    failure: MigrationFailed | None = None
    failed: Migration | None = None
    # What a rollback would revert first (newest first) with the locks each down takes.
    reverts: list[MigrationLocks] = []  # noqa: RUF012 -- a NamedTuple default, never mutated


class DownResult(NamedTuple):
    """The migrations `down` reverted, newest first."""

    reverted: list[Migration]


class GotoResult(NamedTuple):
    """`goto VERSION`: how many migrations were reverted, then applied."""

    version: Version
    reverted: int
    applied: int


class ForceResult(NamedTuple):
    """`force VERSION`: how many migrations were marked applied, and forgotten; the native
    tool's table it created (the database had none)."""

    version: Version
    marked: int
    forgot: int
    created: NativeTable | None = None


class StatusEntry(NamedTuple):
    """One migration file and what the history says of it."""

    migration: Migration
    kind: StatusKind
    row: HistoryRow | None  # None: never recorded by us
    tool: ToolName | None = None  # for "adopted": the tool that applied it


class StatusReport(NamedTuple):
    """Everything `status` shows."""

    entries: list[StatusEntry]
    unknown: list[HistoryRow]  # recorded, but not in these files
    pending: list[Version]
    native: ToolName | None
    events: list[LogEvent]
    # The native table's disagreement (or golang-migrate's dirty row) `up` refuses, as the
    # lines of its error; None when it agrees.
    native_problem: tuple[str, ...] | None = None
    # Each recorded version's stored down (downstore.py): `sql`, `empty`, `none`, or
    # `no stored down` (applied before downs were stored, or stored for other content).
    downs: dict[Version, str] = {}  # noqa: RUF012 -- a NamedTuple default, never mutated


class Migrator:
    """Runs the commands against the configured database."""

    def __init__(
        self,
        config: Config,
        output: Output,
        *,
        sleep: Callable[[float], None] = time.sleep,
        open_session: Callable[[Config, Output], Session] = Session.open,
    ) -> None:
        self.config = config
        self.output = output
        self.sleep = sleep
        self.open_session = open_session

    def up(
        self,
        migrations: list[Migration] | None,
        *,
        dry_run: bool = False,
        fingerprint: Fingerprint | None = None,
        observer: LockObserver | None = None,
        revert_observer: LockObserver | None = None,
    ) -> UpResult:
        """`up` (or `plan` with `dry_run`, shown to `observer`; what a rollback would revert,
        to `revert_observer`). `migrations` may be None when the build's manifest gave the
        `fingerprint`: the files are then read only if the quick check finds work."""
        if fingerprint is None:
            assert migrations is not None
            fingerprint = Fingerprint.of(migrations)
        with self._database_errors(), self._session() as session:
            # Most releases have nothing to apply: one query answers them.
            if self._ledger(session, fingerprint).matches(session.conn, fingerprint):
                return UpResult(0, up_to_date=True, recorded=len(fingerprint.migrations))
            from herokumigrate.checks import Checks  # past the quick check: there is work

            checks = Checks("plan" if dry_run else "up", self.config, self.output)
            files = migrations if migrations is not None else self._load()
            ledger = self._ledger(session, Fingerprint.of(files))
            # Checked before anything is locked or written; then again under the lock, where
            # another runner may have applied them meanwhile.
            plan = checks.plan(self._plan(ledger, session, files), files)
            reverted = 0
            if not plan.nothing_to_do or self._rolls_back(plan, files, dry_run=dry_run):
                session.require_writable()
                ledger.history.require_privileges(session.conn)
                session.lock()
                plan = checks.plan(self._plan(ledger, session, files), files)
                if self._rolls_back(plan, files, dry_run=dry_run):  # before anything else
                    reverted = self._roll_back(
                        session, ledger, plan, files, dry_run=dry_run, observer=revert_observer
                    )
                    plan = checks.plan(self._plan(ledger, session, files), files)
            if plan.nothing_to_do:
                return _up_to_date(files, plan.state)._replace(reverted=reverted)
            applied = self._apply(session, ledger, plan, files, dry_run=dry_run, observer=observer)
            return UpResult(applied, reverted=reverted)

    def plan(self, migrations: list[Migration], *, lint: bool = True) -> PlanReport:
        """`plan`: rehearse `up` in a transaction that is rolled back, noting the locks each
        pending migration takes; with `lint`, check exactly the pending ones (where pglast is
        here). A failed rehearsal is reported in the result, not raised."""
        from herokumigrate.downstore import DOWNS_SUFFIX
        from herokumigrate.locks import LockObserver

        schema, table = self.config.history_schema, self.config.history_table
        ours = [table, table + "_log", table + DOWNS_SUFFIX]
        observer = LockObserver(schema, ours)
        reverts = LockObserver(schema, ours)
        failure: MigrationFailed | None = None
        result: UpResult | None = None
        try:
            result = self.up(migrations, dry_run=True, observer=observer, revert_observer=reverts)
        except MigrationFailed as exc:
            failure = exc
        pending = list(observer.migrations.values())
        checked = None
        if lint and observer.catalog is not None:
            from herokumigrate.config import TransactionMode
            from herokumigrate.planlint import lint_pending

            pending_ones = [e.migration for e in pending]
            checked = lint_pending(
                pending_ones,
                observer.catalog.table_exists,
                applied=[m for m in migrations if m not in set(pending_ones)],
                one_transaction=self.config.transaction == TransactionMode.RELEASE,
            )
        failed = observer.current if failure is not None else None
        reverted = [e for e in reverts.migrations.values() if e.ran]
        return PlanReport(result, pending, checked, failure, failed, reverted)

    def status(self, migrations: list[Migration]) -> StatusReport:
        """What is applied, pending, partial or changed, and the newest log events."""
        from herokumigrate.plan import make_plan
        from herokumigrate.reconcile import NativeConflict

        with self._database_errors(), self._session() as session:
            ledger = self._ledger(session, Fingerprint.of(migrations))
            state = ledger.read(session.conn)
            events = ledger.history.last_events(session.conn) if state.exists else []
            kinds = ledger.history.downs.kinds(session.conn) if state.exists else {}
        downs = {}
        for version, row in state.rows.items():
            kind, checksum = kinds.get(version.canonical, ("", ""))
            downs[version] = kind if kind and checksum == row.checksum else "no stored down"
        native_problem: NativeConflict | None = None
        try:
            plan = make_plan(migrations, state)
        except NativeConflict as conflict:
            # `up` refuses; status is exactly when the user needs to see it.
            native_problem = conflict
            plan = make_plan(migrations, dataclasses.replace(state, native=None))
        tool = state.native.tool if state.native else None
        entries = [_status_entry(m, plan, tool) for m in migrations]
        unknown = [state.rows[v] for v in plan.unknown]
        pending = [m.version for m in plan.pending]
        problem = tuple(native_problem.lines()) if native_problem is not None else None
        return StatusReport(entries, unknown, pending, tool, events, problem, downs)

    def down(self, migrations: list[Migration], count: int, *, confirmed: bool) -> DownResult:
        """Revert the `count` newest applied migrations, newest first (only if `confirmed`)."""
        from herokumigrate.checks import Checks
        from herokumigrate.revert import newest_applied, revert, unconfirmed

        Checks("down", self.config, self.output).files(migrations)
        with self._database_errors(), self._locked(migrations) as (ledger, state, runner):
            targets = newest_applied(state, migrations, count)
            if targets and not confirmed:
                raise unconfirmed(
                    f"down {count} reverts migrations and may drop tables and their data",
                    targets,
                    fix=f"Run `heroku-migrate down {count} --yes` to confirm.",
                )
            book = self._book(ledger, state, migrations, state.native)
            done = revert(runner, book, targets, transaction_mode=self.config.transaction)
        return DownResult(done)

    def goto(self, migrations: list[Migration], target: str, *, confirmed: bool) -> GotoResult:
        """Revert what is newer than `target` (only if `confirmed`), then apply what is
        pending up to it."""
        from herokumigrate.checks import Checks
        from herokumigrate.revert import newer_than, revert, unconfirmed

        version = _version(target, migrations)
        checks = Checks("goto", self.config, self.output)
        checks.files(migrations)
        with self._database_errors(), self._locked(migrations) as (ledger, state, runner):
            newer = newer_than(state, migrations, version)
            if newer and not confirmed:
                raise unconfirmed(
                    f"goto {version} would revert {len(newer)} migration(s) and may drop data",
                    newer,
                    fix=f"Run `heroku-migrate goto {version} --yes` to confirm.",
                )
            book = self._book(ledger, state, migrations, state.native)
            reverted = revert(runner, book, newer, transaction_mode=self.config.transaction)
            plan = checks.plan(self._plan(ledger, runner.session, migrations, version), migrations)
            session = runner.session
            applied = 0
            if not plan.nothing_to_do:
                applied = self._apply(session, ledger, plan, migrations)
        return GotoResult(version, len(reverted), applied)

    def force(self, migrations: list[Migration], target: str) -> ForceResult:
        """Record that exactly the files up to `target` are applied, running none of them."""
        from herokumigrate.revert import force

        version = _version(target, migrations)
        with self._database_errors(), self._locked(migrations) as (ledger, state, runner):
            fresh = ledger.native_tables.for_fresh_database(migrations, state.occupied)
            book = self._book(ledger, state, migrations, state.native or fresh)
            marked, forgot = force(runner.session.conn, book, state, migrations, version)
        created = book.native if state.native is None else None
        return ForceResult(version, marked, forgot, created)

    def resolve(self, migrations: list[Migration], target: str, outcome: Resolution) -> str:
        """Settle the failed migration `target` the tool's table records (revert.resolve),
        under the lock; returns the table's name, for the message."""
        from herokumigrate.revert import resolve

        version = _version(target, migrations)
        with self._database_errors(), self._locked(migrations) as (ledger, state, runner):
            native = resolve(
                runner.session.conn, ledger.history, state, migrations, version, outcome=outcome
            )
        return f"{native.table} ({native.tool})"

    def _rolls_back(self, plan: ReleasePlan, files: list[Migration], *, dry_run: bool) -> bool:
        """True when this release reverts migrations newer than its files (on_rollback); a
        dry run (`plan`) shows what it would revert whatever the setting."""
        from herokumigrate.config import OnRollback
        from herokumigrate.rollback import newer_than_files

        wanted = dry_run or self.config.on_rollback is OnRollback.REVERT
        return wanted and bool(newer_than_files(plan.state, files))

    def _roll_back(
        self,
        session: Session,
        ledger: Ledger,
        plan: ReleasePlan,
        files: list[Migration],
        *,
        dry_run: bool,
        observer: LockObserver | None,
    ) -> int:
        """Revert the migrations newer than every file with their stored downs, all or none
        (rollback.py); a dry run rehearses it in a transaction rolled back. How many."""
        from herokumigrate.config import OnRollback
        from herokumigrate.rollback import (
            read_rollback,
            refusal,
            rehearse_rollback,
            revert_rollback,
        )
        from herokumigrate.runner import UnitRunner

        rollback = read_rollback(session.conn, ledger.history, plan.state, files)
        revert = self.config.on_rollback is OnRollback.REVERT
        if rollback.blocked and (revert or not dry_run):
            raise refusal(rollback, files)
        runner = UnitRunner(session, self.output, sleep=self.sleep)
        if dry_run:
            return rehearse_rollback(runner, rollback, observer, setting=revert)
        book = self._book(ledger, plan.state, files, plan.state.native)
        return revert_rollback(runner, book, rollback.targets)

    def _plan(
        self,
        ledger: Ledger,
        session: Session,
        migrations: list[Migration],
        target: Version | None = None,
    ) -> ReleasePlan:
        """The plan against the history as read now."""
        from herokumigrate.plan import make_plan

        state = ledger.read(session.conn)
        fresh = ledger.native_tables.for_fresh_database(migrations, state.occupied)
        return make_plan(migrations, state, target=target, fresh_native=fresh)

    def _apply(
        self,
        session: Session,
        ledger: Ledger,
        plan: ReleasePlan,
        files: list[Migration],
        *,
        dry_run: bool = False,
        observer: LockObserver | None = None,
    ) -> int:
        """Apply `plan` (read under the lock); on failure, compensate and raise the error."""
        from herokumigrate.apply import Applier, RunFailed
        from herokumigrate.compensate import compensate, failure_error, headline
        from herokumigrate.signals import Interrupted

        history = ledger.history
        applier = Applier(session, history, self.config, self.output, files, sleep=self.sleep)
        try:
            if dry_run:
                return applier.rehearse(plan, observer)
            return applier.apply(plan)
        except Interrupted as stop:
            # The statement was cancelled and the transaction rolled back on the way here.
            raise self._interrupted(session, ledger, plan.state, stop) from None
        except RunFailed as failed:
            if dry_run:
                raise failure_error(failed, self.output, self.config, dry_run=True) from None
            report = None
            if failed.needs_compensation:
                book = self._book(ledger, plan.state, files, plan.native)
                report = compensate(applier.runner, book, plan.state, failed)
            logged = headline(failed, self.output)
            if report is not None:
                logged += " | " + " ".join(report)
            history.log_if_present(session.conn, "failed", self.output.redact(logged))
            raise failure_error(failed, self.output, self.config, report=report) from None

    def _interrupted(
        self, session: Session, ledger: Ledger, state: DatabaseState, stop: Interrupted
    ) -> Interrupted:
        """The interruption, with what the interrupted run committed: found in the history,
        not from memory (the signal may have come during a COMMIT); the event is logged."""
        import psycopg

        from herokumigrate.signals import settle

        with contextlib.suppress(psycopg.Error):
            settle(session.conn)  # a statement outside a transaction may still be in flight
            if session.lost:
                return stop
            if session.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                session.conn.rollback()
            now = ledger.history.read(session.conn) or {}
            before = state.recorded()
            committed = [
                f"{row.version}_{row.name} ({row.state.value})"
                for version, row in sorted(now.items())
                if before.get(version) != (row.state, row.progress)
            ]
            detail = f"{stop.name}: rolled back; committed before it: " + (
                ", ".join(committed) or "nothing"
            )
            ledger.history.log_if_present(session.conn, "interrupted", detail)
            return stop.with_committed(committed)
        return stop

    def _load(self) -> list[Migration]:
        from herokumigrate.source import load_migrations

        return load_migrations(self.config.migrations_dir, self.config.app_dir, self.config.tool)

    def _ledger(self, session: Session, fingerprint: Fingerprint) -> Ledger:
        """Our history (in the files' version syntax) and the tool's table, for `session`."""
        from herokumigrate.native_tables import NativeTables

        config = self.config
        history = HistoryTable(config.history_schema, config.history_table, fingerprint.syntax)
        return Ledger(history, NativeTables.from_settings(config, session.target))

    @staticmethod
    def _book(
        ledger: Ledger, state: DatabaseState, files: list[Migration], native: NativeTable | None
    ) -> Bookkeeping:
        """The bookkeeping of a run that starts from `state`, keeping `native` in sync."""
        from herokumigrate.recording import Bookkeeping

        return Bookkeeping(ledger.history, native, state.search_path, files)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        """A session, closed (its lock released) at the end."""
        session = self.open_session(self.config, self.output)
        try:
            yield session
        finally:
            session.close()

    @contextlib.contextmanager
    def _locked(
        self, migrations: list[Migration]
    ) -> Iterator[tuple[Ledger, DatabaseState, UnitRunner]]:
        """A session holding the migration lock, the history read under it, and the runner."""
        from herokumigrate.runner import UnitRunner

        with self._session() as session:
            session.require_writable()
            session.lock()
            ledger = self._ledger(session, Fingerprint.of(migrations))
            ledger.history.require_privileges(session.conn)
            state = ledger.read(session.conn)
            yield ledger, state, UnitRunner(session, self.output, sleep=self.sleep)

    @contextlib.contextmanager
    def _database_errors(self) -> Iterator[None]:
        """Turn an unexpected database error into an explained one (redacted)."""
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise database_error(exc, self.output) from None


def _status_entry(m: Migration, plan: ReleasePlan, tool: ToolName | None) -> StatusEntry:
    """What the history says of one file."""
    row = plan.state.rows.get(m.version)
    kind: StatusKind
    if m in plan.adopt:
        kind = "adopted"
    elif row is None:
        kind = "pending"
    elif row.state is HistoryState.PARTIAL:
        kind = "partial"
    elif m in plan.changed:
        kind = "changed"
    else:
        kind = "applied"
    return StatusEntry(m, kind, row, tool if kind == "adopted" else None)


def _version(text: str, migrations: list[Migration]) -> Version:
    """The version `goto`/`force` name, in the files' syntax (`0`: none of them)."""
    from herokumigrate.formats import syntax_of

    try:
        return syntax_of(migrations).parse(text)
    except ValueError as exc:
        raise BadInput(
            f"{exc}",
            fix="Pick a version from `heroku-migrate status`, or 0 for none "
            "(`heroku-migrate --help`).",
        ) from None


def database_error(exc: Exception, output: Output) -> MigrateError:
    """The explained error for a database error no step expected (redacted, one line)."""
    from psycopg import errors as pg_errors

    text = " ".join(output.redact(str(exc)).split())
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return BadInput(
            f"the database role may not do this: {text}",
            fix="Connect as the database owner (Heroku's DATABASE_URL credentials are), or "
            "GRANT the role rights on the history and migrated tables.",
        )
    return MigrationFailed(
        f"database error: {text}",
        fix="Nothing was committed by the failed statement; check the database and retry.",
    )


def _up_to_date(migrations: list[Migration], state: DatabaseState) -> UpResult:
    return UpResult(
        0, up_to_date=True, recorded=sum(1 for m in migrations if m.version in state.rows)
    )
