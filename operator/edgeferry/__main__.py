"""`python -m edgeferry` runs the operator; `python -m edgeferry model ...` is the model CLI;
`python -m edgeferry agent ...` is the pull-mode agent (`edgeferry-agent`)."""

import sys

if sys.argv[1:2] == ["model"]:
    from edgeferry import model_cli

    sys.exit(model_cli.main(sys.argv[2:]))

if sys.argv[1:2] == ["agent"]:
    from edgeferry.agent import main as agent_main

    agent_main.main(sys.argv[2:])
    sys.exit(0)

from edgeferry import main

main.main()
