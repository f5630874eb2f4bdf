"""Planning without a database: make_plan, check_plan and build_units on files in a temp dir
and a history state built in memory."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from herokumigrate.errors import BadInput
from herokumigrate.history import HistoryRow, HistoryState
from herokumigrate.ledger import DatabaseState
from herokumigrate.migration import Migration
from herokumigrate.native import NativeTable
from herokumigrate.native.dbmate import DbmateTable
from herokumigrate.native.golang_migrate import GolangMigrateTable
from herokumigrate.plan import build_units, check_plan, make_plan
from herokumigrate.source import load_migrations
from herokumigrate.statements import batches
from herokumigrate.versions import INTEGER, Version
from support import write_migrations


def v(number: int) -> Version:
    """The integer version `number`, as golang-migrate, dbmate and goose write them."""
    return INTEGER.of(number)


def numbers(versions: list[Version]) -> list[int | None]:
    return [version.number for version in versions]


def _load(app: Path, files: dict[str, str]) -> list[Migration]:
    folder = write_migrations(app, files)
    return load_migrations(folder, app)


def _row(m: Migration, *, progress: int | None = None, checksum: str | None = None) -> HistoryRow:
    state = HistoryState.PARTIAL if progress is not None else HistoryState.APPLIED
    at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return HistoryRow(
        m.version, m.name, checksum or m.checksum, at, 1.0, state, progress, "heroku-migrate"
    )


def _state(
    *rows: HistoryRow, native: NativeTable | None = None, exists: bool = True
) -> DatabaseState:
    return DatabaseState(exists, {r.version: r for r in rows}, native)


THREE = {
    "1_a.up.sql": "CREATE TABLE a (id int);",
    "1_a.down.sql": "DROP TABLE a;",
    "2_b.up.sql": "CREATE TABLE b (id int);",
    "3_c.up.sql": "CREATE TABLE c (id int);",
}


def test_first_contact_plans_set_up_and_every_file(app: Path) -> None:
    migrations = _load(app, THREE)
    plan = make_plan(migrations, _state(exists=False))
    assert plan.needs_setup
    assert numbers([m.version for m in plan.pending]) == [1, 2, 3]
    assert not plan.nothing_to_do


def test_applied_migrations_are_not_pending_and_unknown_ones_are_listed(app: Path) -> None:
    m1, m2, m3 = _load(app, THREE)
    unknown = HistoryRow(v(9), "gone", "x", None, 0.0, HistoryState.APPLIED, None, "heroku-migrate")
    plan = make_plan([m1, m2, m3], _state(_row(m1), _row(m2), unknown))
    assert numbers([m.version for m in plan.pending]) == [3]
    assert numbers(plan.unknown) == [9]
    assert not plan.needs_setup


def test_nothing_to_do_when_every_file_is_applied(app: Path) -> None:
    migrations = _load(app, THREE)
    plan = make_plan(migrations, _state(*(_row(m) for m in migrations)))
    assert plan.nothing_to_do


def test_a_changed_applied_file_is_detected(app: Path) -> None:
    m1, m2, m3 = _load(app, THREE)
    plan = make_plan([m1, m2, m3], _state(_row(m1, checksum="other"), _row(m2), _row(m3)))
    assert plan.changed == [m1]
    # Not nothing: with allow_changed, the accepted checksum is recorded (issue 8, item 10).
    assert not plan.nothing_to_do


def test_a_partial_migration_is_pending_with_its_progress(app: Path) -> None:
    m1, m2, m3 = _load(app, THREE)
    plan = make_plan([m1, m2, m3], _state(_row(m1), _row(m2, progress=1)))
    assert numbers([m.version for m in plan.pending]) == [2, 3]
    assert {k.number: p for k, p in plan.partial.items()} == {2: 1}


def test_a_target_limits_what_is_pending(app: Path) -> None:
    migrations = _load(app, THREE)
    plan = make_plan(migrations, _state(exists=False), target=v(2))
    assert numbers([m.version for m in plan.pending]) == [1, 2]


def test_golang_migrate_version_adopts_every_file_up_to_it(app: Path) -> None:
    migrations = _load(app, THREE)
    plan = make_plan(migrations, _state(exists=False, native=GolangMigrateTable(v(2))))
    assert numbers([m.version for m in plan.adopt]) == [1, 2]
    assert numbers([m.version for m in plan.pending]) == [3]


def test_a_dirty_golang_migrate_table_stops_the_plan(app: Path) -> None:
    migrations = _load(app, THREE)
    with pytest.raises(BadInput, match="dirty at version 2"):
        make_plan(migrations, _state(exists=False, native=GolangMigrateTable(v(2), dirty=True)))


def test_a_dirty_row_marking_our_own_partial_migration_is_resumed(app: Path) -> None:
    # A killed run of ours left 2 partial and golang-migrate's row dirty at 2, as golang-migrate
    # would have: that is no conflict, `up` finishes 2. Dirty at a version we did not leave
    # partial still stops the plan.
    migrations = _load(app, THREE)
    rows = (_row(migrations[0]), _row(migrations[1], progress=0))
    plan = make_plan(migrations, _state(*rows, native=GolangMigrateTable(v(2), dirty=True)))
    assert numbers([m.version for m in plan.pending]) == [2, 3]
    assert {k.number: p for k, p in plan.partial.items()} == {2: 0}
    assert not plan.adopt
    assert not plan.forget
    with pytest.raises(BadInput, match="dirty at version 1"):
        make_plan(migrations, _state(*rows, native=GolangMigrateTable(v(1), dirty=True)))


def test_dbmate_versions_are_adopted_one_by_one(app: Path) -> None:
    migrations = _load(app, THREE)
    plan = make_plan(migrations, _state(exists=False, native=DbmateTable(frozenset({v(1), v(3)}))))
    assert numbers([m.version for m in plan.adopt]) == [1, 3]
    assert numbers([m.version for m in plan.pending]) == [2]


def test_check_plan_refuses_a_changed_file_unless_allowed(app: Path) -> None:
    m1, m2, m3 = _load(app, THREE)
    plan = make_plan([m1, m2, m3], _state(_row(m1, checksum="other"), _row(m2)))
    with pytest.raises(BadInput, match=r"1_a\.up\.sql: changed after it was applied"):
        check_plan(plan, [m1, m2, m3], allow_changed=False)
    warnings = check_plan(plan, [m1, m2, m3], allow_changed=True)
    assert warnings == [("Applied migration(s) changed since they ran: 1_a.up.sql (allowed)",)]


def test_check_plan_warns_about_unknown_and_older_pending(app: Path) -> None:
    m1, m2, m3 = _load(app, THREE)
    unknown = [
        HistoryRow(v(n), "x", "x", None, 0.0, HistoryState.APPLIED, None, "heroku-migrate")
        for n in range(100, 112)
    ]
    plan = make_plan([m1, m2, m3], _state(_row(m1), _row(m3), *unknown))
    warnings = check_plan(plan, [m1, m2, m3], allow_changed=False)
    assert warnings[0][0] == (
        "The database has 12 migration(s) these files do not: "
        "100, 101, 102, 103, 104, 105, 106, 107, 108, 109 and 2 more"
    )
    assert warnings[1][0].startswith("Pending migration(s) older than the newest applied one:")
    assert m2.label in warnings[1][0]


def test_check_plan_is_silent_for_an_ordinary_release(app: Path) -> None:
    migrations = _load(app, THREE)
    assert check_plan(make_plan(migrations, _state()), migrations, allow_changed=False) == []


def test_one_release_transaction_holds_every_statement(app: Path) -> None:
    migrations = _load(app, THREE)
    units = build_units([(m, m.up, 0) for m in migrations], per_migration=False)
    assert len(units) == 1
    assert not units[0].autocommit
    assert [s.migration.version.number for s in units[0].steps()] == [1, 2, 3]
    assert units[0].finishes == migrations


def test_per_migration_gives_each_migration_its_own_unit(app: Path) -> None:
    migrations = _load(app, THREE)
    units = build_units([(m, m.up, 0) for m in migrations], per_migration=True)
    assert [[m.version.number for m in u.finishes] for u in units] == [[1], [2], [3]]


def test_a_concurrent_index_splits_the_transaction_where_the_file_puts_it(app: Path) -> None:
    migrations = _load(
        app,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);",
            "2_i.up.sql": "CREATE TABLE b (id int);\nCREATE INDEX CONCURRENTLY bi ON b (id);\n"
            "CREATE TABLE c (id int);",
        },
    )
    units = build_units([(m, m.up, 0) for m in migrations], per_migration=False)
    assert [u.autocommit for u in units] == [False, True, False]
    assert [s.statement.line for s in units[0].steps()] == [1, 1]
    assert units[0].finishes == [migrations[0]]
    assert units[1].alone is not None
    assert units[1].alone.index == 1
    assert units[1].finishes == []
    assert units[2].finishes == [migrations[1]]
    assert units[1].migrations() == [migrations[1]]


def test_file_transaction_control_is_skipped_and_a_resume_starts_mid_file(app: Path) -> None:
    (m,) = _load(
        app,
        {"1_a.up.sql": "BEGIN;\nCREATE TABLE a (id int);\nCREATE TABLE b (id int);\nCOMMIT;"},
    )
    units = build_units([(m, m.up, 0)], per_migration=False)
    assert [s.index for s in units[0].steps()] == [1, 2]
    resumed = build_units([(m, m.up, 2)], per_migration=False)
    assert [s.index for s in resumed[0].steps()] == [2]
    assert resumed[0].finishes == [m]


def test_a_unit_read_again_splits_its_file_again(app: Path) -> None:
    # Units keep positions, not statements: reading goes on where the previous unit stopped,
    # and reading an earlier unit again (a retry) splits the file again from its start.
    (m,) = _load(
        app,
        {
            "1_a.up.sql": "CREATE TABLE a (id int);\nCREATE INDEX CONCURRENTLY ai ON a (id);\n"
            "INSERT INTO a VALUES (1);\nCOMMIT;\nINSERT INTO a VALUES (2);\n"
        },
    )
    units = build_units([(m, m.up, 0)], per_migration=False)
    assert [u.autocommit for u in units] == [False, True, False]
    assert [(s.index, s.statement.line) for s in units[0].steps()] == [(0, 1)]
    assert [(s.index, s.statement.line) for s in units[2].steps()] == [(2, 3), (4, 5)]
    assert [s.index for s in units[0].steps()] == [0]
    assert [s.statement.text for s in units[2].steps()] == [
        "INSERT INTO a VALUES (1);",
        "INSERT INTO a VALUES (2);",
    ]
    assert units[2].finishes == [m]


def test_batches_span_migrations_and_hold_at_most_the_limit_each(app: Path) -> None:
    migrations = _load(
        app,
        {
            "1_a.up.sql": "SELECT 1;\n" * 5,
            "2_b.up.sql": "SELECT 'longer than the limit, alone';\nSELECT 2;\n",
            "3_c.up.sql": "SELECT 3;\n",
        },
    )
    (unit,) = build_units([(m, m.up, 0) for m in migrations], per_migration=False)

    def groups(**kwargs: bool) -> list[list[tuple[int, int]]]:
        found = batches(unit.steps(), 20, **kwargs)
        return [[(s.migration.version.number, s.index) for s in g] for g in found]

    # "SELECT 1;" is 9 characters: two fit in 20.
    assert groups() == [[(1, 0), (1, 1)], [(1, 2), (1, 3)], [(1, 4)], [(2, 0)], [(2, 1), (3, 0)]]
    # With a statement timeout, a round trip carries one migration's statements (runner.py).
    assert groups(per_migration=True) == [
        [(1, 0), (1, 1)],
        [(1, 2), (1, 3)],
        [(1, 4)],
        [(2, 0)],
        [(2, 1)],
        [(3, 0)],
    ]
