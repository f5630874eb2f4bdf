"""Which Python runs the release phase, and bringing one into the slug when the stack has none.

In order of preference:

1. the app's own interpreter, `$HOME/.heroku/python/bin/python3`, when a buildpack before this one
   (heroku/python) installed one that is 3.10 or newer;
2. the run image's python3 where the stack has one (heroku-22's /usr/bin/python3, 3.10; see
   `stacks`);
3. otherwise (heroku-24 and heroku-26, whose run images have no python3 at all, and a build with
   STACK unset) a copy of the build's own python3 bundled into `.heroku-migrate/python`: the
   executable, its libpython if it links one, the part of the standard library the runner can
   import (see `stdlib`) as bytecode only, and the shared libraries its extension modules need
   that the run image lacks. The pruned, precompiled copy is kept in CACHE_DIR, so a warm
   rebuild only copies it.

The choice is recorded in `.heroku-migrate/interpreter` (see `write_record`), with paths relative
to the app root so the slug can move from /tmp/build_* to /app.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from herokumigrate.buildpack import (
    BUILD_TIME_ONLY,
    SLUG_DIR,
    BuildFailed,
    checksums,
    stacks,
    stdlib,
    wheels,
)
from herokumigrate.output import Output

MINIMUM_VERSION = (3, 10)
APP_PYTHON = ".heroku/python/bin/python3"
BUNDLE_DIR = f"{SLUG_DIR}/python"
BUNDLE_FORMAT = "4"  # bump to invalidate every cached bundle after changing how one is made

# Standard library parts the runner never uses, left out even where some module could import
# them: test suites, debuggers, GUIs and the REPL, installers, process pools, mail, HTTP, FTP and
# XML clients, tar archives, databases (not `email` or `zipfile`: psycopg's importlib.metadata
# imports them). `stdlib.needed_top_level` keeps what the runner can import;
# the stand-in tests run every runner command on the bundle to prove nothing needed is missing.
NEVER_KEPT = frozenset(
    [
        "test",
        "tkinter",
        "idlelib",
        "ensurepip",
        "lib2to3",
        "turtledemo",
        "pydoc_data",
        "pydoc",
        "turtle",
        "venv",
        "unittest",
        "doctest",
        "pdb",
        "bdb",
        "xmlrpc",
        "wsgiref",
        "distutils",
        "msilib",
        "curses",
        "dbm",
        "sqlite3",
        "multiprocessing",
        "http",
        "ftplib",
        "mailbox",
        "smtplib",
        "imaplib",
        "poplib",
        "nntplib",
        "xml",
        "_pyrepl",
        "profile",
        "cProfile",
        "pstats",
        "webbrowser",
        "tarfile",
        "site-packages",
        "dist-packages",
    ]
)
PRUNED_ANYWHERE = frozenset({"__pycache__", "tests", "idle_test"})
# Extension modules left out of the bundle: GUI/terminal/NIS bindings whose libraries the run
# image lacks, and CPython's own test helpers.
PRUNED_EXTENSIONS = re.compile(
    r"(_tkinter|_curses|_curses_panel|readline|nis|_dbm|_gdbm|ossaudiodev"
    r"|_test\w*|_ctypes_test|_xx\w*|xx\w*)\.(cpython-|abi3|so)"
)
# Shared libraries every supported run image has (glibc, the compression/crypto/ffi/sqlite
# libraries heroku-24's run image ships, and libpq5 with its dependencies). Anything else an
# extension module links against is copied into the bundle.
RUN_IMAGE_LIBRARIES = re.compile(
    r"(linux-vdso|ld-linux[\w-]*|libc|libm|libpthread|libdl|librt|libutil|libresolv|libcrypt"
    r"|libgcc_s|libstdc\+\+|libz|libbz2|liblzma|libzstd|libffi|libexpat|libssl|libcrypto"
    r"|libsqlite3|libuuid|libtinfo|libncursesw|libpq|libgssapi_krb5|libkrb5|libk5crypto"
    r"|libcom_err|libkrb5support|libkeyutils|libldap|liblber|libsasl2|libgnutls|libidn2"
    r"|libunistring|libtasn1|libnettle|libhogweed|libgmp|libp11-kit)\.so[.\d]*"
)
LIBPYTHON = re.compile(r"libpython3\.\d+\w*\.so[.\d]*")


@dataclass(frozen=True)
class ReleasePython:
    """The interpreter the launcher runs, as recorded in `.heroku-migrate/interpreter`."""

    kind: str
    """`app` (the app's .heroku/python), `stack` (the run image's), or `bundled`."""
    command: str
    """Absolute, or relative to the app root."""
    version: str
    build_path: Path | None
    """Where the same interpreter can be run during the build (to precompile), if anywhere."""
    library_path: str = ""
    """Folder for LD_LIBRARY_PATH, relative to the app root (a bundled libpython), or empty."""


def build_env() -> dict[str, str]:
    """A minimal environment for running an interpreter at build time (no PYTHON* variables)."""
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "LD_LIBRARY_PATH")
    return {name: os.environ[name] for name in keep if name in os.environ}


def probe_version(python: Path, env: Mapping[str, str] | None = None) -> tuple[int, ...] | None:
    """The (major, minor, micro) of `python`, or None when it does not run."""
    try:
        result = subprocess.run(
            [str(python), "-E", "-s", "-S", "-c", "import sys; print(*sys.version_info[:3])"],
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else build_env(),
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    try:
        return tuple(int(part) for part in result.stdout.split())
    except ValueError:
        return None


def _dotted(version: Iterable[int]) -> str:
    return ".".join(str(part) for part in version)


def choose(build_dir: Path, cache_dir: Path, stack: str, out: Output) -> ReleasePython:
    """Pick the release-phase interpreter (see the module docstring), bundling one if needed."""
    app_python = build_dir / APP_PYTHON
    if app_python.exists():
        version = probe_version(app_python)
        if version is not None and version >= MINIMUM_VERSION:
            out.detail(f"Using the app's Python {_dotted(version)} ({APP_PYTHON})")
            return ReleasePython("app", APP_PYTHON, _dotted(version), app_python)
        found = f"Python {_dotted(version)}" if version else "an interpreter that does not run"
        out.warn(
            f"The app's {APP_PYTHON} is {found}; heroku-migrate needs "
            f"{_dotted(MINIMUM_VERSION)} or newer and will use its own."
        )
    known = stacks.SUPPORTED.get(stack)
    stack_python = known.run_python if known is not None else None
    if known is not None and stack_python is not None:
        build_path = Path(stack_python)
        version = probe_version(build_path)
        out.detail(
            f"Using {stack}'s {stack_python} (its run image has Python {known.build_python})"
        )
        if version is None:
            out.detail(f"{stack_python} is not runnable here; skipping bytecode precompilation")
        return ReleasePython(
            "stack",
            stack_python,
            _dotted(version) if version else "",
            build_path if version else None,
        )
    # Only a stack we know has no python3 is said to have none (`stacks.check` stops the others).
    why = (
        f"{stack}'s run image has no python3"
        if known is not None
        else "STACK is not set (not a Heroku build?), so the run image is unknown"
    )
    out.detail(f"{why}: bundling Python {_dotted(sys.version_info[:3])} into {BUNDLE_DIR}")
    return bundle(build_dir / BUNDLE_DIR, cache_dir, out)


def runner_code(cache_dir: Path) -> list[Path]:
    """What runs on the bundled interpreter (this one): the runner's modules the slug ships,
    its subpackages' included, and the pinned wheels this Python needs (fetched into the cache
    by the step before)."""
    runner = Path(__file__).resolve().parent.parent
    modules = sorted(
        path
        for path in runner.rglob("*.py")
        if path.relative_to(runner).parts[0] not in BUILD_TIME_ONLY
    )
    wheel_dir = cache_dir / "heroku-migrate" / "wheels"
    files = [wheel_dir / pinned.filename for pinned in wheels.PINNED]
    return [*modules, *wheels.needed_by(sys.version_info[:2], files)]


def version_tuple(dotted: str) -> tuple[int, ...]:
    """`3.12.4` as (3, 12, 4)."""
    return tuple(int(part) for part in dotted.split(".") if part.isdigit())


def bundle(destination: Path, cache_dir: Path, out: Output) -> ReleasePython:
    """Copy the running interpreter, pruned to what the runner can import and precompiled, to
    `destination` (via the cache, keyed by the interpreter and the runner's code)."""
    executable = Path(os.path.realpath(sys.executable))
    stat = executable.stat()
    code = runner_code(cache_dir)
    digest = hashlib.sha256()
    for path in code:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    identity = (
        f"{BUNDLE_FORMAT}\0{executable}\0{sys.version}\0{stat.st_size}\0{stat.st_mtime_ns}"
        f"\0{digest.hexdigest()}"
    )
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    version = _dotted(sys.version_info[:3])
    cache_root = cache_dir / "heroku-migrate"
    cached = cache_root / f"python-{version}-{key}"
    if (cached / ".complete").is_file():
        out.detail(f"Python {version} from the build cache")
    else:
        cache_root.mkdir(parents=True, exist_ok=True)
        for stale in cache_root.glob("python-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=".python-", dir=cache_root))
        try:
            make_bundle(executable, scratch, out, code)
            (scratch / ".complete").write_text(identity.replace("\0", "\n") + "\n")
            scratch.rename(cached)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if destination.exists():
        shutil.rmtree(destination)
    copy_tree(cached, destination)
    # The cache's own bookkeeping stays there: a warm build's slug holds exactly the cold one's.
    for bookkeeping in (".complete", checksums.RECORD):
        (destination / bookkeeping).unlink(missing_ok=True)
    library_path = f"{BUNDLE_DIR}/lib" if any(destination.glob("lib/*.so*")) else ""
    # The build's own interpreter is the same one: it precompiles the runner for the bundle.
    return ReleasePython("bundled", f"{BUNDLE_DIR}/bin/python3", version, executable, library_path)


def copy_tree(source: Path, destination: Path) -> None:
    """Copy a folder with its metadata; `cp -a` when there is one (several times faster than
    shutil for a thousand small files, which matters on a warm rebuild)."""
    cp = shutil.which("cp")
    if cp is not None:
        result = subprocess.run(
            [cp, "-a", str(source), str(destination)], capture_output=True, check=False
        )
        if result.returncode == 0:
            return
        shutil.rmtree(destination, ignore_errors=True)
    shutil.copytree(source, destination, symlinks=True)


def make_bundle(
    executable: Path, prefix: Path, out: Output, code: list[Path] | None = None
) -> None:
    """Lay out a relocatable copy of the running interpreter under `prefix`, with the part of the
    standard library that `code` can import (all of it but `NEVER_KEPT` when `code` is None), as
    bytecode only.

    `prefix/bin/python3` finds its standard library by looking for `lib/python3.X/os.py[c]` next
    to itself, so the copy runs from wherever the prefix is moved, with every system Python hidden.
    """
    series = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    source_stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload = next((Path(p) for p in sys.path if p.endswith("lib-dynload")), None)
    kept = None if code is None else stdlib.needed_top_level(source_stdlib, code, NEVER_KEPT)
    lib_dir = prefix / sys.platlibdir
    target_stdlib = lib_dir / series
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2(executable, prefix / "bin/python3")
    shutil.copytree(
        source_stdlib, target_stdlib, ignore=_pruner(kept), ignore_dangling_symlinks=True
    )
    target_dynload = target_stdlib / "lib-dynload"
    if dynload is not None and dynload.is_dir() and not target_dynload.is_dir():
        shutil.copytree(
            dynload, target_dynload, ignore=_pruner(kept), ignore_dangling_symlinks=True
        )
    for module in list(target_dynload.glob("*.so")):
        unused = kept is not None and module.name.split(".")[0] not in kept
        if unused or PRUNED_EXTENSIONS.match(module.name):
            module.unlink()
    _bring_libraries(prefix, lib_dir, target_dynload, out)
    _strip(prefix)
    _precompile_stdlib(executable, prefix, target_stdlib)
    _smoke_test(prefix, lib_dir)


def _pruner(kept: set[str] | None) -> Callable[[str, list[str]], set[str]]:
    """A copytree `ignore` keeping, at the stdlib's top level, only `kept` modules and packages
    (None: all but `NEVER_KEPT`), and the build-configuration data `sysconfig` reads."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = {n for n in names if n in PRUNED_ANYWHERE or n.endswith((".pyc", ".exe"))}
        if os.path.exists(os.path.join(directory, "os.py")):  # the stdlib's top level
            ignored.update(
                name
                for name in names
                if (
                    name.removesuffix(".py") in NEVER_KEPT
                    or name.startswith("config-")  # static library and Makefile
                    or (kept is not None and name.removesuffix(".py") not in kept)
                )
                and not name.startswith(("_sysconfigdata", "_sysconfig_vars"))
            )
        return ignored

    return ignore


def _ldd(files: list[Path]) -> dict[Path, dict[str, str]]:
    """For each file, its shared-library dependencies: soname -> resolved path ('' if missing)."""
    if not files or shutil.which("ldd") is None:
        return {}
    result = subprocess.run(
        ["ldd", *map(str, files)], capture_output=True, text=True, check=False, env=build_env()
    )
    deps: dict[Path, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in result.stdout.splitlines():
        if not line.startswith(("\t", " ")) and line.endswith(":"):
            current = deps.setdefault(Path(line[:-1]), {})
            continue
        if len(files) == 1 and current is None:
            current = deps.setdefault(files[0], {})
        match = re.match(r"\s*(\S+)(?: => (\S+))?", line)
        if current is None or match is None or match.group(1) in ("statically", "not"):
            continue
        soname, resolved = match.group(1), match.group(2) or ""
        current[soname] = "" if resolved == "not" else resolved
    return deps


def _bring_libraries(prefix: Path, lib_dir: Path, dynload: Path, out: Output) -> None:
    """Copy libpython and the libraries the run image lacks into `lib_dir`; drop modules whose
    libraries cannot be found at all."""
    executable = prefix / "bin/python3"
    modules = sorted(dynload.glob("*.so")) if dynload.is_dir() else []
    dependencies = _ldd([executable, *modules])
    brought: set[str] = set()
    for path, needs in dependencies.items():
        for soname, resolved in needs.items():
            if RUN_IMAGE_LIBRARIES.fullmatch(soname) or soname.startswith("/"):
                continue
            if not resolved:
                if path != executable:
                    out.detail(f"Leaving out {path.name}: it needs {soname}, which is missing")
                    path.unlink(missing_ok=True)
                    break
                raise BuildFailed(f"The build's python3 needs {soname}, which ldd cannot find.")
            if soname not in brought:
                shutil.copy2(resolved, lib_dir / soname)
                brought.add(soname)
    extra = sorted(name for name in brought if not LIBPYTHON.fullmatch(name))
    if extra:
        out.detail(f"Bringing {', '.join(extra)} (not in the run image)")


def _strip(prefix: Path) -> None:
    """Drop debug symbols from the copied binaries when `strip` is available (it often halves
    them); an unstripped bundle works just as well."""
    strip = shutil.which("strip")
    if strip is None:
        return
    binaries = [
        prefix / "bin/python3",
        *prefix.glob("lib*/*.so*"),
        *prefix.glob("lib*/*/lib-dynload/*.so"),
    ]
    subprocess.run(
        [strip, "--strip-unneeded", *map(str, binaries)],
        capture_output=True,
        check=False,
        env=build_env(),
    )


def _run_bundled(prefix: Path, lib_dir: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LD_LIBRARY_PATH": str(lib_dir)}
    return subprocess.run(
        [str(prefix / "bin/python3"), "-E", "-s", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def _precompile_stdlib(executable: Path, prefix: Path, stdlib_dir: Path) -> None:
    """Replace the bundled standard library's sources by their bytecode (`module.pyc` beside
    where `module.py` was, which Python imports without the source): half the size. Compiled by
    the build's interpreter, the very one bundled."""
    args = precompile_args(prefix, [stdlib_dir], jobs=0)
    args.insert(args.index("-q"), "-b")  # each .pyc beside its source: imported without it
    compiled = subprocess.run(
        [str(executable), "-E", "-s", *args],
        capture_output=True,
        text=True,
        env=build_env(),
        check=False,
    )
    if compiled.returncode != 0:
        raise BuildFailed(
            "Precompiling the bundled standard library failed.",
            details=tuple(compiled.stdout.splitlines()[-5:]),
        )
    for source in stdlib_dir.rglob("*.py"):
        if source.with_suffix(".pyc").is_file():
            source.unlink()


def _smoke_test(prefix: Path, lib_dir: Path) -> None:
    """Check that the copy runs on its own and imports what psycopg and the runner need."""
    imports = "ctypes, ctypes.util, decimal, json, hashlib, socket, select, ssl, zoneinfo, asyncio"
    code = f"import {imports}; import sys; print(sys.prefix)"
    check = _run_bundled(prefix, lib_dir, ["-S", "-B", "-c", code])
    if check.returncode != 0 or os.path.realpath(check.stdout.strip()) != os.path.realpath(prefix):
        raise BuildFailed(
            "The copy of the build's python3 does not run on its own.",
            details=(*check.stderr.splitlines()[-5:], f"prefix: {check.stdout.strip()!r}"),
            fix="Please report this with the build output.",
        )


def precompile_args(strip_prefix: Path, folders: list[Path], jobs: int = 1) -> list[str]:
    """compileall arguments writing never-checked bytecode (valid wherever the files move) whose
    recorded file names are relative to `strip_prefix`, so no build path ends up in a .pyc."""
    return [
        "-m",
        "compileall",
        "-q",
        "-f",
        "-j",
        str(jobs),
        "-s",
        str(strip_prefix),
        "--invalidation-mode",
        "unchecked-hash",
        *map(str, folders),
    ]


def precompile(python: ReleasePython, app_dir: Path, folders: list[Path], out: Output) -> None:
    """Write bytecode for `folders` with the release interpreter, when it runs at build time."""
    if python.build_path is None:
        out.detail("The release Python does not run at build time; no bytecode precompiled")
        return
    env = build_env()
    if python.library_path:
        env["LD_LIBRARY_PATH"] = str(app_dir / python.library_path)
    result = subprocess.run(
        [str(python.build_path), "-E", "-s", *precompile_args(app_dir, folders)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        out.warn(
            "Precompiling bytecode failed; the release phase will compile it on each run.",
            *result.stdout.splitlines()[-5:],
        )


def identity(python: ReleasePython) -> str:
    """What bytecode compiled by `python` depends on: which interpreter, which build of it."""
    build = "none"
    if python.build_path is not None and python.kind != "bundled":
        # Not the path: the app's interpreter sits in a new build folder every time.
        stat = python.build_path.resolve().stat()
        build = f"{stat.st_size}:{stat.st_mtime_ns}"
    return f"{python.kind}:{python.command}:{python.version}:{build}"


def write_record(python: ReleasePython, path: Path) -> None:
    """Record the choice for the launcher: `key=value` lines, paths relative to the app root."""
    path.write_text(
        "# Written by heroku-buildpack-migrate at build time; read by bin/heroku-migrate.\n"
        f"kind={python.kind}\n"
        f"python={python.command}\n"
        f"version={python.version}\n"
        f"library_path={python.library_path}\n",
        encoding="utf-8",
    )
