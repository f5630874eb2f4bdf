"""heroku-migrate: apply pending PostgreSQL migrations atomically on every Heroku release."""

# The one place the version is written: pyproject.toml reads it, buildpack.toml repeats it
# (a test keeps them equal) and scripts/release.sh changes both.
__version__ = "0.2.0"
