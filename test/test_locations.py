"""Where the migrations are found when no `path` is set: the folders the tools keep them in."""

from __future__ import annotations

from pathlib import Path

import pytest

from herokumigrate.buildpack.detect import applies
from herokumigrate.config import load_config
from herokumigrate.errors import BadInput
from herokumigrate.locations import candidate_folders, find_migrations_folder


def _file(app: Path, relative: str, text: str = "SELECT 1;\n") -> None:
    path = app / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_without_any_folder_the_default_is_db_migrations(tmp_path: Path) -> None:
    found = find_migrations_folder(tmp_path)
    assert (found.path, found.because) == ("db/migrations", "the default")
    config = load_config(tmp_path, {})
    assert (config.path, config.path_origin) == ("db/migrations", "the default")


def test_a_top_level_migrations_folder_is_found_and_says_why(tmp_path: Path) -> None:
    _file(tmp_path, "migrations/1_a.up.sql")
    config = load_config(tmp_path, {})
    assert config.path == "migrations"
    assert "usual folder" in config.path_origin
    assert config.migrations_dir == tmp_path / "migrations"


def test_an_explicit_path_wins_over_any_folder_found(tmp_path: Path) -> None:
    _file(tmp_path, "migrations/1_a.up.sql")
    _file(tmp_path, "sql/1_a.up.sql")
    config = load_config(tmp_path, {"MIGRATE_PATH": "sql"})
    assert (config.path, config.path_origin) == ("sql", "MIGRATE_PATH")
    (tmp_path / "migrate.toml").write_text('path = "sql"\n')
    assert load_config(tmp_path, {}).path_origin == "migrate.toml"


def test_an_empty_db_migrations_beside_a_folder_with_sql_gives_way_to_it(tmp_path: Path) -> None:
    (tmp_path / "db/migrations").mkdir(parents=True)
    _file(tmp_path, "migrations/1_a.up.sql")
    assert find_migrations_folder(tmp_path).path == "migrations"


def test_empty_folders_only_give_the_default_first(tmp_path: Path) -> None:
    (tmp_path / "db/migrations").mkdir(parents=True)
    (tmp_path / "migrations").mkdir()
    assert find_migrations_folder(tmp_path).path == "db/migrations"


def test_two_folders_holding_migrations_are_refused_naming_both(tmp_path: Path) -> None:
    _file(tmp_path, "db/migrations/1_a.up.sql")
    _file(tmp_path, "migrations/1_a.up.sql")
    with pytest.raises(BadInput) as raised:
        load_config(tmp_path, {})
    message = "\n".join(raised.value.lines())
    assert "db/migrations/" in message
    assert "migrations/ (" in message
    assert 'path = "db/migrations"' in message


def test_sql_one_folder_down_counts_as_migrations(tmp_path: Path) -> None:
    (tmp_path / "db/migrations").mkdir(parents=True)
    _file(tmp_path, "migrations/20240101_a/up.sql")
    assert find_migrations_folder(tmp_path).path == "migrations"


def test_every_candidate_is_named_once_with_the_default_first(tmp_path: Path) -> None:
    paths = [c.path for c in candidate_folders(tmp_path)]
    assert paths[0] == "db/migrations"
    assert len(paths) == len(set(paths))
    assert "migrations" in paths


@pytest.mark.parametrize(
    ("files", "applies_to_app"),
    [
        ({}, False),
        ({"migrations/1_a.up.sql": "SELECT 1;\n"}, True),
        # Another tool's JavaScript migrations in a generic folder: not ours.
        ({"migrations/20240101_create.js": "exports.up = () => {};\n"}, False),
        ({"migrate.toml": 'path = "sql"\n'}, True),
    ],
    ids=["nothing", "sql-in-migrations", "js-in-migrations", "migrate-toml"],
)
def test_detect_applies_only_where_migrations_are(
    tmp_path: Path, files: dict[str, str], applies_to_app: bool
) -> None:
    for name, text in files.items():
        _file(tmp_path, name, text)
    assert applies(tmp_path) is applies_to_app


def test_detect_applies_to_an_empty_db_migrations(tmp_path: Path) -> None:
    (tmp_path / "db/migrations").mkdir(parents=True)
    assert applies(tmp_path)
