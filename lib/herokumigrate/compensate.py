"""After a failed run: undo what it committed, and explain the failure.

Compensation drops an INVALID index a failed concurrent build left, then runs the `down` of
every migration this run applied, newest first (the downs routine of `revert`). Nothing older
is ever touched. `failure_error` then builds the error the user sees, with the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from herokumigrate.errors import MigrationFailed
from herokumigrate.indexes import drop_new_invalid_indexes
from herokumigrate.revert import run_downs
from herokumigrate.statements import StepFailed, connection_lost, one_line

if TYPE_CHECKING:
    from herokumigrate.apply import RunFailed
    from herokumigrate.config import Config
    from herokumigrate.history import DatabaseState, HistoryTable
    from herokumigrate.output import Output
    from herokumigrate.session import Session
    from herokumigrate.source import Migration


def compensate(
    session: Session,
    history: HistoryTable,
    state: DatabaseState,
    failed: RunFailed,
) -> list[str]:
    """Undo what the failed run committed: INVALID indexes, then downs newest first.

    Reconnects (and re-locks) first if the connection was lost, then re-reads the history:
    if another run changed it in the gap, nothing is compensated (its work would be undone).
    Returns the report, one line per thing done or left; never raises for a database error.
    """
    committed = failed.committed
    lines: list[str] = []
    try:
        if session.reconnect_if_lost() and history.read(session.conn).recorded() != failed.expected:
            return [
                "the history changed while the connection was lost: another run took the "
                "migration lock meanwhile, so nothing was compensated (that could undo its work)",
                "STATE LEFT: this run's progress stays recorded as it was (partial rows "
                "included); `heroku-migrate status` shows the state, `heroku-migrate up` "
                "finishes what is pending.",
            ]
        for name in drop_new_invalid_indexes(session.conn, failed.invalid_before):
            lines.append(f"dropped INVALID index {name} left by the failed build")
    except psycopg.Error as exc:
        lines.append(f"could not reconnect to compensate: {one_line(str(exc))}")
        lines.append(_remaining_state(committed, done=[]))
        return lines
    reverted: list[Migration] = []
    for m in reversed(committed):
        if m.down is None:
            lines.append(f"{m.label}: has no down migration; cannot undo it")
            lines.append(_remaining_state(committed, done=reverted))
            return lines
        try:
            run_downs(session, history, state, [m], per_migration=True, done=[])
        except StepFailed as exc:
            lines.append(f"down of {m.label} failed: {exc.describe()}")
            lines.append(_remaining_state(committed, done=reverted))
            return lines
        reverted.append(m)
        lines.append(f"reverted {m.label}")
    lines.append("All of this run's migrations were reverted: the database is as before.")
    return lines


def headline(failed: RunFailed, output: Output) -> str:
    """The first line of the error: the failing statement, or the lost connection."""
    if failed.step_failed is not None:
        return failed.step_failed.describe()
    return f"the connection to the database was lost: {one_line(output.redact(str(failed.lost)))}"


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
    fix = fix_for(failed.error)
    if dry_run:
        return MigrationFailed(text, details=("Dry run: everything was rolled back.",), fix=fix)
    if report is None:
        return MigrationFailed(
            text,
            details=("Everything this run did was rolled back: the database is unchanged.",),
            fix=fix,
        )
    why = (
        "earlier migrations of this run were committed one by one (MIGRATE_TRANSACTION=migration)"
        if config.transaction == "migration"
        else "parts of this run were committed around statements that cannot run in a transaction"
    )
    details = [f"{why[0].upper()}{why[1:]}; compensating with their downs, newest first:"]
    details.extend(report)
    return MigrationFailed(
        text, details=tuple(details), fix=fix + " `heroku-migrate status` shows the state."
    )


def fix_for(error: psycopg.Error | None) -> str:
    """What the user should do about a failed run, by the kind of failure."""
    state = error.sqlstate if error is not None else None
    if error is None or connection_lost(error):
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


def _remaining_state(committed: list[Migration], done: list[Migration]) -> str:
    left = [m.label for m in committed if m not in done]
    return (
        "STATE LEFT: still applied (possibly partly) from this run: "
        + ", ".join(left)
        + ". Repair by hand, then record the truth with `heroku-migrate force VERSION`."
    )
