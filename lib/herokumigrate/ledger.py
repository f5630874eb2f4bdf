"""What the database says has been applied: our history and the tool's own table, read together
(`Ledger.read`), and the quick check that answers a release with nothing to do in one query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import sql

from herokumigrate.history import HistoryState

if TYPE_CHECKING:
    from herokumigrate.history import Conn, HistoryRow, HistoryTable, RecordedState
    from herokumigrate.manifest import Fingerprint
    from herokumigrate.native import NativeName, NativeTable
    from herokumigrate.native_tables import NativeTables
    from herokumigrate.versions import Version


@dataclass(frozen=True)
class DatabaseState:
    """What the database says has been applied: our rows (`exists`: our table is there), the
    tool's table as read, the names found holding a table of no tool, and the session's
    search_path before any migration ran (the tool's table is found through it)."""

    exists: bool
    rows: dict[Version, HistoryRow]
    native: NativeTable | None
    occupied: frozenset[NativeName] = frozenset()
    search_path: str | None = None

    def recorded(self) -> dict[Version, RecordedState]:
        """Each recorded version's state and progress, to compare two readings."""
        return {v: (r.state, r.progress) for v, r in self.rows.items()}

    def applied_versions(self) -> set[Version]:
        """Versions recorded as fully applied."""
        return {v for v, r in self.rows.items() if r.state is HistoryState.APPLIED}


class Ledger:
    """Reads our history and the tool's table for one session."""

    def __init__(self, history: HistoryTable, native_tables: NativeTables) -> None:
        self.history = history
        self.native_tables = native_tables
        # The session's search_path at its first reading, before any migration could change it.
        self._search_path: str | None = None

    def read(self, conn: Conn) -> DatabaseState:
        """The recorded state; does not create anything."""
        if self._search_path is None:
            row = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
            self._search_path = str(row[0]) if row else ""
        rows = self.history.read(conn)
        found = self.native_tables.read(conn)
        return DatabaseState(
            rows is not None, rows or {}, found.table, found.occupied, self._search_path
        )

    def matches(self, conn: Conn, fingerprint: Fingerprint) -> bool:
        """True when the history holds exactly these migrations, all applied with these
        checksums, and the native tool's table exists and says the same: the common release
        with nothing to do.

        One round trip and one row for our history (instead of fetching every row, which costs
        the pure-Python driver about 17 ms per 1000 rows) and the native table's columns; a
        second reads the native table, only when ours matches."""
        from psycopg import errors as pg_errors

        if not fingerprint.migrations:
            return False
        pairs = sorted((v.canonical, checksum) for v, checksum in fingerprint.migrations)
        expected = ",".join(f"{version}:{checksum}" for version, checksum in pairs)
        query = sql.SQL("SELECT {} AS ours, {} AS native FROM {}").format(
            self.history.fingerprint_sql(), self.native_tables.columns_sql(), self.history.ident
        )
        try:
            row = conn.execute(query, (expected,)).fetchone()
        except pg_errors.UndefinedTable:
            return False  # first contact: the full read will say so
        if row is None or not row[0]:
            return False
        # The native tool's table must say the same (a second round trip only when it exists).
        native = self.native_tables.from_columns(conn, str(row[1])).table
        applied = {version for version, _ in fingerprint.migrations}
        return native is not None and native.agrees(applied)
