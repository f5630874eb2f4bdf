"""Our release-safety lint against squawk (`squawk-cli` on PyPI) on the same migration sets.

    .venv/bin/pip install squawk-cli        # the benchmark's only extra; not a test dependency
    .venv/bin/python test/bench/lint_compare.py CORPUS [CORPUS ...] [--output table.md]

A CORPUS is a folder of migrations: golang-migrate/dbmate/goose files as heroku-migrate reads
them, or one folder per migration holding `migration.sql` (Prisma) or `up.sql` (Diesel), which
are copied, in their tool's order, to golang-migrate files in a temporary folder. `NAME=PATH`
names a corpus in the table (default: the folder's name). The safe set (`--safe`, default
test/fixtures/lint_safe) is linted by both too: everything found there is a false alarm.

squawk runs once over each corpus's up files, with `--assume-in-transaction` (each migration
runs in a transaction: golang-migrate, Prisma and Diesel do it, and so do we) and its default
rules. We run as shipped: `heroku-migrate lint --path FOLDER --format json`, which checks each
migration as released alone, after the ones before it. Findings are counted per statement: a
squawk finding is placed in the statement (by our splitter) whose lines hold it, and a row
counts each statement once however many of its rules fire. `both` = statements both flag.
squawk's constraint-missing-not-valid on a UNIQUE/PRIMARY KEY/EXCLUDE constraint (which has no
NOT VALID form) is counted in the UNIQUE row.

Prints a Markdown report (the machine, versions, one table per corpus, the false alarms on the
safe set); not collected by pytest. Exit 2 when squawk is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lib"))

from herokumigrate.lintrules import RULES  # noqa: E402
from herokumigrate.sections import SourceFile, SqlSection  # noqa: E402
from herokumigrate.source import load_migrations  # noqa: E402

# One row per hazard: (what, squawk's rules, ours). squawk's safety rules that are on by
# default in squawk-cli 2.70; the rest are listed in MOOT and STYLE (see docs/lint.md).
ROWS: list[tuple[str, frozenset[str], frozenset[str]]] = [
    (label, frozenset(theirs.split()), frozenset(ours.split()))
    for label, theirs, ours in (
        ("rename a column", "renaming-column", "rename-column"),
        ("rename a table / move it to a schema", "renaming-table ban-set-schema", "rename-table"),
        ("rename another object", "renaming-object", "rename-object"),
        ("drop a column", "ban-drop-column", "drop-column"),
        ("drop a table", "ban-drop-table", "drop-table"),
        (
            "drop a view, function, type, sequence, schema, extension",
            "ban-drop-view ban-drop-function ban-drop-type ban-drop-domain ban-drop-sequence "
            "ban-drop-schema ban-drop-extension",
            "drop-object",
        ),
        ("drop a database", "ban-drop-database", "drop-database"),
        ("add a NOT NULL column without default", "adding-required-field", "add-required-column"),
        ("change a column's type", "changing-column-type", "change-column-type"),
        ("SET NOT NULL", "adding-not-nullable-field", "set-not-null"),
        ("DROP NOT NULL", "ban-drop-not-null", "drop-not-null"),
        (
            "DROP DEFAULT / DROP EXPRESSION",
            "ban-drop-default ban-drop-generated-expression",
            "drop-default",
        ),
        ("identity changes", "ban-alter-identity", "alter-identity"),
        (
            "CREATE INDEX without CONCURRENTLY",
            "require-concurrent-index-creation",
            "index-without-concurrently",
        ),
        (
            "DROP INDEX without CONCURRENTLY",
            "require-concurrent-index-deletion",
            "drop-index-without-concurrently",
        ),
        (
            "FOREIGN KEY / CHECK without NOT VALID",
            "constraint-missing-not-valid adding-foreign-key-constraint",
            "constraint-without-not-valid validate-in-same-transaction",
        ),
        (
            "UNIQUE / PRIMARY KEY building an index",
            "disallowed-unique-constraint adding-serial-primary-key-field",
            "unique-constraint-builds-index",
        ),
        ("ADD COLUMN that rewrites the table", "adding-field-with-default", "volatile-default"),
        (
            "DETACH PARTITION without CONCURRENTLY",
            "require-concurrent-partition-detach",
            "detach-partition-without-concurrently",
        ),
        (
            "REINDEX without CONCURRENTLY",
            "require-concurrent-reindex",
            "reindex-without-concurrently",
        ),
        ("VACUUM FULL / CLUSTER", "prefer-repack", "vacuum-full cluster"),
        (
            "ALTER DOMAIN ADD CONSTRAINT",
            "ban-alter-domain-with-add-constraint",
            "domain-constraint",
        ),
        (
            "CREATE DOMAIN with a constraint",
            "ban-create-domain-with-constraint",
            "create-domain-with-constraint",
        ),
        ("TRUNCATE ... CASCADE", "ban-truncate-cascade", "truncate-cascade"),
        ("drop a constraint", "ban-drop-constraint", "drop-unique-constraint"),
        ("LOCK TABLE", "", "lock-table"),
        ("CONCURRENTLY sharing its migration", "", "concurrent-with-others"),
        ("SET lock_timeout / statement_timeout / search_path", "", "set-timeout set-search-path"),
    )
]
MOOT = frozenset(
    {
        "prefer-robust-stmts",
        "require-lock-timeout",
        "require-statement-timeout",
        "require-timeout-settings",
        "transaction-nesting",
        "ban-concurrent-index-creation-in-transaction",
        "ban-uncommitted-transaction",
        "ban-duplicate-column-assignments",
    }
)
STYLE = frozenset(
    {
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-identity",
        "prefer-text-field",
        "prefer-timestamp-tz",
        "prefer-timestamptz",
        "ban-char-field",
        "identifier-too-long",
        "require-table-schema",
        "require-enum-value-ordering",
    }
)


@dataclass
class Flags:
    """The statements each linter flagged, per row label: {(file, statement line)}."""

    squawk: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    ours: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    unmapped: dict[str, int] = field(default_factory=dict)  # squawk rules outside ROWS


@dataclass
class Corpus:
    """A migration set as both linters see it: our folder, and the up files squawk reads."""

    name: str
    source: Path
    folder: Path  # golang-migrate/dbmate/goose files
    up_files: dict[str, Path]  # our file name -> the file squawk reads


def prepare(spec: str, scratch: Path) -> Corpus:
    """The corpus NAME=PATH or PATH, converted when it is a Prisma or Diesel layout."""
    name, _, path_text = spec.rpartition("=") if "=" in spec else ("", "", spec)
    source = Path(path_text).resolve()
    name = name or source.name
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    nested = [
        (p, p / "migration.sql" if (p / "migration.sql").exists() else p / "up.sql")
        for p in folders
    ]
    nested = [(p, f) for p, f in nested if f.exists()]
    if not nested:
        ups = {m.up.path.name: Path(m.up.path.full) for m in load_migrations(source) if m.up.sql}
        return Corpus(name, source, source, ups)
    folder = scratch / name
    folder.mkdir(parents=True)
    ups = {}
    for number, (directory, up) in enumerate(nested, 1):
        title = re.sub(r"[^A-Za-z0-9]+", "_", directory.name).strip("_")
        target = f"{number:05d}_{title}.up.sql"
        shutil.copyfile(up, folder / target)
        ups[target] = up
    return Corpus(name, source, folder, ups)


_STATEMENTS: dict[Path, list[tuple[int, str]]] = {}
_INDEX_ONLY = re.compile(r"\b(UNIQUE|PRIMARY\s+KEY|EXCLUDE)\b", re.IGNORECASE)
_VALIDATED = re.compile(r"\b(FOREIGN\s+KEY|REFERENCES|CHECK|VALIDATE)\b", re.IGNORECASE)


def statement_at(path: Path, line: int) -> tuple[int, str]:
    """(first line, text) of the statement holding `line` (1-based), by our splitter."""
    if path not in _STATEMENTS:
        text = path.read_text(encoding="utf-8")
        section = SqlSection(SourceFile(str(path), path.name), text)
        _STATEMENTS[path] = [(s.line, s.text) for s in section.statements]
    before = [s for s in _STATEMENTS[path] if s[0] <= line]
    return before[-1] if before else (line, "")


def squawk_row(rule: str, statement: str) -> str | None:
    """The row of a squawk finding. squawk also reports UNIQUE and PRIMARY KEY constraints as
    constraint-missing-not-valid (they cannot be NOT VALID): those go to the UNIQUE row, where
    its own disallowed-unique-constraint puts them too."""
    if (
        rule == "constraint-missing-not-valid"
        and _INDEX_ONLY.search(statement)
        and not _VALIDATED.search(statement)
    ):
        rule = "disallowed-unique-constraint"
    return row_of(rule, mine=False)


def run_squawk(squawk: str, corpus: Corpus, flags: Flags) -> None:
    by_path = {str(path): name for name, path in corpus.up_files.items()}
    result = subprocess.run(
        [squawk, "--reporter", "json", "--assume-in-transaction", *by_path],
        capture_output=True,
        text=True,
        check=False,
    )
    for violation in json.loads(result.stdout or "[]"):
        rule = violation["rule_name"]
        name = by_path.get(violation["file"], violation["file"])
        line, text = statement_at(Path(violation["file"]), violation["line"] + 1)
        where = (name, line)
        label = squawk_row(rule, text)
        if label is not None:
            flags.squawk.setdefault(label, set()).add(where)
        else:
            flags.unmapped[rule] = flags.unmapped.get(rule, 0) + 1


def run_ours(corpus: Corpus, flags: Flags) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    for name in list(env):
        if name.startswith("MIGRATE_"):
            del env[name]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "herokumigrate",
            "lint",
            "--path",
            str(corpus.folder),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=corpus.folder,
    )
    if result.returncode not in (0, 1):
        sys.exit(f"heroku-migrate lint failed on {corpus.name}: {result.stderr.strip()}")
    for finding in json.loads(result.stdout)["findings"]:
        label = row_of(finding["rule"], mine=True)
        assert label is not None, finding["rule"]
        flags.ours.setdefault(label, set()).add((finding["file"], finding["line"]))


def row_of(rule: str, *, mine: bool) -> str | None:
    for label, theirs, ours in ROWS:
        if rule in (ours if mine else theirs):
            return label
    return None


def version_of(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[0]


def table(corpus_flags: list[tuple[str, Flags]], safe: Flags) -> list[str]:
    """One Markdown table: per row, squawk / ours / both for each corpus, and false alarms."""
    head = ["hazard", "squawk rule(s)", "our rule(s)"]
    for name, _ in corpus_flags:
        head += [f"{name}: squawk", f"{name}: ours", f"{name}: both"]
    head += ["safe set: squawk", "safe set: ours"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, theirs, ours in ROWS:
        cells = [label, _ids(theirs), _ids(ours)]
        for _, flags in corpus_flags:
            them, us = flags.squawk.get(label, set()), flags.ours.get(label, set())
            cells += [_n(them, theirs), _n(us, ours), _n(them & us, theirs and ours)]
        cells += [
            _n(safe.squawk.get(label, set()), theirs),
            _n(safe.ours.get(label, set()), ours),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    total = ["**every row**", "", ""]
    for _, flags in corpus_flags:
        them = set().union(*flags.squawk.values()) if flags.squawk else set()
        us = set().union(*flags.ours.values()) if flags.ours else set()
        total += [str(len(them)), str(len(us)), str(len(them & us))]
    total += [str(sum(map(len, safe.squawk.values()))), str(sum(map(len, safe.ours.values())))]
    lines.append("| " + " | ".join(total) + " |")
    return lines


def _ids(rules: Iterable[str]) -> str:
    return ", ".join(f"`{r}`" for r in sorted(rules)) or "(none)"


def _n(found: set[tuple[str, int]], applies: object) -> str:
    return str(len(found)) if applies else "-"


def details(corpus_flags: list[tuple[str, Flags]], limit: int) -> list[str]:
    """Statements one linter flags and the other does not, a few per row (for reading)."""
    lines = []
    for name, flags in corpus_flags:
        for label, _, _ in ROWS:
            them, us = flags.squawk.get(label, set()), flags.ours.get(label, set())
            for who, only in (("squawk only", them - us), ("ours only", us - them)):
                if only:
                    shown = ", ".join(f"{f}:{n}" for f, n in sorted(only)[:limit])
                    lines.append(f"- {name}, {label}, {who} ({len(only)}): {shown}")
    return lines


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("corpus", nargs="+", help="NAME=PATH or PATH of a migration set")
    options.add_argument("--safe", default=str(REPO / "test/fixtures/lint_safe"))
    options.add_argument(
        "--squawk", default=shutil.which("squawk") or str(Path(sys.executable).with_name("squawk"))
    )
    options.add_argument("--output", type=Path, help="write the report here too")
    options.add_argument(
        "--details",
        type=int,
        default=0,
        metavar="N",
        help="list N statements per row that only one linter flags",
    )
    args = options.parse_args()
    if not Path(args.squawk).exists() and shutil.which(args.squawk) is None:
        print("squawk is not installed: pip install squawk-cli", file=sys.stderr)
        sys.exit(2)
    with tempfile.TemporaryDirectory() as temp:
        results = []
        for spec in [*args.corpus, f"safe set={args.safe}"]:
            corpus = prepare(spec, Path(temp))
            flags = Flags()
            run_squawk(args.squawk, corpus, flags)
            run_ours(corpus, flags)
            results.append((corpus, flags))
    *corpora, (safe_corpus, safe) = results
    report = [
        f"squawk: `{version_of([args.squawk, '--version'])}` with `--assume-in-transaction`; "
        f"ours: `heroku-migrate lint` ({len(RULES)} rules); Python {platform.python_version()}",
        "",
        *(f"- {c.name}: {len(c.up_files)} migrations from `{c.source}`" for c, _ in corpora),
        f"- safe set: {len(safe_corpus.up_files)} migrations from `{safe_corpus.source}`",
        "",
        *table([(c.name, f) for c, f in corpora], safe),
        "",
        "squawk findings outside the table (moot for our runner, or style), per corpus:",
        "",
    ]
    for corpus, flags in [*corpora, (safe_corpus, safe)]:
        moot = {r: n for r, n in sorted(flags.unmapped.items()) if r in MOOT}
        style = {r: n for r, n in sorted(flags.unmapped.items()) if r in STYLE}
        other = {r: n for r, n in sorted(flags.unmapped.items()) if r not in MOOT | STYLE}
        report.append(f"- {corpus.name}: moot {moot}; style {style}; unclassified {other}")
    if args.details:
        report += ["", *details([(c.name, f) for c, f in corpora], args.details)]
    text = "\n".join(report) + "\n"
    print(text, end="")
    if args.output:
        args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
