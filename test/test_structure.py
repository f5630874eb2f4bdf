"""The shape rules of lib/ the team keeps (docs/architecture.md): no function over 60 lines, no
`legacy` naming, no import cycle between the runner's modules."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib" / "herokumigrate"


def _lengths() -> list[tuple[int, str]]:
    spec = importlib.util.spec_from_file_location("longest", ROOT / "scripts/longest_functions.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lengths(LIB)  # type: ignore[no-any-return]


def test_no_function_is_over_60_lines() -> None:
    over = [(size, where) for size, where in _lengths() if size > 60]
    assert not over, over


def test_nothing_is_named_legacy() -> None:
    named = [p.name for p in LIB.rglob("*.py") if "legacy" in p.read_text().lower()]
    assert not named


def _imports(path: Path) -> set[str]:
    """The herokumigrate modules `path` imports at module level (not under TYPE_CHECKING)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("herokumigrate"):
                found.add(node.module)
                found.update(
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if (LIB.parent / f"{node.module}.{a.name}".replace(".", "/"))
                    .with_suffix(".py")
                    .exists()
                )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("herokumigrate"))
    return found


def test_the_modules_import_no_cycle() -> None:
    graph = {}
    for path in LIB.rglob("*.py"):
        parts = path.relative_to(LIB.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        graph[name] = {m for m in _imports(path) if m != name}
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path, node, nxt]))
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    for node in sorted(graph):
        if node not in seen:
            visit(node, [])


def test_the_build_steps_import_nothing_that_needs_libpq() -> None:
    # Build images have no libpq: psycopg's pure-Python wrapper fails to import there, so a
    # build step that imported it would crash the build (the heroku-26 stand-in caught one).
    import subprocess

    modules = sorted(
        ".".join(("herokumigrate", *p.relative_to(LIB).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for p in [*(LIB / "buildpack").rglob("*.py"), LIB / "downloss.py", LIB / "lintstep.py"]
        if p.exists() and p.name != "__main__.py"
    )
    code = "import importlib, sys\nsys.modules['psycopg'] = None\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in modules
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
