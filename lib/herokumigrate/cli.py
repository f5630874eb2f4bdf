"""`heroku-migrate`: the command line. A thin shell over source, runner and history.

The one place that turns errors into ` !     ` lines and exit codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from herokumigrate.arguments import parse_command_line
from herokumigrate.config import (
    Config,
    app_root,
    load_config,
    release_skipped_message,
    skip_requested_by,
    unknown_env_settings,
)
from herokumigrate.errors import EXIT_OK, BadInput, MigrateError
from herokumigrate.output import Output

if TYPE_CHECKING:
    import psycopg

    from herokumigrate.runner import ReleasePlan, Runner
    from herokumigrate.source import Migration


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    output = Output()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, flags = parse_command_line(argv)
        if args.command is None:
            raise BadInput(
                "no command given",
                fix="Run `heroku-migrate up` to apply pending migrations; "
                "`heroku-migrate --help` lists every command.",
            )
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
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("Interrupted; an open transaction was rolled back by the server.")
        return 130


def _dispatch(args: Any, config: Config, output: Output) -> int:
    command = args.command
    if command == "new":
        return _new(config, output, args.name, args.format)
    from herokumigrate.source import MANIFEST_ENV, load_migrations, read_manifest, validate

    if command == "up" and not args.dry_run and os.environ.get(MANIFEST_ENV):
        # The release phase: the build's manifest spares reading every file when none changed.
        fingerprint = read_manifest(os.environ[MANIFEST_ENV], config.migrations_dir, config.path)
        if fingerprint is not None:
            return _up(config, output, None, fingerprint=fingerprint, dry_run=False)
    migrations = load_migrations(config.migrations_dir, config.app_dir)
    if command == "validate":
        counts = validate(migrations)
        if args.manifest is not None:
            from herokumigrate.source import write_manifest

            write_manifest(args.manifest, config.migrations_dir, config.path, migrations)
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
    """Connect and wrap the connection in a Runner."""
    from herokumigrate.runner import Runner

    conn, reopen = _connect(config, output)
    return Runner(config, output, conn, reopen)


def _connect(
    config: Config, output: Output
) -> tuple[
    psycopg.Connection[tuple[object, ...]], Callable[[], psycopg.Connection[tuple[object, ...]]]
]:
    """A connection (warning about poolers), and how to open another after losing it."""
    from herokumigrate.database import connect, read_target

    target = read_target(os.environ, config.database_url_var, output)
    if target.looks_like_pooler():
        output.warn(
            f"{config.database_url_var} looks like a connection pooler (PgBouncer): session "
            "advisory locks do not work through transaction pooling.",
            "Point MIGRATE_DATABASE_URL_VAR at the direct URL (e.g. DATABASE_URL).",
        )

    def open_connection(wait: float) -> psycopg.Connection[tuple[object, ...]]:
        return connect(target, output, connect_timeout=config.connect_timeout, connect_wait=wait)

    return open_connection(config.connect_wait), lambda: open_connection(
        min(30.0, config.connect_wait)
    )


def _with_runner(config: Config, output: Output, action: Callable[[Runner], int]) -> int:
    """Run `action` holding the migration lock, then release it and disconnect."""
    import psycopg

    runner = _make_runner(config, output)
    try:
        runner.take_lock()
        runner.read_state()
        return action(runner)
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


def _up(
    config: Config,
    output: Output,
    migrations: list[Migration] | None,
    *,
    dry_run: bool,
    fingerprint: list[tuple[int, str]] | None = None,
) -> int:
    """`up`/`plan`. `migrations` may be None when the build's manifest gave the `fingerprint`:
    the files are then read only if the quick check finds work to do."""
    import psycopg

    from herokumigrate.history import HistoryTable

    if fingerprint is None:
        assert migrations is not None
        fingerprint = [(m.version, m.checksum) for m in migrations]
    conn, reopen = _connect(config, output)
    runner: Runner | None = None
    try:
        # Most releases have nothing to apply: answer them with one query, before the rest of
        # the runner is even imported.
        history = HistoryTable(config.history_schema, config.history_table)
        if history.matches(conn, fingerprint):
            _say_up_to_date(output, len(fingerprint))
            return EXIT_OK
        from herokumigrate.runner import Runner, make_plan
        from herokumigrate.source import load_migrations, validate

        runner = Runner(config, output, conn, reopen)
        if migrations is None:
            migrations = load_migrations(config.migrations_dir, config.app_dir)
        state = runner.read_state()
        plan = make_plan(migrations, state)
        _check_plan(config, output, plan, migrations)
        if plan.nothing_to_do:
            _say_up_to_date(output, sum(1 for m in migrations if m.version in state.rows))
            return EXIT_OK
        # Every pending file, down sections included (compensation may need them), is sound
        # before anything is locked or written.
        validate(plan.pending)
        runner.take_lock()
        # Re-read under the lock: another runner may have applied them meanwhile.
        state = runner.read_state()
        plan = make_plan(migrations, state)
        if plan.nothing_to_do:
            _say_up_to_date(output, sum(1 for m in migrations if m.version in state.rows))
            return EXIT_OK
        _check_plan(config, output, plan, migrations, quiet=True)
        validate(plan.pending)
        runner.up(plan, dry_run=dry_run)
        return EXIT_OK
    except psycopg.Error as exc:
        raise _unexpected_db_error(exc, output) from None
    finally:
        if runner is not None:
            runner.release_lock()
            conn = runner.conn  # compensation may have reconnected
        conn.close()


def _check_plan(
    config: Config,
    output: Output,
    plan: ReleasePlan,
    migrations: list[Migration],
    *,
    quiet: bool = False,
) -> None:
    """Stop on edited applied files (unless allowed); warn about the unusual but legal."""
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


def _say_up_to_date(output: Output, applied: int) -> None:
    output.step(f"Database is up to date ({applied} migration(s) applied, none pending)")


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
