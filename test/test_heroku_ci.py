"""bin/test-compile's check of app.json: Heroku CI has no release phase, so `test-setup` must run
the migrations."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from herokumigrate.buildpack.heroku_ci import explain_test_setup
from herokumigrate.output import Output


@pytest.mark.parametrize(
    ("app_json", "migrates"),
    [
        (None, False),
        ("{not json", False),
        ('{"environments": {"test": {"scripts": {"test": "go test ./..."}}}}', False),
        ('{"environments": {"test": {"scripts": {"test-setup": "heroku-migrate up"}}}}', True),
        (
            '{"environments": {"test": {"scripts": {"test-setup": '
            '"heroku-migrate up && bin/seed"}}}}',
            True,
        ),
        ('{"environments": {"test": {"scripts": {"test-setup": "bin/seed"}}}}', False),
        (
            '{"environments": {"test": {"scripts": {"test-setup": "echo heroku-migrate up"}}}}',
            False,
        ),
        ('{"environments": {"test": {"scripts": {"test-setup": ["heroku-migrate up"]}}}}', False),
        ('{"environments": []}', False),
    ],
)
def test_test_compile_says_whether_test_setup_runs_the_migrations(
    tmp_path: Path, app_json: str | None, migrates: bool
) -> None:
    if app_json is not None:
        (tmp_path / "app.json").write_text(app_json)
    stream = io.StringIO()
    explain_test_setup(tmp_path, Output(stream, stream, color=False))
    text = stream.getvalue()
    assert text.startswith("-----> Heroku CI\n")
    assert ("test-setup runs the migrations before the tests" in text) is migrates
    assert ('"test-setup": "heroku-migrate up"' in text) is not migrates
