"""dbmate's table: `schema_migrations (version varchar)`, one row per applied migration, the
version as the file name writes it ("001")."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from psycopg import sql

from herokumigrate.native import NativeName, VersionSetTable
from herokumigrate.versions import INTEGER

if TYPE_CHECKING:
    from collections.abc import Mapping

    from herokumigrate.native import Conn, NativeChange
    from herokumigrate.tools import ToolName


class DbmateTable(VersionSetTable):
    """dbmate's `schema_migrations (version varchar)`, one row per applied migration."""

    tool: ClassVar[ToolName] = "dbmate"
    default_table: ClassVar[str] = "schema_migrations"
    up_command: ClassVar[str] = "dbmate up"

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        # Diesel's and Flyway's tables also have a text `version`; only they have `run_on`
        # and `installed_rank`.
        return (
            "dirty" not in columns
            and "run_on" not in columns
            and "installed_rank" not in columns
            and columns.get("version", "").startswith(("character varying", "text"))
        )

    @classmethod
    def read(cls, conn: Conn, name: NativeName) -> DbmateTable:
        query = sql.SQL("SELECT version::text FROM {}").format(name.ident)
        versions = set()
        for (text,) in conn.execute(query).fetchall():
            try:  # other tools' rows (not digits) are not ours to read
                versions.add(INTEGER.parse(str(text).strip()))
            except ValueError:
                continue
        return cls(frozenset(versions), name)

    def create(self, conn: Conn) -> None:
        self.create_schema(conn)
        conn.execute(
            sql.SQL("CREATE TABLE {} (version varchar primary key)").format(self.name.ident)
        )

    def follow(self, conn: Conn, change: NativeChange) -> None:
        # Made to say exactly what is applied. dbmate marks nothing while a migration runs.
        # Compared as numbers: dbmate keeps the version as the file name spells it ("001").
        table = self.name.ident
        applied = sorted(change.applied)
        conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE version ~ '^[0-9]+$'"
                " AND NOT (version::numeric = ANY(%s::numeric[]))"
            ).format(table),
            ([v.canonical for v in applied],),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version) SELECT v"
                " FROM pg_catalog.unnest(%s::pg_catalog.text[]) AS v WHERE NOT EXISTS"
                " (SELECT FROM {} AS t WHERE t.version ~ '^[0-9]+$'"
                " AND t.version::numeric = v::numeric)"
            ).format(table, table),
            ([v.written for v in applied],),
        )
