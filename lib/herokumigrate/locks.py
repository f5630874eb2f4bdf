"""The locks each migration takes, observed while `plan` rehearses the release.

`plan` runs every pending migration in one transaction that is rolled back. After each
migration, `pg_locks` of our own backend says which relation locks it added (a transaction keeps
them to its end), and `pg_class.relfilenode` says whether it gave a table or an index new storage:
a rewrite (or a TRUNCATE). A relation missing from the catalog as it was before the first
migration was created by this release: its locks block nobody, and are marked new.

Statements that must run outside the transaction are not executed by `plan`; the lock they would
take is read from the statement itself and marked as not observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from itertools import islice
from typing import TYPE_CHECKING, Literal, cast

from herokumigrate.sqllex import tokens

if TYPE_CHECKING:
    from herokumigrate.lint import TableName
    from herokumigrate.plan import Unit
    from herokumigrate.source import Migration
    from herokumigrate.statements import Conn

RelationKind = Literal[
    "table", "index", "sequence", "view", "materialized view", "foreign table", "other"
]
_KINDS: dict[str, RelationKind] = {
    "r": "table",
    "p": "table",
    "i": "index",
    "I": "index",
    "S": "sequence",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}
# Kinds whose storage a rewrite replaces (a partitioned table or a view has none).
_STORED = frozenset({"r", "m", "i", "t"})
# Tables, for the lint's "does this table exist" (matching lint.py's notion of a table).
_TABLES = frozenset({"r", "p", "m", "f"})
# pg_catalog, information_schema and the toast and temporary schemas are PostgreSQL's own.
_USER_RELATIONS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"
)
_CATALOG_QUERY = (
    "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relfilenode, current_schemas(false)"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE " + _USER_RELATIONS
)
_LOCKS_QUERY = (
    "SELECT c.oid, l.mode, n.nspname, c.relname, c.relkind, c.relfilenode"
    " FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND "
    + _USER_RELATIONS
    + " AND NOT (n.nspname = %s AND c.relname = ANY(%s))"
)


class LockMode(Enum):
    """PostgreSQL's table lock modes, weakest first."""

    ACCESS_SHARE = "ACCESS SHARE"
    ROW_SHARE = "ROW SHARE"
    ROW_EXCLUSIVE = "ROW EXCLUSIVE"
    SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
    SHARE = "SHARE"
    SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
    EXCLUSIVE = "EXCLUSIVE"
    ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"

    @property
    def strength(self) -> int:
        """Its rank: a stronger mode conflicts with more."""
        return _STRENGTH[self]

    @classmethod
    def from_pg_locks(cls, name: str) -> LockMode | None:
        """The mode of a `pg_locks.mode` value (`AccessExclusiveLock`); None for others."""
        return _PG_NAMES.get(name)


_STRENGTH = {mode: rank for rank, mode in enumerate(LockMode)}
_PG_NAMES = {mode.value.title().replace(" ", "") + "Lock": mode for mode in LockMode}


@dataclass(frozen=True)
class RelationLock:
    """A lock a migration takes on one relation (its strongest new mode on it).

    Observed ones come from `pg_locks`; the others are what a statement that runs outside the
    transaction would take, read from its text (`mode` None: not known)."""

    mode: LockMode | None
    relation: str  # schema.name; for a lock not observed, as the statement writes it
    kind: RelationKind
    new: bool = False  # created by this release: nobody else can be waiting for it
    observed: bool = True
    rewritten: bool = False  # new storage: rewritten (or truncated)
    line: int | None = None  # not observed: the statement's line

    def describe(self) -> str:
        """`ACCESS EXCLUSIVE on public.orders (rewrites the table)`, for the text output."""
        where = self.relation if self.kind == "table" else f"{self.kind} {self.relation}"
        if not self.observed:
            outside = f"line {self.line}: runs outside the transaction; not observed"
            if self.mode is None:
                return f"takes locks plan cannot observe ({outside})"
            return f"would take {self.mode.value} on {where} ({outside})"
        assert self.mode is not None
        notes = []
        if self.new:
            notes.append("new: created by this release")
        if self.rewritten:
            notes.append("rewrites the table" if self.kind != "index" else "rebuilds the index")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        return f"{self.mode.value} on {where}{suffix}"


@dataclass
class MigrationLocks:
    """What `plan` saw of one pending migration."""

    migration: Migration
    locks: list[RelationLock] = field(default_factory=list)
    ran: bool = False  # False: the rehearsal stopped before it finished

    @property
    def rewrites(self) -> list[str]:
        """The existing relations it gives new storage (rewrites)."""
        return [lock.relation for lock in self.locks if lock.rewritten and not lock.new]


@dataclass(frozen=True)
class Catalog:
    """The user relations before the first migration ran."""

    filenodes: dict[int, int]  # oid -> relfilenode
    tables: frozenset[tuple[str, str]]  # (schema, name)
    search_path: tuple[str, ...]

    def table_exists(self, table: TableName) -> bool:
        """Whether `table` (unqualified: found on the search path) existed before the run."""
        schemas = (table.schema,) if table.schema else self.search_path
        return any((schema, table.name) in self.tables for schema in schemas)


def read_catalog(conn: Conn) -> Catalog:
    """The user relations and the search path (one query)."""
    rows = conn.execute(_CATALOG_QUERY).fetchall()
    filenodes = {int(str(r[0])): int(str(r[4])) for r in rows}
    tables = frozenset((str(r[1]), str(r[2])) for r in rows if r[3] in _TABLES)
    search_path = tuple(cast("list[str]", rows[0][5])) if rows else ()
    return Catalog(filenodes, tables, search_path)


@dataclass(frozen=True)
class _Held:
    mode: LockMode
    relation: str
    relkind: str
    filenode: int


class LockObserver:
    """Watches a rehearsal: `begin` once in its transaction, `starting` before each statement,
    `end` after the last one (one `pg_locks` query per migration).

    Our own history tables are left out (`exclude_schema`, `exclude_tables`)."""

    def __init__(self, exclude_schema: str, exclude_tables: list[str]) -> None:
        self.exclude = (exclude_schema, exclude_tables)
        self.migrations: dict[int, MigrationLocks] = {}  # every pending one, in order
        self.catalog: Catalog | None = None
        self.current: Migration | None = None  # whose statements run now
        self._held: dict[tuple[int, LockMode], _Held] = {}
        self._filenodes: dict[int, int] = {}

    def begin(self, conn: Conn, units: list[Unit]) -> None:
        """Before the first migration: note the pending migrations, what those run outside
        the transaction would take, the catalog and the locks already held."""
        for unit in units:
            for step in unit.steps if unit.autocommit else ():
                entry = self._entry(step.migration)
                entry.locks.append(expected_lock(step.statement.text, step.statement.line))
            for m in unit.finishes:
                self._entry(m)
        self.catalog = read_catalog(conn)
        self._filenodes = dict(self.catalog.filenodes)
        self._held = self._read_locks(conn)

    def starting(self, conn: Conn, migration: Migration) -> None:
        """A statement of `migration` runs next: the previous migration, if another, is done."""
        if self.current is not None and self.current.version == migration.version:
            return
        if self.current is not None:
            self._close(conn, self.current)
        for entry in self.migrations.values():  # those before it ran (some run nothing here)
            if entry.migration.version == migration.version:
                break
            entry.ran = True
        self.current = migration

    def end(self, conn: Conn) -> None:
        """Every migration ran."""
        if self.current is not None:
            self._close(conn, self.current)
        for entry in self.migrations.values():
            entry.ran = True
        self.current = None

    def _close(self, conn: Conn, migration: Migration) -> None:
        """`migration` ran: the locks it added, and the relations it rewrote."""
        assert self.catalog is not None, "begin() first"
        now = self._read_locks(conn)
        strongest: dict[int, _Held] = {}
        for (oid, mode), held in now.items():
            if (oid, mode) in self._held:
                continue
            if oid not in strongest or strongest[oid].mode.strength < mode.strength:
                strongest[oid] = held
        observed = []
        for oid, held in strongest.items():
            before = self._filenodes.get(oid)
            rewritten = held.relkind in _STORED and before not in (None, 0, held.filenode)
            new = oid not in self.catalog.filenodes
            kind = _KINDS.get(held.relkind, "other")
            observed.append(RelationLock(held.mode, held.relation, kind, new, True, rewritten))
        observed.sort(key=lambda lock: (lock.new, -_rank(lock), lock.relation))
        entry = self._entry(migration)
        entry.locks[:0] = observed
        entry.ran = True
        self._held = now
        self._filenodes.update({oid: held.filenode for (oid, _), held in now.items()})

    def _entry(self, migration: Migration) -> MigrationLocks:
        return self.migrations.setdefault(migration.version, MigrationLocks(migration))

    def _read_locks(self, conn: Conn) -> dict[tuple[int, LockMode], _Held]:
        schema, tables = self.exclude
        held = {}
        for oid, pg_mode, nspname, relname, relkind, filenode in conn.execute(
            _LOCKS_QUERY, (schema, tables)
        ).fetchall():
            mode = LockMode.from_pg_locks(str(pg_mode))
            if mode is not None:
                key = (int(str(oid)), mode)
                held[key] = _Held(mode, f"{nspname}.{relname}", str(relkind), int(str(filenode)))
        return held


def _rank(lock: RelationLock) -> int:
    return lock.mode.strength if lock.mode is not None else -1


# ----- statements that run outside the transaction ---------------------------------------------


def expected_lock(text: str, line: int) -> RelationLock:
    """The lock a statement that runs outside the transaction would take, from its words.

    CREATE INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY, REINDEX ... CONCURRENTLY, DETACH
    PARTITION ... CONCURRENTLY and plain VACUUM take SHARE UPDATE EXCLUSIVE (writes go on);
    VACUUM FULL and CLUSTER take ACCESS EXCLUSIVE. Others: mode None."""
    words = list(islice(tokens(text, 0), 200))
    first, second = [*words, "", ""][:2]
    mode: LockMode | None = None
    relation = ""
    kind: RelationKind = "table"
    if first == "create" and "index" in words[1:3]:
        at = _after(words, "on")
        at += words[at : at + 1] == ["only"]
        mode, relation = LockMode.SHARE_UPDATE_EXCLUSIVE, _name(words, at)
    elif first == "drop" and second == "index":
        at = _after(words, "concurrently")
        at += 2 * (words[at : at + 2] == ["if", "exists"])
        mode, relation, kind = LockMode.SHARE_UPDATE_EXCLUSIVE, _name(words, at), "index"
    elif first == "reindex" and "concurrently" in words:
        kind = "index" if "index" in words else "table"
        at = _after(words, "concurrently")
        mode, relation = LockMode.SHARE_UPDATE_EXCLUSIVE, _name(words, at) or "every table"
    elif first == "alter" and "detach" in words:
        at = _after(words, "table")
        at += 2 * (words[at : at + 2] == ["if", "exists"])
        at += words[at : at + 1] == ["only"]
        mode, relation = LockMode.SHARE_UPDATE_EXCLUSIVE, _name(words, at)
    elif first == "vacuum":
        full = "full" in words and not _option_off(words, "full")
        mode = LockMode.ACCESS_EXCLUSIVE if full else LockMode.SHARE_UPDATE_EXCLUSIVE
        relation = _vacuumed(words) or "every table"
    elif first == "cluster":
        mode, relation = LockMode.ACCESS_EXCLUSIVE, "every clustered table"
    return RelationLock(mode, relation, kind, observed=False, line=line)


def _after(words: list[str], word: str) -> int:
    """The position after the first `word` (past the end when there is none)."""
    return words.index(word) + 1 if word in words else len(words)


def _name(words: list[str], at: int) -> str:
    """The (possibly qualified) name starting at `words[at]`, as written."""
    parts: list[str] = []
    while at < len(words) and _is_name(words[at]):
        parts.append(f'{words[at]}"' if words[at].startswith('"') else words[at])
        if words[at + 1 : at + 2] != ["."]:
            break
        at += 2
    return ".".join(parts)


def _is_name(word: str) -> bool:
    return word.startswith('"') or word[:1].isalpha() or word[:1] == "_"


def _option_off(words: list[str], option: str) -> bool:
    """Whether `(... option false ...)` turns the option off."""
    at = words.index(option) + 1
    return words[at : at + 1] in (["false"], ["off"], ["0"])


_VACUUM_WORDS = frozenset({"full", "freeze", "verbose", "analyze", "analyse", "vacuum"})


def _vacuumed(words: list[str]) -> str:
    """The tables a VACUUM names, as written."""
    at = 1
    if words[1:2] == ["("]:
        at = _after(words, ")")
    while at < len(words) and words[at] in _VACUUM_WORDS:
        at += 1
    names = []
    while at < len(words):
        name = _name(words, at)
        if not name:
            break
        names.append(name)
        at += 2 * name.count(".") + 1
        if words[at : at + 1] == ["("]:
            at = at + _after(words[at:], ")")
        if words[at : at + 1] != [","]:
            break
        at += 1
    return ", ".join(names)
