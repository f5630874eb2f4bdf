"""Prisma Migrate and Flyway as their sources say they behave, written here for the tests (not
with the runner's code): how each applies a folder and the rows it writes, and what the tool
would do next on the database. The real `prisma` CLI needs a schema-engine binary and Flyway
needs Maven Central, neither of which can be fetched here; these are the oracle the runner's
results are compared with.

Prisma (prisma-engines' schema-engine, FORMATS.md): every subfolder of prisma/migrations is a
migration, ordered by JavaScript's `localeCompare` (ICU: here PostgreSQL's `und-x-icu`
collation, independent of the runner's own key); `migrate deploy` inserts the row with
`finished_at` NULL, sends `migration.sql` as one simple query, then sets `finished_at` and
`applied_steps_count = 1`; a failure leaves the row unfinished with the error in `logs`.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import psycopg

PRISMA_DDL = (
    "CREATE TABLE IF NOT EXISTS _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL,"
    " checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,"
    " migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,"
    " started_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
    " applied_steps_count INTEGER NOT NULL DEFAULT 0)"
)
PRISMA_LOCK_KEY = 72707369


class ToolRefuses(Exception):
    """What the tool would fail with before running anything (P3009, a validation error)."""


def prisma_order(url: str, names: list[str]) -> list[str]:
    """`names` as JavaScript's `localeCompare` orders them (ICU's root collation, through
    PostgreSQL's ICU), ties by code point."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            'SELECT n FROM unnest(%s::text[]) AS n ORDER BY n COLLATE "und-x-icu", n COLLATE "C"',
            (names,),
        ).fetchall()
    return [str(n) for (n,) in found]


def prisma_folder(url: str, folder: Path) -> list[Path]:
    """The migration folders, in Prisma's order."""
    names = [p.name for p in folder.iterdir() if p.is_dir()]
    return [folder / name for name in prisma_order(url, names)]


def prisma_checksum(path: Path) -> str:
    """The lowercase hex SHA-256 of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def apply_as_prisma(url: str, folder: Path, only: int | None = None) -> None:
    """`prisma migrate deploy` on a database it manages alone (the first `only` migrations)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PRISMA_DDL)
        for path in prisma_folder(url, folder)[:only]:
            script = path / "migration.sql"
            row = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at,"
                " applied_steps_count) VALUES (%s, %s, %s, now(), 0)",
                (row, prisma_checksum(script), path.name),
            )
            try:
                conn.execute(script.read_bytes().decode("utf-8"))  # one simple query
            except psycopg.Error as exc:
                conn.execute(
                    "UPDATE _prisma_migrations SET logs = %s WHERE id = %s", (str(exc), row)
                )
                raise
            conn.execute(
                "UPDATE _prisma_migrations SET finished_at = now(), applied_steps_count = 1"
                " WHERE id = %s",
                (row,),
            )


def prisma_would_apply(url: str, folder: Path) -> list[str]:
    """The migrations `prisma migrate deploy` would apply now; ToolRefuses with P3009 when a
    row is unfinished and not rolled back."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PRISMA_DDL)
        found = conn.execute(
            "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL"
            " FROM _prisma_migrations"
        ).fetchall()
    if any(not finished and not rolled_back for _, finished, rolled_back in found):
        raise ToolRefuses("P3009: migrate found failed migrations in the target database")
    applied = {str(n) for n, finished, rolled_back in found if finished and not rolled_back}
    return [p.name for p in prisma_folder(url, folder) if p.name not in applied]


def prisma_edited(url: str, folder: Path) -> list[str]:
    """The applied migrations `prisma migrate status` reports as modified since (the file's
    checksum, and those of its CRLF<->LF variants, all differ from the row's)."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT migration_name, checksum FROM _prisma_migrations"
            " WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL"
        ).fetchall()
    edited = []
    for name, kept in found:
        data = (folder / str(name) / "migration.sql").read_bytes()
        lf = data.replace(b"\r\n", b"\n")
        variants = {hashlib.sha256(v).hexdigest() for v in (data, lf, lf.replace(b"\n", b"\r\n"))}
        if kept not in variants:
            edited.append(str(name))
    return edited
