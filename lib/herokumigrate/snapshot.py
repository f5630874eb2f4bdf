"""What the schema holds, in one cheap catalog query: taken before a run that may need
compensating, and again after it, so that "as before" is a checked claim, never a hope.

The objects compared: schemas, relations (tables, indexes, sequences, views, composite types),
columns with their types, constraints, functions, other types, triggers and extensions, in
every schema but PostgreSQL's own. Rows of data are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from herokumigrate.signals import transaction

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[object, ...]]

WHAT_IS_COMPARED = (
    "schemas, tables, columns, indexes, sequences, views, constraints, functions, types, "
    "triggers and extensions"
)

_USER_NAMESPACE = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    " AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'"
)
_RELATION_KIND = (
    "CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'i' THEN 'index'"
    " WHEN 'I' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'"
    " WHEN 'm' THEN 'materialized view' WHEN 'c' THEN 'type' WHEN 'f' THEN 'foreign table'"
    " ELSE 'relation' END"
)


def _not_extension_member(catalog: str, oid: str) -> str:
    """An extension's own objects are covered by its `extension` entry."""
    return (
        f" AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = '{catalog}'::regclass"
        f" AND d.objid = {oid} AND d.deptype = 'e')"
    )


# Run with search_path = pg_catalog, so that every name outside it prints schema-qualified,
# the same way before and after, whatever the migrations did to the session's search_path.
_OBJECTS = (
    "SELECT 'schema ' || quote_ident(n.nspname) FROM pg_namespace n WHERE "
    + _USER_NAMESPACE
    + " UNION ALL SELECT "
    + _RELATION_KIND
    + " || ' ' || c.oid::regclass::text"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
    + _USER_NAMESPACE
    + _not_extension_member("pg_class", "c.oid")
    + " UNION ALL SELECT 'column ' || c.oid::regclass::text || '.' || quote_ident(a.attname)"
    " || ' ' || format_type(a.atttypid, a.atttypmod)"
    " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')"
    " AND "
    + _USER_NAMESPACE
    + _not_extension_member("pg_class", "c.oid")
    + " UNION ALL SELECT 'constraint ' || quote_ident(k.conname) || ' on '"
    " || CASE WHEN k.conrelid <> 0 THEN k.conrelid::regclass::text"
    " ELSE k.contypid::regtype::text END"
    " FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace WHERE "
    + _USER_NAMESPACE
    + " UNION ALL SELECT 'function ' || p.oid::regprocedure::text"
    " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE "
    + _USER_NAMESPACE
    + _not_extension_member("pg_proc", "p.oid")
    + " UNION ALL SELECT 'type ' || t.oid::regtype::text"
    " FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
    " WHERE t.typrelid = 0 AND t.typcategory <> 'A' AND "
    + _USER_NAMESPACE
    + _not_extension_member("pg_type", "t.oid")
    + " UNION ALL SELECT 'trigger ' || quote_ident(g.tgname) || ' on ' || c.oid::regclass::text"
    " FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT g.tgisinternal AND "
    + _USER_NAMESPACE
    + " UNION ALL SELECT 'extension ' || quote_ident(x.extname) FROM pg_extension x"
)


@dataclass(frozen=True)
class SchemaSnapshot:
    """The schema's objects, each as `kind qualified.name` (columns with their type)."""

    objects: frozenset[str]

    def compare(self, after: SchemaSnapshot) -> SchemaDifference:
        """What `after` holds that this snapshot did not, and what it lacks."""
        return SchemaDifference(
            appeared=sorted(after.objects - self.objects),
            vanished=sorted(self.objects - after.objects),
        )


@dataclass(frozen=True)
class SchemaDifference:
    """Objects that appeared or vanished between two snapshots, sorted."""

    appeared: list[str]
    vanished: list[str]

    @property
    def none(self) -> bool:
        """True when the two snapshots hold the same objects."""
        return not (self.appeared or self.vanished)

    def describe(self, limit: int = 8) -> str:
        """`left behind: ...; gone: ...`, each list capped at `limit` with a count."""
        parts = []
        for label, names in (("left behind", self.appeared), ("gone", self.vanished)):
            if names:
                shown = ", ".join(names[:limit])
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{label}: {shown}{more}")
        return "; ".join(parts)


def take_snapshot(conn: Conn) -> SchemaSnapshot:
    """The schema's objects now, read in a transaction of its own (no transaction may be open)."""
    with transaction(conn):
        conn.execute("SET LOCAL search_path = pg_catalog")
        found = conn.execute(_OBJECTS).fetchall()
    return SchemaSnapshot(frozenset(str(row[0]) for row in found))
