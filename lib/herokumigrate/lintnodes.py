"""Readers of PostgreSQL's parse trees (libpg_query's JSON, see `pgparse.py`) for the lint.

libpg_query leaves out fields at their zero value: a missing `ival` is 0, a missing boolean is
false.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from herokumigrate.lintschema import TableName, TypeRef

Node = Mapping[str, Any]

VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "gen_random_bytes",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "currval",
        "lastval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
    }
)
"""Built-in (and uuid-ossp, pgcrypto) functions that are VOLATILE, as PostgreSQL's catalog says:
a column default calling one makes ADD COLUMN rewrite the table."""
_SERIAL_TYPES = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"})
_FALSE_WORDS = frozenset({"false", "off", "0", "no"})


def range_var(node: Node | None) -> TableName:
    """A RangeVar's `[schema.]name`."""
    node = node or {}
    return TableName(node.get("schemaname", ""), node.get("relname", ""))


def strings(items: Iterable[Node]) -> list[str]:
    """The `sval`s of a list of String nodes."""
    return [item.get("String", {}).get("sval", "") for item in items]


def qualified(items: Iterable[Node]) -> TableName:
    """A name from a list of String nodes (`[schema,] name`)."""
    names = strings(items)
    return TableName(names[-2] if len(names) > 1 else "", names[-1] if names else "")


def integer(node: Node) -> int:
    """An A_Const or Integer node's value (0 is left out of libpg_query's output)."""
    if "A_Const" in node:
        node = node["A_Const"]
        return int(node.get("ival", {}).get("ival", 0))
    return int(node.get("Integer", {}).get("ival", 0))


def type_ref(type_name: Node | None) -> TypeRef | None:
    """A TypeName node as a TypeRef (`pg_catalog.` left out); None for `%TYPE` and the like."""
    if not type_name or not type_name.get("names"):
        return None
    names = strings(type_name["names"])
    modifiers = type_name.get("typmods", ())
    if not all("A_Const" in m and "ival" in m["A_Const"] for m in modifiers):
        return None  # e.g. an interval's field list: not a plain number
    return TypeRef(names[-1], tuple(integer(m) for m in modifiers), "arrayBounds" in type_name)


def constraints(column: Node) -> list[Node]:
    """A ColumnDef's Constraint nodes."""
    return [item.get("Constraint", {}) for item in column.get("constraints", ())]


def option_on(options: Iterable[Node], name: str) -> bool:
    """Whether a `(name [value])` option of VACUUM/REINDEX/CLUSTER is on."""
    for option in options:
        definition = option.get("DefElem", {})
        if definition.get("defname") == name:
            arg = definition.get("arg")
            if not arg:
                return True  # `(FULL)`: on
            if "Boolean" in arg:  # libpg_query leaves a false boolval out
                return bool(arg["Boolean"].get("boolval", False))
            if "Integer" in arg:
                return bool(arg["Integer"].get("ival", 0))
            return str(arg.get("String", {}).get("sval", "")).lower() not in _FALSE_WORDS
    return False


def called_functions(expression: Any) -> list[str]:
    """The names of the functions a raw expression tree calls (unqualified, lower case)."""
    names = []
    stack = [expression]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            call = node.get("FuncCall")
            if call is not None:
                names.append(strings(call["funcname"])[-1].lower())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


def is_serial(column: Node) -> bool:
    """Whether a ColumnDef's type is serial/bigserial/smallserial (a sequence default)."""
    names = strings(column.get("typeName", {}).get("names", ()))
    return bool(names) and names[-1] in _SERIAL_TYPES


def not_null_columns(expression: Any) -> frozenset[str]:
    """The columns a CHECK expression proves NOT NULL: `a IS NOT NULL`, and ANDs of such."""
    if not isinstance(expression, dict):
        return frozenset()
    test = expression.get("NullTest")
    if test is not None:
        column = test.get("arg", {}).get("ColumnRef", {}).get("fields", ())
        if test.get("nulltesttype") == "IS_NOT_NULL" and len(column) == 1 and "String" in column[0]:
            return frozenset(strings(column))
        return frozenset()
    boolean = expression.get("BoolExpr")
    if boolean is not None and boolean.get("boolop") == "AND_EXPR":
        proven: frozenset[str] = frozenset()
        for arg in boolean.get("args", ()):
            proven |= not_null_columns(arg)
        return proven
    return frozenset()


def referenced_columns(expression: Any) -> set[str]:
    """The (unqualified) names of the columns an expression refers to."""
    found = set()
    stack = [expression]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            reference = node.get("ColumnRef")
            if reference is not None:
                names = strings(f for f in reference.get("fields", ()) if "String" in f)
                found.update(names[-1:])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def object_name(name1: str, name2: str | None, label: str) -> str:
    """The name PostgreSQL gives an unnamed constraint (makeObjectName): `users_email_key`, the
    longer part shortened until the whole fits in 63 characters."""
    overhead = len(label) + 1 + (1 if name2 else 0)
    available = 63 - overhead
    length1, length2 = len(name1), len(name2 or "")
    while length1 + length2 > available:
        if length1 > length2:
            length1 -= 1
        else:
            length2 -= 1
    parts = [name1[:length1], *([name2[:length2]] if name2 else []), label]
    return "_".join(parts)


_CONSTRAINT_LABELS = {
    "CONSTR_UNIQUE": "key",
    "CONSTR_FOREIGN": "fkey",
    "CONSTR_CHECK": "check",
    "CONSTR_EXCLUSION": "excl",
    "CONSTR_NOTNULL": "not_null",
}


def constraint_name(table: str, constraint: Node, column: str | None) -> str:
    """A Constraint node's name: as written, or the one PostgreSQL chooses (`column`: the
    column it is declared on, for a column constraint)."""
    if constraint.get("conname"):
        return str(constraint["conname"])
    kind = constraint.get("contype", "")
    if kind == "CONSTR_PRIMARY":
        return object_name(table, None, "pkey")
    if kind == "CONSTR_CHECK":
        # PostgreSQL: `table_column_check` when the expression names exactly one column.
        columns = referenced_columns(constraint.get("raw_expr"))
        part = columns.pop() if len(columns) == 1 else None
    elif kind == "CONSTR_FOREIGN":
        part = "_".join(strings(constraint.get("fk_attrs", ()))) or column
    elif kind == "CONSTR_EXCLUSION":
        pairs = [e.get("List", {}).get("items", [{}]) for e in constraint.get("exclusions", ())]
        part = "_".join(p[0].get("IndexElem", {}).get("name", "") for p in pairs) or column
    else:
        part = "_".join(strings(constraint.get("keys", ()))) or column
    return object_name(table, part or None, _CONSTRAINT_LABELS.get(kind, "check"))
