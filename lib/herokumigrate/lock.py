"""The migration lock: a session advisory lock, polled with `pg_try_advisory_lock`.

The key is golang-migrate's, so our runner and golang-migrate's CLI exclude each other:
crc32_ieee(schema + NUL + table + NUL + dbname) * 1486364155 mod 2**32.
"""

from __future__ import annotations

import time
import zlib
from typing import TYPE_CHECKING

from herokumigrate.errors import LockTimeout
from herokumigrate.output import Output

if TYPE_CHECKING:
    import psycopg

_GOLANG_MIGRATE_SALT = 1486364155
POLL_SECONDS = 0.25
REPORT_EVERY_SECONDS = 10.0


def lock_key(dbname: str, schema: str = "public", table: str = "schema_migrations") -> int:
    """golang-migrate's advisory lock id for its migrations table in `dbname`."""
    name = "\x00".join((schema, table, dbname)).encode("utf-8")
    return (zlib.crc32(name) * _GOLANG_MIGRATE_SALT) % 2**32


class AdvisoryLock:
    """Holds the migration lock on one connection for the duration of a `with` block."""

    def __init__(
        self, conn: psycopg.Connection[tuple[object, ...]], key: int, output: Output
    ) -> None:
        self.conn = conn
        self.key = key
        self.output = output
        self.held = False

    def acquire(self, wait: float) -> None:
        """Take the lock, polling for up to `wait` seconds; LockTimeout (exit 3) after that."""
        start = time.monotonic()
        next_report = start  # say at once that we wait, and for whom; then every 10 s
        while True:
            row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if row is not None and row[0]:
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
                    "SELECT * FROM pg_locks WHERE locktype = 'advisory'.",
                )
            if now >= next_report:
                self.output.detail(
                    f"Waiting for the migration lock ({now - start:.0f}s of {wait:.0f}s "
                    f"allowed): {self._holder()}"
                )
                next_report = now + REPORT_EVERY_SECONDS
            time.sleep(min(POLL_SECONDS, max(0.0, wait - (now - start))))

    def release(self) -> None:
        """Give the lock back (closing the session would too)."""
        if self.held and not self.conn.closed:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self.held = False

    def _holder(self) -> str:
        """Who holds the lock, for the progress and timeout messages."""
        try:
            row = self.conn.execute(
                "SELECT a.pid, coalesce(a.application_name, ''),"
                " extract(epoch FROM now() - a.backend_start)::int"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.classid = (%s::bigint >> 32)::oid"
                " AND l.objid = (%s::bigint & 4294967295)::oid LIMIT 1",
                (self.key, self.key),
            ).fetchone()
        except Exception:  # the message is only a courtesy; never fail because of it
            return "held by another session"
        if row is None:
            return "held by another session"
        app = f" ({row[1]})" if row[1] else ""
        # Another role's session hides its start time unless we may read all stats.
        since = f", connected {row[2]}s ago" if row[2] is not None else ""
        return f"held by backend pid {row[0]}{app}{since}"
