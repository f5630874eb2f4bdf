"""The one entry point of the buildpack steps, and the one place that turns failures into output.

Explained failures (`MigrateError`) print their ` !     ` lines; anything else is a bug in the
buildpack and is reported as an internal error with its traceback.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from herokumigrate.errors import MigrateError
from herokumigrate.output import Output

ISSUES_URL = "https://github.com/heroku-buildpack-migrate/heroku-buildpack-migrate/issues"


class BuildOutput(Output):
    """Output that names files as the user knows them: relative to the app, not to the
    `/tmp/build_*` folder the platform builds in."""

    def __init__(self) -> None:
        super().__init__()
        self._build_dirs: list[str] = []

    def show_relative_to(self, build_dir: Path) -> None:
        """From now on, write paths under `build_dir` relative to it."""
        # As given, and as the OS reports it (a subprocess's getcwd resolves links).
        self._build_dirs = sorted({str(build_dir), os.path.realpath(build_dir)}, key=len)[::-1]

    def redact(self, text: str) -> str:
        """Redacted text (see `Output.redact`) with the build folder's paths made relative."""
        for build_dir in self._build_dirs:
            text = text.replace(build_dir + "/", "").replace(build_dir, ".")
        return super().redact(text)


def _detect(args: Sequence[str], out: BuildOutput) -> int:
    from herokumigrate.buildpack.detect import detect

    (build_dir,) = _paths(args, "bin/detect BUILD_DIR")
    return detect(build_dir, out)


def _compile(args: Sequence[str], out: BuildOutput) -> int:
    from herokumigrate.buildpack.build import compile_app

    build_dir, cache_dir, env_dir = _paths(args, "bin/compile BUILD_DIR CACHE_DIR ENV_DIR")
    out.show_relative_to(build_dir)
    compile_app(build_dir, cache_dir, env_dir, out)
    return 0


def _test_compile(args: Sequence[str], out: BuildOutput) -> int:
    from herokumigrate.buildpack.build import compile_app
    from herokumigrate.buildpack.heroku_ci import explain_test_setup

    usage = "bin/test-compile BUILD_DIR CACHE_DIR ENV_DIR"
    build_dir, cache_dir, env_dir = _paths(args, usage)
    out.show_relative_to(build_dir)
    compile_app(build_dir, cache_dir, env_dir, out, heroku_ci=True)
    explain_test_setup(build_dir, out)
    return 0


def _release(args: Sequence[str], out: BuildOutput) -> int:
    from herokumigrate.buildpack.release import release_yaml

    _paths(args, "bin/release BUILD_DIR")
    out.plain(release_yaml().rstrip("\n"))
    return 0


def _cnb_detect(args: Sequence[str], out: BuildOutput) -> int:
    from herokumigrate.buildpack.cnb_plan import detect

    _no_arguments(args, "bin/detect")
    environ = _cnb_variables("CNB_BUILD_PLAN_PATH", "CNB_PLATFORM_DIR")
    return detect(Path.cwd(), environ["CNB_BUILD_PLAN_PATH"], environ["CNB_PLATFORM_DIR"], out)


def _cnb_build(args: Sequence[str], out: BuildOutput) -> int:
    from herokumigrate.buildpack.cnb import build

    _no_arguments(args, "bin/build")
    environ = _cnb_variables("CNB_LAYERS_DIR", "CNB_BP_PLAN_PATH", "CNB_PLATFORM_DIR")
    out.show_relative_to(Path.cwd())
    build(
        Path.cwd(),
        environ["CNB_LAYERS_DIR"],
        environ["CNB_BP_PLAN_PATH"],
        environ["CNB_PLATFORM_DIR"],
        out,
    )
    return 0


STEPS: dict[str, Callable[[Sequence[str], BuildOutput], int]] = {
    "detect": _detect,
    "compile": _compile,
    "test-compile": _test_compile,
    "release": _release,
    "cnb-detect": _cnb_detect,
    "cnb-build": _cnb_build,
}


class _Usage(Exception):
    """The platform called a step with the wrong arguments."""


def _no_arguments(args: Sequence[str], usage: str) -> None:
    """Buildpack API 0.10 passes everything in CNB_* variables, nothing as arguments."""
    if args:
        raise _Usage(f"{usage} (a Cloud Native Buildpack step: no arguments, CNB_* variables)")


def _cnb_variables(*names: str) -> dict[str, Path]:
    """The lifecycle's path variables (Buildpack API 0.10), each required."""
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise _Usage(f"the lifecycle did not set {', '.join(missing)}")
    return {name: Path(os.environ[name]).absolute() for name in names}


def _paths(args: Sequence[str], usage: str) -> list[Path]:
    expected = len(usage.split()) - 1
    if len(args) != expected:
        raise _Usage(usage)
    return [Path(arg).absolute() for arg in args]


def main(argv: Sequence[str]) -> int:
    """Run one buildpack step; the exit status for bin/*."""
    out = BuildOutput()
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
