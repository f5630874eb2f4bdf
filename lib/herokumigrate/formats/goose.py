"""goose SQL migrations: `{version}_{name}.sql` with `-- +goose Up` and `-- +goose Down`.

Read as goose v3 reads them (internal/sqlparser/parser.go):
- a line is an annotation when, stripped, it starts with `--` and contains `+goose`; it must not
  be indented, holds one `+goose`, and names one of Up, Down, StatementBegin, StatementEnd,
  NO TRANSACTION, ENVSUB ON, ENVSUB OFF (case-insensitive); anything else is an error;
- only blank and comment lines may come before `-- +goose Up`; one Up, then at most one Down;
- `StatementBegin` ... `StatementEnd` (inside a section) hold ONE statement, semicolons and all;
- `NO TRANSACTION`, anywhere, runs both directions outside a transaction;
- an empty section, or a file without `-- +goose Down`, has no statements: goose runs nothing and
  records (or forgets) the version, so here too such a down reverts by recording only.
Outside the blocks statements are split by PostgreSQL's rules (sqlsplit), which accepts every
file goose's line-based split accepts. `ENVSUB ON` (environment substitution) is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.formats import FolderCandidate, NewFile, Unmarked
from herokumigrate.formats.naming import assemble_one_file, claim_one_file
from herokumigrate.sections import SqlSection
from herokumigrate.tools import ToolName
from herokumigrate.versions import INTEGER

if TYPE_CHECKING:
    from pathlib import Path

    from herokumigrate.formats import Claim, FolderEntry, FolderReader
    from herokumigrate.migration import Migration
    from herokumigrate.native import NativeTable
    from herokumigrate.sections import SourceFile
    from herokumigrate.versions import Version

_ANNOTATIONS = {
    "up": "Up",
    "down": "Down",
    "statementbegin": "StatementBegin",
    "statementend": "StatementEnd",
    "no transaction": "NO TRANSACTION",
    "envsub on": "ENVSUB ON",
    "envsub off": "ENVSUB OFF",
}
_HELP = "See https://github.com/pressly/goose#sql-migrations."


class _Line:
    """One annotation line: where it starts and ends, its number and what it says."""

    def __init__(self, start: int, end: int, number: int, annotation: str) -> None:
        self.start, self.end, self.number, self.annotation = start, end, number, annotation


class GooseFormat:
    """The goose format (see the module's docstring)."""

    name: ToolName = "goose"
    syntax = INTEGER
    nested = False  # only the folder's own entries (formats/__init__.py)
    naming = "{version}_{title}.sql with '-- +goose Up' (goose)"

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | Unmarked | None:
        """A `{version}_{title}.sql` file holding goose's annotations."""
        marker = Unmarked("'-- +goose Up'", self.name)
        return claim_one_file(entry, folder, self.syntax, self.first_annotation, marker)

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        """The file's up and down sections (one part: the file)."""
        return assemble_one_file(self.name, self.parse, version, parts[0], folder)

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        """Where its users keep the files (no config file of the tool names a folder)."""
        del app_dir
        return [
            FolderCandidate("db/migrations", "goose's usual folder"),
            FolderCandidate("migrations", "goose's usual folder"),
        ]

    def native_table(self) -> type[NativeTable]:
        """goose's `goose_db_version`."""
        from herokumigrate.native.goose import GooseTable

        return GooseTable

    def first_annotation(self, text: str) -> int | None:
        """The line of the first line goose would read as an annotation."""
        pos = text.find("+goose")
        while pos >= 0:
            start = text.rfind("\n", 0, pos) + 1
            end = _line_end(text, pos)
            if text[start:end].strip().startswith("--"):
                return text.count("\n", 0, start) + 1
            pos = text.find("+goose", end)
        return None

    def parse(self, path: SourceFile, text: str) -> tuple[SqlSection, SqlSection | None]:
        """The up and down sections of a goose file (the down has no statements when the file
        has no `-- +goose Down`, as goose reads it)."""
        lines = list(_annotations(path, text))
        ups = [a for a in lines if a.annotation == "Up"]
        if not ups:
            raise BadInput(
                f"{path.shown}: has no '-- +goose Up' annotation",
                fix=f"Put a '-- +goose Up' line above the up SQL. {_HELP}",
            )
        up = ups[0]
        transaction = not any(a.annotation == "NO TRANSACTION" for a in lines)
        down: _Line | None = None
        begin: _Line | None = None
        blocks: dict[str, list[tuple[int, int]]] = {"up": [], "down": []}
        for a in lines:
            if a.start < up.start:
                if a.annotation not in ("NO TRANSACTION", "ENVSUB OFF"):
                    raise _misplaced(path, a, "must come after '-- +goose Up'")
                continue
            if a is up:
                continue
            if a.annotation == "Up":
                raise _misplaced(path, a, f"is a second '-- +goose Up' (line {up.number})")
            if a.annotation == "Down":
                if down is not None:
                    raise _misplaced(path, a, f"is a second '-- +goose Down' (line {down.number})")
                if begin is not None:
                    raise _misplaced(path, a, f"is inside the block opened on line {begin.number}")
                down = a
            elif a.annotation == "StatementBegin":
                if begin is not None:
                    raise _misplaced(path, a, f"is inside the block opened on line {begin.number}")
                begin = a
            elif a.annotation == "StatementEnd":
                if begin is None:
                    raise _misplaced(path, a, "closes no '-- +goose StatementBegin'")
                blocks["up" if down is None else "down"].append((begin.end, a.start))
                begin = None
        if begin is not None:
            raise BadInput(
                f"{path.shown}: line {begin.number}: '-- +goose StatementBegin' is never closed",
                fix=f"Add a '-- +goose StatementEnd' line after the statement. {_HELP}",
            )
        _check_nothing_before(path, text, up)
        if down is None:
            up_section = SqlSection(
                path, text, up.end, -1, up.number, transaction, tuple(blocks["up"])
            )
            empty_down = SqlSection(path, text, len(text), -1, 1, transaction)
            return up_section, empty_down
        up_section = SqlSection(
            path, text, up.end, down.start, up.number, transaction, tuple(blocks["up"])
        )
        down_section = SqlSection(
            path, text, down.end, -1, down.number, transaction, tuple(blocks["down"])
        )
        return up_section, down_section

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """One file with both sections, as `goose create NAME sql` writes it."""
        return [
            NewFile(
                f"{version}_{slug}.sql",
                f"-- +goose Up\n-- +goose StatementBegin\n-- {title}\n-- +goose StatementEnd\n\n"
                f"-- +goose Down\n-- +goose StatementBegin\n-- undo: {title}\n"
                "-- +goose StatementEnd\n",
            )
        ]


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _annotations(path: SourceFile, text: str) -> list[_Line]:
    """Every annotation line, checked as goose's extractAnnotation checks it."""
    found: list[_Line] = []
    pos = text.find("+goose")
    line_no, counted_to = 1, 0
    while pos >= 0:
        start = text.rfind("\n", 0, pos) + 1
        end = _line_end(text, pos)
        raw = text[start:end].removesuffix("\r")
        if raw.strip().startswith("--"):
            line_no += text.count("\n", counted_to, start)
            counted_to = start
            found.append(_Line(start, end, line_no, _annotation(path, raw, line_no)))
        pos = text.find("+goose", end)
    return found


def _annotation(path: SourceFile, raw: str, number: int) -> str:
    where = f"{path.shown}: line {number}"
    if raw.startswith((" ", "\t")):
        raise BadInput(
            f"{where}: the goose annotation is indented",
            fix=f"Start the line with '-- +goose' (goose refuses indented annotations). {_HELP}",
        )
    command = raw.replace("--", "").replace("+goose", "", 1)
    if "+goose" in command:
        raise BadInput(f"{where}: holds two '+goose' annotations", fix=f"One per line. {_HELP}")
    annotation = _ANNOTATIONS.get(command.strip().lower())
    if annotation is None:
        raise BadInput(
            f"{where}: unknown goose annotation {command.strip()!r}",
            fix="Use Up, Down, StatementBegin, StatementEnd or NO TRANSACTION (a comment "
            f"mentioning +goose counts as an annotation for goose too). {_HELP}",
        )
    if annotation == "ENVSUB ON":
        raise BadInput(
            f"{where}: '-- +goose ENVSUB ON' asks for environment variable substitution, "
            "which heroku-migrate does not do",
            fix="Write the values into the SQL itself and delete the ENVSUB lines; settings "
            "that differ per app belong in the database (e.g. ALTER DATABASE ... SET).",
        )
    return annotation


def _check_nothing_before(path: SourceFile, text: str, up: _Line) -> None:
    """goose allows only blank and comment lines before `-- +goose Up`."""
    head = text[: up.start]
    for number, line in enumerate(head.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            raise BadInput(
                f"{path.shown}: line {number}: SQL before the '-- +goose Up' annotation",
                fix="Move it below '-- +goose Up'.",
            )


def _misplaced(path: SourceFile, a: _Line, why: str) -> BadInput:
    return BadInput(
        f"{path.shown}: line {a.number}: '-- +goose {a.annotation}' {why}",
        fix=f"Order the annotations: Up, its statements, then Down and its statements. {_HELP}",
    )


FORMAT = GooseFormat()
