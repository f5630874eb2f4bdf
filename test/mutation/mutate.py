"""Mutation testing: put one deliberate bug at a time into the code and check that a test fails.

    .venv/bin/python test/mutation/mutate.py --mutants test/mutation/mutants.toml  # the list
    .venv/bin/python test/mutation/mutate.py --mutants test/mutation/mutants.toml --id ID
    .venv/bin/python test/mutation/mutate.py                      # every target, sampled
    .venv/bin/python test/mutation/mutate.py --module sqlsplit --limit 0   # all of one module
    .venv/bin/python test/mutation/mutate.py --list               # the mutants, nothing run
    .venv/bin/python test/mutation/mutate.py --module plan --json plan.json
    .venv/bin/python test/mutation/mutate.py --module plan --rerun plan.json  # survivors only

Two kinds of mutant. A *listed* mutant (`--mutants FILE`, see test/mutation/mutants.toml) is
written by hand: an exact piece of text in a file, replaced, named by the promise it breaks; the
list is reproducible (the same mutants every run, whatever else changed in the file) and each
was chosen as a change a real bug could look like. A *sampled* mutant is made from a module's
syntax tree (a comparison flipped, `and` turned into `or`, a condition negated, a constant
changed, a call statement or a `return` value dropped), sampled per module with a fixed seed.

Each mutant is written into a scratch copy of the repository (every file git tracks), and
pytest runs there with `-x`; subprocesses that the tests spawn import the scratch copy too.
First the test files named for the mutant (most mutants die there, in seconds); when they pass,
with `--scope whole` (the default for a list) the rest of the fast and real-database tiers
(`-m "not slow and not standin and not buildpack"`), so that a survivor means no test anywhere
catches it; `--scope mapped` stops after the named files. Tests that fail without any mutant
are deselected first (and named), so they cannot "kill" every mutant. A mutant is *killed*
when the tests fail, *survived* when they pass, *timeout* when they outlive --timeout (a
hang, or tests too slow for the limit: not counted as killed). The report counts kills, lists
every survivor with its line, and, for a list, groups the survivors by promise, so each can be
judged: a real gap in the tests, or an equivalent mutant (one no test could tell apart).

It is a tool to run by hand (see docs/mutation-testing.md), against TEST_DATABASE_URL or the
embedded server the suite starts; pytest does not collect it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Verdict = Literal["killed", "survived", "timeout"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "lib/herokumigrate"
# The fast and real-database tiers: every test but the slow ones and the real builds.
WHOLE_TIERS = "not slow and not standin and not buildpack"

# module (relative to lib/herokumigrate, without .py) -> the test files that guard it
# (fastest first: with -x most mutants die in the first file).
_RUNNER = ["test/test_guards.py", "test/test_compensation_lost.py", "test/test_runner.py"]
TARGETS: dict[str, list[str]] = {
    "sqlsplit": ["test/test_sqlsplit.py", "test/test_source.py"],
    "history": [*_RUNNER, "test/test_faults.py"],
    "lock": ["test/test_lock.py", "test/test_concurrency.py"],
    "buildpack/procfile": ["test/test_procfile.py"],
    "plan": ["test/test_plan.py", *_RUNNER],
    "apply": [*_RUNNER, "test/test_faults.py"],
    "runner": [*_RUNNER, "test/test_faults.py"],
    "recording": [*_RUNNER, "test/test_native.py"],
    "reconcile": ["test/test_plan.py", "test/test_native.py"],
    "compensate": ["test/test_compensation_lost.py", "test/test_faults.py"],
    "revert": [*_RUNNER, "test/test_faults.py"],
    "migrator": [*_RUNNER, "test/test_faults.py", "test/test_concurrency.py"],
    "session": [*_RUNNER, "test/test_faults.py", "test/test_concurrency.py"],
    # The modules the first targets left out (issue 16).
    "halfway": ["test/test_recovery.py", "test/test_compensation_lost.py"],
    "indexes": ["test/test_recovery.py", "test/test_guards.py", "test/test_faults.py"],
    "snapshot": ["test/test_recovery.py", "test/test_compensation_lost.py"],
    "signals": ["test/test_signals.py"],
    "native/__init__": ["test/test_native.py", "test/test_runner.py"],
    "native/golang_migrate": ["test/test_native.py", "test/test_runner.py"],
    "pooler": ["test/test_pooler.py"],
    "lockretry": ["test/test_stall.py", "test/test_guards.py", "test/test_concurrency.py"],
    "output": ["test/test_output.py", "test/test_database_url.py", "test/test_faults.py"],
    "database": ["test/test_database_url.py", "test/test_pooler.py", "test/test_bad_input.py"],
    "sqllex": ["test/test_sqlsplit.py", "test/test_source.py"],
    "source": ["test/test_source.py", "test/test_file_sets.py", "test/test_folder_choice.py"],
    "buildpack/wheels": ["test/test_wheels.py"],
    "buildpack/stacks": ["test/test_stacks.py"],
}
# What each module keeps of DESIGN.md's promises: the report groups sampled survivors by it.
PROMISES: dict[str, str] = {
    "sqlsplit": "statement splitting",
    "sqllex": "statement splitting",
    "history": "history and its log",
    "lock": "the migration lock",
    "session": "the migration lock, timeouts, reconnecting",
    "buildpack/procfile": "the release phase wired",
    "plan": "one transaction per release: the plan",
    "apply": "one transaction per release: applying",
    "runner": "timeouts and lock retries",
    "lockretry": "timeouts and lock retries",
    "recording": "the tools' tables kept in sync",
    "native/__init__": "the tools' tables kept in sync",
    "native/golang_migrate": "the tools' tables kept in sync",
    "reconcile": "adopting the tools' state",
    "compensate": "a failure undone: compensation",
    "halfway": "a failure undone: compensation",
    "indexes": "a failure undone: INVALID indexes",
    "snapshot": "a failure undone: the schema checked",
    "revert": "downs, goto, force",
    "migrator": "the commands",
    "signals": "SIGTERM",
    "pooler": "transaction pooling refused",
    "database": "connecting, transaction pooling refused",
    "output": "no secrets in any output",
    "source": "formats: files read as their tool reads them",
    "buildpack/wheels": "pinned, hash-checked dependencies",
    "buildpack/stacks": "stacks",
}

_FLIP_COMPARE: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: which candidate node of the module to change, and how."""

    module: str
    index: int  # position among the module's candidate nodes, in tree-walk order
    line: int
    description: str


@dataclass(frozen=True)
class ListedMutant:
    """A hand-made mutant from a list: `old` (exactly once in `file`) becomes `new`."""

    id: str
    promise: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    killed_by: str = ""

    @property
    def line(self) -> int:
        """The line where `old` starts (0 when it is not found)."""
        text = (REPO / self.file).read_text()
        at = text.find(self.old)
        if at < 0:
            return 0
        return text.count("\n", 0, at + len(self.old) - len(self.old.lstrip("\n"))) + 1

    def apply(self, text: str) -> str:
        """`text` with the mutant in; ValueError unless `old` occurs exactly once."""
        found = text.count(self.old)
        if found != 1:
            raise ValueError(f"{self.id}: its `old` text occurs {found} times in {self.file}")
        return text.replace(self.old, self.new)


def read_list(path: Path) -> list[ListedMutant]:
    """The mutants of a list file (see test/mutation/mutants.toml)."""
    with path.open("rb") as handle:
        entries = tomllib.load(handle).get("mutant", [])
    mutants = [
        ListedMutant(
            id=e["id"],
            promise=e["promise"],
            file=e["file"],
            old=e["old"],
            new=e["new"],
            tests=tuple(e.get("tests", ())),
            killed_by=e.get("killed_by", ""),
        )
        for e in entries
    ]
    ids = [m.id for m in mutants]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{path}: ids used twice: {', '.join(duplicates)}")
    return mutants


def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and isinstance(parent, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
    )


def _candidates(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    """Nodes that can be mutated, with what the mutation does, in a stable order."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in _FLIP_COMPARE:
            new = _FLIP_COMPARE[type(node.ops[0])].__name__
            yield node, f"comparison {type(node.ops[0]).__name__} -> {new}"
        elif isinstance(node, ast.BoolOp):
            yield node, "and -> or" if isinstance(node.op, ast.And) else "or -> and"
        elif isinstance(node, (ast.If, ast.While)) and not _is_type_checking(node):
            yield node, "condition negated"
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, f"{node.value} -> {not node.value}"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int)
            and not isinstance(node.value, bool)
        ):
            yield node, f"{node.value} -> {node.value + 1}"
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            if not _is_docstring(node, parents):
                yield node, "call statement removed"
        elif isinstance(node, ast.Return) and not _returns_none(node):
            yield node, "return value replaced by None"


def _returns_none(node: ast.Return) -> bool:
    value = node.value
    return value is None or (isinstance(value, ast.Constant) and value.value is None)


def _is_type_checking(node: ast.If | ast.While) -> bool:
    test = node.test
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


class _Apply(ast.NodeTransformer):
    def __init__(self, target: ast.AST) -> None:
        self.target = target

    def visit(self, node: ast.AST) -> ast.AST:
        if node is not self.target:
            return super().visit(node)
        if isinstance(node, ast.Compare):
            node.ops[0] = _FLIP_COMPARE[type(node.ops[0])]()
        elif isinstance(node, ast.BoolOp):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        elif isinstance(node, (ast.If, ast.While)):
            node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            node.value = not node.value
        elif isinstance(node, ast.Constant) and isinstance(node.value, int):
            node.value = node.value + 1
        elif isinstance(node, ast.Expr):
            return ast.Pass()
        elif isinstance(node, ast.Return):
            node.value = ast.Constant(None)
        return node


def mutants_of(module: str) -> list[Mutant]:
    """Every mutant of a module (empty when the module does not exist)."""
    path = REPO / PACKAGE / f"{module}.py"
    if not path.exists():
        return []
    tree = ast.parse(path.read_text())
    return [
        Mutant(module, i, getattr(node, "lineno", 0), what)
        for i, (node, what) in enumerate(_candidates(tree))
    ]


def mutated_source(mutant: Mutant) -> str:
    """The module's source with the mutant applied."""
    tree = ast.parse((REPO / PACKAGE / f"{mutant.module}.py").read_text())
    target = next(node for i, (node, _) in enumerate(_candidates(tree)) if i == mutant.index)
    return ast.unparse(ast.fix_missing_locations(_Apply(target).visit(tree)))


def _scratch_copy() -> Path:
    """Every file git tracks (as it is in the working tree), in a new temporary folder."""
    root = Path(tempfile.mkdtemp(prefix="hm-mutate-"))
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name, follow_symlinks=False)
    return root


def _pytest(root: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    """pytest in the scratch copy (its lib/ first on the path); None when it timed out."""
    env = dict(os.environ, PYTHONPATH=str(root / "lib"), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    try:
        return subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return None


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[Verdict, float]:
    """(verdict, seconds): the tests run against the scratch copy's lib/, stopping at the first
    failure. A timeout is its own verdict: a hang the mutant caused, or tests too slow for the
    limit; the report does not count it as killed."""
    started = time.monotonic()
    done = _pytest(root, ["-x", *tests], timeout)
    if done is None:
        return "timeout", time.monotonic() - started
    return ("killed" if done.returncode != 0 else "survived"), time.monotonic() - started


def failing_without_mutants(root: Path, tests: list[str], timeout: float) -> list[str] | None:
    """The test ids that fail on the unmutated code (deselected for the mutants, and named in
    the report); None when the run itself broke (timeout, collection error)."""
    done = _pytest(root, ["-rf", *tests], timeout)
    if done is None or done.returncode not in (0, 1):
        return None
    # `FAILED test/x.py::name[param with spaces] - message`: the id ends before ` - `.
    return re.findall(r"^FAILED (.+?)(?: - .*)?$", done.stdout, re.MULTILINE)


@dataclass(frozen=True)
class Job:
    """One mutant to try, whichever kind: where it goes, what it breaks, what to run first."""

    key: str  # the sampled mutant's module and index, or the listed mutant's id
    where: str  # file:line
    description: str
    promise: str
    file: str  # relative to the repository
    mutant: Mutant | ListedMutant
    tests: tuple[str, ...]

    def mutated(self, text: str) -> str:
        """The file's text with the mutant in."""
        if isinstance(self.mutant, ListedMutant):
            return self.mutant.apply(text)
        return mutated_source(self.mutant)


def _jobs(args: argparse.Namespace) -> list[Job]:
    """The mutants to try: the list's (optionally only --id ones), else the sampled ones."""
    if args.mutants:
        listed = read_list(args.mutants)
        if args.id:
            unknown = set(args.id) - {m.id for m in listed}
            if unknown:
                raise SystemExit(f"no mutant with id {', '.join(sorted(unknown))}")
            listed = [m for m in listed if m.id in args.id]
        return [
            Job(m.id, f"{m.file}:{m.line}", m.id, m.promise, m.file, m, m.tests) for m in listed
        ]
    modules = args.module or [m for m in TARGETS if (REPO / PACKAGE / f"{m}.py").exists()]
    return [
        Job(
            f"{m.module}#{m.index}",
            f"{m.module}.py:{m.line}",
            m.description,
            PROMISES.get(m.module, m.module),
            f"{PACKAGE}/{m.module}.py",
            m,
            tuple(args.tests or TARGETS[m.module]),
        )
        for m in _choose(args, modules)
    ]


def _choose(args: argparse.Namespace, modules: list[str]) -> list[Mutant]:
    """The sampled mutants of `modules` (each module sampled on its own, so a module's sample
    does not depend on the others chosen); with --rerun a report's survivors instead."""
    if args.rerun:
        survived = {
            (r["module"], r["index"]) for r in json.loads(args.rerun.read_text()) if not r["killed"]
        }
        return [
            m for module in modules for m in mutants_of(module) if (module, m.index) in survived
        ]
    chosen: list[Mutant] = []
    for module in modules:
        found = mutants_of(module)
        if args.limit and len(found) > args.limit:
            rng = random.Random(f"{args.seed}:{module}")
            found = sorted(rng.sample(found, args.limit), key=lambda m: m.index)
        chosen.extend(found)
    return chosen


class Trial:
    """Runs the jobs in one scratch copy, with the baselines' known failures deselected."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.scope: str = args.scope or ("whole" if args.mutants else "mapped")
        self._known: dict[tuple[str, ...], list[str] | None] = {}

    def _known_failures(self, tests: list[str]) -> list[str] | None:
        """What fails in `tests` without a mutant (once per selection); None: it broke."""
        key = tuple(tests)
        if key not in self._known:
            if self.args.no_baseline:
                self._known[key] = []
            else:
                found = failing_without_mutants(self.root, tests, self.args.timeout)
                for test_id in found or []:
                    print(f"fails without any mutant, deselected: {test_id}", file=sys.stderr)
                if found is None:
                    print(f"breaks without any mutant: {' '.join(tests)}", file=sys.stderr)
                self._known[key] = found
        return self._known[key]

    def _stages(self, job: Job) -> list[list[str]]:
        """The pytest selections to run in order: the job's files, then (whole scope) the
        rest of the fast and real-database tiers."""
        first = [*job.tests, "-m", self.args.marker] if job.tests else []
        stages = [first] if first else []
        if self.scope == "whole":
            rest = ["test", "-m", WHOLE_TIERS, *(f"--ignore={t}" for t in job.tests)]
            stages.append(rest)
        return stages

    def run(self, job: Job) -> dict[str, object]:
        """Put the mutant in, run the stages until one fails, take it out; the result."""
        target = self.root / job.file
        original = target.read_text()
        verdict: Verdict = "survived"
        seconds = 0.0
        stage_reached = ""
        try:
            mutated = job.mutated(original)
        except ValueError as exc:  # its text is gone: the list needs updating, not a verdict
            print(f"STALE    {job.where}: {exc}", flush=True)
            return {
                "key": job.key,
                "where": job.where,
                "description": job.description,
                "promise": job.promise,
                "killed": False,
                "verdict": "stale",
                "stage": "",
                "seconds": 0.0,
            }
        try:
            for stage in self._stages(job):
                # A selection's baseline runs on the unmutated copy, and only when reached (a
                # mutant killed by its named files never costs the whole tiers' baseline).
                target.write_text(original)
                failing = self._known_failures(stage)
                if failing is None:
                    verdict, stage_reached = "timeout", "baseline broken"
                    break
                target.write_text(mutated)
                selected = [*stage, *(f"--deselect={t}" for t in failing)]
                verdict, took = run_tests(self.root, selected, self.args.timeout)
                seconds += took
                stage_reached = "named files" if stage[0] != "test" else "whole tiers"
                if verdict != "survived":
                    break
        finally:
            target.write_text(original)
        print(
            f"{verdict.upper():8} {job.where}: {job.description} ({stage_reached}, {seconds:.0f}s)",
            flush=True,
        )
        return {
            "key": job.key,
            "where": job.where,
            "description": job.description,
            "promise": job.promise,
            "killed": verdict == "killed",
            "verdict": verdict,
            "stage": stage_reached,
            "seconds": round(seconds, 1),
            **(job.mutant.__dict__ if isinstance(job.mutant, Mutant) else {}),
        }


def _report(results: list[dict[str, object]], scope: str) -> None:
    stale = [r for r in results if r.get("verdict") == "stale"]
    results = [r for r in results if r.get("verdict") != "stale"]
    for r in stale:
        print(f"not run, its text is gone (update the list): {r['key']}")
    killed = sum(bool(r["killed"]) for r in results)
    late = sum(r.get("verdict") == "timeout" for r in results)
    total = len(results)
    rate = f"{killed / total:.1%}" if total else "n/a"
    print(f"\nKilled {killed} of {total} ({rate}); {late} timed out; scope: {scope}")
    print("\n| promise | mutants | killed | timed out | rate |")
    print("|---|---:|---:|---:|---:|")
    for promise in sorted({str(r["promise"]) for r in results}):
        mine = [r for r in results if r["promise"] == promise]
        k = sum(bool(r["killed"]) for r in mine)
        t = sum(r.get("verdict") == "timeout" for r in mine)
        print(f"| {promise} | {len(mine)} | {k} | {t} | {k / len(mine):.0%} |")
    survivors = [r for r in results if not r["killed"]]
    if survivors:
        print("\nSurvivors (and timeouts), by promise:")
        for promise in sorted({str(r["promise"]) for r in survivors}):
            print(f"- {promise}")
            for r in survivors:
                if r["promise"] == promise:
                    print(f"  - {r['where']}: {r['description']} ({r.get('verdict')})")


def main() -> int:
    """Run the mutants; print and optionally save the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, help="a list of hand-made mutants (TOML)")
    parser.add_argument("--id", action="append", help="with --mutants: only this mutant")
    parser.add_argument("--module", action="append", choices=sorted(TARGETS))
    parser.add_argument("--limit", type=int, default=25, help="mutants per module (0: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--scope",
        choices=("mapped", "whole"),
        help="after the named test files, also the rest of the fast and real-database tiers "
        "(whole; the default with --mutants) or not (mapped; the default for sampled mutants)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run")
    parser.add_argument("--marker", default="not slow", help="pytest -m for the named files")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--rerun", type=Path, help="run only the survivors of this --json report")
    parser.add_argument(
        "--tests",
        type=shlex.split,
        help="pytest arguments (one string) instead of the modules' mapped test files",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the unmutated runs (deselect known failures with --tests ... --deselect=ID)",
    )
    args = parser.parse_args()
    jobs = _jobs(args)
    if args.list:
        stale = 0
        for job in jobs:
            try:
                job.mutated((REPO / job.file).read_text())
            except ValueError as exc:  # the code moved on: the list needs updating
                print(f"STALE {exc}", file=sys.stderr)
                stale += 1
                continue
            print(f"{job.where}: {job.description} [{job.promise}]")
        return 1 if stale else 0
    root = _scratch_copy()
    trial = Trial(root, args)
    results: list[dict[str, object]] = []
    try:
        for job in jobs:
            results.append(trial.run(job))
            if args.json:  # kept up to date: a long run can be stopped and still reported
                args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _report(results, trial.scope)
    return 0


if __name__ == "__main__":
    sys.exit(main())
