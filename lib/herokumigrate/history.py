"""The history store: our table of applied migrations and its event log. The tables of the
tools we replace (golang-migrate's and dbmate's `schema_migrations`, goose's `goose_db_version`)
are in `native`; `HistoryTable.read` reads the one it finds along with ours.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from psycopg import sql
from psycopg.rows import class_row, kwargs_row

# Re-exported (`__all__`): the native tool tables lived here before native.py.
from herokumigrate.native import (
    DbmateTable,
    GolangMigrateTable,
    GooseTable,
    NativeHistory,
    NativeTables,
    NativeToolName,
)
from herokumigrate.signals import transaction

__all__ = [
    "DatabaseState",
    "DbmateTable",
    "GolangMigrateTable",
    "GooseTable",
    "HistoryRow",
    "HistoryState",
    "HistoryTable",
    "LogEvent",
    "NativeHistory",
    "NativeToolName",
]

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import psycopg

    from herokumigrate.source import Migration

    Conn = psycopg.Connection[tuple[object, ...]]

SOURCE_RUNNER = "heroku-migrate"
LEGACY_TABLE = "schema_migrations"


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


class LogEvent(NamedTuple):
    """One entry of the event log."""

    at: dt.datetime
    event: str
    detail: str


@dataclass
class DatabaseState:
    """What the database says has been applied."""

    exists: bool
    rows: dict[int, HistoryRow]
    legacy: NativeHistory | None
    native_tables: NativeTables = field(default_factory=NativeTables)  # where it was looked for

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
        self.native = NativeTables()  # where the native tool's table is (the migrator sets it)
        # The session's search_path when the run first read the history, before any migration
        # could change it: the native tool's table is found (and synced) through it.
        self.search_path: str | None = None

    def matches(self, conn: Conn, migrations: Sequence[tuple[int, str]]) -> bool:
        """True when the history holds exactly these migrations, all applied with these
        checksums, and the native tool's table exists and says the same: the common release
        with nothing to do.

        One round trip and one row for our history (instead of fetching every row, which costs
        the pure-Python driver about 17 ms per 1000 rows) and the native table's columns; a
        second reads the native table, only when ours matches."""
        from psycopg import errors as pg_errors

        if not migrations:
            return False
        expected = ",".join(f"{version}:{checksum}" for version, checksum in migrations)
        query = sql.SQL(
            "SELECT coalesce(pg_catalog.string_agg(version::pg_catalog.text || ':' || checksum,"
            " ',' ORDER BY version) = %s AND pg_catalog.bool_and(state = 'applied'), false)"
            " AS ours, {} AS native FROM {}"
        ).format(self.native.columns_sql(), self.ident)
        try:
            row = conn.execute(query, (expected,)).fetchone()
        except pg_errors.UndefinedTable:
            return False  # first contact: the full read will say so
        if row is None or not row[0]:
            return False
        # The native tool's table must say the same (a second round trip only when it exists).
        native = self.native.from_columns(conn, str(row[1]))
        return native is not None and native.agrees({version for version, _ in migrations})

    def read(self, conn: Conn) -> DatabaseState:
        """The recorded state; does not create anything."""
        if self.search_path is None:
            self.search_path = _current_search_path(conn)
        exists = _relation_exists(conn, self.ident.as_string(conn))
        legacy = self.native.read(conn)
        rows: dict[int, HistoryRow] = {}
        if exists:
            query = sql.SQL(
                "SELECT version, name, checksum, applied_at, duration_ms, state, progress, source"
                " FROM {} ORDER BY version"
            ).format(self.ident)
            with conn.cursor(row_factory=kwargs_row(_history_row)) as cur:
                rows = {row.version: row for row in cur.execute(query)}
        return DatabaseState(exists, rows, legacy, self.native)

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
            with transaction(conn):
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
        self,
        conn: Conn,
        legacy: NativeHistory | None,
        applied: set[int] | None = None,
        in_flight: int | None = None,
    ) -> None:
        """Keep a native tool's table matching what is applied, and `in_flight` (partly
        applied) where the tool marks that (caller's transaction); without `applied`, what our
        table says now (read back in this transaction), its newest partial row in flight.

        Runs under the search_path the run began with: a migration's `SET search_path` (or
        `set_config('search_path', '', false)`) cannot hide the table from the sync."""
        if legacy is None:
            return
        if applied is None:
            applied, partial = self._applied_and_partial(conn)
            in_flight = max(partial) if partial and in_flight is None else in_flight
        current = _current_search_path(conn)
        if self.search_path is None or current == self.search_path:
            legacy.sync(conn, applied, in_flight)
            return
        _set_local_search_path(conn, self.search_path)
        legacy.sync(conn, applied, in_flight)
        _set_local_search_path(conn, current)

    def _applied_and_partial(self, conn: Conn) -> tuple[set[int], set[int]]:
        """The versions our table records as fully applied, and as partly applied, read now."""
        query = sql.SQL("SELECT version, state = 'applied' FROM {}").format(self.ident)
        found = [(int(str(version)), bool(done)) for version, done in conn.execute(query)]
        return {v for v, done in found if done}, {v for v, done in found if not done}

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
