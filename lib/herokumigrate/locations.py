"""Where an app keeps its migrations when no `path` setting says: the folders each tool uses.

Each format names its tool's folders (`MigrationFormat.folders`: the conventional ones, and one
the tool's own config file names). The folder is the one of those that exists; when several
exist, the one holding migrations; when several hold migrations, nothing is guessed: the user
is asked to set `path`. Which format the folder's files are is decided by reading them
(source.py), not here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.formats import FolderCandidate, registered_formats

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_FOLDER = "db/migrations"
_DEFAULT = FolderCandidate(DEFAULT_FOLDER, "the default")


def candidate_folders(app_dir: Path) -> list[FolderCandidate]:
    """Every folder a tool keeps migrations in, the default first, each named once (with the
    first reason given for it, or the first from a tool the app's own files name)."""
    seen: dict[str, FolderCandidate] = {DEFAULT_FOLDER: _DEFAULT}
    for fmt in registered_formats():
        for candidate in fmt.folders(app_dir):
            key = candidate.path.strip("/")
            if key not in seen or (candidate.app_sign and not seen[key].app_sign):
                seen[key] = candidate
    return list(seen.values())


def find_migrations_folder(app_dir: Path) -> FolderCandidate:
    """The app's migrations folder, found where the tools keep them (the default when none
    exists); BadInput when several hold migrations."""
    existing = [c for c in candidate_folders(app_dir) if (app_dir / c.path).is_dir()]
    if len(existing) <= 1:
        return existing[0] if existing else _DEFAULT
    holding = [c for c in existing if holds_migrations(app_dir / c.path)]
    if len(holding) == 1:
        return holding[0]
    if not holding:  # empty folders only (a new project): the first, the default before others
        return existing[0]
    listed = ", ".join(f"{c.path}/ ({c.because})" for c in holding)
    raise BadInput(
        f"migrations found in several folders: {listed}; which one to apply is not guessed",
        fix=f'Set `path = "{holding[0].path}"` in migrate.toml (or the MIGRATE_PATH config var) '
        "to the folder your release applies.",
    )


def holds_migrations(folder: Path) -> bool:
    """Whether `folder` holds a `.sql` file, directly or one or two folders down (the tools
    that keep one folder per migration, Flyway's subfolders); dotfiles are skipped."""
    return _holds_sql(folder, depth=3)


def _holds_sql(folder: Path, depth: int) -> bool:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.name.endswith(".sql") and entry.is_file():
            return True
    return depth > 1 and any(
        _holds_sql(folder / entry.name, depth - 1)
        for entry in entries
        if not entry.name.startswith(".") and entry.is_dir()
    )
