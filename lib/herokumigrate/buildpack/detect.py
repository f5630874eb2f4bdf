"""bin/detect: the buildpack applies when the app has a migrations folder or a `migrate.toml`.

The folder is `db/migrations` (even empty), or one where a supported tool keeps its migrations
(locations.py: `prisma/migrations`, `migrations`, ...) holding SQL files: a generic name such as
`migrations/` may hold another tool's JavaScript, so it counts only with SQL in it.

Lenient on purpose, as heroku/python is: detect can only say yes or no, while compile can explain.
So an empty `db/migrations` (a new project) passes, and compile notes that there is nothing to
apply yet; a `migrate.toml` passes whatever it says, and compile checks it. Config vars are not
available to bin/detect (no ENV_DIR), so `MIGRATE_PATH` alone can never make it pass: an app whose
migrations live elsewhere says so with `path = "..."` in `migrate.toml`.
"""

from __future__ import annotations

from pathlib import Path

from herokumigrate.config import CONFIG_FILE
from herokumigrate.locations import DEFAULT_FOLDER, candidate_folders, holds_migrations
from herokumigrate.output import Output

NAME = "heroku-migrate"


def applies(build_dir: Path) -> bool:
    """Whether the app has a `migrate.toml`, a `db/migrations` folder (even an empty one), or
    SQL migrations where a supported tool keeps them."""
    if (build_dir / CONFIG_FILE).is_file() or (build_dir / DEFAULT_FOLDER).is_dir():
        return True
    return any(holds_migrations(build_dir / c.path) for c in candidate_folders(build_dir))


def detect(build_dir: Path, out: Output) -> int:
    """Print the buildpack's name and return 0 when it applies; explain and return 1 otherwise."""
    if applies(build_dir):
        out.plain(NAME)
        return 0
    default_path = DEFAULT_FOLDER
    others = ", ".join(f"{c.path}/" for c in candidate_folders(build_dir)[1:])
    out.error(
        f"heroku-migrate: nothing to migrate: no {default_path}/ folder, no SQL migrations in "
        f"{others}, no {CONFIG_FILE}.",
        f"Add your migrations to {default_path}/ (e.g. {default_path}/1_create_users.up.sql), or",
        f'create {CONFIG_FILE} with path = "your/folder" if they live elsewhere (the',
        "MIGRATE_PATH config var is not visible to detection).",
    )
    return 1
