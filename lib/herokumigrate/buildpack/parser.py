"""PostgreSQL's own parser at build time: pglast's wheel for the build's Python, never in the slug.

The wheel (one per CPython version, pinned by sha256 in `build_wheels.txt`) is fetched into
CACHE_DIR like the runner's dependencies, unpacked once into the cache and imported from there by
the build's own process. Nothing of it is copied into the app. When no wheel fits the build's
Python, or it cannot be downloaded, the build says so and goes on with the splitter's checks:
a missing parser never fails a build.
"""

from __future__ import annotations

import io
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from herokumigrate.buildpack import BuildFailed, wheels
from herokumigrate.output import Output
from herokumigrate.pgparse import ParserUnavailable, describe_parser, load_parser

PINS_FILE = Path(__file__).with_name("build_wheels.txt")
_FALLBACK = "migrations are checked without PostgreSQL's parser and without the release-safety lint"


def pinned_for_this_python(pins: list[wheels.PinnedWheel]) -> wheels.PinnedWheel | None:
    """The pinned wheel built for the running CPython on Linux x86_64 with glibc, if any."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return None
    if sys.implementation.name != "cpython" or platform.libc_ver()[0] != "glibc":
        return None
    tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
    return next((pin for pin in pins if tag in pin.filename), None)


def obtain(cache: Path, out: Output) -> Any | None:
    """`pglast.parser`, imported from its wheel unpacked in `cache`; None after a warning that
    says why it is not available."""
    pinned = pinned_for_this_python(wheels.pinned_wheels(PINS_FILE))
    if pinned is None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        out.warn(
            f"No pinned pglast wheel for Python {version} on {platform.machine()}: {_FALLBACK}."
        )
        return None
    wheel_dir = cache / "wheels"
    cached = (wheel_dir / pinned.filename).is_file()
    try:
        # Quiet: our own line below says where it came from (the runtime wheels' lines count them).
        wheel_file = wheels.fetch(pinned, wheel_dir, Output(io.StringIO(), sys.stderr))
    except BuildFailed as exc:
        out.warn(f"{exc.message} So {_FALLBACK}.")
        return None
    folder = cache / "parser" / f"{pinned.name}-{pinned.version}-{pinned.sha256[:16]}"
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        for stale in folder.parent.iterdir():
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder.parent))
        try:
            wheels.unpack(wheel_file, scratch)
            scratch.rename(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        parser = load_parser()
    except ParserUnavailable as exc:
        out.warn(f"pglast {pinned.version} does not load here ({exc}): {_FALLBACK}.")
        return None
    origin = "from the build cache" if cached else "downloaded"
    out.detail(f"PostgreSQL's parser: {describe_parser(parser)} ({origin}; build time only)")
    return parser
