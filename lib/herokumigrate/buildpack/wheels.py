"""The runner's pinned dependencies: download once into CACHE_DIR, check, unpack into the slug.

The build images have no pip, but a wheel is a zip archive: a pure-Python (`py3-none-any`) wheel
unpacked into a folder on PYTHONPATH is installed. Every file is checked against the sha256 in
`wheels.txt`, on download and on every cache hit, so a corrupted cache or a tampered mirror
fails the build instead of shipping.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from herokumigrate.buildpack import BuildFailed
from herokumigrate.output import Output

PINS_FILE = Path(__file__).with_name("wheels.txt")
_BELOW_RE = re.compile(r"python<([0-9]+)\.([0-9]+)")
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_TIMEOUT = 30.0
USER_AGENT = "heroku-buildpack-migrate"


@dataclass(frozen=True)
class PinnedWheel:
    """One dependency at an exact version, with the digest its wheel must have."""

    name: str
    version: str
    sha256: str
    url: str
    python_below: tuple[int, int] | None = None  # needed only by Pythons older than this

    def needed_by(self, python: tuple[int, ...]) -> bool:
        """Whether a Python of version `python` needs this wheel."""
        return self.python_below is None or python[:2] < self.python_below

    @property
    def filename(self) -> str:
        """The wheel's file name, the last part of its URL."""
        return self.url.rsplit("/", 1)[-1]


def pinned_wheels(path: Path = PINS_FILE) -> list[PinnedWheel]:
    """The wheels listed in `path` (`name version sha256 url [python<X.Y]` per line, `#`
    comments); the optional last field limits a wheel to older Pythons (a backport)."""
    wheels = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        below = _BELOW_RE.fullmatch(fields[4]) if len(fields) == 5 else None
        if (
            len(fields) not in (4, 5)
            or (len(fields) == 5 and below is None)
            or len(fields[2]) != 64
            or not fields[3].startswith("https://")
            or not fields[3].endswith(".whl")
        ):
            raise ValueError(
                f"{path.name}:{number}: expected 'name version sha256 https://….whl [python<X.Y]'"
            )
        limit = (int(below.group(1)), int(below.group(2))) if below is not None else None
        name, version, sha256, url = fields[:4]
        wheels.append(PinnedWheel(name, version, sha256, url, python_below=limit))
    return wheels


def needed_by(python: tuple[int, ...], files: list[Path]) -> list[Path]:
    """Of the pinned wheels' files (in PINNED's order), those a Python of version `python`
    needs: a slug carries no backport its interpreter has built in."""
    return [f for pinned, f in zip(PINNED, files, strict=True) if pinned.needed_by(python)]


PINNED = pinned_wheels()


def sha256_of(path: Path) -> str:
    """The hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(wheel: PinnedWheel, cache: Path, out: Output) -> Path:
    """The checked wheel file in `cache`, downloaded only when it is missing or fails its check."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / wheel.filename
    if target.is_file():
        if sha256_of(target) == wheel.sha256:
            out.detail(f"{wheel.name} {wheel.version} (cached)")
            return target
        out.warn(f"Cached {wheel.filename} does not match its sha256; downloading it again.")
        target.unlink()
    partial = cache / f".{wheel.filename}.{os.getpid()}.part"
    started = time.monotonic()
    try:
        _download(wheel.url, partial)
        actual = sha256_of(partial)
        if actual != wheel.sha256:
            raise BuildFailed(
                f"Downloaded {wheel.filename} has sha256 {actual}, expected {wheel.sha256}.",
                fix="Something between the build and PyPI altered the file; retry the build, "
                "and report it if it happens again.",
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    size_kb = target.stat().st_size / 1024
    seconds = time.monotonic() - started
    out.detail(f"{wheel.name} {wheel.version} (downloaded, {size_kb:.0f} KB in {seconds:.1f}s)")
    return target


def _download(url: str, destination: Path) -> None:
    last_error = ""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            # https only: pinned_wheels() rejects any other scheme.
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
            with (
                urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response,  # noqa: S310
                destination.open("wb") as stream,
            ):
                shutil.copyfileobj(response, stream)
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(getattr(exc, "reason", exc))
            time.sleep(min(2.0**attempt, 5.0) if attempt < DOWNLOAD_ATTEMPTS else 0)
        else:
            return
    raise BuildFailed(
        f"Could not download {url.rsplit('/', 1)[-1]} after {DOWNLOAD_ATTEMPTS} attempts: "
        f"{last_error}",
        fix="PyPI (files.pythonhosted.org) may be unreachable; check https://status.python.org "
        "and retry the build.",
    )


def unpack(wheel_file: Path, site: Path) -> None:
    """Install a pure-Python wheel by unpacking it into `site`."""
    with zipfile.ZipFile(wheel_file) as archive:
        archive.extractall(site)
