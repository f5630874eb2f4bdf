"""Heroku-style output: `-----> ` steps, 7-space details, ` !     ` warnings and errors on stderr.

Every line passes through `redact`, so a password or a full database URL cannot reach the
output even when it hides inside a message from psycopg or libpq.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TextIO

_URL_RE = re.compile(r"\b(postgres(?:ql)?)://[^\s'\"]*", re.IGNORECASE)
_PASSWORD_KV_RE = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)

INDENT = " " * 7


class Output:
    """Writes the runner's and the buildpack's messages; knows the secrets to hide."""

    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        *,
        color: bool | None = None,
    ) -> None:
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._secrets: list[str] = []
        if color is None:
            color = "NO_COLOR" not in os.environ and _isatty(self._err)
        self.color = color

    def add_secret(self, secret: str | None) -> None:
        """Remember a value (a password, a URL) that must never be printed."""
        # A blank value or a one- to three-character one would shred every line it matched;
        # such values are no secret worth the name (Heroku's passwords have 64 characters).
        if secret and len(secret.strip()) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)
            # Longest first, so a URL is replaced before the password inside it.
            self._secrets.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Text with every known secret, URL and `password=` value replaced."""
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        text = _URL_RE.sub(_redact_url, text)
        return _PASSWORD_KV_RE.sub("password=[REDACTED]", text)

    def step(self, text: str) -> None:
        """A `-----> Step` line on stdout."""
        self._write(self._out, "-----> " + text)

    def detail(self, text: str) -> None:
        """A detail line under a step, indented by 7 spaces, on stdout."""
        for line in text.splitlines() or [""]:
            self._write(self._out, INDENT + line)

    def plain(self, text: str) -> None:
        """Machine-readable output (e.g. `status --json`), printed as is but still redacted."""
        self._write(self._out, text)

    def warn(self, *lines: str) -> None:
        """Warning lines on stderr, each prefixed with ` !     `."""
        self._bang(lines, "33")

    def error(self, *lines: str) -> None:
        """Error lines on stderr, each prefixed with ` !     `."""
        self._bang(lines, "31")

    def _bang(self, lines: tuple[str, ...], color_code: str) -> None:
        self._out.flush()
        for line in lines:
            for part in line.splitlines() or [""]:
                text = " !     " + part
                if self.color:
                    text = f"\033[{color_code}m{text}\033[0m"
                self._write(self._err, text)

    def _write(self, stream: TextIO, text: str) -> None:
        stream.write(self.redact(text) + "\n")
        stream.flush()


# The documented shape of a URL, printed in fixes; it holds no secret.
_PLACEHOLDER_URL = "postgres://USER:PASSWORD@HOST:5432/DBNAME"


def _redact_url(match: re.Match[str]) -> str:
    if match.group(0).rstrip(".,;)") == _PLACEHOLDER_URL:
        return match.group(0)
    return f"{match.group(1)}://[REDACTED]"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def one_line(text: str) -> str:
    """`text` with its whitespace runs (newlines included) made single spaces."""
    return " ".join(text.split())


def first_words(text: str, limit: int = 60) -> str:
    """The start of a statement, on one line, for a progress message."""
    flat = one_line(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
