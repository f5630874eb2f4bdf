"""Migration formats: how each tool's migrations are found in the migrations folder, named,
ordered and read. This module is the seam every format plugs into, and its registry.

Adding a format (a tool whose files and table we read as the tool does) takes exactly:

1. its name in `tools.ToolName` (the registry: the order is the order formats are tried);
2. one module, `formats/<name>.py` (`-` written `_`), whose `FORMAT` provides `MigrationFormat`;
3. one module, `native/<name>.py`, whose class provides `native.NativeTable` (the tool's own
   history table), returned by the format's `native_table()`.

Nothing else changes: the folder is read (`source.load_migrations`), planned, applied,
reverted and recorded, and the tool's table found, adopted, created and kept in sync, through
these two contracts. (A tool whose own environment variable names its table, as dbmate's
DBMATE_MIGRATIONS_TABLE, also lists it in `config.TOOL_TABLE_VARS`.)

What `MigrationFormat` must provide:

- `name`: its `ToolName`.
- `syntax` (`versions.VersionSyntax`): how the version text the tool writes becomes a
  `Version`: its identity (equal keys = the same migration), its ordering key (a tuple
  comparable within the syntax: integers for golang-migrate, dbmate and goose; numeric dotted
  parts for Flyway; the string for Diesel; an ICU-like key then the name for Prisma), the
  canonical text our history stores, and the text as written. A migration the tool runs with no
  version (Flyway's repeatable `R__` files) gets a key that sorts after every versioned one
  (say `(1, description)` against `(0, *parts)`) and `number` None; its migration is marked
  `repeatable` (run again when its checksum changes, never reverted by `down`). A baseline
  migration (Flyway's `B` files: run on an empty history instead of the versions it stands for)
  is marked `baseline`, its key just after the version it stands for. Migrations of two syntaxes
  never share a folder (source.py refuses it). `syntax.column_type` says how our history table
  is created for it: `bigint` for integers (what every release before this one created, and
  what `heroku rollback` to an old slug reads), `text` otherwise.
- `naming`: how its migrations are named, for the fix of a file no format reads.
- `nested`: whether its tool also reads the files of the folder's subfolders, at any depth
  (Flyway scans its locations recursively): those files are offered to it (to nested formats
  only) as entries named by their path in the folder (`2024/V3__x.sql`); one it neither claims
  nor fails on is skipped.
- `claim(entry, folder)`: whether an entry of the folder (a file, or a subfolder for tools that
  keep one folder per migration: `<name>/migration.sql`, `<name>/up.sql` + `down.sql` +
  `metadata.toml`) is one of its migrations or a part of one. A `Claim` gives the version from
  the name, the title, and whether the entry is the migration's primary part (the one that
  owns the version: golang-migrate's `.up.sql`, not its `.down.sql`; Flyway's `V…sql`, not its
  `.sql.conf`). A format that shares a naming with another tells its files apart by their
  content (`folder.text(entry)`): a claim's `because` names the marker that only this tool
  explains (dbmate's `-- migrate:up`, sqlx's `-- no-transaction` first line, a folder holding
  Diesel's `up.sql`), empty when the name alone fits; it answers `Unmarked` when the name fits
  but the content lacks its marker. None: not its entry. BadInput: its entry, but malformed (a
  version out of range; a name its tool fails on). Several formats may claim one entry: whose
  the whole folder is, is decided once (formatchoice.py: the `tool` setting, the markers, the
  app's files through `folders()`' `app_sign`, the names), and only the chosen tools' claims,
  errors and `Unmarked` answers count. A name the chosen tools do not claim is an error for a
  `.sql` file or another tool's migration, ignored otherwise. A format reads a subfolder's
  files through `source.list_folder` (names and symlinks checked); the build's manifest
  covers subfolders. Tools whose files may share a folder are grouped in `tools.FOLDER_GROUPS`;
  any other tool's folder holds its migrations only.
- `assemble(version, parts, folder)`: the `Migration` from its claimed parts (the primary one
  first, when one claims the version; a format reports parts without one): its up and down
  sections
  (`sections.SqlSection`, which carry the transaction opt-out, and `one_query` for a tool
  that sends a file as one simple query), its checksum (the tool's own, where its table keeps
  one: sqlx's SHA-384). A down file read on first use (`Migration.down_file`) is made a section
  by `Migration.down_reader` when its content carries options (sqlx's `-- no-transaction`).
  Problems are reported with `folder.problem` (the migration is then left out: None).
- `folders(app_dir)`: where its tool keeps migrations in an app (`FolderCandidate`s: the
  conventional folders, and one the tool's own config file names, e.g. `diesel.toml`), for an
  app that sets no `path` (locations.py chooses among every format's), each with what in the
  app names the tool (`app_sign`), if anything.
- `native_table()`: its native-table class (imported on call: reading files needs no driver).
- `new_files(version, slug, title)`: the files `heroku-migrate new` writes.

Execution stays the runner's: statements are split and run by `sections`/`runner`, in one
transaction per release or per migration, a statement PostgreSQL refuses in a transaction
alone. A tool that sends a file as one simple query (Prisma, sqlx, Diesel) is read into the
same statements, and marks its sections `one_query`: in our transaction its statements run as
in the tool's; a section its tool runs outside a transaction is sent whole (plan.py), so that
PostgreSQL runs several statements in it as the tool has them run, in one implicit
transaction, all or none (`validate` refuses one that holds a statement PostgreSQL refuses
there, as the tool would fail on it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple, Protocol

from herokumigrate.tools import TOOL_NAMES, ToolName

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from herokumigrate.errors import BadInput
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable
    from herokumigrate.sections import SourceFile
    from herokumigrate.versions import Version, VersionSyntax


class NewFile(NamedTuple):
    """A file `heroku-migrate new` writes: its name in the migrations folder and its content."""

    name: str
    content: str


class FolderCandidate(NamedTuple):
    """A folder a tool keeps its migrations in, relative to the app root, and why it is one
    (`"Prisma Migrate's folder"`, `"named by diesel.toml"`), for messages. `app_sign` says
    what in the app's own files names the tool (`"Cargo.toml depends on sqlx"`); empty when
    the folder is only the tool's convention. It decides whose a folder's files are when their
    names fit two tools and their content does not tell (formatchoice.py)."""

    path: str
    because: str
    app_sign: str = ""


class FolderEntry(NamedTuple):
    """A file or subfolder of the migrations folder (dotfiles are never listed)."""

    path: SourceFile
    is_folder: bool

    @property
    def name(self) -> str:
        """Its name within the migrations folder."""
        return self.path.name


class Claim(NamedTuple):
    """An entry a format reads as one of its migrations, or a part of one."""

    entry: FolderEntry
    version: Version
    title: str
    primary: bool = True  # the part that owns the version (an up file, a migration's folder)
    # The marker in its content that only this tool explains (`dbmate (line 1)`); empty when
    # the name alone fits, as another tool's may (formatchoice.py decides the folder's tools).
    because: str = ""


class Unmarked(NamedTuple):
    """The entry's name fits the format but its content lacks the format's marker."""

    marker: str  # what starts the format's up section: `'-- migrate:up'`
    tool: ToolName


class FolderReader(Protocol):
    """What a format may ask of the folder being read (source.py's `Folder`)."""

    app_root: Path | None  # the app's root: what a subfolder's symlinks must stay inside

    def text(self, path: SourceFile) -> str:
        """The file's text, read once and checked (BadInput: unreadable, binary, not UTF-8)."""

    def owner(self, version: Version) -> SourceFile | None:
        """The primary entry that owns `version`, whatever its format; None when none does."""

    def problem(self, path: SourceFile, error: BadInput) -> None:
        """Report a problem of a file; every problem of the folder is reported at once."""

    def app_config(self, name: str) -> Mapping[str, object] | None:
        """The app's TOML file `name` at its root (`sqlx.toml`), parsed once per reading of the
        folder; None when there is none. One that cannot be parsed is reported once."""


class MigrationFormat(Protocol):
    """A format: see the module's docstring for what each member must do."""

    @property
    def name(self) -> ToolName:
        """The format's (and its tool's) name."""

    @property
    def syntax(self) -> VersionSyntax:
        """How its versions are written and compared."""

    @property
    def nested(self) -> bool:
        """Whether the files of the folder's subfolders are its entries too."""

    @property
    def naming(self) -> str:
        """How its migrations are named: `{version}_{title}.sql with '-- migrate:up' (dbmate)`."""

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | Unmarked | None:
        """Whether `entry` is (a part of) one of its migrations."""

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        """The migration of `version` from its parts; None after reporting a problem."""

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        """Where its tool keeps migrations in the app at `app_dir`."""

    def native_table(self) -> type[NativeTable]:
        """The class of the tool's own history table."""

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """The files of a new, empty migration."""


def format_named(name: ToolName) -> MigrationFormat:
    """The format of a registered name (its module is imported on first use)."""
    module = importlib.import_module(f"herokumigrate.formats.{name.replace('-', '_')}")
    found: MigrationFormat = module.FORMAT
    return found


def registered_formats() -> tuple[MigrationFormat, ...]:
    """Every format, in the order they are tried."""
    return tuple(format_named(name) for name in TOOL_NAMES)


def native_table_classes() -> tuple[type[NativeTable], ...]:
    """Every tool's table class, in the order a found table is recognized by its columns."""
    return tuple(fmt.native_table() for fmt in registered_formats())


def syntax_of(migrations: list[Migration]) -> VersionSyntax:
    """The version syntax of a folder's migrations (they share one); integers for none."""
    if migrations:
        return format_named(migrations[0].format).syntax
    from herokumigrate.versions import INTEGER

    return INTEGER


def new_migration_files(name: ToolName, version: str, slug: str, title: str) -> list[NewFile]:
    """The files `heroku-migrate new TITLE --format NAME` writes, for `version` (digits) and
    `slug` (the title reduced to `[a-z0-9_]`)."""
    return format_named(name).new_files(version, slug, title)
