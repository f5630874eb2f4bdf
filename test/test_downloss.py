"""The down statements that lose data (downloss.py): what the build says a rollback with
`on_rollback = "revert"` would throw away. Real files read by the real formats; no database."""

from __future__ import annotations

from pathlib import Path

from herokumigrate.downloss import lossy_downs
from herokumigrate.source import load_migrations
from support import write_migrations


def test_drops_truncates_and_deletes_in_downs_are_found_and_nothing_else(tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);\n",
            "1_a.down.sql": "-- gone\nDROP TABLE IF EXISTS a;\n",
            "2_b.up.sql": "ALTER TABLE a ADD COLUMN b int, ADD CONSTRAINT c CHECK (b > 0);\n",
            "2_b.down.sql": (
                "ALTER TABLE a DROP CONSTRAINT c;\n"
                "ALTER TABLE a ALTER COLUMN b DROP DEFAULT, ALTER COLUMN b DROP NOT NULL;\n"
                "ALTER TABLE a DROP COLUMN b;\n"
            ),
            "3_c.sql": (
                "-- migrate:up\nINSERT INTO a VALUES (1);\n"
                "-- migrate:down\nDELETE FROM a WHERE id = 1;\nTRUNCATE a;\n"
                "UPDATE a SET id = 2;\nDROP INDEX a_idx;\n"
            ),
            "4_d.up.sql": "SELECT 1;\n",
        },
    )
    migrations = load_migrations(folder, tmp_path, None)

    found = [(s.migration.version.canonical, s.line, s.text) for s in lossy_downs(migrations)]

    assert found == [
        ("1", 2, "DROP TABLE IF EXISTS a;"),
        ("2", 3, "ALTER TABLE a DROP COLUMN b;"),
        ("3", 4, "DELETE FROM a WHERE id = 1;"),
        ("3", 5, "TRUNCATE a;"),
    ]
