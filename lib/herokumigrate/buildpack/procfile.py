"""Wire the release phase in the app's Procfile.

Only the last buildpack's `bin/release` counts, so a `release` default process type would depend
on buildpack order; the Procfile, read from the compiled slug, does not. The Procfile is handled
as bytes: lines end at `\\n` only (a `\\r` before it stays where it is), and every line other than
`release:` is kept byte for byte, whatever its encoding. Text is decoded as UTF-8 only to match
commands and to show them in the build log.

The Procfile is written by replacing it (a new file renamed over it), never through a symbolic
link: a link into the app is replaced by a regular file with the target's lines (the target is
left as it was); any other link is refused, since writing through it would change a file outside
the app or one Heroku never reads.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from herokumigrate.buildpack import SLUG_DIR, BuildFailed

RELEASE_COMMAND = f"./{SLUG_DIR}/bin/heroku-migrate up"
_RELEASE_LINE = re.compile(rb"^(\xef\xbb\xbf)?([ \t]*release[ \t]*:[ \t]*)(.*?)([ \t]*)(\r?)$")
# A process type spelled `Release:` or `RELEASE:`: not the release phase (process types are
# case-sensitive), which the build warns about.
_MISCASED_RELEASE = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t]*(release)[ \t]*:", re.IGNORECASE)
_GOLANG_MIGRATE_RECIPE = re.compile(r"migration\.sh|\bmigrate\b.*-database|\bdown\s+--?all\b")
_BLANKS = " \t"  # what Procfile lines are trimmed of: never a Unicode space or line separator

WiringAction = Literal["created", "added", "wrapped", "unchanged"]
"""`created` (no Procfile), `added` (no release line), `wrapped` (migrations now run before the
existing release command), `unchanged` (the release line already runs `heroku-migrate up`)."""


@dataclass(frozen=True)
class Wiring:
    """What `wire` did: the release line now in the Procfile, and how it got there (as text to
    show: bytes that are not UTF-8 appear as U+FFFD)."""

    action: WiringAction
    release_line: str
    previous: str = ""
    """The release command that was there before, if any."""
    replaced_link: str = ""
    """The target of the symbolic link the Procfile was, when it was replaced by a file."""
    miscased: tuple[tuple[int, str], ...] = ()
    """(line number, name) of each `Release:`-like line, which Heroku does not run in the release
    phase: process types are case-sensitive."""


def _text(raw: bytes) -> str:
    """Bytes as text that encodes back to the same bytes (`_raw`), whatever they hold."""
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _shown(raw: bytes) -> str:
    """Bytes as text for the build log."""
    return raw.decode("utf-8", "replace")


def chain(existing: str) -> str:
    """`migrations && existing`: the existing command runs only if the migrations succeed.

    The existing command is grouped so that its own `;`, `||` or `&` cannot run it (or hide a
    failure) when the migrations failed. A command that may hold a `#` comment, or ends in `&`, is
    passed to `eval` in single quotes instead, which bash parses exactly like the original line.
    """
    command = existing.strip(_BLANKS)
    if command.endswith(";") and not command.endswith(";;"):
        command = command[:-1].rstrip(_BLANKS)
    if not command:
        return RELEASE_COMMAND
    if "#" in command or command.endswith("&"):
        quoted = "'" + existing.strip(_BLANKS).replace("'", "'\\''") + "'"
        return f"{RELEASE_COMMAND} && eval {quoted}"
    return f"{RELEASE_COMMAND} && {{ {command}; }}"


# Words after which the next word is a command to run, and words that run the command after them.
_COMMAND_STARTS = frozenset(
    {"&&", "||", ";", ";;", "|", "&", "(", ")", "{", "!", "then", "do", "else"}
)
_COMMAND_PREFIXES = frozenset({"exec", "command", "time", "env", "nice"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def is_wired(command: str) -> bool:
    """Whether a release command runs `heroku-migrate up` (added by a build or by hand).

    Only a `heroku-migrate` (or a path ending in it) in a command position counts, followed by
    `up` before the next command: not a comment, not `echo heroku-migrate`, not
    `heroku-migrate status`.
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # an unbalanced quote: bash would not run it either
        return False
    at_command = True
    running_us = False
    for word in words:
        if word in _COMMAND_STARTS:
            at_command, running_us = True, False
        elif running_us:
            if word == "up":
                return True
        elif at_command:
            if _ASSIGNMENT.match(word) or word in _COMMAND_PREFIXES:
                continue
            running_us = word.rsplit("/", 1)[-1] == "heroku-migrate"
            at_command = False
    return False


def looks_like_golang_migrate_recipe(command: str) -> bool:
    """Whether a release command looks like the golang-migrate `migration.sh` recipe."""
    return _GOLANG_MIGRATE_RECIPE.search(command) is not None


def _read(procfile: Path) -> tuple[bytes | None, str]:
    """The Procfile's bytes (None when there is none) and the link target it came through."""
    try:
        info = procfile.lstat()
    except FileNotFoundError:
        return None, ""
    if stat.S_ISDIR(info.st_mode):
        raise BuildFailed(
            "Procfile is a folder; Heroku reads process types from a file of that name.",
            fix="Rename the folder, or set MIGRATE_RELEASE_PHASE=false and wire the release "
            "phase yourself.",
        )
    if not stat.S_ISLNK(info.st_mode):
        return procfile.read_bytes(), ""
    link = os.readlink(procfile)
    app = procfile.parent.resolve()
    target = procfile.resolve()
    if not target.is_relative_to(app) or not target.is_file():
        raise BuildFailed(
            f"Procfile is a symbolic link to {link}, which is not a file inside the app; the "
            "build writes the release line into the Procfile and will not write through it.",
            fix="Commit the Procfile as a regular file (git rm Procfile, then add the file), or "
            "set MIGRATE_RELEASE_PHASE=false and wire the release phase yourself.",
        )
    return target.read_bytes(), link


def _write(procfile: Path, content: bytes) -> None:
    """Replace the Procfile (never writing through a link) with `content`, mode 0644."""
    scratch = procfile.with_name(".Procfile.heroku-migrate")
    scratch.unlink(missing_ok=True)
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(content)
    os.chmod(scratch, 0o644)
    os.replace(scratch, procfile)


def _miscased(lines: list[bytes]) -> tuple[tuple[int, str], ...]:
    """(line number, name) of each process type that spells `release` with capitals."""
    found = []
    for number, line in enumerate(lines, 1):
        match = _MISCASED_RELEASE.match(line)
        if match is not None and match.group(1) != b"release":
            found.append((number, _shown(match.group(1))))
    return tuple(found)


def wire(procfile: Path) -> Wiring:
    """Make the Procfile's `release:` run the migrations first; see `WiringAction`."""
    content, link = _read(procfile)
    added_line = f"release: {RELEASE_COMMAND}"
    if content is None:
        _write(procfile, _raw(added_line) + b"\n")
        return Wiring("created", added_line)
    lines = content.split(b"\n")
    miscased = _miscased(lines)
    found: Wiring | None = None
    for index, line in enumerate(lines):
        match = _RELEASE_LINE.match(line)
        if match is None:
            continue
        bom, prefix, command, _trailing, cr = match.groups()
        if is_wired(_text(command)):
            shown = _shown(prefix + command).strip(_BLANKS)
            found = found or Wiring("unchanged", shown, _shown(command), miscased=miscased)
            continue
        if not command and prefix.endswith(b":"):
            prefix += b" "  # `release:` alone: `release: ./…`, not `release:./…`
        chained = _raw(chain(_text(command)))
        lines[index] = (bom or b"") + prefix + chained + cr
        shown = _shown(prefix + chained).strip(_BLANKS)
        found = Wiring("wrapped", shown, _shown(command), link, miscased)
    if found is not None:
        if found.action == "wrapped":
            _write(procfile, b"\n".join(lines))
        return found
    newline = b"\r\n" if b"\r\n" in content else b"\n"
    if content and not content.endswith(b"\n"):
        content += newline
    _write(procfile, content + _raw(added_line) + newline)
    return Wiring("added", added_line, replaced_link=link, miscased=miscased)


_WEB_LINE = re.compile(rb"^(\xef\xbb\xbf)?[ \t]*web[ \t]*:", re.MULTILINE)

DefaultWebSource = Literal["procfile", "release"]
"""How a language buildpack supplies a default `web` process: by writing a Procfile during its
compile when the app has none (heroku/go), or as a default process type in its `bin/release`,
which Heroku reads from the last buildpack only (heroku/nodejs, heroku/ruby, ...)."""


@dataclass(frozen=True)
class LanguageBuildpack:
    """A language buildpack that may give the app a default `web` process."""

    name: str
    marker: str
    """The file by which it recognises an app."""
    default_web: DefaultWebSource


# heroku/python supplies no default process type, so it is not here.
LANGUAGE_BUILDPACKS = (
    LanguageBuildpack("heroku/go", "go.mod", "procfile"),
    LanguageBuildpack("heroku/nodejs", "package.json", "release"),
    LanguageBuildpack("heroku/ruby", "Gemfile", "release"),
    LanguageBuildpack("heroku/php", "composer.json", "release"),
    LanguageBuildpack("heroku/java", "pom.xml", "release"),
    LanguageBuildpack("heroku/gradle", "build.gradle", "release"),
    LanguageBuildpack("heroku/scala", "build.sbt", "release"),
    LanguageBuildpack("heroku/clojure", "project.clj", "release"),
)


def default_web_at_risk(build_dir: Path, wiring: Wiring) -> LanguageBuildpack | None:
    """The language buildpack whose default `web` process the app may lose, if any.

    With no `web:` line in the Procfile: heroku/go writes a Procfile with one only when the app
    has none, so a Procfile this build created stops it (it must run before us); the others'
    defaults come from their `bin/release`, which counts only for the last buildpack.
    """
    procfile = build_dir / "Procfile"
    content = procfile.read_bytes() if procfile.is_file() else b""
    if _WEB_LINE.search(content):
        return None
    for language in LANGUAGE_BUILDPACKS:
        if not (build_dir / language.marker).is_file():
            continue
        if language.default_web == "procfile" and wiring.action != "created":
            return None  # the app had a Procfile: heroku/go adds no web: line in any order
        return language
    return None
