"""The buildpack as Heroku runs it: the real bin/detect, bin/compile and bin/release on fixture
apps, then the Procfile's `release:` line the way a release dyno runs it.

Each build copies the buildpack and a fixture app into temporary folders, builds in a
`.../build_<hex>` folder, moves the result elsewhere (as /tmp/build_* becomes /app) and runs the
release command with `env -i`, `HOME` set to the app, `.profile.d/*.sh` sourced first. The
heroku-24 builds run with pip and ensurepip not importable, and their release runs with every
system Python hidden (`unshare --mount`), to prove the slug brings its own.

Cold and warm compile times are printed (`pytest -s`), never asserted.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from support import assert_no_secret

pytestmark = pytest.mark.buildpack

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE = REPO / "migrations_example"
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
RUN_PATH = "/usr/local/bin:/usr/bin:/bin"
RELEASE_COMMAND = "./.heroku-migrate/bin/heroku-migrate up"

# Shell run inside `unshare --mount`: hide every Python install on this machine, then run "$@".
HIDE_EVERY_PYTHON = r"""
set -e
if [ -d "$PYENV_ROOT" ]; then mount -t tmpfs tmpfs "$PYENV_ROOT"; fi
for d in /usr/lib/python3* /usr/local/lib/python3*; do
    if [ -d "$d" ]; then mount -t tmpfs tmpfs "$d"; fi
done
for f in /usr/bin/python* /usr/local/bin/python*; do
    if [ -e "$f" ]; then mount --bind /dev/null "$f"; fi
done
for candidate in python3 python /usr/bin/python3 "$BUILD_PYTHON"; do
    if "$candidate" -c 'print("python runs")' 2>/dev/null; then
        echo "test setup: $candidate still runs" >&2
        exit 99
    fi
done
echo "no python3 reachable"
exec "$@"
"""

# Shell run inside `unshare --mount`: make pip and ensurepip of the build python not importable.
HIDE_PIP = r"""
set -e
stdlib=$("$BUILD_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
site=$("$BUILD_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mount -t tmpfs tmpfs "$site"
mount -t tmpfs tmpfs "$stdlib/ensurepip"
# An empty folder would still import as a namespace package.
echo 'raise ImportError("hidden by the test")' >"$stdlib/ensurepip/__init__.py"
for module in pip ensurepip; do
    if "$BUILD_PYTHON" -c "import $module" 2>/dev/null; then
        echo "test setup: $module is still importable" >&2
        exit 99
    fi
done
exec "$@"
"""


def find_python(version: str) -> Path | None:
    """An installed CPython of a minor version, looked for the way `.ci/run` does: pyenv's
    versions folder first, then /usr/bin and /usr/local/bin; None when none runs."""
    candidates = [
        *sorted(PYENV_ROOT.glob(f"versions/{version}.*/bin/python{version}")),
        Path(f"/usr/bin/python{version}"),
        Path(f"/usr/local/bin/python{version}"),
    ]
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            probe = subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False)
            if probe.returncode == 0:
                return candidate
    return None


def python_version(python: Path) -> str:
    """`3.12.1`: the full version of an interpreter."""
    code = "import sys; print(*sys.version_info[:3], sep='.')"
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


PYTHON_312 = find_python("3.12")
PYTHON_311 = find_python("3.11")
PYTHON_310 = find_python("3.10")


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare")
needs_pythons = pytest.mark.skipif(
    None in (PYTHON_312, PYTHON_311, PYTHON_310),
    reason="needs Python 3.10, 3.11 and 3.12 (pyenv's, or in /usr/bin or /usr/local/bin)",
)


@dataclass
class Build:
    """One bin/compile run and what it left."""

    build_dir: Path
    cache_dir: Path
    result: subprocess.CompletedProcess[str]
    seconds: float
    added: list[Path]
    export: str
    """What bin/compile left in the buildpack's `export` file for later buildpacks."""

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


@pytest.fixture(scope="session")
def buildpack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the buildpack as Heroku fetches it (bin/ and lib/, no bytecode)."""
    root = tmp_path_factory.mktemp("buildpack")
    for part in ("bin", "lib", "buildpack.toml"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, root / part)
    return root


@pytest.fixture(scope="session")
def build_pythons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each build python, a folder to put first on PATH in which it is `python3`."""
    folders = {}
    for label, python in (("3.12", PYTHON_312), ("3.10", PYTHON_310)):
        if python is None:
            continue
        folder = tmp_path_factory.mktemp(f"python{label}")
        (folder / "python3").symlink_to(python)
        folders[label] = folder
    return folders


def copy_app(source: Path, root: Path) -> Path:
    """A copy of `source` in `root/build_<hex>`, the way Heroku names build folders."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"build_{secrets.token_hex(8)}"
    shutil.copytree(source, target, symlinks=True)
    return target


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {
        path.relative_to(folder): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


def run_bin(
    buildpack: Path,
    script: str,
    *args: Path | str,
    env: Mapping[str, str] | None = None,
    wrap: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run bin/<script> with a build-like environment (HOME=/app, a given PATH and STACK)."""
    argv = [str(buildpack / "bin" / script), *map(str, args)]
    return subprocess.run(
        [*(wrap or []), *argv],
        capture_output=True,
        text=True,
        env={"HOME": "/app", "PATH": RUN_PATH, **(env or {})},
        timeout=300,
        check=False,
    )


def hide_pip(python: Path) -> list[str]:
    """argv prefix running a command with `python`'s pip and ensurepip unimportable."""
    return [
        "unshare",
        "--mount",
        "env",
        f"BUILD_PYTHON={python}",
        "bash",
        "-c",
        HIDE_PIP,
        "hide-pip",
    ]


def compile_app(
    buildpack: Path,
    build_dir: Path,
    cache_dir: Path,
    *,
    python_dir: Path,
    stack: str,
    config_vars: Mapping[str, str] | None = None,
    offline: bool = False,
    script: str = "compile",
    wrap: Sequence[str] = (),
) -> Build:
    """bin/compile BUILD CACHE ENV (or bin/`script`) as Heroku runs it, with `python_dir/python3`
    as the build's python3 (pip hidden), optionally with no network at all, inside `wrap`."""
    env_dir = build_dir.parent / f"env_{build_dir.name}"
    env_dir.mkdir(exist_ok=True)
    for name, value in (config_vars or {}).items():
        (env_dir / name).write_text(value)
    before = _snapshot(build_dir)
    argv_prefix = [*wrap, *hide_pip(python_dir / "python3")]
    if offline:
        argv_prefix = ["unshare", "--net", *argv_prefix]
    started = time.monotonic()
    result = run_bin(
        buildpack,
        script,
        build_dir,
        cache_dir,
        env_dir,
        env={"PATH": f"{python_dir}:{RUN_PATH}", "STACK": stack},
        wrap=argv_prefix,
    )
    seconds = time.monotonic() - started
    after = _snapshot(build_dir)
    added = sorted(build_dir / rel for rel, data in after.items() if before.get(rel) != data)
    export = buildpack / "export"
    exported = export.read_text() if export.exists() else ""
    return Build(build_dir, cache_dir, result, seconds, added, exported)


def release_command(app_dir: Path) -> str:
    """The Procfile's release command."""
    for line in (app_dir / "Procfile").read_bytes().decode().splitlines():
        match = re.match(r"release:\s*(.*?)\s*$", line)
        if match:
            return match.group(1)
    raise AssertionError("no release: line in the Procfile")


def run_release(
    app_dir: Path, database_url: str, *, hide_python: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the Procfile's release command as a release dyno does (see `run_command`)."""
    return run_command(app_dir, release_command(app_dir), database_url, hide_python=hide_python)


def run_command(
    app_dir: Path, command: str, database_url: str, *, hide_python: bool = False, cwd: str = "."
) -> subprocess.CompletedProcess[str]:
    """Run `command` as a dyno does: bash in the app folder (or `cwd` in it) with HOME set to
    the app, `.profile.d/*.sh` sourced, a minimal environment plus DATABASE_URL."""
    script = (
        f'for f in "$HOME"/.profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; cd {cwd} && {command}'
    )
    argv = [
        "env",
        "-i",
        f"HOME={app_dir}",
        f"PATH={RUN_PATH}",
        f"DATABASE_URL={database_url}",
        "bash",
        "-c",
        script,
    ]
    if hide_python:
        argv = [
            "unshare",
            "--mount",
            "env",
            f"PYENV_ROOT={PYENV_ROOT}",
            f"BUILD_PYTHON={PYTHON_312}",
            "bash",
            "-c",
            HIDE_EVERY_PYTHON,
            "hide-python",
            *argv,
        ]
    result = subprocess.run(
        argv, cwd=app_dir, capture_output=True, text=True, timeout=300, check=False
    )
    assert_no_secret(result.stdout + result.stderr)
    return result


def move_app(build: Build, destination: Path) -> Path:
    """Move the built app away from its build folder, as the slug goes from /tmp/build_* to /app."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(build.build_dir, destination)
    return destination


def tables(database_url: str) -> set[str]:
    """The tables in the public schema."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def assert_no_build_path(build: Build) -> None:
    """No file the build added or changed mentions the build folder."""
    needles = {str(build.build_dir).encode(), os.path.realpath(build.build_dir).encode()}
    offenders = [
        str(path.relative_to(build.build_dir))
        for path in build.added
        if any(needle in path.read_bytes() for needle in needles)
    ]
    assert build.added
    assert offenders == []


def assert_readable_by_everyone(folder: Path) -> None:
    """Folders and executables 0755, other files 0644, whatever the build's umask or mkdtemp."""
    wrong = {
        str(path.relative_to(folder)): oct(path.stat().st_mode & 0o777)
        for path in [folder, *folder.rglob("*")]
        if not path.is_symlink()
        and (path.stat().st_mode & 0o777) not in ({0o755} if path.is_dir() else {0o644, 0o755})
    }
    assert wrong == {}


# --------------------------------------------------------------------------------------------
# Session builds: the heroku-24 bundle is made once (cold), later builds reuse its cache.


@pytest.fixture(scope="session")
def heroku24_cold_build(
    tmp_path_factory: pytest.TempPathFactory, buildpack: Path, build_pythons: dict[str, Path]
) -> Build:
    """migrations_example compiled for heroku-24 with an empty cache (downloads, bundles)."""
    if not _can_unshare() or PYTHON_312 is None:
        pytest.skip("needs root, unshare and Python 3.12")
    root = tmp_path_factory.mktemp("h24")
    build = compile_app(
        buildpack,
        copy_app(EXAMPLE, root / "tmp"),
        root / "cache",
        python_dir=build_pythons["3.12"],
        stack="heroku-24",
    )
    print(f"\nbin/compile heroku-24, cold cache: {build.seconds:.2f}s")
    return build


@pytest.fixture
def heroku24_cache(heroku24_cold_build: Build, tmp_path: Path) -> Path:
    """A copy of the warm heroku-24 build cache, for one test."""
    cache = tmp_path / "cache"
    shutil.copytree(heroku24_cold_build.cache_dir, cache, symlinks=True)
    return cache


@dataclass
class Heroku24Builds:
    """Makes heroku-24 builds for one test: apps copied into its folder, the build's python3 the
    found 3.12 (pip hidden), a copy of the session's warm cache unless told otherwise."""

    buildpack: Path
    python_dir: Path
    cache: Path
    root: Path

    def app(self, source: Path = EXAMPLE) -> Path:
        """A copy of `source` in a `build_<hex>` folder, to change before compiling it."""
        return copy_app(source, self.root / "tmp")

    def compile(
        self,
        app: Path = EXAMPLE,
        *,
        cache: Path | None = None,
        config_vars: Mapping[str, str] | None = None,
        offline: bool = False,
        script: str = "compile",
        wrap: Sequence[str] = (),
    ) -> Build:
        """Compile `app` (copied first unless it already is a copy made by `app`)."""
        if not app.is_relative_to(self.root):
            app = self.app(app)
        return compile_app(
            self.buildpack,
            app,
            self.cache if cache is None else cache,
            python_dir=self.python_dir,
            stack="heroku-24",
            config_vars=config_vars,
            offline=offline,
            script=script,
            wrap=wrap,
        )


@pytest.fixture
def heroku24(
    buildpack: Path, heroku24_cache: Path, build_pythons: dict[str, Path], tmp_path: Path
) -> Heroku24Builds:
    """The factory for this test's heroku-24 builds."""
    return Heroku24Builds(buildpack, build_pythons["3.12"], heroku24_cache, tmp_path)


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
    assert "no db/migrations/ folder, no migrate.toml" in result.stderr
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
echo "pythonpath=$PYTHONPATH"
echo "args=$*"
"""


@pytest.mark.parametrize("how", ["by its path", "through a symlink", "through a relative symlink"])
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
    command = str(launcher)
    if how != "by its path":
        link = elsewhere / "heroku-migrate"
        link.symlink_to(os.path.relpath(launcher, elsewhere) if "relative" in how else launcher)
        command = str(link)
    result = subprocess.run(
        [command, "status"],
        cwd="/",
        env={"PATH": RUN_PATH},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        f"app_root={app}",
        f"pythonpath={home}/lib:{home}/site",
    ]


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
    pyc = sorted(cached.rglob("__pycache__/*.pyc"))[0]
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
    # What Heroku CI then does: test-setup from $HOME in a dyno, .profile.d sourced.
    app = move_app(build, tmp_path / "app")
    result = run_command(app, "heroku-migrate up", database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"users", "orders"} <= tables(database_url)


# --------------------------------------------------------------------------------------------
# heroku-migrate on a dyno, from wherever it is run

NEEDS_CONFIG_APP_ROOT = pytest.mark.xfail(
    strict=True,
    reason="needs the config to resolve relative settings against HEROKU_MIGRATE_APP_ROOT "
    "(helper 'settings', config.py); the launcher already exports it",
)


@needs_unshare
@needs_pythons
@pytest.mark.parametrize(
    ("how", "cwd"),
    [
        pytest.param("launcher", "/", marks=NEEDS_CONFIG_APP_ROOT, id="by-path-from-root"),
        pytest.param("symlink", "/", marks=NEEDS_CONFIG_APP_ROOT, id="symlink-from-root"),
        pytest.param("PATH", "db", marks=NEEDS_CONFIG_APP_ROOT, id="on-path-from-db"),
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
