"""Migration file formats: what each native tool's files look like, and how to read them.

One module per format, registered here. golang-migrate pairs `{version}_{title}.up.sql` with
`.down.sql` by name; the others keep both directions in one `{version}_{title}.sql` and are told
apart by their annotations (`AnnotatedFormat`). Adding a format: write its module (the protocol
below), add its name to `FormatName` and its object to `ANNOTATED`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    from herokumigrate.sections import SourceFile, SqlSection

FormatName = Literal["golang-migrate", "dbmate", "goose"]
FORMAT_NAMES: tuple[FormatName, ...] = ("golang-migrate", "dbmate", "goose")


class NewFile(NamedTuple):
    """A file `heroku-migrate new` writes: its name in the migrations folder and its content."""

    name: str
    content: str


class AnnotatedFormat(Protocol):
    """A format whose one `.sql` file holds both directions, marked by annotation comments."""

    name: FormatName
    example: str  # the annotation that starts an up section, for messages

    def first_annotation(self, text: str) -> int | None:
        """The line of the first line this format would read as an annotation, or None."""

    def parse(self, path: SourceFile, text: str) -> tuple[SqlSection, SqlSection | None]:
        """The up section and the down section (None: the file has none), or BadInput."""

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        """The files of a new, empty migration."""


def annotated_formats() -> tuple[AnnotatedFormat, ...]:
    """Every format told apart by annotations, in the order they are tried."""
    from herokumigrate.formats import dbmate, goose

    return (dbmate.FORMAT, goose.FORMAT)


def new_migration_files(fmt: FormatName, version: str, slug: str, title: str) -> list[NewFile]:
    """The files `heroku-migrate new TITLE --format FMT` writes, for `version` (digits) and
    `slug` (the title reduced to `[a-z0-9_]`)."""
    if fmt == "golang-migrate":
        from herokumigrate.formats import golang

        return golang.new_files(version, slug, title)
    for annotated in annotated_formats():
        if annotated.name == fmt:
            return annotated.new_files(version, slug, title)
    raise ValueError(fmt)  # unreachable: FormatName lists exactly the registered formats
