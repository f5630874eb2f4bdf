"""The build-time manifest: the validated folder, so that a release with nothing to do need not
read every migration file to learn it.

The build validates every file and records, per file of the migrations folder (its subfolders
included, for the formats that keep one folder per migration), its size and mtime, and per
migration, its version and checksum. A slug never changes after the build, so a release whose
folder still matches the manifest can skip reading the files. Heroku packs the slug with tar,
which keeps whole seconds of an mtime only: the manifest holds and compares whole seconds (plus
the size), what a tar round trip keeps. Only a buildpack that runs after ours can still edit a
file; size and second together catch that short of a same-size edit within the same second. A
down file is recorded by its presence only: a release with nothing pending never reads one.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, NamedTuple

from herokumigrate.formats import format_named, syntax_of
from herokumigrate.tools import TOOL_NAMES

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from herokumigrate.migration import Migration
    from herokumigrate.versions import Version, VersionSyntax

MANIFEST_ENV = "HEROKU_MIGRATE_MANIFEST"
_MANIFEST_FORMAT = 3
_NS_PER_SECOND = 1_000_000_000


class Fingerprint(NamedTuple):
    """What the history must hold for a release with nothing to do: each migration's version
    and checksum, and the syntax of their versions."""

    syntax: VersionSyntax
    migrations: list[tuple[Version, str]]

    @classmethod
    def of(cls, migrations: list[Migration]) -> Fingerprint:
        """The fingerprint of migrations read from the files."""
        return cls(syntax_of(migrations), [(m.version, m.checksum) for m in migrations])


def write_manifest(
    target: Path, directory: Path, path_setting: str, migrations: list[Migration]
) -> None:
    """Record the validated folder for `read_manifest` (called by `validate --manifest`)."""
    downs = {m.down_file.full for m in migrations if m.down_file is not None}
    files: dict[str, list[int] | None] = {}
    for relative, entry in _files(str(directory), ""):
        files[relative] = None if entry.path in downs else _stamp(entry)
    doc = {
        "format": _MANIFEST_FORMAT,
        "path": path_setting,
        "files": files,
        "tool": migrations[0].format if migrations else None,
        "migrations": [[m.version.canonical, m.checksum] for m in migrations],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc, separators=(",", ":")))


def read_manifest(manifest: str, directory: Path, path_setting: str) -> Fingerprint | None:
    """(version, checksum) of every migration, from the build's manifest, when the folder is
    exactly as the build left it; None otherwise (the caller then reads the files)."""
    try:
        with open(manifest, "rb") as handle:
            doc = json.loads(handle.read())
        if doc.get("format") != _MANIFEST_FORMAT or doc.get("path") != path_setting:
            return None
        files: dict[str, list[int] | None] = doc["files"]
        seen = 0
        for relative, entry in _files(str(directory), ""):
            if relative not in files:
                return None
            seen += 1
            recorded = files[relative]
            if recorded is not None and recorded != _stamp(entry):
                return None
        if seen != len(files):
            return None
        tool = doc["tool"]
        syntax = format_named(tool).syntax if tool in TOOL_NAMES else syntax_of([])
        return Fingerprint(syntax, [(syntax.parse(str(v)), str(c)) for v, c in doc["migrations"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no usable manifest: read the files, as without the buildpack


def _files(directory: str, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every file under `directory` but dotfiles, by its path relative to the folder."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from _files(entry.path, prefix + entry.name + "/")
            else:
                yield prefix + entry.name, entry


def _stamp(entry: os.DirEntry[str]) -> list[int]:
    info = entry.stat()
    return [info.st_size, info.st_mtime_ns // _NS_PER_SECOND]
