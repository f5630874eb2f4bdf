"""The README and docs/ against the code: every setting, command, format, linked page and quoted
error message they name exists, and everything that exists is in its reference page."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from herokumigrate.arguments import build_parser
from herokumigrate.config import SETTINGS
from herokumigrate.tools import TOOL_NAMES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "test" / "bench" / "README.md"]


def _rows(path: Path) -> list[list[str]]:
    """Every Markdown table row of `path`, as stripped cells (header and rule rows included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in path.read_text().splitlines()
        if line.startswith("|")
    ]


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_readme_is_read_in_five_minutes() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_the_configuration_page_has_a_row_for_every_setting() -> None:
    rows = {}
    for cells in _rows(DOCS / "configuration.md"):
        if len(cells) == 5 and cells[0].startswith("`") and cells[1].startswith("`MIGRATE_"):
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(SETTINGS)
    for key, setting in SETTINGS.items():
        _, env, flag, default, meaning = rows[key]
        assert env == f"`{setting.env_var}`"
        assert flag == (f"`{setting.flag_name}`" if setting.flag else ""), key
        assert default.strip("`").startswith(setting.default_text), key
        assert meaning, key


def test_the_readmes_settings_are_real_settings() -> None:
    named = {cells[0].strip("`") for cells in _rows(README) if cells[0].startswith("`MIGRATE_")}
    assert named, "the README lists the most used settings"
    assert named <= {setting.env_var for setting in SETTINGS.values()}


def _command_cells(path: Path) -> set[str]:
    """The command names of a page's command table (its first cells: `plan [--json]`, ...)."""
    names = set()
    for cells in _rows(path):
        for command in re.findall(r"`([a-z]+)[ `]", cells[0] + " "):
            names.add(command)
    return names


def test_the_commands_page_lists_every_command_and_no_other() -> None:
    assert _command_cells(DOCS / "commands.md") == set(_commands())


def test_the_readmes_commands_exist() -> None:
    named = _command_cells(README) - {"tool", "golang", "dbmate", "goose", "sqlx", "diesel"}
    named = {name for name in named if name.islower() and not name.startswith("migrate")}
    commands = set(_commands())
    listed = {name for name in named if name in commands}
    assert listed == commands, commands - listed


def test_every_option_in_the_commands_page_exists() -> None:
    commands = _commands()
    for cells in _rows(DOCS / "commands.md"):
        found = re.findall(r"`([a-z]+)( [^`]*)?`", cells[0])
        for name, rest in found:
            if name not in commands:
                continue
            options = {o for a in commands[name]._actions for o in a.option_strings}
            for option in re.findall(r"--[a-z-]+", rest or ""):
                assert option in options, (name, option)


def test_every_format_named_is_one_the_runner_reads() -> None:
    rows = _rows(README)
    header = rows.index(["tool", "files", "found in", "history table kept"])
    table = []
    for cells in rows[header + 2 :]:
        if len(cells) != 4:
            break
        table.append(cells[0])
    assert table == list(TOOL_NAMES), "README's formats table, in the registry's order"
    intro = README.read_text().split("\n\n")[1]
    listed = re.search(r"already writes \(([^)]*)\)", intro.replace("\n", " "))
    assert listed, "the first paragraph names the formats"
    assert [name.strip().lower() for name in listed.group(1).split(",")] == list(TOOL_NAMES)
    headings = re.findall(r"^## (.+)$", (DOCS / "formats.md").read_text(), re.MULTILINE)
    named = {word.lower() for heading in headings for word in re.split(r"[ ,]+", heading)}
    assert set(TOOL_NAMES) <= named, set(TOOL_NAMES) - named


def test_the_migrating_pages_exist_for_every_format() -> None:
    for tool in TOOL_NAMES:
        page = DOCS / f"migrating-from-{tool}.md"
        assert page.is_file(), page
        assert f"(docs/{page.name})" in README.read_text(), page.name


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_leads_somewhere(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), (page.name, target)
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, (page.name, target)


def _strings_in_the_code() -> list[str]:
    """Every string literal of lib/ (an f-string's literal parts joined by a NUL)."""
    found = []
    for path in (ROOT / "lib" / "herokumigrate").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                parts = [v.value if isinstance(v, ast.Constant) else "\0" for v in node.values]
                found.append("".join(str(part) for part in parts))
    return found


def test_every_message_quoted_in_troubleshooting_is_printed_by_the_code() -> None:
    quoted = re.findall(r"^## `(.+)`$", (DOCS / "troubleshooting.md").read_text(), re.MULTILINE)
    assert len(quoted) >= 8
    strings = _strings_in_the_code()
    for message in quoted:
        assert any(message in text for text in strings), message


def test_the_buildpacks_description_names_every_format() -> None:
    toml = (ROOT / "buildpack.toml").read_text()
    description = re.search(r'^description = "(.*)"$', toml, re.MULTILINE)
    assert description
    for tool in TOOL_NAMES:
        assert tool in description.group(1).lower(), tool


def test_every_docs_page_is_linked_from_the_readme() -> None:
    text = README.read_text()
    unlinked = [p.name for p in DOCS.glob("*.md") if f"(docs/{p.name})" not in text]
    assert not unlinked
