"""The statements of a migration's down that lose data when they run: what a rollback with
`on_rollback = "revert"` would throw away (rollback.py), said at build time (buildpack/lintstep.py)
for the migrations new in the build. Read from our splitter's statements, so no parser is needed:
`DROP TABLE`, `ALTER TABLE ... DROP [COLUMN]` (not a constraint, default or NOT NULL),
`TRUNCATE` and `DELETE`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from herokumigrate.errors import BadInput
from herokumigrate.output import first_words

if TYPE_CHECKING:
    from herokumigrate.migration import Migration

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_LOSSY = re.compile(
    r"^(?:DROP\s+TABLE\b"
    r"|TRUNCATE\b"
    r"|DELETE\s+FROM\b"
    r"|ALTER\s+TABLE\b.*?\bDROP\s+(?:COLUMN\b|(?!CONSTRAINT\b|DEFAULT\b|NOT\b|IDENTITY\b"
    r"|EXPRESSION\b)\w))",
    re.IGNORECASE | re.DOTALL,
)
# `WITH ... DELETE`, too: a data-modifying CTE.
_WITH_DELETE = re.compile(r"^WITH\b.*\bDELETE\s+FROM\b", re.IGNORECASE | re.DOTALL)


class LossyStatement(NamedTuple):
    """A statement of a down that drops data."""

    migration: Migration
    file: str
    line: int
    text: str  # its first words


def lossy_downs(migrations: list[Migration]) -> list[LossyStatement]:
    """The statements of these migrations' downs that drop data, in order (a down that cannot
    be read or split is skipped: `validate` reports it)."""
    found: list[LossyStatement] = []
    for m in migrations:
        try:
            down = m.down
            statements = list(down.iter_statements()) if down is not None else []
        except BadInput:
            continue
        for statement in statements:
            text = _COMMENTS.sub(" ", statement.text).strip()
            if _LOSSY.match(text) or _WITH_DELETE.match(text):
                assert down is not None
                found.append(LossyStatement(m, down.path.shown, statement.line, first_words(text)))
    return found
