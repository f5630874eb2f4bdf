"""Procfile wiring on its own: which release commands count as wired, the bytes written, links
and folders where the Procfile should be, and whose default web process is at risk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from herokumigrate.buildpack import BuildFailed, procfile

RELEASE_COMMAND = procfile.RELEASE_COMMAND


@pytest.mark.parametrize(
    ("command", "wired"),
    [
        ("heroku-migrate up", True),
        ("./.heroku-migrate/bin/heroku-migrate up && { ./seed; }", True),
        ("heroku-migrate up && ./seed", True),
        ("./seed && heroku-migrate up", True),
        ("MIGRATE_LOCK_WAIT=60 heroku-migrate up", True),
        ("exec heroku-migrate up", True),
        ("/app/.heroku-migrate/bin/heroku-migrate up", True),
        ("heroku-migrate --path db/sql up", True),
        ("bin/rel # TODO: heroku-migrate up", False),
        ("bin/rel # heroku-migrate", False),
        ("heroku-migrate status", False),
        ("heroku-migrate validate; up", False),
        ("echo heroku-migrate skipped", False),
        ("echo heroku-migrate up", False),
        ("echo 'heroku-migrate up'", False),
        ("my-heroku-migrate up", False),
        ("heroku-migrate-old up", False),
        ("heroku-migrate 'up", False),
        ("", False),
    ],
)
def test_only_a_command_running_heroku_migrate_up_counts_as_wired(
    command: str, wired: bool
) -> None:
    assert procfile.is_wired(command) is wired


def _wire(tmp_path: Path, content: bytes | None) -> tuple[procfile.Wiring, bytes]:
    path = tmp_path / "Procfile"
    if content is not None:
        path.write_bytes(content)
    wiring = procfile.wire(path)
    return wiring, path.read_bytes()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"web: bin/server\n", b"web: bin/server\nrelease: %s\n"),
        (b"web: bin/server", b"web: bin/server\nrelease: %s\n"),
        (b"web: a\r\nworker: b\r\n", b"web: a\r\nworker: b\r\nrelease: %s\r\n"),
        (b"", b"release: %s\n"),
        (b"release: ./seed\n", b"release: %s && { ./seed; }\n"),
        (b"release:./seed;\n", b"release:%s && { ./seed; }\n"),
        (b"release: a || true\r\nweb: x", b"release: %s && { a || true; }\r\nweb: x"),
        (b"\xef\xbb\xbfrelease: a\n", b"\xef\xbb\xbfrelease: %s && { a; }\n"),
        (b"web: caf\xe9 \xff\nrelease: b\n", b"web: caf\xe9 \xff\nrelease: %s && { b; }\n"),
        (b"release: a # note\n", b"release: %s && eval 'a # note'\n"),
        (b"release: echo 'x' &\n", b"release: %s && eval 'echo '\\''x'\\'' &'\n"),
        (b"release:\n", b"release: %s\n"),
        (b"web: x\r\nrelease:\r\n", b"web: x\r\nrelease: %s\r\n"),
        (b"release:  \n", b"release:  %s\n"),
        (
            b"release: bin/rel # TODO: heroku-migrate\n",
            b"release: %s && eval 'bin/rel # TODO: heroku-migrate'\n",
        ),
        (b"release: heroku-migrate status\n", b"release: %s && { heroku-migrate status; }\n"),
        (
            b"release: echo heroku-migrate skipped\n",
            b"release: %s && { echo heroku-migrate skipped; }\n",
        ),
    ],
)
def test_procfile_wiring_keeps_every_other_byte(
    tmp_path: Path, before: bytes, after: bytes
) -> None:
    _, written = _wire(tmp_path, before)
    assert written == after.replace(b"%s", RELEASE_COMMAND.encode())


def test_procfile_wiring_is_idempotent(tmp_path: Path) -> None:
    first, once = _wire(tmp_path, b"web: x\nrelease: ./seed\n")
    second, twice = _wire(tmp_path, None)
    assert (first.action, second.action) == ("wrapped", "unchanged")
    assert once == twice


def test_procfile_wired_by_hand_is_left_alone(tmp_path: Path) -> None:
    wiring, written = _wire(tmp_path, b"release: heroku-migrate up && ./seed\n")
    assert wiring.action == "unchanged"
    assert written == b"release: heroku-migrate up && ./seed\n"


def test_missing_procfile_is_created(tmp_path: Path) -> None:
    wiring, written = _wire(tmp_path, None)
    assert wiring.action == "created"
    assert written == f"release: {RELEASE_COMMAND}\n".encode()


@pytest.mark.parametrize(
    "existing",
    ["echo ran > out", "false || echo ran > out", "echo a; echo ran > out", "echo ran > out # c"],
)
@pytest.mark.parametrize("migrations_succeed", [True, False])
def test_chained_command_runs_only_when_migrations_succeed(
    tmp_path: Path, existing: str, migrations_succeed: bool
) -> None:
    chained = procfile.chain(existing).replace(
        RELEASE_COMMAND, "true" if migrations_succeed else "false"
    )
    result = subprocess.run(["bash", "-c", chained], cwd=tmp_path, capture_output=True, check=False)
    assert (tmp_path / "out").exists() is migrations_succeed
    assert (result.returncode == 0) is migrations_succeed


def test_golang_migrate_recipe_is_recognised() -> None:
    assert procfile.looks_like_golang_migrate_recipe("bash ./migration.sh")
    assert procfile.looks_like_golang_migrate_recipe("migrate -database $DATABASE_URL -path db up")
    assert not procfile.looks_like_golang_migrate_recipe("./bin/seed")


def _at_risk(app: Path, action: procfile.WiringAction) -> str | None:
    language = procfile.default_web_at_risk(app, procfile.Wiring(action, "release: x"))
    return None if language is None else f"{language.name}:{language.default_web}"


def test_web_process_at_risk_is_named_with_the_fix(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    assert _at_risk(app, "created") is None
    (app / "package.json").write_text("{}")
    assert _at_risk(app, "created") == "heroku/nodejs:release"
    (app / "Procfile").write_bytes(b"worker: node worker.js\r\nrelease: x\r\n")
    assert _at_risk(app, "added") == "heroku/nodejs:release"
    (app / "Procfile").write_bytes(b"\xef\xbb\xbfweb: npm start\nrelease: x\n")
    assert _at_risk(app, "added") is None


def test_go_app_is_at_risk_only_when_the_build_created_its_procfile(tmp_path: Path) -> None:
    # heroku/go writes a Procfile with web: only when there is none: one we created stops it,
    # one the app had means it writes none in any order.
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").write_text("module example.com/app\n")
    (app / "Procfile").write_text("release: x\n")
    assert _at_risk(app, "created") == "heroku/go:procfile"
    assert _at_risk(app, "added") is None
    assert _at_risk(app, "wrapped") is None


def _outside_files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if "app" not in path.relative_to(root).parts}


@pytest.mark.parametrize(
    ("link", "target_content"),
    [
        ("../outside/Procfile", None),  # dangling, out of the app
        ("../outside/Procfile", b"web: x\n"),  # out of the app
        ("{root}/outside/Procfile", b"web: x\n"),  # absolute
        ("{root}/outside/missing", None),  # absolute, dangling
        ("config", None),  # a folder in the app
    ],
)
def test_a_procfile_link_out_of_the_app_is_refused_and_nothing_is_written(
    tmp_path: Path, link: str, target_content: bytes | None
) -> None:
    app = tmp_path / "app"
    (app / "config").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    if target_content is not None:
        (tmp_path / "outside/Procfile").write_bytes(target_content)
    (app / "Procfile").symlink_to(link.format(root=tmp_path))
    before = {path: path.read_bytes() for path in _outside_files(tmp_path) if path.is_file()}
    with pytest.raises(BuildFailed) as failure:
        procfile.wire(app / "Procfile")
    assert "Procfile is a symbolic link to" in failure.value.message
    assert "MIGRATE_RELEASE_PHASE=false" in failure.value.fix
    after = {path: path.read_bytes() for path in _outside_files(tmp_path) if path.is_file()}
    assert after == before
    assert (app / "Procfile").is_symlink()
    assert sorted(os.listdir(app)) == ["Procfile", "config"]


def test_a_procfile_link_into_the_app_is_replaced_by_a_file_and_its_target_kept(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    (app / "config").mkdir(parents=True)
    (app / "config/Procfile.prod").write_bytes(b"web: bin/server\n")
    (app / "Procfile").symlink_to("config/Procfile.prod")
    wiring = procfile.wire(app / "Procfile")
    assert (wiring.action, wiring.replaced_link) == ("added", "config/Procfile.prod")
    assert not (app / "Procfile").is_symlink()
    assert (
        app / "Procfile"
    ).read_bytes() == f"web: bin/server\nrelease: {RELEASE_COMMAND}\n".encode()
    assert (app / "Procfile").stat().st_mode & 0o777 == 0o644
    assert (app / "config/Procfile.prod").read_bytes() == b"web: bin/server\n"
    assert sorted(os.listdir(app)) == ["Procfile", "config"]


def test_a_procfile_that_is_a_folder_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "Procfile").mkdir()
    with pytest.raises(BuildFailed) as failure:
        procfile.wire(tmp_path / "Procfile")
    assert failure.value.message.startswith("Procfile is a folder")


# --------------------------------------------------------------------------------------------
# Non-ASCII release lines: bytes in, the same bytes out (but for the wiring), valid shell

# Each holds 0x85 in UTF-8 (Latin-1's NEL, a line break to str.splitlines), or is a character
# str.splitlines or str.strip treats as a break or a blank (NEL, NBSP, U+2028, form feed).
# Cyrillic ha and Hebrew vav written as escapes (ruff: they look like x and l).
NON_ASCII = [
    "Å",
    "ą",
    "\u0445",
    "م",
    "\u05d5",
    "😅",
    "酅",
    "café",
    "\u0085",
    "\u00a0",
    "\u2028",
    "\x0c",
]
R = RELEASE_COMMAND.encode()


# Every wiring path: (name, Procfile before, Procfile after, action); {t} stands for the text,
# {q} for the text inside single quotes inside `eval '...'`, {R} for the release command.
WIRING_PATHS: list[tuple[str, bytes, bytes, procfile.WiringAction]] = [
    ("braces", b"release: echo '{t}' && rake x\n", b"release: {R} && { echo '{t}' && rake x; }\n",
     "wrapped"),
    ("eval", b"release: echo '{t}' # {t}\n", b"release: {R} && eval 'echo {q} # {t}'\n", "wrapped"),
    ("background", b"release: ./{t} &\r\n", b"release: {R} && eval './{t} &'\r\n", "wrapped"),
    ("wired already", b"release: {R} && { echo '{t}'; }\n", b"release: {R} && { echo '{t}'; }\n",
     "unchanged"),
    ("added", b"web: echo '{t}'\r\nworker: {t}",
     b"web: echo '{t}'\r\nworker: {t}\r\nrelease: {R}\r\n", "added"),
    ("bom", b"\xef\xbb\xbfrelease: echo {t}\r\nweb: {t}\r\n",
     b"\xef\xbb\xbfrelease: {R} && { echo {t}; }\r\nweb: {t}\r\n", "wrapped"),
]  # fmt: skip


def _fill(template: bytes, text: str) -> bytes:
    t = text.encode()
    return template.replace(b"{q}", b"'\\''" + t + b"'\\''").replace(b"{t}", t).replace(b"{R}", R)


def _release_command_is_valid_shell(procfile_bytes: bytes, tmp_path: Path) -> None:
    (line,) = [
        li
        for li in procfile_bytes.split(b"\n")
        if li.lstrip(b"\xef\xbb\xbf").startswith(b"release:")
    ]
    script = tmp_path / "release.sh"
    script.write_bytes(line.split(b":", 1)[1].rstrip(b"\r") + b"\n")
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, check=False)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("text", NON_ASCII)
def test_non_ascii_release_lines_are_wired_byte_for_byte_on_every_path(
    tmp_path: Path, text: str
) -> None:
    for path, before_template, after_template, action in WIRING_PATHS:
        before, after = _fill(before_template, text), _fill(after_template, text)
        folder = tmp_path / path
        folder.mkdir()
        wiring, written = _wire(folder, before)
        assert (path, wiring.action) == (path, action)
        assert (path, written) == (path, after)
        _release_command_is_valid_shell(written, folder)
        if action != "added":
            assert text in wiring.release_line  # shown as the text it is, not as Latin-1
        again, rewritten = _wire(folder, None)
        assert (path, again.action, rewritten) == (path, "unchanged", after)


def test_a_procfile_that_is_not_utf8_is_kept_byte_for_byte(tmp_path: Path) -> None:
    before = b"web: caf\xe9 \x85\xff\r\nrelease: echo \xe9\x85 \x85\r\n"
    wiring, written = _wire(tmp_path, before)
    assert wiring.action == "wrapped"
    assert written == b"web: caf\xe9 \x85\xff\r\nrelease: " + R + b" && { echo \xe9\x85 \x85; }\r\n"
    _release_command_is_valid_shell(written, tmp_path)
    assert wiring.release_line == f"release: {RELEASE_COMMAND} && {{ echo \ufffd \ufffd; }}"


@pytest.mark.parametrize("name", ["Release", "RELEASE", "rElease"])
def test_a_capitalised_release_line_is_reported(tmp_path: Path, name: str) -> None:
    before = f"web: x\n{name}: ./seed\n".encode()
    wiring, written = _wire(tmp_path, before)
    assert wiring.action == "added"
    assert written == before + b"release: " + R + b"\n"
    assert wiring.miscased == ((2, name),)
    assert _wire(tmp_path, None)[0].miscased == ((2, name),)  # still there once wired


def test_a_lowercase_release_line_is_not_reported_as_capitalised(tmp_path: Path) -> None:
    wiring, _ = _wire(tmp_path, b"releases: x\nrelease: y\n")
    assert wiring.miscased == ()
