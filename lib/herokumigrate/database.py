"""The database connection: reading the URL from its config var, spotting poolers, and
connecting with bounded retries while a newly provisioned database starts.

Nothing here prints a password or the URL: the Output redacts both, and errors quote only
the host and database name.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from herokumigrate.errors import BadInput
from herokumigrate.output import Output

if TYPE_CHECKING:
    import psycopg

APPLICATION_NAME = "heroku-migrate"
# libpq messages that retrying cannot fix: say so at once instead of waiting minutes.
_PERMANENT = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "no pg_hba.conf entry",
    "invalid connection option",
    "invalid sslmode",
    "certificate",
    "sslmode value",
    "invalid integer value",
    "invalid port",
)
_POOLER_HINTS = ("pgbouncer", "pooler", "pool.", "-pool", "pgpool", "odyssey", "supavisor")


@dataclass(frozen=True)
class Target:
    """Where to connect: the conninfo parameters and a printable description."""

    params: dict[str, str]
    var: str

    @property
    def description(self) -> str:
        """`database on host`, safe to print."""
        host = self.params.get("host") or "local socket"
        if host.startswith("/"):
            host = "local socket"
        dbname = self.params.get("dbname") or self.params.get("user") or "?"
        return f"{dbname} on {host}"

    def looks_like_pooler(self) -> bool:
        """True when the URL seems to point at a connection pooler (PgBouncer and friends)."""
        host = self.params.get("host", "").lower()
        return (
            self.params.get("port") == "6432"
            or any(hint in host for hint in _POOLER_HINTS)
            or "CONNECTION_POOL" in self.var.upper()
        )


def read_target(env: Mapping[str, str], var: str, output: Output) -> Target:
    """Parse the database URL held by config var `var`, registering its secrets for redaction."""
    url = env.get(var, "")
    output.add_secret(url)
    if not url.strip():
        raise BadInput(
            f"{var} is not set (or empty)",
            fix=(
                f"Attach a database (heroku addons:create heroku-postgresql) or set {var}; "
                "to read another config var, set MIGRATE_DATABASE_URL_VAR."
            ),
        )
    from psycopg.conninfo import conninfo_to_dict

    try:
        raw = conninfo_to_dict(url.strip())
    except Exception:  # psycopg raises ProgrammingError; its text may quote the URL
        raise BadInput(
            f"{var} is not a valid PostgreSQL URL",
            fix=f"Set {var} to postgres://USER:PASSWORD@HOST:5432/DBNAME.",
        ) from None
    params = {k: str(v) for k, v in raw.items() if v is not None}
    output.add_secret(params.get("password"))
    if url.strip().split("://", 1)[0] not in ("postgres", "postgresql") and "://" in url:
        raise BadInput(
            f"{var} is not a PostgreSQL URL (scheme {url.split('://', 1)[0]!r})",
            fix=f"Set {var} to postgres://USER:PASSWORD@HOST:5432/DBNAME.",
        )
    return Target(params, var)


def connect(
    target: Target,
    output: Output,
    *,
    connect_timeout: float,
    connect_wait: float,
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection in autocommit mode, retrying transient failures for `connect_wait` seconds."""
    import psycopg

    params = dict(target.params)
    params.setdefault("application_name", APPLICATION_NAME)
    params["connect_timeout"] = str(max(1, round(connect_timeout)))
    deadline = time.monotonic() + connect_wait
    attempt = 0
    delay = 1.0
    while True:
        attempt += 1
        try:
            return psycopg.connect(**params, autocommit=True)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            message = _first_line(output.redact(str(exc)))
            if any(p in message for p in _PERMANENT):
                raise BadInput(
                    f"cannot connect to {target.description} ({target.var}): {message}",
                    fix=f"Check the credentials and database name in {target.var} "
                    f"(heroku config:get {target.var} shows the current one).",
                ) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BadInput(
                    f"cannot connect to {target.description} ({target.var}) after "
                    f"{attempt} attempts: {message}",
                    fix="Check that the database is running and reachable (heroku pg:info); "
                    "raise MIGRATE_CONNECT_WAIT to wait longer for a new database.",
                ) from None
            output.warn(
                f"Connection attempt {attempt} to {target.description} failed: {message}; "
                f"retrying in {min(delay, remaining):.0f}s"
            )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 15.0)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else "unknown error"
