"""What the Rust tools (sqlx, Diesel) share: the app's TOML files read as they read them, a
`Cargo.toml` naming a crate, and the byte-order mark both send to PostgreSQL, which fails on it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from herokumigrate.sections import SourceFile

_BOM = b"\xef\xbb\xbf"
# The tables of a Cargo.toml that list a crate's dependencies (`[target.'cfg(..)'.dependencies]`
# is searched too).
_DEPENDENCY_TABLES = ("dependencies", "dev-dependencies", "build-dependencies")


def read_toml(path: Path) -> Mapping[str, object] | None:
    """A TOML file of the app, parsed; None when it does not exist. BadInput naming the file
    when it cannot be read or parsed (its tool would fail on it too)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(
            f"{path.name}: cannot be read ({exc.strerror})", fix=f"Make {path.name} readable."
        ) from None
    from herokumigrate.compat import tomllib  # only for a file that exists

    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(
            f"{path.name}: invalid TOML ({exc})",
            fix=f"Fix {path.name}: its tool cannot read it either (see https://toml.io).",
        ) from None


def table(doc: Mapping[str, object] | None, *keys: str) -> Mapping[str, object]:
    """`doc[k1][k2]...` when each is a table; empty otherwise."""
    found: object = doc or {}
    for key in keys:
        found = found.get(key, {}) if isinstance(found, dict) else {}
    return found if isinstance(found, dict) else {}


def cargo_depends_on(app_dir: Path, crate: str) -> bool:
    """Whether the app's `Cargo.toml` (a package, or a workspace's shared dependencies) lists
    `crate` among its dependencies, under its name or renamed (`package = "sqlx"`)."""
    try:
        doc = read_toml(app_dir / "Cargo.toml")
    except BadInput:
        return False  # cargo fails on it: no sign of anything
    if doc is None:
        return False
    tables = [table(doc, name) for name in _DEPENDENCY_TABLES]
    tables.append(table(doc, "workspace", "dependencies"))
    for target in table(doc, "target").values():
        if isinstance(target, dict):
            tables.extend(table(target, name) for name in _DEPENDENCY_TABLES)
    return any(_names_crate(deps, crate) for deps in tables)


def _names_crate(dependencies: Mapping[str, object], crate: str) -> bool:
    if crate in dependencies:
        return True
    return any(
        isinstance(spec, dict) and spec.get("package") == crate for spec in dependencies.values()
    )


def starts_with_bom(path: SourceFile) -> bool:
    """Whether the file starts with a UTF-8 byte-order mark (which reading it drops)."""
    fd = os.open(path.full, os.O_RDONLY)
    try:
        return os.read(fd, len(_BOM)) == _BOM
    finally:
        os.close(fd)


def bom_error(path: SourceFile, tool: str) -> BadInput:
    """The error for a file starting with a byte-order mark: the tool sends it to PostgreSQL,
    which reads it as part of a name and fails."""
    return BadInput(
        f"{path.shown}: starts with a UTF-8 byte-order mark; {tool} sends it to PostgreSQL "
        "with the SQL, which fails on it (a syntax error at the first line)",
        fix=f"Save {path.shown} as UTF-8 without a byte-order mark.",
    )
