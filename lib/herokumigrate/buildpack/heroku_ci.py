"""Heroku CI and the app's `app.json`.

Heroku CI reads `app.json`: it runs the buildpacks listed there (`environments.test.buildpacks`,
else `buildpacks`), and with no list picks an official buildpack by itself, never this one; it
runs each one's `bin/test-compile` (else `bin/compile`) in /app, then
`environments.test.scripts.test-setup`, then `scripts.test` (else each buildpack's `bin/test`).
It has no release phase, so nothing migrates the test database unless `test-setup` does.

So the app's own build checks that Heroku CI will run this buildpack at all, and
`bin/test-compile` checks that `test-setup` migrates. An `app.json` that cannot be read (not
JSON, a byte order mark) is said so, never taken for one without a `test-setup`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from herokumigrate.buildpack import BUILDPACK_URL
from herokumigrate.buildpack.procfile import LANGUAGE_BUILDPACKS, is_wired
from herokumigrate.output import Output

APP_JSON = "app.json"
TEST_SETUP = "heroku-migrate up"
# How this buildpack can appear in a `buildpacks` list: its repository, or its registry name.
_THIS_BUILDPACK = ("heroku-buildpack-migrate", "heroku-migrate/migrate")
_BOM = b"\xef\xbb\xbf"


class UnreadableAppJson(Exception):
    """`app.json` exists but is not a JSON object: the message says where and why."""


@dataclass(frozen=True)
class TestSettings:
    """What Heroku CI reads from `app.json`."""

    test_setup: str | None
    test: str | None
    buildpacks: tuple[str, ...] | None
    """The URLs Heroku CI builds with, in order; None when app.json lists none."""

    def runs_heroku_migrate(self) -> bool:
        """Whether a CI script calls `heroku-migrate` (any command)."""
        scripts = (self.test_setup or "", self.test or "")
        return any("heroku-migrate" in _words(script) for script in scripts)

    def lists_this_buildpack(self) -> bool | None:
        """Whether the CI build includes this buildpack: None when it cannot tell (a list of
        URLs one of which may be this buildpack under another name)."""
        if self.buildpacks is None:
            return False
        if any(name in url.lower() for url in self.buildpacks for name in _THIS_BUILDPACK):
            return True
        official = ("heroku/", "https://github.com/heroku/")
        return False if all(url.startswith(official) for url in self.buildpacks) else None


def _words(script: str) -> set[str]:
    """The command words of a script, paths reduced to their last part."""
    try:
        return {word.rsplit("/", 1)[-1] for word in shlex.split(script, comments=True)}
    except ValueError:  # an unbalanced quote
        return set()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _buildpack_urls(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(str(item["url"]) for item in value if isinstance(item, dict) and "url" in item)


def read_test_settings(build_dir: Path) -> TestSettings | None:
    """What `app.json` tells Heroku CI; None when the app has no `app.json`."""
    try:
        raw = (build_dir / APP_JSON).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableAppJson(f"{APP_JSON} cannot be read ({exc.strerror})") from None
    if raw.startswith(_BOM):
        raise UnreadableAppJson(
            f"{APP_JSON} starts with a byte order mark (EF BB BF), which JSON does not allow"
        )
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnreadableAppJson(f"{APP_JSON} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UnreadableAppJson(
            f"{APP_JSON} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(document, dict):
        raise UnreadableAppJson(f"{APP_JSON} is not a JSON object ({{...}})")
    environments = document.get("environments")
    test = environments.get("test") if isinstance(environments, dict) else None
    test = test if isinstance(test, dict) else {}
    scripts = test.get("scripts")
    scripts = scripts if isinstance(scripts, dict) else {}
    buildpacks = test["buildpacks"] if "buildpacks" in test else document.get("buildpacks")
    return TestSettings(
        _text(scripts.get("test-setup")), _text(scripts.get("test")), _buildpack_urls(buildpacks)
    )


def _unreadable(exc: UnreadableAppJson, out: Output) -> None:
    out.warn(
        f"{exc}.",
        "Heroku reads app.json too (Heroku CI, review apps), and may reject it: save it as "
        "UTF-8 JSON without a byte order mark (python3 -m json.tool app.json checks it).",
    )


def app_json_example(build_dir: Path) -> str:
    """The `app.json` that makes Heroku CI run this buildpack after the app's language
    buildpack and migrate the test database, as one line."""
    language = next(
        (b.name for b in LANGUAGE_BUILDPACKS if (build_dir / b.marker).is_file()),
        "heroku/python" if (build_dir / "requirements.txt").is_file() else "<your language>",
    )
    return (
        f'{{"buildpacks": [{{"url": "{language}"}}, {{"url": "{BUILDPACK_URL}"}}], '
        '"environments": {"test": {"addons": ["heroku-postgresql:in-dyno"], '
        f'"scripts": {{"test-setup": "{TEST_SETUP}"}}}}}}}}'
    )


def check_ci_settings(build_dir: Path, out: Output) -> None:
    """Warn when app.json's CI scripts call heroku-migrate but Heroku CI will not build with
    this buildpack (or app.json cannot be read)."""
    try:
        settings = read_test_settings(build_dir)
    except UnreadableAppJson as exc:
        _unreadable(exc, out)
        return
    if settings is None or not settings.runs_heroku_migrate():
        return
    if settings.lists_this_buildpack() is False:
        listed = "lists no buildpacks" if settings.buildpacks is None else "lists other buildpacks"
        out.warn(
            f"app.json's Heroku CI scripts run heroku-migrate, but app.json {listed}: Heroku CI",
            "then builds with buildpacks of its own choosing, not this one, and test-setup fails",
            "with `heroku-migrate: command not found`. List the app's language buildpack, then",
            f"this one, in app.json (docs/heroku-ci.md): {app_json_example(build_dir)}",
        )


def explain_test_setup(build_dir: Path, out: Output) -> None:
    """Say whether Heroku CI will migrate the test database before the tests, and how to."""
    out.step("Heroku CI")
    try:
        settings = read_test_settings(build_dir)
    except UnreadableAppJson as exc:
        _unreadable(exc, out)
        return
    script = settings.test_setup if settings is not None else None
    if script is not None and is_wired(script):
        out.detail(f"app.json's test-setup runs the migrations before the tests: {script}")
        return
    out.detail("Heroku CI has no release phase: run the migrations in app.json's test-setup,")
    out.detail("so the tests meet a migrated database (heroku-migrate is on PATH there):")
    out.detail('{"environments": {"test": {"scripts": {"test-setup": "' + TEST_SETUP + '"}}}}')
    if script is not None:
        out.detail(f"Your test-setup is now: {script}; prefix it with: {TEST_SETUP} && ")
