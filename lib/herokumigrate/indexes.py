"""INVALID indexes: what a failed or killed `CREATE INDEX CONCURRENTLY` leaves behind, found
and dropped so that a retry, a resumed run or a compensation starts clean.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from psycopg import sql

if TYPE_CHECKING:
    import psycopg

    from herokumigrate.output import Output
    from herokumigrate.plan import Step

    Conn = psycopg.Connection[tuple[object, ...]]

# A concurrent index build, and the name of the index it leaves behind (INVALID) when it fails.
_CONCURRENT_INDEX_RE = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?((?:\"(?:[^\"]|\"\")+\"|[\w$]+)(?:\.(?:\"(?:[^\"]|\"\")+\"|[\w$]+))?)",
    re.IGNORECASE,
)


# An index's schema-qualified, quoted name: the same text whatever the search_path.
_QUALIFIED = "pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)"
_INDEX_JOIN = (
    " FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
)


def invalid_indexes(conn: Conn) -> set[str]:
    """Every INVALID index of the database, by schema-qualified name."""
    rows = conn.execute(f"SELECT {_QUALIFIED}{_INDEX_JOIN} WHERE NOT i.indisvalid").fetchall()
    return {str(r[0]) for r in rows}


def drop_invalid_index_of(
    conn: Conn, output: Output, step: Step, *, skip_if_valid: bool = False
) -> bool:
    """Drop the INVALID index a failed or killed `CREATE INDEX CONCURRENTLY` left behind.

    With `skip_if_valid` (resuming a killed run), returns True when the index exists and is
    valid: the statement finished before the kill and must not run again.
    """
    match = _CONCURRENT_INDEX_RE.match(step.statement.text)
    if not match:
        return False
    row = conn.execute(
        f"SELECT {_QUALIFIED}, i.indisvalid{_INDEX_JOIN} WHERE c.oid = pg_catalog.to_regclass(%s)",
        (match.group(1),),
    ).fetchone()
    if row is None:
        return False
    if row[1]:
        if skip_if_valid:
            output.detail(f"Index {row[0]} was built before the interruption")
        return skip_if_valid
    output.detail(f"Dropping INVALID index {row[0]} left by an earlier failed build")
    _drop_index(conn, str(row[0]))
    return False


# A compensation's drop waits for older transactions on the table (DROP INDEX CONCURRENTLY):
# never longer than this, or statement_timeout when that is shorter; the next run drops what
# is left before it builds the index again.
CLEANUP_WAIT_SECONDS = 30.0


def drop_new_invalid_indexes(
    conn: Conn, before: set[str], statement_timeout: float = 0.0
) -> tuple[list[str], list[str]]:
    """Drop the INVALID indexes that were not there `before`, each within a bounded wait;
    returns (dropped, left) names."""
    import psycopg

    wait = min(CLEANUP_WAIT_SECONDS, statement_timeout or CLEANUP_WAIT_SECONDS)
    dropped: list[str] = []
    left: list[str] = []
    for name in sorted(invalid_indexes(conn) - before):
        conn.execute(
            sql.SQL("SET statement_timeout = {}").format(
                sql.Literal(f"{max(1, round(wait * 1000))}ms")
            )
        )
        try:
            _drop_index(conn, name)
            dropped.append(name)
        except psycopg.errors.QueryCanceled:
            left.append(name)
        finally:
            conn.execute("RESET statement_timeout")
    return dropped, left


def _drop_index(conn: Conn, regclass: str) -> None:
    """Drop an index by its schema-qualified, quoted name."""
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(regclass)))
