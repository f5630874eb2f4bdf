"""bin/detect: the buildpack applies when the app has migrations or a `migrate.toml`.

No TOML parsing here: a `migrate.toml` that exists means the app wants the buildpack (compile
reads and checks it). Config vars are not available to bin/detect, so only the default folder is
looked at otherwise.
"""

from __future__ import annotations

from pathlib import Path

from herokumigrate.config import CONFIG_FILE, Config
from herokumigrate.output import Output

NAME = "heroku-migrate"


def has_migrations(folder: Path) -> bool:
    """Whether `folder` holds at least one `.sql` file."""
    try:
        return any(entry.suffix == ".sql" and entry.is_file() for entry in folder.iterdir())
    except OSError:
        return False


def detect(build_dir: Path, out: Output) -> int:
    """Print the buildpack's name and return 0 when it applies; explain and return 1 otherwise."""
    default_path = Config().path
    if (build_dir / CONFIG_FILE).is_file() or has_migrations(build_dir / default_path):
        out.plain(NAME)
        return 0
    out.error(
        f"heroku-migrate: nothing to migrate: no .sql file in {default_path}/, no {CONFIG_FILE}.",
        f"Add your migrations to {default_path}/ (e.g. {default_path}/1_create_users.up.sql), or",
        f'create {CONFIG_FILE} with path = "your/folder" if they live elsewhere.',
    )
    return 1
