"""Whose migrations a folder holds, decided once for the whole folder from what the formats
claimed in it, before any entry is kept (source.py keeps the chosen tools' claims).

Several tools name files alike: `{version}_{title}.up.sql` is golang-migrate's and sqlx's
reversible naming, `{version}_{title}.sql` is dbmate's, goose's and sqlx's simple one. The
database cannot tell them apart at build time; the folder and the app can. In this order:

1. the `tool` setting, when set: that tool's files only;
2. the folder's content: an entry that only one tool's marker explains (dbmate's
   `-- migrate:up`, goose's `-- +goose Up`, sqlx's `-- no-transaction` first line, a Diesel
   folder holding `up.sql`): that tool's, and those that may share its folder (tools.py);
3. the app's own files naming a tool (a `Cargo.toml` depending on sqlx, `sqlx.toml`, `.sqlx/`);
4. the names alone: the tools that read every entry claimed, the first registered of them
   when several do (golang-migrate for a folder of `.up.sql` files: what the runner always
   read them as).

Two tools' markers in one folder (or two tools named by the app, where the content does not
decide) are refused, naming what was seen: nothing is guessed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from herokumigrate.errors import BadInput
from herokumigrate.tools import TOOL_NAMES, folder_group

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from herokumigrate.formats import Claim, FolderEntry, MigrationFormat, Unmarked
    from herokumigrate.tools import ToolName


class Offered(NamedTuple):
    """What every format made of one entry of the folder."""

    entry: FolderEntry
    claims: list[tuple[MigrationFormat, Claim]]
    unmarked: list[Unmarked]
    errors: list[tuple[MigrationFormat, BadInput]]


class FormatChoice(NamedTuple):
    """The tools whose claims the folder's reading keeps (empty: nothing claimed), and why."""

    tools: frozenset[ToolName]
    because: str

    def admits(self, tool: ToolName) -> bool:
        """Whether `tool`'s claims (and errors) count in this folder."""
        return not self.tools or tool in self.tools


_TOOL_SETTING = "the `tool` setting (MIGRATE_TOOL, or `tool` in migrate.toml)"


def choose_format(
    offered: list[Offered], tool: ToolName | None, app_signs: Mapping[ToolName, str]
) -> FormatChoice:
    """The folder's tools (see the module's docstring); BadInput when two tools' markers, or
    app signs, are found and nothing else decides."""
    if tool is not None:
        return FormatChoice(frozenset({tool}), f"set by {_TOOL_SETTING}")
    marked: dict[frozenset[ToolName], str] = {}
    for item in offered:
        for fmt, claim in item.claims:
            if claim.because:
                marked.setdefault(
                    folder_group(fmt.name), f"{item.entry.path.shown}: {claim.because}"
                )
    if len(marked) == 1:
        [(group, because)] = marked.items()
        return FormatChoice(group, because)
    if marked:
        raise _several("markers of several tools", marked)
    claiming = _claiming_groups(offered)
    signed = {
        folder_group(name): sign
        for name, sign in app_signs.items()
        if folder_group(name) in claiming
    }
    if len(signed) == 1:
        [(group, because)] = signed.items()
        return FormatChoice(group, because)
    if signed:
        raise _several("the app's files name several tools", signed)
    return _by_names(offered, claiming)


def _claiming_groups(offered: list[Offered]) -> dict[frozenset[ToolName], set[int]]:
    """Each group of tools that claims an entry, with the entries it claims (by position), in
    the registry's order."""
    found: dict[frozenset[ToolName], set[int]] = {}
    for index, item in enumerate(offered):
        for fmt, _ in item.claims:
            found.setdefault(folder_group(fmt.name), set()).add(index)
    return dict(sorted(found.items(), key=lambda pair: _rank(pair[0])))


def _by_names(
    offered: list[Offered], claiming: dict[frozenset[ToolName], set[int]]
) -> FormatChoice:
    """The names alone decide: the group that claims every claimed entry, the first registered
    of them when several do."""
    if not claiming:  # nothing is a migration: the default tools' errors explain why
        return FormatChoice(folder_group(TOOL_NAMES[0]), "")
    claimed = set().union(*claiming.values())
    complete = [group for group, entries in claiming.items() if entries == claimed]
    if not complete:
        alone = _examples(offered, claiming)
        seen = {group: offered[min(entries)].entry.path.shown for group, entries in alone.items()}
        raise _several("files only one tool or another reads", seen)
    chosen, tools = complete[0], _claimers(offered)
    if len(complete) > 1:
        rest = _names(set().union(*complete[1:]) & tools)
        return FormatChoice(
            chosen,
            f"names such as {offered[min(claimed)].entry.path.shown} fit "
            f"{_names(chosen & tools)} and {rest}, and nothing in the app names {rest}: "
            f"{_names(chosen & tools)}, the default; the `tool` setting chooses",
        )
    item = offered[min(_examples(offered, claiming)[chosen])]
    missing = [u.marker for u in item.unmarked]
    lacks = f" (it has no {' or '.join(missing)})" if missing else ""
    return FormatChoice(
        chosen, f"{item.entry.path.shown}{lacks}: only {_names(chosen & tools)} reads it"
    )


def _examples(
    offered: list[Offered], claiming: dict[frozenset[ToolName], set[int]]
) -> dict[frozenset[ToolName], set[int]]:
    """The entries each group alone claims (all it claims, when it has none of its own)."""
    alone = {}
    for group, entries in claiming.items():
        others = set().union(*(e for g, e in claiming.items() if g != group))
        alone[group] = (entries - others) or entries
    return alone


def _claimers(offered: Iterable[Offered]) -> set[ToolName]:
    return {fmt.name for item in offered for fmt, _ in item.claims}


def _rank(group: frozenset[ToolName]) -> int:
    return min(map(_registered, group))


def _registered(name: ToolName) -> int:
    """A tool's place in the registry (one registered later, as a test's, comes last)."""
    return TOOL_NAMES.index(name) if name in TOOL_NAMES else len(TOOL_NAMES)


def _names(tools: Iterable[ToolName]) -> str:
    """`golang-migrate`, `dbmate and golang-migrate`: in the registry's order."""
    ordered = sorted(tools, key=_registered)
    if len(ordered) <= 1:
        return "".join(ordered)
    return ", ".join(ordered[:-1]) + " and " + ordered[-1]


def _several(what: str, seen: Mapping[frozenset[ToolName], str]) -> BadInput:
    shown = "; ".join(f"{_names(group)}: {why}" for group, why in seen.items())
    return BadInput(
        f"the migrations folder holds {what} ({shown}); which tool's migrations they are is "
        "not guessed",
        fix="Keep one tool's migrations per folder (move the others out), or set "
        f"{_TOOL_SETTING} to the tool that applies them.",
    )
