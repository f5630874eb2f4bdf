"""sqlx's table: `_sqlx_migrations`, one row per applied migration, as sqlx-postgres writes it
(migrate.rs): `version bigint` primary key, the description (`_` as spaces), `success`, the
SHA-384 `checksum` as bytea, and `execution_time` in nanoseconds. sqlx refuses to migrate while
a row has `success = false` (`Dirty`), when an applied version has no file (`VersionMissing`,
unless the app sets `ignore_missing`) and when an applied file changed (`VersionMismatch`).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from psycopg import sql

from herokumigrate.errors import BadInput
from herokumigrate.formats.sqlx import SqlxVersions, checksum_of, description_of
from herokumigrate.native import NativeFailure, NativeName, NativeTable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from herokumigrate.lock import LockScope
    from herokumigrate.migration import Migration
    from herokumigrate.native import Conn, NativeChange, Resolution
    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version

# sqlx-postgres's generate_lock_id: this constant times the CRC-32 (IEEE) of current_database().
_LOCK_FACTOR = 0x3D32AD9E
_NS_PER_MS = 1_000_000
_SYNTAX = SqlxVersions()


class SqlxRow(NamedTuple):
    """What sqlx keeps of an applied migration that matters to a run."""

    checksum: str  # hex
    success: bool


class SqlxTable(NativeTable):
    """sqlx's `_sqlx_migrations` (see the module's docstring)."""

    tool: ClassVar[ToolName] = "sqlx"
    default_table: ClassVar[str] = "_sqlx_migrations"
    up_command: ClassVar[str] = "sqlx migrate run"
    missing_note: ClassVar[str] = (
        "sqlx's own migrate!().run() refuses such a database (VersionMissing) unless the app "
        "sets ignore_missing"
    )

    def __init__(
        self, found: Mapping[Version, SqlxRow] | None = None, name: NativeName | None = None
    ) -> None:
        super().__init__(name)
        self.rows = dict(found or {})

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return (
            columns.get("version") == "bigint"
            and columns.get("checksum") == "bytea"
            and columns.get("success") == "boolean"
        )

    @classmethod
    def read(cls, conn: Conn, name: NativeName) -> SqlxTable:
        query = sql.SQL("SELECT version, pg_catalog.encode(checksum, 'hex'), success FROM {}")
        found = conn.execute(query.format(name.ident)).fetchall()
        rows = {_SYNTAX.parse(str(v)): SqlxRow(str(c), bool(ok)) for v, c, ok in found}
        return cls(rows, name)

    @classmethod
    def lock_keys(cls, scope: LockScope) -> list[int]:
        """The key sqlx's library takes at `migrate!().run()` (its CLI takes none)."""
        return [_LOCK_FACTOR * zlib.crc32(scope.database.encode("utf-8"))]

    def applied(self) -> frozenset[Version] | None:
        return frozenset(v for v, row in self.rows.items() if row.success)

    def checksum_of(self, version: Version) -> str | None:
        row = self.rows.get(version)
        return row.checksum if row is not None else None

    def failure(self) -> NativeFailure | None:
        failed = sorted(v for v, row in self.rows.items() if not row.success)
        if not failed:
            return None
        version = failed[0]
        return NativeFailure(
            version,
            f"{self.table} (sqlx) marks migration {version} as failed (success = false): sqlx "
            f"refuses to migrate from there ('migration {version} is partially applied')",
            "Repair the schema by hand, then run `heroku-migrate resolve "
            f"{version} --applied` if its changes are in the database, or `--rolled-back` if "
            "none are (it is then applied again).",
        )

    def resolve(self, conn: Conn, version: Version, outcome: Resolution) -> None:
        """Applied: the row is marked a success; rolled back: it is deleted, as sqlx's own
        advice says, so that the migration runs again."""
        if outcome == "applied":
            query = sql.SQL("UPDATE {} SET success = true WHERE version = %s AND NOT success")
        else:
            query = sql.SQL("DELETE FROM {} WHERE version = %s AND NOT success")
        done = conn.execute(query.format(self.name.ident), (version.number,))
        if done.rowcount == 0:
            raise BadInput(
                f"{self.table} (sqlx) has no failed row for version {version}",
                fix="Run `heroku-migrate status` to see which migration, if any, failed.",
            )

    def create(self, conn: Conn) -> None:
        # sqlx-postgres's ensure_migrations_table, column for column.
        self.create_schema(conn)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (version BIGINT PRIMARY KEY, description TEXT NOT NULL,"
                " installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,"
                " checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"
            ).format(self.name.ident)
        )

    def follow(self, conn: Conn, change: NativeChange) -> None:
        # As sqlx: a row per migration applied (success, its checksum and description, its
        # time in ns), deleted when it is reverted; a row it has already is left as it is
        # (adopted). It marks nothing while a migration runs.
        table = self.name.ident
        if change.removed:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE version = ANY(%s::bigint[])").format(table),
                ([v.number for v in change.removed],),
            )
        for applied in change.recorded:
            m = applied.migration
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (version, description, success, checksum, execution_time)"
                    " SELECT %s, %s, TRUE, %s, %s"
                    " WHERE NOT EXISTS (SELECT FROM {} WHERE version = %s)"
                ).format(table, table),
                (
                    m.version.number,
                    description_of(m.name),
                    _checksum(m),
                    max(1, round(applied.duration_ms * _NS_PER_MS)),
                    m.version.number,
                ),
            )
        for m in change.rechecked:
            conn.execute(
                sql.SQL("UPDATE {} SET checksum = %s WHERE version = %s").format(table),
                (_checksum(m), m.version.number),
            )


def _checksum(migration: Migration) -> bytes:
    """sqlx's checksum of a migration: the one its format computed, or that of its file."""
    if migration.format == "sqlx":
        return bytes.fromhex(migration.checksum)
    return bytes.fromhex(checksum_of(migration.up.text))
