"""The registry of the tools whose migration files and history tables we read: one name per
tool, each with a format module (`formats/<name>.py`) and a table class (`native/<name>.py`);
`-` in a name is written `_` in its modules. The order is the order formats claim a folder's
entries and tables are recognized by their columns (formats/__init__.py says what a new tool
must provide).
"""

from __future__ import annotations

from typing import Literal, get_args

ToolName = Literal["golang-migrate", "dbmate", "goose"]
TOOL_NAMES: tuple[ToolName, ...] = get_args(ToolName)
