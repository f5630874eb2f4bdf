"""Flyway (Community): `V<version>__<description>.sql` (versioned) and `R__<description>.sql`
(repeatable) files, read as Flyway reads them (flyway-core's ResourceNameParser,
MigrationVersion, ChecksumCalculator, PlaceholderReplacingReader):

- the version is digits separated by `.` or `_` (`_` read as `.`), kept as written with `_`
  made `.` (`V01_2` is `01.2`), compared numerically part by part, trailing zero parts ignored
  (`1` is `1.0`: two files of one version are an error, as in Flyway); the description is the
  rest of the name, each `_` a space;
- versioned migrations run in version order, then the repeatables by description; a
  repeatable runs again whenever its checksum changes (a new row in Flyway's table);
- the checksum is Flyway's CRC-32 over the file's lines (without their line breaks, a leading
  byte-order mark dropped), stored as a signed 32-bit integer: the same for LF, CRLF and BOM
  files; a repeatable's is taken after placeholders are replaced;
- `<file>.conf` (`V1__x.sql.conf`) may say `executeInTransaction=false` (every statement then
  runs on its own) and `placeholderReplacement=false`; a statement PostgreSQL cannot run in a
  transaction runs outside it, as Flyway runs such a migration;
- `${name}` placeholders are replaced everywhere in the file, comments and strings too: the
  built-ins `${flyway:...}` and the app's `FLYWAY_PLACEHOLDERS_<NAME>` config vars (their
  names lowercased, as Flyway reads them); an unknown one is an error naming file and line;
- `B<version>__<description>.sql` (a baseline migration) runs, on an empty history only, instead
  of the versioned migrations up to its version (the newest one at or below the target; its
  row's type is `SQL_BASELINE`); once anything is applied, baseline migrations are ignored;
- `U` files (undo, Flyway Teams only) are ignored as Flyway Community ignores them; callback
  scripts (`beforeMigrate.sql`, `afterMigrate__x.sql`, ...) are refused, naming the file: the
  runner does not run callbacks around its transaction (DESIGN: nothing runs that the plan
  does not show).

The folder is `src/main/resources/db/migration` (Spring Boot, Maven and Gradle apps) or
`db/migration` (the Flyway CLI's default); its subfolders are read too, as Flyway scans them, and
a script's `script` column holds its path in the folder (`2024/V3__x.sql`).
"""

from __future__ import annotations

import functools
import os
import re
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from herokumigrate.errors import BadInput
from herokumigrate.formats import Claim, FolderCandidate, NewFile
from herokumigrate.migration import Migration
from herokumigrate.sections import SourceFile, SqlSection
from herokumigrate.tools import ToolName
from herokumigrate.versions import Version

if TYPE_CHECKING:
    from collections.abc import Mapping

    from herokumigrate.formats import FolderEntry, FolderReader
    from herokumigrate.native import NativeTable

SUFFIX = ".sql"
CONF_SUFFIX = ".sql.conf"
SEPARATOR = "__"
REPEATABLE = "R"
BASELINE = "B"
DEFAULT_TABLE = "flyway_schema_history"
PLACEHOLDER_VARS = "FLYWAY_PLACEHOLDERS_"
# flyway_schema_history.version is VARCHAR(50); description VARCHAR(200).
MAX_VERSION_CHARS = 50
_VERSION = re.compile(r"[0-9]+(?:[._][0-9]+)*\Z", re.ASCII)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PLACEHOLDER = re.compile(r"\$\{([^${}\s]+)\}")
_SPRING_PREFIX = "spring.flyway."
_SPRING_PLACEHOLDERS = "placeholders."
_DEFAULT_SCHEMA_KEYS = ("default-schema", "defaultSchema", "default_schema")
_REPLACEMENT_KEYS = ("placeholder-replacement", "placeholderReplacement", "placeholder_replacement")
_PROPERTY = re.compile(r"([^=:\s]+)\s*[=:\s]\s*(.*)")
_SPRING_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*(?::[^}]*)?)\}")
_FLYWAY_NAME = re.compile(r"(?:[VB][0-9][0-9._]*|R)__.*\.sql\Z")
# The events Flyway runs a script named after (`<event>.sql`, `<event>__<description>.sql`).
CALLBACK_EVENTS = frozenset(
    f"{when}{what}"
    for when, whats in (
        (
            "before",
            (
                "Migrate",
                "Repeatables",
                "EachMigrate",
                "EachMigrateStatement",
                "Validate",
                "Clean",
                "Info",
                "Baseline",
                "Repair",
                "Undo",
                "EachUndo",
                "EachUndoStatement",
                "Connect",
                "EachRepeatable",
                "Versioned",
            ),
        ),
        (
            "after",
            (
                "Migrate",
                "MigrateApplied",
                "Versioned",
                "MigrateError",
                "EachMigrate",
                "EachMigrateError",
                "EachMigrateStatement",
                "EachMigrateStatementError",
                "Validate",
                "ValidateError",
                "Clean",
                "CleanError",
                "Info",
                "InfoError",
                "Baseline",
                "BaselineError",
                "Repair",
                "RepairError",
                "Undo",
                "UndoError",
                "EachUndo",
                "EachUndoError",
                "EachUndoStatement",
                "EachUndoStatementError",
                "Connect",
                "Repeatables",
            ),
        ),
    )
    for what in whats
) | {"createSchema"}


class FlywayVersions:
    """A versioned migration's version (`1.2`, `01_2`), or a repeatable's `R__description`,
    which sorts after every version, by description."""

    name = "flyway"
    column_type: Literal["bigint", "text"] = "text"

    def parse(self, written: str) -> Version:
        """`01_2` -> Version((0, 1, 2), "01.2", "01.2") (shown and stored as Flyway does);
        `R__my_views` ->
        Version((1, "my views"), "R__my_views", "R__my_views")."""
        if written.startswith(REPEATABLE + SEPARATOR):
            description = description_of(written[len(REPEATABLE + SEPARATOR) :])
            return Version((1, description), written, written)
        if written.startswith(BASELINE):  # just after the version it stands for
            version = self.parse(written[len(BASELINE) :])
            canonical = BASELINE + version.canonical
            return Version((*version.key, -1), canonical, canonical)
        if not _VERSION.match(written):
            raise ValueError(
                f"version {written!r} is not digits separated by `.` or `_` (Flyway: 'Invalid "
                "version containing non-numeric characters')"
            )
        stored = written.replace("_", ".")
        if len(stored) > MAX_VERSION_CHARS:
            raise ValueError(
                f"version {stored!r} is longer than the {MAX_VERSION_CHARS} characters "
                "flyway_schema_history keeps"
            )
        parts = [int(part) for part in stored.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return Version((0, *parts), stored, stored)


class FlywayFormat:
    """The Flyway format (see the module's docstring)."""

    name: ToolName = "flyway"
    syntax = FlywayVersions()
    nested = True  # the files of its subfolders too, as Flyway scans its locations
    naming = "V{version}__{description}.sql or R__{description}.sql (Flyway)"

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | None:
        """`V…__….sql`, `R__….sql` and their `.sql.conf`; BadInput for a callback, a baseline
        migration or a malformed version; None for the rest (`U` files among them)."""
        name = entry.name.rsplit("/", 1)[-1]  # a subfolder's file: `2024/V3__x.sql`
        if entry.is_folder:
            return None
        conf = name.endswith(CONF_SUFFIX)
        if not conf and not name.endswith(SUFFIX):
            return None
        stem = name[: -len(CONF_SUFFIX if conf else SUFFIX)]
        if not conf and stem.partition(SEPARATOR)[0] in CALLBACK_EVENTS:
            raise _callback(entry.path)
        prefix, written, description = _split(stem)
        if prefix is None:
            return None
        if prefix == "U":  # Flyway Teams' undo: read (not an unknown file), never run
            try:
                return Claim(entry, self.syntax.parse(written), description, primary=False)
            except ValueError:
                return None
        if prefix == REPEATABLE:
            if written:
                raise BadInput(
                    f"{entry.path.shown}: a repeatable migration's name holds a version "
                    f"({written!r}); Flyway fails on it ('Wrong repeatable migration name "
                    "format')",
                    fix=f"Rename it R__{description}.sql.",
                )
            version = self.syntax.parse(REPEATABLE + SEPARATOR + description)
        else:
            try:
                version = self.syntax.parse(BASELINE + written if prefix == BASELINE else written)
            except ValueError as exc:
                raise BadInput(
                    f"{entry.path.shown}: {exc}",
                    fix="Rename it V{version}__{description}.sql, e.g. V2__add_users.sql.",
                ) from None
        because = "" if conf else "Flyway's naming"
        return Claim(entry, version, description, primary=not conf, because=because)

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        """The script (placeholders replaced) and what its `.sql.conf` says."""
        script = parts[0] if parts[0].primary else None
        if script is None:
            return None  # an undo file or a `.conf` whose script is not here: ignored too
        path = script.entry.path
        confs = [p.entry.path for p in parts[1:] if p.entry.name.endswith(CONF_SUFFIX)]
        try:
            conf = _read_conf(confs[0], folder) if confs else {}
            raw = folder.text(path)
            spring = spring_flyway(folder.app_root) if folder.app_root is not None else {}
            default = os.environ.get("FLYWAY_PLACEHOLDER_REPLACEMENT", "").strip() or next(
                (spring[k] for k in _REPLACEMENT_KEYS if k in spring), "true"
            )
            replace = conf.get("placeholderreplacement", default).lower() != "false"
            values = placeholders(path, spring=spring)
            text = replace_placeholders(path, raw, values) if replace else raw
        except BadInput as exc:
            folder.problem(path, exc)
            return None
        repeatable = version.key[0] == 1
        baseline = not repeatable and version.key[-1] == -1
        checksum = str(checksum_of(text if repeatable else raw))
        in_transaction = conf.get("executeintransaction", "true").lower() != "false"
        section = SqlSection(path, text, transaction=in_transaction)
        title = "" if repeatable else script.title
        return Migration(
            version,
            title,
            self.name,
            section,
            checksum,
            repeatable=repeatable,
            baseline=baseline,
        )

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        """The location FLYWAY_LOCATIONS or Spring Boot's `spring.flyway.locations` names (its
        first); else Spring Boot's `src/main/resources/db/migration`, the CLI's `db/migration`."""
        sign = _app_sign(app_dir)
        named = configured_location(app_dir, os.environ)
        if named is not None:
            return [FolderCandidate(named[0], f"named by {named[1]}", sign or named[1])]
        return [
            FolderCandidate(
                "src/main/resources/db/migration", "Flyway's folder (Spring Boot)", sign
            ),
            FolderCandidate("db/migration", "Flyway's folder", sign),
        ]

    def native_table(self) -> type[NativeTable]:
        """Flyway's `flyway_schema_history`."""
        from herokumigrate.native.flyway import FlywayTable

        return FlywayTable

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """A versioned migration, named as Flyway's conventions write it."""
        return [NewFile(f"V{version}__{slug}.sql", f"-- {title}\n")]


def configured_location(app_dir: Path, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The folder of the first location FLYWAY_LOCATIONS, or `spring.flyway.locations` in the
    app's `application.properties`/`.yml`/`.yaml`, names (plain values only), and what named
    it: `classpath:x` is `src/main/resources/x`, `filesystem:x` and a bare `x` are `x`;
    `{vendor}` is `postgresql`. None when nothing names one."""
    value, where = env.get("FLYWAY_LOCATIONS", "").strip(), "FLYWAY_LOCATIONS"
    if not value:
        value = spring_flyway(app_dir).get("locations", "")
        where = "spring.flyway.locations (application.properties/.yml)"
    first = value.split(",")[0].strip().replace("{vendor}", "postgresql")
    if not first or "$" in first or "*" in first:
        return None
    kind, colon, rest = first.partition(":")
    if colon and kind == "classpath":
        folder = f"src/main/resources/{rest.lstrip('/')}"
    elif colon and kind == "filesystem":
        folder = rest
    elif colon:
        return None  # s3:, gcs:, ... : not a folder of the app
    else:
        folder = first
    return os.path.normpath(folder.strip("/") or "."), where


def spring_flyway(app_dir: Path) -> dict[str, str]:
    """The `spring.flyway.*` settings of a Spring Boot app (`application.properties`, `.yml`,
    `.yaml` in `src/main/resources`), keys without that prefix, plain values (a `${VAR:default}`
    in one is read from the environment, as Spring resolves it)."""
    resources = app_dir / "src" / "main" / "resources"
    stamps = []
    for name in ("application.properties", "application.yml", "application.yaml"):
        try:
            stamps.append((name, (resources / name).stat().st_mtime_ns))
        except OSError:
            continue
    return dict(_spring_flyway(str(resources), tuple(stamps)))


@functools.lru_cache(maxsize=8)
def _spring_flyway(
    resources: str, stamps: tuple[tuple[str, int], ...]
) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for name, _ in reversed(stamps):  # application.properties wins, as in Spring Boot
        try:
            text = Path(resources, name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        flat = _properties(text) if name.endswith(".properties") else _yaml_flat(text)
        for key, value in flat.items():
            if key.startswith(_SPRING_PREFIX):
                found[key[len(_SPRING_PREFIX) :]] = _SPRING_REFERENCE.sub(_spring_env, value)
    return tuple(found.items())


def _spring_env(found: re.Match[str]) -> str:
    name, _, default = found.group(1).partition(":")
    return os.environ.get(name, default if found.group(1).count(":") else found.group(0))


def _properties(text: str) -> dict[str, str]:
    """`key=value` (or `key: value`, `key value`) lines of a Java properties file."""
    found = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        match = _PROPERTY.match(line)
        if match is not None:
            found[match.group(1)] = match.group(2).strip()
    return found


def _yaml_flat(text: str) -> dict[str, str]:
    """The scalars of a simple block-style YAML file by dotted key (a list: its first item)."""
    found: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "---")):
            continue
        if stripped.startswith("-"):
            if pending and pending not in found:
                found[pending] = stripped[1:].strip().strip("'\"")
            continue
        indent = len(line) - len(line.lstrip())
        key, colon, value = stripped.partition(":")
        if not colon:
            continue
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, key.strip()))
        dotted = ".".join(k for _, k in path)
        pending = dotted
        if value.strip():
            found[dotted] = value.strip().strip("'\"")
    return found


def description_of(title: str) -> str:
    """The description Flyway stores: the name's description with each `_` a space."""
    return title.replace("_", " ")


def checksum_of(text: str) -> int:
    """Flyway's checksum: one CRC-32 fed each line's UTF-8 bytes without its line break (a
    leading byte-order mark dropped), as a signed 32-bit integer."""
    crc = 0
    for line in _LINE_BREAK.split(text.removeprefix("\ufeff")):
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def placeholders(
    path: SourceFile,
    env: Mapping[str, str] | None = None,
    spring: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The placeholders of a file: the app's `FLYWAY_PLACEHOLDERS_<NAME>` (lowercased names),
    over Spring Boot's `spring.flyway.placeholders.<name>`, and Flyway's built-ins, from the
    settings Flyway would read them from."""
    env = os.environ if env is None else env
    found = {
        key[len(_SPRING_PLACEHOLDERS) :]: value
        for key, value in (spring or {}).items()
        if key.startswith(_SPRING_PLACEHOLDERS)
    }
    found.update(
        (name[len(PLACEHOLDER_VARS) :].lower(), value)
        for name, value in env.items()
        if name.startswith(PLACEHOLDER_VARS) and len(name) > len(PLACEHOLDER_VARS)
    )
    user, database = _url_user_and_database(env)
    found.update(
        {
            "flyway:defaultSchema": default_schema(env) or "public",
            "flyway:user": user,
            "flyway:database": database,
            "flyway:timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "flyway:filename": os.path.basename(path.name),
            "flyway:workingDirectory": os.getcwd(),
            "flyway:table": table_name(env),
            "flyway:environment": env.get("FLYWAY_ENVIRONMENT", "").strip() or "default",
        }
    )
    return found


def search_path(env: Mapping[str, str], app_dir: Path | None = None) -> str | None:
    """The search_path Flyway sets for its migrations when a default schema is configured:
    that schema (quoted) before the server's default path; None when none is configured."""
    schema = default_schema(env, app_dir)
    if schema is None:
        return None
    return '"' + schema.replace('"', '""') + '", "$user", public'


def is_flyway_folder(folder: Path) -> bool:
    """Whether `folder` (or a subfolder) holds a file named as Flyway names its migrations
    (for the session's settings, chosen before the folder is read)."""
    walked = os.walk(folder)
    return any(_FLYWAY_NAME.match(name) for _, _, names in walked for name in names)


def setting(
    env: Mapping[str, str], var: str, *spring_keys: str, app_dir: Path | None = None
) -> str:
    """A Flyway setting as Flyway reads it: its environment variable (`var`), else Spring
    Boot's `spring.flyway.<key>` in the app's config (`app_dir`, default the app's root)."""
    value = env.get(var, "").strip()
    if value or not spring_keys:
        return value
    from herokumigrate.config import app_root  # the settings' module: below the formats

    spring = spring_flyway(app_dir if app_dir is not None else app_root(env))
    return next((spring[k].strip() for k in spring_keys if spring.get(k, "").strip()), "")


def default_schema(env: Mapping[str, str], app_dir: Path | None = None) -> str | None:
    """Flyway's default schema: FLYWAY_DEFAULT_SCHEMA (spring.flyway.default-schema), else the
    first of FLYWAY_SCHEMAS (spring.flyway.schemas)."""
    named = setting(env, "FLYWAY_DEFAULT_SCHEMA", *_DEFAULT_SCHEMA_KEYS, app_dir=app_dir)
    if named:
        return named
    schemas = setting(env, "FLYWAY_SCHEMAS", "schemas", app_dir=app_dir)
    return schemas.split(",")[0].strip() or None


def table_name(env: Mapping[str, str], app_dir: Path | None = None) -> str:
    """Flyway's table: FLYWAY_TABLE (spring.flyway.table), else `flyway_schema_history`."""
    return setting(env, "FLYWAY_TABLE", "table", app_dir=app_dir) or DEFAULT_TABLE


def replace_placeholders(path: SourceFile, text: str, values: Mapping[str, str]) -> str:
    """`${name}` replaced everywhere, as Flyway does; BadInput naming the line of the first
    unknown one (user placeholders are matched without regard to case)."""
    if "${" not in text:
        return text
    lowered = {k.lower(): v for k, v in values.items()}

    def value(found: re.Match[str]) -> str:
        name = found.group(1)
        known = values.get(name, lowered.get(name.lower()))
        if known is None:
            line = text.count("\n", 0, found.start()) + 1
            raise BadInput(
                f"{path.shown}: line {line}: unknown placeholder ${{{name}}}; Flyway fails on "
                "it ('No value provided for placeholder')",
                fix=f"Set the config var {PLACEHOLDER_VARS}{name.upper().replace(':', '_')} "
                f"(heroku config:set {PLACEHOLDER_VARS}{name.upper()}=...), or add "
                f"`{path.name}.conf` with placeholderReplacement=false if the text is meant "
                "literally.",
            )
        return known

    return _PLACEHOLDER.sub(value, text)


def _split(stem: str) -> tuple[str | None, str, str]:
    """(prefix, version text, description) of a script's name without its suffix; prefix None
    when the name is none of Flyway's (no `__`, or another first letter)."""
    head, separator, description = stem.partition(SEPARATOR)
    if not separator or not head or head[0] not in "VRUB":
        return None, "", ""
    return head[0], head[1:], description


def _read_conf(path: SourceFile, folder: FolderReader) -> dict[str, str]:
    """A script's `.conf`: `key=value` lines (keys lowercased), `#` comments skipped."""
    found = {}
    for line in folder.text(path).splitlines():
        key, equals, value = line.partition("=")
        if equals and not key.strip().startswith("#"):
            found[key.strip().lower()] = value.strip()
    return found


# At build time no database URL is known: `${flyway:user}` and `${flyway:database}` stand for
# a plain name there, so that the files still parse (the release replaces the real ones).
BUILD_STAND_IN = "heroku_migrate_build"


def _url_user_and_database(env: Mapping[str, str]) -> tuple[str, str]:
    """The user and database name the app's DATABASE_URL names (a stand-in at build time)."""
    url = env.get("DATABASE_URL", "")
    if not url:
        return BUILD_STAND_IN, BUILD_STAND_IN
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:  # a broken URL is reported where it is used
        return BUILD_STAND_IN, BUILD_STAND_IN
    user = str(parts.get("user") or BUILD_STAND_IN)
    return user, str(parts.get("dbname") or user)


def _callback(path: SourceFile) -> BadInput:
    return BadInput(
        f"{path.shown}: a Flyway callback script; Flyway runs it around its own migrate, "
        "heroku-migrate does not run callbacks (they would run outside its plan and its "
        "one transaction)",
        fix="Move its SQL into a migration (an R__ file runs again whenever it changes), or "
        "move the file out of the migrations folder.",
    )


def _app_sign(app_dir: Path) -> str:
    """What in the app names Flyway: its build file's dependency, or a Spring Boot setting."""
    for build in ("pom.xml", "build.gradle", "build.gradle.kts"):
        try:
            text = (app_dir / build).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "flyway" in text:
            return f"{build} names Flyway"
    if (app_dir / "flyway.conf").is_file() or (app_dir / "flyway.toml").is_file():
        return "a Flyway config file exists"
    return ""


FORMAT = FlywayFormat()
