"""Every supported stack, and nothing else: the stack check, the manifest on a packed slug, and
each stack's build and release on stand-ins of its images (see `standins`).

A stand-in run is the whole path of an app on Heroku: bin/detect and bin/compile chrooted into
the stack's build root (`env -i`, `HOME=/app`, `STACK`, a `/tmp/build_<hex>` folder), the built
app packed as a slug (tar, whole-second mtimes) and unpacked as /app into the run root, and the
Procfile's `release:` line run there (`env -i`, `.profile.d/*.sh` sourced, the test server's
DATABASE_URL). Build times and slug sizes are printed (`pytest -s`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

import standins
from herokumigrate.buildpack import BuildFailed, stacks, stdlib
from herokumigrate.manifest import read_manifest, write_manifest
from herokumigrate.source import load_migrations
from support import EXAMPLE, REPO, Server, assert_no_secret, tree_contents

MB = 1_000_000
SLUG_SIZE_GOAL = 20 * MB  # issue 10: the bundled interpreter's slug, uncompressed
EXAMPLE_TABLES = {"users", "orders", "heroku_migrate_history"}


def copy_buildpack(destination: Path) -> Path:
    """The buildpack as Heroku fetches it: bin/, lib/ and buildpack.toml, no bytecode."""
    for part in ("bin", "lib"):
        shutil.copytree(
            REPO / part, destination / part, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy2(REPO / "buildpack.toml", destination / "buildpack.toml")
    return destination


def host_compile(
    tmp_path: Path, stack: str | None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """bin/compile of migrations_example on this machine, STACK set to `stack` (None: unset)."""
    buildpack = copy_buildpack(tmp_path / "buildpack")
    build_dir = tmp_path / f"build_{secrets.token_hex(8)}"
    shutil.copytree(EXAMPLE, build_dir)
    (tmp_path / "cache").mkdir()
    (tmp_path / "env").mkdir()
    env = {"HOME": "/app", "PATH": standins.RUN_PATH}
    if stack is not None:
        env["STACK"] = stack
    result = subprocess.run(
        [
            str(buildpack / "bin/compile"),
            str(build_dir),
            str(tmp_path / "cache"),
            str(tmp_path / "env"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    return result, build_dir


# --------------------------------------------------------------------------------------------
# The stack check


def test_supported_stacks_are_heroku_22_24_and_26() -> None:
    assert list(stacks.SUPPORTED) == ["heroku-22", "heroku-24", "heroku-26"]
    assert stacks.SUPPORTED["heroku-22"].run_python == "/usr/bin/python3"
    assert stacks.SUPPORTED["heroku-24"].run_python is None
    assert stacks.SUPPORTED["heroku-26"].run_python is None
    for name in stacks.SUPPORTED:
        assert stacks.check(name) is stacks.SUPPORTED[name]


@pytest.mark.parametrize("stack", ["heroku-20", "cedar-14", "heroku-24-arm", "container"])
def test_unknown_stack_is_refused_with_the_supported_list_and_the_fix(stack: str) -> None:
    with pytest.raises(BuildFailed) as caught:
        stacks.check(stack)
    text = "\n".join(caught.value.lines())
    assert f"The stack {stack} is not supported" in text
    assert "Supported stacks: heroku-22, heroku-24, heroku-26." in text
    assert "heroku stack:set heroku-24" in text
    assert "python3" not in text  # no claim about the run image of a stack we do not know


def test_unset_stack_means_a_build_outside_heroku() -> None:
    assert stacks.check("") is None


@pytest.mark.buildpack
def test_compile_on_an_unknown_stack_fails_at_once(tmp_path: Path) -> None:
    result, build_dir = host_compile(tmp_path, "heroku-18")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""  # before any step: nothing fetched, nothing installed
    assert " !     The stack heroku-18 is not supported" in result.stderr
    assert "Supported stacks: heroku-22, heroku-24, heroku-26." in result.stderr
    assert "heroku stack:set heroku-24" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (build_dir / ".heroku-migrate").exists()
    assert not any((tmp_path / "cache").iterdir())


@pytest.mark.buildpack
@pytest.mark.slow
def test_compile_without_stack_bundles_the_build_python(tmp_path: Path) -> None:
    result, build_dir = host_compile(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STACK is not set (not a Heroku build?), so the run image is unknown" in result.stdout
    assert "run image has no python3" not in result.stdout
    record = (build_dir / ".heroku-migrate/interpreter").read_text()
    assert "kind=bundled" in record


# --------------------------------------------------------------------------------------------
# The manifest on a slug: Heroku's tar keeps whole-second mtimes only


def test_manifest_survives_packing_as_a_slug(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app)
    folder = app / "db/migrations"
    for number, path in enumerate(sorted(folder.iterdir())):
        # Sub-second mtimes, as a checkout has: a tar archive drops the fraction.
        os.utime(path, ns=(1_780_000_000_123_456_789 + number, 1_780_000_000_987_654_321 + number))
    migrations = load_migrations(folder)
    manifest = tmp_path / "manifest.json"
    write_manifest(manifest, folder, "db/migrations", migrations)
    expected = [(m.version, m.checksum) for m in migrations]

    standins.pack_slug(app, tmp_path / "slug.tgz")
    dyno = tmp_path / "dyno"
    standins.unpack_slug(tmp_path / "slug.tgz", dyno)
    unpacked = dyno / "db/migrations"
    assert all(path.stat().st_mtime_ns % 1_000_000_000 == 0 for path in unpacked.iterdir())
    found = read_manifest(str(manifest), unpacked, "db/migrations")
    assert found is not None
    assert found.migrations == expected

    # Still not a stand-in for the files once one of them is edited (a later buildpack).
    edited = unpacked / "20260102090000_create_orders.up.sql"
    edited.write_text(edited.read_text() + "-- edited\n")
    assert read_manifest(str(manifest), unpacked, "db/migrations") is None


# --------------------------------------------------------------------------------------------
# Stand-ins: build and release on each stack's images

# CI sets this: there, a stand-in that cannot run is a failure, not a skip.
REQUIRED = os.environ.get("HEROKU_MIGRATE_REQUIRE_STANDINS") == "1"


@dataclass
class StandInBuild:
    """One stack's build in its build root, and the slug unpacked in its run root."""

    standin: standins.StandIn
    detect: subprocess.CompletedProcess[str]
    compile: subprocess.CompletedProcess[str]
    seconds: float
    built: Path
    """The built app, as bin/compile left it (host path, in the build root's overlay)."""
    run_root: standins.Overlay
    warm: subprocess.CompletedProcess[str]
    """A second compile of the same app with the cache the first left, and no network."""
    warm_seconds: float
    warm_built: Path

    @property
    def app(self) -> Path:
        """/app in the run root (host path)."""
        return self.run_root.upper / "app"


def build_on_standin(stack: str, folder: Path) -> StandInBuild:
    """bin/detect and bin/compile of migrations_example in `stack`'s build root, then the slug
    unpacked as /app in its run root."""
    standin = standins.STANDINS[stack]
    build_root = standins.Overlay.create(standins.ensure_root(standin, "build"), folder / "build")
    build_root.add_host_files(ca_bundle=True)
    tmp = build_root.upper / "tmp"
    tmp.mkdir(mode=0o1777)
    name = f"build_{secrets.token_hex(8)}"
    shutil.copytree(EXAMPLE, tmp / name)
    for part in ("cache", "env"):
        (tmp / part).mkdir()
    copy_buildpack(build_root.upper / "buildpack")
    env = {"HOME": "/app", "STACK": stack, "PATH": standins.RUN_PATH}
    detect = standins.run_in_root(build_root, ["/buildpack/bin/detect", f"/tmp/{name}"], env=env)
    started = time.monotonic()
    compiled = standins.run_in_root(
        build_root,
        ["/buildpack/bin/compile", f"/tmp/{name}", "/tmp/cache", "/tmp/env"],
        env=env,
    )
    seconds = time.monotonic() - started
    warm_name = f"build_{secrets.token_hex(8)}"
    shutil.copytree(EXAMPLE, tmp / warm_name)
    started = time.monotonic()
    warm = standins.run_in_root(
        build_root,
        ["/buildpack/bin/compile", f"/tmp/{warm_name}", "/tmp/cache", "/tmp/env"],
        env=env,
        network=False,
    )
    warm_seconds = time.monotonic() - started
    run_root = standins.Overlay.create(standins.ensure_root(standin, "run"), folder / "run")
    run_root.add_host_files(ca_bundle=False)
    if compiled.returncode == 0:
        standins.pack_slug(tmp / name, folder / "slug.tgz")
        standins.unpack_slug(folder / "slug.tgz", run_root.upper / "app")
    return StandInBuild(
        standin,
        detect,
        compiled,
        seconds,
        tmp / name,
        run_root,
        warm,
        warm_seconds,
        tmp / warm_name,
    )


@pytest.fixture(scope="module", params=list(standins.STANDINS))
def standin_build(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> StandInBuild:
    """migrations_example built on one stack's stand-in (once per stack)."""
    why_not = standins.can_build_roots()
    if why_not and REQUIRED:
        pytest.fail(f"stand-ins required (HEROKU_MIGRATE_REQUIRE_STANDINS=1) but: {why_not}")
    if why_not:
        pytest.skip(why_not)
    stack = str(request.param)
    build = build_on_standin(stack, tmp_path_factory.mktemp(stack))
    print(
        f"\n{stack} stand-in ({build.standin.suite}): bin/compile cold {build.seconds:.1f}s, "
        f"warm {build.warm_seconds:.1f}s (offline)"
    )
    return build


def release_line(app: Path) -> str:
    """The command of the Procfile's `release:` line."""
    for line in (app / "Procfile").read_text().splitlines():
        match = re.match(r"release:\s*(.*?)\s*$", line)
        if match:
            return match.group(1)
    raise AssertionError("no release: line in the Procfile")


def on_dyno(
    build: StandInBuild, script: str, database_url: str, binds: tuple[Path, ...]
) -> subprocess.CompletedProcess[str]:
    """`script` run by bash in /app of the run root as a dyno runs it: `env -i`, HOME=/app,
    `.profile.d/*.sh` sourced, DATABASE_URL set."""
    result = standins.run_in_root(
        build.run_root,
        [
            "/bin/bash",
            "-c",
            'cd /app && for f in .profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; ' + script,
        ],
        env={"HOME": "/app", "PATH": standins.RUN_PATH, "DATABASE_URL": database_url},
        binds=binds,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert_no_secret(output)
    for failure in ("Traceback", "ImportError", "ModuleNotFoundError", "cannot open shared object"):
        assert failure not in output, output
    return result


def tables(database_url: str) -> set[str]:
    """The tables in the public schema."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def gzipped_bytes(app: Path, *parts: str) -> int:
    """What `parts` of the app add to the slug as Heroku counts it: a gzip'd tar archive."""
    packed = subprocess.run(
        ["tar", "--format=gnu", "-czf", "-", "-C", str(app), *parts],
        capture_output=True,
        check=True,
    )
    return len(packed.stdout)


def tree_bytes(path: Path) -> int:
    """`du -sb` of a folder: what it adds to the uncompressed slug."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


@pytest.mark.buildpack
@pytest.mark.standin
def test_standin_build_detects_and_compiles(standin_build: StandInBuild) -> None:
    build = standin_build
    assert build.detect.returncode == 0, build.detect.stdout + build.detect.stderr
    output = build.compile.stdout + build.compile.stderr
    assert build.compile.returncode == 0, output
    assert "Traceback" not in output
    stack = stacks.SUPPORTED[build.standin.stack]
    record = (build.app / ".heroku-migrate/interpreter").read_text()
    if stack.run_python is None:
        assert (
            f"{stack.name}'s run image has no python3: bundling Python {build.standin.python}"
            in output
        )
        assert "kind=bundled" in record
        assert not (build.run_root.lower / "usr/bin/python3").exists()  # the run root has none
    else:
        assert f"Using {stack.name}'s /usr/bin/python3" in output
        assert "kind=stack" in record
        assert not (build.app / ".heroku-migrate/python").exists()
    size = tree_bytes(build.app / ".heroku-migrate")
    packed = gzipped_bytes(build.app, ".heroku-migrate", ".profile.d/heroku-migrate.sh")
    print(
        f"\n{stack.name}: .heroku-migrate is {size / MB:.1f} MB (du -sb), "
        f"{packed / MB:.1f} MB gzip'd in the slug (tar czf)"
    )
    if stack.run_python is None:
        assert size <= SLUG_SIZE_GOAL


@pytest.mark.buildpack
@pytest.mark.standin
def test_standin_warm_rebuild_is_offline_and_adds_the_same_files(
    standin_build: StandInBuild,
) -> None:
    """A rebuild with the cache the first build left needs no network, and its
    `.heroku-migrate` holds the same files with the same bytes and modes."""
    build = standin_build
    assert build.compile.returncode == 0, build.compile.stdout + build.compile.stderr
    assert build.warm.returncode == 0, build.warm.stdout + build.warm.stderr
    assert "downloaded" not in build.warm.stdout
    assert tree_contents(build.warm_built / ".heroku-migrate") == tree_contents(
        build.built / ".heroku-migrate"
    )


@pytest.mark.buildpack
@pytest.mark.standin
def test_standin_release_applies_migrations_once(
    standin_build: StandInBuild, pg_server: Server, database_url: str
) -> None:
    build = standin_build
    assert build.compile.returncode == 0, build.compile.stdout + build.compile.stderr
    binds = standins.socket_binds(pg_server.admin.get("host", ""))
    command = release_line(build.app)
    assert command.startswith("./.heroku-migrate/bin/heroku-migrate up")

    first = on_dyno(build, command, database_url, binds)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Applied 5 migration(s)" in first.stdout
    assert tables(database_url) >= EXAMPLE_TABLES

    second = on_dyno(build, command, database_url, binds)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "up to date" in second.stdout
    assert "Applied" not in second.stdout

    # The no-op answered from the build's manifest, on the unpacked slug: it read no migration
    # file. Proof: garbling one (same size, same mtime) goes unnoticed, where reading it would
    # fail the release ("changed after it was applied").
    garbled = build.app / "db/migrations/20260101120000_create_users.up.sql"
    original, info = garbled.read_bytes(), garbled.stat()
    try:
        garbled.write_bytes(b"-" * len(original))
        os.utime(garbled, ns=(info.st_atime_ns, info.st_mtime_ns))
        third = on_dyno(build, command, database_url, binds)
        assert third.returncode == 0, third.stdout + third.stderr
        assert "up to date" in third.stdout
    finally:
        garbled.write_bytes(original)
        os.utime(garbled, ns=(info.st_atime_ns, info.st_mtime_ns))


@pytest.mark.buildpack
@pytest.mark.standin
def test_standin_runs_every_runner_command(
    standin_build: StandInBuild, pg_server: Server, database_url: str
) -> None:
    """Every command the runner has, on the run image: nothing it imports is missing."""
    build = standin_build
    assert build.compile.returncode == 0, build.compile.stdout + build.compile.stderr
    binds = standins.socket_binds(pg_server.admin.get("host", ""))

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return on_dyno(build, command, database_url, binds)

    assert run("heroku-migrate up").returncode == 0
    status = run("heroku-migrate status --json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)
    assert run("heroku-migrate validate").returncode == 0
    plan = run("heroku-migrate plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    down = run("heroku-migrate down 1 --yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "users" in tables(database_url)
    assert run("heroku-migrate up").returncode == 0
    lint = run("heroku-migrate lint")  # build time, laptop and CI only: said so on a dyno
    assert lint.returncode == 2, lint.stdout + lint.stderr
    assert "heroku-migrate lint is not installed in the slug" in lint.stderr
    shipped = {p.name for p in (build.app / ".heroku-migrate/lib/herokumigrate").glob("*.py")}
    assert not shipped & {"lint.py", "pgparse.py", "lintrules.py"}, shipped
    new = run("heroku-migrate new add_index")
    assert new.returncode == 0, new.stdout + new.stderr
    assert any("add_index" in path.name for path in (build.app / "db/migrations").iterdir())
    # Every module of the runner imports on the run image, lazily imported ones and the
    # formats' and tools' tables (subpackages) included.
    package = build.app / ".heroku-migrate/lib/herokumigrate"
    modules = sorted(
        ".".join(("herokumigrate", *path.relative_to(package).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for path in package.rglob("*.py")
        if path.stem != "__main__"
    )
    assert "herokumigrate.formats.golang_migrate" in modules
    # The backports this release Python has built in are left out of the slug.
    site = {path.name for path in (build.app / ".heroku-migrate/site").iterdir()}
    record = (build.app / ".heroku-migrate/interpreter").read_text()
    dotted = next(line for line in record.splitlines() if line.startswith("version="))
    version = tuple(int(part) for part in dotted.removeprefix("version=").split(".")[:2])
    assert ("tomli" in site) is (version < (3, 11)), (version, site)
    assert ("typing_extensions.py" in site) is (version < (3, 13)), (version, site)
    smoke = run(_python_command(build, f"import psycopg, {', '.join(modules)}; print('ok')"))
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert smoke.stdout.strip() == "ok"


def _python_command(build: StandInBuild, code: str) -> str:
    """A shell command running `code` with the slug's release Python, as the launcher sets it
    up (its PYTHONPATH and library path)."""
    record = dict(
        line.split("=", 1)
        for line in (build.app / ".heroku-migrate/interpreter").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    python = record["python"] if record["python"].startswith("/") else f"/app/{record['python']}"
    library = f"LD_LIBRARY_PATH=/app/{record['library_path']} " if record["library_path"] else ""
    path = "PYTHONPATH=/app/.heroku-migrate/lib:/app/.heroku-migrate/site"
    return f"{library}{path} {python} -S -c {shlex.quote(code)}"


@pytest.fixture
def plain_tcp_server(pg_server: Server) -> Iterator[tuple[str, int]]:
    """A PostgreSQL server without TLS reached over TCP: the test server when it listens on
    TCP, otherwise a listener that refuses TLS exactly as such a server does (it answers the
    client's SSLRequest with 'N') and then closes."""
    host = pg_server.admin.get("host", "")
    if host and not host.startswith("/"):
        yield host, int(pg_server.admin.get("port", "5432"))
        return
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def refuse_tls() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(8)  # SSLRequest: length 8, code 80877103
                    conn.sendall(b"N")

    thread = threading.Thread(target=refuse_tls, daemon=True)
    thread.start()
    yield "127.0.0.1", port
    listener.close()


@pytest.mark.buildpack
@pytest.mark.standin
def test_standin_sslmode_require_fails_cleanly_without_tls(
    standin_build: StandInBuild, plain_tcp_server: tuple[str, int], dbname: str
) -> None:
    """`sslmode=require` loads everything TLS needs (psycopg imports `ssl`; libpq links
    libssl) and fails as a connection error, not an import error, against a server without TLS."""
    build = standin_build
    assert build.compile.returncode == 0, build.compile.stdout + build.compile.stderr
    host, port = plain_tcp_server
    url = f"postgres://hm_tester:secret-pw@{host}:{port}/{dbname}?sslmode=require"
    result = on_dyno(build, "heroku-migrate status --connect-wait 0", url, ())
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "SSL" in output
    assert "secret-pw" not in output


# --------------------------------------------------------------------------------------------
# Which standard library the bundled Python keeps


def test_stdlib_closure_follows_every_import_but_script_blocks_and_never_kept(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "stdlib"
    (lib / "pkg").mkdir(parents=True)
    (lib / "pkg/__init__.py").write_text("from .helper import x\n")
    (lib / "pkg/helper.py").write_text("import lazy_target_parent.child\nx = 1\n")
    (lib / "pkg/unused.py").write_text("import never_reached\n")
    (lib / "lazy_target_parent").mkdir()
    (lib / "lazy_target_parent/__init__.py").write_text("")
    (lib / "lazy_target_parent/child.py").write_text("")
    (lib / "lazily.py").write_text("def f():\n    import in_function\n")
    (lib / "in_function.py").write_text("")
    (lib / "scripty.py").write_text("if __name__ == '__main__':\n    import script_only\n")
    for name in ("script_only", "never_reached", "denied", "from_denied"):
        (lib / f"{name}.py").write_text("")
    (lib / "denied.py").write_text("import from_denied\n")
    runner = tmp_path / "runner.py"
    runner.write_text("import pkg, lazily, scripty, denied, not_stdlib\n")

    kept = stdlib.needed_top_level(lib, [runner], frozenset({"denied"}))

    reached = {"pkg", "lazy_target_parent", "lazily", "in_function", "scripty"}
    assert reached <= kept
    assert not {"script_only", "never_reached", "denied", "from_denied", "not_stdlib"} & kept
    assert "encodings" in kept  # the interpreter's own needs are always kept
