"""The harness of the whole-buildpack tests (a pytest plugin: `pytest_plugins`): the real
bin/detect, bin/compile and bin/release on fixture apps, then the Procfile's `release:` line the
way a release dyno runs it.

Each build copies the buildpack and a fixture app into temporary folders, builds in a
`.../build_<hex>` folder, moves the result elsewhere (as /tmp/build_* becomes /app) and runs the
release command with `env -i`, `HOME` set to the app, `.profile.d/*.sh` sourced first. The
heroku-24 builds run with pip and ensurepip not importable, and their release runs with every
system Python hidden (`unshare --mount`), to prove the slug brings its own. The build Pythons
are found the way `.ci/run` finds them.
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

from support import assert_no_secret, tree_contents

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
    runner: dict[str, str]
    """`tree_contents` of the `.heroku-migrate` it left (empty if none), taken at once: the
    build folder may be moved later."""

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
    runner = build_dir / ".heroku-migrate"
    runner_tree = tree_contents(runner) if runner.is_dir() else {}
    return Build(build_dir, cache_dir, result, seconds, added, exported, runner_tree)


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
