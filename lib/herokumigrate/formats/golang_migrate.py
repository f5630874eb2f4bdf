"""golang-migrate: `{version}_{title}.up.sql`, with an optional `{version}_{title}.down.sql`.

golang-migrate skips an up file of whitespace only and sends a comment-only one, which
PostgreSQL accepts: both are migrations that change nothing. An empty down file is a down that
reverts nothing; a missing one makes the migration irreversible.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.formats import Claim, FolderCandidate, NewFile
from herokumigrate.formats.naming import version_in_name
from herokumigrate.migration import Migration, sha256_of
from herokumigrate.sections import SqlSection, shown_name
from herokumigrate.tools import ToolName
from herokumigrate.versions import INTEGER

if TYPE_CHECKING:
    from pathlib import Path

    from herokumigrate.formats import FolderEntry, FolderReader
    from herokumigrate.native import NativeTable
    from herokumigrate.versions import Version

# ASCII digits only: `\d` and int() would also take other scripts' digits (U+0661 is 1).
NAME_RE = re.compile(r"^([0-9]+)_(.*)\.(up|down)\.sql$", re.ASCII | re.DOTALL)
_DOWN = "down"


class GolangMigrateFormat:
    """The golang-migrate format (see the module's docstring)."""

    name: ToolName = "golang-migrate"
    syntax = INTEGER
    nested = False  # only the folder's own entries (formats/__init__.py)
    naming = "{version}_{title}.up.sql / .down.sql (golang-migrate)"

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | None:
        """An up file owns its version; a down file is a part of the same version's migration."""
        del folder  # the name alone tells
        found = NAME_RE.match(entry.name)
        if entry.is_folder or found is None:
            return None
        version = version_in_name(entry.path, self.syntax, found.group(1))
        return Claim(entry, version, found.group(2), primary=found.group(3) != _DOWN)

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        """The up file, paired with its down file when their titles agree."""
        up = parts[0] if parts[0].primary else None
        downs = [p for p in parts if not p.primary]
        for extra in downs[1:]:
            folder.problem(
                extra.entry.path,
                BadInput(
                    f"{extra.entry.path.shown}: version {version} has two down files "
                    f"({downs[0].entry.path.shown} and {extra.entry.path.shown})",
                    fix="Keep one .down.sql per version.",
                ),
            )
        down = downs[0] if downs else None
        if down is not None and up is None:
            folder.problem(down.entry.path, _down_without_up(down, version, folder))
        elif down is not None and up is not None and down.title != up.title:
            folder.problem(
                down.entry.path,
                BadInput(
                    f"{down.entry.path.shown}: title differs from its up file "
                    f"{up.entry.path.shown}",
                    fix="Give the up and down files the same {version}_{title} prefix.",
                ),
            )
            down = None
        if up is None:
            return None
        try:
            text = folder.text(up.entry.path)
        except BadInput as exc:
            folder.problem(up.entry.path, exc)
            return None
        section = SqlSection(up.entry.path, text)
        down_file = down.entry.path if down is not None else None
        checksum = sha256_of(text, 0, len(text))
        return Migration(version, up.title, self.name, section, checksum, down_file=down_file)

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        """Where its users keep the files (no config file of the tool names a folder)."""
        del app_dir
        return [
            FolderCandidate("db/migrations", "golang-migrate's usual folder"),
            FolderCandidate("migrations", "golang-migrate's usual folder"),
        ]

    def native_table(self) -> type[NativeTable]:
        """golang-migrate's one-row `schema_migrations`."""
        from herokumigrate.native.golang_migrate import GolangMigrateTable

        return GolangMigrateTable

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """An up file to write, and its down file."""
        return [
            NewFile(f"{version}_{slug}.up.sql", f"-- {title}\n"),
            NewFile(
                f"{version}_{slug}.down.sql",
                f"-- undo: {title}\n-- (left empty, this migration reverts as a no-op)\n",
            ),
        ]


def _down_without_up(down: Claim, version: Version, folder: FolderReader) -> BadInput:
    other = folder.owner(version)
    fix = (
        f"It pairs with no .up.sql; {other.shown} holds version {version} in one "
        "file: put the down SQL in its '-- migrate:down' (dbmate) or "
        "'-- +goose Down' (goose) section."
        if other
        else f"Add {shown_name(f'{version}_{down.title}.up.sql')}, or delete "
        f"{down.entry.path.shown}."
    )
    return BadInput(f"{down.entry.path.shown}: down file without an up file", fix=fix)


FORMAT = GolangMigrateFormat()
