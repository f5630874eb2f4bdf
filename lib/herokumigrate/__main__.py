"""`python -m herokumigrate`: the same as the `heroku-migrate` command."""

import sys

from herokumigrate.cli import main

sys.exit(main())
