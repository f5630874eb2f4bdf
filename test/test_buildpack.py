"""The buildpack as Heroku runs it: detect, release, heroku-24 (no Python in the run image),
heroku-22 and an app that brings its own Python, and the launcher (see `buildpack_harness`).

Cold and warm compile times are printed (`pytest -s`), never asserted.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Before the import: the harness's asserts get pytest's messages, and it is also our plugin.
pytest.register_assert_rewrite("buildpack_harness")

from buildpack_harness import (  # noqa: E402
    EXAMPLE,
    FIXTURES,
    PYTHON_311,
    PYTHON_312,
    RELEASE_COMMAND,
    REPO,
    RUN_PATH,
    Build,
    Heroku24Builds,
    assert_no_build_path,
    assert_readable_by_everyone,
    compile_app,
    copy_app,
    move_app,
    needs_pythons,
    needs_unshare,
    python_version,
    run_bin,
    run_release,
    tables,
)

pytest_plugins = ["buildpack_harness"]
pytestmark = pytest.mark.buildpack


# --------------------------------------------------------------------------------------------
# detect and release


def test_detect_applies_to_an_app_with_migrations(buildpack: Path) -> None:
    result = run_bin(buildpack, "detect", EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "heroku-migrate\n"


def test_detect_applies_to_an_app_with_only_a_config_file(buildpack: Path, tmp_path: Path) -> None:
    (tmp_path / "migrate.toml").write_text('path = "sql"\n')
    result = run_bin(buildpack, "detect", tmp_path)
    assert result.returncode == 0, result.stderr


def test_detect_rejects_an_app_without_migrations(buildpack: Path) -> None:
    result = run_bin(buildpack, "detect", FIXTURES / "no_migrations")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no db/migrations/ folder, no SQL migrations in " in result.stderr
    for folder in ("migrations/", "prisma/migrations/", "src/main/resources/db/migration/"):
        assert f" {folder}," in result.stderr
    assert "db/migration/, no migrate.toml" in result.stderr
    assert 'create migrate.toml with path = "your/folder"' in result.stderr


def test_detect_applies_to_a_new_project_with_an_empty_migrations_folder(
    buildpack: Path, tmp_path: Path
) -> None:
    (tmp_path / "db/migrations").mkdir(parents=True)
    (tmp_path / "db/migrations/.gitkeep").write_text("")
    result = run_bin(buildpack, "detect", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "heroku-migrate\n"


def test_detect_cannot_see_config_vars(buildpack: Path, tmp_path: Path) -> None:
    # bin/detect gets no ENV_DIR: MIGRATE_PATH in its environment must not make it pass.
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql/1_a.up.sql").write_text("SELECT 1;\n")
    result = run_bin(buildpack, "detect", tmp_path, env={"MIGRATE_PATH": "sql"})
    assert result.returncode == 1
    assert "MIGRATE_PATH config var is not visible" in result.stderr


def test_release_keeps_other_buildpacks_default_process_types(buildpack: Path) -> None:
    result = run_bin(buildpack, "release", EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "---\naddons: []\n"
    assert "default_process_types" not in result.stdout


# --------------------------------------------------------------------------------------------
# heroku-24: no Python in the run image


@needs_unshare
@needs_pythons
def test_heroku24_release_runs_with_every_system_python_hidden(
    buildpack: Path, heroku24_cold_build: Build, tmp_path: Path, database_url: str
) -> None:
    build = heroku24_cold_build
    assert build.result.returncode == 0, build.output
    assert "-----> Validating migrations in db/migrations" in build.result.stdout
    assert f"bundling Python {python_version(PYTHON_312)} into .heroku-migrate/python" in (
        build.result.stdout
    )
    assert "Done (" not in build.result.stdout
    assert "release: ./.heroku-migrate/bin/heroku-migrate up" in build.result.stdout
    assert (build.build_dir / "Procfile").read_bytes() == (
        b"web: bin/server\nrelease: ./.heroku-migrate/bin/heroku-migrate up\n"
    )
    assert_no_build_path(build)
    assert_readable_by_everyone(build.build_dir / ".heroku-migrate")
    assert (build.build_dir / ".heroku-migrate/python/bin/python3").stat().st_mode & 0o777 == 0o755
    assert run_bin(buildpack, "release", build.build_dir).stdout == "---\naddons: []\n"
    profile = (build.build_dir / ".profile.d/heroku-migrate.sh").read_text()
    assert 'export PATH="$HOME/.heroku-migrate/bin:' in profile
    assert build.export == f'export PATH={build.build_dir}/.heroku-migrate/bin:"$PATH"\n'

    app = move_app(build, tmp_path / "app")
    first = run_release(app, database_url, hide_python=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("no python3 reachable\n")
    assert "Applied 5 migration(s)" in first.stdout
    assert {"users", "orders", "heroku_migrate_history"} <= tables(database_url)

    second = run_release(app, database_url, hide_python=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "up to date" in second.stdout

    # The build's manifest only spares reading unchanged files: an applied migration edited
    # on the dyno is still caught.
    assert (app / ".heroku-migrate/manifest.json").is_file()
    edited = app / "db/migrations/20260101120000_create_users.up.sql"
    edited.write_text(edited.read_text() + "-- edited after it was applied\n")
    third = run_release(app, database_url, hide_python=True)
    assert third.returncode == 2, third.stdout + third.stderr
    assert "20260101120000_create_users.up.sql: changed after it was applied" in third.stderr


@needs_unshare
@needs_pythons
def test_warm_rebuild_downloads_nothing_and_needs_no_network(
    heroku24: Heroku24Builds, heroku24_cold_build: Build, tmp_path: Path, database_url: str
) -> None:
    warm = heroku24.compile(cache=heroku24_cold_build.cache_dir, offline=True)
    print(
        f"\nbin/compile heroku-24: cold {heroku24_cold_build.seconds:.2f}s, "
        f"warm {warm.seconds:.2f}s (offline)"
    )
    assert warm.result.returncode == 0, warm.output
    assert "downloaded" not in warm.output
    assert warm.result.stdout.count("(cached)") == 3
    assert f"Python {python_version(PYTHON_312)} from the build cache" in warm.result.stdout
    assert_no_build_path(warm)
    # The same runner, cold or warm: same files, same bytes, same modes.
    assert warm.runner
    assert warm.runner == heroku24_cold_build.runner
    app = move_app(warm, tmp_path / "app")
    result = run_release(app, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_unshare
@needs_pythons
def test_existing_release_command_runs_only_after_migrations_succeed(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str
) -> None:
    build = heroku24.compile(FIXTURES / "release_line")
    assert build.result.returncode == 0, build.output
    wired = f"release: {RELEASE_COMMAND} && {{ ./scripts/after-migrate.sh || true; }}"
    assert (build.build_dir / "Procfile").read_bytes() == (
        f"web: bin/server --port $PORT\r\n{wired}\r\nworker: bin/worker".encode()
    )
    assert wired in build.result.stdout
    assert_no_build_path(build)

    # A migration that is valid offline but fails against the database: the release fails,
    # the app's own release command does not run, nothing is applied.
    failing = tmp_path / "failing"
    shutil.copytree(build.build_dir, failing, symlinks=True)
    (failing / "db/migrations/2_fill_widgets.up.sql").write_text(
        "INSERT INTO no_such_table VALUES (1);\n"
    )
    result = run_release(failing, database_url, hide_python=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert not (failing / "after-migrate.log").exists()
    assert "widgets" not in tables(database_url)

    app = move_app(build, tmp_path / "app")
    result = run_release(app, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.index("Applied 1 migration(s)") < result.stdout.index("after-migrate ran")
    assert (app / "after-migrate.log").read_text() == "after-migrate ran\n"
    assert "widgets" in tables(database_url)


@needs_unshare
@needs_pythons
def test_app_without_procfile_gets_one(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str
) -> None:
    build = heroku24.compile(FIXTURES / "no_procfile")
    assert build.result.returncode == 0, build.output
    assert "No Procfile: created one with a release line" in build.result.stdout
    assert (build.build_dir / "Procfile").read_text() == f"release: {RELEASE_COMMAND}\n"
    assert_no_build_path(build)
    assert "no web: line" not in build.result.stderr  # nothing says it is a web app
    app = move_app(build, tmp_path / "app")
    result = run_release(app, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "notes" in tables(database_url)


@needs_unshare
@needs_pythons
def test_broken_migration_fails_the_build_naming_the_file(heroku24: Heroku24Builds) -> None:
    build = heroku24.compile(FIXTURES / "broken_migration")
    assert build.result.returncode == 1, build.output
    assert " !     2_add_price_check.up.sql: line 1: unterminated dollar-quoted string" in (
        build.result.stderr
    )
    assert "Fix what it names, commit, and push again" in build.result.stderr
    assert "/build_" not in build.output
    assert "Internal error" not in build.output
    assert (build.build_dir / "Procfile").read_text() == "web: bin/server\n"


@needs_unshare
@needs_pythons
def test_config_vars_are_read_as_data_and_checked_at_build_time(
    heroku24: Heroku24Builds, tmp_path: Path
) -> None:
    marker = tmp_path / "evaluated"
    build = heroku24.compile(
        config_vars={
            "MIGRATE_LOCK_WAIT": f"$(touch {marker})",
            "SOMETHING_ELSE": f"`touch {marker}`",
        },
    )
    assert build.result.returncode == 1, build.output
    assert "MIGRATE_LOCK_WAIT: invalid value" in build.result.stderr
    assert not marker.exists()


@needs_unshare
@needs_pythons
@pytest.mark.parametrize("where", ["config var", "migrate.toml"])
def test_release_phase_wiring_can_be_turned_off(heroku24: Heroku24Builds, where: str) -> None:
    app = heroku24.app()
    config_vars = {}
    if where == "config var":
        config_vars["MIGRATE_RELEASE_PHASE"] = "false"
    else:
        (app / "migrate.toml").write_text("release_phase = false\n")
    build = heroku24.compile(app, config_vars=config_vars)
    assert build.result.returncode == 0, build.output
    assert "Release phase wiring is off" in build.result.stdout
    assert (app / "Procfile").read_text() == "web: bin/server\n"
    assert (app / ".heroku-migrate/bin/heroku-migrate").is_file()


# --------------------------------------------------------------------------------------------
# heroku-22 and an app that brings its own Python


@needs_unshare
@needs_pythons
def test_heroku22_uses_the_stacks_python(
    buildpack: Path, build_pythons: dict[str, Path], tmp_path: Path, database_url: str
) -> None:
    if not os.access("/usr/bin/python3", os.X_OK) or "3.10" not in build_pythons:
        pytest.skip("needs /usr/bin/python3, the stand-in for heroku-22's")
    build = compile_app(
        buildpack,
        copy_app(EXAMPLE, tmp_path / "tmp"),
        tmp_path / "cache",
        python_dir=build_pythons["3.10"],
        stack="heroku-22",
    )
    assert build.result.returncode == 0, build.output
    assert "Using heroku-22's /usr/bin/python3" in build.result.stdout
    assert not (build.build_dir / ".heroku-migrate/python").exists()
    record = (build.build_dir / ".heroku-migrate/interpreter").read_text()
    assert "kind=stack\npython=/usr/bin/python3\n" in record
    assert_no_build_path(build)
    warm = compile_app(
        buildpack,
        copy_app(EXAMPLE, tmp_path / "tmp"),
        tmp_path / "cache",
        python_dir=build_pythons["3.10"],
        stack="heroku-22",
        offline=True,
    )
    assert warm.result.returncode == 0, warm.output
    assert "from the build cache" in warm.result.stdout
    assert warm.runner
    assert warm.runner == build.runner
    app = move_app(build, tmp_path / "app")
    result = run_release(app, database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "orders" in tables(database_url)


@pytest.fixture(scope="session")
def app_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A relocatable Python 3.11 prefix standing in for heroku/python's `.heroku/python`."""
    if PYTHON_311 is None:
        pytest.skip("needs Python 3.11")
    prefix = tmp_path_factory.mktemp("heroku-python") / "python"
    code = (
        "import sys; from pathlib import Path; "
        "from herokumigrate.buildpack.interpreter import make_bundle; "
        "from herokumigrate.output import Output; "
        "make_bundle(Path(sys.executable).resolve(), Path(sys.argv[1]), Output())"
    )
    subprocess.run(
        [
            str(PYTHON_311),
            "-E",
            "-c",
            f"import sys; sys.path.insert(0, {str(REPO / 'lib')!r}); {code}",
            prefix,
        ],
        check=True,
        capture_output=True,
    )
    return prefix


@needs_unshare
@needs_pythons
def test_app_with_heroku_python_uses_its_interpreter(
    heroku24: Heroku24Builds, app_python: Path, tmp_path: Path, database_url: str
) -> None:
    app = heroku24.app(FIXTURES / "app_python")
    shutil.copytree(app_python, app / ".heroku/python", symlinks=True)
    build = heroku24.compile(app)
    assert build.result.returncode == 0, build.output
    version = python_version(app_python / "bin/python3")
    assert f"Using the app's Python {version} (.heroku/python/bin/python3)" in build.result.stdout
    assert "Hint:" not in build.result.stdout
    assert not (app / ".heroku-migrate/python").exists()
    record = (app / ".heroku-migrate/interpreter").read_text()
    assert "kind=app\npython=.heroku/python/bin/python3\n" in record
    assert list((app / ".heroku-migrate/lib/herokumigrate/__pycache__").glob("*.cpython-311.pyc"))
    assert (app / "Procfile").read_text() == f"web: gunicorn app:app\nrelease: {RELEASE_COMMAND}\n"
    assert_no_build_path(build)
    moved = move_app(build, tmp_path / "app")
    # Every system Python hidden: only the app's own interpreter can run the release.
    result = run_release(moved, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accounts" in tables(database_url)


# --------------------------------------------------------------------------------------------
# The launcher, on its own


@pytest.mark.parametrize("kind", ["app", "stack", "bundled"])
def test_launcher_explains_a_missing_interpreter(tmp_path: Path, kind: str) -> None:
    home = tmp_path / ".heroku-migrate"
    (home / "bin").mkdir(parents=True)
    launcher = home / "bin/heroku-migrate"
    shutil.copyfile(REPO / "lib/herokumigrate/buildpack/launcher.sh", launcher)
    launcher.chmod(0o755)
    (home / "interpreter").write_text(
        f"kind={kind}\npython=.heroku/python/bin/python3\nversion=3.12.1\nlibrary_path=\n"
    )
    result = subprocess.run(
        [str(launcher), "status"],
        env={"PATH": RUN_PATH},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        " !     heroku-migrate: cannot run: .heroku/python/bin/python3 is missing" in result.stderr
    )
    assert "git push heroku main" in result.stderr


# A stand-in for the recorded interpreter: prints what the launcher gave it.
FAKE_PYTHON = """#!/bin/sh
echo "app_root=$HEROKU_MIGRATE_APP_ROOT"
echo "flags=$1 $2 $3"
echo "sys.path first=$5:$6"
shift 6
echo "args=$*"
"""


@pytest.mark.parametrize(
    "how",
    ["by its path", "through a symlink", "through a relative symlink", "as the Procfile runs it"],
)
def test_launcher_finds_its_app_from_its_own_location_not_the_working_directory(
    tmp_path: Path, how: str
) -> None:
    app = tmp_path / "app"
    home = app / ".heroku-migrate"
    (home / "bin").mkdir(parents=True)
    launcher = home / "bin/heroku-migrate"
    shutil.copyfile(REPO / "lib/herokumigrate/buildpack/launcher.sh", launcher)
    launcher.chmod(0o755)
    (home / "python/bin").mkdir(parents=True)
    (home / "python/bin/python3").write_text(FAKE_PYTHON)
    (home / "python/bin/python3").chmod(0o755)
    (home / "interpreter").write_text(
        "kind=bundled\npython=.heroku-migrate/python/bin/python3\nversion=3.12.1\nlibrary_path=\n"
    )
    elsewhere = tmp_path / "elsewhere/bin"
    elsewhere.mkdir(parents=True)
    command, cwd = str(launcher), Path("/")
    if how == "as the Procfile runs it":
        command, cwd = "./.heroku-migrate/bin/heroku-migrate", app
    elif how != "by its path":
        link = elsewhere / "heroku-migrate"
        link.symlink_to(os.path.relpath(launcher, elsewhere) if "relative" in how else launcher)
        command = str(link)
    result = subprocess.run(
        [command, "status"],
        cwd=cwd,
        env={"PATH": RUN_PATH},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"app_root={app}",
        "flags=-I -S -c",
        f"sys.path first={home}/lib:{home}/site",
        "args=status",
    ]


def test_no_module_the_slug_ships_imports_a_build_time_only_one_at_import() -> None:
    """The slug leaves out the build steps and the lint (build.BUILD_TIME_ONLY); a shipped module
    may import them only inside a function that handles their absence, never at import time."""
    from herokumigrate.buildpack import BUILD_TIME_ONLY

    package = REPO / "lib" / "herokumigrate"
    left_out = {name.removesuffix(".py") for name in BUILD_TIME_ONLY}
    assert all((package / name).exists() for name in BUILD_TIME_ONLY)
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if relative.parts[0] in BUILD_TIME_ONLY:
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; TYPE_CHECKING blocks never run
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                assert not (parts[0] == "herokumigrate" and set(parts[1:2]) & left_out), (
                    f"{relative} imports {node.module} at import time"
                )
