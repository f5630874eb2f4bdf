"""The downs kept with the applied migrations, in `<history table>_rev`, so that a release whose
files no longer have a migration (`heroku rollback` to an older slug) can still revert it
(rollback.py, docs/rollback.md).

Each row is written with the migration's history row, in the same transaction: the down's text
and checksum, or "empty" (reverting it runs nothing), or "none" (it cannot be reverted), and how
its tool runs it (in a transaction or not, sent as one query, goose's single-statement blocks),
so that the section is rebuilt as its file made it. The up is kept the same way (up to 1 MiB): a
revert whose downs cannot all run in one transaction is compensated by applying again what it
reverted. A row belongs to the content it was stored with (`up_checksum`): one whose up
checksum differs from the history's (a runner from before this table re-applied an edited file)
is not used. A table of its own, not columns of the history: an older runner (an older slug's)
keeps reading and writing the history as it always did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from psycopg import sql

from herokumigrate.errors import BadInput
from herokumigrate.migration import checksum_of
from herokumigrate.sections import SourceFile, SqlSection

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg

    from herokumigrate.migration import DownKind, Migration

    Conn = psycopg.Connection[tuple[object, ...]]

# `<history table>_rev`: as long as `_log`, so the history table's length limit covers both.
DOWNS_SUFFIX = "_rev"
# Ups longer than this (data loads) are not stored: the database would hold them twice. A
# revert that would need one to compensate refuses instead (rollback.py).
MAX_STORED_UP = 1 << 20


class StoredSection(NamedTuple):
    """A section's SQL and how its tool runs it, as stored."""

    sql: str
    file: str  # the file it was read from, as shown
    first_line: int
    in_transaction: bool
    one_query: bool
    single_statements: tuple[tuple[int, int], ...]  # offsets in `sql`

    @classmethod
    def of(cls, section: SqlSection) -> StoredSection:
        """What is stored of `section`."""
        start = section.start
        spans = tuple((a - start, b - start) for a, b in section.single_statements)
        return cls(
            section.sql,
            section.path.shown,
            section.first_line,
            section.transaction,
            section.one_query,
            spans,
        )

    def section(self) -> SqlSection:
        """The section rebuilt; its file is shown as `<file> (stored)`: this slug lacks it."""
        shown = f"{self.file} (stored)"
        return SqlSection(
            SourceFile(shown, shown),
            self.sql,
            first_line=self.first_line,
            transaction=self.in_transaction,
            single_statements=self.single_statements,
            one_query=self.one_query,
        )


class StoredDown(NamedTuple):
    """One applied migration's down (and up) as stored when it was applied."""

    written: str  # the version as its file wrote it ("001")
    name: str
    tool: str
    up_checksum: str  # the applied content it belongs to
    kind: DownKind
    down: StoredSection | None  # None for "none"
    checksum: str | None  # the down's SQL's
    up: StoredSection | None  # None: not stored (over MAX_STORED_UP)


def stored_down_of(m: Migration) -> StoredDown:
    """What is stored for `m`: its down read from its file (a down file that cannot be read is
    stored as "none": a revert then refuses rather than guesses), and its up."""
    try:
        section = m.down
    except BadInput:
        section = None
    kind: DownKind = "none" if section is None else m.down_kind
    down = StoredSection.of(section) if section is not None else None
    checksum = checksum_of(down.sql) if down is not None else None
    up = StoredSection.of(m.up) if m.up.stop - m.up.start <= MAX_STORED_UP else None
    return StoredDown(m.version.written, m.name, m.format, m.checksum, kind, down, checksum, up)


# Columns of a stored section, after a prefix (`down_`, `up_`).
_SECTION_COLUMNS = ("sql", "file", "first_line", "in_transaction", "one_query", "singles")
_SECTION_TYPES = ("pg_catalog.text", "pg_catalog.text", "integer", "boolean", "boolean", "text")


class DownStore:
    """Reads and writes `<schema>.<table>_rev` (see the module's docstring)."""

    def __init__(self, schema: str, table: str) -> None:
        self.ident = sql.Identifier(schema, table + DOWNS_SUFFIX)

    def exists(self, conn: Conn) -> bool:
        """True when the table exists, read now (not remembered: a transaction that created
        it may be rolled back and retried)."""
        row = conn.execute(
            "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (self.ident.as_string(conn),)
        ).fetchone()
        return bool(row and row[0])

    def create(self, conn: Conn) -> None:
        """Create the table if missing (the caller's transaction). A section's single-statement
        spans are kept as text `start-end,start-end`."""
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version pg_catalog.text PRIMARY KEY,"
                " written pg_catalog.text NOT NULL,"
                " name pg_catalog.text NOT NULL,"
                " tool pg_catalog.text NOT NULL,"
                " up_checksum pg_catalog.text NOT NULL,"
                " kind pg_catalog.text NOT NULL CHECK (kind IN ('sql', 'empty', 'none')),"
                " down_checksum pg_catalog.text,"
                " down_sql pg_catalog.text, down_file pg_catalog.text, down_first_line integer,"
                " down_in_transaction boolean, down_one_query boolean,"
                " down_singles pg_catalog.text,"
                " up_sql pg_catalog.text, up_file pg_catalog.text, up_first_line integer,"
                " up_in_transaction boolean, up_one_query boolean, up_singles pg_catalog.text,"
                " stored_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now())"
            ).format(self.ident)
        )

    def record(self, conn: Conn, migrations: Sequence[Migration]) -> None:
        """Store the downs of `migrations` (applied in the caller's transaction), replacing
        what an earlier application stored; creates the table if missing (a history from
        before it). One statement, whatever the number."""
        if not migrations:
            return
        if not self.exists(conn):
            self.create(conn)
        stored = [stored_down_of(m) for m in migrations]
        columns = ["version", "written", "name", "tool", "up_checksum", "kind", "down_checksum"]
        types = ["pg_catalog.text"] * len(columns)
        values: list[list[object]] = [
            [m.version.canonical for m in migrations],
            [s.written for s in stored],
            [s.name for s in stored],
            [s.tool for s in stored],
            [s.up_checksum for s in stored],
            [s.kind for s in stored],
            [s.checksum for s in stored],
        ]
        for prefix in ("down_", "up_"):
            sections = [s.down if prefix == "down_" else s.up for s in stored]
            for i, (column, kind) in enumerate(zip(_SECTION_COLUMNS, _SECTION_TYPES, strict=True)):
                columns.append(prefix + column)
                types.append(kind)
                values.append([None if x is None else _column_value(x, i) for x in sections])
        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        unnest = sql.SQL(", ").join(
            sql.SQL("pg_catalog.unnest(%s::{}[])").format(sql.SQL(t)) for t in types
        )
        update = sql.SQL(", ").join(
            sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in columns[1:]
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT * FROM ROWS FROM ({})"
                " ON CONFLICT (version) DO UPDATE SET {}, stored_at = pg_catalog.now()"
            ).format(self.ident, names, unnest, update),
            values,
        )

    def read(self, conn: Conn, versions: Sequence[str]) -> dict[str, StoredDown]:
        """The stored downs of these versions (canonical text), by version; {} when the table
        does not exist."""
        if not versions or not self.exists(conn):
            return {}
        sections = [p + c for p in ("down_", "up_") for c in _SECTION_COLUMNS]
        columns = ["version", "written", "name", "tool", "up_checksum", "kind", "down_checksum"]
        query = sql.SQL("SELECT {} FROM {} WHERE version = ANY(%s::pg_catalog.text[])").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns + sections), self.ident
        )
        result: dict[str, StoredDown] = {}
        for row in conn.execute(query, (list(versions),)).fetchall():
            head, down, up = row[:7], row[7:13], row[13:19]
            kind = str(head[5])
            result[str(head[0])] = StoredDown(
                str(head[1]),
                str(head[2]),
                str(head[3]),
                str(head[4]),
                kind,  # type: ignore[arg-type]
                _section_of(down) if kind != "none" else None,
                None if head[6] is None else str(head[6]),
                _section_of(up) if up[0] is not None else None,
            )
        return result

    def kinds(self, conn: Conn) -> dict[str, tuple[str, str]]:
        """Every stored down's kind and the up checksum it belongs to, by version (for
        `status`: no SQL text is read)."""
        if not self.exists(conn):
            return {}
        query = sql.SQL("SELECT version, kind, up_checksum FROM {}").format(self.ident)
        return {str(v): (str(k), str(c)) for v, k, c in conn.execute(query).fetchall()}

    def delete(self, conn: Conn, versions: Sequence[str]) -> None:
        """Forget the downs of these versions (canonical text), if the table exists."""
        if versions and self.exists(conn):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE version = ANY(%s::pg_catalog.text[])").format(
                    self.ident
                ),
                (list(versions),),
            )

    def drop(self, conn: Conn) -> None:
        """Drop the table (with the history, by a failed first release)."""
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.ident))


def _column_value(section: StoredSection, index: int) -> object:
    """Column `index` of _SECTION_COLUMNS for `section`."""
    if index == len(_SECTION_COLUMNS) - 1:
        return ",".join(f"{a}-{b}" for a, b in section.single_statements)
    return section[index]


def _section_of(values: Sequence[object]) -> StoredSection:
    """A stored section from its columns, in _SECTION_COLUMNS' order."""
    text, file, first_line, in_transaction, one_query, singles = values
    spans = tuple(
        (int(a), int(b))
        for a, b in (part.split("-") for part in str(singles or "").split(",") if part)
    )
    return StoredSection(
        str(text or ""),
        str(file),
        int(first_line),  # type: ignore[call-overload]
        bool(in_transaction),
        bool(one_query),
        spans,
    )
