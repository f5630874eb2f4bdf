"""The build's release-safety check, through the real bin/compile: PostgreSQL's parser (pglast's
pinned wheel, fetched into CACHE_DIR, build time only) and the lint of the files new since the
previous build.

The builds run for heroku-22 with Python 3.10 as the build python (the cp310 wheel), whose run
image has its own python3: no interpreter is bundled, which keeps each build short.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from herokumigrate.buildpack import parser, wheels

pytestmark = pytest.mark.buildpack

FIRST = {
    "1_create_users.up.sql": "CREATE TABLE users (id bigserial PRIMARY KEY, name text);\n",
    "1_create_users.down.sql": "DROP TABLE users;\n",
    "2_create_orders.sql": (
        "-- migrate:up\n"
        "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint, status text);\n"
        "CREATE INDEX orders_user ON orders (user_id); -- a table of this build: no warning\n"
        "\n-- migrate:down\nDROP TABLE orders;\n"
    ),
}
RENAME = "3_rename_name.up.sql"
INDEX = "4_orders_by_status.sql"
SECOND = {
    RENAME: "-- The old release still reads users.name.\n"
    "ALTER TABLE users RENAME COLUMN name TO full_name;\n",
    INDEX: "-- migrate:up\n\nCREATE INDEX orders_status ON orders (status);\n",
}
RENAME_WARNING = (
    f"{RENAME}: 1 error(s), 0 warning(s)\n"
    "         line 2: rename-column (error, breaks the running release): users.name"
)
INDEX_WARNING = (
    f"{INDEX}: 1 error(s), 0 warning(s)\n"
    "         line 3: index-without-concurrently (error, blocks the table): orders"
)


REPO = Path(__file__).resolve().parent.parent
PYTHON_310 = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions/3.10.13/bin/python3.10"
RUN_PATH = "/usr/local/bin:/usr/bin:/bin"


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    return probe.returncode == 0


needs_python310 = pytest.mark.skipif(not PYTHON_310.exists(), reason="needs Python 3.10")
needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare --net")


@dataclass
class Build:
    """One bin/compile run."""

    build_dir: Path
    cache_dir: Path
    result: subprocess.CompletedProcess[str]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


def compile_app(
    buildpack: Path,
    build_dir: Path,
    cache_dir: Path,
    *,
    python_dir: Path,
    config_vars: dict[str, str] | None = None,
    offline: bool = False,
) -> Build:
    """bin/compile BUILD CACHE ENV for heroku-22 as Heroku runs it (HOME=/app), with
    `python_dir/python3` first on PATH; `offline`: without any network."""
    env_dir = build_dir.parent / f"env_{build_dir.name}"
    env_dir.mkdir(exist_ok=True)
    for name, value in (config_vars or {}).items():
        (env_dir / name).write_text(value)
    argv = [str(buildpack / "bin/compile"), str(build_dir), str(cache_dir), str(env_dir)]
    result = subprocess.run(
        ["unshare", "--net", *argv] if offline else argv,
        capture_output=True,
        text=True,
        env={"HOME": "/app", "PATH": f"{python_dir}:{RUN_PATH}", "STACK": "heroku-22"},
        timeout=300,
        check=False,
    )
    return Build(build_dir, cache_dir, result)


@pytest.fixture(scope="module")
def buildpack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the buildpack as Heroku fetches it."""
    root = tmp_path_factory.mktemp("buildpack")
    for part in ("bin", "lib"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def python_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in which Python 3.10 is `python3`, to put first on PATH."""
    folder = tmp_path_factory.mktemp("python3.10")
    (folder / "python3").symlink_to(PYTHON_310)
    return folder


def write_app(root: Path, files: dict[str, str]) -> Path:
    """A fixture-like app (Procfile, db/migrations) holding `files`, in a build_<hex> folder."""
    source = root / "source"
    (source / "db/migrations").mkdir(parents=True, exist_ok=True)
    (source / "Procfile").write_text("web: bin/server\n")
    for name, text in files.items():
        (source / "db/migrations" / name).write_text(text)
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    build_dir = root / "tmp" / f"build_{secrets.token_hex(8)}"  # as Heroku names them
    shutil.move(source, build_dir)
    return build_dir


def build(
    buildpack: Path,
    python_dir: Path,
    root: Path,
    cache: Path,
    files: dict[str, str],
    **config_vars: str,
) -> Build:
    return compile_app(
        buildpack,
        write_app(root, files),
        cache,
        python_dir=python_dir,
        config_vars=config_vars,
    )


def assert_no_pglast_in_slug(result: Build) -> None:
    slug = result.build_dir / ".heroku-migrate"
    assert slug.is_dir()
    leftovers = [p for p in slug.rglob("*") if "pglast" in p.name or "pg_query" in p.name]
    assert leftovers == []
    # libpg_query is compiled into pglast's parser.cpython-*.so: no such extension either.
    assert [p.name for p in slug.rglob("parser.cpython-*")] == []


@pytest.fixture(scope="module")
def first_build(
    buildpack: Path, python_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Build:
    """The app's first build, with an empty cache (pglast is downloaded into it)."""
    root = tmp_path_factory.mktemp("first")
    return build(buildpack, python_dir, root, root / "cache", FIRST)


def cache_after_first(first: Build, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(first.cache_dir, cache, symlinks=True)
    return cache


@needs_python310
def test_first_build_parses_everything_and_counts_every_file_as_new(first_build: Build) -> None:
    assert first_build.result.returncode == 0, first_build.output
    out = first_build.result.stdout
    assert "PostgreSQL's parser: pglast 8.8, PostgreSQL 18.6 (downloaded; build time only)" in out
    assert "2 migration(s) parsed; statement boundaries agree with the release's splitter" in out
    assert "No record of a previous build in the cache: every migration counts as new" in out
    assert "Release-safety lint of 2 new migration(s): nothing found" in out
    assert "Release-safety" not in first_build.result.stderr
    assert_no_pglast_in_slug(first_build)


@needs_python310
def test_syntax_error_fails_the_build_with_file_line_and_column(
    buildpack: Path, python_dir: Path, first_build: Build, tmp_path: Path
) -> None:
    files = {**FIRST, "3_oops.up.sql": "-- broken\ncreate tabel oops (id int);\n"}
    result = build(buildpack, python_dir, tmp_path, cache_after_first(first_build, tmp_path), files)
    assert result.result.returncode == 1, result.output
    assert (
        ' !     3_oops.up.sql: line 2, column 8: syntax error at or near "tabel"'
        in result.result.stderr
    )
    assert "-- heroku-migrate:no-parse" in result.result.stderr
    assert "Internal error" not in result.output
    assert (result.build_dir / "Procfile").read_text() == "web: bin/server\n"


@needs_python310
def test_second_build_warns_about_a_rename_and_a_plain_index_and_passes(
    buildpack: Path, python_dir: Path, first_build: Build, tmp_path: Path
) -> None:
    cache = cache_after_first(first_build, tmp_path)
    second = build(buildpack, python_dir, tmp_path, cache, {**FIRST, **SECOND})
    assert second.result.returncode == 0, second.output
    out = second.result.stdout
    assert "Release-safety lint of 2 new migration(s): 2 error(s), 0 warning(s) in 2 file(s)" in out
    assert RENAME_WARNING in out
    assert INDEX_WARNING in out
    assert "    why: the release still serving reads and writes the old name" in out
    assert "    instead: CREATE INDEX CONCURRENTLY" in out
    assert " !     Release-safety lint: 2 error(s), 0 warning(s) in 2 file(s)" in (
        second.result.stderr
    )
    assert_no_pglast_in_slug(second)
    # A third build with the same cache: nothing is new any more.
    third = build(buildpack, python_dir, tmp_path, cache, {**FIRST, **SECOND})
    assert third.result.returncode == 0, third.output
    assert "Release-safety lint of 0 new migration(s): nothing found" in third.result.stdout


@needs_python310
def test_lint_error_fails_the_build_and_an_allow_comment_silences_exactly_one(
    buildpack: Path, python_dir: Path, first_build: Build, tmp_path: Path
) -> None:
    cache = cache_after_first(first_build, tmp_path)
    failed = build(
        buildpack, python_dir, tmp_path, cache, {**FIRST, **SECOND}, MIGRATE_LINT="error"
    )
    assert failed.result.returncode == 1, failed.output
    assert RENAME_WARNING in failed.result.stdout
    assert INDEX_WARNING in failed.result.stdout
    assert " !     Release-safety lint: 2 error(s) in 2 file(s), listed above" in (
        failed.result.stderr
    )
    assert "Internal error" not in failed.output

    allowed = {
        **SECOND,
        RENAME: "-- heroku-migrate:allow rename-column\n" + SECOND[RENAME],
    }
    again = build(
        buildpack, python_dir, tmp_path, cache, {**FIRST, **allowed}, MIGRATE_LINT="error"
    )
    assert again.result.returncode == 1, again.output
    assert "2 new migration(s): 1 error(s), 0 warning(s) in 1 file(s), 1 allowed by comments" in (
        again.result.stdout
    )
    assert "rename-column (error" not in again.result.stdout
    assert INDEX_WARNING in again.result.stdout

    off = build(buildpack, python_dir, tmp_path, cache, {**FIRST, **allowed}, MIGRATE_LINT="off")
    assert off.result.returncode == 0, off.output
    assert "Release-safety lint is off (MIGRATE_LINT or lint in migrate.toml)" in off.result.stdout


@needs_python310
def test_lint_error_passes_warnings_and_reads_the_older_files(
    buildpack: Path, python_dir: Path, first_build: Build, tmp_path: Path
) -> None:
    """users.name is text (an older file says so): text to varchar needs no rewrite. SET
    lock_timeout is a warning: `lint = "error"` lets the build go on."""
    newer = {
        **FIRST,
        "3_name.up.sql": "ALTER TABLE users ALTER COLUMN name TYPE varchar;\n"
        "SET lock_timeout = '2s';\n",
    }
    cache = cache_after_first(first_build, tmp_path)
    result = build(buildpack, python_dir, tmp_path, cache, newer, MIGRATE_LINT="error")
    assert result.result.returncode == 0, result.output
    assert (
        "Release-safety lint of 1 new migration(s): 0 error(s), 1 warning(s) in 1 file(s)\n"
        "       3_name.up.sql: 0 error(s), 1 warning(s)\n"
        "         line 2: set-timeout (warning, risky shape): lock_timeout\n"
    ) in result.result.stdout
    assert "The build goes on (no errors)." in result.result.stderr


@needs_python310
def test_escape_hatches_for_syntax_newer_than_the_parser(
    buildpack: Path, python_dir: Path, first_build: Build, tmp_path: Path
) -> None:
    newer = {**FIRST, "3_newer.up.sql": "-- heroku-migrate:no-parse\nCREATE FUTURE THING x;\n"}
    cache = cache_after_first(first_build, tmp_path)
    marked = build(buildpack, python_dir, tmp_path, cache, newer)
    assert marked.result.returncode == 0, marked.output
    assert "Not parsed (-- heroku-migrate:no-parse): 3_newer.up.sql" in marked.result.stdout

    unmarked = {**FIRST, "3_newer.up.sql": "CREATE FUTURE THING x;\n"}
    off = build(buildpack, python_dir, tmp_path, cache, unmarked, MIGRATE_PARSE="false")
    assert off.result.returncode == 0, off.output
    assert (
        "PostgreSQL's parser is off (MIGRATE_PARSE or parse in migrate.toml)" in off.result.stdout
    )


@needs_unshare
@needs_python310
def test_no_parser_offline_with_an_empty_cache_warns_and_builds(
    buildpack: Path, python_dir: Path, first_build: Build, tmp_path: Path
) -> None:
    cache = cache_after_first(first_build, tmp_path)
    for pglast in (cache / "heroku-migrate/wheels").glob("pglast-*"):
        pglast.unlink()
    shutil.rmtree(cache / "heroku-migrate/parser")
    result = compile_app(
        buildpack,
        write_app(tmp_path, FIRST),
        cache,
        python_dir=python_dir,
        offline=True,
    )
    assert result.result.returncode == 0, result.output
    assert "Could not download pglast-8.8-cp310" in result.result.stderr
    assert "without PostgreSQL's parser and without the release-safety lint" in (
        result.result.stderr
    )


def test_a_wheel_is_pinned_for_every_build_python() -> None:
    pins = wheels.pinned_wheels(parser.PINS_FILE)
    assert {pin.name for pin in pins} == {"pglast"}
    for minor in (10, 11, 12, 13, 14):
        (pin,) = [p for p in pins if f"-cp3{minor}-cp3{minor}-manylinux" in p.filename]
        assert "x86_64" in pin.filename
    chosen = parser.pinned_for_this_python(pins)
    assert chosen is not None
    assert f"-cp3{sys.version_info.minor}-" in chosen.filename


@needs_python310
def test_a_new_down_that_drops_data_is_said_and_warned_about_with_revert(
    buildpack: Path, python_dir: Path, first_build: Build, tmp_path: Path
) -> None:
    files = {
        **FIRST,
        "3_notes.up.sql": "CREATE TABLE notes (id bigserial PRIMARY KEY, body text);\n",
        "3_notes.down.sql": "-- the notes go\nDROP TABLE notes;\n",
    }
    revert = build(
        buildpack,
        python_dir,
        tmp_path / "revert",
        cache_after_first(first_build, tmp_path / "revert"),
        files,
        MIGRATE_ON_ROLLBACK="revert",
    )
    keep = build(
        buildpack,
        python_dir,
        tmp_path / "keep",
        cache_after_first(first_build, tmp_path / "keep"),
        files,
    )

    assert revert.result.returncode == 0, revert.output
    assert "runs 1 down statement(s) of its new migrations that drop data" in revert.result.stderr
    assert " !     3_notes.down.sql line 2: DROP TABLE notes;" in revert.result.stderr
    # The first build's files (every one new to a cold cache) are not listed.
    assert "1_create_users.down.sql" not in revert.output
    assert keep.result.returncode == 0, keep.output
    assert "drop data" not in keep.result.stderr
    assert "with MIGRATE_ON_ROLLBACK=revert a rollback would run them" in keep.result.stdout
