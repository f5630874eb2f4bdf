"""A record of a folder's files and their sha256 digests, to find what was damaged since.

The build cache outlives builds and is not ours alone: a truncated `.pyc` in a cached runtime
would give a green build and a release that fails with `EOFError`. What the build unpacks into the
cache gets a record; what it reuses is checked against it first.
"""

from __future__ import annotations

from pathlib import Path

from herokumigrate.buildpack.wheels import sha256_of

RECORD = ".sha256"


def _files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and path != folder / RECORD
    )


def write_record(folder: Path) -> None:
    """Record every regular file under `folder` with its sha256 (in `folder/.sha256`)."""
    lines = [f"{sha256_of(path)}  {path.relative_to(folder)}\n" for path in _files(folder)]
    (folder / RECORD).write_text("".join(lines), encoding="utf-8")


def has_record(folder: Path) -> bool:
    """Whether `folder` was recorded by `write_record`."""
    return (folder / RECORD).is_file()


def damaged(folder: Path) -> list[str]:
    """The files under `folder` that differ from its record, are missing, or were added; every
    file when there is no record."""
    try:
        recorded = (folder / RECORD).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return [str(path.relative_to(folder)) for path in _files(folder)] or [RECORD]
    expected: dict[str, str] = {}
    for line in recorded:
        digest, _, name = line.partition("  ")
        expected[name] = digest
    bad = []
    present = set()
    for path in _files(folder):
        name = str(path.relative_to(folder))
        present.add(name)
        if expected.get(name) != sha256_of(path):
            bad.append(name)
    bad.extend(sorted(set(expected) - present))
    return bad
