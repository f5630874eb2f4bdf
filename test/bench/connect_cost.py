"""What `database.connect` adds to a bare psycopg connect: the pooler check's round trips.

    PYTHONPATH=lib .venv/bin/python test/bench/connect_cost.py URL [N]

Prints the median of N (default 200) connects each way and of the pooler check alone on an
open connection, with what the check found.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import psycopg

from herokumigrate.database import connect, read_target
from herokumigrate.output import Output
from herokumigrate.pooler import detect_pooling


def median_ms(action: Callable[[], object], rounds: int) -> float:
    """Median wall-clock milliseconds of `action` over `rounds` runs."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    """Measure and print."""
    url = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    output = Output()
    target = read_target({"DATABASE_URL": url}, "DATABASE_URL", output)
    bare = median_ms(lambda: psycopg.connect(url, autocommit=True).close(), rounds)
    ours = median_ms(
        lambda: connect(target, output, connect_timeout=10, connect_wait=0).close(), rounds
    )
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        found = detect_pooling(conn, target.params, probe_timeout=3)
        check = median_ms(lambda: detect_pooling(conn, target.params, probe_timeout=3), rounds)
    print(
        f"n={rounds}: bare psycopg.connect {bare:.2f} ms, database.connect {ours:.2f} ms, "
        f"pooler check alone {check:.2f} ms ({found})"
    )


if __name__ == "__main__":
    main()
