"""Settings: command-line flag, then `MIGRATE_*` environment variable, then `migrate.toml`, then
the default. Every setting is declared once in `SETTINGS`; the README's table mirrors it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from herokumigrate.errors import BadInput

CONFIG_FILE = "migrate.toml"
ENV_PREFIX = "MIGRATE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Config:
    """Resolved settings for one run."""

    path: str = "db/migrations"
    database_url_var: str = "DATABASE_URL"
    history_schema: str = "public"
    history_table: str = "heroku_migrate_history"
    transaction: str = "release"
    lock_wait: float = 300.0
    lock_timeout: float = 5.0
    statement_timeout: float = 0.0
    retries: int = 5
    connect_timeout: float = 10.0
    connect_wait: float = 180.0
    allow_changed: bool = False
    release_phase: bool = True
    app_dir: Path = Path()

    @property
    def migrations_dir(self) -> Path:
        """The migrations folder, resolved against the app directory."""
        return self.app_dir / self.path

    def env_name(self, key: str) -> str:
        """The environment variable that sets `key`."""
        return ENV_PREFIX + key.upper()


# PostgreSQL keeps lock_timeout and statement_timeout in milliseconds as a 32-bit integer.
PG_MAX_SECONDS = 2147483
DAY = 86400


@dataclass(frozen=True)
class Setting:
    """How one setting is parsed and documented; numbers must lie in [0, maximum]."""

    kind: type
    help: str
    maximum: float | None = None
    choices: tuple[str, ...] = ()


SETTINGS: dict[str, Setting] = {
    "path": Setting(str, "folder holding the migrations, relative to the app root"),
    "database_url_var": Setting(
        str, "config var holding the database URL (e.g. HEROKU_POSTGRESQL_RED_URL)"
    ),
    "history_schema": Setting(str, "schema of the history table"),
    "history_table": Setting(str, "name of the history table"),
    "transaction": Setting(
        str,
        "`release`: one transaction for all pending migrations; `migration`: one per file",
        choices=("release", "migration"),
    ),
    "lock_wait": Setting(float, "seconds to wait for another runner's lock", DAY),
    "lock_timeout": Setting(float, "seconds a statement may wait for a table lock", PG_MAX_SECONDS),
    "statement_timeout": Setting(
        float, "seconds a statement may run; 0 = no limit", PG_MAX_SECONDS
    ),
    "retries": Setting(int, "retries of the whole transaction on lock timeout or deadlock", 100),
    "connect_timeout": Setting(float, "seconds per connection attempt", 3600),
    "connect_wait": Setting(float, "seconds to keep retrying while the database starts", DAY),
    "allow_changed": Setting(bool, "warn instead of failing when an applied file changed"),
    "release_phase": Setting(bool, "buildpack: wire `release:` in the Procfile"),
}


def _convert(key: str, raw: object, origin: str) -> object:
    """Turn a raw value from TOML or the environment into the setting's type, or fail clearly."""
    setting = SETTINGS[key]
    kind = setting.kind
    value: object
    try:
        if kind is bool:
            if isinstance(raw, bool):
                value = raw
            elif isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
                value = raw.strip().lower() in _TRUE
            else:
                raise ValueError
        elif kind in (int, float):
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise ValueError
            value = kind(raw.strip() if isinstance(raw, str) else raw)
            if kind is int and isinstance(raw, float) and raw != int(raw):
                raise ValueError
        else:
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError
            value = raw.strip()
    except ValueError:
        expected = {bool: "true or false", int: "a whole number", float: "a number of seconds"}
        want = expected.get(kind, "a non-empty string")
        raise BadInput(
            f"{origin}: invalid value {_show(raw)} for {key}",
            fix=f"Set {key} to {want}.",
        ) from None
    if setting.choices and value not in setting.choices:
        raise BadInput(
            f"{origin}: invalid value {_show(raw)} for {key}",
            fix=f"Set {key} to one of: {', '.join(setting.choices)}.",
        )
    if setting.maximum is not None:
        number = float(value)
        if not (0 <= number <= setting.maximum):  # also false for nan
            raise BadInput(
                f"{origin}: invalid value {_show(raw)} for {key}",
                fix=f"Set {key} to a number from 0 to {setting.maximum:g}.",
            )
    return value


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


def unknown_env_settings(env: Mapping[str, str]) -> list[str]:
    """`MIGRATE_*` variables that set nothing (a typo, most likely)."""
    valid = {ENV_PREFIX + key.upper() for key in SETTINGS}
    return sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in valid)


def load_config(
    app_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object | None] | None = None,
) -> Config:
    """Resolve every setting: flag, then `MIGRATE_*` environment variable, then file, then default.

    `env` defaults to `os.environ`; the buildpack passes the config vars read from ENV_DIR.
    """
    app_dir = Path.cwd() if app_dir is None else app_dir
    env = os.environ if env is None else env
    values: dict[str, object] = dict(read_config_file(app_dir))
    for key in SETTINGS:
        name = ENV_PREFIX + key.upper()
        raw = env.get(name)
        if raw is not None and raw != "":
            values[key] = _convert(key, raw, name)
    for key, flag in (flags or {}).items():
        if flag is not None:
            values[key] = _convert(key, flag, "--" + key.replace("_", "-"))
    known = {f.name for f in fields(Config)}

    return Config(app_dir=app_dir, **{k: v for k, v in values.items() if k in known})  # type: ignore[arg-type]
