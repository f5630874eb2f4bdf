"""bin/test-compile: what Heroku CI runs instead of bin/compile.

Heroku CI builds the app with each buildpack's `bin/test-compile` (or `bin/compile`), then runs
app.json's `environments.test.scripts.test-setup`, then the tests. It has no release phase, so
nothing runs the migrations unless `test-setup` does: the build checks app.json and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from herokumigrate.buildpack.procfile import is_wired
from herokumigrate.output import Output

TEST_SETUP = "heroku-migrate up"


def test_setup_script(build_dir: Path) -> str | None:
    """app.json's `environments.test.scripts.test-setup`, or None (no app.json, none set)."""
    try:
        document = json.loads((build_dir / "app.json").read_text(encoding="utf-8"))
        script = document["environments"]["test"]["scripts"]["test-setup"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return script if isinstance(script, str) else None


def explain_test_setup(build_dir: Path, out: Output) -> None:
    """Say whether Heroku CI will migrate the test database before the tests, and how to."""
    out.step("Heroku CI")
    script = test_setup_script(build_dir)
    if script is not None and is_wired(script):
        out.detail(f"app.json's test-setup runs the migrations before the tests: {script}")
        return
    out.detail("Heroku CI has no release phase: run the migrations in app.json's test-setup,")
    out.detail("so the tests meet a migrated database (heroku-migrate is on PATH there):")
    out.detail('{"environments": {"test": {"scripts": {"test-setup": "' + TEST_SETUP + '"}}}}')
    if script is not None:
        out.detail(f"Your test-setup is now: {script}; prefix it with: {TEST_SETUP} && ")
