"""The command line's grammar: the commands, and a flag for every setting in `config.SETTINGS`.

Setting flags work before and after the command (`--path x validate`, `validate --path x`);
given in both places, the later one wins, as a repeated flag does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from herokumigrate import __version__
from herokumigrate.config import SETTINGS, Setting
from herokumigrate.errors import BadInput
from herokumigrate.tools import TOOL_NAMES, ToolName

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from herokumigrate.lintcommand import ReportFormat

# The file layouts `heroku-migrate new` can write: every registered format.
NEW_FORMATS = TOOL_NAMES
# The release phase's command line (buildpack/procfile.py writes `heroku-migrate up`).
RELEASE_ARGV = ("up",)


@dataclass
class Arguments:
    """What the command line asks for, besides settings: the command and its own options.

    Not frozen: defining a frozen dataclass costs ~1 ms more, on every release."""

    command: str | None
    dry_run: bool = False  # up
    json: bool = False  # status, plan, up --dry-run
    manifest: Path | None = None  # validate (the build writes it)
    count: int = 0  # down
    yes: bool = False  # down, goto
    version: str = "0"  # goto, force, resolve: as written (the files' syntax reads it)
    outcome: str = ""  # resolve: `applied` or `rolled-back`
    name: str = ""  # new
    format: ToolName = NEW_FORMATS[0]  # new
    paths: list[Path] = field(default_factory=list)  # lint
    report: ReportFormat = "text"  # lint --format


def parse_command_line(argv: Sequence[str]) -> tuple[Arguments, dict[str, object]]:
    """The command and its options, and the settings given as flags (only those given)."""
    if tuple(argv) == RELEASE_ARGV:
        # Answered without argparse: importing it and building the parser cost 6-11 ms of the
        # ~130 ms a release with nothing to do takes. A test keeps both answers equal.
        return Arguments(command="up"), {}
    parsed = vars(build_parser().parse_args(argv))
    flags = {key: parsed.pop(key) for key in SETTINGS if key in parsed}
    return Arguments(**parsed), flags


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; the main parser and every command accept the setting flags."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        """argparse that reports usage errors as bad input (exit 2) in our format."""

        def error(self, message: str) -> None:  # type: ignore[override]
            raise BadInput(f"{self.prog}: {message}", fix=f"See `{self.prog} --help`.")

    settings = _Parser(add_help=False)
    group = settings.add_argument_group(
        "settings (each also a MIGRATE_* config var or a migrate.toml key; see README)"
    )
    for setting in SETTINGS.values():
        if setting.flag:
            _add_setting_flag(group, setting)
    parser = _Parser(
        prog="heroku-migrate",
        description="Apply pending PostgreSQL migrations atomically (see README). Setting "
        "flags go before or after the command; given in both places, the later one wins.",
        parents=[settings],
    )
    parser.add_argument("--version", action="version", version=f"heroku-migrate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[settings], help=text)

    up = command("up", "apply all pending migrations")
    up.add_argument("--dry-run", action="store_true", help="run everything, then roll back")
    up.add_argument("--json", action="store_true", help="with --dry-run: machine-readable")
    plan = command("plan", "the same as `up --dry-run`: shows the locks each migration takes")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    status = command("status", "applied and pending migrations")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    check = command("validate", "check the files (no database)")
    check.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)  # written by the build
    down = command("down", "revert the N newest migrations")
    down.add_argument("count", type=_count, help="how many to revert")
    down.add_argument("--yes", action="store_true", help="confirm: this may drop data")
    goto = command("goto", "migrate up or down to VERSION")
    goto.add_argument("version", type=_version_arg)
    goto.add_argument("--yes", action="store_true", help="confirm reverting newer migrations")
    force = command("force", "record VERSION as current, run no SQL")
    force.add_argument("version", type=_version_arg)
    _add_resolve(
        command(
            "resolve", "settle a failed migration the tool's table records (prisma/flyway/sqlx)"
        )
    )
    new = command("new", "create a new migration")
    new.add_argument("name", help="what it does, e.g. add_users_email_index")
    new.add_argument("--format", choices=NEW_FORMATS, default=NEW_FORMATS[0])
    _add_lint(command("lint", "release-safety lint of the files (no database; needs pglast)"))
    return parser


def _add_resolve(resolve: argparse.ArgumentParser) -> None:
    """`resolve VERSION --applied|--rolled-back` (revert.resolve)."""
    resolve.add_argument("version", type=_version_arg)
    outcome = resolve.add_mutually_exclusive_group(required=True)
    outcome.add_argument(
        "--applied",
        dest="outcome",
        action="store_const",
        const="applied",
        help="its changes are in the database (fixed by hand)",
    )
    outcome.add_argument(
        "--rolled-back",
        dest="outcome",
        action="store_const",
        const="rolled-back",
        help="none of its changes are: the next `up` applies it again",
    )


def _add_lint(lint: argparse.ArgumentParser) -> None:
    """`lint [PATH...] [--format json]` (lintcommand.py)."""
    from herokumigrate.lintcommand import REPORT_FORMATS

    lint.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="migration files to check as one release (default: every file, each alone)",
    )
    lint.add_argument(
        "--format",
        dest="report",
        choices=REPORT_FORMATS,
        default="text",
        help="json: one document on stdout (default: text)",
    )


def _add_setting_flag(group: argparse._ArgumentGroup, setting: Setting) -> None:
    """`--name VALUE` (`--name/--no-name` for a switch). Values stay text: config converts and
    checks them, so a bad flag is reported like a bad config var. SUPPRESS leaves a flag that
    was not given out of the result, so the command's parser cannot reset the main parser's."""
    import argparse

    text = f"{setting.help} (default: {setting.default_text})".replace("%", "%%")
    if setting.kind is bool:
        group.add_argument(
            setting.flag_name,
            dest=setting.name,
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=text,
        )
        return
    if setting.choices:
        metavar = "{" + ",".join(setting.choices) + "}"
    elif setting.kind is float:
        metavar = "SECONDS"
    elif setting.kind is int:
        metavar = "N"
    else:
        metavar = setting.name.rsplit("_", 1)[-1].upper()
    group.add_argument(
        setting.flag_name,
        dest=setting.name,
        default=argparse.SUPPRESS,
        metavar=metavar,
        help=text,
    )


def _count(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of migrations >= 1, got {text!r}")
    return int(text)


def _version_arg(text: str) -> str:
    import argparse

    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError(f"expected a version, got {text!r}")
    return text.strip()
