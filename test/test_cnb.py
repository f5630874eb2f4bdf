"""The Cloud Native Buildpack (Heroku Fir), through a lifecycle simulation (`cnb_lifecycle`):
the real bin/detect and bin/build run as the lifecycle runs them (in the app directory, with the
`CNB_*` variables), the group is resolved by the spec's rules together with heroku/release-phase's
plan, and the release command heroku/release-phase would run is read from the plans and run with
the launch environment the lifecycle builds from the exported launch layers.

The end-to-end test builds in the heroku-26 stand-in's build root and launches in its python-less
run root (see `standins`); the others run on this machine.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest

import cnb_lifecycle as lifecycle
import standins
from herokumigrate import __version__
from herokumigrate.buildpack import cnb_plan
from support import EXAMPLE, REPO, Server, assert_no_secret

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUILDPACK_ID = "heroku-migrate/migrate"
TARGET = {"os": "linux", "arch": "amd64", "distro_name": "ubuntu", "distro_version": "24.04"}
HOST_PATH = "/usr/local/bin:/usr/bin:/bin"
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens: any download fails at once
EXAMPLE_TABLES = {"users", "orders", "heroku_migrate_history"}
REQUIRED = os.environ.get("HEROKU_MIGRATE_REQUIRE_STANDINS") == "1"


def copy_buildpack(destination: Path) -> Path:
    """The buildpack as a builder holds it: bin/, lib/ and buildpack.toml, no bytecode."""
    for part in ("bin", "lib"):
        shutil.copytree(
            REPO / part, destination / part, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy2(REPO / "buildpack.toml", destination / "buildpack.toml")
    return destination


@pytest.fixture(scope="module")
def buildpack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the buildpack for this module's host runs."""
    return copy_buildpack(tmp_path_factory.mktemp("cnb") / "buildpack")


def run(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """A lifecycle step: `argv` in `cwd` with exactly `env` (plus HOME and PATH)."""
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        env={"HOME": str(cwd), "PATH": HOST_PATH, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


@dataclass
class HostDetect:
    """One bin/detect run and the plan it wrote."""

    result: subprocess.CompletedProcess[str]
    plan: lifecycle.Plan


def host_detect(buildpack: Path, app: Path, platform: Path) -> HostDetect:
    """bin/detect in `app` with the CNB variables."""
    plan_path = app.parent / "plan.toml"
    plan_path.unlink(missing_ok=True)
    platform.joinpath("env").mkdir(parents=True, exist_ok=True)
    env = lifecycle.cnb_detect_env(
        plan_path=plan_path, platform_dir=platform, buildpack_dir=buildpack
    )
    result = run([str(buildpack / "bin/detect")], app, env)
    return HostDetect(result, lifecycle.read_plan(plan_path))


def host_build(
    buildpack: Path,
    app: Path,
    layers: Path,
    entries: list[lifecycle.Entry],
    platform: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    path: str = HOST_PATH,
) -> subprocess.CompletedProcess[str]:
    """bin/build in `app` with the CNB variables, a layers folder and the target."""
    layers.mkdir(parents=True, exist_ok=True)
    plan_path = app.parent / "bp-plan.toml"
    lifecycle.write_buildpack_plan(entries, plan_path)
    platform.joinpath("env").mkdir(parents=True, exist_ok=True)
    env = lifecycle.cnb_build_env(
        layers_dir=layers,
        plan_path=plan_path,
        platform_dir=platform,
        buildpack_dir=buildpack,
        target=TARGET,
    )
    return run([str(buildpack / "bin/build")], app, {**env, "PATH": path, **(extra_env or {})})


def group_with_release_phase(
    plan: lifecycle.Plan, *, release_phase_first: bool = True
) -> list[lifecycle.Detected]:
    """A group of heroku/release-phase and this buildpack, in the given order."""
    ours = lifecycle.Detected(BUILDPACK_ID, plan)
    theirs = lifecycle.Detected(lifecycle.RELEASE_PHASE_ID, lifecycle.RELEASE_PHASE_PLAN)
    return [theirs, ours] if release_phase_first else [ours, theirs]


# --------------------------------------------------------------------------------------------
# detect


@pytest.mark.buildpack
@pytest.mark.parametrize(
    "fixture", ["example", "app_python", "broken_migration", "no_procfile", "no_migrations"]
)
def test_cnb_detect_passes_on_the_same_apps_as_classic_detect(
    buildpack: Path, tmp_path: Path, fixture: str
) -> None:
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE if fixture == "example" else FIXTURES / fixture, app)
    classic = run([str(buildpack / "bin/detect"), str(app)], tmp_path, {})
    cnb = host_detect(buildpack, app, tmp_path / "platform")
    assert classic.returncode in (0, 1)
    assert cnb.result.returncode == (0 if classic.returncode == 0 else 100)
    if classic.returncode == 0:
        assert cnb.plan
    else:
        assert cnb.plan == {}
        assert "nothing to migrate" in cnb.result.stderr


@pytest.mark.buildpack
def test_cnb_detect_passes_on_a_config_file_alone(buildpack: Path, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "migrate.toml").write_text('path = "sql"\n')
    assert host_detect(buildpack, app, tmp_path / "platform").result.returncode == 0


@pytest.mark.buildpack
def test_cnb_detect_declares_heroku_migrate_up_to_release_phase_with_an_alternative(
    buildpack: Path, tmp_path: Path
) -> None:
    app = shutil.copytree(EXAMPLE, tmp_path / "app")
    detected = host_detect(buildpack, app, tmp_path / "platform")
    assert detected.result.returncode == 0, detected.result.stderr
    first, alternative = lifecycle.alternatives(detected.plan)
    release = [entry for entry in first.requires if entry["name"] == "release-phase"]
    assert release == [
        {
            "name": "release-phase",
            "metadata": {
                "release": [
                    {"command": "heroku-migrate", "args": ["up"], "source": cnb_plan.SOURCE}
                ]
            },
        }
    ]
    assert "heroku-migrate" in first.provides
    assert all(entry["name"] != "release-phase" for entry in alternative.requires)
    assert "heroku-migrate" in alternative.provides


@pytest.mark.buildpack
def test_cnb_detect_leaves_release_phase_out_when_the_build_env_opts_out(
    buildpack: Path, tmp_path: Path
) -> None:
    app = shutil.copytree(EXAMPLE, tmp_path / "app")
    platform = tmp_path / "platform"
    (platform / "env").mkdir(parents=True)
    (platform / "env/MIGRATE_RELEASE_PHASE").write_text("false")
    detected = host_detect(buildpack, app, platform)
    assert detected.result.returncode == 0
    assert [alt.requires for alt in lifecycle.alternatives(detected.plan)] == [
        ({"name": "heroku-migrate", "metadata": {"release-phase": False}},)
    ]


# --------------------------------------------------------------------------------------------
# The group: heroku/release-phase must come first


@pytest.mark.buildpack
def test_release_phase_before_this_buildpack_gets_the_release_command(
    buildpack: Path, tmp_path: Path
) -> None:
    app = shutil.copytree(EXAMPLE, tmp_path / "app")
    plan = host_detect(buildpack, app, tmp_path / "platform").plan
    (app / "project.toml").write_text(
        '[[com.heroku.phase.release]]\ncommand = "bash"\nargs = ["-c", "echo after"]\n'
    )
    resolved = lifecycle.resolve(group_with_release_phase(plan))
    assert resolved is not None
    entries = resolved.buildpack_plan(lifecycle.RELEASE_PHASE_ID)
    assert lifecycle.release_commands(entries, app / "project.toml") == [
        ["heroku-migrate", "up"],  # the plan's commands come before project.toml's
        ["bash", "-c", "echo after"],
    ]
    assert resolved.buildpack_plan(BUILDPACK_ID) == [
        {"name": "heroku-migrate", "metadata": {"release-phase": True}}
    ]


@pytest.mark.buildpack
@pytest.mark.parametrize("group", ["release-phase after", "no release-phase"])
def test_without_release_phase_before_it_the_alternative_is_chosen(
    buildpack: Path, tmp_path: Path, group: str
) -> None:
    app = shutil.copytree(EXAMPLE, tmp_path / "app")
    plan = host_detect(buildpack, app, tmp_path / "platform").plan
    members = (
        group_with_release_phase(plan, release_phase_first=False)
        if group == "release-phase after"
        else [lifecycle.Detected(BUILDPACK_ID, plan)]
    )
    resolved = lifecycle.resolve(members)
    assert resolved is not None  # the buildpack still passes detection
    assert resolved.buildpack_plan(BUILDPACK_ID) == [
        {"name": "heroku-migrate", "metadata": {"release-phase": False}}
    ]
    if group == "release-phase after":
        entries = resolved.buildpack_plan(lifecycle.RELEASE_PHASE_ID)
        assert lifecycle.release_commands(entries, None) == []


def test_simulated_group_resolution_follows_the_spec() -> None:
    """The simulation's own rules: a requirement needs an earlier (or the same) provider, a
    provision needs a later (or the same) requirer."""
    needs = lifecycle.Detected("a", {"requires": [{"name": "x"}]})
    gives = lifecycle.Detected("b", {"provides": [{"name": "x"}]})
    both = lifecycle.Detected("c", {"provides": [{"name": "x"}], "requires": [{"name": "x"}]})
    assert lifecycle.resolve([gives, needs]) is not None
    assert lifecycle.resolve([needs, gives]) is None
    assert lifecycle.resolve([gives]) is None
    assert lifecycle.resolve([both]) is not None
    fallback = lifecycle.Detected("d", {"requires": [{"name": "x"}], "or": [{}]})
    resolved = lifecycle.resolve([fallback, gives])
    assert resolved is None  # `gives` provides x that nobody after it requires
    resolved = lifecycle.resolve([fallback])
    assert resolved is not None
    assert resolved.chosen[0] == lifecycle.Alternative((), ())


# --------------------------------------------------------------------------------------------
# The launch environment of the simulation


def test_simulated_launch_environment_follows_the_suffix_rules(tmp_path: Path) -> None:
    early, late = tmp_path / "early", tmp_path / "late"
    files = {
        early / "a/env/OVER": "early",
        early / "a/env/DEF.default": "early",
        early / "a/env/LIST.append": "e",
        early / "a/env/LIST.delim": ",",
        early / "a/env/PRE.prepend": "e",
        early / "a/env/PRE.delim": ":",
        early / "a/env.launch/OVER.override": "early-launch",
        late / "b/env/OVER": "late",
        late / "b/env/DEF.default": "late",
        late / "b/env/LIST.append": "l",
        late / "b/env/LIST.delim": ",",
        late / "b/env/PRE.prepend": "l",
        late / "b/env/PRE.delim": ":",
        late / "b/env/EVAL": "$(touch pwned) ${HOME}",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for layers, name in ((early, "a"), (late, "b")):
        (layers / f"{name}.toml").write_text("[types]\nlaunch = true\n")
        (layers / name / "bin").mkdir()
        (layers / name / "lib").mkdir()
    env = lifecycle.launch_environment({"PATH": "/usr/bin", "PRE": "base"}, [early, late])
    assert env["OVER"] == "late"  # later buildpacks override
    assert env["DEF"] == "early"  # earlier buildpacks' defaults win
    assert env["LIST"] == "e,l"
    assert env["PRE"] == "l:e:base"
    assert env["EVAL"] == "$(touch pwned) ${HOME}"  # verbatim
    assert env["PATH"] == f"{late}/b/bin:{early}/a/bin:/usr/bin"
    assert env["LD_LIBRARY_PATH"] == f"{late}/b/lib:{early}/a/lib"


# --------------------------------------------------------------------------------------------
# build on this machine


def example_with_layers(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The example app, an empty layers folder for this buildpack, and a platform folder."""
    app = shutil.copytree(EXAMPLE, tmp_path / "workspace")
    platform = tmp_path / "platform"
    (platform / "env").mkdir(parents=True)
    return app, tmp_path / "layers" / BUILDPACK_ID.replace("/", "_"), platform


def python_launch_layer(all_layers: Path) -> str:
    """heroku/python's `python` layer (build and launch) with a python3 running this machine's,
    as an earlier buildpack of the group leaves it; the PATH that puts it first."""
    python_layer = all_layers / "heroku_python/python"
    (python_layer / "bin").mkdir(parents=True)
    wrapper = python_layer / "bin/python3"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("python3", path=HOST_PATH)} "$@"\n')
    wrapper.chmod(0o755)
    (all_layers / "heroku_python/python.toml").write_text(
        "[types]\nbuild = true\nlaunch = true\ncache = true\n"
    )
    return f"{python_layer}/bin:{HOST_PATH}"


WIRED = [{"name": "heroku-migrate", "metadata": {"release-phase": True}}]
NOT_WIRED = [{"name": "heroku-migrate", "metadata": {"release-phase": False}}]


@pytest.mark.buildpack
@pytest.mark.slow
def test_cnb_build_makes_a_launch_layer_and_a_cache_layer_reused_offline(
    buildpack: Path, tmp_path: Path
) -> None:
    app, layers, platform = example_with_layers(tmp_path)
    (platform / "env/MIGRATE_LOCK_WAIT").write_text("60")
    (platform / "env/MIGRATE_NOT_A_SETTING").write_text("$(touch pwned)")
    first = host_build(buildpack, app, layers, NOT_WIRED, platform)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    assert "MIGRATE_LOCK_WAIT=60 (config var)" in output
    assert "Config var MIGRATE_NOT_A_SETTING is not a heroku-migrate setting" in output
    assert not list(tmp_path.rglob("pwned"))  # read as data, never evaluated
    assert "Validated 5 migration(s) in db/migrations" in output
    assert "PostgreSQL's parser: pglast" in output
    assert "No record of a previous build in the cache: every migration counts as new" in output
    assert "Release-safety lint of 5 new migration(s)" in output
    assert (layers / "runner/.heroku-migrate/manifest.json").is_file()
    # heroku/release-phase missing: the build says how to add it, and in which order.
    assert "heroku/release-phase is not in this build's group before heroku-migrate" in output
    assert 'uri = "heroku/release-phase"' in output
    assert lifecycle.layer_types(layers, "runner") == {"launch"}
    assert lifecycle.layer_types(layers, "cache") == {"cache"}
    record = (layers / "runner/.heroku-migrate/interpreter").read_text()
    assert "kind=bundled" in record
    assert f"app_root={app}" in record
    assert (layers / "runner/bin/heroku-migrate").resolve().is_file()
    assert not (app / ".heroku-migrate").exists()  # nothing in the app directory
    assert not (app / "Procfile").read_text().count("heroku-migrate")  # Procfile untouched

    lifecycle.restore_for_rebuild(layers)
    assert not (layers / "runner").exists()
    second = host_build(
        buildpack,
        app,
        layers,
        WIRED,
        platform,
        extra_env={"https_proxy": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY},
    )
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert output.count("(cached)") == 3
    assert "downloaded" not in output
    assert "from the build cache" in output
    assert "declared to heroku/release-phase" in output
    # The lint's record of what it checked is in the cache layer: nothing is new.
    assert "No record of a previous build" not in output
    assert "Release-safety lint of 0 new migration(s)" in output
    assert "is not in this build's group" not in output


@pytest.mark.buildpack
def test_cnb_build_fails_on_a_broken_migration(buildpack: Path, tmp_path: Path) -> None:
    app = shutil.copytree(FIXTURES / "broken_migration", tmp_path / "workspace")
    result = host_build(buildpack, app, tmp_path / "layers/bp", WIRED, tmp_path / "platform")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The build stopped because of the problem above" in result.stderr
    assert not (tmp_path / "layers/bp/runner.toml").exists()


class SameCheck(NamedTuple):
    """An app (the example plus one migration) and config vars, and what fails both builds."""

    case: str
    migration: str
    config_vars: dict[str, str]
    failure: str | None  # a ` !     ` line holds it; None: both builds pass


SAME_CHECKS = [
    SameCheck("syntax", "create tabel oops;\n", {}, "3_extra.up.sql: line 1"),
    SameCheck(
        "lint error",
        "ALTER TABLE legacy RENAME COLUMN a TO b;\n",
        {"MIGRATE_LINT": "error"},
        'lint = "error" fails the build',
    ),
    SameCheck("parse off", "create tabel oops;\n", {"MIGRATE_PARSE": "false"}, None),
    SameCheck(
        "lint off", "ALTER TABLE legacy RENAME COLUMN a TO b;\n", {"MIGRATE_LINT": "off"}, None
    ),
    SameCheck(
        "url var",
        "SELECT 1;\n",
        {"MIGRATE_DATABASE_URL_VAR": "u:pw@db.example.com/x"},  # a URL minus its scheme
        "MIGRATE_DATABASE_URL_VAR",
    ),
]


def classic_compile(
    buildpack: Path, app: Path, tmp_path: Path, config_vars: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """bin/compile of `app` for heroku-22 (the run image's python3: nothing bundled)."""
    build_dir = shutil.copytree(app, tmp_path / "classic/build_0123456789abcdef")
    env_dir = tmp_path / "classic/env"
    env_dir.mkdir()
    for name, value in config_vars.items():
        (env_dir / name).write_text(value)
    argv = [
        str(buildpack / "bin/compile"),
        str(build_dir),
        str(tmp_path / "classic/cache"),
        str(env_dir),
    ]
    return run(argv, tmp_path, {"HOME": "/app", "STACK": "heroku-22"})


def bangs(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The ` !     ` lines of a build's output, in order."""
    return [line for line in result.stderr.splitlines() if line.startswith(" !     ")]


@pytest.mark.buildpack
@pytest.mark.parametrize("check", SAME_CHECKS, ids=[check.case for check in SAME_CHECKS])
def test_cnb_build_checks_exactly_what_the_classic_compile_checks(
    buildpack: Path, tmp_path: Path, check: SameCheck
) -> None:
    app, layers, platform = example_with_layers(tmp_path)
    (app / "db/migrations/3_extra.up.sql").write_text(check.migration)
    for name, value in check.config_vars.items():
        (platform / "env" / name).write_text(value)
    classic = classic_compile(buildpack, app, tmp_path, check.config_vars)
    cnb = host_build(
        buildpack, app, layers, WIRED, platform, path=python_launch_layer(layers.parent)
    )
    for result in (classic, cnb):
        expected = 0 if check.failure is None else 1
        assert result.returncode == expected, result.stdout + result.stderr
        assert "pw@" not in result.stdout + result.stderr
    if check.failure is not None:
        assert any(check.failure in line for line in bangs(cnb)), cnb.stderr
    assert bangs(cnb) == bangs(classic)
    validating = [
        line for line in cnb.stdout.splitlines() if "parse" in line.lower() or "lint" in line
    ]
    assert validating == [
        line for line in classic.stdout.splitlines() if "parse" in line.lower() or "lint" in line
    ]


def test_cache_layer_made_for_another_target_is_emptied(tmp_path: Path) -> None:
    from herokumigrate.buildpack import cnb
    from herokumigrate.output import Output

    layers = tmp_path / "layers"
    (layers / "cache/heroku-migrate").mkdir(parents=True)
    (layers / "cache/target.txt").write_text("linux/arm64 ubuntu 24.04\n")
    (layers / "cache/heroku-migrate/python-x").write_text("stale")
    target = cnb.Target("linux", "amd64", "ubuntu", "24.04")
    cnb.prepare_cache_layer(layers, target, Output(io.StringIO(), io.StringIO()))
    assert not (layers / "cache/heroku-migrate").exists()
    assert (layers / "cache/target.txt").read_text() == "linux/amd64 ubuntu 24.04\n"
    (layers / "cache/kept").write_text("same target")
    cnb.prepare_cache_layer(layers, target, Output(io.StringIO(), io.StringIO()))
    assert (layers / "cache/kept").is_file()
    assert lifecycle.layer_types(layers, "cache") == {"cache"}


@pytest.mark.buildpack
def test_cnb_build_refuses_a_non_linux_target(buildpack: Path, tmp_path: Path) -> None:
    app, layers, platform = example_with_layers(tmp_path)
    result = host_build(
        buildpack, app, layers, WIRED, platform, extra_env={"CNB_TARGET_OS": "windows"}
    )
    assert result.returncode == 1
    assert "heroku-migrate runs on linux only" in result.stderr
    assert not layers.joinpath("cache").exists()


@pytest.mark.buildpack
def test_cnb_build_with_migrate_toml_opt_out_but_declared_command_fails(
    buildpack: Path, tmp_path: Path
) -> None:
    app, layers, platform = example_with_layers(tmp_path)
    (app / "migrate.toml").write_text("release_phase = false\n")
    result = host_build(buildpack, app, layers, WIRED, platform)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Set the build config var MIGRATE_RELEASE_PHASE=false" in result.stderr


@pytest.mark.buildpack
def test_cnb_build_reuses_an_earlier_buildpacks_python_launch_layer(
    buildpack: Path, tmp_path: Path
) -> None:
    """heroku/python's `python` layer (build and launch) puts its python3 first on PATH: the
    runner uses it instead of bundling one."""
    app, layers, platform = example_with_layers(tmp_path)
    path = python_launch_layer(layers.parent)
    wrapper = layers.parent / "heroku_python/python/bin/python3"
    result = host_build(buildpack, app, layers, WIRED, platform, path=path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"from an earlier buildpack's layer ({wrapper})" in output
    assert f"python={wrapper}" in (layers / "runner/.heroku-migrate/interpreter").read_text()
    assert not (layers / "runner/.heroku-migrate/python").exists()


# --------------------------------------------------------------------------------------------
# The whole lifecycle on the heroku-26 stand-in: build root, then the python-less run root

STACK = "heroku-26"
IMAGE_APP = Path("/workspace")
IMAGE_LAYERS = Path("/layers")
IMAGE_BUILDPACK = Path("/cnb/buildpacks") / BUILDPACK_ID.replace("/", "_") / __version__
STANDIN_TARGET = {
    "os": "linux",
    "arch": "amd64",
    "distro_name": "ubuntu",
    "distro_version": "26.04",
}


def in_app(
    overlay: standins.Overlay, argv: list[str], env: Mapping[str, str], binds: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`argv` run in /workspace of `overlay` with exactly `env` (as a lifecycle step runs)."""
    result = standins.run_in_root(
        overlay,
        ["/bin/sh", "-c", 'cd /workspace && exec "$@"', "sh", *argv],
        env=env,
        binds=binds,
    )
    output = result.stdout + result.stderr
    assert_no_secret(output)
    assert "Traceback" not in output, output
    return result


@pytest.fixture(scope="module")
def standin_roots() -> tuple[Path, Path]:
    """The heroku-26 stand-in's build and run roots."""
    why_not = standins.can_build_roots()
    if why_not and REQUIRED:
        pytest.fail(f"stand-ins required (HEROKU_MIGRATE_REQUIRE_STANDINS=1) but: {why_not}")
    if why_not:
        pytest.skip(why_not)
    standin = standins.STANDINS[STACK]
    return standins.ensure_root(standin, "build"), standins.ensure_root(standin, "run")


def tables(database_url: str) -> set[str]:
    """The tables in the public schema."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {str(row[0]) for row in rows}


@pytest.mark.buildpack
@pytest.mark.standin
@pytest.mark.slow
def test_fir_lifecycle_on_heroku_26_standin_applies_migrations_once(
    standin_roots: tuple[Path, Path], tmp_path: Path, pg_server: Server, database_url: str
) -> None:
    build_lower, run_lower = standin_roots
    build_root = standins.Overlay.create(build_lower, tmp_path / "build")
    build_root.add_host_files(ca_bundle=True)
    upper = build_root.upper
    shutil.copytree(EXAMPLE, upper / "workspace")
    copy_buildpack(upper / str(IMAGE_BUILDPACK).lstrip("/"))
    (upper / "platform/env").mkdir(parents=True)
    (upper / "platform/env/MIGRATE_LOCK_WAIT").write_text("120")
    own_layers = IMAGE_LAYERS / BUILDPACK_ID.replace("/", "_")
    (upper / str(own_layers).lstrip("/")).mkdir(parents=True)
    base = {"HOME": "/home/heroku", "PATH": standins.RUN_PATH}

    # detect, then the group [heroku/release-phase, this buildpack]
    detect_env = lifecycle.cnb_detect_env(
        plan_path=Path("/layers/plan.toml"),
        platform_dir=Path("/platform"),
        buildpack_dir=IMAGE_BUILDPACK,
    )
    detected = in_app(build_root, [f"{IMAGE_BUILDPACK}/bin/detect"], {**base, **detect_env})
    assert detected.returncode == 0, detected.stdout + detected.stderr
    plan = lifecycle.read_plan(upper / "layers/plan.toml")
    resolved = lifecycle.resolve(group_with_release_phase(plan))
    assert resolved is not None
    release = lifecycle.release_commands(resolved.buildpack_plan(lifecycle.RELEASE_PHASE_ID), None)
    assert release == [["heroku-migrate", "up"]]

    # build
    lifecycle.write_buildpack_plan(
        resolved.buildpack_plan(BUILDPACK_ID), upper / "layers/bp-plan.toml"
    )
    build_env = {
        **base,
        **lifecycle.cnb_build_env(
            layers_dir=own_layers,
            plan_path=Path("/layers/bp-plan.toml"),
            platform_dir=Path("/platform"),
            buildpack_dir=IMAGE_BUILDPACK,
            target=STANDIN_TARGET,
        ),
    }
    built = in_app(build_root, [f"{IMAGE_BUILDPACK}/bin/build"], build_env)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "bundling Python 3.14" in built.stdout
    assert "declared to heroku/release-phase" in built.stdout
    host_layers = upper / str(own_layers).lstrip("/")
    sizes = subprocess.run(
        ["du", "-sb", str(host_layers / "runner"), str(host_layers / "cache")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    print(
        f"\n{STACK} stand-in: runner layer {int(sizes[0]) / 1e6:.1f} MB, cache layer "
        f"{int(sizes[2]) / 1e6:.1f} MB (du -sb)"
    )

    # export: the app and the launch layers, at the same paths, into the run root
    run_root = standins.Overlay.create(run_lower, tmp_path / "run")
    run_root.add_host_files(ca_bundle=False)
    lifecycle.export_app(upper / "workspace", run_root.upper / "workspace")
    image_layers = run_root.upper / str(own_layers).lstrip("/")
    assert lifecycle.export_launch_layers(host_layers, image_layers) == ["runner"]
    assert not (run_lower / "usr/bin/python3").exists()
    launch_env = lifecycle.launch_environment(
        {**base, "DATABASE_URL": database_url}, [image_layers], image_root=run_root.upper
    )
    assert launch_env["PATH"].startswith(f"{own_layers}/runner/bin:")

    # release, as heroku/release-phase's exec-release-commands runs it: twice
    binds = standins.socket_binds(pg_server.admin.get("host", ""))  # the embedded server's
    first = in_app(run_root, release[0], launch_env, binds)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Applied 5 migration(s)" in first.stdout
    assert tables(database_url) >= EXAMPLE_TABLES
    second = in_app(run_root, release[0], launch_env, binds)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "up to date" in second.stdout
    assert "Applied" not in second.stdout
    # The no-op answered from the build's manifest, as on Heroku: it read no migration file.
    # Proof: garbling one (same size, the image's mtime) goes unnoticed, where reading it would
    # fail the release ("changed after it was applied").
    garbled = run_root.upper / "workspace/db/migrations/20260101120000_create_users.up.sql"
    size = garbled.stat().st_size
    garbled.write_bytes(b"-" * size)
    os.utime(garbled, (lifecycle.EXPORTED_MTIME, lifecycle.EXPORTED_MTIME))
    garbled_release = in_app(run_root, release[0], launch_env, binds)
    assert garbled_release.returncode == 0, garbled_release.stdout + garbled_release.stderr
    assert "up to date" in garbled_release.stdout
    shutil.copyfile(upper / "workspace/db/migrations/20260101120000_create_users.up.sql", garbled)
    status = in_app(run_root, ["heroku-migrate", "status"], launch_env, binds)  # heroku run
    assert status.returncode == 0, status.stdout + status.stderr
    no_python = in_app(run_root, ["sh", "-c", "command -v python3 || echo none"], launch_env)
    assert no_python.stdout.strip() == "none"

    # rebuild with the restored cache layer and no network
    lifecycle.restore_for_rebuild(host_layers)
    offline = {**build_env, "https_proxy": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY}
    rebuilt = in_app(build_root, [f"{IMAGE_BUILDPACK}/bin/build"], offline)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert rebuilt.stdout.count("(cached)") == 3
    assert "Python 3.14" in rebuilt.stdout
    assert "from the build cache" in rebuilt.stdout
