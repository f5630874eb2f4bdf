"""PostgreSQL's own parser at build time: pglast's wheel for the build's Python, never in the slug.

The wheel (one per CPython version, pinned by sha256 in `build_wheels.txt`) is fetched into
CACHE_DIR like the runner's dependencies, unpacked once into the cache (with its bytecode and a
record of every file's sha256) and imported from there by the build's own process, after every
file was checked against the record: a truncated library would crash the build ("Bus error"), an
edited module would run in it. A damaged copy is unpacked again from the verified wheel. Nothing
of it is copied into the app. When no wheel fits the build's Python, or it cannot be downloaded or
unpacked, the build says so and goes on with the splitter's checks: a missing parser never fails
a build.
"""

from __future__ import annotations

import compileall
import io
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from herokumigrate.buildpack import BuildFailed, checksums, wheels
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
    try:
        _verified_unpack(wheel_file, folder, out)
    except OSError as exc:
        out.warn(
            f"pglast {pinned.version} cannot be unpacked ({exc.strerror or exc}): {_FALLBACK}."
        )
        return None
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    # Nothing may be added to the checked folder (the next build would find it damaged).
    sys.dont_write_bytecode = True
    try:
        parser = load_parser()
    except ParserUnavailable as exc:
        out.warn(f"pglast {pinned.version} does not load here ({exc}): {_FALLBACK}.")
        return None
    origin = "from the build cache" if cached else "downloaded"
    out.detail(f"PostgreSQL's parser: {describe_parser(parser)} ({origin}; build time only)")
    return parser


def _verified_unpack(wheel_file: Path, folder: Path, out: Output) -> None:
    """Make `folder` hold the wheel's files, compiled, exactly as recorded when they were
    unpacked: checked file by file, unpacked again from the (verified) wheel when damaged."""
    if folder.is_dir() and checksums.has_record(folder):
        damaged = checksums.damaged(folder)
        if not damaged:
            return
        more = f" and {len(damaged) - 1} more" if len(damaged) > 1 else ""
        out.warn(
            f"The cached parser is damaged ({damaged[0]}{more}); unpacking it again from its "
            "verified wheel."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.iterdir():
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder.parent))
    try:
        wheels.unpack(wheel_file, scratch)
        compileall.compile_dir(scratch, quiet=2, ddir=str(folder))
        checksums.write_record(scratch)
        scratch.chmod(0o755)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
