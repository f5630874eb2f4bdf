"""The migration source: lists the migrations folder and has the formats read it.

Each entry of the folder (a file, or a subfolder) is offered to every registered format
(formats/__init__.py). Several tools name files alike (golang-migrate's and sqlx's
`{version}_{title}.up.sql`; dbmate's, goose's and sqlx's `{version}_{title}.sql`): whose the
folder's files are is decided once for the whole folder (formatchoice.py: the `tool` setting,
the tools' markers in the files, the app's own files, the names), then the chosen tools' claims
are kept. golang-migrate's, dbmate's and goose's files may share a folder; another tool's
folder holds its own migrations only.

A file that looks like a migration but is malformed is an error naming the file, never a skip;
`load_migrations` reports every bad file of the folder at once. A version is owned by one file:
where two claim the same version (`01_a` and `1_b` are both version 1), the first by name keeps
it and the other is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from herokumigrate.errors import BadInput
from herokumigrate.formatchoice import FormatChoice, Offered, choose_format
from herokumigrate.formats import Claim, FolderEntry, Unmarked, registered_formats
from herokumigrate.migration import read_text
from herokumigrate.problems import FileProblems
from herokumigrate.sections import SourceFile, shown_name

if TYPE_CHECKING:
    from collections.abc import Mapping

    from herokumigrate.formats import MigrationFormat
    from herokumigrate.migration import Migration
    from herokumigrate.tools import ToolName
    from herokumigrate.versions import Version


class FolderReading(NamedTuple):
    """A folder's migrations, in order, and whose they were found to be (and why)."""

    migrations: list[Migration]
    choice: FormatChoice


def load_migrations(
    directory: Path, app_root: Path | None = None, tool: ToolName | None = None
) -> list[Migration]:
    """Every migration in `directory`, in order; one BadInput listing every bad file. `tool`
    (the setting) names the tool whose files they are; None: decided from the folder."""
    problems = FileProblems()
    reading = read_folder(directory, app_root, problems, tool)
    problems.raise_if_any()
    return reading.migrations


def read_folder(
    directory: Path, app_root: Path | None, problems: FileProblems, tool: ToolName | None = None
) -> FolderReading:
    """The migrations of every good entry of the folder, and whose they are; every bad entry
    is added to `problems`."""
    folder = Folder(problems, app_root)
    formats = registered_formats()
    nested = tuple(fmt for fmt in formats if fmt.nested)
    for entry in list_folder(directory, app_root, problems):
        folder.offer(entry, formats)
        if entry.is_folder and nested:
            folder.offer_nested(entry, nested)
    try:
        choice = choose_format(folder.offered, tool, app_signs(formats, directory, app_root))
    except BadInput as exc:
        problems.add(directory.name, exc)
        return FolderReading([], FormatChoice(frozenset(), ""))
    folder.keep_chosen(choice, formats)
    migrations = _of_one_syntax(folder.assemble(), formats, problems)
    migrations.sort(key=lambda m: m.version.key)
    return FolderReading(migrations, choice)


def app_signs(
    formats: tuple[MigrationFormat, ...], directory: Path, app_root: Path | None
) -> dict[ToolName, str]:
    """What the app's own files say of the tools that keep migrations in `directory` (a
    `FolderCandidate.app_sign`, e.g. `Cargo.toml depends on sqlx`), by tool: read at the app's
    root, and at the folder's parent (a crate in a subfolder keeps its `migrations/` there)."""
    here = os.path.realpath(directory)
    roots = dict.fromkeys(r for r in (app_root, directory.parent) if r is not None)
    signs: dict[ToolName, str] = {}
    for root in roots:
        where = "" if root == app_root else f"{_relative(root, app_root)}/"
        for fmt in formats:
            for candidate in fmt.folders(root):
                if candidate.app_sign and os.path.realpath(root / candidate.path) == here:
                    signs.setdefault(fmt.name, where + candidate.app_sign)
    return signs


def _relative(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


class Folder:
    """What the formats claim in a folder while it is read (the `FolderReader` they see)."""

    def __init__(self, problems: FileProblems, app_root: Path | None = None) -> None:
        self.problems = problems
        self.app_root = app_root
        self._texts: dict[str, str] = {}
        self._configs: dict[str, Mapping[str, object] | None] = {}
        # The primary claim that owns each version, by its key (hashed in C: thousands of files).
        self._owners: dict[tuple[object, ...], Claim] = {}
        self._claims: list[tuple[MigrationFormat, Claim]] = []
        self.offered: list[Offered] = []

    def text(self, path: SourceFile) -> str:
        """The file's text, read once (BadInput when it cannot be)."""
        text = self._texts.get(path.full)
        if text is None:
            text = self._texts[path.full] = read_text(path)
        return text

    def owner(self, version: Version) -> SourceFile | None:
        """The primary entry that owns `version`."""
        claim = self._owners.get(version.key)
        return claim.entry.path if claim is not None else None

    def problem(self, path: SourceFile, error: BadInput) -> None:
        """A problem of the file `path`."""
        self.problems.add(path.name, error)

    def app_config(self, name: str) -> Mapping[str, object] | None:
        """The app's TOML file `name`, parsed once; a broken one is reported once."""
        if name not in self._configs:
            from herokumigrate.formats.rust import read_toml

            self._configs[name] = None
            if self.app_root is not None:
                try:
                    self._configs[name] = read_toml(self.app_root / name)
                except BadInput as exc:
                    self.problems.add(name, exc)
        return self._configs[name]

    def offer(self, entry: FolderEntry, formats: tuple[MigrationFormat, ...]) -> None:
        """Let each format claim `entry` (entries come in name order); what they made of it is
        kept until the folder's tools are chosen. Two tools' markers in one entry are refused
        at once."""
        offered = self._offers_for(entry, formats)
        marked = [claim for _, claim in offered.claims if claim.because]
        if len(marked) > 1:
            self.problem(entry.path, _claimed_twice(entry, marked))
        elif offered.claims or offered.unmarked or offered.errors or _is_sql_file(entry):
            self.offered.append(offered)

    def offer_nested(self, folder: FolderEntry, formats: tuple[MigrationFormat, ...]) -> None:
        """Offer the files of a subfolder, at any depth, to the formats whose tools read them
        (`nested`), named by their path in the migrations folder; a file none of them claims
        or fails on is skipped, as those tools skip it."""
        for entry in list_folder(Path(folder.path.full), self.app_root, self.problems):
            named = FolderEntry(
                SourceFile(entry.path.full, f"{folder.name}/{entry.name}"), entry.is_folder
            )
            if entry.is_folder:
                self.offer_nested(named, formats)
                continue
            offered = self._offers_for(named, formats)
            offered.unmarked.clear()  # a nested file is a migration only where it is claimed
            if offered.claims or offered.errors:
                self.offered.append(offered)

    def _offers_for(self, entry: FolderEntry, formats: tuple[MigrationFormat, ...]) -> Offered:
        """What each format makes of `entry`: its claim, a file it could read without a
        marker (unmarked), or the error it found."""
        offered = Offered(entry, [], [], [])
        for fmt in formats:
            try:
                found = fmt.claim(entry, self)
            except BadInput as exc:
                offered.errors.append((fmt, exc))
                continue
            if isinstance(found, Claim):
                offered.claims.append((fmt, found))
            elif found is not None:
                offered.unmarked.append(found)
        return offered

    def keep_chosen(self, choice: FormatChoice, formats: tuple[MigrationFormat, ...]) -> None:
        """Keep the chosen tools' claims; an entry they do not read is a problem when it is a
        `.sql` file or another tool's migration (a folder holds one tool's), else ignored."""
        chosen = tuple(fmt for fmt in formats if choice.admits(fmt.name))
        for item in self.offered:
            ours = [(fmt, claim) for fmt, claim in item.claims if choice.admits(fmt.name)]
            if ours:
                marked = [pair for pair in ours if pair[1].because]
                self._keep(*(marked or ours)[0])
                continue
            problem = _not_read(item, choice, chosen)
            if problem is not None:
                self.problem(item.entry.path, problem)

    def _keep(self, fmt: MigrationFormat, claim: Claim) -> None:
        if claim.primary:
            owner = self._owners.get(claim.version.key)
            if owner is not None:
                self.problem(
                    claim.entry.path,
                    BadInput(
                        f"{claim.entry.path.shown}: version {claim.version} is also used by "
                        f"{owner.entry.path.shown}",
                        fix="Give each migration its own version: rename one of the two files.",
                    ),
                )
                return
            self._owners[claim.version.key] = claim
        self._claims.append((fmt, claim))

    def assemble(self) -> list[Migration]:
        """Each claimed version's migration, from its parts (the primary one first)."""
        groups: dict[tuple[str, tuple[object, ...]], tuple[MigrationFormat, list[Claim]]] = {}
        for fmt, claim in self._claims:
            parts = groups.setdefault((fmt.name, claim.version.key), (fmt, []))[1]
            if claim.primary:
                parts.insert(0, claim)
            else:
                parts.append(claim)
        migrations = []
        for fmt, parts in groups.values():
            migration = fmt.assemble(parts[0].version, parts, self)
            if migration is not None:
                migrations.append(migration)
        return migrations


def _is_sql_file(entry: FolderEntry) -> bool:
    return not entry.is_folder and entry.name.endswith(".sql")


def _not_read(
    item: Offered, choice: FormatChoice, chosen: tuple[MigrationFormat, ...]
) -> BadInput | None:
    """Why an entry the chosen tools do not read is a problem (None: it is ignored): their own
    error for it, their missing marker, another tool's migration in their folder, or a `.sql`
    file that is no migration."""
    errors = [exc for fmt, exc in item.errors if choice.admits(fmt.name)]
    if errors:
        return errors[0]
    unmarked = [u for u in item.unmarked if choice.admits(u.tool)]
    if unmarked:
        return _unmarked(item.entry, unmarked, chosen)
    others = sorted({fmt.name for fmt, _ in item.claims})
    if others:
        return BadInput(
            f"{item.entry.path.shown}: a {' or '.join(others)} migration in a folder of "
            f"{' and '.join(sorted(choice.tools))} migrations ({choice.because})",
            fix="Keep one tool's migrations per folder: move it out, or set the `tool` "
            "setting (MIGRATE_TOOL) to the tool that applies this folder.",
        )
    if _is_sql_file(item.entry):
        return _bad_name(item.entry.name, chosen)
    return None


def _claimed_twice(entry: FolderEntry, claims: list[Claim]) -> BadInput:
    where = " and ".join(c.because for c in claims)
    return BadInput(
        f"{entry.path.shown}: holds the annotations of two formats: {where}",
        fix="Keep one format per file: remove the other format's annotation lines.",
    )


def _unmarked(
    entry: FolderEntry, unmarked: list[Unmarked], formats: tuple[MigrationFormat, ...]
) -> BadInput:
    """The error for a file whose name fits formats that read annotations, but has none."""
    shown = [f"{u.marker} ({u.tool})" for u in unmarked]
    if len(shown) == 2:
        which = f"neither a {shown[0]} nor a {shown[1]}"
    else:
        which = f"no {' or '.join(shown)}"
    named = [fmt.naming for fmt in formats if fmt.name not in {u.tool for u in unmarked}]
    rename = f", or rename it to {' or '.join(named)}" if named else ""
    return BadInput(
        f"{entry.path.shown}: has {which} annotation",
        fix=f"Start the file with {' or '.join(u.marker for u in unmarked)}{rename}.",
    )


def _bad_name(name: str, formats: tuple[MigrationFormat, ...]) -> BadInput:
    """The error for a `.sql` file whose name is no migration's."""
    lead = name.split("_", 1)[0].removesuffix(".sql")
    if any(c.isdigit() and not c.isascii() for c in lead):
        return BadInput(
            f"{shown_name(name)}: the version {lead!r} holds digits other than 0-9 "
            f"({', '.join(f'U+{ord(c):04X}' for c in lead if not c.isascii())})",
            fix="Write the version with the ASCII digits 0-9 and rename the file.",
        )
    namings = " or ".join(fmt.naming for fmt in formats)
    return BadInput(
        f"{shown_name(name)}: is not a migration file name",
        fix=f"Name it {namings}; e.g. `heroku-migrate new add_users`.",
    )


def _of_one_syntax(
    migrations: list[Migration], formats: tuple[MigrationFormat, ...], problems: FileProblems
) -> list[Migration]:
    """Versions of two syntaxes cannot be ordered together: the migrations whose syntax is not
    that of the folder's first format are problems."""
    syntax = {fmt.name: fmt.syntax.name for fmt in formats}
    kept: list[Migration] = []
    for m in migrations:
        first = kept[0] if kept else None
        if first is None or syntax[m.format] == syntax[first.format]:
            kept.append(m)
            continue
        problems.add(
            m.up.path.name,
            BadInput(
                f"{m.filename}: a {m.format} migration cannot share a folder with "
                f"{first.format} migrations such as {first.filename} (their versions are not "
                "ordered alike)",
                fix="Keep the migrations of one tool per folder.",
            ),
        )
    return kept


def list_folder(
    directory: Path, app_root: Path | None = None, problems: FileProblems | None = None
) -> list[FolderEntry]:
    """The entries of the migrations folder by name, dotfiles skipped; a `.sql` file's name is
    checked (printable), and its symlink, which must stay inside `app_root` (default: the
    folder itself): the slug holds only the app. Bad entries go to `problems` (default: raised,
    all of them, at the end). A format that reads a subfolder lists it with this too."""
    found = FileProblems() if problems is None else problems
    root = (app_root or directory).resolve()
    listed = []
    for entry in _scan(directory):
        name = entry.name
        if name.startswith("."):
            continue  # editor droppings
        # Most entries are plain files with printable names: checked without a call.
        if not name.isprintable() or (name.endswith(".sql") and entry.is_symlink()):
            problem = _entry_problem(entry, root)
            if problem is not None:
                found.add(name, problem)
                continue
        try:
            is_dir = entry.is_dir()  # from the directory listing: no extra system call
        except OSError:
            is_dir = False
        listed.append(FolderEntry(SourceFile(entry.path, name), is_dir))
    if problems is None:
        found.raise_if_any()
    return listed


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    """The folder's entries by name; BadInput when it cannot be listed."""
    try:
        return sorted(os.scandir(directory), key=lambda e: e.name)
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


def _entry_problem(entry: os.DirEntry[str], root: Path) -> BadInput | None:
    """What is wrong with a `.sql` entry's name or symlink, if anything."""
    name = entry.name
    if not name.isprintable() and ".sql" in name:
        return BadInput(
            f"{shown_name(name)}: the file name holds a line break, a control or an "
            "unprintable character",
            fix="Rename it to {version}_{title}.sql with printable characters only.",
        )
    if not name.endswith(".sql") or not entry.is_symlink():
        return None
    target = Path(entry.path).resolve()
    if not target.is_relative_to(root):
        return BadInput(
            f"{name}: is a symlink leading outside the app ({target})",
            fix="Replace the link with the file itself; the slug holds only the app.",
        )
    if not target.exists():
        return BadInput(
            f"{name}: is a broken symlink", fix="Replace the link with the file itself."
        )
    return None
