"""`python -m edgeferry` runs the operator; `python -m edgeferry model ...` is the model CLI."""

import sys

if sys.argv[1:2] == ["model"]:
    from edgeferry import model_cli

    sys.exit(model_cli.main(sys.argv[2:]))

from edgeferry import main

main.main()
