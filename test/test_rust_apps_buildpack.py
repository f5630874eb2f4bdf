"""Rust apps through the real buildpack: a sqlx app's `migrations/` is found, the build says
whose files they are and why, and the release applies them with sqlx's table; a `migrations/`
holding two tools' files fails the build naming what it saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Before the import: the harness's asserts get pytest's messages, and it is also our plugin.
pytest.register_assert_rewrite("buildpack_harness")

from buildpack_harness import (  # noqa: E402
    Heroku24Builds,
    move_app,
    needs_pythons,
    needs_unshare,
    run_release,
    tables,
)
from support import rows  # noqa: E402

pytest_plugins = ["buildpack_harness"]
pytestmark = pytest.mark.buildpack

SQLX_CARGO = '[package]\nname = "app"\nversion = "0.1.0"\n\n[dependencies]\nsqlx = "0.8"\n'
DBMATE = {"2_b.sql": "-- migrate:up\nCREATE TABLE b (id int);\n-- migrate:down\nDROP TABLE b;\n"}


def folder_of(app: Path, files: dict[str, str], folder: str = "migrations") -> Path:
    root = app / folder
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


@needs_unshare
@needs_pythons
def test_a_sqlx_app_builds_says_why_and_releases(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str
) -> None:
    app = heroku24.app()
    for path in (app / "db").glob("**/*"):
        if path.is_file():
            path.unlink()
    (app / "Cargo.toml").write_text(SQLX_CARGO)
    folder_of(app, {"20240101000000_users.sql": "CREATE TABLE users (id int);\n"})
    build = heroku24.compile(app)
    assert build.result.returncode == 0, build.output
    assert "Migrations folder: migrations/" in build.result.stdout
    assert "Format: sqlx (Cargo.toml depends on sqlx)" in build.result.stdout
    released = run_release(move_app(build, tmp_path / "app"), database_url)
    assert released.returncode == 0, released.stdout + released.stderr
    assert {"users", "_sqlx_migrations"} <= tables(database_url)
    assert rows(database_url, "SELECT description FROM _sqlx_migrations") == [("users",)]


@needs_unshare
@needs_pythons
def test_an_ambiguous_migrations_folder_fails_the_build(heroku24: Heroku24Builds) -> None:
    app = heroku24.app()
    folder_of(app, {**DBMATE, "2024-01-01-000000_a/up.sql": "SELECT 1;\n"})
    (app / "migrate.toml").write_text('path = "migrations"\n')
    build = heroku24.compile(app)
    assert build.result.returncode == 1, build.output
    assert "holds markers of several tools" in build.result.stderr
    assert "diesel: 2024-01-01-000000_a" in build.result.stderr
