"""Stopping cleanly on SIGTERM (a dyno stop: SIGKILL follows 30 s later) and SIGINT (Ctrl-C).

The first signal raises `Interrupted` in the main thread. It is a KeyboardInterrupt, so psycopg
treats it as one: a statement in flight is cancelled on the server and its result drained
before the exception leaves `execute`. The transaction then rolls back as the exception
unwinds, the lock is released and the event logged, and the CLI exits with 128 + the signal's
number (143 for SIGTERM, 130 for SIGINT).

Nothing is compensated on a signal (the downs could outlast the 30 s before SIGKILL): what
committed before it stays, recorded as applied or `partial`, and the next `up` continues.

If cleaning up takes longer than EXIT_DEADLINE_SECONDS (a server that does not answer, or a
network that drops our packets, where even the cancel request hangs), or a second signal
arrives, the process cancels what its connection runs (waiting briefly) and exits; the
server then rolls back the open transaction and frees the lock when it sees the connection
close, as after `kill -9` (and `client_connection_check_interval` makes it notice soon).

psycopg cancels and drains a statement when the interruption comes while it waits for the
server. When it comes while psycopg's own code runs between two waits, the statement is left
running and the connection busy ("another command is already in progress"): `settle` cancels
and drains it then, and `transaction` does so before its rollback. When it lands inside the
construction of one of psycopg's objects, that object's finalizer fails later: after a stop
signal such failures are not printed ("Exception ignored in ..." is no news for the user).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

    import psycopg

    Conn = psycopg.Connection[tuple[object, ...]]

# Cancelling a statement left running and reading its end: at most this long.
SETTLE_SECONDS = 2.0
# From the first signal to the exit, at most this long (Heroku's SIGKILL comes after 30 s).
EXIT_DEADLINE_SECONDS = 2.5
# A forced exit waits this long for its backend to be ended (a dead network never answers).
FORCED_CANCEL_SECONDS = 0.4
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived; raised in the main thread by the signal handler."""

    def __init__(self, signum: int, committed: list[str] | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        # What the run had committed when the signal came, as found after the rollback
        # (None: not known, the signal came outside `up`'s apply step).
        self.committed = committed

    def with_committed(self, committed: list[str]) -> Interrupted:
        """The same interruption, knowing what the run had committed."""
        return Interrupted(self.signum, committed)

    def lines(self) -> list[str]:
        """The error lines the CLI prints."""
        if self.committed is None:
            out = [
                f"Interrupted by {self.name}: stopped; anything in flight was cancelled and "
                "rolled back, and the migration lock released."
            ]
        else:
            out = [
                f"Interrupted by {self.name}: the running statement was cancelled, its "
                "transaction rolled back and the migration lock released."
            ]
        if self.committed == []:
            out.append("Nothing of this run was committed: the database is unchanged.")
        elif self.committed:
            out.append(
                "Committed before the signal, and kept (recorded in the history; `up` "
                "continues from there): " + ", ".join(self.committed) + "."
            )
        else:
            out.append("`heroku-migrate status` shows the state.")
        out.append(
            "Run the command again (for a release: heroku releases:retry) to apply what is pending."
        )
        return out

    @property
    def name(self) -> str:
        """`SIGTERM` or `SIGINT`."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal stopped."""
        return 128 + self.signum


class StopSignals:
    """The SIGTERM/SIGINT handlers of one CLI run, and the connection they cancel if the exit
    has to be forced."""

    def __init__(self, deadline: float = EXIT_DEADLINE_SECONDS) -> None:
        self.deadline = deadline
        self.received: int | None = None
        self._connection: Callable[[], Conn | None] = lambda: None
        self._terminate: Callable[[], bool] | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
        # Held by whichever exit comes first: the main thread's return (`uninstall`) or a
        # forced exit (`_exit_now`), so one of them, not both, decides how the process ends.
        self._exiting = threading.Lock()
        self._watchdog: threading.Timer | None = None

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on (in the main thread; elsewhere, no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Put back the handlers that were there before `install`.

        A forced exit already under way (the watchdog fired while the main thread was still
        cleaning up) is let finish: it ends our backend, says so and exits, and the main
        thread must not return ahead of it with an exit that does not say what happened."""
        if not self._exiting.acquire(timeout=FORCED_CANCEL_SECONDS + 1.0):
            return  # the forced exit did not end the process in time: exit normally
        if self._watchdog is not None:
            self._watchdog.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def watch(
        self,
        connection: Callable[[], Conn | None],
        terminate: Callable[[], bool] | None = None,
    ) -> None:
        """`connection()` gives the connection whose backend a forced exit stops;
        `terminate()` ends that backend from a new connection (True when it did)."""
        self._connection = connection
        self._terminate = terminate

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.received is not None:
            self._exit_now(f"{signal.Signals(signum).name} again: stopping at once")
            return  # the exit is already under way
        self.received = signum
        # From here on the process is stopping, and the interruption may have landed inside a
        # library's object construction: that object's finalizer then fails on what is half
        # built, and Python would print "Exception ignored in ..." with a traceback. Such
        # failures are the interruption's doing, not news for the user: they go unprinted.
        sys.unraisablehook = _unraisable_after_a_stop_signal
        # psycopg logs, unformatted, how its own cancel of the interrupted statement ended
        # ("query cancellation interrupted (AdminShutdown): closing connection"): our lines
        # say what happened, in our format.
        logging.getLogger("psycopg").disabled = True
        # Started early enough that ending the backend (FORCED_CANCEL_SECONDS at most) still
        # leaves by the deadline.
        watchdog = threading.Timer(
            max(0.0, self.deadline - FORCED_CANCEL_SECONDS),
            self._exit_now,
            args=("clean-up took too long: stopping at once",),
        )
        watchdog.daemon = True
        watchdog.start()
        self._watchdog = watchdog
        raise Interrupted(signum)

    def _exit_now(self, why: str) -> None:
        """End our backend (or at least cancel its statement) and leave without unwinding
        (any thread).

        A statement that swallows cancels (`EXCEPTION WHEN query_canceled` in a loop) would
        keep its locks after we left: the backend is ended from a new connection
        (`terminate`, pg_terminate_backend: a role may end its own backends), else cancelled.
        Both open a new connection to the server, which blocks without limit when the network
        drops our packets: they get their own thread and FORCED_CANCEL_SECONDS, and the exit
        happens whether they got through or not.

        When the main thread is already returning (`uninstall` holds the exit), its exit
        stands and this one does nothing."""
        if not self._exiting.acquire(blocking=False):
            return
        conn = self._connection()
        ended: list[bool] = []
        if conn is not None and not conn.closed:
            terminate = self._terminate

            def stop_backend() -> None:
                with contextlib.suppress(Exception):  # best effort: the exit must happen
                    if terminate is not None and terminate():
                        ended.append(True)
                        return
                    conn.cancel()

            stopper = threading.Thread(target=stop_backend, daemon=True)
            stopper.start()
            stopper.join(FORCED_CANCEL_SECONDS)
        if ended:
            then = "our session on the server was ended (pg_terminate_backend), which rolls back"
        else:
            then = "the server rolls back"
        os.write(2, f" !     {why}; {then} what was not committed\n".encode())
        os._exit(128 + (self.received or signal.SIGTERM))


def _unraisable_after_a_stop_signal(unraisable: sys.UnraisableHookArgs) -> None:
    """Drop an exception a finalizer raised after the stop signal (see `StopSignals._handle`)."""
    del unraisable


def settle(conn: Conn) -> None:
    """Leave no statement running on `conn` after an interruption: cancel it and read its
    results, within SETTLE_SECONDS; if that fails, close the connection (the server then rolls
    back and frees the lock).

    A cancel that reaches the server before the backend starts the statement is ignored (the
    backend was idle), so when no result came in half the time, the cancel is sent again. A
    backend that answers neither (a frozen server) gets no longer than the deadline."""
    from psycopg import pq

    if conn.closed or conn.pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
        return
    deadline = time.monotonic() + SETTLE_SECONDS
    try:
        conn.cancel_safe(timeout=SETTLE_SECONDS / 2)
        if _drained(conn, time.monotonic() + SETTLE_SECONDS / 2):
            return
        conn.cancel_safe(timeout=max(0.1, deadline - time.monotonic()))
        if _drained(conn, deadline):
            return
    except Exception:  # noqa: S110 -- closing is the fallback for any failure here
        pass
    conn.close()


def _drained(conn: Conn, deadline: float) -> bool:
    """Read the running statement's results until none is left (True), or the deadline."""
    pgconn = conn.pgconn
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            if pgconn.get_result() is None:
                return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        select.select([pgconn.socket], [], [], remaining)


@contextlib.contextmanager
def transaction(conn: Conn) -> Iterator[None]:
    """`conn.transaction()`, settled (`settle`) before its rollback when interrupted."""
    with conn.transaction():
        try:
            yield
        except KeyboardInterrupt:
            settle(conn)
            raise


_installed: StopSignals | None = None


def install_stop_signals() -> StopSignals:
    """Install the handlers for this process (the CLI calls it once)."""
    global _installed  # noqa: PLW0603 -- signal handlers are per process
    _installed = StopSignals()
    _installed.install()
    return _installed


def watch_connection(
    connection: Callable[[], Conn | None], terminate: Callable[[], bool] | None = None
) -> None:
    """Tell the installed handlers (if any) which connection's backend a forced exit must
    stop, and how to end a backend (see `StopSignals.watch`)."""
    if _installed is not None:
        _installed.watch(connection, terminate)
