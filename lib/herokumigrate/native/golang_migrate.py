"""golang-migrate's table: one row, `schema_migrations (version bigint, dirty boolean)`."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from psycopg import sql

from herokumigrate.lock import golang_migrate_lock_id
from herokumigrate.native import NativeFailure, NativeName, NativeTable
from herokumigrate.versions import INTEGER

if TYPE_CHECKING:
    from collections.abc import Mapping

    from herokumigrate.lock import LockScope
    from herokumigrate.native import Conn, NativeChange
    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version


class GolangMigrateTable(NativeTable):
    """golang-migrate's one-row `schema_migrations (version bigint, dirty boolean)`: the newest
    version applied, dirty while (or after a failure while) a migration is applied."""

    tool: ClassVar[ToolName] = "golang-migrate"
    default_table: ClassVar[str] = "schema_migrations"
    up_command: ClassVar[str] = "migrate up"

    def __init__(
        self, version: Version | None = None, dirty: bool = False, name: NativeName | None = None
    ) -> None:
        super().__init__(name)
        self.version = version
        self.dirty = dirty

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return columns.get("version") == "bigint" and columns.get("dirty") == "boolean"

    @classmethod
    def read(cls, conn: Conn, name: NativeName) -> GolangMigrateTable:
        row = conn.execute(sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(name.ident))
        found = row.fetchone()
        if found is None:
            return cls(name=name)
        number, dirty = found[0], bool(found[1])
        # golang-migrate writes -1 ("nil version") for a failed first migration's down.
        if isinstance(number, int) and number >= 0:
            return cls(INTEGER.of(number), dirty, name)
        return cls(INTEGER.of(-1) if dirty else None, dirty, name)

    @classmethod
    def lock_keys(cls, scope: LockScope) -> list[int]:
        """Its library's key (`current_database()`) and its CLI's (the URL's path, `/dbname`),
        for its table in the server's `current_schema()`, as `database/postgres` computes them;
        none without a current schema (golang-migrate refuses to start: ErrNoSchema)."""
        schema = scope.table.schema if scope.table.schema is not None else scope.schema
        if schema is None:
            return []
        keys = [golang_migrate_lock_id(scope.database, schema, scope.table.name)]
        # An empty path makes golang-migrate fall back to current_database(): the key above.
        if scope.url_path:
            keys.append(golang_migrate_lock_id(scope.url_path, schema, scope.table.name))
        return keys

    def applied(self) -> frozenset[Version] | None:
        return None

    def newest(self) -> Version | None:
        number = self.version.number if self.version is not None else None
        return self.version if number is not None and number >= 0 else None

    def state_text(self) -> str:
        if self.version is None:
            return "nothing applied"
        return f"version {self.version}" + (" (dirty)" if self.dirty else "")

    def agrees(self, applied: set[Version]) -> bool:
        return not self.dirty and self.newest() == (max(applied) if applied else None)

    def says_applied(self, version: Version) -> bool:
        newest = self.newest()
        return newest is not None and version <= newest

    def in_flight(self) -> Version | None:
        return self.version if self.dirty else None

    def failure(self) -> NativeFailure | None:
        if not self.dirty:
            return None
        return NativeFailure(
            self.version,
            f"{self.table} (golang-migrate) is dirty at version {self.version}: "
            "a migration failed half-way under golang-migrate",
            "Repair the schema by hand, then mark the last good version with "
            "`heroku-migrate force VERSION` (it clears the dirty flag).",
        )

    def create(self, conn: Conn) -> None:
        self.create_schema(conn)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (version bigint not null primary key, dirty boolean not null)"
            ).format(self.name.ident)
        )

    def follow(self, conn: Conn, change: NativeChange) -> None:
        # As golang-migrate's SetVersion: empty the table, write one row; dirty while a
        # migration is being applied (set before it runs, cleared after), clean otherwise.
        conn.execute(sql.SQL("TRUNCATE {}").format(self.name.ident))
        flight = change.in_flight
        if flight is None and not change.applied:
            return
        version = max(change.applied) if flight is None else flight
        conn.execute(
            sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, %s)").format(self.name.ident),
            (version.number, flight is not None),
        )
