"""First contact and set-up, written in the first transaction of a run: our history tables,
the native tool's table, what that tool applied (adopted) or reverted (forgotten), and accepted
edits of applied files. A failed first release therefore leaves nothing behind."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

    from herokumigrate.config import Config
    from herokumigrate.history import DatabaseState, HistoryTable
    from herokumigrate.native import NativeHistory
    from herokumigrate.output import Output
    from herokumigrate.plan import ReleasePlan
    from herokumigrate.source import Migration


def write_first_contact(
    conn: psycopg.Connection[tuple[object, ...]],
    history: HistoryTable,
    state: DatabaseState,
    plan: ReleasePlan,
    config: Config,
) -> None:
    """Create our tables and record what a legacy tool applied (caller's transaction)."""
    history.create(conn)
    if plan.create_native is not None:
        plan.create_native.create(conn)
        state.legacy = plan.create_native  # kept in sync from now on
    legacy = state.legacy
    if plan.forget and legacy is not None:
        # The native tool reverted them since we applied them (see native.reconcile).
        history.delete(conn, plan.forget)
        history.log(
            conn,
            "reverted by " + legacy.tool,
            f"{legacy.table} says not applied: "
            + ", ".join(map(str, plan.forget))
            + "; applying them again",
        )
    if plan.adopt and legacy is not None:
        source = f"adopted from {legacy.tool}"
        history.record_applied(conn, ((m, 0.0) for m in plan.adopt), source)
        history.log(
            conn,
            "adopted",
            f"{len(plan.adopt)} migration(s) recorded by {legacy.tool}, "
            f"up to {plan.adopt[-1].version}",
        )
    if legacy is not None and (plan.create_native or plan.adopt or plan.forget):
        applied = state.applied_versions() - set(plan.forget)
        legacy.sync(conn, applied | {m.version for m in plan.adopt})
    if accepted_edits(plan, config):
        # Accepted once: the next release compares with the edited content, quietly.
        history.accept_checksums(conn, accepted_edits(plan, config))


def created_native(native: NativeHistory) -> str:
    """The line saying a run created the native tool's table."""
    return f"Created {native.table}, {native.tool}'s table, kept in sync so the tool still works"


def labels(migrations: list[Migration]) -> str:
    """`1_a, 2_b`: migration labels for a message."""
    return ", ".join(m.label for m in migrations)


def accepted_edits(plan: ReleasePlan, config: Config) -> list[Migration]:
    """The edited applied files to record as accepted: only with `allow_changed` (`goto`
    does not refuse edits, and must not accept them either)."""
    return plan.changed if config.allow_changed else []


def report_first_contact(
    output: Output, state: DatabaseState, plan: ReleasePlan, config: Config
) -> None:
    """Say what the first-contact set-up recorded."""
    legacy = state.legacy
    if plan.create_native is not None:
        output.detail(created_native(plan.create_native))
    if plan.forget and legacy is not None:
        output.detail(
            f"{legacy.tool} reverted {', '.join(map(str, plan.forget))} since they were "
            f"applied ({legacy.table} says so): they are applied again"
        )
    if plan.adopt and legacy is not None:
        output.detail(
            f"Adopted {len(plan.adopt)} migration(s) already applied by {legacy.tool}"
            f" (up to {plan.adopt[-1].version}); they will not run again"
        )
    if accepted_edits(plan, config):
        output.detail(
            f"Accepted the edit of {labels(plan.changed)} (allow_changed): the history "
            "now holds its checksum, so later releases do not warn again"
        )
