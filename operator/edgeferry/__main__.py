"""`python -m edgeferry` runs the operator."""

from edgeferry import main

main.main()
