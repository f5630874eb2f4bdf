"""dbmate: `{version}_{title}.sql` holding a `-- migrate:up` and optionally a `-- migrate:down`
section; `transaction:false` after a marker runs that section outside a transaction.

An empty or comment-only section is accepted as dbmate runs it: an up that changes nothing, a
down that reverts nothing. Without a `-- migrate:down` marker the migration is irreversible.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.formats import FolderCandidate, NewFile, Unmarked
from herokumigrate.formats.naming import assemble_one_file, claim_one_file
from herokumigrate.sections import SqlSection
from herokumigrate.tools import ToolName
from herokumigrate.versions import INTEGER

if TYPE_CHECKING:
    from pathlib import Path

    from herokumigrate.formats import Claim, FolderEntry, FolderReader
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable
    from herokumigrate.sections import SourceFile
    from herokumigrate.versions import Version

_MARKER_RE = re.compile(r"^--\s*migrate:(\w+)(.*)$", re.MULTILINE)
_OPTION_RE = re.compile(r"^(\w+):(\S+)$")


class DbmateFormat:
    """The dbmate format (see the module's docstring)."""

    name: ToolName = "dbmate"
    syntax = INTEGER
    nested = False  # only the folder's own entries (formats/__init__.py)
    naming = "{version}_{title}.sql with '-- migrate:up' (dbmate)"

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | Unmarked | None:
        """A `{version}_{title}.sql` file holding dbmate's annotations."""
        marker = Unmarked("'-- migrate:up'", self.name)
        return claim_one_file(entry, folder, self.syntax, self.first_annotation, marker)

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        """The file's up and down sections (one part: the file)."""
        return assemble_one_file(self.name, self.parse, version, parts[0], folder)

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        """Where its users keep the files (no config file of the tool names a folder)."""
        del app_dir
        return [FolderCandidate("db/migrations", "dbmate's default")]

    def native_table(self) -> type[NativeTable]:
        """dbmate's `schema_migrations (version varchar)`."""
        from herokumigrate.native.dbmate import DbmateTable

        return DbmateTable

    def first_annotation(self, text: str) -> int | None:
        """The line of the first `-- migrate:` marker."""
        if "migrate:" not in text:  # a fast look first: the file may be large
            return None
        found = _MARKER_RE.search(text)
        return None if found is None else text.count("\n", 0, found.start()) + 1

    def parse(self, path: SourceFile, text: str) -> tuple[SqlSection, SqlSection | None]:
        """Split a dbmate file into its up and down sections."""
        markers: dict[str, tuple[int, int, bool]] = {}
        for match in _MARKER_RE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            direction = match.group(1).lower()
            if direction not in ("up", "down"):
                raise BadInput(
                    f"{path.shown}: line {line}: unknown marker '-- migrate:{match.group(1)}'",
                    fix="Use '-- migrate:up' and '-- migrate:down' only.",
                )
            if direction in markers:
                raise BadInput(
                    f"{path.shown}: line {line}: second '-- migrate:{direction}' marker",
                    fix=f"Keep one '-- migrate:{direction}' section per file.",
                )
            markers[direction] = (match.start(), match.end(), _transaction(path, line, match))
        if "up" not in markers:
            raise BadInput(
                f"{path.shown}: has no '-- migrate:up' marker",
                fix="Start the file with a '-- migrate:up' line (dbmate format), or rename it "
                "to {version}_{title}.up.sql (golang-migrate format).",
            )
        up_start, up_end, up_tx = markers["up"]
        if "down" in markers and markers["down"][0] < up_start:
            raise BadInput(
                f"{path.shown}: '-- migrate:down' comes before '-- migrate:up'",
                fix="Put the up section first.",
            )
        # dbmate allows blank lines and `--` comments above the up marker; so do we.
        if any(
            line.strip() and not line.lstrip().startswith("--")
            for line in text[:up_start].splitlines()
        ):
            raise BadInput(
                f"{path.shown}: has SQL before the '-- migrate:up' marker",
                fix="Move it below '-- migrate:up'.",
            )
        up_line = text.count("\n", 0, up_end) + 1
        if "down" not in markers:
            return SqlSection(path, text, up_end, -1, up_line, up_tx), None
        down_start, down_end, down_tx = markers["down"]
        down_line = up_line + text.count("\n", up_end, down_end)
        up = SqlSection(path, text, up_end, down_start, up_line, up_tx)
        return up, SqlSection(path, text, down_end, -1, down_line, down_tx)

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """One file with both sections."""
        return [
            NewFile(
                f"{version}_{slug}.sql",
                f"-- migrate:up\n-- {title}\n\n\n-- migrate:down\n-- undo: {title}\n\n",
            )
        ]


def _transaction(path: SourceFile, line: int, match: re.Match[str]) -> bool:
    transaction = True
    for option in match.group(2).split():
        opt = _OPTION_RE.match(option)
        if not opt or opt.group(1) != "transaction" or opt.group(2) not in ("true", "false"):
            raise BadInput(
                f"{path.shown}: line {line}: unknown option {option!r} after the marker",
                fix="The only option is transaction:false.",
            )
        transaction = opt.group(2) == "true"
    return transaction


FORMAT = DbmateFormat()
