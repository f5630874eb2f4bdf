"""What the migrations read so far created, as much as the lint's rules need to know.

The lint reads migrations in order: the ones released before (context: they shape what exists,
nothing is reported about them) and then the ones of the release it checks. Each table, column,
index, constraint and object remembers the release that created it: the rules about existing
things leave alone what the release being checked creates itself (an index on a table it creates
blocks no one). What no migration created counts as existing, unless `table_exists` (plan: the
database) says otherwise.

Names: a qualified and an unqualified name of the same object are taken to match, since the lint
does not know the search path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

CONTEXT = 0
"""The release number of what the migrations read as context created."""

ObjectKind = Literal[
    "view", "materialized view", "function", "type", "sequence", "schema", "extension", "unique"
]
"""What `Schema.objects` holds, and what a transaction may create again after dropping it;
"unique" is a UNIQUE/PRIMARY KEY constraint or a unique index, named by its table."""


class TableName(NamedTuple):
    """A relation as a statement names it; `schema` is "" when unqualified."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


class TypeRef(NamedTuple):
    """A column's type as written: `varchar(20)` is ("varchar", (20,), False)."""

    name: str
    modifiers: tuple[int, ...]
    array: bool

    def __str__(self) -> str:
        mods = f"({','.join(map(str, self.modifiers))})" if self.modifiers else ""
        return f"{self.name}{mods}{'[]' if self.array else ''}"


@dataclass
class Column:
    """A column: its type when known, whether it is NOT NULL, the release that added it."""

    type: TypeRef | None
    not_null: bool
    release: int


@dataclass
class Constraint:
    """A table constraint the rules care about (CHECK, NOT NULL, FOREIGN KEY, UNIQUE, ...)."""

    not_null_columns: frozenset[str]
    """Columns whose NOT NULL it proves: `CHECK (a IS NOT NULL AND b IS NOT NULL)` -> a, b."""
    validated: bool
    not_valid_in: int | None = None
    """The transaction that added it NOT VALID (None: added valid, or not by these files)."""
    unique: bool = False
    """A UNIQUE, PRIMARY KEY or EXCLUDE constraint."""


@dataclass
class Table:
    """A table some migration created (or altered, for one created before them)."""

    release: int | None
    """None: created before the migrations read (it was only altered by them)."""
    columns: dict[str, Column] = field(default_factory=dict)
    constraints: dict[str, Constraint] = field(default_factory=dict)  # by name
    unique_added_in: set[int] = field(default_factory=set)
    """The transactions that added a UNIQUE/PRIMARY KEY constraint or unique index to it."""

    def add_column(self, name: str, column: Column) -> None:
        """Record a column (CREATE TABLE, ADD COLUMN)."""
        self.columns[name] = column

    def drop_column(self, name: str) -> None:
        """Forget a column."""
        self.columns.pop(name, None)

    def rename_column(self, name: str, new_name: str) -> None:
        """Follow RENAME COLUMN."""
        if name in self.columns:
            self.columns[new_name] = self.columns.pop(name)

    def set_type(self, name: str, type_: TypeRef | None) -> None:
        """Follow ALTER COLUMN ... TYPE."""
        if name in self.columns:
            self.columns[name].type = type_

    def set_not_null(self, name: str, not_null: bool) -> None:
        """Follow SET/DROP NOT NULL (a dropped NOT NULL also voids the CHECKs proving it)."""
        if name in self.columns:
            self.columns[name].not_null = not_null
        if not not_null:
            for constraint in self.constraints.values():
                constraint.not_null_columns -= {name}

    def add_constraint(self, name: str, constraint: Constraint, transaction: int) -> None:
        """Record a constraint added by `transaction`."""
        self.constraints[name] = constraint
        if constraint.unique:
            self.unique_added_in.add(transaction)

    def validate_constraint(self, name: str) -> Constraint | None:
        """Follow VALIDATE CONSTRAINT; the constraint as it was before, if known."""
        constraint = self.constraints.get(name)
        if constraint is not None:
            self.constraints[name] = replace(constraint, validated=True)
        return constraint

    def drop_constraint(self, name: str) -> Constraint | None:
        """Forget a constraint; it, if known."""
        return self.constraints.pop(name, None)

    def rename_constraint(self, name: str, new_name: str) -> None:
        """Follow RENAME CONSTRAINT."""
        if name in self.constraints:
            self.constraints[new_name] = self.constraints.pop(name)


class Schema:
    """Tables, indexes and other objects the migrations read so far created."""

    def __init__(self, table_exists: Callable[[TableName], bool] | None = None) -> None:
        self.tables: dict[str, dict[str, Table]] = {}  # name -> schema ("" unqualified) -> table
        self.indexes: dict[str, tuple[TableName, int]] = {}  # name -> (its table, release)
        self.objects: dict[tuple[ObjectKind, str], int] = {}  # (kind, name) -> release
        self.volatile_functions: dict[str, bool] = {}  # created by the migrations: VOLATILE?
        self.table_exists = table_exists
        self.release = CONTEXT  # the release being read
        self.transaction = 0  # the transaction being read (a number per transaction)

    def read_release(self, release: int) -> None:
        """What follows belongs to `release` (CONTEXT: released before the one checked)."""
        self.release = release

    def read_transaction(self, transaction: int) -> None:
        """What follows runs in `transaction`."""
        self.transaction = transaction

    # ----- tables -----------------------------------------------------------------------------

    def table(self, name: TableName) -> Table | None:
        """The table the migrations know by this name, if any."""
        by_schema = self.tables.get(name.name)
        if not by_schema:
            return None
        if name.schema:
            return by_schema.get(name.schema) or by_schema.get("")
        return by_schema.get("") or by_schema.get("public") or next(iter(by_schema.values()))

    def create_table(self, name: TableName) -> Table:
        """Remember a table the release being read creates."""
        table = Table(self.release)
        self.tables.setdefault(name.name, {})[name.schema] = table
        return table

    def table_for_change(self, name: TableName) -> Table:
        """The table an ALTER changes: known, or one from before the migrations."""
        return self.table(name) or self.tables.setdefault(name.name, {}).setdefault(
            name.schema, Table(None)
        )

    def drop_table(self, name: TableName) -> None:
        """Forget a table (and its indexes)."""
        by_schema = self.tables.get(name.name, {})
        for schema in (name.schema, "") if name.schema else list(by_schema):
            by_schema.pop(schema, None)
        for index, (table, _) in list(self.indexes.items()):
            if table.name == name.name:
                del self.indexes[index]

    def rename_table(self, name: TableName, new_name: str) -> None:
        """Move a table (its columns and constraints) to its new name."""
        table = self.table(name)
        self.drop_table(name)
        if table is not None:
            self.tables.setdefault(new_name, {})[name.schema] = table

    def rename_index(self, name: str, new_name: str) -> None:
        """Follow ALTER INDEX ... RENAME: the index, and the UNIQUE/PRIMARY KEY constraint it
        backs (PostgreSQL renames both)."""
        if name in self.indexes:
            self.indexes[new_name] = self.indexes.pop(name)
        for by_schema in self.tables.values():
            for table in by_schema.values():
                if table.constraints.get(name, Constraint(frozenset(), True)).unique:
                    table.rename_constraint(name, new_name)

    def existing(self, name: TableName) -> bool:
        """Whether the table was there before the release being read: then the rules about
        tables apply. A table no migration created counts as existing, unless `table_exists`
        says the database has no such table."""
        table = self.table(name)
        if table is not None and table.release is not None:
            return table.release != self.release
        return self.table_exists is None or self.table_exists(name)

    def new_column(self, table: TableName, column: str) -> bool:
        """Whether the release being read added this column (or created its table): the
        release still serving does not know it."""
        known = self.table(table)
        if known is None:
            return False
        if known.release == self.release:
            return True
        added = known.columns.get(column)
        return added is not None and added.release == self.release

    # ----- indexes and other objects -----------------------------------------------------------

    def create_index(self, name: str, table: TableName) -> None:
        """Remember an index and its table."""
        self.indexes[name] = (table, self.release)

    def drop_index(self, name: str) -> None:
        """Forget an index."""
        self.indexes.pop(name, None)

    def index_is_new(self, name: str) -> bool:
        """Whether the release being read created the index, or the table it is on."""
        known = self.indexes.get(name)
        if known is None:
            return False
        table, release = known
        return release == self.release or not self.existing(table)

    def create_object(self, kind: ObjectKind, name: str) -> None:
        """Remember a view, function, type, ... the release being read creates (or replaces:
        then it keeps the release that created it first)."""
        self.objects.setdefault((kind, name), self.release)

    def object_is_new(self, kind: ObjectKind, name: str) -> bool:
        """Whether the release being read created it."""
        return self.objects.get((kind, name)) == self.release

    def drop_object(self, kind: ObjectKind, name: str) -> None:
        """Forget an object."""
        self.objects.pop((kind, name), None)

    def rename_object(self, kind: ObjectKind, name: str, new_name: str) -> None:
        """Follow RENAME: the object keeps the release that created it."""
        release = self.objects.pop((kind, name), self.release)
        self.objects[(kind, new_name)] = release

    def create_function(self, name: str, *, volatile: bool) -> None:
        """Remember a function the release being read creates, and whether it is VOLATILE."""
        self.create_object("function", name)
        self.volatile_functions[name.lower()] = volatile
