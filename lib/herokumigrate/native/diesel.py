"""Diesel's table: `__diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY, run_on
TIMESTAMP)`, one row per applied migration holding its version string (dashes removed), as
diesel_migrations' harness writes it; a revert deletes the row. No checksum, no failure state,
no lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from psycopg import sql

from herokumigrate.formats.diesel import DieselVersions
from herokumigrate.native import NativeName, VersionSetTable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from herokumigrate.native import Conn, NativeChange
    from herokumigrate.tools import ToolName

_SYNTAX = DieselVersions()


class DieselTable(VersionSetTable):
    """Diesel's `__diesel_schema_migrations` (see the module's docstring)."""

    tool: ClassVar[ToolName] = "diesel"
    default_table: ClassVar[str] = "__diesel_schema_migrations"
    up_command: ClassVar[str] = "diesel migration run"

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return "run_on" in columns and columns.get("version", "").startswith(
            ("character varying", "text")
        )

    @classmethod
    def read(cls, conn: Conn, name: NativeName) -> DieselTable:
        found = conn.execute(sql.SQL("SELECT version FROM {}").format(name.ident)).fetchall()
        return cls(frozenset(_SYNTAX.parse(str(v)) for (v,) in found), name)

    def create(self, conn: Conn) -> None:
        # diesel's setup_migration_table.sql.
        self.create_schema(conn)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (version VARCHAR(50) PRIMARY KEY NOT NULL,"
                " run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            ).format(self.name.ident)
        )

    def follow(self, conn: Conn, change: NativeChange) -> None:
        # As Diesel's harness: a row per migration applied, deleted when it is reverted; a row
        # it has already is left as it is (adopted). It marks nothing while one runs.
        table = self.name.ident
        if change.removed:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE version = ANY(%s::text[])").format(table),
                ([v.canonical for v in change.removed],),
            )
        versions = [a.migration.version.canonical for a in change.recorded]
        if versions:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (version) SELECT v FROM pg_catalog.unnest(%s::text[])"
                    " WITH ORDINALITY AS u(v, n)"
                    " WHERE NOT EXISTS (SELECT FROM {} AS t WHERE t.version = u.v) ORDER BY n"
                ).format(table, table),
                (versions,),
            )
