"""A real PgBouncer in front of the test server, in transaction or session pooling mode.

PgBouncer refuses to run as root, so under root it runs as the `postgres` system user (the
Debian package's), or as the owner of the embedded server's private socket directory. Clients
log in as the test role with its password (md5, checked against a plain-text auth file), and
PgBouncer logs in to the server with the same password, which both the trusting local server
and the embedded server's SCRAM rule accept.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from support import TEST_PASSWORD, TEST_ROLE, Server

PoolMode = Literal["session", "transaction", "statement"]
_SYSTEM_USER = "postgres"
_START_SECONDS = 20.0


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable (Debian puts it in /usr/sbin, often not on PATH), or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


@dataclass
class PgBouncer:
    """One running PgBouncer: where it listens and how to stop it."""

    mode: PoolMode
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]

    def url(self, dbname: str, *, query: str = "") -> str:
        """A postgres:// URL of `dbname` through this PgBouncer, as the test role."""
        auth = f"{quote(TEST_ROLE, safe='')}:{quote(TEST_PASSWORD, safe='')}"
        return f"postgres://{auth}@127.0.0.1:{self.port}/{dbname}" + (f"?{query}" if query else "")

    def log(self) -> str:
        """PgBouncer's log so far (for assertion messages)."""
        path = self.workdir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop PgBouncer and remove its files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pgbouncer(
    server: Server,
    mode: PoolMode,
    *,
    pool_size: int = 5,
    aliases: dict[str, str] | None = None,
    settings: dict[str, str] | None = None,
) -> PgBouncer:
    """Start PgBouncer on a free loopback port in front of `server`; wait until it listens.

    `aliases` maps database names that clients use to the server's database names (each
    alias is a pool of its own); `settings` adds lines to its [pgbouncer] section.
    """
    binary = pgbouncer_binary()
    assert binary is not None, "pgbouncer is not installed (scripts/test.sh installs it)"
    workdir = Path(tempfile.mkdtemp(prefix="hm-pgbouncer-"))
    port = _free_port()
    # Doubled double quotes are the auth file's only escape.
    escaped = TEST_PASSWORD.replace('"', '""')
    (workdir / "userlist.txt").write_text(f'"{TEST_ROLE}" "{escaped}"\n', encoding="utf-8")
    host = server.admin.get("host") or "127.0.0.1"
    server_port = server.admin.get("port") or "5432"
    databases = "".join(
        f"{alias} = host={host} port={server_port} dbname={real}\n"
        for alias, real in (aliases or {}).items()
    )
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{databases}* = host={host} port={server_port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = md5\n"
        f"auth_file = {workdir / 'userlist.txt'}\n"
        f"pool_mode = {mode}\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 200\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
        f"pidfile = {workdir / 'pgbouncer.pid'}\n"
        + "".join(f"{name} = {value}\n" for name, value in (settings or {}).items()),
        encoding="utf-8",
    )
    uid = gid = None
    extra_groups: list[int] | None = None
    if os.geteuid() == 0:
        account = _system_account(host)
        uid, gid, extra_groups = account.pw_uid, account.pw_gid, []
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, uid, gid)
    process = subprocess.Popen(
        [binary, str(workdir / "pgbouncer.ini")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=uid,
        group=gid,
        extra_groups=extra_groups,
    )
    bouncer = PgBouncer(mode, port, workdir, process)
    deadline = time.monotonic() + _START_SECONDS
    while not _listens(port):
        if process.poll() is not None or time.monotonic() > deadline:
            log = bouncer.log()
            bouncer.stop()
            raise AssertionError(f"pgbouncer did not start:\n{log}")
        time.sleep(0.05)
    return bouncer


def _system_account(host: str) -> pwd.struct_passwd:
    """Who runs PgBouncer under root: the `postgres` user, or for a server reached by a socket
    in a private directory (the embedded server's data directory), that directory's owner."""
    if host.startswith("/"):
        owner = os.stat(host).st_uid
        if owner != 0:
            return pwd.getpwuid(owner)
    return pwd.getpwnam(_SYSTEM_USER)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
