"""The database session of one run: its connection, the migration lock, the timeouts, and
reconnecting (and re-locking) after the connection was lost.

Our timeouts never outlive what they protect: inside a transaction they are `SET LOCAL`
(re-asserted before each migration, so a file's own `SET lock_timeout = 0` or `RESET ALL` cannot
switch them off for the next one); around a statement that runs outside a transaction they
are `SET`, then `RESET` whatever happens. A pooler's next client, or the app sharing a session
pooler, never inherits them.

A `Session` owns its connection: the rest of the core asks it for `conn` each time it needs
one and never keeps its own reference, so a reconnect cannot leave anyone with a dead one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from herokumigrate.lock import AdvisoryLock, MigrationsTable, migration_lock
from herokumigrate.signals import settle, watch_connection

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from herokumigrate.config import Config
    from herokumigrate.database import Target
    from herokumigrate.output import Output
    from herokumigrate.plan import Step

    Conn = psycopg.Connection[tuple[object, ...]]

# After a lost connection, wait at most this long for the server to come back.
RECONNECT_WAIT_SECONDS = 30.0


class Session:
    """One connection to the database, with the migration lock when `lock` was called."""

    def __init__(
        self,
        config: Config,
        output: Output,
        open_connection: Callable[[float], Conn],
        target: Target | None = None,
    ) -> None:
        """Connect with `open_connection(wait)`, waiting up to `config.connect_wait`.

        `target` (the parsed URL) tells the lock golang-migrate's table and URL path."""
        self.config = config
        self.output = output
        self._open = open_connection
        self._target = target
        self._conn = open_connection(config.connect_wait)
        self._lock: AdvisoryLock | None = None
        # The lock_timeout of the current attempt (the retry loop grows it up to the setting).
        self.lock_timeout = config.lock_timeout
        watch_connection(lambda: self._conn)  # a forced exit on SIGTERM cancels its statement

    @classmethod
    def open(cls, config: Config, output: Output) -> Session:
        """Connect to the configured database (`connect` refuses transaction pooling)."""
        from herokumigrate.database import connect, read_target

        target = read_target(os.environ, config.database_url_var, output)
        if target.statement_timeout and not config.statement_timeout:
            # golang-migrate's x-statement-timeout, when our setting leaves it unset.
            config = dataclasses.replace(config, statement_timeout=target.statement_timeout)

        def open_connection(wait: float) -> Conn:
            return connect(
                target, output, connect_timeout=config.connect_timeout, connect_wait=wait
            )

        return cls(config, output, open_connection, target)

    @property
    def conn(self) -> Conn:
        """The current connection (a new one after `reconnect_if_lost` replaced a dead one)."""
        return self._conn

    @property
    def target(self) -> Target | None:
        """The parsed database URL (None for a session opened on a given connection)."""
        return self._target

    @property
    def lost(self) -> bool:
        """True when the connection is closed or broken."""
        return self._conn.closed or self._conn.broken

    def lock(self) -> None:
        """Take the migration lock (LockTimeout after `lock_wait`). No session setting is
        changed: the timeouts are set per transaction (`set_local_timeouts`)."""
        if self._lock is not None:
            self._lock = self._lock.on(self._conn)  # the same keys on a new connection
        else:
            target = self._target
            self._lock = migration_lock(
                self._conn,
                self.output,
                table=self._golang_migrate_table(),
                url_path=target.url_path if target is not None else None,
            )
        self._lock.acquire(self.config.lock_wait)

    def _golang_migrate_table(self) -> MigrationsTable | None:
        """The table golang-migrate's keys name: the `migrations_table` setting, else the URL's
        `x-migrations-table`, else its default (as native.py picks the table to keep)."""
        parts = self.config.migrations_table_parts
        if parts is not None:
            schema, table = parts
            return MigrationsTable(table, schema)
        return self._target.migrations_table if self._target is not None else None

    def reconnect_if_lost(self) -> bool:
        """Replace a lost connection, re-taking the lock if it was held; True if it did.

        Raises psycopg.Error (or LockTimeout) when the database cannot be reached again.
        """
        if not self.lost:
            return False
        self._conn = self._open(min(RECONNECT_WAIT_SECONDS, self.config.connect_wait))
        if self._lock is not None:
            self.lock()
        return True

    def set_local_timeouts(self) -> None:
        """(Re-)assert our timeouts for the open transaction: `SET LOCAL`, gone at its end.

        Called at the start of every transaction and before each migration in it."""
        self._conn.execute(self.timeouts_sql(local=True))

    def timeouts_sql(self, *, local: bool, lock_timeout: float | None = None) -> sql.Composed:
        """SET [LOCAL] lock_timeout (the current attempt's, unless given) and
        statement_timeout (the configured one)."""
        scope = sql.SQL("SET LOCAL " if local else "SET ")
        return sql.SQL("{}lock_timeout = {}; {}statement_timeout = {}").format(
            scope,
            sql.Literal(milliseconds(self.lock_timeout if lock_timeout is None else lock_timeout)),
            scope,
            sql.Literal(milliseconds(self.config.statement_timeout)),
        )

    @contextlib.contextmanager
    def timeouts_outside_transaction(self, step: Step) -> Iterator[None]:
        """Our timeouts around one statement that runs outside a transaction: `SET`, then
        `RESET` however the statement ends (a lost connection takes them with it).

        A concurrent index build (and its kin) waits for old snapshots, blocking nobody: it
        runs without lock_timeout; statement_timeout still applies."""
        conn = self._conn
        exempt = waits_only_for_snapshots(step.statement.text)
        conn.execute(self.timeouts_sql(local=False, lock_timeout=0.0 if exempt else None))
        try:
            yield
        finally:
            settle(conn)  # an interruption may have left the statement running
            if not (conn.closed or conn.broken):
                with contextlib.suppress(psycopg.Error):  # a dead session keeps nothing
                    conn.execute("RESET lock_timeout; RESET statement_timeout")

    def release(self) -> None:
        """Give the lock back, if the connection still works."""
        if self._lock is not None:
            with contextlib.suppress(psycopg.Error):  # a dead session released its locks already
                self._lock.release()

    def close(self) -> None:
        """Release the lock and disconnect."""
        self.release()
        self._conn.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def waits_only_for_snapshots(text: str) -> bool:
    """CREATE/DROP INDEX CONCURRENTLY, REINDEX ... CONCURRENTLY, DETACH PARTITION ...
    CONCURRENTLY: they wait for older snapshots, which blocks no reads or writes, so they run
    without lock_timeout. The word counts only as a keyword (not in a comment, string or
    quoted name), and REFRESH MATERIALIZED VIEW CONCURRENTLY, which blocks writes, is not one
    of them."""
    from herokumigrate.sqllex import tokens  # not on a no-op release's path

    words = tokens(text, 0)
    return next(words, "") != "refresh" and "concurrently" in words


def milliseconds(seconds: float) -> str:
    """A PostgreSQL duration; a positive value never rounds down to 0 (which means "off")."""
    ms = round(seconds * 1000)
    return f"{max(ms, 1) if seconds > 0 else 0}ms"
