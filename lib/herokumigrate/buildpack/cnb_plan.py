"""The Cloud Native Buildpack's detect (Buildpack API 0.10): the same test as the classic
bin/detect, and a build plan that declares the release command to heroku/release-phase.

The plan offers two alternatives (the spec's "potential Build Plans"), tried in order:

1. require `release-phase`, with `[[requires.metadata.release]]` running `heroku-migrate up`;
2. (`[[or]]`) the same without that requirement, so that detection still passes when
   heroku/release-phase is not in the group, or comes after this buildpack.

The spec fails a trial when "a required buildpack requires a dependency that is not provided by
the same buildpack or a previous buildpack": heroku/release-phase provides `release-phase`, so it
must come BEFORE this buildpack for the first alternative to be chosen. A buildpack's build only
sees the plan entries whose names it provides, never which alternative won; so each alternative
also provides and requires our own entry, `heroku-migrate`, whose metadata says which one it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from herokumigrate.buildpack import detect as classic_detect
from herokumigrate.buildpack import envdir
from herokumigrate.config import CONFIG_FILE, Config
from herokumigrate.output import Output

DETECT_PASS = 0
DETECT_FAIL = 100  # the spec's "fail" (1-99 and 101+ are errors)
OWN_ENTRY = "heroku-migrate"
RELEASE_PHASE_ENTRY = "release-phase"
RELEASE_PHASE_BUILDPACK = "heroku/release-phase"
RELEASE_COMMAND = ("heroku-migrate", "up")  # found on PATH: the runner layer's bin/
SOURCE = "heroku-buildpack-migrate"
WIRED_KEY = "release-phase"

Wiring = Literal["release-phase", "none", "opted-out"]
"""How the release phase is wired: declared to heroku/release-phase, not declared because it is
not in the group before this buildpack, or not declared because the app opted out."""


@dataclass(frozen=True)
class ReleaseCommand:
    """One `[[requires.metadata.release]]` entry as heroku/release-phase reads it."""

    command: str
    args: tuple[str, ...]
    source: str


MIGRATE = ReleaseCommand(RELEASE_COMMAND[0], RELEASE_COMMAND[1:], SOURCE)


def _toml_string(value: str) -> str:
    # A JSON string (ASCII, escaped) is a valid TOML basic string.
    return json.dumps(value)


def _own_entry(table_prefix: str, *, wired: bool) -> str:
    """Provide and require `heroku-migrate`, saying in its metadata which alternative this is."""
    return (
        f'[[{table_prefix}provides]]\nname = "{OWN_ENTRY}"\n\n'
        f'[[{table_prefix}requires]]\nname = "{OWN_ENTRY}"\n\n'
        f"[{table_prefix}requires.metadata]\n{WIRED_KEY} = {'true' if wired else 'false'}\n"
    )


def plan_toml(*, offer_release_phase: bool) -> str:
    """The build plan detect writes: the release-phase alternative first (when offered), then the
    one without it."""
    if not offer_release_phase:
        return _own_entry("", wired=False)
    args = ", ".join(_toml_string(arg) for arg in MIGRATE.args)
    return (
        _own_entry("", wired=True)
        + f'\n[[requires]]\nname = "{RELEASE_PHASE_ENTRY}"\n\n'
        + "[[requires.metadata.release]]\n"
        + f"command = {_toml_string(MIGRATE.command)}\n"
        + f"args = [{args}]\n"
        + f"source = {_toml_string(MIGRATE.source)}\n\n"
        + "[[or]]\n\n"
        + _own_entry("or.", wired=False)
    )


def opted_out(platform_dir: Path) -> bool:
    """Whether the build's `MIGRATE_RELEASE_PHASE` (a file in `<platform>/env`, read as data)
    turns the release-phase wiring off. `migrate.toml` is checked by the build instead: detect
    cannot read TOML on Python 3.10 before the build fetches tomli."""
    raw = envdir.read_settings(platform_dir / "env").get(Config().env_name("release_phase"), "")
    return raw.strip().lower() in {"0", "false", "no", "off"}


def detect(app_dir: Path, plan_path: Path, platform_dir: Path, out: Output) -> int:
    """Pass (0) and write the plan when the classic detect would pass; fail (100) otherwise."""
    if not classic_detect.applies(app_dir):
        default_path = Config().path
        out.error(
            f"heroku-migrate: nothing to migrate: no {default_path}/ folder, no {CONFIG_FILE}.",
            f"Add your migrations to {default_path}/ (e.g. {default_path}/1_create_users.up.sql),"
            f' or create {CONFIG_FILE} with path = "your/folder" if they live elsewhere.',
        )
        return DETECT_FAIL
    with plan_path.open("a", encoding="utf-8") as plan:
        plan.write(plan_toml(offer_release_phase=not opted_out(platform_dir)))
    return DETECT_PASS


def wiring_from_plan(entries: list[dict[str, object]], platform_dir: Path) -> Wiring:
    """Which alternative the lifecycle chose, from the Buildpack Plan's `heroku-migrate` entry."""
    for entry in entries:
        metadata = entry.get("metadata")
        wired = isinstance(metadata, dict) and metadata.get(WIRED_KEY) is True
        if entry.get("name") == OWN_ENTRY and wired:
            return "release-phase"
    return "opted-out" if opted_out(platform_dir) else "none"
