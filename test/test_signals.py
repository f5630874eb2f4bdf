"""SIGTERM (a dyno stop) and SIGINT (Ctrl-C) stop a run cleanly and quickly: the statement is
cancelled, the transaction rolled back, the lock released, the event logged; a second signal or
a SIGKILL mid-way still leaves a consistent state; a kill -9'd runner's backend ends soon.

Real signals to the real CLI, a real server.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import pq

from herokumigrate.database import CONNECTION_CHECK_INTERVAL_MS
from herokumigrate.lock import lock_key
from herokumigrate.signals import SETTLE_SECONDS, Interrupted, settle, transaction
from support import (
    cli_env,
    finish,
    history,
    rows,
    run_cli,
    runner_backends,
    runner_in_pg_sleep,
    scalar,
    snapshot,
    spawn_cli,
    write_migrations,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from support import Result, Server

# The promise is an exit within 3 s of the signal (the runner forces it at 2.5 s); the bound
# adds a margin for a loaded 2-core test machine. The measured figure is printed.
SIGNAL_EXIT_BOUND_SECONDS = 3.0 + 1.5
# A kill -9'd runner's backend ends at the server's next client connection check (2 s) after
# its statement; generous for a loaded machine.
KILLED_BACKEND_BOUND_SECONDS = CONNECTION_CHECK_INTERVAL_MS / 1000 + 6.0


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate`; returns the seconds it took, fails with `what` after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def _sleeping(server: Server, dbname: str) -> bool:
    return bool(runner_in_pg_sleep(server, dbname))


def _advisory_locks(server: Server, dbname: str) -> int:
    return int(
        str(
            scalar(
                server.admin_url("postgres"),
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = %s)",
                (dbname,),
            )
        )
    )


def _baseline(app: Path, database_url: str) -> None:
    write_migrations(
        app,
        {"1_base.up.sql": "CREATE TABLE base (id int);\n", "1_base.down.sql": "DROP TABLE base;\n"},
    )
    result = run_cli(["up"], cwd=app, database_url=database_url)
    assert result.returncode == 0, result.output


def _signal_while_sleeping(
    pg_server: Server,
    dbname: str,
    proc: subprocess.Popen[str],
    signals: tuple[signal.Signals, ...],
) -> tuple[Result, float]:
    """Wait for the runner to reach pg_sleep, send `signals` back to back; returns the result
    and the seconds from the first signal to the exit."""
    try:
        _wait_until(lambda: _sleeping(pg_server, dbname), 30, "the runner to reach pg_sleep")
        t0 = time.monotonic()
        for sig in signals:
            proc.send_signal(sig)
        proc.wait(timeout=30)
        took = time.monotonic() - t0
        return finish(proc), took
    finally:
        if proc.poll() is None:
            proc.kill()


def _assert_released(pg_server: Server, dbname: str) -> float:
    """No backend of ours is left and the migration lock is free; returns how long the backend
    took to go."""
    gone = _wait_until(
        lambda: not runner_backends(pg_server, dbname), 10, "the runner's backend to end"
    )
    assert _advisory_locks(pg_server, dbname) == 0
    return gone


def _last_event(pg_server: Server, dbname: str) -> tuple[object, ...]:
    found = rows(
        pg_server.admin_url(dbname),
        "SELECT event, detail FROM heroku_migrate_history_log ORDER BY id DESC LIMIT 1",
    )
    return found[0] if found else ()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_long_statement_rolls_back_releases_and_exits_quickly(
    pg_server: Server, dbname: str, database_url: str, app: Path, sig: signal.Signals
) -> None:
    _baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    write_migrations(
        app,
        {
            "2_table.up.sql": "CREATE TABLE made (id int);\n",
            "3_slow.up.sql": "SELECT pg_sleep(30);\n",
        },
    )
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    result, took = _signal_while_sleeping(pg_server, dbname, proc, (sig,))
    gone = _assert_released(pg_server, dbname)
    print(f"[{pg_server.label}] {sig.name} during pg_sleep: exit {result.returncode} {took:.2f}s")
    print(f"after the signal; backend gone {gone:.2f}s after the exit\n{result.output}")

    assert result.returncode == 128 + sig, result.output
    assert took <= SIGNAL_EXIT_BOUND_SECONDS, f"took {took:.2f}s to exit"
    assert f"Interrupted by {sig.name}" in result.stderr, result.output
    assert "Nothing of this run was committed: the database is unchanged." in result.stderr
    assert snapshot(pg_server, dbname) == before
    event = _last_event(pg_server, dbname)
    assert event[0] == "interrupted", event
    assert sig.name in str(event[1]), event
    # The next release applies everything.
    write_migrations(app, {"3_slow.up.sql": "SELECT pg_sleep(0);\n"})
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0, again.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3]


def test_sigterm_in_migration_mode_keeps_committed_migrations_and_says_so(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _baseline(app, database_url)
    write_migrations(
        app,
        {
            "2_table.up.sql": "CREATE TABLE made (id int);\n",
            "3_slow.up.sql": "CREATE TABLE never (id int);\nSELECT pg_sleep(30);\n",
        },
    )
    env = {"MIGRATE_TRANSACTION": "migration"}
    proc = spawn_cli(["up"], cwd=app, database_url=database_url, env=env)
    result, took = _signal_while_sleeping(pg_server, dbname, proc, (signal.SIGTERM,))
    _assert_released(pg_server, dbname)
    print(f"SIGTERM in migration mode: exit {result.returncode} {took:.2f}s\n{result.output}")

    assert result.returncode == 143, result.output
    assert took <= SIGNAL_EXIT_BOUND_SECONDS, f"took {took:.2f}s to exit"
    assert "Committed before the signal, and kept" in result.stderr, result.output
    assert "2_table (applied)" in result.stderr, result.output
    recorded = history(pg_server, dbname)
    assert [(r[0], r[3]) for r in recorded] == [(1, "applied"), (2, "applied")]
    assert scalar(pg_server.admin_url(dbname), "SELECT to_regclass('made') IS NOT NULL")
    assert scalar(pg_server.admin_url(dbname), "SELECT to_regclass('never') IS NULL")
    write_migrations(app, {"3_slow.up.sql": "CREATE TABLE never (id int);\n"})
    again = run_cli(["up"], cwd=app, database_url=database_url, env=env)
    assert again.returncode == 0, again.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3]


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGTERM, signal.SIGKILL)],
    ids=["sigterm-twice", "sigterm-then-sigkill"],
)
def test_a_second_signal_mid_way_leaves_a_consistent_state(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    signals: tuple[signal.Signals, ...],
) -> None:
    _baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    write_migrations(
        app,
        {
            "2_table.up.sql": "CREATE TABLE made (id int);\n",
            "3_slow.up.sql": "SELECT pg_sleep(30);\n",
        },
    )
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    try:
        _wait_until(lambda: _sleeping(pg_server, dbname), 30, "the runner to reach pg_sleep")
        t0 = time.monotonic()
        for sig in signals:
            proc.send_signal(sig)
        proc.wait(timeout=30)
        took = time.monotonic() - t0
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    # A SIGKILL'd runner's backend may finish its pg_sleep unless the server checks the
    # client connection (client_connection_check_interval) or the cancel got through first.
    gone = _wait_until(
        lambda: not runner_backends(pg_server, dbname),
        KILLED_BACKEND_BOUND_SECONDS,
        "the runner's backend to end",
    )
    print(f"{'+'.join(s.name for s in signals)}: exit {proc.returncode} after {took:.2f}s, ")
    print(f"backend gone {gone:.2f}s later\n{out}{err}")

    assert proc.returncode in (143, -signal.SIGKILL), (proc.returncode, out, err)
    assert "Traceback" not in err, err
    assert took <= SIGNAL_EXIT_BOUND_SECONDS, f"took {took:.2f}s to exit"
    assert _advisory_locks(pg_server, dbname) == 0
    assert snapshot(pg_server, dbname) == before
    write_migrations(app, {"3_slow.up.sql": "SELECT pg_sleep(0);\n"})
    again = run_cli(["up"], cwd=app, database_url=database_url)
    assert again.returncode == 0, again.output
    assert [r[0] for r in history(pg_server, dbname)] == [1, 2, 3]


def test_sigterm_while_waiting_for_the_migration_lock_exits_at_once(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _baseline(app, database_url)
    write_migrations(app, {"2_table.up.sql": "CREATE TABLE made (id int);\n"})
    before = snapshot(pg_server, dbname)
    holder = pg_server.admin_conn(dbname)
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(dbname),))  # our key: blocks us
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    try:
        _wait_until(
            lambda: any(str(b[1]) == "idle" for b in runner_backends(pg_server, dbname)),
            30,
            "the runner to wait for the lock",
        )
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        result = finish(proc, timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        holder.close()
    print(f"SIGTERM during the lock wait: exit {result.returncode} after {took:.2f}s")
    print(result.output)
    assert result.returncode == 143, result.output
    assert took <= SIGNAL_EXIT_BOUND_SECONDS
    assert "Interrupted by SIGTERM" in result.stderr, result.output
    assert snapshot(pg_server, dbname) == before


def test_kill_9_runner_backend_ends_soon(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    write_migrations(app, {"2_slow.up.sql": "CREATE TABLE made (id int);\nSELECT pg_sleep(60);\n"})
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    try:
        _wait_until(lambda: _sleeping(pg_server, dbname), 30, "the runner to reach pg_sleep")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    gone = _wait_until(
        lambda: not runner_backends(pg_server, dbname),
        KILLED_BACKEND_BOUND_SECONDS,
        "the killed runner's backend to end",
    )
    print(f"[{pg_server.label}] kill -9 during pg_sleep(60): backend ended {gone:.2f}s later")
    assert _advisory_locks(pg_server, dbname) == 0
    assert snapshot(pg_server, dbname) == before


def test_cleanup_that_hangs_is_cut_short_by_the_exit_deadline(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    write_migrations(app, {"2_slow.up.sql": "CREATE TABLE made (id int);\nSELECT pg_sleep(30);\n"})
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    stopped: int | None = None
    try:
        _wait_until(lambda: _sleeping(pg_server, dbname), 30, "the runner to reach pg_sleep")
        pid = int(str(runner_backends(pg_server, dbname)[0][0]))
        try:
            os.kill(pid, signal.SIGSTOP)  # a server that does not answer the cancel
        except PermissionError:
            pytest.skip("the server's backends run as another user: cannot freeze one")
        stopped = pid
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - t0
        out, err = proc.communicate()
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    print(f"SIGTERM with a frozen backend: exit {proc.returncode} after {took:.2f}s\n{out}{err}")
    assert proc.returncode == 143, (out, err)
    assert took <= SIGNAL_EXIT_BOUND_SECONDS, f"took {took:.2f}s to exit"
    assert "clean-up took too long: stopping at once" in err, err
    assert "Traceback" not in err, err
    _wait_until(
        lambda: not runner_backends(pg_server, dbname),
        KILLED_BACKEND_BOUND_SECONDS,
        "the runner's backend to end",
    )
    assert _advisory_locks(pg_server, dbname) == 0
    assert snapshot(pg_server, dbname) == before


# A second signal forces the exit at once: well before the exit deadline (2.5 s after the
# first) would. The bound leaves a loaded machine a margin and stays under that deadline.
SECOND_SIGNAL_EXIT_BOUND_SECONDS = 1.2
HUNG_BEFORE_SECOND_SIGNAL_SECONDS = 0.5


def test_a_second_signal_during_a_hung_cleanup_exits_at_once_and_says_so(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    """The clean-up after the first SIGTERM hangs (the backend is frozen: the cancel goes
    unanswered); a second SIGTERM does not wait for the exit deadline: the runner leaves at
    once, saying why, and the server rolls back and frees the lock."""
    _baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    write_migrations(app, {"2_slow.up.sql": "CREATE TABLE made (id int);\nSELECT pg_sleep(30);\n"})
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    stopped: int | None = None
    try:
        _wait_until(lambda: _sleeping(pg_server, dbname), 30, "the runner to reach pg_sleep")
        pid = int(str(runner_backends(pg_server, dbname)[0][0]))
        try:
            os.kill(pid, signal.SIGSTOP)  # a server that does not answer the cancel
        except PermissionError:
            pytest.skip("the server's backends run as another user: cannot freeze one")
        stopped = pid
        proc.send_signal(signal.SIGTERM)
        time.sleep(HUNG_BEFORE_SECOND_SIGNAL_SECONDS)  # the clean-up is now waiting
        assert proc.poll() is None, "the runner exited with its backend frozen"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - t0
        out, err = proc.communicate()
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    print(f"second SIGTERM during a hung clean-up: exit {proc.returncode} {took:.2f}s after it")
    assert proc.returncode == 143, (out, err)
    assert "SIGTERM again: stopping at once" in err, err
    assert "clean-up took too long" not in err, err
    assert "Traceback" not in err, err
    assert took <= SECOND_SIGNAL_EXIT_BOUND_SECONDS, f"took {took:.2f}s after the second signal"
    _wait_until(
        lambda: not runner_backends(pg_server, dbname),
        KILLED_BACKEND_BOUND_SECONDS,
        "the runner's backend to end",
    )
    assert _advisory_locks(pg_server, dbname) == 0
    assert snapshot(pg_server, dbname) == before


def test_a_migration_that_swallows_cancels_loses_its_backend_and_locks_within_three_seconds(
    pg_server: Server, dbname: str, database_url: str, app: Path
) -> None:
    _baseline(app, database_url)
    before = snapshot(pg_server, dbname)
    write_migrations(
        app,
        {
            "2_stubborn.up.sql": "CREATE TABLE made (id int);\n"
            "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.1);"
            " EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$;\n"
        },
    )
    proc = spawn_cli(["up"], cwd=app, database_url=database_url)
    try:
        _wait_until(lambda: _sleeping(pg_server, dbname), 30, "the runner to reach pg_sleep")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        released = _wait_until(
            lambda: (
                not runner_backends(pg_server, dbname) and not _advisory_locks(pg_server, dbname)
            ),
            30,
            "the runner's backend and locks to go",
        )
        proc.wait(timeout=30)
        took = time.monotonic() - t0
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    print(
        f"[{pg_server.label}] SIGTERM to a migration that swallows cancels: exit "
        f"{proc.returncode} after {took:.2f}s, its backend and locks gone after {released:.2f}s"
        f"\n{out}{err}"
    )
    assert proc.returncode == 143, (out, err)
    assert took <= SIGNAL_EXIT_BOUND_SECONDS, f"took {took:.2f}s to exit"
    assert "pg_terminate_backend" in err, err
    assert "query cancellation interrupted" not in err, err  # psycopg's log line, unformatted
    assert released <= 3.0 + 0.3, f"the backend kept its locks {released:.2f}s after the signal"
    assert snapshot(pg_server, dbname) == before


def _left_running(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """The state an interruption leaves when it lands while psycopg's own code runs between
    two waits (its generator ends, nothing cancels): a statement running, the connection busy."""
    conn.pgconn.send_query(b"SELECT pg_sleep(30)")
    assert conn.pgconn.transaction_status == pq.TransactionStatus.ACTIVE


def _still_sleeping(server: Server, dbname: str) -> bool:
    found = scalar(
        server.admin_url("postgres"),
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE %s"
        " AND pid <> pg_backend_pid()",
        (dbname, "SELECT pg_sleep(30)%"),
    )
    return int(str(found)) > 0


def test_an_interruption_psycopg_left_unsettled_is_settled_before_the_rollback(
    pg_server: Server, dbname: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Seen once in CI: the rollback failed with "another command is already in progress",
    # psycopg printed "error ignored in rollback" and the run could not say what it committed.
    def interrupted_transaction(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        with transaction(conn):
            conn.execute("CREATE TABLE never (id int)")
            _left_running(conn)
            raise Interrupted(signal.SIGTERM)

    with psycopg.connect(pg_server.admin_url(dbname), autocommit=True) as conn:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="psycopg"), pytest.raises(Interrupted):
            interrupted_transaction(conn)
        took = time.monotonic() - t0
        print(f"[{pg_server.label}] settled and rolled back in {took:.3f}s")
        assert [r.getMessage() for r in caplog.records] == []
        assert took < SETTLE_SECONDS + 1.0
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute("SELECT to_regclass('never') IS NULL").fetchone() == (True,)
        assert not _still_sleeping(pg_server, dbname)


def test_settle_cancels_a_statement_left_running_outside_a_transaction(
    pg_server: Server, dbname: str
) -> None:
    with psycopg.connect(pg_server.admin_url(dbname), autocommit=True) as conn:
        _left_running(conn)
        t0 = time.monotonic()
        settle(conn)
        took = time.monotonic() - t0
        assert took < SETTLE_SECONDS + 1.0
        assert not conn.closed
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert not _still_sleeping(pg_server, dbname)


def test_an_interruption_in_an_aborted_transaction_still_says_what_was_committed(
    pg_server: Server,
    dbname: str,
    database_url: str,
    app: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interruption's handling finds the connection in an aborted transaction (the
    statement the signal cancelled failed it): it rolls back before it reads the history, so
    the message still names exactly what the run had committed, and the event is logged."""
    from herokumigrate.config import load_config
    from herokumigrate.manifest import Fingerprint
    from herokumigrate.migrator import Migrator
    from herokumigrate.output import Output
    from herokumigrate.session import Session
    from herokumigrate.source import load_migrations

    _baseline(app, database_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    config = load_config(app, {})
    out = io.StringIO()
    output = Output(out, out, color=False)
    migrator = Migrator(config, output)
    session = Session.open(config, output)
    try:
        write_migrations(app, {"2_table.up.sql": "CREATE TABLE made (id int);\n"})
        migrations = load_migrations(config.migrations_dir, config.app_dir)
        ledger = migrator._ledger(session, Fingerprint.of(migrations))
        state = ledger.read(session.conn)  # as the run found it: 1 applied
        # The run committed migration 2 (here: another run of the CLI), then the signal came
        # and left this connection's transaction aborted.
        assert run_cli(["up"], cwd=app, database_url=database_url).returncode == 0
        session.conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.QueryCanceled):
            session.conn.execute("SET LOCAL statement_timeout = 1; SELECT pg_sleep(1)")
        assert session.conn.info.transaction_status == pq.TransactionStatus.INERROR

        stop = migrator._interrupted(session, ledger, state, Interrupted(signal.SIGTERM))

        assert stop.committed == ["2_table (applied)"], out.getvalue()
        assert "Committed before the signal, and kept" in " ".join(stop.lines())
        event = _last_event(pg_server, dbname)
        assert event[0] == "interrupted", event
        assert "committed before it: 2_table (applied)" in str(event[1]), event
    finally:
        session.close()


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter with the runner importable; its exit and output."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# What a SIGTERM that lands inside psycopg's construction of a result leaves (its __init__
# interrupted before the pointer was set): the object's finalizer then fails, and Python
# would print "Exception ignored in: <function PGresult.__del__ ...>" with a traceback.
HALF_BUILT_AFTER_A_SIGNAL = """
import os, signal, sys, time
from herokumigrate.signals import Interrupted, install_stop_signals
from psycopg.pq import pq_ctypes

install_stop_signals()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except Interrupted:
    pass
half_built = pq_ctypes.PGresult.__new__(pq_ctypes.PGresult)
del half_built
sys.stdout.write("finalized\\n")
"""


def test_an_interruption_inside_psycopg_prints_no_exception_ignored() -> None:
    """After a stop signal, a finalizer that fails on what the interruption left half built
    prints nothing: the user sees the runner's lines, never Python's "Exception ignored"."""
    done = _python(HALF_BUILT_AFTER_A_SIGNAL)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "finalized\n", done.stdout
    assert done.stderr == "", done.stderr


# A run that cleaned up after SIGTERM and is returning: its watchdog (due 0.1 s after the
# signal here) must not overtake the exit with "clean-up took too long".
RETURNING_AFTER_A_SIGNAL = """
import os, signal, sys, time
from herokumigrate.signals import Interrupted, StopSignals

stops = StopSignals(deadline=0.5)
stops.install()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except Interrupted:
    pass
stops.uninstall()
time.sleep(1.0)  # the interpreter's own shutdown, a slow finalizer
sys.stdout.write("returned\\n")
"""


def test_a_run_that_returned_after_a_signal_is_not_overtaken_by_its_watchdog() -> None:
    done = _python(RETURNING_AFTER_A_SIGNAL)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "returned\n", done.stdout
    assert done.stderr == "", done.stderr


def _backend_pid_of(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    return int(conn.info.backend_pid)


def test_settle_gives_up_on_a_frozen_backend_within_its_deadline(
    pg_server: Server, dbname: str
) -> None:
    """The backend does not answer the cancel (frozen): settle must not wait for its results
    without end; after SETTLE_SECONDS it closes the connection (the server then rolls back and
    frees the lock when it sees the connection gone)."""
    conn = psycopg.connect(pg_server.admin_url(dbname), autocommit=True)
    pid = _backend_pid_of(conn)
    try:
        _left_running(conn)
        _wait_until(lambda: _still_sleeping(pg_server, dbname), 10, "the statement to run")
        os.kill(pid, signal.SIGSTOP)
    except PermissionError:
        conn.close()
        pytest.skip("the server's backends run as another user: cannot freeze one")
    try:
        t0 = time.monotonic()
        settle(conn)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
        conn.close()
    print(f"[{pg_server.label}] settle gave up on a frozen backend after {took:.2f}s")
    assert took < SETTLE_SECONDS + 1.0, f"settle waited {took:.2f}s"


def test_settle_sends_the_cancel_again_when_the_first_one_came_too_early(
    pg_server: Server, dbname: str
) -> None:
    """A cancel that reaches the backend before it starts the statement is ignored (it was
    idle, reading); the statement then runs in full. Settle cancels again when no result
    came, so the statement still ends early and the connection stays usable."""
    conn = psycopg.connect(pg_server.admin_url(dbname), autocommit=True)
    pid = _backend_pid_of(conn)
    try:
        os.kill(pid, signal.SIGSTOP)  # the statement will sit unread in its socket
    except PermissionError:
        conn.close()
        pytest.skip("the server's backends run as another user: cannot freeze one")
    try:
        _left_running(conn)
        thaw = threading.Timer(0.3, os.kill, args=(pid, signal.SIGCONT))
        thaw.start()
        t0 = time.monotonic()
        settle(conn)  # its first cancel arrives while the backend is frozen, idle
        took = time.monotonic() - t0
        thaw.join()
        print(f"[{pg_server.label}] settled after a lost cancel in {took:.2f}s")
        assert not conn.closed, "the statement was not cancelled: the connection was closed"
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert took < SETTLE_SECONDS + 1.0, f"settle took {took:.2f}s"
        assert not _still_sleeping(pg_server, dbname)
    finally:
        os.kill(pid, signal.SIGCONT)
        conn.close()
