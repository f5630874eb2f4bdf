"""The format seam, tried with a format made here: a Flyway-like `T<dotted>__<title>.sql` whose
versions are not integers (1.9 < 1.10 < 2) and whose tool keeps a table of rich rows. Registered
for the test only, it goes through `up` as a real format would: the folder read, our history
created with a text version column, the tool's table created, found again under its own name,
and given each migration with its duration; a second `up` has nothing to do.
"""

from __future__ import annotations

import io
import re
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import psycopg
import pytest
from psycopg import sql

from herokumigrate import formats
from herokumigrate.config import load_config
from herokumigrate.formats import Claim, FolderCandidate, FolderEntry, FolderReader, NewFile
from herokumigrate.migration import Migration, sha256_of
from herokumigrate.migrator import Migrator
from herokumigrate.native import NativeName, NativeTable, VersionSetTable
from herokumigrate.output import Output
from herokumigrate.sections import SqlSection
from herokumigrate.source import load_migrations
from herokumigrate.tools import TOOL_NAMES
from herokumigrate.versions import Version
from support import rows, scalar, write_migrations

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from herokumigrate.native import Conn, NativeChange

pytestmark = pytest.mark.db

_NAME = re.compile(r"^T([0-9]+(?:\.[0-9]+)*)__(.+)\.sql$")


class DottedVersions:
    """Numeric dotted parts; trailing zero parts ignored (`1.0` is `1`)."""

    name = "dotted"
    column_type: Literal["bigint", "text"] = "text"

    def parse(self, written: str) -> Version:
        parts = [int(part) for part in written.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return Version(tuple(parts), ".".join(map(str, parts)), written)


class ToyTable(VersionSetTable):
    """The tool's table: a row per applied migration, with its description, checksum, time."""

    tool: ClassVar = "toyway"  # type: ignore[assignment]
    default_table: ClassVar[str] = "toy_schema_history"
    up_command: ClassVar[str] = "toyway migrate"

    @classmethod
    def recognizes(cls, columns: Mapping[str, str]) -> bool:
        return columns.get("installed_rank") == "integer"

    @classmethod
    def read(cls, conn: Conn, name: NativeName) -> ToyTable:
        found = conn.execute(sql.SQL("SELECT version FROM {}").format(name.ident)).fetchall()
        return cls(frozenset(DottedVersions().parse(str(v)) for (v,) in found), name)

    def create(self, conn: Conn) -> None:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (installed_rank integer PRIMARY KEY, version text,"
                " description text, checksum text, execution_time double precision)"
            ).format(self.name.ident)
        )

    def follow(self, conn: Conn, change: NativeChange) -> None:
        for applied in change.recorded:
            m = applied.migration
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} SELECT coalesce(max(installed_rank), 0) + 1, %s, %s, %s, %s"
                    " FROM {}"
                ).format(self.name.ident, self.name.ident),
                (m.version.written, m.name, m.checksum, applied.duration_ms),
            )


class ToyFormat:
    name = "toyway"
    syntax = DottedVersions()
    nested = False
    naming = "T{version}__{title}.sql (toyway)"

    def claim(self, entry: FolderEntry, folder: FolderReader) -> Claim | None:
        found = _NAME.match(entry.name)
        if entry.is_folder or found is None:
            return None
        return Claim(entry, self.syntax.parse(found.group(1)), found.group(2))

    def assemble(
        self, version: Version, parts: list[Claim], folder: FolderReader
    ) -> Migration | None:
        path = parts[0].entry.path
        text = folder.text(path)
        section = SqlSection(path, text)
        checksum = sha256_of(text, 0, len(text))
        return Migration(version, parts[0].title, self.name, section, checksum)  # type: ignore[arg-type]

    def folders(self, app_dir: Path) -> list[FolderCandidate]:
        del app_dir
        return [FolderCandidate("db/toyway", "toyway's folder")]

    def native_table(self) -> type[NativeTable]:
        return ToyTable

    def new_files(self, version: str, slug: str, title: str) -> list[NewFile]:
        return [NewFile(f"T{version}__{slug}.sql", f"-- {title}\n")]


@pytest.fixture
def toyway(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy format, registered after the others for this test."""
    module = types.ModuleType("herokumigrate.formats.toyway")
    module.FORMAT = ToyFormat()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(formats, "TOOL_NAMES", (*TOOL_NAMES, "toyway"))


def test_a_format_with_dotted_versions_plugs_into_the_seam(
    toyway: None, app: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_migrations(
        app,
        {
            "T2__c.sql": "CREATE TABLE c (id int);\n",
            "T1.10__b.sql": "CREATE TABLE b (id int);\nCREATE INDEX CONCURRENTLY b_id ON b (id);\n",
            "T1.9__a.sql": "CREATE TABLE a (id int);\n",
        },
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    config = load_config(app, {})
    out = io.StringIO()
    migrator = Migrator(config, Output(out, out, color=False))
    files = load_migrations(config.migrations_dir, app)
    assert [m.version.canonical for m in files] == ["1.9", "1.10", "2"]

    assert migrator.up(files).applied == 3, out.getvalue()
    applied = [line.split()[0] for line in out.getvalue().splitlines() if " ms)" in line]
    assert applied == ["1.9_a", "1.10_b", "2_c"], out.getvalue()
    with psycopg.connect(database_url) as conn:
        column = scalar(
            conn,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'heroku_migrate_history'::regclass AND attname = 'version'",
        )
        assert column == "text"
        tool_rows = rows(
            conn, "SELECT version, description, execution_time FROM toy_schema_history"
        )
    assert [(v, d) for v, d, _ in tool_rows] == [("1.9", "a"), ("1.10", "b"), ("2", "c")]
    # Its time in the run: the concurrent build's, committed before b's row, included.
    assert all(float(str(ms)) > 0 for _, _, ms in tool_rows), tool_rows

    again = migrator.up(load_migrations(config.migrations_dir, app))
    assert again.up_to_date, out.getvalue()
    assert again.recorded == 3
