"""`heroku rollback` with `on_rollback = "revert"` (docs/rollback.md): each applied migration's
down is stored with it, and the release of an older slug reverts exactly the migrations newer
than every file it has, with those stored downs, all or nothing; with `keep` nothing changes.

Each test is a real sequence of releases on a real PostgreSQL: v1's files (migrations 1-2) in
one app folder, v2's (1-4) in another, as two slugs; "rolling back" is running v1's `up` again.
The central scenario runs for every supported format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from psycopg import sql

from herokumigrate.lock import lock_key
from support import Result, Server, finish, history, read_until, rows, run_cli, spawn_cli

pytestmark = pytest.mark.db

# (up, down) of each migration; None: no down.
ACCOUNTS = (
    "CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL);\n",
    "DROP TABLE accounts;\n",
)
SEED = (
    "INSERT INTO accounts VALUES (1, 'Ann@Example.com'), (2, 'bob@example.com');\n",
    "DELETE FROM accounts WHERE id IN (1, 2);\n",
)
# v2: a new table and an added column, then a backfill whose down reverses it.
INVOICES = (
    "CREATE TABLE invoices (id int PRIMARY KEY, account_id int REFERENCES accounts);\n"
    "ALTER TABLE accounts ADD COLUMN email_lower text;\n",
    "ALTER TABLE accounts DROP COLUMN email_lower;\nDROP TABLE invoices;\n",
)
BACKFILL = (
    "UPDATE accounts SET email_lower = lower(email), email = 'v2:' || email;\n"
    "INSERT INTO invoices VALUES (10, 1);\n",
    "DELETE FROM invoices WHERE id = 10;\n"
    "UPDATE accounts SET email_lower = NULL, email = substr(email, 4) WHERE email LIKE 'v2:%';\n",
)
V1 = {1: ("accounts", *ACCOUNTS), 2: ("seed", *SEED)}
V2 = {**V1, 3: ("invoices", *INVOICES), 4: ("backfill", *BACKFILL)}

Files = dict[int, tuple[str, str, str | None]]


def _files(tool: str, migrations: Files) -> dict[str, str]:
    """The migrations as `tool` writes them (path in the folder -> content)."""
    out: dict[str, str] = {}
    for v, (name, up, down) in migrations.items():
        if tool in ("golang-migrate", "sqlx"):
            out[f"{v:04d}_{name}.up.sql"] = up
            if down is not None:
                out[f"{v:04d}_{name}.down.sql"] = down
        elif tool == "dbmate":
            out[f"{v:04d}_{name}.sql"] = f"-- migrate:up\n{up}\n-- migrate:down\n{down or ''}"
        elif tool == "goose":
            tail = f"-- +goose Down\n{down}" if down is not None else ""
            out[f"{v:05d}_{name}.sql"] = f"-- +goose Up\n{up}\n{tail}"
        elif tool == "diesel":
            out[f"2024-01-01-00000{v}_{name}/up.sql"] = up
            if down is not None:
                out[f"2024-01-01-00000{v}_{name}/down.sql"] = down
    return out


FOLDER = {"sqlx": "migrations", "diesel": "migrations"}
NATIVE = {
    "golang-migrate": "SELECT version::text || CASE WHEN dirty THEN ' dirty' ELSE '' END"
    " FROM schema_migrations",
    "dbmate": "SELECT version FROM schema_migrations ORDER BY version",
    "goose": "SELECT version_id::text FROM goose_db_version WHERE version_id <> 0 AND is_applied"
    " ORDER BY id",
    "sqlx": "SELECT version::text FROM _sqlx_migrations ORDER BY version",
    "diesel": "SELECT version FROM __diesel_schema_migrations ORDER BY version",
}
# What the tool's table says when exactly 1 and 2 are applied.
NATIVE_AT_2 = {
    "golang-migrate": ["2"],
    "dbmate": ["0001", "0002"],
    "goose": ["1", "2"],
    "sqlx": ["1", "2"],
    "diesel": ["20240101000001", "20240101000002"],
}
TOOLS = list(NATIVE)


def slug(root: Path, name: str, tool: str, migrations: Files) -> Path:
    """An app folder (a slug) holding `migrations` in `tool`'s format."""
    app = root / name
    folder = app / FOLDER.get(tool, "db/migrations")
    for path, content in _files(tool, migrations).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    return app


def release(
    app: Path, tool: str, database_url: str, on_rollback: str | None = None, *args: str
) -> Result:
    """The release phase of `app`: `heroku-migrate up` with its settings."""
    env = {"MIGRATE_TOOL": tool, "MIGRATE_PATH": FOLDER.get(tool, "db/migrations")}
    if on_rollback is not None:
        env["MIGRATE_ON_ROLLBACK"] = on_rollback
    return run_cli([*(args or ("up",))], cwd=app, database_url=database_url, env=env)


def state(server: Server, dbname: str, tool: str) -> tuple[object, ...]:
    """The schema, the user data, our history's versions and the tool's table."""
    url = server.admin_url(dbname)
    data = [rows(url, f"SELECT * FROM {t} ORDER BY 1") for t in ("accounts",)]
    if rows(url, "SELECT to_regclass('invoices')")[0][0] is not None:
        data.append(rows(url, "SELECT * FROM invoices ORDER BY 1"))
    versions = [int(str(r[0])[-1]) for r in history(server, dbname)]
    native = [str(r[0]) for r in rows(url, NATIVE[tool])]
    return server.pg_dump(dbname), data, versions, native


@pytest.mark.parametrize("tool", TOOLS)
def test_revert_on_rollback_leaves_the_database_as_if_only_v1_ever_ran(
    tool: str, pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    v1, v2 = slug(tmp_path, "v1", tool, V1), slug(tmp_path, "v2", tool, V2)
    assert release(v1, tool, database_url).returncode == 0
    deployed = release(v2, tool, database_url)
    assert deployed.returncode == 0, deployed.output
    stored = rows(
        pg_server.admin_url(dbname),
        "SELECT right(version, 1), kind FROM heroku_migrate_history_rev ORDER BY version",
    )
    assert stored == [("1", "sql"), ("2", "sql"), ("3", "sql"), ("4", "sql")]

    result = release(v1, tool, database_url, "revert")

    print(result.output)
    assert result.returncode == 0, result.output
    assert "Rolling back 2 migration(s) newer than this release's files" in result.output
    # A database that only ever saw v1, for comparison.
    only_v1 = pg_server.create_database()
    try:
        fresh = release(v1, tool, pg_server.url(only_v1))
        assert fresh.returncode == 0
        assert state(pg_server, dbname, tool) == state(pg_server, only_v1, tool)
    finally:
        pg_server.drop_database_soon(only_v1)
    _, _, versions, native = state(pg_server, dbname, tool)
    assert versions == [1, 2]
    assert native == NATIVE_AT_2[tool]
    # Deploying v2 again applies 3 and 4 again.
    again = release(v2, tool, database_url, "revert")
    assert again.returncode == 0, again.output
    assert [int(str(r[0])[-1]) for r in history(pg_server, dbname)] == [1, 2, 3, 4]


def _deployed_v2(tmp_path: Path, database_url: str, tool: str = "golang-migrate") -> Path:
    v1, v2 = slug(tmp_path, "v1", tool, V1), slug(tmp_path, "v2", tool, V2)
    assert release(v1, tool, database_url).returncode == 0
    assert release(v2, tool, database_url).returncode == 0
    return v1


@pytest.mark.parametrize("tool", TOOLS)
def test_keep_changes_nothing_and_says_that_revert_exists(
    tool: str, pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    v1 = _deployed_v2(tmp_path, database_url, tool)
    before = state(pg_server, dbname, tool)

    result = release(v1, tool, database_url)  # keep: the default

    assert result.returncode == 0, result.output
    assert state(pg_server, dbname, tool) == before
    assert "they stay applied" in result.output
    assert "MIGRATE_ON_ROLLBACK=revert" in result.output
    explicit = release(v1, tool, database_url, "keep")
    assert explicit.returncode == 0
    assert state(pg_server, dbname, tool) == before


@pytest.mark.parametrize("tool", TOOLS)
def test_a_missing_stored_down_reverts_nothing_and_fails_the_release(
    tool: str, pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    v1 = _deployed_v2(tmp_path, database_url, tool)
    # As if 3 was applied by a runner from before downs were stored.
    with pg_server.admin_conn(dbname) as conn:
        conn.execute("DELETE FROM heroku_migrate_history_rev WHERE right(version, 1) = '3'")
    before = state(pg_server, dbname, tool)

    result = release(v1, tool, database_url, "revert")

    print(result.output)
    assert result.returncode == 2, result.output
    assert state(pg_server, dbname, tool) == before
    assert "3_invoices: no stored down" in result.stderr
    assert "4_backfill" not in result.stderr  # it has one: not listed as blocking
    goal = {"goose": "00002", "diesel": "2024-01-01-000002"}.get(tool, "0002")
    assert f"`heroku run heroku-migrate force {goal}`" in result.stderr
    assert "MIGRATE_ON_ROLLBACK=keep" in result.stderr
    # The fix it gives works: the downs by hand, `force` on the running release (v2's files),
    # then the rollback's release again.
    with pg_server.admin_conn(dbname) as conn:
        conn.execute((BACKFILL[1] + INVOICES[1]).encode())
    forced = release(tmp_path / "v2", tool, database_url, None, "force", goal)
    assert forced.returncode == 0, forced.output
    retried = release(v1, tool, database_url, "revert")
    assert retried.returncode == 0, retried.output
    _, _, versions, native = state(pg_server, dbname, tool)
    assert (versions, native) == ([1, 2], NATIVE_AT_2[tool])


def test_a_migration_without_down_reverts_nothing_and_fails_the_release(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    tool = "golang-migrate"
    v1 = slug(tmp_path, "v1", tool, V1)
    v2 = slug(tmp_path, "v2", tool, {**V2, 4: ("backfill", BACKFILL[0], None)})
    assert release(v1, tool, database_url).returncode == 0
    assert release(v2, tool, database_url).returncode == 0
    assert rows(
        pg_server.admin_url(dbname),
        "SELECT kind, down_sql FROM heroku_migrate_history_rev WHERE version = '4'",
    ) == [("none", None)]
    before = state(pg_server, dbname, tool)

    result = release(v1, tool, database_url, "revert")

    assert result.returncode == 2, result.output
    assert "4_backfill: has no down migration" in result.stderr
    assert state(pg_server, dbname, tool) == before


@pytest.mark.parametrize("tool", TOOLS)
def test_a_failing_stored_down_reverts_nothing_and_fails_the_release(
    tool: str, pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    v1 = slug(tmp_path, "v1", tool, V1)
    broken = ("invoices", INVOICES[0], "DROP TABLE invoices;\nDROP TABLE no_such_table;\n")
    v2 = slug(tmp_path, "v2", tool, {**V2, 3: broken})
    assert release(v1, tool, database_url).returncode == 0
    assert release(v2, tool, database_url).returncode == 0
    before = state(pg_server, dbname, tool)

    result = release(v1, tool, database_url, "revert")

    print(result.output)
    assert result.returncode == 1, result.output
    assert "no_such_table" in result.stderr
    assert "Nothing was reverted" in result.stderr
    # 4's down ran before 3's failed: rolled back with it.
    assert state(pg_server, dbname, tool) == before


def test_older_unknown_versions_are_never_reverted(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    tool = "golang-migrate"
    # v2 has 1-4; the rolled-back slug has 1, 2 and 4 (3 was a branch merged later, say).
    v2 = slug(tmp_path, "v2", tool, V2)
    assert release(v2, tool, database_url).returncode == 0
    older = slug(tmp_path, "older", tool, {1: V2[1], 2: V2[2], 4: V2[4]})

    result = release(older, tool, database_url, "revert")

    assert result.returncode == 0, result.output
    assert "Rolling back" not in result.output
    assert [int(str(r[0])) for r in history(pg_server, dbname)] == [1, 2, 3, 4]
    assert "3" in result.output  # warned about, left applied


def test_plan_on_the_old_code_lists_what_revert_would_undo_and_its_locks(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    v1 = _deployed_v2(tmp_path, database_url)
    before = state(pg_server, dbname, "golang-migrate")

    for setting in ("keep", "revert"):
        result = release(v1, "golang-migrate", database_url, setting, "plan")
        print(result.output)
        out = result.output
        assert result.returncode == 0, out
        assert "would revert 0004_backfill" in out
        assert "would revert 0003_invoices" in out
        assert out.index("0004_backfill") < out.index("0003_invoices")  # newest first
        assert "0003_invoices:\n         ACCESS EXCLUSIVE on public.accounts" in out
        assert state(pg_server, dbname, "golang-migrate") == before
    as_json = release(v1, "golang-migrate", database_url, "revert", "plan", "--json")
    assert as_json.returncode == 0, as_json.output
    reverts = json.loads(as_json.stdout)["reverts"]
    assert [r["version"] for r in reverts] == [4, 3]
    assert {"mode": "ACCESS EXCLUSIVE", "relation": "public.accounts"} in reverts[1]["locks"]


def test_a_rollback_and_a_deploy_at_once_are_serialized_by_the_lock(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    tool = "golang-migrate"
    v1 = _deployed_v2(tmp_path, database_url)
    notes = (
        "notes",
        "ALTER TABLE invoices ADD COLUMN note text;\n",
        "ALTER TABLE invoices DROP COLUMN note;\n",
    )
    v3 = slug(tmp_path, "v3", tool, {**V2, 5: notes})
    env = {"MIGRATE_TOOL": tool, "MIGRATE_LOCK_WAIT": "600"}
    holder = pg_server.admin_conn(dbname)
    holder.execute(sql.SQL("SELECT pg_advisory_lock({})").format(sql.Literal(lock_key(dbname))))
    try:
        rollback = spawn_cli(
            ["up"], cwd=v1, database_url=database_url, env={**env, "MIGRATE_ON_ROLLBACK": "revert"}
        )
        deploy = spawn_cli(["up"], cwd=v3, database_url=database_url, env=env)
        read_until(rollback, "Waiting for the migration lock", 120, stream="stdout")
        read_until(deploy, "Waiting for the migration lock", 120, stream="stdout")
        assert [int(str(r[0])) for r in history(pg_server, dbname)] == [1, 2, 3, 4]
    finally:
        holder.close()
    results = [finish(rollback), finish(deploy)]

    assert [r.returncode for r in results] == [0, 0], [r.output for r in results]
    versions = [int(str(r[0])) for r in history(pg_server, dbname)]
    url = pg_server.admin_url(dbname)
    invoices = rows(url, "SELECT to_regclass('invoices')")[0][0] is not None
    note = (
        rows(
            url,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('invoices')"
            " AND attname = 'note'",
        )[0][0]
        if invoices
        else 0
    )
    # One ran after the other: the deploy then the rollback (back to 2), or the rollback then
    # the deploy (3-5 applied again); the schema says exactly what the history says.
    assert versions in ([1, 2], [1, 2, 3, 4, 5]), versions
    assert invoices == (versions == [1, 2, 3, 4, 5])
    assert note == (1 if invoices else 0)


INDEX = (
    "CREATE INDEX CONCURRENTLY accounts_email ON accounts (email);\n",
    "DROP INDEX CONCURRENTLY accounts_email;\n",
)


def test_a_down_outside_a_transaction_is_compensated_when_a_later_down_fails(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    tool = "golang-migrate"
    v1 = slug(tmp_path, "v1", tool, V1)
    broken = ("invoices", INVOICES[0], "DROP TABLE invoices;\nDROP TABLE no_such_table;\n")
    v2 = slug(tmp_path, "v2", tool, {**V1, 3: broken, 4: ("email_index", *INDEX)})
    assert release(v1, tool, database_url).returncode == 0
    assert release(v2, tool, database_url).returncode == 0
    before = state(pg_server, dbname, tool)

    result = release(v1, tool, database_url, "revert")

    print(result.output)
    assert result.returncode == 1, result.output
    # 4's DROP INDEX CONCURRENTLY committed on its own, then 3's down failed: 4 is applied
    # again from its stored up, so the database is as before the release.
    assert "reverted 0004_email_index" in result.output
    assert "applied 0004_email_index again" in result.stderr
    assert state(pg_server, dbname, tool) == before
    assert rows(pg_server.admin_url(dbname), "SELECT to_regclass('accounts_email')::text") == [
        ("accounts_email",)
    ]


def test_a_down_that_fails_after_its_own_statement_outside_a_transaction_says_what_is_left(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    tool = "golang-migrate"
    v1 = slug(tmp_path, "v1", tool, V1)
    half = ("email_index", INDEX[0], INDEX[1] + "DROP TABLE no_such_table;\n")
    v2 = slug(tmp_path, "v2", tool, {**V2, 5: half})
    assert release(v1, tool, database_url).returncode == 0
    assert release(v2, tool, database_url).returncode == 0

    result = release(v1, tool, database_url, "revert")

    print(result.output)
    assert result.returncode == 1, result.output
    assert "STATE LEFT: 0005_email_index" in result.stderr
    # Nothing else was reverted; 5 stays recorded (its index is gone: the message says so).
    assert [int(str(r[0])) for r in history(pg_server, dbname)] == [1, 2, 3, 4, 5]


def test_status_shows_which_applied_migrations_have_no_stored_down(
    pg_server: Server, dbname: str, database_url: str, tmp_path: Path
) -> None:
    v1 = _deployed_v2(tmp_path, database_url)
    v2 = tmp_path / "v2"
    with pg_server.admin_conn(dbname) as conn:  # as if applied before downs were stored
        conn.execute("DELETE FROM heroku_migrate_history_rev WHERE version IN ('2', '3')")

    old = release(v1, "golang-migrate", database_url, None, "status")
    new = release(v2, "golang-migrate", database_url, None, "status", "--json")

    print(old.output)
    assert old.returncode == 0, old.output
    assert "3 invoices, no stored down, 4 backfill" in old.stderr
    assert "applied, no stored down" in old.stdout  # 2
    assert new.returncode == 0, new.output
    downs = [m["stored_down"] for m in json.loads(new.stdout)["migrations"]]
    assert downs == ["sql", "no stored down", "no stored down", "sql"]


def test_a_big_up_is_not_stored_and_only_a_revert_that_commits_in_parts_needs_it(
    pg_server: Server,
    dbname: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import herokumigrate.downstore

    monkeypatch.setattr(herokumigrate.downstore, "MAX_STORED_UP", 64)  # only 5's up is shorter
    tool = "golang-migrate"
    v1 = slug(tmp_path, "v1", tool, V1)
    in_parts = slug(tmp_path, "v2", tool, {**V2, 5: ("email_index", *INDEX)})
    assert release(v1, tool, database_url).returncode == 0
    assert release(in_parts, tool, database_url).returncode == 0
    url = pg_server.admin_url(dbname)
    stored = "SELECT version, up_sql IS NULL FROM heroku_migrate_history_rev ORDER BY version"
    assert rows(url, stored) == [("1", True), ("2", True), ("3", True), ("4", True), ("5", False)]
    before = state(pg_server, dbname, tool)

    refused = release(v1, tool, database_url, "revert")

    assert refused.returncode == 2, refused.output
    assert "0003_invoices: its up is over" in refused.stderr
    assert state(pg_server, dbname, tool) == before
    # Without the down outside a transaction, one transaction does it: no up is needed.
    older = slug(tmp_path, "v1b", tool, {**V1, 3: V2[3], 4: V2[4]})
    assert release(older, tool, database_url, "revert").returncode == 0
    assert [int(str(r[0])) for r in history(pg_server, dbname)] == [1, 2, 3, 4]
    assert release(v1, tool, database_url, "revert").returncode == 0
    assert [int(str(r[0])) for r in history(pg_server, dbname)] == [1, 2]
