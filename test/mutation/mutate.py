"""Mutation testing: put one deliberate bug at a time into a core module and check that the
tests guarding it fail.

    .venv/bin/python test/mutation/mutate.py                      # every target, sampled
    .venv/bin/python test/mutation/mutate.py --module sqlsplit --limit 0   # all of one module
    .venv/bin/python test/mutation/mutate.py --list               # the mutants, nothing run
    .venv/bin/python test/mutation/mutate.py --module plan --json plan.json
    .venv/bin/python test/mutation/mutate.py --module plan --rerun plan.json  # survivors only

Each mutant is made from the module's syntax tree (a comparison flipped, `and` turned into
`or`, a condition negated, a constant changed, a call statement or a `return` value dropped),
written into a scratch copy of the repository, and the module's test files run there with
pytest `-x`; subprocesses that the tests spawn import the scratch copy too. Tests that fail
without any mutant are deselected first (and named), so they cannot "kill" every mutant. A
mutant is *killed* when the tests fail, *survived* when they pass, *timeout* when they
outlive --timeout (a hang, or tests too slow for the limit: not counted as killed). The report
lists every survivor with its line, so it can be judged: a real gap in the tests, or an
equivalent mutant (one no test could tell apart, e.g. a change inside an error message).

It is a tool to run by hand (minutes per module, against TEST_DATABASE_URL or the embedded
server the suite starts); pytest does not collect it.
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

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "lib/herokumigrate"

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
    root = Path(tempfile.mkdtemp(prefix="hm-mutate-"))
    for part in ("lib", "test", "bin", "migrations_example", "pyproject.toml"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / part)
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
    return re.findall(r"^FAILED (\S+)", done.stdout, re.MULTILINE)


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


def _report(modules: list[str], results: list[dict[str, object]]) -> None:
    print()
    print("| module | mutants | killed | timed out | rate |")
    print("|---|---:|---:|---:|---:|")
    for module in modules:
        mine = [r for r in results if r["module"] == module]
        if mine:
            killed = sum(bool(r["killed"]) for r in mine)
            late = sum(r.get("verdict") == "timeout" for r in mine)
            print(f"| {module} | {len(mine)} | {killed} | {late} | {killed / len(mine):.0%} |")
    survivors = [r for r in results if not r["killed"]]
    if survivors:
        print("\nSurvivors (and timeouts):")
        for r in survivors:
            print(f"- {r['module']}.py:{r['line']}: {r['description']} ({r.get('verdict')})")


def main() -> int:
    """Run the mutants; print and optionally save the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS))
    parser.add_argument("--limit", type=int, default=25, help="mutants per module (0: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--marker", default="not slow", help="pytest -m expression")
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
        help="skip the unmutated run (deselect known failures with --tests ... --deselect=ID)",
    )
    args = parser.parse_args()
    modules = args.module or [m for m in TARGETS if (REPO / PACKAGE / f"{m}.py").exists()]
    chosen = _choose(args, modules)
    if args.list:
        for m in chosen:
            print(f"{m.module}.py:{m.line}: {m.description}")
        return 0
    root = _scratch_copy()
    results: list[dict[str, object]] = []
    try:
        # Tests that already fail without a mutant would "kill" every mutant: deselect them.
        selections: dict[str, list[str] | None] = {}
        baselines: dict[tuple[str, ...], list[str] | None] = {}
        for module in modules:
            tests = [*(args.tests or TARGETS[module]), "-m", args.marker]
            if args.no_baseline:
                baselines[tuple(tests)] = []
            elif tuple(tests) not in baselines:
                baselines[tuple(tests)] = failing_without_mutants(root, tests, args.timeout)
            failing = baselines[tuple(tests)]
            if failing is None:
                print(f"{module}: the tests break without any mutant; skipped", file=sys.stderr)
                selections[module] = None
                continue
            for test_id in failing:
                print(f"{module}: fails without any mutant, deselected: {test_id}", file=sys.stderr)
            selections[module] = [*tests, *(f"--deselect={t}" for t in failing)]
        for m in chosen:
            selected = selections[m.module]
            if selected is None:
                continue
            target = root / PACKAGE / f"{m.module}.py"
            original = target.read_text()
            target.write_text(mutated_source(m))
            try:
                verdict, seconds = run_tests(root, selected, args.timeout)
            finally:
                target.write_text(original)
            where = f"{m.module}.py:{m.line}"
            print(f"{verdict.upper():8} {where}: {m.description} ({seconds:.0f}s)", flush=True)
            results.append(
                {
                    **m.__dict__,
                    "killed": verdict == "killed",
                    "verdict": verdict,
                    "seconds": round(seconds, 1),
                }
            )
            if args.json:  # kept up to date: a long run can be stopped and still reported
                args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _report(modules, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
