"""The migration lock: session advisory locks, polled with `pg_try_advisory_lock`.

One run holds several keys at once: ours, golang-migrate's formula for `public.schema_migrations`
in the server's `current_database()` (the key every release of heroku-migrate has taken), and
each tool's own keys (`NativeTable.lock_keys`, given a `LockScope`: golang-migrate's library and
CLI keys), so that our runner and the tools exclude each other however they are started.
`session.migration_lock` gathers them.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from herokumigrate.errors import LockTimeout
from herokumigrate.output import Output

if TYPE_CHECKING:
    import psycopg

# database/util.go: advisoryLockIDSalt
_GOLANG_MIGRATE_SALT = 1486364155
_UINT32 = 2**32
POLL_SECONDS = 0.25
REPORT_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class MigrationsTable:
    """golang-migrate's migrations table, as its URL's `x-migrations-table` names it.

    `name` is what golang-migrate hashes and queries: with `x-migrations-table-quoted` off (its
    default) the whole value, dots included; `schema` is None for the session's
    `current_schema()`, or the first part of a quoted `"schema"."table"`.
    """

    name: str = "schema_migrations"
    schema: str | None = None


@dataclass(frozen=True)
class LockScope:
    """What a tool's lock keys are computed from: the server's `current_database()` and
    `current_schema()` (None: no schema), the database URL's path as golang-migrate's CLI sees
    it (`/dbname`; None when the database was not given as a URL), and the migrations table
    the settings name (golang-migrate's `x-migrations-table`, else its default)."""

    database: str
    schema: str | None
    url_path: str | None
    table: MigrationsTable


def golang_migrate_lock_id(database_name: str, *additional_names: str) -> int:
    """golang-migrate's `GenerateAdvisoryLockId`: crc32 (IEEE) times its salt, as a uint32.

    Like the Go code, the additional names come first and the database name last, joined
    by NUL bytes; without additional names the database name alone is hashed.
    """
    name = "\x00".join((*additional_names, database_name)) if additional_names else database_name
    return (zlib.crc32(name.encode("utf-8")) * _GOLANG_MIGRATE_SALT) % _UINT32


def lock_key(dbname: str, schema: str = "public", table: str = "schema_migrations") -> int:
    """golang-migrate's advisory lock id for its migrations table `schema.table` in `dbname`."""
    return golang_migrate_lock_id(dbname, schema, table)


class AdvisoryLock:
    """Session advisory locks on several keys, taken all together or not at all."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        keys: int | Sequence[int],
        output: Output,
    ) -> None:
        self.conn = conn
        self.keys: tuple[int, ...] = tuple(dict.fromkeys([keys] if isinstance(keys, int) else keys))
        if not self.keys:
            raise ValueError("an advisory lock needs at least one key")
        self.output = output
        self.held = False

    @property
    def key(self) -> int:
        """Our own key (the first); the others are the tools'."""
        return self.keys[0]

    def on(self, conn: psycopg.Connection[tuple[object, ...]]) -> AdvisoryLock:
        """The same keys on another connection (after a reconnect), not yet taken."""
        return AdvisoryLock(conn, self.keys, self.output)

    def acquire(self, wait: float) -> None:
        """Take every key, polling for up to `wait` seconds; LockTimeout (exit 3) after that."""
        start = time.monotonic()
        next_report = start  # say at once that we wait, and for whom; then every 10 s
        while True:
            if self._try_all():
                self.held = True
                waited = time.monotonic() - start
                if waited >= 1.0:
                    self.output.detail(f"Migration lock acquired after {waited:.1f}s")
                return
            now = time.monotonic()
            if now - start >= wait:
                raise LockTimeout(
                    f"another migration run held the lock for {wait:.0f}s: {self._holder()}",
                    fix="Wait for it to finish and release again (heroku releases:retry), or "
                    "raise MIGRATE_LOCK_WAIT. If no run is active, find the session with "
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()).",
                )
            if now >= next_report:
                self.output.detail(
                    f"Waiting for the migration lock ({now - start:.0f}s of {wait:.0f}s "
                    f"allowed): {self._holder()}"
                )
                next_report = now + REPORT_EVERY_SECONDS
            time.sleep(min(POLL_SECONDS, max(0.0, wait - (now - start))))

    def release(self) -> None:
        """Give every key back (closing the session would too)."""
        if self.held and not self.conn.closed:
            self._unlock(self.keys)
        self.held = False

    def _try_all(self) -> bool:
        """Try the keys in order in one round trip; on a miss, give back those taken."""
        from psycopg import sql

        # CASE evaluates its branches in order and stops at the first true one, so the keys
        # after a miss are never touched: two of our runners race on the first key only.
        branches = [
            sql.SQL("WHEN NOT pg_try_advisory_lock({}) THEN {}").format(
                sql.Literal(key), sql.Literal(taken)
            )
            for taken, key in enumerate(self.keys)
        ]
        query = sql.SQL("SELECT CASE {} ELSE {} END").format(
            sql.SQL(" ").join(branches), sql.Literal(len(self.keys))
        )
        row = self.conn.execute(query).fetchone()
        taken = int(str(row[0])) if row is not None else 0
        if taken == len(self.keys):
            return True
        if taken:
            self._unlock(self.keys[:taken])
        return False

    def _unlock(self, keys: Sequence[int]) -> None:
        self.conn.execute(
            "SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k", (list(keys),)
        )

    def _holder(self) -> str:
        """Who holds one of the keys, for the progress and timeout messages."""
        try:
            row = self.conn.execute(
                "SELECT a.pid, coalesce(a.application_name, ''),"
                " extract(epoch FROM now() - a.backend_start)::int"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.pid <> pg_backend_pid()"
                # Advisory locks belong to a database: a run on another database of the
                # server may hold the same keys (the tools' constant ones) and is not ours.
                " AND l.database = (SELECT oid FROM pg_catalog.pg_database"
                " WHERE datname = pg_catalog.current_database())"
                " AND (l.classid::bigint << 32 | l.objid::bigint) = ANY(%s::bigint[])"
                " ORDER BY a.backend_start LIMIT 1",
                (list(self.keys),),
            ).fetchone()
        except Exception:  # the message is only a courtesy; never fail because of it
            return "held by another session"
        if row is None:
            return "held by another session"
        app = f" ({row[1]})" if row[1] else ""
        # Another role's session hides its start time unless we may read all stats.
        since = f", connected {row[2]}s ago" if row[2] is not None else ""
        return f"held by backend pid {row[0]}{app}{since}"
