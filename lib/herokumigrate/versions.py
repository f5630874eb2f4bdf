"""A migration's version: what identifies it and where it stands in the order, within its format.

A `Version` is compared by its `key` alone: two versions are the same migration when their keys
are equal, and one runs before the other when its key is smaller. Each format's syntax builds
keys its own way (formats/__init__.py): a 1-tuple of the integer for golang-migrate, dbmate and
goose, so that `01_a` and `1_b` are one version and `0180` runs before `181`. Keys of two
syntaxes are never compared: a folder holds migrations of one syntax (source.py checks).

`canonical` is what our history table stores and messages show (`1` for `001`); `written` is the
version as the file names it (`001`), which a tool that stores text (dbmate) keeps as written;
`number` is the integer, for tables that store one (golang-migrate's, goose's, ours).
"""

from __future__ import annotations

from typing import Literal, Protocol

# Our history table's `version` column is bigint, as golang-migrate's.
MAX_VERSION = 2**63 - 1


class Version:
    """One migration's identity and place in the order (see the module's docstring). Immutable
    by convention; equality, hash and order are the key's (written out, not a dataclass's: a
    release with nothing to do builds and compares thousands of them)."""

    __slots__ = ("_hash", "canonical", "key", "number", "written")

    def __init__(
        self, key: tuple[object, ...], canonical: str, written: str, number: int | None = None
    ) -> None:
        self.key = key
        self.canonical = canonical
        self.written = written
        self.number = number
        self._hash = hash(key)

    def __repr__(self) -> str:
        return f"Version({self.key!r}, {self.canonical!r}, {self.written!r}, {self.number!r})"

    def __str__(self) -> str:
        return self.canonical

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __le__(self, other: Version) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Version) -> bool:
        return self.key > other.key

    def __ge__(self, other: Version) -> bool:
        return self.key >= other.key

    @property
    def json(self) -> int | str:
        """The version in JSON output: the integer where there is one, else the text."""
        return self.number if self.number is not None else self.canonical


class VersionSyntax(Protocol):
    """How a format writes versions: `parse` makes a Version of the text as written (ValueError
    when it is none), and `column_type` is the type of our history table's `version` column
    when the table is created for this syntax."""

    @property
    def name(self) -> str:
        """For messages: `integer`."""

    @property
    def column_type(self) -> Literal["bigint", "text"]:
        """Our history's version column: bigint for integers (as every release before the
        format seam created it), text for the others."""

    def parse(self, written: str) -> Version:
        """The version `written` names; ValueError with the reason when it is not one."""


class IntegerVersions:
    """Versions that are ASCII digits, compared as integers below 2^63 (golang-migrate, dbmate,
    goose)."""

    name = "integer"
    column_type: Literal["bigint", "text"] = "bigint"

    def parse(self, written: str) -> Version:
        """`0180` -> Version((180,), "180", "0180", 180)."""
        # ASCII digits only: isdigit() and int() alone would also take other scripts' digits.
        if not (written.isascii() and written.isdigit()):
            raise ValueError(f"version {written!r} is not made of the digits 0-9")
        number = int(written)
        if number > MAX_VERSION:
            raise ValueError(f"version {written} is too large")
        return Version((number,), str(number), written, number)

    def of(self, number: int) -> Version:
        """The version of an integer (as our history and golang-migrate's table store it)."""
        return Version((number,), str(number), str(number), number)


INTEGER = IntegerVersions()
