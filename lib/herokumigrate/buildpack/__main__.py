"""`python -m herokumigrate.buildpack detect|compile|release ARGS...`."""

import sys

from herokumigrate.buildpack.main import main

sys.exit(main(sys.argv[1:]))
