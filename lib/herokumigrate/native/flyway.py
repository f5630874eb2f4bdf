"""Flyway's table: `flyway_schema_history`, one row per migration run, as Flyway Community
writes it (JdbcTableSchemaHistory, its PostgreSQL createMetaDataTable.sql): `installed_rank`
(max + 1), the version as written (`_` as `.`; NULL for a repeatable), the description, `type`
`SQL`, the `script` (its path in the location), the CRC-32 `checksum`, `installed_by`
(current_user), `installed_on`, `execution_time` in ms and `success`. A repeatable that changed
gets a new row each time it runs again: the latest row of a description counts. A row with
`success = false` makes Flyway refuse to migrate until `flyway repair`. A `BASELINE` row
(`flyway baseline`) stands for every version up to its own. Its lock:
`pg_try_advisory_xact_lock(0x466C79776179 + hashCode('"schema"."table"'))`, polled by Flyway in
every transaction that writes the table; held here as a session lock for the whole run, which
keeps Flyway's attempts out until the run ends (they share PostgreSQL's advisory lock space).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from psycopg import sql

from herokumigrate.errors import BadInput
from herokumigrate.formats.flyway import (
    BASELINE,
    DEFAULT_TABLE,
    REPEATABLE,
    SEPARATOR,
    FlywayVersions,
    checksum_of,
    default_schema,
    description_of,
    setting,
    table_name,
)
from herokumigrate.native import NativeFailure, NativeName, NativeTable

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from herokumigrate.lock import LockScope
    from herokumigrate.migration import Migration
    from herokumigrate.native import Conn, NativeChange, Resolution
    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version

_LOCK_BASE = 0x466C79776179  # "Flyway" in ASCII
_SYNTAX = FlywayVersions()
_NOT_MIGRATIONS = frozenset({"SCHEMA", "DELETE", "UNDO_SQL", "UNDO_JDBC", "UNDO_SCRIPT"})
# `flyway baseline`'s row, and a baseline migration's (`B5__x.sql`): every version up to theirs
# counts as applied.
_BASELINES = frozenset({"BASELINE", "SQL_BASELINE"})


class FlywayRow(NamedTuple):
    """A row of `flyway_schema_history`, as far as a run needs it."""

    rank: int
    version: Version
    description: str
    kind: str  # the `type` column
    script: str
    checksum: int | None
    success: bool


def java_hash(text: str) -> int:
    """Java's `String.hashCode`: over UTF-16 code units, as a signed 32-bit integer."""
    value = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        value = (value * 31 + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def lock_key(schema: str, table: str) -> int:
    """The key Flyway's PostgreSQL lock takes for `"schema"."table"`."""
    return _LOCK_BASE + java_hash(f'"{schema}"."{table}"')


class FlywayTable(NativeTable):
    """Flyway's `flyway_schema_history` (see the module's docstring)."""

    tool: ClassVar[ToolName] = "flyway"
    default_table: ClassVar[str] = DEFAULT_TABLE
    up_command: ClassVar[str] = "flyway migrate"

    def __init__(self, rows: Sequence[FlywayRow] = (), name: NativeName | None = None) -> None:
        super().__init__(name)
        self.rows = sorted(rows, key=lambda r: r.rank)
        self._latest: dict[Version, FlywayRow] = {}
        self._baseline: tuple[object, ...] | None = None  # the key every version up to counts
        for row in self.rows:
            if row.kind in _NOT_MIGRATIONS:
                continue
            if row.kind in _BASELINES and row.success:
                key = row.version.key
                self._baseline = key[:-1] if row.kind == "SQL_BASELINE" else key
            self._latest[row.version] = row  # the latest row of a version or description

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return "installed_rank" in columns and "script" in columns

    @classmethod
    def read(cls, conn: Conn, name: NativeName) -> FlywayTable:
        query = sql.SQL(
            "SELECT installed_rank, version, description, type, script, checksum, success FROM {}"
        )
        found = conn.execute(query.format(name.ident)).fetchall()
        rows = [
            FlywayRow(
                int(str(rank)),
                _version_of(version, str(description), str(kind)),
                str(description),
                str(kind),
                str(script),
                None if checksum is None else int(str(checksum)),
                bool(success),
            )
            for rank, version, description, kind, script, checksum, success in found
        ]
        return cls(rows, name)

    @classmethod
    def lock_keys(cls, scope: LockScope) -> list[int]:
        """Flyway's key for its table: FLYWAY_TABLE in Flyway's default schema (the session's
        when none is set)."""
        env = os.environ
        table = table_name(env)
        schema = default_schema(env) or scope.schema or "public"
        return [lock_key(schema, table)]

    def applied(self) -> frozenset[Version] | None:
        return frozenset(v for v, row in self._latest.items() if row.success)

    def says_applied(self, version: Version) -> bool:
        row = self._latest.get(version)
        if row is not None:
            return row.success
        # Below a baseline: Flyway counts it as applied (it never runs it).
        base = self._baseline
        return base is not None and version.key[0] == 0 and version.key <= base

    def agrees(self, applied: set[Version]) -> bool:
        # Below a baseline, versions count as applied without a row: never "the same set".
        return self._baseline is None and super().agrees(applied)

    def checksum_of(self, version: Version) -> str | None:
        row = self._latest.get(version)
        if row is None or row.checksum is None or not row.success:
            return None
        return str(row.checksum)

    def out_of_order_refusal(self) -> NativeFailure | None:
        """Flyway's `outOfOrder=false` (its default): `flyway validate` fails on them."""
        keys = ("out-of-order", "outOfOrder", "out_of_order")
        if setting(os.environ, "FLYWAY_OUT_OF_ORDER", *keys).lower() == "true":
            return None
        return NativeFailure(
            None,
            "Flyway refuses them too (outOfOrder is false: 'Detected resolved migration not "
            "applied to database')",
            "Give the migration a version above the newest applied one (rename the file), or "
            "set the config var FLYWAY_OUT_OF_ORDER=true to apply it, as Flyway then would.",
        )

    def failure(self) -> NativeFailure | None:
        failed = [row for row in self._latest.values() if not row.success]
        if not failed:
            return None
        row = failed[0]
        name = _shown(row)
        return NativeFailure(
            row.version,
            f"{self.table} (Flyway) records a failed migration: {name} ({row.script}), "
            "success = false; Flyway refuses to migrate from there ('Detected failed "
            "migration ... run repair')",
            f"Repair the schema by hand, then run `heroku run heroku-migrate resolve "
            f"{row.version} --applied` if its changes are in the database, or `--rolled-back` "
            "if none are (it is then applied again): what `flyway repair` does.",
        )

    def in_flight(self) -> Version | None:
        failed = [row.version for row in self._latest.values() if not row.success]
        return failed[0] if failed else None

    def resolve(self, conn: Conn, version: Version, outcome: Resolution) -> None:
        """Rolled back: the failed row is deleted, as `flyway repair` does (Flyway runs the
        migration again); applied: it is marked a success."""
        if outcome == "applied":
            query = sql.SQL("UPDATE {} SET success = true WHERE installed_rank = %s")
        else:
            query = sql.SQL("DELETE FROM {} WHERE installed_rank = %s")
        row = self._latest.get(version)
        if row is None or row.success:
            raise BadInput(
                f"{self.table} (Flyway) has no failed row for {version}",
                fix="Run `heroku-migrate status` to see which migration, if any, failed.",
            )
        conn.execute(query.format(self.name.ident), (row.rank,))

    def create(self, conn: Conn) -> None:
        # Flyway's createMetaDataTable.sql for PostgreSQL, column for column.
        self.create_schema(conn)
        ident = self.name.ident
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (installed_rank INT NOT NULL, version VARCHAR(50),"
                " description VARCHAR(200) NOT NULL, type VARCHAR(20) NOT NULL,"
                " script VARCHAR(1000) NOT NULL, checksum INTEGER,"
                " installed_by VARCHAR(100) NOT NULL,"
                " installed_on TIMESTAMP NOT NULL DEFAULT now(),"
                " execution_time INTEGER NOT NULL, success BOOLEAN NOT NULL)"
            ).format(ident)
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (installed_rank)").format(
                ident, sql.Identifier(f"{self.name.table}_pk")
            )
        )
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} (success)").format(
                sql.Identifier(f"{self.name.table}_s_idx"), ident
            )
        )

    def follow(self, conn: Conn, change: NativeChange) -> None:
        # As `flyway migrate`: a row per migration run, at rank max + 1, success true; a
        # repeatable run again gets a new row; a migration left part-way a failed row (as
        # Flyway leaves one it could not roll back), made a success when it finishes. A
        # reverted migration's rows are deleted (Flyway then applies it again). A row it has
        # already is left as it is (adopted).
        for version in change.removed:
            self._delete(conn, version)
        if change.in_flight is not None and change.flying is not None:
            self._insert(conn, change.flying, 0.0, success=False)
        for applied in change.recorded:
            self._record(conn, applied.migration, applied.duration_ms)
        for m in change.rechecked:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET checksum = %s WHERE installed_rank = (SELECT"
                    " max(installed_rank) FROM {} WHERE {} AND success)"
                ).format(self.name.ident, self.name.ident, _same(m.version)),
                (checksum(m), *_same_args(m.version)),
            )

    def _record(self, conn: Conn, m: Migration, ms: float) -> None:
        table = self.name.ident
        latest = conn.execute(
            sql.SQL(
                "SELECT installed_rank, checksum, success FROM {} WHERE {}"
                " ORDER BY installed_rank DESC LIMIT 1"
            ).format(table, _same(m.version)),
            _same_args(m.version),
        ).fetchone()
        if latest is not None and not latest[2]:  # our mark of it in flight
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET success = true, checksum = %s, execution_time = %s"
                    " WHERE installed_rank = %s"
                ).format(table),
                (checksum(m), _ms(ms), latest[0]),
            )
            return
        repeatable = m.version.key[0] == 1
        if latest is not None and (not repeatable or latest[1] == checksum(m)):
            return  # applied by Flyway (adopted), or a repeatable unchanged
        self._insert(conn, m, ms, success=True)

    def _insert(self, conn: Conn, m: Migration, ms: float, *, success: bool) -> None:
        repeatable = m.version.key[0] == 1
        description = m.version.key[1] if repeatable else description_of(m.name)
        table = self.name.ident
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (installed_rank, version, description, type, script, checksum,"
                " installed_by, execution_time, success)"
                " SELECT coalesce(max(installed_rank), 0) + 1, %s, %s, %s, %s, %s,"
                " current_user, %s, %s FROM {}"
            ).format(table, table),
            (
                None if repeatable else _stored(m.version),
                description,
                "SQL_BASELINE" if m.baseline else "SQL",
                m.up.path.name,
                checksum(m),
                _ms(ms),
                success,
            ),
        )

    def _delete(self, conn: Conn, version: Version) -> None:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {}").format(self.name.ident, _same(version)),
            _same_args(version),
        )


def checksum(migration: Migration) -> int:
    """Flyway's checksum of a migration: the one its format computed, or that of its text."""
    if migration.format == "flyway":
        return int(migration.checksum)
    return checksum_of(migration.up.text)


def _same(version: Version) -> sql.Composable:
    """The condition selecting the rows of `version` (a repeatable's: its description)."""
    if version.key[0] == 1:
        return sql.SQL("version IS NULL AND description = %s")
    return sql.SQL("version = %s")


def _same_args(version: Version) -> tuple[str]:
    if version.key[0] == 1:
        return (str(version.key[1]),)
    return (_stored(version),)


def _stored(version: Version) -> str:
    """The version text Flyway's table keeps (a baseline migration's without its `B`)."""
    return version.canonical.removeprefix(BASELINE)


def _version_of(version: object, description: str, kind: str) -> Version:
    """A row's version: its text, a repeatable's `R__description`, a baseline migration's
    `B<version>`."""
    if version is None:
        return _SYNTAX.parse(REPEATABLE + SEPARATOR + description.replace(" ", "_"))
    if kind == "SQL_BASELINE":
        return _SYNTAX.parse(BASELINE + str(version))
    return _SYNTAX.parse(str(version))


def _shown(row: FlywayRow) -> str:
    if row.version.key[0] == 1:
        return f"repeatable '{row.description}'"
    return f"version {row.version} ({row.description})"


def _ms(ms: float) -> int:
    return round(ms)
