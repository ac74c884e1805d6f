"""`python -m edgeferry_testbed ...` runs the CLI."""

import sys

from edgeferry_testbed import cli

sys.exit(cli.main())
