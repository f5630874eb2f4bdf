"""Our history table for a format whose versions are not integers, and for one whose are: the
version column's type, rows written and read back by version, ordered by the format's key
(not the text's), forgotten, and the quick check of a release with nothing to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import psycopg
import pytest
from psycopg import sql

from herokumigrate.history import HistoryState, HistoryTable
from herokumigrate.ledger import Ledger
from herokumigrate.migration import Migration, checksum_of
from herokumigrate.native_tables import NativeTables
from herokumigrate.sections import SourceFile, SqlSection
from herokumigrate.versions import INTEGER, Version, VersionSyntax

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.db


class DottedVersions:
    """Versions like Flyway's: numeric dotted parts, trailing zero parts ignored."""

    name = "dotted"
    column_type: Literal["bigint", "text"] = "text"

    def parse(self, written: str) -> Version:
        parts = [int(part) for part in written.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return Version(tuple(parts), ".".join(map(str, parts)), written)


def _migration(tmp_path: Path, syntax: VersionSyntax, written: str) -> Migration:
    text = f"SELECT '{written}';\n"
    path = tmp_path / f"{written}.sql"
    path.write_text(text)
    section = SqlSection(SourceFile(str(path), path.name), text)
    return Migration(syntax.parse(written), f"m{written}", "dbmate", section, checksum_of(text))


def _fingerprint_matches(
    conn: psycopg.Connection[tuple[object, ...]], table: HistoryTable, applied: list[Migration]
) -> bool:
    """What `Ledger.matches` asks of our table: exactly these, all applied, these checksums."""
    pairs = sorted((m.version.canonical, m.checksum) for m in applied)
    expected = ",".join(f"{version}:{checksum}" for version, checksum in pairs)
    query = sql.SQL("SELECT {} FROM {}").format(table.fingerprint_sql(), table.ident)
    row = conn.execute(query, (expected,)).fetchone()
    assert row is not None
    return bool(row[0])


def _column_type(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'public.heroku_migrate_history'::regclass AND attname = 'version'"
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(
    ("syntax", "written", "column"),
    [
        (DottedVersions(), ["1.9", "1.10", "2", "1.2.0"], "text"),
        (INTEGER, ["9", "10", "2", "0100"], "bigint"),
    ],
    ids=["text", "integer"],
)
def test_history_keeps_versions_in_the_formats_syntax(
    database_url: str, tmp_path: Path, syntax: VersionSyntax, written: list[str], column: str
) -> None:
    migrations = [_migration(tmp_path, syntax, w) for w in written]
    table = HistoryTable("public", "heroku_migrate_history", syntax)
    ledger = Ledger(table, NativeTables())
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            table.create(conn)
            table.record_applied(conn, [(m, 1.0) for m in migrations[:-1]])
            table.record_partial(conn, migrations[-1], 1, 2.0)
        assert _column_type(conn) == column
        state = ledger.read(conn)
        assert list(state.rows) == sorted(m.version for m in migrations)
        by_version = {m.version: m for m in migrations}
        for version, row in state.rows.items():
            assert row.version.canonical == by_version[version].version.canonical
            assert row.name == by_version[version].name
        assert state.rows[migrations[-1].version].state is HistoryState.PARTIAL
        # The quick check's half on our table: not all applied yet, then all of them.
        assert not _fingerprint_matches(conn, table, migrations)
        with conn.transaction():
            table.record_applied(conn, [(migrations[-1], 3.0)])
            table.delete(conn, [migrations[0].version])
        assert _fingerprint_matches(conn, table, migrations[1:])
        assert not _fingerprint_matches(conn, table, migrations)
        applied, partial = table.applied_and_partial(conn)
        assert applied == {m.version for m in migrations[1:]}
        assert partial == set()
        assert list(ledger.read(conn).rows) == sorted(m.version for m in migrations[1:])
