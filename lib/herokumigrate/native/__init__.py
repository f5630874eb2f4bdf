"""The tools' own history tables ("native" tables): golang-migrate's and dbmate's
`schema_migrations`, goose's `goose_db_version`. Found (native_tables.py), adopted on first contact
(reconcile.py), created on a fresh database as the tool itself would, and kept in sync in the
same transaction as our history, so the tool still works on the database after us (README,
"Adopting golang-migrate, dbmate or goose").

This module is the contract each tool's table class provides (one module per tool,
`native/<tool>.py`, named by its format's `native_table()`):

- `tool`, `default_table`, `up_command`: the tool's name, its table's default name, and the
  command that applies migrations with the tool (for the fix of a disagreement).
- `recognizes(columns)`: whether a table with these columns (name -> type) is the tool's: a
  table is told by its columns, never by its name. Every tool's check is tried on a table found
  (those whose default name it has first, then in the registry's order), so each must hold
  only for its own tool's tables: dbmate's (a text `version`, no `dirty`) would also take
  Flyway's or Diesel's under a configured name, so a tool with a text `version` column makes
  dbmate's check exclude a column only its own table has.
- `read(conn, name)`: the table as it is (a new object: nothing is filled in later): what it
  says is applied (`applied()`, or only `newest()` for a one-row table), and a failure state
  the tool itself refuses to migrate from (`failure()`: golang-migrate's dirty row, Prisma's
  unfinished row, sqlx's `success = false`) with the version it marks (`in_flight()`).
- `checksum_of(version)`: the checksum the table keeps for an applied version, spelled as the
  format's `Migration.checksum` (sqlx's SHA-384), for a tool that keeps one; the run refuses a
  file that differs from it as it refuses an edited applied file (default: None, none kept).
- `edited(migration)`: whether an applied file differs from what the table keeps of it
  (default: `checksum_of` differs from the migration's checksum; Prisma also accepts the
  file's CRLF<->LF variants).
- `out_of_order_refusal()`: why the tool itself refuses pending versions older than the
  newest applied one, and the fix (Flyway, unless its outOfOrder is set); None (the default):
  they are applied, with a warning.
- `missing_note`: what the tool itself does with a database that has migrations the files do
  not (sqlx: `VersionMissing`), added to the run's warning about them (default: nothing).
- `create(conn)`: create it with the tool's own DDL (and first rows), in the caller's
  transaction.
- `follow(conn, change)`: write what one of our transactions changes (`NativeChange`), in that
  transaction: the migrations it applied (each with its duration, and the migration itself for
  checksums, descriptions and scripts), those it reverted, and the migration left part-way where
  the tool marks one; `change.applied` is everything applied once it commits, for tables that
  keep one row (golang-migrate) or are rewritten to match (dbmate, goose); `change.rechecked`
  the applied migrations whose edit `allow_changed` accepted, for a table that keeps checksums.
- `resolve(conn, version, outcome)`: settle the failure `failure()` reports for `version` as the
  tool's own repair command does (`prisma migrate resolve --applied/--rolled-back`, `flyway
  repair`), for `heroku-migrate resolve`; a table with no failure state keeps the default
  (nothing to settle).
- `lock_keys(scope)`: the tool's session advisory lock keys, held together with ours so the
  tool and this runner exclude each other (golang-migrate's two; Prisma's 72707369; sqlx's
  derived from the database name). A tool that takes its key per transaction (Flyway's
  `pg_try_advisory_xact_lock`) gives it here too: held as a session lock for the whole run, it
  keeps the tool's transactions out (PostgreSQL's advisory locks of both kinds conflict).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

from psycopg import sql

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import psycopg
    from typing_extensions import Self

    from herokumigrate.lock import LockScope
    from herokumigrate.migration import Migration
    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version

    Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class NativeName:
    """Where a tool's table is: `table` in `schema`, or found through the search path."""

    table: str
    schema: str | None = None

    @property
    def ident(self) -> sql.Identifier:
        """The table, quoted for SQL."""
        return (
            sql.Identifier(self.table)
            if self.schema is None
            else sql.Identifier(self.schema, self.table)
        )

    @property
    def shown(self) -> str:
        """The name as messages show it."""
        return self.table if self.schema is None else f"{self.schema}.{self.table}"

    def regclass_text(self) -> str:
        """The name as `to_regclass` reads it (each part double-quoted)."""
        parts = [self.table] if self.schema is None else [self.schema, self.table]
        return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


class AppliedMigration(NamedTuple):
    """A migration one of our transactions applied (or `force` marked), and its duration."""

    migration: Migration
    duration_ms: float


class NativeChange(NamedTuple):
    """What one of our transactions changes, for the tool's table to follow.

    `applied` is what our history holds as applied once it commits (each version spelled as
    the files write it, where a file has it); `recorded` the migrations it applies, in order;
    `removed` those it reverts or forgets; `in_flight` a migration it leaves part-way;
    `rechecked` applied migrations whose edited file is accepted (their new checksum);
    `flying` the migration `in_flight` names, when the run has its file (for a table whose
    mark of a migration in flight keeps its checksum: Prisma's)."""

    applied: frozenset[Version]
    recorded: Sequence[AppliedMigration] = ()
    removed: Sequence[Version] = ()
    in_flight: Version | None = None
    rechecked: Sequence[Migration] = ()
    flying: Migration | None = None


# How `heroku-migrate resolve` settles a failed migration: it is applied (its effects are in
# the database, fixed by hand) or rolled back (none of them are).
Resolution = Literal["applied", "rolled-back"]


class NativeFailure(NamedTuple):
    """A failure the tool's table records, which the tool itself refuses to migrate from."""

    version: Version | None
    message: str
    fix: str


class NativeTable:
    """A tool's own history table, as read (see the module's docstring for the contract)."""

    tool: ClassVar[ToolName]
    default_table: ClassVar[str]
    up_command: ClassVar[str]
    missing_note: ClassVar[str] = ""

    def __init__(self, name: NativeName | None = None) -> None:
        self.name = name if name is not None else NativeName(self.default_table)

    @property
    def table(self) -> str:
        """The table's name as messages show it."""
        return self.name.shown

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        """True when a table with these (column -> type) is this tool's."""
        raise NotImplementedError

    @classmethod
    def read(cls, conn: Conn, name: NativeName) -> Self:
        """The table `name` as it is now."""
        raise NotImplementedError

    @classmethod
    def lock_keys(cls, scope: LockScope) -> list[int]:
        """The tool's session advisory lock keys for this database (none by default)."""
        del scope
        return []

    def applied(self) -> frozenset[Version] | None:
        """The versions the table says are applied; None when it only knows the newest."""
        raise NotImplementedError

    def newest(self) -> Version | None:
        """The newest version the table says is applied."""
        applied = self.applied()
        return max(applied) if applied else None

    def state_text(self) -> str:
        """What the table says, for messages."""
        applied = self.applied() or frozenset()
        if not applied:
            return "nothing applied"
        return f"{len(applied)} applied, newest {max(applied)}"

    def agrees(self, applied: set[Version]) -> bool:
        """True when the table says exactly `applied` (our applied versions) is applied."""
        found = self.applied()
        return found is not None and found == frozenset(applied)

    def says_applied(self, version: Version) -> bool:
        """True when the table says `version` is applied."""
        applied = self.applied()
        return applied is not None and version in applied

    def checksum_of(self, version: Version) -> str | None:
        """The checksum the table keeps for `version` (None: it keeps none)."""
        del version
        return None

    def edited(self, migration: Migration) -> bool:
        """Whether `migration`, applied, differs from what the table keeps of it."""
        kept = self.checksum_of(migration.version)
        return kept is not None and kept != migration.checksum

    def out_of_order_refusal(self) -> NativeFailure | None:
        """Why pending versions older than the newest applied one are refused (None: they
        are applied, with a warning)."""
        return None

    def failure(self) -> NativeFailure | None:
        """A failure the table records (golang-migrate's dirty row), if any."""
        return None

    def in_flight(self) -> Version | None:
        """The version the table marks as being applied (golang-migrate's dirty row)."""
        return None

    def resolve(self, conn: Conn, version: Version, outcome: Resolution) -> None:
        """Settle the failure recorded for `version` as the tool's repair does (caller's
        transaction, under our lock)."""
        del conn, version, outcome
        raise NotImplementedError(f"{self.tool}'s table records no failure to resolve")

    def create(self, conn: Conn) -> None:
        """Create the table as the tool does on a fresh database (caller's transaction)."""
        raise NotImplementedError

    def follow(self, conn: Conn, change: NativeChange) -> None:
        """Write `change` into the table (caller's transaction)."""
        raise NotImplementedError

    def create_schema(self, conn: Conn) -> None:
        """The table's schema, when it is named and missing (before `create`)."""
        if self.name.schema is not None:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.name.schema))
            )


class VersionSetTable(NativeTable):
    """A tool's table that lists every applied version (dbmate's, goose's, Diesel's), read as
    the set of them."""

    def __init__(
        self, versions: frozenset[Version] = frozenset(), name: NativeName | None = None
    ) -> None:
        super().__init__(name)
        self.versions = versions

    def applied(self) -> frozenset[Version] | None:
        return self.versions
