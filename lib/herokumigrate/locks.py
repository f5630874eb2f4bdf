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
    from herokumigrate.migration import Migration
    from herokumigrate.plan import Unit
    from herokumigrate.statements import Conn
    from herokumigrate.versions import Version

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
# pg_catalog, information_schema and the toast and temporary schemas are PostgreSQL's own.
_USER_RELATIONS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"
)
# One row: 10,000 rows would cost the driver ~0.5 s to parse. Every relation as "oid/relfilenode",
# and the tables' names (which may hold any character) as JSON.
_CATALOG_QUERY = (
    "SELECT current_schemas(false)::text[],"
    " coalesce(string_agg(c.oid::text || '/' || c.relfilenode::text, ','), ''),"
    " coalesce(json_agg(json_build_array(n.nspname, c.relname))"
    " FILTER (WHERE c.relkind IN ('r', 'p', 'm', 'f')), '[]')"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE " + _USER_RELATIONS
)
# Only what changed since the last call: lock pairs ("oid/mode") not held then, and every lock
# of a relation held then whose storage changed since ("oid/relfilenode" as then). The diff is
# made by the server: a release holds thousands of locks, and parsing them all back into Python
# rows after every migration would cost seconds.
_CHANGED_LOCKS_QUERY = (
    "WITH held AS (SELECT unnest(string_to_array(%(pairs)s, ',')) AS pair),"
    " stored AS (SELECT split_part(e, '/', 1)::oid AS oid, split_part(e, '/', 2)::oid AS filenode"
    " FROM unnest(string_to_array(%(filenodes)s, ',')) AS e),"
    " ours AS (SELECT l.relation, l.mode FROM pg_locks l"
    " WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted),"
    " changed AS (SELECT relation, mode FROM ours"
    " WHERE relation::text || '/' || mode NOT IN (SELECT pair FROM held)"
    " UNION SELECT o.relation, o.mode FROM stored s JOIN ours o ON o.relation = s.oid"
    " WHERE coalesce(pg_relation_filenode(s.oid), 0) <> s.filenode)"
    " SELECT c.oid, ch.mode, n.nspname, c.relname, c.relkind, c.relfilenode"
    " FROM changed ch JOIN pg_class c ON c.oid = ch.relation"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE "
    + _USER_RELATIONS
    + " AND NOT (n.nspname = %(schema)s AND c.relname = ANY(%(tables)s))"
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

    @property
    def pg_locks_name(self) -> str:
        """Its name in `pg_locks.mode`: `AccessExclusiveLock`."""
        return self.value.title().replace(" ", "") + "Lock"

    @classmethod
    def from_pg_locks(cls, name: str) -> LockMode | None:
        """The mode of a `pg_locks.mode` value (`AccessExclusiveLock`); None for others."""
        return _PG_NAMES.get(name)


_STRENGTH = {mode: rank for rank, mode in enumerate(LockMode)}
_PG_NAMES = {mode.pg_locks_name: mode for mode in LockMode}


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
    held_before: bool = False  # rewritten under a lock an earlier migration took
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
        if self.held_before:
            notes.append("lock held since an earlier migration")
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
    row = conn.execute(_CATALOG_QUERY).fetchone()
    assert row is not None
    search_path, pairs, names = cast("tuple[list[str], str, list[list[str]]]", row)
    filenodes = {}
    for pair in pairs.split(",") if pairs else ():
        oid, filenode = pair.split("/")
        filenodes[int(oid)] = int(filenode)
    tables = frozenset((schema, name) for schema, name in names)
    return Catalog(filenodes, tables, tuple(search_path))


@dataclass(frozen=True)
class _Held:
    """One lock pair read from `pg_locks`, with its relation."""

    oid: int
    mode: LockMode
    new_pair: bool  # not held at the previous call
    rewritten: bool  # its relation's storage changed since the previous call
    relation: str
    relkind: str


class LockObserver:
    """Watches a rehearsal: `begin` once in its transaction, `starting` before each statement,
    `end` after the last one (one `pg_locks` query per migration).

    Our own history tables are left out (`exclude_schema`, `exclude_tables`)."""

    def __init__(self, exclude_schema: str, exclude_tables: list[str]) -> None:
        self.exclude = (exclude_schema, exclude_tables)
        self.migrations: dict[Version, MigrationLocks] = {}  # every pending one, in order
        self.catalog: Catalog | None = None
        self.current: Migration | None = None  # whose statements run now
        self._held: set[str] = set()  # "oid/AccessShareLock": the pairs held so far
        self._filenodes: dict[int, int] = {}  # oid -> relfilenode, as last seen

    def begin(self, conn: Conn, units: list[Unit]) -> None:
        """Before the first migration: note the pending migrations, what those run outside
        the transaction would take, the catalog and the locks already held."""
        for unit in units:
            step = unit.alone
            if step is not None:
                entry = self._entry(step.migration)
                entry.locks.append(expected_lock(step.statement.text, step.statement.line))
            for m in unit.finishes:
                self._entry(m)
        self.catalog = read_catalog(conn)
        self._filenodes = dict(self.catalog.filenodes)
        self._read_changes(conn)

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
        strongest: dict[int, _Held] = {}
        taken: set[int] = set()  # relations with a lock pair not held before
        rewritten: set[int] = set()
        for held in self._read_changes(conn):
            if held.new_pair:
                taken.add(held.oid)
            if held.rewritten:
                rewritten.add(held.oid)
            best = strongest.get(held.oid)
            if best is None or best.mode.strength < held.mode.strength:
                strongest[held.oid] = held
        observed = []
        for oid, held in strongest.items():
            observed.append(
                RelationLock(
                    held.mode,
                    held.relation,
                    _KINDS.get(held.relkind, "other"),
                    new=oid not in self.catalog.filenodes,
                    rewritten=oid in rewritten,
                    held_before=oid not in taken,
                )
            )
        observed.sort(key=lambda lock: (lock.new, -_rank(lock), lock.relation))
        entry = self._entry(migration)
        entry.locks[:0] = observed
        entry.ran = True

    def _entry(self, migration: Migration) -> MigrationLocks:
        return self.migrations.setdefault(migration.version, MigrationLocks(migration))

    def _read_changes(self, conn: Conn) -> list[_Held]:
        """The lock pairs taken since the last call, and every lock of a held relation whose
        storage changed since; remembers them as held, with their relations' storage."""
        schema, tables = self.exclude
        held_oids = {int(pair.split("/", 1)[0]) for pair in self._held}
        params = {
            "pairs": ",".join(self._held),
            "filenodes": ",".join(f"{oid}/{self._filenodes.get(oid, 0)}" for oid in held_oids),
            "schema": schema,
            "tables": tables,
        }
        changes = []
        seen: dict[int, int] = {}  # oid -> relfilenode now
        for oid, pg_mode, nspname, relname, relkind, filenode in conn.execute(
            _CHANGED_LOCKS_QUERY, params
        ).fetchall():
            mode = LockMode.from_pg_locks(str(pg_mode))
            if mode is None:
                continue
            number, storage = int(str(oid)), int(str(filenode))
            before = self._filenodes.get(number)
            rewritten = relkind in _STORED and before not in (None, 0, storage)
            new_pair = f"{oid}/{pg_mode}" not in self._held
            relation = f"{nspname}.{relname}"
            changes.append(_Held(number, mode, new_pair, rewritten, relation, str(relkind)))
            seen[number] = storage
        self._filenodes.update(seen)
        self._held.update(f"{h.oid}/{h.mode.pg_locks_name}" for h in changes)
        return changes


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
