"""bin/compile: validate the migrations, install the runner into the slug, wire the release phase.

Never connects to a database, and writes no build-time absolute path into the slug.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import herokumigrate
from herokumigrate.buildpack import (
    BUILD_TIME_ONLY,
    BUILDPACK_URL,
    SLUG_DIR,
    checksums,
    envdir,
    interpreter,
    launcher,
    wheels,
)
from herokumigrate.buildpack.checks import MANIFEST, RUNNER_SOURCE, check_migrations, read_settings
from herokumigrate.buildpack.heroku_ci import check_ci_settings
from herokumigrate.buildpack.procfile import (
    RELEASE_COMMAND,
    LanguageBuildpack,
    Wiring,
    WiringAction,
    default_web_at_risk,
    looks_like_golang_migrate_recipe,
    wire,
)
from herokumigrate.buildpack.stacks import check as check_stack
from herokumigrate.config import CONFIG_FILE, Config
from herokumigrate.output import Output

BUILDPACK_DIR = RUNNER_SOURCE.parent.parent

WORTH_TIMING = 1.0  # seconds: a step that took less says nothing by its duration
# Files by which heroku/python recognises an app (its bin/detect).
PYTHON_APP_MARKERS = (
    "requirements.txt",
    "pyproject.toml",
    "Pipfile",
    "setup.py",
    "poetry.lock",
    "uv.lock",
    ".python-version",
    "runtime.txt",
)


@contextmanager
def _step(out: Output, title: str) -> Iterator[None]:
    out.step(title)
    started = time.monotonic()
    yield
    seconds = time.monotonic() - started
    if seconds >= WORTH_TIMING:
        out.detail(f"(took {seconds:.1f}s)")


def compile_app(
    build_dir: Path, cache_dir: Path, env_dir: Path, out: Output, *, heroku_ci: bool = False
) -> None:
    """Run every compile step; raises `MigrateError` (explained) when the build must fail.
    For Heroku CI (`bin/test-compile`), the same build without the release-phase wiring: CI has
    no release phase."""
    check_stack(os.environ.get("STACK", ""))  # an unsupported stack stops the build at once
    with usable_cache(cache_dir, out) as cache_root:
        _compile(build_dir, cache_root, env_dir, out, heroku_ci=heroku_ci)


@contextmanager
def usable_cache(cache_dir: Path, out: Output) -> Iterator[Path]:
    """CACHE_DIR, or a scratch folder for this build when it cannot be written: the cache only
    saves time, so a missing or read-only one is worth a warning, not a failed build."""
    try:
        (cache_dir / "heroku-migrate").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir / "heroku-migrate"):
            pass
    except OSError as exc:
        out.warn(
            f"The build cache ({cache_dir}) cannot be written ({exc.strerror or exc}); building "
            "without it, so dependencies are downloaded again on every build."
        )
        scratch = Path(tempfile.mkdtemp(prefix="heroku-migrate-cache-"))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    yield cache_dir


def _compile(
    build_dir: Path, cache_dir: Path, env_dir: Path, out: Output, *, heroku_ci: bool
) -> None:
    started = time.monotonic()
    slug = build_dir / SLUG_DIR
    cache = cache_dir / "heroku-migrate"
    settings = envdir.read_settings(env_dir)
    # Read by the formats while the files are checked here (Flyway's placeholders).
    os.environ.update(envdir.read_tool_vars(env_dir))

    with _step(out, "Fetching heroku-migrate's dependencies"):
        wheel_files = [wheels.fetch(pinned, cache / "wheels", out) for pinned in wheels.PINNED]

    with _step(out, "Reading settings"):
        config = read_settings(build_dir, settings, wheel_files, out)

    with _step(out, f"Validating migrations in {config.path}"):
        manifest = check_migrations(build_dir, config, settings, wheel_files, cache=cache, out=out)

    with _step(out, "Choosing the Python for the release phase"):
        if slug.exists():
            shutil.rmtree(slug)
        slug.mkdir()
        shutil.copyfile(manifest, slug / MANIFEST)
        discard_damaged_bundles(cache, out)
        python = interpreter.choose(build_dir, cache_dir, os.environ.get("STACK", ""), out)
        record_bundles(cache)
        interpreter.write_record(python, slug / "interpreter")

    with _step(out, f"Installing heroku-migrate {herokumigrate.__version__}"):
        install_runtime(build_dir, python, wheel_files, cache, out)
        launcher.write_launcher(build_dir)
        launcher.write_profile_script(build_dir)
        launcher.write_export(BUILDPACK_DIR, build_dir)
        normalise_modes(slug)
        out.detail(f"{launcher.LAUNCHER} (on PATH on dynos: heroku run heroku-migrate status)")

    if heroku_ci:
        out.step("Heroku CI has no release phase: the Procfile is left as it is")
    else:
        wire_release_phase(build_dir, config, settings, out)
        check_ci_settings(build_dir, out)

    size = _tree_size(slug) + _tree_size(build_dir / launcher.PROFILE_SCRIPT)
    out.step(
        f"heroku-migrate installed in {time.monotonic() - started:.1f}s "
        f"({size / 1e6:.1f} MB in {SLUG_DIR}/)"
    )
    _python_app_hint(build_dir, python, out)


def _python_app_hint(build_dir: Path, python: interpreter.ReleasePython, out: Output) -> None:
    """A Python app built before heroku/python carries a second interpreter: say how not to."""
    if python.kind == "bundled" and any((build_dir / m).is_file() for m in PYTHON_APP_MARKERS):
        bundled = _tree_size(build_dir / interpreter.BUNDLE_DIR)
        out.detail(
            f"Hint: this looks like a Python app. Put this buildpack after heroku/python and the "
            f"release phase reuses the app's Python: {bundled / 1e6:.0f} MB less in the slug."
        )
        out.detail(f"heroku buildpacks:remove {BUILDPACK_URL}")
        out.detail(f"heroku buildpacks:add {BUILDPACK_URL}")


def install_runtime(
    build_dir: Path,
    python: interpreter.ReleasePython,
    wheel_files: list[Path],
    cache: Path,
    out: Output,
) -> None:
    """Put the runner (`lib`) and its dependencies (`site`) into the slug, with bytecode for the
    release Python. The result is cached, keyed by everything it depends on, and checked against
    its record before reuse, so a warm rebuild copies it instead of unpacking and compiling
    again, and a damaged copy is rebuilt rather than shipped."""
    slug = build_dir / SLUG_DIR
    wheel_files = wheels.needed_by(interpreter.version_tuple(python.version), wheel_files)
    key = _runtime_key(python, wheel_files)
    cached = cache / f"runtime-{key}"
    if cached.is_dir() and not checksums.has_record(cached):
        shutil.rmtree(cached, ignore_errors=True)  # cached by a version that kept no record
    if cached.is_dir():
        bad = checksums.damaged(cached)
        if not bad:
            for part in ("lib", "site"):
                interpreter.copy_tree(cached / part, slug / part)
            out.detail("Runner, dependencies and their bytecode from the build cache")
            return
        out.warn(
            f"The cached runner is damaged ({bad[0]}"
            + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
            + "); building it again."
        )
        shutil.rmtree(cached, ignore_errors=True)
    for wheel_file in wheel_files:
        wheels.unpack(wheel_file, slug / "site")
    shutil.copytree(
        RUNNER_SOURCE,
        slug / "lib" / RUNNER_SOURCE.name,
        ignore=shutil.ignore_patterns(*BUILD_TIME_ONLY, "__pycache__", "*.pyc"),
    )
    interpreter.precompile(python, build_dir, [slug / "lib", slug / "site"], out)
    for stale in cache.glob("runtime-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=".runtime-", dir=cache))
    try:
        for part in ("lib", "site"):
            shutil.copytree(slug / part, scratch / part)
        checksums.write_record(scratch)
        scratch.rename(cached)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def discard_damaged_bundles(cache: Path, out: Output) -> None:
    """Drop a cached bundled Python whose files no longer match their record, so that
    `interpreter.choose` builds it again."""
    for bundle in cache.glob("python-*"):
        if bundle.is_dir() and checksums.has_record(bundle) and checksums.damaged(bundle):
            out.warn("The cached Python is damaged; bundling it again.")
            shutil.rmtree(bundle, ignore_errors=True)


def record_bundles(cache: Path) -> None:
    """Record a bundled Python the moment it enters the cache (see `discard_damaged_bundles`)."""
    for bundle in cache.glob("python-*"):
        if (bundle / ".complete").is_file() and not checksums.has_record(bundle):
            checksums.write_record(bundle)


def normalise_modes(folder: Path) -> None:
    """Folders 0755, executables 0755, other files 0644: the slug is run by another user than the
    one that built it, and temporary folders (mkdtemp) start as 0700."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir() or path.stat().st_mode & 0o111:
            path.chmod(0o755)
        else:
            path.chmod(0o644)


def _runtime_key(python: interpreter.ReleasePython, wheel_files: list[Path]) -> str:
    digest = hashlib.sha256(interpreter.BUNDLE_FORMAT.encode())
    for path in sorted(RUNNER_SOURCE.rglob("*.py")):
        relative = path.relative_to(RUNNER_SOURCE)
        if relative.parts[0] not in BUILD_TIME_ONLY:
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    for wheel_file in wheel_files:
        digest.update(wheel_file.name.encode() + b"\0")
    digest.update(interpreter.identity(python).encode())
    return digest.hexdigest()[:16]


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
        messages: dict[WiringAction, str] = {
            "created": "No Procfile: created one with a release line",
            "added": "Procfile had no release line: added one",
            "wrapped": "Procfile had a release line: migrations now run first, then the "
            "previous command if they succeed",
            "unchanged": "Procfile's release line already runs heroku-migrate up: unchanged",
        }
        out.detail(messages[wiring.action])
        if wiring.replaced_link:
            out.detail(
                f"Procfile was a symbolic link to {wiring.replaced_link}: it is now a file with "
                "the same lines plus the release line (the target is unchanged)"
            )
        out.detail(wiring.release_line)
        for number, name in wiring.miscased:
            out.warn(
                f"Procfile line {number} declares `{name}:`, which Heroku never runs in the "
                "release phase: process types are case-sensitive, only `release:` is.",
                f"If that command should run at each release, rename `{name}:` to `release:` and "
                "push again: the build then runs it after the migrations succeed.",
            )
        language = default_web_at_risk(build_dir, wiring)
        if language is not None:
            out.warn(*_web_process_advice(language, wiring))
        if wiring.previous and looks_like_golang_migrate_recipe(wiring.previous):
            out.warn(
                f"Your previous release command ({wiring.previous.strip()}) looks like the",
                "golang-migrate migration.sh recipe, which runs `down --all` (dropping every",
                "table) when a migration fails. heroku-migrate replaces it: remove it from the",
                "Procfile's release line.",
            )


def _web_process_advice(language: LanguageBuildpack, wiring: Wiring) -> tuple[str, ...]:
    if language.default_web == "procfile":
        return (
            f"The app has no Procfile of its own, so {language.name} would write one with a web:",
            "line, but only when no Procfile exists: this build just created one, so if",
            f"{language.name} runs after this buildpack, the app gets no web process.",
            f"Run this buildpack AFTER {language.name} (re-adding it puts it last):",
            f"heroku buildpacks:remove {BUILDPACK_URL} && heroku buildpacks:add {BUILDPACK_URL}",
            "or add your own web: line to the Procfile.",
        )
    where = "has no web: line" if wiring.action != "created" else "was created without a web: line"
    return (
        f"The Procfile {where}, and {language.name} may be counting on its default",
        "one. Heroku takes default process types from the LAST buildpack only: if this",
        "buildpack runs last, the app gets no web process. Add your web: line to the",
        f"Procfile, or run this buildpack first: heroku buildpacks:add --index 1 {BUILDPACK_URL}",
    )


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    files = (item for item in path.rglob("*") if item.is_file() and not item.is_symlink())
    return sum(item.stat().st_size for item in files)
