"""The buildpack's steps (detect, compile, release), run at build time by the build image's python3.

`bin/*` are thin bash entry points that hand over to `main.main`. Nothing here imports psycopg or
contacts a database: the build only validates files, installs the runner into the slug and wires
the release phase.
"""

from __future__ import annotations

from herokumigrate.errors import MigrateError

SLUG_DIR = ".heroku-migrate"
"""Everything the build adds lives under this folder of the app (plus `.profile.d` and Procfile)."""
BUILDPACK_URL = "https://github.com/heroku-buildpack-migrate/heroku-buildpack-migrate"
# The runner's parts the slug never runs, left out of it: the build steps, and the release-safety
# lint with PostgreSQL's parser (pglast is never in the slug; `plan` and `lint` say so without
# them). A test keeps every shipped module from importing these at import time.
BUILD_TIME_ONLY = (
    "buildpack",
    "pgparse.py",
    "lint.py",
    "lintalter.py",
    "lintchecks.py",
    "lintnodes.py",
    "lintrules.py",
    "lintschema.py",
)


class BuildFailed(MigrateError):
    """The build cannot go on; the message says why and how to fix it (bin/compile exits 1)."""
