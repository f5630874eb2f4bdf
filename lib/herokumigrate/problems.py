"""Collects every bad file of a migrations folder, so that one run reports them all."""

from __future__ import annotations

from herokumigrate.errors import BadInput

SHOWN = 50  # past this many, the report says how many more there are


class FileProblems:
    """Bad-input errors found in migration files, reported together (sorted by file name)."""

    def __init__(self) -> None:
        self._found: list[tuple[str, int, BadInput]] = []

    def __len__(self) -> int:
        return len(self._found)

    def add(self, file_name: str, error: BadInput) -> None:
        """Record `error`, found in the file `file_name`."""
        self._found.append((file_name, len(self._found), error))

    def raise_if_any(self) -> None:
        """Raise one BadInput (exit 2): the problem itself when there is one, else a summary
        whose details list each problem and its fix."""
        if not self._found:
            return
        ordered = [error for _, _, error in sorted(self._found, key=lambda f: (f[0], f[1]))]
        if len(ordered) == 1:
            raise ordered[0]
        details = [_one_line(e) for e in ordered[:SHOWN]]
        if len(ordered) > SHOWN:
            details.append(f"... and {len(ordered) - SHOWN} more")
        raise BadInput(
            f"{len(ordered)} problems in the migration files:",
            details=tuple(details),
            fix="Fix each file named above, then check again with `heroku-migrate validate`.",
        )


def _one_line(error: BadInput) -> str:
    fix = f" {error.fix}" if error.fix else ""
    return f"{error.message}.{fix}" if not error.message.endswith(".") else error.message + fix
