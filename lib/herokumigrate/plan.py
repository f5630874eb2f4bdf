"""Planning, with no database: what `up` would do, the checks on it, and its commit units.

Everything here is pure: it compares the files with a `DatabaseState` already read, so it is
unit-tested without a server (test/test_plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.history import HistoryState
from herokumigrate.native import reconcile

if TYPE_CHECKING:
    from herokumigrate.history import DatabaseState
    from herokumigrate.native import NativeHistory
    from herokumigrate.source import Migration, SqlSection
    from herokumigrate.sqlsplit import Statement


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

    def migrations(self) -> list[Migration]:
        """The migrations this unit touches, in order, each once."""
        seen: dict[int, Migration] = {}
        for step in self.steps:
            seen.setdefault(step.migration.version, step.migration)
        for m in self.finishes:
            seen.setdefault(m.version, m)
        return list(seen.values())


@dataclass
class ReleasePlan:
    """What `up` would do: pending migrations, and what the database knows that the files don't."""

    pending: list[Migration]
    unknown: list[int]
    changed: list[Migration]
    adopt: list[Migration]
    partial: dict[int, int]  # version -> statements already done
    needs_setup: bool
    # Recorded by us, reverted by the native tool since: forgotten, then applied again.
    forget: list[int] = field(default_factory=list)
    # The native tool's table to create, as the tool would (the database has none).
    create_native: NativeHistory | None = None

    @property
    def nothing_to_do(self) -> bool:
        """True when the run would not write anything. A missing native table alone is not
        work: it is created by the next run that writes (a no-op release stays read-only); an
        accepted edit of an applied file is recorded."""
        return not (self.pending or self.adopt or self.needs_setup or self.forget or self.changed)


def make_plan(
    migrations: list[Migration], state: DatabaseState, *, target: int | None = None
) -> ReleasePlan:
    """Compare files with the recorded state (adopting legacy state) and list what is pending."""
    settled = reconcile(
        state.legacy,
        migrations,
        state.rows,
        history_exists=state.exists,
        tables=state.native_tables,
    )
    rows = {v: row for v, row in state.rows.items() if v not in settled.forget}
    adopted = settled.adopt
    adopted_versions = {m.version for m in adopted}
    by_version = {m.version: m for m in migrations}
    unknown = sorted(v for v in rows if v not in by_version)
    changed = [
        m
        for m in migrations
        if m.version in rows
        and rows[m.version].state == HistoryState.APPLIED
        and rows[m.version].checksum != m.checksum
    ]
    partial = {
        v: row.progress or 0
        for v, row in rows.items()
        if row.state == HistoryState.PARTIAL and v in by_version
    }
    pending = [
        m
        for m in migrations
        if (m.version not in rows or m.version in partial)
        and m.version not in adopted_versions
        and (target is None or m.version <= target)
    ]
    return ReleasePlan(
        pending,
        unknown,
        changed,
        adopted,
        partial,
        not state.exists,
        settled.forget,
        settled.create,
    )


def check_plan(
    plan: ReleasePlan, migrations: list[Migration], *, allow_changed: bool
) -> list[tuple[str, ...]]:
    """Stop on edited applied files (unless allowed); return warnings about the unusual but
    legal, each as the lines of one warning."""
    warnings: list[tuple[str, ...]] = []
    if plan.changed:
        names = ", ".join(m.filename for m in plan.changed)
        if not allow_changed:
            raise BadInput(
                f"{plan.changed[0].filename}: changed after it was applied "
                f"({len(plan.changed)} file(s): {names})",
                fix="Restore the applied content (git log -p -- <file>) and put the change in a "
                "new migration (heroku-migrate new NAME); or set MIGRATE_ALLOW_CHANGED=true "
                "to accept the edit.",
            )
        warnings.append((f"Applied migration(s) changed since they ran: {names} (allowed)",))
    if plan.unknown:
        shown = ", ".join(str(v) for v in plan.unknown[:10])
        more = f" and {len(plan.unknown) - 10} more" if len(plan.unknown) > 10 else ""
        warnings.append(
            (
                f"The database has {len(plan.unknown)} migration(s) these files do not: "
                f"{shown}{more}",
                "This is expected after `heroku rollback`; they stay applied. Nothing to do.",
            )
        )
    if plan.pending:
        pending = {m.version for m in plan.pending}
        applied = [m.version for m in migrations if m.version not in pending]
        newest = max(applied, default=0)
        older = [m.label for m in plan.pending if m.version < newest]
        if older:
            warnings.append(
                (
                    f"Pending migration(s) older than the newest applied one: "
                    f"{', '.join(older)}; they will be applied now (a merged branch?)",
                )
            )
    return warnings


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
