"""Our history table of applied migrations, and its event log.

The table's `version` column is `bigint` when the table is created for a format whose versions
are integers (golang-migrate, dbmate, goose: what every release before the format seam created,
so that `heroku rollback` to an old slug, whose older runner reads `version` as an integer,
still works), and `text` for formats whose versions are not (`VersionSyntax.column_type`). An
existing table is never altered: rows are read as `version::text` and parsed by the folder's
version syntax, and written through the column's own type.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from psycopg import sql
from psycopg.rows import class_row, kwargs_row

from herokumigrate.downstore import DownStore
from herokumigrate.errors import BadInput
from herokumigrate.signals import transaction

if TYPE_CHECKING:
    from collections.abc import Iterable

    import psycopg

    from herokumigrate.migration import Migration
    from herokumigrate.versions import Version, VersionSyntax

    Conn = psycopg.Connection[tuple[object, ...]]

SOURCE_RUNNER = "heroku-migrate"


class HistoryState(Enum):
    """A history row's `state` column: all of a migration ran, or only its first statements."""

    APPLIED = "applied"
    PARTIAL = "partial"


@dataclass(frozen=True)
class HistoryRow:
    """One applied (or partly applied) migration, as recorded."""

    version: Version
    name: str
    checksum: str
    applied_at: dt.datetime | None
    duration_ms: float
    state: HistoryState
    progress: int | None
    source: str


# A history row as far as the next run is concerned: its state, and its progress if partial.
RecordedState: TypeAlias = "tuple[HistoryState, int | None]"


class LogEvent(NamedTuple):
    """One entry of the event log."""

    at: dt.datetime
    event: str
    detail: str


class HistoryTable:
    """Reads and writes `<schema>.<table>` and its `<table>_log` event log; versions are read
    and written in `syntax` (see the module's docstring)."""

    def __init__(self, schema: str, table: str, syntax: VersionSyntax) -> None:
        self.schema = schema
        self.table = table
        self.syntax = syntax
        self.ident = sql.Identifier(schema, table)
        self.log_ident = sql.Identifier(schema, table + "_log")
        self.downs = DownStore(schema, table)  # each applied migration's down (downstore.py)
        # Versions as sent: text, made the column's type (bigint, or text) by the server.
        self._versions = sql.SQL("%s::pg_catalog.text[]::{}[]").format(sql.SQL(syntax.column_type))

    def fingerprint_sql(self) -> sql.SQL:
        """The quick check's expression: `version:checksum` of every row, by version text, and
        whether all are applied (`migrator.up`'s first query; `expected_fingerprint` is what it
        must equal)."""
        return sql.SQL(
            "coalesce(pg_catalog.string_agg(version::pg_catalog.text || ':' || checksum,"
            " ',' ORDER BY version::pg_catalog.text COLLATE \"C\") = %s"
            " AND pg_catalog.bool_and(state = 'applied'), false)"
        )

    def read(self, conn: Conn) -> dict[Version, HistoryRow] | None:
        """Every recorded row by version; None when the table does not exist."""
        if not _relation_exists(conn, self.ident.as_string(conn)):
            return None
        query = sql.SQL(
            "SELECT version::pg_catalog.text AS version, name, checksum, applied_at,"
            " duration_ms, state, progress, source FROM {}"
        ).format(self.ident)
        with conn.cursor(row_factory=kwargs_row(self._row)) as cur:
            return {row.version: row for row in sorted(cur.execute(query), key=_by_version)}

    def _row(
        self,
        *,
        version: str,
        name: str,
        checksum: str,
        applied_at: dt.datetime | None,
        duration_ms: float,
        state: str,
        progress: int | None,
        source: str,
    ) -> HistoryRow:
        """A row of our table, its version parsed and its `state` made a HistoryState (a
        psycopg row factory)."""
        return HistoryRow(
            self.syntax.parse(version),
            name,
            checksum,
            applied_at,
            duration_ms,
            HistoryState(state),
            progress,
            source,
        )

    def require_privileges(self, conn: Conn) -> None:
        """BadInput naming the grants the role lacks on our existing tables (SELECT, INSERT,
        UPDATE, DELETE on the history; SELECT, INSERT on its log): checked before a run, so a
        permission problem is not reported as a migration's doing, after the migrations ran."""
        names = [self.ident.as_string(conn), self.log_ident.as_string(conn)]
        missing = conn.execute(
            "SELECT t.name, p.privilege, current_user FROM unnest(%s::text[]) WITH ORDINALITY"
            " AS t(name, n) CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'])"
            " WITH ORDINALITY AS p(privilege, m)"
            " WHERE pg_catalog.to_regclass(t.name) IS NOT NULL"
            " AND (t.n = 1 OR p.privilege IN ('SELECT', 'INSERT'))"
            " AND NOT pg_catalog.has_table_privilege(pg_catalog.to_regclass(t.name), p.privilege)"
            " ORDER BY t.n, p.m",
            (names,),
        ).fetchall()
        if not missing:
            return
        role = str(missing[0][2])
        grants: dict[str, list[str]] = {}
        for name, privilege, _ in missing:
            grants.setdefault(str(name), []).append(str(privilege))
        lacks = "; ".join(f"{', '.join(p)} on {name}" for name, p in grants.items())
        statements = " ".join(
            f"GRANT {', '.join(p)} ON {name} TO {sql.Identifier(role).as_string(conn)};"
            for name, p in grants.items()
        )
        raise BadInput(
            f"the database role {role} lacks {lacks} (heroku-migrate's history): a permission "
            "problem, found before anything ran",
            fix=f"As the tables' owner, run: {statements} Or connect as their owner.",
        )

    def log_exists(self, conn: Conn) -> bool:
        """True when the event log table exists."""
        return _relation_exists(conn, self.log_ident.as_string(conn))

    def create(self, conn: Conn) -> None:
        """Create the history and log tables if missing (inside the caller's transaction), the
        version column of the syntax's type."""
        if self.schema != "public":
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version {} PRIMARY KEY,"
                " name pg_catalog.text NOT NULL,"
                " checksum pg_catalog.text NOT NULL,"
                " applied_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),"
                " duration_ms double precision NOT NULL DEFAULT 0,"
                " state pg_catalog.text NOT NULL DEFAULT 'applied'"
                " CHECK (state IN ('applied', 'partial')),"
                " progress integer,"
                " source pg_catalog.text NOT NULL DEFAULT 'heroku-migrate')"
            ).format(self.ident, sql.SQL(self.syntax.column_type))
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
        self.downs.create(conn)

    def record_applied(
        self, conn: Conn, done: Iterable[tuple[Migration, float]], source: str = SOURCE_RUNNER
    ) -> None:
        """Upsert `applied` rows for migrations (with their durations in ms) in one statement,
        and store their downs (downstore.py)."""
        items = list(done)
        if not items:
            return
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version, name, checksum, duration_ms, source)"
                " SELECT * FROM ROWS FROM (pg_catalog.unnest({}),"
                " pg_catalog.unnest(%s::pg_catalog.text[]),"
                " pg_catalog.unnest(%s::pg_catalog.text[]),"
                " pg_catalog.unnest(%s::double precision[]),"
                " pg_catalog.unnest(%s::pg_catalog.text[]))"
                " ON CONFLICT (version) DO UPDATE SET name = excluded.name,"
                " checksum = excluded.checksum, applied_at = pg_catalog.now(),"
                " duration_ms = {}.duration_ms + excluded.duration_ms,"
                " state = 'applied', progress = NULL, source = excluded.source"
            ).format(self.ident, self._versions, sql.Identifier(self.table)),
            (
                [m.version.canonical for m, _ in items],
                [m.name for m, _ in items],
                [m.checksum for m, _ in items],
                [round(ms, 3) for _, ms in items],
                [source] * len(items),
            ),
        )
        self.downs.record(conn, [m for m, _ in items])

    def record_partial(self, conn: Conn, migration: Migration, progress: int, ms: float) -> None:
        """Mark a migration as partly applied: `progress` statements of its up section ran."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version, name, checksum, duration_ms, state, progress)"
                " VALUES (%s::pg_catalog.text::{}, %s, %s, %s, 'partial', %s)"
                " ON CONFLICT (version) DO UPDATE SET state = 'partial',"
                " progress = excluded.progress, checksum = excluded.checksum,"
                " duration_ms = {}.duration_ms + excluded.duration_ms"
            ).format(self.ident, sql.SQL(self.syntax.column_type), sql.Identifier(self.table)),
            (
                migration.version.canonical,
                migration.name,
                migration.checksum,
                round(ms, 3),
                progress,
            ),
        )

    def delete(self, conn: Conn, versions: Iterable[Version]) -> None:
        """Forget migrations (after their downs ran, or by `force`), and their stored downs."""
        canonical = [v.canonical for v in versions]
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE version = ANY({})").format(self.ident, self._versions),
            (canonical,),
        )
        self.downs.delete(conn, canonical)

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

    def applied_and_partial(self, conn: Conn) -> tuple[set[Version], set[Version]]:
        """The versions the table records as fully applied, and as partly applied, read now
        (in the caller's transaction: what it wrote included)."""
        query = sql.SQL("SELECT version::pg_catalog.text, state = 'applied' FROM {}").format(
            self.ident
        )
        found = [(self.syntax.parse(str(v)), bool(done)) for v, done in conn.execute(query)]
        return {v for v, done in found if done}, {v for v, done in found if not done}

    def accept_checksums(self, conn: Conn, changed: Iterable[Migration]) -> None:
        """Record the edited content of applied migrations as accepted (`allow_changed`): their
        rows take the files' checksums, and the log says which changed from what."""
        changed = list(changed)
        for m in changed:
            row = conn.execute(
                sql.SQL(
                    "UPDATE {} AS h SET checksum = %s"
                    " FROM (SELECT version, checksum FROM {}) AS old"
                    " WHERE h.version = old.version AND h.version::pg_catalog.text = %s"
                    " AND h.checksum <> %s RETURNING old.checksum"
                ).format(self.ident, self.ident),
                (m.checksum, m.version.canonical, m.checksum),
            ).fetchone()
            if row is not None:
                self.log(
                    conn,
                    "accepted change",
                    f"{m.filename}: edited after it was applied; checksum {str(row[0])[:12]} "
                    f"-> {m.checksum[:12]} accepted (allow_changed)",
                )
        self.downs.record(conn, changed)  # the accepted content's down

    def drop(self, conn: Conn) -> None:
        """Drop the history, log and downs tables (a failed first release leaves nothing
        behind)."""
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(self.log_ident, self.ident))
        self.downs.drop(conn)


def _exists_of(*, found: bool) -> bool:
    return found


def _relation_exists(conn: Conn, name: str) -> bool:
    """The one existence check of a (possibly qualified, quoted) table name."""
    with conn.cursor(row_factory=kwargs_row(_exists_of)) as cur:
        found = cur.execute(
            "SELECT pg_catalog.to_regclass(%s) IS NOT NULL AS found", (name,)
        ).fetchone()
    return bool(found)


def _by_version(row: HistoryRow) -> Version:
    return row.version
