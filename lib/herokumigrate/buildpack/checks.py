"""The build's checks, one step for both platforms (bin/compile on Heroku, the CNB's bin/build on
Fir), so that both fail, warn about and skip exactly the same things:

1. the settings, from the config vars and `migrate.toml`, checked now rather than at release time;
2. the migration files, with the runner's offline `validate` (formats, versions, the statement
   splitter), which writes the manifest that lets a release with nothing pending skip reading
   every file;
3. PostgreSQL's parser and the release-safety lint of the files new since the previous build
   (`lintstep`), as `parse` and `lint` say, their state kept in the build cache.

Nothing here connects to a database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import herokumigrate
from herokumigrate.buildpack import BuildFailed, interpreter
from herokumigrate.buildpack.envdir import is_tool_var
from herokumigrate.buildpack.lintstep import check_release_safety
from herokumigrate.config import (
    CONFIG_FILE,
    SETTINGS,
    Config,
    is_config_var_name,
    load_config,
    unknown_env_settings,
)
from herokumigrate.errors import EXIT_BAD_INPUT
from herokumigrate.locations import holds_migrations
from herokumigrate.output import Output

RUNNER_SOURCE = Path(herokumigrate.__file__).parent
# Where `path` comes from when the user sets it (config.Config.path_origin); otherwise it was
# found where a tool keeps migrations (locations.py), which the build says.
_SET_BY = frozenset({CONFIG_FILE, SETTINGS["path"].env_var, SETTINGS["path"].flag_name})
MANIFEST = "manifest.json"  # the validated folder, read by the release (source.read_manifest)


def check_migrations(
    app_dir: Path,
    config: Config,
    settings: dict[str, str],
    wheel_files: list[Path],
    *,
    cache: Path,
    out: Output,
) -> Path:
    """Every check of the app's migrations (see the module docstring); raises `MigrateError`
    when one fails the build. Returns the manifest to install beside the runner."""
    manifest = cache / MANIFEST
    if config.path_origin not in _SET_BY:
        out.detail(f"Migrations folder: {config.path}/ ({config.path_origin}; `path` sets another)")
    validate(app_dir, config, settings, wheel_files, manifest=manifest, out=out)
    check_release_safety(app_dir, config, cache, out)
    return manifest


def _origin_of_path(config: Config) -> str:
    """What set the `path` setting, as a build message says it."""
    origin = config.path_origin
    if origin == CONFIG_FILE:
        return f"`path` in {CONFIG_FILE}"
    if origin == config.env_name("path"):
        return f"the {origin} config var"
    return origin


def _one_line(value: str) -> str:
    """A config var's value as one printable line: quoted and escaped when it needs it."""
    value = value.strip()
    return value if value.isprintable() else repr(value)


def read_settings(
    build_dir: Path, settings: dict[str, str], wheel_files: list[Path], out: Output
) -> Config:
    """The app's settings from its config vars and `migrate.toml`, checked now rather than at
    release time. Only the values of known settings are printed: a `MIGRATE_*` variable that is
    not one may hold anything, a password included, and so may a setting that names a config
    var when it holds something else (the database URL itself)."""
    # A pure-Python wheel is a zip archive Python imports from: tomli for Python 3.10.
    sys.path.extend(str(path) for path in wheel_files if str(path) not in sys.path)
    unknown = unknown_env_settings(settings)
    for name in unknown:
        out.add_secret(settings[name])
    for name, value in settings.items():
        if name not in unknown:
            out.detail(f"{name}={_shown_value(name, value, out)} (config var)")
    for name in unknown:
        out.warn(f"Config var {name} is not a heroku-migrate setting; it is ignored.")
    if (build_dir / CONFIG_FILE).is_file():
        out.detail(f"{CONFIG_FILE} found")
    return load_config(build_dir, settings)


def _shown_value(name: str, value: str, out: Output) -> str:
    """A known setting's value for the build log; not shown (and kept secret) when it should
    name a config var and does not."""
    names_config_var = any(s.env_var == name and s.names_config_var for s in SETTINGS.values())
    if names_config_var and not is_config_var_name(value.strip()):
        out.add_secret(value.strip())
        return "(not a config var's name: not shown)"
    return _one_line(value)


def validate(
    build_dir: Path,
    config: Config,
    settings: dict[str, str],
    wheel_files: list[Path],
    *,
    manifest: Path,
    out: Output,
) -> None:
    """Run the runner's offline `validate` on the app's migration files, with the settings from
    the config vars (the dependencies are imported straight from their wheels). It writes the
    manifest that lets a release with nothing pending skip reading the files."""
    if not config.migrations_dir.is_dir():
        origin = _origin_of_path(config)
        raise BuildFailed(
            f"The migrations folder {config.path}/ does not exist (set by {origin}).",
            fix=f"Create it with your first migration (mkdir -p {config.path}, add e.g. "
            f"{config.path}/1_create_users.up.sql, commit), or point `path` in {CONFIG_FILE} "
            "at the folder that holds your migrations.",
        )
    result = _run_validate(build_dir, settings, wheel_files, manifest)
    # Its report belongs under this step: its own `-----> ` line becomes a detail.
    for line in result.stdout.splitlines():
        out.detail(line.removeprefix("-----> ").strip())
    # On success, what it printed on stderr are its warnings (protected settings changed).
    bang = out.warn if result.returncode == 0 else out.error
    for line in result.stderr.splitlines():
        bang(line.removeprefix(" !     "))
    if result.returncode == EXIT_BAD_INPUT:
        raise BuildFailed(
            "The build stopped because of the problem above, so that it cannot fail your release.",
            fix="Fix what it names, commit, and push again. "
            "Check locally with: heroku-migrate validate",
        )
    if result.returncode != 0:
        raise BuildFailed(f"heroku-migrate validate failed with exit status {result.returncode}.")
    if not holds_migrations(config.migrations_dir):
        out.detail(
            f"{config.path}/ holds no migration yet: the release phase has nothing to apply "
            f"until you add one (e.g. {config.path}/1_create_users.up.sql)."
        )


def _run_validate(
    build_dir: Path, settings: dict[str, str], wheel_files: list[Path], manifest: Path
) -> subprocess.CompletedProcess[str]:
    """`heroku-migrate validate --manifest MANIFEST` in the app, its dependencies imported
    from their wheels, with the config vars that are settings."""
    env = interpreter.build_env()
    # Only real settings: the others were reported already, and may hold anything.
    unknown = set(unknown_env_settings(settings))
    env.update((name, value) for name, value in settings.items() if name not in unknown)
    # The tools' variables the files' reading depends on (Flyway's placeholders), never shown.
    env.update((name, value) for name, value in os.environ.items() if is_tool_var(name))
    env["PYTHONPATH"] = os.pathsep.join([str(RUNNER_SOURCE.parent), *map(str, wheel_files)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_COLOR"] = "1"
    # `-c` rather than `-m`, with sys.path[0] (the app's directory) removed: an app file must
    # not shadow a module of the runner.
    code = (
        "import sys; del sys.path[0]; import runpy; "
        "runpy.run_module('herokumigrate', run_name='__main__', alter_sys=True)"
    )
    return subprocess.run(
        [sys.executable, "-s", "-c", code, "validate", "--manifest", str(manifest)],
        cwd=build_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
