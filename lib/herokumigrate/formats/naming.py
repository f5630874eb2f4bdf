"""Names shared by the formats that write `{version}_{title}` (golang-migrate, dbmate, goose):
the version read from a file name, and the one-file migrations that dbmate and goose tell apart
by their annotations.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.formats import Claim, Unmarked
from herokumigrate.migration import Migration, sha256_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from herokumigrate.formats import FolderEntry, FolderReader
    from herokumigrate.sections import SourceFile, SqlSection
    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version, VersionSyntax

# `{version}_{title}.sql`, or `{version}.sql`; ASCII digits only.
ONE_FILE_RE = re.compile(r"^([0-9]+)(?:_(.*))?\.sql$", re.ASCII | re.DOTALL)


def version_in_name(path: SourceFile, syntax: VersionSyntax, written: str) -> Version:
    """The version a file name gives; BadInput naming the file when it is out of range."""
    try:
        return syntax.parse(written)
    except ValueError as exc:
        raise BadInput(
            f"{path.shown}: {exc}",
            fix="Use a version below 2^63, e.g. a timestamp like 20260101120000.",
        ) from None


def claim_one_file(
    entry: FolderEntry,
    folder: FolderReader,
    syntax: VersionSyntax,
    first_annotation: Callable[[str], int | None],
    marker: Unmarked,
) -> Claim | Unmarked | None:
    """A `{version}_{title}.sql` file holding a format's annotation (found by
    `first_annotation`, which gives its line): claimed, as `<tool> (line N)`; `marker` when
    the name fits but the annotation is missing."""
    name = entry.name
    if entry.is_folder or name.endswith((".up.sql", ".down.sql")):
        return None
    found = ONE_FILE_RE.match(name)
    if found is None:
        return None
    version = version_in_name(entry.path, syntax, found.group(1))
    line = first_annotation(folder.text(entry.path))
    if line is None:
        return marker
    return Claim(entry, version, found.group(2) or "", because=f"{marker.tool} (line {line})")


def assemble_one_file(
    tool: ToolName,
    parse: Callable[[SourceFile, str], tuple[SqlSection, SqlSection | None]],
    version: Version,
    part: Claim,
    folder: FolderReader,
) -> Migration | None:
    """The migration of a one-file format: its up and down sections, as `parse` splits them;
    the checksum covers the up section only."""
    path = part.entry.path
    try:
        up, down = parse(path, folder.text(path))
    except BadInput as exc:
        folder.problem(path, exc)
        return None
    checksum = sha256_of(up.text, up.start, up.stop)
    return Migration(version, part.title, tool, up, checksum, down_section=down)
