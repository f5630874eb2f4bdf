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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from herokumigrate.buildpack import procfile
from support import assert_no_secret

pytestmark = pytest.mark.buildpack

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE = REPO / "migrations_example"
PYENV = Path("/root/.pyenv/versions")
PYTHON_312 = PYENV / "3.12.1/bin/python3.12"
PYTHON_310 = PYENV / "3.10.13/bin/python3.10"
PYTHON_311 = PYENV / "3.11.7/bin/python3.11"
RUN_PATH = "/usr/local/bin:/usr/bin:/bin"
RELEASE_COMMAND = "./.heroku-migrate/bin/heroku-migrate up"

# Shell run inside `unshare --mount`: hide every Python install on this machine, then run "$@".
HIDE_EVERY_PYTHON = r"""
set -e
mount -t tmpfs tmpfs /root/.pyenv
for d in /usr/lib/python3* /usr/local/lib/python3*; do
    if [ -d "$d" ]; then mount -t tmpfs tmpfs "$d"; fi
done
for f in /usr/bin/python* /usr/local/bin/python*; do
    if [ -e "$f" ]; then mount --bind /dev/null "$f"; fi
done
for candidate in python3 python /usr/bin/python3 "$PYTHON_312"; do
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


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare")
needs_pythons = pytest.mark.skipif(
    not (PYTHON_312.exists() and PYTHON_310.exists() and PYTHON_311.exists()),
    reason="needs the pyenv interpreters 3.10, 3.11 and 3.12",
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
) -> Build:
    """bin/compile BUILD CACHE ENV as Heroku runs it, with `python_dir/python3` as the build's
    python3 (pip hidden), optionally with no network at all."""
    env_dir = build_dir.parent / f"env_{build_dir.name}"
    env_dir.mkdir(exist_ok=True)
    for name, value in (config_vars or {}).items():
        (env_dir / name).write_text(value)
    before = _snapshot(build_dir)
    wrap = hide_pip(python_dir / "python3")
    if offline:
        wrap = ["unshare", "--net", *wrap]
    started = time.monotonic()
    result = run_bin(
        buildpack,
        "compile",
        build_dir,
        cache_dir,
        env_dir,
        env={"PATH": f"{python_dir}:{RUN_PATH}", "STACK": stack},
        wrap=wrap,
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
    """Run the Procfile's release command as a release dyno does: bash in the app folder with
    HOME set to it, `.profile.d/*.sh` sourced, a minimal environment plus DATABASE_URL."""
    script = 'for f in .profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; ' + release_command(app_dir)
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
            f"PYTHON_312={PYTHON_312}",
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


# --------------------------------------------------------------------------------------------
# Session builds: the heroku-24 bundle is made once (cold), later builds reuse its cache.


@pytest.fixture(scope="session")
def heroku24_cold_build(
    tmp_path_factory: pytest.TempPathFactory, buildpack: Path, build_pythons: dict[str, Path]
) -> Build:
    """migrations_example compiled for heroku-24 with an empty cache (downloads, bundles)."""
    if not _can_unshare() or not PYTHON_312.exists():
        pytest.skip("needs root, unshare and the pyenv Python 3.12")
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
    assert "no .sql file in db/migrations/" in result.stderr
    assert "migrate.toml" in result.stderr


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
    assert "bundling Python 3.12.1 into .heroku-migrate/python" in build.result.stdout
    assert "release: ./.heroku-migrate/bin/heroku-migrate up" in build.result.stdout
    assert (build.build_dir / "Procfile").read_bytes() == (
        b"web: bin/server\nrelease: ./.heroku-migrate/bin/heroku-migrate up\n"
    )
    assert_no_build_path(build)
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
    buildpack: Path,
    heroku24_cold_build: Build,
    build_pythons: dict[str, Path],
    tmp_path: Path,
    database_url: str,
) -> None:
    warm = compile_app(
        buildpack,
        copy_app(EXAMPLE, tmp_path / "tmp"),
        heroku24_cold_build.cache_dir,
        python_dir=build_pythons["3.12"],
        stack="heroku-24",
        offline=True,
    )
    print(
        f"\nbin/compile heroku-24: cold {heroku24_cold_build.seconds:.2f}s, "
        f"warm {warm.seconds:.2f}s (offline)"
    )
    assert warm.result.returncode == 0, warm.output
    assert "downloaded" not in warm.output
    assert warm.result.stdout.count("(cached)") == 3
    assert "Python 3.12.1 from the build cache" in warm.result.stdout
    assert_no_build_path(warm)
    app = move_app(warm, tmp_path / "app")
    result = run_release(app, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_unshare
@needs_pythons
def test_existing_release_command_runs_only_after_migrations_succeed(
    buildpack: Path,
    heroku24_cache: Path,
    build_pythons: dict[str, Path],
    tmp_path: Path,
    database_url: str,
) -> None:
    build = compile_app(
        buildpack,
        copy_app(FIXTURES / "release_line", tmp_path / "tmp"),
        heroku24_cache,
        python_dir=build_pythons["3.12"],
        stack="heroku-24",
    )
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
    buildpack: Path,
    heroku24_cache: Path,
    build_pythons: dict[str, Path],
    tmp_path: Path,
    database_url: str,
) -> None:
    build = compile_app(
        buildpack,
        copy_app(FIXTURES / "no_procfile", tmp_path / "tmp"),
        heroku24_cache,
        python_dir=build_pythons["3.12"],
        stack="heroku-24",
    )
    assert build.result.returncode == 0, build.output
    assert "No Procfile: created one with a release line" in build.result.stdout
    assert (build.build_dir / "Procfile").read_text() == f"release: {RELEASE_COMMAND}\n"
    assert_no_build_path(build)
    assert "no web: line" not in build.result.stderr  # nothing says it is a web app
    app = move_app(build, tmp_path / "app")
    result = run_release(app, database_url, hide_python=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "notes" in tables(database_url)


def test_web_process_at_risk_is_named_with_the_fix(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    assert procfile.default_web_at_risk(app) is None
    (app / "package.json").write_text("{}")
    assert procfile.default_web_at_risk(app) == "heroku/nodejs"
    (app / "Procfile").write_bytes(b"worker: node worker.js\r\nrelease: x\r\n")
    assert procfile.default_web_at_risk(app) == "heroku/nodejs"
    (app / "Procfile").write_bytes(b"\xef\xbb\xbfweb: npm start\nrelease: x\n")
    assert procfile.default_web_at_risk(app) is None


@needs_unshare
@needs_pythons
def test_broken_migration_fails_the_build_naming_the_file(
    buildpack: Path, heroku24_cache: Path, build_pythons: dict[str, Path], tmp_path: Path
) -> None:
    build = compile_app(
        buildpack,
        copy_app(FIXTURES / "broken_migration", tmp_path / "tmp"),
        heroku24_cache,
        python_dir=build_pythons["3.12"],
        stack="heroku-24",
    )
    assert build.result.returncode == 1, build.output
    assert " !     2_add_price_check.up.sql: line 1: unterminated dollar-quoted string" in (
        build.result.stderr
    )
    assert "Fix the file it names" in build.result.stderr
    assert "Internal error" not in build.output
    assert (build.build_dir / "Procfile").read_text() == "web: bin/server\n"


@needs_unshare
@needs_pythons
def test_config_vars_are_read_as_data_and_checked_at_build_time(
    buildpack: Path, heroku24_cache: Path, build_pythons: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "evaluated"
    build = compile_app(
        buildpack,
        copy_app(EXAMPLE, tmp_path / "tmp"),
        heroku24_cache,
        python_dir=build_pythons["3.12"],
        stack="heroku-24",
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
def test_release_phase_wiring_can_be_turned_off(
    buildpack: Path,
    heroku24_cache: Path,
    build_pythons: dict[str, Path],
    tmp_path: Path,
    where: str,
) -> None:
    app = copy_app(EXAMPLE, tmp_path / "tmp")
    config_vars = {}
    if where == "config var":
        config_vars["MIGRATE_RELEASE_PHASE"] = "false"
    else:
        (app / "migrate.toml").write_text("release_phase = false\n")
    build = compile_app(
        buildpack,
        app,
        heroku24_cache,
        python_dir=build_pythons["3.12"],
        stack="heroku-24",
        config_vars=config_vars,
    )
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
    if not os.access("/usr/bin/python3", os.X_OK):
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
    if not PYTHON_311.exists():
        pytest.skip("needs the pyenv Python 3.11")
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
    buildpack: Path,
    app_python: Path,
    heroku24_cache: Path,
    build_pythons: dict[str, Path],
    *,
    tmp_path: Path,
    database_url: str,
) -> None:
    app = copy_app(FIXTURES / "app_python", tmp_path / "tmp")
    shutil.copytree(app_python, app / ".heroku/python", symlinks=True)
    build = compile_app(
        buildpack, app, heroku24_cache, python_dir=build_pythons["3.12"], stack="heroku-24"
    )
    assert build.result.returncode == 0, build.output
    assert "Using the app's Python 3.11.7 (.heroku/python/bin/python3)" in build.result.stdout
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
# Procfile wiring, on its own


def _wire(tmp_path: Path, content: bytes | None) -> tuple[procfile.Wiring, bytes]:
    path = tmp_path / "Procfile"
    if content is not None:
        path.write_bytes(content)
    wiring = procfile.wire(path)
    return wiring, path.read_bytes()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"web: bin/server\n", b"web: bin/server\nrelease: %s\n"),
        (b"web: bin/server", b"web: bin/server\nrelease: %s\n"),
        (b"web: a\r\nworker: b\r\n", b"web: a\r\nworker: b\r\nrelease: %s\r\n"),
        (b"", b"release: %s\n"),
        (b"release: ./seed\n", b"release: %s && { ./seed; }\n"),
        (b"release:./seed;\n", b"release:%s && { ./seed; }\n"),
        (b"release: a || true\r\nweb: x", b"release: %s && { a || true; }\r\nweb: x"),
        (b"\xef\xbb\xbfrelease: a\n", b"\xef\xbb\xbfrelease: %s && { a; }\n"),
        (b"web: caf\xe9 \xff\nrelease: b\n", b"web: caf\xe9 \xff\nrelease: %s && { b; }\n"),
        (b"release: a # note\n", b"release: %s && eval 'a # note'\n"),
        (b"release: echo 'x' &\n", b"release: %s && eval 'echo '\\''x'\\'' &'\n"),
    ],
)
def test_procfile_wiring_keeps_every_other_byte(
    tmp_path: Path, before: bytes, after: bytes
) -> None:
    _, written = _wire(tmp_path, before)
    assert written == after.replace(b"%s", RELEASE_COMMAND.encode())


def test_procfile_wiring_is_idempotent(tmp_path: Path) -> None:
    first, once = _wire(tmp_path, b"web: x\nrelease: ./seed\n")
    second, twice = _wire(tmp_path, None)
    assert (first.action, second.action) == ("wrapped", "unchanged")
    assert once == twice


def test_procfile_wired_by_hand_is_left_alone(tmp_path: Path) -> None:
    wiring, written = _wire(tmp_path, b"release: heroku-migrate up && ./seed\n")
    assert wiring.action == "unchanged"
    assert written == b"release: heroku-migrate up && ./seed\n"


def test_missing_procfile_is_created(tmp_path: Path) -> None:
    wiring, written = _wire(tmp_path, None)
    assert wiring.action == "created"
    assert written == f"release: {RELEASE_COMMAND}\n".encode()


@pytest.mark.parametrize(
    "existing",
    ["echo ran > out", "false || echo ran > out", "echo a; echo ran > out", "echo ran > out # c"],
)
@pytest.mark.parametrize("migrations_succeed", [True, False])
def test_chained_command_runs_only_when_migrations_succeed(
    tmp_path: Path, existing: str, migrations_succeed: bool
) -> None:
    chained = procfile.chain(existing).replace(
        RELEASE_COMMAND, "true" if migrations_succeed else "false"
    )
    result = subprocess.run(["bash", "-c", chained], cwd=tmp_path, capture_output=True, check=False)
    assert (tmp_path / "out").exists() is migrations_succeed
    assert (result.returncode == 0) is migrations_succeed


def test_golang_migrate_recipe_is_recognised() -> None:
    assert procfile.looks_like_golang_migrate_recipe("bash ./migration.sh")
    assert procfile.looks_like_golang_migrate_recipe("migrate -database $DATABASE_URL -path db up")
    assert not procfile.looks_like_golang_migrate_recipe("./bin/seed")


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
