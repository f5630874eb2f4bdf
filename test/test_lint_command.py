"""`heroku-migrate lint [PATH...]`, through the real command line: no database, pglast from the
test extra (and a stand-in package that fails to import, for the machine without it)."""

from __future__ import annotations

import json
from pathlib import Path

from herokumigrate.pgparse import PGLAST_REQUIREMENT
from support import REPO, run_cli, write_migrations

FILES = {
    "1_users.up.sql": "CREATE TABLE users (id bigint PRIMARY KEY, name text, email text NOT NULL);"
    "\n",
    "2_users_email.up.sql": "CREATE INDEX users_email ON users (email);\n",
    "3_rename.up.sql": (
        "-- The running release still reads users.name.\n"
        "ALTER TABLE users RENAME COLUMN name TO full_name;\n"
        "ALTER TABLE users ALTER COLUMN email DROP NOT NULL;\n"
    ),
}


def test_lint_reports_each_file_against_the_ones_before_it_and_fails_on_errors(app: Path) -> None:
    write_migrations(app, FILES)
    result = run_cli(["lint"], cwd=app)
    assert result.returncode == 1, result.output
    out = result.stdout
    assert (
        "-----> Release-safety lint of 3 migration(s) in db/migrations (each as released alone, "
        "after the files before them)" in out
    )
    # 2 is checked as released after 1: users existed, the index blocks its writes.
    assert "2_users_email.up.sql: 1 error(s), 0 warning(s)" in out
    assert (
        "3_rename.up.sql: 1 error(s), 1 warning(s)\n"
        "         line 2: rename-column (error, breaks the running release): users.name\n"
        "           why: the release still serving reads and writes the old name until its "
        "dynos restart\n"
        "           instead: add the new column, write both, backfill, move reads, drop the old "
        "one later\n"
        "         line 3: drop-not-null (warning, breaks the running release): users.email\n"
    ) in out
    assert "1_users.up.sql" not in out.split("\n", 1)[1]
    assert "-----> 2 error(s), 1 warning(s)" in out
    assert "-- heroku-migrate:allow index-without-concurrently" in out


def test_lint_exits_0_when_only_warnings_remain(app: Path) -> None:
    files = dict(FILES)
    files["2_users_email.up.sql"] = (
        "-- heroku-migrate:allow index-without-concurrently\n" + files["2_users_email.up.sql"]
    )
    files["3_rename.up.sql"] = files["3_rename.up.sql"].replace(
        "ALTER TABLE users RENAME",
        "ALTER TABLE users -- heroku-migrate:allow rename-column\nRENAME",
    )
    write_migrations(app, files)
    result = run_cli(["lint"], cwd=app)
    assert result.returncode == 0, result.output
    assert "-----> 0 error(s), 1 warning(s), 2 allowed by comments" in result.stdout


def test_lint_json_is_one_document_on_stdout(app: Path) -> None:
    write_migrations(app, FILES)
    result = run_cli(["lint", "--format", "json"], cwd=app)
    assert result.returncode == 1
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["release"] == "each"
    assert doc["checked"] == list(FILES)
    assert (doc["errors"], doc["warnings"], doc["allowed"]) == (2, 1, 0)
    assert doc["findings"][1] == {
        "file": "3_rename.up.sql",
        "line": 2,
        "rule": "rename-column",
        "level": "error",
        "category": "breaks the running release",
        "subject": "users.name",
        "why": "the release still serving reads and writes the old name until its dynos restart",
        "instead": "add the new column, write both, backfill, move reads, drop the old one later",
    }


def test_given_paths_are_checked_as_one_release(app: Path) -> None:
    """What a pull request adds ships in one release: its new table's index blocks no one."""
    folder = write_migrations(app, FILES)
    alone = run_cli(["lint", "--format", "json", str(folder / "2_users_email.up.sql")], cwd=app)
    assert [f["rule"] for f in json.loads(alone.stdout)["findings"]] == [
        "index-without-concurrently"
    ]
    together = run_cli(
        [
            "lint",
            "--format",
            "json",
            "db/migrations/1_users.up.sql",
            "db/migrations/2_users_email.up.sql",
        ],
        cwd=app,
    )
    assert together.returncode == 0, together.output
    doc = json.loads(together.stdout)
    assert doc["release"] == "together"
    assert doc["checked"] == ["1_users.up.sql", "2_users_email.up.sql"]
    assert doc["findings"] == []


def test_a_path_outside_the_migrations_folder_is_bad_input(app: Path) -> None:
    write_migrations(app, FILES)
    (app / "other.sql").write_text("DROP TABLE users;\n")
    result = run_cli(["lint", "other.sql"], cwd=app)
    assert result.returncode == 2
    assert result.stdout == ""
    assert " !     other.sql is not a migration file of db/migrations (the `path` setting)" in (
        result.stderr
    )


def test_a_syntax_error_names_file_line_and_column(app: Path) -> None:
    write_migrations(app, {**FILES, "4_oops.up.sql": "SELECT 1;\ncreate tabel oops (id int);\n"})
    result = run_cli(["lint"], cwd=app)
    assert result.returncode == 2
    assert '4_oops.up.sql: line 2, column 8: syntax error at or near "tabel"' in result.stderr


def test_without_pglast_lint_says_how_to_install_it(app: Path, tmp_path: Path) -> None:
    """A dyno (or a laptop without the test extra): pglast cannot be imported."""
    write_migrations(app, FILES)
    broken = tmp_path / "site" / "pglast"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('no pglast here')\n")
    result = run_cli(["lint"], cwd=app, env={"PYTHONPATH": f"{tmp_path / 'site'}:{REPO / 'lib'}"})
    assert result.returncode == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(
        " !     heroku-migrate lint needs PostgreSQL's parser, pglast, which cannot be imported "
        "here (no pglast here)\n"
        f" !     Install it next to heroku-migrate: `pip install {PGLAST_REQUIREMENT}`"
    )


def test_the_pglast_to_install_is_the_one_the_build_and_the_tests_pin() -> None:
    pinned = {
        f"pglast=={line.split()[1]}"
        for line in (REPO / "lib/herokumigrate/buildpack/build_wheels.txt").read_text().splitlines()
        if line.startswith("pglast ")
    }
    assert pinned == {PGLAST_REQUIREMENT}
    assert f'"{PGLAST_REQUIREMENT}"' in (REPO / "pyproject.toml").read_text()
