"""Time the build's release-safety check (parse with pglast, splitter cross-check, lint) on
F synthetic files, the way bin/compile runs it: `lintstep.check_release_safety` in-process,
with pglast already unpacked in the build cache.

    .venv/bin/python test/bench/lint_bench.py              # F = 10,000 (5,000 up + 5,000 down)
    .venv/bin/python test/bench/lint_bench.py --files 2000 --runs 3

Figures (wall clock, and this process's CPU time): cold (no record of a previous build: every
file is linted), one new (a typical push: one file is linted, after every older one is read for
what it creates) and warm (nothing new: every file is still parsed and cross-checked, none
linted), best and median of the runs, plus load_migrations alone (what the check reads before
parsing). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lib"))

from herokumigrate.buildpack import lintstep, parser  # noqa: E402
from herokumigrate.config import load_config  # noqa: E402
from herokumigrate.output import Output  # noqa: E402
from herokumigrate.source import load_migrations  # noqa: E402


def up_sql(i: int) -> str:
    """A realistic mix: mostly new tables and their indexes, now and then a risky change."""
    table = f"t{i:05d}"
    sql = (
        f"-- migration {i}\n"
        f"CREATE TABLE {table} (id bigserial PRIMARY KEY, name text NOT NULL, "
        "created_at timestamptz DEFAULT now());\n"
        f"CREATE INDEX {table}_name_idx ON {table} (name);\n"
        f"INSERT INTO {table} (name) SELECT 'row ' || g FROM generate_series(1, 10) g;\n"
    )
    if i % 10 == 0 and i > 1:
        previous = f"t{i - 1:05d}"
        sql += (
            f"ALTER TABLE {previous} ADD COLUMN note text;\n"
            f"CREATE INDEX {previous}_note_idx ON {previous} (note);\n"
        )
    return sql


def write_app(root: Path, files: int) -> Path:
    folder = root / "db/migrations"
    folder.mkdir(parents=True)
    for i in range(1, files // 2 + 1):
        version = 20260101000000 + i
        (folder / f"{version}_m{i:05d}.up.sql").write_text(up_sql(i))
        (folder / f"{version}_m{i:05d}.down.sql").write_text(f"DROP TABLE t{i:05d};\n")
    return root


def timed(function: object, runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds (this process) of each run: on a shared, busy machine the CPU
    time is the steadier figure."""
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        function()  # type: ignore[operator]
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--files", type=int, default=10_000)
    options.add_argument("--runs", type=int, default=5)
    args = options.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        app = write_app(Path(temp) / "app", args.files)
        cache = Path(temp) / "cache"
        config = load_config(app, {})
        captured = io.StringIO()
        quiet = Output(captured, io.StringIO())
        if parser.obtain(cache, quiet) is None:  # downloads and unpacks pglast once
            sys.exit("pglast is not available for this Python")

        def cold() -> None:
            (cache / lintstep.STATE_FILE).unlink(missing_ok=True)
            lintstep.check_release_safety(app, config, cache, quiet)

        def warm() -> None:
            lintstep.check_release_safety(app, config, cache, quiet)

        newest = sorted((app / "db/migrations").glob("*.up.sql"))[-1]

        def one_new() -> None:
            newest.write_text(newest.read_text() + "-- edited\n")  # a changed file is new
            lintstep.check_release_safety(app, config, {}, cache, quiet)

        def load() -> None:
            load_migrations(config.migrations_dir, app)

        figures = {
            "load_migrations": timed(load, args.runs),
            "check, cold (all new)": timed(cold, args.runs),
            "check, one new": timed(one_new, args.runs),
            "check, warm (none new)": timed(warm, args.runs),
        }
        report = captured.getvalue()
    print(
        f"{args.files} files ({args.files // 2} migrations), Python {sys.version.split()[0]}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    for name, (wall, cpu) in figures.items():
        print(
            f"  {name:24} wall best {min(wall):.3f}s median {statistics.median(wall):.3f}s; "
            f"CPU best {min(cpu):.3f}s median {statistics.median(cpu):.3f}s"
        )
    print("  last report line:", [line for line in report.splitlines() if "lint of" in line][-1])


if __name__ == "__main__":
    main()
