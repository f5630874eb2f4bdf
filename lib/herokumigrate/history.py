"""The history store: our table of applied migrations, its event log, and the tables of the
tools we replace (golang-migrate's and dbmate's `schema_migrations`), adopted on first contact
and kept in sync.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg import sql

from herokumigrate.errors import BadInput

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import psycopg

    from herokumigrate.source import Migration

    Conn = psycopg.Connection[tuple[object, ...]]

STATE_APPLIED = "applied"
STATE_PARTIAL = "partial"
SOURCE_RUNNER = "heroku-migrate"
LEGACY_TABLE = "schema_migrations"


@dataclass(frozen=True)
class HistoryRow:
    """One applied (or partly applied) migration, as recorded."""

    version: int
    name: str
    checksum: str
    applied_at: dt.datetime | None
    duration_ms: float
    state: str
    progress: int | None
    source: str


@dataclass
class LegacyTable:
    """golang-migrate's or dbmate's `schema_migrations`, found beside ours."""

    tool: str  # "golang-migrate" or "dbmate"
    golang_version: int | None = None
    golang_dirty: bool = False
    dbmate_versions: set[int] = field(default_factory=set)


@dataclass
class DatabaseState:
    """What the database says has been applied."""

    exists: bool
    rows: dict[int, HistoryRow]
    legacy: LegacyTable | None


class HistoryTable:
    """Reads and writes `<schema>.<table>` and its `<table>_log` event log."""

    def __init__(self, schema: str, table: str) -> None:
        self.schema = schema
        self.table = table
        self.ident = sql.Identifier(schema, table)
        self.log_ident = sql.Identifier(schema, table + "_log")

    def matches(self, conn: Conn, migrations: Sequence[tuple[int, str]]) -> bool:
        """True when the history holds exactly these migrations, all applied with these
        checksums, and no legacy table needs syncing: the common release with nothing to do.

        One round trip and one row, instead of fetching every history row (which costs the
        pure-Python driver about 17 ms per 1000 rows)."""
        from psycopg import errors as pg_errors

        if not migrations:
            return False
        expected = ",".join(f"{version}:{checksum}" for version, checksum in migrations)
        try:
            row = conn.execute(
                sql.SQL(
                    "SELECT string_agg(version::text || ':' || checksum, ',' ORDER BY version)"
                    " = %s AND bool_and(state = 'applied') AND to_regclass(%s) IS NULL FROM {}"
                ).format(self.ident),
                (expected, LEGACY_TABLE),
            ).fetchone()
        except pg_errors.UndefinedTable:
            return False  # first contact: the full read will say so
        return bool(row and row[0])

    def read(self, conn: Conn) -> DatabaseState:
        """The recorded state; does not create anything."""
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s)::text",
            (sql.Identifier(self.schema, self.table).as_string(conn), LEGACY_TABLE),
        ).fetchone()
        assert found is not None
        exists = bool(found[0])
        legacy = self._read_legacy(conn, str(found[1])) if found[1] else None
        rows: dict[int, HistoryRow] = {}
        if exists:
            query = sql.SQL(
                "SELECT version, name, checksum, applied_at, duration_ms, state, progress, source"
                " FROM {} ORDER BY version"
            ).format(self.ident)
            for r in conn.execute(query).fetchall():
                row = HistoryRow(
                    int(r[0]),  # type: ignore[call-overload]
                    str(r[1]),
                    str(r[2]),
                    r[3],  # type: ignore[arg-type]
                    float(r[4]),  # type: ignore[arg-type]
                    str(r[5]),
                    None if r[6] is None else int(r[6]),  # type: ignore[call-overload]
                    str(r[7]),
                )
                rows[row.version] = row
        return DatabaseState(exists, rows, legacy)

    def _read_legacy(self, conn: Conn, regclass: str) -> LegacyTable | None:
        """golang-migrate's (version bigint, dirty boolean) or dbmate's (version varchar)."""
        columns: dict[str, str] = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (regclass,),
            ).fetchall()
        )
        if columns.get("version") == "bigint" and columns.get("dirty") == "boolean":
            row = conn.execute(
                sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(sql.SQL(regclass))
            ).fetchone()
            legacy = LegacyTable("golang-migrate")
            if row is not None and row[0] is not None and int(row[0]) >= 0:  # type: ignore[call-overload]
                legacy.golang_version = int(row[0])  # type: ignore[call-overload]
                legacy.golang_dirty = bool(row[1])
            return legacy
        if "version" in columns and columns["version"].startswith(("character varying", "text")):
            legacy = LegacyTable("dbmate")
            for (version,) in conn.execute(
                sql.SQL("SELECT version FROM {}").format(sql.SQL(regclass))
            ).fetchall():
                text = str(version).strip()
                if text.isdigit():
                    legacy.dbmate_versions.add(int(text))
            return legacy
        return None

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
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(),"
                " duration_ms double precision NOT NULL DEFAULT 0,"
                " state text NOT NULL DEFAULT 'applied' CHECK (state IN ('applied', 'partial')),"
                " progress integer,"
                " source text NOT NULL DEFAULT 'heroku-migrate')"
            ).format(self.ident)
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " id bigserial PRIMARY KEY,"
                " at timestamptz NOT NULL DEFAULT clock_timestamp(),"
                " event text NOT NULL,"
                " detail text NOT NULL)"
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
                " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[],"
                " %s::double precision[], %s::text[])"
                " ON CONFLICT (version) DO UPDATE SET name = excluded.name,"
                " checksum = excluded.checksum, applied_at = now(),"
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

    def last_events(self, conn: Conn, limit: int = 5) -> list[tuple[dt.datetime, str, str]]:
        """The newest log entries, newest first (empty when the log table does not exist)."""
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (self.log_ident.as_string(conn),)
        ).fetchone()
        if not found or not found[0]:
            return []
        rows = conn.execute(
            sql.SQL("SELECT at, event, detail FROM {} ORDER BY id DESC LIMIT %s").format(
                self.log_ident
            ),
            (limit,),
        ).fetchall()
        return [(r[0], str(r[1]), str(r[2])) for r in rows]  # type: ignore[misc]

    def sync_legacy(self, conn: Conn, legacy: LegacyTable | None, applied: set[int]) -> None:
        """Keep golang-migrate's one-row table (and dbmate's list) matching what is applied."""
        if legacy is None:
            return
        table = sql.Identifier(LEGACY_TABLE)
        if legacy.tool == "golang-migrate":
            conn.execute(sql.SQL("DELETE FROM {}").format(table))
            if applied:
                conn.execute(
                    sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, false)").format(table),
                    (max(applied),),
                )
        else:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE NOT (version = ANY(%s::text[]))").format(table),
                ([str(v) for v in applied],),
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (version) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"
                ).format(table),
                ([str(v) for v in applied],),
            )


def adopt(
    legacy: LegacyTable | None, migrations: list[Migration], rows: dict[int, HistoryRow]
) -> list[Migration]:
    """Migrations that the legacy table says are applied but our history lacks.

    golang-migrate records only the newest version: every file up to it counts as applied.
    A dirty golang-migrate row stops the run, as golang-migrate itself would.
    """
    if legacy is None:
        return []
    if legacy.tool == "golang-migrate":
        if legacy.golang_dirty:
            raise BadInput(
                f"{LEGACY_TABLE} (golang-migrate) is dirty at version {legacy.golang_version}: "
                "a migration failed half-way under golang-migrate",
                fix="Repair the schema by hand, then mark the last good version with "
                "`heroku-migrate force VERSION` (it clears the dirty flag).",
            )
        if legacy.golang_version is None:
            return []
        return [
            m for m in migrations if m.version <= legacy.golang_version and m.version not in rows
        ]
    return [m for m in migrations if m.version in legacy.dbmate_versions and m.version not in rows]
