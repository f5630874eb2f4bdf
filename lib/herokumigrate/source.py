"""The migration source: finds the files in the migrations folder and reads them.

Three formats may share one folder (lib/herokumigrate/formats/ describes each):
- golang-migrate: `{version}_{title}.up.sql` with an optional `{version}_{title}.down.sql`;
- dbmate and goose: any other `{version}_{title}.sql`, told apart by their annotations
  (`-- migrate:up` / `-- +goose Up`); a `.sql` file with neither is an error.

A file that looks like a migration but is malformed is an error naming the file, never a skip;
`load_migrations` reports every bad file of the folder at once. A version is ASCII digits, kept
as written (`0180`) for what is shown and compared as an integer (so `01_a` and `1_b` collide).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.formats.golang import NAME_RE as _GOLANG_RE
from herokumigrate.problems import FileProblems
from herokumigrate.sections import SourceFile, SqlSection, shown_name

if TYPE_CHECKING:
    from herokumigrate.formats import FormatName
    from herokumigrate.validation import ValidationReport

__all__ = [
    "FORMAT_DBMATE",
    "FORMAT_GOLANG",
    "FORMAT_GOOSE",
    "MAX_FILE_BYTES",
    "MAX_VERSION",
    "REVERTS_NOTHING",
    "Migration",
    "SourceFile",
    "SqlSection",
    "check_folder",
    "checksum_of",
    "list_migration_files",
    "load_migrations",
    "validate",
]

# ASCII digits only, as in golang.NAME_RE: `\d` and int() also take other scripts' digits.
_SINGLE_RE = re.compile(r"^([0-9]+)(?:_(.*))?\.sql$", re.ASCII | re.DOTALL)
# Bigger files are almost certainly data dumps in the wrong place; reading them would cost memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_VERSION = 2**63 - 1  # the version is stored as bigint, as golang-migrate stores it
_HASH_CHUNK = 1 << 22  # the checksum encodes this many characters at a time, not the whole file

# How a migration whose down is empty is shown wherever reverting it is (Migration.revert_label).
REVERTS_NOTHING = "reverts nothing: empty down"
FORMAT_GOLANG: FormatName = "golang-migrate"
FORMAT_DBMATE: FormatName = "dbmate"
FORMAT_GOOSE: FormatName = "goose"
_NAME_FIX = (
    "Name it {version}_{title}.up.sql / .down.sql (golang-migrate) or {version}_{title}.sql "
    "with '-- migrate:up' (dbmate) or '-- +goose Up' (goose); version = digits 0-9, "
    "e.g. `heroku-migrate new add_users`."
)


@dataclass(frozen=True, eq=False)  # one object per file: identity is equality, and cheap
class Migration:
    """One versioned migration: its up section and, when present, its down section.

    `down` is None when the migration has no down (irreversible: down/goto refuse it); a down
    without statements (an empty .down.sql or section) reverts by being forgotten only.
    """

    version: int
    name: str
    format: FormatName
    up: SqlSection
    checksum: str
    down_section: SqlSection | None = None  # dbmate, goose: parsed along with the up section
    down_file: SourceFile | None = None  # golang-migrate: read on first use (no-op runs never)
    version_text: str = ""  # the digits as written in the file name ("0180")

    @cached_property
    def down(self) -> SqlSection | None:
        """The down section, if the migration has one (BadInput if its file cannot be read)."""
        if self.down_file is None:
            return self.down_section
        return SqlSection(self.down_file, read_text(self.down_file))

    @property
    def applies_nothing(self) -> bool:
        """True when the up holds no statement (empty, comments, BEGIN/COMMIT): a no-op that
        is recorded as applied and runs nothing."""
        return self.up.is_empty

    @property
    def reverts_nothing(self) -> bool:
        """True when the down exists but holds no statement: reverting only forgets it."""
        down = self.down
        return down is not None and down.is_empty

    @property
    def down_kind(self) -> str:
        """`sql`, `empty` (reverting runs nothing, only forgets it) or `none` (irreversible)."""
        if self.down is None:
            return "none"
        return "empty" if self.down.is_empty else "sql"

    @property
    def revert_label(self) -> str:
        """The label, noting a down that reverts nothing, as `down`, `goto` and `plan` say it."""
        return f"{self.label} ({REVERTS_NOTHING})" if self.reverts_nothing else self.label

    @property
    def filename(self) -> str:
        """The file holding the up SQL, as users see it."""
        return self.up.path.shown

    @property
    def label(self) -> str:
        """`version_name` with the version as written, as printed in progress lines."""
        version = self.version_text or str(self.version)
        return shown_name(f"{version}_{self.name}" if self.name else version)


def checksum_of(sql: str) -> str:
    """The content checksum stored in the history table (sha256 of the up SQL)."""
    return _checksum(sql, 0, len(sql))


def _checksum(text: str, start: int, stop: int) -> str:
    """sha256 of text[start:stop] as UTF-8, encoded a chunk at a time (no copy of a big file)."""
    import hashlib  # here: a release answered from the build's manifest needs no checksums

    if stop - start <= _HASH_CHUNK:  # the common small file: one call
        return hashlib.sha256(text[start:stop].encode("utf-8")).hexdigest()
    digest = hashlib.sha256()
    for at in range(start, stop, _HASH_CHUNK):
        digest.update(text[at : min(stop, at + _HASH_CHUNK)].encode("utf-8"))
    return digest.hexdigest()


def read_text(path: SourceFile) -> str:
    """A migration file's text, or a clear error for unreadable, huge, binary or non-UTF-8 files."""
    try:
        # Raw os calls sized by fstat: this runs for every file of every release, and a
        # buffered read with a large size hint allocates that much each time.
        fd = os.open(path.full, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size + 1) if size <= MAX_FILE_BYTES else b""
            while len(data) > size and len(data) <= MAX_FILE_BYTES:  # it grew meanwhile
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
            size = max(size, len(data))
            if size > MAX_FILE_BYTES:
                raise BadInput(
                    f"{path.shown}: is {size} bytes, over the limit of {MAX_FILE_BYTES} (64 MiB)",
                    fix="Split it into smaller migrations, or load bulk data outside migrations.",
                )
        finally:
            os.close(fd)
    except IsADirectoryError:
        raise BadInput(
            f"{path.shown}: is a folder, not a file",
            fix="Move it out of the migrations folder.",
        ) from None
    except PermissionError:
        raise BadInput(
            f"{path.shown}: cannot be read (permission denied)",
            fix=f"Make it readable: chmod a+r {path.shown}",
        ) from None
    except OSError as exc:
        raise BadInput(
            f"{path.shown}: cannot be read ({exc.strerror})",
            fix="Check that the file exists and is a regular file.",
        ) from None
    if b"\x00" in data:
        raise BadInput(
            f"{path.shown}: is binary (holds NUL bytes), not SQL text",
            fix="Replace it with a UTF-8 SQL file or move it out of the migrations folder.",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInput(
            f"{path.shown}: line {line}: is not valid UTF-8",
            fix=f"Re-save {path.shown} as UTF-8 (e.g. iconv -f latin1 -t utf-8).",
        ) from None
    del data  # the bytes go before the text is used: one copy of a big file at a time
    return text[1:] if text.startswith("\ufeff") else text


def _version(path: SourceFile, digits: str) -> int:
    version = int(digits)
    if version > MAX_VERSION:
        raise BadInput(
            f"{path.shown}: version {digits} is too large",
            fix="Use a version below 2^63, e.g. a timestamp like 20260101120000.",
        )
    return version


def _bad_name(name: str) -> BadInput:
    """The error for a `.sql` file whose name is no migration's."""
    lead = name.split("_", 1)[0].removesuffix(".sql")
    if any(c.isdigit() and not c.isascii() for c in lead):
        return BadInput(
            f"{shown_name(name)}: the version {lead!r} holds digits other than 0-9 "
            f"({', '.join(f'U+{ord(c):04X}' for c in lead if not c.isascii())})",
            fix="Write the version with the ASCII digits 0-9 and rename the file.",
        )
    return BadInput(f"{shown_name(name)}: is not a migration file name", fix=_NAME_FIX)


def list_migration_files(
    directory: Path, app_root: Path | None = None, problems: FileProblems | None = None
) -> list[SourceFile]:
    """The regular `.sql` files of the migrations folder, symlinks checked, dotfiles skipped.

    A symlink must stay inside `app_root` (default: the folder itself): the slug holds only the
    app. Bad entries go to `problems` (default: raised, all of them, at the end).
    """
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        raise BadInput(
            f"{directory}: migrations folder not found",
            fix="Create it (mkdir -p db/migrations) or set MIGRATE_PATH / `path` in migrate.toml.",
        ) from None
    except NotADirectoryError:
        raise BadInput(
            f"{directory}: is not a folder",
            fix="Point MIGRATE_PATH / `path` in migrate.toml at the migrations folder.",
        ) from None
    except PermissionError:
        raise BadInput(
            f"{directory}: cannot be listed (permission denied)",
            fix=f"Make it readable: chmod a+rx {directory}",
        ) from None
    found = FileProblems() if problems is None else problems
    root = (app_root or directory).resolve()
    files = []
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue  # editor droppings
        if not name.isprintable() and ".sql" in name:
            found.add(
                name,
                BadInput(
                    f"{shown_name(name)}: the file name holds a line break, a control or an "
                    "unprintable character",
                    fix="Rename it to {version}_{title}.sql with printable characters only.",
                ),
            )
            continue
        if not name.endswith(".sql"):
            continue  # other files (a README) are not migrations
        if entry.is_symlink():
            target = Path(entry.path).resolve()
            if not target.is_relative_to(root):
                found.add(
                    name,
                    BadInput(
                        f"{name}: is a symlink leading outside the app ({target})",
                        fix="Replace the link with the file itself; the slug holds only the app.",
                    ),
                )
                continue
            if not target.exists():
                found.add(
                    name,
                    BadInput(
                        f"{name}: is a broken symlink",
                        fix="Replace the link with the file itself.",
                    ),
                )
                continue
        try:
            is_dir = entry.is_dir()  # from the directory listing: no extra system call
        except OSError:
            is_dir = False
        if is_dir:
            continue
        files.append(SourceFile(entry.path, name))
    if problems is None:
        found.raise_if_any()
    return files


def load_migrations(directory: Path, app_root: Path | None = None) -> list[Migration]:
    """Every migration in `directory`, sorted by version; one BadInput listing every bad file."""
    problems = FileProblems()
    migrations = _load(directory, app_root, problems)
    problems.raise_if_any()
    return migrations


def check_folder(
    directory: Path, app_root: Path | None = None
) -> tuple[list[Migration], ValidationReport]:
    """`validate`: load every file and split every section, reporting every problem of the
    folder (bad names, files and SQL) in one BadInput; else the migrations and the report."""
    from herokumigrate.validation import check_migrations

    problems = FileProblems()
    migrations = _load(directory, app_root, problems)
    report = check_migrations(migrations, problems)
    problems.raise_if_any()
    return migrations, report


def validate(migrations: list[Migration]) -> dict[str, int]:
    """Split every section (one BadInput listing every bad SQL); counts for the report.
    `validation.check_migrations` also returns the notes and warnings to print."""
    from herokumigrate.validation import check_migrations

    problems = FileProblems()
    report = check_migrations(migrations, problems)
    problems.raise_if_any()
    return report.counts()


class _Folder:
    """What the file names of a folder claim, while they are read."""

    def __init__(self, problems: FileProblems) -> None:
        self.problems = problems
        self.owner: dict[int, SourceFile] = {}
        self.ups: dict[int, tuple[SourceFile, str, str]] = {}  # version -> file, title, digits
        self.downs: dict[int, tuple[SourceFile, str]] = {}
        self.singles: dict[int, tuple[SourceFile, str, str]] = {}

    def claim(self, version: int, path: SourceFile) -> bool:
        other = self.owner.get(version)
        if other is not None:
            self.problems.add(
                path.name,
                BadInput(
                    f"{path.shown}: version {version} is also used by {other.shown}",
                    fix="Give each migration its own version: rename one of the two files.",
                ),
            )
            return False
        self.owner[version] = path
        return True

    def sort(self, path: SourceFile) -> None:
        """File `path` under the migration its name says it belongs to."""
        name = path.name
        golang = _GOLANG_RE.match(name)
        single = None if golang else _SINGLE_RE.match(name)
        match = golang or single
        if match is None or (single and name.endswith((".up.sql", ".down.sql"))):
            self.problems.add(name, _bad_name(name))
            return
        digits, title = match.group(1, 2)
        try:
            version = _version(path, digits)
        except BadInput as exc:
            self.problems.add(name, exc)
            return
        title = title or ""
        if golang and golang.group(3) == "down":
            if version in self.downs:
                self.problems.add(
                    name,
                    BadInput(
                        f"{path.shown}: version {version} has two down files "
                        f"({self.downs[version][0].shown} and {path.shown})",
                        fix="Keep one .down.sql per version.",
                    ),
                )
            else:
                self.downs[version] = (path, title)
        elif self.claim(version, path):
            (self.ups if golang else self.singles)[version] = (path, title, digits)

    def check_downs(self) -> None:
        """Every down file pairs with an up file of the same version and title."""
        for version, (path, title) in self.downs.items():
            up = self.ups.get(version)
            if up is None:
                other = self.owner.get(version)
                fix = (
                    f"It pairs with no .up.sql; {other.shown} holds version {version} in one "
                    "file: put the down SQL in its '-- migrate:down' (dbmate) or "
                    "'-- +goose Down' (goose) section."
                    if other
                    else f"Add {shown_name(f'{version}_{title}.up.sql')}, or delete {path.shown}."
                )
                self.problems.add(
                    path.name, BadInput(f"{path.shown}: down file without an up file", fix=fix)
                )
            elif up[1] != title:
                self.problems.add(
                    path.name,
                    BadInput(
                        f"{path.shown}: title differs from its up file {up[0].shown}",
                        fix="Give the up and down files the same {version}_{title} prefix.",
                    ),
                )


def _load(directory: Path, app_root: Path | None, problems: FileProblems) -> list[Migration]:
    """The migrations of every good file; every bad one is added to `problems`."""
    folder = _Folder(problems)
    for path in list_migration_files(directory, app_root, problems):
        folder.sort(path)
    folder.check_downs()
    migrations: list[Migration] = []
    for version, (path, title, digits) in folder.ups.items():
        try:
            text = read_text(path)
        except BadInput as exc:
            problems.add(path.name, exc)
            continue
        down = folder.downs.get(version)
        migrations.append(
            Migration(
                version,
                title,
                FORMAT_GOLANG,
                SqlSection(path, text),
                _checksum(text, 0, len(text)),
                down_file=down[0] if down and down[1] == title else None,
                version_text=digits,
            )
        )
    for version, (path, title, digits) in folder.singles.items():
        try:
            fmt, up, down_section = _parse_annotated(path, read_text(path))
        except BadInput as exc:
            problems.add(path.name, exc)
            continue
        checksum = _checksum(up.text, up.start, up.stop)
        migrations.append(
            Migration(version, title, fmt, up, checksum, down_section, version_text=digits)
        )
    migrations.sort(key=lambda m: m.version)
    return migrations


def _parse_annotated(
    path: SourceFile, text: str
) -> tuple[FormatName, SqlSection, SqlSection | None]:
    """A one-file migration, in the format whose annotations it holds."""
    from herokumigrate.formats import annotated_formats

    found = []
    for fmt in annotated_formats():
        line = fmt.first_annotation(text)
        if line is not None:
            found.append((fmt, line))
    if not found:
        raise BadInput(
            f"{path.shown}: has neither a '-- migrate:up' (dbmate) nor a '-- +goose Up' "
            "(goose) annotation",
            fix="Start the file with '-- migrate:up' or '-- +goose Up', or rename it to "
            "{version}_{title}.up.sql (golang-migrate format).",
        )
    if len(found) > 1:
        where = " and ".join(f"{fmt.name} (line {line})" for fmt, line in found)
        raise BadInput(
            f"{path.shown}: holds the annotations of two formats: {where}",
            fix="Keep one format per file: remove the other format's annotation lines.",
        )
    fmt = found[0][0]
    up, down = fmt.parse(path, text)
    return fmt.name, up, down


# ----- build-time manifest -----------------------------------------------------------------
# The build validates every file and records, per file, its size and mtime, and per migration,
# its version and checksum. A slug never changes after the build, so a release whose folder
# still matches the manifest can skip reading every file just to learn that nothing is pending.
# Heroku packs the slug with tar, which keeps whole seconds of an mtime only: the manifest holds
# and compares whole seconds (plus the size), what a tar round trip keeps. Only a buildpack that
# runs after ours can still edit a file; size and second together catch that short of a
# same-size edit within the same second.
MANIFEST_ENV = "HEROKU_MIGRATE_MANIFEST"
_MANIFEST_FORMAT = 2
_NS_PER_SECOND = 1_000_000_000


def write_manifest(
    target: Path, directory: Path, path_setting: str, migrations: list[Migration]
) -> None:
    """Record the validated folder for `read_manifest` (called by `validate --manifest`)."""
    import json

    files = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and entry.name.endswith(".sql"):
                info = entry.stat()
                files[entry.name] = [info.st_size, info.st_mtime_ns // _NS_PER_SECOND]
    doc = {
        "format": _MANIFEST_FORMAT,
        "path": path_setting,
        "files": files,
        "migrations": [[m.version, m.checksum] for m in migrations],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc, separators=(",", ":")))


def read_manifest(
    manifest: str, directory: Path, path_setting: str
) -> list[tuple[int, str]] | None:
    """(version, checksum) of every migration, from the build's manifest, when the folder is
    exactly as the build left it; None otherwise (the caller then reads the files)."""
    import json

    try:
        with open(manifest, "rb") as handle:
            doc = json.loads(handle.read())
        if doc.get("format") != _MANIFEST_FORMAT or doc.get("path") != path_setting:
            return None
        files: dict[str, list[int]] = doc["files"]
        seen = 0
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(".sql"):
                    continue
                recorded = files.get(entry.name)
                if recorded is None:
                    return None
                seen += 1
                if entry.name.endswith(".down.sql"):
                    continue  # a release with nothing pending never reads a down file
                info = entry.stat()
                if recorded != [info.st_size, info.st_mtime_ns // _NS_PER_SECOND]:
                    return None
        if seen != len(files):
            return None
        return [(int(v), str(c)) for v, c in doc["migrations"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no usable manifest: read the files, as without the buildpack
