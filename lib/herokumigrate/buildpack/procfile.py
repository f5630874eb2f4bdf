"""Wire the release phase in the app's Procfile.

Only the last buildpack's `bin/release` counts, so a `release` default process type would depend
on buildpack order; the Procfile, read from the compiled slug, does not. Every line other than
`release:` is kept byte for byte (the file is handled as Latin-1, which maps every byte to one
character and back), and so are the line endings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from herokumigrate.buildpack import SLUG_DIR

RELEASE_COMMAND = f"./{SLUG_DIR}/bin/heroku-migrate up"
# A UTF-8 byte order mark decodes to these three characters in Latin-1.
_RELEASE_LINE = re.compile(r"^(\xef\xbb\xbf)?([ \t]*release[ \t]*:[ \t]*)(.*?)([ \t]*)(\r?)$")
_OURS = re.compile(r"(^|[\s/;&|(]|\{)heroku-migrate(\s|$)")
_GOLANG_MIGRATE_RECIPE = re.compile(r"migration\.sh|\bmigrate\b.*-database|\bdown\s+--?all\b")


@dataclass(frozen=True)
class Wiring:
    """What `wire` did: the release line now in the Procfile, and how it got there."""

    action: str
    """`created` (no Procfile), `added` (no release line), `wrapped`, or `unchanged`."""
    release_line: str
    previous: str = ""
    """The release command that was there before, if any."""


def chain(existing: str) -> str:
    """`migrations && existing`: the existing command runs only if the migrations succeed.

    The existing command is grouped so that its own `;`, `||` or `&` cannot run it (or hide a
    failure) when the migrations failed. A command that may hold a `#` comment, or ends in `&`, is
    passed to `eval` in single quotes instead, which bash parses exactly like the original line.
    """
    command = existing.strip()
    if command.endswith(";") and not command.endswith(";;"):
        command = command[:-1].rstrip()
    if not command:
        return RELEASE_COMMAND
    if "#" in command or command.endswith("&"):
        quoted = "'" + existing.strip().replace("'", "'\\''") + "'"
        return f"{RELEASE_COMMAND} && eval {quoted}"
    return f"{RELEASE_COMMAND} && {{ {command}; }}"


def is_wired(command: str) -> bool:
    """Whether a release command already runs heroku-migrate (added by a build or by hand)."""
    return _OURS.search(command) is not None


def looks_like_golang_migrate_recipe(command: str) -> bool:
    """Whether a release command looks like the golang-migrate `migration.sh` recipe."""
    return _GOLANG_MIGRATE_RECIPE.search(command) is not None


def wire(procfile: Path) -> Wiring:
    """Make the Procfile's `release:` run the migrations first; see `Wiring.action`."""
    if not procfile.exists():
        line = f"release: {RELEASE_COMMAND}"
        procfile.write_bytes((line + "\n").encode("latin-1"))
        return Wiring("created", line)
    text = procfile.read_bytes().decode("latin-1")
    lines = text.splitlines(keepends=True)
    found: Wiring | None = None
    for index, raw in enumerate(lines):
        body = raw.rstrip("\n")
        match = _RELEASE_LINE.match(body)
        if match is None:
            continue
        bom, prefix, command, _trailing, cr = match.groups()
        if is_wired(command):
            found = found or Wiring("unchanged", (prefix + command).strip(), command)
            continue
        new_body = f"{bom or ''}{prefix}{chain(command)}{cr}"
        lines[index] = new_body + raw[len(body) :]
        found = Wiring("wrapped", (prefix + chain(command)).strip(), command)
    if found is not None:
        if found.action == "wrapped":
            procfile.write_bytes("".join(lines).encode("latin-1"))
        return found
    newline = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith("\n"):
        text += newline
    line = f"release: {RELEASE_COMMAND}"
    procfile.write_bytes((text + line + newline).encode("latin-1"))
    return Wiring("added", line)


_WEB_LINE = re.compile(r"^(\xef\xbb\xbf)?[ \t]*web[ \t]*:", re.MULTILINE)
# Files by which a language buildpack that supplies a default `web` process recognises an app.
DEFAULT_WEB_MARKERS = {
    "package.json": "heroku/nodejs",
    "Gemfile": "heroku/ruby",
    "composer.json": "heroku/php",
    "pom.xml": "heroku/java",
    "build.gradle": "heroku/gradle",
    "build.sbt": "heroku/scala",
    "project.clj": "heroku/clojure",
    "go.mod": "heroku/go",
}


def default_web_at_risk(build_dir: Path) -> str | None:
    """The language buildpack whose default `web` process Heroku would drop, if any.

    Heroku takes default process types from the last buildpack only, and a Procfile we created
    stops heroku/go from writing its own; an app with a language marker file and no `web:` line
    in its Procfile may therefore lose its web process when this buildpack runs last.
    """
    procfile = build_dir / "Procfile"
    text = procfile.read_bytes().decode("latin-1") if procfile.is_file() else ""
    if _WEB_LINE.search(text):
        return None
    for marker, buildpack in DEFAULT_WEB_MARKERS.items():
        if (build_dir / marker).is_file():
            return buildpack
    return None
