"""Node and JVM apps through the real buildpack: a Prisma app's `prisma/migrations` and a Spring
Boot app's `src/main/resources/db/migration` are found with no setting, the build says whose
files they are, and the release applies them keeping the tool's table; Flyway placeholders come
from the app's config vars at build and at release, and an unknown one fails the build.
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
    release_command,
    run_command,
    run_release,
    tables,
)
from support import rows  # noqa: E402

pytest_plugins = ["buildpack_harness"]
pytestmark = pytest.mark.buildpack

FLYWAY_FOLDER = "src/main/resources/db/migration"


def _empty_app(heroku24: Heroku24Builds) -> Path:
    app = heroku24.app()
    for path in (app / "db").glob("**/*"):
        if path.is_file():
            path.unlink()
    return app


def _write(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)


@needs_unshare
@needs_pythons
def test_a_prisma_app_builds_says_why_and_releases(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str
) -> None:
    app = _empty_app(heroku24)
    _write(
        app,
        {
            "package.json": '{"dependencies": {"@prisma/client": "^6"}}\n',
            "prisma/migrations/migration_lock.toml": 'provider = "postgresql"\n',
            "prisma/migrations/20240101000000_init/migration.sql": "CREATE TABLE users (id int);\n",
        },
    )
    build = heroku24.compile(app)
    assert build.result.returncode == 0, build.output
    assert "Migrations folder: prisma/migrations/" in build.result.stdout
    assert "Format: prisma (" in build.result.stdout
    released = run_release(move_app(build, tmp_path / "app"), database_url)
    assert released.returncode == 0, released.stdout + released.stderr
    assert {"users", "_prisma_migrations"} <= tables(database_url)
    assert rows(
        database_url, "SELECT migration_name, applied_steps_count FROM _prisma_migrations"
    ) == [("20240101000000_init", 1)]


@needs_unshare
@needs_pythons
def test_a_flyway_app_with_placeholders_builds_and_releases(
    heroku24: Heroku24Builds, tmp_path: Path, database_url: str
) -> None:
    app = _empty_app(heroku24)
    _write(
        app / FLYWAY_FOLDER,
        {
            "V1__users.sql": (
                "CREATE TABLE ${prefix}users (id int);\n"
                "GRANT SELECT ON ${prefix}users TO ${flyway:user};\n"
            ),
            "R__view.sql": (
                "CREATE OR REPLACE VIEW ${prefix}names AS SELECT id FROM ${prefix}users;\n"
            ),
        },
    )
    (app / "build.gradle").write_text(
        "dependencies { implementation 'org.flywaydb:flyway-core' }\n"
    )
    build = heroku24.compile(app, config_vars={"FLYWAY_PLACEHOLDERS_PREFIX": "app_"})
    assert build.result.returncode == 0, build.output
    assert f"Migrations folder: {FLYWAY_FOLDER}/" in build.result.stdout
    assert "Format: flyway (" in build.result.stdout
    assert "app_" not in build.result.stdout  # a placeholder's value is never printed
    moved = move_app(build, tmp_path / "app")
    command = f"FLYWAY_PLACEHOLDERS_PREFIX=app_ {release_command(moved)}"
    released = run_command(moved, command, database_url)
    assert released.returncode == 0, released.stdout + released.stderr
    assert {"app_users", "flyway_schema_history"} <= tables(database_url)
    assert rows(
        database_url, "SELECT installed_rank, version, script FROM flyway_schema_history"
    ) == [(1, "1", "V1__users.sql"), (2, None, "R__view.sql")]


@needs_unshare
@needs_pythons
def test_an_unknown_flyway_placeholder_fails_the_build(heroku24: Heroku24Builds) -> None:
    app = _empty_app(heroku24)
    _write(app / FLYWAY_FOLDER, {"V1__users.sql": "SELECT 1;\nCREATE TABLE ${prefix}users ();\n"})
    build = heroku24.compile(app)
    assert build.result.returncode == 1, build.output
    assert "V1__users.sql: line 2: unknown placeholder ${prefix}" in build.result.stderr
