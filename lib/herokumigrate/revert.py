"""Reverting: `down`, the revert half of `goto`, `force`, and the downs of migrations run unit
by unit (the runner's routine), shared with compensation after a failed `up`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herokumigrate.config import TransactionMode
from herokumigrate.errors import BadInput, MigrationFailed
from herokumigrate.history import HistoryState
from herokumigrate.native import AppliedMigration, NativeChange
from herokumigrate.plan import Unit, build_units
from herokumigrate.recording import RecordFailed
from herokumigrate.signals import transaction
from herokumigrate.statements import StepFailed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from herokumigrate.history import HistoryRow, HistoryTable
    from herokumigrate.ledger import DatabaseState
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable, Resolution
    from herokumigrate.output import Output
    from herokumigrate.plan import Step
    from herokumigrate.recording import Bookkeeping
    from herokumigrate.runner import UnitRunner
    from herokumigrate.session import Conn
    from herokumigrate.versions import Version


def run_downs(
    runner: UnitRunner,
    book: Bookkeeping,
    targets: list[Migration],
    *,
    per_migration: bool,
    done: list[Migration],
    output: Output | None = None,
    committed: list[Unit] | None = None,
    forget_after_alone: bool = False,
) -> None:
    """Run the downs of `targets` in this order, each migration forgotten (and the native
    table following what our history then holds) in the transaction of its last statement.

    Appends every reverted migration to `done`, so that a caller knows how far a failure got;
    with `output`, says "reverted <label>" for each; appends each committed unit to
    `committed`. Units run as in `up` (runner.py: lock retries, timeouts). With
    `forget_after_alone`, a migration whose down ends with a statement outside a transaction
    is forgotten right after it, not with the next migration's statements. Raises StepFailed,
    or RecordFailed when forgetting a migration fails.
    """
    items = [(m, m.down, 0) for m in targets if m.down is not None]
    records = _DownRecords(book, done, output)
    units = build_units(items, per_migration)
    if forget_after_alone:
        units = _forgotten_after_alone(units)
    for unit in units:
        runner.run(unit, records)
        if committed is not None:
            committed.append(unit)


def _forgotten_after_alone(units: list[Unit]) -> list[Unit]:
    """`units`, each migration whose last statement runs alone finished in a unit of its own
    (its bookkeeping only) right after that statement."""
    result: list[Unit] = []
    for unit in units:
        previous = result[-1].alone if result else None
        m = previous.migration if previous is not None else None
        if (
            m is not None
            and m in unit.finishes
            and unit.spans
            and all(span.migration is not m for span in unit.spans)
        ):
            result.append(Unit(finishes=[m], reader=unit.reader))
            unit.finishes.remove(m)
        result.append(unit)
    return result


class _DownRecords:
    """The downs' bookkeeping (runner.UnitRecords): a unit forgets the migrations it
    finishes, in its transaction."""

    def __init__(self, book: Bookkeeping, done: list[Migration], output: Output | None) -> None:
        self.book = book
        self.done = done
        self.output = output

    def at_start(self, conn: Conn, unit: Unit) -> None:
        """Nothing before a down's statements."""

    def after_statements(self, conn: Conn, unit: Unit, spent: dict[Version, float]) -> None:
        if unit.finishes:
            # The native table follows what our table holds now, not a reading from before
            # the run (which lacks what this run adopted or applied).
            self.book.forget(conn, unit.finishes, "removal from the history")

    def committed(self, unit: Unit, spent: dict[Version, float]) -> None:
        for m in unit.finishes:
            self.done.append(m)
            if self.output is not None:
                self.output.detail(f"reverted {m.revert_label}")

    def before_alone(self, conn: Conn, step: Step) -> bool:
        return False  # a down's progress outside a transaction is not recorded

    def alone_failed(self, conn: Conn, step: Step) -> None:
        """Nothing to forget."""

    def alone_ran(self, conn: Conn, step: Step, ms: float) -> None:
        """Nothing to record."""


def unconfirmed(message: str, targets: list[Migration], fix: str) -> BadInput:
    """The refusal of a revert not confirmed with `--yes`, listing what it would revert (a
    down that reverts nothing is said to)."""
    shown = ", ".join(m.revert_label for m in targets[:10])
    more = f" and {len(targets) - 10} more" if len(targets) > 10 else ""
    return BadInput(message, details=(f"It would revert, newest first: {shown}{more}.",), fix=fix)


def newest_applied(
    state: DatabaseState, migrations: list[Migration], count: int
) -> list[Migration]:
    """The `count` newest recorded migrations, newest first, each checked revertible."""
    by_version = {m.version: m for m in migrations}
    versions = sorted(_versioned(state.rows, migrations), reverse=True)[:count]
    return [revertible(v, by_version, state.rows) for v in versions]


def _versioned(versions: Iterable[Version], migrations: list[Migration]) -> list[Version]:
    """`versions` less those of repeatable and baseline migrations (Flyway's R__ and B files),
    which have no place in the line of versions that `down`, `goto` and `force` move along."""
    aside = {m.version for m in migrations if m.repeatable or m.baseline}
    return [v for v in versions if v not in aside]


def newer_than(
    state: DatabaseState, migrations: list[Migration], version: Version
) -> list[Migration]:
    """The recorded migrations newer than `version`, newest first, each checked revertible."""
    by_version = by_version_checked(migrations, version)
    newer = sorted((v for v in _versioned(state.rows, migrations) if v > version), reverse=True)
    return [revertible(v, by_version, state.rows) for v in newer]


def revertible(
    version: Version, by_version: dict[Version, Migration], rows: dict[Version, HistoryRow]
) -> Migration:
    """The migration of a recorded `version`, if it can be reverted; BadInput says why not."""
    m = by_version.get(version)
    if m is None:
        raise BadInput(
            f"version {version} is applied but its file is not in the migrations folder",
            fix="Restore the file (git log --all -- db/migrations), or use "
            "`heroku-migrate force VERSION` to only change the record.",
        )
    if m.down is None:
        downless = m.format in ("prisma", "flyway")  # the tool keeps no downs (Community)
        raise BadInput(
            f"{m.filename}: has no down migration, so it cannot be reverted",
            fix="Undo it in a new migration (heroku-migrate new NAME), as "
            f"{m.format} itself would; or use `heroku-migrate force VERSION` to only change "
            "the record."
            if downless
            else "Write its down SQL (a .down.sql file or a '-- migrate:down' section).",
        )
    if rows[version].state is HistoryState.PARTIAL:
        raise BadInput(
            f"{m.filename}: is only partly applied",
            fix="Run `heroku-migrate up` to finish it, or repair by hand and use "
            "`heroku-migrate force VERSION`.",
        )
    return m


def revert(
    runner: UnitRunner,
    book: Bookkeeping,
    targets: list[Migration],
    *,
    transaction_mode: TransactionMode,
) -> list[Migration]:
    """Run the downs of `targets`, newest first; MigrationFailed says how far it got."""
    if not targets:
        return []
    output, history = runner.output, book.history
    output.step(f"Reverting {len(targets)} migration(s), newest first")
    done: list[Migration] = []
    per_migration = transaction_mode is TransactionMode.MIGRATION
    try:
        run_downs(runner, book, targets, per_migration=per_migration, done=done, output=output)
    except (StepFailed, RecordFailed) as exc:
        headline = exc.describe()
        history.log_if_present(runner.session.conn, "down failed", output.redact(headline))
        still = ", ".join(m.label for m in targets if m not in done)
        raise MigrationFailed(
            headline,
            details=(
                f"Reverted before the failure: {', '.join(m.label for m in done) or 'none'}.",
                f"Still applied: {still}.",
            ),
            fix="Fix the down migration and run the command again.",
        ) from None
    conn = runner.session.conn
    with transaction(conn):
        history.log(conn, "down", "reverted " + ", ".join(str(m.version) for m in done))
    return done


def force(
    conn: Conn,
    book: Bookkeeping,
    state: DatabaseState,
    migrations: list[Migration],
    version: Version,
) -> tuple[int, int]:
    """Record that exactly the files up to `version` are applied, running no SQL of theirs.
    The native tool's table follows (`book`); where there is none, `book`'s is created first,
    as `up` would on a fresh database. Returns (marked applied, forgotten)."""
    by_version_checked(migrations, version)
    history = book.history
    with transaction(conn):
        history.create(conn)
        if state.native is None and book.native is not None:
            book.native.create(conn)
        drop = [v for v in _versioned(state.rows, migrations) if v > version]
        history.delete(conn, drop)
        mark = [
            m
            for m in migrations
            if m.version <= version
            and not (m.repeatable or m.baseline)
            and (
                m.version not in state.rows
                or state.rows[m.version].state is not HistoryState.APPLIED
            )
        ]
        history.record_applied(conn, ((m, 0.0) for m in mark), "forced")
        applied = {v for v in state.rows if v <= version} | {m.version for m in mark}
        created = state.native is None
        marked = book.with_files(applied) if created else [AppliedMigration(m, 0.0) for m in mark]
        book.follow(conn, NativeChange(frozenset(applied), marked, drop), read_back=False)
        history.log(
            conn, "forced", f"recorded version {version}: marked {len(mark)}, forgot {len(drop)}"
        )
    return len(mark), len(drop)


def resolve(
    conn: Conn,
    history: HistoryTable,
    state: DatabaseState,
    migrations: list[Migration],
    version: Version,
    *,
    outcome: Resolution,
) -> NativeTable:
    """Settle the failure the tool's table records for `version` as the tool's own repair
    does (`NativeTable.resolve`), and our history with it: applied, it is recorded as applied;
    rolled back, its partial row is forgotten (the next `up` applies it). Runs no SQL of the
    migration. BadInput when the table records no failure of `version`."""
    native = state.native
    failure = native.failure() if native is not None else None
    if native is None or failure is None:
        raise BadInput(
            "no failed migration to resolve: "
            + (f"{native.table} ({native.tool}) records none" if native else "no tool's table"),
            fix="Run `heroku-migrate status` to see the state; `force VERSION` records one.",
        )
    if failure.version != version:
        raise BadInput(
            f"{native.table} ({native.tool}) records the failure of {failure.version}, not "
            f"{version}",
            fix=f"Run `heroku-migrate resolve {failure.version} --applied` (or --rolled-back).",
        )
    migration = next((m for m in migrations if m.version == version), None)
    with transaction(conn):
        history.create(conn)
        native.resolve(conn, version, outcome)
        if outcome == "applied" and migration is not None:
            history.record_applied(conn, [(migration, 0.0)], "resolved")
        else:
            history.delete(conn, [version])
        history.log(conn, "resolved", f"{version} {outcome} in {native.table}")
    return native


NO_VERSION = "0"  # `goto 0`, `force 0`: none of the migrations


def by_version_checked(migrations: list[Migration], version: Version) -> dict[Version, Migration]:
    """Migrations by version, after checking that `version` is one of them (or 0: none)."""
    by_version = {m.version: m for m in migrations}
    if version.canonical != NO_VERSION and version not in by_version:
        raise BadInput(
            f"version {version} is not one of the migration files",
            fix="Pick a version from `heroku-migrate status`, or 0 for none.",
        )
    return by_version
