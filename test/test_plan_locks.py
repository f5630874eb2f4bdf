"""`plan` shows the locks each pending migration takes, observed in the rolled-back
transaction, and whether it rewrote a table; `plan --json` holds the same; the database is left
exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import LIB, Server, run_cli, snapshot, up, write_migrations

# Each pending migration works on a table of its own: a lock the release's transaction holds
# already is not taken again, so it would not show under a later migration.
BASE = {
    "1_tables.up.sql": "".join(
        f"CREATE TABLE {name} (id serial PRIMARY KEY, total int);\n"
        f"INSERT INTO {name} (total) SELECT g FROM generate_series(1, 50) g;\n"
        for name in ("orders", "customers", "items", "payments", "ledger")
    ),
}
PENDING = {
    "2_token.up.sql": "ALTER TABLE orders ADD COLUMN token float DEFAULT random();\n",
    "3_note.up.sql": "ALTER TABLE customers ADD COLUMN note int;\n",
    "4_total_index.up.sql": "CREATE INDEX items_total_idx ON items (total);\n",
    "5_total_index.up.sql": "CREATE INDEX CONCURRENTLY payments_idx ON public.payments (total);\n",
    "6_backfill.up.sql": "UPDATE ledger SET total = total + 1;\n",
    "7_audit.up.sql": "CREATE TABLE audit (id bigint PRIMARY KEY);\n",
}


@pytest.fixture
def pending_app(app: Path, database_url: str) -> Path:
    """An app whose first migration is applied and the others pending."""
    assert up(app, BASE, database_url).returncode == 0
    write_migrations(app, PENDING)
    return app


def _section(stdout: str, label: str, *, lint: bool = False) -> list[str]:
    """The detail lines under `label:` in the locks block: its locks (with `lint`, its lint
    findings instead)."""
    lines = stdout.splitlines()
    start = lines.index(f"       {label}:")
    found = []
    for line in lines[start + 1 :]:
        if not line.startswith("         "):
            break
        if line.strip().startswith("lint") == lint:
            found.append(line.strip())
    return found


def test_plan_shows_the_locks_each_migration_takes(
    pending_app: Path, database_url: str, pg_server: Server, dbname: str
) -> None:
    before = snapshot(pg_server, dbname)
    result = run_cli(["plan"], cwd=pending_app, database_url=database_url)
    assert result.returncode == 0, result.output
    out = result.stdout
    # The dry run's own lines stay.
    assert "Dry run: 6 migration(s) ran and were rolled back" in out
    assert "Locks each migration takes (observed in the rolled-back transaction)" in out
    assert _section(out, "2_token")[:2] == [
        "ACCESS EXCLUSIVE on public.orders (rewrites the table)",
        "ACCESS EXCLUSIVE on index public.orders_pkey (rebuilds the index)",
    ]
    assert _section(out, "3_note") == ["ACCESS EXCLUSIVE on public.customers"]
    assert _section(out, "4_total_index") == [
        "SHARE on public.items",
        "ACCESS EXCLUSIVE on index public.items_total_idx (new: created by this release)",
    ]
    assert _section(out, "5_total_index") == [
        "would take SHARE UPDATE EXCLUSIVE on public.payments "
        "(line 1: runs outside the transaction; not observed)"
    ]
    assert _section(out, "6_backfill") == [
        "ROW EXCLUSIVE on public.ledger",
        "ROW EXCLUSIVE on index public.ledger_pkey",
    ]
    audit = _section(out, "7_audit")
    assert "ACCESS EXCLUSIVE on public.audit (new: created by this release)" in audit
    assert all(line.endswith("(new: created by this release)") for line in audit)
    assert snapshot(pg_server, dbname) == before


def test_plan_json_holds_the_same(
    pending_app: Path, database_url: str, pg_server: Server, dbname: str
) -> None:
    before = snapshot(pg_server, dbname)
    for args in (["plan", "--json"], ["up", "--dry-run", "--json"]):
        result = run_cli(args, cwd=pending_app, database_url=database_url)
        assert result.returncode == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["result"] == "ok"
        assert doc["error"] is None
        by_version = {m["version"]: m for m in doc["migrations"]}
        assert sorted(by_version) == [2, 3, 4, 5, 6, 7]
        token = by_version[2]
        assert token["name"] == "token"
        assert token["file"].endswith("2_token.up.sql")
        assert token["outcome"] == "ran"
        assert token["rewrites"] == ["public.orders", "public.orders_pkey"]
        assert {
            "mode": "ACCESS EXCLUSIVE",
            "relation": "public.orders",
            "kind": "table",
            "new": False,
            "observed": True,
            "rewrites": True,
            "held_before": False,
            "line": None,
        } in token["locks"]
        assert by_version[3]["rewrites"] == []
        assert [(lock["mode"], lock["relation"]) for lock in by_version[3]["locks"]] == [
            ("ACCESS EXCLUSIVE", "public.customers")
        ]
        assert by_version[4]["locks"][0]["mode"] == "SHARE"
        assert by_version[4]["locks"][0]["relation"] == "public.items"
        assert by_version[5]["locks"] == [
            {
                "mode": "SHARE UPDATE EXCLUSIVE",
                "relation": "public.payments",
                "kind": "table",
                "new": False,
                "observed": False,
                "rewrites": False,
                "held_before": False,
                "line": 1,
            }
        ]
        assert by_version[6]["locks"][0] == {
            "mode": "ROW EXCLUSIVE",
            "relation": "public.ledger",
            "kind": "table",
            "new": False,
            "observed": True,
            "rewrites": False,
            "held_before": False,
            "line": None,
        }
        audit = by_version[7]["locks"]
        assert all(lock["new"] for lock in audit)
        assert "Dry run of 6 migration(s)" in result.stderr  # progress goes to stderr
    assert snapshot(pg_server, dbname) == before


def test_plan_json_reports_a_failed_rehearsal(
    pending_app: Path, database_url: str, pg_server: Server, dbname: str
) -> None:
    write_migrations(pending_app, {"8_broken.up.sql": "ALTER TABLE nowhere ADD COLUMN x int;\n"})
    before = snapshot(pg_server, dbname)
    result = run_cli(["plan", "--json"], cwd=pending_app, database_url=database_url)
    assert result.returncode == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["result"] == "failed"
    assert "8_broken.up.sql" in doc["error"]["message"]
    outcomes = {m["version"]: m["outcome"] for m in doc["migrations"]}
    assert outcomes == {2: "ran", 3: "ran", 4: "ran", 5: "ran", 6: "ran", 7: "ran", 8: "failed"}
    assert "8_broken.up.sql" in result.stderr
    assert snapshot(pg_server, dbname) == before


def test_up_json_without_dry_run_is_bad_input(pending_app: Path, database_url: str) -> None:
    result = run_cli(["up", "--json"], cwd=pending_app, database_url=database_url)
    assert result.returncode == 2
    assert "plan --json" in result.stderr


def test_plan_lints_exactly_the_pending_migrations(pending_app: Path, database_url: str) -> None:
    """Tables of applied migrations count as existing (the database says so); a table the
    pending ones create is exempt. Needs pglast (the dev venv has it; the slug never does)."""
    pytest.importorskip("pglast")
    write_migrations(pending_app, {"8_audit_index.up.sql": "CREATE INDEX ON audit (id);\n"})
    result = run_cli(["plan"], cwd=pending_app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert _section(result.stdout, "4_total_index", lint=True) == [
        "lint index-without-concurrently: line 1: items: CREATE INDEX blocks every write to the "
        "table until the index is built; instead: CREATE INDEX CONCURRENTLY, alone in its "
        "migration (it runs outside the transaction)"
    ]
    assert [line.split(":")[0] for line in _section(result.stdout, "2_token", lint=True)] == [
        "lint volatile-default"
    ]
    assert _section(result.stdout, "8_audit_index", lint=True) == []
    assert _section(result.stdout, "6_backfill", lint=True) == []
    # The applied migration is not linted again.
    assert "1_tables" not in result.stdout

    doc = json.loads(run_cli(["plan", "--json"], cwd=pending_app, database_url=database_url).stdout)
    assert doc["lint"] == "ran"
    lint = {m["version"]: [f["rule"] for f in m["lint"]] for m in doc["migrations"]}
    assert lint == {
        2: ["volatile-default"],
        3: [],
        4: ["index-without-concurrently"],
        5: [],
        6: [],
        7: [],
        8: [],
    }
    finding = doc["migrations"][2]["lint"][0]
    assert (finding["line"], finding["subject"], finding["category"]) == (
        1,
        "items",
        "blocks the table",
    )


def test_plan_reads_the_applied_migrations_for_what_they_created(
    app: Path, database_url: str
) -> None:
    """The applied file says notes.body is varchar(10): widening it to text rewrites nothing,
    as the rehearsal observes, and the lint agrees; its CHECK proves email NOT NULL."""
    pytest.importorskip("pglast")
    applied = {
        "1_notes.up.sql": "CREATE TABLE notes (id int, body varchar(10), email text, "
        "CONSTRAINT notes_email_nn CHECK (email IS NOT NULL));\n"
        "INSERT INTO notes SELECT g, 'x', 'e' FROM generate_series(1, 10) g;\n",
    }
    assert up(app, applied, database_url).returncode == 0
    write_migrations(
        app,
        {
            "2_widen.up.sql": "ALTER TABLE notes ALTER COLUMN body TYPE text;\n",
            "3_email.up.sql": "ALTER TABLE notes ALTER COLUMN email SET NOT NULL;\n",
            "4_narrow.up.sql": "ALTER TABLE notes ALTER COLUMN body TYPE varchar(5);\n",
        },
    )
    doc = json.loads(run_cli(["plan", "--json"], cwd=app, database_url=database_url).stdout)
    lint = {m["version"]: [(f["rule"], f["level"]) for f in m["lint"]] for m in doc["migrations"]}
    assert lint == {2: [], 3: [], 4: [("change-column-type", "error")]}
    rewrites = {m["version"]: bool(m["rewrites"]) for m in doc["migrations"]}
    assert rewrites == {2: False, 3: False, 4: True}


def test_plan_without_the_parser_says_so_in_one_line(
    pending_app: Path, database_url: str, tmp_path: Path
) -> None:
    """The release dyno has no pglast: plan still shows the locks, and one line about lint."""
    hidden = tmp_path / "hidden"
    (hidden / "pglast").mkdir(parents=True)
    (hidden / "pglast" / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    env = {"PYTHONPATH": f"{hidden}:{LIB}"}
    result = run_cli(["plan"], cwd=pending_app, database_url=database_url, env=env)
    assert result.returncode == 0, result.output
    assert result.stdout.count("lint") == 1
    assert "       lint: not available here (the build runs it)" in result.stdout.splitlines()
    assert _section(result.stdout, "3_note") == ["ACCESS EXCLUSIVE on public.customers"]
    doc = json.loads(
        run_cli(["plan", "--json"], cwd=pending_app, database_url=database_url, env=env).stdout
    )
    assert doc["lint"] == "not available"
    assert all(m["lint"] == [] for m in doc["migrations"])


def test_plan_text_shows_the_locks_before_a_failure(
    pending_app: Path, database_url: str, pg_server: Server, dbname: str
) -> None:
    write_migrations(pending_app, {"8_broken.up.sql": "ALTER TABLE nowhere ADD COLUMN x int;\n"})
    before = snapshot(pg_server, dbname)
    result = run_cli(["plan"], cwd=pending_app, database_url=database_url)
    assert result.returncode == 1, result.output
    assert _section(result.stdout, "3_note") == ["ACCESS EXCLUSIVE on public.customers"]
    assert "8_broken:" not in result.stdout
    assert "8_broken.up.sql: line 1: ERROR 42P01" in result.stderr
    assert "Dry run: everything was rolled back." in result.stderr
    assert snapshot(pg_server, dbname) == before


def test_plan_json_when_nothing_is_pending(app: Path, database_url: str) -> None:
    assert up(app, BASE, database_url).returncode == 0
    result = run_cli(["plan", "--json"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["result"], doc["up_to_date"], doc["migrations"]) == ("ok", True, [])


@pytest.mark.parametrize(
    ("sql", "mode", "relation", "kind"),
    [
        ("CREATE INDEX CONCURRENTLY i ON orders (a)", "SHARE UPDATE EXCLUSIVE", "orders", "table"),
        (
            'create unique index concurrently if not exists i on only app."Orders" using btree (a)',
            "SHARE UPDATE EXCLUSIVE",
            'app."Orders"',
            "table",
        ),
        ("DROP INDEX CONCURRENTLY IF EXISTS app.i", "SHARE UPDATE EXCLUSIVE", "app.i", "index"),
        ("REINDEX INDEX CONCURRENTLY i", "SHARE UPDATE EXCLUSIVE", "i", "index"),
        ("REINDEX (VERBOSE) TABLE CONCURRENTLY t", "SHARE UPDATE EXCLUSIVE", "t", "table"),
        (
            "ALTER TABLE parent DETACH PARTITION child CONCURRENTLY",
            "SHARE UPDATE EXCLUSIVE",
            "parent",
            "table",
        ),
        ("VACUUM orders, app.items (a)", "SHARE UPDATE EXCLUSIVE", "orders, app.items", "table"),
        ("VACUUM (FULL, ANALYZE) orders", "ACCESS EXCLUSIVE", "orders", "table"),
        ("VACUUM (FULL false) orders", "SHARE UPDATE EXCLUSIVE", "orders", "table"),
        ("VACUUM", "SHARE UPDATE EXCLUSIVE", "every table", "table"),
        ("CLUSTER", "ACCESS EXCLUSIVE", "every clustered table", "table"),
        ("CREATE DATABASE other", None, "", "table"),
    ],
)
def test_the_lock_a_statement_outside_the_transaction_would_take(
    sql: str, mode: str | None, relation: str, kind: str
) -> None:
    from herokumigrate.locks import expected_lock

    lock = expected_lock(sql, 3)
    assert (lock.mode.value if lock.mode else None, lock.relation, lock.kind) == (
        mode,
        relation,
        kind,
    )
    assert not lock.observed
    assert "line 3: runs outside the transaction; not observed" in lock.describe()


def test_a_rewrite_under_a_lock_already_held_is_still_shown(
    app: Path, database_url: str, pg_server: Server, dbname: str
) -> None:
    """The release's transaction keeps its locks: a later migration of the same table takes
    nothing new, but its rewrite is still seen (relfilenode changed) and said to be so."""
    assert up(app, BASE, database_url).returncode == 0
    write_migrations(
        app,
        {
            "2_a.up.sql": "ALTER TABLE orders ADD COLUMN a float DEFAULT random();\n",
            "3_b.up.sql": "ALTER TABLE orders ADD COLUMN b int;\n",
            "4_a_type.up.sql": "ALTER TABLE orders ALTER COLUMN a TYPE numeric;\n",
        },
    )
    before = snapshot(pg_server, dbname)
    result = run_cli(["plan"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output
    assert _section(result.stdout, "2_a")[0] == (
        "ACCESS EXCLUSIVE on public.orders (rewrites the table)"
    )
    assert "       3_b: takes no table lock the release does not hold already" in (
        result.stdout.splitlines()
    )
    assert _section(result.stdout, "4_a_type")[0] == (
        "ACCESS EXCLUSIVE on public.orders (rewrites the table; lock held since an earlier "
        "migration)"
    )
    doc = json.loads(run_cli(["plan", "--json"], cwd=app, database_url=database_url).stdout)
    a_type = doc["migrations"][2]
    assert a_type["rewrites"] == ["public.orders", "public.orders_pkey"]
    assert a_type["locks"][0]["held_before"] is True
    assert snapshot(pg_server, dbname) == before
