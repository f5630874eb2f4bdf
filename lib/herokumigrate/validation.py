"""`validate`'s check of the SQL: every section split, what it holds counted, what deserves a
note or a warning collected. Statements are looked at one at a time and dropped, so that a large
file is never held as a list of statements (see sections.SqlSection.iter_statements).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.problems import FileProblems

if TYPE_CHECKING:
    from pathlib import Path

    from herokumigrate.migration import Migration
    from herokumigrate.sections import SqlSection
    from herokumigrate.sqlsplit import Statement
    from herokumigrate.tools import ToolName

NAMES_SHOWN = 10  # a note lists at most this many migrations by name
WARNINGS_SHOWN = 50
# Only statements that could change a setting are handed to sqlsplit.session_setting.
_MAYBE_SETTING = re.compile(r"(?:set|reset|discard)\b|.*?set_config", re.IGNORECASE | re.DOTALL)
# SET LOCAL ends with the migration's transaction: a migration may scope a value of its own.
_SET_LOCAL = re.compile(r"set\s+local\b", re.IGNORECASE)


@dataclass
class ValidationReport:
    """What `validate` found in migrations whose files are all good."""

    migrations: int = 0
    statements: int = 0
    no_transaction: int = 0  # statements that must run outside a transaction
    downs: int = 0
    applies_nothing: list[str] = field(default_factory=list)  # labels of no-op ups
    reverts_nothing: list[str] = field(default_factory=list)  # labels of no-op downs
    warnings: list[str] = field(default_factory=list)  # each one ` !     ` line
    format_line: str = ""  # whose files they are, and why (formatchoice.py)

    def counts(self) -> dict[str, int]:
        """The four counts, as `validate` returns them."""
        return {
            "migrations": self.migrations,
            "statements": self.statements,
            "no_transaction": self.no_transaction,
            "downs": self.downs,
        }

    def details(self) -> list[str]:
        """The report's detail lines: the counts, then the notes."""
        lines = [
            f"{self.statements} statement(s); {self.no_transaction} must run outside a "
            f"transaction; {self.downs} down migration(s)"
        ]
        if self.applies_nothing:
            lines.append(
                f"{len(self.applies_nothing)} migration(s) have no SQL and are recorded as "
                f"applied without running anything: {_names(self.applies_nothing)}"
            )
        if self.reverts_nothing:
            lines.append(
                f"{len(self.reverts_nothing)} down migration(s) are empty: reverting them only "
                f"forgets them: {_names(self.reverts_nothing)}"
            )
        return lines


def check_folder(
    directory: Path, app_root: Path | None = None, tool: ToolName | None = None
) -> tuple[list[Migration], ValidationReport]:
    """`validate`: load every file and split every section, reporting every problem of the
    folder (bad names, files and SQL) in one BadInput; else the migrations and the report,
    which says whose files they were found to be, and why."""
    from herokumigrate.source import read_folder

    problems = FileProblems()
    reading = read_folder(directory, app_root, problems, tool)
    report = check_migrations(reading.migrations, problems)
    problems.raise_if_any()
    tools = list(dict.fromkeys(m.format for m in reading.migrations))
    if tools and reading.choice.because:
        report.format_line = f"Format: {' and '.join(tools)} ({reading.choice.because})"
    return reading.migrations, report


def validate(migrations: list[Migration]) -> dict[str, int]:
    """Split every section (one BadInput listing every bad SQL); counts for the report.
    `check_migrations` also returns the notes and warnings to print."""
    problems = FileProblems()
    report = check_migrations(migrations, problems)
    problems.raise_if_any()
    return report.counts()


def check_migrations(migrations: list[Migration], problems: FileProblems) -> ValidationReport:
    """Split every up and down section; bad SQL and unreadable down files go to `problems`."""
    report = ValidationReport(migrations=len(migrations))
    for migration in migrations:
        try:
            count, outside, has_sql = _check_section(migration.up, report)
        except BadInput as exc:
            problems.add(migration.up.path.name, exc)
            continue
        report.statements += count
        report.no_transaction += outside
        if not has_sql:
            report.applies_nothing.append(migration.label)
        try:
            down = migration.down
            if down is None:
                continue
            _, _, has_sql = _check_section(down, report)
        except BadInput as exc:
            problems.add((migration.down_file or migration.up.path).name, exc)
            continue
        report.downs += 1
        if not has_sql:
            report.reverts_nothing.append(migration.label)
    if len(report.warnings) > WARNINGS_SHOWN:
        more = len(report.warnings) - WARNINGS_SHOWN
        del report.warnings[WARNINGS_SHOWN:]
        report.warnings.append(f"... and {more} more statement(s) changing protected settings")
    return report


def _check_section(section: SqlSection, report: ValidationReport) -> tuple[int, int, bool]:
    """(statements, statements that must run outside a transaction, whether any is more than
    BEGIN/COMMIT) of one section; warnings about protected settings go to `report`."""
    from herokumigrate.sqlsplit import NO_TRANSACTION, TRANSACTION_CONTROL, session_setting

    count = outside = 0
    has_sql = False
    first_outside = None
    for statement in section.iter_statements():
        count += 1
        if statement.kind is NO_TRANSACTION:
            outside += 1
            first_outside = first_outside or statement
        if statement.kind is not TRANSACTION_CONTROL:
            has_sql = True
        if _MAYBE_SETTING.match(statement.text) is None or _SET_LOCAL.match(statement.text):
            continue
        setting = session_setting(statement.text)
        if setting is not None:
            report.warnings.append(_setting_warning(section, statement.line, setting))
    if first_outside is not None and count > 1 and section.one_query and not section.transaction:
        raise _in_one_query(section, first_outside)
    return count, outside, has_sql


def _in_one_query(section: SqlSection, statement: Statement) -> BadInput:
    """A statement PostgreSQL refuses in a transaction, in a section its tool sends as one
    query with other statements: PostgreSQL runs them in one implicit transaction, so the
    tool itself fails on the file."""
    from herokumigrate.output import first_words

    return BadInput(
        f"{section.path.shown}: line {statement.line}: {first_words(statement.text)} cannot "
        "run in this file: its tool sends the whole file as one query, which PostgreSQL runs "
        "in one transaction when it holds several statements (the tool itself fails on it)",
        fix="Put the statement in a migration of its own, outside a transaction.",
    )


def _setting_warning(section: SqlSection, line: int, setting: str) -> str:
    where = f"{section.path.shown}: line {line}"
    if setting == "all":
        return (
            f"{where}: resets every session setting, including the lock_timeout, "
            "statement_timeout and search_path the runner sets; remove it (the runner sets "
            "its own settings for every migration)"
        )
    return (
        f"{where}: changes {setting}, which the runner sets itself for every migration; "
        f"remove the statement, or use SET LOCAL {setting} for a value this migration needs"
    )


def _names(labels: list[str]) -> str:
    shown = ", ".join(labels[:NAMES_SHOWN])
    return shown if len(labels) <= NAMES_SHOWN else f"{shown} and {len(labels) - NAMES_SHOWN} more"
