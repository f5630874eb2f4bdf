"""The database connection: reading the URL from its config var, connecting with bounded retries
while a newly provisioned database starts, and refusing a pooler that would not keep our session.

Nothing here prints a password or the URL: the Output redacts both, and errors quote only
the host and database name.

The connection carries no session state of ours beyond its startup parameters: its
application_name, TCP keepalives and `tcp_user_timeout` on our side (a network that silently
drops our packets ends the run with an error instead of hanging it), and, in the startup
`options`, what lets the server end an abandoned session by itself (`SESSION_OPTIONS`).
Everything else the runner sets is `SET LOCAL`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from herokumigrate.errors import BadInput
from herokumigrate.lock import MigrationsTable
from herokumigrate.output import Output

if TYPE_CHECKING:
    import psycopg

APPLICATION_NAME = "heroku-migrate"
# How often a busy backend checks that we are still there (PostgreSQL 14+), in milliseconds.
CONNECTION_CHECK_INTERVAL_MS = 2000
# The server ends our session when it sits idle in a transaction this long: a runner cut off by
# the network leaves no transaction (and no ACCESS EXCLUSIVE lock) behind for longer. Far above
# the longest pause between our own statements in a transaction (none waits on anything but
# the server).
IDLE_IN_TRANSACTION_SECONDS = 30
# Our side of the TCP connection: probe a silent connection after KEEPALIVE_IDLE seconds, every
# KEEPALIVE_INTERVAL, give up after KEEPALIVE_COUNT unanswered probes; and give up when data we
# sent stays unacknowledged for TCP_USER_TIMEOUT_MS. A live server answers the probes even
# while a long statement runs; a black-holed one is noticed within about 30 s.
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 4
TCP_USER_TIMEOUT_MS = 30_000
_CLIENT_TCP = {
    "keepalives": "1",
    "keepalives_idle": str(KEEPALIVE_IDLE),
    "keepalives_interval": str(KEEPALIVE_INTERVAL),
    "keepalives_count": str(KEEPALIVE_COUNT),
    "tcp_user_timeout": str(TCP_USER_TIMEOUT_MS),
}
# Our session's settings, sent as startup options (a file's SET cannot be undone by them, but
# nothing of ours needs a SET that could outlive us). The server probes our connection too, so
# a backend whose client vanished mid-transaction ends even while it waits for us.
SESSION_OPTIONS = {
    "client_connection_check_interval": str(CONNECTION_CHECK_INTERVAL_MS),  # PostgreSQL 14+
    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_SECONDS * 1000),
    "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
    "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
    "tcp_keepalives_count": str(KEEPALIVE_COUNT),
    "tcp_user_timeout": str(TCP_USER_TIMEOUT_MS),  # PostgreSQL 12+
}
_SIDE_OPTIONS = {k: v for k, v in SESSION_OPTIONS.items() if k.startswith("tcp_")}
# The startup options are a courtesy: a pooler that refuses `options` gets a connection without
# them, an older server without those it does not know.
_OPTIONS_REFUSED = "unsupported startup parameter: options"
_UNRECOGNIZED_SETTING_RE = re.compile(r'unrecognized configuration parameter "([^"]*)"')
_INVALID_VALUE_RE = re.compile(r'invalid value for parameter "([^"]*)"')
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
    "does not support SSL",
    "unsupported startup parameter",
)
_UNKNOWN_PARAMETER_RE = re.compile(
    r'(?:invalid URI query parameter|invalid connection option):? "([^"]*)"'
)
# Parameters that Prisma reads from the same DATABASE_URL; libpq knows none of them.
_PRISMA_PARAMETERS = frozenset(
    ("schema", "connection_limit", "pool_timeout", "pgbouncer", "sslaccept", "socket_timeout",
     "statement_cache_size", "sslidentity", "sslpassword", "connect_timeout_ms")
)  # fmt: skip
# Go's strconv.ParseBool, which golang-migrate uses for its boolean URL parameters.
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class Target:
    """Where to connect: the conninfo parameters, a printable description, and what the URL
    tells golang-migrate (its `x-*` parameters, stripped from `params`)."""

    params: dict[str, str]
    var: str
    # The URL's path as golang-migrate's CLI reads it ("/dbname"); None for a key=value DSN.
    url_path: str | None = None
    # `x-migrations-table` (with `x-migrations-table-quoted`), None when the URL has none.
    migrations_table: MigrationsTable | None = None
    # `x-statement-timeout`, in seconds; None when the URL has none.
    statement_timeout: float | None = None
    # The session's search_path, as the folder's tool sets it (Prisma's `?schema=NAME`,
    # Flyway's default schema), quoted; None: the server's.
    search_path: str | None = None

    @property
    def description(self) -> str:
        """`database on host`, safe to print."""
        host = self.params.get("host") or "local socket"
        if host.startswith("/"):
            host = "local socket"
        dbname = self.params.get("dbname") or self.params.get("user") or "?"
        return f"{dbname} on {host}"


def read_target(
    env: Mapping[str, str],
    var: str,
    output: Output,
    *,
    prisma: bool = False,
    search_path: str | None = None,
) -> Target:
    """Parse the database URL held by config var `var`, registering its secrets for redaction.
    With `prisma` (the folder is Prisma's), Prisma's own URL parameters are removed before
    connecting, as Prisma's schema engine reads them, and `schema` sets the search_path;
    `search_path` (quoted) is the one the folder's tool sets otherwise (Flyway's)."""
    url = env.get(var, "").strip()
    output.add_secret(url)
    if not url:
        raise BadInput(
            f"{var} is not set (or empty)",
            fix=(
                f"Attach a database (heroku addons:create heroku-postgresql) or set {var}; "
                "to read another config var, set MIGRATE_DATABASE_URL_VAR."
            ),
        )
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is not None and scheme not in ("postgres", "postgresql"):
        raise BadInput(
            f"{var} is not a PostgreSQL URL (scheme {scheme!r})",
            fix=f"Set {var} to postgres://USER:PASSWORD@HOST:5432/DBNAME.",
        )
    url_path = None
    options: dict[str, str] = {}
    prisma_options: dict[str, str] = {}
    if scheme is not None:
        try:
            if prisma:
                url, prisma_options = _strip_options(url, _PRISMA_PARAMETERS.__contains__)
            url, options = _strip_golang_migrate_options(url)
            url_path = unquote(urlsplit(url).path)
        except ValueError:  # urllib's messages may quote the URL
            raise BadInput(
                f"{var} is not a valid PostgreSQL URL",
                fix=f"Set {var} to postgres://USER:PASSWORD@HOST:5432/DBNAME.",
            ) from None
    params = _conninfo_params(url, var)
    output.add_secret(params.get("password"))
    return Target(
        params,
        var,
        url_path=url_path,
        migrations_table=_migrations_table(options, var),
        statement_timeout=_statement_timeout(options, var),
        search_path=_quoted(prisma_options["schema"])
        if prisma_options.get("schema")
        else search_path,
    )


def _conninfo_params(url: str, var: str) -> dict[str, str]:
    """libpq's reading of the URL, or a BadInput naming the parameter it does not know."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        raw = conninfo_to_dict(url)
    except Exception as exc:  # psycopg raises ProgrammingError; its text may quote the URL
        unknown = _UNKNOWN_PARAMETER_RE.search(str(exc))
        # A parameter name is printed only if it looks like one (never a misplaced password).
        if unknown and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", unknown.group(1)):
            raise _unknown_parameter(unknown.group(1), var) from None
        raise BadInput(
            f"{var} is not a valid PostgreSQL URL",
            fix=f"Set {var} to postgres://USER:PASSWORD@HOST:5432/DBNAME.",
        ) from None
    return {k: str(v) for k, v in raw.items() if v is not None}


def _unknown_parameter(name: str, var: str) -> BadInput:
    whose = " (it is Prisma's)" if name in _PRISMA_PARAMETERS else ""
    search_path = (
        " To choose the schema, use options=-csearch_path%3DNAME instead."
        if name == "schema"
        else ""
    )
    return BadInput(
        f"{var} has the parameter {name!r}, which PostgreSQL clients do not know{whose}",
        fix=f"Remove {name}=... from {var}; if the app needs it there, put the URL without it "
        f"in another config var and set MIGRATE_DATABASE_URL_VAR to that var's name." + search_path,
    )


def _search_path_option(target: Target) -> str:
    """`-c search_path=...`, escaped for libpq's `options` (a backslash before a space or a
    backslash)."""
    value = str(target.search_path)
    return "-csearch_path=" + value.replace("\\", "\\\\").replace(" ", "\\ ")


def _quoted(name: str) -> str:
    """A schema name quoted for search_path."""
    return '"' + name.replace('"', '""') + '"'


def _strip_golang_migrate_options(url: str) -> tuple[str, dict[str, str]]:
    """The URL without golang-migrate's `x-*` query parameters, and those parameters.

    golang-migrate removes them before connecting (FilterCustomQuery), and libpq would refuse
    them. Like Go's `url.Query().Get`, the first value of a repeated parameter wins.
    """
    if "x-" not in urlsplit(url).query:
        return url, {}
    return _strip_options(url, lambda name: name.startswith("x-"))


def _strip_options(url: str, wanted: Callable[[str], bool]) -> tuple[str, dict[str, str]]:
    """The URL without the query parameters `wanted` names, and those parameters (the first
    value of a repeated one wins)."""
    parts = urlsplit(url)
    kept: list[str] = []
    options: dict[str, str] = {}
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        name = unquote_plus(key)
        if wanted(name):
            options.setdefault(name, unquote_plus(value))
        elif pair:
            kept.append(pair)
    return urlunsplit(parts._replace(query="&".join(kept))), options


def _migrations_table(options: dict[str, str], var: str) -> MigrationsTable | None:
    """`x-migrations-table`, read as golang-migrate's postgres driver reads it."""
    value = options.get("x-migrations-table", "")
    quoted = _go_bool(options, "x-migrations-table-quoted", var)
    if not value:
        return None
    if not quoted:
        return MigrationsTable(value)
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        raise BadInput(
            f"{var}: x-migrations-table must be quoted when x-migrations-table-quoted is on",
            fix=f'Write it as x-migrations-table="schema"."table" in {var} (percent-encoded), '
            "or drop x-migrations-table-quoted.",
        )
    names = re.findall(r'"(.*?)"', value)
    if len(names) > 2:
        raise BadInput(
            f"{var}: x-migrations-table names more than a schema and a table",
            fix=f'Write it as x-migrations-table="schema"."table" in {var}.',
        )
    return MigrationsTable(names[-1], names[0] if len(names) == 2 else None)


def _statement_timeout(options: dict[str, str], var: str) -> float | None:
    raw = options.get("x-statement-timeout", "")
    if not raw:
        return None
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        raise BadInput(
            f"{var}: x-statement-timeout must be a whole number of milliseconds",
            fix=f"Set x-statement-timeout=MILLISECONDS in {var}, or remove it.",
        )
    return int(raw) / 1000


def _go_bool(options: dict[str, str], name: str, var: str) -> bool:
    raw = options.get(name, "")
    if not raw:
        return False
    if raw not in _GO_TRUE + _GO_FALSE:
        raise BadInput(
            f"{var}: {name} must be true or false",
            fix=f"Set {name}=true or {name}=false in {var}, or remove it.",
        )
    return raw in _GO_TRUE


def connect(
    target: Target,
    output: Output,
    *,
    connect_timeout: float,
    connect_wait: float,
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection in autocommit mode, retrying transient failures for `connect_wait` seconds.

    It never prepares statements (poolers and prepared statements do not mix), and a pooler in
    transaction mode is refused (BadInput) before anything is read or written.
    """
    import psycopg
    from psycopg.conninfo import make_conninfo

    params = _connection_params(target, connect_timeout)
    ours = dict(SESSION_OPTIONS)
    deadline = time.monotonic() + connect_wait
    attempt = 0
    delay = 1.0
    while True:
        attempt += 1
        try:
            conninfo = make_conninfo("", **_with_session_options(params, ours))
            conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
            _refuse_transaction_pooling(conn, params, target, min(3.0, connect_timeout))
            return conn
        except psycopg.OperationalError as exc:
            message = _first_line(output.redact(str(exc)))
            if ours and _OPTIONS_REFUSED in message:
                ours.clear()
                attempt -= 1
                continue
            setting = _refused_setting(message)
            if setting is not None and setting in ours:
                del ours[setting]  # a server too old for it
                attempt -= 1
                continue
            refusal = _permanent_failure(message, setting, target)
            if refusal is not None:
                raise refusal from None
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


def _connection_params(target: Target, connect_timeout: float) -> dict[str, str]:
    """The URL's parameters, with our client-side defaults (the URL's own choices win)."""
    params = dict(target.params)
    params.setdefault("application_name", APPLICATION_NAME)
    for name, value in _CLIENT_TCP.items():
        params.setdefault(name, value)
    if target.search_path is not None:  # Prisma's `schema`: its schema for unqualified names
        params["options"] = f"{params.get('options', '')} {_search_path_option(target)}".strip()
    params["connect_timeout"] = str(max(1, round(connect_timeout)))
    return params


def _permanent_failure(message: str, setting: str | None, target: Target) -> BadInput | None:
    """The BadInput for a failed connection that no retry can fix (a setting of the URL's
    options the server refuses, bad credentials, an unknown database, ...), else None."""
    if setting is not None:
        return BadInput(
            f"cannot connect to {target.description} ({target.var}): the server "
            f"refuses the setting {setting!r} of the URL's options: {message}",
            fix=f"Correct or remove -c {setting}=... in the options parameter of "
            f"{target.var} (the server's SHOW ALL lists what it knows).",
        )
    if any(p in message for p in _PERMANENT):
        return BadInput(
            f"cannot connect to {target.description} ({target.var}): {message}",
            fix=_permanent_fix(message, target.var),
        )
    return None


def connect_side(
    target: Target, *, connect_timeout: float
) -> psycopg.Connection[tuple[object, ...]] | None:
    """A second, plain connection that watches our session (lockwatch.py) or ends it (a forced
    exit, signals.py), named apart from the runner's own; None when it cannot be opened (the
    run goes on without it)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    params = dict(target.params, **_CLIENT_TCP)
    params["application_name"] = f"{APPLICATION_NAME} watchdog"
    params["connect_timeout"] = str(max(1, round(connect_timeout)))
    # The server probes this connection too (an orphan must not hold a slot for hours); a
    # pooler or server that refuses the options gets the connection without them.
    for attempt in (_with_session_options(params, _SIDE_OPTIONS), params):
        try:
            return psycopg.connect(
                make_conninfo("", **attempt), autocommit=True, prepare_threshold=None
            )
        except psycopg.Error:
            continue
    return None


def _with_session_options(params: dict[str, str], ours: dict[str, str]) -> dict[str, str]:
    """`params` with our session settings added to its `options` (the URL's own come last and
    so win when they set the same one)."""
    if not ours:
        return params
    added = " ".join(f"-c {name}={value}" for name, value in ours.items())
    return dict(params, options=f"{added} {params.get('options', '')}".strip())


def _refused_setting(message: str) -> str | None:
    """The setting a server refused at startup (unknown, or a bad value), if that is the error."""
    found = _UNRECOGNIZED_SETTING_RE.search(message) or _INVALID_VALUE_RE.search(message)
    return found.group(1) if found else None


def _refuse_transaction_pooling(
    conn: psycopg.Connection[tuple[object, ...]],
    params: dict[str, str],
    target: Target,
    probe_timeout: float,
) -> None:
    """BadInput, after closing `conn`, when a pooler hands our transactions to any session."""
    from herokumigrate.pooler import detect_pooling, statement_or_transaction

    try:
        pooling = detect_pooling(conn, params, probe_timeout=probe_timeout)
        if pooling == "transaction":
            pooling = statement_or_transaction(conn)
    except BaseException:
        conn.close()
        raise
    if pooling not in ("transaction", "statement"):
        return
    conn.close()
    if target.var == "DATABASE_URL":
        where = (
            "Set MIGRATE_DATABASE_URL_VAR to the config var that holds the direct database URL "
            "(heroku config lists them; Heroku Postgres's is HEROKU_POSTGRESQL_<COLOR>_URL)"
        )
    else:
        where = f"Set MIGRATE_DATABASE_URL_VAR=DATABASE_URL (the direct URL), not {target.var}"
    if pooling == "transaction":
        how = "through a connection pooler in transaction mode (PgBouncer, as in Heroku's connection pooling)"  # noqa: E501 -- quoted whole in docs/troubleshooting.md
    else:
        how = "through a connection pooler in statement mode (PgBouncer's pool_mode = statement)"
    raise BadInput(
        f"{target.var} reaches {target.description} {how}",
        fix=f"{where}, or switch the pooler to session mode.",
        details=(
            "Session locks and settings do not survive from one transaction to the next "
            "there, so two releases could apply the same migration; nothing was changed.",
        ),
    )


def _permanent_fix(message: str, var: str) -> str:
    if "does not support SSL" in message:
        return (
            f"The server does not offer TLS, but {var} requires it (sslmode). Heroku Postgres "
            f"always offers TLS: check the host in {var}; only a local server without TLS "
            "wants sslmode=disable."
        )
    if "unsupported startup parameter" in message:
        return (
            f"A connection pooler refuses a parameter of {var}: remove it from the URL, or "
            "list it in the pooler's ignore_startup_parameters."
        )
    return (
        f"Check the credentials and database name in {var} "
        f"(heroku config:get {var} shows the current one)."
    )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else "unknown error"
