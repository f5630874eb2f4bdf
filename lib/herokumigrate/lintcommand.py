"""`heroku-migrate lint [PATH...]`: the release-safety lint on a laptop or in CI.

Without PATH, every migration is checked as if it were released alone, after the files before
it (what squawk and most linters do, file by file). With PATHs, the given files are checked as
one release (what a pull request ships), after every file before the first of them; files
between them that were not given are read as part of that release, not reported.

Needs PostgreSQL's parser, pglast (`pip install pglast==8.8`); never in the slug, so on a dyno
the command says so and exits 2. Exit 1 when a finding is at `error` level.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from herokumigrate.errors import EXIT_MIGRATION_FAILED, EXIT_OK, BadInput

if TYPE_CHECKING:
    from herokumigrate.config import Config
    from herokumigrate.lint import FileReport, Finding
    from herokumigrate.migration import Migration
    from herokumigrate.output import Output
    from herokumigrate.versions import Version

ReportFormat = Literal["text", "json"]
REPORT_FORMATS: tuple[ReportFormat, ...] = ("text", "json")


@dataclass
class LintRun:
    """What `lint` checked and found."""

    checked: list[str]
    together: bool
    """True: the checked files form one release; False: each file is released alone."""
    reports: list[FileReport] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        """Every finding, file by file, in line order."""
        return [f for report in self.reports for f in report.findings]

    def count(self, level: str) -> int:
        """How many findings are at `level`."""
        return sum(1 for f in self.findings if f.rule.level == level)


def lint_command(config: Config, output: Output, paths: list[Path], report: ReportFormat) -> int:
    """Run the lint over the app's migrations (or the given ones) and render the result."""
    from herokumigrate.source import load_migrations

    parser = _load_parser()
    migrations = load_migrations(config.migrations_dir, config.app_dir, config.tool)
    wanted = _selected(migrations, paths, config) if paths else None
    run = run_lint(parser, migrations, wanted, one_transaction=_one_transaction(config))
    if report == "json":
        sys.stdout.write(output.redact(json.dumps(_document(run), indent=2)) + "\n")
        sys.stdout.flush()
    else:
        _render(run, config.path, output)
    return EXIT_MIGRATION_FAILED if run.count("error") else EXIT_OK


def run_lint(
    parser: object,
    migrations: list[Migration],
    wanted: set[Version] | None,
    *,
    one_transaction: bool = True,
) -> LintRun:
    """Lint `migrations` (sorted): each alone after the ones before it (`wanted` None), or the
    `wanted` versions as one release after the ones before the first of them."""
    from herokumigrate.lint import ReleaseLint, parse_ups
    from herokumigrate.pgparse import skips_parsing

    linter = ReleaseLint(parser, one_transaction=one_transaction)
    parsed = {m.version: parse_ups(parser, [m]) for m in migrations}
    unparsed = [m.filename for m in migrations if skips_parsing(m.up)]
    if wanted is None:
        run = LintRun([m.filename for m in migrations], together=False, unparsed=unparsed)
        for migration in migrations:
            run.reports.extend(linter.check(parsed[migration.version]))
        return run
    first, last = min(wanted), max(wanted)
    linter.learn(s for m in migrations if m.version < first for s in parsed[m.version])
    release = [s for m in migrations if first <= m.version <= last for s in parsed[m.version]]
    names = {m.up.path.name for m in migrations if m.version in wanted}
    checked = [m.filename for m in migrations if m.version in wanted]
    run = LintRun(checked, together=True, unparsed=[u for u in unparsed if u in checked])
    run.reports = linter.check(release, reported=lambda s: s.section.path.name in names)
    return run


def _load_parser() -> object:
    try:
        from herokumigrate.pgparse import PGLAST_REQUIREMENT, ParserUnavailable, load_parser
    except ImportError:  # a slug: the lint's modules are build-time only (buildpack/build.py)
        raise BadInput(
            "heroku-migrate lint is not installed in the slug: the build lints new migrations, "
            "and `plan` shows what a release would do",
            fix="Run `heroku-migrate lint` on a laptop or in CI (pip install "
            "heroku-buildpack-migrate pglast), or read the build log's lint report.",
        ) from None
    try:
        return load_parser()
    except ParserUnavailable as exc:
        raise BadInput(
            f"heroku-migrate lint needs PostgreSQL's parser, pglast, which cannot be imported "
            f"here ({exc})",
            fix=f"Install it next to heroku-migrate: `pip install {PGLAST_REQUIREMENT}` (a "
            "laptop and CI tool: the build fetches its own copy, the slug never has it).",
        ) from None


def _one_transaction(config: Config) -> bool:
    from herokumigrate.config import TransactionMode

    return config.transaction is TransactionMode.RELEASE


def _selected(migrations: list[Migration], paths: list[Path], config: Config) -> set[Version]:
    """The versions of the migrations whose file (up or down) each PATH names."""
    by_file: dict[str, Version] = {}
    for m in migrations:
        files = [m.up.path, m.down_file] if m.down_file is not None else [m.up.path]
        for source in files:
            by_file[os.path.realpath(source)] = m.version
    versions = set()
    for path in paths:
        version = by_file.get(os.path.realpath(path))
        if version is None:
            raise BadInput(
                f"{path} is not a migration file of {config.path} (the `path` setting)",
                fix="Name files of the migrations folder (`heroku-migrate lint` alone checks "
                "them all), or point --path at the folder that holds this one.",
            )
        versions.add(version)
    return versions


def _render(run: LintRun, folder: str, output: Output) -> None:
    how = "as one release" if run.together else "each as released alone"
    output.step(
        f"Release-safety lint of {len(run.checked)} migration(s) in {folder} ({how}, after the "
        "files before them)"
    )
    for report in run.reports:
        output.detail(f"{report.file}: {_counts(report.findings, report.suppressed)}")
        for finding in report.findings:
            rule = finding.rule
            output.detail(
                f"  line {finding.line}: {rule.id} ({rule.level}, {rule.category}): "
                f"{finding.subject}"
            )
            output.detail(f"    why: {rule.why}")
            output.detail(f"    instead: {rule.instead}")
        for note in report.notes:
            output.detail(f"  {note}")
    if run.unparsed:
        output.detail(f"Not parsed (-- heroku-migrate:no-parse): {', '.join(run.unparsed)}")
    allowed = sum(r.suppressed for r in run.reports)
    output.step(_counts(run.findings, allowed))
    if run.findings:
        output.detail(
            "To allow one on purpose, put a comment naming its rule above the statement: "
            f"-- heroku-migrate:allow {run.findings[0].rule.id}"
        )


def _counts(findings: list[Finding], allowed: int) -> str:
    errors = sum(1 for f in findings if f.rule.level == "error")
    text = f"{errors} error(s), {len(findings) - errors} warning(s)"
    return text + (f", {allowed} allowed by comments" if allowed else "")


def _document(run: LintRun) -> dict[str, object]:
    """`lint --format json`: the whole result as one document."""
    return {
        "release": "together" if run.together else "each",
        "checked": run.checked,
        "not_parsed": run.unparsed,
        "errors": run.count("error"),
        "warnings": run.count("warning"),
        "allowed": sum(r.suppressed for r in run.reports),
        "findings": [
            {
                "file": f.file,
                "line": f.line,
                "rule": f.rule.id,
                "level": f.rule.level,
                "category": f.rule.category,
                "subject": f.subject,
                "why": f.rule.why,
                "instead": f.rule.instead,
            }
            for f in run.findings
        ],
        "notes": [{"file": r.file, "note": note} for r in run.reports for note in r.notes],
    }
