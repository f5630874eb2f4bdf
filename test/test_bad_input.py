"""The bad-input corpus: every way a user can hand the runner wrong files, settings or URLs.

Each case runs the real CLI in a subprocess against a real PostgreSQL database that already holds
a baseline (three applied migrations, some rows), and asserts:

- the documented exit code (2 bad input; 1 a migration failed and was rolled back; 3 lock wait);
- stdout holds no ` !     ` line and stderr holds nothing else: optional warning lines, then ONE
  error block, ` !     <message>` naming the file or setting, at most two detail lines, and
  ` !     <fix>` holding the remedy this case calls for;
- no traceback and no password in any output (`run_cli` checks both on every run);
- nothing changed: schema dump, history rows, the rows of every table, and the app's files.

Cases whose error lies in the files alone also run `validate` (no database), which the build uses:
a broken file must fail the build with the same message.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from herokumigrate.lock import lock_key
from herokumigrate.migration import MAX_FILE_BYTES
from support import (
    TEST_PASSWORD,
    TEST_ROLE,
    Result,
    Server,
    finish,
    run_cli,
    snapshot,
    spawn_cli,
    write_migrations,
)

pytestmark = pytest.mark.db

BANG = " !     "
MIGRATIONS = "db/migrations"

BASELINE = {
    "1_create_users.up.sql": (
        "CREATE TABLE users (\n"
        "  id bigserial PRIMARY KEY,\n"
        "  email text NOT NULL\n"
        ");\n"
        "INSERT INTO users (email) VALUES ('ada@example.com'), ('grace@example.com');\n"
    ),
    "1_create_users.down.sql": "DROP TABLE users;\n",
    "2_create_orders.sql": (
        "-- migrate:up\n"
        "CREATE TABLE orders (\n"
        "  id bigserial PRIMARY KEY,\n"
        "  user_id bigint NOT NULL REFERENCES users\n"
        ");\n"
        "INSERT INTO orders (user_id) VALUES (1);\n"
        "\n"
        "-- migrate:down\n"
        "DROP TABLE orders;\n"
    ),
    "3_index_users_email.up.sql": "CREATE INDEX users_email_idx ON users (email);\n",
    "3_index_users_email.down.sql": "DROP INDEX users_email_idx;\n",
}
GOOD_UP = "CREATE TABLE widgets (id bigint PRIMARY KEY);\n"


@dataclass
class Ctx:
    """One case's world: the app folder, the database, and what the CLI will be given."""

    server: Server
    dbname: str
    app: Path
    url: str | None
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # more values that must never be printed
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def migrations(self) -> Path:
        return self.app / MIGRATIONS


Prepare = Callable[[Ctx], None]


@dataclass(frozen=True)
class Case:
    """A bad input and what the runner must say about it."""

    id: str
    names: str  # the message line must contain this: the file, setting or command at fault
    fix: str  # the fix line must contain this
    args: tuple[str, ...] = ("up",)
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    prepare: Prepare | None = None
    exit: int = 2
    warning: str = ""  # the first line is a warning containing this, before the error block
    warning_lines: int = 0  # how many lines that warning takes
    offline: bool = False  # the files alone are wrong: `validate` must fail the same way
    unprivileged: bool = False  # run the CLI without root's power to read any file
    needs_passwords: bool = False  # only meaningful when the server checks passwords


# ----- preparations ------------------------------------------------------------------------


def _write(name: str, content: str | bytes) -> Prepare:
    def prepare(ctx: Ctx) -> None:
        path = ctx.migrations / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return prepare


def _delete(*names: str) -> Prepare:
    def prepare(ctx: Ctx) -> None:
        for name in names:
            (ctx.migrations / name).unlink()

    return prepare


def _set_env(**values: str) -> Prepare:
    def prepare(ctx: Ctx) -> None:
        ctx.env.update(values)

    return prepare


def _url_var_set_to_the_url(ctx: Ctx) -> None:
    """MIGRATE_DATABASE_URL_VAR given the database URL itself (password included), not the name
    of the config var that holds it."""
    assert ctx.url is not None
    ctx.env["MIGRATE_DATABASE_URL_VAR"] = ctx.url
    ctx.secrets.append(ctx.url)


def _config_file(text: str | bytes) -> Prepare:
    def prepare(ctx: Ctx) -> None:
        path = ctx.app / "migrate.toml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return prepare


def _all(*steps: Prepare) -> Prepare:
    def prepare(ctx: Ctx) -> None:
        for step in steps:
            step(ctx)

    return prepare


def _huge_file(ctx: Ctx) -> None:
    path = ctx.migrations / "4_huge.up.sql"
    path.write_text(GOOD_UP)
    os.truncate(path, MAX_FILE_BYTES + 1)  # sparse: no 64 MiB written to disk


def _unreadable_file(ctx: Ctx) -> None:
    path = ctx.migrations / "4_secret.up.sql"
    path.write_text(GOOD_UP)
    path.chmod(0)
    ctx.cleanup.append(lambda: path.chmod(0o644))


def _unreadable_folder(ctx: Ctx) -> None:
    ctx.migrations.chmod(0)
    ctx.cleanup.append(lambda: ctx.migrations.chmod(0o755))


def _symlink_outside(ctx: Ctx) -> None:
    outside = ctx.app.parent / "elsewhere.sql"
    outside.write_text(GOOD_UP)
    (ctx.migrations / "4_linked.up.sql").symlink_to(outside)


def _broken_symlink(ctx: Ctx) -> None:
    (ctx.migrations / "4_gone.up.sql").symlink_to(ctx.migrations / "4_missing_target.sql.bak")


def _no_folder(ctx: Ctx) -> None:
    shutil.rmtree(ctx.migrations)


def _folder_is_file(ctx: Ctx) -> None:
    shutil.rmtree(ctx.migrations)
    ctx.migrations.write_text("not a folder\n")


def _url(make: Callable[[Ctx], str | None]) -> Prepare:
    def prepare(ctx: Ctx) -> None:
        ctx.url = make(ctx)

    return prepare


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unreachable_url(ctx: Ctx) -> str:
    ctx.env.update(MIGRATE_CONNECT_WAIT="0", MIGRATE_CONNECT_TIMEOUT="2")
    return f"postgres://{TEST_ROLE}:{quote(TEST_PASSWORD, safe='')}@127.0.0.1:{_free_port()}/db"


def _pooler_port_url(ctx: Ctx) -> str:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 6432)) == 0:
            pytest.skip("something listens on 127.0.0.1:6432 on this machine")
    ctx.env.update(MIGRATE_CONNECT_WAIT="0", MIGRATE_CONNECT_TIMEOUT="2")
    return f"postgres://{TEST_ROLE}:{quote(TEST_PASSWORD, safe='')}@127.0.0.1:6432/{ctx.dbname}"


def _wrong_password_url(ctx: Ctx) -> str:
    wrong = "Wr0ng-" + TEST_PASSWORD[::-1]
    ctx.secrets.append(wrong)
    return ctx.server.url(ctx.dbname, password=wrong)


def _with_query(ctx: Ctx, query: str) -> str:
    base = ctx.server.url(ctx.dbname)
    return base + ("&" if "?" in base else "?") + query


def _dirty_golang_table(ctx: Ctx) -> None:
    with ctx.server.admin_conn(ctx.dbname) as conn:
        # The baseline's run created golang-migrate's table (its files are golang-migrate's);
        # a failed `migrate up` of 4 then left it dirty, as golang-migrate's SetVersion writes.
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY,"
            " dirty boolean NOT NULL)"
        )
        conn.execute("TRUNCATE schema_migrations")
        conn.execute("INSERT INTO schema_migrations VALUES (4, true)")
        conn.execute(
            sql.SQL("ALTER TABLE schema_migrations OWNER TO {}").format(sql.Identifier(TEST_ROLE))
        )
    (ctx.migrations / "4_add_widgets.up.sql").write_text(GOOD_UP)


def _hold_migration_lock(ctx: Ctx) -> None:
    conn = ctx.server.admin_conn(ctx.dbname)
    conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(ctx.dbname),))
    ctx.cleanup.append(conn.close)
    ctx.env["MIGRATE_LOCK_WAIT"] = "0"
    (ctx.migrations / "4_add_widgets.up.sql").write_text(GOOD_UP)


def _read_only_database(ctx: Ctx) -> None:
    """The database refuses writes by default (as a follower does, or a database an operator
    switched to read-only)."""
    statement = sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}")
    name = sql.Identifier(ctx.dbname)
    with ctx.server.admin_conn() as conn:
        conn.execute(statement.format(name, sql.SQL("on")))

    def undo() -> None:
        with ctx.server.admin_conn() as conn:
            conn.execute(statement.format(name, sql.SQL("off")))

    ctx.cleanup.append(undo)


def _revoke_insert_on_history(ctx: Ctx) -> None:
    """The role may read the history but not add to it (an operator's REVOKE, a read-mostly
    role given the URL)."""
    with ctx.server.admin_conn(ctx.dbname) as conn:
        conn.execute(
            sql.SQL("REVOKE INSERT ON heroku_migrate_history FROM {}").format(
                sql.Identifier(TEST_ROLE)
            )
        )


def _edit_applied(ctx: Ctx) -> None:
    path = ctx.migrations / "3_index_users_email.up.sql"
    path.write_text("CREATE INDEX users_email_idx ON users (lower(email));\n")


# ----- the corpus ---------------------------------------------------------------------------

NAME_FIX = "{version}_{title}.up.sql"

CASES = [
    # --- file names
    Case(
        "name-letters-as-version",
        "abc_add_widgets.up.sql",
        NAME_FIX,
        files={"abc_add_widgets.up.sql": GOOD_UP},
        offline=True,
    ),
    Case(
        "name-up-sql-without-version",
        "_add_widgets.up.sql",
        NAME_FIX,
        files={"_add_widgets.up.sql": GOOD_UP},
        offline=True,
    ),
    Case("name-bare-up-sql", "up.sql", NAME_FIX, files={"up.sql": GOOD_UP}, offline=True),
    Case(
        "name-version-without-underscore-title",
        "4.up.sql",
        NAME_FIX,
        files={"4.up.sql": GOOD_UP},
        offline=True,
    ),
    Case("name-no-version-at-all", "abc.sql", NAME_FIX, files={"abc.sql": GOOD_UP}, offline=True),
    Case(
        "name-uppercase-UP-is-read-as-dbmate",
        "4_add_widgets.UP.sql",
        ".up.sql",
        files={"4_add_widgets.UP.sql": GOOD_UP},
        offline=True,
    ),
    Case(
        "name-version-over-bigint",
        "9223372036854775808_x.up.sql",
        "2^63",
        files={"9223372036854775808_x.up.sql": GOOD_UP},
        offline=True,
    ),
    Case(
        "name-version-in-arabic-indic-digits",
        "\u0661_add_widgets.up.sql",
        "0-9",
        files={"\u0661_add_widgets.up.sql": GOOD_UP},  # Python's int() reads it as 1
        offline=True,
    ),
    Case(
        "name-holds-a-line-break",
        "'4_add\\nwidgets.up.sql'",
        "Rename",
        files={"4_add\nwidgets.up.sql": GOOD_UP},
        offline=True,
    ),
    Case(
        "name-holds-a-terminal-escape",
        "'4_add\\x1b[2Jwidgets.up.sql'",
        "Rename",
        files={"4_add\x1b[2Jwidgets.up.sql": GOOD_UP},
        offline=True,
    ),
    Case(
        "name-ends-in-a-line-break",
        "'4_add_widgets.up.sql\\n'",
        "Rename",
        files={"4_add_widgets.up.sql\n": GOOD_UP},
        offline=True,
    ),
    # --- duplicate and unpaired versions
    Case(
        "dup-two-up-files",
        "4_b.up.sql",
        "rename one",
        files={"4_a.up.sql": GOOD_UP, "4_b.up.sql": GOOD_UP},
        offline=True,
    ),
    Case(
        "dup-leading-zeros",
        "4_a.up.sql",
        "rename one",
        files={"04_a.up.sql": GOOD_UP, "4_a.up.sql": GOOD_UP},
        offline=True,
    ),
    Case(
        "dup-golang-and-dbmate",
        "4_b.sql",
        "rename one",
        files={"4_a.up.sql": GOOD_UP, "4_b.sql": "-- migrate:up\n" + GOOD_UP},
        offline=True,
    ),
    Case(
        "dup-against-applied-version",
        "3_other.sql",
        "rename one",
        files={"3_other.sql": "-- migrate:up\n" + GOOD_UP},
        offline=True,
    ),
    Case(
        "down-without-up",
        "4_add_widgets.down.sql",
        "4_add_widgets.up.sql",
        files={"4_add_widgets.down.sql": "DROP TABLE widgets;\n"},
        offline=True,
    ),
    Case(
        "down-without-up-beside-dbmate-file",
        "4_add_widgets.down.sql",
        "migrate:down",
        files={
            "4_add_widgets.sql": "-- migrate:up\n" + GOOD_UP,
            "4_add_widgets.down.sql": "DROP TABLE widgets;\n",
        },
        offline=True,
    ),
    Case(
        "two-down-files",
        "4_b.down.sql",
        "one .down.sql",
        files={
            "4_a.up.sql": GOOD_UP,
            "4_a.down.sql": "DROP TABLE widgets;\n",
            "4_b.down.sql": "DROP TABLE widgets;\n",
        },
        offline=True,
    ),
    Case(
        "down-title-differs",
        "4_remove_widgets.down.sql",
        "same {version}_{title}",
        files={
            "4_add_widgets.up.sql": GOOD_UP,
            "4_remove_widgets.down.sql": "DROP TABLE widgets;\n",
        },
        offline=True,
    ),
    # --- dbmate markers
    Case(
        "single-file-without-dbmate-or-goose-annotation",
        "4_add_widgets.sql",
        "-- +goose Up",
        files={"4_add_widgets.sql": GOOD_UP},
        offline=True,
    ),
    Case(
        "dbmate-up-marker-twice",
        "4_add_widgets.sql: line 3",
        "one '-- migrate:up'",
        files={"4_add_widgets.sql": "-- migrate:up\n" + GOOD_UP + "-- migrate:up\nSELECT 1;\n"},
        offline=True,
    ),
    Case(
        "dbmate-down-marker-twice",
        "4_add_widgets.sql: line 5",
        "one '-- migrate:down'",
        files={
            "4_add_widgets.sql": "-- migrate:up\n"
            + GOOD_UP
            + "-- migrate:down\nDROP TABLE widgets;\n-- migrate:down\nSELECT 1;\n"
        },
        offline=True,
    ),
    Case(
        "dbmate-down-before-up",
        "4_add_widgets.sql",
        "up section first",
        files={
            "4_add_widgets.sql": "-- migrate:down\nDROP TABLE widgets;\n-- migrate:up\n" + GOOD_UP
        },
        offline=True,
    ),
    Case(
        "dbmate-unknown-marker",
        "4_add_widgets.sql: line 3",
        "'-- migrate:up'",
        files={"4_add_widgets.sql": "-- migrate:up\n" + GOOD_UP + "-- migrate:sideways\n"},
        offline=True,
    ),
    Case(
        "dbmate-unknown-option",
        "4_add_widgets.sql: line 1",
        "transaction:false",
        files={"4_add_widgets.sql": "-- migrate:up transaction:sometimes\n" + GOOD_UP},
        offline=True,
    ),
    Case(
        "dbmate-sql-before-up-marker",
        "4_add_widgets.sql",
        "below '-- migrate:up'",
        files={"4_add_widgets.sql": "SELECT 1;\n-- migrate:up\n" + GOOD_UP},
        offline=True,
    ),
    # --- goose annotations
    Case(
        "goose-envsub-on",
        "4_add_widgets.sql: line 2",
        "Write the values into the SQL",
        files={"4_add_widgets.sql": "-- +goose Up\n-- +goose ENVSUB ON\n" + GOOD_UP},
        offline=True,
    ),
    Case(
        "goose-statement-begin-never-closed",
        "4_add_widgets.sql: line 2",
        "StatementEnd",
        files={"4_add_widgets.sql": "-- +goose Up\n-- +goose StatementBegin\n" + GOOD_UP},
        offline=True,
    ),
    Case(
        "goose-and-dbmate-annotations-in-one-file",
        "4_add_widgets.sql",
        "one format per file",
        files={"4_add_widgets.sql": "-- +goose Up\n" + GOOD_UP + "-- migrate:down\n"},
        offline=True,
    ),
    # --- encodings and sizes
    Case(
        "latin1-file",
        "4_add_widgets.up.sql: line 2",
        "UTF-8",
        files={
            "4_add_widgets.up.sql": b"CREATE TABLE widgets (id int);\n"
            b"COMMENT ON TABLE widgets IS 'caf\xe9';\n"
        },
        offline=True,
    ),
    Case(
        "binary-file",
        "4_add_widgets.up.sql",
        "UTF-8",
        files={"4_add_widgets.up.sql": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"},
        offline=True,
    ),
    Case("huge-file", "4_huge.up.sql", "Split", prepare=_huge_file, offline=True),
    Case(
        "unreadable-file",
        "4_secret.up.sql",
        "chmod",
        prepare=_unreadable_file,
        offline=True,
        unprivileged=True,
    ),
    # --- links and folders
    Case(
        "symlink-outside-app",
        "4_linked.up.sql",
        "file itself",
        prepare=_symlink_outside,
        offline=True,
    ),
    Case("broken-symlink", "4_gone.up.sql", "file itself", prepare=_broken_symlink, offline=True),
    Case("migrations-folder-missing", MIGRATIONS, "mkdir -p", prepare=_no_folder, offline=True),
    Case(
        "migrations-path-is-a-file",
        MIGRATIONS,
        "MIGRATE_PATH",
        prepare=_folder_is_file,
        offline=True,
    ),
    Case(
        "migrations-folder-unreadable",
        MIGRATIONS,
        "chmod",
        prepare=_unreadable_folder,
        offline=True,
        unprivileged=True,
    ),
    Case(
        "path-flag-to-missing-folder",
        "db/elsewhere",
        "mkdir",
        args=("up", "--path", "db/elsewhere"),
        offline=True,
    ),
    # --- SQL the runner cannot send
    Case(
        "psql-meta-command",
        "4_add_widgets.up.sql: line 2",
        "4_add_widgets.up.sql",
        files={"4_add_widgets.up.sql": GOOD_UP + "\\connect other\nSELECT 1;\n"},
        offline=True,
    ),
    Case(
        "unterminated-quote",
        "4_add_widgets.up.sql: line 3",
        "4_add_widgets.up.sql",
        files={"4_add_widgets.up.sql": GOOD_UP + "\nCOMMENT ON TABLE widgets IS 'oops;\n"},
        offline=True,
    ),
    Case(
        "unterminated-dollar-body",
        "4_add_widgets.up.sql: line 2",
        "4_add_widgets.up.sql",
        files={"4_add_widgets.up.sql": GOOD_UP + "DO $body$ BEGIN\n  PERFORM 1;\nEND;\n"},
        offline=True,
    ),
    Case(
        "unterminated-comment-in-dbmate-section",
        "4_add_widgets.sql: line 4",
        "4_add_widgets.sql",
        files={"4_add_widgets.sql": "-- migrate:up\n" + GOOD_UP + "\n/* never closed\nSELECT 1;\n"},
        offline=True,
    ),
    # --- migrate.toml
    Case(
        "toml-syntax-error",
        "migrate.toml",
        "toml.io",
        prepare=_config_file("path = 'db/migrations\n"),
        offline=True,
    ),
    Case(
        "toml-unknown-key",
        "migrate.toml: unknown key 'lock_wiat'",
        "lock_wait",
        prepare=_config_file("lock_wiat = 5\n"),
        offline=True,
    ),
    Case(
        "toml-unknown-key-beside-migrate-table",
        "migrate.toml: unknown key 'path'",
        "[migrate]",
        prepare=_config_file("path = 'db/migrations'\n[migrate]\nretries = 1\n"),
        offline=True,
    ),
    Case(
        "toml-lock-wait-not-a-number",
        "lock_wait",
        "a number of seconds",
        prepare=_config_file("lock_wait = 'soon'\n"),
        offline=True,
    ),
    Case(
        "toml-transaction-unknown-mode",
        "transaction",
        "release, migration",
        prepare=_config_file("[migrate]\ntransaction = 'sometimes'\n"),
        offline=True,
    ),
    Case(
        "toml-retries-negative",
        "retries",
        "a number from 0 to",
        prepare=_config_file("retries = -1\n"),
        offline=True,
    ),
    Case(
        "toml-retries-fraction",
        "retries",
        "whole number",
        prepare=_config_file("retries = 2.5\n"),
        offline=True,
    ),
    Case(
        "toml-allow-changed-string",
        "allow_changed",
        "true or false",
        prepare=_config_file("allow_changed = 'perhaps'\n"),
        offline=True,
    ),
    Case(
        "toml-not-utf8",
        "migrate.toml",
        "UTF-8",
        prepare=_config_file(b"# r\xe9glages\npath = 'db/migrations'\n"),
        offline=True,
    ),
    # --- MIGRATE_* environment
    Case(
        "env-lock-wait-soon",
        "MIGRATE_LOCK_WAIT",
        "lock_wait",
        prepare=_set_env(MIGRATE_LOCK_WAIT="soon"),
        offline=True,
    ),
    Case(
        "env-transaction-sometimes",
        "MIGRATE_TRANSACTION",
        "release, migration",
        prepare=_set_env(MIGRATE_TRANSACTION="sometimes"),
        offline=True,
    ),
    Case(
        "env-retries-negative",
        "MIGRATE_RETRIES",
        "a number from 0 to",
        prepare=_set_env(MIGRATE_RETRIES="-1"),
        offline=True,
    ),
    Case(
        "env-allow-changed-maybe",
        "MIGRATE_ALLOW_CHANGED",
        "true or false",
        prepare=_set_env(MIGRATE_ALLOW_CHANGED="maybe"),
        offline=True,
    ),
    Case(
        "env-path-blank", "MIGRATE_PATH", "path", prepare=_set_env(MIGRATE_PATH="   "), offline=True
    ),
    # Values that parse as numbers but that no timeout can hold: they must be refused as
    # settings, not crash (int(inf)) or reach PostgreSQL (lock_timeout is an int of ms).
    Case(
        "env-connect-timeout-infinite",
        "MIGRATE_CONNECT_TIMEOUT",
        "connect_timeout",
        prepare=_set_env(MIGRATE_CONNECT_TIMEOUT="inf"),
        offline=True,
    ),
    Case(
        "env-lock-timeout-beyond-postgres-range",
        "MIGRATE_LOCK_TIMEOUT",
        "lock_timeout",
        files={"4_add_widgets.up.sql": GOOD_UP},
        prepare=_set_env(MIGRATE_LOCK_TIMEOUT="10000000"),
        offline=True,
    ),
    Case(
        "toml-statement-timeout-infinite",
        "statement_timeout",
        "statement_timeout",
        files={"4_add_widgets.up.sql": GOOD_UP},
        prepare=_config_file("statement_timeout = inf\n"),
        offline=True,
    ),
    Case(
        "env-url-var-unset",
        "HEROKU_POSTGRESQL_RED_URL",
        "HEROKU_POSTGRESQL_RED_URL",
        prepare=_set_env(MIGRATE_DATABASE_URL_VAR="HEROKU_POSTGRESQL_RED_URL"),
    ),
    Case(
        "env-url-var-is-the-url",
        "MIGRATE_DATABASE_URL_VAR: database_url_var holds a URL",
        "not to its value: e.g. MIGRATE_DATABASE_URL_VAR=HEROKU_POSTGRESQL_RED_URL",
        prepare=_url_var_set_to_the_url,
        offline=True,
    ),
    Case(
        "toml-url-var-not-a-name",
        "migrate.toml: database_url_var holds something that is not a config var's name",
        "MIGRATE_DATABASE_URL_VAR=HEROKU_POSTGRESQL_RED_URL",
        prepare=_config_file('database_url_var = "u:pw@db.example.com/x"\n'),
        offline=True,
    ),
    # --- flags and commands
    Case(
        "flag-lock-wait-negative",
        "--lock-wait",
        "a number from 0 to",
        args=("up", "--lock-wait=-3"),
        offline=True,
    ),
    Case("flag-unknown", "--frobnicate", "--help", args=("up", "--frobnicate")),
    Case("command-unknown", "upp", "--help", args=("upp",)),
    Case("command-missing", "command", "heroku-migrate up", args=()),
    Case("down-without-yes", "down 1", "--yes", args=("down", "1")),
    Case("down-zero", "down", "--help", args=("down", "0", "--yes")),
    Case(
        "down-of-migration-without-down",
        "3_index_users_email.up.sql",
        "migrate:down",
        args=("down", "1", "--yes"),
        prepare=_delete("3_index_users_email.down.sql"),
    ),
    Case("goto-unknown-version", "version 99", "heroku-migrate status", args=("goto", "99")),
    Case("goto-back-without-yes", "goto 1", "--yes", args=("goto", "1")),
    Case("force-non-numeric", "abc", "--help", args=("force", "abc")),
    Case("force-unknown-version", "version 99", "heroku-migrate status", args=("force", "99")),
    Case("new-name-without-letters", "'!!!'", "heroku-migrate new", args=("new", "!!!")),
    # --- the database URL
    Case("url-unset", "DATABASE_URL", "heroku addons:create", prepare=_url(lambda c: None)),
    Case("url-empty", "DATABASE_URL", "heroku addons:create", prepare=_url(lambda c: "")),
    Case("url-blank", "DATABASE_URL", "heroku addons:create", prepare=_url(lambda c: "  ")),
    Case(
        "url-not-a-url",
        "DATABASE_URL",
        "postgres://USER:PASSWORD@HOST:5432/DBNAME",
        prepare=_url(lambda c: "not a url"),
    ),
    Case(
        "url-mysql-scheme",
        "DATABASE_URL",
        "postgres://USER:PASSWORD@HOST:5432/DBNAME",
        prepare=_url(
            lambda c: (
                f"mysql://{TEST_ROLE}:{quote(TEST_PASSWORD, safe='')}@127.0.0.1:3306/{c.dbname}"
            )
        ),
    ),
    Case(
        "url-unknown-database",
        "DATABASE_URL",
        "database name",
        prepare=_url(lambda c: c.server.url(c.dbname + "_nope")),
    ),
    Case(
        "url-wrong-password",
        "DATABASE_URL",
        "credentials",
        prepare=_url(_wrong_password_url),
        needs_passwords=True,
    ),
    Case(
        "url-port-not-a-number",
        "DATABASE_URL",
        "DATABASE_URL",
        prepare=_url(lambda c: _with_query(c, "port=fivefourthreetwo")),
    ),
    Case(
        "url-bad-sslmode",
        "DATABASE_URL",
        "DATABASE_URL",
        prepare=_url(lambda c: _with_query(c, "sslmode=sometimes")),
    ),
    Case(
        "url-unreachable-host",
        "DATABASE_URL",
        "MIGRATE_CONNECT_WAIT",
        prepare=_url(_unreachable_url),
    ),
    Case(
        "url-unresolvable-host",
        "DATABASE_URL",
        "MIGRATE_CONNECT_WAIT",
        prepare=_all(
            _set_env(MIGRATE_CONNECT_WAIT="0", MIGRATE_CONNECT_TIMEOUT="2"),
            _url(
                lambda c: (
                    f"postgres://{TEST_ROLE}:{quote(TEST_PASSWORD, safe='')}"
                    "@no-such-host.invalid:5432/db"
                )
            ),
        ),
    ),
    Case(
        "url-pooler-port-unreachable",
        "DATABASE_URL",
        "MIGRATE_CONNECT_WAIT",
        prepare=_url(_pooler_port_url),
    ),
    Case(
        "copy-to-stdout",
        "4_export.up.sql: line 2",
        "psql",
        files={"4_export.up.sql": GOOD_UP + "COPY users TO stdout;\n"},
        offline=True,
    ),
    Case(
        "copy-from-stdin-without-data",
        "4_seed.up.sql: line 2",
        "\\.",
        files={"4_seed.up.sql": GOOD_UP + "COPY widgets FROM stdin;\n1\n2\n"},
        offline=True,
    ),
    Case(
        "url-options-unknown-setting",
        "'no_such_setting'",
        "options parameter of DATABASE_URL",
        prepare=_url(lambda c: _with_query(c, "options=-c%20no_such_setting%3Dx")),
    ),
    # --- the database's state
    Case(
        "database-read-only",
        "read-only",
        "MIGRATE_DATABASE_URL_VAR",
        files={"4_add_widgets.up.sql": GOOD_UP},
        prepare=_read_only_database,
    ),
    Case(
        "database-read-only-down",
        "read-only",
        "MIGRATE_DATABASE_URL_VAR",
        args=("down", "1", "--yes"),
        prepare=_read_only_database,
    ),
    Case(
        "history-insert-not-granted",
        'lacks INSERT on "public"."heroku_migrate_history"',
        'GRANT INSERT ON "public"."heroku_migrate_history" TO "hm_tester";',
        files={"4_add_widgets.up.sql": GOOD_UP},
        prepare=_revoke_insert_on_history,
    ),
    Case(
        "url-options-read-only",
        "default_transaction_read_only = on",
        "MIGRATE_DATABASE_URL_VAR",
        files={"4_add_widgets.up.sql": GOOD_UP},
        prepare=_url(lambda c: _with_query(c, "options=-c%20default_transaction_read_only%3Don")),
    ),
    Case(
        "golang-migrate-table-dirty",
        "schema_migrations",
        "heroku-migrate force",
        prepare=_dirty_golang_table,
    ),
    Case(
        "applied-file-edited",
        "3_index_users_email.up.sql",
        "MIGRATE_ALLOW_CHANGED",
        prepare=_edit_applied,
    ),
    Case(
        "applied-file-edited-plan-refuses",
        "3_index_users_email.up.sql",
        "MIGRATE_ALLOW_CHANGED",
        args=("plan",),
        prepare=_edit_applied,
    ),
    # --- documented non-2 exits
    Case(
        "lock-held-by-another-run",
        "lock",
        "MIGRATE_LOCK_WAIT",
        exit=3,
        prepare=_hold_migration_lock,
    ),
    Case(
        "runtime-sql-error-rolls-back",
        "4_add_widgets.up.sql: line 3",
        "push again",
        exit=1,
        files={
            "4_add_widgets.up.sql": GOOD_UP + "INSERT INTO widgets VALUES (1);\n"
            "INSERT INTO no_such_table VALUES (1);\n"
        },
    ),
]


# ----- machinery ----------------------------------------------------------------------------


def _db_state(server: Server, dbname: str, *, with_log: bool) -> tuple[object, ...]:
    """Schema dump, history rows, and a digest of the rows of every table."""
    dump, rows = snapshot(server, dbname)
    digests = []
    with server.admin_conn(dbname) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.relkind = 'r'"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            if not with_log and str(table).endswith("_log"):
                continue  # the event log records a failed run by design
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY"
                    " t::text), '')) FROM {} t"
                ).format(sql.Identifier(schema, table))
            ).fetchone()
            digests.append((schema, table, row))
    return dump, rows, digests


def _files_state(app: Path) -> dict[str, str]:
    state = {}
    for path in sorted(app.rglob("*")):
        rel = str(path.relative_to(app))
        if path.is_symlink():
            state[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            try:
                info = path.stat()
                state[rel] = f"{info.st_size} {info.st_mode:o}"
                if info.st_size < 1 << 20 and os.access(path, os.R_OK):
                    state[rel] += " " + hashlib.sha256(path.read_bytes()).hexdigest()
            except PermissionError:
                state[rel] = "unreadable"
        else:
            state[rel] = "dir"
    return state


def _unprivileged_prefix() -> list[str]:
    """A command prefix under which a mode-000 file cannot be read, even by root."""
    if os.geteuid() != 0:
        return []
    # A new user namespace without a uid map keeps the kernel uid 0 (so the interpreter under
    # /root still runs) but drops CAP_DAC_OVERRIDE for files of unmapped owners.
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True, check=False)
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip("running as root, who reads any file, and no user namespace is available")
    return ["unshare", "--user"]


def _run(
    case: Case, args: list[str], ctx: Ctx, *, database_url: str | None, timeout: float = 120
) -> Result:
    if not case.unprivileged:
        result = run_cli(args, cwd=ctx.app, database_url=database_url, env=ctx.env)
    else:
        proc = spawn_cli(
            args,
            cwd=ctx.app,
            database_url=database_url,
            env=ctx.env,
            prefix=tuple(_unprivileged_prefix()),
        )
        result = finish(proc, timeout)
    for secret in ctx.secrets:
        assert secret not in result.output, "a password leaked into the output"
    return result


def assert_error_block(
    result: Result,
    exit_code: int,
    names: str,
    fix: str,
    *,
    warning: str = "",
    warning_lines: int = 0,
) -> str:
    """The one error block on stderr; returns its message line."""
    shown = f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == exit_code, shown
    assert BANG not in result.stdout, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, shown
    assert all(line.startswith(BANG) for line in lines), shown
    texts = [line[len(BANG) :] for line in lines]
    if warning:
        assert warning in texts[0], shown
        texts = texts[warning_lines:]
    block_size = len(texts)
    assert 2 <= block_size <= 4, f"expected one error block (message, fix):\n{shown}"
    message, fix_line = texts[0], texts[-1]
    assert names in message, f"the message line must name {names!r}:\n{shown}"
    assert fix in fix_line, f"the fix line must say {fix!r}:\n{shown}"
    assert fix_line != message, shown
    assert message, shown
    assert message.strip() == message, shown
    assert result.stderr.count(message) == 1, f"the error is printed once:\n{shown}"
    return message


@pytest.fixture
def baseline_ctx(pg_server: Server, dbname: str, database_url: str, app: Path) -> Iterator[Ctx]:
    """An app whose baseline migrations are applied to a fresh database."""
    write_migrations(app, BASELINE)
    first = run_cli(["up"], cwd=app, database_url=database_url)
    assert first.returncode == 0, first.output
    ctx = Ctx(pg_server, dbname, app, database_url)
    yield ctx
    for undo in reversed(ctx.cleanup):
        undo()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, baseline_ctx: Ctx, pg_server: Server) -> None:
    ctx = baseline_ctx
    if case.needs_passwords and not pg_server.enforces_passwords:
        pytest.skip(f"{pg_server.label} accepts any password (trust auth): no wrong password")
    for name, content in case.files.items():
        _write(name, content)(ctx)
    if case.prepare is not None:
        case.prepare(ctx)
    with_log = case.exit != 1
    db_before = _db_state(pg_server, ctx.dbname, with_log=with_log)
    files_before = _files_state(ctx.app)

    result = _run(case, list(case.args), ctx, database_url=ctx.url)
    message = assert_error_block(
        result,
        case.exit,
        case.names,
        case.fix,
        warning=case.warning,
        warning_lines=case.warning_lines,
    )

    if case.offline:
        assert case.args[0] == "up", "offline cases are release runs"
        offline = _run(case, ["validate", *case.args[1:]], ctx, database_url=None)
        offline_message = assert_error_block(offline, case.exit, case.names, case.fix)
        assert offline_message == message, "validate and up must report the same error"

    assert _files_state(ctx.app) == files_before, "a failed run must not touch the app's files"
    assert _db_state(pg_server, ctx.dbname, with_log=with_log) == db_before, (
        "a failed run must leave the database exactly as it was"
    )


def test_every_bad_file_is_reported_in_one_run(baseline_ctx: Ctx, pg_server: Server) -> None:
    ctx = baseline_ctx
    bad = {
        "4_no_annotation.sql": GOOD_UP,
        "5_add\nwidgets.up.sql": GOOD_UP,
        "\u0661_arabic.up.sql": GOOD_UP,
        "06_six.up.sql": GOOD_UP,
        "6_six_again.up.sql": GOOD_UP,
    }
    for name, content in bad.items():
        _write(name, content)(ctx)
    db_before = _db_state(pg_server, ctx.dbname, with_log=True)
    expected = [
        "4_no_annotation.sql: has neither",
        "'5_add\\nwidgets.up.sql': the file name holds",
        "6_six_again.up.sql: version 6 is also used by 06_six.up.sql",
        "\u0661_arabic.up.sql: the version",
    ]
    for args in (["validate"], ["up"]):
        result = _run(Case("all", "", ""), args, ctx, database_url=ctx.url)
        shown = f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
        assert result.returncode == 2, shown
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert all(line.startswith(BANG) for line in lines), shown
        texts = [line[len(BANG) :] for line in lines]
        assert texts[0] == "4 problems in the migration files:", shown
        assert [t[: len(e)] for t, e in zip(texts[1:5], expected, strict=True)] == expected, shown
        assert "heroku-migrate validate" in texts[5], shown
        assert len(texts) == 6, shown
    assert _db_state(pg_server, ctx.dbname, with_log=True) == db_before


# ----- warnings, not failures ---------------------------------------------------------------


@dataclass(frozen=True)
class WarningCase:
    """An input that deserves a warning but must not fail the release."""

    id: str
    prepare: Prepare
    warning: tuple[str, ...]  # each must appear in one ` !     ` line
    args: tuple[str, ...] = ("up",)
    # An accepted edit is recorded (the checksum and a log row), once: then all is quiet.
    accepts_edit: bool = False


WARNING_CASES = [
    WarningCase(
        "applied-file-edited-but-allowed",
        _all(_edit_applied, _set_env(MIGRATE_ALLOW_CHANGED="true")),
        ("3_index_users_email.up.sql",),
        accepts_edit=True,
    ),
    WarningCase(
        "applied-file-edited-allowed-by-flag",
        _edit_applied,
        ("3_index_users_email.up.sql",),
        args=("up", "--allow-changed"),
        accepts_edit=True,
    ),
    WarningCase(
        "database-ahead-of-files-after-rollback",
        _delete("3_index_users_email.up.sql", "3_index_users_email.down.sql"),
        ("1 migration(s)", ": 3", "heroku rollback"),
    ),
]


@pytest.mark.parametrize("case", WARNING_CASES, ids=[c.id for c in WARNING_CASES])
def test_warning_not_failure(case: WarningCase, baseline_ctx: Ctx, pg_server: Server) -> None:
    ctx = baseline_ctx
    case.prepare(ctx)
    db_before = _db_state(pg_server, ctx.dbname, with_log=True)
    result = run_cli(list(case.args), cwd=ctx.app, database_url=ctx.url, env=ctx.env)
    shown = f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0, shown
    bang = [line[len(BANG) :] for line in result.stderr.splitlines() if line.startswith(BANG)]
    for expected in case.warning:
        assert any(expected in line for line in bang), f"no warning saying {expected!r}:\n{shown}"
    assert all(line.startswith(BANG) for line in result.stderr.splitlines() if line.strip())
    if case.accepts_edit:
        assert "Accepted the edit of 3_index_users_email" in result.stdout, shown
        after = _db_state(pg_server, ctx.dbname, with_log=True)
        assert after[0] == db_before[0], "the schema changed"
        assert after[1] != db_before[1], "the accepted checksum was not recorded"
        again = run_cli(list(case.args), cwd=ctx.app, database_url=ctx.url, env=ctx.env)
        assert again.returncode == 0, again.output
        assert again.stderr == "", again.output
        assert "up to date" in again.stdout.lower(), again.output
        return
    assert "up to date" in result.stdout.lower(), shown
    assert _db_state(pg_server, ctx.dbname, with_log=True) == db_before, shown


# ----- secrets inside libpq's own messages --------------------------------------------------


def _conninfo_quote(value: str) -> str:
    """A value for a single-quoted libpq conninfo field: backslash and quote escaped."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _leaky_urls(server: Server, dbname: str) -> dict[str, str]:
    pw = quote(TEST_PASSWORD, safe="")
    auth = f"{TEST_ROLE}:{pw}"
    return {
        "unknown-host": f"postgres://{auth}@no-such-host.invalid:5432/{dbname}",
        "nothing-listening": f"postgres://{auth}@127.0.0.1:{_free_port()}/{dbname}",
        "unknown-database": server.url(dbname + "_missing"),
        # libpq quotes a bad option value verbatim; here the value is the password itself.
        "password-as-sslmode": f"postgres://{auth}@127.0.0.1:5432/{dbname}?sslmode={pw}",
        "password-as-port": f"postgres://{auth}@127.0.0.1:5432/{dbname}?port={pw}",
        "password-in-conninfo": f"host=127.0.0.1 port={_free_port()} dbname={dbname}"
        f" user={TEST_ROLE} password='{_conninfo_quote(TEST_PASSWORD)}'",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "unknown-host",
        "nothing-listening",
        "unknown-database",
        "password-as-sslmode",
        "password-as-port",
        "password-in-conninfo",
    ],
)
@pytest.mark.parametrize("command", ["up", "status"])
def test_password_never_printed_even_in_libpq_errors(
    kind: str, command: str, pg_server: Server, dbname: str, app: Path
) -> None:
    write_migrations(app, {"1_a.up.sql": GOOD_UP})
    url = _leaky_urls(pg_server, dbname)[kind]
    # run_cli asserts that neither the raw nor the URL-encoded password is printed.
    result = run_cli(
        [command],
        cwd=app,
        database_url=url,
        env={"MIGRATE_CONNECT_WAIT": "0", "MIGRATE_CONNECT_TIMEOUT": "2"},
    )
    assert_error_block(result, 2, "DATABASE_URL", "")


def test_wrong_password_is_rejected_without_echoing_it(
    pg_server: Server, dbname: str, app: Path
) -> None:
    if not pg_server.enforces_passwords:
        pytest.skip(f"{pg_server.label} accepts any password (trust auth): no wrong password")
    write_migrations(app, {"1_a.up.sql": GOOD_UP})
    wrong = "Wr0ng:" + TEST_PASSWORD
    result = run_cli(["up"], cwd=app, database_url=pg_server.url(dbname, password=wrong))
    assert result.returncode == 2, result.output
    assert wrong not in result.output
    assert "password authentication failed" in result.stderr, result.output
    with psycopg.connect(pg_server.url(dbname)) as conn:
        found = conn.execute("SELECT to_regclass('widgets')").fetchone()
    assert found == (None,)
