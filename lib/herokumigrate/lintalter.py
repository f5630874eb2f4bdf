"""The lint's checks of ALTER TABLE's commands, one function per command kind.

Each reads one AlterTableCmd: it yields what it finds (when the table existed before the release
being read) and records the change in the schema (columns, their types and NOT NULL, the
constraints that prove a column NOT NULL, NOT VALID constraints).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from herokumigrate.lintnodes import (
    VOLATILE_FUNCTIONS,
    Node,
    called_functions,
    constraint_name,
    constraints,
    is_serial,
    not_null_columns,
    strings,
    type_ref,
)
from herokumigrate.lintschema import (
    Column,
    Constraint,
    ObjectKind,
    Schema,
    Table,
    TableName,
    TypeRef,
)

Hit = tuple[str, str]  # (rule id, subject)

# varchar and text share one representation; so do numerics of one scale (the precision is a
# bound only), bit varying of any length, and cidr/inet. Verified on PostgreSQL by
# test_lint_db.py: the table keeps its file (no rewrite).
_TEXT_TYPES = frozenset({"varchar", "text"})
_WIDENED_BY_LENGTH = frozenset({"varchar", "varbit"})
_INDEXED = frozenset({"CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_EXCLUSION"})
_VALIDATED = frozenset({"CONSTR_FOREIGN", "CONSTR_CHECK", "CONSTR_NOTNULL"})


@dataclass(frozen=True)
class AlteredTable:
    """The table an ALTER TABLE changes, as its commands see it."""

    name: TableName
    table: Table
    existing: bool
    """Whether it was there before the release being read (else no rule applies to it)."""
    schema: Schema
    created_later: Callable[[ObjectKind, str], bool]
    """Whether a later statement of the same transaction creates this (see lintchecks.At)."""

    def column(self, name: str) -> str:
        """`table.column`, the subject of a finding."""
        return f"{self.name}.{name}"

    def old_column(self, name: str) -> bool:
        """Whether the rules about columns apply: the table and the column predate the release
        being read."""
        return self.existing and not self.schema.new_column(self.name, name)


def is_volatile(expression: object, schema: Schema) -> bool:
    """Whether a default expression calls a function known to be VOLATILE: a built-in one, or
    one the migrations create without IMMUTABLE/STABLE."""
    return any(
        name in VOLATILE_FUNCTIONS or schema.volatile_functions.get(name, False)
        for name in called_functions(expression)
    )


def _add_column(command: Node, on: AlteredTable) -> Iterator[Hit]:
    column = command.get("def", {}).get("ColumnDef", {})
    name = column.get("colname", "")
    kinds = {str(c.get("contype")): c for c in constraints(column)}
    default = kinds.get("CONSTR_DEFAULT")
    has_default = default is not None and not default.get("raw_expr", {}).get("A_Const", {}).get(
        "isnull", False
    )
    generates = is_serial(column) or bool({"CONSTR_IDENTITY", "CONSTR_GENERATED"} & set(kinds))
    not_null = bool({"CONSTR_NOTNULL", "CONSTR_PRIMARY"} & set(kinds))
    on.table.add_column(name, Column(type_ref(column.get("typeName")), not_null, on.schema.release))
    for constraint in constraints(column):
        if constraint.get("contype") != "CONSTR_NOTNULL":
            learn_constraint(on, constraint, name)
    if not on.existing:
        return
    subject = on.column(name)
    if _rewrites_on_add(column, kinds, on.schema):
        yield "volatile-default", subject
    if not_null and not has_default and not generates:
        yield "add-required-column", subject
    if {"CONSTR_FOREIGN", "CONSTR_CHECK"} & set(kinds):
        yield "constraint-without-not-valid", subject
    if {"CONSTR_UNIQUE", "CONSTR_PRIMARY"} & set(kinds):
        yield "unique-constraint-builds-index", subject


def _rewrites_on_add(column: Node, kinds: dict[str, Node], schema: Schema) -> bool:
    """Whether ADD COLUMN of this column definition rewrites the table."""
    generated = kinds.get("CONSTR_GENERATED")
    default = kinds.get("CONSTR_DEFAULT")
    return (
        is_serial(column)
        or "CONSTR_IDENTITY" in kinds
        or (generated is not None and generated.get("generated_kind") == "s")
        or (default is not None and is_volatile(default.get("raw_expr"), schema))
    )


def _drop_column(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    if on.old_column(name):
        yield "drop-column", on.column(name)
    on.table.drop_column(name)


def _alter_type(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    definition = command.get("def", {}).get("ColumnDef", {})
    new_type = type_ref(definition.get("typeName"))
    known = on.table.columns.get(name)
    old_type = known.type if known is not None else None
    if on.existing and not rewrite_free(old_type, new_type, definition, name):
        yield "change-column-type", on.column(name)
    on.table.set_type(name, new_type)


def rewrite_free(old: TypeRef | None, new: TypeRef | None, definition: Node, column: str) -> bool:
    """Whether PostgreSQL changes `old` to `new` without rewriting the table: varchar to a
    longer (or unbounded) varchar or to text, text to varchar, numeric to more precision of the
    same scale, a longer bit varying, cidr to inet. Only with no USING other than the column
    itself (or its cast) and no COLLATE (which rebuilds the indexes)."""
    if old is None or new is None or old.array or new.array or "collClause" in definition:
        return False
    using = definition.get("raw_default")
    if using is not None:
        cast = using.get("TypeCast", {}).get("arg", using)
        if strings(cast.get("ColumnRef", {}).get("fields", ())) != [column]:
            return False
    if old == new:
        return True
    if old.name in _TEXT_TYPES and new.name in _TEXT_TYPES:
        return not new.modifiers or (old.name == new.name and _longer(old, new))
    if old.name == new.name in _WIDENED_BY_LENGTH:
        return _longer(old, new)
    if old.name == new.name == "numeric":
        if not new.modifiers:
            return True
        old_scale = old.modifiers[1] if len(old.modifiers) > 1 else 0
        new_scale = new.modifiers[1] if len(new.modifiers) > 1 else 0
        return bool(old.modifiers) and new_scale == old_scale and _longer(old, new)
    return old.name == "cidr" and new.name == "inet"


def _longer(old: TypeRef, new: TypeRef) -> bool:
    """Whether `new`'s length (or precision) bound is none, or at least `old`'s."""
    return not new.modifiers or (bool(old.modifiers) and new.modifiers[0] >= old.modifiers[0])


def _set_not_null(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    if on.existing and not _proven_not_null(on.table, name):
        yield "set-not-null", on.column(name)
    on.table.set_not_null(name, True)


def _proven_not_null(table: Table, column: str) -> bool:
    """Whether SET NOT NULL needs no scan: the column is NOT NULL already, or a validated
    CHECK (col IS NOT NULL) proves it (PostgreSQL 12+ then skips the scan)."""
    known = table.columns.get(column)
    if known is not None and known.not_null:
        return True
    return any(c.validated and column in c.not_null_columns for c in table.constraints.values())


def _drop_not_null(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    known = on.table.columns.get(name)
    nullable = known is not None and not known.not_null  # then this changes nothing
    if on.old_column(name) and not nullable:
        yield "drop-not-null", on.column(name)
    on.table.set_not_null(name, False)


def _drop_default(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    # SET DEFAULT has a `def`. A column this release added is no exception: the running
    # release's INSERTs leave it out, and relied on its default.
    if command.get("def") is None and on.existing:
        yield "drop-default", on.column(name)


def _drop_expression(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    if on.existing:
        yield "drop-default", on.column(name)


def _add_identity(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    always = command.get("def", {}).get("Constraint", {}).get("generated_when") == "a"
    if always and on.existing:
        yield "alter-identity", on.column(name)


def _set_identity(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    for option in command.get("def", {}).get("List", {}).get("items", ()):
        definition = option.get("DefElem", {})
        always = definition.get("arg", {}).get("Integer", {}).get("ival") == ord("a")
        if definition.get("defname") == "generated" and always and on.existing:
            yield "alter-identity", on.column(name)


def _drop_identity(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    if on.existing:
        yield "alter-identity", on.column(name)


def learn_constraint(
    on: AlteredTable, constraint: Node, column: str | None = None
) -> tuple[str, Constraint | None]:
    """Record a constraint added to the table (`column`: the column it is declared on);
    returns its name and what was recorded (None: a kind the rules do not track)."""
    kind = constraint.get("contype")
    if kind not in _VALIDATED and kind not in _INDEXED:
        return "", None
    name = constraint_name(on.name.name, constraint, column)
    transaction = on.schema.transaction
    not_valid = bool(constraint.get("skip_validation"))
    if kind in _VALIDATED:
        proves = not_null_columns(constraint.get("raw_expr"))
        if kind == "CONSTR_NOTNULL":  # PostgreSQL 18: ADD CONSTRAINT name NOT NULL col
            proves = frozenset(strings(constraint.get("keys", ()))) or frozenset([column or ""])
        recorded = Constraint(proves, not not_valid, transaction if not_valid else None)
    else:
        recorded = Constraint(frozenset(), validated=True, unique=True)
        if kind == "CONSTR_PRIMARY":  # its columns become NOT NULL
            for key in strings(constraint.get("keys", ())) or [column or ""]:
                on.table.set_not_null(key, True)
    on.table.add_constraint(name, recorded, transaction)
    return name, recorded


def _add_constraint(command: Node, on: AlteredTable) -> Iterator[Hit]:
    constraint = command.get("def", {}).get("Constraint", {})
    kind = constraint.get("contype")
    checked_before = not constraint.get("skip_validation") and on.existing
    subject = str(on.name)
    if kind == "CONSTR_NOTNULL":
        columns = strings(constraint.get("keys", ()))
        if checked_before and not all(_proven_not_null(on.table, c) for c in columns):
            yield "set-not-null", subject
    elif kind in ("CONSTR_FOREIGN", "CONSTR_CHECK") and checked_before:
        yield "constraint-without-not-valid", subject
    elif kind in _INDEXED and on.existing and not constraint.get("indexname"):  # not USING INDEX
        yield "unique-constraint-builds-index", subject
    learn_constraint(on, constraint)


def _validate_constraint(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    constraint = on.table.validate_constraint(name)
    if constraint is not None and on.existing and constraint.not_valid_in == on.schema.transaction:
        yield "validate-in-same-transaction", f"{on.name} {name}"


def _drop_constraint(command: Node, on: AlteredTable) -> Iterator[Hit]:
    name = command.get("name", "")
    constraint = on.table.drop_constraint(name)
    if constraint is None or not constraint.unique or not on.existing:
        return
    replaced = on.schema.transaction in on.table.unique_added_in or on.created_later(
        "unique", on.name.name
    )
    if not replaced:
        yield "drop-unique-constraint", f"{on.name} {name}"


def _detach_partition(command: Node, on: AlteredTable) -> Iterator[Hit]:
    partition = command.get("def", {}).get("PartitionCmd", {})
    if on.existing and not partition.get("concurrent"):
        yield "detach-partition-without-concurrently", str(on.name)


ALTER_COMMANDS: dict[str, Callable[[Node, AlteredTable], Iterator[Hit]]] = {
    "AT_AddColumn": _add_column,
    "AT_DropColumn": _drop_column,
    "AT_AlterColumnType": _alter_type,
    "AT_SetNotNull": _set_not_null,
    "AT_DropNotNull": _drop_not_null,
    "AT_ColumnDefault": _drop_default,
    "AT_DropExpression": _drop_expression,
    "AT_AddIdentity": _add_identity,
    "AT_SetIdentity": _set_identity,
    "AT_DropIdentity": _drop_identity,
    "AT_AddConstraint": _add_constraint,
    "AT_ValidateConstraint": _validate_constraint,
    "AT_DropConstraint": _drop_constraint,
    "AT_DetachPartition": _detach_partition,
}
