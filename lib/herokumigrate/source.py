"""The migration source: finds the files in the migrations folder and reads them.

Two formats may share one folder:
- golang-migrate: `{version}_{title}.up.sql` with an optional `{version}_{title}.down.sql`;
- dbmate: any other `{version}_{title}.sql`, holding `-- migrate:up` and optionally
  `-- migrate:down` sections; `transaction:false` after a marker is accepted and noted.

A file that looks like a migration but is malformed is an error naming the file, never a skip.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from herokumigrate.errors import BadInput

if TYPE_CHECKING:
    from herokumigrate.sqlsplit import Statement

_GOLANG_RE = re.compile(r"^(\d+)_([^/]*)\.(up|down)\.sql$")
_DBMATE_RE = re.compile(r"^(\d+)(?:_([^/]*))?\.sql$")
_DBMATE_MARKER_RE = re.compile(r"^--\s*migrate:(\w+)(.*)$", re.MULTILINE)
_DBMATE_OPTION_RE = re.compile(r"^(\w+):(\S+)$")
# Bigger files are almost certainly data dumps in the wrong place; reading them would cost memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_VERSION = 2**63 - 1  # the version is stored as bigint, as golang-migrate stores it

FORMAT_GOLANG = "golang-migrate"
FORMAT_DBMATE = "dbmate"


class SourceFile(NamedTuple):
    """A migration file: its path and name. Lighter than pathlib.Path, whose construction cost
    ~6 us per file, a visible share of a no-op release with thousands of files."""

    full: str
    name: str

    def __fspath__(self) -> str:
        return self.full


@dataclass(frozen=True)
class SqlSection:
    """One direction (up or down) of a migration: its SQL and where it sits in its file."""

    path: SourceFile
    sql: str
    first_line: int = 1  # line of the file where `sql` starts
    transaction: bool = True  # False when dbmate's `transaction:false` asks for autocommit

    @cached_property
    def statements(self) -> list[Statement]:
        """The section split into statements, with line numbers relative to the file."""
        from herokumigrate.sqlsplit import SplitError, Statement, split_statements

        try:
            found = split_statements(self.sql)
        except SplitError as exc:
            line = exc.line + self.first_line - 1
            raise BadInput(
                f"{self.path.name}: line {line}: {exc.message}",
                fix=f"Fix the SQL in {self.path.name} and push again.",
            ) from None
        if self.first_line == 1:
            return found
        shift = self.first_line - 1
        return [Statement(s.text, s.line + shift, s.kind) for s in found]

    def file_line(self, statement: Statement, position: int | None = None) -> int:
        """The line of the file for a statement, or for a 1-based character position in it."""
        if position is None or position < 1:
            return statement.line
        return statement.line + statement.text.count("\n", 0, position - 1)


@dataclass(frozen=True, eq=False)  # one object per file: identity is equality, and cheap
class Migration:
    """One versioned migration: its up section and, when present, its down section."""

    version: int
    name: str
    format: str
    up: SqlSection
    checksum: str
    down_section: SqlSection | None = None  # dbmate: parsed along with the up section
    down_file: SourceFile | None = (
        None  # golang-migrate: read on first use (a no-op run never does)
    )

    @cached_property
    def down(self) -> SqlSection | None:
        """The down section, if the migration has one (BadInput if its file is empty)."""
        if self.down_file is None:
            return self.down_section
        section = SqlSection(self.down_file, _read_text(self.down_file))
        _require_sql(section, "down migration")
        return section

    @property
    def filename(self) -> str:
        """The file holding the up SQL, as users see it."""
        return self.up.path.name

    @property
    def label(self) -> str:
        """`version_name`, as printed in progress lines."""
        return f"{self.version}_{self.name}" if self.name else str(self.version)


def checksum_of(sql: str) -> str:
    """The content checksum stored in the history table (sha256 of the up SQL)."""
    import hashlib  # here: a release answered from the build's manifest needs no checksums

    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def _read_text(path: SourceFile) -> str:
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
                    f"{path.name}: is {size} bytes, over the limit of {MAX_FILE_BYTES} (64 MiB)",
                    fix="Split it into smaller migrations, or load bulk data outside migrations.",
                )
        finally:
            os.close(fd)
    except IsADirectoryError:
        raise BadInput(
            f"{path.name}: is a folder, not a file",
            fix="Move it out of the migrations folder.",
        ) from None
    except PermissionError:
        raise BadInput(
            f"{path.name}: cannot be read (permission denied)",
            fix=f"Make it readable: chmod a+r {path.name}",
        ) from None
    except OSError as exc:
        raise BadInput(
            f"{path.name}: cannot be read ({exc.strerror})",
            fix="Check that the file exists and is a regular file.",
        ) from None
    if b"\x00" in data:
        raise BadInput(
            f"{path.name}: is binary (holds NUL bytes), not SQL text",
            fix="Replace it with a UTF-8 SQL file or move it out of the migrations folder.",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInput(
            f"{path.name}: line {line}: is not valid UTF-8",
            fix=f"Re-save {path.name} as UTF-8 (e.g. iconv -f latin1 -t utf-8).",
        ) from None
    return text.removeprefix("\ufeff")


def _require_sql(section: SqlSection, what: str) -> None:
    if not section.sql.strip():
        raise BadInput(
            f"{section.path.name}: {what} is empty",
            fix=f"Write the SQL of the {what}, or delete the file.",
        )


def _parse_dbmate(path: SourceFile, text: str) -> tuple[SqlSection, SqlSection | None]:
    """Split a dbmate file into its up and down sections."""
    markers: dict[str, tuple[int, int, bool]] = {}
    for match in _DBMATE_MARKER_RE.finditer(text):
        direction = match.group(1).lower()
        line = text.count("\n", 0, match.start()) + 1
        if direction not in ("up", "down"):
            raise BadInput(
                f"{path.name}: line {line}: unknown marker '-- migrate:{match.group(1)}'",
                fix="Use '-- migrate:up' and '-- migrate:down' only.",
            )
        if direction in markers:
            raise BadInput(
                f"{path.name}: line {line}: second '-- migrate:{direction}' marker",
                fix=f"Keep one '-- migrate:{direction}' section per file.",
            )
        transaction = True
        for option in match.group(2).split():
            opt = _DBMATE_OPTION_RE.match(option)
            if not opt or opt.group(1) != "transaction" or opt.group(2) not in ("true", "false"):
                raise BadInput(
                    f"{path.name}: line {line}: unknown option {option!r} after the marker",
                    fix="The only option is transaction:false.",
                )
            transaction = opt.group(2) == "true"
        markers[direction] = (match.start(), match.end(), transaction)
    if "up" not in markers:
        raise BadInput(
            f"{path.name}: has no '-- migrate:up' marker",
            fix="Start the file with a '-- migrate:up' line (dbmate format), or rename it "
            "to {version}_{title}.up.sql (golang-migrate format).",
        )
    up_start, up_end, up_tx = markers["up"]
    if "down" in markers and markers["down"][0] < up_start:
        raise BadInput(
            f"{path.name}: '-- migrate:down' comes before '-- migrate:up'",
            fix="Put the up section first.",
        )
    # dbmate allows blank lines and `--` comments above the up marker; so do we.
    if any(
        line.strip() and not line.lstrip().startswith("--") for line in text[:up_start].splitlines()
    ):
        raise BadInput(
            f"{path.name}: has SQL before the '-- migrate:up' marker",
            fix="Move it below '-- migrate:up'.",
        )
    down: SqlSection | None = None
    if "down" in markers:
        down_start, down_end, down_tx = markers["down"]
        up_sql = text[up_end:down_start]
        down_sql = text[down_end:]
        down_line = text.count("\n", 0, down_end) + 1
        down = SqlSection(path, down_sql, down_line, down_tx)
    else:
        up_sql = text[up_end:]
    up = SqlSection(path, up_sql, text.count("\n", 0, up_end) + 1, up_tx)
    _require_sql(up, "'-- migrate:up' section")
    if down is not None and not down.sql.strip():
        down = None  # dbmate writes an empty down section for irreversible migrations
    return up, down


def _version(path: SourceFile, digits: str) -> int:
    version = int(digits)
    if version > MAX_VERSION:
        raise BadInput(
            f"{path.name}: version {digits} is too large",
            fix="Use a version below 2^63, e.g. a timestamp like 20260101120000.",
        )
    return version


def list_migration_files(directory: Path, app_root: Path | None = None) -> list[SourceFile]:
    """The regular files of the migrations folder, symlinks checked, dotfiles skipped.

    A symlink must stay inside `app_root` (default: the folder itself): the slug holds only the app.
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
    root = (app_root or directory).resolve()
    files = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".sql"):
            continue  # dotfiles are editor droppings; other files (a README) are not migrations
        if entry.is_symlink():
            target = Path(entry.path).resolve()
            if not target.is_relative_to(root):
                raise BadInput(
                    f"{entry.name}: is a symlink leading outside the app ({target})",
                    fix="Replace the link with the file itself; the slug holds only the app.",
                )
            if not target.exists():
                raise BadInput(
                    f"{entry.name}: is a broken symlink",
                    fix="Replace the link with the file itself.",
                )
        try:
            is_dir = entry.is_dir()  # from the directory listing: no extra system call
        except OSError:
            is_dir = False
        if is_dir:
            continue
        files.append(SourceFile(entry.path, entry.name))
    return files


def load_migrations(directory: Path, app_root: Path | None = None) -> list[Migration]:
    """Every migration in `directory`, sorted by version; raises BadInput on any bad file."""
    ups: dict[int, tuple[SourceFile, str, str]] = {}
    downs: dict[int, tuple[SourceFile, str]] = {}
    dbmate: dict[int, tuple[SourceFile, str]] = {}
    owner: dict[int, SourceFile] = {}

    def claim(version: int, path: SourceFile) -> None:
        other = owner.get(version)
        if other is not None:
            raise BadInput(
                f"{path.name}: version {version} is also used by {other.name}",
                fix="Give each migration its own version: rename one of the two files.",
            )
        owner[version] = path

    for path in list_migration_files(directory, app_root):
        name = path.name
        golang = _GOLANG_RE.match(name)
        if golang:
            version = _version(path, golang.group(1))
            if golang.group(3) == "up":
                claim(version, path)
                ups[version] = (path, golang.group(2), name)
            else:
                if version in downs:
                    raise BadInput(
                        f"{name}: version {version} has two down files "
                        f"({downs[version][0].name} and {name})",
                        fix="Keep one .down.sql per version.",
                    )
                downs[version] = (path, golang.group(2))
            continue
        dbm = _DBMATE_RE.match(name)
        if dbm and not name.endswith((".up.sql", ".down.sql")):
            version = _version(path, dbm.group(1))
            claim(version, path)
            dbmate[version] = (path, dbm.group(2) or "")
            continue
        raise BadInput(
            f"{name}: is not a migration file name",
            fix="Name it {version}_{title}.up.sql / .down.sql (golang-migrate) or "
            "{version}_{title}.sql with '-- migrate:up' (dbmate); version = digits, "
            "e.g. `heroku-migrate new add_users`.",
        )

    for version, (path, title) in downs.items():
        if version not in ups:
            other = owner.get(version)
            fix = (
                f"It pairs with no .up.sql; {other.name} holds version {version} in dbmate "
                "format: put the down SQL in its '-- migrate:down' section."
                if other
                else f"Add {version}_{title}.up.sql, or delete {path.name}."
            )
            raise BadInput(f"{path.name}: down file without an up file", fix=fix)
        if ups[version][1] != title:
            raise BadInput(
                f"{path.name}: title differs from its up file {ups[version][0].name}",
                fix="Give the up and down files the same {version}_{title} prefix.",
            )

    migrations: list[Migration] = []
    for version, (path, title, _name) in ups.items():
        up = SqlSection(path, _read_text(path))
        _require_sql(up, "up migration")
        down_file = downs[version][0] if version in downs else None
        migrations.append(
            Migration(version, title, FORMAT_GOLANG, up, checksum_of(up.sql), down_file=down_file)
        )
    for version, (path, title) in dbmate.items():
        up, down = _parse_dbmate(path, _read_text(path))
        migrations.append(
            Migration(version, title, FORMAT_DBMATE, up, checksum_of(up.sql), down_section=down)
        )
    migrations.sort(key=lambda m: m.version)
    return migrations


def validate(migrations: list[Migration]) -> dict[str, int]:
    """Split every section (raising BadInput on bad SQL); counts for the report."""
    counts = {"migrations": len(migrations), "statements": 0, "no_transaction": 0, "downs": 0}
    for migration in migrations:
        for section in (migration.up, migration.down):
            if section is None:
                continue
            statements = section.statements
            if not any(s.kind != "transaction_control" for s in statements):
                raise BadInput(
                    f"{section.path.name}: holds no SQL statement (only comments or BEGIN/COMMIT)",
                    fix="Write the migration's SQL, or delete the file.",
                )
            if section is migration.up:
                counts["statements"] += len(statements)
                counts["no_transaction"] += sum(s.kind == "no_transaction" for s in statements)
            else:
                counts["downs"] += 1
    return counts


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
