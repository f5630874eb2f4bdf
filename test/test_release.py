"""One version, written once, and the script that cuts a release."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import herokumigrate
from herokumigrate.compat import tomllib
from support import REPO


def test_the_version_is_written_once_and_repeated_only_where_a_test_checks_it() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "herokumigrate.__version__"
    }
    buildpack = tomllib.loads((REPO / "buildpack.toml").read_text())
    assert buildpack["buildpack"]["version"] == herokumigrate.__version__


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


def test_release_script_bumps_the_version_dates_the_changelog_and_tags(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    _git(clone, "config", "user.email", "test@example.com")
    _git(clone, "config", "user.name", "test")
    # The script and the version files as they are in this work tree, not as last committed.
    for name in ("scripts/release.sh", "lib/herokumigrate/__init__.py", "buildpack.toml"):
        (clone / name).write_bytes((REPO / name).read_bytes())
    (clone / "scripts/release.sh").chmod(0o755)
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", "this work tree's release script", "--allow-empty")
    changelog = clone / "CHANGELOG.md"
    text = changelog.read_text()
    if not re.search(r"## \[Unreleased\]\n\n- ", text):  # give it a change to release
        text = text.replace("## [Unreleased]\n", "## [Unreleased]\n\n- A change.\n", 1)
        changelog.write_text(text)
        _git(clone, "commit", "-qam", "a change")
    unreleased = text.split("## [Unreleased]\n", 1)[1].split("\n## ", 1)[0].strip()

    result = subprocess.run(
        ["scripts/release.sh", "9.8.7"], cwd=clone, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert 'version = "9.8.7"' in (clone / "buildpack.toml").read_text()
    assert '__version__ = "9.8.7"' in (clone / "lib/herokumigrate/__init__.py").read_text()
    after = changelog.read_text()
    released = re.search(
        r"## \[Unreleased\]\n\n## \[9\.8\.7\] - \d{4}-\d{2}-\d{2}\n\n(.*?)(\n## |\Z)", after, re.S
    )
    assert released is not None, after[:400]
    assert released.group(1).strip() == unreleased
    assert _git(clone, "tag", "--list", "v9.8.7").strip() == "v9.8.7"
    assert _git(clone, "status", "--porcelain") == ""
    again = subprocess.run(
        ["scripts/release.sh", "9.8.7"], cwd=clone, capture_output=True, text=True, check=False
    )
    assert again.returncode == 2
    assert "tag v9.8.7 exists already" in again.stderr


def test_release_script_refuses_a_version_that_is_not_three_numbers(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO / "scripts/release.sh"), "v1.2"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "usage: scripts/release.sh VERSION" in result.stderr
