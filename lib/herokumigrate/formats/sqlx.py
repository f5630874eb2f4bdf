"""sqlx (Rust): `{version}_{description}.sql` (simple), or `{version}_{description}.up.sql` with
an optional `.down.sql` (reversible), read as `sqlx::migrate!()` and `sqlx migrate run` read
them (sqlx-core's migrate/source.rs):

- every file of the folder (not its subfolders) whose name has a `_` and ends in `.sql` after
  it is a migration; the part before the first `_` must parse as a Rust i64 (`+`/`-` and
  leading zeros allowed), or sqlx fails on the whole folder; other files are skipped;
- the description is the rest of the name, its suffix removed and each `_` made a space;
- a file whose text starts exactly with `-- no-transaction` runs outside a transaction (a down
  file too); sqlx sends each file as one simple query;
- the checksum is the SHA-384 of the file's text, less the characters `sqlx.toml`'s
  `migrate.ignored-chars` lists.

`sqlx.toml` (at the app root, the crate's) may name the folder (`migrate.migrations-dir`).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Literal

from herokumigrate.errors import BadInput
from herokumigrate.formats import Claim, FolderCandidate, NewFile
from herokumigrate.formats.rust import (
    bom_error,
    cargo_depends_on,
    read_toml,
    starts_with_bom,
    table,
)
from herokumigrate.migration import Migration
from herokumigrate.sections import SqlSection
from herokumigrate.tools import ToolName
from herokumigrate.versions import MAX_VERSION, Version

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from herokumigrate.formats import FolderEntry, FolderReader
    from herokumigrate.native import NativeTable
    from herokumigrate.sections import SourceFile

NO_TRANSACTION = "-- no-transaction"
CONFIG_FILE = "sqlx.toml"
_I64 = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
_UP, _DOWN, _SIMPLE = ".up.sql", ".down.sql", ".sql"


class SqlxVersions:
    """A Rust i64, as sqlx parses a file name's prefix (`+1`, `-1`, `0001`)."""

    name = "integer"
    column_type: Literal["bigint", "text"] = "bigint"

    def parse(self, written: str) -> Version:
        """`0180` -> Version((180,), "180", "0180", 180)."""
        if not _I64.match(written):
            raise ValueError(f"version {written!r} is not an integer")
        number = int(written)
        if not -MAX_VERSION - 1 <= number <= MAX_VERSION:
            raise ValueError(f"version {written} is out of the range of a 64-bit integer")
        return Version((number,), str(number), written, number)


class SqlxFormat:
    """The sqlx format (see the module's docstring)."""

    name: ToolName = "sqlx"
    syntax = SqlxVersions()
    nested = False  # only the folder's own entries (formats/__init__.py)
    naming = "{version}_{title}.sql, or .up.sql / .down.sql (sqlx)"

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | None:
        """A file `{i64}_{description}.sql` (`.up.sql`, `.down.sql`): a `-- no-transaction`
        first line is sqlx's alone; the name alone is other tools' too."""
        name = entry.name
        if entry.is_folder or not name.endswith(_SIMPLE):
            return None
        prefix, _, rest = name.partition("_")
        if not rest.endswith(_SIMPLE):
            raise BadInput(
                f"{entry.path.shown}: sqlx skips this file (its name has no `_` before "
                "`.sql`): it would never run",
                fix="Name it {version}_{description}.sql, or move it out of the folder.",
            )
        try:
            version = self.syntax.parse(prefix)
        except ValueError:
            raise BadInput(
                f"{entry.path.shown}: sqlx fails on this folder: the part of the name before "
                f"the first `_` ({prefix!r}) is not an integer version (sqlx: 'error parsing "
                "migration filename; expected integer version prefix')",
                fix="Rename it {version}_{description}.sql (e.g. 20260101120000_add_users.sql), "
                "or move it out of the folder: sqlx reads every *_*.sql file there.",
            ) from None
        down = rest.endswith(_DOWN)
        title = _trim(rest, _DOWN if down else _UP if rest.endswith(_UP) else _SIMPLE)
        marked = not down and _first_line_opts_out(entry.path, folder)
        because = f"sqlx's '{NO_TRANSACTION}' (line 1)" if marked else ""
        return Claim(entry, version, title, primary=not down, because=because)

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        """The up file (simple or `.up.sql`) and its `.down.sql`, if any."""
        up = parts[0] if parts[0].primary else None
        downs = [p for p in parts if not p.primary]
        for extra in downs[1:]:
            folder.problem(extra.entry.path, _second_down(version, downs[0], extra))
        if up is None:
            down = downs[0].entry.path
            folder.problem(
                down,
                BadInput(
                    f"{down.shown}: a down file of version {version} without its up file",
                    fix=f"Add the up file of version {version}, or delete {down.shown}.",
                ),
            )
            return None
        path = up.entry.path
        try:
            text = folder.text(path)
            if starts_with_bom(path):
                raise bom_error(path, "sqlx")
        except BadInput as exc:
            folder.problem(path, exc)
            return None
        section = SqlSection(
            path, text, transaction=not text.startswith(NO_TRANSACTION), one_query=True
        )
        checksum = checksum_of(text, _ignored_chars(folder.app_config(CONFIG_FILE)))
        return Migration(
            version,
            up.title,
            self.name,
            section,
            checksum,
            down_file=downs[0].entry.path if downs else None,
            down_reader=down_section,
        )

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        """`migrations`, or the folder `sqlx.toml` names; signed when the app uses sqlx."""
        sign = _app_sign(app_dir)
        try:
            named = table(read_toml(app_dir / CONFIG_FILE), "migrate").get("migrations-dir")
        except BadInput:
            named = None  # reading the folder reports it
        if isinstance(named, str) and named.strip():
            return [
                FolderCandidate(named, f"named by {CONFIG_FILE} (migrate.migrations-dir)", sign)
            ]
        return [FolderCandidate("migrations", "sqlx's folder", sign)]

    def native_table(self) -> type[NativeTable]:
        """sqlx's `_sqlx_migrations`."""
        from herokumigrate.native.sqlx import SqlxTable

        return SqlxTable

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """One simple file, as `sqlx migrate add` writes."""
        return [NewFile(f"{version}_{slug}.sql", f"-- {title}\n")]


def _first_line_opts_out(path: SourceFile, folder: FolderReader) -> bool:
    """Whether the file starts with `-- no-transaction` (one that cannot be read: no; reading
    it reports why)."""
    try:
        return folder.text(path).startswith(NO_TRANSACTION)
    except BadInput:
        return False


def down_section(path: SourceFile, text: str) -> SqlSection:
    """A `.down.sql` file's section: its `-- no-transaction` is obeyed too, as sqlx does."""
    return SqlSection(path, text, transaction=not text.startswith(NO_TRANSACTION), one_query=True)


def checksum_of(text: str, ignored: frozenset[str] = frozenset()) -> str:
    """sqlx's checksum, in hex: the SHA-384 of the file's text less the ignored characters."""
    if ignored:
        text = "".join(c for c in text if c not in ignored)
    return hashlib.sha384(text.encode("utf-8")).hexdigest()


def description_of(title: str) -> str:
    """The description sqlx stores: the title with each `_` a space."""
    return title.replace("_", " ")


def _trim(rest: str, suffix: str) -> str:
    """`rest` with every trailing `suffix` removed, as Rust's `trim_end_matches`."""
    while rest.endswith(suffix):
        rest = rest[: -len(suffix)]
    return rest


def _ignored_chars(config: Mapping[str, object] | None) -> frozenset[str]:
    chars = table(config, "migrate").get("ignored-chars", [])
    return (
        frozenset(c for c in chars if isinstance(c, str))
        if isinstance(chars, list)
        else frozenset()
    )


def _app_sign(app_dir: Path) -> str:
    """What in the app names sqlx: its Cargo.toml, its config file, its offline query data."""
    if (app_dir / CONFIG_FILE).is_file():
        return f"{CONFIG_FILE} exists"
    if cargo_depends_on(app_dir, "sqlx"):
        return "Cargo.toml depends on sqlx"
    if (app_dir / ".sqlx").is_dir():
        return "the app holds .sqlx/ (sqlx's query data)"
    return ""


def _second_down(version: Version, first: Claim, extra: Claim) -> BadInput:
    return BadInput(
        f"{extra.entry.path.shown}: version {version} has two down files "
        f"({first.entry.path.shown} and {extra.entry.path.shown})",
        fix="Keep one .down.sql per version.",
    )


FORMAT = SqlxFormat()
