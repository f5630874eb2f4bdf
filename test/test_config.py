"""Settings: flag, then `MIGRATE_*` environment variable, then `migrate.toml`, then the default;
and every wrong value is refused with the place it came from and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from herokumigrate.arguments import RELEASE_ARGV, Arguments, build_parser, parse_command_line
from herokumigrate.config import (
    APP_ROOT_ENV,
    SETTINGS,
    Config,
    Setting,
    TransactionMode,
    env_var_name,
    load_config,
    read_config_file,
    skip_requested_by,
    unknown_env_settings,
)
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


# --- every setting, every layer -------------------------------------------------------------


def _samples(setting: Setting) -> list[object]:
    """Valid values of a setting, as the setting's type: at least two, distinct."""
    if setting.choices:
        return [setting.kind(choice) for choice in setting.choices]
    if setting.kind is bool:
        return [True, False]
    if setting.kind is int:
        return [1, 2, 3]
    if setting.kind is float:
        return [1.5, 2.5, 3.5]
    if setting.qualified_identifier:
        return ["meta.t_one", "t_two", "t_three"]
    return ["one_x", "two_y", "three_z"]


def _other(setting: Setting, current: object) -> object:
    """A valid value that differs from `current`, so the layer that sets it is seen to win."""
    return next(value for value in _samples(setting) if value != current)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return f"'{value}'"


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _flag_argv(setting: Setting, value: object) -> list[str]:
    if isinstance(value, bool):
        return [setting.flag_name if value else "--no-" + setting.flag_name[2:]]
    return [setting.flag_name, _text(value)]


LAYERS = {  # which of file, env var and flag are set; each one set differs from the one below
    "default": (False, False, False),
    "file-over-default": (True, False, False),
    "env-over-default": (False, True, False),
    "env-over-file": (True, True, False),
    "flag-over-default": (False, False, True),
    "flag-over-file": (True, False, True),
    "flag-over-env-over-file": (True, True, True),
}


@pytest.mark.parametrize(
    ("key", "layers"),
    [
        pytest.param(key, layers, id=f"{key}-{name}")
        for key, setting in SETTINGS.items()
        for name, layers in LAYERS.items()
        if setting.flag or not layers[2]  # release_phase has no flag: the buildpack reads it
    ],
)
def test_precedence_of_every_setting(
    tmp_path: Path, key: str, layers: tuple[bool, bool, bool]
) -> None:
    setting = SETTINGS[key]
    use_file, use_env, use_flag = layers
    expected = setting.default
    toml = env = None
    flag_argv: list[str] = []
    if use_file:
        expected = _other(setting, expected)
        toml = f"{key} = {_toml(expected)}\n"
    if use_env:
        expected = _other(setting, expected)
        env = {setting.env_var: _text(expected)}
    if use_flag:
        expected = _other(setting, expected)
        flag_argv = _flag_argv(setting, expected)
    # The flag goes through the real parser, before the command.
    _, flags = parse_command_line([*flag_argv, "status"])
    config = load_config(_app(tmp_path, toml), env=env or {}, flags=flags)
    assert getattr(config, key) == expected
    assert type(getattr(config, key)) is type(expected) or expected is None


@pytest.mark.parametrize("key", [key for key, s in SETTINGS.items() if s.flag])
def test_every_setting_flag_works_before_and_after_the_command(key: str) -> None:
    setting = SETTINGS[key]
    first, second = _samples(setting)[:2]
    before = parse_command_line([*_flag_argv(setting, first), "validate"])
    after = parse_command_line(["validate", *_flag_argv(setting, first)])
    assert before == after
    assert before[1] == {key: first if isinstance(first, bool) else _text(first)}
    # Given before and after the command, the later one wins, as with a repeated flag.
    _, both = parse_command_line(
        [*_flag_argv(setting, first), "validate", *_flag_argv(setting, second)]
    )
    assert both[key] == (second if isinstance(second, bool) else _text(second))


def test_flags_not_given_are_absent_so_env_and_file_still_apply(tmp_path: Path) -> None:
    args, flags = parse_command_line(["--path", "sql", "status", "--json"])
    assert flags == {"path": "sql"}
    assert args == Arguments(command="status", json=True)
    config = load_config(_app(tmp_path, "retries = 1"), env={"MIGRATE_LOCK_WAIT": "7"}, flags=flags)
    assert (config.path, config.retries, config.lock_wait) == ("sql", 1, 7.0)


def test_the_release_command_line_parses_as_argparse_would() -> None:
    # `heroku-migrate up` skips argparse; its answer must be exactly what argparse gives.
    fast = parse_command_line(list(RELEASE_ARGV))
    parsed = vars(build_parser().parse_args(list(RELEASE_ARGV)))
    assert fast == (Arguments(**parsed), {})


def test_env_var_names() -> None:
    assert env_var_name("lock_wait") == "MIGRATE_LOCK_WAIT"
    assert {s.env_var for s in SETTINGS.values()} == {f"MIGRATE_{k.upper()}" for k in SETTINGS}
    env = {"MIGRATE_SKIP": "1", "MIGRATE_LOCK_WIAT": "5", "DATABASE_URL": "x", "MIGRATE_": ""}
    assert unknown_env_settings(env) == ["MIGRATE_", "MIGRATE_LOCK_WIAT"]
    assert unknown_env_settings(["MIGRATE_PATH", "MIGRATE_PAHT"]) == ["MIGRATE_PAHT"]


def test_app_root_comes_from_the_launcher_when_it_set_one(tmp_path: Path) -> None:
    (tmp_path / "migrate.toml").write_text("path = 'sql'\n")
    config = load_config(env={APP_ROOT_ENV: str(tmp_path)}, flags={})
    assert config.app_dir == tmp_path
    assert config.path == "sql"
    assert config.migrations_dir == tmp_path / "sql"
    assert load_config(env={APP_ROOT_ENV: ""}, flags={}).app_dir == Path.cwd()


def test_transaction_mode_compares_equal_to_its_text() -> None:
    # Other modules compare `config.transaction == "migration"`; keep that true.
    assert TransactionMode.MIGRATION == "migration"
    assert f"{TransactionMode.RELEASE}" == "release"
    assert str(TransactionMode.RELEASE) == "release"


# --- identifiers ----------------------------------------------------------------------------

GOOD_IDENTIFIERS = {
    "history_table": ["h" * 59, "History Table", "историй"],
    "history_schema": ["s" * 63, "my-schema"],
    "migrations_table": ["schema_migrations", "goose_db_version", "meta.schema_om", "t$1"],
}


@pytest.mark.parametrize(
    ("key", "value"), [(k, v) for k, values in GOOD_IDENTIFIERS.items() for v in values]
)
def test_identifiers_postgres_keeps_as_written_are_accepted(
    tmp_path: Path, key: str, value: str
) -> None:
    config = load_config(tmp_path, env={env_var_name(key): value}, flags={})
    assert getattr(config, key) == value


BAD_IDENTIFIERS = {
    # 60 + len("_log") = 64 bytes: PostgreSQL would cut the log table's name onto the table's.
    "history-table-63": ("history_table", "h" * 63, "is 63 bytes long; the maximum is 59"),
    "history-table-60": ("history_table", "h" * 60, "is 60 bytes long; the maximum is 59"),
    "history-table-multibyte": ("history_table", "й" * 30, "is 60 bytes long; the maximum is 59"),
    "history-schema-64": ("history_schema", "s" * 64, "is 64 bytes long; the maximum is 63"),
    "history-table-newline": ("history_table", "a\nb", "invalid value"),
    "migrations-table-64": ("migrations_table", "m" * 64, "is 64 bytes long; the maximum is 63"),
    "migrations-schema-64": (
        "migrations_table",
        "s" * 64 + ".t",
        "is 64 bytes long; the maximum is 63",
    ),
    "migrations-table-quote": ("migrations_table", 'a"b', "invalid value"),
    "migrations-table-two-dots": ("migrations_table", "a.b.c", "invalid value"),
    "migrations-table-empty-part": ("migrations_table", "a.", "invalid value"),
    "migrations-table-digit": ("migrations_table", "1abc", "invalid value"),
    "migrations-table-space": ("migrations_table", "my table", "invalid value"),
}


@pytest.mark.parametrize(
    ("key", "value", "says"), BAD_IDENTIFIERS.values(), ids=BAD_IDENTIFIERS.keys()
)
def test_bad_identifiers_are_refused_naming_the_setting(
    tmp_path: Path, key: str, value: str, says: str
) -> None:
    name = env_var_name(key)
    with pytest.raises(BadInput) as caught:
        load_config(tmp_path, env={name: value}, flags={})
    assert caught.value.message.startswith(f"{name}: ")
    assert key in caught.value.message
    assert says in caught.value.message
    assert key in caught.value.fix
    assert caught.value.exit_code == 2


def test_migrations_table_splits_into_schema_and_table(tmp_path: Path) -> None:
    def parts(value: str | None) -> tuple[str | None, str] | None:
        env = {} if value is None else {"MIGRATE_MIGRATIONS_TABLE": value}
        return load_config(tmp_path, env=env, flags={}).migrations_table_parts

    assert parts(None) is None
    assert parts("schema_om") == (None, "schema_om")
    assert parts("meta.schema_om") == ("meta", "schema_om")


def test_history_table_length_error_explains_the_log_table(tmp_path: Path) -> None:
    app = _app(tmp_path, f"history_table = '{'h' * 63}'")
    with pytest.raises(BadInput) as caught:
        load_config(app, env={}, flags={})
    assert caught.value.message.startswith("migrate.toml: history_table ")
    assert "at most 59 bytes" in caught.value.fix
    assert "'_log'" in caught.value.fix


# --- skip -----------------------------------------------------------------------------------


def test_skip_is_resolved_alone_from_flag_env_then_file(tmp_path: Path) -> None:
    assert skip_requested_by(tmp_path, {}, {}) is None
    assert skip_requested_by(tmp_path, {"MIGRATE_SKIP": "true"}, {}) == "MIGRATE_SKIP"
    assert skip_requested_by(tmp_path, {"MIGRATE_SKIP": "false"}, {}) is None
    assert skip_requested_by(tmp_path, {"MIGRATE_SKIP": "true"}, {"skip": False}) is None
    assert skip_requested_by(tmp_path, {}, {"skip": True}) == "--skip"
    # Other settings are not looked at, not even a broken migrate.toml, when the env decides.
    _app(tmp_path, "lock_wait = 'soon'")
    assert skip_requested_by(tmp_path, {"MIGRATE_SKIP": "1"}, {}) == "MIGRATE_SKIP"
    (tmp_path / "migrate.toml").write_text("skip = true\n")
    assert skip_requested_by(tmp_path, {}, {}) == "migrate.toml"
    assert skip_requested_by(tmp_path, {"MIGRATE_SKIP": "no"}, {}) is None


def test_every_command_option_has_a_field_in_arguments() -> None:
    # parse_command_line builds Arguments from argparse's result: an option added to the
    # grammar without a field would fail at run time, so check every command's options here.
    import argparse
    from dataclasses import fields as dataclass_fields

    known = {f.name for f in dataclass_fields(Arguments)} | set(SETTINGS)
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {
        "up",
        "plan",
        "status",
        "validate",
        "down",
        "goto",
        "force",
        "resolve",
        "new",
        "lint",
    }
    for name, command in commands.choices.items():
        dests = {a.dest for a in command._actions if a.dest != "help"}
        assert dests <= known, (name, dests - known)


def test_the_tools_table_variables_are_read_checked_and_outranked(tmp_path: Path) -> None:
    env = {"DBMATE_MIGRATIONS_TABLE": " meta.dbmate_versions ", "GOOSE_TABLE": ""}
    assert load_config(tmp_path, env).tool_tables == (("dbmate", "meta.dbmate_versions"),)
    with pytest.raises(BadInput) as bad:
        load_config(tmp_path, {"GOOSE_TABLE": "goose-versions"})
    assert "GOOSE_TABLE" in bad.value.message
    assert "GOOSE_TABLE" in (bad.value.fix or "")
    # Our own setting wins: the tools' variables are then neither read nor checked.
    ours = load_config(tmp_path, {"MIGRATE_MIGRATIONS_TABLE": "v", "GOOSE_TABLE": "a.b.c"})
    assert ours.tool_tables == ()
