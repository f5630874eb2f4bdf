"""The buildpack's hardening, built as Heroku builds (see `buildpack_harness`): what the build
explains (detection, folders, buildpack order, config vars), the build cache, Heroku CI, and
heroku-migrate on a dyno from wherever it is run.
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path

import pytest

# Before the import: the harness's asserts get pytest's messages, and it is also our plugin.
pytest.register_assert_rewrite("buildpack_harness")

from buildpack_harness import (  # noqa: E402
    FIXTURES,
    Heroku24Builds,
    move_app,
    needs_pythons,
    needs_unshare,
    run_bin,
    run_command,
    run_release,
    tables,
)

pytest_plugins = ["buildpack_harness"]
pytestmark = pytest.mark.buildpack


# --------------------------------------------------------------------------------------------
# What the build explains


@needs_unshare
@needs_pythons
def test_empty_migrations_folder_builds_with_a_note(heroku24: Heroku24Builds) -> None:
    app = heroku24.app(FIXTURES / "no_migrations")
    (app / "db/migrations").mkdir(parents=True)
    (app / "db/migrations/.gitkeep").write_text("")
    build = heroku24.compile(app)
    assert build.result.returncode == 0, build.output
    assert "db/migrations/ holds no migration yet" in build.result.stdout


@needs_unshare
@needs_pythons
def test_missing_migrations_folder_says_how_to_create_it(heroku24: Heroku24Builds) -> None:
    app = heroku24.app(FIXTURES / "no_migrations")
    (app / "migrate.toml").write_text('path = "sql/migrations"\n')
    build = heroku24.compile(app)
    assert build.result.returncode == 1, build.output
    assert " !     The migrations folder sql/migrations/ does not exist" in build.result.stderr
    assert "(set by `path` in migrate.toml)" in build.result.stderr
    assert "mkdir -p sql/migrations" in build.result.stderr
    assert "Fix the file" not in build.output
    assert "/build_" not in build.output
    assert "Internal error" not in build.output


@needs_unshare
@needs_pythons
def test_go_app_without_procfile_is_told_to_run_this_buildpack_after_heroku_go(
    heroku24: Heroku24Builds,
) -> None:
    app = heroku24.app()
    (app / "Procfile").unlink()
    build = heroku24.compile(app)
    assert build.result.returncode == 0, build.output
    assert " !     Run this buildpack AFTER heroku/go (re-adding it puts it last):" in (
        build.result.stderr
    )
    assert "heroku buildpacks:remove https://" in build.result.stderr
    assert "--index 1" not in build.result.stderr


@needs_unshare
@needs_pythons
def test_node_app_without_web_line_is_told_to_run_this_buildpack_first(
    heroku24: Heroku24Builds,
) -> None:
    app = heroku24.app(FIXTURES / "no_procfile")
    (app / "package.json").write_text("{}")
    build = heroku24.compile(app)
    assert build.result.returncode == 0, build.output
    assert "heroku/nodejs may be counting on its default" in build.result.stderr
    assert "heroku buildpacks:add --index 1 https://" in build.result.stderr


@needs_unshare
@needs_pythons
def test_python_app_built_before_heroku_python_gets_the_order_hint(
    heroku24: Heroku24Builds,
) -> None:
    build = heroku24.compile(FIXTURES / "app_python")
    assert build.result.returncode == 0, build.output
    hint = re.search(
        r"Put this buildpack after heroku/python .*: (\d+) MB less", build.result.stdout
    )
    assert hint is not None, build.result.stdout
    bundled = sum(
        path.stat().st_size
        for path in (build.build_dir / ".heroku-migrate/python").rglob("*")
        if path.is_file() and not path.is_symlink()
    )
    assert int(hint.group(1)) == round(bundled / 1e6)
    assert "heroku buildpacks:remove https://" in build.result.stdout


@needs_unshare
@needs_pythons
def test_non_ascii_release_line_is_wired_shown_and_run_and_capitalised_one_reported(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str
) -> None:
    app = heroku24.app()
    (app / "Procfile").write_bytes(
        "web: bin/server\nRelease: ./old-seed\nrelease: echo 'café Å 😅' > seeded.txt\n".encode()
    )
    build = heroku24.compile(app)
    assert build.result.returncode == 0, build.output
    assert (
        "       release: ./.heroku-migrate/bin/heroku-migrate up && "
        "{ echo 'café Å 😅' > seeded.txt; }\n" in build.result.stdout
    )
    assert " !     Procfile line 2 declares `Release:`, which Heroku never runs" in (
        build.result.stderr
    )
    assert "rename `Release:` to `release:`" in build.result.stderr
    app = move_app(build, tmp_path / "app")
    result = run_release(app, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (app / "seeded.txt").read_text(encoding="utf-8") == "café Å 😅\n"


@needs_unshare
@needs_pythons
def test_build_log_prints_values_of_known_settings_only(heroku24: Heroku24Builds) -> None:
    secret = "hunter2-" + secrets.token_hex(8)
    build = heroku24.compile(
        config_vars={
            "MIGRATE_PASSWORD": secret,
            "MIGRATE_DATABSE_URL": f"postgres://u:{secret}@db.example.com/x",
            "MIGRATE_LOCK_WAIT": "30\n",
            "MIGRATE_HISTORY_TABLE": "my_history\nsecond line",
        }
    )
    assert secret not in build.output
    assert (
        " !     Config var MIGRATE_PASSWORD is not a heroku-migrate setting" in build.result.stderr
    )
    assert " !     Config var MIGRATE_DATABSE_URL is not a heroku-migrate setting" in (
        build.result.stderr
    )
    assert "       MIGRATE_LOCK_WAIT=30 (config var)\n" in build.result.stdout
    assert "       MIGRATE_HISTORY_TABLE='my_history\\nsecond line' (config var)\n" in (
        build.result.stdout
    )
    assert "second line (config var)" not in build.result.stdout


# --------------------------------------------------------------------------------------------
# The build cache


def read_only_bind(folder: Path) -> list[str]:
    """argv prefix running a command with `folder` mounted read-only (root ignores modes)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(folder)]


@needs_unshare
@needs_pythons
@pytest.mark.parametrize("problem", ["read-only", "cannot be created"])
def test_unusable_cache_warns_and_the_build_goes_on(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str, problem: str
) -> None:
    wrap: list[str] = []
    cache = heroku24.cache
    if problem == "read-only":
        wrap = read_only_bind(cache)
    else:
        (tmp_path / "a-file").write_text("")
        cache = tmp_path / "a-file/cache"
    before = sorted(heroku24.cache.rglob("*"))
    build = heroku24.compile(cache=cache, wrap=wrap)
    assert build.result.returncode == 0, build.output
    assert f" !     The build cache ({cache}) cannot be written" in build.result.stderr
    assert "Traceback" not in build.output
    assert "Internal error" not in build.output
    assert sorted(heroku24.cache.rglob("*")) == before
    app = move_app(build, tmp_path / "app")
    result = run_release(app, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_unshare
@needs_pythons
@pytest.mark.parametrize("part", ["runtime", "python"])
def test_damaged_cached_bytecode_is_rebuilt_not_shipped(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str, part: str
) -> None:
    (cached,) = (heroku24.cache / "heroku-migrate").glob(f"{part}-*")
    pyc = sorted(cached.rglob("*.pyc"))[0]
    intact = pyc.read_bytes()
    pyc.write_bytes(intact[: len(intact) // 2])
    build = heroku24.compile(offline=True)
    assert build.result.returncode == 0, build.output
    what = "runner" if part == "runtime" else "Python"
    assert f" !     The cached {what} is damaged" in build.result.stderr
    slug = build.build_dir / ".heroku-migrate"
    in_slug = (slug if part == "runtime" else slug / "python") / pyc.relative_to(cached)
    assert in_slug.read_bytes() == intact
    rebuilt = next((heroku24.cache / "heroku-migrate").glob(f"{part}-*"))
    assert (rebuilt / pyc.relative_to(cached)).read_bytes() == intact
    app = move_app(build, tmp_path / "app")
    result = run_release(app, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_unshare
@needs_pythons
@pytest.mark.parametrize("damage", ["truncated library", "edited module", "added module"])
def test_damaged_cached_parser_is_unpacked_again_never_run(
    heroku24: Heroku24Builds, tmp_path: Path, damage: str
) -> None:
    (unpacked,) = (heroku24.cache / "heroku-migrate/parser").iterdir()
    (library,) = unpacked.glob("pglast/parser.*.so")
    intact = library.read_bytes()
    marker = tmp_path / "the-cached-module-ran"
    payload = f"open({str(marker)!r}, 'w').close()\n"
    if damage == "truncated library":
        library.write_bytes(intact[:1_000_000])  # cut inside its loaded segments: SIGBUS
    elif damage == "edited module":
        init = unpacked / "pglast/__init__.py"
        init.write_text(init.read_text() + payload)
    else:
        (unpacked / "pglast/sitecustom.py").write_text(payload)
        init = unpacked / "pglast/__init__.py"
        init.write_text(init.read_text() + "from pglast import sitecustom\n")
    build = heroku24.compile(offline=True)
    assert build.result.returncode == 0, build.output
    assert " !     The cached parser is damaged (pglast/" in build.result.stderr
    assert "PostgreSQL's parser: pglast" in build.result.stdout
    assert "statement boundaries agree" in build.result.stdout
    assert not marker.exists()
    (repaired,) = (heroku24.cache / "heroku-migrate/parser").iterdir()
    assert next(repaired.glob("pglast/parser.*.so")).read_bytes() == intact
    assert not (repaired / "pglast/sitecustom.py").exists()
    again = heroku24.compile(offline=True)
    assert again.result.returncode == 0, again.output
    assert "damaged" not in again.output  # importing it added nothing to the checked folder


# --------------------------------------------------------------------------------------------
# Heroku CI


@needs_unshare
@needs_pythons
def test_test_compile_builds_and_test_setup_migrates_the_ci_database(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str
) -> None:
    build = heroku24.compile(script="test-compile")
    assert build.result.returncode == 0, build.output
    assert "-----> Heroku CI" in build.result.stdout
    assert '"test-setup": "heroku-migrate up"' in build.result.stdout

    app = heroku24.app()
    (app / "app.json").write_text(
        '{"environments": {"test": {"scripts": {"test-setup": "heroku-migrate up"}}}}'
    )
    build = heroku24.compile(app, script="test-compile")
    assert build.result.returncode == 0, build.output
    assert "app.json's test-setup runs the migrations before the tests" in build.result.stdout
    assert (app / "Procfile").read_text() == "web: bin/server\n"  # CI has no release phase
    # What Heroku CI then does: test-setup from $HOME in a dyno, .profile.d sourced.
    app = move_app(build, tmp_path / "app")
    result = run_command(app, "heroku-migrate up", database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"users", "orders"} <= tables(database_url)


@needs_unshare
@needs_pythons
def test_bin_test_migrates_the_ci_database_or_checks_the_files_without_one(
    heroku24: Heroku24Builds, buildpack: Path, tmp_path: Path, database_url: str
) -> None:
    build = heroku24.compile(script="test-compile")
    assert build.result.returncode == 0, build.output
    app, env_dir = build.build_dir, tmp_path / "env"
    env_dir.mkdir()
    without_database = run_bin(buildpack, "test", app, env_dir)
    assert without_database.returncode == 0, without_database.stdout + without_database.stderr
    assert "No DATABASE_URL in this test run: checking the migration files" in (
        without_database.stdout
    )
    assert "Validated 5 migration(s)" in without_database.stdout
    migrated = run_bin(buildpack, "test", app, env_dir, env={"DATABASE_URL": database_url})
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "Applied 5 migration(s)" in migrated.stdout
    not_built = run_bin(buildpack, "test", tmp_path, env_dir)
    assert not_built.returncode == 1
    assert "Heroku CI did not build with this buildpack" in not_built.stderr


@needs_unshare
@needs_pythons
def test_the_app_build_warns_that_heroku_ci_would_not_run_this_buildpack(
    heroku24: Heroku24Builds,
) -> None:
    app = heroku24.app()
    (app / "app.json").write_text(
        '{"environments": {"test": {"scripts": {"test-setup": "heroku-migrate up"}}}}'
    )
    build = heroku24.compile(app)
    assert build.result.returncode == 0, build.output
    assert (
        " !     app.json's Heroku CI scripts run heroku-migrate, but app.json lists no buildpacks"
        in build.result.stderr
    )
    assert (
        '{"buildpacks": [{"url": "heroku/go"}, {"url": "https://github.com/heroku-buildpack-'
        in (build.result.stderr)
    )


# --------------------------------------------------------------------------------------------
# heroku-migrate on a dyno, from wherever it is run


@needs_unshare
@needs_pythons
@pytest.mark.parametrize(
    ("how", "cwd"),
    [
        pytest.param("launcher", "/", id="by-path-from-root"),
        pytest.param("symlink", "/", id="symlink-from-root"),
        pytest.param("PATH", "db", id="on-path-from-db"),
        pytest.param("PATH", ".", id="on-path-from-app"),
    ],
)
def test_status_runs_from_any_directory(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str, how: str, cwd: str
) -> None:
    build = heroku24.compile()
    assert build.result.returncode == 0, build.output
    app = move_app(build, tmp_path / "app")
    assert run_release(app, database_url).returncode == 0
    launcher = app / ".heroku-migrate/bin/heroku-migrate"
    command = {"launcher": str(launcher), "symlink": str(tmp_path / "hm"), "PATH": "heroku-migrate"}
    (tmp_path / "hm").symlink_to(launcher)
    result = run_command(app, f"{command[how]} status", database_url, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20260101120000" in result.stdout


# The app's Python settings a dyno may carry (heroku/python exports some; others come from config
# vars): the launcher runs the release as if none were set.
HOSTILE_PYTHON_SETTINGS = {
    "PYTHONINSPECT": "1",  # was: `up` succeeded, then exited 1 (the release failed)
    "PYTHONPLATLIBDIR": "nonsense",  # was: Fatal Python error
    "PYTHONEXECUTABLE": "/bin/false",
    "PYTHONVERBOSE": "1",  # was: a thousand lines of imports in the release log
    "PYTHONHASHSEED": "nonsense",  # was: Fatal Python error
    "PYTHONINTMAXSTRDIGITS": "1",
    "PYTHONPROFILEIMPORTTIME": "1",
    "PYTHONWARNINGS": "error",
    "PYTHONDEVMODE": "1",
    "PYTHONMALLOC": "nonsense",
    "PYTHONIOENCODING": "ascii:strict",
    "PYTHONOPTIMIZE": "2",
    "PYTHONSTARTUP": "/bin/false",
    "PYTHONUTF8": "0",
    "PYTHONHOME": "/nonexistent",
    "PYTHONPATH": "{hostile}",
    "PYTHONUSERBASE": "{hostile}",
    "PYTHONPYCACHEPREFIX": "/nonexistent",
}


@needs_unshare
@needs_pythons
def test_release_ignores_every_python_setting_of_the_app(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str
) -> None:
    build = heroku24.compile()
    assert build.result.returncode == 0, build.output
    app = move_app(build, tmp_path / "app")
    hostile = tmp_path / "hostile"
    for module in ("herokumigrate/__init__.py", "psycopg/__init__.py", "sitecustomize.py"):
        (hostile / module).parent.mkdir(parents=True, exist_ok=True)
        (hostile / module).write_text("raise SystemExit('imported from the app: ' + __name__)\n")
    (app / "psycopg.py").write_text("raise SystemExit('imported from the app directory')\n")
    assert run_release(app, database_url, hide_python=True).returncode == 0
    baseline = run_release(app, database_url, hide_python=True)
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    assert "up to date" in baseline.stdout
    for name, value in HOSTILE_PYTHON_SETTINGS.items():
        setting = f"{name}={value.format(hostile=hostile)}"
        result = run_command(
            app,
            f"export {setting}; ./.heroku-migrate/bin/heroku-migrate up",
            database_url,
            hide_python=True,
        )
        assert (setting, result.returncode, result.stderr) == (setting, 0, ""), result.stdout
        assert (setting, result.stdout) == (setting, baseline.stdout)


@needs_unshare
@needs_pythons
@pytest.mark.parametrize("library", ["not a library", "an executable"])
def test_a_broken_libpq_on_ld_library_path_is_an_environment_problem(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str, library: str
) -> None:
    build = heroku24.compile()
    assert build.result.returncode == 0, build.output
    app = move_app(build, tmp_path / "app")
    folder = tmp_path / "libs"
    folder.mkdir()
    if library == "not a library":
        (folder / "libpq.so.5").write_text("not a library\n")
    else:
        shutil.copyfile("/bin/true", folder / "libpq.so.5")
    result = run_command(
        app,
        f"export LD_LIBRARY_PATH={folder}; ./.heroku-migrate/bin/heroku-migrate up",
        database_url,
        hide_python=True,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(" !     heroku-migrate cannot load the shared library libpq.so.5 (")
    assert "LD_LIBRARY_PATH is set" in lines[1]
    assert lines[2].startswith(" !     Check LD_LIBRARY_PATH:")
    assert "internal error" not in result.stderr
    assert "a bug" not in result.stderr
