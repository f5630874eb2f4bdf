"""bin/compile: validate the migrations, install the runner into the slug, wire the release phase.

Never connects to a database, and writes no build-time absolute path into the slug.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import herokumigrate
from herokumigrate.buildpack import SLUG_DIR, BuildFailed, envdir, interpreter, launcher, wheels
from herokumigrate.buildpack.procfile import (
    RELEASE_COMMAND,
    default_web_at_risk,
    looks_like_golang_migrate_recipe,
    wire,
)
from herokumigrate.buildpack.stacks import check as check_stack
from herokumigrate.config import CONFIG_FILE, Config, load_config
from herokumigrate.errors import EXIT_BAD_INPUT
from herokumigrate.output import Output

RUNNER_SOURCE = Path(herokumigrate.__file__).parent
BUILDPACK_DIR = RUNNER_SOURCE.parent.parent

MANIFEST = "manifest.json"  # the validated folder, read by the release (source.read_manifest)


@contextmanager
def _step(out: Output, title: str) -> Iterator[None]:
    out.step(title)
    started = time.monotonic()
    yield
    out.detail(f"Done ({time.monotonic() - started:.2f}s)")


def compile_app(build_dir: Path, cache_dir: Path, env_dir: Path, out: Output) -> None:
    """Run every compile step; raises `MigrateError` (explained) when the build must fail."""
    check_stack(os.environ.get("STACK", ""))  # an unsupported stack stops the build at once
    started = time.monotonic()
    slug = build_dir / SLUG_DIR
    cache = cache_dir / "heroku-migrate"
    settings = envdir.read_settings(env_dir)

    with _step(out, "Fetching heroku-migrate's dependencies"):
        wheel_files = [wheels.fetch(pinned, cache / "wheels", out) for pinned in wheels.PINNED]

    with _step(out, "Reading settings"):
        config = read_settings(build_dir, settings, wheel_files, out)

    manifest = cache / MANIFEST
    with _step(out, f"Validating migrations in {config.path}"):
        validate(build_dir, settings, wheel_files, manifest, out)

    with _step(out, "Choosing the Python for the release phase"):
        if slug.exists():
            shutil.rmtree(slug)
        slug.mkdir()
        shutil.copyfile(manifest, slug / MANIFEST)
        python = interpreter.choose(build_dir, cache_dir, os.environ.get("STACK", ""), out)
        interpreter.write_record(python, slug / "interpreter")

    with _step(out, f"Installing heroku-migrate {herokumigrate.__version__}"):
        install_runtime(build_dir, python, wheel_files, cache, out)
        launcher.write_launcher(build_dir)
        launcher.write_profile_script(build_dir)
        launcher.write_export(BUILDPACK_DIR, build_dir)
        out.detail(f"{launcher.LAUNCHER} (on PATH on dynos: heroku run heroku-migrate status)")

    wire_release_phase(build_dir, config, settings, out)

    size = _tree_size(slug) + _tree_size(build_dir / launcher.PROFILE_SCRIPT)
    out.step(
        f"heroku-migrate installed in {time.monotonic() - started:.1f}s "
        f"({size / 1e6:.1f} MB in {SLUG_DIR}/)"
    )


def install_runtime(
    build_dir: Path,
    python: interpreter.ReleasePython,
    wheel_files: list[Path],
    cache: Path,
    out: Output,
) -> None:
    """Put the runner (`lib`) and its dependencies (`site`) into the slug, with bytecode for the
    release Python. The result is cached, keyed by everything it depends on, so a warm rebuild
    copies it instead of unpacking and compiling again."""
    slug = build_dir / SLUG_DIR
    key = _runtime_key(python, wheel_files)
    cached = cache / f"runtime-{key}"
    if cached.is_dir():
        for part in ("lib", "site"):
            interpreter.copy_tree(cached / part, slug / part)
        out.detail("Runner, dependencies and their bytecode from the build cache")
        return
    for wheel_file in wheel_files:
        wheels.unpack(wheel_file, slug / "site")
    shutil.copytree(
        RUNNER_SOURCE,
        slug / "lib" / RUNNER_SOURCE.name,
        ignore=shutil.ignore_patterns("buildpack", "__pycache__", "*.pyc"),
    )
    interpreter.precompile(python, build_dir, [slug / "lib", slug / "site"], out)
    for stale in cache.glob("runtime-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=".runtime-", dir=cache))
    try:
        for part in ("lib", "site"):
            shutil.copytree(slug / part, scratch / part)
        scratch.rename(cached)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _runtime_key(python: interpreter.ReleasePython, wheel_files: list[Path]) -> str:
    digest = hashlib.sha256(interpreter.BUNDLE_FORMAT.encode())
    for path in sorted(RUNNER_SOURCE.rglob("*.py")):
        relative = path.relative_to(RUNNER_SOURCE)
        if relative.parts[0] != "buildpack":
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    for wheel_file in wheel_files:
        digest.update(wheel_file.name.encode() + b"\0")
    digest.update(interpreter.identity(python).encode())
    return digest.hexdigest()[:16]


def read_settings(
    build_dir: Path, settings: dict[str, str], wheel_files: list[Path], out: Output
) -> Config:
    """The app's settings from its config vars and `migrate.toml`, checked now rather than at
    release time."""
    # A pure-Python wheel is a zip archive Python imports from: tomli for Python 3.10.
    sys.path.extend(str(path) for path in wheel_files if str(path) not in sys.path)
    for name, value in settings.items():
        out.detail(f"{name}={value.strip()} (config var)")
    for name in envdir.unknown_settings(settings):
        out.warn(f"Config var {name} is not a heroku-migrate setting; it is ignored.")
    if (build_dir / CONFIG_FILE).is_file():
        out.detail(f"{CONFIG_FILE} found")
    return load_config(build_dir, settings)


def validate(
    build_dir: Path, settings: dict[str, str], wheel_files: list[Path], manifest: Path, out: Output
) -> None:
    """Run the runner's offline `validate` on the app's migration files, with the settings from
    the config vars (the dependencies are imported straight from their wheels). It writes the
    manifest that lets a release with nothing pending skip reading the files."""
    env = interpreter.build_env()
    env.update(settings)
    env["PYTHONPATH"] = os.pathsep.join([str(RUNNER_SOURCE.parent), *map(str, wheel_files)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # `-c` rather than `-m`, with sys.path[0] (the app's directory) removed: an app file must
    # not shadow a module of the runner.
    code = (
        "import sys; del sys.path[0]; import runpy; "
        "runpy.run_module('herokumigrate', run_name='__main__', alter_sys=True)"
    )
    result = subprocess.run(
        [sys.executable, "-s", "-c", code, "validate", "--manifest", str(manifest)],
        cwd=build_dir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    # Its report belongs under this step: its own `-----> ` line becomes a detail.
    for line in result.stdout.splitlines():
        out.detail(line.removeprefix("-----> ").strip())
    if result.returncode == EXIT_BAD_INPUT:
        raise BuildFailed(
            "The build stopped because of the problem above, so that it cannot fail your release.",
            fix="Fix the file it names, commit, and push again. "
            "Check locally with: heroku-migrate validate",
        )
    if result.returncode != 0:
        raise BuildFailed(f"heroku-migrate validate failed with exit status {result.returncode}.")


def wire_release_phase(
    build_dir: Path, config: Config, settings: dict[str, str], out: Output
) -> None:
    """Make the Procfile's release line run the migrations first, unless the app opted out."""
    if not config.release_phase:
        origin = (
            f"{config.env_name('release_phase')} config var"
            if config.env_name("release_phase") in settings
            else CONFIG_FILE
        )
        out.step(f"Release phase wiring is off ({origin}); the Procfile is unchanged")
        out.detail(f"Run the migrations yourself, e.g. in the Procfile: release: {RELEASE_COMMAND}")
        return
    with _step(out, "Wiring the release phase"):
        wiring = wire(build_dir / "Procfile")
        messages = {
            "created": "No Procfile: created one with a release line",
            "added": "Procfile had no release line: added one",
            "wrapped": "Procfile had a release line: migrations now run first, then the "
            "previous command if they succeed",
            "unchanged": "Procfile's release line already runs heroku-migrate: unchanged",
        }
        out.detail(messages[wiring.action])
        out.detail(wiring.release_line)
        language = default_web_at_risk(build_dir)
        if language is not None:
            out.warn(
                f"The Procfile has no web: line, and {language} may be counting on its default",
                "one. Heroku takes default process types from the LAST buildpack only: if this",
                "buildpack runs last, the app gets no web process. Add your web: line to the",
                "Procfile, or run this buildpack first: heroku buildpacks:add --index 1 <url>.",
            )
        if wiring.previous and looks_like_golang_migrate_recipe(wiring.previous):
            out.warn(
                f"Your previous release command ({wiring.previous.strip()}) looks like the",
                "golang-migrate migration.sh recipe, which runs `down --all` (dropping every",
                "table) when a migration fails. heroku-migrate replaces it: remove it from the",
                "Procfile's release line.",
            )


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    files = (item for item in path.rglob("*") if item.is_file() and not item.is_symlink())
    return sum(item.stat().st_size for item in files)
