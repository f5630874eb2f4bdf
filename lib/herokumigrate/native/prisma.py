"""Prisma Migrate's table: `_prisma_migrations`, one row per attempt to apply a migration, as the
schema engine writes it (sql-schema-connector): a UUID `id`, the file's SHA-256 `checksum`, the
`migration_name` (its folder's name), `started_at`, and, once it ran, `finished_at` and
`applied_steps_count = 1`. A failed `migrate deploy` leaves its row with `finished_at` NULL and
the error in `logs`: every later deploy refuses (P3009) until `prisma migrate resolve` marks it
`--rolled-back` (`rolled_back_at` set: not applied) or `--applied` (a new finished row). A row
with `rolled_back_at` set never counts as applied. Its lock: `pg_advisory_lock(72707369)`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from psycopg import sql

from herokumigrate.errors import BadInput
from herokumigrate.formats.prisma import PrismaVersions, checksum_of_bytes, line_ending_variants
from herokumigrate.native import NativeFailure, NativeName, NativeTable

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from herokumigrate.lock import LockScope
    from herokumigrate.migration import Migration
    from herokumigrate.native import Conn, NativeChange, Resolution
    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version

# The schema engine's advisory lock key (sql-schema-connector's flavour/postgres.rs).
ADVISORY_LOCK_KEY = 72707369
_SYNTAX = PrismaVersions()


class PrismaRow(NamedTuple):
    """A row of `_prisma_migrations`, as far as a run needs it."""

    name: str
    checksum: str
    finished: bool
    rolled_back: bool
    logs: str | None


class PrismaTable(NativeTable):
    """Prisma's `_prisma_migrations` (see the module's docstring)."""

    tool: ClassVar[ToolName] = "prisma"
    default_table: ClassVar[str] = "_prisma_migrations"
    up_command: ClassVar[str] = "npx prisma migrate deploy"

    def __init__(self, rows: Sequence[PrismaRow] = (), name: NativeName | None = None) -> None:
        super().__init__(name)
        self.rows = list(rows)
        live = [r for r in rows if not r.rolled_back]
        self._applied = {_SYNTAX.parse(r.name): r for r in live if r.finished}
        self._failed = [r for r in live if not r.finished]

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return "migration_name" in columns and "applied_steps_count" in columns

    @classmethod
    def read(cls, conn: Conn, name: NativeName) -> PrismaTable:
        query = sql.SQL(
            "SELECT migration_name, checksum, finished_at IS NOT NULL,"
            " rolled_back_at IS NOT NULL, logs FROM {} ORDER BY started_at, finished_at"
        )
        found = conn.execute(query.format(name.ident)).fetchall()
        rows = [
            PrismaRow(str(n), str(c), bool(f), bool(r), None if logs is None else str(logs))
            for n, c, f, r, logs in found
        ]
        return cls(rows, name)

    @classmethod
    def lock_keys(cls, scope: LockScope) -> list[int]:
        """The key `prisma migrate deploy` holds while it runs."""
        del scope
        return [ADVISORY_LOCK_KEY]

    def applied(self) -> frozenset[Version] | None:
        return frozenset(self._applied)

    def checksum_of(self, version: Version) -> str | None:
        row = self._applied.get(version)
        return row.checksum if row is not None else None

    def edited(self, migration: Migration) -> bool:
        """Whether the applied file changed since Prisma recorded it: its checksum differs
        from the row's, and from those of the file's CRLF<->LF variants (which Prisma
        accepts: a checkout on another system)."""
        kept = self.checksum_of(migration.version)
        if kept is None or kept == migration.checksum:
            return False
        try:
            with open(migration.up.path.full, "rb") as handle:
                data = handle.read()
        except OSError:
            return True
        return kept not in line_ending_variants(data)

    def failure(self) -> NativeFailure | None:
        if not self._failed:
            return None
        row = self._failed[0]
        logs = f" Its log: {_first_line(row.logs)}." if row.logs else ""
        return NativeFailure(
            _SYNTAX.parse(row.name),
            f"{self.table} (Prisma) records that migration {row.name} started but did not "
            f"finish: Prisma refuses to migrate from there (P3009).{logs}",
            "Repair the schema by hand, then run `heroku run heroku-migrate resolve "
            f"{row.name} --applied` if its changes are in the database, or `--rolled-back` if "
            "none are (it is then applied again): what `prisma migrate resolve` does.",
        )

    def in_flight(self) -> Version | None:
        return _SYNTAX.parse(self._failed[0].name) if self._failed else None

    def resolve(self, conn: Conn, version: Version, outcome: Resolution) -> None:
        """As `prisma migrate resolve`: rolled back, the unfinished row gets `rolled_back_at`;
        applied, it does too, and a finished row is added (`applied_steps_count` 0: nothing
        was run), with the failed row's checksum."""
        table = self.name.ident
        done = conn.execute(
            sql.SQL(
                "UPDATE {} SET rolled_back_at = now() WHERE migration_name = %s"
                " AND finished_at IS NULL AND rolled_back_at IS NULL RETURNING checksum"
            ).format(table),
            (version.written,),
        ).fetchall()
        if not done:
            raise BadInput(
                f"{self.table} (Prisma) has no unfinished row for migration {version.written}",
                fix="Run `heroku-migrate status` to see which migration, if any, failed.",
            )
        if outcome == "applied":
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, checksum, migration_name, started_at, finished_at,"
                    " applied_steps_count) VALUES (%s, %s, %s, now(), now(), 0)"
                ).format(table),
                (_uuid4(), str(done[0][0]), version.written),
            )

    def create(self, conn: Conn) -> None:
        # The schema engine's DDL for PostgreSQL, column for column.
        self.create_schema(conn)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id VARCHAR(36) PRIMARY KEY NOT NULL,"
                " checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,"
                " migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,"
                " started_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
                " applied_steps_count INTEGER NOT NULL DEFAULT 0)"
            ).format(self.name.ident)
        )

    def follow(self, conn: Conn, change: NativeChange) -> None:
        # As `migrate deploy`: a row when a migration starts (finished_at NULL: what a
        # migration left part-way keeps), finished with applied_steps_count 1 once it ran; a
        # reverted one is marked rolled back (Prisma then applies it again). A finished row it
        # has already is left as it is (adopted).
        table = self.name.ident
        if change.removed:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET rolled_back_at = now()"
                    " WHERE migration_name = ANY(%s::text[]) AND rolled_back_at IS NULL"
                ).format(table),
                ([v.written for v in change.removed],),
            )
        if change.in_flight is not None:
            self._start(conn, change.in_flight.written, _checksum_for(change))
        for applied in change.recorded:
            m = applied.migration
            name = m.version.written
            finished = conn.execute(
                sql.SQL(
                    "UPDATE {} SET finished_at = now(), applied_steps_count = 1, checksum = %s"
                    " WHERE migration_name = %s AND finished_at IS NULL"
                    " AND rolled_back_at IS NULL"
                ).format(table),
                (checksum(m), name),
            )
            if finished.rowcount == 0:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, checksum, finished_at, migration_name,"
                        " started_at, applied_steps_count)"
                        " SELECT %s, %s, now(), %s, now(), 1 WHERE NOT EXISTS (SELECT FROM {}"
                        " WHERE migration_name = %s AND finished_at IS NOT NULL"
                        " AND rolled_back_at IS NULL)"
                    ).format(table, table),
                    (_uuid4(), checksum(m), name, name),
                )
        for m in change.rechecked:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET checksum = %s WHERE migration_name = %s"
                    " AND finished_at IS NOT NULL AND rolled_back_at IS NULL"
                ).format(table),
                (checksum(m), m.version.written),
            )

    def _start(self, conn: Conn, name: str, file_checksum: str) -> None:
        """The row `migrate deploy` writes before it runs a migration (none when one is)."""
        table = self.name.ident
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, checksum, migration_name, started_at, applied_steps_count)"
                " SELECT %s, %s, %s, now(), 0 WHERE NOT EXISTS (SELECT FROM {}"
                " WHERE migration_name = %s AND finished_at IS NULL AND rolled_back_at IS NULL)"
            ).format(table, table),
            (_uuid4(), file_checksum, name, name),
        )


def checksum(migration: Migration) -> str:
    """Prisma's checksum of a migration: the one its format computed, or that of its text."""
    if migration.format == "prisma":
        return migration.checksum
    return checksum_of_bytes(migration.up.text.encode("utf-8"))


def _checksum_for(change: NativeChange) -> str:
    """The checksum of the migration in flight: its file's, when the change carries it."""
    if change.flying is not None:
        return checksum(change.flying)
    return "0" * 64  # Prisma's column is NOT NULL; finishing the migration writes the real one


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:300]


def _uuid4() -> str:
    """A random (version 4) UUID, as Prisma writes its rows' ids (without the uuid module, whose
    imports would grow the bundled standard library)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
