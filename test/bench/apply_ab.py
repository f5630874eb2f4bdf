"""Apply N migrations: the psql floor, this checkout's runner and another checkout's (an A/B of a
change), in rotating order within each round, each on a fresh database. Reports each command's
median and, more robust on a busy machine, the median of the per-round ratios to the floor of
the same round.

    .venv/bin/python test/bench/apply_ab.py --other /tmp/before --n 500,1000 --rounds 9

`--other` is a checkout (a `git worktree add /tmp/before HEAD~1`, say) whose `lib/` is run with
the same interpreter. The set is ../shared/bench/gen_migrations.py's, as in bench.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import REPO, Env, Server, generate, timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--other", type=Path, help="another checkout to compare with")
    parser.add_argument("--n", default="500,1000")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--gen", type=Path, default=REPO.parent / "shared/bench/gen_migrations.py")
    args = parser.parse_args()
    server = Server(args.url)
    with tempfile.TemporaryDirectory() as work:
        env = Env(server, sys.executable, Path("/nonexistent"), Path(work), 900.0)
        runners = {"ours": REPO / "lib"}
        if args.other is not None:
            runners["other"] = args.other.resolve() / "lib"
        for n in (int(x) for x in args.n.split(",")):
            mset = generate(args.gen, Path(work), n)
            _measure(env, server, mset, n, runners=runners, rounds=args.rounds)
    return 0


def _measure(
    env: Env, server: Server, mset: Path, n: int, *, runners: dict[str, Path], rounds: int
) -> None:
    tools = ["floor", *runners]
    times: dict[str, list[float]] = {tool: [] for tool in tools}
    ratios: dict[str, list[float]] = {tool: [] for tool in runners}
    for r in range(rounds):
        order = tools[r % len(tools) :] + tools[: r % len(tools)]
        got: dict[str, float] = {}
        for tool in order:
            db = f"ab_{os.getpid()}_{tool}_{n}"
            url = server.fresh(db)
            if tool == "floor":
                cmd, cenv = env.apply_cmd("floor", url, mset)
            else:
                env.lib = runners[tool]
                cmd, cenv = env.apply_cmd("ours", url, mset)
            secs, why = timed(cmd, env=cenv)
            server.drop(db)
            if secs is None:
                raise SystemExit(f"{tool} failed at N={n}: {why}")
            got[tool] = secs
            times[tool].append(secs)
        for tool in runners:
            ratios[tool].append(got[tool] / got["floor"])
        print(f"N={n} round {r + 1}: " + ", ".join(f"{t} {got[t]:.3f}s" for t in tools))
    print(f"\nN={n}, {rounds} rounds: median s (min-max); median of per-round ratio to the floor")
    for tool in tools:
        line = f"  {tool:6} {statistics.median(times[tool]):.3f} "
        line += f"({min(times[tool]):.3f}-{max(times[tool]):.3f})"
        if tool in ratios:
            q = statistics.quantiles(ratios[tool], n=4) if rounds >= 4 else [0, 0, 0]
            line += f"  {statistics.median(ratios[tool]):.3f}x (quartiles {q[0]:.3f}-{q[2]:.3f})"
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
