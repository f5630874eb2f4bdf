"""The tool's table against our history: what a run adopts (the tool applied it), forgets (the
tool reverted it since we applied it) or creates (the database has no tool table), and the
disagreements no run may settle by itself (README, "Adopting golang-migrate, dbmate or goose").
Pure: it compares readings already made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from herokumigrate.errors import BadInput
from herokumigrate.history import SOURCE_RUNNER, HistoryState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from herokumigrate.history import HistoryRow
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable
    from herokumigrate.versions import Version


class NativeConflict(BadInput):
    """The native tool's table and our history disagree in a way no run may settle by itself
    (or the table records a failure, as golang-migrate's dirty row): `up` refuses, `status`
    reports it."""


class Reconciled(NamedTuple):
    """How a run settles the native table with our history."""

    adopt: list[Migration]  # applied by the tool, not recorded by us: recorded, not run
    forget: list[Version]  # recorded by us, reverted by the tool since: forgotten, applied again


def reconcile(
    native: NativeTable | None,
    migrations: list[Migration],
    rows: Mapping[Version, HistoryRow],
    *,
    history_exists: bool,
) -> Reconciled:
    """Compare the native table with our history. NativeConflict when they disagree both ways,
    or the tool reverted what it did not apply through us, or the table records a failure that
    is not our own run's mark."""
    if native is None:
        return Reconciled([], [])
    failure = native.failure()
    flight = native.in_flight()
    marked = rows.get(flight) if flight is not None else None
    if failure is not None and (marked is None or marked.state is not HistoryState.PARTIAL):
        raise NativeConflict(failure.message, fix=failure.fix)
    # (a killed run of ours marked it, as golang-migrate would: `up` resumes it)
    adopted = [m for m in migrations if m.version not in rows and native.says_applied(m.version)]
    if not history_exists:
        return Reconciled(adopted, [])
    ours = {v for v, row in rows.items() if row.state is HistoryState.APPLIED}
    if native.agrees(ours):
        return Reconciled([], [])
    behind = sorted(v for v in ours if not native.says_applied(v))
    if not behind:
        return Reconciled(adopted, [])  # the tool applied more: adopt it
    files = {m.version for m in migrations}
    ran_by = (SOURCE_RUNNER, f"adopted from {native.tool}")
    if adopted or any(v not in files or rows[v].source not in ran_by for v in behind):
        raise _conflict(native, ours, behind)
    return Reconciled([], behind)


def _conflict(native: NativeTable, ours: set[Version], behind: list[Version]) -> NativeConflict:
    newest = max(ours) if ours else None
    mine = f"{len(ours)} applied, newest {newest}" if ours else "nothing applied"
    return NativeConflict(
        f"{native.table} ({native.tool}) and heroku-migrate's history disagree: "
        f"{native.tool} says {native.state_text()}; the history says {mine} "
        f"(not in {native.table}: {', '.join(map(str, behind[:10]))})",
        fix=f"If {native.tool}'s state is the real one, run `heroku-migrate force VERSION` with "
        "the newest version really applied (it rewrites both tables); if the history's is, "
        f"run `{native.up_command}` to bring {native.table} back, or force that version.",
    )
