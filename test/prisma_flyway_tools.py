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
import io
import json
import re
import shutil
import subprocess
import time
import uuid
import zlib
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest

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
    """`names` as JavaScript's `localeCompare` orders them (ICU's root collation), ties by code
    point: through PostgreSQL's ICU when the server has it (the embedded server is built
    without), else through Node's own `localeCompare`; a test is skipped when neither exists."""
    with psycopg.connect(url) as conn:
        icu = conn.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'").fetchone()
        if icu:
            found = conn.execute(
                "SELECT n FROM unnest(%s::text[]) AS n"
                ' ORDER BY n COLLATE "und-x-icu", n COLLATE "C"',
                (names,),
            ).fetchall()
            return [str(n) for (n,) in found]
    node = shutil.which("node")
    if node is None:
        pytest.skip("an ICU oracle: neither this server has ICU nor is node installed")
    script = (
        "const n = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "n.sort((a, b) => a.localeCompare(b, 'und') || (a < b ? -1 : a > b ? 1 : 0));"
        "process.stdout.write(JSON.stringify(n));"
    )
    done = subprocess.run(
        [node, "-e", script], input=json.dumps(names), capture_output=True, text=True, check=True
    )
    return [str(n) for n in json.loads(done.stdout)]


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


# ----- Flyway ---------------------------------------------------------------------------------
# flyway-core: ResourceNameParser (V/R/U prefixes, `__`, `.sql`), MigrationVersion (`_` read as
# `.`, numeric parts, trailing zeros ignored), ChecksumCalculator (CRC-32 over the lines read by
# a BufferedReader, BOM dropped), JdbcTableSchemaHistory (rank max + 1, current_user), the
# PostgreSQL createMetaDataTable.sql; `migrate` runs versioned ones in order, each in its own
# transaction with its row, then the repeatables whose checksum changed, by description.

FLYWAY_DDL = (
    'CREATE TABLE IF NOT EXISTS flyway_schema_history ("installed_rank" INT NOT NULL,'
    ' "version" VARCHAR(50), "description" VARCHAR(200) NOT NULL, "type" VARCHAR(20) NOT NULL,'
    ' "script" VARCHAR(1000) NOT NULL, "checksum" INTEGER, "installed_by" VARCHAR(100) NOT NULL,'
    ' "installed_on" TIMESTAMP NOT NULL DEFAULT now(), "execution_time" INTEGER NOT NULL,'
    ' "success" BOOLEAN NOT NULL);'
    " ALTER TABLE flyway_schema_history ADD CONSTRAINT flyway_schema_history_pk"
    " PRIMARY KEY (installed_rank);"
    " CREATE INDEX flyway_schema_history_s_idx ON flyway_schema_history (success)"
)
FLYWAY_ROWS = (
    "SELECT installed_rank, version, description, type, script, checksum, installed_by, success"
    " FROM flyway_schema_history ORDER BY installed_rank"
)


class FlywayScript(NamedTuple):
    """One script as Flyway resolves it."""

    order: tuple[object, ...]
    version: str | None  # as stored; None for a repeatable
    description: str
    script: str
    text: str  # placeholders replaced
    checksum: int
    in_transaction: bool
    baseline: bool = False  # a B file: stands for the versions up to its own


def flyway_crc(text: str) -> int:
    """ChecksumCalculator: lines as `BufferedReader.readLine` gives them, BOM dropped."""
    reader = io.StringIO(text.lstrip("\ufeff"), newline=None)  # universal newlines
    crc = 0
    for line in reader:
        crc = zlib.crc32(line.rstrip("\n").encode("utf-8"), crc)
    return crc if crc < 2**31 else crc - 2**32


def flyway_folder(folder: Path, placeholders: dict[str, str] | None = None) -> list[FlywayScript]:
    """The versioned scripts by version, then the repeatables by description."""
    found = []
    for path in sorted(folder.rglob("*.sql")):  # Flyway scans its locations recursively
        match = re.fullmatch(r"([VRB])([0-9._]*)__(.*)\.sql", path.name)
        if match is None:
            continue
        kind, written, description = match.groups()
        script = path.relative_to(folder).as_posix()  # the path in the location
        raw = path.read_bytes().decode("utf-8").removeprefix("\ufeff")  # BomStrippingReader
        text = raw
        conf = path.with_name(path.name + ".conf")
        settings = conf.read_text() if conf.exists() else ""
        if "placeholderReplacement=false" not in settings:
            for name, value in (placeholders or {}).items():
                text = text.replace("${" + name + "}", value)
        # Flyway runs a script outside a transaction when told so, or when it holds a
        # statement PostgreSQL refuses in one (here: a concurrent index build).
        in_transaction = "executeInTransaction=false" not in settings and not re.search(
            r"\bCONCURRENTLY\b", text, re.IGNORECASE
        )
        description = description.replace("_", " ")
        if kind in "VB":
            stored = written.replace("_", ".")
            parts = [int(p) for p in stored.split(".")]
            while len(parts) > 1 and parts[-1] == 0:
                parts.pop()
            order: tuple[object, ...] = (0, *parts) if kind == "V" else (0, *parts, -1)
            found.append(
                FlywayScript(
                    order,
                    stored,
                    description,
                    script,
                    text,
                    flyway_crc(raw),
                    in_transaction,
                    baseline=kind == "B",
                )
            )
        else:
            found.append(
                FlywayScript(
                    (1, description),
                    None,
                    description,
                    script,
                    text,
                    flyway_crc(text),
                    in_transaction,
                )
            )
    return sorted(found)


def apply_as_flyway(
    url: str, folder: Path, only: int | None = None, placeholders: dict[str, str] | None = None
) -> None:
    """`flyway migrate` (the first `only` scripts, when given)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('flyway_schema_history')").fetchone() == (None,):
            conn.execute(FLYWAY_DDL)
        done = conn.execute(
            "SELECT version, description, checksum FROM flyway_schema_history"
            " WHERE success ORDER BY installed_rank"
        ).fetchall()
        versions = {v for v, _, _ in done if v is not None}
        repeatables = {d: c for v, d, c in done if v is None}  # the latest row counts
        scripts = flyway_folder(folder, placeholders)
        baselines = [m for m in scripts if m.baseline]
        chosen = max(baselines) if baselines and not done else None  # an empty history only
        for m in [s for s in scripts if not s.baseline or s is chosen][:only]:
            if chosen is not None and m is not chosen and m.version and m.order <= chosen.order:
                continue  # below the baseline migration: never run
            if m.version is not None and m.version in versions:
                continue
            if m.version is None and repeatables.get(m.description) == m.checksum:
                continue
            started = time.monotonic()
            if m.in_transaction:
                conn.execute("BEGIN")
            conn.execute(m.text)
            conn.execute(
                "INSERT INTO flyway_schema_history (installed_rank, version, description, type,"
                " script, checksum, installed_by, execution_time, success)"
                " SELECT coalesce(max(installed_rank), 0) + 1, %s, %s, %s, %s, %s,"
                " current_user, %s, true FROM flyway_schema_history",
                (
                    m.version,
                    m.description,
                    "SQL_BASELINE" if m.baseline else "SQL",
                    m.script,
                    m.checksum,
                    round((time.monotonic() - started) * 1000),
                ),
            )
            if m.in_transaction:
                conn.execute("COMMIT")


def flyway_would_apply(
    url: str, folder: Path, placeholders: dict[str, str] | None = None
) -> list[str]:
    """What `flyway migrate` would run now (scripts); ToolRefuses with what its validation
    says first (a failed row, a changed checksum, a version applied but not found, a pending
    version below the newest applied one)."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT version, description, checksum, success, type FROM flyway_schema_history"
            " ORDER BY installed_rank"
        ).fetchall()
    if any(not ok for *_, ok, _ in found):
        raise ToolRefuses("Detected failed migration: please run repair")
    everything = flyway_folder(folder, placeholders)
    base = [
        m
        for m in everything
        if m.baseline and (m.version, "SQL_BASELINE") in {(v, t) for v, _, _, _, t in found}
    ]
    floor = base[0].order if base else None  # versions up to the baseline are never run
    scripts = [
        m for m in everything if not m.baseline and not (floor and m.version and m.order <= floor)
    ]
    local = {m.version: m for m in scripts if m.version is not None}
    applied = {str(v): c for v, _, c, _, t in found if v is not None and t != "SQL_BASELINE"}
    for version, kept in applied.items():
        if version not in local:
            raise ToolRefuses(f"Detected applied migration not resolved locally: {version}")
        if local[version].checksum != kept:
            raise ToolRefuses(f"Migration checksum mismatch for migration version {version}")
    newest = max((local[v].order for v in applied), default=None)
    pending = []
    latest = {str(d): c for v, d, c, _, _ in found if v is None}
    for m in scripts:
        if m.version is None:
            if latest.get(m.description) != m.checksum:
                pending.append(m.script)
        elif m.version not in applied:
            if newest is not None and m.order < newest:
                raise ToolRefuses(f"Detected resolved migration not applied: {m.version}")
            pending.append(m.script)
    return pending
