"""What the release phase's `heroku-migrate up` would pay for argparse: importing it, building
the parser and parsing `up`, against the fast path `arguments.parse_command_line` takes for
exactly that command line. Each sample is a fresh interpreter (`-S`, as the launcher runs it)
that has already imported what a release imports anyway (psycopg, the config).

    .venv/bin/python test/bench/argparse_cost.py --runs 50
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "lib"

SAMPLE = r"""
import sys, time
del sys.path[0]
import psycopg, herokumigrate.config, herokumigrate.output, herokumigrate.errors
clocks = (time.perf_counter_ns, time.thread_time_ns)
start = [clock() for clock in clocks]
if sys.argv[1] == "argparse":
    from herokumigrate.arguments import build_parser
    build_parser().parse_args(["up"])
else:
    from herokumigrate.arguments import parse_command_line
    parse_command_line(["up"])
assert "argparse" in sys.modules or sys.argv[1] == "fast"
print(*((clock() - t0) / 1e6 for clock, t0 in zip(clocks, start)))
"""


def main() -> None:
    """Print the medians and minimums of both ways, wall-clock and CPU."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
    import psycopg

    site = str(Path(psycopg.__file__).resolve().parents[1])
    env = {"PYTHONPATH": f"{LIB}:{site}", "PATH": "/usr/bin:/bin"}
    samples: dict[str, list[tuple[float, float]]] = {"fast": [], "argparse": []}
    for _ in range(runs):
        for way, found in samples.items():
            out = subprocess.run(
                [sys.executable, "-S", "-c", SAMPLE, way],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            wall, cpu = (float(x) for x in out.stdout.split())
            found.append((wall, cpu))
    for way, found in samples.items():
        walls = [w for w, _ in found]
        cpus = [c for _, c in found]
        print(
            f"{way:>8}: wall median {statistics.median(walls):.2f} ms (min {min(walls):.2f}), "
            f"CPU median {statistics.median(cpus):.2f} ms (min {min(cpus):.2f}), {runs} runs"
        )


if __name__ == "__main__":
    main()
