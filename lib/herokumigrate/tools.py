"""The registry of the tools whose migration files and history tables we read: one name per
tool, each with a format module (`formats/<name>.py`) and a table class (`native/<name>.py`);
`-` in a name is written `_` in its modules. The order is the order formats claim a folder's
entries and tables are recognized by their columns (formats/__init__.py says what a new tool
must provide).
"""

from __future__ import annotations

from typing import Literal, get_args

ToolName = Literal["golang-migrate", "dbmate", "goose", "sqlx", "diesel", "prisma", "flyway"]
TOOL_NAMES: tuple[ToolName, ...] = get_args(ToolName)

# Tools whose migrations may share one folder (the runner has always read golang-migrate's,
# dbmate's and goose's files together: an app moving from one to another). A tool listed in no
# group keeps a folder of its own: a folder holding another tool's migrations too is refused.
FOLDER_GROUPS: tuple[frozenset[ToolName], ...] = (frozenset({"golang-migrate", "dbmate", "goose"}),)


def folder_group(name: ToolName) -> frozenset[ToolName]:
    """The tools whose migrations may share a folder with `name`'s (itself included)."""
    return next((group for group in FOLDER_GROUPS if name in group), frozenset({name}))
