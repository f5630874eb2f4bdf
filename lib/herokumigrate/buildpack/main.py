"""The one entry point of the buildpack steps, and the one place that turns failures into output.

Explained failures (`MigrateError`) print their ` !     ` lines; anything else is a bug in the
buildpack and is reported as an internal error with its traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from herokumigrate.errors import MigrateError
from herokumigrate.output import Output

ISSUES_URL = "https://github.com/heroku-buildpack-migrate/heroku-buildpack-migrate/issues"


def _detect(args: Sequence[str], out: Output) -> int:
    from herokumigrate.buildpack.detect import detect

    (build_dir,) = _paths(args, "bin/detect BUILD_DIR")
    return detect(build_dir, out)


def _compile(args: Sequence[str], out: Output) -> int:
    from herokumigrate.buildpack.build import compile_app

    build_dir, cache_dir, env_dir = _paths(args, "bin/compile BUILD_DIR CACHE_DIR ENV_DIR")
    compile_app(build_dir, cache_dir, env_dir, out)
    return 0


def _release(args: Sequence[str], out: Output) -> int:
    from herokumigrate.buildpack.release import release_yaml

    _paths(args, "bin/release BUILD_DIR")
    out.plain(release_yaml().rstrip("\n"))
    return 0


STEPS: dict[str, Callable[[Sequence[str], Output], int]] = {
    "detect": _detect,
    "compile": _compile,
    "release": _release,
}


class _Usage(Exception):
    """The platform called a step with the wrong arguments."""


def _paths(args: Sequence[str], usage: str) -> list[Path]:
    expected = len(usage.split()) - 1
    if len(args) != expected:
        raise _Usage(usage)
    return [Path(arg).absolute() for arg in args]


def main(argv: Sequence[str]) -> int:
    """Run one buildpack step; the exit status for bin/*."""
    out = Output()
    if not argv or argv[0] not in STEPS:
        out.error(f"Usage: python -m herokumigrate.buildpack {{{'|'.join(STEPS)}}} ARGS...")
        return 2
    try:
        return STEPS[argv[0]](argv[1:], out)
    except _Usage as exc:
        out.error(f"Usage: {exc}")
        return 2
    except MigrateError as exc:
        out.error(*exc.lines())
        return 1
    except KeyboardInterrupt:
        out.error("Interrupted.")
        return 130
    except Exception as exc:  # the one place that reports bugs, see the module docstring
        out.error(
            f"Internal error in heroku-buildpack-migrate ({argv[0]}): {type(exc).__name__}: {exc}",
            *traceback.format_exc().rstrip("\n").splitlines(),
            "This is a bug in the buildpack, not in your app; please report it with this output",
            f"at {ISSUES_URL}",
        )
        return 1
