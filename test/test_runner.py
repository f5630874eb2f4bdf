"""The runner's promises, checked with the real CLI on a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import (
    EXAMPLE,
    Server,
    cli_env,
    copy_example,
    finish,
    history,
    rows,
    run_cli,
    snapshot,
    spawn_cli,
    tables,
    up,
    wait_until,
    write_migrations,
)

pytestmark = pytest.mark.db


def test_example_applies_then_second_up_is_a_noop(
    pg_server: Server, dbname: str, database_url: str
) -> None:
    first = run_cli(["up"], cwd=EXAMPLE, database_url=database_url)
    assert first.returncode == 0, first.output
    assert "Applying 5 migration(s)" in first.stdout
    assert "20260104100000_orders_by_status_index" in first.stdout
    recorded = history(pg_server, dbname)
    assert [r[0] for r in recorded] == [
        20260101120000,
        20260102090000,
        20260103150000,
        20260104100000,
        20260105080000,
    ]
    assert all(r[3] == "applied" for r in recorded)
    before = snapshot(pg_server, dbname)
    second = run_cli(["up"], cwd=EXAMPLE, database_url=database_url)
    assert second.returncode == 0, second.output
    assert "Database is up to date (5 migration(s) applied, none pending)" in second.stdout
    assert snapshot(pg_server, dbname) == before
    # The concurrent index was really built, and is valid.
    valid = rows(
        pg_server.admin_url(dbname),
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'orders_user_status_idx'",
    )
    assert valid == [(True,)]


def test_history_records_checksum_and_duration(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # The checksum is the sha256 of the up file's bytes (the up section for dbmate files).
    files = {
        "1_create_users.up.sql": "CREATE TABLE users (id int);\n-- é: UTF-8 is hashed as bytes\n",
        "2_slow.up.sql": "SELECT pg_sleep(0.2);\n",
    }
    assert up(app, files, database_url).returncode == 0
    found = rows(
        pg_server.admin_url(dbname),
        "SELECT version, name, checksum, applied_at IS NOT NULL, duration_ms"
        " FROM heroku_migrate_history ORDER BY version",
    )
    folder = app / "db/migrations"
    assert [r[:2] for r in found] == [(1, "create_users"), (2, "slow")]
    for row, name in zip(found, files, strict=True):
        assert row[2] == hashlib.sha256((folder / name).read_bytes()).hexdigest(), name
        assert row[3] is True
    assert float(str(found[0][4])) > 0, found[0]
    assert float(str(found[1][4])) >= 200, "pg_sleep(0.2) took at least 200 ms"


def test_failed_release_leaves_schema_unchanged(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    assert up(app, {"1_base.up.sql": "CREATE TABLE base (id int);\n"}, database_url).returncode == 0
    before = snapshot(pg_server, dbname)
    write_migrations(
        app,
        {
            "2_good.up.sql": "CREATE TABLE good (id int);\nALTER TABLE base ADD COLUMN x int;\n",
            "3_bad.up.sql": "CREATE TABLE fine (id int);\n\n-- the next line fails\n"
            "INSERT INTO missing_table VALUES (1);\n",
        },
    )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1, result.output
    assert "3_bad.up.sql: line 4: ERROR 42P01" in result.stderr
    assert 'relation "missing_table" does not exist' in result.stderr
    assert "the database is unchanged" in result.stderr
    assert snapshot(pg_server, dbname) == before


def test_syntax_error_line_points_inside_the_statement(database_url: str, app: Path) -> None:
    write_migrations(
        app,
        {
            "1_x.up.sql": "CREATE TABLE a (id int);\n"
            "CREATE TABLE b (\n  id int,\n  oops oops oops\n);\n"
        },
    )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1
    assert "1_x.up.sql: line 4: ERROR 42601" in result.stderr, result.stderr


def test_dbmate_section_lines_are_file_lines(database_url: str, app: Path) -> None:
    write_migrations(
        app,
        {
            "5_d.sql": "-- migrate:up\nCREATE TABLE a (id int);\nSELECT * FROM nope;\n"
            "-- migrate:down\nDROP TABLE a;\n"
        },
    )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1
    assert "5_d.sql: line 3: ERROR 42P01" in result.stderr


def test_golang_migrate_state_is_adopted_and_kept_in_sync(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(
        app,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);",
            "2_b.up.sql": "CREATE TABLE b (id int);",
            "3_c.up.sql": "CREATE TABLE c (id int);",
        },
    )
    # As golang-migrate leaves it after applying 1 and 2.
    query_sql = (
        "CREATE TABLE a (id int); CREATE TABLE b (id int);"
        " CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);"
        " INSERT INTO schema_migrations VALUES (2, false);"
        " GRANT ALL ON ALL TABLES IN SCHEMA public TO hm_tester;"
        " ALTER TABLE schema_migrations OWNER TO hm_tester;"
    )
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(query_sql.encode())
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "Adopted 2 migration(s) already applied by golang-migrate" in result.stdout
    assert tables(pg_server.admin_url(dbname)) == [
        "a",
        "b",
        "c",
        "heroku_migrate_history",
        "heroku_migrate_history_log",
        "heroku_migrate_history_rev",
        "schema_migrations",
    ]
    assert rows(pg_server.admin_url(dbname), "SELECT version, dirty FROM schema_migrations") == [
        (3, False)
    ]
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3]
    # Reverting keeps golang-migrate's record in step too.
    write_migrations(app, {"3_c.down.sql": "DROP TABLE c;"})
    reverted = run_cli(["down", "1", "--yes"], cwd=app, database_url=database_url)
    assert reverted.returncode == 0, reverted.output
    assert rows(pg_server.admin_url(dbname), "SELECT version, dirty FROM schema_migrations") == [
        (2, False)
    ]


def test_dirty_golang_migrate_table_stops_the_run(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(app, {"1_a.up.sql": "CREATE TABLE a (id int);"})
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(
            b"CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);"
            b" INSERT INTO schema_migrations VALUES (1, true);"
            b" ALTER TABLE schema_migrations OWNER TO hm_tester;"
        )
    before = snapshot(pg_server, dbname)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 2
    assert "dirty at version 1" in result.stderr
    assert "heroku-migrate force" in result.stderr
    assert snapshot(pg_server, dbname) == before


def test_dbmate_state_is_adopted(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    write_migrations(
        app,
        {
            "20200101000000_a.sql": "-- migrate:up\nCREATE TABLE a (id int);\n"
            "-- migrate:down\nDROP TABLE a;\n",
            "20200102000000_b.sql": "-- migrate:up\nCREATE TABLE b (id int);\n",
        },
    )
    with pg_server.admin_conn(dbname) as conn:
        conn.execute(
            b"CREATE TABLE a (id int);"
            b" CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY);"
            b" INSERT INTO schema_migrations VALUES ('20200101000000');"
            b" ALTER TABLE schema_migrations OWNER TO hm_tester; ALTER TABLE a OWNER TO hm_tester;"
        )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "Adopted 1 migration(s) already applied by dbmate" in result.stdout
    assert rows(
        pg_server.admin_url(dbname), "SELECT version FROM schema_migrations ORDER BY 1"
    ) == [
        ("20200101000000",),
        ("20200102000000",),
    ]


def test_database_ahead_of_code_succeeds_with_warning(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    files = write_migrations(
        app, {"1_a.up.sql": "CREATE TABLE a (id int);", "2_b.up.sql": "CREATE TABLE b (id int);"}
    )
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    (files / "2_b.up.sql").unlink()  # `heroku rollback`: the old slug lacks the newer file
    before = snapshot(pg_server, dbname)
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert "1 migration(s) these files do not: 2" in result.stderr
    assert "heroku rollback" in result.stderr
    assert snapshot(pg_server, dbname) == before


def test_edited_applied_migration_fails_unless_allowed(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    files = write_migrations(app, {"1_a.up.sql": "CREATE TABLE a (id int);"})
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    (files / "1_a.up.sql").write_text("CREATE TABLE a (id bigint);")
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 2
    assert "1_a.up.sql: changed after it was applied" in result.stderr
    assert "MIGRATE_ALLOW_CHANGED=true" in result.stderr
    allowed = run_cli(
        ["up"], cwd=app, database_url=database_url, env={"MIGRATE_ALLOW_CHANGED": "true"}
    )
    assert allowed.returncode == 0, allowed.output
    assert "changed since they ran: 1_a.up.sql (allowed)" in allowed.stderr


def test_dry_run_executes_then_rolls_back(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    assert up(app, {"1_a.up.sql": "CREATE TABLE a (id int);"}, database_url).returncode == 0
    write_migrations(app, {"2_b.up.sql": "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);"})
    before = snapshot(pg_server, dbname)
    for args in (["up", "--dry-run"], ["plan"]):
        result = run_cli(args, cwd=app, database_url=database_url)
        assert result.returncode == 0, result.output
        assert "Dry run: 1 migration(s) ran and were rolled back" in result.stdout
        assert snapshot(pg_server, dbname) == before
    write_migrations(app, {"3_c.up.sql": "SELECT 1/0;"})
    failing = run_cli(["plan"], cwd=app, database_url=database_url)
    assert failing.returncode == 1
    assert "3_c.up.sql: line 1: ERROR 22012" in failing.stderr
    assert snapshot(pg_server, dbname) == before


def test_transaction_control_in_files_cannot_break_atomicity(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # golang-migrate users often wrap files in BEGIN/COMMIT; the runner owns the transaction.
    write_migrations(
        app,
        {
            "1_a.up.sql": "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n",
            "2_b.up.sql": "BEGIN;\nCREATE TABLE b (id int);\nSELECT 1/0;\nCOMMIT;\n",
        },
    )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1
    assert tables(pg_server.admin_url(dbname)) == []
    assert history(pg_server, dbname) == []


def test_down_requires_yes_then_reverts_newest_first(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    app = copy_example(tmp_path / "ex")
    assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
    refused = run_cli(["down", "2"], cwd=app, database_url=database_url)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    result = run_cli(["down", "2", "--yes"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert result.stdout.index("20260105080000") < result.stdout.index("20260104100000")
    assert [r[0] for r in history(pg_server, dbname)] == [
        20260101120000,
        20260102090000,
        20260103150000,
    ]
    cols = rows(
        pg_server.admin_url(dbname),
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'users' AND column_name = 'plan'",
    )
    assert cols == []
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0
    assert "Applying 2 migration(s)" in again.stdout


def test_goto_and_force(pg_server: Server, dbname: str, database_url: str, tmp_path: Path) -> None:
    app = copy_example(tmp_path / "ex")
    result = run_cli(["goto", "20260102090000"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert [r[0] for r in history(pg_server, dbname)] == [20260101120000, 20260102090000]
    assert run_cli(["goto", "20260101120000"], cwd=app, database_url=database_url).returncode == 2
    down = run_cli(["goto", "20260101120000", "--yes"], cwd=app, database_url=database_url)
    assert down.returncode == 0, down.output
    assert [r[0] for r in history(pg_server, dbname)] == [20260101120000]
    forced = run_cli(["force", "20260103150000"], cwd=app, database_url=database_url)
    assert forced.returncode == 0, forced.output
    assert [r[0] for r in history(pg_server, dbname)] == [
        20260101120000,
        20260102090000,
        20260103150000,
    ]
    assert "orders" not in tables(pg_server.admin_url(dbname))  # force runs no SQL
    assert run_cli(["force", "999"], cwd=app, database_url=database_url).returncode == 2


def test_status_human_and_json(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    app = copy_example(tmp_path / "ex")
    assert run_cli(["goto", "20260102090000"], cwd=app, database_url=database_url).returncode == 0
    human = run_cli(["status"], cwd=app, database_url=database_url)
    assert human.returncode == 0
    assert "3 pending" in human.stdout
    machine = run_cli(["status", "--json"], cwd=app, database_url=database_url)
    doc = json.loads(machine.stdout)
    assert doc["pending"] == [20260103150000, 20260104100000, 20260105080000]
    assert [m["status"] for m in doc["migrations"]][:2] == ["applied", "applied"]


# Migration 2 waits for an advisory lock the test holds; meanwhile the test looks from its own
# session at what migration 1 left.
GATE = 72_314_001
GATED = {
    "1_first.up.sql": "CREATE TABLE first_table (id int);\n",
    "2_gated.up.sql": "CREATE TABLE gated_table (id int);\n"
    f"SELECT pg_advisory_xact_lock({GATE});\n",
    "3_last.up.sql": "CREATE TABLE last_table (id int);\n",
}


@pytest.mark.parametrize("mode", ["migration", "release"])
def test_per_migration_transaction_mode_applies_each_in_its_own(
    pg_server: Server, dbname: str, database_url: str, app: Path, mode: str
) -> None:
    write_migrations(app, GATED)
    gate = pg_server.admin_conn(dbname)
    gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
    env = {"MIGRATE_TRANSACTION": mode, "MIGRATE_LOCK_TIMEOUT": "600"}
    proc = spawn_cli(["up"], cwd=app, database_url=database_url, env=env)
    try:

        def gated() -> bool:
            return bool(
                rows(
                    gate,
                    "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND l.locktype = 'advisory' AND l.objid = %s"
                    " AND a.application_name = 'heroku-migrate'",
                    (GATE,),
                )
            )

        wait_until(gated, 60, "migration 2 to wait for the test's advisory lock")
        seen = set(tables(gate))
        recorded = [(r[0], r[3]) for r in history(pg_server, dbname)]
        gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        result = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        gate.close()
    assert result.returncode == 0, result.output
    assert "gated_table" not in seen, "migration 2 is not committed while it runs"
    if mode == "migration":
        assert "one transaction per migration" in result.stdout
        # Migration 1 is committed, and recorded, before migration 2 has finished.
        assert "first_table" in seen
        assert recorded == [(1, "applied")]
    else:
        assert "(one transaction)" in result.stdout
        assert "first_table" not in seen
        assert recorded == []
    assert {"first_table", "gated_table", "last_table"} <= set(tables(pg_server.admin_url(dbname)))
    assert [(r[0], r[3]) for r in history(pg_server, dbname)] == [
        (1, "applied"),
        (2, "applied"),
        (3, "applied"),
    ]


def test_history_table_name_and_schema_are_configurable(
    pg_server: Server, dbname: str, database_url: str
) -> None:
    env = {"MIGRATE_HISTORY_SCHEMA": "meta", "MIGRATE_HISTORY_TABLE": "applied"}
    assert run_cli(["up"], cwd=EXAMPLE, database_url=database_url, env=env).returncode == 0
    assert len(history(pg_server, dbname, "meta.applied")) == 5
    assert history(pg_server, dbname) == []


def test_database_url_var_is_configurable(
    pg_server: Server, dbname: str, database_url: str
) -> None:
    env = {
        "HEROKU_POSTGRESQL_RED_URL": database_url,
        "MIGRATE_DATABASE_URL_VAR": "HEROKU_POSTGRESQL_RED_URL",
    }
    result = run_cli(["up"], cwd=EXAMPLE, env=env)
    assert result.returncode == 0, result.output
    assert len(history(pg_server, dbname)) == 5


def test_new_creates_both_files(app: Path) -> None:
    result = run_cli(["new", "Add users email index"], cwd=app)
    assert result.returncode == 0, result.output
    names = sorted(p.name for p in (app / "db/migrations").iterdir())
    assert len(names) == 2
    assert names[0].endswith("_add_users_email_index.down.sql")
    assert names[1].endswith("_add_users_email_index.up.sql")
    assert len(names[0].split("_")[0]) == 14


def test_validate_needs_no_database(tmp_path: Path) -> None:
    result = run_cli(
        ["validate"], cwd=EXAMPLE, env={"DATABASE_URL": "postgres://nobody@203.0.113.1/x"}
    )
    assert result.returncode == 0
    assert "Validated 5 migration(s)" in result.stdout
    assert "1 must run outside a transaction" in result.stdout


def test_error_without_position_is_pinpointed_to_its_line(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    # A unique violation carries no position: the runner finds the statement by a rolled-back
    # replay, so the line is still exact.
    write_migrations(
        app,
        {
            "1_a.up.sql": "CREATE TABLE a (id int PRIMARY KEY);\n",
            "2_b.up.sql": "INSERT INTO a VALUES (1);\n\nINSERT INTO a VALUES (2);\n"
            "INSERT INTO a VALUES (1);\nINSERT INTO a VALUES (3);\n",
        },
    )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 1
    assert "2_b.up.sql: line 4: ERROR 23505" in result.stderr, result.stderr
    assert "(Key (id)=(1) already exists.)" in result.stderr
    assert tables(pg_server.admin_url(dbname)) == []


def test_validate_and_a_no_op_release_import_only_what_they_need(
    app: Path, database_url: str
) -> None:
    """`validate` runs in the build, which need not have psycopg; a release with nothing to do
    stays out of the planning and applying code."""
    assert up(app, {"1_a.up.sql": "CREATE TABLE a (id int);"}, database_url).returncode == 0
    probe = (
        "import sys; from herokumigrate.cli import main; code = main([sys.argv[1]]); "
        "print(code, sorted(m for m in sys.modules if m.startswith(('psycopg', 'herokumigrate.'))))"
    )
    env = cli_env(database_url)
    checked = subprocess.run(
        [sys.executable, "-c", probe, "validate"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    loaded = checked.stdout.splitlines()[-1]
    assert loaded.startswith("0 ['herokumigrate."), checked.stdout + checked.stderr
    assert "psycopg" not in loaded
    released = subprocess.run(
        [sys.executable, "-c", probe, "up"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Database is up to date" in released.stdout, released.stdout + released.stderr
    loaded = released.stdout.splitlines()[-1]
    assert loaded.startswith("0 "), loaded
    for module in ("plan", "apply", "compensate", "revert", "statements", "sqllex", "sqlsplit"):
        assert f"herokumigrate.{module}'" not in loaded, loaded


def test_a_pending_migration_older_than_the_newest_applied_is_refused_unless_out_of_order_apply(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    first = up(app, {"1_a.up.sql": "CREATE TABLE a (id int);", "3_c.up.sql": "CREATE TABLE c ();"},
               database_url)  # fmt: skip
    assert first.returncode == 0, first.output
    write_migrations(app, {"2_b.up.sql": "CREATE TABLE b (id int);"})  # a branch merged late
    before = snapshot(pg_server, dbname)

    refused = run_cli(["up"], cwd=app, database_url=database_url)
    assert refused.returncode == 2, refused.output
    assert "older than the newest applied one (3): 2_b" in refused.stderr, refused.output
    assert "MIGRATE_OUT_OF_ORDER=apply" in refused.stderr, refused.output
    assert "Nothing to do" not in refused.output, refused.output
    assert snapshot(pg_server, dbname) == before

    applied = run_cli(["up", "--out-of-order", "apply"], cwd=app, database_url=database_url)
    assert applied.returncode == 0, applied.output
    assert "older than the newest applied one: 2_b" in applied.stderr, applied.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3]
