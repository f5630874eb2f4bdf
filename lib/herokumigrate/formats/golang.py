"""golang-migrate: `{version}_{title}.up.sql`, with an optional `{version}_{title}.down.sql`.

golang-migrate skips an up file of whitespace only and sends a comment-only one, which
PostgreSQL accepts: both are migrations that change nothing. An empty down file is a down that
reverts nothing; a missing one makes the migration irreversible.
"""

from __future__ import annotations

import re

from herokumigrate.formats import NewFile

# ASCII digits only: `\d` and int() would also take other scripts' digits (U+0661 is 1).
NAME_RE = re.compile(r"^([0-9]+)_(.*)\.(up|down)\.sql$", re.ASCII | re.DOTALL)


def new_files(version: str, slug: str, title: str) -> list[NewFile]:
    """An up file to write, and its down file."""
    return [
        NewFile(f"{version}_{slug}.up.sql", f"-- {title}\n"),
        NewFile(
            f"{version}_{slug}.down.sql",
            f"-- undo: {title}\n-- (left empty, this migration reverts as a no-op)\n",
        ),
    ]
