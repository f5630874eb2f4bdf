"""The command line's grammar: argparse, loaded only when the command line needs parsing
(the release phase's plain `up` does not: see cli.main)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from herokumigrate import __version__
from herokumigrate.errors import BadInput

SETTING_FLAGS = (
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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; every subcommand accepts the setting flags.

    Copying the dozen setting flags into all nine subcommands costs ~3 ms of a no-op release's
    start-up; given `argv`, only the subcommands it names get them (the others are unused)."""
    wanted = None if argv is None else set(argv)

    def flags_for(name: str) -> list[_Parser]:
        return [common] if wanted is None or name in wanted else []

    common = _Parser(add_help=False)
    for flag, dest, text in SETTING_FLAGS:
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
    up = sub.add_parser("up", parents=flags_for("up"), help="apply all pending migrations")
    up.add_argument("--dry-run", action="store_true", help="run everything, then roll back")
    sub.add_parser("plan", parents=flags_for("plan"), help="the same as `up --dry-run`")
    status = sub.add_parser(
        "status", parents=flags_for("status"), help="applied and pending migrations"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    check = sub.add_parser(
        "validate", parents=flags_for("validate"), help="check the files (no database)"
    )
    check.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)  # written by the build
    down = sub.add_parser("down", parents=flags_for("down"), help="revert the N newest migrations")
    down.add_argument("count", type=_count, help="how many to revert")
    down.add_argument("--yes", action="store_true", help="confirm: this may drop data")
    goto = sub.add_parser("goto", parents=flags_for("goto"), help="migrate up or down to VERSION")
    goto.add_argument("version", type=_version_arg)
    goto.add_argument("--yes", action="store_true", help="confirm reverting newer migrations")
    force = sub.add_parser(
        "force", parents=flags_for("force"), help="record VERSION as current, run no SQL"
    )
    force.add_argument("version", type=_version_arg)
    new = sub.add_parser("new", parents=flags_for("new"), help="create a new migration")
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
