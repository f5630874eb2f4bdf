"""Settings through the real command line (`python -m herokumigrate` in a subprocess): flags on
either side of the command, the release switch MIGRATE_SKIP, and the app root the launcher sets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herokumigrate.config import SETTINGS, Setting
from support import Server, history, run_cli, write_migrations

ONE_MIGRATION = {"1_create_t.up.sql": "CREATE TABLE t (id int);\n"}


def _bad_value(setting: Setting) -> str:
    """A value the setting refuses."""
    if setting.kind in (int, float):
        return "soon"
    if setting.choices or setting.qualified_identifier:
        return "no such thing"
    return ""


@pytest.mark.parametrize("position", ["before", "after"])
def test_path_flag_on_either_side_of_the_command(app: Path, position: str) -> None:
    write_migrations(app, ONE_MIGRATION, folder="other")
    argv = (
        ["--path", "other", "validate"] if position == "before" else ["validate", "--path", "other"]
    )
    result = run_cli(argv, cwd=app)
    assert result.returncode == 0, result.output
    assert "Validated 1 migration(s) in other" in result.stdout


def test_a_flag_given_before_and_after_the_command_takes_the_later_value(app: Path) -> None:
    write_migrations(app, ONE_MIGRATION, folder="other")
    later_good = run_cli(["--path", "missing", "validate", "--path", "other"], cwd=app)
    assert later_good.returncode == 0, later_good.output
    assert "in other" in later_good.stdout
    later_bad = run_cli(["--path", "other", "validate", "--path", "missing"], cwd=app)
    assert later_bad.returncode == 2
    assert "missing" in later_bad.stderr


def test_a_flag_before_the_command_beats_the_config_var(app: Path) -> None:
    write_migrations(app, ONE_MIGRATION, folder="other")
    result = run_cli(["--path", "other", "validate"], cwd=app, env={"MIGRATE_PATH": "missing"})
    assert result.returncode == 0, result.output
    assert "in other" in result.stdout


FLAGS_WITH_VALUES = [s for s in SETTINGS.values() if s.flag and s.kind is not bool]


@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("setting", FLAGS_WITH_VALUES, ids=lambda s: s.flag_name)
def test_every_setting_flag_is_read_on_either_side_of_the_command(
    app: Path, setting: Setting, position: str
) -> None:
    # A bad value is refused wherever the flag stands: it was read, not dropped.
    write_migrations(app, ONE_MIGRATION)
    flag = [setting.flag_name, _bad_value(setting)]
    argv = [*flag, "validate"] if position == "before" else ["validate", *flag]
    result = run_cli(argv, cwd=app)
    assert result.returncode == 2, result.output
    assert f"{setting.flag_name}: invalid value" in result.stderr
    assert setting.name in result.stderr


def test_settings_before_the_command_reach_the_runner(
    app: Path, database_url: str, pg_server: Server, dbname: str
) -> None:
    write_migrations(app, {**ONE_MIGRATION, "2_create_u.up.sql": "CREATE TABLE u (id int);\n"})
    result = run_cli(
        ["--transaction", "migration", "--history-table", "before_cmd", "up"],
        cwd=app,
        database_url=database_url,
    )
    assert result.returncode == 0, result.output
    assert "(one transaction per migration)" in result.stdout
    assert [row[0] for row in history(pg_server, dbname, "public.before_cmd")] == [1, 2]
    assert history(pg_server, dbname) == []  # the default table was not used


# --- MIGRATE_SKIP ---------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that accepts connections and reports them: a database URL nobody may use."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def _url_of(sock: socket.socket) -> str:
    return f"postgres://someone:pw@127.0.0.1:{sock.getsockname()[1]}/db"


def test_skip_makes_up_exit_0_at_once_reading_nothing_and_connecting_nowhere(
    app: Path, listener: socket.socket
) -> None:
    # No migrations folder and a broken migrate.toml: reading either would fail.
    (app / "migrate.toml").write_text("lock_wait = 'soon'\n")
    started = time.monotonic()
    result = run_cli(["up"], cwd=app, database_url=_url_of(listener), env={"MIGRATE_SKIP": "true"})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.output
    assert result.stdout == ""
    assert "MIGRATE_SKIP is set" in result.stderr
    assert "heroku config:unset MIGRATE_SKIP" in result.stderr
    assert _connections(listener) == 0
    assert elapsed < 20  # generous: a connection attempt would wait out connect_timeout first


def test_without_skip_the_same_up_does_connect(app: Path, listener: socket.socket) -> None:
    # The control for the test above: the listener does see a runner that connects.
    write_migrations(app, ONE_MIGRATION)
    result = run_cli(
        ["up"],
        cwd=app,
        database_url=_url_of(listener),
        env={"MIGRATE_CONNECT_TIMEOUT": "2", "MIGRATE_CONNECT_WAIT": "0"},
    )
    assert result.returncode != 0
    assert _connections(listener) >= 1


def test_skip_applies_to_up_only(
    app: Path, database_url: str, pg_server: Server, dbname: str
) -> None:
    write_migrations(app, ONE_MIGRATION)
    skip = {"MIGRATE_SKIP": "true"}

    def run(*argv: str, env: dict[str, str] = skip) -> str:
        result = run_cli(list(argv), cwd=app, database_url=database_url, env=env)
        assert result.returncode == 0, result.output
        return result.output

    assert "1 pending" in run("status")
    assert "Validated 1 migration(s)" in run("validate")
    assert "Dry run of 1 migration(s)" in run("plan")
    assert "Dry run of 1 migration(s)" in run("up", "--dry-run")
    assert "MIGRATE_SKIP is set" in run("up")
    assert history(pg_server, dbname) == []
    # --no-skip overrides the config var; unsetting it migrates again.
    assert "Applying 1 migration(s)" in run("up", "--no-skip")
    assert [row[0] for row in history(pg_server, dbname)] == [1]
    write_migrations(app, {"2_create_u.up.sql": "CREATE TABLE u (id int);\n"})
    assert "Applying 1 migration(s)" in run("up", env={})
    assert [row[0] for row in history(pg_server, dbname)] == [1, 2]


@pytest.mark.parametrize(
    ("argv", "toml", "says"),
    [
        (["up", "--skip"], None, "--skip was given"),
        (["--skip", "up"], None, "--skip was given"),
        (["up"], "skip = true\n", "migrate.toml sets skip = true"),
    ],
)
def test_skip_from_a_flag_or_the_file_says_where_it_came_from(
    app: Path, listener: socket.socket, argv: list[str], toml: str | None, says: str
) -> None:
    if toml is not None:
        (app / "migrate.toml").write_text(toml)
    result = run_cli(argv, cwd=app, database_url=_url_of(listener))
    assert result.returncode == 0, result.output
    assert says in result.stderr
    assert _connections(listener) == 0


def test_a_bad_skip_value_is_bad_input(app: Path, listener: socket.socket) -> None:
    result = run_cli(["up"], cwd=app, database_url=_url_of(listener), env={"MIGRATE_SKIP": "sure"})
    assert result.returncode == 2
    assert "MIGRATE_SKIP: invalid value 'sure' for skip" in result.stderr
    assert "true or false" in result.stderr


# --- app root -------------------------------------------------------------------------------


def test_the_launchers_app_root_beats_the_current_directory(app: Path) -> None:
    (app / "migrate.toml").write_text("path = 'sql'\n")
    write_migrations(app, ONE_MIGRATION, folder="sql")
    subdir = app / "db"
    subdir.mkdir()
    rooted = run_cli(["validate"], cwd=subdir, env={"HEROKU_MIGRATE_APP_ROOT": str(app)})
    assert rooted.returncode == 0, rooted.output
    assert "Validated 1 migration(s) in sql" in rooted.stdout
    # Without it (a checkout), the current directory is the app root.
    unrooted = run_cli(["validate"], cwd=subdir)
    assert unrooted.returncode == 2
    assert "db/migrations" in unrooted.stderr


def test_new_writes_under_the_app_root(app: Path) -> None:
    subdir = app / "db"
    subdir.mkdir()
    result = run_cli(["new", "add_users"], cwd=subdir, env={"HEROKU_MIGRATE_APP_ROOT": str(app)})
    assert result.returncode == 0, result.output
    assert len(list((app / "db" / "migrations").glob("*_add_users.up.sql"))) == 1
    assert not (subdir / "db").exists()


# --- identifiers ----------------------------------------------------------------------------


def test_a_history_table_name_too_long_for_its_log_is_refused_before_connecting(
    app: Path, database_url: str, pg_server: Server, dbname: str
) -> None:
    write_migrations(app, ONE_MIGRATION)
    name = "h" * 63
    result = run_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_HISTORY_TABLE": name}
    )
    assert result.returncode == 2
    assert "MIGRATE_HISTORY_TABLE: history_table" in result.stderr
    assert "the maximum is 59" in result.stderr
    with pg_server.admin_conn(dbname) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)


@pytest.mark.parametrize(
    ("argv", "files", "names"),
    [
        (["status", "--json"], ONE_MIGRATION, "DATABASE_URL"),
        (["plan", "--json"], {"1_bad.up.sql": "SELECT 'unterminated;\n"}, "1_bad.up.sql"),
    ],
    ids=["status-without-url", "plan-with-a-broken-file"],
)
def test_a_refused_json_command_prints_the_error_as_json_on_stdout(
    app: Path, database_url: str, argv: list[str], files: dict[str, str], names: str
) -> None:
    import json

    write_migrations(app, files)
    url = "" if names == "DATABASE_URL" else database_url
    result = run_cli(argv, cwd=app, env={"DATABASE_URL": url})
    assert result.returncode == 2, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"error"}, doc
    assert names in doc["error"]["message"], doc
    assert doc["error"]["exit_code"] == 2, doc
    assert doc["error"]["fix"], doc
    assert doc["error"]["message"] in result.stderr, result.output
