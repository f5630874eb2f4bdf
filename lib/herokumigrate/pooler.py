"""Is there a connection pooler between us and the server, and does it keep our session?

Transaction (or statement) pooling hands each transaction of one client connection to whichever
server session is free: session advisory locks, session settings and prepared statements stay
behind on a server session that the next transaction may not get. Measured through PgBouncer,
that let two runners apply the same migration. Session pooling keeps one server session per
client connection and is as good as a direct connection.

The check reads `pg_backend_pid()` only: it changes nothing on any session.
"""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import psycopg

Pooling = Literal["direct", "session", "transaction", "statement"]

_PROBE_APPLICATION_NAME = "heroku-migrate pooler check"
_PID_QUERY = "SELECT pg_backend_pid()"


def detect_pooling(
    conn: psycopg.Connection[tuple[object, ...]],
    params: dict[str, str],
    *,
    probe_timeout: float,
) -> Pooling:
    """How `conn` (autocommit) reaches its server session; `params` open a second client.

    Two round trips on a direct connection. Behind a pooler, when our own two transactions
    happened to land on the same server session (a pool of one server connection, or an idle
    one reused), a second client connection reads its server session's pid: under transaction
    pooling it is handed the session we just left, under session pooling it never can be.
    """
    first = _backend_pid(conn)
    if _backend_pid(conn) != first:
        return "transaction"
    # PgBouncer and its kin answer the startup themselves, with a cancel key of their own.
    if conn.info.backend_pid == first:
        return "direct"
    other = _second_client_pid(params, probe_timeout)
    if other == first or _backend_pid(conn) != first:
        return "transaction"
    return "session"


def statement_or_transaction(conn: psycopg.Connection[tuple[object, ...]]) -> Pooling:
    """Which of the two a pooler that hands our statements around does (for the message):
    PgBouncer's statement mode refuses to open a transaction block (and drops the client). May
    leave `conn` unusable: call it on a connection that is closed next."""
    import psycopg

    try:
        conn.execute("BEGIN")
        conn.execute("ROLLBACK")
    except psycopg.Error as exc:
        if "statement" in str(exc).lower() or conn.broken or conn.closed:
            return "statement"
    return "transaction"


def _backend_pid(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute(_PID_QUERY).fetchone()
    assert row is not None
    assert isinstance(row[0], int)
    return row[0]


def _second_client_pid(params: dict[str, str], timeout: float) -> int | None:
    """The server pid a second client connection gets, or None if it gets none in time.

    A full session pool makes that client wait for a server session, and PgBouncer ignores
    cancel requests from waiting clients: hence libpq's non-blocking calls and a deadline.
    """
    from psycopg import pq
    from psycopg.conninfo import make_conninfo

    probe = dict(params, application_name=_PROBE_APPLICATION_NAME)
    probe["connect_timeout"] = str(max(1, round(timeout)))
    probe.pop("options", None)  # poolers refuse unknown startup parameters
    pgconn = pq.PGconn.connect(make_conninfo("", **probe).encode())
    try:
        if pgconn.status != pq.ConnStatus.OK:
            return None
        pgconn.send_query(_PID_QUERY.encode())
        deadline = time.monotonic() + timeout
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            select.select([pgconn.socket], [], [], remaining)
        result = pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.TUPLES_OK:
            return None
        value = result.get_value(0, 0)
        return int(value) if value is not None else None
    except Exception:  # the second client is only a witness: no answer proves nothing
        return None
    finally:
        pgconn.finish()
