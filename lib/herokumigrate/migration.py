"""A migration: its version, its up and down sections and its checksum, and reading its files.

Formats build migrations (formats/); everything after the folder is read works on these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from herokumigrate.errors import BadInput
from herokumigrate.sections import SourceFile, SqlSection, shown_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version

# Bigger files are almost certainly data dumps in the wrong place; reading them would cost memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
_HASH_CHUNK = 1 << 22  # the checksum encodes this many characters at a time, not the whole file

# How a migration whose down is empty is shown wherever reverting it is (Migration.revert_label).
REVERTS_NOTHING = "reverts nothing: empty down"

DownKind = Literal["sql", "empty", "none"]


@dataclass(frozen=True, eq=False)  # one object per file: identity is equality, and cheap
class Migration:
    """One versioned migration: its up section and, when present, its down section.

    `down` is None when the migration has no down (irreversible: down/goto refuse it); a down
    without statements (an empty .down.sql or section) reverts by being forgotten only.
    """

    version: Version
    name: str
    format: ToolName
    up: SqlSection
    checksum: str
    down_section: SqlSection | None = None  # dbmate, goose: parsed along with the up section
    down_file: SourceFile | None = None  # golang-migrate: read on first use (no-op runs never)
    # How the format makes a section of its down file's text (sqlx's `-- no-transaction`,
    # Diesel's metadata.toml); None: plain SQL, in a transaction.
    down_reader: Callable[[SourceFile, str], SqlSection] | None = None
    # Run again whenever its checksum changes, instead of refused as an edited applied file
    # (Flyway's `R__` files); its version sorts after every versioned migration.
    repeatable: bool = False
    # Stands for every versioned migration up to its own version, and runs instead of them on
    # an empty history only (Flyway's `B` files); ignored once anything is applied.
    baseline: bool = False

    @cached_property
    def down(self) -> SqlSection | None:
        """The down section, if the migration has one (BadInput if its file cannot be read)."""
        if self.down_file is None:
            return self.down_section
        text = read_text(self.down_file)
        if self.down_reader is not None:
            return self.down_reader(self.down_file, text)
        return SqlSection(self.down_file, text)

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
    def down_kind(self) -> DownKind:
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
        version = self.version.written
        return shown_name(f"{version}_{self.name}" if self.name else version)


def checksum_of(sql: str) -> str:
    """The content checksum stored in the history table (sha256 of the up SQL)."""
    return sha256_of(sql, 0, len(sql))


def sha256_of(text: str, start: int, stop: int) -> str:
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
