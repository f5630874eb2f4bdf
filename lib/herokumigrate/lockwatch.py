"""The lock-wait watchdog: our `lock_timeout` holds whatever a migration does to the setting.

`SET LOCAL lock_timeout` is re-asserted before each migration, but inside one migration a
`SET lock_timeout = 0`, `RESET ALL`, `set_config('lock_timeout', '0', false)` (in a DO block or a
function, out of any parser's sight) switches it off for the statements that follow, and an
ALTER queued behind a long transaction then stalls every app query on its table. So, while a
commit unit's transaction runs, a second connection looks at our backend's lock waits (PostgreSQL
14+: `pg_locks.waitstart`) every POLL_SECONDS and cancels our statement once a wait has lasted
the attempt's lock_timeout. The cancel is turned into the lock timeout it stands for, and the
unit is retried as after any lock timeout (lockretry.py).

The watchdog never holds a lock, never waits for one, and needs no privilege beyond our own role
(a role may cancel its own backends). Without a second connection (it cannot be opened), or on
an older server, the run goes on without it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors as pg_errors

from herokumigrate.statements import StepFailed

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    Conn = psycopg.Connection[tuple[object, ...]]

# How often the watchdog looks at our lock waits while a unit's transaction runs.
POLL_SECONDS = 0.05
# `pg_locks.waitstart` appeared in PostgreSQL 14.
_WAITSTART_VERSION = 140000
# Cancels our backend if one of its lock requests has waited at least the given seconds; the
# check and the cancel are one statement, so the cancel finds the wait it was meant for.
# pg_locks copies the whole lock table, every partition of it locked meanwhile, which grows with
# the locks a release holds (~2 ms at 500 new tables) and holds up every session taking a lock:
# it is read only while our backend's own entry says it waits for a lock (a CASE evaluates its
# THEN only then).
_CANCEL_LONG_WAIT = (
    "SELECT CASE WHEN (SELECT wait_event_type FROM pg_catalog.pg_stat_get_activity(%(pid)s))"
    " = 'Lock' THEN (SELECT pg_catalog.pg_cancel_backend(pid) FROM pg_catalog.pg_locks"
    " WHERE pid = %(pid)s AND NOT granted AND waitstart IS NOT NULL"
    " AND pg_catalog.clock_timestamp() - waitstart >= pg_catalog.make_interval(secs => %(secs)s)"
    " LIMIT 1) END"
)


class LockWatch:
    """Cancels our statement when it waits for a lock longer than the attempt allows."""

    def __init__(self, open_side: Callable[[], Conn | None]) -> None:
        self._open_side = open_side
        self._side: Conn | None = None
        self._unavailable = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Condition()
        self._target: tuple[int, float] | None = None  # (our backend pid, seconds) when armed
        self._fired = False
        self._polling = False  # a check is on its way to the server
        self._closing = False

    @contextlib.contextmanager
    def guard(self, conn: Conn, server_pid: int, lock_timeout: float | None) -> Iterator[None]:
        """Watch the lock waits of `conn` (`server_pid` on the server) for the block; a
        StepFailed of the cancel it caused comes out as a lock timeout (55P03) for
        lockretry.py to retry."""
        if not lock_timeout or not self._start(conn):
            yield
            return
        with self._wake:
            self._fired = False
            self._target = (server_pid, lock_timeout)
            self._wake.notify_all()
        try:
            yield
        except StepFailed as exc:
            if not (isinstance(exc.error, pg_errors.QueryCanceled) and self._cancelled_it()):
                raise
            error = pg_errors.LockNotAvailable(
                f"canceling statement due to lock timeout: waited {lock_timeout:g}s for a lock "
                "although the migration had switched lock_timeout off"
            )
            raise exc.with_error(error) from exc
        finally:
            with self._wake:
                self._target = None

    def _cancelled_it(self) -> bool:
        """Whether the watchdog cancelled our statement (its check may still be on the way
        back when our statement's error arrives: wait for it)."""
        with self._wake:
            self._wake.wait_for(lambda: not self._polling, timeout=1.0)
            return self._fired

    def close(self) -> None:
        """Stop the watchdog and close its connection (without waiting on a dead network)."""
        with self._wake:
            self._closing = True
            self._target = None
            self._wake.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(2 * POLL_SECONDS + 0.5)
            if thread.is_alive():
                return  # stuck on an unanswered query: the process exit closes the socket
        if self._side is not None:
            self._side.close()

    def _start(self, conn: Conn) -> bool:
        """Open the side connection and start the thread, once; False when there is none."""
        if self._thread is not None:
            return self._thread.is_alive()
        if self._unavailable or conn.info.server_version < _WAITSTART_VERSION:
            return False
        side = self._open_side()
        if side is None:
            self._unavailable = True
            return False
        self._side = side
        self._thread = threading.Thread(target=self._run, args=(side,), daemon=True)
        self._thread.start()
        return True

    def _run(self, side: Conn) -> None:
        while True:
            with self._wake:
                while self._target is None and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                pid, seconds = self._target  # type: ignore[misc]  # set, as the loop ensures
                self._polling = True
            try:
                row = side.execute(_CANCEL_LONG_WAIT, {"pid": pid, "secs": seconds}).fetchone()
                cancelled = None if row is None else row[0]
            except psycopg.Error:
                cancelled = None
                self._closing = True  # the side connection is gone: lock_timeout remains
            with self._wake:
                self._polling = False
                self._fired = self._fired or cancelled is not None
                self._wake.notify_all()
                self._wake.wait(POLL_SECONDS)
