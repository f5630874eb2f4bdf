"""Settings: command-line flag, then `MIGRATE_*` environment variable, then `migrate.toml`, then
the default.

Every setting is declared once, as a field of `Config`: its name, type, default, bounds and help.
`SETTINGS` is derived from those fields; the command-line flags (`arguments.py`), the
environment variable names and the README's table all follow from it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from herokumigrate.errors import BadInput
from herokumigrate.tools import TOOL_NAMES

if TYPE_CHECKING:
    from herokumigrate.tools import ToolName

CONFIG_FILE = "migrate.toml"
ENV_PREFIX = "MIGRATE_"
# Exported by the buildpack's launcher: where migrate.toml and relative paths are found, so that
# `cd db && heroku-migrate status` on a dyno still means the app's db/migrations.
APP_ROOT_ENV = "HEROKU_MIGRATE_APP_ROOT"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# PostgreSQL keeps lock_timeout and statement_timeout in milliseconds as a 32-bit integer.
PG_MAX_SECONDS = 2147483
DAY = 86400
# NAMEDATALEN - 1: PostgreSQL silently cuts longer identifiers to this many bytes.
PG_MAX_IDENTIFIER_BYTES = 63
# The history table's event log is `<history_table>_log` (history.py).
HISTORY_LOG_SUFFIX = "_log"
# The native tools' own variables naming their tables, read as the tools read them (dbmate's
# `--migrations-table`, goose's `-table`) when `migrations_table` is unset (README,
# "Adopting golang-migrate, dbmate or goose"). golang-migrate's is a URL parameter (database.py).
TOOL_TABLE_VARS: dict[ToolName, str] = {
    "dbmate": "DBMATE_MIGRATIONS_TABLE",
    "goose": "GOOSE_TABLE",
    "flyway": "FLYWAY_TABLE",
}
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\Z")
_CONFIG_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class TransactionMode(str, Enum):
    """How pending migrations are grouped into transactions."""

    RELEASE = "release"  # all of a release's migrations in one transaction
    MIGRATION = "migration"  # one transaction per migration file

    def __str__(self) -> str:
        return str(self.value)


class OutOfOrder(str, Enum):
    """What `up` does with a pending migration older than the newest applied one."""

    REFUSE = "refuse"  # stop before any change, with the fix (Flyway's default)
    APPLY = "apply"  # apply it, with a warning (Flyway's outOfOrder = true)

    def __str__(self) -> str:
        return str(self.value)


class OnRollback(str, Enum):
    """What a release whose files are older than the database (`heroku rollback`) does with
    the migrations newer than every file it has (rollback.py)."""

    KEEP = "keep"  # leave them applied, and say so
    REVERT = "revert"  # revert them with their stored downs, all or nothing

    def __str__(self) -> str:
        return str(self.value)


class LintMode(str, Enum):
    """What the build does with release-safety lint findings (lint.py)."""

    WARN = "warn"  # report them; the build goes on
    ERROR = "error"  # report them and fail the build
    OFF = "off"  # no lint (files are still parsed)

    def __str__(self) -> str:
        return str(self.value)


class Setting(NamedTuple):
    """How one setting is read, checked and documented (declared by `_setting` on `Config`).

    A NamedTuple, not a dataclass: defining a frozen dataclass costs every run ~1 ms more."""

    name: str
    default: object
    kind: type  # bool, int, float, str, or an Enum whose values are the choices
    help: str
    maximum: float | None = None  # numbers must lie in [0, maximum]
    max_bytes: int | None = None  # identifiers: at most this many UTF-8 bytes (per part)
    max_bytes_reason: str = ""
    qualified_identifier: bool = False  # `[schema.]name` of letters, digits, `_` and `$`
    names_config_var: bool = False  # the name of a config var (never its value, e.g. a URL)
    flag: bool = True  # also a command-line flag; False: read by the buildpack only
    values: tuple[str, ...] = ()  # the allowed values of a text setting (empty: any)

    @property
    def env_var(self) -> str:
        """The environment variable (Heroku config var) that sets it."""
        return env_var_name(self.name)

    @property
    def flag_name(self) -> str:
        """The command-line flag that sets it, e.g. `--lock-wait`."""
        return "--" + self.name.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values of a choice setting (empty for the others)."""
        if issubclass(self.kind, Enum):
            return tuple(str(member.value) for member in self.kind)
        return self.values

    @property
    def default_text(self) -> str:
        """The default as a user would write it (`300`, `true`, `db/migrations`)."""
        value = self.default
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


_T = TypeVar("_T")


def _setting(
    default: _T,
    help: str,
    *,
    kind: type | None = None,
    maximum: float | None = None,
    max_bytes: int | None = None,
    max_bytes_reason: str = "",
    qualified_identifier: bool = False,
    names_config_var: bool = False,
    flag: bool = True,
    values: tuple[str, ...] = (),
) -> _T:
    """A `Config` field that is a setting: its default plus how it is parsed and documented
    (`SETTINGS` fills in the name from the field's)."""
    spec = Setting(
        name="",
        default=default,
        kind=type(default) if kind is None else kind,
        help=help,
        maximum=maximum,
        max_bytes=max_bytes,
        max_bytes_reason=max_bytes_reason,
        qualified_identifier=qualified_identifier,
        names_config_var=names_config_var,
        flag=flag,
        values=values,
    )
    return field(default=default, metadata={"setting": spec})


@dataclass(frozen=True)
class Config:
    """Resolved settings for one run. Each field made by `_setting` is a setting."""

    path: str = _setting("db/migrations", "folder holding the migrations, relative to the app root")
    database_url_var: str = _setting(
        "DATABASE_URL",
        "config var holding the database URL (e.g. HEROKU_POSTGRESQL_RED_URL)",
        names_config_var=True,
    )
    history_schema: str = _setting(
        "public", "schema of the history table", max_bytes=PG_MAX_IDENTIFIER_BYTES
    )
    history_table: str = _setting(
        "heroku_migrate_history",
        f"name of the history table (its event log is <table>{HISTORY_LOG_SUFFIX})",
        max_bytes=PG_MAX_IDENTIFIER_BYTES - len(HISTORY_LOG_SUFFIX),
        max_bytes_reason=f"its event log table adds {HISTORY_LOG_SUFFIX!r}",
    )
    migrations_table: str | None = _setting(
        None,
        "the native tool's table (schema_migrations, goose_db_version), [schema.]name; "
        "unset: the tool's own default",
        kind=str,
        max_bytes=PG_MAX_IDENTIFIER_BYTES,
        qualified_identifier=True,
    )
    tool: ToolName | None = _setting(  # noqa: RUF009 -- a field spec, not a shared default
        None,
        "whose migrations the folder holds; unset: decided from its files and the app's "
        "(docs/formats.md)",
        kind=str,
        values=TOOL_NAMES,
    )
    transaction: TransactionMode = _setting(  # noqa: RUF009 -- a field spec, not a shared default
        TransactionMode.RELEASE,
        "`release`: one transaction for all pending migrations; `migration`: one per file",
    )
    on_rollback: OnRollback = _setting(  # noqa: RUF009 -- a field spec, not a shared default
        OnRollback.KEEP,
        "a release older than the database (`heroku rollback`): `keep` the newer migrations "
        "applied, or `revert` them with the downs stored when they were applied "
        "(docs/rollback.md)",
    )
    lock_wait: float = _setting(300.0, "seconds to wait for another runner's lock", maximum=DAY)
    lock_timeout: float = _setting(
        0.5,
        "the longest one attempt waits for a table lock (so the longest an app query waits "
        "behind a migration); attempts start at 0.1 s and double up to it; 0 = no limit",
        maximum=PG_MAX_SECONDS,
    )
    lock_retry_budget: float = _setting(
        120.0,
        "seconds to keep retrying a transaction that timed out on a lock or deadlocked",
        maximum=DAY,
    )
    statement_timeout: float = _setting(
        0.0, "seconds a statement may run; 0 = no limit", maximum=PG_MAX_SECONDS
    )
    retries: int | None = _setting(
        None,
        "at most this many retries on lock timeout or deadlock; unset: as many as "
        "lock_retry_budget allows",
        kind=int,
        maximum=10000,
    )
    connect_timeout: float = _setting(10.0, "seconds per connection attempt", maximum=3600)
    connect_wait: float = _setting(
        180.0, "seconds to keep retrying while the database starts", maximum=DAY
    )
    allow_changed: bool = _setting(False, "warn instead of failing when an applied file changed")
    out_of_order: OutOfOrder = _setting(  # noqa: RUF009 -- a field spec, not a shared default
        OutOfOrder.REFUSE,
        "a pending migration older than the newest applied one (a branch merged late): "
        "`refuse` (stop before any change) or `apply` it",
    )
    skip: bool = _setting(
        False, "`up` exits 0 at once, migrating nothing (an emergency switch for releases)"
    )
    release_phase: bool = _setting(True, "buildpack: wire `release:` in the Procfile", flag=False)
    lint: LintMode = _setting(  # noqa: RUF009 -- a field spec, not a shared default
        LintMode.WARN,
        "buildpack: release-safety lint of new migrations: `warn`, `error` (error-level "
        "findings fail the build) or `off`",
        flag=False,
    )
    parse: bool = _setting(
        True, "buildpack: check every migration with PostgreSQL's parser (pglast)", flag=False
    )
    app_dir: Path = Path()
    # Where `path` came from: a flag, a config var or migrate.toml, or, unset, why the folder
    # found is the tool's (locations.py: "the default", "Prisma Migrate's folder").
    path_origin: str = "the default"
    # (tool, [schema.]name) from TOOL_TABLE_VARS, checked; empty when `migrations_table` is set.
    tool_tables: tuple[tuple[ToolName, str], ...] = ()

    @property
    def migrations_dir(self) -> Path:
        """The migrations folder, resolved against the app directory."""
        return self.app_dir / self.path

    @property
    def migrations_table_parts(self) -> tuple[str | None, str] | None:
        """`migrations_table` as (schema, or None for the search path's; table), or None when
        unset (the native tool's own table)."""
        if self.migrations_table is None:
            return None
        return qualified_parts(self.migrations_table)

    def env_name(self, key: str) -> str:
        """The environment variable that sets `key`."""
        return env_var_name(key)


def qualified_parts(name: str) -> tuple[str | None, str]:
    """`[schema.]table` as (schema, or None for the search path's; table)."""
    schema, _, table = name.rpartition(".")
    return (schema or None, table)


SETTINGS: dict[str, Setting] = {
    f.name: f.metadata["setting"]._replace(name=f.name)
    for f in fields(Config)
    if "setting" in f.metadata
}


def env_var_name(key: str) -> str:
    """The environment variable (Heroku config var) that sets the setting `key`."""
    return ENV_PREFIX + key.upper()


def unknown_env_settings(env: Iterable[str]) -> list[str]:
    """The `MIGRATE_*` names in `env` (a mapping or names) that set nothing: a typo, most likely."""
    valid = {setting.env_var for setting in SETTINGS.values()}
    return sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in valid)


def app_root(env: Mapping[str, str]) -> Path:
    """The app's root: `HEROKU_MIGRATE_APP_ROOT` when the launcher set it, else the cwd."""
    root = env.get(APP_ROOT_ENV, "")
    return Path(root) if root else Path.cwd()


def _convert(key: str, raw: object, origin: str) -> object:
    """Turn a raw value from TOML, the environment or a flag into the setting's type, or fail
    naming where it came from and the fix."""
    setting = SETTINGS[key]
    try:
        value = _parse(setting.kind, raw)
    except ValueError:
        raise BadInput(
            f"{origin}: invalid value {_show(raw)} for {key}", fix=_expected(setting)
        ) from None
    maximum = setting.maximum
    # `not (0 <= value <= maximum)` is also true for nan.
    if maximum is not None and isinstance(value, (int, float)) and not (0 <= value <= maximum):
        raise BadInput(
            f"{origin}: invalid value {_show(raw)} for {key}",
            fix=f"Set {key} to a number from 0 to {maximum:g}.",
        )
    if setting.values and value not in setting.values:
        raise BadInput(f"{origin}: invalid value {_show(raw)} for {key}", fix=_expected(setting))
    if isinstance(value, str) and setting.kind is str and setting.max_bytes is not None:
        _check_identifier(setting, value, origin)
    if isinstance(value, str) and setting.names_config_var:
        _check_config_var_name(setting, value, origin)
    return value


def _parse(kind: type, raw: object) -> object:
    """`raw` as a `kind`; ValueError when it is not one."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError
    if kind in (int, float):
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError
        if kind is int and isinstance(raw, float) and raw != int(raw):
            raise ValueError
        return kind(raw.strip() if isinstance(raw, str) else raw)
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError
    return kind(raw.strip())  # str, or an Enum by its value


def _expected(setting: Setting) -> str:
    if setting.choices:
        return f"Set {setting.name} to one of: {', '.join(setting.choices)}."
    wanted = {bool: "true or false", int: "a whole number", float: "a number of seconds"}
    return f"Set {setting.name} to {wanted.get(setting.kind, 'a non-empty string')}."


def _check_identifier(setting: Setting, value: str, origin: str, key: str = "") -> None:
    """A name PostgreSQL keeps as written: no control characters, within the byte limit, and
    `[schema.]name` where the setting is schema-qualified. `key` names it (the setting)."""
    key = key or setting.name
    parts = value.split(".") if setting.qualified_identifier else [value]
    if _CONTROL_CHARACTER.search(value) or (
        setting.qualified_identifier
        and (len(parts) > 2 or not all(_PLAIN_IDENTIFIER.match(p) for p in parts))
    ):
        shape = (
            "letters, digits, _ and $, starting with a letter or _, optionally schema-qualified "
            "(schema.table)"
            if setting.qualified_identifier
            else "printable characters"
        )
        raise BadInput(
            f"{origin}: invalid value {_show(value)} for {key}",
            fix=f"Set {key} to a name of {shape}.",
        )
    limit = setting.max_bytes or PG_MAX_IDENTIFIER_BYTES
    for part in parts:
        size = len(part.encode("utf-8"))
        if size > limit:
            why = f"; {setting.max_bytes_reason}" if setting.max_bytes_reason else ""
            raise BadInput(
                f"{origin}: {key} {_show(part)} is {size} bytes long; the maximum is {limit}",
                fix=f"Set {key} to a name of at most {limit} bytes (PostgreSQL cuts identifiers "
                f"at {PG_MAX_IDENTIFIER_BYTES} bytes{why}).",
            )


def is_config_var_name(value: str) -> bool:
    """Whether `value` is a config var's name as Heroku advises them: letters, digits and `_`."""
    return _CONFIG_VAR_NAME.match(value) is not None


def _check_config_var_name(setting: Setting, value: str, origin: str) -> None:
    """A config var's name (`is_config_var_name`). The value is never shown: given a URL
    instead of a name, it holds a password."""
    if is_config_var_name(value):
        return
    what = "a URL" if "://" in value else "something that is not a config var's name"
    raise BadInput(
        f"{origin}: {setting.name} holds {what}; it must name the config var that holds the "
        "database URL",
        fix=f"Set {setting.env_var} to that config var's name, not to its value: e.g. "
        f"{setting.env_var}=HEROKU_POSTGRESQL_RED_URL (`heroku config` lists them).",
    )


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def read_config_file(app_dir: Path) -> dict[str, object]:
    """The settings in `migrate.toml` (empty when there is none), validated key by key."""
    path = app_dir / CONFIG_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BadInput(
            f"{CONFIG_FILE}: cannot be read ({exc.strerror})",
            fix=f"Make {CONFIG_FILE} a readable file, or delete it to use the defaults.",
        ) from None
    from herokumigrate.compat import tomllib

    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput(
            f"{CONFIG_FILE}: is not UTF-8 text",
            fix=f"Save {CONFIG_FILE} as UTF-8.",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(
            f"{CONFIG_FILE}: invalid TOML: {exc}",
            fix=f"Fix the syntax of {CONFIG_FILE} (see https://toml.io).",
        ) from None
    # Accept the settings at the top level or under a [migrate] table.
    table = parsed.get("migrate", parsed) if isinstance(parsed.get("migrate"), dict) else parsed
    if table is not parsed and len(parsed) > 1:
        others = sorted(k for k in parsed if k != "migrate")
        raise BadInput(
            f"{CONFIG_FILE}: unknown key {others[0]!r} beside [migrate]",
            fix=f"Put every setting under [migrate]; valid keys: {', '.join(SETTINGS)}.",
        )
    result: dict[str, object] = {}
    for key, raw in table.items():
        if key not in SETTINGS:
            raise BadInput(
                f"{CONFIG_FILE}: unknown key {key!r}",
                fix=f"Remove it or use one of: {', '.join(SETTINGS)}.",
            )
        result[key] = _convert(key, raw, CONFIG_FILE)
    return result


def _resolve(
    key: str,
    env: Mapping[str, str],
    flags: Mapping[str, object | None],
    file_values: Callable[[], Mapping[str, object]],
) -> tuple[object, str]:
    """One setting's value and where it came from: the flag, else the environment variable
    (empty counts as unset), else `migrate.toml` (read only if needed), else the default."""
    setting = SETTINGS[key]
    flag = flags.get(key)
    if flag is not None:
        return _convert(key, flag, setting.flag_name), setting.flag_name
    raw = env.get(setting.env_var)
    if raw is not None and raw != "":
        return _convert(key, raw, setting.env_var), setting.env_var
    from_file = file_values()
    if key in from_file:
        return from_file[key], CONFIG_FILE
    return setting.default, "default"


def load_config(
    app_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object | None] | None = None,
) -> Config:
    """Resolve every setting: flag, then `MIGRATE_*` environment variable, then file, then default.

    `env` defaults to `os.environ`; the buildpack passes the config vars read from ENV_DIR.
    `app_dir` defaults to `app_root(env)`. `migrate.toml` is checked as a whole even where the
    environment overrides it, so a broken file cannot hide behind a config var.
    """
    env = os.environ if env is None else env
    app_dir = app_root(env) if app_dir is None else app_dir
    file_values = read_config_file(app_dir)
    resolved = {key: _resolve(key, env, flags or {}, lambda: file_values) for key in SETTINGS}
    values = {key: value for key, (value, _) in resolved.items()}
    path_origin = resolved["path"][1]
    if path_origin == "default":
        from herokumigrate.locations import find_migrations_folder

        found = find_migrations_folder(app_dir)
        values["path"], path_origin = found.path, found.because
    tools = () if values["migrations_table"] is not None else tool_tables(env, app_dir)
    return Config(
        app_dir=app_dir,
        tool_tables=tools,
        path_origin=path_origin,
        **values,  # type: ignore[arg-type]
    )


def tool_tables(
    env: Mapping[str, str], app_dir: Path | None = None
) -> tuple[tuple[ToolName, str], ...]:
    """The tables the tools' own variables name (TOOL_TABLE_VARS; empty counts as unset, as
    the tools read them), each checked as `migrations_table` is."""
    found: list[tuple[ToolName, str]] = []
    for tool, var in TOOL_TABLE_VARS.items():
        raw = env.get(var, "").strip()
        if tool == "flyway":
            raw = _flyway_table(env, app_dir)
        if raw:
            _check_identifier(SETTINGS["migrations_table"], raw, "environment", key=var)
            found.append((tool, raw))
    return tuple(found)


def _flyway_table(env: Mapping[str, str], app_dir: Path | None) -> str:
    """Flyway's table (FLYWAY_TABLE or spring.flyway.table), in Flyway's default schema when
    one is set (FLYWAY_DEFAULT_SCHEMA, FLYWAY_SCHEMAS or their spring.flyway keys):
    `schema.table`; empty when none of them is set."""
    from herokumigrate.formats.flyway import DEFAULT_TABLE, default_schema, setting

    table = setting(env, "FLYWAY_TABLE", "table", app_dir=app_dir)
    schema = default_schema(env, app_dir)
    if schema is None:
        return table
    return f"{schema}.{table or DEFAULT_TABLE}"


def skip_requested_by(
    app_dir: Path, env: Mapping[str, str], flags: Mapping[str, object | None]
) -> str | None:
    """Where `skip` was switched on (`MIGRATE_SKIP`, `--skip` or `migrate.toml`), or None.

    Resolved on its own, before anything else is read or checked: the emergency switch must
    work even when another setting or the migration files are broken. `migrate.toml` is read
    only when neither the flag nor the config var decides.
    """
    value, origin = _resolve("skip", env, flags, lambda: read_config_file(app_dir))
    return origin if value is True else None


def release_skipped_message(origin: str) -> tuple[str, str]:
    """The warning for an `up` that `skip` stopped: why, and how to migrate again."""
    name = env_var_name("skip")
    if origin == name:
        return (
            f"Migrations skipped: {name} is set, so this release applied none.",
            f"To migrate again, run `heroku config:unset {name}`: that creates a new release, "
            "which applies the pending migrations.",
        )
    if origin == CONFIG_FILE:
        return (
            f"Migrations skipped: {CONFIG_FILE} sets skip = true, so this release applied none.",
            f"To migrate again, remove `skip` from {CONFIG_FILE} and push.",
        )
    return (
        f"Migrations skipped: {origin} was given, so nothing was applied.",
        f"To migrate, run the command without {origin}.",
    )
