#!/usr/bin/env python3
"""The installed no-op release on a real slug, many times over: the issue-10 figure.

bench.py measures the same three commands a handful of times per run, between long applies; on
a shared machine that is too few samples. This script applies N migrations once, then times, in
rotating order, R rounds of:

- the python+psycopg floor on the slug's interpreter (`import psycopg; connect; select 1`);
- the installed runner (`.heroku-migrate/bin/heroku-migrate up`, built by bin/compile as on
  heroku-22, run where it was built);
- the same after a tar round trip (packed as Heroku packs a slug, whole-second mtimes, and
  unpacked elsewhere), which is what a dyno runs.

    .venv/bin/python test/bench/slug_noop.py --n 1000 --rounds 40

Wall clock is what a release takes; on a machine shared with other work it swings several-fold
between runs, so each command's CPU time (user + system, of the process and its children) is
reported too: the client-side work, which other load barely changes.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # the benchmark's helpers, next to this file

GOAL = bench.GOAL_SLUG_NOOP_RATIO


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of one run of `cmd`; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=bench.DEFAULT_URL)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--gen", type=Path, default=bench.DEFAULT_GEN)
    args = parser.parse_args()

    server = bench.Server(args.url)
    work = Path(tempfile.mkdtemp(prefix="slug_noop_"))
    mset = bench.generate(args.gen, work, args.n)
    env = bench.Env(server, sys.executable, Path("/nonexistent"), work, 900.0)
    app = bench.build_slug(env, mset)
    if app is None:
        print("needs /usr/bin/python3 (the slug is built as on heroku-22)", file=sys.stderr)
        return 1
    dyno = bench.tar_round_trip(app)
    db = f"bench_slug_noop_{args.n}"
    url = server.fresh(db)
    try:
        launcher, floor, senv = bench.slug_cmds(app, url)
        seconds, why = bench.timed(launcher, env=senv, cwd=app)  # applies the N migrations
        if seconds is None or server.count_tables(db) != args.n:
            print(f"could not apply the {args.n} migrations: {why}", file=sys.stderr)
            return 1
        tar_launcher, _, tar_env = bench.slug_cmds(dyno, url)
        commands = {
            "floor": (floor, senv, app),
            "installed": (launcher, senv, app),
            "tar round trip": (tar_launcher, tar_env, dyno),
        }
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for round_number in range(args.rounds):
            order = names[round_number % 3 :] + names[: round_number % 3]
            for name in order:
                cmd, cenv, cwd = commands[name]
                seconds, cpu_seconds = timed(cmd, cenv, cwd)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
    finally:
        server.drop(db)

    print(f"No-op with {args.n} applied, {args.rounds} interleaved rounds; load {bench._loadavg()}")
    print(
        "| command | wall median (s) | wall best (s) | CPU median (s) | wall / floor "
        "| CPU / floor |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    floor_wall, floor_cpu = statistics.median(wall["floor"]), statistics.median(cpu["floor"])
    for name in commands:
        median, best, cpu_median = (
            statistics.median(wall[name]),
            min(wall[name]),
            statistics.median(cpu[name]),
        )
        print(
            f"| {name} | {median:.3f} | {best:.3f} | {cpu_median:.3f} "
            f"| {median / floor_wall:.2f}x | {cpu_median / floor_cpu:.2f}x |"
        )
    for label, values, floor_value in (("wall", wall, floor_wall), ("CPU", cpu, floor_cpu)):
        ratio = statistics.median(values["tar round trip"]) / floor_value
        verdict = "PASS" if ratio <= GOAL else "FAIL"
        print(f"{verdict}: tar round trip <= {GOAL:.2f}x floor, {label} ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
