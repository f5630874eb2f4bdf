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
import os
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from herokumigrate.lock import AdvisoryLock, LockScope, MigrationsTable, lock_key
from herokumigrate.signals import settle, watch_connection

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from herokumigrate.config import Config
    from herokumigrate.database import Target
    from herokumigrate.lockwatch import LockWatch
    from herokumigrate.native import NativeTable
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

        `target` (the parsed URL) tells the lock the tools' table and URL path, and brings
        golang-migrate's `x-statement-timeout`, used when the setting leaves it unset."""
        self.config = config
        self.output = output
        self._open = open_connection
        self._target = target
        from_url = target.statement_timeout if target is not None else None
        self.statement_timeout = config.statement_timeout or from_url or 0.0
        self._conn = open_connection(config.connect_wait)
        self._lock: AdvisoryLock | None = None
        self._lock_watch: LockWatch | None = None
        # The server's pid of our session (through a pooler, not the pid libpq was told).
        self._server_pid: int | None = None
        # A forced exit on SIGTERM ends our backend (or cancels its statement).
        watch_connection(lambda: self._conn, self._terminate_backend)

    @classmethod
    def open(cls, config: Config, output: Output) -> Session:
        """Connect to the configured database (`connect` refuses transaction pooling)."""
        from herokumigrate.database import connect, read_target

        target = read_target(os.environ, config.database_url_var, output, **_tool_url(config))

        def open_connection(wait: float) -> Conn:
            return connect(
                target, output, connect_timeout=config.connect_timeout, connect_wait=wait
            )

        return cls(config, output, open_connection, target)

    @property
    def conn(self) -> Conn:
        """The current connection (a new one after `reconnect_if_lost` replaced a dead one)."""
        return self._conn

    def guard_lock_waits(
        self, lock_timeout: float | None
    ) -> contextlib.AbstractContextManager[None]:
        """Around a unit's transaction (idle connection): the watchdog that holds our
        lock_timeout when a migration switches it off (lockwatch.py), its connection opened
        when a unit first needs it."""
        if self._lock_watch is None:
            from herokumigrate.lockwatch import LockWatch  # not on a no-op release's path

            self._lock_watch = LockWatch(self._open_side_connection)
        return self._lock_watch.guard(self._conn, self._read_server_pid(), lock_timeout)

    def _read_server_pid(self) -> int:
        """Our session's pid as the server knows it (read once per connection, while idle)."""
        if self._server_pid is None:
            row = self._conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            self._server_pid = int(str(row[0]))
        return self._server_pid

    def _close_lock_watch(self) -> None:
        if self._lock_watch is not None:
            self._lock_watch.close()
            self._lock_watch = None

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
                table=self._tools_table(),
                url_path=target.url_path if target is not None else None,
            )
        self._lock.acquire(self.config.lock_wait)

    def require_writable(self) -> None:
        """BadInput when the database cannot be written: a hot standby (a follower's URL), or
        `default_transaction_read_only` on for this role or database. Checked before anything
        is locked or written, so a wrong URL is named as such, not blamed on a migration."""
        from herokumigrate.errors import BadInput

        row = self._conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'"
        ).fetchone()
        assert row is not None
        standby, read_only = bool(row[0]), bool(row[1])
        if not (standby or read_only):
            return
        target = self._target
        var = target.var if target is not None else self.config.database_url_var
        where = target.description if target is not None else "the database"
        if standby:
            what = f"{var} reaches {where}, a read-only replica (a follower or hot standby)"
        else:
            what = (
                f"{var} reaches {where}, which is read-only for this connection "
                "(default_transaction_read_only = on)"
            )
        raise BadInput(
            what,
            details=("Nothing was attempted: the database is unchanged.",),
            fix="Point MIGRATE_DATABASE_URL_VAR at the config var that holds the primary "
            "database's URL (heroku pg:info tells the primary from its followers)"
            + ("." if standby else ", or turn default_transaction_read_only off for the role."),
        )

    def _tools_table(self) -> MigrationsTable | None:
        """The table the tools' keys name: the `migrations_table` setting, else the URL's
        `x-migrations-table`, else their default (as native_tables.py finds the table)."""
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
        self._close_lock_watch()  # its connection may hold the slot we need
        self._server_pid = None
        self._conn = self._open(min(RECONNECT_WAIT_SECONDS, self.config.connect_wait))
        if self._lock is not None:
            self.lock()
        return True

    def set_local_timeouts(self, lock_timeout: float | None = None) -> None:
        """(Re-)assert our timeouts for the open transaction: `SET LOCAL`, gone at its end;
        `lock_timeout` is the current attempt's (lockretry.py), else the setting.

        Called at the start of every transaction and before each migration in it."""
        self._conn.execute(self.timeouts_sql(local=True, lock_timeout=lock_timeout))

    def timeouts_sql(self, *, local: bool, lock_timeout: float | None = None) -> sql.Composed:
        """Our lock_timeout (the given one, else the setting) and statement_timeout: for the
        transaction in one statement (`set_config(..., true)`, as `SET LOCAL`: one result in a
        round trip of several migrations), else for the session (`SET`)."""
        if lock_timeout is None:
            lock_timeout = self.config.lock_timeout
        values = (
            sql.Literal(milliseconds(lock_timeout)),
            sql.Literal(milliseconds(self.statement_timeout)),
        )
        if local:
            return sql.SQL(
                "SELECT pg_catalog.set_config('lock_timeout', {}, true),"
                " pg_catalog.set_config('statement_timeout', {}, true)"
            ).format(*values)
        return sql.SQL("SET lock_timeout = {}; SET statement_timeout = {}").format(*values)

    @contextlib.contextmanager
    def timeouts_outside_transaction(
        self, step: Step, lock_timeout: float | None = None
    ) -> Iterator[None]:
        """Our timeouts around one statement that runs outside a transaction: `SET`, then
        `RESET` however the statement ends (a lost connection takes them with it).

        A concurrent index build (and its kin) waits for old snapshots, blocking nobody: it
        runs without lock_timeout; statement_timeout still applies."""
        conn = self._conn
        exempt = waits_only_for_snapshots(step.statement.text)
        conn.execute(self.timeouts_sql(local=False, lock_timeout=0.0 if exempt else lock_timeout))
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
        self._close_lock_watch()

    def _terminate_backend(self) -> bool:
        """End our session's backend from a new connection; True when the server did. Only
        when its server pid is known (read before any migration ran): never a guessed pid."""
        pid = self._server_pid
        if pid is None:
            return False
        side = self._open_side_connection()
        if side is None:
            return False
        with side:
            row = side.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        return bool(row and row[0])

    def _open_side_connection(self) -> Conn | None:
        """A second connection for the lock watchdog, or None (no URL known, or it failed)."""
        if self._target is None:
            return None
        from herokumigrate.database import connect_side

        return connect_side(self._target, connect_timeout=self.config.connect_timeout)


def migration_lock(
    conn: Conn,
    output: Output,
    *,
    table: MigrationsTable | None = None,
    url_path: str | None = None,
    tools: tuple[type[NativeTable], ...] | None = None,
) -> AdvisoryLock:
    """The migration lock for this database, not yet taken: our key and every tool's
    (`tools`, default: every registered tool's table class).

    `table` is the tools' migrations table the settings name (default `schema_migrations`);
    `url_path` the database URL's path as golang-migrate's CLI sees it (`/dbname`, see
    `Target.url_path`), or None when the database was not given as a URL. One query reads the
    server's names."""
    if tools is None:
        from herokumigrate.formats import native_table_classes

        tools = native_table_classes()
    row = conn.execute("SELECT current_database(), current_schema()").fetchone()
    assert row is not None
    schema = str(row[1]) if row[1] is not None else None
    scope = LockScope(str(row[0]), schema, url_path, table or MigrationsTable())
    keys = [lock_key(scope.database)]
    for tool in tools:
        keys.extend(tool.lock_keys(scope))
    return AdvisoryLock(conn, keys, output)


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


def _tool_url(config: Config) -> dict[str, Any]:
    """How the folder's tool reads the database URL and sets the session (read_target's
    options): Prisma's URL parameters, Flyway's default schema in the search_path."""
    from herokumigrate.formats import flyway, prisma

    folder, tool = config.migrations_dir, config.tool
    if tool == "prisma" or (tool is None and prisma.is_prisma_folder(folder)):
        return {"prisma": True}
    if tool == "flyway" or (tool is None and flyway.is_flyway_folder(folder)):
        return {"search_path": flyway.search_path(os.environ, config.app_dir)}
    return {}
