"""`heroku-migrate`: the command line. Arguments in, a `Migrator` call, its result rendered as
text or JSON. Runs no SQL itself.

The one place that turns errors into ` !     ` lines and exit codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from herokumigrate.arguments import Arguments, parse_command_line
from herokumigrate.config import (
    Config,
    LintMode,
    app_root,
    load_config,
    release_skipped_message,
    skip_requested_by,
    unknown_env_settings,
)
from herokumigrate.errors import EXIT_MIGRATION_FAILED, EXIT_OK, BadInput, MigrateError
from herokumigrate.libraries import unloadable_library
from herokumigrate.output import Output

if TYPE_CHECKING:
    from collections.abc import Callable

    from herokumigrate.locks import MigrationLocks
    from herokumigrate.migration import Migration
    from herokumigrate.migrator import Migrator, PlanReport, StatusEntry, StatusReport, UpResult
    from herokumigrate.native import Resolution
    from herokumigrate.versions import Version


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    output = Output()
    argv = sys.argv[1:] if argv is None else list(argv)
    from herokumigrate.signals import Interrupted, install_stop_signals

    stop_signals = install_stop_signals()
    json_output = False
    try:
        args, flags = parse_command_line(argv)
        json_output = bool(getattr(args, "json", False))
        if args.command is None:
            raise BadInput(
                "no command given",
                fix="Run `heroku-migrate up` to apply pending migrations; "
                "`heroku-migrate --help` lists every command.",
            )
        if args.json and args.command in ("plan", "up"):
            # stdout carries the JSON document alone; progress lines go to stderr.
            output = Output(out=sys.stderr)
        app_dir = app_root(os.environ)
        if args.command == "up" and not args.dry_run:
            skipped_by = skip_requested_by(app_dir, os.environ, flags)
            if skipped_by is not None:
                output.warn(*release_skipped_message(skipped_by))
                return EXIT_OK
        config = load_config(app_dir, os.environ, flags)
        for name in unknown_env_settings(os.environ):
            output.warn(f"{name} is not a heroku-migrate setting and is ignored (a typo?)")
        return _dispatch(args, config, output)
    except MigrateError as exc:
        output.error(*exc.lines())
        if json_output:
            _render_error_json(output, exc.message, exc.details, exc.fix, exc.exit_code)
        return exc.exit_code
    except Interrupted as stop:
        output.error(*stop.lines())
        if json_output:
            lines = stop.lines()
            _render_error_json(output, lines[0], tuple(lines[1:-1]), lines[-1], stop.exit_code)
        return stop.exit_code
    except KeyboardInterrupt:
        output.error("Interrupted; an open transaction was rolled back by the server.")
        return 130
    except Exception as exc:  # the one place that reports bugs: one redacted line, no traceback
        environment = unloadable_library(exc, os.environ)
        if environment is not None:  # LD_LIBRARY_PATH or the stack, not a bug
            output.error(*environment.lines())
            return environment.exit_code
        message = " ".join(str(exc).split())
        output.error(
            f"internal error in heroku-migrate: {type(exc).__name__}: {message} "
            "(a bug: please report it with this line)"
        )
        return EXIT_MIGRATION_FAILED
    finally:
        stop_signals.uninstall()


def _dispatch(args: Arguments, config: Config, output: Output) -> int:
    """Run the command `args` names (COMMANDS: one handler each)."""
    handler = COMMANDS.get(args.command or "")
    if handler is None:
        raise BadInput(f"unknown command {args.command!r}", fix="See `heroku-migrate --help`.")
    return handler(args, config, output)


def _files(config: Config) -> list[Migration]:
    from herokumigrate.source import load_migrations

    return load_migrations(config.migrations_dir, config.app_dir, config.tool)


def _up(args: Arguments, config: Config, output: Output) -> int:
    if args.dry_run:
        return _plan(args, config, output)
    if args.json:
        raise BadInput(
            "up --json is only for a dry run",
            fix="Run `heroku-migrate plan --json` (or `up --dry-run --json`).",
        )
    from herokumigrate.manifest import MANIFEST_ENV, read_manifest

    if os.environ.get(MANIFEST_ENV):
        # The release phase: the build's manifest spares reading every file when none changed.
        fingerprint = read_manifest(os.environ[MANIFEST_ENV], config.migrations_dir, config.path)
        if fingerprint is not None:
            migrator = _migrator(config, output)
            return _render_up(output, migrator.up(None, fingerprint=fingerprint))
    migrations = _files(config)
    return _render_up(output, _migrator(config, output).up(migrations))


def _plan(args: Arguments, config: Config, output: Output) -> int:
    migrations = _files(config)
    rehearsal = _migrator(config, output).plan(migrations, lint=config.lint is not LintMode.OFF)
    if args.json:
        return _render_plan_json(output, rehearsal)
    return _render_plan(output, rehearsal)


def _status(args: Arguments, config: Config, output: Output) -> int:
    migrations = _files(config)
    report = _migrator(config, output).status(migrations)
    if args.json:
        return _render_status_json(output, report)
    return _render_status(output, report, config.path, len(migrations))


def _down(args: Arguments, config: Config, output: Output) -> int:
    migrations = _files(config)
    down = _migrator(config, output).down(migrations, args.count, confirmed=args.yes)
    output.step(f"Reverted {len(down.reverted)} migration(s)")
    return EXIT_OK


def _goto(args: Arguments, config: Config, output: Output) -> int:
    migrations = _files(config)
    goto = _migrator(config, output).goto(migrations, args.version, confirmed=args.yes)
    output.step(f"At version {goto.version}: reverted {goto.reverted}, applied {goto.applied}")
    return EXIT_OK


def _force(args: Arguments, config: Config, output: Output) -> int:
    migrations = _files(config)
    forced = _migrator(config, output).force(migrations, args.version)
    output.step(
        f"Recorded version {forced.version} as current: marked {forced.marked} applied, "
        f"forgot {forced.forgot}"
    )
    if forced.created is not None:
        from herokumigrate.firstcontact import created_native

        output.detail(created_native(forced.created))
    return EXIT_OK


def _resolve(args: Arguments, config: Config, output: Output) -> int:
    outcome: Resolution = "applied" if args.outcome == "applied" else "rolled-back"
    table = _migrator(config, output).resolve(_files(config), args.version, outcome)
    output.step(f"Resolved {args.version} as {outcome} in {table} and the history")
    if outcome == "rolled-back":
        output.detail("The next `heroku-migrate up` (your next release) applies it again.")
    return EXIT_OK


def _validate(args: Arguments, config: Config, output: Output) -> int:
    """Check every file offline (the build runs this; it imports nothing of the database
    side, which the build may lack): every problem in one error, else the report."""
    from herokumigrate.validation import check_folder

    migrations, report = check_folder(config.migrations_dir, config.app_dir, config.tool)
    if args.manifest is not None:
        from herokumigrate.manifest import write_manifest

        write_manifest(args.manifest, config.migrations_dir, config.path, migrations)
    output.step(f"Validated {report.migrations} migration(s) in {config.path}")
    if report.format_line:
        output.detail(report.format_line)
    for line in report.details():
        output.detail(line)
    for warning in report.warnings:
        output.warn(warning)
    return EXIT_OK


def _migrator(config: Config, output: Output) -> Migrator:
    from herokumigrate.migrator import Migrator

    return Migrator(config, output)


def _render_up(output: Output, result: UpResult) -> int:
    if result.up_to_date:
        output.step(
            f"Database is up to date ({result.recorded} migration(s) applied, none pending)"
        )
    return EXIT_OK


def _render_plan(output: Output, report: PlanReport) -> int:
    """The locks (and lint findings) of each pending migration, under the dry run's lines."""
    if report.reverts:
        output.step("Locks each down takes on rollback (observed in the rolled-back transaction)")
        for entry in report.reverts:
            lines = [lock.describe() for lock in entry.locks]
            none = " takes no table lock the release does not hold already"
            output.detail(f"{entry.migration.label}:" + ("" if lines else none))
            for line in lines:
                output.detail("  " + line)
    if report.result is not None and report.result.up_to_date:
        return _render_up(output, report.result)
    ran = [entry for entry in report.migrations if entry.ran]
    if ran:
        output.step("Locks each migration takes (observed in the rolled-back transaction)")
    for entry in ran:
        lines = [lock.describe() for lock in entry.locks]
        lines.extend(_lint_lines(report, entry))
        none = " takes no table lock the release does not hold already"
        output.detail(f"{entry.migration.label}:" + ("" if lines else none))
        if entry.migration.reverts_nothing:
            from herokumigrate.migration import REVERTS_NOTHING

            lines.append(REVERTS_NOTHING)
        for line in lines:
            output.detail("  " + line)
    if report.lint is not None and not report.lint.available:
        from herokumigrate.planlint import NOT_AVAILABLE

        output.detail(NOT_AVAILABLE)
    elif report.lint is not None and report.lint.problem:
        output.detail(f"lint: not run, PostgreSQL's parser refused a file: {report.lint.problem}")
    if report.failure is not None:
        raise report.failure
    return EXIT_OK


def _lint_lines(report: PlanReport, entry: MigrationLocks) -> list[str]:
    from herokumigrate.planlint import describe

    lint = report.lint
    if lint is None:
        return []
    version = entry.migration.version
    lines = [describe(finding) for finding in lint.findings.get(version, [])]
    lines.extend(f"lint: {note}" for note in lint.notes.get(version, []))
    return lines


def _render_error_json(
    output: Output, message: str, details: tuple[str, ...], fix: str, exit_code: int
) -> None:
    """A refused or failed `--json` command: the error as a JSON document on stdout (the
    ` !     ` lines went to stderr), so that a script reading stdout gets a document."""
    import json

    error = {"message": message, "details": list(details), "fix": fix, "exit_code": exit_code}
    sys.stdout.write(output.redact(json.dumps({"error": error}, indent=2)) + "\n")


def _render_plan_json(output: Output, report: PlanReport) -> int:
    """`plan --json`: one document on stdout (progress went to stderr)."""
    import json

    lint = report.lint
    doc: dict[str, Any] = {
        "result": "failed" if report.failure else "ok",
        "error": None,
        "up_to_date": bool(report.result and report.result.up_to_date),
        "lint": "not run" if lint is None else "ran" if lint.available else "not available",
        "lint_problem": lint.problem if lint is not None and lint.problem else None,
        "migrations": [_plan_entry_json(report, entry) for entry in report.migrations],
        # What a rollback reverts first, newest first (docs/rollback.md).
        "reverts": [
            {
                "version": entry.migration.version.json,
                "name": entry.migration.name,
                "locks": [
                    {"mode": lock.mode.value if lock.mode else None, "relation": lock.relation}
                    for lock in entry.locks
                ],
            }
            for entry in report.reverts
        ],
    }
    if report.failure is not None:
        failure = report.failure
        doc["error"] = {
            "message": failure.message,
            "details": list(failure.details),
            "fix": failure.fix,
        }
    sys.stdout.write(output.redact(json.dumps(doc, indent=2)) + "\n")
    sys.stdout.flush()
    if report.failure is not None:  # its lines go to stderr, with its exit code (1)
        output.error(*report.failure.lines())
        return report.failure.exit_code
    return EXIT_OK


def _plan_entry_json(report: PlanReport, entry: MigrationLocks) -> dict[str, Any]:
    m = entry.migration
    failed = report.failed is not None and report.failed.version == m.version
    findings = report.lint.findings.get(m.version, []) if report.lint else []
    return {
        "version": m.version.json,
        "name": m.name,
        "file": m.filename,
        "outcome": "ran" if entry.ran else "failed" if failed else "not run",
        "down": m.down_kind,
        "locks": [
            {
                "mode": lock.mode.value if lock.mode else None,
                "relation": lock.relation,
                "kind": lock.kind,
                "new": lock.new,
                "observed": lock.observed,
                "rewrites": lock.rewritten,
                "held_before": lock.held_before,
                "line": lock.line,
            }
            for lock in entry.locks
        ],
        "rewrites": entry.rewrites,
        "lint": [
            {
                "rule": f.rule.id,
                "level": f.rule.level,
                "category": f.rule.category,
                "line": f.line,
                "subject": f.subject,
                "why": f.rule.why,
                "instead": f.rule.instead,
            }
            for f in findings
        ],
        "lint_notes": report.lint.notes.get(m.version, []) if report.lint else [],
    }


def _status_text(entry: StatusEntry) -> str:
    if entry.kind == "adopted":
        return f"applied (by {entry.tool or '?'})"
    if entry.kind == "partial":
        return f"partial ({entry.row.progress if entry.row else 0} statement(s) ran)"
    if entry.kind == "changed":
        return "applied, file changed since"
    return entry.kind


def _render_status_json(output: Output, report: StatusReport) -> int:
    import json

    doc = {
        "migrations": [
            {
                "version": e.migration.version.json,
                "name": e.migration.name,
                "file": e.migration.filename,
                "status": _status_text(e),
                "applied_at": e.row.applied_at.isoformat() if e.row and e.row.applied_at else None,
                "duration_ms": e.row.duration_ms if e.row else None,
                "stored_down": report.downs.get(e.migration.version),
            }
            for e in report.entries
        ],
        "unknown": [
            {
                "version": row.version.json,
                "name": row.name,
                "applied_at": str(row.applied_at),
                "stored_down": report.downs.get(row.version),
            }
            for row in report.unknown
        ],
        "pending": [v.json for v in report.pending],
        "native": report.native,
        "native_problem": (
            {"message": report.native_problem[0], "details": list(report.native_problem[1:])}
            if report.native_problem
            else None
        ),
        "events": [
            {"at": str(ev.at), "event": ev.event, "detail": ev.detail} for ev in report.events
        ],
    }
    output.plain(json.dumps(doc, indent=2))
    return EXIT_OK


def _no_stored_down(report: StatusReport, version: Version) -> str:
    """`, no stored down` for a recorded version a rollback could not revert (docs/rollback.md)."""
    return ", no stored down" if report.downs.get(version) == "no stored down" else ""


def _render_status(output: Output, report: StatusReport, path: str, files: int) -> int:
    output.step(f"Migrations in {path} ({files} file(s))")
    texts = [_status_text(e) + _no_stored_down(report, e.migration.version) for e in report.entries]
    width = max((len(str(e.migration.version)) for e in report.entries), default=0)
    state_width = max((len(t) for t in texts), default=0)
    for e, text in zip(report.entries, texts, strict=True):
        at = e.row.applied_at if e.row else None
        when = at.isoformat()[:19].replace("T", " ") if at else ""
        output.detail(
            f"{e.migration.version!s:>{width}}  {text:<{state_width}}  {when:<19}  "
            f"{e.migration.name}"
        )
    if report.unknown:
        output.warn(
            "Applied but not in these files (a rollback?): "
            + ", ".join(
                f"{row.version} {row.name}" + _no_stored_down(report, row.version)
                for row in report.unknown
            )
        )
    if report.native_problem:
        output.warn(*report.native_problem)
    pending = len(report.pending)
    output.step(f"{pending} pending" if pending else "Up to date")
    events = report.events
    if events and events[0].event in ("failed", "down failed"):
        output.warn(f"Last run failed at {str(events[0].at)[:19]}: {events[0].detail}")
    return EXIT_OK


def _new(args: Arguments, config: Config, output: Output) -> int:
    import datetime as dt
    import re

    name, fmt = args.name, args.format
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise BadInput(
            f"migration name {name!r} has no letters or digits",
            fix="Describe the change, e.g. `heroku-migrate new add_users_email_index`.",
        )
    folder = config.migrations_dir
    folder.mkdir(parents=True, exist_ok=True)
    version = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    if any(p.name.startswith(version + "_") for p in folder.iterdir()):
        raise BadInput(
            f"a migration with version {version} already exists",
            fix="Wait a second and run the command again.",
        )
    from herokumigrate.formats import new_migration_files

    created = []
    for new_file in new_migration_files(fmt, version, slug, name):
        path = folder / new_file.name
        path.parent.mkdir(parents=True, exist_ok=True)  # a folder per migration (Diesel)
        path.write_text(new_file.content)
        created.append(path)
    output.step(f"Created migration {version}_{slug}")
    for path in created:
        output.detail(str(path.relative_to(config.app_dir) if path.is_absolute() else path))
    output.detail("Write the SQL, then push: the release phase applies it.")
    return EXIT_OK


# Each command's handler: the arguments, the settings and the output in, the exit code out.
def _lint(args: Arguments, config: Config, output: Output) -> int:
    from herokumigrate.lintcommand import lint_command

    return lint_command(config, output, args.paths, args.report)


COMMANDS: dict[str, Callable[[Arguments, Config, Output], int]] = {
    "up": _up,
    "plan": _plan,
    "status": _status,
    "validate": _validate,
    "down": _down,
    "goto": _goto,
    "force": _force,
    "resolve": _resolve,
    "new": _new,
    "lint": _lint,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
