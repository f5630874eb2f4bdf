"""The Heroku stacks this buildpack supports, and what each one's images give the release phase.

A build on any other stack stops at once: what we know about a stack's run image (whether it
has a python3, which shared libraries) decides how the runner is installed, and for a stack we do
not know we would be guessing. `STACK` unset means a run outside Heroku (a laptop, a test): the
build then makes no assumption about the run image and bundles the build's own interpreter, which
needs nothing from wherever the app runs next.
"""

from __future__ import annotations

from dataclasses import dataclass

from herokumigrate.buildpack import BuildFailed


@dataclass(frozen=True)
class Stack:
    """What a supported stack's images provide."""

    name: str
    ubuntu: str
    """The Ubuntu release its images are built from."""
    build_python: str
    """The build image's python3 (`/usr/bin/python3.X`, no pip, no venv)."""
    run_python: str | None
    """The run image's python3, or None when the run image has no Python at all."""


SUPPORTED: dict[str, Stack] = {
    stack.name: stack
    for stack in (
        Stack("heroku-22", "22.04", "3.10", "/usr/bin/python3"),
        Stack("heroku-24", "24.04", "3.12", None),
        Stack("heroku-26", "26.04", "3.14", None),
    )
}
RECOMMENDED = "heroku-24"


def supported_names() -> str:
    """The supported stacks, for messages: `heroku-22, heroku-24, heroku-26`."""
    return ", ".join(SUPPORTED)


def check(stack: str) -> Stack | None:
    """The facts about `stack` (Heroku's `STACK`); None when it is unset (a run outside Heroku).

    Raises BuildFailed for a stack this buildpack does not support, before anything is done.
    """
    if not stack:
        return None
    known = SUPPORTED.get(stack)
    if known is None:
        raise BuildFailed(
            f"The stack {stack} is not supported by heroku-buildpack-migrate.",
            details=(
                f"Supported stacks: {supported_names()}.",
                "Which Python the release phase can run depends on the stack's run image,",
                "and nothing is known about this one.",
            ),
            fix=f"Switch stacks with: heroku stack:set {RECOMMENDED}  (then push again)",
        )
    return known
