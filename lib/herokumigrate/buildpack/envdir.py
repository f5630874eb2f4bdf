"""Config vars from ENV_DIR, read as data.

The platform gives bin/compile a folder with one file per config var. Sourcing those files would
run whatever a value contains; we only ever read the bytes of the `MIGRATE_*` ones, and of the
tools' own variables that change how their files read (Flyway's placeholders, its table and
schemas): never printed, since a placeholder may hold a secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from herokumigrate.config import ENV_PREFIX

_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*\Z")
# The tools' variables a migration file's reading depends on (formats/flyway.py).
TOOL_VARS = frozenset(
    {
        "FLYWAY_TABLE",
        "FLYWAY_SCHEMAS",
        "FLYWAY_DEFAULT_SCHEMA",
        "FLYWAY_ENVIRONMENT",
        "FLYWAY_PLACEHOLDER_REPLACEMENT",
        "FLYWAY_LOCATIONS",
    }
)
TOOL_VAR_PREFIX = "FLYWAY_PLACEHOLDERS_"


def is_tool_var(name: str) -> bool:
    """Whether `name` is a tool's variable that changes how its files read."""
    return name in TOOL_VARS or (name.startswith(TOOL_VAR_PREFIX) and name != TOOL_VAR_PREFIX)


def read_settings(env_dir: Path) -> dict[str, str]:
    """The `MIGRATE_*` config vars in `env_dir` (empty when it does not exist), values verbatim."""
    return _read(env_dir, lambda name: name.startswith(ENV_PREFIX))


def read_tool_vars(env_dir: Path) -> dict[str, str]:
    """The tools' variables in `env_dir` that change how their files read (`is_tool_var`)."""
    return _read(env_dir, is_tool_var)


def _read(env_dir: Path, wanted: Callable[[str], bool]) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        entries = sorted(env_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return values
    for entry in entries:
        name = entry.name
        if not wanted(name) or not _NAME_RE.match(name) or not entry.is_file():
            continue
        values[name] = entry.read_bytes().decode("utf-8", errors="replace")
    return values
