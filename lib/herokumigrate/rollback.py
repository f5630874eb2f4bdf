"""Rolling the schema back with the code (`on_rollback = "revert"`; docs/rollback.md).

`heroku rollback` releases an older slug, whose files lack the migrations the newer release
applied. With `revert`, its release reverts exactly the applied migrations newer than every
file it has, newest first, with the downs stored when they were applied (downstore.py), before
anything else; older versions the files do not know are never touched. All or nothing:

- a migration to revert with no stored down (applied before downs were stored, by another
  runner, or with none), or only partly applied, makes it refuse before any change;
- the downs run in one transaction, with the history and the tool's table following, so a
  failing down rolls every one of them back;
- a down statement that cannot run in a transaction commits what came before it (as in `up`):
  when a later one fails, what the revert had reverted is applied again, oldest first, from
  the ups stored with the downs (compensation, as `up`'s runs the downs).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

from herokumigrate.downstore import MAX_STORED_UP
from herokumigrate.errors import BadInput, MigrationFailed
from herokumigrate.history import HistoryState
from herokumigrate.migration import Migration
from herokumigrate.native import AppliedMigration
from herokumigrate.output import first_words
from herokumigrate.plan import build_units
from herokumigrate.recording import RecordFailed
from herokumigrate.revert import run_downs
from herokumigrate.sections import SourceFile, SqlSection
from herokumigrate.signals import transaction
from herokumigrate.sqlsplit import NO_TRANSACTION
from herokumigrate.statements import StepFailed
from herokumigrate.versions import Version

if TYPE_CHECKING:
    from collections.abc import Sequence

    from herokumigrate.downstore import StoredDown
    from herokumigrate.history import Conn, HistoryTable
    from herokumigrate.ledger import DatabaseState
    from herokumigrate.locks import LockObserver
    from herokumigrate.plan import Step, Unit
    from herokumigrate.recording import Bookkeeping
    from herokumigrate.runner import UnitRunner
    from herokumigrate.tools import ToolName


def newer_than_files(state: DatabaseState, files: Sequence[Migration]) -> list[Version]:
    """The recorded versions newer than every file, newest first: what a rollback reverts."""
    newest = max((m.version for m in files), default=None)
    return sorted((v for v in state.rows if newest is None or v > newest), reverse=True)


class Rollback(NamedTuple):
    """What a rollback would revert (newest first, rebuilt from the stored downs), and the
    lines saying why some cannot be (empty: it can)."""

    targets: list[Migration]
    blocked: list[str]


def read_rollback(
    conn: Conn, history: HistoryTable, state: DatabaseState, files: Sequence[Migration]
) -> Rollback:
    """The migrations newer than every file, with their stored downs."""
    versions = newer_than_files(state, files)
    stored = history.downs.read(conn, [v.canonical for v in versions])
    targets: list[Migration] = []
    blocked: list[str] = []
    no_up: list[Migration] = []  # their ups are not stored: compensation cannot apply them
    for version in versions:
        row = state.rows[version]
        kept = stored.get(version.canonical)
        label = f"{version}_{row.name}" if row.name else str(version)
        if row.state is HistoryState.PARTIAL:
            blocked.append(f"{label}: only partly applied (an interrupted run)")
        elif kept is None:
            blocked.append(
                f"{label}: no stored down (applied by a runner from before downs were stored)"
            )
        elif kept.up_checksum != row.checksum:
            blocked.append(f"{label}: its stored down belongs to other content than the applied")
        elif kept.down is None:
            blocked.append(f"{label}: has no down migration")
        else:
            targets.append(_migration(version, row.name, kept))
            if kept.up is None:
                no_up.append(targets[-1])
    if no_up and any(_commits_in_parts(m) for m in targets):
        blocked.extend(
            f"{m.label}: its up is over {MAX_STORED_UP >> 20} MiB, so it was not stored; "
            "a revert that commits in parts (a down statement runs outside a transaction) "
            "needs it to compensate a failure"
            for m in no_up
        )
    return Rollback(targets, blocked)


def _commits_in_parts(m: Migration) -> bool:
    """True when `m`'s down has a statement that runs outside the transaction."""
    down = m.down
    if down is None:
        return False
    if not down.transaction:
        return not down.is_empty
    return any(s.kind is NO_TRANSACTION for s in down.shape.apart.values())


def _migration(version: Version, name: str, kept: StoredDown) -> Migration:
    """A migration rebuilt from what was stored with it (its files are not in this slug)."""
    assert kept.down is not None
    written = Version(version.key, version.canonical, kept.written, version.number)
    tool: ToolName = kept.tool  # type: ignore[assignment]
    up = kept.up.section() if kept.up is not None else SqlSection(SourceFile("", ""), "")
    return Migration(written, name, tool, up, kept.up_checksum, down_section=kept.down.section())


def refusal(rollback: Rollback, files: Sequence[Migration]) -> BadInput:
    """The error of a rollback that cannot revert everything: nothing was changed."""
    newest = max((m.version for m in files), default=None)
    goal = newest.written if newest is not None else "0"
    return BadInput(
        f"on_rollback = revert: {len(rollback.blocked)} migration(s) newer than this "
        "release's files cannot be reverted, so none was (the release stops; the running "
        "one keeps serving)",
        details=tuple(rollback.blocked),
        fix="Revert them by hand (their down SQL is in git), then record it with "
        f"`heroku run heroku-migrate force {goal}` and retry the release (heroku "
        "releases:retry); or set MIGRATE_ON_ROLLBACK=keep to roll back the code alone.",
    )


def revert_rollback(runner: UnitRunner, book: Bookkeeping, targets: list[Migration]) -> int:
    """Revert `targets` (newest first) with their stored downs: all in one transaction where
    they can run in one; MigrationFailed when a down fails, after compensating."""
    output, conn = runner.output, runner.session.conn
    output.step(
        f"Rolling back {len(targets)} migration(s) newer than this release's files, newest "
        "first (on_rollback = revert)"
    )
    started = time.monotonic()
    done: list[Migration] = []
    units: list[Unit] = []
    try:
        run_downs(
            runner,
            book,
            targets,
            per_migration=False,
            done=done,
            output=output,
            committed=units,
            forget_after_alone=True,
        )
    except (StepFailed, RecordFailed) as exc:
        headline = output.redact(exc.describe())
        report = _compensate(runner, book, done) if units else []
        half = _half_reverted(units, done)
        book.history.log_if_present(conn, "rollback failed", headline)
        raise _failed(headline, targets, units, half, report) from None
    with transaction(conn):
        book.history.log(conn, "rollback", "reverted " + ", ".join(str(m.version) for m in done))
    output.step(f"Rolled back {len(done)} migration(s) in {time.monotonic() - started:.2f}s")
    return len(done)


def _half_reverted(units: list[Unit], done: list[Migration]) -> list[Migration]:
    """The migrations whose down committed statements (outside a transaction) but did not
    finish: compensation cannot apply them again over what their down left."""
    half: list[Migration] = []
    for unit in units:
        m = unit.alone.migration if unit.alone is not None else None
        if m is not None and m not in done and m not in half:
            half.append(m)
    return half


def _failed(
    headline: str,
    targets: list[Migration],
    units: list[Unit],
    half: list[Migration],
    report: list[str],
) -> MigrationFailed:
    """The error of a failed revert, with what its compensation did."""
    details = []
    if not units:
        details.append("Nothing was reverted: the database is as before the release.")
    else:
        details.append(
            "Statements outside a transaction had committed part of the revert; "
            "compensating, oldest first:"
        )
        details.extend(report or ["no migration had been reverted whole"])
    for m in half:
        details.append(
            f"STATE LEFT: {m.label}: part of its down ran outside a transaction before the "
            "failure and stays done; it is still recorded as applied. Repair by hand."
        )
    shown = ", ".join(m.label for m in targets)
    return MigrationFailed(
        f"rollback revert failed: {headline}",
        details=(*details, f"The migrations to revert were: {shown}."),
        fix="Fix the database (or the down SQL, then deploy and roll back again), or set "
        "MIGRATE_ON_ROLLBACK=keep to roll back the code alone; heroku releases:retry retries.",
    )


def _compensate(runner: UnitRunner, book: Bookkeeping, done: list[Migration]) -> list[str]:
    """Apply again, oldest first, what the failed revert had reverted (their stored ups);
    the report, one line per migration."""
    lines: list[str] = []
    for m in reversed(done):
        try:
            for unit in build_units([(m, m.up, 0)], per_migration=True):
                runner.run(unit, _Reapplied(book))
        except (StepFailed, RecordFailed) as exc:
            lines.append(f"applying {m.label} again failed: {exc.describe()}")
            left = ", ".join(x.label for x in done[: done.index(m) + 1])
            lines.append(
                f"STATE LEFT: reverted, not applied again: {left}. Repair by hand, then "
                "record the truth with `heroku-migrate force VERSION`."
            )
            return lines
        lines.append(f"applied {m.label} again")
    return lines


class _Reapplied:
    """Compensation's bookkeeping (runner.UnitRecords): the migration's history row (and its
    stored down) again, the tool's table following, in the unit's transaction."""

    def __init__(self, book: Bookkeeping) -> None:
        self.book = book

    def at_start(self, conn: Conn, unit: Unit) -> None:
        """Nothing before the statements."""

    def after_statements(self, conn: Conn, unit: Unit, spent: dict[Version, float]) -> None:
        if not unit.finishes:
            return
        applied, _ = self.book.history.applied_and_partial(conn)
        done = [AppliedMigration(m, spent.get(m.version, 0.0)) for m in unit.finishes]
        self.book.applied(conn, done, applied=applied | {m.version for m in unit.finishes})

    def committed(self, unit: Unit, spent: dict[Version, float]) -> None:
        """Nothing to remember."""

    def before_alone(self, conn: Conn, step: Step) -> bool:
        return False

    def alone_failed(self, conn: Conn, step: Step) -> None:
        """Nothing to record."""

    def alone_ran(self, conn: Conn, step: Step, ms: float) -> None:
        """Nothing to record."""


def rehearse_rollback(
    runner: UnitRunner, rollback: Rollback, observer: LockObserver | None, *, setting: bool
) -> int:
    """`plan`: what a rollback would revert, its downs run in a transaction rolled back (their
    locks shown to `observer`); with `keep` (`setting` False), also what blocks it. How many
    would be reverted (0 when something blocks it)."""
    output, conn = runner.output, runner.session.conn
    when = "This release reverts" if setting else "With MIGRATE_ON_ROLLBACK=revert, it would revert"
    output.step(
        f"{when} {len(rollback.targets) + len(rollback.blocked)} migration(s) newer "
        "than its files, newest first (rehearsed, rolled back)"
    )
    for line in rollback.blocked:
        output.detail(f"cannot revert {line}")
    if rollback.blocked:
        output.detail("so it would revert none of them, and stop")
        return 0
    items = [(m, m.down, 0) for m in rollback.targets if m.down is not None]
    units = build_units(items, per_migration=False)
    with conn.transaction(force_rollback=True):
        runner.session.set_local_timeouts()
        if observer is not None:
            observer.begin(conn, units)
        for unit in units:
            if unit.alone is not None:
                step = unit.alone
                output.detail(
                    f"{step.migration.label}: its down would run outside the transaction "
                    f"(line {step.statement.line}): {first_words(step.statement.text)}"
                )
                continue
            runner.send(([step] for step in unit.steps()), None, None, observer)
            for m in unit.finishes:
                output.detail(f"would revert {m.revert_label}")
        if observer is not None:
            observer.end(conn)
    return len(rollback.targets)
