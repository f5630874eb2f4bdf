"""`heroku-migrate`: the command line. A thin shell over source, runner and history.

The one place that turns errors into ` !     ` lines and exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from herokumigrate import __version__
from herokumigrate.config import Config, load_config, unknown_env_settings
from herokumigrate.errors import EXIT_OK, BadInput, MigrateError
from herokumigrate.output import Output

if TYPE_CHECKING:
    import psycopg

    from herokumigrate.runner import Runner
    from herokumigrate.source import Migration

_SETTING_FLAGS = (
    ("--path", "path", "migrations folder (default db/migrations)"),
    ("--database-url-var", "database_url_var", "config var holding the URL (default DATABASE_URL)"),
    ("--history-schema", "history_schema", "schema of the history table (default public)"),
    ("--history-table", "history_table", "history table (default heroku_migrate_history)"),
    ("--transaction", "transaction", "release (default) or migration"),
    ("--lock-wait", "lock_wait", "seconds to wait for the migration lock (default 300)"),
    ("--lock-timeout", "lock_timeout", "seconds a statement may wait for a lock (default 5)"),
    ("--statement-timeout", "statement_timeout", "seconds a statement may run (default 0: none)"),
    ("--retries", "retries", "retries on lock timeout or deadlock (default 5)"),
    ("--connect-timeout", "connect_timeout", "seconds per connection attempt (default 10)"),
    ("--connect-wait", "connect_wait", "seconds to retry connecting (default 180)"),
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as bad input (exit 2) in our format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{self.prog}: {message}", fix=f"See `{self.prog} --help`.")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every subcommand accepts the setting flags."""
    common = _Parser(add_help=False)
    for flag, dest, text in _SETTING_FLAGS:
        common.add_argument(flag, dest=dest, default=None, help=text)
    common.add_argument(
        "--allow-changed",
        dest="allow_changed",
        action="store_const",
        const="true",
        default=None,
        help="warn instead of failing when an applied file was edited",
    )
    parser = _Parser(
        prog="heroku-migrate",
        description="Apply pending PostgreSQL migrations atomically (see README).",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"heroku-migrate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    up = sub.add_parser("up", parents=[common], help="apply all pending migrations")
    up.add_argument("--dry-run", action="store_true", help="run everything, then roll back")
    sub.add_parser("plan", parents=[common], help="the same as `up --dry-run`")
    status = sub.add_parser("status", parents=[common], help="applied and pending migrations")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("validate", parents=[common], help="check the files (no database)")
    down = sub.add_parser("down", parents=[common], help="revert the N newest migrations")
    down.add_argument("count", type=_count, help="how many to revert")
    down.add_argument("--yes", action="store_true", help="confirm: this may drop data")
    goto = sub.add_parser("goto", parents=[common], help="migrate up or down to VERSION")
    goto.add_argument("version", type=_version_arg)
    goto.add_argument("--yes", action="store_true", help="confirm reverting newer migrations")
    force = sub.add_parser("force", parents=[common], help="record VERSION as current, run no SQL")
    force.add_argument("version", type=_version_arg)
    new = sub.add_parser("new", parents=[common], help="create a new migration")
    new.add_argument("name", help="what it does, e.g. add_users_email_index")
    new.add_argument("--format", choices=("golang-migrate", "dbmate"), default="golang-migrate")
    return parser


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of migrations >= 1, got {text!r}")
    return int(text)


def _version_arg(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a version (digits), got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    output = Output()
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise BadInput(
                "no command given",
                fix="Run `heroku-migrate up` to apply pending migrations; "
                "`heroku-migrate --help` lists every command.",
            )
        flags = {dest: getattr(args, dest) for _, dest, _ in _SETTING_FLAGS}
        flags["allow_changed"] = args.allow_changed
        config = load_config(Path.cwd(), os.environ, flags)
        for name in unknown_env_settings(os.environ):
            output.warn(f"{name} is not a heroku-migrate setting and is ignored (a typo?)")
        return _dispatch(args, config, output)
    except MigrateError as exc:
        output.error(*exc.lines())
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("Interrupted; an open transaction was rolled back by the server.")
        return 130


def _dispatch(args: argparse.Namespace, config: Config, output: Output) -> int:
    command = args.command
    if command == "new":
        return _new(config, output, args.name, args.format)
    from herokumigrate.source import load_migrations, validate

    migrations = load_migrations(config.migrations_dir, config.app_dir)
    if command == "validate":
        counts = validate(migrations)
        output.step(f"Validated {counts['migrations']} migration(s) in {config.path}")
        output.detail(
            f"{counts['statements']} statement(s); {counts['no_transaction']} must run outside "
            f"a transaction; {counts['downs']} down migration(s)"
        )
        return EXIT_OK
    if command in ("up", "plan"):
        return _up(config, output, migrations, dry_run=command == "plan" or args.dry_run)
    if command == "status":
        return _status(config, output, migrations, as_json=args.json)
    if command == "down":
        if not args.yes:
            raise BadInput(
                f"down {args.count} reverts migrations and may drop tables and their data",
                fix=f"Run `heroku-migrate down {args.count} --yes` to confirm.",
            )
        validate(migrations)
        return _with_runner(config, output, lambda r: _report_down(r, migrations, args.count))
    if command == "goto":
        validate(migrations)
        return _with_runner(config, output, lambda r: _goto(r, migrations, args.version, args.yes))
    if command == "force":
        return _with_runner(config, output, lambda r: _force(r, migrations, args.version))
    raise BadInput(f"unknown command {command!r}", fix="See `heroku-migrate --help`.")


def _make_runner(config: Config, output: Output) -> Runner:
    """Connect (warning about poolers) and wrap the connection in a Runner."""
    from herokumigrate.database import connect, read_target
    from herokumigrate.runner import Runner

    target = read_target(os.environ, config.database_url_var, output)
    if target.looks_like_pooler():
        output.warn(
            f"{config.database_url_var} looks like a connection pooler (PgBouncer): session "
            "advisory locks do not work through transaction pooling.",
            "Point MIGRATE_DATABASE_URL_VAR at the direct URL (e.g. DATABASE_URL).",
        )

    def open_connection(wait: float) -> psycopg.Connection[tuple[object, ...]]:
        return connect(target, output, connect_timeout=config.connect_timeout, connect_wait=wait)

    conn = open_connection(config.connect_wait)
    return Runner(config, output, conn, lambda: open_connection(min(30.0, config.connect_wait)))


def _with_runner(config: Config, output: Output, action: object) -> int:
    import psycopg

    runner = _make_runner(config, output)
    try:
        runner.take_lock()
        runner.read_state()
        assert callable(action)
        result = action(runner)
        return int(result)
    except psycopg.Error as exc:
        raise _unexpected_db_error(exc, output) from None
    finally:
        runner.release_lock()
        runner.conn.close()


def _unexpected_db_error(exc: Exception, output: Output) -> MigrateError:
    from psycopg import errors as pg_errors

    from herokumigrate.errors import MigrationFailed

    text = " ".join(output.redact(str(exc)).split())
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return BadInput(
            f"the database role may not do this: {text}",
            fix="Connect as the database owner (Heroku's DATABASE_URL credentials are), or "
            "GRANT the role rights on the history and migrated tables.",
        )
    return MigrationFailed(
        f"database error: {text}",
        fix="Nothing was committed by the failed statement; check the database and retry.",
    )


def _up(config: Config, output: Output, migrations: list[Migration], *, dry_run: bool) -> int:
    import psycopg

    from herokumigrate.runner import make_plan
    from herokumigrate.source import validate

    runner = _make_runner(config, output)
    try:
        if runner.up_to_date(migrations):
            output.step(
                f"Database is up to date ({len(migrations)} migration(s) applied, none pending)"
            )
            return EXIT_OK
        state = runner.read_state()
        plan = make_plan(migrations, state)
        _check_plan(config, output, plan, migrations)
        if plan.nothing_to_do:
            _say_up_to_date(output, migrations, state.rows)
            return EXIT_OK
        # Every pending file, down sections included (compensation may need them), is sound
        # before anything is locked or written.
        validate(plan.pending)
        runner.take_lock()
        # Re-read under the lock: another runner may have applied them meanwhile.
        state = runner.read_state()
        plan = make_plan(migrations, state)
        if plan.nothing_to_do:
            _say_up_to_date(output, migrations, state.rows)
            return EXIT_OK
        _check_plan(config, output, plan, migrations, quiet=True)
        validate(plan.pending)
        runner.up(migrations, plan, dry_run=dry_run)
        return EXIT_OK
    except psycopg.Error as exc:
        raise _unexpected_db_error(exc, output) from None
    finally:
        runner.release_lock()
        runner.conn.close()


def _check_plan(
    config: Config,
    output: Output,
    plan: object,
    migrations: list[Migration],
    *,
    quiet: bool = False,
) -> None:
    from herokumigrate.runner import ReleasePlan

    assert isinstance(plan, ReleasePlan)
    if plan.changed:
        names = ", ".join(m.filename for m in plan.changed)
        if not config.allow_changed:
            raise BadInput(
                f"{plan.changed[0].filename}: changed after it was applied "
                f"({len(plan.changed)} file(s): {names})",
                fix="Restore the applied content (git log -p -- <file>) and put the change in a "
                "new migration (heroku-migrate new NAME); or set MIGRATE_ALLOW_CHANGED=true "
                "to accept the edit.",
            )
        if not quiet:
            output.warn(f"Applied migration(s) changed since they ran: {names} (allowed)")
    if plan.unknown and not quiet:
        shown = ", ".join(str(v) for v in plan.unknown[:10])
        more = f" and {len(plan.unknown) - 10} more" if len(plan.unknown) > 10 else ""
        output.warn(
            f"The database has {len(plan.unknown)} migration(s) these files do not: {shown}{more}",
            "This is expected after `heroku rollback`; they stay applied. Nothing to do.",
        )
    if plan.pending and not quiet:
        pending = {m.version for m in plan.pending}
        applied = [m.version for m in migrations if m.version not in pending]
        newest = max(applied, default=0)
        older = [m.label for m in plan.pending if m.version < newest]
        if older:
            output.warn(
                f"Pending migration(s) older than the newest applied one: {', '.join(older)}; "
                "they will be applied now (a merged branch?)"
            )


def _say_up_to_date(
    output: Output, migrations: list[Migration], rows: Mapping[int, object]
) -> None:
    known = sum(1 for m in migrations if m.version in rows)
    output.step(f"Database is up to date ({known} migration(s) applied, none pending)")


def _status(config: Config, output: Output, migrations: list[Migration], *, as_json: bool) -> int:
    from herokumigrate.runner import make_plan

    runner = _make_runner(config, output)
    try:
        state = runner.read_state()
        events = runner.history.last_events(runner.conn) if state.exists else []
    finally:
        runner.conn.close()
    plan = make_plan(migrations, state)
    rows = state.rows
    changed = {m.version for m in plan.changed}
    adopted = {m.version for m in plan.adopt}
    entries = []
    for m in migrations:
        row = rows.get(m.version)
        if m.version in adopted:
            status = "applied (by " + (state.legacy.tool if state.legacy else "?") + ")"
        elif row is None:
            status = "pending"
        elif row.state == "partial":
            status = f"partial ({row.progress} statement(s) ran)"
        elif m.version in changed:
            status = "applied, file changed since"
        else:
            status = "applied"
        entries.append(
            {
                "version": m.version,
                "name": m.name,
                "file": m.filename,
                "status": status,
                "applied_at": row.applied_at.isoformat() if row and row.applied_at else None,
                "duration_ms": row.duration_ms if row else None,
            }
        )
    unknown = [
        {"version": v, "name": rows[v].name, "applied_at": str(rows[v].applied_at)}
        for v in plan.unknown
    ]
    if as_json:
        import json

        doc = {
            "migrations": entries,
            "unknown": unknown,
            "pending": [m.version for m in plan.pending],
            "legacy": state.legacy.tool if state.legacy else None,
            "events": [{"at": str(at), "event": ev, "detail": d} for at, ev, d in events],
        }
        output.plain(json.dumps(doc, indent=2))
        return EXIT_OK
    output.step(f"Migrations in {config.path} ({len(migrations)} file(s))")
    width = max((len(str(e["version"])) for e in entries), default=0)
    state_width = max((len(str(e["status"])) for e in entries), default=0)
    for e in entries:
        when = str(e["applied_at"])[:19].replace("T", " ") if e["applied_at"] else ""
        output.detail(
            f"{e['version']!s:>{width}}  {e['status']!s:<{state_width}}  {when:<19}  {e['name']}"
        )
    if unknown:
        output.warn(
            "Applied but not in these files (a rollback?): "
            + ", ".join(f"{u['version']} {u['name']}" for u in unknown)
        )
    pending = len(plan.pending)
    output.step(f"{pending} pending" if pending else "Up to date")
    if events and events[0][1] in ("failed", "down failed"):
        output.warn(f"Last run failed at {str(events[0][0])[:19]}: {events[0][2]}")
    return EXIT_OK


def _report_down(runner: Runner, migrations: list[Migration], count: int) -> int:
    done = runner.down(migrations, count)
    runner.output.step(f"Reverted {len(done)} migration(s)")
    return EXIT_OK


def _goto(runner: Runner, migrations: list[Migration], version: int, yes: bool) -> int:
    state = runner.read_state()
    newer = [v for v in state.rows if v > version]
    if newer and not yes:
        raise BadInput(
            f"goto {version} would revert {len(newer)} migration(s) and may drop data",
            fix=f"Run `heroku-migrate goto {version} --yes` to confirm.",
        )
    reverted, applied = runner.goto(migrations, version)
    runner.output.step(f"At version {version}: reverted {reverted}, applied {applied}")
    return EXIT_OK


def _force(runner: Runner, migrations: list[Migration], version: int) -> int:
    marked, forgot = runner.force(migrations, version)
    runner.output.step(
        f"Recorded version {version} as current: marked {marked} applied, forgot {forgot}"
    )
    return EXIT_OK


def _new(config: Config, output: Output, name: str, fmt: str) -> int:
    import datetime as dt
    import re

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
    if fmt == "dbmate":
        path = folder / f"{version}_{slug}.sql"
        path.write_text("-- migrate:up\n\n\n-- migrate:down\n\n")
        created = [path]
    else:
        up = folder / f"{version}_{slug}.up.sql"
        down = folder / f"{version}_{slug}.down.sql"
        up.write_text(f"-- {name}\n")
        down.write_text(f"-- undo: {name}\n")
        created = [up, down]
    output.step(f"Created migration {version}_{slug}")
    for path in created:
        output.detail(str(path.relative_to(config.app_dir) if path.is_absolute() else path))
    output.detail("Write the SQL, then push: the release phase applies it.")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
