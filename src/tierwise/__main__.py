"""``python -m tierwise``: the same command line as the ``tierwise`` script."""

from tierwise.cli import main

main()
