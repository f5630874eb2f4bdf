"""Release-safety lint: statements that break the release still serving, or block a table for long.

The release phase runs while the previous release's dynos keep serving, so a migration can
succeed and still cause an outage. Each rule (`lintrules.py`, docs/lint.md) reads PostgreSQL's
parse tree (`pgparse.py`, checks in `lintchecks.py`), has a stable id, a level, a one-line why
and the safe alternative.

`ReleaseLint` reads migrations in order: first those released before (`learn`: what they create
exists, nothing is reported), then one release to check (`check`). Rules about a table, column,
index or object apply only to what existed before that release: what it creates itself is
exempt. Statements that share a transaction (with `transaction = "release"`, all of a release's
migrations; else each file) are read as such: a view dropped and created again in one transaction
is not gone; a constraint added NOT VALID and validated in one transaction blocks as if valid.

A statement is exempt from a rule by a comment naming it: `-- heroku-migrate:allow rename-column`
(several ids: separated by spaces or commas). The comment applies to the statement it is written
in, to the statement that ends on its line (a comment after the `;`), or else to the next one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from herokumigrate.lintchecks import CHECKS, NODES_READ, At, creations
from herokumigrate.lintrules import RULES, Rule
from herokumigrate.lintschema import CONTEXT, ObjectKind, Schema, TableName
from herokumigrate.pgparse import ParsedSection, ParsedStatement
from herokumigrate.sqlsplit import NO_TRANSACTION, TRANSACTION_CONTROL

if TYPE_CHECKING:
    from herokumigrate.migration import Migration

__all__ = [
    "ALLOW_DIRECTIVE",
    "NODES_READ",
    "RULES",
    "FileReport",
    "Finding",
    "ReleaseLint",
    "Rule",
    "TableName",
    "lint_migrations",
    "lint_sections",
]

ALLOW_DIRECTIVE = "heroku-migrate:allow"
_ALLOW_RE = re.compile(r"heroku-migrate:allow\b([^\n]*)")
_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})


@dataclass(frozen=True)
class Finding:
    """One rule that a statement breaks."""

    rule: Rule
    file: str
    line: int
    subject: str
    """What it is about: a table, `table.column`, a setting."""


@dataclass
class FileReport:
    """What the lint found in one file, in line order, and the notes about its comments."""

    file: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    suppressed: int = 0

    @property
    def errors(self) -> int:
        """How many findings are at `error` level."""
        return sum(1 for f in self.findings if f.rule.level == "error")


Creations = dict[tuple[int, ObjectKind, str], list[int]]  # (transaction, kind, name) -> where


class ReleaseLint:
    """The lint of one release, after the migrations released before it."""

    def __init__(
        self,
        parser: Any,
        *,
        table_exists: Callable[[TableName], bool] | None = None,
        one_transaction: bool = True,
    ) -> None:
        """`table_exists`: whether the database has a table (plan); by default a table no
        migration read created counts as existing. `one_transaction`: the release's migrations
        share one transaction (`transaction = "release"`), else one each."""
        self._parser = parser
        self._schema = Schema(table_exists)
        self._one_transaction = one_transaction
        self._releases = CONTEXT
        self._transactions = 0

    def learn(self, sections: Iterable[ParsedSection]) -> None:
        """Read migrations released before the ones to check: what they create exists."""
        self._schema.read_release(CONTEXT)
        for parsed in sections:
            for statement, transaction in zip(
                parsed.statements, self._transactions_of([parsed]), strict=True
            ):
                self._read(statement, transaction, {}, 0)

    def check(
        self,
        sections: Sequence[ParsedSection],
        *,
        reported: Callable[[ParsedSection], bool] | None = None,
    ) -> list[FileReport]:
        """Check the up sections of one release's migrations, in the order they run.

        Returns one report per file with a finding, a note or a silenced finding (silenced
        ones only counted). With `reported`, the other sections are read but not reported.
        """
        self._releases += 1
        self._schema.read_release(self._releases)
        transactions = self._transactions_of(sections)
        creations = self._creations(sections, transactions)
        reports = []
        position = 0
        for parsed in sections:
            report = FileReport(parsed.section.path.name)
            allowed = _allowed(parsed, self._parser, report)
            found: list[Finding] = []
            for index, statement in enumerate(parsed.statements):
                for rule_id, subject in self._read(
                    statement, transactions[position], creations, position
                ):
                    if rule_id in allowed.get(index, ()):
                        report.suppressed += 1
                    else:
                        found.append(Finding(RULES[rule_id], report.file, statement.line, subject))
                position += 1
            found.extend(_shape(parsed, allowed, report))
            report.findings = sorted(found, key=lambda f: f.line)
            wanted = reported is None or reported(parsed)
            if wanted and (report.findings or report.notes or report.suppressed):
                reports.append(report)
        return reports

    def _transactions_of(self, sections: Sequence[ParsedSection]) -> list[int]:
        """The transaction of each statement of `sections` (a number each)."""
        numbers = []
        if self._one_transaction:
            self._transactions += 1
        for parsed in sections:
            if not self._one_transaction:
                self._transactions += 1
            for _ in parsed.statements:
                if not parsed.section.transaction:  # dbmate transaction:false, goose NO TRANSACTION
                    self._transactions += 1
                numbers.append(self._transactions)
        return numbers

    @staticmethod
    def _creations(sections: Sequence[ParsedSection], transactions: list[int]) -> Creations:
        """Where each transaction creates each view, function, type and UNIQUE key."""
        found: Creations = {}
        statements = (s for parsed in sections for s in parsed.statements)
        for position, statement in enumerate(statements):
            for kind, name in creations(statement.node_type, statement.node):
                found.setdefault((transactions[position], kind, name), []).append(position)
        return found

    def _read(
        self, statement: ParsedStatement, transaction: int, creations: Creations, position: int
    ) -> list[tuple[str, str]]:
        """Run the statement's check (which records what it changes); what it finds."""
        check = CHECKS.get(statement.node_type)
        if check is None:
            return []
        self._schema.read_transaction(transaction)

        def created_later(kind: ObjectKind, name: str) -> bool:
            # This statement too: ALTER TABLE t DROP CONSTRAINT t_pkey, ADD PRIMARY KEY (...)
            return any(p >= position for p in creations.get((transaction, kind, name), ()))

        return list(check(statement.node, At(self._schema, created_later)))


def lint_sections(
    sections: Iterable[ParsedSection],
    *,
    parser: Any,
    table_exists: Callable[[TableName], bool] | None = None,
    context: Iterable[ParsedSection] = (),
    one_transaction: bool = True,
) -> list[FileReport]:
    """Check the up sections of one release's migrations, in the order they run, after reading
    `context` (the migrations released before them). See `ReleaseLint`."""
    release = ReleaseLint(parser, table_exists=table_exists, one_transaction=one_transaction)
    release.learn(context)
    return release.check(list(sections))


def _shape(
    parsed: ParsedSection, allowed: dict[int, set[str]], report: FileReport
) -> list[Finding]:
    """`concurrent-with-others`, read from the runner's own statement kinds."""
    kinds = [s.kind for s in parsed.section.statements]
    outside = [i for i, kind in enumerate(kinds) if kind == NO_TRANSACTION]
    others = [kind for kind in kinds if kind not in (NO_TRANSACTION, TRANSACTION_CONTROL)]
    if not outside or (len(outside) == 1 and not others):
        return []
    index = outside[0]
    if "concurrent-with-others" in allowed.get(index, ()):
        report.suppressed += 1
        return []
    statement = parsed.section.statements[index]
    subject = f"{len(kinds) - kinds.count(TRANSACTION_CONTROL)} statements"
    return [Finding(RULES["concurrent-with-others"], report.file, statement.line, subject)]


def _allowed(parsed: ParsedSection, parser: Any, report: FileReport) -> dict[int, set[str]]:
    """Rule ids allowed per statement index, from `-- heroku-migrate:allow ...` comments."""
    sql = parsed.section.sql
    if ALLOW_DIRECTIVE not in sql:
        return {}
    allowed: dict[int, set[str]] = {}
    for token in parser.scan(sql):
        if token.name not in _COMMENT_TOKENS:
            continue
        text = sql[token.start : token.end + 1]
        match = _ALLOW_RE.search(text)
        if match is None:
            continue
        line = parsed.section.first_line + sql.count("\n", 0, token.start)
        ids = [word for word in re.split(r"[\s,]+", match.group(1).rstrip("*/ \t")) if word]
        unknown = [word for word in ids if word not in RULES]
        if unknown or not ids:
            report.notes.append(
                f"line {line}: {ALLOW_DIRECTIVE} names no known rule "
                f"({', '.join(unknown) or 'none given'}); rule ids are listed in docs/lint.md"
            )
        target = _target(parsed.statements, sql, token.start)
        if target is None:
            report.notes.append(f"line {line}: {ALLOW_DIRECTIVE} follows the last statement")
            continue
        allowed.setdefault(target, set()).update(i for i in ids if i in RULES)
    return allowed


def _target(statements: list[ParsedStatement], sql: str, at: int) -> int | None:
    """The statement a comment at offset `at` applies to (see the module docstring)."""
    for index, statement in enumerate(statements):
        if statement.start <= at < statement.end:
            return index
        if statement.start > at:
            previous = statements[index - 1] if index else None
            if previous is not None and "\n" not in sql[previous.end : at]:
                return index - 1
            return index
    if statements and "\n" not in sql[statements[-1].end : at]:
        return len(statements) - 1
    return None


def parse_ups(parser: Any, migrations: Iterable[Migration]) -> list[ParsedSection]:
    """The up sections of `migrations` as the lint reads them, leaving out those with a
    `-- heroku-migrate:no-parse` line. Raises BadInput on a syntax error."""
    from herokumigrate.pgparse import parse_section, skips_parsing

    ups = [m.up for m in migrations]
    return [parse_section(parser, up, wanted=NODES_READ) for up in ups if not skips_parsing(up)]


def lint_migrations(
    migrations: Iterable[Migration],
    *,
    table_exists: Callable[[TableName], bool] | None = None,
    context: Iterable[Migration] = (),
    one_transaction: bool = True,
) -> list[FileReport]:
    """Parse and check the up sections of `migrations` as one release, in order (`plan`: the
    pending ones), after `context` (the migrations applied before them).

    Raises ParserUnavailable when pglast cannot be imported, BadInput on a syntax error.
    Sections with a `-- heroku-migrate:no-parse` line are left out.
    """
    from herokumigrate.pgparse import load_parser

    parser = load_parser()
    return lint_sections(
        parse_ups(parser, migrations),
        parser=parser,
        table_exists=table_exists,
        context=parse_ups(parser, context),
        one_transaction=one_transaction,
    )
