"""The history store: our table of applied migrations, its event log, and the tables of the
tools we replace (golang-migrate's and dbmate's `schema_migrations`), adopted on first contact
and kept in sync.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, Literal, TypeAlias

from psycopg import sql
from psycopg.rows import class_row, kwargs_row

from herokumigrate.errors import BadInput

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import psycopg

    from herokumigrate.source import Migration

    Conn = psycopg.Connection[tuple[object, ...]]

SOURCE_RUNNER = "heroku-migrate"
LEGACY_TABLE = "schema_migrations"

NativeToolName = Literal["golang-migrate", "dbmate"]


class HistoryState(Enum):
    """A history row's `state` column: all of a migration ran, or only its first statements."""

    APPLIED = "applied"
    PARTIAL = "partial"


@dataclass(frozen=True)
class HistoryRow:
    """One applied (or partly applied) migration, as recorded."""

    version: int
    name: str
    checksum: str
    applied_at: dt.datetime | None
    duration_ms: float
    state: HistoryState
    progress: int | None
    source: str


def _history_row(
    *,
    version: int,
    name: str,
    checksum: str,
    applied_at: dt.datetime | None,
    duration_ms: float,
    state: str,
    progress: int | None,
    source: str,
) -> HistoryRow:
    """A row of our table with its `state` text made a HistoryState (a psycopg row factory)."""
    return HistoryRow(
        version, name, checksum, applied_at, duration_ms, HistoryState(state), progress, source
    )


# A history row as far as the next run is concerned: its state, and its progress if partial.
RecordedState: TypeAlias = "tuple[HistoryState, int | None]"


@dataclass(frozen=True)
class LogEvent:
    """One entry of the event log."""

    at: dt.datetime
    event: str
    detail: str


@dataclass(frozen=True)
class _Column:
    attname: str
    type: str


class NativeHistory:
    """A migration tool's own history table, found beside ours: read it, adopt what it says
    is applied, and keep it in sync so the tool still works after us.

    One subclass per tool, registered in NATIVE_TABLES.
    """

    tool: ClassVar[NativeToolName]
    table: ClassVar[str]  # unqualified: found through the search_path, as the tool does

    @classmethod
    def recognizes(cls, columns: dict[str, str]) -> bool:
        """True when a table with these (column -> type) is this tool's."""
        raise NotImplementedError

    @classmethod
    def read(cls, conn: Conn, regclass: str) -> NativeHistory:
        """The table's content."""
        raise NotImplementedError

    def adopt(self, migrations: list[Migration], rows: dict[int, HistoryRow]) -> list[Migration]:
        """Migrations this table says are applied but our history lacks."""
        raise NotImplementedError

    def sync(self, conn: Conn, applied: set[int]) -> None:
        """Make the table say that exactly `applied` is applied (caller's transaction)."""
        raise NotImplementedError


class GolangMigrateTable(NativeHistory):
    """golang-migrate's one-row `schema_migrations (version bigint, dirty boolean)`."""

    tool: ClassVar[NativeToolName] = "golang-migrate"
    table: ClassVar[str] = LEGACY_TABLE

    def __init__(self, version: int | None = None, dirty: bool = False) -> None:
        self.version = version
        self.dirty = dirty

    @classmethod
    def recognizes(cls, columns: dict[str, str]) -> bool:
        return columns.get("version") == "bigint" and columns.get("dirty") == "boolean"

    @classmethod
    def read(cls, conn: Conn, regclass: str) -> NativeHistory:
        query = sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(sql.SQL(regclass))
        with conn.cursor(row_factory=kwargs_row(GolangMigrateTable._row)) as cur:
            row = cur.execute(query).fetchone()
        return row if row is not None else cls()

    @staticmethod
    def _row(*, version: int | None, dirty: bool | None) -> GolangMigrateTable:
        if version is None or version < 0:  # golang-migrate writes -1 for "nothing applied"
            return GolangMigrateTable()
        return GolangMigrateTable(version, bool(dirty))

    def adopt(self, migrations: list[Migration], rows: dict[int, HistoryRow]) -> list[Migration]:
        """Every file up to the recorded version; a dirty row stops the run, as golang-migrate
        itself would."""
        if self.dirty:
            raise BadInput(
                f"{LEGACY_TABLE} (golang-migrate) is dirty at version {self.version}: "
                "a migration failed half-way under golang-migrate",
                fix="Repair the schema by hand, then mark the last good version with "
                "`heroku-migrate force VERSION` (it clears the dirty flag).",
            )
        if self.version is None:
            return []
        return [m for m in migrations if m.version <= self.version and m.version not in rows]

    def sync(self, conn: Conn, applied: set[int]) -> None:
        table = sql.Identifier(self.table)
        conn.execute(sql.SQL("DELETE FROM {}").format(table))
        if applied:
            conn.execute(
                sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, false)").format(table),
                (max(applied),),
            )


class DbmateTable(NativeHistory):
    """dbmate's `schema_migrations (version varchar)`, one row per applied migration."""

    tool: ClassVar[NativeToolName] = "dbmate"
    table: ClassVar[str] = LEGACY_TABLE

    def __init__(self, versions: set[int] | None = None) -> None:
        self.versions = versions if versions is not None else set()

    @classmethod
    def recognizes(cls, columns: dict[str, str]) -> bool:
        return "version" in columns and columns["version"].startswith(("character varying", "text"))

    @classmethod
    def read(cls, conn: Conn, regclass: str) -> NativeHistory:
        query = sql.SQL("SELECT version::text AS text FROM {}").format(sql.SQL(regclass))
        with conn.cursor(row_factory=kwargs_row(_text_of)) as cur:
            texts = [text.strip() for text in cur.execute(query).fetchall()]
        return cls({int(text) for text in texts if text.isdigit()})

    def adopt(self, migrations: list[Migration], rows: dict[int, HistoryRow]) -> list[Migration]:
        return [m for m in migrations if m.version in self.versions and m.version not in rows]

    def sync(self, conn: Conn, applied: set[int]) -> None:
        table = sql.Identifier(self.table)
        versions = [str(v) for v in applied]
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE NOT (version = ANY(%s::text[]))").format(table),
            (versions,),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"
            ).format(table),
            (versions,),
        )


def _text_of(*, text: str) -> str:
    return text


# Looked for in this order; the first whose table exists and whose columns match is adopted.
NATIVE_TABLES: tuple[type[NativeHistory], ...] = (GolangMigrateTable, DbmateTable)


@dataclass
class DatabaseState:
    """What the database says has been applied."""

    exists: bool
    rows: dict[int, HistoryRow]
    legacy: NativeHistory | None

    def recorded(self) -> dict[int, RecordedState]:
        """Each recorded version's state and progress, to compare two readings."""
        return {v: (r.state, r.progress) for v, r in self.rows.items()}

    def applied_versions(self) -> set[int]:
        """Versions recorded as fully applied."""
        return {v for v, r in self.rows.items() if r.state is HistoryState.APPLIED}


class HistoryTable:
    """Reads and writes `<schema>.<table>` and its `<table>_log` event log."""

    def __init__(self, schema: str, table: str) -> None:
        self.schema = schema
        self.table = table
        self.ident = sql.Identifier(schema, table)
        self.log_ident = sql.Identifier(schema, table + "_log")
        # The session's search_path when the run first read the history, before any migration
        # could change it: the native tool's table is found (and synced) through it.
        self.search_path: str | None = None

    def matches(self, conn: Conn, migrations: Sequence[tuple[int, str]]) -> bool:
        """True when the history holds exactly these migrations, all applied with these
        checksums, and no native tool table needs syncing: the common release with nothing
        to do.

        One round trip and one row, instead of fetching every history row (which costs the
        pure-Python driver about 17 ms per 1000 rows)."""
        from psycopg import errors as pg_errors

        if not migrations:
            return False
        expected = ",".join(f"{version}:{checksum}" for version, checksum in migrations)
        query = sql.SQL(
            "SELECT coalesce(pg_catalog.string_agg(version::pg_catalog.text || ':' || checksum,"
            " ',' ORDER BY version) = %s AND pg_catalog.bool_and(state = 'applied')"
            " AND NOT EXISTS (SELECT FROM pg_catalog.unnest(%s::pg_catalog.text[])"
            " AS native(name) WHERE pg_catalog.to_regclass(native.name) IS NOT NULL), false)"
            " AS matches FROM {}"
        ).format(self.ident)
        try:
            with conn.cursor(row_factory=kwargs_row(_matches_of)) as cur:
                return bool(cur.execute(query, (expected, _native_names())).fetchone())
        except pg_errors.UndefinedTable:
            return False  # first contact: the full read will say so

    def read(self, conn: Conn) -> DatabaseState:
        """The recorded state; does not create anything."""
        if self.search_path is None:
            self.search_path = _current_search_path(conn)
        exists = _relation_exists(conn, self.ident.as_string(conn))
        legacy = _read_native(conn)
        rows: dict[int, HistoryRow] = {}
        if exists:
            query = sql.SQL(
                "SELECT version, name, checksum, applied_at, duration_ms, state, progress, source"
                " FROM {} ORDER BY version"
            ).format(self.ident)
            with conn.cursor(row_factory=kwargs_row(_history_row)) as cur:
                rows = {row.version: row for row in cur.execute(query)}
        return DatabaseState(exists, rows, legacy)

    def log_exists(self, conn: Conn) -> bool:
        """True when the event log table exists."""
        return _relation_exists(conn, self.log_ident.as_string(conn))

    def create(self, conn: Conn) -> None:
        """Create the history and log tables if missing (inside the caller's transaction)."""
        if self.schema != "public":
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version bigint PRIMARY KEY,"
                " name pg_catalog.text NOT NULL,"
                " checksum pg_catalog.text NOT NULL,"
                " applied_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),"
                " duration_ms double precision NOT NULL DEFAULT 0,"
                " state pg_catalog.text NOT NULL DEFAULT 'applied'"
                " CHECK (state IN ('applied', 'partial')),"
                " progress integer,"
                " source pg_catalog.text NOT NULL DEFAULT 'heroku-migrate')"
            ).format(self.ident)
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " id bigserial PRIMARY KEY,"
                " at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),"
                " event pg_catalog.text NOT NULL,"
                " detail pg_catalog.text NOT NULL)"
            ).format(self.log_ident)
        )

    def record_applied(
        self, conn: Conn, done: Iterable[tuple[Migration, float]], source: str = SOURCE_RUNNER
    ) -> None:
        """Upsert `applied` rows for migrations (with their durations in ms) in one statement."""
        items = list(done)
        if not items:
            return
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version, name, checksum, duration_ms, source)"
                " SELECT * FROM ROWS FROM (pg_catalog.unnest(%s::bigint[]),"
                " pg_catalog.unnest(%s::pg_catalog.text[]),"
                " pg_catalog.unnest(%s::pg_catalog.text[]),"
                " pg_catalog.unnest(%s::double precision[]),"
                " pg_catalog.unnest(%s::pg_catalog.text[]))"
                " ON CONFLICT (version) DO UPDATE SET name = excluded.name,"
                " checksum = excluded.checksum, applied_at = pg_catalog.now(),"
                " duration_ms = {}.duration_ms + excluded.duration_ms,"
                " state = 'applied', progress = NULL, source = excluded.source"
            ).format(self.ident, sql.Identifier(self.table)),
            (
                [m.version for m, _ in items],
                [m.name for m, _ in items],
                [m.checksum for m, _ in items],
                [round(ms, 3) for _, ms in items],
                [source] * len(items),
            ),
        )

    def record_partial(self, conn: Conn, migration: Migration, progress: int, ms: float) -> None:
        """Mark a migration as partly applied: `progress` statements of its up section ran."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version, name, checksum, duration_ms, state, progress)"
                " VALUES (%s, %s, %s, %s, 'partial', %s)"
                " ON CONFLICT (version) DO UPDATE SET state = 'partial',"
                " progress = excluded.progress, checksum = excluded.checksum,"
                " duration_ms = {}.duration_ms + excluded.duration_ms"
            ).format(self.ident, sql.Identifier(self.table)),
            (migration.version, migration.name, migration.checksum, round(ms, 3), progress),
        )

    def delete(self, conn: Conn, versions: Iterable[int]) -> None:
        """Forget migrations (after their downs ran, or by `force`)."""
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE version = ANY(%s::bigint[])").format(self.ident),
            (list(versions),),
        )

    def log(self, conn: Conn, event: str, detail: str) -> None:
        """Append to the event log that `status` reports from."""
        conn.execute(
            sql.SQL("INSERT INTO {} (event, detail) VALUES (%s, %s)").format(self.log_ident),
            (event, detail),
        )

    def log_if_present(self, conn: Conn, event: str, detail: str) -> None:
        """Append to the event log, only if it exists (a failed first release must leave no
        table behind) and the connection works; never raises: the log is a courtesy, the
        error itself is what the user must see."""
        import psycopg

        try:
            if conn.closed or conn.broken or not self.log_exists(conn):
                return
            with conn.transaction():
                self.log(conn, event, detail)
        except psycopg.Error:
            pass

    def last_events(self, conn: Conn, limit: int = 5) -> list[LogEvent]:
        """The newest log entries, newest first (empty when the log table does not exist)."""
        if not self.log_exists(conn):
            return []
        query = sql.SQL("SELECT at, event, detail FROM {} ORDER BY id DESC LIMIT %s").format(
            self.log_ident
        )
        with conn.cursor(row_factory=class_row(LogEvent)) as cur:
            return cur.execute(query, (limit,)).fetchall()

    def sync_legacy(
        self, conn: Conn, legacy: NativeHistory | None, applied: set[int] | None = None
    ) -> None:
        """Keep a native tool's table matching what is applied (caller's transaction); without
        `applied`, what our table says now (read back in this transaction).

        Runs under the search_path the run began with: a migration's `SET search_path` (or
        `set_config('search_path', '', false)`) cannot hide the table from the sync."""
        if legacy is None:
            return
        if applied is None:
            applied = self.applied_versions(conn)
        current = _current_search_path(conn)
        if self.search_path is None or current == self.search_path:
            legacy.sync(conn, applied)
            return
        _set_local_search_path(conn, self.search_path)
        legacy.sync(conn, applied)
        _set_local_search_path(conn, current)

    def applied_versions(self, conn: Conn) -> set[int]:
        """The versions our table records as fully applied, read now."""
        query = sql.SQL("SELECT version FROM {} WHERE state = 'applied'").format(self.ident)
        return {int(str(row[0])) for row in conn.execute(query)}

    def accept_checksums(self, conn: Conn, changed: Iterable[Migration]) -> None:
        """Record the edited content of applied migrations as accepted (`allow_changed`): their
        rows take the files' checksums, and the log says which changed from what."""
        for m in changed:
            row = conn.execute(
                sql.SQL(
                    "UPDATE {} AS h SET checksum = %s"
                    " FROM (SELECT version, checksum FROM {}) AS old"
                    " WHERE h.version = old.version AND h.version = %s AND h.checksum <> %s"
                    " RETURNING old.checksum"
                ).format(self.ident, self.ident),
                (m.checksum, m.version, m.checksum),
            ).fetchone()
            if row is not None:
                self.log(
                    conn,
                    "accepted change",
                    f"{m.filename}: edited after it was applied; checksum {str(row[0])[:12]} "
                    f"-> {m.checksum[:12]} accepted (allow_changed)",
                )

    def drop(self, conn: Conn) -> None:
        """Drop the history and log tables (a failed first release leaves nothing behind)."""
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(self.log_ident, self.ident))


def adopt(
    legacy: NativeHistory | None, migrations: list[Migration], rows: dict[int, HistoryRow]
) -> list[Migration]:
    """Migrations that a native tool's table says are applied but our history lacks."""
    return legacy.adopt(migrations, rows) if legacy is not None else []


def _native_names() -> list[str]:
    return sorted({native.table for native in NATIVE_TABLES})


def _matches_of(*, matches: bool | None) -> bool:
    return bool(matches)


def _exists_of(*, found: bool) -> bool:
    return found


def _relation_exists(conn: Conn, name: str) -> bool:
    """The one existence check of a (possibly qualified, quoted) table name."""
    with conn.cursor(row_factory=kwargs_row(_exists_of)) as cur:
        found = cur.execute(
            "SELECT pg_catalog.to_regclass(%s) IS NOT NULL AS found", (name,)
        ).fetchone()
    return bool(found)


def _current_search_path(conn: Conn) -> str:
    row = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
    return str(row[0]) if row else ""


def _set_local_search_path(conn: Conn, value: str) -> None:
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (value,))


def _read_native(conn: Conn) -> NativeHistory | None:
    """The first registered native tool table that exists and has its tool's columns."""
    for native in NATIVE_TABLES:
        with conn.cursor(row_factory=class_row(_Column)) as cur:
            columns = cur.execute(
                "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (native.table,),
            ).fetchall()
        if not columns:
            continue
        by_name = {c.attname: c.type for c in columns}
        if native.recognizes(by_name):
            regclass = conn.execute("SELECT to_regclass(%s)::text", (native.table,)).fetchone()
            return native.read(conn, str(regclass[0]) if regclass else native.table)
    return None
