"""Migration sets shaped like real ones, through the real CLI on a real PostgreSQL: comment-only
ups (golang-migrate's own postgres example ships four), empty down files (large sets ship them
for irreversible data migrations), and goose files with StatementBegin/End around PL/pgSQL and
NO TRANSACTION around CREATE INDEX CONCURRENTLY.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import Server, history, run_cli, write_migrations

pytestmark = pytest.mark.db

LOREM = (
    "-- Lorem ipsum dolor sit amet, consectetur adipiscing elit. Aenean sed interdum velit, "
    "tristique iaculis justo. Pellentesque ut porttitor dolor.\n"
)

GOLANG_EXAMPLE = {
    "1085649617_create_users_table.up.sql": (
        "CREATE TABLE users (\n  user_id integer unique,\n  name    varchar(40),\n"
        "  email   varchar(40)\n);\n"
    ),
    "1085649617_create_users_table.down.sql": "DROP TABLE IF EXISTS users;\n",
    "1185749658_add_city_to_users.up.sql": "ALTER TABLE users ADD COLUMN city varchar(100);\n\n\n",
    "1185749658_add_city_to_users.down.sql": "ALTER TABLE users DROP COLUMN IF EXISTS city;\n",
    "1285849751_add_index_on_user_emails.up.sql": (
        "CREATE UNIQUE INDEX CONCURRENTLY users_email_index ON users (email);\n\n" + LOREM
    ),
    "1285849751_add_index_on_user_emails.down.sql": "DROP INDEX IF EXISTS users_email_index;\n",
    "1585849751_just_a_comment.up.sql": LOREM,
    "1685849751_another_comment.up.sql": LOREM,
    "1785849751_another_comment.up.sql": LOREM,
    "1885849751_another_comment.up.sql": LOREM,
}

GOOSE_SET = {
    "00001_accounts.sql": (
        "-- +goose Up\n"
        "CREATE TABLE accounts (id bigserial PRIMARY KEY, name text, updated_at timestamptz);\n"
        "\n"
        "-- +goose StatementBegin\n"
        "CREATE OR REPLACE FUNCTION touch() RETURNS trigger AS $$\n"
        "BEGIN\n"
        "  NEW.updated_at := now();\n"
        "  RETURN NEW;\n"
        "END;\n"
        "$$ LANGUAGE plpgsql;\n"
        "-- +goose StatementEnd\n"
        "\n"
        "CREATE TRIGGER accounts_touch BEFORE INSERT OR UPDATE ON accounts\n"
        "  FOR EACH ROW EXECUTE FUNCTION touch();\n"
        "\n"
        "-- +goose Down\n"
        "-- +goose StatementBegin\n"
        "DROP TRIGGER accounts_touch ON accounts;\n"
        "DROP FUNCTION touch();\n"
        "-- +goose StatementEnd\n"
        "DROP TABLE accounts;\n"
    ),
    "00002_accounts_name_index.sql": (
        "-- +goose NO TRANSACTION\n"
        "-- +goose Up\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_name ON accounts (name);\n"
        "\n"
        "-- +goose Down\n"
        "DROP INDEX CONCURRENTLY IF EXISTS accounts_name;\n"
    ),
    "00003_seed.sql": "-- +goose Up\nINSERT INTO accounts (name) VALUES ('ada');\n",
}


def _one(server: Server, dbname: str, text: str) -> object:
    with server.admin_conn(dbname) as conn:
        row = conn.execute(text.encode()).fetchone()
        assert row is not None
        return row[0]


def test_golang_example_with_comment_only_ups_applies_and_records_them(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, GOLANG_EXAMPLE)
    checked = run_cli(["validate"], cwd=app)
    assert checked.returncode == 0, checked.output
    assert "Validated 7 migration(s)" in checked.stdout
    first = run_cli(["up"], cwd=app, database_url=database_url)
    assert first.returncode == 0, first.output
    rows = history(pg_server, dbname)
    assert [r[0] for r in rows] == [
        1085649617,
        1185749658,
        1285849751,
        1585849751,
        1685849751,
        1785849751,
        1885849751,
    ]
    assert all(r[3] == "applied" for r in rows)
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email_index'::regclass"
    assert _one(pg_server, dbname, valid) is True
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0, again.output
    assert history(pg_server, dbname) == rows


def test_empty_down_file_reverts_by_recording_only(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(
        app,
        {
            "1_items.up.sql": "CREATE TABLE items (id int);\n",
            "1_items.down.sql": "DROP TABLE items;\n",
            "2_backfill.up.sql": "INSERT INTO items VALUES (1), (2);\n",
            "2_backfill.down.sql": "",
        },
    )
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    result = run_cli(["down", "1", "--yes"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert [r[0] for r in history(pg_server, dbname)] == [1]
    assert _one(pg_server, dbname, "SELECT count(*) FROM items") == 2  # nothing was run
    both = run_cli(["down", "1", "--yes"], cwd=app, database_url=database_url)
    assert both.returncode == 0, both.output
    assert _one(pg_server, dbname, "SELECT to_regclass('items')") is None


def test_goose_set_with_statement_blocks_and_no_transaction(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, GOOSE_SET)
    checked = run_cli(["validate"], cwd=app)
    assert checked.returncode == 0, checked.output
    assert "1 must run outside a transaction" in checked.stdout
    first = run_cli(["up"], cwd=app, database_url=database_url)
    assert first.returncode == 0, first.output
    assert "00001_accounts" in first.stdout  # the version as written
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3]
    # The PL/pgSQL function arrived whole: the trigger fills updated_at.
    stamped = "SELECT updated_at IS NOT NULL FROM accounts WHERE name = 'ada'"
    assert _one(pg_server, dbname, stamped) is True
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_name'::regclass"
    assert _one(pg_server, dbname, valid) is True
    # 00003 has no Down: goose reverts it by forgetting it, and so do we.
    seed = run_cli(["down", "1", "--yes"], cwd=app, database_url=database_url)
    assert seed.returncode == 0, seed.output
    assert _one(pg_server, dbname, "SELECT count(*) FROM accounts") == 1
    index = run_cli(["down", "1", "--yes"], cwd=app, database_url=database_url)
    assert index.returncode == 0, index.output
    assert _one(pg_server, dbname, "SELECT to_regclass('accounts_name')") is None
    assert [r[0] for r in history(pg_server, dbname)] == [1]
