"""Which parts of the standard library the bundled interpreter keeps: those the runner can import.

Computed at build time, for the interpreter being bundled, from the source: every `import` in the
runner and its dependencies (function bodies included, since the runner imports lazily), then
every `import` in the standard library modules those reach, and so on. Following function
bodies and both branches of every `if` over-approximates what a run imports, which is the safe
side. A top-level package is kept whole once any of its modules is reached (a package may
import its own parts by name at run time, as `encodings` does for codecs), and `ALWAYS_KEPT`
covers what the interpreter itself imports before any of our code runs.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath

# What the interpreter imports on its own (start-up, codec lookup, text I/O), whatever the
# code it runs; most are frozen into the executable, the rest must be files.
ALWAYS_KEPT = frozenset(
    {
        "encodings",
        "codecs",
        "io",
        "abc",
        "os",
        "stat",
        "posixpath",
        "genericpath",
        "_collections_abc",
        "_sitebuiltins",
        "site",
        "linecache",
        "traceback",
        "warnings",
        "_py_warnings",
        "importlib",
        "zipimport",
        "lib-dynload",
    }
)


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`, whose imports only run when the file is a script."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and any(
            isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators
        )
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not _is_main_guard(node):
            pending.extend(ast.iter_child_nodes(node))


def _imports(source: bytes, module: str, is_package: bool) -> set[str]:
    """Absolute names of every module `source` may import (relative imports resolved)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".") if package else []
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, *([base] if base else [])])
        if not base:
            continue
        found.add(base)
        # `from package import name` may import the submodule package.name.
        found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _module_name(relative: PurePath) -> tuple[str, bool]:
    parts = relative.with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _code_modules(code: Path) -> Iterator[tuple[bytes, str, bool]]:
    """(source, module name, is a package) of every module in `code`: a package folder, a
    module file, or a wheel (a zip archive)."""
    if code.is_dir():
        for path in sorted(code.rglob("*.py")):
            yield (path.read_bytes(), *_module_name(path.relative_to(code.parent)))
    elif code.suffix == ".py":
        yield code.read_bytes(), code.stem, False
    else:
        with zipfile.ZipFile(code) as archive:
            for name in archive.namelist():
                if name.endswith(".py") and ".dist-info/" not in name:
                    yield (archive.read(name), *_module_name(PurePath(name)))


def _source_of(root: Path, module: str) -> tuple[Path, bool] | None:
    """The .py file of `module` under `root`, and whether it is a package's __init__."""
    relative = Path(*module.split("."))
    package = root / relative / "__init__.py"
    if package.is_file():
        return package, True
    plain = root / relative.with_suffix(".py")
    if plain.is_file():
        return plain, False
    return None


def needed_top_level(
    stdlib: Path, code: Iterable[Path], never_kept: frozenset[str] = frozenset()
) -> set[str]:
    """The top-level names (modules and packages) of `stdlib` that `code` (package folders,
    module files, wheels) may import, directly or through the standard library, leaving out
    (and not following) `never_kept`."""
    pending: list[str] = []
    for item in code:
        for source, module, is_package in _code_modules(item):
            pending.extend(_imports(source, module, is_package))
    seen: set[str] = set()
    kept: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        top = module.split(".")[0]
        if top in never_kept:
            continue
        # The parents of a submodule run first (`import a.b.c` runs a and a.b).
        pending.extend(module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1))
        found = _source_of(stdlib, module)
        if found is None:
            if top in sys.builtin_module_names or any(stdlib.glob(f"lib-dynload/{top}.*")):
                kept.add(top)
            continue
        kept.add(top)
        path, is_package = found
        pending.extend(_imports(path.read_bytes(), module, is_package))
    return kept | ALWAYS_KEPT
