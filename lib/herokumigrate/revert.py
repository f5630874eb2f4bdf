"""Reverting: `down`, the revert half of `goto`, `force`, and the one routine that runs downs,
shared with compensation after a failed `up`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput, MigrationFailed
from herokumigrate.history import HistoryState
from herokumigrate.plan import build_units
from herokumigrate.recording import RecordFailed, recording
from herokumigrate.statements import StepFailed, execute

if TYPE_CHECKING:
    from herokumigrate.history import DatabaseState, HistoryRow, HistoryTable
    from herokumigrate.output import Output
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
    with `output`, says "reverted <label>" for each. Raises StepFailed, or RecordFailed when
    forgetting a migration fails.
    """
    items = [(m, m.down, 0) for m in targets if m.down is not None]
    for unit in build_units(items, per_migration):
        conn = session.conn
        if unit.alone is not None:
            with session.timeouts_outside_transaction(unit.alone):
                execute(conn, unit.alone)
            continue
        gone = {m.version for m in unit.finishes}
        with conn.transaction():
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
        for m in unit.finishes:
            done.append(m)
            if output is not None and m.reverts_nothing:
                output.detail(f"reverted {m.label} (its down is empty: recorded only, nothing run)")
            elif output is not None:
                output.detail(f"reverted {m.label}")


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
    with conn.transaction():
        history.log(conn, "down", "reverted " + ", ".join(str(m.version) for m in done))
    return done


def force(
    session: Session,
    history: HistoryTable,
    state: DatabaseState,
    migrations: list[Migration],
    version: int,
) -> tuple[int, int]:
    """Record that exactly the files up to `version` are applied, running no SQL of theirs.
    Returns (marked applied, forgotten)."""
    by_version_checked(migrations, version)
    conn = session.conn
    with conn.transaction():
        history.create(conn)
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
        history.sync_legacy(conn, state.legacy, applied)
        history.log(
            conn, "forced", f"recorded version {version}: marked {len(mark)}, forgot {len(drop)}"
        )
    return len(mark), len(drop)


def by_version_checked(migrations: list[Migration], version: int) -> dict[int, Migration]:
    """Migrations by version, after checking that `version` is one of them (or 0: none)."""
    by_version = {m.version: m for m in migrations}
    if version != 0 and version not in by_version:
        raise BadInput(
            f"version {version} is not one of the migration files",
            fix="Pick a version from `heroku-migrate status`, or 0 for none.",
        )
    return by_version
