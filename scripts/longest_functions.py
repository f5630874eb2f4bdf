#!/usr/bin/env python3
"""The longest functions under a folder (default lib/), in lines from `def` (or its first
decorator) to the last line of its body, docstring included: the 60-line rule's measure.

    python3 scripts/longest_functions.py [FOLDER] [COUNT]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def lengths(folder: Path) -> list[tuple[int, str]]:
    """(lines, `path:line name`) of every function and method under `folder`."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                end = node.end_lineno or node.lineno
                found.append((end - start + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("lib")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    for size, where in lengths(folder)[:count]:
        print(size, where)
