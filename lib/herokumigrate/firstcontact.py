"""First contact and set-up, written in the first transaction of a run: our history tables,
the native tool's table, what that tool applied (adopted) or reverted (forgotten), and accepted
edits of applied files (checks.py decides them). A failed first release therefore leaves
nothing behind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herokumigrate.native import AppliedMigration, NativeChange

if TYPE_CHECKING:
    from herokumigrate.history import Conn, HistoryTable
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable
    from herokumigrate.output import Output
    from herokumigrate.plan import ReleasePlan
    from herokumigrate.recording import Bookkeeping


def write_first_contact(
    conn: Conn, history: HistoryTable, plan: ReleasePlan, book: Bookkeeping
) -> None:
    """Create our tables and the tool's, and record what the tool applied and reverted
    (caller's transaction; `book` keeps the tool's table following)."""
    history.create(conn)
    if plan.create_native is not None:
        plan.create_native.create(conn)
    native = plan.native
    if plan.forget and native is not None:
        # The native tool reverted them since we applied them (see reconcile.py).
        history.delete(conn, plan.forget)
        history.log(
            conn,
            "reverted by " + native.tool,
            f"{native.table} says not applied: "
            + ", ".join(map(str, plan.forget))
            + "; applying them again",
        )
    if plan.adopt and native is not None:
        source = f"adopted from {native.tool}"
        history.record_applied(conn, ((m, 0.0) for m in plan.adopt), source)
        history.log(
            conn,
            "adopted",
            f"{len(plan.adopt)} migration(s) recorded by {native.tool}, "
            f"up to {plan.adopt[-1].version}",
        )
    if native is not None and (plan.create_native or plan.adopt or plan.forget):
        applied = plan.state.applied_versions() - set(plan.forget)
        applied |= {m.version for m in plan.adopt}
        # A table created now records everything applied; one found, what it adopted from us.
        recorded = (
            book.with_files(applied)
            if plan.create_native is not None
            else [AppliedMigration(m, 0.0) for m in plan.adopt]
        )
        change = NativeChange(frozenset(applied), recorded, plan.forget)
        book.follow(conn, change, read_back=False)
    if plan.accept:
        history.accept_checksums(conn, plan.accept)
        if native is not None:  # a table that keeps checksums takes the new ones (sqlx's)
            book.follow(conn, NativeChange(frozenset(), rechecked=plan.accept))


def created_native(native: NativeTable) -> str:
    """The line saying a run created the native tool's table."""
    return f"Created {native.table}, {native.tool}'s table, kept in sync so the tool still works"


def labels(migrations: list[Migration]) -> str:
    """`1_a, 2_b`: migration labels for a message."""
    return ", ".join(m.label for m in migrations)


def report_first_contact(output: Output, plan: ReleasePlan) -> None:
    """Say what the first-contact set-up recorded."""
    native = plan.state.native
    if plan.create_native is not None:
        output.detail(created_native(plan.create_native))
    if plan.forget and native is not None:
        output.detail(
            f"{native.tool} reverted {', '.join(map(str, plan.forget))} since they were "
            f"applied ({native.table} says so): they are applied again"
        )
    if plan.adopt and native is not None:
        output.detail(
            f"Adopted {len(plan.adopt)} migration(s) already applied by {native.tool}"
            f" (up to {plan.adopt[-1].version}); they will not run again"
        )
    if plan.accept:
        output.detail(
            f"Accepted the edit of {labels(plan.accept)} (allow_changed): the history "
            "now holds its checksum, so later releases do not warn again"
        )
