"""Where a tool's table is: the names looked at, the table found there (told by its columns),
and the table to create on a fresh database.

The configured name (the `migrations_table` setting, else golang-migrate's `x-migrations-table`
URL parameter) is the only one looked at when set; otherwise the names the tools' own variables
give (DBMATE_MIGRATIONS_TABLE, GOOSE_TABLE), then the tools' defaults. A fresh database gets the
table of the format of the folder's newest migration: the tool the project writes for now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from psycopg import sql

from herokumigrate.config import qualified_parts
from herokumigrate.errors import BadInput
from herokumigrate.formats import format_named, native_table_classes
from herokumigrate.native import NativeName

if TYPE_CHECKING:
    from herokumigrate.config import Config
    from herokumigrate.database import Target
    from herokumigrate.migration import Migration
    from herokumigrate.native import Conn, NativeTable
    from herokumigrate.tools import ToolName


class NativeReading(NamedTuple):
    """What was found: the tool's table (None: none), and the names looked at that hold a
    table of no tool (another framework's `schema_migrations`): never created over."""

    table: NativeTable | None
    occupied: frozenset[NativeName] = frozenset()


@dataclass(frozen=True)
class NativeTables:
    """The names where a tool's table is looked for (see the module's docstring)."""

    configured: NativeName | None = None
    by_tool: dict[ToolName, NativeName] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, config: Config, target: Target | None) -> NativeTables:
        """The names the settings give: `migrations_table`, else the URL's
        `x-migrations-table`, else DBMATE_MIGRATIONS_TABLE and GOOSE_TABLE."""
        parts = config.migrations_table_parts
        if parts is not None:
            return cls(NativeName(parts[1], parts[0]))
        if target is not None and target.migrations_table is not None:
            named = target.migrations_table
            return cls(NativeName(named.name, named.schema))
        by_tool = {}
        for tool, qualified in config.tool_tables:
            schema, table = qualified_parts(qualified)
            by_tool[tool] = NativeName(table, schema)
        return cls(by_tool=by_tool)

    def candidates(self) -> list[NativeName]:
        """The names looked at, in order."""
        if self.configured is not None:
            return [self.configured]
        defaults = [NativeName(cls.default_table) for cls in native_table_classes()]
        return list(dict.fromkeys([*self.by_tool.values(), *defaults]))

    def columns_sql(self) -> sql.Composed:
        """A scalar subquery: a JSON object mapping each candidate's position to its columns
        (name -> type), null when it does not exist (folded into the quick check's query)."""
        parts = [
            sql.SQL(
                "{}, (SELECT pg_catalog.json_object_agg(attname,"
                " pg_catalog.format_type(atttypid, atttypmod))"
                " FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass({})"
                " AND attnum > 0 AND NOT attisdropped)"
            ).format(sql.Literal(str(i)), sql.Literal(name.regclass_text()))
            for i, name in enumerate(self.candidates())
        ]
        return sql.SQL("pg_catalog.json_build_object({})::pg_catalog.text").format(
            sql.SQL(", ").join(parts)
        )

    def read(self, conn: Conn) -> NativeReading:
        """The first candidate table that exists and is a tool's, read."""
        row = conn.execute(sql.SQL("SELECT {}").format(self.columns_sql())).fetchone()
        return self.from_columns(conn, str(row[0]) if row and row[0] else "{}")

    def from_columns(self, conn: Conn, described: str) -> NativeReading:
        """The table that `columns_sql`'s answer describes, read; BadInput when a name the
        settings give holds a table of no tool."""
        found: dict[str, dict[str, str] | None] = json.loads(described)
        occupied: set[NativeName] = set()
        for index, name in enumerate(self.candidates()):
            columns = found.get(str(index))
            if not columns:
                continue
            for native in _by_name_first(name):
                if native.recognizes(columns):
                    return NativeReading(native.read(conn, name), frozenset(occupied))
            occupied.add(name)
            named_by = self._named_by(name)
            if named_by is not None:
                shown = ", ".join(f"{k} {v}" for k, v in columns.items())
                tools = ", ".join(f"{cls.tool}'s" for cls in native_table_classes())
                raise BadInput(
                    f"the migrations table {name.shown} exists but is not "
                    f"{_or_list(tools)} (its columns: {shown})",
                    fix=f"Set {named_by} to the native tool's table, or unset it.",
                )
        return NativeReading(None, frozenset(occupied))

    def _named_by(self, name: NativeName) -> str | None:
        """What named this candidate, for messages; None for a tool's default name."""
        from herokumigrate.config import TOOL_TABLE_VARS

        if self.configured is not None:
            return "MIGRATE_MIGRATIONS_TABLE (or x-migrations-table in the URL)"
        tools = [tool for tool, named in self.by_tool.items() if named == name]
        return TOOL_TABLE_VARS[tools[0]] if tools else None

    def for_fresh_database(
        self, migrations: list[Migration], occupied: frozenset[NativeName]
    ) -> NativeTable | None:
        """The table to create on a database that has none: that of the newest file's format
        (None when its name holds another table, or there are no files)."""
        if not migrations:
            return None
        native = format_named(migrations[-1].format).native_table()
        name = self.configured or self.by_tool.get(native.tool) or NativeName(native.default_table)
        return None if name in occupied else native(name=name)


def _by_name_first(name: NativeName) -> list[type[NativeTable]]:
    """Every tool's table class, those whose default name this is first (registry order
    otherwise): a table under a tool's own name is that tool's when its columns say so."""
    classes = native_table_classes()
    return sorted(classes, key=lambda cls: cls.default_table != name.table)


def _or_list(items: str) -> str:
    """`a's, b's, c's` -> `a's, b's or c's`."""
    head, _, last = items.rpartition(", ")
    return f"{head} or {last}" if head else last
