"""Release-safety lint: statements that break the release still serving, or block a table for long.

The release phase runs while the previous release's dynos keep serving, so a migration can
succeed and still cause an outage. Each rule reads PostgreSQL's parse tree (`pgparse.py`), has a
stable id, a one-line why and the safe alternative (the README lists them all).

Rules about a table apply only to tables that exist before the migrations being checked: one
created by an earlier statement of the same batch is exempt. The build checks the files that are
new since the app's previous build; `plan` can check exactly the pending migrations, telling
which tables the database has through `table_exists`.

A statement is exempt from a rule by a comment naming it: `-- heroku-migrate:allow rename-column`
(several ids: separated by spaces or commas). The comment applies to the statement it is written
in, to the statement that ends on its line (a comment after the `;`), or else to the next one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from herokumigrate.pgparse import ParsedSection, ParsedStatement
from herokumigrate.sqlsplit import NO_TRANSACTION, TRANSACTION_CONTROL

if TYPE_CHECKING:
    from herokumigrate.migration import Migration

Category = Literal["breaks the running release", "blocks the table", "risky shape"]
ALLOW_DIRECTIVE = "heroku-migrate:allow"
_ALLOW_RE = re.compile(r"heroku-migrate:allow\b([^\n]*)")
_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})


@dataclass(frozen=True)
class Rule:
    """One lint rule, as the report and the README show it."""

    id: str
    category: Category
    why: str
    instead: str


_BREAKS: Category = "breaks the running release"
_BLOCKS: Category = "blocks the table"
_RISKY: Category = "risky shape"

RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "rename-column",
            _BREAKS,
            "the release still serving reads and writes the old name until its dynos restart",
            "add the new column, write both, backfill, move reads, drop the old one later",
        ),
        Rule(
            "rename-table",
            _BREAKS,
            "the release still serving queries the table by its old name (or schema)",
            "create the new table (or a view under the old name), move the code, drop later",
        ),
        Rule(
            "drop-column",
            _BREAKS,
            "the release still serving selects or inserts it (ORMs list every column)",
            "release code that ignores the column first, then drop it in a later release",
        ),
        Rule(
            "drop-table",
            _BREAKS,
            "the release still serving may still query the table",
            "release code that no longer uses it first, then drop it in a later release",
        ),
        Rule(
            "change-column-type",
            _BREAKS,
            "rewrites the table and its indexes under ACCESS EXCLUSIVE, and the running code "
            "may write values the new type rejects",
            "add a column of the new type, backfill in batches, move the code, drop the old one",
        ),
        Rule(
            "set-not-null",
            _BREAKS,
            "scans the table under ACCESS EXCLUSIVE, and the running code may still write NULLs",
            "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a later "
            "migration, then SET NOT NULL (no scan since PostgreSQL 12)",
        ),
        Rule(
            "index-without-concurrently",
            _BLOCKS,
            "CREATE INDEX blocks every write to the table until the index is built",
            "CREATE INDEX CONCURRENTLY, alone in its migration (it runs outside the transaction)",
        ),
        Rule(
            "constraint-without-not-valid",
            _BLOCKS,
            "ADD CONSTRAINT ... FOREIGN KEY/CHECK checks every row while writes wait (a foreign "
            "key also locks the table it references)",
            "add it NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT in a later migration",
        ),
        Rule(
            "unique-constraint-builds-index",
            _BLOCKS,
            "ADD CONSTRAINT ... UNIQUE/PRIMARY KEY builds its index under ACCESS EXCLUSIVE",
            "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX",
        ),
        Rule(
            "volatile-default",
            _BLOCKS,
            "ADD COLUMN with a volatile default (random(), gen_random_uuid(), clock_timestamp(), "
            "a serial, identity or stored generated column) rewrites the table under ACCESS "
            "EXCLUSIVE",
            "add the column without that default, then SET DEFAULT and backfill in batches",
        ),
        Rule(
            "vacuum-full",
            _BLOCKS,
            "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE",
            "plain VACUUM (blocks no one), or pg_repack outside the release",
        ),
        Rule(
            "cluster",
            _BLOCKS,
            "CLUSTER rewrites the table under ACCESS EXCLUSIVE",
            "pg_repack --order-by outside the release, or leave the order to the planner",
        ),
        Rule(
            "reindex-without-concurrently",
            _BLOCKS,
            "REINDEX blocks writes to the table, and reads that would use the index",
            "REINDEX ... CONCURRENTLY, alone in its migration",
        ),
        Rule(
            "lock-table",
            _BLOCKS,
            "LOCK TABLE holds its lock until the release's transaction commits, across every "
            "later migration of the release",
            "let each statement take the lock it needs; keep such a migration short and alone",
        ),
        Rule(
            "concurrent-with-others",
            _RISKY,
            "a statement that runs outside the transaction shares its migration with others: if "
            "it fails, they were already applied and only the down migration undoes them",
            "give each CONCURRENTLY statement (and VACUUM etc.) a migration of its own",
        ),
        Rule(
            "set-timeout",
            _RISKY,
            "SET lock_timeout/statement_timeout replaces the runner's short, retried lock "
            "timeouts for the rest of that migration (the runner re-asserts them before the next)",
            "set MIGRATE_LOCK_TIMEOUT / MIGRATE_STATEMENT_TIMEOUT (or migrate.toml) instead",
        ),
        Rule(
            "set-search-path",
            _RISKY,
            "SET search_path changes where every later migration's unqualified names resolve",
            "schema-qualify names (CREATE TABLE app.orders), or set the role's search_path",
        ),
    )
}


class TableName(NamedTuple):
    """A relation as a statement names it; `schema` is "" when unqualified."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class Finding:
    """One rule that a statement breaks."""

    rule: Rule
    file: str
    line: int
    subject: str
    """What it is about: a table, `table.column`, a setting."""


@dataclass
class FileReport:
    """What the lint found in one file, in line order, and the notes about its comments."""

    file: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    suppressed: int = 0


# A table the batch creates is exempt from the rules below; an index likewise (REINDEX INDEX).
_SESSION_SETTINGS = {
    "lock_timeout": "set-timeout",
    "statement_timeout": "set-timeout",
    "search_path": "set-search-path",
}
_VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
    }
)
_SERIAL_TYPES = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"})
_FALSE_WORDS = frozenset({"false", "off", "0", "no"})


class _Batch:
    """What the statements checked so far created, and how to tell an existing table."""

    def __init__(self, table_exists: Callable[[TableName], bool] | None) -> None:
        self.created: dict[str, set[str]] = {}  # name -> schemas ("" when unqualified)
        self.table_exists = table_exists

    def create(self, table: TableName) -> None:
        """Remember a table (or index) that the batch creates."""
        self.created.setdefault(table.name, set()).add(table.schema)

    def existing(self, table: TableName) -> bool:
        """Whether `table` was there before the batch (then the rules about tables apply).
        Unqualified and qualified names of the same table are taken to match."""
        schemas = self.created.get(table.name)
        if schemas and (not table.schema or "" in schemas or table.schema in schemas):
            return False
        return self.table_exists is None or self.table_exists(table)


def _range_var(node: Mapping[str, Any] | None) -> TableName:
    node = node or {}
    return TableName(node.get("schemaname", ""), node.get("relname", ""))


def _qualified(items: list[dict[str, Any]]) -> TableName:
    """A name from a list of String nodes (`[schema,] name`)."""
    names = [item.get("String", {}).get("sval", "") for item in items]
    return TableName(names[-2] if len(names) > 1 else "", names[-1] if names else "")


def _option_on(options: Iterable[dict[str, Any]], name: str) -> bool:
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


def _calls_volatile(expression: Any) -> bool:
    """Whether a raw expression tree calls a function known to be volatile."""
    stack = [expression]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            call = node.get("FuncCall")
            if call is not None:
                name = call["funcname"][-1].get("String", {}).get("sval", "")
                if name.lower() in _VOLATILE_FUNCTIONS:
                    return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _rewrites_on_add(column: Mapping[str, Any]) -> bool:
    """Whether ADD COLUMN of this column definition rewrites the table."""
    type_names = column.get("typeName", {}).get("names", [])
    if type_names and type_names[-1].get("String", {}).get("sval", "") in _SERIAL_TYPES:
        return True
    for item in column.get("constraints", ()):
        constraint = item.get("Constraint", {})
        kind = constraint.get("contype")
        if kind == "CONSTR_IDENTITY" or (
            kind == "CONSTR_GENERATED" and constraint.get("generated_kind") == "s"
        ):
            return True
        if kind == "CONSTR_DEFAULT" and _calls_volatile(constraint.get("raw_expr")):
            return True
    return False


Hit = tuple[str, str]  # (rule id, subject)


def _alter_table(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    table = _range_var(node.get("relation"))
    if node.get("objtype", "OBJECT_TABLE") != "OBJECT_TABLE" or not batch.existing(table):
        return
    for item in node.get("cmds", ()):
        command = item.get("AlterTableCmd", {})
        subtype = command.get("subtype")
        column = f"{table}.{command.get('name', '')}"
        if subtype == "AT_DropColumn":
            yield "drop-column", column
        elif subtype == "AT_AlterColumnType":
            yield "change-column-type", column
        elif subtype == "AT_SetNotNull":
            yield "set-not-null", column
        elif subtype == "AT_AddColumn":
            definition = command.get("def", {}).get("ColumnDef", {})
            if _rewrites_on_add(definition):
                yield "volatile-default", f"{table}.{definition.get('colname', '')}"
        elif subtype == "AT_AddConstraint":
            constraint = command.get("def", {}).get("Constraint", {})
            kind = constraint.get("contype")
            if kind in ("CONSTR_FOREIGN", "CONSTR_CHECK") and not constraint.get("skip_validation"):
                yield "constraint-without-not-valid", str(table)
            elif kind in ("CONSTR_UNIQUE", "CONSTR_PRIMARY") and not constraint.get("indexname"):
                yield "unique-constraint-builds-index", str(table)


def _rename(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    table = _range_var(node.get("relation"))
    kind = node.get("renameType")
    if kind == "OBJECT_TABLE":
        if batch.existing(table):
            yield "rename-table", str(table)
        else:  # a table of the batch keeps being exempt under its new name
            batch.create(TableName(table.schema, node.get("newname", "")))
    elif (
        kind == "OBJECT_COLUMN"
        and node.get("relationType") == "OBJECT_TABLE"
        and batch.existing(table)
    ):
        yield "rename-column", f"{table}.{node.get('subname', '')}"


def _set_schema(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    table = _range_var(node.get("relation"))
    if node.get("objectType") == "OBJECT_TABLE" and batch.existing(table):
        yield "rename-table", str(table)


def _drop(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    if node.get("removeType") != "OBJECT_TABLE":
        return
    for item in node.get("objects", ()):
        table = _qualified(item.get("List", {}).get("items", []))
        if batch.existing(table):
            yield "drop-table", str(table)


def _create_index(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    table = _range_var(node.get("relation"))
    if not node.get("concurrent") and batch.existing(table):
        yield "index-without-concurrently", str(table)
    if node.get("idxname"):
        batch.create(TableName(table.schema, node["idxname"]))


def _reindex(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    if _option_on(node.get("params", ()), "concurrently"):
        return
    relation = node.get("relation")
    if relation is None:  # SCHEMA, DATABASE, SYSTEM: every table in it
        yield "reindex-without-concurrently", str(node.get("name", "")).strip() or "every table"
    elif batch.existing(_range_var(relation)):
        yield "reindex-without-concurrently", str(_range_var(relation))


def _vacuum(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    if not node.get("is_vacuumcmd") or not _option_on(node.get("options", ()), "full"):
        return
    relations = [r.get("VacuumRelation", {}).get("relation") for r in node.get("rels", ())]
    if not relations:
        yield "vacuum-full", "every table"
    for relation in relations:
        if batch.existing(_range_var(relation)):
            yield "vacuum-full", str(_range_var(relation))


def _cluster(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    relation = node.get("relation")
    if relation is None:
        yield "cluster", "every clustered table"
    elif batch.existing(_range_var(relation)):
        yield "cluster", str(_range_var(relation))


def _lock(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    for item in node.get("relations", ()):
        table = _range_var(item.get("RangeVar"))
        if batch.existing(table):
            yield "lock-table", str(table)


def _variable_set(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    name = str(node.get("name", "")).lower()
    if name in _SESSION_SETTINGS:
        yield _SESSION_SETTINGS[name], name


def _create_table(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    batch.create(_range_var(node.get("relation")))
    return iter(())


def _create_table_as(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    batch.create(_range_var(node.get("into", {}).get("rel")))
    return iter(())


def _select(node: Mapping[str, Any], batch: _Batch) -> Iterator[Hit]:
    into = node.get("intoClause")
    if into is not None:  # SELECT ... INTO creates a table
        batch.create(_range_var(into.get("rel")))
    return iter(())


_CHECKS: dict[str, Callable[[Mapping[str, Any], _Batch], Iterator[Hit]]] = {
    "AlterTableStmt": _alter_table,
    "RenameStmt": _rename,
    "AlterObjectSchemaStmt": _set_schema,
    "DropStmt": _drop,
    "IndexStmt": _create_index,
    "ReindexStmt": _reindex,
    "VacuumStmt": _vacuum,
    "ClusterStmt": _cluster,
    "LockStmt": _lock,
    "VariableSetStmt": _variable_set,
    "CreateStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "SelectStmt": _select,
}
NODES_READ: dict[str, str | None] = {
    **dict.fromkeys(_CHECKS),
    "CreateStmt": "relation",
    "SelectStmt": "intoClause",
}
"""What the rules read of each node type: pass it as `pgparse.parse_section(wanted=...)`."""


def lint_sections(
    sections: Iterable[ParsedSection],
    *,
    parser: Any,
    table_exists: Callable[[TableName], bool] | None = None,
) -> list[FileReport]:
    """Check the up sections of a batch of migrations, in the order they run.

    `table_exists` tells whether a table is there before the batch; by default every table that
    no earlier statement of the batch created counts as existing (the build's view). Returns one
    report per file with a finding, a note or a silenced finding (silenced ones only counted).
    """
    batch = _Batch(table_exists)
    reports = []
    for parsed in sections:
        report = FileReport(parsed.section.path.name)
        allowed = _allowed(parsed, parser, report)
        found: list[Finding] = []
        for index, statement in enumerate(parsed.statements):
            check = _CHECKS.get(statement.node_type)
            if check is None:
                continue
            for rule_id, subject in check(statement.node, batch):
                if rule_id in allowed.get(index, ()):
                    report.suppressed += 1
                else:
                    found.append(Finding(RULES[rule_id], report.file, statement.line, subject))
        found.extend(_shape(parsed, allowed, report))
        report.findings = sorted(found, key=lambda f: f.line)
        if report.findings or report.notes or report.suppressed:
            reports.append(report)
    return reports


def _shape(
    parsed: ParsedSection, allowed: dict[int, set[str]], report: FileReport
) -> list[Finding]:
    """`concurrent-with-others`, read from the runner's own statement kinds."""
    kinds = [s.kind for s in parsed.section.statements]
    outside = [i for i, kind in enumerate(kinds) if kind == NO_TRANSACTION]
    others = [kind for kind in kinds if kind not in (NO_TRANSACTION, TRANSACTION_CONTROL)]
    if not outside or (len(outside) == 1 and not others):
        return []
    index = outside[0]
    if "concurrent-with-others" in allowed.get(index, ()):
        report.suppressed += 1
        return []
    statement = parsed.section.statements[index]
    subject = f"{len(kinds) - kinds.count(TRANSACTION_CONTROL)} statements"
    return [Finding(RULES["concurrent-with-others"], report.file, statement.line, subject)]


def _allowed(parsed: ParsedSection, parser: Any, report: FileReport) -> dict[int, set[str]]:
    """Rule ids allowed per statement index, from `-- heroku-migrate:allow ...` comments."""
    sql = parsed.section.sql
    if ALLOW_DIRECTIVE not in sql:
        return {}
    allowed: dict[int, set[str]] = {}
    for token in parser.scan(sql):
        if token.name not in _COMMENT_TOKENS:
            continue
        text = sql[token.start : token.end + 1]
        match = _ALLOW_RE.search(text)
        if match is None:
            continue
        line = parsed.section.first_line + sql.count("\n", 0, token.start)
        ids = [word for word in re.split(r"[\s,]+", match.group(1).rstrip("*/ \t")) if word]
        unknown = [word for word in ids if word not in RULES]
        if unknown or not ids:
            report.notes.append(
                f"line {line}: {ALLOW_DIRECTIVE} names no known rule "
                f"({', '.join(unknown) or 'none given'}); rule ids are listed in the README"
            )
        target = _target(parsed.statements, sql, token.start)
        if target is None:
            report.notes.append(f"line {line}: {ALLOW_DIRECTIVE} follows the last statement")
            continue
        allowed.setdefault(target, set()).update(i for i in ids if i in RULES)
    return allowed


def _target(statements: list[ParsedStatement], sql: str, at: int) -> int | None:
    """The statement a comment at offset `at` applies to (see the module docstring)."""
    for index, statement in enumerate(statements):
        if statement.start <= at < statement.end:
            return index
        if statement.start > at:
            previous = statements[index - 1] if index else None
            if previous is not None and "\n" not in sql[previous.end : at]:
                return index - 1
            return index
    if statements and "\n" not in sql[statements[-1].end : at]:
        return len(statements) - 1
    return None


def lint_migrations(
    migrations: Iterable[Migration], *, table_exists: Callable[[TableName], bool] | None = None
) -> list[FileReport]:
    """Parse and check the up sections of `migrations`, in order (`plan`: the pending ones).

    Raises ParserUnavailable when pglast cannot be imported, BadInput on a syntax error.
    Sections with a `-- heroku-migrate:no-parse` line are left out.
    """
    from herokumigrate.pgparse import load_parser, parse_section, skips_parsing

    parser = load_parser()
    parsed = [
        parse_section(parser, m.up, wanted=NODES_READ)
        for m in migrations
        if not skips_parsing(m.up)
    ]
    return lint_sections(parsed, parser=parser, table_exists=table_exists)
