"""Lock retries: how long each attempt of a commit unit may wait for a table lock, how long to
pause between attempts, and when to give up.

A migration's `ALTER TABLE` queues for its lock behind a long transaction, and every app query
on that table queues behind the `ALTER`: the app stalls for as long as the migration waits. So
each attempt waits only briefly (`lock_timeout` steps starting at 0.1 s and doubling, capped by
the `lock_timeout` setting, 0.5 s by default), then rolls back and pauses (jittered, growing to
2 s) while the app's queries go through, and tries again, for up to `lock_retry_budget`
seconds (and at most `retries` retries, when set). The design follows GitLab's
`with_lock_retries` (steps from 100 ms, sleeps between, a bounded total) and pgroll (500 ms).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import errors as pg_errors

from herokumigrate.statements import StepFailed

if TYPE_CHECKING:
    from collections.abc import Callable

    from herokumigrate.config import Config
    from herokumigrate.output import Output

# What a retry can get past: the other session lets go, or one side of the deadlock gives way.
RETRYABLE = (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected)
# The first attempt's lock_timeout; each retry doubles it, up to the `lock_timeout` setting.
FIRST_LOCK_TIMEOUT = 0.1
# Pauses between attempts grow from FIRST_PAUSE, doubling, to at most MAX_PAUSE (then +-50%).
FIRST_PAUSE = 0.2
MAX_PAUSE = 2.0


@dataclass(frozen=True)
class LockRetryPolicy:
    """The retry schedule of one commit unit, from the settings."""

    lock_timeout: float  # the cap of every attempt's wait for a lock; 0: wait without limit
    budget: float  # seconds from the first attempt after which no new attempt starts
    retries: int | None  # at most this many retries; None: as many as the budget allows

    @classmethod
    def from_config(cls, config: Config) -> LockRetryPolicy:
        """The policy the settings describe."""
        return cls(config.lock_timeout, config.lock_retry_budget, config.retries)

    def attempt_lock_timeout(self, attempt: int) -> float:
        """The lock_timeout of attempt `attempt` (0 for the first)."""
        if self.lock_timeout <= 0:
            return 0.0
        return min(self.lock_timeout, FIRST_LOCK_TIMEOUT * 2.0**attempt)

    def pause(self, retry: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to pause before retry `retry` (1 for the first), jittered by +-50% so that
        two runners (or a runner and a cron job) do not keep colliding."""
        return min(MAX_PAUSE, FIRST_PAUSE * 2.0 ** (retry - 1)) * rng(0.5, 1.5)

    def may_retry(self, retry: int, started: float, pause: float, now: float) -> bool:
        """Whether retry `retry` may start after `pause`, for a unit first tried at `started`."""
        if self.retries is not None and retry > self.retries:
            return False
        return now + pause - started <= self.budget

    def describe_retry(self, retry: int, started: float, now: float) -> str:
        """`retry 3 of 5` or `retry 3, 110s of lock_retry_budget left`, for progress lines."""
        if self.retries is not None:
            return f"retry {retry} of {self.retries}"
        left = max(0.0, self.budget - (now - started))
        return f"retry {retry}, {left:.0f}s of lock_retry_budget left"


def with_lock_retries(
    policy: LockRetryPolicy,
    output: Output,
    attempt: Callable[[float], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    before_retry: Callable[[StepFailed], None] | None = None,
) -> None:
    """Run `attempt(lock_timeout)` (a transaction that commits or rolls back as a whole, or one
    autocommit statement) until it gets through, retrying on lock timeout or deadlock as
    `policy` says; each attempt gets its own lock_timeout.

    Raises the last StepFailed once the budget (or `retries`) is spent, and any other
    StepFailed at once. `before_retry` cleans up after a failed attempt (an INVALID index)."""
    started = clock()
    retry = 0
    while True:
        lock_timeout = policy.attempt_lock_timeout(retry)
        try:
            attempt(lock_timeout)
            return
        except StepFailed as exc:
            if not isinstance(exc.error, RETRYABLE):
                raise
            retry += 1
            pause = policy.pause(retry)
            if not policy.may_retry(retry, started, pause, clock()):
                output.warn(
                    f"Gave up after {retry - 1} retries in {clock() - started:.0f}s "
                    "(lock_retry_budget / retries)"
                )
                raise
            # Not pinpointed: the retries send less at a time until one names the statement.
            label, line = exc.step.migration.label, exc.step.statement.line
            if exc.through is not None:
                where = f"{label}: line {line} ... {exc.through.migration.label} (one round trip)"
            elif not exc.pinpointed:
                where = f"{label}: a statement from line {line} on"
            else:
                where = f"{label}: line {line}"
            output.detail(
                f"{where}: "
                f"{_conflict(exc, lock_timeout)}, rolled back; "
                f"{policy.describe_retry(retry, started, clock())} in {pause:.1f}s "
                "(the app's queries are not kept waiting meanwhile)"
            )
            if before_retry is not None:
                before_retry(exc)
            sleep(pause)


def _conflict(exc: StepFailed, lock_timeout: float) -> str:
    if isinstance(exc.error, pg_errors.LockNotAvailable):
        return f"lock not granted within {lock_timeout:g}s ({exc.error.sqlstate})"
    return f"deadlock ({exc.error.sqlstate})"


def clock() -> float:
    """The monotonic clock the retry budget is measured on."""
    return time.monotonic()
