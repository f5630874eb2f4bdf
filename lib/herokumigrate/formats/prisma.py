"""Prisma Migrate (6.x, 7.x): one folder per migration, `prisma/migrations/<name>/migration.sql`,
read as `prisma migrate deploy` reads them (prisma-engines' migration-connector):

- every subfolder of the folder is a migration, whatever its name (a timestamp is a convention,
  not a rule), and must hold `migration.sql`; files beside them are not migrations, and
  `migration_lock.toml` must name the provider `postgresql` (another is Prisma's P3019);
- the migration's name (its identity in `_prisma_migrations.migration_name`) is the folder's
  name; migrations run in the order JavaScript's `localeCompare` gives their names: ICU's root
  collation, not byte order (`_` sorts before the digits, case is a tie-break only);
- the checksum is the lowercase hex SHA-256 of the file as read: a byte-order mark and CRLF line
  endings kept (Prisma also accepts the CRLF<->LF variants of an applied file);
- the file is sent as one simple query: PostgreSQL runs it in one implicit transaction, so a
  statement that cannot run in a transaction works only as the file's only statement.

The folder is `prisma/migrations` (next to `schema.prisma`), or the one `migrations.path` names
in `prisma.config.ts`/`.js`/`.mjs`/`.cjs`, when it is a plain string literal.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from herokumigrate.errors import BadInput
from herokumigrate.formats import Claim, FolderCandidate, NewFile
from herokumigrate.migration import Migration
from herokumigrate.sections import SourceFile, SqlSection
from herokumigrate.tools import ToolName
from herokumigrate.versions import Version

if TYPE_CHECKING:
    from herokumigrate.formats import FolderEntry, FolderReader
    from herokumigrate.native import NativeTable

SCRIPT = "migration.sql"
LOCK_FILE = "migration_lock.toml"
CONFIG_FILES = (
    "prisma.config.ts",
    "prisma.config.mts",
    "prisma.config.js",
    "prisma.config.mjs",
    "prisma.config.cjs",
    "prisma.config.cts",
)
DEFAULT_FOLDER = "prisma/migrations"
# _prisma_migrations.migration_name is VARCHAR(255).
MAX_NAME_CHARS = 255
# `migrations: { ..., path: "..." }` with a plain string literal (no template, no expression).
_CONFIG_PATH = re.compile(
    r"\bmigrations\s*:\s*\{[^{}]*?\bpath\s*:\s*(?:'([^'\\\n]*)'|\"([^\"\\\n]*)\")", re.DOTALL
)
# `schema: "prisma/schema.prisma"` at the top of the config object.
_CONFIG_SCHEMA = re.compile(r"(?<![\w.])schema\s*:\s*(?:'([^'\\\n]*)'|\"([^\"\\\n]*)\")")
_PROVIDER = re.compile(r"^\s*provider\s*=\s*\"([^\"]*)\"", re.MULTILINE)

# ICU root collation (CLDR, alternate = non-ignorable) of the printable ASCII characters that
# are neither letters nor digits: spaces first, then punctuation and symbols in this order,
# then the digits, then the letters (read from PostgreSQL's `und-x-icu` collation).
_SYMBOLS = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"
_SYMBOL_RANK = {c: i for i, c in enumerate(_SYMBOLS)}
_SPACE, _SYMBOL, _OTHER_SYMBOL, _DIGIT, _LETTER, _OTHER = range(6)


def collation_key(
    name: str,
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...], tuple[int, ...]]:
    """A key that orders names as JavaScript's `localeCompare` does (ICU's root collation),
    for the names migrations have: the characters compared first without case or accents
    (spaces < punctuation < symbols < digits < letters), then their accents, then their case
    (lower before upper). ICU itself is not available to the runner; other scripts' letters are
    ordered by code point, which ICU does within a script too."""
    primary: list[tuple[int, int]] = []
    secondary: list[int] = []
    tertiary: list[int] = []
    for char in unicodedata.normalize("NFD", name):
        if unicodedata.combining(char):
            if secondary:
                secondary[-1] = secondary[-1] * 1024 + ord(char) % 1024
            continue
        primary.append(_primary(char))
        secondary.append(0)
        tertiary.append(1 if char != char.lower() else 0)
    return tuple(primary), tuple(secondary), tuple(tertiary)


def _primary(char: str) -> tuple[int, int]:
    if char in _SYMBOL_RANK:
        return (_SPACE if char == " " else _SYMBOL, _SYMBOL_RANK[char])
    if char.isspace():
        return (_SPACE, 0)
    if char.isdecimal():
        return (_DIGIT, unicodedata.decimal(char))
    if char.isalpha():
        return (_LETTER, ord(char.lower()))
    category = unicodedata.category(char)
    if category[0] in "PS":
        return (_OTHER_SYMBOL, ord(char))
    return (_OTHER, ord(char))


class PrismaVersions:
    """A migration's folder name: compared as `localeCompare` orders it, then as written (two
    names ICU finds equal are still two migrations)."""

    name = "name"
    column_type: Literal["bigint", "text"] = "text"

    def parse(self, written: str) -> Version:
        """`20240101120000_init` -> Version((key, "20240101120000_init"), written, written)."""
        if not written:
            raise ValueError("a migration's name is empty")
        if len(written) > MAX_NAME_CHARS:
            raise ValueError(
                f"the name is {len(written)} characters long; _prisma_migrations.migration_name "
                f"keeps at most {MAX_NAME_CHARS}"
            )
        return Version((collation_key(written), written), written, written)


class PrismaFormat:
    """The Prisma Migrate format (see the module's docstring)."""

    name: ToolName = "prisma"
    syntax = PrismaVersions()
    nested = False  # only the folder's own entries (formats/__init__.py)
    naming = "a folder {timestamp}_{name}/ holding migration.sql (Prisma Migrate)"

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | None:
        """Every subfolder (it must hold `migration.sql`); `migration_lock.toml` is checked
        (BadInput for a provider other than PostgreSQL); other files are not migrations."""
        if not entry.is_folder:
            if entry.name == LOCK_FILE:
                _check_provider(entry.path, folder)
            return None
        if not os.path.isfile(os.path.join(entry.path.full, SCRIPT)):
            raise BadInput(
                f"{entry.path.shown}/: holds no {SCRIPT}; Prisma reads every folder here as a "
                f"migration and fails on this one",
                fix=f"Add its {SCRIPT}, or move the folder out of the migrations folder.",
            )
        try:
            version = self.syntax.parse(entry.name)
        except ValueError as exc:
            raise BadInput(f"{entry.path.shown}/: {exc}", fix="Rename the folder.") from None
        return Claim(entry, version, "", because=f"a folder holding {SCRIPT} (Prisma)")

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        """Its `migration.sql`, in one transaction (a lone statement that cannot run in one
        runs outside it, as Prisma's one query does)."""
        entry = parts[0].entry
        path = SourceFile(os.path.join(entry.path.full, SCRIPT), f"{entry.name}/{SCRIPT}")
        try:
            text = folder.text(path)
            checksum = checksum_of_file(path)
        except BadInput as exc:
            folder.problem(path, exc)
            return None
        section = SqlSection(path, text, one_query=True)
        return Migration(version, "", self.name, section, checksum)

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        """The folder `migrations.path` names in `prisma.config.*`; else `migrations` beside
        the schema that file or package.json's `prisma.schema` names; else `prisma/migrations`
        (and `prisma/schema/migrations`, beside a multi-file schema)."""
        sign = _app_sign(app_dir)
        for config in CONFIG_FILES:
            named = _configured_path(app_dir / config, _CONFIG_PATH)
            if named:
                return [FolderCandidate(named, f"named by {config} (migrations.path)", sign)]
        for config in CONFIG_FILES:
            schema = _configured_path(app_dir / config, _CONFIG_SCHEMA)
            if schema:
                because = f"beside the schema {config} names"
                return [FolderCandidate(_beside(app_dir, schema), because, sign)]
        schema = _package_schema(app_dir)
        if schema:
            because = "beside the schema package.json's prisma.schema names"
            return [FolderCandidate(_beside(app_dir, schema), because, sign)]
        return [
            FolderCandidate(DEFAULT_FOLDER, "Prisma Migrate's folder", sign),
            FolderCandidate("prisma/schema/migrations", "Prisma's multi-file schema folder", sign),
        ]

    def native_table(self) -> type[NativeTable]:
        """Prisma's `_prisma_migrations`."""
        from herokumigrate.native.prisma import PrismaTable

        return PrismaTable

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """A folder as `prisma migrate dev --create-only` writes it."""
        return [NewFile(f"{version}_{slug}/{SCRIPT}", f"-- {title}\n")]


def is_prisma_folder(folder: Path) -> bool:
    """Whether `folder` holds Prisma's migrations: its lock file, or a subfolder holding
    `migration.sql` (for the URL's Prisma parameters, read before the folder is)."""
    if (folder / LOCK_FILE).is_file():
        return True
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return any(e.is_dir() and os.path.isfile(os.path.join(e.path, SCRIPT)) for e in entries)


def checksum_of_bytes(data: bytes) -> str:
    """Prisma's checksum: the lowercase hex SHA-256 of the file's bytes."""
    return hashlib.sha256(data).hexdigest()


def checksum_of_file(path: SourceFile) -> str:
    """Prisma's checksum of a file (BadInput when it cannot be read)."""
    try:
        with open(path.full, "rb") as handle:
            return checksum_of_bytes(handle.read())
    except OSError as exc:
        raise BadInput(
            f"{path.shown}: cannot be read ({exc.strerror})", fix=f"Make {path.shown} readable."
        ) from None


def line_ending_variants(checksum_source: bytes) -> set[str]:
    """The checksums Prisma accepts for an applied file: its own, and those of its CRLF->LF and
    LF->CRLF variants."""
    lf = checksum_source.replace(b"\r\n", b"\n")
    crlf = lf.replace(b"\n", b"\r\n")
    return {checksum_of_bytes(v) for v in (checksum_source, lf, crlf)}


def _check_provider(path: SourceFile, folder: FolderReader) -> None:
    found = _PROVIDER.search(folder.text(path))
    provider = found.group(1) if found else ""
    if provider and provider not in ("postgresql", "postgres"):
        raise BadInput(
            f"{path.shown}: the migrations were written for the provider {provider!r}, not "
            "PostgreSQL (Prisma refuses them: P3019)",
            fix=f'Generate the migrations for `provider = "postgresql"` (a new {LOCK_FILE} '
            "and folder), or set `path` to the PostgreSQL migrations.",
        )


def _configured_path(config: Path, pattern: re.Pattern[str]) -> str | None:
    """A path a Prisma config file gives (`migrations.path`, `schema`), when it is a plain
    string literal."""
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = pattern.search(text)
    if found is None:
        return None
    named = (found.group(1) if found.group(1) is not None else found.group(2)).strip()
    return os.path.normpath(named.removeprefix("./")) if named else None


def _package_schema(app_dir: Path) -> str | None:
    """package.json's `prisma.schema` (Prisma before its config file), when it is a string."""
    try:
        package = json.loads((app_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    settings = package.get("prisma") if isinstance(package, dict) else None
    schema = settings.get("schema") if isinstance(settings, dict) else None
    return os.path.normpath(schema) if isinstance(schema, str) and schema.strip() else None


def _beside(app_dir: Path, schema: str) -> str:
    """The `migrations` folder Prisma uses for a schema: beside the file, or inside the
    folder of a multi-file schema."""
    is_file = schema.endswith(".prisma") or (app_dir / schema).is_file()
    return os.path.normpath(
        os.path.join(os.path.dirname(schema) if is_file else schema, "migrations")
    )


def _app_sign(app_dir: Path) -> str:
    """What in the app names Prisma: a schema, a config file, package.json's dependencies."""
    for config in CONFIG_FILES:
        if (app_dir / config).is_file():
            return f"{config} exists"
    if (app_dir / "prisma" / "schema.prisma").is_file():
        return "prisma/schema.prisma exists"
    try:
        package = json.loads((app_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(package, dict):
        return ""
    for key in ("dependencies", "devDependencies"):
        deps = package.get(key)
        if isinstance(deps, dict) and ("prisma" in deps or "@prisma/client" in deps):
            return f"package.json's {key} name Prisma"
    return ""


FORMAT = PrismaFormat()
