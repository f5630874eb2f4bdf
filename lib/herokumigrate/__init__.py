"""heroku-migrate: apply pending PostgreSQL migrations atomically on every Heroku release."""

__version__ = "0.1.0"
