"""Undoing exactly what ran of a half-applied migration, when that is known.

A migration that failed (or lost its connection) part-way through its up section has only its
first statements committed; its down undoes all of it and fails on what never ran ("index does
not exist"). When every statement that ran is an index build (dropped again, CONCURRENTLY) or
one that changes no schema (VACUUM, ANALYZE, REINDEX, ...), compensation undoes exactly those;
otherwise it runs the down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import sql

from herokumigrate.sqlsplit import TRANSACTION_CONTROL

if TYPE_CHECKING:
    import psycopg

    from herokumigrate.migration import Migration
    from herokumigrate.snapshot import SchemaSnapshot
    from herokumigrate.sqlsplit import Statement

    Conn = psycopg.Connection[tuple[object, ...]]

_IDENT = r'(?:"(?:[^"]|"")+"|[^\s"(;]+)'
# An index build with a name: `CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] name ON`.
_INDEX_BUILD_RE = re.compile(
    r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?!ON\s)({_IDENT})\s+ON\s",
    re.IGNORECASE,
)
# Statements that leave the schema as it was: nothing of theirs to undo.
_NO_SCHEMA_CHANGE = frozenset(
    {"VACUUM", "ANALYZE", "ANALYSE", "REINDEX", "CLUSTER", "CHECKPOINT", "SET", "RESET"}
)


@dataclass(frozen=True)
class IndexBuild:
    """An index a statement that ran may have built: its name (as PostgreSQL stores it)."""

    name: str
    line: int


def ran_statements(migration: Migration, progress: int, *, in_flight_ran: bool) -> list[Statement]:
    """The up statements of `migration` that ran: the first `progress`, and the one after
    them when it was in flight as the connection was lost (it may have finished)."""
    up = migration.up
    stop = progress + 1 if in_flight_ran else progress
    if up.one_query and not up.transaction and stop:
        stop = len(up.statements)  # sent whole (plan.py): all of it ran, or none
    return [s for s in up.statements[:stop] if s.kind != TRANSACTION_CONTROL]


def exact_undo(statements: list[Statement]) -> list[IndexBuild] | None:
    """The index builds to undo when every statement's undo is known; None otherwise."""
    builds = []
    for statement in statements:
        match = _INDEX_BUILD_RE.match(statement.text)
        if match:
            builds.append(IndexBuild(_stored_name(match.group(1)), statement.line))
            continue
        first = statement.text.split(None, 1)[0].rstrip(";").upper() if statement.text else ""
        if first not in _NO_SCHEMA_CHANGE:
            return None
    return builds


def undo_index_builds(conn: Conn, builds: list[IndexBuild], before: SchemaSnapshot) -> list[str]:
    """Drop, newest first, the indexes `builds` made that did not exist `before` the run (one
    that did was kept by IF NOT EXISTS: not this run's); returns `name (line N)` of each."""
    dropped = []
    for build in reversed(builds):
        found = conn.execute(
            "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),"
            " c.relkind = 'I'"
            " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.relkind IN ('i', 'I') AND c.relname = %s",
            (build.name,),
        ).fetchall()
        for name, partitioned in ((str(n), bool(p)) for n, p in found):
            if f"index {name}" in before.objects:
                continue
            # A partitioned table's index cannot be dropped CONCURRENTLY.
            drop = (
                "DROP INDEX IF EXISTS {}" if partitioned else "DROP INDEX CONCURRENTLY IF EXISTS {}"
            )
            conn.execute(sql.SQL(drop).format(sql.SQL(name)))
            dropped.append(f"{name} (line {build.line})")
    return dropped


def _stored_name(written: str) -> str:
    """An identifier as PostgreSQL stores it: quoted kept (quotes undone), others lower-cased."""
    if written.startswith('"') and written.endswith('"') and len(written) >= 2:
        return written[1:-1].replace('""', '"')
    return written.lower()
