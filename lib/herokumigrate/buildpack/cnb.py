"""The Cloud Native Buildpack's build (Buildpack API 0.10): the classic compile's steps, into
layers instead of the slug.

- `runner` (launch): the runner, its pinned dependencies and the interpreter, laid out as the
  classic slug's `.heroku-migrate/` folder so the classic launcher and interpreter record work
  unchanged; `bin/heroku-migrate` links to the launcher, and the lifecycle puts every launch
  layer's `bin/` on PATH, which is how heroku/release-phase's `heroku-migrate up` and
  `heroku run heroku-migrate status` find it.
- `cache` (cache only): the downloaded wheels, the parser, the bundled interpreter, the compiled
  runner and the lint's record of the files it checked, restored by the lifecycle on the next
  build, so a rebuild needs no network and lints only the new migrations.

The checks are the classic build's own (`checks`): the same settings, parser and lint.

Config vars come from `<platform>/env/` (one file per variable), read as data. The Procfile is
never touched: the release command is declared in detect's plan (see `cnb_plan`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import herokumigrate
from herokumigrate.buildpack import SLUG_DIR, BuildFailed, envdir, interpreter, launcher, wheels
from herokumigrate.buildpack import build as classic
from herokumigrate.buildpack.checks import MANIFEST, check_migrations, read_settings
from herokumigrate.buildpack.cnb_plan import (
    RELEASE_PHASE_BUILDPACK,
    Wiring,
    wiring_from_plan,
)
from herokumigrate.config import CONFIG_FILE, Config
from herokumigrate.output import Output

RUNNER_LAYER = "runner"
CACHE_LAYER = "cache"
TARGET_RECORD = "target.txt"  # in the cache layer: what its contents were built for
# The lifecycle exports every file of the image, the app's included, with this mtime
# (1980-01-01T00:00:01Z, lifecycle's archive.NormalizingTarWriter).
EXPORTED_MTIME = 315532801
SUPPORTED_ARCHES = ("amd64", "arm64")


@dataclass(frozen=True)
class Target:
    """The run image the lifecycle builds for (`CNB_TARGET_*`)."""

    os: str
    arch: str
    distro_name: str
    distro_version: str

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Target:
        """The target from the lifecycle's `CNB_TARGET_*` variables ('' when unset)."""
        return cls(
            env.get("CNB_TARGET_OS", ""),
            env.get("CNB_TARGET_ARCH", ""),
            env.get("CNB_TARGET_DISTRO_NAME", ""),
            env.get("CNB_TARGET_DISTRO_VERSION", ""),
        )

    def describe(self) -> str:
        """`ubuntu 24.04 (linux/amd64)`, or what is known of it."""
        distro = f"{self.distro_name} {self.distro_version}".strip() or "unknown distribution"
        return f"{distro} ({self.os or '?'}/{self.arch or '?'})"

    def check(self) -> None:
        """Refuse a target the bundled interpreter cannot run on, before anything is done."""
        if self.os and self.os != "linux":
            raise BuildFailed(
                f"The build targets {self.describe()}; heroku-migrate runs on linux only.",
                fix="Build with heroku/builder:24 or heroku/builder:26.",
            )
        if self.arch and self.arch not in SUPPORTED_ARCHES:
            raise BuildFailed(
                f"The build targets {self.describe()}; heroku-migrate supports "
                f"{' and '.join(SUPPORTED_ARCHES)}.",
                fix="Build with heroku/builder:24 or heroku/builder:26.",
            )


def write_layer_toml(layers_dir: Path, name: str, *, launch: bool, cache: bool) -> None:
    """`<layers>/<name>.toml`: its `[types]` and the buildpack version that made it."""
    (layers_dir / f"{name}.toml").write_text(
        "[types]\n"
        f"launch = {'true' if launch else 'false'}\n"
        "build = false\n"
        f"cache = {'true' if cache else 'false'}\n\n"
        "[metadata]\n"
        f'version = "{herokumigrate.__version__}"\n',
        encoding="utf-8",
    )


def prepare_cache_layer(layers_dir: Path, target: Target, out: Output) -> Path:
    """The cache layer, as the lifecycle restored it, emptied when it was made for another
    target (its interpreter and bytecode would not run there)."""
    layer = layers_dir / CACHE_LAYER
    identity = f"{target.os}/{target.arch} {target.distro_name} {target.distro_version}\n"
    record = layer / TARGET_RECORD
    if layer.is_dir() and (not record.is_file() or record.read_text() != identity):
        out.detail("The build cache was made for another target: starting afresh")
        shutil.rmtree(layer)
    layer.mkdir(exist_ok=True)
    record.write_text(identity)
    write_layer_toml(layers_dir, CACHE_LAYER, launch=False, cache=True)
    return layer


def read_buildpack_plan(plan_path: Path) -> list[dict[str, object]]:
    """The Buildpack Plan's entries (tomli comes from the fetched wheels on Python 3.10)."""
    from herokumigrate.compat import tomllib

    try:
        entries = tomllib.loads(plan_path.read_text(encoding="utf-8")).get("entries", [])
    except FileNotFoundError:
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def layer_python(layers_dir: Path) -> Path | None:
    """The python3 that another buildpack's launch layer puts first on PATH (heroku/python's
    `python` layer is build and launch), when there is one: it exists at the same path in the
    app image. None when python3 is not in such a layer."""
    found = shutil.which("python3")
    if found is None:
        return None
    path = Path(found).absolute()
    try:
        parts = path.relative_to(layers_dir.parent).parts
    except ValueError:
        return None
    if len(parts) < 3 or parts[0] == layers_dir.name:
        return None
    from herokumigrate.compat import tomllib

    layer_toml = layers_dir.parent / parts[0] / f"{parts[1]}.toml"
    try:
        types = tomllib.loads(layer_toml.read_text(encoding="utf-8")).get("types", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return path if isinstance(types, dict) and types.get("launch") is True else None


def choose_python(
    layers_dir: Path, runner: Path, cache: Path, out: Output
) -> interpreter.ReleasePython:
    """An earlier buildpack's launch-layer Python (3.10 or newer), or a bundled copy of the
    build's own: heroku/builder's run images have no python3."""
    found = layer_python(layers_dir)
    if found is not None:
        version = interpreter.probe_version(found)
        if version is not None and version >= interpreter.MINIMUM_VERSION:
            dotted = ".".join(map(str, version))
            out.detail(f"Using Python {dotted} from an earlier buildpack's layer ({found})")
            return interpreter.ReleasePython("app", str(found), dotted, found)
        out.detail(f"{found} is older than 3.10 or does not run; bundling Python instead")
    own = ".".join(map(str, sys.version_info[:3]))
    out.detail(f"The run image has no python3: bundling Python {own} into the layer")
    return interpreter.bundle(runner / interpreter.BUNDLE_DIR, cache, out)


def as_exported(migrations_dir: Path) -> None:
    """Give the migration files the mtime the exported image will give them, so that the
    manifest (which records it) matches them at release and a release with nothing pending
    skips reading them, as on Heroku. A file that cannot be touched keeps its mtime: the
    release then reads the files, which is slower, never wrong."""
    for path in migrations_dir.rglob("*"):  # subfolders too: one folder per migration
        try:
            os.utime(path, (EXPORTED_MTIME, EXPORTED_MTIME), follow_symlinks=False)
        except OSError:
            continue


def build(
    app_dir: Path, layers_dir: Path, plan_path: Path, platform_dir: Path, out: Output
) -> None:
    """Every build step; raises `MigrateError` (explained) when the build must fail."""
    target = Target.from_environment(os.environ)
    target.check()
    out.step(f"heroku-migrate {herokumigrate.__version__} for {target.describe()}")
    cache_layer = prepare_cache_layer(layers_dir, target, out)
    cache = cache_layer / "heroku-migrate"
    settings = envdir.read_settings(platform_dir / "env")
    # Read by the formats while the files are checked here (Flyway's placeholders).
    os.environ.update(envdir.read_tool_vars(platform_dir / "env"))

    out.step("Fetching heroku-migrate's dependencies")
    wheel_files = [wheels.fetch(pinned, cache / "wheels", out) for pinned in wheels.PINNED]

    out.step("Reading settings")
    config = read_settings(app_dir, settings, wheel_files, out)
    wiring = wiring_from_plan(read_buildpack_plan(plan_path), platform_dir)

    out.step(f"Validating migrations in {config.path}")
    as_exported(config.migrations_dir)
    manifest = check_migrations(app_dir, config, settings, wheel_files, cache=cache, out=out)

    out.step("Choosing the Python for the release phase")
    runner = layers_dir / RUNNER_LAYER
    if runner.exists():
        shutil.rmtree(runner)
    (runner / SLUG_DIR).mkdir(parents=True)
    shutil.copyfile(manifest, runner / SLUG_DIR / MANIFEST)
    classic.discard_damaged_bundles(cache, out)
    python = choose_python(layers_dir, runner, cache_layer, out)
    classic.record_bundles(cache)
    record = runner / SLUG_DIR / "interpreter"
    interpreter.write_record(python, record)
    with record.open("a", encoding="utf-8") as stream:
        # The launcher's app is the layer; the migrations live in the app directory, which
        # the lifecycle exports at the path it builds in.
        stream.write(f"app_root={app_dir}\n")

    out.step(f"Installing heroku-migrate {herokumigrate.__version__}")
    classic.install_runtime(runner, python, wheel_files, cache, out)
    launcher.write_launcher(runner)
    (runner / "bin").mkdir()
    (runner / "bin/heroku-migrate").symlink_to(f"../{launcher.LAUNCHER}")
    classic.normalise_modes(runner)
    write_layer_toml(layers_dir, RUNNER_LAYER, launch=True, cache=False)
    out.detail("heroku-migrate is on PATH at launch: heroku run heroku-migrate status")

    explain_wiring(wiring, config, settings, out)


def explain_wiring(wiring: Wiring, config: Config, settings: dict[str, str], out: Output) -> None:
    """Say how the release phase runs the migrations, or how to make it."""
    flag = config.env_name("release_phase")
    if wiring == "release-phase" and not config.release_phase:
        # migrate.toml turned it off, which detect cannot read: the command is declared.
        raise BuildFailed(
            f"{CONFIG_FILE} sets release_phase = false, but this build already declared "
            f"`heroku-migrate up` to {RELEASE_PHASE_BUILDPACK} (detect cannot read {CONFIG_FILE}).",
            fix=f"Set the build config var {flag}=false as well, so detect does not declare it.",
        )
    if wiring == "release-phase":
        out.step(f"Release phase: `heroku-migrate up` declared to {RELEASE_PHASE_BUILDPACK}")
        out.detail("It runs before any release command of project.toml, on every release")
        return
    if wiring == "opted-out" or not config.release_phase:
        origin = f"{flag} config var" if flag in settings else CONFIG_FILE
        out.step(f"Release phase wiring is off ({origin})")
        out.detail("Run `heroku-migrate up` yourself, e.g. as a [[com.heroku.phase.release]]")
        return
    out.warn(
        f"{RELEASE_PHASE_BUILDPACK} is not in this build's group before heroku-migrate, so no",
        "release command runs your migrations. Add it BEFORE this buildpack in project.toml:",
        "  [[io.buildpacks.group]]",
        f'  uri = "{RELEASE_PHASE_BUILDPACK}"',
        "  [[io.buildpacks.group]]",
        '  uri = "<this buildpack>"',
        "(a buildpack's requirement must be provided by one that comes before it).",
    )
