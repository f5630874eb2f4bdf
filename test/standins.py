"""Stand-ins for Heroku's stack images, built from Debian packages with debootstrap.

For each supported stack, two roots:

- a *build root*: a minimal Debian (`debootstrap --variant=minbase`) with the distribution's
  python3.X and ca-certificates, and no pip or venv, like the stack's build image;
- a *run root*: the same minimal system with the shared libraries the stack's run image has
  (the list Heroku publishes), and no Python (heroku-22's run image has one: so does its root).

Roots are cached under STANDINS_DIR, keyed by suite, mirror and package list, and built when
missing (about 25 s each on a quiet machine, packages downloaded from the Debian mirror). They are
never changed: every command runs in a fresh overlay (the cached root below, a per-test folder
on top) inside its own mount namespace (`unshare --mount`), with /proc and /dev mounted, so
everything it mounts disappears when it exits, whatever happens to the test.

Debian has no suite with Heroku's exact Pythons for heroku-24 (3.12) and heroku-22 (3.10); see
`STANDINS` for which suite stands in for which stack, and why.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

STANDINS_DIR = Path(os.environ.get("HEROKU_MIGRATE_STANDINS", "/var/cache/heroku-migrate-standins"))
DEBIAN_MIRROR = "http://deb.debian.org/debian"  # the mirror of this machine's sources.list
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ROOT_FORMAT = "1"  # bump to rebuild every cached root after changing how one is made
DEBOOTSTRAP_TIMEOUT = 1800

RootKind = Literal["build", "run"]

# The run images' shared libraries as Heroku lists them for heroku-24 and heroku-26 (the issue's
# list); heroku-22's are the same libraries under their pre-2024 names (before Debian's and
# Ubuntu's 64-bit time_t renames).
RUN_LIBRARIES_T64 = [
    "libpq5",
    "libssl3t64",
    "libffi8",
    "libexpat1",
    "libsqlite3-0",
    "zlib1g",
    "libbz2-1.0",
    "liblzma5",
    "libzstd1",
    "libncursesw6",
    "libreadline8t64",
    "libuuid1",
    "libcrypt1",
    "libdb5.3t64",
    "libgdbm6t64",
    "libtirpc3t64",
    "tzdata",
    "ca-certificates",
]
RUN_LIBRARIES_PRE_T64 = [
    name.removesuffix("t64") if name.endswith("t64") else name for name in RUN_LIBRARIES_T64
]


@dataclass(frozen=True)
class StandIn:
    """The Debian suite that stands in for one Heroku stack, and what goes in each root."""

    stack: str
    suite: str
    python: str
    """The build root's python3.X (and the run root's, where the run image has one)."""
    build_packages: tuple[str, ...]
    run_packages: tuple[str, ...]
    why: str

    def packages(self, kind: RootKind) -> tuple[str, ...]:
        """The packages installed on top of minbase in the `kind` root."""
        return self.build_packages if kind == "build" else self.run_packages


STANDINS: dict[str, StandIn] = {
    standin.stack: standin
    for standin in (
        StandIn(
            "heroku-26",
            "forky",
            "3.14",
            ("python3.14", "python3", "ca-certificates"),
            tuple(RUN_LIBRARIES_T64),
            "Debian forky (testing) has python3.14 as its python3, as Ubuntu 26.04 does.",
        ),
        StandIn(
            "heroku-24",
            "trixie",
            "3.13",
            ("python3.13", "python3", "ca-certificates"),
            tuple(RUN_LIBRARIES_T64),
            "No Debian suite has python3.12 (bookworm: 3.11, trixie: 3.13); trixie is one minor "
            "version away and, like Ubuntu 24.04, has the t64 library names of the run image.",
        ),
        StandIn(
            "heroku-22",
            "bookworm",
            "3.11",
            ("python3.11", "python3", "ca-certificates"),
            ("python3.11", "python3", *RUN_LIBRARIES_PRE_T64),
            "No Debian suite has python3.10; bookworm (3.11) is the closest that the floor "
            "allows and, like Ubuntu 22.04, predates the t64 library names. The run root has "
            "the same python3 as the build root, as heroku-22's run image does.",
        ),
    )
}


def root_key(standin: StandIn, kind: RootKind) -> str:
    """What a cached root depends on: its suite, mirror and packages."""
    identity = "\0".join((ROOT_FORMAT, standin.suite, DEBIAN_MIRROR, *standin.packages(kind)))
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def can_build_roots() -> str:
    """Why stand-ins cannot run here, or '' when they can (root, debootstrap, unshare)."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot and mounts)"
    for tool in ("debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"needs {tool} (.ci/run installs it: apt-get install -y debootstrap)"
    return ""


def ensure_root(standin: StandIn, kind: RootKind) -> Path:
    """The cached `kind` root of `standin`, built now if missing (one builder at a time)."""
    STANDINS_DIR.mkdir(parents=True, exist_ok=True)
    name = f"{standin.stack}-{kind}-{standin.suite}-{root_key(standin, kind)}"
    target = STANDINS_DIR / name
    with open(STANDINS_DIR / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").is_file():
            return target
        shutil.rmtree(target, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=STANDINS_DIR))
        try:
            _debootstrap(standin, kind, scratch)
            (scratch / ".complete").write_text(" ".join(standin.packages(kind)) + "\n")
            scratch.chmod(0o755)  # a root's / (mkdtemp made it 0700)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _debootstrap(standin: StandIn, kind: RootKind, target: Path) -> None:
    # Every Debian suite uses the same script; naming it keeps suites newer than this
    # machine's debootstrap (forky) working.
    script = "/usr/share/debootstrap/scripts/sid"
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(standin.packages(kind))}",
            standin.suite,
            str(target),
            DEBIAN_MIRROR,
            script,
        ],
        capture_output=True,
        text=True,
        timeout=DEBOOTSTRAP_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        log = target / "debootstrap/debootstrap.log"
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else result.stderr[-2000:]
        raise RuntimeError(f"debootstrap {standin.suite} ({kind} root) failed:\n{tail}")
    # Debian's pip and venv come in their own packages, left out above; make sure.
    leftovers = [*target.glob("usr/lib/python3*/ensurepip"), *target.glob("usr/bin/pip*")]
    if kind == "build" and leftovers:
        raise RuntimeError(f"the build root has pip: {leftovers}")
    # Nothing is ever installed into a cached root again.
    shutil.rmtree(target / "var/cache/apt/archives", ignore_errors=True)


@dataclass
class Overlay:
    """A writable view of a cached root for one test: `upper` holds what the test adds or
    changes, the cached root (`lower`) stays as it was."""

    lower: Path
    upper: Path
    work: Path
    merged: Path

    @classmethod
    def create(cls, lower: Path, folder: Path) -> Overlay:
        """An overlay of `lower` whose own files live under `folder`."""
        parts = {name: folder / name for name in ("upper", "work", "merged")}
        for path in parts.values():
            path.mkdir(parents=True, exist_ok=True)
        return cls(lower, parts["upper"], parts["work"], parts["merged"])

    def add_host_files(self, *, ca_bundle: bool) -> None:
        """Give the root this machine's DNS settings and, for downloads through the machine's
        TLS-intercepting proxy, its CA bundle."""
        etc = self.upper / "etc"
        etc.mkdir(exist_ok=True)
        shutil.copyfile("/etc/resolv.conf", etc / "resolv.conf")
        if ca_bundle:
            certs = etc / "ssl/certs"
            certs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HOST_CA_BUNDLE, certs / "ca-certificates.crt")


def build_image(standin: StandIn, folder: Path) -> Overlay:
    """A writable stand-in for the stack's build image as Heroku CI uses it (build, then tests):
    the build root over the run root, since a build image has every library of its run image
    (libpq, which the tests' `heroku-migrate up` loads, included) plus Python. Run `ldconfig`
    in it first: the loader's cache is the build root's."""
    lowers = f"{ensure_root(standin, 'build')}:{ensure_root(standin, 'run')}"
    return Overlay.create(Path(lowers), folder)  # overlayfs: several lower folders, first on top


# Run as `unshare --mount --propagation private sh -c MOUNT_AND_CHROOT sh LOWER UPPER WORK
# MERGED BIND... -- COMMAND...`: every mount lives in that namespace and ends with it.
MOUNT_AND_CHROOT = r"""
set -e
lower=$1 upper=$2 work=$3 merged=$4
shift 4
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
mount -t proc proc "$merged/proc"
mount --bind /dev "$merged/dev"
while [ "$1" != -- ]; do
    mkdir -p "$merged$1"
    mount --bind "$1" "$merged$1"
    shift
done
shift
exec chroot "$merged" "$@"
"""

RUN_PATH = "/usr/local/bin:/usr/bin:/bin"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # chroot, mount


def run_in_root(
    overlay: Overlay,
    command: list[str],
    *,
    env: Mapping[str, str],
    binds: tuple[Path, ...] = (),
    timeout: float = 900,
    network: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `command` chrooted into `overlay` with exactly `env` (`env -i`), /proc and /dev
    mounted, and each of `binds` (host folders) at the same path inside; with `network` False,
    in a network namespace of its own (no network at all, not even loopback)."""
    argv = [
        "unshare",
        "--mount",
        *([] if network else ["--net"]),
        "--propagation",
        "private",
        "sh",
        "-c",
        MOUNT_AND_CHROOT,
        "sh",
        str(overlay.lower),
        str(overlay.upper),
        str(overlay.work),
        str(overlay.merged),
        *map(str, binds),
        "--",
        "/usr/bin/env",
        "-i",
        *(f"{name}={value}" for name, value in env.items()),
        *command,
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env={"PATH": HOST_PATH}
    )


def pack_slug(app: Path, slug: Path) -> None:
    """Pack `app` as Heroku packs a slug: a tar archive, whose mtimes are whole seconds."""
    subprocess.run(
        ["tar", "--format=gnu", "-czf", str(slug), "-C", str(app), "."],
        check=True,
        capture_output=True,
    )


def unpack_slug(slug: Path, destination: Path) -> None:
    """Unpack a slug as a dyno does (mtimes from the archive)."""
    destination.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "-xzf", str(slug), "-C", str(destination)], check=True, capture_output=True
    )


def socket_binds(url_host: str) -> tuple[Path, ...]:
    """The test server's socket folder, when it listens on one, to share with the run root."""
    return (Path(url_host),) if url_host.startswith("/") else ()
