"""Planning, with no database: what `up` would do, the checks on it, and its commit units.

Everything here is pure: it compares the files with a `DatabaseState` already read, so it is
unit-tested without a server (test/test_plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.history import HistoryState
from herokumigrate.reconcile import reconcile
from herokumigrate.sqlsplit import NO_TRANSACTION, SQL, TRANSACTION_CONTROL, Statement
from herokumigrate.tools import folder_group

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from herokumigrate.history import HistoryRow
    from herokumigrate.ledger import DatabaseState
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeFailure, NativeTable
    from herokumigrate.sections import SqlSection
    from herokumigrate.versions import Version


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a migration's section, in the order of the run."""

    migration: Migration
    section: SqlSection
    index: int  # position among the section's statements
    statement: Statement


@dataclass(frozen=True)
class Span:
    """Statements `start` to `stop - 1` of a migration's section: plain SQL, run in order in
    their unit's transaction. Only their positions are kept; the text is split again as they
    run (`StepReader`), so that a large file is never held as a list of statements."""

    migration: Migration
    section: SqlSection
    start: int
    stop: int


class StepReader:
    """The steps of spans, split out of their file as they are read. The spans of one run,
    read in order, split each section once: a span of the section being read continues where
    the previous one stopped. Going back (a retried unit, a replay to pinpoint an error)
    splits the section again from its start. One read at a time."""

    def __init__(self) -> None:
        self._section: SqlSection | None = None
        self._statements: Iterator[Statement] = iter(())
        self._next = 0  # the index of the statement `_statements` yields next

    def read(self, span: Span) -> Iterator[Step]:
        """The span's steps, one at a time."""
        if self._section is not span.section or self._next > span.start:
            self._section, self._next = span.section, 0
            self._statements = span.section.iter_statements()
        while self._next < span.stop:
            statement = next(self._statements)
            index = self._next
            self._next += 1
            if index >= span.start:
                yield Step(span.migration, span.section, index, statement)


@dataclass
class Unit:
    """A piece of the run that commits as a whole: a transaction (its `spans`), or one
    autocommit statement (`alone`). Units built together share one StepReader."""

    spans: list[Span] = field(default_factory=list)
    alone: Step | None = None  # the statement an autocommit unit runs outside any transaction
    finishes: list[Migration] = field(default_factory=list)
    reader: StepReader = field(default_factory=StepReader, repr=False, compare=False)

    @property
    def autocommit(self) -> bool:
        """True for a statement that runs on its own, outside any transaction."""
        return self.alone is not None

    def steps(self) -> Iterator[Step]:
        """The unit's statements in order, split from their files as they are read."""
        if self.alone is not None:
            yield self.alone
        for span in self.spans:
            yield from self.reader.read(span)

    def migrations(self) -> list[Migration]:
        """The migrations this unit touches, in order, each once."""
        seen: dict[Version, Migration] = {}
        if self.alone is not None:
            seen[self.alone.migration.version] = self.alone.migration
        for span in self.spans:
            seen.setdefault(span.migration.version, span.migration)
        for m in self.finishes:
            seen.setdefault(m.version, m)
        return list(seen.values())


@dataclass
class ReleasePlan:
    """What `up` would do: pending migrations, and what the database (`state`, as read) knows
    that the files don't."""

    state: DatabaseState
    pending: list[Migration]
    unknown: list[Version]
    changed: list[Migration]
    adopt: list[Migration]
    partial: dict[Version, int]  # version -> statements already done
    needs_setup: bool
    # Recorded by us, reverted by the native tool since: forgotten, then applied again.
    forget: list[Version] = field(default_factory=list)
    # The native tool's table to create, as the tool would (the database has none).
    create_native: NativeTable | None = None
    # Edited applied files whose new checksum the run records (`allow_changed`; checks.py).
    accept: list[Migration] = field(default_factory=list)
    # Applied by the tool (its table says so), in neither the files nor our history.
    tool_only: list[Version] = field(default_factory=list)

    @property
    def native(self) -> NativeTable | None:
        """The tool's table the run keeps in sync: the one found, or the one it creates."""
        return self.state.native or self.create_native

    @property
    def nothing_to_do(self) -> bool:
        """True when the run would not write anything. A missing native table alone is not
        work: it is created by the next run that writes (a no-op release stays read-only); an
        accepted edit of an applied file is recorded."""
        return not (self.pending or self.adopt or self.needs_setup or self.forget or self.changed)


def make_plan(
    migrations: list[Migration],
    state: DatabaseState,
    *,
    target: Version | None = None,
    fresh_native: NativeTable | None = None,
) -> ReleasePlan:
    """Compare files with the recorded state (adopting the native tool's) and list what is
    pending; `fresh_native` is the tool's table to create when the database has none."""
    settled = reconcile(state.native, migrations, state.rows, history_exists=state.exists)
    rows = {v: row for v, row in state.rows.items() if v not in settled.forget}
    adopted = settled.adopt
    adopted_versions = {m.version for m in adopted}
    by_version = {m.version: m for m in migrations}
    unknown = sorted(v for v in rows if v not in by_version)
    # A repeatable migration whose checksum changed runs again (Flyway's R__ files).
    rerun = {
        m.version
        for m in migrations
        if m.repeatable
        and (m.version in rows or m.version in adopted_versions)
        and _edited(m, rows, state.native)
    }
    changed = [m for m in migrations if not m.repeatable and _edited(m, rows, state.native)]
    partial = {
        v: row.progress or 0
        for v, row in rows.items()
        if row.state is HistoryState.PARTIAL and v in by_version
    }
    pending = [
        m
        for m in migrations
        if (
            ((m.version not in rows or m.version in partial) and m.version not in adopted_versions)
            or m.version in rerun
        )
        and (target is None or m.version <= target)
    ]
    if any(m.baseline for m in migrations):
        empty = not rows and not adopted and not (state.native and state.native.applied())
        pending = _with_baseline(pending, target) if empty else _without_baselines(pending)
    return ReleasePlan(
        state,
        pending,
        unknown,
        changed,
        adopted,
        partial,
        not state.exists,
        settled.forget,
        fresh_native if state.native is None else None,
        tool_only=_tool_only(state.native, by_version, rows),
    )


def _edited(m: Migration, rows: Mapping[Version, HistoryRow], native: NativeTable | None) -> bool:
    """Whether an applied file changed since: its checksum differs from our history's, or from
    the one the tool's table keeps for it (a tool that keeps checksums: sqlx)."""
    row = rows.get(m.version)
    if row is not None and row.state is HistoryState.APPLIED and row.checksum != m.checksum:
        return True
    return native is not None and native.tool == m.format and native.edited(m)


def _with_baseline(pending: list[Migration], target: Version | None) -> list[Migration]:
    """On an empty history: the newest baseline migration (at or below `target`) instead of
    the versioned migrations it stands for, as Flyway does; the other baselines not at all."""
    chosen = max(
        (m for m in pending if m.baseline and (target is None or m.version <= target)),
        key=lambda m: m.version,
        default=None,
    )
    if chosen is None:
        return _without_baselines(pending)
    covered = chosen.version.key[:-1]  # the version it stands for, and those below
    return [
        m
        for m in pending
        if m is chosen or not (m.baseline or (not m.repeatable and m.version.key <= covered))
    ]


def _without_baselines(pending: list[Migration]) -> list[Migration]:
    """Baseline migrations run on an empty history only."""
    return [m for m in pending if not m.baseline]


def _tool_only(
    native: NativeTable | None, files: Mapping[Version, Migration], rows: Mapping[Version, object]
) -> list[Version]:
    """The versions the tool's table says are applied that neither the files nor our history
    know (the tool applied them from files since removed: a rollback)."""
    applied = native.applied() if native is not None else None
    return sorted(v for v in applied or () if v not in files and v not in rows)


def check_plan(
    plan: ReleasePlan,
    migrations: list[Migration],
    *,
    allow_changed: bool,
    out_of_order: bool = True,
    revert_on_rollback: bool = False,
) -> list[tuple[str, ...]]:
    """Stop on edited applied files (unless allowed), and on pending migrations older than the
    newest applied one unless `out_of_order`; return warnings about the unusual but legal, each
    as the lines of one warning. With `revert_on_rollback`, the versions newer than every file
    are not warned about: the release reverts them (rollback.py)."""
    warnings: list[tuple[str, ...]] = []
    other_tool = _other_tool(plan, migrations)
    if plan.changed:
        names = ", ".join(m.filename for m in plan.changed)
        if not allow_changed:
            # Read as another tool's files, every file's checksum is another: say that first.
            first = f"{other_tool[0]}. Otherwise: r" if other_tool else "R"
            raise BadInput(
                f"{plan.changed[0].filename}: changed after it was applied "
                f"({len(plan.changed)} file(s): {names})",
                fix=f"{first}estore the applied content (git log -p -- <file>) and put the "
                "change in a new migration (heroku-migrate new NAME); or set "
                "MIGRATE_ALLOW_CHANGED=true to accept the edit.",
            )
        warnings.append((f"Applied migration(s) changed since they ran: {names} (allowed)",))
    unknown = _unknown_warning(plan, migrations, revert_on_rollback=revert_on_rollback)
    if unknown:
        warnings.append(unknown)
    warnings.extend(_tool_warnings(plan, migrations))
    if plan.pending:
        warnings.extend(_check_order(plan, migrations, out_of_order=out_of_order))
    return warnings


def _check_order(
    plan: ReleasePlan, migrations: list[Migration], *, out_of_order: bool
) -> list[tuple[str, ...]]:
    """Pending migrations older than the newest applied one: refused (BadInput) unless
    `out_of_order` (or the tool's own policy) applies them, then a warning."""
    # Repeatable migrations (Flyway's R__) have no place among the versions.
    pending = {m.version for m in plan.pending}
    applied = [
        m.version
        for m in migrations
        if m.version not in pending and not m.repeatable and not m.baseline
    ]
    newest = max(applied, default=None)
    older = [
        m.label
        for m in plan.pending
        if newest is not None and not m.repeatable and not m.baseline and m.version < newest
    ]
    if not older:
        return []
    refusal = _out_of_order_refusal(plan, out_of_order=out_of_order)
    if refusal is not None:
        raise BadInput(
            f"pending migration(s) older than the newest applied one ({newest}): "
            f"{', '.join(older)}; {refusal.message}",
            fix=refusal.fix,
            details=("Nothing was changed.",),
        )
    return [
        (
            f"Pending migration(s) older than the newest applied one: "
            f"{', '.join(older)}; they will be applied now (a merged branch?)",
        )
    ]


def _out_of_order_refusal(plan: ReleasePlan, *, out_of_order: bool) -> NativeFailure | None:
    """Why pending versions older than the newest applied one are refused, None when they are
    applied: a tool with a policy of its own (Flyway's outOfOrder) decides for its folder;
    otherwise the `out_of_order` setting (refuse by default)."""
    from herokumigrate.native import NativeFailure, NativeTable

    native = plan.native
    own_policy = native is not None and (
        type(native).out_of_order_refusal is not NativeTable.out_of_order_refusal
    )
    if native is not None and own_policy:
        return native.out_of_order_refusal()
    if out_of_order:
        return None
    return NativeFailure(
        None,
        "a branch merged late? (out_of_order = refuse)",
        "Give them versions after the newest applied one (rename the files; heroku-migrate new "
        "NAME makes a fresh version), or set MIGRATE_OUT_OF_ORDER=apply to apply them anyway.",
    )


def _unknown_warning(
    plan: ReleasePlan, migrations: list[Migration], *, revert_on_rollback: bool
) -> tuple[str, ...]:
    """The warning about versions the files do not know (empty: none), leaving out those newer
    than every file when the release reverts them (rollback.py), else saying it could."""
    newest = max((m.version for m in migrations), default=None)
    newer = [v for v in plan.unknown if newest is None or v > newest]
    unknown = [v for v in plan.unknown if v not in newer] if revert_on_rollback else plan.unknown
    if not unknown:
        return ()
    shown = ", ".join(str(v) for v in unknown[:10])
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    lines = [
        f"The database has {len(unknown)} migration(s) these files do not: {shown}{more}",
        "This is expected after `heroku rollback`; they stay applied. Nothing to do.",
    ]
    if newer and not revert_on_rollback:
        lines.append(
            "To revert the newer ones when the code is rolled back, set "
            "MIGRATE_ON_ROLLBACK=revert (docs/rollback.md)."
        )
    return tuple(lines)


def _tool_warnings(plan: ReleasePlan, migrations: list[Migration]) -> list[tuple[str, ...]]:
    """What the tool's table says that the files do not: versions only it has (and what the
    tool itself does about them), or that another tool than the files' keeps it."""
    native = plan.state.native
    if native is None:
        return []
    warnings: list[tuple[str, ...]] = []
    if plan.tool_only:
        shown = ", ".join(str(v) for v in plan.tool_only[:10])
        note = f" ({native.missing_note})" if native.missing_note else ""
        warnings.append(
            (
                f"{native.table} ({native.tool}) has {len(plan.tool_only)} migration(s) these "
                f"files do not: {shown}{note}",
                "This is expected after `heroku rollback`; they stay applied.",
            )
        )
    other_tool = _other_tool(plan, migrations)
    if other_tool:
        warnings.append(other_tool[::-1])
    return warnings


def _other_tool(plan: ReleasePlan, migrations: list[Migration]) -> tuple[str, str] | None:
    """(the fix, the finding) when the tool's table found is one whose files these are not
    read as (a folder whose names two tools share, read as the other's): None otherwise."""
    native = plan.state.native
    readers = {tool for m in migrations for tool in folder_group(m.format)}
    if native is None or not readers or native.tool in readers:
        return None
    tools = " and ".join(sorted({m.format for m in migrations}))
    return (
        f"If {native.tool} applies this folder, set the `tool` setting "
        f"(MIGRATE_TOOL={native.tool}) so that its files are read as {native.tool} reads them",
        f"The database's {native.table} is {native.tool}'s, but the files were read as "
        f"{tools}'s; it is kept in sync all the same",
    )


def build_units(items: list[tuple[Migration, SqlSection, int]], per_migration: bool) -> list[Unit]:
    """Group the statements of a run into commit units.

    `items` lists (migration, section, first statement to run). A migration finishes in the
    unit holding its last statement; transaction-control statements in files are skipped,
    since the runner owns the transaction.
    """
    reader = StepReader()
    units: list[Unit] = []
    current: Unit | None = None
    for migration, section, start in items:
        if per_migration and current is not None and current.spans:
            units.append(current)
            current = None
        for part in _parts(migration, section, start):
            if isinstance(part, Step):
                if current is not None and (current.spans or current.finishes):
                    units.append(current)
                units.append(Unit(alone=part, reader=reader))
                current = None
            else:
                if current is None:
                    current = Unit(reader=reader)
                current.spans.append(part)
        if current is None:
            current = Unit(reader=reader)
        current.finishes.append(migration)
    if current is not None and (current.spans or current.finishes):
        units.append(current)
    return units


def _parts(migration: Migration, section: SqlSection, start: int) -> Iterator[Span | Step]:
    """A section's statements from `start` on, in order: runs of plain SQL as spans, each
    statement that must run outside a transaction as a step; BEGIN/COMMIT and kin skipped.
    A transactional section is not split here: its shape (`SqlSection.shape`) says where
    its statements that are not plain SQL are."""
    if not section.transaction and section.one_query:
        yield from _one_query(migration, section, start)
        return
    if not section.transaction:  # every statement runs on its own
        for index, statement in enumerate(section.iter_statements()):
            if index >= start and statement.kind is not TRANSACTION_CONTROL:
                yield Step(migration, section, index, statement)
        return
    shape = section.shape
    position = start
    for index, statement in shape.apart.items():  # in the order of the file
        if index < start:
            continue
        if index > position:
            yield Span(migration, section, position, index)
        if statement.kind is NO_TRANSACTION:
            yield Step(migration, section, index, statement)
        position = index + 1
    if shape.total > position:
        yield Span(migration, section, position, shape.total)


def _one_query(migration: Migration, section: SqlSection, start: int) -> Iterator[Step]:
    """A section its tool sends as one simple query, outside a transaction: one step. A single
    statement runs as it is (a concurrent index build); several are sent whole, as the tool
    sends them, and PostgreSQL runs them in one implicit transaction: all or none."""
    if start > 0:
        return  # it ran: an interrupted run recorded its progress past it
    statements = list(section.iter_statements())
    if all(s.kind is TRANSACTION_CONTROL for s in statements):
        return  # nothing to run
    if len(statements) == 1:
        yield Step(migration, section, 0, statements[0])
        return
    whole = Statement(section.sql, section.first_line, SQL)
    yield Step(migration, section, 0, whole)
