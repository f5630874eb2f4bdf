"""Config vars from ENV_DIR, read as data.

The platform gives bin/compile a folder with one file per config var. Sourcing those files would
run whatever a value contains; we only ever read the bytes of the `MIGRATE_*` ones.
"""

from __future__ import annotations

import re
from pathlib import Path

from herokumigrate.config import ENV_PREFIX

_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*\Z")


def read_settings(env_dir: Path) -> dict[str, str]:
    """The `MIGRATE_*` config vars in `env_dir` (empty when it does not exist), values verbatim."""
    values: dict[str, str] = {}
    try:
        entries = sorted(env_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return values
    for entry in entries:
        name = entry.name
        if not name.startswith(ENV_PREFIX) or not _NAME_RE.match(name) or not entry.is_file():
            continue
        values[name] = entry.read_bytes().decode("utf-8", errors="replace")
    return values
