"""Each command's checks, decided here and nowhere else: whose SQL is split (validated) before
anything is locked or written, and whether the plan is checked (an applied file edited since
refused, unless `allow_changed` lets it be accepted; warnings about unknown versions and older
pending migrations).

- `up`, `plan`: the pending migrations' SQL (down sections included: compensation may need
  them), and the plan's checks.
- `down`, `goto`: every file's SQL; an edited applied file is not refused (reverting does not
  run it), and accepted only with `allow_changed`, as everywhere.
- `force`, `status`: nothing (they run no migration's SQL; `status` reports edits).

A command reads the history twice, before and under the lock: each file is split once, and
each warning shown once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal, NamedTuple

from herokumigrate.config import OutOfOrder
from herokumigrate.problems import FileProblems
from herokumigrate.validation import check_migrations

if TYPE_CHECKING:
    from herokumigrate.config import Config
    from herokumigrate.migration import Migration
    from herokumigrate.output import Output
    from herokumigrate.plan import ReleasePlan

Command = Literal["up", "plan", "status", "down", "goto", "force"]


class CommandChecks(NamedTuple):
    """What one command checks."""

    split: Literal["pending", "files", "none"]  # whose SQL is split before any change
    plan: bool  # check_plan: refuse an edited applied file (unless allowed), warn


CHECKS: dict[Command, CommandChecks] = {
    "up": CommandChecks("pending", plan=True),
    "plan": CommandChecks("pending", plan=True),
    "down": CommandChecks("files", plan=False),
    "goto": CommandChecks("files", plan=False),
    "force": CommandChecks("none", plan=False),
    "status": CommandChecks("none", plan=False),
}


class Checks:
    """One command's checks as it runs."""

    def __init__(self, command: Command, config: Config, output: Output) -> None:
        self.policy = CHECKS[command]
        self.allow_changed = config.allow_changed
        self.out_of_order = config.out_of_order is OutOfOrder.APPLY
        self.revert_on_rollback = config.on_rollback.value == "revert"
        self.output = output
        self._split: set[Migration] = set()
        self._warned: set[tuple[str, ...]] = set()

    def files(self, migrations: list[Migration]) -> None:
        """Before anything is locked: every file's SQL, where the command splits them all."""
        if self.policy.split == "files":
            self._split_sql(migrations)

    def plan(self, plan: ReleasePlan, migrations: list[Migration]) -> ReleasePlan:
        """The plan's checks, and its pending migrations' SQL, where the command makes them;
        the plan, its accepted edits filled in."""
        from herokumigrate.plan import check_plan

        if self.policy.plan:
            warnings = check_plan(
                plan,
                migrations,
                allow_changed=self.allow_changed,
                out_of_order=self.out_of_order,
                revert_on_rollback=self.revert_on_rollback,
            )
            for warning in warnings:
                if warning not in self._warned:
                    self._warned.add(warning)
                    self.output.warn(*warning)
        if self.policy.split == "pending":
            self._split_sql(plan.pending)
        # Accepted once: the next release compares with the edited content, quietly.
        return dataclasses.replace(plan, accept=list(plan.changed) if self.allow_changed else [])

    def _split_sql(self, migrations: list[Migration]) -> None:
        """Split every section of those not split yet (BadInput listing every bad one)."""
        todo = [m for m in migrations if m not in self._split]
        problems = FileProblems()
        check_migrations(todo, problems)
        problems.raise_if_any()
        self._split.update(todo)
