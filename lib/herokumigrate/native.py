"""The tables of the tools we replace: golang-migrate's and dbmate's `schema_migrations` and
goose's `goose_db_version`. Found (under the configured name, else the tools' defaults),
adopted on first contact, created on a fresh database as the tool itself would, kept in sync on
every run, and compared with our history both ways (README, "Adopting golang-migrate, dbmate or
goose").

The table's tool is told by its columns, not its name. A fresh database gets the table of the
format of the folder's newest migration: the tool the project writes its migrations for now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

from psycopg import sql

from herokumigrate.errors import BadInput

if TYPE_CHECKING:
    from collections.abc import Mapping

    import psycopg

    from herokumigrate.formats import FormatName
    from herokumigrate.history import HistoryRow
    from herokumigrate.source import Migration

    Conn = psycopg.Connection[tuple[object, ...]]

NativeToolName = Literal["golang-migrate", "dbmate", "goose"]
SOURCE_RUNNER = "heroku-migrate"  # history.SOURCE_RUNNER; repeated here to avoid a cycle


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


class NativeHistory:
    """A migration tool's own history table: read it, adopt what it says is applied, create it
    as the tool would, and keep it in sync so the tool still works after us.

    One subclass per tool, registered in NATIVE_TABLES.
    """

    tool: ClassVar[NativeToolName]
    default_table: ClassVar[str]

    def __init__(self, name: NativeName | None = None) -> None:
        self.name = name if name is not None else NativeName(self.default_table)
        # How each version is written in the file names ("0001"), for tools storing text.
        self.spelling: dict[int, str] = {}

    @property
    def table(self) -> str:
        """The table's name as messages show it."""
        return self.name.shown

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        """True when a table with these (column -> type) is this tool's."""
        raise NotImplementedError

    def load(self, conn: Conn) -> None:
        """Read the table's content into this object."""
        raise NotImplementedError

    def applied(self) -> set[int] | None:
        """The versions the table says are applied; None when it only knows the newest."""
        raise NotImplementedError

    def newest(self) -> int | None:
        """The newest version the table says is applied."""
        applied = self.applied()
        return max(applied) if applied else None

    def state_text(self) -> str:
        """What the table says, for messages."""
        applied = self.applied() or set()
        if not applied:
            return "nothing applied"
        return f"{len(applied)} applied, newest {max(applied)}"

    def agrees(self, applied: set[int]) -> bool:
        """True when the table says exactly `applied` (our applied versions) is applied."""
        return self.applied() == applied

    def says_applied(self, version: int) -> bool:
        """True when the table says `version` is applied."""
        applied = self.applied()
        return applied is not None and version in applied

    def problem(self) -> BadInput | None:
        """A state the tool itself would refuse to migrate from (golang-migrate's dirty row)."""
        return None

    def in_flight(self) -> int | None:
        """The version the table marks as being applied (golang-migrate's dirty row)."""
        return None

    def create(self, conn: Conn) -> None:
        """Create the table as the tool does on a fresh database (caller's transaction)."""
        raise NotImplementedError

    def sync(self, conn: Conn, applied: set[int], in_flight: int | None = None) -> None:
        """Make the table say that exactly `applied` is applied, and `in_flight` is being
        applied where the tool marks that (caller's transaction)."""
        raise NotImplementedError

    def adopt(self, migrations: list[Migration], rows: Mapping[int, HistoryRow]) -> list[Migration]:
        """Migrations this table says are applied but our history lacks."""
        return [m for m in migrations if m.version not in rows and self.says_applied(m.version)]

    def _spelled(self, version: int) -> str:
        return self.spelling.get(version) or str(version)


class GolangMigrateTable(NativeHistory):
    """golang-migrate's one-row `schema_migrations (version bigint, dirty boolean)`."""

    tool: ClassVar[NativeToolName] = "golang-migrate"
    default_table: ClassVar[str] = "schema_migrations"

    def __init__(
        self, version: int | None = None, dirty: bool = False, name: NativeName | None = None
    ) -> None:
        super().__init__(name)
        self.version = version
        self.dirty = dirty

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return columns.get("version") == "bigint" and columns.get("dirty") == "boolean"

    def load(self, conn: Conn) -> None:
        query = sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(self.name.ident)
        row = conn.execute(query).fetchone()
        version = row[0] if row is not None else None
        # golang-migrate writes -1 ("nil version") for a failed first migration's down.
        valid = isinstance(version, int) and version >= 0
        self.version = version if valid and isinstance(version, int) else None
        self.dirty = bool(row[1]) if row is not None else False
        if row is not None and not valid and self.dirty:
            self.version = -1

    def applied(self) -> set[int] | None:
        return None

    def newest(self) -> int | None:
        return self.version if self.version is not None and self.version >= 0 else None

    def state_text(self) -> str:
        if self.version is None:
            return "nothing applied"
        return f"version {self.version}" + (" (dirty)" if self.dirty else "")

    def agrees(self, applied: set[int]) -> bool:
        return not self.dirty and self.newest() == (max(applied) if applied else None)

    def says_applied(self, version: int) -> bool:
        newest = self.newest()
        return newest is not None and version <= newest

    def in_flight(self) -> int | None:
        return self.version if self.dirty else None

    def problem(self) -> BadInput | None:
        if not self.dirty:
            return None
        return BadInput(
            f"{self.table} (golang-migrate) is dirty at version {self.version}: "
            "a migration failed half-way under golang-migrate",
            fix="Repair the schema by hand, then mark the last good version with "
            "`heroku-migrate force VERSION` (it clears the dirty flag).",
        )

    def create(self, conn: Conn) -> None:
        _create_schema(conn, self.name)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (version bigint not null primary key, dirty boolean not null)"
            ).format(self.name.ident)
        )

    def sync(self, conn: Conn, applied: set[int], in_flight: int | None = None) -> None:
        # As golang-migrate's SetVersion: empty the table, write one row; dirty while a
        # migration is being applied (set before it runs, cleared after), clean otherwise.
        conn.execute(sql.SQL("TRUNCATE {}").format(self.name.ident))
        if in_flight is not None or applied:
            conn.execute(
                sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, %s)").format(self.name.ident),
                (max(applied) if in_flight is None else in_flight, in_flight is not None),
            )


class DbmateTable(NativeHistory):
    """dbmate's `schema_migrations (version varchar)`, one row per applied migration."""

    tool: ClassVar[NativeToolName] = "dbmate"
    default_table: ClassVar[str] = "schema_migrations"

    def __init__(self, versions: set[int] | None = None, name: NativeName | None = None) -> None:
        super().__init__(name)
        self.versions = versions if versions is not None else set()

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return "dirty" not in columns and columns.get("version", "").startswith(
            ("character varying", "text")
        )

    def load(self, conn: Conn) -> None:
        query = sql.SQL("SELECT version::text FROM {}").format(self.name.ident)
        texts = [str(row[0]).strip() for row in conn.execute(query).fetchall()]
        self.versions = {int(text) for text in texts if text.isascii() and text.isdigit()}

    def applied(self) -> set[int] | None:
        return set(self.versions)

    def create(self, conn: Conn) -> None:
        _create_schema(conn, self.name)
        conn.execute(
            sql.SQL("CREATE TABLE {} (version varchar primary key)").format(self.name.ident)
        )

    def sync(self, conn: Conn, applied: set[int], in_flight: int | None = None) -> None:
        # dbmate marks nothing while a migration runs. Compared as numbers: dbmate keeps the
        # version as the file name spells it ("001").
        table = self.name.ident
        conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE version ~ '^[0-9]+$'"
                " AND NOT (version::numeric = ANY(%s::numeric[]))"
            ).format(table),
            ([str(v) for v in applied],),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version) SELECT v"
                " FROM pg_catalog.unnest(%s::pg_catalog.text[]) AS v WHERE NOT EXISTS"
                " (SELECT FROM {} AS t WHERE t.version ~ '^[0-9]+$'"
                " AND t.version::numeric = v::numeric)"
            ).format(table, table),
            ([self._spelled(v) for v in sorted(applied)],),
        )


class GooseTable(NativeHistory):
    """goose's `goose_db_version (id, version_id bigint, is_applied boolean, tstamp)`: a row per
    apply (and, before goose v3, per revert); the latest row of a version wins; version 0 is
    the row goose writes when it creates the table."""

    tool: ClassVar[NativeToolName] = "goose"
    default_table: ClassVar[str] = "goose_db_version"

    def __init__(self, versions: set[int] | None = None, name: NativeName | None = None) -> None:
        super().__init__(name)
        self.versions = versions if versions is not None else set()

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return columns.get("version_id") == "bigint" and columns.get("is_applied") == "boolean"

    def load(self, conn: Conn) -> None:
        query = sql.SQL(
            "SELECT DISTINCT ON (version_id) version_id, is_applied FROM {}"
            " ORDER BY version_id, id DESC"
        ).format(self.name.ident)
        self.versions = {int(str(v)) for v, ok in conn.execute(query).fetchall() if ok and v != 0}

    def applied(self) -> set[int] | None:
        return set(self.versions)

    def create(self, conn: Conn) -> None:
        # goose v3's postgres dialect, then its initial row (version 0).
        _create_schema(conn, self.name)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id integer PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,"
                " version_id bigint NOT NULL, is_applied boolean NOT NULL,"
                " tstamp timestamp NOT NULL DEFAULT now())"
            ).format(self.name.ident)
        )
        conn.execute(
            sql.SQL("INSERT INTO {} (version_id, is_applied) VALUES (0, true)").format(
                self.name.ident
            )
        )

    def sync(self, conn: Conn, applied: set[int], in_flight: int | None = None) -> None:
        # goose marks nothing while a migration runs; it reverts with DELETE ... WHERE
        # version_id = v (only versions it says are applied), and applies with INSERT (v, true).
        table = self.name.ident
        conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE version_id IN (SELECT version_id FROM (SELECT DISTINCT ON"
                " (version_id) version_id, is_applied FROM {} ORDER BY version_id, id DESC)"
                " AS latest WHERE is_applied AND version_id <> 0"
                " AND NOT (version_id = ANY(%s::bigint[])))"
            ).format(table, table),
            (sorted(applied),),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version_id, is_applied) SELECT v, true"
                " FROM pg_catalog.unnest(%s::pg_catalog.int8[]) AS v"
                " WHERE NOT coalesce((SELECT t.is_applied"
                " FROM {} AS t WHERE t.version_id = v ORDER BY t.id DESC LIMIT 1), false)"
                " ORDER BY v"
            ).format(table, table),
            (sorted(applied),),
        )


# Told apart by their columns, in this order.
NATIVE_TABLES: tuple[type[NativeHistory], ...] = (GolangMigrateTable, DbmateTable, GooseTable)
_BY_FORMAT: dict[FormatName, type[NativeHistory]] = {
    "golang-migrate": GolangMigrateTable,
    "dbmate": DbmateTable,
    "goose": GooseTable,
}


@dataclass
class NativeTables:
    """Where to look for a native tool's table: the configured name (the `migrations_table`
    setting, else golang-migrate's `x-migrations-table` URL parameter), else the names the
    tools' own variables give (`by_tool`: DBMATE_MIGRATIONS_TABLE, GOOSE_TABLE), then the
    tools' defaults. `spelling` tells how the files write each version."""

    configured: NativeName | None = None
    by_tool: dict[NativeToolName, NativeName] = field(default_factory=dict)
    spelling: dict[int, str] = field(default_factory=dict)
    # Candidates found holding a table of no tool (another framework's `schema_migrations`):
    # never created over, never synced.
    occupied: set[NativeName] = field(default_factory=set)

    def candidates(self) -> list[NativeName]:
        """The names looked at, in order."""
        if self.configured is not None:
            return [self.configured]
        named = [*self.by_tool.values(), NativeName("schema_migrations")]
        return list(dict.fromkeys([*named, NativeName("goose_db_version")]))

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

    def read(self, conn: Conn) -> NativeHistory | None:
        """The first candidate table that exists and is a tool's, with its content."""
        row = conn.execute(sql.SQL("SELECT {}").format(self.columns_sql())).fetchone()
        return self.from_columns(conn, str(row[0]) if row and row[0] else "{}")

    def from_columns(self, conn: Conn, described: str) -> NativeHistory | None:
        """The table that `columns_sql`'s answer describes, read; BadInput when the configured
        name holds a table of no tool."""
        import json

        found: dict[str, dict[str, str] | None] = json.loads(described)
        for index, name in enumerate(self.candidates()):
            columns = found.get(str(index))
            if not columns:
                continue
            for native in NATIVE_TABLES:
                if native.recognizes(columns):
                    table = native(name=name)
                    table.load(conn)
                    table.spelling = self.spelling
                    return table
            self.occupied.add(name)
            named_by = self._named_by(name)
            if named_by is not None:
                shown = ", ".join(f"{k} {v}" for k, v in columns.items())
                raise BadInput(
                    f"the migrations table {name.shown} exists but is not golang-migrate's, "
                    f"dbmate's or goose's (its columns: {shown})",
                    fix=f"Set {named_by} to the native tool's table, or unset it.",
                )
        return None

    def _named_by(self, name: NativeName) -> str | None:
        """What named this candidate, for messages; None for a tool's default name."""
        from herokumigrate.config import TOOL_TABLE_VARS

        if self.configured is not None:
            return "MIGRATE_MIGRATIONS_TABLE (or x-migrations-table in the URL)"
        tools = [tool for tool, named in self.by_tool.items() if named == name]
        return TOOL_TABLE_VARS[tools[0]] if tools else None

    def for_fresh_database(self, migrations: list[Migration]) -> NativeHistory | None:
        """The table to create on a database that has none: that of the newest file's format."""
        if not migrations:
            return None
        native = _BY_FORMAT[migrations[-1].format]
        name = self.configured or self.by_tool.get(native.tool) or NativeName(native.default_table)
        table = native(name=name)
        if table.name in self.occupied:
            return None
        table.spelling = self.spelling
        return table


def _create_schema(conn: Conn, name: NativeName) -> None:
    if name.schema is not None:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name.schema)))


class NativeConflict(BadInput):
    """The native tool's table and our history disagree in a way no run may settle by itself
    (or golang-migrate's row is dirty): `up` refuses, `status` reports it."""


class Reconciled(NamedTuple):
    """How a run settles the native table with our history."""

    adopt: list[Migration]  # applied by the tool, not recorded by us: recorded, not run
    forget: list[int]  # recorded by us, reverted by the tool since: forgotten, applied again
    create: NativeHistory | None  # the table to create (the database has none)


def reconcile(
    native: NativeHistory | None,
    migrations: list[Migration],
    rows: Mapping[int, HistoryRow],
    *,
    history_exists: bool,
    tables: NativeTables,
) -> Reconciled:
    """Compare the native table with our history (README: "Adopting golang-migrate, dbmate or
    goose"). NativeConflict when they disagree both ways, or the tool reverted what it did not
    apply through us, or golang-migrate's row is dirty."""
    if native is None:
        return Reconciled([], [], tables.for_fresh_database(migrations))
    problem = native.problem()
    flight = native.in_flight()
    marked = rows.get(flight) if flight is not None else None
    if marked is not None and marked.state.value == "partial":
        problem = None  # a killed run of ours marked it, as golang-migrate would: `up` resumes
    if problem is not None:
        raise NativeConflict(problem.message, details=problem.details, fix=problem.fix)
    adopted = native.adopt(migrations, rows)
    if not history_exists:
        return Reconciled(adopted, [], None)
    ours = {v for v, row in rows.items() if row.state.value == "applied"}
    if native.agrees(ours):
        return Reconciled([], [], None)
    behind = sorted(v for v in ours if not native.says_applied(v))
    if not behind:
        return Reconciled(adopted, [], None)  # the tool applied more: adopt it
    files = {m.version for m in migrations}
    ran_by = (SOURCE_RUNNER, f"adopted from {native.tool}")
    if adopted or any(v not in files or rows[v].source not in ran_by for v in behind):
        raise _conflict(native, ours, behind)
    return Reconciled([], behind, None)


_TOOL_UP = {"golang-migrate": "migrate up", "dbmate": "dbmate up", "goose": "goose up"}


def _conflict(native: NativeHistory, ours: set[int], behind: list[int]) -> NativeConflict:
    newest = max(ours) if ours else None
    mine = f"{len(ours)} applied, newest {newest}" if ours else "nothing applied"
    return NativeConflict(
        f"{native.table} ({native.tool}) and heroku-migrate's history disagree: "
        f"{native.tool} says {native.state_text()}; the history says {mine} "
        f"(not in {native.table}: {', '.join(map(str, behind[:10]))})",
        fix=f"If {native.tool}'s state is the real one, run `heroku-migrate force VERSION` with "
        "the newest version really applied (it rewrites both tables); if the history's is, "
        f"run `{_TOOL_UP[native.tool]}` to bring {native.table} back, or force that version.",
    )
