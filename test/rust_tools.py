"""sqlx and Diesel as their sources say they behave, written here for the tests (not with the
runner's code): how each applies a folder (each file one simple query, in a transaction unless
the tool's opt-out says otherwise, then the row it writes), and what the app binary's own
`sqlx::migrate!().run()` / `run_pending_migrations` checks at boot. They are the oracle the
runner's results are compared with.

Facts (read from launchbadge/sqlx and diesel-rs/diesel): sqlx-postgres `migrate.rs`
(`ensure_migrations_table`, `apply`: BEGIN, the file, INSERT ... success TRUE, checksum,
execution_time -1, COMMIT, then UPDATE execution_time in ns), sqlx-core `migrator.rs`
(`run_direct`: dirty version, VersionMissing, VersionMismatch, pending ones applied);
diesel `setup_migration_table.sql`, diesel_migrations `migration_harness.rs` (pending = the
versions without a row, sorted as strings) and `file_based_migrations.rs` (metadata.toml).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import NamedTuple

import psycopg

from herokumigrate.compat import tomllib

SQLX_DDL = (
    "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY,"
    " description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),"
    " success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"
)
DIESEL_DDL = (
    "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY"
    " NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


class ToolMigration(NamedTuple):
    """One migration as its tool reads it."""

    order: tuple[object, ...]
    version: str  # as the tool's table stores it
    description: str  # sqlx's description; Diesel's folder name
    up: Path
    in_transaction: bool
    checksum: bytes  # sqlx: SHA-384 of the file's bytes; Diesel: none


def sqlx_folder(folder: Path) -> list[ToolMigration]:
    """`resolve_blocking`: every `<i64>_<rest>.sql` file; down files are not run."""
    found = []
    for path in folder.iterdir():
        prefix, sep, rest = path.name.partition("_")
        if not path.is_file() or not sep or not rest.endswith(".sql"):
            continue
        version = int(prefix)
        if rest.endswith(".down.sql"):
            continue
        suffix = ".up.sql" if rest.endswith(".up.sql") else ".sql"
        description = rest.removesuffix(suffix).replace("_", " ")
        data = path.read_bytes()
        no_tx = data.startswith(b"-- no-transaction")
        found.append(
            ToolMigration(
                (version,),
                str(version),
                description,
                path,
                not no_tx,
                hashlib.sha384(data).digest(),
            )
        )
    return sorted(found)


def diesel_folder(folder: Path) -> list[ToolMigration]:
    """`FileBasedMigrations`: every non-empty subfolder; metadata.toml's run_in_transaction
    (absent file: true; present without the key: false)."""
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.is_dir() or not any(path.iterdir()):
            continue
        version = path.name.split("_")[0].replace("-", "")
        in_transaction = True
        if (path / "metadata.toml").exists():
            try:  # Diesel's `unwrap_or_default`: a file it cannot read counts as none
                value = tomllib.loads((path / "metadata.toml").read_text()).get(
                    "run_in_transaction", False
                )
            except tomllib.TOMLDecodeError:
                value = True
            in_transaction = value if isinstance(value, bool) else True
        found.append(
            ToolMigration((version,), version, path.name, path / "up.sql", in_transaction, b"")
        )
    return sorted(found)


def apply_as_sqlx(url: str, folder: Path, only: int | None = None) -> None:
    """`sqlx migrate run` / `migrate!().run()` on a database it manages alone (the first
    `only` migrations, when given)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQLX_DDL)
        for m in sqlx_folder(folder)[:only]:
            started = time.perf_counter_ns()
            if m.in_transaction:
                conn.execute("BEGIN")
            conn.execute(m.up.read_text())  # no parameters: one simple query
            conn.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum,"
                " execution_time) VALUES (%s, %s, TRUE, %s, -1)",
                (int(m.version), m.description, m.checksum),
            )
            if m.in_transaction:
                conn.execute("COMMIT")
            conn.execute(
                "UPDATE _sqlx_migrations SET execution_time = %s WHERE version = %s",
                (time.perf_counter_ns() - started, int(m.version)),
            )


def apply_as_diesel(url: str, folder: Path, only: int | None = None) -> None:
    """`diesel migration run` / `run_pending_migrations` on a database it manages alone."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DIESEL_DDL)
        for m in diesel_folder(folder)[:only]:
            if m.in_transaction:
                conn.execute("BEGIN")
            conn.execute(m.up.read_text())
            conn.execute(
                "INSERT INTO __diesel_schema_migrations (version) VALUES (%s)", (m.version,)
            )
            if m.in_transaction:
                conn.execute("COMMIT")


class SqlxRefuses(Exception):
    """What sqlx's `run_direct` fails with (Dirty, VersionMissing, VersionMismatch)."""


def sqlx_would_apply(url: str, folder: Path) -> list[str]:
    """The versions the app binary's `sqlx::migrate!().run()` would apply now; SqlxRefuses
    with sqlx's message when it would refuse to start."""
    files = {m.version: m for m in sqlx_folder(folder)}
    known = files.keys() | {str(int(p.name.partition("_")[0])) for p in folder.glob("*_*.down.sql")}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQLX_DDL)
        dirty = conn.execute(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1"
        ).fetchone()
        if dirty is not None:
            raise SqlxRefuses(f"migration {dirty[0]} is partially applied")
        applied = dict(
            conn.execute("SELECT version::text, checksum FROM _sqlx_migrations").fetchall()
        )
    for version in applied:
        if version not in known:
            raise SqlxRefuses(f"migration {version} was previously applied but is missing")
    pending = []
    for version, m in sorted(files.items(), key=lambda item: item[1].order):
        if version not in applied:
            pending.append(version)
        elif bytes(applied[version]) != m.checksum:
            raise SqlxRefuses(f"migration {version} was previously applied but has been modified")
    return pending


def diesel_would_apply(url: str, folder: Path) -> list[str]:
    """The versions the app binary's `run_pending_migrations` would apply now."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DIESEL_DDL)
        applied = {
            str(v) for (v,) in conn.execute("SELECT version FROM __diesel_schema_migrations")
        }
    return [m.version for m in diesel_folder(folder) if m.version not in applied]


def schema_without_ours(server_dump: str) -> str:
    """A `pg_dump --schema-only` with the runner's own tables (and their comments) left out."""
    blocks = server_dump.split("\n\n")
    return "\n\n".join(b for b in blocks if "heroku_migrate_history" not in b)
