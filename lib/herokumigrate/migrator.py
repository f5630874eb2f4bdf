"""The core API: each command as a method that returns a result, holding the sequence that
makes it safe (connect, lock, re-read the history under the lock, re-plan, run).

The CLI renders the results; progress lines are printed here, as the run goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Literal, NamedTuple

from herokumigrate.errors import BadInput, MigrateError, MigrationFailed
from herokumigrate.history import HistoryState, HistoryTable
from herokumigrate.session import Session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from herokumigrate.config import Config
    from herokumigrate.database import Target
    from herokumigrate.history import DatabaseState, HistoryRow, LogEvent
    from herokumigrate.locks import LockObserver, MigrationLocks
    from herokumigrate.native import NativeHistory, NativeTables, NativeToolName
    from herokumigrate.output import Output
    from herokumigrate.plan import ReleasePlan
    from herokumigrate.planlint import PendingLint
    from herokumigrate.signals import Interrupted
    from herokumigrate.source import Migration

StatusKind = Literal["pending", "partial", "applied", "adopted", "changed"]


class UpResult(NamedTuple):
    """What `up`/`plan` did. `applied` counts this run's migrations (0 for a dry run);
    `up_to_date` means there was nothing to do, `recorded` then how many are applied."""

    applied: int
    up_to_date: bool = False
    recorded: int = 0


class PlanReport(NamedTuple):
    """What `plan` saw: `result` None when the rehearsal failed with `failure` (in `failed`,
    when a migration's statement did); `migrations` lists every pending one, in order, with
    its locks; `lint` is None when it did not run (nothing pending, or not asked)."""

    result: UpResult | None
    migrations: list[MigrationLocks]
    lint: PendingLint | None
    failure: MigrationFailed | None = None
    failed: Migration | None = None


class DownResult(NamedTuple):
    """The migrations `down` reverted, newest first."""

    reverted: list[Migration]


class GotoResult(NamedTuple):
    """`goto VERSION`: how many migrations were reverted, then applied."""

    version: int
    reverted: int
    applied: int


class ForceResult(NamedTuple):
    """`force VERSION`: how many migrations were marked applied, and forgotten; the native
    tool's table it created (the database had none)."""

    version: int
    marked: int
    forgot: int
    created: NativeHistory | None = None


class StatusEntry(NamedTuple):
    """One migration file and what the history says of it."""

    migration: Migration
    kind: StatusKind
    row: HistoryRow | None  # None: never recorded by us
    tool: NativeToolName | None = None  # for "adopted": the tool that applied it


class StatusReport(NamedTuple):
    """Everything `status` shows."""

    entries: list[StatusEntry]
    unknown: list[HistoryRow]  # recorded, but not in these files
    pending: list[int]
    legacy: NativeToolName | None
    events: list[LogEvent]
    # The native table's disagreement (or golang-migrate's dirty row) `up` refuses, as the
    # lines of its error; None when it agrees.
    native_problem: tuple[str, ...] | None = None


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
        self.history = HistoryTable(config.history_schema, config.history_table)

    def up(
        self,
        migrations: list[Migration] | None,
        *,
        dry_run: bool,
        fingerprint: list[tuple[int, str]] | None = None,
        observer: LockObserver | None = None,
    ) -> UpResult:
        """`up` (or `plan` with `dry_run`, shown to `observer`). `migrations` may be None when
        the build's manifest gave the `fingerprint`: the files are then read only if the quick
        check finds work."""
        if fingerprint is None:
            assert migrations is not None
            fingerprint = [(m.version, m.checksum) for m in migrations]
        with self._database_errors(), self._session() as session:
            # Most releases have nothing to apply: one query answers them.
            if self.history.matches(session.conn, fingerprint):
                return UpResult(0, up_to_date=True, recorded=len(fingerprint))
            # Only now: a release with nothing to do never imports the rest of the core.
            from herokumigrate.plan import check_plan, make_plan
            from herokumigrate.source import load_migrations, validate

            if migrations is None:
                migrations = load_migrations(self.config.migrations_dir, self.config.app_dir)
            self._spell(migrations)
            state = self.history.read(session.conn)
            plan = make_plan(migrations, state)
            for warning in check_plan(plan, migrations, allow_changed=self.config.allow_changed):
                self.output.warn(*warning)
            if plan.nothing_to_do:
                return _up_to_date(migrations, state)
            # Every pending file, down sections included (compensation may need them), is
            # sound before anything is locked or written.
            validate(plan.pending)
            checked = set(plan.pending)
            session.lock()
            # Re-read under the lock: another runner may have applied them meanwhile.
            state = self.history.read(session.conn)
            plan = make_plan(migrations, state)
            if plan.nothing_to_do:
                return _up_to_date(migrations, state)
            check_plan(plan, migrations, allow_changed=self.config.allow_changed)  # warned above
            # Files are read once: only a migration pending now and not before needs checking.
            validate([m for m in plan.pending if m not in checked])
            return UpResult(self._apply(session, state, plan, dry_run=dry_run, observer=observer))

    def plan(self, migrations: list[Migration], *, lint: bool = True) -> PlanReport:
        """`plan`: rehearse `up` in a transaction that is rolled back, noting the locks each
        pending migration takes; with `lint`, check exactly the pending ones (where pglast is
        here). A failed rehearsal is reported in the result, not raised."""
        from herokumigrate.locks import LockObserver

        history = self.history
        observer = LockObserver(history.schema, [history.table, history.table + "_log"])
        failure: MigrationFailed | None = None
        result: UpResult | None = None
        try:
            result = self.up(migrations, dry_run=True, observer=observer)
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
        return PlanReport(result, pending, checked, failure, failed)

    def status(self, migrations: list[Migration]) -> StatusReport:
        """What is applied, pending, partial or changed, and the newest log events."""
        from herokumigrate.native import NativeConflict
        from herokumigrate.plan import make_plan

        with self._database_errors(), self._session() as session:
            state = self.history.read(session.conn)
            events = self.history.last_events(session.conn) if state.exists else []
        native_problem: NativeConflict | None = None
        try:
            plan = make_plan(migrations, state)
        except NativeConflict as conflict:
            # `up` refuses; status is exactly when the user needs to see it.
            native_problem = conflict
            plan = make_plan(migrations, dataclasses.replace(state, legacy=None))
        changed = {m.version for m in plan.changed}
        adopted = {m.version for m in plan.adopt}
        tool = state.legacy.tool if state.legacy else None
        entries = []
        for m in migrations:
            row = state.rows.get(m.version)
            kind: StatusKind
            if m.version in adopted:
                kind = "adopted"
            elif row is None:
                kind = "pending"
            elif row.state is HistoryState.PARTIAL:
                kind = "partial"
            elif m.version in changed:
                kind = "changed"
            else:
                kind = "applied"
            entries.append(StatusEntry(m, kind, row, tool if kind == "adopted" else None))
        unknown = [state.rows[v] for v in plan.unknown]
        pending = [m.version for m in plan.pending]
        problem = tuple(native_problem.lines()) if native_problem is not None else None
        return StatusReport(entries, unknown, pending, tool, events, problem)

    def down(self, migrations: list[Migration], count: int, *, confirmed: bool) -> DownResult:
        """Revert the `count` newest applied migrations, newest first (only if `confirmed`)."""
        from herokumigrate.revert import newest_applied, revert, unconfirmed

        with self._database_errors(), self._locked() as (session, state):
            self._spell(migrations)
            targets = newest_applied(state, migrations, count)
            if targets and not confirmed:
                raise unconfirmed(
                    f"down {count} reverts migrations and may drop tables and their data",
                    targets,
                    fix=f"Run `heroku-migrate down {count} --yes` to confirm.",
                )
            done = revert(
                session,
                self.history,
                state,
                targets,
                per_migration=self.config.transaction == "migration",
                output=self.output,
            )
        return DownResult(done)

    def goto(self, migrations: list[Migration], version: int, *, confirmed: bool) -> GotoResult:
        """Revert what is newer than `version` (only if `confirmed`), then apply what is
        pending up to it."""
        from herokumigrate.plan import make_plan
        from herokumigrate.revert import newer_than, revert, unconfirmed

        with self._database_errors(), self._locked() as (session, state):
            self._spell(migrations)
            newer = newer_than(state, migrations, version)
            if newer and not confirmed:
                raise unconfirmed(
                    f"goto {version} would revert {len(newer)} migration(s) and may drop data",
                    newer,
                    fix=f"Run `heroku-migrate goto {version} --yes` to confirm.",
                )
            reverted = revert(
                session,
                self.history,
                state,
                newer,
                per_migration=self.config.transaction == "migration",
                output=self.output,
            )
            after = self.history.read(session.conn)
            plan = make_plan(migrations, after, target=version)
            applied = 0 if plan.nothing_to_do else self._apply(session, after, plan)
        return GotoResult(version, len(reverted), applied)

    def force(self, migrations: list[Migration], version: int) -> ForceResult:
        """Record that exactly the files up to `version` are applied, running none of them."""
        from herokumigrate.revert import force

        with self._database_errors(), self._locked() as (session, state):
            self._spell(migrations)
            marked, forgot, created = force(session, self.history, state, migrations, version)
        return ForceResult(version, marked, forgot, created)

    def _apply(
        self,
        session: Session,
        state: DatabaseState,
        plan: ReleasePlan,
        *,
        dry_run: bool = False,
        observer: LockObserver | None = None,
    ) -> int:
        """Apply `plan` (read under the lock); on failure, compensate and raise the error."""
        from herokumigrate.apply import Applier, RunFailed
        from herokumigrate.compensate import compensate, failure_error, headline
        from herokumigrate.signals import Interrupted

        applier = Applier(session, self.history, state, self.config, self.output, sleep=self.sleep)
        try:
            return applier.apply(plan, dry_run=dry_run, observer=observer)
        except Interrupted as stop:
            # The statement was cancelled and the transaction rolled back on the way here.
            self._record_interruption(session, state, stop)
            raise
        except RunFailed as failed:
            if dry_run:
                raise failure_error(failed, self.output, self.config, dry_run=True) from None
            report = (
                compensate(session, self.history, state, failed)
                if failed.needs_compensation
                else None
            )
            logged = headline(failed, self.output)
            if report is not None:
                logged += " | " + " ".join(report)
            self.history.log_if_present(session.conn, "failed", self.output.redact(logged))
            raise failure_error(failed, self.output, self.config, report=report) from None

    def _spell(self, migrations: list[Migration]) -> None:
        """Tell the native table how the files write each version (dbmate keeps "001")."""
        self.history.native.spelling.update(
            (m.version, m.version_text) for m in migrations if m.version_text
        )

    def _record_interruption(
        self, session: Session, state: DatabaseState, stop: Interrupted
    ) -> None:
        """Find what the interrupted run committed (from the history, not from memory: the
        signal may have come during a COMMIT), and log the event."""
        import psycopg

        from herokumigrate.signals import settle

        with contextlib.suppress(psycopg.Error):
            settle(session.conn)  # a statement outside a transaction may still be in flight
            if session.lost:
                return
            if session.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                session.conn.rollback()
            now = self.history.read(session.conn)
            before = state.recorded()
            stop.committed = [
                f"{row.version}_{row.name} ({row.state.value})"
                for version, row in sorted(now.rows.items())
                if before.get(version) != (row.state, row.progress)
            ]
            detail = f"{stop.name}: rolled back; committed before it: " + (
                ", ".join(stop.committed) or "nothing"
            )
            self.history.log_if_present(session.conn, "interrupted", detail)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        """A session, closed (its lock released) at the end."""
        session = self.open_session(self.config, self.output)
        self.history.native = native_tables(self.config, session.target)
        try:
            yield session
        finally:
            session.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[Session, DatabaseState]]:
        """A session holding the migration lock, and the history read under it."""
        with self._session() as session:
            session.lock()
            yield session, self.history.read(session.conn)

    @contextlib.contextmanager
    def _database_errors(self) -> Iterator[None]:
        """Turn an unexpected database error into an explained one (redacted)."""
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise database_error(exc, self.output) from None


def native_tables(config: Config, target: Target | None) -> NativeTables:
    """Where the native tool's table is: the `migrations_table` setting, else golang-migrate's
    `x-migrations-table` URL parameter, else the names DBMATE_MIGRATIONS_TABLE and GOOSE_TABLE
    give their tools' tables, else the tools' defaults."""
    from herokumigrate.config import qualified_parts
    from herokumigrate.native import NativeName, NativeTables

    parts = config.migrations_table_parts
    if parts is not None:
        return NativeTables(NativeName(parts[1], parts[0]))
    if target is not None and target.migrations_table is not None:
        named = target.migrations_table
        return NativeTables(NativeName(named.name, named.schema))
    by_tool: dict[NativeToolName, NativeName] = {}
    for tool, name in config.tool_tables:
        schema, table = qualified_parts(name)
        by_tool[tool] = NativeName(table, schema)  # type: ignore[index]
    return NativeTables(by_tool=by_tool)


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
