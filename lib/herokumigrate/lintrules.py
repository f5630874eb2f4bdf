"""The release-safety lint's rules: id, level, category, the one-line why and the safe way.

Pure data, shown by the build's report, `plan`, `heroku-migrate lint` and docs/lint.md (a test
keeps that page's table equal to this one). The checks that find them are in `lintchecks.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Category = Literal["breaks the running release", "blocks the table", "risky shape"]
Level = Literal["error", "warning"]
"""`error`: fails `heroku-migrate lint` (exit 1) and, with `lint = "error"`, the build.
`warning`: reported, never fails anything."""
ERROR: Level = "error"
WARNING: Level = "warning"

_BREAKS: Category = "breaks the running release"
_BLOCKS: Category = "blocks the table"
_RISKY: Category = "risky shape"


@dataclass(frozen=True)
class Rule:
    """One lint rule, as the reports and docs/lint.md show it."""

    id: str
    level: Level
    category: Category
    why: str
    instead: str


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "rename-column",
            ERROR,
            _BREAKS,
            "the release still serving reads and writes the old name until its dynos restart",
            "add the new column, write both, backfill, move reads, drop the old one later",
        ),
        Rule(
            "rename-table",
            ERROR,
            _BREAKS,
            "the release still serving queries the table by its old name (or schema)",
            "create the new table (or a view under the old name), move the code, drop later",
        ),
        Rule(
            "rename-object",
            ERROR,
            _BREAKS,
            "the release still serving uses the view, function, type, enum value, sequence or "
            "schema by its old name",
            "create the new one next to the old, move the code, drop the old one in a later "
            "release",
        ),
        Rule(
            "drop-column",
            ERROR,
            _BREAKS,
            "the release still serving selects or inserts it (ORMs list every column)",
            "release code that ignores the column first, then drop it in a later release",
        ),
        Rule(
            "drop-table",
            ERROR,
            _BREAKS,
            "the release still serving may still query the table",
            "release code that no longer uses it first, then drop it in a later release",
        ),
        Rule(
            "drop-object",
            ERROR,
            _BREAKS,
            "the release still serving may still use the view, function, type, sequence, schema "
            "or extension",
            "release code that no longer uses it first, then drop it in a later release (a "
            "view or function dropped and created again in the same transaction is fine)",
        ),
        Rule(
            "drop-database",
            ERROR,
            _BREAKS,
            "DROP DATABASE removes a whole database, with no way back",
            "drop it by hand (heroku pg:reset, or psql), never from a release",
        ),
        Rule(
            "add-required-column",
            ERROR,
            _BREAKS,
            "ADD COLUMN ... NOT NULL without a DEFAULT fails on a table that has rows, and the "
            "release still serving inserts rows without the column",
            "add it with a constant DEFAULT (no rewrite since PostgreSQL 11), or nullable and "
            "made NOT NULL the safe way once the code writes it",
        ),
        Rule(
            "change-column-type",
            ERROR,
            _BREAKS,
            "rewrites the table and its indexes under ACCESS EXCLUSIVE, and the running code "
            "may write values the new type rejects",
            "add a column of the new type, backfill in batches, move the code, drop the old one "
            "(widening varchar/numeric or varchar to text needs none of this)",
        ),
        Rule(
            "set-not-null",
            ERROR,
            _BREAKS,
            "scans the table under ACCESS EXCLUSIVE, and the running code may still write NULLs",
            "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a later "
            "release, then SET NOT NULL (no scan since PostgreSQL 12)",
        ),
        Rule(
            "drop-unique-constraint",
            WARNING,
            _BREAKS,
            "the release still serving may rely on the UNIQUE or PRIMARY KEY constraint: its "
            "ON CONFLICT upserts fail without it, and its code may not expect duplicates",
            "drop it in a later release, once the code no longer relies on it (replacing it "
            "with another UNIQUE or PRIMARY KEY in the same transaction is fine)",
        ),
        Rule(
            "drop-not-null",
            WARNING,
            _BREAKS,
            "the release still serving may read the NULLs the new code writes, and not expect them",
            "release code that copes with NULL first, then drop the NOT NULL in a later release",
        ),
        Rule(
            "drop-default",
            WARNING,
            _BREAKS,
            "DROP DEFAULT or DROP EXPRESSION: rows the release still serving inserts without the "
            "column get NULL (or fail, when it is NOT NULL)",
            "release code that writes the column first, then drop the default in a later release",
        ),
        Rule(
            "alter-identity",
            WARNING,
            _BREAKS,
            "GENERATED ALWAYS rejects the ids the running code inserts; DROP IDENTITY leaves "
            "its inserts without an id",
            "use GENERATED BY DEFAULT, or change the code first and the column in a later release",
        ),
        Rule(
            "index-without-concurrently",
            ERROR,
            _BLOCKS,
            "CREATE INDEX blocks every write to the table until the index is built",
            "CREATE INDEX CONCURRENTLY, alone in its migration (it runs outside the transaction)",
        ),
        Rule(
            "drop-index-without-concurrently",
            ERROR,
            _BLOCKS,
            "DROP INDEX takes ACCESS EXCLUSIVE on the table and holds it until the release's "
            "transaction commits: reads and writes wait",
            "DROP INDEX CONCURRENTLY, alone in its migration (it runs outside the transaction)",
        ),
        Rule(
            "constraint-without-not-valid",
            ERROR,
            _BLOCKS,
            "ADD CONSTRAINT ... FOREIGN KEY/CHECK (or ADD COLUMN ... REFERENCES/CHECK) checks "
            "every row while writes wait (a foreign key also locks the table it references)",
            "add it NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT in a later release",
        ),
        Rule(
            "validate-in-same-transaction",
            ERROR,
            _BLOCKS,
            "the constraint was added NOT VALID in the same transaction: its lock is still held "
            "while VALIDATE scans the table, so writes wait as if NOT VALID were not used",
            'VALIDATE CONSTRAINT in a later release (with transaction = "release", every '
            "pending migration shares one transaction)",
        ),
        Rule(
            "unique-constraint-builds-index",
            ERROR,
            _BLOCKS,
            "ADD CONSTRAINT ... UNIQUE/PRIMARY KEY/EXCLUDE (or ADD COLUMN ... UNIQUE/PRIMARY "
            "KEY) builds its index under ACCESS EXCLUSIVE",
            "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX",
        ),
        Rule(
            "volatile-default",
            ERROR,
            _BLOCKS,
            "ADD COLUMN with a volatile default (random(), gen_random_uuid(), clock_timestamp(), "
            "a function the migrations create VOLATILE, a serial, identity or stored generated "
            "column) rewrites the table under ACCESS EXCLUSIVE",
            "add the column without that default, then SET DEFAULT and backfill in batches",
        ),
        Rule(
            "detach-partition-without-concurrently",
            ERROR,
            _BLOCKS,
            "DETACH PARTITION takes ACCESS EXCLUSIVE on the partitioned table",
            "DETACH PARTITION ... CONCURRENTLY, alone in its migration (it runs outside the "
            "transaction)",
        ),
        Rule(
            "domain-constraint",
            ERROR,
            _BLOCKS,
            "ALTER DOMAIN ... ADD CONSTRAINT (or VALIDATE CONSTRAINT) checks every column of "
            "that domain in every table while writes to them wait",
            "put the CHECK on the columns instead (ADD CONSTRAINT ... NOT VALID, VALIDATE in a "
            "later release)",
        ),
        Rule(
            "vacuum-full",
            ERROR,
            _BLOCKS,
            "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE",
            "plain VACUUM (blocks no one), or pg_repack outside the release",
        ),
        Rule(
            "cluster",
            ERROR,
            _BLOCKS,
            "CLUSTER rewrites the table under ACCESS EXCLUSIVE",
            "pg_repack --order-by outside the release, or leave the order to the planner",
        ),
        Rule(
            "reindex-without-concurrently",
            ERROR,
            _BLOCKS,
            "REINDEX blocks writes to the table, and reads that would use the index",
            "REINDEX ... CONCURRENTLY, alone in its migration",
        ),
        Rule(
            "lock-table",
            WARNING,
            _BLOCKS,
            "LOCK TABLE holds its lock until the release's transaction commits, across every "
            "later migration of the release",
            "let each statement take the lock it needs; keep such a migration short and alone",
        ),
        Rule(
            "truncate-cascade",
            ERROR,
            _RISKY,
            "TRUNCATE ... CASCADE also empties every table with a foreign key to it, and the "
            "tables referencing those",
            "name every table to empty: TRUNCATE a, b",
        ),
        Rule(
            "create-domain-with-constraint",
            WARNING,
            _RISKY,
            "every later change to a domain's constraint checks every column of that domain, in "
            "every table, while writes wait",
            "use the base type and put the CHECK on each column",
        ),
        Rule(
            "concurrent-with-others",
            WARNING,
            _RISKY,
            "a statement that runs outside the transaction shares its migration with others: if "
            "it fails, they were already applied and only the down migration undoes them",
            "give each CONCURRENTLY statement (and VACUUM etc.) a migration of its own",
        ),
        Rule(
            "set-timeout",
            WARNING,
            _RISKY,
            "SET lock_timeout/statement_timeout replaces the runner's short, retried lock "
            "timeouts for the rest of that migration (the runner re-asserts them before the next)",
            "set MIGRATE_LOCK_TIMEOUT / MIGRATE_STATEMENT_TIMEOUT (or migrate.toml) instead",
        ),
        Rule(
            "set-search-path",
            WARNING,
            _RISKY,
            "SET search_path changes where every later migration's unqualified names resolve",
            "schema-qualify names (CREATE TABLE app.orders), or set the role's search_path",
        ),
    )
}
