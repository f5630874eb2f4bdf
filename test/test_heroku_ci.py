"""bin/test-compile's check of app.json: Heroku CI has no release phase, so `test-setup` must run
the migrations."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import standins
from herokumigrate.buildpack.heroku_ci import check_ci_settings, explain_test_setup
from herokumigrate.output import Output
from support import EXAMPLE, REPO, assert_no_secret


@pytest.mark.parametrize(
    ("app_json", "migrates"),
    [
        (None, False),
        ('{"environments": {"test": {"scripts": {"test": "go test ./..."}}}}', False),
        ('{"environments": {"test": {"scripts": {"test-setup": "heroku-migrate up"}}}}', True),
        (
            '{"environments": {"test": {"scripts": {"test-setup": '
            '"heroku-migrate up && bin/seed"}}}}',
            True,
        ),
        ('{"environments": {"test": {"scripts": {"test-setup": "bin/seed"}}}}', False),
        (
            '{"environments": {"test": {"scripts": {"test-setup": "echo heroku-migrate up"}}}}',
            False,
        ),
        ('{"environments": {"test": {"scripts": {"test-setup": ["heroku-migrate up"]}}}}', False),
        ('{"environments": []}', False),
    ],
)
def test_test_compile_says_whether_test_setup_runs_the_migrations(
    tmp_path: Path, app_json: str | None, migrates: bool
) -> None:
    if app_json is not None:
        (tmp_path / "app.json").write_text(app_json)
    stream = io.StringIO()
    explain_test_setup(tmp_path, Output(stream, stream, color=False))
    text = stream.getvalue()
    assert text.startswith("-----> Heroku CI\n")
    assert ("test-setup runs the migrations before the tests" in text) is migrates
    assert ('"test-setup": "heroku-migrate up"' in text) is not migrates


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "is not valid JSON: Expecting property name enclosed in double quotes at "
         "line 1, column 2"),
        (b'\xef\xbb\xbf{"environments": {}}',
         "starts with a byte order mark (EF BB BF), which JSON does not allow"),
        (b'{"a": "caf\xe9"}', "is not UTF-8 text"),
        (b'["heroku-migrate up"]', "is not a JSON object ({...})"),
    ],
)  # fmt: skip
def test_an_app_json_that_cannot_be_read_is_said_so_not_taken_for_no_test_setup(
    tmp_path: Path, content: bytes, why: str
) -> None:
    (tmp_path / "app.json").write_bytes(content)
    stream = io.StringIO()
    explain_test_setup(tmp_path, Output(stream, stream, color=False))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "-----> Heroku CI"
    assert lines[1] == f" !     app.json {why}."
    assert lines[2].startswith(" !     Heroku reads app.json too")
    assert len(lines) == 3  # not the advice for an app.json without test-setup


THIS = "https://github.com/heroku-buildpack-migrate/heroku-buildpack-migrate"
SETUP = {"scripts": {"test-setup": "heroku-migrate up"}}


@pytest.mark.parametrize(
    ("app_json", "warned"),
    [
        ({"environments": {"test": SETUP}}, "lists no buildpacks"),
        ({"buildpacks": [{"url": "heroku/go"}], "environments": {"test": SETUP}},
         "lists other buildpacks"),
        ({"buildpacks": [{"url": "heroku/go"}, {"url": THIS}],
          "environments": {"test": {**SETUP, "buildpacks": [{"url": "heroku/go"}]}}},
         "lists other buildpacks"),  # environments.test.buildpacks is what CI reads
        ({"environments": {"test": {"scripts": {"test": "bin/x && ./.heroku-migrate/bin/"
                                                         "heroku-migrate status"}}}},
         "lists no buildpacks"),
        ({"buildpacks": [{"url": "heroku/go"}, {"url": THIS + "#v1"}],
          "environments": {"test": SETUP}}, None),
        ({"environments": {"test": {**SETUP, "buildpacks": [{"url": "heroku-migrate/migrate"}]}}},
         None),
        ({"buildpacks": [{"url": "https://example.com/our-fork.tgz"}],
          "environments": {"test": SETUP}}, None),  # may be this buildpack: no false alarm
        ({"environments": {"test": {"scripts": {"test-setup": "bin/seed"}}}}, None),
        ({"name": "no CI settings"}, None),
    ],
)  # fmt: skip
def test_the_build_warns_when_heroku_ci_would_not_run_this_buildpack(
    tmp_path: Path, app_json: dict[str, object], warned: str | None
) -> None:
    (tmp_path / "app.json").write_text(json.dumps(app_json))
    (tmp_path / "go.mod").write_text("module example.com/app\n")
    stream = io.StringIO()
    check_ci_settings(tmp_path, Output(stream, stream, color=False))
    text = stream.getvalue()
    if warned is None:
        assert text == ""
    else:
        assert f"app.json's Heroku CI scripts run heroku-migrate, but app.json {warned}" in text
        assert "`heroku-migrate: command not found`" in text
        assert f'{{"buildpacks": [{{"url": "heroku/go"}}, {{"url": "{THIS}"}}]' in text


# --------------------------------------------------------------------------------------------
# Heroku CI end to end, on the heroku-24 stand-in's build root (see `standins`)
#
# Heroku CI (devcenter.heroku.com/articles/heroku-ci-technical-detail-on-ci-lifecycle): the
# buildpacks app.json lists (environments.test.buildpacks, else buildpacks), in order, or else an
# official one it picks itself; each one's bin/test-compile (else bin/compile) in /app, later
# ones seeing the `export` of earlier ones; then scripts.test-setup from $HOME; then scripts.test,
# or else each buildpack's bin/test. Scripts run with .profile.d/*.sh and the config vars loaded.

STACK = "heroku-24"
GO_URL = "heroku/go"
THIS_URL = "https://github.com/heroku-buildpack-migrate/heroku-buildpack-migrate"
# A stand-in for heroku/go: what matters here is that it is not this buildpack.
FAKE_GO = {
    "bin/detect": '#!/bin/sh\n[ -f "$1/go.mod" ] && echo Go\n',
    "bin/compile": "#!/bin/sh\necho '-----> Building the Go app (stand-in)'\n",
    "bin/test": "#!/bin/sh\necho 'ok 1 - go test ./... (stand-in)'\n",
}
HEROKU_CI = r"""
set -u
/sbin/ldconfig  # the loader's cache of the build image: both roots' libraries
app=/app
profile() { for f in "$app"/.profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; }
config_vars() { for f in /ci/env/*; do export "${f##*/}=$(cat "$f")"; done; }
for buildpack in $BUILDPACKS; do
    step=compile
    [ -x "$buildpack/bin/test-compile" ] && step=test-compile
    ( "$buildpack/bin/$step" "$app" "/ci/cache/${buildpack##*/}" /ci/env ) || exit 90
    if [ -f "$buildpack/export" ]; then . "$buildpack/export"; fi
done
cd "$app" || exit 99
if [ -n "$TEST_SETUP" ]; then
    ( export HOME="$app"; profile; config_vars; eval "$TEST_SETUP" ) || exit 91
fi
if [ -n "$TEST" ]; then
    ( export HOME="$app"; profile; config_vars; eval "$TEST" ) || exit 92
else
    for buildpack in $BUILDPACKS; do
        [ -x "$buildpack/bin/test" ] || continue
        ( export HOME="$app"; profile; config_vars; "$buildpack/bin/test" "$app" /ci/env ) \
            || exit 93
    done
fi
"""


@dataclass
class CiRun:
    """One simulated Heroku CI run."""

    result: subprocess.CompletedProcess[str]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


def heroku_ci(app_json: dict[str, object], folder: Path, database_url: str) -> CiRun:
    """migrations_example with `app_json`, through Heroku CI on the heroku-24 build root (the
    test server's socket folder shared with it, when the URL names one)."""
    why_not = standins.can_build_roots()
    if why_not:
        pytest.skip(why_not)
    root = standins.build_image(standins.STANDINS[STACK], folder / "root")
    root.add_host_files(ca_bundle=True)
    upper = root.upper
    shutil.copytree(EXAMPLE, upper / "app")
    (upper / "app/app.json").write_text(json.dumps(app_json))
    this = copy_buildpack(upper / "buildpacks/migrate")
    for name, text in FAKE_GO.items():
        (upper / "buildpacks/go" / name).parent.mkdir(parents=True, exist_ok=True)
        (upper / "buildpacks/go" / name).write_text(text)
        (upper / "buildpacks/go" / name).chmod(0o755)
    (upper / "ci/env").mkdir(parents=True)
    (upper / "ci/env/DATABASE_URL").write_text(database_url)
    environments = app_json.get("environments", {})
    assert isinstance(environments, dict)
    test = environments.get("test", {})
    listed = test.get("buildpacks", app_json.get("buildpacks"))
    # Without a list, Heroku CI picks an official buildpack that detects the app: heroku/go.
    urls = [entry["url"] for entry in listed] if listed is not None else [GO_URL]
    where = {GO_URL: "/buildpacks/go", THIS_URL: f"/{this.relative_to(upper)}"}
    scripts = test.get("scripts", {})
    env = {
        "HOME": "/app",
        "PATH": standins.RUN_PATH,
        "STACK": STACK,
        "CI": "true",
        "BUILDPACKS": " ".join(where[url] for url in urls),
        "TEST_SETUP": scripts.get("test-setup", ""),
        "TEST": scripts.get("test", ""),
    }
    binds = standins.socket_binds(str(conninfo_to_dict(database_url).get("host") or ""))
    result = standins.run_in_root(
        root, ["/bin/bash", "-c", HEROKU_CI], env=env, binds=binds, timeout=600
    )
    assert_no_secret(result.stdout + result.stderr)
    return CiRun(result)


def ci_app_json(*, buildpacks: bool, **scripts: str) -> dict[str, object]:
    """app.json for Heroku CI: the scripts given (test_setup, test), a test database, and
    with `buildpacks` heroku/go then this buildpack (docs/heroku-ci.md)."""
    test: dict[str, object] = {
        "addons": ["heroku-postgresql:in-dyno"],
        "scripts": {name.replace("_", "-"): value for name, value in scripts.items()},
    }
    app_json: dict[str, object] = {"environments": {"test": test}}
    if buildpacks:
        app_json["buildpacks"] = [{"url": GO_URL}, {"url": THIS_URL}]
    return app_json


@pytest.mark.buildpack
@pytest.mark.standin
def test_heroku_ci_with_the_documented_app_json_migrates_before_the_tests(
    tmp_path: Path, database_url: str
) -> None:
    run = heroku_ci(
        ci_app_json(buildpacks=True, test_setup="heroku-migrate up", test="heroku-migrate status"),
        tmp_path,
        database_url,
    )
    assert run.result.returncode == 0, run.output
    assert "app.json's test-setup runs the migrations before the tests" in run.output
    assert "Heroku CI has no release phase: the Procfile is left as it is" in run.output
    assert "Applied 5 migration(s)" in run.output
    assert "-----> Up to date" in run.output  # the test script: `heroku-migrate status`
    assert {"users", "orders"} <= tables(database_url)


@pytest.mark.buildpack
@pytest.mark.standin
def test_heroku_ci_without_a_buildpacks_list_never_runs_this_buildpack(
    tmp_path: Path, database_url: str
) -> None:
    run = heroku_ci(
        ci_app_json(buildpacks=False, test_setup="heroku-migrate up"), tmp_path, database_url
    )
    assert run.result.returncode == 91, run.output  # test-setup failed
    assert "heroku-migrate: command not found" in run.output
    assert "users" not in tables(database_url)


@pytest.mark.buildpack
@pytest.mark.standin
def test_heroku_ci_without_test_scripts_runs_bin_test_which_migrates(
    tmp_path: Path, database_url: str
) -> None:
    run = heroku_ci(ci_app_json(buildpacks=True), tmp_path, database_url)
    assert run.result.returncode == 0, run.output
    assert "ok 1 - go test ./... (stand-in)" in run.output
    assert "Applied 5 migration(s)" in run.output
    assert {"users", "orders"} <= tables(database_url)


def copy_buildpack(destination: Path) -> Path:
    """The buildpack as Heroku fetches it: bin/, lib/ and buildpack.toml, no bytecode."""
    for part in ("bin", "lib"):
        shutil.copytree(
            REPO / part, destination / part, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy2(REPO / "buildpack.toml", destination / "buildpack.toml")
    return destination


def tables(database_url: str) -> set[str]:
    """The tables in the public schema."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {str(row[0]) for row in rows}
