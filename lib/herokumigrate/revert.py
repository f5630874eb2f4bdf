"""Reverting: `down`, the revert half of `goto`, `force`, and the one routine that runs downs,
shared with compensation after a failed `up`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput, MigrationFailed
from herokumigrate.history import HistoryState
from herokumigrate.lockretry import with_lock_retries
from herokumigrate.plan import build_units
from herokumigrate.recording import RecordFailed, recording
from herokumigrate.signals import transaction
from herokumigrate.statements import StepFailed, execute

if TYPE_CHECKING:
    from herokumigrate.history import DatabaseState, HistoryRow, HistoryTable
    from herokumigrate.native import NativeHistory
    from herokumigrate.output import Output
    from herokumigrate.plan import Unit
    from herokumigrate.session import Session
    from herokumigrate.source import Migration


def run_downs(
    session: Session,
    history: HistoryTable,
    state: DatabaseState,
    targets: list[Migration],
    *,
    per_migration: bool,
    done: list[Migration],
    output: Output | None = None,
) -> None:
    """Run the downs of `targets` in this order, each migration forgotten (and the legacy
    table synced with what our history then holds) in the transaction of its last statement.

    Appends every reverted migration to `done`, so that a caller knows how far a failure got;
    with `output`, says "reverted <label>" for each. A lock timeout or deadlock is retried as
    in `up`. Raises StepFailed, or RecordFailed when forgetting a migration fails.
    """
    items = [(m, m.down, 0) for m in targets if m.down is not None]
    for unit in build_units(items, per_migration):
        # Like `up`: short, growing lock waits with pauses between, so that the app's queries
        # on the table are not kept waiting behind a down's lock request (lockretry.py).
        attempt = functools.partial(_run_down_unit, session, history, state, unit)
        with_lock_retries(session, session.output, attempt)
        for m in unit.finishes:
            done.append(m)
            if output is not None:
                output.detail(f"reverted {m.revert_label}")


def unconfirmed(message: str, targets: list[Migration], fix: str) -> BadInput:
    """The refusal of a revert not confirmed with `--yes`, listing what it would revert (a
    down that reverts nothing is said to)."""
    shown = ", ".join(m.revert_label for m in targets[:10])
    more = f" and {len(targets) - 10} more" if len(targets) > 10 else ""
    return BadInput(message, details=(f"It would revert, newest first: {shown}{more}.",), fix=fix)


def _run_down_unit(
    session: Session, history: HistoryTable, state: DatabaseState, unit: Unit
) -> None:
    """One commit unit of downs; the migrations it finishes are forgotten in its transaction."""
    conn = session.conn
    if unit.alone is not None:
        with session.timeouts_outside_transaction(unit.alone):
            execute(conn, unit.alone)
        return
    gone = {m.version for m in unit.finishes}
    with transaction(conn):
        session.set_local_timeouts()
        previous = unit.spans[0].migration if unit.spans else None
        for step in unit.steps():
            if step.migration is not previous:
                session.set_local_timeouts()  # a down's own SET must not disarm the next
                previous = step.migration
            execute(conn, step)
        if gone:
            # The native table follows what our table holds now, not a reading from
            # before the run (which lacks what this run adopted or applied).
            with recording(unit.finishes, "removal from the history"):
                history.delete(conn, gone)
                history.sync_legacy(conn, state.legacy)


def newest_applied(
    state: DatabaseState, migrations: list[Migration], count: int
) -> list[Migration]:
    """The `count` newest recorded migrations, newest first, each checked revertible."""
    by_version = {m.version: m for m in migrations}
    versions = sorted(state.rows, reverse=True)[:count]
    return [revertible(v, by_version, state.rows) for v in versions]


def newer_than(state: DatabaseState, migrations: list[Migration], version: int) -> list[Migration]:
    """The recorded migrations newer than `version`, newest first, each checked revertible."""
    by_version = by_version_checked(migrations, version)
    newer = sorted((v for v in state.rows if v > version), reverse=True)
    return [revertible(v, by_version, state.rows) for v in newer]


def revertible(
    version: int, by_version: dict[int, Migration], rows: dict[int, HistoryRow]
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
        raise BadInput(
            f"{m.filename}: has no down migration, so it cannot be reverted",
            fix="Write its down SQL (a .down.sql file or a '-- migrate:down' section).",
        )
    if rows[version].state is HistoryState.PARTIAL:
        raise BadInput(
            f"{m.filename}: is only partly applied",
            fix="Run `heroku-migrate up` to finish it, or repair by hand and use "
            "`heroku-migrate force VERSION`.",
        )
    return m


def revert(
    session: Session,
    history: HistoryTable,
    state: DatabaseState,
    targets: list[Migration],
    *,
    per_migration: bool,
    output: Output,
) -> list[Migration]:
    """Run the downs of `targets`, newest first; MigrationFailed says how far it got."""
    if not targets:
        return []
    output.step(f"Reverting {len(targets)} migration(s), newest first")
    done: list[Migration] = []
    try:
        run_downs(
            session, history, state, targets, per_migration=per_migration, done=done, output=output
        )
    except (StepFailed, RecordFailed) as exc:
        headline = exc.describe()
        history.log_if_present(session.conn, "down failed", output.redact(headline))
        still = ", ".join(m.label for m in targets if m not in done)
        raise MigrationFailed(
            headline,
            details=(
                f"Reverted before the failure: {', '.join(m.label for m in done) or 'none'}.",
                f"Still applied: {still}.",
            ),
            fix="Fix the down migration and run the command again.",
        ) from None
    conn = session.conn
    with transaction(conn):
        history.log(conn, "down", "reverted " + ", ".join(str(m.version) for m in done))
    return done


def force(
    session: Session,
    history: HistoryTable,
    state: DatabaseState,
    migrations: list[Migration],
    version: int,
) -> tuple[int, int, NativeHistory | None]:
    """Record that exactly the files up to `version` are applied, running no SQL of theirs.
    The native tool's table follows; where there is none, it is created first, as `up` would
    on a fresh database. Returns (marked applied, forgotten, the native table created)."""
    by_version_checked(migrations, version)
    conn = session.conn
    legacy = state.legacy
    created = None if legacy is not None else state.native_tables.for_fresh_database(migrations)
    with transaction(conn):
        history.create(conn)
        if created is not None:
            created.create(conn)
            legacy = created
        drop = [v for v in state.rows if v > version]
        history.delete(conn, drop)
        mark = [
            m
            for m in migrations
            if m.version <= version
            and (
                m.version not in state.rows
                or state.rows[m.version].state is not HistoryState.APPLIED
            )
        ]
        history.record_applied(conn, ((m, 0.0) for m in mark), "forced")
        applied = {v for v in state.rows if v <= version} | {m.version for m in mark}
        history.sync_legacy(conn, legacy, applied)
        history.log(
            conn, "forced", f"recorded version {version}: marked {len(mark)}, forgot {len(drop)}"
        )
    return len(mark), len(drop), created


def by_version_checked(migrations: list[Migration], version: int) -> dict[int, Migration]:
    """Migrations by version, after checking that `version` is one of them (or 0: none)."""
    by_version = {m.version: m for m in migrations}
    if version != 0 and version not in by_version:
        raise BadInput(
            f"version {version} is not one of the migration files",
            fix="Pick a version from `heroku-migrate status`, or 0 for none.",
        )
    return by_version
