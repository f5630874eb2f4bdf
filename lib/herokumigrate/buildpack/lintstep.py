"""The build's release-safety check, part of the validate step: every migration file through
PostgreSQL's parser (syntax, and our splitter's statement boundaries), then the lint of the files
that are new since the app's previous build.

Which files are new: the cache keeps the versions and checksums this check passed last time. A
cold cache makes every file new, and the report says so. A file whose checksum changed counts as
new too. The new files are checked as one release after the older ones (read for what they
create: tables that older files create count as existing; the new files' own are exempt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from herokumigrate import lint
from herokumigrate.buildpack import BuildFailed, parser
from herokumigrate.config import Config, LintMode, OnRollback, TransactionMode
from herokumigrate.migration import Migration
from herokumigrate.output import Output
from herokumigrate.pgparse import ParsedSection, check_boundaries, parse_section, skips_parsing
from herokumigrate.source import load_migrations
from herokumigrate.versions import Version

STATE_FILE = "lint-state.json"
_STATE_FORMAT = 1


def check_release_safety(build_dir: Path, config: Config, cache: Path, out: Output) -> None:
    """Parse and lint the app's migrations; raises BadInput (a broken file, a split that
    disagrees with PostgreSQL's) or BuildFailed (lint findings with `lint = "error"`)."""
    mode = config.lint
    migrations = load_migrations(config.migrations_dir, build_dir, config.tool)
    state = cache / STATE_FILE
    previous = _recall(state, config.path)
    new = _new_since(migrations, previous, config, out)
    if not config.parse:
        out.detail(
            "PostgreSQL's parser is off (MIGRATE_PARSE or parse in migrate.toml): "
            "no syntax check, no lint"
        )
        return
    pg_parser = parser.obtain(cache, out)
    if pg_parser is None:
        return
    to_lint = {m.version for m in new} if mode is not LintMode.OFF else set()
    checked, context, unparsed = _parse_all(pg_parser, migrations, to_lint)
    parsed_count = len(migrations) - len(unparsed)
    out.detail(
        f"{parsed_count} migration(s) parsed; statement boundaries agree with the release's "
        "splitter"
    )
    if unparsed:
        out.detail(f"Not parsed (-- heroku-migrate:no-parse): {', '.join(unparsed)}")
    if mode is LintMode.OFF:
        out.detail("Release-safety lint is off (MIGRATE_LINT or lint in migrate.toml)")
        _remember(state, config.path, migrations)
        return
    if previous is None:
        out.detail("No record of a previous build in the cache: every migration counts as new")
    one_transaction = config.transaction is TransactionMode.RELEASE
    reports = lint.lint_sections(
        checked, parser=pg_parser, context=context, one_transaction=one_transaction
    )
    errors = _report(reports, len(new), mode, out)
    if errors and mode is LintMode.ERROR:
        files = sum(1 for r in reports if r.errors)
        raise BuildFailed(
            f"Release-safety lint: {errors} error(s) in {files} file(s), listed above; "
            'lint = "error" fails the build on them.',
            fix="Make each change the safe way the report says, or allow one on purpose with a "
            "comment naming its rule (-- heroku-migrate:allow RULE) above the statement, or set "
            "MIGRATE_LINT=warn.",
        )
    _remember(state, config.path, migrations)


def _new_since(
    migrations: list[Migration], previous: dict[str, str] | None, config: Config, out: Output
) -> list[Migration]:
    """The migrations new since the previous build (every one with a cold cache); what their
    downs would lose in a rollback is said when there was a previous build."""
    if previous is None:
        return list(migrations)
    new = [m for m in migrations if previous.get(str(m.version)) != m.checksum]
    _say_lossy_downs(new, config, out)
    return new


def _say_lossy_downs(new: list[Migration], config: Config, out: Output) -> None:
    """The new migrations' down statements that drop data: a warning when a rollback reverts
    them (`on_rollback = "revert"`), a detail line otherwise (docs/rollback.md)."""
    from herokumigrate.downloss import lossy_downs

    found = lossy_downs(new)
    if not found:
        return
    where = [f"{s.file} line {s.line}: {s.text}" for s in found]
    if config.on_rollback is OnRollback.REVERT:
        out.warn(
            f"Rolling this release back (heroku rollback, MIGRATE_ON_ROLLBACK=revert) runs "
            f"{len(found)} down statement(s) of its new migrations that drop data, with what "
            "the app wrote to it since the deploy:",
            *where,
        )
        return
    out.detail(
        f"The downs of the new migrations hold {len(found)} statement(s) that drop data; with "
        f"MIGRATE_ON_ROLLBACK=revert a rollback would run them: {'; '.join(where)}"
    )


def _parse_all(
    pg_parser: Any, migrations: list[Migration], to_lint: set[Version]
) -> tuple[list[ParsedSection], list[ParsedSection], list[str]]:
    """Parse every migration (boundaries checked against the splitter's); returns the up
    sections to lint, the older ones read for what they create, and the files not parsed."""
    checked: list[ParsedSection] = []
    context: list[ParsedSection] = []
    unparsed = []
    for migration in migrations:
        sections = [s for s in (migration.up, migration.down) if s is not None]
        if any(skips_parsing(s) for s in sections):
            unparsed.append(migration.filename)
            continue
        for section in sections:
            # Only up sections need their trees decoded (when some file is new); the rest,
            # boundaries.
            trees = section is migration.up and bool(to_lint)
            parsed = parse_section(pg_parser, section, trees=trees, wanted=lint.NODES_READ)
            check_boundaries(parsed, migration.format)
            if trees:
                (checked if migration.version in to_lint else context).append(parsed)
    return checked, context, unparsed


def _counts(findings: int, errors: int) -> str:
    return f"{errors} error(s), {findings - errors} warning(s)"


def _report(reports: list[lint.FileReport], new: int, mode: LintMode, out: Output) -> int:
    """Detail lines grouped by file, with counts; a warning line when something was found.
    Returns the number of error-level findings."""
    found = sum(len(r.findings) for r in reports)
    errors = sum(r.errors for r in reports)
    silenced = sum(r.suppressed for r in reports)
    files = sum(1 for r in reports if r.findings)
    summary = f"{_counts(found, errors)} in {files} file(s)" if found else "nothing found"
    allowed = f", {silenced} allowed by comments" if silenced else ""
    out.detail(f"Release-safety lint of {new} new migration(s): {summary}{allowed}")
    for report in reports:
        silenced_here = f", {report.suppressed} allowed" if report.suppressed else ""
        out.detail(f"{report.file}: {_counts(len(report.findings), report.errors)}{silenced_here}")
        for finding in report.findings:
            rule = finding.rule
            out.detail(
                f"  line {finding.line}: {rule.id} ({rule.level}, {rule.category}): "
                f"{finding.subject}"
            )
            out.detail(f"    why: {rule.why}")
            out.detail(f"    instead: {rule.instead}")
        for note in report.notes:
            out.detail(f"  {note}")
    if found:
        first = next(r.findings[0] for r in reports if r.findings)
        out.detail(
            "To allow one on purpose, put a comment naming its rule above the statement: "
            f"-- {lint.ALLOW_DIRECTIVE} {first.rule.id}"
        )
        if mode is LintMode.WARN or not errors:
            then = (
                "MIGRATE_LINT=error makes errors fail it" if mode is LintMode.WARN else "no errors"
            )
            out.warn(
                f"Release-safety lint: {summary} (listed under the validate step). "
                f"The build goes on ({then})."
            )
    return errors


def _recall(state: Path, path_setting: str) -> dict[str, str] | None:
    """version -> checksum of the migrations the previous build checked, or None."""
    try:
        doc = json.loads(state.read_text(encoding="utf-8"))
        if doc.get("format") != _STATE_FORMAT or doc.get("path") != path_setting:
            return None
        return {str(k): str(v) for k, v in doc["migrations"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def _remember(state: Path, path_setting: str, migrations: list[Migration]) -> None:
    doc = {
        "format": _STATE_FORMAT,
        "path": path_setting,
        "migrations": {str(m.version): m.checksum for m in migrations},
    }
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
