"""The errors the runner reports to users, each with its exit code and the fix.

One place (`cli.main`) turns these into ` !     ` lines and an exit code; nothing else prints
tracebacks or picks exit codes.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_MIGRATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LOCK_TIMEOUT = 3


class MigrateError(Exception):
    """A failure explained for the user: what happened, and how to fix it."""

    exit_code = EXIT_MIGRATION_FAILED

    def __init__(self, message: str, fix: str = "", details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.details = details

    def lines(self) -> list[str]:
        """The lines printed for this error: message, details, then the fix."""
        out = [self.message, *self.details]
        if self.fix:
            out.append(self.fix)
        return out


class BadInput(MigrateError):
    """Configuration, migration files or the database URL are wrong (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class MigrationFailed(MigrateError):
    """A migration failed; what this run did was rolled back or compensated (exit 1)."""

    exit_code = EXIT_MIGRATION_FAILED


class LockTimeout(MigrateError):
    """Another runner held the migration lock for longer than the configured wait (exit 3)."""

    exit_code = EXIT_LOCK_TIMEOUT
