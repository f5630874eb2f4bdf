"""Settings: flag, then `MIGRATE_*` environment variable, then `migrate.toml`, then the default;
and every wrong value is refused with the place it came from and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from herokumigrate.config import SETTINGS, Config, TransactionMode, load_config, read_config_file
from herokumigrate.errors import BadInput


def _app(tmp_path: Path, toml: str | None = None) -> Path:
    if toml is not None:
        (tmp_path / "migrate.toml").write_text(toml)
    return tmp_path


def test_defaults(tmp_path: Path) -> None:
    config = load_config(_app(tmp_path), env={}, flags={})
    assert config == Config(app_dir=tmp_path)
    assert config.path == "db/migrations"
    assert config.database_url_var == "DATABASE_URL"
    assert config.transaction is TransactionMode.RELEASE
    assert config.allow_changed is False
    assert config.migrations_dir == tmp_path / "db" / "migrations"


@pytest.mark.parametrize(
    ("toml", "env", "flag", "expected"),
    [
        pytest.param(None, None, None, 300.0, id="default"),
        pytest.param("lock_wait = 20", None, None, 20.0, id="file-over-default"),
        pytest.param("lock_wait = 20", "30", None, 30.0, id="env-over-file"),
        pytest.param("lock_wait = 20", "30", "40", 40.0, id="flag-over-env"),
        pytest.param(None, None, "40", 40.0, id="flag-over-default"),
        pytest.param("lock_wait = 20", None, "40", 40.0, id="flag-over-file"),
        pytest.param("lock_wait = 20", "", None, 20.0, id="empty-env-is-unset"),
        pytest.param("[migrate]\nlock_wait = 20", "30", None, 30.0, id="migrate-table-form"),
    ],
)
def test_precedence_flag_env_file_default(
    tmp_path: Path, toml: str | None, env: str | None, flag: str | None, expected: float
) -> None:
    environ = {} if env is None else {"MIGRATE_LOCK_WAIT": env}
    config = load_config(_app(tmp_path, toml), env=environ, flags={"lock_wait": flag})
    assert config.lock_wait == expected


def test_each_setting_resolves_on_its_own(tmp_path: Path) -> None:
    app = _app(tmp_path, "path = 'sql/file'\nretries = 1\nhistory_table = 'from_file'\n")
    config = load_config(
        app,
        env={"MIGRATE_PATH": "sql/env", "MIGRATE_RETRIES": "2"},
        flags={"path": "sql/flag", "retries": None},
    )
    assert config.path == "sql/flag"  # flag
    assert config.retries == 2  # env
    assert config.history_table == "from_file"  # file
    assert config.history_schema == "public"  # default


def test_every_setting_has_an_env_var_and_a_config_field(tmp_path: Path) -> None:
    samples = {str: "x_1", int: "3", float: "2.5", bool: "true"}
    for key, setting in SETTINGS.items():
        raw = setting.choices[-1] if setting.choices else samples[setting.kind]
        config = load_config(tmp_path, env={f"MIGRATE_{key.upper()}": raw}, flags={})
        expected = True if setting.kind is bool else setting.kind(raw)
        assert getattr(config, key) == expected, key
        assert config.env_name(key) == f"MIGRATE_{key.upper()}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("true", True), ("TRUE", True), ("yes", True), ("1", True), (" on ", True)],
        *[("false", False), ("No", False), ("0", False), ("off", False)],
    ],
)
def test_boolean_spellings(tmp_path: Path, raw: str, expected: bool) -> None:
    config = load_config(tmp_path, env={"MIGRATE_ALLOW_CHANGED": raw}, flags={})
    assert config.allow_changed is expected


def test_toml_types(tmp_path: Path) -> None:
    app = _app(
        tmp_path,
        "lock_wait = 5\nlock_timeout = 0.5\nretries = 3.0\nallow_changed = true\n"
        "transaction = 'migration'\n",
    )
    config = load_config(app, env={}, flags={})
    assert config.lock_wait == 5.0
    assert isinstance(config.lock_wait, float)
    assert config.lock_timeout == 0.5
    assert config.retries == 3
    assert isinstance(config.retries, int)
    assert config.allow_changed is True
    assert config.transaction is TransactionMode.MIGRATION


def test_no_config_file_is_fine(tmp_path: Path) -> None:
    assert read_config_file(tmp_path) == {}


@dataclass(frozen=True)
class Bad:
    """A wrong value, where it is set, and what the error must say."""

    message: str  # the message must contain this: the origin and the setting
    fix: str  # the fix must contain this
    toml: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)


BAD_VALUES = {
    "toml-float-as-text": Bad(
        "migrate.toml: invalid value 'soon' for lock_wait",
        "number of seconds",
        toml="lock_wait = 'soon'",
    ),
    "toml-bool-for-number": Bad(
        "migrate.toml: invalid value True for lock_wait",
        "number of seconds",
        toml="lock_wait = true",
    ),
    "toml-fraction-for-int": Bad(
        "migrate.toml: invalid value 1.5 for retries", "whole number", toml="retries = 1.5"
    ),
    "toml-negative": Bad(
        "migrate.toml: invalid value -1 for retries", "a number from 0 to", toml="retries = -1"
    ),
    "toml-choice": Bad(
        "migrate.toml: invalid value 'sometimes' for transaction",
        "release, migration",
        toml="transaction = 'sometimes'",
    ),
    "toml-bool-as-text": Bad(
        "migrate.toml: invalid value 'maybe' for allow_changed",
        "true or false",
        toml="allow_changed = 'maybe'",
    ),
    "toml-empty-path": Bad(
        "migrate.toml: invalid value '' for path", "non-empty", toml="path = ''"
    ),
    "toml-table-for-string": Bad(
        "migrate.toml: invalid value", "non-empty", toml="path = { a = 1 }"
    ),
    "toml-nan": Bad(
        "migrate.toml: invalid value nan for lock_wait", "lock_wait", toml="lock_wait = nan"
    ),
    "toml-infinite": Bad(
        "migrate.toml: invalid value inf for statement_timeout",
        "statement_timeout",
        toml="statement_timeout = inf",
    ),
    "toml-unknown-key": Bad(
        "migrate.toml: unknown key 'lock_wiat'", "lock_wait", toml="lock_wiat = 5"
    ),
    "toml-key-beside-table": Bad(
        "migrate.toml: unknown key 'retries' beside [migrate]",
        "[migrate]",
        toml="retries = 1\n[migrate]\npath = 'x'",
    ),
    "toml-syntax": Bad("migrate.toml: invalid TOML", "toml.io", toml="path = 'x"),
    "env-float": Bad(
        "MIGRATE_LOCK_TIMEOUT: invalid value '5s' for lock_timeout",
        "number of seconds",
        env={"MIGRATE_LOCK_TIMEOUT": "5s"},
    ),
    "env-int": Bad(
        "MIGRATE_RETRIES: invalid value 'three'",
        "whole number",
        env={"MIGRATE_RETRIES": "three"},
    ),
    "env-bool": Bad(
        "MIGRATE_RELEASE_PHASE: invalid value 'sure'",
        "true or false",
        env={"MIGRATE_RELEASE_PHASE": "sure"},
    ),
    "env-infinite": Bad(
        "MIGRATE_CONNECT_TIMEOUT: invalid value 'inf'",
        "connect_timeout",
        env={"MIGRATE_CONNECT_TIMEOUT": "inf"},
    ),
    # 10^7 s is 10^10 ms: PostgreSQL's lock_timeout is an int of milliseconds.
    "env-beyond-postgres-range": Bad(
        "MIGRATE_LOCK_TIMEOUT: invalid value '10000000'",
        "lock_timeout",
        env={"MIGRATE_LOCK_TIMEOUT": "10000000"},
    ),
    "flag-negative": Bad(
        "--lock-wait: invalid value '-1' for lock_wait",
        "a number from 0 to",
        flags={"lock_wait": "-1"},
    ),
    "flag-choice": Bad(
        "--transaction: invalid value 'file'",
        "release, migration",
        flags={"transaction": "file"},
    ),
}


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_name_their_origin_and_the_fix(tmp_path: Path, bad: Bad) -> None:
    with pytest.raises(BadInput) as caught:
        load_config(_app(tmp_path, bad.toml), env=bad.env, flags=bad.flags)
    assert bad.message in caught.value.message
    assert bad.fix in caught.value.fix
    assert caught.value.exit_code == 2


def test_a_bad_file_value_is_reported_even_when_env_overrides_it(tmp_path: Path) -> None:
    # The file is checked as a whole: a broken migrate.toml must not hide behind a config var,
    # or it breaks the day the config var is removed.
    app = _app(tmp_path, "lock_wait = 'soon'")
    with pytest.raises(BadInput, match=r"^migrate\.toml: "):
        load_config(app, env={"MIGRATE_LOCK_WAIT": "5"}, flags={})


def test_numbers_accept_surrounding_spaces_and_exponents(tmp_path: Path) -> None:
    config = load_config(
        tmp_path, env={"MIGRATE_LOCK_WAIT": " 1.5e1 ", "MIGRATE_RETRIES": " 2 "}, flags={}
    )
    assert config.lock_wait == 15.0
    assert config.retries == 2
    assert math.isfinite(config.lock_wait)
