#!/usr/bin/env python3
"""A real sqlx or Diesel migrations folder, as shipped, applied end to end two ways and compared.

    .venv/bin/python test/bench/rust_sets.py --tool diesel PATH/TO/migrations
    .venv/bin/python test/bench/rust_sets.py --tool sqlx --url postgres://postgres@127.0.0.1:5499 \\
        --pg-dump /path/to/pg_dump-18 PATH/TO/migrations

1. The tool's way, written here from the tools' sources (not with the runner's code): each
   migration in the tool's order, its file sent as one simple query, in a transaction unless the
   tool's opt-out says otherwise, then the row the tool writes in its own table (sqlx: version,
   description with `_` as spaces, success, SHA-384 of the file's bytes, execution time in ns;
   Diesel: the version string). It stops at the first migration that fails, as the tool does.
2. The runner's way: `heroku-migrate validate` (which must find the folder to be the tool's,
   with no `tool` setting: the folder's parent is the app) and `up` on a second database. When
   the tool's way failed at a migration, `up` must fail too and leave the database as it was;
   the runner is then taken to the last migration that worked (`goto`).
3. The schemas (`pg_dump --schema-only`, the runner's own tables left out) and the tool's table
   (row by row) must be the same.

Nothing of the folder is copied; two databases `rustset_*` are created on the server and
dropped at the end. Exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "lib"))

from herokumigrate.compat import tomllib  # noqa: E402 -- tomllib, or tomli on Python 3.10


class ToolMigration(NamedTuple):
    """A migration as the tool reads it."""

    order: tuple[object, ...]
    version: str  # as the tool stores it
    description: str
    up: Path
    in_transaction: bool


def sqlx_migrations(folder: Path) -> list[ToolMigration]:
    """sqlx-core's resolve_blocking: `<i64>_<desc>.sql`, downs skipped by `run`."""
    found = []
    for path in folder.iterdir():
        if not path.is_file():
            continue
        version, sep, rest = path.name.partition("_")
        if not sep or not rest.endswith(".sql"):
            continue
        number = int(version)  # sqlx fails on the folder otherwise: so does this
        if rest.endswith(".down.sql"):
            continue
        suffix = ".up.sql" if rest.endswith(".up.sql") else ".sql"
        while rest.endswith(suffix):
            rest = rest[: -len(suffix)]
        text = path.read_text()
        found.append(
            ToolMigration(
                (number,),
                str(number),
                rest.replace("_", " "),
                path,
                not text.startswith("-- no-transaction"),
            )
        )
    return sorted(found)


def diesel_migrations(folder: Path) -> list[ToolMigration]:
    """diesel_migrations' FileBasedMigrations: a non-empty subfolder per migration."""
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.is_dir() or not any(path.iterdir()):
            continue
        version = path.name.split("_")[0].replace("-", "")
        in_transaction = True
        metadata = path / "metadata.toml"
        if metadata.exists():
            try:
                value = tomllib.loads(metadata.read_text()).get("run_in_transaction", False)
                in_transaction = value if isinstance(value, bool) else True
            except tomllib.TOMLDecodeError:
                in_transaction = True
        found.append(ToolMigration((version,), version, path.name, path / "up.sql", in_transaction))
    return sorted(found)


SQLX_TABLE = (
    "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT"
    " NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,"
    " checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"
)
DIESEL_TABLE = (
    "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY"
    " NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


def apply_as_the_tool(url: str, tool: str, migrations: list[ToolMigration]) -> tuple[int, str]:
    """Apply as the tool does; (how many applied, the error of the one that failed or '')."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQLX_TABLE if tool == "sqlx" else DIESEL_TABLE)
        for count, m in enumerate(migrations):
            data = m.up.read_bytes()
            started = time.perf_counter_ns()
            try:
                if m.in_transaction:
                    conn.execute("BEGIN")
                conn.execute(data.decode())  # no parameters: psycopg sends a simple query
                if tool == "sqlx":
                    conn.execute(
                        "INSERT INTO _sqlx_migrations (version, description, success, checksum,"
                        " execution_time) VALUES (%s, %s, TRUE, %s, -1)",
                        (int(m.version), m.description, hashlib.sha384(data).digest()),
                    )
                else:
                    conn.execute(
                        "INSERT INTO __diesel_schema_migrations (version) VALUES (%s)",
                        (m.version,),
                    )
                if m.in_transaction:
                    conn.execute("COMMIT")
            except psycopg.Error as exc:
                if m.in_transaction:
                    conn.execute("ROLLBACK")
                return count, f"{m.up.relative_to(m.up.parents[1])}: {exc.diag.message_primary}"
            if tool == "sqlx":
                conn.execute(
                    "UPDATE _sqlx_migrations SET execution_time = %s WHERE version = %s",
                    (time.perf_counter_ns() - started, int(m.version)),
                )
    return len(migrations), ""


def run_runner(url: str, folder: Path, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`heroku-migrate ARGS` with the folder's parent as the app (no `tool` setting)."""
    del tool
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_")}
    env.update(
        DATABASE_URL=url,
        MIGRATE_PATH=folder.name,
        MIGRATE_LOCK_WAIT="30",
        PYTHONPATH=str(ROOT / "lib"),
        NO_COLOR="1",
    )
    return subprocess.run(
        [sys.executable, "-m", "herokumigrate", *args],
        cwd=folder.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def schema(url: str, pg_dump: str) -> list[str]:
    out = subprocess.run(
        [pg_dump, "--schema-only", "--no-owner", "--no-privileges", "--restrict-key=bench",
         "-T", "heroku_migrate_history", "-T", "heroku_migrate_history_log",
         "-T", "heroku_migrate_history_log_id_seq", "-T", "heroku_migrate_history_rev", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if line and not line.startswith("--")]


def tool_rows(url: str, tool: str) -> list[tuple[object, ...]]:
    query = (
        "SELECT version, description, success, encode(checksum, 'hex'), execution_time > 0"
        " FROM _sqlx_migrations ORDER BY version"
        if tool == "sqlx"
        else "SELECT version FROM __diesel_schema_migrations ORDER BY version"
    )
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tool", choices=("sqlx", "diesel"), required=True)
    parser.add_argument("--url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--pg-dump", default="pg_dump")
    args = parser.parse_args()
    folder = args.folder.resolve()
    migrations = (sqlx_migrations if args.tool == "sqlx" else diesel_migrations)(folder)
    tag = uuid.uuid4().hex[:8]
    names = [f"rustset_{tag}_tool", f"rustset_{tag}_runner"]
    with psycopg.connect(f"{args.url}/postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    tool_url, runner_url = (f"{args.url}/{name}" for name in names)
    try:
        return compare(args, folder, migrations, tool_url, runner_url)
    finally:
        with psycopg.connect(f"{args.url}/postgres", autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def compare(
    args: argparse.Namespace,
    folder: Path,
    migrations: list[ToolMigration],
    tool_url: str,
    runner_url: str,
) -> int:
    started = time.monotonic()
    applied, error = apply_as_the_tool(tool_url, args.tool, migrations)
    tool_s = time.monotonic() - started
    print(f"{args.tool}: {len(migrations)} migration(s) in {folder}")
    print(
        f"the tool's way: {applied} applied in {tool_s:.1f}s"
        + (f"; stopped: {error}" if error else "")
    )
    problems = []
    checked = run_runner(runner_url, folder, args.tool, "validate")
    said = [line.strip() for line in checked.stdout.splitlines() if "Format:" in line]
    print(
        f"runner validate: exit {checked.returncode}; {said[0] if said else checked.stderr[:300]}"
    )
    if not said or not said[0].startswith(f"Format: {args.tool} "):
        problems.append(f"the folder was not found to be {args.tool}'s")
    started = time.monotonic()
    result = run_runner(runner_url, folder, args.tool, "up")
    runner_s = time.monotonic() - started
    if error:
        empty = schema(runner_url, args.pg_dump) == schema(f"{args.url}/postgres", args.pg_dump)
        failed_at = migrations[applied].up.relative_to(folder).as_posix()
        print(
            f"runner up: exit {result.returncode} in {runner_s:.1f}s; database unchanged: {empty}"
        )
        print("  " + "\n  ".join(line for line in result.stderr.splitlines()[:3]))
        named = failed_at.split("/")[0] in result.stderr
        print(f"  the failing migration {failed_at} named: {named}")
        if result.returncode != 1 or not empty:
            problems.append(f"runner up should fail (at {failed_at}) and change nothing")
        if applied:
            result = run_runner(
                runner_url, folder, args.tool, "goto", migrations[applied - 1].version, "--yes"
            )
    else:
        print(f"runner up: exit {result.returncode} in {runner_s:.1f}s")
    if result.returncode != 0:
        problems.append(f"runner exit {result.returncode}: {result.stderr.strip()[:2000]}")
    else:
        ours, theirs = schema(runner_url, args.pg_dump), schema(tool_url, args.pg_dump)
        if ours != theirs:
            extra = sorted(set(ours) - set(theirs))[:20]
            missing = sorted(set(theirs) - set(ours))[:20]
            problems.append(f"schemas differ: runner only {extra}; tool only {missing}")
        mine, expected = tool_rows(runner_url, args.tool), tool_rows(tool_url, args.tool)
        if mine != expected:
            diff = [(a, b) for a, b in zip(mine, expected, strict=False) if a != b][:5]
            problems.append(
                f"{args.tool}'s table differs ({len(mine)} vs {len(expected)} rows): {diff}"
            )
        print(f"schema lines compared: {len(ours)}; {args.tool} rows compared: {len(expected)}")
        again = run_runner(runner_url, folder, args.tool, "up")
        if error and applied:
            again_ok = again.returncode == 1
        else:
            again_ok = again.returncode == 0 and "up to date" in again.stdout.lower()
        if not again_ok:
            problems.append(
                f"a second up: exit {again.returncode}: {again.stdout[-300:]}{again.stderr[-300:]}"
            )
    for problem in problems:
        print("DIFFERENT:", problem)
    print("same" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
