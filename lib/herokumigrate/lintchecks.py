"""The lint's checks, one function per statement type (ALTER TABLE's commands: `lintalter.py`).

Each reads one statement's parse tree: it yields (rule id, subject) for what it finds and records
what the statement creates, renames or drops in the schema (`lintschema.py`), which the next
statements are checked against. For migrations read as context, the engine (`lint.py`) runs the
same functions and drops what they yield.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from herokumigrate.lintalter import ALTER_COMMANDS, AlteredTable, Hit, learn_constraint
from herokumigrate.lintnodes import (
    Node,
    constraints,
    option_on,
    qualified,
    range_var,
    strings,
    type_ref,
)
from herokumigrate.lintschema import Column, ObjectKind, Schema

_SESSION_SETTINGS = {
    "lock_timeout": "set-timeout",
    "statement_timeout": "set-timeout",
    "search_path": "set-search-path",
}
_OBJECT_KINDS: dict[str, ObjectKind] = {
    "OBJECT_VIEW": "view",
    "OBJECT_MATVIEW": "materialized view",
    "OBJECT_FUNCTION": "function",
    "OBJECT_PROCEDURE": "function",
    "OBJECT_ROUTINE": "function",
    "OBJECT_AGGREGATE": "function",
    "OBJECT_TYPE": "type",
    "OBJECT_DOMAIN": "type",
    "OBJECT_SEQUENCE": "sequence",
    "OBJECT_SCHEMA": "schema",
    "OBJECT_EXTENSION": "extension",
}
RECREATABLE: frozenset[ObjectKind] = frozenset({"view", "function", "type"})
"""Kinds whose DROP is harmless when the same transaction creates them again: the running
release sees the old one until the commit, then the new one (a sequence would restart, a
materialized view would be filled while its readers wait)."""


@dataclass(frozen=True)
class At:
    """Where a statement is read: the schema so far, and what the rest of its transaction
    creates (a view dropped and created again in one transaction is not gone)."""

    schema: Schema
    created_later: Callable[[ObjectKind, str], bool]


def _alter_table(node: Node, at: At) -> Iterator[Hit]:
    name = range_var(node.get("relation"))
    if node.get("objtype", "OBJECT_TABLE") != "OBJECT_TABLE":
        return
    schema = at.schema
    on = AlteredTable(
        name, schema.table_for_change(name), schema.existing(name), schema, at.created_later
    )
    for item in node.get("cmds", ()):
        command = item.get("AlterTableCmd", {})
        check = ALTER_COMMANDS.get(command.get("subtype", ""))
        if check is not None:
            yield from check(command, on)


def _object_name(node: Node) -> tuple[str, str]:
    """(unqualified name, name as written) of a RenameStmt/AlterObjectSchemaStmt/DropStmt
    object: a RangeVar, a String list, an ObjectWithArgs, a TypeName or a String."""
    if node.get("relation") is not None:
        table = range_var(node["relation"])
        return table.name, str(table)
    item = node.get("object", node)
    if "ObjectWithArgs" in item:
        names = strings(item["ObjectWithArgs"].get("objname", ()))
    elif "List" in item:
        names = strings(item["List"].get("items", ()))
    elif "TypeName" in item:
        names = strings(item["TypeName"].get("names", ()))
    elif "String" in item:
        names = strings([item])
    else:
        names = [str(node.get("subname", ""))]
    return names[-1], ".".join(names)


def _rename(node: Node, at: At) -> Iterator[Hit]:
    kind = node.get("renameType")
    schema = at.schema
    table = range_var(node.get("relation"))
    if kind == "OBJECT_TABLE":
        if schema.existing(table):
            yield "rename-table", str(table)
        schema.rename_table(table, node.get("newname", ""))
    elif kind == "OBJECT_COLUMN":
        yield from _rename_column(node, at)
    elif kind == "OBJECT_INDEX":
        schema.rename_index(table.name, node.get("newname", ""))
    elif kind == "OBJECT_TABCONSTRAINT":
        known = schema.table(table)
        if known is not None:
            known.rename_constraint(node.get("subname", ""), node.get("newname", ""))
    elif kind in _OBJECT_KINDS:
        object_kind = _OBJECT_KINDS[kind]
        name, written = _object_name(node)
        if not schema.object_is_new(object_kind, name):
            yield "rename-object", f"{object_kind} {written}"
        if object_kind == "materialized view":
            schema.rename_table(table, node.get("newname", ""))
        schema.rename_object(object_kind, name, node.get("newname", ""))


def _rename_column(node: Node, at: At) -> Iterator[Hit]:
    schema = at.schema
    table = range_var(node.get("relation"))
    column = node.get("subname", "")
    relation = node.get("relationType")
    if relation == "OBJECT_TABLE":
        if schema.existing(table) and not schema.new_column(table, column):
            yield "rename-column", f"{table}.{column}"
        known = schema.table(table)
        if known is not None:
            known.rename_column(column, node.get("newname", ""))
    elif relation in ("OBJECT_VIEW", "OBJECT_MATVIEW"):
        kind = _OBJECT_KINDS[relation]
        if not schema.object_is_new(kind, table.name):
            yield "rename-object", f"{kind} {table} column {column}"


def _alter_enum(node: Node, at: At) -> Iterator[Hit]:
    name = qualified(node.get("typeName", ()))
    if node.get("oldVal") is not None and not at.schema.object_is_new("type", name.name):
        yield "rename-object", f"type {name} value {node['oldVal']!r}"


def _set_schema(node: Node, at: At) -> Iterator[Hit]:
    kind = node.get("objectType")
    if kind == "OBJECT_TABLE":
        table = range_var(node.get("relation"))
        if at.schema.existing(table):
            yield "rename-table", str(table)
    elif kind in _OBJECT_KINDS:
        name, written = _object_name(node)
        if not at.schema.object_is_new(_OBJECT_KINDS[kind], name):
            yield "rename-object", f"{_OBJECT_KINDS[kind]} {written}"


def _drop(node: Node, at: At) -> Iterator[Hit]:
    kind = node.get("removeType")
    schema = at.schema
    for item in node.get("objects", ()):
        if kind == "OBJECT_TABLE":
            table = qualified(item.get("List", {}).get("items", []))
            if schema.existing(table):
                yield "drop-table", str(table)
            schema.drop_table(table)
        elif kind == "OBJECT_INDEX":
            index = qualified(item.get("List", {}).get("items", []))
            if not node.get("concurrent") and not schema.index_is_new(index.name):
                yield "drop-index-without-concurrently", str(index)
            schema.drop_index(index.name)
        elif kind in _OBJECT_KINDS:
            object_kind = _OBJECT_KINDS[kind]
            name, written = _object_name({"object": item})
            recreated = object_kind in RECREATABLE and at.created_later(object_kind, name)
            if not schema.object_is_new(object_kind, name) and not recreated:
                yield "drop-object", f"{object_kind} {written}"
            schema.drop_object(object_kind, name)
            if object_kind == "materialized view":
                schema.drop_table(qualified(item.get("List", {}).get("items", [])))


def _drop_database(node: Node, at: At) -> Iterator[Hit]:
    yield "drop-database", str(node.get("dbname", ""))


def _truncate(node: Node, at: At) -> Iterator[Hit]:
    if node.get("behavior") != "DROP_CASCADE":
        return
    tables = [range_var(item.get("RangeVar")) for item in node.get("relations", ())]
    if any(at.schema.existing(table) for table in tables):
        yield "truncate-cascade", ", ".join(map(str, tables))


def _create_index(node: Node, at: At) -> Iterator[Hit]:
    table = range_var(node.get("relation"))
    if not node.get("concurrent") and at.schema.existing(table):
        yield "index-without-concurrently", str(table)
    if node.get("idxname"):
        at.schema.create_index(node["idxname"], table)


def _reindex(node: Node, at: At) -> Iterator[Hit]:
    if option_on(node.get("params", ()), "concurrently"):
        return
    relation = node.get("relation")
    if relation is None:  # SCHEMA, DATABASE, SYSTEM: every table in it
        yield "reindex-without-concurrently", str(node.get("name", "")).strip() or "every table"
        return
    name = range_var(relation)
    if node.get("kind") == "REINDEX_OBJECT_INDEX":
        if not at.schema.index_is_new(name.name):
            yield "reindex-without-concurrently", str(name)
    elif at.schema.existing(name):
        yield "reindex-without-concurrently", str(name)


def _vacuum(node: Node, at: At) -> Iterator[Hit]:
    if not node.get("is_vacuumcmd") or not option_on(node.get("options", ()), "full"):
        return
    relations = [r.get("VacuumRelation", {}).get("relation") for r in node.get("rels", ())]
    if not relations:
        yield "vacuum-full", "every table"
    for relation in relations:
        if at.schema.existing(range_var(relation)):
            yield "vacuum-full", str(range_var(relation))


def _cluster(node: Node, at: At) -> Iterator[Hit]:
    relation = node.get("relation")
    if relation is None:
        yield "cluster", "every clustered table"
    elif at.schema.existing(range_var(relation)):
        yield "cluster", str(range_var(relation))


def _lock(node: Node, at: At) -> Iterator[Hit]:
    for item in node.get("relations", ()):
        table = range_var(item.get("RangeVar"))
        if at.schema.existing(table):
            yield "lock-table", str(table)


def _variable_set(node: Node, at: At) -> Iterator[Hit]:
    name = str(node.get("name", "")).lower()
    if name in _SESSION_SETTINGS:
        yield _SESSION_SETTINGS[name], name


def _create_table(node: Node, at: At) -> Iterator[Hit]:
    name = range_var(node.get("relation"))
    schema = at.schema
    if node.get("if_not_exists") and schema.table(name) is not None:
        return  # already there: CREATE TABLE IF NOT EXISTS does nothing
    on = AlteredTable(name, schema.create_table(name), False, schema, at.created_later)
    for element in node.get("tableElts", ()):
        column = element.get("ColumnDef")
        if column is not None:
            column_name = column.get("colname", "")
            on.table.add_column(
                column_name, Column(type_ref(column.get("typeName")), False, schema.release)
            )
            for constraint in constraints(column):
                if constraint.get("contype") == "CONSTR_NOTNULL":
                    on.table.set_not_null(column_name, True)
                else:  # a PRIMARY KEY makes it NOT NULL too
                    learn_constraint(on, constraint, column_name)
        if "Constraint" in element:
            learn_constraint(on, element["Constraint"])
    yield from ()


def _create_table_as(node: Node, at: At) -> Iterator[Hit]:
    into = range_var(node.get("into", {}).get("rel"))
    if node.get("objtype") == "OBJECT_MATVIEW":  # an object, and a table to index
        at.schema.create_object("materialized view", into.name)
    at.schema.create_table(into)
    yield from ()


def _select(node: Node, at: At) -> Iterator[Hit]:
    into = node.get("intoClause")
    if into is not None:  # SELECT ... INTO creates a table
        at.schema.create_table(range_var(into.get("rel")))
    yield from ()


def _create_view(node: Node, at: At) -> Iterator[Hit]:
    at.schema.create_object("view", range_var(node.get("view")).name)
    yield from ()


def _create_function(node: Node, at: At) -> Iterator[Hit]:
    volatility = "volatile"  # unless declared IMMUTABLE or STABLE
    for option in node.get("options", ()):
        definition = option.get("DefElem", {})
        if definition.get("defname") == "volatility":
            volatility = definition.get("arg", {}).get("String", {}).get("sval", volatility)
    name = strings(node.get("funcname", ()))[-1]
    at.schema.create_function(name, volatile=volatility == "volatile")
    yield from ()


def _create_domain(node: Node, at: At) -> Iterator[Hit]:
    name = qualified(node.get("domainname", ()))
    at.schema.create_object("type", name.name)
    kinds = {item.get("Constraint", {}).get("contype") for item in node.get("constraints", ())}
    if {"CONSTR_CHECK", "CONSTR_NOTNULL"} & kinds:
        yield "create-domain-with-constraint", str(name)


def _alter_domain(node: Node, at: At) -> Iterator[Hit]:
    name = qualified(node.get("typeName", ()))
    subtype = node.get("subtype")
    not_valid = node.get("def", {}).get("Constraint", {}).get("skip_validation")
    # V: VALIDATE CONSTRAINT, O: SET NOT NULL, C: ADD CONSTRAINT (checked unless NOT VALID)
    checks_columns = subtype in ("V", "O") or (subtype == "C" and not not_valid)
    if checks_columns and not at.schema.object_is_new("type", name.name):
        yield "domain-constraint", str(name)


def _creates_object(kind: ObjectKind, field: str) -> Callable[[Node, At], Iterator[Hit]]:
    """A check that records the object a CREATE names in `field` (a RangeVar, a list of String
    nodes, or a string)."""

    def record(node: Node, at: At) -> Iterator[Hit]:
        value = node.get(field)
        if isinstance(value, str):
            name = value
        elif isinstance(value, dict):
            name = range_var(value).name
        else:
            name = qualified(value or ()).name
        at.schema.create_object(kind, name)
        yield from ()

    return record


def creations(node_type: str, node: Node) -> list[tuple[ObjectKind, str]]:
    """What a statement creates that a DROP earlier in its transaction may be waiting for: a
    recreatable object (see RECREATABLE), or a UNIQUE/PRIMARY KEY on a table ("unique")."""
    if node_type == "ViewStmt":
        return [("view", range_var(node.get("view")).name)]
    if node_type == "CreateFunctionStmt":
        return [("function", strings(node.get("funcname", ()))[-1])]
    if node_type in ("CreateEnumStmt", "CreateRangeStmt"):
        return [("type", qualified(node.get("typeName", ())).name)]
    if node_type == "CompositeTypeStmt":
        return [("type", range_var(node.get("typevar")).name)]
    if node_type == "IndexStmt" and node.get("unique"):
        return [("unique", range_var(node.get("relation")).name)]
    if node_type == "AlterTableStmt":
        table = range_var(node.get("relation")).name
        for item in node.get("cmds", ()):
            definition = item.get("AlterTableCmd", {}).get("def", {})
            found = [definition.get("Constraint", {})]
            found += constraints(definition.get("ColumnDef", {}))
            if any(c.get("contype") in ("CONSTR_UNIQUE", "CONSTR_PRIMARY") for c in found):
                return [("unique", table)]
    return []


CHECKS: dict[str, Callable[[Node, At], Iterator[Hit]]] = {
    "AlterTableStmt": _alter_table,
    "RenameStmt": _rename,
    "AlterEnumStmt": _alter_enum,
    "AlterObjectSchemaStmt": _set_schema,
    "DropStmt": _drop,
    "DropdbStmt": _drop_database,
    "TruncateStmt": _truncate,
    "IndexStmt": _create_index,
    "ReindexStmt": _reindex,
    "VacuumStmt": _vacuum,
    "ClusterStmt": _cluster,
    "LockStmt": _lock,
    "VariableSetStmt": _variable_set,
    "CreateStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "SelectStmt": _select,
    "ViewStmt": _create_view,
    "CreateFunctionStmt": _create_function,
    "CreateDomainStmt": _create_domain,
    "AlterDomainStmt": _alter_domain,
    "CreateEnumStmt": _creates_object("type", "typeName"),
    "CreateRangeStmt": _creates_object("type", "typeName"),
    "CompositeTypeStmt": _creates_object("type", "typevar"),
    "CreateSeqStmt": _creates_object("sequence", "sequence"),
    "CreateSchemaStmt": _creates_object("schema", "schemaname"),
    "CreateExtensionStmt": _creates_object("extension", "extname"),
}
NODES_READ: dict[str, str | None] = {**dict.fromkeys(CHECKS), "SelectStmt": "intoClause"}
"""What the checks read of each node type: pass it as `pgparse.parse_section(wanted=...)`."""
