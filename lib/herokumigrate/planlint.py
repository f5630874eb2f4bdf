"""`plan`'s release-safety lint: the build's rules (lint.py) over exactly the pending migrations,
with the database telling which tables exist.

pglast is never in the slug: where it cannot be imported (the release dyno), `plan` says so in
one line and goes on; the build ran the lint already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput

if TYPE_CHECKING:
    from collections.abc import Callable

    from herokumigrate.lint import Finding, TableName
    from herokumigrate.migration import Migration
    from herokumigrate.versions import Version

NOT_AVAILABLE = "lint: not available here (the build runs it)"


@dataclass(frozen=True)
class PendingLint:
    """What the lint said of the pending migrations; `available` False: pglast is not here."""

    available: bool
    findings: dict[Version, list[Finding]] = field(default_factory=dict)  # by version
    notes: dict[Version, list[str]] = field(default_factory=dict)  # by version
    problem: str = ""  # the parser refused a file (the rehearsal reports its own error)


def lint_pending(
    migrations: list[Migration],
    table_exists: Callable[[TableName], bool],
    *,
    applied: list[Migration] | None = None,
    one_transaction: bool = True,
) -> PendingLint:
    """Lint `migrations` (pending, in order) as one release after `applied` (read for what
    they created); never raises for a missing parser or bad SQL."""
    try:
        from herokumigrate.lint import lint_migrations
        from herokumigrate.pgparse import ParserUnavailable
    except ImportError:  # a slug: the lint's modules are build-time only (buildpack/build.py)
        return PendingLint(available=False)
    try:
        reports = lint_migrations(
            migrations,
            table_exists=table_exists,
            context=applied or [],
            one_transaction=one_transaction,
        )
    except ParserUnavailable:
        return PendingLint(available=False)
    except BadInput as exc:
        return PendingLint(available=True, problem=" ".join(exc.message.split()))
    versions = {m.up.path.name: m.version for m in migrations}
    findings: dict[Version, list[Finding]] = {}
    notes: dict[Version, list[str]] = {}
    for report in reports:
        version = versions.get(report.file)
        if version is not None:
            findings.setdefault(version, []).extend(report.findings)
            notes.setdefault(version, []).extend(report.notes)
    return PendingLint(available=True, findings=findings, notes=notes)


def describe(finding: Finding) -> str:
    """One line: `lint index-without-concurrently: line 3: public.orders: why; instead: ...`."""
    rule = finding.rule
    return (
        f"lint {rule.id}: line {finding.line}: {finding.subject}: {rule.why}; "
        f"instead: {rule.instead}"
    )
