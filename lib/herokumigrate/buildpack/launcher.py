"""What makes the runner callable: the launcher, the `.profile.d` PATH entry and `export`.

The launcher (`launcher.sh`, copied as is) and the `.profile.d` script contain no path known only
at build time: the launcher finds itself when it runs, `.profile.d` uses `$HOME`. Only `export`,
read by later buildpacks during this same build, names the build directory, and it lives in the
buildpack's directory, not in the slug.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from herokumigrate.buildpack import SLUG_DIR

LAUNCHER_SOURCE = Path(__file__).with_name("launcher.sh")
LAUNCHER = f"{SLUG_DIR}/bin/heroku-migrate"
PROFILE_SCRIPT = ".profile.d/heroku-migrate.sh"


def write_launcher(build_dir: Path) -> Path:
    """Install the launcher script into the slug; its path."""
    target = build_dir / LAUNCHER
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LAUNCHER_SOURCE, target)
    target.chmod(0o755)
    return target


def write_profile_script(build_dir: Path) -> Path:
    """The dyno-boot script putting the launcher on PATH (`heroku run heroku-migrate status`)."""
    target = build_dir / PROFILE_SCRIPT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "# Added by heroku-buildpack-migrate: puts `heroku-migrate` on PATH.\n"
        f'export PATH="$HOME/{SLUG_DIR}/bin:${{PATH:-/usr/local/bin:/usr/bin:/bin}}"\n',
        encoding="utf-8",
    )
    return target


def write_export(buildpack_dir: Path, build_dir: Path) -> Path:
    """`export` for the buildpacks that run after this one in the same build."""
    target = buildpack_dir / "export"
    bin_dir = shlex.quote(str(build_dir / SLUG_DIR / "bin"))
    target.write_text(f'export PATH={bin_dir}:"$PATH"\n', encoding="utf-8")
    return target
