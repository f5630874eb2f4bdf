"""Diesel (Rust): a folder per migration, `{version}_{name}/` holding `up.sql`, an optional
`down.sql` and an optional `metadata.toml`, read as diesel_migrations reads them
(`FileBasedMigrations`, `embed_migrations!`, migrations_internals):

- every subfolder that is not empty (a dotfile counts) is a migration and must hold `up.sql`
  (dotfiles aside), or Diesel fails on the whole folder; files beside them are skipped;
- the version is the name before its first `_` with every `-` removed, kept as a string and
  ordered as one: `2024-01-01-120000_x` is `20240101120000`, `2024-01-01-120000-0000_x`
  (what the current CLI writes) is `202401011200000000`; `00000000000000_diesel_initial_setup`
  is the set-up migration `diesel setup` writes, a migration like the others;
- `metadata.toml`: without it the migration runs in a transaction; with it, as its
  `run_in_transaction` says, false when the key is absent (serde's default for a bool); a file
  that is not valid TOML is ignored (Diesel's `unwrap_or_default`: in a transaction);
- each of `up.sql` and `down.sql` is sent as one simple query (`batch_execute`); the CLI
  refuses an `up.sql` of no bytes at all ("Attempted to run an empty migration").

`diesel.toml`'s `[migrations_directory] dir` names the folder, relative to the app root.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
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
from herokumigrate.migration import Migration, sha256_of
from herokumigrate.sections import SourceFile, SqlSection
from herokumigrate.tools import ToolName
from herokumigrate.versions import Version

if TYPE_CHECKING:
    from herokumigrate.formats import FolderEntry, FolderReader
    from herokumigrate.native import NativeTable

CONFIG_FILE = "diesel.toml"
METADATA = "metadata.toml"
UP, DOWN = "up.sql", "down.sql"
# __diesel_schema_migrations.version is VARCHAR(50).
MAX_VERSION_CHARS = 50


class DieselVersions:
    """The name before its first `_`, dashes removed, compared as a string."""

    name = "text"
    column_type: Literal["bigint", "text"] = "text"

    def parse(self, written: str) -> Version:
        """`2024-01-01-120000` -> Version(("20240101120000",), "20240101120000", written)."""
        canonical = written.replace("-", "")
        if len(canonical) > MAX_VERSION_CHARS:
            raise ValueError(
                f"version {canonical!r} is {len(canonical)} characters long; Diesel's table "
                f"keeps at most {MAX_VERSION_CHARS}"
            )
        return Version((canonical,), canonical, written)


class DieselFormat:
    """The Diesel format (see the module's docstring)."""

    name: ToolName = "diesel"
    syntax = DieselVersions()
    nested = False  # only the folder's own entries (formats/__init__.py)
    naming = "a folder {version}_{title}/ holding up.sql (Diesel)"

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | None:
        """A subfolder holding `up.sql`; BadInput for one holding other files only (Diesel
        fails on it), None for an empty one (Diesel skips it)."""
        if not entry.is_folder:
            return None
        from herokumigrate.source import list_folder  # the folder's reader: below formats

        try:
            if not os.listdir(entry.path.full):
                return None
        except OSError as exc:
            raise BadInput(
                f"{entry.name}/: cannot be listed ({exc.strerror})", fix=f"chmod a+rx {entry.name}"
            ) from None
        listed = list_folder(Path(entry.path.full), folder.app_root)
        files = {e.name for e in listed if not e.is_folder}
        if UP not in files:
            raise BadInput(
                f"{entry.path.shown}/: holds no {UP}; Diesel fails on such a folder "
                "(UnknownMigrationFormat)",
                fix=f"Add its {UP}, or move the folder out of the migrations folder.",
            )
        written, _, title = entry.name.partition("_")
        try:
            version = self.syntax.parse(written)
        except ValueError as exc:
            raise BadInput(
                f"{entry.path.shown}/: {exc}", fix="Shorten the folder's version."
            ) from None
        return Claim(entry, version, title, because=f"a folder holding {UP} (Diesel)")

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        """Its `up.sql`, `down.sql` (read when needed) and `metadata.toml`."""
        claim = parts[0]
        base = claim.entry.name
        up_path = _file(claim, UP)
        try:
            text = folder.text(up_path)
            if starts_with_bom(up_path):
                raise bom_error(up_path, "Diesel")
            if not text:
                raise _empty_up(up_path, base)
            in_transaction = _run_in_transaction(claim, folder)
        except BadInput as exc:
            folder.problem(up_path, exc)
            return None
        down_path = _file(claim, DOWN)
        down = down_path if os.path.isfile(down_path.full) else None
        up = SqlSection(up_path, text, transaction=in_transaction, one_query=True)
        return Migration(
            version,
            claim.title,
            self.name,
            up,
            sha256_of(text, 0, len(text)),
            down_file=down,
            down_reader=partial(_section, transaction=in_transaction),
        )

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        """`migrations` (and, in an app whose Cargo.toml depends on Diesel, `src/migrations`,
        where `embed_migrations!()` looks first), or the folder `diesel.toml` names."""
        sign = "Cargo.toml depends on diesel" if cargo_depends_on(app_dir, "diesel") else ""
        try:
            named = table(read_toml(app_dir / CONFIG_FILE), "migrations_directory").get("dir")
        except BadInput:
            named = None
        if isinstance(named, str) and named.strip():
            because = f"named by {CONFIG_FILE} ([migrations_directory] dir)"
            return [FolderCandidate(named, because, f"{CONFIG_FILE} names it")]
        found = [FolderCandidate("migrations", "Diesel's folder", sign)]
        if sign:  # a generic name: only in an app that uses Diesel
            because = "where Diesel's embed_migrations!() looks first"
            found.append(FolderCandidate("src/migrations", because, sign))
        return found

    def native_table(self) -> type[NativeTable]:
        """Diesel's `__diesel_schema_migrations`."""
        from herokumigrate.native.diesel import DieselTable

        return DieselTable

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """A folder as `diesel migration generate` writes it (`YYYY-MM-DD-HHMMSS-0000`)."""
        stamp = f"{version[:4]}-{version[4:6]}-{version[6:8]}-{version[8:14]}-0000"
        return [
            NewFile(f"{stamp}_{slug}/{UP}", f"-- {title}\n"),
            NewFile(f"{stamp}_{slug}/{DOWN}", f"-- undo: {title}\n"),
        ]


def _file(claim: Claim, name: str) -> SourceFile:
    """A file of the migration's folder, named `folder/file` in messages."""
    return SourceFile(os.path.join(claim.entry.path.full, name), f"{claim.entry.name}/{name}")


def _section(path: SourceFile, text: str, *, transaction: bool) -> SqlSection:
    return SqlSection(path, text, transaction=transaction, one_query=True)


def _run_in_transaction(claim: Claim, folder: FolderReader) -> bool:
    """As Diesel reads `metadata.toml`: absent or not valid TOML, true; else its
    `run_in_transaction`, false when the key is missing (a wrong type: the default, true)."""
    try:
        doc = read_toml(Path(claim.entry.path.full, METADATA))
    except BadInput:
        return True  # Diesel ignores a file it cannot read
    if doc is None:
        return True
    value = doc.get("run_in_transaction", False)
    return value if isinstance(value, bool) else True


def _empty_up(path: SourceFile, name: str) -> BadInput:
    return BadInput(
        f"{path.shown}: is empty; Diesel refuses to run it ('Failed to run {name} with: "
        "Attempted to run an empty migration.')",
        fix=f"Write the migration's SQL in {path.shown} (a comment such as `-- nothing to do` "
        "is enough for Diesel), or delete the folder.",
    )


FORMAT = DieselFormat()
